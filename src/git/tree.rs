//! Git trees as folders: finding one, reading its files, and building a tree with one folder
//! replaced or removed while every other entry keeps its id.
//!
//! Works on objects only: new trees go to the repository's object database, never to a ref,
//! an index or a work tree.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, bail};
use git2::{FileMode, ObjectType, Oid, Repository, Tree};

use crate::desired::source::shown;

/// A folder inside a repository, as `/`-separated components relative to the root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Folder(Vec<String>);

impl Folder {
    /// Reads `dir/sub`, `/dir/sub/` or `./dir`; `None`, `""`, `"."` and `"/"` are the root.
    /// Refuses `..` and empty components, which cannot name a folder in a tree.
    pub fn parse(path: Option<&str>) -> anyhow::Result<Folder> {
        let path = path.unwrap_or_default().trim_matches('/');
        let mut components = Vec::new();
        for component in path.split('/') {
            match component {
                "" if path.is_empty() => {}
                "." => {}
                "" | ".." => bail!("`{path}` is not a folder path relative to the repository root"),
                _ => components.push(component.to_string()),
            }
        }
        Ok(Folder(components))
    }

    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    pub fn components(&self) -> &[String] {
        &self.0
    }

    /// Where `other` lies relative to this folder, if inside it (the folder itself included).
    pub fn relative<'a>(&self, other: &'a Folder) -> Option<&'a [String]> {
        other.0.strip_prefix(self.0.as_slice())
    }
}

impl std::fmt::Display for Folder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_empty() { f.write_str("/") } else { f.write_str(&self.0.join("/")) }
    }
}

/// The entry at `path` below `root`: `Ok(None)` when absent, an error when a component on the
/// way is a file.
pub fn entry_at(repo: &Repository, root: &Tree<'_>, path: &[String]) -> anyhow::Result<Option<(Oid, ObjectType)>> {
    let mut tree = root.clone();
    for (i, name) in path.iter().enumerate() {
        let Some(entry) = tree.get_name(name) else {
            return Ok(None);
        };
        let (id, kind) = (entry.id(), entry.kind().unwrap_or(ObjectType::Any));
        drop(entry);
        if i + 1 == path.len() {
            return Ok(Some((id, kind)));
        }
        if kind != ObjectType::Tree {
            bail!("`{}` is a file, not a folder", path[..=i].join("/"));
        }
        tree = repo.find_tree(id)?;
    }
    Ok(Some((root.id(), ObjectType::Tree)))
}

/// The folder `path` below `root`, if it exists.
pub fn folder_at<'r>(repo: &'r Repository, root: &Tree<'r>, path: &[String]) -> anyhow::Result<Option<Tree<'r>>> {
    match entry_at(repo, root, path)? {
        None => Ok(None),
        Some((id, ObjectType::Tree)) => Ok(Some(repo.find_tree(id)?)),
        Some(_) => bail!("`{}` is a file, not a folder", path.join("/")),
    }
}

/// The id of `root` with the entry at `path` replaced by the tree `new`, or removed when `new` is
/// `None`. Folders left empty by a removal disappear; every other entry keeps its id.
pub fn replace(repo: &Repository, root: Option<&Tree<'_>>, path: &[String], new: Option<Oid>) -> anyhow::Result<Oid> {
    Ok(match replace_in(repo, root, path, new)? {
        Some(id) => id,
        None => repo.treebuilder(None)?.write()?,
    })
}

fn replace_in(
    repo: &Repository,
    tree: Option<&Tree<'_>>,
    path: &[String],
    new: Option<Oid>,
) -> anyhow::Result<Option<Oid>> {
    let Some((name, rest)) = path.split_first() else {
        return Ok(new);
    };
    let existing = tree.and_then(|t| t.get_name(name));
    let replaced = if rest.is_empty() {
        new
    } else {
        let child = match &existing {
            None => None,
            Some(entry) if entry.kind() == Some(ObjectType::Tree) => Some(repo.find_tree(entry.id())?),
            Some(_) => bail!("`{name}` is a file, not a folder"),
        };
        replace_in(repo, child.as_ref(), rest, new)?
    };
    let mut builder = repo.treebuilder(tree)?;
    match replaced {
        Some(id) => {
            builder.insert(name.as_str(), id, FileMode::Tree.into())?;
        }
        None if existing.is_some() => builder.remove(name.as_str())?,
        None => {}
    }
    if builder.is_empty() {
        return Ok(None);
    }
    Ok(Some(builder.write()?))
}

/// The id of `tree`, the content of `folder`, without the folder `excluded` when that lies
/// inside it. An excluded folder that holds `folder` leaves nothing to read, so it is an error.
pub fn without(repo: &Repository, tree: &Tree<'_>, folder: &Folder, excluded: &Folder) -> anyhow::Result<Oid> {
    if excluded.relative(folder).is_some() {
        bail!("the folder `{folder}` lies inside the excluded folder `{excluded}`");
    }
    match folder.relative(excluded) {
        // A file on the way to the excluded folder means there is nothing to leave out.
        Some(rest) if matches!(entry_at(repo, tree, rest), Ok(Some(_))) => replace(repo, Some(tree), rest, None),
        _ => Ok(tree.id()),
    }
}

/// Writes a tree holding exactly `files` (paths `/`-separated, relative to the tree), or
/// returns `None` for no files.
pub fn write_files(repo: &Repository, files: &BTreeMap<String, Vec<u8>>) -> anyhow::Result<Option<Oid>> {
    let mut root = BTreeMap::new();
    for (path, bytes) in files {
        let components: Vec<&str> = path.split('/').collect();
        if components.iter().any(|c| c.is_empty() || *c == "." || *c == ".." || *c == ".git") {
            bail!("`{path}` is not a file path relative to the folder");
        }
        insert(&mut root, &components, repo.blob(bytes)?)
            .with_context(|| format!("`{path}` is both a file and a folder"))?;
    }
    if root.is_empty() {
        return Ok(None);
    }
    write_folder(repo, &root).map(Some)
}

/// A folder being built: files by blob id, and folders.
enum Node {
    File(Oid),
    Folder(BTreeMap<String, Node>),
}

fn insert(folder: &mut BTreeMap<String, Node>, components: &[&str], blob: Oid) -> Option<()> {
    let (name, rest) = components.split_first()?;
    if rest.is_empty() {
        return match folder.insert(name.to_string(), Node::File(blob)) {
            Some(Node::Folder(_)) => None,
            _ => Some(()),
        };
    }
    match folder.entry(name.to_string()).or_insert_with(|| Node::Folder(BTreeMap::new())) {
        Node::Folder(children) => insert(children, rest, blob),
        Node::File(_) => None,
    }
}

fn write_folder(repo: &Repository, folder: &BTreeMap<String, Node>) -> anyhow::Result<Oid> {
    let mut builder = repo.treebuilder(None)?;
    for (name, node) in folder {
        match node {
            Node::File(blob) => builder.insert(name.as_str(), *blob, FileMode::Blob.into())?,
            Node::Folder(children) => {
                builder.insert(name.as_str(), write_folder(repo, children)?, FileMode::Tree.into())?
            }
        };
    }
    Ok(builder.write()?)
}

/// Every blob below `tree`, by `/`-separated path.
pub fn read_files(repo: &Repository, tree: &Tree<'_>) -> anyhow::Result<BTreeMap<String, Vec<u8>>> {
    let mut files = BTreeMap::new();
    collect(repo, tree, "", &mut files)?;
    Ok(files)
}

fn collect(
    repo: &Repository,
    tree: &Tree<'_>,
    prefix: &str,
    out: &mut BTreeMap<String, Vec<u8>>,
) -> anyhow::Result<()> {
    for entry in tree.iter() {
        let name = entry.name().map_err(|_| {
            anyhow::anyhow!("the name of `{prefix}{}` is not UTF-8: rename it", shown(entry.name_bytes()))
        })?;
        let path = format!("{prefix}{name}");
        match entry.kind() {
            Some(ObjectType::Tree) => collect(repo, &repo.find_tree(entry.id())?, &format!("{path}/"), out)?,
            Some(ObjectType::Blob) => {
                out.insert(path, repo.find_blob(entry.id())?.content().to_vec());
            }
            _ => {}
        }
    }
    Ok(())
}

/// Writes the regular files below `tree` into the folder `dest`, which must exist. Symbolic
/// links and submodules are left out: a link could point anywhere on this machine. Names are
/// written byte for byte, so that the desired-state loader can report one that is not UTF-8.
pub fn export(repo: &Repository, tree: &Tree<'_>, dest: &Path) -> anyhow::Result<usize> {
    let mut written = 0;
    for entry in tree.iter() {
        let bytes = entry.name_bytes();
        if bytes.is_empty() || bytes == b"." || bytes == b".." || bytes.iter().any(|b| matches!(b, b'/' | b'\\')) {
            bail!("the tree holds an entry named `{}`, which cannot be written safely", shown(bytes));
        }
        let target = dest.join(file_name(bytes));
        match (entry.kind(), entry.filemode()) {
            (Some(ObjectType::Tree), _) => {
                std::fs::create_dir(&target).with_context(|| format!("creating {}", target.display()))?;
                written += export(repo, &repo.find_tree(entry.id())?, &target)?;
            }
            (Some(ObjectType::Blob), mode)
                if mode == i32::from(FileMode::Blob) || mode == i32::from(FileMode::BlobExecutable) =>
            {
                let blob = repo.find_blob(entry.id())?;
                std::fs::write(&target, blob.content()).with_context(|| format!("writing {}", target.display()))?;
                written += 1;
            }
            _ => tracing::debug!(path = %target.display(), "leaving out a symbolic link or submodule"),
        }
    }
    Ok(written)
}

/// A file name from the bytes a tree holds.
#[cfg(unix)]
fn file_name(bytes: &[u8]) -> &std::ffi::OsStr {
    std::os::unix::ffi::OsStrExt::from_bytes(bytes)
}

/// A file name from the bytes a tree holds; elsewhere than on Unix only as text.
#[cfg(not(unix))]
fn file_name(bytes: &[u8]) -> std::ffi::OsString {
    shown(bytes).into()
}

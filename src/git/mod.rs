//! Git, through git2: the only module that touches repositories.
//!
//! [`TreeSource`] reads the desired state straight from Git objects at a revision (no checkout),
//! so `diff` works on bare repositories and shallow CI clones alike; it never writes to the
//! repository. [`Checkout`] keeps a bare clone of the remote that holds the desired state:
//! it fetches, exports a commit's files to a folder, and publishes the status report with
//! commits pushed without force. Every call here blocks; async callers use `spawn_blocking`.
//! No other module uses git2.

mod checkout;
mod credentials;
mod known_hosts;
mod publish;
mod signing;
mod tree;
mod url;

#[cfg(test)]
mod tests;

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{Context, bail};
use git2::{ObjectType, Repository};

use crate::desired::source::{MAX_FILE_BYTES, Unreadable, is_hidden, is_yaml, shown};
use crate::desired::{Source, SourceFile};

pub use checkout::{Checkout, Exported};
pub use credentials::{Credentials, Secret};
pub use publish::{Publish, Published};
pub use signing::AllowedSigners;
pub use url::redact as redact_url;

/// The desired-state files of one commit, held in memory.
#[derive(Debug, Clone)]
pub struct TreeSource {
    /// The revision as the user wrote it, used to name files in messages.
    pub rev: String,
    /// The commit the revision resolved to.
    pub commit: String,
    /// The id of the desired-state tree (the `--path` folder, or the root tree).
    pub tree: String,
    files: Vec<SourceFile>,
    all_paths: BTreeSet<String>,
}

impl TreeSource {
    /// Reads every file under `subdir` (or the whole tree) of `rev` in the repository at `repo`
    /// (a work tree, any folder inside one, or a bare repository).
    pub fn read(repo: &Path, rev: &str, subdir: Option<&str>) -> anyhow::Result<TreeSource> {
        let repository =
            Repository::discover(repo).with_context(|| format!("opening the Git repository at {}", repo.display()))?;
        let object = repository
            .revparse_single(rev)
            .with_context(|| format!("resolving revision `{rev}` in {}", repo.display()))?;
        let commit = object.peel_to_commit().with_context(|| format!("revision `{rev}` does not name a commit"))?;
        let mut tree = commit.tree().with_context(|| format!("reading the tree of {}", commit.id()))?;
        let subdir = subdir.map(|s| s.trim_matches('/')).filter(|s| !s.is_empty() && *s != ".");
        if let Some(dir) = subdir {
            let entry =
                tree.get_path(Path::new(dir)).with_context(|| format!("`{dir}` does not exist at revision `{rev}`"))?;
            if entry.kind() != Some(ObjectType::Tree) {
                bail!("`{dir}` at revision `{rev}` is not a folder");
            }
            tree = repository.find_tree(entry.id())?;
        }
        let prefix = subdir.map_or(String::new(), |d| format!("{d}/"));
        let mut walk =
            Walk { repository: &repository, rev, prefix: &prefix, files: Vec::new(), all_paths: BTreeSet::new() };
        walk.folder(&tree, "", true).with_context(|| format!("walking the tree of `{rev}`"))?;
        let Walk { mut files, all_paths, .. } = walk;
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(TreeSource {
            rev: rev.to_string(),
            commit: commit.id().to_string(),
            tree: tree.id().to_string(),
            files,
            all_paths,
        })
    }
}

/// Collects the desired-state files of a tree.
struct Walk<'r> {
    repository: &'r Repository,
    rev: &'r str,
    /// The subfolder read, with a trailing `/`, or empty.
    prefix: &'r str,
    files: Vec<SourceFile>,
    all_paths: BTreeSet<String>,
}

impl Walk<'_> {
    /// Every file below `tree`, whose path is `parent` (empty, or ending in `/`); `utf8` is false
    /// once a folder on the way has a name that is not UTF-8.
    fn folder(&mut self, tree: &git2::Tree<'_>, parent: &str, utf8: bool) -> anyhow::Result<()> {
        for entry in tree.iter() {
            let name_utf8 = entry.name().is_ok();
            let name = shown(entry.name_bytes());
            if is_hidden(&name) {
                continue;
            }
            let path = format!("{parent}{name}");
            match entry.kind() {
                Some(ObjectType::Tree) => {
                    let subtree = self.repository.find_tree(entry.id())?;
                    self.folder(&subtree, &format!("{path}/"), utf8 && name_utf8)?;
                }
                Some(ObjectType::Blob) => {
                    if is_yaml(&name) {
                        let text = if utf8 && name_utf8 {
                            self.text(entry.id(), &path)?
                        } else {
                            Err(Unreadable::NameNotUtf8)
                        };
                        let display = format!("{}:{}{path}", self.rev, self.prefix);
                        self.files.push(SourceFile { display, text, path: path.clone() });
                    }
                    if utf8 && name_utf8 {
                        self.all_paths.insert(path);
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The text of a blob, which is only loaded when it is within the size limit.
    fn text(&self, id: git2::Oid, path: &str) -> anyhow::Result<Result<String, Unreadable>> {
        let context = || format!("reading {}:{}{path}", self.rev, self.prefix);
        let (size, _) = self.repository.odb().and_then(|odb| odb.read_header(id)).with_context(context)?;
        if size as u64 > MAX_FILE_BYTES {
            return Ok(Err(Unreadable::TooLarge { bytes: size as u64, line: None }));
        }
        let blob = self.repository.find_blob(id).with_context(context)?;
        Ok(String::from_utf8(blob.content().to_vec()).map_err(|_| Unreadable::NotUtf8))
    }
}

impl Source for TreeSource {
    fn yaml_files(&self) -> anyhow::Result<Vec<SourceFile>> {
        Ok(self.files.clone())
    }

    fn has_file(&self, path: &str) -> bool {
        self.all_paths.contains(path)
    }

    fn describe(&self) -> String {
        format!("revision {}", self.rev)
    }
}

//! The local bare clone of the remote that holds the desired state: opening it, fetching
//! branches, and exporting a commit's desired-state files to a folder.
//!
//! The clone is Lifeboat's own cache. Fetching force-updates only its remote-tracking refs
//! (`refs/remotes/origin/*`); nothing here writes to the remote (see `publish`).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use git2::{AutotagOption, Direction, ErrorCode, FetchOptions, Oid, Reference, Repository};

use super::credentials::{Credentials, callbacks};
use super::tree::{self, Folder};
use super::url::RemoteUrl;

/// The name of the one remote of the clone.
pub(super) const REMOTE: &str = "origin";

/// A bare clone kept in a local folder.
pub struct Checkout {
    pub(super) repo: Repository,
    dir: PathBuf,
    pub(super) url: RemoteUrl,
    pub(super) credentials: Credentials,
}

/// What [`Checkout::export`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exported {
    /// The full id of the exported commit.
    pub commit: String,
    /// The id of the desired-state tree without the excluded folder: unchanged by commits that
    /// touch only that folder.
    pub tree: String,
}

impl fmt::Debug for Checkout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Checkout")
            .field("dir", &self.dir)
            .field("url", &self.url)
            .field("credentials", &self.credentials)
            .finish_non_exhaustive()
    }
}

impl Checkout {
    /// Opens (or creates: init bare + remote "origin" = url) the local clone in `dir`. `url` may
    /// be a local path, file://, https://, ssh://, or scp-like user@host:path.
    pub fn open(dir: &Path, url: &str, credentials: Credentials) -> anyhow::Result<Checkout> {
        let url = RemoteUrl::parse(url)?;
        let scrub = |e: git2::Error| scrubbed(&url, &credentials, &e);
        let opened = (|| {
            credentials.check(&url)?;
            let repo = match Repository::open_bare(dir) {
                Ok(repo) => repo,
                Err(e) if e.code() == ErrorCode::NotFound => Repository::init_bare(dir).map_err(scrub)?,
                Err(e) => return Err(scrub(e)),
            };
            match repo.find_remote(REMOTE) {
                Ok(remote) if remote.url_bytes() == url.raw().as_bytes() => {}
                Ok(_) => repo.remote_set_url(REMOTE, url.raw()).map_err(scrub)?,
                Err(e) if e.code() == ErrorCode::NotFound => {
                    repo.remote(REMOTE, url.raw()).map_err(scrub)?;
                }
                Err(e) => return Err(scrub(e)),
            }
            anyhow::Ok(repo)
        })();
        let repo = opened.with_context(|| format!("opening the local clone of {url} in {}", dir.display()))?;
        Ok(Checkout { repo, dir: dir.to_path_buf(), url, credentials })
    }

    /// Fetches the given branches; returns the commit id (hex) of each branch on the remote,
    /// None if the remote has no such branch. Never force-updates anything but its own
    /// remote-tracking refs.
    pub fn fetch(&self, branches: &[&str]) -> anyhow::Result<BTreeMap<String, Option<String>>> {
        let heads = self
            .fetch_heads(branches)
            .with_context(|| format!("fetching {} from {}", branches.join(", "), self.url))?;
        Ok(heads.into_iter().map(|(branch, id)| (branch, id.map(|id| id.to_string()))).collect())
    }

    /// Writes the files of the folder `path` (None/"" = root) at `commit` into `dest` (created;
    /// emptied first if it exists), leaving out the folder `exclude` (relative to the repository
    /// root). Returns the id of the desired-state tree without the excluded folder.
    pub fn export(
        &self,
        commit: &str,
        path: Option<&str>,
        exclude: Option<&str>,
        dest: &Path,
    ) -> anyhow::Result<Exported> {
        let folder = Folder::parse(path)?;
        self.export_folder(commit, &folder, exclude, dest)
            .with_context(|| format!("exporting `{folder}` of commit {commit} from {} to {}", self.url, dest.display()))
    }

    fn export_folder(
        &self,
        commit: &str,
        folder: &Folder,
        exclude: Option<&str>,
        dest: &Path,
    ) -> anyhow::Result<Exported> {
        let excluded = exclude.map(|e| Folder::parse(Some(e))).transpose()?;
        let commit = self
            .repo
            .revparse_single(commit)
            .and_then(|object| object.peel_to_commit())
            .map_err(|e| self.error(&e))
            .context("the commit is not in the local clone: fetch it first")?;
        let root = commit.tree()?;
        let Some(tree) = tree::folder_at(&self.repo, &root, folder.components())? else {
            anyhow::bail!("`{folder}` does not exist at commit {}", commit.id());
        };
        let desired = match &excluded {
            Some(excluded) => tree::without(&self.repo, &tree, folder, excluded)?,
            None => tree.id(),
        };
        empty_folder(dest)?;
        let written = tree::export(&self.repo, &self.repo.find_tree(desired)?, dest)?;
        tracing::debug!(commit = %commit.id(), tree = %desired, files = written, dest = %dest.display(), "exported");
        Ok(Exported { commit: commit.id().to_string(), tree: desired.to_string() })
    }

    /// The commit whose signature vouches for the repository at `commit`: `commit` itself,
    /// or, past status commits on top of it (one parent, changes only under `exclude`), the
    /// newest commit that is not one. A merge always vouches for itself.
    pub fn vouching_commit(&self, commit: &str, exclude: Option<&str>) -> anyhow::Result<String> {
        let root = Folder::parse(None)?;
        let excluded = exclude.map(|e| Folder::parse(Some(e))).transpose()?;
        let without_status = |c: &git2::Commit<'_>| -> anyhow::Result<Oid> {
            let tree = c.tree()?;
            Ok(match &excluded {
                Some(excluded) => tree::without(&self.repo, &tree, &root, excluded)?,
                None => tree.id(),
            })
        };
        let mut current =
            self.repo.revparse_single(commit).and_then(|o| o.peel_to_commit()).map_err(|e| self.error(&e))?;
        while current.parent_count() == 1 {
            let parent = current.parent(0).map_err(|e| self.error(&e))?;
            if without_status(&parent)? != without_status(&current)? {
                break;
            }
            current = parent;
        }
        Ok(current.id().to_string())
    }

    /// The files under `path` at the head of the fetched `branch` (paths relative to `path`);
    /// empty when the branch or the folder does not exist.
    pub fn read_folder(&self, branch: &str, path: &str) -> anyhow::Result<BTreeMap<String, Vec<u8>>> {
        let Ok(reference) = self.repo.find_reference(&format!("refs/remotes/{REMOTE}/{branch}")) else {
            return Ok(BTreeMap::new());
        };
        let root = reference.peel_to_tree().map_err(|e| self.error(&e))?;
        match tree::folder_at(&self.repo, &root, Folder::parse(Some(path))?.components())? {
            Some(folder) => tree::read_files(&self.repo, &folder),
            None => Ok(BTreeMap::new()),
        }
    }

    /// The signature of a commit and the data it signs, when the commit is signed.
    pub fn signature(&self, commit: &str) -> anyhow::Result<Option<(Vec<u8>, Vec<u8>)>> {
        let oid = Oid::from_str(commit).map_err(|e| self.error(&e))?;
        match self.repo.extract_signature(&oid, None) {
            Ok((signature, data)) => Ok(Some((signature.to_vec(), data.to_vec()))),
            Err(e) if e.code() == ErrorCode::NotFound => Ok(None),
            Err(e) => Err(self.error(&e)).with_context(|| format!("reading the signature of commit {commit}")),
        }
    }

    /// Fetches `branches` and points `refs/remotes/origin/<branch>` at each one's head, deleting
    /// the tracking refs of branches the remote no longer has.
    pub(super) fn fetch_heads(&self, branches: &[&str]) -> anyhow::Result<BTreeMap<String, Option<Oid>>> {
        for branch in branches {
            anyhow::ensure!(
                Reference::is_valid_name(&format!("refs/heads/{branch}")),
                "`{branch}` is not a branch name"
            );
        }
        let mut remote = self.repo.find_remote(REMOTE)?;
        let mut connection = remote
            .connect_auth(Direction::Fetch, Some(callbacks(&self.url, &self.credentials)), None)
            .map_err(|e| self.error(&e))?;
        let advertised: BTreeMap<String, Oid> = connection
            .list()
            .map_err(|e| self.error(&e))?
            .iter()
            .map(|head| (head.name().to_string(), head.oid()))
            .collect();
        let heads: BTreeMap<String, Option<Oid>> = branches
            .iter()
            .map(|branch| (branch.to_string(), advertised.get(&format!("refs/heads/{branch}")).copied()))
            .collect();
        let refspecs: Vec<String> = heads
            .iter()
            .filter(|(_, id)| id.is_some())
            .map(|(branch, _)| format!("+refs/heads/{branch}:refs/remotes/{REMOTE}/{branch}"))
            .collect();
        if !refspecs.is_empty() {
            let mut options = FetchOptions::new();
            options.remote_callbacks(callbacks(&self.url, &self.credentials)).download_tags(AutotagOption::None);
            connection.remote().download(&refspecs, Some(&mut options)).map_err(|e| self.error(&e))?;
        }
        drop(connection);
        for (branch, id) in &heads {
            let tracking = format!("refs/remotes/{REMOTE}/{branch}");
            match id {
                Some(id) => {
                    self.repo.find_commit(*id).with_context(|| format!("the head of {branch} is not a commit"))?;
                    self.repo.reference(&tracking, *id, true, "lifeboat: fetch")?;
                }
                None => {
                    if let Ok(mut reference) = self.repo.find_reference(&tracking) {
                        reference.delete()?;
                    }
                }
            }
        }
        Ok(heads)
    }

    /// A git2 error from talking to the remote, with any secret replaced by `***`.
    pub(super) fn error(&self, e: &git2::Error) -> anyhow::Error {
        scrubbed(&self.url, &self.credentials, e)
    }
}

fn scrubbed(url: &RemoteUrl, credentials: &Credentials, e: &git2::Error) -> anyhow::Error {
    let refusal = super::credentials::HOST_KEY_REFUSAL.with(|r| r.borrow_mut().take());
    let mut message = match refusal {
        Some(why) if e.class() == git2::ErrorClass::Ssh || e.code() == git2::ErrorCode::Certificate => url.scrub(&why),
        _ => url.scrub(e.message()),
    };
    if let Some(password) = credentials.password() {
        message = message.replace(password, "***");
    }
    anyhow::anyhow!(message)
}

/// Creates `dest`, or removes everything inside it. Symbolic links are removed, not followed.
fn empty_folder(dest: &Path) -> anyhow::Result<()> {
    let entries = match std::fs::read_dir(dest) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return std::fs::create_dir_all(dest).with_context(|| format!("creating {}", dest.display()));
        }
        Err(e) => return Err(e).with_context(|| format!("listing {}", dest.display())),
    };
    for entry in entries {
        let entry = entry.with_context(|| format!("listing {}", dest.display()))?;
        let path = entry.path();
        let removed =
            if entry.file_type()?.is_dir() { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) };
        removed.with_context(|| format!("removing {}", path.display()))?;
    }
    Ok(())
}

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
use git2::{ObjectType, Repository, TreeWalkMode, TreeWalkResult};

use crate::desired::source::{is_hidden, is_yaml};
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
        let mut files = Vec::new();
        let mut all_paths = BTreeSet::new();
        let mut failure = None;
        let walked = tree.walk(TreeWalkMode::PreOrder, |parent, entry| {
            let Ok(name) = entry.name() else {
                return TreeWalkResult::Skip;
            };
            if is_hidden(name) {
                return TreeWalkResult::Skip;
            }
            if entry.kind() != Some(ObjectType::Blob) {
                return TreeWalkResult::Ok;
            }
            let path = format!("{parent}{name}");
            if is_yaml(name) {
                match repository.find_blob(entry.id()) {
                    Ok(blob) => files.push(SourceFile {
                        display: format!("{rev}:{prefix}{path}"),
                        text: String::from_utf8(blob.content().to_vec())
                            .map_err(|_| "the file is not UTF-8 text".to_string()),
                        path: path.clone(),
                    }),
                    Err(e) => {
                        failure = Some(anyhow::Error::new(e).context(format!("reading {rev}:{prefix}{path}")));
                        return TreeWalkResult::Abort;
                    }
                }
            }
            all_paths.insert(path);
            TreeWalkResult::Ok
        });
        if let Some(e) = failure {
            return Err(e);
        }
        walked.with_context(|| format!("walking the tree of `{rev}`"))?;
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

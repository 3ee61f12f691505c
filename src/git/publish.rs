//! Publishing the status report: one commit that replaces the status folder of a branch,
//! pushed without force, retried from a fresh fetch when someone else pushed first.
//!
//! Only the status folder changes; every other path of the branch keeps its content. Nothing
//! here ever force-pushes or rewrites history, and the branch only ever moves from the commit
//! the status was built on: the remote checks that for a push over the network, and Lifeboat
//! itself, with a compare-and-swap, for a remote on this machine.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use git2::{ErrorCode, ObjectType, Oid, PushOptions, Reference, Repository, Signature};

use super::checkout::{Checkout, REMOTE};
use super::credentials::callbacks;
use super::tree::{self, Folder};
use super::url::Transport;

/// What to commit where.
#[derive(Debug, Clone)]
pub struct Publish {
    /// The branch that receives the status commits; created when missing.
    pub branch: String,
    /// The status folder, relative to the repository root, e.g. `status`.
    pub path: String,
    pub author_name: String,
    pub author_email: String,
    /// The commit message.
    pub message: String,
    /// How many times to try before giving up (at least once).
    pub attempts: u32,
    /// The delay before the first retry, doubled for each further one, plus up to half again at
    /// random so competing writers spread out.
    pub backoff: Duration,
}

/// What [`Checkout::publish`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Published {
    /// The status on the branch already had this content; nothing was committed.
    Unchanged,
    /// `commit` is now the head of the branch, pushed on try number `attempts`.
    Committed { commit: String, attempts: u32 },
}

/// The outcome of one try.
enum Attempt {
    Unchanged,
    Pushed(Oid),
    /// Someone else moved the branch first.
    Rejected(String),
}

impl Checkout {
    /// Commits status files to `request.branch` and pushes, safe under races.
    ///
    /// Each try fetches the branch, calls `render` with the files now in the status folder
    /// (paths relative to it; empty when the branch or folder is missing) and commits what it
    /// returns as the folder's entire content on top of the fetched head. `None` from `render`,
    /// or a tree equal to the head's, commits nothing. A rejected push starts over after the
    /// backoff, so `render` sees the new head.
    pub fn publish(
        &self,
        request: &Publish,
        mut render: impl FnMut(&BTreeMap<String, Vec<u8>>) -> Option<BTreeMap<String, Vec<u8>>>,
    ) -> anyhow::Result<Published> {
        let context = || format!("publishing status to {} of {}", request.branch, self.url);
        let folder = Folder::parse(Some(&request.path)).with_context(context)?;
        anyhow::ensure!(!folder.is_root(), "{}: the status folder cannot be the repository root", context());
        anyhow::ensure!(
            Reference::is_valid_name(&format!("refs/heads/{}", request.branch)),
            "{}: `{}` is not a branch name",
            context(),
            request.branch
        );
        let attempts = request.attempts.max(1);
        let mut last = String::new();
        for attempt in 1..=attempts {
            match self.try_publish(request, &folder, &mut render).with_context(context)? {
                Attempt::Unchanged => {
                    tracing::debug!(branch = %request.branch, "status unchanged");
                    return Ok(Published::Unchanged);
                }
                Attempt::Pushed(commit) => {
                    tracing::info!(branch = %request.branch, %commit, attempt, "status committed");
                    return Ok(Published::Committed { commit: commit.to_string(), attempts: attempt });
                }
                Attempt::Rejected(reason) => {
                    tracing::info!(branch = %request.branch, attempt, %reason, "status push rejected, retrying");
                    last = reason;
                }
            }
            if attempt < attempts {
                std::thread::sleep(crate::retry::backoff(request.backoff, attempt, None));
            }
        }
        anyhow::bail!(
            "{}: the push was rejected {attempts} times in a row, the last time with `{last}`; giving up (the branch \
             kept moving on the remote, or the remote refuses pushes to it)",
            context()
        )
    }

    fn try_publish(
        &self,
        request: &Publish,
        folder: &Folder,
        render: &mut impl FnMut(&BTreeMap<String, Vec<u8>>) -> Option<BTreeMap<String, Vec<u8>>>,
    ) -> anyhow::Result<Attempt> {
        let branch = request.branch.as_str();
        let head = self
            .fetch_heads(&[branch])
            .with_context(|| format!("fetching {branch} from {}", self.url))?
            .remove(branch)
            .flatten();
        let head = head.map(|id| self.repo.find_commit(id)).transpose()?;
        let head_tree = head.as_ref().map(|c| c.tree()).transpose()?;
        let previous = match &head_tree {
            Some(root) => match tree::folder_at(&self.repo, root, folder.components())
                .with_context(|| format!("reading `{folder}` on {branch}"))?
            {
                Some(status) => tree::read_files(&self.repo, &status)?,
                None => BTreeMap::new(),
            },
            None => BTreeMap::new(),
        };
        let Some(files) = render(&previous) else {
            return Ok(Attempt::Unchanged);
        };
        let status = tree::write_files(&self.repo, &files)?;
        if head.is_none() && status.is_none() {
            return Ok(Attempt::Unchanged);
        }
        let new_tree = tree::replace(&self.repo, head_tree.as_ref(), folder.components(), status)?;
        if head_tree.as_ref().map(|t| t.id()) == Some(new_tree) {
            return Ok(Attempt::Unchanged);
        }
        let signature = Signature::now(&request.author_name, &request.author_email)
            .with_context(|| format!("making a signature for {} <{}>", request.author_name, request.author_email))?;
        let parents: Vec<&git2::Commit<'_>> = head.iter().collect();
        let commit = self.repo.commit(
            None,
            &signature,
            &signature,
            &request.message,
            &self.repo.find_tree(new_tree)?,
            &parents,
        )?;
        let built_on = head.as_ref().map(|c| c.id());
        match self.push(branch, commit, built_on).with_context(|| format!("pushing {branch} to {}", self.url))? {
            Some(reason) => Ok(Attempt::Rejected(reason)),
            None => {
                self.repo.reference(&format!("refs/remotes/{REMOTE}/{branch}"), commit, true, "lifeboat: publish")?;
                Ok(Attempt::Pushed(commit))
            }
        }
    }

    /// Pushes `commit`, built on `built_on` (`None`: the branch did not exist), to `branch`
    /// without force. Returns why the remote refused it, if it did because the branch is not
    /// where the commit expects it.
    fn push(&self, branch: &str, commit: Oid, built_on: Option<Oid>) -> anyhow::Result<Option<String>> {
        if self.url.transport() == Transport::Local {
            return self.push_local(branch, commit, built_on);
        }
        let rejection = RefCell::new(None);
        let mut callbacks = callbacks(&self.url, &self.credentials);
        callbacks.push_update_reference(|_refname, status| {
            if let Some(status) = status {
                *rejection.borrow_mut() = Some(status.to_string());
            }
            Ok(())
        });
        let mut options = PushOptions::new();
        options.remote_callbacks(callbacks);
        let mut remote = self.repo.find_remote(REMOTE)?;
        match remote.push(&[format!("{commit}:refs/heads/{branch}")], Some(&mut options)) {
            Ok(()) => {}
            // libgit2 compares with the head the remote advertises before sending anything.
            Err(e) if e.code() == ErrorCode::NotFastForward => return Ok(Some(self.error(&e).to_string())),
            Err(e) => return Err(self.error(&e)),
        }
        drop(options);
        Ok(rejection.into_inner())
    }

    /// Pushes to a remote on this machine. libgit2's local transport checks that the push is a
    /// fast-forward of the branch as it was when it connected, then overwrites the branch
    /// whatever it holds by then: a commit someone else pushed in between was lost (2 of 60 in
    /// a test). Here the objects are written into the remote's object database, and the branch
    /// is moved from `built_on` to `commit` with a compare-and-swap under the branch's lock
    /// file, the same lock `git receive-pack` takes: a branch that moved meanwhile, or is being
    /// moved, is a rejection, and the publish starts over from a fresh fetch.
    fn push_local(&self, branch: &str, commit: Oid, built_on: Option<Oid>) -> anyhow::Result<Option<String>> {
        let path = self.url.local_path().with_context(|| {
            format!("{} names a folder on another host, which a file:// URL cannot reach", self.url)
        })?;
        let remote = Repository::open_bare(&path)
            .map_err(|e| self.error(&e))
            .with_context(|| format!("opening {} (a local remote must be a bare repository)", path.display()))?;
        let objects = remote.odb().map_err(|e| self.error(&e))?;
        copy_missing(&self.repo, &self.repo.odb()?, &objects, commit)?;
        let name = format!("refs/heads/{branch}");
        let message = "lifeboat: publish status";
        let moved = match built_on {
            Some(old) => remote.reference_matching(&name, commit, true, old, message),
            None => remote.reference(&name, commit, false, message),
        };
        match moved {
            Ok(_) => Ok(None),
            Err(e)
                if matches!(
                    e.code(),
                    ErrorCode::Modified | ErrorCode::Exists | ErrorCode::NotFound | ErrorCode::Locked
                ) =>
            {
                Ok(Some(format!("{branch} moved on the remote after it was fetched ({})", e.message())))
            }
            Err(e) => Err(self.error(&e)),
        }
    }
}

/// Writes the object `id` and everything it needs into `to` from `repo`, skipping whatever
/// `to` already holds: a tree there is complete, so it is not walked. A commit's parents are the
/// remote's own (the branch was fetched from it), so only its tree is followed.
fn copy_missing(repo: &Repository, from: &git2::Odb<'_>, to: &git2::Odb<'_>, id: Oid) -> anyhow::Result<()> {
    if to.exists(id) {
        return Ok(());
    }
    let object = from.read(id).with_context(|| format!("reading object {id}"))?;
    match object.kind() {
        ObjectType::Commit => copy_missing(repo, from, to, repo.find_commit(id)?.tree_id())?,
        ObjectType::Tree => {
            for entry in repo.find_tree(id)?.iter() {
                // A submodule's commit lives in another repository.
                if matches!(entry.kind(), Some(ObjectType::Tree | ObjectType::Blob)) {
                    copy_missing(repo, from, to, entry.id())?;
                }
            }
        }
        _ => {}
    }
    to.write(object.kind(), object.data()).with_context(|| format!("writing object {id} to the remote"))?;
    Ok(())
}

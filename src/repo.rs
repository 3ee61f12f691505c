//! Where the desired state comes from (a folder, or a branch of a Git repository) and where the
//! status report goes, from a [`Source`] the command line builds. Git work is blocking and runs
//! on the blocking pool; nothing here knows what a pass does.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use sha2::Digest as _;

use crate::desired::{self, DesiredState, Diagnostics, DirectorySource, LoadError, Source as _};
use crate::git::{Checkout, Credentials, Publish, Published};

/// Where the desired state comes from.
#[derive(Debug, Clone)]
pub enum Source {
    /// A folder of YAML files.
    Folder(PathBuf),
    /// A branch of a Git repository.
    Git(Box<GitSource>),
}

/// A branch of a Git repository holding the desired state, and where its status goes.
#[derive(Debug, Clone)]
pub struct GitSource {
    pub url: String,
    pub branch: String,
    /// The folder of the desired state inside the repository.
    pub subdir: Option<String>,
    pub credentials: Credentials,
    /// Apply only a desired state whose last change is signed by a key in this file.
    pub verify_commits: Option<PathBuf>,
    /// The status folder: never read as desired state, the only place status commits change.
    pub status_path: String,
    /// Where the clone lives (default: a temporary folder).
    pub checkout_dir: Option<PathBuf>,
    /// How status is committed; `None`: it is not.
    pub status: Option<StatusTarget>,
}

/// How status commits are made.
#[derive(Debug, Clone)]
pub struct StatusTarget {
    /// Default: the branch followed.
    pub branch: Option<String>,
    /// `Name <email>`.
    pub author: String,
    pub message: String,
}

/// The desired state as one fetch found it.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The desired-state tree id (status folder left out), or for a folder a hash of its files.
    pub tree: String,
    /// The commit, when read from Git.
    pub commit: Option<String>,
    /// The folder holding its files: relative paths in the desired state (keys, CA files)
    /// are read from here.
    pub root: PathBuf,
    pub loaded: Result<DesiredState, Diagnostics>,
}

/// Status files to commit, given the ones the branch holds now (`None`: nothing new).
pub type Render = Box<dyn FnMut(&BTreeMap<String, Vec<u8>>) -> Option<BTreeMap<String, Vec<u8>>> + Send>;

pub struct Repo {
    kind: Kind,
}

enum Kind {
    Folder(PathBuf),
    Git(Box<GitRepo>),
}

struct GitRepo {
    checkout: Arc<std::sync::Mutex<Checkout>>,
    url: String,
    branch: String,
    subdir: Option<String>,
    work: PathBuf,
    /// The status folder, left out of the desired state whether or not status is published.
    status_path: String,
    status: Option<Publish>,
    signers: Option<crate::git::AllowedSigners>,
    /// Keeps a temporary clone alive as long as the repo is used.
    _temporary: Option<tempfile::TempDir>,
}

/// `Name <email>` → (name, email).
fn author(text: &str) -> anyhow::Result<(String, String)> {
    let (name, rest) =
        text.split_once('<').ok_or_else(|| anyhow::anyhow!("--status-author `{text}` is not `Name <email>`"))?;
    let email = rest.trim().trim_end_matches('>').trim();
    anyhow::ensure!(!email.is_empty(), "--status-author `{text}` has no email between < and >");
    Ok((name.trim().to_string(), email.to_string()))
}

impl Repo {
    pub fn new(source: &Source) -> anyhow::Result<Repo> {
        let git = match source {
            Source::Folder(folder) => return Ok(Repo { kind: Kind::Folder(folder.clone()) }),
            Source::Git(git) => git,
        };
        let (dir, temporary) = match &git.checkout_dir {
            Some(dir) => (dir.clone(), None),
            None => {
                let t = tempfile::Builder::new().prefix("lifeboat-").tempdir().context("making a temporary folder")?;
                (t.path().to_path_buf(), Some(t))
            }
        };
        std::fs::create_dir_all(&dir).with_context(|| format!("creating --checkout-dir {}", dir.display()))?;
        let checkout = Checkout::open(&dir.join("repo.git"), &git.url, git.credentials.clone())?;
        let status_path = git.status_path.trim_matches('/').to_string();
        let status = match &git.status {
            Some(s) => {
                let (author_name, author_email) = author(&s.author)?;
                Some(Publish {
                    branch: s.branch.clone().unwrap_or_else(|| git.branch.clone()),
                    path: status_path.clone(),
                    author_name,
                    author_email,
                    message: s.message.clone(),
                    attempts: 5,
                    backoff: std::time::Duration::from_millis(200),
                })
            }
            None => None,
        };
        Ok(Repo {
            kind: Kind::Git(Box::new(GitRepo {
                checkout: Arc::new(std::sync::Mutex::new(checkout)),
                url: git.url.clone(),
                branch: git.branch.clone(),
                subdir: git.subdir.clone(),
                work: dir.join("trees"),
                status_path,
                status,
                signers: git.verify_commits.as_deref().map(crate::git::AllowedSigners::new).transpose()?,
                _temporary: temporary,
            })),
        })
    }

    /// The branch followed, when the desired state comes from Git.
    pub fn branch(&self) -> Option<&str> {
        match &self.kind {
            Kind::Folder(_) => None,
            Kind::Git(g) => Some(&g.branch),
        }
    }

    /// What to call the source in messages.
    pub fn describe(&self) -> String {
        match &self.kind {
            Kind::Folder(p) => p.display().to_string(),
            Kind::Git(g) => format!("{} (branch {})", crate::git::redact_url(&g.url), g.branch),
        }
    }

    /// Whether status is committed back.
    pub fn publishes(&self) -> bool {
        matches!(&self.kind, Kind::Git(g) if g.status.is_some())
    }

    /// Fetches (for Git) and loads the desired state.
    pub async fn fetch(&self) -> anyhow::Result<Snapshot> {
        match &self.kind {
            Kind::Folder(path) => {
                let path = path.clone();
                tokio::task::spawn_blocking(move || load_folder(&path)).await.context("reading the desired state")?
            }
            Kind::Git(g) => {
                let checkout = g.checkout.clone();
                let (branch, subdir, work) = (g.branch.clone(), g.subdir.clone(), g.work.clone());
                let exclude = Some(g.status_path.clone()).filter(|p| !p.is_empty());
                let signers = g.signers.clone();
                tokio::task::spawn_blocking(move || {
                    let checkout = checkout.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    let heads = checkout.fetch(&[branch.as_str()])?;
                    let commit = heads.get(&branch).cloned().flatten().ok_or_else(|| {
                        anyhow::anyhow!(
                            "the repository has no branch `{branch}`: give the branch to follow with --branch"
                        )
                    })?;
                    let staging = work.join("incoming");
                    let exported = checkout.export(&commit, subdir.as_deref(), exclude.as_deref(), &staging)?;
                    // Each tree gets a folder of its own: a pass still running on the previous
                    // tree keeps reading its files.
                    let root = work.join(&exported.tree);
                    if !root.exists() {
                        std::fs::rename(&staging, &root)
                            .with_context(|| format!("moving the desired state into {}", root.display()))?;
                    }
                    prune_trees(&work, &root);
                    let prefix = subdir.as_deref().map(|d| d.trim_matches('/')).filter(|d| !d.is_empty() && *d != ".");
                    let mut snapshot = load_source(
                        &root,
                        DirectorySource::new(&root)?.named(prefix.map_or(String::new(), |d| format!("{d}/"))),
                    )?;
                    if let Some(signers) = &signers
                        && snapshot.loaded.is_ok()
                        && let Some(refused) = untrusted(&checkout, signers, &commit, exclude.as_deref())?
                    {
                        snapshot.loaded = Err(refused);
                    }
                    snapshot.tree = exported.tree;
                    snapshot.commit = Some(exported.commit);
                    Ok(snapshot)
                })
                .await
                .context("fetching the desired state")?
            }
        }
    }

    /// The status files the status branch holds now (empty for a folder, or before any).
    pub async fn committed_status(&self) -> anyhow::Result<BTreeMap<String, Vec<u8>>> {
        let Kind::Git(g) = &self.kind else {
            return Ok(BTreeMap::new());
        };
        let Some(request) = g.status.clone() else {
            return Ok(BTreeMap::new());
        };
        let checkout = g.checkout.clone();
        tokio::task::spawn_blocking(move || {
            let checkout = checkout.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            checkout.fetch(&[request.branch.as_str()])?;
            checkout.read_folder(&request.branch, &request.path)
        })
        .await
        .context("reading the committed status")?
    }

    /// Commits status files, when this repo publishes status; `Ok(None)` when it does not.
    pub async fn publish(&self, render: Render) -> anyhow::Result<Option<Published>> {
        let Kind::Git(g) = &self.kind else {
            return Ok(None);
        };
        let Some(request) = g.status.clone() else {
            return Ok(None);
        };
        let checkout = g.checkout.clone();
        let mut render = render;
        let published = tokio::task::spawn_blocking(move || {
            let checkout = checkout.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            checkout.publish(&request, |previous| render(previous))
        })
        .await
        .context("committing status")??;
        Ok(Some(published))
    }
}

/// Keeps the newest few exported trees (a sync may still read the previous one), so the
/// checkout folder does not grow with every change to the desired state.
fn prune_trees(work: &Path, current: &Path) {
    let Ok(entries) = std::fs::read_dir(work) else { return };
    let mut trees: Vec<(std::time::SystemTime, PathBuf)> = entries
        .flatten()
        .filter(|e| e.path() != current && e.file_name() != "incoming" && e.path().is_dir())
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    trees.sort();
    let keep = 2;
    for (_, old) in trees.iter().rev().skip(keep) {
        let _ = std::fs::remove_dir_all(old);
    }
}

/// Why the desired state at `commit` is not trusted, when its last change is not signed by an
/// allowed key.
fn untrusted(
    checkout: &Checkout,
    signers: &crate::git::AllowedSigners,
    commit: &str,
    exclude: Option<&str>,
) -> anyhow::Result<Option<Diagnostics>> {
    let changed = checkout.vouching_commit(commit, exclude)?;
    let why = match checkout.signature(&changed)? {
        None => "it is not signed".to_string(),
        Some((signature, data)) => match signers.verify(&signature, &data)? {
            Ok(principal) => {
                tracing::info!(commit = %changed, signer = %principal, "the desired state is signed by a trusted key");
                return Ok(None);
            }
            Err(why) => why,
        },
    };
    let mut diagnostics = Diagnostics::default();
    diagnostics.push(
        crate::desired::Diagnostic::error(
            format!("commit {changed}"),
            format!("the commit that vouches for the desired state is not trusted: {why}"),
        )
        .hint("sign it with a key listed in the --verify-commits file (git config gpg.format ssh; git commit -S)"),
    );
    Ok(Some(diagnostics))
}

/// Loads a folder; its "tree" is a hash of its YAML files.
fn load_folder(path: &Path) -> anyhow::Result<Snapshot> {
    load_source(path, DirectorySource::new(path)?)
}

fn load_source(path: &Path, source: DirectorySource) -> anyhow::Result<Snapshot> {
    let mut hasher = sha2::Sha256::new();
    for file in source.yaml_files()? {
        hasher.update(file.path.as_bytes());
        hasher.update([0]);
        hasher.update(file.text.as_deref().unwrap_or_default().as_bytes());
        hasher.update([0]);
    }
    let loaded = match desired::load(&source) {
        Ok(state) => Ok(state),
        Err(LoadError::Invalid(diags)) => Err(diags),
        Err(LoadError::Read(e)) => return Err(e),
    };
    Ok(Snapshot { tree: format!("{:x}", hasher.finalize()), commit: None, root: path.to_path_buf(), loaded })
}

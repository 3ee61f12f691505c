//! The order of a pass, and the only place that knows it.
//!
//! Whoever starts a pass (`plan`, `apply`, `backup export`, the daemon) goes through here, with
//! a [`Setup`] (how to reach registries and the cluster, built once from configuration) and a
//! [`Context`] (one loaded desired state, from [`load`]). A pass is stages, each observe →
//! plan (pure) → apply, in this order:
//!
//! 1. the mirror ([`mirror`]): every MirrorSet's tags, signatures and attached tags;
//! 2. the nodes ([`prepull`]): each PrePullSet resolved against what the mirror now holds,
//!    its DaemonSet brought in line, node coverage read;
//! 3. backups: what each BackupPolicy's destination holds (observed only; exports run on their
//!    own schedule, [`export_backup`]).
//!
//! Then the status is rendered (pure) and published. A dry run ([`dry_run`]) stops after each
//! stage's plan: the plan *is* the dry run, and nothing threads a "dry run" flag through code
//! that does I/O. The daemon decides *when* each stage runs (schedules, triggers, leadership)
//! and calls the same functions; it never decides in what order.

pub mod mirror;
pub mod prepull;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::backup::job::{self, Exported, Job};
use crate::cluster::prepull::PrePullCluster;
use crate::cluster::render::RenderSettings;
use crate::desired::{DesiredState, Diagnostics};
use crate::outcome::{SetPass, SetResult};
use crate::prepull::PrePullPass;
use crate::registry::{OciRegistry, Options};
use crate::repo::{Repo, Snapshot};
use crate::shard::Shard;
use crate::status::{self, BackupObservation};

pub use mirror::MirrorPass;

/// Whether a pass may use a Kubernetes cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterMode {
    /// The kubeconfig's cluster, or the pod's service account, when there is one.
    Auto,
    /// Never talk to Kubernetes.
    Off,
}

/// How passes reach registries and the cluster: built once from configuration, shared by
/// every pass of a process.
#[derive(Clone)]
pub struct Setup {
    pub registry: Options,
    /// Where pre-pull objects go and what they run; from configuration, used whether or not a
    /// cluster is reachable (a plan without a cluster still names them).
    pub render: RenderSettings,
    /// The cluster, or why none is used.
    pub cluster: Arc<Result<PrePullCluster, String>>,
}

impl Setup {
    /// Connects to the cluster when `mode` allows and one is configured.
    pub async fn connect(registry: Options, render: RenderSettings, mode: ClusterMode) -> Setup {
        let cluster = match mode {
            ClusterMode::Off => Err("--cluster off".to_string()),
            ClusterMode::Auto => PrePullCluster::connect(render.clone()).await,
        };
        if let Err(why) = &cluster {
            tracing::info!(reason = %why, "pre-pull: no cluster, node coverage is not observed");
        }
        Setup { registry, render, cluster: Arc::new(cluster) }
    }

    /// The cluster, or why there is none, as the stages take it.
    pub fn cluster(&self) -> Result<&PrePullCluster, &str> {
        self.cluster.as_ref().as_ref().map_err(String::as_str)
    }
}

/// One valid desired state, ready for passes.
#[derive(Clone)]
pub struct Context {
    pub state: Arc<DesiredState>,
    /// The desired-state tree id (status folder left out), or for a folder a hash of its files.
    pub tree: String,
    /// The commit, when read from Git.
    pub commit: Option<String>,
    /// The folder holding the desired state's files (keys, CA files).
    pub root: PathBuf,
    pub registry: Arc<OciRegistry>,
    pub setup: Setup,
}

impl Context {
    /// `commit C, tree T` (or `tree T`), as backup metadata records the desired revision.
    pub fn revision(&self) -> String {
        match &self.commit {
            Some(commit) => format!("commit {commit}, tree {}", self.tree),
            None => format!("tree {}", self.tree),
        }
    }

    /// The part of this context that `shard` handles: of each MirrorSet, the images landing in
    /// its mirror repositories, and nothing else ([`crate::shard`]).
    pub fn sharded(&self, shard: Shard) -> Context {
        Context { state: Arc::new(shard.of(&self.state)), ..self.clone() }
    }
}

/// A desired state that does not load: nothing of it is applied.
#[derive(Debug, Clone)]
pub struct Invalid {
    pub diagnostics: Diagnostics,
    pub tree: String,
    pub commit: Option<String>,
}

pub enum Loaded {
    Valid(Box<Context>),
    Invalid(Invalid),
}

/// Fetches (for Git) and loads the desired state, and builds the registry client it
/// describes: [`Repo::fetch`], then [`prepare`].
pub async fn load(repo: &Repo, setup: &Setup) -> anyhow::Result<Loaded> {
    Ok(prepare(repo.fetch().await?, setup))
}

/// A fetched desired state made ready for passes: the registry client it describes, with the
/// signature policies of its MirrorSets. A desired state whose key or CA files cannot be read
/// is invalid, like one that does not parse.
pub fn prepare(snapshot: Snapshot, setup: &Setup) -> Loaded {
    let Snapshot { tree, commit, root, loaded } = snapshot;
    let state = match loaded {
        Ok(state) => state,
        Err(diagnostics) => return Loaded::Invalid(Invalid { diagnostics, tree, commit }),
    };
    match OciRegistry::for_desired(&state, &root, setup.registry.clone()) {
        Ok(registry) => Loaded::Valid(Box::new(Context {
            state: Arc::new(state),
            tree,
            commit,
            root,
            registry: Arc::new(registry),
            setup: setup.clone(),
        })),
        Err(e) => {
            let mut diagnostics = Diagnostics::default();
            diagnostics.push(crate::desired::Diagnostic::error("(desired state)", format!("{e:#}")));
            Loaded::Invalid(Invalid { diagnostics, tree, commit })
        }
    }
}

/// Everything one pass found and did.
#[derive(Debug, Clone)]
pub struct Pass {
    pub started: DateTime<Utc>,
    pub finished: DateTime<Utc>,
    pub mirror: MirrorPass,
    pub pre_pull: PrePullPass,
    pub backups: BTreeMap<String, BackupObservation>,
}

impl Pass {
    /// The pass, set by set, as the status report records it.
    pub fn by_set(&self, last_success: &BTreeMap<String, DateTime<Utc>>) -> BTreeMap<String, SetPass> {
        self.mirror.by_set(self.started, self.finished, last_success)
    }

    /// How the pass ended: the worst of its sets' results and of the pre-pull pass.
    pub fn result(&self) -> SetResult {
        self.by_set(&BTreeMap::new())
            .values()
            .map(SetPass::result)
            .chain([self.pre_pull.result()])
            .max()
            .unwrap_or(SetResult::Succeeded)
    }
}

/// Observes and plans every stage, changing nothing: what `plan` prints.
pub async fn dry_run(ctx: &Context) -> Pass {
    let started = Utc::now();
    let registry = ctx.registry.for_pass();
    let mirror = mirror::dry_run(&ctx.state, &registry).await;
    let pre_pull = prepull::dry_run(&ctx.state, &registry, ctx.setup.cluster(), &ctx.setup.render).await;
    let backups = job::observe(&ctx.state, &BTreeMap::new()).await;
    Pass { started, finished: Utc::now(), mirror, pre_pull, backups }
}

/// One full pass: the mirror, then the nodes, which pull what the mirror now holds, then the
/// backups as they are.
pub async fn run(ctx: &Context) -> Pass {
    let started = Utc::now();
    let registry = ctx.registry.for_pass();
    let mirror = mirror::run(&ctx.state, &registry).await;
    let pre_pull = prepull::run(&ctx.state, &registry, ctx.setup.cluster(), &ctx.setup.render).await;
    let backups = job::observe(&ctx.state, &BTreeMap::new()).await;
    Pass { started, finished: Utc::now(), mirror, pre_pull, backups }
}

/// What a one-shot `apply` did: the pass (or why nothing was applied) and the status commit.
pub struct Once {
    pub loaded: Result<Pass, Invalid>,
    /// `None` when the status is not published (a folder, or `--no-status`).
    pub published: Option<crate::git::Published>,
}

/// `apply`: load, run a full pass, render the status and publish it. An invalid desired state
/// applies nothing; the status then says what is wrong.
pub async fn once(repo: &Repo, setup: &Setup, heartbeat: Option<chrono::Duration>) -> anyhow::Result<Once> {
    let alerts = status::shipped_alerts();
    let (report, loaded) = match load(repo, setup).await? {
        Loaded::Invalid(invalid) => {
            let report = status::Report {
                applied: None,
                invalid: Some((invalid.diagnostics.clone(), invalid.tree.clone())),
                passes: BTreeMap::new(),
                alerts,
                backups: BTreeMap::new(),
                pre_pull: PrePullPass::default(),
            };
            (report, Err(invalid))
        }
        Loaded::Valid(ctx) => {
            let pass = run(&ctx).await;
            let report = status::Report {
                applied: Some((ctx.state.clone(), ctx.tree.clone())),
                invalid: None,
                passes: pass.by_set(&BTreeMap::new()),
                alerts,
                backups: pass.backups.clone(),
                pre_pull: pass.pre_pull.clone(),
            };
            (report, Ok(pass))
        }
    };
    let published = publish(repo, report, Utc::now(), heartbeat).await?;
    Ok(Once { loaded, published })
}

/// `apply --shard I/N`: load, then a full pass over the shard's part of the desired state. No
/// status is published: a shard sees only part of the desired state, and the pass combining the
/// shards writes the one status.
pub async fn shard(repo: &Repo, setup: &Setup, shard: Shard) -> anyhow::Result<Result<Pass, Invalid>> {
    Ok(match load(repo, setup).await? {
        Loaded::Invalid(invalid) => Err(invalid),
        Loaded::Valid(ctx) => Ok(run(&ctx.sharded(shard)).await),
    })
}

/// Renders the status against what the status branch holds and commits it when it says
/// something new (or a heartbeat is due). `None` when the repo does not publish status.
pub async fn publish(
    repo: &Repo,
    report: status::Report,
    now: DateTime<Utc>,
    heartbeat: Option<chrono::Duration>,
) -> anyhow::Result<Option<crate::git::Published>> {
    repo.publish(Box::new(move |previous| report.render_if_changed(previous, now, heartbeat).map(|r| r.files))).await
}

/// One export of a BackupPolicy, from the mirror the context describes.
pub async fn export_backup(
    ctx: &Context,
    job: Job,
    progress: impl Fn(u64) + Send + Sync + 'static,
) -> anyhow::Result<Exported> {
    job::export(&ctx.state, &ctx.registry.for_pass(), job, progress).await
}

#[cfg(test)]
mod tests;

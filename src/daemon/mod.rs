//! `lifeboat run`: follows the desired state, runs each MirrorSet on its schedule, commits the
//! status report and serves health, readiness, metrics, the trigger and the webhook.
//!
//! The daemon decides *when*: when to fetch, which set or backup is due, whether this replica
//! leads. *What* a pass does, and in which order, is [`crate::reconcile`]'s: the daemon calls
//! its stages (a set's sync, the nodes' pre-pull, a backup export, the status) and never
//! orders I/O itself. It knows nothing of the command line: [`Config`] is built by `commands`.
//!
//! One control loop owns every decision; syncs and exports run as tasks and hand their
//! results back to it. It never exits on a failed fetch, pass or push: those are logged,
//! counted and written into the status, and the loop goes on. SIGTERM stops scheduling and
//! lets running syncs finish within a deadline.
//!
//! It runs inside a `LocalSet`: syncs are tasks on the control loop's thread, as a one-shot
//! `apply` runs on its caller's, while the HTTP server and the Lease run on the runtime's
//! worker threads.

mod backups;
mod http;
mod schedule;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use tokio::sync::Notify;
use tokio::task::JoinSet;

use crate::desired::Diagnostics;
use crate::metrics::{Metrics, RunResult};
use crate::outcome::SetPass;
use crate::reconcile::{self, Loaded, Setup};
use crate::registry::cosign::BlobSigner;
use crate::repo::{Repo, Source};
use crate::status;
use schedule::Schedule;

/// The longest a fetch or a status commit may hold up the control loop.
const GIT_TIMEOUT: Duration = Duration::from_secs(120);
/// The same while stopping.
const STOPPING_GIT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one pre-pull pass (mirror lookups, cluster reads and writes) may take.
const PRE_PULL_TIMEOUT: Duration = Duration::from_secs(120);
/// How often the loop wakes at the latest, to follow the Lease.
const LEASE_TICK: Duration = Duration::from_secs(5);

/// Everything `lifeboat run` is told.
pub struct Config {
    pub source: Source,
    pub setup: Setup,
    /// Address of the HTTP endpoints.
    pub listen: SocketAddr,
    /// How often to fetch the desired state.
    pub poll: Duration,
    /// The bearer token that authorizes `POST /trigger`.
    pub trigger_token: Option<String>,
    /// The secret of the Git push webhook.
    pub webhook_secret: Option<String>,
    /// On SIGTERM, how long running syncs may take to finish.
    pub shutdown_timeout: Duration,
    /// A Lease (name, namespace): with several replicas only its holder applies.
    pub lease: Option<(String, String)>,
    /// A folder on the mirror registry's storage filesystem, for the storage metrics.
    pub storage_path: Option<PathBuf>,
    /// Signs the metadata of scheduled backups.
    pub backup_signer: Option<BlobSigner>,
    /// Commit the status at least this often even when nothing changed.
    pub heartbeat: Option<chrono::Duration>,
}

/// What the endpoints share with the control loop.
pub struct Shared {
    pub metrics: Metrics,
    pub ready: AtomicBool,
    /// Fetch now (trigger, webhook, a standby's request through the Lease).
    pub wake: Arc<Notify>,
    /// With `wake`: run every set now, not only those a new desired state makes due (an
    /// explicit trigger; a push webhook only fetches, so Lifeboat's own status commits,
    /// which push too, never start a sync).
    pub sync_all: Arc<AtomicBool>,
    /// With several replicas: passes a trigger reaching a standby on to the leader.
    pub election: Option<crate::cluster::Election>,
    pub trigger_token: Option<String>,
    pub webhook_secret: Option<String>,
    pub branch: String,
}

/// What a task does.
#[derive(Debug, Clone)]
enum Task {
    /// The start-up pass that copies what is missing first.
    MissingFirst,
    Sync(String),
    Backup(String),
}

/// What a finished task hands back.
enum Done {
    MissingFirst,
    Sync(String, Option<Box<SetPass>>),
    Backup(String, Result<(), String>),
}

/// Where the pass that copies missing images first stands, for the current desired state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MissingFirst {
    /// Not run yet: no set starts before it.
    Pending,
    /// Running: no set starts meanwhile.
    Running,
    Done,
}

/// Runs until SIGTERM (or Ctrl-C).
pub async fn run(config: Config) -> anyhow::Result<()> {
    let (mut daemon, server) = start(config).await?;
    daemon.serve().await?;
    daemon.shutdown(server).await;
    Ok(())
}

/// The HTTP server, and how to stop it.
struct Server {
    task: tokio::task::JoinHandle<()>,
    stop: Arc<Notify>,
}

async fn start(config: Config) -> anyhow::Result<(Daemon, Server)> {
    let repo = Repo::new(&config.source)?;
    let wake = Arc::new(Notify::new());
    let sync_all = Arc::new(AtomicBool::new(false));
    let election = match &config.lease {
        Some((name, namespace)) => {
            Some(crate::cluster::Election::start(name, namespace, wake.clone(), sync_all.clone()).await?)
        }
        None => None,
    };
    let shared = Arc::new(Shared {
        metrics: Metrics::new(config.storage_path.clone()),
        ready: AtomicBool::new(false),
        wake,
        sync_all,
        election,
        trigger_token: config.trigger_token.clone(),
        webhook_secret: config.webhook_secret.clone(),
        branch: repo.branch().unwrap_or_default().to_string(),
    });
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listening on {} (--listen)", config.listen))?;
    let address = listener.local_addr()?;
    tracing::info!(%address, source = %repo.describe(), "lifeboat is running");
    let stop = Arc::new(Notify::new());
    let task = {
        let stop = stop.clone();
        let app = http::router(shared.clone());
        tokio::spawn(async move {
            let served = axum::serve(listener, app).with_graceful_shutdown(async move { stop.notified().await }).await;
            if let Err(e) = served {
                tracing::error!(error = %e, "the HTTP server stopped");
            }
        })
    };
    let mut daemon = Daemon {
        repo,
        shared,
        backups: backups::Backups::new(config.backup_signer.map(Arc::new)),
        config: Settings {
            setup: config.setup,
            poll: config.poll,
            shutdown_timeout: config.shutdown_timeout,
            heartbeat: config.heartbeat,
        },
        applied: None,
        invalid: None,
        passes: BTreeMap::new(),
        sets: Schedule::default(),
        missing_first: MissingFirst::Done,
        rerun: Default::default(),
        tasks: JoinSet::new(),
        running: HashMap::new(),
        alerts: status::shipped_alerts(),
        seeded: BTreeMap::new(),
        git_timeout: GIT_TIMEOUT,
        pre_pull: Default::default(),
    };
    daemon.seed_from_committed_status().await;
    Ok((daemon, Server { task, stop }))
}

/// What the daemon keeps of its configuration.
struct Settings {
    setup: Setup,
    poll: Duration,
    shutdown_timeout: Duration,
    heartbeat: Option<chrono::Duration>,
}

struct Daemon {
    repo: Repo,
    shared: Arc<Shared>,
    config: Settings,
    /// The desired state being applied.
    applied: Option<reconcile::Context>,
    /// The newest desired state, when it is invalid, and its tree.
    invalid: Option<(Diagnostics, String)>,
    passes: BTreeMap<String, SetPass>,
    /// When each MirrorSet syncs next, and which are syncing.
    sets: Schedule,
    missing_first: MissingFirst,
    /// Sets that were running when a new desired state arrived: they run again once done.
    rerun: std::collections::BTreeSet<String>,
    tasks: JoinSet<Done>,
    /// What each running task does.
    running: HashMap<tokio::task::Id, Task>,
    backups: backups::Backups,
    alerts: Vec<String>,
    /// Last successes read from the committed status at start-up, until a pass has run.
    seeded: BTreeMap<String, DateTime<Utc>>,
    /// How long a status commit may take.
    git_timeout: Duration,
    /// The last pre-pull pass.
    pre_pull: crate::prepull::PrePullPass,
}

impl Daemon {
    /// Whether this replica applies (always, without a Lease).
    fn leads(&self) -> bool {
        self.shared.election.as_ref().is_none_or(|e| e.is_leader())
    }

    /// The control loop, until SIGTERM or Ctrl-C.
    async fn serve(&mut self) -> anyhow::Result<()> {
        let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("watching for SIGTERM")?;
        let mut next_fetch = tokio::time::Instant::now();
        loop {
            let leader = self.leads();
            self.shared.metrics.set_leader(leader);
            let wait = self.next_wake(next_fetch, leader);
            tokio::select! {
                _ = tokio::time::sleep_until(wait) => {}
                _ = self.shared.wake.notified() => {
                    next_fetch = tokio::time::Instant::now();
                    if self.shared.sync_all.swap(false, Ordering::SeqCst) {
                        self.all_due();
                    }
                }
                Some(joined) = self.tasks.join_next_with_id(), if !self.tasks.is_empty() => {
                    self.joined(joined).await;
                    continue;
                }
                _ = terminate.recv() => return Ok(()),
                _ = tokio::signal::ctrl_c() => return Ok(()),
            }
            if tokio::time::Instant::now() >= next_fetch {
                self.refresh().await;
                next_fetch = tokio::time::Instant::now() + self.config.poll;
                // Nodes join, pull and leave between syncs: with a cluster, every poll (and only
                // the poll: a start-up syncs every set, and each would repeat it) runs the
                // pre-pull stage; the status commits only when it changed.
                if self.config.setup.cluster.is_ok() {
                    self.pre_pull().await;
                    self.publish().await;
                }
            }
            if leader {
                self.start_due();
            }
        }
    }

    /// Stops scheduling, lets running tasks finish within the shutdown deadline, stops the HTTP
    /// server and gives the Lease up.
    async fn shutdown(mut self, server: Server) {
        tracing::info!(running = self.running.len(), "stopping: no new syncs start");
        // Status commits while stopping must fit in the pod's grace period.
        self.git_timeout = STOPPING_GIT_TIMEOUT;
        server.stop.notify_one();
        let deadline = tokio::time::Instant::now() + self.config.shutdown_timeout;
        while !self.tasks.is_empty() {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => {
                    tracing::warn!(running = self.running.len(), "syncs still running at the shutdown deadline are stopped; the next start converges");
                    self.tasks.abort_all();
                    break;
                }
                Some(joined) = self.tasks.join_next_with_id() => self.joined(joined).await,
            }
        }
        let shared = self.shared.clone();
        drop(self);
        let _ = tokio::time::timeout(Duration::from_secs(5), server.task).await;
        // The HTTP server has let go of its handle: give the Lease up so a standby takes over now.
        match Arc::into_inner(shared).map(|s| s.election) {
            Some(Some(election)) => election.stop().await,
            Some(None) => {}
            None => tracing::warn!("the Lease is left to expire (15 s): the HTTP server did not stop in time"),
        }
        tracing::info!("stopped");
    }

    fn spawn(&mut self, task: Task, work: impl std::future::Future<Output = Done> + 'static) {
        let handle = self.tasks.spawn_local(work);
        self.running.insert(handle.id(), task);
    }

    /// A task ended: hand its result on; one that panicked frees what it held and counts as
    /// failed.
    async fn joined(&mut self, joined: Result<(tokio::task::Id, Done), tokio::task::JoinError>) {
        match joined {
            Ok((id, done)) => {
                self.running.remove(&id);
                self.finished(done).await;
            }
            Err(e) => {
                let Some(task) = self.running.remove(&e.id()) else { return };
                if e.is_panic() {
                    tracing::error!(?task, "a task stopped on an internal error; it runs again on its schedule");
                }
                match task {
                    Task::Sync(name) => {
                        if e.is_panic() {
                            self.shared.metrics.sync.record_run(&name, RunResult::Failure);
                        }
                        self.sets.finished(&name);
                    }
                    Task::Backup(name) => self.backups.stopped(&name, &self.shared.metrics),
                    Task::MissingFirst => self.finished_missing_first(),
                }
            }
        }
    }

    fn next_wake(&self, next_fetch: tokio::time::Instant, leader: bool) -> tokio::time::Instant {
        let now = Utc::now();
        // Due times only matter when this replica can start something.
        let sets = self.sets.next_due().filter(|_| leader && self.missing_first != MissingFirst::Running);
        let soonest = sets
            .into_iter()
            .chain(self.backups.next_due().filter(|_| leader))
            .min()
            .map(|t| (t - now).to_std().unwrap_or_default());
        let mut wake = next_fetch.min(tokio::time::Instant::now() + LEASE_TICK);
        if let Some(d) = soonest {
            wake = wake.min(tokio::time::Instant::now() + d);
        }
        wake
    }

    /// Fetches the desired state; a new valid one is applied at once, an invalid one is
    /// reported and the last valid one kept.
    async fn refresh(&mut self) {
        let snapshot = match tokio::time::timeout(GIT_TIMEOUT, self.repo.fetch()).await {
            Ok(Ok(snapshot)) => snapshot,
            Ok(Err(e)) => {
                tracing::error!(error = format!("{e:#}"), "could not read the desired state; keeping the last one");
                return;
            }
            Err(_) => {
                tracing::error!(
                    seconds = GIT_TIMEOUT.as_secs(),
                    "reading the desired state took too long; keeping the last one"
                );
                return;
            }
        };
        self.shared.metrics.fetched(Utc::now());
        self.shared.ready.store(true, Ordering::SeqCst);
        let tree = snapshot.tree.clone();
        if self.invalid.as_ref().map(|(_, t)| t.as_str()) == Some(tree.as_str()) {
            return;
        }
        if self.applied.as_ref().map(|a| a.tree.as_str()) == Some(tree.as_str()) {
            if self.invalid.take().is_some() {
                // The invalid change was reverted: the state being applied is the newest again.
                tracing::info!(tree = %tree, "the desired state is valid again");
                self.shared.metrics.set_desired_valid(true);
                self.publish().await;
            }
            return;
        }
        // Only a new desired state gets a registry client of its own (key and CA files read).
        match reconcile::prepare(snapshot, &self.config.setup) {
            Loaded::Valid(ctx) => self.follow(*ctx),
            Loaded::Invalid(invalid) => {
                tracing::error!(tree = %invalid.tree, problems = %invalid.diagnostics, "the new desired state is invalid; nothing of it is applied, the last valid one is kept");
                self.shared.metrics.set_desired_valid(false);
                self.invalid = Some((invalid.diagnostics, invalid.tree));
                if self.leads() {
                    self.publish().await;
                }
            }
        }
    }

    /// A new valid desired state: every set is due now, after the pass that copies what is
    /// missing first.
    fn follow(&mut self, ctx: reconcile::Context) {
        let state = &ctx.state;
        tracing::info!(tree = %ctx.tree, commit = ctx.commit.as_deref().unwrap_or("-"), sets = state.mirror_sets.len(), "applying a new desired state");
        self.shared.metrics.set_desired_valid(true);
        for name in state.mirror_sets.keys() {
            self.shared.metrics.sync.declare_set(name);
        }
        let now = Utc::now();
        for gone in self.passes.keys().chain(self.seeded.keys()).filter(|n| !state.mirror_sets.contains_key(*n)) {
            self.shared.metrics.sync.forget_set(gone);
        }
        self.sets.follow(state.mirror_sets.keys().map(|n| (n.clone(), Some(now))));
        self.passes.retain(|name, _| state.mirror_sets.contains_key(name));
        self.seeded.retain(|name, _| state.mirror_sets.contains_key(name));
        // A set still syncing the previous state runs again once done, and what is missing
        // under the new state is copied first.
        self.rerun = self.sets.running_names();
        self.missing_first = MissingFirst::Pending;
        self.backups.follow(state, &self.shared.metrics);
        self.applied = Some(ctx);
        self.invalid = None;
    }

    /// When the set last synced, as far as this process or the committed status knows: a
    /// restart does not forget it, so freshness alerts stay true.
    fn last_success(&self, name: &str) -> Option<DateTime<Utc>> {
        self.passes.get(name).and_then(|p| p.last_success).or_else(|| self.seeded.get(name).copied())
    }

    async fn seed_from_committed_status(&mut self) {
        let files = match tokio::time::timeout(GIT_TIMEOUT, self.repo.committed_status()).await {
            Ok(Ok(files)) => files,
            Ok(Err(e)) => {
                tracing::warn!(
                    error = format!("{e:#}"),
                    "could not read the committed status; last successes start empty"
                );
                return;
            }
            Err(_) => return,
        };
        for (name, at) in status::last_successes(&files) {
            self.shared.metrics.sync.seed_last_success(&name, at);
            self.seeded.insert(name, at);
        }
    }

    /// Every set runs at once (a trigger or webhook).
    fn all_due(&mut self) {
        self.sets.all_due(Utc::now());
        self.backups.all_due();
    }

    /// Starts what is due: first the pass that copies what is missing, then each set that is
    /// due (unless still running), and each backup policy that is due.
    fn start_due(&mut self) {
        let Some(ctx) = self.applied.clone() else {
            return;
        };
        match self.missing_first {
            MissingFirst::Pending if self.sets.running() == 0 => {
                self.missing_first = MissingFirst::Running;
                self.spawn(Task::MissingFirst, async move {
                    let pass = reconcile::mirror::missing_first(&ctx.state, &*ctx.registry).await;
                    tracing::info!(
                        copied = pass.outcomes.as_ref().map_or(0, Vec::len),
                        "start-up: missing images copied"
                    );
                    Done::MissingFirst
                });
                return;
            }
            MissingFirst::Pending | MissingFirst::Running => return,
            MissingFirst::Done => {}
        }
        let now = Utc::now();
        let due = self.sets.take_due(now, |name| ctx.state.mirror_sets.get(name)?.schedule.next_after(&now));
        for name in due.skipped {
            tracing::warn!(set = %name, "skipped: the previous sync of this set is still running");
            self.shared.metrics.sync.record_run(&name, RunResult::Skipped);
        }
        for name in due.start {
            let earlier = self.last_success(&name);
            let ctx = ctx.clone();
            let task = Task::Sync(name.clone());
            self.spawn(task, async move {
                let pass = reconcile::mirror::set(&ctx.state, &*ctx.registry, &name, earlier).await;
                Done::Sync(name, pass.map(Box::new))
            });
        }
        for name in self.backups.take_due(&ctx.state, &self.shared.metrics) {
            let (ctx, signer) = (ctx.clone(), self.backups.signer.clone());
            tracing::info!(policy = %name, "backup export starts");
            let task = Task::Backup(name.clone());
            self.spawn(task, async move {
                let result = backups::export(&ctx, &name, signer).await;
                Done::Backup(name, result)
            });
        }
    }

    async fn finished(&mut self, done: Done) {
        match done {
            Done::MissingFirst => self.finished_missing_first(),
            Done::Sync(name, pass) => {
                self.sets.finished(&name);
                if self.rerun.remove(&name) {
                    self.sets.due_now(&name, Utc::now());
                }
                let Some(pass) = pass else { return };
                tracing::info!(set = %name, result = pass.result().label(), changes = pass.outcomes().len(), "sync finished");
                self.shared.metrics.sync.record_pass(&name, &pass);
                self.passes.insert(name, *pass);
                self.publish().await;
            }
            Done::Backup(name, result) => {
                self.backups.finished(&name, result, &self.shared.metrics);
                self.publish().await;
            }
        }
    }

    /// After the missing-first pass, every set runs a full sync.
    fn finished_missing_first(&mut self) {
        self.missing_first = MissingFirst::Done;
        self.sets.all_due(Utc::now());
    }

    /// The pre-pull stage within a time limit: only the leader changes anything; every
    /// replica reads coverage for its metrics.
    async fn pre_pull(&mut self) {
        let Some(ctx) = &self.applied else { return };
        // Each poll's pre-pull is a pass of its own: a host that stops answering is given up on
        // for this poll only.
        let registry = &ctx.registry.for_pass();
        let (state, setup) = (&ctx.state, &self.config.setup);
        let pass = async {
            if self.leads() {
                reconcile::prepull::run(state, registry, setup.cluster(), &setup.render).await
            } else {
                reconcile::prepull::dry_run(state, registry, setup.cluster(), &setup.render).await
            }
        };
        match tokio::time::timeout(PRE_PULL_TIMEOUT, pass).await {
            Ok(pass) => {
                for failure in &pass.failures {
                    tracing::error!(error = %failure, "pre-pull change failed; the next pass tries again");
                }
                self.shared.metrics.pre_pull.record_pre_pull(&pass);
                self.pre_pull = pass;
            }
            Err(_) => {
                tracing::error!(
                    seconds = PRE_PULL_TIMEOUT.as_secs(),
                    "pre-pull took too long; the next pass tries again"
                );
                self.pre_pull.daemon_sets =
                    crate::observed::Observed::Unknown("the last pre-pull pass took too long".into());
            }
        }
    }

    /// Renders the status (for metrics always; committed when the repo publishes and this
    /// replica leads).
    async fn publish(&mut self) {
        let backups = match &self.applied {
            Some(ctx) => crate::backup::observe(&ctx.state, &self.backups.errors).await,
            None => BTreeMap::new(),
        };
        for (name, o) in &backups {
            self.shared.metrics.backups.record_backup(name, o);
        }
        // Without a cluster, the pre-pull stage only resolves the sets' images for the status;
        // with one, the poll runs it (see `serve`).
        if self.config.setup.cluster.is_err() {
            self.pre_pull().await;
        }
        let report = status::Report {
            applied: self.applied.as_ref().map(|a| (a.state.clone(), a.tree.clone())),
            invalid: self.invalid.clone(),
            passes: self.passes.clone(),
            alerts: self.alerts.clone(),
            backups,
            pre_pull: self.pre_pull.clone(),
        };
        let now = Utc::now();
        if let Some(rendered) = report.render_if_changed(&BTreeMap::new(), now, None) {
            self.shared.metrics.sync.record_status(&rendered);
        }
        if !self.leads() {
            return;
        }
        let publish = reconcile::publish(&self.repo, report, now, self.config.heartbeat);
        match tokio::time::timeout(self.git_timeout, publish).await {
            Ok(Ok(Some(crate::git::Published::Committed { commit, attempts }))) => {
                self.shared.metrics.status_committed();
                tracing::info!(%commit, attempts, "status committed");
            }
            Ok(Ok(_)) => tracing::debug!("status unchanged"),
            Ok(Err(e)) => {
                tracing::error!(error = format!("{e:#}"), "could not commit status; the next pass tries again")
            }
            Err(_) => tracing::error!(
                seconds = self.git_timeout.as_secs(),
                "committing status took too long; the next pass tries again"
            ),
        }
    }
}

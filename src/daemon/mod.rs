//! `lifeboat run`: follows the desired state, runs each MirrorSet on its schedule, commits the
//! status report and serves health, readiness, metrics, the trigger and the webhook.
//!
//! One control loop owns every decision (when to fetch, which set is due, whether this
//! replica leads); syncs run as tasks and report back to it. It never exits on a failed
//! fetch, pass or push: those are logged, counted and written into the status, and the loop
//! goes on. SIGTERM stops scheduling and lets running syncs finish within a deadline.
//!
//! It runs inside a `LocalSet`: syncs are tasks on the control loop's thread, as a one-shot
//! `apply` runs on its caller's, while the HTTP server and the Lease run on the runtime's
//! worker threads.

mod backups;
mod http;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinSet;

use crate::cli::RunArgs;
use crate::desired::{DesiredState, Diagnostics};
use crate::metrics::{Metrics, RunResult};
use crate::reconcile;
use crate::registry::OciRegistry;
use crate::repo::{Repo, Snapshot};
use crate::status::{self, SetPass};

/// The longest a fetch or a status commit may hold up the control loop.
const GIT_TIMEOUT: Duration = Duration::from_secs(120);
/// The same while stopping.
const STOPPING_GIT_TIMEOUT: Duration = Duration::from_secs(10);

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

/// The desired state being applied.
struct Applied {
    tree: String,
    state: Arc<DesiredState>,
    registry: Arc<OciRegistry>,
}

enum Done {
    /// The start-up pass that copies what is missing.
    Missing,
    Set(String, Box<SetPass>),
    Backup(String, Result<(), String>),
}

/// What a task does.
#[derive(Debug, Clone)]
enum Job {
    Missing,
    Set(String),
    Backup(String),
}

fn read_secret(file: &Option<std::path::PathBuf>, flag: &str) -> anyhow::Result<Option<String>> {
    file.as_ref()
        .map(|f| {
            let text = std::fs::read_to_string(f).with_context(|| format!("reading {flag} {}", f.display()))?;
            let text = text.trim().to_string();
            anyhow::ensure!(!text.is_empty(), "{flag} {} is empty", f.display());
            Ok(text)
        })
        .transpose()
}

pub async fn run(args: &RunArgs) -> anyhow::Result<u8> {
    let repo = Repo::new(&args.pass.path, &args.pass.git, Some(&args.status))?;
    let wake = Arc::new(Notify::new());
    let sync_all = Arc::new(AtomicBool::new(false));
    let election = match &args.lease {
        Some(name) => Some(
            crate::cluster::Election::start(name, args.lease_namespace.as_deref(), wake.clone(), sync_all.clone())
                .await?,
        ),
        None => None,
    };
    let shared = Arc::new(Shared {
        metrics: Metrics::new(args.storage_path.clone()),
        ready: AtomicBool::new(false),
        wake,
        sync_all,
        election,
        trigger_token: read_secret(&args.trigger_token_file, "--trigger-token-file")?,
        webhook_secret: read_secret(&args.webhook_secret_file, "--webhook-secret-file")?,
        branch: args.pass.git.branch.clone(),
    });
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {} (--listen)", args.listen))?;
    let address = listener.local_addr()?;
    tracing::info!(%address, source = %repo.describe(), "lifeboat is running");
    let stop_http = Arc::new(Notify::new());
    let server = {
        let stop = stop_http.clone();
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
        shared: shared.clone(),
        args,
        applied: None,
        invalid: None,
        passes: BTreeMap::new(),
        due: BTreeMap::new(),
        running: BTreeSet::new(),
        missing_running: false,
        missing_first: true,
        rerun: BTreeSet::new(),
        tasks: JoinSet::new(),
        task_sets: std::collections::HashMap::new(),
        backups: backups::Backups::default(),
        alerts: status::shipped_alerts(),
        seeded: BTreeMap::new(),
        git_timeout: GIT_TIMEOUT,
        cluster: crate::commands::cluster_for(&args.pass.cluster).await,
        pre_pull: Default::default(),
    };
    if let Err(why) = &daemon.cluster {
        tracing::info!(reason = %why, "pre-pull: no cluster, node coverage is not observed");
    }
    if let Some(path) = &args.backup_signing_key {
        daemon.backups.signer = Some(Arc::new(crate::commands::backup_signer(path)?));
    }
    daemon.seed_from_committed_status().await;
    let (done_tx, mut done_rx) = mpsc::channel::<Done>(64);
    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).context("watching for SIGTERM")?;
    let mut next_fetch = tokio::time::Instant::now();
    loop {
        let leader = shared.election.as_ref().is_none_or(|l| l.is_leader());
        shared.metrics.set_leader(leader);
        let wait = daemon.next_wake(next_fetch, leader);
        tokio::select! {
            _ = tokio::time::sleep_until(wait) => {}
            _ = shared.wake.notified() => {
                next_fetch = tokio::time::Instant::now();
                if shared.sync_all.swap(false, Ordering::SeqCst) {
                    daemon.all_due();
                }
            }
            Some(done) = done_rx.recv() => {
                daemon.finished(done).await;
                continue;
            }
            Some(joined) = daemon.tasks.join_next_with_id(), if !daemon.tasks.is_empty() => {
                daemon.joined(joined);
                continue;
            }
            _ = terminate.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
        if tokio::time::Instant::now() >= next_fetch {
            daemon.refresh().await;
            next_fetch = tokio::time::Instant::now() + args.poll;
            // Nodes join, pull and leave between syncs: with a cluster, every poll (and only the
            // poll: a start-up syncs every set, and each would repeat it) applies the pre-pull
            // DaemonSets and reads coverage; the status commits only when it changed.
            if daemon.cluster.is_ok() {
                daemon.pre_pull().await;
                daemon.publish().await;
            }
        }
        if leader {
            daemon.start_due(&done_tx);
        }
    }
    tracing::info!(running = daemon.running.len(), "stopping: no new syncs start");
    // Status commits while stopping must fit in the pod's grace period.
    daemon.git_timeout = STOPPING_GIT_TIMEOUT;
    stop_http.notify_one();
    let deadline = tokio::time::Instant::now() + args.shutdown_timeout;
    while !daemon.tasks.is_empty() {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => {
                tracing::warn!(running = daemon.running.len(), "syncs still running at the shutdown deadline are stopped; the next start converges");
                daemon.tasks.abort_all();
                break;
            }
            Some(done) = done_rx.recv() => daemon.finished(done).await,
            Some(joined) = daemon.tasks.join_next_with_id() => daemon.joined(joined),
        }
    }
    while let Ok(done) = done_rx.try_recv() {
        daemon.finished(done).await;
    }
    drop(daemon);
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    // The HTTP server has let go of its handle: give the Lease up so a standby takes over now.
    match Arc::into_inner(shared).map(|s| s.election) {
        Some(Some(election)) => election.stop().await,
        Some(None) => {}
        None => tracing::warn!("the Lease is left to expire (15 s): the HTTP server did not stop in time"),
    }
    tracing::info!("stopped");
    Ok(crate::commands::exit::OK)
}

/// How long one pre-pull pass (mirror lookups, cluster reads and writes) may take.
const PRE_PULL_TIMEOUT: Duration = Duration::from_secs(120);

struct Daemon<'a> {
    repo: Repo,
    shared: Arc<Shared>,
    args: &'a RunArgs,
    applied: Option<Applied>,
    /// The newest desired state, when it is invalid, and its tree.
    invalid: Option<(Diagnostics, String)>,
    passes: BTreeMap<String, SetPass>,
    /// When each MirrorSet runs next.
    due: BTreeMap<String, DateTime<Utc>>,
    /// Sets whose sync is running.
    running: BTreeSet<String>,
    /// The pass that copies missing images first is running; no set starts meanwhile.
    missing_running: bool,
    /// The pass that copies missing images first has not run yet for the current state.
    missing_first: bool,
    /// Sets that were running when a new desired state arrived: they run again once done.
    rerun: BTreeSet<String>,
    tasks: JoinSet<()>,
    /// What each task does.
    task_sets: std::collections::HashMap<tokio::task::Id, Job>,
    backups: backups::Backups,
    alerts: Vec<String>,
    /// Last successes read from the committed status at start-up, until a pass has run.
    seeded: BTreeMap<String, DateTime<Utc>>,
    /// How long a status commit may take.
    git_timeout: Duration,
    /// The cluster pre-pull works on, or why there is none.
    cluster: Result<crate::cluster::prepull::PrePullCluster, String>,
    /// The last pre-pull pass.
    pre_pull: crate::prepull::PrePullPass,
}

impl Daemon<'_> {
    /// Whether this replica applies (always, without a Lease).
    fn leads(&self) -> bool {
        self.shared.election.as_ref().is_none_or(|e| e.is_leader())
    }

    /// A sync task ended: forget it; one that panicked frees its set and counts as failed.
    fn joined(&mut self, joined: Result<(tokio::task::Id, ()), tokio::task::JoinError>) {
        let (id, failure) = match joined {
            Ok((id, ())) => (id, None),
            Err(e) => (e.id(), Some(e)),
        };
        let (Some(job), Some(e)) = (self.task_sets.remove(&id), failure) else {
            return;
        };
        let panicked = e.is_panic();
        if panicked {
            tracing::error!(?job, "a task stopped on an internal error; it runs again on its schedule");
        }
        match job {
            Job::Set(name) => {
                if panicked {
                    self.shared.metrics.record_run(&name, RunResult::Failure);
                }
                self.running.remove(&name);
            }
            Job::Backup(name) => self.backups.stopped(&name, &self.shared.metrics),
            Job::Missing => self.finished_missing_first(),
        }
    }

    fn next_wake(&self, next_fetch: tokio::time::Instant, leader: bool) -> tokio::time::Instant {
        let now = Utc::now();
        // Due times only matter when this replica can start something.
        let can_start = leader && !self.missing_running;
        let soonest = self
            .due
            .values()
            .min()
            .filter(|_| can_start)
            .copied()
            .into_iter()
            .chain(self.backups.next_due().filter(|_| leader))
            .min()
            .map(|t| (t - now).to_std().unwrap_or_default());
        let lease_tick = tokio::time::Instant::now() + Duration::from_secs(5);
        let mut wake = next_fetch.min(lease_tick);
        if let Some(d) = soonest {
            wake = wake.min(tokio::time::Instant::now() + d);
        }
        wake
    }

    /// Fetches the desired state; a new valid one is applied at once, an invalid one is
    /// reported and the last valid one kept.
    async fn refresh(&mut self) {
        let snapshot = match tokio::time::timeout(GIT_TIMEOUT, self.repo.fetch()).await {
            Ok(Ok(s)) => s,
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
        if self.invalid.as_ref().map(|(_, t)| t.as_str()) == Some(snapshot.tree.as_str()) {
            return;
        }
        if self.applied.as_ref().map(|a| a.tree.as_str()) == Some(snapshot.tree.as_str()) {
            if self.invalid.take().is_some() {
                // The invalid change was reverted: the state being applied is the newest again.
                tracing::info!(tree = %snapshot.tree, "the desired state is valid again");
                self.shared.metrics.set_desired_valid(true);
                self.publish().await;
            }
            return;
        }
        let Snapshot { tree, commit, root, loaded } = snapshot;
        match loaded.map_err(|d| (d, None)).and_then(|state| {
            match crate::commands::registry_for(&root, &state, self.args.pass.timeout, self.args.pass.retries) {
                Ok(registry) => Ok((state, registry)),
                Err(e) => Err((Diagnostics::default(), Some(e))),
            }
        }) {
            Ok((state, registry)) => {
                tracing::info!(tree = %tree, commit = commit.as_deref().unwrap_or("-"), sets = state.mirror_sets.len(), "applying a new desired state");
                self.shared.metrics.set_desired_valid(true);
                for name in state.mirror_sets.keys() {
                    self.shared.metrics.declare_set(name);
                }
                let now = Utc::now();
                self.due = state.mirror_sets.keys().map(|n| (n.clone(), now)).collect();
                for gone in self.passes.keys().chain(self.seeded.keys()).filter(|n| !state.mirror_sets.contains_key(*n))
                {
                    self.shared.metrics.forget_set(gone);
                }
                self.passes.retain(|name, _| state.mirror_sets.contains_key(name));
                self.seeded.retain(|name, _| state.mirror_sets.contains_key(name));
                // A set still syncing the previous state runs again once done, and what is
                // missing under the new state is copied first.
                self.rerun = self.running.clone();
                self.missing_first = true;
                self.backups.follow(&state, &self.shared.metrics);
                self.applied = Some(Applied { tree, state: Arc::new(state), registry: Arc::new(registry) });
                self.invalid = None;
            }
            Err((diagnostics, error)) => {
                let mut diagnostics = diagnostics;
                if let Some(e) = error {
                    diagnostics.push(crate::desired::Diagnostic::error("(desired state)", format!("{e:#}")));
                }
                tracing::error!(tree = %tree, problems = %diagnostics, "the new desired state is invalid; nothing of it is applied, the last valid one is kept");
                self.shared.metrics.set_desired_valid(false);
                self.invalid = Some((diagnostics, tree));
                if self.leads() {
                    self.publish().await;
                }
            }
        }
    }

    /// When the set last synced successfully, as far as this process or the committed status
    /// knows: a restart does not forget it, so freshness alerts stay true.
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
        let Some(index) = files.get(status::INDEX).and_then(|b| serde_yaml::from_slice::<status::Index>(b).ok()) else {
            return;
        };
        for (name, set) in index.mirror_sets {
            if let Some(at) = set.last_success.as_deref().and_then(|t| DateTime::parse_from_rfc3339(t).ok()) {
                let at = at.with_timezone(&Utc);
                self.shared.metrics.seed_last_success(&name, at);
                self.seeded.insert(name, at);
            }
        }
    }

    /// Every set runs at once (a trigger or webhook).
    fn all_due(&mut self) {
        let now = Utc::now();
        if let Some(applied) = &self.applied {
            self.due = applied.state.mirror_sets.keys().map(|n| (n.clone(), now)).collect();
        }
        self.backups.all_due();
    }

    /// Starts every set that is due, unless it is still running.
    fn start_due(&mut self, done: &mpsc::Sender<Done>) {
        let Some(applied) = &self.applied else {
            return;
        };
        if self.missing_first {
            if self.running.is_empty() && !self.missing_running {
                self.missing_first = false;
                self.missing_running = true;
                let (state, registry, done) = (applied.state.clone(), applied.registry.clone(), done.clone());
                let handle = self.tasks.spawn_local(async move {
                    let pass = reconcile::run_missing_first(&state, &*registry).await;
                    tracing::info!(
                        copied = pass.outcomes.as_ref().map_or(0, Vec::len),
                        "start-up: missing images copied"
                    );
                    let _ = done.send(Done::Missing).await;
                });
                self.task_sets.insert(handle.id(), Job::Missing);
            }
            return;
        }
        if self.missing_running {
            return;
        }
        let now = Utc::now();
        let due: Vec<String> = self.due.iter().filter(|(_, t)| **t <= now).map(|(n, _)| n.clone()).collect();
        for name in due {
            let Some(set) = applied.state.mirror_sets.get(&name) else {
                self.due.remove(&name);
                continue;
            };
            match set.schedule.next_after(&now) {
                Some(next) => self.due.insert(name.clone(), next),
                None => self.due.remove(&name),
            };
            if self.running.contains(&name) {
                tracing::warn!(set = %name, "skipped: the previous sync of this set is still running");
                self.shared.metrics.record_run(&name, RunResult::Skipped);
                continue;
            }
            self.running.insert(name.clone());
            let state = applied.state.only_mirror_set(&name);
            let registry = applied.registry.clone();
            let earlier: BTreeMap<String, DateTime<Utc>> =
                self.last_success(&name).map(|t| (name.clone(), t)).into_iter().collect();
            let done = done.clone();
            let set = name.clone();
            let handle = self.tasks.spawn_local(async move {
                let started = Utc::now();
                let pass = reconcile::run(&state, &*registry).await;
                let mut by_set = pass.by_set(started, Utc::now(), &earlier);
                if let Some(set_pass) = by_set.remove(&name) {
                    let _ = done.send(Done::Set(name, Box::new(set_pass))).await;
                }
            });
            self.task_sets.insert(handle.id(), Job::Set(set));
        }
        self.start_backups(done);
    }

    /// Starts every backup policy that is due; exports run beside syncs.
    fn start_backups(&mut self, done: &mpsc::Sender<Done>) {
        let Some(applied) = &self.applied else {
            return;
        };
        for name in self.backups.take_due(&applied.state, &self.shared.metrics) {
            let (state, registry, done) = (applied.state.clone(), applied.registry.clone(), done.clone());
            let (tree, signer, policy) = (applied.tree.clone(), self.backups.signer.clone(), name.clone());
            tracing::info!(policy = %name, "backup export starts");
            let handle = self.tasks.spawn_local(async move {
                let result = backups::export(state, registry, policy.clone(), tree, signer).await;
                let _ = done.send(Done::Backup(policy, result)).await;
            });
            self.task_sets.insert(handle.id(), Job::Backup(name));
        }
    }

    async fn finished(&mut self, done: Done) {
        match done {
            Done::Missing => self.finished_missing_first(),
            Done::Set(name, pass) => {
                self.running.remove(&name);
                if self.rerun.remove(&name) {
                    self.due.insert(name.clone(), Utc::now());
                }
                let result = if pass.succeeded() { "succeeded" } else { "failed" };
                tracing::info!(set = %name, result, changes = pass.outcomes.len(), "sync finished");
                self.shared.metrics.record_pass(&name, &pass);
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
        self.missing_running = false;
        let now = Utc::now();
        for t in self.due.values_mut() {
            *t = now;
        }
    }

    /// Brings the pre-pull DaemonSets in line with the mirror (only the leader changes
    /// anything) and reads node coverage, within a time limit.
    async fn pre_pull(&mut self) {
        let Some(applied) = &self.applied else { return };
        let cluster = self.cluster.as_ref().map_err(String::as_str);
        let pass = reconcile::pre_pull(&applied.state, &*applied.registry, cluster, self.leads());
        match tokio::time::timeout(PRE_PULL_TIMEOUT, pass).await {
            Ok(pass) => {
                for failure in &pass.failures {
                    tracing::error!(error = %failure, "pre-pull change failed; the next pass tries again");
                }
                self.shared.metrics.record_pre_pull(&pass);
                self.pre_pull = pass;
            }
            Err(_) => {
                tracing::error!(
                    seconds = PRE_PULL_TIMEOUT.as_secs(),
                    "pre-pull took too long; the next pass tries again"
                );
                self.pre_pull.not_observed = Some("the last pre-pull pass took too long".into());
                self.pre_pull.unknown = true;
            }
        }
    }

    /// Renders the status (for metrics always; committed when the repo publishes and this
    /// replica leads).
    async fn publish(&mut self) {
        let backups = match &self.applied {
            Some(a) => crate::backup::observe(&a.state, &self.backups.errors).await,
            None => BTreeMap::new(),
        };
        for (name, o) in &backups {
            self.shared.metrics.record_backup(name, o);
        }
        // Without a cluster, the pass only resolves the sets' images for the status; with one,
        // the poll runs it (see `run`).
        if self.cluster.is_err() {
            self.pre_pull().await;
        }
        let owned = status::Report {
            applied: self.applied.as_ref().map(|a| (a.state.clone(), a.tree.clone())),
            invalid: self.invalid.clone(),
            passes: self.passes.clone(),
            alerts: self.alerts.clone(),
            backups,
            pre_pull: self.pre_pull.clone(),
        };
        let now = Utc::now();
        if let Some(rendered) = owned.render_if_changed(&BTreeMap::new(), now, None) {
            self.shared.metrics.record_status(&rendered);
        }
        if !self.leads() {
            return;
        }
        let heartbeat = self.args.status.heartbeat.and_then(|h| chrono::Duration::from_std(h).ok());
        let publish = self
            .repo
            .publish(Box::new(move |previous| owned.render_if_changed(previous, now, heartbeat).map(|r| r.files)));
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

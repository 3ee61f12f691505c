//! Prometheus metrics, all named `lifeboat_*`: what the daemon's passes found and did, for
//! alerts and the DR wall screen. Labels come from names in the desired state and from
//! `match`es on closed sets, never from free text; no secret ever reaches a label.

use std::path::PathBuf;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::outcome::{OutcomeResult, SetPass, SetResult};
use crate::registry::Verdict;
use crate::status::Rendered;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SetLabel {
    mirror_set: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RunLabels {
    mirror_set: String,
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PolicyLabel {
    policy: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackupRunLabels {
    policy: String,
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HostLabel {
    host: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabel {
    version: &'static str,
}

type Seconds = Gauge<f64, AtomicU64>;

/// How a run of a set ended, as the `result` label says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunResult {
    Success,
    /// Done, but desired images need a person (see [`crate::outcome`]).
    Stalled,
    Failure,
    /// Not started: the previous run of the set was still going.
    Skipped,
}

impl RunResult {
    const ALL: [RunResult; 4] = [RunResult::Success, RunResult::Stalled, RunResult::Failure, RunResult::Skipped];

    fn label(self) -> &'static str {
        match self {
            RunResult::Success => "success",
            RunResult::Stalled => "stalled",
            RunResult::Failure => "failure",
            RunResult::Skipped => "skipped",
        }
    }

    /// The run a pass that ended so counts as.
    pub fn of(result: SetResult) -> RunResult {
        match result {
            SetResult::Succeeded | SetResult::NotRunYet => RunResult::Success,
            SetResult::Stalled => RunResult::Stalled,
            // A pass the daemon runs is applied, never pending; were it, it did not sync.
            SetResult::Pending | SetResult::Failed => RunResult::Failure,
        }
    }
}

pub struct Metrics {
    registry: Registry,
    last_success: Family<SetLabel, Seconds>,
    last_run: Family<SetLabel, Seconds>,
    runs: Family<RunLabels, Counter>,
    duration: Family<SetLabel, Histogram, fn() -> Histogram>,
    desired: Family<SetLabel, Gauge>,
    mirrored: Family<SetLabel, Gauge>,
    missing: Family<SetLabel, Gauge>,
    failed: Family<SetLabel, Gauge>,
    unknown: Family<SetLabel, Gauge>,
    drift: Family<SetLabel, Gauge>,
    bytes: Family<SetLabel, Counter>,
    blobs: Family<SetLabel, Counter>,
    signature_failures: Family<SetLabel, Counter>,
    registry_up: Family<HostLabel, Gauge>,
    desired_valid: Gauge,
    last_fetch: Seconds,
    status_commits: Counter,
    leader: Gauge,
    storage_used: Gauge,
    storage_capacity: Gauge,
    storage_path: Option<PathBuf>,
    backup_last_success: Family<PolicyLabel, Seconds>,
    backup_size: Family<PolicyLabel, Gauge>,
    backup_integrity: Family<PolicyLabel, Gauge>,
    backup_encrypted: Family<PolicyLabel, Gauge>,
    backup_archives: Family<PolicyLabel, Gauge>,
    backup_runs: Family<BackupRunLabels, Counter>,
    prepull_ratio: Family<PrePullLabel, Seconds>,
    prepull_nodes: Family<PrePullLabel, Gauge>,
    prepull_covered: Family<PrePullLabel, Gauge>,
    prepull_images: Family<PrePullLabel, Gauge>,
    gc_ok: Family<NodeLabel, Gauge>,
    gc_high: Family<NodeLabel, Gauge>,
    gc_low: Family<NodeLabel, Gauge>,
    gc_age: Family<NodeLabel, Gauge>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct PrePullLabel {
    pre_pull_set: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct NodeLabel {
    node: String,
}

fn duration_histogram() -> Histogram {
    Histogram::new([1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0])
}

/// Registers a copy of `metric` (metrics share their value between copies) and returns it.
fn registered<M: prometheus_client::registry::Metric + Clone>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    metric: M,
) -> M {
    registry.register(name, help, metric.clone());
    metric
}

impl Metrics {
    /// `storage_path`: a folder on the mirror's storage filesystem, when Lifeboat can see it.
    pub fn new(storage_path: Option<PathBuf>) -> Metrics {
        let r = &mut Registry::with_prefix("lifeboat");
        let info: Family<VersionLabel, Gauge> =
            registered(r, "build_info", "The running Lifeboat version", Family::default());
        info.get_or_create(&VersionLabel { version: env!("CARGO_PKG_VERSION") }).set(1);
        let storage = storage_path.is_some();
        let storage_gauge = |r: &mut Registry, name: &str, help: &str| {
            if storage { registered(r, name, help, Gauge::default()) } else { Gauge::default() }
        };
        Metrics {
            last_success: registered(
                r,
                "sync_last_success_timestamp_seconds",
                "End of the last successful sync of the MirrorSet (Unix time)",
                Family::default(),
            ),
            last_run: registered(
                r,
                "sync_last_run_timestamp_seconds",
                "End of the last sync of the MirrorSet, successful or not (Unix time)",
                Family::default(),
            ),
            runs: registered(
                r,
                "sync_runs",
                "Syncs of the MirrorSet by result (success, stalled, failure, skipped)",
                Family::default(),
            ),
            duration: registered(
                r,
                "sync_duration_seconds",
                "How long syncs of the MirrorSet took",
                Family::new_with_constructor(duration_histogram as fn() -> Histogram),
            ),
            desired: registered(r, "images_desired", "Tags the MirrorSet selects", Family::default()),
            mirrored: registered(r, "images_mirrored", "Tags of the MirrorSet the mirror holds", Family::default()),
            missing: registered(r, "images_missing", "Tags of the MirrorSet not in the mirror", Family::default()),
            failed: registered(
                r,
                "images_failed",
                "Copies of the MirrorSet (images, signatures, referrers) that failed in the last sync",
                Family::default(),
            ),
            unknown: registered(
                r,
                "images_unknown",
                "Tags of the MirrorSet whose upstream or mirror could not be looked at",
                Family::default(),
            ),
            drift: registered(r, "digest_drift", "Tags whose mirror digest differs from upstream's", Family::default()),
            bytes: registered(r, "copied_bytes", "Blob bytes copied into the mirror", Family::default()),
            blobs: registered(r, "copied_blobs", "Blobs copied into the mirror", Family::default()),
            signature_failures: registered(
                r,
                "signature_verification_failures",
                "Images kept out, or failing on the mirror, because their signatures do not meet the policy",
                Family::default(),
            ),
            registry_up: registered(
                r,
                "registry_up",
                "1 when the registry answered every lookup of the last sync",
                Family::default(),
            ),
            desired_valid: registered(
                r,
                "desired_state_valid",
                "1 when the newest desired state is valid",
                Gauge::default(),
            ),
            last_fetch: registered(
                r,
                "git_last_fetch_success_timestamp_seconds",
                "Last successful fetch of the desired-state repository (Unix time)",
                Seconds::default(),
            ),
            status_commits: registered(r, "status_commits", "Status commits pushed", Counter::default()),
            leader: registered(r, "leader", "1 when this replica holds the Lease and applies", Gauge::default()),
            storage_used: storage_gauge(
                r,
                "mirror_storage_used_bytes",
                "Bytes used on the mirror's storage filesystem",
            ),
            storage_capacity: storage_gauge(
                r,
                "mirror_storage_capacity_bytes",
                "Size of the mirror's storage filesystem",
            ),
            storage_path,
            backup_last_success: registered(
                r,
                "backup_last_success_timestamp_seconds",
                "Creation time of the policy's newest archive that passed verification (Unix time)",
                Family::default(),
            ),
            backup_size: registered(r, "backup_size_bytes", "Size of the policy's newest archive", Family::default()),
            backup_integrity: registered(
                r,
                "backup_integrity_ok",
                "1 when the policy's newest archive passed verification, 0 when it failed or is unchecked",
                Family::default(),
            ),
            backup_encrypted: registered(
                r,
                "backup_encrypted",
                "1 when the policy's newest archive is encrypted",
                Family::default(),
            ),
            backup_archives: registered(
                r,
                "backup_archives",
                "Archives of the policy in its destination",
                Family::default(),
            ),
            backup_runs: registered(
                r,
                "backup_runs",
                "Exports of the policy by result (success, failure, skipped)",
                Family::default(),
            ),
            prepull_ratio: registered(
                r,
                "prepull_coverage_ratio",
                "Nodes the PrePullSet selects that hold all its images, over the nodes it selects",
                Family::default(),
            ),
            prepull_nodes: registered(r, "prepull_nodes", "Nodes the PrePullSet selects", Family::default()),
            prepull_covered: registered(
                r,
                "prepull_nodes_covered",
                "Nodes the PrePullSet selects that hold all its images",
                Family::default(),
            ),
            prepull_images: registered(r, "prepull_images", "Images the PrePullSet pre-pulls", Family::default()),
            gc_ok: registered(
                r,
                "kubelet_image_gc_ok",
                "1 when the node's kubelet image GC settings are what its PrePullSets ask for, 0 when not (absent when unread)",
                Family::default(),
            ),
            gc_high: registered(
                r,
                "kubelet_image_gc_high_threshold_percent",
                "The node's kubelet imageGCHighThresholdPercent",
                Family::default(),
            ),
            gc_low: registered(
                r,
                "kubelet_image_gc_low_threshold_percent",
                "The node's kubelet imageGCLowThresholdPercent",
                Family::default(),
            ),
            gc_age: registered(
                r,
                "kubelet_image_minimum_gc_age_seconds",
                "The node's kubelet imageMinimumGCAge",
                Family::default(),
            ),
            registry: std::mem::take(r),
        }
    }

    /// Coverage per PrePullSet and kubelet GC settings per node, from the last pre-pull pass.
    /// Series of sets and nodes no longer seen are dropped.
    pub fn record_pre_pull(&self, pass: &crate::prepull::PrePullPass) {
        use crate::prepull::coverage::GcAudit;
        // While the cluster cannot be read, the last values stay: alerts on coverage must not
        // fall silent exactly when the API server is in trouble.
        if pass.daemon_sets.is_unknown() {
            return;
        }
        for family in [&self.prepull_nodes, &self.prepull_covered, &self.prepull_images] {
            family.clear();
        }
        self.prepull_ratio.clear();
        for family in [&self.gc_ok, &self.gc_high, &self.gc_low, &self.gc_age] {
            family.clear();
        }
        let mut nodes: std::collections::BTreeMap<&str, &GcAudit> = std::collections::BTreeMap::new();
        for (name, set) in &pass.sets {
            let label = PrePullLabel { pre_pull_set: name.clone() };
            if let Some(images) = set.images.present() {
                self.prepull_images.get_or_create(&label).set(images.len() as i64);
            }
            let Some(coverage) = set.coverage.present() else { continue };
            self.prepull_ratio.get_or_create(&label).set(coverage.ratio());
            self.prepull_nodes.get_or_create(&label).set(coverage.nodes.len() as i64);
            self.prepull_covered.get_or_create(&label).set(coverage.covered() as i64);
            // A node two sets cover fails when either set's targets are not met.
            for node in &coverage.nodes {
                let worst = nodes.entry(&node.node).or_insert(&node.kubelet_gc);
                if !matches!(worst, GcAudit::Fail { .. }) && !matches!(node.kubelet_gc, GcAudit::Unknown { .. }) {
                    *worst = &node.kubelet_gc;
                }
            }
        }
        for (node, audit) in nodes {
            let label = NodeLabel { node: node.to_string() };
            let (ok, settings) = match audit {
                GcAudit::Pass { settings } => (1, settings),
                GcAudit::Fail { settings, .. } => (0, settings),
                GcAudit::Unknown { .. } => continue,
            };
            self.gc_ok.get_or_create(&label).set(ok);
            for (family, value) in [
                (&self.gc_high, settings.high_threshold_percent),
                (&self.gc_low, settings.low_threshold_percent),
                (&self.gc_age, settings.minimum_age_seconds.map(|s| s as i64)),
            ] {
                if let Some(v) = value {
                    family.get_or_create(&label).set(v);
                }
            }
        }
    }

    /// What a policy's destination holds.
    pub fn record_backup(&self, name: &str, o: &crate::status::BackupObservation) {
        let policy = PolicyLabel { policy: name.to_string() };
        if o.unreadable.is_some() {
            return;
        }
        self.backup_archives.get_or_create(&policy).set(o.archives as i64);
        if let Some(a) = o.verified() {
            self.backup_last_success.get_or_create(&policy).set(a.created_at.timestamp_millis() as f64 / 1000.0);
        }
        if let Some(a) = &o.newest {
            self.backup_size.get_or_create(&policy).set(a.size as i64);
            self.backup_integrity
                .get_or_create(&policy)
                .set(i64::from(a.integrity == crate::readiness::Readiness::Pass));
            self.backup_encrypted.get_or_create(&policy).set(i64::from(a.encrypted));
        }
    }

    /// A finished (or skipped) export of a policy.
    pub fn record_backup_run(&self, name: &str, result: RunResult) {
        let labels = BackupRunLabels { policy: name.to_string(), result: result.label() };
        self.backup_runs.get_or_create(&labels).inc();
    }

    /// Drops the series of a policy that left the desired state.
    pub fn forget_backup(&self, name: &str) {
        let policy = PolicyLabel { policy: name.to_string() };
        for family in [&self.backup_size, &self.backup_integrity, &self.backup_encrypted, &self.backup_archives] {
            family.remove(&policy);
        }
        self.backup_last_success.remove(&policy);
        for result in RunResult::ALL {
            self.backup_runs.remove(&BackupRunLabels { policy: name.to_string(), result: result.label() });
        }
    }

    /// A finished sync of one set.
    pub fn record_pass(&self, name: &str, pass: &SetPass) {
        let set = SetLabel { mirror_set: name.to_string() };
        self.record_run(name, RunResult::of(pass.result()));
        let end = pass.finished.timestamp_millis() as f64 / 1000.0;
        self.last_run.get_or_create(&set).set(end);
        if let Some(t) = pass.last_success {
            self.last_success.get_or_create(&set).set(t.timestamp_millis() as f64 / 1000.0);
        }
        let took = (pass.finished - pass.started).num_milliseconds().max(0) as f64 / 1000.0;
        self.duration.get_or_create(&set).observe(took);
        let mut rejected = pass.plan.rejections() as u64;
        for o in pass.outcomes() {
            if let OutcomeResult::Done { report } = &o.result {
                self.bytes.get_or_create(&set).inc_by(report.bytes_copied);
                self.blobs.get_or_create(&set).inc_by(report.blobs_copied);
            }
            if let Some(Verdict::Rejected { .. }) = o.mirror_verification {
                rejected += 1;
            }
        }
        self.signature_failures.get_or_create(&set).inc_by(rejected);
    }

    /// Starts a set's run counters at zero, so the first failure is an increase alerts see.
    pub fn declare_set(&self, name: &str) {
        for result in RunResult::ALL {
            let _ = self.runs.get_or_create(&RunLabels { mirror_set: name.to_string(), result: result.label() });
        }
    }

    /// Drops the series of a set that left the desired state, so no alert fires for it.
    pub fn forget_set(&self, name: &str) {
        let set = SetLabel { mirror_set: name.to_string() };
        for result in RunResult::ALL {
            self.runs.remove(&RunLabels { mirror_set: name.to_string(), result: result.label() });
        }
        self.last_success.remove(&set);
        self.last_run.remove(&set);
        self.duration.remove(&set);
        for family in [&self.desired, &self.mirrored, &self.missing, &self.failed, &self.unknown, &self.drift] {
            family.remove(&set);
        }
        for family in [&self.bytes, &self.blobs, &self.signature_failures] {
            family.remove(&set);
        }
    }

    /// The last success of a set before this process started, from the committed status.
    pub fn seed_last_success(&self, name: &str, at: chrono::DateTime<chrono::Utc>) {
        self.last_success
            .get_or_create(&SetLabel { mirror_set: name.to_string() })
            .set(at.timestamp_millis() as f64 / 1000.0);
    }

    pub fn record_run(&self, name: &str, result: RunResult) {
        self.runs.get_or_create(&RunLabels { mirror_set: name.to_string(), result: result.label() }).inc();
    }

    /// The tag counts and registry health of a rendered status.
    pub fn record_status(&self, rendered: &Rendered) {
        for (name, s) in &rendered.sets {
            let set = SetLabel { mirror_set: name.clone() };
            let c = &s.summary;
            self.desired.get_or_create(&set).set(c.desired as i64);
            self.mirrored.get_or_create(&set).set(c.mirrored as i64);
            self.missing.get_or_create(&set).set(c.missing as i64);
            self.failed.get_or_create(&set).set(c.failed as i64);
            self.unknown.get_or_create(&set).set(c.unknown as i64);
            self.drift.get_or_create(&set).set(c.drift as i64);
        }
        for (host, health) in &rendered.registries {
            self.registry_up.get_or_create(&HostLabel { host: host.clone() }).set(i64::from(health.reachable));
        }
    }

    pub fn set_desired_valid(&self, valid: bool) {
        self.desired_valid.set(i64::from(valid));
    }

    pub fn fetched(&self, at: chrono::DateTime<chrono::Utc>) {
        self.last_fetch.set(at.timestamp_millis() as f64 / 1000.0);
    }

    pub fn status_committed(&self) {
        self.status_commits.inc();
    }

    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        if let Some(path) = &self.storage_path
            && let Ok(fs) = rustix::fs::statvfs(path)
        {
            let block = fs.f_frsize.max(1);
            self.storage_capacity.set((fs.f_blocks * block) as i64);
            self.storage_used.set((fs.f_blocks.saturating_sub(fs.f_bfree) * block) as i64);
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_is_named_lifeboat_and_documented() {
        let metrics = Metrics::new(Some(std::env::temp_dir()));
        metrics.record_run("base", RunResult::Skipped);
        let text = metrics.encode();
        for line in text.lines().filter(|l| l.starts_with("# HELP")) {
            let name = line.split_whitespace().nth(2).unwrap();
            assert!(name.starts_with("lifeboat_"), "{line}");
        }
        assert!(text.contains("lifeboat_sync_runs_total{mirror_set=\"base\",result=\"skipped\"} 1"), "{text}");
        assert!(text.contains("lifeboat_build_info{version="), "{text}");
        assert!(text.contains("lifeboat_mirror_storage_capacity_bytes "), "{text}");
        // The README documents every metric.
        let readme = include_str!("../README.md");
        for line in text.lines().filter(|l| l.starts_with("# TYPE")) {
            let name = line.split_whitespace().nth(2).unwrap();
            assert!(readme.contains(&format!("`{name}")), "README.md does not document {name}");
        }
    }
}

//! Prometheus metrics, all named `lifeboat_*`: what the daemon's passes found and did, for
//! alerts and the DR wall screen. Labels come from names in the desired state and from
//! `match`es on closed sets, never from free text; no secret ever reaches a label.
//!
//! One group per thing they are about: MirrorSet syncs ([`SyncMetrics`]), backups
//! ([`BackupMetrics`]), pre-pull ([`PrePullMetrics`]); the daemon's own (desired state valid,
//! last fetch, status commits, leadership, mirror storage) live here.

use std::path::PathBuf;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::outcome::SetResult;

mod backup;
mod prepull;
mod sync;

pub use backup::BackupMetrics;
pub use prepull::PrePullMetrics;
pub use sync::SyncMetrics;

pub(crate) type Seconds = Gauge<f64, AtomicU64>;

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

/// Every metric Lifeboat exports, by what it is about.
pub struct Metrics {
    registry: Registry,
    families: Vec<(String, String)>,
    pub sync: SyncMetrics,
    pub backups: BackupMetrics,
    pub pre_pull: PrePullMetrics,
    desired_valid: Gauge,
    last_fetch: Seconds,
    status_commits: Counter,
    leader: Gauge,
    storage_used: Gauge,
    storage_capacity: Gauge,
    storage_path: Option<PathBuf>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabel {
    version: &'static str,
}

/// The registry being filled, and the name and type of every family registered in it (the
/// exposition leaves out families that have no series yet).
pub(crate) struct Registering {
    registry: Registry,
    families: Vec<(String, String)>,
}

/// Registers a copy of `metric` (metrics share their value between copies) and returns it.
pub(crate) fn registered<M: prometheus_client::registry::Metric + Clone>(
    r: &mut Registering,
    name: &str,
    help: &str,
    metric: M,
) -> M {
    r.families.push((format!("lifeboat_{name}"), metric.metric_type().as_str().to_string()));
    r.registry.register(name, help, metric.clone());
    metric
}

impl Metrics {
    /// `storage_path`: a folder on the mirror's storage filesystem, when Lifeboat can see it.
    pub fn new(storage_path: Option<PathBuf>) -> Metrics {
        let r = &mut Registering { registry: Registry::with_prefix("lifeboat"), families: Vec::new() };
        let info: Family<VersionLabel, Gauge> =
            registered(r, "build_info", "The running Lifeboat version", Family::default());
        info.get_or_create(&VersionLabel { version: env!("CARGO_PKG_VERSION") }).set(1);
        let storage = storage_path.is_some();
        let storage_gauge = |r: &mut Registering, name: &str, help: &str| {
            if storage { registered(r, name, help, Gauge::default()) } else { Gauge::default() }
        };
        Metrics {
            sync: SyncMetrics::register(r),
            backups: BackupMetrics::register(r),
            pre_pull: PrePullMetrics::register(r),
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
            registry: std::mem::take(&mut r.registry),
            families: std::mem::take(&mut r.families),
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

    /// Every metric family registered, as `(name, type)`: the name as exported, before a
    /// counter's `_total` or a histogram's `_bucket`, and the OpenMetrics type (`counter`,
    /// `gauge`, `histogram`). Unlike [`Metrics::encode`], this includes families without series.
    pub fn families(&self) -> &[(String, String)] {
        &self.families
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
    fn every_metric_is_named_lifeboat() {
        let metrics = Metrics::new(Some(std::env::temp_dir()));
        metrics.sync.record_run("base", RunResult::Skipped);
        let text = metrics.encode();
        for line in text.lines().filter(|l| l.starts_with("# HELP")) {
            let name = line.split_whitespace().nth(2).unwrap();
            assert!(name.starts_with("lifeboat_"), "{line}");
        }
        assert!(text.contains("lifeboat_sync_runs_total{mirror_set=\"base\",result=\"skipped\"} 1"), "{text}");
        assert!(text.contains("lifeboat_build_info{version="), "{text}");
        assert!(text.contains("lifeboat_mirror_storage_capacity_bytes "), "{text}");
        // Families without series are listed too; tests/it/metric_names.rs checks them against
        // the README and the deployment files.
        assert!(metrics.families().iter().all(|(name, _)| name.starts_with("lifeboat_")));
        assert!(metrics.families().contains(&("lifeboat_sync_duration_seconds".into(), "histogram".into())));
    }
}

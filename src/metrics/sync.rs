//! The metrics of MirrorSet syncs: last success and run, runs by result, duration, tag counts,
//! drift, bytes and blobs copied, signature failures, and registry reachability.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;

use super::{Registering, RunResult, Seconds, registered};
use crate::outcome::{OutcomeResult, SetPass};
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
struct HostLabel {
    host: String,
}

fn duration_histogram() -> Histogram {
    Histogram::new([1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0])
}

/// Per MirrorSet, and per registry host.
pub struct SyncMetrics {
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
}

impl SyncMetrics {
    pub(super) fn register(r: &mut Registering) -> SyncMetrics {
        SyncMetrics {
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
}

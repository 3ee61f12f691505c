//! The metrics of BackupPolicies: the newest verified archive's time, size, integrity and
//! encryption, the archives in each destination, and exports by result.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use super::{Registering, RunResult, Seconds, registered};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PolicyLabel {
    policy: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackupRunLabels {
    policy: String,
    result: &'static str,
}

/// Per BackupPolicy.
pub struct BackupMetrics {
    backup_last_success: Family<PolicyLabel, Seconds>,
    backup_size: Family<PolicyLabel, Gauge>,
    backup_integrity: Family<PolicyLabel, Gauge>,
    backup_encrypted: Family<PolicyLabel, Gauge>,
    backup_archives: Family<PolicyLabel, Gauge>,
    backup_runs: Family<BackupRunLabels, Counter>,
}

impl BackupMetrics {
    pub(super) fn register(r: &mut Registering) -> BackupMetrics {
        BackupMetrics {
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
}

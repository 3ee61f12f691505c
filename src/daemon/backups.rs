//! The daemon's BackupPolicy schedule: each policy exports on its own cron, never twice at
//! once, and its last failure is kept for the status until an export succeeds.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::schedule::Schedule;
use crate::backup::job;
use crate::backup::sink::Identities;
use crate::desired::DesiredState;
use crate::metrics::{Metrics, RunResult};
use crate::reconcile::{self, Context};
use crate::registry::cosign::BlobSigner;

pub(super) struct Backups {
    schedule: Schedule,
    /// The last export's failure, per policy, until one succeeds.
    pub(super) errors: BTreeMap<String, String>,
    pub(super) signer: Option<Arc<BlobSigner>>,
}

impl Backups {
    pub(super) fn new(signer: Option<Arc<BlobSigner>>) -> Backups {
        Backups { schedule: Schedule::default(), errors: BTreeMap::new(), signer }
    }

    /// A new desired state: each policy's next run from its schedule (a restart does not
    /// export at once; the schedule decides).
    pub(super) fn follow(&mut self, state: &DesiredState, metrics: &Metrics) {
        let now = Utc::now();
        for gone in self.schedule.names().filter(|n| !state.backup_policies.contains_key(*n)) {
            metrics.backups.forget_backup(gone);
        }
        self.schedule.follow(state.backup_policies.iter().map(|(name, p)| (name.clone(), p.schedule.next_after(&now))));
        self.errors.retain(|name, _| state.backup_policies.contains_key(name));
    }

    pub(super) fn next_due(&self) -> Option<DateTime<Utc>> {
        self.schedule.next_due()
    }

    /// Every policy exports now (an explicit trigger).
    pub(super) fn all_due(&mut self) {
        self.schedule.all_due(Utc::now());
    }

    /// The policies due now, moved to their next time; a policy still exporting is skipped.
    pub(super) fn take_due(&mut self, state: &DesiredState, metrics: &Metrics) -> Vec<String> {
        let now = Utc::now();
        let due = self.schedule.take_due(now, |name| state.backup_policies.get(name)?.schedule.next_after(&now));
        for name in &due.skipped {
            tracing::warn!(policy = %name, "backup skipped: the previous export of this policy is still running");
            metrics.backups.record_backup_run(name, RunResult::Skipped);
        }
        due.start
    }

    pub(super) fn finished(&mut self, name: &str, result: Result<(), String>, metrics: &Metrics) {
        self.schedule.finished(name);
        match result {
            Ok(()) => {
                self.errors.remove(name);
                metrics.backups.record_backup_run(name, RunResult::Success);
            }
            Err(why) => {
                self.errors.insert(name.to_string(), why);
                metrics.backups.record_backup_run(name, RunResult::Failure);
            }
        }
    }

    /// A task ended without reporting (it panicked).
    pub(super) fn stopped(&mut self, name: &str, metrics: &Metrics) {
        if self.schedule.is_running(name) {
            self.finished(name, Err("the export stopped on an internal error".into()), metrics);
        }
    }
}

/// One export, as the daemon runs it: no identity, so an encrypted archive is checked by its
/// stored bytes.
pub(super) async fn export(ctx: &Context, name: &str, signer: Option<Arc<BlobSigner>>) -> Result<(), String> {
    let Some(spec) = ctx.state.backup_policies.get(name).cloned() else {
        return Err(format!("BackupPolicy {name} left the desired state"));
    };
    let job = job::Job {
        policy: name.to_string(),
        destination: PathBuf::from(&spec.destination),
        spec,
        base: None,
        signer,
        identities: Arc::new(Identities::none()),
        desired_revision: Some(format!("tree {}", ctx.tree)),
    };
    match reconcile::export_backup(ctx, job, |_| {}).await {
        Ok(exported) if exported.problems.is_empty() && exported.missing.is_empty() => {
            tracing::info!(policy = %name, archive = %exported.path.display(), size = exported.record.size, "backup written and verified");
            Ok(())
        }
        Ok(exported) if !exported.problems.is_empty() => {
            Err(format!("{} failed verification: {}", exported.record.archive, exported.problems.join("; ")))
        }
        Ok(exported) => Err(format!(
            "{} lacks {} image(s) the mirror does not hold: {}",
            exported.record.archive,
            exported.missing.len(),
            exported.missing.iter().map(|m| m.reference.as_str()).collect::<Vec<_>>().join(", ")
        )),
        Err(e) => {
            tracing::error!(policy = %name, error = format!("{e:#}"), "backup failed");
            Err(format!("{e:#}"))
        }
    }
}

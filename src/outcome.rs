//! What a pass did: the outcome of each change, one MirrorSet's pass, and the one rule that
//! says how a pass of a set ended. Exit codes, the status report and the metrics all read that
//! rule ([`SetPass::result`]) and nothing else, so they never disagree.
//!
//! The rule, in words:
//! - **failed**: something could not be looked at (upstream or mirror unreachable, a timeout,
//!   refused credentials), or a change failed. Transient: the next pass tries again.
//! - **stalled**: everything was looked at (and, unless a dry run, every change made), but
//!   some desired images cannot be mirrored until a person acts: their signatures fail the set's policy (the policy
//!   working: the mirror keeps its last verified content), or neither upstream nor the mirror
//!   has them. A stalled pass still counts as a sync for freshness (the mirror is as current as
//!   the policy allows), but not as a success.
//! - **pending**: a dry run found changes to make, and nothing else needs a person.
//! - **succeeded**: everything looked at, every change made, every desired image mirrored.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::observe::ImageObservation;
use crate::plan::{Change, Plan};
use crate::registry::{CopyReport, Verdict};

/// The result of one change.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Outcome {
    pub change: Change,
    #[serde(flatten)]
    pub result: OutcomeResult,
    /// For a copy under a signature policy: the check against the mirror after copying.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mirror_verification: Option<Verdict>,
}

impl Outcome {
    pub fn new(change: &Change, result: OutcomeResult) -> Outcome {
        Outcome { change: change.clone(), result, mirror_verification: None }
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "outcome", rename_all = "camelCase")]
pub enum OutcomeResult {
    Done {
        #[serde(flatten)]
        report: CopyReport,
    },
    Failed {
        error: String,
    },
}

/// Totals over a pass, for the summary line and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Totals {
    pub done: usize,
    pub failed: usize,
    pub blobs_copied: u64,
    pub blobs_mounted: u64,
    pub blobs_present: u64,
    pub bytes_copied: u64,
}

pub fn totals(outcomes: &[Outcome]) -> Totals {
    let mut t = Totals::default();
    for o in outcomes {
        match &o.result {
            OutcomeResult::Done { report } => {
                t.done += 1;
                t.blobs_copied += report.blobs_copied;
                t.blobs_mounted += report.blobs_mounted;
                t.blobs_present += report.blobs_present;
                t.bytes_copied += report.bytes_copied;
            }
            OutcomeResult::Failed { .. } => t.failed += 1,
        }
    }
    t
}

/// How a pass of a set ended, worst last: the worst of several is their maximum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum SetResult {
    /// No pass of this set has run since Lifeboat started with this desired state.
    NotRunYet,
    Succeeded,
    /// A dry run found changes to make.
    Pending,
    /// Done, but desired images cannot be mirrored until a person acts (see the module doc).
    Stalled,
    /// Something failed or could not be looked at.
    Failed,
}

impl SetResult {
    pub fn label(self) -> &'static str {
        match self {
            SetResult::NotRunYet => "not run yet",
            SetResult::Succeeded => "succeeded",
            SetResult::Pending => "pending",
            SetResult::Stalled => "stalled",
            SetResult::Failed => "failed",
        }
    }
}

/// The last pass of one MirrorSet.
#[derive(Debug, Clone)]
pub struct SetPass {
    pub started: DateTime<Utc>,
    pub finished: DateTime<Utc>,
    pub observations: Vec<ImageObservation>,
    /// The plan of this set alone.
    pub plan: Plan,
    /// What applying the plan did; `None` for a dry run.
    pub applied: Option<Vec<Outcome>>,
    /// The end of the last pass of this set that synced, this one or an earlier one.
    pub last_success: Option<DateTime<Utc>>,
}

impl SetPass {
    /// The outcomes of the changes (none for a dry run).
    pub fn outcomes(&self) -> &[Outcome] {
        self.applied.as_deref().unwrap_or_default()
    }

    /// How the pass ended: the one rule (see the module doc).
    pub fn result(&self) -> SetResult {
        let failed = self.outcomes().iter().any(|o| matches!(o.result, OutcomeResult::Failed { .. }));
        if self.plan.has_unknowns() || failed {
            SetResult::Failed
        } else if self.plan.stalled() > 0 {
            SetResult::Stalled
        } else if self.applied.is_none() && !self.plan.changes.is_empty() {
            SetResult::Pending
        } else {
            SetResult::Succeeded
        }
    }

    /// Whether this pass counts as a sync for freshness: applied, and succeeded or stalled.
    pub fn synced(&self) -> bool {
        self.applied.is_some() && matches!(self.result(), SetResult::Succeeded | SetResult::Stalled)
    }
}

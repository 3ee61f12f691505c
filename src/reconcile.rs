//! The order of a pass, and the only place that knows it: observe → plan → apply.

use std::collections::BTreeMap;

use tracing::Instrument;

use crate::apply;
use crate::desired::DesiredState;
use crate::observe::{self, ActualState};
use crate::plan::render::Outcome;
use crate::plan::{self, Plan};
use crate::registry::Registry;
use crate::status::SetPass;

/// Everything one pass found and did.
#[derive(Debug, Clone)]
pub struct Pass {
    pub actual: ActualState,
    pub plan: Plan,
    /// `None` for a dry run.
    pub outcomes: Option<Vec<Outcome>>,
}

impl Pass {
    /// The pass, set by set, as the status report records it.
    pub fn by_set(
        &self,
        started: chrono::DateTime<chrono::Utc>,
        finished: chrono::DateTime<chrono::Utc>,
        last_success: &BTreeMap<String, chrono::DateTime<chrono::Utc>>,
    ) -> BTreeMap<String, SetPass> {
        self.actual
            .mirror_sets
            .iter()
            .map(|(name, observations)| {
                let outcomes: Vec<Outcome> =
                    self.outcomes.iter().flatten().filter(|o| o.change.mirror_set == *name).cloned().collect();
                let mut pass = SetPass {
                    started,
                    finished,
                    observations: observations.clone(),
                    plan: self.plan.of_set(name),
                    outcomes,
                    last_success: last_success.get(name).copied(),
                };
                if self.outcomes.is_some() && pass.succeeded() {
                    pass.last_success = Some(finished);
                }
                (name.clone(), pass)
            })
            .collect()
    }
}

/// Observes and plans, changing nothing.
pub async fn dry_run<R: Registry>(desired: &DesiredState, registry: &R) -> Pass {
    let actual = observe::observe(desired, registry).instrument(tracing::info_span!("observe")).await;
    let plan = plan::plan(desired, &actual);
    tracing::info!(changes = plan.changes.len(), in_sync = plan.in_sync, "planned");
    Pass { actual, plan, outcomes: None }
}

/// The first pass after start-up: only the copies of tags the mirror does not hold at all,
/// before anything else (moved tags, signatures, prunes), so an empty or damaged mirror
/// becomes usable as early as possible. A full pass follows.
pub async fn run_missing_first<R: Registry>(desired: &DesiredState, registry: &R) -> Pass {
    let mut pass = dry_run(desired, registry).await;
    pass.plan = pass.plan.only_missing(&pass.actual);
    pass.outcomes = Some(apply::apply(&pass.plan, registry).instrument(tracing::info_span!("apply")).await);
    pass
}

/// One full pass: observe, plan, apply.
pub async fn run<R: Registry>(desired: &DesiredState, registry: &R) -> Pass {
    let mut pass = dry_run(desired, registry).await;
    pass.outcomes = Some(apply::apply(&pass.plan, registry).instrument(tracing::info_span!("apply")).await);
    pass
}

#[cfg(test)]
mod tests;

//! The order of a pass, and the only place that knows it: observe → plan → apply.

use tracing::Instrument;

use crate::apply;
use crate::desired::DesiredState;
use crate::observe::{self, ActualState};
use crate::plan::render::Outcome;
use crate::plan::{self, Plan};
use crate::registry::Registry;

/// Everything one pass found and did.
#[derive(Debug, Clone)]
pub struct Pass {
    pub actual: ActualState,
    pub plan: Plan,
    /// `None` for a dry run.
    pub outcomes: Option<Vec<Outcome>>,
}

/// Observes and plans, changing nothing.
pub async fn dry_run<R: Registry>(desired: &DesiredState, registry: &R) -> Pass {
    let actual = observe::observe(desired, registry).instrument(tracing::info_span!("observe")).await;
    let plan = plan::plan(desired, &actual);
    tracing::info!(changes = plan.changes.len(), in_sync = plan.in_sync, "planned");
    Pass { actual, plan, outcomes: None }
}

/// One full pass: observe, plan, apply.
pub async fn run<R: Registry>(desired: &DesiredState, registry: &R) -> Pass {
    let mut pass = dry_run(desired, registry).await;
    pass.outcomes = Some(apply::apply(&pass.plan, registry).instrument(tracing::info_span!("apply")).await);
    pass
}

#[cfg(test)]
mod tests;

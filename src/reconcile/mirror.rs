//! The mirror stage of a pass: observe every MirrorSet, plan (pure), apply.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use tracing::Instrument;

use crate::apply;
use crate::desired::DesiredState;
use crate::observe::{self, ActualState};
use crate::outcome::{Outcome, SetPass};
use crate::plan::{self, Plan};
use crate::registry::Registry;

/// What the mirror stage found and did.
#[derive(Debug, Clone)]
pub struct MirrorPass {
    pub actual: ActualState,
    pub plan: Plan,
    /// `None` for a dry run.
    pub outcomes: Option<Vec<Outcome>>,
}

impl MirrorPass {
    /// The pass, set by set, as the status report records it.
    pub fn by_set(
        &self,
        started: DateTime<Utc>,
        finished: DateTime<Utc>,
        last_success: &BTreeMap<String, DateTime<Utc>>,
    ) -> BTreeMap<String, SetPass> {
        self.actual
            .mirror_sets
            .iter()
            .map(|(name, observations)| {
                let applied = self
                    .outcomes
                    .as_ref()
                    .map(|all| all.iter().filter(|o| o.change.mirror_set == *name).cloned().collect());
                let mut pass = SetPass {
                    started,
                    finished,
                    observations: observations.clone(),
                    plan: self.plan.of_set(name),
                    applied,
                    last_success: last_success.get(name).copied(),
                };
                if pass.synced() {
                    pass.last_success = Some(finished);
                }
                (name.clone(), pass)
            })
            .collect()
    }
}

/// Observes and plans, changing nothing.
pub async fn dry_run<R: Registry>(desired: &DesiredState, registry: &R) -> MirrorPass {
    let actual = observe::observe(desired, registry).instrument(tracing::info_span!("observe")).await;
    let plan = plan::plan(desired, &actual);
    tracing::info!(changes = plan.changes.len(), in_sync = plan.in_sync, "planned");
    MirrorPass { actual, plan, outcomes: None }
}

/// Observes, plans and applies.
pub async fn run<R: Registry>(desired: &DesiredState, registry: &R) -> MirrorPass {
    let mut pass = dry_run(desired, registry).await;
    pass.outcomes = Some(apply::mirror(&pass.plan, registry).instrument(tracing::info_span!("apply")).await);
    pass
}

/// The first pass after start-up: only the copies of tags the mirror does not hold at all,
/// before anything else (moved tags, signatures, prunes), so an empty or damaged mirror
/// becomes usable as early as possible. A full pass follows.
pub async fn missing_first<R: Registry>(desired: &DesiredState, registry: &R) -> MirrorPass {
    let registry = &registry.for_pass();
    let mut pass = dry_run(desired, registry).await;
    pass.plan = pass.plan.only_missing(&pass.actual);
    pass.outcomes = Some(apply::mirror(&pass.plan, registry).instrument(tracing::info_span!("apply")).await);
    pass
}

/// One MirrorSet's pass, as the daemon runs it on the set's schedule: `earlier` is the end of
/// its last sync before this one, if any.
pub async fn set<R: Registry>(
    desired: &DesiredState,
    registry: &R,
    name: &str,
    earlier: Option<DateTime<Utc>>,
) -> Option<SetPass> {
    let started = Utc::now();
    let registry = &registry.for_pass();
    let state = desired.only_mirror_set(name);
    let pass = run(&state, registry).instrument(tracing::info_span!("sync", set = %name)).await;
    let earlier: BTreeMap<String, DateTime<Utc>> = earlier.map(|t| (name.to_string(), t)).into_iter().collect();
    pass.by_set(started, Utc::now(), &earlier).remove(name)
}

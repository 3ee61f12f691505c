//! The nodes stage of a pass: each PrePullSet observed (its images against the mirror, the
//! cluster's DaemonSets, nodes and what ran on them), planned (pure), applied, and reported.

use tracing::Instrument;

use crate::apply;
use crate::cluster::prepull::PrePullCluster;
use crate::cluster::render::RenderSettings;
use crate::desired::DesiredState;
use crate::observe;
use crate::prepull::observation::PrePullObservation;
use crate::prepull::plan::{self, PrePullPlan, Wanted};
use crate::prepull::report::{self, PrePullPass};
use crate::registry::Registry;

/// Observes and plans, changing nothing.
pub async fn dry_run<R: Registry>(
    desired: &DesiredState,
    registry: &R,
    cluster: Result<&PrePullCluster, &str>,
    settings: &RenderSettings,
) -> PrePullPass {
    let (observation, wanted, plan) = observe_and_plan(desired, registry, cluster, settings).await;
    report::report(desired, &observation, &wanted, &plan, None)
}

/// Observes, plans and applies; without a cluster, the same as [`dry_run`].
pub async fn run<R: Registry>(
    desired: &DesiredState,
    registry: &R,
    cluster: Result<&PrePullCluster, &str>,
    settings: &RenderSettings,
) -> PrePullPass {
    let (observation, wanted, plan) = observe_and_plan(desired, registry, cluster, settings).await;
    let failures = match cluster {
        Ok(cluster) => Some(apply::pre_pull(&plan, cluster).instrument(tracing::info_span!("apply")).await),
        Err(_) => None,
    };
    report::report(desired, &observation, &wanted, &plan, failures)
}

async fn observe_and_plan<R: Registry>(
    desired: &DesiredState,
    registry: &R,
    cluster: Result<&PrePullCluster, &str>,
    settings: &RenderSettings,
) -> (PrePullObservation, Vec<Wanted>, PrePullPlan) {
    let observation =
        observe::prepull::pre_pull(desired, registry, cluster).instrument(tracing::info_span!("observe")).await;
    let wanted = wanted(&observation, settings);
    let plan = match &observation.cluster {
        Ok(c) => match c.facts.present() {
            Some(facts) => plan::plan(&wanted, &facts.existing),
            None => PrePullPlan::default(),
        },
        Err(_) => PrePullPlan::default(),
    };
    tracing::info!(changes = plan.changes.len(), "pre-pull planned");
    (observation, wanted, plan)
}

/// What each set renders to, and where: pure.
fn wanted(observation: &PrePullObservation, settings: &RenderSettings) -> Vec<Wanted> {
    observation
        .sets
        .values()
        .map(|set| {
            let (rendered, hash) = crate::cluster::prepull::desired(&set.workload, settings);
            let meta = &rendered.daemon_set.metadata;
            Wanted {
                workload: set.workload.clone(),
                not_in_mirror: set.not_in_mirror.clone(),
                namespace: meta.namespace.clone().unwrap_or_default(),
                name: meta.name.clone().unwrap_or_default(),
                hash,
            }
        })
        .collect()
}

//! The order of a pass, and the only place that knows it: observe → plan → apply, the mirror
//! first and then the nodes' pre-pull sets, which pull what the mirror now holds.

use std::collections::BTreeMap;

use tracing::Instrument;

use crate::apply;
use crate::cluster::prepull::PrePullCluster;
use crate::cluster::render::RenderSettings;
use crate::desired::DesiredState;
use crate::desired::PrePullMethod;
use crate::observe::{self, ActualState};
use crate::plan::render::Outcome;
use crate::plan::{self, Plan};
use crate::prepull::plan::{ChangeKind, SetReport, Wanted};
use crate::prepull::{self, PrePullPass};
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

/// The pre-pull part of a pass, after the mirror's: resolves each PrePullSet against the
/// mirror, compares the DaemonSets it renders with the cluster's, applies the difference when
/// `apply` says so, and reads node coverage. Without a cluster it still resolves the images
/// and says why the cluster was not looked at.
pub async fn pre_pull<R: Registry>(
    desired: &DesiredState,
    registry: &R,
    cluster: Result<&PrePullCluster, &str>,
    apply: bool,
) -> PrePullPass {
    let mut pass = PrePullPass::default();
    let mut wanted = Vec::new();
    for (name, set) in &desired.pre_pull_sets {
        let resolution = prepull::resolve::resolve(desired, name, set, registry).await;
        let settings = cluster.ok().map(|c| c.settings.clone()).unwrap_or_else(default_render_settings);
        let (rendered, hash) = crate::cluster::prepull::desired(&resolution.workload, &settings);
        let meta = &rendered.daemon_set.metadata;
        wanted.push(Wanted {
            namespace: meta.namespace.clone().unwrap_or_default(),
            name: meta.name.clone().unwrap_or_default(),
            hash,
            resolution,
        });
    }
    for w in &wanted {
        let r = &w.resolution;
        pass.sets.insert(
            r.workload.set.clone(),
            SetReport {
                method: r.workload.method,
                daemon_set: format!("{}/{}", w.namespace, w.name),
                images: r.workload.images.iter().map(|i| i.reference.clone()).collect(),
                not_in_mirror: r.not_in_mirror.clone(),
                unknown: r.unknown.clone(),
                coverage: None,
            },
        );
    }
    let cluster = match cluster {
        Ok(c) => {
            pass.cluster = Some(c.url.clone());
            c
        }
        Err(why) => {
            pass.not_observed = Some(why.to_string());
            return pass;
        }
    };
    let cri_wanted = wanted.iter().any(|w| w.resolution.workload.method == PrePullMethod::Cri);
    let existing = match cluster.existing(cri_wanted).await {
        Ok(e) => e,
        Err(e) => {
            pass.not_observed = Some(e.to_string());
            pass.unknown = true;
            return pass;
        }
    };
    let (changes, held) = prepull::plan::changes(&wanted, &existing);
    for (set, reason) in held {
        if let Some(report) = pass.sets.get_mut(&set) {
            report.unknown = Some(reason);
        }
    }
    pass.changes = changes;
    if apply {
        // Sets without a change are applied again too: server-side apply of the same objects
        // writes nothing, and puts back what was deleted or edited by hand.
        for w in &wanted {
            let set = &w.resolution.workload.set;
            let quiet = !pass.changes.iter().any(|c| c.pre_pull_set == *set)
                && pass.sets.get(set).is_some_and(|r| r.unknown.is_none());
            if quiet && let Err(e) = cluster.apply(&w.resolution.workload).await {
                tracing::warn!(set = %set, error = %e, "pre-pull objects could not be applied again");
                pass.failures.push(e.to_string());
            }
        }
        for change in &pass.changes {
            let result = match change.kind {
                ChangeKind::Create | ChangeKind::Update => {
                    let w = wanted.iter().find(|w| w.resolution.workload.set == change.pre_pull_set);
                    match w {
                        Some(w) => cluster.apply(&w.resolution.workload).await,
                        None => Ok(()),
                    }
                }
                ChangeKind::Delete => {
                    let e = existing.iter().find(|e| e.name == change.name && e.namespace == change.namespace);
                    match e {
                        Some(e) => cluster.delete(e).await,
                        None => Ok(()),
                    }
                }
            };
            if let Err(e) = result {
                tracing::warn!(set = %change.pre_pull_set, error = %e, "pre-pull change failed");
                pass.failures.push(e.to_string());
            }
        }
    }
    let mut nodes = match cluster.nodes().await {
        Ok(n) => n,
        Err(e) => {
            pass.not_observed = Some(e.to_string());
            pass.unknown = true;
            return pass;
        }
    };
    // Kubelet sets read their nodes' GC settings through the API server; cri agents report them.
    let configz: std::collections::BTreeSet<String> = nodes
        .iter()
        .filter(|n| {
            wanted.iter().any(|w| {
                w.resolution.workload.method == PrePullMethod::Kubelet
                    && prepull::coverage::selects(&w.resolution.workload, n)
            })
        })
        .map(|n| n.name.clone())
        .collect();
    cluster.read_kubelet_gc(&mut nodes, &configz).await;
    for w in &wanted {
        let workload = &w.resolution.workload;
        let Some(set) = desired.pre_pull_sets.get(&workload.set) else { continue };
        let observed = match workload.method {
            PrePullMethod::Kubelet => cluster.pods(workload).await.map(|p| (p, Vec::new())),
            PrePullMethod::Cri => cluster.inventories(workload).await.map(|i| (Vec::new(), i)),
        };
        let report = pass.sets.get_mut(&workload.set).expect("every wanted set has a report");
        match observed {
            Ok((pods, inventories)) => {
                report.coverage =
                    Some(prepull::coverage::coverage(workload, &set.kubelet_gc, &nodes, &pods, &inventories));
            }
            Err(e) => {
                report.unknown.get_or_insert_with(|| e.to_string());
            }
        }
    }
    pass
}

/// Where pre-pull objects go when no cluster says otherwise (plan without a cluster).
pub fn default_render_settings() -> RenderSettings {
    RenderSettings {
        namespace: "lifeboat".into(),
        agent_namespace: "lifeboat-node-agent".into(),
        lifeboat_image: format!("ghcr.io/lifeboat-dev/lifeboat:{}", env!("CARGO_PKG_VERSION")),
    }
}

#[cfg(test)]
#[path = "reconcile/prepull_tests.rs"]
mod prepull_tests;
#[cfg(test)]
mod tests;

//! Carries out a pre-pull plan: each step in order (server-side applies, then deletions); a
//! failure is recorded and the rest go on.

use crate::cluster::prepull::PrePullCluster;
use crate::prepull::plan::{PrePullPlan, Step};

/// Applies every step of `plan`; returns what failed, each with why.
pub async fn pre_pull(plan: &PrePullPlan, cluster: &PrePullCluster) -> Vec<String> {
    let mut failures = Vec::new();
    for step in &plan.steps {
        let (set, result) = match step {
            Step::Apply(workload) => (&workload.set, cluster.apply(workload).await),
            Step::Delete(existing) => (&existing.set, cluster.delete(existing).await),
        };
        match result {
            Ok(()) => {
                let changed = plan.changes.iter().any(|c| c.pre_pull_set == *set);
                if changed {
                    tracing::info!(set = %set, "pre-pull objects applied");
                } else {
                    tracing::debug!(set = %set, "pre-pull objects applied again, unchanged");
                }
            }
            Err(e) => {
                tracing::warn!(set = %set, error = %e, "pre-pull change failed");
                failures.push(e.to_string());
            }
        }
    }
    failures
}

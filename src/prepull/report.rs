//! What a pre-pull pass says about each set, for people (`plan`, `apply`), the status report
//! and the metrics: its images, what the mirror lacks, the plan's changes and what applying
//! them did, and node coverage. Built from the observation and the plan; pure.

use std::collections::BTreeMap;

use serde::Serialize;

use super::coverage::{self, GcAudit, SetCoverage};
use super::observation::{PrePullObservation, Unresolved};
use super::plan::{Change, ChangeKind, PrePullPlan, Wanted};
use crate::desired::{DesiredState, PrePullMethod};
use crate::observed::Observed;
use crate::outcome::SetResult;

/// One set's part of a pass.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SetReport {
    pub method: PrePullMethod,
    /// `namespace/name` of its DaemonSet.
    pub daemon_set: String,
    /// The pinned references it pulls, or why the mirror could not be read.
    pub images: Observed<Vec<String>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_in_mirror: Vec<Unresolved>,
    /// Why the plan left its DaemonSet as it is, when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held: Option<String>,
    /// Node coverage; Unknown when the cluster could not be read, Absent when no cluster is used.
    pub coverage: Observed<SetCoverage>,
}

/// Everything a pre-pull pass planned, did and saw.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PrePullPass {
    /// The API server the pass used, when it used one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// Why no cluster is used, when none is (a choice, not a failure to look).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_used: Option<String>,
    /// How many DaemonSets Lifeboat made in the cluster: Unknown when the API server could not
    /// be read, Absent when no cluster is used.
    pub daemon_sets: Observed<usize>,
    pub changes: Vec<Change>,
    /// Whether the changes were applied (`false` for a dry run).
    pub applied: bool,
    /// Changes that failed, with why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<String>,
    pub sets: BTreeMap<String, SetReport>,
}

impl Default for PrePullPass {
    /// No pass has run yet.
    fn default() -> Self {
        PrePullPass {
            cluster: None,
            not_used: Some("no pre-pull pass has run yet".into()),
            daemon_sets: Observed::Absent,
            changes: Vec::new(),
            applied: false,
            failures: Vec::new(),
            sets: BTreeMap::new(),
        }
    }
}

impl PrePullPass {
    /// How the pass ended, by the rule every pass follows ([`crate::outcome`]): failed when
    /// anything could not be looked at, was left alone for that, or failed to apply.
    pub fn result(&self) -> SetResult {
        let unknown = self.daemon_sets.is_unknown()
            || self.sets.values().any(|s| s.images.is_unknown() || s.coverage.is_unknown() || s.held.is_some());
        if unknown || !self.failures.is_empty() {
            SetResult::Failed
        } else if !self.applied && !self.changes.is_empty() {
            SetResult::Pending
        } else {
            SetResult::Succeeded
        }
    }

    /// Whether there is anything to say: sets, or DaemonSets to delete.
    pub fn is_empty(&self) -> bool {
        self.sets.is_empty() && self.changes.is_empty()
    }
}

/// The report of a pass: `failures` is `None` for a dry run, else what applying the plan left.
pub fn report(
    state: &DesiredState,
    observation: &PrePullObservation,
    wanted: &[Wanted],
    plan: &PrePullPlan,
    failures: Option<Vec<String>>,
) -> PrePullPass {
    let (cluster, not_used, facts) = match &observation.cluster {
        Ok(c) => (Some(c.url.clone()), None, Some(&c.facts)),
        Err(why) => (None, Some(why.clone()), None),
    };
    let daemon_sets = match facts {
        Some(Observed::Present(f)) => Observed::Present(f.existing.len()),
        Some(Observed::Unknown(why)) => Observed::Unknown(why.clone()),
        Some(Observed::Absent) | None => Observed::Absent,
    };
    let mut sets = BTreeMap::new();
    for (name, set) in &observation.sets {
        let Some(w) = wanted.iter().find(|w| w.workload.set == *name) else { continue };
        let images = match &set.not_in_mirror {
            Observed::Unknown(why) => Observed::Unknown(why.clone()),
            _ => Observed::Present(set.workload.images.iter().map(|i| i.reference.clone()).collect()),
        };
        let coverage = match facts {
            None | Some(Observed::Absent) => Observed::Absent,
            Some(Observed::Unknown(why)) => Observed::Unknown(format!("the cluster could not be read: {why}")),
            Some(Observed::Present(f)) => match (f.runs.get(name), state.pre_pull_sets.get(name)) {
                (Some(Observed::Present(runs)), Some(desired)) if !set.not_in_mirror.is_unknown() => Observed::Present(
                    coverage::coverage(&set.workload, &desired.kubelet_gc, &f.nodes, &runs.pods, &runs.inventories),
                ),
                (Some(Observed::Unknown(why)), _) => Observed::Unknown(why.clone()),
                _ => Observed::Unknown("node coverage was not read".into()),
            },
        };
        sets.insert(
            name.clone(),
            SetReport {
                method: set.workload.method,
                daemon_set: format!("{}/{}", w.namespace, w.name),
                images,
                not_in_mirror: set.not_in_mirror.present().cloned().unwrap_or_default(),
                held: plan.held.get(name).cloned(),
                coverage,
            },
        );
    }
    PrePullPass {
        cluster,
        not_used,
        daemon_sets,
        changes: plan.changes.clone(),
        applied: failures.is_some(),
        failures: failures.unwrap_or_default(),
        sets,
    }
}

/// The pass for people: what changes, then each set's coverage and what needs attention.
pub fn human(pass: &PrePullPass) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let n = pass.changes.len();
    let on = pass.cluster.as_deref().map(|c| format!(" on {c}")).unwrap_or_default();
    let _ = write!(
        out,
        "Pre-pull{on}: {}",
        if n == 0 { "no change".to_string() } else { format!("{n} change{}", if n == 1 { "" } else { "s" }) }
    );
    if let Some(why) = pass.not_used.as_deref().or(pass.daemon_sets.unknown()) {
        let _ = write!(out, "; the cluster was not observed: {why}");
    }
    out.push('\n');
    for c in &pass.changes {
        let (sign, verb) = match c.kind {
            ChangeKind::Create => ('+', "create"),
            ChangeKind::Update => ('~', "update"),
            ChangeKind::Delete => ('-', "delete"),
        };
        let _ = writeln!(
            out,
            "  {sign} {verb} DaemonSet {}/{} (PrePullSet/{})\n      {}",
            c.namespace, c.name, c.pre_pull_set, c.why
        );
    }
    for failure in &pass.failures {
        let _ = writeln!(out, "  ✗ {failure}");
    }
    for (name, set) in &pass.sets {
        let images = set.images.present().map_or(0, Vec::len);
        let _ = write!(out, "  PrePullSet/{name}: {images} image{}", if images == 1 { "" } else { "s" });
        match &set.coverage {
            Observed::Present(c) => {
                let _ = writeln!(out, ", {} of {} nodes hold them all", c.covered(), c.nodes.len());
            }
            _ => out.push('\n'),
        }
        for why in [set.images.unknown(), set.held.as_deref(), set.coverage.unknown()].into_iter().flatten() {
            let _ = writeln!(out, "    ? {why}");
        }
        for u in &set.not_in_mirror {
            let _ = writeln!(out, "    ! {}: {}", u.reference, u.reason);
        }
        for node in set.coverage.present().into_iter().flat_map(|c| &c.nodes) {
            if let Some(first) = node.missing.first() {
                let more = node.missing.len() - 1;
                let _ = writeln!(
                    out,
                    "    ! node {}: {} missing{}: {} ({})",
                    node.node,
                    node.missing.len(),
                    if more > 0 { ", first" } else { "" },
                    first.reference,
                    first.reason
                );
            }
            if let GcAudit::Fail { problems, .. } = &node.kubelet_gc {
                let _ = writeln!(out, "    ! node {}: kubelet image GC: {}", node.node, problems.join("; "));
            }
        }
        for e in set.coverage.present().into_iter().flat_map(|c| &c.excluded) {
            let _ = writeln!(out, "    = node {} not covered: {}", e.node, e.reason);
        }
    }
    out
}

//! `status/PrePullSet/<name>.yaml` and the DR report's pre-pull and kubelet GC lines.

use std::collections::BTreeMap;

use serde::Serialize;

use super::check::{Check, Readiness};
use super::model::{API_VERSION, Metadata};
use crate::desired::PrePullSet;
use crate::observed::Observed;
use crate::prepull::PrePullPass;
use crate::prepull::coverage::{Excluded, GcAudit, NodeCoverage};
use crate::prepull::observation::Unresolved;
use crate::prepull::report::SetReport;

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PrePullSetStatus {
    pub api_version: String,
    pub kind: String,
    pub metadata: Metadata,
    pub source_file: String,
    pub desired_tree: String,
    /// PASS: every selected node holds every image; FAIL: some node misses some, or an image
    /// is not in the mirror; UNKNOWN: the cluster or the mirror could not be read.
    pub result: Readiness,
    pub reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub daemon_set: Option<String>,
    /// The pinned mirror references the set's nodes pull.
    pub images: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_in_mirror: Vec<Unresolved>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nodes: Option<NodeCounts>,
    /// Per selected node: images present, those missing with why, kubelet GC settings.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub coverage: Vec<NodeCoverage>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub excluded: Vec<Excluded>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeCounts {
    pub selected: usize,
    pub covered: usize,
    /// Covered over selected, as a percentage with one decimal.
    pub coverage_percent: String,
}

/// The verdict for one set, and why.
fn verdict(pass: &PrePullPass, report: Option<&SetReport>) -> (Readiness, String) {
    if let Some(why) = &pass.not_used {
        return (Readiness::Unknown, format!("the cluster was not observed: {why}"));
    }
    let Some(report) = report else { return (Readiness::Unknown, "not looked at by this run".into()) };
    if let Some(why) = report.images.unknown().or(report.held.as_deref()) {
        return (Readiness::Unknown, why.to_string());
    }
    let coverage = match &report.coverage {
        Observed::Present(c) => c,
        Observed::Unknown(why) => return (Readiness::Unknown, why.clone()),
        Observed::Absent => return (Readiness::Unknown, "node coverage was not read".into()),
    };
    if !report.not_in_mirror.is_empty() {
        return (
            Readiness::Fail,
            format!("{} of its images are not in the mirror, so no node can pull them", report.not_in_mirror.len()),
        );
    }
    if coverage.nodes.is_empty() {
        return (Readiness::Fail, "no node matches its node selector and tolerations".into());
    }
    let uncovered: Vec<&NodeCoverage> = coverage.nodes.iter().filter(|n| !n.covered()).collect();
    match uncovered.first() {
        None => (
            Readiness::Pass,
            format!("all {} selected nodes hold all {} images", coverage.nodes.len(), coverage.images),
        ),
        Some(first) => (
            Readiness::Fail,
            format!(
                "{} of {} nodes miss images; {} misses {} ({})",
                uncovered.len(),
                coverage.nodes.len(),
                first.node,
                first.missing.len(),
                first.missing.first().map_or("", |m| m.reason.as_str())
            ),
        ),
    }
}

/// The DR report's line "Pre-pull runs on every node": every selected node of every
/// PrePullSet holds all its images.
pub(super) fn check(sets: Option<&BTreeMap<String, PrePullSet>>, pass: &PrePullPass) -> Check {
    const NAME: &str = "Pre-pull runs on every node";
    let Some(sets) = sets else {
        return Check::new(NAME, Readiness::Unknown, "no valid desired state");
    };
    if sets.is_empty() {
        return Check::new(NAME, Readiness::Fail, "no PrePullSet is declared");
    }
    Check::worst(
        NAME,
        sets.keys().map(|name| {
            let (result, why) = verdict(pass, pass.sets.get(name));
            (result, format!("{name}: {why}"))
        }),
    )
}

/// The status document of one set.
pub fn document(name: &str, source_file: &str, tree: &str, pass: &PrePullPass) -> PrePullSetStatus {
    let report = pass.sets.get(name);
    let (result, reason) = verdict(pass, report);
    let coverage = report.and_then(|r| r.coverage.present());
    PrePullSetStatus {
        api_version: API_VERSION.into(),
        kind: "PrePullSetStatus".into(),
        metadata: Metadata { name: name.into() },
        source_file: source_file.into(),
        desired_tree: tree.into(),
        result,
        reason,
        method: report.and_then(|r| serde_json::to_value(r.method).ok()?.as_str().map(str::to_string)),
        daemon_set: report.map(|r| r.daemon_set.clone()),
        images: report.and_then(|r| r.images.present().cloned()).unwrap_or_default(),
        not_in_mirror: report.map(|r| r.not_in_mirror.to_vec()).unwrap_or_default(),
        nodes: coverage.map(|c| NodeCounts {
            selected: c.nodes.len(),
            covered: c.covered(),
            coverage_percent: format!("{:.1}", c.ratio() * 100.0),
        }),
        coverage: coverage.map(|c| c.nodes.to_vec()).unwrap_or_default(),
        excluded: coverage.map(|c| c.excluded.to_vec()).unwrap_or_default(),
    }
}

/// The DR report's kubelet GC line: every node of every set, once.
pub(super) fn gc_check(declared: usize, pass: &PrePullPass) -> Check {
    let (result, evidence) = gc_verdict(pass, declared);
    Check::new("Kubelet image GC at 85 % / 75 % / 48 h", result, evidence)
}

fn gc_verdict(pass: &PrePullPass, declared: usize) -> (Readiness, String) {
    if declared == 0 {
        return (Readiness::Unknown, "no PrePullSet is declared, so no node is checked".into());
    }
    if let Some(why) = pass.not_used.as_deref().or(pass.daemon_sets.unknown()) {
        return (Readiness::Unknown, format!("the cluster was not observed: {why}"));
    }
    let mut nodes: BTreeMap<&str, &GcAudit> = BTreeMap::new();
    for node in pass.sets.values().filter_map(|s| s.coverage.present()).flat_map(|c| &c.nodes) {
        let entry = nodes.entry(&node.node).or_insert(&node.kubelet_gc);
        if matches!(entry, GcAudit::Unknown { .. }) {
            *entry = &node.kubelet_gc;
        }
    }
    if nodes.is_empty() {
        return (Readiness::Unknown, "no node was checked".into());
    }
    let failing: Vec<String> = nodes
        .iter()
        .filter_map(|(n, a)| match a {
            GcAudit::Fail { problems, .. } => Some(format!("{n}: {}", problems.join("; "))),
            _ => None,
        })
        .collect();
    if !failing.is_empty() {
        return (
            Readiness::Fail,
            format!("{} of {} nodes differ: {}", failing.len(), nodes.len(), failing.join(" / ")),
        );
    }
    let unknown: Vec<(&str, &str)> = nodes
        .iter()
        .filter_map(|(n, a)| match a {
            GcAudit::Unknown { reason } => Some((*n, reason.as_str())),
            _ => None,
        })
        .collect();
    match unknown.first() {
        Some((node, reason)) => (
            Readiness::Unknown,
            format!("{} of {} nodes could not be read; {node}: {reason}", unknown.len(), nodes.len()),
        ),
        None => (Readiness::Pass, format!("all {} nodes as the DR plan asks", nodes.len())),
    }
}

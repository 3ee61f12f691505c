//! `status/PrePullSet/<name>.yaml` and the DR report's pre-pull and kubelet GC lines.

use std::collections::BTreeMap;

use serde::Serialize;

use super::model::{API_VERSION, Metadata};
use super::readme::Result;
use crate::prepull::PrePullPass;
use crate::prepull::coverage::{Excluded, GcAudit, NodeCoverage};
use crate::prepull::plan::SetReport;
use crate::prepull::resolve::Unresolved;

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
    pub result: String,
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
pub(super) fn verdict(pass: &PrePullPass, report: Option<&SetReport>) -> (Result, String) {
    if let Some(why) = &pass.not_observed {
        return (Result::Unknown, format!("the cluster was not observed: {why}"));
    }
    let Some(report) = report else { return (Result::Unknown, "not looked at by this run".into()) };
    if let Some(why) = &report.unknown {
        return (Result::Unknown, why.clone());
    }
    let Some(coverage) = &report.coverage else { return (Result::Unknown, "node coverage was not read".into()) };
    if !report.not_in_mirror.is_empty() {
        return (
            Result::Fail,
            format!("{} of its images are not in the mirror, so no node can pull them", report.not_in_mirror.len()),
        );
    }
    if coverage.nodes.is_empty() {
        return (Result::Fail, "no node matches its node selector and tolerations".into());
    }
    let uncovered: Vec<&NodeCoverage> = coverage.nodes.iter().filter(|n| !n.covered()).collect();
    match uncovered.first() {
        None => {
            (Result::Pass, format!("all {} selected nodes hold all {} images", coverage.nodes.len(), coverage.images))
        }
        Some(first) => (
            Result::Fail,
            format!(
                "{} of {} nodes miss images; {} misses {} ({})",
                uncovered.len(),
                coverage.nodes.len(),
                first.node,
                first.missing.len(),
                first.missing[0].reason
            ),
        ),
    }
}

/// The status document of one set.
pub fn document(name: &str, source_file: &str, tree: &str, pass: &PrePullPass) -> PrePullSetStatus {
    let report = pass.sets.get(name);
    let (result, reason) = verdict(pass, report);
    PrePullSetStatus {
        api_version: API_VERSION.into(),
        kind: "PrePullSetStatus".into(),
        metadata: Metadata { name: name.into() },
        source_file: source_file.into(),
        desired_tree: tree.into(),
        result: result.label().into(),
        reason,
        method: report.and_then(|r| serde_json::to_value(r.method).ok()?.as_str().map(str::to_string)),
        daemon_set: report.map(|r| r.daemon_set.clone()),
        images: report.map(|r| r.images.clone()).unwrap_or_default(),
        not_in_mirror: report.map(|r| r.not_in_mirror.to_vec()).unwrap_or_default(),
        nodes: report.and_then(|r| r.coverage.as_ref()).map(|c| NodeCounts {
            selected: c.nodes.len(),
            covered: c.covered(),
            coverage_percent: format!("{:.1}", c.ratio() * 100.0),
        }),
        coverage: report.and_then(|r| r.coverage.as_ref()).map(|c| c.nodes.to_vec()).unwrap_or_default(),
        excluded: report.and_then(|r| r.coverage.as_ref()).map(|c| c.excluded.to_vec()).unwrap_or_default(),
    }
}

/// The DR report's kubelet GC line: every node of every set, once.
pub(super) fn gc_verdict(pass: &PrePullPass, declared: usize) -> (Result, String) {
    if declared == 0 {
        return (Result::Unknown, "no PrePullSet is declared, so no node is checked".into());
    }
    if let Some(why) = &pass.not_observed {
        return (Result::Unknown, format!("the cluster was not observed: {why}"));
    }
    let mut nodes: BTreeMap<&str, &GcAudit> = BTreeMap::new();
    for node in pass.sets.values().filter_map(|s| s.coverage.as_ref()).flat_map(|c| &c.nodes) {
        let entry = nodes.entry(&node.node).or_insert(&node.kubelet_gc);
        if matches!(entry, GcAudit::Unknown { .. }) {
            *entry = &node.kubelet_gc;
        }
    }
    if nodes.is_empty() {
        return (Result::Unknown, "no node was checked".into());
    }
    let failing: Vec<String> = nodes
        .iter()
        .filter_map(|(n, a)| match a {
            GcAudit::Fail { problems, .. } => Some(format!("{n}: {}", problems.join("; "))),
            _ => None,
        })
        .collect();
    if !failing.is_empty() {
        return (Result::Fail, format!("{} of {} nodes differ: {}", failing.len(), nodes.len(), failing.join(" / ")));
    }
    let unknown: Vec<(&str, &str)> = nodes
        .iter()
        .filter_map(|(n, a)| match a {
            GcAudit::Unknown { reason } => Some((*n, reason.as_str())),
            _ => None,
        })
        .collect();
    match unknown.first() {
        Some((node, reason)) => {
            (Result::Unknown, format!("{} of {} nodes could not be read; {node}: {reason}", unknown.len(), nodes.len()))
        }
        None => (Result::Pass, format!("all {} nodes as the DR plan asks", nodes.len())),
    }
}

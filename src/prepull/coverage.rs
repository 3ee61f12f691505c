//! Coverage: which nodes a set selects, and which of its images each of them holds.
//!
//! Kubelet's `Node.status.images` lists at most 50 images, so it cannot prove anything about a
//! set of hundreds. Coverage comes instead from what ran: the pre-pull pods' init container
//! statuses (`imageID` names the digest the runtime started) for method `kubelet`, and the node
//! agent's inventory for method `cri`. Nodes are the ones that exist now and match the set's
//! node selector: a node that joins shows up uncovered until its pod has run, and a node that
//! is gone drops out.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::{GcSettings, ImageState, Inventory, Workload};
use crate::desired::{KubeletGcTarget, PrePullMethod, Toleration};

/// A node as the API server describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeFacts {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
    pub ready: bool,
    /// The kubelet's image GC settings, or why they could not be read; `None` when nobody asked.
    pub gc: Option<Result<GcSettings, String>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taint {
    pub key: String,
    pub value: Option<String>,
    /// `NoSchedule`, `PreferNoSchedule` or `NoExecute`.
    pub effect: String,
}

/// A pre-pull pod and what its containers did.
#[derive(Debug, Clone, PartialEq)]
pub struct PodFacts {
    pub node: Option<String>,
    pub containers: Vec<ContainerFacts>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ContainerFacts {
    /// The image as the pod spec names it.
    pub image: String,
    /// The status's `imageID`: `repo@sha256:...` (containerd, CRI-O) or `docker-pullable://...`.
    pub image_id: Option<String>,
    /// Started or finished successfully: the image is on the node.
    pub ran: bool,
    /// Why it waits, with the kubelet's message: `ImagePullBackOff: ...`.
    pub waiting: Option<String>,
}

/// How far one set has got.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SetCoverage {
    pub images: usize,
    /// Every node the set selects, by name.
    pub nodes: Vec<NodeCoverage>,
    /// Nodes its node selector matches but whose taints keep the pods off, with the taint.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub excluded: Vec<Excluded>,
}

impl SetCoverage {
    pub fn covered(&self) -> usize {
        self.nodes.iter().filter(|n| n.covered()).count()
    }

    /// Covered nodes over selected nodes; 0 when the set selects no node (which the status
    /// reports as a failure too).
    pub fn ratio(&self) -> f64 {
        if self.nodes.is_empty() { 0.0 } else { self.covered() as f64 / self.nodes.len() as f64 }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Excluded {
    pub node: String,
    pub reason: String,
}

/// One node of a set.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeCoverage {
    pub node: String,
    pub ready: bool,
    pub present: usize,
    /// Images not (yet) on the node, each with why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<MissingImage>,
    #[serde(rename = "kubeletGC")]
    pub kubelet_gc: GcAudit,
}

impl NodeCoverage {
    pub fn covered(&self) -> bool {
        self.missing.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MissingImage {
    pub reference: String,
    pub reason: String,
}

/// A node's kubelet image GC settings against what the set asks for.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "result", rename_all = "camelCase", rename_all_fields = "camelCase")]
pub enum GcAudit {
    Pass { settings: GcSettings },
    Fail { settings: GcSettings, problems: Vec<String> },
    Unknown { reason: String },
}

impl GcAudit {
    pub fn check(settings: &GcSettings, target: &KubeletGcTarget) -> GcAudit {
        let mut problems = Vec::new();
        let want = |field: &str, have: Option<i64>, want: u8, problems: &mut Vec<String>| match have {
            Some(v) if v == i64::from(want) => {}
            Some(v) => problems.push(format!("{field} is {v}, the DR plan asks for {want}")),
            None => problems.push(format!("{field} is not reported")),
        };
        want(
            "imageGCHighThresholdPercent",
            settings.high_threshold_percent,
            target.high_threshold_percent,
            &mut problems,
        );
        want("imageGCLowThresholdPercent", settings.low_threshold_percent, target.low_threshold_percent, &mut problems);
        let min = target.minimum_age.duration().as_secs();
        match settings.minimum_age_seconds {
            Some(age) if age >= min => {}
            Some(age) => problems.push(format!(
                "imageMinimumGCAge is {}, less than the {} the DR plan asks for",
                humantime::format_duration(std::time::Duration::from_secs(age)),
                target.minimum_age
            )),
            None => problems.push("imageMinimumGCAge is not reported".into()),
        }
        if problems.is_empty() {
            GcAudit::Pass { settings: settings.clone() }
        } else {
            GcAudit::Fail { settings: settings.clone(), problems }
        }
    }

    fn of(node: &NodeFacts, target: &KubeletGcTarget) -> GcAudit {
        match &node.gc {
            Some(Ok(settings)) => GcAudit::check(settings, target),
            Some(Err(reason)) => GcAudit::Unknown { reason: reason.clone() },
            None => GcAudit::Unknown { reason: "not read".into() },
        }
    }
}

/// Taints the DaemonSet controller tolerates on every DaemonSet pod by itself.
const DAEMONSET_TOLERATES: [&str; 6] = [
    "node.kubernetes.io/not-ready",
    "node.kubernetes.io/unreachable",
    "node.kubernetes.io/disk-pressure",
    "node.kubernetes.io/memory-pressure",
    "node.kubernetes.io/pid-pressure",
    "node.kubernetes.io/unschedulable",
];

fn tolerates(tolerations: &[Toleration], taint: &Taint) -> bool {
    use crate::desired::raw::{TaintEffect, TolerationOperator};
    if taint.effect == "PreferNoSchedule" || DAEMONSET_TOLERATES.contains(&taint.key.as_str()) {
        return true;
    }
    tolerations.iter().any(|t| {
        let effect_matches = match t.effect {
            None => true,
            Some(TaintEffect::NoSchedule) => taint.effect == "NoSchedule",
            Some(TaintEffect::PreferNoSchedule) => taint.effect == "PreferNoSchedule",
            Some(TaintEffect::NoExecute) => taint.effect == "NoExecute",
        };
        let key_matches = t.key.as_deref().is_none_or(|k| k == taint.key);
        let value_matches = match t.operator {
            Some(TolerationOperator::Exists) => true,
            _ => t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
        };
        effect_matches && key_matches && value_matches
    })
}

/// Whether the set's node selector matches the node (its taints aside).
pub fn selects(workload: &Workload, node: &NodeFacts) -> bool {
    workload.node_selector.iter().all(|(k, v)| node.labels.get(k) == Some(v))
}

/// The nodes a workload's pods run on, and those its selector matches but taints, or an
/// operating system other than Linux, keep out.
fn select<'a>(workload: &Workload, nodes: &'a [NodeFacts]) -> (Vec<&'a NodeFacts>, Vec<Excluded>) {
    let mut selected = Vec::new();
    let mut excluded = Vec::new();
    for node in nodes {
        if !selects(workload, node) {
            continue;
        }
        // Kubelet labels every node with its OS; the pods only go where it is linux.
        if node.labels.get("kubernetes.io/os").map(String::as_str) != Some("linux") {
            excluded.push(Excluded {
                node: node.name.clone(),
                reason: "not labelled kubernetes.io/os=linux, so no pre-pull pod runs there".into(),
            });
            continue;
        }
        let blocking: Vec<String> = node
            .taints
            .iter()
            .filter(|t| !tolerates(&workload.tolerations, t))
            .map(|t| match &t.value {
                Some(v) => format!("{}={v}:{}", t.key, t.effect),
                None => format!("{}:{}", t.key, t.effect),
            })
            .collect();
        if blocking.is_empty() {
            selected.push(node);
        } else {
            excluded.push(Excluded {
                node: node.name.clone(),
                reason: format!(
                    "the node selector matches, but the set does not tolerate the taint {}; add a toleration to cover it",
                    blocking.join(", ")
                ),
            });
        }
    }
    (selected, excluded)
}

/// The digest an `imageID` names: `...@sha256:<hex>`, or a bare `sha256:<hex>`.
fn digest_of(image_id: &str) -> Option<&str> {
    let digest = image_id.rsplit_once('@').map_or(image_id, |(_, d)| d);
    digest.starts_with("sha256:").then_some(digest)
}

/// Coverage of a `kubelet` set from its pods.
pub fn from_pods(workload: &Workload, target: &KubeletGcTarget, nodes: &[NodeFacts], pods: &[PodFacts]) -> SetCoverage {
    let (selected, excluded) = select(workload, nodes);
    let nodes = selected
        .into_iter()
        .map(|node| {
            let here: Vec<&PodFacts> = pods.iter().filter(|p| p.node.as_deref() == Some(&node.name)).collect();
            let containers: Vec<&ContainerFacts> = here.iter().flat_map(|p| &p.containers).collect();
            let digests: BTreeSet<&str> =
                containers.iter().filter(|c| c.ran).filter_map(|c| c.image_id.as_deref().and_then(digest_of)).collect();
            let ran_pinned: BTreeSet<&str> = containers.iter().filter(|c| c.ran).map(|c| c.image.as_str()).collect();
            let stuck = containers.iter().find_map(|c| c.waiting.as_ref().map(|w| (c, w)));
            let mut present = 0;
            let mut missing = Vec::new();
            for image in &workload.images {
                // The runtime may report the config digest instead of the pulled one; a
                // container pinned to the digest that ran proves the image is there either way.
                if digests.contains(image.digest.as_str()) || ran_pinned.contains(image.reference.as_str()) {
                    present += 1;
                    continue;
                }
                let reason = match containers.iter().find(|c| c.image == image.reference) {
                    _ if here.is_empty() => "no pre-pull pod runs on this node yet".to_string(),
                    Some(c) if c.waiting.is_some() => c.waiting.clone().unwrap_or_default(),
                    Some(_) => match stuck {
                        Some((c, why)) => format!("not tried yet: the pod is held up by {} ({why})", c.image),
                        None => "not pulled yet".to_string(),
                    },
                    None => "the pod on this node does not pull it yet (its DaemonSet is being updated)".to_string(),
                };
                missing.push(MissingImage { reference: image.reference.clone(), reason });
            }
            NodeCoverage {
                node: node.name.clone(),
                ready: node.ready,
                present,
                missing,
                kubelet_gc: GcAudit::of(node, target),
            }
        })
        .collect();
    SetCoverage { images: workload.images.len(), nodes, excluded }
}

/// Coverage of a `cri` set from its agents' inventories. A node's kubelet GC settings come
/// from its agent (which reads the kubelet's config file) when the node facts have none.
pub fn from_inventories(
    workload: &Workload,
    target: &KubeletGcTarget,
    nodes: &[NodeFacts],
    inventories: &[Inventory],
) -> SetCoverage {
    let (selected, excluded) = select(workload, nodes);
    let nodes = selected
        .into_iter()
        .map(|node| {
            let inventory = inventories.iter().filter(|i| i.node == node.name).max_by_key(|i| i.observed_at);
            let states: BTreeMap<&str, &ImageState> = inventory
                .map(|i| i.images.iter().map(|im| (im.reference.as_str(), &im.state)).collect())
                .unwrap_or_default();
            let mut present = 0;
            let mut missing = Vec::new();
            for image in &workload.images {
                let reason = match (inventory, states.get(image.reference.as_str())) {
                    (_, Some(ImageState::Present | ImageState::Pulled)) => {
                        present += 1;
                        continue;
                    }
                    (_, Some(ImageState::Missing { reason })) => reason.clone(),
                    (None, _) => "the node agent has not reported from this node yet".to_string(),
                    (Some(_), None) => {
                        "not in the node agent's last report (the agent has not read the new list yet)".to_string()
                    }
                };
                missing.push(MissingImage { reference: image.reference.clone(), reason });
            }
            let kubelet_gc = match (&node.gc, inventory) {
                (Some(_), _) => GcAudit::of(node, target),
                (None, Some(Inventory { kubelet_gc: Some(settings), .. })) => GcAudit::check(settings, target),
                (None, Some(Inventory { kubelet_gc_error: Some(e), .. })) => GcAudit::Unknown { reason: e.clone() },
                (None, _) => GcAudit::Unknown { reason: "the node agent has not reported it".into() },
            };
            NodeCoverage { node: node.name.clone(), ready: node.ready, present, missing, kubelet_gc }
        })
        .collect();
    SetCoverage { images: workload.images.len(), nodes, excluded }
}

/// Coverage by the set's method.
pub fn coverage(
    workload: &Workload,
    target: &KubeletGcTarget,
    nodes: &[NodeFacts],
    pods: &[PodFacts],
    inventories: &[Inventory],
) -> SetCoverage {
    match workload.method {
        PrePullMethod::Kubelet => from_pods(workload, target, nodes, pods),
        PrePullMethod::Cri => from_inventories(workload, target, nodes, inventories),
    }
}

#[cfg(test)]
mod tests;

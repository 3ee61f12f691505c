//! What the observe step hands the pre-pull plan: each set's images as the mirror holds them,
//! and the cluster as the API server describes it. Plain facts, no I/O.

use std::collections::BTreeMap;

use serde::Serialize;

use super::coverage::{NodeFacts, PodFacts};
use super::{Existing, Inventory, Workload};
use crate::observed::Observed;

/// Everything a pre-pull pass looked at.
#[derive(Debug, Clone)]
pub struct PrePullObservation {
    pub sets: BTreeMap<String, SetObservation>,
    /// The cluster, or why none is used (`--cluster off`, no kubeconfig): a choice, not a
    /// failure to look.
    pub cluster: Result<ClusterObservation, String>,
}

/// One PrePullSet as the mirror answered for it.
#[derive(Debug, Clone, PartialEq)]
pub struct SetObservation {
    /// The set as a workload, its images pinned to what the mirror holds (none when the mirror
    /// could not be read).
    pub workload: Workload,
    /// Images the set names that the mirror does not hold (yet), or why the mirror could not
    /// be read: then the workload is incomplete and nothing in the cluster may change on its
    /// strength.
    pub not_in_mirror: Observed<Vec<Unresolved>>,
}

/// An image a set names that the mirror does not hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Unresolved {
    pub reference: String,
    pub reason: String,
}

/// The cluster a pass used.
#[derive(Debug, Clone)]
pub struct ClusterObservation {
    /// The API server's URL, said in every plan so nobody applies to the wrong cluster unawares.
    pub url: String,
    pub facts: Observed<ClusterFacts>,
}

/// What the API server holds for pre-pull.
#[derive(Debug, Clone, Default)]
pub struct ClusterFacts {
    /// The DaemonSets Lifeboat made for PrePullSets.
    pub existing: Vec<Existing>,
    /// Every node, with the kubelet GC settings of those a `kubelet` set selects.
    pub nodes: Vec<NodeFacts>,
    /// Per set: what its pre-pull pods ran (method kubelet) or its node agents reported (cri).
    pub runs: BTreeMap<String, Observed<Runs>>,
}

/// What ran on the nodes for one set.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Runs {
    pub pods: Vec<PodFacts>,
    pub inventories: Vec<Inventory>,
}

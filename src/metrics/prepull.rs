//! The metrics of PrePullSets: node coverage per set, and each node's kubelet image GC
//! settings.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use super::{Registering, Seconds, registered};

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct PrePullLabel {
    pre_pull_set: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct NodeLabel {
    node: String,
}

/// Per PrePullSet, and per node.
pub struct PrePullMetrics {
    prepull_ratio: Family<PrePullLabel, Seconds>,
    prepull_nodes: Family<PrePullLabel, Gauge>,
    prepull_covered: Family<PrePullLabel, Gauge>,
    prepull_images: Family<PrePullLabel, Gauge>,
    gc_ok: Family<NodeLabel, Gauge>,
    gc_high: Family<NodeLabel, Gauge>,
    gc_low: Family<NodeLabel, Gauge>,
    gc_age: Family<NodeLabel, Gauge>,
}

impl PrePullMetrics {
    pub(super) fn register(r: &mut Registering) -> PrePullMetrics {
        PrePullMetrics {
            prepull_ratio: registered(
                r,
                "prepull_coverage_ratio",
                "Nodes the PrePullSet selects that hold all its images, over the nodes it selects",
                Family::default(),
            ),
            prepull_nodes: registered(r, "prepull_nodes", "Nodes the PrePullSet selects", Family::default()),
            prepull_covered: registered(
                r,
                "prepull_nodes_covered",
                "Nodes the PrePullSet selects that hold all its images",
                Family::default(),
            ),
            prepull_images: registered(r, "prepull_images", "Images the PrePullSet pre-pulls", Family::default()),
            gc_ok: registered(
                r,
                "kubelet_image_gc_ok",
                "1 when the node's kubelet image GC settings are what its PrePullSets ask for, 0 when not (absent when unread)",
                Family::default(),
            ),
            gc_high: registered(
                r,
                "kubelet_image_gc_high_threshold_percent",
                "The node's kubelet imageGCHighThresholdPercent",
                Family::default(),
            ),
            gc_low: registered(
                r,
                "kubelet_image_gc_low_threshold_percent",
                "The node's kubelet imageGCLowThresholdPercent",
                Family::default(),
            ),
            gc_age: registered(
                r,
                "kubelet_image_minimum_gc_age_seconds",
                "The node's kubelet imageMinimumGCAge",
                Family::default(),
            ),
        }
    }

    /// Coverage per PrePullSet and kubelet GC settings per node, from the last pre-pull pass.
    /// Series of sets and nodes no longer seen are dropped.
    pub fn record_pre_pull(&self, pass: &crate::prepull::PrePullPass) {
        use crate::prepull::coverage::GcAudit;
        // While the cluster cannot be read, the last values stay: alerts on coverage must not
        // fall silent exactly when the API server is in trouble.
        if pass.daemon_sets.is_unknown() {
            return;
        }
        for family in [&self.prepull_nodes, &self.prepull_covered, &self.prepull_images] {
            family.clear();
        }
        self.prepull_ratio.clear();
        for family in [&self.gc_ok, &self.gc_high, &self.gc_low, &self.gc_age] {
            family.clear();
        }
        let mut nodes: std::collections::BTreeMap<&str, &GcAudit> = std::collections::BTreeMap::new();
        for (name, set) in &pass.sets {
            let label = PrePullLabel { pre_pull_set: name.clone() };
            if let Some(images) = set.images.present() {
                self.prepull_images.get_or_create(&label).set(images.len() as i64);
            }
            let Some(coverage) = set.coverage.present() else { continue };
            self.prepull_ratio.get_or_create(&label).set(coverage.ratio());
            self.prepull_nodes.get_or_create(&label).set(coverage.nodes.len() as i64);
            self.prepull_covered.get_or_create(&label).set(coverage.covered() as i64);
            // A node two sets cover fails when either set's targets are not met.
            for node in &coverage.nodes {
                let worst = nodes.entry(&node.node).or_insert(&node.kubelet_gc);
                if !matches!(worst, GcAudit::Fail { .. }) && !matches!(node.kubelet_gc, GcAudit::Unknown { .. }) {
                    *worst = &node.kubelet_gc;
                }
            }
        }
        for (node, audit) in nodes {
            let label = NodeLabel { node: node.to_string() };
            let (ok, settings) = match audit {
                GcAudit::Pass { settings } => (1, settings),
                GcAudit::Fail { settings, .. } => (0, settings),
                GcAudit::Unknown { .. } => continue,
            };
            self.gc_ok.get_or_create(&label).set(ok);
            for (family, value) in [
                (&self.gc_high, settings.high_threshold_percent),
                (&self.gc_low, settings.low_threshold_percent),
                (&self.gc_age, settings.minimum_age_seconds.map(|s| s as i64)),
            ] {
                if let Some(v) = value {
                    family.get_or_create(&label).set(v);
                }
            }
        }
    }
}

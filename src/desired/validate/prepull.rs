//! PrePullSet documents: which images, on which nodes, with which tolerations and secrets; and
//! the node selection FailoverSets share with them.

use super::{Checker, Document, check_subdomain};
use std::str::FromStr as _;

use crate::desired::raw;
use crate::desired::{DEFAULT_CRI_SOCKET, KubeletGcTarget, Period, PrePullSet};

impl Checker<'_> {
    pub(super) fn pre_pull_set(&mut self, doc: &Document<'_>, spec: &raw::PrePullSetSpec) -> Option<PrePullSet> {
        let before = self.errors();
        let (mirror_sets, images) = self.image_selection(doc, &spec.mirror_sets, &spec.images);
        self.node_selection(doc, &spec.node_selector, &spec.tolerations);
        for (i, secret) in spec.pull_secrets.iter().enumerate() {
            self.field(doc, &format!("spec.pullSecrets[{i}]"), check_subdomain(secret, "Secret"));
        }
        if let Some(pc) = &spec.priority_class_name {
            self.field(doc, "spec.priorityClassName", check_subdomain(pc, "PriorityClass"));
        }
        let method = spec.method.unwrap_or(raw::PrePullMethod::Kubelet);
        let cri = spec.cri.clone().unwrap_or(raw::CriSettings { socket: None, parallel_pulls: None });
        if spec.cri.is_some() && method != raw::PrePullMethod::Cri {
            self.diags.push(
                doc.diagnostic("spec.cri", "cri settings only apply to `method: cri`; this set uses the kubelet")
                    .hint("set `method: cri`, or drop `cri`"),
            );
        }
        let cri_socket = cri.socket.unwrap_or_else(|| DEFAULT_CRI_SOCKET.to_string());
        if !cri_socket.starts_with('/') || cri_socket.contains("/../") || cri_socket.ends_with('/') {
            self.diags.push(
                doc.diagnostic("spec.cri.socket", format!("`{cri_socket}` is not an absolute path to a socket"))
                    .hint("give the socket's path on the node, like /run/containerd/containerd.sock"),
            );
        }
        let parallel_pulls = cri.parallel_pulls.unwrap_or(4);
        if !(1..=32).contains(&parallel_pulls) {
            self.diags.push(
                doc.diagnostic("spec.cri.parallelPulls", format!("{parallel_pulls} is not between 1 and 32"))
                    .hint("a node pulls a handful of images at once at most; 4 is the default"),
            );
        }
        let kubelet_gc = self.kubelet_gc(doc, spec.kubelet_gc.as_ref());
        (self.errors() == before).then(|| PrePullSet {
            origin: doc.origin(),
            node_selector: spec.node_selector.clone(),
            tolerations: spec.tolerations.clone(),
            mirror_sets,
            images,
            pull_secrets: spec.pull_secrets.iter().cloned().collect(),
            priority_class_name: spec.priority_class_name.clone(),
            method,
            cri_socket,
            parallel_pulls,
            kubelet_gc,
        })
    }

    /// `spec.nodeSelector` and `spec.tolerations`, as a Pod spec takes them.
    pub(super) fn node_selection(
        &mut self,
        doc: &Document<'_>,
        selector: &std::collections::BTreeMap<String, String>,
        tolerations: &[raw::Toleration],
    ) {
        for (key, value) in selector {
            let path = format!("spec.nodeSelector.{key}");
            self.field(doc, &path, check_label(key, value));
        }
        for (i, t) in tolerations.iter().enumerate() {
            let path = format!("spec.tolerations[{i}]");
            if t.operator == Some(raw::TolerationOperator::Exists) && t.value.is_some() {
                self.diags.push(
                    doc.diagnostic(&format!("{path}.value"), "a toleration with operator Exists takes no value")
                        .hint("drop `value`, or use `operator: Equal`"),
                );
            }
            if t.toleration_seconds.is_some() && t.effect != Some(raw::TaintEffect::NoExecute) {
                self.diags.push(
                    doc.diagnostic(
                        &format!("{path}.tolerationSeconds"),
                        "tolerationSeconds only applies to effect NoExecute",
                    )
                    .hint("set `effect: NoExecute` or drop tolerationSeconds"),
                );
            }
            if t.key.is_none() && t.operator != Some(raw::TolerationOperator::Exists) {
                self.diags.push(
                    doc.diagnostic(
                        &path,
                        "a toleration without key must use operator Exists (it then tolerates every taint)",
                    )
                    .hint("add `key:` or `operator: Exists`"),
                );
            }
        }
    }

    fn kubelet_gc(&mut self, doc: &Document<'_>, raw: Option<&raw::KubeletGcTarget>) -> KubeletGcTarget {
        let mut target = KubeletGcTarget::default();
        let Some(raw) = raw else { return target };
        for (field, value, slot) in [
            ("highThresholdPercent", raw.high_threshold_percent, &mut target.high_threshold_percent),
            ("lowThresholdPercent", raw.low_threshold_percent, &mut target.low_threshold_percent),
        ] {
            if let Some(v) = value {
                if v > 100 {
                    self.diags.push(
                        doc.diagnostic(&format!("spec.kubeletGC.{field}"), format!("{v} is not a percentage"))
                            .hint("give a number from 0 to 100"),
                    );
                }
                *slot = v;
            }
        }
        if target.low_threshold_percent > target.high_threshold_percent {
            self.diags.push(
                doc.diagnostic(
                    "spec.kubeletGC.lowThresholdPercent",
                    format!(
                        "the low threshold {} is above the high threshold {}; kubelet refuses such a configuration",
                        target.low_threshold_percent, target.high_threshold_percent
                    ),
                )
                .hint("the low threshold is where garbage collection stops: make it at most the high one"),
            );
        }
        if let Some(age) = &raw.minimum_age
            && let Some(p) = self.field(doc, "spec.kubeletGC.minimumAge", Period::from_str(age))
        {
            target.minimum_age = p;
        }
        target
    }
}

/// A Kubernetes label: key `[prefix/]name` (prefix a DNS subdomain, name at most 63 characters
/// of letters, digits, `-`, `_`, `.`, starting and ending alphanumeric), value empty or like a name.
fn check_label(key: &str, value: &str) -> Result<(), String> {
    let name_ok = |n: &str| {
        !n.is_empty()
            && n.len() <= 63
            && n.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && n.starts_with(|c: char| c.is_ascii_alphanumeric())
            && n.ends_with(|c: char| c.is_ascii_alphanumeric())
    };
    let (prefix, name) = key.rsplit_once('/').map_or((None, key), |(p, n)| (Some(p), n));
    if prefix.is_some_and(|p| check_subdomain(p, "label prefix").is_err()) || !name_ok(name) {
        return Err(format!(
            "`{key}` is not a valid label key: `[prefix/]name`, the name at most 63 letters, digits, `-`, `_` or `.`"
        ));
    }
    if !(value.is_empty() || name_ok(value)) {
        return Err(format!(
            "`{value}` is not a valid label value: at most 63 letters, digits, `-`, `_` or `.`, starting and ending with a letter or digit"
        ));
    }
    Ok(())
}

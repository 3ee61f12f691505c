//! PrePullSet documents: which images, on which nodes, with which tolerations and secrets.

use super::{Checker, Document, check_subdomain};
use crate::desired::PrePullSet;
use crate::desired::raw;

impl Checker<'_> {
    pub(super) fn pre_pull_set(&mut self, doc: &Document<'_>, spec: &raw::PrePullSetSpec) -> Option<PrePullSet> {
        let before = self.errors();
        let (mirror_sets, images) = self.image_selection(doc, &spec.mirror_sets, &spec.images);
        for (key, value) in &spec.node_selector {
            let path = format!("spec.nodeSelector.{key}");
            self.field(doc, &path, check_label(key, value));
        }
        for (i, t) in spec.tolerations.iter().enumerate() {
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
        for (i, secret) in spec.pull_secrets.iter().enumerate() {
            self.field(doc, &format!("spec.pullSecrets[{i}]"), check_subdomain(secret, "Secret"));
        }
        if let Some(pc) = &spec.priority_class_name {
            self.field(doc, "spec.priorityClassName", check_subdomain(pc, "PriorityClass"));
        }
        (self.errors() == before).then(|| PrePullSet {
            origin: doc.origin(),
            node_selector: spec.node_selector.clone(),
            tolerations: spec.tolerations.clone(),
            mirror_sets,
            images,
            pull_secrets: spec.pull_secrets.iter().cloned().collect(),
            priority_class_name: spec.priority_class_name.clone(),
            method: spec.method.unwrap_or(raw::PrePullMethod::Kubelet),
        })
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

//! What a pre-pull pass changes in the cluster, and what it reports per set.

use std::collections::BTreeMap;

use serde::Serialize;

use super::coverage::SetCoverage;
use super::resolve::{Resolution, Unresolved};
use crate::desired::PrePullMethod;

/// A DaemonSet Lifeboat made for a PrePullSet, as it is in the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Existing {
    pub set: String,
    pub namespace: String,
    pub name: String,
    /// The hash of what was rendered when it was applied.
    pub hash: Option<String>,
    /// Whether it runs node agents (method cri) rather than pre-pull pods.
    pub node_agent: bool,
    /// The pinned references it pulls.
    pub images: std::collections::BTreeSet<String>,
}

/// What one set should look like in the cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct Wanted {
    pub resolution: Resolution,
    pub namespace: String,
    pub name: String,
    pub hash: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum ChangeKind {
    Create,
    Update,
    Delete,
}

/// One DaemonSet to create, update or delete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Change {
    pub pre_pull_set: String,
    pub kind: ChangeKind,
    pub namespace: String,
    pub name: String,
    /// Images the DaemonSet pulls after the change.
    pub images: usize,
    pub why: String,
}

/// The changes that bring the cluster to `wanted`, and the sets left alone with why.
pub fn changes(wanted: &[Wanted], existing: &[Existing]) -> (Vec<Change>, BTreeMap<String, String>) {
    let mut changes = Vec::new();
    let mut held = BTreeMap::new();
    for w in wanted {
        let set = &w.resolution.workload.set;
        let images = w.resolution.workload.images.len();
        let current = existing.iter().find(|e| e.set == *set && e.name == w.name && e.namespace == w.namespace);
        if let Some(reason) = &w.resolution.unknown {
            held.insert(set.clone(), format!("left as it is: {reason}"));
            continue;
        }
        let change = |kind, why: String| Change {
            pre_pull_set: set.clone(),
            kind,
            namespace: w.namespace.clone(),
            name: w.name.clone(),
            images,
            why,
        };
        // Never shrink on the mirror's word alone: when it lacks images the desired state names
        // and the new list drops images the nodes pull now, the mirror lost them (wiped,
        // restored, or refusing as not found); the DaemonSet, and the images its pods keep on
        // the nodes, stay until the mirror holds them again.
        if let Some(e) = current {
            let new: std::collections::BTreeSet<&str> =
                w.resolution.workload.images.iter().map(|i| i.reference.as_str()).collect();
            let dropped = e.images.iter().filter(|i| !new.contains(i.as_str())).count();
            if dropped > 0 && !w.resolution.not_in_mirror.is_empty() {
                held.insert(
                    set.clone(),
                    format!(
                        "left as it is: the mirror lacks {} image(s) the set names (first: {}), and the new list \
                         would drop {dropped} the nodes pull now; mirror them again to go on",
                        w.resolution.not_in_mirror.len(),
                        w.resolution.not_in_mirror[0].reference
                    ),
                );
                continue;
            }
        }
        match current {
            None => changes.push(change(ChangeKind::Create, format!("new PrePullSet: {images} images on its nodes"))),
            Some(e) if e.hash.as_deref() != Some(w.hash.as_str()) => changes.push(change(
                ChangeKind::Update,
                format!("the rendered DaemonSet changed (images, nodes or settings); {images} images"),
            )),
            Some(_) => {}
        }
    }
    for e in existing {
        let still_wanted =
            wanted.iter().any(|w| w.resolution.workload.set == e.set && w.name == e.name && w.namespace == e.namespace);
        // A set whose mirror could not be read keeps every DaemonSet it had.
        if still_wanted || held.contains_key(&e.set) {
            continue;
        }
        let why = if wanted.iter().any(|w| w.resolution.workload.set == e.set) {
            "the set's DaemonSet moved (method or name changed)".to_string()
        } else {
            "the PrePullSet left the desired state".to_string()
        };
        changes.push(Change {
            pre_pull_set: e.set.clone(),
            kind: ChangeKind::Delete,
            namespace: e.namespace.clone(),
            name: e.name.clone(),
            images: 0,
            why,
        });
    }
    (changes, held)
}

/// One set's part of a pass.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SetReport {
    pub method: PrePullMethod,
    /// `namespace/name` of its DaemonSet.
    pub daemon_set: String,
    /// The pinned references it pulls.
    pub images: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_in_mirror: Vec<Unresolved>,
    /// Why it could not be looked at or was left alone, when so.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unknown: Option<String>,
    /// Node coverage, when the cluster could be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coverage: Option<SetCoverage>,
}

/// Everything a pre-pull pass planned, did and saw.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PrePullPass {
    /// The API server the pass read and wrote, when it had one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// Why the cluster was not looked at, when it was not: no cluster configured, or the API
    /// server could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_observed: Option<String>,
    /// True when `not_observed` is an error, not a choice (no cluster configured).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub unknown: bool,
    pub changes: Vec<Change>,
    /// Changes that failed, with why (apply only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<String>,
    pub sets: BTreeMap<String, SetReport>,
}

impl PrePullPass {
    /// Whether anything could not be looked at or failed.
    pub fn has_problems(&self) -> bool {
        self.unknown || !self.failures.is_empty() || self.sets.values().any(|s| s.unknown.is_some())
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
    if let Some(why) = &pass.not_observed {
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
        let _ = write!(
            out,
            "  PrePullSet/{name}: {} image{}",
            set.images.len(),
            if set.images.len() == 1 { "" } else { "s" }
        );
        match &set.coverage {
            Some(c) => {
                let _ = writeln!(out, ", {} of {} nodes hold them all", c.covered(), c.nodes.len());
            }
            None => out.push('\n'),
        }
        if let Some(why) = &set.unknown {
            let _ = writeln!(out, "    ? {why}");
        }
        for u in &set.not_in_mirror {
            let _ = writeln!(out, "    ! {}: {}", u.reference, u.reason);
        }
        for node in set.coverage.iter().flat_map(|c| &c.nodes) {
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
            if let super::coverage::GcAudit::Fail { problems, .. } = &node.kubelet_gc {
                let _ = writeln!(out, "    ! node {}: kubelet image GC: {}", node.node, problems.join("; "));
            }
        }
        for e in set.coverage.iter().flat_map(|c| &c.excluded) {
            let _ = writeln!(out, "    = node {} not covered: {}", e.node, e.reason);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prepull::Workload;

    fn wanted(set: &str, hash: &str, unknown: Option<&str>) -> Wanted {
        Wanted {
            resolution: Resolution {
                workload: Workload {
                    set: set.into(),
                    method: PrePullMethod::Kubelet,
                    images: Vec::new(),
                    node_selector: Default::default(),
                    tolerations: Vec::new(),
                    pull_secrets: Vec::new(),
                    priority_class_name: None,
                    cri_socket: String::new(),
                    parallel_pulls: 4,
                },
                not_in_mirror: Vec::new(),
                unknown: unknown.map(str::to_string),
            },
            namespace: "lifeboat".into(),
            name: format!("lifeboat-prepull-{set}"),
            hash: hash.into(),
        }
    }

    fn existing(set: &str, hash: &str) -> Existing {
        Existing {
            set: set.into(),
            namespace: "lifeboat".into(),
            name: format!("lifeboat-prepull-{set}"),
            hash: Some(hash.into()),
            node_agent: false,
            images: Default::default(),
        }
    }

    #[test]
    fn create_update_delete_and_nothing_for_what_matches() {
        let want = [wanted("new", "h1", None), wanted("same", "h2", None), wanted("changed", "h3", None)];
        let have = [existing("same", "h2"), existing("changed", "old"), existing("gone", "h4")];
        let (changes, held) = changes(&want, &have);
        let kinds: Vec<(&str, ChangeKind)> = changes.iter().map(|c| (c.pre_pull_set.as_str(), c.kind)).collect();
        assert_eq!(kinds, [("new", ChangeKind::Create), ("changed", ChangeKind::Update), ("gone", ChangeKind::Delete)]);
        assert!(held.is_empty());
    }

    #[test]
    fn images_the_mirror_lost_are_never_dropped_from_the_nodes() {
        let mut want = wanted("critical", "new", None);
        want.resolution.not_in_mirror =
            vec![Unresolved { reference: "m.example/app:1.0".into(), reason: "not in the mirror".into() }];
        let mut have = existing("critical", "old");
        have.images = ["m.example/app@sha256:aa".to_string()].into();
        let (changes, held) = changes(std::slice::from_ref(&want), std::slice::from_ref(&have));
        assert!(changes.is_empty(), "{changes:?}");
        assert!(held["critical"].contains("would drop 1"), "{held:?}");

        // A tag removed from the desired state (the mirror lacks nothing) does shrink the set.
        want.resolution.not_in_mirror.clear();
        let (changes, _) = changes_of(&want, &have);
        assert_eq!(changes[0].kind, ChangeKind::Update);
    }

    fn changes_of(want: &Wanted, have: &Existing) -> (Vec<Change>, BTreeMap<String, String>) {
        changes(std::slice::from_ref(want), std::slice::from_ref(have))
    }

    #[test]
    fn a_set_whose_mirror_cannot_be_read_is_never_changed_nor_deleted() {
        let want = [wanted("critical", "h1", Some("mirror down"))];
        let (changes, held) = changes(&want, &[existing("critical", "old")]);
        assert!(changes.is_empty(), "{changes:?}");
        assert_eq!(held["critical"], "left as it is: mirror down");
    }
}

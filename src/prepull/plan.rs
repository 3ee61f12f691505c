//! What a pre-pull pass changes in the cluster: the DaemonSets to create, update or delete,
//! the sets left alone and why, and the steps that carry it out. Pure.

use std::collections::BTreeMap;

use serde::Serialize;

use super::Workload;
use super::observation::Unresolved;
use crate::observed::Observed;

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
    /// The set's images as the mirror holds them.
    pub workload: Workload,
    /// What the mirror lacks, or why it could not be read.
    pub not_in_mirror: Observed<Vec<Unresolved>>,
    /// Where its DaemonSet goes, and the hash of what is rendered for it.
    pub namespace: String,
    pub name: String,
    pub hash: String,
}

/// What applying the plan does, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Server-side apply of what the workload renders to (a no-op when nothing changed, which
    /// puts back what was deleted or edited by hand).
    Apply(Workload),
    Delete(Existing),
}

/// The plan of a pre-pull pass.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PrePullPlan {
    pub changes: Vec<Change>,
    /// Sets left as they are, and why.
    pub held: BTreeMap<String, String>,
    pub steps: Vec<Step>,
}

/// The plan that brings the cluster to `wanted`: every set whose mirror could be read is
/// applied again (changed or not), then DaemonSets of sets that moved or left are deleted.
pub fn plan(wanted: &[Wanted], existing: &[Existing]) -> PrePullPlan {
    let (changes, held) = changes(wanted, existing);
    let mut steps: Vec<Step> = wanted
        .iter()
        .filter(|w| !held.contains_key(&w.workload.set))
        .map(|w| Step::Apply(w.workload.clone()))
        .collect();
    steps.extend(changes.iter().filter(|c| c.kind == ChangeKind::Delete).filter_map(|c| {
        existing.iter().find(|e| e.name == c.name && e.namespace == c.namespace).cloned().map(Step::Delete)
    }));
    PrePullPlan { changes, held, steps }
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
        let set = &w.workload.set;
        let images = w.workload.images.len();
        let current = existing.iter().find(|e| e.set == *set && e.name == w.name && e.namespace == w.namespace);
        let not_in_mirror = match &w.not_in_mirror {
            Observed::Present(missing) => missing.as_slice(),
            Observed::Unknown(reason) => {
                held.insert(set.clone(), format!("left as it is: {reason}"));
                continue;
            }
            Observed::Absent => &[],
        };
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
                w.workload.images.iter().map(|i| i.reference.as_str()).collect();
            let dropped = e.images.iter().filter(|i| !new.contains(i.as_str())).count();
            if let Some(first) = not_in_mirror.first()
                && dropped > 0
            {
                held.insert(
                    set.clone(),
                    format!(
                        "left as it is: the mirror lacks {} image(s) the set names (first: {}), and the new list \
                         would drop {dropped} the nodes pull now; mirror them again to go on",
                        not_in_mirror.len(),
                        first.reference
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
            wanted.iter().any(|w| w.workload.set == e.set && w.name == e.name && w.namespace == e.namespace);
        // A set whose mirror could not be read keeps every DaemonSet it had.
        if still_wanted || held.contains_key(&e.set) {
            continue;
        }
        let why = if wanted.iter().any(|w| w.workload.set == e.set) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn wanted(set: &str, hash: &str, unknown: Option<&str>) -> Wanted {
        Wanted {
            workload: Workload {
                set: set.into(),
                method: crate::desired::PrePullMethod::Kubelet,
                images: Vec::new(),
                node_selector: Default::default(),
                tolerations: Vec::new(),
                pull_secrets: Vec::new(),
                priority_class_name: None,
                cri_socket: String::new(),
                parallel_pulls: 4,
            },
            not_in_mirror: match unknown {
                Some(why) => Observed::Unknown(why.into()),
                None => Observed::Present(Vec::new()),
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
        want.not_in_mirror = Observed::Present(vec![Unresolved {
            reference: "m.example/app:1.0".into(),
            reason: "not in the mirror".into(),
        }]);
        let mut have = existing("critical", "old");
        have.images = ["m.example/app@sha256:aa".to_string()].into();
        let (changes, held) = changes(std::slice::from_ref(&want), std::slice::from_ref(&have));
        assert!(changes.is_empty(), "{changes:?}");
        assert!(held["critical"].contains("would drop 1"), "{held:?}");

        // A tag removed from the desired state (the mirror lacks nothing) does shrink the set.
        want.not_in_mirror = Observed::Present(Vec::new());
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

//! A PrePullSet's images, pinned by digest as the mirror holds them now.

use futures_util::StreamExt as _;
use serde::Serialize;

use super::{Image, Workload};
use crate::desired::{DesiredState, PrePullSet};
use crate::registry::Registry;

/// What a set resolves to.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolution {
    pub workload: Workload,
    /// Images the mirror does not hold (yet): left out of the workload, each with why.
    pub not_in_mirror: Vec<Unresolved>,
    /// Why the mirror could not be read, when it could not: then the workload is incomplete
    /// and nothing in the cluster may change on its strength.
    pub unknown: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Unresolved {
    pub reference: String,
    pub reason: String,
}

/// Lookups of mirror tags at once; the registry client also bounds requests per host.
const CONCURRENT_LOOKUPS: usize = 16;

/// Pins every image of `set` to the digest the mirror holds: each tag of its MirrorSets (as
/// mirrored) and each explicit image. Nodes then pull exactly that, from the mirror.
pub async fn resolve<R: Registry>(state: &DesiredState, name: &str, set: &PrePullSet, registry: &R) -> Resolution {
    let mut resolution = Resolution {
        workload: Workload {
            set: name.to_string(),
            method: set.method,
            images: Vec::new(),
            node_selector: set.node_selector.clone(),
            tolerations: set.tolerations.clone(),
            pull_secrets: set.pull_secrets.iter().cloned().collect(),
            priority_class_name: set.priority_class_name.clone(),
            cri_socket: set.cri_socket.clone(),
            parallel_pulls: set.parallel_pulls,
        },
        not_in_mirror: Vec::new(),
        unknown: None,
    };
    let selected = match crate::observe::mirrored(state, &set.mirror_sets, &set.images, registry).await {
        Ok((selected, empty)) => {
            // A repository whose tag rules select from the mirror but which the mirror does not
            // have: its images are missing, not merely unselected.
            resolution.not_in_mirror.extend(empty.into_iter().map(|repository| Unresolved {
                reason: "the mirror has no such repository, so its tag rules select nothing".into(),
                reference: repository,
            }));
            selected
        }
        Err(e) => {
            resolution.unknown = Some(format!("reading the mirror's tags: {e}"));
            return resolution;
        }
    };
    let lookups = futures_util::stream::iter(selected)
        .map(|s| async move {
            // Digests are looked up too: a pin the mirror does not hold would block every pull
            // after it on every node.
            let found = registry.resolve(&s.repository, &s.reference, false).await;
            (s, found.map(|r| r.map(|r| r.digest)))
        })
        .buffered(CONCURRENT_LOOKUPS)
        .collect::<Vec<_>>()
        .await;
    for (selected, found) in lookups {
        match found {
            Ok(Some(digest)) => resolution.workload.images.push(Image::new(&selected.repository.to_string(), digest)),
            Ok(None) => resolution.not_in_mirror.push(Unresolved {
                reference: selected.full(),
                reason: "not in the mirror (yet): nodes cannot pull it from there".into(),
            }),
            Err(e) => {
                resolution.unknown.get_or_insert_with(|| format!("looking up {} in the mirror: {e}", selected.full()));
            }
        }
    }
    resolution.workload.images.sort();
    resolution.workload.images.dedup();
    resolution
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::desired::load;
    use crate::desired::source::MemorySource;
    use crate::registry::fake::FakeRegistry;

    const MIRROR: &str = "mirror.example:5000";

    fn digest(n: u32) -> crate::desired::Digest {
        crate::registry::manifest::sha256(format!("image {n}").as_bytes())
    }

    fn state() -> DesiredState {
        let pinned = digest(9);
        let files = BTreeMap::from([
            (
                "m.yaml".to_string(),
                format!(
                    "apiVersion: lifeboat.dev/v1alpha1\nkind: MirrorSet\nmetadata: {{name: base}}\nspec:\n  target: {MIRROR}/m\n  images:\n    - source: up.example/app\n      tags: [\"1.0\", \"2.0\"]\n"
                ),
            ),
            (
                "p.yaml".to_string(),
                format!(
                    "apiVersion: lifeboat.dev/v1alpha1\nkind: PrePullSet\nmetadata: {{name: critical}}\nspec:\n  mirrorSets: [base]\n  images: [\"{MIRROR}/tools/debug@{pinned}\", \"{MIRROR}/m/app:1.0\"]\n"
                ),
            ),
        ]);
        load(&MemorySource { files }).unwrap_or_else(|e| panic!("{e:?}"))
    }

    #[tokio::test]
    async fn images_are_pinned_to_the_mirrors_digests_and_missing_ones_named() {
        let state = state();
        let registry = FakeRegistry::default();
        registry.push(&format!("{MIRROR}/m/app"), "1.0", &digest(1));
        registry.push(&format!("{MIRROR}/tools/debug"), "latest", &digest(9));
        let set = &state.pre_pull_sets["critical"];
        let r = resolve(&state, "critical", set, &registry).await;
        assert_eq!(r.unknown, None);
        let refs: Vec<&str> = r.workload.images.iter().map(|i| i.reference.as_str()).collect();
        assert_eq!(refs, [format!("{MIRROR}/m/app@{}", digest(1)), format!("{MIRROR}/tools/debug@{}", digest(9))]);
        assert_eq!(r.not_in_mirror.len(), 1);
        assert_eq!(r.not_in_mirror[0].reference, format!("{MIRROR}/m/app:2.0"));

        // A mirror that cannot be read leaves the set unknown, never smaller.
        registry.set_down(MIRROR, true);
        let r = resolve(&state, "critical", set, &registry).await;
        assert!(r.unknown.as_deref().is_some_and(|u| u.contains("m/app")), "{:?}", r.unknown);
    }
}

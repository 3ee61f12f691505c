//! What a pre-pull pass looks at: each PrePullSet's images, pinned by digest as the mirror
//! holds them now, and the cluster: the DaemonSets Lifeboat made, the nodes and their kubelet
//! GC settings, and what ran (or was pulled) on each node. Reads only.

use std::collections::{BTreeMap, BTreeSet};

use futures_util::StreamExt as _;

use super::Observed;
use crate::cluster::prepull::PrePullCluster;
use crate::desired::{DesiredState, PrePullMethod, PrePullSet};
use crate::prepull::coverage::selects;
use crate::prepull::observation::{
    ClusterFacts, ClusterObservation, PrePullObservation, Runs, SetObservation, Unresolved,
};
use crate::prepull::{Image, Workload};
use crate::registry::Registry;

/// Lookups of mirror tags at once; the registry client also bounds requests per host.
const CONCURRENT_LOOKUPS: usize = 16;

/// Every PrePullSet against the mirror, and the cluster when one is used.
pub async fn pre_pull<R: Registry>(
    state: &DesiredState,
    registry: &R,
    cluster: Result<&PrePullCluster, &str>,
) -> PrePullObservation {
    let mut sets = BTreeMap::new();
    for (name, set) in &state.pre_pull_sets {
        sets.insert(name.clone(), resolve(state, name, set, registry).await);
    }
    let cluster = match cluster {
        Ok(c) => Ok(ClusterObservation { url: c.url.clone(), facts: cluster_facts(c, &sets).await }),
        Err(why) => Err(why.to_string()),
    };
    PrePullObservation { sets, cluster }
}

/// Pins every image of `set` to the digest the mirror holds: each tag of its MirrorSets (as
/// mirrored) and each explicit image. Nodes then pull exactly that, from the mirror.
pub async fn resolve<R: Registry>(state: &DesiredState, name: &str, set: &PrePullSet, registry: &R) -> SetObservation {
    let mut workload = Workload::of(name, set);
    let mut not_in_mirror = Vec::new();
    let selected = match super::mirrored(state, &set.mirror_sets, &set.images, registry).await {
        Ok((selected, empty)) => {
            // A repository whose tag rules select from the mirror but which the mirror does not
            // have: its images are missing, not merely unselected.
            not_in_mirror.extend(empty.into_iter().map(|repository| Unresolved {
                reason: "the mirror has no such repository, so its tag rules select nothing".into(),
                reference: repository,
            }));
            selected
        }
        Err(e) => {
            let why = format!("reading the mirror's tags: {e}");
            return SetObservation { workload, not_in_mirror: Observed::Unknown(why) };
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
            Ok(Some(digest)) => workload.images.push(Image::new(&selected.repository.to_string(), digest)),
            Ok(None) => not_in_mirror.push(Unresolved {
                reference: selected.full(),
                reason: "not in the mirror (yet): nodes cannot pull it from there".into(),
            }),
            Err(e) => {
                let why = format!("looking up {} in the mirror: {e}", selected.full());
                workload.images.clear();
                return SetObservation { workload, not_in_mirror: Observed::Unknown(why) };
            }
        }
    }
    workload.images.sort();
    workload.images.dedup();
    SetObservation { workload, not_in_mirror: Observed::Present(not_in_mirror) }
}

/// The DaemonSets, nodes, kubelet GC settings and per-set runs the plan and coverage need.
async fn cluster_facts(cluster: &PrePullCluster, sets: &BTreeMap<String, SetObservation>) -> Observed<ClusterFacts> {
    let cri_wanted = sets.values().any(|s| s.workload.method == PrePullMethod::Cri);
    let existing = match cluster.existing(cri_wanted).await {
        Ok(e) => e,
        Err(e) => return Observed::Unknown(e.to_string()),
    };
    let mut nodes = match cluster.nodes().await {
        Ok(n) => n,
        Err(e) => return Observed::Unknown(e.to_string()),
    };
    // Kubelet sets read their nodes' GC settings through the API server; cri agents report them.
    let configz: BTreeSet<String> = nodes
        .iter()
        .filter(|n| sets.values().any(|s| s.workload.method == PrePullMethod::Kubelet && selects(&s.workload, n)))
        .map(|n| n.name.clone())
        .collect();
    cluster.read_kubelet_gc(&mut nodes, &configz).await;
    let mut runs = BTreeMap::new();
    for (name, set) in sets {
        let workload = &set.workload;
        let observed = match workload.method {
            PrePullMethod::Kubelet => cluster.pods(workload).await.map(|pods| Runs { pods, ..Runs::default() }),
            PrePullMethod::Cri => {
                cluster.inventories(workload).await.map(|inventories| Runs { inventories, ..Runs::default() })
            }
        };
        runs.insert(name.clone(), Observed::from_read(observed));
    }
    Observed::Present(ClusterFacts { existing, nodes, runs })
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
        let refs: Vec<&str> = r.workload.images.iter().map(|i| i.reference.as_str()).collect();
        assert_eq!(refs, [format!("{MIRROR}/m/app@{}", digest(1)), format!("{MIRROR}/tools/debug@{}", digest(9))]);
        let missing = r.not_in_mirror.present().expect("the mirror was read");
        assert_eq!(missing.len(), 1);
        assert_eq!(missing[0].reference, format!("{MIRROR}/m/app:2.0"));

        // A mirror that cannot be read leaves the set unknown, never smaller.
        registry.set_down(MIRROR, true);
        let r = resolve(&state, "critical", set, &registry).await;
        assert!(r.not_in_mirror.unknown().is_some_and(|u| u.contains("m/app")), "{:?}", r.not_in_mirror);
    }
}

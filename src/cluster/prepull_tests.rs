//! The pre-pull pass against the in-memory registry and the in-process fake API server:
//! DaemonSets applied server-side, left alone when nothing changed, deleted with their set,
//! and coverage read from the pods and nodes the fake stores.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateTerminated, ContainerStatus, Node, NodeSpec, Pod, PodSpec, PodStatus, Taint,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::json;

use crate::cluster::fake::FakeApiServer;
use crate::cluster::prepull::{HASH_ANNOTATION, PrePullCluster};
use crate::cluster::render::{self, RenderSettings};
use crate::desired::source::MemorySource;
use crate::desired::{DesiredState, Digest, load};
use crate::observed::Observed;
use crate::prepull::PrePullPass;
use crate::prepull::coverage::GcAudit;
use crate::prepull::plan::ChangeKind;
use crate::reconcile::prepull as stage;
use crate::registry::fake::FakeRegistry;

const MIRROR: &str = "mirror.example:5000";

fn digest(n: u32) -> Digest {
    crate::registry::manifest::sha256(format!("image {n}").as_bytes())
}

fn state(pre_pull: &str) -> DesiredState {
    let mirror = format!(
        "apiVersion: lifeboat.dev/v1alpha1\nkind: MirrorSet\nmetadata: {{name: base}}\nspec:\n  target: {MIRROR}/m\n  images:\n    - source: up.example/app\n      tags: [\"1.0\", \"2.0\"]\n"
    );
    let mut files = BTreeMap::from([("m.yaml".to_string(), mirror)]);
    if !pre_pull.is_empty() {
        files.insert("p.yaml".to_string(), pre_pull.to_string());
    }
    load(&MemorySource { files }).unwrap_or_else(|e| panic!("{e:?}"))
}

const SET: &str = "apiVersion: lifeboat.dev/v1alpha1\nkind: PrePullSet\nmetadata: {name: critical}\nspec:\n  mirrorSets: [base]\n  nodeSelector: {pool: workers}\n";

/// The pre-pull stage of a dry run.
async fn plan(desired: &DesiredState, registry: &FakeRegistry, cluster: Result<&PrePullCluster, &str>) -> PrePullPass {
    stage::dry_run(desired, registry, cluster, &settings(cluster)).await
}

/// The pre-pull stage of a pass that applies.
async fn apply(desired: &DesiredState, registry: &FakeRegistry, cluster: Result<&PrePullCluster, &str>) -> PrePullPass {
    stage::run(desired, registry, cluster, &settings(cluster)).await
}

fn settings(cluster: Result<&PrePullCluster, &str>) -> RenderSettings {
    cluster.map(|c| c.settings.clone()).unwrap_or_else(|_| RenderSettings {
        namespace: "lifeboat".into(),
        agent_namespace: "lifeboat-node-agent".into(),
        lifeboat_image: "registry.example/lifeboat:test".into(),
    })
}

fn cluster(server: &FakeApiServer) -> PrePullCluster {
    PrePullCluster::new(
        server.client(),
        RenderSettings {
            namespace: "lifeboat".into(),
            agent_namespace: "lifeboat-node-agent".into(),
            lifeboat_image: "registry.example/lifeboat:test".into(),
        },
        "https://fake.example:6443/".into(),
    )
}

fn node(name: &str, pool: &str, taint: Option<&str>) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(BTreeMap::from([
                ("pool".to_string(), pool.to_string()),
                ("kubernetes.io/os".to_string(), "linux".to_string()),
            ])),
            ..Default::default()
        },
        spec: Some(NodeSpec {
            taints: taint.map(|k| vec![Taint { key: k.into(), effect: "NoSchedule".into(), ..Default::default() }]),
            ..Default::default()
        }),
        status: Some(k8s_openapi::api::core::v1::NodeStatus {
            conditions: Some(vec![k8s_openapi::api::core::v1::NodeCondition {
                type_: "Ready".into(),
                status: "True".into(),
                ..Default::default()
            }]),
            ..Default::default()
        }),
    }
}

/// A pre-pull pod on `node` whose init containers pulled `images` (reference, imageID).
fn pod(node: &str, images: &[(&str, &str)]) -> Pod {
    let containers: Vec<k8s_openapi::api::core::v1::Container> = images
        .iter()
        .enumerate()
        .map(|(i, (image, _))| k8s_openapi::api::core::v1::Container {
            name: format!("pull-{i}"),
            image: Some((*image).to_string()),
            ..Default::default()
        })
        .collect();
    let statuses = images
        .iter()
        .enumerate()
        .map(|(i, (image, id))| ContainerStatus {
            name: format!("pull-{i}"),
            image: (*image).to_string(),
            image_id: (*id).to_string(),
            state: Some(ContainerState {
                terminated: Some(ContainerStateTerminated { exit_code: 0, ..Default::default() }),
                ..Default::default()
            }),
            ..Default::default()
        })
        .collect();
    Pod {
        metadata: ObjectMeta {
            name: Some(format!("prepull-{node}")),
            namespace: Some("lifeboat".into()),
            labels: Some(render::selector_labels("critical")),
            ..Default::default()
        },
        spec: Some(PodSpec { node_name: Some(node.into()), init_containers: Some(containers), ..Default::default() }),
        status: Some(PodStatus { init_container_statuses: Some(statuses), ..Default::default() }),
    }
}

#[tokio::test]
async fn daemon_sets_follow_the_desired_state_and_coverage_follows_the_nodes() {
    let registry = FakeRegistry::default();
    registry.push(&format!("{MIRROR}/m/app"), "1.0", &digest(1));
    registry.push(&format!("{MIRROR}/m/app"), "2.0", &digest(2));
    let server = FakeApiServer::new();
    let cluster = cluster(&server);
    let desired = state(SET);

    // Plan: one DaemonSet to create, nothing written.
    let plan = plan(&desired, &registry, Ok(&cluster)).await;
    let said = crate::prepull::report::human(&plan);
    assert!(said.starts_with("Pre-pull on https://fake.example:6443/: 1 change"), "{said}");
    let kinds: Vec<ChangeKind> = plan.changes.iter().map(|c| c.kind).collect();
    assert_eq!(kinds, [ChangeKind::Create], "{plan:#?}");
    assert!(server.object::<DaemonSet>(Some("lifeboat"), &plan.changes[0].name).is_none());

    // Apply creates it, labelled and annotated, by server-side apply.
    let applied = apply(&desired, &registry, Ok(&cluster)).await;
    assert!(applied.failures.is_empty(), "{:?}", applied.failures);
    let name = &applied.changes[0].name;
    let ds = server.object::<DaemonSet>(Some("lifeboat"), name).expect("the DaemonSet was applied");
    let annotations = ds.metadata.annotations.clone().unwrap();
    assert!(annotations.contains_key(HASH_ANNOTATION));
    assert_eq!(ds.metadata.labels.clone().unwrap()["app.kubernetes.io/managed-by"], "lifeboat");
    assert_eq!(ds.metadata.managed_fields.unwrap()[0].manager.as_deref(), Some("lifeboat"));
    let version = ds.metadata.resource_version.clone();

    // Nothing changed: no change planned, nothing written.
    let again = apply(&desired, &registry, Ok(&cluster)).await;
    assert!(again.changes.is_empty(), "{:?}", again.changes);
    let ds = server.object::<DaemonSet>(Some("lifeboat"), name).unwrap();
    assert_eq!(ds.metadata.resource_version, version);

    // Coverage: w1 holds both images, w2 one, w3 none; c1 is not selected, w4's taint is not
    // tolerated. The kubelet GC settings come from configz; w2's differ, w3's cannot be read.
    let images = again.sets["critical"].images.present().expect("the mirror was read");
    let (a, b) = (images[0].as_str(), images[1].as_str());
    for n in [node("w1", "workers", None), node("w2", "workers", None), node("w3", "workers", None)] {
        server.insert(&n);
    }
    server.insert(&node("c1", "control", None));
    server.insert(&node("w4", "workers", Some("gpu")));
    server.insert(&pod("w1", &[(a, a), (b, b)]));
    server.insert(&pod("w2", &[(a, a)]));
    let gc = |low| json!({"imageGCHighThresholdPercent": 85, "imageGCLowThresholdPercent": low, "imageMinimumGCAge": "48h0m0s"});
    server.set_kubelet_config("w1", gc(75));
    server.set_kubelet_config("w2", gc(80));
    let seen = apply(&desired, &registry, Ok(&cluster)).await;
    let coverage = seen.sets["critical"].coverage.present().expect("coverage was read");
    let by_node: BTreeMap<&str, _> = coverage.nodes.iter().map(|n| (n.node.as_str(), n)).collect();
    assert_eq!(by_node.keys().copied().collect::<Vec<_>>(), ["w1", "w2", "w3"]);
    assert!(by_node["w1"].covered() && !by_node["w2"].covered() && !by_node["w3"].covered());
    assert_eq!(coverage.excluded[0].node, "w4");
    assert!(matches!(by_node["w1"].kubelet_gc, GcAudit::Pass { .. }));
    assert!(matches!(by_node["w2"].kubelet_gc, GcAudit::Fail { .. }));
    assert!(
        matches!(&by_node["w3"].kubelet_gc, GcAudit::Unknown { reason } if reason.contains("configz could not be read")),
        "{:?}",
        by_node["w3"].kubelet_gc
    );

    // Without nodes/proxy permission, the GC settings are UNKNOWN with the permission named.
    server.forbid("nodes/proxy");
    let refused = apply(&desired, &registry, Ok(&cluster)).await;
    let node = &refused.sets["critical"].coverage.present().unwrap().nodes[0];
    assert!(
        matches!(&node.kubelet_gc, GcAudit::Unknown { reason } if reason.contains("nodes/proxy")),
        "{:?}",
        node.kubelet_gc
    );

    // The mirror down: the DaemonSet is left as it is, and the pass says why.
    registry.set_down(MIRROR, true);
    let held = apply(&desired, &registry, Ok(&cluster)).await;
    assert!(held.changes.is_empty() && held.result() == crate::outcome::SetResult::Failed, "{held:#?}");
    assert!(server.object::<DaemonSet>(Some("lifeboat"), name).is_some(), "kept while the mirror is down");
    registry.set_down(MIRROR, false);

    // The set leaves the desired state: its DaemonSet is deleted.
    let removed = apply(&state(""), &registry, Ok(&cluster)).await;
    assert_eq!(removed.changes.iter().map(|c| c.kind).collect::<Vec<_>>(), [ChangeKind::Delete]);
    assert!(server.object::<DaemonSet>(Some("lifeboat"), name).is_none());
}

#[tokio::test]
async fn without_a_cluster_images_are_still_resolved_and_the_reason_given() {
    let registry = FakeRegistry::default();
    registry.push(&format!("{MIRROR}/m/app"), "1.0", &digest(1));
    let pass = plan(&state(SET), &registry, Err("--cluster off")).await;
    assert_eq!(pass.not_used.as_deref(), Some("--cluster off"));
    assert_eq!(pass.result(), crate::outcome::SetResult::Succeeded);
    let set = &pass.sets["critical"];
    assert_eq!(set.images, Observed::Present(vec![format!("{MIRROR}/m/app@{}", digest(1))]));
    assert_eq!(set.not_in_mirror.len(), 1, "2.0 is not mirrored yet");

    // An API server that cannot be reached makes the pass unknown, never a change.
    let server = FakeApiServer::new();
    server.set_outage(Some(crate::cluster::fake::Outage::Unavailable));
    let pass = apply(&state(SET), &registry, Ok(&cluster(&server))).await;
    assert!(pass.daemon_sets.is_unknown() && pass.changes.is_empty(), "{pass:#?}");
    assert_eq!(pass.result(), crate::outcome::SetResult::Failed);
}

#[tokio::test]
async fn a_wiped_mirror_never_shrinks_the_set_and_a_method_change_keeps_the_agents_list() {
    let registry = FakeRegistry::default();
    registry.push(&format!("{MIRROR}/m/app"), "1.0", &digest(1));
    registry.push(&format!("{MIRROR}/m/app"), "2.0", &digest(2));
    let server = FakeApiServer::new();
    // One namespace for both methods, as `--node-agent-namespace lifeboat` gives.
    let cluster = PrePullCluster::new(
        server.client(),
        RenderSettings {
            namespace: "lifeboat".into(),
            agent_namespace: "lifeboat".into(),
            lifeboat_image: "registry.example/lifeboat:test".into(),
        },
        "https://fake.example:6443/".into(),
    );
    let applied = apply(&state(SET), &registry, Ok(&cluster)).await;
    let kubelet_ds = applied.changes[0].name.clone();

    // The mirror loses its images (wiped, restored from an old backup): nothing shrinks.
    let wiped = FakeRegistry::default();
    let pass = apply(&state(SET), &wiped, Ok(&cluster)).await;
    assert!(pass.changes.is_empty(), "{:?}", pass.changes);
    assert!(pass.sets["critical"].held.as_deref().is_some_and(|u| u.contains("would drop 2")), "{pass:#?}");
    let ds = server.object::<DaemonSet>(Some("lifeboat"), &kubelet_ds).unwrap();
    let init = ds.spec.template.spec.unwrap().init_containers.unwrap();
    assert_eq!(init.iter().filter(|c| c.image.as_deref().is_some_and(|i| i.contains('@'))).count(), 2);

    // kubelet → cri in the same namespace: the agents' image list survives the old
    // DaemonSet's deletion, and a list deleted by hand comes back on the next pass.
    let cri = SET.replace("nodeSelector", "method: cri\n  nodeSelector");
    let moved = apply(&state(&cri), &registry, Ok(&cluster)).await;
    let kinds: Vec<ChangeKind> = moved.changes.iter().map(|c| c.kind).collect();
    assert_eq!(kinds, [ChangeKind::Create, ChangeKind::Delete], "{:?}", moved.changes);
    assert!(moved.failures.is_empty(), "{:?}", moved.failures);
    assert!(server.object::<DaemonSet>(Some("lifeboat"), &kubelet_ds).is_none());
    let list = render::images_config_map_name("critical");
    let cm = server.object::<k8s_openapi::api::core::v1::ConfigMap>(Some("lifeboat"), &list).expect("the list stays");
    assert_eq!(cm.data.unwrap()[render::IMAGES_KEY].lines().count(), 2);
    server.clear(crate::cluster::fake::ObjectKey::of::<k8s_openapi::api::core::v1::ConfigMap>(Some("lifeboat"), &list));
    let healed = apply(&state(&cri), &registry, Ok(&cluster)).await;
    assert!(healed.changes.is_empty(), "{:?}", healed.changes);
    assert!(server.object::<k8s_openapi::api::core::v1::ConfigMap>(Some("lifeboat"), &list).is_some());
}

/// A PrePullSet document: `name`, its method, and whether it takes the MirrorSet's images or
/// one explicit image.
fn set_document(name: &str, cri: bool, from_mirror_set: bool, pool: bool) -> String {
    let method = if cri { "  method: cri\n" } else { "" };
    let images = if from_mirror_set {
        "  mirrorSets: [base]\n".to_string()
    } else {
        format!("  images: [\"{MIRROR}/m/app:2.0\"]\n")
    };
    let selector = if pool { "  nodeSelector: {pool: workers}\n" } else { "" };
    format!(
        "apiVersion: lifeboat.dev/v1alpha1\nkind: PrePullSet\nmetadata: {{name: {name}}}\nspec:\n{method}{images}{selector}"
    )
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 24, ..Default::default() })]

    /// The pre-pull stage's idempotence: from whatever the cluster holds, apply, then plan
    /// again: no DaemonSet to create, update or delete, and a third pass writes nothing.
    #[test]
    fn apply_then_plan_changes_nothing(
        before in proptest::collection::vec((0usize..3, proptest::bool::ANY, proptest::bool::ANY, proptest::bool::ANY), 0..3),
        after in proptest::collection::vec((0usize..3, proptest::bool::ANY, proptest::bool::ANY, proptest::bool::ANY), 0..3),
    ) {
        let names = ["critical", "gpu", "edge"];
        let documents = |sets: &[(usize, bool, bool, bool)]| {
            let mut seen = std::collections::BTreeSet::new();
            sets.iter()
                .filter(|(n, ..)| seen.insert(*n))
                .map(|(n, cri, base, pool)| set_document(names[*n], *cri, *base, *pool))
                .collect::<Vec<_>>()
                .join("---\n")
        };
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let registry = FakeRegistry::default();
            registry.push(&format!("{MIRROR}/m/app"), "1.0", &digest(1));
            registry.push(&format!("{MIRROR}/m/app"), "2.0", &digest(2));
            let server = FakeApiServer::new();
            server.insert(&node("w1", "workers", None));
            let cluster = cluster(&server);
            apply(&state(&documents(&before)), &registry, Ok(&cluster)).await;
            let desired = state(&documents(&after));
            let applied = apply(&desired, &registry, Ok(&cluster)).await;
            assert!(applied.failures.is_empty(), "{:?}", applied.failures);
            let again = plan(&desired, &registry, Ok(&cluster)).await;
            assert!(again.changes.is_empty(), "{:#?}", again.changes);
            let daemon_sets = |server: &FakeApiServer| {
                server
                    .objects::<DaemonSet>()
                    .into_iter()
                    .map(|d| (d.metadata.name.clone(), d.metadata.resource_version.clone()))
                    .collect::<Vec<_>>()
            };
            let versions = daemon_sets(&server);
            apply(&desired, &registry, Ok(&cluster)).await;
            assert_eq!(daemon_sets(&server), versions, "a pass with nothing to change writes nothing");
        });
    }
}

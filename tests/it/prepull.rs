//! The kubelet method end to end, with a test double for kubelet: the pre-pull pass applies its
//! DaemonSet to the in-process fake API server (no real API server can run here); the double
//! schedules its pod on a node, pulls each init container's image through a real containerd
//! over CRI from the real mirror registry, and writes back the image ids containerd reports, as
//! kubelet would; the next pass reads coverage from that pod.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateTerminated, ContainerStatus, Node, NodeCondition, NodeStatus, Pod, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ListParams};
use lifeboat::cluster::prepull::PrePullCluster;
use lifeboat::cluster::render::RenderSettings;
use lifeboat::nodeagent::ImageRuntime as _;
use lifeboat::nodeagent::cri::CriClient;
use lifeboat::registry::auth::Credential;

use crate::mirror::{World, rt};
use crate::support::containerd::Containerd;
use crate::support::fake_api::FakeApiServer;

fn node(name: &str) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(BTreeMap::from([("kubernetes.io/os".to_string(), "linux".to_string())])),
            ..Default::default()
        },
        status: Some(NodeStatus {
            conditions: Some(vec![NodeCondition {
                type_: "Ready".into(),
                status: "True".into(),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Kubelet, as far as pre-pull needs it: for every DaemonSet, a pod on `node` whose init
/// containers' images are pulled through the runtime, with the image ids the runtime reports.
async fn kubelet(server: &FakeApiServer, node: &str, runtime: &CriClient) -> Vec<String> {
    let daemon_sets: Api<DaemonSet> = Api::namespaced(server.client(), "lifeboat");
    let mut pulled = Vec::new();
    for ds in daemon_sets.list(&ListParams::default()).await.unwrap().items {
        let template = ds.spec.template.clone();
        let spec = template.spec.clone().unwrap();
        let mut statuses = Vec::new();
        for container in spec.init_containers.clone().unwrap_or_default() {
            let image = container.image.clone().unwrap();
            if !runtime.image_present(&image).await.unwrap() {
                runtime.pull(&image, &Credential::Anonymous).await.unwrap_or_else(|e| panic!("pulling {image}: {e:?}"));
                pulled.push(image.clone());
            }
            let image_id = runtime.image_id(&image).await.unwrap().expect("the runtime holds what it pulled");
            statuses.push(ContainerStatus {
                name: container.name.clone(),
                image: image.clone(),
                image_id,
                state: Some(ContainerState {
                    terminated: Some(ContainerStateTerminated { exit_code: 0, ..Default::default() }),
                    ..Default::default()
                }),
                ..Default::default()
            });
        }
        let mut pod_spec = spec;
        pod_spec.node_name = Some(node.into());
        server.insert(&Pod {
            metadata: ObjectMeta {
                name: Some(format!("{}-{node}", ds.metadata.name.clone().unwrap())),
                namespace: Some("lifeboat".into()),
                labels: template.metadata.and_then(|m| m.labels),
                ..Default::default()
            },
            spec: Some(pod_spec),
            status: Some(PodStatus {
                phase: Some("Running".into()),
                init_container_statuses: Some(statuses),
                ..Default::default()
            }),
        });
    }
    pulled
}

#[test]
fn the_kubelet_method_pulls_every_image_on_the_node_and_coverage_proves_it() {
    let world = World::new();
    let runtime_node = Containerd::start();
    runtime_node.trust_plain_http(&world.mirror.host);
    // Two images upstream, mirrored by a pass; the Lifeboat image itself sits in the mirror.
    rt().block_on(async {
        world.up().runnable_image("vendor/app", "1.0", 1).await;
        world.up().runnable_image("vendor/tools", "2.0", 2).await;
        world.mir().runnable_image("lifeboat/lifeboat", "test", 3).await;
    });
    world.desired(
        "  images:\n    - source: UP/vendor/app\n      tags: [\"1.0\"]\n    - source: UP/vendor/tools\n      tags: [\"2.0\"]\n",
    );
    std::fs::write(
        world.dir.path().join("prepull.yaml"),
        "apiVersion: lifeboat.dev/v1alpha1\nkind: PrePullSet\nmetadata: {name: critical}\nspec:\n  mirrorSets: [set]\n",
    )
    .unwrap();
    let (code, applied, _) = world.run("apply", &["--cluster", "off"]);
    assert_eq!(code, 0, "{applied:#}");

    let source = lifeboat::desired::source::DirectorySource::new(world.dir.path()).unwrap();
    let desired = lifeboat::desired::load(&source).unwrap_or_else(|e| panic!("{e:?}"));
    let options =
        lifeboat::registry::Options { timeout: std::time::Duration::from_secs(5), retries: 1, ..Default::default() };
    let registry = lifeboat::registry::OciRegistry::for_desired(&desired, world.dir.path(), options).unwrap();
    let server = FakeApiServer::new();
    server.insert(&node("n1"));
    rt().block_on(async {
        // The client's buffer lives on the runtime it was made on.
        let cluster = PrePullCluster::new(
            server.client(),
            RenderSettings {
                namespace: "lifeboat".into(),
                agent_namespace: "lifeboat-node-agent".into(),
                lifeboat_image: format!("{}/lifeboat/lifeboat:test", world.mirror.host),
            },
            "https://fake.example:6443/".into(),
        );
        let settings = cluster.settings.clone();
        let pass = || lifeboat::reconcile::prepull::run(&desired, &registry, Ok(&cluster), &settings);
        let first = pass().await;
        assert_eq!(first.result(), lifeboat::outcome::SetResult::Succeeded, "{first:#?}");
        let set = &first.sets["critical"];
        let images = set.images.present().expect("the mirror was read");
        assert_eq!(images.len(), 2, "{set:#?}");
        assert!(images.iter().all(|i| i.starts_with(&world.mirror.host) && i.contains("@sha256:")));
        let before = &set.coverage.present().unwrap().nodes[0];
        assert_eq!((before.node.as_str(), before.present), ("n1", 0));

        let runtime = CriClient::connect(&runtime_node.socket()).await.unwrap();
        let pulled = kubelet(&server, "n1", &runtime).await;
        assert_eq!(pulled.len(), 3, "the no-op's image and both images, from the mirror: {pulled:?}");

        let after = pass().await;
        assert!(after.changes.is_empty(), "{:?}", after.changes);
        let coverage = after.sets["critical"].coverage.present().unwrap();
        assert_eq!((coverage.covered(), coverage.nodes.len()), (1, 1), "{coverage:#?}");
        assert_eq!(coverage.nodes[0].present, 2);

        // A node that joins is not covered until its pod has run there.
        server.insert(&node("n2"));
        let joined = pass().await;
        let coverage = joined.sets["critical"].coverage.present().unwrap();
        assert_eq!((coverage.covered(), coverage.nodes.len()), (1, 2));
        assert_eq!(coverage.nodes[1].missing[0].reason, "no pre-pull pod runs on this node yet");
    });
}

use std::collections::BTreeMap;

use super::*;
use crate::desired::raw::{TaintEffect, TolerationOperator};
use crate::prepull::{Image, InventoryImage};

const A: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const B: &str = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

fn workload(method: PrePullMethod) -> Workload {
    Workload {
        set: "critical".into(),
        method,
        images: vec![
            Image::new("mirror.example/m/a", A.to_string().try_into().unwrap()),
            Image::new("mirror.example/m/b", B.to_string().try_into().unwrap()),
        ],
        node_selector: BTreeMap::from([("pool".to_string(), "workers".to_string())]),
        tolerations: vec![Toleration {
            key: Some("dedicated".into()),
            operator: Some(TolerationOperator::Exists),
            value: None,
            effect: None,
            toleration_seconds: None,
        }],
        pull_secrets: vec![],
        priority_class_name: None,
        cri_socket: "/run/containerd/containerd.sock".into(),
        parallel_pulls: 4,
    }
}

fn node(name: &str, pool: &str, taints: &[(&str, &str)]) -> NodeFacts {
    NodeFacts {
        name: name.into(),
        labels: BTreeMap::from([
            ("pool".to_string(), pool.to_string()),
            ("kubernetes.io/os".to_string(), "linux".to_string()),
        ]),
        taints: taints
            .iter()
            .map(|(key, effect)| Taint { key: (*key).into(), value: None, effect: (*effect).into() })
            .collect(),
        ready: true,
        gc: Some(Ok(GcSettings {
            high_threshold_percent: Some(85),
            low_threshold_percent: Some(75),
            minimum_age_seconds: Some(48 * 3600),
        })),
    }
}

fn container(image: &str, image_id: Option<&str>, ran: bool, waiting: Option<&str>) -> ContainerFacts {
    ContainerFacts {
        image: image.into(),
        image_id: image_id.map(str::to_string),
        ran,
        waiting: waiting.map(str::to_string),
    }
}

fn pod(node: &str, containers: Vec<ContainerFacts>) -> PodFacts {
    PodFacts { node: Some(node.into()), containers }
}

#[test]
fn nodes_are_selected_by_labels_and_tolerated_taints_and_gone_nodes_drop_out() {
    let w = workload(PrePullMethod::Kubelet);
    let nodes = [
        node("w1", "workers", &[("dedicated", "NoSchedule")]),
        node("w2", "workers", &[("node.kubernetes.io/unschedulable", "NoSchedule")]),
        node("w3", "workers", &[("gpu", "NoSchedule")]),
        node("w4", "workers", &[("soft", "PreferNoSchedule")]),
        node("c1", "control", &[]),
        {
            let mut windows = node("win1", "workers", &[]);
            windows.labels.insert("kubernetes.io/os".into(), "windows".into());
            windows
        },
    ];
    let coverage = from_pods(&w, &KubeletGcTarget::default(), &nodes, &[]);
    let names: Vec<&str> = coverage.nodes.iter().map(|n| n.node.as_str()).collect();
    assert_eq!(names, ["w1", "w2", "w4"]);
    assert_eq!(coverage.excluded.len(), 2);
    assert!(coverage.excluded[0].reason.contains("gpu:NoSchedule"), "{:?}", coverage.excluded);
    assert!(coverage.excluded[1].reason.contains("kubernetes.io/os=linux"), "{:?}", coverage.excluded);
    assert!(coverage.nodes.iter().all(|n| n.missing[0].reason == "no pre-pull pod runs on this node yet"));
    assert_eq!((coverage.covered(), coverage.ratio()), (0, 0.0));
}

#[test]
fn image_ids_prove_what_each_node_holds() {
    let w = workload(PrePullMethod::Kubelet);
    let (a, b) = (&w.images[0].reference, &w.images[1].reference);
    let nodes = [node("w1", "workers", &[]), node("w2", "workers", &[]), node("w3", "workers", &[])];
    let pods = [
        // containerd reports the pulled digest under the repository name.
        pod(
            "w1",
            vec![
                container(a, Some(&format!("mirror.example/m/a@{A}")), true, None),
                container(b, Some(&format!("mirror.example/m/b@{B}")), true, None),
            ],
        ),
        // The second image cannot be pulled; the first is there.
        pod(
            "w2",
            vec![
                container(a, Some(&format!("mirror.example/m/a@{A}")), true, None),
                container(b, None, false, Some("ImagePullBackOff: Back-off pulling image")),
            ],
        ),
        // The first is stuck, so the second was never tried.
        pod("w3", vec![container(a, None, false, Some("ErrImagePull: not found")), container(b, None, false, None)]),
    ];
    // A pod on a node that is gone is ignored.
    let mut pods = pods.to_vec();
    pods.push(pod("gone", vec![container(a, Some(A), true, None)]));
    let coverage = from_pods(&w, &KubeletGcTarget::default(), &nodes, &pods);
    let by_node: BTreeMap<&str, &NodeCoverage> = coverage.nodes.iter().map(|n| (n.node.as_str(), n)).collect();
    assert_eq!(by_node.len(), 3);
    assert!(by_node["w1"].covered());
    assert_eq!(by_node["w2"].present, 1);
    assert_eq!(by_node["w2"].missing[0].reason, "ImagePullBackOff: Back-off pulling image");
    assert_eq!(by_node["w3"].present, 0);
    assert!(by_node["w3"].missing[1].reason.contains("held up by mirror.example/m/a"), "{:?}", by_node["w3"]);
    assert_eq!(coverage.covered(), 1);
    assert!((coverage.ratio() - 1.0 / 3.0).abs() < 1e-9);
}

#[test]
fn a_config_digest_still_counts_when_the_pinned_container_ran() {
    let w = workload(PrePullMethod::Kubelet);
    let pods = [pod(
        "w1",
        vec![
            container(&w.images[0].reference, Some("sha256:c0ffee"), true, None),
            container(&w.images[1].reference, Some("sha256:c0ffee"), true, None),
        ],
    )];
    let coverage = from_pods(&w, &KubeletGcTarget::default(), &[node("w1", "workers", &[])], &pods);
    assert!(coverage.nodes[0].covered());
}

#[test]
fn inventories_cover_cri_sets_and_carry_the_kubelet_gc_settings() {
    let w = workload(PrePullMethod::Cri);
    let mut n1 = node("w1", "workers", &[]);
    n1.gc = None;
    let mut n2 = node("w2", "workers", &[]);
    n2.gc = None;
    let n3 = NodeFacts { gc: None, ..node("w3", "workers", &[]) };
    let inventory = |node: &str, states: [ImageState; 2], gc: Option<GcSettings>| Inventory {
        node: node.into(),
        set: "critical".into(),
        observed_at: "2026-11-21T10:00:00Z".parse().unwrap(),
        runtime: Some("containerd 1.6.20".into()),
        images: w
            .images
            .iter()
            .zip(states)
            .map(|(i, state)| InventoryImage { reference: i.reference.clone(), state })
            .collect(),
        kubelet_gc_error: gc.is_none().then(|| "/etc/lifeboat/kubelet/config.yaml: no such file".to_string()),
        kubelet_gc: gc,
    };
    let low = GcSettings {
        high_threshold_percent: Some(85),
        low_threshold_percent: Some(80),
        minimum_age_seconds: Some(120),
    };
    let inventories = [
        inventory("w1", [ImageState::Present, ImageState::Pulled], Some(low)),
        inventory("w2", [ImageState::Present, ImageState::Missing { reason: "connection refused".into() }], None),
    ];
    let coverage = coverage(&w, &KubeletGcTarget::default(), &[n1, n2, n3], &[], &inventories);
    let [w1, w2, w3] = &coverage.nodes[..] else { panic!("{coverage:?}") };
    assert!(w1.covered());
    match &w1.kubelet_gc {
        GcAudit::Fail { problems, .. } => {
            assert_eq!(problems.len(), 2, "{problems:?}");
            assert!(problems[0].contains("imageGCLowThresholdPercent is 80, the DR plan asks for 75"));
            assert!(problems[1].contains("imageMinimumGCAge is 2m, less than the 48h"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(w2.missing[0].reason, "connection refused");
    assert!(matches!(&w2.kubelet_gc, GcAudit::Unknown { reason } if reason.contains("no such file")));
    assert_eq!(w3.missing[0].reason, "the node agent has not reported from this node yet");
}

#[test]
fn the_gc_audit_follows_the_sets_targets() {
    let settings = GcSettings {
        high_threshold_percent: Some(90),
        low_threshold_percent: Some(80),
        minimum_age_seconds: Some(3 * 86400),
    };
    let target =
        KubeletGcTarget { high_threshold_percent: 90, low_threshold_percent: 80, minimum_age: "72h".parse().unwrap() };
    assert!(matches!(GcAudit::check(&settings, &target), GcAudit::Pass { .. }));
    assert!(matches!(GcAudit::check(&settings, &KubeletGcTarget::default()), GcAudit::Fail { .. }));
    let toleration = Toleration {
        key: Some("gpu".into()),
        operator: Some(TolerationOperator::Equal),
        value: Some("yes".into()),
        effect: Some(TaintEffect::NoSchedule),
        toleration_seconds: None,
    };
    let taint = |value: &str| Taint { key: "gpu".into(), value: Some(value.into()), effect: "NoSchedule".into() };
    assert!(tolerates(std::slice::from_ref(&toleration), &taint("yes")));
    assert!(!tolerates(std::slice::from_ref(&toleration), &taint("no")));
}

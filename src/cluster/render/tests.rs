use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::PodSpec;

use super::*;
use crate::desired::{DEFAULT_CRI_SOCKET, Digest};

/// A digest that looks real and is the same on every run.
fn digest(seed: &str) -> Digest {
    let hex: String = Sha256::digest(seed.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}").parse().unwrap()
}

fn image(repository: &str) -> Image {
    Image::new(repository, digest(repository))
}

fn workload(set: &str, method: PrePullMethod, repositories: &[&str]) -> Workload {
    let mut images: Vec<Image> = repositories.iter().map(|r| image(r)).collect();
    images.sort();
    Workload {
        set: set.into(),
        method,
        images,
        node_selector: BTreeMap::new(),
        tolerations: vec![],
        pull_secrets: vec![],
        priority_class_name: None,
        cri_socket: DEFAULT_CRI_SOCKET.into(),
        parallel_pulls: 4,
    }
}

fn settings() -> RenderSettings {
    RenderSettings {
        namespace: "lifeboat".into(),
        agent_namespace: "lifeboat-node-agent".into(),
        lifeboat_image: format!("registry.internal.example:5000/lifeboat/lifeboat@{}", digest("lifeboat")),
    }
}

fn toleration(key: Option<&str>, operator: TolerationOperator, value: Option<&str>) -> Toleration {
    Toleration {
        key: key.map(String::from),
        operator: Some(operator),
        value: value.map(String::from),
        effect: None,
        toleration_seconds: None,
    }
}

/// The kubelet set of the snapshot: several images (one with a very long repository name, two
/// with the same last segment), a selector, both kinds of toleration, two pull secrets and a
/// priority class.
fn kubelet_set() -> Workload {
    let mut w = workload(
        "critical",
        PrePullMethod::Kubelet,
        &[
            "registry.internal.example:5000/mirror/base/glibc",
            "registry.internal.example:5000/mirror/base/python",
            "registry.internal.example:5000/mirror/runtime/python",
            "registry.internal.example:5000/mirror/gcr.io/distroless/static_debian12",
            "registry.internal.example:5000/mirror/vendor/observability/an-exceptionally-long-repository-name-for-the-telemetry-collector-sidecar",
        ],
    );
    w.node_selector = BTreeMap::from([("node-role.kubernetes.io/worker".into(), String::new())]);
    w.tolerations = vec![
        toleration(None, TolerationOperator::Exists, None),
        Toleration {
            effect: Some(TaintEffect::NoExecute),
            toleration_seconds: Some(3600),
            ..toleration(Some("node.kubernetes.io/unreachable"), TolerationOperator::Equal, Some("true"))
        },
    ];
    w.pull_secrets = vec!["internal-pull".into(), "vendor-pull".into()];
    w.priority_class_name = Some("system-node-critical".into());
    w
}

fn cri_set() -> Workload {
    let mut w = workload(
        "gpu-nodes",
        PrePullMethod::Cri,
        &["registry.internal.example:5000/mirror/nvidia/cuda", "registry.internal.example:5000/mirror/runtime/python"],
    );
    w.node_selector = BTreeMap::from([("nvidia.com/gpu.present".into(), "true".into())]);
    w.tolerations = vec![Toleration {
        effect: Some(TaintEffect::NoSchedule),
        ..toleration(Some("nvidia.com/gpu"), TolerationOperator::Exists, None)
    }];
    w.pull_secrets = vec!["internal-pull".into(), "vendor-pull".into()];
    w.priority_class_name = Some("system-node-critical".into());
    w.parallel_pulls = 2;
    w
}

/// The objects as YAML documents, as `kubectl apply -f` would take them.
fn yaml(rendered: &Rendered) -> String {
    let mut docs = vec![];
    if let Some(config_map) = &rendered.config_map {
        docs.push(serde_yaml::to_string(config_map).unwrap());
    }
    docs.push(serde_yaml::to_string(&rendered.daemon_set).unwrap());
    docs.join("---\n")
}

fn pod(rendered: &Rendered) -> &PodSpec {
    rendered.daemon_set.spec.template.spec.as_ref().unwrap()
}

fn is_label_value(value: &str) -> bool {
    value.is_empty()
        || (value.len() <= 63
            && value.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && value.starts_with(|c: char| c.is_ascii_alphanumeric())
            && value.ends_with(|c: char| c.is_ascii_alphanumeric()))
}

/// Every name the objects give Kubernetes, and every label value, is valid; the DaemonSet
/// selects its own pods; every object carries the set's selector labels.
fn assert_valid(rendered: &Rendered, set: &str) {
    let ds = &rendered.daemon_set;
    let spec = &ds.spec;
    let template_labels = spec.template.metadata.as_ref().unwrap().labels.as_ref().unwrap();
    let mut metas = vec![&ds.metadata];
    metas.extend(rendered.config_map.as_ref().map(|c| &c.metadata));
    for meta in metas {
        let name = meta.name.as_deref().unwrap();
        assert!(is_dns_label(name), "object name {name:?}");
        let labels = meta.labels.as_ref().unwrap();
        for (key, value) in selector_labels(set) {
            assert_eq!(labels.get(&key), Some(&value), "{name} carries {key}");
        }
        assert!(labels.values().all(|v| is_label_value(v)), "{labels:?}");
    }
    assert!(template_labels.values().all(|v| is_label_value(v)), "{template_labels:?}");
    for (key, value) in spec.selector.match_labels.as_ref().unwrap() {
        assert_eq!(template_labels.get(key), Some(value), "the selector's {key} matches the pod template");
    }
    let pod = pod(rendered);
    let containers: Vec<&str> =
        pod.init_containers.iter().flatten().chain(&pod.containers).map(|c| c.name.as_str()).collect();
    let volumes: Vec<&str> = pod.volumes.iter().flatten().map(|v| v.name.as_str()).collect();
    for names in [&containers, &volumes] {
        assert!(names.iter().all(|n| is_dns_label(n)), "{names:?}");
        assert_eq!(names.iter().collect::<BTreeSet<_>>().len(), names.len(), "unique: {names:?}");
    }
}

#[test]
fn a_kubelet_set_renders_one_unprivileged_daemon_set() {
    let w = kubelet_set();
    let rendered = render(&w, &settings());
    assert_valid(&rendered, &w.set);
    assert!(rendered.config_map.is_none());
    insta::assert_snapshot!("kubelet_set", yaml(&rendered));
}

#[test]
fn a_cri_set_renders_its_image_list_and_node_agents() {
    let w = cri_set();
    let rendered = render(&w, &settings());
    assert_valid(&rendered, &w.set);
    insta::assert_snapshot!("cri_set", yaml(&rendered));
}

#[test]
fn a_very_long_set_name_gives_shortened_valid_names_and_labels() {
    let set = "payments-europe-west-critical-services-with-a-very-long-name-63";
    assert_eq!(set.len(), 63, "the longest name a PrePullSet may have");
    let w = workload(set, PrePullMethod::Kubelet, &["registry.internal.example:5000/mirror/base/glibc"]);
    let rendered = render(&w, &settings());
    assert_valid(&rendered, set);
    insta::assert_snapshot!("long_set_name", yaml(&rendered));
    let cri = render(&Workload { method: PrePullMethod::Cri, ..w }, &settings());
    assert_valid(&cri, set);
    let names =
        [&rendered.daemon_set.metadata.name, &cri.daemon_set.metadata.name, &cri.config_map.unwrap().metadata.name];
    for name in names.map(|n| n.as_deref().unwrap()) {
        let (kept, hash) = name.rsplit_once('-').unwrap();
        assert!(kept.starts_with("lifeboat-") && kept.len() >= 50, "{name}: as much of the name as fits");
        assert_eq!(hash, short_hash(set), "{name}: ends in the hash of the set's name");
    }
}

#[test]
fn short_names_are_kept_as_they_are() {
    let w = workload("critical", PrePullMethod::Kubelet, &[]);
    assert_eq!(daemon_set_name(&w), "lifeboat-prepull-critical");
    assert_eq!(daemon_set_name(&Workload { method: PrePullMethod::Cri, ..w }), "lifeboat-agent-critical");
    assert_eq!(images_config_map_name("critical"), "lifeboat-prepull-critical");
    assert_eq!(set_label_value("critical"), "critical");
    assert_eq!(images_config_map_name("double--dash"), "lifeboat-prepull-double--dash");
    assert_eq!(
        selector_labels("critical"),
        BTreeMap::from([
            ("app.kubernetes.io/managed-by".to_string(), "lifeboat".to_string()),
            ("lifeboat.dev/pre-pull-set".to_string(), "critical".to_string()),
        ])
    );
}

#[test]
fn generated_names_are_dns_labels_and_stay_apart_when_shortened() {
    let long = "a".repeat(63);
    let sets = [
        "x".to_string(),
        "critical".to_string(),
        long.clone(),
        format!("{}b", &long[..62]),
        format!("{}-", &"c".repeat(47)),
        "Upper.Case_and.dots".to_string(),
        "double--dash".to_string(),
        "9".repeat(80),
    ];
    let mut names = BTreeSet::new();
    for set in &sets {
        for method in [PrePullMethod::Kubelet, PrePullMethod::Cri] {
            let name = daemon_set_name(&workload(set, method, &[]));
            assert!(is_dns_label(&name), "{set:?} -> {name:?}");
            assert!(names.insert(name.clone()), "{name} is given twice");
        }
        let value = set_label_value(set);
        assert!(is_label_value(&value) && !value.is_empty(), "{set:?} -> {value:?}");
        assert!(is_dns_label(&images_config_map_name(set)));
    }
    assert_ne!(set_label_value(&"s".repeat(70)), set_label_value(&"s".repeat(71)));
}

#[test]
fn pull_container_names_are_readable_unique_dns_labels() {
    let repositories = [
        "registry.internal.example:5000/mirror/base/python",
        "registry.internal.example:5000/mirror/runtime/python",
        "registry.internal.example:5000/mirror/library/Nginx_Unprivileged.v2",
        "registry.internal.example:5000/mirror/___",
        &format!("registry.internal.example:5000/mirror/{}", "long-segment-".repeat(10)),
        &format!("registry.internal.example:5000/mirror/{}x", "long-segment-".repeat(10)),
    ];
    let names: Vec<String> = repositories.iter().enumerate().map(|(i, r)| pull_container_name(i, &image(r))).collect();
    assert_eq!(&names[..4], ["pull-1-python", "pull-2-python", "pull-3-nginx-unprivileged-v2", "pull-4"]);
    for name in &names {
        assert!(is_dns_label(name), "{name:?}");
    }
    assert_eq!(names.iter().collect::<BTreeSet<_>>().len(), names.len(), "{names:?}");
    assert!(is_dns_label(&pull_container_name(9_999, &image(repositories[4]))));
}

#[test]
fn every_kubelet_container_is_restricted_and_every_image_pulled_once_by_digest() {
    let w = kubelet_set();
    let pod = pod(&render(&w, &settings())).clone();
    let init = pod.init_containers.unwrap();
    assert_eq!(init[0].command.as_deref().unwrap(), ["/usr/local/bin/lifeboat-noop", "install", "/lifeboat/noop"]);
    let pulled: Vec<&str> = init[1..].iter().map(|c| c.image.as_deref().unwrap()).collect();
    let wanted: Vec<&str> = w.images.iter().map(|i| i.reference.as_str()).collect();
    assert_eq!(pulled, wanted);
    for c in &init[1..] {
        assert_eq!(c.command.as_deref().unwrap(), ["/lifeboat/noop"]);
        assert_eq!((c.args.as_ref(), c.image_pull_policy.as_deref()), (None, Some("IfNotPresent")));
        assert!(c.image.as_deref().unwrap().contains("@sha256:"));
        assert_eq!(c.volume_mounts.as_ref().unwrap()[0].read_only, Some(true));
    }
    for c in init.iter().chain(&pod.containers) {
        let sc = c.security_context.as_ref().unwrap();
        assert_eq!((sc.allow_privilege_escalation, sc.read_only_root_filesystem), (Some(false), Some(true)));
        assert_eq!(sc.capabilities.as_ref().unwrap().drop.as_deref().unwrap(), ["ALL"]);
        assert!(c.resources.as_ref().unwrap().limits.as_ref().unwrap().contains_key("memory"));
    }
    let psc = pod.security_context.unwrap();
    assert_eq!((psc.run_as_non_root, psc.run_as_user, psc.run_as_group), (Some(true), Some(65534), Some(65534)));
    assert!(pod.volumes.unwrap().iter().all(|v| v.host_path.is_none()));
    assert_eq!(pod.node_selector.unwrap()["kubernetes.io/os"], "linux");
}

#[test]
fn the_node_agent_gets_exactly_its_flags() {
    let w = cri_set();
    let rendered = render(&w, &settings());
    let agent = &pod(&rendered).containers[0];
    let args: Vec<&str> = agent.args.iter().flatten().map(String::as_str).collect();
    assert_eq!(
        args,
        [
            "node-agent",
            "--set",
            "gpu-nodes",
            "--images-file",
            "/etc/lifeboat/images/images.txt",
            "--cri-socket",
            "/run/lifeboat/cri.sock",
            "--parallel",
            "2",
            "--kubelet-config",
            "/etc/lifeboat/kubelet/config.yaml",
            "--pull-secret-dir",
            "/etc/lifeboat/pull-secrets",
        ]
    );
    let without_secrets = render(&Workload { pull_secrets: vec![], ..w }, &settings());
    let args = pod(&without_secrets).containers[0].args.clone().unwrap();
    assert!(!args.iter().any(|a| a == "--pull-secret-dir"), "{args:?}");
    assert!(pod(&without_secrets).volumes.iter().flatten().all(|v| v.secret.is_none()));
}

#[test]
fn a_changed_image_list_changes_the_agents_pod_template() {
    let w = cri_set();
    let before = render(&w, &settings());
    let mut changed = w.clone();
    changed.images.push(image("registry.internal.example:5000/mirror/zz/new"));
    let after = render(&changed, &settings());
    let text = |r: &Rendered| r.config_map.as_ref().unwrap().data.as_ref().unwrap()[IMAGES_KEY].clone();
    assert_eq!(text(&after).lines().last(), Some(changed.images.last().unwrap().reference.as_str()));
    let template = |r: &Rendered| r.daemon_set.spec.template.metadata.clone();
    assert_ne!(template(&before), template(&after));
}

/// `docs/prepull-example/` holds what Lifeboat renders for two realistic sets, one per method;
/// `.ci/validate-deploy` checks the files against the Kubernetes schemas and the `restricted`
/// Pod Security Standard. Regenerate with
/// `LIFEBOAT_UPDATE_EXAMPLES=1 cargo test --lib cluster::render`.
#[test]
fn the_committed_prepull_example_is_current() {
    let mirror = "registry.internal.example:5000/mirror";
    let pinned = |repository: &str, tag: &str| Image::new(repository, digest(&format!("{repository}:{tag}")));
    let critical = Workload {
        set: "critical".into(),
        method: PrePullMethod::Kubelet,
        images: {
            let mut images = vec![
                pinned(&format!("{mirror}/base/glibc"), "2.40"),
                pinned(&format!("{mirror}/base/distroless"), "static-debian12"),
                pinned(&format!("{mirror}/runtime/python"), "3.12"),
                pinned(&format!("{mirror}/runtime/python"), "3.13"),
                pinned(&format!("{mirror}/runtime/node"), "20-pinned"),
                pinned("registry.internal.example:5000/platform/ingress-controller", "1.11.2"),
            ];
            images.sort();
            images
        },
        node_selector: BTreeMap::from([("node-role.kubernetes.io/worker".into(), String::new())]),
        tolerations: vec![Toleration {
            effect: Some(TaintEffect::NoSchedule),
            ..toleration(Some("dedicated"), TolerationOperator::Equal, Some("ingress"))
        }],
        pull_secrets: vec!["internal-pull".into()],
        priority_class_name: Some("system-node-critical".into()),
        cri_socket: DEFAULT_CRI_SOCKET.into(),
        parallel_pulls: 4,
    };
    let gpu = Workload {
        set: "gpu-nodes".into(),
        method: PrePullMethod::Cri,
        images: vec![
            pinned(&format!("{mirror}/nvidia/cuda"), "12.6.2-runtime-ubuntu24.04"),
            pinned(&format!("{mirror}/nvidia/k8s-device-plugin"), "v0.17.0"),
        ],
        node_selector: BTreeMap::from([("nvidia.com/gpu.present".into(), "true".into())]),
        tolerations: vec![Toleration {
            effect: Some(TaintEffect::NoSchedule),
            ..toleration(Some("nvidia.com/gpu"), TolerationOperator::Exists, None)
        }],
        pull_secrets: vec!["internal-pull".into()],
        priority_class_name: None,
        cri_socket: DEFAULT_CRI_SOCKET.into(),
        parallel_pulls: 2,
    };
    let settings = RenderSettings {
        namespace: "lifeboat".into(),
        agent_namespace: "lifeboat-node-agent".into(),
        lifeboat_image: format!("registry.internal.example:5000/lifeboat/lifeboat@{}", digest("lifeboat:0.1.0")),
    };
    let files: BTreeMap<String, String> = [critical, gpu]
        .iter()
        .map(|w| {
            let header = format!(
                "# What Lifeboat renders for the PrePullSet `{}` (method {}). Generated: run\n\
                 # LIFEBOAT_UPDATE_EXAMPLES=1 cargo test --lib cluster::render to regenerate.\n",
                w.set,
                component(w.method).replace("pre-pull", "kubelet").replace("node-agent", "cri"),
            );
            (format!("{}.yaml", w.set), header + &yaml(&render(w, &settings)))
        })
        .collect();

    let folder = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/prepull-example");
    let hint = "run LIFEBOAT_UPDATE_EXAMPLES=1 cargo test --lib cluster::render";
    if std::env::var_os("LIFEBOAT_UPDATE_EXAMPLES").is_some() {
        let _ = std::fs::remove_dir_all(&folder);
        std::fs::create_dir_all(&folder).unwrap();
        for (name, text) in &files {
            std::fs::write(folder.join(name), text).unwrap();
        }
    }
    for (name, text) in &files {
        let committed = std::fs::read_to_string(folder.join(name)).unwrap_or_default();
        assert!(committed == *text, "docs/prepull-example/{name} is out of date: {hint}");
    }
    let present: BTreeSet<String> =
        std::fs::read_dir(&folder).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(present, files.keys().cloned().collect(), "docs/prepull-example/ holds other files: {hint}");
}

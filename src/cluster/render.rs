//! The Kubernetes objects of a PrePullSet, rendered from its [`Workload`]: pure, no API calls.
//!
//! Method `kubelet` becomes one DaemonSet whose pod pulls every image through the kubelet, as
//! init containers that run Lifeboat's static no-op program (`deploy/noop/noop.c`, installed into
//! the image at [`NOOP_PATH`]), then idles so that the pod, and with it every image it used,
//! stays on the node. The pod needs no privileges: it passes the `restricted` Pod Security
//! Standard. Method `cri` becomes a ConfigMap with the image list and a DaemonSet of
//! `lifeboat node-agent`, which pulls through the node's CRI socket (a hostPath, so its
//! namespace must allow `privileged` pods).
//!
//! Names and labels derive from the set's name and stay valid however long it is. Every object
//! carries [`selector_labels`], so one LIST by label finds all of a set's objects and pods.
//! `metadata.annotations` of the rendered objects are left to the caller.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetSpec, DaemonSetUpdateStrategy, RollingUpdateDaemonSet};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, EmptyDirVolumeSource, EnvVar, EnvVarSource,
    HostPathVolumeSource, LocalObjectReference, ObjectFieldSelector, PodSecurityContext, PodSpec, PodTemplateSpec,
    ResourceRequirements, SeccompProfile, SecretVolumeSource, SecurityContext, Toleration as KubeToleration, Volume,
    VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use sha2::{Digest as _, Sha256};

use crate::desired::raw::{TaintEffect, TolerationOperator};
use crate::desired::{PrePullMethod, Toleration};
use crate::prepull::{Image, Workload};

/// `app.kubernetes.io/managed-by`, always [`MANAGED_BY`] on what Lifeboat renders.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "lifeboat";
/// The PrePullSet an object belongs to; its value is [`set_label_value`].
pub const SET_LABEL: &str = "lifeboat.dev/pre-pull-set";
/// [`COMPONENT_PRE_PULL`] (method `kubelet`) or [`COMPONENT_NODE_AGENT`] (method `cri`).
pub const COMPONENT_LABEL: &str = "app.kubernetes.io/component";
pub const COMPONENT_PRE_PULL: &str = "pre-pull";
pub const COMPONENT_NODE_AGENT: &str = "node-agent";
/// `app.kubernetes.io/name`, always `lifeboat`, as on the objects of `deploy/`.
pub const NAME_LABEL: &str = "app.kubernetes.io/name";
/// `app.kubernetes.io/instance`: the set, as [`set_label_value`] gives it.
pub const INSTANCE_LABEL: &str = "app.kubernetes.io/instance";
/// `app.kubernetes.io/part-of`, always `lifeboat`, as on the objects of `deploy/`.
pub const PART_OF_LABEL: &str = "app.kubernetes.io/part-of";

/// Where the Lifeboat image holds the static no-op program.
pub const NOOP_PATH: &str = "/usr/local/bin/lifeboat-noop";
/// The ServiceAccount the `cri` node agents run as (`deploy/node-agent/`).
pub const NODE_AGENT_SERVICE_ACCOUNT: &str = "lifeboat-node-agent";
/// The key of the `cri` images ConfigMap: one pinned reference per line, sorted.
pub const IMAGES_KEY: &str = "images.txt";
/// The SHA-256 of [`IMAGES_KEY`]'s text, on the node agents' pod template: a changed list rolls
/// the agents.
pub const IMAGES_HASH_ANNOTATION: &str = "lifeboat.dev/images-sha256";
/// Where the kubelet keeps its configuration file on kubeadm-built and most other nodes.
pub const KUBELET_CONFIG_HOST_PATH: &str = "/var/lib/kubelet/config.yaml";

/// Where the rendered objects go and which Lifeboat image their own containers run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderSettings {
    /// The namespace of method `kubelet`'s DaemonSets (Lifeboat's own, `restricted`).
    pub namespace: String,
    /// The namespace of method `cri`'s node agents and their ConfigMaps (`privileged`).
    pub agent_namespace: String,
    /// The Lifeboat image (pinned, ideally from the mirror): the no-op, and the node agent.
    pub lifeboat_image: String,
}

/// The objects of one PrePullSet.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    pub daemon_set: DaemonSet,
    /// Method `cri` only: the images the node agents pull.
    pub config_map: Option<ConfigMap>,
}

/// The objects that make the nodes `w` selects hold its images.
pub fn render(w: &Workload, s: &RenderSettings) -> Rendered {
    match w.method {
        PrePullMethod::Kubelet => Rendered { daemon_set: kubelet_daemon_set(w, s), config_map: None },
        PrePullMethod::Cri => {
            let config_map = images_config_map(w, s);
            Rendered { daemon_set: agent_daemon_set(w, s, &config_map), config_map: Some(config_map) }
        }
    }
}

/// The value of [`SET_LABEL`] (and [`INSTANCE_LABEL`]) for `set`: the name itself when it is a
/// valid label value (at most 63 characters), else a shortened form ending in a hash of it.
pub fn set_label_value(set: &str) -> String {
    let valid = |v: &str| {
        v.len() <= MAX_LENGTH
            && v.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && v.starts_with(|c: char| c.is_ascii_alphanumeric())
            && v.ends_with(|c: char| c.is_ascii_alphanumeric())
    };
    if valid(set) {
        return set.to_string();
    }
    let kept: String =
        set.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '-' }).collect();
    let kept = cut(&kept, MAX_LENGTH - HASH_SUFFIX).trim_matches(|c: char| !c.is_ascii_alphanumeric());
    if kept.is_empty() { short_hash(set) } else { format!("{kept}-{}", short_hash(set)) }
}

/// The labels every object and pod of `set` carries: select with these to list them all, of
/// either method.
pub fn selector_labels(set: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string()),
        (SET_LABEL.to_string(), set_label_value(set)),
    ])
}

/// [`COMPONENT_LABEL`]'s value for a method.
pub fn component(method: PrePullMethod) -> &'static str {
    match method {
        PrePullMethod::Kubelet => COMPONENT_PRE_PULL,
        PrePullMethod::Cri => COMPONENT_NODE_AGENT,
    }
}

/// `lifeboat-prepull-<set>` (method `kubelet`) or `lifeboat-agent-<set>` (method `cri`), as a
/// DNS label of at most 63 characters.
pub fn daemon_set_name(w: &Workload) -> String {
    match w.method {
        PrePullMethod::Kubelet => bounded_name("lifeboat-prepull-", &w.set),
        PrePullMethod::Cri => bounded_name("lifeboat-agent-", &w.set),
    }
}

/// `lifeboat-prepull-<set>`: the ConfigMap with a `cri` set's image list.
pub fn images_config_map_name(set: &str) -> String {
    bounded_name("lifeboat-prepull-", set)
}

/// The name of the init container that pulls `image`, the `position`-th (from 0) of the
/// workload's sorted images: `pull-<position + 1>-<last repository segment>`, made a DNS label
/// of at most 63 characters. The number keeps names unique when segments repeat
/// (`base/python`, `runtime/python`) or are cut.
pub fn pull_container_name(position: usize, image: &Image) -> String {
    let prefix = format!("pull-{}", position + 1);
    let segment = image.repository().rsplit('/').next().unwrap_or_default();
    let mut segment = sanitise(segment);
    let room = MAX_LENGTH - prefix.len() - 1;
    segment = cut(&segment, room).trim_end_matches('-').to_string();
    if segment.is_empty() { prefix } else { format!("{prefix}-{segment}") }
}

/// The text of [`IMAGES_KEY`]: one pinned reference per line, sorted, each line ending in `\n`.
pub fn images_text(w: &Workload) -> String {
    let mut references: Vec<&str> = w.images.iter().map(|i| i.reference.as_str()).collect();
    references.sort_unstable();
    references.dedup();
    references.iter().map(|r| format!("{r}\n")).collect()
}

/// Names, label values and the names of containers: DNS labels at most this long.
const MAX_LENGTH: usize = 63;
/// `-` and the 8 hex digits of [`short_hash`].
const HASH_SUFFIX: usize = 9;
/// Who the `kubelet` pods run as: `nobody`, a user no image needs to know.
const NOBODY: i64 = 65534;
/// The no-op's place in the pods' shared volume.
const VOLUME_NOOP: &str = "/lifeboat/noop";
const PULL_SECRET_DIR: &str = "/etc/lifeboat/pull-secrets";

/// `prefix` + `name` when that is a DNS label of at most 63 characters; else its characters
/// made valid and cut, followed by a hash of `name`, so that different names stay different.
fn bounded_name(prefix: &str, name: &str) -> String {
    let whole = format!("{prefix}{name}");
    if is_dns_label(&whole) {
        return whole;
    }
    let kept = sanitise(&whole);
    let kept = cut(&kept, MAX_LENGTH - HASH_SUFFIX).trim_end_matches('-');
    format!("{kept}-{}", short_hash(name))
}

/// At most 63 lowercase letters, digits and `-`, starting and ending with a letter or digit.
fn is_dns_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_LENGTH
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// Lowercase letters, digits and single `-`, neither first nor last; anything else becomes `-`.
fn sanitise(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars().map(|c| c.to_ascii_lowercase()) {
        let c = if c.is_ascii_lowercase() || c.is_ascii_digit() { c } else { '-' };
        if !(c == '-' && (out.is_empty() || out.ends_with('-'))) {
            out.push(c);
        }
    }
    out.trim_end_matches('-').to_string()
}

/// At most `max` bytes of ASCII `text`.
fn cut(text: &str, max: usize) -> &str {
    &text[..text.len().min(max)]
}

/// The first 8 hex digits of the SHA-256 of `text`.
fn short_hash(text: &str) -> String {
    Sha256::digest(text.as_bytes()).iter().take(4).map(|b| format!("{b:02x}")).collect()
}

fn labels(w: &Workload) -> BTreeMap<String, String> {
    let mut labels = selector_labels(&w.set);
    labels.insert(COMPONENT_LABEL.into(), component(w.method).into());
    labels.insert(NAME_LABEL.into(), "lifeboat".into());
    labels.insert(INSTANCE_LABEL.into(), set_label_value(&w.set));
    labels.insert(PART_OF_LABEL.into(), "lifeboat".into());
    labels
}

/// What a DaemonSet selects its pods by: the set's labels and the component, so that the two
/// DaemonSets of a set that changes method never claim each other's pods, even in one namespace.
fn pod_selector(w: &Workload) -> LabelSelector {
    let mut labels = selector_labels(&w.set);
    labels.insert(COMPONENT_LABEL.into(), component(w.method).into());
    LabelSelector { match_labels: Some(labels), match_expressions: None }
}

fn metadata(name: String, namespace: &str, w: &Workload) -> ObjectMeta {
    ObjectMeta { name: Some(name), namespace: Some(namespace.into()), labels: Some(labels(w)), ..Default::default() }
}

fn quantities(pairs: &[(&str, &str)]) -> Option<BTreeMap<String, Quantity>> {
    Some(pairs.iter().map(|(k, v)| (k.to_string(), Quantity(v.to_string()))).collect())
}

fn toleration(t: &Toleration) -> KubeToleration {
    KubeToleration {
        key: t.key.clone(),
        operator: t.operator.map(|o| {
            match o {
                TolerationOperator::Exists => "Exists",
                TolerationOperator::Equal => "Equal",
            }
            .to_string()
        }),
        value: t.value.clone(),
        effect: t.effect.map(|e| {
            match e {
                TaintEffect::NoSchedule => "NoSchedule",
                TaintEffect::PreferNoSchedule => "PreferNoSchedule",
                TaintEffect::NoExecute => "NoExecute",
            }
            .to_string()
        }),
        toleration_seconds: t.toleration_seconds,
    }
}

/// The pod settings both methods share: where it runs, how urgently, with which pull secrets.
fn pod_placement(w: &Workload) -> PodSpec {
    // Both the no-op and the node agent are Linux programs, whatever the set selects.
    let mut node_selector = w.node_selector.clone();
    node_selector.insert("kubernetes.io/os".into(), "linux".into());
    PodSpec {
        node_selector: Some(node_selector),
        tolerations: (!w.tolerations.is_empty()).then(|| w.tolerations.iter().map(toleration).collect()),
        image_pull_secrets: (!w.pull_secrets.is_empty())
            .then(|| w.pull_secrets.iter().map(|name| LocalObjectReference { name: name.clone() }).collect()),
        priority_class_name: w.priority_class_name.clone(),
        enable_service_links: Some(false),
        ..Default::default()
    }
}

fn mount(name: &str, path: &str) -> VolumeMount {
    VolumeMount { name: name.into(), mount_path: path.into(), read_only: Some(true), ..Default::default() }
}

/// What the `restricted` Pod Security Standard asks of every container, and a read-only root.
fn restricted_container() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        privileged: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), add: None }),
        ..Default::default()
    }
}

fn runtime_default_seccomp() -> Option<SeccompProfile> {
    Some(SeccompProfile { type_: "RuntimeDefault".into(), localhost_profile: None })
}

fn kubelet_daemon_set(w: &Workload, s: &RenderSettings) -> DaemonSet {
    const VOLUME: &str = "lifeboat";
    // The no-op and the pause are tiny; the limit only bounds a runaway. Pulling is the
    // runtime's work and is not charged to the containers.
    let resources = ResourceRequirements {
        requests: quantities(&[("cpu", "1m"), ("memory", "8Mi")]),
        limits: quantities(&[("memory", "32Mi")]),
        ..Default::default()
    };
    let own = |name: &str, args: &[&str], writable: bool| Container {
        name: name.into(),
        image: Some(s.lifeboat_image.clone()),
        image_pull_policy: Some("IfNotPresent".into()),
        command: Some(std::iter::once(NOOP_PATH).chain(args.iter().copied()).map(String::from).collect()),
        resources: Some(resources.clone()),
        security_context: Some(restricted_container()),
        volume_mounts: writable.then(|| vec![VolumeMount { read_only: None, ..mount(VOLUME, "/lifeboat") }]),
        ..Default::default()
    };
    let mut init_containers = vec![own("install-noop", &["install", VOLUME_NOOP], true)];
    // `command` replaces the image's entrypoint and, with no `args`, its CMD too: every image
    // runs only the no-op, which needs nothing from it (no shell, no libc, no `true`).
    init_containers.extend(w.images.iter().enumerate().map(|(position, image)| Container {
        name: pull_container_name(position, image),
        image: Some(image.reference.clone()),
        image_pull_policy: Some("IfNotPresent".into()),
        command: Some(vec![VOLUME_NOOP.into()]),
        resources: Some(resources.clone()),
        security_context: Some(restricted_container()),
        volume_mounts: Some(vec![mount(VOLUME, "/lifeboat")]),
        ..Default::default()
    }));
    let spec = PodSpec {
        automount_service_account_token: Some(false),
        // The pause exits at once on SIGTERM.
        termination_grace_period_seconds: Some(5),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(NOBODY),
            run_as_group: Some(NOBODY),
            seccomp_profile: runtime_default_seccomp(),
            ..Default::default()
        }),
        init_containers: Some(init_containers),
        containers: vec![own("idle", &["pause"], false)],
        volumes: Some(vec![Volume {
            name: VOLUME.into(),
            empty_dir: Some(EmptyDirVolumeSource { size_limit: Some(Quantity("8Mi".into())), ..Default::default() }),
            ..Default::default()
        }]),
        ..pod_placement(w)
    };
    // On a change, a node gets its new pod (which pulls the new images) before the old one
    // goes, so the old images stay in use, out of reach of kubelet's image GC, until the new
    // ones are there; at most a tenth of the nodes pull at once.
    let strategy = rolling_update(IntOrString::String("10%".into()), IntOrString::Int(0));
    daemon_set(w, &s.namespace, strategy, "idle", None, spec)
}

fn images_config_map(w: &Workload, s: &RenderSettings) -> ConfigMap {
    ConfigMap {
        metadata: metadata(images_config_map_name(&w.set), &s.agent_namespace, w),
        data: Some(BTreeMap::from([(IMAGES_KEY.to_string(), images_text(w))])),
        ..Default::default()
    }
}

fn agent_daemon_set(w: &Workload, s: &RenderSettings, images: &ConfigMap) -> DaemonSet {
    let (mounts, volumes) = agent_volumes(w, images);
    let text = images.data.as_ref().and_then(|d| d.get(IMAGES_KEY)).map_or("", String::as_str);
    let images_hash: String = Sha256::digest(text.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
    let field = |name: &str, path: &str| EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector { field_path: path.into(), api_version: None }),
            ..Default::default()
        }),
        value: None,
    };
    let agent = Container {
        name: "agent".into(),
        image: Some(s.lifeboat_image.clone()),
        image_pull_policy: Some("IfNotPresent".into()),
        args: Some(agent_args(w)),
        env: Some(vec![
            field("LIFEBOAT_NODE_NAME", "spec.nodeName"),
            field("LIFEBOAT_NAMESPACE", "metadata.namespace"),
        ]),
        resources: Some(ResourceRequirements {
            requests: quantities(&[("cpu", "10m"), ("memory", "32Mi")]),
            limits: quantities(&[("memory", "128Mi")]),
            ..Default::default()
        }),
        // Root, because the runtime socket is root's; nothing else: no capabilities (root still
        // owns the socket and the kubelet's file), a read-only root, no privilege escalation.
        security_context: Some(SecurityContext { run_as_non_root: Some(false), ..restricted_container() }),
        volume_mounts: Some(mounts),
        ..Default::default()
    };
    let spec = PodSpec {
        service_account_name: Some(NODE_AGENT_SERVICE_ACCOUNT.into()),
        // It writes its node's inventory ConfigMap through the API.
        automount_service_account_token: Some(true),
        termination_grace_period_seconds: Some(10),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(false),
            run_as_user: Some(0),
            run_as_group: Some(0),
            seccomp_profile: runtime_default_seccomp(),
            ..Default::default()
        }),
        containers: vec![agent],
        volumes: Some(volumes),
        ..pod_placement(w)
    };
    // The images stay on the node while an agent restarts, so agents are replaced in place; a
    // changed image list (the hash) rolls them a tenth of the nodes at a time, rather than every
    // node asking the mirror at once when the kubelet refreshes the mounted file.
    let strategy = rolling_update(IntOrString::Int(0), IntOrString::String("10%".into()));
    daemon_set(w, &s.agent_namespace, strategy, "agent", Some(images_hash), spec)
}

/// The node agent's command line.
fn agent_args(w: &Workload) -> Vec<String> {
    let parallel = w.parallel_pulls.to_string();
    let mut args = vec![
        "node-agent",
        "--set",
        &w.set,
        "--images-file",
        "/etc/lifeboat/images/images.txt",
        "--cri-socket",
        "/run/lifeboat/cri.sock",
        "--parallel",
        &parallel,
        "--kubelet-config",
        "/etc/lifeboat/kubelet/config.yaml",
    ];
    if !w.pull_secrets.is_empty() {
        args.extend(["--pull-secret-dir", PULL_SECRET_DIR]);
    }
    args.into_iter().map(String::from).collect()
}

/// What the node agent mounts: its image list, the runtime socket, the kubelet's config file,
/// and each pull secret.
fn agent_volumes(w: &Workload, images: &ConfigMap) -> (Vec<VolumeMount>, Vec<Volume>) {
    let host_path = |name: &str, path: &str, type_: &str| Volume {
        name: name.into(),
        host_path: Some(HostPathVolumeSource { path: path.into(), type_: Some(type_.into()) }),
        ..Default::default()
    };
    let mut mounts = vec![
        mount("images", "/etc/lifeboat/images"),
        mount("cri-socket", "/run/lifeboat/cri.sock"),
        mount("kubelet-config", "/etc/lifeboat/kubelet/config.yaml"),
    ];
    let mut volumes = vec![
        Volume {
            name: "images".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: images.metadata.name.clone().unwrap_or_default(),
                ..Default::default()
            }),
            ..Default::default()
        },
        // Without the socket there is nothing to pull with: type Socket keeps the pod waiting.
        host_path("cri-socket", &w.cri_socket, "Socket"),
        // FileOrCreate, so that a node without the file still runs the agent: with `File` the
        // kubelet refuses to start the pod, and with no type the runtime creates a missing path as
        // a directory (a `config.yaml` directory a later kubelet could trip over). FileOrCreate
        // has the kubelet create an empty file (mode 0644) where none exists and leaves an
        // existing one alone; the agent then reports the GC settings as unreadable and pulls. It
        // does not create /var/lib/kubelet itself, which every kubelet with the default root
        // directory has.
        host_path("kubelet-config", KUBELET_CONFIG_HOST_PATH, "FileOrCreate"),
    ];
    for (i, secret) in w.pull_secrets.iter().enumerate() {
        let name = format!("pull-secret-{}", i + 1);
        mounts.push(mount(&name, &format!("{PULL_SECRET_DIR}/{secret}")));
        volumes.push(Volume {
            name,
            // Root-only; optional like imagePullSecrets, so a missing Secret shows as failed pulls
            // in the node's inventory instead of an agent that never starts.
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret.clone()),
                default_mode: Some(0o400),
                optional: Some(true),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    (mounts, volumes)
}

/// A set's DaemonSet in `namespace`: its pods labelled and selected as the set's, the named
/// container the default one for `kubectl`, and, when given, the hash of the images it pulls
/// on the pod template (so a changed list rolls the pods).
fn daemon_set(
    w: &Workload,
    namespace: &str,
    strategy: Option<DaemonSetUpdateStrategy>,
    container: &str,
    images_hash: Option<String>,
    spec: PodSpec,
) -> DaemonSet {
    let mut annotations = BTreeMap::from([("kubectl.kubernetes.io/default-container".to_string(), container.into())]);
    if let Some(hash) = images_hash {
        annotations.insert(IMAGES_HASH_ANNOTATION.to_string(), hash);
    }
    DaemonSet {
        metadata: metadata(daemon_set_name(w), namespace, w),
        spec: DaemonSetSpec {
            selector: pod_selector(w),
            revision_history_limit: Some(3),
            update_strategy: strategy,
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(w)),
                    annotations: Some(annotations),
                    ..Default::default()
                }),
                spec: Some(spec),
            },
            ..Default::default()
        },
        status: None,
    }
}

/// A RollingUpdate strategy with these bounds.
fn rolling_update(max_surge: IntOrString, max_unavailable: IntOrString) -> Option<DaemonSetUpdateStrategy> {
    Some(DaemonSetUpdateStrategy {
        type_: Some("RollingUpdate".into()),
        rolling_update: Some(RollingUpdateDaemonSet {
            max_surge: Some(max_surge),
            max_unavailable: Some(max_unavailable),
        }),
    })
}

#[cfg(test)]
mod tests;

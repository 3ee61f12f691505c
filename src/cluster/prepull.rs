//! Pre-pull in the cluster: reads nodes, pre-pull pods, node-agent inventories and kubelet
//! configurations, and applies or deletes the DaemonSets the renderer makes.
//!
//! Objects are written with server-side apply under the field manager `lifeboat`, with force:
//! Lifeboat owns every object it labels, and a hand edit to one is taken back on the next pass.
//! Each DaemonSet carries the set's full name and a hash of what was rendered, so the plan can
//! tell create, update and unchanged apart without comparing defaulted fields, and so that
//! DaemonSets of sets that left the desired state are found (by label) and deleted.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use sha2::{Digest as _, Sha256};

use super::error::{ClusterError, ErrorKind};
use super::render::{self, MANAGED_BY_LABEL, RenderSettings, Rendered};
use crate::prepull::coverage::{ContainerFacts, NodeFacts, PodFacts, Taint};
use crate::prepull::{Existing, GcSettings, Inventory, Workload};

/// Kubelet configurations read at once, and how long each may take.
pub const CONFIGZ_AT_ONCE: usize = 8;
pub const CONFIGZ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The field manager of every server-side apply.
pub const FIELD_MANAGER: &str = "lifeboat";
/// The annotation holding the PrePullSet's name (labels may carry a shortened form).
pub const SET_ANNOTATION: &str = "lifeboat.dev/pre-pull-set";
/// The annotation holding the hash of the rendered objects.
pub const HASH_ANNOTATION: &str = "lifeboat.dev/rendered-hash";

/// What the renderer makes for `workload`, and its hash.
pub fn desired(workload: &Workload, settings: &RenderSettings) -> (Rendered, String) {
    let rendered = render::render(workload, settings);
    let mut hasher = Sha256::new();
    hasher.update(serde_json::to_vec(&rendered.daemon_set).expect("a DaemonSet serializes"));
    if let Some(cm) = &rendered.config_map {
        hasher.update(serde_json::to_vec(cm).expect("a ConfigMap serializes"));
    }
    let hash = format!("{:x}", hasher.finalize())[..16].to_string();
    (rendered, hash)
}

/// The cluster side of pre-pull.
#[derive(Clone)]
pub struct PrePullCluster {
    client: kube::Client,
    pub settings: RenderSettings,
    /// The API server's URL, said in every plan so nobody applies to the wrong cluster unawares.
    pub url: String,
}

impl PrePullCluster {
    pub fn new(client: kube::Client, settings: RenderSettings, url: String) -> PrePullCluster {
        PrePullCluster { client, settings, url }
    }

    /// The cluster of the kubeconfig or the pod's service account, or why there is none.
    pub async fn connect(settings: RenderSettings) -> Result<PrePullCluster, String> {
        let (client, url) = super::cluster_client().await.map_err(|e| format!("no cluster configured ({e:#})"))?;
        Ok(PrePullCluster::new(client, settings, url))
    }

    fn namespaces(&self) -> Vec<&str> {
        let mut namespaces = vec![self.settings.namespace.as_str()];
        if self.settings.agent_namespace != self.settings.namespace {
            namespaces.push(self.settings.agent_namespace.as_str());
        }
        namespaces
    }

    /// Every DaemonSet Lifeboat made for a PrePullSet, in both namespaces, with the images each
    /// pulls. A refusal to list the node agents' namespace only matters when `cri` sets are
    /// wanted: a kubelet-only install need not grant it.
    pub async fn existing(&self, cri_wanted: bool) -> Result<Vec<Existing>, ClusterError> {
        let mut out = Vec::new();
        for namespace in self.namespaces() {
            let api: Api<DaemonSet> = Api::namespaced(self.client.clone(), namespace);
            let params = ListParams::default().labels(&format!("{MANAGED_BY_LABEL}=lifeboat,{}", render::SET_LABEL));
            let list = match api.list(&params).await {
                Ok(list) => list,
                Err(e) => {
                    let e = ClusterError::from_kube(format!("listing pre-pull DaemonSets in {namespace}"), &e);
                    let agents = namespace == self.settings.agent_namespace && namespace != self.settings.namespace;
                    if agents && e.kind == ErrorKind::Unauthorized && !cri_wanted {
                        tracing::debug!(error = %e, "the node agents' namespace is not readable; no cri set is wanted");
                        continue;
                    }
                    if agents && e.kind == ErrorKind::Unauthorized {
                        return Err(ClusterError::new(
                            e.kind,
                            e.operation,
                            format!(
                                "{}; method cri needs deploy/node-agent (or --node-agent-namespace naming a namespace \
                                 Lifeboat may manage)",
                                e.message
                            ),
                        ));
                    }
                    return Err(e);
                }
            };
            for ds in list.items {
                let annotations = ds.metadata.annotations.clone().unwrap_or_default();
                let labels = ds.metadata.labels.clone().unwrap_or_default();
                let Some(set) = annotations.get(SET_ANNOTATION).or_else(|| labels.get(render::SET_LABEL)) else {
                    continue;
                };
                let agent =
                    labels.get(render::COMPONENT_LABEL).map(String::as_str) == Some(render::COMPONENT_NODE_AGENT);
                let images = if agent {
                    self.listed_images(namespace, set).await?
                } else {
                    let init = ds.spec.template.spec.as_ref().and_then(|s| s.init_containers.clone());
                    init.unwrap_or_default().into_iter().filter_map(|c| c.image).filter(|i| i.contains('@')).collect()
                };
                out.push(Existing {
                    set: set.clone(),
                    namespace: namespace.to_string(),
                    name: ds.metadata.name.clone().unwrap_or_default(),
                    hash: annotations.get(HASH_ANNOTATION).cloned(),
                    node_agent: agent,
                    images,
                });
            }
        }
        out.sort_by(|a, b| (&a.set, &a.name).cmp(&(&b.set, &b.name)));
        Ok(out)
    }

    /// The images a `cri` set's ConfigMap lists.
    async fn listed_images(
        &self,
        namespace: &str,
        set: &str,
    ) -> Result<std::collections::BTreeSet<String>, ClusterError> {
        let name = render::images_config_map_name(set);
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), namespace);
        let cm = api
            .get_opt(&name)
            .await
            .map_err(|e| ClusterError::from_kube(format!("reading ConfigMap {namespace}/{name}"), &e))?;
        let text = cm.and_then(|c| c.data).and_then(|d| d.get(render::IMAGES_KEY).cloned()).unwrap_or_default();
        Ok(text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(str::to_string).collect())
    }

    /// Applies what `workload` renders to (the ConfigMap first, so the agent finds its list).
    pub async fn apply(&self, workload: &Workload) -> Result<(), ClusterError> {
        let (rendered, hash) = desired(workload, &self.settings);
        let params = PatchParams::apply(FIELD_MANAGER).force();
        if let Some(mut cm) = rendered.config_map {
            let (namespace, name) = names(&cm.metadata);
            annotate(&mut cm.metadata, &workload.set, &hash);
            let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), &namespace);
            api.patch(&name, &params, &Patch::Apply(&cm))
                .await
                .map_err(|e| ClusterError::from_kube(format!("applying ConfigMap {namespace}/{name}"), &e))?;
        }
        let mut ds = rendered.daemon_set;
        let (namespace, name) = names(&ds.metadata);
        annotate(&mut ds.metadata, &workload.set, &hash);
        let api: Api<DaemonSet> = Api::namespaced(self.client.clone(), &namespace);
        api.patch(&name, &params, &Patch::Apply(&ds))
            .await
            .map_err(|e| ClusterError::from_kube(format!("applying DaemonSet {namespace}/{name}"), &e))?;
        Ok(())
    }

    /// Deletes a set's DaemonSet and, for a node-agent DaemonSet, the ConfigMaps Lifeboat made
    /// beside it (image list, node inventories). The DaemonSet's pods go with it (the API
    /// server's garbage collector). A kubelet DaemonSet has no ConfigMaps, so its deletion
    /// never touches one, not even when the same set now runs agents in the same namespace.
    pub async fn delete(&self, existing: &Existing) -> Result<(), ClusterError> {
        let api: Api<DaemonSet> = Api::namespaced(self.client.clone(), &existing.namespace);
        match api.delete(&existing.name, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(e) => {
                let e =
                    ClusterError::from_kube(format!("deleting DaemonSet {}/{}", existing.namespace, existing.name), &e);
                if e.kind != ErrorKind::NotFound {
                    return Err(e);
                }
            }
        }
        if !existing.node_agent {
            return Ok(());
        }
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), &existing.namespace);
        let selector =
            format!("{MANAGED_BY_LABEL}=lifeboat,{}={}", render::SET_LABEL, render::set_label_value(&existing.set));
        let list = api
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|e| ClusterError::from_kube(format!("listing ConfigMaps of {}", existing.set), &e))?;
        for cm in list.items {
            let name = cm.metadata.name.unwrap_or_default();
            if let Err(e) = api.delete(&name, &DeleteParams::default()).await {
                let e = ClusterError::from_kube(format!("deleting ConfigMap {}/{name}", existing.namespace), &e);
                if e.kind != ErrorKind::NotFound {
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Every node, as the API server describes it.
    pub async fn nodes(&self) -> Result<Vec<NodeFacts>, ClusterError> {
        let api: Api<Node> = Api::all(self.client.clone());
        let list = api.list(&ListParams::default()).await.map_err(|e| ClusterError::from_kube("listing nodes", &e))?;
        let mut nodes: Vec<NodeFacts> = list.items.iter().map(node_facts).collect();
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(nodes)
    }

    /// Reads the kubelet GC settings of `wanted` nodes (Ready ones only: the node proxy cannot
    /// reach the others) through the node proxy's `configz`, which needs `nodes/proxy` get,
    /// [`CONFIGZ_AT_ONCE`] at a time, each within [`CONFIGZ_TIMEOUT`]. A refusal is recorded
    /// as the reason for every node, not as a failure of the pass.
    pub async fn read_kubelet_gc(&self, nodes: &mut [NodeFacts], wanted: &std::collections::BTreeSet<String>) {
        use futures_util::StreamExt as _;
        let names: Vec<String> =
            nodes.iter().filter(|n| n.ready && wanted.contains(&n.name)).map(|n| n.name.clone()).collect();
        let results: Vec<(String, Result<GcSettings, ClusterError>)> = futures_util::stream::iter(names)
            .map(|name| async move {
                let read = tokio::time::timeout(CONFIGZ_TIMEOUT, self.kubelet_gc(&name)).await.unwrap_or_else(|_| {
                    Err(ClusterError::new(
                        ErrorKind::Transient,
                        format!("reading the kubelet configuration of node {name}"),
                        format!("no answer within {} s", CONFIGZ_TIMEOUT.as_secs()),
                    ))
                });
                (name, read)
            })
            .buffer_unordered(CONFIGZ_AT_ONCE)
            .collect()
            .await;
        let refused = results.iter().find_map(|(_, r)| match r {
            Err(e) if e.kind == ErrorKind::Unauthorized => Some(format!(
                "reading the kubelet configuration needs `get` on nodes/proxy, which Lifeboat is not granted ({}); \
                 grant it with deploy/kubelet-configz, or use method cri",
                e.message
            )),
            _ => None,
        });
        for node in nodes.iter_mut() {
            if !wanted.contains(&node.name) {
                continue;
            }
            let result = results.iter().find(|(n, _)| *n == node.name).map(|(_, r)| r);
            node.gc = Some(match (&refused, result) {
                (Some(reason), _) => Err(reason.clone()),
                (None, Some(Ok(settings))) => Ok(settings.clone()),
                // The API server's words vary from attempt to attempt; the status keeps a stable one.
                (None, Some(Err(e))) => {
                    tracing::debug!(node = %node.name, error = %e, "kubelet configuration not read");
                    Err(format!("the kubelet's configz could not be read ({:?})", e.kind).to_lowercase())
                }
                (None, None) => Err("the node is not Ready, so its kubelet cannot be asked".into()),
            });
        }
    }

    async fn kubelet_gc(&self, node: &str) -> Result<GcSettings, ClusterError> {
        let operation = format!("reading the kubelet configuration of node {node}");
        let request = http::Request::get(format!("/api/v1/nodes/{node}/proxy/configz"))
            .body(Vec::new())
            .map_err(|e| ClusterError::new(ErrorKind::Permanent, &operation, e.to_string()))?;
        let text = self.client.request_text(request).await.map_err(|e| ClusterError::from_kube(&operation, &e))?;
        let value: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| ClusterError::new(ErrorKind::Permanent, &operation, format!("configz is not JSON: {e}")))?;
        GcSettings::from_kubelet_config(&value).map_err(|e| ClusterError::new(ErrorKind::Permanent, &operation, e))
    }

    /// The pods of a set's DaemonSet, found by its labels.
    pub async fn pods(&self, workload: &Workload) -> Result<Vec<PodFacts>, ClusterError> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &self.settings.namespace);
        let selector = render::selector_labels(&workload.set)
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        let list = api
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|e| ClusterError::from_kube(format!("listing the pre-pull pods of {}", workload.set), &e))?;
        // An evicted or finished pod's containers are gone from the node, so they protect no
        // image; a terminating one is about to be.
        let live = |p: &&Pod| {
            let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
            p.metadata.deletion_timestamp.is_none() && !matches!(phase, Some("Failed" | "Succeeded"))
        };
        Ok(list.items.iter().filter(live).map(pod_facts).collect())
    }

    /// What the node agents of a `cri` set reported.
    pub async fn inventories(&self, workload: &Workload) -> Result<Vec<Inventory>, ClusterError> {
        let read =
            super::inventory::read_inventories(&self.client, &self.settings.agent_namespace, &workload.set).await?;
        for bad in &read.unreadable {
            tracing::warn!(config_map = %bad.config_map, reason = %bad.reason, "a node inventory cannot be read");
        }
        Ok(read.inventories)
    }
}

fn names(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> (String, String) {
    (meta.namespace.clone().unwrap_or_default(), meta.name.clone().unwrap_or_default())
}

fn annotate(meta: &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta, set: &str, hash: &str) {
    let annotations = meta.annotations.get_or_insert_with(BTreeMap::new);
    annotations.insert(SET_ANNOTATION.into(), set.into());
    annotations.insert(HASH_ANNOTATION.into(), hash.into());
}

fn node_facts(node: &Node) -> NodeFacts {
    let spec = node.spec.clone().unwrap_or_default();
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    NodeFacts {
        name: node.metadata.name.clone().unwrap_or_default(),
        labels: node.metadata.labels.clone().unwrap_or_default(),
        taints: spec
            .taints
            .unwrap_or_default()
            .into_iter()
            .map(|t| Taint { key: t.key, value: t.value, effect: t.effect })
            .collect(),
        ready,
        gc: None,
    }
}

fn pod_facts(pod: &Pod) -> PodFacts {
    let spec = pod.spec.clone().unwrap_or_default();
    let statuses = pod.status.as_ref().and_then(|s| s.init_container_statuses.clone()).unwrap_or_default();
    let containers = spec
        .init_containers
        .unwrap_or_default()
        .into_iter()
        .map(|c| {
            let status = statuses.iter().find(|s| s.name == c.name);
            let state = status.and_then(|s| s.state.clone()).unwrap_or_default();
            let ran = state.running.is_some() || state.terminated.as_ref().is_some_and(|t| t.exit_code == 0);
            // Only the reason: kubelet's message changes with every attempt, and ErrImagePull
            // alternates with ImagePullBackOff, which would make the status change every poll.
            let waiting = state.waiting.as_ref().and_then(|w| {
                let reason = w.reason.clone()?;
                match reason.as_str() {
                    "PodInitializing" => None,
                    "ErrImagePull" | "ImagePullBackOff" => Some(
                        "the kubelet cannot pull it (ErrImagePull/ImagePullBackOff; `kubectl describe pod` tells why)"
                            .to_string(),
                    ),
                    _ => Some(reason),
                }
            });
            ContainerFacts {
                image: c.image.unwrap_or_default(),
                image_id: status.map(|s| s.image_id.clone()).filter(|i| !i.is_empty()),
                ran,
                waiting,
            }
        })
        .collect();
    PodFacts { node: spec.node_name, containers }
}

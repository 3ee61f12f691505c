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
}

impl PrePullCluster {
    pub fn new(client: kube::Client, settings: RenderSettings) -> PrePullCluster {
        PrePullCluster { client, settings }
    }

    fn namespaces(&self) -> Vec<&str> {
        let mut namespaces = vec![self.settings.namespace.as_str()];
        if self.settings.agent_namespace != self.settings.namespace {
            namespaces.push(self.settings.agent_namespace.as_str());
        }
        namespaces
    }

    /// Every DaemonSet Lifeboat made for a PrePullSet, in both namespaces.
    pub async fn existing(&self) -> Result<Vec<Existing>, ClusterError> {
        let mut out = Vec::new();
        for namespace in self.namespaces() {
            let api: Api<DaemonSet> = Api::namespaced(self.client.clone(), namespace);
            let params = ListParams::default().labels(&format!("{MANAGED_BY_LABEL}=lifeboat,{}", render::SET_LABEL));
            let list = api
                .list(&params)
                .await
                .map_err(|e| ClusterError::from_kube(format!("listing pre-pull DaemonSets in {namespace}"), &e))?;
            for ds in list.items {
                let annotations = ds.metadata.annotations.clone().unwrap_or_default();
                let labels = ds.metadata.labels.clone().unwrap_or_default();
                let Some(set) = annotations.get(SET_ANNOTATION).or_else(|| labels.get(render::SET_LABEL)) else {
                    continue;
                };
                let status = ds.status.clone().unwrap_or_default();
                out.push(Existing {
                    set: set.clone(),
                    namespace: namespace.to_string(),
                    name: ds.metadata.name.clone().unwrap_or_default(),
                    hash: annotations.get(HASH_ANNOTATION).cloned(),
                    desired_pods: status.desired_number_scheduled,
                    ready_pods: status.number_ready,
                });
            }
        }
        out.sort_by(|a, b| (&a.set, &a.name).cmp(&(&b.set, &b.name)));
        Ok(out)
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

    /// Deletes a set's DaemonSet and the ConfigMaps Lifeboat made for it (image list, node
    /// inventories). The DaemonSet's pods go with it (the API server's garbage collector).
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

    /// Every node, with its kubelet GC settings when `kubelet_config` asks for them (through
    /// the node proxy's `configz`, which needs `nodes/proxy` get). A refusal is recorded once
    /// per node as the reason, not as a failure of the pass.
    pub async fn nodes(&self, kubelet_config: bool) -> Result<Vec<NodeFacts>, ClusterError> {
        let api: Api<Node> = Api::all(self.client.clone());
        let list = api.list(&ListParams::default()).await.map_err(|e| ClusterError::from_kube("listing nodes", &e))?;
        let mut nodes: Vec<NodeFacts> = list.items.iter().map(node_facts).collect();
        if kubelet_config {
            let mut refused: Option<String> = None;
            for node in &mut nodes {
                node.gc = Some(match &refused {
                    Some(reason) => Err(reason.clone()),
                    None => match self.kubelet_gc(&node.name).await {
                        Ok(settings) => Ok(settings),
                        Err(e) => {
                            let reason = match e.kind {
                                ErrorKind::Unauthorized => {
                                    let r = format!(
                                        "reading the kubelet configuration needs `get` on nodes/proxy, which Lifeboat \
                                         is not granted ({}); grant it (deploy/README.md, RBAC) or use method cri",
                                        e.message
                                    );
                                    refused = Some(r.clone());
                                    r
                                }
                                _ => e.to_string(),
                            };
                            Err(reason)
                        }
                    },
                });
            }
        }
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(nodes)
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
        Ok(list.items.iter().map(pod_facts).collect())
    }

    /// What the node agents of a `cri` set reported.
    pub async fn inventories(&self, workload: &Workload) -> Result<Vec<Inventory>, ClusterError> {
        super::inventory::read_inventories(&self.client, &self.settings.agent_namespace, &workload.set).await
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
            let waiting = state.waiting.as_ref().and_then(|w| {
                let reason = w.reason.clone()?;
                (reason != "PodInitializing").then(|| match &w.message {
                    Some(m) => format!("{reason}: {m}"),
                    None => reason,
                })
            });
            ContainerFacts {
                name: c.name,
                image: c.image.unwrap_or_default(),
                image_id: status.map(|s| s.image_id.clone()).filter(|i| !i.is_empty()),
                ran,
                waiting,
            }
        })
        .collect();
    PodFacts { name: pod.metadata.name.clone().unwrap_or_default(), node: spec.node_name, containers }
}

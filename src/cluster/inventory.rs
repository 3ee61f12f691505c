//! Node inventories in the cluster: the ConfigMap each `cri` node agent writes for its node and
//! PrePullSet, and the reading of all of a set's inventories back.
//!
//! A ConfigMap rather than a custom resource: there is no CRD to install, upgrade and version
//! next to Lifeboat, the agent needs only plain RBAC on ConfigMaps in its own namespace (`get`,
//! `create` and `update`; readers `list`), and anyone can read an inventory during an incident
//! with `kubectl get configmap -o yaml`. The ConfigMap only carries the document: its content is
//! the JSON of [`Inventory`], whose shape belongs to [`crate::prepull`].
//!
//! The contract, for the agent and its readers:
//! - name `lifeboat-inventory-<set>-<node>` ([`inventory_name`]); when that is longer than 253
//!   characters or not a valid DNS subdomain, or when another set and node already hold the name
//!   (`a-b` + `c` and `a` + `b-c` give the same one), a shortened form ending in a hash of both
//!   names ([`hashed_name`]). Readers find inventories by label, never by name;
//! - labels `app.kubernetes.io/managed-by: lifeboat`, `app.kubernetes.io/component:
//!   node-inventory` and `lifeboat.dev/pre-pull-set: <set>` ([`set_label_value`]: a set name
//!   that is no valid label value, such as one longer than 63 characters, becomes its first 50
//!   characters, a `-` and 12 hex digits of its SHA-256);
//! - annotations `lifeboat.dev/node: <node>` and `lifeboat.dev/pre-pull-set: <set>`, whole;
//! - data key `inventory.json`: the [`Inventory`] as JSON, whose `set` and `node` decide.
//!
//! This module only moves inventories in and out of the API server; it never talks to a
//! container runtime and never decides what an inventory means.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ListParams, PostParams};
use sha2::{Digest as _, Sha256};
use tracing::{debug, info, warn};

use super::error::{ClusterError, ErrorKind};
pub use super::render::{COMPONENT_LABEL, MANAGED_BY, MANAGED_BY_LABEL, SET_LABEL, set_label_value};
use crate::prepull::Inventory;

pub const COMPONENT: &str = "node-inventory";
/// Annotation naming the node of an inventory.
pub const NODE_ANNOTATION: &str = "lifeboat.dev/node";
/// The data key holding the inventory's JSON.
pub const DATA_KEY: &str = "inventory.json";

const PREFIX: &str = "lifeboat-inventory-";

/// The name of the ConfigMap holding `node`'s inventory for `set`: `lifeboat-inventory-<set>-<node>`,
/// or [`hashed_name`] when that is no valid object name.
pub fn inventory_name(set: &str, node: &str) -> String {
    let name = format!("{PREFIX}{set}-{node}");
    if is_dns_subdomain(&name) { name } else { hashed_name(set, node) }
}

/// `lifeboat-inventory-` and as much of `<set>-<node>` as fits (lowercased, every character
/// other than a letter, digit or `-` made a `-`), then `-` and 12 hex digits of the SHA-256 of
/// both names: a valid name of at most 253 characters, different for every set and node.
pub fn hashed_name(set: &str, node: &str) -> String {
    let hash = short_hash(&format!("{set}/{node}"));
    let readable: String = format!("{set}-{node}")
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| if c.is_ascii_lowercase() || c.is_ascii_digit() { c } else { '-' })
        .take(253 - PREFIX.len() - 1 - hash.len())
        .collect();
    let readable = readable.trim_end_matches('-');
    if readable.is_empty() { format!("{PREFIX}{hash}") } else { format!("{PREFIX}{readable}-{hash}") }
}

/// The selector of every inventory of `set`.
pub fn set_selector(set: &str) -> String {
    format!("{MANAGED_BY_LABEL}={MANAGED_BY},{COMPONENT_LABEL}={COMPONENT},{SET_LABEL}={}", set_label_value(set))
}

fn short_hash(text: &str) -> String {
    Sha256::digest(text.as_bytes()).iter().take(6).map(|b| format!("{b:02x}")).collect()
}

/// A DNS-1123 subdomain, as Kubernetes requires of most object names.
fn is_dns_subdomain(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|label| {
            let bytes = label.as_bytes();
            !bytes.is_empty()
                && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
                && bytes[0] != b'-'
                && bytes[bytes.len() - 1] != b'-'
        })
}

/// The ConfigMap holding `inventory`, as it should be.
fn config_map(namespace: &str, name: &str, inventory: &Inventory) -> ConfigMap {
    let json = serde_json::to_string_pretty(inventory).expect("an inventory serializes");
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(namespace.to_string()),
            labels: Some(BTreeMap::from([
                (MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string()),
                (COMPONENT_LABEL.to_string(), COMPONENT.to_string()),
                (SET_LABEL.to_string(), set_label_value(&inventory.set)),
            ])),
            annotations: Some(BTreeMap::from([
                (NODE_ANNOTATION.to_string(), inventory.node.clone()),
                (SET_LABEL.to_string(), inventory.set.clone()),
            ])),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(DATA_KEY.to_string(), json)])),
        ..ConfigMap::default()
    }
}

/// Where a node agent reports its inventories: the cluster it runs in, and a namespace.
pub struct Reporter {
    client: kube::Client,
    namespace: String,
}

impl Reporter {
    /// The cluster of the pod's service account (or the kubeconfig).
    pub async fn connect(namespace: String) -> anyhow::Result<Reporter> {
        Ok(Reporter { client: super::in_cluster_client().await?, namespace })
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// [`publish`]es one inventory.
    pub async fn publish(&self, inventory: &Inventory) -> Result<(), ClusterError> {
        publish(&self.client, &self.namespace, inventory).await
    }
}

/// What one attempt at writing did.
enum Written {
    Done,
    /// The name holds the inventory of another set and node.
    Taken,
}

/// Creates or replaces the ConfigMap holding `inventory` in `namespace`: read it, then create it
/// or replace it with the `resourceVersion` read. A write that loses a race (409) is tried once
/// more from the read. Refuses to overwrite a ConfigMap of the same name that Lifeboat does not
/// manage.
pub async fn publish(client: &kube::Client, namespace: &str, inventory: &Inventory) -> Result<(), ClusterError> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let plain = inventory_name(&inventory.set, &inventory.node);
    let mut name = plain.clone();
    let mut retried = false;
    loop {
        match write(&api, namespace, &name, inventory).await {
            Ok(Written::Done) => {
                debug!(namespace, config_map = %name, "published the node inventory");
                return Ok(());
            }
            Ok(Written::Taken) if name == plain => {
                name = hashed_name(&inventory.set, &inventory.node);
                info!(namespace, taken = %plain, config_map = %name, "the inventory's name holds another set and node's inventory; using the hashed name");
            }
            Ok(Written::Taken) => {
                return Err(ClusterError::new(
                    ErrorKind::Permanent,
                    format!("writing the node inventory {namespace}/{name}"),
                    "it holds the inventory of another set and node",
                ));
            }
            Err(e) if e.kind == ErrorKind::Conflict && !retried => {
                retried = true;
                debug!(namespace, config_map = %name, "the inventory changed while writing it; reading it again");
            }
            Err(e) => return Err(e),
        }
    }
}

async fn write(
    api: &Api<ConfigMap>,
    namespace: &str,
    name: &str,
    inventory: &Inventory,
) -> Result<Written, ClusterError> {
    let key = format!("{namespace}/{name}");
    let mut desired = config_map(namespace, name, inventory);
    let existing = api
        .get_opt(name)
        .await
        .map_err(|e| ClusterError::from_kube(format!("reading the node inventory {key}"), &e))?;
    let Some(existing) = existing else {
        api.create(&PostParams::default(), &desired)
            .await
            .map_err(|e| ClusterError::from_kube(format!("creating the node inventory {key}"), &e))?;
        return Ok(Written::Done);
    };
    let labels = existing.metadata.labels.clone().unwrap_or_default();
    if labels.get(MANAGED_BY_LABEL).map(String::as_str) != Some(MANAGED_BY) {
        return Err(ClusterError::new(
            ErrorKind::Permanent,
            format!("writing the node inventory {key}"),
            format!(
                "a ConfigMap of that name exists and is not managed by Lifeboat (no label \
                 {MANAGED_BY_LABEL}={MANAGED_BY}): rename or delete it"
            ),
        ));
    }
    let annotations = existing.metadata.annotations.clone().unwrap_or_default();
    let holder_set = annotations.get(SET_LABEL).or(labels.get(SET_LABEL));
    let holder_node = annotations.get(NODE_ANNOTATION);
    let same_set = holder_set.is_none_or(|s| *s == inventory.set || *s == set_label_value(&inventory.set));
    if !same_set || holder_node.is_some_and(|n| *n != inventory.node) {
        return Ok(Written::Taken);
    }
    desired.metadata.resource_version = existing.metadata.resource_version;
    api.replace(name, &PostParams::default(), &desired)
        .await
        .map_err(|e| ClusterError::from_kube(format!("replacing the node inventory {key}"), &e))?;
    Ok(Written::Done)
}

/// Every inventory of a set, and the ConfigMaps that should hold one and do not.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Inventories {
    /// One per node, sorted by node. Of two for the same node, the newer `observedAt`.
    pub inventories: Vec<Inventory>,
    /// Labelled as the set's inventories, but without a readable `inventory.json`; sorted by name.
    pub unreadable: Vec<UnreadableInventory>,
}

/// A ConfigMap labelled as an inventory whose content could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnreadableInventory {
    /// The ConfigMap's name.
    pub config_map: String,
    /// The node its annotation names, if any.
    pub node: Option<String>,
    /// Why it could not be read, in plain words.
    pub reason: String,
}

/// Lists the inventories of `set` in `namespace` by their labels. An inventory that does not
/// parse is logged and returned in [`Inventories::unreadable`], never dropped silently; a
/// ConfigMap whose inventory names another set (a label value shared through the hash form)
/// is skipped.
pub async fn read_inventories(client: &kube::Client, namespace: &str, set: &str) -> Result<Inventories, ClusterError> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let list = api
        .list(&ListParams::default().labels(&set_selector(set)))
        .await
        .map_err(|e| ClusterError::from_kube(format!("listing the node inventories of {set} in {namespace}"), &e))?;
    let mut by_node: BTreeMap<String, Inventory> = BTreeMap::new();
    let mut unreadable = Vec::new();
    for config_map in list.items {
        let name = config_map.metadata.name.clone().unwrap_or_default();
        let node = config_map.metadata.annotations.as_ref().and_then(|a| a.get(NODE_ANNOTATION)).cloned();
        let parsed = match config_map.data.as_ref().and_then(|d| d.get(DATA_KEY)) {
            None => Err(format!("it has no {DATA_KEY}")),
            Some(text) => serde_json::from_str::<Inventory>(text)
                .map_err(|e| format!("its {DATA_KEY} is not a node inventory: {e}")),
        };
        let inventory = match parsed {
            Ok(inventory) => inventory,
            Err(reason) => {
                warn!(namespace, config_map = %name, %reason, "skipping an unreadable node inventory");
                unreadable.push(UnreadableInventory { config_map: name, node, reason });
                continue;
            }
        };
        if inventory.set != set {
            debug!(namespace, config_map = %name, other = %inventory.set, "skipping the inventory of another set");
            continue;
        }
        match by_node.get(&inventory.node) {
            Some(kept) if kept.observed_at >= inventory.observed_at => {}
            _ => {
                by_node.insert(inventory.node.clone(), inventory);
            }
        }
    }
    unreadable.sort_by(|a: &UnreadableInventory, b| a.config_map.cmp(&b.config_map));
    Ok(Inventories { inventories: by_node.into_values().collect(), unreadable })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::fake::{FakeApiServer, Outage};
    use crate::prepull::{ImageState, InventoryImage};

    const NS: &str = "lifeboat";

    fn inventory(set: &str, node: &str, at: &str) -> Inventory {
        Inventory {
            node: node.to_string(),
            set: set.to_string(),
            observed_at: at.parse().unwrap(),
            runtime: Some("containerd 1.6.20".into()),
            images: vec![InventoryImage { reference: "mirror:5000/app@sha256:aa".into(), state: ImageState::Present }],
            kubelet_gc: None,
            kubelet_gc_error: None,
        }
    }

    fn stored(server: &FakeApiServer, name: &str) -> ConfigMap {
        server.object::<ConfigMap>(Some(NS), name).unwrap_or_else(|| panic!("ConfigMap {name} exists"))
    }

    fn stored_inventory(server: &FakeApiServer, name: &str) -> Inventory {
        serde_json::from_str(&stored(server, name).data.unwrap()[DATA_KEY]).unwrap()
    }

    #[test]
    fn names_are_plain_when_valid_and_hashed_when_not() {
        assert_eq!(inventory_name("critical", "node-1.example"), "lifeboat-inventory-critical-node-1.example");
        let long_node = "n".repeat(250);
        for (set, node) in [("critical", long_node.as_str()), ("Critical", "node-1"), ("critical", "node_1")] {
            let name = inventory_name(set, node);
            assert!(is_dns_subdomain(&name) && name.len() <= 253, "{name}");
            assert!(name.starts_with("lifeboat-inventory-"), "{name}");
            assert_eq!(name, hashed_name(set, node));
        }
        assert_eq!(
            inventory_name("Critical", "node-1"),
            format!("lifeboat-inventory-critical-node-1-{}", short_hash("Critical/node-1"))
        );
        // The plain form is ambiguous; the hashed one is not.
        assert_eq!(inventory_name("a-b", "c"), inventory_name("a", "b-c"));
        assert_ne!(hashed_name("a-b", "c"), hashed_name("a", "b-c"));
    }

    #[test]
    fn inventories_are_selected_by_the_renderers_set_label() {
        let long = format!("{}.images", "x".repeat(60));
        assert!(set_selector(&long).ends_with(&super::super::render::set_label_value(&long)));
        assert_eq!(
            set_selector("critical"),
            "app.kubernetes.io/managed-by=lifeboat,app.kubernetes.io/component=node-inventory,lifeboat.dev/pre-pull-set=critical"
        );
    }

    #[tokio::test]
    async fn publish_creates_then_replaces_the_nodes_config_map() {
        let server = FakeApiServer::new();
        let client = server.client();
        let first = inventory("critical", "node-1", "2026-11-21T10:00:00Z");
        publish(&client, NS, &first).await.unwrap();

        let name = "lifeboat-inventory-critical-node-1";
        let created = stored(&server, name);
        let labels = created.metadata.labels.clone().unwrap();
        assert_eq!(labels[MANAGED_BY_LABEL], "lifeboat");
        assert_eq!(labels[COMPONENT_LABEL], "node-inventory");
        assert_eq!(labels[SET_LABEL], "critical");
        assert_eq!(created.metadata.annotations.clone().unwrap()[NODE_ANNOTATION], "node-1");
        assert_eq!(stored_inventory(&server, name), first);

        let second = inventory("critical", "node-1", "2026-11-21T10:05:00Z");
        publish(&client, NS, &second).await.unwrap();
        let replaced = stored(&server, name);
        assert_ne!(replaced.metadata.resource_version, created.metadata.resource_version);
        assert_eq!(replaced.metadata.uid, created.metadata.uid, "replaced, not recreated");
        assert_eq!(stored_inventory(&server, name), second);
    }

    #[tokio::test]
    async fn two_writers_racing_both_succeed_by_reading_again() {
        let server = FakeApiServer::new();
        let client = server.client();
        publish(&client, NS, &inventory("critical", "node-1", "2026-11-21T10:00:00Z")).await.unwrap();
        // Both read the same resourceVersion; the API server answers the second write 409.
        server.hold_next_writes(2);
        let (first, second) = (
            inventory("critical", "node-1", "2026-11-21T10:01:00Z"),
            inventory("critical", "node-1", "2026-11-21T10:02:00Z"),
        );
        let (a, b) = tokio::join!(publish(&client, NS, &first), publish(&client, NS, &second));
        a.unwrap();
        b.unwrap();
        let at = stored_inventory(&server, "lifeboat-inventory-critical-node-1").observed_at.to_rfc3339();
        assert!(at.starts_with("2026-11-21T10:01") || at.starts_with("2026-11-21T10:02"), "{at}");
    }

    #[tokio::test]
    async fn a_name_held_by_another_set_and_node_moves_to_the_hashed_name() {
        let server = FakeApiServer::new();
        let client = server.client();
        publish(&client, NS, &inventory("a-b", "c", "2026-11-21T10:00:00Z")).await.unwrap();
        publish(&client, NS, &inventory("a", "b-c", "2026-11-21T10:00:00Z")).await.unwrap();
        assert_eq!(stored_inventory(&server, "lifeboat-inventory-a-b-c").set, "a-b");
        assert_eq!(stored_inventory(&server, &hashed_name("a", "b-c")).set, "a");
        let found = read_inventories(&client, NS, "a").await.unwrap();
        assert_eq!(found.inventories.iter().map(|i| i.node.as_str()).collect::<Vec<_>>(), ["b-c"]);
    }

    #[tokio::test]
    async fn a_foreign_config_map_of_the_same_name_is_not_overwritten() {
        let server = FakeApiServer::new();
        server.insert(&ConfigMap {
            metadata: ObjectMeta {
                name: Some("lifeboat-inventory-critical-node-1".into()),
                namespace: Some(NS.into()),
                ..ObjectMeta::default()
            },
            ..ConfigMap::default()
        });
        let err =
            publish(&server.client(), NS, &inventory("critical", "node-1", "2026-11-21T10:00:00Z")).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Permanent);
        assert!(err.to_string().contains("not managed by Lifeboat"), "{err}");
    }

    #[tokio::test]
    async fn read_inventories_returns_the_sets_nodes_and_reports_unreadable_ones() {
        let server = FakeApiServer::new();
        let client = server.client();
        for (set, node) in [("critical", "node-2"), ("critical", "node-1"), ("other", "node-1")] {
            publish(&client, NS, &inventory(set, node, "2026-11-21T10:00:00Z")).await.unwrap();
        }
        let mut broken = stored(&server, "lifeboat-inventory-critical-node-2");
        broken.metadata.name = Some("lifeboat-inventory-critical-node-3".into());
        broken.metadata.annotations = Some(BTreeMap::from([(NODE_ANNOTATION.to_string(), "node-3".to_string())]));
        broken.metadata.uid = None;
        broken.data = Some(BTreeMap::from([(DATA_KEY.to_string(), "{\"node\": ".to_string())]));
        server.insert(&broken);

        let found = read_inventories(&client, NS, "critical").await.unwrap();
        let nodes: Vec<&str> = found.inventories.iter().map(|i| i.node.as_str()).collect();
        assert_eq!(nodes, ["node-1", "node-2"]);
        assert!(found.inventories.iter().all(|i| i.set == "critical"));
        assert_eq!(found.unreadable.len(), 1);
        let unreadable = &found.unreadable[0];
        assert_eq!(unreadable.config_map, "lifeboat-inventory-critical-node-3");
        assert_eq!(unreadable.node.as_deref(), Some("node-3"));
        assert!(unreadable.reason.contains("inventory.json is not a node inventory"), "{}", unreadable.reason);

        assert_eq!(read_inventories(&client, "elsewhere", "critical").await.unwrap(), Inventories::default());
    }

    #[tokio::test]
    async fn failures_are_classified_cluster_errors() {
        let server = FakeApiServer::new();
        server.set_outage(Some(Outage::Unavailable));
        let client = server.client();
        let err = publish(&client, NS, &inventory("critical", "node-1", "2026-11-21T10:00:00Z")).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Transient);
        assert!(
            err.to_string().contains("reading the node inventory lifeboat/lifeboat-inventory-critical-node-1"),
            "{err}"
        );
        let err = read_inventories(&client, NS, "critical").await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Transient);
    }
}

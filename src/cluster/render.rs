//! Placeholder until the renderer lands.
use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::prepull::Workload;

pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const SET_LABEL: &str = "lifeboat.dev/pre-pull-set";
pub const COMPONENT_LABEL: &str = "app.kubernetes.io/component";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderSettings {
    pub namespace: String,
    pub agent_namespace: String,
    pub lifeboat_image: String,
}

pub struct Rendered {
    pub daemon_set: DaemonSet,
    pub config_map: Option<ConfigMap>,
}

pub fn set_label_value(set: &str) -> String {
    set.to_string()
}

pub fn selector_labels(set: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(SET_LABEL.to_string(), set_label_value(set))])
}

pub fn daemon_set_name(w: &Workload) -> String {
    format!("lifeboat-prepull-{}", w.set)
}

pub fn render(w: &Workload, s: &RenderSettings) -> Rendered {
    let mut labels = selector_labels(&w.set);
    labels.insert(MANAGED_BY_LABEL.into(), "lifeboat".into());
    Rendered {
        daemon_set: DaemonSet {
            metadata: ObjectMeta {
                name: Some(daemon_set_name(w)),
                namespace: Some(s.namespace.clone()),
                labels: Some(labels),
                ..Default::default()
            },
            ..Default::default()
        },
        config_map: None,
    }
}

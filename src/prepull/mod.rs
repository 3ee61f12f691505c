//! Pre-pull sets: which images each PrePullSet puts on which nodes, and how far that has got.
//!
//! Pure, like [`crate::plan`]: [`crate::observe::prepull`] reads the mirror and the cluster,
//! the cluster module reads and writes Kubernetes objects, the node agent talks to the
//! container runtime, and all of them hand this module plain facts ([`observation`]). A set
//! becomes a [`Workload`] (its images pinned by digest in the mirror); the cluster module
//! renders that into a DaemonSet. [`plan`] decides what to create, update or delete;
//! [`coverage`] says which nodes hold what, from the pre-pull pods' init container statuses
//! (method `kubelet`) or from the node agent's [`Inventory`] (method `cri`); [`report`] is what
//! a pass says about each set, for people, the status and the metrics.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub mod coverage;
pub mod observation;
pub mod plan;
pub mod report;

pub use plan::Existing;
pub use report::PrePullPass;

use crate::desired::{Digest, PrePullMethod, PrePullSet, Toleration};

/// One image a set pre-pulls: a mirror reference pinned by digest.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Image {
    /// `host[:port]/repository@sha256:<hex>`: what the node pulls.
    pub reference: String,
    pub digest: Digest,
}

impl Image {
    /// The image `repository` (with its registry host) at `digest`.
    pub fn new(repository: &str, digest: Digest) -> Image {
        Image { reference: format!("{repository}@{digest}"), digest }
    }

    /// The reference without its digest: `host[:port]/repository`.
    pub fn repository(&self) -> &str {
        self.reference.rsplit_once('@').map_or(&self.reference, |(r, _)| r)
    }
}

/// What the cluster runs for one PrePullSet.
#[derive(Debug, Clone, PartialEq)]
pub struct Workload {
    /// The PrePullSet's name; object names and labels derive from it.
    pub set: String,
    pub method: PrePullMethod,
    /// Sorted by reference, without duplicates.
    pub images: Vec<Image>,
    pub node_selector: BTreeMap<String, String>,
    pub tolerations: Vec<Toleration>,
    pub pull_secrets: Vec<String>,
    pub priority_class_name: Option<String>,
    /// Method `cri` only: the runtime socket on the node and the agent's pull bound.
    pub cri_socket: String,
    pub parallel_pulls: u32,
}

impl Workload {
    /// The set as a workload, before its images are resolved against the mirror.
    pub fn of(name: &str, set: &PrePullSet) -> Workload {
        Workload {
            set: name.to_string(),
            method: set.method,
            images: Vec::new(),
            node_selector: set.node_selector.clone(),
            tolerations: set.tolerations.clone(),
            pull_secrets: set.pull_secrets.iter().cloned().collect(),
            priority_class_name: set.priority_class_name.clone(),
            cri_socket: set.cri_socket.clone(),
            parallel_pulls: set.parallel_pulls,
        }
    }
}

/// A node's kubelet image garbage-collection settings, as far as they could be read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GcSettings {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub high_threshold_percent: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub low_threshold_percent: Option<i64>,
    /// Seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub minimum_age_seconds: Option<u64>,
}

/// Kubelet's defaults, which apply where its configuration leaves a field out.
const KUBELET_DEFAULT_HIGH: i64 = 85;
const KUBELET_DEFAULT_LOW: i64 = 80;
const KUBELET_DEFAULT_MINIMUM_AGE: u64 = 120;

impl GcSettings {
    /// The settings in a KubeletConfiguration, as the kubelet's config file (YAML or JSON) or its
    /// `configz` endpoint (`{"kubeletconfig": {...}}`) gives it. Fields left out take kubelet's
    /// defaults (85 %, 80 %, 2 minutes), since that is what the kubelet then runs with.
    pub fn from_kubelet_config(config: &serde_json::Value) -> Result<GcSettings, String> {
        let config = config.get("kubeletconfig").unwrap_or(config);
        if !config.is_object() {
            return Err("the kubelet configuration is not an object".into());
        }
        let percent = |field: &str, default: i64| match config.get(field) {
            None | Some(serde_json::Value::Null) => Ok(default),
            Some(v) => v.as_i64().ok_or_else(|| format!("{field} is {v}, not a whole number")),
        };
        let minimum_age = match config.get("imageMinimumGCAge") {
            None | Some(serde_json::Value::Null) => KUBELET_DEFAULT_MINIMUM_AGE,
            Some(serde_json::Value::String(s)) => {
                go_duration(s).map_err(|e| format!("imageMinimumGCAge `{s}`: {e}"))?.as_secs()
            }
            Some(v) => return Err(format!("imageMinimumGCAge is {v}, not a duration like \"48h0m0s\"")),
        };
        Ok(GcSettings {
            high_threshold_percent: Some(percent("imageGCHighThresholdPercent", KUBELET_DEFAULT_HIGH)?),
            low_threshold_percent: Some(percent("imageGCLowThresholdPercent", KUBELET_DEFAULT_LOW)?),
            minimum_age_seconds: Some(minimum_age),
        })
    }
}

/// A Go `time.Duration` string as Kubernetes prints it: `48h0m0s`, `2m`, `1.5h`, `300ms`.
pub fn go_duration(text: &str) -> Result<Duration, String> {
    let mut rest = text.trim();
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err("empty duration".into());
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let number_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let number: f64 = rest[..number_len].parse().map_err(|_| format!("`{text}` is not a duration"))?;
        rest = &rest[number_len..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            unit => return Err(format!("`{text}` has the unknown unit `{unit}` (use h, m, s, ms)")),
        };
        rest = &rest[unit_len..];
        total += number * seconds;
    }
    Duration::try_from_secs_f64(total).map_err(|_| format!("`{text}` is longer than any duration a kubelet can mean"))
}

/// Where an image stands on one node, as the node agent saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "state")]
pub enum ImageState {
    /// The runtime already held it.
    Present,
    /// The agent pulled it in this round.
    Pulled,
    /// It is not on the node, and why.
    Missing { reason: String },
}

/// One image of an [`Inventory`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InventoryImage {
    pub reference: String,
    #[serde(flatten)]
    pub state: ImageState,
}

/// What a `cri` node agent reports about its node, stored in a ConfigMap per node and set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Inventory {
    pub node: String,
    pub set: String,
    pub observed_at: DateTime<Utc>,
    /// The runtime's name and version, as CRI's Version call gives them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
    pub images: Vec<InventoryImage>,
    /// The kubelet GC settings read from the kubelet's config file, when it is mounted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubelet_gc: Option<GcSettings>,
    /// Why the kubelet GC settings could not be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubelet_gc_error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn go_durations_as_kubernetes_prints_them() {
        assert_eq!(go_duration("48h0m0s"), Ok(Duration::from_secs(48 * 3600)));
        assert_eq!(go_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(go_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(go_duration("0"), Ok(Duration::ZERO));
        assert!(go_duration("2 days").unwrap_err().contains("unknown unit"));
        assert!(go_duration("").is_err());
    }

    #[test]
    fn kubelet_gc_settings_from_configz_and_from_the_file_with_defaults() {
        let configz = json!({"kubeletconfig": {"imageGCHighThresholdPercent": 85, "imageGCLowThresholdPercent": 75, "imageMinimumGCAge": "48h0m0s"}});
        assert_eq!(
            GcSettings::from_kubelet_config(&configz),
            Ok(GcSettings {
                high_threshold_percent: Some(85),
                low_threshold_percent: Some(75),
                minimum_age_seconds: Some(172_800)
            })
        );
        let file = json!({"kind": "KubeletConfiguration", "imageGCHighThresholdPercent": 90});
        let settings = GcSettings::from_kubelet_config(&file).unwrap();
        assert_eq!(
            (settings.high_threshold_percent, settings.low_threshold_percent, settings.minimum_age_seconds),
            (Some(90), Some(80), Some(120))
        );
        let bad = json!({"imageMinimumGCAge": 5});
        assert!(GcSettings::from_kubelet_config(&bad).unwrap_err().contains("not a duration"));
    }

    #[test]
    fn an_inventory_reads_back_as_written() {
        let inventory = Inventory {
            node: "n1".into(),
            set: "critical".into(),
            observed_at: "2026-11-21T10:00:00Z".parse().unwrap(),
            runtime: Some("containerd 1.6.20".into()),
            images: vec![
                InventoryImage { reference: "m/a@sha256:aa".into(), state: ImageState::Present },
                InventoryImage {
                    reference: "m/b@sha256:bb".into(),
                    state: ImageState::Missing { reason: "connection refused".into() },
                },
            ],
            kubelet_gc: None,
            kubelet_gc_error: Some("no kubelet configuration mounted".into()),
        };
        let text = serde_json::to_string(&inventory).unwrap();
        assert!(text.contains(r#""state":"missing","reason":"connection refused""#), "{text}");
        assert_eq!(serde_json::from_str::<Inventory>(&text).unwrap(), inventory);
    }
}

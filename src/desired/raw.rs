//! The desired-state documents exactly as they are written in YAML.
//!
//! These types mirror the public format field by field: unknown fields are rejected
//! (`deny_unknown_fields`; no `flatten`, which would silently disable it), values stay as the
//! user wrote them, and the JSON Schema in `schema/` is generated from them, so the doc comments
//! here are the field reference editors show. Parsing values and checking references between
//! documents happens in `validate`, never here.

use std::collections::BTreeMap;

use schemars::{JsonSchema, json_schema};
use serde::{Deserialize, Deserializer, Serialize};

/// The only `apiVersion` this release understands.
pub const API_VERSION: &str = "lifeboat.dev/v1alpha1";

/// The kinds of document, in the order they are described.
pub const KINDS: [&str; 5] = ["Registry", "MirrorSet", "PrePullSet", "BackupPolicy", "FailoverSet"];

/// The kinds of the status documents Lifeboat writes: skipped when read as desired state.
pub const STATUS_KINDS: [&str; 4] = ["LifeboatStatus", "MirrorSetStatus", "PrePullSetStatus", "BackupPolicyStatus"];

/// API group and version of every Lifeboat document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub enum ApiVersion {
    #[serde(rename = "lifeboat.dev/v1alpha1")]
    V1Alpha1,
}

/// Identifies a document, as in Kubernetes.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    /// Unique among documents of the same kind: lowercase letters, digits and `-`, at most 63
    /// characters, starting and ending with a letter or digit.
    pub name: String,
    /// Free-form labels for people and other tools.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Free-form annotations for people and other tools; Lifeboat ignores them.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

macro_rules! document {
    ($(#[$doc:meta])* $name:ident, $kind:ident, $spec:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Deserialize, JsonSchema)]
        #[serde(deny_unknown_fields, rename_all = "camelCase")]
        pub struct $name {
            pub api_version: ApiVersion,
            pub kind: $kind,
            pub metadata: Metadata,
            pub spec: $spec,
        }

        #[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
        pub enum $kind {
            $kind,
        }
    };
}

document!(
    /// How to reach one registry host: TLS, credentials and request limits. Secrets are never
    /// written here; `credentials` names where they are mounted.
    RegistryDocument,
    Registry,
    RegistrySpec
);
document!(
    /// A set of upstream images copied into the internal mirror on a schedule.
    MirrorSetDocument,
    MirrorSet,
    MirrorSetSpec
);
document!(
    /// Images that must be cached on every matching node, pulled from the mirror.
    PrePullSetDocument,
    PrePullSet,
    PrePullSetSpec
);
document!(
    /// Scheduled offline archives of mirrored images for air-gapped recovery.
    BackupPolicyDocument,
    BackupPolicy,
    BackupPolicySpec
);
document!(
    /// Nodes that fall back to the mirror when upstream registries fail, with the image
    /// references of their pods unchanged: the mirror is written into each node's container
    /// runtime configuration.
    FailoverSetDocument,
    FailoverSet,
    FailoverSetSpec
);

/// Any Lifeboat desired-state document. Several may share a file, separated by `---`.
#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum AnyDocument {
    Registry(RegistryDocument),
    MirrorSet(MirrorSetDocument),
    PrePullSet(PrePullSetDocument),
    BackupPolicy(BackupPolicyDocument),
    FailoverSet(FailoverSetDocument),
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RegistrySpec {
    /// `host` or `host:port` exactly as image references spell it, without scheme or path.
    pub host: String,
    /// Speak plain HTTP instead of HTTPS. Only for registries on a trusted network.
    #[serde(default)]
    pub insecure: bool,
    /// PEM bundle of extra certificate authorities for this host, relative to the root of the
    /// desired-state directory.
    pub ca_file: Option<String>,
    /// Where the credentials for this host are found at run time. Omit for anonymous access.
    pub credentials: Option<Credentials>,
    /// Politeness towards this host.
    pub limits: Option<Limits>,
}

/// A reference to credentials kept outside the desired state. Give exactly one field.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Credentials {
    /// Absolute path of a Docker `config.json` or Kubernetes `.dockerconfigjson` file, usually
    /// a mounted Secret. `credsStore` and `credHelpers` in it are honoured.
    pub docker_config: Option<String>,
    /// Name of a Docker credential helper: `ecr-login` runs `docker-credential-ecr-login`.
    pub helper: Option<String>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Limits {
    /// Most requests per second sent to this host (default: no limit). At least 0.0167, one
    /// request a minute: a slower pace would stretch a pass over days.
    #[schemars(range(min = 0.016666666666666666))]
    pub requests_per_second: Option<f64>,
    /// Most requests in flight to this host at once: 1 to 256 (default: 8).
    #[schemars(range(min = 1, max = 256))]
    pub concurrency: Option<u32>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MirrorSetSpec {
    /// Mirror registry host and repository prefix, for example
    /// `registry.internal.example:5000/mirror`. Each source repository path is kept under it:
    /// `registry.vendor.example/base/glibc` becomes `<target>/base/glibc`.
    pub target: String,
    /// When to sync, as a standard 5-field cron expression (minute hour day-of-month month
    /// day-of-week, in UTC; day-of-week 0 or 7 is Sunday) or one of `@hourly`, `@daily`,
    /// `@weekly`, `@monthly`, `@yearly`. Default: `0 * * * *` (hourly).
    pub schedule: Option<String>,
    /// `all` (default) copies the whole multi-platform index with the upstream digest preserved.
    /// A list such as `[linux/amd64, linux/arm64]` copies only those platforms; the mirrored
    /// index then has a different digest than upstream.
    pub platforms: Option<Platforms>,
    /// The upstream images of this set.
    pub images: Vec<MirrorImage>,
    /// Signature checks made before anything is copied.
    pub signatures: Option<Signatures>,
    /// What to do when an upstream tag now points at a different digest than the mirror:
    /// `update` (default) follows upstream, `keep` leaves the mirror as it is, `backup` keeps
    /// the old digest under a backup tag first, then follows upstream.
    pub on_tag_move: Option<OnTagMove>,
    /// Delete mirrored tags that are no longer selected by this set. Signature, attestation and
    /// SBOM tags are never pruned. Default: false.
    pub prune: Option<bool>,
}

/// `all`, or a list of `os/arch[/variant]` platforms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Platforms {
    All,
    Only(Vec<String>),
}

impl<'de> Deserialize<'de> for Platforms {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Platforms;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("`all` or a list of platforms such as [linux/amd64, linux/arm64]")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Platforms, E> {
                if v == "all" {
                    Ok(Platforms::All)
                } else {
                    Err(E::invalid_value(serde::de::Unexpected::Str(v), &self))
                }
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Platforms, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<String>()? {
                    items.push(item);
                }
                Ok(Platforms::Only(items))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

impl JsonSchema for Platforms {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Platforms".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        json_schema!({
            "description": "`all`, or a list of `os/arch[/variant]` platforms.",
            "oneOf": [
                { "const": "all" },
                {
                    "type": "array",
                    "minItems": 1,
                    "items": { "type": "string", "pattern": "^[a-z0-9]+/[a-z0-9_]+(/[a-z0-9]+)?$" }
                }
            ]
        })
    }
}

/// One upstream repository and the tags taken from it. Select tags with `tags`, `tagRules`
/// (both may be combined), or pin a digest in `source` and name its mirror tag with `tag`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MirrorImage {
    /// Upstream repository without tag, such as `registry.vendor.example/base/glibc`, or a
    /// digest pin `repository@sha256:<64 hex>`. Docker Hub short names (`nginx`) are expanded to
    /// `docker.io/library/nginx`.
    pub source: String,
    /// Exact tags to mirror. Lifeboat keeps `2.40` as written; quote tags anyway so that other
    /// YAML tools do not read them as numbers.
    pub tags: Option<Vec<String>>,
    /// Tags chosen from the upstream tag list at each sync.
    pub tag_rules: Option<TagRules>,
    /// With a digest pin only: the tag the pinned image gets in the mirror.
    pub tag: Option<String>,
}

/// Rules applied in order: `allow` and `deny` filter by regular expression, `semver` keeps tags
/// that parse as versions (a missing minor or patch counts as 0) inside the range, and
/// `keepLatest` keeps only the highest versions.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TagRules {
    /// A semantic-version range such as `>=3.12, <3.14`.
    pub semver: Option<String>,
    /// Keep only tags matching at least one of these regular expressions.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Drop tags matching any of these regular expressions.
    #[serde(default)]
    pub deny: Vec<String>,
    /// Keep only this many of the remaining tags, highest versions first.
    pub keep_latest: Option<u32>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Signatures {
    /// `required`: never mirror an image without a valid signature (default when keys or
    /// keyless identities are given); `optional`: mirror anyway, with a warning; `off`: no check
    /// (default otherwise).
    pub policy: Option<SignaturePolicy>,
    /// Cosign public keys (PEM), relative to the root of the desired-state directory. A
    /// signature by any one of them is accepted.
    #[serde(default)]
    pub keys: Vec<String>,
    /// Keyless (Fulcio certificate) identities, any of which is accepted.
    #[serde(default)]
    pub keyless: Vec<KeylessIdentity>,
    /// Sigstore trust root (`trusted_root.json`) for keyless verification, relative to the root
    /// of the desired-state directory. Required with `keyless`; nothing is fetched from the
    /// public Sigstore services.
    pub trust_root: Option<String>,
    /// Annotations every accepted signature must carry, with these exact values.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// Carry `.sig`, `.att` and `.sbom` tags and OCI referrers along with each image. Default:
    /// true.
    pub copy: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SignaturePolicy {
    Required,
    Optional,
    Off,
}

/// A certificate identity accepted for keyless signatures. Give `identity` or `identityRegex`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KeylessIdentity {
    /// OIDC issuer URL that must appear in the certificate, matched exactly.
    pub issuer: String,
    /// Exact certificate identity (subject alternative name): an email or URI.
    pub identity: Option<String>,
    /// Regular expression the certificate identity must match.
    pub identity_regex: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OnTagMove {
    Update,
    Keep,
    Backup,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PrePullSetSpec {
    /// Labels a node must carry to hold these images; empty selects every node.
    #[serde(default)]
    pub node_selector: BTreeMap<String, String>,
    /// Kubernetes tolerations, so that tainted nodes are covered too.
    #[serde(default)]
    pub tolerations: Vec<Toleration>,
    /// Every image of these MirrorSets, pulled from the mirror.
    #[serde(default)]
    pub mirror_sets: Vec<String>,
    /// Further images as mirror references with a tag or digest.
    #[serde(default)]
    pub images: Vec<String>,
    /// Names of `kubernetes.io/dockerconfigjson` Secrets used to pull from the mirror.
    #[serde(default)]
    pub pull_secrets: Vec<String>,
    /// PriorityClass of the pre-pull pods.
    pub priority_class_name: Option<String>,
    /// `kubelet` (default): a DaemonSet whose init containers pull each image, no privileges
    /// needed. `cri`: a node agent pulls through the container runtime socket.
    pub method: Option<PrePullMethod>,
    /// The node agent of `method: cri`: which runtime socket it talks to and how many images it
    /// pulls at once.
    pub cri: Option<CriSettings>,
    /// The kubelet image garbage-collection settings the DR plan asks every selected node for;
    /// each node's own settings are reported against these.
    #[serde(rename = "kubeletGC")]
    pub kubelet_gc: Option<KubeletGcTarget>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CriSettings {
    /// The container runtime's CRI socket on the node (default
    /// `/run/containerd/containerd.sock`; CRI-O: `/var/run/crio/crio.sock`).
    pub socket: Option<String>,
    /// How many images the agent pulls at once on one node (default 4, at most 32).
    pub parallel_pulls: Option<u32>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KubeletGcTarget {
    /// `imageGCHighThresholdPercent` the nodes must have (default 85).
    pub high_threshold_percent: Option<u8>,
    /// `imageGCLowThresholdPercent` the nodes must have (default 75).
    pub low_threshold_percent: Option<u8>,
    /// The least `imageMinimumGCAge` the nodes may have (default `48h`).
    pub minimum_age: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PrePullMethod {
    Kubelet,
    Cri,
}

/// A Kubernetes toleration (core/v1 Toleration).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Toleration {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operator: Option<TolerationOperator>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub effect: Option<TaintEffect>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub toleration_seconds: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize, JsonSchema)]
pub enum TolerationOperator {
    Exists,
    Equal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize, JsonSchema)]
pub enum TaintEffect {
    NoSchedule,
    PreferNoSchedule,
    NoExecute,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BackupPolicySpec {
    /// When to export, as a standard 5-field cron expression (minute hour day-of-month month
    /// day-of-week, in UTC) or `@daily` and the like.
    pub schedule: String,
    /// Every mirrored image of these MirrorSets.
    #[serde(default)]
    pub mirror_sets: Vec<String>,
    /// Further images as mirror references with a tag or digest.
    #[serde(default)]
    pub images: Vec<String>,
    /// Directory the archives are written to (absolute path on the machine running Lifeboat).
    pub destination: String,
    /// Which archives to keep. The newest verified archive is never deleted.
    pub retention: Option<Retention>,
    /// `zstd` (default), `gzip` or `none`.
    pub compression: Option<Compression>,
    /// Encrypt archives to these recipients; without it archives are written in the clear.
    pub encryption: Option<Encryption>,
    /// Split archives into parts no larger than this, for removable media: `4GiB`, `700MB`.
    pub max_part_size: Option<String>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Retention {
    /// Keep at most this many archives.
    pub keep: Option<u32>,
    /// Delete archives older than this: `7d`, `36h`, `2w`.
    pub max_age: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    Zstd,
    Gzip,
    None,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Encryption {
    /// age recipients (`age1...` public keys, or `ssh-ed25519`/`ssh-rsa` public keys). Any one
    /// matching identity can decrypt.
    pub age_recipients: Vec<String>,
}

/// Which nodes fail over to the mirror, for which upstreams, and how. The smallest useful
/// document names MirrorSets only: `spec: {mirrorSets: [vendor-base]}`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FailoverSetSpec {
    /// Labels a node must carry to be configured; empty (the default) selects every node.
    #[serde(default)]
    pub node_selector: BTreeMap<String, String>,
    /// Kubernetes tolerations, so that tainted nodes are configured too.
    #[serde(default)]
    pub tolerations: Vec<Toleration>,
    /// Every upstream registry host these MirrorSets mirror fails over to exactly where its
    /// images land in the mirror, the target's path prefix included:
    /// `registry.vendor.example` → `<target>`, so `registry.vendor.example/base/glibc:2.40` is
    /// pulled from `<target>/base/glibc:2.40`.
    #[serde(default)]
    pub mirror_sets: Vec<String>,
    /// Further upstream → mirror pairs, for images mirrored by other means.
    #[serde(default)]
    pub upstreams: Vec<UpstreamMirror>,
    /// `mirrorFirst` (default): ask the mirror first, upstream only when the mirror lacks the
    /// image or fails; the mirror is local and fast. `upstreamFirst`: ask upstream first. On
    /// containerd 1.6 and 1.7 an upstream that is black-holed (packets dropped) then costs a
    /// 30 s connect timeout per request, every manifest and layer, before the mirror is asked;
    /// CRI-O cannot express this order at all.
    pub order: Option<FailoverOrder>,
    /// `resolve` (default): the mirror may resolve tags, so `image:tag` survives an outage; the
    /// node then trusts the mirror's tag-to-digest mapping. `digestOnly`: only `image@sha256:`
    /// references fail over; tag pulls still need upstream.
    pub tags: Option<FailoverTags>,
    /// `allow` (default): upstream remains the last resort. `never`: nodes never contact the
    /// upstream hosts (air-gapped); every pull of them goes to the mirror.
    pub contact_upstream: Option<ContactUpstream>,
    /// The container runtimes the set is written for. Default: the one detected on each node.
    pub runtimes: Option<Vec<NodeRuntime>>,
    /// Name of a `kubernetes.io/dockerconfigjson` Secret, in the node agent's namespace, with
    /// credentials for the mirror host. Needed unless the mirror allows anonymous reads: the
    /// kubelet sends the pull secret of the upstream host, never one for the mirror. On
    /// containerd it becomes an `Authorization` header in `hosts.toml`.
    pub mirror_pull_secret: Option<String>,
}

/// One upstream and where its images are in the mirror.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct UpstreamMirror {
    /// Upstream registry host, optionally with a repository path: `ghcr.io` or `ghcr.io/org`.
    pub upstream: String,
    /// Mirror host and path under which the upstream's repositories are kept:
    /// `registry.internal.example:5000/ghcr` holds `ghcr.io/org/app` as `ghcr/org/app`.
    pub mirror: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum FailoverOrder {
    MirrorFirst,
    UpstreamFirst,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum FailoverTags {
    Resolve,
    DigestOnly,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum ContactUpstream {
    Allow,
    Never,
}

/// A container runtime whose registry configuration Lifeboat writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum NodeRuntime {
    /// containerd 1.6 or later: `hosts.toml` files in its `config_path`.
    Containerd,
    /// CRI-O (and podman, skopeo, buildah): a `registries.conf.d` drop-in.
    Crio,
    /// k3s and RKE2: `registries.yaml`.
    K3s,
}

impl NodeRuntime {
    pub const ALL: [NodeRuntime; 3] = [NodeRuntime::Containerd, NodeRuntime::Crio, NodeRuntime::K3s];

    /// The name as the desired state and the command line spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeRuntime::Containerd => "containerd",
            NodeRuntime::Crio => "crio",
            NodeRuntime::K3s => "k3s",
        }
    }
}

impl std::fmt::Display for NodeRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

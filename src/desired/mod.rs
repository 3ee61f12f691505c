//! The desired state: what the Git repository asks Lifeboat to make true.
//!
//! `load` turns a set of YAML files into a validated [`DesiredState`] or every problem found
//! (`Invalid`), in two stages: `raw` types that mirror the YAML, then the domain types below,
//! in which every value is parsed and every cross-reference resolved. Nothing here performs
//! network I/O or knows about registries, clusters or Git: files come from a [`Source`]. Image
//! references are parsed with oci-spec's `Reference` (in [`image`]), the one use of that crate,
//! so a reference means here what it means to registries.

pub mod diagnostic;
pub mod image;
pub mod quantity;
pub mod raw;
pub mod schedule;
pub mod source;
pub mod tags;
mod validate;
mod yaml;

use std::collections::{BTreeMap, BTreeSet};

use regex::Regex;
use serde::{Serialize, Serializer};

pub use diagnostic::{Diagnostic, Diagnostics, Position, Severity};
pub use image::{Digest, ImageRef, Repository, Source as ImageSource, Target};
pub use quantity::{Period, Size};
pub use raw::{
    Compression, ContactUpstream, FailoverOrder, FailoverTags, NodeRuntime, OnTagMove, PrePullMethod, SignaturePolicy,
    Toleration,
};
pub use schedule::Schedule;
pub use source::{DirectorySource, Source, SourceFile};
pub use validate::load;

/// Why a desired state could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The files were read, and they describe no usable state: every problem found.
    #[error("the desired state is invalid ({} error{})", .0.error_count(), diagnostic::plural(.0.error_count()))]
    Invalid(Diagnostics),
    /// The files could not be read at all.
    #[error(transparent)]
    Read(#[from] anyhow::Error),
}

/// The schedule a MirrorSet gets when it names none.
pub const DEFAULT_MIRROR_SCHEDULE: &str = "0 * * * *";
/// Requests in flight to one registry when its Registry document sets no limit.
pub const DEFAULT_CONCURRENCY: u32 = 8;
/// The most requests in flight to one registry a Registry document may ask for.
pub const MAX_CONCURRENCY: u32 = 256;
/// The slowest pace a Registry document may ask for: one request a minute. Below it a pass
/// over a few hundred tags takes days, which no registry means.
pub const MIN_REQUESTS_PER_SECOND: f64 = 1.0 / 60.0;

/// A validated desired state. Maps are keyed by document name, so everything derived from it
/// comes out in a stable order.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DesiredState {
    pub registries: BTreeMap<String, Registry>,
    pub mirror_sets: BTreeMap<String, MirrorSet>,
    pub pre_pull_sets: BTreeMap<String, PrePullSet>,
    pub backup_policies: BTreeMap<String, BackupPolicy>,
    pub failover_sets: BTreeMap<String, FailoverSet>,
    /// Warnings found while loading; the state is usable.
    #[serde(skip)]
    pub warnings: Diagnostics,
}

impl DesiredState {
    /// The registries and one MirrorSet: what a sync of that set needs.
    pub fn only_mirror_set(&self, name: &str) -> DesiredState {
        DesiredState {
            registries: self.registries.clone(),
            mirror_sets: self.mirror_sets.get(name).map(|s| (name.to_string(), s.clone())).into_iter().collect(),
            ..DesiredState::default()
        }
    }
}

/// Where a document was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub file: String,
    pub line: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Registry {
    #[serde(skip)]
    pub origin: Origin,
    pub host: String,
    pub insecure: bool,
    /// Relative to the root of the desired state.
    pub ca_file: Option<String>,
    pub credentials: Option<Credentials>,
    pub limits: Limits,
}

impl Registry {
    /// The settings that must agree when two documents describe the same host.
    fn settings_eq(&self, other: &Registry) -> bool {
        Registry { origin: other.origin.clone(), ..self.clone() } == *other
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Credentials {
    /// Path of a Docker `config.json` on the machine running Lifeboat.
    DockerConfig(String),
    /// Name of a `docker-credential-<name>` helper.
    Helper(String),
}

/// How hard Lifeboat may use one registry host.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Limits {
    /// At least [`MIN_REQUESTS_PER_SECOND`], so the time between two requests is at most a
    /// minute; `None`: no pacing.
    pub requests_per_second: Option<f64>,
    /// 1 to [`MAX_CONCURRENCY`].
    pub concurrency: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { requests_per_second: None, concurrency: DEFAULT_CONCURRENCY }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MirrorSet {
    #[serde(skip)]
    pub origin: Origin,
    pub target: Target,
    pub schedule: Schedule,
    pub platforms: Platforms,
    pub images: Vec<MirrorImage>,
    pub signatures: Signatures,
    pub on_tag_move: OnTagMove,
    pub prune: bool,
}

impl MirrorSet {
    /// Every mirror reference this set names without asking upstream: explicit tags, and digest
    /// pins with their digest. Tags chosen by rules are only known at sync time. With a platform
    /// subset the mirrored index gets a digest of its own, so pins are named by tag alone.
    pub fn fixed_mirror_refs(&self) -> BTreeSet<ImageRef> {
        self.images
            .iter()
            .flat_map(|image| {
                let repository = self.target.repository_for(&image.source);
                let digest = match (&image.selection, &self.platforms) {
                    (Selection::Pinned { digest, .. }, Platforms::All) => Some(digest.clone()),
                    _ => None,
                };
                image.fixed_tags().map(move |tag| ImageRef {
                    repository: repository.clone(),
                    tag: Some(tag.to_string()),
                    digest: digest.clone(),
                })
            })
            .collect()
    }
}

/// Which platforms of a multi-platform image are copied. Serializes as in YAML: `"all"` or a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Platforms {
    /// The whole index, upstream digest preserved.
    All,
    /// Only these `os/arch[/variant]` platforms; the mirrored index gets a new digest.
    Only(BTreeSet<String>),
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MirrorImage {
    pub source: Repository,
    pub selection: Selection,
}

impl MirrorImage {
    /// Tags known without listing upstream: explicit tags, or the tag of a digest pin.
    pub fn fixed_tags(&self) -> Box<dyn Iterator<Item = &str> + '_> {
        match &self.selection {
            Selection::Tags { tags, .. } => Box::new(tags.iter().map(String::as_str)),
            Selection::Pinned { tag, .. } => Box::new(std::iter::once(tag.as_str())),
        }
    }
}

impl Serialize for Platforms {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Platforms::All => s.serialize_str("all"),
            Platforms::Only(list) => s.collect_seq(list),
        }
    }
}

/// How the tags of one mirrored repository are chosen.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Selection {
    /// Explicit tags, plus whatever the rules select from the upstream tag list.
    Tags { tags: BTreeSet<String>, rules: Option<TagRules> },
    /// One upstream digest, written under `tag` in the mirror.
    Pinned { digest: Digest, tag: String },
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TagRules {
    #[serde(serialize_with = "serialize_display")]
    pub semver: Option<semver::VersionReq>,
    #[serde(serialize_with = "serialize_regexes")]
    pub allow: Vec<Regex>,
    #[serde(serialize_with = "serialize_regexes")]
    pub deny: Vec<Regex>,
    pub keep_latest: Option<u32>,
}

impl PartialEq for TagRules {
    fn eq(&self, other: &Self) -> bool {
        let patterns = |v: &[Regex]| v.iter().map(|r| r.as_str().to_string()).collect::<Vec<_>>();
        self.semver == other.semver
            && patterns(&self.allow) == patterns(&other.allow)
            && patterns(&self.deny) == patterns(&other.deny)
            && self.keep_latest == other.keep_latest
    }
}

impl std::fmt::Display for TagRules {
    /// One line a reviewer can read: `semver >=3.12, <3.14; allow ^3\.; deny -rc; keep latest 3`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        if let Some(req) = &self.semver {
            parts.push(format!("semver {req}"));
        }
        let join = |v: &[Regex]| v.iter().map(Regex::as_str).collect::<Vec<_>>().join(" | ");
        if !self.allow.is_empty() {
            parts.push(format!("allow {}", join(&self.allow)));
        }
        if !self.deny.is_empty() {
            parts.push(format!("deny {}", join(&self.deny)));
        }
        if let Some(n) = self.keep_latest {
            parts.push(format!("keep latest {n}"));
        }
        if parts.is_empty() {
            parts.push("every tag".into());
        }
        f.write_str(&parts.join("; "))
    }
}

fn serialize_display<S: Serializer, T: std::fmt::Display>(v: &Option<T>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => s.collect_str(v),
        None => s.serialize_none(),
    }
}

fn serialize_regexes<S: Serializer>(v: &[Regex], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(v.iter().map(Regex::as_str))
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Signatures {
    pub policy: SignaturePolicy,
    pub keys: BTreeSet<String>,
    pub keyless: Vec<KeylessIdentity>,
    pub trust_root: Option<String>,
    pub annotations: BTreeMap<String, String>,
    pub copy: bool,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KeylessIdentity {
    pub issuer: String,
    pub identity: IdentityMatch,
}

impl PartialEq for KeylessIdentity {
    fn eq(&self, other: &Self) -> bool {
        self.issuer == other.issuer && self.identity == other.identity
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum IdentityMatch {
    Exact(String),
    Regex(#[serde(serialize_with = "serialize_regex")] Regex),
}

fn serialize_regex<S: Serializer>(r: &Regex, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(r.as_str())
}

impl PartialEq for IdentityMatch {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (IdentityMatch::Exact(a), IdentityMatch::Exact(b)) => a == b,
            (IdentityMatch::Regex(a), IdentityMatch::Regex(b)) => a.as_str() == b.as_str(),
            _ => false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PrePullSet {
    #[serde(skip)]
    pub origin: Origin,
    pub node_selector: BTreeMap<String, String>,
    pub tolerations: Vec<Toleration>,
    pub mirror_sets: BTreeSet<String>,
    pub images: BTreeSet<ImageRef>,
    pub pull_secrets: BTreeSet<String>,
    pub priority_class_name: Option<String>,
    pub method: PrePullMethod,
    /// The runtime socket the `cri` node agent uses.
    pub cri_socket: String,
    /// How many images the `cri` node agent pulls at once.
    pub parallel_pulls: u32,
    pub kubelet_gc: KubeletGcTarget,
}

/// What the DR plan asks of each node's kubelet image garbage collector.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KubeletGcTarget {
    pub high_threshold_percent: u8,
    pub low_threshold_percent: u8,
    pub minimum_age: Period,
}

impl Default for KubeletGcTarget {
    fn default() -> Self {
        KubeletGcTarget {
            high_threshold_percent: 85,
            low_threshold_percent: 75,
            minimum_age: "48h".parse().expect("a valid period"),
        }
    }
}

/// Where containerd serves CRI on a node, unless a PrePullSet says otherwise.
pub const DEFAULT_CRI_SOCKET: &str = "/run/containerd/containerd.sock";

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupPolicy {
    #[serde(skip)]
    pub origin: Origin,
    pub schedule: Schedule,
    pub mirror_sets: BTreeSet<String>,
    pub images: BTreeSet<ImageRef>,
    pub destination: String,
    pub retention: Retention,
    pub compression: Compression,
    pub encryption: Option<Encryption>,
    pub max_part_size: Option<Size>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Retention {
    pub keep: Option<u32>,
    pub max_age: Option<Period>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Encryption {
    pub age_recipients: BTreeSet<String>,
}

/// Which nodes fail over to the mirror for which upstreams, every mapping resolved: the plain
/// facts the node files are rendered from.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FailoverSet {
    #[serde(skip)]
    pub origin: Origin,
    pub node_selector: BTreeMap<String, String>,
    pub tolerations: Vec<Toleration>,
    pub mirror_sets: BTreeSet<String>,
    /// One per upstream, sorted by upstream.
    pub mappings: Vec<FailoverMapping>,
    pub order: FailoverOrder,
    pub tags: FailoverTags,
    pub contact_upstream: ContactUpstream,
    /// `None`: whichever runtime each node runs.
    pub runtimes: Option<BTreeSet<NodeRuntime>>,
    pub mirror_pull_secret: Option<String>,
}

impl FailoverSet {
    /// Whether the set is written for `runtime`: named, or detected on the node.
    pub fn covers(&self, runtime: NodeRuntime) -> bool {
        self.runtimes.as_ref().is_none_or(|r| r.contains(&runtime))
    }
}

/// One upstream and where its repositories are in the mirror: `upstream/rest` is served as
/// `mirror/rest`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FailoverMapping {
    /// The upstream host, and a repository path when only part of the host fails over.
    pub upstream: Target,
    /// Upstream is reached over plain HTTP (its Registry document says `insecure: true`).
    pub upstream_insecure: bool,
    pub mirror: MirrorEndpoint,
    /// What asked for this mapping: `MirrorSet/vendor-base`, `spec.upstreams[0]`.
    pub sources: BTreeSet<String>,
    /// The upstream repositories the MirrorSets copy there; empty for an explicit pair.
    pub repositories: BTreeSet<Repository>,
}

/// How nodes reach the mirror.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MirrorEndpoint {
    /// The mirror host and the path under which the upstream's repositories are kept.
    pub location: Target,
    /// Plain HTTP (the mirror's Registry document says `insecure: true`).
    pub insecure: bool,
    /// The mirror's CA bundle, from its Registry document, relative to the desired-state root.
    pub ca_file: Option<String>,
}

impl DesiredState {
    /// The mirror references a pre-pull set or backup policy covers without asking upstream:
    /// the fixed references of the MirrorSets it names plus its explicit images.
    pub fn covered_refs<'a>(
        &'a self,
        mirror_sets: &'a BTreeSet<String>,
        images: &'a BTreeSet<ImageRef>,
    ) -> BTreeSet<ImageRef> {
        mirror_sets
            .iter()
            .filter_map(|name| self.mirror_sets.get(name))
            .flat_map(MirrorSet::fixed_mirror_refs)
            .chain(images.iter().cloned())
            .collect()
    }
}

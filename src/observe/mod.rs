//! What the registries and the cluster hold now, for everything the desired state names: the
//! observe step of a pass. Reads only, never writes.
//!
//! Each fact is an [`Observed`]: when Lifeboat could not look (upstream down, 5xx, timeout,
//! refused credentials), the item is Unknown, never Absent, so the plan can never delete or
//! overwrite on the strength of an outage. Registry requests are digest-first: one HEAD per
//! upstream tag and one per mirror tag; tag lists are read only when tag rules, pruning or
//! carried signatures need them.
//!
//! A MirrorSet image is observed in three parts: its tags ([`tags`]: which ones the set
//! selects, and their digests on both sides), what is attached to its digests ([`attached`]:
//! signature, attestation, SBOM and referrers tags, and OCI referrers), and the signatures of
//! what would be copied ([`signatures`]). [`prepull`] observes PrePullSets: the mirror's
//! digests for their images and what the cluster's nodes hold; [`mirrored`] is the selection
//! from the mirror that pre-pull and backups share.

use std::collections::{BTreeMap, BTreeSet};

use futures_util::StreamExt;
use serde::Serialize;

pub use crate::observed::Observed;
pub use selected::{Selected, mirrored};

use crate::desired::{DesiredState, Digest, Platforms, Repository};
use crate::registry::{Registry, Resolved, Verdict};

mod attached;
pub mod prepull;
mod selected;
mod signatures;
mod tags;

/// What cosign and OCI referrers keep next to an image, by tag suffix: signatures,
/// attestations, SBOMs, and the referrers fallback tag (no suffix).
pub const ATTACHED_SUFFIXES: [&str; 4] = ["sig", "att", "sbom", ""];

/// What the mirror holds under a tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MirrorTag {
    pub digest: Digest,
    /// For an index filtered to some platforms: the upstream digest it was made from.
    pub source_digest: Option<Digest>,
    /// For an index read in full (when pruning): the manifests it names.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<Digest>,
}

impl MirrorTag {
    /// Whether this mirror content is `upstream` as the set copies it.
    pub fn holds(&self, upstream: &Digest, platforms: &Platforms) -> bool {
        match platforms {
            Platforms::All => self.digest == *upstream,
            // A plain manifest (not an index) is copied unchanged even with a platform list.
            Platforms::Only(_) => self.source_digest.as_ref() == Some(upstream) || self.digest == *upstream,
        }
    }
}

impl From<Resolved> for MirrorTag {
    fn from(r: Resolved) -> Self {
        MirrorTag { digest: r.digest, source_digest: r.source_digest, children: r.children }
    }
}

/// Everything observed for one image of a MirrorSet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageObservation {
    pub source: Repository,
    pub target: Repository,
    /// The upstream tag list, read only when tag rules need it.
    pub upstream_tags: Option<Observed<Vec<String>>>,
    /// The tags this image selects, when known: fixed tags plus what the rules chose.
    pub selected: Observed<BTreeSet<String>>,
    /// Upstream digest per selected tag (for a digest pin: the pin, not looked up).
    pub upstream: BTreeMap<String, Observed<Digest>>,
    /// Mirror content per selected tag, and per existing mirror tag when pruning.
    pub mirror: BTreeMap<String, Observed<MirrorTag>>,
    /// Every tag of the mirror repository, read only when the set prunes.
    pub mirror_tags: Option<Observed<Vec<String>>>,
    /// The manifests each upstream index names, read when attached tags are carried.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub upstream_children: BTreeMap<Digest, Vec<Digest>>,
    /// Signature checks of the upstream digests the mirror does not hold yet (policy not off).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub signatures: BTreeMap<Digest, Observed<Verdict>>,
    /// Signature, attestation, SBOM and referrers tags of the digests mirrored (or to be),
    /// when the set carries them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub attached: Vec<AttachedTag>,
    /// Why attached tags could not be looked at, when they could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attached_unknown: Option<String>,
    /// OCI referrers upstream lists through the referrers API, per digest that has any.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub referrers: Vec<Referrers>,
}

/// The referrers of one digest, from an upstream registry that offers the referrers API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Referrers {
    pub subject: Digest,
    /// Their descriptors, as the referrers index lists them.
    pub descriptors: Vec<serde_json::Value>,
    /// Referrer manifests the mirror does not hold, or `Unknown` when it could not be read.
    pub missing: Observed<Vec<Digest>>,
    /// True when the mirror has no referrers API and its fallback tag does not list them all.
    pub fallback: bool,
}

/// A tag that belongs to a digest (`sha256-<hex>.sig`, `.att`, `.sbom`, or `sha256-<hex>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AttachedTag {
    /// The digest it belongs to.
    pub subject: Digest,
    pub tag: String,
    pub upstream: Observed<Digest>,
    pub mirror: Observed<Digest>,
}

/// Observations for every MirrorSet, in the order of its images.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ActualState {
    pub mirror_sets: BTreeMap<String, Vec<ImageObservation>>,
}

/// How many lookups run at once; per-registry limits still apply beneath this.
const LOOKUPS_IN_FLIGHT: usize = 64;
/// Images of one set observed at once.
const IMAGES_IN_FLIGHT: usize = 8;

pub async fn observe<R: Registry>(state: &DesiredState, registry: &R) -> ActualState {
    let mut actual = ActualState::default();
    for (name, set) in &state.mirror_sets {
        let images =
            futures_util::stream::iter(set.images.iter().map(|image| observe_image(registry, name, set, image)))
                .buffered(IMAGES_IN_FLIGHT)
                .collect::<Vec<_>>()
                .await;
        actual.mirror_sets.insert(name.clone(), images);
    }
    actual
}

/// Everything observed for one image: its tags, then what is attached to their digests, then
/// the signatures of what would be copied.
async fn observe_image<R: Registry>(
    registry: &R,
    set_name: &str,
    set: &crate::desired::MirrorSet,
    image: &crate::desired::MirrorImage,
) -> ImageObservation {
    let target = set.target.repository_for(&image.source);
    let tags = tags::observe(registry, set, image, &target).await;
    let attached = attached::observe(registry, &image.source, &target, &tags).await;
    let signatures = signatures::observe(registry, set_name, set, &image.source, &tags, &attached.tags).await;
    ImageObservation {
        source: image.source.clone(),
        target,
        upstream_tags: tags.upstream_tags,
        selected: tags.selected,
        upstream: tags.upstream,
        mirror: tags.mirror,
        mirror_tags: tags.mirror_tags,
        upstream_children: tags.upstream_children,
        signatures,
        attached: attached.tags,
        attached_unknown: attached.unknown,
        referrers: attached.referrers,
    }
}

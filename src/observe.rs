//! What the registries hold now, for every image the desired state names.
//!
//! Each fact is `Present`, `Absent` or `Unknown(reason)`: when Lifeboat could not look
//! (upstream down, 5xx, timeout, refused credentials), the item is Unknown, never Absent, so
//! the plan can never delete or overwrite on the strength of an outage. Requests are
//! digest-first: one HEAD per upstream tag and one per mirror tag; tag lists are read only
//! when tag rules or pruning need them.

use std::collections::{BTreeMap, BTreeSet};

use futures_util::StreamExt;
use serde::Serialize;

use crate::desired::{DesiredState, Digest, ImageRef, MirrorSet, Platforms, Repository, Selection, SignaturePolicy};
use crate::registry::cosign::attached_tag;
use crate::registry::{Registry, RegistryError, Resolved, Verdict};

/// What cosign and OCI referrers keep next to an image, by tag suffix: signatures,
/// attestations, SBOMs, and the referrers fallback tag (no suffix).
pub const ATTACHED_SUFFIXES: [&str; 4] = ["sig", "att", "sbom", ""];

/// One observed fact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", content = "value", rename_all = "camelCase")]
pub enum Observed<T> {
    Present(T),
    Absent,
    Unknown(String),
}

impl<T> Observed<T> {
    fn from_lookup(result: Result<Option<T>, RegistryError>) -> Self {
        match result {
            Ok(Some(v)) => Observed::Present(v),
            Ok(None) => Observed::Absent,
            Err(e) => Observed::Unknown(e.to_string()),
        }
    }
}

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

pub async fn observe<R: Registry>(state: &DesiredState, registry: &R) -> ActualState {
    let mut actual = ActualState::default();
    for (name, set) in &state.mirror_sets {
        let images =
            futures_util::stream::iter(set.images.iter().map(|image| observe_image(registry, name, set, image)))
                .buffered(8)
                .collect::<Vec<_>>()
                .await;
        actual.mirror_sets.insert(name.clone(), images);
    }
    actual
}

async fn observe_image<R: Registry>(
    registry: &R,
    set_name: &str,
    set: &MirrorSet,
    image: &crate::desired::MirrorImage,
) -> ImageObservation {
    let target = set.target.repository_for(&image.source);
    // Mirror manifests are read (GET, not HEAD) when a filtered index must say its source, or
    // when pruning must know which manifests kept indexes name.
    let read_source = matches!(set.platforms, Platforms::Only(_)) || set.prune;
    let (upstream_tags, selected, pinned) = match &image.selection {
        Selection::Pinned { digest, tag } => {
            (None, Observed::Present(BTreeSet::from([tag.clone()])), Some(digest.clone()))
        }
        Selection::Tags { tags, rules: None } => (None, Observed::Present(tags.clone()), None),
        Selection::Tags { tags, rules: Some(rules) } => {
            let listed = Observed::from_lookup(registry.list_tags(&image.source).await);
            let selected = match &listed {
                Observed::Present(all) => {
                    let mut chosen = rules.select(all);
                    chosen.extend(tags.iter().cloned());
                    Observed::Present(chosen)
                }
                Observed::Unknown(why) => Observed::Unknown(why.clone()),
                Observed::Absent => Observed::Present(tags.clone()),
            };
            (Some(listed), selected, None)
        }
    };
    // Fixed tags are looked up even when the rules' tag list is Unknown.
    let mut lookup_tags: BTreeSet<String> = image.fixed_tags().map(str::to_string).collect();
    if let Observed::Present(chosen) = &selected {
        lookup_tags.extend(chosen.iter().cloned());
    }
    let mirror_tags = if set.prune { Some(Observed::from_lookup(registry.list_tags(&target).await)) } else { None };
    let mut mirror_lookups = lookup_tags.clone();
    if let Some(Observed::Present(existing)) = &mirror_tags {
        mirror_lookups.extend(existing.iter().cloned());
    }
    // Carrying attached tags needs both tag lists (one request each, reused when read above)
    // and, when upstream has any such tag, the children of upstream indexes.
    let carry = set.signatures.copy;
    let (upstream_list, mirror_list) = if carry {
        let upstream_list = async {
            match &upstream_tags {
                Some(Observed::Present(t)) => Observed::Present(t.clone()),
                _ => Observed::from_lookup(registry.list_tags(&image.source).await),
            }
        };
        let mirror_list = async {
            match &mirror_tags {
                Some(Observed::Present(t)) => Observed::Present(t.clone()),
                _ => Observed::from_lookup(registry.list_tags(&target).await),
            }
        };
        let (u, m) = futures_util::join!(upstream_list, mirror_list);
        (Some(u), Some(m))
    } else {
        (None, None)
    };
    let upstream_attached: BTreeSet<String> = match &upstream_list {
        Some(Observed::Present(tags)) => tags.iter().filter(|t| t.starts_with("sha256-")).cloned().collect(),
        _ => BTreeSet::new(),
    };
    let read_upstream = !upstream_attached.is_empty();
    let upstream_results = futures_util::stream::iter(lookup_tags.iter().map(|tag| {
        let pinned = pinned.clone();
        let source = &image.source;
        async move {
            let fact = match pinned {
                Some(digest) if !read_upstream => Observed::Present(Resolved::of(digest)),
                Some(digest) => {
                    // The pin is what gets copied; reading it only finds its children.
                    let read = registry.resolve(source, digest.as_str(), true).await;
                    match read {
                        Ok(Some(r)) => Observed::Present(r),
                        _ => Observed::Present(Resolved::of(digest)),
                    }
                }
                None => Observed::from_lookup(registry.resolve(source, tag, read_upstream).await),
            };
            (tag.clone(), fact)
        }
    }))
    .buffer_unordered(LOOKUPS_IN_FLIGHT)
    .collect::<BTreeMap<_, _>>();
    let mirror_results = futures_util::stream::iter(mirror_lookups.iter().map(|tag| {
        let target = &target;
        async move {
            let fact = Observed::from_lookup(
                registry.resolve(target, tag, read_source || read_upstream).await.map(|r| r.map(MirrorTag::from)),
            );
            (tag.clone(), fact)
        }
    }))
    .buffer_unordered(LOOKUPS_IN_FLIGHT)
    .collect::<BTreeMap<_, _>>();
    let (upstream_resolved, mirror): (BTreeMap<String, Observed<Resolved>>, _) =
        futures_util::join!(upstream_results, mirror_results);
    let mut upstream_children = BTreeMap::new();
    let upstream: BTreeMap<String, Observed<Digest>> = upstream_resolved
        .into_iter()
        .map(|(tag, fact)| {
            let fact = match fact {
                Observed::Present(r) => {
                    if !r.children.is_empty() {
                        upstream_children.insert(r.digest.clone(), r.children);
                    }
                    Observed::Present(r.digest)
                }
                Observed::Absent => Observed::Absent,
                Observed::Unknown(why) => Observed::Unknown(why),
            };
            (tag, fact)
        })
        .collect();

    let (attached, referrers, attached_unknown) = match (&upstream_list, &mirror_list) {
        (Some(Observed::Present(_)), Some(m)) => {
            let mirror_names: BTreeSet<&String> = match m {
                Observed::Present(tags) => tags.iter().collect(),
                _ => BTreeSet::new(),
            };
            let mirror_unknown = match m {
                Observed::Unknown(why) => Some(why.clone()),
                _ => None,
            };
            let mut subjects = BTreeSet::new();
            for digest in upstream.values().filter_map(|f| match f {
                Observed::Present(d) => Some(d),
                _ => None,
            }) {
                subjects.insert(digest.clone());
                subjects.extend(upstream_children.get(digest).into_iter().flatten().cloned());
            }
            let wanted: Vec<(Digest, String)> = subjects
                .iter()
                .flat_map(|d| ATTACHED_SUFFIXES.iter().map(move |s| (d.clone(), attached_tag(d, s))))
                .filter(|(_, tag)| upstream_attached.contains(tag))
                .collect();
            let found = futures_util::stream::iter(wanted.into_iter().map(|(subject, tag)| {
                let in_mirror = mirror_names.contains(&tag);
                let mirror_unknown = mirror_unknown.clone();
                let source = &image.source;
                let target = &target;
                async move {
                    let up = digest_at(registry, source, &tag).await;
                    let down = match (mirror_unknown, in_mirror) {
                        (Some(why), _) => Observed::Unknown(why),
                        (None, false) => Observed::Absent,
                        (None, true) => digest_at(registry, target, &tag).await,
                    };
                    AttachedTag { subject, tag, upstream: up, mirror: down }
                }
            }))
            .buffer_unordered(LOOKUPS_IN_FLIGHT)
            .collect::<Vec<_>>()
            .await;
            let mut found = found;
            found.sort_by(|a, b| a.tag.cmp(&b.tag));
            let (referrers, unknown) =
                observe_referrers(registry, &image.source, &target, &subjects, &upstream_attached).await;
            (found, referrers, unknown)
        }
        (Some(Observed::Unknown(why)), _) => (Vec::new(), Vec::new(), Some(why.clone())),
        _ => (Vec::new(), Vec::new(), None),
    };
    // Signatures are checked for what would be copied: upstream digests the mirror tag does
    // not hold already, and digests whose signature tag changed upstream (it replaces the
    // mirror's only if it passes too).
    let mut to_verify = BTreeSet::new();
    if set.signatures.policy != SignaturePolicy::Off {
        for (tag, fact) in &upstream {
            let Observed::Present(digest) = fact else { continue };
            let held = matches!(mirror.get(tag), Some(Observed::Present(m)) if m.holds(digest, &set.platforms));
            if !held {
                to_verify.insert(digest.clone());
            }
        }
        to_verify.extend(
            attached
                .iter()
                .filter(|a| a.tag.ends_with(".sig"))
                .filter(|a| matches!((&a.upstream, &a.mirror), (Observed::Present(u), Observed::Present(m)) if u != m))
                .map(|a| a.subject.clone()),
        );
    }
    let signatures = futures_util::stream::iter(to_verify.into_iter().map(|digest| {
        let source = &image.source;
        async move {
            let verdict = match registry.verify(set_name, source, &digest).await {
                Ok(v) => Observed::Present(v),
                Err(e) => Observed::Unknown(e.to_string()),
            };
            (digest, verdict)
        }
    }))
    .buffer_unordered(LOOKUPS_IN_FLIGHT)
    .collect::<BTreeMap<_, _>>()
    .await;
    ImageObservation {
        source: image.source.clone(),
        target,
        upstream_tags,
        selected,
        upstream,
        mirror,
        mirror_tags,
        upstream_children,
        signatures,
        attached,
        attached_unknown,
        referrers,
    }
}

/// The digest `reference` points at.
async fn digest_at<R: Registry>(registry: &R, repository: &Repository, reference: &str) -> Observed<Digest> {
    Observed::from_lookup(registry.resolve(repository, reference, false).await.map(|r| r.map(|r| r.digest)))
}

/// Referrers of `subjects` through the upstream referrers API, and what the mirror lacks.
/// Nothing when upstream has no such API (its fallback tags are attached tags instead).
async fn observe_referrers<R: Registry>(
    registry: &R,
    source: &Repository,
    target: &Repository,
    subjects: &BTreeSet<Digest>,
    upstream_attached: &BTreeSet<String>,
) -> (Vec<Referrers>, Option<String>) {
    let mut out = Vec::new();
    for subject in subjects {
        let listed = match registry.referrers(source, subject).await {
            Ok(Some(d)) => d,
            Ok(None) => continue,
            Err(e) => return (out, Some(e.to_string())),
        };
        // Only descriptors naming a valid digest are carried (and listed in the mirror).
        let (digests, descriptors): (Vec<Digest>, Vec<serde_json::Value>) =
            listed.into_iter().filter_map(|d| Some((d.get("digest")?.as_str()?.parse().ok()?, d))).unzip();
        if descriptors.is_empty() {
            continue;
        }
        let mut missing = Observed::Present(Vec::new());
        for digest in &digests {
            match registry.resolve(target, digest.as_str(), false).await {
                Ok(Some(_)) => {}
                Ok(None) => {
                    if let Observed::Present(list) = &mut missing {
                        list.push(digest.clone());
                    }
                }
                Err(e) => missing = Observed::Unknown(e.to_string()),
            }
        }
        let fallback_tag = attached_tag(subject, "");
        // Upstream's own fallback tag, when it has one, is copied as it is.
        let fallback = if upstream_attached.contains(&fallback_tag) {
            false
        } else {
            match registry.referrers(target, subject).await {
                Ok(Some(_)) => false,
                Ok(None) => match registry.resolve(target, &fallback_tag, true).await {
                    Ok(Some(index)) => !digests.iter().all(|d| index.children.contains(d)),
                    Ok(None) => true,
                    Err(e) => {
                        missing = Observed::Unknown(e.to_string());
                        false
                    }
                },
                Err(e) => {
                    missing = Observed::Unknown(e.to_string());
                    false
                }
            }
        };
        out.push(Referrers { subject: subject.clone(), descriptors, missing, fallback });
    }
    (out, None)
}

/// One image a PrePullSet or BackupPolicy selects from the mirror.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selected {
    pub repository: Repository,
    /// A tag, or a digest for images selected by digest.
    pub reference: String,
    pub mirror_set: Option<String>,
    pub source: Option<String>,
}

impl Selected {
    pub fn full(&self) -> String {
        let sep = if self.reference.contains(':') { '@' } else { ':' };
        format!("{}{sep}{}", self.repository, self.reference)
    }
}

/// The images named by MirrorSets and explicit references, as mirrored: the tags each
/// MirrorSet fixes, the mirror's tags its rules select, and the explicit images. Reads only
/// the mirror (tag lists of rule-selected images), never upstream. Also returns the mirror
/// repositories with tag rules that the mirror does not have at all.
pub async fn mirrored<R: Registry>(
    state: &DesiredState,
    mirror_sets: &BTreeSet<String>,
    images: &BTreeSet<ImageRef>,
    registry: &R,
) -> Result<(Vec<Selected>, Vec<String>), RegistryError> {
    let mut out = Vec::new();
    let mut absent = Vec::new();
    for name in mirror_sets {
        let Some(set) = state.mirror_sets.get(name) else { continue };
        for image in &set.images {
            let repository = set.target.repository_for(&image.source);
            let mut tags: BTreeSet<String> = image.fixed_tags().map(str::to_string).collect();
            if let Selection::Tags { rules: Some(rules), .. } = &image.selection {
                let listed = match registry.list_tags(&repository).await? {
                    Some(tags) => tags,
                    None => {
                        absent.push(repository.to_string());
                        Vec::new()
                    }
                };
                let listed: Vec<String> = listed.into_iter().filter(|t| !t.starts_with("sha256-")).collect();
                tags.extend(rules.select(&listed));
            }
            out.extend(tags.into_iter().map(|tag| Selected {
                source: Some(format!("{}:{tag}", image.source)),
                repository: repository.clone(),
                reference: tag,
                mirror_set: Some(name.clone()),
            }));
        }
    }
    for image in images {
        let reference = match (&image.tag, &image.digest) {
            (_, Some(digest)) => digest.to_string(),
            (Some(tag), None) => tag.clone(),
            (None, None) => continue,
        };
        out.push(Selected { repository: image.repository.clone(), reference, mirror_set: None, source: None });
    }
    out.sort_by(|a, b| (&a.repository.to_string(), &a.reference).cmp(&(&b.repository.to_string(), &b.reference)));
    out.dedup_by(|a, b| a.repository == b.repository && a.reference == b.reference);
    Ok((out, absent))
}

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

use crate::desired::{DesiredState, Digest, MirrorSet, Platforms, Repository, Selection};
use crate::registry::{Registry, RegistryError, Resolved};

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
        let images = futures_util::stream::iter(set.images.iter().map(|image| observe_image(registry, set, image)))
            .buffered(8)
            .collect::<Vec<_>>()
            .await;
        actual.mirror_sets.insert(name.clone(), images);
    }
    actual
}

async fn observe_image<R: Registry>(
    registry: &R,
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
    let upstream_results = futures_util::stream::iter(lookup_tags.iter().map(|tag| {
        let pinned = pinned.clone();
        let source = &image.source;
        async move {
            let fact = match pinned {
                Some(digest) => Observed::Present(digest),
                None => Observed::from_lookup(registry.resolve(source, tag, false).await.map(|r| r.map(|r| r.digest))),
            };
            (tag.clone(), fact)
        }
    }))
    .buffer_unordered(LOOKUPS_IN_FLIGHT)
    .collect::<BTreeMap<_, _>>();
    let mirror_results = futures_util::stream::iter(mirror_lookups.iter().map(|tag| {
        let target = &target;
        async move {
            let fact =
                Observed::from_lookup(registry.resolve(target, tag, read_source).await.map(|r| r.map(MirrorTag::from)));
            (tag.clone(), fact)
        }
    }))
    .buffer_unordered(LOOKUPS_IN_FLIGHT)
    .collect::<BTreeMap<_, _>>();
    let (upstream, mirror) = futures_util::join!(upstream_results, mirror_results);
    ImageObservation { source: image.source.clone(), target, upstream_tags, selected, upstream, mirror, mirror_tags }
}

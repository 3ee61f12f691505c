//! An image's tags: which ones the set selects (fixed tags, and what its rules choose from
//! upstream's tag list), and the digest each points at upstream and in the mirror.
//!
//! Tag lists are read only when needed: upstream's for tag rules and for carrying attached
//! tags, the mirror's for pruning and for carrying. Each is read once and reused.

use std::collections::{BTreeMap, BTreeSet};

use futures_util::StreamExt;

use super::{LOOKUPS_IN_FLIGHT, MirrorTag, Observed};
use crate::desired::{Digest, MirrorImage, MirrorSet, Platforms, Repository, Selection};
use crate::registry::{Registry, Resolved};

/// The tag lists of both sides of an image.
pub(super) struct TagLists {
    pub upstream: Observed<Vec<String>>,
    pub mirror: Observed<Vec<String>>,
}

/// What [`observe`] found.
pub(super) struct Tags {
    pub upstream_tags: Option<Observed<Vec<String>>>,
    pub selected: Observed<BTreeSet<String>>,
    pub upstream: BTreeMap<String, Observed<Digest>>,
    pub mirror: BTreeMap<String, Observed<MirrorTag>>,
    pub mirror_tags: Option<Observed<Vec<String>>>,
    pub upstream_children: BTreeMap<Digest, Vec<Digest>>,
    /// Both tag lists, when the set carries attached tags (`None` when it does not).
    pub carried_lists: Option<TagLists>,
    /// Upstream's attached tags (`sha256-…`), from its tag list.
    pub upstream_attached: BTreeSet<String>,
}

pub(super) async fn observe<R: Registry>(
    registry: &R,
    set: &MirrorSet,
    image: &MirrorImage,
    target: &Repository,
) -> Tags {
    // Mirror manifests are read (GET, not HEAD) when a filtered index must say its source, or
    // when pruning must know which manifests kept indexes name.
    let read_source = matches!(set.platforms, Platforms::Only(_)) || set.prune;
    let (upstream_tags, selected, pinned) = select(registry, image).await;
    // Fixed tags are looked up even when the rules' tag list is Unknown.
    let mut lookup_tags: BTreeSet<String> = image.fixed_tags().map(str::to_string).collect();
    if let Observed::Present(chosen) = &selected {
        lookup_tags.extend(chosen.iter().cloned());
    }
    let mirror_tags = if set.prune { Some(Observed::from_lookup(registry.list_tags(target).await)) } else { None };
    let mut mirror_lookups = lookup_tags.clone();
    if let Some(Observed::Present(existing)) = &mirror_tags {
        mirror_lookups.extend(existing.iter().cloned());
    }
    let carried_lists = if set.signatures.copy {
        Some(lists(registry, &image.source, target, upstream_tags.as_ref(), mirror_tags.as_ref()).await)
    } else {
        None
    };
    let upstream_attached: BTreeSet<String> = match &carried_lists {
        Some(TagLists { upstream: Observed::Present(tags), .. }) => {
            tags.iter().filter(|t| t.starts_with("sha256-")).cloned().collect()
        }
        _ => BTreeSet::new(),
    };
    // Upstream manifests are read only when attached tags exist: their indexes' children may
    // carry signatures too.
    let read_upstream = !upstream_attached.is_empty();
    let upstream_results = futures_util::stream::iter(lookup_tags.iter().map(|tag| {
        let pinned = pinned.clone();
        let source = &image.source;
        async move {
            let fact = match pinned {
                Some(digest) => Observed::Present(pinned_digest(registry, source, digest, read_upstream).await),
                None => Observed::from_lookup(registry.resolve(source, tag, read_upstream).await),
            };
            (tag.clone(), fact)
        }
    }))
    .buffer_unordered(LOOKUPS_IN_FLIGHT)
    .collect::<BTreeMap<_, _>>();
    let mirror_results = futures_util::stream::iter(mirror_lookups.iter().map(|tag| async move {
        let found = registry.resolve(target, tag, read_source || read_upstream).await;
        (tag.clone(), Observed::from_lookup(found.map(|r| r.map(MirrorTag::from))))
    }))
    .buffer_unordered(LOOKUPS_IN_FLIGHT)
    .collect::<BTreeMap<_, _>>();
    let (upstream_resolved, mirror): (BTreeMap<String, Observed<Resolved>>, _) =
        futures_util::join!(upstream_results, mirror_results);
    let mut upstream_children = BTreeMap::new();
    let upstream = upstream_resolved
        .into_iter()
        .map(|(tag, fact)| {
            let fact = fact.map(|r| {
                if !r.children.is_empty() {
                    upstream_children.insert(r.digest.clone(), r.children);
                }
                r.digest
            });
            (tag, fact)
        })
        .collect();
    Tags { upstream_tags, selected, upstream, mirror, mirror_tags, upstream_children, carried_lists, upstream_attached }
}

/// The tags the image selects: `(upstream tag list when read, selection, digest pin)`.
async fn select<R: Registry>(
    registry: &R,
    image: &MirrorImage,
) -> (Option<Observed<Vec<String>>>, Observed<BTreeSet<String>>, Option<Digest>) {
    match &image.selection {
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
                // A repository missing upstream selects its fixed tags only (each then reads
                // as missing upstream).
                Observed::Absent => Observed::Present(tags.clone()),
            };
            (Some(listed), selected, None)
        }
    }
}

/// A digest pin: the pin is what gets copied, so it is known without looking. Its manifest is
/// read only to find an index's children (for their attached tags); when that read fails or
/// finds nothing, the pin stands and only the children stay unknown: the attached tags of the
/// children are then not carried in this pass, which the next pass makes good.
async fn pinned_digest<R: Registry>(registry: &R, source: &Repository, digest: Digest, read: bool) -> Resolved {
    if !read {
        return Resolved::of(digest);
    }
    match registry.resolve(source, digest.as_str(), true).await {
        Ok(Some(r)) if r.digest == digest => r,
        Ok(_) => Resolved::of(digest),
        Err(e) => {
            tracing::debug!(image = %format!("{source}@{digest}"), error = %e, "the pin's children are unknown");
            Resolved::of(digest)
        }
    }
}

/// Both tag lists for carrying attached tags, reusing what was read already.
async fn lists<R: Registry>(
    registry: &R,
    source: &Repository,
    target: &Repository,
    upstream_tags: Option<&Observed<Vec<String>>>,
    mirror_tags: Option<&Observed<Vec<String>>>,
) -> TagLists {
    let upstream = async {
        match upstream_tags {
            Some(Observed::Present(t)) => Observed::Present(t.clone()),
            _ => Observed::from_lookup(registry.list_tags(source).await),
        }
    };
    let mirror = async {
        match mirror_tags {
            Some(Observed::Present(t)) => Observed::Present(t.clone()),
            _ => Observed::from_lookup(registry.list_tags(target).await),
        }
    };
    let (upstream, mirror) = futures_util::join!(upstream, mirror);
    TagLists { upstream, mirror }
}

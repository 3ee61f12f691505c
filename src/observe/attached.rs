//! What is attached to an image's digests: cosign signature, attestation and SBOM tags
//! (`sha256-<hex>.sig`, `.att`, `.sbom`), the OCI referrers fallback tag (`sha256-<hex>`), and
//! OCI referrers listed by an upstream with the referrers API, with what the mirror holds of
//! each. Observed only when the set carries them (`signatures.copy`).

use std::collections::BTreeSet;

use futures_util::StreamExt;

use super::tags::Tags;
use super::{ATTACHED_SUFFIXES, AttachedTag, LOOKUPS_IN_FLIGHT, Observed, Referrers};
use crate::desired::{Digest, Repository};
use crate::registry::Registry;
use crate::registry::cosign::attached_tag;

/// What [`observe`] found.
#[derive(Default)]
pub(super) struct Attached {
    pub tags: Vec<AttachedTag>,
    pub referrers: Vec<Referrers>,
    /// Why attached tags could not be looked at, when they could not.
    pub unknown: Option<String>,
}

pub(super) async fn observe<R: Registry>(
    registry: &R,
    source: &Repository,
    target: &Repository,
    tags: &Tags,
) -> Attached {
    let Some(super::tags::TagLists { upstream: upstream_list, mirror: mirror_list }) = &tags.carried_lists else {
        return Attached::default();
    };
    match upstream_list {
        Observed::Present(_) => {}
        Observed::Unknown(why) => return Attached { unknown: Some(why.clone()), ..Attached::default() },
        Observed::Absent => return Attached::default(),
    }
    let mirror_names: BTreeSet<&String> = mirror_list.present().into_iter().flatten().collect();
    let mirror_unknown = mirror_list.unknown().map(str::to_string);
    // The digests upstream tags point at, and the manifests their indexes name.
    let mut subjects = BTreeSet::new();
    for digest in tags.upstream.values().filter_map(Observed::present) {
        subjects.insert(digest.clone());
        subjects.extend(tags.upstream_children.get(digest).into_iter().flatten().cloned());
    }
    let wanted: Vec<(Digest, String)> = subjects
        .iter()
        .flat_map(|d| ATTACHED_SUFFIXES.iter().map(move |s| (d.clone(), attached_tag(d, s))))
        .filter(|(_, tag)| tags.upstream_attached.contains(tag))
        .collect();
    let mut found = futures_util::stream::iter(wanted.into_iter().map(|(subject, tag)| {
        let in_mirror = mirror_names.contains(&tag);
        let mirror_unknown = mirror_unknown.clone();
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
    found.sort_by(|a, b| a.tag.cmp(&b.tag));
    let (referrers, unknown) = observe_referrers(registry, source, target, &subjects, &tags.upstream_attached).await;
    Attached { tags: found, referrers, unknown }
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

//! The signatures of what a pass would copy: upstream digests the mirror does not hold yet,
//! and digests whose signature tag changed upstream (the new signature replaces the mirror's
//! only if it passes too). Checked against the set's policy; nothing when the policy is off.

use std::collections::{BTreeMap, BTreeSet};

use futures_util::StreamExt;

use super::tags::Tags;
use super::{AttachedTag, LOOKUPS_IN_FLIGHT, Observed};
use crate::desired::{Digest, MirrorSet, Repository, SignaturePolicy};
use crate::registry::{Registry, Verdict};

pub(super) async fn observe<R: Registry>(
    registry: &R,
    set_name: &str,
    set: &MirrorSet,
    source: &Repository,
    tags: &Tags,
    attached: &[AttachedTag],
) -> BTreeMap<Digest, Observed<Verdict>> {
    if set.signatures.policy == SignaturePolicy::Off {
        return BTreeMap::new();
    }
    let mut to_verify = BTreeSet::new();
    for (tag, fact) in &tags.upstream {
        let Observed::Present(digest) = fact else { continue };
        let held = matches!(tags.mirror.get(tag), Some(Observed::Present(m)) if m.holds(digest, &set.platforms));
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
    futures_util::stream::iter(to_verify.into_iter().map(|digest| async move {
        let verdict = Observed::from_read(registry.verify(set_name, source, &digest).await);
        (digest, verdict)
    }))
    .buffer_unordered(LOOKUPS_IN_FLIGHT)
    .collect::<BTreeMap<_, _>>()
    .await
}

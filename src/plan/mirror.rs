//! Planning for MirrorSets: copy what is missing, follow or keep moved tags, prune what left
//! the set, and never act on what could not be observed.

use std::collections::{BTreeMap, BTreeSet};

use super::{Action, Change, Note, NoteKind, Plan, backup_tag, is_protected_tag};
use crate::desired::{DesiredState, Digest, MirrorSet, OnTagMove, Platforms, Repository, Selection, SignaturePolicy};
use crate::observe::{ActualState, ImageObservation, MirrorTag, Observed};
use crate::registry::{Signer, Verdict};

pub(super) fn plan(desired: &DesiredState, actual: &ActualState) -> Plan {
    let mut plan = Plan::default();
    // Tags wanted in each mirror repository by any set (None: some set's choice is Unknown),
    // so one set never prunes what another writes.
    let mut wanted: BTreeMap<Repository, Option<BTreeSet<String>>> = BTreeMap::new();
    for name in desired.mirror_sets.keys() {
        for observation in actual.mirror_sets.get(name).into_iter().flatten() {
            let entry = wanted.entry(observation.target.clone()).or_insert_with(|| Some(BTreeSet::new()));
            match (&observation.selected, entry.as_mut()) {
                (Observed::Present(tags), Some(all)) => all.extend(tags.iter().cloned()),
                _ => *entry = None,
            }
        }
    }
    for (name, set) in &desired.mirror_sets {
        let observations = actual.mirror_sets.get(name).map(Vec::as_slice).unwrap_or_default();
        for (image, observation) in set.images.iter().zip(observations) {
            plan_image(&mut plan, name, set, &image.selection, observation);
        }
    }
    // Prunes are planned once every copy is, so they can see what each repository will hold.
    let mut pruned = BTreeSet::new();
    for name in desired.mirror_sets.iter().filter(|(_, s)| s.prune).map(|(n, _)| n) {
        for observation in actual.mirror_sets.get(name).into_iter().flatten() {
            if !pruned.insert(observation.target.clone()) {
                continue;
            }
            prune(&mut plan, name, observation, wanted.get(&observation.target).cloned().flatten());
        }
    }
    plan
}

fn note(plan: &mut Plan, set: &str, subject: String, reason: String, kind: NoteKind) {
    plan.notes.push(Note { mirror_set: set.to_string(), subject, reason, kind });
}

/// Whether the signature policy lets `digest` into the mirror: `Ok` with the accepted signers
/// and a warning for `optional`, or `Err((reason, kind))` when it must stay out.
fn gate(
    set: &MirrorSet,
    o: &ImageObservation,
    digest: &Digest,
) -> Result<(Vec<Signer>, Option<String>), (String, NoteKind)> {
    let policy = set.signatures.policy;
    if policy == SignaturePolicy::Off {
        return Ok((Vec::new(), None));
    }
    match o.signatures.get(digest) {
        Some(Observed::Present(Verdict::Verified { signers })) => Ok((signers.clone(), None)),
        Some(Observed::Present(Verdict::Rejected { reason })) if policy == SignaturePolicy::Optional => {
            Ok((Vec::new(), Some(format!("signature check failed ({reason}); mirrored anyway: policy optional"))))
        }
        Some(Observed::Present(Verdict::Rejected { reason })) => {
            Err((format!("not mirrored: {} fails the signature policy: {reason}", digest.short()), NoteKind::Rejected))
        }
        Some(Observed::Unknown(why)) if policy == SignaturePolicy::Optional => {
            Ok((Vec::new(), Some(format!("signatures could not be checked ({why}); mirrored anyway: policy optional"))))
        }
        Some(Observed::Unknown(why)) => {
            Err((format!("not mirrored until its signatures can be checked: {why}"), NoteKind::Unknown))
        }
        Some(Observed::Absent) | None => {
            Err(("not mirrored: its signatures were not checked".into(), NoteKind::Unknown))
        }
    }
}

fn short(d: &Digest) -> &str {
    d.short()
}

fn plan_image(plan: &mut Plan, name: &str, set: &MirrorSet, selection: &Selection, o: &ImageObservation) {
    if let Observed::Unknown(why) = &o.selected {
        note(
            plan,
            name,
            format!("tags of {} chosen by rules", o.source),
            format!("upstream tag list unknown: {why}"),
            NoteKind::Unknown,
        );
    }
    if let Some(Observed::Absent) = &o.upstream_tags {
        note(plan, name, o.source.to_string(), "the upstream repository does not exist".into(), NoteKind::Unavailable);
    }
    let pinned = matches!(selection, Selection::Pinned { .. });
    // Upstream digests the mirror holds, or receives in this pass: their attached tags follow.
    let mut carried = BTreeSet::new();
    for (tag, upstream) in &o.upstream {
        let subject = format!("{}:{tag}", o.target);
        let mirror = o.mirror.get(tag).cloned().unwrap_or(Observed::Unknown("not looked up".into()));
        let upstream = match upstream {
            Observed::Present(d) => d,
            Observed::Absent => {
                let (reason, kind) = match mirror {
                    Observed::Present(_) => (
                        format!("{}:{tag} no longer exists upstream; the mirror keeps its copy", o.source),
                        NoteKind::Kept,
                    ),
                    Observed::Absent => (
                        format!(
                            "{}:{tag} does not exist upstream, and the mirror does not hold it: check the tag, or \
                             remove it from the set",
                            o.source
                        ),
                        NoteKind::Unavailable,
                    ),
                    Observed::Unknown(ref why) => (
                        format!("{}:{tag} does not exist upstream, and the mirror is unknown: {why}", o.source),
                        NoteKind::Unknown,
                    ),
                };
                note(plan, name, subject, reason, kind);
                continue;
            }
            Observed::Unknown(why) => {
                let reason = match &mirror {
                    Observed::Present(_) => format!("upstream unknown ({why}); the mirror keeps its copy"),
                    _ => format!("missing in the mirror, and upstream is unknown: {why}"),
                };
                note(plan, name, subject, reason, NoteKind::Unknown);
                continue;
            }
        };
        let subset = match &set.platforms {
            Platforms::All => String::new(),
            Platforms::Only(p) => format!(
                " (only {}: the mirrored index gets a digest of its own)",
                p.iter().cloned().collect::<Vec<_>>().join(", ")
            ),
        };
        if let Observed::Present(held) = &mirror
            && held.holds(upstream, &set.platforms)
        {
            plan.in_sync += 1;
            carried.insert(upstream.clone());
            continue;
        }
        if let Observed::Unknown(why) = &mirror {
            note(plan, name, subject, format!("mirror unknown, nothing done: {why}"), NoteKind::Unknown);
            continue;
        }
        let keeps = matches!(&mirror, Observed::Present(_)) && !pinned && set.on_tag_move == OnTagMove::Keep;
        let (signed_by, warning) = match gate(set, o, upstream) {
            Ok(allowed) => allowed,
            Err(_) if keeps => (Vec::new(), None),
            Err((reason, kind)) => {
                note(plan, name, subject, reason, kind);
                continue;
            }
        };
        let signed = match (&warning, signed_by.is_empty()) {
            (Some(w), _) => format!("; WARNING: {w}"),
            (None, false) => format!("; signed by {}", Verdict::signers_text(&signed_by)),
            (None, true) => String::new(),
        };
        let recheck =
            (set.signatures.policy != SignaturePolicy::Off && set.signatures.copy).then_some(set.signatures.policy);
        let copy = Action::Copy {
            source: o.source.clone(),
            digest: upstream.clone(),
            target: o.target.clone(),
            tag: tag.clone(),
            platforms: set.platforms.clone(),
            signed_by,
            recheck,
        };
        match mirror {
            Observed::Present(held) => {
                if moved(plan, name, set, pinned, tag, &held, upstream, copy, &signed, o) {
                    carried.insert(upstream.clone());
                }
            }
            _ => {
                carried.insert(upstream.clone());
                plan.changes.push(Change {
                    mirror_set: name.to_string(),
                    action: copy,
                    why: format!("missing in the mirror; upstream is {}{subset}{signed}", short(upstream)),
                })
            }
        }
    }
    attach(plan, name, set, o, &carried);
}

/// Copies of the signature, attestation, SBOM and referrers tags of every digest the mirror
/// holds or receives in this pass (and of the manifests its indexes name) that the mirror
/// lacks or holds in another version.
fn attach(plan: &mut Plan, name: &str, set: &MirrorSet, o: &ImageObservation, carried: &BTreeSet<Digest>) {
    if let Some(why) = &o.attached_unknown {
        note(
            plan,
            name,
            format!("signatures and attestations of {}", o.source),
            format!("not carried: upstream tag list unknown: {why}"),
            NoteKind::Unknown,
        );
    }
    let mut subjects = carried.clone();
    for digest in carried {
        subjects.extend(o.upstream_children.get(digest).into_iter().flatten().cloned());
    }
    referrers(plan, name, o, &subjects);
    for a in o.attached.iter().filter(|a| subjects.contains(&a.subject)) {
        let subject = format!("{}:{}", o.target, a.tag);
        let Observed::Present(upstream) = &a.upstream else {
            if let Observed::Unknown(why) = &a.upstream {
                note(plan, name, subject, format!("not carried: upstream unknown: {why}"), NoteKind::Unknown);
            }
            continue;
        };
        let why = match &a.mirror {
            Observed::Present(m) if m == upstream => continue,
            Observed::Unknown(why) => {
                note(plan, name, subject, format!("not carried: mirror unknown: {why}"), NoteKind::Unknown);
                continue;
            }
            Observed::Present(_) if a.tag.ends_with(".sig") && set.signatures.policy != SignaturePolicy::Off => {
                // The mirror's signature verifies today: replace it only with one that does too.
                match o.signatures.get(&a.subject) {
                    Some(Observed::Present(Verdict::Verified { .. })) => {
                        format!("{} of {} changed upstream", kind_of(&a.tag), short(&a.subject))
                    }
                    Some(Observed::Present(Verdict::Rejected { reason })) => {
                        let reason =
                            format!("the mirror keeps its signature: the new one upstream fails the policy: {reason}");
                        note(plan, name, subject, reason, NoteKind::Kept);
                        continue;
                    }
                    other => {
                        let why = match other {
                            Some(Observed::Unknown(why)) => why.clone(),
                            _ => "not checked".into(),
                        };
                        note(
                            plan,
                            name,
                            subject,
                            format!("the mirror keeps its signature: the new one upstream could not be checked: {why}"),
                            NoteKind::Unknown,
                        );
                        continue;
                    }
                }
            }
            Observed::Present(_) => format!("{} of {} changed upstream", kind_of(&a.tag), short(&a.subject)),
            Observed::Absent => format!("{} of {}", kind_of(&a.tag), short(&a.subject)),
        };
        plan.changes.push(Change {
            mirror_set: name.to_string(),
            action: Action::Attach {
                source: o.source.clone(),
                digest: upstream.clone(),
                target: o.target.clone(),
                tag: a.tag.clone(),
                subject: a.subject.clone(),
            },
            why,
        });
    }
}

/// Referrers listed by an upstream referrers API that the mirror lacks.
fn referrers(plan: &mut Plan, name: &str, o: &ImageObservation, subjects: &BTreeSet<Digest>) {
    for r in o.referrers.iter().filter(|r| subjects.contains(&r.subject)) {
        let missing = match &r.missing {
            Observed::Present(m) => m.len(),
            Observed::Unknown(why) => {
                note(
                    plan,
                    name,
                    format!("referrers of {}", short(&r.subject)),
                    format!("not carried: mirror unknown: {why}"),
                    NoteKind::Unknown,
                );
                continue;
            }
            Observed::Absent => 0,
        };
        if missing == 0 && !r.fallback {
            continue;
        }
        let mut why = format!(
            "{missing} of {} OCI referrers of {} missing in the mirror",
            r.descriptors.len(),
            short(&r.subject)
        );
        if r.fallback {
            why.push_str("; the mirror has no referrers API, so its fallback tag lists them");
        }
        plan.changes.push(Change {
            mirror_set: name.to_string(),
            action: Action::Referrers {
                source: o.source.clone(),
                target: o.target.clone(),
                subject: r.subject.clone(),
                descriptors: r.descriptors.clone(),
                fallback: r.fallback,
            },
            why,
        });
    }
}

/// What an attached tag holds, by its suffix.
fn kind_of(tag: &str) -> &'static str {
    match tag.rsplit_once('.').map(|(_, s)| s) {
        Some("sig") => "cosign signature",
        Some("att") => "attestation",
        Some("sbom") => "SBOM",
        _ => "OCI referrers (fallback tag)",
    }
}

/// The mirror holds other content than upstream under `tag`; true when the tag is copied.
#[allow(clippy::too_many_arguments)]
fn moved(
    plan: &mut Plan,
    name: &str,
    set: &MirrorSet,
    pinned: bool,
    tag: &str,
    held: &MirrorTag,
    upstream: &Digest,
    copy: Action,
    signed: &str,
    o: &ImageObservation,
) -> bool {
    let was = held.source_digest.as_ref().unwrap_or(&held.digest);
    if pinned {
        // The pin itself changed in the desired state: that is a decision, not a move.
        plan.changes.push(Change {
            mirror_set: name.to_string(),
            action: copy,
            why: format!("digest pin changed from {} to {}{signed}", short(was), short(upstream)),
        });
        return true;
    }
    let moved = format!("upstream moved {tag} from {} to {}{signed}", short(was), short(upstream));
    match set.on_tag_move {
        OnTagMove::Keep => {
            note(
                plan,
                name,
                format!("{}:{tag}", o.target),
                format!("{moved}; onTagMove: keep holds the mirror"),
                NoteKind::Kept,
            );
            false
        }
        OnTagMove::Update => {
            plan.changes.push(Change { mirror_set: name.to_string(), action: copy, why: moved });
            true
        }
        OnTagMove::Backup => {
            let backup = backup_tag(tag, &held.digest);
            plan.changes.push(Change {
                mirror_set: name.to_string(),
                action: Action::Backup {
                    target: o.target.clone(),
                    digest: held.digest.clone(),
                    tag: tag.to_string(),
                    backup_tag: backup.clone(),
                },
                why: format!("{moved}; keeping {} as {backup} first", short(&held.digest)),
            });
            plan.changes.push(Change { mirror_set: name.to_string(), action: copy, why: moved });
            true
        }
    }
}

/// Mirror tags no set selects any more, when every set's choice and the mirror are known.
/// Distribution deletes by manifest, taking every tag that points at it along, so a tag is
/// only pruned when no tag remaining after this pass (copies and backups included) shares it.
fn prune(plan: &mut Plan, name: &str, o: &ImageObservation, wanted: Option<BTreeSet<String>>) {
    let subject = format!("tags of {}", o.target);
    let Some(wanted) = wanted else {
        note(plan, name, subject, "not pruned: the tags some set selects are unknown".into(), NoteKind::Unknown);
        return;
    };
    let existing = match &o.mirror_tags {
        Some(Observed::Present(tags)) => tags,
        Some(Observed::Unknown(why)) => {
            note(plan, name, subject, format!("not pruned: mirror tag list unknown: {why}"), NoteKind::Unknown);
            return;
        }
        _ => return,
    };
    // What each tag of the repository will hold after the copies and backups of this pass;
    // upstream digests whose filtered copies arrive are kept apart (their digest is new).
    let mut after: BTreeMap<String, Digest> = existing
        .iter()
        .filter_map(|t| match o.mirror.get(t) {
            Some(Observed::Present(m)) => Some((t.clone(), m.digest.clone())),
            _ => None,
        })
        .collect();
    let mut filtered_sources = BTreeSet::new();
    for change in &plan.changes {
        match &change.action {
            Action::Copy { target, tag, digest, platforms, .. } if *target == o.target => match platforms {
                Platforms::All => {
                    after.insert(tag.clone(), digest.clone());
                }
                Platforms::Only(_) => {
                    after.remove(tag);
                    filtered_sources.insert(digest.clone());
                }
            },
            Action::Backup { target, digest, backup_tag: tag, .. } | Action::Attach { target, digest, tag, .. }
                if *target == o.target =>
            {
                after.insert(tag.clone(), digest.clone());
            }
            _ => {}
        }
    }
    let doomed: BTreeSet<&String> = existing.iter().filter(|t| !wanted.contains(*t) && !is_protected_tag(t)).collect();
    let kept: BTreeSet<&Digest> = after.iter().filter(|(t, _)| !doomed.contains(t)).map(|(_, d)| d).collect();
    // Manifests that kept indexes name: deleting one would leave an index pointing at nothing.
    let kept_children: BTreeSet<&Digest> = after
        .iter()
        .filter(|(t, _)| !doomed.contains(t))
        .filter_map(|(t, d)| match o.mirror.get(t) {
            Some(Observed::Present(m)) if m.digest == *d => Some(&m.children),
            _ => None,
        })
        .flatten()
        .collect();
    for tag in doomed {
        let subject = format!("{}:{tag}", o.target);
        match o.mirror.get(tag) {
            Some(Observed::Present(m))
                if kept.contains(&m.digest)
                    || kept_children.contains(&m.digest)
                    || filtered_sources.contains(&m.digest)
                    || m.source_digest.as_ref().is_some_and(|s| filtered_sources.contains(s)) =>
            {
                note(
                    plan,
                    name,
                    subject,
                    "not pruned: a kept tag shares its manifest, and deleting it would remove both".into(),
                    NoteKind::Kept,
                )
            }
            Some(Observed::Present(m)) => plan.changes.push(Change {
                mirror_set: name.to_string(),
                action: Action::Prune { target: o.target.clone(), tag: tag.clone(), digest: m.digest.clone() },
                why: "no longer selected by any MirrorSet (prune: true)".into(),
            }),
            Some(Observed::Unknown(why)) => {
                note(plan, name, subject, format!("not pruned: mirror unknown: {why}"), NoteKind::Unknown)
            }
            _ => {}
        }
    }
}

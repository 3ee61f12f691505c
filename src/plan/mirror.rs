//! Planning for MirrorSets: copy what is missing, follow or keep moved tags, prune what left
//! the set, and never act on what could not be observed.

use std::collections::{BTreeMap, BTreeSet};

use super::{Action, Change, Note, Plan, backup_tag, is_protected_tag};
use crate::desired::{DesiredState, Digest, MirrorSet, OnTagMove, Platforms, Repository, Selection};
use crate::observe::{ActualState, ImageObservation, MirrorTag, Observed};

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

fn note(plan: &mut Plan, set: &str, subject: String, reason: String, unknown: bool) {
    plan.notes.push(Note { mirror_set: set.to_string(), subject, reason, unknown });
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
            true,
        );
    }
    if let Some(Observed::Absent) = &o.upstream_tags {
        note(plan, name, o.source.to_string(), "the upstream repository does not exist".into(), false);
    }
    let pinned = matches!(selection, Selection::Pinned { .. });
    for (tag, upstream) in &o.upstream {
        let subject = format!("{}:{tag}", o.target);
        let mirror = o.mirror.get(tag).cloned().unwrap_or(Observed::Unknown("not looked up".into()));
        let upstream = match upstream {
            Observed::Present(d) => d,
            Observed::Absent => {
                let held = matches!(mirror, Observed::Present(_));
                let reason = if held {
                    format!("{}:{tag} no longer exists upstream; the mirror keeps its copy", o.source)
                } else {
                    format!("{}:{tag} does not exist upstream", o.source)
                };
                note(plan, name, subject, reason, false);
                continue;
            }
            Observed::Unknown(why) => {
                let reason = match &mirror {
                    Observed::Present(_) => format!("upstream unknown ({why}); the mirror keeps its copy"),
                    _ => format!("missing in the mirror, and upstream is unknown: {why}"),
                };
                note(plan, name, subject, reason, true);
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
        let copy = Action::Copy {
            source: o.source.clone(),
            digest: upstream.clone(),
            target: o.target.clone(),
            tag: tag.clone(),
            platforms: set.platforms.clone(),
        };
        match mirror {
            Observed::Unknown(why) => note(plan, name, subject, format!("mirror unknown, nothing done: {why}"), true),
            Observed::Absent => plan.changes.push(Change {
                mirror_set: name.to_string(),
                action: copy,
                why: format!("missing in the mirror; upstream is {}{subset}", short(upstream)),
            }),
            Observed::Present(held) if held.holds(upstream, &set.platforms) => plan.in_sync += 1,
            Observed::Present(held) => moved(plan, name, set, pinned, tag, &held, upstream, copy, o),
        }
    }
}

/// The mirror holds other content than upstream under `tag`.
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
    o: &ImageObservation,
) {
    let was = held.source_digest.as_ref().unwrap_or(&held.digest);
    if pinned {
        // The pin itself changed in the desired state: that is a decision, not a move.
        plan.changes.push(Change {
            mirror_set: name.to_string(),
            action: copy,
            why: format!("digest pin changed from {} to {}", short(was), short(upstream)),
        });
        return;
    }
    let moved = format!("upstream moved {tag} from {} to {}", short(was), short(upstream));
    match set.on_tag_move {
        OnTagMove::Keep => {
            note(plan, name, format!("{}:{tag}", o.target), format!("{moved}; onTagMove: keep holds the mirror"), false)
        }
        OnTagMove::Update => plan.changes.push(Change { mirror_set: name.to_string(), action: copy, why: moved }),
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
        }
    }
}

/// Mirror tags no set selects any more, when every set's choice and the mirror are known.
/// Distribution deletes by manifest, taking every tag that points at it along, so a tag is
/// only pruned when no tag remaining after this pass (copies and backups included) shares it.
fn prune(plan: &mut Plan, name: &str, o: &ImageObservation, wanted: Option<BTreeSet<String>>) {
    let subject = format!("tags of {}", o.target);
    let Some(wanted) = wanted else {
        note(plan, name, subject, "not pruned: the tags some set selects are unknown".into(), true);
        return;
    };
    let existing = match &o.mirror_tags {
        Some(Observed::Present(tags)) => tags,
        Some(Observed::Unknown(why)) => {
            note(plan, name, subject, format!("not pruned: mirror tag list unknown: {why}"), true);
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
            Action::Backup { target, digest, backup_tag, .. } if *target == o.target => {
                after.insert(backup_tag.clone(), digest.clone());
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
                    false,
                )
            }
            Some(Observed::Present(m)) => plan.changes.push(Change {
                mirror_set: name.to_string(),
                action: Action::Prune { target: o.target.clone(), tag: tag.clone(), digest: m.digest.clone() },
                why: "no longer selected by any MirrorSet (prune: true)".into(),
            }),
            Some(Observed::Unknown(why)) => {
                note(plan, name, subject, format!("not pruned: mirror unknown: {why}"), true)
            }
            _ => {}
        }
    }
}

//! Prints a plan, and the outcome of applying it, for people (text, Markdown) and machines.

use std::fmt::Write as _;

use serde::Serialize;

use super::{Action, NoteKind, Plan};
use crate::outcome::{Outcome, OutcomeResult, totals};
use crate::registry::Verdict;

fn describe(action: &Action) -> String {
    match action {
        Action::Copy { source, digest, target, tag, .. } => {
            format!("copy {source}@{} → {target}:{tag}", digest.short())
        }
        Action::Backup { target, digest, tag, backup_tag } => {
            format!("back up {target}:{tag} ({}) as {target}:{backup_tag}", digest.short())
        }
        Action::Prune { target, tag, digest } => format!("prune {target}:{tag} ({})", digest.short()),
        Action::Attach { source, target, tag, .. } => format!("copy {source}:{tag} → {target}:{tag}"),
        Action::Referrers { source, target, subject, descriptors, .. } => {
            format!("copy {} referrers of {source}@{} → {target}", descriptors.len(), subject.short())
        }
    }
}

fn sign(action: &Action) -> char {
    match action {
        Action::Copy { .. } | Action::Attach { .. } | Action::Referrers { .. } => '+',
        Action::Backup { .. } => '~',
        Action::Prune { .. } => '-',
    }
}

/// `3 changes, 1 unknown, 12 tags in sync`
pub fn summary(plan: &Plan) -> String {
    let n = plan.changes.len();
    let unknown = plan.notes.iter().filter(|n| n.kind == NoteKind::Unknown).count();
    let mut parts =
        vec![if n == 0 { "no change".to_string() } else { format!("{n} change{}", if n == 1 { "" } else { "s" }) }];
    if unknown > 0 {
        parts.push(format!("{unknown} unknown (could not look)"));
    }
    let rejected = plan.rejections();
    if rejected > 0 {
        parts.push(format!("{rejected} rejected by signature policy"));
    }
    let unavailable = plan.notes.iter().filter(|n| n.kind == NoteKind::Unavailable).count();
    if unavailable > 0 {
        parts.push(format!("{unavailable} not available upstream"));
    }
    parts.push(format!("{} tag{} in sync", plan.in_sync, if plan.in_sync == 1 { "" } else { "s" }));
    parts.join(", ")
}

fn by_set<T>(items: &[T], set: impl Fn(&T) -> &str) -> Vec<(String, Vec<&T>)> {
    let mut groups: Vec<(String, Vec<&T>)> = Vec::new();
    for item in items {
        let name = set(item).to_string();
        match groups.iter_mut().find(|(n, _)| *n == name) {
            Some((_, list)) => list.push(item),
            None => groups.push((name, vec![item])),
        }
    }
    groups
}

pub fn human(plan: &Plan) -> String {
    let mut out = format!("Plan: {}\n", summary(plan));
    for (set, changes) in by_set(&plan.changes, |c| &c.mirror_set) {
        let _ = writeln!(out, "\nMirrorSet/{set}");
        for c in changes {
            let _ = writeln!(out, "  {} {}\n      {}", sign(&c.action), describe(&c.action), c.why);
        }
    }
    if !plan.notes.is_empty() {
        let _ = writeln!(out, "\nNot changed:");
        for n in &plan.notes {
            let mark = match n.kind {
                NoteKind::Rejected | NoteKind::Unavailable => '✗',
                NoteKind::Unknown => '?',
                NoteKind::Kept => '=',
            };
            let _ = writeln!(out, "  {mark} MirrorSet/{}: {}: {}", n.mirror_set, n.subject, n.reason);
        }
    }
    out
}

pub fn markdown(plan: &Plan) -> String {
    let mut out = format!("**Lifeboat plan:** {}\n", summary(plan));
    for (set, changes) in by_set(&plan.changes, |c| &c.mirror_set) {
        let _ = writeln!(out, "\n#### MirrorSet/{set}\n");
        for c in changes {
            let _ = writeln!(out, "- `{}` — {}", describe(&c.action), c.why);
        }
    }
    if !plan.notes.is_empty() {
        let _ = writeln!(out, "\n#### Not changed\n");
        for n in &plan.notes {
            let _ = writeln!(
                out,
                "- {}MirrorSet/{} `{}`: {}",
                match n.kind {
                    NoteKind::Rejected => "**rejected** ",
                    NoteKind::Unavailable => "**unavailable** ",
                    NoteKind::Unknown => "**unknown** ",
                    NoteKind::Kept => "",
                },
                n.mirror_set,
                n.subject,
                n.reason
            );
        }
    }
    out
}

pub fn json<T: Serialize>(value: &T) -> String {
    serde_json::to_string_pretty(value).expect("plans serialize") + "\n"
}

pub fn outcomes_human(plan: &Plan, outcomes: &[Outcome]) -> String {
    let t = totals(outcomes);
    let mut out = format!(
        "Applied: {} done, {} failed; {} blob{} copied ({}), {} mounted, {} already present\n",
        t.done,
        t.failed,
        t.blobs_copied,
        if t.blobs_copied == 1 { "" } else { "s" },
        bytesize::ByteSize(t.bytes_copied),
        t.blobs_mounted,
        t.blobs_present
    );
    for (set, list) in by_set(outcomes, |o| &o.change.mirror_set) {
        let _ = writeln!(out, "\nMirrorSet/{set}");
        for o in list {
            match &o.result {
                OutcomeResult::Done { .. } => {
                    let _ = writeln!(
                        out,
                        "  {} {}\n      {}",
                        sign(&o.change.action),
                        describe(&o.change.action),
                        o.change.why
                    );
                    match &o.mirror_verification {
                        Some(Verdict::Verified { signers }) => {
                            let _ = writeln!(out, "      verified on the mirror: {}", Verdict::signers_text(signers));
                        }
                        Some(Verdict::Rejected { reason }) => {
                            let _ = writeln!(out, "      WARNING: does not verify on the mirror: {reason}");
                        }
                        None => {}
                    }
                }
                OutcomeResult::Failed { error } => {
                    let _ = writeln!(out, "  ✗ {}\n      failed: {error}", describe(&o.change.action));
                }
            }
        }
    }
    let rejected: Vec<_> = plan.notes.iter().filter(|n| n.kind == NoteKind::Rejected).collect();
    if !rejected.is_empty() {
        let _ = writeln!(out, "\nNot mirrored, signature policy not met:");
        for n in rejected {
            let _ = writeln!(out, "  ✗ MirrorSet/{}: {}: {}", n.mirror_set, n.subject, n.reason);
        }
    }
    let unavailable: Vec<_> = plan.notes.iter().filter(|n| n.kind == NoteKind::Unavailable).collect();
    if !unavailable.is_empty() {
        let _ = writeln!(out, "\nNot mirrored, not upstream either:");
        for n in unavailable {
            let _ = writeln!(out, "  ✗ MirrorSet/{}: {}: {}", n.mirror_set, n.subject, n.reason);
        }
    }
    let unknown: Vec<_> = plan.notes.iter().filter(|n| n.kind == NoteKind::Unknown).collect();
    if !unknown.is_empty() {
        let _ = writeln!(out, "\nNot done, could not look:");
        for n in unknown {
            let _ = writeln!(out, "  ? MirrorSet/{}: {}: {}", n.mirror_set, n.subject, n.reason);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_counts() {
        let plan = Plan { in_sync: 1, ..Plan::default() };
        assert_eq!(summary(&plan), "no change, 1 tag in sync");
    }
}

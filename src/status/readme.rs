//! `status/README.md`: the DR-readiness report. One line per check of the DR plan, each
//! PASS, FAIL or UNKNOWN with its evidence, then the detail a person needs to act.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::check::{Check, Readiness};
use super::model::{Index, MirrorSetStatus, SetResult, TagState};
use super::{FRESH, Renderer};

pub(super) fn render(r: &Renderer<'_>, index: &Index, sets: &BTreeMap<String, MirrorSetStatus>) -> String {
    let input = r.input;
    let checks = vec![
        desired_check(index),
        mirror_check(r, index, sets),
        fresh_check(r, sets),
        mirrored_check(sets),
        super::prepull::check(input.desired.state().map(|s| &s.pre_pull_sets), input.pre_pull),
        super::prepull::gc_check(input.desired.state().map_or(0, |s| s.pre_pull_sets.len()), input.pre_pull),
        super::backup::check(input.desired.state().map(|s| &s.backup_policies), input.backups, input.now),
        alerts_check(input.alerts),
    ];
    let mut out = String::from("# Lifeboat status: DR readiness\n\n");
    let _ = writeln!(
        out,
        "Written by Lifeboat at {} from desired-state tree `{}`. Edits are overwritten.\n",
        r.time(input.now),
        short(&index.desired_tree)
    );
    let failing = checks.iter().filter(|c| c.result == Readiness::Fail).count();
    let unknown = checks.iter().filter(|c| c.result == Readiness::Unknown).count();
    let _ = writeln!(
        out,
        "**{}** of {} checks pass, {failing} fail, {unknown} unknown.\n",
        checks.len() - failing - unknown,
        checks.len()
    );
    out.push_str("| Check | Result | Evidence |\n| --- | --- | --- |\n");
    for c in &checks {
        let _ = writeln!(out, "| {} | {} | {} |", c.name, c.result.label(), cell(&c.evidence));
    }
    if !index.desired_state.diagnostics.is_empty() {
        out.push_str("\n## The newest desired state is invalid\n\nNothing of it was applied");
        match &index.applied_tree {
            Some(tree) => {
                let _ = write!(out, "; passes follow the last valid tree `{}`", short(tree));
            }
            None => out.push_str("; there is no earlier valid desired state to follow"),
        }
        out.push_str(". Fix these problems:\n\n```\n");
        for line in &index.desired_state.diagnostics {
            let _ = writeln!(out, "{line}");
        }
        out.push_str("```\n");
    }
    if !sets.is_empty() {
        out.push_str("\n## MirrorSets\n\n| MirrorSet | Result | Last success | Desired | Mirrored | Missing | Failed | Rejected | Unknown |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n");
        for (name, s) in sets {
            let c = &s.summary;
            let _ = writeln!(
                out,
                "| [{name}](MirrorSet/{name}.yaml) | {} | {} | {} | {} | {} | {} | {} | {} |",
                s.result.label(),
                s.last_success.as_deref().unwrap_or("never"),
                c.desired,
                c.mirrored,
                c.missing,
                c.failed,
                c.rejected,
                c.unknown
            );
        }
    }
    let problems: Vec<String> = sets
        .iter()
        .flat_map(|(name, s)| {
            s.images.iter().flat_map(move |image| {
                let whole = image.problem.iter().map(move |p| format!("MirrorSet/{name} `{}`: {p}", image.source));
                let tags = image.tags.iter().filter(|(_, t)| t.state != TagState::InSync).map(move |(tag, t)| {
                    format!(
                        "MirrorSet/{name} `{}:{tag}` ({}): {}",
                        image.target,
                        t.state.label(),
                        t.reason.as_deref().unwrap_or("not in the mirror")
                    )
                });
                whole.chain(tags)
            })
        })
        .collect();
    if !problems.is_empty() {
        out.push_str("\n## Needs attention\n\n");
        for p in &problems {
            let _ = writeln!(out, "- {}", p.replace('\n', " "));
        }
    }
    let unreachable: Vec<_> = index.registries.iter().filter(|(_, h)| !h.reachable).collect();
    if !unreachable.is_empty() {
        out.push_str("\n## Registries that could not be reached\n\n");
        for (host, h) in unreachable {
            let _ = writeln!(out, "- `{host}`: {}", h.reason.as_deref().unwrap_or("unreachable"));
        }
    }
    out
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

/// A table cell: one line, no pipes.
fn cell(text: &str) -> String {
    text.replace('\n', " ").replace('|', "\\|")
}

fn desired_check(index: &Index) -> Check {
    if index.desired_state.valid {
        Check { name: "Desired state valid", result: Readiness::Pass, evidence: "every document loads".into() }
    } else {
        Check {
            name: "Desired state valid",
            result: Readiness::Fail,
            evidence: index.desired_state.diagnostics.last().cloned().unwrap_or_else(|| "invalid".into()),
        }
    }
}

fn mirror_check(r: &Renderer<'_>, index: &Index, sets: &BTreeMap<String, MirrorSetStatus>) -> Check {
    let name = "Mirror runs and is healthy";
    // The mirror hosts the last passes wrote to, with their health as the index records it.
    let hosts: BTreeMap<&str, Option<&str>> = r
        .input
        .passes
        .values()
        .flat_map(|pass| &pass.observations)
        .filter_map(|o| {
            let health = index.registries.get(&o.target.host)?;
            Some((o.target.host.as_str(), if health.reachable { None } else { health.reason.as_deref() }))
        })
        .collect();
    if hosts.is_empty() {
        let result = if sets.is_empty() { Readiness::Pass } else { Readiness::Unknown };
        let evidence = if sets.is_empty() { "no MirrorSet declared" } else { "no pass has looked at the mirror yet" };
        return Check { name, result, evidence: evidence.into() };
    }
    let down: Vec<String> = hosts.iter().filter_map(|(h, why)| why.map(|w| format!("`{h}`: {w}"))).collect();
    if down.is_empty() {
        let list = hosts.keys().map(|h| format!("`{h}`")).collect::<Vec<_>>().join(", ");
        Check { name, result: Readiness::Pass, evidence: format!("{list} answered every lookup of the last pass") }
    } else {
        Check { name, result: Readiness::Fail, evidence: down.join("; ") }
    }
}

fn fresh_check(r: &Renderer<'_>, sets: &BTreeMap<String, MirrorSetStatus>) -> Check {
    let name = "A sync succeeded within the last 2 hours";
    if sets.is_empty() {
        return Check { name, result: Readiness::Pass, evidence: "no MirrorSet declared".into() };
    }
    let mut stale = Vec::new();
    let mut oldest: Option<chrono::DateTime<chrono::Utc>> = None;
    for name in sets.keys() {
        match r.input.passes.get(name).and_then(|p| p.last_success) {
            Some(t) if r.input.now - t <= FRESH => oldest = Some(oldest.map_or(t, |o| o.min(t))),
            Some(t) => stale.push(format!("{name} (last success {})", r.time(t))),
            None => stale.push(format!("{name} (no successful sync yet)")),
        }
    }
    if stale.is_empty() {
        let at = oldest.map(|t| r.time(t)).unwrap_or_default();
        Check {
            name,
            result: Readiness::Pass,
            evidence: format!("every MirrorSet synced; the oldest success is at {at}"),
        }
    } else {
        Check { name, result: Readiness::Fail, evidence: format!("not fresh: {}", stale.join(", ")) }
    }
}

fn mirrored_check(sets: &BTreeMap<String, MirrorSetStatus>) -> Check {
    let name = "Every desired image is in the mirror";
    let desired: usize = sets.values().map(|s| s.summary.desired).sum();
    let missing: usize = sets.values().map(|s| s.summary.missing).sum();
    let unknown: usize = sets.values().map(|s| s.summary.unknown).sum();
    let not_run = sets.values().filter(|s| s.result == SetResult::NotRunYet).count();
    if not_run > 0 {
        return Check { name, result: Readiness::Unknown, evidence: format!("{not_run} MirrorSet(s) not synced yet") };
    }
    if missing == 0 {
        return Check { name, result: Readiness::Pass, evidence: format!("{desired} of {desired} tags mirrored") };
    }
    let result = if missing == unknown { Readiness::Unknown } else { Readiness::Fail };
    Check {
        name,
        result,
        evidence: format!(
            "{missing} of {desired} tags not in the mirror ({unknown} could not be looked at); see Needs attention"
        ),
    }
}

fn alerts_check(alerts: &[String]) -> Check {
    let name = "Alerts configured";
    if alerts.is_empty() {
        return Check { name, result: Readiness::Fail, evidence: "this build ships no alert rules".into() };
    }
    Check {
        name,
        result: Readiness::Unknown,
        evidence: format!(
            "deploy/ ships {} (PrometheusRule and rules file); whether Prometheus loaded them is not visible to Lifeboat",
            alerts.join(", ")
        ),
    }
}

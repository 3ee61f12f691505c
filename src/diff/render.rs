//! Prints a [`DesiredDiff`] as text for a terminal, Markdown for a pull-request comment, or JSON.

use std::fmt::Write as _;

use serde::Serialize;
use serde_json::Value;
use similar::TextDiff;

use super::{Change, DesiredDiff, RefChanges};

/// One side of the comparison.
#[derive(Debug, Clone, Serialize)]
pub struct Revision {
    /// As the user wrote it (`HEAD~1`, `origin/main`).
    pub rev: String,
    pub commit: String,
}

impl Revision {
    fn short(&self) -> &str {
        &self.commit[..self.commit.len().min(12)]
    }
}

/// A diff with the revisions it was computed from.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report<'a> {
    pub base: Revision,
    pub head: Revision,
    pub summary: String,
    #[serde(flatten)]
    pub diff: &'a DesiredDiff,
}

impl<'a> Report<'a> {
    pub fn new(base: Revision, head: Revision, diff: &'a DesiredDiff) -> Self {
        Report { summary: summary(diff), base, head, diff }
    }
}

fn label(type_name: &str, n: usize) -> String {
    let (one, many) = match type_name {
        "documentAdded" => ("document added", "documents added"),
        "documentRemoved" => ("document removed", "documents removed"),
        "imageAdded" => ("image added", "images added"),
        "imageRemoved" => ("image removed", "images removed"),
        "tagAdded" => ("tag added", "tags added"),
        "tagRemoved" => ("tag removed", "tags removed"),
        "digestPinChanged" => ("digest pin changed", "digest pins changed"),
        "tagRulesChanged" => ("tag rules changed", "tag rules changed"),
        _ => ("setting changed", "settings changed"),
    };
    format!("{n} {}", if n == 1 { one } else { many })
}

/// `4 changes: 1 tag added, 1 image removed, ...`, or `no change`.
pub fn summary(diff: &DesiredDiff) -> String {
    if diff.changes.is_empty() {
        return "no change".into();
    }
    let parts: Vec<String> = diff.counts().into_iter().map(|(t, n)| label(t, n)).collect();
    let n = diff.changes.len();
    format!("{n} change{}: {}", if n == 1 { "" } else { "s" }, parts.join(", "))
}

fn show(value: &Value) -> String {
    match value {
        Value::Null => "(unset)".into(),
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

/// One line per change, without the document it belongs to.
fn line(change: &Change) -> String {
    match change {
        Change::DocumentAdded { kind, name } => format!("+ new {kind} {name}"),
        Change::DocumentRemoved { kind, name } => format!("- {kind} {name} removed"),
        Change::ImageAdded { source, selection, .. } => format!("+ image {source} ({selection})"),
        Change::ImageRemoved { source, selection, .. } => format!("- image {source} ({selection})"),
        Change::TagAdded { source, tag, target, .. } => format!("+ tag {tag} of {source} → {target}"),
        Change::TagRemoved { source, tag, target, .. } => format!("- tag {tag} of {source} (was {target})"),
        Change::DigestPinChanged { source, tag, from, to, .. } => {
            format!("~ digest pin of {source} (tag {tag}): {from} → {to}")
        }
        Change::TagRulesChanged { source, from, to, .. } => format!(
            "~ tag rules of {source}: {} → {}",
            from.as_deref().unwrap_or("(none)"),
            to.as_deref().unwrap_or("(none)")
        ),
        Change::SettingChanged { field, from, to, .. } => format!("~ {field}: {} → {}", show(from), show(to)),
    }
}

/// One Markdown bullet per change: words in bold, names in code.
fn markdown_line(change: &Change) -> String {
    let opt = |v: &Option<String>| v.as_deref().map_or("(none)".to_string(), |r| format!("`{r}`"));
    match change {
        Change::DocumentAdded { kind, name } => format!("**added** {kind} `{name}`"),
        Change::DocumentRemoved { kind, name } => format!("**removed** {kind} `{name}`"),
        Change::ImageAdded { source, selection, .. } => format!("**image added** `{source}` ({selection})"),
        Change::ImageRemoved { source, selection, .. } => format!("**image removed** `{source}` ({selection})"),
        Change::TagAdded { source, tag, target, .. } => format!("**tag added** `{tag}` of `{source}` → `{target}`"),
        Change::TagRemoved { source, tag, target, .. } => {
            format!("**tag removed** `{tag}` of `{source}` (was `{target}`)")
        }
        Change::DigestPinChanged { source, tag, from, to, .. } => {
            format!("**digest pin changed** `{source}` (tag `{tag}`): `{from}` → `{to}`")
        }
        Change::TagRulesChanged { source, from, to, .. } => {
            format!("**tag rules changed** `{source}`: {} → {}", opt(from), opt(to))
        }
        Change::SettingChanged { field, from, to, .. } => {
            format!("**setting changed** `{field}`: `{}` → `{}`", show(from), show(to))
        }
    }
}

/// Changes grouped by document, in the order they were found.
fn grouped(diff: &DesiredDiff) -> Vec<(String, Vec<&Change>)> {
    let mut groups: Vec<(String, Vec<&Change>)> = Vec::new();
    for change in &diff.changes {
        let doc = change.document();
        match groups.iter_mut().find(|(d, _)| *d == doc) {
            Some((_, list)) => list.push(change),
            None => groups.push((doc, vec![change])),
        }
    }
    groups
}

/// The effective mirror references as a unified diff of two sorted lists.
fn refs_diff(refs: &RefChanges) -> String {
    let removed: Vec<&str> = refs.removed.iter().map(String::as_str).collect();
    let added: Vec<&str> = refs.added.iter().map(String::as_str).collect();
    let old = removed.join("\n") + if removed.is_empty() { "" } else { "\n" };
    let new = added.join("\n") + if added.is_empty() { "" } else { "\n" };
    let diff = TextDiff::from_lines(&old, &new);
    let mut out = String::new();
    for op in diff.iter_all_changes() {
        let sign = match op.tag() {
            similar::ChangeTag::Delete => '-',
            similar::ChangeTag::Insert => '+',
            similar::ChangeTag::Equal => ' ',
        };
        let _ = write!(out, "{sign}{}", op.value());
    }
    out
}

const RULES_NOTE: &str = "tags chosen by tag rules are resolved at sync time and not listed";

pub fn human(report: &Report<'_>) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Desired state {} ({}) → {} ({}): {}",
        report.base.rev,
        report.base.short(),
        report.head.rev,
        report.head.short(),
        report.summary
    );
    for (doc, changes) in grouped(report.diff) {
        let _ = writeln!(out, "\n{doc}");
        for change in changes {
            let _ = writeln!(out, "  {}", line(change));
        }
    }
    if !report.diff.mirror_refs.is_empty() {
        let _ = writeln!(out, "\nMirror references ({RULES_NOTE}):");
        for l in refs_diff(&report.diff.mirror_refs).lines() {
            let _ = writeln!(out, "  {l}");
        }
    }
    for c in &report.diff.coverage {
        let _ = writeln!(
            out,
            "\n{}/{} covers {} more, {} fewer image{}:",
            c.kind,
            c.name,
            c.refs.added.len(),
            c.refs.removed.len(),
            if c.refs.removed.len() == 1 { "" } else { "s" }
        );
        for l in refs_diff(&c.refs).lines() {
            let _ = writeln!(out, "  {l}");
        }
    }
    out
}

/// Markdown for a pull-request comment: the summary first, details folded when long.
pub fn markdown(report: &Report<'_>) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "**Lifeboat:** {} (`{}` → `{}`)", report.summary, report.base.short(), report.head.short());
    for (doc, changes) in grouped(report.diff) {
        let _ = writeln!(out, "\n#### {doc}\n");
        for change in changes {
            let _ = writeln!(out, "- {}", markdown_line(change));
        }
    }
    let mut block = |title: String, refs: &RefChanges, fold: bool| {
        let body = refs_diff(refs);
        let long = fold || body.lines().count() > 20;
        if long {
            let _ = writeln!(out, "\n<details><summary>{title}</summary>\n");
        } else {
            let _ = writeln!(out, "\n{title}\n");
        }
        let _ = writeln!(out, "```diff\n{body}```");
        if long {
            let _ = writeln!(out, "\n</details>");
        }
    };
    if !report.diff.mirror_refs.is_empty() {
        block(format!("Mirror references ({RULES_NOTE}):"), &report.diff.mirror_refs, false);
    }
    for c in &report.diff.coverage {
        let (added, removed) = (c.refs.added.len(), c.refs.removed.len());
        block(format!("{}/{} covers {added} more, {removed} fewer", c.kind, c.name), &c.refs, true);
    }
    out
}

pub fn json(report: &Report<'_>) -> String {
    serde_json::to_string_pretty(report).expect("a diff report always serializes") + "\n"
}

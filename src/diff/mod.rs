//! What a change to the desired state will do, computed from two validated states.
//!
//! `compare` is pure: no I/O, no clock. It reports direct edits (`changes`: images and tags
//! added or removed, digest pins moved, tag rules and settings changed) and their effect on
//! the mirror references and on what pre-pull sets and backups cover; for FailoverSets, their
//! settings and which upstream fails over to which mirror path. `render` prints the
//! result for people (text, Markdown for a pull-request comment) and machines (JSON).

pub mod render;

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::Value;

use crate::desired::{DesiredState, ImageRef, MirrorImage, MirrorSet, Repository, Selection};

/// Everything that differs between two desired states.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DesiredDiff {
    pub changes: Vec<Change>,
    /// Mirror references named without asking upstream (explicit tags and digest pins).
    pub mirror_refs: RefChanges,
    /// What each pre-pull set and backup policy covers, where that changed.
    pub coverage: Vec<CoverageChange>,
}

impl DesiredDiff {
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty() && self.mirror_refs.is_empty() && self.coverage.is_empty()
    }

    /// How many changes of each type, in a stable order, for summaries.
    pub fn counts(&self) -> BTreeMap<&'static str, usize> {
        let mut counts = BTreeMap::new();
        for change in &self.changes {
            *counts.entry(change.type_name()).or_default() += 1;
        }
        counts
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RefChanges {
    pub added: Vec<String>,
    pub removed: Vec<String>,
}

impl RefChanges {
    fn between(base: &BTreeSet<ImageRef>, head: &BTreeSet<ImageRef>) -> RefChanges {
        RefChanges {
            added: head.difference(base).map(ToString::to_string).collect(),
            removed: base.difference(head).map(ToString::to_string).collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CoverageChange {
    pub kind: &'static str,
    pub name: String,
    #[serde(flatten)]
    pub refs: RefChanges,
}

/// One direct edit of the desired state.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "change", rename_all = "camelCase", rename_all_fields = "camelCase")]
pub enum Change {
    DocumentAdded { kind: &'static str, name: String },
    DocumentRemoved { kind: &'static str, name: String },
    ImageAdded { mirror_set: String, source: String, selection: String },
    ImageRemoved { mirror_set: String, source: String, selection: String },
    TagAdded { mirror_set: String, source: String, tag: String, target: String },
    TagRemoved { mirror_set: String, source: String, tag: String, target: String },
    DigestPinChanged { mirror_set: String, source: String, tag: String, from: String, to: String, target: String },
    TagRulesChanged { mirror_set: String, source: String, from: Option<String>, to: Option<String> },
    SettingChanged { kind: &'static str, name: String, field: String, from: Value, to: Value },
}

impl Change {
    pub fn type_name(&self) -> &'static str {
        match self {
            Change::DocumentAdded { .. } => "documentAdded",
            Change::DocumentRemoved { .. } => "documentRemoved",
            Change::ImageAdded { .. } => "imageAdded",
            Change::ImageRemoved { .. } => "imageRemoved",
            Change::TagAdded { .. } => "tagAdded",
            Change::TagRemoved { .. } => "tagRemoved",
            Change::DigestPinChanged { .. } => "digestPinChanged",
            Change::TagRulesChanged { .. } => "tagRulesChanged",
            Change::SettingChanged { .. } => "settingChanged",
        }
    }

    /// `Kind/name` of the document the change belongs to, for grouping.
    pub fn document(&self) -> String {
        match self {
            Change::DocumentAdded { kind, name }
            | Change::DocumentRemoved { kind, name }
            | Change::SettingChanged { kind, name, .. } => format!("{kind}/{name}"),
            Change::ImageAdded { mirror_set, .. }
            | Change::ImageRemoved { mirror_set, .. }
            | Change::TagAdded { mirror_set, .. }
            | Change::TagRemoved { mirror_set, .. }
            | Change::DigestPinChanged { mirror_set, .. }
            | Change::TagRulesChanged { mirror_set, .. } => format!("MirrorSet/{mirror_set}"),
        }
    }
}

/// Compares two desired states.
pub fn compare(base: &DesiredState, head: &DesiredState) -> DesiredDiff {
    let mut changes = Vec::new();
    // MirrorSet images are reported image by image; every other field as a setting.
    documents(&mut changes, "Registry", &base.registries, &head.registries, &[], no_detail);
    documents(&mut changes, "MirrorSet", &base.mirror_sets, &head.mirror_sets, &["spec.images"], mirror_set_images);
    documents(&mut changes, "PrePullSet", &base.pre_pull_sets, &head.pre_pull_sets, &[], no_detail);
    documents(&mut changes, "BackupPolicy", &base.backup_policies, &head.backup_policies, &[], no_detail);
    documents(&mut changes, "FailoverSet", &failover_views(base), &failover_views(head), &[], no_detail);

    let all_refs = |state: &DesiredState| -> BTreeSet<ImageRef> {
        state.mirror_sets.values().flat_map(MirrorSet::fixed_mirror_refs).collect()
    };
    let mut coverage = Vec::new();
    for name in names(&base.pre_pull_sets, &head.pre_pull_sets) {
        let covered = |state: &DesiredState| {
            state.pre_pull_sets.get(&name).map(|s| state.covered_refs(&s.mirror_sets, &s.images)).unwrap_or_default()
        };
        push_coverage(&mut coverage, "PrePullSet", &name, covered(base), covered(head));
    }
    for name in names(&base.backup_policies, &head.backup_policies) {
        let covered = |state: &DesiredState| {
            state.backup_policies.get(&name).map(|s| state.covered_refs(&s.mirror_sets, &s.images)).unwrap_or_default()
        };
        push_coverage(&mut coverage, "BackupPolicy", &name, covered(base), covered(head));
    }
    DesiredDiff { changes, mirror_refs: RefChanges::between(&all_refs(base), &all_refs(head)), coverage }
}

/// FailoverSets as their settings and what fails over to where (`upstream → mirror`), without
/// the repositories behind each mapping: those change with every image a MirrorSet adds, which
/// the MirrorSet's own changes already report.
fn failover_views(state: &DesiredState) -> BTreeMap<String, Value> {
    state
        .failover_sets
        .iter()
        .map(|(name, set)| {
            let mut value = serde_json::to_value(set).unwrap_or(Value::Null);
            let mappings: Vec<String> =
                set.mappings.iter().map(|m| format!("{} → {}", m.upstream, m.mirror.location)).collect();
            value["mappings"] = mappings.into();
            (name.clone(), value)
        })
        .collect()
}

fn no_detail<T>(_: &mut Vec<Change>, _: Option<(&str, &T)>, _: Option<(&str, &T)>) {}

fn names<A, B>(a: &BTreeMap<String, A>, b: &BTreeMap<String, B>) -> BTreeSet<String> {
    a.keys().chain(b.keys()).cloned().collect()
}

fn push_coverage(
    out: &mut Vec<CoverageChange>,
    kind: &'static str,
    name: &str,
    base: BTreeSet<ImageRef>,
    head: BTreeSet<ImageRef>,
) {
    let refs = RefChanges::between(&base, &head);
    if !refs.is_empty() {
        out.push(CoverageChange { kind, name: name.to_string(), refs });
    }
}

/// Added and removed documents of one kind, their changed settings, and kind-specific detail.
fn documents<T: Serialize>(
    out: &mut Vec<Change>,
    kind: &'static str,
    base: &BTreeMap<String, T>,
    head: &BTreeMap<String, T>,
    detailed: &[&str],
    detail: impl Fn(&mut Vec<Change>, Option<(&str, &T)>, Option<(&str, &T)>),
) {
    for (name, old) in base {
        match head.get(name) {
            None => {
                out.push(Change::DocumentRemoved { kind, name: name.clone() });
                detail(out, Some((name, old)), None);
            }
            Some(new) => {
                settings(out, kind, name, old, new, detailed);
                detail(out, Some((name, old)), Some((name, new)));
            }
        }
    }
    for (name, new) in head {
        if !base.contains_key(name) {
            out.push(Change::DocumentAdded { kind, name: name.clone() });
            detail(out, None, Some((name, new)));
        }
    }
}

/// Every changed field of a document, by its path in the YAML (`spec.schedule`).
/// Fields in `detailed` (and below them) are left to the kind's own detail.
fn settings<T: Serialize>(out: &mut Vec<Change>, kind: &'static str, name: &str, old: &T, new: &T, detailed: &[&str]) {
    let flatten = |v: &T| {
        let mut fields = BTreeMap::new();
        flatten_into("spec", serde_json::to_value(v).unwrap_or(Value::Null), &mut fields);
        fields
    };
    let (old, new) = (flatten(old), flatten(new));
    let paths: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    for path in paths {
        if detailed.iter().any(|d| path == d || path.starts_with(&format!("{d}."))) {
            continue;
        }
        let (from, to) = (old.get(path), new.get(path));
        if from != to {
            out.push(Change::SettingChanged {
                kind,
                name: name.to_string(),
                field: path.clone(),
                from: from.cloned().unwrap_or(Value::Null),
                to: to.cloned().unwrap_or(Value::Null),
            });
        }
    }
}

/// Objects become dotted paths; lists and scalars are compared whole.
fn flatten_into(path: &str, value: Value, out: &mut BTreeMap<String, Value>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                flatten_into(&format!("{path}.{key}"), v, out);
            }
        }
        Value::Null => {}
        other => {
            out.insert(path.to_string(), other);
        }
    }
}

/// How an image is identified across revisions: tag-selected images by repository, digest
/// pins by repository and mirror tag.
fn image_key(image: &MirrorImage) -> (Repository, Option<&str>) {
    match &image.selection {
        Selection::Tags { .. } => (image.source.clone(), None),
        Selection::Pinned { tag, .. } => (image.source.clone(), Some(tag)),
    }
}

fn describe_selection(selection: &Selection) -> String {
    match selection {
        Selection::Pinned { digest, tag } => format!("{digest} as tag {tag}"),
        Selection::Tags { tags, rules } => {
            let mut parts = Vec::new();
            if !tags.is_empty() {
                parts.push(format!("tags {}", tags.iter().cloned().collect::<Vec<_>>().join(", ")));
            }
            if let Some(rules) = rules {
                parts.push(format!("rules: {rules}"));
            }
            parts.join("; ")
        }
    }
}

fn mirror_set_images(out: &mut Vec<Change>, base: Option<(&str, &MirrorSet)>, head: Option<(&str, &MirrorSet)>) {
    let Some(name) = base.or(head).map(|(n, _)| n.to_string()) else {
        return;
    };
    let keyed =
        |side: Option<(&str, &MirrorSet)>| -> BTreeMap<(Repository, Option<String>), (MirrorImage, Repository)> {
            side.map(|(_, set)| {
                set.images
                    .iter()
                    .map(|i| {
                        let (repo, tag) = image_key(i);
                        ((repo, tag.map(str::to_string)), (i.clone(), set.target.repository_for(&i.source)))
                    })
                    .collect()
            })
            .unwrap_or_default()
        };
    let (old, new) = (keyed(base), keyed(head));
    for (key, (image, _)) in &old {
        if !new.contains_key(key) {
            out.push(Change::ImageRemoved {
                mirror_set: name.clone(),
                source: image.source.to_string(),
                selection: describe_selection(&image.selection),
            });
        }
    }
    for (key, (image, target)) in &new {
        let Some((before, old_target)) = old.get(key) else {
            out.push(Change::ImageAdded {
                mirror_set: name.clone(),
                source: image.source.to_string(),
                selection: describe_selection(&image.selection),
            });
            continue;
        };
        let source = image.source.to_string();
        match (&before.selection, &image.selection) {
            (Selection::Pinned { digest: from, .. }, Selection::Pinned { digest: to, tag }) if from != to => {
                out.push(Change::DigestPinChanged {
                    mirror_set: name.clone(),
                    source,
                    tag: tag.clone(),
                    from: from.to_string(),
                    to: to.to_string(),
                    target: format!("{target}:{tag}"),
                });
            }
            (Selection::Tags { tags: old_tags, rules: old_rules }, Selection::Tags { tags, rules }) => {
                for tag in old_tags.difference(tags) {
                    out.push(Change::TagRemoved {
                        mirror_set: name.clone(),
                        source: source.clone(),
                        tag: tag.clone(),
                        target: format!("{old_target}:{tag}"),
                    });
                }
                for tag in tags.difference(old_tags) {
                    out.push(Change::TagAdded {
                        mirror_set: name.clone(),
                        source: source.clone(),
                        tag: tag.clone(),
                        target: format!("{target}:{tag}"),
                    });
                }
                if old_rules != rules {
                    out.push(Change::TagRulesChanged {
                        mirror_set: name.clone(),
                        source,
                        from: old_rules.as_ref().map(ToString::to_string),
                        to: rules.as_ref().map(ToString::to_string),
                    });
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests;

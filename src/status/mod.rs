//! The status report committed back to Git: one file per desired document, an index, and the
//! DR-readiness report `README.md`. Pure: no I/O and no clock; time comes in with the input.
//!
//! Rendering is deterministic. Every time in the output passes through one formatter, so a
//! second rendering with times masked gives a fingerprint of the content alone: the caller
//! commits only when that fingerprint changes (or a heartbeat is due), which is also what
//! keeps a status commit from ever causing another.

mod backup;
mod check;
mod model;
mod prepull;
mod readme;

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use sha2::Digest as _;

pub use backup::{ArchiveFacts, BackupObservation, BackupPolicyStatus};
pub use model::{Index, MirrorSetStatus, RegistryHealth, TagState, TagStatus};
pub use prepull::PrePullSetStatus;

pub use crate::outcome::{SetPass, SetResult};

use crate::desired::{DesiredState, Diagnostics, Digest};
use crate::observe::{ImageObservation, Observed};
use crate::outcome::OutcomeResult;
use crate::plan::{Action, NoteKind};
use crate::registry::Verdict;

/// The name of the index file inside the status folder.
pub const INDEX: &str = "lifeboat.yaml";

/// The desired state the report is about.
#[derive(Debug, Clone, Copy)]
pub enum Desired<'a> {
    /// Valid, and being applied.
    Valid { state: &'a DesiredState, tree: &'a str },
    /// The newest desired state is invalid: nothing of it is applied; `last_good` (if any) is
    /// what the passes still follow.
    Invalid { diagnostics: &'a Diagnostics, tree: &'a str, last_good: Option<(&'a DesiredState, &'a str)> },
}

impl<'a> Desired<'a> {
    fn state(&self) -> Option<&'a DesiredState> {
        match *self {
            Desired::Valid { state, .. } => Some(state),
            Desired::Invalid { last_good, .. } => last_good.map(|(s, _)| s),
        }
    }

    fn tree(&self) -> &'a str {
        match *self {
            Desired::Valid { tree, .. } | Desired::Invalid { tree, .. } => tree,
        }
    }
}

/// Everything the report is made from.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    pub desired: Desired<'a>,
    /// The last pass of each MirrorSet (sets not run yet are absent).
    pub passes: &'a BTreeMap<String, SetPass>,
    /// The status files as the branch holds them now (paths relative to the status folder).
    pub previous: &'a BTreeMap<String, Vec<u8>>,
    pub now: DateTime<Utc>,
    /// Names of the alert rules Lifeboat ships.
    pub alerts: &'a [String],
    /// What each BackupPolicy's destination holds (policies not looked at are absent).
    pub backups: &'a BTreeMap<String, BackupObservation>,
    /// The last pre-pull pass: DaemonSets, coverage and kubelet GC per node.
    pub pre_pull: &'a crate::prepull::PrePullPass,
}

/// Rendered status files, and the fingerprint of their content without times.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub files: BTreeMap<String, Vec<u8>>,
    pub fingerprint: String,
    /// The MirrorSet documents, for metrics.
    pub sets: BTreeMap<String, MirrorSetStatus>,
    pub registries: BTreeMap<String, model::RegistryHealth>,
}

/// What the status is made from, owned, so it can move to the thread that commits it.
pub struct Report {
    /// The desired state being applied, and its tree.
    pub applied: Option<(std::sync::Arc<DesiredState>, String)>,
    /// The newest desired state, when it is invalid, and its tree.
    pub invalid: Option<(Diagnostics, String)>,
    pub passes: BTreeMap<String, SetPass>,
    pub alerts: Vec<String>,
    pub backups: BTreeMap<String, BackupObservation>,
    pub pre_pull: crate::prepull::PrePullPass,
}

impl Report {
    /// [`render_if_changed`] against the status the branch holds now; `None` also when there
    /// is no desired state yet to report on.
    pub fn render_if_changed(
        &self,
        previous: &BTreeMap<String, Vec<u8>>,
        now: DateTime<Utc>,
        heartbeat: Option<chrono::Duration>,
    ) -> Option<Rendered> {
        let desired = match (&self.invalid, &self.applied) {
            (Some((diagnostics, tree)), last) => {
                Desired::Invalid { diagnostics, tree, last_good: last.as_ref().map(|(s, t)| (&**s, t.as_str())) }
            }
            (None, Some((state, tree))) => Desired::Valid { state, tree },
            (None, None) => return None,
        };
        render_if_changed(
            &Input {
                desired,
                passes: &self.passes,
                previous,
                now,
                alerts: &self.alerts,
                backups: &self.backups,
                pre_pull: &self.pre_pull,
            },
            heartbeat,
        )
    }
}

/// The last success of each MirrorSet, as the committed status files record it: a restarted
/// daemon starts from there, so freshness alerts stay true.
pub fn last_successes(files: &BTreeMap<String, Vec<u8>>) -> BTreeMap<String, DateTime<Utc>> {
    let Some(index) = files.get(INDEX).and_then(|b| Index::parse(b)) else {
        return BTreeMap::new();
    };
    index
        .mirror_sets
        .into_iter()
        .filter_map(|(name, set)| {
            let at = DateTime::parse_from_rfc3339(set.last_success.as_deref()?).ok()?;
            Some((name, at.with_timezone(&Utc)))
        })
        .collect()
}

/// The alert rules `deploy/` ships, by name: the DR report lists them.
pub fn shipped_alerts() -> Vec<String> {
    alert_names(include_str!("../../deploy/prometheus/rules.yaml"))
}

/// Renders the status; `None` when it says nothing new since `input.previous` and no
/// heartbeat is due.
pub fn render_if_changed(input: &Input<'_>, heartbeat: Option<chrono::Duration>) -> Option<Rendered> {
    let rendered = render(input);
    let previous = input.previous.get(INDEX).and_then(|b| Index::parse(b));
    if let Some(previous) = previous
        && previous.fingerprint == rendered.fingerprint
    {
        let due = match (heartbeat, DateTime::parse_from_rfc3339(&previous.checked_at)) {
            (Some(every), Ok(at)) => input.now - at.with_timezone(&Utc) >= every,
            _ => false,
        };
        if !due {
            return None;
        }
    }
    Some(rendered)
}

/// Renders the status files.
pub fn render(input: &Input<'_>) -> Rendered {
    let (masked, _, _) = Renderer { input, mask: true }.files(String::new());
    let mut hasher = sha2::Sha256::new();
    for (path, bytes) in &masked {
        hasher.update(path.as_bytes());
        hasher.update([0]);
        hasher.update(bytes);
        hasher.update([0]);
    }
    let fingerprint = format!("sha256:{:x}", hasher.finalize());
    let (files, index, sets) = Renderer { input, mask: false }.files(fingerprint.clone());
    Rendered { files, fingerprint, sets, registries: index.registries }
}

/// The DR plan's freshness requirement: a successful sync within this time.
pub const FRESH: chrono::Duration = chrono::Duration::hours(2);

struct Renderer<'a> {
    input: &'a Input<'a>,
    mask: bool,
}

impl Renderer<'_> {
    fn time(&self, t: DateTime<Utc>) -> String {
        if self.mask { "-".into() } else { t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true) }
    }

    /// An age such as `3h 12m`, masked like times.
    fn age(&self, d: chrono::Duration) -> String {
        if self.mask {
            return "-".into();
        }
        let minutes = d.num_minutes().max(0);
        match (minutes / 1440, minutes % 1440 / 60, minutes % 60) {
            (0, 0, m) => format!("{m}m"),
            (0, h, m) => format!("{h}h {m}m"),
            (days, h, _) => format!("{days}d {h}h"),
        }
    }

    /// The files, with the index and MirrorSet documents they were written from.
    fn files(&self, fingerprint: String) -> (BTreeMap<String, Vec<u8>>, Index, BTreeMap<String, MirrorSetStatus>) {
        let mut files = BTreeMap::new();
        let sets = self.mirror_sets();
        let index = self.index(fingerprint, &sets);
        if let Some(state) = self.input.desired.state() {
            for (name, pre) in &state.pre_pull_sets {
                let doc = prepull::document(name, &pre.origin.file, self.input.desired.tree(), self.input.pre_pull);
                files.insert(format!("PrePullSet/{name}.yaml"), yaml(&doc));
            }
            for (name, policy) in &state.backup_policies {
                let observed = self.input.backups.get(name).cloned().unwrap_or_else(|| BackupObservation {
                    destination: policy.destination.clone(),
                    unreadable: Some("not looked at by this run".into()),
                    ..Default::default()
                });
                let doc = backup::document(self, name, &policy.origin.file, &observed);
                files.insert(format!("BackupPolicy/{name}.yaml"), yaml(&doc));
            }
        }
        let report = readme::render(self, &index, &sets);
        for (name, status) in &sets {
            files.insert(format!("MirrorSet/{name}.yaml"), yaml(status));
        }
        files.insert(INDEX.into(), yaml(&index));
        files.insert("README.md".into(), report.into_bytes());
        (files, index, sets)
    }

    fn index(&self, fingerprint: String, sets: &BTreeMap<String, MirrorSetStatus>) -> Index {
        let input = self.input;
        let (valid, diagnostics, applied_tree) = match input.desired {
            Desired::Valid { tree, .. } => (true, Vec::new(), Some(tree.to_string())),
            Desired::Invalid { diagnostics, last_good, .. } => {
                (false, diagnostics.to_string().lines().map(str::to_string).collect(), last_good.map(|(_, t)| t.into()))
            }
        };
        Index {
            api_version: model::API_VERSION.into(),
            kind: "LifeboatStatus".into(),
            desired_tree: input.desired.tree().into(),
            applied_tree,
            checked_at: self.time(input.now),
            fingerprint,
            desired_state: model::DesiredValidity { valid, diagnostics },
            mirror_sets: sets
                .iter()
                .map(|(name, s)| {
                    (name.clone(), model::SetSummary { result: s.result, last_success: s.last_success.clone() })
                })
                .collect(),
            registries: self.registries(),
        }
    }

    /// Reachability of every registry the last passes looked at: unreachable when any lookup
    /// there could not be made.
    fn registries(&self) -> BTreeMap<String, model::RegistryHealth> {
        let mut health: BTreeMap<String, model::RegistryHealth> = BTreeMap::new();
        let mut mark = |host: &str, observed: Option<&str>| {
            let entry =
                health.entry(host.to_string()).or_insert(model::RegistryHealth { reachable: true, reason: None });
            if let Some(why) = observed
                && entry.reachable
            {
                entry.reachable = false;
                entry.reason = Some(why.to_string());
            }
        };
        for pass in self.input.passes.values() {
            for o in &pass.observations {
                for up in o.upstream.values() {
                    mark(&o.source.host, unknown_reason(up));
                }
                for m in o.mirror.values() {
                    mark(&o.target.host, unknown_reason(m));
                }
            }
        }
        health
    }

    fn mirror_sets(&self) -> BTreeMap<String, MirrorSetStatus> {
        let Some(state) = self.input.desired.state() else {
            return BTreeMap::new();
        };
        let tree = match self.input.desired {
            Desired::Valid { tree, .. } => tree,
            Desired::Invalid { last_good, tree, .. } => last_good.map_or(tree, |(_, t)| t),
        };
        state
            .mirror_sets
            .iter()
            .map(|(name, set)| {
                let previous = self
                    .input
                    .previous
                    .get(&format!("MirrorSet/{name}.yaml"))
                    .and_then(|b| serde_yaml::from_slice::<MirrorSetStatus>(b).ok());
                let status = self.mirror_set(name, set, tree, self.input.passes.get(name), previous.as_ref());
                (name.clone(), status)
            })
            .collect()
    }

    fn mirror_set(
        &self,
        name: &str,
        set: &crate::desired::MirrorSet,
        tree: &str,
        pass: Option<&SetPass>,
        previous: Option<&MirrorSetStatus>,
    ) -> MirrorSetStatus {
        let mut status = MirrorSetStatus::new(name, &set.origin.file, tree);
        let Some(pass) = pass else {
            return status;
        };
        status.result = pass.result();
        status.last_run = Some(self.time(pass.finished));
        status.last_success = match (pass.last_success, previous.and_then(|p| p.last_success.as_ref())) {
            (Some(t), _) => Some(self.time(t)),
            // A one-shot run knows no earlier pass: the previous report does.
            (None, Some(earlier)) => Some(if self.mask { "-".into() } else { earlier.clone() }),
            (None, None) => None,
        };
        let carried: BTreeMap<(String, String), &TagStatus> = previous
            .into_iter()
            .flat_map(|p| &p.images)
            .flat_map(|image| image.tags.iter().map(move |(tag, t)| ((image.target.clone(), tag.clone()), t)))
            .collect();
        for o in &pass.observations {
            let mut image = model::ImageStatus {
                source: o.source.to_string(),
                target: o.target.to_string(),
                tags: BTreeMap::new(),
                problem: None,
            };
            if let Observed::Unknown(why) = &o.selected {
                image.problem = Some(format!("upstream tag list unknown: {why}"));
                // Its tags cannot be listed, so they cannot be counted as mirrored either.
                status.summary.unknown += 1;
                status.summary.missing += 1;
            }
            for (tag, upstream) in &o.upstream {
                let previous = carried.get(&(o.target.to_string(), tag.clone())).copied();
                let t = self.tag(pass, o, tag, upstream, &set.platforms, previous);
                status.summary.count(&t);
                image.tags.insert(tag.clone(), t);
            }
            status.images.push(image);
        }
        // Signatures, attestations and referrers that failed to copy count too.
        status.summary.failed += pass
            .outcomes()
            .iter()
            .filter(|o| {
                matches!(o.result, OutcomeResult::Failed { .. }) && !matches!(o.change.action, Action::Copy { .. })
            })
            .count();
        status
    }

    fn tag(
        &self,
        pass: &SetPass,
        o: &ImageObservation,
        tag: &str,
        upstream: &Observed<Digest>,
        platforms: &crate::desired::Platforms,
        previous: Option<&TagStatus>,
    ) -> TagStatus {
        let subject = format!("{}:{tag}", o.target);
        let held = match o.mirror.get(tag) {
            Some(Observed::Present(m)) => Some(m.digest.clone()),
            _ => None,
        };
        let outcome = pass.outcomes().iter().find(
            |out| matches!(&out.change.action, Action::Copy { target, tag: t, .. } if *target == o.target && t == tag),
        );
        let note = pass.plan.notes.iter().find(|n| n.subject == subject);
        let planned = pass
            .plan
            .changes
            .iter()
            .find(|c| matches!(&c.action, Action::Copy { target, tag: t, .. } if *target == o.target && t == tag));
        let mut t = TagStatus {
            state: TagState::InSync,
            upstream: match upstream {
                Observed::Present(d) => Some(d.to_string()),
                _ => None,
            },
            mirror: held.as_ref().map(Digest::to_string),
            mirror_unknown: false,
            platforms: match platforms {
                crate::desired::Platforms::All => None,
                crate::desired::Platforms::Only(p) => Some(p.iter().cloned().collect()),
            },
            signer: Vec::new(),
            last_change: None,
            reason: None,
        };
        match (outcome, planned) {
            (Some(out), _) => match &out.result {
                OutcomeResult::Done { report } => {
                    // The report says what the mirror holds, not what this pass did, so the
                    // next pass (which copies nothing) renders the same bytes.
                    t.state = TagState::InSync;
                    let written = report.written.clone().or_else(|| match &out.change.action {
                        Action::Copy { digest, .. } => Some(digest.clone()),
                        _ => None,
                    });
                    t.mirror = written.as_ref().map(Digest::to_string);
                    t.last_change = Some(self.time(self.input.now));
                    if let Action::Copy { signed_by, .. } = &out.change.action {
                        t.signer = signed_by.iter().map(ToString::to_string).collect();
                    }
                    if let Some(Verdict::Verified { signers }) = &out.mirror_verification {
                        t.signer = signers.iter().map(ToString::to_string).collect();
                    }
                }
                OutcomeResult::Failed { error } => {
                    t.state = TagState::Failed;
                    t.reason = Some(error.clone());
                }
            },
            (None, Some(change)) => {
                t.state = TagState::Pending;
                t.reason = Some(change.why.clone());
            }
            (None, None) => {
                if let Some(n) = note {
                    t.state = match n.kind {
                        NoteKind::Rejected => TagState::Rejected,
                        NoteKind::Unknown => TagState::Unknown,
                        NoteKind::Kept | NoteKind::Unavailable if held.is_some() => TagState::Kept,
                        NoteKind::Kept | NoteKind::Unavailable => TagState::Missing,
                    };
                    t.reason = Some(n.reason.clone());
                } else if held.is_none() {
                    t.state = TagState::Missing;
                }
            }
        }
        // The mirror could not be read: the report keeps what it last saw there, marked so,
        // rather than forgetting the digest, when it changed and who signed it.
        if t.mirror.is_none() && matches!(o.mirror.get(tag), Some(Observed::Unknown(_))) {
            t.mirror = previous.and_then(|p| p.mirror.clone());
            t.mirror_unknown = true;
        }
        // What does not change from pass to pass comes from the previous report while the
        // mirror holds the same digest: when it last changed, and who signed it.
        if let Some(p) = previous.filter(|p| p.mirror.is_some() && p.mirror == t.mirror) {
            if t.last_change.is_none() {
                t.last_change.clone_from(&p.last_change);
            }
            if t.signer.is_empty() {
                t.signer.clone_from(&p.signer);
            }
        }
        if self.mask {
            t.last_change = t.last_change.map(|_| "-".into());
        }
        t
    }
}

fn unknown_reason<T>(o: &Observed<T>) -> Option<&str> {
    match o {
        Observed::Unknown(why) => Some(why),
        _ => None,
    }
}

const HEADER: &str = "# Written by Lifeboat after each pass that changes it. Edits are overwritten.\n";

fn yaml<T: serde::Serialize>(value: &T) -> Vec<u8> {
    let mut text = HEADER.to_string();
    text.push_str(&serde_yaml::to_string(value).expect("status documents serialize"));
    text.into_bytes()
}

/// Names of the alerts in a Prometheus rules file (`- alert: Name` lines).
pub fn alert_names(rules: &str) -> Vec<String> {
    let names: BTreeSet<String> = rules
        .lines()
        .filter_map(|l| l.trim_start().trim_start_matches("- ").strip_prefix("alert:"))
        .map(|n| n.trim().trim_matches('"').to_string())
        .filter(|n| !n.is_empty())
        .collect();
    names.into_iter().collect()
}

#[cfg(test)]
mod tests;

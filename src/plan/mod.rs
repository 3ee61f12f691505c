//! The plan: every change a pass will make, each with a one-line reason, computed from the
//! desired state and what was observed. Pure: no I/O, no clock, so it can be printed as a dry
//! run and snapshot-tested.

mod mirror;
pub mod render;

use serde::Serialize;

use crate::desired::{DesiredState, Digest, Platforms, Repository, SignaturePolicy};
use crate::observe::ActualState;
use crate::registry::Signer;

/// One change to make.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Change {
    pub mirror_set: String,
    pub action: Action,
    /// Why, in one line.
    pub why: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "camelCase", rename_all_fields = "camelCase")]
pub enum Action {
    /// Copy `source@digest` to `target:tag`.
    Copy {
        source: Repository,
        digest: Digest,
        target: Repository,
        tag: String,
        platforms: Platforms,
        /// Who signed the digest, as the set's policy accepted it upstream.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        signed_by: Vec<Signer>,
        /// Check the signatures again against the mirror once everything is copied, with this
        /// policy (`required`: a copy that does not verify there fails).
        #[serde(skip_serializing_if = "Option::is_none")]
        recheck: Option<SignaturePolicy>,
    },
    /// Copy a tag that belongs to a mirrored digest: its cosign signature, attestation or
    /// SBOM (`sha256-<hex>.sig`...), or its OCI referrers fallback tag.
    Attach { source: Repository, digest: Digest, target: Repository, tag: String, subject: Digest },
    /// Copy the OCI referrers of `subject` (by digest) that upstream lists through its
    /// referrers API, and, where the mirror has no such API, write its fallback tag.
    Referrers {
        source: Repository,
        target: Repository,
        subject: Digest,
        descriptors: Vec<serde_json::Value>,
        fallback: bool,
    },
    /// Keep the mirror's current content of a tag under a backup tag, before the tag moves.
    Backup { target: Repository, digest: Digest, tag: String, backup_tag: String },
    /// Delete a mirror tag (by deleting its manifest, which no kept tag shares).
    Prune { target: Repository, tag: String, digest: Digest },
}

impl Action {
    /// The mirror tag the action writes or removes: changes to one tag run in order.
    pub fn target_tag(&self) -> String {
        match self {
            Action::Copy { target, tag, .. }
            | Action::Prune { target, tag, .. }
            | Action::Attach { target, tag, .. } => {
                format!("{target}:{tag}")
            }
            Action::Backup { target, tag, .. } => format!("{target}:{tag}"),
            Action::Referrers { target, subject, .. } => {
                format!("{target}:{}", crate::registry::cosign::attached_tag(subject, ""))
            }
        }
    }
}

/// Something the plan will not act on, and why: an Unknown observation, or a policy keeping
/// the mirror as it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Note {
    pub mirror_set: String,
    pub subject: String,
    pub reason: String,
    pub kind: NoteKind,
}

/// Why the plan leaves something as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum NoteKind {
    /// Lifeboat could not look (upstream or mirror unreachable, a timeout, refused
    /// credentials): nothing is done on its strength, and the mirror may not be complete.
    Unknown,
    /// Kept out of the mirror because its signatures fail the policy: the policy working, but
    /// the desired image is not mirrored until a person acts.
    Rejected,
    /// The desired state names an image the mirror lacks and upstream does not have (the tag
    /// or the repository does not exist): nothing to copy until a person acts.
    Unavailable,
    /// The mirror keeps what it holds on purpose (`onTagMove: keep`, a tag gone upstream, a
    /// signature whose replacement upstream fails the policy).
    Kept,
}

impl NoteKind {
    /// Whether the note means the desired state is not met and a person has to act.
    pub fn needs_a_person(self) -> bool {
        matches!(self, NoteKind::Rejected | NoteKind::Unavailable)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    pub changes: Vec<Change>,
    pub notes: Vec<Note>,
    /// Mirror tags already holding what the desired state asks for.
    pub in_sync: usize,
}

impl Plan {
    pub fn has_unknowns(&self) -> bool {
        self.notes.iter().any(|n| n.kind == NoteKind::Unknown)
    }

    /// Images kept out of the mirror by their signature policy.
    pub fn rejections(&self) -> usize {
        self.notes.iter().filter(|n| n.kind == NoteKind::Rejected).count()
    }

    /// Desired images the pass cannot mirror until a person acts: rejected by the signature
    /// policy, or absent upstream and from the mirror.
    pub fn stalled(&self) -> usize {
        self.notes.iter().filter(|n| n.kind.needs_a_person()).count()
    }

    /// Only the copies to mirror tags observed absent (notes kept, so nothing unknown hides).
    pub fn only_missing(&self, actual: &ActualState) -> Plan {
        let absent = |target: &Repository, tag: &str| {
            actual
                .mirror_sets
                .values()
                .flatten()
                .any(|o| o.target == *target && matches!(o.mirror.get(tag), Some(crate::observe::Observed::Absent)))
        };
        Plan {
            changes: self
                .changes
                .iter()
                .filter(|c| matches!(&c.action, Action::Copy { target, tag, .. } if absent(target, tag)))
                .cloned()
                .collect(),
            notes: self.notes.clone(),
            in_sync: self.in_sync,
        }
    }

    /// The changes and notes of one MirrorSet (`in_sync` is not split by set, and is 0).
    pub fn of_set(&self, name: &str) -> Plan {
        Plan {
            changes: self.changes.iter().filter(|c| c.mirror_set == name).cloned().collect(),
            notes: self.notes.iter().filter(|n| n.mirror_set == name).cloned().collect(),
            in_sync: 0,
        }
    }
}

/// Computes the plan for every MirrorSet.
pub fn plan(desired: &DesiredState, actual: &ActualState) -> Plan {
    mirror::plan(desired, actual)
}

/// The tag under which `onTagMove: backup` keeps a tag's previous content:
/// `<tag>-backup-<first 12 hex digits of the old digest>`, shortened to fit 128 bytes. Tags
/// come from upstream's tag list, which nothing guarantees to be ASCII: the cut never splits
/// a character.
pub fn backup_tag(tag: &str, old: &Digest) -> String {
    let hex = old.as_str().split_once(':').map_or(old.as_str(), |(_, h)| h);
    let suffix = format!("-backup-{}", hex.get(..12).unwrap_or(hex));
    let mut keep = tag.len().min(128usize.saturating_sub(suffix.len()));
    while !tag.is_char_boundary(keep) {
        keep -= 1;
    }
    format!("{}{suffix}", &tag[..keep])
}

/// Tags that belong to other content and are never pruned: cosign signatures, attestations
/// and SBOMs (`sha256-<hex>.sig`), OCI referrers fallback tags, and backup tags.
pub fn is_protected_tag(tag: &str) -> bool {
    tag.starts_with("sha256-") || tag.contains("-backup-")
}

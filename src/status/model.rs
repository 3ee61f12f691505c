//! The documents of the status folder, as they are written and read back.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub const API_VERSION: &str = "lifeboat.dev/v1alpha1";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    pub name: String,
}

impl Index {
    /// An index as the status branch holds it; `None` when it is not one (edited by hand, or
    /// written by a future version).
    pub fn parse(bytes: &[u8]) -> Option<Index> {
        serde_yaml::from_slice(bytes).ok()
    }
}

/// `lifeboat.yaml`: what the report was computed from, and a summary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    pub api_version: String,
    pub kind: String,
    /// The id of the desired-state tree this report was computed from (the status folder left
    /// out): a commit that changes only the status leaves it the same.
    pub desired_tree: String,
    /// The desired-state tree the passes follow: the same, unless the newest one is invalid.
    pub applied_tree: Option<String>,
    pub checked_at: String,
    /// SHA-256 of the report with every time left out: equal means nothing new to say.
    pub fingerprint: String,
    pub desired_state: DesiredValidity,
    pub mirror_sets: BTreeMap<String, SetSummary>,
    /// Whether each registry answered every lookup of the last passes.
    pub registries: BTreeMap<String, RegistryHealth>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DesiredValidity {
    pub valid: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub diagnostics: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SetSummary {
    pub result: SetResult,
    pub last_success: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegistryHealth {
    pub reachable: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

pub use crate::outcome::SetResult;

/// `MirrorSet/<name>.yaml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MirrorSetStatus {
    pub api_version: String,
    pub kind: String,
    pub metadata: Metadata,
    /// The desired-state file that declares the set.
    pub source_file: String,
    pub desired_tree: String,
    pub result: SetResult,
    pub last_run: Option<String>,
    pub last_success: Option<String>,
    pub summary: Counts,
    pub images: Vec<ImageStatus>,
}

impl MirrorSetStatus {
    pub fn new(name: &str, file: &str, tree: &str) -> Self {
        MirrorSetStatus {
            api_version: API_VERSION.into(),
            kind: "MirrorSetStatus".into(),
            metadata: Metadata { name: name.into() },
            source_file: file.into(),
            desired_tree: tree.into(),
            result: SetResult::NotRunYet,
            last_run: None,
            last_success: None,
            summary: Counts::default(),
            images: Vec::new(),
        }
    }
}

/// Tags of a set by state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Counts {
    /// Tags the set selects.
    pub desired: usize,
    /// Tags the mirror holds (in sync, or other content kept on purpose).
    pub mirrored: usize,
    /// Tags not in the mirror: missing, failed, rejected, or not yet copied.
    pub missing: usize,
    /// Copies, signatures and referrers that failed in the last pass.
    pub failed: usize,
    /// Tags kept out of the mirror by the signature policy.
    pub rejected: usize,
    /// Tags whose upstream or mirror could not be looked at.
    pub unknown: usize,
    /// Tags whose mirror digest differs from upstream's.
    pub drift: usize,
}

impl Counts {
    pub fn count(&mut self, t: &TagStatus) {
        self.desired += 1;
        if t.mirror.is_some() && !t.mirror_unknown {
            self.mirrored += 1;
        } else {
            self.missing += 1;
        }
        match t.state {
            TagState::Failed => self.failed += 1,
            TagState::Rejected => self.rejected += 1,
            TagState::Unknown => self.unknown += 1,
            _ => {}
        }
        if !t.mirror_unknown
            && t.mirror.is_some()
            && t.upstream.is_some()
            && t.mirror != t.upstream
            && t.platforms.is_none()
        {
            self.drift += 1;
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageStatus {
    pub source: String,
    pub target: String,
    pub tags: BTreeMap<String, TagStatus>,
    /// A problem with the image as a whole, such as an unreadable tag list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// One mirrored tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TagStatus {
    pub state: TagState,
    /// The upstream digest, when it could be read.
    pub upstream: Option<String>,
    /// The digest the mirror holds (with `mirrorUnknown`: held when last seen).
    pub mirror: Option<String>,
    /// The mirror could not be read in the last pass.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub mirror_unknown: bool,
    /// The platforms copied, when the set copies only some.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platforms: Option<Vec<String>>,
    /// Who signed the mirrored digest, as the signature policy verified it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signer: Vec<String>,
    /// When the mirror's digest for this tag last changed, as far as Lifeboat saw it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_change: Option<String>,
    /// Why the tag is in this state, for anything but in sync.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum TagState {
    /// The mirror holds what upstream has.
    InSync,
    /// The mirror holds other content than upstream, on purpose (`onTagMove: keep`, a tag gone
    /// upstream).
    Kept,
    /// Not in the mirror, and nothing could be done (gone upstream, for instance).
    Missing,
    /// Planned but not applied (a dry run).
    Pending,
    Failed,
    /// Kept out by the signature policy.
    Rejected,
    /// Upstream or mirror could not be looked at.
    Unknown,
}

impl TagState {
    pub fn label(self) -> &'static str {
        match self {
            TagState::InSync => "in sync",
            TagState::Kept => "kept",
            TagState::Missing => "missing",
            TagState::Pending => "pending",
            TagState::Failed => "failed",
            TagState::Rejected => "rejected",
            TagState::Unknown => "unknown",
        }
    }
}

//! `BackupPolicy/<name>.yaml` and the backup line of the DR report: the newest archive of each
//! policy with its time, age, size, checksum, integrity and encryption, from what the caller
//! observed in the policy's destination folder.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::Renderer;
use super::check::{Check, Readiness};
use super::model::{API_VERSION, Metadata};
use crate::desired::BackupPolicy;

/// How old the newest verified archive may be before the DR plan fails.
pub const MAX_AGE: chrono::Duration = chrono::Duration::days(7);

/// What the caller found in one policy's destination folder.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackupObservation {
    pub destination: String,
    /// Archives of the policy found (recorded or not).
    pub archives: usize,
    pub newest: Option<ArchiveFacts>,
    /// The newest archive that passed verification, when it is not the newest.
    pub newest_verified: Option<ArchiveFacts>,
    /// Why the folder could not be read, when it could not.
    pub unreadable: Option<String>,
    /// Why the last export failed, when it did.
    pub last_error: Option<String>,
}

/// One archive, as its record describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveFacts {
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub size: u64,
    pub aggregate: String,
    /// PASS verified, FAIL failed, UNKNOWN never checked.
    pub integrity: Readiness,
    /// How it was checked: every file re-hashed, or only the stored bytes.
    pub checked: String,
    pub encrypted: bool,
    pub images: u64,
    pub parts: usize,
    pub base: Option<String>,
}

impl BackupObservation {
    /// The archive the DR plan counts on: the newest one that passed verification.
    pub fn verified(&self) -> Option<&ArchiveFacts> {
        match &self.newest {
            Some(a) if a.integrity == Readiness::Pass => Some(a),
            _ => self.newest_verified.as_ref(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupPolicyStatus {
    pub api_version: String,
    pub kind: String,
    pub metadata: Metadata,
    pub source_file: String,
    pub desired_tree: String,
    pub destination: String,
    /// PASS: a verified archive under 7 days old; FAIL otherwise; UNKNOWN when the folder
    /// cannot be read from where Lifeboat runs.
    pub result: Readiness,
    pub reason: String,
    pub archives: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_archive: Option<ArchiveStatus>,
    /// The newest archive that passed verification, when the newest did not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_verified_archive: Option<ArchiveStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArchiveStatus {
    pub name: String,
    pub created_at: String,
    pub age: String,
    pub size: String,
    pub size_bytes: u64,
    pub checksum: String,
    pub integrity: Readiness,
    pub checked: String,
    pub encrypted: bool,
    pub images: u64,
    pub parts: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
}

/// The DR report's backup line: every BackupPolicy has a verified archive under 7 days old.
pub(super) fn check(
    policies: Option<&BTreeMap<String, BackupPolicy>>,
    observed: &BTreeMap<String, BackupObservation>,
    now: DateTime<Utc>,
) -> Check {
    const NAME: &str = "Air-gapped backups present, under 7 days old, verified";
    let Some(policies) = policies.filter(|p| !p.is_empty()) else {
        return Check::new(NAME, Readiness::Fail, "no BackupPolicy in the desired state");
    };
    Check::worst(
        NAME,
        policies.iter().map(|(name, policy)| {
            let (result, why) = match observed.get(name) {
                Some(o) => verdict(o, now),
                None => (Readiness::Unknown, format!("{} was not looked at", policy.destination)),
            };
            (result, format!("{name}: {why}"))
        }),
    )
}

/// The verdict for one policy, and why.
fn verdict(o: &BackupObservation, now: DateTime<Utc>) -> (Readiness, String) {
    if let Some(why) = &o.unreadable {
        return (Readiness::Unknown, format!("{} cannot be read here: {why}", o.destination));
    }
    match o.verified() {
        None if o.archives == 0 => (Readiness::Fail, format!("no archive in {}", o.destination)),
        None => {
            (Readiness::Fail, format!("none of the {} archives in {} passed verification", o.archives, o.destination))
        }
        Some(a) if now - a.created_at > MAX_AGE => {
            (Readiness::Fail, format!("the newest verified archive {} is over 7 days old", a.name))
        }
        Some(a) => match &o.newest {
            Some(n) if n.integrity == Readiness::Fail => (
                Readiness::Fail,
                format!("the newest archive {} failed verification (the last good one is {})", n.name, a.name),
            ),
            _ => (Readiness::Pass, format!("{} verified, under 7 days old", a.name)),
        },
    }
}

/// The status document of one policy.
pub(super) fn document(r: &Renderer<'_>, name: &str, source_file: &str, o: &BackupObservation) -> BackupPolicyStatus {
    let now = r.input.now;
    let archive = |a: &ArchiveFacts| ArchiveStatus {
        name: a.name.clone(),
        created_at: r.time(a.created_at),
        age: r.age(now - a.created_at),
        size: bytesize::ByteSize(a.size).to_string(),
        size_bytes: a.size,
        checksum: format!("sha256:{}", a.aggregate),
        integrity: a.integrity,
        checked: a.checked.clone(),
        encrypted: a.encrypted,
        images: a.images,
        parts: a.parts,
        base: a.base.clone(),
    };
    let (result, reason) = verdict(o, now);
    BackupPolicyStatus {
        api_version: API_VERSION.into(),
        kind: "BackupPolicyStatus".into(),
        metadata: Metadata { name: name.into() },
        source_file: source_file.into(),
        desired_tree: r.input.desired.tree().into(),
        destination: o.destination.clone(),
        result,
        reason,
        archives: o.archives,
        last_archive: o.newest.as_ref().map(archive),
        last_verified_archive: o.newest_verified.as_ref().map(archive),
        last_error: o.last_error.clone(),
    }
}

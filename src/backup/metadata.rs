//! `lifeboat/metadata.json`: what an archive holds, in words a person can read without
//! Lifeboat — every image with its tag, digest, source and verified signer, the tags attached
//! to it (signatures, attestations, SBOMs), the time, the Lifeboat version and the desired-state
//! revision. Restore reads it to know which files are manifests and which tags to write.
//! Pure data: no I/O.

use serde::{Deserialize, Serialize};

use crate::desired::{Compression, Digest};

pub const FORMAT: &str = "lifeboat-backup/v1";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Metadata {
    /// Always `lifeboat-backup/v1`.
    pub format: String,
    pub lifeboat_version: String,
    pub policy: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// The desired-state tree and commit the selection came from, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_revision: Option<String>,
    pub compression: Compression,
    /// For an incremental archive: the archive holding the blobs this one leaves out (which
    /// may itself name a base).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
    pub images: Vec<Image>,
    /// Images the policy selects that the mirror does not hold: not in this archive.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<Missing>,
    /// Every manifest stored under `blobs/sha256/`, with its real media type.
    pub manifests: Vec<StoredManifest>,
    /// Layer and config blobs.
    pub blobs: Blobs,
}

/// One image as it was in the mirror.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Image {
    /// The full mirror reference, also the `org.opencontainers.image.ref.name` of its
    /// `index.json` entry: `mirror.internal:5000/vendor/app:1.2`.
    pub reference: String,
    /// Repository path in the mirror, without the host: what `restore --to` puts under the
    /// new registry.
    pub path: String,
    /// The tag, or none for an image selected by digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub platforms: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror_set: Option<String>,
    /// Where the MirrorSet copies it from: `docker.io/library/nginx:1.27`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// `verified by ...`, `not verified: ...` or `not checked: ...`.
    pub signature: String,
    /// Tags attached to this image or its children: `sha256-<hex>.sig`, `.att`, `.sbom`, and
    /// the referrers fallback tag `sha256-<hex>`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attached: Vec<Attached>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Attached {
    pub tag: String,
    pub digest: Digest,
    pub media_type: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Missing {
    pub reference: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StoredManifest {
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Blobs {
    /// Blobs stored in this archive.
    pub stored: u64,
    pub stored_bytes: u64,
    /// Blobs the images need that are left to the base archive (incremental only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub in_base: Vec<Digest>,
}

impl Image {
    /// The mirror repository, `host/path`: the reference without its tag or digest.
    pub fn repository(&self) -> &str {
        let suffix = match &self.tag {
            Some(tag) => format!(":{tag}"),
            None => format!("@{}", self.digest),
        };
        self.reference.strip_suffix(&suffix).unwrap_or(&self.reference)
    }
}

impl Metadata {
    pub fn parse(bytes: &[u8]) -> anyhow::Result<Metadata> {
        let metadata: Metadata = serde_json::from_slice(bytes)
            .map_err(|e| anyhow::anyhow!("{} is not Lifeboat backup metadata: {e}", super::archive::METADATA))?;
        anyhow::ensure!(
            metadata.format == FORMAT,
            "the archive's format is `{}`; this version of Lifeboat reads `{FORMAT}`",
            metadata.format
        );
        Ok(metadata)
    }
}

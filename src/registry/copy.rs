//! Copies one image between registries: digest first, children before the index, blobs by
//! HEAD, then cross-repository mount, then a streamed copy, and the tag written last, so a
//! crash at any moment leaves no tag pointing at missing content.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::OnceCell;

use futures_util::{StreamExt, TryStreamExt};
use serde::Serialize;

use super::client::RegistryClient;
use super::error::{ErrorKind, RegistryError};
use super::manifest::{Descriptor, Manifest};
use crate::desired::{Digest, Platforms, Repository};

/// One image to copy: `source@digest` to `target:tag`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyRequest {
    pub source: Repository,
    pub digest: Digest,
    pub target: Repository,
    pub tag: String,
    pub platforms: Platforms,
}

/// What a copy transferred.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CopyReport {
    /// The digest now under the tag: the upstream digest, unless platforms were filtered.
    pub written: Option<Digest>,
    pub manifests_pushed: u64,
    pub blobs_copied: u64,
    pub blobs_mounted: u64,
    pub blobs_present: u64,
    pub bytes_copied: u64,
}

impl CopyReport {
    pub fn add(&mut self, other: &CopyReport) {
        self.manifests_pushed += other.manifests_pushed;
        self.blobs_copied += other.blobs_copied;
        self.blobs_mounted += other.blobs_mounted;
        self.blobs_present += other.blobs_present;
        self.bytes_copied += other.bytes_copied;
    }
}

/// Blobs placed in a target registry, and the repository holding each: the source of
/// cross-repository mounts for layers shared between images, kept from pass to pass. A blob
/// being copied is copied once; other images needing it wait for that copy and mount it.
#[derive(Debug, Default)]
pub struct BlobLocations(Mutex<HashMap<BlobKey, Arc<OnceCell<Repository>>>>);

/// A blob in one registry host.
type BlobKey = (String, Digest);

impl BlobLocations {
    fn cell(&self, host: &str, digest: &Digest) -> Arc<OnceCell<Repository>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry((host.to_string(), digest.clone()))
            .or_default()
            .clone()
    }
}

/// Blobs of one image copied at once; the per-host limits bound the total.
const BLOBS_IN_FLIGHT: usize = 4;

pub async fn copy_image(
    client: &RegistryClient,
    blobs: &BlobLocations,
    request: &CopyRequest,
) -> Result<CopyReport, RegistryError> {
    let operation = || format!("copying {}@{} to {}:{}", request.source, request.digest, request.target, request.tag);
    let manifest = fetch(client, &request.source, &request.digest).await?;
    let mut report = CopyReport::default();
    let top = if manifest.is_index() {
        let top = match &request.platforms {
            Platforms::All => manifest,
            Platforms::Only(platforms) => {
                manifest.filtered(platforms).map_err(|e| RegistryError::new(ErrorKind::Permanent, operation(), e))?
            }
        };
        let children = top.children().map_err(|e| RegistryError::new(ErrorKind::Permanent, operation(), e))?;
        let reports: Vec<CopyReport> = futures_util::stream::iter(children)
            .map(|child| copy_child(client, blobs, request, child))
            .buffer_unordered(2)
            .try_collect()
            .await?;
        reports.iter().for_each(|r| report.add(r));
        top
    } else {
        report.add(&copy_blobs(client, blobs, request, &manifest).await?);
        manifest
    };
    client.push_manifest(&request.target, &request.tag, &top.bytes, &top.media_type).await?;
    report.manifests_pushed += 1;
    report.written = Some(top.digest);
    Ok(report)
}

async fn fetch(client: &RegistryClient, repository: &Repository, digest: &Digest) -> Result<Manifest, RegistryError> {
    let operation = || format!("reading {repository}@{digest}");
    let (bytes, digest) = client.manifest(repository, digest.as_str()).await?.ok_or_else(|| {
        RegistryError::new(ErrorKind::NotFound, operation(), format!("{} no longer has this manifest", repository.host))
    })?;
    Manifest::parse(bytes, digest).map_err(|e| RegistryError::new(ErrorKind::Permanent, operation(), e))
}

/// A manifest named by an index, pushed by digest; skipped when the target already has it.
async fn copy_child(
    client: &RegistryClient,
    blobs: &BlobLocations,
    request: &CopyRequest,
    child: Descriptor,
) -> Result<CopyReport, RegistryError> {
    if client.manifest_digest(&request.target, child.digest.as_str()).await?.is_some() {
        return Ok(CopyReport::default());
    }
    let manifest = fetch(client, &request.source, &child.digest).await?;
    if manifest.is_index() {
        return Err(RegistryError::new(
            ErrorKind::Permanent,
            format!("copying {}@{}", request.source, child.digest),
            "an index inside an index is not supported",
        ));
    }
    let mut report = copy_blobs(client, blobs, request, &manifest).await?;
    client.push_manifest(&request.target, child.digest.as_str(), &manifest.bytes, &manifest.media_type).await?;
    report.manifests_pushed += 1;
    Ok(report)
}

async fn copy_blobs(
    client: &RegistryClient,
    blobs: &BlobLocations,
    request: &CopyRequest,
    manifest: &Manifest,
) -> Result<CopyReport, RegistryError> {
    let descriptors = manifest.blobs().map_err(|e| {
        RegistryError::new(ErrorKind::Permanent, format!("reading {}@{}", request.source, manifest.digest), e)
    })?;
    let reports: Vec<CopyReport> = futures_util::stream::iter(descriptors)
        .map(|blob| copy_blob(client, blobs, request, blob))
        .buffer_unordered(BLOBS_IN_FLIGHT)
        .try_collect()
        .await?;
    let mut total = CopyReport::default();
    reports.iter().for_each(|r| total.add(r));
    Ok(total)
}

async fn copy_blob(
    client: &RegistryClient,
    blobs: &BlobLocations,
    request: &CopyRequest,
    blob: Descriptor,
) -> Result<CopyReport, RegistryError> {
    let target = &request.target;
    let mut report = CopyReport::default();
    let cell = blobs.cell(&target.host, &blob.digest);
    if client.blob_exists(target, &blob.digest).await? {
        report.blobs_present = 1;
        let _ = cell.set(target.clone());
        return Ok(report);
    }
    // The first image needing this blob copies it; the others get the repository it went to.
    let mut copied_here = false;
    let holder = cell
        .get_or_try_init(|| async {
            client.copy_blob(&request.source, target, &blob.digest, blob.size).await?;
            copied_here = true;
            Ok::<Repository, RegistryError>(target.clone())
        })
        .await?
        .clone();
    if copied_here {
        report.blobs_copied = 1;
        report.bytes_copied = blob.size;
    } else if holder == *target {
        // Copied here by another image of this pass, or by an earlier pass, since when it may
        // have been deleted: the HEAD above did not find it.
        if client.blob_exists(target, &blob.digest).await? {
            report.blobs_present = 1;
        } else {
            client.copy_blob(&request.source, target, &blob.digest, blob.size).await?;
            report.blobs_copied = 1;
            report.bytes_copied = blob.size;
        }
    } else if client.mount_blob(target, &holder, &blob.digest).await? {
        report.blobs_mounted = 1;
    } else {
        client.copy_blob(&request.source, target, &blob.digest, blob.size).await?;
        report.blobs_copied = 1;
        report.bytes_copied = blob.size;
    }
    Ok(report)
}

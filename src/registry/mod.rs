//! Registries: the only module that talks to them, with its own HTTP requests (`http`) and
//! sigstore's client for keyless signatures, and the only user of the sigstore and oci-client
//! crates.
//!
//! The rest of Lifeboat sees the small [`Registry`] trait: resolve a tag to a digest, list
//! tags, copy an image, delete a manifest. [`OciRegistry`] implements it against real
//! registries; `fake::FakeRegistry` holds state in memory for tests of the pipeline. A pass
//! starts with [`Registry::for_pass`], so that a host which stopped answering is given up on
//! for the rest of that pass only (see `client`).

pub mod auth;
mod breaker;
pub mod client;
pub mod copy;
pub mod cosign;
pub mod error;
#[cfg(test)]
pub mod fake;
mod host;
mod http;
pub mod manifest;

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};

pub use client::{Options, RegistryClient};
pub use copy::{BlobLocations, CopyReport, CopyRequest};
pub use cosign::{Signer, TrustPolicy, Verdict};
pub use error::{ErrorKind, RegistryError};

use crate::desired::{DesiredState, Digest, Repository};

/// Log directives the registry crates need whatever filter was asked for: oci-client logs token
/// responses at debug level (never below info), and sigstore warns on every registry without
/// the OCI referrers API and explains skipped signature layers at info, which Lifeboat reports
/// itself (unless the filter names sigstore).
pub fn log_directives(filter: &str) -> Vec<&'static str> {
    let mut directives = vec!["oci_client=info"];
    if !filter.contains("sigstore") {
        directives.push("sigstore=error");
    }
    directives
}

/// What a tag points at in a registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub digest: Digest,
    /// For an index Lifeboat filtered to some platforms: the upstream digest it holds.
    pub source_digest: Option<Digest>,
    /// For an index whose manifest was read: the manifests it names.
    pub children: Vec<Digest>,
}

impl Resolved {
    /// A digest known without reading anything.
    pub fn of(digest: Digest) -> Resolved {
        Resolved { digest, source_digest: None, children: Vec::new() }
    }
}

/// The registry operations the pipeline needs.
pub trait Registry: Send + Sync {
    /// The same registries for one pass: state that outlives passes (connections, credentials,
    /// blob locations, stored content) is shared; what a pass learns about hosts that stopped
    /// answering is its own.
    fn for_pass(&self) -> Self
    where
        Self: Sized;

    /// Every tag of a repository, or `None` when the repository does not exist.
    fn list_tags(
        &self,
        repository: &Repository,
    ) -> impl Future<Output = Result<Option<Vec<String>>, RegistryError>> + Send;

    /// What `reference` (tag or digest) points at, or `None` when it does not exist. With
    /// `read_source`, the manifest is read: the upstream digest of a filtered index, and
    /// the children of an index.
    fn resolve(
        &self,
        repository: &Repository,
        reference: &str,
        read_source: bool,
    ) -> impl Future<Output = Result<Option<Resolved>, RegistryError>> + Send;

    /// Copies `source@digest` to `target:tag`.
    fn copy(&self, request: &CopyRequest) -> impl Future<Output = Result<CopyReport, RegistryError>> + Send;

    /// Checks the cosign signatures of `repository@digest` against the policy of MirrorSet
    /// `set`. `Err` when the registry could not be read.
    fn verify(
        &self,
        set: &str,
        repository: &Repository,
        digest: &Digest,
    ) -> impl Future<Output = Result<Verdict, RegistryError>> + Send;

    /// The descriptors of the manifests whose `subject` is `digest`, when the registry offers
    /// the OCI 1.1 referrers API; `None` when it does not (Distribution 2.8), in which case
    /// the fallback tag `sha256-<hex>` holds them as an index.
    fn referrers(
        &self,
        repository: &Repository,
        digest: &Digest,
    ) -> impl Future<Output = Result<Option<Vec<serde_json::Value>>, RegistryError>> + Send;

    /// Stores manifest bytes under `tag` (the referrers fallback index Lifeboat writes).
    fn put_manifest(
        &self,
        repository: &Repository,
        tag: &str,
        bytes: bytes::Bytes,
        media_type: &str,
    ) -> impl Future<Output = Result<(), RegistryError>> + Send;

    /// Deletes a manifest, and with it every tag pointing at it.
    fn delete(
        &self,
        repository: &Repository,
        digest: &Digest,
    ) -> impl Future<Output = Result<(), RegistryError>> + Send;
}

/// Real registries.
pub struct OciRegistry {
    pub client: RegistryClient,
    shared: Arc<Shared>,
    /// Hosts that answered that they have no referrers API: not asked again in this pass.
    no_referrers_api: Mutex<HashSet<String>>,
}

/// What every pass of an [`OciRegistry`] shares besides the client.
struct Shared {
    blobs: BlobLocations,
    /// Signature policy per MirrorSet that checks signatures.
    policies: BTreeMap<String, TrustPolicy>,
}

impl OciRegistry {
    /// Registries for many passes, on `client` (which belongs to no pass): each pass should
    /// start with [`Registry::for_pass`].
    pub fn new(client: RegistryClient, policies: BTreeMap<String, TrustPolicy>) -> Self {
        OciRegistry {
            client,
            shared: Arc::new(Shared { blobs: BlobLocations::default(), policies }),
            no_referrers_api: Mutex::default(),
        }
    }

    /// The same registries for one pass, with breakers of its own (see `client`).
    pub fn for_pass(&self) -> OciRegistry {
        OciRegistry { client: self.client.for_pass(), shared: self.shared.clone(), no_referrers_api: Mutex::default() }
    }

    /// The registries a desired state describes, whose files (keys, CA files) live in `root`,
    /// with the signature policy of every MirrorSet that checks signatures. For many passes:
    /// each should start with [`Registry::for_pass`].
    pub fn for_desired(state: &DesiredState, root: &std::path::Path, options: Options) -> anyhow::Result<Self> {
        let policies = cosign::policies(state, |file| Ok(std::fs::read(root.join(file))?))?;
        Ok(OciRegistry::new(RegistryClient::new(state, Some(root.to_path_buf()), options)?, policies))
    }

    /// Whether MirrorSet `set` has a signature policy to check.
    pub fn checks_signatures(&self, set: &str) -> bool {
        self.shared.policies.contains_key(set)
    }

    fn lacks_referrers_api(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.no_referrers_api.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Registry for OciRegistry {
    fn for_pass(&self) -> Self {
        OciRegistry::for_pass(self)
    }

    async fn list_tags(&self, repository: &Repository) -> Result<Option<Vec<String>>, RegistryError> {
        self.client.list_tags(repository).await
    }

    async fn resolve(
        &self,
        repository: &Repository,
        reference: &str,
        read_source: bool,
    ) -> Result<Option<Resolved>, RegistryError> {
        if !read_source {
            let digest = self.client.manifest_digest(repository, reference).await?;
            return Ok(digest.map(|digest| Resolved { digest, source_digest: None, children: Vec::new() }));
        }
        let Some((bytes, digest)) = self.client.manifest(repository, reference).await? else {
            return Ok(None);
        };
        let parsed = manifest::Manifest::parse(bytes, digest.clone()).ok();
        let source_digest = parsed.as_ref().and_then(manifest::Manifest::source_digest);
        let children = parsed
            .filter(manifest::Manifest::is_index)
            .and_then(|m| m.children().ok())
            .map(|c| c.into_iter().map(|d| d.digest).collect())
            .unwrap_or_default();
        Ok(Some(Resolved { digest, source_digest, children }))
    }

    async fn copy(&self, request: &CopyRequest) -> Result<CopyReport, RegistryError> {
        copy::copy_image(&self.client, &self.shared.blobs, request).await
    }

    async fn verify(&self, set: &str, repository: &Repository, digest: &Digest) -> Result<Verdict, RegistryError> {
        match self.shared.policies.get(set) {
            Some(policy) => cosign::verify(&self.client, policy, repository, digest).await,
            None => Ok(Verdict::Rejected { reason: format!("MirrorSet {set} has no signature policy loaded") }),
        }
    }

    async fn referrers(
        &self,
        repository: &Repository,
        digest: &Digest,
    ) -> Result<Option<Vec<serde_json::Value>>, RegistryError> {
        if self.lacks_referrers_api().contains(&repository.host) {
            return Ok(None);
        }
        let Some(bytes) = self.client.referrers(repository, digest).await? else {
            // A registry with the API answers 200 even when nothing refers to the digest.
            self.lacks_referrers_api().insert(repository.host.clone());
            return Ok(None);
        };
        let index: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
            RegistryError::new(
                ErrorKind::Permanent,
                format!("listing referrers of {repository}@{digest}"),
                format!("the referrers index is not JSON: {e}"),
            )
        })?;
        Ok(Some(index.get("manifests").and_then(|m| m.as_array()).cloned().unwrap_or_default()))
    }

    async fn put_manifest(
        &self,
        repository: &Repository,
        tag: &str,
        bytes: bytes::Bytes,
        media_type: &str,
    ) -> Result<(), RegistryError> {
        self.client.push_manifest(repository, tag, &bytes, media_type).await
    }

    async fn delete(&self, repository: &Repository, digest: &Digest) -> Result<(), RegistryError> {
        self.client.delete_manifest(repository, digest).await
    }
}

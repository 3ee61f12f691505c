//! An in-memory registry that holds state, for testing the pipeline without servers. Hosts
//! can be taken down to simulate an outage.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use super::{CopyReport, CopyRequest, ErrorKind, Registry, RegistryError, Resolved, Signer, Verdict};
use crate::desired::{Digest, Platforms, Repository};

#[derive(Debug, Default)]
struct Inner {
    /// repository → tag → digest
    tags: BTreeMap<String, BTreeMap<String, Digest>>,
    /// repository → digests stored (tagged or not)
    manifests: BTreeMap<String, BTreeSet<Digest>>,
    /// filtered index digest → upstream digest
    sources: BTreeMap<Digest, Digest>,
    down: BTreeSet<String>,
    /// Every copy fails as a transient error, as a flaky upstream would.
    failing_copies: bool,
    /// Digests with a valid signature, wherever their `.sig` tag is.
    signed: BTreeSet<Digest>,
}

/// Its passes share the stored content.
#[derive(Debug, Default)]
pub struct FakeRegistry {
    inner: Arc<Mutex<Inner>>,
}

impl FakeRegistry {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("fake registry lock")
    }

    /// Stores a manifest under a tag.
    pub fn push(&self, repository: &str, tag: &str, digest: &Digest) {
        let mut inner = self.lock();
        inner.tags.entry(repository.to_string()).or_default().insert(tag.to_string(), digest.clone());
        inner.manifests.entry(repository.to_string()).or_default().insert(digest.clone());
    }

    /// Signs `digest` in `repository`: a `sha256-<hex>.sig` tag that verifies.
    pub fn sign(&self, repository: &str, digest: &Digest) {
        let signature = super::manifest::sha256(format!("signature of {digest}").as_bytes());
        self.push(repository, &super::cosign::attached_tag(digest, "sig"), &signature);
        self.lock().signed.insert(digest.clone());
    }

    /// Makes every signature of `digest` fail verification (or pass again).
    pub fn set_signature_valid(&self, digest: &Digest, valid: bool) {
        let mut inner = self.lock();
        if valid {
            inner.signed.insert(digest.clone());
        } else {
            inner.signed.remove(digest);
        }
    }

    /// Takes a host down (every call fails as unreachable) or brings it back.
    pub fn set_down(&self, host: &str, down: bool) {
        let mut inner = self.lock();
        if down {
            inner.down.insert(host.to_string());
        } else {
            inner.down.remove(host);
        }
    }

    pub fn tags(&self, repository: &str) -> BTreeMap<String, Digest> {
        self.lock().tags.get(repository).cloned().unwrap_or_default()
    }

    /// Makes every copy fail (or work again), while lookups keep answering.
    pub fn set_failing_copies(&self, failing: bool) {
        self.lock().failing_copies = failing;
    }

    fn check_up(&self, host: &str, operation: &str) -> Result<(), RegistryError> {
        if self.lock().down.contains(host) {
            return Err(RegistryError::new(ErrorKind::Transient, operation, format!("could not connect to {host}")));
        }
        Ok(())
    }
}

/// A stand-in digest for a platform-filtered copy of `digest`.
pub fn filtered_digest(digest: &Digest, platforms: &BTreeSet<String>) -> Digest {
    super::manifest::sha256(format!("{digest}|{}", platforms.iter().cloned().collect::<Vec<_>>().join(",")).as_bytes())
}

impl Registry for FakeRegistry {
    fn for_pass(&self) -> Self {
        FakeRegistry { inner: self.inner.clone() }
    }

    async fn list_tags(&self, repository: &Repository) -> Result<Option<Vec<String>>, RegistryError> {
        self.check_up(&repository.host, &format!("listing tags of {repository}"))?;
        Ok(self.lock().tags.get(&repository.to_string()).map(|t| t.keys().cloned().collect()))
    }

    async fn resolve(
        &self,
        repository: &Repository,
        reference: &str,
        _read_source: bool,
    ) -> Result<Option<Resolved>, RegistryError> {
        self.check_up(&repository.host, &format!("looking up {repository}:{reference}"))?;
        let inner = self.lock();
        let key = repository.to_string();
        let digest = if reference.contains(':') {
            let digest: Digest =
                reference.parse().map_err(|e: String| RegistryError::new(ErrorKind::Permanent, "resolve", e))?;
            inner.manifests.get(&key).filter(|m| m.contains(&digest)).map(|_| digest)
        } else {
            inner.tags.get(&key).and_then(|t| t.get(reference)).cloned()
        };
        Ok(digest.map(|digest| Resolved {
            source_digest: inner.sources.get(&digest).cloned(),
            digest,
            children: Vec::new(),
        }))
    }

    async fn copy(&self, request: &CopyRequest) -> Result<CopyReport, RegistryError> {
        let operation = format!("copying {}@{} to {}:{}", request.source, request.digest, request.target, request.tag);
        self.check_up(&request.source.host, &operation)?;
        self.check_up(&request.target.host, &operation)?;
        let mut inner = self.lock();
        if inner.failing_copies {
            return Err(RegistryError::new(ErrorKind::Transient, operation, "upstream answered HTTP 503"));
        }
        let present = inner.manifests.get(&request.source.to_string()).is_some_and(|m| m.contains(&request.digest));
        if !present {
            return Err(RegistryError::new(ErrorKind::NotFound, operation, "the source no longer has this manifest"));
        }
        let written = match &request.platforms {
            Platforms::All => request.digest.clone(),
            Platforms::Only(platforms) => {
                let filtered = filtered_digest(&request.digest, platforms);
                inner.sources.insert(filtered.clone(), request.digest.clone());
                filtered
            }
        };
        let target = request.target.to_string();
        inner.tags.entry(target.clone()).or_default().insert(request.tag.clone(), written.clone());
        inner.manifests.entry(target).or_default().insert(written.clone());
        Ok(CopyReport { written: Some(written), manifests_pushed: 1, ..CopyReport::default() })
    }

    async fn verify(&self, _set: &str, repository: &Repository, digest: &Digest) -> Result<Verdict, RegistryError> {
        self.check_up(&repository.host, &format!("checking signatures of {repository}@{digest}"))?;
        let inner = self.lock();
        let tag = super::cosign::attached_tag(digest, "sig");
        let has_tag = inner.tags.get(&repository.to_string()).is_some_and(|t| t.contains_key(&tag));
        Ok(if has_tag && inner.signed.contains(digest) {
            Verdict::Verified {
                signers: vec![Signer::Key { key: "keys/fake.pub".into(), fingerprint: "sha256:fake".into() }],
            }
        } else {
            Verdict::Rejected {
                reason: format!("not signed: {repository} has no cosign signature for {}", digest.short()),
            }
        })
    }

    async fn referrers(
        &self,
        repository: &Repository,
        _digest: &Digest,
    ) -> Result<Option<Vec<serde_json::Value>>, RegistryError> {
        self.check_up(&repository.host, &format!("listing referrers in {repository}"))?;
        Ok(None)
    }

    async fn put_manifest(
        &self,
        repository: &Repository,
        tag: &str,
        bytes: bytes::Bytes,
        _media_type: &str,
    ) -> Result<(), RegistryError> {
        self.check_up(&repository.host, &format!("pushing {repository}:{tag}"))?;
        self.push(&repository.to_string(), tag, &super::manifest::sha256(&bytes));
        Ok(())
    }

    async fn delete(&self, repository: &Repository, digest: &Digest) -> Result<(), RegistryError> {
        self.check_up(&repository.host, &format!("deleting {repository}@{digest}"))?;
        let mut inner = self.lock();
        let key = repository.to_string();
        if let Some(tags) = inner.tags.get_mut(&key) {
            tags.retain(|_, d| d != digest);
        }
        if let Some(m) = inner.manifests.get_mut(&key) {
            m.remove(digest);
        }
        Ok(())
    }
}

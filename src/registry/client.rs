//! The connection to registries: one oci-client for every host, with per-host credentials,
//! concurrency, request pacing, timeouts and retries with backoff.
//!
//! Every request goes through [`RegistryClient::run`], which is where limits are enforced and
//! failures are classified; nothing else in Lifeboat talks HTTP to a registry.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::{Reference, RegistryOperation};
use tokio::sync::{OnceCell, Semaphore};
use tokio::time::Instant;

use super::auth::{self, Credential};
use super::error::{ErrorKind, RegistryError};
use crate::desired::{Credentials, DesiredState, Digest, Limits, Repository};

/// How one registry host is reached.
#[derive(Debug, Clone, Default)]
pub struct HostSettings {
    pub insecure: bool,
    pub credentials: Option<Credentials>,
    pub limits: Limits,
}

/// Timeouts and retries, the same for every host.
#[derive(Debug, Clone)]
pub struct Options {
    /// Longest wait for one request (a manifest, a tag page) and for any read during a blob
    /// transfer.
    pub timeout: Duration,
    /// Retries after a transient failure (5xx, 429, connection error, timeout).
    pub retries: u32,
    /// First backoff delay; it doubles with each retry, with jitter.
    pub backoff: Duration,
    /// Blobs larger than this are uploaded in PATCH requests of this size (streamed, never
    /// held in memory); smaller ones in one request.
    pub chunk_size: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            timeout: Duration::from_secs(30),
            retries: 4,
            backoff: Duration::from_millis(250),
            chunk_size: 256 << 20,
        }
    }
}

/// Per-host state.
struct Host {
    name: String,
    settings: HostSettings,
    permits: Arc<Semaphore>,
    /// Earliest start of the next request, when requestsPerSecond is set.
    next_start: tokio::sync::Mutex<Instant>,
    credential: OnceCell<Result<Credential, String>>,
}

impl Host {
    async fn pace(&self) {
        let Some(rps) = self.settings.limits.requests_per_second else {
            return;
        };
        let interval = Duration::from_secs_f64(1.0 / rps);
        let start = {
            let mut next = self.next_start.lock().await;
            let start = (*next).max(Instant::now());
            *next = start + interval;
            start
        };
        tokio::time::sleep_until(start).await;
    }
}

/// The registry client shared by a whole pass.
pub struct RegistryClient {
    oci: oci_client::Client,
    /// Streamed uploads and deletes, which oci-client does not offer.
    http: super::http::Http,
    settings: HashMap<String, HostSettings>,
    hosts: Mutex<HashMap<String, Arc<Host>>>,
    /// (registry, repository, operation) pairs oci-client has been authenticated for.
    authenticated: Mutex<HashSet<(String, String, bool)>>,
    /// The TLS settings oci-client was given, for the signature client built from them.
    tls: (Vec<String>, Vec<Certificate>),
    pub options: Options,
}

impl RegistryClient {
    /// A client for the hosts described by the desired state; `root` is the desired-state
    /// folder, against which `caFile` paths are resolved.
    pub fn new(state: &DesiredState, root: Option<PathBuf>, options: Options) -> anyhow::Result<Self> {
        let mut settings = HashMap::new();
        let mut insecure = Vec::new();
        let mut certificates = Vec::new();
        for registry in state.registries.values() {
            if registry.insecure {
                insecure.push(registry.host.clone());
            }
            if let Some(ca) = &registry.ca_file {
                let path = root.as_ref().map_or_else(|| PathBuf::from(ca), |r| r.join(ca));
                let data = std::fs::read(&path).map_err(|e| {
                    anyhow::anyhow!("reading caFile {} of Registry {}: {e}", path.display(), registry.host)
                })?;
                certificates.push(Certificate { encoding: CertificateEncoding::Pem, data });
            }
            settings.insert(
                registry.host.clone(),
                HostSettings {
                    insecure: registry.insecure,
                    credentials: registry.credentials.clone(),
                    limits: registry.limits.clone(),
                },
            );
        }
        // Timeouts are set per request: a blob upload gets time in proportion to its size.
        let mut http = reqwest::Client::builder()
            .connect_timeout(options.timeout)
            .user_agent(concat!("lifeboat/", env!("CARGO_PKG_VERSION")));
        for c in &certificates {
            http = http.add_root_certificate(
                reqwest::Certificate::from_pem(&c.data).map_err(|e| anyhow::anyhow!("reading a caFile: {e}"))?,
            );
        }
        let tls = (insecure.clone(), certificates.clone());
        let config = ClientConfig {
            protocol: ClientProtocol::HttpsExcept(insecure),
            extra_root_certificates: certificates,
            read_timeout: Some(options.timeout),
            connect_timeout: Some(options.timeout),
            user_agent: concat!("lifeboat/", env!("CARGO_PKG_VERSION")),
            // Indexes are copied whole, never resolved to one platform.
            platform_resolver: None,
            ..ClientConfig::default()
        };
        Ok(RegistryClient {
            oci: oci_client::Client::new(config),
            http: super::http::Http::new(http.build()?, options.timeout),
            settings,
            hosts: Mutex::new(HashMap::new()),
            authenticated: Mutex::new(HashSet::new()),
            tls,
            options,
        })
    }

    fn host(&self, name: &str) -> Arc<Host> {
        let mut hosts = self.hosts.lock().expect("host table lock");
        hosts
            .entry(name.to_string())
            .or_insert_with(|| {
                let settings = self.settings.get(name).cloned().unwrap_or_default();
                Arc::new(Host {
                    name: name.to_string(),
                    permits: Arc::new(Semaphore::new(settings.limits.concurrency.max(1) as usize)),
                    next_start: tokio::sync::Mutex::new(Instant::now()),
                    settings,
                    credential: OnceCell::new(),
                })
            })
            .clone()
    }

    async fn credential(&self, host: &Host) -> Result<Credential, RegistryError> {
        let result = host
            .credential
            .get_or_init(|| async {
                let found = match &host.settings.credentials {
                    None => Ok(Credential::Anonymous),
                    Some(Credentials::DockerConfig(path)) => {
                        auth::from_docker_config(std::path::Path::new(path), &host.name).await
                    }
                    Some(Credentials::Helper(helper)) => auth::from_helper(helper, &host.name).await,
                };
                found.map_err(|e| format!("{e:#}"))
            })
            .await;
        result.clone().map_err(|message| {
            RegistryError::new(ErrorKind::Unauthorized, format!("credentials for {}", host.name), message)
        })
    }

    /// Makes sure oci-client holds credentials (and, for token registries, a token with the
    /// right scope) for `reference` before a call that does not take credentials itself.
    async fn authenticate(&self, reference: &Reference, push: bool) -> Result<(), RegistryError> {
        let key = (reference.registry().to_string(), reference.repository().to_string(), push);
        if self.authenticated.lock().expect("auth lock").contains(&key) {
            return Ok(());
        }
        let host = self.host(reference.registry());
        let credential = self.credential(&host).await?.to_oci();
        let operation = if push { RegistryOperation::Push } else { RegistryOperation::Pull };
        let what = format!("authenticating to {} for {}", reference.registry(), reference.repository());
        self.run(
            &host,
            || what.clone(),
            Some(self.options.timeout),
            || async { self.oci.auth(reference, &credential, operation).await.map_err(Failure::from) },
        )
        .await?;
        self.authenticated.lock().expect("auth lock").insert(key);
        Ok(())
    }

    /// Runs one request against `host` within its limits, retrying transient failures with
    /// exponential backoff and jitter.
    async fn run<T, F, Fut>(
        &self,
        host: &Host,
        operation: impl Fn() -> String,
        timeout: Option<Duration>,
        mut request: F,
    ) -> Result<T, RegistryError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        let mut attempt = 0;
        loop {
            let permit = host.permits.acquire().await.expect("the semaphore is never closed");
            host.pace().await;
            let outcome = match timeout {
                Some(limit) => tokio::time::timeout(limit, request()).await.ok(),
                None => Some(request().await),
            };
            drop(permit);
            let error = match outcome {
                Some(Ok(value)) => return Ok(value),
                Some(Err(Failure::Oci(e))) => RegistryError::from_oci(operation(), &host.name, e),
                Some(Err(Failure::Registry(e))) => e,
                None => RegistryError::new(
                    ErrorKind::Transient,
                    operation(),
                    format!(
                        "{} did not answer within {}",
                        host.name,
                        humantime::format_duration(timeout.unwrap_or_default())
                    ),
                ),
            };
            if error.kind != ErrorKind::Transient || attempt >= self.options.retries {
                return Err(error);
            }
            attempt += 1;
            tracing::debug!(operation = %operation(), attempt, error = %error.message, "retrying");
            tokio::time::sleep(crate::retry::backoff(self.options.backoff, attempt, error.retry_after)).await;
        }
    }

    /// Where and how Lifeboat's own requests reach `repository`.
    async fn http_target(&self, host: &Host, repository: &Repository) -> Result<super::http::Target, RegistryError> {
        Ok(super::http::Target {
            repository: repository.clone(),
            insecure: host.settings.insecure,
            credential: self.credential(host).await?,
        })
    }

    /// Runs one of Lifeboat's own requests against `repository`, within its host's limits.
    async fn send_http<T, F, Fut>(
        &self,
        repository: &Repository,
        operation: impl Fn() -> String,
        request: F,
    ) -> Result<T, RegistryError>
    where
        F: Fn(super::http::Target) -> Fut,
        Fut: Future<Output = Result<T, RegistryError>>,
    {
        let host = self.host(&repository.host);
        let target = self.http_target(&host, repository).await?;
        self.run(&host, operation, None, || {
            let pending = request(target.clone());
            async move { pending.await.map_err(Failure::from) }
        })
        .await
    }

    /// The digest `reference` (a tag or a digest) points at, or `None` when it does not exist.
    pub async fn manifest_digest(
        &self,
        repository: &Repository,
        reference: &str,
    ) -> Result<Option<Digest>, RegistryError> {
        self.send_http(
            repository,
            || format!("looking up {repository}:{reference}"),
            |t| async move { self.http.manifest_digest(&t, reference).await },
        )
        .await
    }

    /// The manifest bytes at `reference`, verified against their digest, or `None`.
    pub async fn manifest(
        &self,
        repository: &Repository,
        reference: &str,
    ) -> Result<Option<(Bytes, Digest)>, RegistryError> {
        let found = self
            .send_http(
                repository,
                || format!("reading manifest {repository}:{reference}"),
                |t| async move { self.http.manifest(&t, reference).await },
            )
            .await?;
        let Some((bytes, digest)) = found else {
            return Ok(None);
        };
        if reference.contains(':') && reference != digest.as_str() {
            return Err(RegistryError::new(
                ErrorKind::Permanent,
                format!("reading manifest {repository}@{reference}"),
                format!("{} sent content whose digest is {digest}", repository.host),
            ));
        }
        Ok(Some((bytes, digest)))
    }

    /// A small blob read whole and checked against its digest, or `None`.
    pub async fn small_blob(
        &self,
        repository: &Repository,
        digest: &Digest,
        limit: u64,
    ) -> Result<Option<Bytes>, RegistryError> {
        self.send_http(
            repository,
            || format!("reading blob {digest} of {repository}"),
            |t| async move { self.http.small_blob(&t, digest, limit).await },
        )
        .await
    }

    /// The OCI referrers index of `digest`, or `None` when the registry has no referrers API.
    pub async fn referrers(&self, repository: &Repository, digest: &Digest) -> Result<Option<Bytes>, RegistryError> {
        self.send_http(
            repository,
            || format!("listing referrers of {repository}@{digest}"),
            |t| async move { self.http.referrers(&t, digest).await },
        )
        .await
    }

    /// Settings and credentials for sigstore's own registry client, which reads keyless
    /// signatures for verification, and a permit within the host's limits to hold meanwhile.
    pub(super) async fn sigstore_access(
        &self,
        host: &str,
    ) -> Result<
        (sigstore::registry::ClientConfig, sigstore::registry::Auth, tokio::sync::OwnedSemaphorePermit),
        RegistryError,
    > {
        let host = self.host(host);
        let auth = sigstore::registry::Auth::from(&self.credential(&host).await?.to_oci());
        let config = sigstore::registry::ClientConfig {
            protocol: sigstore::registry::ClientProtocol::HttpsExcept(self.tls.0.clone()),
            extra_root_certificates: self
                .tls
                .1
                .iter()
                .map(|c| sigstore::registry::Certificate {
                    encoding: sigstore::registry::CertificateEncoding::Pem,
                    data: c.data.clone(),
                })
                .collect(),
            ..Default::default()
        };
        host.pace().await;
        let permit = host.permits.clone().acquire_owned().await.expect("the semaphore is never closed");
        Ok((config, auth, permit))
    }

    /// Every tag of a repository, following pagination; `None` when it does not exist.
    pub async fn list_tags(&self, repository: &Repository) -> Result<Option<Vec<String>>, RegistryError> {
        self.send_http(
            repository,
            || format!("listing tags of {repository}"),
            |t| async move { self.http.list_tags(&t).await },
        )
        .await
    }

    pub async fn blob_exists(&self, repository: &Repository, digest: &Digest) -> Result<bool, RegistryError> {
        let image = oci_reference(repository, digest.as_str());
        self.authenticate(&image, false).await?;
        let host = self.host(&repository.host);
        self.run(
            &host,
            || format!("checking blob {digest} in {repository}"),
            Some(self.options.timeout),
            || async { self.oci.blob_exists(&image, digest.as_str()).await.map_err(Failure::from) },
        )
        .await
    }

    /// Mounts a blob from another repository of the same registry. `false` when the registry
    /// declined (it may then expect an upload), so the caller copies instead.
    pub async fn mount_blob(
        &self,
        target: &Repository,
        from: &Repository,
        digest: &Digest,
    ) -> Result<bool, RegistryError> {
        let image = oci_reference(target, "latest");
        let source = oci_reference(from, "latest");
        self.authenticate(&image, true).await?;
        let host = self.host(&target.host);
        let mounted = self
            .run(
                &host,
                || format!("mounting blob {digest} into {target}"),
                Some(self.options.timeout),
                || async { self.oci.mount_blob(&image, &source, digest.as_str()).await.map_err(Failure::from) },
            )
            .await;
        match mounted {
            Ok(()) => Ok(true),
            // A token registry may refuse the mount (the token does not cover the source
            // repository): copying instead works.
            Err(e) if !e.kind.retryable() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Streams one blob from `source` to `target`, never holding it in memory. The target
    /// registry checks the digest.
    pub async fn copy_blob(
        &self,
        source: &Repository,
        target: &Repository,
        digest: &Digest,
        size: u64,
    ) -> Result<(), RegistryError> {
        let from = oci_reference(source, digest.as_str());
        self.authenticate(&from, false).await?;
        let source_host = self.host(&source.host);
        let target_host = self.host(&target.host);
        let to = self.http_target(&target_host, target).await?;
        let operation = || format!("copying blob {digest} ({}) from {source} to {target}", bytesize::ByteSize(size));
        // One permit on each side for the whole transfer.
        let mut attempt = 0;
        loop {
            let result = async {
                let _source_permit = source_host.permits.acquire().await.expect("open semaphore");
                source_host.pace().await;
                // Asked as the range `0-`, so oci-client does not hash every byte on the way
                // through: the target registry verifies the digest of what it receives, so
                // a corrupt download is still refused, and a core is left for copying.
                let stream = match self
                    .oci
                    .pull_blob_stream_partial(&from, digest.as_str(), 0, None)
                    .await
                    .map_err(|e| RegistryError::from_oci(operation(), &source.host, e))?
                {
                    oci_client::client::BlobResponse::Full(s) | oci_client::client::BlobResponse::Partial(s) => s,
                };
                let length = stream.content_length.filter(|l| *l > 0).unwrap_or(size);
                // One permit per host: a copy within one registry (a backup) takes only one, so
                // `concurrency: 1` cannot deadlock.
                let _target_permit = match source.host == target.host {
                    true => None,
                    false => Some(target_host.permits.acquire().await.expect("open semaphore")),
                };
                target_host.pace().await;
                self.http.upload_blob(&to, digest, length, stream.stream, self.options.chunk_size).await
            }
            .await;
            match result {
                Ok(()) => return Ok(()),
                Err(e) if e.kind == ErrorKind::Transient && attempt < self.options.retries => {
                    attempt += 1;
                    tracing::debug!(operation = %operation(), attempt, error = %e.message, "retrying");
                    tokio::time::sleep(crate::retry::backoff(self.options.backoff, attempt, e.retry_after)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Opens a blob for reading as a stream of chunks, never holding it in memory; the caller
    /// checks the digest of what it reads. Only opening is retried: a stream that breaks
    /// midway fails, since its bytes are already on their way.
    pub async fn blob_stream(
        &self,
        repository: &Repository,
        digest: &Digest,
    ) -> Result<futures_util::stream::BoxStream<'static, Result<Bytes, std::io::Error>>, RegistryError> {
        let from = oci_reference(repository, digest.as_str());
        self.authenticate(&from, false).await?;
        let host = self.host(&repository.host);
        let response = self
            .run(
                &host,
                || format!("reading blob {digest} of {repository}"),
                Some(self.options.timeout),
                || async {
                    self.oci.pull_blob_stream_partial(&from, digest.as_str(), 0, None).await.map_err(Failure::from)
                },
            )
            .await?;
        let (oci_client::client::BlobResponse::Full(s) | oci_client::client::BlobResponse::Partial(s)) = response;
        Ok(s.stream)
    }

    /// Uploads a blob from a stream of chunks; the registry verifies the digest.
    pub async fn upload_blob<S>(
        &self,
        repository: &Repository,
        digest: &Digest,
        size: u64,
        body: S,
    ) -> Result<(), RegistryError>
    where
        S: futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
    {
        let host = self.host(&repository.host);
        let to = self.http_target(&host, repository).await?;
        let _permit = host.permits.acquire().await.expect("open semaphore");
        host.pace().await;
        self.http.upload_blob(&to, digest, size, body, self.options.chunk_size).await
    }

    /// Pushes manifest bytes under `reference` (a tag, or the manifest's own digest).
    pub async fn push_manifest(
        &self,
        repository: &Repository,
        reference: &str,
        bytes: &Bytes,
        media_type: &str,
    ) -> Result<(), RegistryError> {
        let image = oci_reference(repository, reference);
        self.authenticate(&image, true).await?;
        let content_type = reqwest::header::HeaderValue::from_str(media_type).map_err(|_| {
            RegistryError::new(
                ErrorKind::Permanent,
                format!("pushing manifest {image}"),
                format!("invalid media type {media_type}"),
            )
        })?;
        let host = self.host(&repository.host);
        self.run(
            &host,
            || format!("pushing manifest {image}"),
            Some(self.options.timeout),
            || async {
                self.oci.push_manifest_raw(&image, bytes.clone(), content_type.clone()).await.map_err(Failure::from)
            },
        )
        .await
        .map(|_| ())
    }

    /// Deletes a manifest by digest (Distribution removes every tag pointing at it).
    pub async fn delete_manifest(&self, repository: &Repository, digest: &Digest) -> Result<(), RegistryError> {
        self.send_http(
            repository,
            || format!("deleting {repository}@{digest}"),
            |t| async move { self.http.delete_manifest(&t, digest).await },
        )
        .await
    }
}

/// A failed request, from oci-client or from Lifeboat's own requests.
enum Failure {
    Oci(OciDistributionError),
    Registry(RegistryError),
}

impl From<OciDistributionError> for Failure {
    fn from(e: OciDistributionError) -> Self {
        Failure::Oci(e)
    }
}

impl From<RegistryError> for Failure {
    fn from(e: RegistryError) -> Self {
        Failure::Registry(e)
    }
}

/// An oci-client reference: a tag, or a digest when `reference` contains `:`.
pub fn oci_reference(repository: &Repository, reference: &str) -> Reference {
    if reference.contains(':') {
        Reference::with_digest(repository.host.clone(), repository.path.clone(), reference.to_string())
    } else {
        Reference::with_tag(repository.host.clone(), repository.path.clone(), reference.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn requests_are_paced_to_the_rate_limit() {
        let host = Host {
            name: "r.example".into(),
            settings: HostSettings {
                limits: Limits { requests_per_second: Some(10.0), concurrency: 8 },
                ..HostSettings::default()
            },
            permits: Arc::new(Semaphore::new(8)),
            next_start: tokio::sync::Mutex::new(Instant::now()),
            credential: OnceCell::new(),
        };
        let start = Instant::now();
        for _ in 0..5 {
            host.pace().await;
        }
        // The first request starts at once, each next one 100 ms later.
        assert_eq!(start.elapsed(), Duration::from_millis(400));
    }
}

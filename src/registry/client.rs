//! The connection to registries: Lifeboat's own requests (`http`) to every host, within each
//! host's credentials, concurrency and pacing (`host`), retried with backoff, and given up on
//! for the rest of a pass once a host stops answering (`breaker`).
//!
//! Every request to a registry runs inside [`RegistryClient::run`] — Lifeboat's own, and the
//! reads of keyless signatures by sigstore's client — which is where limits are kept, transient
//! failures retried (`crate::retry::backoff`, never sooner than a `Retry-After`), and breakers
//! consulted: a request to a host whose breaker is open fails at once, including one already
//! waiting for a permit, a pacing slot or its backoff. A request whose silence opened the
//! breaker is not retried. Nothing else in Lifeboat talks HTTP to a registry.
//!
//! Passes share a client's connections, credentials, tokens and host limits; breakers belong to
//! one pass. [`RegistryClient::for_pass`] starts a pass; a client made by
//! [`RegistryClient::new`] has no breakers, so a holder that forgets to start passes waits on a
//! silent host as long as its timeouts and retries say, and is never cut off from it for good.

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;

use super::breaker::Breaker;
use super::error::{ErrorKind, RegistryError};
use super::host::{Host, HostSettings};
use super::http::{Download, Http, Target};
use crate::desired::{DesiredState, Digest, Repository};

/// Timeouts and retries, the same for every host.
#[derive(Debug, Clone)]
pub struct Options {
    /// Longest wait for one request (a manifest, a tag page) and for each next piece of a
    /// blob being transferred.
    pub timeout: Duration,
    /// Retries after a transient failure (5xx, 429, a dropped connection, one that could not be
    /// made).
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

/// Whether a failed request may be sent again.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Retry {
    /// After a transient failure, up to `Options::retries` times.
    Transient,
    /// Never: its body can be sent only once.
    Never,
}

/// What every pass shares.
struct Shared {
    http: Http,
    hosts: Mutex<HashMap<String, Arc<Host>>>,
    /// Plain-HTTP hosts and extra CA certificates (PEM), for sigstore's client.
    insecure: Vec<String>,
    certificates: Vec<Vec<u8>>,
    options: Options,
}

/// The registry client of a pass.
pub struct RegistryClient {
    shared: Arc<Shared>,
    /// This pass's breaker per host; `None` for a client no pass owns.
    breakers: Option<Mutex<HashMap<String, Arc<Breaker>>>>,
}

impl RegistryClient {
    /// A client for the hosts described by the desired state; `root` is the desired-state
    /// folder, against which `caFile` paths are resolved. It belongs to no pass: see
    /// [`RegistryClient::for_pass`].
    pub fn new(state: &DesiredState, root: Option<PathBuf>, options: Options) -> anyhow::Result<Self> {
        let mut hosts = HashMap::new();
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
                certificates.push(data);
            }
            let settings = HostSettings {
                insecure: registry.insecure,
                credentials: registry.credentials.clone(),
                limits: registry.limits.clone(),
            };
            let host = Host::new(&registry.host, settings).map_err(anyhow::Error::msg)?;
            hosts.insert(registry.host.clone(), Arc::new(host));
        }
        // Time limits are set per request: a blob upload gets time in proportion to its size.
        let mut http = reqwest::Client::builder()
            .connect_timeout(options.timeout)
            .user_agent(concat!("lifeboat/", env!("CARGO_PKG_VERSION")));
        for pem in &certificates {
            http = http.add_root_certificate(
                reqwest::Certificate::from_pem(pem).map_err(|e| anyhow::anyhow!("reading a caFile: {e}"))?,
            );
        }
        let shared = Shared {
            http: Http::new(http.build()?, options.timeout),
            hosts: Mutex::new(hosts),
            insecure,
            certificates,
            options,
        };
        Ok(RegistryClient { shared: Arc::new(shared), breakers: None })
    }

    /// A client for one pass: the same connections, credentials, tokens and host limits, and
    /// breakers of its own, all closed.
    pub fn for_pass(&self) -> RegistryClient {
        RegistryClient { shared: self.shared.clone(), breakers: Some(Mutex::new(HashMap::new())) }
    }

    pub fn options(&self) -> &Options {
        &self.shared.options
    }

    fn host(&self, name: &str) -> Arc<Host> {
        let mut hosts = self.shared.hosts.lock().unwrap_or_else(PoisonError::into_inner);
        hosts.entry(name.to_string()).or_insert_with(|| Arc::new(Host::undescribed(name))).clone()
    }

    /// This pass's breaker for `host`, when the client belongs to a pass.
    fn breaker(&self, host: &str) -> Option<Arc<Breaker>> {
        let breakers = self.breakers.as_ref()?;
        let mut breakers = breakers.lock().unwrap_or_else(PoisonError::into_inner);
        let tries = self.shared.options.retries.saturating_add(1);
        Some(breakers.entry(host.to_string()).or_insert_with(|| Arc::new(Breaker::new(tries))).clone())
    }

    /// Runs `request` against `hosts` (one, or the two ends of a copy): within each host's
    /// concurrency (permits taken in one order, so two copies in opposite directions cannot
    /// deadlock) and pacing, retrying transient failures with backoff, and failing at once,
    /// while waiting too, once one host's breaker is open.
    async fn run<T, F, Fut>(
        &self,
        hosts: &[&str],
        operation: impl Fn() -> String,
        retry: Retry,
        mut request: F,
    ) -> Result<T, RegistryError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, RegistryError>>,
    {
        let mut names = hosts.to_vec();
        names.sort_unstable();
        names.dedup();
        let hosts: Vec<Arc<Host>> = names.iter().map(|name| self.host(name)).collect();
        let breakers: Vec<Arc<Breaker>> = names.iter().filter_map(|name| self.breaker(name)).collect();
        let open = |reason: String| RegistryError::new(ErrorKind::Transient, operation(), reason);
        let mut attempt = 0;
        loop {
            if let Some(reason) = breakers.iter().find_map(|b| b.reason()) {
                return Err(open(reason));
            }
            let tried = until_open(&breakers, async {
                let mut permits = Vec::with_capacity(hosts.len());
                for host in &hosts {
                    permits.push(host.permits.acquire().await.expect("host semaphores are never closed"));
                }
                for host in &hosts {
                    host.pace().await;
                }
                (tokio::time::Instant::now(), request().await)
            })
            .await;
            let (sent, error) = match tried {
                Err(reason) => return Err(open(reason)),
                Ok((_, Ok(value))) => {
                    breakers.iter().for_each(|b| b.answered());
                    return Ok(value);
                }
                Ok((sent, Err(error))) => (sent, error),
            };
            // An error the host sent is an answer too (for a copy, which end sent it is not known).
            if error.silence.is_none() && breakers.len() == 1 {
                breakers.iter().for_each(|b| b.answered());
            }
            let silenced =
                error.silence.as_ref().is_some_and(|s| self.breaker(s.host()).is_some_and(|b| b.record(&error, sent)));
            if silenced || !error.kind.retryable() || retry == Retry::Never || attempt >= self.shared.options.retries {
                return Err(error);
            }
            attempt += 1;
            tracing::debug!(operation = %operation(), attempt, error = %error.message, "retrying");
            let wait = crate::retry::backoff(self.shared.options.backoff, attempt, error.retry_after);
            if let Err(reason) = until_open(&breakers, tokio::time::sleep(wait)).await {
                return Err(open(reason));
            }
        }
    }

    /// Where and how Lifeboat's requests reach `repository`.
    async fn target(&self, repository: &Repository) -> Result<Target, RegistryError> {
        let host = self.host(&repository.host);
        Ok(Target {
            repository: repository.clone(),
            insecure: host.settings.insecure,
            credential: host.credential().await?,
        })
    }

    /// Runs one request against `repository`'s host, retried when transient.
    async fn send_http<T, F, Fut>(
        &self,
        repository: &Repository,
        operation: impl Fn() -> String,
        request: F,
    ) -> Result<T, RegistryError>
    where
        F: Fn(Target) -> Fut,
        Fut: Future<Output = Result<T, RegistryError>>,
    {
        let target = self.target(repository).await?;
        self.run(&[&repository.host], operation, Retry::Transient, || request(target.clone())).await
    }

    /// The digest `reference` (a tag or a digest) points at, or `None` when it does not exist.
    pub async fn manifest_digest(
        &self,
        repository: &Repository,
        reference: &str,
    ) -> Result<Option<Digest>, RegistryError> {
        let http = &self.shared.http;
        self.send_http(
            repository,
            || format!("looking up {repository}:{reference}"),
            |t| async move { http.manifest_digest(&t, reference).await },
        )
        .await
    }

    /// The manifest bytes at `reference`, verified against their digest, or `None`.
    pub async fn manifest(
        &self,
        repository: &Repository,
        reference: &str,
    ) -> Result<Option<(Bytes, Digest)>, RegistryError> {
        let http = &self.shared.http;
        let found = self
            .send_http(
                repository,
                || format!("reading manifest {repository}:{reference}"),
                |t| async move { http.manifest(&t, reference).await },
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

    /// A small blob read whole and checked against its digest, or `None`; larger than `limit`
    /// bytes is an error.
    pub async fn small_blob(
        &self,
        repository: &Repository,
        digest: &Digest,
        limit: usize,
    ) -> Result<Option<Bytes>, RegistryError> {
        let http = &self.shared.http;
        self.send_http(
            repository,
            || format!("reading blob {digest} of {repository}"),
            |t| async move { http.small_blob(&t, digest, limit).await },
        )
        .await
    }

    /// The OCI referrers index of `digest`, or `None` when the registry has no referrers API.
    pub async fn referrers(&self, repository: &Repository, digest: &Digest) -> Result<Option<Bytes>, RegistryError> {
        let http = &self.shared.http;
        self.send_http(
            repository,
            || format!("listing referrers of {repository}@{digest}"),
            |t| async move { http.referrers(&t, digest).await },
        )
        .await
    }

    /// Every tag of a repository, following pagination; `None` when it does not exist.
    pub async fn list_tags(&self, repository: &Repository) -> Result<Option<Vec<String>>, RegistryError> {
        let http = &self.shared.http;
        self.send_http(
            repository,
            || format!("listing tags of {repository}"),
            |t| async move { http.list_tags(&t).await },
        )
        .await
    }

    pub async fn blob_exists(&self, repository: &Repository, digest: &Digest) -> Result<bool, RegistryError> {
        let http = &self.shared.http;
        self.send_http(
            repository,
            || format!("checking blob {digest} in {repository}"),
            |t| async move { http.blob_exists(&t, digest).await },
        )
        .await
    }

    /// Mounts a blob from another repository of the same registry. `false` when the registry
    /// declined or refused, so the caller copies instead.
    pub async fn mount_blob(
        &self,
        target: &Repository,
        from: &Repository,
        digest: &Digest,
    ) -> Result<bool, RegistryError> {
        let http = &self.shared.http;
        let mounted = self
            .send_http(
                target,
                || format!("mounting blob {digest} into {target}"),
                |t| async move { http.mount_blob(&t, from, digest).await },
            )
            .await;
        match mounted {
            // A token registry may refuse the mount (the token does not cover the source
            // repository): copying instead works.
            Err(e) if !e.kind.retryable() => Ok(false),
            other => other,
        }
    }

    /// Streams one blob from `source` to `target`, never holding it in memory; the target
    /// registry checks the digest. Either end failing fails the copy, naming that end: a
    /// source that stops sending is the source's failure, not the target's.
    pub async fn copy_blob(
        &self,
        source: &Repository,
        target: &Repository,
        digest: &Digest,
        size: u64,
    ) -> Result<(), RegistryError> {
        let (from, to) = (self.target(source).await?, self.target(target).await?);
        let http = &self.shared.http;
        let chunk = self.shared.options.chunk_size;
        let operation = || format!("copying blob {digest} ({}) from {source} to {target}", bytesize::ByteSize(size));
        // One permit on each host for the whole transfer (one only for a copy within a host).
        self.run(&[&source.host, &target.host], operation, Retry::Transient, || {
            let (from, to) = (&from, &to);
            async move {
                let Download { length, stream, broke_off } = http.blob_stream(from, digest).await?;
                let length = length.filter(|l| *l > 0).unwrap_or(size);
                match http.upload_blob(to, digest, length, stream, chunk).await {
                    Ok(()) => Ok(()),
                    Err(upload) => Err(broke_off.get().unwrap_or(upload)),
                }
            }
        })
        .await
    }

    /// Opens a blob for reading as a stream of chunks, never holding it in memory; the caller
    /// checks the digest of what it reads. Only opening is retried: a stream that breaks
    /// midway fails, since its bytes are already on their way.
    pub async fn blob_stream(
        &self,
        repository: &Repository,
        digest: &Digest,
    ) -> Result<futures_util::stream::BoxStream<'static, Result<Bytes, std::io::Error>>, RegistryError> {
        let http = &self.shared.http;
        let download = self
            .send_http(
                repository,
                || format!("reading blob {digest} of {repository}"),
                |t| async move { http.blob_stream(&t, digest).await },
            )
            .await?;
        Ok(download.stream)
    }

    /// Uploads a blob from a stream of chunks; the registry verifies the digest. Not retried:
    /// the stream can be read only once.
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
        let to = self.target(repository).await?;
        let http = &self.shared.http;
        let chunk = self.shared.options.chunk_size;
        let mut body = Some(body);
        let operation = || format!("uploading blob {digest} to {repository}");
        self.run(&[&repository.host], operation, Retry::Never, || {
            let (to, body) = (&to, body.take());
            async move {
                let body = body.ok_or_else(|| {
                    RegistryError::new(ErrorKind::Permanent, operation(), "the blob's bytes were already sent")
                })?;
                http.upload_blob(to, digest, size, body, chunk).await
            }
        })
        .await
    }

    /// Pushes manifest bytes under `reference` (a tag, or the manifest's own digest).
    pub async fn push_manifest(
        &self,
        repository: &Repository,
        reference: &str,
        bytes: &Bytes,
        media_type: &str,
    ) -> Result<(), RegistryError> {
        let content_type = reqwest::header::HeaderValue::from_str(media_type).map_err(|_| {
            RegistryError::new(
                ErrorKind::Permanent,
                format!("pushing manifest {repository}:{reference}"),
                format!("invalid media type {media_type}"),
            )
        })?;
        let (http, content_type) = (&self.shared.http, &content_type);
        self.send_http(
            repository,
            || format!("pushing manifest {repository}:{reference}"),
            |t| async move { http.push_manifest(&t, reference, bytes, content_type).await },
        )
        .await
    }

    /// Deletes a manifest by digest (Distribution removes every tag pointing at it).
    pub async fn delete_manifest(&self, repository: &Repository, digest: &Digest) -> Result<(), RegistryError> {
        let http = &self.shared.http;
        self.send_http(
            repository,
            || format!("deleting {repository}@{digest}"),
            |t| async move { http.delete_manifest(&t, digest).await },
        )
        .await
    }

    /// Runs `read` — sigstore's own registry client reading keyless signatures of a repository
    /// on `host` — with that client's settings and credentials, inside [`RegistryClient::run`]
    /// (once, within `limit`): limits and the breaker hold for it too.
    pub(super) async fn with_sigstore<T, F, Fut>(
        &self,
        host: &str,
        operation: &str,
        limit: Duration,
        read: F,
    ) -> Result<T, RegistryError>
    where
        F: FnOnce(sigstore::registry::ClientConfig, sigstore::registry::Auth) -> Fut,
        Fut: Future<Output = Result<T, RegistryError>>,
    {
        let auth = sigstore::registry::Auth::from(&self.host(host).credential().await?.to_oci());
        let config = sigstore::registry::ClientConfig {
            protocol: sigstore::registry::ClientProtocol::HttpsExcept(self.shared.insecure.clone()),
            extra_root_certificates: self
                .shared
                .certificates
                .iter()
                .map(|pem| sigstore::registry::Certificate {
                    encoding: sigstore::registry::CertificateEncoding::Pem,
                    data: pem.clone(),
                })
                .collect(),
            ..Default::default()
        };
        let mut read = Some((read, config, auth));
        self.run(
            &[host],
            || operation.to_string(),
            Retry::Never,
            || {
                let once = read.take();
                async move {
                    let (read, config, auth) = once.ok_or_else(|| {
                        RegistryError::new(ErrorKind::Permanent, operation, "sigstore's read runs only once")
                    })?;
                    match tokio::time::timeout(limit, read(config, auth)).await {
                        Ok(result) => result,
                        Err(_) => Err(RegistryError::timed_out(operation, host, host, limit)),
                    }
                }
            },
        )
        .await
    }
}

/// Runs `work` unless, or until, one of `breakers` opens: then its reason.
async fn until_open<T>(breakers: &[Arc<Breaker>], work: impl Future<Output = T>) -> Result<T, String> {
    if breakers.is_empty() {
        return Ok(work.await);
    }
    let opened = futures_util::future::select_all(breakers.iter().map(|b| Box::pin(b.opened())));
    tokio::select! {
        biased;
        value = work => Ok(value),
        (reason, _, _) = opened => Err(reason),
    }
}

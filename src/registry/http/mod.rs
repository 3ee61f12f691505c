//! Every HTTP request Lifeboat sends a registry: manifests (HEAD, GET, PUT, DELETE), tag pages
//! ([`tags`]), referrers, blobs (HEAD, streamed GET, mount, streamed upload: [`blob`]) and the
//! bearer tokens they need ([`token`]). Authentication follows the registry's challenge: basic
//! credentials, or a bearer token from the realm its `WWW-Authenticate` header names, cached by
//! scope.
//!
//! Nothing a registry sends is trusted: JSON answers and manifests are read up to a size limit
//! (refused by `Content-Length` before reading, and by counting when there is none), tag paging
//! is bounded, and every error names the peer that failed — the registry, its token service, or
//! the source of a blob being copied. Each call is one attempt: limits, retries and breakers
//! are `client`'s. (sigstore's own client reads keyless signatures; see `cosign`.)

mod blob;
mod tags;
mod token;

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use reqwest::{Method, RequestBuilder, Response, StatusCode};

pub use blob::Download;

use super::auth::Credential;
use super::error::{ErrorKind, RegistryError, quoted};
use crate::desired::{Digest, Repository};

/// The largest manifest Lifeboat reads: the OCI distribution spec's suggested limit for what
/// a registry should accept.
pub const MANIFEST_LIMIT: usize = 4 << 20;

/// The most of an error answer's body read for its first line.
const ERROR_BODY_LIMIT: usize = 64 << 10;

pub struct Http {
    client: reqwest::Client,
    tokens: token::Tokens,
    /// For a request without a body, and for each wait for the next bytes of a blob.
    timeout: Duration,
}

/// Where and how to reach one repository.
#[derive(Clone)]
pub struct Target {
    pub repository: Repository,
    pub insecure: bool,
    pub credential: Credential,
}

impl Target {
    fn url(&self, path: &str) -> String {
        let scheme = if self.insecure { "http" } else { "https" };
        format!("{scheme}://{}/v2/{}/{path}", api_host(&self.repository.host), self.repository.path)
    }

    fn host(&self) -> &str {
        &self.repository.host
    }
}

/// How long a request may take.
#[derive(Clone, Copy)]
enum Wait {
    /// The answer, body included, within the timeout.
    Whole,
    /// The answer's headers within the timeout; the caller bounds reading the body.
    Headers,
}

impl Http {
    pub fn new(client: reqwest::Client, timeout: Duration) -> Http {
        Http { client, tokens: token::Tokens::default(), timeout }
    }

    /// Sends a request built by `build`, answering an authentication challenge once.
    async fn send(
        &self,
        target: &Target,
        scope: &str,
        operation: &str,
        wait: Wait,
        build: impl Fn(&reqwest::Client) -> RequestBuilder,
    ) -> Result<Response, RegistryError> {
        let cached = self.tokens.get(target.host(), scope);
        let first = self.authorize(build(&self.client), &target.credential, cached.as_deref());
        let response = self.dispatch(first, wait, operation, target.host()).await?;
        if response.status() != StatusCode::UNAUTHORIZED {
            return Ok(response);
        }
        let challenge = response
            .headers()
            .get(reqwest::header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let token = if challenge.to_ascii_lowercase().starts_with("bearer") {
            Some(self.fetch_token(&challenge, scope, target, operation).await?)
        } else {
            None
        };
        let retry = self.authorize(build(&self.client), &target.credential, token.as_deref());
        let response = self.dispatch(retry, wait, operation, target.host()).await?;
        if response.status() == StatusCode::UNAUTHORIZED || response.status() == StatusCode::FORBIDDEN {
            return Err(refused(operation, target.host(), &target.credential));
        }
        Ok(response)
    }

    async fn dispatch(
        &self,
        request: RequestBuilder,
        wait: Wait,
        operation: &str,
        host: &str,
    ) -> Result<Response, RegistryError> {
        let transport = |e: reqwest::Error| RegistryError::transport(operation, host, host, &e, self.timeout);
        match wait {
            Wait::Whole => request.timeout(self.timeout).send().await.map_err(transport),
            Wait::Headers => match tokio::time::timeout(self.timeout, request.send()).await {
                Ok(sent) => sent.map_err(transport),
                Err(_) => Err(RegistryError::timed_out(operation, host, host, self.timeout)),
            },
        }
    }

    fn authorize(&self, request: RequestBuilder, credential: &Credential, token: Option<&str>) -> RequestBuilder {
        match (token, credential) {
            (Some(token), _) => request.bearer_auth(token),
            (None, Credential::Basic { username, password }) => request.basic_auth(username, Some(password)),
            _ => request,
        }
    }

    /// The body of `response`, at most `limit` bytes: refused by its `Content-Length` before
    /// anything is read, and by counting when it gives none. `what` names the content for the
    /// error: `a manifest`.
    async fn read_limited(
        &self,
        mut response: Response,
        limit: usize,
        operation: &str,
        host: &str,
        what: &str,
    ) -> Result<Bytes, RegistryError> {
        let too_large = |size: String| {
            RegistryError::new(
                ErrorKind::Permanent,
                operation,
                format!(
                    "{host} sent {what} of {size}, more than the {} Lifeboat reads",
                    bytesize::ByteSize(limit as u64)
                ),
            )
        };
        if let Some(length) = response.content_length().filter(|n| *n > limit as u64) {
            return Err(too_large(bytesize::ByteSize(length).to_string()));
        }
        let mut body = BytesMut::new();
        while let Some(chunk) =
            response.chunk().await.map_err(|e| RegistryError::transport(operation, host, host, &e, self.timeout))?
        {
            if body.len().saturating_add(chunk.len()) > limit {
                return Err(too_large(format!("more than {}", bytesize::ByteSize(limit as u64))));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body.freeze())
    }

    /// A HEAD or GET of the manifest under `reference`: `None` when it does not exist.
    async fn manifest_request(
        &self,
        target: &Target,
        reference: &str,
        method: Method,
        operation: &str,
    ) -> Result<Option<Response>, RegistryError> {
        let scope = pull_scope(target);
        let url = target.url(&format!("manifests/{reference}"));
        let accept = super::manifest::ACCEPTED.join(", ");
        let response = self
            .send(target, &scope, operation, Wait::Whole, |c| {
                c.request(method.clone(), &url).header(reqwest::header::ACCEPT, &accept)
            })
            .await?;
        match response.status() {
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => Ok(Some(response)),
            _ => Err(status_error(operation, target.host(), response, self.timeout).await),
        }
    }

    /// The digest under `reference` (tag or digest), or `None` when it does not exist.
    pub async fn manifest_digest(&self, target: &Target, reference: &str) -> Result<Option<Digest>, RegistryError> {
        let operation = format!("looking up {}:{reference}", target.repository);
        let Some(response) = self.manifest_request(target, reference, Method::HEAD, &operation).await? else {
            return Ok(None);
        };
        let header = response.headers().get("Docker-Content-Digest").map(|v| v.to_str().map(str::to_string));
        match header {
            Some(Ok(d)) => d.parse().map(Some).map_err(|_: String| {
                RegistryError::new(
                    ErrorKind::Permanent,
                    &operation,
                    format!("{} sent a Docker-Content-Digest that is not a digest: {}", target.host(), quoted(&d)),
                )
            }),
            Some(Err(_)) => Err(RegistryError::new(
                ErrorKind::Permanent,
                &operation,
                format!("{} sent a Docker-Content-Digest that is not text", target.host()),
            )),
            // Without the header the digest is the hash of the manifest itself.
            None => Ok(self.manifest(target, reference).await?.map(|(_, d)| d)),
        }
    }

    /// The manifest bytes under `reference` and their digest, or `None`. A manifest larger
    /// than [`MANIFEST_LIMIT`] is an error, never a large read.
    pub async fn manifest(&self, target: &Target, reference: &str) -> Result<Option<(Bytes, Digest)>, RegistryError> {
        let operation = format!("reading manifest {}:{reference}", target.repository);
        let Some(response) = self.manifest_request(target, reference, Method::GET, &operation).await? else {
            return Ok(None);
        };
        let bytes = self.read_limited(response, MANIFEST_LIMIT, &operation, target.host(), "a manifest").await?;
        let digest = super::manifest::sha256(&bytes);
        Ok(Some((bytes, digest)))
    }

    /// Stores manifest bytes under `reference` (a tag, or the manifest's own digest).
    pub async fn push_manifest(
        &self,
        target: &Target,
        reference: &str,
        bytes: &Bytes,
        media_type: &reqwest::header::HeaderValue,
    ) -> Result<(), RegistryError> {
        let operation = format!("pushing manifest {}:{reference}", target.repository);
        let scope = push_scope(target);
        let url = target.url(&format!("manifests/{reference}"));
        let response = self
            .send(target, &scope, &operation, Wait::Whole, |c| {
                c.put(&url).header(reqwest::header::CONTENT_TYPE, media_type.clone()).body(bytes.clone())
            })
            .await?;
        match response.status() {
            s if s.is_success() => Ok(()),
            _ => Err(status_error(&operation, target.host(), response, self.timeout).await),
        }
    }

    /// The OCI 1.1 referrers of `digest` (an image index), or `None` when the registry does
    /// not offer the referrers API.
    pub async fn referrers(&self, target: &Target, digest: &Digest) -> Result<Option<Bytes>, RegistryError> {
        let operation = format!("listing referrers of {}@{digest}", target.repository);
        let scope = pull_scope(target);
        let url = target.url(&format!("referrers/{digest}"));
        let response = self.send(target, &scope, &operation, Wait::Whole, |c| c.get(&url)).await?;
        let is_index = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.starts_with(super::manifest::OCI_INDEX));
        match response.status() {
            // Registries without the API answer 404 (Distribution 2.8), 400 or 405.
            StatusCode::NOT_FOUND | StatusCode::BAD_REQUEST | StatusCode::METHOD_NOT_ALLOWED => Ok(None),
            s if s.is_success() && is_index => {
                let what = "a referrers index";
                Ok(Some(self.read_limited(response, MANIFEST_LIMIT, &operation, target.host(), what).await?))
            }
            s if s.is_success() => Ok(None),
            _ => Err(status_error(&operation, target.host(), response, self.timeout).await),
        }
    }

    /// Deletes a manifest by digest; Distribution removes every tag pointing at it.
    pub async fn delete_manifest(&self, target: &Target, digest: &Digest) -> Result<(), RegistryError> {
        let operation = format!("deleting {}@{digest}", target.repository);
        let scope = format!("repository:{}:delete", target.repository.path);
        let url = target.url(&format!("manifests/{digest}"));
        let response = self.send(target, &scope, &operation, Wait::Whole, |c| c.request(Method::DELETE, &url)).await?;
        match response.status().as_u16() {
            200..=299 | 404 => Ok(()),
            405 => Err(RegistryError::new(
                ErrorKind::Permanent,
                operation,
                format!(
                    "{} does not allow deletes (Distribution needs storage.delete.enabled: true)",
                    target.repository.host
                ),
            )),
            _ => Err(status_error(&operation, target.host(), response, self.timeout).await),
        }
    }
}

fn pull_scope(target: &Target) -> String {
    format!("repository:{}:pull", target.repository.path)
}

fn push_scope(target: &Target) -> String {
    format!("repository:{}:pull,push", target.repository.path)
}

/// Where a registry's API is served: image references say `docker.io`, Docker Hub serves the
/// API at `registry-1.docker.io`.
fn api_host(host: &str) -> &str {
    if host == "docker.io" { "registry-1.docker.io" } else { host }
}

/// The registry refused the credentials, or wants some and was given none.
fn refused(operation: &str, host: &str, credential: &Credential) -> RegistryError {
    let message = match credential {
        Credential::Anonymous => {
            format!("{host} refused access without credentials: give its Registry document credentials")
        }
        _ => format!("{host} refused the credentials: check the Registry's credentials for this host"),
    };
    RegistryError::new(ErrorKind::Unauthorized, operation, message)
}

/// An error for an unexpected status from `who`; 429 and 5xx are transient, and a
/// `Retry-After` it sent is kept for the caller's backoff. Only the start of the body is read,
/// and for no longer than `wait`.
async fn status_error(operation: &str, who: &str, mut response: Response, wait: Duration) -> RegistryError {
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let mut body = Vec::new();
    let _ = tokio::time::timeout(wait, async {
        while body.len() < ERROR_BODY_LIMIT {
            match response.chunk().await {
                Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                _ => break,
            }
        }
    })
    .await;
    let body = String::from_utf8_lossy(&body);
    let detail: String =
        body.lines().next().unwrap_or_default().chars().filter(|c| !c.is_control()).take(200).collect();
    let kind = crate::error::kind_of_status(status);
    let mut message = format!("{who} answered HTTP {status}");
    if !detail.trim().is_empty() {
        message.push_str(&format!(": {}", detail.trim()));
    }
    if let Some(seconds) = retry_after {
        message.push_str(&format!(" (retry after {seconds} s)"));
    }
    RegistryError { retry_after: retry_after.map(Duration::from_secs), ..RegistryError::new(kind, operation, message) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_hub_is_reached_at_its_api_host() {
        let repository = Repository { host: "docker.io".into(), path: "library/nginx".into() };
        let target = Target { repository, insecure: false, credential: Credential::Anonymous };
        assert_eq!(target.url("tags/list"), "https://registry-1.docker.io/v2/library/nginx/tags/list");
    }
}

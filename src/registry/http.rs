//! The registry requests Lifeboat sends itself, for what oci-client 0.17 cannot do: read a
//! `Retry-After` (it discards response headers) on the high-volume lookups — manifest HEAD
//! and GET, tag pages (following `Link` pagination) — send a blob as one streamed request
//! (its streaming push sends one PATCH per network read), and delete a manifest.
//! Authentication follows the registry's challenge: basic credentials, or a bearer token
//! fetched from the realm the `WWW-Authenticate` header names.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use reqwest::{Method, RequestBuilder, Response, StatusCode};

use super::auth::Credential;
use super::error::{ErrorKind, RegistryError};
use crate::desired::{Digest, Repository};

/// Tokens by (registry host, scope), with when they stop being valid.
type Tokens = Mutex<HashMap<(String, String), (String, Instant)>>;

pub struct Http {
    client: reqwest::Client,
    tokens: Tokens,
    /// For a request without a body; one with a body gets a second more per MB.
    timeout: Duration,
}

/// The slowest transfer rate tolerated before an upload counts as stalled.
const MIN_BYTES_PER_SECOND: u64 = 1_000_000;

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
}

impl Http {
    pub fn new(client: reqwest::Client, timeout: Duration) -> Http {
        Http { client, tokens: Mutex::new(HashMap::new()), timeout }
    }

    /// A transport error of a request without body, naming the time limit it broke.
    fn transport(&self, operation: &str, host: &str, e: &reqwest::Error) -> RegistryError {
        let mut error = transport(operation, host, e);
        if e.is_timeout() {
            error.message = format!("{host} did not answer within {}", humantime::format_duration(self.timeout));
        }
        error
    }

    fn timeout_for(&self, bytes: u64) -> Duration {
        self.timeout + Duration::from_secs(bytes / MIN_BYTES_PER_SECOND)
    }

    /// Sends a request built by `build`, answering an authentication challenge once.
    async fn send(
        &self,
        target: &Target,
        scope: &str,
        operation: &str,
        build: impl Fn(&reqwest::Client) -> RequestBuilder,
    ) -> Result<Response, RegistryError> {
        let key = (target.repository.host.clone(), scope.to_string());
        let cached =
            self.tokens.lock().expect("token lock").get(&key).filter(|(_, until)| *until > Instant::now()).cloned();
        let first = self
            .authorize(build(&self.client), &target.credential, cached.as_ref().map(|(t, _)| t.as_str()))
            .timeout(self.timeout);
        let response = first.send().await.map_err(|e| self.transport(operation, &target.repository.host, &e))?;
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
        if let Some((token, until)) = &token {
            self.tokens.lock().expect("token lock").insert(key, (token.clone(), *until));
        }
        let retry = self
            .authorize(build(&self.client), &target.credential, token.as_ref().map(|(t, _)| t.as_str()))
            .timeout(self.timeout);
        let response = retry.send().await.map_err(|e| self.transport(operation, &target.repository.host, &e))?;
        if response.status() == StatusCode::UNAUTHORIZED || response.status() == StatusCode::FORBIDDEN {
            return Err(refused(operation, &target.repository.host));
        }
        Ok(response)
    }

    fn authorize(&self, request: RequestBuilder, credential: &Credential, token: Option<&str>) -> RequestBuilder {
        match (token, credential) {
            (Some(token), _) => request.bearer_auth(token),
            (None, Credential::Basic { username, password }) => request.basic_auth(username, Some(password)),
            _ => request,
        }
    }

    async fn fetch_token(
        &self,
        challenge: &str,
        scope: &str,
        target: &Target,
        operation: &str,
    ) -> Result<(String, Instant), RegistryError> {
        let params = challenge_params(challenge);
        let realm = params.get("realm").ok_or_else(|| {
            RegistryError::new(
                ErrorKind::Permanent,
                operation,
                format!("{} sent a bearer challenge without realm", target.repository.host),
            )
        })?;
        // Credentials never go to a plain-HTTP realm for a registry reached over HTTPS.
        if realm.starts_with("http://") && !target.insecure {
            return Err(RegistryError::new(
                ErrorKind::Permanent,
                operation,
                format!(
                    "{} names a token service over plain HTTP ({realm}); refusing to send credentials there",
                    target.repository.host
                ),
            ));
        }
        let mut request = self.client.get(realm.as_str()).timeout(self.timeout).query(&[("scope", scope)]);
        if let Some(service) = params.get("service") {
            request = request.query(&[("service", service.as_str())]);
        }
        request = match &target.credential {
            Credential::Basic { username, password } => request.basic_auth(username, Some(password)),
            Credential::IdentityToken(t) => request.basic_auth("<token>", Some(t)),
            Credential::Anonymous => request,
        };
        let response = request.send().await.map_err(|e| transport(operation, &target.repository.host, &e))?;
        match response.status().as_u16() {
            200..=299 => {}
            401 | 403 => return Err(refused(operation, &target.repository.host)),
            // The token service being down or busy is an outage, not a refusal.
            _ => {
                return Err(status_error(
                    operation,
                    &format!("the token service of {}", target.repository.host),
                    response,
                )
                .await);
            }
        }
        #[derive(serde::Deserialize)]
        struct TokenAnswer {
            token: Option<String>,
            access_token: Option<String>,
            expires_in: Option<u64>,
        }
        let answer: TokenAnswer = response.json().await.map_err(|_| {
            RegistryError::new(
                ErrorKind::Permanent,
                operation,
                format!("the token service of {} sent no token", target.repository.host),
            )
        })?;
        let token = answer.token.or(answer.access_token).ok_or_else(|| {
            RegistryError::new(
                ErrorKind::Permanent,
                operation,
                format!("the token service of {} sent no token", target.repository.host),
            )
        })?;
        // Renew a little before the service says it expires (60 s when it does not say).
        let life = Duration::from_secs(answer.expires_in.unwrap_or(60)).saturating_sub(Duration::from_secs(5));
        Ok((token, Instant::now() + life))
    }

    /// Uploads a blob streamed from `body`, never holding it in memory: POST opens the
    /// upload; a blob up to `chunk` bytes goes in one PUT with its digest; a larger one in
    /// PATCH requests of `chunk` bytes each, then a PUT with the digest, which the registry
    /// verifies.
    pub async fn upload_blob<S>(
        &self,
        target: &Target,
        digest: &Digest,
        size: u64,
        body: S,
        chunk: u64,
    ) -> Result<(), RegistryError>
    where
        S: Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
    {
        let operation = format!("uploading blob {digest} to {}", target.repository);
        let scope = format!("repository:{}:pull,push", target.repository.path);
        let start = self.send(target, &scope, &operation, |c| c.post(target.url("blobs/uploads/"))).await?;
        if start.status() != StatusCode::ACCEPTED {
            return Err(status_error(&operation, &target.repository.host, start).await);
        }
        let location =
            start.headers().get(reqwest::header::LOCATION).and_then(|l| l.to_str().ok()).ok_or_else(|| {
                RegistryError::new(ErrorKind::Permanent, &operation, "the registry opened an upload without a Location")
            })?;
        let base = reqwest::Url::parse(&target.url("blobs/uploads/"))
            .map_err(|e| RegistryError::new(ErrorKind::Permanent, &operation, format!("bad upload location: {e}")))?;
        let mut url = base
            .join(location)
            .map_err(|e| RegistryError::new(ErrorKind::Permanent, &operation, format!("bad upload location: {e}")))?;
        // A body can be sent only once, so no challenge may interrupt it: the token obtained
        // for the POST (same scope) is used directly.
        let key = (target.repository.host.clone(), scope.clone());
        let token = self.tokens.lock().expect("token lock").get(&key).map(|(t, _)| t.clone());
        let request = |method: Method, url: reqwest::Url| {
            self.authorize(self.client.request(method, url), &target.credential, token.as_deref())
                .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
        };
        let mut last = None;
        if size > chunk {
            let source = Arc::new(tokio::sync::Mutex::new(Source { stream: Box::pin(body), leftover: None }));
            let mut offset = 0u64;
            while offset < size {
                let n = chunk.min(size - offset);
                let patch = request(Method::PATCH, url.clone())
                    .header(reqwest::header::CONTENT_RANGE, format!("{offset}-{}", offset + n - 1))
                    .header(reqwest::header::CONTENT_LENGTH, n)
                    .timeout(self.timeout_for(n))
                    .body(reqwest::Body::wrap_stream(take(source.clone(), n)));
                let response = patch.send().await.map_err(|e| transport(&operation, &target.repository.host, &e))?;
                if response.status() != StatusCode::ACCEPTED {
                    return Err(status_error(&operation, &target.repository.host, response).await);
                }
                let next = response.headers().get(reqwest::header::LOCATION).and_then(|l| l.to_str().ok());
                if let Some(next) = next {
                    url = base.join(next).map_err(|e| {
                        RegistryError::new(ErrorKind::Permanent, &operation, format!("bad upload location: {e}"))
                    })?;
                }
                offset += n;
            }
        } else {
            last = Some(body);
        }
        url.query_pairs_mut().append_pair("digest", digest.as_str());
        let put = match last {
            Some(body) => request(Method::PUT, url)
                .header(reqwest::header::CONTENT_LENGTH, size)
                .timeout(self.timeout_for(size))
                .body(reqwest::Body::wrap_stream(body)),
            None => request(Method::PUT, url).header(reqwest::header::CONTENT_LENGTH, 0).timeout(self.timeout),
        };
        let done = put.send().await.map_err(|e| transport(&operation, &target.repository.host, &e))?;
        if done.status() != StatusCode::CREATED {
            return Err(status_error(&operation, &target.repository.host, done).await);
        }
        Ok(())
    }

    /// A HEAD or GET of the manifest under `reference`: `None` when it does not exist.
    async fn manifest_request(
        &self,
        target: &Target,
        reference: &str,
        method: Method,
        operation: &str,
    ) -> Result<Option<Response>, RegistryError> {
        let scope = format!("repository:{}:pull", target.repository.path);
        let url = target.url(&format!("manifests/{reference}"));
        let accept = ACCEPTED_MANIFESTS.join(", ");
        let response = self
            .send(target, &scope, operation, |c| {
                c.request(method.clone(), &url).header(reqwest::header::ACCEPT, &accept)
            })
            .await?;
        match response.status() {
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => Ok(Some(response)),
            _ => Err(status_error(operation, &target.repository.host, response).await),
        }
    }

    /// The digest under `reference` (tag or digest), or `None` when it does not exist.
    pub async fn manifest_digest(&self, target: &Target, reference: &str) -> Result<Option<Digest>, RegistryError> {
        let operation = format!("looking up {}:{reference}", target.repository);
        let Some(response) = self.manifest_request(target, reference, Method::HEAD, &operation).await? else {
            return Ok(None);
        };
        let header = response.headers().get("Docker-Content-Digest").and_then(|v| v.to_str().ok()).map(str::to_string);
        match header {
            Some(d) => d.parse().map(Some).map_err(|e: String| RegistryError::new(ErrorKind::Permanent, operation, e)),
            // Without the header the digest is the hash of the manifest itself.
            None => Ok(self.manifest(target, reference).await?.map(|(_, d)| d)),
        }
    }

    /// The manifest bytes under `reference` and their digest, or `None`.
    pub async fn manifest(&self, target: &Target, reference: &str) -> Result<Option<(Bytes, Digest)>, RegistryError> {
        let operation = format!("reading manifest {}:{reference}", target.repository);
        let Some(response) = self.manifest_request(target, reference, Method::GET, &operation).await? else {
            return Ok(None);
        };
        let bytes = response.bytes().await.map_err(|e| transport(&operation, &target.repository.host, &e))?;
        let digest = super::manifest::sha256(&bytes);
        Ok(Some((bytes, digest)))
    }

    /// A small blob (a signature payload), read whole and checked against its digest; `None`
    /// when it does not exist. Larger than `limit` bytes is an error, never a large read.
    pub async fn small_blob(
        &self,
        target: &Target,
        digest: &Digest,
        limit: u64,
    ) -> Result<Option<Bytes>, RegistryError> {
        let operation = format!("reading blob {digest} of {}", target.repository);
        let scope = format!("repository:{}:pull", target.repository.path);
        let url = target.url(&format!("blobs/{digest}"));
        let response = self.send(target, &scope, &operation, |c| c.get(&url)).await?;
        match response.status() {
            StatusCode::NOT_FOUND => return Ok(None),
            s if s.is_success() => {}
            _ => return Err(status_error(&operation, &target.repository.host, response).await),
        }
        if response.content_length().is_some_and(|n| n > limit) {
            return Err(RegistryError::new(
                ErrorKind::Permanent,
                operation,
                format!("the blob is larger than {limit} bytes, too large for a signature"),
            ));
        }
        let bytes = response.bytes().await.map_err(|e| transport(&operation, &target.repository.host, &e))?;
        if bytes.len() as u64 > limit || super::manifest::sha256(&bytes) != *digest {
            return Err(RegistryError::new(
                ErrorKind::Permanent,
                operation,
                format!("{} sent content that does not match the digest", target.repository.host),
            ));
        }
        Ok(Some(bytes))
    }

    /// The OCI 1.1 referrers of `digest` (an image index), or `None` when the registry does
    /// not offer the referrers API.
    pub async fn referrers(&self, target: &Target, digest: &Digest) -> Result<Option<Bytes>, RegistryError> {
        let operation = format!("listing referrers of {}@{digest}", target.repository);
        let scope = format!("repository:{}:pull", target.repository.path);
        let url = target.url(&format!("referrers/{digest}"));
        let response = self.send(target, &scope, &operation, |c| c.get(&url)).await?;
        let is_index = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.starts_with(super::manifest::OCI_INDEX));
        match response.status() {
            // Registries without the API answer 404 (Distribution 2.8), 400 or 405.
            StatusCode::NOT_FOUND | StatusCode::BAD_REQUEST | StatusCode::METHOD_NOT_ALLOWED => Ok(None),
            s if s.is_success() && is_index => {
                Ok(Some(response.bytes().await.map_err(|e| transport(&operation, &target.repository.host, &e))?))
            }
            s if s.is_success() => Ok(None),
            _ => Err(status_error(&operation, &target.repository.host, response).await),
        }
    }

    /// Every tag of a repository, following `Link` pagination; `None` when the repository
    /// does not exist. A later page that fails is an error, never a shorter list.
    pub async fn list_tags(&self, target: &Target) -> Result<Option<Vec<String>>, RegistryError> {
        let operation = format!("listing tags of {}", target.repository);
        let scope = format!("repository:{}:pull", target.repository.path);
        let base = reqwest::Url::parse(&target.url("tags/list"))
            .map_err(|e| RegistryError::new(ErrorKind::Permanent, &operation, e.to_string()))?;
        let mut next = Some(format!("{base}?n=1000"));
        let mut tags = Vec::new();
        let mut first = true;
        #[derive(serde::Deserialize)]
        struct Page {
            tags: Option<Vec<String>>,
        }
        while let Some(url) = next.take() {
            let response = self.send(target, &scope, &operation, |c| c.get(&url)).await?;
            match response.status() {
                StatusCode::NOT_FOUND if tags.is_empty() && first => return Ok(None),
                s if s.is_success() => {}
                _ => return Err(status_error(&operation, &target.repository.host, response).await),
            }
            first = false;
            next = response
                .headers()
                .get(reqwest::header::LINK)
                .and_then(|l| l.to_str().ok())
                .and_then(next_link)
                .and_then(|link| base.join(&link).ok())
                // Credentials go with the request: only follow pages on the same registry.
                .filter(|u| {
                    u.host_str() == base.host_str() && u.port_or_known_default() == base.port_or_known_default()
                })
                .map(|u| u.to_string());
            let page: Page = response.json().await.map_err(|_| {
                RegistryError::new(
                    ErrorKind::Permanent,
                    &operation,
                    format!("{} sent a tag list that is not JSON", target.repository.host),
                )
            })?;
            tags.extend(page.tags.unwrap_or_default());
        }
        Ok(Some(tags))
    }

    /// Deletes a manifest by digest; Distribution removes every tag pointing at it.
    pub async fn delete_manifest(&self, target: &Target, digest: &Digest) -> Result<(), RegistryError> {
        let operation = format!("deleting {}@{digest}", target.repository);
        let scope = format!("repository:{}:delete", target.repository.path);
        let url = target.url(&format!("manifests/{digest}"));
        let response = self.send(target, &scope, &operation, |c| c.request(Method::DELETE, &url)).await?;
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
            _ => Err(status_error(&operation, &target.repository.host, response).await),
        }
    }
}

/// Where a registry's API is served: image references say `docker.io`, Docker Hub serves the
/// API at `registry-1.docker.io` (as oci-client's `resolve_registry` also knows).
fn api_host(host: &str) -> &str {
    if host == "docker.io" { "registry-1.docker.io" } else { host }
}

const ACCEPTED_MANIFESTS: &[&str] = super::manifest::ACCEPTED;

/// The target of `Link: </v2/x/tags/list?last=a&n=1000>; rel="next"`.
fn next_link(header: &str) -> Option<String> {
    header.split(',').find(|part| part.contains("rel=\"next\"")).and_then(|part| {
        let start = part.find('<')? + 1;
        let end = part.find('>')?;
        Some(part[start..end].to_string())
    })
}

/// A download shared by the PATCH requests of a chunked upload.
struct Source<S> {
    stream: std::pin::Pin<Box<S>>,
    /// Bytes read past the end of the previous chunk.
    leftover: Option<Bytes>,
}

/// The next `n` bytes of `source`, as a stream for one request body.
fn take<S>(
    source: Arc<tokio::sync::Mutex<Source<S>>>,
    n: u64,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static
where
    S: Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
{
    futures_util::stream::unfold((source, n), |(source, remaining)| async move {
        if remaining == 0 {
            return None;
        }
        let mut guard = source.lock().await;
        let bytes = match guard.leftover.take() {
            Some(b) => b,
            None => match guard.stream.next().await {
                Some(Ok(b)) => b,
                Some(Err(e)) => return Some((Err(e), (source.clone(), 0))),
                None => {
                    let e = std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the blob ended early");
                    return Some((Err(e), (source.clone(), 0)));
                }
            },
        };
        let take = remaining.min(bytes.len() as u64) as usize;
        let mut head = bytes;
        let tail = head.split_off(take);
        if !tail.is_empty() {
            guard.leftover = Some(tail);
        }
        drop(guard);
        Some((Ok(head), (source, remaining - take as u64)))
    })
}

/// `Bearer realm="https://auth.example/token",service="registry.example"` → its parameters.
fn challenge_params(challenge: &str) -> HashMap<String, String> {
    let rest = challenge.split_once(' ').map_or("", |(_, r)| r);
    let mut params = HashMap::new();
    let mut remaining = rest.trim();
    while let Some((key, after)) = remaining.split_once('=') {
        let key = key.trim().trim_start_matches(',').trim().to_ascii_lowercase();
        let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted.find('"').unwrap_or(quoted.len());
            (&quoted[..end], quoted.get(end + 1..).unwrap_or(""))
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        params.insert(key, value.to_string());
        remaining = next.trim_start_matches(',').trim();
    }
    params
}

fn transport(operation: &str, host: &str, e: &reqwest::Error) -> RegistryError {
    RegistryError::transport(operation, host, e)
}

fn refused(operation: &str, host: &str) -> RegistryError {
    RegistryError::new(
        ErrorKind::Unauthorized,
        operation,
        format!("{host} refused the credentials: check the Registry's credentials for this host"),
    )
}

/// An error for an unexpected status; 429 and 5xx are transient, and a `Retry-After` the
/// registry sent is kept for the caller's backoff.
async fn status_error(operation: &str, host: &str, response: Response) -> RegistryError {
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let body = response.text().await.unwrap_or_default();
    let detail = body.lines().next().unwrap_or_default().chars().take(200).collect::<String>();
    let kind = crate::error::kind_of_status(status);
    let mut message = format!("{host} answered HTTP {status}");
    if !detail.is_empty() {
        message.push_str(&format!(": {detail}"));
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

    #[test]
    fn follows_link_pagination() {
        assert_eq!(
            next_link(r#"</v2/a/tags/list?last=t0999&n=1000>; rel="next""#).as_deref(),
            Some("/v2/a/tags/list?last=t0999&n=1000")
        );
        assert_eq!(next_link(r#"<https://x/y>; rel="prev""#), None);
    }

    #[test]
    fn parses_bearer_challenges() {
        let p = challenge_params(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(p["realm"], "https://auth.example/token");
        assert_eq!(p["service"], "registry.example");
        assert_eq!(p["scope"], "repository:a/b:pull,push");
    }
}

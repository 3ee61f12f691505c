//! Blobs: whether one exists, a small one read whole, a large one streamed from one registry
//! and into another without ever being held in memory, and a cross-repository mount.
//!
//! A streamed download waits at most the timeout for each next piece, counted only while its
//! reader is waiting for it, so a slow receiver is never taken for a stalled sender; when it
//! breaks off, [`BrokeOff`] says why, naming the host that sent it. An upload's whole request
//! gets twice the timeout plus a second per MB: once for the registry, once for the source of
//! its bytes, so a stalled source is noticed (and named) first.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::{Stream, StreamExt};
use reqwest::{Method, StatusCode};

use super::{Http, Target, Wait, pull_scope, push_scope, status_error};
use crate::desired::{Digest, Repository};
use crate::registry::error::{ErrorKind, RegistryError, Silence};

/// The slowest transfer rate tolerated before an upload counts as stalled.
const MIN_BYTES_PER_SECOND: u64 = 1_000_000;

/// A blob being read.
pub struct Download {
    /// Its length, when the registry said.
    pub length: Option<u64>,
    pub stream: BoxStream<'static, Result<Bytes, std::io::Error>>,
    /// Why the stream broke off, once it has.
    pub broke_off: BrokeOff,
}

/// Why a download broke off, naming the host that sent it; set once the stream has failed.
#[derive(Clone, Default)]
pub struct BrokeOff(Arc<Mutex<Option<RegistryError>>>);

impl BrokeOff {
    pub fn get(&self) -> Option<RegistryError> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    fn set(&self, error: RegistryError) -> std::io::Error {
        let io = std::io::Error::other(error.to_string());
        *self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(error);
        io
    }
}

impl Http {
    fn timeout_for(&self, bytes: u64) -> Duration {
        self.timeout.saturating_mul(2).saturating_add(Duration::from_secs(bytes / MIN_BYTES_PER_SECOND))
    }

    pub async fn blob_exists(&self, target: &Target, digest: &Digest) -> Result<bool, RegistryError> {
        let operation = format!("checking blob {digest} in {}", target.repository);
        let url = target.url(&format!("blobs/{digest}"));
        let response = self.send(target, &pull_scope(target), &operation, Wait::Whole, |c| c.head(&url)).await?;
        match response.status() {
            StatusCode::NOT_FOUND => Ok(false),
            s if s.is_success() => Ok(true),
            _ => Err(status_error(&operation, target.host(), response, self.timeout).await),
        }
    }

    /// A small blob (a signature payload), read whole and checked against its digest; `None`
    /// when it does not exist. Larger than `limit` bytes is an error, never a large read.
    pub async fn small_blob(
        &self,
        target: &Target,
        digest: &Digest,
        limit: usize,
    ) -> Result<Option<Bytes>, RegistryError> {
        let operation = format!("reading blob {digest} of {}", target.repository);
        let url = target.url(&format!("blobs/{digest}"));
        let response = self.send(target, &pull_scope(target), &operation, Wait::Whole, |c| c.get(&url)).await?;
        match response.status() {
            StatusCode::NOT_FOUND => return Ok(None),
            s if s.is_success() => {}
            _ => return Err(status_error(&operation, target.host(), response, self.timeout).await),
        }
        let bytes = self.read_limited(response, limit, &operation, target.host(), "a signature payload").await?;
        if super::super::manifest::sha256(&bytes) != *digest {
            return Err(RegistryError::new(
                ErrorKind::Permanent,
                operation,
                format!("{} sent content that does not match the digest", target.host()),
            ));
        }
        Ok(Some(bytes))
    }

    /// Opens a blob for reading as a stream. The caller checks the digest of what it reads (or
    /// the registry it is sent to does).
    pub async fn blob_stream(&self, target: &Target, digest: &Digest) -> Result<Download, RegistryError> {
        let operation = format!("reading blob {digest} of {}", target.repository);
        let url = target.url(&format!("blobs/{digest}"));
        let response = self.send(target, &pull_scope(target), &operation, Wait::Headers, |c| c.get(&url)).await?;
        match response.status() {
            StatusCode::NOT_FOUND => {
                return Err(RegistryError::new(
                    ErrorKind::NotFound,
                    operation,
                    format!("{} does not have this blob", target.host()),
                ));
            }
            s if s.is_success() => {}
            _ => return Err(status_error(&operation, target.host(), response, self.timeout).await),
        }
        let length = response.content_length();
        let broke_off = BrokeOff::default();
        let stream = watched(response, target.host().to_string(), digest.clone(), self.timeout, broke_off.clone());
        Ok(Download { length, stream, broke_off })
    }

    /// Mounts `digest` from the repository `from` of the same registry into `target`: `true`
    /// when mounted, `false` when the registry declined (it then opened an upload, which is
    /// cancelled), so the caller copies instead.
    pub async fn mount_blob(&self, target: &Target, from: &Repository, digest: &Digest) -> Result<bool, RegistryError> {
        let operation = format!("mounting blob {digest} into {} from {from}", target.repository);
        // A token registry lets the mount read `from` only when the token says so.
        let scope = format!("{} repository:{}:pull", push_scope(target), from.path);
        let url = target.url("blobs/uploads/");
        let query = [("mount", digest.as_str()), ("from", from.path.as_str())];
        let response = self.send(target, &scope, &operation, Wait::Whole, |c| c.post(&url).query(&query)).await?;
        match response.status() {
            StatusCode::CREATED => Ok(true),
            StatusCode::ACCEPTED => {
                if let Ok(location) = self.upload_location(target, &response, &operation) {
                    let token = self.tokens.get(target.host(), &scope);
                    let cancel = self.authorize(self.client.delete(location), &target.credential, token.as_deref());
                    let _ = cancel.timeout(self.timeout).send().await;
                }
                Ok(false)
            }
            _ => Err(status_error(&operation, target.host(), response, self.timeout).await),
        }
    }

    /// Where the registry wants an upload it opened continued: on the registry itself only,
    /// since credentials go with it.
    fn upload_location(
        &self,
        target: &Target,
        response: &reqwest::Response,
        operation: &str,
    ) -> Result<reqwest::Url, RegistryError> {
        let permanent = |message: String| RegistryError::new(ErrorKind::Permanent, operation, message);
        let host = target.host();
        let location = response
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|l| l.to_str().ok())
            .ok_or_else(|| permanent(format!("{host} opened an upload without a Location")))?;
        let base = reqwest::Url::parse(&target.url("blobs/uploads/")).map_err(|e| permanent(format!("{host}: {e}")))?;
        let url = base.join(location).map_err(|e| permanent(format!("{host} sent a bad upload location: {e}")))?;
        if url.host_str() != base.host_str() || url.port_or_known_default() != base.port_or_known_default() {
            return Err(permanent(format!(
                "{host} wants the upload sent to another host ({}); Lifeboat sends credentials only to the registry",
                url.origin().ascii_serialization()
            )));
        }
        Ok(url)
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
        let host = target.host();
        let scope = push_scope(target);
        let url = target.url("blobs/uploads/");
        let start = self.send(target, &scope, &operation, Wait::Whole, |c| c.post(&url)).await?;
        if start.status() != StatusCode::ACCEPTED {
            return Err(status_error(&operation, host, start, self.timeout).await);
        }
        let mut url = self.upload_location(target, &start, &operation)?;
        // A body can be sent only once, so no challenge may interrupt it: the token obtained
        // for the POST (same scope) is used directly.
        let token = self.tokens.get(host, &scope);
        let request = |method: Method, url: reqwest::Url| {
            self.authorize(self.client.request(method, url), &target.credential, token.as_deref())
                .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
        };
        let transport = |e: reqwest::Error, limit| RegistryError::transport(&operation, host, host, &e, limit);
        let chunk = chunk.max(1);
        let mut last = None;
        if size > chunk {
            let source = Arc::new(tokio::sync::Mutex::new(Source { stream: Box::pin(body), leftover: None }));
            let mut offset = 0u64;
            while offset < size {
                let n = chunk.min(size - offset);
                let limit = self.timeout_for(n);
                let patch = request(Method::PATCH, url.clone())
                    .header(reqwest::header::CONTENT_RANGE, format!("{offset}-{}", offset + n - 1))
                    .header(reqwest::header::CONTENT_LENGTH, n)
                    .timeout(limit)
                    .body(reqwest::Body::wrap_stream(take(source.clone(), n)));
                let response = patch.send().await.map_err(|e| transport(e, limit))?;
                if response.status() != StatusCode::ACCEPTED {
                    return Err(status_error(&operation, host, response, self.timeout).await);
                }
                if response.headers().contains_key(reqwest::header::LOCATION) {
                    url = self.upload_location(target, &response, &operation)?;
                }
                offset += n;
            }
        } else {
            last = Some(body);
        }
        url.query_pairs_mut().append_pair("digest", digest.as_str());
        let (put, limit) = match last {
            Some(body) => {
                let limit = self.timeout_for(size);
                let put = request(Method::PUT, url)
                    .header(reqwest::header::CONTENT_LENGTH, size)
                    .timeout(limit)
                    .body(reqwest::Body::wrap_stream(body));
                (put, limit)
            }
            None => (
                request(Method::PUT, url).header(reqwest::header::CONTENT_LENGTH, 0).timeout(self.timeout),
                self.timeout,
            ),
        };
        let done = put.send().await.map_err(|e| transport(e, limit))?;
        if done.status() != StatusCode::CREATED {
            return Err(status_error(&operation, host, done, self.timeout).await);
        }
        Ok(())
    }
}

/// The body of `response` as a stream in which each next piece is awaited at most `timeout`
/// while the reader waits for it; a failure ends the stream and is recorded in `broke_off`.
fn watched(
    response: reqwest::Response,
    host: String,
    digest: Digest,
    timeout: Duration,
    broke_off: BrokeOff,
) -> BoxStream<'static, Result<Bytes, std::io::Error>> {
    struct State {
        body: BoxStream<'static, reqwest::Result<Bytes>>,
        read: u64,
        host: String,
        digest: Digest,
        timeout: Duration,
        broke_off: BrokeOff,
    }
    impl State {
        fn failed(&self, message: String, silence: Option<Silence>) -> std::io::Error {
            let (host, digest) = (&self.host, &self.digest);
            let error = RegistryError {
                silence,
                ..RegistryError::new(
                    ErrorKind::Transient,
                    format!("reading blob {digest} from {host}"),
                    format!("{host} stopped sending blob {digest} after {} bytes: {message}", self.read),
                )
            };
            self.broke_off.set(error)
        }
    }
    let state = State { body: response.bytes_stream().boxed(), read: 0, host, digest, timeout, broke_off };
    futures_util::stream::unfold(Some(state), |state| async move {
        let mut state = state?;
        match tokio::time::timeout(state.timeout, state.body.next()).await {
            Ok(Some(Ok(bytes))) => {
                state.read += bytes.len() as u64;
                Some((Ok(bytes), Some(state)))
            }
            Ok(None) => None,
            Ok(Some(Err(e))) => Some((Err(state.failed(crate::error::source_chain(&e), None)), None)),
            Err(_) => {
                let waited = format!("nothing more within {}", humantime::format_duration(state.timeout));
                let silence = Silence::TimedOut { host: state.host.clone() };
                Some((Err(state.failed(waited, Some(silence))), None))
            }
        }
    })
    .boxed()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn chunks_are_cut_from_one_source() {
        let pieces: Vec<Result<Bytes, std::io::Error>> =
            vec![Ok(Bytes::from_static(b"abcde")), Ok(Bytes::from_static(b"fgh"))];
        let source = Arc::new(tokio::sync::Mutex::new(Source {
            stream: Box::pin(futures_util::stream::iter(pieces)),
            leftover: None,
        }));
        let mut out = Vec::new();
        for n in [3, 3, 2] {
            let chunk: Vec<Bytes> = take(source.clone(), n).map(Result::unwrap).collect().await;
            out.push(chunk.concat());
        }
        assert_eq!(out, [b"abc".to_vec(), b"def".to_vec(), b"gh".to_vec()]);
        let short: Vec<_> = take(source, 1).collect().await;
        assert!(short[0].is_err(), "a source that ends early is an error");
    }
}

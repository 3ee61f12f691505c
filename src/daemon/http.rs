//! The daemon's HTTP endpoints: health, readiness, metrics, the authenticated on-demand
//! trigger and the Git push webhook. Secrets are compared in constant time and never logged.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hmac::Mac as _;
use subtle::ConstantTimeEq as _;

use super::Shared;

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/trigger", post(trigger))
        // GitHub sends push payloads of up to 25 MB.
        .route("/webhook", post(webhook).layer(axum::extract::DefaultBodyLimit::max(32 << 20)))
        .with_state(shared)
}

async fn readyz(State(shared): State<Arc<Shared>>) -> Response {
    if shared.ready.load(Ordering::SeqCst) {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready: the desired state has not been read yet\n").into_response()
    }
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], shared.metrics.encode())
        .into_response()
}

/// Fetches now (and syncs what changed, or with `all` every set); a standby also passes the
/// request on to the leader.
fn wake(shared: &Shared, all: bool) {
    shared.wake.notify_one();
    if let Some(election) = &shared.election {
        election.forward_sync_request(all);
    }
}

fn same(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

async fn trigger(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let Some(token) = &shared.trigger_token else {
        return (StatusCode::NOT_FOUND, "the trigger is off: start Lifeboat with --trigger-token-file\n")
            .into_response();
    };
    let given =
        headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(given) if same(given.trim().as_bytes(), token.as_bytes()) => {
            tracing::info!(source = "trigger", "sync requested");
            shared.sync_all.store(true, Ordering::SeqCst);
            wake(&shared, true);
            (StatusCode::ACCEPTED, "sync requested\n").into_response()
        }
        _ => {
            tracing::warn!("refused a trigger without a valid bearer token");
            (StatusCode::UNAUTHORIZED, "a valid `Authorization: Bearer <token>` is required\n").into_response()
        }
    }
}

/// Whose webhook it is, once its secret checked out.
#[derive(Debug, PartialEq, Eq)]
enum Sender {
    GitHub,
    GitLab,
}

fn authenticate(secret: &[u8], headers: &HeaderMap, body: &[u8]) -> Result<Sender, &'static str> {
    if let Some(signature) = headers.get("x-hub-signature-256") {
        let hex =
            signature.to_str().ok().and_then(|s| s.strip_prefix("sha256=")).ok_or("malformed X-Hub-Signature-256")?;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
        mac.update(body);
        let expected: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
        return if same(hex.to_ascii_lowercase().as_bytes(), expected.as_bytes()) {
            Ok(Sender::GitHub)
        } else {
            Err("X-Hub-Signature-256 does not match the webhook secret")
        };
    }
    if let Some(token) = headers.get("x-gitlab-token") {
        return if same(token.as_bytes(), secret) {
            Ok(Sender::GitLab)
        } else {
            Err("X-Gitlab-Token is not the webhook secret")
        };
    }
    Err("neither X-Hub-Signature-256 (GitHub) nor X-Gitlab-Token (GitLab) is present")
}

async fn webhook(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(secret) = &shared.webhook_secret else {
        return (StatusCode::NOT_FOUND, "the webhook is off: start Lifeboat with --webhook-secret-file\n")
            .into_response();
    };
    let sender = match authenticate(secret.as_bytes(), &headers, &body) {
        Ok(sender) => sender,
        Err(why) => {
            tracing::warn!(reason = why, "refused a webhook");
            return (StatusCode::UNAUTHORIZED, format!("refused: {why}\n")).into_response();
        }
    };
    let event = headers
        .get(if sender == Sender::GitHub { "x-github-event" } else { "x-gitlab-event" })
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !matches!(event, "push" | "Push Hook") {
        return (StatusCode::OK, format!("ignored: `{event}` is not a push event\n")).into_response();
    }
    let pushed = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("ref").and_then(|r| r.as_str()).map(str::to_string));
    let wanted = format!("refs/heads/{}", shared.branch);
    match pushed {
        Some(r) if r == wanted => {
            tracing::info!(source = ?sender, branch = %shared.branch, "push received; fetching");
            wake(&shared, false);
            (StatusCode::ACCEPTED, "sync requested\n").into_response()
        }
        Some(r) => (StatusCode::OK, format!("ignored: push to {r}, following {wanted}\n")).into_response(),
        None => (StatusCode::BAD_REQUEST, "the push event has no `ref`\n").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn github_signatures_are_checked_over_the_exact_body() {
        let body = br#"{"ref":"refs/heads/main"}"#;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"s3cret").unwrap();
        mac.update(body);
        let hex: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
        let good = headers(&[("x-hub-signature-256", &format!("sha256={hex}"))]);
        assert_eq!(authenticate(b"s3cret", &good, body), Ok(Sender::GitHub));
        assert!(authenticate(b"other", &good, body).is_err());
        assert!(authenticate(b"s3cret", &good, br#"{"ref":"refs/heads/evil"}"#).is_err());
        assert!(authenticate(b"s3cret", &headers(&[("x-hub-signature-256", "md5=00")]), body).is_err());
    }

    #[test]
    fn gitlab_tokens_must_equal_the_secret() {
        assert_eq!(authenticate(b"s3cret", &headers(&[("x-gitlab-token", "s3cret")]), b"{}"), Ok(Sender::GitLab));
        assert!(authenticate(b"s3cret", &headers(&[("x-gitlab-token", "s3cre")]), b"{}").is_err());
        assert!(authenticate(b"s3cret", &HeaderMap::new(), b"{}").is_err());
    }
}

//! Bearer tokens (the Docker token flow Docker Hub, Harbor and most cloud registries use):
//! fetched from the realm a registry's challenge names, with the registry's credentials, and
//! cached by (registry, scope) until shortly before they expire.
//!
//! The token service is a peer of its own: when it cannot be reached, does not answer or fails,
//! the error names it (`the token service auth.example of registry.example`), and only a 401 or
//! 403 from it means refused credentials. Credentials never go to a plain-HTTP realm of a
//! registry reached over HTTPS.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{Http, Target, status_error};
use crate::registry::auth::Credential;
use crate::registry::error::{ErrorKind, RegistryError};

/// The largest token answer read (tokens are JWTs of a few kilobytes).
const TOKEN_ANSWER_LIMIT: usize = 1 << 20;

/// Tokens by (registry host, scope), with when they stop being valid.
#[derive(Default)]
pub(super) struct Tokens(Mutex<HashMap<(String, String), (String, Instant)>>);

impl Tokens {
    /// A token for `scope` on `host` that is still valid.
    pub(super) fn get(&self, host: &str, scope: &str) -> Option<String> {
        let tokens = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (token, until) = tokens.get(&(host.to_string(), scope.to_string()))?;
        (*until > Instant::now()).then(|| token.clone())
    }

    fn insert(&self, host: &str, scope: &str, token: &str, until: Instant) {
        let mut tokens = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        tokens.insert((host.to_string(), scope.to_string()), (token.to_string(), until));
    }
}

impl Http {
    /// A token for `scope` (one scope, or several separated by spaces) from the realm of
    /// `challenge`, kept for later requests with the same scope.
    pub(super) async fn fetch_token(
        &self,
        challenge: &str,
        scope: &str,
        target: &Target,
        operation: &str,
    ) -> Result<String, RegistryError> {
        let registry = target.host();
        let permanent = |message: String| RegistryError::new(ErrorKind::Permanent, operation, message);
        let params = challenge_params(challenge);
        let realm = params
            .get("realm")
            .ok_or_else(|| permanent(format!("{registry} sent a bearer challenge without realm")))?;
        let url = reqwest::Url::parse(realm)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
            .ok_or_else(|| permanent(format!("{registry} names a token service that is not an HTTP URL")))?;
        // Credentials never go to a plain-HTTP realm for a registry reached over HTTPS.
        if url.scheme() == "http" && !target.insecure {
            return Err(permanent(format!(
                "{registry} names a token service over plain HTTP ({}); refusing to send credentials there",
                url.origin().ascii_serialization()
            )));
        }
        let service_host = match (url.host_str(), url.port()) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            (host, _) => host.unwrap_or_default().to_string(),
        };
        let who = format!("the token service {service_host} of {registry}");
        let mut request = self.client.get(url).timeout(self.timeout);
        for one in scope.split(' ').filter(|s| !s.is_empty()) {
            request = request.query(&[("scope", one)]);
        }
        if let Some(service) = params.get("service") {
            request = request.query(&[("service", service.as_str())]);
        }
        request = match &target.credential {
            Credential::Basic { username, password } => request.basic_auth(username, Some(password)),
            Credential::IdentityToken(t) => request.basic_auth("<token>", Some(t)),
            Credential::Anonymous => request,
        };
        let response =
            request.send().await.map_err(|e| RegistryError::transport(operation, &who, registry, &e, self.timeout))?;
        match response.status().as_u16() {
            200..=299 => {}
            401 | 403 => {
                let message = match &target.credential {
                    Credential::Anonymous => {
                        format!("{who} refused a token without credentials: give Registry {registry} credentials")
                    }
                    _ => format!("{who} refused the credentials: check the Registry's credentials for {registry}"),
                };
                return Err(RegistryError::new(ErrorKind::Unauthorized, operation, message));
            }
            // The token service being down or busy is an outage, not a refusal.
            _ => return Err(status_error(operation, &who, response, self.timeout).await),
        }
        #[derive(serde::Deserialize)]
        struct TokenAnswer {
            token: Option<String>,
            access_token: Option<String>,
            expires_in: Option<u64>,
        }
        let body = self.read_limited(response, TOKEN_ANSWER_LIMIT, operation, &who, "a token answer").await?;
        let no_token = || permanent(format!("{who} sent no token"));
        let answer: TokenAnswer = serde_json::from_slice(&body).map_err(|_| no_token())?;
        let token = answer.token.or(answer.access_token).filter(|t| !t.is_empty()).ok_or_else(no_token)?;
        // Renew a little before the service says it expires (60 s when it does not say).
        let life =
            Duration::from_secs(answer.expires_in.unwrap_or(60).min(86_400)).saturating_sub(Duration::from_secs(5));
        self.tokens.insert(registry, scope, &token, Instant::now() + life);
        Ok(token)
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer_challenges() {
        let p = challenge_params(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(p["realm"], "https://auth.example/token");
        assert_eq!(p["service"], "registry.example");
        assert_eq!(p["scope"], "repository:a/b:pull,push");
    }

    #[test]
    fn damaged_challenges_give_what_they_can_and_never_panic() {
        for challenge in [
            "Bearer",
            "Bearer ",
            "Bearer realm",
            "Bearer realm=\"",
            "Bearer =\"x\"",
            "Bearer realm=\"é\",service=ü",
            "Bearer ,,,=,=\"",
        ] {
            let _ = challenge_params(challenge);
        }
        assert_eq!(
            challenge_params("Bearer realm=\"https://a/t").get("realm").map(String::as_str),
            Some("https://a/t")
        );
    }
}

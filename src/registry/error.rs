//! Registry failures: what was attempted, on which registry, and why, in words a person can
//! act on, classified by the crate's one [`crate::error::Kind`] (re-exported here as
//! [`ErrorKind`]).

use std::fmt;

pub use crate::error::Kind as ErrorKind;
use crate::error::{kind_of_status, source_chain};

/// A registry operation that failed: what was attempted, on which registry, and why, in
/// words a person can act on. Never carries credentials.
#[derive(Debug, Clone, thiserror::Error)]
pub struct RegistryError {
    pub kind: ErrorKind,
    /// `HEAD manifest registry.example/app:1.2`
    pub operation: String,
    pub message: String,
    /// How long the registry asked to wait (`Retry-After`), when it said.
    pub retry_after: Option<std::time::Duration>,
}

impl fmt::Display for RegistryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.operation, self.message)
    }
}

impl RegistryError {
    pub fn new(kind: ErrorKind, operation: impl Into<String>, message: impl Into<String>) -> Self {
        RegistryError { kind, operation: operation.into(), message: message.into(), retry_after: None }
    }

    /// Classifies an oci-client error. The message is rewritten without URLs' query strings
    /// and never includes request headers, so no credential can leak through it.
    pub fn from_oci(operation: impl Into<String>, host: &str, e: oci_client::errors::OciDistributionError) -> Self {
        use oci_client::errors::{OciDistributionError as E, OciErrorCode as C};
        let (kind, message) = match &e {
            E::ImageManifestNotFoundError(_) => (ErrorKind::NotFound, "not found".to_string()),
            E::UnauthorizedError { .. } | E::AuthenticationFailure(_) => (
                ErrorKind::Unauthorized,
                format!("{host} refused the credentials: check the Registry's credentials for this host"),
            ),
            E::RegistryError { envelope, .. } => {
                let codes: Vec<&C> = envelope.errors.iter().map(|e| &e.code).collect();
                let text = envelope.errors.iter().map(|e| e.message.as_str()).collect::<Vec<_>>().join("; ");
                let kind = if codes.iter().any(|c| {
                    matches!(
                        c,
                        C::ManifestUnknown | C::BlobUnknown | C::NameUnknown | C::ManifestBlobUnknown | C::NotFound
                    )
                }) {
                    ErrorKind::NotFound
                } else if codes.iter().any(|c| matches!(c, C::Unauthorized | C::Denied)) {
                    ErrorKind::Unauthorized
                } else if codes.iter().any(|c| matches!(c, C::Toomanyrequests)) {
                    ErrorKind::Transient
                } else {
                    ErrorKind::Permanent
                };
                (kind, format!("{host} answered: {text}"))
            }
            E::ServerError { code, message, .. } => {
                let kind = kind_of_status(*code);
                let detail = message.trim();
                let detail = if detail.is_empty() { String::new() } else { format!(": {}", first_line(detail)) };
                (kind, format!("{host} answered HTTP {code}{detail}"))
            }
            // oci-client turns some HTTP answers (a blob HEAD) into request errors with a status.
            E::RequestError(r) if r.status().is_some() => {
                let code = r.status().map_or(0, |s| s.as_u16());
                (kind_of_status(code), format!("{host} answered HTTP {code}"))
            }
            E::RequestError(r) => return RegistryError::transport(operation, host, r),
            E::IoError(io) => (ErrorKind::Transient, format!("I/O error with {host}: {io}")),
            other => (ErrorKind::Permanent, first_line(&other.to_string()).to_string()),
        };
        RegistryError::new(kind, operation, message)
    }

    /// A request that got no answer: refused, reset, or timed out. Always transient.
    pub fn transport(operation: impl Into<String>, host: &str, e: &reqwest::Error) -> Self {
        let what = if e.is_timeout() {
            "timed out"
        } else if e.is_connect() {
            "could not connect"
        } else {
            "the connection failed"
        };
        RegistryError::new(ErrorKind::Transient, operation, format!("{what} talking to {host}: {}", source_chain(e)))
    }
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or_default()
}

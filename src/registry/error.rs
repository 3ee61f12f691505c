//! Registry failures: what was attempted, on which registry, and why, in words a person can
//! act on, classified by the crate's one [`crate::error::Kind`] (re-exported here as
//! [`ErrorKind`]). Errors never carry credentials, request headers or URLs' query strings.

use std::fmt;
use std::time::Duration;

pub use crate::error::Kind as ErrorKind;
use crate::error::source_chain;

/// A registry operation that failed.
#[derive(Debug, Clone, thiserror::Error)]
pub struct RegistryError {
    pub kind: ErrorKind,
    /// `looking up registry.example/app:1.2`
    pub operation: String,
    /// `registry.example did not answer within 30s`
    pub message: String,
    /// How long the registry asked to wait (`Retry-After`), when it said.
    pub retry_after: Option<Duration>,
    /// Set when a registry host gave no answer at all: what a pass's breaker counts.
    pub silence: Option<Silence>,
}

/// A registry host that gave no answer. `host` is the registry whose breaker counts it: for a
/// token service that did not answer, the registry it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Silence {
    /// A request (or a wait for the next bytes of a transfer) got nothing within its time
    /// limit.
    TimedOut { host: String },
    /// No connection could be made: refused, no route, a name that does not resolve.
    Unreachable { host: String },
}

impl Silence {
    pub fn host(&self) -> &str {
        match self {
            Silence::TimedOut { host } | Silence::Unreachable { host } => host,
        }
    }
}

impl fmt::Display for RegistryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.operation, self.message)
    }
}

impl RegistryError {
    pub fn new(kind: ErrorKind, operation: impl Into<String>, message: impl Into<String>) -> Self {
        RegistryError { kind, operation: operation.into(), message: message.into(), retry_after: None, silence: None }
    }

    /// A request that got no answer, always transient: `who` (how the message names the peer,
    /// `127.0.0.1:5000` or `the token service auth.example of 127.0.0.1:5000`) timed out after
    /// `limit`, could not be connected to, or dropped the connection. `host` is the registry
    /// whose breaker a silence counts against.
    pub fn transport(operation: impl Into<String>, who: &str, host: &str, e: &reqwest::Error, limit: Duration) -> Self {
        let host = host.to_string();
        let (message, silence) = if e.is_timeout() {
            (format!("{who} did not answer within {}", humantime::format_duration(limit)), Silence::TimedOut { host })
        } else if e.is_connect() {
            (format!("could not connect to {who}: {}", cause(e)), Silence::Unreachable { host })
        } else {
            let error = RegistryError::new(
                ErrorKind::Transient,
                operation,
                format!("the connection to {who} failed: {}", source_chain(e)),
            );
            return error;
        };
        RegistryError { silence: Some(silence), ..RegistryError::new(ErrorKind::Transient, operation, message) }
    }

    /// `who` sent nothing within `limit`.
    pub fn timed_out(operation: impl Into<String>, who: &str, host: &str, limit: Duration) -> Self {
        RegistryError {
            silence: Some(Silence::TimedOut { host: host.to_string() }),
            ..RegistryError::new(
                ErrorKind::Transient,
                operation,
                format!("{who} did not answer within {}", humantime::format_duration(limit)),
            )
        }
    }
}

/// What went wrong under reqwest's own "error sending request", which the message already says.
fn cause(e: &reqwest::Error) -> String {
    match std::error::Error::source(e) {
        Some(inner) => source_chain(inner),
        None => source_chain(e),
    }
}

/// Text a registry sent, for a message: quoted, with control characters escaped, and cut to
/// 120 characters, so no answer can flood or garble a log, a status file or a terminal.
pub(crate) fn quoted(text: &str) -> String {
    let short: String = text.chars().take(120).collect();
    let cut = if short.len() < text.len() { "…" } else { "" };
    format!("{short:?}{cut}")
}

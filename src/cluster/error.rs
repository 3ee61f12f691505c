//! Kubernetes API failures, classified by what Lifeboat should do about them.

use std::fmt;

/// What kind of failure: decides whether to try again next round or to ask a person.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The object does not exist (404).
    NotFound,
    /// Someone else wrote first: the object exists already, or changed since it was read
    /// (409). Read it again and decide again.
    Conflict,
    /// The service account is not allowed to do this, or its credentials are refused (401,
    /// 403): a person has to fix the RBAC rules or the kubeconfig.
    Unauthorized,
    /// Worth retrying: no answer, 5xx, 429, timeouts.
    Transient,
    /// Will not get better by retrying: an invalid object, an unsupported request, other 4xx.
    Permanent,
}

/// A Kubernetes API request that failed: what was attempted on which object, and why.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ClusterError {
    pub kind: ErrorKind,
    /// `renewing lease lifeboat/lifeboat-leader`
    pub operation: String,
    pub message: String,
}

impl fmt::Display for ClusterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.operation, self.message)
    }
}

impl ClusterError {
    pub fn new(kind: ErrorKind, operation: impl Into<String>, message: impl Into<String>) -> Self {
        ClusterError { kind, operation: operation.into(), message: message.into() }
    }

    /// Classifies a kube client error. The API server's own words are kept: they name the
    /// object, the verb and, for RBAC, the service account.
    pub fn from_kube(operation: impl Into<String>, e: &kube::Error) -> Self {
        let (kind, message) = match e {
            kube::Error::Api(status) => {
                let words = if status.message.is_empty() { status.reason.as_str() } else { status.message.as_str() };
                let message = if status.code == 0 {
                    format!("the API server answered: {words}")
                } else {
                    format!("the API server answered {}: {words}", status.code)
                };
                (kind_of_status(status.code), message)
            }
            kube::Error::HyperError(e) => {
                (ErrorKind::Transient, format!("could not reach the API server: {}", source_chain(e)))
            }
            kube::Error::Service(e) => {
                (ErrorKind::Transient, format!("could not reach the API server: {}", source_chain(e.as_ref())))
            }
            kube::Error::Auth(e) => {
                (ErrorKind::Unauthorized, format!("could not authenticate to the API server: {}", source_chain(e)))
            }
            other => (ErrorKind::Permanent, source_chain(other)),
        };
        ClusterError::new(kind, operation, message)
    }
}

/// What an HTTP status from the API server means for Lifeboat.
pub fn kind_of_status(code: u16) -> ErrorKind {
    match code {
        404 => ErrorKind::NotFound,
        409 => ErrorKind::Conflict,
        401 | 403 => ErrorKind::Unauthorized,
        408 | 429 | 500..=599 => ErrorKind::Transient,
        _ => ErrorKind::Permanent,
    }
}

/// An error and its causes on one line, without repeating a cause its parent already printed.
fn source_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut current = e.source();
    while let Some(cause) = current {
        let words = cause.to_string();
        if !text.contains(&words) {
            text = format!("{text}: {words}");
        }
        current = cause.source();
    }
    text
}

//! Kubernetes API failures: what was attempted on which object, and why, classified by the
//! crate's one [`crate::error::Kind`] (re-exported here as [`ErrorKind`]).

use std::fmt;

pub use crate::error::Kind as ErrorKind;
use crate::error::{kind_of_status, source_chain};

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

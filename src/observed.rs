//! One observed fact: `Present`, `Absent` or `Unknown(reason)`, the one way Lifeboat says
//! "could not look" wherever it looks (registries, the cluster, nodes).
//!
//! When Lifeboat could not look (upstream down, 5xx, timeout, refused credentials, an API
//! server that does not answer), the item is Unknown, never Absent, so no plan can delete,
//! overwrite or shrink anything on the strength of an outage.

use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", content = "value", rename_all = "camelCase")]
pub enum Observed<T> {
    Present(T),
    /// Looked, and it is not there (for the cluster side: no cluster is used at all).
    Absent,
    /// Could not look, and why.
    Unknown(String),
}

impl<T> Observed<T> {
    /// The value, when present.
    pub fn present(&self) -> Option<&T> {
        match self {
            Observed::Present(v) => Some(v),
            _ => None,
        }
    }

    /// Why Lifeboat could not look, when it could not.
    pub fn unknown(&self) -> Option<&str> {
        match self {
            Observed::Unknown(why) => Some(why),
            _ => None,
        }
    }

    pub fn is_unknown(&self) -> bool {
        matches!(self, Observed::Unknown(_))
    }

    pub fn as_ref(&self) -> Observed<&T> {
        match self {
            Observed::Present(v) => Observed::Present(v),
            Observed::Absent => Observed::Absent,
            Observed::Unknown(why) => Observed::Unknown(why.clone()),
        }
    }

    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Observed<U> {
        match self {
            Observed::Present(v) => Observed::Present(f(v)),
            Observed::Absent => Observed::Absent,
            Observed::Unknown(why) => Observed::Unknown(why),
        }
    }

    /// A lookup's result: `Ok(None)` is Absent, an error is Unknown with its words.
    pub fn from_lookup<E: std::fmt::Display>(result: Result<Option<T>, E>) -> Self {
        match result {
            Ok(Some(v)) => Observed::Present(v),
            Ok(None) => Observed::Absent,
            Err(e) => Observed::Unknown(e.to_string()),
        }
    }

    /// A read that either finds the value or fails.
    pub fn from_read<E: std::fmt::Display>(result: Result<T, E>) -> Self {
        match result {
            Ok(v) => Observed::Present(v),
            Err(e) => Observed::Unknown(e.to_string()),
        }
    }
}

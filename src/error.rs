//! What a failure of another system means for Lifeboat: the one classification shared by the
//! registry client, the Kubernetes client and the node agent.
//!
//! Each owning module turns its own client's errors into a [`Kind`] (`registry::error` from
//! HTTP answers and transport errors, `cluster::error` from kube's, `nodeagent` from the
//! container runtime's words); this module knows no client and does no I/O.

use std::fmt;

/// What kind of failure: decides retrying, and whether a thing is `Absent` or `Unknown`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// The thing does not exist (404, a registry's `*_UNKNOWN` codes).
    NotFound,
    /// Someone else wrote first: the object exists already, or changed since it was read
    /// (409). Read it again and decide again.
    Conflict,
    /// Credentials missing, wrong, or without the needed permission (401, 403): a person has to
    /// fix them.
    Unauthorized,
    /// Worth trying again: no answer, a timeout, 5xx, 429.
    Transient,
    /// Will not get better by trying again: invalid content, an unsupported request, other 4xx.
    Permanent,
}

impl Kind {
    /// Whether trying the same thing again may succeed.
    pub fn retryable(self) -> bool {
        matches!(self, Kind::Transient)
    }

    /// A stable name for metric labels and machine-readable output.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::NotFound => "not_found",
            Kind::Conflict => "conflict",
            Kind::Unauthorized => "unauthorized",
            Kind::Transient => "transient",
            Kind::Permanent => "permanent",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an HTTP status means, from a registry and from the Kubernetes API alike.
pub fn kind_of_status(code: u16) -> Kind {
    match code {
        404 => Kind::NotFound,
        409 => Kind::Conflict,
        401 | 403 => Kind::Unauthorized,
        408 | 429 | 500..=599 => Kind::Transient,
        _ => Kind::Permanent,
    }
}

/// An error and its causes on one line, outermost first, each cause only when its words are
/// not already in the text: `error sending request: client error (Connect): tcp connect
/// error: Connection refused (os error 111)`.
///
/// Every layer is kept, not just the innermost: the innermost cause says what happened
/// ("Connection refused"), the outer ones where (DNS, TCP, TLS, an exec credential plugin),
/// and that is what a person needs to fix it. A URL a layer names (reqwest's `for url (…)`)
/// is left out: it may carry query parameters.
pub fn source_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = without_url(&e.to_string());
    let mut current = e.source();
    while let Some(cause) = current {
        let words = without_url(&cause.to_string());
        if !words.is_empty() && !text.contains(&words) {
            text = format!("{text}: {words}");
        }
        current = cause.source();
    }
    text
}

/// `error sending request for url (https://…?q)` → `error sending request`.
fn without_url(text: &str) -> String {
    match text.split_once(" for url (") {
        Some((words, rest)) => {
            let after = rest.split_once(')').map_or("", |(_, after)| after);
            format!("{words}{after}")
        }
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Layer(&'static str, Option<Box<Layer>>);

    impl fmt::Display for Layer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Layer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|l| l as &(dyn std::error::Error + 'static))
        }
    }

    #[test]
    fn statuses_mean_the_same_for_every_client() {
        let table = [
            (404, Kind::NotFound),
            (409, Kind::Conflict),
            (401, Kind::Unauthorized),
            (403, Kind::Unauthorized),
            (408, Kind::Transient),
            (429, Kind::Transient),
            (500, Kind::Transient),
            (503, Kind::Transient),
            (400, Kind::Permanent),
            (405, Kind::Permanent),
            (418, Kind::Permanent),
        ];
        for (code, kind) in table {
            assert_eq!(kind_of_status(code), kind, "{code}");
            assert_eq!(kind.retryable(), kind == Kind::Transient, "{code}");
        }
    }

    #[test]
    fn labels_are_stable() {
        let all = [Kind::NotFound, Kind::Conflict, Kind::Unauthorized, Kind::Transient, Kind::Permanent];
        let labels: Vec<&str> = all.iter().map(|k| k.as_str()).collect();
        assert_eq!(labels, ["not_found", "conflict", "unauthorized", "transient", "permanent"]);
    }

    #[test]
    fn the_chain_keeps_every_layer_once_and_no_url() {
        let e = Layer(
            "error sending request for url (https://r.example/v2/?secret=1)",
            Some(Box::new(Layer(
                "client error (Connect)",
                Some(Box::new(Layer("tcp connect error", Some(Box::new(Layer("Connection refused", None)))))),
            ))),
        );
        assert_eq!(
            source_chain(&e),
            "error sending request: client error (Connect): tcp connect error: Connection refused"
        );
        let repeated = Layer("exec plugin failed: no such file", Some(Box::new(Layer("no such file", None))));
        assert_eq!(source_chain(&repeated), "exec plugin failed: no such file");
    }
}

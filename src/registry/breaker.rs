//! One pass's breaker for one registry host: closed while the host answers; open for the rest
//! of the pass once the host has stopped answering.
//!
//! What opens it: a request to the host that got nothing within its time limit (including a
//! wait for the next bytes of a blob being copied from it) while the host answered nothing else
//! — a host that answers other requests meanwhile is slow, not gone, and the request is retried
//! as usual — or [`FAILED_CONNECTS`] connections in a row that could not be made (refused, no
//! route, a name that does not resolve), counted across all the pass's requests, fewer when
//! `--retries` lets a request try fewer times. Any answer resets that count; errors the host
//! sends, such as 5xx or 429, are answers too and leave the breaker closed. An open breaker
//! never closes again; the next pass starts with a new one (`RegistryClient::for_pass`).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use tokio::sync::watch;
use tokio::time::Instant;

use super::error::{RegistryError, Silence};

/// Connections in a row that could not be made, after which a host counts as down: with the
/// default backoff, about a second of refusals.
pub(super) const FAILED_CONNECTS: u32 = 3;

pub(super) struct Breaker {
    /// Why the host is no longer asked, once it is not.
    open: watch::Sender<Option<String>>,
    /// Connections that could not be made since the host last answered.
    failed_connects: AtomicU32,
    /// How many failed connections in a row open the breaker.
    threshold: u32,
    /// When the host last answered a request.
    last_answer: Mutex<Option<Instant>>,
}

impl Breaker {
    /// A closed breaker for a pass whose requests are each tried up to `tries` times.
    pub(super) fn new(tries: u32) -> Breaker {
        let threshold = tries.clamp(1, FAILED_CONNECTS);
        Breaker {
            open: watch::Sender::new(None),
            failed_connects: AtomicU32::new(0),
            threshold,
            last_answer: Mutex::new(None),
        }
    }

    /// Why the host is no longer asked in this pass, or `None` while it is.
    pub(super) fn reason(&self) -> Option<String> {
        self.open.borrow().clone()
    }

    /// Resolves, with the reason, once the breaker is open.
    pub(super) async fn opened(&self) -> String {
        let mut watcher = self.open.subscribe();
        let reason = watcher.wait_for(Option::is_some).await.ok().and_then(|reason| reason.clone());
        match reason {
            Some(reason) => reason,
            // The sender lives as long as `self`, which this future borrows.
            None => std::future::pending().await,
        }
    }

    /// The host answered (successfully or not): failed connections no longer count.
    pub(super) fn answered(&self) {
        self.failed_connects.store(0, Ordering::Relaxed);
        *self.last_answer.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Instant::now());
    }

    /// Counts `error` of a request sent at `sent`, whose silence names this breaker's host;
    /// whether the breaker is open now.
    pub(super) fn record(&self, error: &RegistryError, sent: Instant) -> bool {
        let Some(silence) = &error.silence else {
            return false;
        };
        let reason = match silence {
            Silence::TimedOut { .. } => {
                let last = *self.last_answer.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                if last.is_some_and(|answered| answered > sent) {
                    return self.reason().is_some();
                }
                error.message.clone()
            }
            Silence::Unreachable { .. } => {
                let failed = self.failed_connects.fetch_add(1, Ordering::Relaxed).saturating_add(1);
                if failed < self.threshold {
                    return false;
                }
                format!("{}, {failed} times in a row,", error.message)
            }
        };
        self.open.send_if_modified(|state| match state {
            Some(_) => false,
            None => {
                *state = Some(format!("{reason} earlier in this pass; not asked again until the next pass"));
                true
            }
        });
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::ErrorKind;

    fn silent(silence: Silence, message: &str) -> RegistryError {
        RegistryError { silence: Some(silence), ..RegistryError::new(ErrorKind::Transient, "op", message) }
    }

    #[tokio::test]
    async fn a_timeout_opens_it_and_wakes_whoever_waits() {
        let breaker = std::sync::Arc::new(Breaker::new(5));
        let waiting = tokio::spawn({
            let breaker = breaker.clone();
            async move { breaker.opened().await }
        });
        let sent = Instant::now();
        assert!(!breaker.record(&RegistryError::new(ErrorKind::Transient, "op", "r.example answered HTTP 503"), sent));
        assert_eq!(breaker.reason(), None, "an answer, even an error, keeps it closed");
        let timeout = silent(Silence::TimedOut { host: "r.example".into() }, "r.example did not answer within 5s");
        assert!(breaker.record(&timeout, sent));
        let expected = "r.example did not answer within 5s earlier in this pass; not asked again until the next pass";
        assert_eq!(breaker.reason().as_deref(), Some(expected));
        assert_eq!(waiting.await.unwrap(), expected);
        // The first reason stays.
        breaker.record(&silent(Silence::TimedOut { host: "r.example".into() }, "something else"), sent);
        assert_eq!(breaker.reason().as_deref(), Some(expected));
    }

    #[tokio::test(start_paused = true)]
    async fn a_timeout_while_the_host_answers_other_requests_keeps_it_closed() {
        let breaker = Breaker::new(5);
        let sent = Instant::now();
        tokio::time::advance(std::time::Duration::from_secs(1)).await;
        breaker.answered();
        let timeout = silent(Silence::TimedOut { host: "r.example".into() }, "r.example did not answer within 5s");
        assert!(!breaker.record(&timeout, sent), "slow, not gone");
        assert!(breaker.record(&timeout, Instant::now()), "nothing answered since this one was sent");
    }

    #[test]
    fn failed_connections_open_it_only_in_a_row() {
        let breaker = Breaker::new(3);
        let refused = silent(Silence::Unreachable { host: "r.example".into() }, "could not connect to r.example");
        let sent = Instant::now();
        assert!(!breaker.record(&refused, sent));
        assert!(!breaker.record(&refused, sent));
        breaker.answered();
        assert!(!breaker.record(&refused, sent));
        assert!(!breaker.record(&refused, sent));
        assert!(breaker.record(&refused, sent));
        let once = Breaker::new(1);
        assert!(once.record(&refused, sent), "a request tried once opens it at once");
        assert_eq!(
            breaker.reason().as_deref(),
            Some(
                "could not connect to r.example, 3 times in a row, earlier in this pass; not asked again until the \
                 next pass"
            )
        );
    }
}

//! One registry host as every pass shares it: how it is reached (plain HTTP or not, its
//! credentials, read once), and its limits from the Registry document — at most
//! `concurrency` requests in flight and, with `requestsPerSecond`, requests started no closer
//! together than `1 / requestsPerSecond`.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OnceCell, Semaphore};
use tokio::time::Instant;

use super::auth::{self, Credential};
use super::error::{ErrorKind, RegistryError};
use crate::desired::{Credentials, Limits};

/// The longest gap between two requests `requestsPerSecond` may ask for.
const MAX_INTERVAL: Duration = Duration::from_secs(3600);

/// How one registry host is reached.
#[derive(Debug, Clone, Default)]
pub(super) struct HostSettings {
    pub(super) insecure: bool,
    pub(super) credentials: Option<Credentials>,
    pub(super) limits: Limits,
}

pub(super) struct Host {
    pub(super) name: String,
    pub(super) settings: HostSettings,
    pub(super) permits: Arc<Semaphore>,
    /// The gap between request starts, when `requestsPerSecond` is set.
    interval: Option<Duration>,
    /// Earliest start of the next request, when paced.
    next_start: tokio::sync::Mutex<Instant>,
    credential: OnceCell<Result<Credential, String>>,
}

impl Host {
    /// The host `name` within `settings`, or why its limits cannot be kept.
    pub(super) fn new(name: &str, settings: HostSettings) -> Result<Host, String> {
        let interval = match settings.limits.requests_per_second {
            None => None,
            Some(rps) => Some(interval(rps).ok_or_else(|| {
                format!(
                    "requestsPerSecond {rps:?} of Registry {name} asks for more than {} between requests; use at \
                     least {:.6} (one request an hour), or leave it out for no limit",
                    humantime::format_duration(MAX_INTERVAL),
                    1.0 / MAX_INTERVAL.as_secs_f64()
                )
            })?),
        };
        Ok(Host::with_interval(name, settings, interval))
    }

    /// A host no Registry document describes: anonymous over HTTPS, with the default limits.
    pub(super) fn undescribed(name: &str) -> Host {
        Host::with_interval(name, HostSettings::default(), None)
    }

    fn with_interval(name: &str, settings: HostSettings, interval: Option<Duration>) -> Host {
        Host {
            name: name.to_string(),
            permits: Arc::new(Semaphore::new(settings.limits.concurrency.max(1) as usize)),
            interval,
            next_start: tokio::sync::Mutex::new(Instant::now()),
            settings,
            credential: OnceCell::new(),
        }
    }

    /// Waits for this request's turn under `requestsPerSecond`.
    pub(super) async fn pace(&self) {
        let Some(interval) = self.interval else {
            return;
        };
        let start = {
            let mut next = self.next_start.lock().await;
            let start = (*next).max(Instant::now());
            *next = start.checked_add(interval).unwrap_or(start);
            start
        };
        tokio::time::sleep_until(start).await;
    }

    /// The host's credentials, read once from its Docker config or helper.
    pub(super) async fn credential(&self) -> Result<Credential, RegistryError> {
        let result = self
            .credential
            .get_or_init(|| async {
                let found = match &self.settings.credentials {
                    None => Ok(Credential::Anonymous),
                    Some(Credentials::DockerConfig(path)) => {
                        auth::from_docker_config(std::path::Path::new(path), &self.name).await
                    }
                    Some(Credentials::Helper(helper)) => auth::from_helper(helper, &self.name).await,
                };
                found.map_err(|e| format!("{e:#}"))
            })
            .await;
        result.clone().map_err(|message| {
            RegistryError::new(ErrorKind::Unauthorized, format!("credentials for {}", self.name), message)
        })
    }
}

/// The gap between request starts for `rps` requests a second, or `None` when that gap is not
/// a positive duration of at most [`MAX_INTERVAL`].
fn interval(rps: f64) -> Option<Duration> {
    if !(rps.is_finite() && rps > 0.0) {
        return None;
    }
    Duration::try_from_secs_f64(1.0 / rps).ok().filter(|gap| *gap <= MAX_INTERVAL)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paced(rps: f64) -> Result<Host, String> {
        let settings = HostSettings {
            limits: Limits { requests_per_second: Some(rps), concurrency: 8 },
            ..HostSettings::default()
        };
        Host::new("r.example", settings)
    }

    #[tokio::test(start_paused = true)]
    async fn requests_are_paced_to_the_rate_limit() {
        let host = paced(10.0).unwrap();
        let start = Instant::now();
        for _ in 0..5 {
            host.pace().await;
        }
        // The first request starts at once, each next one 100 ms later.
        assert_eq!(start.elapsed(), Duration::from_millis(400));
    }

    /// Regression: `requestsPerSecond: 1e-300` made `1 / rps` overflow a `Duration` (a panic).
    #[test]
    fn a_rate_no_registry_means_is_an_error_naming_the_registry() {
        for rps in [1e-300, 1e-6, 0.0, -1.0, f64::NAN, f64::INFINITY] {
            let error = paced(rps).err().unwrap_or_else(|| panic!("{rps} accepted"));
            assert!(error.contains("Registry r.example") && error.contains("use at least 0.000278"), "{error}");
        }
        assert!(paced(1.0 / 3600.0).is_ok());
        assert!(paced(1e300).is_ok(), "as fast as it goes");
    }
}

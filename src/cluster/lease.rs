//! Leader election with a `coordination.k8s.io/v1` Lease, so that of several replicas only
//! one applies changes.
//!
//! Each round a replica reads the Lease and writes it back: created if absent, renewed if it
//! holds it, taken over once the holder's `renewTime + leaseDurationSeconds` has passed.
//! Every write carries the `resourceVersion` it read, so of two replicas writing at once the
//! API server accepts one and answers the other 409 Conflict: that one is a follower this
//! round. The time is passed in; this module reads no clock and never sleeps.
//!
//! Expiry compares the holder's `renewTime` with the reader's clock, so replicas' clocks
//! must agree to well within the lease duration (NTP does). A leader that cannot renew must
//! stop applying before its lease runs out: renew at a fraction of the duration, and treat
//! an error as "not leader this round".

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use tracing::{debug, info};

use super::error::{ClusterError, ErrorKind};

/// The Lease annotation through which a standby asks the leader to sync now.
pub const SYNC_REQUESTED: &str = "lifeboat.dev/sync-requested";

/// Who holds the Lease after a round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Leadership {
    /// This replica holds the Lease until `now` plus the lease duration.
    Leader,
    /// Another replica holds it, or won this round's race. `holder` is `None` when the race
    /// was lost without learning the winner, or when nobody holds it.
    Follower { holder: Option<String> },
}

/// One replica's view of a Lease it contends for.
pub struct LeaseLock {
    api: Api<Lease>,
    namespace: String,
    name: String,
    identity: String,
    duration: Duration,
}

impl LeaseLock {
    /// `identity` must be unique among the replicas (the pod name is); `duration` is how long
    /// a holder that stops renewing keeps the Lease (whole seconds, at least one).
    pub fn new(client: kube::Client, namespace: &str, name: &str, identity: &str, duration: Duration) -> Self {
        LeaseLock {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_string(),
            name: name.to_string(),
            identity: identity.to_string(),
            duration,
        }
    }

    /// One round: create the Lease if absent (holding it), renew it if this replica holds it,
    /// take it over if the holder's `renewTime + leaseDurationSeconds` is past `now` or nobody
    /// holds it, else report who holds it. Losing a race (409) is `Follower`, not an error;
    /// an error means the API server could not be asked and nobody should act on it as leader.
    pub async fn try_acquire_or_renew(&self, now: chrono::DateTime<chrono::Utc>) -> Result<Leadership, ClusterError> {
        let now = micro_time(now);
        let current = self.api.get_opt(&self.name).await.map_err(|e| self.error("reading", &e))?;
        let Some(mut lease) = current else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    namespace: Some(self.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(self.held_spec(&now, 0)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => {
                    info!(lease = %self.key(), identity = %self.identity, "created the lease, holding it");
                    Ok(Leadership::Leader)
                }
                Err(e) => self.lost_race("creating", &e),
            };
        };

        let spec = lease.spec.take().unwrap_or_default();
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let transitions = spec.lease_transitions.unwrap_or(0);
        if holder.as_deref() == Some(self.identity.as_str()) {
            lease.spec = Some(LeaseSpec {
                renew_time: Some(now),
                lease_duration_seconds: Some(duration_seconds(self.duration)),
                ..spec
            });
            return match self.api.replace(&self.name, &PostParams::default(), &lease).await {
                Ok(_) => {
                    debug!(lease = %self.key(), identity = %self.identity, "renewed the lease");
                    Ok(Leadership::Leader)
                }
                Err(e) => self.lost_race("renewing", &e),
            };
        }
        if holder.is_some() && !expired(&spec, &now, self.duration) {
            debug!(lease = %self.key(), holder = holder.as_deref().unwrap_or_default(), "another replica holds the lease");
            return Ok(Leadership::Follower { holder });
        }

        lease.spec = Some(self.held_spec(&now, transitions.saturating_add(1)));
        match self.api.replace(&self.name, &PostParams::default(), &lease).await {
            Ok(_) => {
                info!(
                    lease = %self.key(),
                    identity = %self.identity,
                    previous = holder.as_deref().unwrap_or_default(),
                    "took over the lease"
                );
                Ok(Leadership::Leader)
            }
            Err(e) => self.lost_race("taking over", &e),
        }
    }

    /// Gives the Lease up if this replica holds it, by clearing `holderIdentity`, so that a
    /// standby takes over on its next round instead of waiting for the lease to expire. Does
    /// nothing when another replica holds it or it does not exist.
    pub async fn release(&self) -> Result<(), ClusterError> {
        let Some(mut lease) = self.api.get_opt(&self.name).await.map_err(|e| self.error("reading", &e))? else {
            return Ok(());
        };
        let Some(spec) = lease.spec.as_mut() else { return Ok(()) };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        match self.api.replace(&self.name, &PostParams::default(), &lease).await {
            Ok(_) => {
                info!(lease = %self.key(), identity = %self.identity, "released the lease");
                Ok(())
            }
            // Changed since it was read: another replica took it over, so it is not ours to give.
            Err(kube::Error::Api(status)) if status.is_conflict() => Ok(()),
            Err(e) => Err(self.error("releasing", &e)),
        }
    }

    /// Asks the holder to sync now: a replica that is not the leader got a trigger or webhook
    /// and records it on the Lease (annotation [`SYNC_REQUESTED`]: microseconds since the
    /// epoch, then ` all` when every set should run), which the leader reads each round.
    /// Retries a few times on a concurrent write.
    pub async fn request_sync(&self, now: chrono::DateTime<chrono::Utc>, all: bool) -> Result<(), ClusterError> {
        let value = format!("{}{}", now.timestamp_micros(), if all { " all" } else { "" });
        for _ in 0..4 {
            let Some(mut lease) = self.api.get_opt(&self.name).await.map_err(|e| self.error("reading", &e))? else {
                return Ok(());
            };
            lease
                .metadata
                .annotations
                .get_or_insert_with(Default::default)
                .insert(SYNC_REQUESTED.into(), value.clone());
            match self.api.replace(&self.name, &PostParams::default(), &lease).await {
                Ok(_) => return Ok(()),
                Err(kube::Error::Api(status)) if status.is_conflict() => continue,
                Err(e) => return Err(self.error("requesting a sync through", &e)),
            }
        }
        Err(ClusterError::new(
            ErrorKind::Conflict,
            format!("requesting a sync through lease {}", self.key()),
            "the lease kept changing",
        ))
    }

    /// When a replica last asked the holder to sync ([`LeaseLock::request_sync`]), and
    /// whether every set should run.
    pub async fn sync_requested(&self) -> Result<Option<(chrono::DateTime<chrono::Utc>, bool)>, ClusterError> {
        let lease = self.api.get_opt(&self.name).await.map_err(|e| self.error("reading", &e))?;
        let value = lease.and_then(|l| l.metadata.annotations).and_then(|a| a.get(SYNC_REQUESTED).cloned());
        Ok(value.and_then(|v| {
            let (micros, rest) = v.split_once(' ').unwrap_or((v.as_str(), ""));
            let at = chrono::DateTime::from_timestamp_micros(micros.parse().ok()?)?;
            Some((at, rest == "all"))
        }))
    }

    /// The spec of a Lease this replica holds from `now` on.
    fn held_spec(&self, now: &MicroTime, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(duration_seconds(self.duration)),
            acquire_time: Some(now.clone()),
            renew_time: Some(now.clone()),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    /// A write refused because another replica wrote first is a lost race; anything else is
    /// an error.
    fn lost_race(&self, operation: &str, e: &kube::Error) -> Result<Leadership, ClusterError> {
        let error = self.error(operation, e);
        if error.kind == ErrorKind::Conflict {
            debug!(lease = %self.key(), identity = %self.identity, operation, "another replica wrote the lease first");
            Ok(Leadership::Follower { holder: None })
        } else {
            Err(error)
        }
    }

    fn error(&self, operation: &str, e: &kube::Error) -> ClusterError {
        ClusterError::from_kube(format!("{operation} lease {}", self.key()), e)
    }

    fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// Whether the holder's term is over: `renewTime + leaseDurationSeconds` is not after `now`.
/// A Lease that never says when it was renewed has expired; one that does not say for how
/// long counts with this replica's own duration.
fn expired(spec: &LeaseSpec, now: &MicroTime, own_duration: Duration) -> bool {
    let Some(renewed) = &spec.renew_time else { return true };
    let seconds = spec.lease_duration_seconds.map_or_else(|| i64::from(duration_seconds(own_duration)), i64::from);
    let end = renewed.0.as_microsecond().saturating_add(seconds.saturating_mul(1_000_000));
    end <= now.0.as_microsecond()
}

fn duration_seconds(duration: Duration) -> i32 {
    i32::try_from(duration.as_secs()).unwrap_or(i32::MAX).max(1)
}

/// The Lease's own precision is the microsecond.
fn micro_time(time: chrono::DateTime<chrono::Utc>) -> MicroTime {
    // Only years beyond jiff's ±9999 fail to convert.
    MicroTime(Timestamp::from_microsecond(time.timestamp_micros()).unwrap_or(Timestamp::MAX))
}

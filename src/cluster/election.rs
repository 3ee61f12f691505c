//! Leader election for `lifeboat run` with several replicas: a task renews the Lease and the
//! control loop asks whether this replica leads before it starts a sync.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

use super::lease::{Leadership, LeaseLock};

/// How long a Lease is held without renewal; it is renewed three times as often.
const LEASE: Duration = Duration::from_secs(15);

pub struct Election {
    leader: Arc<AtomicBool>,
    /// When the Lease was last renewed: leading only counts while that is recent.
    renewed: Arc<std::sync::Mutex<Option<tokio::time::Instant>>>,
    stop: Arc<Notify>,
    requests: tokio::sync::mpsc::UnboundedSender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Election {
    /// Starts competing for the Lease `name` in `namespace`, as POD_NAME (from the downward
    /// API; else the host name). `wake` is notified when this replica leads and another one
    /// asked for a sync (with `sync_all` set when every set should run).
    pub async fn start(
        name: &str,
        namespace: &str,
        wake: Arc<Notify>,
        sync_all: Arc<AtomicBool>,
    ) -> anyhow::Result<Election> {
        let client = super::in_cluster_client().await?;
        let identity = std::env::var("POD_NAME")
            .or_else(|_| std::env::var("HOSTNAME"))
            .unwrap_or_else(|_| format!("lifeboat-{}", std::process::id()));
        Ok(Election::with_lock(LeaseLock::new(client, namespace, name, &identity, LEASE), wake, sync_all))
    }

    /// Competes with `lock`, renewing every third of the Lease's duration.
    pub fn with_lock(lock: LeaseLock, wake: Arc<Notify>, sync_all: Arc<AtomicBool>) -> Election {
        let leader = Arc::new(AtomicBool::new(false));
        let renewed = Arc::new(std::sync::Mutex::new(None));
        let stop = Arc::new(Notify::new());
        let (requests, mut incoming) = tokio::sync::mpsc::unbounded_channel::<bool>();
        let task = {
            let (leader, stop, renewed) = (leader.clone(), stop.clone(), renewed.clone());
            tokio::spawn(async move {
                let mut last_renewal: Option<tokio::time::Instant> = None;
                // Requests older than this replica's start were for an earlier leader.
                let mut seen = chrono::Utc::now();
                loop {
                    // An API server that hangs must not keep this replica leading: a round that
                    // does not finish in time counts as a failed renewal.
                    let round = tokio::time::timeout(LEASE / 3, lock.try_acquire_or_renew(chrono::Utc::now()))
                        .await
                        .unwrap_or_else(|_| {
                            Err(super::ClusterError::new(
                                super::ErrorKind::Transient,
                                "renewing the lease",
                                "the API server did not answer in time",
                            ))
                        });
                    match round {
                        Ok(Leadership::Leader) => {
                            if !leader.swap(true, Ordering::SeqCst) {
                                tracing::info!("this replica now holds the Lease and applies");
                            }
                            last_renewal = Some(tokio::time::Instant::now());
                            *renewed.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = last_renewal;
                            if let Ok(Ok(Some((at, all)))) =
                                tokio::time::timeout(LEASE / 3, lock.sync_requested()).await
                                && at > seen
                            {
                                seen = at;
                                tracing::info!(all, "another replica received a sync request");
                                if all {
                                    sync_all.store(true, Ordering::SeqCst);
                                }
                                wake.notify_one();
                            }
                        }
                        Ok(Leadership::Follower { holder }) => {
                            if leader.swap(false, Ordering::SeqCst) {
                                tracing::warn!(
                                    holder = holder.as_deref().unwrap_or("-"),
                                    "the Lease moved to another replica"
                                );
                            }
                        }
                        Err(e) => {
                            // Keep leading only while the Lease we last renewed is surely ours.
                            let still = last_renewal.is_some_and(|t| t.elapsed() < LEASE * 2 / 3);
                            if leader.swap(still, Ordering::SeqCst) && !still {
                                tracing::error!(error = %e, "could not renew the Lease; not applying until it is renewed");
                            }
                        }
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(LEASE / 3) => {}
                        Some(all) = incoming.recv() => {
                            if !leader.load(Ordering::SeqCst)
                                && let Err(e) = lock.request_sync(chrono::Utc::now(), all).await
                            {
                                tracing::warn!(error = %e, "could not pass the sync request to the leader");
                            }
                        }
                        _ = stop.notified() => break,
                    }
                }
                if leader.swap(false, Ordering::SeqCst) {
                    match tokio::time::timeout(LEASE / 3, lock.release()).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => tracing::warn!(error = %e, "could not release the Lease; it expires by itself"),
                        Err(_) => tracing::warn!("releasing the Lease took too long; it expires by itself"),
                    }
                }
            })
        };
        Election { leader, renewed, stop, requests, task }
    }

    /// A trigger (`all`: every set runs) or webhook reached this replica: when it does not
    /// lead, pass the request on to the leader through the Lease (within a round, about 5 s).
    pub fn forward_sync_request(&self, all: bool) {
        if !self.is_leader() {
            let _ = self.requests.send(all);
        }
    }

    /// Leading: the Lease is ours and was renewed within two thirds of its duration, so no
    /// standby can have taken it over yet.
    pub fn is_leader(&self) -> bool {
        let recent = self
            .renewed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_some_and(|t| t.elapsed() < LEASE * 2 / 3);
        recent && self.leader.load(Ordering::SeqCst)
    }

    /// Stops renewing and gives the Lease up, so a standby takes over at once.
    pub async fn stop(self) {
        self.stop.notify_one();
        let abort = self.task.abort_handle();
        if tokio::time::timeout(LEASE / 2, self.task).await.is_err() {
            abort.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::fake::FakeApiServer;

    /// Polls in (paused) tokio time until `check` holds, for at most a minute of it.
    async fn eventually(what: &str, check: impl Fn() -> bool) {
        for _ in 0..600 {
            if check() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{what} did not happen within a minute");
    }

    #[tokio::test(start_paused = true)]
    async fn one_replica_leads_and_a_standby_takes_over_when_it_stops() {
        let api = FakeApiServer::new();
        let lock = |who: &str| LeaseLock::new(api.client(), "lifeboat", "lifeboat", who, LEASE);
        let woken = Arc::new(Notify::new());
        let all = Arc::new(AtomicBool::new(false));
        let first = Election::with_lock(lock("replica-a"), woken.clone(), all.clone());
        eventually("replica-a leading", || first.is_leader()).await;
        let second = Election::with_lock(lock("replica-b"), Arc::new(Notify::new()), Arc::new(AtomicBool::new(false)));
        tokio::time::sleep(LEASE).await;
        assert!(first.is_leader() && !second.is_leader(), "only one replica leads");
        // A webhook reaching the standby wakes the leader.
        second.forward_sync_request(true);
        tokio::time::timeout(LEASE, woken.notified()).await.expect("the leader is asked to sync");
        assert!(all.load(Ordering::SeqCst), "a trigger on the standby syncs every set on the leader");
        first.stop().await;
        eventually("replica-b taking over after the release", || second.is_leader()).await;
        second.stop().await;
    }
}

//! Leader election against the in-memory API server: time is passed in, nothing sleeps.

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;

use super::fake::{FakeApiServer, Outage};
use super::{ErrorKind, Leadership, LeaseLock};

const NAMESPACE: &str = "lifeboat";
const NAME: &str = "lifeboat-leader";
const DURATION: Duration = Duration::from_secs(15);

/// `seconds` after a fixed instant.
fn at(seconds: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_700_000_000 + seconds, 0).single().expect("a valid instant")
}

fn lock(server: &FakeApiServer, identity: &str) -> LeaseLock {
    LeaseLock::new(server.client(), NAMESPACE, NAME, identity, DURATION)
}

fn stored(server: &FakeApiServer) -> Lease {
    server.object::<Lease>(Some(NAMESPACE), NAME).expect("the lease exists")
}

fn spec(server: &FakeApiServer) -> LeaseSpec {
    stored(server).spec.expect("the lease has a spec")
}

fn version(server: &FakeApiServer) -> String {
    stored(server).metadata.resource_version.expect("a stored object has a resourceVersion")
}

fn follower(holder: &str) -> Leadership {
    Leadership::Follower { holder: Some(holder.to_string()) }
}

fn seconds(time: DateTime<Utc>) -> i64 {
    time.timestamp()
}

fn renewed_at(server: &FakeApiServer) -> i64 {
    spec(server).renew_time.expect("renewTime is set").0.as_second()
}

fn acquired_at(server: &FakeApiServer) -> i64 {
    spec(server).acquire_time.expect("acquireTime is set").0.as_second()
}

#[tokio::test]
async fn the_first_replica_creates_the_lease_and_holds_it() {
    let server = FakeApiServer::new();
    assert_eq!(lock(&server, "pod-a").try_acquire_or_renew(at(0)).await.unwrap(), Leadership::Leader);

    let spec = spec(&server);
    assert_eq!(spec.holder_identity.as_deref(), Some("pod-a"));
    assert_eq!(spec.lease_duration_seconds, Some(15));
    assert_eq!(spec.lease_transitions, Some(0));
    assert_eq!(acquired_at(&server), seconds(at(0)));
    assert_eq!(renewed_at(&server), seconds(at(0)));
}

#[tokio::test]
async fn the_holder_renews_keeping_its_acquire_time() {
    let server = FakeApiServer::new();
    let a = lock(&server, "pod-a");
    a.try_acquire_or_renew(at(0)).await.unwrap();
    let before = version(&server);

    assert_eq!(a.try_acquire_or_renew(at(5)).await.unwrap(), Leadership::Leader);
    assert_ne!(version(&server), before, "a renewal writes the lease");
    assert_eq!(renewed_at(&server), seconds(at(5)));
    assert_eq!(acquired_at(&server), seconds(at(0)));
    assert_eq!(spec(&server).lease_transitions, Some(0));

    // A holder whose own lease ran out (a long pause) still renews it while nobody took it.
    assert_eq!(a.try_acquire_or_renew(at(60)).await.unwrap(), Leadership::Leader);
    assert_eq!(spec(&server).lease_transitions, Some(0));
}

#[tokio::test]
async fn another_replica_follows_while_the_lease_is_fresh_and_takes_over_once_it_expires() {
    let server = FakeApiServer::new();
    let a = lock(&server, "pod-a");
    let b = lock(&server, "pod-b");
    a.try_acquire_or_renew(at(0)).await.unwrap();
    let held = version(&server);

    assert_eq!(b.try_acquire_or_renew(at(5)).await.unwrap(), follower("pod-a"));
    assert_eq!(b.try_acquire_or_renew(at(14)).await.unwrap(), follower("pod-a"));
    assert_eq!(version(&server), held, "a follower does not write");

    // renewTime + leaseDurationSeconds = 15 s: the lease is over at 15 s, not after.
    assert_eq!(b.try_acquire_or_renew(at(15)).await.unwrap(), Leadership::Leader);
    let taken = spec(&server);
    assert_eq!(taken.holder_identity.as_deref(), Some("pod-b"));
    assert_eq!(taken.lease_transitions, Some(1));
    assert_eq!(acquired_at(&server), seconds(at(15)));

    // The former holder comes back and finds it taken.
    assert_eq!(a.try_acquire_or_renew(at(16)).await.unwrap(), follower("pod-b"));
    assert_eq!(a.try_acquire_or_renew(at(31)).await.unwrap(), Leadership::Leader);
    assert_eq!(spec(&server).lease_transitions, Some(2));
}

#[tokio::test]
async fn the_holders_own_duration_decides_expiry() {
    // A holder that asked for 60 s keeps the lease past this replica's 15 s.
    let server = FakeApiServer::new();
    LeaseLock::new(server.client(), NAMESPACE, NAME, "pod-a", Duration::from_secs(60))
        .try_acquire_or_renew(at(0))
        .await
        .unwrap();
    let b = lock(&server, "pod-b");
    assert_eq!(b.try_acquire_or_renew(at(30)).await.unwrap(), follower("pod-a"));
    assert_eq!(b.try_acquire_or_renew(at(60)).await.unwrap(), Leadership::Leader);
    assert_eq!(spec(&server).lease_duration_seconds, Some(15));
}

#[tokio::test]
async fn a_lease_without_holder_or_renew_time_is_free() {
    let server = FakeApiServer::new();
    let b = lock(&server, "pod-b");
    let lease = |spec| Lease {
        metadata: ObjectMeta {
            name: Some(NAME.to_string()),
            namespace: Some(NAMESPACE.to_string()),
            ..ObjectMeta::default()
        },
        spec: Some(spec),
    };

    // Another implementation may release by writing an empty holder.
    server.insert(&lease(LeaseSpec {
        holder_identity: Some(String::new()),
        renew_time: Some(MicroTime(Timestamp::from_second(seconds(at(0))).unwrap())),
        lease_duration_seconds: Some(15),
        lease_transitions: Some(4),
        ..LeaseSpec::default()
    }));
    assert_eq!(b.try_acquire_or_renew(at(1)).await.unwrap(), Leadership::Leader);
    assert_eq!(spec(&server).lease_transitions, Some(5));

    server.insert(&lease(LeaseSpec { holder_identity: Some("pod-a".to_string()), ..LeaseSpec::default() }));
    assert_eq!(b.try_acquire_or_renew(at(2)).await.unwrap(), Leadership::Leader);
    assert_eq!(spec(&server).lease_transitions, Some(1));
}

#[tokio::test]
async fn two_replicas_racing_to_create_the_lease_make_one_leader() {
    let server = FakeApiServer::new();
    let (a, b) = (lock(&server, "pod-a"), lock(&server, "pod-b"));
    server.hold_next_writes(2);

    let (ra, rb) = tokio::join!(a.try_acquire_or_renew(at(0)), b.try_acquire_or_renew(at(0)));
    let winner = exactly_one_leader(ra.unwrap(), rb.unwrap());
    assert_eq!(spec(&server).holder_identity.as_deref(), Some(winner));
    assert_eq!(spec(&server).lease_transitions, Some(0));
}

#[tokio::test]
async fn two_replicas_racing_to_take_over_an_expired_lease_make_one_leader() {
    // Both read the same resourceVersion; the API server takes the first write and answers
    // the second 409 Conflict, which is a lost race, not an error.
    let server = FakeApiServer::new();
    lock(&server, "pod-old").try_acquire_or_renew(at(0)).await.unwrap();
    let (a, b) = (lock(&server, "pod-a"), lock(&server, "pod-b"));
    server.hold_next_writes(2);

    let (ra, rb) = tokio::join!(a.try_acquire_or_renew(at(20)), b.try_acquire_or_renew(at(20)));
    let winner = exactly_one_leader(ra.unwrap(), rb.unwrap());
    assert_eq!(spec(&server).holder_identity.as_deref(), Some(winner));
    assert_eq!(spec(&server).lease_transitions, Some(1));

    // Next round the loser sees the winner.
    let loser = if winner == "pod-a" { &b } else { &a };
    assert_eq!(loser.try_acquire_or_renew(at(21)).await.unwrap(), follower(winner));
}

#[tokio::test]
async fn a_holder_renewing_while_another_takes_over_loses_cleanly() {
    // The holder paused past its term and renews at the moment a standby takes over.
    let server = FakeApiServer::new();
    let (a, b) = (lock(&server, "pod-a"), lock(&server, "pod-b"));
    a.try_acquire_or_renew(at(0)).await.unwrap();
    server.hold_next_writes(2);

    let (ra, rb) = tokio::join!(a.try_acquire_or_renew(at(20)), b.try_acquire_or_renew(at(20)));
    let winner = exactly_one_leader(ra.unwrap(), rb.unwrap());
    assert_eq!(spec(&server).holder_identity.as_deref(), Some(winner));
}

/// The identity of the one leader among two results.
fn exactly_one_leader(a: Leadership, b: Leadership) -> &'static str {
    match (a, b) {
        (Leadership::Leader, Leadership::Follower { holder: None }) => "pod-a",
        (Leadership::Follower { holder: None }, Leadership::Leader) => "pod-b",
        other => panic!("expected exactly one leader, got {other:?}"),
    }
}

#[tokio::test]
async fn release_lets_a_standby_take_over_at_once() {
    let server = FakeApiServer::new();
    let (a, b) = (lock(&server, "pod-a"), lock(&server, "pod-b"));
    a.try_acquire_or_renew(at(0)).await.unwrap();
    assert_eq!(b.try_acquire_or_renew(at(1)).await.unwrap(), follower("pod-a"));

    a.release().await.unwrap();
    assert_eq!(spec(&server).holder_identity, None);
    assert_eq!(b.try_acquire_or_renew(at(2)).await.unwrap(), Leadership::Leader, "no wait for expiry");
    assert_eq!(spec(&server).lease_transitions, Some(1));
}

#[tokio::test]
async fn release_leaves_a_lease_it_does_not_hold_alone() {
    let server = FakeApiServer::new();
    let (a, b) = (lock(&server, "pod-a"), lock(&server, "pod-b"));
    b.release().await.unwrap();
    assert!(server.object::<Lease>(Some(NAMESPACE), NAME).is_none(), "release creates nothing");

    a.try_acquire_or_renew(at(0)).await.unwrap();
    let held = version(&server);
    b.release().await.unwrap();
    assert_eq!(version(&server), held);
    assert_eq!(spec(&server).holder_identity.as_deref(), Some("pod-a"));
}

#[tokio::test]
async fn an_unreachable_api_server_is_an_error_to_report_not_a_panic() {
    let server = FakeApiServer::new();
    let a = lock(&server, "pod-a");
    a.try_acquire_or_renew(at(0)).await.unwrap();

    server.set_outage(Some(Outage::Unavailable));
    let e = a.try_acquire_or_renew(at(5)).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Transient);
    assert_eq!(
        e.to_string(),
        "reading lease lifeboat/lifeboat-leader: the API server answered 503: the server is currently unable to handle the request"
    );
    assert_eq!(a.release().await.unwrap_err().kind, ErrorKind::Transient);

    server.set_outage(Some(Outage::Unreachable));
    let e = a.try_acquire_or_renew(at(5)).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Transient);
    assert!(
        e.to_string().starts_with("reading lease lifeboat/lifeboat-leader: could not reach the API server: "),
        "{e}"
    );
    assert!(e.to_string().contains("connection refused"), "{e}");

    server.set_outage(None);
    assert_eq!(a.try_acquire_or_renew(at(6)).await.unwrap(), Leadership::Leader);
}

#[tokio::test]
async fn without_a_cluster_the_client_error_says_where_it_looked() {
    // Only meaningful where no cluster is configured.
    let configured = ["KUBECONFIG", "KUBERNETES_SERVICE_HOST"].iter().any(|v| std::env::var_os(v).is_some())
        || std::env::var_os("HOME").is_some_and(|home| std::path::Path::new(&home).join(".kube/config").exists());
    if configured {
        eprintln!("skipped: this environment has a Kubernetes configuration");
        return;
    }
    let Err(e) = super::in_cluster_client().await else { panic!("a client without a cluster") };
    let text = format!("{e:#}");
    assert!(text.starts_with("finding a Kubernetes cluster: Lifeboat needs a kubeconfig"), "{text}");
    assert!(text.contains("in-cluster") && text.contains(".kube/config"), "{text}");
}

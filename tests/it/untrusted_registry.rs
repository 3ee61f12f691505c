//! What a registry sends is input like any other: a damaged or hostile answer is a clear error
//! naming the registry and what it sent — never a panic, an endless loop or an unbounded read —
//! and an error names the peer that failed, not the one Lifeboat happened to be talking to.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::mirror::{World, rt};
use crate::support::images::{Pusher, digest_of, layer};
use crate::support::lifeboat;
use crate::support::proxy::{Action, FaultProxy, Rule};
use crate::support::registry::{Options, TestRegistry};
use crate::support::token::TokenServer;

/// A tag page listing `1.0` with the given `Link` header.
fn tag_page(link: &str) -> Vec<u8> {
    let body = r#"{"name":"app","tags":["1.0"]}"#;
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nLink: {link}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// `lifeboat plan` of `UP/app` by tag rules (so the tag list is read) through `up`.
fn plan_tag_rules(world: &World, up: &str) -> (i32, Value, String) {
    world.desired_via(up, "  images:\n    - source: UP/app\n      tagRules: {semver: \">=1\"}\n");
    world.run("plan", &[])
}

/// The notes of `plan -o json`.
fn notes(plan: &Value) -> String {
    plan["notes"].to_string()
}

/// Regression: `Link: ><; rel="next"` on a tag page sliced a string with its start past its end
/// and panicked.
#[test]
fn a_tag_page_with_an_unreadable_link_is_an_error_not_a_panic() {
    let world = World::new();
    rt().block_on(world.up().image("app", Some("1.0"), &[layer(2000, 1024)], "linux/amd64"));
    let proxy = FaultProxy::with_rules(
        &world.upstream.host,
        vec![Rule::new("GET /v2/app/tags/list", Action::Answer(tag_page(r#"><; rel="next""#)))],
    );
    let (code, plan, stderr) = plan_tag_rules(&world, &proxy.host);
    assert_eq!(code, 2, "{plan:#}\n{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let notes = notes(&plan);
    assert!(notes.contains(&format!("{} sent a Link header Lifeboat cannot read", proxy.host)), "{notes}");
}

/// Regression: a tag page whose `Link` leads back to itself (or is `<>`) was followed forever,
/// about 1,450 requests a minute. Now the repeat is seen before it is asked for again.
#[test]
fn a_tag_page_that_links_to_itself_is_read_once() {
    let world = World::new();
    rt().block_on(world.up().image("app", Some("1.0"), &[layer(2001, 1024)], "linux/amd64"));
    for (link, words) in [
        (r#"</v2/app/tags/list?n=1000>; rel="next""#, "a next-page link back to a page already read"),
        (r#"<>; rel="next""#, "whose next-page link is empty"),
    ] {
        let proxy = FaultProxy::with_rules(
            &world.upstream.host,
            vec![Rule::new("GET /v2/app/tags/list", Action::Answer(tag_page(link)))],
        );
        let start = Instant::now();
        let (code, plan, stderr) = plan_tag_rules(&world, &proxy.host);
        assert!(start.elapsed() < Duration::from_secs(20), "{:?}", start.elapsed());
        assert_eq!(code, 2, "{plan:#}\n{stderr}");
        let notes = notes(&plan);
        assert!(notes.contains(&format!("{} sent a", proxy.host)) && notes.contains(words), "{link}: {notes}");
        // One listing, and at most a second one for the signature tags to carry.
        assert!(proxy.matched("/tags/list") <= 2, "{link}: {} tag pages asked for", proxy.matched("/tags/list"));
    }
}

/// Regression: a manifest was read whole with no limit (a 1 GiB manifest cost 2.1 GB of
/// memory). One announced larger than 4 MiB is refused before any of it is read, one without a
/// length once 4 MiB have come.
#[test]
fn a_manifest_over_four_mib_is_refused_before_it_is_read() {
    let world = World::new();
    rt().block_on(world.up().image("app", Some("1.0"), &[layer(2002, 1024)], "linux/amd64"));
    let announced = b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nContent-Length: 1073741824\r\nConnection: close\r\n\r\n".to_vec();
    let mut chunked = b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
    let piece = vec![b' '; 64 << 10];
    for _ in 0..80 {
        chunked.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        chunked.extend_from_slice(&piece);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    for (response, size) in [(announced, "of 1.0 GiB"), (chunked, "of more than 4.0 MiB")] {
        // The lookup (HEAD) is answered by the registry; reading the manifest to copy it is not.
        let proxy = FaultProxy::with_rules(
            &world.upstream.host,
            vec![Rule::new("GET /v2/app/manifests/", Action::Answer(response))],
        );
        world.desired_via(&proxy.host, "  images:\n    - source: UP/app\n      tags: [\"1.0\"]\n");
        let (code, applied, stderr) = world.run("apply", &[]);
        assert_eq!(code, 2, "{applied:#}\n{stderr}");
        let error = applied["outcomes"][0]["error"].as_str().unwrap_or_default().to_string();
        let expected = format!("{} sent a manifest {size}, more than the 4.0 MiB Lifeboat reads", proxy.host);
        assert!(error.contains(&expected), "{error}\n{applied:#}");
        assert_eq!(rt().block_on(world.mir().digest("mirror/app", "1.0")), None);
    }
}

/// Regression: a token service that could not be reached, or answered 503, was reported as the
/// registry refusing the credentials. The error names the token service and what it did.
#[test]
fn a_failing_token_service_is_named_and_not_taken_for_refused_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = TokenServer::start(dir.path(), "robot", "s3cret");
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let busy = FaultProxy::start(tokens.realm.trim_start_matches("http://").trim_end_matches("/token"), 1000, 503);
    for (realm, words) in [
        (format!("http://{closed}/token"), format!("could not connect to the token service {closed} of")),
        (format!("http://{}/token", busy.host), format!("the token service {} of", busy.host)),
    ] {
        let service =
            TokenServer { realm, root_cert_bundle: tokens.root_cert_bundle.clone(), issued: tokens.issued.clone() };
        let upstream = TestRegistry::start(Options { token: Some(&service), ..Options::default() });
        let mirror = TestRegistry::start(Options::default());
        let desired = tempfile::tempdir().unwrap();
        std::fs::write(
            desired.path().join("d.yaml"),
            format!(
                "apiVersion: lifeboat.dev/v1alpha1\nkind: Registry\nmetadata: {{name: up}}\nspec: {{host: \"{up}\", insecure: true}}\n---\napiVersion: lifeboat.dev/v1alpha1\nkind: Registry\nmetadata: {{name: m}}\nspec: {{host: \"{m}\", insecure: true}}\n---\napiVersion: lifeboat.dev/v1alpha1\nkind: MirrorSet\nmetadata: {{name: s}}\nspec:\n  target: \"{m}/mirror\"\n  images:\n    - source: \"{up}/app\"\n      tags: [\"1.0\"]\n",
                up = upstream.host,
                m = mirror.host
            ),
        )
        .unwrap();
        let run =
            lifeboat(&["plan", desired.path().to_str().unwrap(), "-o", "json", "--timeout", "3s", "--retries", "0"]);
        assert_eq!(run.code, 2, "{}{}", run.stdout, run.stderr);
        assert!(run.stdout.contains(&format!("{words} {}", upstream.host)), "{}", run.stdout);
        if words.contains(&busy.host) {
            assert!(run.stdout.contains("answered HTTP 503"), "{}", run.stdout);
        }
        assert!(!run.stdout.contains("refused the credentials"), "{}", run.stdout);
    }
}

/// Regression: an upstream that stopped sending a blob midway was reported as the mirror
/// failing the upload. The copy names the upstream, and the mirror is not given up on: an image
/// from another upstream still reaches it in the same pass.
#[test]
fn a_stalled_upstream_blob_is_the_upstream_failure() {
    let world = World::new();
    let big = layer(2003, 512 << 10);
    let stalled = digest_of(&big);
    rt().block_on(world.up().image("app", Some("1.0"), std::slice::from_ref(&big), "linux/amd64"));
    let other = TestRegistry::start(Options::default());
    let tool = rt()
        .block_on(Pusher::new(&other.host, None, None).image("tool", Some("1.0"), &[layer(2004, 1024)], "linux/amd64"))
        .0;
    let mut head =
        format!("HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n", big.len())
            .into_bytes();
    head.extend_from_slice(&big[..1000]);
    let proxy = FaultProxy::with_rules(
        &world.upstream.host,
        vec![Rule::new(&format!("GET /v2/app/blobs/{stalled}"), Action::Stall(head))],
    );
    world.desired_via(
        &proxy.host,
        &format!("  images:\n    - source: UP/app\n      tags: [\"1.0\"]\n    - source: \"{}/tool\"\n      tags: [\"1.0\"]\n", other.host),
    );
    std::fs::write(
        world.dir.path().join("other.yaml"),
        format!("apiVersion: lifeboat.dev/v1alpha1\nkind: Registry\nmetadata: {{name: other}}\nspec: {{host: \"{}\", insecure: true}}\n", other.host),
    )
    .unwrap();
    let (code, applied, stderr) = world.run("apply", &["--timeout", "2s", "--retries", "1"]);
    assert_eq!(code, 2, "{applied:#}\n{stderr}");
    let outcomes = applied["outcomes"].as_array().unwrap();
    let failed: Vec<&Value> = outcomes.iter().filter(|o| o["outcome"] == "failed").collect();
    assert_eq!(failed.len(), 1, "{applied:#}");
    let error = failed[0]["error"].as_str().unwrap();
    assert!(error.contains(&format!("{} stopped sending blob {stalled} after 1000 bytes", proxy.host)), "{error}");
    assert!(!error.contains(&world.mirror.host), "the mirror did nothing wrong: {error}");
    assert_eq!(
        rt().block_on(world.mir().digest("mirror/tool", "1.0")),
        Some(tool),
        "the mirror still took the other image"
    );
}

/// Regression: `requestsPerSecond: 1e-300` made the pacing interval overflow a `Duration` and
/// panic. It is refused with a message naming the registry or the file, and exit 2.
#[test]
fn a_request_rate_no_registry_means_is_refused_not_a_panic() {
    let world = World::new();
    world.desired("  images:\n    - source: UP/app\n      tags: [\"1.0\"]\n");
    let path = world.dir.path().join("desired.yaml");
    let text = std::fs::read_to_string(&path).unwrap().replacen(
        "  insecure: true\n",
        "  insecure: true\n  limits: {requestsPerSecond: 1e-300}\n",
        1,
    );
    std::fs::write(&path, text).unwrap();
    let run = lifeboat(&["plan", world.dir.path().to_str().unwrap(), "--timeout", "3s"]);
    assert_eq!(run.code, 2, "{}{}", run.stdout, run.stderr);
    let all = format!("{}{}", run.stdout, run.stderr);
    assert!(!all.contains("panicked"), "{all}");
    assert!(all.contains("requestsPerSecond"), "{all}");
    assert!(
        all.contains(&world.upstream.host) || all.contains("desired.yaml"),
        "names the registry or the file: {all}"
    );
}

//! The mirror engine against real Distribution registries: `lifeboat plan` and `apply`.

use serde_json::Value;

use crate::support::images::{Pusher, layer};
use crate::support::lifeboat;
use crate::support::proxy::FaultProxy;
use crate::support::registry::{Options, TestRegistry, Tls};
use crate::support::token::TokenServer;

pub(crate) fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// An upstream and a mirror registry, and a desired-state folder naming both.
pub(crate) struct World {
    pub(crate) upstream: TestRegistry,
    pub(crate) mirror: TestRegistry,
    pub(crate) dir: tempfile::TempDir,
}

impl World {
    pub(crate) fn new() -> World {
        World {
            upstream: TestRegistry::start(Options::default()),
            mirror: TestRegistry::start(Options::default()),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub(crate) fn up(&self) -> Pusher {
        Pusher::new(&self.upstream.host, None, None)
    }

    pub(crate) fn mir(&self) -> Pusher {
        Pusher::new(&self.mirror.host, None, None)
    }

    /// Writes the desired state: both registries over plain HTTP, and `spec` (the MirrorSet
    /// spec lines after `target`, with UP standing for the upstream host).
    pub(crate) fn desired(&self, spec: &str) {
        self.desired_via(&self.upstream.host.clone(), spec);
    }

    /// As `desired`, reaching upstream at `up` (a proxy in front of it).
    pub(crate) fn desired_via(&self, up: &str, spec: &str) {
        let registry = |name: &str, host: &str| {
            format!(
                "apiVersion: lifeboat.dev/v1alpha1\nkind: Registry\nmetadata: {{name: {name}}}\nspec:\n  host: \"{host}\"\n  insecure: true\n---\n"
            )
        };
        let text = format!(
            "{}{}apiVersion: lifeboat.dev/v1alpha1\nkind: MirrorSet\nmetadata: {{name: set}}\nspec:\n  target: \"{}/mirror\"\n{}",
            registry("upstream", up),
            registry("mirror", &self.mirror.host),
            self.mirror.host,
            spec.replace("UP", up)
        );
        std::fs::write(self.dir.path().join("desired.yaml"), text).unwrap();
    }

    pub(crate) fn run(&self, command: &str, extra: &[&str]) -> (i32, Value, String) {
        let dir = self.dir.path().to_str().unwrap();
        let mut args = vec![command, dir, "-o", "json"];
        if !extra.contains(&"--timeout") {
            args.extend_from_slice(&["--timeout", "3s", "--retries", "1"]);
        }
        args.extend_from_slice(extra);
        let run = lifeboat(&args);
        let value = serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {}\n{}", run.stdout, run.stderr));
        (run.code, value, run.stderr)
    }

    pub(crate) fn apply(&self) -> (i32, Value) {
        let (code, value, _) = self.run("apply", &[]);
        (code, value)
    }

    pub(crate) fn plan(&self) -> (i32, Value) {
        let (code, value, _) = self.run("plan", &[]);
        (code, value)
    }
}

pub(crate) fn change_count(plan: &Value) -> usize {
    plan["changes"].as_array().unwrap().len()
}

#[test]
fn full_sync_preserves_digests_and_a_second_pass_transfers_nothing() {
    let world = World::new();
    let base = layer(1, 64 * 1024);
    let (oci_single, index, docker_list) = rt().block_on(async {
        let up = world.up();
        let single = up.image("tools/busybox", Some("1.36"), &[base.clone(), layer(2, 4096)], "linux/amd64").await.0;
        let index = up.index("base/glibc", "2.40", &base, &["linux/amd64", "linux/arm64"], 3).await;
        let list = world.up().docker().index("legacy/app", "1.0", &base, &["linux/amd64", "linux/arm64"], 4).await;
        (single, index, list)
    });
    world.desired(
        "  images:\n    - source: UP/tools/busybox\n      tags: [\"1.36\"]\n    - source: UP/base/glibc\n      tags: [\"2.40\"]\n    - source: UP/legacy/app\n      tags: [\"1.0\"]\n",
    );
    let (code, plan) = world.plan();
    assert_eq!(code, 1, "{plan:#}");
    assert_eq!(change_count(&plan), 3);

    let (code, applied) = world.apply();
    assert_eq!(code, 0, "{applied:#}");
    assert_eq!(applied["totals"]["failed"], 0);
    // The shared base layer is copied once and mounted into the other repositories.
    assert!(applied["totals"]["blobsMounted"].as_u64().unwrap() >= 1, "{:#}", applied["totals"]);

    let mirrored = rt().block_on(async {
        let mir = world.mir();
        (
            mir.digest("mirror/tools/busybox", "1.36").await,
            mir.digest("mirror/base/glibc", "2.40").await,
            mir.digest("mirror/legacy/app", "1.0").await,
        )
    });
    assert_eq!(mirrored, (Some(oci_single), Some(index), Some(docker_list)), "digests are preserved");
    assert!(
        world.mirror.requests().iter().any(|(m, p)| m == "POST" && p.contains("mount=")),
        "a cross-repository mount was requested"
    );

    // apply, then plan: nothing to do; a second apply touches no blob anywhere.
    world.upstream.clear_requests();
    world.mirror.clear_requests();
    let (code, plan) = world.plan();
    assert_eq!((code, change_count(&plan)), (0, 0), "{plan:#}");
    let (code, _) = world.apply();
    assert_eq!(code, 0);
    assert_eq!(world.upstream.blob_requests(), Vec::<(String, String)>::new());
    assert_eq!(world.mirror.blob_requests(), Vec::<(String, String)>::new());
    // Per pass: one HEAD per tag on each side, one tag list per repository (where signatures
    // to carry would show), at most one referrers probe per repository, plus oci-client's one
    // `/v2/` probe per repository.
    for registry in [&world.upstream, &world.mirror] {
        let requests = registry.requests();
        let (probes, rest): (Vec<_>, Vec<_>) = requests.iter().partition(|(_, p)| p == "/v2/");
        let (lists, rest): (Vec<_>, Vec<_>) = rest.into_iter().partition(|(_, p)| p.contains("/tags/list"));
        // Whether upstream offers the OCI referrers API: asked until one answer says no.
        let (referrers, lookups): (Vec<_>, Vec<_>) = rest.into_iter().partition(|(_, p)| p.contains("/referrers/"));
        assert!(referrers.len() <= 2 * 3, "{referrers:?}");
        assert!(lookups.iter().all(|(m, _)| m == "HEAD"), "{lookups:?}");
        assert_eq!(lookups.len(), 2 * 3, "{lookups:?}");
        assert_eq!(lists.len(), 2 * 3, "{lists:?}");
        assert!(probes.len() <= 2 * 3, "{probes:?}");
    }
}

#[test]
fn tag_rules_select_exactly_the_right_tags() {
    let world = World::new();
    let all = ["3.11.9", "3.12", "3.12.1", "3.12.2", "3.13.0", "3.13.1-rc1", "3.14.0", "latest"];
    rt().block_on(async {
        let up = world.up();
        for (i, tag) in all.iter().enumerate() {
            up.image("runtime/python", Some(tag), &[layer(10 + i as u64, 1024)], "linux/amd64").await;
        }
    });
    world.desired(
        "  images:\n    - source: UP/runtime/python\n      tagRules: {semver: \">=3.12, <3.14\", allow: [\"^3\\\\.\"], deny: [\"-rc\"], keepLatest: 3}\n",
    );
    let (code, applied) = world.apply();
    assert_eq!(code, 0, "{applied:#}");
    let tags = rt().block_on(world.mir().tags("mirror/runtime/python"));
    assert_eq!(tags, ["3.12.1", "3.12.2", "3.13.0"]);
}

#[test]
fn a_moved_upstream_tag_follows_each_policy() {
    for policy in ["update", "keep", "backup"] {
        let world = World::new();
        let first = rt().block_on(world.up().image("app", Some("1.0"), &[layer(20, 1024)], "linux/amd64")).0;
        world.desired(&format!("  onTagMove: {policy}\n  images:\n    - source: UP/app\n      tags: [\"1.0\"]\n"));
        assert_eq!(world.apply().0, 0);
        let second = rt().block_on(world.up().image("app", Some("1.0"), &[layer(21, 1024)], "linux/amd64")).0;
        let (code, applied) = world.apply();
        assert_eq!(code, 0, "{policy}: {applied:#}");
        let (now, tags) = rt()
            .block_on(async { (world.mir().digest("mirror/app", "1.0").await, world.mir().tags("mirror/app").await) });
        match policy {
            "update" => assert_eq!((now.as_deref(), tags.len()), (Some(second.as_str()), 1)),
            "keep" => assert_eq!((now.as_deref(), tags.len()), (Some(first.as_str()), 1)),
            _ => {
                assert_eq!(now.as_deref(), Some(second.as_str()));
                let backup = format!("1.0-backup-{}", &first["sha256:".len().."sha256:".len() + 12]);
                assert_eq!(tags, vec!["1.0".to_string(), backup.clone()]);
                let kept = rt().block_on(world.mir().digest("mirror/app", &backup));
                assert_eq!(kept.as_deref(), Some(first.as_str()));
            }
        }
        assert_eq!(change_count(&world.plan().1), 0, "{policy}: converged");
    }
}

fn mirror_state(world: &World, repo: &str) -> Vec<(String, Option<String>)> {
    rt().block_on(async {
        let mir = world.mir();
        let mut out = Vec::new();
        for tag in mir.tags(repo).await {
            let d = mir.digest(repo, &tag).await;
            out.push((tag, d));
        }
        out
    })
}

/// Regression: upstream killed during an outage → mirror untouched, Unknown reported, nothing
/// pruned; the next pass after it returns converges.
#[test]
fn upstream_killed_leaves_the_mirror_untouched() {
    let mut world = World::new();
    rt().block_on(async {
        let up = world.up();
        up.image("app", Some("1.0"), &[layer(30, 1024)], "linux/amd64").await;
        world.mir().image("mirror/app", Some("stale"), &[layer(31, 1024)], "linux/amd64").await;
    });
    world.desired("  prune: true\n  images:\n    - source: UP/app\n      tags: [\"1.0\", \"2.0\"]\n      tagRules: {semver: \">=1\"}\n");
    let before = mirror_state(&world, "mirror/app");
    world.upstream.stop();
    let (code, applied) = world.apply();
    assert_eq!(code, 2, "{applied:#}");
    assert_eq!(change_count(&applied["plan"]), 0, "{applied:#}");
    let notes = applied["plan"]["notes"].to_string();
    assert!(notes.contains("could not connect") || notes.contains("connection"), "{notes}");
    assert!(notes.contains("not pruned"), "{notes}");
    assert_eq!(mirror_state(&world, "mirror/app"), before, "the mirror is untouched");

    world.upstream.restart();
    rt().block_on(world.up().image("app", Some("2.0"), &[layer(32, 1024)], "linux/amd64"));
    let (code, applied) = world.apply();
    assert_eq!(code, 0, "{applied:#}");
    let tags: Vec<String> = mirror_state(&world, "mirror/app").into_iter().map(|(t, _)| t).collect();
    assert_eq!(tags, ["1.0", "2.0"], "copied, and the stale tag pruned once upstream was known");
}

/// Regression: an upstream that accepts connections but never answers (SIGSTOP) is Unknown
/// after the timeout, not Absent.
#[test]
fn upstream_paused_times_out_as_unknown() {
    let world = World::new();
    rt().block_on(async {
        world.up().image("app", Some("1.0"), &[layer(40, 1024)], "linux/amd64").await;
        world.mir().image("mirror/app", Some("1.0"), &[layer(41, 1024)], "linux/amd64").await;
    });
    world.desired("  images:\n    - source: UP/app\n      tags: [\"1.0\"]\n");
    let before = mirror_state(&world, "mirror/app");
    world.upstream.pause();
    let (code, applied, _) = world.run("apply", &["--timeout", "1s", "--retries", "0"]);
    world.upstream.resume();
    assert_eq!(code, 2, "{applied:#}");
    assert!(applied["plan"]["notes"].to_string().contains("did not answer within 1s"), "{applied:#}");
    assert_eq!(mirror_state(&world, "mirror/app"), before);
    // Resumed: the moved tag is followed.
    assert_eq!(world.apply().0, 0);
    assert_eq!(change_count(&world.plan().1), 0);
}

#[test]
fn bad_credentials_name_the_registry_and_hide_the_secret() {
    let certs = tempfile::tempdir().unwrap();
    let tls = Tls::generate(certs.path());
    let mirror =
        TestRegistry::start(Options { tls: Some(&tls), basic_auth: Some(("lifeboat", "right-password")), token: None });
    let upstream = TestRegistry::start(Options::default());
    rt().block_on(Pusher::new(&upstream.host, None, None).image("app", Some("1.0"), &[layer(50, 1024)], "linux/amd64"));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), &tls.ca_pem).unwrap();
    let write_config = |password: &str| {
        let auth = base64_encode(&format!("lifeboat:{password}"));
        std::fs::write(
            dir.path().join(".config.json"),
            format!(r#"{{"auths": {{"{}": {{"auth": "{auth}"}}}}}}"#, mirror.host),
        )
        .unwrap();
    };
    let config_path = dir.path().join(".config.json");
    let desired = format!(
        "apiVersion: lifeboat.dev/v1alpha1\nkind: Registry\nmetadata: {{name: up}}\nspec: {{host: \"{}\", insecure: true}}\n---\napiVersion: lifeboat.dev/v1alpha1\nkind: Registry\nmetadata: {{name: mirror}}\nspec:\n  host: \"{}\"\n  caFile: ca.pem\n  credentials: {{dockerConfig: \"{}\"}}\n---\napiVersion: lifeboat.dev/v1alpha1\nkind: MirrorSet\nmetadata: {{name: s}}\nspec:\n  target: \"{}/m\"\n  images:\n    - source: \"{}/app\"\n      tags: [\"1.0\"]\n",
        upstream.host,
        mirror.host,
        config_path.display(),
        mirror.host,
        upstream.host
    );
    std::fs::write(dir.path().join("desired.yaml"), desired).unwrap();
    write_config("wrong-password");
    let path = dir.path().to_str().unwrap();
    let run = lifeboat(&["apply", path, "--timeout", "5s", "--retries", "0"]);
    assert_eq!(run.code, 2, "{}{}", run.stdout, run.stderr);
    let all = format!("{}{}", run.stdout, run.stderr);
    assert!(all.contains(&format!("{} refused the credentials", mirror.host)), "{all}");
    assert!(!all.contains("wrong-password") && !all.contains(&base64_encode("lifeboat:wrong-password")), "{all}");

    // The right password over TLS with the generated CA: mirrored.
    write_config("right-password");
    let run = lifeboat(&["apply", path, "--timeout", "5s", "--retries", "0"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(!run.stdout.contains("right-password") && !run.stderr.contains("right-password"));
}

fn base64_encode(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// A large layer is streamed, not held in memory: checked by RSS in bench/, here for
/// correctness end to end.
#[test]
fn a_one_gib_layer_is_copied() {
    let world = World::new();
    let size = 1usize << 30;
    let big = layer(60, size);
    let digest = rt().block_on(world.up().image("big", Some("1"), &[big], "linux/amd64")).0;
    world.desired("  images:\n    - source: UP/big\n      tags: [\"1\"]\n");
    let (code, applied) = world.apply();
    assert_eq!(code, 0, "{applied:#}");
    assert!(applied["totals"]["bytesCopied"].as_u64().unwrap() > size as u64);
    assert_eq!(rt().block_on(world.mir().digest("mirror/big", "1")), Some(digest));
}

/// Regression: 5xx and 429 answers are retried with backoff, and are Unknown (never Absent)
/// once the retries are spent.
#[test]
fn transient_upstream_errors_are_retried_then_unknown() {
    let world = World::new();
    let digest = rt().block_on(world.up().image("app", Some("1.0"), &[layer(70, 1024)], "linux/amd64")).0;
    let proxy = FaultProxy::start(&world.upstream.host, 3, 503);
    world.desired_via(&proxy.host, "  images:\n    - source: UP/app\n      tags: [\"1.0\"]\n");
    let (code, applied, _) = world.run("apply", &["--timeout", "3s", "--retries", "4"]);
    assert_eq!(code, 0, "{applied:#}");
    assert_eq!(proxy.injected.load(std::sync::atomic::Ordering::SeqCst), 3);
    assert_eq!(rt().block_on(world.mir().digest("mirror/app", "1.0")), Some(digest));

    let throttled = FaultProxy::start(&world.upstream.host, 1000, 429);
    world.desired_via(&throttled.host, "  images:\n    - source: UP/app\n      tags: [\"1.0\", \"2.0\"]\n");
    let (code, applied, _) = world.run("apply", &["--timeout", "3s", "--retries", "1"]);
    assert_eq!(code, 2, "{applied:#}");
    let notes = applied["plan"]["notes"].to_string();
    assert!(notes.contains("429"), "{notes}");
    assert_eq!(change_count(&applied["plan"]), 0, "nothing is done on the strength of a 429");
    // The proxy said `Retry-After: 1`: a retry of the same request waited at least that long.
    let log = throttled.log.lock().unwrap().clone();
    let mut by_request: std::collections::BTreeMap<String, Vec<std::time::Instant>> = Default::default();
    for (at, line) in log {
        by_request.entry(line).or_default().push(at);
    }
    let retried: Vec<_> = by_request.values().filter(|times| times.len() > 1).collect();
    assert!(!retried.is_empty(), "{by_request:?}");
    for times in retried {
        assert!(times[1] - times[0] >= std::time::Duration::from_millis(950), "{times:?}");
    }
}

/// A token-auth upstream (the Docker Hub and Harbor flow) and a credential helper for it.
#[test]
fn bearer_token_upstream_with_a_credential_helper() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = TokenServer::start(dir.path(), "robot", "t0ken-secret");
    let upstream = TestRegistry::start(Options { token: Some(&tokens), ..Options::default() });
    let mirror = TestRegistry::start(Options::default());
    let digest = rt().block_on(Pusher::new(&upstream.host, None, Some(("robot", "t0ken-secret"))).index(
        "vendor/app",
        "1.0",
        &layer(80, 2048),
        &["linux/amd64", "linux/arm64"],
        8,
    ));
    // docker-credential-test answers with the robot's credentials, as a real helper would.
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let helper = bin.join("docker-credential-test");
    std::fs::write(&helper, "#!/bin/sh\nread host\nprintf '{\"Username\":\"robot\",\"Secret\":\"t0ken-secret\"}'\n")
        .unwrap();
    std::fs::set_permissions(&helper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let desired = dir.path().join("desired");
    std::fs::create_dir_all(&desired).unwrap();
    std::fs::write(
        desired.join("d.yaml"),
        format!(
            "apiVersion: lifeboat.dev/v1alpha1\nkind: Registry\nmetadata: {{name: up}}\nspec:\n  host: \"{up}\"\n  insecure: true\n  credentials: {{helper: test}}\n---\napiVersion: lifeboat.dev/v1alpha1\nkind: Registry\nmetadata: {{name: m}}\nspec: {{host: \"{m}\", insecure: true}}\n---\napiVersion: lifeboat.dev/v1alpha1\nkind: MirrorSet\nmetadata: {{name: s}}\nspec:\n  target: \"{m}/mirror\"\n  images:\n    - source: \"{up}/vendor/app\"\n      tags: [\"1.0\"]\n",
            up = upstream.host,
            m = mirror.host
        ),
    )
    .unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let before = tokens.issued.load(std::sync::atomic::Ordering::SeqCst);
    let run =
        crate::support::lifeboat_env(&["apply", desired.to_str().unwrap(), "--timeout", "5s"], &[("PATH", &path)]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(tokens.issued.load(std::sync::atomic::Ordering::SeqCst) > before, "lifeboat fetched tokens");
    assert!(!run.stdout.contains("t0ken-secret") && !run.stderr.contains("t0ken-secret"));
    let copied = rt().block_on(Pusher::new(&mirror.host, None, None).digest("mirror/vendor/app", "1.0"));
    assert_eq!(copied, Some(digest));
}

/// Regression: one image that cannot be copied does not stop the others, and says why.
#[test]
fn one_failing_image_does_not_stop_the_pass() {
    let world = World::new();
    let digest = rt().block_on(world.up().image("good", Some("1.0"), &[layer(90, 1024)], "linux/amd64")).0;
    let missing = format!("sha256:{}", "0".repeat(64));
    world.desired(&format!(
        "  images:\n    - source: UP/gone@{missing}\n      tag: pinned\n    - source: UP/good\n      tags: [\"1.0\"]\n"
    ));
    let (code, applied) = world.apply();
    assert_eq!(code, 2, "{applied:#}");
    assert_eq!((applied["totals"]["done"].as_u64(), applied["totals"]["failed"].as_u64()), (Some(1), Some(1)));
    let failure = applied["outcomes"].as_array().unwrap().iter().find(|o| o["outcome"] == "failed").unwrap();
    assert!(failure["error"].as_str().unwrap().contains("no longer has this manifest"), "{failure:#}");
    assert_eq!(rt().block_on(world.mir().digest("mirror/good", "1.0")), Some(digest));
}

//! Registries that stop answering in the middle of things: a pass gives up on such a host for
//! the rest of the pass (its breaker), so it ends within about two `--timeout`s however many
//! tags the host serves, the mirror is left as it was, and other registries' work goes on.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::mirror::{World, rt};
use crate::support::images::layer;
use crate::support::lifeboat;
use crate::support::proxy::{Action, FaultProxy, Rule};
use crate::support::registry::{Options, TestRegistry};

const TAGS: usize = 20;

fn tags() -> Vec<String> {
    (0..TAGS).map(|i| format!("t{i:02}")).collect()
}

/// Pushes `app:t00` … `app:t19` upstream, each a different image.
fn push_tags(world: &World) {
    rt().block_on(async {
        let up = world.up();
        for (i, tag) in tags().iter().enumerate() {
            up.image("app", Some(tag), &[layer(1000 + i as u64, 2048)], "linux/amd64").await;
        }
    });
}

/// A Registry document for `host` over plain HTTP.
fn registry(name: &str, host: &str) -> String {
    format!(
        "apiVersion: lifeboat.dev/v1alpha1\nkind: Registry\nmetadata: {{name: {name}}}\nspec:\n  host: \"{host}\"\n  insecure: true\n---\n"
    )
}

/// One MirrorSet into `mirror/` of `mirror`: the twenty tags of `up/app`, and `tool:1.0` of
/// `other` when given.
fn write_desired(world: &World, up: &str, mirror: &str, other: Option<&str>) {
    let list = tags().iter().map(|t| format!("\"{t}\"")).collect::<Vec<_>>().join(", ");
    let mut text = registry("upstream", up) + &registry("mirror", mirror);
    let mut images = format!("    - source: \"{up}/app\"\n      tags: [{list}]\n");
    if let Some(other) = other {
        text.push_str(&registry("other", other));
        images.push_str(&format!("    - source: \"{other}/tool\"\n      tags: [\"1.0\"]\n"));
    }
    text.push_str(&format!(
        "apiVersion: lifeboat.dev/v1alpha1\nkind: MirrorSet\nmetadata: {{name: set}}\nspec:\n  target: \"{mirror}/mirror\"\n  images:\n{images}"
    ));
    std::fs::write(world.dir.path().join("desired.yaml"), text).unwrap();
}

/// `lifeboat apply DIR -o json ARGS`: exit code, output, and how long it took.
fn apply(world: &World, args: &[&str]) -> (i32, Value, Duration) {
    let dir = world.dir.path().to_str().unwrap();
    let mut all = vec!["apply", dir, "-o", "json"];
    all.extend_from_slice(args);
    let start = Instant::now();
    let run = lifeboat(&all);
    let took = start.elapsed();
    let value = serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {}\n{}", run.stdout, run.stderr));
    (run.code, value, took)
}

/// The plan's note for each of the twenty tags, which must all be there and unknown.
fn unknown_notes(applied: &Value) -> Vec<String> {
    let notes = applied["plan"]["notes"].as_array().unwrap();
    tags()
        .iter()
        .map(|tag| {
            let suffix = format!("/mirror/app:{tag}");
            let note = notes
                .iter()
                .find(|n| n["subject"].as_str().is_some_and(|s| s.ends_with(&suffix)))
                .unwrap_or_else(|| panic!("no note for {tag}: {applied:#}"));
            assert_eq!(note["kind"], "unknown", "{note:#}");
            note["reason"].as_str().unwrap().to_string()
        })
        .collect()
}

fn mirror_tags(world: &World) -> Vec<(String, Option<String>)> {
    rt().block_on(async {
        let mir = world.mir();
        let mut out = Vec::new();
        for tag in mir.tags("mirror/app").await {
            let digest = mir.digest("mirror/app", &tag).await;
            out.push((tag, digest));
        }
        out
    })
}

/// Regression (issue: 20 tags against a paused upstream took 94 s with `--timeout 5s`): the
/// upstream accepts connections and answers nothing. After its first timeout nothing more
/// waits on it, every tag is unknown, the mirror keeps what it had, and an image from a
/// healthy registry in the same pass is still mirrored.
#[test]
fn a_paused_upstream_is_given_up_on_after_one_timeout() {
    let world = World::new();
    push_tags(&world);
    let other = TestRegistry::start(Options::default());
    let tool = rt().block_on(crate::support::images::Pusher::new(&other.host, None, None).image(
        "tool",
        Some("1.0"),
        &[layer(1100, 2048)],
        "linux/amd64",
    ));
    rt().block_on(world.mir().image("mirror/app", Some("t00"), &[layer(1101, 2048)], "linux/amd64"));
    write_desired(&world, &world.upstream.host, &world.mirror.host, Some(&other.host));
    let before = mirror_tags(&world);

    world.upstream.pause();
    let (code, applied, took) = apply(&world, &["--timeout", "5s"]);
    world.upstream.resume();

    assert!(took < Duration::from_secs(15), "took {took:?}: {applied:#}");
    assert_eq!(code, 2, "{applied:#}");
    let host = &world.upstream.host;
    for reason in unknown_notes(&applied) {
        assert!(reason.contains(&format!("{host} did not answer within 5s")), "{reason}");
    }
    let notes = applied["plan"]["notes"].to_string();
    assert!(notes.contains("earlier in this pass; not asked again until the next pass"), "{notes}");
    assert_eq!(mirror_tags(&world), before, "the mirror is untouched");
    let mirrored = rt().block_on(world.mir().digest("mirror/tool", "1.0"));
    assert_eq!(mirrored, Some(tool.0), "the healthy registry's image is mirrored in the same pass");
}

/// Regression (issue: 11 s with the upstream killed): connections refused on every try give the
/// host up for the pass too, within the default retries.
#[test]
fn a_killed_upstream_is_given_up_on_quickly() {
    let mut world = World::new();
    push_tags(&world);
    write_desired(&world, &world.upstream.host, &world.mirror.host, None);
    world.upstream.stop();
    let (code, applied, took) = apply(&world, &["--timeout", "5s"]);
    assert!(took < Duration::from_secs(5), "took {took:?}: {applied:#}");
    assert_eq!(code, 2, "{applied:#}");
    let host = &world.upstream.host;
    for reason in unknown_notes(&applied) {
        assert!(reason.contains(&format!("could not connect to {host}")), "{reason}");
    }
    assert!(mirror_tags(&world).is_empty(), "nothing was written");
}

/// A mirror paused (SIGSTOP) before the pass: after its first timeout nothing more waits on
/// it, every tag is unknown and nothing is written.
#[test]
fn a_paused_mirror_is_given_up_on_after_one_timeout() {
    let world = World::new();
    push_tags(&world);
    write_desired(&world, &world.upstream.host, &world.mirror.host, None);
    world.mirror.pause();
    let (code, applied, took) = apply(&world, &["--timeout", "5s"]);
    world.mirror.resume();
    assert!(took < Duration::from_secs(15), "took {took:?}: {applied:#}");
    assert_eq!(code, 2, "{applied:#}");
    for reason in unknown_notes(&applied) {
        assert!(reason.contains(&format!("{} did not answer within 5s", world.mirror.host)), "{reason}");
    }
    assert_eq!(applied["outcomes"].as_array().map(Vec::len), Some(0), "nothing was attempted: {applied:#}");
    assert!(mirror_tags(&world).is_empty());
}

/// Regression (issue: a mirror paused mid-pass cost 786 s for 20 tags): the mirror freezes at
/// the first blob upload. Every copy fails within about two timeouts, naming the mirror.
#[test]
fn a_mirror_that_freezes_mid_pass_is_given_up_on() {
    let world = World::new();
    push_tags(&world);
    let frozen = FaultProxy::with_rules(&world.mirror.host, vec![Rule::new("/blobs/uploads/", Action::Freeze)]);
    write_desired(&world, &world.upstream.host, &frozen.host, None);
    let (code, applied, took) = apply(&world, &["--timeout", "5s"]);
    assert!(took < Duration::from_secs(15), "took {took:?}: {applied:#}");
    assert_eq!(code, 2, "{applied:#}");
    assert!(frozen.matched("/blobs/uploads/") >= 1, "the mirror froze during an upload");
    let outcomes = applied["outcomes"].as_array().unwrap();
    assert_eq!(outcomes.len(), TAGS, "{applied:#}");
    for outcome in outcomes {
        assert_eq!(outcome["outcome"], "failed", "{outcome:#}");
        let error = outcome["error"].as_str().unwrap();
        assert!(error.contains(&format!("{} did not answer within 5s", frozen.host)), "{error}");
    }
}

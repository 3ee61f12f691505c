//! The command line's rules, as a user meets them: flags are never silently ignored, formats a
//! command cannot print are refused, `-o json` answers on stdout whatever happens, and PATH and
//! `--repo` cannot both name the desired state.

use serde_json::Value;

use crate::mirror::{World, rt};
use crate::support::images::layer;
use crate::support::lifeboat;

/// With `--cluster off`, the plan still names the namespace and image pre-pull would use.
#[test]
fn pre_pull_flags_shape_the_plan_without_a_cluster() {
    let world = World::new();
    rt().block_on(world.mir().image("mirror/vendor/app", Some("1.0"), &[layer(90, 512)], "linux/amd64"));
    world.desired("  images:\n    - source: UP/vendor/app\n      tags: [\"1.0\"]\n");
    std::fs::write(
        world.dir.path().join("prepull.yaml"),
        "apiVersion: lifeboat.dev/v1alpha1\nkind: PrePullSet\nmetadata: {name: critical}\nspec:\n  mirrorSets: [set]\n",
    )
    .unwrap();
    let (code, plan, stderr) = world.run("plan", &["--cluster", "off", "--prepull-namespace", "dr-tools"]);
    // Upstream lacks vendor/app:1.0, but the mirror keeps its copy: nothing needs a person.
    assert_eq!(code, 0, "{stderr}");
    let set = &plan["prePull"]["sets"]["critical"];
    assert_eq!(set["daemonSet"], "dr-tools/lifeboat-prepull-critical", "{plan:#}");
    assert_eq!(plan["prePull"]["notUsed"], "--cluster off", "{plan:#}");
}

#[test]
fn a_format_a_command_cannot_print_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let run = lifeboat(&["validate", dir.path().to_str().unwrap(), "-o", "markdown"]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("`lifeboat validate` cannot print `-o markdown`: give one of human, json"),
        "{}",
        run.stderr
    );
    let run = lifeboat(&["run", "-o", "json", dir.path().to_str().unwrap()]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("--log-format json"), "{}", run.stderr);
    // The answer on stdout is JSON even for the refusal.
    let answer: Value = serde_json::from_str(&run.stdout).unwrap();
    assert!(answer["error"].as_str().is_some_and(|e| e.contains("cannot print")), "{answer}");
}

#[test]
fn invalid_desired_state_diagnostics_are_the_json_answer_of_plan_as_of_validate() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("broken.yaml"),
        "apiVersion: lifeboat.dev/v1alpha1\nkind: MirrorSet\nmetadata: {name: s}\nspec:\n  target: m.example/x\n  imagez: []\n",
    )
    .unwrap();
    let path = dir.path().to_str().unwrap();
    let validate = lifeboat(&["validate", path, "-o", "json"]);
    let plan = lifeboat(&["plan", path, "-o", "json", "--cluster", "off"]);
    assert_eq!((validate.code, plan.code), (2, 2));
    let (v, p): (Value, Value) =
        (serde_json::from_str(&validate.stdout).unwrap(), serde_json::from_str(&plan.stdout).unwrap());
    assert_eq!(v["valid"], false);
    assert_eq!(v["diagnostics"], p["diagnostics"], "{}", plan.stdout);
    assert!(!plan.stderr.contains("imagez"), "diagnostics go to one stream: {}", plan.stderr);
}

#[test]
fn path_and_repo_cannot_both_name_the_desired_state() {
    let dir = tempfile::tempdir().unwrap();
    let run = lifeboat(&["plan", dir.path().to_str().unwrap(), "--repo", "file:///nowhere", "--cluster", "off"]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("both name the desired state: give one"), "{}", run.stderr);
    let run = lifeboat(&["diff", "--repo", "https://git.example.com/team/desired.git", "--base", "HEAD~1"]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("reads a local clone"), "{}", run.stderr);
}

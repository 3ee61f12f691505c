//! `lifeboat validate` on the example repository and on broken fixtures.

use crate::support::{copy_tree, lifeboat, lifeboat_in, root};

#[test]
fn the_example_repository_is_valid() {
    let run = lifeboat(&["validate", "example-repo"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert_eq!(run.stdout, "example-repo is valid\n");
}

#[test]
fn the_path_may_come_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_lifeboat"));
    let output = command
        .arg("validate")
        .env("LIFEBOAT_DIR", root().join("example-repo"))
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stdout));
}

/// Every kind of mistake in `tests/fixtures/broken` is reported in one run, each with its
/// file:line:col and a hint.
#[test]
fn broken_fixtures_report_every_problem_with_its_place() {
    let run = lifeboat(&["validate", "tests/fixtures/broken"]);
    assert_eq!(run.code, 2);
    insta::assert_snapshot!("broken_human", run.stdout);
    for needle in [
        "misspelled.yaml:9:7: error: unknown field `tagRule`",
        "schedule.yaml:7:13: error: `61 * * * *` is not a valid cron schedule",
        "prepull.yaml:6:29: error: MirrorSet `vendor-bsae` does not exist",
        "api-version.yaml:1:13: error: unknown apiVersion `lifeboat.dev/v2`",
        "syntax.yaml:9:6: error: YAML syntax error",
        "mirrors.yaml:20:14: error: `registry.internal.example:5000/mirror/base/glibc:2.40` is also written by",
        "registries.yaml:9:5: error: inline secret: `password`",
        "rules.yaml:11:17: error: `^3\\.(1[2-3]` is not a valid regular expression",
        "rules.yaml:10:17: error: `>=3.12 <<3.14` is not a semantic-version range",
    ] {
        assert!(run.stdout.contains(needle), "missing {needle:?} in\n{}", run.stdout);
    }
    assert!(!run.stdout.contains("hunter2"), "a secret was echoed back");
}

#[test]
fn broken_fixtures_as_json() {
    let run = lifeboat(&["validate", "tests/fixtures/broken", "-o", "json"]);
    assert_eq!(run.code, 2);
    let value: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(value["valid"], false);
    assert_eq!(value["errors"], 10);
    insta::assert_json_snapshot!("broken_json", value);
}

#[test]
fn warnings_do_not_fail_validation() {
    let dir = tempfile::tempdir().unwrap();
    copy_tree(&root().join("example-repo"), dir.path());
    let path = dir.path().join("mirrors/runtimes.yaml");
    let text = std::fs::read_to_string(&path).unwrap().replace("policy: required", "policy: off");
    std::fs::write(&path, text).unwrap();
    let run = lifeboat_in(dir.path(), &["validate", "."]);
    assert_eq!(run.code, 0, "{}", run.stdout);
    assert!(run.stdout.contains("warning: signature checks are off"), "{}", run.stdout);
}

#[test]
fn a_missing_folder_is_an_error_naming_it() {
    let run = lifeboat(&["validate", "no/such/folder"]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("error: reading desired state at no/such/folder"), "{}", run.stderr);
}

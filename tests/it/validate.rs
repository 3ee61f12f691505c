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

/// What a hostile or careless repository can hold, each refused in one quick run with the
/// file, the place and the fix; before, these panicked (`1e-300`), stalled a pass for days
/// (`1e-6`), took 25 s and 588 MiB to refuse (deep nesting, a 50 MB scalar), took 1 GB to
/// refuse within the size limit (hundreds of thousands of values), or were accepted
/// and then never ran (a 30th of February) or never read (a Latin-1 file name).
#[test]
fn hostile_desired_state_is_refused_quickly_with_its_place_and_fix() {
    use std::os::unix::ffi::OsStrExt as _;

    let dir = tempfile::tempdir().unwrap();
    let header = "apiVersion: lifeboat.dev/v1alpha1\n";
    let mirror = |name: &str, extra: &str| {
        format!(
            "{header}kind: MirrorSet\nmetadata: {{name: {name}}}\nspec:\n  target: registry.internal.example/mirror\n{extra}  images:\n    - source: registry.vendor.example/{name}\n      tags: [\"1\"]\n"
        )
    };
    let write =
        |name: &[u8], text: &str| std::fs::write(dir.path().join(std::ffi::OsStr::from_bytes(name)), text).unwrap();
    write(
        b"budget.yaml",
        &format!(
            "{header}kind: Registry\nmetadata: {{name: up}}\nspec:\n  host: registry.vendor.example\n  limits: {{requestsPerSecond: 1e-300}}\n---\n{header}kind: Registry\nmetadata: {{name: slow}}\nspec:\n  host: slow.example\n  limits: {{requestsPerSecond: 1e-6, concurrency: 100000}}\n"
        ),
    );
    write(
        b"deep.yaml",
        &format!("{header}kind: MirrorSet\nmetadata: {{name: deep}}\nspec:\n  images: {}\n", "[".repeat(100_000)),
    );
    write(b"huge.yaml", &mirror("huge", &format!("  note: \"{}\"\n", "a".repeat(50_000_000))));
    write(b"never.yaml", &mirror("never", "  schedule: \"0 0 30 2 *\"\n"));
    write(b"many.yaml", &mirror("many", &format!("  note: [{}]\n", vec!["a"; 300_000].join(","))));
    write(b"latin1-\xe9t\xe9.yaml", &mirror("latin", ""));
    std::fs::write(dir.path().join("fine.yaml"), mirror("fine", "")).unwrap();
    let shown = dir.path().display().to_string();

    for command in ["validate", "plan"] {
        let started = std::time::Instant::now();
        let run = lifeboat_in(dir.path(), &[command, &shown]);
        let elapsed = started.elapsed();
        let out = format!("{}{}", run.stdout, run.stderr);
        assert_eq!(run.code, 2, "{command}: {out}");
        assert!(elapsed < std::time::Duration::from_secs(20), "{command} took {elapsed:?}");
        for needle in [
            "budget.yaml:6:31: error: 1e-300 requests per second is less than one a minute",
            "budget.yaml:13:31: error: 1e-6 requests per second is less than one a minute",
            "hint: give at least 0.0167 (one request a minute), or leave it out for no limit",
            "budget.yaml:13:50: error: concurrency 100000 is above 256",
            "hint: give 1 to 256; the default is 8",
            "deep.yaml:5:73: error: the document nests mappings and sequences deeper than 64 levels",
            "huge.yaml:6: error: the file is 47.7 MiB, above the 4.0 MiB limit for a desired-state file",
            "hint: desired-state files are small",
            "never.yaml:6:13: error: `0 0 30 2 *` never runs: no date matches it",
            "many.yaml:6:499980: error: the file holds more than 250000 values (keys, values and list items)",
            "hint: check the day of the month against the month",
            "latin1-\\xE9t\\xE9.yaml: error: the file name is not UTF-8, so Lifeboat does not read the file",
            "hint: rename it (and any folder on its path) to a UTF-8 name",
            "8 errors, 0 warnings",
        ] {
            assert!(out.contains(needle), "{command}: missing {needle:?} in\n{out}");
        }
        assert!(!out.contains("panicked"), "{out}");
    }
}

/// Validation time grew with the square of the tag count (80,000 tags: 10 s in a release
/// build, 162 s in a debug one); 40,000 tags now take about as many seconds as 4,000 did.
#[test]
fn a_set_of_forty_thousand_tags_validates_in_linear_time() {
    let dir = tempfile::tempdir().unwrap();
    let tags: Vec<String> = (0..40_000).map(|i| format!("\"1.{i}\"")).collect();
    let text = format!(
        "apiVersion: lifeboat.dev/v1alpha1\nkind: MirrorSet\nmetadata: {{name: many}}\nspec:\n  target: registry.internal.example/mirror\n  images:\n    - source: registry.vendor.example/app\n      tags: [{}]\n",
        tags.join(", ")
    );
    std::fs::write(dir.path().join("many.yaml"), text).unwrap();
    let started = std::time::Instant::now();
    let run = lifeboat_in(dir.path(), &["validate", "."]);
    let elapsed = started.elapsed();
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(elapsed < std::time::Duration::from_secs(20), "40,000 tags took {elapsed:?}");
}

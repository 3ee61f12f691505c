//! `lifeboat diff` on real Git repositories built from the example.

use serde_json::Value;

use crate::support::{GitRepo, copy_tree, lifeboat, root};

const VENDOR: &str = "mirrors/vendor-base.yaml";
const RUNTIMES: &str = "mirrors/runtimes.yaml";
const OLD_PIN: &str = "eb8f0c402a49674df4988ee3bf8b27230b4d7dde24c9e118996723a0c9796649";
const NEW_PIN: &str = "5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef";

/// A repository holding the example at its first commit, then four commits that each make one
/// kind of change.
fn repo_with_history() -> GitRepo {
    let mut git = GitRepo::new();
    copy_tree(&root().join("example-repo"), git.path());
    git.commit("example desired state");
    git.edit(VENDOR, r#"tags: ["2.39", "2.40"]"#, r#"tags: ["2.39", "2.40", "2.41"]"#);
    git.commit("add glibc 2.41");
    git.edit(VENDOR, "    - source: registry.vendor.example/base/distroless\n      tags: [\"12\", \"12-debug\"]\n", "");
    git.commit("stop mirroring distroless");
    git.edit(RUNTIMES, OLD_PIN, NEW_PIN);
    git.commit("roll node forward");
    git.edit(VENDOR, r#"schedule: "0 * * * *""#, r#"schedule: "*/30 * * * *""#);
    git.commit("sync every half hour");
    git
}

fn diff_json(git: &GitRepo, base: &str, head: &str) -> (i32, Value) {
    let repo = git.path().to_str().unwrap();
    let run = lifeboat(&["diff", "--repo", repo, "--base", base, "--head", head, "-o", "json"]);
    assert!(run.code == 0 || run.code == 1, "exit {}: {}", run.code, run.stderr);
    (run.code, serde_json::from_str(&run.stdout).expect("diff prints JSON"))
}

fn change_types(report: &Value) -> Vec<String> {
    report["changes"].as_array().unwrap().iter().map(|c| c["change"].as_str().unwrap().to_string()).collect()
}

#[test]
fn each_commit_reports_exactly_its_change() {
    let git = repo_with_history();

    let (code, tag) = diff_json(&git, "HEAD~4", "HEAD~3");
    assert_eq!(code, 1);
    assert_eq!(
        tag["changes"],
        serde_json::json!([{
            "change": "tagAdded",
            "mirrorSet": "vendor-base",
            "source": "registry.vendor.example/base/glibc",
            "tag": "2.41",
            "target": "registry.internal.example:5000/mirror/base/glibc:2.41"
        }])
    );
    assert_eq!(
        tag["mirrorRefs"]["added"],
        serde_json::json!(["registry.internal.example:5000/mirror/base/glibc:2.41"])
    );
    // Both the pre-pull set and the backup cover vendor-base, so both cover the new tag.
    let covered: Vec<&str> = tag["coverage"].as_array().unwrap().iter().map(|c| c["kind"].as_str().unwrap()).collect();
    assert_eq!(covered, ["PrePullSet", "BackupPolicy"]);

    let (_, removed) = diff_json(&git, "HEAD~3", "HEAD~2");
    assert_eq!(change_types(&removed), ["imageRemoved"]);
    assert_eq!(removed["changes"][0]["source"], "registry.vendor.example/base/distroless");
    assert_eq!(removed["mirrorRefs"]["removed"].as_array().unwrap().len(), 2);

    let (_, pin) = diff_json(&git, "HEAD~2", "HEAD~1");
    assert_eq!(change_types(&pin), ["digestPinChanged"]);
    assert_eq!(pin["changes"][0]["from"], format!("sha256:{OLD_PIN}"));
    assert_eq!(pin["changes"][0]["to"], format!("sha256:{NEW_PIN}"));
    assert_eq!(pin["changes"][0]["target"], "registry.internal.example:5000/mirror/runtime/node:20-pinned");

    // The README's own form: the last commit against its parent.
    let (_, schedule) = diff_json(&git, "HEAD~1", "HEAD");
    assert_eq!(
        schedule["changes"],
        serde_json::json!([{
            "change": "settingChanged",
            "kind": "MirrorSet",
            "name": "vendor-base",
            "field": "spec.schedule",
            "from": "0 * * * *",
            "to": "*/30 * * * *"
        }])
    );
    assert!(schedule["mirrorRefs"]["added"].as_array().unwrap().is_empty());
}

#[test]
fn the_whole_range_reports_all_four_changes() {
    let git = repo_with_history();
    let (code, report) = diff_json(&git, "HEAD~4", "HEAD");
    assert_eq!(code, 1);
    let mut types = change_types(&report);
    types.sort();
    assert_eq!(types, ["digestPinChanged", "imageRemoved", "settingChanged", "tagAdded"]);
    assert_eq!(report["summary"], "4 changes: 1 digest pin changed, 1 image removed, 1 setting changed, 1 tag added");
}

#[test]
fn identical_revisions_exit_zero() {
    let git = repo_with_history();
    let (code, report) = diff_json(&git, "HEAD", "HEAD");
    assert_eq!(code, 0);
    assert_eq!(report["summary"], "no change");
    // A commit that touches only files outside the desired state changes nothing either.
    let mut git = git;
    git.write("README.md", "notes\n");
    git.commit("docs");
    assert_eq!(diff_json(&git, "HEAD~1", "HEAD").0, 0);
}

#[test]
fn a_head_that_breaks_validation_exits_two_with_its_diagnostics() {
    let mut git = repo_with_history();
    git.edit(VENDOR, r#"schedule: "*/30 * * * *""#, r#"schedule: "every hour""#);
    git.commit("broken schedule");
    let repo = git.path().to_str().unwrap();
    let run = lifeboat(&["diff", "--repo", repo, "--base", "HEAD~1"]);
    assert_eq!(run.code, 2, "{}", run.stdout);
    assert!(run.stdout.is_empty(), "no diff is printed: {}", run.stdout);
    assert!(run.stderr.contains("the desired state at `HEAD` is invalid"), "{}", run.stderr);
    assert!(
        run.stderr.contains("HEAD:mirrors/vendor-base.yaml:11:13: error: `every hour` has 2 fields"),
        "{}",
        run.stderr
    );
}

#[test]
fn unknown_revisions_and_folders_are_errors() {
    let git = repo_with_history();
    let repo = git.path().to_str().unwrap();
    let run = lifeboat(&["diff", "--repo", repo, "--base", "no-such-branch"]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("resolving revision `no-such-branch`"), "{}", run.stderr);
    let run = lifeboat(&["diff", "--repo", repo, "--base", "HEAD~1", "--path", "nowhere"]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("`nowhere` does not exist at revision `HEAD~1`"), "{}", run.stderr);
}

#[test]
fn works_on_a_bare_clone_and_in_a_subfolder() {
    let mut git = GitRepo::new();
    copy_tree(&root().join("example-repo"), &git.path().join("clusters/prod"));
    git.write("README.md", "infra repo\n");
    git.commit("example desired state");
    git.edit(&format!("clusters/prod/{VENDOR}"), r#"tags: ["2.39", "2.40"]"#, r#"tags: ["2.40"]"#);
    git.commit("drop glibc 2.39");

    let bare = tempfile::tempdir().unwrap();
    git2::build::RepoBuilder::new().bare(true).clone(git.path().to_str().unwrap(), bare.path()).unwrap();
    let run = lifeboat(&[
        "diff",
        "--repo",
        bare.path().to_str().unwrap(),
        "--base",
        "HEAD~1",
        "--path",
        "clusters/prod",
        "-o",
        "json",
    ]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let report: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(change_types(&report), ["tagRemoved"]);
    assert_eq!(report["changes"][0]["tag"], "2.39");
}

#[test]
fn human_and_markdown_output() {
    let git = repo_with_history();
    let repo = git.path().to_str().unwrap();
    let commits: Vec<String> = ["HEAD~4", "HEAD"]
        .iter()
        .map(|r| git.repo.revparse_single(r).unwrap().id().to_string()[..12].to_string())
        .collect();
    let redact = |text: String| text.replace(&commits[0], "[base]").replace(&commits[1], "[head]");
    let human = lifeboat(&["diff", "--repo", repo, "--base", "HEAD~4"]);
    assert_eq!(human.code, 1);
    insta::assert_snapshot!("diff_human", redact(human.stdout));
    let markdown = lifeboat(&["diff", "--repo", repo, "--base", "HEAD~4", "-o", "markdown"]);
    assert_eq!(markdown.code, 1);
    assert!(markdown.stdout.starts_with("**Lifeboat:** 4 changes"), "{}", markdown.stdout);
    insta::assert_snapshot!("diff_markdown", redact(markdown.stdout));
}

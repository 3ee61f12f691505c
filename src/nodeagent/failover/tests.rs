use std::os::unix::fs::PermissionsExt as _;

use super::*;
use crate::failover::marker::seal;

const CA: &str = include_str!("../../../example-repo/certs/internal-ca.pem");

fn hosts_toml(set: &str, mirror_port: u16) -> String {
    seal(
        &format!("failover/{set}"),
        "A test file.",
        &format!(
            "server = \"https://upstream.example\"\n\n[host.\"https://mirror.example:{mirror_port}/v2/m\"]\ncapabilities = [\"pull\", \"resolve\"]\noverride_path = true\nca = \"lifeboat-mirror-ca.crt\"\n"
        ),
    )
}

fn config(path: &str, content: String) -> RenderedFile {
    RenderedFile { path: path.into(), role: Role::Config, mode: 0o644, content }
}

fn ca_file(path: &str, set: &str, pem: &str) -> RenderedFile {
    RenderedFile {
        path: path.into(),
        role: Role::Ca,
        mode: 0o644,
        content: seal(&format!("failover/{set}"), "CA.", pem),
    }
}

fn sync_all(dir: &Path, files: &[RenderedFile]) -> FailoverReport {
    sync(NodeRuntime::Containerd, dir, files, &Prune::Every, RuntimeConfig::ok())
}

fn action(report: &FailoverReport, path: &str) -> FileAction {
    report.files.iter().find(|f| f.path == path).unwrap_or_else(|| panic!("{path} in {report:#?}")).action
}

fn read(dir: &Path, path: &str) -> String {
    std::fs::read_to_string(dir.join(path)).unwrap()
}

/// Everything under `dir`, as relative paths, sorted.
fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    walk(dir, "", 4, &mut |rel, _, _| {
        out.push(rel.to_string());
        true
    });
    out.sort();
    out
}

fn upstream_files(set: &str) -> Vec<RenderedFile> {
    vec![
        ca_file("upstream.example/lifeboat-mirror-ca.crt", set, CA),
        config("upstream.example/hosts.toml", hosts_toml(set, 5000)),
    ]
}

#[test]
fn a_new_host_directory_appears_whole_and_a_second_sync_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let files = upstream_files("workers");
    let report = sync_all(dir.path(), &files);
    assert!(report.configured(), "{report:#?}");
    assert_eq!(action(&report, "upstream.example/hosts.toml"), FileAction::Written);
    assert_eq!(
        tree(dir.path()),
        ["upstream.example", "upstream.example/hosts.toml", "upstream.example/lifeboat-mirror-ca.crt"]
    );
    assert_eq!(read(dir.path(), "upstream.example/hosts.toml"), files[1].content);

    let again = sync_all(dir.path(), &files);
    assert!(again.files.iter().all(|f| f.action == FileAction::Unchanged && f.hash_matches), "{again:#?}");
    assert!(again.removed.is_empty() && again.cleaned.is_empty());
}

#[test]
fn a_file_with_credentials_gets_its_mode_whatever_the_umask() {
    let dir = tempfile::tempdir().unwrap();
    let mut file = config("upstream.example/hosts.toml", hosts_toml("w", 5000));
    file.mode = 0o600;
    std::fs::create_dir(dir.path().join("upstream.example")).unwrap();
    let report = sync_all(dir.path(), &[file]);
    assert!(report.configured(), "{report:#?}");
    let mode = std::fs::metadata(dir.path().join("upstream.example/hosts.toml")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn a_foreign_file_is_never_overwritten_nor_removed() {
    let dir = tempfile::tempdir().unwrap();
    let host = dir.path().join("upstream.example");
    std::fs::create_dir(&host).unwrap();
    let theirs = "server = \"https://upstream.example\"\n[host.\"https://their-mirror\"]\n";
    std::fs::write(host.join("hosts.toml"), theirs).unwrap();
    std::fs::create_dir(dir.path().join("quay.io")).unwrap();
    std::fs::write(dir.path().join("quay.io/hosts.toml"), "server = \"https://quay.io\"\n").unwrap();

    let report = sync_all(dir.path(), &upstream_files("w"));
    assert_eq!(action(&report, "upstream.example/hosts.toml"), FileAction::Conflict);
    let file = report.files.iter().find(|f| f.path == "upstream.example/hosts.toml").unwrap();
    assert!(file.present && !file.hash_matches);
    assert!(file.reason.as_deref().unwrap().contains("is not Lifeboat's"), "{file:?}");
    assert!(!report.configured());
    assert_eq!(read(dir.path(), "upstream.example/hosts.toml"), theirs);
    // The CA bundle would serve no file of ours there: it is not written either.
    assert_eq!(action(&report, "upstream.example/lifeboat-mirror-ca.crt"), FileAction::Skipped);
    assert!(!host.join("lifeboat-mirror-ca.crt").exists());
    // Nothing is removed on their behalf either.
    let empty = sync_all(dir.path(), &[]);
    assert!(empty.removed.is_empty(), "{empty:#?}");
    assert_eq!(read(dir.path(), "quay.io/hosts.toml"), "server = \"https://quay.io\"\n");
}

#[test]
fn a_linked_host_directory_is_not_written_through() {
    let dir = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(elsewhere.path(), dir.path().join("upstream.example")).unwrap();
    let report = sync_all(dir.path(), &upstream_files("w"));
    assert_eq!(action(&report, "upstream.example/hosts.toml"), FileAction::Conflict);
    assert_eq!(std::fs::read_dir(elsewhere.path()).unwrap().count(), 0);
}

#[test]
fn files_that_left_the_desired_state_are_removed_config_first_and_their_directory_with_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut files = upstream_files("workers");
    files.push(config("other.example/hosts.toml", hosts_toml("workers", 5001)));
    assert!(sync_all(dir.path(), &files).configured());
    // A foreign file beside ours keeps its directory.
    std::fs::write(dir.path().join("other.example/notes.txt"), "mine").unwrap();

    let report = sync_all(dir.path(), &files[2..]);
    assert_eq!(report.removed, ["upstream.example/hosts.toml", "upstream.example/lifeboat-mirror-ca.crt"]);
    assert_eq!(tree(dir.path()), ["other.example", "other.example/hosts.toml", "other.example/notes.txt"]);
    let report = sync_all(dir.path(), &[]);
    assert_eq!(report.removed, ["other.example/hosts.toml"]);
    assert_eq!(tree(dir.path()), ["other.example", "other.example/notes.txt"]);
}

#[test]
fn pruning_by_set_leaves_the_other_sets_files() {
    let dir = tempfile::tempdir().unwrap();
    let a = config("a.example/hosts.toml", hosts_toml("a", 5000));
    let b = config("b.example/hosts.toml", hosts_toml("b", 5000));
    sync_all(dir.path(), &[a.clone(), b]);
    let only_a = Prune::Sets(BTreeSet::from(["a".to_string()]));
    let report = sync(NodeRuntime::Containerd, dir.path(), &[], &only_a, RuntimeConfig::ok());
    assert_eq!(report.removed, ["a.example/hosts.toml"]);
    assert!(dir.path().join("b.example/hosts.toml").exists());
}

#[test]
fn an_edited_file_of_ours_is_restored_and_said_so() {
    let dir = tempfile::tempdir().unwrap();
    let files = upstream_files("w");
    sync_all(dir.path(), &files);
    let path = dir.path().join("upstream.example/hosts.toml");
    let edited = read(dir.path(), "upstream.example/hosts.toml").replace("5000", "5999");
    std::fs::write(&path, edited).unwrap();
    let report = sync_all(dir.path(), &files);
    assert_eq!(action(&report, "upstream.example/hosts.toml"), FileAction::Restored);
    assert_eq!(read(dir.path(), "upstream.example/hosts.toml"), files[1].content);
}

/// What a writer killed mid-write leaves: a partial temporary file beside the old file, or a
/// half-built host directory. Runtimes never read either, the old file is intact, and the next
/// run finishes the job.
#[test]
fn an_interrupted_write_leaves_the_old_file_and_the_next_run_cleans_up() {
    let dir = tempfile::tempdir().unwrap();
    let old = upstream_files("w");
    sync_all(dir.path(), &old);
    let host = dir.path().join("upstream.example");
    let new = vec![old[0].clone(), config("upstream.example/hosts.toml", hosts_toml("w", 6000))];
    // Killed after writing half of the new file.
    std::fs::write(host.join(".hosts.toml.lifeboat.tmp"), &new[1].content[..40]).unwrap();
    // Killed while building a new host directory.
    std::fs::create_dir_all(dir.path().join(".lifeboat-new-quay.io")).unwrap();
    std::fs::write(dir.path().join(".lifeboat-new-quay.io/hosts.toml"), "server = ").unwrap();
    // What containerd reads meanwhile is the old file, whole.
    assert_eq!(read(dir.path(), "upstream.example/hosts.toml"), old[1].content);

    let report = sync_all(dir.path(), &new);
    assert_eq!(report.cleaned, [".lifeboat-new-quay.io", "upstream.example/.hosts.toml.lifeboat.tmp"]);
    assert_eq!(action(&report, "upstream.example/hosts.toml"), FileAction::Written);
    assert_eq!(read(dir.path(), "upstream.example/hosts.toml"), new[1].content);
    assert_eq!(
        tree(dir.path()),
        ["upstream.example", "upstream.example/hosts.toml", "upstream.example/lifeboat-mirror-ca.crt"]
    );
}

#[test]
fn a_malformed_ca_is_a_node_error_and_its_directory_is_left_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let good = upstream_files("w");
    sync_all(dir.path(), &good);
    let bad_pem = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
    let files = vec![
        ca_file("upstream.example/lifeboat-mirror-ca.crt", "w", bad_pem),
        config("upstream.example/hosts.toml", hosts_toml("w", 6000)),
        config("fine.example/hosts.toml", hosts_toml("w", 5000)),
    ];
    let report = sync_all(dir.path(), &files);
    assert!(!report.configured());
    assert_eq!(report.errors.len(), 1, "{report:#?}");
    assert!(
        report.errors[0].contains(
            "the mirror CA bundle upstream.example/lifeboat-mirror-ca.crt is unusable: certificate 1 does not parse"
        ),
        "{}",
        report.errors[0]
    );
    assert_eq!(action(&report, "upstream.example/hosts.toml"), FileAction::Skipped);
    assert_eq!(read(dir.path(), "upstream.example/hosts.toml"), good[1].content);
    assert_eq!(read(dir.path(), "upstream.example/lifeboat-mirror-ca.crt"), good[0].content);
    // Other directories are written.
    assert_eq!(action(&report, "fine.example/hosts.toml"), FileAction::Written);
}

#[test]
fn a_hosts_toml_without_a_host_table_is_never_written() {
    let dir = tempfile::tempdir().unwrap();
    let bare = config("upstream.example/hosts.toml", seal("failover/w", "x", "server = \"https://m\"\n"));
    let report = sync_all(dir.path(), &[bare]);
    assert!(report.errors[0].contains("has no [host] table"), "{report:#?}");
    assert!(!dir.path().join("upstream.example").exists());
}

#[test]
fn spegel_and_k3s_directories_are_refused_whole() {
    let spegel = tempfile::tempdir().unwrap();
    std::fs::create_dir(spegel.path().join("_backup")).unwrap();
    let report = sync_all(spegel.path(), &upstream_files("w"));
    assert!(report.errors[0].contains("Spegel"), "{report:#?}");
    assert!(report.files.iter().all(|f| f.action == FileAction::Skipped && !f.present));
    assert_eq!(tree(spegel.path()), ["_backup"]);

    let k3s = tempfile::tempdir().unwrap();
    std::fs::create_dir(k3s.path().join("docker.io")).unwrap();
    std::fs::write(k3s.path().join("docker.io/hosts.toml"), "# File generated by k3s. DO NOT EDIT.\nserver = \"x\"\n")
        .unwrap();
    let report = sync_all(k3s.path(), &upstream_files("w"));
    assert!(report.errors[0].contains("generated by k3s"), "{report:#?}");
    assert!(!k3s.path().join("upstream.example").exists());
}

#[test]
fn a_missing_runtime_directory_is_never_created() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("etc/containerd/certs.d");
    let report = sync_all(&missing, &upstream_files("w"));
    assert!(report.errors[0].contains("never creates"), "{report:#?}");
    assert!(!missing.exists());
}

#[test]
fn a_crio_layout_keeps_the_runtime_s_own_folders() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("registries.conf.d")).unwrap();
    std::fs::write(dir.path().join("registries.conf.d/shortnames.conf"), "[aliases]\n").unwrap();
    let drop_in = config(
        "registries.conf.d/50-lifeboat-w.conf",
        seal(
            "failover/w",
            "x",
            "[[registry]]\nprefix = \"u.example\"\nlocation = \"u.example\"\n\n[[registry.mirror]]\nlocation = \"m.example/m\"\n",
        ),
    );
    let ca = ca_file("certs.d/m.example/lifeboat-mirror-ca.crt", "w", CA);
    let report = sync(NodeRuntime::Crio, dir.path(), &[ca, drop_in], &Prune::Every, RuntimeConfig::ok());
    assert!(report.configured(), "{report:#?}");
    assert!(report.reload.contains("SIGHUP"));
    let report = sync(NodeRuntime::Crio, dir.path(), &[], &Prune::Every, RuntimeConfig::ok());
    assert_eq!(report.removed.len(), 2);
    // certs.d/m.example was ours and goes; registries.conf.d and certs.d stay.
    assert_eq!(tree(dir.path()), ["certs.d", "registries.conf.d", "registries.conf.d/shortnames.conf"]);
}

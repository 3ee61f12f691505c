//! `deploy/noop/noop.c`, the program pre-pull pods run inside every image they pull: built the way
//! the Dockerfile builds it, then run in each of its modes, and inside an otherwise empty root
//! directory as a scratch image would give it. Needs gcc with glibc's static archive
//! (`script/setup`), and root for `chroot`.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::{root, wait_for};

/// Compiles the no-op into `dir` with the Dockerfile's flags.
fn build(dir: &Path) -> PathBuf {
    let out = dir.join("lifeboat-noop");
    let source = root().join("deploy/noop/noop.c");
    let run = Command::new("gcc")
        .args(["-static", "-Os", "-s", "-Wall", "-Wextra", "-Werror", "-o"])
        .arg(&out)
        .arg(&source)
        .output()
        .expect("gcc runs (script/setup installs it)");
    assert!(run.status.success(), "gcc -static failed:\n{}", String::from_utf8_lossy(&run.stderr));
    out
}

fn run(program: &Path, args: &[&str]) -> std::process::Output {
    Command::new(program).args(args).output().unwrap()
}

#[test]
fn without_arguments_it_exits_zero_and_says_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let noop = build(dir.path());
    let out = run(&noop, &[]);
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stdout.is_empty() && out.stderr.is_empty());
}

#[test]
fn unknown_arguments_are_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let noop = build(dir.path());
    for args in [&["true"][..], &["install"], &["pause", "now"]] {
        let out = run(&noop, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("usage: lifeboat-noop"), "{args:?}");
    }
}

#[test]
fn install_copies_itself_read_only_and_runs_in_an_empty_root() {
    let dir = tempfile::tempdir().unwrap();
    let noop = build(dir.path());
    // A scratch image: nothing in its root but what the pod's volume brings.
    let scratch = dir.path().join("scratch");
    std::fs::create_dir(&scratch).unwrap();
    let installed = scratch.join("noop");
    let out = run(&noop, &["install", installed.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read(&installed).unwrap(), std::fs::read(&noop).unwrap());
    assert_eq!(std::fs::metadata(&installed).unwrap().permissions().mode() & 0o7777, 0o555);
    let names: Vec<_> = std::fs::read_dir(&scratch).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, ["noop"], "no temporary file is left beside it");

    let chrooted = Command::new("chroot").arg(&scratch).arg("/noop").output().expect("chroot runs (as root)");
    assert_eq!(
        chrooted.status.code(),
        Some(0),
        "the no-op runs with nothing else in its root:\n{}",
        String::from_utf8_lossy(&chrooted.stderr)
    );
}

/// Regression: init containers run again when a pod's sandbox is recreated, and the emptyDir
/// still holds the read-only copy of the first run; installing must replace it, not fail.
#[test]
fn install_again_replaces_the_read_only_copy() {
    let dir = tempfile::tempdir().unwrap();
    let noop = build(dir.path());
    let installed = dir.path().join("noop-copy");
    std::fs::write(&installed, b"old").unwrap();
    std::fs::set_permissions(&installed, std::fs::Permissions::from_mode(0o555)).unwrap();
    let out = run(&noop, &["install", installed.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read(&installed).unwrap(), std::fs::read(&noop).unwrap());
}

#[test]
fn install_into_a_missing_directory_fails_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let noop = build(dir.path());
    let target = dir.path().join("absent/noop");
    let out = run(&noop, &["install", target.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("No such file or directory") && stderr.contains("absent/noop"), "{stderr}");
    assert!(!target.exists());
}

#[test]
fn pause_waits_for_sigterm_then_exits_zero() {
    pause_stops_on("TERM");
}

#[test]
fn pause_waits_for_sigint_then_exits_zero() {
    pause_stops_on("INT");
}

/// Starts `pause`, waits until it has blocked the stop signals and installed its handlers (it
/// blocks them first, so from then on a signal cannot be lost), sends `signal`, and waits for
/// the exit.
fn pause_stops_on(signal: &str) {
    let dir = tempfile::tempdir().unwrap();
    let noop = build(dir.path());
    let mut child = Stopped(Command::new(&noop).arg("pause").stdin(Stdio::null()).spawn().unwrap());
    let pid = child.0.id();
    wait_for("pause to install its SIGTERM and SIGINT handlers", Duration::from_secs(10), || {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let caught = status.lines().find_map(|l| l.strip_prefix("SigCgt:"))?.trim();
        let caught = u64::from_str_radix(caught, 16).ok()?;
        (caught & 0x4002 == 0x4002).then_some(())
    });
    assert_eq!(child.0.try_wait().unwrap(), None, "pause keeps running until signalled");
    let kill = Command::new("kill").args([&format!("-{signal}"), &pid.to_string()]).status().unwrap();
    assert!(kill.success());
    let status = wait_for("pause to exit", Duration::from_secs(10), || child.0.try_wait().unwrap());
    assert_eq!(status.code(), Some(0), "SIG{signal} ends pause with exit code 0, not by the signal");
}

/// Kills the child if the test ends before it has exited, so a failure leaves no process behind.
struct Stopped(std::process::Child);

impl Drop for Stopped {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

//! Shared helpers: running the binary, building Git repositories from the example.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use git2::{IndexAddOption, Repository, Signature};

/// The project root, where `example-repo/` and `schema/` live.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Result of one run of the binary.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Run {
        Run {
            code: o.status.code().expect("the process exited normally"),
            stdout: String::from_utf8(o.stdout).expect("stdout is UTF-8"),
            stderr: String::from_utf8(o.stderr).expect("stderr is UTF-8"),
        }
    }
}

/// Runs `lifeboat ARGS` in `dir` with no LIFEBOAT_* variables inherited.
pub fn lifeboat_in(dir: &Path, args: &[&str]) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_lifeboat"));
    command.args(args).current_dir(dir);
    for (key, _) in std::env::vars() {
        if key.starts_with("LIFEBOAT_") {
            command.env_remove(key);
        }
    }
    command.output().expect("the lifeboat binary runs").into()
}

/// Runs `lifeboat ARGS` from the project root with extra environment variables.
pub fn lifeboat_env(args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_lifeboat"));
    command.args(args).current_dir(root());
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().expect("the lifeboat binary runs").into()
}

pub fn lifeboat(args: &[&str]) -> Run {
    lifeboat_in(&root(), args)
}

/// Copies a directory tree.
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A Git work tree in a temporary directory, committed to with fixed author and time so commit
/// ids are stable.
pub struct GitRepo {
    pub dir: tempfile::TempDir,
    pub repo: Repository,
    commits: i64,
}

impl GitRepo {
    pub fn new() -> GitRepo {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init(dir.path()).unwrap();
        GitRepo { dir, repo, commits: 0 }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn write(&self, path: &str, text: &str) {
        let file = self.path().join(path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, text).unwrap();
    }

    pub fn read(&self, path: &str) -> String {
        std::fs::read_to_string(self.path().join(path)).unwrap()
    }

    /// Replaces exactly one occurrence of `from` in a file.
    pub fn edit(&self, path: &str, from: &str, to: &str) {
        let text = self.read(path);
        assert_eq!(text.matches(from).count(), 1, "{from:?} should occur once in {path}");
        self.write(path, &text.replacen(from, to, 1));
    }

    /// Commits the whole work tree, returning the commit id.
    pub fn commit(&mut self, message: &str) -> String {
        let mut index = self.repo.index().unwrap();
        index.add_all(["*"], IndexAddOption::DEFAULT, None).unwrap();
        index.update_all(["*"], None).unwrap();
        index.write().unwrap();
        let tree = self.repo.find_tree(index.write_tree().unwrap()).unwrap();
        self.commits += 1;
        let when = git2::Time::new(1_700_000_000 + self.commits * 60, 0);
        let signature = Signature::new("Test", "test@example.invalid", &when).unwrap();
        let parent = self.repo.head().ok().map(|h| h.peel_to_commit().unwrap());
        let parents: Vec<&git2::Commit> = parent.iter().collect();
        self.repo.commit(Some("HEAD"), &signature, &signature, message, &tree, &parents).unwrap().to_string()
    }
}

pub mod containerd;
pub mod cosign;
/// The in-process fake Kubernetes API server of the cluster module's tests, compiled into the
/// integration tests too (its own unit tests come along).
#[allow(dead_code)]
#[path = "../../../src/cluster/fake.rs"]
pub mod fake_api;
pub mod images;
pub mod netns;
pub mod proxy;
pub mod referrers;
pub mod registry;
pub mod site;
pub mod token;

/// Polls `check` until it returns `Some`, or panics after `limit` naming `what`.
pub fn wait_for<T>(what: &str, limit: std::time::Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// A new ed25519 key pair without a passphrase, from `ssh-keygen`: `dir/name` and
/// `dir/name.pub`. Returns the private key's path.
pub fn ssh_key(dir: &Path, name: &str) -> PathBuf {
    let key = dir.join(name);
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    key
}

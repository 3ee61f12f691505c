//! Checkout, export and publish against real repositories: a bare "remote" in a temporary
//! folder, reached by path or file:// URL, and other clones that push to it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use git2::build::TreeUpdateBuilder;
use git2::{FileMode, Oid, Repository, Signature, TreeWalkMode, TreeWalkResult};

use super::*;

/// A bare repository standing in for the Git server.
struct Remote {
    dir: tempfile::TempDir,
}

impl Remote {
    fn new() -> Remote {
        let dir = tempfile::tempdir().unwrap();
        Repository::init_bare(dir.path()).unwrap();
        Remote { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn url(&self) -> String {
        format!("file://{}", self.path().display())
    }

    fn repo(&self) -> Repository {
        Repository::open_bare(self.path()).unwrap()
    }

    fn head(&self, branch: &str) -> Option<Oid> {
        self.repo().refname_to_id(&format!("refs/heads/{branch}")).ok()
    }

    /// The first-parent history of `branch`, newest first.
    fn history(&self, branch: &str) -> Vec<Oid> {
        let repo = self.repo();
        let mut walk = repo.revwalk().unwrap();
        walk.push(self.head(branch).unwrap()).unwrap();
        walk.simplify_first_parent().unwrap();
        walk.map(Result::unwrap).collect()
    }

    /// Every file of `branch`, by path.
    fn files(&self, branch: &str) -> BTreeMap<String, String> {
        let repo = self.repo();
        let tree = repo.find_commit(self.head(branch).unwrap()).unwrap().tree().unwrap();
        let mut files = BTreeMap::new();
        tree.walk(TreeWalkMode::PreOrder, |parent, entry| {
            if let Ok(blob) = entry.to_object(&repo).unwrap().into_blob() {
                files.insert(
                    format!("{parent}{}", entry.name().unwrap()),
                    String::from_utf8_lossy(blob.content()).into_owned(),
                );
            }
            TreeWalkResult::Ok
        })
        .unwrap();
        files
    }

    /// From a fresh clone of its own: commits `changes` (a path and new text, or `None` to
    /// delete) on top of `branch` and pushes, as another writer would.
    fn push_change(&self, branch: &str, changes: &[(&str, Option<&str>)], message: &str) -> Oid {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init_bare(dir.path()).unwrap();
        let mut origin = repo.remote("origin", &self.url()).unwrap();
        let parent = self.head(branch).map(|head| {
            origin.fetch(&[format!("refs/heads/{branch}")], None, None).unwrap();
            repo.find_commit(head).unwrap()
        });
        let base = match &parent {
            Some(commit) => commit.tree().unwrap(),
            None => repo.find_tree(repo.treebuilder(None).unwrap().write().unwrap()).unwrap(),
        };
        let mut update = TreeUpdateBuilder::new();
        for (path, text) in changes {
            match text {
                Some(text) => update.upsert(*path, repo.blob(text.as_bytes()).unwrap(), FileMode::Blob),
                None => update.remove(*path),
            };
        }
        let tree = repo.find_tree(update.create_updated(&repo, &base).unwrap()).unwrap();
        let signature =
            Signature::new("Someone Else", "else@example.invalid", &git2::Time::new(1_700_000_000, 0)).unwrap();
        let parents: Vec<&git2::Commit<'_>> = parent.iter().collect();
        let commit = repo.commit(None, &signature, &signature, message, &tree, &parents).unwrap();
        origin.push(&[format!("{commit}:refs/heads/{branch}")], None).unwrap();
        commit
    }
}

/// A remote whose `main` holds desired state, a README and an old status report.
fn seeded() -> Remote {
    let remote = Remote::new();
    remote.push_change(
        "main",
        &[
            ("README.md", Some("# desired state\n")),
            ("desired/mirrors.yaml", Some("kind: MirrorSet\n")),
            ("desired/registries/hub.yaml", Some("kind: Registry\n")),
            ("status/summary.yaml", Some("ok: true\n")),
            ("status/MirrorSet/old.yaml", Some("stale: true\n")),
        ],
        "seed",
    );
    remote
}

fn checkout(remote: &Remote) -> (tempfile::TempDir, Checkout) {
    let dir = tempfile::tempdir().unwrap();
    let checkout = Checkout::open(&dir.path().join("clone"), &remote.url(), Credentials::default()).unwrap();
    (dir, checkout)
}

fn request(branch: &str) -> Publish {
    Publish {
        branch: branch.to_string(),
        path: "status".to_string(),
        author_name: "Lifeboat".to_string(),
        author_email: "lifeboat@example.invalid".to_string(),
        message: "Status report".to_string(),
        attempts: 5,
        backoff: Duration::ZERO,
    }
}

fn files(entries: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
    entries.iter().map(|(path, text)| (path.to_string(), text.as_bytes().to_vec())).collect()
}

/// Every file below `dir`, by `/`-separated path.
fn on_disk(dir: &Path) -> BTreeMap<String, String> {
    fn walk(dir: &Path, prefix: &str, out: &mut BTreeMap<String, String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let path = format!("{prefix}{}", entry.file_name().to_str().unwrap());
            if entry.file_type().unwrap().is_dir() {
                walk(&entry.path(), &format!("{path}/"), out);
            } else {
                out.insert(path, std::fs::read_to_string(entry.path()).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, "", &mut out);
    out
}

fn text(entries: &[(&str, &str)]) -> BTreeMap<String, String> {
    entries.iter().map(|(path, text)| (path.to_string(), text.to_string())).collect()
}

#[test]
fn fetch_reports_each_branch_head() {
    let remote = seeded();
    let (_dir, checkout) = checkout(&remote);
    let heads = checkout.fetch(&["main", "status"]).unwrap();
    let main = remote.head("main").unwrap().to_string();
    assert_eq!(heads, BTreeMap::from([("main".to_string(), Some(main.clone())), ("status".to_string(), None)]));
    assert_eq!(checkout.repo.refname_to_id("refs/remotes/origin/main").unwrap().to_string(), main);
}

#[test]
fn fetch_from_an_empty_remote_finds_no_branch() {
    let remote = Remote::new();
    let (_dir, checkout) = checkout(&remote);
    assert_eq!(checkout.fetch(&["main"]).unwrap(), BTreeMap::from([("main".to_string(), None)]));
}

#[test]
fn export_writes_the_files_without_the_status_folder() {
    let remote = seeded();
    let (dir, checkout) = checkout(&remote);
    let head = checkout.fetch(&["main"]).unwrap()["main"].clone().unwrap();
    let dest = dir.path().join("desired");
    std::fs::create_dir_all(dest.join("stale")).unwrap();
    std::fs::write(dest.join("stale/left-over.yaml"), "x").unwrap();

    let whole = checkout.export(&head, None, Some("status"), &dest).unwrap();
    assert_eq!(whole.commit, head);
    assert_eq!(
        on_disk(&dest),
        text(&[
            ("README.md", "# desired state\n"),
            ("desired/mirrors.yaml", "kind: MirrorSet\n"),
            ("desired/registries/hub.yaml", "kind: Registry\n"),
        ])
    );

    // An excluded folder outside `path` changes nothing: the tree is the folder's own.
    let folder = checkout.export(&head, Some("desired"), Some("status"), &dest).unwrap();
    let repo = remote.repo();
    let desired_id = repo.find_commit(Oid::from_str(&head).unwrap()).unwrap().tree().unwrap();
    let desired_id = desired_id.get_path(Path::new("desired")).unwrap().id().to_string();
    assert_eq!(folder.tree, desired_id);
    assert_eq!(
        on_disk(&dest),
        text(&[("mirrors.yaml", "kind: MirrorSet\n"), ("registries/hub.yaml", "kind: Registry\n")])
    );

    // An excluded folder nested inside `path` is left out of both the files and the tree id.
    let nested = checkout.export(&head, Some("desired"), Some("desired/registries"), &dest).unwrap();
    assert_eq!(on_disk(&dest), text(&[("mirrors.yaml", "kind: MirrorSet\n")]));
    assert_ne!(nested.tree, folder.tree);

    // Without an exclusion the status folder is part of the desired state.
    let everything = checkout.export(&head, Some("/"), None, &dest).unwrap();
    assert_ne!(everything.tree, whole.tree);
    assert!(on_disk(&dest).contains_key("status/summary.yaml"));
}

#[test]
fn a_status_only_commit_keeps_the_desired_tree_id() {
    let remote = seeded();
    let (dir, checkout) = checkout(&remote);
    let dest = dir.path().join("desired");
    let first_head = checkout.fetch(&["main"]).unwrap()["main"].clone().unwrap();
    let first = checkout.export(&first_head, None, Some("status"), &dest).unwrap();

    remote.push_change("main", &[("status/summary.yaml", Some("ok: false\n"))], "status only");
    let second_head = checkout.fetch(&["main"]).unwrap()["main"].clone().unwrap();
    let second = checkout.export(&second_head, None, Some("status"), &dest).unwrap();
    assert_ne!(second.commit, first.commit);
    assert_eq!(second.tree, first.tree);

    remote.push_change("main", &[("desired/mirrors.yaml", Some("kind: MirrorSet # changed\n"))], "desired");
    let third_head = checkout.fetch(&["main"]).unwrap()["main"].clone().unwrap();
    let third = checkout.export(&third_head, None, Some("status"), &dest).unwrap();
    assert_ne!(third.tree, first.tree);
}

#[test]
fn export_of_a_missing_folder_names_it() {
    let remote = seeded();
    let (dir, checkout) = checkout(&remote);
    let head = checkout.fetch(&["main"]).unwrap()["main"].clone().unwrap();
    let e = checkout.export(&head, Some("nowhere"), None, &dir.path().join("out")).unwrap_err();
    let message = format!("{e:#}");
    assert!(message.starts_with("exporting `nowhere` of commit"), "{message}");
    assert!(message.contains(&format!("`nowhere` does not exist at commit {head}")), "{message}");

    let e = checkout.export(&head, Some("README.md"), None, &dir.path().join("out")).unwrap_err();
    assert!(format!("{e:#}").contains("`README.md` is a file, not a folder"), "{e:#}");

    let e = checkout.export(&head, Some("status/MirrorSet"), Some("status"), &dir.path().join("out")).unwrap_err();
    assert!(format!("{e:#}").contains("lies inside the excluded folder `status`"), "{e:#}");
}

#[test]
fn publish_commits_exactly_the_status_files() {
    let remote = seeded();
    let (_dir, checkout) = checkout(&remote);
    let before = remote.head("main").unwrap();
    let mut seen = Vec::new();
    let published = checkout
        .publish(&request("main"), |previous| {
            seen.push(previous.clone());
            Some(files(&[("summary.yaml", "ok: false\n"), ("MirrorSet/mirrors.yaml", "copied: 3\n")]))
        })
        .unwrap();
    let Published::Committed { commit, attempts: 1 } = published else {
        panic!("expected one commit on the first try, got {published:?}");
    };
    assert_eq!(seen, [files(&[("summary.yaml", "ok: true\n"), ("MirrorSet/old.yaml", "stale: true\n")])]);
    assert_eq!(remote.head("main").unwrap().to_string(), commit);
    assert_eq!(remote.history("main")[1], before);
    assert_eq!(
        remote.files("main"),
        text(&[
            ("README.md", "# desired state\n"),
            ("desired/mirrors.yaml", "kind: MirrorSet\n"),
            ("desired/registries/hub.yaml", "kind: Registry\n"),
            ("status/MirrorSet/mirrors.yaml", "copied: 3\n"),
            ("status/summary.yaml", "ok: false\n"),
        ])
    );
    let repo = remote.repo();
    let made = repo.find_commit(Oid::from_str(&commit).unwrap()).unwrap();
    assert_eq!(made.author().name().unwrap(), "Lifeboat");
    assert_eq!(made.author().email().unwrap(), "lifeboat@example.invalid");
    assert_eq!(made.message().unwrap(), "Status report");
}

#[test]
fn publishing_the_same_status_again_commits_nothing() {
    let remote = seeded();
    let (_dir, checkout) = checkout(&remote);
    let status = files(&[("summary.yaml", "ok: false\n")]);
    checkout.publish(&request("main"), |_| Some(status.clone())).unwrap();
    let head = remote.head("main");
    assert_eq!(checkout.publish(&request("main"), |_| Some(status.clone())).unwrap(), Published::Unchanged);
    assert_eq!(checkout.publish(&request("main"), |_| None).unwrap(), Published::Unchanged);
    assert_eq!(remote.head("main"), head);
}

#[test]
fn an_empty_status_removes_the_folder_only() {
    let remote = seeded();
    let (_dir, checkout) = checkout(&remote);
    let published = checkout.publish(&request("main"), |_| Some(BTreeMap::new())).unwrap();
    assert!(matches!(published, Published::Committed { .. }), "{published:?}");
    assert_eq!(
        remote.files("main"),
        text(&[
            ("README.md", "# desired state\n"),
            ("desired/mirrors.yaml", "kind: MirrorSet\n"),
            ("desired/registries/hub.yaml", "kind: Registry\n"),
        ])
    );
}

#[test]
fn publish_creates_a_missing_branch() {
    let remote = seeded();
    let (_dir, checkout) = checkout(&remote);
    let main = remote.head("main");
    let mut request = request("lifeboat-status");
    request.path = "clusters/prod/status".to_string();
    let mut seen = Vec::new();
    let published = checkout
        .publish(&request, |previous| {
            seen.push(previous.clone());
            Some(files(&[("summary.yaml", "ok: true\n")]))
        })
        .unwrap();
    assert!(matches!(published, Published::Committed { attempts: 1, .. }), "{published:?}");
    assert_eq!(seen, [BTreeMap::new()]);
    assert_eq!(remote.history("lifeboat-status").len(), 1, "a root commit");
    assert_eq!(remote.files("lifeboat-status"), text(&[("clusters/prod/status/summary.yaml", "ok: true\n")]));
    assert_eq!(remote.head("main"), main);
}

#[test]
fn publish_to_an_empty_remote_with_nothing_to_say_commits_nothing() {
    let remote = Remote::new();
    let (_dir, checkout) = checkout(&remote);
    assert_eq!(checkout.publish(&request("main"), |_| Some(BTreeMap::new())).unwrap(), Published::Unchanged);
    assert_eq!(remote.head("main"), None);
}

/// Regression: another writer pushes between Lifeboat's fetch and its push. The push must be
/// refused rather than forced, and the retry must keep the other writer's commit.
#[test]
fn publish_retries_when_another_writer_pushes_first() {
    let remote = seeded();
    let (_dir, checkout) = checkout(&remote);
    let mut calls = 0;
    let mut competing = None;
    let published = checkout
        .publish(&request("main"), |_previous| {
            calls += 1;
            if calls == 1 {
                competing = Some(remote.push_change(
                    "main",
                    &[("desired/mirrors.yaml", Some("kind: MirrorSet # edited meanwhile\n"))],
                    "edit",
                ));
            }
            Some(files(&[("summary.yaml", "ok: false\n")]))
        })
        .unwrap();
    let Published::Committed { commit, attempts } = published else {
        panic!("expected a commit, got {published:?}");
    };
    assert_eq!((calls, attempts), (2, 2));
    let history = remote.history("main");
    assert_eq!(history[0].to_string(), commit);
    assert_eq!(Some(history[1]), competing, "the competing commit stays, under Lifeboat's");
    let files = remote.files("main");
    assert_eq!(files["desired/mirrors.yaml"], "kind: MirrorSet # edited meanwhile\n");
    assert_eq!(files["status/summary.yaml"], "ok: false\n");
    assert!(!files.contains_key("status/MirrorSet/old.yaml"));
}

#[test]
fn publish_gives_up_after_the_attempts() {
    let remote = seeded();
    let (_dir, checkout) = checkout(&remote);
    let mut request = request("main");
    request.attempts = 3;
    let mut calls = 0;
    let mut last = None;
    let e = checkout
        .publish(&request, |_| {
            calls += 1;
            last = Some(remote.push_change("main", &[("README.md", Some(&format!("edit {calls}\n")))], "edit"));
            Some(files(&[("summary.yaml", "ok: false\n")]))
        })
        .unwrap_err();
    let message = format!("{e:#}");
    assert!(message.starts_with(&format!("publishing status to main of {}", remote.url())), "{message}");
    assert!(message.contains("rejected 3 times in a row"), "{message}");
    assert_eq!(calls, 3);
    assert_eq!(remote.head("main"), last);
    assert_eq!(remote.files("main")["status/summary.yaml"], "ok: true\n");
}

#[test]
fn publish_refuses_paths_outside_the_status_folder() {
    let remote = seeded();
    let (_dir, checkout) = checkout(&remote);
    let head = remote.head("main");
    for bad in ["../README.md", "a//b", "/abs", ".git/config"] {
        let e = checkout.publish(&request("main"), |_| Some(files(&[(bad, "x")]))).unwrap_err();
        assert!(format!("{e:#}").contains("is not a file path relative to the folder"), "{bad}: {e:#}");
    }
    let mut root = request("main");
    root.path = "/".to_string();
    assert!(checkout.publish(&root, |_| None).is_err());
    assert_eq!(remote.head("main"), head);
}

#[test]
fn open_reuses_the_clone_and_follows_a_new_url() {
    let first = seeded();
    let second = seeded();
    let dir = tempfile::tempdir().unwrap();
    let clone = dir.path().join("clone");
    Checkout::open(&clone, first.path().to_str().unwrap(), Credentials::default()).unwrap().fetch(&["main"]).unwrap();
    let checkout = Checkout::open(&clone, &second.url(), Credentials::default()).unwrap();
    let heads = checkout.fetch(&["main"]).unwrap();
    assert_eq!(heads["main"], second.head("main").map(|h| h.to_string()));
    assert_eq!(checkout.repo.find_remote("origin").unwrap().url().unwrap(), second.url());
}

#[test]
fn errors_name_the_remote_and_the_operation_without_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let missing: PathBuf = dir.path().join("no-such-remote");
    let checkout = Checkout::open(&dir.path().join("a"), missing.to_str().unwrap(), Credentials::default()).unwrap();
    let e = checkout.fetch(&["main"]).unwrap_err();
    assert!(format!("{e:#}").starts_with(&format!("fetching main from {}: ", missing.display())), "{e:#}");

    // Port 1 on loopback refuses the connection at once.
    let credentials = Credentials { password: Some(Secret::new("hunter2")), ..Credentials::default() };
    let url = "https://bot:hunter2@127.0.0.1:1/desired.git";
    let checkout = Checkout::open(&dir.path().join("b"), url, credentials).unwrap();
    let e = checkout.fetch(&["main"]).unwrap_err();
    let message = format!("{e:#} {e:?} {checkout:?}");
    assert!(message.starts_with("fetching main from https://bot@127.0.0.1:1/desired.git: "), "{message}");
    assert!(!message.contains("hunter2"), "{message}");

    let e =
        Checkout::open(&dir.path().join("c"), "git@git.example:org/desired.git", Credentials::default()).unwrap_err();
    let message = format!("{e:#}");
    assert!(message.starts_with("opening the local clone of git@git.example:org/desired.git in "), "{message}");
    assert!(message.contains("needs a known_hosts file"), "{message}");
}

#[test]
fn a_checkout_can_move_to_a_blocking_thread() {
    fn send<T: Send + 'static>() {}
    send::<Checkout>();
}

/// Desired state read from Git objects: a blob over the size limit is refused by its size,
/// without loading it, and YAML files under names that are not UTF-8 are listed with the
/// reason instead of skipped (a folder with such a name used to stop the whole walk).
#[test]
fn tree_source_refuses_huge_blobs_and_reports_names_that_are_not_utf8() {
    use crate::desired::source::{MAX_FILE_BYTES, Unreadable};

    let dir = tempfile::tempdir().unwrap();
    let repo = Repository::init_bare(dir.path()).unwrap();
    let blob = |text: &[u8]| repo.blob(text).unwrap();
    let mut folder = repo.treebuilder(None).unwrap();
    folder.insert(&b"inside.yaml"[..], blob(b"a: 1\n"), FileMode::Blob.into()).unwrap();
    let folder = folder.write().unwrap();
    let huge = vec![b'a'; MAX_FILE_BYTES as usize + 1];
    let mut root = repo.treebuilder(None).unwrap();
    root.insert("ok.yaml", blob(b"a: 1\n"), FileMode::Blob.into()).unwrap();
    root.insert("huge.yaml", blob(&huge), FileMode::Blob.into()).unwrap();
    root.insert(&b"caf\xe9.yaml"[..], blob(b"a: 1\n"), FileMode::Blob.into()).unwrap();
    root.insert(&b"d\xffir"[..], folder, FileMode::Tree.into()).unwrap();
    root.insert(&b"n\xe9.txt"[..], blob(b"not desired state\n"), FileMode::Blob.into()).unwrap();
    let tree = repo.find_tree(root.write().unwrap()).unwrap();
    let signature = Signature::new("Test", "test@example.invalid", &git2::Time::new(1_700_000_000, 0)).unwrap();
    repo.commit(Some("HEAD"), &signature, &signature, "odd files", &tree, &[]).unwrap();

    let source = TreeSource::read(dir.path(), "HEAD", None).unwrap();
    let files = source.yaml_files().unwrap();
    let listed: Vec<(&str, &str, &Result<String, Unreadable>)> =
        files.iter().map(|f| (f.path.as_str(), f.display.as_str(), &f.text)).collect();
    assert_eq!(
        listed,
        [
            ("caf\\xE9.yaml", "HEAD:caf\\xE9.yaml", &Err(Unreadable::NameNotUtf8)),
            ("d\\xFFir/inside.yaml", "HEAD:d\\xFFir/inside.yaml", &Err(Unreadable::NameNotUtf8)),
            ("huge.yaml", "HEAD:huge.yaml", &Err(Unreadable::TooLarge { bytes: MAX_FILE_BYTES + 1, line: None })),
            ("ok.yaml", "HEAD:ok.yaml", &Ok("a: 1\n".to_string())),
        ]
    );
    assert!(source.has_file("ok.yaml") && !source.has_file("n\\xE9.txt"));
}

/// A file whose name is not UTF-8 used to fail the whole export ("a file name is not UTF-8",
/// naming none); it is written as it is named, and the loader reports it by name.
#[test]
fn export_writes_names_that_are_not_utf8_for_the_loader_to_report() {
    let remote = Remote::new();
    let repo = remote.repo();
    let mut root = repo.treebuilder(None).unwrap();
    root.insert("ok.yaml", repo.blob(b"a: 1\n").unwrap(), FileMode::Blob.into()).unwrap();
    root.insert(&b"caf\xe9.yaml"[..], repo.blob(b"a: 1\n").unwrap(), FileMode::Blob.into()).unwrap();
    let tree = repo.find_tree(root.write().unwrap()).unwrap();
    let signature = Signature::new("Test", "test@example.invalid", &git2::Time::new(1_700_000_000, 0)).unwrap();
    repo.commit(Some("refs/heads/main"), &signature, &signature, "odd name", &tree, &[]).unwrap();

    let (dir, checkout) = checkout(&remote);
    let head = checkout.fetch(&["main"]).unwrap()["main"].clone().unwrap();
    let dest = dir.path().join("desired");
    checkout.export(&head, None, None, &dest).unwrap();
    let named = <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(b"caf\xe9.yaml");
    assert!(dest.join(named).is_file());
    let Err(crate::desired::LoadError::Invalid(diags)) =
        crate::desired::load(&crate::desired::DirectorySource::new(&dest).unwrap().named("desired/"))
    else {
        panic!("a file under a name that is not UTF-8 was taken as desired state");
    };
    let d = diags.iter().next().unwrap();
    assert_eq!(d.file, "desired/caf\\xE9.yaml");
    assert!(d.message.contains("not UTF-8") && d.hint.as_deref().is_some_and(|h| h.contains("rename")), "{d}");
}

/// From a bare repository of its own, commits the file `path` on top of the remote's `main`
/// and pushes it with the `git` command, as another writer would, fetching again and rebuilding
/// the commit until a push goes through. `git receive-pack` moves the branch with a
/// compare-and-swap under its lock, so these writers never lose each other's commits.
fn git_push_file(remote: &Remote, work: &Path, path: &str) -> Oid {
    let repo = Repository::open_bare(work).unwrap();
    let signature = Signature::new("Someone Else", "else@example.invalid", &git2::Time::new(1_700_000_000, 0)).unwrap();
    for _ in 0..500 {
        let fetched = std::process::Command::new("git")
            .arg("-C")
            .arg(work)
            .args(["fetch", "-q", &remote.url(), "+refs/heads/main:refs/heads/base"])
            .status()
            .unwrap();
        assert!(fetched.success());
        let parent = repo.find_reference("refs/heads/base").unwrap().peel_to_commit().unwrap();
        let mut update = TreeUpdateBuilder::new();
        update.upsert(path, repo.blob(path.as_bytes()).unwrap(), FileMode::Blob);
        let tree = repo.find_tree(update.create_updated(&repo, &parent.tree().unwrap()).unwrap()).unwrap();
        let commit = repo.commit(None, &signature, &signature, path, &tree, &[&parent]).unwrap();
        let pushed = std::process::Command::new("git")
            .arg("-C")
            .arg(work)
            .args(["push", "-q", &remote.url(), &format!("{commit}:refs/heads/main")])
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        if pushed.success() {
            return commit;
        }
    }
    panic!("{path} could not be pushed");
}

/// Status pushes to a file:// remote lost 2 of 60 commits others pushed meanwhile: libgit2's
/// local transport checks for a fast-forward against the branch as it was when it connected,
/// then overwrites the branch whatever it holds by then. Sixty commits pushed with `git` from
/// six threads while Lifeboat publishes twenty large statuses: every one of them stays on the
/// branch, every status Lifeboat committed too, and the branch ends with Lifeboat's last one.
#[test]
fn publishing_never_overwrites_commits_others_push_meanwhile() {
    let remote = seeded();
    let (_dir, checkout) = checkout(&remote);
    let mut request = request("main");
    request.attempts = 200;
    request.backoff = Duration::from_millis(1);
    let (others, ours) = std::thread::scope(|scope| {
        let writers: Vec<_> = (0..6)
            .map(|writer| {
                let remote = &remote;
                scope.spawn(move || {
                    let work = tempfile::tempdir().unwrap();
                    Repository::init_bare(work.path()).unwrap();
                    (0..10)
                        .map(|i| git_push_file(remote, work.path(), &format!("others/{writer}-{i}")))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let ours: Vec<Oid> = (0..20)
            .filter_map(|n| {
                // A large status makes each push slow, as a real one over many images is.
                let mut noise = vec![0u8; 1 << 20];
                fastrand::Rng::with_seed(n).fill(&mut noise);
                let mut status = files(&[("summary.yaml", &format!("pass: {n}\n"))]);
                status.insert("noise.bin".into(), noise);
                match checkout.publish(&request, |_| Some(status.clone())).unwrap() {
                    Published::Committed { commit, .. } => Some(Oid::from_str(&commit).unwrap()),
                    Published::Unchanged => None,
                }
            })
            .collect();
        let others: Vec<Oid> = writers.into_iter().flat_map(|w| w.join().unwrap()).collect();
        (others, ours)
    });
    assert_eq!((others.len(), ours.len()), (60, 20));
    let repo = remote.repo();
    let head = remote.head("main").unwrap();
    let lost: Vec<&Oid> = others
        .iter()
        .chain(&ours)
        .filter(|id| **id != head && !repo.graph_descendant_of(head, **id).unwrap())
        .collect();
    assert!(lost.is_empty(), "{} of 80 commits are no longer on main: {lost:?}", lost.len());
    let files = remote.files("main");
    assert_eq!(files["status/summary.yaml"], "pass: 19\n");
    assert_eq!(files.keys().filter(|k| k.starts_with("others/")).count(), 60);
}

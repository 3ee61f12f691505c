//! Desired state from Git, status committed back, and the daemon: real Git repositories (a
//! bare remote in a temporary folder) and real registries.

use std::io::{Read as _, Write as _};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use git2::{Repository, Signature};

use crate::mirror::{World, rt};
use crate::support::images::layer;
use crate::support::{lifeboat, wait_for};

/// A bare remote holding the desired state, and a clone that pushes to it as a person would.
struct Remote {
    bare: tempfile::TempDir,
    work: tempfile::TempDir,
}

impl Remote {
    fn new() -> Remote {
        let bare = tempfile::tempdir().unwrap();
        Repository::init_bare(bare.path()).unwrap();
        let work = tempfile::tempdir().unwrap();
        let repo = Repository::init(work.path()).unwrap();
        repo.remote("origin", bare.path().to_str().unwrap()).unwrap();
        Remote { bare, work }
    }

    fn url(&self) -> String {
        format!("file://{}", self.bare.path().display())
    }

    /// Commits `files` on top of the remote's `main` (status commits included) and pushes.
    fn push(&self, files: &[(&str, &str)], message: &str) -> String {
        let repo = Repository::open(self.work.path()).unwrap();
        let mut origin = repo.find_remote("origin").unwrap();
        origin.fetch(&["+refs/heads/main:refs/remotes/origin/main"], None, None).unwrap();
        let parent = repo.find_reference("refs/remotes/origin/main").ok().map(|r| r.peel_to_commit().unwrap());
        if let Some(p) = &parent {
            repo.reset(p.as_object(), git2::ResetType::Hard, None).unwrap();
        }
        for (path, text) in files {
            let file = self.work.path().join(path);
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(file, text).unwrap();
        }
        let mut index = repo.index().unwrap();
        index.add_all(["*"], git2::IndexAddOption::DEFAULT, None).unwrap();
        index.write().unwrap();
        let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
        let who = Signature::now("Platform Team", "platform@example.invalid").unwrap();
        let parents: Vec<&git2::Commit> = parent.iter().collect();
        let commit = repo.commit(None, &who, &who, message, &tree, &parents).unwrap();
        repo.reference("refs/heads/work", commit, true, "work").unwrap();
        origin.push(&["refs/heads/work:refs/heads/main"], None).unwrap();
        commit.to_string()
    }

    fn repo(&self) -> Repository {
        Repository::open_bare(self.bare.path()).unwrap()
    }

    fn head(&self) -> String {
        self.repo().find_reference("refs/heads/main").unwrap().peel_to_commit().unwrap().id().to_string()
    }

    /// A file at the head of `main`.
    fn file(&self, path: &str) -> Option<String> {
        let repo = self.repo();
        let tree = repo.find_reference("refs/heads/main").ok()?.peel_to_tree().ok()?;
        let entry = tree.get_path(Path::new(path)).ok()?;
        let blob = repo.find_blob(entry.id()).ok()?;
        Some(String::from_utf8(blob.content().to_vec()).unwrap())
    }

    /// The id of a folder at the head of `main`.
    fn tree_of(&self, path: &str) -> String {
        let repo = self.repo();
        let tree = repo.find_reference("refs/heads/main").unwrap().peel_to_tree().unwrap();
        tree.get_path(Path::new(path)).unwrap().id().to_string()
    }

    /// (author, paths changed) of the head commit.
    fn last_commit(&self) -> (String, Vec<String>) {
        let repo = self.repo();
        let commit = repo.find_reference("refs/heads/main").unwrap().peel_to_commit().unwrap();
        let parent = commit.parent(0).ok().map(|p| p.tree().unwrap());
        let diff = repo.diff_tree_to_tree(parent.as_ref(), Some(&commit.tree().unwrap()), None).unwrap();
        let paths =
            diff.deltas().map(|d| d.new_file().path().or(d.old_file().path()).unwrap().display().to_string()).collect();
        (commit.author().name().unwrap().to_string(), paths)
    }

    /// Commit messages and authors of `main`, newest first.
    fn history(&self) -> Vec<String> {
        let repo = self.repo();
        let mut walk = repo.revwalk().unwrap();
        walk.push_ref("refs/heads/main").unwrap();
        walk.map(|id| {
            let c = repo.find_commit(id.unwrap()).unwrap();
            format!("{}: {}", c.author().name().unwrap(), c.summary().unwrap().unwrap())
        })
        .collect()
    }
}

/// The desired state the World would write, as text.
fn desired_text(world: &World, spec: &str) -> String {
    world.desired(spec);
    std::fs::read_to_string(world.dir.path().join("desired.yaml")).unwrap()
}

/// The MirrorSet spec that mirrors `UP/vendor/app:1.0`.
const APP_1_0: &str = "  images:\n    - source: UP/vendor/app\n      tags: [\"1.0\"]\n";

/// A world whose upstream holds `vendor/app:1.0` (one layer made from `seed`), and a remote
/// whose `desired/mirrors.yaml` mirrors it: (world, image digest, remote, desired text).
fn app_in_git(seed: u64) -> (World, String, Remote, String) {
    let world = World::new();
    let digest = rt().block_on(world.up().image("vendor/app", Some("1.0"), &[layer(seed, 1024)], "linux/amd64")).0;
    let remote = Remote::new();
    let text = desired_text(&world, APP_1_0);
    remote.push(&[("desired/mirrors.yaml", &text)], "mirror 1.0");
    (world, digest, remote, text)
}

fn apply_from(remote: &Remote, extra: &[&str]) -> crate::support::Run {
    let url = remote.url();
    let mut args =
        vec!["apply", "--repo", &url, "--path", "desired", "-o", "json", "--timeout", "3s", "--retries", "1"];
    args.extend_from_slice(extra);
    lifeboat(&args)
}

#[test]
fn apply_from_git_commits_status_once_and_touches_nothing_else() {
    let world = World::new();
    let digest = rt().block_on(world.up().image("vendor/app", Some("1.0"), &[layer(70, 2048)], "linux/amd64")).0;
    let remote = Remote::new();
    let text = desired_text(&world, APP_1_0);
    remote.push(&[("desired/mirrors.yaml", &text), ("README.md", "the team's notes\n")], "mirror vendor/app");
    let desired_tree = remote.tree_of("desired");

    let run = apply_from(&remote, &[]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("status committed"), "{}", run.stderr);
    assert_eq!(rt().block_on(world.mir().digest("mirror/vendor/app", "1.0")), Some(digest.clone()));

    let (author, paths) = remote.last_commit();
    assert_eq!(author, "Lifeboat");
    assert!(paths.iter().all(|p| p.starts_with("status/")), "{paths:?}");
    assert_eq!(remote.file("README.md").unwrap(), "the team's notes\n");
    let set = remote.file("status/MirrorSet/set.yaml").unwrap();
    assert!(set.contains(&format!("mirror: {digest}")) && set.contains("state: inSync"), "{set}");
    let index = remote.file("status/lifeboat.yaml").unwrap();
    assert!(index.contains(&format!("desiredTree: {desired_tree}")), "{index}");
    let report = remote.file("status/README.md").unwrap();
    assert!(report.contains("| Every desired image is in the mirror | PASS | 1 of 1 tags mirrored |"), "{report}");
    assert!(report.contains("| Mirror runs and is healthy | PASS |"), "{report}");

    // Loop-free: the status commit leaves the desired tree as it was, and nothing new is said.
    let head = remote.head();
    let run = apply_from(&remote, &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    if !run.stderr.contains("status unchanged") {
        let repo = remote.repo();
        let new = repo.find_reference("refs/heads/main").unwrap().peel_to_tree().unwrap();
        let old = repo.find_commit(git2::Oid::from_str(&head).unwrap()).unwrap().tree().unwrap();
        let diff = repo.diff_tree_to_tree(Some(&old), Some(&new), None).unwrap();
        let mut text = String::new();
        diff.print(git2::DiffFormat::Patch, |_, _, l| {
            text.push_str(&String::from_utf8_lossy(l.content()));
            true
        })
        .unwrap();
        panic!("{text}");
    }
    assert_eq!(remote.head(), head, "a second pass makes no commit");
}

#[test]
fn an_invalid_desired_state_is_reported_in_status_and_nothing_is_applied() {
    let world = World::new();
    rt().block_on(async {
        let up = world.up();
        up.image("vendor/app", Some("1.0"), &[layer(71, 1024)], "linux/amd64").await;
        up.image("vendor/app", Some("2.0"), &[layer(72, 1024)], "linux/amd64").await;
    });
    let remote = Remote::new();
    let good = desired_text(&world, APP_1_0);
    remote.push(&[("desired/mirrors.yaml", &good)], "mirror 1.0");
    assert_eq!(apply_from(&remote, &[]).code, 0);

    // 2.0 is added, but with a misspelt field: nothing of this commit may be applied.
    let bad = good.replace("tags: [\"1.0\"]", "tags: [\"1.0\", \"2.0\"]\n      platfroms: all");
    remote.push(&[("desired/mirrors.yaml", &bad)], "mirror 2.0 (typo)");
    let run = apply_from(&remote, &[]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    // With -o json the diagnostics are the JSON answer on stdout, like `validate -o json`.
    assert!(run.stdout.contains("mirrors.yaml") && run.stdout.contains("platfroms"), "{}", run.stdout);
    assert_eq!(rt().block_on(world.mir().digest("mirror/vendor/app", "2.0")), None, "nothing was applied");
    let index = remote.file("status/lifeboat.yaml").unwrap();
    assert!(index.contains("valid: false") && index.contains("platfroms"), "{index}");
    let report = remote.file("status/README.md").unwrap();
    assert!(report.contains("| Desired state valid | FAIL |"), "{report}");
}

/// A running daemon, its logs captured.
struct Daemon {
    child: Child,
    log: Arc<Mutex<String>>,
    address: String,
}

impl Daemon {
    fn start(args: &[&str]) -> Daemon {
        let log_filter: &[&str] = if args.contains(&"--log") { &[] } else { &["--log", "info,lifeboat=debug"] };
        let mut child = Command::new(env!("CARGO_BIN_EXE_lifeboat"))
            .args(["run", "--listen", "127.0.0.1:0"])
            .args(log_filter)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let mut stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let address = wait_for("the daemon to listen", Duration::from_secs(20), || {
            let text = log.lock().unwrap().clone();
            let at = text.find("address=")?;
            let rest = &text[at + "address=".len()..];
            Some(rest.split_whitespace().next()?.to_string())
        });
        Daemon { child, log, address }
    }

    /// One HTTP/1.1 request; (status, body).
    fn request(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, String) {
        let mut stream = std::net::TcpStream::connect(&self.address).unwrap();
        let mut text = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n", self.address);
        for (k, v) in headers {
            text.push_str(&format!("{k}: {v}\r\n"));
        }
        text.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        stream.write_all(text.as_bytes()).unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let status = response.split_whitespace().nth(1).unwrap().parse().unwrap();
        let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
        (status, body)
    }

    fn metrics(&self) -> String {
        self.request("GET", "/metrics", &[], "").1
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// SIGTERM, then the exit code, within `limit`.
    fn terminate(mut self, limit: Duration) -> i32 {
        Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        wait_for("the daemon to stop", limit, || self.child.try_wait().unwrap()).code().unwrap()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn github_signature(secret: &str, body: &str) -> String {
    use hmac::Mac as _;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    let hex: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

#[test]
fn the_daemon_follows_pushes_survives_an_outage_and_stops_on_sigterm() {
    const TOKEN: &str = "trigger-token-4d1f9";
    const SECRET: &str = "webhook-secret-77a0c";
    let mut world = World::new();
    let first = rt().block_on(world.up().image("vendor/app", Some("1.0"), &[layer(80, 4096)], "linux/amd64")).0;
    let second = rt().block_on(world.up().image("vendor/app", Some("1.1"), &[layer(81, 4096)], "linux/amd64")).0;
    let remote = Remote::new();
    let text = desired_text(
        &world,
        "  schedule: \"0 0 1 1 *\"\n  images:\n    - source: UP/vendor/app\n      tags: [\"1.0\"]\n",
    );
    remote.push(&[("desired/mirrors.yaml", &text)], "mirror 1.0");
    let secrets = tempfile::tempdir().unwrap();
    std::fs::write(secrets.path().join("token"), TOKEN).unwrap();
    std::fs::write(secrets.path().join("webhook"), SECRET).unwrap();
    let url = remote.url();
    let token_file = secrets.path().join("token").display().to_string();
    let webhook_file = secrets.path().join("webhook").display().to_string();
    let daemon = Daemon::start(&[
        "--repo",
        &url,
        "--path",
        "desired",
        "--poll",
        "1h",
        "--timeout",
        "2s",
        "--retries",
        "0",
        "--trigger-token-file",
        &token_file,
        "--webhook-secret-file",
        &webhook_file,
    ]);
    let mirror = world.mir();
    let mirrored = |tag: &str| rt().block_on(mirror.digest("mirror/vendor/app", tag));
    wait_for("the first pass to mirror 1.0", Duration::from_secs(30), || {
        (mirrored("1.0") == Some(first.clone())).then_some(())
    });
    wait_for("a status commit", Duration::from_secs(30), || {
        remote.file("status/MirrorSet/set.yaml").filter(|s| s.contains(&first))
    });
    assert_eq!(daemon.request("GET", "/readyz", &[], "").0, 200);
    wait_for("metrics of the pass", Duration::from_secs(10), || {
        daemon.metrics().contains("lifeboat_images_mirrored{mirror_set=\"set\"} 1").then_some(())
    });

    // A merged pull request, announced by a GitHub push webhook: applied within seconds.
    remote.push(&[("desired/mirrors.yaml", &text.replace("[\"1.0\"]", "[\"1.0\", \"1.1\"]"))], "mirror 1.1");
    let event = r#"{"ref":"refs/heads/main"}"#;
    let forged =
        daemon.request("POST", "/webhook", &[("X-GitHub-Event", "push"), ("X-Hub-Signature-256", "sha256=00")], event);
    assert_eq!(forged.0, 401, "{forged:?}");
    let signature = github_signature(SECRET, event);
    let accepted =
        daemon.request("POST", "/webhook", &[("X-GitHub-Event", "push"), ("X-Hub-Signature-256", &signature)], event);
    assert_eq!(accepted.0, 202, "{accepted:?}");
    wait_for("1.1 to be mirrored after the webhook", Duration::from_secs(30), || {
        (mirrored("1.1") == Some(second.clone())).then_some(())
    });

    // Upstream is killed in the middle of a pass, while a large layer is on its way: the
    // daemon stays up, the failure is reported, and no tag points at half-copied content.
    let big = layer(82, 96 << 20);
    let big_digest = crate::support::images::digest_of(&big);
    let third = rt().block_on(world.up().image("vendor/app", Some("1.2"), &[big], "linux/amd64")).0;
    world.mirror.clear_requests();
    remote.push(&[("desired/mirrors.yaml", &text.replace("[\"1.0\"]", "[\"1.0\", \"1.1\", \"1.2\"]"))], "mirror 1.2");
    let signature = github_signature(SECRET, event);
    let accepted =
        daemon.request("POST", "/webhook", &[("X-GitHub-Event", "push"), ("X-Hub-Signature-256", &signature)], event);
    assert_eq!(accepted.0, 202, "{accepted:?}");
    wait_for("the large layer to be on its way", Duration::from_secs(30), || {
        world.mirror.requests().iter().any(|(_, path)| path.contains(&big_digest)).then_some(())
    });
    world.upstream.stop();
    wait_for("the failed pass in the metrics", Duration::from_secs(30), || {
        daemon.metrics().contains("lifeboat_sync_runs_total{mirror_set=\"set\",result=\"failure\"} 1").then_some(())
    });
    wait_for("the failure in the status", Duration::from_secs(30), || {
        remote.file("status/MirrorSet/set.yaml").filter(|s| !s.contains("failed: 0") || !s.contains("unknown: 0"))
    });
    assert_eq!(mirrored("1.2"), None, "no tag for what was not copied whole");
    assert_eq!((mirrored("1.0"), mirrored("1.1")), (Some(first.clone()), Some(second.clone())), "mirror untouched");
    world.upstream.restart();
    assert_eq!(daemon.request("POST", "/trigger", &[("Authorization", &format!("Bearer {TOKEN}"))], "").0, 202);
    wait_for("1.2 after upstream came back", Duration::from_secs(60), || {
        (mirrored("1.2") == Some(third.clone())).then_some(())
    });

    // Upstream goes down between passes: the daemon stays up, reports it, and the mirror is
    // untouched.
    world.upstream.stop();
    assert_eq!(daemon.request("POST", "/trigger", &[("Authorization", "Bearer wrong")], "").0, 401);
    assert_eq!(daemon.request("POST", "/trigger", &[("Authorization", &format!("Bearer {TOKEN}"))], "").0, 202);
    wait_for("the outage in the metrics", Duration::from_secs(30), || {
        let m = daemon.metrics();
        (m.contains(&format!("lifeboat_registry_up{{host=\"{}\"}} 0", world.upstream.host))
            && m.contains("lifeboat_sync_runs_total{mirror_set=\"set\",result=\"failure\"} 2"))
        .then_some(())
    });
    wait_for("the outage in the status", Duration::from_secs(30), || {
        remote.file("status/README.md").filter(|r| r.contains("## Registries that could not be reached"))
    });
    assert_eq!(daemon.request("GET", "/healthz", &[], "").0, 200);
    assert_eq!((mirrored("1.0"), mirrored("1.1")), (Some(first.clone()), Some(second.clone())), "mirror untouched");

    // Upstream is back: the next pass recovers, and the status says so.
    world.upstream.restart();
    assert_eq!(daemon.request("POST", "/trigger", &[("Authorization", &format!("Bearer {TOKEN}"))], "").0, 202);
    wait_for("recovery in the status", Duration::from_secs(30), || {
        remote.file("status/README.md").filter(|r| {
            !r.contains("could not be reached") && r.contains("| A sync succeeded within the last 2 hours | PASS |")
        })
    });

    let metrics = daemon.metrics();
    let log = daemon.log();
    let history = remote.history();
    assert!(history.iter().any(|c| c.starts_with("Lifeboat:")), "{history:?}");
    assert!(history.iter().any(|c| c == "Platform Team: mirror 1.1"), "{history:?}");
    let code = daemon.terminate(Duration::from_secs(15));
    assert_eq!(code, 0);
    // No secret in logs, metrics or status.
    let mut status = String::new();
    for path in ["status/README.md", "status/lifeboat.yaml", "status/MirrorSet/set.yaml"] {
        status.push_str(&remote.file(path).unwrap());
    }
    for secret in [TOKEN, SECRET] {
        for (what, text) in [("logs", &log), ("metrics", &metrics), ("status", &status)] {
            assert!(!text.contains(secret), "{what} contain a secret");
        }
    }
}

/// Every tag of the mirror repository resolves, and every blob its manifest names exists.
fn mirror_is_consistent(world: &World, repo: &str) -> usize {
    rt().block_on(async {
        let mir = world.mir();
        let tags = mir.tags(repo).await;
        for tag in &tags {
            let manifest = mir.manifest_json(repo, tag).await.unwrap_or_else(|| panic!("{repo}:{tag} has no manifest"));
            for digest in crate::support::images::blob_digests(&manifest) {
                assert!(mir.blob_exists(repo, &digest).await, "{repo}:{tag} names {digest}, which is missing");
            }
        }
        tags.len()
    })
}

#[test]
fn kill_9_during_a_pass_never_leaves_a_tag_pointing_at_missing_content() {
    let world = World::new();
    let mut images = String::from("  images:\n");
    rt().block_on(async {
        let up = world.up();
        for n in 0..6u64 {
            let repo = format!("vendor/app{n}");
            up.image(&repo, Some("1.0"), &[layer(100 + n, 2 << 20), layer(200 + n, 1 << 20)], "linux/amd64").await;
            images.push_str(&format!("    - source: UP/{repo}\n      tags: [\"1.0\"]\n"));
        }
    });
    world.desired(&images);
    let dir = world.dir.path().to_str().unwrap().to_string();
    for requests in [3usize, 12, 30] {
        world.mirror.clear_requests();
        let mut child = Command::new(env!("CARGO_BIN_EXE_lifeboat"))
            .args(["apply", &dir, "--timeout", "5s"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_for("the pass to reach the mirror", Duration::from_secs(30), || {
            (world.mirror.requests().len() >= requests || child.try_wait().unwrap().is_some()).then_some(())
        });
        let _ = child.kill();
        let _ = child.wait();
        for n in 0..6 {
            mirror_is_consistent(&world, &format!("mirror/vendor/app{n}"));
        }
    }
    let (code, applied) = world.apply();
    assert_eq!(code, 0, "{applied:#}");
    let (code, plan) = world.plan();
    assert_eq!(code, 0, "the next pass converged: {plan:#}");
    for n in 0..6 {
        assert_eq!(mirror_is_consistent(&world, &format!("mirror/vendor/app{n}")), 1);
    }
}

/// Registry, Git, trigger and webhook secrets: none of them in the daemon's logs (at the most
/// verbose level), its metrics or the status it commits.
#[test]
fn no_secret_reaches_logs_metrics_or_status() {
    use crate::support::registry::{Options, TestRegistry, Tls};
    use base64::Engine as _;
    const REGISTRY_PASSWORD: &str = "registry-password-5e2b";
    const GIT_PASSWORD: &str = "git-password-90c3";
    const TOKEN: &str = "trigger-token-a81d";
    const SECRET: &str = "webhook-secret-3f6e";
    let certs = tempfile::tempdir().unwrap();
    let tls = Tls::generate(certs.path());
    let mirror = TestRegistry::start(Options {
        tls: Some(&tls),
        basic_auth: Some(("lifeboat", REGISTRY_PASSWORD)),
        token: None,
    });
    let upstream = TestRegistry::start(Options::default());
    let pusher = crate::support::images::Pusher::new(&upstream.host, None, None);
    rt().block_on(pusher.image("app", Some("1.0"), &[layer(90, 1024)], "linux/amd64"));
    let secrets = tempfile::tempdir().unwrap();
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("lifeboat:{REGISTRY_PASSWORD}"));
    let config = secrets.path().join("config.json");
    std::fs::write(&config, format!(r#"{{"auths": {{"{}": {{"auth": "{basic}"}}}}}}"#, mirror.host)).unwrap();
    for (file, value) in [("git", GIT_PASSWORD), ("token", TOKEN), ("webhook", SECRET)] {
        std::fs::write(secrets.path().join(file), value).unwrap();
    }
    let desired = format!(
        "apiVersion: lifeboat.dev/v1alpha1\nkind: Registry\nmetadata: {{name: up}}\nspec: {{host: \"{}\", insecure: true}}\n---\napiVersion: lifeboat.dev/v1alpha1\nkind: Registry\nmetadata: {{name: mirror}}\nspec:\n  host: \"{}\"\n  caFile: ca.pem\n  credentials: {{dockerConfig: \"{}\"}}\n---\napiVersion: lifeboat.dev/v1alpha1\nkind: MirrorSet\nmetadata: {{name: set}}\nspec:\n  target: \"{}/m\"\n  images:\n    - source: \"{}/app\"\n      tags: [\"1.0\"]\n",
        upstream.host,
        mirror.host,
        config.display(),
        mirror.host,
        upstream.host
    );
    let remote = Remote::new();
    remote.push(&[("desired/mirrors.yaml", &desired), ("desired/ca.pem", &tls.ca_pem)], "mirror app");
    let url = remote.url();
    let file = |name: &str| secrets.path().join(name).display().to_string();
    let (git, token, webhook) = (file("git"), file("token"), file("webhook"));
    let mut daemon = Daemon::start(&[
        "--repo",
        &url,
        "--path",
        "desired",
        "--git-password-file",
        &git,
        "--trigger-token-file",
        &token,
        "--webhook-secret-file",
        &webhook,
        "--log",
        "trace",
    ]);
    wait_for("a status commit with the image mirrored", Duration::from_secs(30), || {
        remote.file("status/MirrorSet/set.yaml").filter(|s| s.contains("state: inSync"))
    });
    // A refused trigger and a refused webhook are logged too: without what was sent.
    daemon.request("POST", "/trigger", &[("Authorization", &format!("Bearer {TOKEN}x"))], "");
    daemon.request(
        "POST",
        "/webhook",
        &[("X-Gitlab-Token", &format!("{SECRET}x")), ("X-Gitlab-Event", "Push Hook")],
        "{}",
    );
    let metrics = daemon.metrics();
    let mut status = String::new();
    for path in ["status/README.md", "status/lifeboat.yaml", "status/MirrorSet/set.yaml"] {
        status.push_str(&remote.file(path).unwrap());
    }
    let _ = daemon.child.kill();
    let _ = daemon.child.wait();
    let log = daemon.log();
    assert!(log.contains("TRACE") || log.contains("DEBUG"), "the log is verbose");
    for secret in [REGISTRY_PASSWORD, basic.as_str(), GIT_PASSWORD, TOKEN, SECRET] {
        for (what, text) in [("logs", &log), ("metrics", &metrics), ("status", &status)] {
            assert!(!text.contains(secret), "{what} contain a secret");
        }
    }
}

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git").arg("-C").arg(dir).args(args).output().unwrap();
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Commits `files` on top of the remote's `main`, signed with the SSH key `key`, and pushes;
/// returns the commit id.
fn push_signed(remote: &Remote, files: &[(&str, &str)], key: &Path) -> String {
    let work = remote.work.path();
    git(work, &["fetch", "-q", "origin", "+refs/heads/main:refs/remotes/origin/main"]);
    git(work, &["reset", "-q", "--hard", "origin/main"]);
    for (path, text) in files {
        let file = work.join(path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, text).unwrap();
    }
    git(work, &["add", "-A"]);
    let signing_key = format!("user.signingkey={}", key.display());
    git(
        work,
        &[
            "-c",
            "user.name=Alice",
            "-c",
            "user.email=alice@example.invalid",
            "-c",
            "gpg.format=ssh",
            "-c",
            &signing_key,
            "commit",
            "-q",
            "-S",
            "-m",
            "signed change",
        ],
    );
    git(work, &["push", "-q", "origin", "HEAD:refs/heads/main"]);
    let head = Command::new("git").arg("-C").arg(work).args(["rev-parse", "HEAD"]).output().unwrap();
    String::from_utf8(head.stdout).unwrap().trim().to_string()
}

#[test]
fn only_a_desired_state_signed_by_a_trusted_key_is_applied() {
    let world = World::new();
    rt().block_on(async {
        let up = world.up();
        up.image("vendor/app", Some("1.0"), &[layer(95, 1024)], "linux/amd64").await;
        up.image("vendor/app", Some("2.0"), &[layer(96, 1024)], "linux/amd64").await;
    });
    let keys = tempfile::tempdir().unwrap();
    let trusted = crate::support::ssh_key(keys.path(), "alice");
    let stranger = crate::support::ssh_key(keys.path(), "mallory");
    let allowed = keys.path().join("allowed_signers");
    let public = std::fs::read_to_string(trusted.with_extension("pub")).unwrap();
    std::fs::write(&allowed, format!("alice@example.invalid {public}")).unwrap();
    let allowed = allowed.display().to_string();
    let remote = Remote::new();
    let text = desired_text(&world, APP_1_0);
    remote.push(&[("README.md", "notes\n")], "start");
    let signed = push_signed(&remote, &[("desired/mirrors.yaml", &text)], &trusted);

    let run = apply_from(&remote, &["--verify-commits", &allowed]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(rt().block_on(world.mir().digest("mirror/vendor/app", "1.0")).is_some());
    // Lifeboat's own (unsigned) status commit on top does not hide the signed change.
    let run = apply_from(&remote, &["--verify-commits", &allowed]);
    assert_eq!(run.code, 0, "{}", run.stderr);

    let more = text.replace("[\"1.0\"]", "[\"1.0\", \"2.0\"]");
    remote.push(&[("desired/mirrors.yaml", &more)], "unsigned change");
    let run = apply_from(&remote, &["--verify-commits", &allowed]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stdout.contains("is not trusted: it is not signed"), "{}", run.stdout);
    push_signed(&remote, &[("desired/mirrors.yaml", &format!("{more}\n"))], &stranger);
    let run = apply_from(&remote, &["--verify-commits", &allowed]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stdout.contains("its key is not in"), "{}", run.stdout);
    assert_eq!(rt().block_on(world.mir().digest("mirror/vendor/app", "2.0")), None, "nothing untrusted applied");
    assert!(remote.file("status/lifeboat.yaml").unwrap().contains("not trusted"));

    // Regression: an unsigned merge whose first parent is an old signed commit must not pass
    // for that commit.
    let work = remote.work.path();
    git(work, &["fetch", "-q", "origin", "+refs/heads/main:refs/remotes/origin/main"]);
    git(work, &["checkout", "-q", "-B", "rollback", &signed]);
    git(
        work,
        &[
            "-c",
            "user.name=M",
            "-c",
            "user.email=m@example.invalid",
            "merge",
            "-q",
            "--no-ff",
            "-s",
            "ours",
            "-m",
            "merge",
            "origin/main",
        ],
    );
    git(work, &["push", "-q", "origin", "HEAD:refs/heads/main"]);
    let run = apply_from(&remote, &["--verify-commits", &allowed]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stdout.contains("is not trusted: it is not signed"), "{}", run.stdout);
}

/// Regression: after a restart, the last successful sync was forgotten until a sync succeeded,
/// so with upstream down the lag alert had nothing to fire on.
#[test]
fn a_restarted_daemon_remembers_the_last_success_from_the_status() {
    let (mut world, _, remote, _) = app_in_git(97);
    let url = remote.url();
    let args = ["--repo", url.as_str(), "--path", "desired", "--timeout", "2s", "--retries", "0"];
    let first = Daemon::start(&args);
    wait_for("a status commit", Duration::from_secs(30), || {
        remote.file("status/lifeboat.yaml").filter(|s| s.contains("result: succeeded"))
    });
    assert_eq!(first.terminate(Duration::from_secs(15)), 0);
    world.upstream.stop();
    let second = Daemon::start(&args);
    let metrics = wait_for("a failed sync after the restart", Duration::from_secs(30), || {
        let m = second.metrics();
        m.contains("lifeboat_sync_runs_total{mirror_set=\"set\",result=\"failure\"} 1").then_some(m)
    });
    let line = metrics
        .lines()
        .find(|l| l.starts_with("lifeboat_sync_last_success_timestamp_seconds{mirror_set=\"set\"}"))
        .unwrap_or_else(|| panic!("no last success after the restart:\n{metrics}"));
    let value: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(value > 1.7e9, "{line}");
}

/// Git's smart HTTP (git-http-backend behind basic auth, on loopback), as https remotes are
/// reached, without TLS.
struct GitHttp {
    child: Child,
    port: u16,
}

impl GitHttp {
    fn start(root: &Path, user: &str, password: &str) -> GitHttp {
        let script = crate::support::root().join("tests/it/support/git_http.py");
        let mut child = Command::new("python3")
            .arg(script)
            .args([root.to_str().unwrap(), user, password])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line).unwrap();
        let port = line.trim().rsplit(':').next().unwrap().parse().unwrap();
        GitHttp { child, port }
    }
}

impl Drop for GitHttp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_remote_over_http_takes_a_password_file_and_refuses_a_wrong_one_clearly() {
    const PASSWORD: &str = "http-git-password-61d2";
    let (_world, _, remote, _) = app_in_git(98);
    let root = remote.bare.path().parent().unwrap();
    let name = remote.bare.path().file_name().unwrap().to_str().unwrap();
    let server = GitHttp::start(root, "platform", PASSWORD);
    let url = format!("http://127.0.0.1:{}/{name}", server.port);
    let secrets = tempfile::tempdir().unwrap();
    let file = secrets.path().join("password");
    let password_file = file.display().to_string();
    let common = ["apply", "--repo", url.as_str(), "--path", "desired", "--git-username", "platform"];

    std::fs::write(&file, "wrong-password").unwrap();
    let run = lifeboat(&[&common[..], &["--git-password-file", &password_file, "--timeout", "3s"]].concat());
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("refused the credentials"), "{}", run.stderr);
    assert!(!run.stderr.contains("wrong-password") && !run.stdout.contains("wrong-password"));

    std::fs::write(&file, format!("{PASSWORD}\n")).unwrap();
    let run = lifeboat(&[&common[..], &["--git-password-file", &password_file, "--timeout", "3s"]].concat());
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stderr.contains("status committed"), "{}", run.stderr);
    assert!(remote.file("status/MirrorSet/set.yaml").is_some(), "the status was pushed over HTTP");
    assert!(!run.stderr.contains(PASSWORD) && !run.stdout.contains(PASSWORD));
}

/// An OpenSSH server on a loopback port that serves Git to one key, as root.
struct SshServer {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl SshServer {
    fn start() -> SshServer {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for key in ["host", "client", "stranger"] {
            let out = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", key, "-f"])
                .arg(d.join(key))
                .output()
                .unwrap();
            assert!(out.status.success());
        }
        std::fs::copy(d.join("client.pub"), d.join("authorized_keys")).unwrap();
        // sshd wants its privilege-separation folder.
        std::fs::create_dir_all("/run/sshd").unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let config = format!(
            "ListenAddress 127.0.0.1\nPort {port}\nHostKey {0}/host\nAuthorizedKeysFile {0}/authorized_keys\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nPidFile {0}/sshd.pid\nPermitRootLogin prohibit-password\n",
            d.display()
        );
        std::fs::write(d.join("sshd_config"), config).unwrap();
        let mut child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(d.join("sshd_config"))
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stderr.take().unwrap()), &mut line).unwrap();
        assert!(line.contains("Server listening"), "sshd did not start: {line}");
        let host = std::fs::read_to_string(d.join("host.pub")).unwrap();
        std::fs::write(d.join("known_hosts"), format!("[127.0.0.1]:{port} {host}")).unwrap();
        SshServer { child, port, dir }
    }
}

impl Drop for SshServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_remote_over_ssh_needs_the_key_and_a_known_host() {
    let (_world, _, remote, _) = app_in_git(99);
    let ssh = SshServer::start();
    let url = format!("ssh://root@127.0.0.1:{}{}", ssh.port, remote.bare.path().display());
    let file = |name: &str| ssh.dir.path().join(name).display().to_string();
    let (client, stranger, known) = (file("client"), file("stranger"), file("known_hosts"));
    let run_with = |key: &str, known_hosts: &str| {
        lifeboat(&[
            "apply",
            "--repo",
            &url,
            "--path",
            "desired",
            "--git-ssh-key",
            key,
            "--git-known-hosts",
            known_hosts,
            "--timeout",
            "3s",
        ])
    };
    let run = run_with(&client, &known);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stderr.contains("status committed"), "{}", run.stderr);
    assert!(remote.file("status/MirrorSet/set.yaml").is_some(), "the status was pushed over ssh");
    // A host key that is not the one known: refused before any key is offered.
    let other = ssh.dir.path().join("other_known_hosts");
    let stranger_key = std::fs::read_to_string(ssh.dir.path().join("stranger.pub")).unwrap();
    std::fs::write(&other, format!("[127.0.0.1]:{} {stranger_key}", ssh.port)).unwrap();
    let run = run_with(&client, other.to_str().unwrap());
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("does not match the ssh-ed25519 key(s)"), "{}", run.stderr);
    // A key the server does not accept.
    let run = run_with(&stranger, &known);
    assert_eq!(run.code, 2, "{}", run.stderr);
}

#[test]
fn the_daemon_reports_an_invalid_push_and_keeps_syncing_the_last_valid_state() {
    const TOKEN: &str = "trigger-token-c5b0";
    let (world, digest, remote, good) = app_in_git(100);
    let secrets = tempfile::tempdir().unwrap();
    std::fs::write(secrets.path().join("token"), TOKEN).unwrap();
    let token_file = secrets.path().join("token").display().to_string();
    let url = remote.url();
    let daemon = Daemon::start(&[
        "--repo",
        &url,
        "--path",
        "desired",
        "--poll",
        "1h",
        "--timeout",
        "2s",
        "--trigger-token-file",
        &token_file,
    ]);
    wait_for("the first status commit", Duration::from_secs(30), || {
        remote.file("status/lifeboat.yaml").filter(|s| s.contains("result: succeeded"))
    });
    remote.push(&[("desired/mirrors.yaml", &good.replace("tags:", "tagz:"))], "a typo");
    let bearer = format!("Bearer {TOKEN}");
    assert_eq!(daemon.request("POST", "/trigger", &[("Authorization", &bearer)], "").0, 202);
    let index = wait_for("the invalid state in the status", Duration::from_secs(30), || {
        remote.file("status/lifeboat.yaml").filter(|s| s.contains("valid: false"))
    });
    assert!(index.contains("tagz"), "{index}");
    assert!(daemon.metrics().contains("lifeboat_desired_state_valid 0"));
    // Nothing of the invalid state was applied, and the last valid one is still synced.
    rt().block_on(async {
        let mirror = world.mir();
        assert_eq!(mirror.digest("mirror/vendor/app", "1.0").await, Some(digest.clone()));
    });
    world.mirror.clear_requests();
    assert_eq!(daemon.request("POST", "/trigger", &[("Authorization", &bearer)], "").0, 202);
    wait_for("a sync of the last valid state", Duration::from_secs(30), || {
        world.mirror.requests().iter().any(|(_, path)| path.contains("mirror/vendor/app/manifests/1.0")).then_some(())
    });
    // Fixed by a revert: valid again.
    remote.push(&[("desired/mirrors.yaml", &good)], "revert the typo");
    assert_eq!(daemon.request("POST", "/trigger", &[("Authorization", &bearer)], "").0, 202);
    wait_for("the state valid again", Duration::from_secs(30), || {
        daemon.metrics().contains("lifeboat_desired_state_valid 1").then_some(())
    });
    wait_for("the status valid again", Duration::from_secs(30), || {
        remote.file("status/lifeboat.yaml").filter(|s| s.contains("valid: true"))
    });
}

#[test]
fn the_daemon_exports_a_backup_on_trigger_and_reports_it_in_status_and_metrics() {
    const TOKEN: &str = "trigger-token-b4c2e";
    let (world, _, remote, text) = app_in_git(41);
    let backups = tempfile::tempdir().unwrap();
    let policy = format!(
        "apiVersion: lifeboat.dev/v1alpha1\nkind: BackupPolicy\nmetadata: {{name: nightly}}\nspec:\n  schedule: \"0 3 * * *\"\n  mirrorSets: [set]\n  destination: {}\n  retention: {{keep: 2}}\n",
        backups.path().display()
    );
    remote.push(&[("desired/mirrors.yaml", &text), ("desired/backup.yaml", &policy)], "nightly backup");
    let token_file = world.dir.path().join("token");
    std::fs::write(&token_file, TOKEN).unwrap();
    let url = remote.url();
    let daemon = Daemon::start(&[
        "--repo",
        &url,
        "--path",
        "desired",
        "--timeout",
        "3s",
        "--trigger-token-file",
        token_file.to_str().unwrap(),
    ]);
    // The schedule says 03:00; before the first sync nothing is exported.
    wait_for("the first sync", Duration::from_secs(30), || {
        remote.file("status/lifeboat.yaml").filter(|s| s.contains("result: succeeded"))
    });
    assert!(std::fs::read_dir(backups.path()).unwrap().next().is_none(), "no export before the schedule or a trigger");
    let status = remote.file("status/BackupPolicy/nightly.yaml").unwrap();
    assert!(status.contains("result: FAIL") && status.contains("no archive in"), "{status}");

    let (code, _) = daemon.request("POST", "/trigger", &[("Authorization", &format!("Bearer {TOKEN}"))], "");
    assert_eq!(code, 202);
    let status = wait_for("the backup in status", Duration::from_secs(60), || {
        remote.file("status/BackupPolicy/nightly.yaml").filter(|s| s.contains("result: PASS"))
    });
    assert!(status.contains("integrity: PASS") && status.contains("encrypted: false"), "{status}");
    assert!(status.contains("checksum: sha256:"), "{status}");
    let metrics = daemon.metrics();
    assert!(metrics.contains("lifeboat_backup_integrity_ok{policy=\"nightly\"} 1"), "{metrics}");
    assert!(metrics.contains("lifeboat_backup_runs_total{policy=\"nightly\",result=\"success\"} 1"), "{metrics}");
    assert!(metrics.contains("lifeboat_backup_encrypted{policy=\"nightly\"} 0"), "{metrics}");
    let readme = remote.file("status/README.md").unwrap();
    assert!(readme.contains("| Air-gapped backups present, under 7 days old, verified | PASS |"), "{readme}");
    let archives: Vec<_> = std::fs::read_dir(backups.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(archives.len(), 2, "the archive and its record: {archives:?}");
}

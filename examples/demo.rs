//! `script/demo`: Lifeboat's main job end to end on this machine, reaching nothing outside it.
//!
//! Two Distribution registries on loopback play the vendor's registry ("upstream") and the
//! internal mirror. Upstream is seeded with generated images signed by a freshly generated
//! cosign key, one of them left unsigned. The desired state is `example-repo/` pointed at the
//! two registries, committed to a bare Git repository. Then, as a team and an operator would:
//! `lifeboat diff` of a pull request as a Markdown comment, `lifeboat plan` and `lifeboat apply`
//! from that repository, what the mirror now holds, the status commit Lifeboat pushed back, and
//! a second `apply` with nothing new to report.
//!
//! Everything lives in one temporary folder (registry storage, Git repositories, Lifeboat's
//! clone), removed at the end, also on failure, Ctrl-C or SIGTERM.
//!
//! The registries, images and signatures come from the integration tests' harness.
//!
//! ```sh
//! cargo build && cargo run --example demo [-- --lifeboat PATH]
//! ```
//! Without `--lifeboat`, the `lifeboat` binary next to this example's target folder is used.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};

use cosign::Key;
use images::{Pusher, layer};
use registry::{Options, TestRegistry};

// The harness of `tests/it/support`, without its `mod.rs` (which runs the binary through
// `CARGO_BIN_EXE_lifeboat`, unknown to examples). Its modules name each other and `wait_for`
// through `super`, so they sit at the root here.
#[allow(dead_code)]
#[path = "../tests/it/support/cosign.rs"]
mod cosign;
#[allow(dead_code)]
#[path = "../tests/it/support/images.rs"]
mod images;
#[allow(dead_code)]
#[path = "../tests/it/support/registry.rs"]
mod registry;
#[allow(dead_code)]
#[path = "../tests/it/support/token.rs"]
mod token;

/// Polls `check` until it returns `Some`, or panics after `limit` naming `what` (or at once
/// after a signal).
fn wait_for<T>(what: &str, limit: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline && !interrupted(), "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Set once a signal arrived: the demo stops, cleans up as on a failure, and exits 130.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// The one folder everything the demo creates lives in.
static ROOT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Whether a failure comes from a signal. Ctrl-C reaches the registries and `lifeboat` as well,
/// so the failure can show before the signal thread has said so: give it a moment.
fn failed_from_signal() -> bool {
    if !interrupted() {
        std::thread::sleep(Duration::from_millis(200));
    }
    interrupted()
}

fn main() -> ExitCode {
    let lifeboat = match lifeboat_binary() {
        Ok(path) => path,
        Err(e) => {
            eprintln!("demo: {e:#}");
            return ExitCode::from(2);
        }
    };
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        // What breaks after a signal breaks because of it: no message.
        if !failed_from_signal() {
            default_hook(info)
        }
    }));
    // A panic (the harness asserts) unwinds through the registries and temporary folders,
    // which stop and remove themselves when dropped.
    let result = std::panic::catch_unwind(|| run(&lifeboat));
    if interrupted() || (!matches!(result, Ok(Ok(()))) && failed_from_signal()) {
        return ExitCode::from(130);
    }
    match result {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            eprintln!("\ndemo failed: {e:#}");
            ExitCode::FAILURE
        }
        Err(_) => ExitCode::FAILURE,
    }
}

/// `--lifeboat PATH`, or `<target>/debug/lifeboat` beside `<target>/debug/examples/demo`.
fn lifeboat_binary() -> anyhow::Result<PathBuf> {
    let mut args = std::env::args().skip(1);
    let path = match (args.next().as_deref(), args.next()) {
        (Some("--lifeboat"), Some(path)) => PathBuf::from(path),
        (None, _) => {
            let exe = std::env::current_exe().context("finding this program")?;
            exe.parent().and_then(Path::parent).context("finding the target folder")?.join("lifeboat")
        }
        _ => bail!("usage: demo [--lifeboat PATH]"),
    };
    ensure!(path.is_file(), "{} does not exist: build it first (cargo build)", path.display());
    Ok(std::fs::canonicalize(&path)?)
}

fn run(lifeboat: &Path) -> anyhow::Result<()> {
    clean_up_on_signal()?;
    let work = tempfile::Builder::new().prefix("lifeboat-demo.").tempdir().context("creating a temporary folder")?;
    let root = work.path().to_path_buf();
    ROOT.set(root.clone()).expect("set once");
    // Every temporary folder of this process (the registries' storage) and of its children
    // (Lifeboat's clone of the desired state) is created inside `root`.
    tempfile::env::override_temp_dir(&root).map_err(|_| anyhow::anyhow!("the temporary folder was already set"))?;

    let result = with_registries(lifeboat, &root);
    work.close().with_context(|| format!("removing {}", root.display()))?;
    let left = children();
    ensure!(left.is_empty(), "processes left running: {left:?}");
    if !interrupted() {
        println!("removed {}; no registry left running", root.display());
    }
    let elapsed = result?;
    println!("\ndemo finished in {:.1} s", elapsed.as_secs_f64());
    Ok(())
}

/// Starts the two registries, shows the demo, and stops them again; returns how long it took.
fn with_registries(lifeboat: &Path, root: &Path) -> anyhow::Result<Duration> {
    let upstream = TestRegistry::start(Options::default());
    let mirror = TestRegistry::start(Options::default());
    let started = Instant::now();
    let result = Demo::new(lifeboat, root, &upstream, &mirror).and_then(Demo::show);
    section("stopping the registries and removing everything the demo created");
    drop(upstream);
    drop(mirror);
    result.map(|()| started.elapsed())
}

/// On SIGINT, SIGTERM or SIGHUP: kills this process's children (the registries, a running
/// `lifeboat` or `git`). The main thread then fails at its next step and unwinds as on any
/// failure, reaping the registries and removing `ROOT`, and exits 130. Should it not within
/// 10 s, or on a second signal, this thread removes `ROOT` and exits. Registered before
/// anything is created.
fn clean_up_on_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let (mut interrupt, mut terminate, mut hangup) = {
        let _guard = rt.enter();
        (signal(SignalKind::interrupt())?, signal(SignalKind::terminate())?, signal(SignalKind::hangup())?)
    };
    std::thread::spawn(move || {
        rt.block_on(async {
            let name = tokio::select! {
                _ = interrupt.recv() => "SIGINT",
                _ = terminate.recv() => "SIGTERM",
                _ = hangup.recv() => "SIGHUP",
            };
            INTERRUPTED.store(true, Ordering::SeqCst);
            eprintln!("\n== {name}: stopping the registries and removing everything the demo created");
            // Twice: a child the main thread was starting at that moment is caught the second time.
            for _ in 0..2 {
                for pid in children() {
                    let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).stderr(Stdio::null()).status();
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
                _ = tokio::time::sleep(Duration::from_secs(10)) => {}
            }
        });
        if let Some(root) = ROOT.get() {
            let _ = std::fs::remove_dir_all(root);
        }
        std::process::exit(130);
    });
    Ok(())
}

/// This process's live (not yet exited) children, from `/proc/*/stat`.
fn children() -> Vec<u32> {
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(|e| {
            let pid: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // `pid (comm) state ppid ...`; comm may hold spaces and parentheses.
            let mut fields = stat.rsplit_once(')')?.1.split_whitespace();
            let (state, ppid) = (fields.next()?, fields.next()?.parse::<u32>().ok()?);
            (ppid == me && state != "Z").then_some(pid)
        })
        .collect()
}

fn section(title: &str) {
    if !interrupted() {
        println!("\n== {title}");
    }
}

/// One image pushed upstream.
struct Seeded {
    repo: &'static str,
    tag: &'static str,
    digest: String,
    platforms: &'static [&'static str],
    signed: bool,
}

struct Demo<'a> {
    lifeboat: &'a Path,
    root: &'a Path,
    upstream: &'a TestRegistry,
    mirror: &'a TestRegistry,
    rt: tokio::runtime::Runtime,
    /// The bare repository Lifeboat follows, and a clone people push to.
    bare: PathBuf,
    clone: PathBuf,
    seeded: Vec<Seeded>,
}

impl<'a> Demo<'a> {
    fn new(
        lifeboat: &'a Path,
        root: &'a Path,
        upstream: &'a TestRegistry,
        mirror: &'a TestRegistry,
    ) -> anyhow::Result<Self> {
        Ok(Demo {
            lifeboat,
            root,
            upstream,
            mirror,
            rt: tokio::runtime::Builder::new_current_thread().enable_all().build()?,
            bare: root.join("desired.git"),
            clone: root.join("clone"),
            seeded: Vec::new(),
        })
    }

    fn url(&self) -> String {
        format!("file://{}", self.bare.display())
    }

    fn show(mut self) -> anyhow::Result<()> {
        section(&format!("registries: upstream at {}, mirror at {} (Distribution, plain HTTP)", self.up(), self.mir()));
        println!("storage, Git repositories and Lifeboat's clone all live in {}", self.root.display());

        let key = Key::generate();
        self.seed(&key);
        self.commit_desired_state(&key)?;
        // Before the first apply: once Lifeboat has committed `status/` inside the desired-state
        // folder, `lifeboat diff` (and `plan`) read those files as desired state and refuse it.
        self.pull_request_diff()?;

        let url = self.url();
        let plan = self.lifeboat(&["plan", "--repo", &url, "--branch", "main"], &[1])?;
        explain(
            plan.code,
            "the plan lists the copies to make, and names tools/busybox:1.36, which the signature policy keeps out \
             (0 in sync, 1 changes to make or images a person must act on, 2 an error or something unobserved)",
        );

        let head_before = self.git_out(&["--git-dir", &self.bare.to_string_lossy(), "rev-parse", "main"])?;
        let apply = self.lifeboat(&["apply", "--repo", &url, "--branch", "main"], &[1])?;
        explain(
            apply.code,
            "expected: every signed image was copied, but the unsigned tools/busybox:1.36 was rejected by the \
             signature policy: the pass is stalled (exit 1) until a person acts; 2 would mean a failure or an outage",
        );
        ensure!(apply.stderr.contains("status committed"), "apply did not commit a status report");

        self.list_mirror()?;
        self.show_status_commit(head_before.trim())?;

        let head = self.git_out(&["--git-dir", &self.bare.to_string_lossy(), "rev-parse", "main"])?;
        let again = self.lifeboat(&["apply", "--repo", &url, "--branch", "main"], &[1])?;
        explain(again.code, "the same rejection; everything else was already in the mirror, so nothing was copied");
        ensure!(
            again.stderr.contains("status unchanged: no commit"),
            "the second apply was expected to commit nothing"
        );
        let head_after = self.git_out(&["--git-dir", &self.bare.to_string_lossy(), "rev-parse", "main"])?;
        ensure!(head == head_after, "the second apply moved main");
        println!("main is still at {}: the report says nothing new, so there is no commit", &head_after[..12]);
        Ok(())
    }

    fn up(&self) -> &str {
        &self.upstream.host
    }

    fn mir(&self) -> &str {
        &self.mirror.host
    }

    /// Pushes the vendor's images upstream and signs all but one with `key`, as cosign does.
    fn seed(&mut self, key: &Key) {
        section(&format!("seeding upstream {} with generated images, signed with a new cosign key", self.up()));
        let up = Pusher::new(self.up(), None, None);
        let seeded = self.rt.block_on(async {
            let mut seeded = Vec::new();
            let glibc_base = layer(1, 256 * 1024);
            for (i, tag) in ["2.39", "2.40"].into_iter().enumerate() {
                let platforms: &[&str] = &["linux/amd64", "linux/arm64"];
                let digest = up.index("vendor/base/glibc", tag, &glibc_base, platforms, 10 + i as u64).await;
                seeded.push(Seeded { repo: "vendor/base/glibc", tag, digest, platforms, signed: true });
            }
            let python_base = layer(2, 256 * 1024);
            for (i, tag) in ["3.11", "3.12", "3.13-rc1"].into_iter().enumerate() {
                let own = layer(20 + i as u64, 4096);
                let layers = [python_base.clone(), own];
                let digest = up.image("vendor/runtime/python", Some(tag), &layers, "linux/amd64").await.0;
                seeded.push(Seeded { repo: "vendor/runtime/python", tag, digest, platforms: &[], signed: true });
            }
            let platforms: &[&str] = &["linux/amd64", "linux/arm64", "linux/s390x"];
            let digest = up.index("vendor/runtime/node", "20", &layer(3, 256 * 1024), platforms, 30).await;
            seeded.push(Seeded { repo: "vendor/runtime/node", tag: "20", digest, platforms, signed: true });
            let layers = [layer(4, 64 * 1024)];
            let digest = up.image("tools/busybox", Some("1.36"), &layers, "linux/amd64").await.0;
            seeded.push(Seeded { repo: "tools/busybox", tag: "1.36", digest, platforms: &[], signed: false });
            for image in seeded.iter().filter(|i| i.signed) {
                up.sign(image.repo, &image.digest, key).await;
            }
            seeded
        });
        for image in &seeded {
            let what = if image.platforms.is_empty() {
                "image linux/amd64".to_string()
            } else {
                format!("index {}", image.platforms.join(", "))
            };
            let signed = if image.signed { "signed" } else { "NOT signed" };
            println!("{:<31} {}  {what}, {signed}", format!("{}:{}", image.repo, image.tag), image.digest);
        }
        println!(
            "signatures are `sha256-<hex>.sig` tags next to each image; the private key never leaves this process"
        );
        self.seeded = seeded;
    }

    fn digest_of(&self, repo: &str, tag: &str) -> &str {
        &self.seeded.iter().find(|i| i.repo == repo && i.tag == tag).expect("seeded").digest
    }

    /// `example-repo/` pointed at the two registries, committed and pushed to `main`.
    fn commit_desired_state(&self, key: &Key) -> anyhow::Result<()> {
        section("the desired state: example-repo/ pointed at the two local registries");
        self.git(&["init", "-q", "--bare", "-b", "main", &self.bare.to_string_lossy()])?;
        self.git(&["init", "-q", "-b", "main", &self.clone.to_string_lossy()])?;
        self.git_in(&["remote", "add", "origin", &self.bare.to_string_lossy()])?;
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("example-repo");
        copy_tree(&example, &self.clone)?;

        let (up, mir) = (self.up(), self.mir());
        self.write("registries.yaml", &registries(up, mir))?;
        self.write("keys/vendor.pub", &key.public_pem)?;
        // The vendor no longer offers distroless here; someone asks for busybox, which it never signed.
        self.edit(
            "mirrors/vendor-base.yaml",
            "    - source: registry.vendor.example/base/distroless\n      tags: [\"12\", \"12-debug\"]\n",
            &format!("    - source: {up}/tools/busybox\n      tags: [\"1.36\"]\n"),
        )?;
        // The pinned Node.js runtime is the index seeded above.
        let pinned = self.read("mirrors/runtimes.yaml")?;
        let at = pinned.find("runtime/node@").context("example-repo/mirrors/runtimes.yaml pins runtime/node")?;
        let old = &pinned[at + "runtime/node@".len()..][..71];
        self.edit("mirrors/runtimes.yaml", old, self.digest_of("vendor/runtime/node", "20"))?;
        self.edit(
            "backups/nightly-airgap.yaml",
            "destination: /var/backups/lifeboat",
            &format!("destination: {}", self.root.join("backups").display()),
        )?;
        let files =
            ["mirrors/vendor-base.yaml", "mirrors/runtimes.yaml", "nodes/critical.yaml", "backups/nightly-airgap.yaml"];
        for file in files {
            let text = self.read(file)?;
            let text = text.replace("registry.vendor.example/", &format!("{up}/vendor/"));
            let text = text.replace("registry.internal.example:5000", mir);
            ensure!(!text.contains(".example"), "{file} names a host of example-repo/ the demo does not replace");
            self.write(file, &text)?;
        }
        println!("copied example-repo/ to a clone of a new bare repository, then:");
        println!(
            "  registries.yaml           Registry documents for {up} (vendor) and {mir} (internal), insecure: true"
        );
        println!("  keys/vendor.pub           the public half of the key generated above");
        println!("  mirrors/vendor-base.yaml  sources at {up}/vendor/..., target {mir}/mirror;");
        println!("                            base/distroless replaced by {up}/tools/busybox:1.36 (not signed)");
        println!("  mirrors/runtimes.yaml     pinned to the digest of vendor/runtime/node:20 seeded above");
        println!("  nodes/, backups/          the mirror host; the backup destination inside the demo's folder");
        print_indented(&self.read("mirrors/vendor-base.yaml")?);

        self.lifeboat(&["validate", &self.clone.to_string_lossy()], &[0])?;
        self.git_in(&["add", "-A"])?;
        self.git_in(&["commit", "-q", "-m", "Mirror the vendor's base images and the pinned Node.js runtime"])?;
        self.git_in(&["push", "-q", "origin", "main"])?;
        println!("committed and pushed to main of {}", self.url());
        Ok(())
    }

    /// Every repository of the mirror, its tags and their digests.
    fn list_mirror(&self) -> anyhow::Result<()> {
        section(&format!("what the mirror {} holds now", self.mir()));
        let catalog: serde_json::Value = serde_json::from_str(&http_get(self.mir(), "/v2/_catalog")?)?;
        let mir = Pusher::new(self.mir(), None, None);
        let mut mirrored = BTreeMap::new();
        for repo in catalog["repositories"].as_array().context("a catalog")? {
            let repo = repo.as_str().context("a repository name")?;
            println!("{}/{repo}", self.mir());
            let tags = self.rt.block_on(mir.tags(repo));
            let mut digests = BTreeMap::new();
            for tag in &tags {
                let digest = self.rt.block_on(mir.digest(repo, tag)).context("a tag's digest")?;
                digests.insert(tag.clone(), digest);
            }
            let upstream_repo = repo.strip_prefix("mirror/").unwrap_or(repo);
            for (tag, digest) in &digests {
                let note = if let Some(signed) = tag.strip_suffix(".sig") {
                    let signed = signed.replacen('-', ":", 1);
                    let of =
                        digests.iter().find(|(t, d)| **d == signed && !t.ends_with(".sig")).map(|(t, _)| t.clone());
                    let of = of.or_else(|| {
                        let upstream = self.seeded.iter().find(|i| i.repo == upstream_repo && i.digest == signed)?;
                        Some(format!("upstream {}", upstream.tag))
                    });
                    format!("cosign signature of {}", of.as_deref().unwrap_or("another digest"))
                } else if let Some(image) = self.seeded.iter().find(|i| i.repo == upstream_repo && i.digest == *digest)
                {
                    format!("the digest of upstream {}", image.tag)
                } else {
                    let manifest = self.rt.block_on(mir.manifest_json(repo, tag)).unwrap_or_default();
                    match manifest["annotations"]["dev.lifeboat.source.digest"].as_str() {
                        Some(source) => format!("own digest: {} of upstream {}", platforms(&manifest), &source[..19]),
                        None => "not from upstream".to_string(),
                    }
                };
                let shown = if tag.len() > 30 {
                    format!("{}….{}", &tag[..19], tag.rsplit('.').next().unwrap())
                } else {
                    tag.clone()
                };
                println!("  {shown:<25} {digest}  {note}");
                mirrored.insert(format!("{upstream_repo}:{tag}"), digest.clone());
            }
        }
        for wanted in [
            "vendor/base/glibc:2.39",
            "vendor/base/glibc:2.40",
            "vendor/runtime/python:3.12",
            "vendor/runtime/node:20-pinned",
        ] {
            ensure!(mirrored.contains_key(wanted), "{wanted} is not in the mirror");
        }
        for unwanted in ["tools/busybox:1.36", "vendor/runtime/python:3.11", "vendor/runtime/python:3.13-rc1"] {
            ensure!(!mirrored.contains_key(unwanted), "{unwanted} is in the mirror");
        }
        println!(
            "tools/busybox:1.36 is not there: nobody signed it. python 3.11 and 3.13-rc1 are left out by the tag rule."
        );
        Ok(())
    }

    /// The commit Lifeboat pushed after `before`, and its DR-readiness report.
    fn show_status_commit(&self, before: &str) -> anyhow::Result<()> {
        let bare = self.bare.to_string_lossy();
        section("git log --oneline main (the bare repository)");
        print!("{}", self.git_out(&["--git-dir", &bare, "log", "--oneline", "main"])?);
        section(&format!("the status commit on top of {}: git show --stat main", &before[..7]));
        print!("{}", self.git_out(&["--git-dir", &bare, "show", "--stat", "--format=%h %an <%ae>: %s", "main"])?);
        section("status/README.md as committed (git show main:status/README.md)");
        print!("{}", self.git_out(&["--git-dir", &bare, "show", "main:status/README.md"])?);
        Ok(())
    }

    /// A pull request against the desired state, as `lifeboat diff` shows it in CI. It stays
    /// open: Lifeboat follows `main`.
    fn pull_request_diff(&self) -> anyhow::Result<()> {
        section("a pull request on branch pr: mirror glibc 2.41, prune, sync every 30 minutes (not merged)");
        self.git_in(&["checkout", "-q", "-b", "pr"])?;
        self.edit("mirrors/vendor-base.yaml", "tags: [\"2.39\", \"2.40\"]", "tags: [\"2.39\", \"2.40\", \"2.41\"]")?;
        self.edit("mirrors/vendor-base.yaml", "schedule: \"0 * * * *\"", "schedule: \"*/30 * * * *\"")?;
        self.edit("mirrors/vendor-base.yaml", "prune: false", "prune: true")?;
        self.git_in(&["commit", "-q", "-am", "Mirror glibc 2.41, prune what leaves the set, sync every 30 minutes"])?;
        self.git_in(&["push", "-q", "origin", "pr"])?;
        print!("{}", self.git_out(&["-C", &self.clone.to_string_lossy(), "diff", "--stat", "main", "pr"])?);
        let clone = self.clone.to_string_lossy();
        let diff =
            self.lifeboat(&["diff", "--repo", &clone, "--base", "main", "--head", "pr", "-o", "markdown"], &[1])?;
        explain(diff.code, "changes found (0 none, 1 changes, 2 error); the text above is ready to post as a comment");
        Ok(())
    }

    /// Runs `lifeboat ARGS` under a section header, prints what it printed (stdout, then
    /// stderr), and fails unless it exited with one of `expected`.
    fn lifeboat(&self, args: &[&str], expected: &[i32]) -> anyhow::Result<Output> {
        section(&format!("lifeboat {}", args.join(" ")));
        ensure!(!interrupted(), "interrupted");
        let mut command = Command::new(self.lifeboat);
        command.args(args).env("TMPDIR", self.root).current_dir(self.root);
        for (key, _) in std::env::vars() {
            if key.starts_with("LIFEBOAT_") {
                command.env_remove(key);
            }
        }
        let out = command.output().with_context(|| format!("running {}", self.lifeboat.display()))?;
        let output = Output {
            code: out.status.code().context("lifeboat was killed")?,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        print!("{}", String::from_utf8_lossy(&out.stdout));
        if !output.stderr.is_empty() {
            println!("-- stderr:");
            print!("{}", output.stderr);
        }
        ensure!(expected.contains(&output.code), "lifeboat {} exited {}, expected {expected:?}", args[0], output.code);
        Ok(output)
    }

    fn git(&self, args: &[&str]) -> anyhow::Result<()> {
        self.git_out(args).map(drop)
    }

    fn git_in(&self, args: &[&str]) -> anyhow::Result<()> {
        let mut all = vec!["-C", self.clone.to_str().context("a UTF-8 path")?];
        all.extend_from_slice(args);
        self.git(&all)
    }

    /// Runs git with a fixed identity, none of the user's configuration, and returns stdout.
    fn git_out(&self, args: &[&str]) -> anyhow::Result<String> {
        ensure!(!interrupted(), "interrupted");
        let out = Command::new("git")
            .args(args)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_AUTHOR_NAME", "Platform Team")
            .env("GIT_AUTHOR_EMAIL", "platform@example.invalid")
            .env("GIT_COMMITTER_NAME", "Platform Team")
            .env("GIT_COMMITTER_EMAIL", "platform@example.invalid")
            .env("TMPDIR", self.root)
            .output()
            .context("running git")?;
        ensure!(out.status.success(), "git {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn read(&self, path: &str) -> anyhow::Result<String> {
        std::fs::read_to_string(self.clone.join(path)).with_context(|| format!("reading {path}"))
    }

    fn write(&self, path: &str, text: &str) -> anyhow::Result<()> {
        std::fs::write(self.clone.join(path), text).with_context(|| format!("writing {path}"))
    }

    /// Replaces every occurrence of `from`, which must occur.
    fn edit(&self, path: &str, from: &str, to: &str) -> anyhow::Result<()> {
        let text = self.read(path)?;
        ensure!(text.contains(from), "{path} of example-repo/ no longer contains {from:?}: update examples/demo.rs");
        self.write(path, &text.replace(from, to))
    }
}

/// What one run of `lifeboat` said on stderr, and its exit code.
struct Output {
    code: i32,
    stderr: String,
}

fn explain(code: i32, why: &str) {
    println!("(exit {code}: {why})");
}

fn print_indented(text: &str) {
    for line in text.lines() {
        println!("    {line}");
    }
}

/// The two Registry documents: both local registries over plain HTTP.
fn registries(up: &str, mirror: &str) -> String {
    format!(
        "# How Lifeboat reaches each registry host: for the demo, two local registries over plain HTTP.
apiVersion: lifeboat.dev/v1alpha1
kind: Registry
metadata:
  name: internal
spec:
  host: \"{mirror}\"
  insecure: true
  limits:
    requestsPerSecond: 50
    concurrency: 16
---
apiVersion: lifeboat.dev/v1alpha1
kind: Registry
metadata:
  name: vendor
spec:
  host: \"{up}\"
  insecure: true
  # Be polite to the vendor: its rate limit is 30 requests per second per client.
  limits:
    requestsPerSecond: 20
    concurrency: 8
"
    )
}

/// `linux/amd64, linux/arm64` for an index.
fn platforms(manifest: &serde_json::Value) -> String {
    let list = manifest["manifests"].as_array().map(Vec::as_slice).unwrap_or_default();
    list.iter()
        .filter_map(|m| Some(format!("{}/{}", m["platform"]["os"].as_str()?, m["platform"]["architecture"].as_str()?)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

/// The body of a plain-HTTP GET (the catalog, which the image client does not offer).
fn http_get(host: &str, path: &str) -> anyhow::Result<String> {
    let mut stream = std::net::TcpStream::connect(host)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").context("an HTTP response")?;
    ensure!(head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"), "GET {path}: {head}");
    Ok(body.to_string())
}

//! `lifeboat node-agent --once --report stdout` against a real containerd over its CRI socket,
//! pulling from real registries on loopback ports. Needs root and containerd (script/setup).

use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde_json::Value;

use crate::mirror::rt;
use crate::support::containerd::Containerd;
use crate::support::images::Pusher;
use crate::support::registry::{Options, TestRegistry};
use crate::support::{Run, lifeboat};

/// A node: containerd, and a folder for the agent's images file, secrets and kubelet config.
struct Node {
    containerd: Containerd,
    files: tempfile::TempDir,
}

impl Node {
    fn start(registries: &[&TestRegistry]) -> Node {
        let containerd = Containerd::start();
        for registry in registries {
            containerd.trust_plain_http(&registry.host);
        }
        Node { containerd, files: tempfile::tempdir().unwrap() }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.files.path().join(name)
    }

    /// Runs one round for `images` with further flags; returns the run and the inventory it
    /// printed, if any.
    fn agent(&self, images: &[&str], flags: &[&str]) -> (Run, Option<Value>) {
        let images_file = self.path("images");
        std::fs::write(&images_file, format!("# the set's images\n{}\n", images.join("\n"))).unwrap();
        let socket = self.containerd.socket();
        let mut args = vec![
            "node-agent",
            "--once",
            "--report",
            "stdout",
            "-o",
            "json",
            "--set",
            "critical",
            "--node-name",
            "node-1",
            "--images-file",
            images_file.to_str().unwrap(),
            "--cri-socket",
            socket.to_str().unwrap(),
        ];
        args.extend_from_slice(flags);
        let run = lifeboat(&args);
        let inventory = serde_json::from_str(run.stdout.trim()).ok();
        (run, inventory)
    }
}

/// The state of `reference` in an inventory, and its reason when missing.
fn state(inventory: &Value, reference: &str) -> (String, String) {
    let image = inventory["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["reference"] == reference)
        .unwrap_or_else(|| panic!("{reference} is in the inventory: {inventory}"));
    (image["state"].as_str().unwrap().to_string(), image["reason"].as_str().unwrap_or_default().to_string())
}

fn printed(run: &Run, parsed: Option<Value>) -> Value {
    parsed.unwrap_or_else(|| panic!("no inventory on stdout (exit {}):\n{}\n{}", run.code, run.stdout, run.stderr))
}

fn manifest_requests(registry: &TestRegistry) -> usize {
    registry.requests().iter().filter(|(_, path)| path.contains("/manifests/")).count()
}

/// Pushes a runnable image to `registry` and returns its reference pinned by digest.
fn push(registry: &TestRegistry, auth: Option<(&str, &str)>, repo: &str, seed: u64) -> String {
    let digest = rt().block_on(Pusher::new(&registry.host, None, auth).runnable_image(repo, "1.0", seed));
    format!("{}/{repo}@{digest}", registry.host)
}

#[test]
fn an_absent_image_is_pulled_and_the_next_round_finds_it_present() {
    let registry = TestRegistry::start(Options::default());
    let image = push(&registry, None, "team/app", 1);
    let node = Node::start(&[&registry]);

    let (run, parsed) = node.agent(&[&image], &[]);
    let first = printed(&run, parsed);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(state(&first, &image).0, "pulled", "{first}");
    assert_eq!((first["node"].as_str(), first["set"].as_str()), (Some("node-1"), Some("critical")));
    assert!(first["runtime"].as_str().unwrap().starts_with("containerd 1.6"), "{first}");
    assert!(manifest_requests(&registry) > 0, "the pull went to the registry");

    let (run, parsed) = node.agent(&[&image], &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(state(&printed(&run, parsed), &image).0, "present");
}

#[test]
fn a_present_image_is_not_pulled_again_and_stays_present_with_its_registry_down() {
    let mut registry = TestRegistry::start(Options::default());
    let image = push(&registry, None, "team/app", 2);
    let node = Node::start(&[&registry]);
    assert_eq!(node.agent(&[&image], &[]).0.code, 0);

    // PullImage would ask the registry for the manifest even now; ImageStatus does not.
    registry.clear_requests();
    let (run, parsed) = node.agent(&[&image], &[]);
    assert_eq!(state(&printed(&run, parsed), &image).0, "present");
    assert_eq!(manifest_requests(&registry), 0, "requests: {:?}", registry.requests());

    registry.stop();
    let (run, parsed) = node.agent(&[&image], &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(state(&printed(&run, parsed), &image).0, "present");
}

#[test]
fn a_registry_with_basic_auth_takes_the_credentials_of_the_pull_secret() {
    const PASSWORD: &str = "pw-5ecret-a8c1";
    let registry = TestRegistry::start(Options { basic_auth: Some(("robot", PASSWORD)), ..Options::default() });
    let image = push(&registry, Some(("robot", PASSWORD)), "team/private", 3);
    let node = Node::start(&[&registry]);
    let secrets = node.path("secrets");
    let write_secret = |password: &str| {
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("robot:{password}"));
        let dir = secrets.join("mirror-pull");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join(".dockerconfigjson"),
            format!(r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#, registry.host),
        )
        .unwrap();
    };
    let secret_flags = ["--pull-secret-dir", secrets.to_str().unwrap(), "--log", "debug"];
    let assert_no_secret = |run: &Run| {
        for secret in [PASSWORD, "wrong-pw-77c2"] {
            assert!(
                !run.stdout.contains(secret) && !run.stderr.contains(secret),
                "a password leaked:\n{}\n{}",
                run.stdout,
                run.stderr
            );
        }
    };

    // No secret mounted at all.
    let (run, parsed) = node.agent(&[&image], &[]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let (state_, reason) = state(&printed(&run, parsed), &image);
    assert_eq!(state_, "missing");
    assert!(reason.contains("without credentials") && reason.contains("401"), "{reason}");
    assert!(reason.contains(&registry.host), "{reason}");

    write_secret("wrong-pw-77c2");
    let (run, parsed) = node.agent(&[&image], &secret_flags);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let (state_, reason) = state(&printed(&run, parsed), &image);
    assert_eq!(state_, "missing");
    assert!(reason.contains("refused the credentials") && reason.contains("mirror-pull"), "{reason}");
    assert_no_secret(&run);

    write_secret(PASSWORD);
    let (run, parsed) = node.agent(&[&image], &secret_flags);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(state(&printed(&run, parsed), &image).0, "pulled");
    assert_no_secret(&run);
}

#[test]
fn an_unreachable_mirror_leaves_its_image_missing_and_the_others_are_still_pulled() {
    let up = TestRegistry::start(Options::default());
    let mut down = TestRegistry::start(Options::default());
    let reachable = push(&up, None, "team/app", 4);
    let unreachable = push(&down, None, "team/app", 5);
    down.stop();
    let node = Node::start(&[&up, &down]);

    let (run, parsed) = node.agent(&[&reachable, &unreachable], &[]);
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    let inventory = printed(&run, parsed);
    assert_eq!(state(&inventory, &reachable).0, "pulled");
    let (state_, reason) = state(&inventory, &unreachable);
    assert_eq!(state_, "missing");
    assert!(reason.contains(&format!("registry {} could not be reached", down.host)), "{reason}");
    assert!(reason.contains("connection refused"), "{reason}");
}

#[test]
fn no_runtime_at_the_socket_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    std::fs::write(&images, "").unwrap();
    let socket = dir.path().join("run/containerd/containerd.sock");
    let run = lifeboat(&[
        "node-agent",
        "--once",
        "--report",
        "stdout",
        "-o",
        "json",
        "--set",
        "critical",
        "--images-file",
        images.to_str().unwrap(),
        "--cri-socket",
        socket.to_str().unwrap(),
    ]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    // No inventory: with -o json the answer on stdout is the error, as a JSON document.
    let answer: Value = serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {}", run.stdout));
    assert!(answer["error"].as_str().is_some_and(|e| e.contains("there is no socket at")), "{answer}");
    assert!(run.stderr.contains(&format!("there is no socket at {}", socket.display())), "{}", run.stderr);
    assert!(run.stderr.contains("--cri-socket"), "{}", run.stderr);
}

#[test]
fn the_kubelets_gc_settings_are_reported_or_why_not() {
    let node = Node::start(&[]);
    let config = node.path("kubelet-config.yaml");
    std::fs::write(
        &config,
        "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nimageGCHighThresholdPercent: 85\n\
         imageGCLowThresholdPercent: 75\nimageMinimumGCAge: 48h0m0s\n",
    )
    .unwrap();
    let (run, parsed) = node.agent(&[], &["--kubelet-config", config.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let inventory = printed(&run, parsed);
    assert_eq!(
        inventory["kubeletGc"],
        serde_json::json!({"highThresholdPercent": 85, "lowThresholdPercent": 75, "minimumAgeSeconds": 172800})
    );
    assert!(inventory.get("kubeletGcError").is_none(), "{inventory}");

    std::fs::write(&config, "kind: KubeletConfiguration\nimageGCHighThresholdPercent: [85\n").unwrap();
    let (run, parsed) = node.agent(&[], &["--kubelet-config", config.to_str().unwrap()]);
    assert_eq!(run.code, 0, "a kubelet configuration that cannot be read is reported, not fatal: {}", run.stderr);
    let inventory = printed(&run, parsed);
    assert!(inventory.get("kubeletGc").is_none(), "{inventory}");
    let error = inventory["kubeletGcError"].as_str().unwrap();
    assert!(error.contains(&config.display().to_string()), "{error}");
}

#[test]
fn an_unreadable_images_file_is_an_error_naming_it() {
    let node = Node::start(&[]);
    let missing: &Path = &node.path("not-mounted/images");
    let socket = node.containerd.socket();
    let run = lifeboat(&[
        "node-agent",
        "--once",
        "--report",
        "stdout",
        "-o",
        "json",
        "--set",
        "critical",
        "--images-file",
        missing.to_str().unwrap(),
        "--cri-socket",
        socket.to_str().unwrap(),
    ]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains(&format!("reading the images file {}", missing.display())), "{}", run.stderr);
}

#[test]
fn reporting_to_kubernetes_needs_the_node_name() {
    let run = lifeboat(&["node-agent", "--once", "--set", "critical", "--images-file", "/nonexistent/images"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("--node-name (LIFEBOAT_NODE_NAME) is needed"), "{}", run.stderr);
    assert!(run.stderr.contains("spec.nodeName"), "{}", run.stderr);
}

#[test]
fn the_loop_survives_a_failing_round_and_stops_on_sigterm() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    use std::sync::{Arc, Mutex};

    let node = Node::start(&[]);
    let images = node.path("images");
    let socket = node.containerd.socket();
    let mut command = Command::new(env!("CARGO_BIN_EXE_lifeboat"));
    command
        .args([
            "node-agent",
            "--report",
            "stdout",
            "-o",
            "json",
            "--set",
            "critical",
            "--node-name",
            "node-1",
            "--interval",
            "100ms",
        ])
        .arg("--images-file")
        .arg(&images)
        .arg("--cri-socket")
        .arg(&socket)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("LIFEBOAT_")) {
        command.env_remove(key);
    }
    /// Kills the agent should an assertion fail first.
    struct Agent(std::process::Child);
    impl Drop for Agent {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut agent = Agent(command.spawn().unwrap());
    let child = &mut agent.0;
    let collect = |stream: Box<dyn std::io::Read + Send>| {
        let lines: Arc<Mutex<Vec<String>>> = Default::default();
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        lines
    };
    let stdout = collect(Box::new(child.stdout.take().unwrap()));
    let stderr = collect(Box::new(child.stderr.take().unwrap()));
    let limit = std::time::Duration::from_secs(30);

    // No images file yet: each round fails, is logged, and the agent keeps going.
    crate::support::wait_for("a failed round in the log", limit, || {
        stderr
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("round failed") && l.contains("reading the images file"))
            .then_some(())
    });
    assert!(child.try_wait().unwrap().is_none(), "the agent exited after a failed round");

    std::fs::write(&images, "").unwrap();
    let report = crate::support::wait_for("a report once the images file exists", limit, || {
        stdout.lock().unwrap().iter().find_map(|l| serde_json::from_str::<Value>(l).ok())
    });
    assert_eq!(report["node"], "node-1");

    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "stderr:\n{}", stderr.lock().unwrap().join("\n"));
}

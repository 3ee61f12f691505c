//! A real containerd (the Debian package) with its CRI plugin, for the node agent's tests: its
//! own root, state, socket and registry hosts folder under a temporary directory, CNI pointed at
//! empty folders (the image service does not need a network). Needs root. Killed and its
//! folder removed when dropped.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lifeboat::nodeagent::ImageRuntime as _;
use lifeboat::nodeagent::cri::CriClient;

/// How long containerd may take to serve CRI (it takes about a second).
const START_LIMIT: Duration = Duration::from_secs(30);

pub struct Containerd {
    dir: tempfile::TempDir,
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl Containerd {
    /// Starts containerd and waits until its CRI service answers; fails the test with the tail
    /// of containerd's log when it does not start.
    pub fn start() -> Containerd {
        let dir = tempfile::tempdir().unwrap();
        let path = |name: &str| dir.path().join(name).display().to_string();
        for folder in ["cni/bin", "cni/conf", "hosts"] {
            std::fs::create_dir_all(dir.path().join(folder)).unwrap();
        }
        let config = format!(
            r#"version = 2
root = "{root}"
state = "{state}"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]

[grpc]
  address = "{socket}"

[ttrpc]
  address = "{socket}.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "{opt}"

[plugins."io.containerd.grpc.v1.cri"]
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "native"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{cni_bin}"
    conf_dir = "{cni_conf}"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "{hosts}"
"#,
            root = path("root"),
            state = path("state"),
            socket = path("containerd.sock"),
            opt = path("opt"),
            cni_bin = path("cni/bin"),
            cni_conf = path("cni/conf"),
            hosts = path("hosts"),
        );
        let config_path = dir.path().join("config.toml");
        std::fs::write(&config_path, config).unwrap();
        let mut child = Command::new("containerd")
            .arg("--config")
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("containerd runs (apt-get install containerd; script/setup installs it)");
        let log: Arc<Mutex<Vec<String>>> = Default::default();
        let stderr = child.stderr.take().unwrap();
        let lines = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        });
        let mut containerd = Containerd { dir, child, log };
        containerd.wait_until_serving();
        containerd
    }

    fn wait_until_serving(&mut self) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let socket = self.socket();
        let deadline = Instant::now() + START_LIMIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("containerd exited ({status}) before serving CRI:\n{}", self.log_tail(30));
            }
            // The socket appears before the CRI plugin has finished starting: ask it.
            if socket.exists()
                && rt.block_on(async { CriClient::connect(&socket).await.ok()?.version().await.ok() }).is_some()
            {
                return;
            }
            if Instant::now() >= deadline {
                panic!("containerd did not serve CRI within {} s:\n{}", START_LIMIT.as_secs(), self.log_tail(30));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("containerd.sock")
    }

    /// The folder containerd's CRI plugin reads `hosts.toml` files from (its `config_path`).
    pub fn hosts_dir(&self) -> PathBuf {
        self.dir.path().join("hosts")
    }

    /// containerd's configuration file (`version = 2`, `config_path` set to [`Self::hosts_dir`]).
    pub fn config_file(&self) -> PathBuf {
        self.dir.path().join("config.toml")
    }

    /// Lets containerd pull from the plain-HTTP registry at `host` (`127.0.0.1:PORT`); read on
    /// every pull, so it may come after the start.
    pub fn trust_plain_http(&self, host: &str) {
        let folder = self.dir.path().join("hosts").join(host);
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::write(folder.join("hosts.toml"), format!("server = \"http://{host}\"\n")).unwrap();
    }

    /// The last `lines` lines of containerd's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log.lock().unwrap();
        log[log.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

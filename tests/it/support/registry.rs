//! Real Distribution registries (`docker-registry`) for tests: each on a free loopback port
//! with its own temporary storage, optionally with TLS (a generated CA and leaf) and htpasswd
//! basic auth. Stopped when dropped; can be paused (SIGSTOP) and restarted on the same port.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::wait_for;

/// A CA and a server certificate for 127.0.0.1 signed by it (rustls refuses a self-signed CA
/// used directly as the server certificate).
pub struct Tls {
    pub ca_pem: String,
    cert_path: PathBuf,
    key_path: PathBuf,
}

impl Tls {
    pub fn generate(dir: &Path) -> Tls {
        use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyPair, SanType};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(rcgen::DnType::CommonName, "lifeboat test CA");
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let leaf_key = KeyPair::generate().unwrap();
        let mut leaf_params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        leaf_params.subject_alt_names.push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
        leaf_params.is_ca = IsCa::ExplicitNoCa;
        leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();
        let cert_path = dir.join("server.pem");
        let key_path = dir.join("server.key");
        std::fs::write(&cert_path, leaf.pem()).unwrap();
        std::fs::write(&key_path, leaf_key.serialize_pem()).unwrap();
        Tls { ca_pem: ca.pem(), cert_path, key_path }
    }
}

/// How to start a registry.
#[derive(Default)]
pub struct Options<'a> {
    pub tls: Option<&'a Tls>,
    /// (user, password) for htpasswd basic auth.
    pub basic_auth: Option<(&'a str, &'a str)>,
    /// Bearer tokens from this token service.
    pub token: Option<&'a super::token::TokenServer>,
}

pub struct TestRegistry {
    /// `127.0.0.1:PORT`
    pub host: String,
    child: Option<Child>,
    dir: tempfile::TempDir,
    log: Arc<Mutex<Vec<String>>>,
}

impl TestRegistry {
    pub fn start(options: Options<'_>) -> TestRegistry {
        let dir = tempfile::tempdir().unwrap();
        let mut config = format!(
            "version: 0.1\nlog:\n  level: info\n  formatter: text\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:0\n",
            dir.path().join("data").display()
        );
        if let Some(tls) = options.tls {
            config.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                tls.cert_path.display(),
                tls.key_path.display()
            ));
        }
        if let Some((user, password)) = options.basic_auth {
            let out = Command::new("htpasswd")
                .args(["-Bbn", user, password])
                .output()
                .expect("htpasswd (apache2-utils) runs");
            assert!(out.status.success(), "htpasswd failed");
            let path = dir.path().join("htpasswd");
            std::fs::write(&path, out.stdout).unwrap();
            config.push_str(&format!("auth:\n  htpasswd:\n    realm: lifeboat-test\n    path: {}\n", path.display()));
        }
        if let Some(token) = options.token {
            config.push_str(&format!(
                "auth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
                token.realm,
                super::token::SERVICE,
                super::token::ISSUER,
                token.root_cert_bundle.display()
            ));
        }
        std::fs::write(dir.path().join("config.yml"), config).unwrap();
        let mut registry = TestRegistry { host: String::new(), child: None, dir, log: Default::default() };
        registry.spawn();
        registry
    }

    fn spawn(&mut self) {
        let mut child = Command::new("docker-registry")
            .arg("serve")
            .arg(self.dir.path().join("config.yml"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("docker-registry runs (apt-get install docker-registry)");
        // The access log goes to stdout, everything else to stderr.
        let stdout: Box<dyn std::io::Read + Send> = Box::new(child.stdout.take().unwrap());
        let stderr: Box<dyn std::io::Read + Send> = Box::new(child.stderr.take().unwrap());
        for stream in [stdout, stderr] {
            let log = self.log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    log.lock().unwrap().push(line);
                }
            });
        }
        self.child = Some(child);
        let log = self.log.clone();
        let address = wait_for("the registry to listen", Duration::from_secs(10), || {
            log.lock().unwrap().iter().rev().find_map(|l| {
                let rest = l.split("listening on ").nth(1)?;
                Some(rest.chars().take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':').collect::<String>())
            })
        });
        if self.host.is_empty() {
            self.host = address;
            // Restarts reuse the port, so references stay valid.
            let config = self.dir.path().join("config.yml");
            let text = std::fs::read_to_string(&config).unwrap().replace("127.0.0.1:0", &self.host);
            std::fs::write(config, text).unwrap();
        }
    }

    fn pid(&self) -> String {
        self.child.as_ref().expect("running").id().to_string()
    }

    /// Kills the process (as an outage would); storage is kept for `restart`.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.log.lock().unwrap().clear();
        self.spawn();
    }

    /// Freezes the process: connections are accepted by the kernel but never answered.
    pub fn pause(&self) {
        assert!(Command::new("kill").args(["-STOP", &self.pid()]).status().unwrap().success());
    }

    pub fn resume(&self) {
        assert!(Command::new("kill").args(["-CONT", &self.pid()]).status().unwrap().success());
    }

    /// Requests served so far, as (method, path), from the access log.
    pub fn requests(&self) -> Vec<(String, String)> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter_map(|line| {
                let request = line.split('"').nth(1)?;
                let mut parts = request.split_whitespace();
                let (method, path, proto) = (parts.next()?, parts.next()?, parts.next()?);
                proto.starts_with("HTTP/").then(|| (method.to_string(), path.to_string()))
            })
            .collect()
    }

    /// Forgets the requests seen so far. The registry writes an access-log line after it has
    /// answered, so lines of finished requests can still be on their way: a marker request is
    /// sent and awaited first, and everything up to it is dropped. Plain-HTTP registries only.
    pub fn clear_requests(&self) {
        use std::io::{Read, Write};
        let marker = format!("/v2/lifeboat-marker-{}/tags/list", fastrand::u64(..));
        let mut stream = std::net::TcpStream::connect(&self.host).unwrap();
        write!(stream, "GET {marker} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", self.host).unwrap();
        let _ = stream.read_to_end(&mut Vec::new());
        wait_for("the marker in the access log", Duration::from_secs(10), || {
            let mut log = self.log.lock().unwrap();
            let at = log.iter().position(|l| l.contains(&marker) && l.contains("HTTP/1.1\""))?;
            log.drain(..=at);
            Some(())
        });
    }

    /// Requests touching blobs (HEAD, GET, uploads, mounts).
    pub fn blob_requests(&self) -> Vec<(String, String)> {
        self.requests().into_iter().filter(|(_, p)| p.contains("/blobs/")).collect()
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        if let Some(child) = &self.child {
            // A paused process must be resumed to die promptly.
            let _ = Command::new("kill").args(["-CONT", &child.id().to_string()]).status();
        }
        self.stop();
    }
}

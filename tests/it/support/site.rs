//! A failover site: an upstream registry, a mirror that `lifeboat apply` fills, a real
//! containerd whose `config_path` is the folder `lifeboat failover render --out` writes, and a
//! kubelet stand-in that asks containerd over its CRI socket exactly as the kubelet does
//! (PullImage with the pull secret's AuthConfig, ImageStatus).

use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::{AuthConfig, ImageSpec, ImageStatusRequest, PullImageRequest};
use tonic::transport::{Channel, Endpoint, Uri};

use super::containerd::Containerd;
use super::images::{OCI_INDEX, OCI_MANIFEST, Pusher, digest_of, layer, tar_layer};
use super::registry::{Options, TestRegistry};
use super::{Run, lifeboat};

pub struct Site {
    pub upstream: TestRegistry,
    pub mirror: TestRegistry,
    pub containerd: Containerd,
    /// The desired-state folder.
    pub dir: tempfile::TempDir,
    /// A folder for anything else the test writes (rendered CRI-O files, skopeo's and podman's).
    pub scratch: tempfile::TempDir,
}

impl Site {
    /// Both registries over plain HTTP, and containerd.
    pub fn start() -> Site {
        Site::with_mirror(Options::default())
    }

    pub fn with_mirror(mirror: Options<'_>) -> Site {
        Site {
            upstream: TestRegistry::start(Options::default()),
            mirror: TestRegistry::start(mirror),
            containerd: Containerd::start(),
            dir: tempfile::tempdir().unwrap(),
            scratch: tempfile::tempdir().unwrap(),
        }
    }

    pub fn up(&self) -> Pusher {
        Pusher::new(&self.upstream.host, None, None)
    }

    /// The upstream's port, for black-holing it.
    pub fn upstream_port(&self) -> u16 {
        self.upstream.host.rsplit(':').next().unwrap().parse().unwrap()
    }

    /// Writes a file of the desired state, with UP and MIR standing for the two hosts.
    pub fn write(&self, name: &str, text: &str) {
        let path = self.dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text.replace("UP", &self.upstream.host).replace("MIR", &self.mirror.host)).unwrap();
    }

    /// Registry documents for both hosts over plain HTTP, one MirrorSet `set` with `target:
    /// MIR/mirror` and these images, and a FailoverSet `nodes` with this spec.
    pub fn desired(&self, images: &str, failover_spec: &str) {
        self.write(
            "registries.yaml",
            &(registry("upstream", "UP", "  insecure: true\n")
                + "---\n"
                + &registry("mirror", "MIR", "  insecure: true\n")),
        );
        self.write(
            "mirrors.yaml",
            &format!("apiVersion: lifeboat.dev/v1alpha1\nkind: MirrorSet\nmetadata: {{name: set}}\nspec:\n  target: MIR/mirror\n  images:\n{images}"),
        );
        self.failover(failover_spec);
    }

    pub fn failover(&self, spec: &str) {
        self.write(
            "failover.yaml",
            &format!("apiVersion: lifeboat.dev/v1alpha1\nkind: FailoverSet\nmetadata: {{name: nodes}}\nspec:\n{spec}"),
        );
    }

    /// `lifeboat apply` of the desired state: the mirror is filled by Lifeboat itself.
    pub fn apply(&self) {
        let dir = self.dir.path().to_str().unwrap();
        let run = lifeboat(&["apply", dir, "--cluster", "off", "--timeout", "5s", "--retries", "1"]);
        assert_eq!(run.code, 0, "apply failed:\n{}\n{}", run.stdout, run.stderr);
    }

    /// `lifeboat failover render --runtime RUNTIME --out OUT` with further flags.
    pub fn render(&self, runtime: &str, out: &Path, flags: &[&str]) -> Run {
        let dir = self.dir.path().to_str().unwrap();
        let mut args = vec!["failover", "render", dir, "--runtime", runtime, "--out", out.to_str().unwrap()];
        args.extend_from_slice(flags);
        lifeboat(&args)
    }

    /// Renders for containerd into its `config_path`, which must succeed.
    pub fn render_for_containerd(&self) {
        let run = self.render("containerd", &self.containerd.hosts_dir(), &[]);
        assert_eq!(run.code, 0, "render failed:\n{}\n{}", run.stdout, run.stderr);
    }

    pub fn kubelet(&self) -> Kubelet {
        Kubelet::connect(&self.containerd.socket())
    }

    /// The upstream reference of `repo` at `tag` or digest.
    pub fn upstream_ref(&self, repo: &str, tag_or_digest: &str) -> String {
        let sep = if tag_or_digest.starts_with("sha256:") { '@' } else { ':' };
        format!("{}/{repo}{sep}{tag_or_digest}", self.upstream.host)
    }

    pub fn scratch(&self, name: &str) -> PathBuf {
        self.scratch.path().join(name)
    }
}

/// A Registry document for `host` with extra spec lines.
pub fn registry(name: &str, host: &str, extra: &str) -> String {
    format!(
        "apiVersion: lifeboat.dev/v1alpha1\nkind: Registry\nmetadata: {{name: {name}}}\nspec:\n  host: \"{host}\"\n{extra}"
    )
}

/// This machine's platform, as images name it.
fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// Pushes an image containerd can unpack on this machine under `tag`, and returns its
/// manifest digest and size.
pub async fn runnable(pusher: &Pusher, repo: &str, tag: Option<&str>, seed: u64) -> (String, usize) {
    let (layer, diff_id) = tar_layer(seed, 2048);
    let config = bytes::Bytes::from(format!(
        r#"{{"architecture":"{}","os":"linux","rootfs":{{"type":"layers","diff_ids":["{diff_id}"]}},"config":{{}}}}"#,
        arch()
    ));
    let (config_size, layer_size) = (config.len(), layer.len());
    let config_digest = pusher.blob(repo, config).await;
    let layer_digest = pusher.blob(repo, layer).await;
    let body = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_digest}","size":{config_size}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{layer_digest}","size":{layer_size}}}]}}"#
    )
    .into_bytes();
    let (digest, size) = (digest_of(&body), body.len());
    pusher.raw_manifest(repo, tag.unwrap_or(&digest), body, OCI_MANIFEST).await;
    (digest, size)
}

/// Pushes a two-platform index under `tag`: a runnable image for this machine and one for
/// another platform. Returns the index digest.
pub async fn runnable_index(pusher: &Pusher, repo: &str, tag: &str, seed: u64) -> String {
    let (own, own_size) = runnable(pusher, repo, None, seed).await;
    let other_platform = if arch() == "amd64" { "linux/arm64" } else { "linux/amd64" };
    let (other, other_size) = pusher.image(repo, None, &[layer(seed + 1000, 1024)], other_platform).await;
    let (other_os, other_arch) = other_platform.split_once('/').unwrap();
    let body = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{own}","size":{own_size},"platform":{{"architecture":"{}","os":"linux"}}}},{{"mediaType":"{OCI_MANIFEST}","digest":"{other}","size":{other_size},"platform":{{"architecture":"{other_arch}","os":"{other_os}"}}}}]}}"#,
        arch()
    )
    .into_bytes();
    let digest = digest_of(&body);
    pusher.raw_manifest(repo, tag, body, OCI_INDEX).await;
    digest
}

/// The kubelet's side of CRI: pulls with a pull secret's AuthConfig and asks what the runtime
/// holds.
pub struct Kubelet {
    rt: tokio::runtime::Runtime,
    images: ImageServiceClient<Channel>,
}

/// Credentials as the kubelet passes them from a pull secret: for `server`, the registry the
/// secret's entry names.
pub struct PullSecret<'a> {
    pub username: &'a str,
    pub password: &'a str,
    pub server: &'a str,
}

impl Kubelet {
    pub fn connect(socket: &Path) -> Kubelet {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let path = socket.to_path_buf();
        let channel = rt
            .block_on(Endpoint::from_static("http://cri.invalid").connect_with_connector(tower::service_fn(
                move |_: Uri| {
                    let path = path.clone();
                    async move { Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?)) }
                },
            )))
            .expect("connecting to containerd's CRI socket");
        Kubelet { rt, images: ImageServiceClient::new(channel) }
    }

    /// PullImage, as the kubelet sends it; the image ref containerd answers, or its error. A
    /// pull that hangs (a registry that accepts and never answers) fails after a minute.
    pub fn pull(&self, reference: &str, secret: Option<PullSecret<'_>>) -> Result<String, String> {
        let auth = secret.map(|s| AuthConfig {
            username: s.username.into(),
            password: s.password.into(),
            server_address: s.server.into(),
            ..AuthConfig::default()
        });
        let request = PullImageRequest { image: Some(spec(reference)), auth, sandbox_config: None };
        let mut images = self.images.clone();
        let pull = async { tokio::time::timeout(std::time::Duration::from_secs(60), images.pull_image(request)).await };
        match self.rt.block_on(pull) {
            Ok(Ok(answer)) => Ok(answer.into_inner().image_ref),
            Ok(Err(status)) => Err(status.message().to_string()),
            Err(_) => Err(format!("pulling {reference} did not finish within 60 s")),
        }
    }

    /// ImageStatus: the repo digests recorded for `reference`, or `None` when the runtime does
    /// not hold it.
    pub fn repo_digests(&self, reference: &str) -> Option<Vec<String>> {
        let request = ImageStatusRequest { image: Some(spec(reference)), verbose: false };
        let answer = self.rt.block_on(self.images.clone().image_status(request)).expect("ImageStatus answers");
        answer.into_inner().image.map(|i| i.repo_digests)
    }

    /// Whether the runtime holds `reference` and records it under `repository@digest`.
    pub fn holds(&self, reference: &str, repository: &str, digest: &str) -> bool {
        self.repo_digests(reference).is_some_and(|d| d.contains(&format!("{repository}@{digest}")))
    }
}

fn spec(reference: &str) -> ImageSpec {
    ImageSpec { image: reference.to_string(), ..ImageSpec::default() }
}

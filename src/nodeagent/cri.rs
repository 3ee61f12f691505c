//! The container runtime's CRI image service over its unix socket (containerd, CRI-O): the one
//! place that speaks gRPC, and that turns the runtime's error texts into [`PullError`]s.
//!
//! It only asks the runtime: Version, ImageStatus and PullImage. It never removes an image and
//! never touches containers or pods.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::anyhow;
use hyper_util::rt::TokioIo;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{AuthConfig, Image, ImageSpec, ImageStatusRequest, PullImageRequest, VersionRequest};
use tonic::transport::{Channel, Endpoint, Uri};

use super::{ImageRuntime, PullError};
use crate::registry::auth::Credential;

/// How long connecting to the socket may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection to a container runtime's CRI socket.
#[derive(Clone)]
pub struct CriClient {
    socket: PathBuf,
    images: ImageServiceClient<Channel>,
    runtime: RuntimeServiceClient<Channel>,
}

impl CriClient {
    /// Connects to the socket at `socket`; the error says what is wrong with it and how to fix it.
    pub async fn connect(socket: &Path) -> anyhow::Result<CriClient> {
        // A first connection of our own, for an error that says what is wrong with the socket;
        // tonic would wrap the same error in transport words.
        tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::UnixStream::connect(socket))
            .await
            .map_err(|_| anyhow!("the container runtime's socket {} did not accept within 10 s", socket.display()))?
            .map_err(|e| socket_error(socket, &e))?;
        let path = socket.to_path_buf();
        // The URI is required and ignored: every connection goes to the socket.
        let channel = Endpoint::from_static("http://cri.invalid")
            .connect_timeout(CONNECT_TIMEOUT)
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let path = path.clone();
                async move { Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?)) }
            }))
            .await
            .map_err(|e| anyhow!("connecting to the container runtime at {}: {e}", socket.display()))?;
        Ok(CriClient {
            socket: socket.to_path_buf(),
            images: ImageServiceClient::new(channel.clone()),
            runtime: RuntimeServiceClient::new(channel),
        })
    }
}

impl CriClient {
    /// What kubelet reports as a container's `imageID` for `reference`: the runtime's repo
    /// digest of the image under the same repository (`repo@sha256:...`), else its image id.
    /// `None` when the runtime does not hold it.
    pub async fn image_id(&self, reference: &str) -> Result<Option<String>, String> {
        let Some(image) = self.image_status(reference).await? else { return Ok(None) };
        let repository = reference.split('@').next().unwrap_or(reference);
        let repository = match repository.rsplit_once(':') {
            Some((r, tag)) if !tag.contains('/') => r,
            _ => repository,
        };
        let same = image.repo_digests.iter().find(|d| d.split('@').next() == Some(repository));
        Ok(Some(same.or(image.repo_digests.first()).cloned().unwrap_or(image.id)))
    }

    /// The runtime's record of `reference`, `None` when it does not hold it.
    async fn image_status(&self, reference: &str) -> Result<Option<Image>, String> {
        let answer = self
            .images
            .clone()
            .image_status(ImageStatusRequest { image: spec(reference), verbose: false })
            .await
            .map_err(|status| status_text(&status))?;
        Ok(answer.into_inner().image)
    }
}

fn socket_error(socket: &Path, e: &std::io::Error) -> anyhow::Error {
    let socket = socket.display();
    let fix = match e.kind() {
        std::io::ErrorKind::NotFound => format!(
            "there is no socket at {socket}: is containerd or CRI-O running on this node, is its socket mounted into \
             the pod at that path, and does --cri-socket (the PrePullSet's cri.socket) name it? containerd's is \
             /run/containerd/containerd.sock, CRI-O's /var/run/crio/crio.sock"
        ),
        std::io::ErrorKind::PermissionDenied => {
            format!("not allowed to connect to {socket}: the node agent must run as root to use the runtime's socket")
        }
        std::io::ErrorKind::ConnectionRefused => format!(
            "nothing listens on {socket}: the container runtime is not running, or the socket is a stale one it left"
        ),
        _ => format!("cannot connect to the container runtime's socket {socket}"),
    };
    anyhow!("{fix} ({e})")
}

fn spec(reference: &str) -> Option<ImageSpec> {
    Some(ImageSpec { image: reference.to_string(), ..ImageSpec::default() })
}

/// CRI's AuthConfig for a credential. `server_address` stays empty: containerd takes the
/// registry from the image reference, and a host without a scheme would confuse it.
fn auth_config(credential: &Credential) -> Option<AuthConfig> {
    match credential {
        Credential::Anonymous => None,
        Credential::Basic { username, password } => {
            Some(AuthConfig { username: username.clone(), password: password.clone(), ..AuthConfig::default() })
        }
        Credential::IdentityToken(token) => Some(AuthConfig { identity_token: token.clone(), ..AuthConfig::default() }),
    }
}

impl ImageRuntime for CriClient {
    async fn version(&self) -> anyhow::Result<String> {
        let answer = self
            .runtime
            .clone()
            .version(VersionRequest { version: "v1".into() })
            .await
            .map_err(|status| {
                let hint = if status.code() == tonic::Code::Unimplemented {
                    ": it does not serve CRI v1 (containerd needs its CRI plugin enabled, and version 1.6 or later)"
                } else {
                    ""
                };
                anyhow!(
                    "asking the container runtime at {} for its version: {}{hint}",
                    self.socket.display(),
                    status_text(&status)
                )
            })?
            .into_inner();
        Ok(format!("{} {}", answer.runtime_name, answer.runtime_version).trim().to_string())
    }

    async fn image_present(&self, reference: &str) -> Result<bool, String> {
        Ok(self.image_status(reference).await?.is_some())
    }

    async fn pull(&self, reference: &str, credential: &Credential) -> Result<(), PullError> {
        let request = PullImageRequest { image: spec(reference), auth: auth_config(credential), sandbox_config: None };
        match self.images.clone().pull_image(request).await {
            Ok(_) => Ok(()),
            Err(status) => Err(classify(&status)),
        }
    }
}

/// The status's message, or its code when it has none.
fn status_text(status: &tonic::Status) -> String {
    if status.message().is_empty() { format!("{:?}", status.code()) } else { status.message().to_string() }
}

/// What a failed PullImage means, from the runtime's message. containerd and CRI-O both pass the
/// registry client's error along as text, such as containerd's `failed to pull and unpack image
/// "...": failed to resolve reference "...": pulling from host h failed with status code
/// [manifests sha256:...]: 401 Unauthorized`, or CRI-O's `pinging container registry h: Get
/// "...": dial tcp h: connect: connection refused`.
fn classify(status: &tonic::Status) -> PullError {
    let message = status_text(status);
    let lower = message.to_ascii_lowercase();
    let detail = last_cause(&message);
    let any = |needles: &[&str]| needles.iter().any(|n| lower.contains(n));
    // tonic's own words when the socket stops answering, as opposed to the runtime's about a
    // registry.
    if status.code() == tonic::Code::Unavailable
        && any(&["transport error", "error trying to connect", "service was not ready", "connection error"])
    {
        return PullError::Runtime(format!("the container runtime stopped answering: {message}"));
    }
    if status.code() == tonic::Code::NotFound {
        PullError::NotFound(detail)
    } else if any(&[
        "401 unauthorized",
        "403 forbidden",
        "unauthorized",
        "authentication required",
        "access denied",
        "denied: ",
    ]) {
        PullError::Unauthorized(detail)
    } else if any(&[
        "connection refused",
        "no such host",
        "i/o timeout",
        "network is unreachable",
        "no route to host",
        "connection reset",
        "tls handshake timeout",
        "dial tcp",
    ]) {
        PullError::Unreachable(detail)
    } else if any(&["not found", "manifest unknown", "name unknown", "404"]) {
        PullError::NotFound(detail)
    } else {
        PullError::Runtime(message)
    }
}

/// The innermost cause of a Go error chain (`a: b: c` gives `c`), or the whole text when that
/// would say too little.
fn last_cause(message: &str) -> String {
    let last = message.rsplit(": ").next().unwrap_or(message).trim();
    if last.len() < 8 { message.to_string() } else { last.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pull_error(code: tonic::Code, message: &str) -> PullError {
        classify(&tonic::Status::new(code, message))
    }

    #[test]
    fn pull_errors_of_containerd_and_cri_o_are_classified() {
        let host = "127.0.0.1:5000";
        let image = format!("{host}/app@sha256:{}", "a".repeat(64));
        let cases = [
            (
                format!(
                    "failed to pull and unpack image \"{image}\": failed to resolve reference \"{image}\": pulling from \
                     host {host} failed with status code [manifests sha256:aa]: 401 Unauthorized"
                ),
                PullError::Unauthorized("401 Unauthorized".into()),
            ),
            (
                format!(
                    "failed to pull and unpack image \"{image}\": failed to resolve reference \"{image}\": failed to \
                     do request: Head \"http://{host}/v2/app/manifests/sha256:aa\": dial tcp {host}: connect: \
                     connection refused"
                ),
                PullError::Unreachable("connection refused".into()),
            ),
            (
                format!(
                    "failed to pull and unpack image \"{image}\": failed to resolve reference \"{image}\": {image}: not \
                     found"
                ),
                PullError::NotFound("not found".into()),
            ),
            (
                format!(
                    "pinging container registry {host}: Get \"http://{host}/v2/\": dial tcp {host}: connect: connection refused"
                ),
                PullError::Unreachable("connection refused".into()),
            ),
            (
                format!("reading manifest sha256:aa in {host}/app: unauthorized: authentication required"),
                PullError::Unauthorized("authentication required".into()),
            ),
            (
                format!("reading manifest sha256:aa in {host}/app: manifest unknown: manifest unknown"),
                PullError::NotFound("manifest unknown".into()),
            ),
            (
                "failed to pull and unpack image: failed to extract layer: write /var/lib: no space left on device"
                    .to_string(),
                PullError::Runtime(
                    "failed to pull and unpack image: failed to extract layer: write /var/lib: no space left on device"
                        .into(),
                ),
            ),
        ];
        for (message, expected) in cases {
            assert_eq!(pull_error(tonic::Code::Unknown, &message), expected, "{message}");
        }
        let gone = pull_error(tonic::Code::Unavailable, "transport error");
        assert!(matches!(&gone, PullError::Runtime(t) if t.contains("stopped answering")), "{gone:?}");
        // containerd marks a missing image with the gRPC code NotFound whatever its words.
        assert_eq!(
            pull_error(tonic::Code::NotFound, "failed to resolve reference \"x\": x: manifest gone"),
            PullError::NotFound("manifest gone".into())
        );
    }

    #[test]
    fn credentials_become_auth_configs_and_anonymous_sends_none() {
        assert_eq!(auth_config(&Credential::Anonymous), None);
        let basic = auth_config(&Credential::Basic { username: "u".into(), password: "p".into() }).unwrap();
        assert_eq!((basic.username.as_str(), basic.password.as_str(), basic.server_address.as_str()), ("u", "p", ""));
        let token = auth_config(&Credential::IdentityToken("t".into())).unwrap();
        assert_eq!((token.identity_token.as_str(), token.username.as_str()), ("t", ""));
    }

    #[tokio::test]
    async fn a_missing_socket_is_named_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("containerd.sock");
        let err = CriClient::connect(&socket).await.err().expect("no socket, no client");
        let text = format!("{err:#}");
        assert!(text.contains(&socket.display().to_string()), "{text}");
        assert!(text.contains("--cri-socket"), "{text}");

        // A socket file nobody listens on, as a runtime that died leaves behind.
        drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
        let err = CriClient::connect(&socket).await.err().expect("nothing listens");
        assert!(format!("{err:#}").contains("nothing listens on"), "{err:#}");
    }
}

//! The `cri` node agent's round: which of a PrePullSet's images the node's container runtime
//! holds, pulling the missing ones, and the [`Inventory`] that says so.
//!
//! One round reads the images file (mounted from the set's ConfigMap, so re-read every round),
//! asks the runtime for its version, reads the pull secrets and the kubelet's GC settings, then
//! for each image asks the runtime whether it holds it and pulls it when it does not, at most
//! `parallel` images at a time. ImageStatus always comes first: PullImage contacts the registry
//! even for an image the runtime already holds. One image failing never ends the round: it is
//! [`ImageState::Missing`] with the reason in plain words. Only what makes the whole round
//! meaningless (the images file cannot be read, the runtime does not answer) is an error.
//!
//! The runtime is behind [`ImageRuntime`], so the round is tested against an in-memory runtime;
//! [`cri`] implements it over the CRI socket. This module never talks to Kubernetes: reporting
//! the inventory is [`crate::cluster::inventory`]'s job. Secrets from pull secrets only ever
//! reach the runtime; reasons are scrubbed of them.
//!
//! For node failover, [`failover`] writes the runtime's registry files on the node and
//! [`runtime_config`] tells whether the runtime reads them.

pub mod cri;
pub mod failover;
pub mod runtime_config;

use std::collections::BTreeSet;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use futures_util::StreamExt as _;
use tracing::{debug, info, warn};

use crate::desired::ImageRef;
use crate::error::Kind;
use crate::prepull::{GcSettings, ImageState, Inventory, InventoryImage};
use crate::registry::auth::{Credential, PullSecretFile};

/// Why the runtime could not pull an image, as far as its error tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PullError {
    /// The registry could not be reached: refused, unresolvable, timed out.
    Unreachable(String),
    /// The registry refused the request for want of (valid) credentials: 401 or 403.
    Unauthorized(String),
    /// The registry does not have the image.
    NotFound(String),
    /// Anything else the runtime reported (disk full, unpacking failed, the runtime went away).
    Runtime(String),
}

impl PullError {
    /// What the failure means in the crate's one vocabulary: an unreachable registry is
    /// transient, refused credentials unauthorized, a missing image not found, and a failure of
    /// the runtime itself permanent for this round (the next round tries again).
    pub fn kind(&self) -> Kind {
        match self {
            PullError::Unreachable(_) => Kind::Transient,
            PullError::Unauthorized(_) => Kind::Unauthorized,
            PullError::NotFound(_) => Kind::NotFound,
            PullError::Runtime(_) => Kind::Permanent,
        }
    }

    /// The runtime's words.
    pub fn into_detail(self) -> String {
        match self {
            PullError::Unreachable(t) | PullError::Unauthorized(t) | PullError::NotFound(t) | PullError::Runtime(t) => {
                t
            }
        }
    }
}

/// What the round needs of a container runtime. Errors are the runtime's words; they must not
/// hold a secret.
pub trait ImageRuntime {
    /// The runtime's name and version: `containerd 1.6.20`.
    fn version(&self) -> impl Future<Output = anyhow::Result<String>>;
    /// Whether the runtime holds the image.
    fn image_present(&self, reference: &str) -> impl Future<Output = Result<bool, String>>;
    /// Pulls the image with `credential`.
    fn pull(&self, reference: &str, credential: &Credential) -> impl Future<Output = Result<(), PullError>>;
}

/// What a round works from.
#[derive(Debug, Clone)]
pub struct Settings {
    pub node: String,
    pub set: String,
    pub images_file: PathBuf,
    pub pull_secret_dir: Option<PathBuf>,
    pub kubelet_config: Option<PathBuf>,
    /// Images looked at (and pulled) at once, at least 1.
    pub parallel: usize,
    /// Longest wait for one pull.
    pub pull_timeout: Duration,
}

/// Longest wait for the runtime to tell its version, or whether it holds an image.
const STATUS_TIMEOUT: Duration = Duration::from_secs(60);

/// One round: what the runtime holds of the set's images, after pulling what it lacked.
pub async fn round<R: ImageRuntime>(runtime: &R, settings: &Settings) -> anyhow::Result<Inventory> {
    let file = &settings.images_file;
    let text = tokio::fs::read_to_string(file).await.with_context(|| {
        format!(
            "reading the images file {}: it is mounted from the PrePullSet's ConfigMap; check the pod's volume \
             and --images-file",
            file.display()
        )
    })?;
    let (references, mut images) = parse_images(file, &text);
    let runtime_version = tokio::time::timeout(STATUS_TIMEOUT, runtime.version()).await.map_err(|_| {
        anyhow::anyhow!("the container runtime did not tell its version within {} s", STATUS_TIMEOUT.as_secs())
    })??;
    let secrets = PullSecrets::load(settings.pull_secret_dir.as_deref()).await;
    let (kubelet_gc, kubelet_gc_error) = match kubelet_gc(settings.kubelet_config.as_deref()).await {
        Ok(settings) => (Some(settings), None),
        Err(reason) => (None, Some(reason)),
    };
    let looked_at: Vec<InventoryImage> = futures_util::stream::iter(references)
        .map(|(reference, host)| {
            let secrets = &secrets;
            async move {
                let state = image_state(runtime, &reference, &host, secrets, settings.pull_timeout).await;
                InventoryImage { reference, state }
            }
        })
        .buffer_unordered(settings.parallel.max(1))
        .collect()
        .await;
    images.extend(looked_at);
    images.sort_by(|a, b| a.reference.cmp(&b.reference));
    let count = |f: fn(&ImageState) -> bool| images.iter().filter(|i| f(&i.state)).count();
    info!(
        set = %settings.set,
        node = %settings.node,
        present = count(|s| *s == ImageState::Present),
        pulled = count(|s| *s == ImageState::Pulled),
        missing = count(|s| matches!(s, ImageState::Missing { .. })),
        "round done"
    );
    Ok(Inventory {
        node: settings.node.clone(),
        set: settings.set.clone(),
        observed_at: chrono::Utc::now(),
        runtime: Some(runtime_version),
        images,
        kubelet_gc,
        kubelet_gc_error,
    })
}

/// The images file: one reference pinned by digest per line, `#` comments and blank lines
/// ignored. Returns the references to look at, each with its registry host, sorted and without
/// duplicates, and a [`ImageState::Missing`] entry for each line that is no such reference.
pub fn parse_images(file: &Path, text: &str) -> (Vec<(String, String)>, Vec<InventoryImage>) {
    let mut references = BTreeSet::new();
    let mut invalid = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        match ImageRef::parse(line) {
            Ok(image) if image.digest.is_some() => {
                references.insert((line.to_string(), image.repository.host));
            }
            parsed => {
                let why = match parsed {
                    Err(e) => e,
                    Ok(_) => "it has no digest".to_string(),
                };
                let reason = format!(
                    "line {} of {} is not an image reference pinned by digest (host/repository@sha256:...): {why}",
                    number + 1,
                    file.display()
                );
                warn!(%reason, "skipping a line of the images file");
                invalid.push(InventoryImage { reference: line.to_string(), state: ImageState::Missing { reason } });
            }
        }
    }
    (references.into_iter().collect(), invalid)
}

async fn image_state<R: ImageRuntime>(
    runtime: &R,
    reference: &str,
    host: &str,
    secrets: &PullSecrets,
    pull_timeout: Duration,
) -> ImageState {
    match tokio::time::timeout(STATUS_TIMEOUT, runtime.image_present(reference)).await {
        Ok(Ok(true)) => {
            debug!(image = %reference, "present");
            return ImageState::Present;
        }
        Ok(Ok(false)) => {}
        Ok(Err(e)) => {
            let reason = format!("could not ask the container runtime whether it holds {reference}: {e}");
            warn!(image = %reference, %reason, "missing");
            return ImageState::Missing { reason };
        }
        Err(_) => {
            let reason = format!(
                "the container runtime did not say within {} s whether it holds {reference}",
                STATUS_TIMEOUT.as_secs()
            );
            warn!(image = %reference, %reason, "missing");
            return ImageState::Missing { reason };
        }
    }
    // The credentials of every pull secret for the host, tried in turn as the kubelet does;
    // anonymous when none has any.
    let candidates = secrets.for_host(host);
    let attempts: Vec<(Option<&str>, Credential)> = if candidates.is_empty() {
        vec![(None, Credential::Anonymous)]
    } else {
        candidates.into_iter().map(|(name, credential)| (Some(name), credential)).collect()
    };
    let mut refused = Vec::new();
    for (secret, credential) in &attempts {
        let outcome = match tokio::time::timeout(pull_timeout, runtime.pull(reference, credential)).await {
            Ok(outcome) => outcome,
            Err(_) => {
                let reason = format!(
                    "pulling {reference} did not finish within {} (--pull-timeout)",
                    humantime::format_duration(pull_timeout)
                );
                warn!(image = %reference, %reason, "missing");
                return ImageState::Missing { reason };
            }
        };
        let error = match outcome {
            Ok(()) => {
                info!(image = %reference, secret = secret.unwrap_or("none"), "pulled");
                return ImageState::Pulled;
            }
            Err(e) => redact(e, credential),
        };
        // Refused credentials: the next pull secret may do. Anything else ends the tries.
        if error.kind() == Kind::Unauthorized {
            let detail = error.into_detail();
            match secret {
                Some(name) => refused.push(format!("{name} ({detail})")),
                None => refused.push(detail),
            }
            continue;
        }
        let reason = match error {
            PullError::Unreachable(detail) => {
                format!("registry {host} could not be reached to pull {reference}: {detail}")
            }
            PullError::NotFound(detail) => {
                format!("registry {host} does not have {reference} ({detail})")
            }
            PullError::Runtime(detail) | PullError::Unauthorized(detail) => {
                format!("the container runtime failed to pull {reference}: {detail}")
            }
        };
        warn!(image = %reference, %reason, "missing");
        return ImageState::Missing { reason };
    }
    let reason = if attempts.iter().all(|(secret, _)| secret.is_none()) {
        format!(
            "registry {host} refused to let {reference} be pulled without credentials ({}), and {}",
            refused.join("; "),
            secrets.why_none(host)
        )
    } else {
        format!(
            "registry {host} refused the credentials of every pull secret for it when pulling {reference}: {}",
            refused.join("; ")
        )
    };
    warn!(image = %reference, %reason, "missing");
    ImageState::Missing { reason }
}

/// The error with the credential's secret, should the runtime have echoed it, blotted out.
fn redact(error: PullError, credential: &Credential) -> PullError {
    let Some(secret) = credential.secret().filter(|s| !s.is_empty()) else { return error };
    let clean = |text: String| text.replace(secret, "<redacted>");
    match error {
        PullError::Unreachable(t) => PullError::Unreachable(clean(t)),
        PullError::Unauthorized(t) => PullError::Unauthorized(clean(t)),
        PullError::NotFound(t) => PullError::NotFound(clean(t)),
        PullError::Runtime(t) => PullError::Runtime(clean(t)),
    }
}

/// The pull secrets mounted under one directory, read afresh each round (Secret volumes update
/// in place). Kubernetes mounts a `kubernetes.io/dockerconfigjson` Secret as a directory holding
/// `.dockerconfigjson`: every `DIR/*/.dockerconfigjson` and `DIR/*/config.json` is read, and
/// `DIR/.dockerconfigjson` and `DIR/config.json` for a single Secret mounted at DIR itself.
#[derive(Debug, Default)]
pub struct PullSecrets {
    dir: Option<PathBuf>,
    /// (secret name, file), sorted by path.
    files: Vec<(String, PullSecretFile)>,
    /// What could not be read, each naming its file, never a secret.
    problems: Vec<String>,
}

impl PullSecrets {
    pub async fn load(dir: Option<&Path>) -> PullSecrets {
        let Some(dir) = dir else { return PullSecrets::default() };
        let mut secrets = PullSecrets { dir: Some(dir.to_path_buf()), ..PullSecrets::default() };
        let mut candidates = vec![dir.join(".dockerconfigjson"), dir.join("config.json")];
        match std::fs::read_dir(dir) {
            Ok(entries) => {
                let mut subdirs: Vec<PathBuf> = entries
                    .filter_map(Result::ok)
                    // `..data` and the like are the volume's own bookkeeping.
                    .filter(|e| !e.file_name().to_string_lossy().starts_with(".."))
                    .map(|e| e.path())
                    .filter(|p| p.is_dir())
                    .collect();
                subdirs.sort();
                for sub in subdirs {
                    candidates.push(sub.join(".dockerconfigjson"));
                    candidates.push(sub.join("config.json"));
                }
            }
            Err(e) => {
                let problem = format!("the pull secret directory {} cannot be read: {e}", dir.display());
                warn!(%problem, "no pull secrets");
                secrets.problems.push(problem);
            }
        }
        for path in candidates {
            let text = match tokio::fs::read_to_string(&path).await {
                Ok(text) => text,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    secrets.problems.push(format!("{} cannot be read: {e}", path.display()));
                    continue;
                }
            };
            match PullSecretFile::parse(&path, &text) {
                Ok(file) => {
                    let name = if path.parent() == Some(dir) {
                        dir.file_name().unwrap_or_default().to_string_lossy().into_owned()
                    } else {
                        path.parent().and_then(Path::file_name).unwrap_or_default().to_string_lossy().into_owned()
                    };
                    secrets.files.push((name, file));
                }
                Err(e) => {
                    let problem = format!("{e:#}");
                    warn!(%problem, "skipping a pull secret");
                    secrets.problems.push(problem);
                }
            }
        }
        debug!(dir = %dir.display(), secrets = secrets.files.len(), "read the pull secrets");
        secrets
    }

    /// The credentials the secrets hold for `host`, each with its secret's name, in path order.
    fn for_host(&self, host: &str) -> Vec<(&str, Credential)> {
        self.files
            .iter()
            .filter_map(|(name, file)| match file.credential(host)? {
                Ok(credential) => Some((name.as_str(), credential)),
                Err(e) => {
                    warn!(problem = %format!("{e:#}"), "skipping a pull secret entry");
                    None
                }
            })
            .collect()
    }

    /// Why no pull secret gave credentials for `host`, for a reason.
    fn why_none(&self, host: &str) -> String {
        let mut text = match &self.dir {
            None => {
                "no pull secrets are mounted (--pull-secret-dir); list one in the PrePullSet's pullSecrets".to_string()
            }
            Some(dir) => format!(
                "no pull secret in {} has credentials for {host}; add them to a Secret listed in the PrePullSet's \
                 pullSecrets",
                dir.display()
            ),
        };
        if !self.problems.is_empty() {
            text = format!("{text} (unreadable: {})", self.problems.join("; "));
        }
        text
    }
}

/// The kubelet's image GC settings from its configuration file (YAML or JSON), or why they
/// could not be read.
pub async fn kubelet_gc(path: Option<&Path>) -> Result<GcSettings, String> {
    let Some(path) = path else {
        return Err("no kubelet configuration is mounted (--kubelet-config not given)".into());
    };
    let text = tokio::fs::read_to_string(path)
        .await
        .map_err(|e| format!("reading the kubelet configuration {}: {e}", path.display()))?;
    // YAML is a superset of JSON: one parser reads both forms of the file.
    let value: serde_json::Value = serde_yaml::from_str(&text)
        .map_err(|e| format!("the kubelet configuration {} is not YAML or JSON: {e}", path.display()))?;
    GcSettings::from_kubelet_config(&value).map_err(|e| format!("the kubelet configuration {}: {e}", path.display()))
}

#[cfg(test)]
mod tests;

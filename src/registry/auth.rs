//! Credentials for a registry host, from a Docker `config.json` (the file `docker login`
//! writes, and the content of a Kubernetes `kubernetes.io/dockerconfigjson` Secret) or from a
//! `docker-credential-<name>` helper.
//!
//! Secrets read here only ever reach oci-client; they are never logged, formatted into an
//! error, or kept in any type that implements `Debug` with their value.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::process::Stdio;

use anyhow::{Context, bail};
use base64::Engine;
use serde::Deserialize;
use tokio::io::AsyncWriteExt;

/// Credentials for one host. `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    Anonymous,
    Basic {
        username: String,
        password: String,
    },
    /// An identity token (OAuth refresh token) from `docker login` with a token service.
    IdentityToken(String),
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::Anonymous => f.write_str("Anonymous"),
            Credential::Basic { username, .. } => write!(f, "Basic({username}, <redacted>)"),
            Credential::IdentityToken(_) => f.write_str("IdentityToken(<redacted>)"),
        }
    }
}

impl Credential {
    pub fn to_oci(&self) -> oci_client::secrets::RegistryAuth {
        use oci_client::secrets::RegistryAuth;
        match self {
            Credential::Anonymous => RegistryAuth::Anonymous,
            Credential::Basic { username, password } => RegistryAuth::Basic(username.clone(), password.clone()),
            // Docker sends identity tokens as the password of the `<token>` user.
            Credential::IdentityToken(t) => RegistryAuth::Basic("<token>".into(), t.clone()),
        }
    }

    /// The secret itself (password or token), so that text that may echo it can be redacted.
    pub(crate) fn secret(&self) -> Option<&str> {
        match self {
            Credential::Anonymous => None,
            Credential::Basic { password, .. } => Some(password),
            Credential::IdentityToken(token) => Some(token),
        }
    }
}

#[derive(Deserialize, Default)]
struct ConfigFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: BTreeMap<String, String>,
}

#[derive(Deserialize, Default)]
struct AuthEntry {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
    identitytoken: Option<String>,
}

/// The keys a config.json may use for `host`: `docker login` writes bare hosts, older files
/// and Docker Hub use URLs.
fn matches_host(key: &str, host: &str) -> bool {
    let bare = key.trim_start_matches("https://").trim_start_matches("http://");
    let bare = bare.split('/').next().unwrap_or(bare);
    bare.eq_ignore_ascii_case(host)
        || (host == "docker.io" && matches!(bare, "index.docker.io" | "registry-1.docker.io" | "docker.io"))
}

/// Looks `host` up in the config file at `path`: `credHelpers` first, then `auths`, then
/// `credsStore`, as docker does. A host the file does not mention is anonymous.
pub async fn from_docker_config(path: &Path, host: &str) -> anyhow::Result<Credential> {
    let text = tokio::fs::read_to_string(path)
        .await
        .with_context(|| format!("reading the Docker config {} for {host}", path.display()))?;
    let config: ConfigFile = serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{} is not a Docker config.json: {}", path.display(), e.classify_text()))?;
    if let Some((_, helper)) = config.cred_helpers.iter().find(|(k, _)| matches_host(k, host)) {
        return from_helper(helper, host).await;
    }
    if let Some((_, entry)) = config.auths.iter().find(|(k, _)| matches_host(k, host)) {
        return entry_credential(entry, host, path);
    }
    match &config.creds_store {
        Some(store) => from_helper(store, host).await,
        None => Ok(Credential::Anonymous),
    }
}

/// The `auths` of a Docker config.json read the way the kubelet reads an image pull Secret:
/// `credHelpers` and `credsStore` are ignored, since no helper runs on behalf of a Secret.
/// `Debug` names the file and its hosts, never a secret.
pub(crate) struct PullSecretFile {
    path: std::path::PathBuf,
    auths: BTreeMap<String, AuthEntry>,
}

impl fmt::Debug for PullSecretFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PullSecretFile").field("path", &self.path).field("hosts", &self.auths.keys()).finish()
    }
}

impl PullSecretFile {
    /// Parses the file's text; the error names `path` and, like every error here, never quotes
    /// the content.
    pub(crate) fn parse(path: &Path, text: &str) -> anyhow::Result<PullSecretFile> {
        let config: ConfigFile = serde_json::from_str(text)
            .map_err(|e| anyhow::anyhow!("{} is not a Docker config.json: {}", path.display(), e.classify_text()))?;
        Ok(PullSecretFile { path: path.to_path_buf(), auths: config.auths })
    }

    /// The credential the file holds for `host`, or `None` when it has no entry for it.
    pub(crate) fn credential(&self, host: &str) -> Option<anyhow::Result<Credential>> {
        let (_, entry) = self.auths.iter().find(|(k, _)| matches_host(k, host))?;
        Some(entry_credential(entry, host, &self.path))
    }
}

trait ClassifyText {
    fn classify_text(&self) -> String;
}

impl ClassifyText for serde_json::Error {
    /// serde_json's message can quote the input; keep only the position.
    fn classify_text(&self) -> String {
        format!("invalid JSON at line {} column {}", self.line(), self.column())
    }
}

fn entry_credential(entry: &AuthEntry, host: &str, path: &Path) -> anyhow::Result<Credential> {
    if let Some(token) = entry.identitytoken.as_ref().filter(|t| !t.is_empty()) {
        return Ok(Credential::IdentityToken(token.clone()));
    }
    if let (Some(username), Some(password)) = (&entry.username, &entry.password) {
        return Ok(Credential::Basic { username: username.clone(), password: password.clone() });
    }
    if let Some(auth) = entry.auth.as_ref().filter(|a| !a.is_empty()) {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .with_context(|| {
                format!("the `auth` entry for {host} in {} is not base64 of user:password", path.display())
            })?;
        let Some((username, password)) = decoded.split_once(':') else {
            bail!("the `auth` entry for {host} in {} is not of the form user:password", path.display());
        };
        return Ok(Credential::Basic { username: username.into(), password: password.into() });
    }
    Ok(Credential::Anonymous)
}

#[derive(Deserialize)]
struct HelperAnswer {
    #[serde(rename = "Username")]
    username: String,
    #[serde(rename = "Secret")]
    secret: String,
}

const HELPER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Runs `docker-credential-<helper> get` with the host on stdin, as the Docker CLI does.
pub async fn from_helper(helper: &str, host: &str) -> anyhow::Result<Credential> {
    let program = format!("docker-credential-{helper}");
    // `docker login` files Docker Hub credentials under its old index URL.
    let server = if host == "docker.io" { "https://index.docker.io/v1/" } else { host };
    let mut child = tokio::process::Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("running {program} for {host}: is it installed and on PATH?"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(server.as_bytes()).await.with_context(|| format!("writing to {program}"))?;
    }
    // A helper waiting for a keychain prompt must not hold every request to the host.
    let output = tokio::time::timeout(HELPER_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| anyhow::anyhow!("{program} did not answer within {} s for {host}", HELPER_TIMEOUT.as_secs()))?
        .with_context(|| format!("running {program}"))?;
    if !output.status.success() {
        let said = String::from_utf8_lossy(&output.stdout);
        let said = said.trim();
        // "credentials not found in native keychain" means anonymous, as for docker.
        if said.contains("credentials not found") {
            return Ok(Credential::Anonymous);
        }
        bail!("{program} failed for {host} ({}): {}", output.status, said.lines().next().unwrap_or_default());
    }
    let answer: HelperAnswer = serde_json::from_slice(&output.stdout)
        .map_err(|e| anyhow::anyhow!("{program} gave an answer that is not credentials JSON: {}", e.classify_text()))?;
    Ok(if answer.username == "<token>" {
        Credential::IdentityToken(answer.secret)
    } else {
        Credential::Basic { username: answer.username, password: answer.secret }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn lookup(config: &str, host: &str) -> anyhow::Result<Credential> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(&path, config).unwrap();
        from_docker_config(&path, host).await
    }

    #[tokio::test]
    async fn reads_every_form_of_docker_config() {
        let auth = base64::engine::general_purpose::STANDARD.encode("alice:s3cret");
        let config = format!(
            r#"{{"auths": {{
                "registry.example:5000": {{"auth": "{auth}"}},
                "https://index.docker.io/v1/": {{"username": "bob", "password": "pw"}},
                "tokens.example": {{"identitytoken": "tok"}}
            }}}}"#
        );
        let basic = |u: &str, p: &str| Credential::Basic { username: u.into(), password: p.into() };
        assert_eq!(lookup(&config, "registry.example:5000").await.unwrap(), basic("alice", "s3cret"));
        assert_eq!(lookup(&config, "docker.io").await.unwrap(), basic("bob", "pw"));
        assert_eq!(lookup(&config, "tokens.example").await.unwrap(), Credential::IdentityToken("tok".into()));
        assert_eq!(lookup(&config, "other.example").await.unwrap(), Credential::Anonymous);
    }

    #[tokio::test]
    async fn errors_name_the_file_and_never_the_secret() {
        let err = lookup(r#"{"auths": {"r.example": {"auth": "not base64!"}}}"#, "r.example").await.unwrap_err();
        assert!(format!("{err:#}").contains("config.json"), "{err:#}");
        let err = lookup(r#"{"auths": {"r.example": {"password": "hunter2" "#, "r.example").await.unwrap_err();
        assert!(!format!("{err:#}").contains("hunter2"), "{err:#}");
        let missing = lookup(r#"{"credHelpers": {"r.example": "nonexistent-helper"}}"#, "r.example").await.unwrap_err();
        assert!(format!("{missing:#}").contains("docker-credential-nonexistent-helper"), "{missing:#}");
        let debug = format!("{:?}", Credential::Basic { username: "u".into(), password: "hunter2".into() });
        assert!(!debug.contains("hunter2"));
    }

    #[test]
    fn a_pull_secret_gives_its_auths_and_ignores_helpers() {
        let auth = base64::engine::general_purpose::STANDARD.encode("alice:s3cret");
        let text = format!(
            r#"{{"auths": {{"http://mirror.internal:5000": {{"auth": "{auth}"}}}}, "credsStore": "desktop",
                "credHelpers": {{"other.example": "ecr-login"}}}}"#
        );
        let file = PullSecretFile::parse(Path::new("/secrets/mirror/.dockerconfigjson"), &text).unwrap();
        let found = file.credential("mirror.internal:5000").unwrap().unwrap();
        assert_eq!(found, Credential::Basic { username: "alice".into(), password: "s3cret".into() });
        assert_eq!(found.secret(), Some("s3cret"));
        assert!(file.credential("other.example").is_none(), "helpers are not run for a pull secret");
        assert!(!format!("{file:?}").contains("s3cret"), "{file:?}");
        assert!(format!("{file:?}").contains("mirror.internal:5000"), "{file:?}");

        let broken =
            PullSecretFile::parse(Path::new("/secrets/x/.dockerconfigjson"), r#"{"auths": {"h": "#).unwrap_err();
        assert!(format!("{broken:#}").contains("/secrets/x/.dockerconfigjson"), "{broken:#}");
    }
}

//! Authentication to a remote, and for ssh the check of the host key, as git2 callbacks.
//!
//! Owns the secrets: they are handed to libgit2 and never to `Debug`, `Display` or a message.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use git2::{CertificateCheckStatus, Cred, CredentialType, RemoteCallbacks};

use super::known_hosts::{Fingerprint, KnownHosts, Verdict, host_name};
use super::url::{RemoteUrl, Transport};

/// The user name sent with a token when none is given, as GitHub and Gitea expect.
const TOKEN_USER: &str = "x-access-token";
/// The user of ssh remotes whose URL names none.
const SSH_USER: &str = "git";

/// A password or token. Shown as `***`; read with [`Secret::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Secret {
        Secret(value)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// How to authenticate to the remote. Debug must never print secrets.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    /// https: the user name (`x-access-token` when only a password is given); ssh: the user when
    /// the URL names none (`git` otherwise).
    pub username: Option<String>,
    /// https: the password or token.
    pub password: Option<Secret>,
    /// ssh: the private key file (not protected by a passphrase).
    pub ssh_key: Option<PathBuf>,
    /// ssh: the OpenSSH known_hosts file holding the server's host key. Required for ssh.
    pub known_hosts: Option<PathBuf>,
}

impl Credentials {
    /// Refuses combinations that cannot work with `url`, before any connection is tried.
    pub(super) fn check(&self, url: &RemoteUrl) -> anyhow::Result<()> {
        if url.transport() != Transport::Ssh {
            return Ok(());
        }
        let Some(known_hosts) = &self.known_hosts else {
            anyhow::bail!(
                "the ssh remote {url} needs a known_hosts file to check the server's host key: give one, for \
                 example made with `ssh-keyscan`"
            );
        };
        read_known_hosts(known_hosts)?;
        let Some(key) = &self.ssh_key else {
            anyhow::bail!("the ssh remote {url} needs a private key file");
        };
        anyhow::ensure!(key.is_file(), "the ssh key file {} does not exist", key.display());
        Ok(())
    }

    /// The password to scrub from messages, if any.
    pub(super) fn password(&self) -> Option<&str> {
        self.password.as_ref().map(Secret::expose).filter(|p| !p.is_empty())
    }
}

thread_local! {
    /// Why the last ssh host key was refused on this thread, for the error libgit2 reports.
    pub(super) static HOST_KEY_REFUSAL: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// Callbacks that answer the remote's requests for credentials and, for ssh, check its host key.
pub(super) fn callbacks<'a>(url: &'a RemoteUrl, credentials: &'a Credentials) -> RemoteCallbacks<'a> {
    let mut callbacks = RemoteCallbacks::new();
    let mut asked = Vec::new();
    callbacks.credentials(move |_url, username_from_url, allowed| {
        // libgit2 asks again after a refusal; asking twice for the same kind means refused.
        let kind = allowed & (CredentialType::USER_PASS_PLAINTEXT | CredentialType::SSH_KEY);
        if !kind.is_empty() && asked.contains(&kind) {
            return Err(git2::Error::from_str("the remote refused the credentials"));
        }
        asked.push(kind);
        credential(url, credentials, username_from_url, allowed)
    });
    if url.transport() == Transport::Ssh {
        callbacks.certificate_check(move |cert, _hostname| {
            let Some(hostkey) = cert.as_hostkey() else {
                return Ok(CertificateCheckStatus::CertificatePassthrough);
            };
            let Some(key) = hostkey.hostkey() else {
                return Err(git2::Error::from_str("the ssh library did not reveal the server's host key"));
            };
            let checked = check_host_key(url, credentials, key);
            if let Err(e) = &checked {
                // libgit2 replaces the callback's message with a generic one: keep ours.
                HOST_KEY_REFUSAL.with(|r| *r.borrow_mut() = Some(e.message().to_string()));
            }
            checked.map(|()| CertificateCheckStatus::CertificateOk)
        });
    }
    callbacks
}

fn credential(
    url: &RemoteUrl,
    credentials: &Credentials,
    username_from_url: Option<&str>,
    allowed: CredentialType,
) -> Result<Cred, git2::Error> {
    match url.transport() {
        Transport::Ssh => {
            let user = username_from_url.or(credentials.username.as_deref()).unwrap_or(SSH_USER);
            if allowed.contains(CredentialType::USERNAME) {
                return Cred::username(user);
            }
            match (&credentials.ssh_key, allowed.contains(CredentialType::SSH_KEY)) {
                (Some(key), true) => Cred::ssh_key(user, None, key, None),
                (None, _) => Err(git2::Error::from_str("the remote asks for an ssh key and none was given")),
                (Some(_), false) => Err(git2::Error::from_str("the remote does not accept ssh key authentication")),
            }
        }
        Transport::Http => match (&credentials.password, allowed.contains(CredentialType::USER_PASS_PLAINTEXT)) {
            (Some(password), true) => {
                let user = credentials.username.as_deref().or(username_from_url).unwrap_or(TOKEN_USER);
                Cred::userpass_plaintext(user, password.expose())
            }
            (None, _) => {
                Err(git2::Error::from_str("the remote asks for credentials and no password or token was given"))
            }
            (Some(_), false) => Err(git2::Error::from_str("the remote does not accept a user name and password")),
        },
        Transport::Local | Transport::Git => Err(git2::Error::from_str("the remote asks for credentials")),
    }
}

fn read_known_hosts(path: &Path) -> anyhow::Result<KnownHosts> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading the known_hosts file {}", path.display()))?;
    Ok(KnownHosts::parse(&text))
}

/// Accepts the server's key only when the known_hosts file lists it for this host and port.
fn check_host_key(url: &RemoteUrl, credentials: &Credentials, key: &[u8]) -> Result<(), git2::Error> {
    let fail = |message: String| Err(git2::Error::from_str(&message));
    let Some((host, port)) = url.ssh_host() else {
        return fail("the ssh remote has no host".to_string());
    };
    let Some(path) = &credentials.known_hosts else {
        return fail("no known_hosts file was given".to_string());
    };
    let known = match read_known_hosts(path) {
        Ok(known) => known,
        Err(e) => return fail(format!("{e:#}")),
    };
    let name = host_name(host, port);
    let file = path.display();
    let fingerprint = Fingerprint(key);
    match known.check(host, port, key) {
        Verdict::Trusted => Ok(()),
        Verdict::Revoked => fail(format!("the host key {fingerprint} of {name} is marked @revoked in {file}")),
        Verdict::Changed(types) => fail(format!(
            "the host key {fingerprint} of {name} does not match the {} key(s) {file} lists for it: the server's key \
             changed, or someone is impersonating it",
            types.join(", ")
        )),
        Verdict::Unknown => {
            let skipped = known.skipped().map(|s| format!("; {s}")).unwrap_or_default();
            fail(format!(
                "{name} is not in {file} (its host key is {fingerprint}): add its key, for example with \
                 `ssh-keyscan{} {host}`{skipped}",
                if port == 22 { String::new() } else { format!(" -p {port}") }
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_no_secret() {
        let credentials = Credentials {
            username: Some("bot".into()),
            password: Some(Secret::new("hunter2-token")),
            ssh_key: Some("/keys/id".into()),
            known_hosts: None,
        };
        let shown = format!("{credentials:?} {credentials:#?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("***"), "{shown}");
    }

    #[test]
    fn ssh_without_known_hosts_is_refused() {
        let url = RemoteUrl::parse("git@git.example:org/x.git").unwrap();
        let e = Credentials::default().check(&url).unwrap_err().to_string();
        assert!(e.contains("the ssh remote git@git.example:org/x.git needs a known_hosts file"), "{e}");
    }

    #[test]
    fn host_keys_checked_against_the_file() {
        use base64::Engine;
        let dir = tempfile::tempdir().unwrap();
        let key = "AAAAC3NzaC1lZDI1NTE5AAAAIEnQtRlCoL/+LFO3NJtvrDLw56GU9N3HmcboAXrUrXP1";
        let other = "AAAAC3NzaC1lZDI1NTE5AAAAIPkAYyIl/PckYRfbreYdVhjsVsXL1EM+iRI+A7zWBYXF";
        let path = dir.path().join("known_hosts");
        std::fs::write(&path, format!("[git.example]:2222 ssh-ed25519 {key}\n|1|abc|def ssh-ed25519 {key}\n")).unwrap();
        let credentials = Credentials { known_hosts: Some(path), ..Credentials::default() };
        let decode = |k: &str| base64::engine::general_purpose::STANDARD.decode(k).unwrap();
        let url = RemoteUrl::parse("ssh://git@git.example:2222/x.git").unwrap();
        check_host_key(&url, &credentials, &decode(key)).unwrap();
        let changed = check_host_key(&url, &credentials, &decode(other)).unwrap_err();
        assert!(changed.message().contains("does not match the ssh-ed25519 key(s)"), "{}", changed.message());
        let elsewhere = RemoteUrl::parse("git@git.example:x.git").unwrap();
        let unknown = check_host_key(&elsewhere, &credentials, &decode(key)).unwrap_err();
        assert!(unknown.message().contains("git.example is not in"), "{}", unknown.message());
        assert!(unknown.message().contains("`ssh-keyscan git.example`"), "{}", unknown.message());
        assert!(unknown.message().contains("1 line(s) with hashed host names"), "{}", unknown.message());
    }
}

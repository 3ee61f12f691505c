//! Remote addresses: which transport a URL uses, the host an ssh URL reaches, and how to name
//! the URL in messages without its password.
//!
//! Parsing only; no I/O and no git2 here.

use std::fmt;

/// How a remote is reached, which decides the credentials and host checks that apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// A path or `file://` URL: no credentials.
    Local,
    /// `https://` or `http://`: a user name and password (or token).
    Http,
    /// `ssh://` or scp-like `user@host:path`: a key file and a known host key.
    Ssh,
    /// `git://`: unauthenticated and unencrypted.
    Git,
}

/// A remote URL as the user gave it, understood.
#[derive(Clone, PartialEq, Eq)]
pub struct RemoteUrl {
    raw: String,
    transport: Transport,
    /// The password in the URL's userinfo, kept only to scrub it from messages.
    password: Option<String>,
    /// For ssh: host and port (22 when the URL gives none).
    host: Option<(String, u16)>,
}

impl RemoteUrl {
    /// Understands `url`, refusing schemes Lifeboat cannot speak.
    pub fn parse(url: &str) -> anyhow::Result<RemoteUrl> {
        let url = url.trim();
        anyhow::ensure!(!url.is_empty(), "the remote URL is empty");
        if let Some((scheme, rest)) = url.split_once("://") {
            let transport = match scheme.to_ascii_lowercase().as_str() {
                "file" => Transport::Local,
                "http" | "https" => Transport::Http,
                "ssh" | "git+ssh" | "ssh+git" => Transport::Ssh,
                "git" => Transport::Git,
                other => anyhow::bail!(
                    "the remote URL {} uses the scheme `{other}`, which is not supported: use https://, ssh://, \
                     file:// or a path",
                    redact(url)
                ),
            };
            let authority = rest.split('/').next().unwrap_or_default();
            let (userinfo, hostport) = match authority.rsplit_once('@') {
                Some((userinfo, hostport)) => (Some(userinfo), hostport),
                None => (None, authority),
            };
            let password = userinfo.and_then(|info| info.split_once(':')).map(|(_, password)| password.to_string());
            let host = if transport == Transport::Ssh {
                let (host, port) = split_host_port(hostport)
                    .ok_or_else(|| anyhow::anyhow!("the remote URL {} has no valid host", redact(url)))?;
                Some((host, port.unwrap_or(22)))
            } else {
                None
            };
            return Ok(RemoteUrl {
                raw: url.to_string(),
                transport,
                password: password.filter(|p| !p.is_empty()),
                host,
            });
        }
        if let Some(host) = scp_like(url) {
            return Ok(RemoteUrl {
                raw: url.to_string(),
                transport: Transport::Ssh,
                password: None,
                host: Some((host, 22)),
            });
        }
        Ok(RemoteUrl { raw: url.to_string(), transport: Transport::Local, password: None, host: None })
    }

    /// The URL as given, for git2. Never put this in a message: use `Display`.
    pub fn raw(&self) -> &str {
        &self.raw
    }

    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// For a local remote: the folder it names, as libgit2 reads it (`file://` with an empty
    /// host or `localhost`, percent-decoded; anything else as a path).
    pub fn local_path(&self) -> Option<std::path::PathBuf> {
        if self.transport != Transport::Local {
            return None;
        }
        let Some(rest) = self.raw.get(..7).filter(|s| s.eq_ignore_ascii_case("file://")).map(|_| &self.raw[7..]) else {
            return Some(self.raw.clone().into());
        };
        let path = rest.strip_prefix("localhost").unwrap_or(rest);
        if !path.starts_with('/') {
            return None;
        }
        let bytes = percent_decoded(path)?;
        #[cfg(unix)]
        return Some(std::path::PathBuf::from(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(&bytes)));
        #[cfg(not(unix))]
        return String::from_utf8(bytes).ok().map(Into::into);
    }

    /// For ssh: the host and port the connection goes to.
    pub fn ssh_host(&self) -> Option<(&str, u16)> {
        self.host.as_ref().map(|(h, p)| (h.as_str(), *p))
    }

    /// Replaces the URL's password in `text` (a message from libgit2, say) with `***`.
    pub fn scrub(&self, text: &str) -> String {
        match &self.password {
            Some(password) => text.replace(&self.raw, &redact(&self.raw)).replace(password.as_str(), "***"),
            None => text.to_string(),
        }
    }
}

/// Shows the URL without the password of its userinfo.
impl fmt::Display for RemoteUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact(&self.raw))
    }
}

impl fmt::Debug for RemoteUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RemoteUrl({})", redact(&self.raw))
    }
}

/// `scheme://user:password@host/...` becomes `scheme://user@host/...`; anything else is kept.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    let Some((userinfo, hostport)) = authority.rsplit_once('@') else {
        return url.to_string();
    };
    let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
    if user.is_empty() { format!("{scheme}://{hostport}{path}") } else { format!("{scheme}://{user}@{hostport}{path}") }
}

/// `%2F` and the like decoded; `None` for a `%` not followed by two hex digits.
fn percent_decoded(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len());
    let mut bytes = text.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hex = [bytes.next()?, bytes.next()?];
            out.push(u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?);
        } else {
            out.push(b);
        }
    }
    Some(out)
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`.
fn split_host_port(hostport: &str) -> Option<(String, Option<u16>)> {
    let (host, port) = if let Some(rest) = hostport.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after {
            "" => None,
            _ => Some(after.strip_prefix(':')?),
        };
        (host, port)
    } else {
        match hostport.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (hostport, None),
        }
    };
    if host.is_empty() {
        return None;
    }
    let port = match port {
        Some("") | None => None,
        Some(p) => Some(p.parse().ok()?),
    };
    Some((host.to_ascii_lowercase(), port))
}

/// Git's scp-like syntax, `[user@]host:path`: a colon with no slash before it. Returns the
/// host.
fn scp_like(url: &str) -> Option<String> {
    let (user, rest) = match url.split_once('@') {
        Some((user, rest)) if !user.contains(['/', ':', '[']) => {
            (Some(user.to_string()).filter(|u| !u.is_empty()), rest)
        }
        _ => (None, url),
    };
    let (host, path) = if let Some(bracketed) = rest.strip_prefix('[') {
        // `[host]:path` spells a host that contains colons.
        let (host, after) = bracketed.split_once(']')?;
        (host, after.strip_prefix(':')?)
    } else {
        let colon = rest.find(':')?;
        if rest[..colon].contains('/') {
            return None;
        }
        (&rest[..colon], &rest[colon + 1..])
    };
    // One letter before the colon is a Windows drive, as Git reads it.
    if host.is_empty() || path.is_empty() || (host.len() == 1 && user.is_none()) {
        return None;
    }
    Some(host.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_remotes_name_their_folder() {
        let path = |url: &str| RemoteUrl::parse(url).unwrap().local_path();
        assert_eq!(path("/srv/git/desired.git"), Some("/srv/git/desired.git".into()));
        assert_eq!(path("relative/desired"), Some("relative/desired".into()));
        assert_eq!(path("file:///srv/git/my%20repo.git"), Some("/srv/git/my repo.git".into()));
        assert_eq!(path("FILE://localhost/srv/git/desired.git"), Some("/srv/git/desired.git".into()));
        assert_eq!(path("file://elsewhere/srv/git/desired.git"), None);
        assert_eq!(path("file:///srv/%zz"), None);
        assert_eq!(path("https://git.example/desired.git"), None);
    }

    #[test]
    fn transports_by_url() {
        let cases = [
            ("/srv/git/desired.git", Transport::Local),
            ("../desired", Transport::Local),
            ("file:///srv/git/desired.git", Transport::Local),
            ("https://git.example/org/desired.git", Transport::Http),
            ("http://127.0.0.1:3000/desired.git", Transport::Http),
            ("ssh://git@git.example:2222/org/desired.git", Transport::Ssh),
            ("git@git.example:org/desired.git", Transport::Ssh),
            ("git.example:org/desired.git", Transport::Ssh),
            ("git://git.example/desired.git", Transport::Git),
            ("C:/repos/desired", Transport::Local),
            ("./dir:with/colon", Transport::Local),
        ];
        for (url, transport) in cases {
            assert_eq!(RemoteUrl::parse(url).unwrap().transport(), transport, "{url}");
        }
    }

    #[test]
    fn unknown_scheme_is_refused() {
        let e = RemoteUrl::parse("ftp://user:hunter2@git.example/x").unwrap_err().to_string();
        assert!(e.contains("scheme `ftp`"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn ssh_hosts() {
        let cases = [
            ("ssh://git@git.example/org/x.git", "git.example", 22),
            ("ssh://Git.Example:2222/x.git", "git.example", 2222),
            ("ssh://deploy@[::1]:2200/x.git", "::1", 2200),
            ("git@git.example:org/x.git", "git.example", 22),
            ("git.example:x.git", "git.example", 22),
            ("deploy@[fe80::1]:x.git", "fe80::1", 22),
        ];
        for (url, host, port) in cases {
            let parsed = RemoteUrl::parse(url).unwrap();
            assert_eq!(parsed.ssh_host(), Some((host, port)), "{url}");
        }
    }

    #[test]
    fn passwords_never_shown() {
        let url = RemoteUrl::parse("https://bot:s3cret-token@git.example/x.git").unwrap();
        assert_eq!(url.to_string(), "https://bot@git.example/x.git");
        assert_eq!(format!("{url:?}"), "RemoteUrl(https://bot@git.example/x.git)");
        assert_eq!(
            url.scrub("failed to reach https://bot:s3cret-token@git.example/x.git (s3cret-token)"),
            "failed to reach https://bot@git.example/x.git (***)"
        );
        assert_eq!(redact("https://:tok@git.example/x"), "https://git.example/x");
        assert_eq!(redact("https://git.example/x@y"), "https://git.example/x@y");
        assert_eq!(redact("/srv/x"), "/srv/x");
    }
}

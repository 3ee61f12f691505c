//! Image references as the desired state uses them: upstream repositories, digests, mirror
//! targets and the mirror references derived from them.
//!
//! Parsing follows the Distribution reference grammar through `oci_spec::distribution::Reference`
//! (the same type the registry client uses), plus the rules Lifeboat adds: a source names no
//! tag, a target is a host with an optional path prefix, digests are well formed.

use std::fmt;
use std::str::FromStr;

use oci_spec::distribution::Reference;
use serde::Serialize;

/// A repository on a registry host, with Docker Hub names expanded (`docker.io/library/nginx`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(into = "String")]
pub struct Repository {
    pub host: String,
    pub path: String,
}

impl fmt::Display for Repository {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.host, self.path)
    }
}

impl From<Repository> for String {
    fn from(r: Repository) -> String {
        r.to_string()
    }
}

/// A content digest such as `sha256:<64 hex>`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, serde::Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct Digest(String);

impl TryFrom<String> for Digest {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl Digest {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `sha256:0123456789ab` — enough to tell digests apart in human output.
    pub fn short(&self) -> &str {
        let end = self.0.find(':').map_or(0, |i| i + 13).min(self.0.len());
        &self.0[..end]
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<Digest> for String {
    fn from(d: Digest) -> String {
        d.0
    }
}

impl FromStr for Digest {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (algorithm, hex) = s
            .split_once(':')
            .ok_or_else(|| format!("digest `{s}` has no algorithm: write `sha256:<64 hex digits>`"))?;
        let length = match algorithm {
            "sha256" => 64,
            "sha512" => 128,
            other => return Err(format!("digest algorithm `{other}` is not supported: use sha256 or sha512")),
        };
        if hex.len() != length || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(format!("digest `{s}` must be `{algorithm}:` followed by {length} lowercase hex digits"));
        }
        Ok(Digest(s.to_string()))
    }
}

/// What a mirrored image's `source` names: a repository, optionally pinned to a digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub repository: Repository,
    pub digest: Option<Digest>,
}

/// Splits `name[:tag][@digest]` into its name, tag and digest texts, without validating them.
fn split_reference(text: &str) -> (&str, Option<&str>, Option<&str>) {
    let (rest, digest) = match text.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (text, None),
    };
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    match rest[last_slash..].rfind(':') {
        Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..]), digest),
        None => (rest, None, digest),
    }
}

fn parse_repository(name: &str) -> Result<Repository, String> {
    if name.contains("://") {
        return Err(format!("`{name}` is a URL: write the image as host/path, without a scheme"));
    }
    let reference = Reference::from_str(name).map_err(|e| format!("`{name}` is not a valid image repository: {e}"))?;
    Ok(Repository { host: reference.registry().to_string(), path: reference.repository().to_string() })
}

impl Source {
    pub fn parse(text: &str) -> Result<Source, String> {
        let (name, tag, digest) = split_reference(text);
        let port_like = tag.is_some_and(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()));
        if !name.contains('/') && port_like && (name.contains('.') || name == "localhost") {
            return Err(format!(
                "`{text}` names only a registry host: add the repository path, such as `{name}:{}/team/app`",
                tag.unwrap_or_default()
            ));
        }
        if let Some(tag) = tag {
            return Err(format!(
                "source `{text}` carries the tag `{tag}`: name the repository only and list tags under `tags:`"
            ));
        }
        let repository = parse_repository(name)?;
        let digest = digest.map(Digest::from_str).transpose()?;
        Ok(Source { repository, digest })
    }
}

/// A mirror location: the mirror registry host and the repository prefix images go under.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(into = "String")]
pub struct Target {
    pub host: String,
    /// Path prefix without leading or trailing `/`; may be empty.
    pub prefix: String,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.prefix.is_empty() { f.write_str(&self.host) } else { write!(f, "{}/{}", self.host, self.prefix) }
    }
}

impl From<Target> for String {
    fn from(t: Target) -> String {
        t.to_string()
    }
}

impl Target {
    pub fn parse(text: &str) -> Result<Target, String> {
        let text = text.trim_end_matches('/');
        let (host, prefix) = text.split_once('/').unwrap_or((text, ""));
        if prefix.contains([':', '@']) {
            return Err(format!("target `{text}` must be a registry host and path prefix, without tag or digest"));
        }
        if !looks_like_host(host) {
            return Err(format!(
                "target `{text}` must start with the mirror registry host, such as `registry.internal.example:5000/mirror`"
            ));
        }
        validate_host(host)?;
        if !prefix.is_empty() {
            // Reuse the repository grammar on a stand-in image under the prefix.
            parse_repository(&format!("{host}/{prefix}/x"))
                .map_err(|_| format!("target path `{prefix}` is not a valid repository path: use lowercase letters, digits, `.`, `_`, `-` and `/`"))?;
        }
        Ok(Target { host: host.to_string(), prefix: prefix.to_string() })
    }

    /// The mirror repository of an upstream repository: its path kept under the prefix.
    pub fn repository_for(&self, source: &Repository) -> Repository {
        Repository {
            host: self.host.clone(),
            path: if self.prefix.is_empty() { source.path.clone() } else { format!("{}/{}", self.prefix, source.path) },
        }
    }
}

/// The Distribution rule for telling a host from a first path component.
fn looks_like_host(component: &str) -> bool {
    component.contains('.') || component.contains(':') || component == "localhost"
}

/// Checks `host[:port]` as written in a Registry document or a target.
pub fn validate_host(host: &str) -> Result<(), String> {
    if host.is_empty() {
        return Err("the registry host is empty".into());
    }
    if host.contains("://") || host.contains('/') {
        return Err(format!("`{host}` must be a host name with an optional port, without scheme or path"));
    }
    if host.starts_with('[') {
        return Err(format!(
            "`{host}`: IPv6 addresses cannot be written in image references; give the registry a host name"
        ));
    }
    let (name, port) = match host.rsplit_once(':') {
        Some((n, p)) => (n, Some(p)),
        None => (host, None),
    };
    if let Some(port) = port
        && !(port.bytes().all(|b| b.is_ascii_digit()) && port.parse::<u16>().is_ok_and(|p| p > 0))
    {
        return Err(format!("`{host}` has an invalid port `{port}`"));
    }
    let valid_name = !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if !valid_name {
        return Err(format!("`{host}` is not a valid host name"));
    }
    Ok(())
}

/// A tag as the Distribution grammar allows it: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
pub fn validate_tag(tag: &str) -> Result<(), String> {
    let mut bytes = tag.bytes();
    let first_ok = bytes.next().is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !first_ok || tag.len() > 128 || !bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')) {
        return Err(format!(
            "`{tag}` is not a valid tag: up to 128 letters, digits, `_`, `.` and `-`, not starting with `.` or `-`"
        ));
    }
    Ok(())
}

/// A fully qualified reference with a tag and/or digest, as used by pre-pull sets and backups.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(into = "String")]
pub struct ImageRef {
    pub repository: Repository,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

impl ImageRef {
    pub fn parse(text: &str) -> Result<ImageRef, String> {
        let (name, tag, digest) = split_reference(text);
        if tag.is_none() && digest.is_none() {
            return Err(format!(
                "`{text}` names no tag or digest: write `{text}:<tag>` or `{text}@sha256:<digest>` so the image is exact"
            ));
        }
        let repository = parse_repository(name)?;
        if let Some(tag) = tag {
            validate_tag(tag)?;
        }
        Ok(ImageRef { repository, tag: tag.map(str::to_string), digest: digest.map(Digest::from_str).transpose()? })
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl From<ImageRef> for String {
    fn from(r: ImageRef) -> String {
        r.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn sources() {
        let s = Source::parse("registry.vendor.example/base/glibc").unwrap();
        assert_eq!(s.repository.to_string(), "registry.vendor.example/base/glibc");
        assert_eq!(s.digest, None);
        let s = Source::parse("nginx").unwrap();
        assert_eq!(s.repository.to_string(), "docker.io/library/nginx");
        let s = Source::parse(&format!("localhost:5000/a/b@{D}")).unwrap();
        assert_eq!(s.repository.host, "localhost:5000");
        assert_eq!(s.digest.unwrap().as_str(), D);
        assert!(Source::parse("registry.example/a:1.0").unwrap_err().contains("tags:"));
        assert!(Source::parse("registry.example/a@sha256:abc").unwrap_err().contains("64"));
        assert!(Source::parse("Registry.example/UPPER").is_err());
        assert!(Source::parse("https://registry.example/a").unwrap_err().contains("scheme"));
        assert!(Source::parse("localhost:5000").unwrap_err().contains("only a registry host"));
        assert!(Source::parse("registry.example:5000").unwrap_err().contains("only a registry host"));
        assert!(Source::parse("nginx:1.25").unwrap_err().contains("carries the tag"));
    }

    #[test]
    fn targets() {
        let t = Target::parse("registry.internal.example:5000/mirror").unwrap();
        assert_eq!((t.host.as_str(), t.prefix.as_str()), ("registry.internal.example:5000", "mirror"));
        let src = Source::parse("registry.vendor.example/base/glibc").unwrap();
        assert_eq!(t.repository_for(&src.repository).to_string(), "registry.internal.example:5000/mirror/base/glibc");
        let bare = Target::parse("localhost:5000").unwrap();
        assert_eq!(bare.repository_for(&src.repository).to_string(), "localhost:5000/base/glibc");
        assert!(Target::parse("mirror/base").unwrap_err().contains("host"));
        assert!(Target::parse("registry.example:99999/m").unwrap_err().contains("port"));
        assert!(Target::parse("registry.example/m:1").is_err());
        assert!(Target::parse("registry.example:+5000/m").unwrap_err().contains("port"));
        assert!(Target::parse("[fd00::1]:5000").unwrap_err().contains("IPv6"));
    }

    #[test]
    fn tags_and_refs() {
        assert!(validate_tag("2.40").is_ok());
        assert!(validate_tag("v1.0.0-rc_1").is_ok());
        assert!(validate_tag(".hidden").is_err());
        assert!(validate_tag("").is_err());
        assert!(validate_tag("a/b").is_err());
        let r = ImageRef::parse("registry.internal.example:5000/mirror/base/glibc:2.40").unwrap();
        assert_eq!(r.tag.as_deref(), Some("2.40"));
        assert!(ImageRef::parse("registry.internal.example:5000/mirror/base/glibc").is_err());
    }

    #[test]
    fn digest_short_form() {
        let d: Digest = D.parse().unwrap();
        assert_eq!(d.short(), "sha256:0123456789ab");
    }
}

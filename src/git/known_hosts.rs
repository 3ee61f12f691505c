//! OpenSSH `known_hosts` files: which host keys an ssh remote may present.
//!
//! Reads plain host patterns (`git.example`, `[git.example]:2222`, `*.example`, `!bad.example`)
//! with any key type, and `@revoked` lines. Hashed host names (`|1|...`, written by
//! `ssh-keygen -H` or `HashKnownHosts yes`) and `@cert-authority` lines are counted but not
//! read. Parsing only; the file is read by the caller.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use sha2::{Digest, Sha256};

/// The usable lines of a known_hosts file.
#[derive(Debug, Default)]
pub struct KnownHosts {
    entries: Vec<Entry>,
    /// Lines with hashed host names, which cannot be matched here.
    hashed: usize,
    /// `@cert-authority` lines, which cannot be used here.
    authorities: usize,
}

#[derive(Debug)]
struct Entry {
    revoked: bool,
    patterns: Vec<String>,
    key_type: String,
    key: Vec<u8>,
}

/// What a known_hosts file says about the key a host presented.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// A line for this host lists this key.
    Trusted,
    /// The key is marked `@revoked`.
    Revoked,
    /// The host is listed, with other keys only (the key types listed).
    Changed(Vec<String>),
    /// Nothing in the file names this host.
    Unknown,
}

impl KnownHosts {
    /// Reads the file's text. Lines that cannot be understood are skipped, as OpenSSH does.
    pub fn parse(text: &str) -> KnownHosts {
        let mut known = KnownHosts::default();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut fields = line.split_whitespace();
            let mut first = fields.next().unwrap_or_default();
            let mut revoked = false;
            if first.starts_with('@') {
                match first {
                    "@revoked" => revoked = true,
                    "@cert-authority" => {
                        known.authorities += 1;
                        continue;
                    }
                    _ => continue,
                }
                first = fields.next().unwrap_or_default();
            }
            if first.starts_with("|1|") {
                known.hashed += 1;
                continue;
            }
            let (Some(key_type), Some(key)) = (fields.next(), fields.next()) else {
                continue;
            };
            let Ok(key) = STANDARD.decode(key) else {
                continue;
            };
            let patterns = first.split(',').filter(|p| !p.is_empty()).map(str::to_ascii_lowercase).collect();
            known.entries.push(Entry { revoked, patterns, key_type: key_type.to_string(), key });
        }
        known
    }

    /// Judges the key (the SSH wire encoding, as in the file's base64 field) that `host` on
    /// `port` presented.
    pub fn check(&self, host: &str, port: u16, key: &[u8]) -> Verdict {
        let name = host_name(host, port);
        let matching: Vec<&Entry> = self.entries.iter().filter(|e| host_matches(&e.patterns, &name)).collect();
        if matching.iter().any(|e| e.revoked && e.key == key) {
            return Verdict::Revoked;
        }
        if matching.iter().any(|e| !e.revoked && e.key == key) {
            return Verdict::Trusted;
        }
        let mut others: Vec<String> = matching.iter().filter(|e| !e.revoked).map(|e| e.key_type.clone()).collect();
        if others.is_empty() {
            return Verdict::Unknown;
        }
        others.sort();
        others.dedup();
        Verdict::Changed(others)
    }

    /// A sentence on the lines that were skipped, for messages about an unknown host.
    pub fn skipped(&self) -> Option<String> {
        let mut parts = Vec::new();
        if self.hashed > 0 {
            parts.push(format!(
                "{} line(s) with hashed host names, which Lifeboat cannot read (write the file without `ssh-keygen -H`)",
                self.hashed
            ));
        }
        if self.authorities > 0 {
            parts.push(format!("{} @cert-authority line(s), which Lifeboat does not support", self.authorities));
        }
        (!parts.is_empty()).then(|| format!("the file has {}", parts.join(" and ")))
    }
}

/// How OpenSSH names a host in known_hosts: `host` on port 22, `[host]:port` otherwise.
pub fn host_name(host: &str, port: u16) -> String {
    let host = host.to_ascii_lowercase();
    if port == 22 { host } else { format!("[{host}]:{port}") }
}

/// A key as `ssh-keygen -l` shows it: `SHA256:` and the unpadded base64 of its hash.
pub struct Fingerprint<'a>(pub &'a [u8]);

impl fmt::Display for Fingerprint<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SHA256:{}", STANDARD_NO_PAD.encode(Sha256::digest(self.0)))
    }
}

/// A comma-separated pattern list matches when some pattern matches and no negated one does.
fn host_matches(patterns: &[String], name: &str) -> bool {
    let mut matched = false;
    for pattern in patterns {
        if let Some(negated) = pattern.strip_prefix('!') {
            if glob(negated.as_bytes(), name.as_bytes()) {
                return false;
            }
        } else if glob(pattern.as_bytes(), name.as_bytes()) {
            matched = true;
        }
    }
    matched
}

/// `*` matches any run of characters, `?` exactly one.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == b'?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED25519: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIEnQtRlCoL/+LFO3NJtvrDLw56GU9N3HmcboAXrUrXP1";
    const ECDSA: &str = "AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBMgosuJ1B0lg2dvizokixpuEMxnIH3sQWK+s0bIqYj7c7Jus8z6URTUBk6+ykdad8O1GlD3LfUcPEe9+/4BfQUY=";
    const OTHER_ED25519: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIPkAYyIl/PckYRfbreYdVhjsVsXL1EM+iRI+A7zWBYXF";

    fn key(b64: &str) -> Vec<u8> {
        STANDARD.decode(b64).unwrap()
    }

    fn file() -> KnownHosts {
        KnownHosts::parse(&format!(
            "# comment\n\
             \n\
             git.example,192.0.2.1 ssh-ed25519 {ED25519}\n\
             [git.example]:2222 ecdsa-sha2-nistp256 {ECDSA} a comment\n\
             *.corp.example,!evil.corp.example ssh-ed25519 {ED25519}\n\
             |1|F1E1KeoE/eEWhi10WpGv4OdiO6Y=|3988QV0VE8wmZL7suNrYQLITLCg= ssh-ed25519 {ED25519}\n\
             @revoked old.example ssh-ed25519 {OTHER_ED25519}\n\
             old.example ssh-ed25519 {OTHER_ED25519}\n\
             @cert-authority *.example ssh-ed25519 {ED25519}\n\
             broken-line-without-key\n\
             bad.example ssh-ed25519 !!not-base64!!\n"
        ))
    }

    #[test]
    fn verdicts() {
        let known = file();
        let cases = [
            ("git.example", 22, ED25519, Verdict::Trusted),
            ("GIT.example", 22, ED25519, Verdict::Trusted),
            ("192.0.2.1", 22, ED25519, Verdict::Trusted),
            ("git.example", 2222, ECDSA, Verdict::Trusted),
            // The port is part of the name: port 22's entry does not vouch for 2222.
            ("git.example", 2222, ED25519, Verdict::Changed(vec!["ecdsa-sha2-nistp256".into()])),
            ("git.example", 22, OTHER_ED25519, Verdict::Changed(vec!["ssh-ed25519".into()])),
            ("git.example", 2200, ED25519, Verdict::Unknown),
            ("a.corp.example", 22, ED25519, Verdict::Trusted),
            ("evil.corp.example", 22, ED25519, Verdict::Unknown),
            ("old.example", 22, OTHER_ED25519, Verdict::Revoked),
            ("elsewhere.example", 22, ED25519, Verdict::Unknown),
            ("bad.example", 22, ED25519, Verdict::Unknown),
        ];
        for (host, port, k, verdict) in cases {
            assert_eq!(known.check(host, port, &key(k)), verdict, "{host}:{port}");
        }
    }

    #[test]
    fn skipped_lines_are_reported() {
        let skipped = file().skipped().unwrap();
        assert!(skipped.contains("1 line(s) with hashed host names"), "{skipped}");
        assert!(skipped.contains("1 @cert-authority line(s)"), "{skipped}");
        assert_eq!(KnownHosts::parse(&format!("git.example ssh-ed25519 {ED25519}\n")).skipped(), None);
    }

    #[test]
    fn names_and_fingerprints_as_openssh_writes_them() {
        assert_eq!(host_name("Git.Example", 22), "git.example");
        assert_eq!(host_name("git.example", 2222), "[git.example]:2222");
        // `ssh-keygen -lf` on the key above.
        assert_eq!(Fingerprint(&key(ED25519)).to_string(), "SHA256:apbXDBABbZqWD/Cx+YdGANa7LOwGH/jFnrtnI9ts938");
    }

    #[test]
    fn glob_patterns() {
        assert!(glob(b"*", b"anything"));
        assert!(glob(b"git.*", b"git.example"));
        assert!(glob(b"g?t.example", b"git.example"));
        assert!(glob(b"*.example", b"a.b.example"));
        assert!(!glob(b"*.example", b"example"));
        assert!(!glob(b"git.example", b"git.example.org"));
        assert!(glob(b"[git.example]:*", b"[git.example]:2222"));
    }
}

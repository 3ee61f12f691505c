//! containerd (1.6 and later): one `<upstream host>/hosts.toml` per upstream in the directory
//! its CRI plugin's `config_path` names, and the mirror's CA bundle beside it.
//!
//! containerd tries the `[host]` tables in file order and `server` last, per manifest and per
//! blob, moving on after a 404, a 5xx or any transport error. So mirror first is the mirror as
//! the one `[host]` and the upstream as `server`; upstream first swaps them; never contacting
//! upstream makes the mirror both. Every file has a `[host]` table: containerd 1.6 and 1.7 up to
//! 1.7.31 silently ignore a file without one. A mirror under a path prefix is
//! `https://MIRROR/v2/PREFIX` with `override_path`, so that containerd uses the path as it is
//! (`/v2/PREFIX/<repository>/manifests/<tag>`) instead of appending `/v2`. Tags fail over only
//! when the mirror may `resolve`; the kubelet's pull secret is never sent to the mirror, so mirror
//! credentials go into an `Authorization` header.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::Serialize;

use super::{
    HostMapping, Inputs, Login, RenderedFile, Role, by_host, ca_file, marker, mirror_cas, mirror_logins, owner, url,
};
use crate::desired::{ContactUpstream, FailoverOrder, FailoverSet, FailoverTags, NodeRuntime};

/// containerd's usual `config_path`, which Debian's and most distributions' `config.toml` leave
/// unset.
pub const CONFIG_PATH: &str = "/etc/containerd/certs.d";

/// The name of the mirror's CA bundle beside each `hosts.toml`.
pub const CA_FILE: &str = "lifeboat-mirror-ca.crt";

/// `hosts.toml`, field by field in the order containerd documents them: the `server` and its
/// settings, then the `[host]` tables.
#[derive(Serialize)]
struct HostsFile {
    server: String,
    /// The server's own settings, when the server is the mirror.
    #[serde(skip_serializing_if = "Option::is_none")]
    capabilities: Option<Vec<&'static str>>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    override_path: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    ca: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    header: Option<BTreeMap<&'static str, String>>,
    host: BTreeMap<String, HostSettings>,
}

impl HostsFile {
    /// `server` with no settings of its own: containerd's defaults for the upstream.
    fn upstream(server: String, host: BTreeMap<String, HostSettings>) -> HostsFile {
        HostsFile { server, capabilities: None, override_path: false, ca: None, header: None, host }
    }

    /// `server` with the mirror's settings.
    fn mirror(server: String, mirror: &HostSettings, host: BTreeMap<String, HostSettings>) -> HostsFile {
        HostsFile {
            server,
            capabilities: Some(mirror.capabilities.clone()),
            override_path: mirror.override_path,
            ca: mirror.ca,
            header: mirror.header.clone(),
            host,
        }
    }
}

#[derive(Serialize, Clone)]
struct HostSettings {
    capabilities: Vec<&'static str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    override_path: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    ca: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    header: Option<BTreeMap<&'static str, String>>,
}

pub(super) fn render(
    sets: &[(&str, &FailoverSet)],
    inputs: &Inputs,
    problems: &mut Vec<String>,
    _notes: &mut Vec<String>,
) -> Vec<RenderedFile> {
    let cas = mirror_cas(sets, inputs, problems);
    let logins = mirror_logins(sets, inputs, problems);
    let mut files = Vec::new();
    for (host, h) in by_host(NodeRuntime::Containerd, sets, problems) {
        let mirror_host = &h.mirror.host;
        let ca = cas.get(mirror_host);
        let text = match toml::to_string(&hosts_file(&host, &h, ca.is_some(), logins.get(mirror_host))) {
            Ok(text) => text,
            Err(e) => {
                problems.push(format!("writing hosts.toml for {host}: {e}"));
                continue;
            }
        };
        let what = format!(
            "containerd: pulls of {host} go {} (FailoverSet {}).",
            describe(h.set),
            h.sets.iter().copied().collect::<Vec<_>>().join(", ")
        );
        let dir = host_dir(&host);
        if let Some(pem) = ca {
            files.push(ca_file(format!("{dir}/{CA_FILE}"), &h.sets, pem));
        }
        files.push(RenderedFile {
            path: format!("{dir}/hosts.toml"),
            role: Role::Config,
            mode: if logins.contains_key(mirror_host) { 0o600 } else { 0o644 },
            content: marker::seal(&owner(h.sets.iter().copied()), &what, &text),
        });
    }
    files
}

/// The directory containerd looks up for `host`: `host[:port]`, as in image references.
pub fn host_dir(host: &str) -> String {
    host.to_string()
}

fn hosts_file(host: &str, h: &HostMapping<'_>, ca: bool, login: Option<&Login>) -> HostsFile {
    let set = h.set;
    let mirror_path = if h.mirror.prefix.is_empty() { String::new() } else { format!("/v2/{}", h.mirror.prefix) };
    let mirror_url = url(&h.mirror.host, h.mapping.mirror.insecure, &mirror_path);
    let mirror = HostSettings {
        capabilities: match set.tags {
            FailoverTags::Resolve => vec!["pull", "resolve"],
            FailoverTags::DigestOnly => vec!["pull"],
        },
        override_path: !mirror_path.is_empty(),
        ca: ca.then_some(CA_FILE),
        header: login.map(|l| {
            let basic = base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", l.username, l.password));
            BTreeMap::from([("Authorization", format!("Basic {basic}"))])
        }),
    };
    let upstream_url = url(upstream_server(host), h.mapping.upstream_insecure, "");
    match (set.contact_upstream, set.order) {
        (ContactUpstream::Never, _) => {
            HostsFile::mirror(mirror_url.clone(), &mirror.clone(), BTreeMap::from([(mirror_url, mirror)]))
        }
        (ContactUpstream::Allow, FailoverOrder::MirrorFirst) => {
            HostsFile::upstream(upstream_url, BTreeMap::from([(mirror_url, mirror)]))
        }
        (ContactUpstream::Allow, FailoverOrder::UpstreamFirst) => {
            let upstream =
                HostSettings { capabilities: vec!["pull", "resolve"], override_path: false, ca: None, header: None };
            HostsFile::mirror(mirror_url, &mirror, BTreeMap::from([(upstream_url, upstream)]))
        }
    }
}

/// Where an upstream is reached: Docker Hub's registry for `docker.io`, else the host itself.
fn upstream_server(host: &str) -> &str {
    if host == "docker.io" { "registry-1.docker.io" } else { host }
}

fn describe(set: &FailoverSet) -> &'static str {
    match (set.contact_upstream, set.order) {
        (ContactUpstream::Never, _) => "to the mirror only, never to the upstream",
        (ContactUpstream::Allow, FailoverOrder::MirrorFirst) => "to the mirror first, then to the upstream",
        (ContactUpstream::Allow, FailoverOrder::UpstreamFirst) => "to the upstream first, then to the mirror",
    }
}

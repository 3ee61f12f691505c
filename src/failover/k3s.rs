//! k3s and RKE2: `registries.yaml`, from which k3s writes containerd's `hosts.toml` files at
//! start, and the mirror's CA bundle beside it.
//!
//! Each upstream host gets its mirror endpoint (`https://MIRROR/v2/PREFIX`: a path other than
//! `/v2` makes k3s set `override_path`); k3s always lets mirrors resolve tags and always tries
//! the upstream last, unless it runs with `--disable-default-registry-endpoint`. The mirror's CA
//! and credentials go under `configs`, keyed by the mirror host. k3s reads the file only when it
//! starts.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::{Inputs, RenderedFile, Role, by_host, ca_file, marker, mirror_cas, mirror_logins, owner, url};
use crate::desired::{ContactUpstream, FailoverOrder, FailoverSet, FailoverTags, NodeRuntime};

/// Where k3s reads `registries.yaml` (RKE2: `/etc/rancher/rke2`).
pub const DIR: &str = "/etc/rancher/k3s";

/// The file k3s reads.
pub const FILE: &str = "registries.yaml";

#[derive(Serialize)]
struct RegistriesYaml {
    mirrors: BTreeMap<String, Endpoints>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    configs: BTreeMap<String, Config>,
}

#[derive(Serialize)]
struct Endpoints {
    endpoint: Vec<String>,
}

#[derive(Serialize)]
struct Config {
    #[serde(skip_serializing_if = "Option::is_none")]
    auth: Option<Auth>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tls: Option<Tls>,
}

#[derive(Serialize)]
struct Auth {
    username: String,
    password: String,
}

#[derive(Serialize)]
struct Tls {
    ca_file: String,
}

/// The CA bundle of a mirror host, relative to k3s's directory.
fn ca_path(mirror_host: &str) -> String {
    format!("lifeboat/{}-ca.crt", mirror_host.replace(':', "_"))
}

pub(super) fn render(
    sets: &[(&str, &FailoverSet)],
    inputs: &Inputs,
    problems: &mut Vec<String>,
    notes: &mut Vec<String>,
) -> Vec<RenderedFile> {
    let cas = mirror_cas(sets, inputs, problems);
    let logins = mirror_logins(sets, inputs, problems);
    let dir = inputs.k3s_dir.as_deref().unwrap_or(DIR).trim_end_matches('/');
    let mut yaml = RegistriesYaml { mirrors: BTreeMap::new(), configs: BTreeMap::new() };
    let mut owners: BTreeSet<&str> = BTreeSet::new();
    // One CA bundle per mirror host, owned by every set that uses the mirror.
    let mut ca_owners: BTreeMap<String, BTreeSet<&str>> = BTreeMap::new();
    let mut files = Vec::new();
    for (name, set) in sets {
        if set.tags == FailoverTags::DigestOnly {
            notes.push(format!("FailoverSet/{name}: k3s lets its mirrors resolve tags, so tags fail over too"));
        }
        if set.contact_upstream == ContactUpstream::Never {
            notes.push(format!(
                "FailoverSet/{name}: k3s asks the upstream after the mirror unless it runs with \
                 --disable-default-registry-endpoint"
            ));
        }
    }
    for (host, h) in by_host(NodeRuntime::K3s, sets, problems) {
        owners.extend(h.sets.iter().copied());
        let mirror_host = h.mirror.host.clone();
        let mirror_path = if h.mirror.prefix.is_empty() { String::new() } else { format!("/v2/{}", h.mirror.prefix) };
        let mirror = url(&mirror_host, h.mapping.mirror.insecure, &mirror_path);
        let endpoint = match (h.set.contact_upstream, h.set.order) {
            (ContactUpstream::Allow, FailoverOrder::UpstreamFirst) => {
                let upstream = if host == "docker.io" { "registry-1.docker.io" } else { host.as_str() };
                vec![url(upstream, h.mapping.upstream_insecure, ""), mirror]
            }
            _ => vec![mirror],
        };
        yaml.mirrors.insert(host.clone(), Endpoints { endpoint });
        let tls = cas.get(&mirror_host).map(|_| {
            ca_owners.entry(mirror_host.clone()).or_default().extend(h.sets.iter().copied());
            Tls { ca_file: format!("{dir}/{}", ca_path(&mirror_host)) }
        });
        let auth =
            logins.get(&mirror_host).map(|l| Auth { username: l.username.clone(), password: l.password.clone() });
        if tls.is_some() || auth.is_some() {
            yaml.configs.insert(mirror_host, Config { auth, tls });
        }
    }
    for (host, sets) in &ca_owners {
        files.push(ca_file(ca_path(host), sets, &cas[host]));
    }
    if owners.is_empty() {
        return files;
    }
    let text = match serde_yaml::to_string(&yaml) {
        Ok(text) => text,
        Err(e) => {
            problems.push(format!("writing registries.yaml: {e}"));
            return files;
        }
    };
    notes
        .push("k3s reads registries.yaml when it starts: restart k3s (or rke2-server / rke2-agent) to apply it".into());
    files.push(RenderedFile {
        path: FILE.to_string(),
        role: Role::Config,
        mode: if yaml.configs.values().any(|c| c.auth.is_some()) { 0o600 } else { 0o644 },
        content: marker::seal(
            &owner(owners.iter().copied()),
            &format!(
                "k3s registries: the mirror of FailoverSet {}.",
                owners.iter().copied().collect::<Vec<_>>().join(", ")
            ),
            &text,
        ),
    });
    files
}

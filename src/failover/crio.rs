//! CRI-O, podman, skopeo and buildah (containers-registries.conf(5), version 2): one drop-in
//! per set in `/etc/containers/registries.conf.d/`, and the mirror's CA bundle in
//! `/etc/containers/certs.d/<mirror host>/`.
//!
//! A `[[registry]]` matches references by `prefix` (the longest wins); its `[[registry.mirror]]`
//! locations are tried in order and the registry's own `location` last, and a reference is
//! rewritten as `location + rest`, which is exactly where Lifeboat mirrors it. Mirrors always
//! come first: an upstream-first order cannot be written here. `pull-from-mirror` (containers/
//! image 5.21 and later) says whether tags fail over; `blocked` keeps the upstream from ever
//! being contacted. CRI-O reads the drop-ins at start and on SIGHUP (or by itself with
//! `auto_reload_registries`, CRI-O 1.30 and later); podman and skopeo read them on every run.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::{Inputs, RenderedFile, Role, ca_file, marker, mirror_cas, owner};
use crate::desired::{ContactUpstream, FailoverOrder, FailoverSet, FailoverTags};

/// The directory these paths are relative to on a node.
pub const DIR: &str = "/etc/containers";

/// The name of the mirror's CA bundle in `certs.d/<mirror host>/`.
pub const CA_FILE: &str = "lifeboat-mirror-ca.crt";

#[derive(Serialize)]
struct RegistriesConf {
    registry: Vec<Registry>,
}

#[derive(Serialize)]
struct Registry {
    prefix: String,
    location: String,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    insecure: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    blocked: bool,
    mirror: Vec<Mirror>,
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct Mirror {
    location: String,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    insecure: bool,
    pull_from_mirror: &'static str,
}

/// The drop-in of one set: `registries.conf.d/50-lifeboat-<set>.conf`.
pub fn drop_in_path(set: &str) -> String {
    format!("registries.conf.d/50-lifeboat-{set}.conf")
}

pub(super) fn render(
    sets: &[(&str, &FailoverSet)],
    inputs: &Inputs,
    problems: &mut Vec<String>,
    notes: &mut Vec<String>,
) -> Vec<RenderedFile> {
    let cas = mirror_cas(sets, inputs, problems);
    let mut files = Vec::new();
    // One CA bundle per mirror host, owned by every set that uses the mirror.
    let mut ca_owners: BTreeMap<String, BTreeSet<&str>> = BTreeMap::new();
    for (name, set) in sets {
        if set.order == FailoverOrder::UpstreamFirst {
            notes.push(format!(
                "FailoverSet/{name}: CRI-O, podman and skopeo always try mirrors first; these files make the mirror \
                 first, not the upstream"
            ));
        }
        if set.mirror_pull_secret.is_some() {
            notes.push(format!(
                "FailoverSet/{name}: CRI-O, podman and skopeo read the mirror's credentials from their auth file \
                 (auth.json) under the mirror's host; these files do not carry them"
            ));
        }
        let conf = RegistriesConf {
            registry: set
                .mappings
                .iter()
                .map(|m| {
                    let upstream = m.upstream.to_string();
                    Registry {
                        location: upstream.clone(),
                        prefix: upstream,
                        insecure: m.upstream_insecure,
                        blocked: set.contact_upstream == ContactUpstream::Never,
                        mirror: vec![Mirror {
                            location: m.mirror.location.to_string(),
                            insecure: m.mirror.insecure,
                            pull_from_mirror: match set.tags {
                                FailoverTags::Resolve => "all",
                                FailoverTags::DigestOnly => "digest-only",
                            },
                        }],
                    }
                })
                .collect(),
        };
        let text = match toml::to_string(&conf) {
            Ok(text) => text,
            Err(e) => {
                problems.push(format!("writing the registries.conf drop-in of FailoverSet/{name}: {e}"));
                continue;
            }
        };
        for m in &set.mappings {
            if cas.contains_key(&m.mirror.location.host) {
                ca_owners.entry(m.mirror.location.host.clone()).or_default().insert(*name);
            }
        }
        files.push(RenderedFile {
            path: drop_in_path(name),
            role: Role::Config,
            mode: 0o644,
            content: marker::seal(
                &owner([*name]),
                &format!("registries.conf drop-in: the mirror of FailoverSet {name}."),
                &text,
            ),
        });
    }
    for (host, owners) in &ca_owners {
        files.push(ca_file(format!("certs.d/{host}/{CA_FILE}"), owners, &cas[host]));
    }
    files
}

//! Node failover files: for one container runtime, the registry configuration that makes it
//! pull an upstream's images from the mirror, with pod image references unchanged.
//!
//! [`render`] takes validated FailoverSets and the bytes they name (the mirror's CA bundle, the
//! mirror's credentials) and returns each file exactly as the runtime reads it, with its path
//! relative to the runtime's directory: containerd's `config_path` ([`containerd`]), CRI-O's
//! `/etc/containers` ([`crio`]), k3s's `/etc/rancher/k3s` ([`k3s`]). Every file starts with
//! Lifeboat's ownership line ([`marker`]), which carries the hash of the rest, so the node-side
//! writer can tell its own files, untouched, from anyone else's. Pure: no I/O, no clock; writing
//! the files to a node is `nodeagent::failover`'s job, reading the desired state the caller's.

pub mod ca;
pub mod containerd;
pub mod crio;
pub mod k3s;
pub mod marker;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Serialize;

use crate::desired::image::Target;
use crate::desired::{FailoverMapping, FailoverSet, NodeRuntime};

/// A user name and password for the mirror, from a set's `mirrorPullSecret`. `Debug` never
/// shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Login {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for Login {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Login({}, <redacted>)", self.username)
    }
}

/// What rendering reads besides the sets.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    /// CA bundles named by the mirrors' Registry documents, by their path in the desired state.
    pub ca_files: BTreeMap<String, Vec<u8>>,
    /// Credentials for mirror hosts (`host[:port]`), for the sets that name a mirror pull secret.
    pub mirror_logins: BTreeMap<String, Login>,
    /// Where k3s's directory is on the node (`registries.yaml` names its CA files by absolute
    /// path). Default [`k3s::DIR`].
    pub k3s_dir: Option<String>,
}

/// What a file is for: CA bundles are written before the files that name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Role {
    Ca,
    Config,
}

/// One file as the runtime reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RenderedFile {
    /// Relative to the runtime's directory, `/`-separated.
    pub path: String,
    pub role: Role,
    /// `0o600` when the file holds credentials, else `0o644`.
    pub mode: u32,
    /// The whole file, ownership line first.
    pub content: String,
}

/// Every file of one runtime for some sets, CA bundles first, and what the node must know.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Rendered {
    pub runtime: NodeRuntime,
    pub files: Vec<RenderedFile>,
    /// What the files cannot do on this runtime, or what it needs to read them.
    pub notes: Vec<String>,
}

/// Why files could not be rendered: every problem found, each naming the set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderError(pub Vec<String>);

impl fmt::Display for RenderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join("; "))
    }
}

impl std::error::Error for RenderError {}

/// The files `runtime` reads for `sets` (name, set). Sets not written for the runtime are
/// left out, with a note.
pub fn render(runtime: NodeRuntime, sets: &[(&str, &FailoverSet)], inputs: &Inputs) -> Result<Rendered, RenderError> {
    let mut notes = Vec::new();
    let mut chosen = Vec::new();
    for (name, set) in sets {
        if set.covers(runtime) {
            chosen.push((*name, *set));
        } else {
            let named = set.runtimes.iter().flatten().map(|r| r.as_str()).collect::<Vec<_>>().join(", ");
            notes.push(format!("FailoverSet/{name} is written for {named} only, not {runtime}: left out"));
        }
    }
    let mut problems = Vec::new();
    let mut files = match runtime {
        NodeRuntime::Containerd => containerd::render(&chosen, inputs, &mut problems, &mut notes),
        NodeRuntime::Crio => crio::render(&chosen, inputs, &mut problems, &mut notes),
        NodeRuntime::K3s => k3s::render(&chosen, inputs, &mut problems, &mut notes),
    };
    if !problems.is_empty() {
        return Err(RenderError(problems));
    }
    files.sort_by(|a, b| (a.role, &a.path).cmp(&(b.role, &b.path)));
    // One mirror's CA is written once per directory that needs it; two sets naming the same
    // mirror give the same bytes.
    files.dedup_by(|a, b| a.path == b.path && a.content == b.content);
    for pair in files.windows(2) {
        if pair[0].path == pair[1].path {
            return Err(RenderError(vec![format!(
                "two different files would be written to {}: render the sets one at a time with --set",
                pair[0].path
            )]));
        }
    }
    Ok(Rendered { runtime, files, notes })
}

impl Rendered {
    /// Every file headed by its path and mode: what `lifeboat failover render` prints without
    /// `--out`.
    pub fn listing(&self) -> String {
        self.files
            .iter()
            .map(|file| format!("==> {} (mode {:04o}) <==\n{}\n", file.path, file.mode, file.content))
            .collect()
    }
}

/// The contents of each set's mirror CA bundle, checked, by mirror host; problems name the set.
fn mirror_cas(sets: &[(&str, &FailoverSet)], inputs: &Inputs, problems: &mut Vec<String>) -> BTreeMap<String, String> {
    let mut cas = BTreeMap::new();
    for (name, set) in sets {
        for m in &set.mappings {
            let Some(path) = &m.mirror.ca_file else { continue };
            let host = &m.mirror.location.host;
            if cas.contains_key(host) {
                continue;
            }
            match inputs.ca_files.get(path) {
                None => problems.push(format!(
                    "FailoverSet/{name}: the CA bundle {path} of the mirror {host} was not read from the desired state"
                )),
                Some(bytes) => match ca::check(bytes) {
                    Ok(text) => {
                        cas.insert(host.clone(), text);
                    }
                    Err(why) => problems.push(format!(
                        "FailoverSet/{name}: the CA bundle {path} of the mirror {host} is unusable: {why}"
                    )),
                },
            }
        }
    }
    cas
}

/// The login for each mirror of the sets that name a mirror pull secret. As with any pull
/// secret, a mirror host it has no entry for is reached anonymously; a secret with none for any
/// of the set's mirrors is a mistake.
fn mirror_logins(
    sets: &[(&str, &FailoverSet)],
    inputs: &Inputs,
    problems: &mut Vec<String>,
) -> BTreeMap<String, Login> {
    let mut logins = BTreeMap::new();
    for (name, set) in sets {
        let Some(secret) = &set.mirror_pull_secret else { continue };
        let hosts: BTreeSet<&String> = set.mappings.iter().map(|m| &m.mirror.location.host).collect();
        let found: Vec<_> =
            hosts.iter().filter_map(|h| Some(((*h).clone(), inputs.mirror_logins.get(*h)?.clone()))).collect();
        if found.is_empty() && !hosts.is_empty() {
            problems.push(format!(
                "FailoverSet/{name} names the mirror pull secret {secret}, and no credentials for {} were given (with \
                 `lifeboat failover render`, pass the Secret's .dockerconfigjson with --mirror-credentials)",
                hosts.iter().map(|h| h.as_str()).collect::<Vec<_>>().join(" or ")
            ));
        }
        logins.extend(found);
    }
    logins
}

/// The mappings of the sets per upstream host, each host with the one mirror path it fails over
/// to, as runtimes that configure mirrors per host (containerd, k3s) need them.
struct HostMapping<'a> {
    /// The sets asking for it.
    sets: BTreeSet<&'a str>,
    set: &'a FailoverSet,
    mapping: &'a FailoverMapping,
    /// The mirror path for the whole host.
    mirror: Target,
}

fn by_host<'a>(
    runtime: NodeRuntime,
    sets: &[(&'a str, &'a FailoverSet)],
    problems: &mut Vec<String>,
) -> BTreeMap<String, HostMapping<'a>> {
    let mut hosts: BTreeMap<String, HostMapping<'a>> = BTreeMap::new();
    for (name, set) in sets {
        for m in &set.mappings {
            let Some(mirror) = m.host_level_mirror() else {
                problems.push(format!(
                    "FailoverSet/{name}: {runtime} configures mirrors per registry host, and `{} → {}` is for part of a \
                     host only",
                    m.upstream, m.mirror.location
                ));
                continue;
            };
            match hosts.get_mut(&m.upstream.host) {
                Some(existing) if existing.mirror == mirror && same_settings(existing.set, set) => {
                    existing.sets.insert(name);
                }
                Some(existing) => problems.push(format!(
                    "FailoverSet/{} and FailoverSet/{name} both configure {} differently: render them one at a time \
                     with --set",
                    existing.sets.iter().next().copied().unwrap_or_default(),
                    m.upstream.host
                )),
                None => {
                    hosts.insert(
                        m.upstream.host.clone(),
                        HostMapping { sets: BTreeSet::from([*name]), set, mapping: m, mirror },
                    );
                }
            }
        }
    }
    hosts
}

/// Whether two sets render one host the same way.
fn same_settings(a: &FailoverSet, b: &FailoverSet) -> bool {
    (a.order, a.tags, a.contact_upstream, &a.mirror_pull_secret)
        == (b.order, b.tags, b.contact_upstream, &b.mirror_pull_secret)
}

/// `failover/a,b` for the ownership line.
fn owner<'a>(sets: impl IntoIterator<Item = &'a str>) -> String {
    format!("failover/{}", sets.into_iter().collect::<Vec<_>>().join(","))
}

/// `https://host`, or `http://host` for a registry reached over plain HTTP.
fn url(host: &str, insecure: bool, path: &str) -> String {
    let scheme = if insecure { "http" } else { "https" };
    format!("{scheme}://{host}{path}")
}

/// The file a CA bundle is written to, with its ownership line.
fn ca_file(path: String, sets: &BTreeSet<&str>, pem: &str) -> RenderedFile {
    RenderedFile {
        path,
        role: Role::Ca,
        mode: 0o644,
        content: marker::seal(&owner(sets.iter().copied()), "The mirror's CA bundle, from its Registry document.", pem),
    }
}

#[cfg(test)]
mod tests;

//! FailoverSet documents: which nodes fail over, for which upstreams (derived from MirrorSets
//! or given as pairs), to which mirror paths, and how. Every mapping must be unambiguous (one
//! mirror per upstream, one upstream per mirror path) and expressible in each runtime the set is
//! written for; what a runtime cannot do is said here, before any node file is rendered.

use std::collections::{BTreeMap, BTreeSet};

use super::{Checker, Document, check_subdomain};
use crate::desired::image::Target;
use crate::desired::raw::{self, ContactUpstream, FailoverOrder, FailoverTags, NodeRuntime};
use crate::desired::{FailoverMapping, FailoverSet, MirrorEndpoint, Platforms};

/// An upstream claimed by a FailoverSet, so that a second set covering it on the same nodes is
/// caught.
pub(super) struct Claim {
    set: String,
    node_selector: BTreeMap<String, String>,
    at: String,
}

/// A mapping as one entry of the document asks for it, before merging.
struct Candidate {
    upstream: Target,
    mirror: Target,
    /// `MirrorSet/<name>` or `spec.upstreams[i]`.
    source: String,
    /// Where in the document it was asked for.
    path: String,
    repositories: BTreeSet<crate::desired::Repository>,
}

impl Checker<'_> {
    pub(super) fn failover_set(
        &mut self,
        doc: &Document<'_>,
        name: &str,
        spec: &raw::FailoverSetSpec,
    ) -> Option<FailoverSet> {
        let before = self.errors();
        self.node_selection(doc, &spec.node_selector, &spec.tolerations);
        self.mirror_set_refs(doc, &spec.mirror_sets);
        let runtimes = spec.runtimes.as_ref().map(|list| self.runtimes(doc, list));
        let order = spec.order.unwrap_or(FailoverOrder::MirrorFirst);
        let tags = spec.tags.unwrap_or(FailoverTags::Resolve);
        let contact_upstream = spec.contact_upstream.unwrap_or(ContactUpstream::Allow);
        if spec.mirror_sets.is_empty() && spec.upstreams.is_empty() {
            self.diags.push(
                doc.diagnostic("spec", "no upstream is selected")
                    .hint("name MirrorSets in `mirrorSets:`, or list `upstreams:` pairs of upstream and mirror"),
            );
        }
        let candidates = self.candidates(doc, spec);
        let mappings = self.merge(doc, candidates);
        self.check_mirror_paths(doc, &mappings);
        let set = FailoverSet {
            origin: doc.origin(),
            node_selector: spec.node_selector.clone(),
            tolerations: spec.tolerations.clone(),
            mirror_sets: spec.mirror_sets.iter().cloned().collect(),
            mappings: mappings.into_values().map(|(m, _)| m).collect(),
            order,
            tags,
            contact_upstream,
            runtimes,
            mirror_pull_secret: spec.mirror_pull_secret.clone(),
        };
        self.check_runtimes(doc, &set);
        if let Some(secret) = &set.mirror_pull_secret {
            self.field(doc, "spec.mirrorPullSecret", check_subdomain(secret, "Secret"));
            for m in set.mappings.iter().filter(|m| m.mirror.insecure) {
                let host = &m.mirror.location.host;
                self.warn(
                    doc,
                    "spec.mirrorPullSecret",
                    format!("the mirror `{host}` is reached over plain HTTP: its credentials travel unencrypted"),
                );
            }
        }
        self.claim_upstreams(doc, name, &set);
        (self.errors() == before).then_some(set)
    }

    fn runtimes(&mut self, doc: &Document<'_>, list: &[NodeRuntime]) -> BTreeSet<NodeRuntime> {
        if list.is_empty() {
            self.diags.push(doc.diagnostic("spec.runtimes", "the runtime list is empty").hint(
                "list containerd, crio or k3s, or leave `runtimes` out to write for the runtime detected on each node",
            ));
        }
        let mut set = BTreeSet::new();
        for (i, runtime) in list.iter().enumerate() {
            if !set.insert(*runtime) {
                self.warn(doc, &format!("spec.runtimes[{i}]"), format!("`{runtime}` is listed twice"));
            }
        }
        set
    }

    /// One candidate per upstream host of each MirrorSet, and one per explicit pair.
    fn candidates(&mut self, doc: &Document<'_>, spec: &raw::FailoverSetSpec) -> Vec<Candidate> {
        let mut candidates = Vec::new();
        for (i, set_name) in spec.mirror_sets.iter().enumerate() {
            let path = format!("spec.mirrorSets[{i}]");
            // A MirrorSet that did not validate has its own diagnostics; one that does not exist
            // was reported above.
            let Some(set) = self.state.mirror_sets.get(set_name).cloned() else { continue };
            if let Platforms::Only(platforms) = &set.platforms {
                let list = platforms.iter().cloned().collect::<Vec<_>>().join(", ");
                let message = format!(
                    "MirrorSet `{set_name}` copies only {list}, so its mirrored indexes have digests of their own: a pod \
                     pinned to the upstream index digest (`image@sha256:...`) finds nothing in the mirror and cannot \
                     fail over"
                );
                self.diags.push(
                    doc.diagnostic(&path, message)
                        .hint(
                            "refer to these images by tag, or mirror them with `platforms: all` so that the digests \
                             stay the upstream's",
                        )
                        .warning(),
                );
            }
            let mut by_host: BTreeMap<String, BTreeSet<crate::desired::Repository>> = BTreeMap::new();
            for image in &set.images {
                by_host.entry(image.source.host.clone()).or_default().insert(image.source.clone());
            }
            for (host, repositories) in by_host {
                candidates.push(Candidate {
                    upstream: Target { host, prefix: String::new() },
                    mirror: set.target.clone(),
                    source: format!("MirrorSet/{set_name}"),
                    path: path.clone(),
                    repositories,
                });
            }
        }
        for (i, pair) in spec.upstreams.iter().enumerate() {
            let path = format!("spec.upstreams[{i}]");
            let upstream = self.field(doc, &format!("{path}.upstream"), parse_upstream(&pair.upstream));
            let mirror = self.field(
                doc,
                &format!("{path}.mirror"),
                Target::parse(&pair.mirror).map_err(|e| e.replacen("target", "mirror", 1)),
            );
            let (Some(upstream), Some(mirror)) = (upstream, mirror) else { continue };
            if !self.names.mirror_hosts.contains(&mirror.host) {
                self.diags.push(
                    doc.diagnostic(
                        &format!("{path}.mirror"),
                        format!("no MirrorSet writes to `{}`: nothing Lifeboat does fills it", mirror.host),
                    )
                    .hint("make sure the mirror holds the upstream's images under this path, or mirror them with a MirrorSet")
                    .warning(),
                );
            }
            candidates.push(Candidate { upstream, mirror, source: path.clone(), path, repositories: BTreeSet::new() });
        }
        candidates
    }

    /// One mapping per upstream: the same upstream asked for twice must name the same mirror.
    /// Returns the mappings keyed by upstream, each with where it was first asked for.
    fn merge(&mut self, doc: &Document<'_>, candidates: Vec<Candidate>) -> BTreeMap<String, (FailoverMapping, String)> {
        let mut mappings: BTreeMap<String, (FailoverMapping, String)> = BTreeMap::new();
        for c in candidates {
            if c.upstream.host.eq_ignore_ascii_case(&c.mirror.host) {
                self.diags.push(
                    doc.diagnostic(&c.path, format!("`{}` would fail over to its own host `{}`", c.upstream, c.mirror))
                        .hint("the mirror is another registry host: name where the copies are kept"),
                );
                continue;
            }
            let key = c.upstream.to_string();
            match mappings.get_mut(&key) {
                Some((existing, _)) if existing.mirror.location != c.mirror => {
                    let first = existing.sources.iter().cloned().collect::<Vec<_>>().join(", ");
                    let message = format!(
                        "`{key}` would fail over to `{}` (from {first}) and to `{}` (from {})",
                        existing.mirror.location, c.mirror, c.source
                    );
                    self.diags.push(doc.diagnostic(&c.path, message).hint(
                        "a node asks one mirror per upstream: give the MirrorSets that mirror it one target, or drop \
                         one of the two",
                    ));
                }
                Some((existing, _)) => {
                    existing.sources.insert(c.source);
                    existing.repositories.extend(c.repositories);
                }
                None => {
                    let mapping = FailoverMapping {
                        upstream_insecure: self.registry_insecure(&c.upstream.host),
                        mirror: MirrorEndpoint {
                            insecure: self.registry_insecure(&c.mirror.host),
                            ca_file: self.registry_ca(&c.mirror.host),
                            location: c.mirror,
                        },
                        upstream: c.upstream,
                        sources: BTreeSet::from([c.source]),
                        repositories: c.repositories,
                    };
                    mappings.insert(key, (mapping, c.path));
                }
            }
        }
        mappings
    }

    /// Two upstreams must never be served from one mirror path: `a/x` and `b/x` would be the
    /// same mirror repository, and a node asking for one would get the other.
    fn check_mirror_paths(&mut self, doc: &Document<'_>, mappings: &BTreeMap<String, (FailoverMapping, String)>) {
        let list: Vec<&(FailoverMapping, String)> = mappings.values().collect();
        for (i, (a, a_path)) in list.iter().enumerate() {
            for (b, b_path) in list.iter().skip(i + 1) {
                for ((outer, _), (inner, inner_path)) in [((a, a_path), (b, b_path)), ((b, b_path), (a, a_path))] {
                    let Some(rest) = path_below(&outer.mirror.location, &inner.mirror.location) else { continue };
                    if join(&outer.upstream, rest) == inner.upstream {
                        // `vendor → m/p` and `vendor/base → m/p/base` say the same thing.
                        continue;
                    }
                    let example = if rest.is_empty() { "x".to_string() } else { format!("{rest}/x") };
                    let message = format!(
                        "`{}` and `{}` would both be served from `{}`: `{}` and `{}` are the same mirror repository",
                        outer.upstream,
                        inner.upstream,
                        inner.mirror.location,
                        join(&outer.upstream, &example),
                        join(&inner.upstream, "x"),
                    );
                    self.diags.push(doc.diagnostic(inner_path, message).hint(
                        "give each upstream its own path in the mirror, such as a MirrorSet target ending in the \
                         upstream host (`registry.internal.example:5000/mirror/docker.io`)",
                    ));
                    break;
                }
            }
        }
    }

    /// What each runtime the set is written for cannot express: an error when the runtime is
    /// named, a warning when it would only be detected on a node.
    fn check_runtimes(&mut self, doc: &Document<'_>, set: &FailoverSet) {
        let named = |r: NodeRuntime| set.runtimes.as_ref().is_some_and(|s| s.contains(&r));
        let host_level = set.covers(NodeRuntime::Containerd) || set.covers(NodeRuntime::K3s);
        if host_level {
            self.check_host_level(doc, set);
        }
        if set.order == FailoverOrder::UpstreamFirst {
            if set.contact_upstream == ContactUpstream::Never {
                self.diags.push(
                    doc.diagnostic(
                        "spec.order",
                        "`upstreamFirst` with `contactUpstream: never` leaves no upstream to ask",
                    )
                    .hint("drop one of the two"),
                );
            }
            if named(NodeRuntime::Crio) {
                self.diags.push(
                    doc.diagnostic(
                        "spec.order",
                        "CRI-O (and podman, skopeo) always try mirrors before the upstream: `upstreamFirst` cannot be \
                         expressed in registries.conf",
                    )
                    .hint("use `order: mirrorFirst`, or drop crio from `runtimes`"),
                );
            } else if set.covers(NodeRuntime::Crio) {
                self.warn(
                    doc,
                    "spec.order",
                    "CRI-O always tries mirrors before the upstream: on CRI-O nodes this set works as `mirrorFirst`",
                );
            }
            if host_level {
                let d = doc
                    .diagnostic(
                        "spec.order",
                        "with `upstreamFirst`, an upstream that drops packets (a firewall black hole) costs a 30 s \
                         connect timeout per request on containerd 1.6 and 1.7, for every manifest and layer, before \
                         the mirror is asked; an upstream that refuses connections costs nothing",
                    )
                    .hint("keep `mirrorFirst` unless nodes must prefer upstream while it is healthy")
                    .warning();
                self.diags.push(d);
            }
        }
        if set.tags == FailoverTags::DigestOnly {
            self.warn(
                doc,
                "spec.tags",
                "with `digestOnly`, only references by digest (`image@sha256:...`) fail over: pulls by tag still need \
                 the upstream",
            );
            if named(NodeRuntime::K3s) {
                self.diags.push(
                    doc.diagnostic(
                        "spec.tags",
                        "k3s always lets its mirrors resolve tags: `digestOnly` cannot be expressed in registries.yaml",
                    )
                    .hint("use `tags: resolve`, or drop k3s from `runtimes`"),
                );
            } else if set.covers(NodeRuntime::K3s) {
                self.warn(
                    doc,
                    "spec.tags",
                    "on k3s nodes the mirror resolves tags anyway: registries.yaml cannot limit a mirror to digests",
                );
            }
        }
        if set.contact_upstream == ContactUpstream::Never && set.covers(NodeRuntime::K3s) {
            self.warn(
                doc,
                "spec.contactUpstream",
                "k3s still asks the upstream after its mirrors unless it runs with --disable-default-registry-endpoint \
                 (k3s 1.26.13, 1.27.10, 1.28.6, 1.29.1 and later)",
            );
        }
    }

    /// containerd and k3s give each registry host one mirror path: every mapping of a host must
    /// reduce to the same one.
    fn check_host_level(&mut self, doc: &Document<'_>, set: &FailoverSet) {
        let mut roots: BTreeMap<&str, (Target, &FailoverMapping)> = BTreeMap::new();
        for m in &set.mappings {
            let path = self.mapping_path(doc, m);
            let Some(root) = m.host_level_mirror() else {
                self.diags.push(
                    doc.diagnostic(
                        &path,
                        format!(
                            "containerd and k3s configure mirrors per registry host, so `{} → {}` cannot be written for \
                             them: the mirror path for part of a host must end with that part",
                            m.upstream, m.mirror.location
                        ),
                    )
                    .hint(format!(
                        "keep the upstream's repository path under the mirror path (`{}/{}`), or set `runtimes: [crio]`",
                        m.mirror.location, m.upstream.prefix
                    )),
                );
                continue;
            };
            match roots.get(m.upstream.host.as_str()) {
                Some((other, first)) if *other != root => {
                    let message = format!(
                        "containerd and k3s give each registry host one mirror path: `{}` would need both `{other}` \
                         (for `{}`) and `{root}` (for `{}`)",
                        m.upstream.host, first.upstream, m.upstream
                    );
                    self.diags.push(
                        doc.diagnostic(&path, message)
                            .hint("mirror the host's repositories under one path, or set `runtimes: [crio]`"),
                    );
                }
                Some(_) => {}
                None => {
                    roots.insert(&m.upstream.host, (root, m));
                }
            }
            if !m.upstream.prefix.is_empty() && set.contact_upstream == ContactUpstream::Never {
                self.warn(
                    doc,
                    &path,
                    format!(
                        "on containerd and k3s, `contactUpstream: never` applies to the whole host `{}`, not only `{}`",
                        m.upstream.host, m.upstream
                    ),
                );
            }
        }
    }

    /// Two FailoverSets that may select the same node must not both cover an upstream.
    fn claim_upstreams(&mut self, doc: &Document<'_>, name: &str, set: &FailoverSet) {
        let line = doc.index.find("spec").map_or(1, |p| p.line);
        for m in &set.mappings {
            let key = m.upstream.to_string();
            if let Some(claim) = self.failover_upstreams.get(&key) {
                if !disjoint(&claim.node_selector, &set.node_selector) {
                    let message = format!(
                        "`{key}` also fails over in FailoverSet/{} ({}): a node both sets select would get two \
                         configurations for it",
                        claim.set, claim.at
                    );
                    let path = self.mapping_path(doc, m);
                    self.diags.push(doc.diagnostic(&path, message).hint(
                        "fail over each upstream in one FailoverSet, or give the sets node selectors that cannot both \
                         match (the same label with different values)",
                    ));
                }
                continue;
            }
            self.failover_upstreams.insert(
                key,
                Claim {
                    set: name.to_string(),
                    node_selector: set.node_selector.clone(),
                    at: format!("{}:{line}", doc.file.display),
                },
            );
        }
    }

    /// Where a mapping was asked for: its first MirrorSet reference or explicit pair.
    fn mapping_path(&self, doc: &Document<'_>, m: &FailoverMapping) -> String {
        m.sources
            .iter()
            .next()
            .map(|source| match source.strip_prefix("MirrorSet/") {
                Some(set) => match mirror_set_index(doc, set) {
                    Some(i) => format!("spec.mirrorSets[{i}]"),
                    None => "spec.mirrorSets".to_string(),
                },
                None => source.clone(),
            })
            .unwrap_or_else(|| "spec".to_string())
    }

    fn registry_insecure(&self, host: &str) -> bool {
        self.state.registries.values().any(|r| r.host.eq_ignore_ascii_case(host) && r.insecure)
    }

    fn registry_ca(&self, host: &str) -> Option<String> {
        self.state
            .registries
            .values()
            .find(|r| r.host.eq_ignore_ascii_case(host) && !r.insecure)
            .and_then(|r| r.ca_file.clone())
    }
}

impl FailoverMapping {
    /// The mirror path for the whole upstream host, when this mapping can be written per host
    /// (as containerd and k3s need): `ghcr.io/org → m/ghcr/org` is `ghcr.io → m/ghcr`.
    pub fn host_level_mirror(&self) -> Option<Target> {
        let location = &self.mirror.location;
        if self.upstream.prefix.is_empty() {
            return Some(location.clone());
        }
        let prefix = if location.prefix == self.upstream.prefix {
            Some("")
        } else {
            location.prefix.strip_suffix(self.upstream.prefix.as_str()).and_then(|p| p.strip_suffix('/'))
        }?;
        Some(Target { host: location.host.clone(), prefix: prefix.to_string() })
    }
}

fn mirror_set_index(doc: &Document<'_>, set: &str) -> Option<usize> {
    match &doc.raw {
        Some(super::Raw::FailoverSet(f)) => f.spec.mirror_sets.iter().position(|s| s == set),
        _ => None,
    }
}

/// `host[/path]` of an upstream, Docker Hub's other names spelled `docker.io`.
fn parse_upstream(text: &str) -> Result<Target, String> {
    let mut target = Target::parse(text).map_err(|_| {
        format!("`{text}` is not an upstream: write a registry host with an optional repository path, such as `ghcr.io` or `ghcr.io/org`")
    })?;
    target.host = match target.host.to_ascii_lowercase().as_str() {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".to_string(),
        other => other.to_string(),
    };
    Ok(target)
}

/// The path of `inner` below `outer` on the same host (`""` when equal), if it is below it.
fn path_below<'a>(outer: &Target, inner: &'a Target) -> Option<&'a str> {
    if !outer.host.eq_ignore_ascii_case(&inner.host) {
        return None;
    }
    if outer.prefix == inner.prefix {
        return Some("");
    }
    if outer.prefix.is_empty() {
        return Some(&inner.prefix);
    }
    inner.prefix.strip_prefix(outer.prefix.as_str())?.strip_prefix('/')
}

fn join(target: &Target, rest: &str) -> Target {
    let prefix = match (target.prefix.is_empty(), rest.is_empty()) {
        (_, true) => target.prefix.clone(),
        (true, false) => rest.to_string(),
        (false, false) => format!("{}/{rest}", target.prefix),
    };
    Target { host: target.host.clone(), prefix }
}

/// Whether no node can match both selectors: both ask for one label with different values.
fn disjoint(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> bool {
    a.iter().any(|(key, value)| b.get(key).is_some_and(|other| other != value))
}

#[cfg(test)]
mod tests;

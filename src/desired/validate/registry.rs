//! Registry documents: host, TLS, credential references and limits; one document per host.

use super::{Checker, Document, SECRET_HINT};
use crate::desired::image;
use crate::desired::raw;
use crate::desired::{Credentials, DEFAULT_CONCURRENCY, Limits, MAX_CONCURRENCY, MIN_REQUESTS_PER_SECOND, Registry};

impl Checker<'_> {
    pub(super) fn registry(&mut self, doc: &Document<'_>, spec: &raw::RegistrySpec) -> Option<Registry> {
        let before = self.errors();
        self.field(doc, "spec.host", image::validate_host(&spec.host));
        let ca_file = spec.ca_file.as_ref().and_then(|f| self.repo_file(doc, "spec.caFile", f));
        if spec.insecure && spec.ca_file.is_some() {
            self.warn(doc, "spec.caFile", "caFile is not used with `insecure: true` (plain HTTP)");
        }
        if spec.insecure && spec.credentials.is_some() {
            self.warn(doc, "spec.credentials", "with `insecure: true` these credentials travel over plain HTTP");
        }
        let credentials = match &spec.credentials {
            None => None,
            Some(raw::Credentials { docker_config: Some(path), helper: None }) => {
                if path.trim_start().starts_with('{') {
                    self.diags.push(
                        doc.diagnostic(
                            "spec.credentials.dockerConfig",
                            "inline secret: this is the content of a config.json, not its path",
                        )
                        .hint(SECRET_HINT),
                    );
                } else if !path.starts_with('/') {
                    self.diags.push(
                        doc.diagnostic("spec.credentials.dockerConfig", format!("`{path}` must be an absolute path"))
                            .hint("name where the file is mounted, such as /var/run/secrets/lifeboat/internal/config.json"),
                    );
                }
                Some(Credentials::DockerConfig(path.clone()))
            }
            Some(raw::Credentials { docker_config: None, helper: Some(helper) }) => {
                let bare = helper.strip_prefix("docker-credential-").unwrap_or(helper);
                if bare.is_empty()
                    || !bare.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
                {
                    self.diags.push(
                        doc.diagnostic(
                            "spec.credentials.helper",
                            format!("`{helper}` is not a credential helper name"),
                        )
                        .hint("give the part after `docker-credential-`, such as `ecr-login`"),
                    );
                }
                Some(Credentials::Helper(bare.to_string()))
            }
            Some(_) => {
                self.diags.push(
                    doc.diagnostic("spec.credentials", "credentials must name exactly one of dockerConfig or helper"),
                );
                None
            }
        };
        let mut limits = Limits::default();
        if let Some(l) = &spec.limits {
            if let Some(rps) = l.requests_per_second {
                let problem = if !(rps.is_finite() && rps > 0.0) {
                    Some(format!("{} is not a positive rate", number(rps)))
                } else if rps < MIN_REQUESTS_PER_SECOND {
                    Some(format!(
                        "{} requests per second is less than one a minute: a pass over a few hundred tags would take days",
                        number(rps)
                    ))
                } else {
                    None
                };
                if let Some(message) = problem {
                    self.diags.push(
                        doc.diagnostic("spec.limits.requestsPerSecond", message)
                            .hint("give at least 0.0167 (one request a minute), or leave it out for no limit"),
                    );
                }
                limits.requests_per_second = Some(rps);
            }
            if let Some(c) = l.concurrency {
                if c == 0 {
                    self.diags.push(
                        doc.diagnostic("spec.limits.concurrency", "concurrency 0 would never send a request")
                            .hint(format!("give 1 to {MAX_CONCURRENCY}; the default is {DEFAULT_CONCURRENCY}")),
                    );
                } else if c > MAX_CONCURRENCY {
                    self.diags.push(
                        doc.diagnostic(
                            "spec.limits.concurrency",
                            format!(
                                "concurrency {c} is above {MAX_CONCURRENCY}: that many requests in flight to one host \
                                 only trips its rate limits and uses up this machine's connections"
                            ),
                        )
                        .hint(format!("give 1 to {MAX_CONCURRENCY}; the default is {DEFAULT_CONCURRENCY}")),
                    );
                }
                limits.concurrency = c;
            }
        }
        (self.errors() == before).then(|| Registry {
            origin: doc.origin(),
            host: canonical_host(&spec.host),
            insecure: spec.insecure,
            ca_file,
            credentials,
            limits,
        })
    }

    pub(super) fn add_registry(&mut self, doc: &Document<'_>, name: &str, registry: Registry) {
        let same_host = self
            .registry_hosts
            .get(&registry.host)
            .and_then(|other_name| self.state.registries.get(other_name).map(|other| (other_name, other)));
        if let Some((other_name, other)) = same_host {
            let message = format!(
                "host `{}` is already described by Registry/{other_name} ({}:{})",
                registry.host, other.origin.file, other.origin.line
            );
            if other.settings_eq(&registry) {
                self.warn(doc, "spec.host", format!("{message} with the same settings"));
            } else {
                self.diags.push(
                    doc.diagnostic("spec.host", format!("{message} with different settings"))
                        .hint("keep one Registry document per host"),
                );
                return;
            }
        }
        self.registry_hosts.entry(registry.host.clone()).or_insert_with(|| name.to_string());
        self.state.registries.insert(name.to_string(), registry);
    }
}

/// Host names are case-insensitive, and Docker Hub answers to several names; image references
/// say `docker.io`.
fn canonical_host(host: &str) -> String {
    match host.to_ascii_lowercase().as_str() {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".to_string(),
        other => other.to_string(),
    }
}

/// A number as people write it: `0.5`, `20`, or `1e-300` rather than three hundred zeros.
fn number(n: f64) -> String {
    if n != 0.0 && n.is_finite() && !(1e-4..1e15).contains(&n.abs()) { format!("{n:e}") } else { n.to_string() }
}

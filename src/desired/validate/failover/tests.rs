use crate::desired::source::MemorySource;
use crate::desired::validate::load;
use crate::desired::{
    ContactUpstream, DesiredState, Diagnostic, Diagnostics, FailoverOrder, FailoverTags, LoadError, Severity,
};

const REGISTRIES: &str = r#"apiVersion: lifeboat.dev/v1alpha1
kind: Registry
metadata: {name: internal}
spec:
  host: registry.internal.example:5000
  caFile: certs/internal-ca.pem
---
apiVersion: lifeboat.dev/v1alpha1
kind: Registry
metadata: {name: lab}
spec:
  host: lab.example:5000
  insecure: true
"#;

const MIRRORS: &str = r#"apiVersion: lifeboat.dev/v1alpha1
kind: MirrorSet
metadata: {name: vendor-base}
spec:
  target: registry.internal.example:5000/mirror
  images:
    - source: registry.vendor.example/base/glibc
      tags: ["2.40"]
    - source: registry.vendor.example/base/distroless
      tags: ["12"]
---
apiVersion: lifeboat.dev/v1alpha1
kind: MirrorSet
metadata: {name: runtimes}
spec:
  target: registry.internal.example:5000/mirror
  platforms: [linux/amd64]
  images:
    - source: registry.vendor.example/runtime/node@sha256:eb8f0c402a49674df4988ee3bf8b27230b4d7dde24c9e118996723a0c9796649
      tag: 20-pinned
---
apiVersion: lifeboat.dev/v1alpha1
kind: MirrorSet
metadata: {name: hub}
spec:
  target: registry.internal.example:5000/mirror
  images:
    - source: nginx
      tags: ["1.27"]
---
apiVersion: lifeboat.dev/v1alpha1
kind: MirrorSet
metadata: {name: hub-own}
spec:
  target: registry.internal.example:5000/hub
  images:
    - source: nginx
      tags: ["1.26"]
"#;

fn failover(spec: &str) -> String {
    format!("apiVersion: lifeboat.dev/v1alpha1\nkind: FailoverSet\nmetadata: {{name: workers}}\nspec:\n{spec}")
}

/// Loads the registries, the MirrorSets and `extra` (written in a file that sorts first, so
/// that the FailoverSet comes before the documents it refers to).
fn load_with(extra: &str) -> Result<DesiredState, Diagnostics> {
    let files = [
        ("a-failover.yaml", extra),
        ("mirrors.yaml", MIRRORS),
        ("registries.yaml", REGISTRIES),
        ("certs/internal-ca.pem", "pem"),
    ];
    let source = MemorySource { files: files.iter().map(|(p, t)| (p.to_string(), t.to_string())).collect() };
    match load(&source) {
        Ok(state) => Ok(state),
        Err(LoadError::Invalid(d)) => Err(d),
        Err(LoadError::Read(e)) => panic!("read error: {e:#}"),
    }
}

fn diagnostics(extra: &str) -> Vec<Diagnostic> {
    match load_with(extra) {
        Ok(state) => state.warnings.iter().cloned().collect(),
        Err(d) => d.iter().cloned().collect(),
    }
}

#[test]
fn the_smallest_document_derives_every_upstream_of_its_mirror_sets_with_the_defaults() {
    let state = load_with(&failover("  mirrorSets: [vendor-base]\n")).unwrap();
    let set = &state.failover_sets["workers"];
    assert_eq!(
        (set.order, set.tags, set.contact_upstream, &set.runtimes),
        (FailoverOrder::MirrorFirst, FailoverTags::Resolve, ContactUpstream::Allow, &None)
    );
    assert!(set.node_selector.is_empty() && set.tolerations.is_empty() && set.mirror_pull_secret.is_none());
    assert_eq!(set.mappings.len(), 1, "{:#?}", set.mappings);
    let m = &set.mappings[0];
    assert_eq!(m.upstream.to_string(), "registry.vendor.example");
    assert_eq!(m.mirror.location.to_string(), "registry.internal.example:5000/mirror");
    assert_eq!(m.mirror.ca_file.as_deref(), Some("certs/internal-ca.pem"));
    assert!(!m.mirror.insecure && !m.upstream_insecure);
    assert_eq!(
        m.repositories.iter().map(ToString::to_string).collect::<Vec<_>>(),
        ["registry.vendor.example/base/distroless", "registry.vendor.example/base/glibc"]
    );
    assert!(state.warnings.is_empty(), "{}", state.warnings);
}

#[test]
fn two_mirror_sets_of_one_upstream_and_target_make_one_mapping() {
    let state = load_with(&failover("  mirrorSets: [vendor-base, runtimes]\n  runtimes: [containerd]\n")).unwrap();
    let set = &state.failover_sets["workers"];
    assert_eq!(set.mappings.len(), 1);
    assert_eq!(
        set.mappings[0].sources.iter().cloned().collect::<Vec<_>>(),
        ["MirrorSet/runtimes", "MirrorSet/vendor-base"]
    );
    // The platform subset is only a warning, at the reference to the set.
    let warning = state.warnings.iter().find(|d| d.message.contains("digests of their own")).unwrap();
    assert_eq!(warning.path.as_deref(), Some("spec.mirrorSets[1]"));
    assert!(warning.hint.as_deref().unwrap().contains("platforms: all"), "{warning}");
}

#[test]
fn explicit_pairs_keep_their_path_and_registry_settings() {
    let state = load_with(&failover(
        "  upstreams:\n    - {upstream: ghcr.io/org, mirror: lab.example:5000/ghcr/org}\n    - {upstream: index.docker.io, mirror: registry.internal.example:5000/hub}\n",
    ))
    .unwrap();
    let set = &state.failover_sets["workers"];
    let ghcr = set.mappings.iter().find(|m| m.upstream.host == "ghcr.io").unwrap();
    assert_eq!(ghcr.upstream.prefix, "org");
    assert!(ghcr.mirror.insecure && ghcr.mirror.ca_file.is_none());
    assert_eq!(ghcr.host_level_mirror().unwrap().to_string(), "lab.example:5000/ghcr");
    assert!(set.mappings.iter().any(|m| m.upstream.to_string() == "docker.io"), "{:#?}", set.mappings);
}

/// (spec lines, expected path, words of the message, severity)
#[test]
fn failover_set_problems() {
    use Severity::{Error, Warning};
    let table: &[(&str, &str, &str, Severity)] = &[
        ("  nodeSelector: {}\n", "spec", "no upstream is selected", Error),
        ("  mirrorSets: [vendor-bse]\n", "spec.mirrorSets[0]", "does not exist", Error),
        (
            "  mirrorSets: [hub, hub-own]\n",
            "spec.mirrorSets[1]",
            "would fail over to `registry.internal.example:5000/mirror` (from MirrorSet/hub) and to \
             `registry.internal.example:5000/hub`",
            Error,
        ),
        ("  mirrorSets: [vendor-base, hub]\n", "spec.mirrorSets[0]", "are the same mirror repository", Error),
        (
            "  upstreams:\n    - {upstream: ghcr.io/org, mirror: registry.internal.example:5000/ghcr-org}\n",
            "spec.upstreams[0]",
            "containerd and k3s configure mirrors per registry host",
            Error,
        ),
        (
            "  upstreams:\n    - {upstream: ghcr.io/a, mirror: registry.internal.example:5000/x/a}\n    - {upstream: ghcr.io/b, mirror: registry.internal.example:5000/y/b}\n",
            "spec.upstreams[1]",
            "one mirror path: `ghcr.io` would need both",
            Error,
        ),
        (
            "  upstreams:\n    - {upstream: ghcr.io, mirror: ghcr.io/mirror}\n",
            "spec.upstreams[0]",
            "its own host",
            Error,
        ),
        (
            "  upstreams:\n    - {upstream: \"https://ghcr.io\", mirror: registry.internal.example:5000/g}\n",
            "spec.upstreams[0].upstream",
            "is not an upstream",
            Error,
        ),
        (
            "  upstreams:\n    - {upstream: ghcr.io, mirror: elsewhere.example/g}\n",
            "spec.upstreams[0].mirror",
            "no MirrorSet writes to `elsewhere.example`",
            Warning,
        ),
        (
            "  mirrorSets: [vendor-base]\n  order: upstreamFirst\n  runtimes: [crio]\n",
            "spec.order",
            "cannot be expressed",
            Error,
        ),
        ("  mirrorSets: [vendor-base]\n  order: upstreamFirst\n", "spec.order", "works as `mirrorFirst`", Warning),
        ("  mirrorSets: [vendor-base]\n  order: upstreamFirst\n", "spec.order", "30 s", Warning),
        (
            "  mirrorSets: [vendor-base]\n  order: upstreamFirst\n  contactUpstream: never\n",
            "spec.order",
            "no upstream to ask",
            Error,
        ),
        ("  mirrorSets: [vendor-base]\n  tags: digestOnly\n", "spec.tags", "pulls by tag still need", Warning),
        (
            "  mirrorSets: [vendor-base]\n  tags: digestOnly\n  runtimes: [k3s]\n",
            "spec.tags",
            "cannot be expressed",
            Error,
        ),
        (
            "  mirrorSets: [vendor-base]\n  contactUpstream: never\n",
            "spec.contactUpstream",
            "--disable-default-registry-endpoint",
            Warning,
        ),
        ("  mirrorSets: [vendor-base]\n  runtimes: []\n", "spec.runtimes", "empty", Error),
        ("  mirrorSets: [vendor-base]\n  runtimes: [crio, crio]\n", "spec.runtimes[1]", "twice", Warning),
        ("  mirrorSets: [vendor-base]\n  runtimes: [docker]\n", "spec.runtimes[0]", "unknown variant", Error),
        (
            "  mirrorSets: [vendor-base]\n  mirrorPullSecret: Mirror_Pull\n",
            "spec.mirrorPullSecret",
            "Secret name",
            Error,
        ),
        (
            "  mirrorSets: [vendor-base]\n  nodeSelector: {\"bad key!\": x}\n",
            "spec.nodeSelector.bad key!",
            "label key",
            Error,
        ),
        ("  mirrorSets: [vendor-base]\n  order: first\n", "spec.order", "unknown variant", Error),
        (
            "  upstreams:\n    - {upstream: ghcr.io, mirror: lab.example:5000/g}\n  mirrorPullSecret: mirror-pull\n",
            "spec.mirrorPullSecret",
            "plain HTTP",
            Warning,
        ),
    ];
    for (spec, path, words, severity) in table {
        let found = diagnostics(&failover(spec));
        assert!(
            found.iter().any(|d| d.severity == *severity
                && d.path.as_deref() == Some(*path)
                && d.message.contains(words)
                && d.line.is_some()
                && d.file == "a-failover.yaml"),
            "{spec}: expected a {severity:?} at {path} saying {words:?}, got {found:#?}"
        );
    }
}

#[test]
fn a_pair_consistent_with_a_mirror_set_is_not_a_collision() {
    // `vendor → m/mirror` and `vendor/base → m/mirror/base` say the same thing twice.
    let state = load_with(&failover(
        "  mirrorSets: [vendor-base]\n  upstreams:\n    - {upstream: registry.vendor.example/base, mirror: registry.internal.example:5000/mirror/base}\n",
    ))
    .unwrap();
    assert_eq!(state.failover_sets["workers"].mappings.len(), 2);
}

#[test]
fn a_path_pair_crio_alone_can_express_is_valid_for_crio() {
    let state = load_with(&failover(
        "  upstreams:\n    - {upstream: ghcr.io/org, mirror: registry.internal.example:5000/ghcr-org}\n  runtimes: [crio]\n",
    ))
    .unwrap();
    assert_eq!(state.failover_sets["workers"].mappings[0].host_level_mirror(), None);
}

#[test]
fn two_sets_on_nodes_that_may_overlap_cannot_share_an_upstream() {
    let two = |a: &str, b: &str| {
        format!(
            "{}---\n{}",
            failover(&format!("  mirrorSets: [vendor-base]\n  nodeSelector: {a}\n")),
            failover(&format!("  mirrorSets: [vendor-base]\n  nodeSelector: {b}\n"))
                .replace("name: workers", "name: edge")
        )
    };
    let errors = diagnostics(&two("{pool: a}", "{zone: x}"));
    assert!(
        errors.iter().any(|d| d.document.as_deref() == Some("FailoverSet/edge")
            && d.message.contains("also fails over in FailoverSet/workers")),
        "{errors:#?}"
    );
    // The same label with different values: no node has both.
    assert!(load_with(&two("{pool: a}", "{pool: b}")).is_ok());
}

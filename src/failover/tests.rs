use std::collections::BTreeMap;

use super::marker::{Ownership, ownership};
use super::*;
use crate::desired::source::MemorySource;
use crate::desired::{DesiredState, LoadError, load};

const CA: &str = include_str!("../../example-repo/certs/internal-ca.pem");

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
---
apiVersion: lifeboat.dev/v1alpha1
kind: Registry
metadata: {name: old-vendor}
spec:
  host: old.vendor.example
  insecure: true
---
apiVersion: lifeboat.dev/v1alpha1
kind: MirrorSet
metadata: {name: vendor-base}
spec:
  target: registry.internal.example:5000/mirror
  images:
    - source: registry.vendor.example/base/glibc
      tags: ["2.40"]
---
apiVersion: lifeboat.dev/v1alpha1
kind: MirrorSet
metadata: {name: hub}
spec:
  target: registry.internal.example:5000/hub
  images:
    - source: nginx
      tags: ["1.27"]
---
apiVersion: lifeboat.dev/v1alpha1
kind: MirrorSet
metadata: {name: lab}
spec:
  target: lab.example:5000
  images:
    - source: old.vendor.example/tools/busybox
      tags: ["1.36"]
"#;

fn state(failover_spec: &str) -> DesiredState {
    let failover = format!(
        "apiVersion: lifeboat.dev/v1alpha1\nkind: FailoverSet\nmetadata: {{name: workers}}\nspec:\n{failover_spec}"
    );
    let files = [("a.yaml", REGISTRIES), ("f.yaml", failover.as_str()), ("certs/internal-ca.pem", CA)];
    let source = MemorySource { files: files.iter().map(|(p, t)| (p.to_string(), t.to_string())).collect() };
    match load(&source) {
        Ok(state) => state,
        Err(LoadError::Invalid(d)) => panic!("{d}"),
        Err(e) => panic!("{e:#}"),
    }
}

fn inputs() -> Inputs {
    Inputs {
        ca_files: BTreeMap::from([("certs/internal-ca.pem".to_string(), CA.as_bytes().to_vec())]),
        mirror_logins: BTreeMap::from([(
            "registry.internal.example:5000".to_string(),
            Login { username: "node".into(), password: "pw-1234".into() },
        )]),
        k3s_dir: None,
    }
}

fn rendered(runtime: NodeRuntime, failover_spec: &str) -> Rendered {
    let state = state(failover_spec);
    let sets: Vec<(&str, &FailoverSet)> = state.failover_sets.iter().map(|(n, s)| (n.as_str(), s)).collect();
    let rendered = render(runtime, &sets, &inputs()).unwrap_or_else(|e| panic!("{e}"));
    for file in &rendered.files {
        assert!(
            matches!(ownership(file.content.as_bytes()), Ownership::Lifeboat { intact: true, .. }),
            "{} lacks an intact ownership line",
            file.path
        );
    }
    rendered
}

/// The listing and the notes, as a person reads them.
fn text(rendered: &Rendered) -> String {
    let notes: String = rendered.notes.iter().map(|n| format!("note: {n}\n")).collect();
    format!("{}{notes}", rendered.listing())
}

fn file<'a>(rendered: &'a Rendered, path: &str) -> &'a RenderedFile {
    rendered.files.iter().find(|f| f.path == path).unwrap_or_else(|| panic!("no {path} in {rendered:#?}"))
}

#[test]
fn containerd_mirror_first() {
    let r = rendered(NodeRuntime::Containerd, "  mirrorSets: [vendor-base, hub, lab]\n");
    // The CA comes before the file that names it.
    let paths: Vec<&str> = r.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "docker.io/lifeboat-mirror-ca.crt",
            "registry.vendor.example/lifeboat-mirror-ca.crt",
            "docker.io/hosts.toml",
            "old.vendor.example/hosts.toml",
            "registry.vendor.example/hosts.toml",
        ]
    );
    insta::assert_snapshot!(text(&r));
}

#[test]
fn containerd_mirror_credentials_make_a_header_and_a_private_file() {
    let r = rendered(NodeRuntime::Containerd, "  mirrorSets: [vendor-base]\n  mirrorPullSecret: internal-pull\n");
    let hosts = file(&r, "registry.vendor.example/hosts.toml");
    assert_eq!(hosts.mode, 0o600);
    // base64("node:pw-1234")
    assert!(hosts.content.contains("Authorization = \"Basic bm9kZTpwdy0xMjM0\""), "{}", hosts.content);
    insta::assert_snapshot!(text(&r));
}

#[test]
fn containerd_upstream_first() {
    insta::assert_snapshot!(text(&rendered(
        NodeRuntime::Containerd,
        "  mirrorSets: [vendor-base]\n  order: upstreamFirst\n  runtimes: [containerd]\n"
    )));
}

#[test]
fn containerd_never_contacting_upstream_digests_only() {
    insta::assert_snapshot!(text(&rendered(
        NodeRuntime::Containerd,
        "  mirrorSets: [vendor-base]\n  contactUpstream: never\n  tags: digestOnly\n  runtimes: [containerd]\n"
    )));
}

#[test]
fn every_hosts_toml_has_a_host_table_whatever_the_options() {
    for spec in [
        "  mirrorSets: [vendor-base, lab]\n",
        "  mirrorSets: [vendor-base]\n  order: upstreamFirst\n",
        "  mirrorSets: [vendor-base]\n  contactUpstream: never\n",
    ] {
        for file in rendered(NodeRuntime::Containerd, spec).files.iter().filter(|f| f.role == Role::Config) {
            let value: toml::Table = toml::from_str(&file.content).unwrap();
            let hosts = value.get("host").and_then(toml::Value::as_table).map_or(0, toml::Table::len);
            assert_eq!(hosts, 1, "{spec}: {}", file.content);
        }
    }
}

#[test]
fn crio_drop_in() {
    let r = rendered(
        NodeRuntime::Crio,
        "  mirrorSets: [vendor-base, lab]\n  upstreams:\n    - {upstream: ghcr.io/org, mirror: registry.internal.example:5000/ghcr-org}\n  runtimes: [crio]\n  mirrorPullSecret: internal-pull\n",
    );
    let conf: toml::Table = toml::from_str(&file(&r, "registries.conf.d/50-lifeboat-workers.conf").content).unwrap();
    assert_eq!(conf["registry"].as_array().unwrap().len(), 3);
    insta::assert_snapshot!(text(&r));
}

#[test]
fn crio_never_contacting_upstream_digests_only() {
    insta::assert_snapshot!(text(&rendered(
        NodeRuntime::Crio,
        "  mirrorSets: [vendor-base]\n  contactUpstream: never\n  tags: digestOnly\n"
    )));
}

#[test]
fn k3s_registries_yaml() {
    let r = rendered(NodeRuntime::K3s, "  mirrorSets: [vendor-base, hub, lab]\n  mirrorPullSecret: internal-pull\n");
    assert_eq!(file(&r, "registries.yaml").mode, 0o600);
    insta::assert_snapshot!(text(&r));
}

#[test]
fn k3s_upstream_first_under_rke2() {
    let state = state("  mirrorSets: [vendor-base]\n  order: upstreamFirst\n");
    let sets: Vec<(&str, &FailoverSet)> = state.failover_sets.iter().map(|(n, s)| (n.as_str(), s)).collect();
    let inputs = Inputs { k3s_dir: Some("/etc/rancher/rke2/".into()), ..inputs() };
    let r = render(NodeRuntime::K3s, &sets, &inputs).unwrap();
    assert!(file(&r, "registries.yaml").content.contains("ca_file: /etc/rancher/rke2/lifeboat/"), "{}", text(&r));
    insta::assert_snapshot!(text(&r));
}

#[test]
fn a_set_not_written_for_the_runtime_is_left_out_with_a_note() {
    let r = rendered(NodeRuntime::K3s, "  mirrorSets: [vendor-base]\n  runtimes: [containerd, crio]\n");
    assert!(r.files.is_empty());
    assert_eq!(r.notes, ["FailoverSet/workers is written for containerd, crio only, not k3s: left out"]);
}

#[test]
fn missing_or_malformed_inputs_are_errors_naming_the_set() {
    let state = state("  mirrorSets: [vendor-base]\n  mirrorPullSecret: internal-pull\n");
    let sets: Vec<(&str, &FailoverSet)> = state.failover_sets.iter().map(|(n, s)| (n.as_str(), s)).collect();
    let err = render(NodeRuntime::Containerd, &sets, &Inputs::default()).unwrap_err();
    assert_eq!(err.0.len(), 2, "{err}");
    assert!(err.0[0].contains("FailoverSet/workers: the CA bundle certs/internal-ca.pem of the mirror"), "{err}");
    assert!(err.0[1].contains("names the mirror pull secret internal-pull"), "{err}");

    let mut bad = inputs();
    bad.ca_files.insert(
        "certs/internal-ca.pem".into(),
        b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".to_vec(),
    );
    let err = render(NodeRuntime::K3s, &sets, &bad).unwrap_err();
    assert!(err.to_string().contains("is unusable: certificate 1 does not parse"), "{err}");
    // The password is in no error.
    assert!(!format!("{err:?}{:?}", inputs()).contains("pw-1234"));
}

#[test]
fn two_sets_configuring_one_host_differently_are_refused() {
    let mut state = state("  mirrorSets: [vendor-base]\n");
    let mut other = state.failover_sets["workers"].clone();
    other.order = crate::desired::FailoverOrder::UpstreamFirst;
    state.failover_sets.insert("edge".into(), other);
    let sets: Vec<(&str, &FailoverSet)> = state.failover_sets.iter().map(|(n, s)| (n.as_str(), s)).collect();
    let err = render(NodeRuntime::Containerd, &sets, &inputs()).unwrap_err();
    assert!(err.to_string().contains("both configure registry.vendor.example differently"), "{err}");
    // The same settings in two sets make one file owned by both.
    let mut same = state.clone();
    same.failover_sets.insert("edge".into(), state.failover_sets["workers"].clone());
    let sets: Vec<(&str, &FailoverSet)> = same.failover_sets.iter().map(|(n, s)| (n.as_str(), s)).collect();
    let r = render(NodeRuntime::Containerd, &sets, &inputs()).unwrap();
    assert!(
        file(&r, "registry.vendor.example/hosts.toml")
            .content
            .starts_with("# managed-by: lifeboat failover/edge,workers ")
    );
}

#[test]
fn sets_sharing_a_mirror_share_its_ca_bundle() {
    let mut state = state("  mirrorSets: [vendor-base]\n");
    let hub = self::state("  mirrorSets: [hub]\n").failover_sets["workers"].clone();
    state.failover_sets.insert("edge".into(), hub);
    let sets: Vec<(&str, &FailoverSet)> = state.failover_sets.iter().map(|(n, s)| (n.as_str(), s)).collect();
    for (runtime, ca) in [
        (NodeRuntime::Crio, "certs.d/registry.internal.example:5000/lifeboat-mirror-ca.crt"),
        (NodeRuntime::K3s, "lifeboat/registry.internal.example_5000-ca.crt"),
    ] {
        let mut inputs = inputs();
        inputs.mirror_logins.clear();
        let r = render(runtime, &sets, &inputs).unwrap_or_else(|e| panic!("{runtime}: {e}"));
        let cas: Vec<&RenderedFile> = r.files.iter().filter(|f| f.role == Role::Ca).collect();
        assert_eq!(cas.len(), 1, "{runtime}: {r:#?}");
        assert_eq!(cas[0].path, ca);
        assert!(cas[0].content.starts_with("# managed-by: lifeboat failover/edge,workers "), "{}", cas[0].content);
    }
}

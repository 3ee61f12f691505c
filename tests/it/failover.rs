//! Node failover against real components: the mirror filled by `lifeboat apply`, the node files
//! written by `lifeboat failover render --out`, and a real containerd 1.6 pulling through its CRI
//! socket as the kubelet does, skopeo and podman reading the CRI-O drop-in. The outage is real:
//! upstream stopped, paused, or black-holed inside a network namespace of the test's own. Needs
//! root, containerd, skopeo and podman (script/setup).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use sha2::{Digest as _, Sha256};

use crate::mirror::rt;
use crate::support::netns::isolated;
use crate::support::registry::{Options, Tls};
use crate::support::site::{PullSecret, Site, registry, runnable, runnable_index};
use crate::support::{lifeboat, root};

const APP: &str = "    - source: UP/team/app\n      tags: [\"1.0\"]\n";

/// A site whose mirror holds `team/app:1.0`, copied there by `lifeboat apply`, with the
/// FailoverSet `failover_spec`; returns the upstream digest.
fn site_with_app(failover_spec: &str) -> (Site, String) {
    let site = Site::start();
    let (digest, _) = rt().block_on(runnable(&site.up(), "team/app", Some("1.0"), 7));
    site.desired(APP, failover_spec);
    site.apply();
    (site, digest)
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect::<String>())
}

fn manifest_requests(registry: &crate::support::registry::TestRegistry) -> Vec<String> {
    registry.requests().into_iter().map(|(_, p)| p).filter(|p| p.contains("/manifests/")).collect()
}

/// skopeo, reading `conf` as its registries.conf: the raw manifest of `reference`.
fn skopeo_manifest(conf: &Path, reference: &str) -> Result<Vec<u8>, String> {
    let out = Command::new("skopeo")
        .arg("--registries-conf")
        .arg(conf)
        .args(["inspect", "--raw", &format!("docker://{reference}")])
        .output()
        .expect("skopeo runs (script/setup installs it)");
    if out.status.success() { Ok(out.stdout) } else { Err(String::from_utf8_lossy(&out.stderr).into_owned()) }
}

/// podman with storage of its own under `dir`, reading `conf` as its registries.conf.
fn podman(dir: &Path, conf: &Path, args: &[&str]) -> Result<String, String> {
    let out = Command::new("podman")
        .env("CONTAINERS_REGISTRIES_CONF", conf)
        .arg("--root")
        .arg(dir.join("root"))
        .arg("--runroot")
        .arg(dir.join("run"))
        .arg("--tmpdir")
        .arg(dir.join("tmp"))
        .args(["--storage-driver", "vfs", "--events-backend", "none", "--cgroup-manager", "cgroupfs"])
        .args(args)
        .output()
        .expect("podman runs (script/setup installs it)");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// The issue's check: the example repository's `vendor-base` MirrorSet and `workers`
/// FailoverSet, their hosts replaced by loopback registries, make containerd 1.6 (over CRI),
/// skopeo and podman pull every mirrored image by its upstream name, by tag and by digest, with
/// the upstream black-holed at the network level, and get the upstream's digests.
#[test]
fn the_example_failover_set_serves_every_mirrored_image_by_its_upstream_name_with_upstream_black_holed() {
    isolated(|netns| {
        let mut site = Site::start();
        let up = site.up();
        let mut upstream: BTreeMap<(String, String), String> = BTreeMap::new();
        rt().block_on(async {
            for (tag, seed) in [("2.39", 1), ("2.40", 2)] {
                upstream.insert(("base/glibc".into(), tag.into()), runnable_index(&up, "base/glibc", tag, seed).await);
            }
            for (tag, seed) in [("12", 3), ("12-debug", 4)] {
                upstream.insert(
                    ("base/distroless".into(), tag.into()),
                    runnable(&up, "base/distroless", Some(tag), seed).await.0,
                );
            }
            // The semver rule keeps 3.12.1 and 3.13.0: 3.11.9 is out of range, 3.13.1-rc1 denied.
            for (tag, seed) in [("3.11.9", 5), ("3.12.1", 6), ("3.13.0", 7), ("3.13.1-rc1", 8)] {
                let digest = runnable(&up, "runtime/python", Some(tag), seed).await.0;
                if matches!(tag, "3.12.1" | "3.13.0") {
                    upstream.insert(("runtime/python".into(), tag.into()), digest);
                }
            }
        });
        let example = |path: &str| {
            std::fs::read_to_string(root().join("example-repo").join(path))
                .unwrap()
                .replace("registry.vendor.example", "UP")
                .replace("registry.internal.example:5000", "MIR")
        };
        site.write(
            "registries.yaml",
            &(registry("vendor", "UP", "  insecure: true\n")
                + "---\n"
                + &registry("internal", "MIR", "  insecure: true\n")),
        );
        // The vendor's signatures cannot be made here: signature checks are turned off.
        site.write(
            "mirrors/vendor-base.yaml",
            &example("mirrors/vendor-base.yaml").replace("policy: required", "policy: off"),
        );
        site.write("keys/vendor.pub", &example("keys/vendor.pub"));
        // The test mirror allows anonymous reads.
        site.write(
            "nodes/workers-failover.yaml",
            &example("nodes/workers-failover.yaml").replace("  mirrorPullSecret: internal-pull\n", ""),
        );
        site.apply();
        site.render_for_containerd();
        let crio = site.scratch("etc-containers");
        let run = site.render("crio", &crio, &[]);
        assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
        let conf = crio.join("registries.conf.d/50-lifeboat-workers.conf");

        site.upstream.clear_requests();
        match netns {
            Some(ns) => ns.black_hole(site.upstream_port()),
            None => site.upstream.stop(),
        }
        let kubelet = site.kubelet();
        let storage = site.scratch("podman");
        for ((repo, tag), digest) in &upstream {
            let repository = format!("{}/{repo}", site.upstream.host);
            for reference in [site.upstream_ref(repo, tag), site.upstream_ref(repo, digest)] {
                kubelet.pull(&reference, None).unwrap_or_else(|e| panic!("containerd pulling {reference}: {e}"));
                assert!(
                    kubelet.holds(&reference, &repository, digest),
                    "{reference}: {:?}",
                    kubelet.repo_digests(&reference)
                );
                let manifest = skopeo_manifest(&conf, &reference).unwrap_or_else(|e| panic!("skopeo {reference}: {e}"));
                assert_eq!(&sha256(&manifest), digest, "skopeo {reference}");
            }
        }
        // podman records the image under its upstream name, with the upstream digest.
        for (repo, tag) in [("base/glibc", "2.40"), ("runtime/python", "3.13.0")] {
            let reference = site.upstream_ref(repo, tag);
            podman(&storage, &conf, &["pull", "-q", &reference])
                .unwrap_or_else(|e| panic!("podman pull {reference}: {e}"));
            let recorded =
                podman(&storage, &conf, &["image", "inspect", "--format", "{{.Digest}}", &reference]).unwrap();
            assert_eq!(recorded, upstream[&(repo.to_string(), tag.to_string())], "podman {reference}");
        }
        if netns.is_some() {
            assert!(manifest_requests(&site.upstream).is_empty(), "{:?}", site.upstream.requests());
        }
    });
}

/// Mirror first is what it says: a healthy upstream gets no request at all, and a paused one
/// (accepting connections, never answering) costs nothing.
#[test]
fn mirror_first_sends_nothing_to_a_healthy_upstream_and_never_waits_for_a_paused_one() {
    let (site, digest) = site_with_app("  mirrorSets: [set]\n");
    site.render_for_containerd();
    // containerd reads the folder Lifeboat wrote, by its own configuration.
    let hosts = std::collections::BTreeSet::from([site.upstream.host.clone()]);
    let config = lifeboat::nodeagent::runtime_config::containerd(
        &site.containerd.config_file(),
        site.containerd.hosts_dir().to_str().unwrap(),
        Some("containerd 1.6.20"),
        &hosts,
    );
    assert!(config.ok, "{config:?}");

    site.upstream.clear_requests();
    site.mirror.clear_requests();
    let kubelet = site.kubelet();
    for reference in [site.upstream_ref("team/app", "1.0"), site.upstream_ref("team/app", &digest)] {
        kubelet.pull(&reference, None).unwrap();
    }
    assert_eq!(site.upstream.requests(), Vec::<(String, String)>::new());
    let asked = manifest_requests(&site.mirror);
    assert!(asked.iter().any(|p| p.starts_with("/v2/mirror/team/app/manifests/1.0")), "{asked:?}");

    site.upstream.pause();
    let again = std::time::Instant::now();
    kubelet.pull(&site.upstream_ref("team/app", "1.0"), None).unwrap();
    assert!(again.elapsed() < std::time::Duration::from_secs(20), "{:?}", again.elapsed());
    site.upstream.resume();
}

/// After a pull through the mirror, the runtime knows the image by its upstream name, so a pod
/// referring to it by tag or digest starts with both registries down.
#[test]
fn an_image_pulled_through_the_mirror_is_found_by_its_upstream_names_with_both_registries_down() {
    let (mut site, digest) = site_with_app("  mirrorSets: [set]\n");
    site.render_for_containerd();
    let kubelet = site.kubelet();
    let (by_tag, by_digest) = (site.upstream_ref("team/app", "1.0"), site.upstream_ref("team/app", &digest));
    kubelet.pull(&by_tag, None).unwrap();
    kubelet.pull(&by_digest, None).unwrap();
    site.upstream.stop();
    site.mirror.stop();
    let repository = format!("{}/team/app", site.upstream.host);
    assert!(kubelet.holds(&by_tag, &repository, &digest), "{:?}", kubelet.repo_digests(&by_tag));
    assert!(kubelet.holds(&by_digest, &repository, &digest), "{:?}", kubelet.repo_digests(&by_digest));
}

/// A mirror host without `resolve` is skipped for tags: only digests fail over. Changing the
/// set takes effect on the next pull, without restarting containerd.
#[test]
fn tags_fail_over_only_when_the_mirror_may_resolve_them() {
    let (mut site, digest) = site_with_app("  mirrorSets: [set]\n  tags: digestOnly\n  runtimes: [containerd]\n");
    site.render_for_containerd();
    site.upstream.stop();
    let kubelet = site.kubelet();
    let by_tag = site.upstream_ref("team/app", "1.0");
    let err = kubelet.pull(&by_tag, None).unwrap_err();
    assert!(err.contains(&site.upstream.host) && err.contains("connection refused"), "{err}");
    kubelet.pull(&site.upstream_ref("team/app", &digest), None).unwrap();

    site.failover("  mirrorSets: [set]\n");
    site.render_for_containerd();
    kubelet.pull(&by_tag, None).unwrap();
}

/// Upstream first asks upstream while it answers, and falls through to the mirror when it
/// refuses connections (a black hole would cost 30 s per request instead: `bench/failover.py`).
#[test]
fn upstream_first_asks_upstream_while_it_answers_and_the_mirror_when_it_refuses() {
    let (mut site, _) = site_with_app("  mirrorSets: [set]\n  order: upstreamFirst\n  runtimes: [containerd]\n");
    site.render_for_containerd();
    let kubelet = site.kubelet();
    site.upstream.clear_requests();
    kubelet.pull(&site.upstream_ref("team/app", "1.0"), None).unwrap();
    assert!(!manifest_requests(&site.upstream).is_empty(), "upstream was asked first");
    site.upstream.stop();
    kubelet.pull(&site.upstream_ref("team/app", "1.0"), None).unwrap();
}

/// containerd 1.6 ignores a `hosts.toml` without a `[host]` table, mirror as `server` or not,
/// and goes to the upstream: the reason Lifeboat always writes one.
#[test]
fn a_hosts_toml_without_a_host_table_is_ignored_by_containerd_1_6() {
    let (mut site, _) = site_with_app("  mirrorSets: [set]\n");
    let dir = site.containerd.hosts_dir().join(&site.upstream.host);
    std::fs::create_dir_all(&dir).unwrap();
    let server_only = format!(
        "server = \"http://{}/v2/mirror\"\ncapabilities = [\"pull\", \"resolve\"]\noverride_path = true\n",
        site.mirror.host
    );
    std::fs::write(dir.join("hosts.toml"), server_only).unwrap();
    site.upstream.stop();
    let kubelet = site.kubelet();
    let err = kubelet.pull(&site.upstream_ref("team/app", "1.0"), None).unwrap_err();
    assert!(err.contains(&site.upstream.host), "went to the upstream: {err}");

    std::fs::remove_dir_all(&dir).unwrap();
    site.render_for_containerd();
    kubelet.pull(&site.upstream_ref("team/app", "1.0"), None).unwrap();
}

/// A `hosts.toml` someone else wrote is reported, never replaced, and nothing of Lifeboat's is
/// put beside it.
#[test]
fn a_foreign_hosts_toml_is_left_untouched_and_reported() {
    let (site, _) = site_with_app("  mirrorSets: [set]\n");
    let dir = site.containerd.hosts_dir().join(&site.upstream.host);
    std::fs::create_dir_all(&dir).unwrap();
    let theirs = format!("server = \"http://{}\"\n", site.upstream.host);
    std::fs::write(dir.join("hosts.toml"), &theirs).unwrap();
    let run = site.render("containerd", &site.containerd.hosts_dir(), &[]);
    assert_eq!(run.code, 2, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.contains(&format!("conflict   {}/hosts.toml", site.upstream.host)), "{}", run.stdout);
    assert!(run.stdout.contains("is not Lifeboat's"), "{}", run.stdout);
    assert_eq!(std::fs::read_to_string(dir.join("hosts.toml")).unwrap(), theirs);
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
}

/// An upstream that leaves the desired state leaves the node: its directory goes, and pulls of
/// it no longer fail over.
#[test]
fn an_upstream_removed_from_the_desired_state_is_removed_from_the_node() {
    let (mut site, _) = site_with_app(
        "  mirrorSets: [set]\n  upstreams:\n    - {upstream: \"other.example:5000\", mirror: MIR/other}\n",
    );
    site.render_for_containerd();
    let hosts = site.containerd.hosts_dir();
    assert!(hosts.join("other.example:5000/hosts.toml").is_file());

    site.failover("  mirrorSets: [set]\n");
    let run = site.render("containerd", &hosts, &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("removed    other.example:5000/hosts.toml"), "{}", run.stdout);
    assert!(!hosts.join("other.example:5000").exists());

    // The set now names CRI-O only: containerd's files of it go too.
    site.failover("  mirrorSets: [set]\n  runtimes: [crio]\n");
    let run = site.render("containerd", &hosts, &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stderr.contains("is written for crio only"), "{}", run.stderr);
    assert_eq!(std::fs::read_dir(&hosts).unwrap().count(), 0, "{}", run.stdout);
    site.upstream.stop();
    assert!(site.kubelet().pull(&site.upstream_ref("team/app", "1.0"), None).is_err());
}

/// The mirror's CA from its Registry document reaches the node beside `hosts.toml` and is used
/// for TLS; a CA bundle that is not one is refused with the file named, and the node keeps what
/// works. containerd itself, given a broken CA file, fails every pull of the host.
#[test]
fn a_malformed_mirror_ca_is_a_clear_error_and_the_node_keeps_its_working_files() {
    let certs = tempfile::tempdir().unwrap();
    let tls = Tls::generate(certs.path());
    let mut site = Site::with_mirror(Options { tls: Some(&tls), ..Options::default() });
    rt().block_on(runnable(&site.up(), "team/app", Some("1.0"), 9));
    site.write("certs/mirror-ca.pem", &tls.ca_pem);
    site.write(
        "registries.yaml",
        &(registry("upstream", "UP", "  insecure: true\n")
            + "---\n"
            + &registry("mirror", "MIR", "  caFile: certs/mirror-ca.pem\n")),
    );
    site.write(
        "mirrors.yaml",
        &format!("apiVersion: lifeboat.dev/v1alpha1\nkind: MirrorSet\nmetadata: {{name: set}}\nspec:\n  target: MIR/mirror\n  images:\n{APP}"),
    );
    site.failover("  mirrorSets: [set]\n");
    site.apply();
    site.render_for_containerd();
    let host_dir = site.containerd.hosts_dir().join(&site.upstream.host);
    let hosts_toml = std::fs::read_to_string(host_dir.join("hosts.toml")).unwrap();
    assert!(hosts_toml.contains(&format!("[host.\"https://{}/v2/mirror\"]", site.mirror.host)), "{hosts_toml}");
    site.upstream.stop();
    let kubelet = site.kubelet();
    kubelet.pull(&site.upstream_ref("team/app", "1.0"), None).unwrap();

    site.write(
        "certs/mirror-ca.pem",
        "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n",
    );
    let run = site.render("containerd", &site.containerd.hosts_dir(), &[]);
    assert_eq!(run.code, 2, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains(&format!(
            "the CA bundle certs/mirror-ca.pem of the mirror {} is unusable: certificate 1 does not parse",
            site.mirror.host
        )),
        "{}",
        run.stderr
    );
    assert_eq!(std::fs::read_to_string(host_dir.join("hosts.toml")).unwrap(), hosts_toml);
    kubelet.pull(&site.upstream_ref("team/app", "1.0"), None).unwrap();

    // What refusing spares the node: a CA file containerd cannot load fails the pull outright.
    std::fs::write(host_dir.join("lifeboat-mirror-ca.crt"), "garbage\n").unwrap();
    let err = kubelet.pull(&site.upstream_ref("team/app", "1.0"), None).unwrap_err();
    assert!(err.contains("unable to load CA cert"), "{err}");
}

/// The kubelet passes containerd the pull secret of the upstream host, and containerd never
/// sends it to the mirror: a mirror that needs credentials gets them from the set's mirror pull
/// secret, as a header in `hosts.toml`, or not at all.
#[test]
fn kubelet_pull_secrets_never_reach_the_mirror_so_its_credentials_come_from_a_secret() {
    const PASSWORD: &str = "mirror-pw-31f9";
    let mut site = Site::with_mirror(Options { basic_auth: Some(("node", PASSWORD)), ..Options::default() });
    rt().block_on(runnable(&site.up(), "team/app", Some("1.0"), 11));
    let auth = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, format!("node:{PASSWORD}"));
    let config = site.scratch("mirror-config.json");
    std::fs::write(&config, format!(r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#, site.mirror.host)).unwrap();
    site.write(
        "registries.yaml",
        &(registry("upstream", "UP", "  insecure: true\n")
            + "---\n"
            + &registry(
                "mirror",
                "MIR",
                &format!("  insecure: true\n  credentials:\n    dockerConfig: {}\n", config.display()),
            )),
    );
    site.write(
        "mirrors.yaml",
        &format!("apiVersion: lifeboat.dev/v1alpha1\nkind: MirrorSet\nmetadata: {{name: set}}\nspec:\n  target: MIR/mirror\n  images:\n{APP}"),
    );
    site.failover("  mirrorSets: [set]\n");
    site.apply();
    site.upstream.stop();
    // What the kubelet sends: the credentials of the secret's entry for the image's registry,
    // here even the mirror's own user and password. containerd 1.6 wants a scheme before a
    // host with a port.
    let upstream_server = format!("http://{}", site.upstream.host);
    let kubelet_secret = || PullSecret { username: "node", password: PASSWORD, server: &upstream_server };
    let kubelet = site.kubelet();
    let by_tag = site.upstream_ref("team/app", "1.0");

    // An anonymous mirror entry: the mirror answers 401, the upstream is down.
    site.render_for_containerd();
    let err = kubelet.pull(&by_tag, Some(kubelet_secret())).unwrap_err();
    assert!(
        err.contains(&format!("pulling from host {} failed", site.mirror.host)) && err.contains("401 Unauthorized"),
        "{err}"
    );

    site.failover("  mirrorSets: [set]\n  mirrorPullSecret: mirror-pull\n");
    let run = site.render("containerd", &site.containerd.hosts_dir(), &[]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("names the mirror pull secret mirror-pull"), "{}", run.stderr);
    let run =
        site.render("containerd", &site.containerd.hosts_dir(), &["--mirror-credentials", config.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(!run.stdout.contains(PASSWORD) && !run.stderr.contains(PASSWORD), "{}\n{}", run.stdout, run.stderr);
    let hosts_toml = site.containerd.hosts_dir().join(&site.upstream.host).join("hosts.toml");
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(std::fs::metadata(&hosts_toml).unwrap().permissions().mode() & 0o777, 0o600);
    kubelet.pull(&by_tag, Some(kubelet_secret())).unwrap();
}

/// A writer killed at any moment leaves each file whole, old or new, never half-written, and the
/// next run finishes the job and removes what the interrupted one left.
#[test]
fn a_writer_killed_mid_write_leaves_the_old_or_the_new_file() {
    let desired = tempfile::tempdir().unwrap();
    let write = |order: &str| {
        // Forty upstream hosts, each with a directory of its own on the node.
        let text = format!(
            "{}---\napiVersion: lifeboat.dev/v1alpha1\nkind: FailoverSet\nmetadata: {{name: nodes}}\nspec:\n  order: {order}\n  runtimes: [containerd]\n  upstreams:\n{}",
            registry("mirror", "mirror.example:5000", "  insecure: true\n"),
            (0..40)
                .map(|i| format!("    - {{upstream: up{i}.example, mirror: \"mirror.example:5000/up{i}\"}}\n"))
                .collect::<String>(),
        );
        std::fs::write(desired.path().join("desired.yaml"), text).unwrap();
    };
    let render = |out: &Path| {
        let run = lifeboat(&[
            "failover",
            "render",
            desired.path().to_str().unwrap(),
            "--runtime",
            "containerd",
            "--out",
            out.to_str().unwrap(),
        ]);
        assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    };
    let dirs = tempfile::tempdir().unwrap();
    let (old, new, node) = (dirs.path().join("old"), dirs.path().join("new"), dirs.path().join("node"));
    write("mirrorFirst");
    render(&old);
    render(&node);
    write("upstreamFirst");
    render(&new);
    let versions = |dir: &Path| -> BTreeMap<String, String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.'))
            .map(|host| (host.clone(), std::fs::read_to_string(dir.join(&host).join("hosts.toml")).unwrap()))
            .collect()
    };
    let (old, new) = (versions(&old), versions(&new));
    assert_eq!(old.len(), 40);
    let mut interrupted = 0;
    for round in 0..30 {
        let mut child = Command::new(env!("CARGO_BIN_EXE_lifeboat"))
            .args(["failover", "render", desired.path().to_str().unwrap(), "--runtime", "containerd", "--out"])
            .arg(&node)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Fault injection, not synchronisation: kill the writer after a varying short while.
        std::thread::sleep(std::time::Duration::from_micros(fastrand::u64(0..30_000)));
        let _ = child.kill();
        let status = child.wait().unwrap();
        interrupted += usize::from(!status.success());
        // Every file a runtime reads is whole: the old version or the new one.
        for (host, text) in versions(&node) {
            assert!(
                text == old[&host] || text == new[&host],
                "round {round}: {host}/hosts.toml is neither version:\n{text}"
            );
        }
        // Alternate, so that each round has something to write.
        write(if round % 2 == 0 { "mirrorFirst" } else { "upstreamFirst" });
    }
    assert!(interrupted > 0, "no run was interrupted");
    write("upstreamFirst");
    let run = lifeboat(&[
        "failover",
        "render",
        desired.path().to_str().unwrap(),
        "--runtime",
        "containerd",
        "--out",
        node.to_str().unwrap(),
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(versions(&node), new);
    let leftovers: Vec<String> = std::fs::read_dir(&node)
        .unwrap()
        .flat_map(|e| {
            let path = e.unwrap().path();
            let mut names = vec![path.file_name().unwrap().to_string_lossy().into_owned()];
            if path.is_dir() {
                names.extend(
                    std::fs::read_dir(&path).unwrap().map(|f| f.unwrap().file_name().to_string_lossy().into_owned()),
                );
            }
            names
        })
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// Without `--out` the files are printed, each headed by its path; what cannot be rendered is an
/// error that names the fix.
#[test]
fn render_prints_each_file_headed_by_its_path_and_says_what_it_needs() {
    let run = lifeboat(&["failover", "render", "example-repo", "--runtime", "containerd"]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("--mirror-credentials"), "{}", run.stderr);

    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("config.json");
    std::fs::write(&secret, r#"{"auths":{"registry.internal.example:5000":{"username":"node","password":"pw"}}}"#)
        .unwrap();
    let run = lifeboat(&[
        "failover",
        "render",
        "example-repo",
        "--runtime",
        "containerd",
        "--mirror-credentials",
        secret.to_str().unwrap(),
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.starts_with("==> registry.vendor.example/lifeboat-mirror-ca.crt (mode 0644) <==\n# managed-by: lifeboat failover/workers sha256:"), "{}", run.stdout);
    assert!(run.stdout.contains("==> registry.vendor.example/hosts.toml (mode 0600) <==\n"), "{}", run.stdout);

    let run = lifeboat(&["failover", "render", "example-repo", "--runtime", "crio", "-o", "json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let json: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let paths: Vec<&str> = json["files"].as_array().unwrap().iter().map(|f| f["path"].as_str().unwrap()).collect();
    assert_eq!(
        paths,
        ["certs.d/registry.internal.example:5000/lifeboat-mirror-ca.crt", "registries.conf.d/50-lifeboat-workers.conf"]
    );
    assert!(
        run.stderr.contains("note: FailoverSet/workers: CRI-O, podman and skopeo read the mirror's credentials"),
        "{}",
        run.stderr
    );

    let run = lifeboat(&["failover", "render", "example-repo", "--runtime", "k3s", "--set", "critical"]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("FailoverSet critical is not in the desired state") && run.stderr.contains("workers"),
        "{}",
        run.stderr
    );
}

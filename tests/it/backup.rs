//! The backup archive format against the peer tool: what Lifeboat writes, Debian's skopeo
//! reads as `oci-archive:` and copies into a real registry with the digest kept.

use std::process::Command;

use lifeboat::backup::archive::{ArchiveWriter, verify};
use lifeboat::desired::Compression;

use crate::mirror::rt;
use crate::support::images::{Pusher, digest_of, layer};
use crate::support::registry::{Options, TestRegistry};

/// An OCI image (config, one gzip layer, manifest) in an archive, named `vendor/app:1.0`.
fn archive(compression: Compression) -> (Vec<u8>, String) {
    let config = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},"config":{}}"#;
    let layer = layer(300, 64 * 1024);
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{}","size":{}}}]}}"#,
        digest_of(config),
        config.len(),
        digest_of(&layer),
        layer.len()
    );
    let digest = digest_of(manifest.as_bytes());
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{digest}","size":{},"annotations":{{"org.opencontainers.image.ref.name":"vendor/app:1.0"}}}}]}}"#,
        manifest.len()
    );
    let mut w = ArchiveWriter::new(Vec::new(), compression).unwrap();
    let blob = |d: &str| format!("blobs/sha256/{}", d.trim_start_matches("sha256:"));
    // Blobs first, the layout files last: skopeo does not mind the order.
    w.add(&blob(&digest_of(&layer)), layer.len() as u64, &layer[..]).unwrap();
    w.add(&blob(&digest_of(config)), config.len() as u64, &config[..]).unwrap();
    w.add(&blob(&digest), manifest.len() as u64, manifest.as_bytes()).unwrap();
    w.add("index.json", index.len() as u64, index.as_bytes()).unwrap();
    let layout = br#"{"imageLayoutVersion":"1.0.0"}"#;
    w.add("oci-layout", layout.len() as u64, &layout[..]).unwrap();
    let (bytes, _) = w.finish(&serde_json::json!({"images": ["vendor/app:1.0"]})).unwrap();
    (bytes, digest)
}

#[test]
fn skopeo_reads_the_archive_as_oci_archive_and_keeps_the_digest() {
    for (compression, name) in [(Compression::None, "plain"), (Compression::Zstd, "zstd")] {
        let (bytes, digest) = archive(compression);
        assert!(verify(bytes.as_slice()).unwrap().passed());
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(format!("backup-{name}.tar"));
        std::fs::write(&file, &bytes).unwrap();
        let registry = TestRegistry::start(Options::default());
        let out = Command::new("skopeo")
            .args(["copy", "--quiet", "--dest-tls-verify=false"])
            .arg(format!("oci-archive:{}:vendor/app:1.0", file.display()))
            .arg(format!("docker://{}/restored/app:1.0", registry.host))
            .output()
            .unwrap();
        assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
        let restored = rt().block_on(Pusher::new(&registry.host, None, None).digest("restored/app", "1.0"));
        assert_eq!(restored, Some(digest), "{name}");
    }
}

#[test]
fn backup_verify_says_pass_or_fail_naming_the_blob() {
    let dir = tempfile::tempdir().unwrap();
    let (bytes, digest) = archive(Compression::Zstd);
    let good = dir.path().join("good.tar.zst");
    std::fs::write(&good, &bytes).unwrap();
    let run = crate::support::lifeboat(&["backup", "verify", good.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.starts_with("PASS"), "{}", run.stdout);

    // One flipped byte in the manifest blob (stored uncompressed, so the byte is findable).
    let (mut bytes, _) = archive(Compression::None);
    let needle = b"application/vnd.oci.image.layer.v1.tar+gzip";
    let at = bytes.windows(needle.len()).position(|w| w == needle).unwrap();
    bytes[at] ^= 0x01;
    let bad = dir.path().join("bad.tar");
    std::fs::write(&bad, &bytes).unwrap();
    let run = crate::support::lifeboat(&["backup", "verify", bad.to_str().unwrap()]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    let blob = format!("blobs/sha256/{}", digest.trim_start_matches("sha256:"));
    assert!(run.stdout.starts_with("FAIL") && run.stdout.contains(&blob), "{}", run.stdout);

    // An archive that is not one at all: an error, exit 2.
    let junk = dir.path().join("junk.tar");
    std::fs::write(&junk, b"not an archive").unwrap();
    assert_eq!(crate::support::lifeboat(&["backup", "verify", junk.to_str().unwrap()]).code, 2);
}

/// Two exports of one BackupPolicy in the same second shared one `.partial` file and left a
/// FAIL archive. Three started at once (the daemon's scheduled export and two run by hand,
/// say) now each write an archive of their own under its own second, and every one passes.
#[test]
fn exports_of_one_policy_at_once_each_write_a_sound_archive() {
    let world = crate::mirror::World::new();
    rt().block_on(async {
        world.up().image("vendor/app", Some("1.0"), &[layer(7, 256 * 1024)], "linux/amd64").await;
    });
    world.desired("  images:\n    - source: UP/vendor/app\n      tags: [\"1.0\"]\n");
    let (code, applied) = world.apply();
    assert_eq!(code, 0, "{applied:#}");
    let backups = tempfile::tempdir().unwrap();
    let policy = format!(
        "apiVersion: lifeboat.dev/v1alpha1\nkind: BackupPolicy\nmetadata: {{name: nightly}}\nspec:\n  schedule: \"0 3 * * *\"\n  mirrorSets: [set]\n  destination: {}\n  maxPartSize: 1MiB\n",
        backups.path().display()
    );
    std::fs::write(world.dir.path().join("backup.yaml"), policy).unwrap();

    let dir = world.dir.path().to_str().unwrap();
    let exports: Vec<_> = (0..3)
        .map(|_| {
            Command::new(env!("CARGO_BIN_EXE_lifeboat"))
                .args(["backup", "export", dir, "--policy", "nightly", "-o", "json", "--timeout", "10s"])
                .env_remove("LIFEBOAT_LOG")
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut archives = std::collections::BTreeSet::new();
    for export in exports {
        let out = export.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
        let value: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        archives.insert(value["archive"].as_str().unwrap().to_string());
    }
    assert_eq!(archives.len(), 3, "{archives:?}");
    for archive in &archives {
        let run = crate::support::lifeboat(&["backup", "verify", archive]);
        assert_eq!(run.code, 0, "{archive}: {}{}", run.stdout, run.stderr);
        assert!(run.stdout.starts_with("PASS"), "{}", run.stdout);
    }
    let left: Vec<String> = std::fs::read_dir(backups.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".partial"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    let list = crate::support::lifeboat(&["backup", "list", backups.path().to_str().unwrap(), "-o", "json"]);
    let listed: serde_json::Value = serde_json::from_str(&list.stdout).unwrap();
    assert_eq!(listed.as_array().map(Vec::len), Some(3), "{listed:#}");
}

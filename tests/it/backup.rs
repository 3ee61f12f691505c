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

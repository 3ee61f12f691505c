//! Backup export and restore against real registries: a mirror filled by `apply` from a signed
//! upstream, exported by `lifeboat backup export`, restored by `lifeboat restore` into an
//! empty registry, compared digest by digest, and checked with the signing key there.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::mirror::{World, rt};
use crate::support::cosign::{Key, attached};
use crate::support::images::{Pusher, layer};
use crate::support::lifeboat;
use crate::support::registry::{Options, TestRegistry};

/// A mirror holding signed images, a BackupPolicy over it, and a folder for archives.
struct Fixture {
    world: World,
    backups: tempfile::TempDir,
    /// Mirror tag → digest, attached tags included.
    tags: BTreeMap<String, String>,
}

const REPO: &str = "vendor/app";
const TOOL: &str = "vendor/tool";

impl Fixture {
    /// `policy` is the rest of the BackupPolicy spec (indented two spaces).
    fn new(policy: &str) -> Fixture {
        let world = World::new();
        let key = Key::generate();
        std::fs::create_dir_all(world.dir.path().join("keys")).unwrap();
        std::fs::write(world.dir.path().join("keys/vendor.pub"), &key.public_pem).unwrap();
        rt().block_on(async {
            let up = world.up();
            let base = layer(1, 512 * 1024);
            let (app, _) = up.image(REPO, Some("1.0"), &[base.clone(), layer(2, 1024 * 1024)], "linux/amd64").await;
            up.sign(REPO, &app, &key).await;
            up.artifact(REPO, &app, "att").await;
            up.artifact(REPO, &app, "sbom").await;
            let multi = up.index(REPO, "multi", &base, &["linux/amd64", "linux/arm64"], 3).await;
            up.sign(REPO, &multi, &key).await;
            // A Docker schema2 image in another repository, sharing the base layer.
            let docker = Pusher::new(up.host(), None, None).docker();
            let (tool, _) = docker.image(TOOL, Some("2.0"), &[base.clone(), layer(4, 300 * 1024)], "linux/amd64").await;
            up.sign(TOOL, &tool, &key).await;
        });
        world.desired(&format!(
            "  images:\n    - source: UP/{REPO}\n      tags: [\"1.0\", multi]\n    - source: UP/{TOOL}\n      tags: [\"2.0\"]\n  signatures:\n    keys: [keys/vendor.pub]\n"
        ));
        let backups = tempfile::tempdir().unwrap();
        let fixture = Fixture { world, backups, tags: BTreeMap::new() };
        fixture.policy(policy);
        let (code, applied) = fixture.world.apply();
        assert_eq!(code, 0, "{applied:#}");
        let tags = fixture.mirror_tags(&fixture.world.mirror.host, "mirror");
        assert!(tags.len() >= 8, "{tags:#?}");
        Fixture { tags, ..fixture }
    }

    fn policy(&self, spec: &str) {
        let text = format!(
            "apiVersion: lifeboat.dev/v1alpha1\nkind: BackupPolicy\nmetadata: {{name: nightly}}\nspec:\n  schedule: \"0 3 * * *\"\n  mirrorSets: [set]\n  destination: {}\n{spec}",
            self.backups.path().display()
        );
        std::fs::write(self.world.dir.path().join("backup.yaml"), text).unwrap();
    }

    /// Every tag (attached tags included) of both repositories under `prefix` in the
    /// registry at `host`, with its digest.
    fn mirror_tags(&self, host: &str, prefix: &str) -> BTreeMap<String, String> {
        let registry = Pusher::new(host, None, None);
        rt().block_on(async {
            let mut out = BTreeMap::new();
            for repo in [REPO, TOOL] {
                let path = format!("{prefix}/{repo}");
                for tag in registry.tags(&path).await {
                    out.insert(format!("{repo}:{tag}"), registry.digest(&path, &tag).await.unwrap());
                }
            }
            out
        })
    }

    fn export(&self, extra: &[&str]) -> (i32, Value, String) {
        let dir = self.world.dir.path().to_str().unwrap();
        let mut args = vec!["backup", "export", dir, "--policy", "nightly", "-o", "json", "--timeout", "5s"];
        args.extend_from_slice(extra);
        let run = lifeboat(&args);
        let value = serde_json::from_str(&run.stdout).unwrap_or(Value::Null);
        (run.code, value, format!("{}{}", run.stdout, run.stderr))
    }

    fn exported(&self, extra: &[&str]) -> PathBuf {
        let (code, value, out) = self.export(extra);
        assert_eq!(code, 0, "{out}");
        PathBuf::from(value["archive"].as_str().unwrap())
    }

    fn key(&self) -> String {
        self.world.dir.path().join("keys/vendor.pub").display().to_string()
    }
}

fn restore(archive: &Path, to: &str, extra: &[&str]) -> (i32, Value, String) {
    let mut args = vec!["restore", archive.to_str().unwrap(), "--to", to, "--insecure", "-o", "json"];
    args.extend_from_slice(extra);
    let run = lifeboat(&args);
    let value = serde_json::from_str(&run.stdout).unwrap_or(Value::Null);
    (run.code, value, format!("{}{}", run.stdout, run.stderr))
}

/// The first byte of `needle` in the file, flipped.
fn flip(path: &Path, needle: &[u8]) {
    let mut bytes = std::fs::read(path).unwrap();
    let at = bytes.windows(needle.len()).position(|w| w == needle).expect("the needle is in the file");
    bytes[at] ^= 0x01;
    std::fs::write(path, bytes).unwrap();
}

/// A new ed25519 key: its private key file and its public key line (an age recipient).
fn ssh_recipient(dir: &Path, name: &str) -> (PathBuf, String) {
    let path = crate::support::ssh_key(dir, name);
    let public = std::fs::read_to_string(path.with_extension("pub")).unwrap();
    (path, public.trim().to_string())
}

#[test]
fn export_then_restore_into_an_empty_registry_keeps_every_digest_and_signature() {
    let fixture = Fixture::new("  retention: {keep: 3}\n");
    let archive = fixture.exported(&[]);
    assert!(archive.to_str().unwrap().ends_with(".tar.zst"), "{}", archive.display());
    let record = archive.with_file_name(format!("{}.lifeboat.json", archive.file_name().unwrap().to_str().unwrap()));
    let record: Value = serde_json::from_str(&std::fs::read_to_string(record).unwrap()).unwrap();
    assert_eq!(record["integrity"]["result"], "pass", "{record:#}");
    assert_eq!(record["images"], 3);

    // The archive verifies as written.
    let verified = lifeboat(&["backup", "verify", archive.to_str().unwrap()]);
    assert_eq!(verified.code, 0, "{}{}", verified.stdout, verified.stderr);

    let mut target = TestRegistry::start(Options::default());
    let (code, summary, out) =
        restore(&archive, &format!("{}/restored", target.host), &["--verify-key", &fixture.key()]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(summary["summary"]["images"], 3, "{summary:#}");
    assert!(
        summary["signatures"].as_array().unwrap().iter().all(|s| s["verification"]["result"] == "verified"),
        "{summary:#}"
    );
    let restored = fixture.mirror_tags(&target.host, "restored/mirror");
    assert_eq!(restored, fixture.tags, "every tag, signatures included, with the same digest");
    for (tag, digest) in &fixture.tags {
        if tag.ends_with(":1.0") {
            assert!(restored.contains_key(&format!("{REPO}:{}", attached(digest, "sig"))));
            assert!(restored.contains_key(&format!("{REPO}:{}", attached(digest, "att"))));
            assert!(restored.contains_key(&format!("{REPO}:{}", attached(digest, "sbom"))));
        }
    }
    // Checked independently of restore: lifeboat verify against the restored registry.
    let image = format!("{}/restored/mirror/{REPO}:multi", target.host);
    let run = lifeboat(&["verify", &image, "--key", &fixture.key(), "--insecure"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);

    // A second restore finds every blob in place and uploads nothing.
    let (code, again, out) = restore(&archive, &format!("{}/restored", target.host), &[]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(again["summary"]["blobsUploaded"], 0, "{again:#}");
    target.stop();
}

#[test]
fn a_flipped_byte_fails_verification_and_restore_refuses_the_archive() {
    let fixture = Fixture::new("  compression: none\n");
    let archive = fixture.exported(&[]);
    let target = TestRegistry::start(Options::default());
    // One byte of a layer blob (the random layer data), then one byte of the metadata.
    for (what, needle) in [("layer", &layer(2, 1024 * 1024)[4096..4160]), ("metadata", &b"\"lifeboatVersion\""[..])] {
        let copy = fixture.backups.path().join(format!("damaged-{what}.tar"));
        std::fs::copy(&archive, &copy).unwrap();
        flip(&copy, needle);
        let run = lifeboat(&["backup", "verify", copy.to_str().unwrap()]);
        assert_eq!(run.code, 1, "{what}: {}{}", run.stdout, run.stderr);
        let named = if what == "layer" { "blobs/sha256/".to_string() } else { "lifeboat/metadata.json".to_string() };
        assert!(run.stdout.starts_with("FAIL") && run.stdout.contains(&named), "{what}: {}", run.stdout);
        let (code, _, out) = restore(&copy, &target.host, &[]);
        assert_eq!(code, 2, "{what}: {out}");
        assert!(out.contains("failed verification, so nothing was restored"), "{what}: {out}");
        let pushed = rt().block_on(Pusher::new(&target.host, None, None).tags(&format!("mirror/{REPO}")));
        assert!(pushed.is_empty(), "{what}: {pushed:?}");
    }
}

#[test]
fn encrypted_archives_round_trip_and_a_wrong_identity_fails_clearly() {
    let keys = tempfile::tempdir().unwrap();
    let (identity, recipient) = ssh_recipient(keys.path(), "restore");
    let (stranger, _) = ssh_recipient(keys.path(), "stranger");
    let fixture = Fixture::new(&format!("  encryption:\n    ageRecipients: [\"{recipient}\"]\n"));
    let archive = fixture.exported(&[]);
    assert!(archive.to_str().unwrap().ends_with(".tar.zst.age"));
    assert!(std::fs::read(&archive).unwrap().starts_with(b"age-encryption.org/v1"));
    // Without the identity, verify checks the stored bytes against the record.
    let run = lifeboat(&["backup", "verify", archive.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("give --identity"), "{}", run.stdout);

    let target = TestRegistry::start(Options::default());
    let (code, _, out) = restore(&archive, &target.host, &["--identity", stranger.to_str().unwrap()]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("none of the identities"), "{out}");
    let (code, _, out) = restore(&archive, &target.host, &[]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("--identity"), "{out}");

    let (code, _, out) = restore(&archive, &target.host, &["--identity", identity.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(fixture.mirror_tags(&target.host, "mirror"), fixture.tags);

    // Interop: decrypted with the age tool and decompressed with zstd, skopeo reads it.
    let plain = keys.path().join("plain.tar");
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("age -d -i {} {} | zstd -d -q -o {}", identity.display(), archive.display(), plain.display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let skopeo_target = TestRegistry::start(Options::default());
    for (tag, digest) in
        fixture.tags.iter().filter(|(t, _)| t.ends_with(":1.0") || t.ends_with(":multi") || t.ends_with(":2.0"))
    {
        let (repo, tag) = tag.split_once(':').unwrap();
        let name = format!("{}/mirror/{repo}:{tag}", fixture.world.mirror.host);
        let out = Command::new("skopeo")
            .args(["copy", "--quiet", "--all", "--dest-tls-verify=false"])
            .arg(format!("oci-archive:{}:{name}", plain.display()))
            .arg(format!("docker://{}/skopeo/{repo}:{tag}", skopeo_target.host))
            .output()
            .unwrap();
        assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
        let copied = rt().block_on(Pusher::new(&skopeo_target.host, None, None).digest(&format!("skopeo/{repo}"), tag));
        assert_eq!(copied.as_ref(), Some(digest), "{name}");
    }
}

#[test]
fn split_archives_restore_from_their_parts_and_reassemble_with_cat() {
    let fixture = Fixture::new("  maxPartSize: 1MiB\n  compression: none\n");
    let archive = fixture.exported(&[]);
    let name = archive.file_name().unwrap().to_str().unwrap().to_string();
    let mut parts: Vec<PathBuf> = std::fs::read_dir(fixture.backups.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with(&format!("{name}.part-")))
        .collect();
    parts.sort();
    assert!(parts.len() >= 2, "{parts:?}");
    for part in &parts {
        assert!(std::fs::metadata(part).unwrap().len() <= 1 << 20, "{}", part.display());
    }
    let target = TestRegistry::start(Options::default());
    let (code, _, out) = restore(&parts[0], &target.host, &[]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(fixture.mirror_tags(&target.host, "mirror"), fixture.tags);

    // Reassembled by hand, the parts are one archive that verifies.
    let joined = fixture.backups.path().join("joined.tar");
    let mut out = std::fs::File::create(&joined).unwrap();
    for part in &parts {
        std::io::copy(&mut std::fs::File::open(part).unwrap(), &mut out).unwrap();
    }
    let run = lifeboat(&["backup", "verify", joined.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
}

#[test]
fn an_incremental_archive_stores_only_new_blobs_and_restores_through_its_chain() {
    let fixture = Fixture::new("");
    let full = fixture.exported(&[]);
    // A new image in the mirror, sharing the base layer with the others.
    rt().block_on(async {
        let mir = fixture.world.mir();
        mir.image(
            &format!("mirror/{REPO}"),
            Some("extra"),
            &[layer(1, 512 * 1024), layer(9, 64 * 1024)],
            "linux/amd64",
        )
        .await;
    });
    let extra = format!("\"{}/mirror/{REPO}:extra\"", fixture.world.mirror.host);
    fixture.policy(&format!("  images: [{extra}]\n"));
    let (code, value, out) = fixture.export(&["--base", full.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    let incremental = PathBuf::from(value["archive"].as_str().unwrap());
    assert_eq!(value["record"]["images"], 4, "{value:#}");
    assert_eq!(value["record"]["blobs"], 1, "only the new layer is stored: {value:#}");
    assert!(
        std::fs::metadata(&incremental).unwrap().len() * 4 < std::fs::metadata(&full).unwrap().len(),
        "the incremental archive is much smaller"
    );

    let target = TestRegistry::start(Options::default());
    let (code, summary, out) = restore(&incremental, &target.host, &[]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(summary["summary"]["archives"].as_array().unwrap().len(), 2, "{summary:#}");
    let mut expected = fixture.tags.clone();
    let extra_digest = rt().block_on(fixture.world.mir().digest(&format!("mirror/{REPO}"), "extra")).unwrap();
    expected.insert(format!("{REPO}:extra"), extra_digest);
    assert_eq!(fixture.mirror_tags(&target.host, "mirror"), expected);

    // Without its base beside it, the incremental archive is refused before anything is pushed.
    let alone = tempfile::tempdir().unwrap();
    let moved = alone.path().join(incremental.file_name().unwrap());
    std::fs::copy(&incremental, &moved).unwrap();
    let empty = TestRegistry::start(Options::default());
    let (code, _, out) = restore(&moved, &empty.host, &[]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("builds on") && out.contains(full.file_name().unwrap().to_str().unwrap()), "{out}");
}

#[test]
fn retention_keeps_the_newest_and_backup_list_shows_each_archive() {
    let fixture = Fixture::new("  retention: {keep: 2}\n");
    let mut archives = Vec::new();
    for _ in 0..3 {
        archives.push(fixture.exported(&[]));
    }
    assert!(!archives[0].exists(), "the oldest archive is deleted beyond keep 2");
    assert!(archives[1].exists() && archives[2].exists());
    let run = lifeboat(&["backup", "list", fixture.backups.path().to_str().unwrap(), "-o", "json"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let listed: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed:#}");
}

#[test]
fn signed_metadata_verifies_with_the_public_key_and_not_with_another() {
    let fixture = Fixture::new("");
    let signer = Key::generate();
    let stranger = Key::generate();
    let keys = tempfile::tempdir().unwrap();
    let private = keys.path().join("cosign.key");
    std::fs::write(&private, signer.encrypted_private_pem("backup-password-5e1")).unwrap();
    let (public, other) = (keys.path().join("cosign.pub"), keys.path().join("other.pub"));
    std::fs::write(&public, &signer.public_pem).unwrap();
    std::fs::write(&other, &stranger.public_pem).unwrap();
    let dir = fixture.world.dir.path().to_str().unwrap();
    let args =
        ["backup", "export", dir, "--policy", "nightly", "-o", "json", "--signing-key", private.to_str().unwrap()];
    let wrong = crate::support::lifeboat_env(&args, &[("LIFEBOAT_SIGNING_KEY_PASSWORD", "wrong")]);
    assert_eq!(wrong.code, 2, "{}{}", wrong.stdout, wrong.stderr);
    assert!(wrong.stderr.contains("cosign.key") && !wrong.stderr.contains("backup-password"), "{}", wrong.stderr);
    let run = crate::support::lifeboat_env(&args, &[("LIFEBOAT_SIGNING_KEY_PASSWORD", "backup-password-5e1")]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let value: Value = serde_json::from_str(&run.stdout).unwrap();
    let archive = value["archive"].as_str().unwrap();
    let good = lifeboat(&["backup", "verify", archive, "--key", public.to_str().unwrap(), "-o", "json"]);
    assert_eq!(good.code, 0, "{}{}", good.stdout, good.stderr);
    assert!(good.stdout.contains("\"metadataSigned\": true"), "{}", good.stdout);
    let bad = lifeboat(&["backup", "verify", archive, "--key", other.to_str().unwrap()]);
    assert_eq!(bad.code, 1, "{}{}", bad.stdout, bad.stderr);
    assert!(bad.stdout.contains("is not signed by"), "{}", bad.stdout);
}

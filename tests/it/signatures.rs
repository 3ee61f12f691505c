//! Signature policy against real registries: images signed here with generated keys (and a
//! private Sigstore for keyless signatures), checked before mirroring, carried along, and
//! checked again against the mirror.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::mirror::{World, change_count, rt};
use crate::support::cosign::{Key, SigLayer, Sigstore, attached, cosign_payload, sigstore_payload};
use crate::support::images::{OCI_MANIFEST, Pusher, digest_of, layer};
use crate::support::lifeboat;
use crate::support::referrers::ReferrersProxy;

/// The notes of a plan that reject an image, by mirror tag.
fn rejections(plan: &Value) -> BTreeMap<String, String> {
    plan["notes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["kind"] == "rejected")
        .map(|n| {
            let tag = n["subject"].as_str().unwrap().rsplit(':').next().unwrap().to_string();
            (tag, n["reason"].as_str().unwrap().to_string())
        })
        .collect()
}

fn write(world: &World, path: &str, text: &str) {
    let path = world.dir.path().join(path);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

async fn small_image(up: &Pusher, repo: &str, tag: &str, seed: u64) -> String {
    up.image(repo, Some(tag), &[layer(seed, 1024)], "linux/amd64").await.0
}

#[test]
fn only_images_signed_by_a_trusted_key_reach_the_mirror_with_their_signatures() {
    let world = World::new();
    let vendor = Key::generate();
    let stranger = Key::generate();
    write(&world, "keys/vendor.pub", &vendor.public_pem);
    let repo = "vendor/app";
    let host = world.upstream.host.clone();
    let digests = rt().block_on(async {
        let up = world.up();
        let mut d = BTreeMap::new();
        // Laid out as the cosign tool does, with an attestation and an SBOM beside it.
        let signed = small_image(&up, repo, "signed", 1).await;
        up.sign(repo, &signed, &vendor).await;
        up.artifact(repo, &signed, "att").await;
        up.artifact(repo, &signed, "sbom").await;
        d.insert("signed", signed);
        // The payload sigstore builds, signed with the same key.
        let by_sigstore = small_image(&up, repo, "by-sigstore", 2).await;
        let payload = sigstore_payload(&format!("{host}/{repo}@{by_sigstore}"), &by_sigstore);
        up.signature(repo, &attached(&by_sigstore, "sig"), &[SigLayer::signed(&vendor, payload)]).await;
        d.insert("by-sigstore", by_sigstore);
        // A multi-platform index signed on its index digest.
        let index = up.index(repo, "multi", &layer(3, 2048), &["linux/amd64", "linux/arm64"], 4).await;
        up.sign(repo, &index, &vendor).await;
        d.insert("multi", index);
        d.insert("unsigned", small_image(&up, repo, "unsigned", 5).await);
        let other = small_image(&up, repo, "other-key", 6).await;
        up.sign(repo, &other, &stranger).await;
        d.insert("other-key", other);
        // A valid signature of another image, copied next to this one.
        let copied = small_image(&up, repo, "wrong-digest", 7).await;
        let payload = cosign_payload(&format!("{host}/{repo}"), &d["signed"], &BTreeMap::new());
        up.signature(repo, &attached(&copied, "sig"), &[SigLayer::signed(&vendor, payload)]).await;
        d.insert("wrong-digest", copied);
        // The payload edited after signing.
        let edited = small_image(&up, repo, "tampered-payload", 8).await;
        let payload = cosign_payload(&format!("{host}/{repo}"), &edited, &BTreeMap::new());
        let mut layer_ = SigLayer::signed(&vendor, payload);
        layer_.payload = cosign_payload(
            &format!("{host}/{repo}"),
            &edited,
            &BTreeMap::from([("note".to_string(), "edited".to_string())]),
        );
        up.signature(repo, &attached(&edited, "sig"), &[layer_]).await;
        d.insert("tampered-payload", edited);
        // The signature bytes changed.
        let flipped = small_image(&up, repo, "tampered-signature", 9).await;
        let payload = cosign_payload(&format!("{host}/{repo}"), &flipped, &BTreeMap::new());
        let mut layer_ = SigLayer::signed(&vendor, payload);
        let sig = layer_.annotations.get_mut("dev.cosignproject.cosign/signature").unwrap();
        let mut bytes = base64_decode(sig);
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        *sig = base64_encode(&bytes);
        up.signature(repo, &attached(&flipped, "sig"), &[layer_]).await;
        d.insert("tampered-signature", flipped);
        d
    });
    let tags: Vec<String> = digests.keys().map(|t| format!("\"{t}\"")).collect();
    world.desired(&format!(
        "  images:\n    - source: UP/{repo}\n      tags: [{}]\n  signatures:\n    keys: [keys/vendor.pub]\n",
        tags.join(", ")
    ));

    // The plan says which images stay out, and why, and changes nothing.
    let (code, plan) = world.plan();
    assert_eq!(code, 1, "rejections need a person: the pass is stalled: {plan:#}");
    assert_eq!(plan["result"], "stalled", "{plan:#}");
    let rejected = rejections(&plan);
    let expected = [
        ("unsigned", "not signed"),
        ("other-key", "does not verify with any accepted key (keys/vendor.pub)"),
        ("wrong-digest", "is for another digest"),
        ("tampered-payload", "does not verify with any accepted key"),
        ("tampered-signature", "does not verify with any accepted key"),
    ];
    assert_eq!(rejected.len(), expected.len(), "{rejected:#?}");
    for (tag, words) in expected {
        assert!(rejected[tag].contains(words), "{tag}: {}", rejected[tag]);
    }
    let human = lifeboat(&["plan", world.dir.path().to_str().unwrap(), "--timeout", "3s"]).stdout;
    assert!(human.contains("5 rejected by signature policy"), "{human}");
    assert!(human.contains("✗ MirrorSet/set") && human.contains("not signed"), "{human}");
    assert!(rt().block_on(world.mir().tags(&format!("mirror/{repo}"))).is_empty());

    // Apply copies the signed images and everything attached to them.
    let (code, applied) = world.apply();
    assert_eq!(code, 1, "{applied:#}");
    let outcomes = applied["outcomes"].as_array().unwrap();
    assert!(outcomes.iter().all(|o| o["outcome"] == "done"), "{outcomes:#?}");
    let copies: Vec<&Value> = outcomes.iter().filter(|o| o["change"]["action"]["kind"] == "copy").collect();
    assert_eq!(copies.len(), 3, "{copies:#?}");
    for copy in &copies {
        assert_eq!(copy["mirrorVerification"]["result"], "verified", "{copy:#}");
        let signer = &copy["mirrorVerification"]["signers"][0];
        assert_eq!(signer["key"], "keys/vendor.pub");
        assert!(signer["fingerprint"].as_str().unwrap().starts_with("sha256:"));
        assert_eq!(copy["change"]["action"]["signedBy"][0]["key"], "keys/vendor.pub");
    }
    let rejected_apply = rejections(&applied["plan"]);
    assert_eq!(rejected_apply.len(), 5);
    let mirror = format!("mirror/{repo}");
    rt().block_on(async {
        let (up, mir) = (world.up(), world.mir());
        let mut expected_tags =
            vec!["signed", "by-sigstore", "multi"].into_iter().map(String::from).collect::<Vec<_>>();
        for t in ["signed", "by-sigstore", "multi"] {
            assert_eq!(mir.digest(&mirror, t).await, Some(digests[t].clone()), "{t}");
            let sig = attached(&digests[t], "sig");
            assert_eq!(mir.digest(&mirror, &sig).await, up.digest(repo, &sig).await, "{t}: signature copied");
            expected_tags.push(sig);
        }
        for suffix in ["att", "sbom"] {
            let tag = attached(&digests["signed"], suffix);
            assert_eq!(mir.digest(&mirror, &tag).await, up.digest(repo, &tag).await, "{suffix} copied");
            expected_tags.push(tag);
        }
        expected_tags.sort();
        assert_eq!(mir.tags(&mirror).await, expected_tags, "nothing rejected reached the mirror");
    });

    // The mirror alone verifies, by tag or digest; what was rejected does not, with its reason.
    let mirrored = format!("{}/{mirror}", world.mirror.host);
    let key = world.dir.path().join("keys/vendor.pub");
    let key = key.to_str().unwrap();
    let ok = lifeboat(&["verify", &format!("{mirrored}:multi"), "--key", key, "--insecure"]);
    assert_eq!(ok.code, 0, "{}{}", ok.stdout, ok.stderr);
    assert!(ok.stdout.starts_with("Verified") && ok.stdout.contains("keys/vendor.pub"), "{}", ok.stdout);
    let upstream_ref = format!("{}/{repo}@{}", world.upstream.host, digests["other-key"]);
    let bad = lifeboat(&["verify", &upstream_ref, "--key", key, "--insecure"]);
    assert_eq!(bad.code, 1, "{}{}", bad.stdout, bad.stderr);
    assert!(bad.stdout.contains("does not verify with any accepted key"), "{}", bad.stdout);

    // A second pass has nothing to copy; the rejections stay visible.
    let (code, plan) = world.plan();
    assert_eq!((code, change_count(&plan), rejections(&plan).len()), (1, 0, 5), "{plan:#}");

    // Upstream moves a tag to an image nobody signed: the mirror keeps the signed one.
    rt().block_on(async { small_image(&world.up(), repo, "signed", 10).await });
    let (code, plan) = world.apply();
    assert_eq!(code, 1);
    assert!(rejections(&plan["plan"])["signed"].contains("not signed"), "{plan:#}");
    let held = rt().block_on(world.mir().digest(&mirror, "signed"));
    assert_eq!(held, Some(digests["signed"].clone()), "the mirror still holds the signed image");
}

#[test]
fn optional_policy_mirrors_unsigned_images_with_a_warning() {
    let world = World::new();
    let vendor = Key::generate();
    write(&world, "keys/vendor.pub", &vendor.public_pem);
    rt().block_on(small_image(&world.up(), "vendor/app", "unsigned", 1));
    world.desired(
        "  images:\n    - source: UP/vendor/app\n      tags: [unsigned]\n  signatures:\n    policy: optional\n    keys: [keys/vendor.pub]\n",
    );
    let (code, applied) = world.apply();
    assert_eq!(code, 0, "{applied:#}");
    let change = &applied["outcomes"][0];
    assert!(change["change"]["why"].as_str().unwrap().contains("WARNING: signature check failed"), "{change:#}");
    assert_eq!(change["mirrorVerification"]["result"], "rejected", "{change:#}");
    assert!(rt().block_on(world.mir().digest("mirror/vendor/app", "unsigned")).is_some());
}

#[test]
fn keyless_signatures_are_checked_against_the_trust_root_identity_and_issuer() {
    let world = World::new();
    let sigstore = Sigstore::new();
    let foreign = Sigstore::new();
    write(&world, "sigstore/trusted_root.json", &sigstore.trusted_root());
    let issuer = "https://token.actions.githubusercontent.com";
    let release = "https://github.com/vendor/app/.github/workflows/release.yml@refs/heads/main";
    let repo = "vendor/app";
    let host = world.upstream.host.clone();
    let digests = rt().block_on(async {
        let up = world.up();
        let mut d = BTreeMap::new();
        for (tag, seed, authority, identity, issuer) in [
            ("release", 1, &sigstore, release, issuer),
            ("fork", 2, &sigstore, "https://github.com/evil/app/.github/workflows/release.yml@refs/heads/main", issuer),
            ("other-issuer", 3, &sigstore, release, "https://accounts.example.com"),
            ("foreign-ca", 4, &foreign, release, issuer),
        ] {
            let digest = small_image(&up, repo, tag, seed).await;
            let payload = cosign_payload(&format!("{host}/{repo}"), &digest, &BTreeMap::new());
            let layer_ = authority.keyless_layer(payload, identity, issuer);
            up.signature(repo, &attached(&digest, "sig"), &[layer_]).await;
            d.insert(tag, digest);
        }
        d
    });
    world.desired(&format!(
        "  images:\n    - source: UP/{repo}\n      tags: [release, fork, other-issuer, foreign-ca]\n  signatures:\n    keyless:\n      - issuer: \"{issuer}\"\n        identityRegex: \"^https://github.com/vendor/\"\n    trustRoot: sigstore/trusted_root.json\n"
    ));
    let (code, applied) = world.apply();
    assert_eq!(code, 1, "{applied:#}");
    let rejected = rejections(&applied["plan"]);
    assert_eq!(rejected.keys().collect::<Vec<_>>(), ["foreign-ca", "fork", "other-issuer"], "{rejected:#?}");
    assert!(rejected["fork"].contains("signed by https://github.com/evil/"), "{}", rejected["fork"]);
    assert!(rejected["other-issuer"].contains("issuer https://accounts.example.com"), "{}", rejected["other-issuer"]);
    assert!(rejected["foreign-ca"].contains("not trusted"), "{}", rejected["foreign-ca"]);
    let copy =
        &applied["outcomes"].as_array().unwrap().iter().find(|o| o["change"]["action"]["kind"] == "copy").unwrap();
    let signer = &copy["mirrorVerification"]["signers"][0];
    assert_eq!((signer["identity"].as_str(), signer["issuer"].as_str()), (Some(release), Some(issuer)), "{copy:#}");
    assert_eq!(
        rt().block_on(world.mir().digest(&format!("mirror/{repo}"), "release")),
        Some(digests["release"].clone())
    );

    // The same check from the command line, against the mirror.
    let root = world.dir.path().join("sigstore/trusted_root.json");
    let image = format!("{}/mirror/{repo}:release", world.mirror.host);
    let args = ["verify", &image, "--issuer", issuer, "--trust-root", root.to_str().unwrap(), "--insecure"];
    let ok = lifeboat(&[&args[..], &["--identity", release]].concat());
    assert_eq!(ok.code, 0, "{}{}", ok.stdout, ok.stderr);
    let wrong = lifeboat(&[&args[..], &["--identity", "someone@example.com"]].concat());
    assert_eq!(wrong.code, 1, "{}{}", wrong.stdout, wrong.stderr);
}

#[test]
fn verify_exits_2_when_the_registry_cannot_be_read() {
    let mut world = World::new();
    let vendor = Key::generate();
    write(&world, "keys/vendor.pub", &vendor.public_pem);
    let key = world.dir.path().join("keys/vendor.pub");
    let image = format!("{}/vendor/app:1.0", world.upstream.host);
    world.upstream.stop();
    let run = lifeboat(&[
        "verify",
        &image,
        "--key",
        key.to_str().unwrap(),
        "--insecure",
        "--timeout",
        "2s",
        "--retries",
        "0",
    ]);
    assert_eq!(run.code, 2, "{}{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("error:"), "{}", run.stderr);
}

#[test]
fn referrers_from_a_registry_with_the_api_reach_a_mirror_without_it() {
    let world = World::new();
    let proxy = ReferrersProxy::start(&world.upstream.host);
    let repo = "vendor/app";
    let (subject, referrer) = rt().block_on(async {
        let up = world.up();
        let (subject, size) = up.image(repo, Some("1.0"), &[layer(1, 1024)], "linux/amd64").await;
        let config = up.blob(repo, bytes::Bytes::from_static(b"{}")).await;
        let sbom = bytes::Bytes::from_static(b"{\"spdxVersion\":\"SPDX-2.3\"}");
        let sbom_size = sbom.len();
        let sbom_digest = up.blob(repo, sbom).await;
        let body = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": "application/spdx+json",
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": config, "size": 2},
            "layers": [{"mediaType": "application/spdx+json", "digest": sbom_digest, "size": sbom_size}],
            "subject": {"mediaType": OCI_MANIFEST, "digest": subject, "size": size},
        }))
        .unwrap();
        let size = body.len();
        let referrer = digest_of(&body);
        up.raw_manifest(repo, &referrer, body, OCI_MANIFEST).await;
        proxy.table.lock().unwrap().insert(
            subject.clone(),
            vec![serde_json::json!({
                "mediaType": OCI_MANIFEST,
                "digest": referrer,
                "size": size,
                "artifactType": "application/spdx+json",
            })],
        );
        (subject, referrer)
    });
    world.desired_via(&proxy.host, &format!("  images:\n    - source: UP/{repo}\n      tags: [\"1.0\"]\n"));
    let (code, applied) = world.apply();
    assert_eq!(code, 0, "{applied:#}");
    let kinds: Vec<&str> = applied["outcomes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["change"]["action"]["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["copy", "referrers"], "{applied:#}");
    assert!(!proxy.asked.lock().unwrap().is_empty());
    let mirror = format!("mirror/{repo}");
    rt().block_on(async {
        let mir = world.mir();
        assert_eq!(mir.digest(&mirror, &referrer).await, Some(referrer.clone()), "the referrer is in the mirror");
        // Distribution has no referrers API: the fallback tag lists the referrer.
        let fallback = subject.replacen(':', "-", 1);
        assert!(mir.tags(&mirror).await.contains(&fallback), "{:?}", mir.tags(&mirror).await);
    });
    // The next plan reads the fallback index and finds the referrer listed: nothing to do.
    let (code, plan) = world.plan();
    assert_eq!((code, change_count(&plan)), (0, 0), "{plan:#}");
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

fn base64_encode(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(b)
}

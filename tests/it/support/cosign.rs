//! Cosign signatures made by the harness: keys it generates, payloads laid out as the cosign
//! tool writes them (or as sigstore builds them), signature manifests pushed to a real
//! registry, and a private Sigstore (Fulcio CA, Rekor key, `trusted_root.json`) for keyless
//! signatures — nothing reaches the public Sigstore services.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use serde_json::{Value, json};
use sigstore::crypto::{SigStoreSigner, SigningScheme};

use super::images::{OCI_MANIFEST, Pusher};

pub const SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";

/// The tag cosign keeps `digest`'s signatures (or `.att`, `.sbom`) under.
pub fn attached(digest: &str, suffix: &str) -> String {
    format!("{}.{suffix}", digest.replacen(':', "-", 1))
}

/// An ECDSA P-256 key pair, as `cosign generate-key-pair` makes.
pub struct Key {
    signer: SigStoreSigner,
    pub public_pem: String,
}

impl Key {
    pub fn generate() -> Key {
        let signer = SigningScheme::ECDSA_P256_SHA256_ASN1.create_signer().unwrap();
        let public_pem = signer.to_sigstore_keypair().unwrap().public_key_to_pem().unwrap();
        Key { signer, public_pem }
    }

    pub fn private_der(&self) -> Vec<u8> {
        self.signer.to_sigstore_keypair().unwrap().private_key_to_der().unwrap().to_vec()
    }

    /// The private key as `cosign generate-key-pair` writes it, encrypted with `password`.
    pub fn encrypted_private_pem(&self, password: &str) -> String {
        self.signer
            .to_sigstore_keypair()
            .unwrap()
            .private_key_to_encrypted_pem(password.as_bytes())
            .unwrap()
            .to_string()
    }

    pub fn public_der(&self) -> Vec<u8> {
        self.signer.to_sigstore_keypair().unwrap().public_key_to_der().unwrap()
    }

    /// The base64 signature cosign puts in the layer annotation.
    pub fn sign(&self, payload: &[u8]) -> String {
        B64.encode(self.signer.sign(payload).unwrap())
    }
}

/// The simple-signing payload the cosign tool writes: `docker-reference` is the repository
/// without tag or digest.
pub fn cosign_payload(repository: &str, digest: &str, annotations: &BTreeMap<String, String>) -> Vec<u8> {
    let optional = if annotations.is_empty() { Value::Null } else { json!(annotations) };
    serde_json::to_vec(&json!({
        "critical": {
            "identity": {"docker-reference": repository},
            "image": {"docker-manifest-digest": digest},
            "type": "cosign container image signature"
        },
        "optional": optional
    }))
    .unwrap()
}

/// The payload sigstore builds for `reference` (its own layout of the same document).
pub fn sigstore_payload(reference: &str, digest: &str) -> Vec<u8> {
    let reference: sigstore::registry::OciReference = reference.parse().unwrap();
    sigstore::cosign::SignatureLayer::new_unsigned(&reference, digest).unwrap().raw_data
}

/// One layer of a signature manifest.
pub struct SigLayer {
    pub payload: Vec<u8>,
    pub annotations: BTreeMap<String, String>,
}

impl SigLayer {
    pub fn signed(key: &Key, payload: Vec<u8>) -> SigLayer {
        let signature = key.sign(&payload);
        SigLayer { payload, annotations: BTreeMap::from([("dev.cosignproject.cosign/signature".into(), signature)]) }
    }
}

impl Pusher {
    /// Pushes a signature manifest under `tag` (normally `sha256-<hex>.sig`), as cosign lays it
    /// out: an OCI manifest with an empty config and one simple-signing layer per signature.
    pub async fn signature(&self, repo: &str, tag: &str, layers: &[SigLayer]) -> String {
        let config = Bytes::from_static(b"{}");
        let config_digest = self.blob(repo, config.clone()).await;
        let mut descriptors = Vec::new();
        for l in layers {
            let digest = self.blob(repo, Bytes::from(l.payload.clone())).await;
            descriptors.push(json!({
                "mediaType": SIMPLE_SIGNING,
                "digest": digest,
                "size": l.payload.len(),
                "annotations": l.annotations,
            }));
        }
        let body = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
            "layers": descriptors,
        }))
        .unwrap();
        self.raw_manifest(repo, tag, body, OCI_MANIFEST).await
    }

    /// Signs `digest` in `repo` with `key`, the way the cosign tool does.
    pub async fn sign(&self, repo: &str, digest: &str, key: &Key) -> String {
        let payload = cosign_payload(&format!("{}/{repo}", self.host()), digest, &BTreeMap::new());
        self.signature(repo, &attached(digest, "sig"), &[SigLayer::signed(key, payload)]).await
    }

    /// An attestation or SBOM-like artifact under `sha256-<hex>.<suffix>`.
    pub async fn artifact(&self, repo: &str, digest: &str, suffix: &str) -> String {
        let content = Bytes::from(format!("{{\"{suffix}\":\"{digest}\"}}"));
        let config = Bytes::from_static(b"{}");
        let config_digest = self.blob(repo, config.clone()).await;
        let layer_digest = self.blob(repo, content.clone()).await;
        let body = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
            "layers": [{"mediaType": "application/vnd.dsse.envelope.v1+json", "digest": layer_digest, "size": content.len()}],
        }))
        .unwrap();
        self.raw_manifest(repo, &attached(digest, suffix), body, OCI_MANIFEST).await
    }
}

/// A private Sigstore: a Fulcio-like CA issuing short-lived code-signing certificates, and a
/// Rekor-like log key signing bundles.
pub struct Sigstore {
    ca: rcgen::Issuer<'static, rcgen::KeyPair>,
    ca_der: Vec<u8>,
    rekor: Key,
}

const ISSUER_OID: &[u64] = &[1, 3, 6, 1, 4, 1, 57264, 1, 1];

impl Sigstore {
    pub fn new() -> Sigstore {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, KeyUsagePurpose};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        ca_params.distinguished_name.push(rcgen::DnType::CommonName, "lifeboat test fulcio");
        let ca_der = ca_params.self_signed(&ca_key).unwrap().der().to_vec();
        Sigstore { ca: rcgen::Issuer::new(ca_params, ca_key), ca_der, rekor: Key::generate() }
    }

    /// The `trusted_root.json` naming this CA and log.
    pub fn trusted_root(&self) -> String {
        let rekor_der = self.rekor.public_der();
        let key_id = sha2::Sha256::digest(&rekor_der);
        serde_json::to_string_pretty(&json!({
            "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
            "tlogs": [{
                "baseUrl": "https://rekor.test.invalid",
                "hashAlgorithm": "SHA2_256",
                "publicKey": {"rawBytes": B64.encode(&rekor_der), "keyDetails": "PKIX_ECDSA_P256_SHA_256", "validFor": {"start": "2020-01-01T00:00:00Z"}},
                "logId": {"keyId": B64.encode(key_id)}
            }],
            "certificateAuthorities": [{
                "subject": {"organization": "lifeboat test", "commonName": "lifeboat test fulcio"},
                "uri": "https://fulcio.test.invalid",
                "certChain": {"certificates": [{"rawBytes": B64.encode(&self.ca_der)}]},
                "validFor": {"start": "2020-01-01T00:00:00Z"}
            }],
            "ctlogs": [],
            "timestampAuthorities": []
        }))
        .unwrap()
    }

    /// A keyless signature layer: `payload` signed by a fresh key whose certificate names
    /// `identity` (an email, or a URI when it contains `://`) and `issuer`, with a bundle.
    pub fn keyless_layer(&self, payload: Vec<u8>, identity: &str, issuer: &str) -> SigLayer {
        use rcgen::{CertificateParams, CustomExtension, ExtendedKeyUsagePurpose, KeyPair, KeyUsagePurpose, SanType};
        let key = Key::generate();
        let leaf_key = KeyPair::try_from(key.private_der().as_slice()).unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names = vec![if identity.contains("://") {
            SanType::URI(identity.try_into().unwrap())
        } else {
            SanType::Rfc822Name(identity.try_into().unwrap())
        }];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::CodeSigning];
        params.custom_extensions = vec![CustomExtension::from_oid_content(ISSUER_OID, issuer.as_bytes().to_vec())];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::minutes(1);
        params.not_after = now + time::Duration::minutes(10);
        let cert = params.signed_by(&leaf_key, &self.ca).unwrap();
        let mut layer = SigLayer::signed(&key, payload);
        layer.annotations.insert("dev.sigstore.cosign/certificate".into(), cert.pem());
        layer.annotations.insert(
            "dev.sigstore.cosign/chain".into(),
            pem::encode(&pem::Pem::new("CERTIFICATE", self.ca_der.clone())),
        );
        layer.annotations.insert("dev.sigstore.cosign/bundle".into(), self.bundle(now.unix_timestamp()));
        layer
    }

    /// A Rekor bundle (SignedEntryTimestamp over the canonical JSON of its payload).
    fn bundle(&self, integrated_time: i64) -> String {
        let log_id: String = sha2::Sha256::digest(self.rekor.public_der()).iter().map(|b| format!("{b:02x}")).collect();
        let body = B64.encode(br#"{"apiVersion":"0.0.1","kind":"hashedrekord","spec":{}}"#);
        // Keys in sorted order, no spaces: the canonical form the log signs.
        let payload: BTreeMap<&str, Value> = BTreeMap::from([
            ("body", json!(body)),
            ("integratedTime", json!(integrated_time)),
            ("logID", json!(log_id)),
            ("logIndex", json!(1)),
        ]);
        let canonical = serde_json::to_vec(&payload).unwrap();
        serde_json::to_string(&json!({
            "SignedEntryTimestamp": self.rekor.sign(&canonical),
            "Payload": payload,
        }))
        .unwrap()
    }
}

use sha2::Digest as _;

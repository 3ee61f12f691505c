//! Cosign signature checks: the only user of the sigstore crate.
//!
//! A signature of `repo@sha256:<hex>` lives in the tag `sha256-<hex>.sig` of the same
//! repository: a manifest whose layers are simple-signing payloads naming the signed digest,
//! each with its signature (and, for keyless signatures, a Fulcio certificate and a Rekor
//! bundle) in annotations. Lifeboat reads those through its own registry client, so limits,
//! retries and the difference between "not signed" and "could not look" hold as everywhere
//! else; the cryptography is sigstore's. Keyless certificates are checked by sigstore's own
//! client against the trust root named in the desired state, never against public services.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use sigstore::cosign::CosignCapabilities;
use sigstore::cosign::signature_layers::{CertificateSignature, CertificateSubject};
use sigstore::cosign::simple_signing::SimpleSigning;
use sigstore::crypto::{CosignVerificationKey, Signature};

use super::client::RegistryClient;
use super::error::{ErrorKind, RegistryError};
use crate::desired::{Digest, IdentityMatch, KeylessIdentity, Repository};

/// Layer media type of a cosign simple-signing payload.
pub const SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// Annotations of a signature layer.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
pub const CERTIFICATE_ANNOTATION: &str = "dev.sigstore.cosign/certificate";
/// Payloads are a few hundred bytes; anything much larger is not a signature.
const PAYLOAD_LIMIT: usize = 256 << 10;

/// The tag under which cosign keeps what belongs to `digest`: `sha256-<hex>.<suffix>`, or
/// the OCI referrers fallback tag `sha256-<hex>` for an empty suffix.
pub fn attached_tag(digest: &Digest, suffix: &str) -> String {
    let base = digest.as_str().replacen(':', "-", 1);
    if suffix.is_empty() { base } else { format!("{base}.{suffix}") }
}

/// Who signed a digest, as far as the policy accepted it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Signer {
    /// A public key from the desired state, by its file and the SHA-256 of its DER form.
    Key { key: String, fingerprint: String },
    /// A Fulcio certificate: its identity (email or URI) and OIDC issuer.
    Certificate { identity: String, issuer: String },
}

impl fmt::Display for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Signer::Key { key, fingerprint } => write!(f, "key {key} ({fingerprint})"),
            Signer::Certificate { identity, issuer } => write!(f, "{identity} (issuer {issuer})"),
        }
    }
}

/// The result of checking a digest's signatures against a policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "camelCase")]
pub enum Verdict {
    Verified { signers: Vec<Signer> },
    Rejected { reason: String },
}

impl Verdict {
    pub fn signers_text(signers: &[Signer]) -> String {
        signers.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
    }
}

/// A public key a policy accepts.
pub struct TrustedKey {
    /// How the desired state (or the command line) names it.
    pub name: String,
    pub fingerprint: String,
    key: CosignVerificationKey,
}

impl TrustedKey {
    /// Reads a PEM public key (`cosign.pub`): ECDSA P-256/P-384, Ed25519 or RSA.
    pub fn from_pem(name: &str, pem: &[u8]) -> anyhow::Result<TrustedKey> {
        let block = pem::parse_many(pem).ok().and_then(|blocks| blocks.into_iter().find(|b| b.tag() == "PUBLIC KEY"));
        let der = block.map(|b| b.into_contents()).ok_or_else(|| {
            anyhow::anyhow!(
                "{name} is not a PEM public key: expected a `-----BEGIN PUBLIC KEY-----` block, as in the cosign.pub \
                 that `cosign generate-key-pair` writes"
            )
        })?;
        let key = CosignVerificationKey::try_from_der(&der)
            .map_err(|e| anyhow::anyhow!("{name} holds a public key Lifeboat cannot use: {e}"))?;
        Ok(TrustedKey { name: name.to_string(), fingerprint: format!("sha256:{:x}", Sha256::digest(&der)), key })
    }
}

impl TrustedKey {
    /// Whether `signature` (base64, as `cosign sign-blob` writes it) signs `payload`.
    pub fn verifies_blob(&self, signature: &[u8], payload: &[u8]) -> bool {
        let text = String::from_utf8_lossy(signature);
        self.key.verify_signature(Signature::Base64Encoded(text.trim().as_bytes()), payload).is_ok()
    }
}

/// Signs blobs with a cosign private key, as `cosign sign-blob --key` does.
pub struct BlobSigner(sigstore::crypto::SigStoreSigner);

impl BlobSigner {
    /// Reads an encrypted cosign private key (`cosign generate-key-pair` writes one) with its
    /// password; `name` is how errors refer to it.
    /// A cosign private key file (`cosign generate-key-pair`), decrypted with `password`.
    pub fn from_key_file(path: &std::path::Path, password: &str) -> anyhow::Result<BlobSigner> {
        let pem =
            std::fs::read(path).map_err(|e| anyhow::anyhow!("reading the signing key {}: {e}", path.display()))?;
        BlobSigner::from_encrypted_pem(&path.display().to_string(), &pem, password.as_bytes())
    }

    pub fn from_encrypted_pem(name: &str, pem: &[u8], password: &[u8]) -> anyhow::Result<BlobSigner> {
        use sigstore::crypto::SigningScheme;
        let pair = sigstore::crypto::signing_key::SigStoreKeyPair::from_encrypted_pem(pem, password).map_err(|e| {
            anyhow::anyhow!("{name} cannot be read as an encrypted cosign private key with the password given: {e}")
        })?;
        [SigningScheme::ECDSA_P256_SHA256_ASN1, SigningScheme::ECDSA_P384_SHA384_ASN1, SigningScheme::ED25519]
            .iter()
            .find_map(|scheme| pair.to_sigstore_signer(scheme).ok())
            .map(BlobSigner)
            .ok_or_else(|| anyhow::anyhow!("{name}: only ECDSA P-256/P-384 and Ed25519 keys can sign backups"))
    }

    /// The base64 signature of `payload`.
    pub fn sign(&self, payload: &[u8]) -> anyhow::Result<String> {
        use base64::Engine as _;
        let signature = self.0.sign(payload).map_err(|e| anyhow::anyhow!("signing: {e}"))?;
        Ok(base64::engine::general_purpose::STANDARD.encode(signature))
    }
}

/// The Fulcio roots and Rekor keys of a Sigstore trust root (`trusted_root.json`).
#[derive(Clone, Default)]
pub struct TrustRoot {
    fulcio: Vec<Vec<u8>>,
    /// Rekor public keys (DER) by log id (hex), the form sigstore looks them up in.
    rekor: BTreeMap<String, Vec<u8>>,
}

impl TrustRoot {
    /// Reads the `trusted_root.json` format of the Sigstore protobuf specs. Validity windows
    /// are not applied: a Rekor bundle dates each signature.
    pub fn from_json(name: &str, bytes: &[u8]) -> anyhow::Result<TrustRoot> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Root {
            #[serde(default)]
            tlogs: Vec<Tlog>,
            #[serde(default)]
            certificate_authorities: Vec<Authority>,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Tlog {
            public_key: Option<RawBytes>,
            log_id: Option<LogId>,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct LogId {
            key_id: String,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Authority {
            cert_chain: Option<Chain>,
        }
        #[derive(Deserialize)]
        struct Chain {
            #[serde(default)]
            certificates: Vec<RawBytes>,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct RawBytes {
            raw_bytes: Option<String>,
        }
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD;
        let root: Root = serde_json::from_slice(bytes).map_err(|e| {
            anyhow::anyhow!("{name} is not a Sigstore trusted_root.json: {e}; use the file `cosign trusted-root create` writes or the one of your Sigstore deployment")
        })?;
        let mut trust = TrustRoot::default();
        for ca in root.certificate_authorities {
            for cert in ca.cert_chain.map(|c| c.certificates).unwrap_or_default() {
                let raw = cert.raw_bytes.unwrap_or_default();
                trust
                    .fulcio
                    .push(b64.decode(raw).map_err(|e| anyhow::anyhow!("{name}: a certificate is not base64: {e}"))?);
            }
        }
        for tlog in root.tlogs {
            let (Some(key), Some(id)) = (tlog.public_key.and_then(|k| k.raw_bytes), tlog.log_id) else {
                continue;
            };
            let key = b64.decode(key).map_err(|e| anyhow::anyhow!("{name}: a Rekor key is not base64: {e}"))?;
            let id = b64.decode(id.key_id).map_err(|e| anyhow::anyhow!("{name}: a Rekor log id is not base64: {e}"))?;
            trust.rekor.insert(id.iter().map(|b| format!("{b:02x}")).collect(), key);
        }
        anyhow::ensure!(
            !trust.fulcio.is_empty(),
            "{name} names no certificate authority: keyless signatures cannot be checked against it"
        );
        anyhow::ensure!(
            !trust.rekor.is_empty(),
            "{name} names no transparency log key: keyless signatures are only accepted with a Rekor bundle"
        );
        Ok(trust)
    }
}

/// What a MirrorSet (or `lifeboat verify`) accepts.
#[derive(Default)]
pub struct TrustPolicy {
    pub keys: Vec<TrustedKey>,
    pub keyless: Vec<KeylessIdentity>,
    pub trust_root: Option<TrustRoot>,
    /// Annotations every accepted signature carries, with these values.
    pub annotations: BTreeMap<String, String>,
}

impl TrustPolicy {
    /// The accepted signers, for messages.
    pub fn describe(&self) -> String {
        let mut parts: Vec<String> = self.keys.iter().map(|k| k.name.clone()).collect();
        for k in &self.keyless {
            let identity = match &k.identity {
                IdentityMatch::Exact(i) => i.clone(),
                IdentityMatch::Regex(r) => format!("/{}/", r.as_str()),
            };
            parts.push(format!("{identity} (issuer {})", k.issuer));
        }
        parts.join(", ")
    }

    fn accepts(&self, certificate: &CertificateSignature) -> Option<Signer> {
        let identity = match &certificate.subject {
            CertificateSubject::Email(e) => e.clone(),
            CertificateSubject::Uri(u) => u.clone(),
        };
        let issuer = certificate.issuer.clone().unwrap_or_default();
        self.keyless
            .iter()
            .any(|k| {
                k.issuer == issuer
                    && match &k.identity {
                        IdentityMatch::Exact(i) => *i == identity,
                        IdentityMatch::Regex(r) => r.is_match(&identity),
                    }
            })
            .then_some(Signer::Certificate { identity, issuer })
    }
}

/// The policy of every MirrorSet that checks signatures, reading key and trust-root files
/// through `read` (a path relative to the desired-state root). An unreadable or unusable file
/// is an error naming the document, the field and the file, before anything is applied.
pub fn policies(
    state: &crate::desired::DesiredState,
    read: impl Fn(&str) -> anyhow::Result<Vec<u8>>,
) -> anyhow::Result<BTreeMap<String, TrustPolicy>> {
    use crate::desired::SignaturePolicy;
    let mut out = BTreeMap::new();
    for (name, set) in &state.mirror_sets {
        let s = &set.signatures;
        if s.policy == SignaturePolicy::Off {
            continue;
        }
        let place = |field: &str| format!("{}:{}: MirrorSet {name} {field}", set.origin.file, set.origin.line);
        let mut policy =
            TrustPolicy { annotations: s.annotations.clone(), keyless: s.keyless.clone(), ..Default::default() };
        for (i, key) in s.keys.iter().enumerate() {
            let field = format!("spec.signatures.keys[{i}]");
            let bytes = read(key).map_err(|e| anyhow::anyhow!("{}: reading {key}: {e:#}", place(&field)))?;
            policy
                .keys
                .push(TrustedKey::from_pem(key, &bytes).map_err(|e| anyhow::anyhow!("{}: {e:#}", place(&field)))?);
        }
        if let Some(root) = &s.trust_root {
            let field = "spec.signatures.trustRoot";
            let bytes = read(root).map_err(|e| anyhow::anyhow!("{}: reading {root}: {e:#}", place(field)))?;
            policy.trust_root =
                Some(TrustRoot::from_json(root, &bytes).map_err(|e| anyhow::anyhow!("{}: {e:#}", place(field)))?);
        }
        out.insert(name.clone(), policy);
    }
    Ok(out)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SignatureManifest {
    #[serde(default)]
    layers: Vec<LayerDescriptor>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LayerDescriptor {
    media_type: Option<String>,
    digest: String,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

/// Checks the cosign signatures of `repository@digest` against `policy`. `Err` means the
/// registry could not be read (the answer is unknown); a missing or bad signature is a
/// `Rejected` verdict with the reason in plain words.
pub async fn verify(
    client: &RegistryClient,
    policy: &TrustPolicy,
    repository: &Repository,
    digest: &Digest,
) -> Result<Verdict, RegistryError> {
    let tag = attached_tag(digest, "sig");
    let Some((bytes, _)) = client.manifest(repository, &tag).await? else {
        return Ok(Verdict::Rejected {
            reason: format!("not signed: {repository} has no cosign signature for {} (no tag {tag})", digest.short()),
        });
    };
    let manifest: SignatureManifest = serde_json::from_slice(&bytes).map_err(|e| {
        RegistryError::new(ErrorKind::Permanent, format!("reading {repository}:{tag}"), format!("not a manifest: {e}"))
    })?;
    let layers: Vec<&LayerDescriptor> =
        manifest.layers.iter().filter(|l| l.media_type.as_deref() == Some(SIMPLE_SIGNING)).collect();
    if layers.is_empty() {
        return Ok(Verdict::Rejected { reason: format!("{repository}:{tag} holds no cosign signature payload") });
    }
    let certified =
        if !policy.keyless.is_empty() && layers.iter().any(|l| l.annotations.contains_key(CERTIFICATE_ANNOTATION)) {
            certificates(client, policy, repository, digest).await?
        } else {
            HashMap::new()
        };
    let mut signers = Vec::new();
    let mut problems = Vec::new();
    for layer in layers {
        let layer_digest: Digest = match layer.digest.parse() {
            Ok(d) => d,
            Err(_) => {
                let named = super::error::quoted(&layer.digest);
                problems.push(format!("a signature layer has an invalid digest {named}"));
                continue;
            }
        };
        let Some(payload) = client.small_blob(repository, &layer_digest, PAYLOAD_LIMIT).await? else {
            problems.push(format!("the payload {} of {tag} is missing from the registry", layer_digest.short()));
            continue;
        };
        let signature = layer.annotations.get(SIGNATURE_ANNOTATION).cloned().unwrap_or_default();
        match check_layer(policy, digest, layer, &payload, certified.get(&(layer.digest.clone(), signature))) {
            Ok(mut found) => signers.append(&mut found),
            Err(problem) => problems.push(problem),
        }
    }
    if signers.is_empty() {
        problems.sort();
        problems.dedup();
        return Ok(Verdict::Rejected { reason: problems.join("; ") });
    }
    signers.sort();
    signers.dedup();
    Ok(Verdict::Verified { signers })
}

/// The signers of one layer the policy accepts, or why there are none.
fn check_layer(
    policy: &TrustPolicy,
    digest: &Digest,
    layer: &LayerDescriptor,
    payload: &[u8],
    certificate: Option<&CertificateSignature>,
) -> Result<Vec<Signer>, String> {
    let signing: SimpleSigning = serde_json::from_slice(payload)
        .map_err(|_| "a signature payload is not a cosign simple-signing document".to_string())?;
    let signed = &signing.critical.image.docker_manifest_digest;
    if signed != digest.as_str() {
        let hex = signed.split_once(':').map_or(signed.as_str(), |(_, h)| h);
        // Only what can be part of a digest is shown of what the payload says.
        let short: String = hex.chars().filter(char::is_ascii_hexdigit).take(12).collect();
        return Err(format!(
            "a signature is for another digest ({short}), not {}: the tag moved after signing, or the signature was \
             copied from another image",
            digest.short()
        ));
    }
    let signature = layer
        .annotations
        .get(SIGNATURE_ANNOTATION)
        .ok_or_else(|| "a signature layer carries no signature".to_string())?;
    let verifies = |key: &CosignVerificationKey| {
        key.verify_signature(Signature::Base64Encoded(signature.as_bytes()), payload).is_ok()
    };
    let mut signers: Vec<Signer> = policy
        .keys
        .iter()
        .filter(|k| verifies(&k.key))
        .map(|k| Signer::Key { key: k.name.clone(), fingerprint: k.fingerprint.clone() })
        .collect();
    let mut problem = None;
    if layer.annotations.contains_key(CERTIFICATE_ANNOTATION) && !policy.keyless.is_empty() {
        match certificate {
            None => {
                problem = Some(
                    "a keyless signature's certificate is not trusted: it does not chain to the trust root, or its \
                     Rekor bundle is missing or not signed by a log of the trust root"
                        .to_string(),
                )
            }
            Some(c) if !verifies(&c.verification_key) => {
                problem = Some("a keyless signature does not verify with its own certificate".to_string())
            }
            Some(c) => match policy.accepts(c) {
                Some(signer) => signers.push(signer),
                None => {
                    let identity = match &c.subject {
                        CertificateSubject::Email(e) | CertificateSubject::Uri(e) => e.clone(),
                    };
                    problem = Some(format!(
                        "signed by {identity} (issuer {}), which the policy does not accept (accepted: {})",
                        c.issuer.as_deref().unwrap_or("none"),
                        policy.describe()
                    ))
                }
            },
        }
    }
    if signers.is_empty() {
        return Err(problem
            .unwrap_or_else(|| format!("a signature does not verify with any accepted key ({})", policy.describe())));
    }
    let optional = signing.optional.as_ref().map(|o| &o.extra);
    let missing: Vec<String> = policy
        .annotations
        .iter()
        .filter(|(k, v)| optional.and_then(|o| o.get(*k)).and_then(|x| x.as_str()) != Some(v.as_str()))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "signed by {}, but without the required annotation{} {}",
            Verdict::signers_text(&signers),
            if missing.len() == 1 { "" } else { "s" },
            missing.join(", ")
        ));
    }
    Ok(signers)
}

/// Keyless certificates sigstore trusts for the signature layers of `digest`, by layer digest
/// and signature (two keyless signatures of one image usually share their payload).
async fn certificates(
    client: &RegistryClient,
    policy: &TrustPolicy,
    repository: &Repository,
    digest: &Digest,
) -> Result<HashMap<(String, String), CertificateSignature>, RegistryError> {
    let operation = &format!("checking keyless signatures of {repository}@{digest}");
    let Some(root) = &policy.trust_root else {
        return Ok(HashMap::new());
    };
    let manual = sigstore::trust::ManualTrustRoot {
        fulcio_certs: root.fulcio.iter().map(|c| rustls_pki_types::CertificateDer::from(c.as_slice())).collect(),
        rekor_keys: root.rekor.clone(),
        ctfe_keys: BTreeMap::new(),
    };
    let limit = client.options().timeout * 4;
    let layers = client
        .with_sigstore(&repository.host, operation, limit, |config, auth| async move {
            let sigstore_error =
                |e: sigstore::errors::SigstoreError| RegistryError::new(ErrorKind::Permanent, operation, e.to_string());
            let mut cosign = sigstore::cosign::ClientBuilder::default()
                .with_oci_client_config(config)
                .with_trust_repository(&manual)
                .map_err(sigstore_error)?
                .build()
                .map_err(sigstore_error)?;
            let reference = sigstore::registry::OciReference::with_digest(
                repository.host.clone(),
                repository.path.clone(),
                digest.to_string(),
            );
            cosign
                .trusted_signature_layers(&auth, &reference)
                .await
                .map_err(|e| RegistryError::new(ErrorKind::Transient, operation, e.to_string()))
        })
        .await?;
    Ok(layers
        .into_iter()
        .filter_map(|l| {
            let signature = l.signature.unwrap_or_default();
            l.certificate_signature.map(|c| ((l.oci_digest, signature), c))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attached_tags_follow_cosign() {
        let d: Digest = format!("sha256:{}", "ab".repeat(32)).parse().unwrap();
        assert_eq!(attached_tag(&d, "sig"), format!("sha256-{}.sig", "ab".repeat(32)));
        assert_eq!(attached_tag(&d, ""), format!("sha256-{}", "ab".repeat(32)));
    }

    /// Regression: a payload naming a digest with multi-byte characters was cut by bytes (a
    /// panic).
    #[test]
    fn a_payload_for_a_strange_digest_is_a_reason_not_a_panic() {
        let policy =
            TrustPolicy { keys: Vec::new(), keyless: Vec::new(), trust_root: None, annotations: BTreeMap::new() };
        let digest: Digest = format!("sha256:{}", "ab".repeat(32)).parse().unwrap();
        let layer = LayerDescriptor { media_type: None, digest: digest.to_string(), annotations: BTreeMap::new() };
        // Byte 12 falls inside a character.
        let signed = format!("sha256:x{}\u{1b}[2J", "€".repeat(40));
        let payload = serde_json::json!({
            "critical": {"identity": {"docker-reference": "x"}, "image": {"docker-manifest-digest": signed}, "type": "cosign container image signature"},
            "optional": null
        });
        let reason = check_layer(&policy, &digest, &layer, payload.to_string().as_bytes(), None).unwrap_err();
        assert!(reason.contains("is for another digest (2)"), "{reason}");
        assert!(!reason.contains('\u{1b}'), "{reason}");
    }

    #[test]
    fn rejects_what_is_not_a_public_key() {
        let err = TrustedKey::from_pem("keys/x.pub", b"hello").err().unwrap().to_string();
        assert!(err.contains("keys/x.pub is not a PEM public key"), "{err}");
    }

    #[test]
    fn the_example_policies_load() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("example-repo");
        let state = crate::desired::load(&crate::desired::DirectorySource::new(&root).unwrap()).unwrap();
        let policies = policies(&state, |f| Ok(std::fs::read(root.join(f))?)).unwrap();
        let vendor = &policies["vendor-base"];
        assert_eq!(vendor.keys.len(), 1);
        assert!(vendor.keys[0].fingerprint.starts_with("sha256:") && vendor.keys[0].fingerprint.len() == 71);
    }

    #[test]
    fn a_policy_names_the_document_and_field_of_an_unusable_key() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("example-repo");
        let state = crate::desired::load(&crate::desired::DirectorySource::new(&root).unwrap()).unwrap();
        let err = policies(&state, |_| Ok(b"not a key".to_vec())).err().unwrap().to_string();
        assert!(err.contains("mirrors/runtimes.yaml:") && err.contains("spec.signatures.keys[0]"), "{err}");
        assert!(err.contains("keys/vendor.pub is not a PEM public key"), "{err}");
    }

    #[test]
    fn trust_root_needs_a_ca_and_a_log() {
        let err = TrustRoot::from_json("root.json", br#"{"tlogs": []}"#).err().unwrap().to_string();
        assert!(err.contains("no certificate authority"), "{err}");
        let err = TrustRoot::from_json("root.json", b"[").err().unwrap().to_string();
        assert!(err.contains("not a Sigstore trusted_root.json"), "{err}");
    }
}

//! Test images made here and pushed to a test registry: gzip layers of seeded random bytes,
//! OCI or Docker schema2 manifests, and multi-platform indexes sharing a base layer.

use bytes::Bytes;
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use sha2::{Digest as _, Sha256};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

pub fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect::<String>())
}

/// A gzip layer of `size` pseudo-random bytes (stored, not compressed: quick to make and
/// still a valid gzip stream).
pub fn layer(seed: u64, size: usize) -> Bytes {
    use std::io::Write;
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut data = vec![0u8; size];
    rng.fill(&mut data);
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::none());
    encoder.write_all(&data).unwrap();
    Bytes::from(encoder.finish().unwrap())
}

/// A gzip layer that is a real tar holding one file of `size` seeded random bytes, as a
/// container runtime that unpacks images needs, and its diff ID (the digest of the tar).
pub fn tar_layer(seed: u64, size: usize) -> (Bytes, String) {
    use std::io::Write;
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut data = vec![0u8; size];
    rng.fill(&mut data);
    let mut header = tar::Header::new_gnu();
    header.set_size(size as u64);
    header.set_mode(0o644);
    header.set_mtime(1_700_000_000);
    let mut builder = tar::Builder::new(Vec::new());
    builder.append_data(&mut header, format!("data/file-{seed}"), data.as_slice()).unwrap();
    let tar = builder.into_inner().unwrap();
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(&tar).unwrap();
    (Bytes::from(encoder.finish().unwrap()), digest_of(&tar))
}

/// Pushes images to one registry, anonymously or with basic auth.
pub struct Pusher {
    client: Client,
    host: String,
    auth: RegistryAuth,
    docker: bool,
}

impl Pusher {
    pub fn new(host: &str, ca_pem: Option<&str>, auth: Option<(&str, &str)>) -> Pusher {
        let config = ClientConfig {
            protocol: if ca_pem.is_some() { ClientProtocol::Https } else { ClientProtocol::Http },
            extra_root_certificates: ca_pem
                .map(|p| vec![Certificate { encoding: CertificateEncoding::Pem, data: p.as_bytes().to_vec() }])
                .unwrap_or_default(),
            ..ClientConfig::default()
        };
        Pusher {
            client: Client::new(config),
            host: host.to_string(),
            auth: auth.map_or(RegistryAuth::Anonymous, |(u, p)| RegistryAuth::Basic(u.into(), p.into())),
            docker: false,
        }
    }

    /// Pushes Docker schema2 manifests and lists instead of OCI ones.
    pub fn docker(mut self) -> Pusher {
        self.docker = true;
        self
    }

    fn reference(&self, repo: &str, reference: &str) -> Reference {
        if reference.contains(':') {
            Reference::with_digest(self.host.clone(), repo.into(), reference.into())
        } else {
            Reference::with_tag(self.host.clone(), repo.into(), reference.into())
        }
    }

    pub async fn blob(&self, repo: &str, data: Bytes) -> String {
        let digest = digest_of(&data);
        let reference = self.reference(repo, &digest);
        self.client.auth(&reference, &self.auth, oci_client::RegistryOperation::Push).await.unwrap();
        if !self.client.blob_exists(&reference, &digest).await.unwrap() {
            self.client.push_blob(&reference, data, &digest).await.unwrap();
        }
        digest
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    /// Pushes manifest bytes as they are under `reference` (a tag or a digest).
    pub async fn raw_manifest(&self, repo: &str, reference: &str, body: Vec<u8>, media_type: &str) -> String {
        self.manifest(repo, reference, body, media_type).await
    }

    async fn manifest(&self, repo: &str, reference: &str, body: Vec<u8>, media_type: &str) -> String {
        let digest = digest_of(&body);
        let r = self.reference(repo, reference);
        self.client.auth(&r, &self.auth, oci_client::RegistryOperation::Push).await.unwrap();
        self.client.push_manifest_raw(&r, body, media_type.parse().unwrap()).await.unwrap();
        digest
    }

    /// An image manifest with these layers (and a config naming `platform`), pushed under
    /// `reference` (a tag, or `None` to push by digest). Returns (digest, size).
    pub async fn image(&self, repo: &str, tag: Option<&str>, layers: &[Bytes], platform: &str) -> (String, usize) {
        let (os, arch) = platform.split_once('/').unwrap();
        let config = Bytes::from(format!(
            r#"{{"architecture":"{arch}","os":"{os}","rootfs":{{"type":"layers","diff_ids":[]}},"config":{{}}}}"#
        ));
        let config_size = config.len();
        let config_digest = self.blob(repo, config).await;
        let mut layer_json = Vec::new();
        for l in layers {
            let size = l.len();
            let d = self.blob(repo, l.clone()).await;
            let media = if self.docker {
                "application/vnd.docker.image.rootfs.diff.tar.gzip"
            } else {
                "application/vnd.oci.image.layer.v1.tar+gzip"
            };
            layer_json.push(format!(r#"{{"mediaType":"{media}","digest":"{d}","size":{size}}}"#));
        }
        let (media_type, config_media) = if self.docker {
            (DOCKER_MANIFEST, "application/vnd.docker.container.image.v1+json")
        } else {
            (OCI_MANIFEST, "application/vnd.oci.image.config.v1+json")
        };
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{media_type}","config":{{"mediaType":"{config_media}","digest":"{config_digest}","size":{config_size}}},"layers":[{}]}}"#,
            layer_json.join(",")
        )
        .into_bytes();
        let size = body.len();
        let digest = digest_of(&body);
        let reference = tag.map_or(digest.clone(), str::to_string);
        self.manifest(repo, &reference, body, media_type).await;
        (digest, size)
    }

    /// An image a container runtime can pull and unpack: one tar layer and a config whose
    /// diff IDs match it, for this machine's platform. Pushed under `tag`; returns the manifest
    /// digest.
    pub async fn runnable_image(&self, repo: &str, tag: &str, seed: u64) -> String {
        let (layer, diff_id) = tar_layer(seed, 4096);
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            other => other,
        };
        let config = Bytes::from(format!(
            r#"{{"architecture":"{arch}","os":"linux","rootfs":{{"type":"layers","diff_ids":["{diff_id}"]}},"config":{{}}}}"#
        ));
        let config_size = config.len();
        let config_digest = self.blob(repo, config).await;
        let layer_size = layer.len();
        let layer_digest = self.blob(repo, layer).await;
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_digest}","size":{config_size}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{layer_digest}","size":{layer_size}}}]}}"#
        )
        .into_bytes();
        self.manifest(repo, tag, body, OCI_MANIFEST).await
    }

    /// A multi-platform index: one image per platform, each with the shared base layer and a
    /// layer of its own. Returns the index digest.
    pub async fn index(&self, repo: &str, tag: &str, base: &Bytes, platforms: &[&str], seed: u64) -> String {
        let mut entries = Vec::new();
        for (i, platform) in platforms.iter().enumerate() {
            let own = layer(seed * 100 + i as u64, 2048);
            let (digest, size) = self.image(repo, None, &[base.clone(), own], platform).await;
            let (os, arch) = platform.split_once('/').unwrap();
            let media = if self.docker { DOCKER_MANIFEST } else { OCI_MANIFEST };
            entries.push(format!(
                r#"{{"mediaType":"{media}","digest":"{digest}","size":{size},"platform":{{"architecture":"{arch}","os":"{os}"}}}}"#
            ));
        }
        let media_type = if self.docker { DOCKER_LIST } else { OCI_INDEX };
        let body = format!(r#"{{"schemaVersion":2,"mediaType":"{media_type}","manifests":[{}]}}"#, entries.join(","))
            .into_bytes();
        self.manifest(repo, tag, body, media_type).await
    }

    /// The digest under a tag, or `None`.
    pub async fn digest(&self, repo: &str, tag: &str) -> Option<String> {
        let r = self.reference(repo, tag);
        self.client.fetch_manifest_digest(&r, &self.auth).await.ok()
    }

    pub async fn tags(&self, repo: &str) -> Vec<String> {
        let r = self.reference(repo, "latest");
        let mut tags = self.client.list_tags(&r, &self.auth, None, None).await.map(|t| t.tags).unwrap_or_default();
        tags.sort();
        tags
    }

    /// The manifest under a tag, as JSON, or `None`.
    pub async fn manifest_json(&self, repo: &str, tag: &str) -> Option<serde_json::Value> {
        let r = self.reference(repo, tag);
        let accepted = [
            "application/vnd.oci.image.manifest.v1+json",
            "application/vnd.oci.image.index.v1+json",
            "application/vnd.docker.distribution.manifest.v2+json",
            "application/vnd.docker.distribution.manifest.list.v2+json",
        ];
        let (bytes, _) = self.client.pull_manifest_raw(&r, &self.auth, &accepted).await.ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Whether the repository holds a blob.
    pub async fn blob_exists(&self, repo: &str, digest: &str) -> bool {
        let r = self.reference(repo, "latest");
        let mut out = Vec::new();
        self.client.pull_blob(&r, digest, &mut out).await.is_ok()
    }
}

/// The blobs (config and layers) a manifest names; an index names none itself.
pub fn blob_digests(manifest: &serde_json::Value) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(d) = manifest["config"]["digest"].as_str() {
        out.push(d.to_string());
    }
    for layer in manifest["layers"].as_array().into_iter().flatten() {
        if let Some(d) = layer["digest"].as_str() {
            out.push(d.to_string());
        }
    }
    out
}

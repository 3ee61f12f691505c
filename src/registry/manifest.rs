//! Just enough of the OCI and Docker manifest formats to copy images faithfully: which
//! manifests an index names, which blobs a manifest needs, and its media type. Manifests are
//! handled as the exact bytes the registry sent, so digests are preserved.

use std::collections::BTreeSet;

use bytes::Bytes;
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use crate::desired::Digest;

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// Every manifest type Lifeboat copies.
pub const ACCEPTED: &[&str] = &[OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST];

/// Annotation on an index Lifeboat filtered to some platforms: the upstream digest it came from.
pub const SOURCE_DIGEST_ANNOTATION: &str = "dev.lifeboat.source.digest";

pub fn sha256(bytes: &[u8]) -> Digest {
    let hex: String = Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}").parse().expect("a sha256 digest is well formed")
}

/// A content descriptor: what a manifest points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    pub digest: Digest,
    pub size: u64,
    pub media_type: Option<String>,
    /// `os/arch[/variant]` of an index entry.
    pub platform: Option<String>,
}

/// A parsed manifest, with the bytes it was parsed from.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub bytes: Bytes,
    pub digest: Digest,
    pub media_type: String,
    json: Value,
}

impl Manifest {
    pub fn parse(bytes: Bytes, digest: Digest) -> Result<Manifest, String> {
        let json: Value = serde_json::from_slice(&bytes).map_err(|e| format!("manifest {digest} is not JSON: {e}"))?;
        let media_type = match json.get("mediaType").and_then(Value::as_str) {
            Some(m) => m.to_string(),
            None if json.get("manifests").is_some() => OCI_INDEX.to_string(),
            None if json.get("layers").is_some() => OCI_MANIFEST.to_string(),
            None => return Err(format!("manifest {digest} is neither an image manifest nor an index")),
        };
        if !ACCEPTED.contains(&media_type.as_str()) {
            return Err(format!("manifest {digest} has media type {media_type}, which Lifeboat does not copy"));
        }
        Ok(Manifest { bytes, digest, media_type, json })
    }

    pub fn is_index(&self) -> bool {
        self.media_type == OCI_INDEX || self.media_type == DOCKER_LIST
    }

    /// The manifests of an index.
    pub fn children(&self) -> Result<Vec<Descriptor>, String> {
        list(&self.json, "manifests", &self.digest)
    }

    /// The blobs of an image manifest: config first, then layers, without repeats.
    pub fn blobs(&self) -> Result<Vec<Descriptor>, String> {
        let mut out = Vec::new();
        if let Some(config) = self.json.get("config") {
            out.push(descriptor(config, &self.digest)?);
        }
        out.extend(list(&self.json, "layers", &self.digest)?);
        let mut seen = BTreeSet::new();
        out.retain(|d| seen.insert(d.digest.clone()));
        Ok(out)
    }

    /// The upstream digest recorded on an index Lifeboat filtered, if any.
    pub fn source_digest(&self) -> Option<Digest> {
        self.json.get("annotations")?.get(SOURCE_DIGEST_ANNOTATION)?.as_str()?.parse().ok()
    }

    /// An index of only the entries whose platform is in `platforms`, annotated with this
    /// index's digest so later passes can tell which upstream content it holds.
    pub fn filtered(&self, platforms: &BTreeSet<String>) -> Result<Manifest, String> {
        let mut json = self.json.clone();
        let entries = json.get_mut("manifests").and_then(Value::as_array_mut).ok_or("not an index")?;
        entries.retain(|entry| platform_of(entry).is_some_and(|p| platforms.contains(&p)));
        if entries.is_empty() {
            return Err(format!(
                "index {} has none of the platforms {}",
                self.digest,
                platforms.iter().cloned().collect::<Vec<_>>().join(", ")
            ));
        }
        let annotations = json
            .as_object_mut()
            .expect("an index is a JSON object")
            .entry("annotations")
            .or_insert_with(|| Value::Object(Default::default()));
        if let Some(map) = annotations.as_object_mut() {
            map.insert(SOURCE_DIGEST_ANNOTATION.into(), Value::String(self.digest.to_string()));
        }
        let bytes = Bytes::from(serde_json::to_vec(&json).expect("JSON serializes"));
        let digest = sha256(&bytes);
        Manifest::parse(bytes, digest)
    }
}

fn platform_of(entry: &Value) -> Option<String> {
    let p = entry.get("platform")?;
    let os = p.get("os")?.as_str()?;
    let arch = p.get("architecture")?.as_str()?;
    Some(match p.get("variant").and_then(Value::as_str) {
        Some(v) => format!("{os}/{arch}/{v}"),
        None => format!("{os}/{arch}"),
    })
}

fn descriptor(value: &Value, parent: &Digest) -> Result<Descriptor, String> {
    let digest = value
        .get("digest")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("manifest {parent} has a descriptor without digest"))?
        .parse()
        .map_err(|_: String| {
            let text = value.get("digest").and_then(Value::as_str).unwrap_or_default();
            format!("manifest {parent} names {}, which is not a digest", super::error::quoted(text))
        })?;
    Ok(Descriptor {
        digest,
        size: value.get("size").and_then(Value::as_u64).unwrap_or(0),
        media_type: value.get("mediaType").and_then(Value::as_str).map(str::to_string),
        platform: platform_of(value),
    })
}

fn list(json: &Value, field: &str, parent: &Digest) -> Result<Vec<Descriptor>, String> {
    match json.get(field) {
        None => Ok(Vec::new()),
        Some(Value::Array(items)) => items.iter().map(|v| descriptor(v, parent)).collect(),
        Some(_) => Err(format!("manifest {parent}: `{field}` is not a list")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    fn index() -> Manifest {
        let json = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[
              {{"mediaType":"{OCI_MANIFEST}","digest":"{D1}","size":10,"platform":{{"os":"linux","architecture":"amd64"}}}},
              {{"mediaType":"{OCI_MANIFEST}","digest":"{D2}","size":20,"platform":{{"os":"linux","architecture":"arm64","variant":"v8"}}}}]}}"#
        );
        let bytes = Bytes::from(json);
        let digest = sha256(&bytes);
        Manifest::parse(bytes, digest).unwrap()
    }

    #[test]
    fn reads_children_and_platforms() {
        let idx = index();
        assert!(idx.is_index());
        let children = idx.children().unwrap();
        assert_eq!(children[1].platform.as_deref(), Some("linux/arm64/v8"));
        assert_eq!(children[1].size, 20);
    }

    #[test]
    fn filtering_keeps_the_platforms_and_records_the_source() {
        let idx = index();
        let only = idx.filtered(&BTreeSet::from(["linux/arm64/v8".to_string()])).unwrap();
        assert_ne!(only.digest, idx.digest);
        assert_eq!(only.children().unwrap().len(), 1);
        assert_eq!(only.source_digest(), Some(idx.digest.clone()));
        assert!(idx.filtered(&BTreeSet::from(["windows/amd64".to_string()])).is_err());
    }

    #[test]
    fn a_descriptor_with_a_bogus_digest_is_named_briefly() {
        let bogus = format!("sha256:{}\u{1b}[31m", "x".repeat(100_000));
        let bytes =
            Bytes::from(serde_json::json!({"schemaVersion": 2, "layers": [{"digest": bogus, "size": 1}]}).to_string());
        let m = Manifest::parse(bytes.clone(), sha256(&bytes)).unwrap();
        let error = m.blobs().unwrap_err();
        assert!(error.contains("which is not a digest") && error.len() < 400, "{error}");
        assert!(!error.contains('\u{1b}'), "{error}");
    }

    #[test]
    fn manifests_without_media_type_are_recognised() {
        let bytes = Bytes::from(format!(
            r#"{{"schemaVersion":2,"config":{{"digest":"{D1}","size":1}},"layers":[{{"digest":"{D2}","size":2}},{{"digest":"{D2}","size":2}}]}}"#
        ));
        let m = Manifest::parse(bytes.clone(), sha256(&bytes)).unwrap();
        assert_eq!(m.media_type, OCI_MANIFEST);
        assert_eq!(m.blobs().unwrap().len(), 2, "repeated layers are copied once");
    }
}

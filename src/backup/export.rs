//! Export: reads a BackupPolicy's images from the mirror — never from upstream — and streams
//! them into an archive. First every manifest is read and every blob named (small, held in
//! memory); then each blob streams from the registry through a bounded channel into the
//! archive writer on the blocking pool, so no blob is ever held whole in memory and nothing
//! but the archive itself touches the disk.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read, Write};

use anyhow::Context;
use bytes::Bytes;
use futures_util::StreamExt;

use super::archive::{ArchiveWriter, METADATA, METADATA_SIGNATURE};
use super::metadata::{self, Attached, Image, Metadata, Missing, StoredManifest};
use crate::desired::{Compression, Digest, Repository};
use crate::observe::Selected;
use crate::registry::manifest::{self, Manifest};
use crate::registry::{OciRegistry, Registry as _, RegistryError, Verdict};

/// Tags cosign attaches to a digest; the referrers fallback tag (no suffix) is looked up too.
const ATTACHED_SUFFIXES: [&str; 4] = ["sig", "att", "sbom", ""];

/// Everything an archive will hold, known before a byte is written.
#[derive(Debug, Default)]
pub struct Contents {
    pub images: Vec<Image>,
    pub missing: Vec<Missing>,
    /// Every manifest, by digest.
    pub manifests: BTreeMap<Digest, Manifest>,
    /// Layer and config blobs, each with a repository to read it from and its size.
    pub blobs: BTreeMap<Digest, (Repository, u64)>,
}

impl Contents {
    /// Reads the manifests of every selected image and its attached tags from the mirror,
    /// and checks signatures where the image's MirrorSet has a policy.
    pub async fn collect(registry: &OciRegistry, selected: &[Selected]) -> Result<Contents, RegistryError> {
        let mut contents = Contents::default();
        for image in selected {
            let Some((bytes, digest)) = registry.client.manifest(&image.repository, &image.reference).await? else {
                contents.missing.push(Missing {
                    reference: image.full(),
                    reason: "the mirror does not hold this image (not mirrored yet, or pruned)".into(),
                });
                continue;
            };
            let top = parse(&image.repository, bytes, digest)?;
            let mut subjects = vec![top.digest.clone()];
            let mut platforms = Vec::new();
            if top.is_index() {
                for child in top.children().map_err(|e| permanent(&image.repository, e))? {
                    platforms.extend(child.platform.clone());
                    subjects.push(child.digest.clone());
                }
            }
            contents.add_tree(registry, &image.repository, top.clone()).await?;
            let mut attached = Vec::new();
            for subject in &subjects {
                for suffix in ATTACHED_SUFFIXES {
                    let tag = crate::registry::cosign::attached_tag(subject, suffix);
                    let Some((bytes, digest)) = registry.client.manifest(&image.repository, &tag).await? else {
                        continue;
                    };
                    let manifest = parse(&image.repository, bytes, digest)?;
                    attached.push(Attached {
                        tag,
                        digest: manifest.digest.clone(),
                        media_type: manifest.media_type.clone(),
                    });
                    contents.add_tree(registry, &image.repository, manifest).await?;
                }
            }
            let signature = match &image.mirror_set {
                Some(set) if registry.checks_signatures(set) => {
                    match registry.verify(set, &image.repository, &top.digest).await? {
                        Verdict::Verified { signers } => format!("verified: {}", Verdict::signers_text(&signers)),
                        Verdict::Rejected { reason } => format!("not verified: {reason}"),
                    }
                }
                Some(set) => format!("not checked: MirrorSet {set} has no signature policy"),
                None => "not checked: listed by the policy, not by a MirrorSet".into(),
            };
            contents.images.push(Image {
                reference: image.full(),
                path: image.repository.path.clone(),
                tag: (!image.reference.contains(':')).then(|| image.reference.clone()),
                digest: top.digest.clone(),
                media_type: top.media_type.clone(),
                size: top.bytes.len() as u64,
                platforms,
                mirror_set: image.mirror_set.clone(),
                source: image.source.clone(),
                signature,
                attached,
            });
        }
        Ok(contents)
    }

    /// Adds a manifest, the manifests it names and their blobs.
    async fn add_tree(
        &mut self,
        registry: &OciRegistry,
        repository: &Repository,
        top: Manifest,
    ) -> Result<(), RegistryError> {
        let mut queue = vec![top];
        while let Some(manifest) = queue.pop() {
            if self.manifests.contains_key(&manifest.digest) {
                continue;
            }
            if manifest.is_index() {
                for child in manifest.children().map_err(|e| permanent(repository, e))? {
                    if self.manifests.contains_key(&child.digest) {
                        continue;
                    }
                    let (bytes, digest) =
                        registry.client.manifest(repository, child.digest.as_str()).await?.ok_or_else(|| {
                            RegistryError::new(
                                crate::registry::ErrorKind::NotFound,
                                format!("reading {repository}@{}", child.digest),
                                "the mirror's index names a manifest it does not hold",
                            )
                        })?;
                    queue.push(parse(repository, bytes, digest)?);
                }
            } else {
                for blob in manifest.blobs().map_err(|e| permanent(repository, e))? {
                    self.blobs.entry(blob.digest).or_insert_with(|| (repository.clone(), blob.size));
                }
            }
            self.manifests.insert(manifest.digest.clone(), manifest);
        }
        Ok(())
    }

    /// The blobs the images need that `base` does not already hold.
    pub fn without(&mut self, base: &BTreeSet<Digest>) -> Vec<Digest> {
        let left: Vec<Digest> = self.blobs.keys().filter(|d| base.contains(*d)).cloned().collect();
        for digest in &left {
            self.blobs.remove(digest);
        }
        left
    }
}

fn parse(repository: &Repository, bytes: Bytes, digest: Digest) -> Result<Manifest, RegistryError> {
    Manifest::parse(bytes, digest).map_err(|e| permanent(repository, e))
}

fn permanent(repository: &Repository, message: String) -> RegistryError {
    RegistryError::new(crate::registry::ErrorKind::Permanent, format!("reading {repository} for the backup"), message)
}

/// The `index.json` of the layout: one entry per tag (images and attached tags), named by
/// full reference. Docker types are listed under their OCI equivalents, as skopeo only looks
/// entries up among OCI types; the stored bytes, and so the digests, are unchanged.
fn index_json(contents: &Contents) -> Vec<u8> {
    let mut entries = Vec::new();
    let mut entry = |reference: String, digest: &Digest, media_type: &str| {
        let size = contents.manifests.get(digest).map_or(0, |m| m.bytes.len());
        let listed = match media_type {
            manifest::DOCKER_MANIFEST => manifest::OCI_MANIFEST,
            manifest::DOCKER_LIST => manifest::OCI_INDEX,
            other => other,
        };
        entries.push(serde_json::json!({
            "mediaType": listed,
            "digest": digest,
            "size": size,
            "annotations": {"org.opencontainers.image.ref.name": reference},
        }));
    };
    for image in &contents.images {
        entry(image.reference.clone(), &image.digest, &image.media_type);
        let repository = image.repository();
        for a in &image.attached {
            entry(format!("{repository}:{}", a.tag), &a.digest, &a.media_type);
        }
    }
    serde_json::to_vec_pretty(&serde_json::json!({"schemaVersion": 2, "manifests": entries}))
        .expect("index.json serializes")
}

/// Signs the metadata bytes, returning the base64 signature.
pub type SignFn = Box<dyn Fn(&[u8]) -> anyhow::Result<String> + Send + Sync>;

/// What the caller knows about the archive beyond its contents.
pub struct Header {
    pub policy: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub desired_revision: Option<String>,
    pub compression: Compression,
    pub base: Option<String>,
    pub in_base: Vec<Digest>,
    /// Signs the metadata bytes, returning the base64 signature.
    pub sign: Option<SignFn>,
}

/// What a written archive holds.
#[derive(Debug, Clone)]
pub struct Written {
    pub metadata: Metadata,
    pub aggregate: String,
}

/// One file's bytes on their way from the registry to the archive writer.
enum Chunk {
    Data(Bytes),
    End,
}

/// Reads a file's chunks from the channel, on the blocking side.
struct ChannelReader<'a> {
    rx: &'a mut tokio::sync::mpsc::Receiver<Chunk>,
    current: Bytes,
    done: bool,
}

impl Read for ChannelReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() && !self.done {
            match self.rx.blocking_recv() {
                Some(Chunk::Data(bytes)) => self.current = bytes,
                Some(Chunk::End) => self.done = true,
                None => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the download stopped")),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        let _ = self.current.split_to(n);
        Ok(n)
    }
}

/// A file to add, in archive order; blobs carry no bytes yet, they are streamed.
enum Entry {
    Small(String, Vec<u8>),
    Streamed(String, u64, Digest),
}

/// Streams the contents into `out` as an archive, returning `out` and what was written.
/// `progress` is called with the bytes of each blob written.
pub async fn write<W: Write + Send + 'static>(
    registry: &OciRegistry,
    contents: Contents,
    header: Header,
    out: W,
    progress: impl Fn(u64) + Send + Sync + 'static,
) -> anyhow::Result<(W, Written)> {
    let metadata = Metadata {
        format: metadata::FORMAT.into(),
        lifeboat_version: env!("CARGO_PKG_VERSION").into(),
        policy: header.policy.clone(),
        created_at: header.created_at,
        desired_revision: header.desired_revision.clone(),
        compression: header.compression,
        base: header.base.clone(),
        images: contents.images.clone(),
        missing: contents.missing.clone(),
        manifests: contents
            .manifests
            .values()
            .map(|m| StoredManifest {
                digest: m.digest.clone(),
                media_type: m.media_type.clone(),
                size: m.bytes.len() as u64,
            })
            .collect(),
        blobs: metadata::Blobs {
            stored: contents.blobs.len() as u64,
            // Sizes come from manifests: a sum that cannot be stored saturates.
            stored_bytes: contents.blobs.values().fold(0u64, |sum, (_, size)| sum.saturating_add(*size)),
            in_base: header.in_base.clone(),
        },
    };
    // Metadata and manifests come first, so a restore knows what every blob is for before
    // the blob arrives, and streams the archive once.
    let metadata_bytes = serde_json::to_vec_pretty(&metadata).context("serializing the metadata")?;
    let signature = header.sign.as_ref().map(|sign| sign(&metadata_bytes)).transpose()?;
    let mut files = vec![
        Entry::Small("oci-layout".into(), br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec()),
        Entry::Small(METADATA.into(), metadata_bytes),
        Entry::Small("index.json".into(), index_json(&contents)),
    ];
    if let Some(signature) = signature {
        files.push(Entry::Small(METADATA_SIGNATURE.into(), signature.into_bytes()));
    }
    for (digest, manifest) in &contents.manifests {
        files.push(Entry::Small(blob_path(digest)?, manifest.bytes.to_vec()));
    }
    for (digest, (_, size)) in &contents.blobs {
        files.push(Entry::Streamed(blob_path(digest)?, *size, digest.clone()));
    }
    let streamed: Vec<(Digest, Repository)> =
        contents.blobs.iter().map(|(d, (repository, _))| (d.clone(), repository.clone())).collect();

    // The writer runs on the blocking pool; blob bytes reach it through a bounded channel.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Chunk>(16);
    let compression = header.compression;
    let writer = tokio::task::spawn_blocking(move || -> anyhow::Result<(W, String)> {
        let mut archive = ArchiveWriter::new(out, compression)?;
        for file in files {
            match file {
                Entry::Small(path, bytes) => {
                    archive.add(&path, bytes.len() as u64, bytes.as_slice())?;
                }
                Entry::Streamed(path, size, digest) => {
                    let reader = ChannelReader { rx: &mut rx, current: Bytes::new(), done: false };
                    let hex = archive.add(&path, size, reader)?;
                    anyhow::ensure!(
                        digest.as_str().strip_prefix("sha256:") == Some(hex.as_str()),
                        "the mirror sent blob {digest} with different content (sha256:{hex}); the mirror may be damaged"
                    );
                    progress(size);
                }
            }
        }
        archive.finish_checksums()
    });
    let sent = send_blobs(registry, &streamed, &tx).await;
    drop(tx);
    let written = writer.await.context("the archive writer stopped")?;
    // A registry failure explains a broken stream better than the writer's end-of-file.
    sent?;
    let (out, aggregate) = written?;
    Ok((out, Written { metadata, aggregate }))
}

async fn send_blobs(
    registry: &OciRegistry,
    blobs: &[(Digest, Repository)],
    tx: &tokio::sync::mpsc::Sender<Chunk>,
) -> anyhow::Result<()> {
    for (digest, repository) in blobs {
        let mut stream = registry.client.blob_stream(repository, digest).await?;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.with_context(|| format!("reading blob {digest} from {repository}"))?;
            if tx.send(Chunk::Data(chunk)).await.is_err() {
                return Ok(()); // the writer failed; its error is the one to report
            }
        }
        if tx.send(Chunk::End).await.is_err() {
            return Ok(());
        }
    }
    Ok(())
}

fn blob_path(digest: &Digest) -> anyhow::Result<String> {
    let (algorithm, hex) = digest.as_str().split_once(':').context("a digest without an algorithm")?;
    anyhow::ensure!(algorithm == "sha256", "blob {digest}: only sha256 blobs can be archived");
    Ok(format!("blobs/sha256/{hex}"))
}

//! Restore: pushes an archive's images into a registry, under an optional prefix. The
//! archive is verified first and refused when anything fails; then it is streamed once, with
//! no extraction: metadata and manifests come first in Lifeboat's archives, so each blob's
//! destinations are known when it arrives. Blobs the registry already has are skipped, blobs
//! an incremental archive leaves out are read from its base archives, manifests are pushed
//! after every blob, and tags last, so an interrupted restore leaves no tag pointing at
//! missing content.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, BufRead, Read};
use std::str::FromStr;
use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;
use serde::Serialize;

use super::archive;
use super::metadata::Metadata;
use crate::desired::{Digest, Repository};
use crate::registry::RegistryClient;
use crate::registry::manifest::Manifest;

/// Where restored images go: `registry.example:5000` or `registry.example:5000/restored`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    pub host: String,
    pub prefix: Option<String>,
}

impl FromStr for Destination {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim_end_matches('/');
        let (host, prefix) = match text.split_once('/') {
            Some((host, prefix)) => (host, Some(prefix.to_string())),
            None => (text, None),
        };
        if host.is_empty() || text.contains("://") {
            return Err(format!(
                "`{text}` is not REGISTRY[/PREFIX]: give a host such as registry.internal:5000/restored"
            ));
        }
        if let Some(prefix) = &prefix {
            crate::desired::ImageRef::parse(&format!("{host}/{prefix}:probe"))
                .map_err(|e| format!("`{text}`: the prefix is not a repository path: {e}"))?;
        }
        Ok(Destination { host: host.to_string(), prefix })
    }
}

impl Destination {
    /// The repository an archived image's mirror path goes to.
    pub fn repository(&self, path: &str) -> Repository {
        Repository {
            host: self.host.clone(),
            path: match &self.prefix {
                Some(prefix) => format!("{prefix}/{path}"),
                None => path.to_string(),
            },
        }
    }
}

/// Opens the archive's (decrypted, still compressed) bytes; called once per pass.
pub type Opener = Arc<dyn Fn() -> anyhow::Result<Box<dyn BufRead + Send>> + Send + Sync>;

/// An archive that passed verification.
pub struct Checked {
    pub name: String,
    pub open: Opener,
    pub metadata: Metadata,
    pub files: usize,
}

/// Re-hashes every file of the archive; an archive with any problem is refused.
pub async fn check(name: String, open: Opener) -> anyhow::Result<Checked> {
    let opener = open.clone();
    let verification = tokio::task::spawn_blocking(move || archive::verify(opener()?))
        .await
        .context("verification stopped")?
        .with_context(|| format!("verifying {name}"))?;
    if !verification.passed() {
        anyhow::bail!(
            "{name} failed verification, so nothing was restored:\n  {}\nrun `lifeboat backup verify` on it for details; restore an older archive or a copy",
            verification.problems.join("\n  ")
        );
    }
    let bytes = verification.metadata.with_context(|| format!("{name} has no {}", archive::METADATA))?;
    let metadata = Metadata::parse(&bytes).with_context(|| format!("reading {name}"))?;
    Ok(Checked { name, open, metadata, files: verification.files })
}

/// What a restore did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub images: usize,
    pub tags: usize,
    pub manifests_pushed: usize,
    pub blobs_uploaded: usize,
    pub blobs_present: usize,
    pub blobs_mounted: usize,
    pub bytes_uploaded: u64,
    /// Archives read, the restored one first, then its bases.
    pub archives: Vec<String>,
}

/// What each manifest and blob is needed for, and what is already in place.
struct Needs {
    /// Manifest digest → its media type.
    manifest_types: BTreeMap<Digest, String>,
    manifests: BTreeMap<Digest, Bytes>,
    /// Repositories each manifest goes to.
    manifest_repos: BTreeMap<Digest, BTreeSet<Repository>>,
    /// Repositories each blob goes to (known once every manifest is read).
    blob_repos: BTreeMap<Digest, BTreeSet<Repository>>,
    /// (blob, repository) pairs in place.
    placed: BTreeSet<(Digest, Repository)>,
}

impl Needs {
    fn new(metadata: &Metadata, to: &Destination) -> Needs {
        let mut manifest_repos: BTreeMap<Digest, BTreeSet<Repository>> = BTreeMap::new();
        for image in &metadata.images {
            let repository = to.repository(&image.path);
            manifest_repos.entry(image.digest.clone()).or_default().insert(repository.clone());
            for a in &image.attached {
                manifest_repos.entry(a.digest.clone()).or_default().insert(repository.clone());
            }
        }
        Needs {
            manifest_types: metadata.manifests.iter().map(|m| (m.digest.clone(), m.media_type.clone())).collect(),
            manifests: BTreeMap::new(),
            manifest_repos,
            blob_repos: BTreeMap::new(),
            placed: BTreeSet::new(),
        }
    }

    /// Once every manifest is read: which repositories each manifest (index children
    /// included) and blob goes to.
    fn resolve(&mut self) -> anyhow::Result<()> {
        let parsed: BTreeMap<Digest, Manifest> = self
            .manifests
            .iter()
            .map(|(d, b)| Manifest::parse(b.clone(), d.clone()).map(|m| (d.clone(), m)).map_err(anyhow::Error::msg))
            .collect::<anyhow::Result<_>>()?;
        // Indexes hand their repositories to their children.
        for manifest in parsed.values().filter(|m| m.is_index()) {
            let repos = self.manifest_repos.get(&manifest.digest).cloned().unwrap_or_default();
            for child in manifest.children().map_err(anyhow::Error::msg)? {
                self.manifest_repos.entry(child.digest).or_default().extend(repos.iter().cloned());
            }
        }
        for manifest in parsed.values().filter(|m| !m.is_index()) {
            let repos = self.manifest_repos.get(&manifest.digest).cloned().unwrap_or_default();
            for blob in manifest.blobs().map_err(anyhow::Error::msg)? {
                self.blob_repos.entry(blob.digest).or_default().extend(repos.iter().cloned());
            }
        }
        Ok(())
    }

    fn unplaced(&self, digest: &Digest) -> Vec<Repository> {
        self.blob_repos
            .get(digest)
            .map(|repos| {
                repos.iter().filter(|r| !self.placed.contains(&(digest.clone(), (*r).clone()))).cloned().collect()
            })
            .unwrap_or_default()
    }

    fn missing(&self) -> Vec<(Digest, Repository)> {
        self.blob_repos
            .iter()
            .flat_map(|(d, repos)| repos.iter().map(move |r| (d.clone(), r.clone())))
            .filter(|pair| !self.placed.contains(pair))
            .collect()
    }
}

/// The largest manifest a restore reads from an archive: the size the OCI distribution
/// specification asks registries to accept.
const MANIFEST_LIMIT: u64 = 4 << 20;

/// A blob file of the archive, offered to the async side, which replies what it wants of it.
struct Offer {
    digest: Digest,
    size: u64,
    reply: tokio::sync::oneshot::Sender<Take>,
}

/// What the async side wants of an offered file.
enum Take {
    Skip,
    Whole(tokio::sync::oneshot::Sender<Vec<u8>>),
    Stream(tokio::sync::mpsc::Sender<io::Result<Bytes>>),
}

/// Reads the archive on the blocking pool, offering each blob file in order.
fn offer_files(open: Opener, offers: tokio::sync::mpsc::Sender<Offer>) -> anyhow::Result<()> {
    let mut tar = tar::Archive::new(archive::decompressed(open()?)?);
    for entry in tar.entries().context("reading the archive")? {
        let mut entry = entry.context("reading the archive")?;
        let path = String::from_utf8_lossy(&entry.path_bytes()).trim_start_matches("./").to_string();
        let Some(hex) = path.strip_prefix("blobs/sha256/") else { continue };
        let Ok(digest) = Digest::from_str(&format!("sha256:{hex}")) else { continue };
        let size = entry.header().size().context("reading a tar header")?;
        let (reply, answer) = tokio::sync::oneshot::channel();
        if offers.blocking_send(Offer { digest, size, reply }).is_err() {
            return Ok(()); // the restore stopped; its error is the one to report
        }
        match answer.blocking_recv() {
            Ok(Take::Skip) | Err(_) => {
                io::copy(&mut entry, &mut io::sink()).with_context(|| format!("reading {path}"))?;
            }
            Ok(Take::Whole(to)) => {
                // Only manifests are read whole; the tar header's size is the archive's word.
                anyhow::ensure!(
                    size <= MANIFEST_LIMIT,
                    "{path} is {size} bytes, and a manifest is at most {} MiB: the archive is damaged, or was not \
                     written by Lifeboat",
                    MANIFEST_LIMIT >> 20
                );
                let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
                (&mut entry).take(MANIFEST_LIMIT).read_to_end(&mut bytes).with_context(|| format!("reading {path}"))?;
                let _ = to.send(bytes);
            }
            Ok(Take::Stream(to)) => {
                let mut buf = vec![0u8; 1 << 20];
                loop {
                    let n = entry.read(&mut buf).with_context(|| format!("reading {path}"))?;
                    if n == 0 || to.blocking_send(Ok(Bytes::copy_from_slice(&buf[..n]))).is_err() {
                        break;
                    }
                }
            }
        }
    }
    Ok(())
}

/// Restores `chain` (the archive to restore first, then its base, and so on) into `to`.
/// `progress` is told the bytes of each blob as it is uploaded.
pub async fn restore(
    client: &RegistryClient,
    chain: &[Checked],
    to: &Destination,
    progress: &(dyn Fn(u64) + Sync),
) -> anyhow::Result<Summary> {
    let top = chain.first().context("nothing to restore")?;
    let mut needs = Needs::new(&top.metadata, to);
    let mut summary = Summary::default();
    for (i, archive) in chain.iter().enumerate() {
        if i > 0 && needs.missing().is_empty() {
            break;
        }
        summary.archives.push(archive.name.clone());
        // Each pass places every blob in one more repository at most; a registry that refuses
        // cross-repository mounts needs one pass per repository sharing a blob.
        let mut before = usize::MAX;
        loop {
            pass(client, archive, i == 0, &mut needs, &mut summary, progress).await?;
            let missing = needs.missing();
            if missing.len() >= before || !missing.iter().any(|(d, _)| stored(archive, d)) {
                break;
            }
            before = missing.len();
        }
    }
    if let Some((digest, repository)) = needs.missing().first() {
        anyhow::bail!(
            "blob {digest}, needed in {repository}, is in none of {}: {}",
            summary.archives.join(", "),
            match &chain.last().and_then(|c| c.metadata.base.clone()) {
                Some(base) => format!("the chain continues with {base}, which was not found"),
                None => "the archive is incomplete".to_string(),
            }
        );
    }
    // Manifests after every blob: image manifests, then indexes; all by digest.
    let mut ordered: Vec<(&Digest, &Bytes)> = needs.manifests.iter().collect();
    ordered.sort_by_key(|(d, _)| is_index(&needs.manifest_types[*d]));
    for (digest, bytes) in ordered {
        let media_type = &needs.manifest_types[digest];
        for repository in needs.manifest_repos.get(digest).into_iter().flatten() {
            client.push_manifest(repository, digest.as_str(), bytes, media_type).await?;
            summary.manifests_pushed += 1;
        }
    }
    // Tags last.
    for image in &top.metadata.images {
        let repository = to.repository(&image.path);
        let tags =
            image.tag.iter().map(|t| (t, &image.digest)).chain(image.attached.iter().map(|a| (&a.tag, &a.digest)));
        for (tag, digest) in tags {
            let bytes =
                needs.manifests.get(digest).with_context(|| format!("manifest {digest} is not in the archive"))?;
            client.push_manifest(&repository, tag, bytes, &needs.manifest_types[digest]).await?;
            summary.tags += 1;
        }
        summary.images += 1;
    }
    Ok(summary)
}

fn is_index(media_type: &str) -> bool {
    media_type == crate::registry::manifest::OCI_INDEX || media_type == crate::registry::manifest::DOCKER_LIST
}

fn stored(archive: &Checked, digest: &Digest) -> bool {
    !archive.metadata.blobs.in_base.contains(digest)
}

/// One streaming pass over an archive.
async fn pass(
    client: &RegistryClient,
    archive: &Checked,
    read_manifests: bool,
    needs: &mut Needs,
    summary: &mut Summary,
    progress: &(dyn Fn(u64) + Sync),
) -> anyhow::Result<()> {
    let (tx, mut offers) = tokio::sync::mpsc::channel(4);
    let open = archive.open.clone();
    let reader = tokio::task::spawn_blocking(move || offer_files(open, tx));
    let result = async {
        let mut resolved = !read_manifests;
        while let Some(Offer { digest, size, reply }) = offers.recv().await {
            if needs.manifest_types.contains_key(&digest) {
                if read_manifests && !needs.manifests.contains_key(&digest) {
                    let (to, bytes) = tokio::sync::oneshot::channel();
                    let _ = reply.send(Take::Whole(to));
                    let bytes = bytes.await.context("reading a manifest from the archive")?;
                    needs.manifests.insert(digest, Bytes::from(bytes));
                } else {
                    let _ = reply.send(Take::Skip);
                }
                continue;
            }
            if !resolved {
                anyhow::ensure!(
                    needs.manifests.len() == needs.manifest_types.len(),
                    "{}: blob {digest} comes before the manifests; only archives written by Lifeboat can be restored this way (use skopeo for others)",
                    archive.name
                );
                needs.resolve()?;
                resolved = true;
            }
            let repos = needs.unplaced(&digest);
            let Some(first) = repos.first() else {
                let _ = reply.send(Take::Skip);
                continue;
            };
            let mut present = Vec::new();
            for repository in &repos {
                if client.blob_exists(repository, &digest).await? {
                    present.push(repository.clone());
                }
            }
            summary.blobs_present += present.len();
            for repository in &present {
                needs.placed.insert((digest.clone(), repository.clone()));
            }
            let holder = match present.first() {
                Some(holder) => {
                    let _ = reply.send(Take::Skip);
                    holder.clone()
                }
                None => {
                    let (to, chunks) = tokio::sync::mpsc::channel(8);
                    let _ = reply.send(Take::Stream(to));
                    let body = futures_util::stream::unfold(chunks, |mut rx| async { rx.recv().await.map(|c| (c, rx)) });
                    client.upload_blob(first, &digest, size, body).await?;
                    needs.placed.insert((digest.clone(), first.clone()));
                    summary.blobs_uploaded += 1;
                    summary.bytes_uploaded += size;
                    progress(size);
                    first.clone()
                }
            };
            for repository in needs.unplaced(&digest) {
                if client.mount_blob(&repository, &holder, &digest).await? {
                    needs.placed.insert((digest.clone(), repository));
                    summary.blobs_mounted += 1;
                }
            }
        }
        if !resolved {
            needs.resolve()?;
        }
        Ok(())
    }
    .await;
    drop(offers);
    let read = reader.await.context("reading the archive stopped")?;
    result?;
    read.with_context(|| format!("reading {}", archive.name))
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;

    use super::*;

    /// An archive whose tar header gives a manifest blob `size` bytes (holding `data` of it),
    /// offered to a restore that wants it whole: what the reader says.
    fn read_whole(size: u64, data: u64) -> anyhow::Result<()> {
        let mut header = tar::Header::new_gnu();
        header.set_path(format!("blobs/sha256/{}", "a".repeat(64))).unwrap();
        header.set_size(size);
        header.set_mode(0o644);
        header.set_cksum();
        let mut bytes = header.as_bytes().to_vec();
        io::repeat(0).take(data).read_to_end(&mut bytes).unwrap();
        let open: Opener = Arc::new(move || Ok(Box::new(io::Cursor::new(bytes.clone())) as Box<dyn BufRead + Send>));
        let (offers, mut offered) = tokio::sync::mpsc::channel(4);
        let reader = std::thread::spawn(move || offer_files(open, offers));
        let offer = offered.blocking_recv().expect("the blob is offered");
        assert_eq!(offer.size, size);
        let (to, _bytes) = tokio::sync::oneshot::channel();
        let _ = offer.reply.send(Take::Whole(to));
        reader.join().unwrap()
    }

    /// Manifests are read whole, at the size the archive's tar header gives: a header claiming
    /// 2^60 bytes asked for that much memory at once. Past 4 MiB it is refused before reading.
    #[test]
    fn a_manifest_larger_than_any_is_refused_before_it_is_read() {
        for (size, data) in [(MANIFEST_LIMIT + 1, MANIFEST_LIMIT + 1), (1 << 60, 0)] {
            let e = read_whole(size, data).unwrap_err();
            assert!(format!("{e:#}").contains(&format!("is {size} bytes, and a manifest is at most 4 MiB")), "{e:#}");
        }
    }
}

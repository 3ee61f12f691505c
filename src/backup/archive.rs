//! The backup archive: a tar of an OCI image layout (zstd, gzip or plain), with
//! `lifeboat/checksums.sha256` (the sha256 of every other file, in `sha256sum` format),
//! `lifeboat/aggregate.sha256` (the sha256 of that checksum file) and `lifeboat/metadata.json`
//! inside. A person can check it with `tar` and `sha256sum` alone, and skopeo reads it as
//! `oci-archive:` (it ignores the extra files).
//!
//! Everything streams: files go into the tar as they are read, hashed on the way, and
//! verification re-hashes every file while reading the archive once, never extracting it.
//! Synchronous `std::io`; async callers run it on the blocking pool.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};

use anyhow::Context;
use sha2::{Digest as _, Sha256};

use crate::desired::Compression;

pub const CHECKSUMS: &str = "lifeboat/checksums.sha256";
pub const AGGREGATE: &str = "lifeboat/aggregate.sha256";
pub const METADATA: &str = "lifeboat/metadata.json";
/// The metadata's cosign signature (base64, as `cosign sign-blob` writes it), when signed.
pub const METADATA_SIGNATURE: &str = "lifeboat/metadata.json.sig";

/// Files verification keeps in memory are small; a larger one is only hashed.
const KEPT_LIMIT: u64 = 64 << 20;

fn entry_size<R: Read>(entry: &tar::Entry<'_, R>) -> u64 {
    entry.header().size().unwrap_or(u64::MAX)
}

/// The compressed stream under the tar.
enum Encoder<W: Write> {
    Zstd(zstd::stream::write::Encoder<'static, W>),
    Gzip(flate2::write::GzEncoder<W>),
    Plain(W),
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::Zstd(e) => e.write(buf),
            Encoder::Gzip(e) => e.write(buf),
            Encoder::Plain(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::Zstd(e) => e.flush(),
            Encoder::Gzip(e) => e.flush(),
            Encoder::Plain(w) => w.flush(),
        }
    }
}

impl<W: Write> Encoder<W> {
    fn finish(self) -> io::Result<W> {
        match self {
            Encoder::Zstd(e) => e.finish(),
            Encoder::Gzip(e) => e.finish(),
            Encoder::Plain(w) => Ok(w),
        }
    }
}

/// Hashes what passes through, and counts it.
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
    read: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.read += n as u64;
        Ok(n)
    }
}

/// Writes an archive, file by file.
pub struct ArchiveWriter<W: Write> {
    tar: tar::Builder<Encoder<W>>,
    sums: BTreeMap<String, String>,
}

impl<W: Write> ArchiveWriter<W> {
    pub fn new(out: W, compression: Compression) -> anyhow::Result<Self> {
        let encoder = match compression {
            // The default window: a long one costs every reader (skopeo included) memory.
            Compression::Zstd => Encoder::Zstd(zstd::stream::write::Encoder::new(out, 3).context("starting zstd")?),
            Compression::Gzip => Encoder::Gzip(flate2::write::GzEncoder::new(out, flate2::Compression::default())),
            Compression::None => Encoder::Plain(out),
        };
        let mut tar = tar::Builder::new(encoder);
        tar.mode(tar::HeaderMode::Deterministic);
        Ok(ArchiveWriter { tar, sums: BTreeMap::new() })
    }

    /// Adds a file of `size` bytes read from `data`, returning its sha256 (hex). A source that
    /// ends early or runs long fails the archive rather than writing a wrong entry.
    pub fn add(&mut self, path: &str, size: u64, data: impl Read) -> anyhow::Result<String> {
        check_path(path).with_context(|| format!("adding {path} to the archive"))?;
        anyhow::ensure!(!self.sums.contains_key(path), "{path} is already in the archive");
        let mut header = tar::Header::new_ustar();
        header.set_size(size);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        let mut hashing = Hashing { inner: data.take(size + 1), hasher: Sha256::new(), read: 0 };
        self.tar
            .append_data(&mut header, path, (&mut hashing).take(size))
            .with_context(|| format!("writing {path} into the archive"))?;
        let mut rest = [0u8; 1];
        let extra = hashing.inner.read(&mut rest).with_context(|| format!("reading {path}"))?;
        anyhow::ensure!(
            hashing.read == size && extra == 0,
            "{path}: expected {size} bytes, the source gave {}",
            if extra > 0 { "more".to_string() } else { hashing.read.to_string() }
        );
        let hex = format!("{:x}", hashing.hasher.finalize());
        self.sums.insert(path.to_string(), hex.clone());
        Ok(hex)
    }

    /// Adds the metadata and the checksum files, finishes the compression and returns the
    /// output and the aggregate checksum.
    pub fn finish(mut self, metadata: &serde_json::Value) -> anyhow::Result<(W, String)> {
        let meta = serde_json::to_vec_pretty(metadata).context("serializing the metadata")?;
        self.add(METADATA, meta.len() as u64, meta.as_slice())?;
        self.finish_checksums()
    }

    /// Adds the checksum files (the metadata was added like any file), finishes the
    /// compression and returns the output and the aggregate checksum.
    pub fn finish_checksums(mut self) -> anyhow::Result<(W, String)> {
        anyhow::ensure!(self.sums.contains_key(METADATA), "the archive has no {METADATA}");
        let mut checksums = String::new();
        for (path, hex) in &self.sums {
            checksums.push_str(&format!("{hex}  {path}\n"));
        }
        let aggregate = format!("{:x}", Sha256::digest(checksums.as_bytes()));
        let aggregate_line = format!("{aggregate}  {CHECKSUMS}\n");
        for (path, text) in [(CHECKSUMS, checksums.as_str()), (AGGREGATE, aggregate_line.as_str())] {
            let mut header = tar::Header::new_ustar();
            header.set_size(text.len() as u64);
            header.set_mode(0o644);
            self.tar.append_data(&mut header, path, text.as_bytes()).with_context(|| format!("writing {path}"))?;
        }
        let encoder = self.tar.into_inner().context("finishing the tar stream")?;
        let out = encoder.finish().context("finishing the compression")?;
        Ok((out, aggregate))
    }
}

/// A path inside the archive must stay inside it: relative, no `..`, no empty parts.
fn check_path(path: &str) -> anyhow::Result<()> {
    anyhow::ensure!(!path.is_empty() && !path.starts_with('/'), "`{path}` is an absolute or empty path");
    anyhow::ensure!(
        path.split('/').all(|part| !part.is_empty() && part != "." && part != ".."),
        "`{path}` leaves the archive or has empty parts"
    );
    Ok(())
}

/// Opens the decompressed stream of an archive, recognising zstd and gzip by their magic bytes.
pub fn decompressed<'a, R: io::BufRead + 'a>(mut input: R) -> anyhow::Result<Box<dyn Read + 'a>> {
    let head = input.fill_buf().context("reading the archive")?;
    Ok(if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(zstd::stream::read::Decoder::with_buffer(input).context("starting zstd")?)
    } else if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::bufread::MultiGzDecoder::new(input))
    } else {
        Box::new(input)
    })
}

/// The outcome of re-hashing an archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification {
    /// Files checked against the checksum file.
    pub files: usize,
    /// Each problem, naming the file or blob; empty means PASS.
    pub problems: Vec<String>,
    /// The metadata document and its signature file, as read.
    pub metadata: Option<Vec<u8>>,
    pub metadata_signature: Option<Vec<u8>>,
}

impl Verification {
    pub fn passed(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Reads the whole archive once, re-hashing every file: each must match the checksum file,
/// each blob its own name, and the checksum file the aggregate. An entry that is not a plain
/// file or folder, or whose path leaves the archive, is an error: such an archive is refused
/// outright.
pub fn verify(input: impl io::BufRead) -> anyhow::Result<Verification> {
    let mut tar = tar::Archive::new(decompressed(input)?);
    let mut hashes: BTreeMap<String, String> = BTreeMap::new();
    let mut checksums = None;
    let mut aggregate = None;
    let (mut metadata, mut metadata_signature) = (None, None);
    let mut problems = Vec::new();
    for entry in tar.entries().context("reading the archive")? {
        let entry = entry.context("reading the archive")?;
        let path = String::from_utf8_lossy(&entry.path_bytes()).trim_start_matches("./").to_string();
        match entry.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => {}
            tar::EntryType::Directory => {
                check_path(path.trim_end_matches('/')).context("refusing the archive")?;
                continue;
            }
            other => anyhow::bail!("refusing the archive: `{path}` is a {other:?} entry, not a plain file"),
        }
        check_path(&path).context("refusing the archive")?;
        let mut hashing = Hashing { inner: entry, hasher: Sha256::new(), read: 0 };
        let keep = [CHECKSUMS, AGGREGATE, METADATA, METADATA_SIGNATURE].contains(&path.as_str())
            && entry_size(&hashing.inner) <= KEPT_LIMIT;
        let mut kept = Vec::new();
        if keep {
            hashing.read_to_end(&mut kept).with_context(|| format!("reading {path}"))?;
        } else {
            io::copy(&mut hashing, &mut io::sink()).with_context(|| format!("reading {path}"))?;
        }
        let hex = format!("{:x}", hashing.hasher.finalize());
        if let Some(name) = path.strip_prefix("blobs/sha256/")
            && name != hex
        {
            problems.push(format!("blob {path} does not hash to its name (sha256 {hex})"));
        }
        match path.as_str() {
            CHECKSUMS => checksums = Some((String::from_utf8_lossy(&kept).into_owned(), hex)),
            AGGREGATE => aggregate = Some(String::from_utf8_lossy(&kept).into_owned()),
            _ => {
                if path == METADATA {
                    metadata = Some(std::mem::take(&mut kept));
                } else if path == METADATA_SIGNATURE {
                    metadata_signature = Some(std::mem::take(&mut kept));
                }
                if hashes.insert(path.clone(), hex).is_some() {
                    problems.push(format!("{path} is in the archive twice"));
                }
            }
        }
    }
    let Some((checksums, checksums_hex)) = checksums else {
        anyhow::bail!("the archive has no {CHECKSUMS}: it was not written by Lifeboat, or is cut short");
    };
    match aggregate.as_deref().and_then(|a| a.split_whitespace().next()) {
        Some(expected) if expected == checksums_hex => {}
        Some(_) => problems.push(format!("{CHECKSUMS} does not match {AGGREGATE}")),
        None => problems.push(format!("{AGGREGATE} is missing")),
    }
    let mut listed = 0;
    for line in checksums.lines().filter(|l| !l.trim().is_empty()) {
        let Some((expected, path)) = line.split_once("  ") else {
            problems.push(format!("{CHECKSUMS}: unreadable line `{line}`"));
            continue;
        };
        listed += 1;
        match hashes.remove(path) {
            Some(actual) if actual == expected => {}
            Some(_) => problems.push(format!("{path} does not match its checksum")),
            None => problems.push(format!("{path} is listed in {CHECKSUMS} but missing from the archive")),
        }
    }
    for path in hashes.keys() {
        problems.push(format!("{path} is in the archive but not in {CHECKSUMS}"));
    }
    Ok(Verification { files: listed, problems, metadata, metadata_signature })
}

#[cfg(test)]
mod tests;

//! What a backup destination directory holds. An export writes each archive as one file or as
//! numbered parts, then, once the archive is written and verified, a small JSON [`Record`]
//! beside it; files still being written end in `.partial`. [`scan`] reads the directory
//! (records and file sizes, never archive content), [`check_stored`] re-hashes the stored files
//! against their record, [`retention`] decides purely which archives a policy lets go, and
//! [`prune`] deletes them. Nothing here writes an archive, and no file whose name is not
//! Lifeboat's is ever read or deleted.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::Context;
use chrono::{DateTime, Duration, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::desired::Compression;

/// The `format` of every record this version writes and reads.
pub const RECORD_FORMAT: &str = "lifeboat-backup-record/v1";
/// What a record's file name adds to its archive's name.
pub const RECORD_SUFFIX: &str = ".lifeboat.json";
/// The largest record read: a record lists the digest of every blob its archive stores (71
/// bytes each), so this is room for several hundred thousand blobs.
pub const RECORD_LIMIT: u64 = 64 << 20;
/// What the name of a file still being written ends with.
pub const PARTIAL_SUFFIX: &str = ".partial";
/// How long an export's `.partial` files may go unwritten before they count as the leftovers of
/// an interrupted export, which retention deletes. A live export writes far more often.
pub const LEFTOVER_AGE: Duration = Duration::days(1);

/// The note on archive files that have no record.
pub const NO_RECORD: &str = "no record: written by an interrupted export or by hand";
/// The note on an archive with `.partial` files and no record.
pub const INCOMPLETE: &str = "incomplete: an export was interrupted, or is still writing";

/// What an export writes beside an archive once it is written and verified: the contract
/// between the export and everything that lists, checks, restores or prunes archives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    /// Always [`RECORD_FORMAT`].
    pub format: String,
    /// File name of the archive: the single file, or the name its parts extend.
    pub archive: String,
    /// The BackupPolicy that wrote it.
    pub policy: String,
    pub created_at: DateTime<Utc>,
    /// The stored files, in order: the archive itself, or its parts.
    pub parts: Vec<Part>,
    /// Bytes stored: the sum of the parts.
    pub size: u64,
    pub compression: Compression,
    /// Encrypted with age for `recipients`.
    pub encrypted: bool,
    #[serde(default)]
    pub recipients: Vec<String>,
    pub images: u64,
    pub blobs: u64,
    /// The archive's aggregate checksum of its content (sha256 hex of its checksum file).
    pub aggregate: String,
    /// For an incremental archive: the earlier archive it builds on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
    pub integrity: Integrity,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_revision: Option<String>,
    pub lifeboat_version: String,
    /// The blobs stored in this archive (not those left to its base): what an incremental
    /// archive built on this one can leave out, known without decrypting this one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stored_blobs: Vec<String>,
}

/// One stored file of an archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Part {
    /// File name, in the same directory as the record.
    pub file: String,
    pub size: u64,
    /// sha256 hex of the bytes as stored (the ciphertext when encrypted).
    pub sha256: String,
}

/// The last integrity check of an archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Integrity {
    pub result: IntegrityResult,
    pub checked_at: DateTime<Utc>,
    pub how: IntegrityCheck,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IntegrityResult {
    Pass,
    Fail,
}

/// How much an integrity check could see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IntegrityCheck {
    /// Every file inside the archive re-hashed against its checksums.
    Content,
    /// Only the stored part files re-hashed against their recorded sha256 (for example an
    /// encrypted archive checked without an identity to decrypt it).
    Stored,
}

impl IntegrityCheck {
    /// What the check covered, in words.
    pub fn describe(self) -> &'static str {
        match self {
            IntegrityCheck::Content => "every file re-hashed",
            IntegrityCheck::Stored => "stored bytes re-hashed; the content needs the identity to check",
        }
    }
}

impl Record {
    /// The record's file name: `<archive>.lifeboat.json`.
    pub fn file_name(&self) -> String {
        format!("{}{RECORD_SUFFIX}", self.archive)
    }

    /// True when the last integrity check passed.
    pub fn passed(&self) -> bool {
        self.integrity.result == IntegrityResult::Pass
    }

    /// Reads and checks a record, naming the file in every error. A file over [`RECORD_LIMIT`]
    /// is refused unread past it.
    pub fn read(path: &Path) -> anyhow::Result<Record> {
        use std::io::Read as _;
        let shown = path.display();
        let mut bytes = Vec::new();
        File::open(path)
            .and_then(|file| file.take(RECORD_LIMIT + 1).read_to_end(&mut bytes))
            .with_context(|| format!("reading backup record {shown}"))?;
        anyhow::ensure!(
            bytes.len() as u64 <= RECORD_LIMIT,
            "{shown} is larger than {} MiB, which no backup record is: move it out of the backup directory",
            RECORD_LIMIT >> 20
        );
        let value: serde_json::Value = serde_json::from_slice(&bytes).with_context(|| {
            format!("{shown} is not a backup record (not JSON): restore it from a copy, or delete it to leave the archive unrecorded")
        })?;
        match value.get("format").and_then(|f| f.as_str()) {
            Some(RECORD_FORMAT) => {}
            Some(other) => anyhow::bail!(
                "{shown} has format `{other}`, and this Lifeboat reads {RECORD_FORMAT}: read it with the Lifeboat that wrote it"
            ),
            None => anyhow::bail!(
                "{shown} has no `format`: it is not a Lifeboat backup record; move it out of the backup directory"
            ),
        }
        let record: Record = serde_json::from_value(value).with_context(|| {
            format!("{shown} is not a valid {RECORD_FORMAT} record: restore it from a copy, or delete it to leave the archive unrecorded")
        })?;
        record.check().with_context(|| format!("{shown} is not a valid {RECORD_FORMAT} record"))?;
        Ok(record)
    }

    /// Writes the record into `dir` beside its archive: to a `.partial` file first, synced,
    /// then renamed, so a record is either whole or absent. Returns its path.
    pub fn write(&self, dir: &Path) -> anyhow::Result<PathBuf> {
        self.check().with_context(|| format!("writing the backup record of {}", self.archive))?;
        let path = dir.join(self.file_name());
        let partial = dir.join(format!("{}{PARTIAL_SUFFIX}", self.file_name()));
        let mut text = serde_json::to_vec_pretty(self).context("serializing the backup record")?;
        text.push(b'\n');
        let mut file = File::create(&partial).with_context(|| format!("creating {}", partial.display()))?;
        file.write_all(&text).with_context(|| format!("writing {}", partial.display()))?;
        file.sync_all().with_context(|| format!("syncing {}", partial.display()))?;
        drop(file);
        std::fs::rename(&partial, &path)
            .with_context(|| format!("renaming {} to {}", partial.display(), path.display()))?;
        // The rename itself must reach the disk too.
        #[cfg(unix)]
        File::open(dir).and_then(|d| d.sync_all()).with_context(|| format!("syncing directory {}", dir.display()))?;
        Ok(path)
    }

    /// The facts a record must agree with itself on. Part names matter most: `prune` deletes
    /// the files a record names, so they must be this archive's.
    fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.format == RECORD_FORMAT, "format is `{}`, not {RECORD_FORMAT}", self.format);
        let name =
            parse_name(&self.archive).filter(|n| n.kind == FileKind::Archive && !n.partial).ok_or_else(|| {
                anyhow::anyhow!("`{}` is not an archive name (<policy>-<YYYYMMDD>T<HHMMSS>Z.tar...)", self.archive)
            })?;
        anyhow::ensure!(
            name.policy == self.policy,
            "archive {} is named for policy `{}`, the record says `{}`",
            self.archive,
            name.policy,
            self.policy
        );
        anyhow::ensure!(!self.parts.is_empty(), "archive {} has no parts", self.archive);
        for part in &self.parts {
            let whole = part.file == self.archive && self.parts.len() == 1;
            let numbered = parse_name(&part.file)
                .is_some_and(|n| n.archive == self.archive && n.kind == FileKind::Part && !n.partial);
            anyhow::ensure!(
                whole || numbered,
                "part `{}` is not a file of archive {} (the archive itself, or {}.part-001, ...)",
                part.file,
                self.archive,
                self.archive
            );
            anyhow::ensure!(
                is_sha256(&part.sha256),
                "part {} has sha256 `{}`, not 64 hex digits",
                part.file,
                part.sha256
            );
        }
        let sum = self.parts.iter().try_fold(0u64, |sum, p| sum.checked_add(p.size));
        anyhow::ensure!(
            sum == Some(self.size),
            "size {} is not the sum of the parts ({})",
            self.size,
            sum.map_or("too large".to_string(), |s| s.to_string())
        );
        anyhow::ensure!(is_sha256(&self.aggregate), "aggregate `{}` is not 64 hex digits", self.aggregate);
        if let Some(base) = &self.base {
            anyhow::ensure!(
                parse_name(base).is_some_and(|n| n.kind == FileKind::Archive && !n.partial),
                "base `{base}` is not an archive name"
            );
        }
        Ok(())
    }
}

fn is_sha256(hex: &str) -> bool {
    hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The name of an archive: `<policy>-<YYYYMMDD>T<HHMMSS>Z.tar` plus `.zst` or `.gz`, plus
/// `.age` when encrypted.
pub fn archive_name(policy: &str, created_at: DateTime<Utc>, compression: Compression, encrypted: bool) -> String {
    let extension = match compression {
        Compression::Zstd => ".zst",
        Compression::Gzip => ".gz",
        Compression::None => "",
    };
    let age = if encrypted { ".age" } else { "" };
    format!("{policy}-{}.tar{extension}{age}", created_at.format("%Y%m%dT%H%M%SZ"))
}

/// The archive a file of Lifeboat's belongs to: the archive itself, one of its parts or its
/// record; `None` for any other name.
pub fn archive_of(file_name: &str) -> Option<&str> {
    parse_name(file_name).filter(|n| !n.partial).map(|n| n.archive)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FileKind {
    /// The archive as one file.
    Archive,
    /// `<archive>.part-NNN`.
    Part,
    /// `<archive>.lifeboat.json`.
    Record,
}

/// A file name of Lifeboat's, taken apart.
struct Name<'a> {
    archive: &'a str,
    policy: &'a str,
    created_at: DateTime<Utc>,
    kind: FileKind,
    partial: bool,
}

fn parse_name(name: &str) -> Option<Name<'_>> {
    static RE: OnceLock<regex::Regex> = OnceLock::new();
    let re = RE.get_or_init(|| {
        regex::Regex::new(
            r"^((.+)-(\d{8}T\d{6}Z)\.tar(?:\.zst|\.gz)?(?:\.age)?)(\.part-\d{3,}|\.lifeboat\.json)?(\.partial)?$",
        )
        .expect("a valid pattern")
    });
    let caps = re.captures(name)?;
    let time = NaiveDateTime::parse_from_str(caps.get(3)?.as_str(), "%Y%m%dT%H%M%SZ").ok()?;
    let kind = match caps.get(4).map(|m| m.as_str()) {
        None => FileKind::Archive,
        Some(RECORD_SUFFIX) => FileKind::Record,
        Some(_) => FileKind::Part,
    };
    Some(Name {
        archive: caps.get(1)?.as_str(),
        policy: caps.get(2)?.as_str(),
        created_at: time.and_utc(),
        kind,
        partial: caps.get(5).is_some(),
    })
}

/// One file of an archive found in the directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredFile {
    pub name: String,
    pub size: u64,
    /// Last modification; `None` when the filesystem does not say.
    pub modified: Option<DateTime<Utc>>,
}

impl StoredFile {
    pub fn is_partial(&self) -> bool {
        self.name.ends_with(PARTIAL_SUFFIX)
    }

    fn is_record(&self) -> bool {
        self.name.ends_with(RECORD_SUFFIX)
    }
}

/// One archive in a backup directory: recorded, or files without a record.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The archive's file name (the one its parts extend).
    pub archive: String,
    pub policy: String,
    /// From the record, or from the name when there is none.
    pub created_at: DateTime<Utc>,
    /// Every file of this archive in the directory, sorted by name: the archive or its parts,
    /// its record, and any `.partial` files.
    pub files: Vec<StoredFile>,
    pub state: State,
}

#[derive(Debug, Clone, PartialEq)]
pub enum State {
    /// With its record. `problems` names each recorded part that is missing or whose size
    /// differs from the record; empty when every part is there.
    Recorded { record: Box<Record>, problems: Vec<String> },
    /// Finished files without a record, or with one that cannot be read (`unreadable` says
    /// why): from an interrupted export, or put there by hand. Retention leaves them alone.
    Unrecorded { unreadable: Option<String> },
    /// `.partial` files and no record: an export was interrupted, or is still writing.
    Incomplete,
}

impl Entry {
    pub fn policy(&self) -> &str {
        &self.policy
    }

    pub fn record(&self) -> Option<&Record> {
        match &self.state {
            State::Recorded { record, .. } => Some(record),
            _ => None,
        }
    }

    /// Recorded, and every recorded part is there with its recorded size.
    pub fn complete(&self) -> bool {
        matches!(&self.state, State::Recorded { problems, .. } if problems.is_empty())
    }

    /// Complete, and its last integrity check passed: an archive a restore can rely on.
    pub fn verified(&self) -> bool {
        self.complete() && self.record().is_some_and(Record::passed)
    }

    /// Bytes stored: the record's size, or the sum of the files found.
    pub fn size(&self) -> u64 {
        match self.record() {
            Some(record) => record.size,
            // Sparse files can claim any size: the sum saturates rather than overflows.
            None => self.files.iter().fold(0u64, |sum, f| sum.saturating_add(f.size)),
        }
    }

    /// Stored archive files: the recorded parts, or the archive and part files found (finished
    /// or `.partial`).
    pub fn parts(&self) -> usize {
        match self.record() {
            Some(record) => record.parts.len(),
            None => {
                self.files.iter().filter(|f| parse_name(&f.name).is_some_and(|n| n.kind != FileKind::Record)).count()
            }
        }
    }

    /// Encrypted with age: from the record, or from the name.
    pub fn encrypted(&self) -> bool {
        self.record().map_or(self.archive.ends_with(".age"), |r| r.encrypted)
    }

    /// What a person should know about this entry, if anything: missing parts, no record, an
    /// unreadable record, or an interrupted export.
    pub fn note(&self) -> Option<String> {
        match &self.state {
            State::Recorded { problems, .. } if problems.is_empty() => None,
            State::Recorded { problems, .. } => Some(problems.join("; ")),
            State::Unrecorded { unreadable: None } => Some(NO_RECORD.to_string()),
            State::Unrecorded { unreadable: Some(why) } => Some(format!("record unreadable: {why}")),
            State::Incomplete => Some(INCOMPLETE.to_string()),
        }
    }

    /// The latest modification of any of its files, never earlier than the time in its name;
    /// `None` when a file's modification time is unknown.
    fn last_write(&self) -> Option<DateTime<Utc>> {
        self.files.iter().try_fold(self.created_at, |latest, f| f.modified.map(|m| latest.max(m)))
    }
}

/// Every archive in a backup directory, sorted by creation time, then name. Reads records and
/// file sizes, never archive content. Only an unreadable directory is an error: an unreadable
/// record makes its archive unrecorded, with the reason.
pub fn scan(dir: &Path) -> anyhow::Result<Vec<Entry>> {
    struct Group {
        policy: String,
        created_at: DateTime<Utc>,
        files: Vec<StoredFile>,
        recorded: bool,
    }
    let mut groups: BTreeMap<String, Group> = BTreeMap::new();
    let listing = std::fs::read_dir(dir).with_context(|| format!("reading backup directory {}", dir.display()))?;
    for item in listing {
        let item = item.with_context(|| format!("reading backup directory {}", dir.display()))?;
        let Ok(file_name) = item.file_name().into_string() else { continue };
        let Some(name) = parse_name(&file_name) else { continue };
        let path = item.path();
        let metadata = match std::fs::metadata(&path) {
            Ok(m) if m.is_file() => m,
            Ok(_) => continue,
            // Deleted while the directory was read.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let group = groups.entry(name.archive.to_string()).or_insert_with(|| Group {
            policy: name.policy.to_string(),
            created_at: name.created_at,
            files: Vec::new(),
            recorded: false,
        });
        group.recorded |= name.kind == FileKind::Record && !name.partial;
        group.files.push(StoredFile {
            name: file_name.clone(),
            size: metadata.len(),
            modified: metadata.modified().ok().map(DateTime::<Utc>::from),
        });
    }
    let mut entries: Vec<Entry> = groups
        .into_iter()
        .map(|(archive, mut group)| {
            group.files.sort_by(|a, b| a.name.cmp(&b.name));
            let partial = group.files.iter().any(StoredFile::is_partial);
            let record = group.recorded.then(|| read_record(dir, &archive));
            let state = match record {
                Some(Ok(record)) => {
                    let problems = part_problems(&record, &group.files);
                    group.created_at = record.created_at;
                    State::Recorded { record: Box::new(record), problems }
                }
                _ if partial => State::Incomplete,
                Some(Err(e)) => State::Unrecorded { unreadable: Some(format!("{e:#}")) },
                None => State::Unrecorded { unreadable: None },
            };
            Entry { archive, policy: group.policy, created_at: group.created_at, files: group.files, state }
        })
        .collect();
    entries.sort_by(|a, b| (a.created_at, &a.archive).cmp(&(b.created_at, &b.archive)));
    Ok(entries)
}

fn read_record(dir: &Path, archive: &str) -> anyhow::Result<Record> {
    let path = dir.join(format!("{archive}{RECORD_SUFFIX}"));
    let record = Record::read(&path)?;
    anyhow::ensure!(
        record.archive == archive,
        "{} describes archive {}, not {archive}: rename or delete it",
        path.display(),
        record.archive
    );
    Ok(record)
}

/// Recorded parts that are missing, or whose size differs from the record.
fn part_problems(record: &Record, files: &[StoredFile]) -> Vec<String> {
    record
        .parts
        .iter()
        .filter_map(|part| match files.iter().find(|f| f.name == part.file) {
            None => Some(format!("part {} is missing", part.file)),
            Some(f) if f.size != part.size => {
                Some(format!("part {} is {} bytes, the record says {}", part.file, f.size, part.size))
            }
            Some(_) => None,
        })
        .collect()
}

/// Re-hashes each stored part file in `dir` against its recorded size and sha256, streaming.
/// Returns the problems, each naming its part; empty means intact. This checks what is stored
/// (the ciphertext when encrypted), not the archive's content: for when the content cannot be
/// read, such as an encrypted archive and no identity. A part that cannot be read for any
/// reason but absence is an error, not a failed check.
pub fn check_stored(dir: &Path, record: &Record) -> anyhow::Result<Vec<String>> {
    record.check().with_context(|| format!("checking the stored files of {}", record.archive))?;
    let mut problems = Vec::new();
    for part in &record.parts {
        let path = dir.join(&part.file);
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                problems.push(format!("part {} is missing", part.file));
                continue;
            }
            Err(e) => return Err(e).with_context(|| format!("opening part {}", path.display())),
        };
        let mut hasher = Sha256::new();
        let size = io::copy(&mut io::BufReader::with_capacity(1 << 20, file), &mut hasher)
            .with_context(|| format!("reading part {}", path.display()))?;
        let hex = format!("{:x}", hasher.finalize());
        if size != part.size {
            problems.push(format!("part {} is {size} bytes, the record says {}", part.file, part.size));
        } else if hex != part.sha256 {
            problems.push(format!("part {} does not match its sha256 in the record (it hashes to {hex})", part.file));
        }
    }
    Ok(problems)
}

/// Files retention lets go, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Deletion {
    /// The archive the files belong to.
    pub archive: String,
    /// Such as `beyond keep 7` or `older than 7d`.
    pub reason: String,
    /// File names in the directory, in the order to delete them: the record, if any, last.
    pub files: Vec<String>,
}

impl std::fmt::Display for Deletion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.archive, self.reason)
    }
}

/// Which archives of one policy to delete, oldest first. `entries` must already be those of
/// the policy being pruned ([`Entry::policy`]). Pure: the time is passed in.
///
/// - Beyond the `keep` newest recorded archives, or older than `max_age`: deleted, except
/// - the newest verified archive (complete, integrity pass), which is always kept, and
/// - every archive a kept archive builds on (`base`), transitively, so incremental chains
///   stay restorable.
/// - An interrupted export (`.partial` files, no record) with nothing written for over
///   [`LEFTOVER_AGE`]: all its files; so are stray `.partial` files of a recorded archive.
/// - Archive files without a record are never deleted: [`Entry::note`] reports them.
pub fn retention(entries: &[Entry], keep: Option<u32>, max_age: Option<Duration>, now: DateTime<Utc>) -> Vec<Deletion> {
    debug_assert!(entries.windows(2).all(|w| w[0].policy == w[1].policy), "entries of one policy only");
    let mut recorded: Vec<&Entry> = entries.iter().filter(|e| e.record().is_some()).collect();
    recorded.sort_by(|a, b| (b.created_at, &b.archive).cmp(&(a.created_at, &a.archive)));

    let mut reasons: BTreeMap<&str, String> = BTreeMap::new();
    for (i, entry) in recorded.iter().enumerate() {
        let mut why = Vec::new();
        if let Some(keep) = keep
            && i >= keep as usize
        {
            why.push(format!("beyond keep {keep}"));
        }
        if let Some(max_age) = max_age
            && now.checked_sub_signed(max_age).is_some_and(|oldest| entry.created_at < oldest)
        {
            why.push(format!("older than {}", span(max_age)));
        }
        if !why.is_empty() {
            reasons.insert(&entry.archive, why.join(", "));
        }
    }
    if let Some(newest) = recorded.iter().find(|e| e.verified()) {
        reasons.remove(newest.archive.as_str());
    }
    let by_name: BTreeMap<&str, &Entry> = recorded.iter().map(|e| (e.archive.as_str(), *e)).collect();
    let mut kept: Vec<&Entry> =
        recorded.iter().copied().filter(|e| !reasons.contains_key(e.archive.as_str())).collect();
    while let Some(entry) = kept.pop() {
        if let Some(base) = entry.record().and_then(|r| r.base.as_deref())
            && reasons.remove(base).is_some()
            && let Some(base) = by_name.get(base)
        {
            kept.push(base);
        }
    }

    let stale = |t: Option<DateTime<Utc>>| t.is_some_and(|t| now - t > LEFTOVER_AGE);
    let mut deletions: Vec<(DateTime<Utc>, Deletion)> = Vec::new();
    for entry in entries {
        let deletion = match &entry.state {
            State::Recorded { .. } => match reasons.get(entry.archive.as_str()) {
                Some(reason) => Some((reason.clone(), deletion_order(entry.files.iter()))),
                None => {
                    let leftovers = deletion_order(entry.files.iter().filter(|f| f.is_partial() && stale(f.modified)));
                    (!leftovers.is_empty())
                        .then(|| (format!(".partial files not written for over {}", span(LEFTOVER_AGE)), leftovers))
                }
            },
            State::Incomplete if stale(entry.last_write()) => Some((
                format!("an interrupted export: nothing written for over {}", span(LEFTOVER_AGE)),
                deletion_order(entry.files.iter()),
            )),
            State::Incomplete | State::Unrecorded { .. } => None,
        };
        if let Some((reason, files)) = deletion {
            deletions.push((entry.created_at, Deletion { archive: entry.archive.clone(), reason, files }));
        }
    }
    deletions.sort_by(|a, b| (a.0, &a.1.archive).cmp(&(b.0, &b.1.archive)));
    deletions.into_iter().map(|(_, d)| d).collect()
}

/// File names with the record last.
fn deletion_order<'a>(files: impl Iterator<Item = &'a StoredFile>) -> Vec<String> {
    let (records, others): (Vec<&StoredFile>, Vec<&StoredFile>) = files.partition(|f| f.is_record());
    others.into_iter().chain(records).map(|f| f.name.clone()).collect()
}

/// A duration in its largest whole unit: `7d`, `36h`, `90m`, `45s`.
fn span(duration: Duration) -> String {
    let seconds = duration.num_seconds();
    for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60)] {
        if seconds != 0 && seconds % size == 0 {
            return format!("{}{unit}", seconds / size);
        }
    }
    format!("{seconds}s")
}

/// Deletes the files of each deletion from `dir`, every part before the record, so an archive
/// whose parts could not all be deleted stays recorded and listed. Returns what it removed; a
/// file already gone is skipped. A file that is not one of its archive's is refused before
/// anything is deleted.
pub fn prune(dir: &Path, deletions: &[Deletion]) -> anyhow::Result<Vec<PathBuf>> {
    for deletion in deletions {
        for file in &deletion.files {
            anyhow::ensure!(
                parse_name(file).is_some_and(|n| n.archive == deletion.archive),
                "refusing to delete `{file}`: it is not a file of archive {}",
                deletion.archive
            );
        }
    }
    let mut removed = Vec::new();
    for deletion in deletions {
        let is_record = |f: &&String| f.ends_with(RECORD_SUFFIX);
        let records = deletion.files.iter().filter(is_record);
        for file in deletion.files.iter().filter(|f| !is_record(f)).chain(records) {
            let path = dir.join(file);
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    tracing::info!(file = %path.display(), reason = %deletion.reason, "deleted backup file");
                    removed.push(path);
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!(
                            "deleting {} ({}); the rest of {} and its record are kept: fix the cause and prune again",
                            path.display(),
                            deletion.reason,
                            deletion.archive
                        )
                    });
                }
            }
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests;

//! The bytes under a backup archive: age encryption and split parts. [`Sink`] takes the compressed
//! stream from [`super::archive::ArchiveWriter`], encrypts it to age recipients when asked, cuts it
//! into parts of at most a given size, hashes every file as it is written, and gives the files
//! their final names only once all of them are on disk. [`open`] does the reverse: it joins the
//! parts and decrypts, handing back the still-compressed stream.
//!
//! It owns the file names (`.partial`, `.part-NNN`) and the age layer. It never looks inside the
//! stream (tar and compression belong to [`super::archive`]), never deletes a file but its own
//! reservation, and never overwrites an existing archive or another export's files: the first
//! `.partial` file is created exclusively, so two exports choosing one name at once cannot both
//! write it ([`Taken`]). Synchronous `std::io`; async callers run it on the blocking pool.

use std::ffi::OsString;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use age::secrecy::{ExposeSecret as _, SecretString};
use anyhow::{Context, anyhow};
use sha2::{Digest as _, Sha256};

/// How every binary age file starts.
const AGE_MAGIC: &[u8] = b"age-encryption.org/";
/// How an ASCII-armored age file starts.
const ARMOR_MAGIC: &[u8] = b"-----BEGIN AGE ENCRYPTED FILE-----";
/// The suffix of a file still being written.
const PARTIAL: &str = ".partial";
/// Part numbers have at least this many digits, and more when an archive has more parts, so that
/// the names always sort in order.
const MIN_DIGITS: usize = 3;
/// The buffer between the stream and the files, in both directions.
const BUFFER: usize = 256 * 1024;
/// Identity files are a few lines; anything bigger is not one.
const IDENTITY_FILE_LIMIT: u64 = 1024 * 1024;
const EXPECTED_IDENTITY: &str =
    "expected an age identity file (AGE-SECRET-KEY-1... lines) or an unencrypted OpenSSH private key (ed25519 or rsa)";

/// One file of a finished archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    pub path: PathBuf,
    pub size: u64,
    /// Lowercase hex sha256 of the file's bytes as stored (after encryption).
    pub sha256: String,
}

/// Writes an archive's bytes: optionally encrypted with age, optionally split into parts.
///
/// Until [`Sink::finish`] every file carries a `.partial` suffix. Dropping a `Sink` without
/// finishing it leaves those `.partial` files behind (incomplete and, when encrypted, impossible
/// to decrypt) and nothing under a final name; they are not deleted here, and no later export
/// reuses the name while they are there.
pub struct Sink {
    path: PathBuf,
    out: Output,
}

enum Output {
    Plain(Files),
    Encrypted(age::stream::StreamWriter<Files>),
}

impl Sink {
    /// Starts an archive at `path`, the final archive path, such as
    /// `/backups/nightly-20261121T030000Z.tar.zst.age` (the caller picks the name and extension).
    /// `recipients` are age recipient strings (`age1...`, `ssh-ed25519 ...`, `ssh-rsa ...`);
    /// none means no encryption. `max_part_size`: `None` writes one file at `path`; `Some(n)`
    /// writes `path.part-001`, `path.part-002`, ... of at most `n` bytes each.
    ///
    /// Refuses to start when `path` or its first part already exists (a finished archive is
    /// never overwritten), or when another export holds the name: its error is then [`Taken`],
    /// and another name is free to try.
    pub fn create(path: &Path, recipients: &[String], max_part_size: Option<u64>) -> anyhow::Result<Sink> {
        anyhow::ensure!(
            max_part_size != Some(0),
            "creating archive {}: the part size must be at least one byte",
            path.display()
        );
        let recipients = recipients.iter().map(|r| parse_recipient(r)).collect::<anyhow::Result<Vec<_>>>()?;
        let existing = match first_part_digits(path)? {
            Some(digits) => Some(part_path(path, 1, digits)),
            None => exists(path)?.then(|| path.to_path_buf()),
        };
        if let Some(existing) = existing {
            return Err(anyhow!(Taken { archive: path.to_path_buf(), by: existing, finished: true }));
        }
        // Before any file exists, so that an unusable set of recipients leaves nothing behind.
        let encryptor = if recipients.is_empty() {
            None
        } else {
            Some(
                age::Encryptor::with_recipients(recipients.iter().map(|r| r.as_ref() as &dyn age::Recipient))
                    .map_err(|e| anyhow!("encrypting archive {} to its recipients: {e}", path.display()))?,
            )
        };
        let files = Files::create(path, max_part_size)?;
        let out = match encryptor {
            None => Output::Plain(files),
            Some(encryptor) => Output::Encrypted(
                encryptor
                    .wrap_output(files)
                    .with_context(|| format!("writing the age header of archive {}", path.display()))?,
            ),
        };
        Ok(Sink { path: path.to_path_buf(), out })
    }

    /// Finishes the encryption, flushes and fsyncs every file, renames each from its `.partial`
    /// name to its final name, and returns the parts in order.
    pub fn finish(self) -> anyhow::Result<Vec<Part>> {
        let files = match self.out {
            Output::Plain(files) => files,
            // Without this the last chunk is never written, and the file cannot be decrypted.
            Output::Encrypted(writer) => writer
                .finish()
                .with_context(|| format!("finishing the age encryption of archive {}", self.path.display()))?,
        };
        files.finish()
    }
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.out {
            Output::Plain(files) => files.write(buf),
            Output::Encrypted(writer) => writer.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.out {
            Output::Plain(files) => files.flush(),
            Output::Encrypted(writer) => writer.flush(),
        }
    }
}

/// Parses one age recipient: X25519 (`age1...`), `ssh-ed25519` or `ssh-rsa`.
fn parse_recipient(text: &str) -> anyhow::Result<Box<dyn age::Recipient + Send>> {
    let text = text.trim();
    if text.starts_with("age1") {
        let recipient: age::x25519::Recipient =
            text.parse().map_err(|e| anyhow!("recipient `{text}` is not a valid age X25519 recipient: {e}"))?;
        return Ok(Box::new(recipient));
    }
    if text.starts_with("ssh-") {
        use age::ssh::ParseRecipientKeyError as E;
        let recipient: age::ssh::Recipient = text.parse().map_err(|e| match e {
            E::Unsupported(kind) => {
                anyhow!("recipient `{text}`: {kind} keys cannot be age recipients; use ssh-ed25519, ssh-rsa or age1...")
            }
            E::RsaModulusTooSmall => anyhow!("recipient `{text}`: the ssh-rsa key is shorter than 2048 bits"),
            E::RsaModulusTooLarge => anyhow!("recipient `{text}`: the ssh-rsa key is longer than age accepts"),
            E::Invalid(why) => anyhow!("recipient `{text}` is not a valid SSH public key: {why}"),
            other => anyhow!("recipient `{text}` is not a usable SSH public key: {other:?}"),
        })?;
        return Ok(Box::new(recipient));
    }
    anyhow::bail!(
        "recipient `{text}` is neither an age recipient (age1...) nor an SSH public key (ssh-ed25519, ssh-rsa)"
    )
}

/// The files on disk: the one being written and hashed, and the ones already closed.
struct Files {
    path: PathBuf,
    max_part_size: Option<u64>,
    current: Current,
    /// Closed files, still under their `.partial` names.
    closed: Vec<Part>,
}

/// The file being written.
struct Current {
    partial: PathBuf,
    file: BufWriter<File>,
    size: u64,
    hasher: Sha256,
}

impl Current {
    fn create(partial: PathBuf) -> io::Result<Current> {
        let file = File::create(&partial).map_err(|e| annotate(e, "creating", &partial))?;
        Ok(Current { partial, file: BufWriter::with_capacity(BUFFER, file), size: 0, hasher: Sha256::new() })
    }

    /// Flushes and fsyncs the file, returning it as a part still under its `.partial` name.
    fn close(self) -> io::Result<Part> {
        let file = self.file.into_inner().map_err(|e| annotate(e.into_error(), "writing", &self.partial))?;
        file.sync_all().map_err(|e| annotate(e, "syncing", &self.partial))?;
        Ok(Part { path: self.partial, size: self.size, sha256: format!("{:x}", self.hasher.finalize()) })
    }
}

impl Files {
    /// Reserves the archive's name by creating its first `.partial` file exclusively, then
    /// makes sure no other file of the archive exists: an export that chose the name at the same
    /// moment either failed to create the same file, or wrote under the other layout (split or
    /// not) and is seen here, or already finished and its archive is seen here.
    fn create(path: &Path, max_part_size: Option<u64>) -> anyhow::Result<Files> {
        let first = partial_path(path, max_part_size, 1);
        let file = match File::options().write(true).create_new(true).open(&first) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(anyhow!(Taken { archive: path.to_path_buf(), by: first, finished: false }));
            }
            Err(e) => {
                return Err(annotate(e, "creating", &first))
                    .with_context(|| format!("creating archive {}", path.display()));
            }
        };
        let other = match other_file(path, &first) {
            Ok(other) => other,
            Err(e) => {
                let _ = fs::remove_file(&first);
                return Err(e);
            }
        };
        if let Some(other) = other {
            fs::remove_file(&first).with_context(|| format!("removing {}", first.display()))?;
            let finished = !other.as_os_str().to_string_lossy().ends_with(PARTIAL);
            return Err(anyhow!(Taken { archive: path.to_path_buf(), by: other, finished }));
        }
        let current =
            Current { partial: first, file: BufWriter::with_capacity(BUFFER, file), size: 0, hasher: Sha256::new() };
        Ok(Files { path: path.to_path_buf(), max_part_size, current, closed: Vec::new() })
    }

    /// Closes the current part and starts the next one.
    fn next_part(&mut self) -> io::Result<()> {
        let next = Current::create(partial_path(&self.path, self.max_part_size, self.closed.len() + 2))?;
        let done = std::mem::replace(&mut self.current, next).close()?;
        self.closed.push(done);
        Ok(())
    }

    fn finish(mut self) -> anyhow::Result<Vec<Part>> {
        let last = self.current.close().with_context(|| format!("finishing archive {}", self.path.display()))?;
        self.closed.push(last);
        let digits = MIN_DIGITS.max(self.closed.len().to_string().len());
        let mut parts = Vec::with_capacity(self.closed.len());
        for (index, part) in self.closed.into_iter().enumerate() {
            let path = match self.max_part_size {
                None => self.path.clone(),
                Some(_) => part_path(&self.path, index + 1, digits),
            };
            fs::rename(&part.path, &path)
                .with_context(|| format!("renaming {} to {}", part.path.display(), path.display()))?;
            parts.push(Part { path, ..part });
        }
        // The renames themselves must survive a crash too.
        let folder = match self.path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        File::open(folder)
            .and_then(|f| f.sync_all())
            .with_context(|| format!("syncing folder {}", folder.display()))?;
        Ok(parts)
    }
}

impl Write for Files {
    /// Takes all of `buf`, starting new parts as needed. A short write would be allowed by
    /// `Write`, but age writes its header with a single `write` and fails on a short one.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut rest = buf;
        while !rest.is_empty() {
            let room = match self.max_part_size {
                None => rest.len(),
                Some(max) => {
                    // A new part starts only when there is something to put in it: an archive
                    // that fills its last part exactly has no empty part after it.
                    if self.current.size >= max {
                        self.next_part()?;
                    }
                    usize::try_from(max - self.current.size).map_or(rest.len(), |room| room.min(rest.len()))
                }
            };
            let (piece, after) = rest.split_at(room);
            let current = &mut self.current;
            current.file.write_all(piece).map_err(|e| annotate(e, "writing", &current.partial))?;
            current.hasher.update(piece);
            current.size += piece.len() as u64;
            rest = after;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.current.file.flush().map_err(|e| annotate(e, "writing", &self.current.partial))
    }
}

/// Keeps the kind of an I/O error and adds the operation and file to its message.
fn annotate(error: io::Error, operation: &str, path: &Path) -> io::Error {
    io::Error::new(error.kind(), format!("{operation} {}: {error}", path.display()))
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = OsString::from(path.as_os_str());
    name.push(suffix);
    PathBuf::from(name)
}

/// `path.part-001` and so on, with at least `digits` digits.
fn part_path(path: &Path, number: usize, digits: usize) -> PathBuf {
    with_suffix(path, &format!(".part-{number:0digits$}"))
}

/// The name a file has while it is written. Part numbers get their final width at the end.
fn partial_path(path: &Path, max_part_size: Option<u64>, number: usize) -> PathBuf {
    match max_part_size {
        None => with_suffix(path, PARTIAL),
        Some(_) => with_suffix(&part_path(path, number, MIN_DIGITS), PARTIAL),
    }
}

/// A file of the archive at `path` other than `ours`: the archive, any first part, or the first
/// `.partial` file of either layout.
fn other_file(path: &Path, ours: &Path) -> anyhow::Result<Option<PathBuf>> {
    let mut candidates = vec![path.to_path_buf(), partial_path(path, None, 1), partial_path(path, Some(1), 1)];
    candidates.extend((MIN_DIGITS..=20).map(|digits| part_path(path, 1, digits)));
    for candidate in candidates {
        if candidate != ours && exists(&candidate)? {
            return Ok(Some(candidate));
        }
    }
    Ok(None)
}

/// An archive name another export holds, or an archive already has: the export should pick
/// another name.
#[derive(Debug)]
pub struct Taken {
    pub archive: PathBuf,
    /// The file found under the name.
    pub by: PathBuf,
    /// A finished archive, not another export still writing.
    pub finished: bool,
}

impl fmt::Display for Taken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.finished {
            write!(
                f,
                "creating archive {}: {} already exists, refusing to overwrite it",
                self.archive.display(),
                self.by.display()
            )
        } else {
            write!(
                f,
                "creating archive {}: another export is writing {} (or one was interrupted there)",
                self.archive.display(),
                self.by.display()
            )
        }
    }
}

impl std::error::Error for Taken {}

/// Whether anything, even a dangling symlink, is at `path`.
fn exists(path: &Path) -> anyhow::Result<bool> {
    match fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).with_context(|| format!("looking for {}", path.display())),
    }
}

/// How many digits the part numbers of the archive at `path` have, if it has a first part.
fn first_part_digits(path: &Path) -> anyhow::Result<Option<usize>> {
    for digits in MIN_DIGITS..=20 {
        if exists(&part_path(path, 1, digits))? {
            return Ok(Some(digits));
        }
    }
    Ok(None)
}

/// Splits `x.part-001` into `x`, 1 and 3 (the number of digits).
fn split_part_name(path: &Path) -> Option<(PathBuf, usize, usize)> {
    let name = path.file_name()?.to_str()?;
    let (base, number) = name.rsplit_once(".part-")?;
    if base.is_empty() || number.len() < MIN_DIGITS || !number.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((path.with_file_name(base), number.parse().ok()?, number.len()))
}

/// All files of an archive in order: `path` alone, or every part from `part-001` until the next
/// number is absent. `path` may be the archive's name or its first part.
pub fn files(path: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let (base, digits) = if let Some((base, number, digits)) = split_part_name(path) {
        anyhow::ensure!(
            number == 1,
            "{} is part {number} of an archive: open its first part, {}",
            path.display(),
            part_path(&base, 1, digits).display()
        );
        anyhow::ensure!(exists(path)?, "opening archive {}: no such file", path.display());
        (base, digits)
    } else if exists(path)? {
        return Ok(vec![path.to_path_buf()]);
    } else if let Some(digits) = first_part_digits(path)? {
        (path.to_path_buf(), digits)
    } else {
        anyhow::bail!(
            "opening archive {}: no such file, and no {} either",
            path.display(),
            part_path(path, 1, MIN_DIGITS).display()
        );
    };
    let mut parts = Vec::new();
    loop {
        let part = part_path(&base, parts.len() + 1, digits);
        if !exists(&part)? {
            return Ok(parts);
        }
        parts.push(part);
    }
}

/// The files of an archive read one after the other, each opened only when reached.
struct Joined {
    next: std::vec::IntoIter<PathBuf>,
    current: Option<(PathBuf, File)>,
}

impl Joined {
    fn open(files: Vec<PathBuf>) -> io::Result<Joined> {
        let mut next = files.into_iter();
        let current = next.next().map(open_file).transpose()?;
        Ok(Joined { next, current })
    }
}

fn open_file(path: PathBuf) -> io::Result<(PathBuf, File)> {
    let file = File::open(&path).map_err(|e| annotate(e, "opening", &path))?;
    Ok((path, file))
}

impl Read for Joined {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while let Some((path, file)) = &mut self.current {
            let read = file.read(buf).map_err(|e| annotate(e, "reading", path))?;
            if read > 0 || buf.is_empty() {
                return Ok(read);
            }
            self.current = self.next.next().map(open_file).transpose()?;
        }
        Ok(0)
    }
}

/// Reads the first `len` bytes (fewer if the stream is shorter), which may span several parts.
fn head(input: &mut impl Read, len: usize) -> io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(len);
    input.take(len as u64).read_to_end(&mut head)?;
    Ok(head)
}

/// Whether the archive at `path` (a name or its first part) is age-encrypted. Reads only its
/// first bytes.
pub fn is_encrypted(path: &Path) -> anyhow::Result<bool> {
    let mut input = Joined::open(files(path)?)?;
    let head = head(&mut input, ARMOR_MAGIC.len()).with_context(|| format!("reading archive {}", path.display()))?;
    Ok(head.starts_with(AGE_MAGIC) || head.starts_with(ARMOR_MAGIC))
}

/// Opens an archive for reading: joins parts when `path` is a first part (`*.part-001`) or when
/// `path` does not exist but `path.part-001` does, decrypts when the stream starts with the age
/// header, and returns the plaintext stream (still compressed: [`super::archive::decompressed`]
/// handles that). Damage inside an encrypted stream shows up as a read error.
pub fn open(path: &Path, identities: &Identities) -> anyhow::Result<Box<dyn BufRead + Send>> {
    let mut joined = Joined::open(files(path)?)?;
    let head = head(&mut joined, ARMOR_MAGIC.len()).with_context(|| format!("reading archive {}", path.display()))?;
    anyhow::ensure!(
        !head.starts_with(ARMOR_MAGIC),
        "{} is an ASCII-armored age file; Lifeboat reads binary age files: decrypt it with `age -d` first",
        path.display()
    );
    let encrypted = head.starts_with(AGE_MAGIC);
    let input = BufReader::with_capacity(BUFFER, io::Cursor::new(head).chain(joined));
    if !encrypted {
        return Ok(Box::new(input));
    }
    anyhow::ensure!(
        !identities.keys.is_empty(),
        "{} is encrypted with age: give --identity FILE (an age identity or the SSH private key of one of its recipients)",
        path.display()
    );
    let damaged = |e: age::DecryptError| anyhow!("{} is damaged or not an age file: {e}", path.display());
    let decryptor = age::Decryptor::new_buffered(input).map_err(damaged)?;
    anyhow::ensure!(
        !decryptor.is_scrypt(),
        "{} is encrypted with a passphrase, not to recipients: decrypt it with `age -d` first",
        path.display()
    );
    let plain =
        decryptor.decrypt(identities.keys.iter().map(|k| k.as_ref() as &dyn age::Identity)).map_err(|e| match e {
            age::DecryptError::NoMatchingKeys => anyhow!(
                "none of the identities in {} can decrypt {}: it was encrypted to other recipients",
                identities.names(),
                path.display()
            ),
            e => damaged(e),
        })?;
    Ok(Box::new(BufReader::with_capacity(BUFFER, Decrypting { archive: path.to_path_buf(), plain })))
}

/// Names the archive in errors from age's reader, which says only "decryption error".
struct Decrypting<R> {
    archive: PathBuf,
    plain: R,
}

impl<R: Read> Read for Decrypting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.plain.read(buf).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("decrypting {}: {e} (the archive is damaged or cut short)", self.archive.display()),
            )
        })
    }
}

/// The keys that decrypt archives, and the files they came from (for messages).
pub struct Identities {
    files: Vec<PathBuf>,
    keys: Vec<Box<dyn age::Identity + Send + Sync>>,
}

impl fmt::Debug for Identities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identities").field("files", &self.files).field("keys", &self.keys.len()).finish()
    }
}

impl Identities {
    /// No identities: plain archives open, encrypted ones are refused.
    pub fn none() -> Self {
        Identities { files: Vec::new(), keys: Vec::new() }
    }

    /// No identity was given.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Each file is an age identity file (AGE-SECRET-KEY-1..., comments allowed) or an
    /// unencrypted OpenSSH private key (ed25519 or rsa).
    pub fn load(files: &[PathBuf]) -> anyhow::Result<Self> {
        let mut keys = Vec::new();
        for file in files {
            keys.extend(load_identity_file(file)?);
        }
        Ok(Identities { files: files.to_vec(), keys })
    }

    /// `a, b` for messages.
    fn names(&self) -> String {
        self.files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>().join(", ")
    }
}

fn load_identity_file(path: &Path) -> anyhow::Result<Vec<Box<dyn age::Identity + Send + Sync>>> {
    let shown = path.display();
    let file = File::open(path).with_context(|| format!("reading identity file {shown}"))?;
    let capacity = file.metadata().map_or(0, |m| m.len().min(IDENTITY_FILE_LIMIT)) as usize;
    let mut bytes = Vec::with_capacity(capacity + 1);
    file.take(IDENTITY_FILE_LIMIT + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("reading identity file {shown}"))?;
    anyhow::ensure!(
        bytes.len() as u64 <= IDENTITY_FILE_LIMIT,
        "identity file {shown} is over 1 MiB: {EXPECTED_IDENTITY}"
    );
    // Zeroed when dropped: the file holds secret keys.
    let text = SecretString::from(
        String::from_utf8(bytes).map_err(|_| anyhow!("identity file {shown} is not text: {EXPECTED_IDENTITY}"))?,
    );
    let text = text.expose_secret();
    let first_line = text.lines().map(str::trim).find(|l| !l.is_empty() && !l.starts_with('#'));
    if first_line.is_some_and(|l| l.starts_with("-----BEGIN")) {
        let identity = age::ssh::Identity::from_buffer(text.as_bytes(), Some(shown.to_string()))
            .map_err(|e| anyhow!("identity file {shown} is not a usable SSH private key ({e}): {EXPECTED_IDENTITY}"))?;
        return match identity {
            age::ssh::Identity::Unencrypted(_) => Ok(vec![Box::new(identity)]),
            age::ssh::Identity::Encrypted(_) => anyhow::bail!(
                "identity file {shown} is a passphrase-protected SSH key, and Lifeboat cannot ask for the \
                 passphrase: {EXPECTED_IDENTITY}; remove the passphrase from a copy (`ssh-keygen -p`) or use an \
                 age identity"
            ),
            age::ssh::Identity::Unsupported(key) => {
                anyhow::bail!("identity file {shown} is an SSH key age cannot use: {}", Unsupported(&key))
            }
        };
    }
    let identities = age::IdentityFile::from_buffer(text.as_bytes())
        .map_err(|e| anyhow!("reading identity file {shown}: {e}; {EXPECTED_IDENTITY}"))?
        .into_identities()
        .map_err(|e| anyhow!("reading identity file {shown}: {e}"))?;
    anyhow::ensure!(!identities.is_empty(), "identity file {shown} holds no identity: {EXPECTED_IDENTITY}");
    Ok(identities)
}

/// age explains an unsupported SSH key through a method rather than `Display`.
struct Unsupported<'a>(&'a age::ssh::UnsupportedKey);

impl fmt::Display for Unsupported<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.display(f, None)
    }
}

#[cfg(test)]
mod tests;

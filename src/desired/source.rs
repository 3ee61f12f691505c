//! Where desired-state files come from: a directory on disk here, a Git tree in `git`.
//!
//! A source lists its YAML files with their text and answers whether another file (a key, a CA
//! bundle) exists, so the loader can check references to files without knowing where they live.
//! A file that cannot be taken as desired state (unreadable, not UTF-8, larger than
//! [`MAX_FILE_BYTES`], or under a name that is not UTF-8) is listed with the reason, never
//! skipped, and a file over the limit is never read past it.

use std::ffi::OsStr;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use anyhow::Context;

/// The largest desired-state file Lifeboat reads: far above any real one (a MirrorSet listing
/// 80,000 tags is under 1 MiB), and small enough that loading stays quick and small.
pub const MAX_FILE_BYTES: u64 = 4 << 20;

/// One YAML file of the desired state.
#[derive(Debug, Clone)]
pub struct SourceFile {
    /// Path relative to the root of the desired state, with `/` separators. A name that is not
    /// UTF-8 is written as [`shown`] writes it.
    pub path: String,
    /// How diagnostics name the file: a path the user typed, or `REV:path`.
    pub display: String,
    /// The text, or why it cannot be taken as desired state.
    pub text: Result<String, Unreadable>,
}

/// Why a desired-state file cannot be taken as desired state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unreadable {
    /// Reading it failed.
    Io(String),
    /// Its bytes are not UTF-8 text.
    NotUtf8,
    /// Its name (or a folder's on its path) is not UTF-8, so it cannot be named in references,
    /// status or Git reliably.
    NameNotUtf8,
    /// Larger than [`MAX_FILE_BYTES`]: `bytes` at least; `line` is where the limit falls, when
    /// the start of the file was read.
    TooLarge { bytes: u64, line: Option<usize> },
}

impl Unreadable {
    /// What is wrong, in words.
    pub fn message(&self) -> String {
        match self {
            Unreadable::Io(e) => format!("cannot read the file: {e}"),
            Unreadable::NotUtf8 => "the file is not UTF-8 text".into(),
            Unreadable::NameNotUtf8 => "the file name is not UTF-8, so Lifeboat does not read the file".into(),
            Unreadable::TooLarge { bytes, .. } => format!(
                "the file is {}, above the {} limit for a desired-state file; it was not parsed",
                bytesize::ByteSize::b(*bytes).display().iec(),
                bytesize::ByteSize::b(MAX_FILE_BYTES).display().iec()
            ),
        }
    }

    /// How to fix it.
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            Unreadable::Io(_) => None,
            Unreadable::NotUtf8 => Some("save the file as UTF-8"),
            Unreadable::NameNotUtf8 => Some(
                "rename it (and any folder on its path) to a UTF-8 name, for example with `convmv -f latin1 -t utf8`",
            ),
            Unreadable::TooLarge { .. } => Some(
                "desired-state files are small (a MirrorSet of 80,000 tags is under 1 MiB): split the documents over \
                 several files, or choose tags with tagRules instead of listing them",
            ),
        }
    }

    /// The line to point at, when there is one.
    pub fn line(&self) -> Option<usize> {
        match self {
            Unreadable::TooLarge { line, .. } => *line,
            _ => None,
        }
    }
}

/// `text`, unless it is larger than [`MAX_FILE_BYTES`].
pub fn within_limit(text: String) -> Result<String, Unreadable> {
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(too_large(text.len() as u64, text.as_bytes()));
    }
    Ok(text)
}

/// A file of at least `bytes` bytes that starts with `head`: the limit falls on the line of the
/// first byte past it.
fn too_large(bytes: u64, head: &[u8]) -> Unreadable {
    let limit = usize::try_from(MAX_FILE_BYTES).unwrap_or(usize::MAX);
    let line = (head.len() > limit).then(|| head[..limit].iter().filter(|b| **b == b'\n').count() + 1);
    Unreadable::TooLarge { bytes, line }
}

/// Reads the file at `path` as text, never more than one byte past [`MAX_FILE_BYTES`].
fn read_text(path: &Path) -> Result<String, Unreadable> {
    let file = std::fs::File::open(path).map_err(|e| Unreadable::Io(e.to_string()))?;
    let length = file.metadata().map_err(|e| Unreadable::Io(e.to_string()))?.len();
    let mut bytes = Vec::with_capacity(usize::try_from(length.min(MAX_FILE_BYTES) + 1).unwrap_or(0));
    file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes).map_err(|e| Unreadable::Io(e.to_string()))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(too_large(length.max(bytes.len() as u64), &bytes));
    }
    String::from_utf8(bytes).map_err(|_| Unreadable::NotUtf8)
}

/// A name as text, with every byte that is not UTF-8 written `\xNN`: how a name that is not
/// UTF-8 is shown.
pub fn shown(name: &[u8]) -> String {
    let mut out = String::new();
    for chunk in name.utf8_chunks() {
        out.push_str(chunk.valid());
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02X}"));
        }
    }
    out
}

#[cfg(unix)]
fn name_bytes(name: &OsStr) -> &[u8] {
    use std::os::unix::ffi::OsStrExt as _;
    name.as_bytes()
}

#[cfg(not(unix))]
fn name_bytes(name: &OsStr) -> &[u8] {
    name.as_encoded_bytes()
}

/// A tree of desired-state files.
pub trait Source {
    /// Every `*.yaml` and `*.yml` file, sorted by path; hidden files and folders are skipped.
    fn yaml_files(&self) -> anyhow::Result<Vec<SourceFile>>;
    /// Whether `path` (relative to the root, `/`-separated) is a file in this tree.
    fn has_file(&self, path: &str) -> bool;
    /// How to name the root in messages.
    fn describe(&self) -> String;
}

/// Whether a file name is a desired-state document by its extension.
pub fn is_yaml(name: &str) -> bool {
    name.ends_with(".yaml") || name.ends_with(".yml")
}

/// Whether a path component is hidden (`.git`, `.github`, editor files).
pub fn is_hidden(name: &str) -> bool {
    name.starts_with('.')
}

/// A directory on disk.
#[derive(Debug, Clone)]
pub struct DirectorySource {
    root: PathBuf,
    /// How files are named in messages: under this prefix instead of the folder's path.
    prefix: Option<String>,
}

impl DirectorySource {
    pub fn new(root: impl Into<PathBuf>) -> anyhow::Result<Self> {
        let root = root.into();
        let meta = std::fs::metadata(&root).with_context(|| format!("reading desired state at {}", root.display()))?;
        anyhow::ensure!(
            meta.is_dir(),
            "{} is not a directory: give the folder that holds the desired-state YAML files",
            root.display()
        );
        Ok(DirectorySource { root, prefix: None })
    }

    /// Files named `PREFIX<path>` in messages and status, such as `desired/mirrors.yaml` for a
    /// folder exported from a Git repository.
    pub fn named(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = Some(prefix.into());
        self
    }

    /// Lists the YAML files under `dir`, whose path relative to the root is `relative`;
    /// `utf8` is false once a folder on the way has a name that is not UTF-8.
    fn walk(&self, dir: &Path, relative: &str, utf8: bool, out: &mut Vec<SourceFile>) -> anyhow::Result<()> {
        let mut entries = std::fs::read_dir(dir)
            .with_context(|| format!("listing {}", dir.display()))?
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("listing {}", dir.display()))?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let file_name = entry.file_name();
            let name_utf8 = file_name.to_str().is_some();
            let name = shown(name_bytes(&file_name));
            if is_hidden(&name) {
                continue;
            }
            let path = if relative.is_empty() { name.clone() } else { format!("{relative}/{name}") };
            let file_type = entry.file_type().with_context(|| format!("reading {}", entry.path().display()))?;
            if file_type.is_dir() {
                self.walk(&entry.path(), &path, utf8 && name_utf8, out)?;
            } else if is_yaml(&name) {
                let text = if utf8 && name_utf8 { read_text(&entry.path()) } else { Err(Unreadable::NameNotUtf8) };
                let display = match &self.prefix {
                    Some(prefix) => format!("{prefix}{path}"),
                    None => self.root.join(&path).display().to_string(),
                };
                out.push(SourceFile { display, path, text });
            }
        }
        Ok(())
    }
}

impl Source for DirectorySource {
    fn yaml_files(&self) -> anyhow::Result<Vec<SourceFile>> {
        let mut files = Vec::new();
        self.walk(&self.root, "", true, &mut files)?;
        Ok(files)
    }

    fn has_file(&self, path: &str) -> bool {
        self.root.join(path).is_file()
    }

    fn describe(&self) -> String {
        self.root.display().to_string()
    }
}

/// Files held in memory: for tests and generated states.
#[derive(Debug, Clone, Default)]
pub struct MemorySource {
    pub files: std::collections::BTreeMap<String, String>,
}

impl Source for MemorySource {
    fn yaml_files(&self) -> anyhow::Result<Vec<SourceFile>> {
        Ok(self
            .files
            .iter()
            .filter(|(path, _)| is_yaml(path) && !path.split('/').any(is_hidden))
            .map(|(path, text)| SourceFile {
                path: path.clone(),
                display: path.clone(),
                text: within_limit(text.clone()),
            })
            .collect())
    }

    fn has_file(&self, path: &str) -> bool {
        self.files.contains_key(path)
    }

    fn describe(&self) -> String {
        "memory".into()
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;
    use std::os::unix::ffi::OsStrExt as _;

    use super::*;

    fn only(source: &DirectorySource) -> SourceFile {
        let mut files = source.yaml_files().unwrap();
        assert_eq!(files.len(), 1, "{files:?}");
        files.remove(0)
    }

    #[test]
    fn a_file_over_the_limit_is_refused_with_the_line_the_limit_falls_on() {
        let dir = tempfile::tempdir().unwrap();
        let line = "a".repeat(1023) + "\n";
        let text = line.repeat(5 * 1024);
        std::fs::write(dir.path().join("big.yaml"), &text).unwrap();
        let file = only(&DirectorySource::new(dir.path()).unwrap());
        // 4 MiB are 4096 lines of 1 KiB: the first byte past the limit is on line 4097.
        assert_eq!(file.text, Err(Unreadable::TooLarge { bytes: text.len() as u64, line: Some(4097) }));
        let message = file.text.unwrap_err().message();
        assert_eq!(message, "the file is 5.0 MiB, above the 4.0 MiB limit for a desired-state file; it was not parsed");
        // Exactly at the limit is fine.
        std::fs::write(dir.path().join("big.yaml"), &text[..MAX_FILE_BYTES as usize]).unwrap();
        assert!(only(&DirectorySource::new(dir.path()).unwrap()).text.is_ok());
    }

    /// A 50 MB scalar cost 588 MiB to refuse. Read from a pipe, whose size is unknown until it
    /// ends, the file is still read no further than the limit: the writer finds the pipe closed
    /// soon after it.
    #[test]
    fn a_file_over_the_limit_is_never_read_past_it() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("endless.yaml");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
        assert!(made.success());
        let writer = std::thread::spawn({
            let fifo = fifo.clone();
            move || {
                let mut pipe = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
                let chunk = vec![b'a'; 64 * 1024];
                let mut written = 0u64;
                while written < 50_000_000 && pipe.write_all(&chunk).is_ok() {
                    written += chunk.len() as u64;
                }
                written
            }
        });
        let file = only(&DirectorySource::new(dir.path()).unwrap());
        assert!(matches!(file.text, Err(Unreadable::TooLarge { bytes, .. }) if bytes > MAX_FILE_BYTES), "{file:?}");
        let written = writer.join().unwrap();
        assert!(written < MAX_FILE_BYTES + (1 << 20), "{written} bytes went into the pipe");
    }

    #[test]
    fn files_whose_names_are_not_utf8_are_listed_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(OsStr::from_bytes(b"caf\xe9.yaml")), "a: 1\n").unwrap();
        let folder = dir.path().join(OsStr::from_bytes(b"d\xffir"));
        std::fs::create_dir(&folder).unwrap();
        std::fs::write(folder.join("inside.yml"), "a: 1\n").unwrap();
        std::fs::write(folder.join("notes.txt"), "not desired state\n").unwrap();
        std::fs::write(dir.path().join(OsStr::from_bytes(b"n\xe9.txt")), "neither\n").unwrap();
        std::fs::write(dir.path().join("ok.yaml"), "a: 1\n").unwrap();
        let files = DirectorySource::new(dir.path()).unwrap().named("desired/").yaml_files().unwrap();
        let listed: Vec<(&str, &str, bool)> =
            files.iter().map(|f| (f.path.as_str(), f.display.as_str(), f.text.is_ok())).collect();
        assert_eq!(
            listed,
            [
                ("caf\\xE9.yaml", "desired/caf\\xE9.yaml", false),
                ("d\\xFFir/inside.yml", "desired/d\\xFFir/inside.yml", false),
                ("ok.yaml", "desired/ok.yaml", true),
            ]
        );
        assert_eq!(files[0].text, Err(Unreadable::NameNotUtf8));
        assert!(Unreadable::NameNotUtf8.hint().unwrap().contains("rename"));
    }

    #[test]
    fn names_are_shown_with_their_odd_bytes_escaped() {
        assert_eq!(shown(b"plain.yaml"), "plain.yaml");
        assert_eq!(shown("é.yaml".as_bytes()), "é.yaml");
        assert_eq!(shown(b"\xc3(\xff.yaml"), "\\xC3(\\xFF.yaml");
    }
}

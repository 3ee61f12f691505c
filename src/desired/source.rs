//! Where desired-state files come from: a directory on disk here, a Git tree in `git`.
//!
//! A source lists its YAML files with their text and answers whether another file (a key, a CA
//! bundle) exists, so the loader can check references to files without knowing where they live.

use std::path::{Path, PathBuf};

use anyhow::Context;

/// One YAML file of the desired state.
#[derive(Debug, Clone)]
pub struct SourceFile {
    /// Path relative to the root of the desired state, with `/` separators.
    pub path: String,
    /// How diagnostics name the file: a path the user typed, or `REV:path`.
    pub display: String,
    /// The text, or why it could not be read as UTF-8 text.
    pub text: Result<String, String>,
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

    fn walk(&self, dir: &Path, relative: &str, out: &mut Vec<SourceFile>) -> anyhow::Result<()> {
        let mut entries = std::fs::read_dir(dir)
            .with_context(|| format!("listing {}", dir.display()))?
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("listing {}", dir.display()))?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if is_hidden(&name) {
                continue;
            }
            let path = if relative.is_empty() { name.clone() } else { format!("{relative}/{name}") };
            let file_type = entry.file_type().with_context(|| format!("reading {}", entry.path().display()))?;
            if file_type.is_dir() {
                self.walk(&entry.path(), &path, out)?;
            } else if is_yaml(&name) {
                let text = std::fs::read(entry.path())
                    .map_err(|e| format!("cannot read the file: {e}"))
                    .and_then(|bytes| String::from_utf8(bytes).map_err(|_| "the file is not UTF-8 text".to_string()));
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
        self.walk(&self.root, "", &mut files)?;
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
            .map(|(path, text)| SourceFile { path: path.clone(), display: path.clone(), text: Ok(text.clone()) })
            .collect())
    }

    fn has_file(&self, path: &str) -> bool {
        self.files.contains_key(path)
    }

    fn describe(&self) -> String {
        "memory".into()
    }
}

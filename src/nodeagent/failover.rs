//! The node side of failover: puts the files [`crate::failover`] rendered for this node into
//! the runtime's directory, and reports what the node holds as a [`FailoverReport`].
//!
//! Every write is atomic: a temporary file in the same directory, under a name no runtime reads
//! (`.<name>.lifeboat.tmp`), written, synced and renamed into place, then the directory synced;
//! a host directory that does not exist yet is built aside (`.lifeboat-new-<name>/`) and renamed
//! into place whole, never over one that appeared meanwhile. CA bundles come before the files
//! that name them, and go after them on removal. A crash at any point leaves the old file or the
//! new one, and the leftovers of an interrupted write are recognised by name and removed on the
//! next run. Files are Lifeboat's only when their first line says so ([`marker`]): anything
//! else is reported and never overwritten or deleted, and a directory another writer manages
//! as a whole (Spegel's, k3s's) is refused. Each file is checked before it is written (TOML that
//! containerd or containers/image accepts, a `[host]` table, a CA bundle that parses): a file
//! that fails is a node-level error and its directory is left as it was. Whether the runtime
//! will read the directory is [`super::runtime_config`]'s question.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use serde::Serialize;
use tracing::{debug, info, warn};

use super::runtime_config::RuntimeConfig;
use crate::desired::NodeRuntime;
use crate::failover::marker::{self, Ownership};
use crate::failover::{RenderedFile, Role, ca};

/// The suffix of temporary files: no runtime reads a name ending in it.
const TMP_SUFFIX: &str = ".lifeboat.tmp";
/// The prefix of host directories built aside.
const NEW_DIR_PREFIX: &str = ".lifeboat-new-";
/// How deep Lifeboat's files sit below the runtime's directory (`certs.d/<host>/<file>`).
const DEPTH: usize = 3;

/// Which Lifeboat files that are no longer wanted are removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prune {
    /// Every failover file of Lifeboat's: the caller passes everything this node should have.
    Every,
    /// Only the files of these sets (`lifeboat failover render --set`).
    Sets(BTreeSet<String>),
}

/// What happened to one wanted file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum FileAction {
    /// Written (new, or replacing an older version of Lifeboat's).
    Written,
    /// Already there, byte for byte.
    Unchanged,
    /// Lifeboat's, but edited on the node since: written again.
    Restored,
    /// Another file is at this path: left alone.
    Conflict,
    /// Not written: the directory is refused, or the file or one beside it is unusable.
    Skipped,
    /// Writing failed.
    Failed,
}

/// One wanted file on this node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FileReport {
    /// Relative to the runtime's directory.
    pub path: String,
    pub action: FileAction,
    /// A file is at the path.
    pub present: bool,
    /// The file at the path is byte for byte what was rendered.
    pub hash_matches: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// This node's failover files for one runtime, for its inventory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FailoverReport {
    pub runtime: NodeRuntime,
    /// The directory written to, as the node sees it.
    pub dir: String,
    pub files: Vec<FileReport>,
    /// Lifeboat's files that left the desired state, removed.
    pub removed: Vec<String>,
    /// Leftovers of an interrupted write, removed.
    pub cleaned: Vec<String>,
    /// Whether the runtime reads the directory, and if not, what to change.
    pub runtime_config: RuntimeConfig,
    /// What the runtime needs to pick changes up.
    pub reload: String,
    /// What concerns the node rather than one file: a refused directory, an unusable file.
    pub errors: Vec<String>,
}

impl FailoverReport {
    /// Every file present as rendered, the runtime reads them, and nothing went wrong.
    pub fn configured(&self) -> bool {
        self.errors.is_empty() && self.runtime_config.ok && self.files.iter().all(|f| f.present && f.hash_matches)
    }
}

/// What `runtime` needs to pick changes up, in words for the report.
pub fn reload(runtime: NodeRuntime) -> &'static str {
    match runtime {
        NodeRuntime::Containerd => "nothing: containerd reads hosts.toml on every pull",
        NodeRuntime::Crio => {
            "send SIGHUP to crio (or set auto_reload_registries = true, CRI-O 1.30 and later); podman and skopeo read \
             the files on every run"
        }
        NodeRuntime::K3s => "restart k3s (or rke2-server / rke2-agent): it reads registries.yaml when it starts",
    }
}

/// Puts `files` into `dir` for `runtime` and removes what [`Prune`] says left the desired
/// state. The runtime configuration check is the caller's, and goes into the report as given.
pub fn sync(
    runtime: NodeRuntime,
    dir: &Path,
    files: &[RenderedFile],
    prune: &Prune,
    runtime_config: RuntimeConfig,
) -> FailoverReport {
    let mut report = FailoverReport {
        runtime,
        dir: dir.display().to_string(),
        files: Vec::new(),
        removed: Vec::new(),
        cleaned: Vec::new(),
        runtime_config,
        reload: reload(runtime).to_string(),
        errors: Vec::new(),
    };
    let skip_all = |report: &mut FailoverReport, why: &str| {
        report.files = files.iter().map(|f| observe(dir, f, FileAction::Skipped, Some(why.to_string()))).collect();
    };
    match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => {
            report.errors.push(format!("{} is not a directory", dir.display()));
            skip_all(&mut report, "the directory is unusable");
            return report;
        }
        Err(e) => {
            report.errors.push(format!(
                "{} cannot be used ({e}): Lifeboat never creates a runtime's configuration directory; is {runtime} \
                 installed on this node, and the directory mounted?",
                dir.display()
            ));
            skip_all(&mut report, "the directory is unusable");
            return report;
        }
    }
    report.cleaned = clean_leftovers(dir);
    if let Some(why) = refusal(runtime, dir) {
        warn!(dir = %dir.display(), reason = %why, "refusing the directory");
        report.errors.push(why);
        skip_all(&mut report, "the directory is managed by another tool");
        return report;
    }
    // Files to write, grouped by directory: a bad file keeps its whole directory as it is.
    let mut groups: BTreeMap<String, Vec<&RenderedFile>> = BTreeMap::new();
    for file in files {
        groups.entry(parent_of(&file.path).to_string()).or_default().push(file);
    }
    let mut results: BTreeMap<String, FileReport> = BTreeMap::new();
    for (group, members) in &groups {
        let problems: Vec<String> = members.iter().filter_map(|f| check(f).err()).collect();
        if !problems.is_empty() {
            for p in &problems {
                warn!(dir = %dir.display(), problem = %p, "not writing an unusable file");
            }
            report.errors.extend(problems);
            for f in members {
                let why = format!("{} has an unusable file: nothing in it was changed", describe_dir(group));
                results.insert(f.path.clone(), observe(dir, f, FileAction::Skipped, Some(why)));
            }
            continue;
        }
        for r in write_group(dir, group, members) {
            results.insert(r.path.clone(), r);
        }
    }
    report.files = files.iter().filter_map(|f| results.remove(&f.path)).collect();
    let wanted: BTreeSet<&str> = files.iter().map(|f| f.path.as_str()).collect();
    match remove_unwanted(dir, &wanted, prune) {
        Ok(removed) => report.removed = removed,
        Err(e) => report.errors.push(e),
    }
    info!(
        runtime = %runtime,
        dir = %dir.display(),
        written = report.files.iter().filter(|f| matches!(f.action, FileAction::Written | FileAction::Restored)).count(),
        conflicts = report.files.iter().filter(|f| f.action == FileAction::Conflict).count(),
        removed = report.removed.len(),
        "failover files synced"
    );
    report
}

/// The parent of a relative path, `""` at the top.
fn parent_of(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(p, _)| p)
}

fn describe_dir(group: &str) -> String {
    if group.is_empty() { "the directory".to_string() } else { format!("{group}/") }
}

/// Checks a rendered file as its runtime will read it.
fn check(file: &RenderedFile) -> Result<(), String> {
    let path = &file.path;
    if !matches!(marker::ownership(file.content.as_bytes()), Ownership::Lifeboat { intact: true, .. }) {
        return Err(format!("{path} does not carry an intact ownership line"));
    }
    if path.split('/').any(|c| c.is_empty() || c == "." || c == ".." || c.starts_with('.')) {
        return Err(format!("{path} is not a plain relative path"));
    }
    let name = path.rsplit('/').next().unwrap_or(path);
    if file.role == Role::Ca {
        return ca::check(file.content.as_bytes())
            .map(|_| ())
            .map_err(|why| format!("the mirror CA bundle {path} is unusable: {why}"));
    }
    if name == "hosts.toml" {
        let table: toml::Table = toml::from_str(&file.content).map_err(|e| format!("{path} is not valid TOML: {e}"))?;
        let hosts = table.get("host").and_then(toml::Value::as_table).map_or(0, toml::Table::len);
        if hosts == 0 {
            return Err(format!(
                "{path} has no [host] table, and containerd 1.6 and 1.7 ignore such a file without a word"
            ));
        }
    } else if name.ends_with(".conf") {
        let table: toml::Table = toml::from_str(&file.content).map_err(|e| format!("{path} is not valid TOML: {e}"))?;
        if table.get("registry").and_then(toml::Value::as_array).is_none() {
            return Err(format!("{path} has no [[registry]] table"));
        }
    } else if name.ends_with(".yaml") {
        serde_yaml::from_str::<serde_yaml::Value>(&file.content)
            .map_err(|e| format!("{path} is not valid YAML: {e}"))?;
    }
    Ok(())
}

/// The state of a wanted file on the node, with `action` and `reason` as given.
fn observe(dir: &Path, file: &RenderedFile, action: FileAction, reason: Option<String>) -> FileReport {
    let on_node = std::fs::read(dir.join(&file.path)).ok();
    FileReport {
        path: file.path.clone(),
        action,
        present: on_node.is_some(),
        hash_matches: on_node.as_deref() == Some(file.content.as_bytes()),
        reason,
    }
}

/// Writes the files of one directory (relative `group`), CA bundles first.
fn write_group(dir: &Path, group: &str, members: &[&RenderedFile]) -> Vec<FileReport> {
    let mut ordered: Vec<&RenderedFile> = members.to_vec();
    ordered.sort_by_key(|f| (f.role, f.path.clone()));
    // A linked directory leads somewhere Lifeboat was not asked to write.
    let mut path = String::new();
    for component in group.split('/').filter(|c| !c.is_empty()) {
        path = if path.is_empty() { component.to_string() } else { format!("{path}/{component}") };
        if std::fs::symlink_metadata(dir.join(&path)).is_ok_and(|m| m.file_type().is_symlink()) {
            let why = format!("{} is a symbolic link: left alone", dir.join(&path).display());
            warn!(reason = %why, "conflict");
            return ordered.iter().map(|f| observe(dir, f, FileAction::Conflict, Some(why.clone()))).collect();
        }
    }
    // A CA bundle is only of use to the file beside it: when that one is someone else's, the
    // directory is left alone.
    let conflicts: Vec<(&str, String)> = ordered
        .iter()
        .filter(|f| f.role == Role::Config)
        .filter_map(|f| foreign_at(&dir.join(&f.path)).map(|why| (f.path.as_str(), why)))
        .collect();
    if !conflicts.is_empty() {
        return ordered
            .iter()
            .map(|f| match conflicts.iter().find(|(p, _)| *p == f.path) {
                Some((_, why)) => {
                    warn!(reason = %why, "conflict");
                    observe(dir, f, FileAction::Conflict, Some(why.clone()))
                }
                None => observe(
                    dir,
                    f,
                    FileAction::Skipped,
                    Some(format!("{} holds another's file: nothing in it was changed", describe_dir(group))),
                ),
            })
            .collect();
    }
    // The first missing directory on the way: built aside with everything below it, and renamed
    // into place.
    if let Some(missing) = first_missing(dir, group) {
        match build_aside(dir, &missing, &ordered) {
            Ok(()) => {
                info!(dir = %dir.join(&missing).display(), "created a directory with its files");
                return ordered.iter().map(|f| observe(dir, f, FileAction::Written, None)).collect();
            }
            Err(AsideError::Appeared) => {
                debug!(dir = %dir.join(&missing).display(), "the directory appeared meanwhile; writing into it");
            }
            Err(AsideError::Io(e)) => {
                let why = format!("creating {}: {e}", dir.join(&missing).display());
                warn!(reason = %why, "could not write failover files");
                return ordered.iter().map(|f| observe(dir, f, FileAction::Failed, Some(why.clone()))).collect();
            }
        }
    }
    ordered.iter().map(|f| write_one(dir, f)).collect()
}

/// The shallowest directory of `group` (relative to `dir`) that does not exist.
fn first_missing(dir: &Path, group: &str) -> Option<String> {
    if group.is_empty() {
        return None;
    }
    let mut path = String::new();
    for component in group.split('/') {
        if !path.is_empty() {
            path.push('/');
        }
        path.push_str(component);
        if std::fs::symlink_metadata(dir.join(&path)).is_err() {
            return Some(path);
        }
    }
    None
}

enum AsideError {
    /// The target directory was created by someone else meanwhile.
    Appeared,
    Io(std::io::Error),
}

/// Builds `missing` (relative to `dir`) as `.lifeboat-new-<name>` beside it, with every file of
/// `files` that goes below it, and renames it into place unless the target exists by then.
fn build_aside(dir: &Path, missing: &str, files: &[&RenderedFile]) -> Result<(), AsideError> {
    let target = dir.join(missing);
    let parent = target.parent().unwrap_or(dir).to_path_buf();
    let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let aside = parent.join(format!("{NEW_DIR_PREFIX}{name}"));
    let io = AsideError::Io;
    if aside.exists() {
        std::fs::remove_dir_all(&aside).map_err(io)?;
    }
    std::fs::create_dir(&aside).map_err(io)?;
    let result = (|| {
        for file in files {
            let below = file.path.strip_prefix(missing).unwrap_or(&file.path).trim_start_matches('/');
            let path = aside.join(below);
            if let Some(p) = path.parent() {
                std::fs::create_dir_all(p)?;
            }
            write_synced(&path, file)?;
            sync_dir(path.parent().unwrap_or(&aside))?;
        }
        sync_dir(&aside)?;
        rustix::fs::renameat_with(
            rustix::fs::CWD,
            &aside,
            rustix::fs::CWD,
            &target,
            rustix::fs::RenameFlags::NOREPLACE,
        )
        .map_err(std::io::Error::from)?;
        sync_dir(&parent)
    })();
    match result {
        Ok(()) => Ok(()),
        Err(e) => {
            let _ = std::fs::remove_dir_all(&aside);
            if e.kind() == std::io::ErrorKind::AlreadyExists || target.exists() {
                Err(AsideError::Appeared)
            } else {
                Err(AsideError::Io(e))
            }
        }
    }
}

/// Writes one file into an existing directory, unless another's file is there.
fn write_one(dir: &Path, file: &RenderedFile) -> FileReport {
    let path = dir.join(&file.path);
    let action = match std::fs::symlink_metadata(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => FileAction::Written,
        Err(e) => return observe(dir, file, FileAction::Failed, Some(format!("reading {}: {e}", path.display()))),
        Ok(_) => {
            if let Some(why) = foreign_at(&path) {
                warn!(reason = %why, "conflict");
                return observe(dir, file, FileAction::Conflict, Some(why));
            }
            match std::fs::read(&path) {
                Err(e) => {
                    return observe(dir, file, FileAction::Failed, Some(format!("reading {}: {e}", path.display())));
                }
                Ok(existing) if existing == file.content.as_bytes() => {
                    return observe(dir, file, FileAction::Unchanged, None);
                }
                Ok(existing) => match marker::ownership(&existing) {
                    Ownership::Lifeboat { intact: false, .. } => FileAction::Restored,
                    _ => FileAction::Written,
                },
            }
        }
    };
    let tmp = tmp_path(&path);
    let result = write_synced(&tmp, file)
        .and_then(|()| std::fs::rename(&tmp, &path))
        .and_then(|()| sync_dir(path.parent().unwrap_or(dir)));
    match result {
        Ok(()) => {
            let reason = (action == FileAction::Restored).then(|| "it had been edited on the node".to_string());
            info!(file = %path.display(), restored = action == FileAction::Restored, "wrote");
            observe(dir, file, action, reason)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            let why = format!("writing {}: {e}", path.display());
            warn!(reason = %why, "could not write");
            observe(dir, file, FileAction::Failed, Some(why))
        }
    }
}

/// Why the file at `path` is not Lifeboat's to replace, if something is there that is not.
fn foreign_at(path: &Path) -> Option<String> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    if !meta.is_file() {
        return Some(format!("{} is not a regular file (a link or a directory): left alone", path.display()));
    }
    let existing = std::fs::read(path).ok()?;
    (marker::ownership(&existing) == Ownership::Foreign).then(|| {
        format!(
            "{} exists and is not Lifeboat's (its first line is not `{}...`): left alone; move it away, or merge it \
             into the desired state",
            path.display(),
            marker::PREFIX.trim_end()
        )
    })
}

/// `.<name>.lifeboat.tmp` beside `path`.
fn tmp_path(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}{TMP_SUFFIX}"))
}

/// Writes `file` at `path` (replacing a leftover), with its mode, and syncs it.
fn write_synced(path: &Path, file: &RenderedFile) -> std::io::Result<()> {
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(file.mode).open(path)?;
    f.write_all(file.content.as_bytes())?;
    // The mode asked for, whatever the umask.
    f.set_permissions(std::fs::Permissions::from_mode(file.mode))?;
    f.sync_all()
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Why Lifeboat must not write into `dir` at all, if it must not.
fn refusal(runtime: NodeRuntime, dir: &Path) -> Option<String> {
    if runtime != NodeRuntime::Containerd {
        return None;
    }
    if dir.join("_backup").is_dir() {
        return Some(format!(
            "{} has a _backup/ folder: Spegel manages it, and moves away or deletes every other file in it each time it \
             starts, so Lifeboat does not share it; chain the mirror through Spegel's own configuration, or give \
             Lifeboat another config_path root",
            dir.display()
        ));
    }
    let entries = std::fs::read_dir(dir).ok()?;
    for entry in entries.filter_map(Result::ok) {
        let hosts = entry.path().join("hosts.toml");
        if let Ok(text) = std::fs::read(&hosts)
            && text.starts_with(b"# File generated by k3s")
        {
            return Some(format!(
                "{} was generated by k3s, which manages {} from registries.yaml: write the failover for k3s (runtime \
                 k3s) instead of into its containerd directory",
                hosts.display(),
                dir.display()
            ));
        }
    }
    None
}

/// Removes the temporary files and directories an interrupted write left, returning their paths
/// relative to `dir`.
fn clean_leftovers(dir: &Path) -> Vec<String> {
    let mut cleaned = Vec::new();
    walk(dir, "", DEPTH, &mut |relative, path, is_dir| {
        let name = relative.rsplit('/').next().unwrap_or(relative);
        let leftover =
            if is_dir { name.starts_with(NEW_DIR_PREFIX) } else { name.starts_with('.') && name.ends_with(TMP_SUFFIX) };
        if leftover {
            let removed = if is_dir { std::fs::remove_dir_all(path) } else { std::fs::remove_file(path) };
            match removed {
                Ok(()) => {
                    info!(path = %path.display(), "removed the leftover of an interrupted write");
                    cleaned.push(relative.to_string());
                }
                Err(e) => warn!(path = %path.display(), error = %e, "could not remove a leftover"),
            }
        }
        !leftover
    });
    cleaned.sort();
    cleaned
}

/// Removes Lifeboat's failover files under `dir` that are not `wanted` and that `prune`
/// covers: files naming a CA bundle before the bundle, then directories they leave empty.
fn remove_unwanted(dir: &Path, wanted: &BTreeSet<&str>, prune: &Prune) -> Result<Vec<String>, String> {
    let mut stale: Vec<(Role, String)> = Vec::new();
    walk(dir, "", DEPTH, &mut |relative, path, is_dir| {
        if is_dir {
            return !relative.rsplit('/').next().unwrap_or(relative).starts_with('.');
        }
        if wanted.contains(relative) {
            return false;
        }
        let Ok(meta) = std::fs::symlink_metadata(path) else { return false };
        if !meta.is_file() {
            return false;
        }
        let Ok(content) = std::fs::read(path) else { return false };
        let Ownership::Lifeboat { owner, .. } = marker::ownership(&content) else { return false };
        let Some(sets) = owner.strip_prefix("failover/") else { return false };
        let covered = match prune {
            Prune::Every => true,
            Prune::Sets(names) => sets.split(',').all(|s| names.contains(s)),
        };
        if covered {
            let role = if relative.ends_with(".crt") { Role::Ca } else { Role::Config };
            stale.push((role, relative.to_string()));
        }
        false
    });
    // Configs first: a file must never name a CA bundle that is gone.
    stale.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let mut removed = Vec::new();
    let mut problems = Vec::new();
    let mut parents = BTreeSet::new();
    for (_, relative) in stale {
        let path = dir.join(&relative);
        match std::fs::remove_file(&path) {
            Ok(()) => {
                info!(file = %path.display(), "removed: no longer in the desired state");
                parents.insert(parent_of(&relative).to_string());
                removed.push(relative);
            }
            Err(e) => problems.push(format!("removing {}: {e}", path.display())),
        }
    }
    for parent in parents.iter().rev().filter(|p| !p.is_empty()) {
        let name = parent.rsplit('/').next().unwrap_or(parent);
        // The runtime's own folders stay, empty or not.
        if matches!(name, "registries.conf.d" | "certs.d") {
            continue;
        }
        let path = dir.join(parent);
        if std::fs::remove_dir(&path).is_ok() {
            let _ = sync_dir(path.parent().unwrap_or(dir));
        }
    }
    let _ = sync_dir(dir);
    if problems.is_empty() { Ok(removed) } else { Err(problems.join("; ")) }
}

/// Calls `visit(relative, path, is_dir)` for every entry under `dir` down to `depth` levels;
/// a directory is entered when `visit` returns true. Symbolic links are never followed.
fn walk(dir: &Path, relative: &str, depth: usize, visit: &mut dyn FnMut(&str, &Path, bool) -> bool) {
    if depth == 0 {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut entries: Vec<_> = entries.filter_map(Result::ok).collect();
    entries.sort_by_key(std::fs::DirEntry::file_name);
    for entry in entries {
        let name = entry.file_name().to_string_lossy().into_owned();
        let rel = if relative.is_empty() { name } else { format!("{relative}/{name}") };
        let path = entry.path();
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if visit(&rel, &path, is_dir) && is_dir {
            walk(&path, &rel, depth - 1, visit);
        }
    }
}

#[cfg(test)]
mod tests;

//! Whether a node's container runtime reads the directory the failover files are written to,
//! and when it does not, the exact change that makes it. Reported, never made: a runtime's own
//! configuration is the node owner's.
//!
//! containerd reads `hosts.toml` files only from its CRI plugin's `config_path`
//! (`[plugins."io.containerd.grpc.v1.cri".registry]` in a `version = 2` config,
//! `[plugins."io.containerd.cri.v1.images".registry]` in `version = 3`), unset by default before
//! containerd 2.2, read at start; of several `:`-separated roots the first that has a directory
//! for a host wins, and roots are not merged. CRI-O and containers/image read every drop-in, and
//! a `[[registry]]` with the same prefix in another file replaces Lifeboat's, or is replaced by
//! it. k3s reads `registries.yaml` at start.

use std::collections::BTreeSet;
use std::path::Path;

use serde::Serialize;

use crate::failover::RenderedFile;

/// Whether the runtime reads the files, and if not why and what to change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeConfig {
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The lines to add or change, exactly.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl RuntimeConfig {
    pub fn ok() -> RuntimeConfig {
        RuntimeConfig { ok: true, reason: None, fix: None }
    }

    fn ok_because(reason: impl Into<String>) -> RuntimeConfig {
        RuntimeConfig { ok: true, reason: Some(reason.into()), fix: None }
    }

    fn not_ok(reason: impl Into<String>, fix: Option<String>) -> RuntimeConfig {
        RuntimeConfig { ok: false, reason: Some(reason.into()), fix }
    }

    /// Not checked, and why.
    pub fn unknown(reason: impl Into<String>) -> RuntimeConfig {
        RuntimeConfig { ok: false, reason: Some(reason.into()), fix: None }
    }
}

/// containerd's configuration file `config_file` and its `config_path`, against `dir` (as the
/// node names it) and the host directories about to be written there. `version` is what the
/// runtime reported (`containerd 1.6.20`), for the default `config_path` of 2.2 and later.
pub fn containerd(config_file: &Path, dir: &str, version: Option<&str>, host_dirs: &BTreeSet<String>) -> RuntimeConfig {
    let text = match std::fs::read_to_string(config_file) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            return RuntimeConfig::unknown(format!(
                "reading containerd's configuration {}: {e}",
                config_file.display()
            ));
        }
    };
    let checked = containerd_text(&config_file.display().to_string(), text.as_deref(), dir, version);
    let Ok(roots) = checked else { return checked.unwrap_err() };
    // The roots before ours win for any host they have a directory for.
    let dir = dir.trim_end_matches('/');
    for root in roots.iter().take_while(|r| r.trim_end_matches('/') != dir) {
        for host in host_dirs.iter().map(String::as_str).chain(["_default"]) {
            let shadow = Path::new(root).join(host);
            if shadow.is_dir() {
                return RuntimeConfig::not_ok(
                    format!(
                        "config_path lists {root} before {dir}, and {} exists: containerd uses the first root with a \
                         directory for a host and never merges roots, so Lifeboat's files for {host} are not read",
                        shadow.display()
                    ),
                    Some(format!("move {} away, or list {dir} first in config_path", shadow.display())),
                );
            }
        }
    }
    RuntimeConfig::ok()
}

/// The `config_path` roots when they include `dir`, else what is wrong and the fix. `text` is
/// the configuration file's content (`None`: there is no file).
fn containerd_text(
    file: &str,
    text: Option<&str>,
    dir: &str,
    version: Option<&str>,
) -> Result<Vec<String>, RuntimeConfig> {
    let dir = dir.trim_end_matches('/');
    let default_roots = (version.and_then(major_minor) >= Some((2, 2)))
        .then(|| vec!["/etc/containerd/certs.d".to_string(), "/etc/docker/certs.d".to_string()]);
    let Some(text) = text else {
        return match default_roots {
            Some(roots) if roots.iter().any(|r| r == dir) => Ok(roots),
            _ => Err(RuntimeConfig::not_ok(
                format!(
                    "containerd has no configuration file {file}, so its CRI plugin's config_path is unset and {dir} is never read"
                ),
                Some(format!("create {file} with\n{}\nand restart containerd once", fix_lines(2, dir))),
            )),
        };
    };
    let table: toml::Table = toml::from_str(text).map_err(|e| {
        RuntimeConfig::not_ok(format!("{file} is not valid TOML ({e}): containerd cannot read it either"), None)
    })?;
    let version = table.get("version").and_then(toml::Value::as_integer).unwrap_or(1);
    let plugin = match version {
        3 => "io.containerd.cri.v1.images",
        2 => "io.containerd.grpc.v1.cri",
        _ => "cri",
    };
    let registry = table
        .get("plugins")
        .and_then(|p| p.get(plugin))
        .and_then(|p| p.get("registry"))
        .and_then(toml::Value::as_table);
    let config_path =
        registry.and_then(|r| r.get("config_path")).and_then(toml::Value::as_str).filter(|p| !p.is_empty());
    let mirrors =
        registry.and_then(|r| r.get("mirrors")).and_then(toml::Value::as_table).is_some_and(|m| !m.is_empty());
    let section = format!("[plugins.\"{plugin}\".registry]").replace("[plugins.\"cri\"", "[plugins.cri");
    let restart = "then restart containerd once: config_path is read at start (the files under it on every pull)";
    let Some(config_path) = config_path else {
        if let Some(roots) = default_roots.filter(|r| r.iter().any(|r| r == dir) && !mirrors) {
            return Ok(roots);
        }
        if mirrors {
            return Err(RuntimeConfig::not_ok(
                format!(
                    "{file} configures registry mirrors in {section} `mirrors` and no config_path: containerd then \
                     never reads {dir}, and refuses both together"
                ),
                Some(format!(
                    "move those mirrors into hosts.toml files, remove `mirrors` and add to {file}:\n{}\n{restart}",
                    fix_lines(version, dir)
                )),
            ));
        }
        let mut reason = format!("{file} does not set config_path in {section}, so containerd never reads {dir}");
        if table.contains_key("imports") {
            reason.push_str(" (the files it imports were not read)");
        }
        return Err(RuntimeConfig::not_ok(
            reason,
            Some(format!("add to {file}:\n{}\n{restart}", fix_lines(version, dir))),
        ));
    };
    let roots: Vec<String> = config_path.split(':').filter(|r| !r.is_empty()).map(str::to_string).collect();
    if mirrors {
        return Err(RuntimeConfig::not_ok(
            format!("{file} sets both config_path and `mirrors` in {section}: containerd refuses to start with both"),
            Some("move those mirrors into hosts.toml files and remove `mirrors`".into()),
        ));
    }
    if !roots.iter().any(|r| r.trim_end_matches('/') == dir) {
        let elsewhere = roots.first().map(|r| format!("; or write the failover files into {r}")).unwrap_or_default();
        return Err(RuntimeConfig::not_ok(
            format!("containerd's config_path is {config_path} ({file}), which does not include {dir}"),
            Some(format!("set in {file}:\n{section}\n  config_path = \"{dir}:{config_path}\"\n{restart}{elsewhere}")),
        ));
    }
    Ok(roots)
}

fn fix_lines(version: i64, dir: &str) -> String {
    match version {
        3 => format!("[plugins.\"io.containerd.cri.v1.images\".registry]\n  config_path = \"{dir}\""),
        2 => format!("[plugins.\"io.containerd.grpc.v1.cri\".registry]\n  config_path = \"{dir}\""),
        _ => format!("[plugins.cri.registry]\n  config_path = \"{dir}\""),
    }
}

/// `(1, 6)` from `containerd 1.6.20`, `v2.2.0` or `1.6.20~ds1`.
fn major_minor(version: &str) -> Option<(u32, u32)> {
    let start = version.find(|c: char| c.is_ascii_digit())?;
    let mut parts = version[start..].split(|c: char| !c.is_ascii_digit());
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// CRI-O's registries configuration in `dir` (`/etc/containers`): another file that defines a
/// prefix Lifeboat's drop-ins define would replace it, or be replaced by it.
pub fn crio(dir: &Path, files: &[RenderedFile]) -> RuntimeConfig {
    let ours: BTreeSet<&str> = files.iter().map(|f| f.path.as_str()).collect();
    let wanted: BTreeSet<String> = files.iter().flat_map(|f| prefixes(&f.content)).collect();
    let mut candidates = vec![dir.join("registries.conf")];
    if let Ok(entries) = std::fs::read_dir(dir.join("registries.conf.d")) {
        let mut drop_ins: Vec<_> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "conf"))
            .filter(|p| {
                !ours.contains(
                    format!("registries.conf.d/{}", p.file_name().unwrap_or_default().to_string_lossy()).as_str(),
                )
            })
            .collect();
        drop_ins.sort();
        candidates.extend(drop_ins);
    }
    let mut clashes = Vec::new();
    for path in candidates {
        let Ok(text) = std::fs::read_to_string(&path) else { continue };
        if matches!(
            crate::failover::marker::ownership(text.as_bytes()),
            crate::failover::marker::Ownership::Lifeboat { .. }
        ) {
            continue;
        }
        if toml::from_str::<toml::Table>(&text).is_err() {
            clashes.push(format!("{} is not valid TOML, and one unreadable drop-in fails every pull", path.display()));
            continue;
        }
        for prefix in prefixes(&text).intersection(&wanted) {
            clashes.push(format!("{} also defines the registry {prefix}", path.display()));
        }
    }
    if clashes.is_empty() {
        RuntimeConfig::ok_because("CRI-O reads the drop-ins at start and on SIGHUP")
    } else {
        RuntimeConfig::not_ok(
            format!(
                "{}: a [[registry]] with the same prefix in a later file replaces the earlier one whole",
                clashes.join("; ")
            ),
            Some(
                "merge those [[registry]] entries into the desired state (an upstreams pair) and remove them there"
                    .into(),
            ),
        )
    }
}

/// The prefixes (or locations) of a registries.conf text's `[[registry]]` tables.
fn prefixes(text: &str) -> BTreeSet<String> {
    let Ok(table) = toml::from_str::<toml::Table>(text) else { return BTreeSet::new() };
    table
        .get("registry")
        .and_then(toml::Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|r| r.get("prefix").or_else(|| r.get("location")).and_then(toml::Value::as_str).map(str::to_string))
        .collect()
}

/// k3s reads registries.yaml from the directory it is written to; nothing to check.
pub fn k3s() -> RuntimeConfig {
    RuntimeConfig::ok_because("k3s reads registries.yaml when it starts")
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIR: &str = "/etc/containerd/certs.d";

    fn check(text: Option<&str>, version: Option<&str>) -> Result<Vec<String>, RuntimeConfig> {
        containerd_text("/etc/containerd/config.toml", text, DIR, version)
    }

    #[test]
    fn debian_s_default_configuration_gets_the_exact_lines_to_add() {
        // Debian bookworm's /etc/containerd/config.toml: version 2, CRI on, no config_path.
        let debian = "version = 2\n\n[plugins]\n  [plugins.\"io.containerd.grpc.v1.cri\"]\n    sandbox_image = \"registry.k8s.io/pause:3.6\"\n    [plugins.\"io.containerd.grpc.v1.cri\".registry]\n      [plugins.\"io.containerd.grpc.v1.cri\".registry.configs]\n";
        let result = check(Some(debian), Some("containerd 1.6.20")).unwrap_err();
        assert!(!result.ok);
        assert!(result.reason.as_deref().unwrap().contains("does not set config_path"), "{result:?}");
        let fix = result.fix.unwrap();
        assert!(
            fix.contains(
                "[plugins.\"io.containerd.grpc.v1.cri\".registry]\n  config_path = \"/etc/containerd/certs.d\""
            ),
            "{fix}"
        );
        assert!(fix.contains("restart containerd once"), "{fix}");
    }

    #[test]
    fn each_config_version_has_its_own_section() {
        let v3 = "version = 3\n[plugins.\"io.containerd.cri.v1.images\".registry]\n  config_path = \"/etc/containerd/certs.d:/etc/docker/certs.d\"\n";
        assert_eq!(check(Some(v3), None).unwrap(), ["/etc/containerd/certs.d", "/etc/docker/certs.d"]);
        // The version 2 section does not count in a version 3 file.
        let wrong = "version = 3\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\n  config_path = \"/etc/containerd/certs.d\"\n";
        let fix = check(Some(wrong), None).unwrap_err().fix.unwrap();
        assert!(fix.contains("[plugins.\"io.containerd.cri.v1.images\".registry]"), "{fix}");
        let v1 = "[plugins.cri.registry]\n  config_path = \"/etc/containerd/certs.d/\"\n";
        assert_eq!(check(Some(v1), None).unwrap(), ["/etc/containerd/certs.d/"]);
    }

    #[test]
    fn another_path_mirrors_a_missing_file_and_bad_toml_are_explained() {
        let other =
            "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\n  config_path = \"/etc/docker/certs.d\"\n";
        let r = check(Some(other), None).unwrap_err();
        assert!(r.reason.unwrap().contains("does not include /etc/containerd/certs.d"));
        assert!(r.fix.unwrap().contains("config_path = \"/etc/containerd/certs.d:/etc/docker/certs.d\""));
        let mirrors = "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry.mirrors.\"docker.io\"]\n  endpoint = [\"https://m\"]\n";
        assert!(check(Some(mirrors), None).unwrap_err().reason.unwrap().contains("refuses both together"));
        assert!(
            check(None, Some("containerd 1.7.3"))
                .unwrap_err()
                .fix
                .unwrap()
                .starts_with("create /etc/containerd/config.toml")
        );
        // containerd 2.2 reads /etc/containerd/certs.d by default.
        assert!(check(None, Some("containerd v2.2.0")).is_ok());
        assert!(check(Some("version = 3\n"), Some("containerd 2.2.1")).is_ok());
        assert!(check(Some("version = [\n"), None).unwrap_err().reason.unwrap().contains("not valid TOML"));
        // Whatever a node's file says, the check answers.
        let odd = "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\n  config_path = \"::\"\n";
        assert!(check(Some(odd), None).unwrap_err().reason.unwrap().contains("does not include"));
        let wrong_type = "version = \"2\"\n[plugins]\ncri = 3\n";
        assert!(!check(Some(wrong_type), None).unwrap_err().ok);
    }

    #[test]
    fn an_earlier_root_with_the_host_shadows_ours() {
        let dir = tempfile::tempdir().unwrap();
        let first = dir.path().join("first");
        let ours = dir.path().join("ours");
        std::fs::create_dir_all(first.join("ghcr.io")).unwrap();
        std::fs::create_dir_all(&ours).unwrap();
        let config = dir.path().join("config.toml");
        std::fs::write(
            &config,
            format!(
                "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\n  config_path = \"{}:{}\"\n",
                first.display(),
                ours.display()
            ),
        )
        .unwrap();
        let hosts = |h: &str| BTreeSet::from([h.to_string()]);
        let ours = ours.display().to_string();
        let shadowed = containerd(&config, &ours, None, &hosts("ghcr.io"));
        assert!(!shadowed.ok && shadowed.reason.unwrap().contains("never merges roots"));
        assert!(containerd(&config, &ours, None, &hosts("quay.io")).ok);
    }

    #[test]
    fn another_file_defining_one_of_our_prefixes_is_a_clash() {
        use crate::failover::{RenderedFile, Role};
        let dir = tempfile::tempdir().unwrap();
        let drop_ins = dir.path().join("registries.conf.d");
        std::fs::create_dir(&drop_ins).unwrap();
        let ours = RenderedFile {
            path: "registries.conf.d/50-lifeboat-w.conf".into(),
            role: Role::Config,
            mode: 0o644,
            content: crate::failover::marker::seal(
                "failover/w",
                "x",
                "[[registry]]\nprefix = \"ghcr.io\"\nlocation = \"ghcr.io\"\n",
            ),
        };
        std::fs::write(drop_ins.join("shortnames.conf"), "[aliases]\n\"busybox\" = \"docker.io/library/busybox\"\n")
            .unwrap();
        // Ours, already on the node, is not a clash with itself.
        std::fs::write(drop_ins.join("50-lifeboat-w.conf"), &ours.content).unwrap();
        assert!(crio(dir.path(), std::slice::from_ref(&ours)).ok);
        std::fs::write(drop_ins.join("90-team.conf"), "[[registry]]\nlocation = \"ghcr.io\"\ninsecure = true\n")
            .unwrap();
        let clash = crio(dir.path(), std::slice::from_ref(&ours));
        assert!(!clash.ok);
        assert!(clash.reason.unwrap().contains("90-team.conf also defines the registry ghcr.io"));
        std::fs::write(drop_ins.join("90-team.conf"), "[[registry\n").unwrap();
        assert!(crio(dir.path(), &[ours]).reason.unwrap().contains("fails every pull"));
    }

    #[test]
    fn versions_are_read_from_what_runtimes_report() {
        assert_eq!(major_minor("containerd 1.6.20"), Some((1, 6)));
        assert_eq!(major_minor("v2.2.0"), Some((2, 2)));
        assert_eq!(major_minor("1.6.20~ds1"), Some((1, 6)));
        assert_eq!(major_minor("unknown"), None);
    }
}

//! `lifeboat failover render`: the node files of FailoverSets for one container runtime,
//! offline. Rendering is [`crate::failover`]'s; writing into `--out` is the node writer's
//! ([`crate::nodeagent::failover`]), so a directory filled here behaves as a node's would.

use anyhow::Context as _;

use super::{exit, report_invalid, runtime as async_runtime, warn, write_out};
use crate::cli::{FailoverRenderArgs, FailoverRuntime, Output};
use crate::desired::{DesiredState, FailoverSet, NodeRuntime};
use crate::failover::{self, Inputs, Login};
use crate::nodeagent::failover::{FileAction, Prune, sync};
use crate::nodeagent::runtime_config::RuntimeConfig;
use crate::registry::auth::{Credential, PullSecretFile};
use crate::repo::Repo;

pub fn render(args: &FailoverRenderArgs, output: Output) -> anyhow::Result<u8> {
    let runtime = match args.runtime {
        FailoverRuntime::Containerd => NodeRuntime::Containerd,
        FailoverRuntime::Crio => NodeRuntime::Crio,
        FailoverRuntime::K3s => NodeRuntime::K3s,
    };
    let repo = Repo::new(&super::source(&args.source, None)?)?;
    let snapshot = async_runtime()?.block_on(repo.fetch())?;
    let state = match &snapshot.loaded {
        Ok(state) => {
            warn(&state.warnings);
            state
        }
        Err(diagnostics) => {
            report_invalid(diagnostics, output, snapshot.commit.as_deref())?;
            return Ok(exit::ERROR);
        }
    };
    let sets = chosen_sets(state, args.set.as_deref(), runtime, &repo)?;
    let mut inputs = Inputs { k3s_dir: Some(args.k3s_dir.clone()), ..Inputs::default() };
    for (_, set) in &sets {
        for path in set.mappings.iter().filter_map(|m| m.mirror.ca_file.as_ref()) {
            if !inputs.ca_files.contains_key(path) {
                let bytes = std::fs::read(snapshot.root.join(path))
                    .with_context(|| format!("reading the mirror's CA bundle {path} from the desired state"))?;
                inputs.ca_files.insert(path.clone(), bytes);
            }
        }
    }
    if let Some(file) = &args.mirror_credentials {
        inputs.mirror_logins = logins(file, &sets)?;
    }
    let rendered = match failover::render(runtime, &sets, &inputs) {
        Ok(rendered) => rendered,
        Err(problems) => {
            for problem in &problems.0 {
                eprintln!("error: {problem}");
            }
            eprintln!("nothing was rendered: fix the desired state or the inputs first");
            return Ok(exit::ERROR);
        }
    };
    for note in &rendered.notes {
        eprintln!("note: {note}");
    }
    let Some(dir) = &args.out else {
        write_out(&match output {
            Output::Json => serde_json::to_string_pretty(&rendered).context("writing the files as JSON")? + "\n",
            Output::Human | Output::Markdown => rendered.listing(),
        })?;
        return Ok(exit::OK);
    };
    std::fs::create_dir_all(dir).with_context(|| format!("creating --out {}", dir.display()))?;
    // Every set rendered: any other failover file of Lifeboat's in DIR belongs to a set that is
    // gone. One set: only its own stale files.
    let prune = match &args.set {
        None => Prune::Every,
        Some(_) => Prune::Sets(sets.iter().map(|(name, _)| name.to_string()).collect()),
    };
    let not_checked = RuntimeConfig::unknown("not checked: failover render does not read the node's configuration");
    let report = sync(runtime, dir, &rendered.files, &prune, not_checked);
    let failed = !report.errors.is_empty()
        || report
            .files
            .iter()
            .any(|f| matches!(f.action, FileAction::Conflict | FileAction::Skipped | FileAction::Failed));
    write_out(&match output {
        Output::Json => {
            let mut value = serde_json::to_value(&report).context("writing the report as JSON")?;
            if let Some(map) = value.as_object_mut() {
                map.remove("runtimeConfig");
                map.insert("notes".into(), serde_json::to_value(&rendered.notes)?);
            }
            serde_json::to_string_pretty(&value)? + "\n"
        }
        Output::Human | Output::Markdown => {
            let mut text = String::new();
            for f in &report.files {
                let action = match f.action {
                    FileAction::Written => "written",
                    FileAction::Unchanged => "unchanged",
                    FileAction::Restored => "restored",
                    FileAction::Conflict => "conflict",
                    FileAction::Skipped => "skipped",
                    FileAction::Failed => "failed",
                };
                text.push_str(&format!("{action:<10} {}", f.path));
                if let Some(reason) = &f.reason {
                    text.push_str(&format!(": {reason}"));
                }
                text.push('\n');
            }
            for path in &report.removed {
                text.push_str(&format!("{:<10} {path}\n", "removed"));
            }
            for path in &report.cleaned {
                text.push_str(&format!("{:<10} {path} (left by an interrupted write)\n", "cleaned"));
            }
            for error in &report.errors {
                text.push_str(&format!("error: {error}\n"));
            }
            text.push_str(&format!("{}: {}\n", runtime, report.reload));
            text
        }
    })?;
    Ok(if failed { exit::ERROR } else { exit::OK })
}

/// The sets to render: `--set`, or every set; a named set the runtime is not in is an error.
fn chosen_sets<'a>(
    state: &'a DesiredState,
    name: Option<&str>,
    runtime: NodeRuntime,
    repo: &Repo,
) -> anyhow::Result<Vec<(&'a str, &'a FailoverSet)>> {
    let known = || state.failover_sets.keys().cloned().collect::<Vec<_>>().join(", ");
    match name {
        None if state.failover_sets.is_empty() => {
            anyhow::bail!(
                "the desired state at {} has no FailoverSet: add one, such as `spec: {{mirrorSets: [...]}}`",
                repo.describe()
            )
        }
        None => Ok(state.failover_sets.iter().map(|(n, s)| (n.as_str(), s)).collect()),
        Some(name) => {
            let (key, set) = state.failover_sets.get_key_value(name).ok_or_else(|| {
                anyhow::anyhow!(
                    "FailoverSet {name} is not in the desired state at {}; its FailoverSets are: {}",
                    repo.describe(),
                    known()
                )
            })?;
            anyhow::ensure!(
                set.covers(runtime),
                "FailoverSet {name} is not written for {runtime}: its runtimes are {}",
                set.runtimes.iter().flatten().map(|r| r.as_str()).collect::<Vec<_>>().join(", ")
            );
            Ok(vec![(key.as_str(), set)])
        }
    }
}

/// The logins `file` (a Docker config.json) holds for the sets' mirror hosts.
fn logins(
    file: &std::path::Path,
    sets: &[(&str, &FailoverSet)],
) -> anyhow::Result<std::collections::BTreeMap<String, Login>> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading --mirror-credentials {}", file.display()))?;
    let secret = PullSecretFile::parse(file, &text)?;
    let hosts: std::collections::BTreeSet<&str> =
        sets.iter().flat_map(|(_, s)| s.mappings.iter().map(|m| m.mirror.location.host.as_str())).collect();
    let mut logins = std::collections::BTreeMap::new();
    for host in hosts {
        match secret.credential(host).transpose()? {
            None | Some(Credential::Anonymous) => {}
            Some(Credential::Basic { username, password }) => {
                logins.insert(host.to_string(), Login { username, password });
            }
            Some(Credential::IdentityToken(_)) => anyhow::bail!(
                "--mirror-credentials {} holds an identity token for {host}: nodes send a user name and password to \
                 the mirror, so give those",
                file.display()
            ),
        }
    }
    Ok(logins)
}

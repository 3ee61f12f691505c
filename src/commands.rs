//! What each subcommand does, returning the exit code; `main.rs` only wires it up.

mod backup;
pub mod failover;
mod nodeagent;

pub use nodeagent::node_agent;

use std::io::Write;

use anyhow::Context;

use crate::cli::{ApplyArgs, DiffArgs, Output, PassArgs, ValidateArgs, VerifyArgs};
use crate::desired::{self, DesiredState, Diagnostics, DirectorySource, LoadError};
use crate::diff;
use crate::diff::render as diff_render;
use crate::git::TreeSource;
use crate::plan::Plan;
use crate::plan::render;
use crate::reconcile;
use crate::registry::{OciRegistry, Options, RegistryClient, TrustPolicy, Verdict};
use crate::repo::{Repo, Snapshot};

/// Exit codes shared by every command.
pub mod exit {
    /// Success, valid, or no change.
    pub const OK: u8 = 0;
    /// Changes found (`diff`).
    pub const CHANGES: u8 = 1;
    /// Invalid desired state or any error.
    pub const ERROR: u8 = 2;
}

fn write_out(text: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes()).context("writing to stdout")?;
    stdout.flush().context("writing to stdout")
}

/// Diagnostics as text or JSON; `revision` names the Git revision they belong to, if any.
fn diagnostics_text(diags: &Diagnostics, output: Output, revision: Option<&str>) -> String {
    match output {
        Output::Json => {
            let mut value = serde_json::json!({
                "valid": !diags.has_errors(),
                "errors": diags.error_count(),
                "warnings": diags.warning_count(),
                "diagnostics": diags,
            });
            if let Some(rev) = revision {
                value["revision"] = rev.into();
            }
            serde_json::to_string_pretty(&value).expect("diagnostics serialize") + "\n"
        }
        Output::Human | Output::Markdown => match revision {
            Some(rev) => format!("the desired state at `{rev}` is invalid:\n{diags}\n"),
            None => format!("{diags}\n"),
        },
    }
}

pub fn validate(args: &ValidateArgs, output: Output) -> anyhow::Result<u8> {
    let source = DirectorySource::new(&args.path)?;
    let (diags, code) = match desired::load(&source) {
        Ok(state) => (state.warnings, exit::OK),
        Err(LoadError::Invalid(diags)) => (diags, exit::ERROR),
        Err(LoadError::Read(e)) => return Err(e),
    };
    let mut text = diagnostics_text(&diags, output, None);
    if code == exit::OK && output != Output::Json {
        text = format!("{} is valid\n{}", args.path.display(), if diags.is_empty() { String::new() } else { text });
    }
    write_out(&text)?;
    Ok(code)
}

/// Loads one revision, printing its diagnostics (to stderr) when it is invalid.
fn load_revision(args: &DiffArgs, rev: &str, output: Output) -> anyhow::Result<Option<(TreeSource, DesiredState)>> {
    let source = TreeSource::read(&args.repo, rev, args.path.as_deref())?;
    match desired::load(&source) {
        Ok(state) => Ok(Some((source, state))),
        Err(LoadError::Invalid(diags)) => {
            eprint!("{}", diagnostics_text(&diags, output, Some(rev)));
            Ok(None)
        }
        Err(LoadError::Read(e)) => Err(e),
    }
}

pub fn diff(args: &DiffArgs, output: Output) -> anyhow::Result<u8> {
    let base = load_revision(args, &args.base, output)?;
    let head = load_revision(args, &args.head, output)?;
    let (Some((base_source, base)), Some((head_source, head))) = (base, head) else {
        return Ok(exit::ERROR);
    };
    let changes = diff::compare(&base, &head);
    tracing::info!(
        base = %base_source.commit,
        head = %head_source.commit,
        changes = changes.changes.len(),
        "compared desired states"
    );
    let report = diff_render::Report::new(
        diff_render::Revision { rev: base_source.rev, commit: base_source.commit },
        diff_render::Revision { rev: head_source.rev, commit: head_source.commit },
        &changes,
    );
    write_out(&match output {
        Output::Human => diff_render::human(&report),
        Output::Json => diff_render::json(&report),
        Output::Markdown => diff_render::markdown(&report),
    })?;
    Ok(if changes.is_empty() { exit::OK } else { exit::CHANGES })
}

pub fn backup(command: &crate::cli::BackupCommand, output: Output) -> anyhow::Result<u8> {
    match command {
        crate::cli::BackupCommand::Export(args) => backup::export(args, output),
        crate::cli::BackupCommand::Verify(args) => backup::verify(args, output),
        crate::cli::BackupCommand::List(args) => backup::list(&args.dir, output),
    }
}

pub use backup::signer as backup_signer;

pub fn restore(args: &crate::cli::RestoreArgs, output: Output) -> anyhow::Result<u8> {
    backup::restore(args, output)
}

pub fn schema() -> anyhow::Result<u8> {
    write_out(&crate::schema::render())?;
    Ok(exit::OK)
}

/// Prints a loaded desired state's warnings, or its diagnostics when it is invalid.
fn print_diagnostics(loaded: &Result<DesiredState, Diagnostics>, output: Output, revision: Option<&str>) {
    match loaded {
        Ok(state) if !state.warnings.is_empty() => {
            eprint!("{}", diagnostics_text(&state.warnings, Output::Human, None));
        }
        Ok(_) => {}
        Err(diags) => {
            eprint!("{}", diagnostics_text(diags, output, revision));
            eprintln!("nothing was done: fix the desired state first");
        }
    }
}

/// Loads a desired-state folder, printing its diagnostics when it is invalid.
fn load_folder(path: &std::path::Path, output: Output) -> anyhow::Result<Option<DesiredState>> {
    let loaded = match desired::load(&DirectorySource::new(path)?) {
        Ok(state) => Ok(state),
        Err(LoadError::Invalid(diags)) => Err(diags),
        Err(LoadError::Read(e)) => return Err(e),
    };
    print_diagnostics(&loaded, output, None);
    Ok(loaded.ok())
}

/// The registry client and signature policies of a desired state whose files live in `root`.
pub fn registry_for(
    root: &std::path::Path,
    state: &DesiredState,
    timeout: std::time::Duration,
    retries: u32,
) -> anyhow::Result<OciRegistry> {
    let options = Options { timeout, retries, ..Options::default() };
    let policies = crate::registry::cosign::policies(state, |file| Ok(std::fs::read(root.join(file))?))?;
    Ok(OciRegistry::new(RegistryClient::new(state, Some(root.to_path_buf()), options)?, policies))
}

/// Fetches and loads the desired state, printing its diagnostics when it is invalid.
fn fetch(
    repo: &Repo,
    rt: &tokio::runtime::Runtime,
    output: Output,
) -> anyhow::Result<(Snapshot, Option<DesiredState>)> {
    let snapshot = rt.block_on(repo.fetch())?;
    print_diagnostics(&snapshot.loaded, output, snapshot.commit.as_deref());
    let state = snapshot.loaded.as_ref().ok().cloned();
    Ok((snapshot, state))
}

/// The cluster pre-pull works on, or why there is none.
pub async fn cluster_for(args: &crate::cli::ClusterArgs) -> Result<crate::cluster::prepull::PrePullCluster, String> {
    if args.mode == crate::cli::ClusterMode::Off {
        return Err("--cluster off".into());
    }
    let (client, url) = crate::cluster::cluster_client().await.map_err(|e| format!("no cluster configured ({e:#})"))?;
    let namespace = args
        .prepull_namespace
        .clone()
        .or_else(|| std::env::var("POD_NAMESPACE").ok().filter(|n| !n.is_empty()))
        .unwrap_or_else(|| "lifeboat".into());
    Ok(crate::cluster::prepull::PrePullCluster::new(
        client,
        crate::cluster::render::RenderSettings {
            namespace,
            agent_namespace: args.node_agent_namespace.clone(),
            lifeboat_image: args.lifeboat_image.clone(),
        },
        url,
    ))
}

/// The mirror plan and the pre-pull pass in one document, for `-o json`.
fn plan_json(plan: &Plan, pre_pull: &crate::prepull::PrePullPass) -> serde_json::Value {
    let mut value = serde_json::to_value(plan).expect("plans serialize");
    value["prePull"] = serde_json::to_value(pre_pull).expect("pre-pull passes serialize");
    value
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")
}

fn print_plan(plan: &Plan, pre_pull: &crate::prepull::PrePullPass, output: Output) -> anyhow::Result<()> {
    let pre = if pre_pull.sets.is_empty() && pre_pull.changes.is_empty() {
        String::new()
    } else {
        crate::prepull::plan::human(pre_pull)
    };
    write_out(&match output {
        Output::Human => format!("{}{}", render::human(plan), if pre.is_empty() { pre } else { format!("\n{pre}") }),
        Output::Json => render::json(&plan_json(plan, pre_pull)),
        Output::Markdown => {
            let pre = if pre.is_empty() { pre } else { format!("\n#### Pre-pull\n\n```\n{pre}```\n") };
            format!("{}{pre}", render::markdown(plan))
        }
    })
}

fn plan_exit(plan: &Plan, pre_pull: &crate::prepull::PrePullPass) -> u8 {
    if plan.has_unknowns() || plan.rejections() > 0 || pre_pull.has_problems() {
        exit::ERROR
    } else if plan.changes.is_empty() && pre_pull.changes.is_empty() {
        exit::OK
    } else {
        exit::CHANGES
    }
}

pub fn plan(args: &PassArgs, output: Output) -> anyhow::Result<u8> {
    let repo = Repo::new(&args.path, &args.git, None)?;
    let rt = runtime()?;
    let (snapshot, Some(state)) = fetch(&repo, &rt, output)? else {
        return Ok(exit::ERROR);
    };
    let registry = registry_for(&snapshot.root, &state, args.timeout, args.retries)?;
    let pass = rt.block_on(reconcile::dry_run(&state, &registry));
    let pre_pull = rt.block_on(async {
        let cluster = cluster_for(&args.cluster).await;
        reconcile::pre_pull(&state, &registry, cluster.as_ref().map_err(String::as_str), false).await
    });
    print_plan(&pass.plan, &pre_pull, output)?;
    Ok(plan_exit(&pass.plan, &pre_pull))
}

pub fn apply(args: &ApplyArgs, output: Output) -> anyhow::Result<u8> {
    if args.dry_run {
        return plan(&args.pass, output);
    }
    let repo = Repo::new(&args.pass.path, &args.pass.git, Some(&args.status))?;
    let rt = runtime()?;
    let (snapshot, state) = fetch(&repo, &rt, output)?;
    let heartbeat = args.status.heartbeat.and_then(|h| chrono::Duration::from_std(h).ok());
    let alerts = crate::status::shipped_alerts();
    let Some(state) = state else {
        // The report says what is wrong; nothing is applied.
        let invalid = crate::status::Report {
            applied: None,
            invalid: snapshot.loaded.err().map(|d| (d, snapshot.tree.clone())),
            passes: Default::default(),
            alerts,
            backups: Default::default(),
            pre_pull: Default::default(),
        };
        publish(&repo, &rt, invalid, heartbeat)?;
        return Ok(exit::ERROR);
    };
    let registry = registry_for(&snapshot.root, &state, args.pass.timeout, args.pass.retries)?;
    let started = chrono::Utc::now();
    let pass = rt.block_on(reconcile::run(&state, &registry));
    let passes = pass.by_set(started, chrono::Utc::now(), &Default::default());
    let pre_pull = rt.block_on(async {
        let cluster = cluster_for(&args.pass.cluster).await;
        reconcile::pre_pull(&state, &registry, cluster.as_ref().map_err(String::as_str), true).await
    });
    let outcomes = pass.outcomes.unwrap_or_default();
    let totals = render::totals(&outcomes);
    write_out(&match output {
        Output::Json => render::json(&serde_json::json!({
            "plan": pass.plan,
            "outcomes": outcomes,
            "totals": totals,
            "prePull": pre_pull,
        })),
        Output::Human | Output::Markdown => {
            let pre = if pre_pull.sets.is_empty() && pre_pull.changes.is_empty() {
                String::new()
            } else {
                format!("\n{}", crate::prepull::plan::human(&pre_pull))
            };
            format!("{}{pre}", render::outcomes_human(&pass.plan, &outcomes))
        }
    })?;
    let backups = rt.block_on(crate::backup::observe(&state, &Default::default()));
    let report = crate::status::Report {
        applied: Some((std::sync::Arc::new(state), snapshot.tree.clone())),
        invalid: None,
        passes,
        alerts,
        backups,
        pre_pull: pre_pull.clone(),
    };
    publish(&repo, &rt, report, heartbeat)?;
    let problems =
        totals.failed > 0 || pass.plan.has_unknowns() || pass.plan.rejections() > 0 || pre_pull.has_problems();
    Ok(if problems { exit::ERROR } else { exit::OK })
}

/// Commits the status when the repo publishes it, saying so on stderr.
fn publish(
    repo: &Repo,
    rt: &tokio::runtime::Runtime,
    report: crate::status::Report,
    heartbeat: Option<chrono::Duration>,
) -> anyhow::Result<()> {
    if !repo.publishes() {
        return Ok(());
    }
    let now = chrono::Utc::now();
    match rt.block_on(
        repo.publish(Box::new(move |previous| report.render_if_changed(previous, now, heartbeat).map(|r| r.files))),
    )? {
        Some(crate::git::Published::Committed { commit, .. }) => eprintln!("status committed: {commit}"),
        _ => eprintln!("status unchanged: no commit"),
    }
    Ok(())
}

pub fn run(args: &crate::cli::RunArgs) -> anyhow::Result<u8> {
    let local = tokio::task::LocalSet::new();
    runtime()?.block_on(local.run_until(crate::daemon::run(args)))
}

/// Builds the signers `lifeboat verify` accepts from its flags, or from a MirrorSet.
fn verify_policy(args: &VerifyArgs, state: &DesiredState) -> anyhow::Result<TrustPolicy> {
    use crate::registry::cosign::{TrustRoot, TrustedKey};
    if let Some(set) = &args.mirror_set {
        let dir = args.dir.clone().unwrap_or_default();
        anyhow::ensure!(
            state.mirror_sets.contains_key(set),
            "MirrorSet {set} is not in the desired state at {}; give one of: {}",
            dir.display(),
            state.mirror_sets.keys().cloned().collect::<Vec<_>>().join(", ")
        );
        let mut policies = crate::registry::cosign::policies(state, |file| Ok(std::fs::read(dir.join(file))?))?;
        return policies
            .remove(set)
            .ok_or_else(|| anyhow::anyhow!("MirrorSet {set} checks no signatures (its policy is off)"));
    }
    let mut policy = TrustPolicy::default();
    for path in &args.keys {
        let name = path.display().to_string();
        let bytes = std::fs::read(path).with_context(|| format!("reading --key {name}"))?;
        policy.keys.push(TrustedKey::from_pem(&name, &bytes)?);
    }
    if let Some(issuer) = &args.issuer {
        let identity = match (&args.identity, &args.identity_regex) {
            (Some(exact), _) => desired::IdentityMatch::Exact(exact.clone()),
            (None, Some(pattern)) => desired::IdentityMatch::Regex(
                regex::Regex::new(pattern)
                    .with_context(|| format!("--identity-regex `{pattern}` is not a regular expression"))?,
            ),
            (None, None) => {
                anyhow::bail!("--issuer needs --identity or --identity-regex: the certificate identity to accept")
            }
        };
        policy.keyless.push(desired::KeylessIdentity { issuer: issuer.clone(), identity });
        let root = args.trust_root.as_ref().ok_or_else(|| {
            anyhow::anyhow!("keyless verification needs --trust-root FILE (a Sigstore trusted_root.json)")
        })?;
        let bytes = std::fs::read(root).with_context(|| format!("reading --trust-root {}", root.display()))?;
        policy.trust_root = Some(TrustRoot::from_json(&root.display().to_string(), &bytes)?);
    }
    anyhow::ensure!(
        !policy.keys.is_empty() || !policy.keyless.is_empty(),
        "nothing to verify against: give --key FILE, or --identity/--identity-regex with --issuer and --trust-root, or --mirror-set NAME with --dir"
    );
    for pair in &args.annotations {
        let (k, v) = pair.split_once('=').ok_or_else(|| anyhow::anyhow!("--annotation `{pair}` is not KEY=VALUE"))?;
        policy.annotations.insert(k.to_string(), v.to_string());
    }
    Ok(policy)
}

pub fn verify(args: &VerifyArgs, output: Output) -> anyhow::Result<u8> {
    let image = desired::ImageRef::parse(&args.image).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut state = match &args.dir {
        Some(dir) => match load_folder(dir, output)? {
            Some(state) => state,
            None => return Ok(exit::ERROR),
        },
        None => DesiredState::default(),
    };
    let policy = verify_policy(args, &state)?;
    let host = image.repository.host.clone();
    if args.insecure {
        let registry = state.registries.entry(host.clone()).or_insert_with(|| desired::Registry {
            origin: desired::Origin { file: "--insecure".into(), line: 0 },
            host: host.clone(),
            insecure: true,
            ca_file: None,
            credentials: None,
            limits: desired::Limits::default(),
        });
        registry.insecure = true;
    }
    let options = Options { timeout: args.timeout, retries: args.retries, ..Options::default() };
    let client = RegistryClient::new(&state, args.dir.clone(), options)?;
    let repository = &image.repository;
    let outcome: anyhow::Result<(crate::desired::Digest, Verdict)> = runtime()?.block_on(async {
        let digest = match &image.digest {
            Some(d) => d.clone(),
            None => {
                let tag = image.tag.as_deref().unwrap_or("latest");
                client
                    .manifest_digest(repository, tag)
                    .await?
                    .ok_or_else(|| anyhow::anyhow!("{repository}:{tag} does not exist"))?
            }
        };
        let verdict = crate::registry::cosign::verify(&client, &policy, repository, &digest).await?;
        Ok((digest, verdict))
    });
    let (digest, verdict) = outcome?;
    write_out(&match output {
        Output::Json => render::json(&serde_json::json!({
            "image": args.image,
            "digest": digest,
            "verification": verdict,
        })),
        Output::Human | Output::Markdown => match &verdict {
            Verdict::Verified { signers } => {
                format!("Verified: {repository}@{digest}\n  signed by {}\n", Verdict::signers_text(signers))
            }
            Verdict::Rejected { reason } => format!("Not verified: {repository}@{digest}\n  {reason}\n"),
        },
    })?;
    Ok(match verdict {
        Verdict::Verified { .. } => exit::OK,
        Verdict::Rejected { .. } => exit::CHANGES,
    })
}

//! What each subcommand does: turn its arguments into the library's configuration, call the
//! library, print the result, and map it to an exit code. The only module, with `cli` and
//! `main.rs`, that knows clap types and exit codes; nothing below imports it.
//!
//! Results go to stdout, logs to stderr. With `-o json` every answer a command gives, an
//! invalid desired state's diagnostics and an error included, is one JSON document on stdout.
//! A command refuses a format it cannot print rather than print another one.

mod backup;
mod daemon;
mod diff;
mod failover;
mod nodeagent;
mod pass;
mod validate;
mod verify;

use std::io::Write;

use anyhow::Context;

use crate::cli::{ClusterArgs, ClusterMode, Command, GitArgs, Output, RegistryArgs, SigningArgs, SourceArgs};
use crate::cluster::render::RenderSettings;
use crate::desired::Diagnostics;
use crate::reconcile::{self, Setup};
use crate::registry::Options;
use crate::repo::{GitSource, Source, StatusTarget};

/// Exit codes shared by every command.
pub mod exit {
    use crate::outcome::SetResult;

    /// Success, valid, in sync, verified.
    pub const OK: u8 = 0;
    /// The command worked, and the answer needs attention: changes to make (`diff`, `plan`),
    /// desired images a person must act on (`plan`, `apply`), not verified, FAIL, missing.
    pub const ATTENTION: u8 = 1;
    /// Invalid input, an error, or something could not be looked at.
    pub const ERROR: u8 = 2;

    /// The exit code of a pass that ended so.
    pub fn of(result: SetResult) -> u8 {
        match result {
            SetResult::Succeeded | SetResult::NotRunYet => OK,
            SetResult::Pending | SetResult::Stalled => ATTENTION,
            SetResult::Failed => ERROR,
        }
    }
}

/// Runs one command; the exit code, or the error `main` prints.
pub fn run(command: &Command, output: Output) -> anyhow::Result<u8> {
    check_output(command, output)?;
    match command {
        Command::Validate(args) => validate::validate(args, output),
        Command::Diff(args) => diff::diff(args, output),
        Command::Plan(args) => pass::plan(args, output),
        Command::Apply(args) => pass::apply(args, output),
        Command::Run(args) => daemon::run(args),
        Command::Verify(args) => verify::verify(args, output),
        Command::Backup(command) => match command {
            crate::cli::BackupCommand::Export(args) => backup::export(args, output),
            crate::cli::BackupCommand::Verify(args) => backup::verify(args, output),
            crate::cli::BackupCommand::List(args) => backup::list(&args.dir, output),
        },
        Command::Restore(args) => backup::restore(args, output),
        Command::Schema(_) => validate::schema(),
        Command::NodeAgent(args) => nodeagent::node_agent(args, output),
        Command::Failover(crate::cli::FailoverCommand::Render(args)) => failover::render(args, output),
    }
}

/// The `-o` formats each command prints; `human`, the default, always.
pub fn formats(command: &Command) -> &'static [Output] {
    use Output::{Human, Json, Markdown};
    match command {
        Command::Diff(_) | Command::Plan(_) => &[Human, Json, Markdown],
        Command::Apply(args) if args.dry_run => &[Human, Json, Markdown],
        Command::Run(_) => &[Human],
        Command::Validate(_)
        | Command::Apply(_)
        | Command::Verify(_)
        | Command::Backup(_)
        | Command::Restore(_)
        | Command::Schema(_)
        | Command::NodeAgent(_)
        | Command::Failover(_) => &[Human, Json],
    }
}

fn check_output(command: &Command, output: Output) -> anyhow::Result<()> {
    let formats = formats(command);
    if formats.contains(&output) {
        return Ok(());
    }
    let name = command_name(command);
    let hint = match command {
        Command::Run(_) => {
            "; the daemon reports through its status commits and /metrics (for JSON logs: --log-format json)"
        }
        _ => "",
    };
    anyhow::bail!(
        "`lifeboat {name}` cannot print `-o {}`: give one of {}{hint}",
        output.name(),
        formats.iter().map(|f| f.name()).collect::<Vec<_>>().join(", ")
    )
}

fn command_name(command: &Command) -> &'static str {
    match command {
        Command::Validate(_) => "validate",
        Command::Diff(_) => "diff",
        Command::Plan(_) => "plan",
        Command::Apply(_) => "apply",
        Command::Run(_) => "run",
        Command::Verify(_) => "verify",
        Command::Backup(crate::cli::BackupCommand::Export(_)) => "backup export",
        Command::Backup(crate::cli::BackupCommand::Verify(_)) => "backup verify",
        Command::Backup(crate::cli::BackupCommand::List(_)) => "backup list",
        Command::Restore(_) => "restore",
        Command::Schema(_) => "schema",
        Command::NodeAgent(_) => "node-agent",
        Command::Failover(crate::cli::FailoverCommand::Render(_)) => "failover render",
    }
}

/// An error as `main` prints it: one line on stderr, and with `-o json` also a JSON document
/// on stdout, so a tool reading stdout always gets an answer.
pub fn print_error(e: &anyhow::Error, output: Output) {
    if output == Output::Json {
        let _ = write_out(&json(&serde_json::json!({ "error": format!("{e:#}") })));
    }
    eprintln!("error: {e:#}");
}

fn write_out(text: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes()).context("writing to stdout")?;
    stdout.flush().context("writing to stdout")
}

fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string_pretty(value).expect("Lifeboat's own values serialize") + "\n"
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")
}

/// Diagnostics as JSON: the same document `validate -o json` prints.
fn diagnostics_json(diags: &Diagnostics, revision: Option<&str>) -> serde_json::Value {
    let mut value = serde_json::json!({
        "valid": !diags.has_errors(),
        "errors": diags.error_count(),
        "warnings": diags.warning_count(),
        "diagnostics": diags,
    });
    if let Some(rev) = revision {
        value["revision"] = rev.into();
    }
    value
}

/// Reports a desired state that does not load: as JSON on stdout with `-o json`, else as text
/// on stderr with the note that nothing was done.
fn report_invalid(diags: &Diagnostics, output: Output, revision: Option<&str>) -> anyhow::Result<()> {
    match output {
        Output::Json => write_out(&json(&diagnostics_json(diags, revision))),
        Output::Human | Output::Markdown => {
            match revision {
                Some(rev) => eprintln!("the desired state at `{rev}` is invalid:\n{diags}"),
                None => eprintln!("{diags}"),
            }
            eprintln!("nothing was done: fix the desired state first");
            Ok(())
        }
    }
}

/// Warnings of a valid desired state, on stderr.
fn warn(diags: &Diagnostics) {
    if !diags.is_empty() {
        eprintln!("{diags}");
    }
}

/// Where the desired state comes from, and (with `status`) how its status is committed.
fn source(args: &SourceArgs, status: Option<&crate::cli::StatusArgs>) -> anyhow::Result<Source> {
    let Some(url) = &args.git.url else {
        return Ok(Source::Folder(args.path.clone().unwrap_or_else(|| ".".into())));
    };
    if let Some(path) = &args.path {
        anyhow::bail!(
            "PATH `{}` and --repo `{}` both name the desired state: give one (a folder in the repository is --path DIR)",
            path.display(),
            crate::git::redact_url(url)
        );
    }
    Ok(Source::Git(Box::new(git_source(url, &args.git, status)?)))
}

fn git_source(url: &str, git: &GitArgs, status: Option<&crate::cli::StatusArgs>) -> anyhow::Result<GitSource> {
    let password = match (&git.git_password_file, &git.git_password) {
        (Some(file), _) => Some(
            std::fs::read_to_string(file)
                .with_context(|| format!("reading --git-password-file {}", file.display()))?
                .trim()
                .to_string(),
        ),
        (None, Some(value)) if !value.is_empty() => Some(value.clone()),
        _ => None,
    };
    Ok(GitSource {
        url: url.to_string(),
        branch: git.branch.clone(),
        subdir: git.subdir.clone(),
        credentials: crate::git::Credentials {
            username: git.git_username.clone(),
            password: password.map(crate::git::Secret::new),
            ssh_key: git.git_ssh_key.clone(),
            known_hosts: git.git_known_hosts.clone(),
        },
        verify_commits: git.verify_commits.clone(),
        status_path: git.status_path.clone(),
        checkout_dir: git.checkout_dir.clone(),
        status: status.filter(|s| !s.no_status).map(|s| StatusTarget {
            branch: s.status_branch.clone(),
            author: s.status_author.clone(),
            message: s.status_message.clone(),
        }),
    })
}

fn registry_options(args: &RegistryArgs) -> Options {
    Options { timeout: args.timeout, retries: args.retries, ..Options::default() }
}

/// Where pre-pull objects go and what they run.
fn render_settings(args: &ClusterArgs) -> RenderSettings {
    RenderSettings {
        namespace: args
            .prepull_namespace
            .clone()
            .or_else(crate::cluster::pod_namespace)
            .unwrap_or_else(|| crate::cli::DEFAULT_NAMESPACE.into()),
        agent_namespace: args.node_agent_namespace.clone(),
        lifeboat_image: args.lifeboat_image.clone(),
    }
}

/// Registries and cluster for passes, from their flags.
async fn setup(registry: &RegistryArgs, cluster: &ClusterArgs) -> Setup {
    let mode = match cluster.mode {
        ClusterMode::Auto => reconcile::ClusterMode::Auto,
        ClusterMode::Off => reconcile::ClusterMode::Off,
    };
    Setup::connect(registry_options(registry), render_settings(cluster), mode).await
}

/// Registries only: for commands that never touch a cluster (`backup export`).
fn registry_setup(registry: &RegistryArgs) -> Setup {
    Setup {
        registry: registry_options(registry),
        render: RenderSettings {
            namespace: crate::cli::DEFAULT_NAMESPACE.into(),
            agent_namespace: String::new(),
            lifeboat_image: String::new(),
        },
        cluster: std::sync::Arc::new(Err("not used by this command".into())),
    }
}

/// The key that signs backup metadata, when one is given.
fn signer(args: &SigningArgs) -> anyhow::Result<Option<crate::registry::cosign::BlobSigner>> {
    let Some(path) = &args.key else { return Ok(None) };
    let password = args.password.as_deref().or(args.cosign_password.as_deref()).unwrap_or_default();
    crate::registry::cosign::BlobSigner::from_key_file(path, password)
        .with_context(|| format!("--backup-signing-key {}", path.display()))
        .map(Some)
}

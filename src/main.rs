//! The `lifeboat` binary: parse arguments, start logging, run the command, map the result to
//! an exit code, and print any error with its whole chain of causes.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use lifeboat::cli::{Cli, Command, FailoverCommand, LogFormat};
use lifeboat::commands::{self, exit};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // One TLS crypto provider for the whole process: with two compiled in (aws-lc-rs here,
    // ring in some dependencies) rustls cannot pick one and the first HTTPS request panics.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    init_logging(cli.global.log_format, &cli.global.log);
    let output = cli.global.output;
    let result = match &cli.command {
        Command::Validate(args) => commands::validate(args, output),
        Command::Diff(args) => commands::diff(args, output),
        Command::Plan(args) => commands::plan(args, output),
        Command::Apply(args) => commands::apply(args, output),
        Command::Run(args) => commands::run(args),
        Command::Verify(args) => commands::verify(args, output),
        Command::Backup(command) => commands::backup(command, output),
        Command::Restore(args) => commands::restore(args, output),
        Command::Schema => commands::schema(),
        Command::NodeAgent(args) => commands::node_agent(args),
        Command::Failover(FailoverCommand::Render(args)) => commands::failover::render(args, output),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(exit::ERROR)
        }
    }
}

fn init_logging(format: LogFormat, filter: &str) {
    // oci-client logs token responses at debug level: never below info, whatever was asked.
    let filter = EnvFilter::try_new(filter)
        .unwrap_or_else(|e| {
            eprintln!("warning: ignoring log filter `{filter}`: {e}");
            EnvFilter::new("warn")
        })
        .add_directive("oci_client=info".parse().expect("a valid directive"));
    // sigstore warns on every registry without the OCI referrers API, and explains skipped
    // signature layers at info; Lifeboat reports the reasons itself.
    let filter = if filter.to_string().contains("sigstore") {
        filter
    } else {
        filter.add_directive("sigstore=error".parse().expect("a valid directive"))
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

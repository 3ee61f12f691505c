//! The `lifeboat` binary: parse arguments, start logging, run the command, map the result to
//! an exit code, and print any error with its whole chain of causes.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use lifeboat::cli::{Cli, LogFormat};
use lifeboat::commands::{self, exit};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // One TLS crypto provider for the whole process: with two compiled in (aws-lc-rs here,
    // ring in some dependencies) rustls cannot pick one and the first HTTPS request panics.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    init_logging(cli.global.log_format, &cli.global.log);
    match commands::run(&cli.command, cli.global.output) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            commands::print_error(&e, cli.global.output);
            ExitCode::from(exit::ERROR)
        }
    }
}

fn init_logging(format: LogFormat, filter: &str) {
    let mut env = EnvFilter::try_new(filter).unwrap_or_else(|e| {
        eprintln!("warning: ignoring log filter `{filter}`: {e}");
        EnvFilter::new("warn")
    });
    for directive in lifeboat::registry::log_directives(filter) {
        env = env.add_directive(directive.parse().expect("the registry's directives parse"));
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(env)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

//! The command-line help is part of the interface: snapshot it for every command, nested ones
//! included, and check what holds across all of them.

use std::collections::BTreeMap;

use clap::CommandFactory;
use lifeboat::cli::Cli;

fn built() -> clap::Command {
    let mut command = Cli::command().term_width(100);
    command.build();
    command
}

/// Every command and subcommand, as its path of names (the top level is the empty path).
fn commands(command: &clap::Command, path: Vec<String>, out: &mut Vec<(Vec<String>, clap::Command)>) {
    out.push((path.clone(), command.clone()));
    for sub in command.get_subcommands() {
        if sub.get_name() == "help" {
            continue;
        }
        let mut next = path.clone();
        next.push(sub.get_name().to_string());
        commands(sub, next, out);
    }
}

fn all() -> Vec<(Vec<String>, clap::Command)> {
    let mut out = Vec::new();
    commands(&built(), Vec::new(), &mut out);
    out
}

#[test]
fn every_command_has_a_help_snapshot() {
    let all = all();
    assert!(all.len() >= 14, "{:?}", all.iter().map(|(p, _)| p.join(" ")).collect::<Vec<_>>());
    for (path, mut command) in all {
        let name = if path.is_empty() { "lifeboat".to_string() } else { format!("lifeboat_{}", path.join("_")) };
        insta::assert_snapshot!(name.replace('-', "_"), command.render_long_help().to_string());
    }
}

#[test]
fn every_flag_can_be_set_from_the_environment_and_each_variable_means_one_thing() {
    let mut missing = Vec::new();
    // Variable → the argument ids that read it, with where.
    let mut meanings: BTreeMap<String, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    for (path, command) in all() {
        for arg in command.get_arguments() {
            let id = arg.get_id().as_str();
            if matches!(id, "help" | "version") {
                continue;
            }
            match arg.get_env() {
                None => missing.push(format!("lifeboat {} --{id}", path.join(" "))),
                Some(env) => meanings
                    .entry(env.to_string_lossy().into_owned())
                    .or_default()
                    .entry(id.to_string())
                    .or_default()
                    .push(path.join(" ")),
            }
        }
    }
    assert!(missing.is_empty(), "flags without an environment variable: {missing:#?}");
    let shared: Vec<String> =
        meanings.iter().filter(|(_, ids)| ids.len() > 1).map(|(env, ids)| format!("{env}: {ids:?}")).collect();
    assert!(shared.is_empty(), "variables read by different arguments: {shared:#?}");
}

//! The command-line help is part of the interface: snapshot it.

use clap::CommandFactory;
use lifeboat::cli::Cli;

fn help(path: &[&str]) -> String {
    let mut command = Cli::command().term_width(100);
    command.build();
    let mut target = &mut command;
    for name in path {
        target = target.find_subcommand_mut(name).expect("subcommand exists");
    }
    target.render_long_help().to_string()
}

#[test]
fn top_level_help() {
    insta::assert_snapshot!(help(&[]));
}

#[test]
fn validate_help() {
    insta::assert_snapshot!(help(&["validate"]));
}

#[test]
fn diff_help() {
    insta::assert_snapshot!(help(&["diff"]));
}

#[test]
fn every_flag_can_be_set_from_the_environment() {
    let command = Cli::command();
    let mut missing = Vec::new();
    let mut check = |cmd: &clap::Command| {
        for arg in cmd.get_arguments() {
            let builtin = matches!(arg.get_id().as_str(), "help" | "version");
            if !builtin && arg.get_env().is_none() {
                missing.push(format!("{} --{}", cmd.get_name(), arg.get_id()));
            }
        }
    };
    // Every level: `failover render` and `backup export` sit below a group.
    let mut stack = vec![&command];
    while let Some(cmd) = stack.pop() {
        check(cmd);
        stack.extend(cmd.get_subcommands());
    }
    assert!(missing.is_empty(), "flags without an environment variable: {missing:?}");
}

#[test]
fn run_help() {
    insta::assert_snapshot!(help(&["run"]));
}

#[test]
fn node_agent_help() {
    insta::assert_snapshot!(help(&["node-agent"]));
}

#[test]
fn failover_render_help() {
    insta::assert_snapshot!(help(&["failover", "render"]));
}

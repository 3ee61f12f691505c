//! `lifeboat node-agent`: the `cri` node agent's loop, its report and its exit codes. The round
//! itself is [`crate::nodeagent`]'s.

use std::path::Path;

use anyhow::Context as _;
use tracing::{error, info};

use super::{exit, runtime, write_out};
use crate::cli::{NodeAgentArgs, Output, Report};
use crate::cluster::ErrorKind;
use crate::cluster::inventory;
use crate::nodeagent::cri::CriClient;
use crate::nodeagent::{self, Settings};
use crate::prepull::{ImageState, Inventory};

/// Where a round's inventory goes.
enum Reporter {
    Kubernetes(inventory::Reporter),
    Stdout(Output),
}

impl Reporter {
    async fn report(&self, inventory: &Inventory) -> anyhow::Result<()> {
        match self {
            Reporter::Stdout(Output::Json) => {
                write_out(&(serde_json::to_string(inventory).context("writing the inventory as JSON")? + "\n"))
            }
            Reporter::Stdout(_) => write_out(&summary(inventory)),
            Reporter::Kubernetes(reporter) => reporter.publish(inventory).await.map_err(|e| {
                let fix = match e.kind {
                    ErrorKind::Unauthorized => format!(
                        ": the agent's service account needs get, create and update on configmaps in {}",
                        reporter.namespace()
                    ),
                    _ => String::new(),
                };
                anyhow::anyhow!("reporting the inventory: {e}{fix}")
            }),
        }
    }
}

/// One line for people: how many images are present, pulled and missing, and the first missing.
fn summary(inventory: &Inventory) -> String {
    let count = |f: fn(&ImageState) -> bool| inventory.images.iter().filter(|i| f(&i.state)).count();
    let present = count(|s| matches!(s, ImageState::Present));
    let pulled = count(|s| matches!(s, ImageState::Pulled));
    let missing: Vec<String> = inventory
        .images
        .iter()
        .filter_map(|i| match &i.state {
            ImageState::Missing { reason } => Some(format!("{}: {reason}", i.reference)),
            _ => None,
        })
        .collect();
    let mut line = format!(
        "node {}, PrePullSet {}: {present} present, {pulled} pulled, {} missing",
        inventory.node,
        inventory.set,
        missing.len()
    );
    if let Some(first) = missing.first() {
        line.push_str(&format!(" (first: {first})"));
    }
    line.push('\n');
    line
}

pub fn node_agent(args: &NodeAgentArgs, output: Output) -> anyhow::Result<u8> {
    runtime()?.block_on(run(args, output))
}

async fn run(args: &NodeAgentArgs, output: Output) -> anyhow::Result<u8> {
    let node = match (&args.node_name, args.report) {
        (Some(node), _) if !node.is_empty() => node.clone(),
        (_, Report::Kubernetes) => anyhow::bail!(
            "--node-name (LIFEBOAT_NODE_NAME) is needed to report to Kubernetes: set it from the downward API \
             (fieldRef spec.nodeName)"
        ),
        (_, Report::Stdout) => host_name(),
    };
    let settings = Settings {
        node,
        set: args.set.clone(),
        images_file: args.images_file.clone(),
        pull_secret_dir: args.pull_secret_dir.clone(),
        kubelet_config: args.kubelet_config.clone(),
        parallel: args.parallel as usize,
        pull_timeout: args.pull_timeout,
    };
    let reporter = match args.report {
        Report::Stdout => Reporter::Stdout(output),
        Report::Kubernetes => {
            let namespace = args
                .namespace
                .clone()
                .or_else(crate::cluster::pod_namespace)
                .unwrap_or_else(|| crate::cli::DEFAULT_AGENT_NAMESPACE.into());
            Reporter::Kubernetes(inventory::Reporter::connect(namespace).await?)
        }
    };
    if args.once {
        let inventory = round(&args.cri_socket, &settings).await?;
        reporter.report(&inventory).await?;
        let missing = inventory.images.iter().any(|i| matches!(i.state, ImageState::Missing { .. }));
        return Ok(if missing { exit::ATTENTION } else { exit::OK });
    }
    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).context("watching for SIGTERM")?;
    info!(set = %settings.set, node = %settings.node, interval = %humantime::format_duration(args.interval), "node agent started");
    loop {
        let work = async {
            let inventory = round(&args.cri_socket, &settings).await?;
            reporter.report(&inventory).await
        };
        tokio::select! {
            result = work => {
                if let Err(e) = result {
                    error!(error = %format!("{e:#}"), "the round failed; trying again at the next interval");
                }
            }
            _ = terminate.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
        tokio::select! {
            _ = tokio::time::sleep(args.interval) => {}
            _ = terminate.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    info!("stopping");
    Ok(exit::OK)
}

/// One round on a fresh connection, so that a runtime restarted since the last round is found.
async fn round(socket: &Path, settings: &Settings) -> anyhow::Result<Inventory> {
    let client = CriClient::connect(socket).await?;
    nodeagent::round(&client, settings).await
}

/// The node's host name, for a report on stdout without `--node-name`.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

//! `lifeboat node-agent`: the `cri` node agent's loop, its report and its exit codes. The round
//! itself is [`crate::nodeagent`]'s.

use std::path::Path;

use anyhow::Context as _;
use tracing::{error, info};

use super::{exit, runtime, write_out};
use crate::cli::{NodeAgentArgs, Report};
use crate::cluster::ErrorKind;
use crate::nodeagent::cri::CriClient;
use crate::nodeagent::{self, Settings};
use crate::prepull::{ImageState, Inventory};

/// `--once`: the round was reported, and some image is missing.
const SOME_MISSING: u8 = 1;

enum Reporter {
    Kubernetes { client: kube::Client, namespace: String },
    Stdout,
}

impl Reporter {
    async fn report(&self, inventory: &Inventory) -> anyhow::Result<()> {
        match self {
            Reporter::Stdout => {
                write_out(&(serde_json::to_string(inventory).context("writing the inventory as JSON")? + "\n"))
            }
            Reporter::Kubernetes { client, namespace } => {
                crate::cluster::inventory::publish(client, namespace, inventory).await.map_err(|e| {
                    let fix = match e.kind {
                        ErrorKind::Unauthorized => format!(
                            ": the agent's service account needs get, create and update on configmaps in {namespace}"
                        ),
                        _ => String::new(),
                    };
                    anyhow::anyhow!("reporting the inventory: {e}{fix}")
                })
            }
        }
    }
}

pub fn node_agent(args: &NodeAgentArgs) -> anyhow::Result<u8> {
    runtime()?.block_on(run(args))
}

async fn run(args: &NodeAgentArgs) -> anyhow::Result<u8> {
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
        Report::Stdout => Reporter::Stdout,
        Report::Kubernetes => Reporter::Kubernetes {
            client: crate::cluster::in_cluster_client().await?,
            namespace: args
                .namespace
                .clone()
                .or_else(|| std::env::var("POD_NAMESPACE").ok())
                .unwrap_or_else(|| "default".into()),
        },
    };
    if args.once {
        let inventory = round(&args.cri_socket, &settings).await?;
        reporter.report(&inventory).await?;
        let missing = inventory.images.iter().any(|i| matches!(i.state, ImageState::Missing { .. }));
        return Ok(if missing { SOME_MISSING } else { exit::OK });
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

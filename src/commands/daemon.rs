//! `lifeboat run`: the daemon's configuration from its flags; the daemon itself is
//! [`crate::daemon`].

use anyhow::Context;

use super::{exit, runtime};
use crate::cli::RunArgs;

fn read_secret(file: &Option<std::path::PathBuf>, flag: &str) -> anyhow::Result<Option<String>> {
    file.as_ref()
        .map(|f| {
            let text = std::fs::read_to_string(f).with_context(|| format!("reading {flag} {}", f.display()))?;
            let text = text.trim().to_string();
            anyhow::ensure!(!text.is_empty(), "{flag} {} is empty", f.display());
            Ok(text)
        })
        .transpose()
}

pub fn run(args: &RunArgs) -> anyhow::Result<u8> {
    let source = super::source(&args.source, Some(&args.status))?;
    let trigger_token = read_secret(&args.trigger_token_file, "--trigger-token-file")?;
    let webhook_secret = read_secret(&args.webhook_secret_file, "--webhook-secret-file")?;
    let backup_signer = super::signer(&args.signing)?;
    let lease = args.lease.clone().map(|name| {
        let namespace = args
            .lease_namespace
            .clone()
            .or_else(crate::cluster::pod_namespace)
            .unwrap_or_else(|| crate::cli::DEFAULT_NAMESPACE.into());
        (name, namespace)
    });
    let local = tokio::task::LocalSet::new();
    runtime()?.block_on(local.run_until(async {
        let config = crate::daemon::Config {
            source,
            setup: super::setup(&args.registry, &args.cluster).await,
            listen: args.listen,
            poll: args.poll,
            trigger_token,
            webhook_secret,
            shutdown_timeout: args.shutdown_timeout,
            lease,
            storage_path: args.storage_path.clone(),
            backup_signer,
            heartbeat: args.status.heartbeat.and_then(|h| chrono::Duration::from_std(h).ok()),
        };
        crate::daemon::run(config).await
    }))?;
    Ok(exit::OK)
}

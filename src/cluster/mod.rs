//! The Kubernetes API: the only module that uses kube and k8s-openapi.
//!
//! It holds leader election ([`LeaseLock`]), so that of several replicas only one applies
//! changes; pre-pull: [`render`] turns a PrePullSet into the objects that pre-pull its images
//! (pure: no API calls), [`prepull`] applies them server-side and reads nodes, pods and kubelet
//! configurations, and [`inventory`] holds the node agents' reports, one ConfigMap per node and
//! PrePullSet. It talks to the API server and nothing else: no registry, no Git, no planning.
//! Its failures are [`ClusterError`]s, classified by what Lifeboat should do about them.
//! `fake::FakeApiServer` stores objects in memory and answers kube's requests the way an API
//! server does, for tests without a cluster.

mod election;
pub mod error;
#[cfg(test)]
pub mod fake;
pub mod inventory;
pub mod lease;
pub mod prepull;
#[cfg(test)]
mod prepull_tests;
pub mod render;
#[cfg(test)]
mod tests;

use anyhow::Context as _;

pub use election::Election;
pub use error::{ClusterError, ErrorKind};
pub use lease::{Leadership, LeaseLock};

/// The namespace of the pod Lifeboat runs in, from the downward API (`POD_NAMESPACE`), when it
/// runs in one: the default for every namespace Lifeboat works in.
pub fn pod_namespace() -> Option<String> {
    std::env::var("POD_NAMESPACE").ok().filter(|n| !n.is_empty())
}

/// A client for the cluster Lifeboat runs in: the kubeconfig's current context when there is
/// one (`KUBECONFIG`, then `~/.kube/config`), else the pod's service account.
pub async fn in_cluster_client() -> anyhow::Result<kube::Client> {
    Ok(cluster_client().await?.0)
}

/// [`in_cluster_client`], and the URL of the API server it talks to.
pub async fn cluster_client() -> anyhow::Result<(kube::Client, String)> {
    // The inference error already names both places it looked and why each failed; its
    // sources would only repeat them.
    let config = kube::Config::infer().await.map_err(|e| {
        anyhow::anyhow!(
            "finding a Kubernetes cluster: Lifeboat needs a kubeconfig (KUBECONFIG or ~/.kube/config) or to run \
             in a pod with a service account: {e}"
        )
    })?;
    let cluster = config.cluster_url.to_string();
    let client =
        kube::Client::try_from(config).with_context(|| format!("building a Kubernetes client for {cluster}"))?;
    Ok((client, cluster))
}

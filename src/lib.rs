//! Lifeboat keeps Kubernetes clusters deployable when their container registries fail.
//!
//! A pass runs one way: Git ([`repo`], [`git`]) → [`desired`] (validated desired state) →
//! [`observe`] → [`plan`] (pure) → [`apply`] → [`status`] (pure) → Git. [`reconcile`] alone
//! knows that order, for every caller: the one-shot commands and [`daemon`], which only
//! decides when each part runs. What a pass did, and the one rule for how it ended, is
//! [`outcome`]; every check answers with a [`readiness::Readiness`], and every "could not look"
//! is an [`observed::Observed`]. [`prepull`] is the pure side of node pre-pull, [`diff`] tells
//! offline what a change to the desired state will do, [`backup`] writes and restores
//! air-gapped archives, [`failover`] renders the container runtime files that make nodes fall
//! back to the mirror, and [`nodeagent`] is the agent on each node: it pulls a `cri` pre-pull
//! set's images and writes those failover files. [`error`] is the one classification of other
//! systems' failures that the registry, cluster and node-agent modules share, and [`retry`]
//! the one backoff for trying again. [`shard`] cuts a pass by mirror repository for
//! processes that share the work with no coordination.
//!
//! Each external crate has one owner: git2 → [`git`], oci-client and sigstore → [`registry`],
//! kube and k8s-openapi → [`cluster`], the CRI client → [`nodeagent`]. The command line
//! ([`cli`], [`commands`]) sits on top and nothing below it imports it: the `lifeboat` binary
//! parses arguments into configuration, calls the library and maps results to exit codes.

pub mod apply;
pub mod backup;
pub mod cli;
pub mod cluster;
pub mod commands;
pub mod daemon;
pub mod desired;
pub mod diff;
pub mod error;
pub mod failover;
pub mod git;
pub mod metrics;
pub mod nodeagent;
pub mod observe;
pub mod observed;
pub mod outcome;
pub mod plan;
pub mod prepull;
pub mod readiness;
pub mod reconcile;
pub mod registry;
pub mod repo;
pub mod retry;
pub mod schema;
pub mod shard;
pub mod status;

//! Lifeboat keeps Kubernetes clusters deployable when their container registries fail.
//!
//! The pipeline runs one way: Git ([`repo`], [`git`]) → [`desired`] (validated desired state) →
//! [`observe`] → [`plan`] → [`apply`] → [`status`] → Git; [`reconcile`] alone knows that order,
//! and [`daemon`] runs it on schedules. [`diff`] tells offline what a change to the desired state
//! will do. [`nodeagent`] is the `cri` pre-pull method's agent on each node, reporting through
//! [`cluster::inventory`], and writes the node files [`failover`] renders so that nodes fall
//! back to the mirror. The `lifeboat` binary only parses arguments, starts logging and maps
//! results to exit codes.

pub mod apply;
pub mod backup;
pub mod cli;
pub mod cluster;
pub mod commands;
pub mod daemon;
pub mod desired;
pub mod diff;
pub mod failover;
pub mod git;
pub mod metrics;
pub mod nodeagent;
pub mod observe;
pub mod plan;
pub mod prepull;
pub mod reconcile;
pub mod registry;
pub mod repo;
pub mod schema;
pub mod status;

//! Lifeboat keeps Kubernetes clusters deployable when their container registries fail.
//!
//! The pipeline runs one way: Git → [`desired`] (validated desired state) → observe → plan →
//! apply → status → Git. Today the offline half is here: loading and validating the desired
//! state, and [`diff`], which tells what a change to it will do. The `lifeboat` binary only
//! parses arguments, starts logging and maps results to exit codes.

pub mod apply;
pub mod cli;
pub mod cluster;
pub mod commands;
pub mod daemon;
pub mod desired;
pub mod diff;
pub mod git;
pub mod metrics;
pub mod observe;
pub mod plan;
pub mod reconcile;
pub mod registry;
pub mod repo;
pub mod schema;
pub mod status;

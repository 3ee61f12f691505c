//! Integration tests: the `lifeboat` binary against real files and real Git repositories.
//!
//! One test binary with shared helpers in `support`, so it is built and linked once.

mod backup;
mod cli;
mod daemon;
mod diff;
mod failover;
mod help;
mod hostile_input;
mod layout;
mod loader_fuzz;
mod metric_names;
mod mirror;
mod nodeagent;
mod noop;
mod outage;
mod prepull;
mod restore;
mod schema;
mod shard;
mod signatures;
mod support;
mod untrusted_registry;
mod validate;

//! herdctl: a proxy herd of named TCP servers and the supervisor that runs them.
//!
//! The work lives in the workspace's crates, one per layer (see ARCHITECTURE.md); this
//! package is the `herdctl` binary: its command line (`cli`), the node process's main
//! (`commands`) and shell completions. The layers are re-exported under their old module
//! names so integration tests, benches and the fuzzer reach them through one crate.
pub mod cli;
pub mod commands;
pub mod completions;

pub use herd_bench as bench;
pub use herd_config::{auth, config, config_diff, hosts, tls};
pub use herd_logs as logs;
pub use herd_metrics as metrics;
pub use herd_node as node;
pub use herd_ops::{
    admin, chaos, client, direct, export, forget, link, operator, supervisor, tail, top, verify,
};
pub use herd_os::{backoff, panics, pidlock, port_owner, private};
pub use herd_places as places;
pub use herd_wire::{clock, protocol, record, rng, status};

//! herdctl: a proxy herd of named TCP servers and the supervisor that runs them.
//!
//! The library holds everything; `main.rs` is a thin CLI over it.
pub mod admin;
pub mod auth;
pub mod backoff;
pub mod bench;
pub mod chaos;
pub mod cli;
pub mod client;
pub mod commands;
pub mod completions;
pub mod config;
pub mod config_diff;
pub mod config_errors;
pub mod direct;
pub mod export;
pub mod forget;
pub mod hosts;
pub mod link;
pub mod logs;
pub mod metrics;
pub mod node;
pub mod operator;
pub mod panics;
pub mod pidlock;
pub mod places;
pub mod port_owner;
pub mod private;
pub mod protocol;
pub mod record;
pub mod rng;
pub mod supervisor;
pub mod tail;
pub mod tls;
pub mod top;
pub mod verify;

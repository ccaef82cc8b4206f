//! herdctl: a proxy herd of named TCP servers and the supervisor that runs them.
//!
//! The library holds everything; `main.rs` is a thin CLI over it.
pub mod cli;
pub mod commands;
pub mod config;
pub mod logs;
pub mod node;
pub mod places;
pub mod protocol;

//! herd.yaml: the file model, validation, hosts and endpoints, the herd secret, TLS material.
pub mod auth;
pub mod config;
pub mod config_diff;
mod config_errors;
pub mod hosts;
pub mod tls;

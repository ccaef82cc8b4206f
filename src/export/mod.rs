//! `herdctl export`: the herd as another engine's configuration, for when a handful of
//! machines each running `herdctl start all` is no longer the right tool.
//!
//! - `systemd.rs`: one service unit per server (`herdctl run NAME`) and a target grouping them.
//! - `kubernetes.rs`: a ConfigMap, and per server a Service and a one-replica StatefulSet.
//! - `prometheus.rs`: a Prometheus scrape configuration for every server's admin endpoint.

pub mod kubernetes;
pub mod prometheus;
pub mod systemd;

//! `herdctl export`: the herd as another engine's configuration, for when a handful of
//! machines each running `herdctl start all` is no longer the right tool.
//!
//! - `systemd.rs`: one service unit per server (`herdctl run NAME`) and a target grouping them.
//! - `kubernetes.rs`: a ConfigMap, and per server a Service and a one-replica StatefulSet.

pub mod kubernetes;
pub mod systemd;

//! `herdctl export`: the herd as another engine's configuration, for when a handful of
//! machines each running `herdctl start all` is no longer the right tool.
//!
//! - `systemd.rs`: one service unit per server (`herdctl run NAME`) and a target grouping them.
//! - `kubernetes.rs`: a ConfigMap, and per server a Service and a one-replica StatefulSet;
//!   `kubernetes_tls.rs`: the certificates' Secrets and volume.
//! - `compose.rs`: a Docker Compose project: per server a service with its own volume, on
//!   one network, with the herd file rewritten as for Kubernetes and the secret in herd.env;
//!   `compose_tls.rs`: the certificates each container mounts.
//! - `prometheus.rs`: a Prometheus scrape configuration for every server's admin endpoint.

pub mod compose;
pub mod compose_tls;
pub mod kubernetes;
pub mod kubernetes_tls;
pub mod prometheus;
pub mod systemd;

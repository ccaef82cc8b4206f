//! The herd file as written: what serde reads, spans kept for line-numbered errors. Unknown
//! keys are errors, so a typo never silently does nothing.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::settings::{Durability, GoogleApi, LogLevel, LogRotation, ProviderKind, Redact};

/// The file as written. Unknown keys are errors, so a typo never silently does nothing.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) servers: BTreeMap<String, Spanned<RawServer>>,
    #[serde(default)]
    pub(super) host: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) listen: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) log_dir: Option<PathBuf>,
    #[serde(default)]
    pub(super) data_dir: Option<PathBuf>,
    #[serde(default)]
    pub(super) logs: RawLogs,
    #[serde(default)]
    pub(super) places: RawPlaces,
    #[serde(default)]
    pub(super) reconnect: RawReconnect,
    #[serde(default)]
    pub(super) run_dir: Option<PathBuf>,
    #[serde(default)]
    pub(super) secret: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) secret_file: Option<Spanned<PathBuf>>,
    #[serde(default)]
    pub(super) insecure_open_links: Option<Spanned<bool>>,
    #[serde(default)]
    pub(super) supervisor: RawSupervisor,
    #[serde(default)]
    pub(super) durability: Option<Durability>,
    #[serde(default)]
    pub(super) strict_wait_ms: Option<u64>,
    #[serde(default)]
    pub(super) node_threads: Option<usize>,
    #[serde(default)]
    pub(super) limits: RawLimits,
    #[serde(default)]
    pub(super) links: RawLinks,
    #[serde(default)]
    pub(super) admin: RawAdmin,
    #[serde(default)]
    pub(super) clients: RawClients,
}

/// `clients:`: how long a client's location is kept, and how many clients a node holds.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawClients {
    pub(super) ttl_s: Option<u64>,
    pub(super) tombstone_ttl_s: Option<u64>,
    pub(super) max: Option<usize>,
}

/// `admin:`: who may read the admin endpoint's routes (see [`AdminSettings`]).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAdmin {
    pub(super) open: Option<bool>,
}

/// `links:`: how much a link to a neighbour may hold back, and how long it may stall.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLinks {
    pub(super) queue: Option<usize>,
    pub(super) write_timeout_ms: Option<u64>,
    pub(super) answer_timeout_ms: Option<u64>,
    pub(super) forwarding: Option<String>,
    pub(super) tls: Option<Spanned<RawTls>>,
}

/// `links.tls:`: the herd CA and each server's certificate and key (`{name}` in a path is
/// replaced by the server's name).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    pub(super) ca: PathBuf,
    pub(super) cert: String,
    pub(super) key: String,
}

/// `limits:`: what one connection may cost a node (see [`Limits`]).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    pub(super) max_line_bytes: Option<usize>,
    pub(super) max_connections: Option<usize>,
    pub(super) idle_timeout_s: Option<u64>,
    pub(super) max_client_id_bytes: Option<usize>,
    pub(super) max_future_s: Option<u64>,
    pub(super) max_connections_per_ip: Option<usize>,
    pub(super) first_line_timeout_s: Option<u64>,
    pub(super) write_timeout_s: Option<u64>,
    pub(super) close_after_reply: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSupervisor {
    pub(super) stop_timeout_ms: Option<u64>,
    pub(super) backoff_initial_ms: Option<u64>,
    pub(super) backoff_max_ms: Option<u64>,
    pub(super) stable_after_s: Option<u64>,
    pub(super) max_quick_crashes: Option<u32>,
    pub(super) start_timeout_ms: Option<u64>,
    pub(super) health_interval_ms: Option<u64>,
    pub(super) health_failures: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    pub(super) port: Spanned<u32>,
    #[serde(default)]
    pub(super) peers: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) host: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) listen: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) admin_port: Option<Spanned<u32>>,
    #[serde(default)]
    pub(super) tls_port: Option<Spanned<u32>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLogs {
    pub(super) rotation: Option<LogRotation>,
    pub(super) keep: Option<usize>,
    pub(super) max_file_bytes: Option<u64>,
    pub(super) max_line_bytes: Option<usize>,
    pub(super) level: Option<LogLevel>,
    pub(super) order_window_ms: Option<u64>,
    pub(super) redact: Option<Redact>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPlaces {
    pub(super) provider: Option<ProviderKind>,
    pub(super) file: Option<PathBuf>,
    pub(super) api: Option<GoogleApi>,
    pub(super) endpoint: Option<Spanned<String>>,
    pub(super) timeout_ms: Option<u64>,
    pub(super) cache_ttl_s: Option<u64>,
    pub(super) cache_entries: Option<usize>,
    pub(super) max_requests_per_s: Option<u32>,
    pub(super) max_in_flight: Option<usize>,
    pub(super) allow_http: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawReconnect {
    pub(super) initial_ms: Option<u64>,
    pub(super) max_ms: Option<u64>,
    pub(super) sync_interval_s: Option<u64>,
}

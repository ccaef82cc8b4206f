//! Every default and bound of the herd file, in one place: what a key left out means, and
//! the smallest or largest value a key may take.

use std::time::Duration;

use super::settings::{ClientsSettings, Limits, LinkSettings};

/// The X API's own base URL; the x provider adds `/2/tweets/search/recent`.
pub const X_DEFAULT_ENDPOINT: &str = "https://api.x.com";

/// A server's admin port when the file gives none: its client port plus this, so the
/// classic herd (ports 12000-12004) gets 13000-13004 without an edit.
pub const ADMIN_PORT_OFFSET: u16 = 1000;

pub const DEFAULT_LOG_MAX_LINE_BYTES: usize = 4096;
pub const DEFAULT_LOG_ORDER_WINDOW_MS: u64 = 200;
/// Past this a log would lag a live `herdctl tail -f` by more than it helps.
pub(super) const MAX_LOG_ORDER_WINDOW_MS: u64 = 10_000;
/// Below this a capped log line could not show a whole IAMAT.
pub(super) const MIN_LOG_LINE_BYTES: usize = 64;
/// Below this, rotating by size would start a file every few lines.
pub(super) const MIN_LOG_FILE_BYTES: u64 = 4096;

pub const DEFAULT_UPSTREAM_TIMEOUT_MS: u64 = 3000;
pub const DEFAULT_GOOGLE_CACHE_TTL_S: u64 = 300;
/// Recent posts go stale sooner than places do.
pub const DEFAULT_X_CACHE_TTL_S: u64 = 60;
pub const DEFAULT_UPSTREAM_CACHE_ENTRIES: usize = 10_000;
pub const DEFAULT_UPSTREAM_MAX_REQUESTS_PER_S: u32 = 10;
pub const DEFAULT_UPSTREAM_MAX_IN_FLIGHT: usize = 16;

pub const DEFAULT_SYNC_INTERVAL_S: u64 = 30;

pub const DEFAULT_LINK_QUEUE: usize = 65_536;
pub const DEFAULT_LINK_WRITE_TIMEOUT_MS: u64 = 5_000;
pub const DEFAULT_LINK_ANSWER_TIMEOUT_MS: u64 = 10_000;

impl Default for LinkSettings {
    fn default() -> LinkSettings {
        LinkSettings {
            queue: DEFAULT_LINK_QUEUE,
            write_timeout: Duration::from_millis(DEFAULT_LINK_WRITE_TIMEOUT_MS),
            answer_timeout: Duration::from_millis(DEFAULT_LINK_ANSWER_TIMEOUT_MS),
            forwarding: Default::default(),
        }
    }
}

/// How long a `close_after_reply` connection may stay quiet after its last reply.
pub const CLOSE_AFTER_REPLY_GRACE: Duration = Duration::from_millis(250);

pub const DEFAULT_MAX_LINE_BYTES: usize = 1 << 20;
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
pub const DEFAULT_IDLE_TIMEOUT_S: u64 = 300;
pub const DEFAULT_MAX_CLIENT_ID_BYTES: usize = 256;
pub const DEFAULT_MAX_FUTURE_S: u64 = 86_400;
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 512;
pub const DEFAULT_FIRST_LINE_TIMEOUT_S: u64 = 10;
pub const DEFAULT_WRITE_TIMEOUT_S: u64 = 10;
/// The fewest connections a node may be limited to (see [`Limits::max_connections`]).
pub const MIN_MAX_CONNECTIONS: usize = 4;
/// Below this a line could not hold an IAMAT with a long id; peer links are not affected
/// (they always get at least the default, since a digest is a 16 KiB line).
pub(super) const MIN_MAX_LINE_BYTES: usize = 128;

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            idle_timeout: Duration::from_secs(DEFAULT_IDLE_TIMEOUT_S),
            max_client_id_bytes: DEFAULT_MAX_CLIENT_ID_BYTES,
            max_future: Duration::from_secs(DEFAULT_MAX_FUTURE_S),
            max_connections_per_ip: DEFAULT_MAX_CONNECTIONS_PER_IP,
            first_line_timeout: Duration::from_secs(DEFAULT_FIRST_LINE_TIMEOUT_S),
            write_timeout: Duration::from_secs(DEFAULT_WRITE_TIMEOUT_S),
            close_after_reply: false,
        }
    }
}

pub const DEFAULT_STRICT_WAIT_MS: u64 = 5000;

pub const DEFAULT_TOMBSTONE_TTL_S: u64 = 7 * 86_400;

impl Default for ClientsSettings {
    fn default() -> ClientsSettings {
        ClientsSettings {
            ttl_s: None,
            tombstone_ttl_s: DEFAULT_TOMBSTONE_TTL_S,
            max: None,
        }
    }
}

pub const DEFAULT_START_TIMEOUT_MS: u64 = 30_000;
pub const DEFAULT_HEALTH_INTERVAL_MS: u64 = 5_000;
pub const DEFAULT_HEALTH_FAILURES: u32 = 3;
/// Shorter start timeouts and probe intervals kill healthy nodes (a restart loop).
pub const MIN_START_TIMEOUT_MS: u64 = 1000;
pub const MIN_HEALTH_INTERVAL_MS: u64 = 100;

pub const DEFAULT_CONFIG_PATH: &str = "herd.yaml";
pub(super) const DEFAULT_LOG_KEEP: usize = 14;

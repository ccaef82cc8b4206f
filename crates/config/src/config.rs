//! `herd.yaml`: the file model, its validation, and the resolved herd the rest of the code
//! uses. Validation errors name the file, the line, and the fix.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::auth::{HerdSecret, SecretSource, SECRET_ENV, SECRET_FILE_NAME};
use crate::hosts::{Endpoint, Host, Machine};
use herd_wire::protocol::is_valid_server_name;

/// The file as written. Unknown keys are errors, so a typo never silently does nothing.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    servers: BTreeMap<String, Spanned<RawServer>>,
    #[serde(default)]
    host: Option<Spanned<String>>,
    #[serde(default)]
    listen: Option<Spanned<String>>,
    #[serde(default)]
    log_dir: Option<PathBuf>,
    #[serde(default)]
    data_dir: Option<PathBuf>,
    #[serde(default)]
    logs: RawLogs,
    #[serde(default)]
    places: RawPlaces,
    #[serde(default)]
    reconnect: RawReconnect,
    #[serde(default)]
    run_dir: Option<PathBuf>,
    #[serde(default)]
    secret: Option<Spanned<String>>,
    #[serde(default)]
    secret_file: Option<Spanned<PathBuf>>,
    #[serde(default)]
    insecure_open_links: Option<Spanned<bool>>,
    #[serde(default)]
    supervisor: RawSupervisor,
    #[serde(default)]
    durability: Option<Durability>,
    #[serde(default)]
    strict_wait_ms: Option<u64>,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    links: RawLinks,
    #[serde(default)]
    admin: RawAdmin,
    #[serde(default)]
    clients: RawClients,
}

/// `clients:`: how long a client's location is kept, and how many clients a node holds.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClients {
    ttl_s: Option<u64>,
    tombstone_ttl_s: Option<u64>,
    max: Option<usize>,
}

/// `admin:`: who may read the admin endpoint's routes (see [`AdminSettings`]).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    open: Option<bool>,
}

/// `links:`: how much a link to a neighbour may hold back, and how long it may stall.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLinks {
    queue: Option<usize>,
    write_timeout_ms: Option<u64>,
    answer_timeout_ms: Option<u64>,
    forwarding: Option<String>,
    tls: Option<Spanned<RawTls>>,
}

/// `links.tls:`: the herd CA and each server's certificate and key (`{name}` in a path is
/// replaced by the server's name).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    ca: PathBuf,
    cert: String,
    key: String,
}

/// `limits:`: what one connection may cost a node (see [`Limits`]).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_line_bytes: Option<usize>,
    max_connections: Option<usize>,
    idle_timeout_s: Option<u64>,
    max_client_id_bytes: Option<usize>,
    max_future_s: Option<u64>,
    max_connections_per_ip: Option<usize>,
    first_line_timeout_s: Option<u64>,
    write_timeout_s: Option<u64>,
    close_after_reply: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSupervisor {
    stop_timeout_ms: Option<u64>,
    backoff_initial_ms: Option<u64>,
    backoff_max_ms: Option<u64>,
    stable_after_s: Option<u64>,
    max_quick_crashes: Option<u32>,
    start_timeout_ms: Option<u64>,
    health_interval_ms: Option<u64>,
    health_failures: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    port: Spanned<u32>,
    #[serde(default)]
    peers: Vec<Spanned<String>>,
    #[serde(default)]
    host: Option<Spanned<String>>,
    #[serde(default)]
    listen: Option<Spanned<String>>,
    #[serde(default)]
    admin_port: Option<Spanned<u32>>,
    #[serde(default)]
    tls_port: Option<Spanned<u32>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLogs {
    rotation: Option<LogRotation>,
    keep: Option<usize>,
    max_file_bytes: Option<u64>,
    max_line_bytes: Option<usize>,
    level: Option<LogLevel>,
    order_window_ms: Option<u64>,
    redact: Option<Redact>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlaces {
    provider: Option<ProviderKind>,
    file: Option<PathBuf>,
    api: Option<GoogleApi>,
    endpoint: Option<Spanned<String>>,
    timeout_ms: Option<u64>,
    cache_ttl_s: Option<u64>,
    cache_entries: Option<usize>,
    max_requests_per_s: Option<u32>,
    max_in_flight: Option<usize>,
    allow_http: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReconnect {
    initial_ms: Option<u64>,
    max_ms: Option<u64>,
    sync_interval_s: Option<u64>,
}

/// How often a node's log file rotates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogRotation {
    Minutely,
    Hourly,
    Daily,
    Never,
}

/// How much a node's log says. `info` (default) logs every wire line except `HERD STATUS`
/// probes; `debug` logs those too.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    #[default]
    Info,
    Debug,
}

/// What the wire log keeps of clients' data (`logs.redact`), from least to most hidden.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Redact {
    /// Every line as it was sent.
    #[default]
    None,
    /// Locations rounded to 0.1 degree (about 11 km).
    Locations,
    /// Locations rounded, and client ids replaced by a keyed hash (HMAC with the herd
    /// secret), so one client's lines can still be followed but not named.
    Ids,
}

/// Which places provider answers WHATSAT (`places.provider`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    Offline,
    Google,
    /// Recent posts near the client from the X API v2 recent search.
    X,
}

impl ProviderKind {
    fn name(self) -> &'static str {
        match self {
            ProviderKind::Offline => "offline",
            ProviderKind::Google => "google",
            ProviderKind::X => "x",
        }
    }
}

/// Which Google Places web service the google provider calls.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GoogleApi {
    /// Nearby Search (legacy): `GET ...?location=LAT,LNG&radius=METRES&key=KEY`.
    #[default]
    Legacy,
    /// Places API (New) `places:searchNearby`: `POST` with a field mask, mapped to the legacy
    /// JSON shape.
    New,
}

impl GoogleApi {
    /// Google's own URL for this API.
    pub fn default_endpoint(self) -> &'static str {
        match self {
            GoogleApi::Legacy => "https://maps.googleapis.com/maps/api/place/nearbysearch/json",
            GoogleApi::New => "https://places.googleapis.com/v1/places:searchNearby",
        }
    }
}

/// The X API's own base URL; the x provider adds `/2/tweets/search/recent`.
pub const X_DEFAULT_ENDPOINT: &str = "https://api.x.com";

/// When a node's store reaches the disk (see `node/store/`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// The store is flushed at most every second and on a graceful stop; a crash can lose
    /// the last second of updates, which the node's neighbours still hold.
    #[default]
    Relaxed,
    /// A client gets its AT reply only once its update is on disk; concurrent updates share
    /// one flush (group commit).
    Strict,
}

/// One server of the herd, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    pub name: String,
    /// Where the server is: what neighbours and clients dial (with `port`), and what decides
    /// on which machine it runs (see `hosts.rs`).
    pub host: Host,
    pub port: u16,
    /// The address to bind when it differs from `host` (a container's `0.0.0.0`, NAT).
    pub listen: Option<IpAddr>,
    /// Neighbours on either side of a link: a link named by one end is bidirectional.
    pub neighbours: BTreeSet<String>,
    /// The admin endpoint's port (HTTP: metrics, health, status), on the same address as
    /// `port`; `admin_port:` in the file, else `port` + [`ADMIN_PORT_OFFSET`].
    pub admin_port: u16,
    /// A second client port (`tls_port:`) that serves the same protocol over TLS with the
    /// server's certificate (needs `links.tls`).
    pub tls_port: Option<u16>,
}

/// A server's admin port when the file gives none: its client port plus this, so the
/// classic herd (ports 12000-12004) gets 13000-13004 without an edit.
pub const ADMIN_PORT_OFFSET: u16 = 1000;

/// `admin:`: who may read the admin endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AdminSettings {
    /// Every route open to anyone who reaches the port. By default only `/healthz` and
    /// `/readyz` are; `/status` and `/metrics` need the herd's admin token.
    pub open: bool,
}

/// Log files: where, how often they rotate, how many are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSettings {
    pub dir: PathBuf,
    pub rotation: LogRotation,
    pub keep: usize,
    /// A file that reaches this size is closed and a new one started (within the same
    /// period); `None`: rotation by time only.
    pub max_file_bytes: Option<u64>,
    /// A wire line is logged up to this many bytes, then `... (<n> bytes)`.
    pub max_line_bytes: usize,
    pub level: LogLevel,
    /// How long the log writer holds each line to write a file's lines in time order
    /// (`logs/reorder.rs`); 0: as they arrive.
    pub order_window: Duration,
    /// What the wire log hides of clients' ids and locations.
    pub redact: Redact,
}

pub const DEFAULT_LOG_MAX_LINE_BYTES: usize = 4096;
pub const DEFAULT_LOG_ORDER_WINDOW_MS: u64 = 200;
/// Past this a log would lag a live `herdctl tail -f` by more than it helps.
const MAX_LOG_ORDER_WINDOW_MS: u64 = 10_000;
/// Below this a capped log line could not show a whole IAMAT.
const MIN_LOG_LINE_BYTES: usize = 64;
/// Below this, rotating by size would start a file every few lines.
const MIN_LOG_FILE_BYTES: u64 = 4096;

/// The places provider and its settings: each provider carries only its own, so a setting
/// of one provider can never sit unused under another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlacesConfig {
    /// The embedded GeoNames index, or a points-of-interest CSV instead.
    Offline {
        file: Option<PathBuf>,
    },
    Google(GoogleSettings),
    /// The X API v2 recent search (`<endpoint>/2/tweets/search/recent`).
    X(UpstreamSettings),
}

impl PlacesConfig {
    pub fn provider(&self) -> ProviderKind {
        match self {
            PlacesConfig::Offline { .. } => ProviderKind::Offline,
            PlacesConfig::Google(_) => ProviderKind::Google,
            PlacesConfig::X(_) => ProviderKind::X,
        }
    }
}

/// The google provider's settings. The API key is not here: it comes from the environment
/// variable `GOOGLE_PLACES_API_KEY` when the node starts, so it is never in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoogleSettings {
    pub api: GoogleApi,
    /// Google's URL for `api` unless set.
    pub upstream: UpstreamSettings,
}

/// What every provider that proxies to a web service takes (google, x). Secrets are not
/// here: they come from the environment when the node starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamSettings {
    /// `http://` or `https://` URL: the service's own unless set.
    pub endpoint: reqwest::Url,
    /// The most an upstream request may take, connect to last byte.
    pub timeout: Duration,
    /// How long a successful answer is reused for the same location and radius; zero turns
    /// caching off (concurrent identical queries still share one request).
    pub cache_ttl: Duration,
    /// The most (location, radius) answers the cache holds.
    pub cache_entries: usize,
    /// The most requests sent a second (a token bucket: bursts of that many); a WHATSAT
    /// over it is answered with an over-limit document and sends nothing.
    pub max_requests_per_s: u32,
    /// The most requests waiting for an answer at once; over it, the same.
    pub max_in_flight: usize,
    /// Whether an `http://` endpoint may be used (a local test server); otherwise only
    /// `https://`, since requests carry the key.
    pub allow_http: bool,
}

pub const DEFAULT_UPSTREAM_TIMEOUT_MS: u64 = 3000;
pub const DEFAULT_GOOGLE_CACHE_TTL_S: u64 = 300;
/// Recent posts go stale sooner than places do.
pub const DEFAULT_X_CACHE_TTL_S: u64 = 60;
pub const DEFAULT_UPSTREAM_CACHE_ENTRIES: usize = 10_000;
pub const DEFAULT_UPSTREAM_MAX_REQUESTS_PER_S: u32 = 10;
pub const DEFAULT_UPSTREAM_MAX_IN_FLIGHT: usize = 16;

pub const DEFAULT_SYNC_INTERVAL_S: u64 = 30;

/// Capped exponential backoff between attempts to reach a neighbour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReconnectSettings {
    pub initial: Duration,
    pub max: Duration,
    /// How often a live link repeats the anti-entropy digest exchange.
    pub sync_interval: Duration,
}

/// What a link to a neighbour may cost (`links:` in herd.yaml).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkSettings {
    /// Updates waiting to be written to one neighbour. A link whose queue fills (the
    /// neighbour reads too slowly, or not at all) is dropped and repaired by anti-entropy
    /// when it comes back, so a stalled neighbour costs a bounded amount of memory.
    pub queue: usize,
    /// Every write on a link must complete within this long, or the link is dropped.
    pub write_timeout: Duration,
    /// After this node sends its digest, the neighbour must start answering within this long
    /// (any line counts), or the link is declared dead and re-dialled.
    pub answer_timeout: Duration,
    /// Where a server sends an update on: every neighbour but the sender (`flood`), or
    /// along the origin's spanning tree (`tree`, see `node/routes.rs`).
    pub forwarding: Forwarding,
}

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

/// `links.tls:` resolved: where the herd CA and each server's certificate and key are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca: PathBuf,
    /// The certificate's path, `{name}` standing for the server's name.
    pub cert: String,
    /// The key's path, `{name}` standing for the server's name.
    pub key: String,
}

impl TlsFiles {
    /// `ca.pem`, `<Name>.pem` and `<Name>.key` in `dir` (what `herdctl certs` lays out).
    pub fn in_folder(dir: &Path) -> TlsFiles {
        let path = |file: &str| dir.join(file).to_string_lossy().into_owned();
        TlsFiles {
            ca: dir.join("ca.pem"),
            cert: path("{name}.pem"),
            key: path("{name}.key"),
        }
    }

    /// Server `name`'s certificate file.
    pub fn cert_for(&self, name: &str) -> PathBuf {
        PathBuf::from(self.cert.replace("{name}", name))
    }

    /// Server `name`'s key file.
    pub fn key_for(&self, name: &str) -> PathBuf {
        PathBuf::from(self.key.replace("{name}", name))
    }
}

/// The `links:` section, checked: every zero is an error.
fn links_config(raw: RawLinks, shown: &str) -> Result<LinkSettings> {
    let millis = |key: &str, value: Option<u64>, default: u64| {
        nonzero(shown, key, value, default, &format!("use e.g. {default}"))
            .map(Duration::from_millis)
    };
    Ok(LinkSettings {
        queue: nonzero(
            shown,
            "links.queue",
            raw.queue,
            DEFAULT_LINK_QUEUE,
            &format!("use e.g. {DEFAULT_LINK_QUEUE}"),
        )?,
        write_timeout: millis(
            "links.write_timeout_ms",
            raw.write_timeout_ms,
            DEFAULT_LINK_WRITE_TIMEOUT_MS,
        )?,
        answer_timeout: millis(
            "links.answer_timeout_ms",
            raw.answer_timeout_ms,
            DEFAULT_LINK_ANSWER_TIMEOUT_MS,
        )?,
        forwarding: match raw.forwarding.as_deref() {
            None => Default::default(),
            Some(text) => Forwarding::parse(text).ok_or_else(|| {
                anyhow::anyhow!(
                    "{shown}: links.forwarding is {text:?}; use flood (every neighbour but the \
                     sender) or tree (along the origin's spanning tree)"
                )
            })?,
        },
    })
}

/// What one connection, or many, may cost a node: the defence against hostile or broken
/// clients (`limits:` in herd.yaml).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The longest line a node buffers; a longer one is answered `? ` plus its first this
    /// many bytes, and the rest is discarded as it arrives.
    pub max_line_bytes: usize,
    /// Open client connections per node; past it, new connections are accepted and closed
    /// at once (a neighbour's handshake still finds room of its own: `node/slots.rs`).
    pub max_connections: usize,
    /// A connection that sends no complete line for this long is closed (neighbours' links
    /// get at least three anti-entropy periods; see `node/server.rs`).
    pub idle_timeout: Duration,
    /// The longest client id IAMAT and WHATSAT (and records from neighbours) carry, in bytes.
    pub max_client_id_bytes: usize,
    /// How far ahead of this server's clock a client's time may be: an IAMAT further ahead
    /// is refused, a neighbour's record further ahead is dropped, so one forged future time
    /// cannot pin a client's location forever.
    pub max_future: Duration,
    /// Client connections from one address at once; past it, new ones are closed at once.
    pub max_connections_per_ip: usize,
    /// A connection that sends no line at all for this long after it opens is closed.
    pub first_line_timeout: Duration,
    /// The longest a reply may take to be written to a client that does not read.
    pub write_timeout: Duration,
    /// Close a client's connection once every line it sent is answered and nothing more
    /// arrives within [`CLOSE_AFTER_REPLY_GRACE`], for clients that read until the server
    /// closes (`nc` without `-q`) instead of half-closing.
    pub close_after_reply: bool,
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
const MIN_MAX_LINE_BYTES: usize = 128;

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

/// The `limits:` section, checked: zero (or a line too short to be useful) is an error.
fn limits_config(raw: RawLimits, shown: &str) -> Result<Limits> {
    let max_line_bytes = raw.max_line_bytes.unwrap_or(DEFAULT_MAX_LINE_BYTES);
    if max_line_bytes < MIN_MAX_LINE_BYTES {
        bail!(
            "{shown}: limits.max_line_bytes is {max_line_bytes}; use at least \
             {MIN_MAX_LINE_BYTES} (default {DEFAULT_MAX_LINE_BYTES})"
        );
    }
    Ok(Limits {
        max_line_bytes,
        max_connections: at_least(
            shown,
            "limits.max_connections",
            raw.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS),
            MIN_MAX_CONNECTIONS,
            &format!(
                "fewer leaves no room for an operator's `herdctl send` beside a few clients; \
                 default {DEFAULT_MAX_CONNECTIONS}"
            ),
        )?,
        idle_timeout: Duration::from_secs(nonzero(
            shown,
            "limits.idle_timeout_s",
            raw.idle_timeout_s,
            DEFAULT_IDLE_TIMEOUT_S,
            &format!("use e.g. {DEFAULT_IDLE_TIMEOUT_S}"),
        )?),
        max_client_id_bytes: nonzero(
            shown,
            "limits.max_client_id_bytes",
            raw.max_client_id_bytes,
            DEFAULT_MAX_CLIENT_ID_BYTES,
            &format!("use e.g. {DEFAULT_MAX_CLIENT_ID_BYTES}"),
        )?,
        max_future: Duration::from_secs(nonzero(
            shown,
            "limits.max_future_s",
            raw.max_future_s,
            DEFAULT_MAX_FUTURE_S,
            &format!("use e.g. {DEFAULT_MAX_FUTURE_S} (clients' clocks may run ahead a little)"),
        )?),
        max_connections_per_ip: nonzero(
            shown,
            "limits.max_connections_per_ip",
            raw.max_connections_per_ip,
            DEFAULT_MAX_CONNECTIONS_PER_IP,
            &format!("use e.g. {DEFAULT_MAX_CONNECTIONS_PER_IP}"),
        )?,
        first_line_timeout: Duration::from_secs(nonzero(
            shown,
            "limits.first_line_timeout_s",
            raw.first_line_timeout_s,
            DEFAULT_FIRST_LINE_TIMEOUT_S,
            &format!("use e.g. {DEFAULT_FIRST_LINE_TIMEOUT_S}"),
        )?),
        write_timeout: Duration::from_secs(nonzero(
            shown,
            "limits.write_timeout_s",
            raw.write_timeout_s,
            DEFAULT_WRITE_TIMEOUT_S,
            &format!("use e.g. {DEFAULT_WRITE_TIMEOUT_S}"),
        )?),
        close_after_reply: raw.close_after_reply.unwrap_or(false),
    })
}

/// The client data lifecycle (`clients:`): expiry, tombstones (`herdctl forget`) and a
/// bounded table. The defaults keep the classic behaviour: no expiry, no bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientsSettings {
    /// A record whose client time is older than this many seconds is gone (`None`: kept).
    pub ttl_s: Option<u64>,
    /// A tombstone is kept this many seconds after its time, then compacted away.
    pub tombstone_ttl_s: u64,
    /// The most clients a node holds; a new one past it is refused (`None`: no bound).
    pub max: Option<usize>,
}

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

/// The `clients:` section, checked: zero would expire or refuse everything.
fn clients_config(raw: &RawClients, shown: &str) -> Result<ClientsSettings> {
    if raw.ttl_s == Some(0) {
        bail!("{shown}: clients.ttl_s is 0; use e.g. 86400, or leave it out to keep locations");
    }
    if raw.max == Some(0) {
        bail!("{shown}: clients.max is 0; use e.g. 1000000, or leave it out for no bound");
    }
    Ok(ClientsSettings {
        ttl_s: raw.ttl_s,
        tombstone_ttl_s: nonzero(
            shown,
            "clients.tombstone_ttl_s",
            raw.tombstone_ttl_s,
            DEFAULT_TOMBSTONE_TTL_S,
            &format!(
                "use e.g. {DEFAULT_TOMBSTONE_TTL_S} (longer than any server stays down, or a \
                 forgotten client can come back from it)"
            ),
        )?,
        max: raw.max,
    })
}

/// How the supervisor stops nodes and restarts crashed ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SupervisorSettings {
    /// SIGTERM, then SIGKILL after this long.
    pub stop_timeout: Duration,
    /// First delay before restarting a crashed node; doubles per quick crash.
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// A node up this long is stable: its quick-crash count goes back to zero.
    pub stable_after: Duration,
    /// More quick crashes in a row than this and the node is FATAL (not restarted).
    pub max_quick_crashes: u32,
    /// A started node that has not answered as itself by then is killed, and the start
    /// counts as a crash.
    pub start_timeout: Duration,
    /// How often a running node is asked `HERD STATUS`; a probe not answered within this
    /// long fails.
    pub health_interval: Duration,
    /// Probes failed in a row before a running node is killed and restarted by policy.
    pub health_failures: u32,
}

pub const DEFAULT_START_TIMEOUT_MS: u64 = 30_000;
pub const DEFAULT_HEALTH_INTERVAL_MS: u64 = 5_000;
pub const DEFAULT_HEALTH_FAILURES: u32 = 3;
/// Shorter start timeouts and probe intervals kill healthy nodes (a restart loop).
pub const MIN_START_TIMEOUT_MS: u64 = 1000;
pub const MIN_HEALTH_INTERVAL_MS: u64 = 100;

/// The whole herd, validated, with every path absolute (relative paths in the file resolve
/// against the file's folder, so the herd behaves the same from any working directory).
#[derive(Debug, Clone)]
pub struct HerdConfig {
    pub path: PathBuf,
    pub servers: BTreeMap<String, ServerConfig>,
    pub logs: LogSettings,
    pub data_dir: PathBuf,
    /// When each node's store is flushed.
    pub durability: Durability,
    /// Under strict durability, the longest an IAMAT reply waits for its flush; past it the
    /// IAMAT is refused (`? <line>`) rather than acknowledged.
    pub strict_wait: Duration,
    pub places: PlacesConfig,
    pub reconnect: ReconnectSettings,
    /// Where the supervisor keeps its socket and the nodes their locks.
    pub run_dir: PathBuf,
    /// Where the secret every server shares to authenticate peer links comes from
    /// (`HERD_SECRET`, `secret:`, `secret_file:`, `herd.secret` beside the file); open links
    /// only with `insecure_open_links: true`.
    pub secret: SecretSource,
    pub supervisor: SupervisorSettings,
    /// Per-node resource limits against hostile or broken clients.
    pub limits: Limits,
    /// What a link to a neighbour may queue, and how long it may stall.
    pub links: LinkSettings,
    /// `links.tls`: links are mutual TLS under the herd CA (see `tls/`).
    pub tls: Option<TlsFiles>,
    /// Who may read the admin endpoint.
    pub admin: AdminSettings,
    /// How long clients' locations and tombstones are kept, and how many clients a node
    /// holds.
    pub clients: ClientsSettings,
    /// A fingerprint of the file's text without its secret. Nodes report it in
    /// `HERD STATUS` (answered to anyone), so the supervisor can tell that they run the herd
    /// file it applied.
    pub digest: String,
    /// Things worth telling the operator that do not stop the herd (a disconnected graph).
    pub warnings: Vec<String>,
}

pub const DEFAULT_CONFIG_PATH: &str = "herd.yaml";
const DEFAULT_LOG_KEEP: usize = 14;

/// `links.forwarding` in herd.yaml: how a server passes an update on (`node::routes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Forwarding {
    #[default]
    Flood,
    Tree,
}

impl Forwarding {
    pub fn parse(text: &str) -> Option<Forwarding> {
        match text {
            "flood" => Some(Forwarding::Flood),
            "tree" => Some(Forwarding::Tree),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Forwarding::Flood => "flood",
            Forwarding::Tree => "tree",
        }
    }
}

impl HerdConfig {
    /// The lock file a running node `name` holds (`pidlock`): who holds it is the node's pid.
    pub fn node_lock_path(&self, name: &str) -> PathBuf {
        self.run_dir.join(format!("{name}.lock"))
    }

    /// Reads and validates a herd file.
    pub fn load(path: &Path) -> Result<HerdConfig> {
        Ok(HerdConfig::load_with_text(path)?.0)
    }

    /// Reads and validates a herd file; also returns the text it read.
    pub fn load_with_text(path: &Path) -> Result<(HerdConfig, String)> {
        let text = crate::config_errors::read_text(path)?;
        let config = HerdConfig::parse(&text, &absolute(path)?)?;
        Ok((config, text))
    }

    /// Validates the text in `copy` (the supervisor's copy of the herd file it applied) as
    /// if it were the file at `path`: errors name `path`, relative paths resolve against its
    /// folder.
    pub fn load_copy(copy: &Path, path: &Path) -> Result<HerdConfig> {
        let text = std::fs::read_to_string(copy)
            .with_context(|| format!("cannot read the applied herd file {}", copy.display()))?;
        HerdConfig::parse(&text, &absolute(path)?)
    }

    /// Validates herd-file text; `path` names the file in errors and anchors relative paths.
    pub fn parse(text: &str, path: &Path) -> Result<HerdConfig> {
        let shown = path.display().to_string();
        let raw: RawConfig = serde_saphyr::from_str(text).map_err(|e| {
            let message = yaml_message(&e);
            match e.location() {
                Some(at) => {
                    let message = crate::config_errors::explain(
                        &message,
                        text,
                        at.line() as usize,
                        at.column() as usize,
                    );
                    anyhow!("{shown} line {}: {message}", at.line())
                }
                None => anyhow!("{shown}: {message}"),
            }
        })?;
        let folder = path.parent().unwrap_or(Path::new("."));
        let resolve = |p: Option<PathBuf>, default: &str| {
            let p = p.unwrap_or_else(|| PathBuf::from(default));
            if p.is_absolute() {
                p
            } else {
                folder.join(p)
            }
        };

        let default_host = match &raw.host {
            None => Host::Ip(IpAddr::from([127, 0, 0, 1])),
            Some(h) => host_value(h, "host", &shown.to_string())?,
        };
        let default_listen = match &raw.listen {
            None => None,
            Some(l) => Some(listen_value(l, "listen", &shown.to_string())?),
        };

        if raw.servers.is_empty() {
            bail!("{shown}: servers: is empty; list at least one server with its port");
        }
        let mut servers = BTreeMap::new();
        // Ports are per host: servers on different hosts may share one.
        let mut ports: BTreeMap<(String, u16), &str> = BTreeMap::new();
        let mut admin_ports: Vec<(String, u16, String, u64)> = Vec::new();
        for (name, spec) in &raw.servers {
            let line = spec.referenced.line();
            if name == "all" {
                bail!(
                    "{shown} line {line}: \"all\" is reserved (herdctl start all means every \
                     server); rename this server"
                );
            }
            if !is_valid_server_name(name) {
                bail!(
                    "{shown} line {line}: server name {name:?} is not valid; use letters, digits, \
                     '-' and '_', starting with a letter"
                );
            }
            let port = spec.value.port.value;
            let port_line = spec.value.port.referenced.line();
            let port = u16::try_from(port)
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| {
                    anyhow!("{shown} line {port_line}: server {name} has port {port}; use 1-65535")
                })?;
            let host = match &spec.value.host {
                None => default_host.clone(),
                Some(h) => host_value(h, &format!("server {name} has host"), &shown.to_string())?,
            };
            let listen = match &spec.value.listen {
                None => default_listen,
                Some(l) => Some(listen_value(
                    l,
                    &format!("server {name} has listen"),
                    &shown.to_string(),
                )?),
            };
            if let Some(other) = ports.insert((host.to_string(), port), name) {
                bail!(
                    "{shown} line {port_line}: servers {other} and {name} both use port {port} on \
                     host {host}; give each server on a host its own port"
                );
            }
            let admin_port = admin_port_value(name, port, spec.value.admin_port.as_ref(), &shown)?;
            admin_ports.push((host.to_string(), admin_port, name.clone(), port_line));
            let tls_port = match &spec.value.tls_port {
                None => None,
                Some(p) => {
                    let line = p.referenced.line();
                    let value =
                        u16::try_from(p.value)
                            .ok()
                            .filter(|v| *v != 0)
                            .ok_or_else(|| {
                                anyhow!(
                                "{shown} line {line}: server {name} has tls_port {}; use 1-65535",
                                p.value
                            )
                            })?;
                    if raw.links.tls.is_none() {
                        bail!(
                            "{shown} line {line}: server {name} has tls_port but the herd has no \
                             links.tls (its certificate); add links.tls: {{ ca, cert, key }} (see \
                             herdctl certs init)"
                        );
                    }
                    if let Some(other) = ports.insert((host.to_string(), value), name) {
                        bail!(
                            "{shown} line {line}: server {name}'s tls_port {value} is also used by \
                             {other} on host {host}; give it a port of its own"
                        );
                    }
                    Some(value)
                }
            };
            servers.insert(
                name.clone(),
                ServerConfig {
                    name: name.clone(),
                    host,
                    port,
                    listen,
                    neighbours: BTreeSet::new(),
                    admin_port,
                    tls_port,
                },
            );
        }
        // An admin port must not be any server's client port or another admin port on the
        // same host.
        for (i, (host, admin_port, name, line)) in admin_ports.iter().enumerate() {
            let clash = ports
                .get(&(host.clone(), *admin_port))
                .copied()
                .or_else(|| {
                    admin_ports[..i]
                        .iter()
                        .find(|(h, p, _, _)| h == host && p == admin_port)
                        .map(|(_, _, other, _)| other.as_str())
                });
            if let Some(other) = clash {
                bail!(
                    "{shown} line {line}: server {name}'s admin port {admin_port} is also used by \
                     {other} on host {host}; give {name} another admin_port: (default: port + \
                     {ADMIN_PORT_OFFSET})"
                );
            }
        }
        for (name, spec) in &raw.servers {
            for peer in &spec.value.peers {
                let line = peer.referenced.line();
                let peer = &peer.value;
                if peer == name {
                    bail!(
                        "{shown} line {line}: server {name} lists itself as a peer; remove it \
                         from its peers"
                    );
                }
                if !servers.contains_key(peer) {
                    bail!(
                        "{shown} line {line}: server {name} lists unknown peer {peer:?}; add \
                         {peer} under servers: or fix the name (known: {})",
                        raw.servers.keys().cloned().collect::<Vec<_>>().join(", ")
                    );
                }
                servers
                    .get_mut(name)
                    .unwrap()
                    .neighbours
                    .insert(peer.clone());
                servers
                    .get_mut(peer)
                    .unwrap()
                    .neighbours
                    .insert(name.clone());
            }
        }

        let logs = LogSettings {
            dir: resolve(raw.log_dir, "logs"),
            rotation: raw.logs.rotation.unwrap_or(LogRotation::Daily),
            keep: nonzero(
                &shown,
                "logs.keep",
                raw.logs.keep,
                DEFAULT_LOG_KEEP,
                &format!("keep at least 1 file (default {DEFAULT_LOG_KEEP})"),
            )?,
            max_file_bytes: raw.logs.max_file_bytes,
            max_line_bytes: raw
                .logs
                .max_line_bytes
                .unwrap_or(DEFAULT_LOG_MAX_LINE_BYTES),
            level: raw.logs.level.unwrap_or_default(),
            order_window: Duration::from_millis(
                raw.logs
                    .order_window_ms
                    .unwrap_or(DEFAULT_LOG_ORDER_WINDOW_MS),
            ),
            redact: raw.logs.redact.unwrap_or_default(),
        };
        if logs.order_window > Duration::from_millis(MAX_LOG_ORDER_WINDOW_MS) {
            bail!(
                "{shown}: logs.order_window_ms is {}; use at most {MAX_LOG_ORDER_WINDOW_MS} \
                 (default {DEFAULT_LOG_ORDER_WINDOW_MS})",
                logs.order_window.as_millis()
            );
        }
        if logs.max_file_bytes.is_some_and(|b| b < MIN_LOG_FILE_BYTES) {
            bail!(
                "{shown}: logs.max_file_bytes is {}; use at least {MIN_LOG_FILE_BYTES} (or leave \
                 it out to rotate by time only)",
                logs.max_file_bytes.unwrap_or_default()
            );
        }
        if logs.max_line_bytes < MIN_LOG_LINE_BYTES {
            bail!(
                "{shown}: logs.max_line_bytes is {}; use at least {MIN_LOG_LINE_BYTES} (default \
                 {DEFAULT_LOG_MAX_LINE_BYTES})",
                logs.max_line_bytes
            );
        }
        let places = places_config(raw.places, &shown, |f| resolve(Some(f), ""))?;
        let reconnect = reconnect_config(&raw.reconnect, &shown)?;
        let supervisor = supervisor_config(&raw.supervisor, &shown)?;

        let inline_secret = raw.secret.as_ref().map(|s| s.value.clone());
        let secret = secret_source(
            raw.secret,
            raw.secret_file.map(|f| Spanned {
                value: resolve(Some(f.value), ""),
                referenced: f.referenced,
                defined: f.defined,
            }),
            raw.insecure_open_links,
            folder,
            &shown,
        )?;
        let mut warnings = Vec::new();
        if inline_secret.is_some() {
            warnings.extend(readable_by_others_warning(path));
        }
        let limits = limits_config(raw.limits, &shown)?;
        let tls = raw.links.tls.as_ref().map(|t| {
            let path = |p: &str| {
                resolve(Some(PathBuf::from(p)), "")
                    .to_string_lossy()
                    .into_owned()
            };
            TlsFiles {
                ca: resolve(Some(t.value.ca.clone()), ""),
                cert: path(&t.value.cert),
                key: path(&t.value.key),
            }
        });
        if let (Some(t), Some(line)) = (&tls, raw.links.tls.as_ref().map(|t| t.referenced.line())) {
            if servers.len() > 1 && (!t.cert.contains("{name}") || !t.key.contains("{name}")) {
                bail!(
                    "{shown} line {line}: links.tls cert and key must contain {{name}} (each \
                     server has its own), e.g. cert: certs/{{name}}.pem, key: certs/{{name}}.key"
                );
            }
        }
        let links = links_config(raw.links, &shown)?;
        let clients = clients_config(&raw.clients, &shown)?;
        if logs.redact == Redact::Ids && matches!(secret, SecretSource::Open) {
            bail!(
                "{shown}: logs.redact: ids hashes client ids with the herd secret, and this herd \
                 has none (insecure_open_links: true); remove insecure_open_links, or use \
                 logs.redact: locations"
            );
        }

        warnings.extend(disconnected_warning(&servers));
        Ok(HerdConfig {
            path: path.to_path_buf(),
            servers,
            logs,
            data_dir: resolve(raw.data_dir, "data"),
            durability: raw.durability.unwrap_or_default(),
            // Zero would refuse every strict update.
            strict_wait: nonzero(
                &shown,
                "strict_wait_ms",
                raw.strict_wait_ms,
                DEFAULT_STRICT_WAIT_MS,
                &format!("use e.g. {DEFAULT_STRICT_WAIT_MS}"),
            )
            .map(Duration::from_millis)?,
            places,
            reconnect,
            run_dir: resolve(raw.run_dir, "run"),
            secret,
            supervisor,
            limits,
            links,
            tls,
            admin: AdminSettings {
                open: raw.admin.open.unwrap_or(false),
            },
            clients,
            digest: text_digest(&match &inline_secret {
                // The digest is shown to anyone who asks: nothing of the secret goes in.
                Some(secret) if !secret.is_empty() => text.replace(secret.as_str(), ""),
                _ => text.to_owned(),
            }),
            warnings,
        })
    }

    /// The server called `name`, or an error listing the ones that exist.
    pub fn server(&self, name: &str) -> Result<&ServerConfig> {
        self.servers.get(name).ok_or_else(|| {
            anyhow!(
                "no server named {name:?} in {}; known servers: {}",
                self.path.display(),
                self.server_names().join(", ")
            )
        })
    }

    pub fn server_names(&self) -> Vec<&str> {
        self.servers.keys().map(String::as_str).collect()
    }

    /// Where neighbours and clients dial `server`: its host (a name is resolved at each
    /// dial, see [`Endpoint::connect`]) and port.
    pub fn endpoint(&self, server: &ServerConfig) -> Endpoint {
        Endpoint::new(server.host.clone(), server.port)
    }

    /// Where a process on the server's own machine reaches it: its `listen:` address when
    /// it has one (the unspecified address as loopback), else its host. The supervisor
    /// probes its nodes there, so a host that only works from outside (NAT) does not matter.
    pub fn local_endpoint(&self, server: &ServerConfig) -> Endpoint {
        match server.listen {
            Some(IpAddr::V4(ip)) if ip.is_unspecified() => {
                Endpoint::new(Host::Ip(IpAddr::from([127, 0, 0, 1])), server.port)
            }
            Some(IpAddr::V6(ip)) if ip.is_unspecified() => {
                Endpoint::new(Host::Ip(std::net::Ipv6Addr::LOCALHOST.into()), server.port)
            }
            Some(ip) => Endpoint::new(Host::Ip(ip), server.port),
            None => self.endpoint(server),
        }
    }

    /// Where a process on the server's own machine reaches its admin endpoint (see
    /// [`HerdConfig::local_endpoint`]).
    pub fn local_admin_endpoint(&self, server: &ServerConfig) -> Endpoint {
        let client = self.local_endpoint(server);
        Endpoint::new(client.host, server.admin_port)
    }

    /// Where anyone reaches `server`'s admin endpoint: its host and admin port.
    pub fn admin_endpoint(&self, server: &ServerConfig) -> Endpoint {
        Endpoint::new(server.host.clone(), server.admin_port)
    }

    /// The address `server` binds: its `listen:` address, else its host, a name being
    /// resolved now to the address it has on this machine.
    pub fn listen_address(&self, server: &ServerConfig) -> Result<SocketAddr> {
        if let Some(ip) = server.listen {
            return Ok(SocketAddr::new(ip, server.port));
        }
        let found = self.endpoint(server).resolve_blocking()?;
        let machine = Machine::this()?;
        found
            .iter()
            .find(|a| machine.owns(a.ip()))
            .copied()
            .ok_or_else(|| {
                anyhow!(
                    "{} cannot listen on its host {}: it resolves to {}, not an address of this \
                     machine ({}); run it on its host, or give it listen: (e.g. 0.0.0.0) in {}",
                    server.name,
                    server.host,
                    found
                        .iter()
                        .map(|a| a.ip().to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                    machine.describe(),
                    self.path.display()
                )
            })
    }

    /// Whether `server` lives on `machine`: its host is, or resolves to, one of its addresses.
    pub fn is_local(&self, server: &ServerConfig, machine: &Machine) -> bool {
        machine.hosts(&server.host)
    }

    /// The servers that live on `machine`, by name.
    pub fn local_servers(&self, machine: &Machine) -> Vec<String> {
        self.servers
            .values()
            .filter(|s| self.is_local(s, machine))
            .map(|s| s.name.clone())
            .collect()
    }
}

/// Where the herd secret comes from: `HERD_SECRET` > `secret:` > `secret_file:` >
/// `herd.secret` beside the herd file; `insecure_open_links: true` is the only way to none.
fn secret_source(
    inline: Option<Spanned<String>>,
    file: Option<Spanned<PathBuf>>,
    open: Option<Spanned<bool>>,
    folder: &Path,
    shown: &str,
) -> Result<SecretSource> {
    let open_line = open
        .as_ref()
        .filter(|o| o.value)
        .map(|o| o.referenced.line());
    if let (Some(line), true) = (open_line, inline.is_some() || file.is_some()) {
        bail!(
            "{shown} line {line}: insecure_open_links: true and a secret exclude each other; \
             remove one of them"
        );
    }
    if let (Some(s), Some(f)) = (&inline, &file) {
        bail!(
            "{shown} line {}: both secret: (line {}) and secret_file: are set; keep one",
            f.referenced.line(),
            s.referenced.line()
        );
    }
    if let Ok(from_env) = std::env::var(SECRET_ENV) {
        if !from_env.is_empty() {
            return HerdSecret::checked(&from_env, SECRET_ENV).map(SecretSource::Env);
        }
    }
    if let Some(s) = inline {
        let from = format!("{shown} line {}", s.referenced.line());
        return HerdSecret::checked(&s.value, &from).map(SecretSource::Inline);
    }
    if let Some(f) = file {
        return Ok(SecretSource::File(f.value));
    }
    if open_line.is_some() {
        return Ok(SecretSource::Open);
    }
    Ok(SecretSource::Default(folder.join(SECRET_FILE_NAME)))
}

/// A warning when the herd file, which holds the secret, can be read by other users.
fn readable_by_others_warning(path: &Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode();
    (mode & 0o044 != 0).then(|| {
        format!(
            "{} holds the herd secret and other users can read it (mode {:o}); make it private \
             with: chmod 600 {}, or move the secret to secret_file:",
            path.display(),
            mode & 0o777,
            path.display()
        )
    })
}

/// A server's `admin_port:`, or its default (`port` + [`ADMIN_PORT_OFFSET`]).
fn admin_port_value(
    name: &str,
    port: u16,
    given: Option<&Spanned<u32>>,
    shown: &str,
) -> Result<u16> {
    match given {
        Some(p) => u16::try_from(p.value)
            .ok()
            .filter(|a| *a != 0 && *a != port)
            .ok_or_else(|| {
                anyhow!(
                    "{shown} line {}: server {name} has admin_port {}; use 1-65535, not its \
                     client port",
                    p.referenced.line(),
                    p.value
                )
            }),
        None => port.checked_add(ADMIN_PORT_OFFSET).ok_or_else(|| {
            anyhow!(
                "{shown}: server {name} has port {port}, so its default admin port (port + \
                 {ADMIN_PORT_OFFSET}) does not exist; give it admin_port: (1-65535)"
            )
        }),
    }
}

/// A `host:` value: an IP address or a DNS name.
fn host_value(h: &Spanned<String>, what: &str, shown: &str) -> Result<Host> {
    Host::parse(&h.value).ok_or_else(|| {
        anyhow!(
            "{shown} line {}: {what} {:?}, which is neither an IP address nor a DNS name; use \
             e.g. 10.0.0.5 or herd1.example.com",
            h.referenced.line(),
            h.value
        )
    })
}

/// A `listen:` value: an IP address of this machine, or 0.0.0.0 / :: for all of them.
fn listen_value(l: &Spanned<String>, what: &str, shown: &str) -> Result<IpAddr> {
    l.value.parse().map_err(|_| {
        anyhow!(
            "{shown} line {}: {what} {:?}, which is not an IP address; listen: is the address \
             to bind, e.g. 0.0.0.0 (every address of the machine)",
            l.referenced.line(),
            l.value
        )
    })
}

/// The `reconnect:` section, checked.
fn reconnect_config(raw: &RawReconnect, shown: &str) -> Result<ReconnectSettings> {
    let initial = raw.initial_ms.unwrap_or(100);
    let max = raw.max_ms.unwrap_or(2000);
    ordered_pair(shown, "reconnect", ("initial_ms", initial), ("max_ms", max))?;
    let sync_interval = nonzero(
        shown,
        "reconnect.sync_interval_s",
        raw.sync_interval_s,
        DEFAULT_SYNC_INTERVAL_S,
        &format!("use e.g. {DEFAULT_SYNC_INTERVAL_S} (anti-entropy cannot run continuously)"),
    )?;
    Ok(ReconnectSettings {
        initial: Duration::from_millis(initial),
        max: Duration::from_millis(max),
        sync_interval: Duration::from_secs(sync_interval),
    })
}

/// The `supervisor:` section, checked.
fn supervisor_config(raw: &RawSupervisor, shown: &str) -> Result<SupervisorSettings> {
    let backoff_initial = raw.backoff_initial_ms.unwrap_or(500);
    let backoff_max = raw.backoff_max_ms.unwrap_or(30_000);
    ordered_pair(
        shown,
        "supervisor",
        ("backoff_initial_ms", backoff_initial),
        ("backoff_max_ms", backoff_max),
    )?;
    Ok(SupervisorSettings {
        stop_timeout: Duration::from_millis(raw.stop_timeout_ms.unwrap_or(5000)),
        backoff_initial: Duration::from_millis(backoff_initial),
        backoff_max: Duration::from_millis(backoff_max),
        stable_after: Duration::from_secs(raw.stable_after_s.unwrap_or(10)),
        max_quick_crashes: raw.max_quick_crashes.unwrap_or(5),
        start_timeout: Duration::from_millis(at_least(
            shown,
            "supervisor.start_timeout_ms",
            raw.start_timeout_ms.unwrap_or(DEFAULT_START_TIMEOUT_MS),
            MIN_START_TIMEOUT_MS,
            &format!(
                "a node loading its store needs time to answer; default \
                 {DEFAULT_START_TIMEOUT_MS}"
            ),
        )?),
        health_interval: Duration::from_millis(at_least(
            shown,
            "supervisor.health_interval_ms",
            raw.health_interval_ms.unwrap_or(DEFAULT_HEALTH_INTERVAL_MS),
            MIN_HEALTH_INTERVAL_MS,
            &format!(
                "a probe must be answered within it, even by a busy node; default \
                 {DEFAULT_HEALTH_INTERVAL_MS}"
            ),
        )?),
        health_failures: nonzero(
            shown,
            "supervisor.health_failures",
            raw.health_failures,
            DEFAULT_HEALTH_FAILURES,
            &format!(
                "use e.g. {DEFAULT_HEALTH_FAILURES} (probes failed in a row before a restart)"
            ),
        )?,
    })
}

/// The `places:` section, checked: settings of one provider under another are errors, so a
/// user never believes a setting is in effect when it is not.
fn places_config(
    raw: RawPlaces,
    shown: &str,
    resolve: impl Fn(PathBuf) -> PathBuf,
) -> Result<PlacesConfig> {
    let provider = raw.provider.unwrap_or(ProviderKind::Offline);
    // Each key and the providers that take it.
    use ProviderKind::{Google, Offline, X};
    let keys: [(&str, bool, &[ProviderKind]); 9] = [
        ("file", raw.file.is_some(), &[Offline]),
        ("api", raw.api.is_some(), &[Google]),
        ("endpoint", raw.endpoint.is_some(), &[Google, X]),
        ("timeout_ms", raw.timeout_ms.is_some(), &[Google, X]),
        ("cache_ttl_s", raw.cache_ttl_s.is_some(), &[Google, X]),
        ("cache_entries", raw.cache_entries.is_some(), &[Google, X]),
        (
            "max_requests_per_s",
            raw.max_requests_per_s.is_some(),
            &[Google, X],
        ),
        ("max_in_flight", raw.max_in_flight.is_some(), &[Google, X]),
        ("allow_http", raw.allow_http.is_some(), &[Google, X]),
    ];
    for (key, set, takers) in keys {
        if set && !takers.contains(&provider) {
            let names: Vec<&str> = takers.iter().map(|p| p.name()).collect();
            let uses: Vec<String> = names.iter().map(|n| format!("`provider: {n}`")).collect();
            bail!(
                "{shown}: places.{key} is a setting of the {} provider{}, not of {}; use {} \
                 under places: or remove {key}",
                names.join(" and "),
                if names.len() > 1 { "s" } else { "" },
                provider.name(),
                uses.join(" or "),
            );
        }
    }
    let api = raw.api.unwrap_or_default();
    let default_endpoint = match provider {
        X => X_DEFAULT_ENDPOINT,
        _ => api.default_endpoint(),
    };
    let default_ttl = match provider {
        X => DEFAULT_X_CACHE_TTL_S,
        _ => DEFAULT_GOOGLE_CACHE_TTL_S,
    };
    let upstream = |endpoint: Option<Spanned<String>>| -> Result<UpstreamSettings> {
        let endpoint = match endpoint {
            None => reqwest::Url::parse(default_endpoint).expect("the services' URLs parse"),
            Some(e) => {
                let line = e.referenced.line();
                let url = match reqwest::Url::parse(&e.value) {
                    Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => url,
                    _ => bail!(
                        "{shown} line {line}: places.endpoint {:?} is not an http:// or https:// \
                         URL; leave it out to use {default_endpoint}",
                        e.value,
                    ),
                };
                if url.scheme() == "http" && raw.allow_http != Some(true) {
                    bail!(
                        "{shown} line {line}: places.endpoint {:?} is plain http, which would \
                         send your key and every query in the clear; use an https:// URL (or, \
                         for a local test server, add allow_http: true under places:)",
                        e.value,
                    );
                }
                if provider == X && (url.query().is_some() || url.fragment().is_some()) {
                    bail!(
                        "{shown} line {line}: places.endpoint {:?} has a query or fragment; for \
                         provider x it is the API's base URL (like {X_DEFAULT_ENDPOINT}), to \
                         which /2/tweets/search/recent is added",
                        e.value,
                    );
                }
                url
            }
        };
        let timeout_ms = nonzero(
            shown,
            "places.timeout_ms",
            raw.timeout_ms,
            DEFAULT_UPSTREAM_TIMEOUT_MS,
            &format!("use e.g. {DEFAULT_UPSTREAM_TIMEOUT_MS}"),
        )?;
        let cache_entries = nonzero(
            shown,
            "places.cache_entries",
            raw.cache_entries,
            DEFAULT_UPSTREAM_CACHE_ENTRIES,
            "keep at least 1 (to turn caching off, set cache_ttl_s: 0)",
        )?;
        let max_requests_per_s = nonzero(
            shown,
            "places.max_requests_per_s",
            raw.max_requests_per_s,
            DEFAULT_UPSTREAM_MAX_REQUESTS_PER_S,
            &format!(
                "use e.g. {DEFAULT_UPSTREAM_MAX_REQUESTS_PER_S} (requests a second this server \
                 may send to the service)"
            ),
        )?;
        let max_in_flight = nonzero(
            shown,
            "places.max_in_flight",
            raw.max_in_flight,
            DEFAULT_UPSTREAM_MAX_IN_FLIGHT,
            &format!(
                "use e.g. {DEFAULT_UPSTREAM_MAX_IN_FLIGHT} (requests waiting for an answer at \
                 once)"
            ),
        )?;
        Ok(UpstreamSettings {
            endpoint,
            timeout: Duration::from_millis(timeout_ms),
            cache_ttl: Duration::from_secs(raw.cache_ttl_s.unwrap_or(default_ttl)),
            cache_entries,
            max_requests_per_s,
            max_in_flight,
            allow_http: raw.allow_http.unwrap_or(false),
        })
    };
    Ok(match provider {
        Offline => PlacesConfig::Offline {
            file: raw.file.map(resolve),
        },
        Google => PlacesConfig::Google(GoogleSettings {
            api,
            upstream: upstream(raw.endpoint)?,
        }),
        X => PlacesConfig::X(upstream(raw.endpoint)?),
    })
}

fn absolute(path: &Path) -> Result<PathBuf> {
    std::path::absolute(path).with_context(|| format!("cannot resolve {}", path.display()))
}

/// The first 64 bits of the text's SHA-256, in hex: enough to tell herd files apart.
pub fn text_digest(text: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(text.as_bytes())[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The YAML parser's message alone: its own rendering repeats the line and column, which
/// our error already names.
fn yaml_message(error: &serde_saphyr::Error) -> String {
    use serde_saphyr::MessageFormatter;
    let message = serde_saphyr::DefaultMessageFormatter.format_message(error.without_snippet());
    message.lines().next().unwrap_or_default().to_owned()
}

/// A setting that must not be zero: its value (or `default` when absent), else an error
/// naming the key and `fix`.
fn nonzero<T: Copy + PartialEq + Default>(
    shown: &str,
    key: &str,
    value: Option<T>,
    default: T,
    fix: &str,
) -> Result<T> {
    let value = value.unwrap_or(default);
    if value == T::default() {
        bail!("{shown}: {key} is 0; {fix}");
    }
    Ok(value)
}

/// A setting with a smallest workable value: `value`, else an error naming the key, the
/// minimum and `why`.
fn at_least<T: Copy + PartialOrd + std::fmt::Display>(
    shown: &str,
    key: &str,
    value: T,
    min: T,
    why: &str,
) -> Result<T> {
    if value < min {
        bail!("{shown}: {key} is {value}; use at least {min} ({why})");
    }
    Ok(value)
}

/// A pair of settings that must satisfy `0 < low <= high` (a backoff's first and largest
/// delay).
fn ordered_pair(shown: &str, section: &str, low: (&str, u64), high: (&str, u64)) -> Result<()> {
    if low.1 == 0 || high.1 < low.1 {
        bail!(
            "{shown}: {section} needs 0 < {} <= {} (got {} and {})",
            low.0,
            high.0,
            low.1,
            high.1
        );
    }
    Ok(())
}

/// Floods only reach servers connected to the origin: warn when the link graph is split.
fn disconnected_warning(servers: &BTreeMap<String, ServerConfig>) -> Option<String> {
    let first = servers.keys().next()?;
    let mut seen = BTreeSet::from([first.as_str()]);
    let mut stack = vec![first.as_str()];
    while let Some(name) = stack.pop() {
        for n in &servers[name].neighbours {
            if seen.insert(n) {
                stack.push(n);
            }
        }
    }
    let unreached: Vec<&str> = servers
        .keys()
        .map(String::as_str)
        .filter(|n| !seen.contains(n))
        .collect();
    (!unreached.is_empty()).then(|| {
        format!(
            "the herd is not connected: {} cannot reach {}; updates will not flood between them",
            first,
            unreached.join(", ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLASSIC: &str = "\
servers:
  Alford:   { port: 12000, peers: [Hamilton, Welsh] }
  Ball:     { port: 12001, peers: [Holiday, Welsh] }
  Hamilton: { port: 12002, peers: [Holiday] }
  Holiday:  { port: 12003 }
  Welsh:    { port: 12004 }
";

    fn parse(text: &str) -> Result<HerdConfig> {
        HerdConfig::parse(text, Path::new("/etc/herd/herd.yaml"))
    }

    fn error(text: &str) -> String {
        format!("{:#}", parse(text).expect_err("should be rejected"))
    }

    #[test]
    fn classic_herd_links_are_bidirectional() {
        let c = parse(CLASSIC).unwrap();
        let n = |s: &str| c.servers[s].neighbours.iter().cloned().collect::<Vec<_>>();
        assert_eq!(n("Alford"), ["Hamilton", "Welsh"]);
        assert_eq!(n("Ball"), ["Holiday", "Welsh"]);
        assert_eq!(n("Hamilton"), ["Alford", "Holiday"]);
        assert_eq!(n("Holiday"), ["Ball", "Hamilton"]);
        assert_eq!(n("Welsh"), ["Alford", "Ball"]);
        assert!(c.warnings.is_empty());
        assert!(c
            .servers
            .values()
            .all(|s| s.host.to_string() == "127.0.0.1" && s.listen.is_none()));
        assert_eq!(c.logs.dir, Path::new("/etc/herd/logs"));
        assert_eq!(c.data_dir, Path::new("/etc/herd/data"));
        assert_eq!(c.places, PlacesConfig::Offline { file: None });
        assert_eq!(c.durability, Durability::Relaxed, "the default");
    }

    #[test]
    fn durability_is_relaxed_or_strict() {
        let c = parse(&format!("{CLASSIC}durability: strict\n")).unwrap();
        assert_eq!(c.durability, Durability::Strict);
        let c = parse(&format!("{CLASSIC}durability: relaxed\n")).unwrap();
        assert_eq!(c.durability, Durability::Relaxed);
        let e = error(&format!("{CLASSIC}durability: always\n"));
        assert!(e.contains("line 7") && e.contains("relaxed, strict"), "{e}");
    }

    #[test]
    fn relative_and_absolute_paths() {
        let c = parse(&format!(
            "{CLASSIC}log_dir: /var/log/herd\ndata_dir: state/db\n"
        ))
        .unwrap();
        assert_eq!(c.logs.dir, Path::new("/var/log/herd"));
        assert_eq!(c.data_dir, Path::new("/etc/herd/state/db"));
    }

    #[test]
    fn errors_name_the_line_and_the_fix() {
        let e = error("servers:\n  A: { port: 1, peers: [B] }\n  C: { port: 2 }\n");
        assert!(
            e.contains("line 2") && e.contains("unknown peer \"B\""),
            "{e}"
        );
        let e = error("servers:\n  A: { port: 1 }\n  B: { port: 1 }\n");
        assert!(e.contains("line 3") && e.contains("both use port 1"), "{e}");
        let e = error("servers:\n  A: { port: 1, peers: [A] }\n");
        assert!(e.contains("line 2") && e.contains("itself"), "{e}");
        let e = error("servers:\n  'bad name': { port: 1 }\n");
        assert!(e.contains("line 2") && e.contains("not valid"), "{e}");
        let e = error("servers:\n  A: { port: 70000 }\n");
        assert!(e.contains("line 2") && e.contains("1-65535"), "{e}");
        let e = error("servers:\n  A: { port: 1, peer: [B] }\n");
        assert!(e.contains("line 2") && e.contains("peer"), "{e}");
        let e = error("servers:\n  A: { port: 1 }\nhost: 'local host'\n");
        assert!(
            e.contains("line 3") && e.contains("neither an IP address nor a DNS name"),
            "{e}"
        );
        let e = error("servers:\n  all: { port: 1 }\n");
        assert!(e.contains("line 2") && e.contains("reserved"), "{e}");
        let e = error("servers: {}\n");
        assert!(e.contains("empty"), "{e}");
        let e = error("servers:\n  A: { port: 1 }\nplaces: { provider: bing }\n");
        assert!(e.contains("line 3"), "{e}");
    }

    fn google(c: &HerdConfig) -> &GoogleSettings {
        match &c.places {
            PlacesConfig::Google(g) => g,
            other => panic!("not google: {other:?}"),
        }
    }

    fn x(c: &HerdConfig) -> &UpstreamSettings {
        match &c.places {
            PlacesConfig::X(x) => x,
            other => panic!("not x: {other:?}"),
        }
    }

    #[test]
    fn google_places_settings_and_defaults() {
        let c = parse(&format!("{CLASSIC}places: {{ provider: google }}\n")).unwrap();
        assert_eq!(c.places.provider(), ProviderKind::Google);
        let g = google(&c);
        assert_eq!(g.api, GoogleApi::Legacy);
        let u = &g.upstream;
        assert_eq!(u.endpoint.as_str(), GoogleApi::Legacy.default_endpoint());
        assert_eq!(
            u.timeout,
            Duration::from_millis(DEFAULT_UPSTREAM_TIMEOUT_MS)
        );
        assert_eq!(u.cache_ttl, Duration::from_secs(DEFAULT_GOOGLE_CACHE_TTL_S));
        assert_eq!(u.cache_entries, DEFAULT_UPSTREAM_CACHE_ENTRIES);

        let c = parse(&format!(
            "{CLASSIC}places:\n  provider: google\n  api: new\n  timeout_ms: 250\n  \
             cache_ttl_s: 0\n  cache_entries: 5\n"
        ))
        .unwrap();
        let g = google(&c);
        assert_eq!(g.api, GoogleApi::New);
        assert_eq!(
            g.upstream.endpoint.as_str(),
            "https://places.googleapis.com/v1/places:searchNearby"
        );
        assert_eq!(g.upstream.timeout, Duration::from_millis(250));
        assert_eq!(g.upstream.cache_ttl, Duration::ZERO);
        assert_eq!(g.upstream.cache_entries, 5);

        let c = parse(&format!(
            "{CLASSIC}places: {{ provider: google, endpoint: 'http://127.0.0.1:9/x', allow_http: true }}\n"
        ))
        .unwrap();
        assert_eq!(
            google(&c).upstream.endpoint.as_str(),
            "http://127.0.0.1:9/x"
        );
    }

    #[test]
    fn google_places_errors_name_the_fix() {
        let e = error(&format!("{CLASSIC}places: {{ api: new }}\n"));
        assert!(
            e.contains("places.api") && e.contains("provider: google"),
            "{e}"
        );
        let e = error(&format!(
            "{CLASSIC}places: {{ provider: google, file: pois.csv }}\n"
        ));
        assert!(
            e.contains("places.file") && e.contains("provider: offline"),
            "{e}"
        );
        let e = error(&format!(
            "{CLASSIC}places: {{ provider: google, endpoint: 'ftp://x' }}\n"
        ));
        assert!(e.contains("line 7") && e.contains("http://"), "{e}");
        let e = error(&format!(
            "{CLASSIC}places: {{ provider: google, timeout_ms: 0 }}\n"
        ));
        assert!(e.contains("timeout_ms"), "{e}");
        let e = error(&format!(
            "{CLASSIC}places: {{ provider: google, cache_entries: 0 }}\n"
        ));
        assert!(e.contains("cache_ttl_s: 0"), "{e}");
        let e = error(&format!(
            "{CLASSIC}places: {{ provider: google, api: v2 }}\n"
        ));
        assert!(e.contains("line 7") && e.contains("legacy"), "{e}");
    }

    #[test]
    fn x_places_settings_and_defaults() {
        let c = parse(&format!("{CLASSIC}places: {{ provider: x }}\n")).unwrap();
        assert_eq!(c.places.provider(), ProviderKind::X);
        assert_eq!(
            x(&c),
            &UpstreamSettings {
                endpoint: reqwest::Url::parse("https://api.x.com").unwrap(),
                timeout: Duration::from_millis(DEFAULT_UPSTREAM_TIMEOUT_MS),
                cache_ttl: Duration::from_secs(DEFAULT_X_CACHE_TTL_S),
                cache_entries: DEFAULT_UPSTREAM_CACHE_ENTRIES,
                max_requests_per_s: DEFAULT_UPSTREAM_MAX_REQUESTS_PER_S,
                max_in_flight: DEFAULT_UPSTREAM_MAX_IN_FLIGHT,
                allow_http: false,
            }
        );
        let c = parse(&format!(
            "{CLASSIC}places:\n  provider: x\n  endpoint: http://127.0.0.1:9/proxy/\n  \
             timeout_ms: 800\n  cache_ttl_s: 5\n  cache_entries: 7\n  allow_http: true\n  \
             max_requests_per_s: 2\n  max_in_flight: 3\n"
        ))
        .unwrap();
        let u = x(&c);
        assert_eq!(u.endpoint.as_str(), "http://127.0.0.1:9/proxy/");
        assert_eq!(u.timeout, Duration::from_millis(800));
        assert_eq!(u.cache_ttl, Duration::from_secs(5));
        assert_eq!(u.cache_entries, 7);
        assert_eq!((u.max_requests_per_s, u.max_in_flight), (2, 3));
        assert!(u.allow_http);
    }

    #[test]
    fn upstream_spend_and_plain_http_errors_name_the_fix() {
        let e = error(&format!(
            "{CLASSIC}places: {{ provider: google, endpoint: 'http://127.0.0.1:9/x' }}\n"
        ));
        assert!(
            e.contains("plain http") && e.contains("allow_http: true") && e.contains("https://"),
            "{e}"
        );
        let e = error(&format!(
            "{CLASSIC}places: {{ provider: x, max_requests_per_s: 0 }}\n"
        ));
        assert!(e.contains("places.max_requests_per_s is 0"), "{e}");
        let e = error(&format!(
            "{CLASSIC}places: {{ provider: google, max_in_flight: 0 }}\n"
        ));
        assert!(e.contains("places.max_in_flight is 0"), "{e}");
        let e = error(&format!("{CLASSIC}places: {{ allow_http: true }}\n"));
        assert!(e.contains("places.allow_http"), "{e}");
    }

    #[test]
    fn x_places_errors_name_the_fix() {
        let e = error(&format!("{CLASSIC}places: {{ provider: x, api: new }}\n"));
        assert!(
            e.contains("places.api") && e.contains("not of x") && e.contains("provider: google"),
            "{e}"
        );
        let e = error(&format!(
            "{CLASSIC}places: {{ provider: x, file: a.csv }}\n"
        ));
        assert!(e.contains("places.file"), "{e}");
        let e = error(&format!("{CLASSIC}places: {{ endpoint: 'http://h' }}\n"));
        assert!(
            e.contains("google and x providers")
                && e.contains("`provider: google` or `provider: x`"),
            "{e}"
        );
        let e = error(&format!(
            "{CLASSIC}places: {{ provider: x, endpoint: 'https://h/2/tweets/search/recent?q=1' }}\n"
        ));
        assert!(e.contains("line 7") && e.contains("base URL"), "{e}");
        let e = error(&format!(
            "{CLASSIC}places: {{ provider: x, timeout_ms: 0 }}\n"
        ));
        assert!(e.contains("timeout_ms"), "{e}");
        let e = error(&format!("{CLASSIC}places: {{ provider: X }}\n"));
        assert!(e.contains("line 7"), "{e}");
    }

    #[test]
    fn the_log_order_window_has_a_default_and_a_ceiling() {
        let c = parse(CLASSIC).unwrap();
        assert_eq!(c.logs.order_window, Duration::from_millis(200));
        let c = parse(&format!("{CLASSIC}logs: {{ order_window_ms: 0 }}\n")).unwrap();
        assert_eq!(c.logs.order_window, Duration::ZERO);
        let e = error(&format!("{CLASSIC}logs: {{ order_window_ms: 20000 }}\n"));
        assert!(
            e.contains("logs.order_window_ms is 20000; use at most 10000"),
            "{e}"
        );
    }

    #[test]
    fn limits_have_safe_defaults_and_reject_zero() {
        let c = parse(CLASSIC).unwrap();
        assert_eq!(c.limits, Limits::default());
        assert_eq!(c.limits.max_line_bytes, 1 << 20);
        assert_eq!(c.limits.max_connections, 1024);
        assert_eq!(c.limits.idle_timeout, Duration::from_secs(300));
        assert_eq!(c.limits.max_client_id_bytes, 256);

        let c = parse(&format!(
            "{CLASSIC}limits:\n  max_line_bytes: 4096\n  max_connections: 10\n  \
             idle_timeout_s: 1\n  max_client_id_bytes: 64\n"
        ))
        .unwrap();
        assert_eq!(
            c.limits,
            Limits {
                max_line_bytes: 4096,
                max_connections: 10,
                idle_timeout: Duration::from_secs(1),
                max_client_id_bytes: 64,
                ..Limits::default()
            }
        );

        for (key, fix) in [
            ("max_line_bytes", "at least 128"),
            ("max_connections", "at least 4"),
            ("idle_timeout_s", "e.g. 300"),
            ("max_client_id_bytes", "e.g. 256"),
            ("max_future_s", "e.g. 86400"),
            ("max_connections_per_ip", "e.g. 512"),
            ("first_line_timeout_s", "e.g. 10"),
            ("write_timeout_s", "e.g. 10"),
        ] {
            let e = error(&format!("{CLASSIC}limits: {{ {key}: 0 }}\n"));
            assert!(
                e.contains(&format!("limits.{key}")) && e.contains(fix),
                "{e}"
            );
        }
        // Values that cannot work are refused, naming the minimum (issue 21: a herd with
        // max_connections: 2 restarted itself in a loop).
        for (yaml, wanted) in [
            (
                "limits: { max_connections: 2 }",
                "limits.max_connections is 2; use at least 4",
            ),
            (
                "supervisor: { health_interval_ms: 50 }",
                "supervisor.health_interval_ms is 50; use at least 100",
            ),
            (
                "supervisor: { start_timeout_ms: 999 }",
                "supervisor.start_timeout_ms is 999; use at least 1000",
            ),
        ] {
            let e = error(&format!("{CLASSIC}{yaml}\n"));
            assert!(e.contains(wanted), "{e}");
        }
        let e = error(&format!("{CLASSIC}limits: {{ max_line_bytes: 100 }}\n"));
        assert!(e.contains("at least 128"), "{e}");
        let e = error(&format!("{CLASSIC}limits: {{ max_lines: 5 }}\n"));
        assert!(e.contains("line 7"), "{e}");
        let e = error(&format!("{CLASSIC}limits: {{ max_connections: -1 }}\n"));
        assert!(e.contains("line 7"), "{e}");
    }

    #[test]
    fn links_have_bounded_defaults_and_reject_zero() {
        assert_eq!(parse(CLASSIC).unwrap().links, LinkSettings::default());
        let c = parse(&format!(
            "{CLASSIC}links: {{ queue: 10, write_timeout_ms: 250, answer_timeout_ms: 750, \
             forwarding: tree }}\n"
        ))
        .unwrap();
        assert_eq!(
            c.links,
            LinkSettings {
                queue: 10,
                write_timeout: Duration::from_millis(250),
                answer_timeout: Duration::from_millis(750),
                forwarding: Forwarding::Tree,
            }
        );
        let e = error(&format!("{CLASSIC}links: {{ forwarding: gossip }}\n"));
        assert!(
            e.contains("links.forwarding is \"gossip\"; use flood"),
            "{e}"
        );
        for key in ["queue", "write_timeout_ms", "answer_timeout_ms"] {
            let e = error(&format!("{CLASSIC}links: {{ {key}: 0 }}\n"));
            assert!(e.contains(&format!("links.{key} is 0")), "{e}");
        }
    }

    #[test]
    fn each_server_may_have_its_own_host_and_listen_address() {
        let c = parse(
            "host: herd.example.com\nlisten: 0.0.0.0\nservers:\n  \
             A: { port: 12000 }\n  \
             B: { port: 12000, host: 10.0.0.2 }\n  \
             C: { port: 12000, host: C.Example.com, listen: '::' }\n  \
             D: { port: 12001, host: 10.0.0.2, listen: 10.0.0.2 }\n",
        )
        .unwrap();
        let s = |n: &str| &c.servers[n];
        assert_eq!(s("A").host, Host::Name("herd.example.com".into()));
        assert_eq!(s("B").host, Host::Ip("10.0.0.2".parse().unwrap()));
        assert_eq!(s("C").host, Host::Name("c.example.com".into()));
        assert_eq!(
            s("A").listen,
            Some("0.0.0.0".parse().unwrap()),
            "global listen"
        );
        assert_eq!(s("C").listen, Some("::".parse().unwrap()), "per server");
        assert_eq!(c.endpoint(s("C")).to_string(), "c.example.com:12000");
        assert_eq!(c.local_endpoint(s("A")).to_string(), "127.0.0.1:12000");
        assert_eq!(c.local_endpoint(s("C")).to_string(), "[::1]:12000");
        assert_eq!(c.local_endpoint(s("D")).to_string(), "10.0.0.2:12001");
        assert_eq!(
            c.listen_address(s("D")).unwrap(),
            "10.0.0.2:12001".parse().unwrap()
        );

        let here = Machine::with_addresses(["10.0.0.2".parse().unwrap()]);
        assert_eq!(c.local_servers(&here), ["B", "D"]);
    }

    #[test]
    fn ports_are_unique_per_host_and_hosts_are_checked() {
        let e = error(
            "servers:\n  A: { port: 1, host: h.example }\n  B: { port: 1, host: H.example }\n",
        );
        assert!(
            e.contains("line 3") && e.contains("both use port 1 on host h.example"),
            "{e}"
        );
        let e = error("servers:\n  A: { port: 1, host: 'a b' }\n");
        assert!(
            e.contains("line 2") && e.contains("server A has host \"a b\""),
            "{e}"
        );
        let e = error("servers:\n  A: { port: 1, listen: any }\n");
        assert!(
            e.contains("line 2") && e.contains("not an IP address") && e.contains("0.0.0.0"),
            "{e}"
        );
        let e = error("servers:\n  A: { port: 1 }\nlisten: localhost\n");
        assert!(e.contains("line 3") && e.contains("listen"), "{e}");
    }

    #[test]
    fn a_server_whose_host_is_elsewhere_cannot_listen_here_without_listen() {
        let c = parse("servers:\n  A: { port: 1, host: 192.0.2.1 }\n").unwrap();
        let e = format!("{:#}", c.listen_address(&c.servers["A"]).unwrap_err());
        assert!(
            e.contains("A cannot listen on its host 192.0.2.1")
                && e.contains("not an address of this machine")
                && e.contains("listen:"),
            "{e}"
        );
        let c = parse("servers:\n  A: { port: 1, host: 192.0.2.1, listen: 0.0.0.0 }\n").unwrap();
        assert_eq!(
            c.listen_address(&c.servers["A"]).unwrap(),
            "0.0.0.0:1".parse().unwrap()
        );
        let c = parse("servers:\n  A: { port: 1, host: localhost }\n").unwrap();
        assert!(c
            .listen_address(&c.servers["A"])
            .unwrap()
            .ip()
            .is_loopback());
    }

    #[test]
    fn a_yaml_error_names_its_line_once() {
        let e = error("servers:\n  A: { port: x }\n");
        assert!(e.starts_with("/etc/herd/herd.yaml line 2: "), "{e}");
        assert_eq!(e.matches("line").count(), 1, "{e}");
        assert!(!e.contains("error:") && !e.contains("column"), "{e}");
        let e = error("servers:\n  A: { port: 1, peers: [B] foo }\n");
        assert_eq!(e.matches("line 2").count(), 1, "{e}");
    }

    #[test]
    fn every_zero_is_an_error_naming_the_key() {
        for (yaml, key) in [
            (
                "reconnect: { sync_interval_s: 0 }",
                "reconnect.sync_interval_s",
            ),
            ("logs: { keep: 0 }", "logs.keep"),
            (
                "supervisor: { start_timeout_ms: 0 }",
                "supervisor.start_timeout_ms",
            ),
            (
                "supervisor: { health_interval_ms: 0 }",
                "supervisor.health_interval_ms",
            ),
            (
                "supervisor: { health_failures: 0 }",
                "supervisor.health_failures",
            ),
        ] {
            let e = error(&format!("{CLASSIC}{yaml}\n"));
            assert!(
                e.contains(&format!("{key} is 0; use")) || e.contains(&format!("{key} is 0; keep")),
                "{e}"
            );
        }
        for (yaml, wanted) in [
            (
                "reconnect: { initial_ms: 0 }",
                "0 < initial_ms <= max_ms (got 0 and 2000)",
            ),
            (
                "reconnect: { initial_ms: 300, max_ms: 200 }",
                "(got 300 and 200)",
            ),
            (
                "supervisor: { backoff_initial_ms: 0 }",
                "supervisor needs 0 < backoff_initial_ms <= backoff_max_ms",
            ),
        ] {
            let e = error(&format!("{CLASSIC}{yaml}\n"));
            assert!(e.contains(wanted), "{e}");
        }
    }

    #[test]
    fn supervisor_health_settings_and_defaults() {
        let c = parse(CLASSIC).unwrap();
        assert_eq!(c.supervisor.start_timeout, Duration::from_secs(30));
        assert_eq!(c.supervisor.health_interval, Duration::from_secs(5));
        assert_eq!(c.supervisor.health_failures, 3);
        assert_eq!(c.reconnect.sync_interval, Duration::from_secs(30));
        let c = parse(&format!(
            "{CLASSIC}supervisor: {{ start_timeout_ms: 1000, health_interval_ms: 250, \
             health_failures: 2 }}\n"
        ))
        .unwrap();
        assert_eq!(c.supervisor.start_timeout, Duration::from_millis(1000));
        assert_eq!(c.supervisor.health_interval, Duration::from_millis(250));
        assert_eq!(c.supervisor.health_failures, 2);
    }

    #[test]
    fn the_digest_tells_texts_apart() {
        let a = parse(CLASSIC).unwrap().digest;
        assert_eq!(a.len(), 16);
        assert_eq!(a, parse(CLASSIC).unwrap().digest);
        assert_ne!(a, parse(&format!("{CLASSIC}# a comment\n")).unwrap().digest);
    }

    #[test]
    fn the_secret_comes_from_one_place_and_never_reaches_the_digest() {
        let folder = Path::new("/etc/herd");
        assert_eq!(
            parse(CLASSIC).unwrap().secret,
            SecretSource::Default(folder.join("herd.secret"))
        );
        let long = "k".repeat(40);
        let c = parse(&format!("{CLASSIC}secret: {long}\n")).unwrap();
        assert_eq!(
            c.secret,
            SecretSource::Inline(HerdSecret::new(long.clone()))
        );
        let other = parse(&format!("{CLASSIC}secret: {}\n", "j".repeat(40))).unwrap();
        assert_eq!(
            c.digest, other.digest,
            "the digest must not depend on the secret"
        );
        let c = parse(&format!("{CLASSIC}secret_file: keys/s\n")).unwrap();
        assert_eq!(c.secret, SecretSource::File(folder.join("keys/s")));
        let c = parse(&format!("{CLASSIC}insecure_open_links: true\n")).unwrap();
        assert!(c.secret.is_open());
        let e = error(&format!("{CLASSIC}secret: a\n"));
        assert!(
            e.contains("line 7") && e.contains("openssl rand -hex 32"),
            "{e}"
        );
        let e = error(&format!(
            "{CLASSIC}secret: {long}\ninsecure_open_links: true\n"
        ));
        assert!(e.contains("exclude each other"), "{e}");
        let e = error(&format!("{CLASSIC}secret: {long}\nsecret_file: x\n"));
        assert!(e.contains("keep one"), "{e}");
    }

    #[test]
    fn a_split_herd_is_a_warning_not_an_error() {
        let c =
            parse("servers:\n  A: { port: 1, peers: [B] }\n  B: { port: 2 }\n  C: { port: 3 }\n")
                .unwrap();
        assert_eq!(c.warnings.len(), 1);
        assert!(c.warnings[0].contains("cannot reach C"), "{:?}", c.warnings);
    }

    #[test]
    fn unknown_server_lists_the_known_ones() {
        let c = parse(CLASSIC).unwrap();
        let e = c.server("Bal").unwrap_err().to_string();
        assert!(e.contains("Alford, Ball, Hamilton, Holiday, Welsh"), "{e}");
    }
}

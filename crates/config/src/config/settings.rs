//! The resolved herd's settings, as the rest of the code reads them. Their defaults and
//! bounds are in `defaults.rs`; how the file's sections become these, in `sections.rs`.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::hosts::Host;

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
    pub(super) fn name(self) -> &'static str {
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
    /// `port`; `admin_port:` in the file, else `port` +
    /// [`ADMIN_PORT_OFFSET`](super::ADMIN_PORT_OFFSET).
    pub admin_port: u16,
    /// A second client port (`tls_port:`) that serves the same protocol over TLS with the
    /// server's certificate (needs `links.tls`).
    pub tls_port: Option<u16>,
}

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
    /// arrives within [`CLOSE_AFTER_REPLY_GRACE`](super::CLOSE_AFTER_REPLY_GRACE), for
    /// clients that read until the server closes (`nc` without `-q`) instead of half-closing.
    pub close_after_reply: bool,
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

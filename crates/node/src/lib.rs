//! One herd node: its state, and how it starts and stops.
//!
//! Data flows one way: socket -> protocol::parse_line -> Node::accept (table, which queues
//! the update for the store writer) -> (peers, reply). A reply waits until its update is on
//! every up neighbour's socket (and, under strict durability, on disk).

mod admin;
mod client_index;
mod cmd;
mod dialler;
mod faults;
mod handshake;
mod lines;
mod link_stats;
mod metrics;
mod operator;
mod peer_input;
mod peers;
mod reconfigure;
mod routes;
mod server;
mod session;
mod slots;
pub mod store;
mod sync;
pub mod table;

pub use reconfigure::Reload;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use anyhow::{Context, Result};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use herd_config::auth::HerdSecret;
use herd_config::config::{Durability, HerdConfig, ServerConfig};
use herd_logs::WireLog;
use herd_places::PlacesProvider;
use herd_wire::protocol::{AtFields, Iamat, NodeFigures};
use herd_wire::record::AtRecord;
use peer_input::PeerInput;
use peers::{Handoff, Peers};
use server::ConnectionSlots;
use store::{NotDurable, OpenReport, Seq, Store};
use table::{Offer, Refused, Table};

/// Everything a node's tasks share.
pub struct Node {
    pub(crate) name: String,
    /// The herd file the node runs; a reload swaps it (see `reconfigure.rs`).
    config: RwLock<Arc<HerdConfig>>,
    pub(crate) table: Arc<Table>,
    pub(crate) places: Arc<dyn PlacesProvider>,
    pub(crate) peers: Peers,
    pub(crate) started: Instant,
    /// The table's store (which holds the table and drains what it accepted).
    pub(crate) store: Option<Arc<Store>>,
    /// Clients read back from the store at start-up.
    pub(crate) recovered: usize,
    /// Records that anti-entropy brought in (new to this node).
    pub(crate) synced: AtomicU64,
    /// WHATSATs waiting on the places provider right now.
    pub(crate) places_waiting: AtomicU64,
    /// Open connections, against `limits.max_connections`.
    pub(crate) slots: ConnectionSlots,
    /// Open client connections per address, against `limits.max_connections_per_ip`.
    pub(crate) per_ip: slots::PerIp,
    /// Neighbours' own room on the client port (`slots.rs`).
    pub(crate) peer_slots: slots::PeerSlots,
    /// Where wire traffic is logged.
    pub(crate) log: WireLog,
    /// The herd secret links prove in their handshake, read once at start-up; `None` only
    /// with `insecure_open_links: true`.
    pub(crate) secret: Option<HerdSecret>,
    /// What neighbours sent that was refused, by reason.
    pub(crate) peer_input: PeerInput,
    /// Ticked by a task; `/healthz` checks it (see `admin/`).
    pub(crate) heartbeat: admin::Heartbeat,
    /// Connections open on the client port (clients and neighbours' links).
    pub(crate) client_port_open: admin::OpenCount,
    /// Of those, peer sessions.
    pub(crate) peer_sessions: admin::OpenCount,
    /// Admin connections open now.
    pub(crate) admin_open: admin::OpenCount,
    /// What the hot path counts for `/metrics`.
    pub(crate) metrics: crate::metrics::NodeMetrics,
    /// `links.tls`: links are mutual TLS, and `tls_port` serves clients over TLS.
    pub(crate) tls: Option<herd_config::tls::NodeTls>,
}

/// How a record arrived from a neighbour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// `HERD AT`: flooded as it happened.
    Flood,
    /// `HERD SYNC`: sent to repair a difference anti-entropy found.
    Sync,
}

/// What start-up made ready for a node: the rest of it (connection slots, links, counters)
/// starts fresh in [`Node::assemble`].
struct Parts {
    table: Arc<Table>,
    places: Arc<dyn PlacesProvider>,
    started: Instant,
    store: Option<Arc<Store>>,
    recovered: usize,
    log: WireLog,
    secret: Option<HerdSecret>,
    tls: Option<herd_config::tls::NodeTls>,
}

impl Node {
    /// Node `name` of the herd file `config`, over `parts`: its links (routed by the herd
    /// file's graph) and connection limits from the herd file, every count at zero.
    fn assemble(config: HerdConfig, name: &str, parts: Parts) -> Node {
        let neighbours = &config.servers[name].neighbours;
        let peers = Peers::new(neighbours, config.links.queue);
        peers.set_routes(routes::Routes::new(&config, name));
        Node {
            name: name.to_owned(),
            peers,
            slots: ConnectionSlots::new(config.limits.max_connections),
            per_ip: slots::PerIp::new(config.limits.max_connections_per_ip),
            peer_slots: slots::PeerSlots::default(),
            table: parts.table,
            places: parts.places,
            started: parts.started,
            store: parts.store,
            recovered: parts.recovered,
            synced: AtomicU64::new(0),
            places_waiting: AtomicU64::new(0),
            log: parts.log,
            secret: parts.secret,
            peer_input: PeerInput::default(),
            heartbeat: admin::Heartbeat::default(),
            client_port_open: admin::OpenCount::default(),
            peer_sessions: admin::OpenCount::default(),
            admin_open: admin::OpenCount::default(),
            metrics: crate::metrics::NodeMetrics::new(),
            tls: parts.tls,
            config: RwLock::new(Arc::new(config)),
        }
    }

    /// The herd file the node runs now. Tasks take it once per connection or session, so a
    /// reload reaches what starts after it.
    pub fn config(&self) -> Arc<HerdConfig> {
        Arc::clone(&self.config.read().unwrap_or_else(|e| e.into_inner()))
    }

    fn set_config(&self, config: Arc<HerdConfig>) {
        *self.config.write().unwrap_or_else(|e| e.into_inner()) = config;
    }

    /// Applies a client's update (`record`, made of `iamat`) through the newer-wins rule
    /// (which queues it for the store) and, when it is new, floods it to every neighbour,
    /// noting in `handoff` what the client's reply must wait for. Returns `None` if it was
    /// not new, else its store sequence number (see [`Node::wait_durable`]).
    pub fn accept(
        &self,
        record: AtRecord,
        iamat: &Iamat<'_>,
        handoff: &mut Handoff,
    ) -> Result<Seq, Refused> {
        let seq = self.table.offer_known(&Offer::iamat(&record, iamat));
        if seq.is_ok() {
            self.peers.forward(&record, None, true, Some(handoff));
        }
        seq
    }

    /// A tombstone from the operator's control path (`herdctl forget`): applied and flooded
    /// like a client's update.
    pub fn accept_tombstone(&self, record: AtRecord) -> Result<Seq, Refused> {
        self.accept_shared(record, None, true, None)
    }

    fn accept_shared(
        &self,
        record: AtRecord,
        from: Option<&str>,
        flooded: bool,
        handoff: Option<&mut Handoff>,
    ) -> Result<Seq, Refused> {
        let seq = self.table.offer(&record);
        if seq.is_ok() {
            self.peers.forward(&record, from, flooded, handoff);
        }
        seq
    }

    /// Applies a record a neighbour sent and counts what anti-entropy repaired. Returns
    /// whether it was new. (The session logs flooded records, a read burst at a time;
    /// anti-entropy records are summed up per exchange by `sync.rs`.)
    pub fn accept_from_peer(&self, record: AtRecord, from: &str, arrival: Arrival) -> bool {
        // Written like local IAMATs, but never waiting for a flush or a neighbour.
        let flooded = arrival == Arrival::Flood;
        let new = self
            .accept_shared(record, Some(from), flooded, None)
            .is_ok();
        if new && arrival == Arrival::Sync {
            self.synced.fetch_add(1, Ordering::Relaxed);
        }
        new
    }

    /// Applies a record a neighbour flooded, without forwarding it: the session forwards
    /// the new records of a read burst together ([`Peers::forward_all`]). Returns whether it
    /// was new.
    pub fn apply_flooded(&self, record: &AtRecord, fields: &AtFields<'_>) -> bool {
        self.table
            .offer_known(&Offer::flooded(record, fields))
            .is_ok()
    }

    /// This node's own figures, the answer to `HERD STATUS`.
    pub fn figures(&self) -> NodeFigures {
        let (links_up, links_total) = self.peers.links_up();
        let life = self.table.counts();
        NodeFigures {
            name: self.name.clone(),
            pid: std::process::id(),
            clients: life.clients,
            clients_max: life.max,
            expired: life.expired,
            forgotten: life.forgotten,
            refused_full: life.refused_full,
            links_up,
            links_total,
            uptime_ms: self.started.elapsed().as_millis() as u64,
            recovered: self.recovered,
            synced: self.synced.load(Ordering::Relaxed),
            config: Some(self.config().digest.clone()),
            store_error: self.store.as_ref().and_then(|s| s.health()),
            log_dropped: self.log.dropped(),
            places_waiting: self.places_waiting.load(Ordering::Relaxed),
            faults: faults::described(self),
            floods_sent: self
                .peers
                .links()
                .iter()
                .map(|l| l.stats.floods_sent.get())
                .sum(),
            open_links: self.secret.is_none() && self.tls.is_none(),
            peer_dropped: self.peer_input.nonzero(),
            places_refused: self.places.spend().refused,
            store_accepted: self.table.assigned(),
            store_durable: self.store.as_ref().map_or(0, |s| s.progress().durable),
        }
    }

    /// Whether client replies wait for their update to be flushed, under `config` (the herd
    /// file a connection runs, looked up once per connection rather than per line).
    pub fn strict(&self, config: &HerdConfig) -> bool {
        config.durability == Durability::Strict && self.store.is_some()
    }

    /// The sequence number a strict reply to an IAMAT must wait for: its own write, or, when
    /// it changed nothing, every write so far (the newer record it lost to may not be on disk
    /// yet either).
    pub fn durable_point(&self, accepted: Result<Seq, Refused>) -> Seq {
        match (&self.store, accepted) {
            (None, _) => 0,
            (Some(_), Ok(seq)) => seq,
            (Some(store), Err(_)) => store.assigned(),
        }
    }

    /// Waits until update `seq` is on disk (strict durability's group commit), at most
    /// `strict_wait_ms`. An error means the update must not be acknowledged.
    pub async fn wait_durable(&self, seq: Seq) -> Result<(), NotDurable> {
        match (&self.store, seq) {
            (Some(store), 1..) => store.wait_durable(seq, self.config().strict_wait).await,
            _ => Ok(()),
        }
    }

    /// This server's entry in the herd file it runs now.
    pub fn server_config(&self) -> ServerConfig {
        self.config().servers[&self.name].clone()
    }
}

/// How long from `now_nanos` until just past the clock's next whole second. Every server
/// sweeps there, so servers whose clocks agree move their expiry horizons together: their
/// tables differ only for the moment between their sweeps (anti-entropy and `verify`
/// compare only digests taken at the same horizons).
fn until_next_second(now_nanos: i128) -> std::time::Duration {
    const SECOND: i128 = 1_000_000_000;
    // Past the boundary by a little, so a clock read a hair early does not sweep twice.
    const PAST: i128 = 2_000_000;
    let wait = SECOND - now_nanos.rem_euclid(SECOND) + PAST;
    std::time::Duration::from_nanos(wait as u64)
}

/// Moves the table's expiry horizons every second (which removes what fell below them, see
/// `Table::sweep`), and says in the log, at most once a minute, how many new clients a full
/// table refused.
async fn sweep_every_second(node: Arc<Node>) {
    let mut refused_logged = node.table.counts().refused_full;
    let mut last_log: Option<Instant> = None;
    loop {
        tokio::time::sleep(until_next_second(herd_wire::clock::now_nanos())).await;
        let sweeping = Arc::clone(&node);
        // A sweep scans the table when a horizon moves: off the async workers. What it
        // removed leaves the store at the next compaction (its chunks are rewritten).
        let swept = tokio::task::spawn_blocking(move || {
            let mut chunks = vec![false; store::CHUNKS];
            let swept = sweeping.table.sweep(herd_wire::clock::now_nanos(), |hash| {
                chunks[usize::from(store::chunk_of(hash))] = true;
            });
            if swept != table::Swept::default() {
                if let Some(store) = &sweeping.store {
                    store.mark_removed(&chunks);
                }
            }
            swept
        })
        .await
        .unwrap_or_default();
        if swept.tombstones > 0 {
            tracing::info!(
                "{} tombstones older than clients.tombstone_ttl_s removed",
                swept.tombstones
            );
        }
        let counts = node.table.counts();
        let due = last_log.is_none_or(|t| t.elapsed() >= std::time::Duration::from_secs(60));
        if counts.refused_full > refused_logged && due {
            tracing::warn!(
                "table full (clients.max {}): refused {} new clients since the last report; \
                 raise clients.max or set clients.ttl_s",
                counts.max.unwrap_or_default(),
                counts.refused_full - refused_logged
            );
            refused_logged = counts.refused_full;
            last_log = Some(Instant::now());
        }
    }
}

/// The folder of node `name`'s store.
pub fn store_dir(config: &HerdConfig, name: &str) -> std::path::PathBuf {
    config.data_dir.join(name)
}

/// Opens node `name`'s store (creating `data_dir` if needed), moving a corrupt one aside,
/// and loads what it holds into `table`, which from then on queues its updates for it.
pub fn open_store(
    config: &HerdConfig,
    name: &str,
    table: &Arc<Table>,
) -> Result<(Arc<Store>, OpenReport)> {
    herd_os::private::folder(&config.data_dir, "data_dir")?;
    let (store, report) = Store::open(&store_dir(config, name), table)?;
    Ok((Arc::new(store), report))
}

/// What a node starts from: its table, already filled from its store (see [`open_store`]),
/// and the store with what opening it found.
pub struct Start {
    pub table: Arc<Table>,
    pub store: Option<(Arc<Store>, OpenReport)>,
    pub log: WireLog,
    /// The herd secret ([`herd_config::auth::SecretSource::ensure_secret`]); `None`: open links.
    pub secret: Option<HerdSecret>,
}

/// Runs node `name` until `shutdown` turns true: starts from the table its store filled
/// (if any), then binds its port, then dials its neighbours, so a restarted node answers
/// from what it had before it links. Applies the new herd files `reloads` brings while it
/// runs. The caller closes the store after this returns.
pub async fn run(
    config: HerdConfig,
    name: &str,
    places: Arc<dyn PlacesProvider>,
    started: Instant,
    start: Start,
    mut shutdown: watch::Receiver<bool>,
    mut reloads: mpsc::UnboundedReceiver<Reload>,
) -> Result<()> {
    let server = config.server(name)?.clone();
    // Binding its host needs this machine's addresses and the host's (a name is looked up):
    // blocking calls, made on the blocking pool.
    let here = match server.listen {
        Some(_) => herd_config::hosts::Locality::default(),
        None => {
            let host = server.host.clone();
            tokio::task::spawn_blocking(move || herd_config::hosts::Locality::look_up([&host]))
                .await??
        }
    };
    let address = config.listen_address(&server, &here)?;
    let tls = herd_config::tls::NodeTls::load(&config, name)?;
    let Start {
        table,
        store,
        log,
        secret,
    } = start;

    let (store, recovered) = match store {
        None => (None, 0),
        Some((store, report)) => {
            let recovered = table.clients();
            tracing::info!(
                "recovered {recovered} clients ({} records read) from {} in {} ms{}",
                report.records,
                report.dir.display(),
                // Opening and reading the store into the table.
                report.took.as_millis(),
                if report.skipped > 0 {
                    format!(" ({} unreadable entries skipped)", report.skipped)
                } else {
                    String::new()
                }
            );
            if let Some((aside, why)) = &report.moved_aside {
                tracing::error!(
                    "{name} started with an empty store: the old one could not be used ({why}) \
                     and is kept at {}; the table refills from the neighbours",
                    aside.display()
                );
            }
            store.start_writer(config.durability == Durability::Strict);
            (Some(store), recovered)
        }
    };

    let listener = TcpListener::bind(address).await.with_context(|| {
        format!(
            "{name} cannot listen on {address}: is another process using port {}? \
             (`ss -ltnp 'sport = :{}'` shows which)",
            server.port, server.port
        )
    })?;
    tracing::info!(
        "{name} listening on {address} after {} ms; neighbours: {}; places: {}",
        started.elapsed().as_millis(),
        if server.neighbours.is_empty() {
            "none".to_owned()
        } else {
            server
                .neighbours
                .iter()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        },
        places.name()
    );

    log.set_redaction(herd_logs::Redactor::new(config.logs.redact, secret.clone()));
    let node = Arc::new(Node::assemble(
        config,
        name,
        Parts {
            table,
            places,
            started,
            store,
            recovered,
            log,
            secret,
            tls,
        },
    ));
    if let Some(tls) = &node.tls {
        tracing::info!(
            "links are mutual TLS under the herd CA{}; this server's certificate expires {}",
            if node.secret.is_some() {
                " (and the herd secret is proved over them)"
            } else {
                ", without a herd secret"
            },
            herd_config::tls::der::format_utc(tls.own_not_after)
        );
    } else if node.secret.is_none() {
        tracing::warn!(
            "OPEN LINKS: insecure_open_links is true, so anyone who can reach {address} can \
             join the herd as a neighbour and rewrite any client's location; remove it to \
             use the herd secret"
        );
    }
    // Every client port listens before the admin endpoint answers: a node that answers
    // /readyz (or whose admin port is open) takes clients on all of them.
    let tls_listener = match server.tls_port {
        Some(port) => {
            let tls_address = SocketAddr::new(address.ip(), port);
            let listener = TcpListener::bind(tls_address).await.with_context(|| {
                format!(
                    "{name} cannot serve TLS clients on {tls_address}: is another process \
                     using port {port}? (`ss -ltnp 'sport = :{port}'` shows which; tls_port: in \
                     herd.yaml moves it)"
                )
            })?;
            tracing::info!("{name} serving TLS clients on {tls_address}");
            Some(listener)
        }
        None => None,
    };
    // Before the admin endpoint answers: a node that dies at start never looks ready.
    herd_os::panics::inject_panic_if_asked();
    let admin_address = SocketAddr::new(address.ip(), server.admin_port);
    let admin_listener = TcpListener::bind(admin_address).await.with_context(|| {
        format!(
            "{name} cannot serve its admin endpoint on {admin_address}: is another process \
             using port {}? (`ss -ltnp 'sport = :{}'` shows which; admin_port: in herd.yaml \
             moves it)",
            server.admin_port, server.admin_port
        )
    })?;
    tracing::info!(
        "{name} admin endpoint on http://{admin_address}/ (healthz, readyz, status, metrics)"
    );
    let heartbeat = admin::Heartbeat::spawn(&node);
    let lifecycle = tokio::spawn(sweep_every_second(Arc::clone(&node)));
    let admin_server = tokio::spawn(admin::serve(Arc::clone(&node), admin_listener));
    let dialers = dialler::spawn_dialers(&node, shutdown.clone());

    let tls_server = tls_listener
        .map(|listener| tokio::spawn(server::serve_tls_clients(Arc::clone(&node), listener)));

    let serving = server::serve(Arc::clone(&node), listener);
    tokio::pin!(serving);
    let for_new_links = shutdown.clone();
    loop {
        tokio::select! {
            result = &mut serving => {
                result?;
                break;
            }
            _ = shutdown.wait_for(|stop| *stop) => break,
            Some(reload) = reloads.recv() => {
                let outcome = reconfigure::apply(&node, reload.config, &for_new_links);
                let _ = reload.done.send(outcome);
            }
        }
    }
    for dialer in dialers {
        dialer.abort();
    }
    heartbeat.abort();
    admin_server.abort();
    if let Some(tls_server) = tls_server {
        tls_server.abort();
    }
    lifecycle.abort();
    tracing::info!("{name} stopped with {} clients known", node.table.clients());
    Ok(())
}

/// A node made in memory for unit tests of its commands: the herd file `yaml` (its server
/// `name`), a herd secret, no store, no sockets, a places index of one point.
#[cfg(test)]
pub(crate) fn node_for_tests(yaml: &str, name: &str) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("pois.csv");
    std::fs::write(&csv, "name,lat,lon\nThe Ark,34.07,-118.44\n").unwrap();
    let places = herd_places::offline::OfflineIndex::from_csv_path(&csv).unwrap();
    let config = HerdConfig::parse(
        yaml,
        std::path::Path::new("herd.yaml"),
        &herd_config::config::Environment::default(),
    )
    .unwrap();
    let table = Arc::new(Table::new());
    table.set_lifecycle(&config.clients, herd_wire::clock::now_nanos());
    Node::assemble(
        config,
        name,
        Parts {
            table,
            places: Arc::new(places),
            started: Instant::now(),
            store: None,
            recovered: 0,
            log: WireLog::discard(),
            secret: Some(herd_config::auth::HerdSecret::new(
                "unit-test-secret-0123456789abcdef".into(),
            )),
            tls: None,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::until_next_second;
    use std::time::Duration;

    #[test]
    fn sweeps_wake_just_past_the_next_whole_second() {
        let ms = Duration::from_millis;
        assert_eq!(until_next_second(1_999_000_000), ms(3));
        assert_eq!(until_next_second(2_000_000_000), ms(1002));
        assert_eq!(until_next_second(2_002_000_000), ms(1000));
        assert_eq!(until_next_second(-1_000_000), ms(3));
    }
}

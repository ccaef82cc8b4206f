//! One herd node: its state, and how it starts and stops.
//!
//! Data flows one way: socket -> protocol::parse_line -> Node::accept (table, which writes the
//! store) -> (peers, reply). A reply waits until its update is on every up neighbour's socket
//! (and, under strict durability, on disk).

pub mod dialler;
pub mod lines;
pub mod peers;
pub mod reconfigure;
pub mod server;
pub mod session;
pub mod store;
pub mod sync;
pub mod table;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use anyhow::{Context, Result};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::config::{Durability, HerdConfig, ServerConfig};
use crate::places::PlacesProvider;
use crate::protocol::NodeFigures;
use crate::record::AtRecord;
use peers::{Handoff, Peers};
use reconfigure::Reload;
use server::ConnectionSlots;
use store::{OpenReport, Seq, Store};
use table::Table;

/// Everything a node's tasks share.
pub struct Node {
    pub name: String,
    /// The herd file the node runs; a reload swaps it (see `reconfigure.rs`).
    config: RwLock<Arc<HerdConfig>>,
    pub table: Table,
    pub places: Arc<dyn PlacesProvider>,
    pub peers: Peers,
    pub started: Instant,
    /// The table's store (also held by the table, which writes it).
    pub store: Option<Arc<Store>>,
    /// Clients read back from the store at start-up.
    pub recovered: usize,
    /// Records that anti-entropy brought in (new to this node).
    pub synced: AtomicU64,
    /// Open connections, against `limits.max_connections`.
    pub slots: ConnectionSlots,
}

/// How a record arrived from a neighbour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// `HERD AT`: flooded as it happened.
    Flood,
    /// `HERD SYNC`: sent to repair a difference anti-entropy found.
    Sync,
}

impl Node {
    /// The herd file the node runs now. Tasks take it once per connection or session, so a
    /// reload reaches what starts after it.
    pub fn config(&self) -> Arc<HerdConfig> {
        Arc::clone(&self.config.read().unwrap_or_else(|e| e.into_inner()))
    }

    fn set_config(&self, config: Arc<HerdConfig>) {
        *self.config.write().unwrap_or_else(|e| e.into_inner()) = config;
    }

    /// Applies a client's update through the newer-wins rule (which also writes it to the
    /// store) and, when it is new, floods it to every neighbour, noting in `handoff` what the
    /// client's reply must wait for. Returns `None` if it was not new, else its store
    /// sequence number (see [`Node::wait_durable`]).
    pub fn accept(&self, record: AtRecord, handoff: &mut Handoff) -> Option<Seq> {
        self.accept_shared(&Arc::new(record), None, Some(handoff))
    }

    fn accept_shared(
        &self,
        record: &Arc<AtRecord>,
        from: Option<&str>,
        handoff: Option<&mut Handoff>,
    ) -> Option<Seq> {
        let seq = self.table.apply(record);
        if seq.is_some() {
            self.peers.flood(record, from, handoff);
        }
        seq
    }

    /// Applies a record a neighbour sent and counts what anti-entropy repaired; a flooded
    /// one is logged (anti-entropy records are summed up per exchange by `sync.rs`).
    /// Returns whether it was new.
    pub fn accept_from_peer(&self, record: AtRecord, from: &str, arrival: Arrival) -> bool {
        let record = Arc::new(record);
        // Written like local IAMATs, but never waiting for a flush or a neighbour.
        let new = self.accept_shared(&record, Some(from), None).is_some();
        match arrival {
            Arrival::Sync => {
                if new {
                    self.synced.fetch_add(1, Ordering::Relaxed);
                }
            }
            Arrival::Flood => tracing::info!(
                target: "wire",
                "{from} < HERD {} ({})",
                record.line(),
                if new { "new, flooded" } else { "stale, dropped" }
            ),
        }
        new
    }

    /// This node's own figures, the answer to `HERD STATUS`.
    pub fn figures(&self) -> NodeFigures {
        let (links_up, links_total) = self.peers.links_up();
        NodeFigures {
            name: self.name.clone(),
            pid: std::process::id(),
            clients: self.table.len(),
            links_up,
            links_total,
            uptime_ms: self.started.elapsed().as_millis() as u64,
            recovered: self.recovered,
            synced: self.synced.load(Ordering::Relaxed),
            config: Some(self.config().digest.clone()),
        }
    }

    /// Whether client replies wait for their update to be flushed.
    pub fn strict(&self) -> bool {
        self.config().durability == Durability::Strict && self.store.is_some()
    }

    /// The sequence number a strict reply to an IAMAT must wait for: its own write, or, when
    /// it changed nothing, every write so far (the newer record it lost to may not be on disk
    /// yet either).
    pub fn durable_point(&self, accepted: Option<Seq>) -> Seq {
        match (&self.store, accepted) {
            (None, _) => 0,
            (Some(_), Some(seq)) => seq,
            (Some(store), None) => store.written(),
        }
    }

    /// Waits until store write `seq` is on disk (strict durability's group commit).
    pub async fn wait_durable(&self, seq: Seq) {
        if let (true, Some(store)) = (seq > 0, &self.store) {
            store.wait_flushed(seq).await;
        }
    }

    /// This server's entry in the herd file it runs now.
    pub fn server_config(&self) -> ServerConfig {
        self.config().servers[&self.name].clone()
    }
}

/// The folder of node `name`'s store.
pub fn store_dir(config: &HerdConfig, name: &str) -> std::path::PathBuf {
    config.data_dir.join(name)
}

/// Opens node `name`'s store (creating `data_dir` if needed), moving a corrupt one aside.
pub fn open_store(config: &HerdConfig, name: &str) -> Result<(Arc<Store>, OpenReport)> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data_dir {}", config.data_dir.display()))?;
    let (store, report) = Store::open(&store_dir(config, name))?;
    Ok((Arc::new(store), report))
}

/// Runs node `name` until `shutdown` turns true: loads the table from `store` (if any), then
/// binds its port, then dials its neighbours, so a restarted node answers from what it had
/// before it links. Applies the new herd files `reloads` brings while it runs. The caller
/// flushes the store after this returns.
pub async fn run(
    config: HerdConfig,
    name: &str,
    places: Arc<dyn PlacesProvider>,
    started: Instant,
    store: Option<(Arc<Store>, OpenReport)>,
    mut shutdown: watch::Receiver<bool>,
    mut reloads: mpsc::UnboundedReceiver<Reload>,
) -> Result<()> {
    let server = config.server(name)?.clone();
    let address = config.listen_address(&server)?;

    let (table, store, recovered) = match store {
        None => (Table::new(), None, 0),
        Some((store, report)) => {
            let restoring = Instant::now();
            let table = Table::with_store(Arc::clone(&store));
            let recovered = table.restore(report.records);
            tracing::info!(
                "recovered {recovered} clients from {} in {} ms{}",
                report.dir.display(),
                // Opening and reading the store, then filling the table.
                (report.took + restoring.elapsed()).as_millis(),
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
            (table, Some(store), recovered)
        }
    };
    let group_commit = match (&store, config.durability) {
        (Some(store), Durability::Strict) => Some(store.spawn_group_commit()),
        _ => None,
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

    let node = Arc::new(Node {
        name: name.to_owned(),
        peers: Peers::new(&server.neighbours, config.links.queue),
        slots: ConnectionSlots::new(config.limits.max_connections),
        config: RwLock::new(Arc::new(config)),
        table,
        places,
        started,
        store,
        recovered,
        synced: AtomicU64::new(0),
    });
    if node.config().secret.is_none() && !server.neighbours.is_empty() {
        tracing::warn!(
            "no herd secret: peer links are open to anyone who can reach {address} (set \
             secret: in herd.yaml or {})",
            crate::auth::SECRET_ENV
        );
    }
    let dialers = dialler::spawn_dialers(&node, shutdown.clone());
    crate::panics::inject_panic_if_asked();

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
    if let Some(task) = group_commit {
        task.abort();
    }
    tracing::info!("{name} stopped with {} clients known", node.table.len());
    Ok(())
}

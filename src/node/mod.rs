//! One herd node: its state, and how it starts and stops.
//!
//! Data flows one way: socket -> protocol::parse_line -> Node::accept (table) -> (peers, reply).

pub mod lines;
pub mod peers;
pub mod server;
pub mod table;

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::{HerdConfig, ServerConfig};
use crate::places::PlacesProvider;
use crate::protocol::AtRecord;
use peers::Peers;
use table::Table;

/// Everything a node's tasks share.
pub struct Node {
    pub name: String,
    pub config: HerdConfig,
    pub table: Table,
    pub places: Arc<dyn PlacesProvider>,
    pub peers: Peers,
    pub started: Instant,
}

impl Node {
    /// Applies an update through the newer-wins rule and, when it is new, floods it to every
    /// neighbour except the one it came from. Returns whether it was new.
    pub fn accept(&self, record: AtRecord, from: Option<&str>) -> bool {
        let record = Arc::new(record);
        let new = self.table.apply(&record);
        if new {
            self.peers.flood(&record, from);
        }
        new
    }

    pub fn server_config(&self) -> &ServerConfig {
        &self.config.servers[&self.name]
    }
}

/// Runs node `name` until `shutdown` turns true: binds its port, then dials its neighbours.
pub async fn run(
    config: HerdConfig,
    name: &str,
    places: Arc<dyn PlacesProvider>,
    started: Instant,
    mut shutdown: watch::Receiver<bool>,
) -> Result<()> {
    let server = config.server(name)?.clone();
    let address = config.address(&server);
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
        peers: Peers::new(&server.neighbours),
        config,
        table: Table::new(),
        places,
        started,
    });
    let dialers = peers::spawn_dialers(&node, shutdown.clone());

    tokio::select! {
        result = server::serve(Arc::clone(&node), listener) => result?,
        _ = shutdown.wait_for(|stop| *stop) => {}
    }
    for dialer in dialers {
        dialer.abort();
    }
    tracing::info!("{name} stopped with {} clients known", node.table.len());
    Ok(())
}

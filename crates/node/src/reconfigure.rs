//! A running node takes a new herd file: its links (added and dropped without a restart),
//! its neighbours' addresses, `limits`, `links` and `reconnect` settings change live. What it
//! reads only at start-up (its own address, its store, durability, places, the secret) it
//! does not change live: such a file is refused whole, and the node keeps running on the
//! one it has (`config_diff.rs` decides which is which, for the supervisor too).
//!
//! Log settings are applied by the caller, which owns the logging (`commands.rs`).

use std::sync::Arc;

use anyhow::{bail, Result};
use tokio::sync::{oneshot, watch};

use super::{dialler, Node};
use herd_config::config::HerdConfig;
use herd_config::config_diff;

/// A new herd file for a running node, and where to say whether it took it (and what
/// changed, for the log).
pub struct Reload {
    pub config: HerdConfig,
    pub done: oneshot::Sender<Result<Vec<String>>>,
}

/// Applies `new` to `node`, or refuses it whole, changing nothing.
pub fn apply(
    node: &Arc<Node>,
    new: HerdConfig,
    shutdown: &watch::Receiver<bool>,
) -> Result<Vec<String>> {
    let old = node.config();
    let name = node.name.as_str();
    if !new.servers.contains_key(name) {
        bail!("{name} is not in the new herd file; stop it (herdctl stop {name})");
    }
    if let Some(why) = config_diff::restart_reason(&old, &new, name) {
        bail!("{why}; restart {name} to apply it");
    }
    let changes = config_diff::live_changes(&old, &new, name);
    let neighbours = new.servers[name].neighbours.clone();
    let (max_connections, queue) = (new.limits.max_connections, new.links.queue);
    node.per_ip.set_max(new.limits.max_connections_per_ip);
    node.table
        .set_lifecycle(&new.clients, herd_wire::clock::now_nanos());
    node.log.set_redaction(herd_logs::Redactor::new(
        new.logs.redact,
        node.secret.clone(),
    ));
    // The new file first: a new link's dialler reads its neighbour's address from it, and a
    // HELLO from a new neighbour is checked against it.
    node.peers
        .set_routes(super::routes::Routes::new(&new, name));
    node.set_config(Arc::new(new));
    let (added, _dropped) = node.peers.set_neighbours(&neighbours, queue);
    for link in added {
        dialler::spawn_dialer(node, link, shutdown.clone());
    }
    node.slots.resize(max_connections);
    Ok(changes)
}

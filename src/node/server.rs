//! The accept loop and the per-connection line loop. Clients and neighbours share the port:
//! a connection becomes a peer connection when its first message is a valid `HERD HELLO`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Result;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use super::lines::{has_buffered_line, read_line, Line, MAX_LINE_BYTES};
use super::{Arrival, Node};
use crate::logs::printable;
use crate::places::NearbyQuery;
use crate::protocol::{
    self, format_invalid, format_status, format_welcome, format_whatsat_reply, AtRecord, Command,
    NodeFigures, PeerMessage, PEER_PROTOCOL_VERSION,
};

/// Accepts connections until the listener fails; each connection gets its own task, so one
/// slow or hostile client never holds up another.
pub async fn serve(node: Arc<Node>, listener: TcpListener) -> Result<()> {
    loop {
        let (stream, remote) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: transient, keep serving.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let node = Arc::clone(&node);
        tokio::spawn(async move {
            if let Err(e) = handle_connection(&node, stream, remote).await {
                tracing::debug!("{remote}: connection ended with error: {e}");
            }
        });
    }
}

/// Who is on the other end of a connection.
enum Role {
    Client,
    /// A neighbour that said HELLO: its `HERD AT` updates are applied and flooded on.
    Peer(String),
}

async fn handle_connection(node: &Node, stream: TcpStream, remote: SocketAddr) -> Result<()> {
    let _ = stream.set_nodelay(true);
    let (read_half, mut writer) = stream.into_split();
    let mut reader = BufReader::with_capacity(16 * 1024, read_half);
    let mut role = Role::Client;
    let mut out = Vec::new();
    // Strict durability: the store write the replies in `out` wait for (0: none).
    let mut durable_at = 0;

    while let Some(line) = read_line(&mut reader, MAX_LINE_BYTES).await? {
        let received = now_nanos();
        let line = match line {
            Line::Complete(line) => line,
            Line::TooLong(prefix) => {
                tracing::info!(target: "wire", "{remote} < (line over {MAX_LINE_BYTES} bytes) {}", printable(&prefix));
                prefix
            }
        };
        if matches!(role, Role::Client) {
            tracing::info!(target: "wire", "{remote} < {}", printable(&line));
        }
        let reply = respond(node, &mut role, &line, received, remote, &mut durable_at).await;
        if let Some(reply) = reply {
            tracing::info!(target: "wire", "{remote} > {}", printable(&reply));
            out.extend_from_slice(&reply);
        }
        // Replies to lines that are already buffered share one write; each reply stays
        // contiguous either way.
        if !out.is_empty() && !has_buffered_line(reader.buffer()) {
            // Pipelined IAMATs wait once for the whole batch (group commit per connection).
            node.wait_durable(std::mem::take(&mut durable_at)).await;
            writer.write_all(&out).await?;
            out.clear();
        }
    }
    if !out.is_empty() {
        node.wait_durable(durable_at).await;
        writer.write_all(&out).await?;
    }
    if let Role::Peer(name) = role {
        tracing::info!("peer connection from {name} ({remote}) dropped");
    }
    writer.shutdown().await?;
    Ok(())
}

/// The reply to one line, if it gets one (flooded updates do not). Under strict durability,
/// raises `durable_at` to the store write an IAMAT reply must wait for.
async fn respond(
    node: &Node,
    role: &mut Role,
    line: &[u8],
    received: i128,
    remote: SocketAddr,
    durable_at: &mut u64,
) -> Option<Vec<u8>> {
    let Some(command) = protocol::parse_line(line) else {
        return Some(format_invalid(line));
    };
    match command {
        Command::Iamat(iamat) => {
            let record = AtRecord::from_iamat(&node.name, received, &iamat);
            let mut reply = record.line().as_bytes().to_vec();
            reply.push(b'\n');
            let accepted = node.accept(record, None);
            if node.strict() {
                *durable_at = (*durable_at).max(node.durable_point(accepted));
            }
            Some(reply)
        }
        Command::Whatsat(query) => {
            let Some(record) = node.table.get(query.client) else {
                return Some(format_invalid(line));
            };
            let location = record.location();
            let places = node
                .places
                .nearby(NearbyQuery {
                    lat: location.lat,
                    lng: location.lng,
                    radius_km: query.radius_km,
                    bound: query.bound,
                })
                .await;
            let json = serde_json::to_string_pretty(&places)
                .expect("a serde_json::Value always serializes");
            Some(format_whatsat_reply(record.line(), &json).into_bytes())
        }
        Command::Peer(PeerMessage::Hello { server, version }) => {
            let known = node.server_config().neighbours.contains(server);
            if !known || version != PEER_PROTOCOL_VERSION || matches!(role, Role::Peer(_)) {
                tracing::warn!(
                    "{remote}: refused HELLO from {server:?} (protocol {version}): not a \
                     neighbour of {}, or a version other than {PEER_PROTOCOL_VERSION}",
                    node.name
                );
                return Some(format_invalid(line));
            }
            tracing::info!("peer connection from {server} ({remote}) opened");
            *role = Role::Peer(server.to_owned());
            Some(format_welcome(&node.name).into_bytes())
        }
        Command::Peer(PeerMessage::Update(record)) => match role {
            Role::Peer(from) => {
                node.accept_from_peer(record, from, Arrival::Flood);
                None
            }
            Role::Client => Some(format_invalid(line)),
        },
        Command::Peer(PeerMessage::Sync(record)) => match role {
            Role::Peer(from) => {
                node.accept_from_peer(record, from, Arrival::Sync);
                None
            }
            Role::Client => Some(format_invalid(line)),
        },
        Command::Peer(PeerMessage::Digest(theirs)) => match role {
            Role::Peer(from) => Some(node.answer_digest(from, &theirs).into_bytes()),
            Role::Client => Some(format_invalid(line)),
        },
        // WANT answers a digest this side sent; the accepting side never sends one.
        Command::Peer(PeerMessage::Want(_)) => Some(format_invalid(line)),
        Command::Peer(PeerMessage::StatusQuery) => {
            let (links_up, links_total) = node.peers.links_up();
            Some(
                format_status(&NodeFigures {
                    name: node.name.clone(),
                    pid: std::process::id(),
                    clients: node.table.len(),
                    links_up,
                    links_total,
                    uptime_ms: node.started.elapsed().as_millis() as u64,
                    recovered: node.recovered,
                    synced: node.synced.load(std::sync::atomic::Ordering::Relaxed),
                })
                .into_bytes(),
            )
        }
        Command::Peer(PeerMessage::Welcome { .. }) => Some(format_invalid(line)),
    }
}

/// The server's receive time, in nanoseconds since the epoch.
pub fn now_nanos() -> i128 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i128,
        Err(before_epoch) => -(before_epoch.duration().as_nanos() as i128),
    }
}

//! The accept loop and the per-connection line loop. Clients and neighbours share the port:
//! a connection becomes a peer connection when its first message is a valid `HERD HELLO`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Result;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::lines::{has_buffered_line, read_line, write_within, Line};
use super::peers::Handoff;
use super::{session, Node};
use crate::auth;
use crate::logs::printable;
use crate::places::NearbyQuery;
use crate::protocol::{
    self, format_invalid, format_status, format_welcome, format_whatsat_reply, Command,
    PeerMessage, PEER_PROTOCOL_VERSION,
};
use crate::record::AtRecord;

/// Accepts connections until the listener fails; each connection gets its own task, so one
/// slow or hostile client never holds up another.
///
/// At most `limits.max_connections` connections are open at once. Past that, a new
/// connection is accepted and closed at once (the client sees EOF or a reset) rather than
/// left in the kernel's backlog: the client learns right away that the node is full, the
/// backlog never fills with connections nobody will serve, and the descriptor is released
/// immediately. Neighbours that are turned away redial with their backoff.
pub async fn serve(node: Arc<Node>, listener: TcpListener) -> Result<()> {
    raise_open_files_limit(node.config().limits.max_connections);
    let mut refusals = RefusalLog::default();
    loop {
        let (stream, remote) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: transient, keep serving.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let Some(slot) = node.slots.try_take() else {
            drop(stream);
            refusals.refused(node.config().limits.max_connections);
            continue;
        };
        let node = Arc::clone(&node);
        tokio::spawn(async move {
            let _slot = slot;
            if let Err(e) = handle_connection(&node, stream, remote).await {
                tracing::debug!("{remote}: connection ended with error: {e}");
            }
        });
    }
}

/// The open-connection budget (`limits.max_connections`). A reload resizes it: a larger
/// one at once, a smaller one as connections close (none is cut off).
pub struct ConnectionSlots {
    semaphore: Arc<Semaphore>,
    max: Mutex<usize>,
}

impl ConnectionSlots {
    pub fn new(max: usize) -> ConnectionSlots {
        ConnectionSlots {
            semaphore: Arc::new(Semaphore::new(max)),
            max: Mutex::new(max),
        }
    }

    fn try_take(&self) -> Option<OwnedSemaphorePermit> {
        Arc::clone(&self.semaphore).try_acquire_owned().ok()
    }

    /// Makes the budget `new_max`. Call inside the runtime.
    pub fn resize(&self, new_max: usize) {
        let mut max = self.max.lock().unwrap_or_else(|e| e.into_inner());
        if new_max > *max {
            raise_open_files_limit(new_max);
            self.semaphore.add_permits(new_max - *max);
        } else if new_max < *max {
            // Retire the surplus as connections release it.
            let surplus = u32::try_from(*max - new_max).unwrap_or(u32::MAX);
            let semaphore = Arc::clone(&self.semaphore);
            tokio::spawn(async move {
                if let Ok(permits) = semaphore.acquire_many_owned(surplus).await {
                    permits.forget();
                }
            });
        }
        *max = new_max;
    }
}

/// Connections refused for `max_connections`, warned about at most once a second (a flood of
/// connections must not become a flood of log lines).
#[derive(Default)]
struct RefusalLog {
    last_warning: Option<Instant>,
    unreported: u64,
}

impl RefusalLog {
    fn refused(&mut self, max_connections: usize) {
        self.unreported += 1;
        if self
            .last_warning
            .is_some_and(|t| t.elapsed() < Duration::from_secs(1))
        {
            return;
        }
        tracing::warn!(
            "{} connection(s) closed at once: {max_connections} connections are open \
             (limits.max_connections)",
            self.unreported
        );
        self.last_warning = Some(Instant::now());
        self.unreported = 0;
    }
}

/// Lifts this process's soft open-files limit towards its hard limit, so `max_connections`
/// (plus the store, logs and links) fits; never lowers it.
fn raise_open_files_limit(max_connections: usize) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    let wanted = (max_connections as u64).saturating_add(256).min(hard);
    if wanted > soft {
        if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, wanted, hard) {
            tracing::warn!("cannot raise the open-files limit from {soft} to {wanted}: {e}");
        }
    } else if soft < (max_connections as u64).saturating_add(64) {
        tracing::warn!(
            "the open-files limit ({soft}) is below limits.max_connections \
             ({max_connections}); connections past it fail to be accepted"
        );
    }
}

/// Replies queued for one write are flushed once they reach this size, even if more
/// pipelined lines are waiting, so a client that pipelines cannot pile up replies.
const MAX_PENDING_REPLY_BYTES: usize = 256 * 1024;

/// Only the start of an over-long line (and of its `? ` reply) goes into the log.
const LOGGED_PREFIX_BYTES: usize = 1024;

/// Who is on the other end of a connection.
enum Role {
    Client,
    /// Said HELLO as a neighbour; with a herd secret, it must still prove it with AUTH.
    Authenticating {
        from: String,
        dialler_nonce: String,
        our_nonce: String,
    },
    /// A neighbour that said HELLO (and, with a secret, proved it): the connection becomes
    /// a peer session (`session.rs`).
    Peer(String),
}

async fn handle_connection(node: &Node, stream: TcpStream, remote: SocketAddr) -> Result<()> {
    let _ = stream.set_nodelay(true);
    let (read_half, mut writer) = stream.into_split();
    let mut reader = BufReader::with_capacity(16 * 1024, read_half);
    let mut role = Role::Client;
    let mut out = Vec::new();
    // What the replies in `out` wait for before they are written: their updates on every up
    // neighbour's socket (flood before reply) and, under strict durability, the store write
    // (0: none).
    let mut handoff = Handoff::default();
    let mut durable_at = 0;

    // The herd file as it is when the connection opens: a reload applies to new connections.
    let config_at_start = node.config();
    let limits = config_at_start.limits;

    loop {
        // No complete line for `idle_timeout` (idle, or a line dribbled too slowly): close.
        let Ok(line) = tokio::time::timeout(
            limits.idle_timeout,
            read_line(&mut reader, limits.max_line_bytes),
        )
        .await
        else {
            tracing::info!(
                "{remote}: no complete line for {} s (limits.idle_timeout_s); closing",
                limits.idle_timeout.as_secs()
            );
            break;
        };
        let Some(line) = line? else { break };
        let received = now_nanos();
        let (line, too_long) = match line {
            Line::Complete(line) => (line, false),
            Line::TooLong(prefix) => {
                tracing::info!(
                    target: "wire",
                    "{remote} < (line over {} bytes, first {LOGGED_PREFIX_BYTES} shown) {}",
                    limits.max_line_bytes,
                    printable(&prefix[..prefix.len().min(LOGGED_PREFIX_BYTES)])
                );
                (prefix, true)
            }
        };
        // The supervisor's health probes and `herdctl status` ask every few seconds: their
        // exchanges are logged only at debug level, so the log shows traffic, not polling.
        let polling = !too_long && is_status_query(&line);
        if polling {
            tracing::debug!(target: "wire", "{remote} < {}", printable(&line));
        } else if !too_long {
            tracing::info!(target: "wire", "{remote} < {}", printable(&line));
        }
        let reply = respond(
            node,
            &mut role,
            &line,
            received,
            remote,
            &mut handoff,
            &mut durable_at,
        )
        .await;
        // The over-long line's memory goes now, not when the connection ends.
        drop(line);
        if let Some(reply) = reply {
            let shown = if too_long {
                &reply[..reply.len().min(LOGGED_PREFIX_BYTES)]
            } else {
                &reply[..]
            };
            if polling {
                tracing::debug!(target: "wire", "{remote} > {}", printable(shown));
            } else {
                tracing::info!(target: "wire", "{remote} > {}", printable(shown));
            }
            out.extend_from_slice(&reply);
        }
        if let Role::Peer(from) = role {
            // The handshake is done (its WELCOME may be in `out`): the rest is a peer session.
            write_within(&mut writer, &out, config_at_start.links.write_timeout).await?;
            let ended = match node.peers.link(&from) {
                // A reload that drops the link ends this end of it too.
                Some(link) => tokio::select! {
                    ended = session::run_accepted(node, &from, reader, writer) => ended,
                    _ = link.retired() => Err(anyhow::anyhow!(
                        "no longer a neighbour (the herd file was reloaded)"
                    )),
                },
                None => Ok(()),
            };
            let why = ended
                .err()
                .map_or("closed by peer".to_owned(), |e| format!("{e:#}"));
            tracing::info!("peer connection from {from} ({remote}) dropped: {why}");
            return Ok(());
        }
        // Replies to lines that are already buffered share one write; each reply stays
        // contiguous either way.
        if !out.is_empty()
            && (!has_buffered_line(reader.buffer()) || out.len() >= MAX_PENDING_REPLY_BYTES)
        {
            // Pipelined IAMATs wait once for the whole batch (group commit per connection).
            release_point(node, &mut handoff, &mut durable_at).await;
            write_within(&mut writer, &out, limits.idle_timeout).await?;
            if out.capacity() > MAX_PENDING_REPLY_BYTES {
                out = Vec::new(); // a big batch (e.g. an over-long line's copy): give it back
            } else {
                out.clear();
            }
        }
    }
    if !out.is_empty() {
        release_point(node, &mut handoff, &mut durable_at).await;
        write_within(&mut writer, &out, limits.idle_timeout).await?;
    }
    writer.shutdown().await?;
    Ok(())
}

/// Waits until the pending replies may be written: their updates were handed to every up
/// neighbour's socket (at most `links.write_timeout_ms`: a link stalled longer is being
/// dropped) and, under strict durability, are on disk.
async fn release_point(node: &Node, handoff: &mut Handoff, durable_at: &mut u64) {
    handoff.wait(node.config().links.write_timeout).await;
    node.wait_durable(std::mem::take(durable_at)).await;
}

/// Whether `line` is `HERD STATUS` (checked cheaply first: most lines are not `HERD`).
fn is_status_query(line: &[u8]) -> bool {
    line.trim_ascii_start().starts_with(b"HERD")
        && matches!(
            protocol::parse_line(line),
            Some(Command::Peer(PeerMessage::StatusQuery))
        )
}

/// Whether an IAMAT or WHATSAT names a client id longer than `limits.max_client_id_bytes`.
fn client_id_too_long(command: &Command<'_>, max: usize) -> bool {
    match command {
        Command::Iamat(iamat) => iamat.client.len() > max,
        Command::Whatsat(query) => query.client.len() > max,
        Command::Peer(_) => false,
    }
}

/// The reply to one line, if it gets one (AUTH does not). An IAMAT notes in `handoff` the
/// neighbours its update was queued for and, under strict durability, raises `durable_at` to
/// the store write its reply must wait for.
async fn respond(
    node: &Node,
    role: &mut Role,
    line: &[u8],
    received: i128,
    remote: SocketAddr,
    handoff: &mut Handoff,
    durable_at: &mut u64,
) -> Option<Vec<u8>> {
    let Some(command) = protocol::parse_line(line) else {
        return Some(format_invalid(line));
    };
    if client_id_too_long(&command, node.config().limits.max_client_id_bytes) {
        return Some(format_invalid(line));
    }
    match command {
        Command::Iamat(iamat) => {
            let record = AtRecord::from_iamat(&node.name, received, &iamat);
            let mut reply = record.line().as_bytes().to_vec();
            reply.push(b'\n');
            let accepted = node.accept(record, handoff);
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
        Command::Peer(PeerMessage::Hello {
            server,
            version,
            nonce,
        }) => {
            let known = node.server_config().neighbours.contains(server);
            if !known || version != PEER_PROTOCOL_VERSION || !matches!(role, Role::Client) {
                tracing::warn!(
                    "{remote}: refused HELLO from {server:?} (protocol {version}): not a \
                     neighbour of {}, or a version other than {PEER_PROTOCOL_VERSION}",
                    node.name
                );
                return Some(format_invalid(line));
            }
            let our_nonce = auth::nonce();
            let config = node.config();
            let Some(secret) = &config.secret else {
                tracing::info!("peer connection from {server} ({remote}) opened (no herd secret)");
                node.peers.wake(server);
                *role = Role::Peer(server.to_owned());
                return Some(format_welcome(&node.name, &our_nonce, None).into_bytes());
            };
            let proof = secret.welcome_mac(&node.name, server, nonce, &our_nonce);
            *role = Role::Authenticating {
                from: server.to_owned(),
                dialler_nonce: nonce.to_owned(),
                our_nonce: our_nonce.clone(),
            };
            Some(format_welcome(&node.name, &our_nonce, Some(&proof)).into_bytes())
        }
        Command::Peer(PeerMessage::Auth { proof }) => {
            let Role::Authenticating {
                from,
                dialler_nonce,
                our_nonce,
            } = role
            else {
                return Some(format_invalid(line));
            };
            let config = node.config();
            let secret = config
                .secret
                .as_ref()
                .expect("authenticating needs a secret");
            if !secret.verify_auth(proof, from, &node.name, our_nonce, dialler_nonce) {
                tracing::warn!(
                    "{remote}: {from} failed to prove the herd secret; treating it as a client"
                );
                *role = Role::Client;
                return Some(format_invalid(line));
            }
            tracing::info!("peer connection from {from} ({remote}) opened (authenticated)");
            node.peers.wake(from);
            *role = Role::Peer(from.clone());
            None
        }
        // Updates, anti-entropy and WANT belong to a peer session; on a connection that
        // did not say HELLO (and prove the secret) they are refused, never applied.
        Command::Peer(
            PeerMessage::Update(_)
            | PeerMessage::Sync(_)
            | PeerMessage::Digest(_)
            | PeerMessage::Want(_),
        ) => Some(format_invalid(line)),
        Command::Peer(PeerMessage::StatusQuery) => {
            Some(format_status(&node.figures()).into_bytes())
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

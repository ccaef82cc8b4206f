//! The accept loop and the per-connection line loop. Clients and neighbours share the port:
//! a connection becomes a peer connection when its first message is a valid `HERD HELLO`.

use std::net::SocketAddr;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::handshake::{self, is_handshake_line};
use super::lines::{has_buffered_line, read_line, take_buffered_line, write_within, Line};
use super::peer_input::Dropped;
use super::peers::Handoff;
use super::slots::{Slot, SLOTS_PER_NEIGHBOUR};
use super::store::NotDurable;
use super::table::Lookahead;
use super::{cmd, operator, session, Node};
use crate::metrics::{CommandKind, RequestResult, RequestTally};
use herd_config::config::{HerdConfig, CLOSE_AFTER_REPLY_GRACE};
use herd_logs::LogBatch;
use herd_wire::clock::now_nanos;
use herd_wire::protocol::{self, format_status, push_invalid, Command, PeerMessage};

/// Accepts connections until the listener fails; each connection gets its own task, so one
/// slow or hostile client never holds up another.
///
/// At most `limits.max_connections` client connections are open at once, at most
/// `limits.max_connections_per_ip` from one address. Past that, a new connection is accepted
/// rather than left in the kernel's backlog, and closed at once, unless a handshake slot
/// is free (`slots.rs`): then it is closed at its first line unless that line is a
/// neighbour's HELLO. The client learns right away that the node is full, the backlog never
/// fills with connections nobody will serve, and neighbours are never kept out by clients.
pub async fn serve(node: Arc<Node>, listener: TcpListener) -> Result<()> {
    raise_open_files_limit(node.config().limits.max_connections);
    let mut refusals = RefusalLog::default();
    loop {
        let (stream, remote) = accept(&listener, "the client port").await;
        // A client slot (within the address's cap), else room for a neighbour's handshake.
        let client = node
            .per_ip
            .try_enter(remote.ip())
            .and_then(|ip| node.slots.try_take().map(|permit| Slot::Client(permit, ip)));
        if client.is_none() {
            // Served only if it turns out to be a neighbour's handshake.
            node.metrics.connections_refused.inc();
            refusals.refused(&node.config().limits);
        }
        let Some(slot) = client.or_else(|| node.peer_slots.try_handshake().map(Slot::Handshake))
        else {
            drop(stream);
            continue;
        };
        let node = Arc::clone(&node);
        tokio::spawn(async move {
            let _open = node.client_port_open.enter();
            if let Err(e) = serve_client_port(&node, stream, remote, slot).await {
                tracing::debug!("{remote}: connection ended with error: {e}");
            }
        });
    }
}

/// How a connection reached the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Transport {
    /// Plain text on the client port.
    Plain,
    /// Mutual TLS on the client port: the other end presented this certificate from the
    /// herd CA (a neighbour's link).
    LinkTls(herd_config::tls::PeerCert),
    /// TLS on `tls_port`: a client, with no certificate.
    ClientTls,
}

/// One connection on the client port: plain text, or (with `links.tls`) a neighbour's TLS
/// handshake, told apart by the first byte, which is peeked, not read.
async fn serve_client_port(
    node: &Node,
    stream: TcpStream,
    remote: SocketAddr,
    slot: Slot,
) -> Result<()> {
    let Some(tls) = &node.tls else {
        let (reader, writer) = plain_halves(stream);
        return handle_connection(node, reader, writer, remote, slot, Transport::Plain).await;
    };
    let _ = stream.set_nodelay(true);
    let wait = {
        let limits = node.config().limits;
        limits.first_line_timeout.min(limits.idle_timeout)
    };
    let mut first = [0u8; 1];
    let peeked = tokio::time::timeout(wait, stream.peek(&mut first)).await;
    if !matches!(peeked, Ok(Ok(1))) || first[0] != herd_config::tls::HANDSHAKE_RECORD {
        // Nothing yet (the line loop applies the same deadline), or a protocol line.
        let (reader, writer) = plain_halves(stream);
        return handle_connection(node, reader, writer, remote, slot, Transport::Plain).await;
    }
    let accepted = tokio::time::timeout(wait, tls.links.accept(stream)).await;
    let stream = match accepted {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            node.peer_input.count(Dropped::FailedAuth);
            tracing::warn!("{remote}: refused a TLS connection: {e}");
            return Ok(());
        }
        Err(_) => {
            tracing::info!(
                "{remote}: TLS handshake not done within {} s; closing",
                wait.as_secs()
            );
            return Ok(());
        }
    };
    let Some(cert) = herd_config::tls::PeerCert::from_chain(stream.get_ref().1.peer_certificates())
    else {
        tracing::warn!("{remote}: refused a TLS connection: its certificate cannot be read");
        return Ok(());
    };
    let (reader, writer) = herd_config::tls::split(stream);
    handle_connection(node, reader, writer, remote, slot, Transport::LinkTls(cert)).await
}

fn plain_halves(
    stream: TcpStream,
) -> (
    tokio::net::tcp::OwnedReadHalf,
    tokio::net::tcp::OwnedWriteHalf,
) {
    let _ = stream.set_nodelay(true);
    stream.into_split()
}

/// The next connection on `listener` (`port` names it in a warning). Accept errors (out of
/// file descriptors and the like) are transient: logged, and the node keeps serving.
async fn accept(listener: &TcpListener, port: &str) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(accepted) => return accepted,
            Err(e) => {
                tracing::warn!("accept failed on {port}: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Accepts clients on `tls_port`: the same protocol as the client port, over TLS with this
/// server's certificate, within the same connection limits.
pub async fn serve_tls_clients(node: Arc<Node>, listener: TcpListener) -> Result<()> {
    let mut refusals = RefusalLog::default();
    loop {
        let (stream, remote) = accept(&listener, "tls_port").await;
        let Some(slot) = node
            .per_ip
            .try_enter(remote.ip())
            .and_then(|ip| node.slots.try_take().map(|permit| Slot::Client(permit, ip)))
        else {
            node.metrics.connections_refused.inc();
            refusals.refused(&node.config().limits);
            drop(stream);
            continue;
        };
        let node = Arc::clone(&node);
        tokio::spawn(async move {
            let _open = node.client_port_open.enter();
            let Some(tls) = &node.tls else { return };
            let _ = stream.set_nodelay(true);
            let wait = node.config().limits.first_line_timeout;
            let stream = match tokio::time::timeout(wait, tls.clients.accept(stream)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    tracing::info!("{remote}: TLS client handshake failed: {e}");
                    return;
                }
                Err(_) => return,
            };
            let (reader, writer) = herd_config::tls::split(stream);
            let served =
                handle_connection(&node, reader, writer, remote, slot, Transport::ClientTls);
            if let Err(e) = served.await {
                tracing::debug!("{remote}: TLS connection ended with error: {e}");
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
    fn refused(&mut self, limits: &herd_config::config::Limits) {
        self.unreported += 1;
        if self
            .last_warning
            .is_some_and(|t| t.elapsed() < Duration::from_secs(1))
        {
            return;
        }
        tracing::warn!(
            "{} connection(s) found no client slot ({} connections open, \
             limits.max_connections, or {} from one address, limits.max_connections_per_ip): \
             closed unless they are a neighbour's handshake",
            self.unreported,
            limits.max_connections,
            limits.max_connections_per_ip
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
/// Pipelined lines read this long after the first of their batch get the batch written (and
/// its log lines handed over): the log writer puts lines in time order only within its
/// hold (`logs::reorder`), and a client waits no longer for its first replies.
const MAX_PENDING_REPLY_NANOS: i128 = 20_000_000;

/// A connection keeps its line buffer for the next line up to this size.
const MAX_KEPT_LINE_BYTES: usize = 64 * 1024;

/// Who is on the other end of a connection.
pub(crate) enum Role {
    Client,
    /// A client that already said HELLO once and was refused: a connection gets one HELLO.
    RefusedHello,
    /// Said HELLO as a neighbour and was sent a CHALLENGE: it must prove the secret with
    /// AUTH before anything else.
    Authenticating {
        from: String,
        dialler_nonce: String,
        our_nonce: String,
    },
    /// A neighbour that proved the secret (or said HELLO, with open links): the connection
    /// becomes a peer session (`session.rs`).
    Peer(String),
    /// Failed its AUTH: the connection is closed once its refusal is written.
    Closing,
    /// The operator's tool said `HERD OPERATOR` and was sent a challenge: its one command
    /// must prove the secret over both nonces (`operator.rs`).
    Operator {
        tool_nonce: String,
        our_nonce: String,
    },
    /// An operator's proved `RECORDS`: the connection streams them, then closes.
    Records(Vec<u16>),
}

/// What kind of answer a line got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answer {
    /// Logged as usual.
    Normal,
    /// An IAMAT under strict durability: its reply waits for the flush and becomes a
    /// refusal if the update cannot be made durable.
    Strict,
    /// A `HERD STATUS` probe: logged only with `logs.level: debug`, so an operator's polling
    /// does not fill the log.
    Quiet,
}

/// The strict IAMAT replies of the batch being built, so that they can be turned into
/// refusals (`? <line>`) when their updates cannot be made durable: a reply never
/// acknowledges an update that is not on disk.
#[derive(Default)]
struct Refusable {
    /// Where each reply sits in the replies, and its line in the log batch (if logged).
    replies: Vec<(Range<usize>, Option<Range<usize>>)>,
    /// The IAMAT lines as received, back to back, and where each ends.
    lines: Vec<u8>,
    ends: Vec<usize>,
}

impl Refusable {
    fn push(&mut self, reply: Range<usize>, logged: Option<Range<usize>>, line: &[u8]) {
        self.replies.push((reply, logged));
        self.lines.extend_from_slice(line);
        self.ends.push(self.lines.len());
    }

    /// Rewrites every strict reply in `out` (and its log line) as a refusal.
    fn refuse(&self, out: &mut Vec<u8>, log: &mut LogBatch, who: &str, why: NotDurable) {
        let mut rebuilt = Vec::with_capacity(out.len() + self.lines.len());
        let (mut from, mut start) = (0, 0);
        let (mut log_ranges, mut log_lines) = (Vec::new(), Vec::new());
        let now = now_nanos();
        for ((reply, logged), &end) in self.replies.iter().zip(&self.ends) {
            let line = &self.lines[start..end];
            start = end;
            rebuilt.extend_from_slice(&out[from..reply.start]);
            let refusal_at = rebuilt.len();
            push_invalid(&mut rebuilt, line);
            from = reply.end;
            if let Some(range) = logged {
                log_ranges.push(range.clone());
                log_lines.push(log.format_line(now, who, ">", &rebuilt[refusal_at..]));
            }
        }
        rebuilt.extend_from_slice(&out[from..]);
        *out = rebuilt;
        log.replace(&log_ranges, &log_lines);
        // Each refusal is in the wire log; say why at most once a second.
        static LAST_WARNING_SECS: AtomicU64 = AtomicU64::new(0);
        let secs = (now / 1_000_000_000) as u64;
        if LAST_WARNING_SECS.swap(secs, Ordering::Relaxed) != secs {
            tracing::warn!(
                "IAMATs refused under strict durability: {}",
                match why {
                    NotDurable::Unhealthy => "the store cannot write (see herdctl status)",
                    NotDurable::TimedOut => "a flush took longer than strict_wait_ms",
                }
            );
        }
    }

    fn clear(&mut self) {
        self.replies.clear();
        self.lines.clear();
        self.ends.clear();
    }
}

async fn handle_connection<R, W>(
    node: &Node,
    read_half: R,
    mut writer: W,
    remote: SocketAddr,
    slot: Slot,
    transport: Transport,
) -> Result<()>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let mut reader = BufReader::with_capacity(16 * 1024, read_half);
    let mut conn = Connection {
        role: Role::Client,
        remote,
        transport,
        handoff: Handoff::default(),
        durable_at: 0,
    };
    let who = remote.to_string();
    // Replies to the lines read so far, written together; their log lines, handed to the
    // log writer after each write.
    let mut out = Vec::new();
    let mut log = node.log.batch();
    // What the replies in `out` wait for before they are written: their updates on every up
    // neighbour's socket (flood before reply) and, under strict durability, the store write
    // (0: none); and the strict replies that become refusals if it cannot be made durable.
    let mut refusable = Refusable::default();
    // What the lines answered so far count in the node's metrics, handed over before each
    // write of replies.
    let mut tally = RequestTally::new(&node.metrics);

    // The herd file as it is when the connection opens: a reload applies to new connections.
    let config_at_start = node.config();
    let limits = config_at_start.limits;

    // The line being answered (its buffer is reused from line to line).
    let mut line = Vec::new();
    let mut first_line = true;
    // When the first line of the replies in `out` was read.
    let mut batch_began = 0;
    // Set once a reply has been written (for `limits.close_after_reply`).
    let mut answered = false;
    // The clock read that stamped the last reply, while nothing has waited since: a line
    // already whole in the buffer is taken at that moment, so it is its receipt time too
    // (one clock read per pipelined line, not two).
    let mut last_stamp: Option<i128> = None;
    // Starts loading the table's records for the lines buffered behind the one at hand.
    let mut lookahead = Lookahead::default();
    loop {
        if limits.close_after_reply && answered && matches!(conn.role, Role::Client) {
            last_stamp = None;
            // Everything sent has been answered: a client that reads until the server
            // closes gets its EOF once it has been quiet for the grace period.
            match tokio::time::timeout(CLOSE_AFTER_REPLY_GRACE, reader.fill_buf()).await {
                Ok(Ok(more)) if !more.is_empty() => {}
                _ => break,
            }
        }
        // No complete line for `idle_timeout` (idle, or a line dribbled too slowly): close.
        // A socket that has said nothing yet, or is in a handshake, gets the short deadline.
        let (wait, key) = match first_line
            || slot.is_handshake()
            || matches!(conn.role, Role::Authenticating { .. })
        {
            true => (
                limits.first_line_timeout.min(limits.idle_timeout),
                "limits.first_line_timeout_s",
            ),
            false => (limits.idle_timeout, "limits.idle_timeout_s"),
        };
        // A line already whole in the buffer (pipelined) is taken as it is: no read, so no
        // deadline to set.
        let buffered = take_buffered_line(&mut reader, limits.max_line_bytes, &mut line);
        let length = if buffered {
            None
        } else {
            let Ok(read) =
                tokio::time::timeout(wait, read_line(&mut reader, limits.max_line_bytes)).await
            else {
                tracing::info!(
                    "{remote}: no complete line for {} s ({key}); closing",
                    wait.as_secs()
                );
                break;
            };
            match read? {
                None => break,
                Some(Line::Complete(read)) => {
                    line = read;
                    None
                }
                Some(Line::TooLong(prefix, length)) => {
                    line = prefix;
                    Some(length)
                }
            }
        };
        first_line = false;
        lookahead.before_line(&node.table, reader.buffer());
        let received = match (buffered, last_stamp.take()) {
            (true, Some(stamp)) => stamp,
            _ => now_nanos(),
        };
        if out.is_empty() {
            batch_began = received;
        }
        // On a handshake slot only a neighbour's handshake is heard.
        if slot.is_handshake() && !is_handshake_line(&line, &conn.role) {
            break;
        }
        // A WHATSAT may wait on its places lookup (an index still loading, a web service):
        // the lines before it go to the log writer first, so they are not held back that
        // long (the writer orders lines only within `logs.order_window_ms`).
        if refusable.replies.is_empty() && line.starts_with(b"WHATSAT ") {
            node.log.submit(&mut log);
        }
        let reply_start = out.len();
        let (answer, command) =
            respond(node, &config_at_start, &mut conn, &line, received, &mut out).await;
        let result = if out[reply_start..].starts_with(b"? ") {
            RequestResult::Invalid
        } else {
            RequestResult::Ok
        };
        let replied = now_nanos();
        last_stamp = Some(replied);
        tally.request(
            command,
            result,
            replied.saturating_sub(received).max(0) as u64,
        );
        let mut logged_reply = None;
        if answer != Answer::Quiet || node.log.logs_status() {
            log.line(received, &who, "<", &line, length);
            if out.len() > reply_start {
                logged_reply = Some(log.line(replied, &who, ">", &out[reply_start..], None));
            }
        }
        if answer == Answer::Strict {
            refusable.push(reply_start..out.len(), logged_reply, &line);
        }
        // An over-long line's memory goes now, not when the connection ends.
        if line.capacity() > MAX_KEPT_LINE_BYTES {
            line = Vec::new();
        }
        if let Role::Peer(from) = conn.role {
            // A proved neighbour moves to its own room, giving back the slot it came in on.
            let Some(permit) = node.peer_slots.try_peer(&from) else {
                tracing::warn!(
                    "{remote}: {from} already has {SLOTS_PER_NEIGHBOUR} connections open; \
                     closing this one"
                );
                return Ok(());
            };
            drop(slot);
            let _slot = Slot::Peer(permit);
            // The handshake is done (its WELCOME may be in `out`): the rest is a peer session.
            tally.flush();
            write_within(&mut writer, &out, config_at_start.links.write_timeout).await?;
            node.log.submit(&mut log);
            let _peer = node.peer_sessions.enter();
            let ended = match node.peers.link(&from) {
                // A reload that drops the link ends this end of it too.
                Some(link) => tokio::select! {
                    ended = session::run_accepted(
                        node,
                        &from,
                        // What is already buffered is read first.
                        session::after_handshake(reader),
                        Box::new(writer),
                        match &conn.transport {
                            Transport::LinkTls(cert) => Some(cert.clone()),
                            _ => None,
                        },
                    ) => ended,
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
        if matches!(conn.role, Role::Closing) {
            break;
        }
        if let Role::Records(buckets) = &conn.role {
            tally.flush();
            write_within(&mut writer, &out, limits.write_timeout).await?;
            node.log.submit(&mut log);
            operator::stream_records(node, buckets, &mut writer).await?;
            writer.shutdown().await?;
            return Ok(());
        }
        // Replies to lines that are already buffered share one write; each reply stays
        // contiguous either way.
        if !out.is_empty()
            && (!has_buffered_line(reader.buffer())
                || out.len() >= MAX_PENDING_REPLY_BYTES
                || received - batch_began >= MAX_PENDING_REPLY_NANOS)
        {
            // The release and the write wait: the next line's receipt is read afresh.
            last_stamp = None;
            // The log lines go now unless a strict reply among them may still become a
            // refusal: the release can wait on slow neighbours, and the log writer puts
            // lines in time order only within its hold (`logs::reorder`).
            if refusable.replies.is_empty() {
                node.log.submit(&mut log);
            }
            // Pipelined IAMATs wait once for the whole batch (group commit per connection).
            if let Err(why) = conn.release(node, &config_at_start).await {
                tally.recount(
                    CommandKind::Iamat,
                    RequestResult::Refused,
                    refusable.replies.len() as u64,
                );
                refusable.refuse(&mut out, &mut log, &who, why);
            }
            refusable.clear();
            // Logged and counted before the write, which waits as long as the client takes
            // to read.
            node.log.submit(&mut log);
            tally.flush();
            write_within(&mut writer, &out, limits.write_timeout).await?;
            answered = true;
            if out.capacity() > MAX_PENDING_REPLY_BYTES {
                out = Vec::new(); // a big batch (e.g. an over-long line's copy): give it back
            } else {
                out.clear();
            }
        }
    }
    if !out.is_empty() {
        if let Err(why) = conn.release(node, &config_at_start).await {
            tally.recount(
                CommandKind::Iamat,
                RequestResult::Refused,
                refusable.replies.len() as u64,
            );
            refusable.refuse(&mut out, &mut log, &who, why);
        }
        node.log.submit(&mut log);
        tally.flush();
        write_within(&mut writer, &out, limits.write_timeout).await?;
    }
    node.log.submit(&mut log);
    writer.shutdown().await?;
    Ok(())
}

/// One connection on the client port, between its lines: who is on the other end, how it
/// came, and what the replies answered so far wait for before they are written.
pub(crate) struct Connection {
    pub(crate) role: Role,
    pub(crate) remote: SocketAddr,
    pub(crate) transport: Transport,
    /// The neighbours the pending replies' updates were queued for (flood before reply).
    handoff: Handoff,
    /// Under strict durability, the update the pending replies wait for on disk (0: none).
    durable_at: u64,
}

impl Connection {
    /// A plain-text client's connection from 127.0.0.1, for unit tests of the commands.
    #[cfg(test)]
    pub(crate) fn for_tests() -> Connection {
        Connection {
            role: Role::Client,
            remote: SocketAddr::from(([127, 0, 0, 1], 40000)),
            transport: Transport::Plain,
            handoff: Handoff::default(),
            durable_at: 0,
        }
    }

    /// Where an IAMAT notes the neighbours its update was queued for.
    pub(crate) fn handoff(&mut self) -> &mut Handoff {
        &mut self.handoff
    }

    /// Under strict durability: the pending replies also wait for update `seq` on disk.
    pub(crate) fn wait_durable(&mut self, seq: u64) {
        self.durable_at = self.durable_at.max(seq);
    }

    /// The release point: waits until the pending replies may be written: their updates were
    /// handed to every up neighbour (at most `links.write_timeout_ms`: a link stalled longer
    /// is being dropped) and, under strict durability, are on disk. An error: the updates are
    /// not on disk, so their replies must not acknowledge them.
    async fn release(&mut self, node: &Node, config: &HerdConfig) -> Result<(), NotDurable> {
        self.handoff.wait(config.links.write_timeout).await;
        node.wait_durable(std::mem::take(&mut self.durable_at))
            .await
    }
}

/// Whether an IAMAT or WHATSAT names a client id longer than `limits.max_client_id_bytes`.
fn client_id_too_long(command: &Command<'_>, max: usize) -> bool {
    match command {
        Command::Iamat(iamat) => iamat.client.len() > max,
        Command::Whatsat(query) => query.client.len() > max,
        Command::Peer(_) => false,
    }
}

/// Appends the reply to one line to `out`, if it gets one (AUTH does not). An IAMAT notes in
/// the connection what its reply waits for (the neighbours its update was queued for and,
/// under strict durability, the update that must be on disk).
async fn respond(
    node: &Node,
    config: &HerdConfig,
    conn: &mut Connection,
    line: &[u8],
    received: i128,
    out: &mut Vec<u8>,
) -> (Answer, CommandKind) {
    let Some(command) = protocol::parse_line(line) else {
        push_invalid(out, line);
        return (Answer::Normal, CommandKind::Other);
    };
    let kind = match &command {
        Command::Iamat(_) => CommandKind::Iamat,
        Command::Whatsat(_) => CommandKind::Whatsat,
        Command::Peer(PeerMessage::StatusQuery) => CommandKind::Status,
        Command::Peer(PeerMessage::Hello { .. } | PeerMessage::Auth { .. }) => {
            CommandKind::Handshake
        }
        Command::Peer(_) => CommandKind::Other,
    };
    let answer = answer(node, config, conn, command, line, received, out).await;
    (answer, kind)
}

/// [`respond`]'s answer to a parsed line: each command's own module appends its reply, or
/// the line is refused with `? <line>`.
async fn answer(
    node: &Node,
    config: &HerdConfig,
    conn: &mut Connection,
    command: Command<'_>,
    line: &[u8],
    received: i128,
    out: &mut Vec<u8>,
) -> Answer {
    let answered = match command {
        _ if client_id_too_long(&command, config.limits.max_client_id_bytes) => None,
        Command::Iamat(iamat) => cmd::iamat::answer(node, config, conn, &iamat, received, out),
        Command::Whatsat(query) => cmd::whatsat::answer(node, &query, out)
            .await
            .map(|()| Answer::Normal),
        Command::Peer(PeerMessage::Hello {
            server,
            version,
            nonce,
        }) => handshake::on_hello(node, conn, server, version, nonce).map(|welcome| {
            out.extend_from_slice(welcome.as_bytes());
            Answer::Normal
        }),
        Command::Peer(PeerMessage::Auth { proof }) => {
            handshake::on_auth(node, conn, proof).map(|welcome| {
                out.extend_from_slice(welcome.as_bytes());
                Answer::Normal
            })
        }
        Command::Peer(PeerMessage::StatusQuery) => {
            out.extend_from_slice(format_status(&node.figures()).as_bytes());
            Some(Answer::Quiet)
        }
        Command::Peer(PeerMessage::Operator { nonce }) => {
            cmd::control::challenge(node, conn, nonce, out)
        }
        Command::Peer(PeerMessage::Control { proof, command }) => {
            cmd::control::command(node, config, conn, proof, command, out)
        }
        // Updates, anti-entropy and WANT belong to a peer session; on a connection that
        // did not say HELLO (and prove the secret) they are refused, never applied. The
        // rest are never a client port's to answer.
        Command::Peer(
            PeerMessage::Update(_)
            | PeerMessage::Sync(_)
            | PeerMessage::Digest(..)
            | PeerMessage::Want(_)
            | PeerMessage::Welcome { .. }
            | PeerMessage::Challenge { .. }
            | PeerMessage::Fault(_)
            | PeerMessage::AckRequest
            | PeerMessage::Ack(_),
        ) => None,
    };
    answered.unwrap_or_else(|| {
        push_invalid(out, line);
        Answer::Normal
    })
}

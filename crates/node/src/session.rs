//! One peer connection, after its handshake, at either end of a link.
//!
//! A session is a reader and a writer running side by side. The reader applies what the
//! neighbour sends (flooded updates, anti-entropy records) and hands requests that need an
//! answer (a digest, a WANT) to the writer; it never waits on the writer, so a big
//! anti-entropy stream in one direction cannot deadlock against floods in the other.
//!
//! The dialled end's writer also forwards this node's updates from the link's bounded queue,
//! starts the anti-entropy exchange (at link-up when this node's name is the smaller, or when
//! the link was dropped with updates lost, and every `reconnect.sync_interval_s`), and
//! declares the link dead when the neighbour answers nothing for `links.answer_timeout_ms`
//! after a digest. Every write has a deadline (`links.write_timeout_ms`).
//!
//! Acknowledgements: a dialler whose neighbour's WELCOME offered them asks with `HERD ACKS`
//! as its session's first line; from then on the accepting end's reader, after each read
//! burst that brought an update of the dialler's own (the only kind client replies wait
//! for), has its writer send `HERD ACK <n>` (the `HERD AT` lines received and applied on
//! the connection so far), and the dialling end's reader hands each to its link, which
//! releases the client replies waiting for them (`peers.rs`).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::{mpsc, watch};

use super::faults::{self, Dice, LinkFault};
use super::lines::{read_line, write_within, Line, MAX_LINE_BYTES};
use super::link_stats::LinkStats;
use super::peer_input::{self, Dropped};
use super::peers::{Batch, Link};
use super::sync::{self, Inbound};
use super::table::Lookahead;
use super::{Arrival, Node};
use crate::metrics::Tally;
use herd_config::tls::{BoxRead, BoxWrite, PeerCert};
use herd_logs::{LogBatch, WireLog};
use herd_wire::clock::now_nanos;
use herd_wire::protocol::{
    self, format_ack, format_ack_request, format_fault, format_want, push_update, Command,
    PeerMessage,
};
use herd_wire::record::AtRecord;

/// Updates taken from the link's queue and written in one go.
const MAX_BATCH: usize = 512;
/// Requests (digests to answer, WANTs to serve) the reader may hand the writer before it
/// starts dropping them; an exchange needs one at a time, and a lost one is redone at the
/// next period.
const PENDING_REQUESTS: usize = 8;
/// Flood log lines a reader gathers before handing them to the log writer mid-burst.
const LOG_BURST_BYTES: usize = 64 << 10;
/// ... or once its first line is this old, so a steady flood's lines reach the log writer
/// well within the hold it puts lines in time order in (`logs::reorder`).
const LOG_BURST_NANOS: i128 = 20_000_000;

/// Runs the session on a connection this node dialled, until it fails or closes.
pub async fn run_dialled(
    node: &Node,
    link: &Link,
    (reader, writer): (BoxRead, BoxWrite),
    cert: Option<PeerCert>,
) -> Result<()> {
    link.stats.transport(cert.as_ref());
    run(node, &link.name, buffered(reader), writer, Some(link)).await
}

/// Bytes a session reads off its socket at most at a time: a flood's lines arrive in bursts,
/// and each read is a system call.
const READ_BUFFER: usize = 64 << 10;

/// A session's reader over `reader`: the only buffer between the socket and the session
/// (see [`after_handshake`]).
pub fn buffered(reader: BoxRead) -> BufReader<BoxRead> {
    BufReader::with_capacity(READ_BUFFER, reader)
}

/// The reader of an accepted connection whose handshake was read through `handshake`: what
/// that buffer holds still (lines the neighbour sent right after its handshake), then the
/// connection itself, so a session's bytes are not copied through two buffers.
pub fn after_handshake<R>(handshake: BufReader<R>) -> BufReader<BoxRead>
where
    R: tokio::io::AsyncRead + Send + Unpin + 'static,
{
    use tokio::io::AsyncReadExt as _;
    let held = std::io::Cursor::new(handshake.buffer().to_vec());
    buffered(Box::new(held.chain(handshake.into_inner())))
}

/// Runs the session on a connection the neighbour `from` dialled (it said HELLO and, with a
/// secret, proved it), until it fails or closes.
pub async fn run_accepted(
    node: &Node,
    from: &str,
    reader: BufReader<BoxRead>,
    writer: BoxWrite,
    cert: Option<PeerCert>,
) -> Result<()> {
    if let Some(link) = node.peers.link(from) {
        link.stats.transport(cert.as_ref());
    }
    run(node, from, reader, writer, None).await
}

/// What the reader asks the writer to send.
enum Request {
    /// The neighbour sent its digest: answer with the differing records and a WANT.
    AnswerDigest(Option<Vec<u64>>),
    /// The neighbour answered this node's digest and wants these buckets.
    SendWanted(Vec<u16>, Inbound),
    /// The neighbour said it holds a link fault and this end holds none: say so
    /// (`HERD FAULT -`), so it lets go of its own (see `faults.rs`).
    NoFault,
}

/// What the reader and the writer both look at.
struct Shared {
    /// When this node's digest went out with no WANT back yet, and what has arrived since.
    exchange: Mutex<Option<Inbound>>,
    last_heard: Mutex<Instant>,
}

impl Shared {
    fn exchange(&self) -> std::sync::MutexGuard<'_, Option<Inbound>> {
        self.exchange.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn last_heard(&self) -> Instant {
        *self.last_heard.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn heard(&self) {
        *self.last_heard.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }
}

async fn run(
    node: &Node,
    neighbour: &str,
    reader: BufReader<BoxRead>,
    writer: BoxWrite,
    link: Option<&Link>,
) -> Result<()> {
    let shared = Shared {
        exchange: Mutex::new(None),
        last_heard: Mutex::new(Instant::now()),
    };
    // Subscribed before the fault is read, so no change in between goes unseen.
    let mut watched = node.peers.link(neighbour).map(|l| l.fault.watch());
    let fault = watched.as_ref().and_then(|w| w.borrow().clone());
    if fault.as_ref().is_some_and(|f| f.cut) {
        return run_cut(node, neighbour, reader, writer, fault).await;
    }
    let (requests, pending) = mpsc::channel(PENDING_REQUESTS);
    // The reader publishes how many updates it applied; the writer acknowledges the latest.
    let (applied, acks) = watch::channel(0);
    // The link's counters (both connections of a link count into them); a session whose
    // link a reload just dropped counts into nothing anyone reads.
    let counted = node.peers.link(neighbour);
    let unlisted = LinkStats::default();
    let stats = counted.as_ref().map_or(&unlisted, |l| &l.stats);
    tokio::select! {
        read = read_side(node, neighbour, reader, &shared, requests, stats, link, &applied) => read,
        written = write_side(
            node, neighbour, writer, &shared, pending, link, stats, fault, acks
        ) => written,
        _ = faults::changed(&mut watched) => {
            bail!("its link fault changed (herdctl link); reconnecting to apply it")
        }
    }
}

/// A session on a cut link exchanges only which fault each end holds (so an end that
/// restarted clears the other's, see `faults.rs`), then ends.
async fn run_cut(
    node: &Node,
    neighbour: &str,
    mut reader: BufReader<BoxRead>,
    mut writer: BoxWrite,
    fault: Option<LinkFault>,
) -> Result<()> {
    let id = fault.map(|f| f.id);
    let deadline = node.config().links.write_timeout;
    let ours = format_fault(id.as_deref());
    write_within(&mut writer, ours.as_bytes(), deadline).await?;
    node.log.one(neighbour, ">", ours.trim_end().as_bytes());
    let heard = async {
        while let Some(Line::Complete(line)) = read_line(&mut reader, MAX_LINE_BYTES).await? {
            node.log.one(neighbour, "<", &line);
            if let Some(Command::Peer(PeerMessage::Fault(theirs))) = protocol::parse_line(&line) {
                faults::neighbour_holds(node, neighbour, theirs);
                break;
            }
        }
        anyhow::Ok(())
    };
    let _ = tokio::time::timeout(CUT_HEARING, heard).await;
    bail!("the link is cut (herdctl link cut); nothing exchanged")
}

/// How long a session on a cut link waits to hear which fault the neighbour holds.
const CUT_HEARING: Duration = Duration::from_secs(3);

/// Applies the neighbour's lines until EOF (`Ok`) or an error. `link` is this node's link
/// on a dialled connection (the neighbour's acknowledgements go to it); `applied` is where
/// an accepted connection's reader says how many updates it applied, once asked to.
// Each argument is a different part of the session; a struct would only rename them.
#[allow(clippy::too_many_arguments)]
async fn read_side(
    node: &Node,
    neighbour: &str,
    mut reader: BufReader<BoxRead>,
    shared: &Shared,
    requests: mpsc::Sender<Request>,
    stats: &LinkStats,
    link: Option<&Link>,
    applied: &watch::Sender<u64>,
) -> Result<()> {
    // The neighbour's end sends a digest every `sync_interval` (which this side answers), so
    // a link quiet for three periods is gone whatever `limits.idle_timeout_s` says.
    let config = node.config();
    let idle = config
        .limits
        .idle_timeout
        .max(3 * config.reconnect.sync_interval);
    let max_line = config.limits.max_line_bytes.max(MAX_LINE_BYTES);
    let mut input = Input {
        node,
        neighbour,
        config,
        shared,
        requests,
        stats,
        // Flooded records are logged as they arrive, handed to the log writer a burst at a
        // time rather than once per line.
        log: BurstLog {
            log: &node.log,
            batch: node.log.batch(),
            began: 0,
        },
        // Flooded records that were new here are forwarded a read burst at a time too (one
        // lock round and one writer wake-up per link), before the reader can wait for more.
        fresh: BurstForward {
            node,
            from: neighbour,
            records: Vec::new(),
        },
        scratch: Vec::new(),
        link,
        applied,
        updates: 0,
        asked: false,
        owed: false,
        delays: Tally::default(),
    };
    // When the bytes now buffered were read off the socket: the lines among them are
    // stamped with it (one clock read per read, not per line).
    let mut received = now_nanos();
    let mut lookahead = Lookahead::default();
    loop {
        // What a read brought is handled in place while whole lines of it are buffered: no
        // copy, no allocation and no clock read per line.
        if let Some(end) = memchr::memchr(b'\n', reader.buffer()).filter(|&end| end <= max_line) {
            lookahead.before_line(&node.table, &reader.buffer()[end + 1..]);
            input.line(strip_cr(&reader.buffer()[..end]), received)?;
            reader.consume(end + 1);
            if input.fresh.records.len() >= MAX_BATCH {
                input.fresh.flush();
            }
            if input.log.batch.as_bytes().len() >= LOG_BURST_BYTES {
                input.log.submit();
            }
            continue;
        }
        input.fresh.flush();
        input.acknowledge();
        input.count_delays();
        let now = now_nanos();
        if !input.log.batch.is_empty() && now - input.log.began >= LOG_BURST_NANOS {
            input.log.submit();
        }
        if reader.buffer().is_empty() {
            // Wait for the socket; what it brings is handled by the loop above.
            let read = async { reader.fill_buf().await.map(|bytes| bytes.len()) };
            let Some(read) = input
                .log
                .read_holding(read, idle, now, &node.config())
                .await
            else {
                bail!("nothing received for {} s", idle.as_secs());
            };
            if read? == 0 {
                return Ok(());
            }
            received = now_nanos();
            shared.heard();
            continue;
        }
        // Part of a line is buffered: read the socket for the rest of it.
        let read = read_line(&mut reader, max_line);
        let Some(line) = input
            .log
            .read_holding(read, idle, now, &node.config())
            .await
        else {
            bail!("nothing received for {} s", idle.as_secs());
        };
        received = now_nanos();
        shared.heard();
        match line? {
            None => return Ok(()),
            Some(Line::Complete(line)) => {
                lookahead.before_line(&node.table, reader.buffer());
                input.line(&line, received)?
            }
            Some(Line::TooLong(start, _)) => bail!(
                "sent a line over {max_line} bytes: {}",
                node.log.quoted(&start)
            ),
        }
    }
}

/// `\r\n` is accepted as a line end.
fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// The reading half of a session and what it keeps between lines.
struct Input<'a> {
    node: &'a Node,
    neighbour: &'a str,
    /// The herd file the session started with.
    config: std::sync::Arc<herd_config::config::HerdConfig>,
    shared: &'a Shared,
    requests: mpsc::Sender<Request>,
    stats: &'a LinkStats,
    log: BurstLog<'a>,
    fresh: BurstForward<'a>,
    /// Where a flood's log line is put together.
    scratch: Vec<u8>,
    /// This node's link, on the connection it dialled (acknowledgements arrive there).
    link: Option<&'a Link>,
    /// Where the reader of an accepted connection says how many updates it applied.
    applied: &'a watch::Sender<u64>,
    /// `HERD AT` lines received on this connection; whether the dialler asked for
    /// acknowledgements; whether one is owed. Only the dialler's own updates (its
    /// clients') have replies waiting for them: a burst without one is acknowledged with the
    /// next that has one (the count covers both).
    updates: u64,
    asked: bool,
    owed: bool,
    /// Propagation delays of the floods read since the end of the last read burst, added
    /// to the node's histogram then (observed one by one, two atomic adds per flood line on
    /// lines every session writes).
    delays: Tally,
}

impl Drop for Input<'_> {
    /// A session that ends mid-burst still counts the delays it read.
    fn drop(&mut self) {
        self.count_delays();
    }
}

impl Input<'_> {
    /// At the end of a read burst: its floods' propagation delays into the node's metrics.
    fn count_delays(&mut self) {
        self.node.metrics.propagation_delay.add(&mut self.delays);
    }

    /// At the end of a read burst, once what it brought is applied: one acknowledgement, if
    /// one is owed.
    fn acknowledge(&mut self) {
        if self.asked && self.owed {
            self.owed = false;
            self.applied.send_replace(self.updates);
        }
    }

    /// Logs a line received from the neighbour.
    fn log_received(&mut self, line: &[u8], received: i128) {
        if self.log.batch.is_empty() {
            self.log.began = received;
        }
        self.log
            .batch
            .line(received, self.neighbour, "<", line, None);
    }

    /// Handles one line from the neighbour, read off the socket at `received`; `Err` ends
    /// the session.
    fn line(&mut self, line: &[u8], received: i128) -> Result<()> {
        let (node, neighbour, stats) = (self.node, self.neighbour, self.stats);
        stats.bytes_received.add(line.len() as u64 + 1);
        match protocol::parse_line(line) {
            Some(Command::Peer(PeerMessage::Update(fields))) => {
                // Counted whatever becomes of it: the dialler counts what it wrote.
                self.updates += 1;
                self.owed |= fields.origin == neighbour;
                if let Err(why) =
                    peer_input::check_live(node, &self.config, &fields, line, received)
                {
                    peer_input::refuse(node, neighbour, why, line);
                    return Ok(());
                }
                if let Some(skew) = protocol::skew_nanos(fields.skew) {
                    // The origin received it at the client's time plus the skew.
                    let delay = received - (fields.time.as_nanos() + skew);
                    node.metrics.propagation_delay.observe_into(
                        &mut self.delays,
                        delay.clamp(0, i128::from(u64::MAX)) as u64,
                    );
                }
                let record = AtRecord::from_wire(&fields, line);
                let new = node.apply_flooded(&record, &fields);
                if new {
                    self.fresh.records.push(record);
                }
                stats.records_received.inc();
                match new {
                    true => stats.floods_new.inc(),
                    false => stats.floods_stale.inc(),
                }
                let scratch = &mut self.scratch;
                scratch.clear();
                scratch.extend_from_slice(line);
                scratch.extend_from_slice(match new {
                    true => b" (new, flooded)",
                    false => b" (stale, dropped)",
                });
                if self.log.batch.is_empty() {
                    self.log.began = received;
                }
                self.log.batch.line(received, neighbour, "<", scratch, None);
            }
            Some(Command::Peer(PeerMessage::Sync(fields))) => {
                self.fresh.flush();
                let now = now_nanos();
                if let Err(why) = peer_input::check_live(node, &self.config, &fields, line, now) {
                    peer_input::refuse(node, neighbour, why, line);
                    return Ok(());
                }
                let record = AtRecord::from_wire(&fields, line);
                let new = node.accept_from_peer(record, neighbour, Arrival::Sync);
                stats.records_received.inc();
                stats.sync_records_received.inc();
                if let Some(inbound) = self.shared.exchange().as_mut() {
                    inbound.count(new, line.len() + 1);
                }
            }
            Some(Command::Peer(PeerMessage::Digest(theirs, horizons))) => {
                // Not comparable (a horizon moved in between): answered with no buckets.
                let theirs = sync::comparable(&node.table, horizons).then_some(theirs);
                hand_over(&self.requests, Request::AnswerDigest(theirs), neighbour);
            }
            Some(Command::Peer(PeerMessage::Want(buckets))) => {
                // Only the answer to this node's own digest: an unasked WANT would hand
                // over whole buckets of the table for a few bytes.
                let Some(inbound) = self.shared.exchange().take() else {
                    peer_input::refuse(node, neighbour, Dropped::UnaskedWant, line);
                    return Ok(());
                };
                hand_over(
                    &self.requests,
                    Request::SendWanted(buckets, inbound),
                    neighbour,
                );
            }
            Some(Command::Peer(PeerMessage::Fault(theirs))) => {
                self.log_received(line, received);
                if faults::neighbour_holds(node, neighbour, theirs) {
                    hand_over(&self.requests, Request::NoFault, neighbour);
                }
            }
            // Asked on the connection the neighbour dialled, where its updates arrive.
            Some(Command::Peer(PeerMessage::AckRequest)) if self.link.is_none() => {
                self.log_received(line, received);
                self.asked = true;
                self.owed = false;
                self.applied.send_replace(self.updates);
            }
            Some(Command::Peer(PeerMessage::Ack(count))) => {
                self.log_received(line, received);
                // Only on the connection this node dialled: its updates go out there.
                match self.link.map(|l| l.acknowledged(count)) {
                    Some(Ok(())) => stats.acks_received.inc(),
                    Some(Err(why)) => {
                        tracing::debug!("{neighbour}: refused HERD ACK {count}: {why}");
                        peer_input::refuse(node, neighbour, Dropped::BadAck, line);
                    }
                    None => peer_input::refuse(node, neighbour, Dropped::BadAck, line),
                }
            }
            _ if line.starts_with(b"HERD ACK") => {
                self.log_received(line, received);
                peer_input::refuse(node, neighbour, Dropped::BadAck, line);
            }
            // The neighbour refused something this side sent: the link is not what this side
            // thinks it is, so drop it and let the handshake run again.
            _ if line.starts_with(b"? ") => bail!("refused: {}", node.log.quoted(line)),
            _ => tracing::warn!(
                "unexpected line from {neighbour}: {}",
                node.log.quoted(line)
            ),
        }
        Ok(())
    }
}

/// Flooded records new to this node, not yet forwarded; forwarded on drop too, so what was
/// applied before an error is never kept from the neighbours.
struct BurstForward<'a> {
    node: &'a Node,
    from: &'a str,
    records: Vec<AtRecord>,
}

impl BurstForward<'_> {
    fn flush(&mut self) {
        if !self.records.is_empty() {
            self.node.peers.forward_all(&self.records, self.from, true);
            self.records.clear();
        }
    }
}

impl Drop for BurstForward<'_> {
    fn drop(&mut self) {
        self.flush();
    }
}

/// The reader's log lines not yet handed to the log writer; handed over on drop too, so
/// the lines before an error (or before the session ends) are never lost.
struct BurstLog<'a> {
    log: &'a WireLog,
    batch: LogBatch,
    /// When the batch's first line was read.
    began: i128,
}

impl BurstLog<'_> {
    fn submit(&mut self) {
        self.log.submit(&mut self.batch);
    }

    /// Awaits `read` (a read that must wait for the socket) for at most
    /// `idle` (`None` past it). Lines already gathered are handed to the log writer when
    /// their first is [`LOG_BURST_NANOS`] old (`now`: the clock at the call), not at once:
    /// under a steady flood the reader drains its socket in many small reads, and a
    /// hand-over per read (a wake-up of the log writer each) cost more than the lines. A
    /// quarter of `logs.order_window_ms` at most, so they still reach the writer well within
    /// the hold it orders lines in (none with a window of 0).
    async fn read_holding<T>(
        &mut self,
        read: impl std::future::Future<Output = T>,
        idle: Duration,
        now: i128,
        config: &herd_config::config::HerdConfig,
    ) -> Option<T> {
        let idle_at = tokio::time::Instant::now() + idle;
        tokio::pin!(read);
        if !self.batch.is_empty() {
            let hold = LOG_BURST_NANOS.min(config.logs.order_window.as_nanos() as i128 / 4);
            let left = (self.began + hold - now).max(0) as u64;
            if left > 0 {
                let due = tokio::time::Instant::now() + Duration::from_nanos(left);
                tokio::select! {
                    biased;
                    line = &mut read => return Some(line),
                    _ = tokio::time::sleep_until(due) => {}
                }
            }
            self.submit();
        }
        tokio::time::timeout_at(idle_at, read).await.ok()
    }
}

impl Drop for BurstLog<'_> {
    fn drop(&mut self) {
        self.submit();
    }
}

fn hand_over(requests: &mpsc::Sender<Request>, request: Request, neighbour: &str) {
    if requests.try_send(request).is_err() {
        tracing::warn!(
            "{neighbour} sent anti-entropy requests faster than they can be answered; one was \
             dropped (the next period repeats it)"
        );
    }
}

/// Writes until an error: answers the reader's requests and, on a dialled link, forwards
/// queued updates, runs the periodic exchange and watches for an answer to it.
// Each argument is a different part of the session; a struct would only rename them.
#[allow(clippy::too_many_arguments)]
async fn write_side(
    node: &Node,
    neighbour: &str,
    writer: BoxWrite,
    shared: &Shared,
    mut pending: mpsc::Receiver<Request>,
    link: Option<&Link>,
    stats: &LinkStats,
    fault: Option<LinkFault>,
    mut acks: watch::Receiver<u64>,
) -> Result<()> {
    let config = node.config();
    let deadline = config.links.write_timeout;
    let answer_timeout = config.links.answer_timeout;
    let period = config.reconnect.sync_interval;
    let mut exchange = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    let mut watchdog = tokio::time::interval(watch_period(answer_timeout));
    watchdog.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    // One exchange repairs both directions, and a restart or partition breaks both of a
    // link's one-way connections, so at link-up only the end with the smaller name starts
    // it: a returning server is sent what it missed once, not twice. A link that dropped
    // with updates lost starts it regardless. The link was marked up before the digest is
    // taken, so every update is in the exchange or queued after it (a duplicate is
    // harmless: newer-wins drops it).
    let mut out = Output {
        wire: Wire::new(writer, fault.as_ref(), deadline),
        neighbour,
        deadline,
        buffer: String::new(),
        log: node.log.clone(),
        logged: node.log.batch(),
        loss_percent: fault.as_ref().map_or(0, |f| f.loss_percent),
        dice: Dice::new(),
        stats,
    };
    // Asked first, so the neighbour acknowledges from this session's first update on.
    if link.is_some_and(Link::is_acking) {
        out.write_logged(&format_ack_request()).await?;
    }
    // Then the fault this end holds, if any: a neighbour that does not hold it
    // answers `HERD FAULT -` (it restarted, or was healed), and this end lets go of it.
    if let Some(fault) = &fault {
        out.write_logged(&format_fault(Some(&fault.id))).await?;
    }
    if let Some(link) = link {
        if link.take_repair() || node.name.as_str() < neighbour {
            send_digest(node, shared, &mut out).await?;
        }
    }
    loop {
        tokio::select! {
            next = async { link.expect("guarded").next_batch(MAX_BATCH).await }, if link.is_some() => {
                out.forward(link.expect("guarded"), next?).await?;
            }
            request = pending.recv() => match request {
                Some(Request::AnswerDigest(theirs)) => {
                    let started = Instant::now();
                    let buckets = theirs
                        .map_or_else(Vec::new, |theirs| sync::differing(&node.table, &theirs));
                    let sent = out.stream_records(node, &buckets, link, &mut acks).await?;
                    out.write(format_want(&buckets).as_bytes()).await?;
                    stats.synced();
                    sync::log_answer(neighbour, &buckets, sent, started);
                }
                Some(Request::NoFault) => out.write_logged(&format_fault(None)).await?,
                Some(Request::SendWanted(buckets, inbound)) => {
                    let sent = out.stream_records(node, &buckets, link, &mut acks).await?;
                    stats.synced();
                    sync::log_exchange(neighbour, &buckets, inbound, sent);
                }
                // The reader is gone: the session is ending.
                None => return Ok(()),
            },
            // The sender lives as long as the session: `changed` fails only as it ends.
            Ok(()) = acks.changed() => out.ack(&mut acks).await?,
            _ = exchange.tick(), if link.is_some() => {
                send_digest(node, shared, &mut out).await?;
            }
            _ = watchdog.tick(), if link.is_some() => {
                let since = shared.exchange().as_ref().map(|e| e.started);
                if let Some(sent) = since {
                    let quiet = sent.max(shared.last_heard()).elapsed();
                    if quiet > answer_timeout {
                        bail!(
                            "no answer to this node's digest for {} ms (links.answer_timeout_ms): \
                             declared dead",
                            quiet.as_millis()
                        );
                    }
                }
            }
        }
    }
}

/// Sends this node's digest and starts waiting for the answer (unless an earlier digest is
/// still unanswered: its clock keeps running).
async fn send_digest(node: &Node, shared: &Shared, out: &mut Output<'_>) -> Result<()> {
    {
        let mut exchange = shared.exchange();
        if exchange.is_none() {
            *exchange = Some(Inbound::new());
        }
    }
    out.write(sync::digest_line(&node.table).as_bytes()).await
}

/// The writing half of a session: every write within `links.write_timeout_ms`.
struct Output<'a> {
    wire: Wire,
    neighbour: &'a str,
    deadline: Duration,
    buffer: String,
    /// The node's wire log: each forwarded batch is logged as one batch of lines.
    log: WireLog,
    /// Where a forwarded batch's log lines are put together: kept from batch to batch, so
    /// each starts with room for one like the last (not grown from nothing).
    logged: LogBatch,
    /// A `herdctl link loss` on this link: the share of flooded lines dropped.
    loss_percent: u8,
    dice: Dice,
    stats: &'a LinkStats,
}

/// Where a session's lines go: straight to the socket, or through a delay line when the
/// operator set `herdctl link delay` on the link.
enum Wire {
    Direct(BoxWrite),
    Delayed {
        lines: mpsc::Sender<(tokio::time::Instant, Vec<u8>)>,
        writer: tokio::task::JoinHandle<Result<()>>,
        delay: Duration,
        jitter_ms: u32,
        dice: Dice,
    },
}

/// Lines held in a delay line before the writer waits for room (a long wire's capacity).
const DELAYED_LINES: usize = 4096;

impl Wire {
    fn new(writer: BoxWrite, fault: Option<&LinkFault>, deadline: Duration) -> Wire {
        let Some(fault) = fault.filter(|f| f.delay_ms > 0) else {
            return Wire::Direct(writer);
        };
        let (lines, mut queued) = mpsc::channel::<(tokio::time::Instant, Vec<u8>)>(DELAYED_LINES);
        let writer = tokio::spawn(async move {
            let mut writer = writer;
            while let Some((due, bytes)) = queued.recv().await {
                tokio::time::sleep_until(due).await;
                write_within(&mut writer, &bytes, deadline).await?;
            }
            anyhow::Ok(())
        });
        Wire::Delayed {
            lines,
            writer,
            delay: Duration::from_millis(u64::from(fault.delay_ms)),
            jitter_ms: fault.jitter_ms,
            dice: Dice::new(),
        }
    }

    async fn write(&mut self, bytes: &[u8], deadline: Duration) -> Result<()> {
        match self {
            Wire::Direct(writer) => write_within(writer, bytes, deadline).await,
            Wire::Delayed {
                lines,
                delay,
                jitter_ms,
                dice,
                ..
            } => {
                // In order, like a wire: a line due earlier than the one before it waits
                // for it (jitter never reorders).
                let jitter = i64::from(*jitter_ms);
                let shift = dice.below(2 * jitter as u64 + 1) as i64 - jitter;
                let held = (delay.as_millis() as i64 + shift).max(0) as u64;
                let due = tokio::time::Instant::now() + Duration::from_millis(held);
                if lines.send((due, bytes.to_vec())).await.is_err() {
                    bail!("the delayed link's writer failed (the neighbour took nothing)");
                }
                Ok(())
            }
        }
    }
}

impl Drop for Wire {
    fn drop(&mut self) {
        if let Wire::Delayed { writer, .. } = self {
            writer.abort();
        }
    }
}

impl Output<'_> {
    async fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.wire.write(bytes, self.deadline).await?;
        self.stats.bytes_sent.add(bytes.len() as u64);
        self.count_delayed(bytes);
        Ok(())
    }

    /// Counts the lines of `bytes` a `herdctl link delay` held back.
    fn count_delayed(&self, bytes: &[u8]) {
        if matches!(self.wire, Wire::Delayed { .. }) {
            let lines = bytes.iter().filter(|&&b| b == b'\n').count();
            self.stats.fault_delayed.add(lines as u64);
        }
    }

    /// Writes one line (`line` ends with its newline) and logs it.
    async fn write_logged(&mut self, line: &str) -> Result<()> {
        self.write(line.as_bytes()).await?;
        self.log
            .one(self.neighbour, ">", line.trim_end().as_bytes());
        Ok(())
    }

    /// Acknowledges the updates the reader applied so far (`HERD ACK <n>`).
    async fn ack(&mut self, acks: &mut watch::Receiver<u64>) -> Result<()> {
        let count = *acks.borrow_and_update();
        self.write_logged(&format_ack(count)).await?;
        self.stats.acks_sent.inc();
        Ok(())
    }

    /// Writes a batch of this node's updates and tells the link how far it got.
    async fn forward(&mut self, link: &Link, batch: Batch) -> Result<()> {
        self.buffer.clear();
        let mut count = 0;
        for record in &batch.records {
            if self.loss_percent > 0 && self.dice.below(100) < u64::from(self.loss_percent) {
                self.stats.fault_dropped.inc(); // `herdctl link loss`: anti-entropy repairs it
                continue;
            }
            count += 1;
            push_update(&mut self.buffer, record.line());
        }
        link.sending(count, batch.last_seq);
        let buffer = std::mem::take(&mut self.buffer);
        let written = self.wire.write(buffer.as_bytes(), self.deadline).await;
        self.buffer = buffer;
        written?;
        // Stamped once written: the event is the send, and a stamp taken before a slow
        // write would reach the log writer later than its reorder window.
        let now = now_nanos();
        let written = self.buffer.as_bytes();
        let mut start = 0;
        for end in memchr::memchr_iter(b'\n', written) {
            if end > start {
                self.logged
                    .line(now, self.neighbour, ">", &written[start..end], None);
            }
            start = end + 1;
        }
        self.count_delayed(self.buffer.as_bytes());
        self.stats.floods_sent.add(count);
        self.stats.records_sent.add(count);
        self.stats.bytes_sent.add(self.buffer.len() as u64);
        link.written(batch.last_seq);
        self.log.submit(&mut self.logged);
        Ok(())
    }

    /// Streams this node's records in `buckets`. On a dialled link, updates queued meanwhile
    /// go out between chunks, and on an accepted one acknowledgements, so a long repair holds
    /// back neither the flood nor the client replies waiting for it (and cannot overflow the
    /// queue).
    async fn stream_records(
        &mut self,
        node: &Node,
        buckets: &[u16],
        link: Option<&Link>,
        acks: &mut watch::Receiver<u64>,
    ) -> Result<sync::Sent> {
        let mut stream = sync::SyncStream::new(&node.table, buckets);
        let mut chunk = String::new();
        while stream.next_chunk(&mut chunk) {
            self.write(chunk.as_bytes()).await?;
            if acks.has_changed().unwrap_or(false) {
                self.ack(acks).await?;
            }
            if let Some(link) = link {
                while let Some(batch) = link.ready_batch(MAX_BATCH)? {
                    self.forward(link, batch).await?;
                }
            }
        }
        self.stats.records_sent.add(stream.sent.records);
        self.stats.sync_records_sent.add(stream.sent.records);
        Ok(stream.sent)
    }
}

/// How often the dialled end checks for an answer: a few times per `answer_timeout`.
fn watch_period(answer_timeout: Duration) -> Duration {
    (answer_timeout / 4).clamp(Duration::from_millis(20), Duration::from_secs(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_session_reads_what_the_handshake_left_buffered_first() {
        let wire: &[u8] = b"HERD AUTH x\nHERD DIGEST 1\nHERD AT y\n";
        let mut handshake = BufReader::with_capacity(16, wire);
        let mut first = String::new();
        handshake.read_line(&mut first).await.unwrap();
        assert_eq!(first, "HERD AUTH x\n");
        assert!(!handshake.buffer().is_empty(), "a session line is buffered");
        let mut session = after_handshake(handshake);
        let mut rest = Vec::new();
        while let Some(Line::Complete(line)) = read_line(&mut session, 100).await.unwrap() {
            rest.push(String::from_utf8(line).unwrap());
        }
        assert_eq!(rest, ["HERD DIGEST 1", "HERD AT y"]);
    }
}

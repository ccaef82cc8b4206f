//! The node's side of every link to a neighbour: a bounded queue of updates waiting to be
//! written, the watermark of what was written, and the dialler's wake-up.
//!
//! Each node dials every neighbour and keeps that connection for its own outgoing updates
//! (`dialler.rs`); what a neighbour sends arrives on the neighbour's own dialled connection.
//! Two one-way connections per link mean no race over which end owns the link, and each end
//! reconnects on its own. Both kinds of connection run the same session (`session.rs`).
//!
//! Three promises live here:
//! - **Bounded**: a link queues at most `links.queue` updates. When a neighbour reads too
//!   slowly (or is frozen) and the queue fills, the link is dropped and marked for repair:
//!   the updates it missed come back through anti-entropy once it is re-established. Memory
//!   never grows with how far behind a neighbour is.
//! - **Flood before reply**: every queued update gets a per-link sequence number; the link's
//!   writer publishes how far it has handed updates to the socket, and a neighbour that
//!   speaks acknowledgements (`HERD ACK`, see `AckBook`) says how far it has applied them.
//!   A client's AT reply waits (through a [`Handoff`]) until its update was applied by every
//!   up neighbour that acknowledges, and is on the socket of every other one, so a client
//!   that asks a neighbour right after its reply finds the update there. A neighbour that
//!   does not acknowledge within `links.write_timeout_ms` stops being waited for (beyond its
//!   socket) until its acknowledgements catch up: a frozen neighbour holds replies back once.
//! - **Instant re-link**: when a neighbour's HELLO arrives while this side's link to it is
//!   down, the dialler is woken to dial at once instead of sleeping out its backoff.
//!
//! A reload changes the set of links live ([`Peers::set_neighbours`]): a new link gets its
//! dialler, a dropped one is retired, which ends its dialler and both of its connections.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use tokio::sync::{watch, Notify};

use super::routes::{Next, Routes};
use herd_wire::record::AtRecord;

/// One link to a neighbour.
pub struct Link {
    pub name: String,
    capacity: usize,
    /// True while the handshake is done and the dialler's session is forwarding. While a
    /// link is down, updates are not queued for it: the anti-entropy exchange repairs the gap.
    up: AtomicBool,
    queue: Mutex<Queue>,
    /// Wakes the session's writer when the queue gains updates (or overflows).
    queued: Notify,
    /// Sequence number of the last update handed to the socket, or given up on when the link
    /// dropped: never behind what a [`Handoff`] may be waiting for once the link is down.
    written: AtomicU64,
    /// True while the session acknowledges what it applies (the neighbour's WELCOME said it
    /// can, and no `herdctl link delay` holds the link): replies wait for `acked`.
    acking: AtomicBool,
    /// Sequence number of the last update the neighbour acknowledged, or given up on when the
    /// link dropped.
    acked: AtomicU64,
    /// Set when a reply stopped waiting for an acknowledgement (`links.write_timeout_ms`):
    /// replies wait only for the socket until the acknowledgements catch up.
    ack_late: AtomicBool,
    acks: Mutex<AckBook>,
    /// Wakes the replies waiting on `written` or `acked`.
    progress: Notify,
    /// Wakes the dialler out of its backoff sleep (the neighbour said HELLO: it is back).
    wake: Notify,
    /// Set when the link dropped with updates lost (queue full, stalled writes, no answer):
    /// the next link-up starts an anti-entropy exchange whatever the names' order.
    needs_repair: AtomicBool,
    /// True once a reload dropped the link: its dialler and sessions end.
    retired: watch::Sender<bool>,
    /// The fault the operator set on this link (`herdctl link`), if any.
    pub fault: super::faults::FaultCell,
    /// What the link did, for `/metrics` and `/status`.
    pub stats: super::link_stats::LinkStats,
}

#[derive(Default)]
struct Queue {
    records: VecDeque<AtRecord>,
    /// Sequence number of the last update ever queued (the first is 1).
    pushed: u64,
    /// The queue filled up: the session must drop the link.
    overflowed: bool,
}

/// What the neighbour acknowledged on this session's connection, and what that means in
/// sequence numbers. The neighbour counts the `HERD AT` lines it received and applied on the
/// connection (`HERD ACK <n>`, cumulative); a `herdctl link loss` drops some lines unsent,
/// so lines and sequence numbers are told apart: each written batch notes how many lines
/// were sent once it was, and the last sequence number it carried.
#[derive(Default)]
struct AckBook {
    /// `HERD AT` lines written (or being written) on the connection.
    lines_sent: u64,
    /// Lines the neighbour acknowledged.
    lines_acked: u64,
    /// (lines sent once the batch is written, the batch's last sequence number), oldest first,
    /// for the batches not yet acknowledged.
    unacked: VecDeque<(u64, u64)>,
    /// The sequence number a reply stopped waiting at (see `Link::ack_late`).
    late_at: u64,
}

/// Batches an [`AckBook`] tells apart before it merges the newest ones: a neighbour that
/// never acknowledges costs a bounded book, and a merged batch only waits a little longer.
const MAX_UNACKED: usize = 1024;

/// Why an acknowledgement was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum BadAck {
    /// More lines than were sent on the connection.
    Beyond { acked: u64, sent: u64 },
    /// Fewer lines than an earlier acknowledgement (they are cumulative).
    Backwards { acked: u64, before: u64 },
}

impl std::fmt::Display for BadAck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BadAck::Beyond { acked, sent } => {
                write!(f, "acknowledged {acked} updates, {sent} were sent")
            }
            BadAck::Backwards { acked, before } => {
                write!(f, "acknowledged {acked} updates after {before}")
            }
        }
    }
}

/// What a session's writer takes from its link's queue in one go.
pub struct Batch {
    pub records: Vec<AtRecord>,
    /// The sequence number of the last record in `records`.
    pub last_seq: u64,
}

impl Link {
    fn new(name: String, capacity: usize) -> Link {
        Link {
            name,
            capacity,
            up: AtomicBool::new(false),
            queue: Mutex::default(),
            queued: Notify::new(),
            written: AtomicU64::new(0),
            acking: AtomicBool::new(false),
            acked: AtomicU64::new(0),
            ack_late: AtomicBool::new(false),
            acks: Mutex::default(),
            progress: Notify::new(),
            wake: Notify::new(),
            needs_repair: AtomicBool::new(false),
            retired: watch::Sender::new(false),
            fault: super::faults::FaultCell::default(),
            stats: Default::default(),
        }
    }

    /// The link is no longer in the herd file: stop queueing for it for good, and end its
    /// dialler and its sessions (see [`Link::retired`]).
    fn retire(&self) {
        self.retired.send_replace(true);
        self.down();
    }

    /// Resolves once the link is retired: tasks serving it select on this.
    pub async fn retired(&self) {
        let mut retired = self.retired.subscribe();
        let _ = retired.wait_for(|r| *r).await;
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// Updates queued and not yet written.
    pub fn queue_depth(&self) -> usize {
        self.lock().records.len()
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `record`; returns its sequence number, or `None` if the link is down or its
    /// queue was full (then the link is marked overflowed and its session drops it).
    fn push(&self, record: &AtRecord) -> Option<u64> {
        let mut queue = self.lock();
        // Checked again under the lock: `down` clears the flag under it, so nothing is queued
        // on a link after it released its waiters.
        if !self.is_up() || queue.overflowed {
            return None;
        }
        if queue.records.len() >= self.capacity {
            queue.overflowed = true;
            drop(queue);
            self.queued.notify_one();
            return None;
        }
        // A record is one reference-counted line: queueing it copies a pointer.
        queue.records.push_back(record.clone());
        queue.pushed += 1;
        let seq = queue.pushed;
        drop(queue);
        self.queued.notify_one();
        Some(seq)
    }

    /// Queues `records` in order under one lock round and one wake-up of the writer; returns
    /// the sequence number of the last, or `None` if the link is down or its queue filled
    /// (then the link is marked overflowed and its session drops it).
    fn push_all(&self, records: &[&AtRecord]) -> Option<u64> {
        if records.is_empty() {
            return None;
        }
        let mut queue = self.lock();
        if !self.is_up() || queue.overflowed {
            return None;
        }
        if queue.records.len() + records.len() > self.capacity {
            queue.overflowed = true;
            drop(queue);
            self.queued.notify_one();
            return None;
        }
        queue.records.extend(records.iter().map(|r| (*r).clone()));
        queue.pushed += records.len() as u64;
        let seq = queue.pushed;
        drop(queue);
        self.queued.notify_one();
        Some(seq)
    }

    /// The link is established: start queueing; with `acks`, replies wait for the
    /// neighbour's acknowledgements on this session.
    pub fn up(&self, acks: bool) {
        let mut queue = self.lock();
        queue.records.clear();
        queue.overflowed = false;
        *self.book() = AckBook::default();
        self.ack_late.store(false, Ordering::Release);
        self.acking.store(acks, Ordering::Release);
        self.up.store(true, Ordering::Release);
    }

    /// The link dropped: stop queueing, forget what was queued (anti-entropy repairs it) and
    /// release every reply waiting for it.
    pub fn down(&self) {
        let mut queue = self.lock();
        self.up.store(false, Ordering::Release);
        self.acking.store(false, Ordering::Release);
        queue.records.clear();
        self.written.fetch_max(queue.pushed, Ordering::AcqRel);
        self.acked.fetch_max(queue.pushed, Ordering::AcqRel);
        drop(queue);
        self.progress.notify_waiters();
    }

    /// Whether this session's replies wait for the neighbour's acknowledgements.
    pub fn is_acking(&self) -> bool {
        self.acking.load(Ordering::Acquire)
    }

    /// `on` while replies wait for the neighbour's acknowledgements, `late` while they wait
    /// for its socket only (see [`Link::overdue`]), `off` when it gives none.
    pub fn ack_state(&self) -> &'static str {
        match (self.is_acking(), self.ack_late.load(Ordering::Acquire)) {
            (false, _) => "off",
            (true, false) => "on",
            (true, true) => "late",
        }
    }

    fn book(&self) -> MutexGuard<'_, AckBook> {
        self.acks.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The session is about to write `lines` `HERD AT` lines, the last update of the batch
    /// being `last_seq` (noted before the write, so an acknowledgement can never arrive
    /// for lines the book does not know yet).
    pub fn sending(&self, lines: u64, last_seq: u64) {
        if !self.is_acking() {
            return;
        }
        let mut book = self.book();
        book.lines_sent += lines;
        let entry = (book.lines_sent, last_seq);
        if book.lines_acked >= book.lines_sent {
            // Nothing outstanding (every line of the batch dropped by `link loss`).
            drop(book);
            self.acked.fetch_max(last_seq, Ordering::AcqRel);
            self.progress.notify_waiters();
        } else if book.unacked.len() >= MAX_UNACKED {
            *book.unacked.back_mut().expect("full") = entry;
        } else {
            book.unacked.push_back(entry);
        }
    }

    /// The neighbour acknowledged the first `lines` `HERD AT` lines of this session; an
    /// acknowledgement of more than was sent, or of less than before, is refused.
    pub fn acknowledged(&self, lines: u64) -> Result<(), BadAck> {
        let mut book = self.book();
        if lines > book.lines_sent {
            return Err(BadAck::Beyond {
                acked: lines,
                sent: book.lines_sent,
            });
        }
        if lines < book.lines_acked {
            return Err(BadAck::Backwards {
                acked: lines,
                before: book.lines_acked,
            });
        }
        book.lines_acked = lines;
        let mut seq = None;
        while let Some(&(sent, last_seq)) = book.unacked.front() {
            if sent > lines {
                break;
            }
            seq = Some(last_seq);
            book.unacked.pop_front();
        }
        let Some(seq) = seq else { return Ok(()) };
        if seq >= book.late_at {
            self.ack_late.store(false, Ordering::Release);
        }
        drop(book);
        self.acked.fetch_max(seq, Ordering::AcqRel);
        self.progress.notify_waiters();
        Ok(())
    }

    /// Whether replies wait for `acked` (else for `written`).
    fn waits_for_acks(&self) -> bool {
        self.is_acking() && !self.ack_late.load(Ordering::Acquire)
    }

    /// Whether update `seq` was handed over: applied by a neighbour that acknowledges (unless
    /// its acknowledgements are late; an acknowledgement implies the write), on the socket of
    /// one that does not, or given up on.
    fn handed_over(&self, seq: u64) -> bool {
        match self.waits_for_acks() {
            true => self.acked.load(Ordering::Acquire) >= seq,
            false => self.written.load(Ordering::Acquire) >= seq,
        }
    }

    /// A reply stopped waiting for update `seq`: if it was written and not acknowledged, the
    /// neighbour is late, and replies stop waiting for its acknowledgements until they reach
    /// `seq`.
    fn overdue(&self, seq: u64) {
        if !self.is_acking()
            || self.written.load(Ordering::Acquire) < seq
            || self.acked.load(Ordering::Acquire) >= seq
        {
            return;
        }
        let mut book = self.book();
        book.late_at = book.late_at.max(seq);
        self.ack_late.store(true, Ordering::Release);
        drop(book);
        self.stats.ack_timeouts.inc();
        self.progress.notify_waiters();
    }

    /// Waits until the queue holds updates (or overflowed), then takes up to `max` of them.
    /// `Err` when the queue overflowed.
    pub async fn next_batch(&self, max: usize) -> Result<Batch, QueueFull> {
        loop {
            let queued = self.queued.notified();
            {
                if let Some(batch) = self.ready_batch(max)? {
                    return Ok(batch);
                }
            }
            queued.await;
        }
    }

    /// Takes up to `max` queued updates without waiting (`None`: nothing queued).
    pub fn ready_batch(&self, max: usize) -> Result<Option<Batch>, QueueFull> {
        let mut queue = self.lock();
        if queue.overflowed {
            return Err(QueueFull(self.capacity));
        }
        Ok(Self::take(&mut queue, max))
    }

    fn take(queue: &mut Queue, max: usize) -> Option<Batch> {
        if queue.records.is_empty() {
            return None;
        }
        let take = queue.records.len().min(max);
        let records: Vec<_> = queue.records.drain(..take).collect();
        let last_seq = queue.pushed - queue.records.len() as u64;
        Some(Batch { records, last_seq })
    }

    /// The session wrote every update up to `seq` to the socket.
    pub fn written(&self, seq: u64) {
        self.written.fetch_max(seq, Ordering::AcqRel);
        // Replies waiting for acknowledgements are woken by them, not by every write.
        if !self.waits_for_acks() {
            self.progress.notify_waiters();
        }
    }

    /// Waits until update `seq` was handed over ([`Link::handed_over`]).
    async fn wait_handed(&self, seq: u64) {
        loop {
            let changed = self.progress.notified();
            if self.handed_over(seq) {
                return;
            }
            changed.await;
        }
    }

    /// Sleeps for `delay`, or less if the neighbour said HELLO meanwhile (then `true`).
    pub async fn backoff(&self, delay: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(delay) => false,
            _ = self.wake.notified() => true,
        }
    }

    /// Marks the link for an anti-entropy exchange at its next link-up.
    pub fn mark_for_repair(&self) {
        self.needs_repair.store(true, Ordering::Release);
    }

    /// Whether the link must be repaired now (and clears the mark).
    pub fn take_repair(&self) -> bool {
        self.needs_repair.swap(false, Ordering::AcqRel)
    }
}

/// Why a session dropped its link: the neighbour did not keep up with the updates.
#[derive(Debug)]
pub struct QueueFull(pub usize);

impl std::fmt::Display for QueueFull {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} updates queued and not written (links.queue): the neighbour reads too slowly",
            self.0
        )
    }
}

impl std::error::Error for QueueFull {}

/// Every link of a node.
pub struct Peers {
    /// Read on every flood; written only by a reload.
    links: RwLock<BTreeMap<String, Arc<Link>>>,
    /// Which links an update goes on (`links.forwarding`); set from the herd file at start
    /// and by every reload.
    routes: RwLock<Routes>,
    /// Whether `links` holds any: a node without neighbours forwards nothing, and checking
    /// this costs it no lock (two read locks per update are atomic writes to lines every
    /// worker thread shares, ~2.5% of a lone node's CPU under pipelined IAMATs).
    any_links: AtomicBool,
}

impl Peers {
    pub fn new(neighbours: &BTreeSet<String>, queue_capacity: usize) -> Peers {
        let links: BTreeMap<String, Arc<Link>> = neighbours
            .iter()
            .map(|name| {
                (
                    name.clone(),
                    Arc::new(Link::new(name.clone(), queue_capacity)),
                )
            })
            .collect();
        Peers {
            any_links: AtomicBool::new(!links.is_empty()),
            links: RwLock::new(links),
            routes: RwLock::default(),
        }
    }

    /// Forward by `routes` from now on.
    pub fn set_routes(&self, routes: Routes) {
        *self.routes.write().unwrap_or_else(|e| e.into_inner()) = routes;
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Arc<Link>>> {
        self.links.read().unwrap_or_else(|e| e.into_inner())
    }

    pub fn link(&self, neighbour: &str) -> Option<Arc<Link>> {
        self.read().get(neighbour).cloned()
    }

    pub fn links(&self) -> Vec<Arc<Link>> {
        self.read().values().cloned().collect()
    }

    /// Makes `neighbours` the node's links: returns the links added (they need a dialler)
    /// and retires the ones dropped (their diallers and sessions end). Links that stay are
    /// untouched, so their connections and queues carry on.
    pub fn set_neighbours(
        &self,
        neighbours: &BTreeSet<String>,
        queue_capacity: usize,
    ) -> (Vec<Arc<Link>>, Vec<Arc<Link>>) {
        let mut links = self.links.write().unwrap_or_else(|e| e.into_inner());
        let gone: Vec<String> = links
            .keys()
            .filter(|name| !neighbours.contains(*name))
            .cloned()
            .collect();
        let dropped: Vec<Arc<Link>> = gone.iter().filter_map(|name| links.remove(name)).collect();
        let mut added = Vec::new();
        for name in neighbours {
            if !links.contains_key(name) {
                let link = Arc::new(Link::new(name.clone(), queue_capacity));
                links.insert(name.clone(), Arc::clone(&link));
                added.push(link);
            }
        }
        self.any_links.store(!links.is_empty(), Ordering::Release);
        drop(links);
        for link in &dropped {
            link.retire();
        }
        (added, dropped)
    }

    /// Queues `record` for every neighbour whose link is up, except `from`; notes in
    /// `handoff` (if given) what a reply must wait for. (Production forwards through
    /// [`Peers::forward`], which also knows the tree; the tests flood.)
    #[cfg(test)]
    pub fn flood(&self, record: &AtRecord, from: Option<&str>, handoff: Option<&mut Handoff>) {
        self.forward(record, from, true, handoff);
    }

    /// Queues `record` (new here, from neighbour `from` or, `None`, from a client) for the
    /// neighbours `links.forwarding` picks among those whose link is up (never `from`):
    /// every one, or its origin's tree children (see `routes.rs`). `flooded` is false for a
    /// record anti-entropy brought, which goes to every neighbour. Notes in `handoff` (if
    /// given) what a reply must wait for.
    pub fn forward(
        &self,
        record: &AtRecord,
        from: Option<&str>,
        flooded: bool,
        handoff: Option<&mut Handoff>,
    ) {
        if !self.any_links.load(Ordering::Acquire) {
            return;
        }
        let mut handoff = handoff;
        let links = self.read();
        let routes = self.routes.read().unwrap_or_else(|e| e.into_inner());
        let next = routes.next(record.origin(), from, flooded, |name| {
            links.get(name).is_some_and(|l| l.is_up())
        });
        for (name, link) in links.iter() {
            if Some(name.as_str()) == from || !link.is_up() {
                continue;
            }
            if let Next::Only(children) = next {
                if !children.contains(name) {
                    continue;
                }
            }
            if let (Some(seq), Some(handoff)) = (link.push(record), handoff.as_deref_mut()) {
                handoff.note(link, seq);
            }
        }
    }

    /// [`Peers::forward`] for the new records of one read burst from neighbour `from`, in
    /// order: one lock round and one writer wake-up per link rather than one per record.
    pub fn forward_all(&self, records: &[AtRecord], from: &str, flooded: bool) {
        if records.is_empty() {
            return;
        }
        let links = self.read();
        let routes = self.routes.read().unwrap_or_else(|e| e.into_inner());
        let is_up = |name: &str| links.get(name).is_some_and(|l| l.is_up());
        let nexts: Vec<Next<'_>> = records
            .iter()
            .map(|r| routes.next(r.origin(), Some(from), flooded, is_up))
            .collect();
        let mut picked = Vec::with_capacity(records.len());
        for (name, link) in links.iter() {
            if name == from || !link.is_up() {
                continue;
            }
            picked.clear();
            for (record, next) in records.iter().zip(&nexts) {
                match next {
                    Next::Only(children) if !children.contains(name) => {}
                    _ => picked.push(record),
                }
            }
            link.push_all(&picked);
        }
    }

    /// The neighbour `name` said HELLO: if this side's link to it is down, dial now.
    pub fn wake(&self, name: &str) {
        if let Some(link) = self.read().get(name) {
            if !link.is_up() {
                link.wake.notify_one();
            }
        }
    }

    /// How many links are up, and how many there are.
    pub fn links_up(&self) -> (usize, usize) {
        let links = self.read();
        let up = links.values().filter(|l| l.is_up()).count();
        (up, links.len())
    }
}

/// What a connection's pending replies wait for before they are written: per link, the
/// sequence number of the last update they queued there. Kept per connection and reused,
/// so a pipelined batch of IAMATs waits once (like strict durability's group commit).
#[derive(Default)]
pub struct Handoff {
    waits: Vec<(Arc<Link>, u64)>,
}

impl Handoff {
    fn note(&mut self, link: &Arc<Link>, seq: u64) {
        match self.waits.iter_mut().find(|(l, _)| Arc::ptr_eq(l, link)) {
            Some((_, at)) => *at = (*at).max(seq),
            None => self.waits.push((Arc::clone(link), seq)),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.waits.is_empty()
    }

    /// Waits until every noted update was handed over (applied by a neighbour that
    /// acknowledges, on the socket of one that does not, or its link dropped), at most
    /// `limit` (a link stalled that long is being dropped by its own write deadline; a
    /// neighbour that acknowledges that late is waited for no more until it catches up).
    /// Returns whether everything was handed over in time; the handoff is empty afterwards.
    pub async fn wait(&mut self, limit: Duration) -> bool {
        if self.waits.is_empty() {
            return true;
        }
        let all = async {
            for (link, seq) in &self.waits {
                link.wait_handed(*seq).await;
            }
        };
        let in_time = tokio::time::timeout(limit, all).await.is_ok();
        if !in_time {
            for (link, seq) in &self.waits {
                if !link.handed_over(*seq) {
                    link.overdue(*seq);
                }
            }
        }
        self.waits.clear();
        in_time
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(client: &str) -> AtRecord {
        AtRecord::from_parts("X", "+0.000000000", client, "+1+1", "5").unwrap()
    }

    fn peers(capacity: usize) -> Peers {
        Peers::new(&["A", "B", "C"].map(String::from).into(), capacity)
    }

    #[tokio::test]
    async fn flood_skips_the_sender_and_links_that_are_down() {
        let peers = peers(8);
        peers.link("A").unwrap().up(false);
        peers.link("B").unwrap().up(false);
        let mut handoff = Handoff::default();
        peers.flood(&record("kiwi"), Some("A"), Some(&mut handoff));
        assert!(
            peers.link("A").unwrap().lock().records.is_empty(),
            "the sender"
        );
        let batch = peers.link("B").unwrap().next_batch(10).await.unwrap();
        assert_eq!(batch.records, vec![record("kiwi")]);
        assert_eq!(batch.last_seq, 1);
        assert!(peers.link("C").unwrap().lock().records.is_empty(), "down");
        assert_eq!(peers.links_up(), (2, 3));
        assert_eq!(handoff.waits.len(), 1);
    }

    #[tokio::test]
    async fn a_reply_waits_until_written_or_the_link_drops() {
        let peers = peers(8);
        let b = &peers.link("B").unwrap();
        b.up(false);
        let mut handoff = Handoff::default();
        peers.flood(&record("one"), None, Some(&mut handoff));
        peers.flood(&record("two"), None, Some(&mut handoff));
        assert_eq!(
            handoff.waits.len(),
            1,
            "one wait per link, at its highest seq"
        );
        assert!(
            !handoff.wait(Duration::from_millis(20)).await,
            "nothing written yet"
        );

        peers.flood(&record("three"), None, Some(&mut handoff));
        let batch = b.next_batch(2).await.unwrap();
        b.written(batch.last_seq);
        assert_eq!(batch.last_seq, 2);
        assert!(
            !handoff.wait(Duration::from_millis(20)).await,
            "seq 3 is not written"
        );

        peers.flood(&record("four"), None, Some(&mut handoff));
        b.down();
        assert!(
            handoff.wait(Duration::from_secs(5)).await,
            "a dropped link releases"
        );
    }

    /// Takes what is queued on `link` and writes it, as a session would, `lines` of it
    /// (the rest dropped by a `link loss`).
    async fn write_out(link: &Link, lines: u64) -> u64 {
        let batch = link.next_batch(MAX_UNACKED * 2).await.unwrap();
        link.sending(lines, batch.last_seq);
        link.written(batch.last_seq);
        batch.last_seq
    }

    #[tokio::test]
    async fn a_reply_waits_for_the_acknowledgement_of_a_neighbour_that_gives_them() {
        let peers = peers(8);
        let b = &peers.link("B").unwrap();
        b.up(true);
        peers.flood(&record("one"), None, None);
        peers.flood(&record("two"), None, None);
        let two = write_out(b, 2).await;
        assert!(!b.handed_over(two), "written, not acknowledged");
        assert_eq!(b.acknowledged(1), Ok(()));
        assert!(!b.handed_over(two), "the batch is acknowledged as a whole");
        assert_eq!(b.acknowledged(3), Err(BadAck::Beyond { acked: 3, sent: 2 }));
        assert_eq!(b.acknowledged(2), Ok(()));
        assert!(b.handed_over(two));
        assert_eq!(
            b.acknowledged(1),
            Err(BadAck::Backwards {
                acked: 1,
                before: 2
            })
        );

        // Acknowledged while the reply waits.
        let mut handoff = Handoff::default();
        peers.flood(&record("three"), None, Some(&mut handoff));
        write_out(b, 1).await;
        let acker = async {
            tokio::task::yield_now().await;
            b.acknowledged(3).unwrap();
        };
        let (in_time, ()) = tokio::join!(handoff.wait(Duration::from_secs(60)), acker);
        assert!(in_time);

        // Lines a `link loss` dropped are not waited for.
        peers.flood(&record("four"), None, None);
        let four = write_out(b, 0).await;
        assert!(b.handed_over(four));
    }

    #[tokio::test]
    async fn a_neighbour_late_with_its_acknowledgements_is_waited_for_once() {
        let peers = peers(8);
        let b = &peers.link("B").unwrap();
        b.up(true);
        let mut handoff = Handoff::default();
        peers.flood(&record("one"), None, Some(&mut handoff));
        let one = write_out(b, 1).await;
        assert!(
            !handoff.wait(Duration::from_millis(20)).await,
            "never acked"
        );
        assert_eq!(b.stats.ack_timeouts.get(), 1);
        assert_eq!(b.ack_state(), "late");
        // Late: the next replies wait for the socket only...
        peers.flood(&record("two"), None, Some(&mut handoff));
        let two = write_out(b, 1).await;
        assert!(handoff.wait(Duration::from_secs(60)).await);
        assert_eq!(b.stats.ack_timeouts.get(), 1);
        // ... until the acknowledgements catch up with the one that was late.
        b.acknowledged(1).unwrap();
        assert!(b.handed_over(one));
        assert!(!b.handed_over(two), "caught up: waited for again");
        assert_eq!(b.ack_state(), "on");
        // A link that drops releases everything.
        peers.flood(&record("three"), None, Some(&mut handoff));
        b.down();
        assert!(handoff.wait(Duration::from_secs(60)).await);
        assert!(b.handed_over(two));
        assert_eq!(b.ack_state(), "off");
    }

    #[tokio::test]
    async fn a_neighbour_that_never_acknowledges_costs_a_bounded_book() {
        let peers = peers(4 * MAX_UNACKED);
        let b = &peers.link("B").unwrap();
        b.up(true);
        let mut last = 0;
        for i in 0..MAX_UNACKED + 100 {
            peers.flood(&record(&i.to_string()), None, None);
            last = write_out(b, 1).await;
        }
        assert_eq!(b.book().unacked.len(), MAX_UNACKED);
        // The newest batches were merged: waited for until the last of them is acknowledged.
        let merged_from = MAX_UNACKED as u64;
        b.acknowledged(merged_from - 1).unwrap();
        assert!(b.handed_over(merged_from - 1));
        b.acknowledged(last - 1).unwrap();
        assert!(!b.handed_over(merged_from));
        b.acknowledged(last).unwrap();
        assert!(b.handed_over(last));
        assert!(b.book().unacked.is_empty());
    }

    #[tokio::test]
    async fn a_neighbour_that_does_not_acknowledge_is_waited_for_on_the_socket() {
        let peers = peers(8);
        let b = &peers.link("B").unwrap();
        b.up(false);
        peers.flood(&record("one"), None, None);
        let one = write_out(b, 1).await;
        assert!(b.handed_over(one));
        assert_eq!(b.acknowledged(1), Err(BadAck::Beyond { acked: 1, sent: 0 }));
    }

    #[tokio::test]
    async fn a_full_queue_overflows_instead_of_growing() {
        let peers = peers(2);
        let a = &peers.link("A").unwrap();
        a.up(false);
        for client in ["1", "2", "3", "4"] {
            peers.flood(&record(client), None, None);
        }
        assert!(a.next_batch(10).await.is_err(), "overflowed");
        assert!(a.lock().records.len() <= 2);
        a.down();
        a.up(false);
        peers.flood(&record("5"), None, None);
        assert_eq!(a.next_batch(10).await.unwrap().records.len(), 1);
    }

    #[tokio::test]
    async fn hello_wakes_a_dialler_whose_link_is_down() {
        let peers = peers(2);
        let a = Arc::clone(&peers.link("A").unwrap());
        let sleeper = tokio::spawn(async move { a.backoff(Duration::from_secs(3600)).await });
        peers.wake("A");
        let woken = tokio::time::timeout(Duration::from_secs(10), sleeper)
            .await
            .expect("woken long before the backoff ends")
            .unwrap();
        assert!(woken);
        peers.link("B").unwrap().up(false);
        peers.wake("B");
        assert!(
            !peers
                .link("B")
                .unwrap()
                .backoff(Duration::from_millis(10))
                .await,
            "a link that is up is not woken"
        );
    }

    #[tokio::test]
    async fn a_reload_adds_and_retires_links_live() {
        let peers = peers(8);
        let b = peers.link("B").unwrap();
        let c = peers.link("C").unwrap();
        b.up(false);
        c.up(false);
        let (added, dropped) = peers.set_neighbours(&["C", "D"].map(String::from).into(), 8);
        assert_eq!(
            added.iter().map(|l| l.name.as_str()).collect::<Vec<_>>(),
            ["D"]
        );
        let mut dropped: Vec<&str> = dropped.iter().map(|l| l.name.as_str()).collect();
        dropped.sort();
        assert_eq!(dropped, ["A", "B"]);
        // A dropped link's tasks are told, and nothing more is queued for it.
        tokio::time::timeout(Duration::from_secs(10), b.retired())
            .await
            .expect("retired");
        assert!(!b.is_up());
        peers.flood(&record("kiwi"), None, None);
        assert!(b.lock().records.is_empty());
        assert!(
            Arc::ptr_eq(&peers.link("C").unwrap(), &c),
            "a kept link is untouched"
        );
        assert_eq!(
            c.next_batch(10).await.unwrap().records,
            vec![record("kiwi")]
        );
        assert_eq!(peers.links_up(), (1, 2));
        assert!(peers.link("A").is_none());
    }
}

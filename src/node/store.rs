//! A node's client table on disk: a sled store at `data_dir/<Name>/`, written by one
//! store-writer thread so that no request ever waits on a B-tree insert. sled stays behind
//! this module; nothing else names it.
//!
//! Layout (the way Redis pairs an append-only file with snapshots):
//! - `journal` tree: key = batch number (u64, big-endian), value = the AT lines the table
//!   accepted in that batch, `\n`-terminated, in the order it accepted them. The writer
//!   appends one batch per wake-up (a few milliseconds of updates, one insert).
//! - `snapshot` tree: key = chunk number (u16, big-endian, [`CHUNKS`] chunks by client-id
//!   hash), value = the AT line of every client in that chunk. Compaction rewrites the chunks
//!   that changed since the last one, from the table, then empties the journal.
//!
//! Recovery reads the snapshot and replays the journal through the table's newer-wins rule,
//! a few thousand big values in bulk instead of a B-tree entry per client.
//!
//! The herd is the primary copy of every update; the store is for a fast local restart. So
//! a store that cannot be opened or read (sled 0.34 has reported corruption after hard kills)
//! never stops a node: it is moved aside within `data_dir` as `<Name>.corrupt-<unix seconds>`
//! (never deleted, for a post-mortem), logged loudly, and the node starts empty and refills
//! from its neighbours.
//!
//! Durability: `relaxed` leaves flushing to sled's own flusher (at most every second) and a
//! graceful stop; `strict` flushes (and fdatasyncs) once per batch, and a reply waits for the
//! batch that holds its update (group commit). A write or flush that fails marks the store
//! unhealthy: waiting replies are released with an error (never acknowledged), and the writer
//! retries by rewriting every chunk touched since the last good compaction from the table.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use tokio::sync::watch;

use super::table::{Table, SHARDS};
use crate::record::{stable_hash, AtRecord};

/// A separate sled tree for the store's own bookkeeping, apart from the client records.
const META_TREE: &str = "herd-meta";
const SNAPSHOT_TREE: &str = "snapshot";
const JOURNAL_TREE: &str = "journal";
/// Written (and flushed) when a store is created. sled 0.34 opens a store whose log is
/// garbled or truncated as an empty one, without an error; a store that existed but lacks
/// this marker is such a store, and is treated as one that failed to open.
const MARKER_KEY: &str = "format";
const MARKER_VALUE: &str = "herdctl store 2";
/// Format 1 kept one sled entry per client in the default tree. It is still read; the first
/// compaction rewrites it as a snapshot and clears those entries.
const MARKER_V1: &str = "herdctl store 1";
/// Meta key: how many records the snapshot held after the last compaction (u64,
/// big-endian), so a restart can size the table once instead of growing it.
const RECORDS_KEY: &str = "snapshot records";

/// Snapshot chunks. A multiple of the table's shards, so a chunk's clients all live in one
/// shard (chunk % SHARDS) and compaction scans only the shards whose chunks changed.
///
/// Values are kept small (about 6 KiB at a million clients) because sled 0.34 writes a
/// B-tree leaf (up to 16 values) bigger than a quarter segment (128 KiB) as a separate blob
/// and then hardly counts it against `cache_capacity`: with big values sled kept the whole
/// snapshot in memory, about 100 bytes per client.
pub const CHUNKS: usize = 16384;
const _: () = assert!(CHUNKS % SHARDS == 0);

/// sled keeps up to this much of the store in memory (its default is 1 GiB). The table is
/// the copy that answers queries; sled only needs room for the pages being written.
const CACHE_BYTES: u64 = 16 << 20;
/// sled's own periodic flush: what `durability: relaxed` promises.
const FLUSH_EVERY_MS: u64 = 1000;
/// How often the writer takes what the table accepted when nobody waits for it.
const WRITER_TICK: Duration = Duration::from_millis(10);
/// Journal values are cut at about this size (small, for the same reason as [`CHUNKS`]).
const JOURNAL_VALUE_BYTES: usize = 6 << 10;
/// Compaction runs once the journal holds this much, or half the snapshot if that is more:
/// a restart replays at most about half a table more than it loads, and sled, which keeps
/// about as much memory as the journal holds (whatever `cache_capacity` says), stays small
/// for a small table. Compaction runs in steps between journal writes, so it never holds
/// up a strict reply for long...
const COMPACT_MIN_BYTES: u64 = 1 << 20;
/// ...or once the journal has been quiet for this long (a quiet node ends up compact).
const COMPACT_IDLE: Duration = Duration::from_secs(5);
/// Table shards a compaction rewrites between two journal writes (of 64).
const SHARDS_PER_STEP: usize = 4;
/// How often an unhealthy store tries again.
const RETRY_EVERY: Duration = Duration::from_secs(1);

/// A sequence number for accepted updates: the n-th [`Store::enqueue`] gets n (from 1).
pub type Seq = u64;

/// How far the writer got: every update up to `durable` is on disk; `healthy` is false from
/// a failed write or flush until the store has recovered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub durable: Seq,
    pub healthy: bool,
}

/// Why a reply that waited for durability must not acknowledge its update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotDurable {
    /// A write or flush failed (see [`Store::health`]).
    Unhealthy,
    /// The flush took longer than the wait allowed.
    TimedOut,
}

pub struct Store {
    db: sled::Db,
    snapshot: sled::Tree,
    journal: sled::Tree,
    /// sled's log file, for an fdatasync after sled's own flush (see [`Store::flush`]).
    log_file: std::fs::File,
    dir: PathBuf,
    /// Updates the table accepted and the writer has not taken yet, one lane per table shard
    /// (the table pushes under its shard lock, so a client's updates stay in order).
    lanes: Vec<Mutex<Vec<AtRecord>>>,
    /// The sequence number of the latest enqueued update.
    assigned: AtomicU64,
    progress: watch::Sender<Progress>,
    /// The last error while the store is unhealthy.
    health: Mutex<Option<String>>,
    /// The writer's own state; held while writing, so a final flush and the writer thread
    /// never write at the same time.
    writer: Mutex<WriterState>,
    /// Wakes the writer thread: set by a reply that waits, or by shutdown.
    kick: Mutex<bool>,
    kicked: Condvar,
    stopping: AtomicBool,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// What the writer knows about what is on disk.
struct WriterState {
    /// The next journal key.
    next_key: u64,
    /// Bytes in the journal since the last compaction.
    journal_bytes: u64,
    /// The size of each snapshot chunk (bytes and records), and chunks changed since the
    /// last compaction.
    chunk_bytes: Vec<u32>,
    chunk_records: Vec<u32>,
    dirty: Vec<bool>,
    /// Whether every chunk must be rewritten from the table (a format-1 store, whose
    /// per-client entries in the default tree are cleared afterwards, or a fresh store that
    /// replaced a corrupt one).
    rewrite_all: bool,
    last_write: Instant,
    last_failure: Option<Instant>,
    compaction: Option<Compaction>,
}

impl WriterState {
    fn snapshot_bytes(&self) -> u64 {
        self.chunk_bytes.iter().map(|&b| u64::from(b)).sum()
    }

    /// Journal bytes that start a compaction.
    fn compaction_limit(&self) -> u64 {
        COMPACT_MIN_BYTES.max(self.snapshot_bytes() / 2)
    }

    fn compaction_due(&self) -> bool {
        self.compaction.is_none()
            && (self.rewrite_all
                || self.journal_bytes >= self.compaction_limit()
                || (self.journal_bytes > 0 && self.last_write.elapsed() >= COMPACT_IDLE))
    }

    /// Starts a compaction of every chunk changed so far (and of the journal written so far);
    /// chunks changed from now on wait for the next one.
    fn start_compaction(&mut self) {
        self.compaction = Some(Compaction {
            dirty: std::mem::replace(&mut self.dirty, vec![false; CHUNKS]),
            next_shard: 0,
            start_key: self.next_key,
            journal_bytes: self.journal_bytes,
            rewrite_all: std::mem::take(&mut self.rewrite_all),
        });
    }
}

/// A compaction under way.
struct Compaction {
    /// The chunks it rewrites.
    dirty: Vec<bool>,
    /// The next table shard to rewrite the chunks of.
    next_shard: usize,
    /// The journal batches it replaces: those before this key, and their size.
    start_key: u64,
    journal_bytes: u64,
    /// Whether it rewrites a format-1 store (whose entries it clears when done).
    rewrite_all: bool,
}

/// What opening found.
#[derive(Debug)]
pub struct OpenReport {
    /// The store's folder.
    pub dir: PathBuf,
    /// Records read back and handed to the table (the same client may count more than once:
    /// the snapshot and the journal can both hold it).
    pub records: usize,
    /// Lines that did not hold a valid AT line (skipped, logged).
    pub skipped: usize,
    /// Set when the store could not be opened or read: where the old folder went, and why.
    pub moved_aside: Option<(PathBuf, String)>,
    /// How long opening and reading took.
    pub took: Duration,
}

/// What reading a store back found.
#[derive(Debug)]
struct Loaded {
    records: usize,
    skipped: usize,
    rewrite_all: bool,
    chunk_bytes: Vec<u32>,
    chunk_records: Vec<u32>,
    /// The chunks of the records read from the journal: the next compaction must write them.
    journal_dirty: Vec<bool>,
    journal_bytes: u64,
    next_key: u64,
}

/// How long `open` waits for sled's lock on a store before calling it in use.
const LOCK_WAIT: Duration = Duration::from_secs(2);

/// The snapshot chunk a client's record goes into.
pub fn client_chunk(client: &str) -> usize {
    (stable_hash(client.as_bytes()) % CHUNKS as u64) as usize
}

impl Store {
    /// Opens (or creates) the store in `dir` and loads every record it holds into `table`
    /// (from several threads at once, newer-wins, nothing queued back). A store that sled cannot open or iterate, with an
    /// error or a panic, is moved aside and replaced by an empty one; the report says so
    /// (records read before the failure were still handed over, and the first compaction
    /// writes them to the new store). Errors only when even that fails (no room, no
    /// permission), or when another process holds the store (moving a live store aside
    /// would split it in two).
    pub fn open(dir: &Path, table: &Table) -> Result<(Store, OpenReport)> {
        let start = Instant::now();
        // sled releases its file lock from a background thread after the last handle drops,
        // and a predecessor may still be exiting: give a held lock a moment to go.
        let mut attempt = open_and_load(dir, table);
        while matches!(attempt, Err(Failure::Locked(_))) && start.elapsed() < LOCK_WAIT {
            std::thread::sleep(Duration::from_millis(20));
            attempt = open_and_load(dir, table);
        }
        let (store, loaded, moved_aside) = match attempt {
            Ok((store, loaded)) => (store, loaded, None),
            Err(Failure::Locked(e)) => {
                return Err(e.context(format!(
                    "the store {} is in use by another process; is this node already running?",
                    dir.display()
                )))
            }
            Err(Failure::Unreadable(why)) => {
                let aside = move_aside(dir).with_context(|| {
                    format!(
                        "the store {} cannot be opened ({why}) and cannot be moved aside",
                        dir.display()
                    )
                })?;
                tracing::error!(
                    "STORE CORRUPT: {} cannot be opened or read ({why}); moved it aside to {} \
                     (kept for inspection, delete it when done) and starting with an empty \
                     store: this node refills from its neighbours",
                    dir.display(),
                    aside.display()
                );
                let (store, mut loaded) = open_and_load(dir, table).map_err(|e| {
                    anyhow!(
                        "a fresh store at {} cannot be opened either: {}",
                        dir.display(),
                        e.describe()
                    )
                })?;
                // Whatever was read before the failure is in the table: write it all.
                loaded.rewrite_all = true;
                (store, loaded, Some((aside, why)))
            }
        };
        release_free_memory();
        let report = OpenReport {
            dir: dir.to_path_buf(),
            records: loaded.records,
            skipped: loaded.skipped,
            moved_aside,
            took: start.elapsed(),
        };
        {
            let mut state = store.state();
            state.next_key = loaded.next_key;
            state.journal_bytes = loaded.journal_bytes;
            state.chunk_bytes = loaded.chunk_bytes;
            state.chunk_records = loaded.chunk_records;
            state.dirty = loaded.journal_dirty;
            if loaded.rewrite_all {
                state.rewrite_all = true;
                state.dirty = vec![true; CHUNKS];
            }
        }
        Ok((store, report))
    }

    /// The store's folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Queues `record` (just accepted by the table, under its shard lock `lane`) for the
    /// writer and returns its sequence number. Never blocks on the disk.
    pub fn enqueue(&self, lane: usize, record: AtRecord) -> Seq {
        let mut queue = lock(&self.lanes[lane % self.lanes.len()]);
        // Numbered inside the lane lock: once the writer has read `assigned` and then taken
        // every lane, it holds every update up to that number.
        let seq = self.assigned.fetch_add(1, Ordering::AcqRel) + 1;
        queue.push(record);
        seq
    }

    /// The sequence number of the latest accepted update.
    pub fn assigned(&self) -> Seq {
        self.assigned.load(Ordering::Acquire)
    }

    /// `None` while healthy, else the last write or flush error.
    pub fn health(&self) -> Option<String> {
        lock(&self.health).clone()
    }

    /// How far the writer got.
    pub fn progress(&self) -> Progress {
        *self.progress.borrow()
    }

    /// Starts the store-writer thread: every [`WRITER_TICK`] (at once when a reply waits) it
    /// appends what the table accepted to the journal; with `strict` it then flushes and
    /// publishes the new durable point; it compacts the journal into the snapshot (from
    /// `table`) when due, and retries after failures.
    pub fn start_writer(self: &Arc<Self>, table: Arc<Table>, strict: bool) {
        let store = Arc::clone(self);
        let thread = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || {
                // sled 0.34 panics on some damaged files: then the store is unhealthy for
                // good (strict replies are refused at once instead of timing out).
                let ran = catch_unwind(AssertUnwindSafe(|| store.writer_loop(&table, strict)));
                if let Err(panic) = ran {
                    let error = anyhow!("the store writer panicked: {}", panic_message(&panic));
                    store.failed(&mut store.state(), &error);
                }
            })
            .expect("cannot start the store-writer thread");
        *lock(&self.thread) = Some(thread);
    }

    /// Stops the writer thread (if running), then writes and flushes whatever is left: what
    /// a graceful stop calls once nothing accepts updates any more.
    pub fn close(&self) -> Result<()> {
        self.stopping.store(true, Ordering::Release);
        self.kick();
        if let Some(thread) = lock(&self.thread).take() {
            let _ = thread.join();
        }
        self.flush()
    }

    /// Writes everything accepted so far to the journal and flushes it to disk (blocking).
    pub fn flush(&self) -> Result<()> {
        let mut state = self.state();
        self.write_pending(&mut state)
            .and_then(|_| self.sync())
            .with_context(|| format!("flushing the store {}", self.dir.display()))
    }

    /// Waits (at most `limit`) until update `seq` is on disk; needs the writer running in
    /// strict mode. Refuses at once while the store is unhealthy.
    pub async fn wait_durable(&self, seq: Seq, limit: Duration) -> Result<(), NotDurable> {
        let mut progress = self.progress.subscribe();
        let now = *progress.borrow_and_update();
        if now.durable >= seq {
            return Ok(());
        }
        if !now.healthy {
            return Err(NotDurable::Unhealthy);
        }
        self.kick();
        let waited = tokio::time::timeout(limit, async {
            progress
                .wait_for(|p| p.durable >= seq || !p.healthy)
                .await
                .map(|p| p.durable >= seq)
        })
        .await;
        match waited {
            Ok(Ok(true)) => Ok(()),
            Ok(_) => Err(NotDurable::Unhealthy),
            Err(_) => Err(NotDurable::TimedOut),
        }
    }

    fn kick(&self) {
        *lock(&self.kick) = true;
        self.kicked.notify_one();
    }

    fn state(&self) -> MutexGuard<'_, WriterState> {
        lock(&self.writer)
    }

    fn writer_loop(&self, table: &Table, strict: bool) {
        loop {
            // Woken by a reply that waits (strict), rather than by the tick.
            let waited_for = {
                let kicked = lock(&self.kick);
                let (mut kicked, _) = self
                    .kicked
                    .wait_timeout_while(kicked, WRITER_TICK, |k| !*k)
                    .unwrap_or_else(|e| e.into_inner());
                std::mem::take(&mut *kicked)
            };
            if self.stopping.load(Ordering::Acquire) {
                return;
            }
            let mut state = self.state();
            if state.last_failure.is_some() {
                self.retry(&mut state, table);
                continue;
            }
            let written = self.write_pending(&mut state);
            let durable = match written {
                Ok(upto) if strict && upto > self.progress().durable => {
                    self.sync().map(|()| Some(upto))
                }
                Ok(_) => Ok(None),
                Err(e) => Err(e),
            };
            match durable {
                Ok(Some(upto)) => {
                    self.progress
                        .send_modify(|p| p.durable = p.durable.max(upto));
                }
                Ok(None) => {}
                Err(e) => {
                    self.failed(&mut state, &e);
                    continue;
                }
            }
            if state.compaction_due() {
                state.start_compaction();
            }
            // Replies waiting for the next flush come first: compaction steps wait for a
            // quiet moment, unless the journal has grown to twice what triggers one.
            let behind = state.journal_bytes >= 2 * state.compaction_limit();
            if state.compaction.is_some() && (!waited_for || behind) {
                if let Err(e) = self.compact_step(&mut state, table, SHARDS_PER_STEP) {
                    self.failed(&mut state, &e);
                }
            }
        }
    }

    /// Takes every queued update and appends it to the journal. Returns the sequence number
    /// up to which every update has been taken (and, on success, written).
    fn write_pending(&self, state: &mut WriterState) -> Result<Seq> {
        let upto = self.assigned();
        let mut value = Vec::with_capacity(JOURNAL_VALUE_BYTES + 512);
        let mut result = Ok(());
        for lane in &self.lanes {
            let records = std::mem::take(&mut *lock(lane));
            for record in records {
                state.dirty[client_chunk(record.client())] = true;
                value.extend_from_slice(record.line().as_bytes());
                value.push(b'\n');
                if value.len() >= JOURNAL_VALUE_BYTES && result.is_ok() {
                    result = self.append(state, &value);
                    value.clear();
                }
            }
        }
        if !value.is_empty() && result.is_ok() {
            result = self.append(state, &value);
        }
        result.map(|()| upto)
    }

    fn append(&self, state: &mut WriterState, value: &[u8]) -> Result<()> {
        self.journal
            .insert(state.next_key.to_be_bytes(), value)
            .context("appending to the journal")?;
        state.next_key += 1;
        state.journal_bytes += value.len() as u64;
        state.last_write = Instant::now();
        Ok(())
    }

    /// Flushes sled, then fdatasyncs its log. sled 0.34's flush ends with
    /// `sync_file_range`, which neither waits for the drive's cache nor syncs the file's
    /// size after the log grew; an fdatasync of the same file afterwards does both, so a
    /// flushed update survives a power cut too, not only a crash of this process.
    fn sync(&self) -> Result<()> {
        self.db.flush().context("sled flush")?;
        self.log_file.sync_data().context("fdatasync")?;
        Ok(())
    }

    /// Compacts at once (all steps): the retry after a failure, and tests.
    fn compact(&self, state: &mut WriterState, table: &Table) -> Result<()> {
        if state.compaction.is_none() {
            state.start_compaction();
        }
        while !self.compact_step(state, table, SHARDS)? {}
        Ok(())
    }

    /// Rewrites, from the table, the changed chunks of the next `shards` table shards of the
    /// compaction under way; after the last shard, drops the journal it replaced. Returns
    /// whether the compaction is done. Done in steps between journal writes, so a strict
    /// reply never waits for a whole compaction. A crash half-way leaves the journal in
    /// place, and replaying it is harmless (newer-wins), so the store is never worse than
    /// before. On an error the compaction is abandoned and its chunks stay marked changed.
    fn compact_step(&self, state: &mut WriterState, table: &Table, shards: usize) -> Result<bool> {
        let mut compaction = state.compaction.take().expect("a compaction under way");
        let done = self.write_shards(state, &mut compaction, table, shards);
        let done = done.and_then(|done| match done {
            true => self.finish_compaction(state, &compaction).map(|()| true),
            false => Ok(false),
        });
        match done {
            Ok(false) => state.compaction = Some(compaction),
            Ok(true) => {}
            Err(_) => {
                for (mine, theirs) in state.dirty.iter_mut().zip(&compaction.dirty) {
                    *mine |= theirs;
                }
            }
        }
        done
    }

    fn write_shards(
        &self,
        state: &mut WriterState,
        compaction: &mut Compaction,
        table: &Table,
        shards: usize,
    ) -> Result<bool> {
        let mut buffers: Vec<Vec<u8>> = vec![Vec::new(); CHUNKS / SHARDS];
        let mut counts = vec![0u32; CHUNKS / SHARDS];
        let end = (compaction.next_shard + shards).min(SHARDS);
        let dirty = &compaction.dirty;
        for shard in compaction.next_shard..end {
            if !(shard..CHUNKS).step_by(SHARDS).any(|chunk| dirty[chunk]) {
                continue;
            }
            table.visit_shard(shard, |record| {
                let chunk = client_chunk(record.client());
                if dirty[chunk] {
                    let buffer = &mut buffers[chunk / SHARDS];
                    buffer.extend_from_slice(record.line().as_bytes());
                    buffer.push(b'\n');
                    counts[chunk / SHARDS] += 1;
                }
            });
            let mut batch = sled::Batch::default();
            for (slot, buffer) in buffers.iter_mut().enumerate() {
                let chunk = slot * SHARDS + shard;
                if !dirty[chunk] {
                    continue;
                }
                let key = (chunk as u16).to_be_bytes();
                if buffer.is_empty() {
                    batch.remove(&key);
                } else {
                    batch.insert(&key, &buffer[..]);
                }
                state.chunk_bytes[chunk] = buffer.len() as u32;
                state.chunk_records[chunk] = std::mem::take(&mut counts[slot]);
                buffer.clear();
            }
            self.snapshot
                .apply_batch(batch)
                .context("writing the snapshot")?;
        }
        compaction.next_shard = end;
        Ok(end == SHARDS)
    }

    /// The snapshot now holds everything the journal held before the compaction started:
    /// make it durable, then drop those journal batches.
    fn finish_compaction(&self, state: &mut WriterState, compaction: &Compaction) -> Result<()> {
        let records: u64 = state.chunk_records.iter().map(|&n| u64::from(n)).sum();
        self.db
            .open_tree(META_TREE)
            .and_then(|meta| meta.insert(RECORDS_KEY, &records.to_be_bytes()))
            .context("writing the snapshot's size")?;
        // The snapshot must be on disk before the journal it replaces is dropped.
        self.sync()?;
        if compaction.start_key == state.next_key {
            // Nothing was journaled meanwhile: the whole journal goes.
            self.journal.clear().context("emptying the journal")?;
        } else {
            // Batches journaled meanwhile stay (their chunks wait for the next compaction).
            // One remove at a time: a sled batch of thousands of removes held hundreds of
            // megabytes.
            let replaced = ..compaction.start_key.to_be_bytes();
            for key in self.journal.range(replaced).keys() {
                self.journal
                    .remove(key.context("reading the journal")?)
                    .context("emptying the journal")?;
            }
        }
        if compaction.rewrite_all {
            self.db.clear().context("clearing format-1 entries")?;
            let meta = self.db.open_tree(META_TREE).context("the meta tree")?;
            meta.insert(MARKER_KEY, MARKER_VALUE)
                .context("writing the store's marker")?;
            self.sync()?;
        }
        state.journal_bytes = state.journal_bytes.saturating_sub(compaction.journal_bytes);
        release_free_memory();
        Ok(())
    }

    /// A write or flush failed: refuse waiting replies, say so once, and retry later.
    fn failed(&self, state: &mut WriterState, error: &anyhow::Error) {
        let first = state.last_failure.is_none();
        state.last_failure = Some(Instant::now());
        *lock(&self.health) = Some(format!("{error:#}"));
        self.progress.send_modify(|p| p.healthy = false);
        if first {
            tracing::error!(
                "STORE UNHEALTHY: {}: {error:#}; strict replies are refused (`? <line>`) and \
                 updates are kept in memory (and by the neighbours) until a retry succeeds",
                self.dir.display()
            );
        }
    }

    /// The retry after a failure: whatever the failed writes held is in the table, so
    /// rewriting every chunk changed since the last good compaction (and everything queued
    /// since) makes the store whole again.
    fn retry(&self, state: &mut WriterState, table: &Table) {
        if state
            .last_failure
            .is_some_and(|t| t.elapsed() < RETRY_EVERY)
        {
            return;
        }
        let upto = self.assigned();
        for lane in &self.lanes {
            for record in std::mem::take(&mut *lock(lane)) {
                state.dirty[client_chunk(record.client())] = true;
            }
        }
        match self.compact(state, table) {
            Ok(()) => {
                state.last_failure = None;
                *lock(&self.health) = None;
                self.progress.send_modify(|p| {
                    p.durable = p.durable.max(upto);
                    p.healthy = true;
                });
                tracing::warn!("store {} healthy again", self.dir.display());
            }
            Err(e) => {
                state.last_failure = Some(Instant::now());
                *lock(&self.health) = Some(format!("{e:#}"));
            }
        }
    }
}

/// Hands memory freed by a bulk job (reading the store, a compaction) back to the OS. glibc
/// keeps freed memory in its arenas, so without this a node that read a million clients
/// would hold the reading's buffers for good (about 50 bytes per client).
fn release_free_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only walks glibc's own heaps; it takes no pointers.
    unsafe {
        nix::libc::malloc_trim(0);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Why a store could not be used.
enum Failure {
    /// Another process holds sled's lock on the store: leave it alone.
    Locked(anyhow::Error),
    /// Corrupt or otherwise unusable: move it aside.
    Unreadable(String),
}

impl Failure {
    fn describe(&self) -> String {
        match self {
            Failure::Locked(e) => format!("{e:#}"),
            Failure::Unreadable(why) => why.clone(),
        }
    }
}

/// Opens the sled store in `dir` and reads every record into `table`, turning sled errors
/// and panics (sled 0.34 panics on some corrupt files) into a [`Failure`].
fn open_and_load(dir: &Path, table: &Table) -> std::result::Result<(Store, Loaded), Failure> {
    let existed = dir.join("db").exists();
    let opened = catch_unwind(AssertUnwindSafe(|| {
        sled::Config::new()
            .path(dir)
            .flush_every_ms(Some(FLUSH_EVERY_MS))
            .cache_capacity(CACHE_BYTES)
            .open()
    }));
    let db = match opened {
        Ok(Ok(db)) => db,
        Ok(Err(sled::Error::Io(e))) if e.to_string().contains("could not acquire lock") => {
            return Err(Failure::Locked(e.into()))
        }
        Ok(Err(e)) => return Err(Failure::Unreadable(format!("sled: {e}"))),
        Err(panic) => {
            return Err(Failure::Unreadable(format!(
                "sled panicked: {}",
                panic_message(&panic)
            )))
        }
    };
    let unreadable = |e: sled::Error| Failure::Unreadable(format!("sled: {e}"));
    let snapshot = db.open_tree(SNAPSHOT_TREE).map_err(unreadable)?;
    let journal = db.open_tree(JOURNAL_TREE).map_err(unreadable)?;
    let log_file = match std::fs::File::open(dir.join("db")) {
        Ok(file) => file,
        Err(e) => {
            return Err(Failure::Unreadable(format!(
                "cannot open its log file: {e}"
            )))
        }
    };
    let store = Store {
        db,
        snapshot,
        journal,
        log_file,
        dir: dir.to_path_buf(),
        lanes: (0..SHARDS).map(|_| Mutex::default()).collect(),
        assigned: AtomicU64::new(0),
        progress: watch::Sender::new(Progress {
            durable: 0,
            healthy: true,
        }),
        health: Mutex::new(None),
        writer: Mutex::new(WriterState {
            next_key: 0,
            journal_bytes: 0,
            chunk_bytes: vec![0; CHUNKS],
            chunk_records: vec![0; CHUNKS],
            dirty: vec![false; CHUNKS],
            rewrite_all: false,
            last_write: Instant::now(),
            last_failure: None,
            compaction: None,
        }),
        kick: Mutex::new(false),
        kicked: Condvar::new(),
        stopping: AtomicBool::new(false),
        thread: Mutex::new(None),
    };
    let format_1 = match catch_unwind(AssertUnwindSafe(|| store.check_marker(existed))) {
        Ok(Ok(format_1)) => format_1,
        Ok(Err(e)) => {
            forget_quietly(store);
            return Err(Failure::Unreadable(format!("{e:#}")));
        }
        Err(panic) => {
            forget_quietly(store);
            return Err(Failure::Unreadable(format!(
                "sled panicked while reading: {}",
                panic_message(&panic)
            )));
        }
    };
    match catch_unwind(AssertUnwindSafe(|| store.load(format_1, table))) {
        Ok(Ok(loaded)) => Ok((store, loaded)),
        Ok(Err(e)) => {
            forget_quietly(store);
            Err(Failure::Unreadable(format!("{e:#}")))
        }
        Err(panic) => {
            forget_quietly(store);
            Err(Failure::Unreadable(format!(
                "sled panicked while reading: {}",
                panic_message(&panic)
            )))
        }
    }
}

/// Reading threads at start-up: the machine's cores, at most four.
fn reader_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(4))
}

/// What reader threads found.
struct Tally {
    records: usize,
    skipped: usize,
    /// The size of each snapshot chunk read (bytes and records).
    chunk_bytes: Vec<u32>,
    chunk_records: Vec<u32>,
    journal_bytes: u64,
    /// The chunks of the records read from the journal (not in the snapshot yet).
    journal_dirty: Vec<bool>,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            records: 0,
            skipped: 0,
            chunk_bytes: vec![0; CHUNKS],
            chunk_records: vec![0; CHUNKS],
            journal_bytes: 0,
            journal_dirty: vec![false; CHUNKS],
        }
    }

    /// Adds what another reader found (each read its own chunks and journal batches).
    fn merge(&mut self, other: Tally) {
        self.records += other.records;
        self.skipped += other.skipped;
        self.journal_bytes += other.journal_bytes;
        for (mine, theirs) in self.chunk_bytes.iter_mut().zip(other.chunk_bytes) {
            *mine = (*mine).max(theirs);
        }
        for (mine, theirs) in self.chunk_records.iter_mut().zip(other.chunk_records) {
            *mine = (*mine).max(theirs);
        }
        for (mine, theirs) in self.journal_dirty.iter_mut().zip(other.journal_dirty) {
            *mine |= theirs;
        }
    }

    /// Parses the `\n`-terminated AT lines in `value` into `table`; lines `from_journal`
    /// mark their chunks dirty.
    fn lines(&mut self, dir: &Path, value: &[u8], table: &Table, from_journal: bool) {
        for line in value.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            match std::str::from_utf8(line).ok().and_then(AtRecord::parse) {
                Some(record) => {
                    self.records += 1;
                    if from_journal {
                        self.journal_dirty[client_chunk(record.client())] = true;
                    }
                    table.restore_one(record);
                }
                None => self.skip(dir, "", line),
            }
        }
    }

    fn skip(&mut self, dir: &Path, key: &str, value: &[u8]) {
        self.skipped += 1;
        // A damaged chunk can hold thousands of lines: the first few say enough.
        if self.skipped <= 5 {
            tracing::warn!(
                "store {}: skipped {key}{:?}: not a valid AT line",
                dir.display(),
                String::from_utf8_lossy(&value[..value.len().min(200)])
            );
        }
    }
}

impl Store {
    /// Checks the creation marker of a store that `existed` before this open, or writes it
    /// (durably) into a new one. Returns whether the store is in format 1.
    fn check_marker(&self, existed: bool) -> Result<bool> {
        let meta = self
            .db
            .open_tree(META_TREE)
            .context("opening the store's meta tree")?;
        match meta.get(MARKER_KEY).context("reading the store's marker")? {
            Some(value) if &*value == MARKER_VALUE.as_bytes() => Ok(false),
            Some(value) if &*value == MARKER_V1.as_bytes() => Ok(true),
            Some(value) => bail!(
                "the store's marker reads {:?}, not {MARKER_VALUE:?}",
                String::from_utf8_lossy(&value)
            ),
            None if existed => bail!(
                "sled opened it without error, but its creation marker is gone: its log was \
                 unreadable and sled started it over empty"
            ),
            None => {
                meta.insert(MARKER_KEY, MARKER_VALUE)
                    .context("writing the store's marker")?;
                self.sync().map(|()| false)
            }
        }
    }

    /// Reads the snapshot, then the journal (and format-1 entries), into `table`, several
    /// threads at once: each takes a range of chunks (and of journal batches) and parses
    /// its values as they come, so memory holds one value per thread, not the store.
    fn load(&self, format_1: bool, table: &Table) -> Result<Loaded> {
        let threads = reader_threads();
        let next_key = match self.journal.last().context("reading the journal")? {
            Some((key, _)) => key_number(&key)? + 1,
            None => 0,
        };
        let first_key = match self.journal.first().context("reading the journal")? {
            Some((key, _)) => key_number(&key)?,
            None => 0,
        };
        let meta = self.db.open_tree(META_TREE).context("the meta tree")?;
        if let Some(count) = meta.get(RECORDS_KEY).context("reading the meta tree")? {
            if let Ok(bytes) = <[u8; 8]>::try_from(&*count) {
                table.reserve(u64::from_be_bytes(bytes) as usize);
            }
        }
        let mut tally = Tally::new();
        std::thread::scope(|scope| -> Result<()> {
            let per_thread = CHUNKS.div_ceil(threads);
            let journal_span = (next_key - first_key).div_ceil(threads as u64).max(1);
            let workers: Vec<_> = (0..threads)
                .map(|t| {
                    let chunks = (t * per_thread) as u16..((t + 1) * per_thread).min(CHUNKS) as u16;
                    let journal = first_key + t as u64 * journal_span
                        ..first_key + (t as u64 + 1) * journal_span;
                    scope.spawn(move || -> Result<Tally> {
                        let mut tally = Tally::new();
                        let range = chunks.start.to_be_bytes()..chunks.end.to_be_bytes();
                        for entry in self.snapshot.range(range) {
                            let (key, value) = entry.context("reading the snapshot")?;
                            let Ok(chunk) = <[u8; 2]>::try_from(&*key) else {
                                tally.skip(&self.dir, "snapshot key ", &key);
                                continue;
                            };
                            let chunk = usize::from(u16::from_be_bytes(chunk));
                            let before = tally.records;
                            tally.lines(&self.dir, &value, table, false);
                            if chunk < CHUNKS {
                                tally.chunk_bytes[chunk] = value.len() as u32;
                                tally.chunk_records[chunk] = (tally.records - before) as u32;
                            }
                        }
                        let range = journal.start.to_be_bytes()..journal.end.to_be_bytes();
                        for entry in self.journal.range(range) {
                            let (_, value) = entry.context("reading the journal")?;
                            tally.journal_bytes += value.len() as u64;
                            tally.lines(&self.dir, &value, table, true);
                        }
                        Ok(tally)
                    })
                })
                .collect();
            for worker in workers {
                let found = worker
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))?;
                tally.merge(found);
            }
            Ok(())
        })?;
        if format_1 {
            for entry in self.db.iter() {
                let (key, value) = entry.context("reading the store")?;
                let record = std::str::from_utf8(&value)
                    .ok()
                    .and_then(AtRecord::parse)
                    .filter(|r| r.client().as_bytes() == &*key);
                match record {
                    Some(record) => {
                        tally.records += 1;
                        table.restore_one(record);
                    }
                    None => tally.skip(
                        &self.dir,
                        &format!("{:?} => ", String::from_utf8_lossy(&key)),
                        &value,
                    ),
                }
            }
        }
        Ok(Loaded {
            records: tally.records,
            skipped: tally.skipped,
            rewrite_all: format_1,
            chunk_bytes: tally.chunk_bytes,
            chunk_records: tally.chunk_records,
            journal_dirty: tally.journal_dirty,
            journal_bytes: tally.journal_bytes,
            next_key,
        })
    }
}

/// A journal key as its batch number.
fn key_number(key: &[u8]) -> Result<u64> {
    <[u8; 8]>::try_from(key)
        .map(u64::from_be_bytes)
        .map_err(|_| anyhow!("a journal key is {} bytes, not 8", key.len()))
}

/// Drops a store found unreadable. sled flushes on drop, which on a broken store may fail or
/// panic; neither matters, the folder is moved aside next.
fn forget_quietly(store: Store) {
    let _ = catch_unwind(AssertUnwindSafe(move || drop(store)));
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> &str {
    crate::panics::payload_text(panic.as_ref()).unwrap_or("(no message)")
}

/// Renames `dir` to `<dir>.corrupt-<unix seconds>` beside it (a suffix if that exists).
fn move_aside(dir: &Path) -> Result<PathBuf> {
    let name = dir
        .file_name()
        .ok_or_else(|| anyhow!("{} has no folder name", dir.display()))?
        .to_string_lossy()
        .into_owned();
    let seconds = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let base = dir.with_file_name(format!("{name}.corrupt-{seconds}"));
    let mut aside = base.clone();
    let mut n = 1;
    while aside.exists() {
        n += 1;
        aside = PathBuf::from(format!("{}.{n}", base.display()));
    }
    if !dir.exists() {
        bail!("{} does not exist", dir.display());
    }
    std::fs::rename(dir, &aside)
        .with_context(|| format!("renaming {} to {}", dir.display(), aside.display()))?;
    Ok(aside)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(client: &str, time: &str) -> AtRecord {
        AtRecord::from_parts("Alford", "+0.000000001", client, "+1+1", time).unwrap()
    }

    fn lines(records: &[AtRecord]) -> Vec<String> {
        let mut lines: Vec<String> = records.iter().map(|r| r.line().to_owned()).collect();
        lines.sort();
        lines
    }

    /// Opens the store at `path` into a fresh table; returns both and the report.
    fn open(path: &Path) -> (Arc<Store>, Arc<Table>, OpenReport) {
        let table = Arc::new(Table::new());
        let (store, report) = Store::open(path, &table).unwrap();
        let store = Arc::new(store);
        table.attach_store(Arc::clone(&store));
        (store, table, report)
    }

    /// The records a store holds (the newest per client), read back by opening it again
    /// (after closing it), and the report.
    fn reopened(path: &Path) -> (Vec<AtRecord>, OpenReport) {
        let table = Table::new();
        let (_store, report) = Store::open(path, &table).unwrap();
        let mut all = Vec::new();
        for shard in 0..SHARDS {
            table.visit_shard(shard, |r| all.push(r.clone()));
        }
        (all, report)
    }

    #[test]
    fn accepted_updates_round_trip_through_journal_and_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("Alford");
        let (store, table, report) = open(&path);
        assert_eq!(report.records, 0);
        assert!(report.moved_aside.is_none());
        assert_eq!(table.apply(&record("kiwi", "1.5")), Some(1));
        assert_eq!(table.apply(&record("apple", "2")), Some(2));
        assert_eq!(table.apply(&record("kiwi", "1")), None, "older");
        assert_eq!(store.assigned(), 2);
        store.close().unwrap();
        drop((store, table));
        // From the journal.
        let expected = [record("apple", "2"), record("kiwi", "1.5")];
        assert_eq!(lines(&reopened(&path).0), lines(&expected));

        // Compacted into the snapshot, then updated again in the journal.
        let (store, table, report) = open(&path);
        assert_eq!(report.records, 2);
        compact_now(&store, &table);
        assert!(store.journal.is_empty());
        table.apply(&record("kiwi", "3"));
        store.close().unwrap();
        drop((store, table));
        let (all, report) = reopened(&path);
        assert_eq!(report.records, 3, "snapshot (2) and journal (1)");
        assert_eq!(
            lines(&all),
            lines(&[record("apple", "2"), record("kiwi", "3")])
        );
    }

    fn compact_now(store: &Store, table: &Table) {
        let mut state = store.state();
        store.write_pending(&mut state).unwrap();
        store.compact(&mut state, table).unwrap();
    }

    #[test]
    fn chunks_live_in_the_shard_of_their_clients() {
        for i in 0..1000 {
            let client = format!("c{i}");
            assert_eq!(
                client_chunk(&client) % SHARDS,
                crate::record::client_bucket(&client) as usize % SHARDS
            );
        }
    }

    #[test]
    fn format_1_stores_are_read_and_rewritten_as_snapshots() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("Old");
        {
            let db = sled::open(&path).unwrap();
            db.open_tree(META_TREE)
                .unwrap()
                .insert(MARKER_KEY, MARKER_V1)
                .unwrap();
            for r in [record("kiwi", "1"), record("apple", "2")] {
                db.insert(r.client(), r.line()).unwrap();
            }
            db.insert("junk", "not an AT line").unwrap();
            db.flush().unwrap();
        }
        let (store, table, report) = open(&path);
        assert_eq!(report.records, 2);
        assert_eq!(report.skipped, 1);
        assert!(store.state().compaction_due());
        compact_now(&store, &table);
        assert!(store.db.is_empty(), "format-1 entries cleared");
        store.close().unwrap();
        drop((store, table));
        assert_eq!(
            lines(&reopened(&path).0),
            lines(&[record("apple", "2"), record("kiwi", "1")])
        );
    }

    #[test]
    fn garbage_lines_are_skipped_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("A");
        let (store, table, _) = open(&path);
        table.apply(&record("kiwi", "1"));
        store.flush().unwrap();
        store
            .journal
            .insert(99u64.to_be_bytes(), &b"not an AT line\n\xff\xfe\n"[..])
            .unwrap();
        store.close().unwrap();
        drop((store, table));
        let (found, report) = reopened(&path);
        assert_eq!(lines(&found), lines(&[record("kiwi", "1")]));
        assert_eq!(report.skipped, 2);
        assert!(report.moved_aside.is_none());
    }

    #[test]
    fn an_unopenable_store_is_moved_aside_and_replaced() {
        a_damaged_store_is_moved_aside(garble_conf);
    }

    #[test]
    fn a_store_sled_silently_empties_is_moved_aside_too() {
        // sled 0.34 opens a store whose log is truncated or overwritten as an empty one,
        // without an error: the marker is what tells.
        a_damaged_store_is_moved_aside(truncate_db);
        a_damaged_store_is_moved_aside(|path| {
            let len = std::fs::metadata(path.join("db")).unwrap().len() as usize;
            std::fs::write(path.join("db"), vec![0x5a; len]).unwrap();
        });
    }

    fn a_damaged_store_is_moved_aside(damage: impl Fn(&Path)) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("Ball");
        let (store, table, _) = open(&path);
        for i in 0..500 {
            table.apply(&record(&format!("c{i}"), "1"));
        }
        compact_now(&store, &table);
        store.close().unwrap();
        drop((store, table));
        damage(&path);
        let (store, table, report) = open(&path);
        let (aside, why) = report.moved_aside.expect("moved aside");
        assert!(!why.is_empty());
        let aside_name = aside.file_name().unwrap().to_string_lossy().into_owned();
        assert!(aside_name.starts_with("Ball.corrupt-"), "{aside_name}");
        assert_eq!(aside.parent(), path.parent());
        assert!(aside.join("conf").exists() && aside.join("db").exists());
        // The fresh store works, and opens again as a healthy one.
        let kept = table.len();
        table.apply(&record("kiwi", "2"));
        compact_now(&store, &table);
        store.close().unwrap();
        drop((store, table));
        let (found, report) = reopened(&path);
        assert!(report.moved_aside.is_none());
        assert_eq!(found.len(), kept + 1);
    }

    #[test]
    fn a_store_in_use_is_refused_not_moved() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("A");
        let (_held, _, _) = open(&path);
        let e = Store::open(&path, &Table::new()).err().expect("locked");
        assert!(format!("{e:#}").contains("in use"), "{e:#}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn strict_writer_releases_every_waiting_writer() {
        let dir = tempfile::tempdir().unwrap();
        let (store, table, _) = open(&dir.path().join("A"));
        store.start_writer(Arc::clone(&table), true);
        let writers: Vec<_> = (0..20)
            .map(|i| {
                let (store, table) = (Arc::clone(&store), Arc::clone(&table));
                tokio::spawn(async move {
                    let seq = table.apply(&record(&format!("c{i}"), "1")).unwrap();
                    store
                        .wait_durable(seq, Duration::from_secs(10))
                        .await
                        .map(|()| seq)
                })
            })
            .collect();
        for w in writers {
            let seq = w.await.unwrap().expect("durable");
            assert!(store.progress().durable >= seq);
        }
        // Nothing written since: returns at once.
        let now = store.assigned();
        assert_eq!(store.wait_durable(now, Duration::ZERO).await, Ok(()));
        store.close().unwrap();
    }

    /// What makes sled 0.34's open fail: a `conf` that is not its `key: value` text.
    fn garble_conf(path: &Path) {
        std::fs::write(path.join("conf"), b"\x00\x01 garbage, not a sled config").unwrap();
    }

    fn truncate_db(path: &Path) {
        let db = std::fs::OpenOptions::new()
            .write(true)
            .open(path.join("db"))
            .unwrap();
        db.set_len(7).unwrap();
    }
}

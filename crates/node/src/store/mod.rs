//! A node's client table on disk, at `data_dir/<Name>/`, written by two threads of its own so
//! that no request ever waits on the disk (except, under strict durability, for the one
//! fdatasync of its batch). sled stays behind this module; nothing else names it.
//!
//! Layout (the way Redis pairs an append-only file with snapshots):
//! - `journal/` (`journal.rs`): numbered segment files of framed, checksummed batches: the AT
//!   lines the table accepted, in the order it accepted them. The store-writer thread
//!   appends one batch per wake-up (10 ms, or at once when a strict reply waits).
//! - sled's `snapshot` tree: key = chunk number (u16, big-endian, [`CHUNKS`] chunks by
//!   client-id hash), value = the AT line of every client in that chunk.
//! - The store-compactor thread (`compaction.rs`) moves the writer to a new segment, rewrites
//!   the chunks that changed since the last compaction from the table, flushes sled, then
//!   deletes the segments it replaced. A strict flush never waits for it.
//!
//! Recovery (`load.rs`) reads the snapshot and replays every segment through the table's
//! newer-wins rule, on every core; order does not matter, so a crash anywhere (half-way
//! through a compaction included) costs at most a longer replay. A torn frame at a segment's
//! end (a crash or power cut mid-write) is cut off and logged.
//!
//! The herd is the primary copy of every update; the store is for a fast local restart. So
//! a store that cannot be opened or read (sled 0.34 has reported corruption after hard kills)
//! never stops a node: it is moved aside within `data_dir` as `<Name>.corrupt-<unix seconds>`
//! (journal included, never deleted, for a post-mortem), logged loudly, and the node starts
//! empty and refills from its neighbours.
//!
//! Durability: `relaxed` writes each batch (write(2)) and fdatasyncs the journal at most every
//! second and on a graceful stop; `strict` fdatasyncs once per batch, and a reply waits for
//! the batch that holds its update (group commit). A write or sync that fails marks the store
//! unhealthy: waiting replies are released with an error (never acknowledged), the journal
//! stops (a segment whose write or fsync failed is never trusted again: Linux may have
//! dropped its dirty pages), and the compactor retries every second by rewriting, from the
//! table, every chunk changed since its last good compaction.

mod compaction;
mod journal;
mod load;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use tokio::sync::watch;

pub use super::table::Seq;
use super::table::{Accepted, Table, SHARDS};
use compaction::SnapshotState;
use herd_wire::record::stable_hash;
use journal::{Frames, Segment};

/// Snapshot chunks. A multiple of the table's shards, so a chunk's clients all live in one
/// shard (chunk % SHARDS) and compaction scans only the shards whose chunks changed; and a
/// multiple of the digest buckets, so the one hash the table takes of a client id gives
/// both its bucket and its chunk.
///
/// Values are kept small (about 6 KiB at a million clients) because sled 0.34 writes a
/// B-tree leaf (up to 16 values) bigger than a quarter segment (128 KiB) as a separate blob
/// and then hardly counts it against `cache_capacity`: with big values sled kept the whole
/// snapshot in memory, about 100 bytes per client.
pub const CHUNKS: usize = 16384;
const _: () = assert!(CHUNKS % SHARDS == 0);
const _: () = assert!(CHUNKS % herd_wire::protocol::DIGEST_BUCKETS == 0);

/// How often the writer takes what the table accepted when nobody waits for it.
const WRITER_TICK: Duration = Duration::from_millis(10);
/// `durability: relaxed`: the journal is fdatasynced at most this often (and on a stop).
const RELAXED_SYNC_EVERY: Duration = Duration::from_secs(1);
/// Group commit's commit delay: under `strict`, once a batch held this many updates the node
/// is busy, and the writer, kicked by a waiting reply, waits [`GATHER`] before it writes, so
/// one fdatasync covers every update that arrives meanwhile. Without it a busy node synced
/// ~2700 times a second, a hundred updates each, and its replies' wake-ups and syncs cost
/// a quarter of its rate (strict/relaxed 0.60x-0.67x; with the wait 0.75x-0.90x). A node
/// with few clients (small batches) syncs at once, so a lone reply is not delayed.
const BUSY_BATCH: u64 = 64;
const GATHER: Duration = Duration::from_micros(500);
/// A batch is framed in pieces of about this size (a frame is read back whole).
const FRAME_BYTES: usize = 1 << 20;
/// The writer moves to a new segment once its segment holds this much, so a restart can
/// replay the journal on several threads, a segment each.
const SEGMENT_BYTES: u64 = 8 << 20;
/// How often an unhealthy store tries again.
const RETRY_EVERY: Duration = Duration::from_secs(1);

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
    sled: load::Sled,
    dir: PathBuf,
    journal_dir: PathBuf,
    /// The table this store keeps: the writer takes what it accepted from its lanes, the
    /// compactor copies its shards. (The table knows nothing of the store.)
    table: Arc<Table>,
    progress: watch::Sender<Progress>,
    /// The last error while the store is unhealthy.
    health: Mutex<Option<String>>,
    /// The journal's state; held while writing (and syncing) a batch, and by the compactor
    /// only to move the writer to a new segment.
    journal: Mutex<JournalState>,
    /// The snapshot's state; held for a whole compaction.
    snapshot: Mutex<SnapshotState>,
    /// Wakes the writer: a reply that waits, or a stop.
    writer_wake: Wake,
    /// Wakes the compactor: a stop.
    compactor_wake: Wake,
    stopping: AtomicBool,
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// How long each journal fdatasync took (`herd_store_fsync_duration_seconds`).
    pub fsync_seconds: crate::metrics::Histogram,
    /// A copy of the journal's `bytes`, for metrics.
    journal_bytes: AtomicU64,
}

/// What the journal holds and where the writer is.
struct JournalState {
    /// The segment batches go to (`None` until the first batch, and after a failure).
    segment: Option<Segment>,
    next_segment: u64,
    /// Segments whose batches are not all in the snapshot yet (the current one included).
    live: Vec<u64>,
    /// Frame bytes in the live segments: what a restart would replay.
    bytes: u64,
    /// Chunks whose clients changed since the last compaction started.
    dirty: Vec<bool>,
    /// Records left the table without an update (expiry) since the last compaction started:
    /// one is due even with nothing written.
    removed: bool,
    /// Every update up to `taken` has left the lanes: journaled, or (while the journal is
    /// broken) only marked in `dirty`.
    taken: Seq,
    /// Every update up to `written` is in the journal (synced or not).
    written: Seq,
    synced_at: Instant,
    last_write: Instant,
    /// A write or sync failed: nothing is journaled until a compaction has rewritten
    /// everything from the table.
    broken: bool,
    /// Failures so far, so a compaction knows whether one happened while it ran.
    failures: u64,
    last_failure: Option<Instant>,
    frames: Frames,
    /// An empty lane, swapped with a full one so both keep their capacity.
    spare: Vec<Accepted>,
}

/// A flag a thread sleeps on.
#[derive(Default)]
struct Wake {
    set: Mutex<bool>,
    cond: Condvar,
    /// Set with `set` and cleared by `wait`: every waiting reply kicks the writer, and all
    /// but the first of a burst skip the lock and the notify.
    pending: AtomicBool,
}

impl Wake {
    fn set(&self) {
        if self.pending.swap(true, Ordering::AcqRel) {
            return;
        }
        *lock(&self.set) = true;
        self.cond.notify_one();
    }

    /// Sleeps until set or `timeout`; returns (and clears) whether it was set.
    fn wait(&self, timeout: Duration) -> bool {
        let set = lock(&self.set);
        let (mut set, _) = self
            .cond
            .wait_timeout_while(set, timeout, |s| !*s)
            .unwrap_or_else(|e| e.into_inner());
        // Cleared with a read-modify-write: it reads what the last skipped `set` wrote, so
        // the updates that waiter queued before it are visible to this wake-up's batch; a
        // `set` from now on wakes the next wait.
        self.pending.swap(false, Ordering::AcqRel);
        std::mem::take(&mut *set)
    }
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
    /// Journal segments whose damaged or torn end was cut off (logged).
    pub torn: usize,
    /// Set when the store could not be opened or read: where the old folder went, and why.
    pub moved_aside: Option<(PathBuf, String)>,
    /// How long opening and reading took.
    pub took: Duration,
}

/// How long `open` waits for sled's lock on a store before calling it in use.
const LOCK_WAIT: Duration = Duration::from_secs(2);

/// The snapshot chunk of a client whose id has stable hash `hash`.
pub fn chunk_of(hash: u64) -> u16 {
    (hash % CHUNKS as u64) as u16
}

/// The snapshot chunk a client's record goes into.
pub fn client_chunk(client: &str) -> u16 {
    chunk_of(stable_hash(client.as_bytes()))
}

impl Store {
    /// Opens (or creates) the store in `dir` and loads every record it holds into `table`
    /// (from several threads at once, newer-wins, nothing queued back); from then on the
    /// table queues what it accepts for this store. A store that sled
    /// cannot open or iterate, with an error or a panic, or whose journal cannot be read, is
    /// moved aside and replaced by an empty one; the report says so (records read before the
    /// failure were still handed over, and the first compaction writes them to the new
    /// store). Errors only when even that fails (no room, no permission), or when another
    /// process holds the store (moving a live store aside would split it in two).
    pub fn open(dir: &Path, table: &Arc<Table>) -> Result<(Store, OpenReport)> {
        let start = Instant::now();
        // sled releases its file lock from a background thread after the last handle drops,
        // and a predecessor may still be exiting: give a held lock a moment to go.
        let mut attempt = load::open_and_load(dir, table);
        while matches!(attempt, Err(load::Failure::Locked(_))) && start.elapsed() < LOCK_WAIT {
            std::thread::sleep(Duration::from_millis(20));
            attempt = load::open_and_load(dir, table);
        }
        let (store, found, moved_aside) = match attempt {
            Ok((store, found)) => (store, found, None),
            // Said in the herd's words: sled's error is a raw `Os { code: 11, .. }`.
            Err(load::Failure::Locked(_)) => {
                let holder = herd_os::port_owner::lock_holder(&dir.join("db")).map_or(
                    "another process".to_owned(),
                    herd_os::port_owner::describe_pid,
                );
                bail!(
                    "the store {} is in use by {holder}: this server already runs (perhaps \
                     under another run_dir); stop that process first",
                    dir.display()
                )
            }
            Err(load::Failure::Unreadable(why)) => {
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
                let (store, found) = load::open_and_load(dir, table).map_err(|e| {
                    anyhow!(
                        "a fresh store at {} cannot be opened either: {}",
                        dir.display(),
                        e.describe()
                    )
                })?;
                // Whatever was read before the failure is in the table: write it all.
                lock(&store.snapshot).rewrite_everything();
                (store, found, Some((aside, why)))
            }
        };
        table.queue_accepted();
        release_free_memory();
        let report = OpenReport {
            dir: dir.to_path_buf(),
            records: found.records,
            skipped: found.skipped,
            torn: found.torn,
            moved_aside,
            took: start.elapsed(),
        };
        Ok((store, report))
    }

    /// The store's folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Records of the chunks marked in `chunks` left the table without an update (they
    /// expired): the next compaction rewrites those chunks from the table, which removes
    /// them from the store, and runs even if nothing else was written.
    pub fn mark_removed(&self, chunks: &[bool]) {
        let mut journal = self.journal();
        for (dirty, &removed) in journal.dirty.iter_mut().zip(chunks) {
            *dirty |= removed;
        }
        journal.removed = true;
    }

    /// The sequence number of the latest accepted update.
    pub fn assigned(&self) -> Seq {
        self.table.assigned()
    }

    /// Frame bytes in the journal's live segments: what a restart would replay (as of the
    /// last write or compaction; read without the journal's lock, which a slow fsync holds).
    pub fn journal_bytes(&self) -> u64 {
        self.journal_bytes.load(Ordering::Relaxed)
    }

    /// `None` while healthy, else the last write or flush error.
    pub fn health(&self) -> Option<String> {
        lock(&self.health).clone()
    }

    /// How far the writer got.
    pub fn progress(&self) -> Progress {
        *self.progress.borrow()
    }

    /// Starts the store-writer thread (every [`WRITER_TICK`], at once when a reply waits, it
    /// journals what the table accepted; with `strict` it then fdatasyncs and publishes the
    /// new durable point) and the store-compactor thread (compacts the journal into the
    /// snapshot from the table when due, and retries after failures).
    pub fn start_writer(self: &Arc<Self>, strict: bool) {
        let writer = Arc::clone(self);
        let compactor = Arc::clone(self);
        let threads = [
            self.spawn("store-writer", move || writer.writer_loop(strict)),
            self.spawn("store-compactor", move || compactor.compactor_loop()),
        ];
        lock(&self.threads).extend(threads);
    }

    fn spawn(self: &Arc<Self>, name: &str, work: impl FnOnce() + Send + 'static) -> JoinHandle<()> {
        let store = Arc::clone(self);
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                // sled 0.34 panics on some damaged files: then the store is unhealthy for
                // good (strict replies are refused at once instead of timing out).
                if let Err(panic) = catch_unwind(AssertUnwindSafe(work)) {
                    let error = anyhow!("the store panicked: {}", panic_message(&panic));
                    store.failed(&mut store.journal(), &error);
                }
            })
            .unwrap_or_else(|e| panic!("cannot start the {name} thread: {e}"))
    }

    /// Stops the writer and compactor (a compaction under way is left for the next start:
    /// nothing is lost, the journal stays), then journals and fdatasyncs whatever is left:
    /// what a graceful stop calls once nothing accepts updates any more. An unhealthy store
    /// gets one last compaction from the table.
    pub fn close(&self) -> Result<()> {
        self.stopping.store(true, Ordering::Release);
        self.writer_wake.set();
        self.compactor_wake.set();
        for thread in std::mem::take(&mut *lock(&self.threads)) {
            let _ = thread.join();
        }
        let broken = self.journal().broken;
        if broken {
            self.compact(false)?;
        }
        self.flush()
    }

    /// Journals everything accepted so far and fdatasyncs it (blocking).
    pub fn flush(&self) -> Result<()> {
        let mut journal = self.journal();
        if journal.broken {
            bail!(
                "the store {} is unhealthy: {}",
                self.dir.display(),
                self.health().unwrap_or_default()
            );
        }
        let done = self
            .write_pending(&mut journal)
            .and_then(|()| self.sync_journal(&mut journal));
        if let Err(e) = &done {
            self.failed(&mut journal, e);
        }
        done.with_context(|| format!("flushing the store {}", self.dir.display()))
    }

    /// Compacts the journal into the snapshot at once, from the table (blocking): what the
    /// compactor does when one is due; for tools and benchmarks.
    pub fn compact_now(&self) -> Result<()> {
        self.compact(false)
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
        self.writer_wake.set();
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

    fn journal(&self) -> MutexGuard<'_, JournalState> {
        lock(&self.journal)
    }

    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    fn writer_loop(&self, strict: bool) {
        // Updates in the last batch written (see [`BUSY_BATCH`]).
        let mut last_batch = 0;
        loop {
            let kicked = self.writer_wake.wait(WRITER_TICK);
            if self.stopping() {
                return;
            }
            if strict && kicked && last_batch >= BUSY_BATCH {
                // Busy: let one fdatasync cover what arrives meanwhile.
                std::thread::sleep(GATHER);
            }
            let mut journal = self.journal();
            if journal.broken {
                // The compactor retries; what arrives meanwhile waits in the lanes.
                continue;
            }
            let durable = self.progress().durable;
            let before = journal.written;
            let written = self.write_pending(&mut journal).and_then(|()| {
                let due = journal.written > durable
                    && (strict || journal.synced_at.elapsed() >= RELAXED_SYNC_EVERY);
                match due {
                    true => self.sync_journal(&mut journal),
                    false => Ok(()),
                }
            });
            last_batch = journal.written.saturating_sub(before);
            if let Err(e) = written {
                self.failed(&mut journal, &e);
            }
        }
    }

    /// Takes every queued update and appends it to the journal as one batch.
    fn write_pending(&self, journal: &mut JournalState) -> Result<()> {
        let JournalState {
            frames,
            spare,
            dirty,
            ..
        } = journal;
        frames.clear();
        let upto = self.table.take_accepted(spare, |accepted| {
            dirty[usize::from(chunk_of(accepted.hash))] = true;
            frames.push_line(accepted.record.line().as_bytes());
        });
        journal.taken = upto;
        if journal.frames.finish().is_empty() {
            journal.written = upto;
            return Ok(());
        }
        self.segment_with_room(journal)?;
        let JournalState {
            frames, segment, ..
        } = journal;
        let batch = frames.finish();
        let segment = segment.as_mut().expect("a segment to write to");
        segment.append(batch).context("writing the journal")?;
        journal.bytes += batch.len() as u64;
        self.journal_bytes.store(journal.bytes, Ordering::Relaxed);
        journal.written = upto;
        journal.last_write = Instant::now();
        Ok(())
    }

    /// Makes sure the writer has a segment that is not full: the first batch after a start
    /// or a failure creates one, and a full one is synced (what `relaxed` promises holds for
    /// it too) and replaced by the next.
    fn segment_with_room(&self, journal: &mut JournalState) -> Result<()> {
        if journal
            .segment
            .as_ref()
            .is_some_and(|s| s.bytes < SEGMENT_BYTES)
        {
            return Ok(());
        }
        if let Some(full) = journal.segment.take() {
            full.sync().context("fdatasync of the journal")?;
        }
        let number = journal.next_segment;
        journal.next_segment += 1;
        // Listed before it exists, so a half-created segment is deleted with the rest.
        journal.live.push(number);
        let segment = Segment::create(&self.journal_dir, number)
            .with_context(|| format!("creating journal segment {number}"))?;
        journal.segment = Some(segment);
        Ok(())
    }

    /// fdatasyncs the journal and publishes everything written as durable.
    fn sync_journal(&self, journal: &mut JournalState) -> Result<()> {
        if let Some(segment) = &journal.segment {
            let started = Instant::now();
            segment.sync().context("fdatasync of the journal")?;
            self.fsync_seconds
                .observe_nanos(started.elapsed().as_nanos() as u64);
        }
        journal.synced_at = Instant::now();
        let upto = journal.written;
        self.progress.send_if_modified(|p| {
            let newer = upto > p.durable;
            p.durable = p.durable.max(upto);
            newer
        });
        Ok(())
    }

    /// A write, sync or compaction failed: refuse waiting replies, say so once, stop the
    /// journal (the compactor retries from the table).
    fn failed(&self, journal: &mut JournalState, error: &anyhow::Error) {
        let first = !journal.broken;
        journal.broken = true;
        journal.segment = None;
        journal.failures += 1;
        journal.last_failure = Some(Instant::now());
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

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> &str {
    herd_os::panics::payload_text(panic.as_ref()).unwrap_or("(no message)")
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
mod tests;

//! Compaction, on the store-compactor thread: the journal's batches become snapshot chunks,
//! so a restart replays little and the journal's files can go.
//!
//! One compaction: (1) the writer moves to a new segment (a moment under the journal lock;
//! the new file is created before), taking the set of chunks changed so far with it; (2) the
//! changed chunks are rewritten from the table into sled, shard by shard; (3) sled is
//! flushed and fdatasynced; (4) the segments replaced in (1) are deleted. A crash anywhere
//! leaves those segments in place, and replaying them is harmless (newer-wins), so the store
//! is never worse than before. Strict flushes go on in the writer throughout.

use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};

use super::journal::{self, Segment};
use super::load::RECORDS_KEY;
use super::{chunk_of, client_chunk, lock, release_free_memory, Seq, Store, CHUNKS, RETRY_EVERY};
use crate::table::{Table, SHARDS};

/// Compaction runs once the journal and the snapshot together hold this much (the journal
/// at least [`COMPACT_MIN_BYTES`], at most [`COMPACT_MAX_BYTES`]). A restart reads both, and
/// replaying a journal record costs about as much as loading a snapshot one (measured: a
/// million clients, 88 MB of snapshot, load in about 0.6 s on 2 cores; each 100,000 journal
/// records replayed add about 0.07 s): so a restart reads at most about this much, plus
/// what arrives while the compaction that replaces the journal runs, and a million clients
/// restart within a second. Below that, a bigger journal means fewer compactions, each of
/// which rewrites every chunk that changed (under a spread-out load most of the snapshot):
/// at 100,000 clients, 64 MiB of journal per 9 MB snapshot rewritten, where the journal in
/// sled (which held it in memory) was compacted at half the snapshot (4.5 MB).
const RESTART_BYTES: u64 = 104 << 20;
/// A store bigger than [`RESTART_BYTES`] still compacts this seldom.
const COMPACT_MIN_BYTES: u64 = 8 << 20;
/// Disk use, and restarts of small stores: the journal never waits to grow beyond this.
const COMPACT_MAX_BYTES: u64 = 64 << 20;
/// ...or once the journal has been quiet for this long (a quiet node ends up compact).
const COMPACT_IDLE: Duration = Duration::from_secs(5);
/// Table shards whose chunks a compaction writes between two flushes of sled (of 64).
const SHARDS_PER_FLUSH: usize = 4;
/// How often the compactor looks whether one is due.
const COMPACTOR_TICK: Duration = Duration::from_millis(50);

/// What the compactor knows about the snapshot.
pub(super) struct SnapshotState {
    /// The size of each snapshot chunk (bytes and records), and their sum.
    chunk_bytes: Vec<u32>,
    chunk_records: Vec<u32>,
    snapshot_bytes: u64,
    /// Chunks the next compaction must rewrite besides the journal's: those of a compaction
    /// that failed or stopped, or all of them for a store rewritten whole.
    pending: Vec<bool>,
}

impl SnapshotState {
    pub fn new(chunk_bytes: Vec<u32>, chunk_records: Vec<u32>) -> SnapshotState {
        SnapshotState {
            snapshot_bytes: chunk_bytes.iter().map(|&b| u64::from(b)).sum(),
            chunk_bytes,
            chunk_records,
            pending: vec![false; CHUNKS],
        }
    }

    /// The next compaction rewrites every chunk from the table (a fresh store that replaced
    /// a corrupt one).
    pub fn rewrite_everything(&mut self) {
        self.pending = vec![true; CHUNKS];
    }

    /// Journal bytes that start a compaction.
    fn limit(&self) -> u64 {
        RESTART_BYTES
            .saturating_sub(self.snapshot_bytes)
            .clamp(COMPACT_MIN_BYTES, COMPACT_MAX_BYTES)
    }
}

/// The writer's move to a new segment, as the compaction took it.
struct Rotation {
    /// The segment the writer was appending to (fdatasynced before it is dropped).
    old: Option<Segment>,
    /// The segments the compaction replaces, and the bytes they hold.
    replaced: Vec<u64>,
    replaced_bytes: u64,
    /// The chunks changed in them.
    dirty: Vec<bool>,
    /// Every update up to this one is in them (or, for a broken journal, only in the table).
    covers: Seq,
    /// The journal's failures so far.
    failures: u64,
}

/// Makes the calling thread yield the cores to the node's others (nice 10): on a machine
/// with few cores, a compaction takes longer rather than a request waiting behind it.
fn lower_priority() {
    // SAFETY: setpriority takes no pointers; on Linux, a thread id names one thread.
    let done = unsafe {
        let thread = nix::libc::gettid();
        nix::libc::setpriority(nix::libc::PRIO_PROCESS, thread as nix::libc::id_t, 10)
    };
    if done != 0 {
        tracing::debug!(
            "the store compactor keeps its priority: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// What the chunks in `dirty` hold now.
fn dirty_bytes(snapshot: &SnapshotState, dirty: &[bool]) -> u64 {
    let chunks = snapshot.chunk_bytes.iter().zip(dirty);
    chunks.filter(|(_, &d)| d).map(|(&b, _)| u64::from(b)).sum()
}

/// A compaction stopped because the store is closing (not a failure).
#[derive(Debug)]
struct Stopped;

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the store is closing")
    }
}

impl Store {
    pub(super) fn compactor_loop(&self) {
        lower_priority();
        loop {
            self.compactor_wake.wait(COMPACTOR_TICK);
            if self.stopping() {
                return;
            }
            if self.compaction_due() {
                // A failure is reported (and retried) by `compact` itself.
                let _ = self.compact(true);
            }
        }
    }

    pub(super) fn compaction_due(&self) -> bool {
        let snapshot = lock(&self.snapshot);
        let journal = self.journal();
        if journal.broken {
            return journal
                .last_failure
                .is_none_or(|t| t.elapsed() >= RETRY_EVERY);
        }
        journal.bytes >= snapshot.limit()
            || (journal.bytes > 0 && journal.last_write.elapsed() >= COMPACT_IDLE)
            || journal.removed
            || snapshot.pending.iter().any(|&p| p)
    }

    /// Runs one compaction (see the module's comment), all of it, unless the store starts
    /// closing and `may_stop`. On a failure the store is marked unhealthy and everything
    /// the compaction would have rewritten waits for the next one; a compaction that
    /// succeeds while the journal is broken makes the store healthy again.
    pub(super) fn compact(&self, may_stop: bool) -> Result<()> {
        let started = Instant::now();
        let mut snapshot = lock(&self.snapshot);
        let rotation = match self.rotate() {
            Ok(rotation) => rotation,
            Err(e) => {
                self.failed(&mut self.journal(), &e);
                return Err(e);
            }
        };
        let mut dirty = std::mem::replace(&mut snapshot.pending, vec![false; CHUNKS]);
        for (mine, theirs) in dirty.iter_mut().zip(&rotation.dirty) {
            *mine |= theirs;
        }
        let rewritten = self.rewrite(&mut snapshot, &self.table, &rotation, &dirty, may_stop);
        let mut journal = self.journal();
        if let Err(e) = rewritten {
            // Nothing is lost: the replaced segments stay (and are replayed at a restart),
            // and their chunks wait for the next compaction.
            for (mine, theirs) in snapshot.pending.iter_mut().zip(&dirty) {
                *mine |= theirs;
            }
            journal.live.extend(&rotation.replaced);
            journal.bytes += rotation.replaced_bytes;
            self.journal_bytes
                .store(journal.bytes, std::sync::atomic::Ordering::Relaxed);
            if e.downcast_ref::<Stopped>().is_none() {
                self.failed(&mut journal, &e);
            }
            return Err(e);
        }
        for &number in &rotation.replaced {
            let path = journal::segment_path(&self.journal_dir, number);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                // Left in place, it is replayed at the next start: harmless, only slower.
                Err(e) => tracing::warn!("store: cannot delete {}: {e}", path.display()),
            }
        }
        let heals = journal.broken && journal.failures == rotation.failures;
        if heals {
            journal.broken = false;
            journal.last_failure = None;
            *lock(&self.health) = None;
            tracing::warn!("store {} healthy again", self.dir.display());
        }
        let covers = rotation.covers;
        self.progress.send_if_modified(|p| {
            let before = *p;
            p.durable = p.durable.max(covers);
            p.healthy |= heals;
            *p != before
        });
        drop(journal);
        release_free_memory();
        tracing::info!(
            "store compacted: {} journal segments ({:.1} MB) replaced by {} rewritten snapshot \
             chunks ({:.1} MB of {} chunks) in {} ms",
            rotation.replaced.len(),
            rotation.replaced_bytes as f64 / 1e6,
            dirty.iter().filter(|&&d| d).count(),
            dirty_bytes(&snapshot, &dirty) as f64 / 1e6,
            CHUNKS,
            started.elapsed().as_millis()
        );
        Ok(())
    }

    /// Moves the writer to a new segment, created first (outside the journal lock: creating
    /// a file and syncing its folder is not something a strict flush should wait for).
    fn rotate(&self) -> Result<Rotation> {
        let number = {
            let mut journal = self.journal();
            journal.next_segment += 1;
            journal.next_segment - 1
        };
        let segment = Segment::create(&self.journal_dir, number);
        let mut journal = self.journal();
        let segment = match segment {
            Ok(segment) => segment,
            Err(e) => {
                // Half created, perhaps: deleted with the others by a later compaction.
                journal.live.push(number);
                return Err(e).with_context(|| format!("creating journal segment {number}"));
            }
        };
        if journal.broken {
            // Nothing was journaled since the failure: what the lanes hold is rewritten
            // from the table instead (their chunks marked here).
            let journal = &mut *journal;
            let dirty = &mut journal.dirty;
            journal.taken = self.table.take_accepted(&mut journal.spare, |accepted| {
                dirty[usize::from(chunk_of(accepted.hash))] = true;
            });
        }
        let replaced = std::mem::replace(&mut journal.live, vec![number]);
        journal.removed = false;
        self.journal_bytes
            .store(0, std::sync::atomic::Ordering::Relaxed);
        Ok(Rotation {
            old: journal.segment.replace(segment),
            replaced,
            replaced_bytes: std::mem::take(&mut journal.bytes),
            dirty: std::mem::replace(&mut journal.dirty, vec![false; CHUNKS]),
            covers: journal.taken,
            failures: journal.failures,
        })
    }

    /// Steps (2) and (3): the chunks in `dirty`, from the table, into sled, durably; then an
    /// older format's leftovers go.
    fn rewrite(
        &self,
        snapshot: &mut SnapshotState,
        table: &Table,
        rotation: &Rotation,
        dirty: &[bool],
        may_stop: bool,
    ) -> Result<()> {
        if let Some(old) = &rotation.old {
            // What `relaxed` promises for the old segment, should this compaction not finish.
            old.sync().context("fdatasync of the journal")?;
        }
        let mut buffers: Vec<Vec<u8>> = vec![Vec::new(); CHUNKS / SHARDS];
        let mut counts = vec![0u32; CHUNKS / SHARDS];
        let mut records = Vec::new();
        for shard in 0..SHARDS {
            if may_stop && self.stopping() {
                return Err(anyhow!(Stopped));
            }
            if !(shard..CHUNKS).step_by(SHARDS).any(|chunk| dirty[chunk]) {
                continue;
            }
            table.copy_shard(shard, &mut records);
            for record in records.drain(..) {
                let chunk = usize::from(client_chunk(record.client()));
                if dirty[chunk] {
                    let buffer = &mut buffers[chunk / SHARDS];
                    buffer.extend_from_slice(record.line().as_bytes());
                    buffer.push(b'\n');
                    counts[chunk / SHARDS] += 1;
                }
            }
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
                snapshot.snapshot_bytes -= u64::from(snapshot.chunk_bytes[chunk]);
                snapshot.snapshot_bytes += buffer.len() as u64;
                snapshot.chunk_bytes[chunk] = buffer.len() as u32;
                snapshot.chunk_records[chunk] = std::mem::take(&mut counts[slot]);
                buffer.clear();
            }
            self.sled
                .snapshot
                .apply_batch(batch)
                .context("writing the snapshot")?;
            if shard % SHARDS_PER_FLUSH == SHARDS_PER_FLUSH - 1 {
                // A piece at a time to the disk, rather than all of it at the end: a strict
                // fdatasync of the journal queues behind one piece's writes, not the whole
                // snapshot's.
                self.sled.db.flush().context("sled flush")?;
            }
        }
        let records: u64 = snapshot.chunk_records.iter().map(|&n| u64::from(n)).sum();
        self.sled
            .meta
            .insert(RECORDS_KEY, &records.to_be_bytes())
            .context("writing the snapshot's size")?;
        // The snapshot must be on disk before anything it replaces goes.
        self.sled.sync()
    }
}

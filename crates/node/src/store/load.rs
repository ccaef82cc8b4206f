//! Opening a store and reading it back: sled's snapshot and the journal's segments, into
//! the table in bulk on every core. Also the store's format marker, and what makes a store unreadable.

use std::fs::File;
use std::ops::Range;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use tokio::sync::watch;

use super::compaction::SnapshotState;
use super::journal::{self, Frames};
use super::{chunk_of, panic_message, JournalState, Progress, Store, Wake, CHUNKS, FRAME_BYTES};
use crate::table::Table;
use herd_wire::record::AtRecord;

/// A separate sled tree for the store's own bookkeeping, apart from the client records.
pub(super) const META_TREE: &str = "herd-meta";
pub(super) const SNAPSHOT_TREE: &str = "snapshot";
/// Written (and flushed) when a store is created. sled 0.34 opens a store whose log is
/// garbled or truncated as an empty one, without an error; a store that existed but lacks
/// this marker is such a store, and is treated as one that failed to open.
pub(super) const MARKER_KEY: &str = "format";
/// The journal in segment files (`journal.rs`), the snapshot in sled. (Formats 1 and 2
/// came from development builds before 0.1.0 and are not read: such a store is moved aside
/// like an unreadable one, and the node refills from its neighbours.)
pub(super) const MARKER_VALUE: &str = "herdctl store 3";
/// Meta key: how many records the snapshot held after the last compaction (u64,
/// big-endian), so a restart can size the table once instead of growing it.
pub(super) const RECORDS_KEY: &str = "snapshot records";

/// sled keeps up to this much of the store in memory (its default is 1 GiB). The table is
/// the copy that answers queries; sled only needs room for the pages being written.
const CACHE_BYTES: u64 = 16 << 20;

/// sled's side of the store.
pub(super) struct Sled {
    pub db: sled::Db,
    pub snapshot: sled::Tree,
    pub meta: sled::Tree,
    /// sled's log file, for an fdatasync after sled's own flush (see [`Sled::sync`]).
    log_file: File,
}

impl Sled {
    /// Flushes sled, then fdatasyncs its log. sled 0.34's flush ends with
    /// `sync_file_range`, which neither waits for the drive's cache nor syncs the file's
    /// size after the log grew; an fdatasync of the same file afterwards does both, so a
    /// flushed snapshot survives a power cut too, not only a crash of this process.
    pub fn sync(&self) -> Result<()> {
        self.db.flush().context("sled flush")?;
        self.log_file
            .sync_data()
            .context("fdatasync of sled's log")?;
        Ok(())
    }
}

/// Why a store could not be used.
pub(super) enum Failure {
    /// Another process holds sled's lock on the store: leave it alone.
    Locked(anyhow::Error),
    /// Corrupt or otherwise unusable: move it aside.
    Unreadable(String),
}

impl Failure {
    pub fn describe(&self) -> String {
        match self {
            Failure::Locked(e) => format!("{e:#}"),
            Failure::Unreadable(why) => why.clone(),
        }
    }
}

/// What reading a store back found, for the report.
pub(super) struct Found {
    pub records: usize,
    pub skipped: usize,
    pub torn: usize,
}

/// Opens the store in `dir` and reads every record into `table`, turning sled errors and
/// panics (sled 0.34 panics on some corrupt files) and unreadable journal files into a
/// [`Failure`].
pub(super) fn open_and_load(dir: &Path, table: &Arc<Table>) -> Result<(Store, Found), Failure> {
    let existed = dir.join("db").exists();
    let opened = catch_unwind(AssertUnwindSafe(|| {
        sled::Config::new()
            .path(dir)
            // Only compactions write sled, and each ends with a flush of its own.
            .flush_every_ms(None)
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
    let meta = db.open_tree(META_TREE).map_err(unreadable)?;
    let log_file = File::open(dir.join("db"))
        .map_err(|e| Failure::Unreadable(format!("cannot open its log file: {e}")))?;
    let sled = Sled {
        db,
        snapshot,
        meta,
        log_file,
    };
    let caught = |what: &str, panic| {
        Failure::Unreadable(format!(
            "sled panicked while {what}: {}",
            panic_message(&panic)
        ))
    };
    // A store found unreadable is dropped before it is moved aside. sled flushes on drop,
    // which on a broken store may fail or panic; neither matters.
    let forget = |sled: Sled| {
        let _ = catch_unwind(AssertUnwindSafe(move || drop(sled)));
    };
    let journal_dir = dir.join(journal::DIR);
    // Checking the marker, listing the journal and reading everything: one guarded step.
    let loaded = catch_unwind(AssertUnwindSafe(|| {
        check_marker(&sled, existed)?;
        let segments = journal::list(&journal_dir)
            .with_context(|| format!("listing {}", journal_dir.display()))?;
        if !existed {
            journal::sync_dir(dir).context("syncing the new store's folder")?;
        }
        load(&sled, dir, &segments, table).map(|loaded| (loaded, segments))
    }));
    let (loaded, segments) = match loaded {
        Ok(Ok(loaded)) => loaded,
        Ok(Err(e)) => {
            forget(sled);
            return Err(Failure::Unreadable(format!("{e:#}")));
        }
        Err(panic) => {
            forget(sled);
            return Err(caught("reading", panic));
        }
    };
    let found = Found {
        records: loaded.records,
        skipped: loaded.skipped,
        torn: loaded.torn,
    };
    let now = Instant::now();
    let journal = JournalState {
        segment: None,
        next_segment: segments.last().map_or(1, |last| last + 1),
        live: segments,
        bytes: loaded.journal_bytes,
        dirty: loaded.journal_dirty,
        removed: table.counts().expired > 0,
        taken: 0,
        written: 0,
        synced_at: now,
        last_write: now,
        broken: false,
        failures: 0,
        last_failure: None,
        frames: Frames::new(FRAME_BYTES),
        spare: Vec::new(),
    };
    let snapshot = SnapshotState::new(loaded.chunk_bytes, loaded.chunk_records);
    let store = Store {
        sled,
        dir: dir.to_path_buf(),
        journal_dir,
        table: Arc::clone(table),
        progress: watch::Sender::new(Progress {
            durable: 0,
            healthy: true,
        }),
        health: Mutex::new(None),
        journal: Mutex::new(journal),
        snapshot: Mutex::new(snapshot),
        writer_wake: Wake::default(),
        compactor_wake: Wake::default(),
        stopping: AtomicBool::new(false),
        threads: Mutex::new(Vec::new()),
        fsync_seconds: crate::metrics::Histogram::new(crate::metrics::LATENCY_BOUNDS),
        journal_bytes: AtomicU64::new(loaded.journal_bytes),
    };
    Ok((store, found))
}

/// Checks the creation marker of a store that `existed` before this open, or writes it
/// (durably) into a new one.
fn check_marker(sled: &Sled, existed: bool) -> Result<()> {
    match sled
        .meta
        .get(MARKER_KEY)
        .context("reading the store's marker")?
    {
        Some(value) if &*value == MARKER_VALUE.as_bytes() => Ok(()),
        Some(value) => bail!(
            "the store's marker reads {:?}, not {MARKER_VALUE:?}",
            String::from_utf8_lossy(&value)
        ),
        None if existed => bail!(
            "sled opened it without error, but its creation marker is gone: its log was \
             unreadable and sled started it over empty"
        ),
        None => {
            sled.meta
                .insert(MARKER_KEY, MARKER_VALUE)
                .context("writing the store's marker")?;
            sled.sync()?;
            Ok(())
        }
    }
}

/// A piece of the store for one reader thread.
enum Work {
    /// A journal segment, whole.
    Segment(u64),
    /// A range of snapshot chunks.
    Chunks(Range<u16>),
}

/// Reads the snapshot and the journal segments into `table`,
/// several threads at once: each takes the next piece of work (a segment, a range of
/// chunks) and parses its values as they come, so memory holds about one value (or segment)
/// per thread, not the store. Replay order does not matter: the table keeps the newest.
fn load(sled: &Sled, dir: &Path, segments: &[u64], table: &Table) -> Result<Tally> {
    if let Some(count) = sled
        .meta
        .get(RECORDS_KEY)
        .context("reading the meta tree")?
    {
        if let Ok(bytes) = <[u8; 8]>::try_from(&*count) {
            table.reserve(u64::from_be_bytes(bytes) as usize);
        }
    }
    let threads = reader_threads();
    // Segments first: they are the biggest pieces.
    let mut work: Vec<Work> = segments.iter().map(|&n| Work::Segment(n)).collect();
    let pieces = threads * 4;
    let per_piece = CHUNKS.div_ceil(pieces);
    work.extend(
        (0..pieces).map(|p| {
            Work::Chunks((p * per_piece) as u16..((p + 1) * per_piece).min(CHUNKS) as u16)
        }),
    );
    let journal_dir = dir.join(journal::DIR);
    let next = AtomicUsize::new(0);
    let mut tally = Tally::new();
    std::thread::scope(|scope| -> Result<()> {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| -> Result<Tally> {
                    let mut tally = Tally::new();
                    while let Some(piece) = work.get(next.fetch_add(1, Ordering::Relaxed)) {
                        match piece {
                            Work::Segment(number) => {
                                let path = journal::segment_path(&journal_dir, *number);
                                tally.segment(dir, &path, table)?;
                            }
                            Work::Chunks(chunks) => tally.chunks(sled, dir, chunks, table)?,
                        }
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
    Ok(tally)
}

/// Reading threads at start-up: the machine's cores, at most four.
fn reader_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(4))
}

/// What reader threads found (each its own, merged), and so what reading the store found.
struct Tally {
    records: usize,
    skipped: usize,
    torn: usize,
    /// The size of each snapshot chunk read (bytes and records).
    chunk_bytes: Vec<u32>,
    chunk_records: Vec<u32>,
    journal_bytes: u64,
    /// The chunks of the records read from a journal (not in the snapshot yet).
    journal_dirty: Vec<bool>,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            records: 0,
            skipped: 0,
            torn: 0,
            chunk_bytes: vec![0; CHUNKS],
            chunk_records: vec![0; CHUNKS],
            journal_bytes: 0,
            journal_dirty: vec![false; CHUNKS],
        }
    }

    /// Adds what another reader found (each read its own pieces).
    fn merge(&mut self, other: Tally) {
        self.records += other.records;
        self.skipped += other.skipped;
        self.torn += other.torn;
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

    /// Reads snapshot chunks `chunks`.
    fn chunks(
        &mut self,
        sled: &Sled,
        dir: &Path,
        chunks: &Range<u16>,
        table: &Table,
    ) -> Result<()> {
        let range = chunks.start.to_be_bytes()..chunks.end.to_be_bytes();
        for entry in sled.snapshot.range(range) {
            let (key, value) = entry.context("reading the snapshot")?;
            let Ok(chunk) = <[u8; 2]>::try_from(&*key) else {
                self.skip(dir, "snapshot key ", &key);
                continue;
            };
            let chunk = usize::from(u16::from_be_bytes(chunk));
            let before = self.records;
            self.lines(dir, &value, table, false);
            if chunk < CHUNKS {
                self.chunk_bytes[chunk] = value.len() as u32;
                self.chunk_records[chunk] = (self.records - before) as u32;
            }
        }
        Ok(())
    }

    /// Replays journal segment `path`, and cuts off its end where it stops being whole.
    fn segment(&mut self, dir: &Path, path: &Path, table: &Table) -> Result<()> {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let torn = journal::frames(&bytes, |payload| {
            self.journal_bytes += payload.len() as u64;
            self.lines(dir, payload, table, true);
        });
        drop(bytes);
        if let Some(torn) = torn {
            self.torn += 1;
            tracing::warn!(
                "store {}: journal segment {} is torn at byte {} ({}): cut off the {} bytes \
                 after it (an update the crash interrupted; the neighbours hold it)",
                dir.display(),
                path.display(),
                torn.valid,
                torn.why,
                torn.cut
            );
            if let Err(e) = journal::cut(path, torn.valid) {
                // It is never read past the tear, nor appended to: cutting it is tidiness.
                tracing::warn!(
                    "store {}: cannot cut {}: {e}",
                    dir.display(),
                    path.display()
                );
            }
        }
        Ok(())
    }

    /// Parses the `\n`-terminated AT lines in `value` into `table`; lines `from_journal`
    /// mark their chunks dirty.
    fn lines(&mut self, dir: &Path, value: &[u8], table: &Table, from_journal: bool) {
        for line in value.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            match std::str::from_utf8(line)
                .ok()
                .and_then(AtRecord::from_store)
            {
                Some((record, client)) => {
                    self.records += 1;
                    let (hash, expired) = table.restore(&record, client);
                    // An expired record is left out, and its chunk rewritten without it.
                    if from_journal || expired {
                        self.journal_dirty[usize::from(chunk_of(hash))] = true;
                    }
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

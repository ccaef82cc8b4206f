//! A node's client table on disk: a sled store at `data_dir/<Name>/`, keyed by client id,
//! each value the client's AT line exactly as the table holds it. sled stays behind this
//! module; nothing else names it.
//!
//! The herd is the primary copy of every update; the store is for a fast local restart. So
//! a store that cannot be opened or read (sled 0.34 has reported corruption after hard kills)
//! never stops a node: it is moved aside within `data_dir` as `<Name>.corrupt-<unix seconds>`
//! (never deleted, for a post-mortem), logged loudly, and the node starts empty and refills
//! from its neighbours.
//!
//! Writes reach sled's in-memory log at once and the disk on a flush: sled's own flusher runs
//! at most every second, a graceful stop flushes, and strict durability adds a group commit
//! (see [`Store::spawn_group_commit`]).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use crate::record::AtRecord;

/// A separate sled tree for the store's own bookkeeping, apart from the client keys.
const META_TREE: &str = "herd-meta";
/// Written (and flushed) when a store is created. sled 0.34 opens a store whose log is
/// garbled or truncated as an empty one, without an error; a store that existed but lacks
/// this marker is such a store, and is treated as one that failed to open.
const MARKER_KEY: &str = "format";
const MARKER_VALUE: &str = "herdctl store 1";

/// sled keeps up to this much of the store in memory (its default is 1 GiB). The table is
/// the copy that answers queries; sled only needs room for the pages being written.
const CACHE_BYTES: u64 = 64 << 20;
/// sled's own periodic flush: what `durability: relaxed` promises.
const FLUSH_EVERY_MS: u64 = 1000;
/// How long the group-commit flusher waits before retrying a flush that failed.
const FLUSH_RETRY: Duration = Duration::from_millis(200);

/// A sequence number for writes: the n-th [`Store::put`] gets n (from 1). A flush that
/// starts after put n returned makes writes 1..=n durable.
pub type Seq = u64;

pub struct Store {
    db: sled::Db,
    /// sled's log file, for an fdatasync after sled's own flush (see [`Store::flush`]).
    log_file: std::fs::File,
    dir: PathBuf,
    /// The sequence number of the latest completed put.
    written: AtomicU64,
    /// The highest sequence number known to be on disk (group commit only).
    flushed: watch::Sender<Seq>,
    /// Wakes the group-commit flusher when a writer waits.
    wake: Notify,
}

/// What opening found.
#[derive(Debug)]
pub struct OpenReport {
    /// The store's folder.
    pub dir: PathBuf,
    /// Every record read back, one per client.
    pub records: Vec<AtRecord>,
    /// Entries that did not hold a valid AT line for their key (skipped, logged).
    pub skipped: usize,
    /// Set when the store could not be opened or read: where the old folder went, and why.
    pub moved_aside: Option<(PathBuf, String)>,
    /// How long opening and reading took.
    pub took: Duration,
}

/// Everything a store holds, read back.
#[derive(Debug, Default)]
pub struct Loaded {
    pub records: Vec<AtRecord>,
    pub skipped: usize,
}

/// How long `open` waits for sled's lock on a store before calling it in use.
const LOCK_WAIT: Duration = Duration::from_secs(2);

impl Store {
    /// Opens (or creates) the store in `dir` and reads it back. A store that sled cannot open
    /// or iterate, with an error or a panic, is moved aside and replaced by an empty one; the
    /// report says so. Errors only when even that fails (no room, no permission), or when
    /// another process holds the store (moving a live store aside would split it in two).
    pub fn open(dir: &Path) -> Result<(Store, OpenReport)> {
        let start = Instant::now();
        // sled releases its file lock from a background thread after the last handle drops,
        // and a predecessor may still be exiting: give a held lock a moment to go.
        let mut attempt = open_and_load(dir);
        while matches!(attempt, Err(Failure::Locked(_))) && start.elapsed() < LOCK_WAIT {
            std::thread::sleep(Duration::from_millis(20));
            attempt = open_and_load(dir);
        }
        match attempt {
            Ok((store, loaded)) => {
                let report = OpenReport {
                    dir: dir.to_path_buf(),
                    records: loaded.records,
                    skipped: loaded.skipped,
                    moved_aside: None,
                    took: start.elapsed(),
                };
                Ok((store, report))
            }
            Err(Failure::Locked(e)) => Err(e.context(format!(
                "the store {} is in use by another process; is this node already running?",
                dir.display()
            ))),
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
                let (store, loaded) = open_and_load(dir).map_err(|e| {
                    anyhow!(
                        "a fresh store at {} cannot be opened either: {}",
                        dir.display(),
                        e.describe()
                    )
                })?;
                let report = OpenReport {
                    dir: dir.to_path_buf(),
                    records: loaded.records,
                    skipped: loaded.skipped,
                    moved_aside: Some((aside, why)),
                    took: start.elapsed(),
                };
                Ok((store, report))
            }
        }
    }

    /// The store's folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every record in the store. An entry whose value is not a valid AT line for its key is
    /// skipped, counted and logged; a sled error (a store unreadable past some point) is an
    /// error.
    pub fn load(&self) -> Result<Loaded> {
        let mut loaded = Loaded::default();
        for entry in self.db.iter() {
            let (key, value) = entry.context("reading the store")?;
            let record = std::str::from_utf8(&value)
                .ok()
                .and_then(AtRecord::parse)
                .filter(|r| r.client().as_bytes() == &*key);
            match record {
                Some(record) => loaded.records.push(record),
                None => {
                    loaded.skipped += 1;
                    tracing::warn!(
                        "store {}: skipped entry {:?} => {:?}: not a valid AT line for that client",
                        self.dir.display(),
                        String::from_utf8_lossy(&key),
                        String::from_utf8_lossy(&value)
                    );
                }
            }
        }
        Ok(loaded)
    }

    /// Writes `record` as its client's entry and returns its sequence number. Callers decide
    /// what is new (the table calls this under the client's shard lock, so the store never
    /// receives an older record after a newer one for the same client; the counter below
    /// still only reaches n once puts 1..=n have all inserted, whichever shard they were in). A write error is logged: the node keeps serving
    /// from memory, and the herd still holds the update.
    pub fn put(&self, record: &AtRecord) -> Seq {
        if let Err(e) = self
            .db
            .insert(record.client().as_bytes(), record.line().as_bytes())
        {
            tracing::error!(
                "store {}: cannot write {}: {e}",
                self.dir.display(),
                record.line()
            );
        }
        // After the insert: whoever sees this number also sees the insert done.
        self.written.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// The sequence number of the latest completed write.
    pub fn written(&self) -> Seq {
        self.written.load(Ordering::Acquire)
    }

    /// Writes everything so far to disk (blocking). sled 0.34's flush ends with
    /// `sync_file_range`, which neither waits for the drive's cache nor syncs the file's
    /// size after the log grew; an fdatasync of the same file afterwards does both, so a
    /// flushed update survives a power cut too, not only a crash of this process.
    pub fn flush(&self) -> Result<()> {
        self.db
            .flush()
            .and_then(|_| Ok(self.log_file.sync_data()?))
            .with_context(|| format!("flushing the store {}", self.dir.display()))?;
        Ok(())
    }

    /// Strict durability's group commit: one task flushes whenever writers are waiting, and
    /// every write that completed before a flush started is durable when it ends. Writers
    /// that arrive during a flush are covered by the next one, so N concurrent updates cost
    /// about one fsync. Returns the task (it runs until aborted).
    pub fn spawn_group_commit(self: &Arc<Self>) -> JoinHandle<()> {
        let store = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                let target = store.written();
                if target <= *store.flushed.borrow() {
                    store.wake.notified().await;
                    continue;
                }
                let flusher = Arc::clone(&store);
                let flushed = tokio::task::spawn_blocking(move || flusher.flush()).await;
                match flushed {
                    Ok(Ok(())) => {
                        store.flushed.send_replace(target);
                    }
                    Ok(Err(e)) => {
                        tracing::error!("{e:#}; strict replies wait until a flush succeeds");
                        tokio::time::sleep(FLUSH_RETRY).await;
                    }
                    Err(e) => {
                        tracing::error!("store flush task failed: {e}; retrying");
                        tokio::time::sleep(FLUSH_RETRY).await;
                    }
                }
            }
        })
    }

    /// Waits until write `seq` is on disk (needs [`Store::spawn_group_commit`] running).
    pub async fn wait_flushed(&self, seq: Seq) {
        let mut flushed = self.flushed.subscribe();
        if *flushed.borrow_and_update() >= seq {
            return;
        }
        // notify_one keeps a permit if the flusher is busy, so no wake-up is lost.
        self.wake.notify_one();
        let _ = flushed.wait_for(|f| *f >= seq).await;
    }
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

/// Opens the sled store in `dir` and reads every entry, turning sled errors and panics
/// (sled 0.34 panics on some corrupt files) into a [`Failure`].
fn open_and_load(dir: &Path) -> std::result::Result<(Store, Loaded), Failure> {
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
        log_file,
        dir: dir.to_path_buf(),
        written: AtomicU64::new(0),
        flushed: watch::Sender::new(0),
        wake: Notify::new(),
    };
    match catch_unwind(AssertUnwindSafe(|| store.check_marker(existed))) {
        Ok(Ok(())) => {}
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
    }
    match catch_unwind(AssertUnwindSafe(|| store.load())) {
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

impl Store {
    /// Checks the creation marker of a store that `existed` before this open, or writes it
    /// (durably) into a new one.
    fn check_marker(&self, existed: bool) -> Result<()> {
        let meta = self
            .db
            .open_tree(META_TREE)
            .context("opening the store's meta tree")?;
        match meta.get(MARKER_KEY).context("reading the store's marker")? {
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
                meta.insert(MARKER_KEY, MARKER_VALUE)
                    .context("writing the store's marker")?;
                self.flush()
            }
        }
    }
}

/// Drops a store found unreadable. sled flushes on drop, which on a broken store may fail or
/// panic; neither matters, the folder is moved aside next.
fn forget_quietly(store: Store) {
    let _ = catch_unwind(AssertUnwindSafe(move || drop(store)));
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_owned())
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

    #[test]
    fn put_then_load_round_trips_after_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("Alford");
        let (store, report) = Store::open(&path).unwrap();
        assert!(report.records.is_empty() && report.moved_aside.is_none());
        assert_eq!(store.put(&record("kiwi", "1.5")), 1);
        assert_eq!(store.put(&record("apple", "2")), 2);
        assert_eq!(store.written(), 2);
        store.flush().unwrap();
        drop(store);
        let (store, report) = Store::open(&path).unwrap();
        let expected = [record("apple", "2"), record("kiwi", "1.5")];
        assert_eq!(lines(&report.records), lines(&expected));
        assert_eq!(report.skipped, 0);
        assert_eq!(lines(&store.load().unwrap().records), lines(&expected));
    }

    #[test]
    fn a_later_put_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(&dir.path().join("A")).unwrap();
        store.put(&record("kiwi", "1"));
        store.put(&record("kiwi", "2"));
        let loaded = store.load().unwrap();
        assert_eq!(lines(&loaded.records), lines(&[record("kiwi", "2")]));
    }

    #[test]
    fn garbage_values_are_skipped_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("A");
        let (store, _) = Store::open(&path).unwrap();
        store.put(&record("kiwi", "1"));
        store.db.insert("junk", "not an AT line").unwrap();
        store.db.insert("bytes", &[0xff, 0xfe][..]).unwrap();
        // A valid line filed under another client's key is not trusted either.
        store
            .db
            .insert("other", record("kiwi", "3").line())
            .unwrap();
        store.flush().unwrap();
        drop(store);
        let (_, report) = Store::open(&path).unwrap();
        assert_eq!(lines(&report.records), lines(&[record("kiwi", "1")]));
        assert_eq!(report.skipped, 3);
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
        let (store, _) = Store::open(&path).unwrap();
        for i in 0..500 {
            store.put(&record(&format!("c{i}"), "1"));
        }
        store.flush().unwrap();
        drop(store);
        damage(&path);
        let (store, report) = Store::open(&path).unwrap();
        let (aside, why) = report.moved_aside.expect("moved aside");
        assert!(!why.is_empty());
        let aside_name = aside.file_name().unwrap().to_string_lossy().into_owned();
        assert!(aside_name.starts_with("Ball.corrupt-"), "{aside_name}");
        assert_eq!(aside.parent(), path.parent());
        assert!(aside.join("conf").exists() && aside.join("db").exists());
        assert!(report.records.is_empty());
        // The fresh store works, and opens again as a healthy one.
        store.put(&record("kiwi", "2"));
        store.flush().unwrap();
        drop(store);
        let (_, report) = Store::open(&path).unwrap();
        assert!(report.moved_aside.is_none());
        assert_eq!(lines(&report.records), lines(&[record("kiwi", "2")]));
    }

    #[test]
    fn a_store_in_use_is_refused_not_moved() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("A");
        let (_held, _) = Store::open(&path).unwrap();
        let e = Store::open(&path).err().expect("locked");
        assert!(format!("{e:#}").contains("in use"), "{e:#}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn group_commit_releases_every_waiting_writer() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(&dir.path().join("A")).unwrap();
        let store = Arc::new(store);
        let flusher = store.spawn_group_commit();
        let writers: Vec<_> = (0..20)
            .map(|i| {
                let store = Arc::clone(&store);
                tokio::spawn(async move {
                    let seq = store.put(&record(&format!("c{i}"), "1"));
                    store.wait_flushed(seq).await;
                    seq
                })
            })
            .collect();
        for w in writers {
            let seq = tokio::time::timeout(Duration::from_secs(10), w)
                .await
                .expect("released")
                .unwrap();
            assert!(*store.flushed.borrow() >= seq);
        }
        // Nothing written since: returns at once.
        store.wait_flushed(store.written()).await;
        flusher.abort();
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

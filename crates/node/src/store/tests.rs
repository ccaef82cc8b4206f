use super::*;
use crate::store::load::{MARKER_KEY, META_TREE};
use herd_wire::record::AtRecord;

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
    (store, table, report)
}

/// The records a store holds (the newest per client), read back by opening it again
/// (after closing it), and the report.
fn reopened(path: &Path) -> (Vec<AtRecord>, OpenReport) {
    let table = Arc::new(Table::new());
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
    let before = segment_files(&path);
    assert!(!before.is_empty());
    compact_now(&store);
    assert_eq!(store.journal().bytes, 0);
    assert!(
        segment_files(&path).iter().all(|s| !before.contains(s)),
        "the replaced segments are deleted"
    );
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

fn compact_now(store: &Store) {
    store.flush().unwrap();
    store.compact(false).unwrap();
}

/// The journal segment files of the store at `path`, by name.
fn segment_files(path: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(path.join(journal::DIR))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn chunks_live_in_the_shard_of_their_clients() {
    for i in 0..1000 {
        let client = format!("c{i}");
        assert_eq!(
            usize::from(client_chunk(&client)) % SHARDS,
            herd_wire::record::client_bucket(&client) as usize % SHARDS
        );
    }
}

#[test]
fn garbage_lines_are_skipped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("A");
    let (store, table, _) = open(&path);
    table.apply(&record("kiwi", "1"));
    store.flush().unwrap();
    let mut segment = journal::Segment::create(&path.join(journal::DIR), 99).unwrap();
    let mut frames = Frames::new(FRAME_BYTES);
    frames.push_line(b"not an AT line");
    frames.push_line(b"\xff\xfe");
    segment.append(frames.finish()).unwrap();
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
    compact_now(&store);
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
    compact_now(&store);
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
    let e = Store::open(&path, &Arc::new(Table::new()))
        .err()
        .expect("locked");
    assert!(format!("{e:#}").contains("in use"), "{e:#}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_writer_releases_every_waiting_writer() {
    let dir = tempfile::tempdir().unwrap();
    let (store, table, _) = open(&dir.path().join("A"));
    store.start_writer(true);
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

/// The last segment file of the store at `path`.
fn last_segment(path: &Path) -> PathBuf {
    let name = segment_files(path).pop().expect("a segment");
    path.join(journal::DIR).join(name)
}

#[test]
fn a_torn_or_damaged_journal_tail_is_cut_and_the_rest_recovered() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("A");
    let (store, table, _) = open(&path);
    let whole: Vec<AtRecord> = (0..50).map(|i| record(&format!("c{i}"), "1")).collect();
    whole.iter().for_each(|r| {
        table.apply(r);
    });
    store.flush().unwrap();
    // A second batch that a crash will tear (and a third that a bit flip will damage).
    table.apply(&record("torn", "2"));
    store.flush().unwrap();
    store.close().unwrap();
    drop((store, table));
    let segment = last_segment(&path);
    let length = std::fs::metadata(&segment).unwrap().len();
    let torn_batch = 8 + record("torn", "2").line().len() as u64 + 1;
    // The power went mid-write: the last frame lacks its last bytes.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .unwrap()
        .set_len(length - 3)
        .unwrap();
    let (found, report) = reopened(&path);
    assert_eq!(lines(&found), lines(&whole), "the torn batch is not read");
    assert_eq!((report.torn, report.skipped), (1, 0));
    assert!(report.moved_aside.is_none());
    assert_eq!(
        std::fs::metadata(&segment).unwrap().len(),
        length - torn_batch,
        "cut off at the start of the torn frame"
    );
    // Cut: the next start finds it whole.
    let (found, report) = reopened(&path);
    assert_eq!((found.len(), report.torn), (whole.len(), 0));

    // A flipped byte in a frame's payload: the frame fails its checksum and is cut too
    // (what was in earlier segments and frames stays).
    let (store, table, _) = open(&path);
    table.apply(&record("flipped", "3"));
    store.close().unwrap();
    drop((store, table));
    let segment = last_segment(&path);
    let mut bytes = std::fs::read(&segment).unwrap();
    let last = bytes.len() - 2;
    bytes[last] ^= 1;
    std::fs::write(&segment, bytes).unwrap();
    let (found, report) = reopened(&path);
    assert_eq!(lines(&found), lines(&whole));
    assert_eq!(report.torn, 1);
}

#[test]
fn a_store_from_a_development_format_is_moved_aside_not_misread() {
    // Formats 1 and 2 (before 0.1.0) kept records where this one does not look: read as
    // format 3 they would look empty, and compaction would write over them.
    for old in ["herdctl store 1", "herdctl store 2"] {
        a_damaged_store_is_moved_aside(|path| {
            let db = sled::open(path).unwrap();
            db.open_tree(META_TREE)
                .unwrap()
                .insert(MARKER_KEY, old)
                .unwrap();
            db.flush().unwrap();
        });
    }
}
#[test]
fn a_crash_half_way_through_a_compaction_replays_to_the_newest() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("A");
    let (store, table, _) = open(&path);
    table.apply(&record("kiwi", "1"));
    table.apply(&record("gone", "1"));
    store.flush().unwrap();
    // The segments as they were when a compaction began...
    let journal_dir = path.join(journal::DIR);
    let kept: Vec<(PathBuf, Vec<u8>)> = segment_files(&path)
        .into_iter()
        .map(|name| {
            let file = journal_dir.join(name);
            let bytes = std::fs::read(&file).unwrap();
            (file, bytes)
        })
        .collect();
    table.apply(&record("kiwi", "2"));
    compact_now(&store);
    table.apply(&record("apple", "1"));
    store.close().unwrap();
    drop((store, table));
    // ...are back, as if the process died after sled's flush and before deleting them:
    // the snapshot is newer than them for kiwi, and they are replayed harmlessly.
    for (file, bytes) in &kept {
        assert!(!file.exists(), "deleted by the compaction");
        std::fs::write(file, bytes).unwrap();
    }
    let expected = [
        record("kiwi", "2"),
        record("gone", "1"),
        record("apple", "1"),
    ];
    let (found, report) = reopened(&path);
    assert_eq!(lines(&found), lines(&expected));
    assert_eq!(report.torn, 0);
    // And the next compaction deletes them for good.
    let (store, table, _) = open(&path);
    compact_now(&store);
    assert_eq!(
        segment_files(&path).len(),
        1,
        "only the writer's new segment"
    );
    store.close().unwrap();
    drop((store, table));
    assert_eq!(lines(&reopened(&path).0), lines(&expected));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_write_is_never_durable_and_a_compaction_heals_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("A");
    let (store, table, _) = open(&path);
    table.apply(&record("before", "1"));
    store.flush().unwrap();
    // The disk refuses the next write.
    let segment = last_segment(&path);
    store.journal().segment = Some(journal::Segment::unwritable(&segment).unwrap());
    let seq = table.apply(&record("lost-write", "1")).unwrap();
    assert!(store.flush().is_err());
    assert!(store.health().is_some());
    assert!(!store.progress().healthy);
    assert!(store.progress().durable < seq);
    assert_eq!(
        store.wait_durable(seq, Duration::from_secs(5)).await,
        Err(NotDurable::Unhealthy)
    );
    // Updates while unhealthy wait in memory; the retry rewrites everything from the table.
    let later = table.apply(&record("while-unhealthy", "1")).unwrap();
    store.compact(false).unwrap();
    assert_eq!(store.health(), None);
    let progress = store.progress();
    assert!(
        progress.healthy && progress.durable >= later,
        "{progress:?}"
    );
    // The journal works again.
    let after = table.apply(&record("after", "1")).unwrap();
    store.flush().unwrap();
    assert!(store.progress().durable >= after);
    store.close().unwrap();
    drop((store, table));
    let expected = ["before", "lost-write", "while-unhealthy", "after"].map(|c| record(c, "1"));
    assert_eq!(lines(&reopened(&path).0), lines(&expected));
}

#[test]
fn a_quiet_journal_or_a_big_one_is_due_for_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let (store, table, _) = open(&dir.path().join("A"));
    assert!(!store.compaction_due(), "a new store");
    table.apply(&record("kiwi", "1"));
    store.flush().unwrap();
    assert!(!store.compaction_due(), "just written");
    store.journal().last_write -= Duration::from_secs(6);
    assert!(store.compaction_due(), "quiet for long enough");
    store.journal().last_write = Instant::now();
    store.journal().bytes = 64 << 20;
    assert!(store.compaction_due(), "big enough");
    store.journal().bytes = 1;
    store.close().unwrap();
}

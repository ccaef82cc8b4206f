//! Micro-benchmarks of the node's hot paths: parsing an IAMAT line and formatting its AT
//! reply, building an AtRecord, the table's newer-wins apply, the store path (queueing,
//! the writer's journal and flush, a restart), and the offline places query.
//!
//!     cargo bench --bench hot_paths

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use herdctl::logs::Reorder;
use herdctl::logs::WireLog;
use herdctl::node::store::Store;
use herdctl::node::table::Table;
use herdctl::places::offline::OfflineIndex;
use herdctl::places::NearbyQuery;
use herdctl::protocol::{
    format_skew, format_update, parse_line, push_whatsat_reply, Command, Timestamp,
};
use herdctl::record::AtRecord;

const IAMAT: &[u8] = b"IAMAT kiwi.cs.ucla.edu +34.068930-118.445127 1621464827.959498503";
const RECEIVED: i128 = 1_621_464_828_223_372_000;

fn iamat_record(client: &str, secs: u64) -> AtRecord {
    let line = format!("IAMAT {client} +34.068930-118.445127 {secs}.959498503");
    let Some(Command::Iamat(iamat)) = parse_line(line.as_bytes()) else {
        unreachable!("a valid IAMAT line")
    };
    AtRecord::from_iamat("Alford", RECEIVED, &iamat)
}

fn protocol(c: &mut Criterion) {
    c.bench_function("parse IAMAT line", |b| {
        b.iter(|| parse_line(black_box(IAMAT)).is_some())
    });
    c.bench_function("parse IAMAT + format AT reply", |b| {
        b.iter(|| {
            let Some(Command::Iamat(iamat)) = parse_line(black_box(IAMAT)) else {
                unreachable!()
            };
            let record = AtRecord::from_iamat("Alford", black_box(RECEIVED), &iamat);
            let mut reply = String::with_capacity(record.line().len() + 1);
            reply.push_str(record.line());
            reply.push('\n');
            reply
        })
    });
    let Some(Command::Iamat(iamat)) = parse_line(IAMAT) else {
        unreachable!()
    };
    c.bench_function("AtRecord::from_iamat", |b| {
        b.iter(|| AtRecord::from_iamat("Alford", black_box(RECEIVED), black_box(&iamat)))
    });
    let time = Timestamp::parse("1621464827.959498503").unwrap();
    c.bench_function("format_skew", |b| {
        b.iter(|| format_skew(black_box(RECEIVED), black_box(time)))
    });
    let flooded = format_update(iamat_record("kiwi.cs.ucla.edu", 1_621_464_827).line());
    c.bench_function("parse HERD AT line", |b| {
        b.iter(|| parse_line(black_box(flooded.trim_end().as_bytes())).is_some())
    });
}

fn table(c: &mut Criterion) {
    // 10 000 clients already known; each apply is a newer update for one of them.
    let table = Table::new();
    let clients: Vec<String> = (0..10_000).map(|i| format!("client{i}")).collect();
    for client in &clients {
        table.apply(&iamat_record(client, 1_000_000_000));
    }
    let mut secs = 1_000_000_001;
    let mut i = 0;
    c.bench_function("table apply (newer wins, 10k clients)", |b| {
        b.iter_batched(
            || {
                i = (i + 1) % clients.len();
                secs += 1;
                iamat_record(&clients[i], secs)
            },
            |record| table.apply(&record),
            criterion::BatchSize::SmallInput,
        )
    });
    let stale = iamat_record(&clients[0], 1);
    c.bench_function("table apply (stale, dropped)", |b| {
        b.iter(|| table.apply(black_box(&stale)))
    });
}

/// The store path: what a request pays (queueing for the writer), what the writer pays per
/// update (journal append and flush), and what a restart pays per client.
fn store(c: &mut Criterion) {
    let clients: Vec<String> = (0..100_000).map(|i| format!("client{i}")).collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("A");
    let table = Arc::new(Table::new());
    let (store, _) = Store::open(&path, &table).unwrap();
    let store = Arc::new(store);
    store.start_writer(false);
    let mut secs = 1_000_000_000;
    let mut i = 0;
    c.bench_function(
        "table apply with store writer (request path, 100k clients)",
        |b| {
            b.iter_batched(
                || {
                    i = (i + 1) % clients.len();
                    secs += 1;
                    iamat_record(&clients[i], secs)
                },
                |record| table.apply(&record),
                criterion::BatchSize::SmallInput,
            )
        },
    );
    let mut group = c.benchmark_group("store writer");
    group.sample_size(10);
    group.throughput(criterion::Throughput::Elements(10_000));
    group.bench_function("journal + flush 10k updates", |b| {
        b.iter_batched(
            || {
                (0..10_000)
                    .map(|_| {
                        i = (i + 1) % clients.len();
                        secs += 1;
                        iamat_record(&clients[i], secs)
                    })
                    .collect::<Vec<_>>()
            },
            |records| {
                for record in &records {
                    table.apply(record);
                }
                store.flush().unwrap()
            },
            criterion::BatchSize::LargeInput,
        )
    });
    group.finish();
    store.close().unwrap();
    drop((store, table));

    // A restart, per client: from the snapshot (a compacted store), and from the journal (a
    // store that has not compacted yet: the same clients, one batch each).
    let mut group = c.benchmark_group("store restart");
    group.sample_size(10);
    group.throughput(criterion::Throughput::Elements(clients.len() as u64));
    for compacted in [true, false] {
        let path = dir
            .path()
            .join(if compacted { "snapshot" } else { "journal" });
        let table = Arc::new(Table::new());
        let (store, _) = Store::open(&path, &table).unwrap();
        let store = Arc::new(store);
        for (n, client) in clients.iter().enumerate() {
            table.apply(&iamat_record(client, 1_000_000_000 + n as u64));
        }
        store.flush().unwrap();
        if compacted {
            store.compact_now().unwrap();
        }
        store.close().unwrap();
        drop((store, table));
        let name = match compacted {
            true => "open + restore 100k clients from the snapshot",
            false => "open + replay 100k clients from the journal",
        };
        group.bench_function(name, |b| {
            b.iter(|| {
                let table = Arc::new(Table::new());
                let (store, _) = Store::open(&path, &table).unwrap();
                drop(store);
                table.len()
            })
        });
    }
    group.finish();
}

fn places(c: &mut Criterion) {
    let index = OfflineIndex::embedded();
    let query = NearbyQuery {
        lat: 34.068930,
        lng: -118.445127,
        radius_km: 50.0,
        bound: 20,
    };
    // The document as wire text (rendered straight from typed results).
    c.bench_function("offline search r=50km b=20", |b| {
        b.iter(|| index.search(black_box(query)))
    });
    // What a WHATSAT costs a node besides I/O: the search, the reply and its wire-log line
    // (a full page is over the default 4096-byte log cap).
    let at = "AT Alford +0.263873386 kiwi.cs.ucla.edu +34.068930-118.445127 1621464827.959498503";
    let log = WireLog::discard();
    let mut out = Vec::new();
    c.bench_function("offline WHATSAT reply + log line r=50km b=20", |b| {
        b.iter(|| {
            out.clear();
            push_whatsat_reply(&mut out, at, index.search(black_box(query)).as_str());
            let mut batch = log.batch();
            batch.line(0, "127.0.0.1:5", ">", &out, None);
            batch
        })
    });
}

/// The log writer's share of an IAMAT: a node under closed-loop load hands it batches of 32
/// IAMATs and their replies from each of its two worker threads, whose stamps interleave;
/// the writer holds them 200 ms (`logs.order_window_ms`) and writes what is due every 10 ms
/// (`logs::reorder`). 400 ms of traffic at 600,000 lines/s, measured per line.
fn logs(c: &mut Criterion) {
    const PAIRS_PER_BATCH: usize = 32;
    const STEP_NANOS: i128 = 1_667;
    const LINES: usize = 240_000;
    const TICK_NANOS: i128 = 10_000_000;
    let log = WireLog::discard();
    let reply = b"AT Solo +0.000012345 c12345 +34.068930-118.445127 1621464827.959498503";
    // Each batch with the time it reaches the writer (its last stamp).
    let mut batches: Vec<(Vec<u8>, i128)> = Vec::new();
    let mut at = RECEIVED;
    while batches.len() * PAIRS_PER_BATCH * 2 < LINES {
        let mut pair = [log.batch(), log.batch()];
        for _ in 0..PAIRS_PER_BATCH {
            for (worker, batch) in pair.iter_mut().enumerate() {
                let who = ["127.0.0.1:40001", "127.0.0.1:40002"][worker];
                batch.line(at, who, "<", IAMAT, None);
                batch.line(at + 500, who, ">", reply, None);
                at += STEP_NANOS;
            }
        }
        batches.extend(pair.iter().map(|b| (b.as_bytes().to_vec(), at)));
    }
    let mut group = c.benchmark_group("log writer");
    group.sample_size(10);
    group.throughput(criterion::Throughput::Elements(
        (batches.len() * PAIRS_PER_BATCH * 2) as u64,
    ));
    group.bench_function("hold 200 ms and write in time order, per line", |b| {
        b.iter_batched(
            || batches.clone(),
            |batches| {
                let mut held = Reorder::new(std::time::Duration::from_millis(200));
                let mut out = Vec::with_capacity(4 << 20);
                let mut next_pass = i128::MIN;
                let mut written = 0;
                for (batch, now) in batches {
                    held.add(batch);
                    if now >= next_pass {
                        out.clear();
                        held.release(now, &mut out);
                        written += out.len();
                        next_pass = now + TICK_NANOS;
                    }
                }
                out.clear();
                held.release_all(&mut out);
                written + out.len()
            },
            criterion::BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, protocol, table, store, places, logs);
criterion_main!(benches);

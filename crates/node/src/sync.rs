//! Anti-entropy: how two linked nodes find and repair the differences between their tables.
//! Both ends of every link use this module; `session.rs` decides when.
//!
//! One exchange, started by the dialling end A of a link to B:
//!
//! ```text
//!   A -> B   HERD DIGEST 1024 <hex>   A's table summarised: one hash per bucket of clients
//!   B -> A   HERD SYNC ...  (x k)     B's records in every bucket where the digests differ
//!   B -> A   HERD WANT b1,b2,...      those buckets: A, send yours back
//!   A -> B   HERD SYNC ...  (x m)     A's records in them
//! ```
//!
//! Records are applied through the same newer-wins rule as flooding, so an exchange is safe
//! to repeat and its cost follows the differences, not the table. They are streamed one table
//! shard at a time in chunks of about [`CHUNK_BYTES`] ([`SyncStream`]), so neither end ever
//! holds more than one shard's worth of a big repair (a node that lost a 1M-client store is
//! refilled without either side building the whole answer), and the session forwards floods
//! between chunks. Each end logs one summary line per exchange that found differences
//! (buckets, records, bytes, time), never the records themselves.
//!
//! This module decides what an exchange sends and what it logs; `session.rs` does the I/O.

use std::time::Instant;

use super::table::Table;
use herd_wire::protocol::{format_digest_at, push_sync, Horizons, DIGEST_BUCKETS};
use herd_wire::record::AtRecord;

/// A chunk of SYNC lines is written once it reaches this size.
pub const CHUNK_BYTES: usize = 64 * 1024;

/// `HERD DIGEST ...`: this node's table, summarised, with the expiry horizons it was taken
/// at.
pub fn digest_line(table: &Table) -> String {
    let (digest, horizons) = table.digest_at_horizons();
    format_digest_at(&digest, horizons)
}

/// Whether a neighbour's digest can be compared with this table: taken at the same expiry
/// horizons (or by a node that does not say). Across a horizon's step, two tables differ by
/// what one of them has already swept; comparing them would send records the other side
/// refuses as expired. The next period compares them again.
pub fn comparable(table: &Table, theirs: Option<Horizons>) -> bool {
    theirs.is_none_or(|h| h == table.horizons())
}

/// What the dialling end received between sending its digest and the WANT that closes the
/// neighbour's half of the exchange.
#[derive(Debug, Clone, Copy)]
pub struct Inbound {
    pub started: Instant,
    pub records: u64,
    /// Records that were new here (the rest were already known, or older).
    pub new: u64,
    pub bytes: u64,
}

impl Inbound {
    pub fn new() -> Inbound {
        Inbound {
            started: Instant::now(),
            records: 0,
            new: 0,
            bytes: 0,
        }
    }

    pub fn count(&mut self, new: bool, bytes: usize) {
        self.records += 1;
        self.new += u64::from(new);
        self.bytes += bytes as u64;
    }
}

impl Default for Inbound {
    fn default() -> Inbound {
        Inbound::new()
    }
}

/// Records and bytes one end sent.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    pub records: u64,
    pub bytes: u64,
}

/// The buckets where `theirs` and this node's digest differ: what both ends will send.
pub fn differing(table: &Table, theirs: &[u64]) -> Vec<u16> {
    table.differing_buckets(theirs)
}

/// This node's records in a set of buckets, as `HERD SYNC` lines in chunks of about
/// [`CHUNK_BYTES`]: one table shard (1/64 of the table) is held at a time, so a repair of any
/// size costs a bounded amount of memory. The caller writes each chunk (and may forward
/// other traffic between chunks).
pub struct SyncStream<'a> {
    shards: Box<dyn Iterator<Item = Vec<AtRecord>> + Send + 'a>,
    shard: std::vec::IntoIter<AtRecord>,
    pub sent: Sent,
}

impl<'a> SyncStream<'a> {
    pub fn new(table: &'a Table, buckets: &[u16]) -> SyncStream<'a> {
        SyncStream {
            shards: Box::new(table.records_in(buckets)),
            shard: Vec::new().into_iter(),
            sent: Sent::default(),
        }
    }

    /// Fills `chunk` (cleared first) with the next lines; `false` when there are no more.
    pub fn next_chunk(&mut self, chunk: &mut String) -> bool {
        chunk.clear();
        while chunk.len() < CHUNK_BYTES {
            let record = match self.shard.next() {
                Some(record) => record,
                None => match self.shards.next() {
                    Some(shard) => {
                        self.shard = shard.into_iter();
                        continue;
                    }
                    None => break,
                },
            };
            push_sync(chunk, record.line());
            self.sent.records += 1;
        }
        self.sent.bytes += chunk.len() as u64;
        !chunk.is_empty()
    }
}

/// The accepting end's summary of its half: it answered the neighbour's digest.
pub fn log_answer(from: &str, buckets: &[u16], sent: Sent, started: Instant) {
    if !buckets.is_empty() {
        tracing::info!(
            "anti-entropy with {from}, answering its digest: {} of {DIGEST_BUCKETS} buckets \
             differ; sent {} records ({}) in {} ms and asked for its records in those buckets",
            buckets.len(),
            sent.records,
            human_bytes(sent.bytes),
            started.elapsed().as_millis()
        );
    }
}

/// The dialling end's summary of a whole exchange: what the neighbour sent in answer to its
/// digest (`inbound`) and what it sent back for the buckets `wanted`.
pub fn log_exchange(to: &str, wanted: &[u16], inbound: Inbound, sent: Sent) {
    if !wanted.is_empty() || inbound.records > 0 {
        tracing::info!(
            "anti-entropy with {to}: {} of {DIGEST_BUCKETS} buckets differed; received {} \
             records ({} new, {}), sent {} records ({}) in {} ms",
            wanted.len(),
            inbound.records,
            inbound.new,
            human_bytes(inbound.bytes),
            sent.records,
            human_bytes(sent.bytes),
            inbound.started.elapsed().as_millis()
        );
    }
}

/// `1.2 MB`, `830 B`: byte counts for a log line.
fn human_bytes(bytes: u64) -> String {
    match bytes {
        b if b >= 1_000_000 => format!("{:.1} MB", b as f64 / 1e6),
        b if b >= 1_000 => format!("{:.1} kB", b as f64 / 1e3),
        b => format!("{b} B"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herd_wire::protocol::{parse_line, Command, PeerMessage};

    #[test]
    fn a_stream_sends_every_record_of_the_buckets_in_bounded_chunks() {
        let table = Table::new();
        for i in 0..5000 {
            let time = format!("{i}.5");
            let record =
                AtRecord::from_parts("Alford", "+0.000000001", &format!("c{i}"), "+1+2", &time);
            table.apply(&record.unwrap());
        }
        let all: Vec<u16> = (0..DIGEST_BUCKETS as u16).collect();
        let mut stream = SyncStream::new(&table, &all);
        let (mut chunk, mut lines, mut chunks) = (String::new(), 0, 0);
        while stream.next_chunk(&mut chunk) {
            chunks += 1;
            assert!(chunk.len() < CHUNK_BYTES + 200, "{}", chunk.len());
            for line in chunk.lines() {
                let Some(Command::Peer(PeerMessage::Sync(fields))) = parse_line(line.as_bytes())
                else {
                    panic!("{line:?}");
                };
                let record = AtRecord::from_fields(&fields);
                assert_eq!(table.get(record.client()), Some(record));
                lines += 1;
            }
        }
        assert_eq!((lines, stream.sent.records), (5000, 5000));
        assert!(chunks > 1, "a 5000-record stream spans several chunks");

        // Only the buckets asked for; none at all costs nothing.
        let one = table.get("c7").unwrap().bucket();
        let mut stream = SyncStream::new(&table, &[one]);
        while stream.next_chunk(&mut chunk) {
            assert!(chunk.lines().all(|l| {
                let Some(Command::Peer(PeerMessage::Sync(f))) = parse_line(l.as_bytes()) else {
                    return false;
                };
                AtRecord::from_fields(&f).bucket() == one
            }));
        }
        assert!(stream.sent.records >= 1);
        assert!(!SyncStream::new(&table, &[]).next_chunk(&mut chunk));
    }

    #[test]
    fn byte_counts_read_like_a_person_wrote_them() {
        assert_eq!(human_bytes(830), "830 B");
        assert_eq!(human_bytes(64_512), "64.5 kB");
        assert_eq!(human_bytes(81_234_567), "81.2 MB");
    }
}

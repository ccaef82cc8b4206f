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
//! shard at a time in chunks of at most [`CHUNK_BYTES`], so neither end ever holds more than
//! one shard's worth of a big repair (a node that lost a 1M-client store is refilled without
//! either side building the whole answer). Each end logs one summary line per exchange that
//! found differences (buckets, records, bytes, time), never the records themselves.

use std::time::{Duration, Instant};

use anyhow::Result;
use tokio::io::AsyncWrite;

use super::lines::write_within;
use super::Node;
use crate::protocol::{format_digest, format_want, DIGEST_BUCKETS, PEER_VERB};

/// A chunk of SYNC lines is written once it reaches this size.
pub const CHUNK_BYTES: usize = 64 * 1024;

/// `HERD DIGEST ...`: this node's table, summarised.
pub fn digest_line(node: &Node) -> String {
    format_digest(&node.table.digest())
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

/// The accepting end's half: streams this node's records in every bucket where the
/// neighbour's digest differs, then asks for the neighbour's records in those buckets.
pub async fn answer_digest<W: AsyncWrite + Unpin>(
    node: &Node,
    from: &str,
    theirs: &[u64],
    writer: &mut W,
    deadline: Duration,
) -> Result<()> {
    let started = Instant::now();
    let buckets = node.table.differing_buckets(theirs);
    let sent = send_buckets(node, &buckets, writer, deadline).await?;
    write_within(writer, format_want(&buckets).as_bytes(), deadline).await?;
    if !buckets.is_empty() {
        tracing::info!(
            "anti-entropy with {from}, answering its digest: {} of {} buckets differ; sent {} \
             records ({}) in {} ms and asked for its records in those buckets",
            buckets.len(),
            DIGEST_BUCKETS,
            sent.records,
            human_bytes(sent.bytes),
            started.elapsed().as_millis()
        );
    }
    Ok(())
}

/// The dialling end's half: the neighbour answered this node's digest (its records are in
/// `inbound`) and wants this node's records in `wanted`.
pub async fn send_wanted<W: AsyncWrite + Unpin>(
    node: &Node,
    to: &str,
    wanted: &[u16],
    inbound: Inbound,
    writer: &mut W,
    deadline: Duration,
) -> Result<()> {
    let sent = send_buckets(node, wanted, writer, deadline).await?;
    if !wanted.is_empty() || inbound.records > 0 {
        tracing::info!(
            "anti-entropy with {to}: {} of {} buckets differed; received {} records ({} new, \
             {}), sent {} records ({}) in {} ms",
            wanted.len(),
            DIGEST_BUCKETS,
            inbound.records,
            inbound.new,
            human_bytes(inbound.bytes),
            sent.records,
            human_bytes(sent.bytes),
            inbound.started.elapsed().as_millis()
        );
    }
    Ok(())
}

/// Streams this node's records in `buckets` as `HERD SYNC` lines: one table shard at a
/// time, in chunks of at most [`CHUNK_BYTES`], each written within `deadline`.
async fn send_buckets<W: AsyncWrite + Unpin>(
    node: &Node,
    buckets: &[u16],
    writer: &mut W,
    deadline: Duration,
) -> Result<Sent> {
    let mut sent = Sent::default();
    if buckets.is_empty() {
        return Ok(sent);
    }
    let mut chunk = String::with_capacity(CHUNK_BYTES + 512);
    for shard in node.table.records_in(buckets) {
        for record in shard {
            // `HERD SYNC <origin> <skew> <client> <location> <time>`: the AT line's fields.
            let fields = record.line().strip_prefix("AT ").unwrap_or(record.line());
            chunk.push_str(PEER_VERB);
            chunk.push_str(" SYNC ");
            chunk.push_str(fields);
            chunk.push('\n');
            sent.records += 1;
            if chunk.len() >= CHUNK_BYTES {
                write_within(writer, chunk.as_bytes(), deadline).await?;
                sent.bytes += chunk.len() as u64;
                chunk.clear();
            }
        }
    }
    if !chunk.is_empty() {
        write_within(writer, chunk.as_bytes(), deadline).await?;
        sent.bytes += chunk.len() as u64;
    }
    Ok(sent)
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

    #[test]
    fn byte_counts_read_like_a_person_wrote_them() {
        assert_eq!(human_bytes(830), "830 B");
        assert_eq!(human_bytes(64_512), "64.5 kB");
        assert_eq!(human_bytes(81_234_567), "81.2 MB");
    }
}

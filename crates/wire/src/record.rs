//! A client's location record: the AT line its origin server replied with, the order that
//! decides which of two records is newer, and the hashing that anti-entropy compares.
//!
//! This is the herd's one piece of domain data. The wire format (how a record is parsed and
//! formatted on a connection) lives in `protocol.rs`; this module decides what a record *is*.
//!
//! The small accessors are `#[inline]`: the node's table calls them on every update from
//! another crate, and without it they stay calls (there is no LTO).

use std::cell::RefCell;
use std::fmt;
use std::fmt::Write as _;
use std::sync::Arc;

use crate::protocol::{
    parse_at_line, write_skew, AtFields, Iamat, Location, Timestamp, DIGEST_BUCKETS,
};

/// The AT line the origin server replied with. Stored in the table and flooded between
/// servers.
///
/// One allocation per record: the line, shared by reference count, so the table, the
/// store writer and the flood queues hold the same bytes. The parts that decide which of two
/// records is newer (origin, client, time) are read back from the line when needed: it was
/// checked on the way in and is always in the canonical form `AT <origin> <skew> <client>
/// <location> <time>` (single spaces, no newline), so finding a field is a short scan.
/// Keeping them parsed beside the line would cost more memory per client than reading them
/// costs time (a node holds every client; it compares two records only on an update).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AtRecord {
    line: Arc<str>,
}

thread_local! {
    /// Where a record's line is assembled before it is copied into its one allocation.
    static SCRATCH: RefCell<String> = const { RefCell::new(String::new()) };
}

impl AtRecord {
    /// Builds the record an origin server creates when it accepts an IAMAT.
    pub fn from_iamat(origin: &str, received_nanos: i128, iamat: &Iamat<'_>) -> AtRecord {
        SCRATCH.with_borrow_mut(|line| {
            line.clear();
            line.push_str("AT ");
            line.push_str(origin);
            line.push(' ');
            write_skew(line, received_nanos, iamat.time);
            for part in [iamat.client, iamat.location_text, iamat.time_text] {
                line.push(' ');
                line.push_str(part);
            }
            AtRecord {
                line: Arc::from(line.as_str()),
            }
        })
    }

    /// Builds a record from the checked fields of a flooded `HERD AT` / `HERD SYNC` line.
    pub fn from_fields(fields: &AtFields<'_>) -> AtRecord {
        AtRecord::assemble(fields)
    }

    /// Builds a record from the checked fields of a flooded `HERD AT` / `HERD SYNC` line
    /// (`line`, which `fields` were parsed from). A line in canonical form (what a herdctl
    /// neighbour sends) holds the record's line as it is, so that is copied without being
    /// assembled again.
    pub fn from_wire(fields: &AtFields<'_>, line: &[u8]) -> AtRecord {
        // `HERD AT <fields>` holds the record's line itself; `HERD SYNC <fields>`, its fields.
        if let Some(at) = line.strip_prefix(b"HERD ") {
            if let Some(record) = AtRecord::canonical(fields, at) {
                return record;
            }
        }
        AtRecord::assemble(fields)
    }

    /// The record whose line is `text`, if `text` is `AT` and `fields` (parsed from it)
    /// joined by single spaces; `None` if it is laid out any other way.
    fn canonical(fields: &AtFields<'_>, text: &[u8]) -> Option<AtRecord> {
        let parts = [
            fields.origin,
            fields.skew,
            fields.client,
            fields.location,
            fields.time_text,
        ];
        let canonical_len = "AT".len() + parts.iter().map(|f| 1 + f.len()).sum::<usize>();
        if text.len() != canonical_len || !text.starts_with(b"AT") {
            return None;
        }
        // The fields are in `text` in this order with white space between them, so at this
        // length each gap is one character: each must be a space (not a tab).
        let mut gap = "AT".len();
        for part in parts {
            if text[gap] != b' ' {
                return None;
            }
            gap += 1 + part.len();
        }
        let text = std::str::from_utf8(text).ok()?;
        Some(AtRecord {
            line: Arc::from(text),
        })
    }

    /// Builds a record from its five text fields, checking each (`None` if one is invalid).
    pub fn from_parts(
        origin: &str,
        skew: &str,
        client: &str,
        location: &str,
        time: &str,
    ) -> Option<AtRecord> {
        AtFields::check(origin, skew, client, location, time).map(|f| AtRecord::assemble(&f))
    }

    /// Parses a stored AT line (as kept on disk). A line already in canonical form (what a
    /// store holds) is copied as it is, without being assembled again.
    pub fn parse(line: &str) -> Option<AtRecord> {
        let fields = parse_at_line(line)?;
        AtRecord::canonical(&fields, line.as_bytes()).or_else(|| Some(AtRecord::assemble(&fields)))
    }

    /// A line read back from this node's own store (a snapshot chunk or a journal frame),
    /// checked for its shape only: `AT` and five non-empty fields, single spaces, no control
    /// characters. Every such line was written by this program from a record that was
    /// checked in full when it was made, and damage on disk is caught before a line is read
    /// (journal frames carry a CRC-32, sled checksums what it logs), so parsing every field
    /// again, a third of a restart's time, would find nothing new. Lines that fail even this
    /// are skipped and counted, like any damaged line.
    /// Returns the record and its client id (a slice of `line`, so the caller need not
    /// find it again).
    pub fn from_store(line: &str) -> Option<(AtRecord, &str)> {
        let bytes = line.as_bytes();
        if !bytes.starts_with(b"AT ") {
            return None;
        }
        // One pass: where the four spaces after `AT ` are; no empty field, no control byte.
        let mut spaces = [0usize; 4];
        let mut found = 0;
        let mut field_start = 3;
        for (at, &b) in bytes.iter().enumerate().skip(3) {
            if b == b' ' {
                if at == field_start || found == spaces.len() {
                    return None;
                }
                spaces[found] = at;
                found += 1;
                field_start = at + 1;
            } else if b < 0x20 || b == 0x7f {
                return None;
            }
        }
        if found < spaces.len() || field_start == bytes.len() {
            return None;
        }
        let client = &line[spaces[1] + 1..spaces[2]];
        Some((
            AtRecord {
                line: Arc::from(line),
            },
            client,
        ))
    }

    fn assemble(f: &AtFields<'_>) -> AtRecord {
        SCRATCH.with_borrow_mut(|line| {
            line.clear();
            let _ = write!(
                line,
                "AT {} {} {} {} {}",
                f.origin, f.skew, f.client, f.location, f.time_text
            );
            AtRecord {
                line: Arc::from(line.as_str()),
            }
        })
    }

    /// A tombstone (`herdctl forget`): a record that says "no location" for `client`, made
    /// by server `origin` at `received_nanos` with client time `time` (chosen newer than
    /// what it replaces, so it wins under the one newer-wins order like any update). Its
    /// line is an AT line whose location is `-`, which no IAMAT can produce (a location
    /// needs its signs), so a client can never make one.
    pub fn tombstone(
        origin: &str,
        received_nanos: i128,
        client: &str,
        time: Timestamp,
    ) -> AtRecord {
        SCRATCH.with_borrow_mut(|line| {
            line.clear();
            line.push_str("AT ");
            line.push_str(origin);
            line.push(' ');
            write_skew(line, received_nanos, time);
            let _ = write!(
                line,
                " {client} {TOMBSTONE_LOCATION} {}.{:09}",
                time.secs, time.nanos
            );
            AtRecord {
                line: Arc::from(line.as_str()),
            }
        })
    }

    /// Whether this record is a tombstone: its location field (the one before the time) is
    /// `-`. Read from the end of the line, so it costs a scan of the time field only.
    #[inline]
    pub fn is_tombstone(&self) -> bool {
        let bytes = self.line.as_bytes();
        let last_space = bytes.iter().rposition(|&b| b == b' ').unwrap_or(0);
        last_space >= 2 && &bytes[last_space - 2..last_space] == b" -"
    }

    /// Asks the CPU to start loading this record's allocation (its reference counts and its
    /// line) into the cache, without waiting for it. A table lookup that finds a record
    /// then reads its line (the client to compare, the time to order by) and its count
    /// (to replace it): under a spread-out load that line is in no cache, and one load from
    /// memory is a sixth of a node's time per update. A session that sees the next line in
    /// its buffer asks for its record this way (`Table::prefetch`), so the load runs while
    /// the current line is handled.
    #[inline]
    pub fn prefetch(&self) {
        // An `Arc<str>`'s two counts sit just before its bytes.
        const COUNTS: usize = 2 * std::mem::size_of::<usize>();
        let start = (self.line.as_ptr() as usize).wrapping_sub(COUNTS);
        let end = self.line.as_ptr() as usize + self.line.len();
        let mut at = start & !63;
        while at < end {
            prefetch_cache_line(at);
            at += 64;
        }
    }

    /// The AT line, without newline.
    #[inline]
    pub fn line(&self) -> &str {
        &self.line
    }

    /// Where the field after the one ending at `end` ends (fields are separated by one space).
    #[inline]
    fn field_end(&self, end: usize) -> usize {
        let bytes = self.line.as_bytes();
        bytes[end + 1..]
            .iter()
            .position(|&b| b == b' ')
            .map_or(bytes.len(), |i| end + 1 + i)
    }

    /// The server that first received this IAMAT.
    #[inline]
    pub fn origin(&self) -> &str {
        &self.line["AT ".len()..self.field_end("AT".len())]
    }

    /// The client id.
    #[inline]
    pub fn client(&self) -> &str {
        let skew = self.field_end(self.field_end("AT".len()));
        &self.line[skew + 1..self.field_end(skew)]
    }

    /// The client's timestamp: the primary newer-wins key.
    #[inline]
    pub fn time(&self) -> Timestamp {
        let start = self
            .line
            .as_bytes()
            .iter()
            .rposition(|&b| b == b' ')
            .map_or(0, |i| i + 1);
        Timestamp::parse(&self.line[start..]).expect("an AtRecord's time was validated")
    }

    /// The client's location, parsed again from the line (it was validated on the way in).
    /// A tombstone has none: ask [`AtRecord::is_tombstone`] first.
    pub fn location(&self) -> Location {
        let client = self.field_end(self.field_end(self.field_end("AT".len())));
        let text = &self.line[client + 1..self.field_end(client)];
        Location::parse(text).expect("an AtRecord's location was validated")
    }

    /// The deterministic order between two records for the same client: client time first,
    /// then origin server name, then the whole line, so every server picks the same winner.
    /// This is the herd's one newer-wins rule; `node::table` is the one place that applies it.
    pub fn is_newer_than(&self, other: &AtRecord) -> bool {
        self.is_newer_at(self.time(), other)
    }

    /// [`AtRecord::is_newer_than`] for a caller that knows this record's `time` already
    /// (the table, which has it from the parse that made the record). The origin and the
    /// line are read only on a tie of times.
    #[inline]
    pub fn is_newer_at(&self, time: Timestamp, other: &AtRecord) -> bool {
        debug_assert_eq!(time, self.time());
        match time.cmp(&other.time()) {
            std::cmp::Ordering::Equal => {
                (self.origin(), self.line()) > (other.origin(), other.line())
            }
            order => order == std::cmp::Ordering::Greater,
        }
    }

    /// Which digest bucket this record's client falls in.
    #[inline]
    pub fn bucket(&self) -> u16 {
        client_bucket(self.client())
    }

    /// This record's contribution to its bucket's digest.
    #[inline]
    pub fn digest_hash(&self) -> u64 {
        stable_hash(self.line.as_bytes())
    }
}

impl fmt::Display for AtRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.line)
    }
}

/// The location field of a tombstone (see [`AtRecord::tombstone`]).
pub const TOMBSTONE_LOCATION: &str = "-";

/// The digest bucket a client id falls in.
#[inline]
pub fn client_bucket(client: &str) -> u16 {
    bucket_of(stable_hash(client.as_bytes()))
}

/// The digest bucket of a client whose id has stable hash `hash` (for a caller that needs
/// the hash for more than the bucket, and takes it once).
#[inline]
pub fn bucket_of(hash: u64) -> u16 {
    (hash % DIGEST_BUCKETS as u64) as u16
}

/// FNV-1a, 64 bits: a hash every build of herdctl computes the same way (digests are
/// compared between servers, so std's randomly keyed hashers will not do).
#[inline]
pub fn stable_hash(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
    })
}

/// A hint to the CPU to load the cache line holding `address` (which need not be valid: a
/// prefetch never faults and changes nothing the program can observe).
#[inline]
pub fn prefetch_cache_line(address: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        // SAFETY: a prefetch reads nothing the program sees and never faults, whatever the
        // address; `sse` (which it needs) is part of every x86_64 target.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(address as *const i8) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = address;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_lines_are_checked_for_shape() {
        let line =
            "AT Alford +0.263873386 kiwi.cs.ucla.edu +34.068930-118.445127 1621464827.959498503";
        let (record, client) = AtRecord::from_store(line).unwrap();
        assert_eq!((record.line(), client), (line, "kiwi.cs.ucla.edu"));
        assert_eq!(record.client(), client);
        for damaged in [
            "",
            "AT",
            "AT Alford +0.1 kiwi +1+1",
            "AT Alford +0.1 kiwi +1+1 5 6",
            "AT Alford  +0.1 kiwi +1+1",
            "AT Alford +0.1 kiwi +1+1 5 ",
            "AT Alford +0.1 ki\twi +1+1 5",
            "IAMAT Alford +0.1 kiwi +1+1 5",
            "AT Alford +0.1 kiwi +1+1 5\r",
        ] {
            assert!(AtRecord::from_store(damaged).is_none(), "{damaged:?}");
        }
    }
    use crate::protocol::tests::{iamat, KIWI};
    use crate::protocol::{format_sync, format_update, parse_line, Command, PeerMessage};

    #[test]
    fn the_at_line_matches_the_spec_example() {
        let i = iamat(KIWI);
        let received = i.time.as_nanos() + 263_873_386;
        let record = AtRecord::from_iamat("Alford", received, &i);
        assert_eq!(
            record.line(),
            "AT Alford +0.263873386 kiwi.cs.ucla.edu +34.068930-118.445127 1621464827.959498503"
        );
        assert_eq!(record.origin(), "Alford");
        assert_eq!(record.client(), "kiwi.cs.ucla.edu");
        assert_eq!(record.location(), i.location());
        assert_eq!(AtRecord::parse(record.line()), Some(record.clone()));
    }

    #[test]
    fn flooded_lines_rebuild_the_same_record() {
        let i = iamat(KIWI);
        let record = AtRecord::from_iamat("Alford", i.time.as_nanos() - 5, &i);
        for line in [format_update(record.line()), format_sync(record.line())] {
            let rebuilt = match parse_line(line.trim_end().as_bytes()) {
                Some(Command::Peer(PeerMessage::Update(f) | PeerMessage::Sync(f))) => {
                    AtRecord::from_fields(&f)
                }
                other => panic!("{line:?}: {other:?}"),
            };
            assert_eq!(rebuilt, record);
        }
    }

    #[test]
    fn a_flooded_line_is_kept_as_it_came_only_when_canonical() {
        let canonical = "AT Alford +0.000000005 kiwi +1+1 1621464827.5";
        for wire in [
            format!("HERD {canonical}"),
            "HERD AT Alford\t+0.000000005 kiwi +1+1 1621464827.5".to_owned(),
            "HERD  AT Alford +0.000000005 kiwi  +1+1 1621464827.5".to_owned(),
            "HERD SYNC Alford +0.000000005 kiwi +1+1 1621464827.5".to_owned(),
        ] {
            let record = match parse_line(wire.as_bytes()) {
                Some(Command::Peer(PeerMessage::Update(f) | PeerMessage::Sync(f))) => {
                    AtRecord::from_wire(&f, wire.as_bytes())
                }
                other => panic!("{wire:?}: {other:?}"),
            };
            assert_eq!(record.line(), canonical, "{wire:?}");
        }
        // A stored line laid out with a tab is stored canonical too.
        let tabbed = AtRecord::parse("AT Alford\t+0.000000005 kiwi +1+1 1621464827.5").unwrap();
        assert_eq!(tabbed.line(), canonical);
    }

    #[test]
    fn a_tombstone_is_an_at_line_without_a_location() {
        let time = Timestamp {
            secs: 1621464827,
            nanos: 5,
        };
        let stone = AtRecord::tombstone("Ball", time.as_nanos() + 1_000_000_000, "kiwi", time);
        assert_eq!(
            stone.line(),
            "AT Ball +1.000000000 kiwi - 1621464827.000000005"
        );
        assert!(stone.is_tombstone());
        assert_eq!(
            (stone.client(), stone.origin(), stone.time()),
            ("kiwi", "Ball", time)
        );
        assert_eq!(AtRecord::parse(stone.line()), Some(stone.clone()));
        assert_eq!(AtRecord::from_store(stone.line()).unwrap().0, stone);
        let i = iamat(KIWI);
        assert!(!AtRecord::from_iamat("Alford", 0, &i).is_tombstone());
        // A client whose id is `-` is not a tombstone.
        let dash = AtRecord::from_parts("Alford", "+0.000000000", "-", "+1+1", "5").unwrap();
        assert!(!dash.is_tombstone());
    }

    #[test]
    fn stable_hash_is_fnv1a() {
        assert_eq!(stable_hash(b""), 0xcbf29ce484222325);
        assert_eq!(stable_hash(b"a"), 0xaf63dc4c8601ec8c);
    }

    #[test]
    fn newer_wins_is_a_total_order() {
        let rec = |origin: &str, time: &str, loc: &str| {
            AtRecord::from_parts(origin, "+0.000000000", "kiwi", loc, time).unwrap()
        };
        let old = rec("Welsh", "100.5", "+1+1");
        let new = rec("Alford", "100.6", "+1+1");
        assert!(new.is_newer_than(&old) && !old.is_newer_than(&new));
        // Same time: the origin name breaks the tie, the same way everywhere.
        let a = rec("Alford", "100.5", "+1+1");
        assert!(old.is_newer_than(&a) && !a.is_newer_than(&old));
        // Same time and origin, different location: still deterministic.
        let b = rec("Alford", "100.5", "+2+2");
        assert!(b.is_newer_than(&a) != a.is_newer_than(&b));
        // A duplicate is not newer.
        assert!(!a.is_newer_than(&a.clone()));
    }
}

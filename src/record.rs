//! A client's location record: the AT line its origin server replied with, the order that
//! decides which of two records is newer, and the hashing that anti-entropy compares.
//!
//! This is the herd's one piece of domain data. The wire format (how a record is parsed and
//! formatted on a connection) lives in `protocol.rs`; this module decides what a record *is*.

use std::fmt;

use crate::protocol::{
    format_skew, location_field, parse_at_line, AtFields, Iamat, Location, Timestamp,
    DIGEST_BUCKETS,
};

/// The AT line the origin server replied with, plus the parsed parts that decide which of
/// two records for a client is newer. Stored in the table and flooded between servers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AtRecord {
    /// `AT <origin> <skew> <client> <location> <time>`, exactly as the origin replied
    /// (single spaces, no newline).
    line: String,
    /// Byte ranges of the origin and client fields inside `line`.
    origin: (usize, usize),
    client: (usize, usize),
    /// The client's timestamp: the primary newer-wins key.
    pub time: Timestamp,
}

impl AtRecord {
    /// Builds the record an origin server creates when it accepts an IAMAT.
    pub fn from_iamat(origin: &str, received_nanos: i128, iamat: &Iamat<'_>) -> AtRecord {
        let skew = format_skew(received_nanos, iamat.time);
        AtRecord::assemble(&AtFields {
            origin,
            skew: &skew,
            client: iamat.client,
            location: iamat.location_text,
            time_text: iamat.time_text,
            time: iamat.time,
        })
    }

    /// Builds a record from the checked fields of a flooded `HERD AT` / `HERD SYNC` line.
    pub fn from_fields(fields: &AtFields<'_>) -> AtRecord {
        AtRecord::assemble(fields)
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

    /// Parses a stored AT line (as kept on disk).
    pub fn parse(line: &str) -> Option<AtRecord> {
        parse_at_line(line).map(|f| AtRecord::assemble(&f))
    }

    fn assemble(f: &AtFields<'_>) -> AtRecord {
        let line = format!(
            "AT {} {} {} {} {}",
            f.origin, f.skew, f.client, f.location, f.time_text
        );
        let origin_start = "AT ".len();
        let origin_end = origin_start + f.origin.len();
        let client_start = origin_end + 1 + f.skew.len() + 1;
        AtRecord {
            origin: (origin_start, origin_end),
            client: (client_start, client_start + f.client.len()),
            line,
            time: f.time,
        }
    }

    /// The AT line, without newline.
    pub fn line(&self) -> &str {
        &self.line
    }

    /// The server that first received this IAMAT.
    pub fn origin(&self) -> &str {
        &self.line[self.origin.0..self.origin.1]
    }

    /// The client id.
    pub fn client(&self) -> &str {
        &self.line[self.client.0..self.client.1]
    }

    /// The client's location, parsed again from the line (it was validated on the way in).
    pub fn location(&self) -> Location {
        let text = location_field(&self.line[self.client.1..])
            .expect("an AtRecord always holds a location field");
        Location::parse(text).expect("an AtRecord's location was validated")
    }

    /// The deterministic order between two records for the same client: client time first,
    /// then origin server name, then the whole line, so every server picks the same winner.
    /// This is the herd's one newer-wins rule; `node::table` is the one place that applies it.
    pub fn is_newer_than(&self, other: &AtRecord) -> bool {
        (self.time, self.origin(), self.line.as_str())
            > (other.time, other.origin(), other.line.as_str())
    }

    /// Which digest bucket this record's client falls in.
    pub fn bucket(&self) -> u16 {
        client_bucket(self.client())
    }

    /// This record's contribution to its bucket's digest.
    pub fn digest_hash(&self) -> u64 {
        stable_hash(self.line.as_bytes())
    }
}

impl fmt::Display for AtRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.line)
    }
}

/// The digest bucket a client id falls in.
pub fn client_bucket(client: &str) -> u16 {
    (stable_hash(client.as_bytes()) % DIGEST_BUCKETS as u64) as u16
}

/// FNV-1a, 64 bits: a hash every build of herdctl computes the same way (digests are
/// compared between servers, so std's randomly keyed hashers will not do).
pub fn stable_hash(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
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
        assert_eq!(record.location(), i.location);
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

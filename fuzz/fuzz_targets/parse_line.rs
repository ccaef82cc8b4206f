//! Any bytes as one protocol line: `parse_line` must never panic, and whatever it accepts
//! must survive being formatted and parsed again.
#![no_main]

use herdctl::protocol::{format_invalid, parse_line, Command, PeerMessage};
use herdctl::record::AtRecord;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|line: &[u8]| {
    let reply = format_invalid(line);
    assert_eq!(reply.len(), line.len() + 3);
    match parse_line(line) {
        None => {}
        Some(Command::Iamat(iamat)) => {
            assert!(iamat.location().lat.abs() <= 90.0 && iamat.location().lng.abs() <= 180.0);
            // The record an origin would make parses back to itself.
            let record = AtRecord::from_iamat("Fuzz", 0, &iamat);
            assert_eq!(AtRecord::parse(record.line()).as_ref(), Some(&record));
            assert_eq!(record.client(), iamat.client);
        }
        Some(Command::Whatsat(query)) => {
            assert!(query.radius_km > 0.0 && query.radius_km <= 50.0);
            assert!((1..=20).contains(&query.bound));
        }
        Some(Command::Peer(PeerMessage::Update(fields) | PeerMessage::Sync(fields))) => {
            let record = AtRecord::from_fields(&fields);
            assert_eq!(AtRecord::parse(record.line()).as_ref(), Some(&record));
        }
        Some(Command::Peer(_)) => {}
    }
});

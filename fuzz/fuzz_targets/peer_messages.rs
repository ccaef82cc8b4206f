//! Server-to-server messages: every input is prefixed with `HERD ` and a verb chosen by the
//! first byte, so the fuzzer spends its time inside the peer grammar (HELLO, WELCOME, AUTH,
//! AT, SYNC, DIGEST, WANT, STATUS, ACK, ACKS). Must never panic; accepted records, digests and wants
//! must format back to something that parses to the same value.
#![no_main]

use herdctl::protocol::{
    format_digest, format_digest_at, format_sync, format_update, format_want, parse_line,
    parse_status, Command, PeerMessage,
};
use herdctl::record::AtRecord;
use libfuzzer_sys::fuzz_target;

const VERBS: [&str; 11] = [
    "HELLO ",
    "WELCOME ",
    "AUTH ",
    "AT ",
    "SYNC ",
    "DIGEST 1024 ",
    "WANT ",
    "STATUS",
    "ACK ",
    "ACKS",
    "",
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let mut line = b"HERD ".to_vec();
    line.extend_from_slice(VERBS[usize::from(selector) % VERBS.len()].as_bytes());
    line.extend_from_slice(rest);

    if let Some(Command::Peer(message)) = parse_line(&line) {
        match message {
            PeerMessage::Update(fields) => {
                let record = AtRecord::from_fields(&fields);
                let again = format_update(record.line());
                assert_eq!(
                    parse_line(again.trim_end().as_bytes()),
                    Some(Command::Peer(PeerMessage::Update(fields)))
                );
                assert_eq!(AtRecord::parse(record.line()), Some(record));
            }
            PeerMessage::Sync(fields) => {
                let record = AtRecord::from_fields(&fields);
                let again = format_sync(record.line());
                assert_eq!(
                    parse_line(again.trim_end().as_bytes()),
                    Some(Command::Peer(PeerMessage::Sync(fields)))
                );
            }
            PeerMessage::Digest(digest, horizons) => {
                let again = match horizons {
                    Some(h) => format_digest_at(&digest, h),
                    None => format_digest(&digest),
                };
                assert_eq!(
                    parse_line(again.trim_end().as_bytes()),
                    Some(Command::Peer(PeerMessage::Digest(digest, horizons)))
                );
            }
            PeerMessage::Want(buckets) => {
                let again = format_want(&buckets);
                assert_eq!(
                    parse_line(again.trim_end().as_bytes()),
                    Some(Command::Peer(PeerMessage::Want(buckets)))
                );
            }
            _ => {}
        }
    }
    // A status answer is read by operator tools from a node: must not panic either.
    if let Ok(text) = std::str::from_utf8(&line) {
        let _ = parse_status(text);
    }
});

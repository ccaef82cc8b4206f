//! Anti-entropy: digest exchange on link-up and periodically, both roles of a link.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use common::{wait_until, Herd, CLASSIC, DEADLINE};
use herdctl::protocol::{self, format_digest, Command, PeerMessage, DIGEST_BUCKETS};
use herdctl::record::{stable_hash, AtRecord};

const ALL: [&str; 5] = ["Alford", "Ball", "Hamilton", "Holiday", "Welsh"];

fn read_line(reader: &mut impl BufRead) -> String {
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert!(line.ends_with('\n'), "connection closed early: {line:?}");
    line.trim_end().to_owned()
}

#[test]
fn a_server_that_was_down_gets_every_update_it_missed() {
    let herd = Herd::classic();
    herd.kill("Welsh");
    herd.kill("Holiday");
    // Updates flow while Welsh and Holiday are down: Alford, Hamilton only (Ball is cut off).
    let mut expected = Vec::new();
    for i in 0..150 {
        let reply = herd.send(
            "Alford",
            &format!("IAMAT missed{i} +1.{i}-2.5 {}.5\n", 1000 + i),
        );
        expected.push((format!("missed{i}"), reply.trim_end().to_owned()));
    }
    herd.wait_for_at("Hamilton", "missed149", &expected[149].1);
    assert_eq!(herd.known_at("Ball", "missed0"), None);
    herd.start_node("Welsh");
    herd.start_node("Holiday");
    for name in ALL {
        wait_until(&format!("{name} to hold all 150"), || {
            herd.status(name).clients >= 150
        });
    }
    for name in ["Ball", "Welsh", "Holiday"] {
        for (client, at) in &expected {
            assert_eq!(
                herd.known_at(name, client).as_deref(),
                Some(at.as_str()),
                "{name}"
            );
        }
    }
    // The returning servers say what anti-entropy brought them, in status and in their log.
    let synced: u64 = ["Welsh", "Holiday"]
        .iter()
        .map(|n| herd.status(n).synced)
        .sum();
    assert!(synced >= 150, "synced {synced}");
    wait_until("Welsh's log to mention anti-entropy", || {
        herd.log_text("Welsh").contains("anti-entropy with")
    });
}

#[test]
fn a_digest_from_a_neighbour_is_answered_with_what_it_lacks() {
    // The test plays Ball dialling Alford, with an empty table.
    let herd = Herd::start(&[("Alford", &["Ball"]), ("Ball", &[])]);
    herd.kill("Ball");
    let at = herd.send(
        "Alford",
        "IAMAT kiwi +34.068930-118.445127 1621464827.959498503\n",
    );
    let mut stream = TcpStream::connect(("127.0.0.1", herd.port("Alford"))).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    stream
        .write_all(b"HERD HELLO Ball 1 0123456789abcdef0123456789abcdef\n")
        .unwrap();
    let welcome = read_line(&mut reader);
    assert!(
        welcome.starts_with("HERD WELCOME Alford 1 ") && welcome.ends_with(" -"),
        "{welcome}"
    );
    stream
        .write_all(format_digest(&vec![0; DIGEST_BUCKETS]).as_bytes())
        .unwrap();
    let sync = read_line(&mut reader);
    assert_eq!(sync, format!("HERD SYNC {}", &at.trim_end()["AT ".len()..]));
    let bucket = AtRecord::parse(at.trim_end()).unwrap().bucket();
    assert_eq!(read_line(&mut reader), format!("HERD WANT {bucket}"));
    // A digest equal to Alford's own asks for nothing.
    let mut digest = vec![0u64; DIGEST_BUCKETS];
    digest[usize::from(bucket)] = stable_hash(at.trim_end().as_bytes());
    stream.write_all(format_digest(&digest).as_bytes()).unwrap();
    assert_eq!(read_line(&mut reader), "HERD WANT -");
}

#[test]
fn a_dialling_server_repairs_both_ways_and_repeats_periodically() {
    // Alford dials "Ball", which is this test: it answers like a server would.
    let herd = Herd::configure(
        &[("Alford", &["Ball"]), ("Ball", &[])],
        "", // reconnect settings come from the harness; the interval below overrides
    );
    let config = std::fs::read_to_string(&herd.config)
        .unwrap()
        .replace("max_ms: 500 }", "max_ms: 500, sync_interval_s: 1 }");
    std::fs::write(&herd.config, config).unwrap();
    let fake_ball = TcpListener::bind(("127.0.0.1", herd.port("Ball"))).unwrap();
    herd.start_node("Alford");
    let mine = herd.send("Alford", "IAMAT alfords.client +1+1 100\n");

    let (stream, _) = fake_ball.accept().unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    let hello = read_line(&mut reader);
    assert!(hello.starts_with("HERD HELLO Alford 1 "), "{hello}");
    writer
        .write_all(b"HERD WELCOME Ball 1 fedcba9876543210fedcba9876543210 -\n")
        .unwrap();
    let digest = read_line(&mut reader);
    let Some(Command::Peer(PeerMessage::Digest(theirs))) = protocol::parse_line(digest.as_bytes())
    else {
        panic!("expected a digest, got {digest:?}");
    };
    // Ball holds a record Alford lacks, and wants every bucket where Alford has something.
    let ours = "HERD SYNC Ball +0.000000001 balls.client +2+2 200\n";
    let wanted: Vec<String> = (0..DIGEST_BUCKETS)
        .filter(|&b| theirs[b] != 0)
        .map(|b| b.to_string())
        .collect();
    writer.write_all(ours.as_bytes()).unwrap();
    writer
        .write_all(format!("HERD WANT {}\n", wanted.join(",")).as_bytes())
        .unwrap();
    assert_eq!(
        read_line(&mut reader),
        format!("HERD SYNC {}", &mine.trim_end()["AT ".len()..])
    );
    herd.wait_for_at(
        "Alford",
        "balls.client",
        "AT Ball +0.000000001 balls.client +2+2 200",
    );
    // The exchange repeats on the live link (every second here).
    let began = Instant::now();
    let again = read_line(&mut reader);
    assert!(again.starts_with("HERD DIGEST 1024 "), "{again:?}");
    assert!(began.elapsed() < Duration::from_secs(10));
}

#[test]
fn the_cut_off_server_s_updates_reach_everyone_after_the_heal() {
    let herd = Herd::start(CLASSIC);
    herd.kill("Welsh");
    herd.kill("Hamilton");
    let mut lines = Vec::new();
    for i in 0..50 {
        let at = herd.send(
            "Alford",
            &format!("IAMAT island{i} +51.5-0.1 {}\n", 5000 + i),
        );
        lines.push((format!("island{i}"), at.trim_end().to_owned()));
    }
    assert_eq!(herd.known_at("Ball", "island0"), None);
    herd.start_node("Hamilton");
    herd.start_node("Welsh");
    for name in ALL {
        for (client, at) in &lines {
            herd.wait_for_at(name, client, at);
        }
    }
}

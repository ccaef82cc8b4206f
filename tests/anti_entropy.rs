//! Anti-entropy: digest exchange on link-up and periodically, both roles of a link.

mod common;

use std::time::{Duration, Instant};

use common::peer::RawPeer;
use common::{wait_until, Herd, CLASSIC, PAIR};
use herdctl::protocol::{self, format_digest, Command, PeerMessage, DIGEST_BUCKETS};
use herdctl::record::{stable_hash, AtRecord};

const ALL: [&str; 5] = ["Alford", "Ball", "Hamilton", "Holiday", "Welsh"];

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
    let herd = Herd::start(PAIR);
    herd.kill("Ball");
    let at = herd.send(
        "Alford",
        "IAMAT kiwi +34.068930-118.445127 1621464827.959498503\n",
    );
    let mut ball = RawPeer::dial(herd.port("Alford"), "Ball", "Alford", &herd.secret());
    ball.send(format_digest(&vec![0; DIGEST_BUCKETS]).trim_end());
    let sync = ball.line();
    assert_eq!(sync, format!("HERD SYNC {}", &at.trim_end()["AT ".len()..]));
    let bucket = AtRecord::parse(at.trim_end()).unwrap().bucket();
    assert_eq!(ball.line(), format!("HERD WANT {bucket}"));
    // A digest equal to Alford's own asks for nothing.
    let mut digest = vec![0u64; DIGEST_BUCKETS];
    digest[usize::from(bucket)] = stable_hash(at.trim_end().as_bytes());
    ball.send(format_digest(&digest).trim_end());
    assert_eq!(ball.line(), "HERD WANT -");
}

#[test]
fn a_dialling_server_repairs_both_ways_and_repeats_periodically() {
    // Alford dials "Ball", which is this test: it answers like a server would.
    let herd = Herd::configure(
        PAIR, "", // reconnect settings come from the harness; the interval below overrides
    );
    let config = std::fs::read_to_string(&herd.config)
        .unwrap()
        .replace("max_ms: 500 }", "max_ms: 500, sync_interval_s: 1 }");
    std::fs::write(&herd.config, config).unwrap();
    let fake_ball = herd.listen_as("Ball");
    herd.start_node("Alford");
    let mine = herd.send("Alford", "IAMAT alfords.client +1+1 100\n");

    let mut ball = RawPeer::accept(&fake_ball, "Ball", "Alford", &herd.secret());
    let digest = ball.line();
    let Some(Command::Peer(PeerMessage::Digest(theirs, _))) =
        protocol::parse_line(digest.as_bytes())
    else {
        panic!("expected a digest, got {digest:?}");
    };
    // Ball holds a record Alford lacks, and wants every bucket where Alford has something.
    let ours = "HERD SYNC Ball +0.000000001 balls.client +2+2 200\n";
    let wanted: Vec<String> = (0..DIGEST_BUCKETS)
        .filter(|&b| theirs[b] != 0)
        .map(|b| b.to_string())
        .collect();
    ball.send(ours.trim_end());
    ball.send(&format!("HERD WANT {}", wanted.join(",")));
    assert_eq!(
        ball.line(),
        format!("HERD SYNC {}", &mine.trim_end()["AT ".len()..])
    );
    herd.wait_for_at(
        "Alford",
        "balls.client",
        "AT Ball +0.000000001 balls.client +2+2 200",
    );
    // The exchange repeats on the live link (every second here).
    let began = Instant::now();
    let again = ball.line();
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

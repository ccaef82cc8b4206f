//! Issue 19's attacks by a host on the network, each run against real nodes: a stranger
//! posing as a neighbour, a neighbour (or anyone holding the secret) sending what a client
//! could never send, a forged future time, and sockets held to starve the node.

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use common::peer::RawPeer;
use common::{exchange, wait_until, Herd, PAIR, SOLO};
use herdctl::protocol::{format_digest, DIGEST_BUCKETS};

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Alford alone, with Ball configured as its neighbour but played by the test.
fn alford_with_ball_played_by_the_test(extra_yaml: &str) -> Herd {
    let herd = Herd::configure(PAIR, extra_yaml);
    herd.start_node("Alford");
    herd
}

/// Sends `lines` as the authenticated neighbour Ball, then a valid record as a barrier, and
/// waits for the barrier to arrive: every line before it has been dealt with by then.
fn as_ball_then_barrier(herd: &Herd, lines: &[String]) {
    let ball = RawPeer::dial(herd.port("Alford"), "Ball", "Alford", &herd.secret());
    for line in lines {
        ball.send(line);
    }
    let barrier = format!("AT Ball +0.000000001 barrier +1+1 {}", now_secs());
    ball.send(&format!("HERD {barrier}"));
    herd.wait_for_at("Alford", "barrier", &barrier);
}

fn dropped(herd: &Herd, reason: &str) -> u64 {
    herd.status("Alford")
        .peer_dropped
        .get(reason)
        .copied()
        .unwrap_or(0)
}

#[test]
fn a_stranger_naming_a_neighbour_is_not_one_and_gets_nothing_to_guess_with() {
    let herd = alford_with_ball_played_by_the_test("");
    let forged = format!("HERD AT Ball +0.000000001 victim +1+1 {}", now_secs());
    let digest = format_digest(&vec![0; DIGEST_BUCKETS]);
    let hello = "HERD HELLO Ball 2 0123456789abcdef0123456789abcdef\n";
    let sent = format!("{hello}{forged}\n{digest}HERD WANT 0,1,2\n");
    let reply = String::from_utf8(exchange(herd.port("Alford"), sent.as_bytes())).unwrap();
    let lines: Vec<&str> = reply.lines().collect();
    assert!(lines[0].starts_with("HERD CHALLENGE "), "{reply}");
    assert_eq!(lines[0].len(), "HERD CHALLENGE ".len() + 32, "a nonce only");
    assert!(
        lines[1..].iter().all(|l| l.starts_with("? ")),
        "everything else refused: {reply}"
    );
    assert!(!reply.contains("WELCOME") && !reply.contains("SYNC"));
    assert_eq!(herd.known_at("Alford", "victim"), None);
    // Amplification: an unproved socket gets back at most what it sent (before: a 16 KiB
    // digest returned every record of the table).
    assert!(
        reply.len() <= sent.len() + 64,
        "{} > {}",
        reply.len(),
        sent.len()
    );
}

#[test]
fn a_record_from_a_server_the_herd_does_not_have_is_dropped() {
    let herd = alford_with_ball_played_by_the_test("");
    let forged = format!("HERD AT Zed +0.000000001 victim +1+1 {}", now_secs());
    as_ball_then_barrier(&herd, &[forged.clone(), forged.replace(" AT ", " SYNC ")]);
    assert_eq!(herd.known_at("Alford", "victim"), None);
    assert_eq!(dropped(&herd, "unknown_origin"), 2);
}

#[test]
fn a_client_id_over_the_limit_is_dropped_from_a_neighbour_too() {
    let herd = alford_with_ball_played_by_the_test("");
    let id = "v".repeat(300);
    let forged = format!("HERD AT Ball +0.000000001 {id} +1+1 {}", now_secs());
    as_ball_then_barrier(&herd, &[forged]);
    assert_eq!(herd.known_at("Alford", &"v".repeat(300)), None);
    assert_eq!(dropped(&herd, "client_id_too_long"), 1);
}

#[test]
fn a_neighbour_s_record_from_the_far_future_is_dropped() {
    let herd = alford_with_ball_played_by_the_test("");
    let real = herd.send("Alford", &format!("IAMAT alice +1+1 {}\n", now_secs()));
    let forged = "HERD AT Ball +0.000000001 alice +2+2 18446744073709551615.999999999";
    as_ball_then_barrier(&herd, &[forged.to_owned()]);
    assert_eq!(
        herd.known_at("Alford", "alice").as_deref(),
        Some(real.trim_end())
    );
    assert_eq!(dropped(&herd, "future_time"), 1);
}

#[test]
fn a_want_nobody_asked_for_is_answered_with_nothing() {
    let herd = alford_with_ball_played_by_the_test("");
    herd.send("Alford", "IAMAT kiwi +1+1 100\n");
    let mut ball = RawPeer::dial(herd.port("Alford"), "Ball", "Alford", &herd.secret());
    let every: Vec<String> = (0..DIGEST_BUCKETS).map(|b| b.to_string()).collect();
    ball.send(&format!("HERD WANT {}", every.join(",")));
    // Barrier: a digest of an empty table is answered with the one record, then a WANT. An
    // answered WANT would have put a second copy of it first.
    ball.send(format_digest(&vec![0; DIGEST_BUCKETS]).trim_end());
    let mut syncs = 0;
    loop {
        let line = ball.line();
        if line.starts_with("HERD WANT ") {
            break;
        }
        assert!(line.starts_with("HERD SYNC "), "{line}");
        syncs += 1;
    }
    assert_eq!(syncs, 1);
    assert_eq!(dropped(&herd, "unasked_want"), 1);
}

#[test]
fn a_client_time_beyond_the_window_is_refused() {
    let herd = Herd::start(SOLO);
    let forged = "IAMAT alice +00.0+000.0 18446744073709551615.999999999";
    assert_eq!(
        herd.send("Alford", &format!("{forged}\n")),
        format!("? {forged}\n")
    );
    let two_days = format!("IAMAT alice +1+1 {}", now_secs() + 2 * 86_400);
    assert_eq!(
        herd.send("Alford", &format!("{two_days}\n")),
        format!("? {two_days}\n")
    );
    // A clock an hour fast is a client's, not an attack.
    let hour = herd.send(
        "Alford",
        &format!("IAMAT alice +1+1 {}\n", now_secs() + 3600),
    );
    assert!(hour.starts_with("AT Alford -"), "{hour}");
    // And the real update that follows is what WHATSAT answers.
    wait_until("alice's record", || {
        herd.known_at("Alford", "alice").as_deref() == Some(hour.trim_end())
    });
}

/// Opens `count` client connections to `port`, each sending one IAMAT and reading its
/// reply, and keeps them open; connections the node closed at once are left out.
fn hold_clients(port: u16, count: usize) -> Vec<std::net::TcpStream> {
    use std::io::{BufRead, BufReader, Write};
    let mut held = Vec::new();
    for i in 0..count {
        let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
            continue;
        };
        stream.set_read_timeout(Some(common::DEADLINE)).unwrap();
        if stream
            .write_all(format!("IAMAT holder{i} +1+1 100\n").as_bytes())
            .is_err()
        {
            continue;
        }
        let mut reply = String::new();
        let _ = BufReader::new(stream.try_clone().unwrap()).read_line(&mut reply);
        if reply.starts_with("AT ") {
            held.push(stream);
        }
    }
    held
}

#[test]
fn clients_holding_every_slot_cannot_keep_a_neighbour_out() {
    let herd = alford_with_ball_played_by_the_test("limits: { max_connections: 20 }\n");
    let held = hold_clients(herd.port("Alford"), 40);
    assert_eq!(held.len(), 20, "the client slots are full");
    // Ball starts now: its link to Alford needs a connection on Alford's port.
    herd.start_node("Ball");
    wait_until("Ball's link into the full Alford", || {
        herd.status("Ball").links_up == 1
    });
    drop(held);
}

#[test]
fn one_address_cannot_take_every_client_slot() {
    let herd = Herd::configure(SOLO, "limits: { max_connections_per_ip: 3 }\n");
    herd.start_node("Alford");
    // Each holder is retried until served: the connection start_node's readiness check
    // opened and dropped may still hold a slot until the node reads its EOF.
    let mut held = Vec::new();
    for wanted in 1..=3 {
        wait_until("a client slot for one more holder", || {
            if held.len() < wanted {
                held.extend(hold_clients(herd.port("Alford"), 1));
            }
            held.len() == wanted
        });
    }
    assert_eq!(held.len(), 3);
    // The fourth from the same address is not served as a client.
    let reply = exchange(herd.port("Alford"), b"IAMAT fourth +1+1 100\n");
    assert!(reply.is_empty(), "{}", String::from_utf8_lossy(&reply));
    drop(held);
    wait_until("room again once they close", || {
        exchange(herd.port("Alford"), b"IAMAT fifth +1+1 100\n").starts_with(b"AT ")
    });
}

#[test]
fn a_socket_that_says_nothing_is_closed_after_the_first_line_deadline() {
    use std::io::Read;
    let herd = Herd::configure(SOLO, "limits: { first_line_timeout_s: 1 }\n");
    herd.start_node("Alford");
    let mut silent = std::net::TcpStream::connect(("127.0.0.1", herd.port("Alford"))).unwrap();
    silent.set_read_timeout(Some(common::DEADLINE)).unwrap();
    let mut buf = [0u8; 16];
    // EOF long before the idle timeout (300 s) or the read's own deadline.
    assert_eq!(silent.read(&mut buf).unwrap(), 0);
    wait_until("the log to say why", || {
        herd.log_text("Alford")
            .contains("(limits.first_line_timeout_s); closing")
    });
}

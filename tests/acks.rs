//! Read-your-writes at a neighbour (issue 26): a client that reads its AT reply from one
//! server and at once asks a neighbour finds its update there, because the reply waits for
//! the neighbour's acknowledgement that it applied the update (`HERD ACK`). A neighbour that
//! stops acknowledging holds replies back once, for at most `links.write_timeout_ms`; one
//! that does not speak acknowledgements is waited for on its socket, as before.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::peer::RawPeer;
use common::{
    nix_kill, numbered_client, numbered_iamat, wait_until, Herd, CLASSIC, DEADLINE, PAIR,
};
use herdctl::protocol::WELCOME_VERSION;

/// Rounds of the race; at most one in a thousand may be lost.
const ROUNDS: usize = 2000;

/// The classic herd with `links.forwarding: forwarding`, every link up.
fn classic(forwarding: &str) -> Herd {
    let herd =
        Herd::configure(CLASSIC, &format!("links: {{ forwarding: {forwarding} }}\n")).started();
    herd.wait_links_up(&CLASSIC.iter().map(|(name, _)| *name).collect::<Vec<_>>());
    herd
}

/// Sends `line` on a new connection to `port` and returns the first line of the reply, as
/// soon as it has it (not waiting for the server to close).
fn first_line_of_reply(port: u16, line: &str) -> String {
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    (&stream).write_all(line.as_bytes()).unwrap();
    let mut reply = String::new();
    BufReader::new(&stream).read_line(&mut reply).unwrap();
    reply
}

/// The graders' pattern, [`ROUNDS`] times: a fresh client's IAMAT at Alford, its reply read,
/// then at once a new connection to one of Alford's neighbours (Hamilton and Welsh in turn)
/// asking WHATSAT for it. Returns how many were answered `? ` (an unknown client).
fn lost_races(herd: &Herd, tag: &str) -> usize {
    let mut lost = 0;
    for i in 0..ROUNDS {
        let reply = first_line_of_reply(herd.port("Alford"), &numbered_iamat(tag, i));
        assert!(reply.starts_with("AT Alford "), "{reply:?}");
        let neighbour = ["Hamilton", "Welsh"][i % 2];
        let client = numbered_client(tag, i);
        if herd
            .send(neighbour, &format!("WHATSAT {client} 1 1\n"))
            .starts_with("? ")
        {
            lost += 1;
        }
    }
    eprintln!("{tag}: {lost} of {ROUNDS} asked one hop away did not know the client yet");
    lost
}

#[test]
fn a_neighbour_knows_the_update_once_the_reply_is_read_when_flooding() {
    let herd = classic("flood");
    let lost = lost_races(&herd, "ryw-flood");
    assert!(
        lost * 1000 <= ROUNDS,
        "{lost} of {ROUNDS} WHATSATs one hop away came before the update"
    );
}

#[test]
fn a_neighbour_knows_the_update_once_the_reply_is_read_on_the_tree() {
    let herd = classic("tree");
    let lost = lost_races(&herd, "ryw-tree");
    assert!(
        lost * 1000 <= ROUNDS,
        "{lost} of {ROUNDS} WHATSATs one hop away came before the update"
    );
}

/// Alford's `/metrics` sample for its link to Ball.
fn alford_metric(herd: &Herd, family: &str, labels: &str) -> f64 {
    herd.metric("Alford", &format!("{family}{{peer=\"Ball\"{labels}}}"))
}

/// What Alford's `/status` says of its link to Ball's acknowledgements.
fn acks_state(herd: &Herd) -> String {
    let (code, body) = herd.admin_get("Alford", "/status", None);
    assert_eq!(code, 200, "{body}");
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    status["links"][0]["acks"].as_str().unwrap().to_owned()
}

/// Sends 20 fresh clients' IAMATs to Alford, each on its own connection, and checks each
/// is answered with its AT line.
fn twenty_iamats(herd: &Herd, tag: &str) {
    for i in 0..20 {
        let reply = herd.send("Alford", &numbered_iamat(tag, i));
        assert!(reply.starts_with("AT Alford "), "{reply:?}");
    }
}

#[test]
fn a_frozen_neighbour_holds_replies_back_once_and_the_herd_keeps_answering() {
    // The link stays up while Ball is frozen (no digest goes unanswered long enough to drop
    // it), so only the acknowledgements' deadline can release Alford's replies.
    let herd = Herd::configure(
        PAIR,
        "admin: { open: true }\nlinks: { write_timeout_ms: 1000, answer_timeout_ms: 600000 }\n",
    )
    .started();
    wait_until("both links up and Ball acknowledging", || {
        herd.status("Alford").links_up == 1
            && herd.status("Ball").links_up == 1
            && alford_metric(&herd, "herd_link_acks_total", ",direction=\"received\"") >= 1.0
    });
    assert_eq!(acks_state(&herd), "on");
    twenty_iamats(&herd, "warm");
    let timeouts = || alford_metric(&herd, "herd_link_ack_timeouts_total", "");
    assert_eq!(timeouts(), 0.0);

    let ball = herd.pid("Ball");
    for (round, tag) in ["frozen", "frozen-again"].iter().enumerate() {
        nix_kill(ball, "STOP");
        twenty_iamats(&herd, tag);
        // The first reply waited out the deadline; the others went once on Ball's socket.
        assert_eq!(
            timeouts(),
            (round + 1) as f64,
            "replies that gave up waiting"
        );
        assert_eq!(acks_state(&herd), "late");
        let last = numbered_client(tag, 19);
        assert!(herd.known_at("Alford", &last).is_some(), "Alford answers");
        // Thawed, Ball applies what it missed and acknowledges it: waited for again.
        nix_kill(ball, "CONT");
        wait_until("Ball's acknowledgements to catch up", || {
            acks_state(&herd) == "on"
        });
        assert!(herd.known_at("Ball", &last).is_some());
    }
    assert_eq!(
        herd.status("Alford").links_up,
        1,
        "the link was never dropped"
    );
}

/// The count in a `HERD ACK <n>` line.
fn ack_count(line: &str) -> u64 {
    line.strip_prefix("HERD ACK ")
        .unwrap_or_else(|| panic!("expected an ACK, got {line:?}"))
        .parse()
        .unwrap()
}

fn bad_acks(herd: &Herd) -> u64 {
    herd.status("Alford")
        .peer_dropped
        .get("bad_ack")
        .copied()
        .unwrap_or(0)
}

/// Whether `stream` has anything to read within a short look (the reply it waits for must
/// not have come yet: without the wait it would come at once).
fn has_reply(stream: &TcpStream) -> bool {
    stream
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut byte = [0u8; 1];
    let got = matches!((&*stream).read(&mut byte), Ok(n) if n > 0);
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    got
}

#[test]
fn a_reply_waits_for_the_acknowledgement_and_a_false_one_is_refused() {
    // The test plays Ball, offering acknowledgements; the deadline is long, so a reply
    // comes only when the test acknowledges its update.
    let herd = Herd::configure(
        PAIR,
        "links: { write_timeout_ms: 600000, answer_timeout_ms: 600000 }\n",
    );
    let listener = herd.listen_as("Ball");
    herd.start_node("Alford");
    let mut ball =
        RawPeer::accept_saying(&listener, "Ball", "Alford", &herd.secret(), WELCOME_VERSION);
    assert_eq!(ball.line(), "HERD ACKS", "asked first");
    wait_until("Alford's link up", || herd.status("Alford").links_up == 1);

    let client = TcpStream::connect(("127.0.0.1", herd.port("Alford"))).unwrap();
    (&client)
        .write_all(numbered_iamat("acked", 0).as_bytes())
        .unwrap();
    let update = loop {
        let line = ball.line();
        if line.starts_with("HERD DIGEST ") {
            ball.send("HERD WANT -");
        } else {
            break line;
        }
    };
    assert!(update.starts_with("HERD AT Alford "), "{update}");
    assert!(
        !has_reply(&client),
        "the reply waits for the acknowledgement"
    );

    for (false_ack, refused) in [("HERD ACK 2", 1), ("HERD ACK one", 2), ("HERD ACK -1", 3)] {
        ball.send(false_ack);
        wait_until(&format!("{false_ack} refused"), || {
            bad_acks(&herd) == refused
        });
    }
    assert!(
        !has_reply(&client),
        "a false acknowledgement releases nothing"
    );

    ball.send("HERD ACK 1");
    let mut reply = String::new();
    BufReader::new(&client).read_line(&mut reply).unwrap();
    assert!(reply.starts_with("AT Alford "), "{reply:?}");
    ball.send("HERD ACK 0");
    wait_until("a backwards ACK refused", || bad_acks(&herd) == 4);
    assert_eq!(herd.status("Alford").links_up, 1, "the link stays up");

    // From a client, a peer line is only an invalid line.
    assert_eq!(herd.send("Alford", "HERD ACK 1\n"), "? HERD ACK 1\n");
}

#[test]
fn an_acceptor_acknowledges_what_it_applied_once_asked() {
    // Ball is played by the test, dialling Alford as Ball would.
    let herd = Herd::configure(PAIR, "");
    herd.start_node("Alford");
    let mut ball = RawPeer::dial(herd.port("Alford"), "Ball", "Alford", &herd.secret());
    let update =
        |client: &str, time: u64| format!("HERD AT Ball +0.000000001 {client} +1+1 {time}");
    ball.send(&update("before.1", 1_700_000_000));
    ball.send(&update("before.2", 1_700_000_000));
    ball.send("HERD ACKS");
    assert_eq!(
        ball.line(),
        "HERD ACK 2",
        "counted from the connection's start"
    );
    // A refused record counts too: the dialler counts what it wrote.
    ball.send("HERD AT Nobody +0.000000001 stranger +1+1 1700000000");
    ball.send(&update("after", 1_700_000_000));
    let mut last = 2;
    while last < 4 {
        let count = ack_count(&ball.line());
        assert!(count > last && count <= 4, "{count} after {last}");
        last = count;
    }
    // Acknowledged means applied: no wait here.
    assert!(herd.known_at("Alford", "after").is_some());
    assert_eq!(herd.known_at("Alford", "stranger"), None);
    // An update Ball only forwards (another server's) has no reply waiting at Ball: it is
    // acknowledged with Ball's next own one, not on its own.
    ball.send(&update("forwarded", 1_700_000_000).replace("AT Ball ", "AT Alford "));
    wait_until("Alford to apply the forwarded update", || {
        herd.known_at("Alford", "forwarded").is_some()
    });
    ball.send(&update("own", 1_700_000_000));
    assert_eq!(
        ball.line(),
        "HERD ACK 6",
        "no ACK for the forwarded one alone"
    );
    // Alford sends no updates on this connection: an ACK here acknowledges nothing.
    ball.send("HERD ACK 0");
    wait_until("an ACK on the wrong connection refused", || {
        bad_acks(&herd) == 1
    });
}

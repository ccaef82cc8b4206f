//! The client data lifecycle, black-box: expiry (`clients.ttl_s`), a bounded table
//! (`clients.max`), `herdctl forget` and its tombstones, redacted logs.

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use common::peer::RawPeer;
use common::{wait_until, Herd};

/// Now, as a client's POSIX time, `ago` seconds back.
fn client_time(ago: f64) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    format!("{:.6}", now.as_secs_f64() - ago)
}

const LINE: &[(&str, &[&str])] = &[("A", &["B"]), ("B", &["C"]), ("C", &[])];

#[test]
fn an_expired_record_is_gone_everywhere_and_comes_back_from_nowhere() {
    let herd = Herd::configure(LINE, "clients: { ttl_s: 5 }\n").started();
    // Links up first: the young record must be flooded within its few seconds of life.
    herd.wait_links_up(&["A", "B", "C"]);
    // Already expired when it arrives: answered (like a stale update), kept nowhere.
    let stale = format!("IAMAT old.client +1+1 {}", client_time(60.0));
    assert!(herd.send("A", &format!("{stale}\n")).starts_with("AT A "));
    // Young: on every server, until it is older than the ttl (plus a step of 1 s).
    let young = herd.send(
        "A",
        &format!("IAMAT young.client +2+2 {}\n", client_time(0.0)),
    );
    let young = young.trim_end().to_owned();
    // (Counted in status rather than asked with WHATSAT: a node's first WHATSAT may wait
    // for its places index, longer than the record lives on a loaded machine.)
    for name in ["A", "B", "C"] {
        wait_until(&format!("{name} to hold the young client"), || {
            herd.status(name).clients == 1
        });
        assert_eq!(herd.known_at(name, "old.client"), None, "{name}");
    }
    for name in ["A", "B", "C"] {
        wait_until(&format!("the young client to expire on {name}"), || {
            herd.known_at(name, "young.client").is_none()
        });
        wait_until(&format!("{name} to count it"), || {
            let status = herd.status(name);
            status.clients == 0 && status.expired >= 1
        });
    }
    // A neighbour whose clock is behind still thinks it current and sends it: refused.
    herd.kill("A");
    let a = RawPeer::dial(herd.port("B"), "A", "B", &herd.secret());
    let fields = young.strip_prefix("AT ").unwrap();
    a.send(&format!("HERD AT {fields}"));
    a.send(&format!("HERD SYNC {fields}"));
    // Lines are applied in order: once a later one is in, the expired ones were refused.
    a.send(&format!(
        "HERD AT A +0.000000001 marker +1+1 {}",
        client_time(0.0)
    ));
    wait_until("B to take the marker", || {
        herd.known_at("B", "marker").is_some()
    });
    assert_eq!(herd.known_at("B", "young.client"), None);
    assert_eq!(herd.known_at("C", "young.client"), None, "not flooded on");
    drop(a);
    // Nor does a restart bring it back from the store (once C has the marker on disk).
    wait_until("C to take the marker and report it durable", || {
        let status = herd.status("C");
        herd.known_at("C", "marker").is_some() && status.store_durable == status.store_accepted
    });
    herd.kill("C");
    herd.start_node("C");
    assert_eq!(herd.known_at("C", "young.client"), None);
    assert_eq!(herd.status("C").recovered, 1, "only the marker");
    herd.start_node("A");
    wait_until("A to link again", || herd.status("A").links_up == 1);
    assert_eq!(herd.known_at("A", "young.client"), None);
}

#[test]
fn a_full_table_refuses_a_new_client_but_not_an_existing_one() {
    let herd = Herd::configure(&[("A", &[])], "clients: { max: 2 }\n").started();
    let now = client_time(0.0);
    for client in ["first", "second"] {
        let reply = herd.send("A", &format!("IAMAT {client} +1+1 {now}\n"));
        assert!(reply.starts_with("AT A "), "{reply}");
    }
    let third = format!("IAMAT third +1+1 {now}");
    assert_eq!(
        herd.send("A", &format!("{third}\n")),
        format!("? {third}\n")
    );
    assert_eq!(herd.known_at("A", "third"), None);
    // An existing client still moves.
    let moved = herd.send("A", &format!("IAMAT first +3+3 {}\n", client_time(-0.5)));
    assert!(moved.starts_with("AT A "), "{moved}");
    herd.wait_for_at("A", "first", moved.trim_end());
    let status = herd.status("A");
    assert_eq!(
        (status.clients, status.clients_max, status.refused_full),
        (2, Some(2), 1)
    );
    wait_until("the refusal to be logged", || {
        herd.log_text("A").contains("table full (clients.max 2)")
    });
    let (_, metrics) = herd.admin_get("A", "/metrics", Some(&admin_token(&herd)));
    assert!(
        metrics.contains("herd_clients_refused_total 1\n"),
        "{metrics}"
    );
    assert!(metrics.contains("herd_clients_max 2\n"), "{metrics}");
    // `herdctl status` shows the fill.
    let out = herd.herdctl().args(["status"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("2/2"), "{text}");
    assert!(text.contains("1 new clients refused"), "{text}");
}

/// The admin token the herd's nodes use (derived from the herd secret).
fn admin_token(herd: &Herd) -> String {
    herd.secret().admin_token()
}

const CLASSIC_NAMES: [&str; 5] = ["Alford", "Ball", "Hamilton", "Holiday", "Welsh"];

#[test]
fn a_forgotten_client_disappears_everywhere_even_on_a_server_that_was_down() {
    let herd = Herd::configure(common::CLASSIC, "").started();
    let seen = client_time(0.0);
    let at = herd.send(
        "Alford",
        &format!("IAMAT kiwi +34.068930-118.445127 {seen}\n"),
    );
    for name in CLASSIC_NAMES {
        herd.wait_for_at(name, "kiwi", at.trim_end());
    }
    // Welsh holds kiwi, and is down (cleanly: its store has it) while kiwi is forgotten.
    assert!(herd.terminate("Welsh").success());
    let out = herd
        .herdctl()
        .args([
            "forget",
            "kiwi",
            "--reason",
            "asked by the owner",
            "--via",
            "Ball",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("Ball made the tombstone (it held a location"),
        "{text}"
    );
    assert!(text.contains("gone from 4 of 5 servers"), "{text}");
    for name in ["Alford", "Ball", "Hamilton", "Holiday"] {
        assert_eq!(herd.known_at(name, "kiwi"), None, "{name}");
        assert_eq!(herd.status(name).forgotten, 1, "{name}");
    }
    herd.log_once_it_has("Ball", "reason: asked by the owner");
    // Welsh comes back with kiwi in its store: anti-entropy brings it the tombstone, and
    // its old record does not come back anywhere.
    herd.start_node("Welsh");
    wait_until("Welsh to forget kiwi", || {
        herd.known_at("Welsh", "kiwi").is_none()
    });
    wait_until("Welsh to hold the tombstone", || {
        herd.status("Welsh").forgotten == 1
    });
    for name in CLASSIC_NAMES {
        assert_eq!(herd.known_at(name, "kiwi"), None, "{name}");
    }
    // An IAMAT from before the forget does not bring kiwi back; a newer one does.
    let older = format!("{:.6}", seen.parse::<f64>().unwrap() + 0.001);
    herd.send("Hamilton", &format!("IAMAT kiwi +1+1 {older}\n"));
    let newer = herd.send(
        "Hamilton",
        &format!("IAMAT kiwi +2+2 {}\n", client_time(-1.0)),
    );
    for name in CLASSIC_NAMES {
        herd.wait_for_at(name, "kiwi", newer.trim_end());
        assert_eq!(herd.status(name).forgotten, 0, "{name}");
    }
}

#[test]
fn a_tombstone_is_never_taken_from_an_anonymous_client() {
    let herd = Herd::configure(LINE, "").started();
    let at = herd.send("A", &format!("IAMAT plum +1+1 {}\n", client_time(0.0)));
    herd.wait_for_at("B", "plum", at.trim_end());
    let later = client_time(-1.0);
    for line in [
        format!("HERD AT A +0.000000000 plum - {later}"),
        format!("HERD SYNC A +0.000000000 plum - {later}"),
        "HERD CONTROL - FORGET plum -".to_owned(),
        format!("IAMAT plum - {later}"),
    ] {
        assert_eq!(herd.send("A", &format!("{line}\n")), format!("? {line}\n"));
    }
    for name in ["A", "B", "C"] {
        herd.wait_for_at(name, "plum", at.trim_end());
        assert_eq!(herd.status(name).forgotten, 0);
    }
}

#[test]
fn redacted_logs_keep_no_exact_location_and_no_raw_id_and_tail_still_reads_them() {
    let herd = Herd::configure(&[("A", &["B"]), ("B", &[])], "logs: { redact: ids }\n").started();
    // The check below reads B's log line for the flood, which a record sent before the link
    // is up would not have (it would come by anti-entropy).
    herd.wait_links_up(&["A", "B"]);
    let id = "secret.person.id";
    let at = herd.send(
        "A",
        &format!("IAMAT {id} +34.068930-118.445127 {}\n", client_time(0.0)),
    );
    herd.wait_for_at("B", id, at.trim_end());
    let reply = herd.send("B", &format!("WHATSAT {id} 10 2\n"));
    assert!(reply.starts_with("AT A "), "{reply}");
    herd.send("A", &format!("IAMAT {id} +91+0 {}\n", client_time(0.0)));
    let out = herd.herdctl().args(["forget", id]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let hashed = format!("#{}", herd.secret().log_id(id));
    for name in ["A", "B"] {
        wait_until(&format!("{name}'s log to show the hashed id"), || {
            herd.log_text(name).contains(&hashed)
        });
        let log = herd.log_text(name);
        // (Places near the client, in WHATSAT replies, have coordinates of their own.)
        for exact in [id, "34.068930", "118.445127", "34.0689", "118.4451"] {
            assert!(!log.contains(exact), "{name}'s log holds {exact:?}:\n{log}");
        }
        assert!(log.contains("+34.1-118.4"), "{log}");
    }
    // `herdctl tail` reads the redacted files as any others (once the writer, which holds
    // lines a moment to write them in time order, has written the forget's own line).
    herd.log_once_it_has("A", "forget on operator request");
    let out = herd.herdctl().args(["tail", "A"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains(&hashed), "{text}");
    assert!(text.contains("forget on operator request"), "{text}");
}

#[test]
fn a_neighbours_refused_or_cut_lines_are_not_quoted_in_a_redacted_log() {
    let herd = Herd::configure(&[("A", &["B"]), ("B", &[])], "logs: { redact: ids }\n");
    herd.start_node("A");
    let id = "secret.person.id";
    let b = RawPeer::dial(herd.port("A"), "B", "A", &herd.secret());
    // A flood line too far in the future (refused), one the protocol does not know (unexpected),
    // then one over the line limit, cut where the redactor could not find its location.
    b.send(&format!(
        "HERD AT A +0.1 {id} +34.068930-118.445127 {}",
        client_time(-86400.0)
    ));
    b.send(&format!("HERD NONSENSE {id} +34.068930-118.445127"));
    let long = format!(
        "HERD AT A +0.1 {id} +34.068930-118.445127 {}",
        "9".repeat(1 << 21)
    );
    b.send(&long);
    let log = herd.log_once_it_has("A", "sent a line over");
    assert!(log.contains("withheld by logs.redact"), "{log}");
    for exact in [id, "34.068930", "118.445127", "34.0689"] {
        assert!(!log.contains(exact), "A's log holds {exact:?}:\n{log}");
    }
}

#[test]
fn verify_agrees_while_records_expire_step_by_step() {
    // A ttl of 16 s moves the horizon one second at a time; each server sweeps on its own
    // second, so for part of every second the two tables differ by the step one has swept.
    let herd = Herd::configure(&[("A", &["B"]), ("B", &[])], "clients: { ttl_s: 16 }\n").started();
    let count = 1500;
    let lines: String = (0..count)
        .map(|k| {
            let ago = 14.0 - 10.0 * k as f64 / count as f64;
            common::iamat_line(
                &format!("fading.{k}"),
                "+34.068930-118.445127",
                &client_time(ago),
            )
        })
        .collect();
    let replies = herd.send("A", &lines);
    assert_eq!(
        replies.lines().filter(|l| l.starts_with("AT ")).count(),
        count,
        "{replies}"
    );
    // Floods keep their order on a link: once B has the last, it has them all.
    let last = format!("fading.{}", count - 1);
    wait_until("B to hold every record", || {
        herd.known_at("B", &last).is_some()
    });
    // For the next ten seconds records expire every second; verify must see one table each time.
    let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut runs = 0;
    while std::time::Instant::now() < until {
        let out = common::run_to_end(herd.herdctl().args(["verify"]), b"");
        runs += 1;
        assert!(
            out.status.success(),
            "run {runs}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(
        herd.status("A").clients < count,
        "nothing expired while verify ran"
    );
}

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
    // Already expired when it arrives: answered (like a stale update), kept nowhere.
    let stale = format!("IAMAT old.client +1+1 {}", client_time(60.0));
    assert!(herd.send("A", &format!("{stale}\n")).starts_with("AT A "));
    // Young: on every server, until it is older than the ttl (plus a step of 1 s).
    let young = herd.send(
        "A",
        &format!("IAMAT young.client +2+2 {}\n", client_time(0.0)),
    );
    let young = young.trim_end().to_owned();
    for name in ["A", "B", "C"] {
        herd.wait_for_at(name, "young.client", &young);
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
    // Nor does a restart bring it back from the store.
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

//! The admin endpoint end to end: real nodes serving HTTP on their admin ports, its routes
//! and their access rules, hostile admin clients, and the supervisor probing it instead of
//! the client port.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::supervised::Supervised;
use common::{admin_get, exchange, wait_until, Herd, PAIR};

const SECRET: &str = "an-admin-test-secret-of-some-length";

/// Whether a new client on `port` is closed without an answer.
fn refused(port: u16) -> bool {
    use std::io::Read;
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return true;
    };
    let _ = stream.write_all(b"IAMAT x +1+1 1\n");
    let mut reply = Vec::new();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
        .read_to_end(&mut reply)
        .map_or(true, |_| reply.is_empty())
}

fn token() -> String {
    herdctl::auth::HerdSecret::new(SECRET.into()).admin_token()
}

#[test]
fn probes_are_open_status_and_metrics_need_the_token() {
    let herd = Herd::configure(PAIR, &format!("secret: \"{SECRET}\"\n")).started();
    let pid = herd.pid("Alford");

    for path in ["/healthz", "/readyz"] {
        let (status, body) = herd.admin_get("Alford", path, None);
        assert_eq!(status, 200, "{path}: {body}");
        let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(answer["name"], "Alford");
        assert_eq!(answer["pid"], pid);
    }
    for path in ["/status", "/metrics"] {
        let (status, body) = herd.admin_get("Alford", path, None);
        assert_eq!(status, 401, "{path} without a token: {body}");
        assert!(!body.contains("herd_"), "{body}");
        let (status, _) = herd.admin_get("Alford", path, Some(&"0".repeat(64)));
        assert_eq!(status, 401, "{path} with a wrong token");
    }
    let (status, _) = herd.admin_get("Alford", "/nowhere", None);
    assert_eq!(status, 404);

    herd.send("Alford", "IAMAT kiwi +34.068930-118.445127 1621464827.5\n");
    let (status, body) = herd.admin_get("Alford", "/status", Some(&token()));
    assert_eq!(status, 200, "{body}");
    let figures: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(figures["name"], "Alford");
    assert_eq!(figures["clients"], 1);
    let (status, metrics) = herd.admin_get("Alford", "/metrics", Some(&token()));
    assert_eq!(status, 200);
    assert!(metrics.contains("herd_clients 1\n"), "{metrics}");
    assert!(
        metrics.contains("herd_requests_total{command=\"IAMAT\",result=\"ok\"} 1\n"),
        "{metrics}"
    );
}

#[test]
fn without_a_secret_status_is_refused_unless_the_herd_opens_it() {
    let closed = Herd::configure(&[("Solo", &[])], "insecure_open_links: true\n").started();
    let (status, body) = closed.admin_get("Solo", "/metrics", None);
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("admin: { open: true }"), "{body}");
    assert_eq!(closed.admin_get("Solo", "/healthz", None).0, 200);

    let open = Herd::configure(
        &[("Solo", &[])],
        "insecure_open_links: true\nadmin: { open: true }\n",
    )
    .started();
    let (status, body) = open.admin_get("Solo", "/metrics", None);
    assert_eq!(status, 200);
    assert!(
        body.contains("# TYPE herd_requests_total counter"),
        "{body}"
    );
}

#[test]
fn hostile_admin_clients_stall_nothing() {
    let herd = Herd::configure(&[("Solo", &[])], "").started();
    let port = herd.admin_port("Solo");
    // Connections that say nothing, and one that dribbles half a request.
    let mut silent: Vec<TcpStream> = (0..20)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    silent[0]
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x")
        .unwrap();
    // (Served in turn, they would hold it 5 s each: past the test's deadline.)
    assert_eq!(herd.admin_get("Solo", "/healthz", None).0, 200);
    // An endless header is cut off at the request bound, not buffered.
    let mut huge = b"GET /healthz HTTP/1.1\r\nX: ".to_vec();
    huge.resize(64 * 1024, b'a');
    let reply = String::from_utf8_lossy(&exchange(port, &huge)).into_owned();
    assert!(reply.starts_with("HTTP/1.1 431 "), "{reply}");
    let reply = String::from_utf8_lossy(&exchange(port, b"HERD STATUS\n\n")).into_owned();
    assert!(reply.starts_with("HTTP/1.1 400 "), "{reply}");
    // The client port serves all along.
    assert!(herd
        .send("Solo", "IAMAT a +1+1 1\n")
        .starts_with("AT Solo "));
    drop(silent);
}

/// Issue 19's socket flood: with a small `max_connections`, sockets holding every client
/// slot used to starve the supervisor's health probe (same port, same limit), so the node
/// was SIGKILLed and restarted again and again. The probe now goes to the admin endpoint.
#[test]
fn a_client_holding_every_slot_does_not_get_its_node_killed() {
    let s = Supervised::herd(
        &[("Solo", &[])],
        ", health_interval_ms: 200, health_failures: 2",
        "limits: { max_connections: 5 }\n",
    );
    s.ok(&["start", "all"]);
    let pid = s.node_pid("Solo").unwrap();
    let port = s.herd.port("Solo");
    let _held: Vec<TcpStream> = (0..12)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    // The client port is full: a new client is closed at once.
    wait_until("the client port to be full", || refused(port));
    // Ten probe periods: before, two unanswered probes were enough for a SIGKILL.
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        assert_eq!(s.node_pid("Solo"), Some(pid), "the node was killed");
        std::thread::sleep(Duration::from_millis(50));
    }
    let node = s.node("Solo");
    assert_eq!(node["state"], "running", "{node}");
    assert_eq!(node["restarts"], 0, "{node}");
    assert_eq!(node["failed_probes"], 0, "{node}");
    assert_eq!(s.herd.admin_get("Solo", "/healthz", None).0, 200);
}

#[test]
fn the_probe_answers_from_the_admin_port_as_the_right_process() {
    let herd = Herd::configure(&[("Solo", &[])], "").started();
    let (_, body) = admin_get(herd.admin_port("Solo"), "/readyz", None);
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["pid"], herd.pid("Solo"));
    assert_eq!(answer["status"], "ready");
}

/// Every metric family the issue lists, by name.
pub const FAMILIES: &[&str] = &[
    "herd_requests_total",
    "herd_request_duration_seconds",
    "herd_clients",
    "herd_connections",
    "herd_connections_refused_total",
    "herd_link_up",
    "herd_link_queue_depth",
    "herd_link_drops_total",
    "herd_link_fault",
    "herd_link_fault_delay_seconds",
    "herd_link_fault_loss_ratio",
    "herd_link_fault_lines_total",
    "herd_floods_sent_total",
    "herd_floods_received_total",
    "herd_propagation_delay_seconds",
    "herd_sync_exchanges_total",
    "herd_sync_records_total",
    "herd_store_fsync_duration_seconds",
    "herd_store_journal_bytes",
    "herd_store_healthy",
    "herd_log_dropped_lines_total",
    "herd_peer_input_dropped_total",
    "process_resident_memory_bytes",
    "process_cpu_seconds_total",
    "process_open_fds",
    "process_start_time_seconds",
];

#[test]
fn metrics_follow_a_flood_across_a_link() {
    let herd = Herd::configure(PAIR, "admin: { open: true }\n").started();
    wait_until("the link to be up both ways", || {
        ["Alford", "Ball"].iter().all(|n| {
            herd.admin_get(n, "/metrics", None)
                .1
                .lines()
                .any(|l| l.starts_with("herd_link_up{") && l.ends_with(" 1"))
        })
    });
    let at = herd.send("Alford", "IAMAT kiwi +34.068930-118.445127 1621464827.5\n");
    herd.wait_for_at("Ball", "kiwi", at.trim_end());
    let alford = herd.admin_get("Alford", "/metrics", None).1;
    for family in FAMILIES {
        assert!(
            alford.contains(&format!("# TYPE {family} ")),
            "{family} missing from {alford}"
        );
    }
    assert!(
        alford.contains("herd_floods_sent_total{peer=\"Ball\"} 1\n"),
        "{alford}"
    );
    assert!(
        alford.contains("herd_connections{kind=\"admin\"} 1\n"),
        "{alford}"
    );
    let ball = herd.admin_get("Ball", "/metrics", None).1;
    assert!(
        ball.contains("herd_floods_received_total{peer=\"Alford\",outcome=\"new\"} 1\n"),
        "{ball}"
    );
    assert!(
        ball.contains("herd_propagation_delay_seconds_count 1\n"),
        "{ball}"
    );
    assert!(ball.contains("herd_clients 1\n"), "{ball}");
    // The link's end goes to 0 when its neighbour stops.
    herd.kill("Alford");
    wait_until("Ball to see Alford gone", || {
        herd.admin_get("Ball", "/metrics", None)
            .1
            .contains("herd_link_up{peer=\"Alford\"} 0\n")
    });
}

#[test]
fn status_names_the_missing_neighbour_and_shows_each_link() {
    let s = Supervised::herd(PAIR, "", &format!("secret: \"{SECRET}\"\n"));
    s.ok(&["start", "all"]);
    wait_until("the link to be up", || {
        s.status().iter().all(|n| n["links_up"] == n["links_total"])
    });
    let at = s
        .herd
        .send("Alford", "IAMAT kiwi +34.068930-118.445127 1621464827.5\n");
    s.herd.wait_for_at("Ball", "kiwi", at.trim_end());
    let alford = s.node("Alford");
    assert_eq!(
        alford["admin_url"],
        format!("http://127.0.0.1:{}/", s.herd.admin_port("Alford"))
    );
    let link = &alford["links"][0];
    assert_eq!(link["peer"], "Ball", "{alford}");
    assert_eq!(link["state"], "up", "{alford}");
    assert_eq!(link["records_sent"], 1, "{alford}");
    assert!(link["bytes_sent"].as_u64().unwrap() > 0, "{alford}");
    assert_eq!(link["queue_depth"], 0, "{alford}");

    s.ok(&["stop", "Ball"]);
    wait_until("Alford to see Ball down", || {
        s.node("Alford")["links"][0]["state"] == "down"
    });
    let alford = s.node("Alford");
    assert!(
        alford["links"][0]["last_error"].is_string(),
        "the reason it dropped: {alford}"
    );
    let table = s.ok(&["status"]);
    let row = table
        .lines()
        .find(|l| l.starts_with("Alford"))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(row.contains(" 0/1 -Ball "), "{table}");
}

/// `node_threads` sets how many runtime threads a node answers its connections on (the
/// default, one fewer than the cores, is checked in the config's unit tests), and the
/// node says how many it runs on `/metrics`.
#[test]
fn a_node_runs_node_threads_runtime_threads() {
    for (threads, extra) in [
        (3, "node_threads: 3\nadmin: { open: true }\n"),
        (1, "node_threads: 1\nadmin: { open: true }\n"),
    ] {
        let herd = Herd::configure(&[("Solo", &[])], extra).started();
        let (code, page) = herd.admin_get("Solo", "/metrics", None);
        assert_eq!(code, 200, "{page}");
        assert!(
            page.contains(&format!("\nherd_node_threads {threads}\n")),
            "{extra}: {page}"
        );
        assert!(herd
            .send("Solo", "IAMAT a +1+1 1\n")
            .starts_with("AT Solo "));
    }
}

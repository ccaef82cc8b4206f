//! `herdctl reload` end to end: a real supervisor and real nodes take an edited herd file,
//! live or by restart, and a broken one changes nothing.

mod common;

use common::supervised::{supervisor_yaml, Supervised};
use common::{
    exchange, herd_yaml, hold_ports, iamat_line, send_to, wait_for_at, wait_until, PAIR, SOLO,
};

/// Rewrites the herd file: servers as (name, port, peers), the test supervisor settings,
/// then `extra`.
fn write_herd(s: &Supervised, servers: &[(&str, u16, &[&str])], extra: &str) {
    let yaml = herd_yaml(servers, &supervisor_yaml("", extra));
    std::fs::write(&s.herd.config, yaml).unwrap();
}

/// Runs `herdctl reload`, which must succeed; returns its stdout.
fn reload(s: &Supervised) -> String {
    s.ok(&["reload"])
}

fn links(s: &Supervised, name: &str) -> (u64, u64) {
    let n = s.node(name);
    (
        n["links_up"].as_u64().unwrap_or(0),
        n["links_total"].as_u64().unwrap(),
    )
}

/// The reply to an IAMAT for `client` sent to `port`, without its newline.
fn iamat(port: u16, client: &str) -> String {
    let line = iamat_line(client, "+34.1-118.4", "1700000000.5");
    send_to(port, &line).trim_end().to_owned()
}

#[test]
fn reload_starts_an_added_server_that_floods_and_stops_a_removed_one() {
    let s = Supervised::herd(PAIR, "", "");
    s.ok(&["start", "all"]);
    let (alford, ball) = (s.herd.port("Alford"), s.herd.port("Ball"));
    let pids = (s.node_pid("Alford"), s.node_pid("Ball"));
    // Held until the reload, whose supervisor starts Clark on them.
    let held = hold_ports(1).pop().unwrap();
    let clark = held[0].port;

    write_herd(
        &s,
        &[
            ("Alford", alford, &["Ball"]),
            ("Ball", ball, &[]),
            ("Clark", clark, &["Alford"]),
        ],
        "",
    );
    drop(held);
    let out = reload(&s);
    assert!(
        out.contains("Clark        started: added to the herd file"),
        "{out}"
    );
    assert!(
        out.contains("Alford       told live: link to Clark added"),
        "{out}"
    );
    assert!(
        out.contains("Ball         told live: nothing changes for it"),
        "{out}"
    );
    assert!(out.contains("reloaded "), "{out}");
    assert_eq!(
        (s.node_pid("Alford"), s.node_pid("Ball")),
        pids,
        "no restarts"
    );
    wait_until("Alford's link to Clark", || links(&s, "Alford") == (2, 2));

    // An update at the new server floods two hops, through the link made live.
    let at = iamat(clark, "kiwi.reload");
    assert!(at.starts_with("AT Clark "), "{at}");
    wait_for_at(ball, "kiwi.reload", &at);

    // Removing it again stops it, and it leaves the status.
    write_herd(
        &s,
        &[("Alford", alford, &["Ball"]), ("Ball", ball, &[])],
        "",
    );
    let out = reload(&s);
    assert!(
        out.contains("Clark        stopped: removed from the herd file"),
        "{out}"
    );
    assert!(
        out.contains("Alford       told live: link to Clark dropped"),
        "{out}"
    );
    assert!(s.node_pid("Clark").is_none());
    assert!(s.status().iter().all(|n| n["name"] != "Clark"));
    wait_until("Alford to drop its link", || links(&s, "Alford") == (1, 1));
}

#[test]
fn reload_drops_a_link_live_and_no_update_crosses_it() {
    let s = Supervised::herd(
        &[
            ("Alford", &["Ball", "Clark"]),
            ("Ball", &[]),
            ("Clark", &[]),
        ],
        "",
        "",
    );
    s.ok(&["start", "all"]);
    let ports: Vec<u16> = ["Alford", "Ball", "Clark"]
        .iter()
        .map(|n| s.herd.port(n))
        .collect();
    let (alford, ball, clark) = (ports[0], ports[1], ports[2]);
    // The link works before the reload.
    let at = iamat(alford, "before.reload");
    wait_for_at(ball, "before.reload", &at);
    let pids = (s.node_pid("Alford"), s.node_pid("Ball"));

    write_herd(
        &s,
        &[
            ("Alford", alford, &["Clark"]),
            ("Ball", ball, &[]),
            ("Clark", clark, &[]),
        ],
        "",
    );
    let out = reload(&s);
    assert!(
        out.contains("Alford       told live: link to Ball dropped"),
        "{out}"
    );
    assert!(
        out.contains("Ball         told live: link to Alford dropped"),
        "{out}"
    );
    assert_eq!(
        (s.node_pid("Alford"), s.node_pid("Ball")),
        pids,
        "no restarts"
    );
    assert_eq!(links(&s, "Alford"), (1, 1));
    assert_eq!(links(&s, "Ball"), (0, 0));

    // Ball now refuses Alford as a neighbour.
    let hello = exchange(
        ball,
        b"HERD HELLO Alford 2 0123456789abcdef0123456789abcdef\n",
    );
    assert!(hello.starts_with(b"? HERD HELLO Alford"), "{hello:?}");

    // An update at Alford reaches Clark (its reply waits until it is on every up link's
    // socket) and never Ball.
    let at = iamat(alford, "after.reload");
    wait_for_at(clark, "after.reload", &at);
    let reply = exchange(ball, b"WHATSAT after.reload 1 1\n");
    assert!(
        reply.starts_with(b"? "),
        "{}",
        String::from_utf8_lossy(&reply)
    );
    // Ball saw the id only in that question.
    let log = s.herd.log_text("Ball");
    let seen: Vec<&str> = log.lines().filter(|l| l.contains("after.reload")).collect();
    assert!(seen.iter().all(|l| l.contains("WHATSAT")), "{seen:?}");
    let log = s.herd.log_text("Alford");
    assert!(log.contains("Ball > HERD AT") && log.contains("before.reload"));
    assert!(
        !log.lines()
            .any(|l| l.contains("Ball > ") && l.contains("after.reload")),
        "{log}"
    );
}

#[test]
fn reload_restarts_a_server_whose_port_changed_and_its_neighbour_follows() {
    let s = Supervised::herd(PAIR, "", "");
    s.ok(&["start", "all"]);
    let alford_pid = s.node_pid("Alford");
    let old_ball = s.node_pid("Ball").unwrap();
    let alford = s.herd.port("Alford");
    let held = hold_ports(1).pop().unwrap();
    let new_port = held[0].port;
    write_herd(
        &s,
        &[("Alford", alford, &["Ball"]), ("Ball", new_port, &[])],
        "",
    );
    drop(held);
    let out = reload(&s);
    assert!(
        out.contains(&format!(
            "Ball         restarted: its address changed (127.0.0.1:{} -> 127.0.0.1:{new_port})",
            s.herd.port("Ball")
        )),
        "{out}"
    );
    assert!(
        out.contains("Alford       told live: new address for Ball"),
        "{out}"
    );
    let new_ball = s.node_pid("Ball").unwrap();
    assert_ne!(new_ball, old_ball);
    assert_eq!(s.node_pid("Alford"), alford_pid);
    assert!(s.serves_on("Ball", new_port));
    assert_eq!(s.node("Ball")["port"], new_port);
    // Alford dials Ball at its new address.
    wait_until("Alford to re-link to Ball", || {
        links(&s, "Alford") == (1, 1)
    });
    let at = iamat(alford, "moved.reload");
    wait_for_at(new_port, "moved.reload", &at);
}

#[test]
fn a_bad_file_changes_nothing_and_exits_non_zero() {
    let s = Supervised::herd(PAIR, "", "");
    s.ok(&["start", "all"]);
    let pids = (s.node_pid("Alford"), s.node_pid("Ball"));
    let applied = std::fs::read_to_string(s.herd.path().join("run/herd.applied.yaml")).unwrap();
    let good = std::fs::read_to_string(&s.herd.config).unwrap();

    for (bad, wanted) in [
        (
            good.replace("peers: [Ball]", "peers: [Bal]"),
            "lists unknown peer \"Bal\"",
        ),
        (good.replace("port: ", "port: x"), "line 2: port has x"),
        (
            format!("{good}limits: {{ max_connections: 0 }}\n"),
            "limits.max_connections is 0",
        ),
    ] {
        std::fs::write(&s.herd.config, &bad).unwrap();
        let out = s.run(&["reload"]);
        assert!(!out.status.success(), "{bad}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(wanted), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(out.stdout.is_empty(), "nothing was done");
    }
    assert_eq!((s.node_pid("Alford"), s.node_pid("Ball")), pids);
    let still = std::fs::read_to_string(s.herd.path().join("run/herd.applied.yaml")).unwrap();
    assert_eq!(still, applied, "the applied copy is untouched");
    assert!(s.serves("Alford") && s.serves("Ball"));
}

#[test]
fn limits_and_log_settings_apply_live_and_status_notes_an_unapplied_file() {
    let s = Supervised::herd(SOLO, "", "");
    s.ok(&["start", "all"]);
    let pid = s.node_pid("Alford");
    let port = s.herd.port("Alford");
    let long_id = "a-client-id-longer-than-sixteen-bytes";
    assert!(iamat(port, long_id).starts_with("AT Alford"));

    write_herd(
        &s,
        &[("Alford", port, &[])],
        "limits: { max_client_id_bytes: 16 }\nlog_dir: logs2\n",
    );
    let status = s.run(&["status"]);
    assert!(
        String::from_utf8_lossy(&status.stderr).contains("`herdctl reload` applies it"),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let out = reload(&s);
    assert!(
        out.contains("Alford       told live: limits settings; logs settings"),
        "{out}"
    );
    assert_eq!(s.node_pid("Alford"), pid, "no restart");
    assert!(iamat(port, long_id).starts_with("? IAMAT"));
    assert!(iamat(port, "short.id").starts_with("AT Alford"));
    // Lines now go to the new log folder.
    let new_logs = s.herd.path().join("logs2").join("Alford");
    wait_until("a log line in logs2", || {
        std::fs::read_dir(&new_logs)
            .map(|d| {
                d.filter_map(|e| e.ok()).any(|e| {
                    std::fs::read_to_string(e.path())
                        .unwrap_or_default()
                        .contains("short.id")
                })
            })
            .unwrap_or(false)
    });
    let status = s.run(&["status"]);
    assert!(!String::from_utf8_lossy(&status.stderr).contains("reload"));
}

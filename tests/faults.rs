//! Breaking the herd on purpose: pause/resume through the real supervisor, and the herd
//! caught up afterwards.

mod common;

use std::time::{Duration, Instant};

use common::supervised::Supervised;
use common::wait_until;

/// Health probes every 200 ms, two missed ones kill: a frozen node would be killed within
/// half a second if its silence counted.
const FAST_HEALTH: &str = ", health_interval_ms: 200, health_failures: 2";

#[test]
fn a_paused_node_is_not_restarted_by_health_checks_and_catches_up_on_resume() {
    let s = Supervised::with(FAST_HEALTH, "");
    s.ok(&["start", "all"]);
    wait_until("every link to be up", || {
        s.status().iter().all(|n| n["links_up"] == n["links_total"])
    });
    let pid = s.node_pid("Welsh").unwrap();
    let out = s.ok(&["pause", "Welsh"]);
    assert!(out.contains("Welsh paused"), "{out}");
    let frozen = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    assert!(
        frozen[frozen.rfind(')').unwrap() + 2..].starts_with('T'),
        "{frozen}"
    );

    // An update while it is frozen, at a neighbour.
    let reply = s
        .herd
        .send("Alford", "IAMAT paused.client +10+10 1700000000\n");
    assert!(reply.starts_with("AT Alford "), "{reply}");
    let at_line = reply.trim_end().to_owned();

    // Ten probe intervals and more: still paused, same process, never restarted.
    let began = Instant::now();
    while began.elapsed() < Duration::from_millis(2000) {
        let n = s.node("Welsh");
        assert_eq!(n["state"], "paused", "{n}");
        assert_eq!(n["pid"], pid, "{n}");
        assert_eq!(n["restarts"], 0, "{n}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // A second pause changes nothing, nor does a start: it stays frozen.
    assert!(s.ok(&["pause", "Welsh"]).contains("already paused"));
    s.ok(&["start", "Welsh"]);
    assert_eq!(s.node("Welsh")["state"], "paused");

    let out = s.ok(&["resume", "Welsh"]);
    assert!(out.contains("Welsh resumed"), "{out}");
    let n = s.node("Welsh");
    assert_eq!(
        (n["state"].as_str(), n["pid"].as_u64()),
        (Some("running"), Some(pid as u64))
    );
    s.herd.wait_for_at("Welsh", "paused.client", &at_line);
    // And it stays up: probes answered again.
    let began = Instant::now();
    while began.elapsed() < Duration::from_millis(1000) {
        let n = s.node("Welsh");
        assert_eq!(
            (n["state"].as_str(), n["restarts"].as_u64()),
            (Some("running"), Some(0))
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let resumed = s.run(&["resume", "Welsh"]);
    assert!(!resumed.status.success(), "not paused any more");
    let why = String::from_utf8_lossy(&resumed.stderr);
    assert!(why.contains("Welsh is running, not paused"), "{why}");
}

#[test]
fn a_paused_node_stops_cleanly() {
    let s = Supervised::herd(&[("Solo", &[])], FAST_HEALTH, "");
    s.ok(&["start", "all"]);
    s.ok(&["pause", "Solo"]);
    let out = s.ok(&["stop", "Solo"]);
    assert!(out.contains("stopped"), "{out}");
    assert!(s.node_pid("Solo").is_none());
    let n = s.node("Solo");
    assert_eq!(n["state"], "stopped", "{n}");
    assert_eq!(
        n["last_exit"], "exit status 0",
        "a SIGTERM it acted on: {n}"
    );
}

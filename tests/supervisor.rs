//! The supervisor end to end: real daemon, real node processes, real signals.

mod common;

use common::supervised::Supervised;
use common::{herdctl, run_to_end, wait_until};

/// A process is gone when it no longer exists or is a zombie waiting for its reaper.
fn gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat[stat.rfind(')').unwrap() + 2..].starts_with('Z'),
    }
}

fn kill9(pid: u32) {
    common::nix_kill(pid, "KILL");
}

const NAMES: [&str; 5] = ["Alford", "Ball", "Hamilton", "Holiday", "Welsh"];

#[test]
fn crashes_are_restarted_stops_stay_stopped_and_stop_all_leaves_nothing() {
    let s = Supervised::new();
    let out = s.ok(&["start", "all"]);
    assert!(out.contains("5 servers started"), "{out}");
    let status = s.status();
    assert_eq!(status.len(), 5);
    for node in &status {
        assert_eq!(node["state"], "running", "{node}");
        assert!(node["pid"].as_u64().is_some());
        assert_eq!(node["restarts"], 0);
        assert!(s.serves(node["name"].as_str().unwrap()));
    }
    // Links come up by themselves.
    wait_until("every link to be up", || {
        s.status().iter().all(|n| n["links_up"] == n["links_total"])
    });

    // kill -9 from outside: a crash. The supervisor restarts it with a new pid.
    let old = s.node_pid("Hamilton").unwrap();
    kill9(old);
    wait_until("Hamilton to be restarted", || {
        let n = s.node("Hamilton");
        n["state"] == "running" && n["pid"].as_u64() != Some(old as u64)
    });
    let n = s.node("Hamilton");
    assert_eq!(n["restarts"], 1, "{n}");
    assert_eq!(n["last_exit"], "killed by SIGKILL", "{n}");
    assert!(s.serves("Hamilton"));

    // A deliberate stop stays stopped, even while other nodes crash and restart.
    s.ok(&["stop", "Welsh"]);
    assert_eq!(s.node("Welsh")["state"], "stopped");
    assert_eq!(s.node("Welsh")["pid"], serde_json::Value::Null);
    let old = s.node_pid("Ball").unwrap();
    s.ok(&["kill", "Ball"]);
    wait_until("Ball to be restarted", || {
        let n = s.node("Ball");
        n["state"] == "running" && n["pid"].as_u64() != Some(old as u64)
    });
    assert_eq!(s.node("Welsh")["state"], "stopped");
    assert!(s.node_pid("Welsh").is_none());
    s.ok(&["start", "Welsh"]);
    assert!(s.serves("Welsh"));

    // stop all: every node and the supervisor are gone.
    let mut pids: Vec<u32> = NAMES.iter().map(|n| s.node_pid(n).unwrap()).collect();
    pids.push(s.daemon_pid().unwrap());
    s.ok(&["stop", "all"]);
    for pid in pids {
        assert!(gone(pid), "pid {pid} outlived stop all");
    }
    for name in NAMES {
        assert!(s.node_pid(name).is_none());
    }
    let status = s.status();
    assert!(status.iter().all(|n| n["state"] == "stopped"), "{status:?}");
}

#[test]
fn nodes_outlive_the_supervisor_and_are_adopted() {
    let s = Supervised::new();
    s.ok(&["start", "all"]);
    let pids: Vec<Option<u32>> = NAMES.iter().map(|n| s.node_pid(n)).collect();
    let daemon = s.daemon_pid().unwrap();
    kill9(daemon);
    wait_until("the supervisor to die", || s.daemon_pid().is_none());
    for name in NAMES {
        assert!(s.serves(name), "{name} stopped serving with its supervisor");
    }
    // Without a supervisor, status still tells the truth from the nodes' locks.
    let out = s.run(&["status", "--json"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("not running"));
    let status: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    for (node, pid) in status.iter().zip(&pids) {
        assert_eq!(node["state"], "running");
        assert_eq!(node["pid"].as_u64(), pid.map(u64::from));
    }
    // The next command that needs one starts a new supervisor that adopts the same pids.
    s.ok(&["start", "all"]);
    let new_daemon = s.daemon_pid().unwrap();
    assert_ne!(new_daemon, daemon);
    for (node, pid) in s.status().iter().zip(&pids) {
        assert_eq!(node["state"], "running", "{node}");
        assert_eq!(node["pid"].as_u64(), pid.map(u64::from), "{node}");
        assert!(node["uptime_s"].as_u64().is_some());
    }
    // An adopted node's crash is still noticed and restarted.
    kill9(pids[0].unwrap());
    wait_until("Alford to be restarted after adoption", || {
        let n = s.node("Alford");
        n["state"] == "running" && n["pid"].as_u64() != pids[0].map(u64::from)
    });
}

#[test]
fn a_port_in_use_fails_the_start_naming_the_port() {
    let s = Supervised::new();
    let port = s.herd.port("Welsh");
    let _squatter = s.herd.listen_as("Welsh");
    let out = s.run(&["start", "Welsh"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Welsh failed to start"), "{stderr}");
    assert!(stderr.contains(&format!("port {port}")), "{stderr}");
    // It is left stopped, not flapping.
    wait_until("Welsh to be stopped", || {
        s.node("Welsh")["state"] == "stopped"
    });
}

#[test]
fn start_works_after_everything_was_killed_hard() {
    let s = Supervised::new();
    s.ok(&["start", "all"]);
    // The supervisor first: killed after its nodes, it could restart one in between, and
    // that new node would outlive the test's list.
    let mut pids = vec![s.daemon_pid().unwrap()];
    pids.extend(NAMES.iter().map(|n| s.node_pid(n).unwrap()));
    for pid in &pids {
        kill9(*pid);
    }
    wait_until("everything to die", || {
        s.daemon_pid().is_none() && NAMES.iter().all(|n| s.node_pid(n).is_none())
    });
    // Stale lock, socket and pid files are still on disk; they must not matter.
    assert!(s.herd.path().join("run/supervisor.sock").exists());
    assert!(s.herd.path().join("run/Alford.lock").exists());
    let out = s.ok(&["start", "all"]);
    assert!(out.contains("5 servers started"), "{out}");
    for name in NAMES {
        assert!(s.serves(name));
    }
}

#[test]
fn clear_errors_for_bad_names_and_missing_config() {
    let s = Supervised::new();
    let out = s.run(&["start", "Nowhere"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no server named \"Nowhere\""), "{stderr}");
    assert!(stderr.contains("Alford, Ball"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");

    let out = run_to_end(
        herdctl().args(["--config", "/nonexistent/herd.yaml", "status"]),
        b"",
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("HERD_CONFIG"), "{stderr}");

    // A node started by hand cannot be started twice.
    s.herd.spawn("Alford");
    s.herd.wait_listening("Alford");
    // Deadline-bound: if the refusal ever broke, this would serve instead of exiting.
    let out = run_to_end(s.herd.herdctl().args(["run", "Alford"]), b"");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("already running (pid"), "{stderr}");
}

#[test]
fn a_hung_node_is_killed_and_restarted_by_health_probes() {
    let s = Supervised::with(", health_interval_ms: 300, health_failures: 2", "");
    s.ok(&["start", "Welsh"]);
    let hung = s.node_pid("Welsh").unwrap();
    common::nix_kill(hung, "STOP");
    wait_until("Welsh to be killed and restarted", || {
        let n = s.node("Welsh");
        n["state"] == "running" && n["pid"].as_u64().is_some_and(|p| p != hung as u64)
    });
    assert!(gone(hung), "the hung process was left behind");
    let n = s.node("Welsh");
    assert_eq!(n["restarts"], 1, "{n}");
    let why = n["last_exit"].as_str().unwrap();
    assert!(
        why.starts_with("killed by SIGKILL (2 health probes in a row unanswered within 300 ms"),
        "{why}"
    );
    assert!(s.serves("Welsh"));
    // The table shows why, too.
    let table = s.ok(&["status"]);
    assert!(table.contains("health probes in a row"), "{table}");
    // Probes are not wire traffic: the node's log does not record them.
    // (Waited for: the log writer holds lines a moment to write them in time order.)
    let log = s.herd.log_once_it_has("Welsh", "IAMAT probe");
    assert!(!log.contains("HERD STATUS"), "{log}");
}

#[test]
fn a_node_stuck_before_answering_is_killed_at_the_start_timeout() {
    // The places file is a FIFO nobody writes: the node blocks opening it, before it
    // listens, as a node stuck on a slow disk would.
    let s = Supervised::with(
        ", start_timeout_ms: 1500",
        "places: { provider: offline, file: stuck.csv }\n",
    );
    let fifo = s.herd.path().join("stuck.csv");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let out = s.run(&["start", "Welsh"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "Welsh failed to start: killed by SIGKILL (did not answer as itself \
                         within 1500 ms of starting (supervisor.start_timeout_ms))"
        ),
        "{stderr}"
    );
    assert!(s.node_pid("Welsh").is_none(), "the stuck process is gone");
    assert_eq!(s.node("Welsh")["state"], "stopped");
}

#[test]
fn a_start_sent_while_a_node_is_stopping_is_carried_out() {
    let s = Supervised::new();
    s.ok(&["start", "Welsh"]);
    let old = s.node_pid("Welsh").unwrap();
    // Frozen, it cannot act on SIGTERM: it stays `stopping` until the SIGKILL 3 s later.
    common::nix_kill(old, "STOP");
    let stop = common::Running::spawn(
        s.herd
            .herdctl()
            .args(["stop", "Welsh"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null()),
    );
    wait_until("Welsh to be stopping", || {
        s.node("Welsh")["state"] == "stopping"
    });
    let out = s.ok(&["start", "Welsh"]);
    assert!(out.contains("Welsh        running"), "{out}");
    let new = s.node_pid("Welsh").unwrap();
    assert_ne!(new, old);
    assert!(gone(old));
    drop(stop);
}

#[test]
fn a_panicking_task_lands_in_the_node_log_with_a_backtrace() {
    let s = Supervised::new();
    let out = s.run_with_env(&["start", "Welsh"], "HERDCTL_INJECT_PANIC", "task");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until("the panic to be logged", || {
        s.herd
            .log_text("Welsh")
            .contains("injected panic in a task")
    });
    let log = s.herd.log_text("Welsh");
    let at = log.find("panic in thread").expect("the panic is logged");
    let report = &log[at..];
    assert!(report.contains("crates/os/src/panics.rs"), "{report}");
    assert!(report.contains("backtrace:"), "{report}");
    assert!(
        report.contains("inject_panic_if_asked"),
        "a symbolized frame: {report}"
    );
    // A task's panic does not take the node down.
    assert!(s.serves("Welsh"));
    assert_eq!(s.node("Welsh")["restarts"], 0);
}

#[test]
fn a_crash_leaves_its_exit_code_and_last_words_in_status_and_stderr_is_kept() {
    let s = Supervised::new();
    for attempt in 1..=2 {
        let out = s.run_with_env(&["start", "Welsh"], "HERDCTL_INJECT_PANIC", "main");
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("Welsh failed to start: exit status 101; it said:")
                && stderr.contains("injected panic in the main thread"),
            "attempt {attempt}: {stderr}"
        );
    }
    let n = s.node("Welsh");
    assert_eq!(n["last_exit"], "exit status 101", "{n}");
    let words = n["last_words"].as_str().unwrap();
    assert!(
        words.starts_with("panic in thread 'main' at crates/os/src/panics.rs")
            && words.ends_with("injected panic in the main thread (HERDCTL_INJECT_PANIC=main)"),
        "{words}"
    );
    let table = s.ok(&["status"]);
    let row = table.lines().find(|l| l.starts_with("Welsh")).unwrap();
    assert!(
        row.contains("exit status 101: \"panic in thread 'main'"),
        "{table}"
    );
    // Both runs' words are kept: the stderr file is appended to, each start marked.
    let kept = std::fs::read_to_string(s.herd.path().join("run/Welsh.stderr")).unwrap();
    assert_eq!(
        kept.matches("--- herdctl: starting Welsh").count(),
        2,
        "{kept}"
    );
    assert_eq!(
        kept.matches("injected panic in the main thread").count(),
        2,
        "{kept}"
    );
    // And the node log has the backtrace.
    let log = s.herd.log_text("Welsh");
    assert!(log.contains("backtrace:"), "{log}");
}

#[test]
fn full_supervisor_log_and_stderr_files_are_rotated_not_lost() {
    let s = Supervised::new();
    let run = s.herd.path().join("run");
    let logs = s.herd.path().join("logs");
    std::fs::create_dir_all(&run).unwrap();
    std::fs::create_dir_all(&logs).unwrap();
    let big = |what: &str, mib: usize| format!("{what}\n").repeat(mib << 20 >> 4);
    std::fs::write(logs.join("supervisor.log"), big("old supervisor 1", 5)).unwrap();
    std::fs::write(run.join("Welsh.stderr"), big("old welsh stderr", 2)).unwrap();
    s.ok(&["start", "Welsh"]);
    let read = |p: std::path::PathBuf| std::fs::read_to_string(p).unwrap_or_default();
    assert!(read(logs.join("supervisor.log.1")).starts_with("old supervisor 1"));
    assert!(!read(logs.join("supervisor.log")).contains("old supervisor 1"));
    assert!(read(logs.join("supervisor.log")).contains("started Welsh"));
    assert!(read(run.join("Welsh.stderr.1")).starts_with("old welsh stderr"));
    assert!(read(run.join("Welsh.stderr")).starts_with("--- herdctl: starting Welsh"));
}

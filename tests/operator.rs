//! An operator's day (issue 21), black-box with the real binary: the CLI keeps working when
//! the herd file is wrong, never misreports, errors are one line in the herd's words, and
//! every log line is one event.

mod common;

use std::net::TcpListener;
use std::process::Output;
use std::time::{Duration, Instant};

use common::supervised::Supervised;
use common::{run_to_end, Herd, PAIR, SOLO};

fn run(herd: &Herd, args: &[&str]) -> Output {
    run_to_end(herd.herdctl().args(args), b"")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Asserts `out` failed with exactly one line on stderr, and returns it.
fn one_line_failure(out: &Output) -> String {
    let said = stderr(out);
    assert!(!out.status.success(), "should fail: {said}");
    assert_eq!(said.lines().count(), 1, "one line: {said:?}");
    said
}

/// Item 7: what the YAML parser, the file system and clap say reaches the user as one line
/// naming the field and the fix, never a library's advice.
#[test]
fn errors_are_one_line_naming_the_field_and_the_fix() {
    let herd = Herd::configure(SOLO, "");
    let check = |yaml: &[u8]| {
        std::fs::write(&herd.config, yaml).unwrap();
        one_line_failure(&run(&herd, &["check"]))
    };
    let said = check(b"servers:\n  Alford: { port: 31000 }\n  Alford: { port: 31001 }\n");
    assert!(
        said.contains("line 3: Alford appears twice") && !said.contains("DuplicateKeyPolicy"),
        "{said}"
    );
    for port in ["-1", "\"12000x\""] {
        let said = check(format!("servers:\n  Alford: {{ port: {port} }}\n").as_bytes());
        assert!(
            said.contains(&format!(
                "line 2: port has {port}, which is not a whole number"
            )) && said.contains("1-65535"),
            "{said}"
        );
    }
    let said = check(b"servers:\n  Alford: { port: 1, peers: Ball }\n  Ball: { port: 2 }\n");
    assert!(
        said.contains("peers must be a list") && said.contains("peers: [Ball, Welsh]"),
        "{said}"
    );
    let said = check(b"servers:\n  Alford: { port: 1 }\n# caf\xe9\n");
    assert!(
        said.contains("not UTF-8") && said.contains("byte offset 36") && !said.contains("--config"),
        "{said}"
    );
    let said = one_line_failure(&run_to_end(
        common::herdctl().args(["--config", "/nonexistent/herd.yaml", "check"]),
        b"",
    ));
    assert!(said.contains("pass --config PATH"), "{said}");

    // Argument errors: one line too, with the usage, exit code 2.
    let out = run(&herd, &["send"]);
    let said = one_line_failure(&out);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        said.contains("<NAME> <LINE>") && said.contains("usage: herdctl send"),
        "{said}"
    );

    std::fs::write(&herd.config, "servers:\n  Alford: { port: 31000 }\n").unwrap();
    let out = run(&herd, &["check"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains(": 1 server\n"), "{}", stdout(&out));
}

/// Item 2: values that cannot work are refused by `check` and `reload`, naming the minimum.
#[test]
fn limits_that_cannot_work_are_refused_naming_the_minimum() {
    for (yaml, wanted) in [
        (
            "limits: { max_connections: 2 }\n",
            "limits.max_connections is 2; use at least 4",
        ),
        (
            "supervisor: { health_interval_ms: 20 }\n",
            "supervisor.health_interval_ms is 20; use at least 100",
        ),
        (
            "supervisor: { start_timeout_ms: 300 }\n",
            "supervisor.start_timeout_ms is 300; use at least 1000",
        ),
    ] {
        let herd = Herd::configure(SOLO, yaml);
        for command in ["check", "reload"] {
            let said = one_line_failure(&run(&herd, &[command]));
            assert!(said.contains(wanted), "{command}: {said}");
        }
    }
}

/// Item 8: `send` to a port held by a process that never answers gives up after
/// `--timeout` and names the holder; `tail` helps with a server that never ran and still
/// reads the log of one removed from the herd file.
#[test]
fn send_gives_up_on_a_silent_port_and_tail_helps() {
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let herd = Herd::configure(SOLO, "");
    std::fs::write(
        &herd.config,
        format!("servers:\n  Alford: {{ port: {port} }}\n"),
    )
    .unwrap();
    let began = Instant::now();
    let said = one_line_failure(&run(
        &herd,
        &["send", "Alford", "IAMAT a +1+1 1", "--timeout", "0.3"],
    ));
    assert!(
        began.elapsed() < Duration::from_secs(20),
        "gave up late: {said}"
    );
    assert!(
        said.contains("no reply within 0.3s")
            && said.contains(&format!("pid {}", std::process::id())),
        "{said}"
    );
    drop(silent);

    let out = run(&herd, &["tail", "Alford"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no log for Alford") && stderr(&out).contains("herdctl start"),
        "{}",
        stderr(&out)
    );

    // A server removed from the file: its log is still read.
    let folder = herd.path().join("logs").join("Gone");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(
        folder.join("Gone.log"),
        "2026-01-01T00:00:00.000000Z  INFO last words\n",
    )
    .unwrap();
    std::fs::write(
        &herd.config,
        format!("servers:\n  Alford: {{ port: {port} }}\nlogs: {{ rotation: never }}\n"),
    )
    .unwrap();
    let out = run(&herd, &["tail", "Gone"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("last words"), "{}", stdout(&out));
    assert!(stderr(&out).contains("no longer in"), "{}", stderr(&out));
}

fn text(out: &Output) -> String {
    format!("{}{}", stdout(out), stderr(out))
}

/// Item 1: a broken herd.yaml does not lock the operator out: status, send, tail, kill and
/// stop work from the supervisor's applied copy with one warning line; reload is refused.
#[test]
fn a_broken_herd_file_leaves_the_running_herd_in_reach() {
    let s = Supervised::herd(PAIR, "", "");
    s.ok(&["start", "all"]);
    let good = std::fs::read_to_string(&s.herd.config).unwrap();
    std::fs::write(&s.herd.config, format!("{good}bogus_key: 1\n")).unwrap();

    let out = s.run(&["status", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let warning = stderr(&out);
    assert_eq!(warning.lines().count(), 1, "{warning}");
    assert!(
        warning.contains("bogus_key") && warning.contains("applied"),
        "{warning}"
    );
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert!(rows.iter().all(|r| r["state"] == "running"), "{rows:?}");

    let out = s.run(&["send", "Alford", "IAMAT broken.file +1+1 1"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(stdout(&out).starts_with("AT Alford "), "{}", text(&out));
    let out = s.run(&["tail", "Alford", "-n", "3"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = s.run(&["kill", "Ball"]);
    assert!(out.status.success(), "{}", text(&out));

    let out = s.run(&["reload"]);
    let said = one_line_failure(&out);
    assert!(said.contains("bogus_key"), "{said}");

    let out = s.run(&["stop", "all"]);
    assert!(out.status.success(), "{}", text(&out));
    common::wait_until("every lock to be released", || {
        s.daemon_pid().is_none() && s.node_pid("Alford").is_none() && s.node_pid("Ball").is_none()
    });
}

/// Item 3: a changed run_dir is refused by reload and start (one line, the fix); status and
/// stop still reach the herd where it runs; no raw OS error reaches the user.
#[test]
fn a_changed_run_dir_is_refused_and_the_herd_stays_in_reach() {
    let s = Supervised::herd(PAIR, "", "");
    s.ok(&["start", "all"]);
    let alford = s.node_pid("Alford").expect("Alford runs");
    let good = std::fs::read_to_string(&s.herd.config).unwrap();
    std::fs::write(&s.herd.config, format!("{good}run_dir: run2\n")).unwrap();

    for args in [&["reload"][..], &["start", "Alford"]] {
        let said = one_line_failure(&s.run(args));
        assert!(
            said.contains("run_dir changed") && said.contains("stop all"),
            "{args:?}: {said}"
        );
    }
    let out = s.run(&["status", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let alford_row = rows.iter().find(|r| r["name"] == "Alford").unwrap();
    assert_eq!(alford_row["state"], "running", "{rows:?}");
    assert_eq!(alford_row["pid"], alford, "{rows:?}");

    let out = s.run(&["stop", "all"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!text(&out).contains("Os {"), "{}", text(&out));
    common::wait_until("the nodes to be gone", || {
        s.node_pid("Alford").is_none() && s.node_pid("Ball").is_none()
    });
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", s.herd.port("Alford"))).is_err(),
        "stop said stopped: nothing may serve Alford's port"
    );
    assert!(!s.herd.path().join("run2").exists(), "no second supervisor");
}

/// Item 3: `stop` never reports a process stopped while it lives (here a node started by
/// hand with another run_dir, whose lock the supervisor cannot see), and a second node on
/// the same store gets the holder named, not `Os { code: 11, .. }`.
#[test]
fn stop_never_reports_a_live_process_stopped() {
    let s = Supervised::herd(SOLO, "", "");
    let other = s.herd.path().join("other.yaml");
    let good = std::fs::read_to_string(&s.herd.config).unwrap();
    std::fs::write(&other, format!("{good}run_dir: run-other\n")).unwrap();
    s.herd.release("Alford"); // for the stray to bind
    let stray = common::Running::spawn(
        common::herdctl()
            .args(["--config"])
            .arg(&other)
            .args(["run", "Alford"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null()),
    );
    common::wait_until("the stray Alford to serve", || {
        std::net::TcpStream::connect(("127.0.0.1", s.herd.port("Alford"))).is_ok()
            && s.serves("Alford")
    });

    let out = s.run(&["stop", "Alford"]);
    let said = one_line_failure(&out);
    assert!(
        said.contains("Alford still runs as pid") && said.contains(&stray.0.id().to_string()),
        "{said}"
    );
    assert!(!stdout(&out).contains("stopped"), "{}", text(&out));

    // The same server by the herd's own file: its store is held, and the error says by whom.
    let out = s.run(&["start", "all"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(!text(&out).contains("Os {"), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("pid {}", stray.0.id())),
        "{}",
        text(&out)
    );
    assert_eq!(
        s.daemon_pid(),
        None,
        "a start that failed for every server leaves no supervisor"
    );
    drop(stray);
}

/// Item 4: LAST EXIT is `-` after a clean stop, quotes only warnings, errors or a panic,
/// and a row fits the terminal.
#[test]
fn last_exit_is_news_only() {
    // A herd with nothing to warn about: its nodes' stderr holds INFO lines only.
    let s = Supervised::herd(PAIR, "", "");
    s.ok(&["start", "all"]);
    s.ok(&["restart", "all"]);
    for row in s.status() {
        assert!(row["last_exit"].is_null(), "a clean stop: {row}");
        assert!(row["last_words"].is_null(), "{row}");
    }
    let table = run_to_end(s.herd.herdctl().arg("status").env("COLUMNS", "70"), b"");
    let table = stdout(&table);
    for line in table.lines() {
        assert!(line.chars().count() <= 70, "{line:?}");
    }
    let pid = s.node_pid("Ball").unwrap();
    s.ok(&["kill", "Ball"]);
    common::wait_until("Ball to be restarted", || {
        s.node_pid("Ball").is_some_and(|p| p != pid) && s.node("Ball")["state"] == "running"
    });
    let ball = s.node("Ball");
    assert!(
        ball["last_exit"]
            .as_str()
            .is_some_and(|e| e.contains("SIGKILL") && e.contains("herdctl kill")),
        "{ball}"
    );
    assert!(
        ball["last_words"].is_null(),
        "INFO lines are not last words: {ball}"
    );
}

/// Item 5: a second `start all` says "already running"; a bare `stop` is refused; status
/// names the process holding a stopped server's port.
#[test]
fn start_and_stop_say_what_happened() {
    let s = Supervised::herd(PAIR, "", "");
    s.ok(&["start", "Alford"]);
    let again = s.ok(&["start", "all"]);
    assert!(
        again.contains("Alford       already running") && again.contains("1 server started"),
        "{again}"
    );
    let again = s.ok(&["start", "all"]);
    assert!(
        again.contains("2 servers already running; nothing to start"),
        "{again}"
    );

    let said = one_line_failure(&s.run(&["stop"]));
    assert!(said.contains("herdctl stop all"), "{said}");
    assert!(
        s.serves("Alford") && s.serves("Ball"),
        "a bare stop stops nothing"
    );

    s.ok(&["stop", "Ball"]);
    let squatter = TcpListener::bind(("127.0.0.1", s.herd.port("Ball"))).unwrap();
    let out = s.ok(&["status"]);
    assert!(
        out.contains(&format!(
            "Ball: stopped but its port {} is held by pid {}",
            s.herd.port("Ball"),
            std::process::id()
        )),
        "{out}"
    );
    drop(squatter);
}

/// Item 9: with `limits.close_after_reply`, a client that sends lines and reads until the
/// server closes (no half-close) gets its replies and then EOF, not a wait for
/// `idle_timeout_s`; without it the connection stays open.
#[test]
fn close_after_reply_ends_a_connection_once_answered() {
    use std::io::{Read, Write};
    let herd = Herd::configure(
        SOLO,
        "limits: { close_after_reply: true, idle_timeout_s: 300 }\n",
    );
    herd.start_node("Alford");
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", herd.port("Alford"))).unwrap();
    stream.set_read_timeout(Some(common::DEADLINE)).unwrap();
    let began = Instant::now();
    stream
        .write_all(b"IAMAT eof.client +1+1 1\nIAMAT eof.client +1+1 2\n")
        .unwrap();
    let mut reply = String::new();
    stream
        .read_to_string(&mut reply)
        .expect("the server closes once it has answered");
    assert!(
        began.elapsed() < Duration::from_secs(20),
        "closed after the grace, not the idle timeout"
    );
    assert_eq!(reply.lines().count(), 2, "{reply}");
    assert!(
        reply.lines().all(|l| l.starts_with("AT Alford ")),
        "{reply}"
    );

    // Off (the default): the connection is still open after the grace.
    let herd = Herd::configure(SOLO, "");
    herd.start_node("Alford");
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", herd.port("Alford"))).unwrap();
    stream.write_all(b"IAMAT open.client +1+1 1\n").unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut buf = [0u8; 4096];
    let n = stream.read(&mut buf).unwrap();
    assert!(buf[..n].starts_with(b"AT Alford "));
    let err = stream
        .read(&mut buf)
        .expect_err("still open: the read times out");
    assert!(
        matches!(
            err.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
        "{err}"
    );
}

/// Item 6: every log line is one event with its own timestamp (a WHATSAT reply's newlines
/// are escaped in the file); `tail` shows the reply as lines again, `tail --raw` as stored.
#[test]
fn every_log_line_is_one_event_and_tail_shows_replies_readably() {
    let herd = Herd::configure(SOLO, "");
    herd.start_node("Alford");
    herd.send("Alford", "IAMAT one.event +34.068930-118.445127 1\n");
    let reply = herd.send("Alford", "WHATSAT one.event 10 2\n");
    assert!(reply.lines().count() > 3, "a multi-line reply: {reply}");
    common::wait_until("the WHATSAT reply in the log", || {
        herd.log_text("Alford").contains("> AT Alford ")
            && herd.log_text("Alford").contains("\\n{\\n")
    });
    let log = herd.log_text("Alford");
    for line in log.lines() {
        assert!(
            line.starts_with(|c: char| c.is_ascii_digit()) && line.contains('Z'),
            "every line starts with its timestamp: {line:?}"
        );
    }
    let shown = stdout(&run(&herd, &["tail", "Alford", "-n", "50"]));
    assert!(
        shown
            .lines()
            .any(|l| l.trim_start().starts_with("\"results\"")),
        "{shown}"
    );
    let raw = stdout(&run(&herd, &["tail", "Alford", "-n", "50", "--raw"]));
    assert!(
        raw.lines()
            .all(|l| l.starts_with(|c: char| c.is_ascii_digit())),
        "{raw}"
    );
    assert!(raw.contains("\\n{\\n"), "{raw}");
}

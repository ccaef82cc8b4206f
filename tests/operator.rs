//! An operator's day (issue 21), black-box with the real binary: the CLI keeps working when
//! the herd file is wrong, never misreports, errors are one line in the herd's words, and
//! every log line is one event.

mod common;

use std::net::TcpListener;
use std::process::Output;
use std::time::{Duration, Instant};

use common::{run_to_end, Herd};

const SOLO: &[(&str, &[&str])] = &[("Alford", &[])];

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

//! A node's log stays bounded whatever clients send: wire lines capped, files rotated by
//! size as well as time with `logs.keep` of them kept, operators' `HERD STATUS` polling left
//! out, and a log writer that falls behind drops (and counts) lines instead of blocking the
//! node. Real `herdctl run` processes on loopback.

mod common;

use std::io::{BufRead, BufReader};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{exchange, numbered_iamat, run_to_end, wait_until, Herd, DEADLINE};

fn iamats(tag: &str, count: usize) -> String {
    (0..count).map(|i| numbered_iamat(tag, i)).collect()
}

#[test]
fn wire_lines_are_capped_and_files_rotate_by_size() {
    let herd = Herd::configure(
        &[("Alford", &[])],
        "logs: { max_line_bytes: 100, max_file_bytes: 20000, keep: 3 }\n",
    );
    herd.start_node("Alford");
    let long = format!("IAMAT {}\n", "x".repeat(10_000));
    let reply = herd.send("Alford", &long);
    assert!(
        reply.starts_with("? IAMAT xxx"),
        "answered in full: {}",
        reply.len()
    );

    // The log writer has its own thread: the lines may land a moment after the reply.
    wait_until("the exchange in the log", || {
        herd.log_text("Alford").contains("... (10008 bytes)")
    });
    let log = herd.log_text("Alford");
    assert!(log.contains("< IAMAT xxxx"), "{log}");
    assert!(log.contains("... (10006 bytes)"), "{log}");
    assert!(log.contains("... (10008 bytes)"), "the reply too: {log}");
    let longest = log.lines().map(str::len).max().unwrap();
    assert!(longest < 200, "a log line of {longest} bytes");

    // About 300 KB of log: rotated by size, only the newest three files kept.
    let reply = exchange(herd.port("Alford"), iamats("rot", 1000).as_bytes());
    assert_eq!(reply.iter().filter(|&&b| b == b'\n').count(), 1000);
    let dir = herd.path().join("logs").join("Alford");
    let files = || -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    wait_until("the log to rotate", || {
        files().len() == 3 && herd.log_text("Alford").contains("rot-999 ")
    });
    for name in files() {
        let size = std::fs::metadata(dir.join(&name)).unwrap().len();
        assert!(size < 20000 + 70_000, "{name}: {size} bytes");
        assert!(
            name.starts_with("Alford.") && name.ends_with(".log"),
            "{name}"
        );
    }
    // `tail` reads across the size-rotated files, newest last.
    let tail = run_to_end(herd.herdctl().args(["tail", "Alford", "-n", "2"]), b"");
    let text = String::from_utf8_lossy(&tail.stdout);
    assert!(text.contains("< IAMAT rot-999 "), "{text}");
    assert!(text.contains("> AT Alford "), "{text}");
}

#[test]
fn status_probes_are_logged_only_at_debug_level() {
    let quiet = Herd::configure(&[("Alford", &[])], "");
    quiet.start_node("Alford");
    let loud = Herd::configure(&[("Ball", &[])], "logs: { level: debug }\n");
    loud.start_node("Ball");
    for _ in 0..3 {
        quiet.status("Alford");
        loud.status("Ball");
    }
    quiet.send("Alford", &iamats("q", 1));
    loud.send("Ball", &iamats("l", 1));
    wait_until("both logs to show the IAMAT", || {
        quiet.log_text("Alford").contains("IAMAT q-0")
            && loud.log_text("Ball").contains("IAMAT l-0")
    });
    assert!(!quiet.log_text("Alford").contains("HERD STATUS"));
    let debug = loud.log_text("Ball");
    assert!(debug.contains("< HERD STATUS\n"), "{debug}");
    assert!(debug.contains("> HERD STATUS {"), "{debug}");
}

#[test]
fn a_stalled_log_writer_drops_lines_instead_of_blocking_the_node() {
    // The log "file" is a FIFO nobody reads yet: the writer blocks opening it, as it would
    // on a hung disk, while the node goes on serving.
    let herd = Herd::configure(&[("Alford", &[])], "logs: { rotation: never }\n");
    let dir = herd.path().join("logs").join("Alford");
    std::fs::create_dir_all(&dir).unwrap();
    let fifo = dir.join("Alford.log");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    herd.start_node("Alford");

    // Far more than the log queue holds (about 240 bytes of log per exchange); every reply
    // arrives (each exchange has a deadline), so no worker waited for the log.
    for round in 0..50 {
        let reply = exchange(
            herd.port("Alford"),
            iamats(&format!("d{round}"), 2000).as_bytes(),
        );
        assert_eq!(reply.iter().filter(|&&b| b == b'\n').count(), 2000);
    }
    let dropped = herd.status("Alford").log_dropped;
    assert!(dropped > 0, "nothing dropped");
    let status = run_to_end(herd.herdctl().arg("status"), b"");
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.contains("wire log lines dropped"), "{text}");

    // Once the log can be written again, it says what it lost.
    let reader = std::fs::File::open(&fifo).unwrap();
    let mut lines = BufReader::new(reader).lines();
    let deadline = Instant::now() + DEADLINE + Duration::from_secs(30);
    loop {
        assert!(Instant::now() < deadline, "no note about dropped lines");
        let line = lines.next().expect("log open").unwrap();
        if line.contains("wire lines dropped") {
            break;
        }
    }
}

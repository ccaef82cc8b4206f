//! A node's log stays bounded whatever clients send: wire lines capped, files rotated by
//! size as well as time with `logs.keep` of them kept, operators' `HERD STATUS` polling left
//! out, and a log writer that falls behind drops (and counts) lines instead of blocking the
//! node. Real `herdctl run` processes on loopback.

mod common;

use std::io::{BufRead, BufReader};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{exchange, numbered_iamat, run_to_end, wait_until, Herd, DEADLINE, SOLO};

fn iamats(tag: &str, count: usize) -> String {
    (0..count).map(|i| numbered_iamat(tag, i)).collect()
}

#[test]
fn wire_lines_are_capped_and_files_rotate_by_size() {
    let herd = Herd::configure(
        SOLO,
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
    let quiet = Herd::configure(SOLO, "");
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
    let herd = Herd::configure(SOLO, "logs: { rotation: never }\n");
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

/// The lines of a log that start with a timestamp (continuation lines have none).
fn stamped(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| l.len() >= 27 && l.as_bytes()[10] == b'T' && l.as_bytes()[26] == b'Z')
        .collect()
}

/// Asserts that no line of `text` stamped `since` or later is stamped earlier than the one
/// before it; returns how many such lines there are.
fn assert_in_time_order(what: &str, text: &str, since: &str) -> usize {
    let lines: Vec<&str> = stamped(text)
        .into_iter()
        .filter(|l| &l[..27] >= since)
        .collect();
    let backwards: Vec<_> = lines
        .windows(2)
        .filter(|w| w[0][..27] > w[1][..27])
        .collect();
    assert!(
        backwards.is_empty(),
        "{what}: {} of {} lines stamped earlier than the line before them, e.g. {:#?}",
        backwards.len(),
        lines.len(),
        &backwards[..backwards.len().min(5)]
    );
    lines.len()
}

#[test]
fn every_log_and_tail_all_are_in_time_order_under_concurrent_load() {
    const TRIANGLE: &[(&str, &[&str])] = &[
        ("Alford", &["Ball", "Hamilton"]),
        ("Ball", &["Hamilton"]),
        ("Hamilton", &[]),
    ];
    // A longer window than the default 200 ms: on a loaded test machine (CI, 2 cores, the
    // suite in parallel) a thread can be kept off the CPU between an event and handing its
    // line over for longer than that. Without the reordering, any window fails this test.
    let herd = Herd::configure(TRIANGLE, "logs: { order_window_ms: 2000 }\n").started();
    wait_until("every link to be up", || {
        ["Alford", "Ball", "Hamilton"]
            .iter()
            .all(|n| herd.status(n).links_up == 2)
    });
    // A first WHATSAT at each, so the places index is loaded: a lookup that waits longer
    // than the window makes its own request line late (README, Logs).
    for name in ["Alford", "Ball", "Hamilton"] {
        herd.send(name, &iamats("warm", 1));
        assert!(herd.send(name, "WHATSAT warm-0 10 2\n").starts_with("AT "));
    }
    let mut since = Vec::new();
    herdctl::clock::push_timestamp(&mut since, herdctl::clock::now_nanos());
    let since = String::from_utf8(since).unwrap();
    // Clients on every server at once, so each server's log gets lines from its client
    // connections and both neighbours' sessions, from several threads, interleaved.
    std::thread::scope(|scope| {
        for (t, server) in ["Alford", "Ball", "Hamilton"]
            .iter()
            .cycle()
            .take(6)
            .enumerate()
        {
            let port = herd.port(server);
            scope.spawn(move || {
                for round in 0..10 {
                    let mut lines = iamats(&format!("c{t}r{round}"), 100);
                    lines += &format!("WHATSAT c{t}r{round}-0 10 2\n");
                    let reply = exchange(port, lines.as_bytes());
                    assert!(
                        reply.starts_with(b"AT "),
                        "{}",
                        String::from_utf8_lossy(&reply)
                    );
                }
            });
        }
    });
    // The last update of each client thread has reached every server.
    for name in ["Alford", "Ball", "Hamilton"] {
        for t in 0..6 {
            let client = format!("c{t}r9-99");
            wait_until(&format!("{client} at {name}"), || {
                herd.known_at(name, &client).is_some()
            });
        }
    }
    // Stopped, so every held line is written.
    for name in ["Alford", "Ball", "Hamilton"] {
        assert!(herd.terminate(name).success());
    }
    for name in ["Alford", "Ball", "Hamilton"] {
        let log = herd.log_text(name);
        let lines = assert_in_time_order(name, &log, &since);
        assert!(lines > 3000, "{name}: only {lines} lines");
        assert!(log.contains("> HERD AT") && log.contains("< HERD AT"));
    }
    let out = run_to_end(herd.herdctl().args(["tail", "all", "-n", "100000"]), b"");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let merged: String = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once(" | ").map(|(_, line)| format!("{line}\n")))
        .collect();
    assert!(assert_in_time_order("tail all", &merged, &since) > 9000);
}

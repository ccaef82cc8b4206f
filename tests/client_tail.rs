//! `herdctl send` and `herdctl tail`, run for real against `herdctl run` nodes on loopback.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::{ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::Instant;

use common::{run_to_end, wait_until, Herd, Running, DEADLINE, PAIR, SOLO};

const WHERE: &str = "+34.068930-118.445127 1621464827.959498503";

/// Reading `herdctl tail -f` as it prints.
trait StdoutLines {
    fn lines(&mut self) -> Receiver<String>;
}

impl StdoutLines for Running {
    /// Its stdout, line by line, read from a thread.
    fn lines(&mut self) -> Receiver<String> {
        let stdout = self.0.stdout.take().expect("stdout is piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        rx
    }
}

struct Output {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// Runs `herdctl --config HERD ARGS` with `stdin`, killed if it outlives the deadline.
fn herdctl_in(herd: &Herd, args: &[&str], stdin: &[u8]) -> Output {
    let out = run_to_end(herd.herdctl().args(args), stdin);
    Output {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn run(herd: &Herd, args: &[&str]) -> Output {
    herdctl_in(herd, args, b"")
}

/// Waits for a line satisfying `wanted` on `lines`, returning it.
fn expect_line(lines: &Receiver<String>, what: &str, wanted: impl Fn(&str) -> bool) -> String {
    let start = Instant::now();
    let mut seen = Vec::new();
    while let Some(left) = DEADLINE.checked_sub(start.elapsed()) {
        match lines.recv_timeout(left) {
            Ok(line) if wanted(&line) => return line,
            Ok(line) => seen.push(line),
            Err(_) => break,
        }
    }
    panic!("no line with {what} from herdctl tail; saw: {seen:#?}");
}

#[test]
fn send_iamat_prints_the_at_line() {
    let herd = Herd::start(SOLO);
    let out = run(&herd, &["send", "Alford", &format!("IAMAT kiwi {WHERE}")]);
    assert!(out.status.success(), "{}", out.stderr);
    let line = out.stdout.strip_suffix('\n').expect("one line");
    assert!(line.starts_with("AT Alford "), "{line:?}");
    assert!(line.ends_with(&format!(" kiwi {WHERE}")), "{line:?}");
    assert!(!line.contains('\n'));
}

#[test]
fn send_an_invalid_line_prints_the_question_mark_and_fails() {
    let herd = Herd::start(SOLO);
    let out = run(&herd, &["send", "Alford", "WHATSAT kiwi 51 5\n"]);
    assert_eq!(out.stdout, "? WHATSAT kiwi 51 5\n");
    assert!(!out.status.success());
}

#[test]
fn send_dash_sends_standard_input() {
    let herd = Herd::start(SOLO);
    let input = format!("IAMAT one {WHERE}\nIAMAT two {WHERE}\n");
    let out = herdctl_in(&herd, &["send", "Alford", "-"], input.as_bytes());
    assert!(out.status.success(), "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{:?}", out.stdout);
    assert!(lines[0].starts_with("AT Alford ") && lines[0].ends_with(&format!(" one {WHERE}")));
    assert!(lines[1].starts_with("AT Alford ") && lines[1].ends_with(&format!(" two {WHERE}")));

    // One good line and one bad: both answered, and the bad one fails the command.
    let input = format!("IAMAT three {WHERE}\nnonsense");
    let out = herdctl_in(&herd, &["send", "Alford", "-"], input.as_bytes());
    assert!(!out.status.success());
    assert!(out.stdout.ends_with("\n? nonsense\n"), "{:?}", out.stdout);
}

#[test]
fn send_to_a_stopped_server_names_the_port_and_the_fix() {
    let herd = Herd::configure(SOLO, "");
    let port = herd.port("Alford");
    let out = run(&herd, &["send", "Alford", &format!("IAMAT kiwi {WHERE}")]);
    assert!(!out.status.success());
    assert_eq!(out.stdout, "");
    assert_eq!(out.stderr.lines().count(), 1, "{:?}", out.stderr);
    assert!(
        out.stderr.contains(&format!("127.0.0.1:{port}"))
            && out.stderr.contains("connection refused")
            && out.stderr.contains("herdctl --config ")
            && out.stderr.contains(" start Alford"),
        "{:?}",
        out.stderr
    );
}

#[test]
fn unknown_server_names_are_refused_with_the_known_ones() {
    let herd = Herd::configure(PAIR, "");
    let out = run(&herd, &["send", "Bal", "IAMAT x"]);
    assert!(!out.status.success());
    assert_eq!(out.stderr.lines().count(), 1, "{:?}", out.stderr);
    assert!(
        out.stderr.contains("\"Bal\"") && out.stderr.contains("Alford, Ball"),
        "{:?}",
        out.stderr
    );
    let out = run(&herd, &["tail", "Bal"]);
    assert!(!out.status.success());
    assert_eq!(out.stderr.lines().count(), 1, "{:?}", out.stderr);
    assert!(
        out.stderr.contains("Alford, Ball") && out.stderr.contains("all"),
        "{:?}",
        out.stderr
    );
}

#[test]
fn tail_of_a_server_without_a_log_says_so() {
    let herd = Herd::configure(SOLO, "");
    let out = run(&herd, &["tail", "Alford"]);
    assert!(out.status.success(), "{}", out.stderr);
    assert_eq!(out.stdout, "");
    assert_eq!(out.stderr.lines().count(), 1, "{:?}", out.stderr);
    assert!(out.stderr.contains("no log for Alford"), "{:?}", out.stderr);
}

#[test]
fn tail_shows_the_last_lines_of_the_log() {
    let herd = Herd::start(SOLO);
    for client in ["tail-a", "tail-b", "tail-c"] {
        herd.send("Alford", &format!("IAMAT {client} {WHERE}\n"));
    }
    wait_until("the last reply in Alford's log", || {
        herd.log_text("Alford")
            .lines()
            .any(|l| l.contains("> AT Alford ") && l.contains("tail-c"))
    });
    let out = run(&herd, &["tail", "Alford", "-n", "3"]);
    assert!(out.status.success(), "{}", out.stderr);
    let log = herd.log_text("Alford");
    let last: Vec<&str> = log.lines().rev().take(3).collect::<Vec<_>>();
    let last: Vec<&str> = last.into_iter().rev().collect();
    assert_eq!(out.stdout.lines().collect::<Vec<_>>(), last);
    assert!(out.stdout.contains("tail-c"), "{}", out.stdout);
}

#[test]
fn tail_all_prefixes_each_line_with_its_server() {
    let herd = Herd::start(PAIR);
    herd.send("Alford", &format!("IAMAT via-alford {WHERE}\n"));
    herd.send("Ball", &format!("IAMAT via-ball {WHERE}\n"));
    wait_until("both replies in the logs", || {
        herd.log_text("Alford").contains("> AT Alford")
            && herd.log_text("Ball").contains("> AT Ball")
    });
    let out = run(&herd, &["tail", "all", "-n", "1000"]);
    assert!(out.status.success(), "{}", out.stderr);
    assert!(
        out.stdout
            .lines()
            .all(|l| l.starts_with("Alford | ") || l.starts_with("Ball   | ")),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("Alford | ") && out.stdout.contains("Ball   | "));
    let alford_reply = out.stdout.find("> AT Alford").unwrap();
    let ball_reply = out.stdout.find("> AT Ball").unwrap();
    assert!(alford_reply < ball_reply, "in time order: {}", out.stdout);
}

/// `herdctl tail Alford -f -n 1` once Alford has logged a line, its output piped.
fn follow_alford(herd: &Herd, stderr: Stdio) -> Running {
    wait_until("Alford's first log line", || {
        herd.log_text("Alford").ends_with('\n')
    });
    Running::spawn(
        herd.herdctl()
            .args(["tail", "Alford", "-f", "-n", "1"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr),
    )
}

#[test]
fn tail_follow_shows_lines_written_after_it_started() {
    let herd = Herd::start(SOLO);
    let mut tail = follow_alford(&herd, Stdio::null());
    let lines = tail.lines();
    // The last line already there: from now on tail is following.
    expect_line(&lines, "the last line of the log", |_| true);
    herd.send("Alford", &format!("IAMAT follow-me {WHERE}\n"));
    expect_line(&lines, "the IAMAT received", |l| {
        l.contains("< IAMAT follow-me")
    });
    expect_line(&lines, "the AT reply", |l| {
        l.contains("> AT Alford") && l.contains("follow-me")
    });
}

#[test]
fn tail_follow_ends_quietly_when_its_reader_goes_away() {
    let herd = Herd::start(SOLO);
    let mut tail = follow_alford(&herd, Stdio::piped());
    // Read one line, then close the pipe, like `| head -1`.
    let stdout = tail.0.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut first = String::new();
        let _ = BufReader::new(stdout).read_line(&mut first);
        let _ = tx.send(first);
    });
    let first = rx.recv_timeout(DEADLINE).expect("a first line");
    assert!(!first.is_empty());
    // New log lines make tail write into the closed pipe.
    herd.send("Alford", &format!("IAMAT pipe {WHERE}\n"));
    let status = tail.wait();
    let mut stderr = String::new();
    tail.0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(status.success(), "{status}: {stderr}");
    assert_eq!(stderr, "");
}

//! Each node's store on disk: a restarted node answers from what it had, in both durability
//! modes, and a corrupt store is kept aside while the node refills from its neighbours.
//! Real `herdctl run` processes on loopback ports, killed with SIGKILL or stopped with SIGTERM.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::PathBuf;

use common::{
    exchange, numbered_client as client, numbered_iamat, wait_until, Herd, DEADLINE, PAIR, SOLO,
};

/// Sends `count` IAMATs pipelined on one connection; returns the AT replies, in order.
fn write_clients(herd: &Herd, server: &str, tag: &str, count: usize) -> Vec<String> {
    let input: String = (0..count).map(|i| numbered_iamat(tag, i)).collect();
    let reply = String::from_utf8(exchange(herd.port(server), input.as_bytes())).unwrap();
    let lines: Vec<String> = reply.lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), count, "one AT reply per IAMAT: {reply}");
    for (i, line) in lines.iter().enumerate() {
        assert!(
            line.starts_with(&format!("AT {server} ")) && line.contains(&client(tag, i)),
            "{line}"
        );
    }
    lines
}

/// Asks `server` about every client on one connection and returns the AT line of each
/// answer (`None` where it answered `?`), in order.
fn at_lines(herd: &Herd, server: &str, clients: &[String]) -> Vec<Option<String>> {
    let input: String = clients
        .iter()
        .map(|c| format!("WHATSAT {c} 1 1\n"))
        .collect();
    let reply = String::from_utf8(exchange(herd.port(server), input.as_bytes())).unwrap();
    // Each answer starts with its AT line, or is a single `? ...` line; the JSON lines of an
    // answer start with a brace or an indent.
    let answers: Vec<Option<String>> = reply
        .lines()
        .filter_map(|line| {
            if line.starts_with("AT ") {
                Some(Some(line.to_owned()))
            } else if line.starts_with("? ") {
                Some(None)
            } else {
                None
            }
        })
        .collect();
    assert_eq!(answers.len(), clients.len(), "one answer per WHATSAT");
    answers
}

fn clients_of(tag: &str, count: usize) -> Vec<String> {
    (0..count).map(|i| client(tag, i)).collect()
}

fn all_known(expected: &[String]) -> Vec<Option<String>> {
    expected.iter().cloned().map(Some).collect()
}

fn store_dir(herd: &Herd, server: &str) -> PathBuf {
    herd.path().join("data").join(server)
}

#[test]
fn relaxed_a_killed_node_comes_back_with_everything_flushed_before_the_kill() {
    let herd = Herd::configure(SOLO, "");
    herd.start_node("Alford");
    let written = write_clients(&herd, "Alford", "relaxed", 200);
    // Relaxed durability promises what the journal's fdatasync covers, at most a second
    // later: the node says when that has happened for all 200.
    wait_until("Alford to report its 200 updates durable", || {
        let status = herd.status("Alford");
        status.store_accepted == 200 && status.store_durable == 200
    });
    herd.kill("Alford");

    herd.start_node("Alford");
    // The very first answers, on the first connection after the restart.
    assert_eq!(
        at_lines(&herd, "Alford", &clients_of("relaxed", 200)),
        all_known(&written)
    );
    assert_eq!(herd.status("Alford").recovered, 200);
    let log = herd.log_text("Alford");
    let from = format!("from {}", store_dir(&herd, "Alford").display());
    assert!(
        log.lines()
            .any(|l| l.contains("recovered 200 clients (") && l.contains(&from)),
        "{log}"
    );
}

#[test]
fn a_torn_journal_tail_is_cut_and_the_rest_recovered() {
    let herd = Herd::configure(SOLO, "");
    herd.start_node("Alford");
    let written = write_clients(&herd, "Alford", "torn", 100);
    assert!(herd.terminate("Alford").success());
    // A batch the power cut short: a frame header promising more than the file holds.
    let journal = store_dir(&herd, "Alford").join("journal");
    let mut segments: Vec<PathBuf> = std::fs::read_dir(&journal)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    segments.sort();
    let last = segments.pop().expect("a journal segment");
    let whole = std::fs::metadata(&last).unwrap().len();
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&last)
        .unwrap();
    file.write_all(&[200, 0, 0, 0, 1, 2, 3, 4, b'A', b'T', b' '])
        .unwrap();
    drop(file);

    herd.start_node("Alford");
    assert_eq!(
        at_lines(&herd, "Alford", &clients_of("torn", 100)),
        all_known(&written)
    );
    // The cut is checked through the log, not the file's length: on a loaded machine the
    // journal may sit idle long enough to be compacted (and the segment removed) by now.
    let log = herd.log_text("Alford");
    assert!(log.contains(&format!("is torn at byte {whole} ")), "{log}");
    if let Ok(meta) = std::fs::metadata(&last) {
        assert_eq!(meta.len(), whole, "cut off");
    }
}

#[test]
fn sigterm_flushes_before_the_node_exits() {
    let herd = Herd::configure(SOLO, "");
    herd.start_node("Alford");
    let written = write_clients(&herd, "Alford", "term", 300);
    // At once: well inside the journal's fdatasync interval.
    let status = herd.terminate("Alford");
    assert!(status.success(), "{status}");

    herd.start_node("Alford");
    assert_eq!(
        at_lines(&herd, "Alford", &clients_of("term", 300)),
        all_known(&written)
    );
    let log = herd.log_text("Alford");
    assert!(log.contains("flushed"), "{log}");
}

#[test]
fn strict_loses_nothing_that_was_answered_when_killed_right_after() {
    const CONNECTIONS: usize = 10;
    const PER_CONNECTION: usize = 40;
    let herd = Herd::configure(SOLO, "durability: strict\n");
    herd.start_node("Alford");
    let port = herd.port("Alford");
    // Ten connections, each sending its next IAMAT only when the last one was answered, so
    // up to ten updates wait on the disk at once and share flushes.
    let threads: Vec<_> = (0..CONNECTIONS)
        .map(|c| {
            std::thread::spawn(move || {
                let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
                stream.set_read_timeout(Some(DEADLINE)).unwrap();
                let mut writer = stream.try_clone().unwrap();
                let mut reader = BufReader::new(stream);
                let mut replies = Vec::new();
                for i in 0..PER_CONNECTION {
                    writer
                        .write_all(numbered_iamat(&format!("strict{c}"), i).as_bytes())
                        .unwrap();
                    let mut reply = String::new();
                    reader.read_line(&mut reply).unwrap();
                    assert!(reply.starts_with("AT Alford "), "{reply:?}");
                    replies.push(reply.trim_end().to_owned());
                }
                replies
            })
        })
        .collect();
    let written: Vec<Vec<String>> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    herd.kill("Alford");

    herd.start_node("Alford");
    for (c, replies) in written.iter().enumerate() {
        assert_eq!(
            at_lines(
                &herd,
                "Alford",
                &clients_of(&format!("strict{c}"), PER_CONNECTION)
            ),
            all_known(replies),
            "connection {c}"
        );
    }
    assert_eq!(
        herd.status("Alford").recovered,
        CONNECTIONS * PER_CONNECTION
    );
}

#[test]
fn a_corrupt_store_is_kept_aside_and_the_node_refills_from_its_neighbour() {
    const COUNT: usize = 100;
    let herd = Herd::configure(PAIR, "");
    herd.start_node("Alford");
    herd.start_node("Ball");
    let written = write_clients(&herd, "Alford", "corrupt", COUNT);
    let clients = clients_of("corrupt", COUNT);
    wait_until("B to hold every client", || {
        at_lines(&herd, "Ball", &clients) == all_known(&written)
    });
    herd.terminate("Alford");

    // Damage A's store: sled 0.34 refuses a `conf` that is not its config text, and opens a
    // truncated `db` as empty (the store's marker catches that); do both.
    let dir = store_dir(&herd, "Alford");
    std::fs::write(dir.join("conf"), b"\x00garbage\xff not a sled config").unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("db"))
        .unwrap()
        .set_len(100)
        .unwrap();
    std::fs::write(dir.join("blobs").join("1"), b"junk").unwrap();

    herd.start_node("Alford");
    // Kept aside within data_dir, with the damaged files, never deleted.
    let data = herd.path().join("data");
    let aside: Vec<PathBuf> = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("Alford.corrupt-")
        })
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(
        std::fs::read(aside[0].join("conf")).unwrap(),
        b"\x00garbage\xff not a sled config"
    );
    assert!(aside[0].join("db").exists() && aside[0].join("blobs").join("1").exists());
    let names: BTreeSet<String> = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.contains("Alford") && names.contains("Ball"),
        "{names:?}"
    );
    let log = herd.log_text("Alford");
    assert!(
        log.contains("STORE CORRUPT") && log.contains(&aside[0].display().to_string()),
        "{log}"
    );
    assert!(log.contains("recovered 0 clients"), "{log}");

    // The link-up catch-up from B refills it, and the new store keeps what came back.
    wait_until("A to refill from B", || {
        at_lines(&herd, "Alford", &clients) == all_known(&written)
    });
    herd.terminate("Alford");
    herd.start_node("Alford");
    assert_eq!(at_lines(&herd, "Alford", &clients), all_known(&written));
    assert_eq!(herd.status("Alford").recovered, COUNT);
}

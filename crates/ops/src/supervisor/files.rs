//! The files the supervisor keeps as crash evidence: each node's stderr (`run/<Name>.stderr`,
//! appended across restarts, each start marked, rotated by size) and its own log
//! (`supervisor.log`, rotated by size).
//!
//! Rotation renames `file` to `file.1` (and `file.1` to `file.2`, ...), keeping `KEEP` old
//! files. A file that a live process still writes is rotated in place instead (copied to
//! `file.1`, then truncated): every writer opened it with O_APPEND, so its next write lands
//! at the new end, and no process has to reopen anything.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// A node's stderr is rotated when it grows past this.
pub const STDERR_MAX_BYTES: u64 = 1 << 20;
/// `supervisor.log` is rotated when it grows past this.
pub const SUPERVISOR_LOG_MAX_BYTES: u64 = 4 << 20;
/// Rotated files kept beside the current one (`.1` is the newest).
pub const KEEP: usize = 3;

/// The line the supervisor writes into a node's stderr before each start, so the lines of
/// one run can be told from the previous ones.
const START_MARKER: &str = "--- herdctl: starting ";

/// How a full file is rotated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rotate {
    /// Nobody has the file open: rename it.
    Rename,
    /// A live process appends to it: copy it aside, then truncate it.
    InPlace,
}

/// `file.N`.
fn numbered(path: &Path, n: usize) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// Rotates `path` if it is larger than `max_bytes`; returns whether it did.
pub fn rotate_if_larger(path: &Path, max_bytes: u64, how: Rotate) -> io::Result<bool> {
    match std::fs::metadata(path) {
        Ok(meta) if meta.len() > max_bytes => {}
        Ok(_) => return Ok(false),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    }
    for n in (1..KEEP).rev() {
        match std::fs::rename(numbered(path, n), numbered(path, n + 1)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    match how {
        Rotate::Rename => std::fs::rename(path, numbered(path, 1))?,
        Rotate::InPlace => {
            std::fs::copy(path, numbered(path, 1))?;
            herd_os::private::open_existing(path)?.set_len(0)?;
        }
    }
    Ok(true)
}

/// Opens node `name`'s stderr file for a new process: rotated first if it is full, then
/// appended to (never truncated: the last run's words are the evidence of why it ended),
/// after a line marking this start.
pub fn open_node_stderr(path: &Path, name: &str) -> io::Result<File> {
    rotate_if_larger(path, STDERR_MAX_BYTES, Rotate::Rename)?;
    let mut file = herd_os::private::open_append(path)?;
    writeln!(
        file,
        "{START_MARKER}{name} at {} (supervisor pid {}) ---",
        utc_now(),
        std::process::id()
    )?;
    Ok(file)
}

/// The last `n` lines the latest run wrote to its stderr file (none before its start
/// marker), or the file's last `n` lines if it has no marker.
pub fn latest_run_lines(path: &Path, n: usize) -> Vec<String> {
    // Read a little more than asked, so blank lines and a marker just above are seen.
    let lines = herd_logs::read_back::last_lines_of(path, n + 8);
    let run = match lines
        .iter()
        .rposition(|l| l.starts_with(START_MARKER.as_bytes()))
    {
        Some(marker) => &lines[marker + 1..],
        None => &lines[..],
    };
    let mut said: Vec<String> = run
        .iter()
        .map(|l| herd_logs::printable(l).into_owned())
        .filter(|l| !l.trim().is_empty())
        .collect();
    said.drain(..said.len().saturating_sub(n));
    said
}

/// The most of a node's last words that status quotes.
const MAX_LAST_WORDS: usize = 300;

/// How far back in a run's stderr a panic is looked for.
const PANIC_LOOKBACK_LINES: usize = 50;

/// What status quotes of a node's latest run: its panic, if it panicked (other threads can
/// still write while a panic unwinds), else the last warning or error it wrote to stderr
/// (an ordinary line, "store flushed", explains no exit); without its timestamp, shortened.
pub fn last_words(path: &Path) -> Option<String> {
    let mut said = latest_run_lines(path, PANIC_LOOKBACK_LINES);
    let panic = said
        .iter()
        .rposition(|l| l.starts_with(herd_os::panics::SUMMARY_PREFIX));
    let line = match panic {
        Some(at) => said.swap_remove(at),
        None => said.into_iter().rev().find(|l| is_warning_or_error(l))?,
    };
    let line = without_timestamp(line.trim());
    Some(match line.char_indices().nth(MAX_LAST_WORDS) {
        Some((cut, _)) => format!("{}...", &line[..cut]),
        None => line.to_owned(),
    })
}

/// A line that can explain an exit: a log line at WARN or ERROR, an error `main` printed,
/// or the standard library's panic message.
fn is_warning_or_error(line: &str) -> bool {
    let level = line.split_whitespace().nth(1);
    matches!(level, Some("WARN" | "ERROR"))
        || line.starts_with("herdctl: error")
        || line.starts_with("Error:")
        || (line.starts_with("thread '") && line.contains("panicked"))
}

/// `WARN message` from `2026-12-04T11:00:00.123456Z  WARN message`: the exit time is in
/// the row already.
fn without_timestamp(line: &str) -> &str {
    match line.split_once(char::is_whitespace) {
        Some((first, rest))
            if first.ends_with('Z') && first.starts_with(|c: char| c.is_ascii_digit()) =>
        {
            rest.trim_start()
        }
        _ => line,
    }
}

/// Now, as the node logs print it (RFC 3339, UTC).
fn utc_now() -> String {
    use tracing_subscriber::fmt::format::Writer;
    use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
    let mut text = String::new();
    let _ = SystemTime.format_time(&mut Writer::new(&mut text));
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(path: &Path) -> String {
        std::fs::read_to_string(path).unwrap_or_default()
    }

    #[test]
    fn stderr_is_appended_and_each_start_is_marked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("Alford.stderr");
        let mut first = open_node_stderr(&path, "Alford").unwrap();
        writeln!(
            first,
            "listening\nthread 'main' panicked at src/x.rs:1:1: boom"
        )
        .unwrap();
        assert_eq!(
            last_words(&path).as_deref(),
            Some("thread 'main' panicked at src/x.rs:1:1: boom")
        );
        let mut second = open_node_stderr(&path, "Alford").unwrap();
        // The new run wrote nothing yet: it has no last words, and the old ones are kept.
        assert_eq!(last_words(&path), None);
        assert!(read(&path).contains("boom"));
        writeln!(second, "Error: cannot listen\n\n").unwrap();
        assert_eq!(last_words(&path).as_deref(), Some("Error: cannot listen"));
        assert_eq!(latest_run_lines(&path, 5), ["Error: cannot listen"]);
        // A panic outranks what other threads said after it.
        writeln!(
            second,
            "panic in thread 'main' at a.rs:1:1: boom\nlink down"
        )
        .unwrap();
        assert_eq!(
            last_words(&path).as_deref(),
            Some("panic in thread 'main' at a.rs:1:1: boom")
        );
        assert_eq!(read(&path).matches(START_MARKER).count(), 2);
    }

    #[test]
    fn last_words_are_escaped_and_shortened() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.stderr");
        std::fs::write(
            &path,
            format!(
                "a\n2026-01-01T00:00:00.000000Z ERROR \x1b[31m{}\n2026-01-01T00:00:01.000000Z  \
                 INFO store flushed\n",
                "y".repeat(1000)
            ),
        )
        .unwrap();
        let words = last_words(&path).unwrap();
        assert!(
            words.starts_with("ERROR \\u{1b}[31myyy") && words.ends_with("..."),
            "the last error, not the INFO line after it, without its time: {words}"
        );
        assert!(words.len() < 400);
        assert_eq!(last_words(&dir.path().join("missing")), None);
    }

    #[test]
    fn full_files_rotate_keeping_three() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("supervisor.log");
        for round in 0..5 {
            std::fs::write(&path, format!("round {round}\n")).unwrap();
            assert!(rotate_if_larger(&path, 3, Rotate::Rename).unwrap());
        }
        assert!(!path.exists());
        assert_eq!(read(&numbered(&path, 1)), "round 4\n");
        assert_eq!(read(&numbered(&path, 3)), "round 2\n");
        assert!(!numbered(&path, 4).exists());
        std::fs::write(&path, "small\n").unwrap();
        assert!(!rotate_if_larger(&path, 100, Rotate::Rename).unwrap());
        assert!(!rotate_if_larger(&dir.path().join("none"), 0, Rotate::Rename).unwrap());
    }

    #[test]
    fn in_place_rotation_keeps_an_appending_writer_working() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("Ball.stderr");
        let mut writer = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap();
        writer.write_all(b"old line\n").unwrap();
        assert!(rotate_if_larger(&path, 1, Rotate::InPlace).unwrap());
        writer.write_all(b"new line\n").unwrap();
        assert_eq!(read(&path), "new line\n", "written at the new end, no hole");
        assert_eq!(read(&numbered(&path, 1)), "old line\n");
    }
}

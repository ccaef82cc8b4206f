//! `herdctl tail`: the end of a node's log, or of every node's merged by time (`all`),
//! optionally followed (`-f`) across rotation.
//!
//! A server's log files live in `log_dir/<Name>/`, named `<Name>.<date>.log` (the date part
//! sorts in time order), `<Name>.log` (no rotation by time), and `<Name>.<date>.<n>.log` /
//! `<Name>.<n>.log` when a file reached `logs.max_file_bytes` (see `logs/files.rs`).
//! The tail is read from the end of the files (seeking), so a big log costs no more than a
//! small one. Following polls: new bytes in the current file, then a newer file in the
//! folder (finish the old one, then switch), a truncated or replaced file (start over).

use std::fs::File;
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use herd_config::config::{HerdConfig, LogRotation, ServerConfig};
use herd_config::hosts::Locality;
use herd_logs::files::FileKey;
use herd_logs::read_back::{complete_end, read_back};
use herd_logs::server_log_dir;
use herd_os::pidlock::PidLock;
use merge::{entries, merge, stamp, Merger, Stamp};

mod merge;

/// How often `-f` looks for new lines and new files.
const POLL: Duration = Duration::from_millis(100);
/// How long `all -f` holds a new line back, waiting for earlier lines of other servers.
const MERGE_HOLD: Duration = Duration::from_millis(300);
/// How far back `all` looks for the first line of an entry whose end is in the tail.
const MAX_ENTRY_LINES: usize = 10_000;

/// Prints the last `lines` lines of server `name`'s log (`all`: of every server's, merged by
/// time, each line prefixed with its server), then with `follow` keeps printing new ones.
/// Without `raw`, a logged multi-line reply (its newlines escaped as `\n`, one event per
/// line in the file) is shown as the lines it was.
pub fn tail(
    config: &HerdConfig,
    name: &str,
    lines: usize,
    follow: bool,
    raw: bool,
) -> Result<ExitCode> {
    // "all" cannot be a server's name (config validation reserves it).
    let all = name == "all";
    let locality = Locality::look_up(config.hosts())?;
    // Logs are kept where a server runs: on its host, or here if it runs here anyway.
    let here = |server: &ServerConfig| {
        let runs_here = PidLock::holder(&config.node_lock_path(&server.name))
            .ok()
            .flatten()
            .is_some();
        config.reach(server, &locality, runs_here).local
    };
    let names = if all {
        let (local, remote): (Vec<&ServerConfig>, Vec<&ServerConfig>) =
            config.servers.values().partition(|s| here(s));
        if local.is_empty() {
            bail!(
                "no server of {} lives on this machine (its addresses: {}); each server's log is \
                 on its host: {}",
                config.path.display(),
                locality.machine().describe(),
                remote
                    .iter()
                    .map(|s| format!("{} on {}", s.name, s.host))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        if !remote.is_empty() {
            note(&format!(
                "showing this machine's servers; the others' logs are on their hosts: {}",
                remote
                    .iter()
                    .map(|s| format!("{} on {}", s.name, s.host))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        local.iter().map(|s| s.name.as_str()).collect()
    } else if !config.servers.contains_key(name) && has_log(config, name) {
        // Removed from the herd file, but its log is still here to read.
        note(&format!(
            "{name} is no longer in {}; showing the log it left",
            config.path.display()
        ));
        vec![name]
    } else {
        let server = config
            .server(name)
            .map_err(|e| anyhow!("{e}, or all (every server's log, interleaved)"))?;
        if !here(server) {
            bail!(
                "{name}'s log is on its host {}, not on this machine (its addresses: {}); run \
                 `herdctl tail {name}` there",
                server.host,
                locality.machine().describe()
            );
        }
        vec![name]
    };
    let undated_is_current = config.logs.rotation == LogRotation::Never;
    let sources: Vec<LogSource> = names
        .iter()
        .map(|n| LogSource {
            raw,
            name: n.to_string(),
            dir: server_log_dir(&config.logs, n),
            undated_is_current,
        })
        .collect();
    let mut out = BufWriter::new(io::stdout().lock());
    let result = if follow {
        follow_logs(&mut out, &sources, all, lines)
    } else {
        print_tail(&mut out, &sources, all, lines)
    };
    match result {
        Err(e) if !is_broken_pipe(&e) => Err(e),
        // A reader that went away (`| head`) just means we are done.
        _ => Ok(ExitCode::SUCCESS),
    }
}

/// Whether server `name` has written a log file here.
fn has_log(config: &HerdConfig, name: &str) -> bool {
    herd_wire::protocol::is_valid_server_name(name)
        && herd_logs::files::list(
            &server_log_dir(&config.logs, name),
            name,
            config.logs.rotation == LogRotation::Never,
        )
        .is_ok_and(|files| !files.is_empty())
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
    })
}

fn note(text: &str) {
    let _ = writeln!(io::stderr(), "herdctl: {text}");
}

/// One server's log folder and how to order the files in it.
#[derive(Debug, Clone)]
struct LogSource {
    /// Print lines as they are in the file (escapes kept).
    raw: bool,
    name: String,
    dir: PathBuf,
    /// With `rotation: never` the undated `<Name>.log` is the current file; otherwise an
    /// undated file is a leftover from an earlier setting, older than every dated one.
    undated_is_current: bool,
}

impl LogSource {
    /// This source's log files, oldest first (none when the folder does not exist yet).
    fn files(&self) -> Result<Vec<(FileKey, PathBuf)>> {
        herd_logs::files::list(&self.dir, &self.name, self.undated_is_current)
            .with_context(|| format!("cannot list {}", self.dir.display()))
    }
}

/// The file being followed and how far it has been read.
struct Current {
    key: FileKey,
    path: PathBuf,
    file: File,
    pos: u64,
}

/// The last `n` lines across `files` (oldest first; the newest file is read first, older
/// ones only while lines are missing). Also returns the newest file, positioned where the
/// returned lines end. Without `include_partial`, a last line still being written (no
/// newline yet) is left for the follower.
fn last_lines(
    files: &[(FileKey, PathBuf)],
    n: usize,
    include_partial: bool,
) -> Result<(Vec<Vec<u8>>, Option<Current>)> {
    let mut chunks: Vec<Vec<Vec<u8>>> = Vec::new(); // newest file first
    let mut current = None;
    let mut missing = n;
    for (key, path) in files.iter().rev() {
        let newest = current.is_none();
        if !newest && missing == 0 {
            break;
        }
        let mut file = match File::open(path) {
            Ok(f) => f,
            // Removed by the appender's kept-files limit since the listing.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).context(format!("cannot open {}", path.display())),
        };
        let context = || format!("cannot read {}", path.display());
        let mut end = file.metadata().with_context(context)?.len();
        if newest && !include_partial {
            end = complete_end(&mut file, end).with_context(context)?;
        }
        let lines = read_back(&mut file, end, missing).with_context(context)?;
        missing -= lines.len();
        chunks.push(lines);
        if newest {
            current = Some(Current {
                key: key.clone(),
                path: path.clone(),
                file,
                pos: end,
            });
        }
    }
    let lines = chunks.into_iter().rev().flatten().collect();
    Ok((lines, current))
}

/// Like [`last_lines`], but when `merging` and the first line is the continuation of a
/// multi-line entry, reads further back (within reason) to include the entry's timestamped first line, so the
/// lines can be placed in time among other servers' lines.
fn last_entries(
    files: &[(FileKey, PathBuf)],
    n: usize,
    include_partial: bool,
    merging: bool,
) -> Result<(Vec<Vec<u8>>, Option<Current>)> {
    let mut want = n;
    loop {
        let (lines, current) = last_lines(files, want, include_partial)?;
        let whole = !merging || lines.first().is_none_or(|l| stamp(l).is_some());
        if whole || lines.len() < want || want >= n.saturating_add(MAX_ENTRY_LINES) {
            return Ok((lines, current));
        }
        want = want
            .saturating_mul(2)
            .min(n.saturating_add(MAX_ENTRY_LINES));
    }
}

/// Follows one source: new complete lines since the last poll, across rotation.
struct Follower {
    source: LogSource,
    current: Option<Current>,
    /// Bytes after the last newline read so far: a line still being written.
    partial: Vec<u8>,
}

impl Follower {
    fn new(source: LogSource, current: Option<Current>) -> Follower {
        Follower {
            source,
            current,
            partial: Vec::new(),
        }
    }

    /// The complete lines written since the last poll. When newer files have appeared, the
    /// current one is read to its end first, then each newer one in order.
    fn poll(&mut self) -> Result<Vec<Vec<u8>>> {
        let mut lines = Vec::new();
        loop {
            if let Some(current) = &mut self.current {
                read_new(current, &mut self.partial, &mut lines)?;
            }
            let files = self.source.files()?;
            let next = match &self.current {
                None => files.into_iter().next(),
                Some(current) => files.into_iter().find(|(key, path)| {
                    *key > current.key || (*key == current.key && replaced(path, &current.file))
                }),
            };
            let Some((key, path)) = next else {
                return Ok(lines);
            };
            if let Some(current) = &mut self.current {
                // Nothing more is written to a file once a newer one exists: finish it.
                read_new(current, &mut self.partial, &mut lines)?;
                if !self.partial.is_empty() {
                    lines.push(std::mem::take(&mut self.partial));
                }
            }
            match File::open(&path) {
                Ok(file) => {
                    self.current = Some(Current {
                        key,
                        path,
                        file,
                        pos: 0,
                    })
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e).context(format!("cannot open {}", path.display())),
            }
        }
    }
}

/// Whether `path` now names another file than the open `file` (removed and re-created).
fn replaced(path: &Path, file: &File) -> bool {
    match (std::fs::metadata(path), file.metadata()) {
        (Ok(now), Ok(open)) => (now.dev(), now.ino()) != (open.dev(), open.ino()),
        _ => false,
    }
}

/// Appends the complete lines written to `current` since its position to `lines`.
fn read_new(current: &mut Current, partial: &mut Vec<u8>, lines: &mut Vec<Vec<u8>>) -> Result<()> {
    let context = || format!("cannot read {}", current.path.display());
    let len = current.file.metadata().with_context(context)?.len();
    if len < current.pos {
        // Truncated: start over.
        current.pos = 0;
        partial.clear();
    }
    if len == current.pos {
        return Ok(());
    }
    current
        .file
        .seek(SeekFrom::Start(current.pos))
        .with_context(context)?;
    let before = partial.len();
    (&current.file)
        .take(len - current.pos)
        .read_to_end(partial)
        .with_context(context)?;
    current.pos += (partial.len() - before) as u64;
    if let Some(last) = partial.iter().rposition(|b| *b == b'\n') {
        let rest = partial.split_off(last + 1);
        partial.pop();
        lines.extend(partial.split(|b| *b == b'\n').map(<[u8]>::to_vec));
        *partial = rest;
    }
    Ok(())
}

/// Writes lines, with `Name   | ` prefixes when showing several servers.
fn write_lines(
    out: &mut impl Write,
    sources: &[LogSource],
    prefixed: bool,
    lines: &[(usize, Vec<u8>)],
) -> io::Result<()> {
    let width = sources.iter().map(|s| s.name.len()).max().unwrap_or(0);
    for (i, line) in lines {
        let source = &sources[*i];
        let pieces: Vec<&[u8]> = match source.raw {
            true => vec![line.as_slice()],
            false => split_escaped_newlines(line),
        };
        for piece in pieces {
            if prefixed {
                write!(out, "{:<width$} | ", source.name)?;
            }
            out.write_all(piece)?;
            out.write_all(b"\n")?;
        }
    }
    Ok(())
}

/// A log line cut where its text has an escaped newline (`\n`), so a logged multi-line
/// reply reads as the lines it was.
fn split_escaped_newlines(line: &[u8]) -> Vec<&[u8]> {
    let mut pieces = Vec::new();
    let mut from = 0;
    let mut at = 0;
    while at + 1 < line.len() {
        if line[at] == b'\\' && line[at + 1] == b'n' {
            pieces.push(&line[from..at]);
            at += 2;
            from = at;
        } else {
            at += 1;
        }
    }
    pieces.push(&line[from..]);
    pieces
}

/// Without `-f`: the last `n` lines (of the merged logs, for several servers).
fn print_tail(out: &mut impl Write, sources: &[LogSource], prefixed: bool, n: usize) -> Result<()> {
    print_recent(out, sources, prefixed, n, false).map(drop)
}

/// Where a source's newest log ends and the stamp of its last entry: where following starts.
type Resume = (Option<Current>, Option<Stamp>);

/// Prints the last `n` merged lines of `sources` (saying which have no log yet) and returns
/// where each one ends. When `following`, a half-written last line is left for the follower
/// to finish, not printed now.
fn print_recent(
    out: &mut impl Write,
    sources: &[LogSource],
    prefixed: bool,
    n: usize,
    following: bool,
) -> Result<Vec<Resume>> {
    let mut streams = Vec::new();
    let mut ends = Vec::new();
    let mut empty = Vec::new();
    for source in sources {
        let files = source.files()?;
        if files.is_empty() {
            empty.push(source);
        }
        let (lines, current) = last_entries(&files, n, !following, sources.len() > 1)?;
        let stream = entries(lines);
        ends.push((current, stream.iter().rev().find_map(|e| e.stamp)));
        streams.push(stream);
    }
    if !empty.is_empty() {
        note(&no_log_yet(
            &empty,
            if following {
                "; waiting for it"
            } else {
                " (it has not run on this machine: `herdctl start` starts it, `herdctl tail -f` \
                 waits for it)"
            },
        ));
    }
    let mut merged = merge(streams);
    merged.drain(..merged.len().saturating_sub(n));
    write_lines(out, sources, prefixed, &merged)?;
    out.flush()?;
    Ok(ends)
}

fn no_log_yet(empty: &[&LogSource], then: &str) -> String {
    match empty {
        [one] => format!("no log for {} yet in {}{then}", one.name, one.dir.display()),
        many => {
            let names: Vec<&str> = many.iter().map(|s| s.name.as_str()).collect();
            let parent = many[0].dir.parent().unwrap_or(Path::new("."));
            format!(
                "no log yet for {} in {}{then}",
                names.join(", "),
                parent.display()
            )
        }
    }
}

/// With `-f`: the last `n` lines, then every new line as it is written. Returns only on an
/// error (a reader that went away is a broken pipe).
fn follow_logs(
    out: &mut impl Write,
    sources: &[LogSource],
    prefixed: bool,
    n: usize,
) -> Result<()> {
    let ends = print_recent(out, sources, prefixed, n, true)?;
    // Several servers' new lines are held back briefly, so that a line written a little
    // late (after a poll) still comes out in time order.
    let hold = if sources.len() > 1 {
        MERGE_HOLD
    } else {
        Duration::ZERO
    };
    let mut merger = Merger::new(sources.len(), hold);
    let mut followers = Vec::new();
    for (i, (source, (current, last_stamp))) in sources.iter().zip(ends).enumerate() {
        followers.push(Follower::new(source.clone(), current));
        merger.last_stamp[i] = last_stamp;
    }
    loop {
        std::thread::sleep(POLL);
        let now = Instant::now();
        for (i, follower) in followers.iter_mut().enumerate() {
            merger.add(i, follower.poll()?, now);
        }
        let ready = merger.release(now);
        if !ready.is_empty() {
            write_lines(out, sources, prefixed, &ready)?;
            out.flush()?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(root: &Path, name: &str) -> LogSource {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        LogSource {
            raw: false,
            name: name.to_owned(),
            dir,
            undated_is_current: false,
        }
    }

    fn append(path: &Path, text: &str) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }

    fn text(lines: &[Vec<u8>]) -> Vec<String> {
        lines
            .iter()
            .map(|l| String::from_utf8(l.clone()).unwrap())
            .collect()
    }

    fn numbered(from: usize, to: usize) -> String {
        (from..to).map(|i| format!("line {i}\n")).collect()
    }

    #[test]
    fn file_names_order_by_date_and_skip_strangers() {
        let dir = tempfile::tempdir().unwrap();
        let s = source(dir.path(), "X");
        for name in [
            "X.2026-01-02.log",
            "X.2026-01-01-23.log",
            "X.log",
            "X.2026-01-01.log",
            "X.2026-01-01.2.log",
            "X.2026-01-01.10.log",
            "Y.2026-01-03.log",
            "X.2026-01-04.log.gz",
            "X.notes.log",
            "XY.2026-01-05.log",
        ] {
            append(&s.dir.join(name), "x\n");
        }
        let names = |s: &LogSource| -> Vec<String> {
            s.files()
                .unwrap()
                .iter()
                .map(|(_, p)| p.file_name().unwrap().to_str().unwrap().to_owned())
                .collect()
        };
        assert_eq!(
            names(&s),
            [
                "X.log",
                "X.2026-01-01.log",
                "X.2026-01-01.2.log",
                "X.2026-01-01.10.log",
                "X.2026-01-01-23.log",
                "X.2026-01-02.log"
            ]
        );
        let never = LogSource {
            undated_is_current: true,
            ..s.clone()
        };
        assert_eq!(names(&never).last().unwrap(), "X.log");
        let missing = source(dir.path(), "Z");
        std::fs::remove_dir(&missing.dir).unwrap();
        assert!(missing.files().unwrap().is_empty());
    }

    #[test]
    fn last_lines_reads_back_across_files_and_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let s = source(dir.path(), "X");
        // Bigger than a chunk, so reading back crosses chunk boundaries.
        append(&s.dir.join("X.2026-01-01.log"), &numbered(0, 20_000));
        append(&s.dir.join("X.2026-01-02.log"), &numbered(20_000, 20_003));
        let files = s.files().unwrap();
        let (lines, current) = last_lines(&files, 5, true).unwrap();
        assert_eq!(
            text(&lines),
            [
                "line 19998",
                "line 19999",
                "line 20000",
                "line 20001",
                "line 20002"
            ]
        );
        let current = current.unwrap();
        assert!(current.path.ends_with("X.2026-01-02.log"));
        let (lines, _) = last_lines(&files, 9000, true).unwrap();
        assert_eq!(lines.len(), 9000);
        assert_eq!(text(&lines[..1]), ["line 11003"]);
        let (lines, _) = last_lines(&files, 1_000_000, true).unwrap();
        assert_eq!(lines.len(), 20_003);
        let (lines, current) = last_lines(&files, 0, true).unwrap();
        assert!(lines.is_empty() && current.is_some());
    }

    #[test]
    fn a_line_still_being_written_is_left_to_the_follower() {
        let dir = tempfile::tempdir().unwrap();
        let s = source(dir.path(), "X");
        let path = s.dir.join("X.2026-01-01.log");
        append(&path, "one\ntwo\nthr");
        let files = s.files().unwrap();
        let (lines, _) = last_lines(&files, 2, true).unwrap();
        assert_eq!(text(&lines), ["two", "thr"]);
        let (lines, current) = last_lines(&files, 2, false).unwrap();
        assert_eq!(text(&lines), ["one", "two"]);
        let mut follower = Follower::new(s, current);
        assert!(follower.poll().unwrap().is_empty());
        append(&path, "ee\nfour\n");
        assert_eq!(text(&follower.poll().unwrap()), ["three", "four"]);
    }

    #[test]
    fn follow_switches_to_a_new_file_after_finishing_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let s = source(dir.path(), "X");
        let old = s.dir.join("X.2026-01-01.log");
        append(&old, "2026-01-01T23:59:58.000000Z  INFO old 1\n");
        let (lines, current) = last_lines(&s.files().unwrap(), 10, false).unwrap();
        assert_eq!(lines.len(), 1);
        let mut follower = Follower::new(s.clone(), current);
        assert!(follower.poll().unwrap().is_empty());

        append(&old, "2026-01-01T23:59:59.000000Z  INFO old 2\n");
        let new = s.dir.join("X.2026-01-02.log");
        append(&new, "2026-01-02T00:00:00.000000Z  INFO new 1\n");
        append(&new, "2026-01-02T00:00:01.000000Z  INFO new 2\n");
        assert_eq!(
            text(&follower.poll().unwrap()),
            [
                "2026-01-01T23:59:59.000000Z  INFO old 2",
                "2026-01-02T00:00:00.000000Z  INFO new 1",
                "2026-01-02T00:00:01.000000Z  INFO new 2",
            ]
        );
        // The old file is gone (kept-files limit): nothing changes for the follower.
        std::fs::remove_file(&old).unwrap();
        append(&new, "2026-01-02T00:00:02.000000Z  INFO new 3\n");
        assert_eq!(
            text(&follower.poll().unwrap()),
            ["2026-01-02T00:00:02.000000Z  INFO new 3"]
        );
        assert!(follower.poll().unwrap().is_empty());
    }

    #[test]
    fn follow_waits_for_a_log_that_does_not_exist_yet_and_survives_truncation() {
        let dir = tempfile::tempdir().unwrap();
        let s = source(dir.path(), "X");
        std::fs::remove_dir(&s.dir).unwrap();
        let (lines, current) = last_lines(&s.files().unwrap(), 10, false).unwrap();
        assert!(lines.is_empty() && current.is_none());
        let mut follower = Follower::new(s.clone(), None);
        assert!(follower.poll().unwrap().is_empty());
        std::fs::create_dir_all(&s.dir).unwrap();
        let path = s.dir.join("X.log");
        append(&path, "first\nsecond\n");
        assert_eq!(text(&follower.poll().unwrap()), ["first", "second"]);
        std::fs::write(&path, "again\n").unwrap();
        assert_eq!(text(&follower.poll().unwrap()), ["again"]);
        // Removed and re-created under the same name: read the new file from its start.
        std::fs::remove_file(&path).unwrap();
        append(&path, "new file\n");
        assert_eq!(text(&follower.poll().unwrap()), ["new file"]);
    }

    #[test]
    fn timestamps_are_recognised_and_ordered() {
        let a = stamp(b"2026-11-22T07:03:21.611510Z  INFO x").unwrap();
        let b = stamp(b"2026-11-22T07:03:21.7Z  INFO x").unwrap();
        let c = stamp(b"2026-11-22T07:03:22Z  INFO x").unwrap();
        assert_eq!(a.1, 611_510_000);
        assert!(a < b && b < c);
        for not in [
            &b"{\"results\": []}"[..],
            b"  \"name\": \"2026-11-22T07:03:21Z\"",
            b"2026-11-22 07:03:21Z",
            b"2026-11-22T07:03:21",
            b"",
        ] {
            assert_eq!(stamp(not), None, "{:?}", String::from_utf8_lossy(not));
        }
    }

    #[test]
    fn tail_all_interleaves_servers_by_time_keeping_entries_whole() {
        let dir = tempfile::tempdir().unwrap();
        let a = source(dir.path(), "Alford");
        let b = source(dir.path(), "Ball");
        append(
            &a.dir.join("Alford.2026-01-01.log"),
            "2026-01-01T10:00:00.100000Z  INFO a1\n\
             2026-01-01T10:00:00.300000Z  INFO a2 reply\n\
             {\n\
             }\n\
             2026-01-01T10:00:00.500000Z  INFO a3\n",
        );
        append(
            &b.dir.join("Ball.2026-01-01.log"),
            "2026-01-01T10:00:00.000000Z  INFO b0\n\
             2026-01-01T10:00:00.200000Z  INFO b1\n\
             2026-01-01T10:00:00.400000Z  INFO b2\n",
        );
        let sources = [a.clone(), b.clone()];
        let mut out = Vec::new();
        print_tail(&mut out, &sources, true, 100).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "Ball   | 2026-01-01T10:00:00.000000Z  INFO b0\n\
             Alford | 2026-01-01T10:00:00.100000Z  INFO a1\n\
             Ball   | 2026-01-01T10:00:00.200000Z  INFO b1\n\
             Alford | 2026-01-01T10:00:00.300000Z  INFO a2 reply\n\
             Alford | {\n\
             Alford | }\n\
             Ball   | 2026-01-01T10:00:00.400000Z  INFO b2\n\
             Alford | 2026-01-01T10:00:00.500000Z  INFO a3\n"
        );
        // -n counts lines of the merged output.
        let mut out = Vec::new();
        print_tail(&mut out, &sources, true, 3).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "Alford | }\n\
             Ball   | 2026-01-01T10:00:00.400000Z  INFO b2\n\
             Alford | 2026-01-01T10:00:00.500000Z  INFO a3\n"
        );

        // Following: new lines wait a moment for earlier lines of other servers, and a
        // continuation line arriving on its own stays with its entry.
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut merger = Merger::new(2, Duration::from_millis(300));
        merger.add(
            1,
            vec![b"2026-01-01T10:00:01.000000Z  INFO b3".to_vec()],
            ms(0),
        );
        assert!(merger.release(ms(0)).is_empty());
        merger.add(
            0,
            vec![b"2026-01-01T10:00:00.900000Z  INFO a4 reply".to_vec()],
            ms(100),
        );
        assert!(
            merger.release(ms(300)).is_empty(),
            "a4 is earlier and not due yet"
        );
        merger.add(0, vec![b"{".to_vec()], ms(200));
        let lines = |ready: Vec<(usize, Vec<u8>)>| -> Vec<String> {
            ready
                .into_iter()
                .map(|(i, l)| format!("{} {}", i, String::from_utf8(l).unwrap()))
                .collect()
        };
        assert_eq!(
            lines(merger.release(ms(400))),
            [
                "0 2026-01-01T10:00:00.900000Z  INFO a4 reply",
                "0 {",
                "1 2026-01-01T10:00:01.000000Z  INFO b3"
            ]
        );
        merger.add(0, vec![b"}".to_vec()], ms(500));
        merger.add(
            1,
            vec![b"2026-01-01T10:00:00.950000Z  INFO b4".to_vec()],
            ms(500),
        );
        assert_eq!(
            lines(merger.release(ms(800))),
            ["0 }", "1 2026-01-01T10:00:00.950000Z  INFO b4"]
        );
        // Without a hold (one server), lines go out at once.
        let mut merger = Merger::new(1, Duration::ZERO);
        merger.add(0, vec![b"x".to_vec()], t0);
        assert_eq!(lines(merger.release(t0)), ["0 x"]);
    }

    #[test]
    fn a_server_without_a_log_prints_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let a = source(dir.path(), "Alford");
        let mut out = Vec::new();
        print_tail(&mut out, &[a], false, 10).unwrap();
        assert!(out.is_empty());
    }
}

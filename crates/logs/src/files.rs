//! A server's log files: named by period like tracing-appender names them
//! (`<Name>.<date>.log`, or `<Name>.log` with `rotation: never`), a new file when the period
//! changes or when the current one reaches `logs.max_file_bytes` (`<Name>.<date>.<n>.log`,
//! n = 1, 2, ...), and only the newest `logs.keep` files kept. Files are never renamed, so
//! `herdctl tail -f` follows them by name.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use herd_config::config::{LogRotation, LogSettings};
use herd_wire::clock::civil;

/// Orders one server's files, oldest first: (dated-or-undated rank, date part, sequence
/// number within the period).
pub type FileKey = (bool, String, u32);

/// The sort key of `file_name` among `server`'s logs, or `None` when it is not one of them.
/// With `rotation: never` the undated `<Name>.log` (and its `<Name>.<n>.log` successors) are
/// current (`undated_is_current`); otherwise an undated file is a leftover from an earlier
/// setting, older than every dated one.
pub fn file_key(server: &str, file_name: &str, undated_is_current: bool) -> Option<FileKey> {
    let rest = file_name
        .strip_prefix(server)?
        .strip_prefix('.')?
        .strip_suffix("log")?;
    if rest.is_empty() {
        return Some((undated_is_current, String::new(), 0));
    }
    let middle = rest.strip_suffix('.')?;
    let (date, n) = match middle.rsplit_once('.') {
        Some((date, n)) => (date, parse_sequence(n)?),
        None if middle.bytes().all(|b| b.is_ascii_digit()) => ("", parse_sequence(middle)?),
        None => (middle, 0),
    };
    if date.is_empty() {
        return Some((undated_is_current, String::new(), n));
    }
    let is_date = date.contains('-') && date.bytes().all(|b| b.is_ascii_digit() || b == b'-');
    is_date.then(|| (!undated_is_current, date.to_owned(), n))
}

fn parse_sequence(text: &str) -> Option<u32> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// The period part of a file name for a moment `secs` after the epoch (UTC), as
/// tracing-appender writes it.
fn period(rotation: LogRotation, secs: u64) -> String {
    let (y, mo, d, h, mi, _) = civil(secs);
    match rotation {
        LogRotation::Daily => format!("{y:04}-{mo:02}-{d:02}"),
        LogRotation::Hourly => format!("{y:04}-{mo:02}-{d:02}-{h:02}"),
        LogRotation::Minutely => format!("{y:04}-{mo:02}-{d:02}-{h:02}-{mi:02}"),
        LogRotation::Never => String::new(),
    }
}

/// The length of a period in seconds (periods start on multiples of it, in UTC).
fn period_secs(rotation: LogRotation) -> Option<u64> {
    match rotation {
        LogRotation::Minutely => Some(60),
        LogRotation::Hourly => Some(3600),
        LogRotation::Daily => Some(86_400),
        LogRotation::Never => None,
    }
}

fn file_name(server: &str, period: &str, n: u32) -> String {
    match (period.is_empty(), n) {
        (true, 0) => format!("{server}.log"),
        (true, n) => format!("{server}.{n}.log"),
        (false, 0) => format!("{server}.{period}.log"),
        (false, n) => format!("{server}.{period}.{n}.log"),
    }
}

/// The file being written.
struct Current {
    file: BufWriter<File>,
    /// The period it belongs to, and when the next one starts (seconds since the epoch).
    period: String,
    period_ends: Option<u64>,
    n: u32,
    size: u64,
}

/// One server's log files, written by one thread.
pub struct LogFiles {
    dir: PathBuf,
    server: String,
    rotation: LogRotation,
    keep: usize,
    max_bytes: Option<u64>,
    current: Option<Current>,
}

impl LogFiles {
    pub fn new(dir: &Path, server: &str, settings: &LogSettings) -> LogFiles {
        LogFiles {
            dir: dir.to_path_buf(),
            server: server.to_owned(),
            rotation: settings.rotation,
            keep: settings.keep,
            max_bytes: settings.max_file_bytes,
            current: None,
        }
    }

    /// Appends whole lines written at `now_secs`, starting a new file first if the period
    /// changed, and whenever the current file is full (a file holds whole lines; a single
    /// line longer than a file gets a file of its own).
    pub fn write(&mut self, mut bytes: &[u8], now_secs: u64) -> io::Result<()> {
        while !bytes.is_empty() {
            let stale = match &self.current {
                None => true,
                Some(c) => {
                    c.period_ends.is_some_and(|end| now_secs >= end)
                        || self.max_bytes.is_some_and(|max| c.size >= max)
                }
            };
            if stale {
                self.open(now_secs)?;
            }
            let current = self.current.as_mut().expect("opened above");
            let take = match self.max_bytes {
                None => bytes.len(),
                Some(max) => {
                    let room = max.saturating_sub(current.size) as usize;
                    if bytes.len() <= room {
                        bytes.len()
                    } else if let Some(end) = bytes[..room].iter().rposition(|&b| b == b'\n') {
                        end + 1
                    } else if current.size == 0 {
                        bytes
                            .iter()
                            .position(|&b| b == b'\n')
                            .map_or(bytes.len(), |end| end + 1)
                    } else {
                        // Not even the next line fits: the next file.
                        current.size = max;
                        continue;
                    }
                }
            };
            current.file.write_all(&bytes[..take])?;
            current.size += take as u64;
            bytes = &bytes[take..];
        }
        Ok(())
    }

    pub fn flush(&mut self) -> io::Result<()> {
        match &mut self.current {
            Some(c) => c.file.flush(),
            None => Ok(()),
        }
    }

    /// Opens the file for `now_secs`: after a full file, the next one of its period;
    /// otherwise the newest of this period if it has room (a restarted node goes on where it
    /// stopped), else the next one. Then prunes old files.
    fn open(&mut self, now_secs: u64) -> io::Result<()> {
        let period = period(self.rotation, now_secs);
        let period_ends = period_secs(self.rotation).map(|len| (now_secs / len + 1) * len);
        let full = match self.current.take() {
            Some(mut old) => {
                old.file.flush()?;
                (old.period == period).then_some(old.n)
            }
            None => None,
        };
        let (n, size) = match full {
            Some(n) => (n + 1, 0),
            None => {
                let latest = self
                    .files()?
                    .iter()
                    .filter(|(key, _)| key.1 == period)
                    .map(|(key, _)| key.2)
                    .max()
                    .unwrap_or(0);
                let path = self.dir.join(file_name(&self.server, &period, latest));
                let size = std::fs::metadata(&path).map_or(0, |m| m.len());
                if self.max_bytes.is_some_and(|max| size >= max) {
                    (latest + 1, 0)
                } else {
                    (latest, size)
                }
            }
        };
        let path = self.dir.join(file_name(&self.server, &period, n));
        let file = herd_os::private::open_append(&path)?;
        self.current = Some(Current {
            file: BufWriter::with_capacity(64 * 1024, file),
            period,
            period_ends,
            n,
            size,
        });
        self.prune();
        Ok(())
    }

    /// This server's log files, oldest first.
    fn files(&self) -> io::Result<Vec<(FileKey, PathBuf)>> {
        list(&self.dir, &self.server, self.rotation == LogRotation::Never)
    }

    /// Deletes the oldest files beyond `keep` (never the current one).
    fn prune(&self) {
        let Ok(files) = self.files() else { return };
        let current = self
            .current
            .as_ref()
            .map(|c| self.dir.join(file_name(&self.server, &c.period, c.n)));
        let excess = files.len().saturating_sub(self.keep);
        for (_, path) in files.into_iter().take(excess) {
            if Some(&path) != current.as_ref() {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

/// `server`'s log files in `dir`, oldest first (see [`file_key`]); none when the folder does
/// not exist yet. The writer prunes with it and `herdctl tail` reads with it.
pub fn list(
    dir: &Path,
    server: &str,
    undated_is_current: bool,
) -> io::Result<Vec<(FileKey, PathBuf)>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry?;
        let Some(key) = entry
            .file_name()
            .to_str()
            .and_then(|n| file_key(server, n, undated_is_current))
        else {
            continue;
        };
        if entry.file_type().is_ok_and(|t| !t.is_dir()) {
            files.push((key, entry.path()));
        }
    }
    files.sort();
    Ok(files)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn settings(rotation: LogRotation, keep: usize, max: Option<u64>) -> LogSettings {
        LogSettings {
            dir: PathBuf::new(),
            rotation,
            keep,
            max_file_bytes: max,
            max_line_bytes: 4096,
            level: herd_config::config::LogLevel::Info,
            order_window: std::time::Duration::ZERO,
            redact: herd_config::config::Redact::None,
        }
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn keys_order_periods_then_sequence_numbers() {
        let key = |n| file_key("Alford", n, false);
        assert_eq!(
            key("Alford.2026-01-01.log"),
            Some((true, "2026-01-01".into(), 0))
        );
        assert_eq!(
            key("Alford.2026-01-01.12.log"),
            Some((true, "2026-01-01".into(), 12))
        );
        assert!(key("Alford.2026-01-01.2.log") < key("Alford.2026-01-01.10.log"));
        assert!(key("Alford.2026-01-01.10.log") < key("Alford.2026-01-02.log"));
        assert!(key("Alford.log") < key("Alford.2026-01-01.log"));
        assert_eq!(key("Alford.3.log"), Some((false, String::new(), 3)));
        assert_eq!(key("Ball.2026-01-01.log"), None);
        assert_eq!(key("Alford.x.log"), None);
        assert_eq!(key("Alford.2026-01-01.x.log"), None);
        let never = |n| file_key("Alford", n, true);
        assert!(never("Alford.2026-01-01.log") < never("Alford.log"));
        assert!(never("Alford.log") < never("Alford.1.log"));
    }

    #[test]
    fn rotates_by_size_within_a_period_and_keeps_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let mut files = LogFiles::new(dir.path(), "A", &settings(LogRotation::Daily, 3, Some(100)));
        let day = 20_000 * 86_400; // 2024-10-04
        let line = format!("{}\n", "x".repeat(60));
        files.write(line.as_bytes(), day + 5).unwrap();
        // Several lines at once are split between files at line ends.
        files.write(line.repeat(4).as_bytes(), day + 6).unwrap();
        files.flush().unwrap();
        assert_eq!(
            names(dir.path()),
            [
                "A.2024-10-04.2.log",
                "A.2024-10-04.3.log",
                "A.2024-10-04.4.log"
            ]
        );
        // The next day starts over at the undecorated name.
        files.write(b"z\n", day + 86_400).unwrap();
        files.flush().unwrap();
        assert_eq!(
            names(dir.path()),
            [
                "A.2024-10-04.3.log",
                "A.2024-10-04.4.log",
                "A.2024-10-05.log"
            ]
        );
        // A restart appends to the newest file of its period while it has room.
        drop(files);
        let mut again = LogFiles::new(dir.path(), "A", &settings(LogRotation::Daily, 3, Some(100)));
        again.write(b"more\n", day + 86_401).unwrap();
        again.flush().unwrap();
        let text = std::fs::read_to_string(dir.path().join("A.2024-10-05.log")).unwrap();
        assert_eq!(text, "z\nmore\n");
    }

    #[test]
    fn never_rotates_by_time_but_still_by_size() {
        let dir = tempfile::tempdir().unwrap();
        let mut files = LogFiles::new(dir.path(), "A", &settings(LogRotation::Never, 10, Some(10)));
        for t in 0..3 {
            files.write(b"0123456789\n", t * 100_000).unwrap();
        }
        files.flush().unwrap();
        assert_eq!(names(dir.path()), ["A.1.log", "A.2.log", "A.log"]);
        let mut plain = LogFiles::new(dir.path(), "B", &settings(LogRotation::Never, 10, None));
        plain.write(b"x\n", 0).unwrap();
        plain.write(b"y\n", 10_000_000).unwrap();
        plain.flush().unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("B.log")).unwrap(),
            "x\ny\n"
        );
    }
}

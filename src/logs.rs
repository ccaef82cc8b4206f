//! Per-server log files: tracing + tracing-appender, rotated by time with a kept-files
//! limit, one set per server under `log_dir/<Server>/`.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use anyhow::{Context, Result};
use tracing_appender::non_blocking::{NonBlocking, WorkerGuard};
use tracing_appender::rolling::{RollingFileAppender, Rotation};
use tracing_subscriber::filter::{filter_fn, LevelFilter};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

use crate::config::{LogRotation, LogSettings};

/// The folder holding one server's log files.
pub fn server_log_dir(settings: &LogSettings, server: &str) -> PathBuf {
    settings.dir.join(server)
}

/// Sends this process's tracing output to `server`'s log files (everything, wire lines
/// included) and lifecycle messages (not wire lines) to stderr; with `stdout`, everything to
/// standard output as well, instead of stderr (a container engine collects both, so one copy
/// is enough). Keep the returned handle alive: dropping it flushes the writers. A reload
/// changes the files' settings through it.
pub fn init_node_logging(settings: &LogSettings, server: &str, stdout: bool) -> Result<NodeLog> {
    let (writer, file_guard) = file_writer(settings, server)?;
    let current = Arc::new(RwLock::new(writer));
    let file_layer = tracing_subscriber::fmt::layer()
        .with_writer(CurrentWriter(Arc::clone(&current)))
        .with_ansi(false)
        .with_target(false)
        .with_filter(LevelFilter::INFO);
    let mut console_guard = None;
    let console_layer = if stdout {
        // Lossy: the files are the record; a log collector that falls behind loses lines
        // from this copy rather than stalling the node.
        let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
            .lossy(true)
            .finish(std::io::stdout());
        console_guard = Some(guard);
        tracing_subscriber::fmt::layer()
            .with_writer(writer)
            .with_ansi(false)
            .with_target(false)
            .with_filter(LevelFilter::INFO)
            .boxed()
    } else {
        // Colour only for a person at a terminal: under the supervisor stderr is a file that
        // `herdctl start` quotes when a node fails.
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_target(false)
            // Wire lines are for the files; a panic prints its own one-line summary.
            .with_filter(filter_fn(|meta| {
                meta.target() != "wire" && meta.target() != crate::panics::TARGET
            }))
            .with_filter(LevelFilter::INFO)
            .boxed()
    };
    tracing_subscriber::registry()
        .with(file_layer)
        .with(console_layer)
        .try_init()
        .context("logging was already set up")?;
    Ok(NodeLog {
        server: server.to_owned(),
        current,
        file_guard: Mutex::new(file_guard),
        _console_guard: console_guard,
    })
}

/// A node's log files, as set up by [`init_node_logging`].
pub struct NodeLog {
    server: String,
    current: Arc<RwLock<NonBlocking>>,
    /// Flushes the current file writer when dropped (or replaced).
    file_guard: Mutex<WorkerGuard>,
    _console_guard: Option<WorkerGuard>,
}

impl NodeLog {
    /// Opens the files `settings` asks for (folder, rotation, files kept), without using
    /// them yet: a reload that fails here changes nothing.
    pub fn prepare(&self, settings: &LogSettings) -> Result<PreparedLog> {
        file_writer(settings, &self.server).map(|(writer, guard)| PreparedLog { writer, guard })
    }

    /// Writes to the prepared files from now on; the old writer is flushed.
    pub fn install(&self, prepared: PreparedLog) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = prepared.writer;
        // The old guard goes last: it flushes what the old writer still holds.
        let _old = std::mem::replace(
            &mut *self.file_guard.lock().unwrap_or_else(|e| e.into_inner()),
            prepared.guard,
        );
    }
}

/// New log files, opened and not yet written to (see [`NodeLog::prepare`]).
pub struct PreparedLog {
    writer: NonBlocking,
    guard: WorkerGuard,
}

/// The file writer in use: a reload swaps it under the subscriber, which cannot be set up
/// twice.
struct CurrentWriter(Arc<RwLock<NonBlocking>>);

impl<'a> MakeWriter<'a> for CurrentWriter {
    type Writer = NonBlocking;

    fn make_writer(&'a self) -> NonBlocking {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// A writer to `server`'s rolling log files, and the guard that flushes it.
fn file_writer(settings: &LogSettings, server: &str) -> Result<(NonBlocking, WorkerGuard)> {
    let dir = server_log_dir(settings, server);
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("cannot create log folder {}", dir.display()))?;
    let rotation = match settings.rotation {
        LogRotation::Minutely => Rotation::MINUTELY,
        LogRotation::Hourly => Rotation::HOURLY,
        LogRotation::Daily => Rotation::DAILY,
        LogRotation::Never => Rotation::NEVER,
    };
    let appender = RollingFileAppender::builder()
        .rotation(rotation)
        .filename_prefix(server)
        .filename_suffix("log")
        .max_log_files(settings.keep)
        .build(&dir)
        .with_context(|| format!("cannot open a log file in {}", dir.display()))?;
    // Lossless: the log is the record of every line in and out, so it must not drop any.
    // Buffered: the writer thread drains whatever is queued and then flushes, so a busy node
    // writes a batch of lines per syscall instead of one line per syscall, and a quiet one
    // still has every line on disk at once.
    Ok(
        tracing_appender::non_blocking::NonBlockingBuilder::default()
            .lossy(false)
            .finish(std::io::BufWriter::with_capacity(64 * 1024, appender)),
    )
}

/// A line of wire traffic as it goes into a log: the text verbatim, except that bytes that
/// are not valid UTF-8 and control characters (other than newlines inside a multi-line
/// reply, and tabs) are escaped, so a log line can never forge another or drive a terminal.
/// Trailing newlines are dropped (the log adds its own).
/// Borrows when there is nothing to escape, which is almost every line: this runs twice per
/// request on the hot path.
pub fn printable(bytes: &[u8]) -> Cow<'_, str> {
    let mut bytes = bytes;
    while let [rest @ .., b'\n'] = bytes {
        bytes = rest;
    }
    if let Ok(text) = std::str::from_utf8(bytes) {
        if !text
            .chars()
            .any(|c| c.is_control() && c != '\n' && c != '\t')
        {
            return Cow::Borrowed(text);
        }
    }
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c.is_control() && c != '\n' && c != '\t' {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_keeps_text_and_escapes_the_rest() {
        assert_eq!(printable(b"IAMAT kiwi +1+2 3"), "IAMAT kiwi +1+2 3");
        assert_eq!(printable("AT x\n{\n}\n\n".as_bytes()), "AT x\n{\n}");
        assert_eq!(printable("üñí\tcode".as_bytes()), "üñí\tcode");
        assert_eq!(printable(b"a\x00b\x1b[31m\r"), "a\\u{0}b\\u{1b}[31m\\u{d}");
        assert_eq!(printable(b"bad \xff\xfe"), "bad \\xff\\xfe");
    }
}

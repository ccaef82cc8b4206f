//! Per-server log files: one writer thread per node appends whole lines to
//! `log_dir/<Server>/`, rotated by time and size with a kept-files limit (`files.rs`); wire
//! traffic is formatted straight into batches and tracing's events through
//! tracing-subscriber, both into one bounded queue (`sink.rs`).

mod batch;
mod escape;
mod events;
pub mod files;
mod inbox;
pub mod read_back;
mod redact;
mod reorder;
mod sink;
mod stdout;

use std::borrow::Cow;
use std::path::PathBuf;

use anyhow::{Context, Result};
use tracing_subscriber::filter::{filter_fn, LevelFilter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

pub use batch::LogBatch;
pub use escape::push_capped;
use files::LogFiles;
use herd_config::config::{LogLevel, LogSettings};
pub use redact::Redactor;
pub use reorder::Reorder;
pub use sink::{LogGuard, WireLog};

/// The folder holding one server's log files.
pub fn server_log_dir(settings: &LogSettings, server: &str) -> PathBuf {
    settings.dir.join(server)
}

/// Sends this process's tracing output to `server`'s log files (everything, wire lines
/// included) and lifecycle messages (not wire lines) to stderr; with `stdout`, everything
/// that goes into the files to standard output as well, instead of stderr (a container
/// engine collects both, so one copy is enough). Returns the node's log (the queue wire
/// traffic goes through, and the handle a reload changes the files with) and the guard:
/// keep it alive, dropping it writes out and flushes what is queued.
pub fn init_node_logging(
    settings: &LogSettings,
    server: &str,
    stdout: bool,
) -> Result<(NodeLog, LogGuard)> {
    let files = open_files(settings, server)?;
    let (log, guard) = WireLog::start(
        files,
        settings.max_line_bytes,
        settings.level == LogLevel::Debug,
        settings.order_window,
        stdout,
    );
    let file_layer = tracing_subscriber::fmt::layer()
        .with_writer(log.clone())
        .with_ansi(false)
        .with_target(false)
        .with_filter(LevelFilter::INFO);
    // With `stdout` the log writer copies everything there; otherwise lifecycle messages go
    // to stderr, in colour only for a person at a terminal: under the supervisor stderr is
    // a file that `herdctl start` quotes when a node fails.
    let stderr_layer = (!stdout).then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_target(false)
            // A panic prints its own one-line summary. (Wire lines never reach tracing: they
            // go to the files through `WireLog` batches.)
            .with_filter(filter_fn(|meta| meta.target() != herd_os::panics::TARGET))
            .with_filter(LevelFilter::INFO)
    });
    tracing_subscriber::registry()
        .with(file_layer)
        .with(stderr_layer)
        .try_init()
        .context("logging was already set up")?;
    let node_log = NodeLog {
        server: server.to_owned(),
        wire: log,
    };
    Ok((node_log, guard))
}

/// `server`'s log files as `settings` lay them out (the folder is created, private: see
/// [`herd_os::private`]).
fn open_files(settings: &LogSettings, server: &str) -> Result<LogFiles> {
    let dir = server_log_dir(settings, server);
    herd_os::private::folder(&settings.dir, "log_dir")?;
    herd_os::private::folder(&dir, "log_dir")?;
    Ok(LogFiles::new(&dir, server, settings))
}

/// A node's log, as set up by [`init_node_logging`].
pub struct NodeLog {
    server: String,
    wire: WireLog,
}

impl NodeLog {
    /// The queue wire traffic is logged through.
    pub fn wire(&self) -> WireLog {
        self.wire.clone()
    }

    /// Opens the files `settings` asks for (folder, rotation, size, files kept) without using
    /// them yet: a reload that fails here changes nothing.
    pub fn prepare(&self, settings: &LogSettings) -> Result<PreparedLog> {
        Ok(PreparedLog {
            files: open_files(settings, &self.server)?,
            max_line_bytes: settings.max_line_bytes,
            log_status: settings.level == LogLevel::Debug,
            order_window: settings.order_window,
        })
    }

    /// Writes to the prepared files from now on (what is queued goes to the old ones first).
    pub fn install(&self, prepared: PreparedLog) {
        self.wire
            .switch(prepared.files, prepared.max_line_bytes, prepared.log_status);
        self.wire.set_order_window(prepared.order_window);
    }
}

/// New log files and settings, opened and not yet used (see [`NodeLog::prepare`]).
pub struct PreparedLog {
    files: LogFiles,
    max_line_bytes: usize,
    log_status: bool,
    order_window: std::time::Duration,
}

/// A line of wire traffic as it goes into a log: the text verbatim, except that bytes that
/// are not valid UTF-8 and control characters (other than tabs; a newline as `\n`) are
/// escaped, so a log line is one event and can never forge another or drive a terminal.
/// Trailing newlines are dropped (the log adds its own). Borrows when there is nothing to
/// escape; the escaping is the wire log's own ([`sink::push_capped`], with no cap).
pub fn printable(bytes: &[u8]) -> Cow<'_, str> {
    let mut bytes = bytes;
    while let [rest @ .., b'\n'] = bytes {
        bytes = rest;
    }
    if let Ok(text) = std::str::from_utf8(bytes) {
        if !text.chars().any(|c| c.is_control() && c != '\t') {
            return Cow::Borrowed(text);
        }
    }
    let mut out = Vec::with_capacity(bytes.len());
    push_capped(&mut out, bytes, None, usize::MAX);
    Cow::Owned(String::from_utf8(out).expect("escaped text is valid UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_keeps_text_and_escapes_the_rest() {
        assert_eq!(printable(b"IAMAT kiwi +1+2 3"), "IAMAT kiwi +1+2 3");
        assert_eq!(printable("AT x\n{\n}\n\n".as_bytes()), "AT x\\n{\\n}");
        assert_eq!(printable("üñí\tcode".as_bytes()), "üñí\tcode");
        assert_eq!(printable(b"a\x00b\x1b[31m\r"), "a\\u{0}b\\u{1b}[31m\\u{d}");
        assert_eq!(printable(b"bad \xff\xfe"), "bad \\xff\\xfe");
    }
}

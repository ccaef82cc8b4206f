//! The one way into a node's log files: a queue of whole lines drained by one writer thread.
//!
//! Wire traffic does not go through tracing: a connection formats its exchanges straight into
//! a byte buffer (timestamp, level, peer, arrow, the line capped at `logs.max_line_bytes`),
//! one buffer per batch of pipelined lines, and hands the buffer over in one queue push.
//! tracing's events (lifecycle, warnings, a panic hook's report) are formatted by
//! tracing-subscriber and pushed the same way, so the file keeps one format and one order.
//!
//! The queue is bounded in bytes and never blocks: when the writer falls behind by more than
//! [`MAX_QUEUED_BYTES`], wire batches are dropped and counted (shown by `herdctl status` and
//! noted in the log); tracing's events get twice that room, so a warning still gets through
//! a flood of traffic.

use std::io::Write as _;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use super::files::LogFiles;
use super::inbox::{Inbox, Message};
use super::redact::Redactor;
use super::reorder::{Reorder, TICK_NANOS};
use herd_wire::clock::{now_nanos, push_timestamp};

/// How far (in bytes of formatted lines) the writer may fall behind before wire lines are
/// dropped.
pub const MAX_QUEUED_BYTES: usize = 16 << 20;

struct Shared {
    queue: Inbox,
    queued: AtomicUsize,
    dropped: AtomicU64,
    /// `logs.max_line_bytes` and `logs.level`, which a reload may change.
    max_line_bytes: AtomicUsize,
    log_status: AtomicBool,
    /// `logs.order_window_ms`, in nanoseconds (a reload may change it).
    order_window: AtomicU64,
    /// `logs.redact` (a reload may change it): applied as lines are formatted.
    redactor: RwLock<Option<Arc<Redactor>>>,
}

/// A handle on a node's log queue (cheap to clone).
#[derive(Clone)]
pub struct WireLog {
    shared: Arc<Shared>,
}

/// Stops the writer thread when dropped, after it has written and flushed everything queued.
pub struct LogGuard {
    log: WireLog,
    thread: Option<JoinHandle<()>>,
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        let _ = self.log.shared.queue.send(Message::Stop, true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl WireLog {
    /// Starts the writer thread on `files` (and, with `stdout`, a copy of every line to
    /// standard output, see [`StdoutCopy`]).
    pub fn start(
        files: LogFiles,
        max_line_bytes: usize,
        log_status: bool,
        order_window: Duration,
        stdout: bool,
    ) -> (WireLog, LogGuard) {
        let log = WireLog {
            shared: Arc::new(Shared {
                queue: Inbox::new(),
                queued: AtomicUsize::new(0),
                dropped: AtomicU64::new(0),
                max_line_bytes: AtomicUsize::new(max_line_bytes),
                log_status: AtomicBool::new(log_status),
                order_window: AtomicU64::new(order_window.as_nanos() as u64),
                redactor: RwLock::new(None),
            }),
        };
        let writer = log.clone();
        let thread = std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || {
                /// Sends fail once the writer is gone, also when it panics.
                struct Closes<'a>(&'a Inbox);
                impl Drop for Closes<'_> {
                    fn drop(&mut self) {
                        self.0.close();
                    }
                }
                let _closes = Closes(&writer.shared.queue);
                let copy = stdout.then(StdoutCopy::start);
                writer.write_loop(files, copy.as_ref());
                if let Some(copy) = copy {
                    copy.finish();
                }
            })
            .expect("cannot start the log-writer thread");
        let guard = LogGuard {
            log: log.clone(),
            thread: Some(thread),
        };
        (log, guard)
    }

    /// A log that writes nothing (for tests and benchmarks).
    pub fn discard() -> WireLog {
        WireLog {
            shared: Arc::new(Shared {
                queue: Inbox::closed(),
                queued: AtomicUsize::new(0),
                dropped: AtomicU64::new(0),
                max_line_bytes: AtomicUsize::new(herd_config::config::DEFAULT_LOG_MAX_LINE_BYTES),
                log_status: AtomicBool::new(false),
                order_window: AtomicU64::new(0),
                redactor: RwLock::new(None),
            }),
        }
    }

    /// An empty batch to format lines into.
    pub fn batch(&self) -> LogBatch {
        LogBatch {
            bytes: Vec::new(),
            lines: 0,
            max_line_bytes: self.shared.max_line_bytes.load(Ordering::Relaxed),
            redactor: self.redactor(),
        }
    }

    /// Logs one wire line stamped now (`arrow`: `>` sent to `who`, `<` received from it):
    /// for the rare lines that come alone (handshakes, faults, acknowledgements); a burst
    /// goes through one [`LogBatch`].
    pub fn one(&self, who: &str, arrow: &str, line: &[u8]) {
        let mut batch = self.batch();
        batch.line(now_nanos(), who, arrow, line, None);
        self.submit(&mut batch);
    }

    fn redactor(&self) -> Option<Arc<Redactor>> {
        self.shared
            .redactor
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// From now on lines are redacted by `redactor` (`logs.redact`; `None`: kept whole).
    pub fn set_redaction(&self, redactor: Option<Arc<Redactor>>) {
        *self
            .shared
            .redactor
            .write()
            .unwrap_or_else(|e| e.into_inner()) = redactor;
    }

    /// A client id as this log may show it (for lines written through tracing).
    pub fn client_id(&self, id: &str) -> String {
        match self.redactor() {
            Some(r) => r.client_id(id),
            None => super::printable(id.as_bytes()).into_owned(),
        }
    }

    /// A line from outside (a neighbour's refused or unexpected line) as a warning may quote
    /// it: its first 200 bytes, or under `logs.redact` only its leading command words and its
    /// length, since a cut or malformed line is not one the redactor can take apart.
    pub fn quoted(&self, line: &[u8]) -> String {
        if self.redactor().is_none() {
            return super::printable(&line[..line.len().min(200)]).into_owned();
        }
        let words: Vec<&str> = std::str::from_utf8(&line[..line.len().min(64)])
            .unwrap_or("")
            .split(' ')
            .take(3)
            .take_while(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_uppercase() || b == b'?'))
            .collect();
        format!(
            "{} ({} bytes; the rest withheld by logs.redact)",
            words.join(" "),
            line.len()
        )
    }

    /// Whether `HERD STATUS` exchanges are logged (`logs.level: debug`).
    pub fn logs_status(&self) -> bool {
        self.shared.log_status.load(Ordering::Relaxed)
    }

    /// From now on, lines go to `files` (after what is already queued), capped at
    /// `max_line_bytes`, with `HERD STATUS` exchanges logged when `log_status` (a reload).
    pub fn switch(&self, files: LogFiles, max_line_bytes: usize, log_status: bool) {
        self.shared
            .max_line_bytes
            .store(max_line_bytes, Ordering::Relaxed);
        self.shared.log_status.store(log_status, Ordering::Relaxed);
        let _ = self.shared.queue.send(Message::Files(files), true);
    }

    /// Holds lines `window` from now on to write them in time order (a reload).
    pub fn set_order_window(&self, window: Duration) {
        self.shared
            .order_window
            .store(window.as_nanos() as u64, Ordering::Relaxed);
    }

    fn order_window(&self) -> Duration {
        Duration::from_nanos(self.shared.order_window.load(Ordering::Relaxed))
    }

    /// Wire lines dropped so far because the writer fell behind.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Hands `batch`'s lines to the writer (or drops them, counted, when it is too far
    /// behind) and leaves the batch empty. Never blocks.
    pub fn submit(&self, batch: &mut LogBatch) {
        if batch.bytes.is_empty() {
            return;
        }
        // The next batch starts with room for one like this, so a connection's two lines per
        // request do not grow a buffer from nothing again after every write.
        let room = batch.bytes.len().min(64 << 10);
        // A long-lived batch (a peer session's) follows a reload's redaction.
        batch.redactor = self.redactor();
        let bytes = std::mem::replace(&mut batch.bytes, Vec::with_capacity(room));
        let lines = std::mem::take(&mut batch.lines);
        if !self.push(bytes, MAX_QUEUED_BYTES, false) {
            self.shared.dropped.fetch_add(lines, Ordering::Relaxed);
        }
    }

    /// Queues already formatted lines if the queue holds less than `limit` bytes (counted
    /// as allocated, which is what the queue costs); `urgent` ones wake the writer (see
    /// `inbox.rs`).
    fn push(&self, bytes: Vec<u8>, limit: usize, urgent: bool) -> bool {
        let len = bytes.capacity();
        if self.shared.queued.load(Ordering::Relaxed) + len > limit {
            return false;
        }
        self.shared.queued.fetch_add(len, Ordering::Relaxed);
        if self
            .shared
            .queue
            .send(Message::Lines(bytes), urgent)
            .is_none()
        {
            // No writer (stopped, or a discarding log).
            self.shared.queued.fetch_sub(len, Ordering::Relaxed);
        }
        true
    }

    fn write_loop(&self, mut files: LogFiles, copy: Option<&StdoutCopy>) {
        let mut failed = false;
        let mut write = |files: &mut LogFiles, bytes: &[u8]| {
            if bytes.is_empty() {
                return;
            }
            if let Some(copy) = copy {
                copy.send(bytes);
            }
            let secs = (now_nanos().max(0) / 1_000_000_000) as u64;
            if let Err(e) = files.write(bytes, secs) {
                if !failed {
                    eprintln!("herdctl: cannot write the log: {e}");
                    failed = true;
                }
            }
            let _ = files.flush();
        };
        let mut held = Reorder::new(self.order_window());
        let mut notes = Notes::default();
        let mut out = Vec::new();
        let mut next_pass = i128::MIN;
        let mut taken = Vec::new();
        loop {
            // Lines (only they end the wait when nothing is held), or the moment the next
            // held entry is due (not sooner than a tick after the last look, so a busy log
            // is sorted in runs), or an urgent message.
            let until = held.next_due().map(|due| due.max(next_pass));
            self.shared.queue.take(until, &mut taken);
            for message in taken.drain(..) {
                match message {
                    Message::Lines(bytes) => held.add(bytes),
                    Message::Files(new) => {
                        // What was queued before the switch goes to the old files.
                        out.clear();
                        self.freed(held.release_all(&mut out));
                        write(&mut files, &out);
                        files = new;
                    }
                    Message::Stop => {
                        out.clear();
                        self.freed(held.release_all(&mut out));
                        write(&mut files, &out);
                        return;
                    }
                }
            }
            let now = now_nanos();
            held.set_hold(self.order_window());
            if now >= next_pass && held.next_due().is_some_and(|due| due <= now) {
                out.clear();
                self.freed(held.release(now, &mut out));
                write(&mut files, &out);
                next_pass = now + TICK_NANOS;
                for note in notes.take(self.dropped(), held.late(), held.hold()) {
                    // Counted like any queued line, as releasing it frees it.
                    self.shared
                        .queued
                        .fetch_add(note.capacity(), Ordering::Relaxed);
                    held.add(note);
                }
            }
        }
    }

    /// Held lines written: their bytes no longer count against [`MAX_QUEUED_BYTES`].
    fn freed(&self, bytes: usize) {
        self.shared.queued.fetch_sub(bytes, Ordering::Relaxed);
    }
}

/// The writer's own notes in the log: wire lines dropped because it fell behind, lines that
/// reached it too late to be put in order. Each goes through the reorder buffer like any
/// line, so it lands in time order too.
#[derive(Default)]
struct Notes {
    dropped: u64,
    late: u64,
}

impl Notes {
    /// The notes to add now, given the counts so far.
    fn take(&mut self, dropped: u64, late: u64, hold: Duration) -> Vec<Vec<u8>> {
        let mut notes = Vec::new();
        if dropped > self.dropped {
            let mut note = Vec::new();
            push_timestamp(&mut note, now_nanos());
            let _ = writeln!(
                note,
                "  WARN the log writer fell behind: {} wire lines dropped ({dropped} since \
                 start; `herdctl status` shows the count)",
                dropped - self.dropped
            );
            notes.push(note);
            self.dropped = dropped;
        }
        if late > self.late {
            let mut note = Vec::new();
            push_timestamp(&mut note, now_nanos());
            let _ = writeln!(
                note,
                "  INFO {} log lines reached the log writer more than {} ms after their event \
                 and were written where they arrived, out of time order ({late} since start; \
                 logs.order_window_ms holds lines longer)",
                late - self.late,
                hold.as_millis()
            );
            notes.push(note);
            self.late = late;
        }
        notes
    }
}

/// A copy of the log on standard output (`herdctl run --log-stdout`, for a container engine
/// that collects it). Lossy: the files are the record, so a collector that falls behind
/// loses lines from this copy rather than stalling the log writer.
struct StdoutCopy {
    queue: std::sync::mpsc::SyncSender<Vec<u8>>,
    thread: JoinHandle<()>,
}

impl StdoutCopy {
    fn start() -> StdoutCopy {
        let (queue, lines) = std::sync::mpsc::sync_channel::<Vec<u8>>(1024);
        let thread = std::thread::Builder::new()
            .name("log-stdout".into())
            .spawn(move || {
                let mut out = std::io::stdout().lock();
                while let Ok(bytes) = lines.recv() {
                    if out.write_all(&bytes).and_then(|()| out.flush()).is_err() {
                        return;
                    }
                }
            })
            .expect("cannot start the log-stdout thread");
        StdoutCopy { queue, thread }
    }

    fn send(&self, bytes: &[u8]) {
        let _ = self.queue.try_send(bytes.to_vec());
    }

    /// Writes out what is queued and stops.
    fn finish(self) {
        drop(self.queue);
        let _ = self.thread.join();
    }
}

/// tracing-subscriber's writer for the log file: each event is formatted into one buffer
/// and queued whole when the writer is dropped.
pub struct EventWriter<'a> {
    log: &'a WireLog,
    bytes: Vec<u8>,
}

impl std::io::Write for EventWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for EventWriter<'_> {
    fn drop(&mut self) {
        if !self.bytes.is_empty() {
            let bytes = std::mem::take(&mut self.bytes);
            self.log.push(bytes, 2 * MAX_QUEUED_BYTES, true);
        }
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for WireLog {
    type Writer = EventWriter<'a>;

    fn make_writer(&'a self) -> EventWriter<'a> {
        EventWriter {
            log: self,
            bytes: Vec::new(),
        }
    }
}

/// Wire lines formatted for one hand-over to the writer.
pub struct LogBatch {
    bytes: Vec<u8>,
    lines: u64,
    max_line_bytes: usize,
    redactor: Option<Arc<Redactor>>,
}

impl LogBatch {
    /// Appends one wire line: `<timestamp>  INFO <who> <arrow> <text>`, the text escaped (see
    /// [`push_capped`]) and capped. `total` is the text's real length when `text` is only its
    /// start (an over-long line). Returns where the line sits in the batch.
    pub fn line(
        &mut self,
        at_nanos: i128,
        who: &str,
        arrow: &str,
        text: &[u8],
        total: Option<usize>,
    ) -> Range<usize> {
        let start = self.bytes.len();
        push_timestamp(&mut self.bytes, at_nanos);
        self.bytes.extend_from_slice(b"  INFO ");
        self.bytes.extend_from_slice(who.as_bytes());
        self.bytes.push(b' ');
        self.bytes.extend_from_slice(arrow.as_bytes());
        self.bytes.push(b' ');
        let redacted;
        let text = match &self.redactor {
            Some(redactor) => {
                redacted = redactor.text(text);
                &redacted[..]
            }
            None => text,
        };
        push_capped(&mut self.bytes, text, total, self.max_line_bytes);
        self.bytes.push(b'\n');
        self.lines += 1;
        start..self.bytes.len()
    }

    /// Replaces the lines at `ranges` (ascending, from [`LogBatch::line`]) with `lines`.
    pub fn replace(&mut self, ranges: &[Range<usize>], lines: &[Vec<u8>]) {
        let mut rebuilt = Vec::with_capacity(self.bytes.len());
        let mut from = 0;
        for (range, line) in ranges.iter().zip(lines) {
            rebuilt.extend_from_slice(&self.bytes[from..range.start]);
            rebuilt.extend_from_slice(line);
            from = range.end;
        }
        rebuilt.extend_from_slice(&self.bytes[from..]);
        self.bytes = rebuilt;
    }

    /// A line formatted apart from the batch (to go into it with [`LogBatch::replace`]).
    pub fn format_line(&self, at_nanos: i128, who: &str, arrow: &str, text: &[u8]) -> Vec<u8> {
        let mut single = LogBatch {
            bytes: Vec::new(),
            lines: 0,
            max_line_bytes: self.max_line_bytes,
            redactor: self.redactor.clone(),
        };
        single.line(at_nanos, who, arrow, text, None);
        single.bytes
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The formatted lines (for tests).
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// Appends a line of wire traffic as it goes into a log: the text verbatim, except that bytes
/// that are not valid UTF-8 and control characters (other than tabs; a newline inside a
/// multi-line reply as `\n`) are escaped, so a log line is one event and can never forge another or drive a terminal;
/// trailing newlines dropped. At most `cap` bytes of it are written: a longer one is cut and
/// ends `... (<n> bytes)`, n being its real length (`total`, or the text's own).
///
/// Wire text is almost all printable ASCII (a WHATSAT reply is kilobytes of it), so runs of
/// such bytes are found a word at a time and copied whole; only the stretches between them
/// (control bytes, non-ASCII text, invalid UTF-8) are decoded. A stretch starts and ends next
/// to an ASCII byte, which no UTF-8 sequence spans, so decoding it alone finds the same
/// characters and invalid bytes as decoding the whole text.
pub fn push_capped(out: &mut Vec<u8>, text: &[u8], total: Option<usize>, cap: usize) {
    let mut text = text;
    while let [rest @ .., b'\n'] = text {
        text = rest;
    }
    let total = total.unwrap_or(text.len());
    let mut line = CappedLine {
        start: out.len(),
        cap,
        cut: total > text.len(),
    };
    let mut rest = text;
    while !rest.is_empty() {
        // No need to look further than the room left: a longer run is cut there anyway.
        let room = line.room(out);
        let scan = &rest[..rest.len().min(room.saturating_add(1))];
        let plain = plain_prefix(scan);
        if plain > room {
            out.extend_from_slice(&rest[..room]);
            line.cut = true;
            break;
        }
        out.extend_from_slice(&rest[..plain]);
        rest = &rest[plain..];
        let other = rest.iter().position(|&b| is_plain(b)).unwrap_or(rest.len());
        if !line.push_decoded(out, &rest[..other]) {
            break;
        }
        rest = &rest[other..];
    }
    if line.cut {
        let _ = write!(out, "... ({total} bytes)");
    }
}

/// Printable ASCII or a tab: a byte a log line keeps as it is.
#[inline]
fn is_plain(b: u8) -> bool {
    (b.wrapping_sub(0x20) < 0x5f) | (b == b'\t')
}

/// How a control character is written into a log line: a newline as `\n` (a multi-line
/// reply stays one log event per line; `herdctl tail` shows it as lines again unless
/// `--raw`), any other as `\u{..}`.
fn escape_control(c: char) -> String {
    match c {
        '\n' => "\\n".to_owned(),
        c => format!("\\u{{{:x}}}", c as u32),
    }
}

/// How many bytes at the start of `bytes` are [`is_plain`]. Whole blocks are checked
/// without an early exit, which the compiler turns into vector instructions.
fn plain_prefix(bytes: &[u8]) -> usize {
    const BLOCK: usize = 32;
    let mut at = 0;
    for block in bytes.chunks_exact(BLOCK) {
        if !block.iter().fold(true, |all, &b| all & is_plain(b)) {
            break;
        }
        at += BLOCK;
    }
    at + bytes[at..]
        .iter()
        .position(|&b| !is_plain(b))
        .unwrap_or(bytes.len() - at)
}

/// A log line being written by [`push_capped`]: where it starts in the buffer, its cap, and
/// whether it has been cut.
struct CappedLine {
    start: usize,
    cap: usize,
    cut: bool,
}

impl CappedLine {
    fn room(&self, out: &[u8]) -> usize {
        self.cap.saturating_sub(out.len() - self.start)
    }

    /// Appends `piece` unless it would take the line past the cap (then records the cut).
    fn fits(&mut self, out: &mut Vec<u8>, piece: &[u8]) -> bool {
        if out.len() - self.start + piece.len() > self.cap {
            self.cut = true;
            return false;
        }
        out.extend_from_slice(piece);
        true
    }

    /// Appends a stretch with no plain ASCII in it (other than what decoding keeps): its
    /// characters, with control characters as `\u{..}` and invalid bytes as `\x..`. False
    /// once the line is cut.
    fn push_decoded(&mut self, out: &mut Vec<u8>, text: &[u8]) -> bool {
        for chunk in text.utf8_chunks() {
            let mut rest = chunk.valid();
            while !rest.is_empty() {
                // Copy the stretch up to the next character to escape in one go.
                let (run, escaped) = match rest
                    .char_indices()
                    .find(|&(_, c)| c.is_control() && c != '\t')
                {
                    Some((at, c)) => (&rest[..at], Some(c)),
                    None => (rest, None),
                };
                let room = self.room(out);
                if run.len() > room {
                    let mut end = room;
                    while !run.is_char_boundary(end) {
                        end -= 1;
                    }
                    out.extend_from_slice(&run.as_bytes()[..end]);
                    self.cut = true;
                    return false;
                }
                out.extend_from_slice(run.as_bytes());
                rest = &rest[run.len()..];
                if let Some(c) = escaped {
                    if !self.fits(out, escape_control(c).as_bytes()) {
                        return false;
                    }
                    rest = &rest[c.len_utf8()..];
                }
            }
            for &b in chunk.invalid() {
                if !self.fits(out, format!("\\x{b:02x}").as_bytes()) {
                    return false;
                }
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [`push_capped`] as it was before its byte-level fast path (the proptest's reference).
    /// Appends a line of wire traffic as it goes into a log: the text verbatim, except that bytes
    /// that are not valid UTF-8 and control characters (other than newlines inside a multi-line
    /// reply, and tabs) are escaped, so a log line can never forge another or drive a terminal;
    /// trailing newlines dropped. At most `cap` bytes of it are written: a longer one is cut and
    /// ends `... (<n> bytes)`, n being its real length (`total`, or the text's own).
    fn push_capped_reference(out: &mut Vec<u8>, text: &[u8], total: Option<usize>, cap: usize) {
        let mut text = text;
        while let [rest @ .., b'\n'] = text {
            text = rest;
        }
        let total = total.unwrap_or(text.len());
        let clean_ascii = text
            .iter()
            .all(|&b| (0x20..0x7f).contains(&b) || b == b'\t');
        if clean_ascii && text.len() <= cap && total == text.len() {
            out.extend_from_slice(text);
            return;
        }
        let start = out.len();
        let mut cut = total > text.len();
        // Appends `piece` unless it would take the line past the cap (then records the cut).
        let mut fits = |out: &mut Vec<u8>, piece: &[u8]| -> bool {
            if out.len() - start + piece.len() > cap {
                cut = true;
                return false;
            }
            out.extend_from_slice(piece);
            true
        };
        'text: for chunk in text.utf8_chunks() {
            let mut rest = chunk.valid();
            while !rest.is_empty() {
                // Copy the stretch up to the next character to escape in one go.
                let (run, escaped) = match rest
                    .char_indices()
                    .find(|&(_, c)| c.is_control() && c != '\t')
                {
                    Some((at, c)) => (&rest[..at], Some(c)),
                    None => (rest, None),
                };
                let room = cap.saturating_sub(out.len() - start);
                if run.len() > room {
                    let mut end = room;
                    while !run.is_char_boundary(end) {
                        end -= 1;
                    }
                    out.extend_from_slice(&run.as_bytes()[..end]);
                    cut = true;
                    break 'text;
                }
                out.extend_from_slice(run.as_bytes());
                rest = &rest[run.len()..];
                if let Some(c) = escaped {
                    if !fits(out, escape_control(c).as_bytes()) {
                        break 'text;
                    }
                    rest = &rest[c.len_utf8()..];
                }
            }
            for &b in chunk.invalid() {
                if !fits(out, format!("\\x{b:02x}").as_bytes()) {
                    break 'text;
                }
            }
        }
        if cut {
            let _ = write!(out, "... ({total} bytes)");
        }
    }

    /// Bytes that exercise every path: plain ASCII, newlines and tabs, control bytes, DEL,
    /// C1 controls, multi-byte characters (whole and split), invalid and truncated sequences.
    fn wire_bytes() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        let piece = prop_oneof![
            4 => proptest::collection::vec(0x20u8..0x7f, 0..80),
            2 => Just(b"\n".to_vec()),
            1 => Just(b"\t".to_vec()),
            2 => any::<u8>().prop_map(|b| vec![b]),
            1 => (0u8..0x20).prop_map(|b| vec![b]),
            1 => Just(vec![0x7f]),
            1 => Just("\u{85}\u{9f}".as_bytes().to_vec()),
            2 => any::<char>().prop_map(|c| c.to_string().into_bytes()),
            1 => Just("é中🦀".as_bytes().to_vec()),
            1 => Just(vec![0xe2, 0x82]),
            1 => Just(vec![0xf0, 0x9f, 0xa6]),
            1 => Just(vec![0xed, 0xa0, 0x80]),
        ];
        proptest::collection::vec(piece, 0..40).prop_map(|pieces| pieces.concat())
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

        #[test]
        fn the_fast_path_writes_what_the_reference_writes(
            text in wire_bytes(),
            cap in proptest::prop_oneof![0usize..40, 0usize..4000, proptest::strategy::Just(usize::MAX)],
            extra in proptest::option::of(0usize..1000),
            prefix in proptest::collection::vec(0x20u8..0x7f, 0..8),
        ) {
            let total = extra.map(|e| text.len() + e);
            let (mut fast, mut reference) = (prefix.clone(), prefix);
            push_capped(&mut fast, &text, total, cap);
            push_capped_reference(&mut reference, &text, total, cap);
            proptest::prop_assert_eq!(
                String::from_utf8_lossy(&fast),
                String::from_utf8_lossy(&reference)
            );
            proptest::prop_assert_eq!(fast, reference);
        }

        #[test]
        fn arbitrary_bytes_are_written_as_the_reference_writes_them(
            text in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
            cap in 0usize..400,
        ) {
            let (mut fast, mut reference) = (Vec::new(), Vec::new());
            push_capped(&mut fast, &text, None, cap);
            push_capped_reference(&mut reference, &text, None, cap);
            proptest::prop_assert_eq!(fast, reference);
        }
    }

    fn capped(text: &[u8], total: Option<usize>, cap: usize) -> String {
        let mut out = Vec::new();
        push_capped(&mut out, text, total, cap);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn lines_are_escaped_like_printable() {
        for text in [
            &b"IAMAT kiwi +1+2 3"[..],
            "AT x\n{\n}\n\n".as_bytes(),
            "üñí\tcode".as_bytes(),
            b"a\x00b\x1b[31m\r",
            b"bad \xff\xfe",
        ] {
            assert_eq!(capped(text, None, 1000), super::super::printable(text));
        }
    }

    #[test]
    fn long_lines_are_cut_with_their_length() {
        assert_eq!(capped(b"0123456789", None, 10), "0123456789");
        assert_eq!(capped(b"0123456789\n", None, 4), "0123... (10 bytes)");
        assert_eq!(
            capped(b"0123", Some(1_000_000), 100),
            "0123... (1000000 bytes)"
        );
        // Escapes count in the cap and are never split.
        assert_eq!(capped(b"ab\x1bcd", None, 6), "ab... (5 bytes)");
        assert_eq!(capped("ééé".as_bytes(), None, 3), "é... (6 bytes)");
        // A hostile line costs at most the cap, however it escapes.
        let hostile = vec![0x1b; 100_000];
        assert!(capped(&hostile, None, 4096).len() < 4096 + 32);
    }

    #[test]
    fn a_batch_formats_lines_like_tracing_and_can_replace_them() {
        let log = WireLog::discard();
        let mut batch = log.batch();
        let at = 1_621_464_827_959_498_503;
        batch.line(at, "127.0.0.1:5", "<", b"IAMAT x", None);
        let reply = batch.line(at, "127.0.0.1:5", ">", b"AT y\n", None);
        assert_eq!(
            String::from_utf8_lossy(batch.as_bytes()),
            "2021-05-19T22:53:47.959498Z  INFO 127.0.0.1:5 < IAMAT x\n\
             2021-05-19T22:53:47.959498Z  INFO 127.0.0.1:5 > AT y\n"
        );
        let refused = batch.format_line(at, "127.0.0.1:5", ">", b"? IAMAT x");
        batch.replace(&[reply], &[refused]);
        assert!(String::from_utf8_lossy(batch.as_bytes()).ends_with("> ? IAMAT x\n"));
        // Submitting to a log without a writer neither blocks nor fails.
        log.submit(&mut batch);
        assert!(batch.is_empty());
        assert_eq!(log.dropped(), 0);
    }
}

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
//! a flood of traffic. What the writer holds to write in time order counts too, and at a
//! high rate the hold alone would fill the queue (200 ms of a lone node's 1.5 million lines
//! a second is ~40 MB): so past half the bound the writer shortens its hold instead, and
//! lines are dropped only when it cannot write as fast as they come.

use std::io::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use super::batch::LogBatch;
use super::files::LogFiles;
use super::inbox::{Inbox, Message};
use super::redact::Redactor;
use super::reorder::{Reorder, TICK_NANOS};
use super::stdout::StdoutCopy;
use herd_wire::clock::{now_nanos, push_timestamp};

/// How far (in bytes of formatted lines) the writer may fall behind before wire lines are
/// dropped.
pub const MAX_QUEUED_BYTES: usize = 16 << 20;
/// Held lines past this make the writer shorten its hold (see [`WireLog::relieve`]).
const PRESSURE_BYTES: usize = MAX_QUEUED_BYTES / 2;

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
        LogBatch::new(
            self.shared.max_line_bytes.load(Ordering::Relaxed),
            self.redactor(),
        )
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
    pub(crate) fn push(&self, bytes: Vec<u8>, limit: usize, urgent: bool) -> bool {
        let len = bytes.capacity();
        if self.shared.queued.load(Ordering::Relaxed) + len > limit {
            return false;
        }
        let before = self.shared.queued.fetch_add(len, Ordering::Relaxed);
        // The push that takes the queue past the pressure mark wakes the writer, which may
        // be asleep until its oldest held line is due, to shorten its hold.
        let pressing = before <= PRESSURE_BYTES && before + len > PRESSURE_BYTES;
        if self
            .shared
            .queue
            .send(Message::Lines(bytes), urgent || pressing)
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
            self.relieve(&mut held, &mut out, &mut |bytes| write(&mut files, bytes));
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

    /// Past [`PRESSURE_BYTES`] queued, writes the older half of what is held, again until
    /// the queue is down to half that: a shorter hold for a moment rather than dropped
    /// lines. A line handed over later than that is then written out of order, and counted
    /// as late like any other (the writer's note in the log says how many).
    fn relieve(&self, held: &mut Reorder, out: &mut Vec<u8>, write: &mut impl FnMut(&[u8])) {
        while self.shared.queued.load(Ordering::Relaxed) > PRESSURE_BYTES / 2 && !held.is_empty() {
            out.clear();
            self.freed(held.release_older_half(out));
            write(out);
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

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use herd_config::config::LogRotation;

    /// More lines than the queue holds, handed over well within the hold (10 s): the
    /// writer shortens its hold and writes them all, in order, rather than drop any.
    #[test]
    fn a_burst_bigger_than_the_queue_within_the_hold_is_written_whole() {
        let dir = tempfile::tempdir().unwrap();
        let settings = crate::files::tests::settings(LogRotation::Never, 1, None);
        let files = LogFiles::new(dir.path(), "A", &settings);
        let (log, guard) = WireLog::start(files, 4096, false, Duration::from_secs(10), false);
        let payload = [b'x'; 100];
        let (batches, per_batch) = (48, 8000);
        let mut stamp = now_nanos();
        // Before the first line is due (10 s): only a shortened hold makes room by then.
        let deadline = Instant::now() + Duration::from_secs(8);
        for _ in 0..batches {
            let mut batch = log.batch();
            for _ in 0..per_batch {
                stamp += 1000;
                batch.line(stamp, "127.0.0.1:5", "<", &payload, None);
            }
            // Hand over only what the queue has room for: anything dropped is then the
            // writer's doing (it held what it should have written).
            while log.shared.queued.load(Ordering::Relaxed) + batch.as_bytes().len() * 2
                > MAX_QUEUED_BYTES
            {
                assert!(
                    Instant::now() < deadline,
                    "the writer kept {} bytes and never wrote them",
                    log.shared.queued.load(Ordering::Relaxed)
                );
                std::thread::yield_now();
            }
            log.submit(&mut batch);
        }
        assert!(batches * per_batch * payload.len() > 2 * MAX_QUEUED_BYTES);
        drop(guard);
        assert_eq!(log.dropped(), 0);
        let text = std::fs::read_to_string(dir.path().join("A.log")).unwrap();
        let stamps: Vec<&str> = text.lines().map(|l| &l[..27]).collect();
        assert_eq!(stamps.len(), batches * per_batch);
        assert!(
            stamps.windows(2).all(|w| w[0] <= w[1]),
            "written out of order"
        );
    }
}

//! Puts a node's log lines back in time order before they are written.
//!
//! Each line's timestamp is taken when its event happened, on the thread that saw it, and
//! several threads hand their lines to the one writer: a flood line stamped .004040 can
//! reach the writer before the `< IAMAT` stamped .003992 that caused it. So the writer holds
//! each entry (a timestamped line and any continuation lines after it, e.g. a panic's
//! backtrace) for the hold (`logs.order_window_ms`, default
//! [`herd_config::config::DEFAULT_LOG_ORDER_WINDOW_MS`]) after its stamp, and writes whatever is
//! older than that in stamp order (arrival order on equal stamps). The threads hand their
//! lines over within milliseconds (a connection every 20 ms at most, a peer session's
//! reader too, a flood line once written), so the hold needs to cover only a thread kept
//! off the CPU on a busy machine.
//!
//! A line handed over later than the hold after its stamp is written at once, after lines
//! stamped later: the file is then out of order at that spot, and [`Reorder::late`] counts
//! it (the writer notes the count in the log). WARN and ERROR entries wait at most
//! [`URGENT_HOLD_NANOS`], so crash evidence is on disk within milliseconds even if the
//! process is killed right after.
//! Everything held is written at once on stop, on a switch of files, and on drop of the
//! writer (a panicking main thread unwinds through it).

use std::collections::VecDeque;

/// How long a WARN or ERROR entry is held at most: the evidence of a crash is written at
/// once.
pub const URGENT_HOLD_NANOS: i128 = 10_000_000;
/// The writer looks at what is due at most this often while lines keep arriving, so a busy
/// log is sorted in runs rather than line by line.
pub const TICK_NANOS: i128 = 10_000_000;

/// Bytes of a timestamp, `2026-01-01T10:00:00.123456Z` (see `clock.rs`).
const STAMP_LEN: usize = 27;

/// One held entry: where its bytes are, and when it happened.
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Nanoseconds since the epoch, from its timestamp.
    at: i128,
    /// Which held batch, and where in it.
    batch: u64,
    start: u32,
    end: u32,
}

/// Entries held back until their turn, and the batches their bytes live in.
#[derive(Default)]
pub struct Reorder {
    /// How long an entry is held after its stamp (nanoseconds).
    hold: i128,
    /// Held entries in stamp order (arrival order on equal stamps): each is put in its
    /// place as it arrives, which is at or near the end.
    entries: VecDeque<Entry>,
    /// (due, stamp) of the held entries that wait less than `hold` (WARN and ERROR lines,
    /// lines without a stamp of their own); few, so scanned.
    urgent: Vec<(i128, i128)>,
    /// Batches as they arrived (no copy), each with its count of entries not yet written;
    /// the first one's id is `first_batch`.
    batches: VecDeque<(Vec<u8>, usize)>,
    first_batch: u64,
    /// The stamp of the latest entry written, and of the latest one seen (for lines that
    /// carry none).
    last_written: i128,
    last_seen: i128,
    /// The last second parsed, as text and as seconds since the epoch.
    second: ([u8; 19], i128),
    late: u64,
}

impl Reorder {
    pub fn new(hold: std::time::Duration) -> Reorder {
        Reorder {
            hold: hold.as_nanos() as i128,
            second: ([0; 19], -1),
            ..Reorder::default()
        }
    }

    /// Holds the lines of `bytes` (whole lines, each ending in `\n`).
    pub fn add(&mut self, bytes: Vec<u8>) {
        let batch = self.first_batch + self.batches.len() as u64;
        let mut count = 0;
        let mut open: Option<Entry> = None;
        let mut at = 0;
        while at < bytes.len() {
            let end = memchr::memchr(b'\n', &bytes[at..]).map_or(bytes.len(), |i| at + i + 1);
            let line = &bytes[at..end];
            // A line stamped like the entry before it (a forwarded batch's lines share one
            // stamp, as do a read burst's) joins that entry: written in the same place as
            // an entry of its own would be (equal stamps keep their arrival order), without
            // parsing its stamp or holding one more entry.
            if let Some(entry) = open.as_mut() {
                let same = line.len() > STAMP_LEN
                    && bytes.get(entry.start as usize..entry.start as usize + STAMP_LEN)
                        == Some(&line[..STAMP_LEN]);
                if same {
                    if is_urgent(line) && URGENT_HOLD_NANOS < self.hold {
                        self.urgent.push((entry.at + URGENT_HOLD_NANOS, entry.at));
                    }
                    entry.end = end as u32;
                    at = end;
                    continue;
                }
            }
            match self.stamp(line) {
                Some(stamp) => {
                    if let Some(entry) = open.take() {
                        self.push(entry);
                        count += 1;
                    }
                    self.last_seen = self.last_seen.max(stamp);
                    if is_urgent(line) && URGENT_HOLD_NANOS < self.hold {
                        self.urgent.push((stamp + URGENT_HOLD_NANOS, stamp));
                    }
                    open = Some(Entry {
                        at: stamp,
                        batch,
                        start: at as u32,
                        end: end as u32,
                    });
                }
                // A continuation line: part of the entry before it.
                None => match open.as_mut() {
                    Some(entry) => entry.end = end as u32,
                    None => {
                        self.urgent.push((self.last_seen, self.last_seen));
                        open = Some(Entry {
                            at: self.last_seen,
                            batch,
                            start: at as u32,
                            end: end as u32,
                        });
                    }
                },
            }
            at = end;
        }
        if let Some(entry) = open {
            self.push(entry);
            count += 1;
        }
        self.batches.push_back((bytes, count));
    }

    fn push(&mut self, entry: Entry) {
        match self.entries.back() {
            Some(last) if last.at > entry.at => {
                let place = self.entries.partition_point(|e| e.at <= entry.at);
                self.entries.insert(place, entry);
            }
            _ => self.entries.push_back(entry),
        }
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// When the next entry is due (nanoseconds since the epoch), if any is held.
    pub fn next_due(&self) -> Option<i128> {
        let first = self.entries.front()?.at + self.hold;
        Some(self.urgent.iter().fold(first, |due, u| due.min(u.0)))
    }

    /// Holds entries `hold` from now on (a reload).
    pub fn set_hold(&mut self, hold: std::time::Duration) {
        self.hold = hold.as_nanos() as i128;
    }

    /// How long entries are held.
    pub fn hold(&self) -> std::time::Duration {
        std::time::Duration::from_nanos(self.hold as u64)
    }

    /// Lines written after a line stamped later than them, so far (see the module's notes).
    pub fn late(&self) -> u64 {
        self.late
    }

    /// Appends to `out`, in time order, every entry due by `now` and every entry stamped no
    /// later than one of those; returns the bytes those entries held (now free).
    pub fn release(&mut self, now: i128, out: &mut Vec<u8>) -> usize {
        let urgent = self.urgent.iter().filter(|u| u.0 <= now).map(|u| u.1).max();
        let cutoff = urgent.map_or(now - self.hold, |at| at.max(now - self.hold));
        self.release_through(cutoff, out)
    }

    /// Appends to `out`, in time order, the entries stamped in the older half of the span
    /// held (all of them when they share one stamp), whether due or not; returns the bytes
    /// freed. How the writer shortens its hold when what it holds grows too big.
    pub fn release_older_half(&mut self, out: &mut Vec<u8>) -> usize {
        let (Some(first), Some(last)) = (self.entries.front(), self.entries.back()) else {
            return 0;
        };
        let cutoff = first.at + (last.at - first.at) / 2;
        self.release_through(cutoff, out)
    }

    /// Appends every held entry to `out`, in time order; returns the bytes freed.
    pub fn release_all(&mut self, out: &mut Vec<u8>) -> usize {
        self.release_through(i128::MAX, out)
    }

    fn release_through(&mut self, cutoff: i128, out: &mut Vec<u8>) -> usize {
        let n = self.entries.partition_point(|e| e.at <= cutoff);
        for entry in self.entries.drain(..n) {
            if entry.at < self.last_written {
                self.late += 1;
            }
            self.last_written = self.last_written.max(entry.at);
            let index = (entry.batch - self.first_batch) as usize;
            let (bytes, left) = &mut self.batches[index];
            out.extend_from_slice(&bytes[entry.start as usize..entry.end as usize]);
            *left -= 1;
        }
        if !self.urgent.is_empty() {
            self.urgent.retain(|u| u.1 > cutoff);
        }
        let mut freed = 0;
        while let Some((bytes, 0)) = self.batches.front() {
            freed += bytes.capacity();
            self.batches.pop_front();
            self.first_batch += 1;
        }
        freed
    }

    /// The time a line's timestamp stands for, if it starts with one.
    fn stamp(&mut self, line: &[u8]) -> Option<i128> {
        let text = line.get(..STAMP_LEN)?;
        if text[4] != b'-' || text[10] != b'T' || text[19] != b'.' || text[26] != b'Z' {
            return None;
        }
        let micros = digits(&text[20..26])?;
        let second: [u8; 19] = text[..19].try_into().ok()?;
        if second != self.second.0 || self.second.1 < 0 {
            self.second = (second, seconds_of(&second)?);
        }
        Some(self.second.1 * 1_000_000_000 + micros * 1000)
    }
}

/// Whether a line is a WARN or ERROR event (tracing writes the level after the stamp).
fn is_urgent(line: &[u8]) -> bool {
    let level = line.get(STAMP_LEN..STAMP_LEN + 7).unwrap_or_default();
    let level = level.trim_ascii_start();
    level.starts_with(b"WARN") || level.starts_with(b"ERROR")
}

fn digits(text: &[u8]) -> Option<i128> {
    text.iter().try_fold(0i128, |n, &b| {
        b.is_ascii_digit().then(|| n * 10 + i128::from(b - b'0'))
    })
}

/// Seconds since the epoch of `YYYY-MM-DDTHH:MM:SS` (UTC; Howard Hinnant's
/// days-from-civil, the inverse of `clock::civil`).
fn seconds_of(text: &[u8; 19]) -> Option<i128> {
    let year = digits(&text[0..4])?;
    let month = digits(&text[5..7])?;
    let day = digits(&text[8..10])?;
    let (h, m, s) = (
        digits(&text[11..13])?,
        digits(&text[14..16])?,
        digits(&text[17..19])?,
    );
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3600 + m * 60 + s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use herd_wire::clock::{civil, push_timestamp};

    const SECOND: i128 = 1_000_000_000;
    const HOLD: std::time::Duration = std::time::Duration::from_millis(200);
    const HOLD_TEST: i128 = 200_000_000;
    const T0: i128 = 1_621_464_827 * SECOND;

    fn line(at: i128, level: &str, text: &str) -> Vec<u8> {
        let mut out = Vec::new();
        push_timestamp(&mut out, at);
        out.extend_from_slice(format!(" {level:>5} {text}\n").as_bytes());
        out
    }

    fn text(out: &[u8]) -> Vec<String> {
        String::from_utf8_lossy(out)
            .lines()
            .map(|l| {
                l.split_once(' ')
                    .map_or(l, |(_, rest)| rest)
                    .trim()
                    .to_owned()
            })
            .collect()
    }

    #[test]
    fn stamps_read_back_as_the_times_they_were_written() {
        let mut r = Reorder::new(HOLD);
        for secs in [0i128, 951_782_400, 1_621_464_827, 4_102_444_799] {
            let at = secs * SECOND + 123_456_000;
            assert_eq!(r.stamp(&line(at, "INFO", "x")), Some(at), "{secs}");
            let (y, ..) = civil(secs as u64);
            assert!(y >= 1970);
        }
        assert_eq!(r.stamp(b"  continued\n"), None);
        assert_eq!(r.stamp(b"2021-05-19T22:53:47.95949xZ INFO\n"), None);
    }

    #[test]
    fn lines_are_written_in_stamp_order_once_held_long_enough() {
        let mut r = Reorder::new(HOLD);
        let mut a = line(T0 + 4_040_000, "INFO", "Hamilton > HERD AT");
        a.extend(line(T0 + 4_100_000, "INFO", "Hamilton > HERD AT 2"));
        r.add(a);
        r.add(line(T0 + 3_992_000, "INFO", "client < IAMAT"));
        let mut out = Vec::new();
        assert_eq!(r.release(T0 + 50_000_000, &mut out), 0, "still held");
        assert!(out.is_empty());
        assert_eq!(r.next_due(), Some(T0 + 3_992_000 + HOLD_TEST));
        let freed = r.release(T0 + 4_050_000 + HOLD_TEST, &mut out);
        assert_eq!(
            text(&out),
            ["INFO client < IAMAT", "INFO Hamilton > HERD AT"]
        );
        assert_eq!(
            freed, 0,
            "a batch goes when all of it was written, in order"
        );
        out.clear();
        assert!(r.release_all(&mut out) > 0);
        assert_eq!(text(&out), ["INFO Hamilton > HERD AT 2"]);
        assert!(r.is_empty());
        assert_eq!(r.late(), 0);
    }

    /// What the writer writes of two batches handed over in turn (each line one of `a`'s or
    /// `b`'s), once everything is due; nothing stays held.
    fn written_in_order(a: &[Vec<u8>], b: &[Vec<u8>]) -> Vec<u8> {
        let mut r = Reorder::new(HOLD);
        r.add(a.concat());
        r.add(b.concat());
        let mut out = Vec::new();
        r.release_all(&mut out);
        assert!(r.is_empty());
        out
    }

    #[test]
    fn runs_of_one_batch_and_lines_between_them_come_out_in_stamp_order_byte_for_byte() {
        let a = [
            line(T0 + 1_000_000, "INFO", "a1"),
            line(T0 + 3_000_000, "INFO", "a2"),
            line(T0 + 4_000_000, "INFO", "a3"),
            line(T0 + 7_000_000, "INFO", "a4 out of order"),
            line(T0 + 6_000_000, "INFO", "a5"),
        ];
        let b = [
            line(T0 + 2_000_000, "INFO", "b1"),
            line(T0 + 5_000_000, "INFO", "b2"),
        ];
        let expected = [&a[0], &b[0], &a[1], &a[2], &b[1], &a[4], &a[3]];
        assert_eq!(
            written_in_order(&a, &b),
            expected.map(|l| l.as_slice()).concat()
        );
    }

    #[test]
    fn equal_stamps_keep_their_arrival_order_and_continuations_stay_with_their_line() {
        let mut r = Reorder::new(HOLD);
        let mut panic = line(T0 + 10_000, "ERROR", "panic in thread 'x'");
        panic.extend_from_slice(b"backtrace:\n   0: somewhere\n");
        r.add(line(T0 + 20_000, "INFO", "later"));
        r.add(panic);
        r.add(line(T0 + 10_000, "INFO", "same stamp, after"));
        let mut out = Vec::new();
        r.release_all(&mut out);
        let out = String::from_utf8(out).unwrap();
        let order: Vec<&str> = out.lines().collect();
        assert!(order[0].ends_with("ERROR panic in thread 'x'"), "{out}");
        assert_eq!(order[1..3], ["backtrace:", "   0: somewhere"]);
        assert!(order[3].ends_with("same stamp, after"), "{out}");
        assert!(order[4].ends_with("later"), "{out}");
    }

    #[test]
    fn runs_of_lines_with_one_stamp_interleave_with_other_batches_as_single_lines_would() {
        // A forwarded batch: three lines stamped alike, then one stamped later.
        let a = [
            line(T0 + 2_000_000, "INFO", "a1"),
            line(T0 + 2_000_000, "INFO", "a2"),
            line(T0 + 2_000_000, "INFO", "a3"),
            line(T0 + 4_000_000, "INFO", "a4"),
        ];
        // Another thread's lines: one before the run, two with its stamp (after it: they
        // arrived later), one between the run and a4.
        let b = [
            line(T0 + 1_000_000, "INFO", "b1"),
            line(T0 + 2_000_000, "INFO", "b2"),
            line(T0 + 2_000_000, "INFO", "b3"),
            line(T0 + 3_000_000, "INFO", "b4"),
        ];
        let expected = [&b[0], &a[0], &a[1], &a[2], &b[1], &b[2], &b[3], &a[3]];
        assert_eq!(
            written_in_order(&a, &b),
            expected.map(|l| l.as_slice()).concat()
        );
    }

    #[test]
    fn a_warning_in_a_run_of_one_stamp_is_still_written_within_the_short_hold() {
        let mut r = Reorder::new(HOLD);
        r.add([line(T0, "INFO", "first"), line(T0, "WARN", "same stamp")].concat());
        assert_eq!(r.next_due(), Some(T0 + URGENT_HOLD_NANOS));
        let mut out = Vec::new();
        r.release(T0 + URGENT_HOLD_NANOS, &mut out);
        assert_eq!(text(&out), ["INFO first", "WARN same stamp"]);
    }

    #[test]
    fn a_warning_is_written_within_the_short_hold_with_everything_before_it() {
        let mut r = Reorder::new(HOLD);
        r.add(line(T0, "INFO", "before"));
        r.add(line(T0 + 1_000_000, "WARN", "store unhealthy"));
        r.add(line(T0 + 2_000_000, "INFO", "after"));
        assert_eq!(r.next_due(), Some(T0 + 1_000_000 + URGENT_HOLD_NANOS));
        let mut out = Vec::new();
        r.release(T0 + 1_000_000 + URGENT_HOLD_NANOS, &mut out);
        assert_eq!(text(&out), ["INFO before", "WARN store unhealthy"]);
    }

    #[test]
    fn a_line_later_than_the_hold_is_written_at_once_and_counted() {
        let mut r = Reorder::new(HOLD);
        r.add(line(T0 + SECOND, "INFO", "new"));
        let mut out = Vec::new();
        r.release(T0 + SECOND + HOLD_TEST, &mut out);
        r.add(line(T0, "INFO", "stalled"));
        r.release(T0 + SECOND + HOLD_TEST, &mut out);
        assert_eq!(text(&out), ["INFO new", "INFO stalled"]);
        assert_eq!(r.late(), 1);
    }

    #[test]
    fn batches_are_freed_once_all_their_lines_are_out() {
        let mut r = Reorder::new(HOLD);
        let mut first = line(T0, "INFO", "a");
        first.extend(line(T0 + 3 * SECOND, "INFO", "c"));
        let second = line(T0 + SECOND, "INFO", "b");
        let capacity = first.capacity() + second.capacity();
        r.add(first);
        r.add(second);
        let mut out = Vec::new();
        assert_eq!(r.release(T0 + 2 * SECOND, &mut out), 0, "c still held");
        assert_eq!(text(&out), ["INFO a", "INFO b"]);
        assert_eq!(r.release_all(&mut out), capacity);
        assert!(r.batches.is_empty());
    }
}

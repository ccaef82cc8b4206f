//! Merging several servers' logs by time: a log entry is a timestamped line and the
//! continuation lines after it (a multi-line reply), kept whole; entries of different
//! servers are ordered by their stamps, each server's in its own order.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// A log line's timestamp, `YYYY-MM-DDTHH:MM:SS` and nanoseconds: tracing writes UTC
/// (`...Z`), so this orders lines of different servers by time.
pub(super) type Stamp = ([u8; 19], u32);

/// The RFC3339 timestamp a log line starts with, if it has one (continuation lines of a
/// multi-line entry do not).
pub(super) fn stamp(line: &[u8]) -> Option<Stamp> {
    const SHAPE: &[u8; 19] = b"0000-00-00T00:00:00";
    let head: [u8; 19] = line.get(..19)?.try_into().ok()?;
    let shaped = head.iter().zip(SHAPE).all(|(c, s)| {
        if *s == b'0' {
            c.is_ascii_digit()
        } else {
            c == s
        }
    });
    if !shaped {
        return None;
    }
    let mut rest = &line[19..];
    let mut nanos = 0u32;
    if let [b'.', fraction @ ..] = rest {
        let digits = fraction.iter().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 {
            return None;
        }
        for i in 0..9 {
            let d = fraction
                .get(i)
                .filter(|_| i < digits)
                .map_or(0, |b| b - b'0');
            nanos = nanos * 10 + u32::from(d);
        }
        rest = &fraction[digits..];
    }
    matches!(rest.first(), Some(b'Z' | b'z' | b'+' | b'-')).then_some((head, nanos))
}

/// One log entry: a timestamped line and the continuation lines after it.
#[derive(Debug)]
pub(super) struct Entry {
    pub(super) stamp: Option<Stamp>,
    pub(super) lines: Vec<Vec<u8>>,
}

/// Groups lines into entries. Leading continuation lines (their entry's first line is not
/// among the lines) form an entry without a stamp.
pub(super) fn entries(lines: Vec<Vec<u8>>) -> VecDeque<Entry> {
    let mut out: VecDeque<Entry> = VecDeque::new();
    for line in lines {
        match (stamp(&line), out.back_mut()) {
            (None, Some(entry)) => entry.lines.push(line),
            (stamp, _) => out.push_back(Entry {
                stamp,
                lines: vec![line],
            }),
        }
    }
    out
}

/// Merges the streams' entries by timestamp, keeping each stream's own order (and, on equal
/// stamps, the earlier stream first). Yields (stream index, line). This is [`Merger`] with
/// everything already read and nothing held back.
pub(super) fn merge(streams: Vec<VecDeque<Entry>>) -> Vec<(usize, Vec<u8>)> {
    let now = Instant::now();
    let mut merger = Merger::new(streams.len(), Duration::ZERO);
    for (pending, stream) in merger.pending.iter_mut().zip(streams) {
        pending.extend(stream.into_iter().map(|entry| (now, entry)));
    }
    merger.release(now)
}

/// Merges followed streams by time. Each entry waits `hold` after it was read before it
/// may go out, and goes out only when no waiting entry of any stream has an earlier stamp.
pub(super) struct Merger {
    hold: Duration,
    pending: Vec<VecDeque<(Instant, Entry)>>,
    /// Per stream, the stamp of its latest entry: for continuation lines whose entry is out.
    pub(super) last_stamp: Vec<Option<Stamp>>,
}

impl Merger {
    pub(super) fn new(streams: usize, hold: Duration) -> Merger {
        Merger {
            hold,
            pending: (0..streams).map(|_| VecDeque::new()).collect(),
            last_stamp: vec![None; streams],
        }
    }

    /// Lines of stream `i`, read at `now`. Continuation lines join their entry.
    pub(super) fn add(&mut self, i: usize, lines: Vec<Vec<u8>>, now: Instant) {
        let pending = &mut self.pending[i];
        for line in lines {
            let stamp = stamp(&line);
            match (stamp, pending.back_mut()) {
                (None, Some((_, entry))) => entry.lines.push(line),
                _ => {
                    if stamp.is_some() {
                        self.last_stamp[i] = stamp;
                    }
                    pending.push_back((
                        now,
                        Entry {
                            stamp: stamp.or(self.last_stamp[i]),
                            lines: vec![line],
                        },
                    ));
                }
            }
        }
    }

    /// The lines that may go out at `now`, in time order.
    pub(super) fn release(&mut self, now: Instant) -> Vec<(usize, Vec<u8>)> {
        let mut out = Vec::new();
        loop {
            let next = self
                .pending
                .iter()
                .enumerate()
                .filter_map(|(i, q)| q.front().map(|(_, e)| (e.stamp, i)))
                .min();
            let Some((_, i)) = next else {
                return out;
            };
            let (read_at, _) = self.pending[i].front().unwrap();
            if now.saturating_duration_since(*read_at) < self.hold {
                return out;
            }
            let (_, entry) = self.pending[i].pop_front().unwrap();
            out.extend(entry.lines.into_iter().map(|l| (i, l)));
        }
    }
}

//! The load itself: connections that send the plan's lines (closed loop, open loop paced by
//! one thread, or a connection per request) and measure each reply.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, Semaphore};
use tokio::time::{sleep_until, timeout, timeout_at, Instant};

use crate::generator::{iamat_line, GenSettings, Generator, Kind, Pacer, Rng};
use crate::probe::{run_probe, Probe, ProbeFigures};
use crate::report::{thread_cpu_time, PhaseFigures};
use crate::stats::Histogram;
use crate::{Dial, Plan, DRAIN_GRACE, EXCHANGE_TIMEOUT};

/// Progress counters shared by the connections of a phase (for the progress bar only).
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) ops: AtomicU64,
    pub(crate) errors: AtomicU64,
}

/// What one connection measured.
#[derive(Default)]
pub(crate) struct ConnOutcome {
    pub(crate) latency: Histogram,
    /// Open loop: due time to write.
    pub(crate) send_late: Histogram,
    pub(crate) ops: u64,
    pub(crate) errors: u64,
}

impl ConnOutcome {
    pub(crate) fn record(&mut self, counters: &Counters, nanos: u64, ok: bool) {
        self.latency.record(nanos);
        self.ops += 1;
        counters.ops.fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.errors += 1;
            counters.errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn fail(&mut self, counters: &Counters, count: u64) {
        self.errors += count;
        counters.errors.fetch_add(count, Ordering::Relaxed);
    }
}

/// One phase: load the server `dial` reaches by `plan` (and run the probe alongside), with a progress bar.
pub(crate) fn measure(
    runtime: &tokio::runtime::Runtime,
    label: &str,
    dial: Dial,
    plan: &Plan,
    probe: Option<Probe>,
) -> Result<(PhaseFigures, Option<ProbeFigures>)> {
    let cpu_before = thread_cpu_time();
    let wall = std::time::Instant::now();
    let counters = Arc::new(Counters::default());
    let bar = ProgressBar::new(plan.duration.as_millis() as u64);
    bar.set_style(
        ProgressStyle::with_template("{prefix:>10} [{bar:30}] {elapsed:>3} {msg}")
            .expect("a valid progress template")
            .progress_chars("=> "),
    );
    bar.set_prefix(label.to_owned());
    let (outcomes, probe_figures, pacer_late) = runtime.block_on(async {
        let start = Instant::now() + Duration::from_millis(20);
        let end = start + plan.duration;
        let mut tasks = Vec::with_capacity(plan.connections);
        let (schedules, pacer): (Vec<Option<Schedule>>, _) = match plan.rate {
            Some(rate) => {
                let (schedules, pacer) = spawn_pacer(start, end, rate, plan.connections)?;
                (schedules.into_iter().map(Some).collect(), Some(pacer))
            }
            None => ((0..plan.connections).map(|_| None).collect(), None),
        };
        for (index, pacer) in schedules.into_iter().enumerate() {
            let generator = Generator::new(plan.generator.clone(), index as u64 + 1);
            let counters = Arc::clone(&counters);
            let (per_request, window) = (plan.per_request, plan.window);
            let dial = dial.clone();
            tasks.push(tokio::spawn(async move {
                sleep_until(start).await;
                if per_request {
                    per_request_loop(&dial, generator, pacer, end, &counters).await
                } else {
                    persistent(&dial, generator, pacer, end, window, &counters).await
                }
            }));
        }
        let probe_task = probe.map(|p| tokio::spawn(run_probe(p, start, end)));
        let ticker = {
            let (bar, counters) = (bar.clone(), Arc::clone(&counters));
            tokio::spawn(async move {
                loop {
                    let elapsed = Instant::now().saturating_duration_since(start);
                    bar.set_position(elapsed.as_millis() as u64);
                    bar.set_message(format!(
                        "{} replies, {} errors",
                        counters.ops.load(Ordering::Relaxed),
                        counters.errors.load(Ordering::Relaxed)
                    ));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
        };
        let mut outcomes = Vec::new();
        for task in tasks {
            outcomes.push(
                task.await
                    .map_err(|e| anyhow!("a connection task failed: {e}"))?,
            );
        }
        let probe_figures = match probe_task {
            Some(task) => Some(task.await.map_err(|e| anyhow!("the probe failed: {e}"))??),
            None => None,
        };
        ticker.abort();
        // The schedule thread is done once every connection has had its last due time.
        let pacer_late = match pacer {
            Some(pacer) => pacer
                .join()
                .map_err(|_| anyhow!("the pacer thread panicked"))?,
            None => Histogram::new(),
        };
        Ok::<_, anyhow::Error>((outcomes, probe_figures, pacer_late))
    })?;
    bar.finish_and_clear();
    let elapsed = wall.elapsed();
    let cpu = thread_cpu_time().saturating_sub(cpu_before);
    let mut figures = PhaseFigures {
        elapsed: elapsed.saturating_sub(Duration::from_millis(20)),
        cpu: cpu.as_secs_f64() / elapsed.as_secs_f64(),
        pacer_late,
        ..PhaseFigures::default()
    };
    for outcome in outcomes {
        figures.ops += outcome.ops;
        figures.errors += outcome.errors;
        figures.latency.merge(&outcome.latency);
        figures.send_late.merge(&outcome.send_late);
    }
    Ok((figures, probe_figures))
}

/// Due times for the open loop, one channel per connection (round robin). The schedule is
/// kept by a plain thread that sleeps with the OS timer rather than by tokio's timer (1 ms
/// ticks), so requests leave on time and the latency measured from the due time is the
/// server's, not the generator's lateness. The thread asks for no timer slack (Linux's default
/// of 50 µs would let every wake-up be that late) and sleeps until shortly before a due time,
/// then spins to it. It returns how late it woke for each due time.
type Schedule = mpsc::UnboundedReceiver<Instant>;

/// How long before a due time the schedule thread stops sleeping and spins. Measured at
/// 1000/s (WHATSAT, one node, load ~1): with 20 µs requests left ~30 µs late at the median and
/// ~165 µs at p99, and the p99 latency was 310-360 µs; with 100 µs, ~16 µs and ~95 µs, and
/// 195-260 µs (a core kept busy wakes the other threads sooner too). At most this much CPU
/// per due time, and at most a tenth of a core (see `spawn_pacer`).
pub(crate) const PACER_SPIN: Duration = Duration::from_micros(100);

pub(crate) fn spawn_pacer(
    start: Instant,
    end: Instant,
    rate: f64,
    connections: usize,
) -> Result<(Vec<Schedule>, std::thread::JoinHandle<Histogram>)> {
    let (senders, receivers): (Vec<_>, Vec<_>) =
        (0..connections).map(|_| mpsc::unbounded_channel()).unzip();
    let mut pacer = Pacer::new(start.into_std(), end.into_std(), rate, 1, 0);
    let thread = std::thread::Builder::new()
        .name("bench-pacer".into())
        .spawn(move || {
            // Linux lets a sleep end up to the thread's timer slack late (50 µs by default).
            // Best effort: where it cannot be set, the figures carry more of the generator's
            // own lateness (shown as `sent late`).
            #[cfg(target_os = "linux")]
            let _ = nix::sys::prctl::set_timerslack(1);
            // A tenth of the time between due times at most, so a high rate (where the
            // thread would spin all the time) never takes more than a tenth of a core.
            let spin = PACER_SPIN.min(pacer.interval() / 10);
            let mut late = Histogram::new();
            let mut next = 0;
            while let Some(due) = pacer.next_due() {
                let now = std::time::Instant::now();
                if due > now + spin {
                    std::thread::sleep(due - now - spin);
                }
                while std::time::Instant::now() < due {
                    std::hint::spin_loop();
                }
                let now = std::time::Instant::now();
                while let Some(due) = pacer.take_due(now) {
                    late.record(now.saturating_duration_since(due).as_nanos() as u64);
                    // A connection that failed has dropped its receiver; the others go on.
                    let _ = senders[next % senders.len()].send(due.into());
                    next += 1;
                }
            }
            late
        })
        .context("cannot start the pacer thread")?;
    Ok((receivers, thread))
}

/// The length of the complete reply at the start of `buf` for a request of `kind`, and
/// whether it is a success, or `None` if more bytes are needed. An IAMAT reply is one
/// `AT` line; a WHATSAT reply is an `AT` line, JSON, and an empty line; a `? ` line answers
/// either and is an error.
pub fn frame(buf: &[u8], kind: Kind) -> Option<(usize, bool)> {
    // memchr's vectorised searches: a WHATSAT reply is kilobytes, and the generator's time
    // finding its end is counted in the reply's latency.
    let newline = memchr::memchr(b'\n', buf)?;
    let first = &buf[..newline];
    if first.starts_with(b"? ") || kind == Kind::Iamat {
        return Some((newline + 1, first.starts_with(b"AT ")));
    }
    // The first empty line: the first "\n\n" from the end of the AT line on.
    let end = memchr::memmem::find(&buf[newline..], b"\n\n")?;
    Some((newline + end + 2, first.starts_with(b"AT ")))
}

/// Reads replies from a stream, one at a time, in order.
pub(crate) struct Replies<R> {
    pub(crate) read: R,
    pub(crate) buf: Vec<u8>,
    pub(crate) start: usize,
}

impl<R: AsyncRead + Unpin> Replies<R> {
    pub(crate) fn new(read: R) -> Self {
        Replies {
            read,
            buf: Vec::with_capacity(64 * 1024),
            start: 0,
        }
    }

    /// The next reply: `Ok(true)` for a success, `Ok(false)` for an error reply.
    pub(crate) async fn next(&mut self, kind: Kind) -> std::io::Result<bool> {
        loop {
            if let Some((len, ok)) = frame(&self.buf[self.start..], kind) {
                self.start += len;
                return Ok(ok);
            }
            if self.start == self.buf.len() {
                self.buf.clear();
                self.start = 0;
            } else if self.start > 32 * 1024 {
                self.buf.drain(..self.start);
                self.start = 0;
            }
            self.buf.reserve(32 * 1024);
            if self.read.read_buf(&mut self.buf).await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
    }
}

/// A persistent, pipelined connection: a writer sends lines (up to `window` unanswered in
/// the closed loop, or when due in the open loop), a reader matches replies in order.
pub(crate) async fn persistent(
    dial: &Dial,
    mut generator: Generator,
    mut pacer: Option<Schedule>,
    end: Instant,
    window: usize,
    counters: &Counters,
) -> ConnOutcome {
    let mut outcome = ConnOutcome::default();
    let (read, mut write) = match dial.connect().await {
        Ok(halves) => halves,
        Err(_) => {
            outcome.fail(counters, 1);
            return outcome;
        }
    };
    let (tx, mut rx) = mpsc::unbounded_channel::<(Kind, Instant)>();
    let permits = Semaphore::new(window);
    let sent = AtomicU64::new(0);
    let received = AtomicU64::new(0);
    let closed_loop = pacer.is_none();
    let mut send_late = Histogram::new();

    let writer = async {
        let tx = tx;
        let mut buf = Vec::with_capacity(window * 96);
        let mut dues = Vec::new();
        loop {
            buf.clear();
            dues.clear();
            let mut lines = 0u64;
            match &mut pacer {
                None => {
                    let first = tokio::select! {
                        permit = permits.acquire() => permit,
                        _ = sleep_until(end) => break,
                    };
                    let Ok(first) = first else { break };
                    first.forget();
                    let mut n = 1;
                    while let Ok(permit) = permits.try_acquire() {
                        permit.forget();
                        n += 1;
                    }
                    if Instant::now() >= end {
                        break;
                    }
                    let now = Instant::now();
                    for _ in 0..n {
                        let kind = generator.next(&mut buf);
                        let _ = tx.send((kind, now));
                        lines += 1;
                    }
                }
                Some(schedule) => {
                    let Some(mut due) = schedule.recv().await else {
                        break;
                    };
                    loop {
                        let kind = generator.next(&mut buf);
                        let _ = tx.send((kind, due));
                        dues.push(due);
                        lines += 1;
                        match schedule.try_recv() {
                            Ok(next) => due = next,
                            Err(_) => break,
                        }
                    }
                }
            }
            let now = Instant::now();
            for due in &dues {
                send_late.record(now.saturating_duration_since(*due).as_nanos() as u64);
            }
            sent.fetch_add(lines, Ordering::Relaxed);
            // (A flush sends what a TLS stream still holds; nothing to do for TCP.)
            if write.write_all(&buf).await.is_err() || write.flush().await.is_err() {
                break;
            }
        }
    };
    let reader = async {
        let mut replies = Replies::new(read);
        while let Some((kind, due)) = rx.recv().await {
            let result = replies.next(kind).await;
            let nanos = Instant::now().saturating_duration_since(due).as_nanos() as u64;
            match result {
                Ok(ok) => {
                    received.fetch_add(1, Ordering::Relaxed);
                    outcome.record(counters, nanos, ok)
                }
                Err(_) => break,
            }
            if closed_loop {
                permits.add_permits(1);
            }
        }
    };
    let _ = timeout_at(end + DRAIN_GRACE, async { tokio::join!(writer, reader) }).await;
    outcome.send_late = send_late;
    drop(write);
    let unanswered = sent.load(Ordering::Relaxed) - received.load(Ordering::Relaxed);
    outcome.fail(counters, unanswered);
    outcome
}

/// A new connection per request (closed loop: one at a time; open loop: when due).
pub(crate) async fn per_request_loop(
    dial: &Dial,
    mut generator: Generator,
    mut pacer: Option<Schedule>,
    end: Instant,
    counters: &Counters,
) -> ConnOutcome {
    let mut outcome = ConnOutcome::default();
    let mut line = Vec::with_capacity(128);
    loop {
        let due = match &mut pacer {
            None => {
                let now = Instant::now();
                if now >= end {
                    break;
                }
                now
            }
            Some(schedule) => match schedule.recv().await {
                Some(due) => due,
                None => break,
            },
        };
        line.clear();
        let kind = generator.next(&mut line);
        if pacer.is_some() {
            let late = Instant::now().saturating_duration_since(due);
            outcome.send_late.record(late.as_nanos() as u64);
        }
        match timeout(EXCHANGE_TIMEOUT, exchange(dial, &line, kind)).await {
            Ok(Ok(ok)) => {
                let nanos = Instant::now().saturating_duration_since(due).as_nanos() as u64;
                outcome.record(counters, nanos, ok);
            }
            _ => outcome.fail(counters, 1),
        }
    }
    outcome
}

/// Connects, sends one line, reads its reply, closes.
pub(crate) async fn exchange(dial: &Dial, line: &[u8], kind: Kind) -> std::io::Result<bool> {
    let (read, mut write) = dial.connect().await?;
    write.write_all(line).await?;
    write.flush().await?;
    Replies::new(read).next(kind).await
}

/// Gives the first `seeded` client ids a location, so WHATSAT has something to ask about.
pub(crate) async fn seed(dial: &Dial, settings: &GenSettings) -> Result<()> {
    let (read, mut write) = dial.connect().await?;
    let mut rng = Rng::new(0x5eed);
    let mut replies = Replies::new(read);
    for chunk in (0..settings.seeded).collect::<Vec<_>>().chunks(100) {
        let mut buf = Vec::new();
        for id in chunk {
            iamat_line(&mut buf, &format!("{}{id}", settings.prefix), &mut rng);
        }
        write.write_all(&buf).await?;
        write.flush().await?;
        for _ in chunk {
            if !replies.next(Kind::Iamat).await? {
                bail!("the node refused a seeding IAMAT");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::echo::EchoServer;
    use crate::generator::Mix;

    #[test]
    fn frames_replies_by_kind() {
        let at = b"AT Alford +0.1 kiwi +1+2 3\nrest";
        assert_eq!(frame(at, Kind::Iamat), Some((27, true)));
        assert_eq!(frame(b"AT Alford", Kind::Iamat), None);
        assert_eq!(frame(b"? IAMAT x\n", Kind::Iamat), Some((10, false)));
        assert_eq!(
            frame(b"? WHATSAT x 1 1\n", Kind::Whatsat),
            Some((16, false))
        );
        let whatsat = b"AT A +0.1 k +1+2 3\n{\n \"results\": []\n}\n\nAT";
        assert_eq!(
            frame(whatsat, Kind::Whatsat),
            Some((whatsat.len() - 2, true))
        );
        assert_eq!(frame(&whatsat[..30], Kind::Whatsat), None);
        assert_eq!(frame(b"hello\n", Kind::Iamat), Some((6, false)));
    }

    #[tokio::test]
    async fn closed_loop_against_the_echo_server_has_no_errors() {
        let server = EchoServer::start().unwrap();
        let settings = GenSettings {
            mix: Mix::parse("iamat=50,whatsat=50").unwrap(),
            prefix: "t-".into(),
            ids: 100,
            seeded: 10,
            radius_km: 10.0,
            bound: 5,
        };
        let counters = Counters::default();
        let end = Instant::now() + Duration::from_millis(200);
        let outcome = persistent(
            &Dial::plain(server.addr),
            Generator::new(settings.clone(), 1),
            None,
            end,
            8,
            &counters,
        )
        .await;
        assert!(outcome.ops > 0);
        assert_eq!(outcome.errors, 0);
        let start = Instant::now();
        let end = start + Duration::from_millis(200);
        let (mut schedules, pacer) = spawn_pacer(start, end, 100.0, 2).unwrap();
        let outcome = per_request_loop(
            &Dial::plain(server.addr),
            Generator::new(settings, 2),
            schedules.pop(),
            end,
            &counters,
        )
        .await;
        assert_eq!((outcome.ops, outcome.errors), (10, 0));
        assert_eq!(outcome.send_late.count(), 10);
        // Every due time, both connections' (the other's receiver is dropped unread).
        assert_eq!(pacer.join().unwrap().count(), 20);
    }
}

//! `herdctl bench`: a load generator that measures a node's throughput and latency, the
//! herd's propagation delay, and the same generator against a bare echo server (the machine's
//! practical limit for this traffic).
//!
//! The generator runs on one thread (a current-thread tokio runtime) and reports that
//! thread's CPU use, so a reader can tell whether the generator or the node was the limit.
//!
//! - Closed loop (default): `--connections` persistent connections, each keeping up to
//!   `--window` lines in flight (pipelined); replies are matched to requests in order.
//! - Open loop (`--rate`): requests are due at fixed times spread over the connections;
//!   latency is measured from the due time, so a stall cannot hide (no coordinated omission).
//! - `--per-request`: a new TCP connection per request, like the classic test clients.
//! - `--propagation NAME`: a separate probe, ten updates per second with unique client ids,
//!   sent on its own connection to the target; once the target acknowledges one, the probe
//!   polls NAME with `WHATSAT <id> 1 1` back to back on one persistent connection until NAME
//!   knows the id. The figure is first positive reply received minus acknowledgement
//!   received: an upper bound whose resolution is one poll round trip (reported).
//!
//! A server whose herd-file entry has a `tls_port` (with `links.tls`) is spoken to over TLS
//! there, its certificate checked against the herd CA, as `herdctl send` does: the target,
//! and the server the probe polls. `--plain` keeps to the client port in plain text.

mod echo;
mod generator;
mod herd;
pub mod report;
mod stats;

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Semaphore};
use tokio::time::{sleep_until, timeout, timeout_at, Instant};
use tokio_rustls::TlsConnector;

use echo::EchoServer;
use generator::{iamat_line, GenSettings, Generator, Kind, Mix, Pacer, Rng};
use herd_config::config::{Environment, HerdConfig};
use herd_config::tls::{BoxRead, BoxWrite};
use report::{thread_cpu_time, PhaseFigures, Report};
use stats::Histogram;

/// `herdctl bench`: what to load, how, and what to measure.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// The server to load (a name from the herd file; it must be running).
    #[arg(long, value_name = "NAME", required_unless_present = "herd")]
    pub target: Option<String>,
    /// Start a lone node and the five-server herd of issue 26 (Bailey-Bona, Bailey-Campbell,
    /// Bona-Clark, Bona-Campbell, Campbell-Jaquez, Clark-Jaquez) on free loopback ports, load
    /// each the same way (the herd at Bailey) and compare: updates/s, the ratio, latency,
    /// node CPU per update, flood lines and duplicates per update. No herd file needed.
    #[arg(long, conflicts_with_all = ["target", "propagation", "baseline_echo"])]
    pub herd: bool,
    /// With --herd: the herd's `links.forwarding` (flood or tree; default: the herd file's
    /// default).
    #[arg(long, value_name = "flood|tree", requires = "herd")]
    pub forwarding: Option<String>,
    /// How long to load it, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    pub duration: f64,
    /// Connections (default: 50 in the closed loop, 8 with --rate).
    #[arg(long, value_name = "N")]
    pub connections: Option<usize>,
    /// Open loop: send this many requests per second in all, whatever the replies do
    /// (latency counts from when each request was due). Without it: closed loop.
    #[arg(long, value_name = "R")]
    pub rate: Option<f64>,
    /// Requests in flight per connection in the closed loop (pipelining).
    #[arg(long, value_name = "N", default_value_t = 32)]
    pub window: usize,
    /// A new TCP connection per request, like the classic test clients.
    #[arg(long)]
    pub per_request: bool,
    /// Distinct client ids the IAMATs cycle through (fewer ids: more updates per client,
    /// which a node coalesces; more: closer to a herd of many clients).
    #[arg(long, value_name = "N", default_value_t = 100_000)]
    pub ids: u64,
    /// Client ids are this text and a number. By default a new prefix per run, so every run
    /// reports new clients; give the same one to make runs update the same clients (to
    /// compare runs against one node at the same table size).
    #[arg(long, value_name = "TEXT")]
    pub id_prefix: Option<String>,
    /// The share of each command, e.g. `iamat=90,whatsat=10`.
    #[arg(long, value_name = "MIX", default_value = "iamat=100")]
    pub mix: String,
    /// WHATSAT radius in km.
    #[arg(long, value_name = "KM", default_value_t = 50.0)]
    pub radius: f64,
    /// WHATSAT bound (most places per reply).
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub bound: usize,
    /// Also measure how long an update acknowledged by the target takes to be visible at
    /// this server (a separate probe, ten updates per second).
    #[arg(long, value_name = "NAME")]
    pub propagation: Option<String>,
    /// First drive an in-process echo server the same way, and report the node's rate as a
    /// ratio to it.
    #[arg(long)]
    pub baseline_echo: bool,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Speak plain text on the client port even to a server with a `tls_port` (which is
    /// otherwise spoken to over TLS there, its certificate checked against the herd CA).
    #[arg(long, conflicts_with = "herd")]
    pub plain: bool,
}

/// How long after the end of the run outstanding replies may still arrive before they count
/// as errors.
const DRAIN_GRACE: Duration = Duration::from_secs(5);
/// How long one per-request exchange may take before it counts as an error.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(5);
/// Clients given a location before the run, for WHATSAT to ask about.
const SEEDED_CLIENTS: u64 = 1_000;
/// The time between propagation probes (10 per second: a negligible load next to the run's).
const PROBE_INTERVAL: Duration = Duration::from_millis(100);
/// A probe not visible at the other server after this long is lost.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections in open-loop mode when `--connections` is not given.
const OPEN_LOOP_CONNECTIONS: usize = 8;
/// Connections in closed-loop mode when `--connections` is not given.
const CLOSED_LOOP_CONNECTIONS: usize = 50;

/// Everything a phase needs, resolved from the arguments.
#[derive(Debug, Clone)]
struct Plan {
    duration: Duration,
    connections: usize,
    window: usize,
    rate: Option<f64>,
    per_request: bool,
    generator: GenSettings,
}

/// Where a connection goes, and whether it speaks TLS there.
#[derive(Clone)]
struct Dial {
    addr: SocketAddr,
    /// The herd CA's check of the server's certificate.
    tls: Option<TlsConnector>,
}

impl Dial {
    fn plain(addr: SocketAddr) -> Dial {
        Dial { addr, tls: None }
    }

    /// A connection's reading and writing halves, after the TLS handshake if any.
    async fn connect(&self) -> std::io::Result<(BoxRead, BoxWrite)> {
        let stream = TcpStream::connect(self.addr).await?;
        let _ = stream.set_nodelay(true);
        match &self.tls {
            None => {
                let (read, write) = stream.into_split();
                Ok((Box::new(read), Box::new(write)))
            }
            Some(connector) => {
                let stream = connector
                    .connect(herd_config::tls::server_name(), stream)
                    .await?;
                Ok(herd_config::tls::split(stream))
            }
        }
    }
}

/// Runs the benchmark and prints the report.
pub fn run(config_path: &Path, args: &BenchArgs) -> Result<ExitCode> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    // The probe always has ids of its own: it waits for the other server to learn one, so
    // an id from an earlier run would be seen at once.
    let prefix = format!("bench{}x{}-", std::process::id(), now.as_secs() % 1_000_000);
    let plan = plan(args, &prefix)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the generator's runtime")?;
    if args.herd {
        let report = herd::run(&runtime, &plan, args.forwarding.as_deref())?;
        if args.json {
            println!(
                "{}",
                serde_json::to_string(&report).expect("a report always serializes")
            );
        } else {
            print!("{}", report.to_table());
        }
        return Ok(if report.herd.ops == 0 || report.lone.ops == 0 {
            eprintln!("herdctl: bench: no request was answered");
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        });
    }
    let config = HerdConfig::load(config_path, &Environment::of_process())?;
    // Resolved once: the run measures the server, not the resolver.
    let dial = |name: &str| -> Result<Dial> {
        let server = config.server(name)?;
        let mut endpoint = config.endpoint(server);
        let tls = match (server.tls_port, &config.tls, args.plain) {
            (Some(port), Some(files), false) => {
                endpoint.port = port;
                Some(herd_config::tls::client_connector(files, name)?)
            }
            _ => None,
        };
        Ok(Dial {
            addr: endpoint.resolve_blocking()?[0],
            tls,
        })
    };
    let target_name = args.target.clone().unwrap_or_default();
    let target = dial(&target_name)?;
    let propagation = match &args.propagation {
        Some(name) => Some((name.clone(), dial(name)?)),
        None => None,
    };
    let (connections, mix) = (plan.connections, plan.generator.mix);

    let mut report = Report {
        target: target_name.clone(),
        tls: target.tls.is_some(),
        mode: if args.rate.is_some() {
            "open"
        } else {
            "closed"
        }
        .into(),
        per_request: args.per_request,
        connections,
        window: args.window,
        rate: args.rate,
        ids: args.ids,
        mix: mix.to_string(),
        duration_s: args.duration,
        ..Report::default()
    };

    let echo_figures = if args.baseline_echo {
        let server = EchoServer::start()?;
        let figures = measure(&runtime, "echo", Dial::plain(server.addr), &plan, None)?.0;
        drop(server);
        Some(figures)
    } else {
        None
    };

    // One connection first, so a target that cannot be reached (or whose certificate is not
    // the herd's) is one clear error rather than a run of failed connections.
    runtime.block_on(target.connect()).map_err(|e| {
        let how = match target.tls {
            Some(_) => {
                " over TLS (its tls_port; its certificate must come from links.tls.ca, or use \
                 --plain)"
            }
            None => "",
        };
        anyhow!(
            "cannot reach {target_name} at {}{how}: {e}; is it running? (herdctl status)",
            target.addr
        )
    })?;
    if plan.generator.seeded > 0 {
        runtime
            .block_on(seed(&target, &plan.generator))
            .with_context(|| format!("cannot seed {target_name} with clients for WHATSAT"))?;
    }
    let probe = propagation.map(|(name, to)| Probe {
        target: target.clone(),
        to,
        name,
        prefix: prefix.clone(),
    });
    let (figures, probe_figures) = measure(&runtime, &target_name, target, &plan, probe)?;
    report.fill_main(&figures);
    if let Some(echo) = &echo_figures {
        report.fill_echo(echo);
    }
    if let Some(p) = probe_figures {
        report.fill_propagation(&p.name, &p.latency, p.lost, &p.poll_rtt);
    }
    if args.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_table());
    }
    if figures.ops == 0 {
        eprintln!("herdctl: bench: no request was answered");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// The run's settings from the arguments, checked.
fn plan(args: &BenchArgs, prefix: &str) -> Result<Plan> {
    if !(args.duration > 0.0 && args.duration.is_finite()) {
        bail!("--duration must be a positive number of seconds");
    }
    if let Some(rate) = args.rate {
        if !(rate > 0.0 && rate.is_finite()) {
            bail!("--rate must be a positive number of requests per second");
        }
    }
    let connections = args.connections.unwrap_or(if args.rate.is_some() {
        OPEN_LOOP_CONNECTIONS
    } else {
        CLOSED_LOOP_CONNECTIONS
    });
    if connections == 0 || args.window == 0 {
        bail!("--connections and --window must be at least 1");
    }
    if args.ids == 0 {
        bail!("--ids must be at least 1");
    }
    let mix = Mix::parse(&args.mix)?;
    // Out of range, every WHATSAT would be answered `? ...`: say so now instead.
    if !(args.radius > 0.0 && args.radius <= herd_wire::protocol::MAX_RADIUS_KM) {
        bail!(
            "--radius must be more than 0 and at most {} km",
            herd_wire::protocol::MAX_RADIUS_KM
        );
    }
    if args.bound == 0 || args.bound > herd_wire::protocol::MAX_BOUND {
        bail!("--bound must be 1 to {}", herd_wire::protocol::MAX_BOUND);
    }
    let load_prefix = match &args.id_prefix {
        Some(text) if !text.is_empty() && !herd_wire::protocol::is_valid_client_id(text) => {
            bail!("--id-prefix {text:?} cannot start a client id: no spaces or control characters")
        }
        Some(text) => text.clone(),
        None => prefix.to_owned(),
    };
    if args.herd && mix.has_whatsat() {
        bail!("--herd measures updates: leave --mix out (iamat=100)");
    }
    Ok(Plan {
        duration: Duration::from_secs_f64(args.duration),
        connections,
        window: args.window,
        rate: args.rate,
        per_request: args.per_request,
        generator: GenSettings {
            mix,
            prefix: load_prefix,
            ids: args.ids,
            seeded: if mix.has_whatsat() {
                SEEDED_CLIENTS.min(args.ids)
            } else {
                0
            },
            radius_km: args.radius,
            bound: args.bound,
        },
    })
}

/// Where the propagation probe sends and where it looks.
struct Probe {
    target: Dial,
    to: Dial,
    name: String,
    prefix: String,
}

struct ProbeFigures {
    name: String,
    latency: Histogram,
    poll_rtt: Histogram,
    lost: u64,
}

/// Progress counters shared by the connections of a phase (for the progress bar only).
#[derive(Default)]
struct Counters {
    ops: AtomicU64,
    errors: AtomicU64,
}

/// What one connection measured.
#[derive(Default)]
struct ConnOutcome {
    latency: Histogram,
    /// Open loop: due time to write.
    send_late: Histogram,
    ops: u64,
    errors: u64,
}

impl ConnOutcome {
    fn record(&mut self, counters: &Counters, nanos: u64, ok: bool) {
        self.latency.record(nanos);
        self.ops += 1;
        counters.ops.fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.errors += 1;
            counters.errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn fail(&mut self, counters: &Counters, count: u64) {
        self.errors += count;
        counters.errors.fetch_add(count, Ordering::Relaxed);
    }
}

/// One phase: load the server `dial` reaches by `plan` (and run the probe alongside), with a progress bar.
fn measure(
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
const PACER_SPIN: Duration = Duration::from_micros(100);

fn spawn_pacer(
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
struct Replies<R> {
    read: R,
    buf: Vec<u8>,
    start: usize,
}

impl<R: AsyncRead + Unpin> Replies<R> {
    fn new(read: R) -> Self {
        Replies {
            read,
            buf: Vec::with_capacity(64 * 1024),
            start: 0,
        }
    }

    /// The next reply: `Ok(true)` for a success, `Ok(false)` for an error reply.
    async fn next(&mut self, kind: Kind) -> std::io::Result<bool> {
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
async fn persistent(
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
async fn per_request_loop(
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
async fn exchange(dial: &Dial, line: &[u8], kind: Kind) -> std::io::Result<bool> {
    let (read, mut write) = dial.connect().await?;
    write.write_all(line).await?;
    write.flush().await?;
    Replies::new(read).next(kind).await
}

/// Gives the first `seeded` client ids a location, so WHATSAT has something to ask about.
async fn seed(dial: &Dial, settings: &GenSettings) -> Result<()> {
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

/// The propagation probe (see the module documentation).
async fn run_probe(probe: Probe, start: Instant, end: Instant) -> Result<ProbeFigures> {
    let (target_read, mut target_write) = probe
        .target
        .connect()
        .await
        .context("probe: cannot connect to the target")?;
    let (other_read, mut other_write) = probe
        .to
        .connect()
        .await
        .with_context(|| format!("probe: cannot connect to {}", probe.name))?;
    let mut target_replies = Replies::new(target_read);
    let mut other_replies = Replies::new(other_read);
    let mut figures = ProbeFigures {
        name: probe.name,
        latency: Histogram::new(),
        poll_rtt: Histogram::new(),
        lost: 0,
    };
    let mut rng = Rng::new(0x9a0be);
    let mut next = start + PROBE_INTERVAL / 2;
    let mut count = 0u64;
    while next < end {
        sleep_until(next).await;
        next += PROBE_INTERVAL;
        let id = format!("{}probe{count}", probe.prefix);
        count += 1;
        let mut line = Vec::new();
        iamat_line(&mut line, &id, &mut rng);
        target_write.write_all(&line).await?;
        target_write.flush().await?;
        if !target_replies.next(Kind::Iamat).await? {
            figures.lost += 1;
            continue;
        }
        let acked = Instant::now();
        let poll = format!("WHATSAT {id} 1 1\n");
        loop {
            let sent = Instant::now();
            other_write.write_all(poll.as_bytes()).await?;
            other_write.flush().await?;
            let visible = other_replies.next(Kind::Whatsat).await?;
            let now = Instant::now();
            figures.poll_rtt.record((now - sent).as_nanos() as u64);
            if visible {
                figures.latency.record((now - acked).as_nanos() as u64);
                break;
            }
            if now - acked > PROBE_TIMEOUT {
                figures.lost += 1;
                break;
            }
        }
    }
    Ok(figures)
}

#[cfg(test)]
mod tests {
    use super::*;

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

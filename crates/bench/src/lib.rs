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
mod load;
mod probe;
pub mod report;
mod stats;

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use echo::EchoServer;
use generator::{GenSettings, Mix};
use herd_config::config::{Environment, HerdConfig};
use herd_config::tls::{BoxRead, BoxWrite};
use load::{measure, seed};
use probe::Probe;
use report::Report;

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
    /// With --herd: run the whole comparison this many times (fresh nodes each round, the
    /// lone node and the herd in turn) and report each round and the ratio's median and
    /// range: on a shared machine one round's ratio can be off by a tenth.
    #[arg(long, value_name = "N", default_value_t = 1, requires = "herd",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub rounds: u32,
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

/// `--herd`: the comparison, once or `--rounds` times, printed.
fn run_herd(runtime: &tokio::runtime::Runtime, plan: &Plan, args: &BenchArgs) -> Result<ExitCode> {
    let forwarding = args.forwarding.as_deref();
    let mut reports = Vec::new();
    for round in 1..=args.rounds {
        let report = herd::run(runtime, plan, forwarding)?;
        if args.rounds > 1 && !args.json {
            println!("{}", report.round_line(round));
        }
        reports.push(report);
    }
    let answered = reports.iter().all(|r| r.herd.ops > 0 && r.lone.ops > 0);
    if let [one] = reports.as_slice() {
        match args.json {
            true => println!(
                "{}",
                serde_json::to_string(one).expect("a report serializes")
            ),
            false => print!("{}", one.to_table()),
        }
    } else {
        let series = herd::Series::of(reports);
        match args.json {
            true => println!(
                "{}",
                serde_json::to_string(&series).expect("a series serializes")
            ),
            false => print!("{}", series.summary()),
        }
    }
    Ok(if answered {
        ExitCode::SUCCESS
    } else {
        eprintln!("herdctl: bench: no request was answered");
        ExitCode::FAILURE
    })
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
        return run_herd(&runtime, &plan, args);
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

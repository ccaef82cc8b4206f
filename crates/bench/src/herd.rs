//! `herdctl bench --herd`: the herd's own throughput next to one node's, in one run.
//!
//! The bench starts two herds of its own (`herdctl run` children of this binary, on free
//! loopback ports, in a private temporary folder removed afterwards): a lone node, and the
//! five-server graph of issue 26 (Bailey-Bona, Bailey-Campbell, Bona-Clark, Bona-Campbell,
//! Campbell-Jaquez, Clark-Jaquez). It loads the lone node, then Bailey, the same way (the
//! closed loop by default), and reports for each the updates acknowledged per second, the
//! latencies, every node's CPU time per update (from `/proc`), and for the herd how many
//! flood lines crossed its links per update acknowledged and how many of them were
//! duplicates (received stale). The ratio herd / lone node is the figure to compare across
//! runs: both phases share whatever else the machine is doing at the time.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use super::report::{micros, PhaseFigures};
use crate::load::measure;
use crate::{Dial, Plan};
use herd_config::config::{Environment, HerdConfig};

/// The five-server graph of issue 26, each link named once; the load goes to its first server.
pub const GRAPH: &[(&str, &[&str])] = &[
    ("Bailey", &["Bona", "Campbell"]),
    ("Bona", &["Clark", "Campbell"]),
    ("Campbell", &["Jaquez"]),
    ("Clark", &["Jaquez"]),
    ("Jaquez", &[]),
];
/// The lone node's name.
const LONE: &str = "Solo";
/// How long the herd's nodes may take to listen and link up.
const START_DEADLINE: Duration = Duration::from_secs(60);
/// How long the bench waits after the load for the last floods to settle before it reads
/// the counters.
const SETTLE: Duration = Duration::from_secs(10);

/// What `--herd` measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct HerdReport {
    pub lone: PhaseReport,
    pub herd: PhaseReport,
    /// herd.ops_per_s / lone.ops_per_s.
    pub ratio: f64,
    /// `links.forwarding` the herd ran with.
    pub forwarding: String,
    /// Flood lines written over the herd's links per update acknowledged at Bailey.
    pub flood_lines_per_update: f64,
    /// Of those, the ones received stale (already known): duplicates, per update.
    pub duplicates_per_update: f64,
    pub flood_lines: u64,
    pub duplicates: u64,
    /// Updates flooded that a server received new (should be 4 per update: every server
    /// but Bailey learns it once).
    pub new_receptions: u64,
}

/// One phase's figures.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PhaseReport {
    pub ops: u64,
    pub ops_per_s: f64,
    pub errors: u64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    /// CPU time of every node of the phase (user + system) per update acknowledged, in µs.
    pub node_cpu_us_per_update: f64,
    /// The same per node.
    pub cpu_us_per_update_by_node: BTreeMap<String, f64>,
    pub generator_cpu: f64,
    /// Wire log lines the nodes dropped during the phase because their log writers fell
    /// behind (every wire line is meant to be logged: a phase that drops some did less
    /// work than its rate says).
    pub log_lines_dropped: u64,
}

impl PhaseReport {
    fn new(figures: &PhaseFigures, cpu: &BTreeMap<String, Duration>, dropped: u64) -> PhaseReport {
        let per_update = |d: &Duration| {
            if figures.ops == 0 {
                0.0
            } else {
                round1(d.as_secs_f64() * 1e6 / figures.ops as f64)
            }
        };
        let total: Duration = cpu.values().sum();
        PhaseReport {
            ops: figures.ops,
            ops_per_s: figures.ops_per_s(),
            errors: figures.errors,
            p50_us: micros(figures.latency.quantile(0.5)),
            p99_us: micros(figures.latency.quantile(0.99)),
            p999_us: micros(figures.latency.quantile(0.999)),
            node_cpu_us_per_update: per_update(&total),
            cpu_us_per_update_by_node: cpu
                .iter()
                .map(|(n, d)| (n.clone(), per_update(d)))
                .collect(),
            generator_cpu: (figures.cpu * 100.0).round() / 100.0,
            log_lines_dropped: dropped,
        }
    }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

impl HerdReport {
    pub fn to_table(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<22} {:>12} {:>8} {:>10} {:>10} {:>10} {:>16}",
            "", "updates/s", "errors", "p50 µs", "p99 µs", "p99.9 µs", "node CPU µs/upd"
        );
        for (label, phase) in [("lone node", &self.lone), ("five-server herd", &self.herd)] {
            let _ = writeln!(
                out,
                "{:<22} {:>12.1} {:>8} {:>10.1} {:>10.1} {:>10.1} {:>16.1}",
                label,
                phase.ops_per_s,
                phase.errors,
                phase.p50_us,
                phase.p99_us,
                phase.p999_us,
                phase.node_cpu_us_per_update
            );
        }
        let _ = writeln!(out, "herd / lone node  {:.3}x", self.ratio);
        let _ = writeln!(
            out,
            "forwarding {}: {:.2} flood lines per update ({} lines), {:.2} duplicates per \
             update ({} received stale), {} received new",
            self.forwarding,
            self.flood_lines_per_update,
            self.flood_lines,
            self.duplicates_per_update,
            self.duplicates,
            self.new_receptions
        );
        let by_node: Vec<String> = self
            .herd
            .cpu_us_per_update_by_node
            .iter()
            .map(|(n, us)| format!("{n} {us:.1}"))
            .collect();
        let _ = writeln!(
            out,
            "herd CPU µs per update by node: {}",
            by_node.join(", ")
        );
        let _ = writeln!(
            out,
            "generator CPU {:.2} cores (lone), {:.2} (herd)",
            self.lone.generator_cpu, self.herd.generator_cpu
        );
        let _ = writeln!(
            out,
            "wire log lines dropped (log writer behind): {} (lone), {} (herd)",
            self.lone.log_lines_dropped, self.herd.log_lines_dropped
        );
        out
    }
}

impl HerdReport {
    /// One round of a series (`--rounds`), on a line.
    pub fn round_line(&self, round: u32) -> String {
        format!(
            "round {round}: lone {:.0}/s, herd {:.0}/s, ratio {:.3}x, herd p99 {:.1} ms, \
             herd CPU {:.1} µs/update, {:.2} flood lines/update, log lines dropped {}+{}",
            self.lone.ops_per_s,
            self.herd.ops_per_s,
            self.ratio,
            self.herd.p99_us / 1000.0,
            self.herd.node_cpu_us_per_update,
            self.flood_lines_per_update,
            self.lone.log_lines_dropped,
            self.herd.log_lines_dropped,
        )
    }
}

/// `--rounds N`: every round's report, and the spread of what compares across them.
#[derive(Debug, Clone, Serialize)]
pub struct Series {
    pub rounds: Vec<HerdReport>,
    pub ratio: Spread,
    pub herd_p99_us: Spread,
    pub herd_cpu_us_per_update: Spread,
}

/// The median, least and greatest of one figure over the rounds.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    fn of(values: impl Iterator<Item = f64>) -> Spread {
        let mut values: Vec<f64> = values.collect();
        values.sort_by(f64::total_cmp);
        let n = values.len();
        let median = match n {
            0 => 0.0,
            _ if n % 2 == 1 => values[n / 2],
            _ => (values[n / 2 - 1] + values[n / 2]) / 2.0,
        };
        Spread {
            median,
            min: values.first().copied().unwrap_or(0.0),
            max: values.last().copied().unwrap_or(0.0),
        }
    }
}

impl Series {
    pub fn of(rounds: Vec<HerdReport>) -> Series {
        Series {
            ratio: Spread::of(rounds.iter().map(|r| r.ratio)),
            herd_p99_us: Spread::of(rounds.iter().map(|r| r.herd.p99_us)),
            herd_cpu_us_per_update: Spread::of(
                rounds.iter().map(|r| r.herd.node_cpu_us_per_update),
            ),
            rounds,
        }
    }

    /// The lines printed after the rounds' own.
    pub fn summary(&self) -> String {
        let Series {
            rounds,
            ratio,
            herd_p99_us: p99,
            herd_cpu_us_per_update: cpu,
        } = self;
        format!(
            "herd / lone node over {} rounds: median {:.3}x, range {:.3}x-{:.3}x\n\
             herd p99: median {:.1} ms, range {:.1}-{:.1} ms\n\
             herd CPU µs per update: median {:.1}, range {:.1}-{:.1}\n",
            rounds.len(),
            ratio.median,
            ratio.min,
            ratio.max,
            p99.median / 1000.0,
            p99.min / 1000.0,
            p99.max / 1000.0,
            cpu.median,
            cpu.min,
            cpu.max,
        )
    }
}

/// Runs both phases with `plan` and returns the figures.
pub(super) fn run(
    runtime: &tokio::runtime::Runtime,
    plan: &Plan,
    forwarding: Option<&str>,
) -> Result<HerdReport> {
    let folder = Folder::new()?;
    let herd_file = folder.path.join("herd.yaml");
    let lone_file = folder.path.join("lone.yaml");
    let ports = free_ports(2 * (GRAPH.len() + 1))?;
    // The load is updates only: an empty places file spares each node the GeoNames index
    // (memory, and seconds of start-up).
    std::fs::write(folder.path.join("pois.csv"), "name,lat,lon\n")
        .context("cannot write the bench's places file")?;
    std::fs::write(&herd_file, herd_yaml(GRAPH, &ports[2..], forwarding))
        .context("cannot write the bench's herd file")?;
    std::fs::write(
        &lone_file,
        herd_yaml(&[(LONE, &[])], &ports[..2], forwarding),
    )
    .context("cannot write the bench's herd file")?;
    let herd_config = HerdConfig::load(&herd_file, &Environment::of_process())?;
    let lone_config = HerdConfig::load(&lone_file, &Environment::of_process())?;
    // Made once here, before the nodes race to make it.
    let token = herd_ops::admin::token(&herd_config);

    let lone = Nodes::start(&lone_file, &lone_config)?;
    lone.wait_linked()?;
    let (figures, cpu, dropped) = lone.measure(runtime, LONE, plan)?;
    let lone_report = PhaseReport::new(&figures, &cpu, dropped);
    drop(lone);

    let herd = Nodes::start(&herd_file, &herd_config)?;
    herd.wait_linked()?;
    let before = herd.flood_counts(runtime, &herd_config, token.as_deref())?;
    let (figures, cpu, dropped) = herd.measure(runtime, GRAPH[0].0, plan)?;
    let herd_report = PhaseReport::new(&figures, &cpu, dropped);
    let after = herd.settled_counts(runtime, &herd_config, token.as_deref(), &before)?;
    drop(herd);

    let lines = after.sent - before.sent;
    let duplicates = after.stale - before.stale;
    let per_update = |n: f64| {
        if figures.ops == 0 {
            0.0
        } else {
            ((n / figures.ops as f64) * 100.0).round() / 100.0
        }
    };
    Ok(HerdReport {
        ratio: if lone_report.ops_per_s > 0.0 {
            round3(herd_report.ops_per_s / lone_report.ops_per_s)
        } else {
            0.0
        },
        forwarding: forwarding.unwrap_or("flood").to_owned(),
        flood_lines_per_update: per_update(lines),
        duplicates_per_update: per_update(duplicates),
        flood_lines: lines as u64,
        duplicates: duplicates as u64,
        new_receptions: (after.new - before.new) as u64,
        lone: lone_report,
        herd: herd_report,
    })
}

/// A herd file for `graph` on `ports` (client and admin port per server, in order): every
/// wire line logged, files capped so a long run cannot fill the disk; no places index.
fn herd_yaml(graph: &[(&str, &[&str])], ports: &[u16], forwarding: Option<&str>) -> String {
    let mut text = String::from("servers:\n");
    for (i, (name, peers)) in graph.iter().enumerate() {
        text += &format!(
            "  {name}: {{ port: {}, admin_port: {}, peers: [{}] }}\n",
            ports[2 * i],
            ports[2 * i + 1],
            peers.join(", ")
        );
    }
    text += "host: 127.0.0.1\nlog_dir: logs\ndata_dir: data\nrun_dir: run\n\
             durability: relaxed\nlogs: { rotation: never, max_file_bytes: 67108864, keep: 1 }\n\
             reconnect: { initial_ms: 50, max_ms: 500 }\n\
             places: { provider: offline, file: pois.csv }\n";
    if let Some(forwarding) = forwarding {
        text += &format!("links: {{ forwarding: {forwarding} }}\n");
    }
    text
}

/// `n` distinct free loopback ports (all held at once while picked, so none repeats).
fn free_ports(n: usize) -> Result<Vec<u16>> {
    let held: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<_>>()
        .context("cannot find free loopback ports")?;
    held.iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect::<std::io::Result<_>>()
        .map_err(Into::into)
}

/// The bench's private temporary folder, removed when dropped.
struct Folder {
    path: PathBuf,
}

impl Folder {
    fn new() -> Result<Folder> {
        let path = std::env::temp_dir().join(format!(
            "herdctl-bench-{}-{}",
            std::process::id(),
            Instant::now().elapsed().subsec_nanos()
        ));
        herd_os::private::folder(&path, "the bench's folder")?;
        Ok(Folder { path })
    }
}

impl Drop for Folder {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Makes the kernel stop the child with SIGTERM when this process dies, however it dies: a
/// bench killed with -9 (or by the OOM killer) must not leave five nodes loading the machine.
/// The bench starts its nodes from the main thread, which lives as long as the process (the
/// signal follows the thread that forked).
fn ends_with_this_process(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    let parent = nix::unistd::getpid();
    // SAFETY: between fork and exec the closure makes only async-signal-safe system calls
    // (prctl, getppid) and allocates nothing.
    unsafe {
        command.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)?;
            // The parent may have died before the prctl: then nobody would send it.
            if nix::unistd::getppid() != parent {
                return Err(std::io::Error::other(
                    "the bench exited while starting its nodes",
                ));
            }
            Ok(())
        });
    }
}

/// The node processes of one herd, killed when dropped.
struct Nodes {
    children: Vec<(String, Child, SocketAddr)>,
}

/// Flood counters summed over a herd's links.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct FloodCounts {
    sent: f64,
    new: f64,
    stale: f64,
}

impl Nodes {
    fn start(file: &Path, config: &HerdConfig) -> Result<Nodes> {
        // HERDCTL_BENCH_NODE runs the nodes from another build (to compare builds with the
        // same generator); by default, this binary.
        let exe = match std::env::var_os("HERDCTL_BENCH_NODE") {
            Some(path) => PathBuf::from(path),
            None => std::env::current_exe().context("cannot find this herdctl binary")?,
        };
        let mut nodes = Nodes {
            children: Vec::new(),
        };
        for (name, server) in &config.servers {
            let mut command = Command::new(&exe);
            command
                .arg("--config")
                .arg(file)
                .args(["run", name])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            ends_with_this_process(&mut command);
            let child = command
                .spawn()
                .with_context(|| format!("cannot start {name}"))?;
            let addr = config.endpoint(server).resolve_blocking()?[0];
            nodes.children.push((name.clone(), child, addr));
        }
        Ok(nodes)
    }

    /// Waits until every node answers and has all its links up.
    fn wait_linked(&self) -> Result<()> {
        let deadline = Instant::now() + START_DEADLINE;
        for (name, _, addr) in &self.children {
            loop {
                if let Some(status) = herd_status(*addr) {
                    let up = status["links_up"].as_u64();
                    if up.is_some() && up == status["links_total"].as_u64() {
                        break;
                    }
                }
                if Instant::now() > deadline {
                    bail!("{name} did not answer with every link up within {START_DEADLINE:?}");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(())
    }

    fn addr(&self, name: &str) -> SocketAddr {
        self.children
            .iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, _, a)| *a)
            .expect("a node of the herd")
    }

    /// Loads `target` by `plan`; returns the figures, each node's CPU time meanwhile and
    /// the wire log lines the nodes dropped.
    fn measure(
        &self,
        runtime: &tokio::runtime::Runtime,
        target: &str,
        plan: &Plan,
    ) -> Result<(PhaseFigures, BTreeMap<String, Duration>, u64)> {
        let dropped_before = self.log_dropped()?;
        let before = self.cpu_times();
        let (figures, _) = measure(runtime, target, Dial::plain(self.addr(target)), plan, None)?;
        let after = self.cpu_times();
        let cpu = after
            .into_iter()
            .map(|(name, t)| {
                let spent = t.saturating_sub(before.get(&name).copied().unwrap_or_default());
                (name, spent)
            })
            .collect();
        let dropped = self.log_dropped()?.saturating_sub(dropped_before);
        Ok((figures, cpu, dropped))
    }

    /// Wire log lines dropped so far, summed over the nodes (from `HERD STATUS`).
    fn log_dropped(&self) -> Result<u64> {
        let mut dropped = 0;
        for (name, _, addr) in &self.children {
            let status = herd_status(*addr).with_context(|| format!("{name} did not answer"))?;
            dropped += status["log_dropped"]
                .as_u64()
                .with_context(|| format!("{name}'s status has no log_dropped"))?;
        }
        Ok(dropped)
    }

    fn cpu_times(&self) -> BTreeMap<String, Duration> {
        self.children
            .iter()
            .map(|(name, child, _)| (name.clone(), process_cpu_time(child.id())))
            .collect()
    }

    fn flood_counts(
        &self,
        runtime: &tokio::runtime::Runtime,
        config: &HerdConfig,
        token: Option<&str>,
    ) -> Result<FloodCounts> {
        let mut counts = FloodCounts::default();
        for server in config.servers.values() {
            let endpoint = config.local_admin_endpoint(server);
            let response = runtime
                .block_on(herd_ops::admin::get(
                    &endpoint,
                    "/metrics",
                    token,
                    Duration::from_secs(10),
                ))
                .filter(|r| r.status == 200)
                .with_context(|| format!("{} did not serve /metrics", server.name))?;
            let page = herd_ops::top::samples::Page::new(&response.body);
            counts.sent += page.sum("herd_floods_sent_total", &[]);
            counts.new += page.sum("herd_floods_received_total", &[("outcome", "new")]);
            counts.stale += page.sum("herd_floods_received_total", &[("outcome", "stale")]);
        }
        Ok(counts)
    }

    /// The counters once the floods of the run are over: read until two looks agree and
    /// what was sent was received (or the settle time is over).
    fn settled_counts(
        &self,
        runtime: &tokio::runtime::Runtime,
        config: &HerdConfig,
        token: Option<&str>,
        before: &FloodCounts,
    ) -> Result<FloodCounts> {
        let deadline = Instant::now() + SETTLE;
        let mut last = self.flood_counts(runtime, config, token)?;
        loop {
            std::thread::sleep(Duration::from_millis(200));
            let now = self.flood_counts(runtime, config, token)?;
            let received = (now.new + now.stale) - (before.new + before.stale);
            if (now == last && received >= now.sent - before.sent) || Instant::now() > deadline {
                return Ok(now);
            }
            last = now;
        }
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        for (_, child, _) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `HERD STATUS` from the node at `addr`, as JSON; `None` when it does not answer (yet).
fn herd_status(addr: SocketAddr) -> Option<serde_json::Value> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream.write_all(b"HERD STATUS\n").ok()?;
    stream.shutdown(std::net::Shutdown::Write).ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let json = text.trim().splitn(3, ' ').nth(2)?;
    serde_json::from_str(json).ok()
}

/// A process's CPU time so far (user + system), from `/proc/PID/stat`; zero when gone.
pub fn process_cpu_time(pid: u32) -> Duration {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return Duration::ZERO;
    };
    super::report::cpu_time_of_stat(&stat)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_graph_has_the_six_links_of_issue_26() {
        let links: usize = GRAPH.iter().map(|(_, p)| p.len()).sum();
        assert_eq!(links, 6);
        let text = herd_yaml(GRAPH, &(1000..1010).collect::<Vec<_>>(), None);
        let config = HerdConfig::parse(
            &text,
            Path::new("/tmp/x/herd.yaml"),
            &Environment::default(),
        )
        .unwrap();
        assert_eq!(config.servers.len(), 5);
        assert_eq!(config.servers["Bailey"].neighbours.len(), 2);
        assert_eq!(config.servers["Campbell"].neighbours.len(), 3);
    }

    #[test]
    fn a_spread_is_the_median_and_the_range_whatever_the_order() {
        let spread = |v: &[f64]| Spread::of(v.iter().copied());
        let odd = spread(&[0.30, 0.25, 0.27]);
        assert_eq!((odd.median, odd.min, odd.max), (0.27, 0.25, 0.30));
        let even = spread(&[4.0, 1.0, 3.0, 2.0]);
        assert_eq!((even.median, even.min, even.max), (2.5, 1.0, 4.0));
        assert_eq!(spread(&[7.0]).median, 7.0);
    }

    #[test]
    fn free_ports_are_distinct() {
        let mut ports = free_ports(12).unwrap();
        ports.sort();
        ports.dedup();
        assert_eq!(ports.len(), 12);
    }
}

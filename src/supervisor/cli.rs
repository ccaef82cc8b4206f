//! The operator's side: `herdctl start/stop/restart/kill/status`. Each starts the supervisor
//! when it is needed (adopting nodes that are already running), asks it over the control
//! socket, and polls with deadlines until what was asked is true.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde::Serialize;
use tokio::net::UnixStream;

use super::control::{call, NodeReport, Request, Response};
use super::machine::State;
use super::{node_stderr_path, process, RunPaths};
use crate::commands::node_lock_path;
use crate::config::HerdConfig;
use crate::pidlock::PidLock;
use crate::protocol::NodeFigures;

/// How long `start` waits for every node to answer.
const START_DEADLINE: Duration = Duration::from_secs(60);
/// How long a new supervisor has to open its socket.
const DAEMON_DEADLINE: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(50);

/// A connection-per-request client of the supervisor, with the runtime it needs.
struct Supervisor {
    runtime: tokio::runtime::Runtime,
    paths: RunPaths,
    config: HerdConfig,
}

impl Supervisor {
    fn new(config: HerdConfig) -> Result<Supervisor> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        Ok(Supervisor {
            runtime,
            paths: RunPaths::new(&config),
            config,
        })
    }

    /// The live supervisor's pid, from its lock.
    fn pid(&self) -> Option<u32> {
        PidLock::holder(&self.paths.lock).ok().flatten()
    }

    fn call(&self, request: &Request) -> Result<Vec<NodeReport>> {
        self.runtime.block_on(async {
            let stream = UnixStream::connect(&self.paths.socket)
                .await
                .with_context(|| {
                    format!(
                        "cannot reach the supervisor at {}",
                        self.paths.socket.display()
                    )
                })?;
            match call(stream, request).await? {
                Response::Ok { nodes } => Ok(nodes),
                Response::Error { message } => bail!("{message}"),
            }
        })
    }

    /// Makes sure a supervisor is running and answering; starts one if not.
    fn ensure_running(&self) -> Result<()> {
        let mut spawned = match self.pid() {
            Some(_) => None,
            None => Some(self.spawn_daemon()?),
        };
        let start = Instant::now();
        loop {
            if self.call(&Request::Status).is_ok() {
                return Ok(());
            }
            if let Some(child) = spawned.as_mut() {
                // Exiting at once is fine only when another supervisor won the race.
                if let Ok(Some(status)) = child.try_wait() {
                    if self.pid().is_none() {
                        bail!(
                            "the supervisor exited at once ({status}); its log {} ends with:\n{}",
                            self.paths.log.display(),
                            last_lines(&self.paths.log, 5)
                        );
                    }
                    spawned = None;
                }
            }
            if start.elapsed() > DAEMON_DEADLINE {
                bail!(
                    "the supervisor did not answer within {}s; its log {} ends with:\n{}",
                    DAEMON_DEADLINE.as_secs(),
                    self.paths.log.display(),
                    last_lines(&self.paths.log, 5)
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// Starts `herdctl supervise` detached: its own session, no terminal, output to its log.
    fn spawn_daemon(&self) -> Result<std::process::Child> {
        let exe = std::env::current_exe().context("cannot find the herdctl executable")?;
        if let Some(folder) = self.paths.log.parent() {
            std::fs::create_dir_all(folder)
                .with_context(|| format!("cannot create {}", folder.display()))?;
        }
        std::fs::create_dir_all(&self.config.run_dir)
            .with_context(|| format!("cannot create {}", self.config.run_dir.display()))?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.paths.log)
            .with_context(|| format!("cannot open {}", self.paths.log.display()))?;
        let mut command = std::process::Command::new(exe);
        command
            .arg("--config")
            .arg(&self.config.path)
            .arg("supervise")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // SAFETY: setsid is async-signal-safe and touches no memory of this process.
        unsafe {
            command.pre_exec(|| nix::unistd::setsid().map(|_| ()).map_err(Into::into));
        }
        command.spawn().context("cannot start the supervisor")
    }
}

/// `all`, nothing, or a list of known names -> the names to act on (empty = every server).
fn resolve_targets(config: &HerdConfig, names: &[String]) -> Result<Vec<String>> {
    if names.is_empty() || names.iter().any(|n| n == "all") {
        if names.len() > 1 {
            bail!("give either `all` or server names, not both");
        }
        return Ok(Vec::new());
    }
    for name in names {
        config.server(name)?;
    }
    Ok(names.to_vec())
}

fn selected<'a>(reports: &'a [NodeReport], targets: &[String]) -> Vec<&'a NodeReport> {
    reports
        .iter()
        .filter(|r| targets.is_empty() || targets.contains(&r.name))
        .collect()
}

/// `herdctl start [all|NAME...]`.
pub fn start(config_path: &Path, names: &[String]) -> Result<ExitCode> {
    let config = HerdConfig::load(config_path)?;
    for warning in &config.warnings {
        eprintln!("herdctl: warning: {warning}");
    }
    let targets = resolve_targets(&config, names)?;
    let supervisor = Supervisor::new(config)?;
    supervisor.ensure_running()?;
    start_and_wait(&supervisor, &targets)
}

fn start_and_wait(supervisor: &Supervisor, targets: &[String]) -> Result<ExitCode> {
    let began = Instant::now();
    let mut reports = supervisor.call(&Request::Start {
        names: targets.to_vec(),
    })?;
    let progress = Progress::new(selected(&reports, targets).iter().map(|r| r.name.as_str()));
    let mut outcome: BTreeMap<String, std::result::Result<String, String>> = BTreeMap::new();
    loop {
        for report in selected(&reports, targets) {
            if outcome.contains_key(&report.name) {
                continue;
            }
            if report.state == State::Running {
                let pid = report.pid.map_or("?".into(), |p| p.to_string());
                let done = format!("running (pid {pid}, port {})", report.port);
                progress.finish(&report.name, &done);
                outcome.insert(report.name.clone(), Ok(done));
            } else if report.crashes_this_start > 0 {
                let why = failure_reason(&supervisor.config, report);
                progress.finish(&report.name, "failed");
                outcome.insert(report.name.clone(), Err(why));
            } else {
                progress.update(&report.name, report.state.as_str());
            }
        }
        if outcome.len() == selected(&reports, targets).len() {
            break;
        }
        if began.elapsed() > START_DEADLINE {
            for report in selected(&reports, targets) {
                outcome.entry(report.name.clone()).or_insert_with(|| {
                    Err(format!(
                        "still {} after {}s",
                        report.state.as_str(),
                        START_DEADLINE.as_secs()
                    ))
                });
            }
            break;
        }
        std::thread::sleep(POLL);
        reports = supervisor.call(&Request::Status)?;
    }
    progress.clear();

    let failed: Vec<String> = outcome
        .iter()
        .filter(|(_, o)| o.is_err())
        .map(|(n, _)| n.clone())
        .collect();
    if !failed.is_empty() {
        // A node that cannot start now would only flap: leave it stopped, reason on record.
        supervisor.call(&Request::Stop {
            names: failed.clone(),
        })?;
    }
    for (name, result) in &outcome {
        match result {
            Ok(done) => println!("{name:<12} {done}"),
            Err(why) => eprintln!("herdctl: error: {name} failed to start: {why}"),
        }
    }
    if failed.is_empty() {
        let started: Vec<String> = outcome.keys().cloned().collect();
        if !wait_for_links(supervisor, &started) {
            eprintln!(
                "herdctl: note: some peer links are still forming; `herdctl status` shows them"
            );
        }
        println!(
            "{} started in {:.1}s",
            plural(outcome.len(), "server"),
            began.elapsed().as_secs_f64()
        );
        Ok(ExitCode::SUCCESS)
    } else {
        Ok(ExitCode::FAILURE)
    }
}

/// How long `start` waits for peer links once its nodes answer.
const LINKS_DEADLINE: Duration = Duration::from_secs(5);
/// Each poll is a `HERD STATUS` to every running node, two lines in each node's log: poll
/// gently (links form within a few hundred milliseconds).
const LINKS_POLL: Duration = Duration::from_millis(200);

/// Waits until every node in `names` has its links up to each neighbour that is running, so
/// an update sent right after `start` floods at once. Best effort: false if the deadline
/// passed first (a link can legitimately stay down, e.g. a neighbour refusing the secret).
fn wait_for_links(supervisor: &Supervisor, names: &[String]) -> bool {
    let began = Instant::now();
    while began.elapsed() < LINKS_DEADLINE {
        let Ok(reports) = supervisor.call(&Request::Status) else {
            return false;
        };
        let figures = supervisor
            .runtime
            .block_on(query_figures(&supervisor.config, &reports));
        let running = |n: &String| figures.contains_key(n);
        let linked = names.iter().all(|name| {
            let neighbours = &supervisor.config.servers[name].neighbours;
            let expected = neighbours.iter().filter(|n| running(n)).count();
            figures.get(name).is_some_and(|f| f.links_up >= expected)
        });
        if linked {
            return true;
        }
        std::thread::sleep(LINKS_POLL);
    }
    false
}

/// Why a node did not come up: how it exited and the last lines it wrote to stderr.
fn failure_reason(config: &HerdConfig, report: &NodeReport) -> String {
    let exit = report.last_exit.as_deref().unwrap_or("exited");
    let tail = last_lines(&node_stderr_path(config, &report.name), 5);
    if tail.is_empty() {
        exit.to_owned()
    } else {
        format!("{exit}; it said:\n{tail}")
    }
}

/// `herdctl stop [all|NAME...]`: `all` also ends the supervisor.
pub fn stop(config_path: &Path, names: &[String]) -> Result<ExitCode> {
    let config = HerdConfig::load(config_path)?;
    let targets = resolve_targets(&config, names)?;
    let supervisor = Supervisor::new(config)?;
    if supervisor.pid().is_none() && running_by_lock(&supervisor.config).is_empty() {
        println!("nothing is running");
        return Ok(ExitCode::SUCCESS);
    }
    supervisor.ensure_running()?;
    let began = Instant::now();
    stop_and_wait(&supervisor, &targets)?;
    if targets.is_empty() {
        supervisor.call(&Request::Shutdown)?;
        wait_for("the supervisor to exit", || supervisor.pid().is_none())?;
    }
    println!("stopped in {:.1}s", began.elapsed().as_secs_f64());
    Ok(ExitCode::SUCCESS)
}

fn stop_and_wait(supervisor: &Supervisor, targets: &[String]) -> Result<()> {
    let before = supervisor.call(&Request::Stop {
        names: targets.to_vec(),
    })?;
    let deadline = supervisor.config.supervisor.stop_timeout + Duration::from_secs(10);
    let began = Instant::now();
    loop {
        let reports = supervisor.call(&Request::Status)?;
        if selected(&reports, targets)
            .iter()
            .all(|r| r.state == State::Stopped)
        {
            break;
        }
        if began.elapsed() > deadline {
            bail!("servers did not stop within {}s", deadline.as_secs());
        }
        std::thread::sleep(POLL);
    }
    for report in selected(&before, targets) {
        match report.pid {
            Some(pid) => println!("{:<12} stopped (was pid {pid})", report.name),
            None => println!("{:<12} stopped", report.name),
        }
    }
    Ok(())
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) -> Result<()> {
    let began = Instant::now();
    while !done() {
        if began.elapsed() > DAEMON_DEADLINE {
            bail!("timed out waiting for {what}");
        }
        std::thread::sleep(POLL);
    }
    Ok(())
}

/// `herdctl restart [all|NAME...]`.
pub fn restart(config_path: &Path, names: &[String]) -> Result<ExitCode> {
    let config = HerdConfig::load(config_path)?;
    let targets = resolve_targets(&config, names)?;
    let supervisor = Supervisor::new(config)?;
    supervisor.ensure_running()?;
    stop_and_wait(&supervisor, &targets)?;
    start_and_wait(&supervisor, &targets)
}

/// `herdctl kill NAME`: SIGKILL, as a crash.
pub fn kill(config_path: &Path, name: &str) -> Result<ExitCode> {
    let config = HerdConfig::load(config_path)?;
    config.server(name)?;
    let supervisor = Supervisor::new(config)?;
    supervisor.ensure_running()?;
    let reports = supervisor.call(&Request::Kill {
        name: name.to_owned(),
    })?;
    let report = reports.iter().find(|r| r.name == name).expect("known name");
    match report.pid {
        Some(pid) if matches!(report.state, State::Running | State::Starting) => {
            println!(
                "sent SIGKILL to {name} (pid {pid}); the supervisor restarts it by its policy"
            );
            Ok(ExitCode::SUCCESS)
        }
        _ => Err(anyhow!(
            "{name} is {}, not running; start it with: herdctl start {name}",
            report.state.as_str()
        )),
    }
}

/// Nodes alive by their locks, with their pids: the truth without a supervisor.
fn running_by_lock(config: &HerdConfig) -> BTreeMap<String, u32> {
    config
        .servers
        .keys()
        .filter_map(|name| {
            let pid = PidLock::holder(&node_lock_path(config, name))
                .ok()
                .flatten()?;
            Some((name.clone(), pid))
        })
        .collect()
}

/// One row of `herdctl status`.
#[derive(Debug, Serialize)]
struct StatusRow {
    name: String,
    state: String,
    pid: Option<u32>,
    port: u16,
    uptime_s: Option<u64>,
    restarts: u32,
    clients: Option<usize>,
    links_up: Option<usize>,
    links_total: usize,
    /// Clients the node read back from its store at start-up.
    recovered: Option<usize>,
    /// Records anti-entropy brought the node since it started.
    synced: Option<u64>,
    last_exit: Option<String>,
    /// For a node in backoff: how long until the supervisor restarts it.
    backoff_ms: Option<u64>,
}

/// `herdctl status [--json]`.
pub fn status(config_path: &Path, json: bool) -> Result<ExitCode> {
    let config = HerdConfig::load(config_path)?;
    let supervisor = Supervisor::new(config)?;
    let supervised = supervisor.pid().is_some();
    let reports = match supervised {
        true => supervisor.call(&Request::Status)?,
        false => reports_without_supervisor(&supervisor.config),
    };
    let figures = supervisor
        .runtime
        .block_on(query_figures(&supervisor.config, &reports));
    let rows: Vec<StatusRow> = reports
        .iter()
        .map(|r| {
            let f = figures.get(&r.name);
            StatusRow {
                name: r.name.clone(),
                state: r.state.as_str().to_owned(),
                pid: r.pid,
                port: r.port,
                uptime_s: r.uptime_ms.map(|ms| ms / 1000),
                restarts: r.restarts,
                clients: f.map(|f| f.clients),
                links_up: f.map(|f| f.links_up),
                links_total: supervisor.config.servers[&r.name].neighbours.len(),
                recovered: f.map(|f| f.recovered),
                synced: f.map(|f| f.synced),
                last_exit: r.last_exit.clone(),
                backoff_ms: r.backoff_ms,
            }
        })
        .collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        print_table(&rows);
    }
    if !supervised {
        eprintln!(
            "supervisor: not running (states from each server's lock; `herdctl start` starts it)"
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn reports_without_supervisor(config: &HerdConfig) -> Vec<NodeReport> {
    let running = running_by_lock(config);
    let now = Instant::now();
    config
        .servers
        .values()
        .map(|server| {
            let pid = running.get(&server.name).copied();
            NodeReport {
                name: server.name.clone(),
                state: if pid.is_some() {
                    State::Running
                } else {
                    State::Stopped
                },
                pid,
                port: server.port,
                uptime_ms: pid
                    .and_then(process::process_start)
                    .map(|s| now.saturating_duration_since(s).as_millis() as u64),
                restarts: 0,
                last_exit: None,
                backoff_ms: None,
                crashes_this_start: 0,
            }
        })
        .collect()
}

/// Asks every running node for its own figures, all at once, each with a short timeout.
async fn query_figures(
    config: &HerdConfig,
    reports: &[NodeReport],
) -> BTreeMap<String, NodeFigures> {
    // Spawned, so a node that hangs costs its own timeout, not everyone's in turn.
    let queries: Vec<_> = reports
        .iter()
        .filter(|r| r.pid.is_some())
        .map(|r| {
            let address = config.address(&config.servers[&r.name]);
            let name = r.name.clone();
            tokio::spawn(async move {
                let figures = super::ask_figures(address, Duration::from_secs(1)).await;
                figures.map(|f| (name, f))
            })
        })
        .collect();
    let mut out = BTreeMap::new();
    for query in queries {
        if let Ok(Some((name, figures))) = query.await {
            out.insert(name, figures);
        }
    }
    out
}

fn print_table(rows: &[StatusRow]) {
    println!(
        "{:<12} {:<9} {:>8} {:>6} {:>9} {:>8} {:>8} {:>6} {:>9} {:>7}  LAST EXIT",
        "NAME",
        "STATE",
        "PID",
        "PORT",
        "UPTIME",
        "RESTARTS",
        "CLIENTS",
        "LINKS",
        "RECOVERED",
        "SYNCED"
    );
    let dash = || "-".to_owned();
    for r in rows {
        println!(
            "{:<12} {:<9} {:>8} {:>6} {:>9} {:>8} {:>8} {:>6} {:>9} {:>7}  {}",
            r.name,
            r.state,
            r.pid.map_or_else(dash, |p| p.to_string()),
            r.port,
            r.uptime_s.map_or_else(dash, format_uptime),
            r.restarts,
            r.clients.map_or_else(dash, |c| c.to_string()),
            r.links_up
                .map_or_else(dash, |up| format!("{up}/{}", r.links_total)),
            r.recovered.map_or_else(dash, |n| n.to_string()),
            r.synced.map_or_else(dash, |n| n.to_string()),
            match (r.last_exit.as_deref(), r.backoff_ms) {
                (Some(exit), Some(ms)) => format!("{exit}; restart in {:.1}s", ms as f64 / 1000.0),
                (exit, _) => exit.unwrap_or("-").to_owned(),
            },
        );
    }
}

fn format_uptime(seconds: u64) -> String {
    match seconds {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s if s < 86400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        s => format!("{}d{:02}h", s / 86400, s % 86400 / 3600),
    }
}

fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// The last `n` lines of a text file ("" if it cannot be read).
fn last_lines(path: &Path, n: usize) -> String {
    crate::tail::last_lines_of(path, n)
        .iter()
        .map(|l| format!("  {}", crate::logs::printable(l)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A spinner per node on a terminal; silent otherwise (the summary lines say it all).
struct Progress {
    bars: BTreeMap<String, ProgressBar>,
    multi: MultiProgress,
}

impl Progress {
    fn new<'a>(names: impl Iterator<Item = &'a str>) -> Progress {
        let multi = MultiProgress::new();
        let mut bars = BTreeMap::new();
        if std::io::stderr().is_terminal() {
            let style = ProgressStyle::with_template("{spinner} {prefix:<12} {msg}")
                .expect("a valid template");
            for name in names {
                let bar = multi.add(ProgressBar::new_spinner());
                bar.set_style(style.clone());
                bar.set_prefix(name.to_owned());
                bar.set_message("starting");
                bar.enable_steady_tick(Duration::from_millis(100));
                bars.insert(name.to_owned(), bar);
            }
        }
        Progress { bars, multi }
    }

    fn update(&self, name: &str, message: &str) {
        if let Some(bar) = self.bars.get(name) {
            bar.set_message(message.to_owned());
        }
    }

    fn finish(&self, name: &str, message: &str) {
        if let Some(bar) = self.bars.get(name) {
            bar.finish_with_message(message.to_owned());
        }
    }

    fn clear(&self) {
        let _ = self.multi.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uptimes_read_well() {
        assert_eq!(format_uptime(5), "5s");
        assert_eq!(format_uptime(65), "1m05s");
        assert_eq!(format_uptime(3 * 3600 + 120), "3h02m");
        assert_eq!(format_uptime(2 * 86400 + 3600), "2d01h");
    }

    #[test]
    fn targets_are_all_or_known_names() {
        let config = HerdConfig::parse(
            "servers:\n  A: { port: 1 }\n  B: { port: 2 }\n",
            Path::new("/h/herd.yaml"),
        )
        .unwrap();
        assert!(resolve_targets(&config, &[]).unwrap().is_empty());
        assert!(resolve_targets(&config, &["all".into()])
            .unwrap()
            .is_empty());
        assert_eq!(resolve_targets(&config, &["B".into()]).unwrap(), ["B"]);
        assert!(resolve_targets(&config, &["C".into()]).is_err());
        assert!(resolve_targets(&config, &["all".into(), "A".into()]).is_err());
    }
}

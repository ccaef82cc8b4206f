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
use super::files::{self, Rotate};
use super::machine::State;
use super::{locate, node_stderr_path, process, RunPaths};
use crate::admin::LinkStatus;
use herd_config::config::{Environment, HerdConfig};
use herd_config::hosts::{Endpoint, Locality};
use herd_os::pidlock::PidLock;
use herd_wire::protocol::NodeFigures;

/// How long `start` waits for a node to answer beyond what the supervisor allows it (a
/// node still stopping, then `supervisor.start_timeout_ms`): the supervisor gives up first
/// and says why.
const START_GRACE: Duration = Duration::from_secs(10);
/// How long a new supervisor has to open its socket.
const DAEMON_DEADLINE: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(50);

/// A connection-per-request client of the supervisor, with the runtime it needs.
struct SupervisorClient {
    runtime: tokio::runtime::Runtime,
    paths: RunPaths,
    config: HerdConfig,
}

impl SupervisorClient {
    fn new(config: HerdConfig) -> Result<SupervisorClient> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        Ok(SupervisorClient {
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
        match self.ask(request)? {
            Response::Ok { nodes } => Ok(nodes),
            Response::Reloaded(report) => Ok(report.nodes),
            Response::Error { message } => bail!("{message}"),
        }
    }

    fn ask(&self, request: &Request) -> Result<Response> {
        self.runtime.block_on(async {
            let stream = UnixStream::connect(&self.paths.socket)
                .await
                .with_context(|| {
                    format!(
                        "cannot reach the supervisor at {}",
                        self.paths.socket.display()
                    )
                })?;
            call(stream, request).await
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
            herd_os::private::folder(folder, "log_dir")?;
        }
        herd_os::private::folder(&self.config.run_dir, "run_dir")?;
        // No supervisor has it open: a full log is renamed aside (the daemon rotates it in
        // place while it runs).
        files::rotate_if_larger(
            &self.paths.log,
            files::SUPERVISOR_LOG_MAX_BYTES,
            Rotate::Rename,
        )
        .with_context(|| format!("cannot rotate {}", self.paths.log.display()))?;
        let log = herd_os::private::open_append(&self.paths.log)
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

/// Which servers a command may act on from this machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reach {
    /// `start`: servers whose host is this machine.
    Hosted,
    /// `stop`, `restart`, `kill`: those, and any server running here even though its host
    /// now points elsewhere (it moved: it can still be stopped where it runs).
    HostedOrRunning,
}

/// `all`, nothing, or a list of known names -> the servers to act on, by name: `all` (or
/// nothing) is every server of this machine; a server of another host is an error naming it.
fn resolve_targets(
    config: &HerdConfig,
    names: &[String],
    locality: &Locality,
    reach: Reach,
) -> Result<Vec<String>> {
    let running = match reach {
        Reach::Hosted => BTreeMap::new(),
        Reach::HostedOrRunning => running_by_lock(config),
    };
    let here = |name: &str| {
        let server = &config.servers[name];
        config
            .reach(server, locality, running.contains_key(name))
            .local
    };
    if names.is_empty() || names.iter().any(|n| n == "all") {
        if names.len() > 1 {
            bail!("give either `all` or server names, not both");
        }
        let local: Vec<String> = config.servers.keys().filter(|n| here(n)).cloned().collect();
        if local.is_empty() {
            bail!(
                "no server of {} lives on this machine (its addresses: {}); the herd's hosts \
                 are {}: run herdctl on those machines, or give a server one of this machine's \
                 addresses as its host",
                config.path.display(),
                locality.machine().describe(),
                herd_hosts(config)
            );
        }
        return Ok(local);
    }
    for name in names {
        let server = config.server(name)?;
        if !here(name) {
            bail!(
                "{name} lives on host {}, not on this machine (its addresses: {}); run this \
                 command on {}",
                server.host,
                locality.machine().describe(),
                server.host
            );
        }
    }
    Ok(names.to_vec())
}

/// `Alford 10.0.0.1, Ball 10.0.0.2, ...` for messages.
fn herd_hosts(config: &HerdConfig) -> String {
    config
        .servers
        .values()
        .map(|s| format!("{} {}", s.name, s.host))
        .collect::<Vec<_>>()
        .join(", ")
}

fn selected<'a>(reports: &'a [NodeReport], targets: &[String]) -> Vec<&'a NodeReport> {
    reports
        .iter()
        .filter(|r| targets.is_empty() || targets.contains(&r.name))
        .collect()
}

/// `herdctl start [all|NAME...]`.
pub fn start(config_path: &Path, names: &[String]) -> Result<ExitCode> {
    let config = HerdConfig::load(config_path, &Environment::of_process())?;
    locate::check_run_dir(&config)?;
    for warning in &config.warnings {
        eprintln!("herdctl: warning: {warning}");
    }
    let targets = resolve_targets(
        &config,
        names,
        &Locality::look_up(config.hosts())?,
        Reach::Hosted,
    )?;
    // Created here (herd.secret, on first start) so the nodes find it; they would create it
    // themselves just as safely, but a folder that cannot hold it is reported here, once.
    if config.secret.ensure_secret()?.is_none() {
        eprintln!(
            "herdctl: warning: OPEN LINKS (insecure_open_links: true): anyone who reaches a \
             server's port can join the herd"
        );
    }
    let supervisor = SupervisorClient::new(config)?;
    supervisor.ensure_running()?;
    let every = names.is_empty() || names.iter().any(|n| n == "all");
    start_and_wait(&supervisor, &targets, every)
}

/// `end_if_idle`: a `start all` ends the supervisor when every server failed (it would
/// have nothing to supervise); a start of some servers leaves it, and their failures in
/// `status`.
fn start_and_wait(
    supervisor: &SupervisorClient,
    targets: &[String],
    end_if_idle: bool,
) -> Result<ExitCode> {
    let began = Instant::now();
    // Running before this start: said "already running", not "started".
    let already: Vec<String> = selected(&supervisor.call(&Request::Status)?, targets)
        .iter()
        .filter(|r| r.state == State::Running)
        .map(|r| r.name.clone())
        .collect();
    let mut reports = supervisor.call(&Request::Start {
        names: targets.to_vec(),
    })?;
    let settings = &supervisor.config.supervisor;
    let deadline = settings.stop_timeout + settings.start_timeout + START_GRACE;
    let progress = Progress::new(selected(&reports, targets).iter().map(|r| r.name.as_str()));
    let mut outcome: BTreeMap<String, std::result::Result<String, String>> = BTreeMap::new();
    loop {
        for report in selected(&reports, targets) {
            if outcome.contains_key(&report.name) {
                continue;
            }
            if report.state == State::Running {
                let pid = report.pid.map_or("?".into(), |p| p.to_string());
                let how = match already.contains(&report.name) {
                    true => "already running",
                    false => "running",
                };
                let done = format!("{how} (pid {pid}, port {})", report.port);
                progress.finish(&report.name, &done);
                outcome.insert(report.name.clone(), Ok(done));
            } else if report.state == State::Paused {
                // Already started, and frozen on purpose: a start does not thaw it.
                let done = format!("paused; thaw it with: herdctl resume {}", report.name);
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
        if began.elapsed() > deadline {
            for report in selected(&reports, targets) {
                outcome.entry(report.name.clone()).or_insert_with(|| {
                    Err(format!(
                        "still {} after {}s",
                        report.state.as_str(),
                        deadline.as_secs()
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
        if end_if_idle {
            shut_down_if_idle(supervisor)?;
        }
    }
    for (name, result) in &outcome {
        match result {
            Ok(done) => println!("{name:<12} {done}"),
            Err(why) => eprintln!("herdctl: error: {name} failed to start: {why}"),
        }
    }
    if failed.is_empty() {
        let started: Vec<String> = outcome.keys().cloned().collect();
        if !wait_for_links(
            supervisor,
            &started,
            &Locality::look_up(supervisor.config.hosts())?,
        ) {
            eprintln!(
                "herdctl: note: some peer links are still forming; `herdctl status` shows them"
            );
        }
        let started = outcome.len() - already.len();
        let took = began.elapsed().as_secs_f64();
        match (started, already.len()) {
            (0, n) => println!("{} already running; nothing to start", plural(n, "server")),
            (started, 0) => println!("{} started in {took:.1}s", plural(started, "server")),
            (started, n) => println!(
                "{} started in {took:.1}s; {n} already running",
                plural(started, "server")
            ),
        }
        Ok(ExitCode::SUCCESS)
    } else {
        Ok(ExitCode::FAILURE)
    }
}

/// Ends the supervisor when it has nothing left to supervise (every node stopped or fatal,
/// e.g. a `start all` that failed for every server), once the nodes it stops are gone.
fn shut_down_if_idle(supervisor: &SupervisorClient) -> Result<()> {
    let deadline = supervisor.config.supervisor.stop_timeout + START_GRACE;
    let began = Instant::now();
    let idle = loop {
        let reports = supervisor.call(&Request::Status)?;
        if reports.iter().any(|r| r.state == State::Stopping) && began.elapsed() < deadline {
            std::thread::sleep(POLL);
            continue;
        }
        break reports
            .iter()
            .all(|r| matches!(r.state, State::Stopped | State::Fatal));
    };
    if idle {
        supervisor.call(&Request::Shutdown)?;
        wait_for("the supervisor to exit", || supervisor.pid().is_none())?;
        eprintln!("herdctl: note: no server runs, so the supervisor exited too");
    }
    Ok(())
}

/// How long `start` waits for peer links once its nodes answer.
const LINKS_DEADLINE: Duration = Duration::from_secs(5);
/// Each poll is a `HERD STATUS` to every running node, two lines in each node's log: poll
/// gently (links form within a few hundred milliseconds).
const LINKS_POLL: Duration = Duration::from_millis(200);

/// Waits until every node in `names` has its links up to each neighbour that is running
/// (here or on another host), so
/// an update sent right after `start` floods at once. Best effort: false if the deadline
/// passed first (a link can legitimately stay down, e.g. a neighbour refusing the secret).
fn wait_for_links(supervisor: &SupervisorClient, names: &[String], here: &Locality) -> bool {
    let began = Instant::now();
    while began.elapsed() < LINKS_DEADLINE {
        let Ok(reports) = supervisor.call(&Request::Status) else {
            return false;
        };
        let asks = where_to_ask(&supervisor.config, &reports, here);
        let token = crate::admin::token(&supervisor.config);
        let figures = supervisor.runtime.block_on(query_figures(asks, token));
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

/// Why a node did not come up: how it exited and the last lines its latest run wrote to
/// stderr.
fn failure_reason(config: &HerdConfig, report: &NodeReport) -> String {
    let exit = report.last_exit.as_deref().unwrap_or("exited");
    let said = files::latest_run_lines(&node_stderr_path(config, &report.name), 5);
    if said.is_empty() {
        exit.to_owned()
    } else {
        let said: Vec<String> = said.iter().map(|l| format!("  {l}")).collect();
        format!("{exit}; it said:\n{}", said.join("\n"))
    }
}

/// `herdctl stop [all|NAME...]`: `all` also ends the supervisor.
pub fn stop(config_path: &Path, names: &[String]) -> Result<ExitCode> {
    if names.is_empty() {
        bail!(
            "say what to stop: herdctl stop NAME... (servers), or herdctl stop all (every \
             server of this machine, and the supervisor)"
        );
    }
    let (config, _) = locate::for_running_herd(config_path)?;
    let supervisor = SupervisorClient::new(config)?;
    let every = names.iter().any(|n| n == "all");
    let nothing_running =
        supervisor.pid().is_none() && running_by_lock(&supervisor.config).is_empty();
    if nothing_running && every {
        println!("nothing is running");
        return Ok(ExitCode::SUCCESS);
    }
    // Named servers are checked even when nothing runs, so a typo or a server of another
    // host is an error, not "stopped".
    let targets = resolve_targets(
        &supervisor.config,
        names,
        &Locality::look_up(supervisor.config.hosts())?,
        Reach::HostedOrRunning,
    )?;
    if nothing_running {
        let alive = still_serving(&supervisor, &targets);
        if !alive.is_empty() {
            bail!("{}", not_ours(&alive));
        }
        println!("nothing is running");
        return Ok(ExitCode::SUCCESS);
    }
    supervisor.ensure_running()?;
    let began = Instant::now();
    stop_and_wait(&supervisor, &targets)?;
    if every {
        supervisor.call(&Request::Shutdown)?;
        wait_for("the supervisor to exit", || supervisor.pid().is_none())?;
    }
    println!("stopped in {:.1}s", began.elapsed().as_secs_f64());
    Ok(ExitCode::SUCCESS)
}

fn stop_and_wait(supervisor: &SupervisorClient, targets: &[String]) -> Result<()> {
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
    // Stopped as far as the supervisor knows; a process it does not know (its lock
    // elsewhere, started by hand) may still serve the port: never call that stopped.
    let alive = still_serving(supervisor, targets);
    for report in selected(&before, targets) {
        if alive.contains_key(&report.name) {
            continue;
        }
        match report.pid {
            Some(pid) => println!("{:<12} stopped (was pid {pid})", report.name),
            None => println!("{:<12} stopped", report.name),
        }
    }
    if !alive.is_empty() {
        bail!("{}", not_ours(&alive));
    }
    Ok(())
}

/// "Alford still runs as pid 42 (...), which this supervisor did not start ...".
fn not_ours(alive: &BTreeMap<String, u32>) -> String {
    let said: Vec<String> = alive
        .iter()
        .map(|(name, pid)| {
            format!(
                "{name} still runs as {}, which this supervisor did not start (its lock is not \
                 under this run_dir); stop it with: kill {pid}",
                herd_os::port_owner::describe_pid(*pid)
            )
        })
        .collect();
    said.join("; ")
}

/// Of `names`, those a process still answers for as itself on this machine, with its pid.
fn still_serving(supervisor: &SupervisorClient, names: &[String]) -> BTreeMap<String, u32> {
    let asks = names
        .iter()
        .filter_map(|name| {
            let server = supervisor.config.servers.get(name)?;
            Some(Ask {
                name: name.clone(),
                local: true,
                endpoint: Some(supervisor.config.local_endpoint(server)),
                admin: Some(supervisor.config.local_admin_endpoint(server)),
            })
        })
        .collect();
    let token = crate::admin::token(&supervisor.config);
    supervisor
        .runtime
        .block_on(query_figures(asks, token))
        .into_iter()
        .map(|(name, figures)| (name, figures.pid))
        .collect()
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
    let config = HerdConfig::load(config_path, &Environment::of_process())?;
    locate::check_run_dir(&config)?;
    let targets = resolve_targets(
        &config,
        names,
        &Locality::look_up(config.hosts())?,
        Reach::HostedOrRunning,
    )?;
    let supervisor = SupervisorClient::new(config)?;
    supervisor.ensure_running()?;
    stop_and_wait(&supervisor, &targets)?;
    start_and_wait(&supervisor, &targets, false)
}

/// `herdctl kill NAME`: SIGKILL, as a crash.
pub fn kill(config_path: &Path, name: &str) -> Result<ExitCode> {
    let (config, _) = locate::for_running_herd(config_path)?;
    config.server(name)?;
    resolve_targets(
        &config,
        &[name.to_owned()],
        &Locality::look_up(config.hosts())?,
        Reach::HostedOrRunning,
    )?;
    let supervisor = SupervisorClient::new(config)?;
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

/// `herdctl pause NAME`: SIGSTOP through the supervisor, which stops probing it (a frozen
/// node's silence is the point, not a reason to restart it) until `herdctl resume NAME`.
pub fn pause(config_path: &Path, name: &str) -> Result<ExitCode> {
    let (before, after) = freeze_or_thaw(config_path, name, true)?;
    let pid = after.pid.unwrap_or_default();
    match (before.state, after.state) {
        (State::Paused, _) => println!("{name} is already paused (pid {pid})"),
        (_, State::Paused) => println!(
            "{name} paused (pid {pid}, SIGSTOP): it answers nothing and its links time out; \
             the supervisor leaves it be until: herdctl resume {name}"
        ),
        (_, state) => bail!(
            "{name} is {}, not running, so it cannot be paused{}",
            state.as_str(),
            match state {
                State::Stopped | State::Fatal | State::Backoff =>
                    format!("; start it with: herdctl start {name}"),
                _ => String::new(),
            }
        ),
    }
    Ok(ExitCode::SUCCESS)
}

/// `herdctl resume NAME`: SIGCONT a paused node; health probes start again an interval later.
pub fn resume(config_path: &Path, name: &str) -> Result<ExitCode> {
    let (before, after) = freeze_or_thaw(config_path, name, false)?;
    if before.state != State::Paused {
        bail!("{name} is {}, not paused", before.state.as_str());
    }
    println!(
        "{name} resumed (pid {}, SIGCONT); it catches up through its links",
        after.pid.unwrap_or_default()
    );
    Ok(ExitCode::SUCCESS)
}

/// Asks the supervisor to pause (`true`) or resume a local server; returns its report before
/// and after.
fn freeze_or_thaw(config_path: &Path, name: &str, pause: bool) -> Result<(NodeReport, NodeReport)> {
    let (config, _) = locate::for_running_herd(config_path)?;
    config.server(name)?;
    resolve_targets(
        &config,
        &[name.to_owned()],
        &Locality::look_up(config.hosts())?,
        Reach::HostedOrRunning,
    )?;
    let supervisor = SupervisorClient::new(config)?;
    supervisor.ensure_running()?;
    let name = name.to_owned();
    let find = |reports: Vec<NodeReport>| {
        reports
            .into_iter()
            .find(|r| r.name == name)
            .context("the supervisor did not report the server")
    };
    let before = find(supervisor.call(&Request::Status)?)?;
    let request = match pause {
        true => Request::Pause { name: name.clone() },
        false => Request::Resume { name: name.clone() },
    };
    let after = find(supervisor.call(&request)?)?;
    Ok((before, after))
}

/// How long `reload` waits for the nodes it told to report the new file.
const TOLD_DEADLINE: Duration = Duration::from_secs(10);

/// `herdctl reload`: has the supervisor re-read the herd file and apply it, prints what it
/// did, and waits until the herd runs it: started and restarted servers up, removed ones
/// stopped, the others reporting the new file.
pub fn reload(config_path: &Path) -> Result<ExitCode> {
    // Checked here first, so a broken file is reported even with no supervisor.
    let config = HerdConfig::load(config_path, &Environment::of_process())?;
    locate::check_run_dir(&config)?;
    for warning in &config.warnings {
        eprintln!("herdctl: warning: {warning}");
    }
    let supervisor = SupervisorClient::new(config)?;
    if supervisor.pid().is_none() && running_by_lock(&supervisor.config).is_empty() {
        println!(
            "nothing runs under {}; `herdctl start` runs {} as it is",
            supervisor.config.run_dir.display(),
            supervisor.config.path.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    supervisor.ensure_running()?;
    let began = Instant::now();
    let report = match supervisor.ask(&Request::Reload)? {
        Response::Reloaded(report) => report,
        Response::Error { message } => bail!("{message}"),
        Response::Ok { .. } => bail!("the supervisor does not know `reload`: restart it"),
    };
    for action in &report.actions {
        println!("{action}");
    }
    let mut failed = false;
    if !report.started.is_empty()
        && start_and_wait(&supervisor, &report.started, false)? != ExitCode::SUCCESS
    {
        failed = true;
    }
    if !report.removed.is_empty() {
        wait_until_removed(&supervisor, &report.removed)?;
    }
    for name in wait_for_digest(
        &supervisor,
        &report.told,
        &report.digest,
        &Locality::look_up(supervisor.config.hosts())?,
    ) {
        eprintln!(
            "herdctl: error: {name} did not take the new herd file within {}s; its log says \
             why (herdctl tail {name})",
            TOLD_DEADLINE.as_secs()
        );
        failed = true;
    }
    if failed {
        return Ok(ExitCode::FAILURE);
    }
    println!(
        "reloaded {} in {:.1}s",
        supervisor.config.path.display(),
        began.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

/// Waits until the supervisor no longer lists `names` (stopped, then dropped).
fn wait_until_removed(supervisor: &SupervisorClient, names: &[String]) -> Result<()> {
    let deadline = supervisor.config.supervisor.stop_timeout + START_GRACE;
    let began = Instant::now();
    loop {
        let reports = supervisor.call(&Request::Status)?;
        if !reports.iter().any(|r| names.contains(&r.name)) {
            return Ok(());
        }
        if began.elapsed() > deadline {
            bail!(
                "{} did not stop within {}s",
                names.join(", "),
                deadline.as_secs()
            );
        }
        std::thread::sleep(POLL);
    }
}

/// Waits until each of `names` reports herd file `digest`; returns those that did not in
/// time (a node that refused a file says why in its log).
fn wait_for_digest(
    supervisor: &SupervisorClient,
    names: &[String],
    digest: &str,
    here: &Locality,
) -> Vec<String> {
    let began = Instant::now();
    let mut waiting: Vec<String> = names.to_vec();
    while !waiting.is_empty() && began.elapsed() < TOLD_DEADLINE {
        let Ok(reports) = supervisor.call(&Request::Status) else {
            break;
        };
        let asks = where_to_ask(&supervisor.config, &reports, here);
        let token = crate::admin::token(&supervisor.config);
        let figures = supervisor.runtime.block_on(query_figures(asks, token));
        waiting.retain(|name| {
            let running = reports.iter().any(|r| &r.name == name && r.pid.is_some());
            running && figures.get(name).and_then(|f| f.config.as_deref()) != Some(digest)
        });
        if !waiting.is_empty() {
            std::thread::sleep(LINKS_POLL);
        }
    }
    waiting
}

/// Nodes alive by their locks, with their pids: the truth without a supervisor.
fn running_by_lock(config: &HerdConfig) -> BTreeMap<String, u32> {
    config
        .servers
        .keys()
        .filter_map(|name| {
            let pid = PidLock::holder(&config.node_lock_path(name))
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
    /// The server's host as herd.yaml gives it.
    host: String,
    /// Whether it lives on this machine (process facts from here) or another (asked over
    /// the network: `running` or `unreachable`).
    local: bool,
    state: String,
    pid: Option<u32>,
    port: u16,
    uptime_s: Option<u64>,
    /// Restarts by this machine's supervisor; unknown (null) for a server of another host.
    restarts: Option<u32>,
    clients: Option<usize>,
    /// `clients.max` when the node's table is bounded.
    #[serde(skip_serializing_if = "Option::is_none")]
    clients_max: Option<usize>,
    /// Records that expired on the node since it started (`clients.ttl_s`).
    expired: Option<u64>,
    /// Tombstones the node holds: clients forgotten (`herdctl forget`).
    forgotten: Option<usize>,
    /// New clients the node refused because its table was full.
    refused_full: Option<u64>,
    links_up: Option<usize>,
    links_total: usize,
    /// Clients the node read back from its store at start-up.
    recovered: Option<usize>,
    /// Records anti-entropy brought the node since it started.
    synced: Option<u64>,
    /// The node's store error while its store is unhealthy.
    #[serde(skip_serializing_if = "Option::is_none")]
    store_error: Option<String>,
    /// Wire log lines the node dropped because its log writer fell behind.
    log_dropped: Option<u64>,
    /// The node runs without a herd secret (`insecure_open_links: true`).
    open_links: Option<bool>,
    /// What neighbours sent that the node refused, by reason.
    #[serde(skip_serializing_if = "Option::is_none")]
    peer_dropped: Option<BTreeMap<String, u64>>,
    /// How the last process ended: exit code or signal, and why when the supervisor ended
    /// it (health probes, start timeout, `herdctl kill`).
    last_exit: Option<String>,
    /// The last line the last process wrote to stderr (a panic message, an error).
    last_words: Option<String>,
    /// For a node in backoff: how long until the supervisor restarts it.
    backoff_ms: Option<u64>,
    /// Health probes of the running process unanswered in a row.
    failed_probes: u32,
    /// Link faults set on purpose (`herdctl link`): neighbour -> what.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    faults: BTreeMap<String, String>,
    /// Why the supervisor gave up on the node (FATAL), while it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    fatal_reason: Option<String>,
    /// Where its admin endpoint answers (`/metrics`, `/status`, `/healthz`, `/readyz`).
    admin_url: String,
    /// Each link as the node sees it (from its admin endpoint's `/status`; `None` when that
    /// could not be read: not running, or no admin token).
    #[serde(skip_serializing_if = "Option::is_none")]
    links: Option<Vec<LinkStatus>>,
    /// For a local server with no process: who holds its port instead, if anyone.
    #[serde(skip_serializing_if = "Option::is_none")]
    port_held_by: Option<String>,
}

/// The state of a server of another host: it answers `HERD STATUS` as itself, or not.
const REMOTE_RUNNING: &str = "running";
const REMOTE_UNREACHABLE: &str = "unreachable";

/// `herdctl status [--json]`: every server of the herd, from any of its hosts.
pub fn status(config_path: &Path, json: bool) -> Result<ExitCode> {
    let (config, from_copy) = locate::for_running_herd(config_path)?;
    // With the applied copy in use, the warning already said the file differs.
    let text = match from_copy {
        true => None,
        false => std::fs::read_to_string(config_path).ok(),
    };
    let applied = std::fs::read_to_string(super::applied_copy_path(&config)).ok();
    let here = Locality::look_up(config.hosts())?;
    let supervisor = SupervisorClient::new(config)?;
    let supervised = supervisor.pid().is_some();
    let (reports, unlisted): (Vec<NodeReport>, Vec<NodeReport>) = match supervised {
        true => supervisor.call(&Request::Status)?,
        false => reports_without_supervisor(&supervisor.config),
    }
    .into_iter()
    .partition(|r| supervisor.config.servers.contains_key(&r.name));
    let config = &supervisor.config;
    let asks = where_to_ask(config, &reports, &here);
    let local: BTreeMap<String, bool> = asks.iter().map(|a| (a.name.clone(), a.local)).collect();
    let statuses = supervisor
        .runtime
        .block_on(query_status(asks, crate::admin::token(config)));
    let rows: Vec<StatusRow> = reports
        .iter()
        .map(|r| {
            let f = statuses.get(&r.name).map(|(f, _)| f);
            let links = statuses.get(&r.name).and_then(|(_, l)| l.clone());
            let server = &config.servers[&r.name];
            let local = local[&r.name];
            let row = StatusRow {
                name: r.name.clone(),
                host: server.host.to_string(),
                local,
                state: r.state.as_str().to_owned(),
                pid: r.pid,
                port: server.port,
                uptime_s: r.uptime_ms.map(|ms| ms / 1000),
                restarts: Some(r.restarts),
                clients: f.map(|f| f.clients),
                clients_max: f.and_then(|f| f.clients_max),
                expired: f.map(|f| f.expired),
                forgotten: f.map(|f| f.forgotten),
                refused_full: f.map(|f| f.refused_full),
                links_up: f.map(|f| f.links_up),
                // The node's own count when it answers: it runs the file the supervisor
                // applied, which may differ from the file on disk.
                links_total: f.map_or(server.neighbours.len(), |f| f.links_total),
                recovered: f.map(|f| f.recovered),
                synced: f.map(|f| f.synced),
                store_error: f.and_then(|f| f.store_error.clone()),
                log_dropped: f.map(|f| f.log_dropped),
                open_links: f.map(|f| f.open_links),
                peer_dropped: f.map(|f| f.peer_dropped.clone()).filter(|d| !d.is_empty()),
                last_exit: r.last_exit.clone(),
                last_words: r.last_words.clone(),
                backoff_ms: r.backoff_ms,
                failed_probes: r.failed_probes,
                faults: f.map(|f| f.faults.clone()).unwrap_or_default(),
                fatal_reason: r.fatal_reason.clone(),
                admin_url: crate::admin::url(config, server),
                links,
                port_held_by: None,
            };
            if local {
                let port_held_by = match (r.pid, f) {
                    (None, None) => herd_os::port_owner::describe_port(server.port),
                    _ => None,
                };
                return StatusRow {
                    port_held_by,
                    ..row
                };
            }
            StatusRow {
                state: match f {
                    Some(_) => REMOTE_RUNNING,
                    None => REMOTE_UNREACHABLE,
                }
                .to_owned(),
                pid: f.map(|f| f.pid),
                uptime_s: f.map(|f| f.uptime_ms / 1000),
                restarts: None,
                last_exit: None,
                last_words: None,
                backoff_ms: None,
                failed_probes: 0,
                fatal_reason: None,
                ..row
            }
        })
        .collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        print_table(&rows);
    }
    if !supervised && rows.iter().any(|r| r.local) {
        eprintln!(
            "supervisor: not running (states from each server's lock; `herdctl start` starts it)"
        );
    }
    for r in &unlisted {
        eprintln!(
            "note: the supervisor runs {}, which {} no longer lists; `herdctl reload` stops it",
            r.name,
            config.path.display()
        );
    }
    if supervised && text.is_some() && applied.is_some_and(|applied| Some(applied) != text) {
        eprintln!(
            "note: {} has changed since the supervisor applied it; `herdctl reload` applies it",
            supervisor.config.path.display()
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
                state: match pid {
                    Some(pid) if process::is_frozen(pid) => State::Paused,
                    Some(_) => State::Running,
                    None => State::Stopped,
                },
                pid,
                port: server.port,
                uptime_ms: pid
                    .and_then(process::process_start)
                    .map(|s| now.saturating_duration_since(s).as_millis() as u64),
                restarts: 0,
                last_exit: None,
                last_words: None,
                backoff_ms: None,
                crashes_this_start: 0,
                failed_probes: 0,
                fatal_reason: None,
                start_queued: false,
            }
        })
        .collect()
}

/// Whom to ask for figures, and where.
struct Ask {
    name: String,
    local: bool,
    /// `None`: a local server with no process, nothing to ask.
    endpoint: Option<Endpoint>,
    /// Its admin endpoint, on the same host as `endpoint`.
    admin: Option<Endpoint>,
}

/// A server is local when it lives on this machine or runs here anyway (it moved while
/// running): local ones are asked on their local address when they have a process; every
/// other one is asked across the network, since only it can say whether it runs.
/// A server the supervisor reports but the herd file no longer names (removed, not yet
/// reloaded or still stopping) has no address to ask at: it is left out.
fn where_to_ask(config: &HerdConfig, reports: &[NodeReport], here: &Locality) -> Vec<Ask> {
    reports
        .iter()
        .filter_map(|r| {
            let server = config.servers.get(&r.name)?;
            let reach = config.reach(server, here, r.pid.is_some());
            // A local server with no process: nothing to ask.
            let asked = !reach.local || r.pid.is_some();
            Some(Ask {
                name: r.name.clone(),
                local: reach.local,
                endpoint: asked.then_some(reach.endpoint),
                admin: asked.then_some(reach.admin),
            })
        })
        .collect()
}

/// How long a server has to answer `HERD STATUS`, name resolution and connecting included.
const FIGURES_TIMEOUT: Duration = Duration::from_secs(1);

/// Asks each server for its own figures, all at once, each with a short timeout: its admin
/// endpoint's `/status` (figures and links), else `HERD STATUS` on its client port (figures
/// only: a herd without a secret has no admin token). Only an answer in the server's own
/// name counts (anything else on that address is not it).
async fn query_status(
    asks: Vec<Ask>,
    token: Option<String>,
) -> BTreeMap<String, (NodeFigures, Option<Vec<LinkStatus>>)> {
    // Spawned, so a server that hangs costs its own timeout, not everyone's in turn.
    let queries: Vec<_> = asks
        .into_iter()
        .filter_map(|ask| {
            let endpoint = ask.endpoint?;
            let admin = ask.admin;
            let token = token.clone();
            Some(tokio::spawn(async move {
                if let Some(admin) = admin {
                    let status =
                        crate::admin::status(&admin, token.as_deref(), FIGURES_TIMEOUT).await;
                    if let Some(status) = status.filter(|s| s.figures.name == ask.name) {
                        return Some((ask.name, (status.figures, Some(status.links))));
                    }
                }
                let figures = super::ask_figures(endpoint, FIGURES_TIMEOUT).await;
                figures
                    .filter(|f| f.name == ask.name)
                    .map(|f| (ask.name, (f, None)))
            }))
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

/// Each server's figures alone (see [`query_status`]).
async fn query_figures(asks: Vec<Ask>, token: Option<String>) -> BTreeMap<String, NodeFigures> {
    query_status(asks, token)
        .await
        .into_iter()
        .map(|(name, (figures, _))| (name, figures))
        .collect()
}

/// `120`, or `120/1000` when the table is bounded (its fill).
fn clients_column(r: &StatusRow) -> String {
    match (r.clients, r.clients_max) {
        (None, _) => "-".to_owned(),
        (Some(c), None) => c.to_string(),
        (Some(c), Some(max)) => format!("{c}/{max}"),
    }
}

/// `12 expired, 1 forgotten, 3 new clients refused (table full)`: the client lifecycle's
/// counts that are not zero.
fn lifecycle_line(r: &StatusRow) -> Option<String> {
    let mut parts = Vec::new();
    if let Some(n @ 1..) = r.expired {
        parts.push(format!("{n} expired"));
    }
    if let Some(n @ 1..) = r.forgotten {
        parts.push(format!("{n} forgotten"));
    }
    if let Some(n @ 1..) = r.refused_full {
        parts.push(format!("{n} new clients refused (table full: clients.max)"));
    }
    (!parts.is_empty()).then(|| parts.join(", "))
}

fn print_table(rows: &[StatusRow]) {
    let host_width = rows.iter().map(|r| r.host.len()).max().unwrap_or(0).max(4);
    let links: Vec<String> = rows.iter().map(links_column).collect();
    let links_width = links.iter().map(String::len).max().unwrap_or(0).max(5);
    let width = terminal_width();
    let header = format!(
        "{:<12} {:<host_width$} {:<5} {:<11} {:>8} {:>6} {:>9} {:>8} {:>8} {:<links_width$} {:>9} {:>7}  LAST EXIT",
        "NAME",
        "HOST",
        "LOCAL",
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
    println!("{}", fit(&header, width));
    let dash = || "-".to_owned();
    for (r, links) in rows.iter().zip(&links) {
        let row = format!(
            "{:<12} {:<host_width$} {:<5} {:<11} {:>8} {:>6} {:>9} {:>8} {:>8} {:<links_width$} {:>9} {:>7}  {}",
            r.name,
            r.host,
            if r.local { "yes" } else { "no" },
            r.state,
            r.pid.map_or_else(dash, |p| p.to_string()),
            r.port,
            r.uptime_s.map_or_else(dash, format_uptime),
            r.restarts.map_or_else(dash, |n| n.to_string()),
            clients_column(r),
            links,
            r.recovered.map_or_else(dash, |n| n.to_string()),
            r.synced.map_or_else(dash, |n| n.to_string()),
            last_exit_column(r),
        );
        println!("{}", fit(&row, width));
    }
    // What needs the operator's attention, below the table (it does not fit a column).
    for r in rows {
        if let Some(line) = lifecycle_line(r) {
            println!("{}: {line}", r.name);
        }
        if let Some(why) = &r.fatal_reason {
            println!(
                "{}: FATAL: {why}; `herdctl start {}` tries again",
                r.name, r.name
            );
        }
        if let Some(holder) = &r.port_held_by {
            println!(
                "{}: {} but its port {} is held by {holder}, not by this herd",
                r.name, r.state, r.port
            );
        }
        if let Some(error) = &r.store_error {
            println!("{}: STORE UNHEALTHY: {error}", r.name);
        }
        for (peer, fault) in &r.faults {
            println!("{}: link to {peer}: {fault} (herdctl link heal)", r.name);
        }
        if let Some(tls) = tls_links_note(r) {
            println!("{}: {tls}", r.name);
        }
        if r.open_links == Some(true) {
            println!(
                "{}: OPEN LINKS: no herd secret (insecure_open_links: true); anyone who reaches \
                 its port can join the herd",
                r.name
            );
        }
        if let Some(dropped) = &r.peer_dropped {
            let reasons: Vec<String> = dropped.iter().map(|(k, v)| format!("{k} {v}")).collect();
            println!(
                "{}: refused from neighbours: {}",
                r.name,
                reasons.join(", ")
            );
        }
        if let Some(dropped @ 1..) = r.log_dropped {
            println!(
                "{}: {dropped} wire log lines dropped (its log writer fell behind)",
                r.name
            );
        }
    }
}

/// Which links run over TLS and when each neighbour's certificate expires
/// (`TLS links: Ball (certificate expires 2027-12-04 14:35:41 UTC, 364 days)`), and which
/// run in plain text on a herd that has TLS ones.
fn tls_links_note(row: &StatusRow) -> Option<String> {
    let links = row.links.as_ref()?;
    let now = herd_config::tls::certs::now_secs();
    let tls: Vec<String> = links
        .iter()
        .filter(|l| l.encrypted == Some(true))
        .map(|l| match l.peer_cert_not_after {
            Some(at) => format!(
                "{} (certificate expires {}, {} days)",
                l.peer,
                herd_config::tls::der::format_utc(at),
                herd_config::tls::certs::days_left(at, now)
            ),
            None => l.peer.clone(),
        })
        .collect();
    if tls.is_empty() {
        return None;
    }
    let plain: Vec<&str> = links
        .iter()
        .filter(|l| l.encrypted == Some(false))
        .map(|l| l.peer.as_str())
        .collect();
    let mut note = format!("TLS links: {}", tls.join(", "));
    if !plain.is_empty() {
        note += &format!("; PLAIN-TEXT links: {}", plain.join(", "));
    }
    Some(note)
}

/// The LINKS column: up of total, then each neighbour that is not up and for how long
/// (`1/2 -Welsh 12s`), when the node's admin endpoint told.
fn links_column(row: &StatusRow) -> String {
    let Some(up) = row.links_up else {
        return "-".to_owned();
    };
    let mut text = format!("{up}/{}", row.links_total);
    for link in row.links.iter().flatten().filter(|l| l.state != "up") {
        text += &format!(" -{} {}", link.peer, format_uptime(link.for_s));
    }
    text
}

/// The LAST EXIT column: how the last process ended and its last words, then what is
/// happening now (a restart pending, probes failing).
fn last_exit_column(row: &StatusRow) -> String {
    let mut text = match (&row.last_exit, &row.last_words) {
        (Some(exit), Some(words)) => format!("{exit}: \"{words}\""),
        (Some(exit), None) => exit.clone(),
        (None, _) => "-".to_owned(),
    };
    if let Some(ms) = row.backoff_ms {
        text += &format!("; restart in {:.1}s", ms as f64 / 1000.0);
    }
    if row.failed_probes > 0 {
        text += &format!("; {} health probe(s) unanswered", row.failed_probes);
    }
    text
}

/// The width of the terminal on stdout, else `$COLUMNS`; `None` (no cut) for a pipe or
/// file with no `COLUMNS`, so scripts get whole rows (`--json` has every field anyway).
fn terminal_width() -> Option<usize> {
    use nix::libc;
    let mut size = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one winsize into `size`, which lives across the call.
    let asked = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut size) };
    if asked == 0 && size.ws_col > 0 {
        return Some(size.ws_col.into());
    }
    std::env::var("COLUMNS")
        .ok()?
        .trim()
        .parse()
        .ok()
        .filter(|w| *w > 0)
}

/// `line` cut to `width` characters, ending in `...` when cut.
fn fit(line: &str, width: Option<usize>) -> String {
    let Some(width) = width else {
        return line.to_owned();
    };
    if line.chars().count() <= width {
        return line.to_owned();
    }
    let kept: String = line.chars().take(width.saturating_sub(3)).collect();
    format!("{kept}...")
}

fn format_uptime(seconds: u64) -> String {
    match seconds {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s if s < 86400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        s => format!("{}d{:02}h", s / 86400, s % 86400 / 3600),
    }
}

/// `1 server`, `5 servers`.
pub fn plural(n: usize, what: &str) -> String {
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
        .map(|l| format!("  {}", herd_logs::printable(l)))
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
    fn targets_are_this_machines_servers_or_named_local_ones() {
        let config = HerdConfig::parse(
            "servers:\n  A: { port: 1 }\n  B: { port: 2 }\n  R: { port: 1, host: 10.9.9.9 }\n",
            Path::new("/h/herd.yaml"),
            &Environment::default(),
        )
        .unwrap();
        let here = Locality::with(
            herd_config::hosts::Machine::with_addresses(["10.1.1.1".parse().unwrap()]),
            [],
        );
        let targets = |names: &[&str]| {
            let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
            resolve_targets(&config, &names, &here, Reach::Hosted)
        };
        assert_eq!(targets(&[]).unwrap(), ["A", "B"], "all = the local servers");
        assert_eq!(targets(&["all"]).unwrap(), ["A", "B"]);
        assert_eq!(targets(&["B"]).unwrap(), ["B"]);
        assert!(targets(&["C"]).is_err());
        assert!(targets(&["all", "A"]).is_err());
        let e = targets(&["R"]).unwrap_err().to_string();
        assert!(
            e.contains("R lives on host 10.9.9.9") && e.contains("10.1.1.1"),
            "{e}"
        );

        let elsewhere = Locality::with(
            herd_config::hosts::Machine::with_addresses(["10.9.9.9".parse().unwrap()]),
            [],
        );
        let only_r = HerdConfig::parse(
            "servers:\n  R: { port: 1, host: 10.9.9.9 }\n  S: { port: 1, host: 10.9.9.8 }\n",
            Path::new("/h/herd.yaml"),
            &Environment::default(),
        )
        .unwrap();
        assert_eq!(
            resolve_targets(&only_r, &[], &elsewhere, Reach::Hosted).unwrap(),
            ["R"]
        );
        let e = resolve_targets(&only_r, &[], &here, Reach::Hosted)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("no server") && e.contains("R 10.9.9.9, S 10.9.9.8"),
            "{e}"
        );
    }
}

//! The supervisor daemon: one event loop owns every node's state machine, performs the
//! actions it asks for, and answers the control socket. Started by the first CLI
//! command that needs it (`start`, `stop`, `restart`, `kill`),
//! detached in its own session; its nodes outlive it, and the next daemon adopts them.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::sys::signal::Signal;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

use super::control::{NodeReport, ReloadReport, Request, Response};
use super::files::{self, Rotate};
use super::lifecycle::{Action, Event, Lifecycle, State};
use super::process::{NodeOs, ProcessNews, RealOs};
use super::{node_stderr_path, RunPaths};
use herd_config::config::{Environment, HerdConfig, ServerConfig};
use herd_config::config_diff;
use herd_config::hosts::Locality;
use herd_os::pidlock::PidLock;

/// How often the loop looks at timers, probes and adopted nodes.
const TICK: Duration = Duration::from_millis(50);
/// How often full log files (nodes' stderr, the supervisor's own log) are rotated.
const ROTATE_EVERY: Duration = Duration::from_secs(10);

/// A SIGHUP sent to a node (see `Supervisor::check_digest`).
#[derive(Debug, Clone)]
struct Told {
    pid: u32,
    digest: String,
    at: Instant,
}

type ControlMessage = (Request, oneshot::Sender<Response>);

/// A reload's new herd, read where blocking is allowed: the file's text, the herd it
/// describes, and which of its servers live on this machine (host names looked up).
pub struct NewHerd {
    pub text: String,
    pub config: HerdConfig,
    pub local: BTreeSet<String>,
}

impl NewHerd {
    /// Reads and validates the herd file at `path` and looks up its hosts. Blocks (file,
    /// getifaddrs, DNS): the daemon runs it on the blocking pool, never in its loop.
    pub fn read(path: &std::path::Path, env: &Environment) -> Result<NewHerd> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let config = HerdConfig::parse(&text, path, env)?;
        let local = match Locality::look_up(config.hosts()) {
            Ok(here) => config.local_servers(&here).into_iter().collect(),
            Err(e) => {
                tracing::warn!(
                    "cannot list this machine's addresses ({e:#}); treating every server of \
                     the new file as this machine's"
                );
                config.servers.keys().cloned().collect()
            }
        };
        Ok(NewHerd {
            text,
            config,
            local,
        })
    }

    /// A herd already read, its locality decided by `here`.
    pub fn new(text: String, config: HerdConfig, here: &Locality) -> NewHerd {
        let local = config.local_servers(here).into_iter().collect();
        NewHerd {
            text,
            config,
            local,
        }
    }
}

/// `herdctl supervise`: runs the daemon until a shutdown request (or SIGTERM).
pub fn main(config_path: &std::path::Path) -> Result<ExitCode> {
    // The applied copy, nodes' stderr and the socket are this user's only.
    herd_os::private::restrict_umask();
    // The file, or (broken, or naming another run_dir than the running herd's) the copy
    // the previous supervisor applied: so `stop` works whatever the file says now.
    let (config, text, _) = super::locate::load_running(config_path)?;
    let paths = RunPaths::new(&config);
    let _lock = match PidLock::acquire(&paths.lock)? {
        Ok(lock) => lock,
        Err(pid) => {
            eprintln!("herdctl: a supervisor is already running for this herd (pid {pid})");
            return Ok(ExitCode::SUCCESS);
        }
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false)
        .init();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let listener = bind_socket(&paths)?;
        tracing::info!(
            "supervisor pid {} for {} on {}",
            std::process::id(),
            config.path.display(),
            paths.socket.display()
        );
        let (news_tx, news_rx) = mpsc::unbounded_channel();
        let mut os = RealOs::new(news_tx);
        // The nodes it starts run this copy; adopted ones that run another are told (see
        // `Supervisor::check_digest`).
        os.write_applied_copy(&config, &text)?;
        // So the operator's commands find this herd even when herd.yaml breaks or names
        // another run_dir (see `locate.rs`).
        if let Err(e) = super::locate::record_run_dir(&config) {
            tracing::warn!(
                "cannot record the run_dir beside {} ({e}); with a broken herd file, \
                 commands will not find this supervisor",
                config.path.display()
            );
        }
        let supervisor = Supervisor::new(config, Environment::of_process(), os);
        supervisor.run(listener, news_rx, &paths).await
    })?;
    let _ = std::fs::remove_file(&paths.socket);
    Ok(ExitCode::SUCCESS)
}

/// Binds the control socket, replacing a stale one (safe: we hold the supervisor lock), with
/// mode 0600 from the start.
fn bind_socket(paths: &RunPaths) -> Result<UnixListener> {
    let _ = std::fs::remove_file(&paths.socket);
    let previous = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let bound = UnixListener::bind(&paths.socket);
    nix::sys::stat::umask(previous);
    let listener = bound.with_context(|| format!("cannot listen on {}", paths.socket.display()))?;
    std::fs::set_permissions(&paths.socket, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Every node's state machine, and the OS calls that carry out what they ask for. Time is
/// passed in, and news of processes is handed over by the caller, so tests drive it with a
/// fake [`NodeOs`] and a made-up clock.
pub struct Supervisor<O: NodeOs> {
    config: Arc<HerdConfig>,
    lifecycles: BTreeMap<String, Lifecycle>,
    /// Nodes found running at start-up: not our children, so their end is seen through
    /// their lock rather than waitpid.
    adopted: BTreeSet<String>,
    /// Servers a reload removed from the file, stopping; dropped once stopped.
    removed: BTreeMap<String, ServerConfig>,
    /// Nodes told to re-read the herd file (SIGHUP): the process, the digest it was told
    /// about, and when. One still on another file at a later probe is restarted.
    told: BTreeMap<String, Told>,
    /// The environment the daemon started in: a reload reads the herd file in it.
    env: Environment,
    os: O,
    shutting_down: bool,
}

impl<O: NodeOs> Supervisor<O> {
    pub fn new(config: HerdConfig, env: Environment, os: O) -> Supervisor<O> {
        let lifecycles = config
            .servers
            .keys()
            .map(|name| (name.clone(), Lifecycle::new(config.supervisor)))
            .collect();
        Supervisor {
            config: Arc::new(config),
            lifecycles,
            adopted: BTreeSet::new(),
            removed: BTreeMap::new(),
            told: BTreeMap::new(),
            env,
            os,
            shutting_down: false,
        }
    }

    async fn run(
        mut self,
        listener: UnixListener,
        mut news: mpsc::UnboundedReceiver<(String, ProcessNews)>,
        paths: &RunPaths,
    ) -> Result<()> {
        self.adopt_running_nodes(Instant::now());
        let (control_tx, mut control_rx) = mpsc::unbounded_channel::<ControlMessage>();
        let (read_tx, mut read_rx) = mpsc::unbounded_channel();
        let mut tick = tokio::time::interval(TICK);
        let mut rotate = tokio::time::interval(ROTATE_EVERY);
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        tokio::spawn(serve_client(stream, control_tx.clone()));
                    }
                    Err(e) => tracing::warn!("control socket accept failed: {e}"),
                },
                Some((request, reply)) = control_rx.recv() => match request {
                    // Reading the file and looking up its hosts may block (DNS): done on
                    // the blocking pool while the loop runs on, applied once it is back.
                    Request::Reload => {
                        let (path, env) = (self.config.path.clone(), self.env.clone());
                        let read = read_tx.clone();
                        tokio::task::spawn_blocking(move || {
                            let _ = read.send((NewHerd::read(&path, &env), reply));
                        });
                    }
                    request => {
                        let response = self.handle_request(request, Instant::now());
                        let _ = reply.send(response);
                    }
                },
                Some((new, reply)) = read_rx.recv() => {
                    let _ = reply.send(self.reload(new, Instant::now()));
                }
                Some((name, news)) = news.recv() => self.handle_news(&name, news, Instant::now()),
                _ = tick.tick() => {
                    self.on_tick(Instant::now());
                    if self.finished() {
                        tracing::info!("every node stopped; supervisor exiting");
                        return Ok(());
                    }
                }
                _ = rotate.tick() => self.rotate_files(paths),
                _ = terminate.recv() => {
                    // Leave the nodes serving: the next supervisor adopts them.
                    tracing::info!("SIGTERM: supervisor exiting, nodes left running");
                    return Ok(());
                }
            }
        }
    }

    /// After a shutdown request, once every node is stopped.
    pub fn finished(&self) -> bool {
        self.shutting_down && self.lifecycles.values().all(|m| m.state == State::Stopped)
    }

    /// Rotates full files that live processes append to: each node's stderr and this
    /// daemon's own log (its stdout and stderr).
    fn rotate_files(&self, paths: &RunPaths) {
        let full = std::iter::once((paths.log.clone(), files::SUPERVISOR_LOG_MAX_BYTES)).chain(
            self.lifecycles.keys().map(|name| {
                (
                    node_stderr_path(&self.config, name),
                    files::STDERR_MAX_BYTES,
                )
            }),
        );
        for (path, max) in full {
            match files::rotate_if_larger(&path, max, Rotate::InPlace) {
                Ok(true) => tracing::info!("rotated {}", path.display()),
                Ok(false) => {}
                Err(e) => tracing::warn!("cannot rotate {}: {e}", path.display()),
            }
        }
    }

    /// Nodes still running from an earlier supervisor (or started by hand) are adopted with
    /// their real pid and start time.
    pub fn adopt_running_nodes(&mut self, now: Instant) {
        let names: Vec<String> = self.lifecycles.keys().cloned().collect();
        for name in names {
            if let Some(pid) = self.os.lock_holder(&self.config, &name) {
                let started = self.os.process_start(pid).unwrap_or(now);
                let paused = self.os.is_frozen(pid);
                let how = if paused { " paused (SIGSTOP)" } else { "" };
                tracing::info!("adopted {name} (pid {pid}){how}");
                self.adopted.insert(name.clone());
                let adopted = Event::Adopted {
                    pid,
                    started,
                    paused,
                };
                self.apply(&name, adopted, now);
            }
        }
    }

    pub fn handle_request(&mut self, request: Request, now: Instant) -> Response {
        let named: &[String] = match &request {
            Request::Start { names } | Request::Stop { names } => names,
            Request::Kill { name } | Request::Pause { name } | Request::Resume { name } => {
                std::slice::from_ref(name)
            }
            Request::Status | Request::Shutdown | Request::Reload => &[],
        };
        if let Some(unknown) = named.iter().find(|n| !self.lifecycles.contains_key(*n)) {
            return Response::Error {
                message: format!(
                    "no server named {unknown:?} in the herd the supervisor runs; if you added \
                     it to {}, apply it with: herdctl reload",
                    self.config.path.display()
                ),
            };
        }
        match request {
            Request::Status => {}
            Request::Start { names } => {
                self.shutting_down = false;
                for name in self.targets(names) {
                    self.apply(&name, Event::Start, now);
                }
            }
            Request::Stop { names } => {
                for name in self.targets(names) {
                    self.apply(&name, Event::Stop, now);
                }
            }
            Request::Kill { name } => {
                self.apply(&name, Event::Crash, now);
            }
            Request::Pause { name } => {
                self.apply(&name, Event::Pause, now);
            }
            Request::Resume { name } => {
                self.apply(&name, Event::Resume, now);
            }
            Request::Reload => {
                return Response::Error {
                    message: "a reload is read off the loop, then applied by Supervisor::reload"
                        .into(),
                };
            }
            Request::Shutdown => {
                self.shutting_down = true;
                for name in self.targets(Vec::new()) {
                    self.apply(&name, Event::Stop, now);
                }
            }
        }
        Response::Ok {
            nodes: self.reports(now),
        }
    }

    fn targets(&self, names: Vec<String>) -> Vec<String> {
        if names.is_empty() {
            self.lifecycles.keys().cloned().collect()
        } else {
            names
        }
    }

    pub fn handle_news(&mut self, name: &str, news: ProcessNews, now: Instant) {
        let Some(lifecycle) = self.lifecycles.get(name) else {
            return; // a node removed by a reload
        };
        let current = lifecycle.pid;
        match news {
            ProcessNews::Exited {
                pid,
                how,
                last_words,
            } if current == Some(pid) => {
                tracing::info!("{name} (pid {pid}) {how}");
                self.apply(name, Event::Exited { how, last_words }, now);
            }
            ProcessNews::Probed {
                pid,
                answered,
                digest,
            } if current == Some(pid) => {
                let state = self.lifecycles[name].state;
                if state == State::Starting && answered {
                    tracing::info!("{name} (pid {pid}) ready");
                } else if state == State::Running && !answered {
                    tracing::warn!("{name} (pid {pid}) did not answer a health probe");
                }
                self.apply(name, Event::Probed { answered }, now);
                if let Some(digest) = digest {
                    self.check_digest(name, pid, &digest, now);
                }
            }
            // About a process that is no longer this node's.
            ProcessNews::Exited { .. } | ProcessNews::Probed { .. } => {}
        }
    }

    /// The daemon and its nodes never run on different herd files: a running node that
    /// reports another file is told to re-read it, once; if it still runs another at a
    /// later probe (it refused: a setting it reads at start-up differs), it is restarted.
    fn check_digest(&mut self, name: &str, pid: u32, digest: &str, now: Instant) {
        let applied = self.config.digest.clone();
        if digest == applied || self.lifecycles[name].state != State::Running {
            return;
        }
        // A probe sent before the node was told may still answer with the old file: only
        // one sent after it (a full probe period later) shows a refusal.
        let grace = self.config.supervisor.health_interval;
        match self.told.get(name) {
            Some(told) if told.pid == pid && told.digest == applied => {
                if now.saturating_duration_since(told.at) <= grace {
                    return;
                }
                tracing::warn!(
                    "{name} (pid {pid}) still runs another herd file ({digest}, not \
                     {applied}) after it was told; restarting it on the applied one"
                );
                self.told.remove(name);
                self.apply(name, Event::Stop, now);
                self.apply(name, Event::Start, now);
            }
            _ => {
                tracing::info!(
                    "{name} (pid {pid}) runs another herd file ({digest}); telling it to \
                     re-read the applied one ({applied})"
                );
                self.tell(name, pid, now);
            }
        }
    }

    /// SIGHUP: the node re-reads the applied copy and takes it live, or refuses it.
    fn tell(&mut self, name: &str, pid: u32, now: Instant) {
        self.signal(name, pid, Signal::SIGHUP);
        let told = Told {
            pid,
            digest: self.config.digest.clone(),
            at: now,
        };
        self.told.insert(name.to_owned(), told);
    }

    /// `herdctl reload`: applies the herd file [`NewHerd::read`] read, or says why not. On
    /// any error nothing changes.
    pub fn reload(&mut self, new: Result<NewHerd>, now: Instant) -> Response {
        match new.and_then(|new| self.apply_reload(new, now)) {
            Ok(report) => Response::Reloaded(report),
            Err(e) => Response::Error {
                message: format!("{e:#}; nothing was changed"),
            },
        }
    }

    fn apply_reload(&mut self, new: NewHerd, now: Instant) -> Result<ReloadReport> {
        let NewHerd {
            text,
            config: new,
            local,
        } = new;
        let plan = config_diff::plan(&self.config, &new)?;
        self.os.write_applied_copy(&new, &text)?;
        tracing::info!(
            "reloaded {} ({} -> {})",
            new.path.display(),
            self.config.digest,
            new.digest
        );
        let old = std::mem::replace(&mut self.config, Arc::new(new));
        let mut report = ReloadReport {
            digest: self.config.digest.clone(),
            actions: Vec::new(),
            started: Vec::new(),
            removed: Vec::new(),
            told: Vec::new(),
            nodes: Vec::new(),
        };
        let mut actions = Vec::new();
        let mut act = |name: &str, what: String| {
            tracing::info!("reload: {name} {what}");
            actions.push(format!("{name:<12} {what}"));
        };

        for lifecycle in self.lifecycles.values_mut() {
            lifecycle.set_settings(self.config.supervisor);
        }
        if plan.supervisor {
            act("supervisor", "settings applied".into());
        }
        for name in &plan.removed {
            self.removed.insert(name.clone(), old.servers[name].clone());
            self.apply(name, Event::Stop, now);
            act(name, "stopped: removed from the herd file".into());
            report.removed.push(name.clone());
        }
        for name in &plan.added {
            self.lifecycles
                .insert(name.clone(), Lifecycle::new(self.config.supervisor));
            // Another machine's server is that machine's to start.
            if !local.contains(name) {
                let host = &self.config.servers[name].host;
                act(name, format!("added; lives on {host}: start it there"));
                continue;
            }
            self.apply(name, Event::Start, now);
            act(name, "started: added to the herd file".into());
            report.started.push(name.clone());
        }
        for (name, why) in &plan.restart {
            let state = self.lifecycles[name].state;
            if matches!(state, State::Stopped | State::Fatal) {
                match local.contains(name) {
                    true => act(name, format!("not running; starts on the new file ({why})")),
                    false => {
                        let host = &self.config.servers[name].host;
                        act(name, format!("lives on {host}: reload it there ({why})"));
                    }
                }
                continue;
            }
            // Stop, then start once it is gone (a start while stopping is queued).
            self.apply(name, Event::Stop, now);
            self.apply(name, Event::Start, now);
            act(name, format!("restarted: {why}"));
            report.started.push(name.clone());
        }
        for (name, changes) in &plan.live {
            let lifecycle = &self.lifecycles[name];
            let changes = match changes.is_empty() {
                true => "nothing changes for it".to_owned(),
                false => changes.join("; "),
            };
            match (lifecycle.state, lifecycle.pid) {
                (State::Running, Some(pid)) => {
                    self.tell(name, pid, now);
                    act(name, format!("told live: {changes}"));
                    report.told.push(name.clone());
                }
                // Not answering yet: it may have read the old copy; the first probe that
                // finds it running on another file tells it.
                (State::Starting, _) => act(name, format!("starting; takes it once up: {changes}")),
                _ if !local.contains(name) => {
                    let host = &self.config.servers[name].host;
                    act(name, format!("lives on {host}: reload it there"));
                }
                (state, _) => act(
                    name,
                    format!("{}; starts on the new file: {changes}", state.as_str()),
                ),
            }
        }
        report.actions = actions;
        report.nodes = self.reports(now);
        Ok(report)
    }

    pub fn on_tick(&mut self, now: Instant) {
        // Servers removed by a reload leave once they are stopped.
        let gone: Vec<String> = self
            .removed
            .keys()
            .filter(|n| {
                self.lifecycles
                    .get(*n)
                    .is_none_or(|m| m.state == State::Stopped)
            })
            .cloned()
            .collect();
        for name in gone {
            self.removed.remove(&name);
            self.lifecycles.remove(&name);
            self.adopted.remove(&name);
            self.told.remove(&name);
            tracing::info!("{name} stopped and removed");
        }
        let names: Vec<String> = self.lifecycles.keys().cloned().collect();
        for name in names {
            self.apply(&name, Event::Tick, now);
            let Some(pid) = self.lifecycles[&name].pid else {
                continue;
            };
            if self.adopted.contains(&name) && self.os.lock_holder(&self.config, &name) != Some(pid)
            {
                let last_words = self.os.last_words(&self.config, &name);
                self.handle_news(
                    &name,
                    ProcessNews::Exited {
                        pid,
                        how: "exited (adopted: status unknown)".into(),
                        last_words,
                    },
                    now,
                );
            }
        }
    }

    /// Feeds an event to a node's lifecycle and carries out the action it asks for.
    fn apply(&mut self, name: &str, event: Event, now: Instant) {
        let Some(action) = self.lifecycles.get_mut(name).unwrap().handle(event, now) else {
            return;
        };
        match action {
            Action::Spawn => self.spawn(name, now),
            Action::Terminate(pid) => self.signal(name, pid, Signal::SIGTERM),
            Action::Kill(pid) => self.signal(name, pid, Signal::SIGKILL),
            Action::Pause(pid) => self.signal(name, pid, Signal::SIGSTOP),
            Action::Resume(pid) => self.signal(name, pid, Signal::SIGCONT),
            Action::TerminatePaused(pid) => {
                // Pending until the process runs again: SIGCONT lets it act on it.
                self.signal(name, pid, Signal::SIGTERM);
                self.signal(name, pid, Signal::SIGCONT);
            }
            Action::Probe { pid, timeout } => {
                let path = match self.lifecycles[name].state {
                    State::Starting => "/readyz",
                    _ => "/healthz",
                };
                self.os.probe(&self.config, name, pid, timeout, path)
            }
        }
    }

    fn spawn(&mut self, name: &str, now: Instant) {
        self.adopted.remove(name);
        match self.os.spawn(&self.config, name) {
            Ok(pid) => {
                tracing::info!("started {name} (pid {pid})");
                self.apply(name, Event::Spawned { pid }, now);
            }
            Err(e) => {
                tracing::warn!("cannot start {name}: {e:#}");
                self.apply(
                    name,
                    Event::SpawnFailed {
                        reason: format!("{e:#}"),
                    },
                    now,
                );
            }
        }
    }

    fn signal(&mut self, name: &str, pid: u32, signal: Signal) {
        tracing::info!("sending {signal} to {name} (pid {pid})");
        self.os.signal(pid, signal);
    }

    pub fn reports(&self, now: Instant) -> Vec<NodeReport> {
        self.lifecycles
            .iter()
            .map(|(name, m)| NodeReport {
                name: name.clone(),
                state: m.state,
                pid: m.pid,
                port: self
                    .config
                    .servers
                    .get(name)
                    .or_else(|| self.removed.get(name))
                    .map_or(0, |s| s.port),
                uptime_ms: m
                    .since
                    .filter(|_| m.pid.is_some())
                    .map(|s| now.saturating_duration_since(s).as_millis() as u64),
                restarts: m.restarts,
                last_exit: m.last_exit.clone(),
                last_words: m.last_words.clone(),
                backoff_ms: m.backoff_remaining(now).map(|d| d.as_millis() as u64),
                crashes_this_start: m.crashes_since_start,
                failed_probes: m.failed_probes,
                fatal_reason: m.fatal_reason.clone(),
                start_queued: m.start_queued(),
            })
            .collect()
    }
}

/// Reads one request from a CLI connection, has the loop answer it, writes the answer.
async fn serve_client(stream: UnixStream, control: mpsc::UnboundedSender<ControlMessage>) {
    let (reader, mut writer) = stream.into_split();
    let mut line = String::new();
    if BufReader::new(reader).read_line(&mut line).await.is_err() {
        return;
    }
    let response = match serde_json::from_str::<Request>(&line) {
        Ok(request) => {
            let (reply_tx, reply_rx) = oneshot::channel();
            if control.send((request, reply_tx)).is_err() {
                return;
            }
            match reply_rx.await {
                Ok(response) => response,
                Err(_) => return,
            }
        }
        Err(e) => Response::Error {
            message: format!("bad request: {e}"),
        },
    };
    let mut text = serde_json::to_string(&response).expect("responses serialize");
    text.push('\n');
    let _ = writer.write_all(text.as_bytes()).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// Records what the supervisor asked of the OS; the test plays the OS's answers.
    #[derive(Default)]
    struct FakeOs {
        next_pid: u32,
        spawned: Vec<(String, u32)>,
        signals: Vec<(u32, Signal)>,
        probes: Vec<(String, u32, Duration)>,
        locks: BTreeMap<String, u32>,
        frozen: BTreeSet<u32>,
        stderr: BTreeMap<String, String>,
        /// The applied copy.
        applied: String,
    }

    impl NodeOs for FakeOs {
        fn spawn(&mut self, _: &HerdConfig, name: &str) -> Result<u32> {
            self.next_pid += 1;
            let pid = 100 + self.next_pid;
            self.spawned.push((name.to_owned(), pid));
            Ok(pid)
        }
        fn signal(&mut self, pid: u32, signal: Signal) {
            self.signals.push((pid, signal));
        }
        fn probe(
            &mut self,
            _: &HerdConfig,
            name: &str,
            pid: u32,
            timeout: Duration,
            _: &'static str,
        ) {
            self.probes.push((name.to_owned(), pid, timeout));
        }
        fn lock_holder(&self, _: &HerdConfig, name: &str) -> Option<u32> {
            self.locks.get(name).copied()
        }
        fn process_start(&self, _: u32) -> Option<Instant> {
            None
        }
        fn is_frozen(&self, pid: u32) -> bool {
            self.frozen.contains(&pid)
        }
        fn last_words(&self, _: &HerdConfig, name: &str) -> Option<String> {
            self.stderr.get(name).cloned()
        }
        fn write_applied_copy(&mut self, _: &HerdConfig, text: &str) -> Result<()> {
            self.applied = text.to_owned();
            Ok(())
        }
    }

    const HERD: &str = "servers:\n  A: { port: 1, peers: [B] }\n  B: { port: 2 }\n\
                        supervisor: { health_interval_ms: 1000, health_failures: 2, \
                        start_timeout_ms: 5000, backoff_initial_ms: 100, stop_timeout_ms: 3000 }\n";

    fn supervisor() -> Supervisor<FakeOs> {
        let config =
            HerdConfig::parse(HERD, Path::new("/h/herd.yaml"), &Environment::default()).unwrap();
        Supervisor::new(config, Environment::default(), FakeOs::default())
    }

    fn start(names: &[&str]) -> Request {
        Request::Start {
            names: names.iter().map(|n| n.to_string()).collect(),
        }
    }

    fn probed(pid: u32, answered: bool) -> ProcessNews {
        ProcessNews::Probed {
            pid,
            answered,
            digest: None,
        }
    }

    fn report(s: &Supervisor<FakeOs>, name: &str, now: Instant) -> NodeReport {
        s.reports(now).into_iter().find(|r| r.name == name).unwrap()
    }

    /// Starts A and has it answer its readiness probe; returns its pid.
    fn start_a(s: &mut Supervisor<FakeOs>, now: Instant) -> u32 {
        s.handle_request(start(&["A"]), now);
        let (_, pid) = s.os.spawned.last().cloned().unwrap();
        s.on_tick(now);
        assert_eq!(s.os.probes.last().unwrap().1, pid, "a readiness probe");
        s.handle_news("A", probed(pid, true), now);
        assert_eq!(report(s, "A", now).state, State::Running);
        pid
    }

    #[test]
    fn a_hung_node_is_killed_by_health_probes_and_restarted() {
        let mut s = supervisor();
        let t0 = Instant::now();
        let pid = start_a(&mut s, t0);
        let mut now = t0;
        for round in 1..=2 {
            now += Duration::from_secs(1);
            s.on_tick(now);
            let (name, probed_pid, timeout) = s.os.probes.last().cloned().unwrap();
            assert_eq!((name.as_str(), probed_pid), ("A", pid));
            assert_eq!(timeout, Duration::from_secs(1));
            s.handle_news("A", probed(pid, false), now);
            assert_eq!(report(&s, "A", now).failed_probes, round);
        }
        assert_eq!(s.os.signals, [(pid, Signal::SIGKILL)]);
        s.handle_news(
            "A",
            ProcessNews::Exited {
                pid,
                how: "killed by SIGKILL".into(),
                last_words: Some("peer link to B up".into()),
            },
            now,
        );
        let r = report(&s, "A", now);
        assert_eq!(r.state, State::Backoff);
        let why = r.last_exit.unwrap();
        assert!(
            why.starts_with("killed by SIGKILL (2 health probes"),
            "{why}"
        );
        assert_eq!(r.last_words.as_deref(), Some("peer link to B up"));
        // Restarted by policy after the backoff.
        s.on_tick(now + Duration::from_millis(100));
        assert_eq!(s.os.spawned.len(), 2);
        assert_eq!(report(&s, "A", now).restarts, 1);
    }

    #[test]
    fn a_start_while_stopping_is_carried_out_when_the_node_is_gone() {
        let mut s = supervisor();
        let t0 = Instant::now();
        let pid = start_a(&mut s, t0);
        s.handle_request(Request::Stop { names: vec![] }, t0);
        assert_eq!(s.os.signals, [(pid, Signal::SIGTERM)]);
        let r = s.handle_request(start(&["A"]), t0);
        let Response::Ok { nodes } = r else { panic!() };
        assert!(nodes[0].start_queued);
        assert_eq!(s.os.spawned.len(), 1, "not while the old process lives");
        // B was never started: a start for it is not queued, it starts at once.
        s.handle_news(
            "A",
            ProcessNews::Exited {
                pid,
                how: "exit status 0".into(),
                last_words: None,
            },
            t0,
        );
        assert_eq!(s.os.spawned.len(), 2);
        assert_eq!(report(&s, "A", t0).state, State::Starting);
    }

    #[test]
    fn news_of_an_earlier_process_is_ignored() {
        let mut s = supervisor();
        let t0 = Instant::now();
        let old = start_a(&mut s, t0);
        s.handle_request(Request::Kill { name: "A".into() }, t0);
        s.handle_news(
            "A",
            ProcessNews::Exited {
                pid: old,
                how: "killed by SIGKILL".into(),
                last_words: None,
            },
            t0,
        );
        let now = t0 + Duration::from_millis(100);
        s.on_tick(now);
        let (_, new) = s.os.spawned.last().cloned().unwrap();
        assert_ne!(new, old);
        // A late exit and a late probe answer of the old process change nothing.
        s.handle_news(
            "A",
            ProcessNews::Exited {
                pid: old,
                how: "exit status 1".into(),
                last_words: None,
            },
            now,
        );
        s.handle_news("A", probed(old, true), now);
        let r = report(&s, "A", now);
        assert_eq!((r.state, r.pid), (State::Starting, Some(new)));
        assert_eq!(
            r.last_exit.as_deref(),
            Some("killed by SIGKILL (herdctl kill)")
        );
    }

    #[test]
    fn a_node_adopted_while_frozen_is_paused_and_never_probed() {
        let mut s = supervisor();
        let t0 = Instant::now();
        s.os.locks.insert("B".into(), 77);
        s.os.frozen.insert(77);
        s.adopt_running_nodes(t0);
        assert_eq!(report(&s, "B", t0).state, State::Paused);
        for step in 0..100 {
            s.on_tick(t0 + Duration::from_millis(500 * step));
        }
        assert!(s.os.probes.is_empty(), "{:?}", s.os.probes);
        assert!(s.os.signals.is_empty(), "{:?}", s.os.signals);
        let later = t0 + Duration::from_secs(50);
        assert_eq!(report(&s, "B", later).state, State::Paused);
    }

    #[test]
    fn an_adopted_node_that_dies_is_seen_through_its_lock() {
        let mut s = supervisor();
        let t0 = Instant::now();
        s.os.locks.insert("B".into(), 77);
        s.adopt_running_nodes(t0);
        assert_eq!(report(&s, "B", t0).state, State::Running);
        s.os.locks.remove("B");
        s.os.stderr
            .insert("B".into(), "thread 'main' panicked at src/x.rs:1:1".into());
        s.on_tick(t0);
        let r = report(&s, "B", t0);
        assert_eq!(r.state, State::Backoff);
        assert_eq!(
            r.last_words.as_deref(),
            Some("thread 'main' panicked at src/x.rs:1:1")
        );
    }

    #[test]
    fn unknown_names_point_at_reload() {
        let mut s = supervisor();
        let Response::Error { message } = s.handle_request(start(&["C"]), Instant::now()) else {
            panic!("C is not in the herd");
        };
        assert!(message.contains("herdctl reload"), "{message}");
    }

    fn exited(pid: u32) -> ProcessNews {
        ProcessNews::Exited {
            pid,
            how: "exit status 0".into(),
            last_words: None,
        }
    }

    /// Reloads `file` on a machine with no address of its own: only loopback hosts are
    /// here.
    fn reload(s: &mut Supervisor<FakeOs>, file: &str, now: Instant) -> Response {
        let here = Locality::default();
        let new = HerdConfig::parse(file, Path::new("/h/herd.yaml"), &Environment::default())
            .map(|config| NewHerd::new(file.to_owned(), config, &here));
        s.reload(new, now)
    }

    #[test]
    fn a_broken_or_unmovable_file_changes_nothing() {
        let mut s = supervisor();
        let t0 = Instant::now();
        let pid = start_a(&mut s, t0);
        let before = s.config.digest.clone();
        for (file, wanted) in [
            ("servers:\n  A: { port: x }\n", "/h/herd.yaml line 2"),
            (
                "servers:\n  A: { port: 1 }\nrun_dir: /elsewhere\n",
                "run_dir changed",
            ),
        ] {
            let Response::Error { message } = reload(&mut s, file, t0) else {
                panic!("{file} must be refused");
            };
            assert!(
                message.contains(wanted) && message.ends_with("nothing was changed"),
                "{message}"
            );
        }
        assert_eq!(s.config.digest, before);
        assert!(s.os.signals.is_empty() && s.os.applied.is_empty());
        assert_eq!(report(&s, "A", t0).pid, Some(pid));
        assert_eq!(s.reports(t0).len(), 2);
    }

    #[test]
    fn reload_starts_added_stops_removed_restarts_moved_and_tells_the_rest() {
        let mut s = supervisor();
        let t0 = Instant::now();
        let a = start_a(&mut s, t0);
        s.handle_request(start(&["B"]), t0);
        let (_, b) = s.os.spawned.last().cloned().unwrap();
        s.on_tick(t0);
        s.handle_news("B", probed(b, true), t0);

        // B moves to another port, C is added with a link to A, and A keeps running.
        let file = "servers:\n  A: { port: 1, peers: [B, C] }\n  B: { port: 20 }\n  \
                    C: { port: 3 }\n  D: { port: 4, host: 10.9.9.9 }\n\
                    supervisor: { health_failures: 2 }\n";
        let Response::Reloaded(r) = reload(&mut s, file, t0) else {
            panic!("a valid file is applied");
        };
        assert_eq!(s.os.applied, file, "nodes start from the copy");
        assert_eq!(r.digest, s.config.digest);
        assert_eq!(r.started, ["C", "B"]);
        assert_eq!(r.told, ["A"]);
        assert!(r.removed.is_empty());
        assert_eq!(
            r.actions,
            [
                "supervisor   settings applied",
                "C            started: added to the herd file",
                "D            added; lives on 10.9.9.9: start it there",
                "B            restarted: its address changed (127.0.0.1:2 -> 127.0.0.1:20)",
                "A            told live: link to C added; new address for B",
            ]
        );
        assert_eq!(
            s.os.signals,
            [(b, Signal::SIGTERM), (a, Signal::SIGHUP)],
            "B stopped, A told"
        );
        assert_eq!(
            s.os.spawned.last().unwrap().0,
            "C",
            "not D, another machine's"
        );
        assert_eq!(report(&s, "D", t0).state, State::Stopped);
        // B comes back once its old process is gone.
        s.handle_news("B", exited(b), t0);
        assert_eq!(s.os.spawned.last().unwrap().0, "B");
        assert_eq!(report(&s, "B", t0).port, 20);

        // Dropping C again: it is stopped, then no longer listed.
        let (_, c) =
            s.os.spawned
                .iter()
                .find(|(n, _)| n == "C")
                .cloned()
                .unwrap();
        s.on_tick(t0);
        s.handle_news("C", probed(c, true), t0);
        let Response::Reloaded(r) = reload(
            &mut s,
            "servers:\n  A: { port: 1 }\n  B: { port: 20 }\n",
            t0,
        ) else {
            panic!()
        };
        assert_eq!(r.removed, ["C", "D"]);
        assert_eq!(report(&s, "C", t0).state, State::Stopping);
        s.handle_news("C", exited(c), t0);
        s.on_tick(t0);
        assert!(s.reports(t0).iter().all(|r| r.name != "C"));
    }

    #[test]
    fn a_node_on_another_herd_file_is_told_then_restarted() {
        let mut s = supervisor();
        let t0 = Instant::now();
        let pid = start_a(&mut s, t0);
        let other = |pid| ProcessNews::Probed {
            pid,
            answered: true,
            digest: Some("0000000000000000".into()),
        };
        s.handle_news("A", other(pid), t0);
        assert_eq!(s.os.signals, [(pid, Signal::SIGHUP)]);
        // Its own digest: all is well, nothing more is sent.
        let own = ProcessNews::Probed {
            pid,
            answered: true,
            digest: Some(s.config.digest.clone()),
        };
        s.handle_news("A", own, t0);
        assert_eq!(s.os.signals.len(), 1);
        // An answer to a probe sent before it was told proves nothing yet.
        s.handle_news("A", other(pid), t0 + Duration::from_millis(500));
        assert_eq!(s.os.signals.len(), 1);
        // Still on another file a probe period after being told: it refused, so it
        // restarts on the copy.
        s.handle_news("A", other(pid), t0 + Duration::from_millis(1500));
        assert_eq!(
            s.os.signals,
            [(pid, Signal::SIGHUP), (pid, Signal::SIGTERM)]
        );
        s.handle_news("A", exited(pid), t0);
        assert_eq!(s.os.spawned.len(), 2);
    }
}

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

use super::control::{NodeReport, Request, Response};
use super::machine::{Action, Event, NodeMachine, State};
use super::{node_stderr_path, process, RunPaths};
use crate::commands::node_lock_path;
use crate::config::HerdConfig;
use crate::hosts::Endpoint;
use crate::pidlock::PidLock;

/// How often the loop looks at timers, readiness and adopted nodes.
const TICK: Duration = Duration::from_millis(50);

/// Something that happened to a node process, tagged with its pid so that news about an
/// earlier process of the same node is never applied to the current one.
enum ProcessNews {
    Exited {
        pid: u32,
        how: String,
    },
    /// A readiness probe finished; `ready` when the node answered as itself.
    Probed {
        pid: u32,
        ready: bool,
    },
}

type ControlMessage = (Request, oneshot::Sender<Response>);

/// `herdctl supervise`: runs the daemon until a shutdown request (or SIGTERM).
pub fn main(config_path: &std::path::Path) -> Result<ExitCode> {
    let config = HerdConfig::load(config_path)?;
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
        Supervisor::new(config).run(listener).await
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

struct Supervisor {
    config: Arc<HerdConfig>,
    machines: BTreeMap<String, NodeMachine>,
    /// Nodes found running at start-up: not our children, so their end is seen through
    /// their lock rather than waitpid.
    adopted: BTreeSet<String>,
    /// Nodes with a readiness probe in flight.
    probing: BTreeSet<String>,
    news_tx: mpsc::UnboundedSender<(String, ProcessNews)>,
    news_rx: mpsc::UnboundedReceiver<(String, ProcessNews)>,
    shutting_down: bool,
}

impl Supervisor {
    fn new(config: HerdConfig) -> Supervisor {
        let machines = config
            .servers
            .keys()
            .map(|name| (name.clone(), NodeMachine::new(config.supervisor)))
            .collect();
        let (news_tx, news_rx) = mpsc::unbounded_channel();
        Supervisor {
            config: Arc::new(config),
            machines,
            adopted: BTreeSet::new(),
            probing: BTreeSet::new(),
            news_tx,
            news_rx,
            shutting_down: false,
        }
    }

    async fn run(mut self, listener: UnixListener) -> Result<()> {
        self.adopt_running_nodes();
        let (control_tx, mut control_rx) = mpsc::unbounded_channel::<ControlMessage>();
        let mut tick = tokio::time::interval(TICK);
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
                Some((request, reply)) = control_rx.recv() => {
                    let response = self.handle_request(request);
                    let _ = reply.send(response);
                }
                Some((name, news)) = self.news_rx.recv() => self.handle_news(&name, news),
                _ = tick.tick() => {
                    self.on_tick();
                    if self.shutting_down && self.machines.values().all(|m| m.state == State::Stopped) {
                        tracing::info!("every node stopped; supervisor exiting");
                        return Ok(());
                    }
                }
                _ = terminate.recv() => {
                    // Leave the nodes serving: the next supervisor adopts them.
                    tracing::info!("SIGTERM: supervisor exiting, nodes left running");
                    return Ok(());
                }
            }
        }
    }

    /// Nodes still running from an earlier supervisor (or started by hand) are adopted with
    /// their real pid and start time.
    fn adopt_running_nodes(&mut self) {
        let now = Instant::now();
        let names: Vec<String> = self.machines.keys().cloned().collect();
        for name in names {
            let lock = node_lock_path(&self.config, &name);
            if let Ok(Some(pid)) = PidLock::holder(&lock) {
                let started = process::process_start(pid).unwrap_or(now);
                tracing::info!("adopted {name} (pid {pid})");
                self.adopted.insert(name.clone());
                self.apply(&name, Event::Adopted { pid, started }, now);
            }
        }
    }

    fn handle_request(&mut self, request: Request) -> Response {
        let now = Instant::now();
        let named: &[String] = match &request {
            Request::Start { names } | Request::Stop { names } => names,
            Request::Kill { name } => std::slice::from_ref(name),
            Request::Status | Request::Shutdown => &[],
        };
        if let Some(unknown) = named.iter().find(|n| !self.machines.contains_key(*n)) {
            return Response::Error {
                message: format!("no server named {unknown:?}"),
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
            self.machines.keys().cloned().collect()
        } else {
            names
        }
    }

    fn handle_news(&mut self, name: &str, news: ProcessNews) {
        let now = Instant::now();
        let current = self.machines[name].pid;
        match news {
            ProcessNews::Exited { pid, how } if current == Some(pid) => {
                tracing::info!("{name} (pid {pid}) {how}");
                self.apply(name, Event::Exited { how }, now);
            }
            ProcessNews::Probed { pid, ready } => {
                self.probing.remove(name);
                if ready && current == Some(pid) && self.machines[name].state == State::Starting {
                    tracing::info!("{name} (pid {pid}) ready");
                    self.apply(name, Event::Ready, now);
                }
            }
            ProcessNews::Exited { .. } => {} // about a process that is no longer this node's
        }
    }

    fn on_tick(&mut self) {
        let now = Instant::now();
        let names: Vec<String> = self.machines.keys().cloned().collect();
        for name in names {
            self.apply(&name, Event::Tick, now);
            let machine = &self.machines[&name];
            let Some(pid) = machine.pid else { continue };
            if self.adopted.contains(&name) {
                let lock = node_lock_path(&self.config, &name);
                if PidLock::holder(&lock).ok().flatten() != Some(pid) {
                    let _ = self.news_tx.send((
                        name.clone(),
                        ProcessNews::Exited {
                            pid,
                            how: "exited (adopted: status unknown)".into(),
                        },
                    ));
                }
            }
            if machine.state == State::Starting && !self.probing.contains(&name) {
                self.probing.insert(name.clone());
                let address = self.config.local_endpoint(&self.config.servers[&name]);
                let news = self.news_tx.clone();
                let probe_name = name.clone();
                tokio::spawn(async move {
                    let ready = answers_as(address, pid).await;
                    let _ = news.send((probe_name, ProcessNews::Probed { pid, ready }));
                });
            }
        }
    }

    /// Feeds an event to a node's machine and carries out the action it asks for.
    fn apply(&mut self, name: &str, event: Event, now: Instant) {
        let Some(action) = self.machines.get_mut(name).unwrap().handle(event, now) else {
            return;
        };
        match action {
            Action::Spawn => self.spawn(name, now),
            Action::Terminate(pid) => self.signal(name, pid, Signal::SIGTERM),
            Action::Kill(pid) => self.signal(name, pid, Signal::SIGKILL),
        }
    }

    fn spawn(&mut self, name: &str, now: Instant) {
        self.adopted.remove(name);
        let stderr = node_stderr_path(&self.config, name);
        match process::spawn_node(&self.config, name, &stderr) {
            Ok(mut child) => {
                let pid = child.id().expect("a just-spawned child has a pid");
                tracing::info!("started {name} (pid {pid})");
                self.apply(name, Event::Spawned { pid }, now);
                let news = self.news_tx.clone();
                let name = name.to_owned();
                tokio::spawn(async move {
                    let how = match child.wait().await {
                        Ok(status) => process::describe_exit(status),
                        Err(e) => format!("lost track: {e}"),
                    };
                    let _ = news.send((name, ProcessNews::Exited { pid, how }));
                });
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

    fn signal(&self, name: &str, pid: u32, signal: Signal) {
        tracing::info!("sending {signal} to {name} (pid {pid})");
        if let Err(e) = process::signal_node(pid, signal) {
            tracing::warn!("{e:#}");
        }
    }

    fn reports(&self, now: Instant) -> Vec<NodeReport> {
        self.machines
            .iter()
            .map(|(name, m)| NodeReport {
                name: name.clone(),
                state: m.state,
                pid: m.pid,
                port: self.config.servers[name].port,
                uptime_ms: m
                    .since
                    .filter(|_| m.pid.is_some())
                    .map(|s| now.saturating_duration_since(s).as_millis() as u64),
                restarts: m.restarts,
                last_exit: m.last_exit.clone(),
                backoff_ms: m.backoff_remaining(now).map(|d| d.as_millis() as u64),
                crashes_this_start: m.crashes_since_start,
            })
            .collect()
    }
}

/// Whether the node on `address` answers `HERD STATUS` as process `pid`: the port merely
/// accepting could be some other program squatting on it.
async fn answers_as(address: Endpoint, pid: u32) -> bool {
    let figures = super::ask_figures(address, Duration::from_secs(2)).await;
    figures.is_some_and(|f| f.pid == pid)
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

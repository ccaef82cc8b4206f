//! The supervisor's client: one connection per request over the control socket, and
//! starting the daemon (detached, in its own session) when none runs.

use super::*;

/// A connection-per-request client of the supervisor, with the runtime it needs.
pub(super) struct SupervisorClient {
    pub(super) runtime: tokio::runtime::Runtime,
    pub(super) paths: RunPaths,
    pub(super) config: HerdConfig,
}

impl SupervisorClient {
    pub(super) fn new(config: HerdConfig) -> Result<SupervisorClient> {
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
    pub(super) fn pid(&self) -> Option<u32> {
        PidLock::holder(&self.paths.lock).ok().flatten()
    }

    pub(super) fn call(&self, request: &Request) -> Result<Vec<NodeReport>> {
        match self.ask(request)? {
            Response::Ok { nodes } => Ok(nodes),
            Response::Reloaded(report) => Ok(report.nodes),
            Response::Error { message } => bail!("{message}"),
        }
    }

    pub(super) fn ask(&self, request: &Request) -> Result<Response> {
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
    pub(super) fn ensure_running(&self) -> Result<()> {
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
    pub(super) fn spawn_daemon(&self) -> Result<std::process::Child> {
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

//! The thin OS layer under the supervisor: spawning nodes in their own process groups,
//! signalling them, probing them, and reading facts about a process from /proc. The daemon
//! reaches all of it through [`NodeOs`], so its logic runs in tests against a fake.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::{getpgid, Pid};
use tokio::process::{Child, Command};
use tokio::sync::mpsc::UnboundedSender;

use super::{files, node_stderr_path};
use herd_config::config::HerdConfig;
use herd_os::pidlock::PidLock;

/// Something that happened to a node process, tagged with its pid so that news about an
/// earlier process of the same node is never applied to the current one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcessNews {
    Exited {
        pid: u32,
        how: String,
        /// The last line it wrote to stderr.
        last_words: Option<String>,
    },
    /// A probe finished; `answered` when the node answered as itself in time, `digest`
    /// of the herd file it says it runs.
    Probed {
        pid: u32,
        answered: bool,
        digest: Option<String>,
    },
}

/// What the supervisor asks of the operating system. Calls return at once; what happens
/// later (an exit, a probe's answer) arrives as [`ProcessNews`] for the named node.
pub trait NodeOs {
    /// Starts node `name`; returns its pid.
    fn spawn(&mut self, config: &HerdConfig, name: &str) -> Result<u32>;
    fn signal(&mut self, pid: u32, signal: Signal);
    /// Asks node `name` whether it answers as process `pid` within `timeout`, on its admin
    /// endpoint's `path` (`/readyz` while it starts, `/healthz` once it runs).
    fn probe(
        &mut self,
        config: &HerdConfig,
        name: &str,
        pid: u32,
        timeout: Duration,
        path: &'static str,
    );
    /// The pid holding node `name`'s lock: alive, whoever started it.
    fn lock_holder(&self, config: &HerdConfig, name: &str) -> Option<u32>;
    /// When process `pid` started.
    fn process_start(&self, pid: u32) -> Option<Instant>;
    /// Whether process `pid` is stopped by a signal (SIGSTOP: `herdctl pause`).
    fn is_frozen(&self, pid: u32) -> bool;
    /// The last line node `name`'s latest run wrote to stderr.
    fn last_words(&self, config: &HerdConfig, name: &str) -> Option<String>;
    /// Makes `text` the applied copy that nodes start from (see `RunPaths::applied`).
    fn write_applied_copy(&mut self, config: &HerdConfig, text: &str) -> Result<()>;
}

/// The real thing: child processes, signals, TCP probes, lock files. Needs a tokio runtime.
pub struct RealOs {
    news: UnboundedSender<(String, ProcessNews)>,
}

impl RealOs {
    pub fn new(news: UnboundedSender<(String, ProcessNews)>) -> RealOs {
        RealOs { news }
    }
}

impl NodeOs for RealOs {
    fn spawn(&mut self, config: &HerdConfig, name: &str) -> Result<u32> {
        let stderr = node_stderr_path(config, name);
        let mut child = spawn_node(config, name, &stderr)?;
        let pid = child.id().context("the new process has no pid")?;
        let news = self.news.clone();
        let name = name.to_owned();
        tokio::spawn(async move {
            let how = match child.wait().await {
                Ok(status) => describe_exit(status),
                Err(e) => format!("lost track: {e}"),
            };
            let last_words = files::last_words(&stderr);
            let _ = news.send((
                name,
                ProcessNews::Exited {
                    pid,
                    how,
                    last_words,
                },
            ));
        });
        Ok(pid)
    }

    fn signal(&mut self, pid: u32, signal: Signal) {
        if let Err(e) = signal_node(pid, signal) {
            tracing::warn!("{e:#}");
        }
    }

    fn probe(
        &mut self,
        config: &HerdConfig,
        name: &str,
        pid: u32,
        timeout: Duration,
        path: &'static str,
    ) {
        let Some(server) = config.servers.get(name) else {
            return; // removed by a reload, and being stopped
        };
        // On the admin endpoint, never the client port: a client holding every client slot
        // must not make the node look dead.
        let config = config.clone();
        let server = server.clone();
        let news = self.news.clone();
        let name = name.to_owned();
        tokio::spawn(async move {
            // The right process: the port merely answering could be some other program
            // squatting on it.
            let answer = crate::admin::probe(&config, &server, path, timeout)
                .await
                .filter(|a| a.pid == pid);
            let probed = ProcessNews::Probed {
                pid,
                answered: answer.is_some(),
                digest: answer.and_then(|a| a.config),
            };
            let _ = news.send((name, probed));
        });
    }

    fn lock_holder(&self, config: &HerdConfig, name: &str) -> Option<u32> {
        PidLock::holder(&config.node_lock_path(name)).ok().flatten()
    }

    fn process_start(&self, pid: u32) -> Option<Instant> {
        process_start(pid)
    }

    fn is_frozen(&self, pid: u32) -> bool {
        is_frozen(pid)
    }

    fn last_words(&self, config: &HerdConfig, name: &str) -> Option<String> {
        files::last_words(&node_stderr_path(config, name))
    }

    fn write_applied_copy(&mut self, config: &HerdConfig, text: &str) -> Result<()> {
        super::write_applied_copy(config, text)
    }
}

/// Starts `herdctl run NAME` on the supervisor's applied copy of the herd file, in its own
/// process group, stderr appended to `stderr_path`.
pub fn spawn_node(config: &HerdConfig, name: &str, stderr_path: &Path) -> Result<Child> {
    let exe = std::env::current_exe().context("cannot find the herdctl executable")?;
    let stderr = files::open_node_stderr(stderr_path, name)
        .with_context(|| format!("cannot open {}", stderr_path.display()))?;
    Command::new(exe)
        .arg("--config")
        .arg(&config.path)
        .args(["run", name, "--applied-copy"])
        .arg(super::applied_copy_path(config))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        // Its own group: a signal for the node never reaches the supervisor or its siblings.
        .process_group(0)
        .kill_on_drop(false)
        .spawn()
        .with_context(|| format!("cannot start {name}"))
}

/// Signals a node: its whole process group when it leads one (as nodes the supervisor
/// starts do), else just the process (a node someone started by hand).
pub fn signal_node(pid: u32, signal: Signal) -> Result<()> {
    let pid = Pid::from_raw(pid as i32);
    let result = match getpgid(Some(pid)) {
        Ok(group) if group == pid => killpg(group, signal),
        _ => kill(pid, signal),
    };
    match result {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot send {signal} to pid {pid}")),
    }
}

/// When process `pid` started, as an `Instant`, from /proc (so an adopted node's uptime is
/// its real uptime, not the time the supervisor found it).
pub fn process_start(pid: u32) -> Option<Instant> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: skip past its last ')'.
    let after_name = &stat[stat.rfind(')')? + 2..];
    // Field 22 (starttime) is the 20th field after the name.
    let start_ticks: u64 = after_name.split_whitespace().nth(19)?.parse().ok()?;
    let ticks_per_second = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()? as u64;
    let uptime: f64 = std::fs::read_to_string("/proc/uptime")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let age = uptime - start_ticks as f64 / ticks_per_second as f64;
    Instant::now().checked_sub(Duration::from_secs_f64(age.max(0.0)))
}

/// Whether process `pid` is stopped by a signal: state `T` in /proc/PID/stat (a process
/// frozen by `herdctl pause` under an earlier supervisor). Unreadable: not frozen.
pub fn is_frozen(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // Field 3 (state) follows the command name, which may hold spaces and parentheses.
    stat.rfind(')')
        .and_then(|end| stat[end + 1..].split_whitespace().next())
        == Some("T")
}

/// "exit status 1", "killed by SIGKILL": how a process ended, for status and errors.
pub fn describe_exit(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signal)) => match Signal::try_from(signal) {
            Ok(s) => format!("killed by {s}"),
            Err(_) => format!("killed by signal {signal}"),
        },
        _ => status.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_started_in_the_past() {
        let started = process_start(std::process::id()).expect("/proc is readable");
        assert!(started <= Instant::now());
        assert!(started.elapsed() < Duration::from_secs(3600));
        assert!(process_start(u32::MAX / 2).is_none());
    }

    #[test]
    fn a_stopped_process_reads_as_frozen() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id();
        assert!(!is_frozen(pid));
        kill(Pid::from_raw(pid as i32), Signal::SIGSTOP).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !is_frozen(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let frozen = is_frozen(pid);
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(frozen, "SIGSTOP shows as state T");
        assert!(!is_frozen(u32::MAX / 2));
    }

    #[test]
    fn exits_are_described() {
        let status = std::process::Command::new("sh")
            .args(["-c", "exit 3"])
            .status()
            .unwrap();
        assert_eq!(describe_exit(status), "exit status 3");
        let status = std::process::Command::new("sh")
            .args(["-c", "kill -9 $$"])
            .status()
            .unwrap();
        assert_eq!(describe_exit(status), "killed by SIGKILL");
    }
}

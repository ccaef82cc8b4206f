//! The thin OS layer under the supervisor: spawning nodes in their own process groups,
//! signalling them, and reading facts about a process from /proc.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::{getpgid, Pid};
use tokio::process::{Child, Command};

use crate::config::HerdConfig;

/// Starts `herdctl run NAME` in its own process group, stderr to `stderr_path`.
pub fn spawn_node(config: &HerdConfig, name: &str, stderr_path: &Path) -> Result<Child> {
    let exe = std::env::current_exe().context("cannot find the herdctl executable")?;
    let stderr = std::fs::File::create(stderr_path)
        .with_context(|| format!("cannot create {}", stderr_path.display()))?;
    Command::new(exe)
        .arg("--config")
        .arg(&config.path)
        .args(["run", name])
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

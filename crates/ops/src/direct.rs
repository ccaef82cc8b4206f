//! Commands that act on one node directly, with no supervisor: for the engines (systemd, a
//! container runtime) that run `herdctl run NAME` themselves.
//!
//! - `reload --node NAME [--pid PID]`: checks the herd file, sends the node SIGHUP (what
//!   `herdctl run` takes as "re-read the herd file"), and waits until the node reports the
//!   file's digest, so `systemctl reload` fails when the node refused the file. It needs
//!   nothing but this binary (a minimal system has no `/bin/kill`).
//! - `probe NAME [--ready]`: exit 0 when the node's admin endpoint on this machine answers
//!   `/healthz` (`/readyz`) as that node (a container's health check: the image has no
//!   HTTP client but herdctl).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::admin::ProbeAnswer;
use herd_config::config::HerdConfig;
use herd_os::pidlock::PidLock;

/// How long a node has to take a reloaded herd file (the supervisor's `reload` waits as long).
const TAKE_DEADLINE: Duration = Duration::from_secs(10);
/// How long one admin probe may take, connecting included: a health check on a busy host
/// must not call a node that answers in a second and a half dead (Docker's own timeout for
/// a health check command is 30 s).
const ASK_TIMEOUT: Duration = Duration::from_secs(3);
const POLL: Duration = Duration::from_millis(50);

/// `herdctl reload --node NAME [--pid PID]`.
pub fn reload_node(config: &HerdConfig, name: &str, pid: Option<u32>) -> Result<ExitCode> {
    config.server(name)?;
    for warning in &config.warnings {
        eprintln!("herdctl: warning: {warning}");
    }
    let pid = node_pid(config, name, pid)?;
    kill(Pid::from_raw(pid as i32), Signal::SIGHUP)
        .with_context(|| format!("cannot signal {name} (pid {pid})"))?;
    let began = Instant::now();
    loop {
        let answer = ask(config, name, "/healthz");
        if answer.as_ref().and_then(|a| a.config.as_deref()) == Some(config.digest.as_str()) {
            println!(
                "{name} (pid {pid}) reloaded {} in {:.1}s",
                config.path.display(),
                began.elapsed().as_secs_f64()
            );
            return Ok(ExitCode::SUCCESS);
        }
        if began.elapsed() > TAKE_DEADLINE {
            bail!(
                "{name} (pid {pid}) did not take {} within {}s; its log says why (herdctl \
                 tail {name})",
                config.path.display(),
                TAKE_DEADLINE.as_secs()
            );
        }
        std::thread::sleep(POLL);
    }
}

/// The node's pid: the holder of its lock, which must be `expected` when one is given (the
/// engine's main process), so a reload never signals a process that is not this node.
fn node_pid(config: &HerdConfig, name: &str, expected: Option<u32>) -> Result<u32> {
    let lock = config.node_lock_path(name);
    let holder = PidLock::holder(&lock)?;
    match (holder, expected) {
        (Some(holder), Some(expected)) if holder != expected => bail!(
            "{name}'s lock {} is held by pid {holder}, not pid {expected}: is another {name} \
             running from the same run_dir?",
            lock.display()
        ),
        (Some(holder), _) => Ok(holder),
        (None, _) => bail!(
            "{name} is not running here (nothing holds {}); start it first",
            lock.display()
        ),
    }
}

/// `herdctl probe NAME [--ready]`: success when the node answers as itself on its admin
/// endpoint here: alive (`/healthz`), or ready to serve (`/readyz`).
pub fn probe(config: &HerdConfig, name: &str, ready: bool) -> Result<ExitCode> {
    let server = config.server(name)?;
    let path = if ready { "/readyz" } else { "/healthz" };
    match ask(config, name, path) {
        Some(answer) => {
            println!("{name} (pid {}): {}", answer.pid, answer.status);
            Ok(ExitCode::SUCCESS)
        }
        None => bail!(
            "{name} does not answer {path} as itself on {}; see its log (herdctl tail {name})",
            config.local_admin_endpoint(server)
        ),
    }
}

/// The node's answer on its admin endpoint here, when it is 200 and in its own name.
fn ask(config: &HerdConfig, name: &str, path: &str) -> Option<ProbeAnswer> {
    let server = &config.servers[name];
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    runtime
        .block_on(crate::admin::probe(config, server, path, ASK_TIMEOUT))
        .filter(|a| a.name == name)
}

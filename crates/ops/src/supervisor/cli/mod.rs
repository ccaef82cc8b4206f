//! The operator's side: `herdctl start/stop/restart/kill/pause/resume/reload/status`. Each
//! starts the supervisor when it is needed (adopting nodes that are already running), asks it
//! over the control socket, and polls with deadlines until what was asked is true.
//!
//! - `client.rs`: the supervisor's client, and starting the daemon when none runs.
//! - `start.rs`, `stop.rs` (also restart, kill), `pause.rs` (pause, resume), `reload.rs`,
//!   `status.rs`: one command flow each.
//! - `table.rs`: `status` printed as a table.
//! - here: what the flows share (which servers a command acts on, waiting, messages).

mod client;
mod pause;
mod reload;
mod start;
mod status;
mod stop;
mod table;

pub use pause::{pause, resume};
pub use reload::reload;
pub use start::start;
pub use status::status;
pub use stop::{kill, restart, stop};
use {client::*, start::*, status::*, table::*};

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
use super::lifecycle::State;
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

/// Which servers a command may act on from this machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
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
    scope: Scope,
) -> Result<Vec<String>> {
    let running = match scope {
        Scope::Hosted => BTreeMap::new(),
        Scope::HostedOrRunning => running_by_lock(config),
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
    herd_logs::read_back::last_lines_of(path, n)
        .iter()
        .map(|l| format!("  {}", herd_logs::printable(l)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The running supervisor of the herd at `config_path`, for a command on one server `name`
/// of this machine (or one running here): a name that is not such a server is an error.
fn supervisor_for_one(config_path: &Path, name: &str) -> Result<SupervisorClient> {
    let (config, _) = locate::for_running_herd(config_path)?;
    config.server(name)?;
    resolve_targets(
        &config,
        &[name.to_owned()],
        &Locality::look_up(config.hosts())?,
        Scope::HostedOrRunning,
    )?;
    let supervisor = SupervisorClient::new(config)?;
    supervisor.ensure_running()?;
    Ok(supervisor)
}

#[cfg(test)]
mod tests {
    use super::*;

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
            resolve_targets(&config, &names, &here, Scope::Hosted)
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
            resolve_targets(&only_r, &[], &elsewhere, Scope::Hosted).unwrap(),
            ["R"]
        );
        let e = resolve_targets(&only_r, &[], &here, Scope::Hosted)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("no server") && e.contains("R 10.9.9.9, S 10.9.9.8"),
            "{e}"
        );
    }
}

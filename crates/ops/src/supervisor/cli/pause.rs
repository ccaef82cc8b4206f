//! `herdctl pause` and `resume`: SIGSTOP and SIGCONT through the supervisor, so it knows a
//! frozen node is not hung.

use super::*;

/// `herdctl pause NAME`: SIGSTOP through the supervisor, which stops probing it (a frozen
/// node's silence is the point, not a reason to restart it) until `herdctl resume NAME`.
pub fn pause(config_path: &Path, name: &str) -> Result<ExitCode> {
    let (before, after) = freeze_or_thaw(config_path, name, true)?;
    let pid = after.pid.unwrap_or_default();
    match (before.state, after.state) {
        (State::Paused, _) => println!("{name} is already paused (pid {pid})"),
        (_, State::Paused) => {
            wait_until_frozen(name, pid)?;
            println!(
                "{name} paused (pid {pid}, SIGSTOP): it answers nothing and its links time out; \
                 the supervisor leaves it be until: herdctl resume {name}"
            )
        }
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

/// The kernel stops a process when it next runs, not when `kill` returns: on a busy machine
/// a node can still be running a moment after SIGSTOP was sent. "paused" is said only once
/// it is true, so a script that pauses a node and then acts on its silence can trust it.
fn wait_until_frozen(name: &str, pid: u32) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !process::is_frozen(pid) {
        if Instant::now() > deadline {
            bail!(
                "{name} (pid {pid}) was sent SIGSTOP but is still not stopped after 5 s; \
                 see its state with: herdctl status {name}"
            );
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(())
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
pub(super) fn freeze_or_thaw(
    config_path: &Path,
    name: &str,
    pause: bool,
) -> Result<(NodeReport, NodeReport)> {
    let supervisor = supervisor_for_one(config_path, name)?;
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

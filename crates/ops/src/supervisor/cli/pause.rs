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

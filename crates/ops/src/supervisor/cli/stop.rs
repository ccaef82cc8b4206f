//! `herdctl stop`, `restart` and `kill`: through the supervisor, waiting until the
//! processes are gone; nodes it does not know (started by hand) are named.

use super::*;

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
        Scope::HostedOrRunning,
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

pub(super) fn stop_and_wait(supervisor: &SupervisorClient, targets: &[String]) -> Result<()> {
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
pub(super) fn not_ours(alive: &BTreeMap<String, u32>) -> String {
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
pub(super) fn still_serving(
    supervisor: &SupervisorClient,
    names: &[String],
) -> BTreeMap<String, u32> {
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

/// `herdctl restart [all|NAME...]`.
pub fn restart(config_path: &Path, names: &[String]) -> Result<ExitCode> {
    let config = HerdConfig::load(config_path, &Environment::of_process())?;
    locate::check_run_dir(&config)?;
    let targets = resolve_targets(
        &config,
        names,
        &Locality::look_up(config.hosts())?,
        Scope::HostedOrRunning,
    )?;
    let supervisor = SupervisorClient::new(config)?;
    supervisor.ensure_running()?;
    stop_and_wait(&supervisor, &targets)?;
    start_and_wait(&supervisor, &targets, false)
}

/// `herdctl kill NAME`: SIGKILL, as a crash.
pub fn kill(config_path: &Path, name: &str) -> Result<ExitCode> {
    let supervisor = supervisor_for_one(config_path, name)?;
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

//! `herdctl reload`: the supervisor applies the herd file, and this waits until removed
//! servers are gone and told ones run the new file.

use super::*;

/// How long `reload` waits for the nodes it told to report the new file.
pub(super) const TOLD_DEADLINE: Duration = Duration::from_secs(10);

/// `herdctl reload`: has the supervisor re-read the herd file and apply it, prints what it
/// did, and waits until the herd runs it: started and restarted servers up, removed ones
/// stopped, the others reporting the new file.
pub fn reload(config_path: &Path) -> Result<ExitCode> {
    // Checked here first, so a broken file is reported even with no supervisor.
    let config = HerdConfig::load(config_path, &Environment::of_process())?;
    locate::check_run_dir(&config)?;
    for warning in &config.warnings {
        eprintln!("herdctl: warning: {warning}");
    }
    let supervisor = SupervisorClient::new(config)?;
    if supervisor.pid().is_none() && running_by_lock(&supervisor.config).is_empty() {
        println!(
            "nothing runs under {}; `herdctl start` runs {} as it is",
            supervisor.config.run_dir.display(),
            supervisor.config.path.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    supervisor.ensure_running()?;
    let began = Instant::now();
    let report = match supervisor.ask(&Request::Reload)? {
        Response::Reloaded(report) => report,
        Response::Error { message } => bail!("{message}"),
        Response::Ok { .. } => bail!("the supervisor does not know `reload`: restart it"),
    };
    for action in &report.actions {
        println!("{action}");
    }
    let mut failed = false;
    if !report.started.is_empty()
        && start_and_wait(&supervisor, &report.started, false)? != ExitCode::SUCCESS
    {
        failed = true;
    }
    if !report.removed.is_empty() {
        wait_until_removed(&supervisor, &report.removed)?;
    }
    for name in wait_for_digest(
        &supervisor,
        &report.told,
        &report.digest,
        &Locality::look_up(supervisor.config.hosts())?,
    ) {
        eprintln!(
            "herdctl: error: {name} did not take the new herd file within {}s; its log says \
             why (herdctl tail {name})",
            TOLD_DEADLINE.as_secs()
        );
        failed = true;
    }
    if failed {
        return Ok(ExitCode::FAILURE);
    }
    println!(
        "reloaded {} in {:.1}s",
        supervisor.config.path.display(),
        began.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

/// Waits until the supervisor no longer lists `names` (stopped, then dropped).
pub(super) fn wait_until_removed(supervisor: &SupervisorClient, names: &[String]) -> Result<()> {
    let deadline = supervisor.config.supervisor.stop_timeout + START_GRACE;
    let began = Instant::now();
    loop {
        let reports = supervisor.call(&Request::Status)?;
        if !reports.iter().any(|r| names.contains(&r.name)) {
            return Ok(());
        }
        if began.elapsed() > deadline {
            bail!(
                "{} did not stop within {}s",
                names.join(", "),
                deadline.as_secs()
            );
        }
        std::thread::sleep(POLL);
    }
}

/// Waits until each of `names` reports herd file `digest`; returns those that did not in
/// time (a node that refused a file says why in its log).
pub(super) fn wait_for_digest(
    supervisor: &SupervisorClient,
    names: &[String],
    digest: &str,
    here: &Locality,
) -> Vec<String> {
    let began = Instant::now();
    let mut waiting: Vec<String> = names.to_vec();
    while !waiting.is_empty() && began.elapsed() < TOLD_DEADLINE {
        let Ok(reports) = supervisor.call(&Request::Status) else {
            break;
        };
        let asks = where_to_ask(&supervisor.config, &reports, here);
        let token = crate::admin::token(&supervisor.config);
        let figures = supervisor.runtime.block_on(query_figures(asks, token));
        waiting.retain(|name| {
            let running = reports.iter().any(|r| &r.name == name && r.pid.is_some());
            running && figures.get(name).and_then(|f| f.config.as_deref()) != Some(digest)
        });
        if !waiting.is_empty() {
            std::thread::sleep(LINKS_POLL);
        }
    }
    waiting
}

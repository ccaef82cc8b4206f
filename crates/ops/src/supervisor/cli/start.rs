//! `herdctl start`: starts the supervisor if needed, asks it to start the servers, and
//! shows each one's progress until it runs and its links are up (or says why not).

use super::*;

/// `herdctl start [all|NAME...]`.
pub fn start(config_path: &Path, names: &[String]) -> Result<ExitCode> {
    let config = HerdConfig::load(config_path, &Environment::of_process())?;
    locate::check_run_dir(&config)?;
    for warning in &config.warnings {
        eprintln!("herdctl: warning: {warning}");
    }
    let targets = resolve_targets(
        &config,
        names,
        &Locality::look_up(config.hosts())?,
        Scope::Hosted,
    )?;
    // Created here (herd.secret, on first start) so the nodes find it; they would create it
    // themselves just as safely, but a folder that cannot hold it is reported here, once.
    if config.secret.ensure_secret()?.is_none() {
        eprintln!(
            "herdctl: warning: OPEN LINKS (insecure_open_links: true): anyone who reaches a \
             server's port can join the herd"
        );
    }
    let supervisor = SupervisorClient::new(config)?;
    supervisor.ensure_running()?;
    let every = names.is_empty() || names.iter().any(|n| n == "all");
    start_and_wait(&supervisor, &targets, every)
}

/// `end_if_idle`: a `start all` ends the supervisor when every server failed (it would
/// have nothing to supervise); a start of some servers leaves it, and their failures in
/// `status`.
pub(super) fn start_and_wait(
    supervisor: &SupervisorClient,
    targets: &[String],
    end_if_idle: bool,
) -> Result<ExitCode> {
    let began = Instant::now();
    // Running before this start: said "already running", not "started".
    let already: Vec<String> = selected(&supervisor.call(&Request::Status)?, targets)
        .iter()
        .filter(|r| r.state == State::Running)
        .map(|r| r.name.clone())
        .collect();
    let mut reports = supervisor.call(&Request::Start {
        names: targets.to_vec(),
    })?;
    let settings = &supervisor.config.supervisor;
    let deadline = settings.stop_timeout + settings.start_timeout + START_GRACE;
    let progress = Progress::new(selected(&reports, targets).iter().map(|r| r.name.as_str()));
    let mut outcome: BTreeMap<String, std::result::Result<String, String>> = BTreeMap::new();
    loop {
        for report in selected(&reports, targets) {
            if outcome.contains_key(&report.name) {
                continue;
            }
            if report.state == State::Running {
                let pid = report.pid.map_or("?".into(), |p| p.to_string());
                let how = match already.contains(&report.name) {
                    true => "already running",
                    false => "running",
                };
                let done = format!("{how} (pid {pid}, port {})", report.port);
                progress.finish(&report.name, &done);
                outcome.insert(report.name.clone(), Ok(done));
            } else if report.state == State::Paused {
                // Already started, and frozen on purpose: a start does not thaw it.
                let done = format!("paused; thaw it with: herdctl resume {}", report.name);
                progress.finish(&report.name, &done);
                outcome.insert(report.name.clone(), Ok(done));
            } else if report.crashes_this_start > 0 {
                let why = failure_reason(&supervisor.config, report);
                progress.finish(&report.name, "failed");
                outcome.insert(report.name.clone(), Err(why));
            } else {
                progress.update(&report.name, report.state.as_str());
            }
        }
        if outcome.len() == selected(&reports, targets).len() {
            break;
        }
        if began.elapsed() > deadline {
            for report in selected(&reports, targets) {
                outcome.entry(report.name.clone()).or_insert_with(|| {
                    Err(format!(
                        "still {} after {}s",
                        report.state.as_str(),
                        deadline.as_secs()
                    ))
                });
            }
            break;
        }
        std::thread::sleep(POLL);
        reports = supervisor.call(&Request::Status)?;
    }
    progress.clear();

    let failed: Vec<String> = outcome
        .iter()
        .filter(|(_, o)| o.is_err())
        .map(|(n, _)| n.clone())
        .collect();
    if !failed.is_empty() {
        // A node that cannot start now would only flap: leave it stopped, reason on record.
        supervisor.call(&Request::Stop {
            names: failed.clone(),
        })?;
        if end_if_idle {
            shut_down_if_idle(supervisor)?;
        }
    }
    for (name, result) in &outcome {
        match result {
            Ok(done) => println!("{name:<12} {done}"),
            Err(why) => eprintln!("herdctl: error: {name} failed to start: {why}"),
        }
    }
    if failed.is_empty() {
        let started: Vec<String> = outcome.keys().cloned().collect();
        if !wait_for_links(
            supervisor,
            &started,
            &Locality::look_up(supervisor.config.hosts())?,
        ) {
            eprintln!(
                "herdctl: note: some peer links are still forming; `herdctl status` shows them"
            );
        }
        let started = outcome.len() - already.len();
        let took = began.elapsed().as_secs_f64();
        match (started, already.len()) {
            (0, n) => println!("{} already running; nothing to start", plural(n, "server")),
            (started, 0) => println!("{} started in {took:.1}s", plural(started, "server")),
            (started, n) => println!(
                "{} started in {took:.1}s; {n} already running",
                plural(started, "server")
            ),
        }
        Ok(ExitCode::SUCCESS)
    } else {
        Ok(ExitCode::FAILURE)
    }
}

/// Ends the supervisor when it has nothing left to supervise (every node stopped or fatal,
/// e.g. a `start all` that failed for every server), once the nodes it stops are gone.
pub(super) fn shut_down_if_idle(supervisor: &SupervisorClient) -> Result<()> {
    let deadline = supervisor.config.supervisor.stop_timeout + START_GRACE;
    let began = Instant::now();
    let idle = loop {
        let reports = supervisor.call(&Request::Status)?;
        if reports.iter().any(|r| r.state == State::Stopping) && began.elapsed() < deadline {
            std::thread::sleep(POLL);
            continue;
        }
        break reports
            .iter()
            .all(|r| matches!(r.state, State::Stopped | State::Fatal));
    };
    if idle {
        supervisor.call(&Request::Shutdown)?;
        wait_for("the supervisor to exit", || supervisor.pid().is_none())?;
        eprintln!("herdctl: note: no server runs, so the supervisor exited too");
    }
    Ok(())
}

/// How long `start` waits for peer links once its nodes answer.
pub(super) const LINKS_DEADLINE: Duration = Duration::from_secs(5);
/// Each poll is a `HERD STATUS` to every running node, two lines in each node's log: poll
/// gently (links form within a few hundred milliseconds).
pub(super) const LINKS_POLL: Duration = Duration::from_millis(200);

/// Waits until every node in `names` has its links up to each neighbour that is running
/// (here or on another host), so
/// an update sent right after `start` floods at once. Best effort: false if the deadline
/// passed first (a link can legitimately stay down, e.g. a neighbour refusing the secret).
pub(super) fn wait_for_links(
    supervisor: &SupervisorClient,
    names: &[String],
    here: &Locality,
) -> bool {
    let began = Instant::now();
    while began.elapsed() < LINKS_DEADLINE {
        let Ok(reports) = supervisor.call(&Request::Status) else {
            return false;
        };
        let asks = where_to_ask(&supervisor.config, &reports, here);
        let token = crate::admin::token(&supervisor.config);
        let figures = supervisor.runtime.block_on(query_figures(asks, token));
        let running = |n: &String| figures.contains_key(n);
        let linked = names.iter().all(|name| {
            let neighbours = &supervisor.config.servers[name].neighbours;
            let expected = neighbours.iter().filter(|n| running(n)).count();
            figures.get(name).is_some_and(|f| f.links_up >= expected)
        });
        if linked {
            return true;
        }
        std::thread::sleep(LINKS_POLL);
    }
    false
}

/// A spinner per node on a terminal; silent otherwise (the summary lines say it all).
pub(super) struct Progress {
    pub(super) bars: BTreeMap<String, ProgressBar>,
    pub(super) multi: MultiProgress,
}

impl Progress {
    pub(super) fn new<'a>(names: impl Iterator<Item = &'a str>) -> Progress {
        let multi = MultiProgress::new();
        let mut bars = BTreeMap::new();
        if std::io::stderr().is_terminal() {
            let style = ProgressStyle::with_template("{spinner} {prefix:<12} {msg}")
                .expect("a valid template");
            for name in names {
                let bar = multi.add(ProgressBar::new_spinner());
                bar.set_style(style.clone());
                bar.set_prefix(name.to_owned());
                bar.set_message("starting");
                bar.enable_steady_tick(Duration::from_millis(100));
                bars.insert(name.to_owned(), bar);
            }
        }
        Progress { bars, multi }
    }

    pub(super) fn update(&self, name: &str, message: &str) {
        if let Some(bar) = self.bars.get(name) {
            bar.set_message(message.to_owned());
        }
    }

    pub(super) fn finish(&self, name: &str, message: &str) {
        if let Some(bar) = self.bars.get(name) {
            bar.finish_with_message(message.to_owned());
        }
    }

    pub(super) fn clear(&self) {
        let _ = self.multi.clear();
    }
}

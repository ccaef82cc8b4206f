//! `herdctl status [--json]`: the supervisor's reports for this machine's servers, the
//! nodes' own figures (`HERD STATUS`, `/status`) for every server, as one row each.

use super::*;

/// Nodes alive by their locks, with their pids: the truth without a supervisor.
pub(super) fn running_by_lock(config: &HerdConfig) -> BTreeMap<String, u32> {
    config
        .servers
        .keys()
        .filter_map(|name| {
            let pid = PidLock::holder(&config.node_lock_path(name))
                .ok()
                .flatten()?;
            Some((name.clone(), pid))
        })
        .collect()
}

/// One row of `herdctl status`.
#[derive(Debug, Serialize)]
pub(super) struct StatusRow {
    pub(super) name: String,
    /// The server's host as herd.yaml gives it.
    pub(super) host: String,
    /// Whether it lives on this machine (process facts from here) or another (asked over
    /// the network: `running` or `unreachable`).
    pub(super) local: bool,
    pub(super) state: String,
    pub(super) pid: Option<u32>,
    pub(super) port: u16,
    pub(super) uptime_s: Option<u64>,
    /// Restarts by this machine's supervisor; unknown (null) for a server of another host.
    pub(super) restarts: Option<u32>,
    pub(super) clients: Option<usize>,
    /// `clients.max` when the node's table is bounded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) clients_max: Option<usize>,
    /// Records that expired on the node since it started (`clients.ttl_s`).
    pub(super) expired: Option<u64>,
    /// Tombstones the node holds: clients forgotten (`herdctl forget`).
    pub(super) forgotten: Option<usize>,
    /// New clients the node refused because its table was full.
    pub(super) refused_full: Option<u64>,
    pub(super) links_up: Option<usize>,
    pub(super) links_total: usize,
    /// Clients the node read back from its store at start-up.
    pub(super) recovered: Option<usize>,
    /// Records anti-entropy brought the node since it started.
    pub(super) synced: Option<u64>,
    /// The node's store error while its store is unhealthy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) store_error: Option<String>,
    /// Wire log lines the node dropped because its log writer fell behind.
    pub(super) log_dropped: Option<u64>,
    /// The node runs without a herd secret (`insecure_open_links: true`).
    pub(super) open_links: Option<bool>,
    /// What neighbours sent that the node refused, by reason.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) peer_dropped: Option<BTreeMap<String, u64>>,
    /// How the last process ended: exit code or signal, and why when the supervisor ended
    /// it (health probes, start timeout, `herdctl kill`).
    pub(super) last_exit: Option<String>,
    /// The last line the last process wrote to stderr (a panic message, an error).
    pub(super) last_words: Option<String>,
    /// For a node in backoff: how long until the supervisor restarts it.
    pub(super) backoff_ms: Option<u64>,
    /// Health probes of the running process unanswered in a row.
    pub(super) failed_probes: u32,
    /// Link faults set on purpose (`herdctl link`): neighbour -> what.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub(super) faults: BTreeMap<String, String>,
    /// Why the supervisor gave up on the node (FATAL), while it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) fatal_reason: Option<String>,
    /// Where its admin endpoint answers (`/metrics`, `/status`, `/healthz`, `/readyz`).
    pub(super) admin_url: String,
    /// Each link as the node sees it (from its admin endpoint's `/status`; `None` when that
    /// could not be read: not running, or no admin token).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) links: Option<Vec<LinkStatus>>,
    /// For a local server with no process: who holds its port instead, if anyone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) port_held_by: Option<String>,
}

/// The state of a server of another host: it answers `HERD STATUS` as itself, or not.
pub(super) const REMOTE_RUNNING: &str = "running";
pub(super) const REMOTE_UNREACHABLE: &str = "unreachable";

/// `herdctl status [--json]`: every server of the herd, from any of its hosts.
pub fn status(config_path: &Path, json: bool) -> Result<ExitCode> {
    let (config, from_copy) = locate::for_running_herd(config_path)?;
    // With the applied copy in use, the warning already said the file differs.
    let text = match from_copy {
        true => None,
        false => std::fs::read_to_string(config_path).ok(),
    };
    let applied = std::fs::read_to_string(crate::supervisor::applied_copy_path(&config)).ok();
    let here = Locality::look_up(config.hosts())?;
    let supervisor = SupervisorClient::new(config)?;
    let supervised = supervisor.pid().is_some();
    let (reports, unlisted): (Vec<NodeReport>, Vec<NodeReport>) = match supervised {
        true => supervisor.call(&Request::Status)?,
        false => reports_without_supervisor(&supervisor.config),
    }
    .into_iter()
    .partition(|r| supervisor.config.servers.contains_key(&r.name));
    let config = &supervisor.config;
    let asks = where_to_ask(config, &reports, &here);
    let local: BTreeMap<String, bool> = asks.iter().map(|a| (a.name.clone(), a.local)).collect();
    let statuses = supervisor
        .runtime
        .block_on(query_status(asks, crate::admin::token(config)));
    let rows: Vec<StatusRow> = reports
        .iter()
        .map(|r| {
            let f = statuses.get(&r.name).map(|(f, _)| f);
            let links = statuses.get(&r.name).and_then(|(_, l)| l.clone());
            let server = &config.servers[&r.name];
            let local = local[&r.name];
            let row = StatusRow {
                name: r.name.clone(),
                host: server.host.to_string(),
                local,
                state: r.state.as_str().to_owned(),
                pid: r.pid,
                port: server.port,
                uptime_s: r.uptime_ms.map(|ms| ms / 1000),
                restarts: Some(r.restarts),
                clients: f.map(|f| f.clients),
                clients_max: f.and_then(|f| f.clients_max),
                expired: f.map(|f| f.expired),
                forgotten: f.map(|f| f.forgotten),
                refused_full: f.map(|f| f.refused_full),
                links_up: f.map(|f| f.links_up),
                // The node's own count when it answers: it runs the file the supervisor
                // applied, which may differ from the file on disk.
                links_total: f.map_or(server.neighbours.len(), |f| f.links_total),
                recovered: f.map(|f| f.recovered),
                synced: f.map(|f| f.synced),
                store_error: f.and_then(|f| f.store_error.clone()),
                log_dropped: f.map(|f| f.log_dropped),
                open_links: f.map(|f| f.open_links),
                peer_dropped: f.map(|f| f.peer_dropped.clone()).filter(|d| !d.is_empty()),
                last_exit: r.last_exit.clone(),
                last_words: r.last_words.clone(),
                backoff_ms: r.backoff_ms,
                failed_probes: r.failed_probes,
                faults: f.map(|f| f.faults.clone()).unwrap_or_default(),
                fatal_reason: r.fatal_reason.clone(),
                admin_url: crate::admin::url(config, server),
                links,
                port_held_by: None,
            };
            if local {
                let port_held_by = match (r.pid, f) {
                    (None, None) => herd_os::port_owner::describe_port(server.port),
                    _ => None,
                };
                return StatusRow {
                    port_held_by,
                    ..row
                };
            }
            StatusRow {
                state: match f {
                    Some(_) => REMOTE_RUNNING,
                    None => REMOTE_UNREACHABLE,
                }
                .to_owned(),
                pid: f.map(|f| f.pid),
                uptime_s: f.map(|f| f.uptime_ms / 1000),
                restarts: None,
                last_exit: None,
                last_words: None,
                backoff_ms: None,
                failed_probes: 0,
                fatal_reason: None,
                ..row
            }
        })
        .collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        print_table(&rows);
    }
    if !supervised && rows.iter().any(|r| r.local) {
        eprintln!(
            "supervisor: not running (states from each server's lock; `herdctl start` starts it)"
        );
    }
    for r in &unlisted {
        eprintln!(
            "note: the supervisor runs {}, which {} no longer lists; `herdctl reload` stops it",
            r.name,
            config.path.display()
        );
    }
    if supervised && text.is_some() && applied.is_some_and(|applied| Some(applied) != text) {
        eprintln!(
            "note: {} has changed since the supervisor applied it; `herdctl reload` applies it",
            supervisor.config.path.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn reports_without_supervisor(config: &HerdConfig) -> Vec<NodeReport> {
    let running = running_by_lock(config);
    let now = Instant::now();
    config
        .servers
        .values()
        .map(|server| {
            let pid = running.get(&server.name).copied();
            NodeReport {
                name: server.name.clone(),
                state: match pid {
                    Some(pid) if process::is_frozen(pid) => State::Paused,
                    Some(_) => State::Running,
                    None => State::Stopped,
                },
                pid,
                port: server.port,
                uptime_ms: pid
                    .and_then(process::process_start)
                    .map(|s| now.saturating_duration_since(s).as_millis() as u64),
                restarts: 0,
                last_exit: None,
                last_words: None,
                backoff_ms: None,
                crashes_this_start: 0,
                failed_probes: 0,
                fatal_reason: None,
                start_queued: false,
            }
        })
        .collect()
}

/// Whom to ask for figures, and where.
pub(super) struct Ask {
    pub(super) name: String,
    pub(super) local: bool,
    /// `None`: a local server with no process, nothing to ask.
    pub(super) endpoint: Option<Endpoint>,
    /// Its admin endpoint, on the same host as `endpoint`.
    pub(super) admin: Option<Endpoint>,
}

/// A server is local when it lives on this machine or runs here anyway (it moved while
/// running): local ones are asked on their local address when they have a process; every
/// other one is asked across the network, since only it can say whether it runs.
/// A server the supervisor reports but the herd file no longer names (removed, not yet
/// reloaded or still stopping) has no address to ask at: it is left out.
pub(super) fn where_to_ask(
    config: &HerdConfig,
    reports: &[NodeReport],
    here: &Locality,
) -> Vec<Ask> {
    reports
        .iter()
        .filter_map(|r| {
            let server = config.servers.get(&r.name)?;
            let reach = config.reach(server, here, r.pid.is_some());
            // A local server with no process: nothing to ask.
            let asked = !reach.local || r.pid.is_some();
            Some(Ask {
                name: r.name.clone(),
                local: reach.local,
                endpoint: asked.then_some(reach.endpoint),
                admin: asked.then_some(reach.admin),
            })
        })
        .collect()
}

/// How long a server has to answer `HERD STATUS`, name resolution and connecting included.
pub(super) const FIGURES_TIMEOUT: Duration = Duration::from_secs(1);

/// Asks each server for its own figures, all at once, each with a short timeout: its admin
/// endpoint's `/status` (figures and links), else `HERD STATUS` on its client port (figures
/// only: a herd without a secret has no admin token). Only an answer in the server's own
/// name counts (anything else on that address is not it).
pub(super) async fn query_status(
    asks: Vec<Ask>,
    token: Option<String>,
) -> BTreeMap<String, (NodeFigures, Option<Vec<LinkStatus>>)> {
    // Spawned, so a server that hangs costs its own timeout, not everyone's in turn.
    let queries: Vec<_> = asks
        .into_iter()
        .filter_map(|ask| {
            let endpoint = ask.endpoint?;
            let admin = ask.admin;
            let token = token.clone();
            Some(tokio::spawn(async move {
                if let Some(admin) = admin {
                    let status =
                        crate::admin::status(&admin, token.as_deref(), FIGURES_TIMEOUT).await;
                    if let Some(status) = status.filter(|s| s.figures.name == ask.name) {
                        return Some((ask.name, (status.figures, Some(status.links))));
                    }
                }
                let figures = crate::supervisor::ask_figures(endpoint, FIGURES_TIMEOUT).await;
                figures
                    .filter(|f| f.name == ask.name)
                    .map(|f| (ask.name, (f, None)))
            }))
        })
        .collect();
    let mut out = BTreeMap::new();
    for query in queries {
        if let Ok(Some((name, figures))) = query.await {
            out.insert(name, figures);
        }
    }
    out
}

/// Each server's figures alone (see [`query_status`]).
pub(super) async fn query_figures(
    asks: Vec<Ask>,
    token: Option<String>,
) -> BTreeMap<String, NodeFigures> {
    query_status(asks, token)
        .await
        .into_iter()
        .map(|(name, (figures, _))| (name, figures))
        .collect()
}

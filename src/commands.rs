//! What each CLI command does. Each returns the process exit code or an error that `main`
//! prints as one line.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, oneshot, watch};

use herd_config::config::{Environment, HerdConfig, PlacesConfig};
use herd_node::table::Table;
use herd_node::Reload;
use herd_node::Start;
use herd_os::pidlock::PidLock;
use herd_places::deferred::Deferred;
use herd_places::google::Google;
use herd_places::offline::OfflineIndex;
use herd_places::x::XRecentSearch;
use herd_places::PlacesProvider;

/// Where `herdctl run` reads its herd file: the file itself, or the supervisor's copy of the
/// file it applied (so a node it starts runs what it runs, whatever the file says now).
#[derive(Debug, Clone)]
pub struct HerdSource {
    pub path: std::path::PathBuf,
    pub applied_copy: Option<std::path::PathBuf>,
}

impl HerdSource {
    pub fn load(&self) -> Result<HerdConfig> {
        match &self.applied_copy {
            Some(copy) => HerdConfig::load_copy(copy, &self.path, &Environment::of_process()),
            None => HerdConfig::load(&self.path, &Environment::of_process()),
        }
    }
}

/// `herdctl run NAME [--log-stdout]`: one node in the foreground until SIGTERM or SIGINT.
/// SIGHUP re-reads the herd file and applies it live (or refuses it, saying why, and runs
/// on).
pub fn run(source: &HerdSource, name: &str, log_stdout: bool) -> Result<ExitCode> {
    let started = Instant::now();
    // Its store, logs and lock hold clients' locations: this user's only, sled's files too.
    herd_os::private::restrict_umask();
    let config = source.load()?;
    config.server(name)?;
    let secret = config.secret.ensure_secret()?;
    // Held until the process exits: it is how the supervisor (and a second `run`) can tell
    // this node is alive, whoever started it.
    let _lock = match PidLock::acquire(&config.node_lock_path(name))? {
        Ok(lock) => lock,
        Err(pid) => {
            bail!("{name} is already running (pid {pid}); stop it first with: herdctl stop {name}")
        }
    };
    let (log, _log_guard) = herd_logs::init_node_logging(&config.logs, name, log_stdout)?;
    let log = Arc::new(log);
    herd_os::panics::log_panics();
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    // Before the listener and the links: a restarted node serves what it had at once. A
    // user's places file is read meanwhile (both can take a while); the embedded index is
    // built on its own thread past this point (`build_places`).
    let table = Arc::new(Table::new());
    // Before the store is read: what expired while the node was down is not loaded.
    table.set_lifecycle(&config.clients, herd_wire::clock::now_nanos());
    let (places, opened) = std::thread::scope(|scope| {
        let places = scope.spawn(|| build_places(&config.places));
        let opened = herd_node::open_store(&config, name, &table);
        let places = places
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (places, opened)
    });
    let places = places?;
    let (store, report) = opened?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.node_threads_here())
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let served = runtime.block_on(async {
        let (stop, stopped) = watch::channel(false);
        let mut terminate = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
        let mut interrupt = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
        tokio::spawn(async move {
            let which = tokio::select! {
                _ = terminate.recv() => "SIGTERM",
                _ = interrupt.recv() => "SIGINT",
            };
            tracing::info!("{which} received, stopping");
            let _ = stop.send(true);
        });
        // Before the node listens: a SIGHUP from then on is a reload, never the end.
        let hangup = signal(SignalKind::hangup()).context("cannot watch SIGHUP")?;
        let (reloads, reload_rx) = mpsc::unbounded_channel();
        tokio::spawn(reload_on_hangup(
            hangup,
            source.clone(),
            config.logs.clone(),
            Arc::clone(&log),
            reloads,
        ));
        let start = Start {
            table,
            store: Some((Arc::clone(&store), report)),
            log: log.wire(),
            secret,
        };
        herd_node::run(config, name, places, started, start, stopped, reload_rx).await
    });
    // Dropping the runtime ends every connection task, so nothing is accepted after this
    // close: a graceful stop loses no accepted update, whatever the durability mode.
    drop(runtime);
    let flushed = store.close();
    match &flushed {
        Ok(()) => tracing::info!("store {} flushed", store.dir().display()),
        Err(e) => tracing::error!("{e:#}"),
    }
    served?;
    flushed?;
    Ok(ExitCode::SUCCESS)
}

/// On each SIGHUP: re-reads and validates the herd file, has the node apply it, and switches
/// the log files if their settings changed. Any error leaves everything as it was.
async fn reload_on_hangup(
    mut hangup: tokio::signal::unix::Signal,
    source: HerdSource,
    mut logs: herd_config::config::LogSettings,
    log: Arc<herd_logs::NodeLog>,
    reloads: mpsc::UnboundedSender<Reload>,
) {
    while hangup.recv().await.is_some() {
        let outcome = async {
            let config = source.load()?;
            let digest = config.digest.clone();
            let new_logs = config.logs.clone();
            let prepared = match new_logs != logs {
                true => Some(log.prepare(&new_logs)?),
                false => None,
            };
            let (done, answer) = oneshot::channel();
            reloads
                .send(Reload { config, done })
                .map_err(|_| anyhow::anyhow!("the node is stopping"))?;
            let changes = answer.await.context("the node is stopping")??;
            if let Some(prepared) = prepared {
                log.install(prepared);
                logs = new_logs;
            }
            anyhow::Ok((digest, changes))
        };
        match outcome.await {
            Ok((digest, changes)) if changes.is_empty() => {
                tracing::info!("reloaded the herd file ({digest}): nothing changes here");
            }
            Ok((digest, changes)) => {
                tracing::info!("reloaded the herd file ({digest}): {}", changes.join("; "));
            }
            Err(e) => tracing::error!("reload refused, running on unchanged: {e:#}"),
        }
    }
}

/// `herdctl check`: validate the herd file and describe the herd.
pub fn check(config_path: &Path) -> Result<ExitCode> {
    let config = HerdConfig::load(config_path, &Environment::of_process())?;
    for warning in &config.warnings {
        eprintln!("herdctl: warning: {warning}");
    }
    println!(
        "{}: {}",
        config.path.display(),
        herd_ops::supervisor::cli::plural(config.servers.len(), "server")
    );
    println!("  herd secret: {}", config.secret.describe());
    for server in config.servers.values() {
        let neighbours: Vec<&str> = server.neighbours.iter().map(String::as_str).collect();
        let listen = match server.listen {
            Some(ip) => format!(
                " (listens on {})",
                std::net::SocketAddr::new(ip, server.port)
            ),
            None => String::new(),
        };
        println!(
            "  {:<12} {}{listen}  links: {}",
            server.name,
            config.endpoint(server),
            if neighbours.is_empty() {
                "none".to_owned()
            } else {
                neighbours.join(", ")
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The places provider the herd file asks for. A provider whose secret is missing from the
/// environment is an error naming the variable, so the node refuses to start.
pub fn build_places(places: &PlacesConfig) -> Result<Arc<dyn PlacesProvider>> {
    match places {
        // A user's file is read now, so a bad one stops the start with its line number.
        PlacesConfig::Offline { file: Some(file) } => {
            Ok(Arc::new(OfflineIndex::from_csv_path(file)?))
        }
        // The embedded index cannot fail; only WHATSAT needs it, so the node listens (and
        // links, and serves IAMAT) while it is built.
        PlacesConfig::Offline { file: None } => Ok(Arc::new(
            Deferred::build("offline", OfflineIndex::embedded)
                .context("cannot start a thread to build the offline places index")?,
        )),
        PlacesConfig::Google(settings) => {
            let google = Google::provider(settings, Google::key_from_env()?)?;
            tracing::info!(
                "places: google ({:?} API) at {}, {}",
                settings.api,
                settings.upstream.endpoint,
                upstream_settings(&settings.upstream)
            );
            Ok(Arc::new(google))
        }
        PlacesConfig::X(u) => {
            let x = XRecentSearch::provider(u, XRecentSearch::token_from_env()?)?;
            tracing::info!(
                "places: x (recent search) at {}, {}",
                herd_places::x::search_url(&u.endpoint),
                upstream_settings(u)
            );
            Ok(Arc::new(x))
        }
    }
}

/// A web-service provider's settings for its start-up log line.
fn upstream_settings(u: &herd_config::config::UpstreamSettings) -> String {
    format!(
        "timeout {} ms, cache {} s x {} entries, budget {} requests/s and {} in flight",
        u.timeout.as_millis(),
        u.cache_ttl.as_secs(),
        u.cache_entries,
        u.max_requests_per_s,
        u.max_in_flight
    )
}

/// `herdctl certs init|issue|show`.
pub fn certs(path: &Path, command: &crate::cli::Certs) -> Result<()> {
    use crate::cli::Certs;
    use herd_config::tls::certs;
    let config = HerdConfig::load(path, &Environment::of_process())?;
    let dir = |d: &Option<std::path::PathBuf>| certs::folder(&config, d.as_deref());
    match command {
        Certs::Init { dir: d } => certs::init(&config, &dir(d)),
        Certs::Issue { name, dir: d } => certs::issue(&config, &dir(d), name),
        Certs::Show { dir: d } => certs::show(&dir(d)),
    }
}

//! What each CLI command does. Each returns the process exit code or an error that `main`
//! prints as one line.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

use crate::config::{HerdConfig, PlacesConfig};
use crate::node::table::Table;
use crate::node::Start;
use crate::pidlock::PidLock;
use crate::places::google::Google;
use crate::places::offline::OfflineIndex;
use crate::places::x::XRecentSearch;
use crate::places::PlacesProvider;

/// `herdctl run NAME [--log-stdout]`: one node in the foreground until SIGTERM or SIGINT.
pub fn run(config_path: &Path, name: &str, log_stdout: bool) -> Result<ExitCode> {
    let started = Instant::now();
    let config = HerdConfig::load(config_path)?;
    config.server(name)?;
    // Held until the process exits: it is how the supervisor (and a second `run`) can tell
    // this node is alive, whoever started it.
    let _lock = match PidLock::acquire(&node_lock_path(&config, name))? {
        Ok(lock) => lock,
        Err(pid) => {
            bail!("{name} is already running (pid {pid}); stop it first with: herdctl stop {name}")
        }
    };
    let (log, _log_guard) = crate::logs::init_node_logging(&config.logs, name, log_stdout)?;
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    // Before the listener and the links: a restarted node serves what it had at once. The
    // places index is built meanwhile (both take a while: a big store, the embedded index).
    let table = Arc::new(Table::new());
    let (places, opened) = std::thread::scope(|scope| {
        let places = scope.spawn(|| build_places(&config.places));
        let opened = crate::node::open_store(&config, name, &table);
        let places = places
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (places, opened)
    });
    let places = places?;
    let (store, report) = opened?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
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
        let start = Start {
            table,
            store: Some((Arc::clone(&store), report)),
            log,
        };
        crate::node::run(config, name, places, started, start, stopped).await
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

/// `herdctl check`: validate the herd file and describe the herd.
pub fn check(config_path: &Path) -> Result<ExitCode> {
    let config = HerdConfig::load(config_path)?;
    for warning in &config.warnings {
        eprintln!("herdctl: warning: {warning}");
    }
    println!(
        "{}: {} servers",
        config.path.display(),
        config.servers.len()
    );
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
        PlacesConfig::Offline { file } => Ok(Arc::new(match file {
            Some(file) => OfflineIndex::from_csv_path(file)?,
            None => OfflineIndex::embedded(),
        })),
        PlacesConfig::Google(settings) => {
            let google = Google::provider(settings, Google::key_from_env()?)?;
            let u = &settings.upstream;
            tracing::info!(
                "places: google ({:?} API) at {}, timeout {} ms, cache {} s x {} entries",
                settings.api,
                u.endpoint,
                u.timeout.as_millis(),
                u.cache_ttl.as_secs(),
                u.cache_entries
            );
            Ok(Arc::new(google))
        }
        PlacesConfig::X(u) => {
            let x = XRecentSearch::provider(u, XRecentSearch::token_from_env()?)?;
            tracing::info!(
                "places: x (recent search) at {}, timeout {} ms, cache {} s x {} entries",
                crate::places::x::search_url(&u.endpoint),
                u.timeout.as_millis(),
                u.cache_ttl.as_secs(),
                u.cache_entries
            );
            Ok(Arc::new(x))
        }
    }
}

/// The lock file a running node holds.
pub fn node_lock_path(config: &HerdConfig, name: &str) -> std::path::PathBuf {
    config.run_dir.join(format!("{name}.lock"))
}

//! The supervisor: a background daemon that owns the node processes, and the CLI commands
//! that talk to it over a unix socket.
//!
//! - `lifecycle.rs`: one node's lifecycle as a pure state machine (restart policy, stop
//!   timeout).
//! - `process.rs`: the thin OS layer: spawn, signal, process start time (liveness is
//!   `pidlock.rs`).
//! - `daemon.rs`: the event loop that drives the lifecycles and answers the socket.
//! - `control.rs`: the JSON-lines request/response protocol on the socket.
//! - `files.rs`: the nodes' stderr files and the supervisor's log, appended and rotated.
//! - `cli/`: start/stop/restart/kill/pause/resume/reload/status as the operator runs them.

pub mod cli;
pub mod control;
pub mod daemon;
pub mod files;
pub mod lifecycle;
pub mod locate;
pub mod process;

use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use herd_config::config::HerdConfig;
use herd_config::hosts::Endpoint;
use herd_wire::protocol::{parse_status, NodeFigures};

/// Where the supervisor's files live, all inside the herd's run folder.
pub struct RunPaths {
    pub socket: PathBuf,
    pub lock: PathBuf,
    pub log: PathBuf,
    /// The supervisor's copy of the herd file it applied: the nodes it starts read this, so
    /// they run what it runs even when the file has been edited since.
    pub applied: PathBuf,
}

impl RunPaths {
    pub fn new(config: &HerdConfig) -> RunPaths {
        RunPaths {
            socket: config.run_dir.join("supervisor.sock"),
            lock: config.run_dir.join("supervisor.lock"),
            log: config.logs.dir.join("supervisor.log"),
            applied: applied_copy_path(config),
        }
    }
}

/// The applied copy's file name in the run folder.
pub const APPLIED_COPY: &str = "herd.applied.yaml";

/// See [`RunPaths::applied`].
pub fn applied_copy_path(config: &HerdConfig) -> PathBuf {
    config.run_dir.join(APPLIED_COPY)
}

/// Replaces the applied copy with `text` in one step (written aside, then renamed), mode
/// 0600: the file may hold the herd secret. The file aside is created new (`O_EXCL`), so a
/// link planted under its name is never written through.
pub fn write_applied_copy(config: &HerdConfig, text: &str) -> anyhow::Result<()> {
    use anyhow::Context as _;
    use std::io::Write;
    let path = applied_copy_path(config);
    herd_os::private::folder(&config.run_dir, "run_dir")?;
    let aside = path.with_extension("yaml.new");
    let write = || -> std::io::Result<()> {
        let mut file = herd_os::private::create_new(&aside)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&aside, &path)
    };
    write().with_context(|| format!("cannot write {}", path.display()))
}

/// Where a node's stderr goes when the supervisor starts it (start-up errors land here).
pub fn node_stderr_path(config: &HerdConfig, name: &str) -> PathBuf {
    config.run_dir.join(format!("{name}.stderr"))
}

/// Asks the node on `address` for its own figures (`HERD STATUS`), within `timeout` (name
/// resolution included).
pub async fn ask_figures(address: Endpoint, timeout: Duration) -> Option<NodeFigures> {
    let ask = async {
        let mut stream = address.connect().await.ok()?;
        stream.write_all(b"HERD STATUS\n").await.ok()?;
        let mut line = String::new();
        BufReader::new(&mut stream)
            .read_line(&mut line)
            .await
            .ok()?;
        parse_status(&line)
    };
    tokio::time::timeout(timeout, ask).await.ok().flatten()
}

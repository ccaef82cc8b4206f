//! The command line, as clap derive definitions (they also feed shell completions).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::DEFAULT_CONFIG_PATH;

#[derive(Debug, Parser)]
#[command(
    name = "herdctl",
    version,
    about = "Run and supervise a herd of location servers",
    long_about = "herdctl runs a herd: named TCP servers that take client location reports \
                  (IAMAT), flood them to each other, and answer nearby-place queries (WHATSAT)."
)]
pub struct Cli {
    /// The herd file.
    #[arg(long, global = true, env = "HERD_CONFIG", default_value = DEFAULT_CONFIG_PATH)]
    pub config: PathBuf,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one server in the foreground (what the supervisor, systemd or a container runs).
    Run {
        /// The server's name in the herd file.
        name: String,
    },
    /// Validate the herd file and print the herd it describes.
    Check,
}

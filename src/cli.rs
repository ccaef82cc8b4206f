//! The command line, as clap derive definitions (they also feed shell completions).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

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

/// Which servers a command acts on: `all`, or names from the herd file.
#[derive(Debug, Clone, Args)]
pub struct Targets {
    /// `all` or server names (default: all).
    #[arg(value_name = "all|NAME")]
    pub names: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start servers under the supervisor (starting it if needed) and wait until they answer.
    Start(Targets),
    /// Stop servers: SIGTERM, then SIGKILL after the stop timeout. `stop all` also ends
    /// the supervisor.
    Stop(Targets),
    /// Stop, then start servers.
    Restart(Targets),
    /// SIGKILL a server, as a crash: the supervisor restarts it by its restart policy.
    Kill {
        /// The server's name in the herd file.
        name: String,
    },
    /// Show every server's state, pid, port, uptime, restarts, clients and links.
    Status {
        /// Print a JSON list instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Send one line (or lines from stdin with `-`) to a server and print its reply.
    Send {
        /// The server's name in the herd file.
        name: String,
        /// The line to send, or `-` to send standard input.
        line: String,
    },
    /// Print the end of a server's log (`all`: every server's, interleaved by time).
    Tail {
        /// A server name, or `all`.
        #[arg(value_name = "all|NAME")]
        name: String,
        /// How many lines to print.
        #[arg(short = 'n', long, default_value_t = 20)]
        lines: usize,
        /// Keep printing lines as they are written, across log rotation.
        #[arg(short, long)]
        follow: bool,
    },
    /// Run one server in the foreground (what the supervisor, systemd or a container runs).
    Run {
        /// The server's name in the herd file.
        name: String,
    },
    /// Validate the herd file and print the herd it describes.
    Check,
    /// Print a shell completion script.
    Completions { shell: Shell },
    /// The supervisor daemon itself (started by `herdctl start`; not for direct use).
    #[command(hide = true)]
    Supervise,
}

/// Shells clap_complete can generate for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
    Elvish,
    Powershell,
}

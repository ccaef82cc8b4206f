//! The command line, as clap derive definitions (they also feed shell completions).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

pub use herd_bench::BenchArgs;
use herd_config::config::DEFAULT_CONFIG_PATH;
pub use herd_ops::chaos::ChaosArgs;
pub use herd_ops::link::LinkCommand;
pub use herd_ops::top::TopArgs;

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
    /// Freeze a server (SIGSTOP) as a hung process would be: the supervisor does not restart
    /// it for its silence.
    Pause {
        /// The server's name in the herd file.
        name: String,
    },
    /// Let a paused server run again (SIGCONT); it catches up through its links.
    Resume {
        /// The server's name in the herd file.
        name: String,
    },
    /// Show every server's state, pid, port, uptime, restarts, clients and links.
    Status {
        /// Print a JSON list instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// A live view of the whole herd from every server's admin endpoint: state, uptime,
    /// restarts, clients, requests/s by command, p99 latency, floods in/out per second,
    /// store health, log drops, links (missing neighbours named). Keys: s sorts by the next
    /// column, r reverses, arrows/PgUp/PgDn scroll, q quits. When standard output is not a
    /// terminal it prints a plain table every interval.
    Top(TopArgs),
    /// Ask every server for its table digest and say whether the herd agrees: exit 0 when
    /// it does, 1 when not (naming clients and who lacks their newest record), 2 when a
    /// server cannot be asked.
    Verify {
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Break a link on purpose, or mend it: the two servers apply the fault themselves
    /// (told over the control path, proved with the herd secret). A restart of either end
    /// also clears it.
    #[command(subcommand)]
    Link(LinkCommand),
    /// Remove a client's location from the whole herd: a tombstone, flooded to every server
    /// (one that is down gets it when it comes back) and kept for clients.tombstone_ttl_s.
    /// A later IAMAT with a newer time brings the client back. Log lines already written
    /// are not rewritten (logs.redact keeps ids and locations out of them).
    Forget {
        /// The client id, as its IAMATs give it.
        client: String,
        /// Why, for the log of the server that makes the tombstone (at most 200 bytes).
        #[arg(long, value_name = "TEXT")]
        reason: Option<String>,
        /// The server to tell (default: the first that answers, by name).
        #[arg(long, value_name = "NAME")]
        via: Option<String>,
    },
    /// A seeded run of IAMAT load and random faults, healed at the end, then checked: every
    /// acknowledged update on every server, how long convergence took, stale reads, flood
    /// lines per update. Exit 1 when anything acknowledged was lost or the herd did not
    /// converge.
    Chaos(ChaosArgs),
    /// Send one line (or lines from stdin with `-`) to a server and print its reply.
    Send {
        /// The server's name in the herd file.
        name: String,
        /// The line to send, or `-` to send standard input.
        line: String,
        /// Seconds to wait for a reply (or for more of it) once everything is sent.
        #[arg(long, value_name = "SECS", default_value_t = 5.0)]
        timeout: f64,
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
        /// Print lines as they are in the file: a multi-line reply stays one line, its
        /// newlines escaped as `\n` (by default it is shown as the lines it was).
        #[arg(long)]
        raw: bool,
    },
    /// Run one server in the foreground (what the supervisor, systemd or a container runs).
    /// SIGHUP makes it re-read the herd file and apply it live.
    Run {
        /// The server's name in the herd file.
        name: String,
        /// Also write every log line to standard output, where a container engine collects
        /// logs (the files under log_dir stay the complete record).
        #[arg(long)]
        log_stdout: bool,
        /// Read the herd file's text from this copy (the supervisor's copy of the file it
        /// applied), as if it were the --config file.
        #[arg(long, hide = true, value_name = "PATH")]
        applied_copy: Option<PathBuf>,
    },
    /// Validate the herd file and print the herd it describes.
    Check,
    /// Re-read the herd file and apply it to the running herd: start added servers, stop
    /// removed ones, restart those whose own settings changed, tell the rest live.
    Reload {
        /// Only this node, signalled directly with no supervisor (for systemd's ExecReload):
        /// the herd file is checked, the node sent SIGHUP, and the command waits until the
        /// node runs the new file.
        #[arg(long, value_name = "NAME")]
        node: Option<String>,
        /// The node's pid as its engine knows it (systemd's $MAINPID): refuse to signal if
        /// the node's lock says otherwise.
        #[arg(long, value_name = "PID", requires = "node")]
        pid: Option<u32>,
    },
    /// Exit 0 if the server's admin endpoint on this machine answers as that server, else 1
    /// (a container's health check).
    Probe {
        /// The server's name in the herd file.
        name: String,
        /// Ask whether it is ready to serve (`/readyz`: store loaded, listening) rather than
        /// alive (`/healthz`).
        #[arg(long)]
        ready: bool,
    },
    /// Write the herd as another engine's configuration (systemd units, Kubernetes objects).
    #[command(subcommand)]
    Export(Export),
    /// The herd's certificate authority and its servers' certificates, for TLS links
    /// (`links.tls` in the herd file) and TLS clients (`tls_port`).
    #[command(subcommand)]
    Certs(Certs),
    /// Print a shell completion script.
    Completions { shell: Shell },
    /// Load a running server and measure throughput, latency and propagation.
    Bench(BenchArgs),
    /// The supervisor daemon itself (started by `herdctl start`; not for direct use).
    #[command(hide = true)]
    Supervise,
    /// `all` and the herd's server names, one a line, for the shell completion scripts
    /// (nothing, and success, when the herd file cannot be read).
    #[command(hide = true, name = "complete-names")]
    CompleteNames,
}

/// `herdctl certs`: files in a folder (default `certs` beside the herd file), private to
/// their owner.
#[derive(Debug, Subcommand)]
pub enum Certs {
    /// Create a herd CA (ca.pem, ca.key) and a certificate and key for every server of the
    /// herd file (<Name>.pem, <Name>.key: the server's name as its identity, its host as a
    /// subject alternative name).
    Init {
        /// The folder (default: certs beside the herd file).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Issue (or renew) the certificate of one server, signed by the folder's CA.
    Issue {
        /// The server's name in the herd file.
        name: String,
        /// The folder (default: certs beside the herd file).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Show every certificate of the folder: whose it is, when it expires, who signed it.
    Show {
        /// The folder (default: certs beside the herd file).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

/// `herdctl export`: where the herd should run instead of under herdctl's own supervisor.
#[derive(Debug, Subcommand)]
pub enum Export {
    /// A `herd-<Name>.service` per server (running `herdctl run <Name>`) and a `herd.target`
    /// grouping them.
    Systemd {
        /// The folder to write the units into.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// `all` (every server of the herd) or server names (default: this machine's servers).
        #[arg(value_name = "all|NAME")]
        names: Vec<String>,
    },
    /// A Docker Compose project in DIR: compose.yaml (a service per server, on its own
    /// network, with a volume, restart policy and health check), the herd file the
    /// containers read, and herd.env (0600) with the herd secret.
    Compose {
        /// The container image holding herdctl (see the README for how to build one).
        #[arg(long, value_name = "IMAGE")]
        image: String,
        /// The folder to write the project into.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// Also publish each server's client port on this machine's 127.0.0.1.
        #[arg(long)]
        publish: bool,
    },
    /// Kubernetes objects on standard output (or --out FILE): a ConfigMap with the herd file,
    /// a Secret with the herd secret, and per server a Service and a one-replica StatefulSet
    /// with a volume for its store.
    Kubernetes {
        /// The container image holding herdctl (see the README for how to build one).
        #[arg(long, value_name = "IMAGE")]
        image: String,
        /// The namespace to put every object in (default: kubectl's current one).
        #[arg(long, value_name = "NS")]
        namespace: Option<String>,
        /// Write the objects to this file, readable by this user only (they hold the herd
        /// secret), instead of standard output.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// A Prometheus scrape configuration on standard output: every server's admin endpoint
    /// (`/metrics`), labelled with its server name and host.
    Prometheus {
        /// The file Prometheus reads the admin token from (`/metrics` needs it unless the herd
        /// file says `admin: { open: true }`).
        #[arg(long, value_name = "FILE")]
        token_file: Option<PathBuf>,
        /// Write the admin token into --token-file (created 0600) first.
        #[arg(long)]
        write_token: bool,
    },
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

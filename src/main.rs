//! The herdctl binary: parse the command line, dispatch, turn errors into one line and a
//! non-zero exit.

use std::process::ExitCode;

use clap::Parser;
use herdctl::cli::{Cli, Command, Export};
use herdctl::config::{Environment, HerdConfig};
use herdctl::{
    bench, chaos, client, commands, completions, direct, export, forget, link, supervisor, tail,
    top, verify,
};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return argument_error(e),
    };
    if matches!(
        cli.command,
        Command::Check | Command::Export(_) | Command::Completions { .. }
    ) {
        end_quietly_on_a_closed_pipe();
    }
    let result = match &cli.command {
        Command::Run {
            name,
            log_stdout,
            applied_copy,
        } => {
            let source = commands::HerdSource {
                path: cli.config.clone(),
                applied_copy: applied_copy.clone(),
            };
            commands::run(&source, name, *log_stdout)
        }
        Command::Check => commands::check(&cli.config),
        Command::Certs(certs) => commands::certs(&cli.config, certs).map(|()| ExitCode::SUCCESS),
        Command::Export(Export::Systemd { dir, names }) => {
            export::systemd::export(&cli.config, dir, names)
        }
        Command::Export(Export::Compose {
            image,
            dir,
            publish,
        }) => export::compose::export(&cli.config, image, dir, *publish),
        Command::Export(Export::Kubernetes {
            image,
            namespace,
            out,
        }) => export::kubernetes::export(&cli.config, image, namespace.as_deref(), out.as_deref()),
        Command::Export(Export::Prometheus {
            token_file,
            write_token,
        }) => export::prometheus::export(&cli.config, token_file.as_deref(), *write_token),
        Command::Completions { shell } => completions::print(*shell),
        Command::Send {
            name,
            line,
            timeout,
        } => client::reply_timeout(*timeout).and_then(|timeout| {
            running_herd(&cli.config).and_then(|c| client::send(&c, name, line, timeout))
        }),
        Command::Tail {
            name,
            lines,
            follow,
            raw,
        } => running_herd(&cli.config).and_then(|c| tail::tail(&c, name, *lines, *follow, *raw)),
        Command::Start(targets) => supervisor::cli::start(&cli.config, &targets.names),
        Command::Stop(targets) => supervisor::cli::stop(&cli.config, &targets.names),
        Command::Restart(targets) => supervisor::cli::restart(&cli.config, &targets.names),
        Command::Kill { name } => supervisor::cli::kill(&cli.config, name),
        Command::Pause { name } => supervisor::cli::pause(&cli.config, name),
        Command::Resume { name } => supervisor::cli::resume(&cli.config, name),
        Command::Status { json } => supervisor::cli::status(&cli.config, *json),
        Command::Reload { node: None, .. } => supervisor::cli::reload(&cli.config),
        Command::Reload {
            node: Some(name),
            pid,
        } => HerdConfig::load(&cli.config, &Environment::of_process())
            .and_then(|c| direct::reload_node(&c, name, *pid)),
        Command::Probe { name, ready } => HerdConfig::load(&cli.config, &Environment::of_process())
            .and_then(|c| direct::probe(&c, name, *ready)),
        Command::Top(args) => top::run(&cli.config, args),
        Command::Verify { json } => verify::run(&cli.config, *json),
        Command::Link(command) => link::run(&cli.config, command),
        Command::Forget {
            client,
            reason,
            via,
        } => forget::run(&cli.config, client, reason.as_deref(), via.as_deref()),
        Command::Chaos(args) => chaos::run(&cli.config, args),
        Command::Supervise => supervisor::daemon::main(&cli.config),
        Command::CompleteNames => Ok(completions::print_names(&cli.config)),
        Command::Bench(args) => bench::run(&cli.config, args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("herdctl: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The herd as the running herd's commands see it (see `supervisor::locate`).
fn running_herd(path: &std::path::Path) -> anyhow::Result<HerdConfig> {
    supervisor::locate::for_running_herd(path).map(|(config, _)| config)
}

/// Help and version as clap prints them; any other argument error as one line (what was
/// wrong, then the usage), exit code 2 as clap's own.
fn argument_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        e.exit();
    }
    eprintln!("herdctl: error: {}", one_line(&e.render().to_string()));
    ExitCode::from(2)
}

/// clap's several-line error (message, indented values, tips, usage, "for more
/// information") as one line.
fn one_line(rendered: &str) -> String {
    let mut said = String::new();
    let mut usage = None;
    let mut listing = false;
    for line in rendered.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some(u) = line.strip_prefix("Usage:") {
            usage = Some(u.trim().to_owned());
        } else if !line.starts_with("For more information") {
            let line = line.strip_prefix("error: ").unwrap_or(line);
            // The values listed under a `...:` line go on after it, space-separated.
            listing &= !line.starts_with("tip:");
            if said.ends_with(':') || listing {
                said += " ";
                listing = true;
            } else if !said.is_empty() {
                said += "; ";
            }
            said += line;
        }
    }
    match usage {
        Some(usage) => format!("{said} (usage: {usage}; see --help)"),
        None => said,
    }
}

/// Printing commands end quietly when their reader goes away (`herdctl check | head`), as
/// other command-line tools do, instead of panicking on the broken pipe. Only those, which
/// write to no socket: a command that does must see a closed socket as an error to handle,
/// never die of it.
fn end_quietly_on_a_closed_pipe() {
    use nix::sys::signal::{signal, SigHandler, Signal};
    // SAFETY: restoring the default disposition installs no handler code; nothing else
    // changes SIGPIPE's disposition while this runs (single-threaded, at start-up).
    let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) };
}

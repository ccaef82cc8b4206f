//! The herdctl binary: parse the command line, dispatch, turn errors into one line and a
//! non-zero exit.

use std::process::ExitCode;

use clap::Parser;
use herdctl::cli::{Cli, Command, Export};
use herdctl::config::HerdConfig;
use herdctl::{bench, client, commands, completions, export, supervisor, tail};

fn main() -> ExitCode {
    let cli = Cli::parse();
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
        Command::Export(Export::Systemd { dir, names }) => {
            export::systemd::export(&cli.config, dir, names)
        }
        Command::Export(Export::Kubernetes {
            image,
            namespace,
            out,
        }) => export::kubernetes::export(&cli.config, image, namespace.as_deref(), out.as_deref()),
        Command::Completions { shell } => completions::print(*shell),
        Command::Send { name, line } => {
            HerdConfig::load(&cli.config).and_then(|c| client::send(&c, name, line))
        }
        Command::Tail {
            name,
            lines,
            follow,
        } => HerdConfig::load(&cli.config).and_then(|c| tail::tail(&c, name, *lines, *follow)),
        Command::Start(targets) => supervisor::cli::start(&cli.config, &targets.names),
        Command::Stop(targets) => supervisor::cli::stop(&cli.config, &targets.names),
        Command::Restart(targets) => supervisor::cli::restart(&cli.config, &targets.names),
        Command::Kill { name } => supervisor::cli::kill(&cli.config, name),
        Command::Status { json } => supervisor::cli::status(&cli.config, *json),
        Command::Reload => supervisor::cli::reload(&cli.config),
        Command::Supervise => supervisor::daemon::main(&cli.config),
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

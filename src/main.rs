//! The herdctl binary: parse the command line, dispatch, turn errors into one line and a
//! non-zero exit.

use std::process::ExitCode;

use clap::Parser;
use herdctl::cli::{Cli, Command};
use herdctl::commands;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Run { name } => commands::run(&cli.config, name),
        Command::Check => commands::check(&cli.config),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("herdctl: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

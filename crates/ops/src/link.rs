//! `herdctl link cut|heal|delay|loss`: link faults on purpose, set at both ends of a link over
//! the operator's control path (the nodes apply them: `node/faults.rs`).

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Subcommand;

use crate::operator;
use herd_config::config::{Environment, HerdConfig};
use herd_wire::protocol::{ControlCommand, MAX_LINK_DELAY_MS};

/// `herdctl link`: faults on the link between two neighbours.
#[derive(Debug, Clone, Subcommand)]
pub enum LinkCommand {
    /// Cut the link: nothing passes either way until it is healed.
    Cut {
        /// One end of the link.
        a: String,
        /// The other end.
        b: String,
    },
    /// Clear the faults of the link between A and B, or of every link (`heal all`).
    Heal {
        /// One end of the link, or `all`.
        #[arg(value_name = "all|A")]
        a: String,
        /// The other end (not with `all`).
        b: Option<String>,
    },
    /// Hold every line on the link, both ways, this many milliseconds.
    Delay {
        /// One end of the link.
        a: String,
        /// The other end.
        b: String,
        /// The delay, in milliseconds.
        ms: u32,
        /// Vary each line's delay by up to this many milliseconds either way (lines stay in
        /// order).
        #[arg(long, value_name = "MS", default_value_t = 0)]
        jitter: u32,
    },
    /// Drop this share of the updates flooded on the link, both ways (anti-entropy repairs
    /// them).
    Loss {
        /// One end of the link.
        a: String,
        /// The other end.
        b: String,
        /// The share dropped, 0 to 100.
        percent: u8,
    },
}

const ASK_TIMEOUT: Duration = Duration::from_secs(5);

/// `herdctl link ...`.
pub fn run(config_path: &Path, command: &LinkCommand) -> Result<ExitCode> {
    let config = HerdConfig::load(config_path, &Environment::of_process())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let failed = runtime.block_on(apply(&config, command))?;
    Ok(match failed {
        0 => ExitCode::SUCCESS,
        _ => ExitCode::FAILURE,
    })
}

/// Sends the command to the servers it concerns, prints what each did; returns how many
/// could not be told.
pub async fn apply(config: &HerdConfig, command: &LinkCommand) -> Result<usize> {
    let results = tell(config, command).await?;
    let mut failed = 0;
    for (name, result) in results {
        match result {
            Ok(faults) => println!("{name}: {faults}"),
            Err(e) => {
                eprintln!("herdctl: error: {name}: {e:#}");
                failed += 1;
            }
        }
    }
    Ok(failed)
}

/// Sends the command to the servers it concerns; returns each one's faults after it, as
/// text, or why it could not be told.
pub async fn tell(
    config: &HerdConfig,
    command: &LinkCommand,
) -> Result<Vec<(String, Result<String>)>> {
    let id = operator::fault_id();
    let (ends, wire): (Vec<(String, String)>, Vec<ControlCommand<'_>>) = match command {
        LinkCommand::Heal { a, b: None } if a == "all" => {
            let every: Vec<(String, String)> = config
                .servers
                .keys()
                .map(|n| (n.clone(), "*".to_owned()))
                .collect();
            let wire = every.iter().map(|_| ControlCommand::Heal("*")).collect();
            (every, wire)
        }
        LinkCommand::Heal { a, b: None } => {
            bail!("give both ends of the link (herdctl link heal {a} NAME), or: herdctl link heal all")
        }
        LinkCommand::Heal { a, b: Some(b) } => {
            link_ends(config, a, b)?;
            (
                vec![(a.clone(), b.clone()), (b.clone(), a.clone())],
                vec![ControlCommand::Heal(b), ControlCommand::Heal(a)],
            )
        }
        LinkCommand::Cut { a, b } => {
            link_ends(config, a, b)?;
            (
                vec![(a.clone(), b.clone()), (b.clone(), a.clone())],
                vec![
                    ControlCommand::Cut { peer: b, id: &id },
                    ControlCommand::Cut { peer: a, id: &id },
                ],
            )
        }
        LinkCommand::Delay { a, b, ms, jitter } => {
            link_ends(config, a, b)?;
            if *ms > MAX_LINK_DELAY_MS {
                bail!("a delay of at most {MAX_LINK_DELAY_MS} ms; cut the link instead");
            }
            if jitter > ms {
                bail!("--jitter {jitter} is more than the delay {ms}: give at most {ms}");
            }
            let delay = |peer| ControlCommand::Delay {
                peer,
                ms: *ms,
                jitter_ms: *jitter,
                id: &id,
            };
            (
                vec![(a.clone(), b.clone()), (b.clone(), a.clone())],
                vec![delay(b), delay(a)],
            )
        }
        LinkCommand::Loss { a, b, percent } => {
            link_ends(config, a, b)?;
            if *percent > 100 {
                bail!("a loss of {percent}%: give 0 to 100");
            }
            let loss = |peer| ControlCommand::Loss {
                peer,
                percent: *percent,
                id: &id,
            };
            (
                vec![(a.clone(), b.clone()), (b.clone(), a.clone())],
                vec![loss(b), loss(a)],
            )
        }
    };
    let endpoints = operator::endpoints(config)?;
    let asks = ends.iter().zip(&wire).map(|((name, _), command)| {
        let endpoint = &endpoints[name];
        async move { operator::ask(config, name, endpoint, command, ASK_TIMEOUT).await }
    });
    let answers = operator::join_all(asks.collect()).await;
    Ok(ends
        .into_iter()
        .zip(answers)
        .map(|((name, _), answer)| {
            let faults = answer.map(|a| describe_faults(&a.done["faults"]));
            (name, faults)
        })
        .collect())
}

/// Both servers exist and are neighbours.
fn link_ends(config: &HerdConfig, a: &str, b: &str) -> Result<()> {
    let server = config.server(a)?;
    config.server(b)?;
    if !server.neighbours.contains(b) {
        bail!(
            "{a} and {b} are not linked in {} ({a}'s links: {})",
            config.path.display(),
            match server.neighbours.is_empty() {
                true => "none".to_owned(),
                false => server
                    .neighbours
                    .iter()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", "),
            }
        );
    }
    Ok(())
}

/// `link to Ball: cut; link to Welsh: delay 100 ms`, or `no link faults`.
fn describe_faults(faults: &serde_json::Value) -> String {
    let Some(faults) = faults.as_object().filter(|f| !f.is_empty()) else {
        return "no link faults".to_owned();
    };
    faults
        .iter()
        .map(|(peer, what)| format!("link to {peer}: {}", what.as_str().unwrap_or("?")))
        .collect::<Vec<_>>()
        .join("; ")
}

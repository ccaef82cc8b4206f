//! `herdctl forget CLIENT [--reason TEXT]`: a client's location removed from the whole herd.
//!
//! One server (the first that answers, or `--via`) is told over the operator's control path
//! (proved with the herd secret); it makes a tombstone, a record that says "no location",
//! newer than what it replaces, and floods it like any update, so every server drops the
//! client; a server that is down gets it from anti-entropy when it comes back. The tool then
//! asks every server until none answers for the client, and says how long that took. Lines
//! already written to log files are not rewritten (`logs.redact` keeps ids and locations out
//! of them in the first place).

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::operator;
use herd_config::config::{Environment, HerdConfig};
use herd_config::hosts::Endpoint;
use herd_wire::protocol::{is_valid_client_id, ControlCommand, MAX_FORGET_REASON_BYTES};

const ASK_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the tool waits for every reachable server to have dropped the client.
const SPREAD_TIMEOUT: Duration = Duration::from_secs(5);

/// `herdctl forget`.
pub fn run(
    config_path: &Path,
    client: &str,
    reason: Option<&str>,
    via: Option<&str>,
) -> Result<ExitCode> {
    let config = HerdConfig::load(config_path, &Environment::of_process())?;
    if !is_valid_client_id(client) || client.len() > config.limits.max_client_id_bytes {
        bail!(
            "{client:?} is not a client id: one word of at most {} bytes without control \
             characters (limits.max_client_id_bytes)",
            config.limits.max_client_id_bytes
        );
    }
    let reason = match reason {
        None => "-".to_owned(),
        Some(r) if r.len() > MAX_FORGET_REASON_BYTES => {
            bail!(
                "--reason is {} bytes; keep it to {MAX_FORGET_REASON_BYTES}",
                r.len()
            )
        }
        Some(r) => herd_config::auth::hex(r.as_bytes()),
    };
    if let Some(via) = via {
        config.server(via)?;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(forget(&config, client, &reason, via))
}

async fn forget(
    config: &HerdConfig,
    client: &str,
    reason: &str,
    via: Option<&str>,
) -> Result<ExitCode> {
    let endpoints = operator::endpoints(config)?;
    let command = ControlCommand::Forget { client, reason };
    let mut order: Vec<&String> = endpoints.keys().collect();
    if let Some(via) = via {
        order.retain(|name| name.as_str() == via);
    }
    let started = Instant::now();
    let mut told = None;
    for name in order {
        match operator::ask(config, name, &endpoints[name], &command, ASK_TIMEOUT).await {
            Ok(answer) => {
                told = Some((name.clone(), answer.done));
                break;
            }
            Err(e) => eprintln!("herdctl: {name}: {e:#}; trying the next server"),
        }
    }
    let Some((origin, done)) = told else {
        bail!("no server could be told (is the herd running? herdctl status)");
    };
    let held = done["held"].as_bool().unwrap_or(false);
    println!(
        "{origin} made the tombstone ({}) and flooded it",
        match held {
            true => "it held a location for the client",
            false => "it held no location for the client",
        }
    );
    // Every server asked at once, each until it answers `?` for the client.
    let checks = endpoints
        .iter()
        .map(|(name, endpoint)| async move {
            let gone = gone_from(endpoint, client, started + SPREAD_TIMEOUT).await;
            (name.clone(), gone.map(|()| started.elapsed()))
        })
        .collect();
    let results = operator::join_all(checks).await;
    let mut unreached = Vec::new();
    let mut slowest = Duration::ZERO;
    for (name, result) in &results {
        match result {
            Ok(after) => slowest = slowest.max(*after),
            Err(e) => {
                eprintln!("herdctl: {name}: {e:#}");
                unreached.push(name.as_str());
            }
        }
    }
    match unreached.is_empty() {
        true => println!(
            "gone from all {} servers in {} ms",
            results.len(),
            slowest.as_millis()
        ),
        false => println!(
            "gone from {} of {} servers in {} ms; not confirmed on {}: a server that is down \
             gets the tombstone from its neighbours when it comes back",
            results.len() - unreached.len(),
            results.len(),
            slowest.as_millis(),
            unreached.join(", ")
        ),
    }
    Ok(ExitCode::SUCCESS)
}

/// Waits until the server at `endpoint` answers `?` to a WHATSAT for `client` (it holds no
/// location for it), asking again until `deadline`.
async fn gone_from(endpoint: &Endpoint, client: &str, deadline: Instant) -> Result<()> {
    loop {
        let answer = tokio::time::timeout_at(deadline.into(), ask_whatsat(endpoint, client))
            .await
            .map_err(|_| anyhow::anyhow!("still answers for the client, or did not answer"))?;
        match answer {
            Ok(true) => return Ok(()),
            Ok(false) => tokio::time::sleep(Duration::from_millis(2)).await,
            Err(e) => {
                if Instant::now() >= deadline {
                    return Err(e);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// One `WHATSAT <client> 1 1`: whether it was answered `?`.
async fn ask_whatsat(endpoint: &Endpoint, client: &str) -> Result<bool> {
    let stream = endpoint
        .connect()
        .await
        .with_context(|| format!("cannot reach {endpoint}"))?;
    let (reader, mut writer) = stream.into_split();
    writer
        .write_all(format!("WHATSAT {client} 1 1\n").as_bytes())
        .await?;
    let mut line = String::new();
    BufReader::new(reader).read_line(&mut line).await?;
    if line.is_empty() {
        bail!("{endpoint} closed the connection");
    }
    Ok(line.starts_with("? "))
}

//! The operator tool's end of the control path (`node/operator.rs` is the node's end): one
//! command per connection, proved with the herd secret over a fresh challenge. `verify`,
//! `link` and `chaos` speak to the nodes only through this.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use herd_config::auth;
use herd_config::config::HerdConfig;
use herd_config::hosts::{Endpoint, Locality};
use herd_wire::protocol::{
    format_control, format_operator, parse_challenge, parse_done, parse_line, Command,
    ControlCommand, PeerMessage,
};
use herd_wire::record::AtRecord;

/// What a node answered: the records it streamed (for `RECORDS`) and its closing `DONE`.
#[derive(Debug, Clone)]
pub struct Answer {
    pub records: Vec<AtRecord>,
    pub done: serde_json::Value,
}

/// Where this machine reaches each server of the herd: on its local address when it lives
/// here (as the supervisor's probes do), else across the network.
pub fn endpoints(config: &HerdConfig) -> Result<BTreeMap<String, Endpoint>> {
    let here = Locality::look_up(config.hosts())?;
    Ok(config
        .servers
        .values()
        .map(|server| {
            let endpoint = config.reach(server, &here, false).endpoint;
            (server.name.clone(), endpoint)
        })
        .collect())
}

/// Sends `command` to server `name` at `endpoint` and reads its answer, all within
/// `timeout`.
pub async fn ask(
    config: &HerdConfig,
    name: &str,
    endpoint: &Endpoint,
    command: &ControlCommand<'_>,
    timeout: Duration,
) -> Result<Answer> {
    tokio::time::timeout(timeout, ask_untimed(config, name, endpoint, command))
        .await
        .with_context(|| format!("{name} ({endpoint}) did not answer within {timeout:?}"))?
}

async fn ask_untimed(
    config: &HerdConfig,
    name: &str,
    endpoint: &Endpoint,
    command: &ControlCommand<'_>,
) -> Result<Answer> {
    let stream = endpoint
        .connect()
        .await
        .with_context(|| format!("cannot reach {name} at {endpoint}"))?;
    let (reader, mut writer) = stream.into_split();
    let mut reader = BufReader::new(reader);
    let tool_nonce = auth::nonce();
    writer
        .write_all(format_operator(&tool_nonce).as_bytes())
        .await?;
    let mut line = String::new();
    reader.read_line(&mut line).await?;
    let Some((server, node_nonce, proof)) = parse_challenge(&line) else {
        bail!(
            "{name} ({endpoint}) does not speak the control path (it answered {:?}); is it \
             a herd node of this version?",
            line.trim_end()
        );
    };
    if server != name {
        bail!("{endpoint} answers as {server}, not {name}");
    }
    let secret = config.secret.ensure_secret()?;
    let our_proof = match (&secret, proof) {
        (Some(secret), Some(proof)) => {
            if !secret.verify_challenge(proof, server, &tool_nonce, node_nonce) {
                bail!("{name} ({endpoint}) could not prove it knows the herd secret");
            }
            Some(secret.control_mac(server, node_nonce, &tool_nonce, &command.text()))
        }
        (None, None) => None,
        (Some(_), None) => {
            bail!("{name} runs without the herd secret; give every server the same secret")
        }
        (None, Some(_)) => bail!(
            "{name} requires the herd secret; remove insecure_open_links from {} (or set {})",
            config.path.display(),
            auth::SECRET_ENV
        ),
    };
    writer
        .write_all(format_control(our_proof.as_deref(), command).as_bytes())
        .await?;
    let mut records = Vec::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).await? == 0 {
            bail!("{name} closed the connection before it answered");
        }
        if let Some(done) = parse_done(&line) {
            return Ok(Answer { records, done });
        }
        if line.starts_with("? ") {
            bail!(
                "{name} refused `{}` (its log says why: herdctl tail {name})",
                command.text()
            );
        }
        match parse_line(line.trim_end().as_bytes()) {
            Some(Command::Peer(PeerMessage::Sync(fields))) => {
                records.push(AtRecord::from_fields(&fields))
            }
            _ => bail!("{name} answered {:?}", line.trim_end()),
        }
    }
}

/// A fault id for one `link` command, the same at both ends of the link: 16 hex digits.
pub fn fault_id() -> String {
    auth::nonce()[..16].to_owned()
}

/// Runs `futures` side by side on the current task and returns their outputs in order (the
/// tool asks every server at once, so one slow server costs its own timeout only).
pub async fn join_all<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    use std::task::Poll;
    let mut futures: Vec<std::pin::Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    Poll::Ready(value) => *output = Some(value),
                    Poll::Pending => pending = true,
                }
            }
        }
        match pending {
            true => Poll::Pending,
            false => Poll::Ready(()),
        }
    })
    .await;
    outputs
        .into_iter()
        .map(|o| o.expect("every future finished"))
        .collect()
}

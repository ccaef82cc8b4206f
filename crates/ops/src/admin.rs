//! The client side of the admin endpoint (`node/admin/`): the supervisor's probes,
//! `herdctl status`, and tests.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::config::{HerdConfig, ServerConfig};
use crate::hosts::Endpoint;
use crate::protocol::NodeFigures;

/// The most of a response this client reads (a `/metrics` page of a busy node is a few KiB).
const MAX_RESPONSE_BYTES: u64 = 4 << 20;

/// One response: its status code and body.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: String,
}

/// `GET path` on `endpoint`, sending `token` as a bearer token when given, within `timeout`
/// (connecting and name resolution included). `None`: no answer in time, or not HTTP.
pub async fn get(
    endpoint: &Endpoint,
    path: &str,
    token: Option<&str>,
    timeout: Duration,
) -> Option<Response> {
    let ask = async {
        let mut stream = endpoint.connect().await.ok()?;
        let mut request = format!(
            "GET {path} HTTP/1.1\r\nHost: {endpoint}\r\nConnection: close\r\nUser-Agent: herdctl\r\n"
        );
        if let Some(token) = token {
            request += &format!("Authorization: Bearer {token}\r\n");
        }
        request += "\r\n";
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut bytes = Vec::new();
        (&mut stream)
            .take(MAX_RESPONSE_BYTES)
            .read_to_end(&mut bytes)
            .await
            .ok()?;
        parse_response(&bytes)
    };
    tokio::time::timeout(timeout, ask).await.ok().flatten()
}

fn parse_response(bytes: &[u8]) -> Option<Response> {
    let text = String::from_utf8_lossy(bytes);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head
        .lines()
        .next()?
        .strip_prefix("HTTP/1.")?
        .split(' ')
        .nth(1)?
        .parse()
        .ok()?;
    Some(Response {
        status,
        body: body.to_owned(),
    })
}

/// What `/status` answers: the node's figures (`HERD STATUS`) and one entry per link.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeStatus {
    #[serde(flatten)]
    pub figures: NodeFigures,
    pub links: Vec<LinkStatus>,
}

/// One link, as its node sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinkStatus {
    pub peer: String,
    /// `up`, `down` (it was up, and dropped), or `connecting` (never up since start).
    pub state: String,
    /// When it entered that state (seconds since the epoch; `None`: since the node started).
    pub since: Option<f64>,
    /// Seconds in that state (measured by the node, so no clock skew between machines).
    pub for_s: u64,
    /// Why it last dropped or failed to connect.
    pub last_error: Option<String>,
    /// Updates queued for the neighbour, not yet written.
    pub queue_depth: usize,
    pub records_sent: u64,
    pub records_received: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// When the last anti-entropy exchange with it ended (seconds since the epoch).
    pub last_sync: Option<f64>,
    /// Whether the link runs over TLS (`None`: it never came up).
    #[serde(default)]
    pub encrypted: Option<bool>,
    /// When the neighbour's certificate expires (seconds since the epoch), on a TLS link.
    #[serde(default)]
    pub peer_cert_not_after: Option<i64>,
    /// The link fault the operator set on it (`herdctl link`), if any.
    #[serde(default)]
    pub fault: Option<LinkFaultStatus>,
    /// Flooded lines this end dropped because of `herdctl link loss` (anti-entropy repairs
    /// them), since the node started.
    #[serde(default)]
    pub fault_lines_dropped: u64,
    /// Lines this end held back because of `herdctl link delay`, since the node started.
    #[serde(default)]
    pub fault_lines_delayed: u64,
    /// Whether replies wait for the neighbour's acknowledgements (`HERD ACK`): `on`, `late`
    /// (one did not come within `links.write_timeout_ms`: replies wait for its socket only
    /// until they catch up), `off` (it does not give them, the link is delayed, or down).
    /// `None` from nodes older than acknowledgements.
    #[serde(default)]
    pub acks: Option<String>,
}

/// A link fault as `/status` shows it (`herdctl link cut|delay|loss`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkFaultStatus {
    /// `cut`, `delay 100±20 ms, loss 30%`.
    pub describe: String,
    pub cut: bool,
    pub delay_ms: u32,
    pub jitter_ms: u32,
    pub loss_percent: u8,
    /// The id the tool gave the command that set it (the same at both ends).
    pub id: String,
}

/// Asks `endpoint` for `/status` with `token`: the node's status when it answers 200.
pub async fn status(
    endpoint: &Endpoint,
    token: Option<&str>,
    timeout: Duration,
) -> Option<NodeStatus> {
    let response = get(endpoint, "/status", token, timeout).await?;
    if response.status != 200 {
        return None;
    }
    serde_json::from_str(&response.body).ok()
}

/// What `/healthz` and `/readyz` answer.
#[derive(Debug, Clone, Deserialize)]
pub struct ProbeAnswer {
    pub status: String,
    pub name: String,
    pub pid: u32,
    /// The digest of the herd file the node runs.
    pub config: Option<String>,
}

/// Probes `path` (`/readyz` or `/healthz`) of `server`'s admin endpoint on this machine:
/// the answer when it is 200 and well-formed.
pub async fn probe(
    config: &HerdConfig,
    server: &ServerConfig,
    path: &str,
    timeout: Duration,
) -> Option<ProbeAnswer> {
    let endpoint = config.local_admin_endpoint(server);
    let response = get(&endpoint, path, None, timeout).await?;
    if response.status != 200 {
        return None;
    }
    serde_json::from_str(&response.body).ok()
}

/// The admin endpoint's URL for `server`, as other machines reach it.
pub fn url(config: &HerdConfig, server: &ServerConfig) -> String {
    format!("http://{}/", config.admin_endpoint(server))
}

/// The bearer token for `/status` and `/metrics`, when the herd has a secret (read, or
/// created, where the nodes find it: see [`crate::auth::SecretSource`]).
pub fn token(config: &HerdConfig) -> Option<String> {
    let secret = config.secret.ensure_secret().ok().flatten();
    secret.map(|s| s.admin_token())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_are_parsed() {
        let r =
            parse_response(b"HTTP/1.1 503 Service Unavailable\r\nA: b\r\n\r\n{\"x\":1}").unwrap();
        assert_eq!((r.status, r.body.as_str()), (503, "{\"x\":1}"));
        assert!(parse_response(b"HERD STATUS {}\n").is_none());
    }
}

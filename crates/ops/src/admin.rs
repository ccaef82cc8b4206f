//! The client side of the admin endpoint (`node/admin/`): the supervisor's probes,
//! `herdctl status`, and tests.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use herd_config::config::{HerdConfig, ServerConfig};
use herd_config::hosts::Endpoint;
pub use herd_wire::status::{LinkFaultStatus, LinkStatus, NodeStatus, ProbeAnswer};

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
/// created, where the nodes find it: see [`herd_config::auth::SecretSource`]).
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

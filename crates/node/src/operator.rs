//! The node's end of the operator's control path (`herd_ops::operator` is the tool's end):
//! `HERD OPERATOR` gets a challenge, and one `HERD CONTROL` command proved over it with the
//! herd secret is carried out. Read-only commands (`DIGEST`, `RECORDS`, for `herdctl verify`)
//! are allowed without a proof only when the herd has no secret at all (its links are open
//! to anyone anyway); commands that change the node (link faults) always need the secret,
//! so an anonymous client can never break the herd's links.

use anyhow::Result;
use tokio::io::AsyncWrite;

use super::lines::write_within;
use super::sync::SyncStream;
use super::Node;
use herd_config::auth;
use herd_wire::clock::now_nanos;
use herd_wire::protocol::{
    format_challenge, format_done, ControlCommand, Timestamp, DIGEST_BUCKETS,
};
use herd_wire::record::AtRecord;

/// The challenge a tool's `HERD OPERATOR <nonce>` gets: the line to send, and the node's
/// nonce the command's proof must cover.
pub fn challenge(node: &Node, tool_nonce: &str) -> (String, String) {
    let our_nonce = auth::nonce();
    let proof = node
        .secret
        .as_ref()
        .map(|s| s.challenge_mac(&node.name, tool_nonce, &our_nonce));
    (
        format_challenge(&node.name, &our_nonce, proof.as_deref()),
        our_nonce,
    )
}

/// Whether `command`, with `proof`, may be carried out: `Err` says why not (for the log).
pub fn authorise(
    node: &Node,
    proof: Option<&str>,
    command: &ControlCommand<'_>,
    tool_nonce: &str,
    our_nonce: &str,
) -> Result<(), &'static str> {
    match (&node.secret, proof) {
        (Some(secret), Some(proof)) => {
            match secret.verify_control(proof, &node.name, our_nonce, tool_nonce, &command.text()) {
                true => Ok(()),
                false => Err("its proof does not match the herd secret"),
            }
        }
        (Some(_), None) => Err("it has no proof, and this herd has a secret"),
        (None, _) if command.changes_the_node() => {
            Err("link faults need the herd secret (remove insecure_open_links from herd.yaml)")
        }
        (None, _) => Ok(()),
    }
}

/// `DIGEST`: the table's bucket digests as one hex string, and its client count.
pub fn digest_answer(node: &Node) -> String {
    let (digest, horizons) = node.table.digest_at_horizons();
    let digest: String = digest.iter().map(|d| format!("{d:016x}")).collect();
    format_done(&serde_json::json!({
        "name": node.name,
        "clients": node.table.clients(),
        "horizons": [horizons.0, horizons.1],
        "buckets": DIGEST_BUCKETS,
        "digest": digest,
    }))
}

/// `FORGET <client> <reason>`: a tombstone for `client`, applied here and flooded like an
/// update, so every server drops the client (one that is down gets it from anti-entropy
/// when it comes back). Its time is this server's clock, or just after the record it holds
/// if that one is ahead (a client's clock may be): newer than what it replaces, so it wins
/// under newer-wins everywhere; a later IAMAT with a newer time brings the client back.
/// Answers `HERD DONE` with whether this server held a location for it.
pub fn forget(node: &Node, client: &str, reason_hex: &str) -> String {
    let now = now_nanos();
    let held = node.table.get(client);
    let after_held = held.as_ref().map_or(0, |r| r.time().as_nanos() + 1);
    let nanos = now.max(after_held).max(0);
    let time = Timestamp {
        secs: (nanos / 1_000_000_000) as u64,
        nanos: (nanos % 1_000_000_000) as u32,
    };
    let tombstone = AtRecord::tombstone(&node.name, now, client, time);
    let applied = node.accept_tombstone(tombstone);
    let reason = match reason_hex {
        "-" => "none given".to_owned(),
        hex => auth::unhex(hex)
            .map(|b| herd_logs::printable(&b).into_owned())
            .unwrap_or_default(),
    };
    let had = held.as_ref().is_some_and(|r| !r.is_tombstone());
    tracing::info!(
        "forget on operator request: client {} {}; reason: {reason} (earlier log lines \
         are not rewritten)",
        node.log.client_id(client),
        match (had, &applied) {
            (true, _) => "had a location: tombstone flooded",
            (false, Ok(_)) => "was not held here: tombstone flooded",
            (false, Err(_)) => "was already forgotten here",
        }
    );
    format_done(&serde_json::json!({
        "server": node.name,
        "held": had,
        "flooded": applied.is_ok(),
    }))
}

/// `RECORDS <buckets>`: streams the records of `buckets` as `HERD SYNC` lines, one table
/// shard at a time (as anti-entropy does), then `HERD DONE`.
pub async fn stream_records<W: AsyncWrite + Unpin>(
    node: &Node,
    buckets: &[u16],
    writer: &mut W,
) -> Result<()> {
    let timeout = node.config().links.write_timeout;
    let mut stream = SyncStream::new(&node.table, buckets);
    let mut chunk = String::new();
    while stream.next_chunk(&mut chunk) {
        write_within(writer, chunk.as_bytes(), timeout).await?;
    }
    let done = format_done(&serde_json::json!({ "records": stream.sent.records }));
    write_within(writer, done.as_bytes(), timeout).await
}

//! What a neighbour sends is checked like what a client sends: a proved secret makes a
//! connection a neighbour, not its every line true. A record whose origin is not a server of
//! the herd, whose client id or line is over the limits, or whose time is too far ahead of
//! this server's clock is dropped (not applied, not flooded on) and counted by reason; so is
//! a WANT this node did not ask for (answering it would hand over the whole table), an
//! acknowledgement of updates that were never sent, and a failed AUTH. The counts are in `HERD STATUS` as `peer_dropped`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use super::Node;
use herd_config::config::HerdConfig;
use herd_wire::protocol::{AtFields, Timestamp};

/// Why a neighbour's line (or a handshake) was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// A record from a server the herd does not have.
    UnknownOrigin,
    /// A record whose client id is over `limits.max_client_id_bytes`.
    ClientIdTooLong,
    /// A record line over `limits.max_line_bytes`.
    LineTooLong,
    /// A record whose time is more than `limits.max_future_s` ahead of this server's clock.
    FutureTime,
    /// A WANT with no digest of this node's outstanding.
    UnaskedWant,
    /// A dialler that said HELLO and then could not prove the secret.
    FailedAuth,
    /// A `HERD ACK` that does not parse, acknowledges more than was sent or less than
    /// before, or came on a connection this node sends no updates on.
    BadAck,
}

impl Dropped {
    const ALL: [Dropped; 7] = [
        Dropped::UnknownOrigin,
        Dropped::ClientIdTooLong,
        Dropped::LineTooLong,
        Dropped::FutureTime,
        Dropped::UnaskedWant,
        Dropped::FailedAuth,
        Dropped::BadAck,
    ];

    /// The reason's name in status and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Dropped::UnknownOrigin => "unknown_origin",
            Dropped::ClientIdTooLong => "client_id_too_long",
            Dropped::LineTooLong => "line_too_long",
            Dropped::FutureTime => "future_time",
            Dropped::UnaskedWant => "unasked_want",
            Dropped::FailedAuth => "failed_auth",
            Dropped::BadAck => "bad_ack",
        }
    }
}

/// Counts of what was refused, per reason, since the node started.
#[derive(Default)]
pub struct PeerInput {
    counts: [AtomicU64; Dropped::ALL.len()],
}

impl PeerInput {
    pub fn count(&self, why: Dropped) {
        self.counts[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Every reason with its count (zeros included), in a fixed order: what metrics export.
    pub fn counts(&self) -> Vec<(&'static str, u64)> {
        Dropped::ALL
            .iter()
            .map(|&why| {
                (
                    why.name(),
                    self.counts[why as usize].load(Ordering::Relaxed),
                )
            })
            .collect()
    }

    /// The reasons that happened, for `HERD STATUS`.
    pub fn nonzero(&self) -> BTreeMap<String, u64> {
        self.counts()
            .into_iter()
            .filter(|(_, n)| *n > 0)
            .map(|(name, n)| (name.to_owned(), n))
            .collect()
    }
}

/// Counts a refused line from `neighbour` and says so in the log, at most once a second per
/// node (a neighbour that sends garbage must not flood the log too).
pub fn refuse(node: &Node, neighbour: &str, why: Dropped, line: &[u8]) {
    node.peer_input.count(why);
    static LAST_WARNING_SECS: AtomicU64 = AtomicU64::new(0);
    let secs = herd_wire::clock::now_nanos() / 1_000_000_000;
    if LAST_WARNING_SECS.swap(secs as u64, Ordering::Relaxed) != secs as u64 {
        tracing::warn!(
            "dropped a line from {neighbour} ({}): {}",
            why.name(),
            node.log.quoted(line)
        );
    }
}

/// Whether a client's time is further ahead of `now_nanos` (this server's clock) than
/// `limits.max_future_s` allows.
pub fn too_far_ahead(time: Timestamp, now_nanos: i128, config: &HerdConfig) -> bool {
    time.as_nanos() > now_nanos + config.limits.max_future.as_nanos() as i128
}

/// [`check_record`] against the herd file a session started with, or, for an origin it
/// does not know, the one the node runs now (a reload may have added that server since).
pub fn check_live(
    node: &Node,
    config: &HerdConfig,
    fields: &AtFields<'_>,
    line: &[u8],
    now_nanos: i128,
) -> Result<(), Dropped> {
    match check_record(fields, line, now_nanos, config) {
        Err(Dropped::UnknownOrigin) => check_record(fields, line, now_nanos, &node.config()),
        verdict => verdict,
    }
}

/// Checks a record a neighbour sent (`line` is the whole wire line); `Err` says why it must
/// be dropped.
pub fn check_record(
    fields: &AtFields<'_>,
    line: &[u8],
    now_nanos: i128,
    config: &HerdConfig,
) -> Result<(), Dropped> {
    if !config.servers.contains_key(fields.origin) {
        return Err(Dropped::UnknownOrigin);
    }
    if fields.client.len() > config.limits.max_client_id_bytes {
        return Err(Dropped::ClientIdTooLong);
    }
    if line.len() > config.limits.max_line_bytes {
        return Err(Dropped::LineTooLong);
    }
    if too_far_ahead(fields.time, now_nanos, config) {
        return Err(Dropped::FutureTime);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use herd_wire::protocol::parse_at_line;

    fn config() -> HerdConfig {
        HerdConfig::parse(
            "servers:\n  A: { port: 1, peers: [B] }\n  B: { port: 2 }\nlimits: { max_client_id_bytes: 8 }\n",
            std::path::Path::new("/tmp/herd.yaml"), &herd_config::config::Environment::default())
        .unwrap()
    }

    #[test]
    fn records_are_checked_like_client_input_and_counted() {
        let config = config();
        let now = 1_700_000_000 * 1_000_000_000i128;
        let check = |at: &str| {
            let fields = parse_at_line(at).unwrap();
            check_record(&fields, at.as_bytes(), now, &config)
        };
        assert_eq!(check("AT B +0.000000000 kiwi +1+1 1700000000"), Ok(()));
        assert_eq!(
            check("AT Z +0.000000000 kiwi +1+1 1700000000"),
            Err(Dropped::UnknownOrigin)
        );
        assert_eq!(
            check("AT B +0.000000000 kiwi-is-long +1+1 1700000000"),
            Err(Dropped::ClientIdTooLong)
        );
        assert_eq!(
            check("AT B +0.000000000 kiwi +1+1 18446744073709551615.999999999"),
            Err(Dropped::FutureTime)
        );
        assert_eq!(
            check("AT B +0.000000000 kiwi +1+1 1700086400"),
            Ok(()),
            "a day ahead"
        );
        let counts = PeerInput::default();
        counts.count(Dropped::FutureTime);
        counts.count(Dropped::FutureTime);
        assert_eq!(counts.counts().len(), 7);
        assert_eq!(
            counts.nonzero(),
            BTreeMap::from([("future_time".to_owned(), 2)])
        );
    }
}

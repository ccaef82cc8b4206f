//! What a link to one neighbour did: counters for `/metrics` and the state and history
//! `/status` shows (state since when, last error, last anti-entropy exchange).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::metrics::Counter;

/// Why a link went down (`reason` label of `herd_link_drops_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum DropReason {
    /// The neighbour read too slowly and the link's queue filled.
    QueueFull,
    /// A write took longer than `links.write_timeout_ms`.
    WriteTimeout,
    /// No answer to a digest within `links.answer_timeout_ms`.
    AnswerTimeout,
    /// The neighbour closed the connection.
    Closed,
    /// Anything else (a refused line, a read error).
    Error,
}

impl DropReason {
    pub const ALL: [DropReason; 5] = [
        DropReason::QueueFull,
        DropReason::WriteTimeout,
        DropReason::AnswerTimeout,
        DropReason::Closed,
        DropReason::Error,
    ];

    pub fn label(self) -> &'static str {
        match self {
            DropReason::QueueFull => "queue_full",
            DropReason::WriteTimeout => "write_timeout",
            DropReason::AnswerTimeout => "answer_timeout",
            DropReason::Closed => "closed",
            DropReason::Error => "error",
        }
    }
}

/// Counters and history of one link, both directions (the dialled connection carries this
/// node's floods out, the accepted one the neighbour's in).
#[derive(Default)]
pub struct LinkStats {
    pub floods_sent: Counter,
    pub floods_new: Counter,
    pub floods_stale: Counter,
    pub records_sent: Counter,
    pub records_received: Counter,
    pub bytes_sent: Counter,
    pub bytes_received: Counter,
    pub sync_exchanges: Counter,
    pub sync_records_sent: Counter,
    pub sync_records_received: Counter,
    /// Flooded lines dropped by `herdctl link loss`.
    pub fault_dropped: Counter,
    /// Lines held back by `herdctl link delay`.
    pub fault_delayed: Counter,
    /// `HERD ACK` lines sent to the neighbour (for what it flooded here) and received from it.
    pub acks_sent: Counter,
    pub acks_received: Counter,
    /// Replies that stopped waiting for the neighbour's acknowledgement after
    /// `links.write_timeout_ms` (see `peers.rs`).
    pub ack_timeouts: Counter,
    drops: Mutex<BTreeMap<DropReason, u64>>,
    history: Mutex<History>,
}

/// When things last happened, in seconds since the epoch (what `/status` shows).
#[derive(Debug, Clone, Default)]
pub struct History {
    /// When the link last went up or down (`None`: never up since the node started).
    pub since: Option<f64>,
    pub ever_up: bool,
    pub last_error: Option<String>,
    pub last_sync: Option<f64>,
    /// Whether the link's last connection was TLS (`None`: none yet).
    pub encrypted: Option<bool>,
    /// When the certificate the neighbour last presented expires (seconds since the epoch).
    pub peer_cert_not_after: Option<i64>,
}

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl LinkStats {
    fn history(&self) -> std::sync::MutexGuard<'_, History> {
        self.history.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn went_up(&self) {
        let mut history = self.history();
        history.since = Some(now_secs());
        history.ever_up = true;
    }

    /// The link went down for `reason`; `error` says what happened.
    pub fn went_down(&self, reason: DropReason, error: Option<String>) {
        // (`error` is `None` only when there is nothing to add to the last one.)
        *self
            .drops
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(reason)
            .or_default() += 1;
        let mut history = self.history();
        history.since = Some(now_secs());
        if error.is_some() {
            history.last_error = error;
        }
    }

    /// A connection of the link came up over TLS with the neighbour's certificate `cert`,
    /// or (`None`) in plain text.
    pub fn transport(&self, cert: Option<&herd_config::tls::PeerCert>) {
        let mut history = self.history();
        history.encrypted = Some(cert.is_some());
        history.peer_cert_not_after = cert.map(|c| c.not_after);
    }

    /// A dial or handshake failed (the link stays down).
    pub fn failed_to_connect(&self, error: String) {
        self.history().last_error = Some(error);
    }

    /// An anti-entropy exchange with the neighbour was done.
    pub fn synced(&self) {
        self.sync_exchanges.inc();
        self.history().last_sync = Some(now_secs());
    }

    pub fn drops(&self) -> BTreeMap<DropReason, u64> {
        self.drops.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn snapshot(&self) -> History {
        self.history().clone()
    }
}

/// Why a session ended, from its error (`None`: the neighbour closed it).
pub fn classify(error: Option<&anyhow::Error>) -> DropReason {
    let Some(error) = error else {
        return DropReason::Closed;
    };
    if error.downcast_ref::<super::peers::QueueFull>().is_some() {
        return DropReason::QueueFull;
    }
    let text = format!("{error:#}");
    if text.contains("links.answer_timeout_ms") {
        DropReason::AnswerTimeout
    } else if text.contains("took nothing for") {
        DropReason::WriteTimeout
    } else {
        DropReason::Error
    }
}

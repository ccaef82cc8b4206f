//! What a node's admin endpoint answers (`/status`, `/healthz`, `/readyz`): the JSON
//! contract between the node (`herd-node`'s admin endpoint) and its clients (`herd-ops`).

use serde::{Deserialize, Serialize};

use crate::protocol::NodeFigures;

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

/// What `/healthz` and `/readyz` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProbeAnswer {
    pub status: String,
    pub name: String,
    pub pid: u32,
    /// The digest of the herd file the node runs.
    pub config: Option<String>,
}

//! A node's own metrics: what the hot path counts, and the page `/metrics` serves.

use super::{process, Counter, Exposition, Histogram, Kind, LATENCY_BOUNDS, PROPAGATION_BOUNDS};
use crate::node::Node;

/// The kinds of line a client connection answers (`command` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandKind {
    Iamat,
    Whatsat,
    /// `HERD STATUS`.
    Status,
    /// `HERD HELLO` / `HERD AUTH`.
    Handshake,
    /// Anything else: unparseable lines and peer messages off a peer session.
    Other,
}

impl CommandKind {
    const ALL: [CommandKind; 5] = [
        CommandKind::Iamat,
        CommandKind::Whatsat,
        CommandKind::Status,
        CommandKind::Handshake,
        CommandKind::Other,
    ];

    fn label(self) -> &'static str {
        match self {
            CommandKind::Iamat => "IAMAT",
            CommandKind::Whatsat => "WHATSAT",
            CommandKind::Status => "STATUS",
            CommandKind::Handshake => "HANDSHAKE",
            CommandKind::Other => "other",
        }
    }
}

/// How a line was answered (`result` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestResult {
    Ok,
    /// Answered `? <line>`.
    Invalid,
    /// An IAMAT refused because its update could not be made durable in time.
    Refused,
}

impl RequestResult {
    const ALL: [RequestResult; 3] = [
        RequestResult::Ok,
        RequestResult::Invalid,
        RequestResult::Refused,
    ];

    fn label(self) -> &'static str {
        match self {
            RequestResult::Ok => "ok",
            RequestResult::Invalid => "invalid",
            RequestResult::Refused => "refused",
        }
    }
}

/// What the node's tasks count as they go.
pub struct NodeMetrics {
    requests: [[Counter; 3]; 5],
    durations: [Histogram; 5],
    pub connections_refused: Counter,
    /// Arrival of a flooded record minus its origin's receipt time.
    pub propagation_delay: Histogram,
}

impl Default for NodeMetrics {
    fn default() -> NodeMetrics {
        NodeMetrics::new()
    }
}

impl NodeMetrics {
    pub fn new() -> NodeMetrics {
        NodeMetrics {
            requests: Default::default(),
            durations: std::array::from_fn(|_| Histogram::new(LATENCY_BOUNDS)),
            connections_refused: Counter::default(),
            propagation_delay: Histogram::new(PROPAGATION_BOUNDS),
        }
    }

    /// One line answered, `nanos` after it was read.
    pub fn request(&self, command: CommandKind, result: RequestResult, nanos: u64) {
        self.requests[command as usize][result as usize].inc();
        self.durations[command as usize].observe_nanos(nanos);
    }

    /// A request counted as answered `from` becomes `to` (a strict IAMAT refused after its
    /// reply was made).
    pub fn recount(&self, command: CommandKind, to: RequestResult, n: u64) {
        self.requests[command as usize][RequestResult::Ok as usize]
            .0
            .fetch_sub(n, std::sync::atomic::Ordering::Relaxed);
        self.requests[command as usize][to as usize].add(n);
    }
}

/// The whole `/metrics` page of `node`.
pub fn render(node: &Node) -> String {
    let mut page = Exposition::default();
    let m = &node.metrics;

    page.family(
        "herd_requests_total",
        Kind::Counter,
        "Lines answered on the client port, by command and result.",
    );
    for command in CommandKind::ALL {
        for result in RequestResult::ALL {
            let count = m.requests[command as usize][result as usize].get();
            page.sample(
                "herd_requests_total",
                &[("command", command.label()), ("result", result.label())],
                count as f64,
            );
        }
    }
    page.family(
        "herd_request_duration_seconds",
        Kind::Histogram,
        "Time from reading a line to its reply being ready, by command.",
    );
    for command in CommandKind::ALL {
        m.durations[command as usize].write(
            &mut page,
            "herd_request_duration_seconds",
            &[("command", command.label())],
        );
    }

    page.single(
        "herd_clients",
        Kind::Gauge,
        "Clients whose location this node holds.",
        node.table.len() as f64,
    );
    let on_client_port = node.client_port_open.get();
    let peers = node.peer_sessions.get();
    page.family(
        "herd_connections",
        Kind::Gauge,
        "Connections open now, by kind (client and peer share the client port).",
    );
    for (kind, open) in [
        ("client", on_client_port.saturating_sub(peers)),
        ("peer", peers),
        ("admin", node.admin_open.get()),
    ] {
        page.sample("herd_connections", &[("kind", kind)], open as f64);
    }
    page.single(
        "herd_connections_refused_total",
        Kind::Counter,
        "Connections to the client port closed at once because limits.max_connections were open.",
        m.connections_refused.get() as f64,
    );

    page.family(
        "herd_link_up",
        Kind::Gauge,
        "1 while the link to the neighbour is up.",
    );
    for link in node.peers.links() {
        page.sample(
            "herd_link_up",
            &[("peer", &link.name)],
            if link.is_up() { 1.0 } else { 0.0 },
        );
    }

    page.family(
        "herd_propagation_delay_seconds",
        Kind::Histogram,
        "Arrival of a flooded update minus the time its origin received it (clocks' skew included).",
    );
    m.propagation_delay
        .write(&mut page, "herd_propagation_delay_seconds", &[]);

    if let Some(store) = &node.store {
        page.single(
            "herd_store_healthy",
            Kind::Gauge,
            "1 while the store writes and flushes without error.",
            if store.health().is_none() { 1.0 } else { 0.0 },
        );
    }
    page.single(
        "herd_log_dropped_lines_total",
        Kind::Counter,
        "Wire log lines dropped because the log writer fell behind.",
        node.log.dropped() as f64,
    );
    process::write(&mut page);
    page.finish()
}

//! A node's own metrics: what the hot path counts, and the page `/metrics` serves.

use crate::link_stats::DropReason;
use crate::Node;
pub use herd_metrics::{
    process, Counter, Exposition, Histogram, Kind, Tally, LATENCY_BOUNDS, PROPAGATION_BOUNDS,
};

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
}

/// What one connection answered since it last handed its counts to [`NodeMetrics`]: it does
/// so before each write of replies (so a client that has its reply finds it counted) and
/// when dropped. Counting each line straight into the shared counters was three atomic adds
/// on cache lines both worker threads write, ~3.5% of a node's CPU under pipelined IAMATs.
pub struct RequestTally<'a> {
    metrics: &'a NodeMetrics,
    requests: [[u64; 3]; 5],
    durations: [Tally; 5],
}

impl<'a> RequestTally<'a> {
    pub fn new(metrics: &'a NodeMetrics) -> RequestTally<'a> {
        RequestTally {
            metrics,
            requests: Default::default(),
            durations: Default::default(),
        }
    }

    /// One line answered, `nanos` after it was read.
    #[inline]
    pub fn request(&mut self, command: CommandKind, result: RequestResult, nanos: u64) {
        self.requests[command as usize][result as usize] += 1;
        self.metrics.durations[command as usize]
            .observe_into(&mut self.durations[command as usize], nanos);
    }

    /// `n` requests counted since the last [`RequestTally::flush`] as answered `Ok` become
    /// `to` (strict IAMATs refused after their replies were made).
    pub fn recount(&mut self, command: CommandKind, to: RequestResult, n: u64) {
        let counts = &mut self.requests[command as usize];
        let n = n.min(counts[RequestResult::Ok as usize]);
        counts[RequestResult::Ok as usize] -= n;
        counts[to as usize] += n;
    }

    /// Hands what was counted to the node's metrics.
    pub fn flush(&mut self) {
        for (command, counts) in self.requests.iter_mut().enumerate() {
            for (result, count) in counts.iter_mut().enumerate() {
                if *count != 0 {
                    self.metrics.requests[command][result].add(std::mem::take(count));
                }
            }
            self.metrics.durations[command].add(&mut self.durations[command]);
        }
    }
}

impl Drop for RequestTally<'_> {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Every link's families, one sample per neighbour (and reason, direction, outcome).
fn write_links(page: &mut Exposition, node: &Node) {
    let links = node.peers.links();
    type Value = fn(&crate::peers::Link) -> f64;
    let per_link: [(&str, Kind, &str, Value); 4] = [
        (
            "herd_link_up",
            Kind::Gauge,
            "1 while the link to the neighbour is up.",
            |l| f64::from(u8::from(l.is_up())),
        ),
        (
            "herd_link_queue_depth",
            Kind::Gauge,
            "Updates queued for the neighbour and not yet written.",
            |l| l.queue_depth() as f64,
        ),
        (
            "herd_floods_sent_total",
            Kind::Counter,
            "Updates flooded to the neighbour.",
            |l| l.stats.floods_sent.get() as f64,
        ),
        (
            "herd_sync_exchanges_total",
            Kind::Counter,
            "Anti-entropy exchanges with the neighbour (either side starting).",
            |l| l.stats.sync_exchanges.get() as f64,
        ),
    ];
    for (name, kind, help, value) in per_link {
        page.family(name, kind, help);
        for link in &links {
            page.sample(name, &[("peer", &link.name)], value(link));
        }
    }
    page.family(
        "herd_floods_received_total",
        Kind::Counter,
        "Updates the neighbour flooded here: new, or stale (already known or older).",
    );
    for link in &links {
        for (outcome, counter) in [
            ("new", &link.stats.floods_new),
            ("stale", &link.stats.floods_stale),
        ] {
            page.sample(
                "herd_floods_received_total",
                &[("peer", &link.name), ("outcome", outcome)],
                counter.get() as f64,
            );
        }
    }
    page.family(
        "herd_sync_records_total",
        Kind::Counter,
        "Records anti-entropy sent to and received from the neighbour.",
    );
    for link in &links {
        for (direction, counter) in [
            ("sent", &link.stats.sync_records_sent),
            ("received", &link.stats.sync_records_received),
        ] {
            page.sample(
                "herd_sync_records_total",
                &[("peer", &link.name), ("direction", direction)],
                counter.get() as f64,
            );
        }
    }
    write_acks(page, &links);
    write_faults(page, &links);
    page.family(
        "herd_link_drops_total",
        Kind::Counter,
        "Times the link to the neighbour went down, by reason.",
    );
    for link in &links {
        let drops = link.stats.drops();
        for reason in DropReason::ALL {
            page.sample(
                "herd_link_drops_total",
                &[("peer", &link.name), ("reason", reason.label())],
                drops.get(&reason).copied().unwrap_or(0) as f64,
            );
        }
    }
}

/// The acknowledgements of applied updates (`HERD ACK`), apart from the flood lines.
fn write_acks(page: &mut Exposition, links: &[std::sync::Arc<crate::peers::Link>]) {
    page.family(
        "herd_link_acks_total",
        Kind::Counter,
        "HERD ACK lines: sent to the neighbour for what it flooded here, received from it.",
    );
    for link in links {
        for (direction, counter) in [
            ("sent", &link.stats.acks_sent),
            ("received", &link.stats.acks_received),
        ] {
            page.sample(
                "herd_link_acks_total",
                &[("peer", &link.name), ("direction", direction)],
                counter.get() as f64,
            );
        }
    }
    page.family(
        "herd_link_ack_timeouts_total",
        Kind::Counter,
        "Replies that stopped waiting for the neighbour's acknowledgement (links.write_timeout_ms).",
    );
    for link in links {
        page.sample(
            "herd_link_ack_timeouts_total",
            &[("peer", &link.name)],
            link.stats.ack_timeouts.get() as f64,
        );
    }
}

/// The link faults the operator set (`herdctl link`), and what they did to the lines.
fn write_faults(page: &mut Exposition, links: &[std::sync::Arc<crate::peers::Link>]) {
    page.family(
        "herd_link_fault",
        Kind::Gauge,
        "1 while the operator's fault of that kind (cut, delay, loss) is set on the link.",
    );
    let faults: Vec<_> = links.iter().map(|l| l.fault.get()).collect();
    for (link, fault) in links.iter().zip(&faults) {
        let (cut, delay, loss) = fault.as_ref().map_or((false, false, false), |f| {
            (f.cut, f.delay_ms > 0, f.loss_percent > 0)
        });
        for (kind, on) in [("cut", cut), ("delay", delay), ("loss", loss)] {
            page.sample(
                "herd_link_fault",
                &[("peer", &link.name), ("kind", kind)],
                f64::from(u8::from(on)),
            );
        }
    }
    page.family(
        "herd_link_fault_delay_seconds",
        Kind::Gauge,
        "The delay `herdctl link delay` holds each line on the link (0: none).",
    );
    for (link, fault) in links.iter().zip(&faults) {
        let ms = fault.as_ref().map_or(0, |f| f.delay_ms);
        page.sample(
            "herd_link_fault_delay_seconds",
            &[("peer", &link.name)],
            f64::from(ms) / 1000.0,
        );
    }
    page.family(
        "herd_link_fault_loss_ratio",
        Kind::Gauge,
        "The share of flooded lines `herdctl link loss` drops on the link (0: none).",
    );
    for (link, fault) in links.iter().zip(&faults) {
        let percent = fault.as_ref().map_or(0, |f| f.loss_percent);
        page.sample(
            "herd_link_fault_loss_ratio",
            &[("peer", &link.name)],
            f64::from(percent) / 100.0,
        );
    }
    page.family(
        "herd_link_fault_lines_total",
        Kind::Counter,
        "Lines a link fault acted on: flooded lines dropped (loss), lines held back (delay).",
    );
    for link in links {
        for (effect, counter) in [
            ("dropped", &link.stats.fault_dropped),
            ("delayed", &link.stats.fault_delayed),
        ] {
            page.sample(
                "herd_link_fault_lines_total",
                &[("peer", &link.name), ("effect", effect)],
                counter.get() as f64,
            );
        }
    }
}

/// The places provider's requests and upstream latency (providers with an upstream only).
fn write_places(page: &mut Exposition, node: &Node) {
    let Some(stats) = node.places.stats() else {
        return;
    };
    let provider = node.places.name();
    page.family(
        "herd_places_requests_total",
        Kind::Counter,
        "WHATSAT lookups by the places provider: from the cache (hit), fetched (miss), or answered with an error.",
    );
    for (outcome, counter) in [
        ("hit", &stats.hits),
        ("miss", &stats.misses),
        ("error", &stats.errors),
    ] {
        page.sample(
            "herd_places_requests_total",
            &[("provider", provider), ("outcome", outcome)],
            counter.get() as f64,
        );
    }
    page.family(
        "herd_places_upstream_duration_seconds",
        Kind::Histogram,
        "How long each request to the places service took.",
    );
    stats.upstream_seconds.write(
        page,
        "herd_places_upstream_duration_seconds",
        &[("provider", provider)],
    );
    let spend = node.places.spend();
    page.family(
        "herd_places_refused_total",
        Kind::Counter,
        "Lookups not sent upstream because the places budget was spent (max_requests_per_s, max_in_flight).",
    );
    page.sample(
        "herd_places_refused_total",
        &[("provider", provider)],
        spend.refused as f64,
    );
    page.family(
        "herd_places_upstream_requests_total",
        Kind::Counter,
        "Requests sent to the places service.",
    );
    page.sample(
        "herd_places_upstream_requests_total",
        &[("provider", provider)],
        spend.upstream_calls as f64,
    );
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

    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        page.single(
            "herd_node_threads",
            Kind::Gauge,
            "Runtime threads the node answers its connections on (node_threads).",
            runtime.metrics().num_workers() as f64,
        );
    }

    let life = node.table.counts();
    page.single(
        "herd_clients",
        Kind::Gauge,
        "Clients whose location this node holds.",
        life.clients as f64,
    );
    if let Some(max) = life.max {
        page.single(
            "herd_clients_max",
            Kind::Gauge,
            "The most clients this node holds (clients.max).",
            max as f64,
        );
    }
    page.single(
        "herd_clients_forgotten",
        Kind::Gauge,
        "Tombstones held: clients forgotten (herdctl forget) and not yet compacted away.",
        life.forgotten as f64,
    );
    page.single(
        "herd_clients_expired_total",
        Kind::Counter,
        "Records that expired here (clients.ttl_s): removed, not loaded, or refused on arrival.",
        life.expired as f64,
    );
    page.single(
        "herd_clients_refused_total",
        Kind::Counter,
        "New clients refused because the table was full (clients.max).",
        life.refused_full as f64,
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

    write_links(&mut page, node);

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
        page.single(
            "herd_store_journal_bytes",
            Kind::Gauge,
            "Bytes in the store's journal: what a restart would replay.",
            store.journal_bytes() as f64,
        );
        page.family(
            "herd_store_fsync_duration_seconds",
            Kind::Histogram,
            "How long each fdatasync of the store's journal took.",
        );
        store
            .fsync_seconds
            .write(&mut page, "herd_store_fsync_duration_seconds", &[]);
    }
    write_places(&mut page, node);
    page.family(
        "herd_peer_input_dropped_total",
        Kind::Counter,
        "Lines from neighbours dropped as invalid, by reason (unknown origin, too long, too far in the future, unasked WANT, failed AUTH).",
    );
    for (reason, count) in node.peer_input.counts() {
        page.sample(
            "herd_peer_input_dropped_total",
            &[("reason", reason)],
            count as f64,
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

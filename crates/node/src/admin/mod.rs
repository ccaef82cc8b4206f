//! The admin endpoint: a small HTTP server on its own port (`admin_port`), apart from the
//! client port, so health probes, Prometheus and operators never compete with clients for
//! `limits.max_connections`, and a client holding every client slot no longer makes the
//! node look dead.
//!
//! Routes: `/healthz` (the node's loops are alive), `/readyz` (store loaded and listening),
//! open to anyone who reaches the port; `/status` (JSON) and `/metrics` (Prometheus text),
//! which need `Authorization: Bearer <admin token>` unless `admin: { open: true }`.
//!
//! Every connection gets one request and one response within [`http::REQUEST_TIMEOUT`], its
//! head at most [`http::MAX_REQUEST_BYTES`]; at most [`MAX_ADMIN_CONNECTIONS`] are open at
//! once, past that new ones are closed at once. None of this touches the client port's
//! slots, and a slow admin client holds nothing but its own task.

pub mod http;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use super::Node;
use herd_wire::status::{LinkFaultStatus, LinkStatus, NodeStatus};
use http::{read_request, response, BadRequest, Request, REQUEST_TIMEOUT};

/// Admin connections open at once; a probe or a scrape takes milliseconds, so this only
/// bounds what a hostile client can hold.
pub const MAX_ADMIN_CONNECTIONS: usize = 128;

/// How often the node's heartbeat ticks, and how stale it may get before `/healthz` says
/// the node is not alive.
const HEARTBEAT_EVERY: Duration = Duration::from_millis(500);
const HEARTBEAT_STALE: Duration = Duration::from_secs(5);

/// The node's liveness: a task ticks it; `/healthz` checks it is recent. A runtime whose
/// workers are stuck (a blocking call, a deadlock) stops ticking.
#[derive(Default)]
pub struct Heartbeat {
    /// Milliseconds since the node started, at the last tick.
    last_ms: AtomicU64,
}

impl Heartbeat {
    /// Ticks until the node stops (the caller aborts the task).
    pub fn spawn(node: &Arc<Node>) -> tokio::task::JoinHandle<()> {
        let node = Arc::clone(node);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(HEARTBEAT_EVERY);
            loop {
                ticks.tick().await;
                let now = node.started.elapsed().as_millis() as u64;
                node.heartbeat.last_ms.store(now, Ordering::Relaxed);
            }
        })
    }

    fn alive(&self, node: &Node) -> bool {
        let now = node.started.elapsed().as_millis() as u64;
        now.saturating_sub(self.last_ms.load(Ordering::Relaxed))
            <= HEARTBEAT_STALE.as_millis() as u64
    }
}

/// Serves the admin endpoint until the listener fails.
pub async fn serve(node: Arc<Node>, listener: TcpListener) -> Result<()> {
    let slots = Arc::new(Semaphore::new(MAX_ADMIN_CONNECTIONS));
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!("admin accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            continue; // dropped: closed at once
        };
        let node = Arc::clone(&node);
        tokio::spawn(async move {
            let _slot = slot;
            let _open = node.admin_open.enter();
            let _ = tokio::time::timeout(REQUEST_TIMEOUT, answer(&node, stream)).await;
        });
    }
}

/// Counts admin connections open now (for `herd_connections{kind="admin"}`).
#[derive(Default)]
pub struct OpenCount(AtomicU64);

impl OpenCount {
    pub fn enter(&self) -> OpenGuard<'_> {
        self.0.fetch_add(1, Ordering::Relaxed);
        OpenGuard(&self.0)
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

pub struct OpenGuard<'a>(&'a AtomicU64);

impl Drop for OpenGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn answer(node: &Node, mut stream: TcpStream) {
    let (bytes, unread) = match read_request(&mut stream).await {
        Ok(request) => (route(node, &request), false),
        Err(BadRequest::Closed) => return,
        Err(BadRequest::TooLarge) => (
            response(431, "text/plain", "request too large\n", false),
            true,
        ),
        Err(BadRequest::Malformed) => (
            response(400, "text/plain", "not an HTTP request\n", false),
            true,
        ),
    };
    let _ = stream.write_all(&bytes).await;
    let _ = stream.shutdown().await;
    if unread {
        // Closing with unread input would reset the connection, and the client might never
        // see why it was refused: read and discard a little of it first (within the
        // connection's deadline).
        let _ = tokio::io::copy(
            &mut (&mut stream).take(LINGER_BYTES),
            &mut tokio::io::sink(),
        )
        .await;
    }
}

/// What a refused request's connection reads and discards before it closes.
const LINGER_BYTES: u64 = 256 * 1024;

/// The response to one request.
fn route(node: &Node, request: &Request) -> Vec<u8> {
    let head_only = request.method == "HEAD";
    if request.method != "GET" && !head_only {
        return response(405, "text/plain", "only GET and HEAD\n", false);
    }
    let text = "text/plain; charset=utf-8";
    match request.path.as_str() {
        "/healthz" => {
            if node.heartbeat.alive(node) {
                response(200, "application/json", &probe_body(node, "ok"), head_only)
            } else {
                let body = probe_body(node, "stalled");
                response(503, "application/json", &body, head_only)
            }
        }
        // The admin listener opens once the store is loaded and the client port listens.
        "/readyz" => response(
            200,
            "application/json",
            &probe_body(node, "ready"),
            head_only,
        ),
        "/status" | "/metrics" => {
            if let Err(refusal) = authorize(node, request) {
                return refusal;
            }
            if request.path == "/status" {
                response(200, "application/json", &status_body(node), head_only)
            } else {
                response(
                    200,
                    "text/plain; version=0.0.4; charset=utf-8",
                    &crate::metrics::render(node),
                    head_only,
                )
            }
        }
        _ => response(
            404,
            text,
            "no such route: try /healthz, /readyz, /status, /metrics\n",
            head_only,
        ),
    }
}

/// What the probes answer: who answers (the supervisor checks the pid, so a squatter on the
/// port does not pass) and the herd file it runs (the supervisor's reload check).
fn probe_body(node: &Node, status: &str) -> String {
    serde_json::json!({
        "status": status,
        "name": node.name,
        "pid": std::process::id(),
        "config": node.config().digest,
    })
    .to_string()
}

fn status_body(node: &Node) -> String {
    let started = node.started;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let links = node
        .peers
        .links()
        .iter()
        .map(|link| {
            let history = link.stats.snapshot();
            let state = match (link.is_up(), history.ever_up) {
                (true, _) => "up",
                (false, true) => "down",
                (false, false) => "connecting",
            };
            let for_s = match history.since {
                Some(since) => (now - since).max(0.0) as u64,
                None => started.elapsed().as_secs(),
            };
            LinkStatus {
                peer: link.name.clone(),
                state: state.to_owned(),
                since: history.since,
                for_s,
                last_error: history.last_error,
                queue_depth: link.queue_depth(),
                records_sent: link.stats.records_sent.get(),
                records_received: link.stats.records_received.get(),
                bytes_sent: link.stats.bytes_sent.get(),
                bytes_received: link.stats.bytes_received.get(),
                last_sync: history.last_sync,
                encrypted: history.encrypted,
                peer_cert_not_after: history.peer_cert_not_after,
                fault: link.fault.get().map(|f| LinkFaultStatus {
                    describe: f.describe(),
                    cut: f.cut,
                    delay_ms: f.delay_ms,
                    jitter_ms: f.jitter_ms,
                    loss_percent: f.loss_percent,
                    id: f.id,
                }),
                fault_lines_dropped: link.stats.fault_dropped.get(),
                fault_lines_delayed: link.stats.fault_delayed.get(),
                acks: Some(link.ack_state().to_owned()),
            }
        })
        .collect();
    let status = NodeStatus {
        figures: node.figures(),
        links,
    };
    serde_json::to_string(&status).expect("status always serializes")
}

/// `/status` and `/metrics` need the admin token, unless `admin.open`. Without a herd secret
/// there is no token, so they are refused unless open.
fn authorize(node: &Node, request: &Request) -> Result<(), Vec<u8>> {
    let config = node.config();
    if config.admin.open {
        return Ok(());
    }
    let text = "text/plain; charset=utf-8";
    let Some(secret) = &node.secret else {
        return Err(response(
            403,
            text,
            "this herd has no secret (insecure_open_links), so no admin token: set admin: { open: true } in herd.yaml \
             to serve /status and /metrics without one\n",
            false,
        ));
    };
    match &request.bearer {
        Some(token) if secret.verify_admin_token(token) => Ok(()),
        _ => Err(response(
            401,
            text,
            "send Authorization: Bearer <token> (herdctl export prometheus --write-token writes \
             it), or set admin: { open: true } in herd.yaml\n",
            false,
        )),
    }
}

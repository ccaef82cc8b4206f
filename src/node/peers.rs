//! Links to neighbours. Each node dials every neighbour and keeps that connection for its
//! own outgoing updates; what a neighbour sends arrives on the neighbour's own dialled
//! connection (see `server.rs`). Two one-way connections per link mean no race over which
//! end owns the link, and each end reconnects on its own.
//!
//! Message flow on a link this node dialled:
//!   -> `HERD HELLO me 1`            <- `HERD WELCOME them 1`
//!   -> `HERD DIGEST n <hex>`        (anti-entropy: this table summarised per bucket of clients)
//!   <- `HERD SYNC ...` * k          (their records in the buckets that differ)
//!   <- `HERD WANT b1,b2,...`        -> `HERD SYNC ...` (this node's records in those buckets)
//!   -> `HERD AT ...`                every update this node accepts, except the neighbour's own
//! At link-up the end with the smaller name starts the exchange (it repairs both directions);
//! both ends repeat it every `reconnect.sync_interval_s` to repair anything lost while the
//! link stayed up.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::mpsc::{self, unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::lines::{read_line, Line, MAX_LINE_BYTES};
use super::{Arrival, Node};
use crate::auth;
use crate::config::ReconnectSettings;
use crate::protocol::{
    self, format_auth, format_digest, format_hello, format_sync, format_update, Command,
    PeerMessage,
};
use crate::record::AtRecord;

/// How long a neighbour has to accept a connection and answer HELLO.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Updates written to a neighbour in one go when many are queued.
const MAX_BATCH: usize = 256;

type UpdateQueue = UnboundedReceiver<Arc<AtRecord>>;

struct Link {
    /// True while the handshake is done and the dialler is forwarding. While a link is
    /// down, updates are not queued for it: the anti-entropy exchange repairs the gap.
    up: AtomicBool,
    queue: UnboundedSender<Arc<AtRecord>>,
    /// Taken once by the link's dialler task.
    receiver: Mutex<Option<UpdateQueue>>,
}

/// The node's side of every link.
pub struct Peers {
    links: BTreeMap<String, Link>,
}

impl Peers {
    pub fn new(neighbours: &BTreeSet<String>) -> Peers {
        let links = neighbours
            .iter()
            .map(|name| {
                let (queue, receiver) = unbounded_channel();
                let link = Link {
                    up: AtomicBool::new(false),
                    queue,
                    receiver: Mutex::new(Some(receiver)),
                };
                (name.clone(), link)
            })
            .collect();
        Peers { links }
    }

    /// Queues `record` for every neighbour whose link is up, except `from`.
    pub fn flood(&self, record: &Arc<AtRecord>, from: Option<&str>) {
        for (name, link) in &self.links {
            if Some(name.as_str()) != from && link.up.load(Ordering::Acquire) {
                // A send fails only when the dialler is gone (shutting down): nothing to do.
                let _ = link.queue.send(Arc::clone(record));
            }
        }
    }

    /// How many links are up, and how many there are.
    pub fn links_up(&self) -> (usize, usize) {
        let up = self
            .links
            .values()
            .filter(|l| l.up.load(Ordering::Acquire))
            .count();
        (up, self.links.len())
    }
}

/// Starts one dialler task per neighbour.
pub fn spawn_dialers(node: &Arc<Node>, shutdown: watch::Receiver<bool>) -> Vec<JoinHandle<()>> {
    node.peers
        .links
        .iter()
        .map(|(name, link)| {
            let queue = link
                .receiver
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take()
                .expect("a link's dialler is started once");
            let node = Arc::clone(node);
            let name = name.clone();
            let mut shutdown = shutdown.clone();
            tokio::spawn(async move {
                tokio::select! {
                    _ = keep_link(&node, &name, queue) => {}
                    _ = shutdown.wait_for(|stop| *stop) => {}
                }
            })
        })
        .collect()
}

/// Connects, forwards, and reconnects with capped exponential backoff, forever.
async fn keep_link(node: &Node, neighbour: &str, mut queue: UpdateQueue) {
    let address = node.config.address(&node.config.servers[neighbour]);
    let link = &node.peers.links[neighbour];
    let mut backoff = Backoff::new(node.config.reconnect);
    // Each distinct reason is logged once, not every attempt: a down neighbour is one line,
    // and a new reason (say, a refused proof once it is back up) still gets its own.
    let mut last_failure: Option<String> = None;
    loop {
        match handshake(node, neighbour, address).await {
            Ok(stream) => {
                last_failure = None;
                backoff.reset();
                link.up.store(true, Ordering::Release);
                tracing::info!("peer link to {neighbour} ({address}) up");
                let why = forward(node, neighbour, stream, &mut queue).await;
                link.up.store(false, Ordering::Release);
                // Updates queued for the dead connection are covered by the next catch-up.
                while queue.try_recv().is_ok() {}
                let why = why
                    .err()
                    .map_or("closed by peer".to_owned(), |e| e.to_string());
                tracing::info!("peer link to {neighbour} ({address}) dropped: {why}");
            }
            Err(e) => {
                let reason = format!("{e:#}");
                if last_failure.as_deref() != Some(reason.as_str()) {
                    tracing::info!(
                        "cannot reach {neighbour} at {address}: {reason}; retrying with backoff"
                    );
                    last_failure = Some(reason);
                }
            }
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

/// Dials `neighbour`, introduces this node and, with a herd secret, has each side prove it
/// knows it (see `auth.rs`); returns the connection once the link is established.
async fn handshake(node: &Node, neighbour: &str, address: SocketAddr) -> Result<TcpStream> {
    let attempt = async {
        let mut stream = TcpStream::connect(address).await?;
        stream.set_nodelay(true)?;
        let our_nonce = auth::nonce();
        let hello = format_hello(&node.name, &our_nonce);
        stream.write_all(hello.as_bytes()).await?;
        tracing::info!(target: "wire", "{neighbour} > {}", hello.trim_end());
        // The neighbour sends nothing after WELCOME until this side speaks again, so the
        // reader buffers nothing past it.
        let answer = match read_line(&mut BufReader::new(&mut stream), 4096).await? {
            Some(Line::Complete(line)) => line,
            _ => bail!("connection closed during handshake"),
        };
        tracing::info!(target: "wire", "{neighbour} < {}", crate::logs::printable(&answer));
        let (their_nonce, proof) = match protocol::parse_line(&answer) {
            Some(Command::Peer(PeerMessage::Welcome {
                server,
                nonce,
                proof,
                ..
            })) if server == neighbour => (nonce.to_owned(), proof.map(str::to_owned)),
            _ => bail!(
                "handshake refused: answered {:?}",
                String::from_utf8_lossy(&answer)
            ),
        };
        match (&node.config.secret, proof) {
            (None, None) => {}
            (Some(secret), Some(proof)) => {
                if !secret.verify_welcome(&proof, neighbour, &node.name, &our_nonce, &their_nonce)
                {
                    bail!("{neighbour} could not prove it knows the herd secret; not linking");
                }
                let proof = secret.auth_mac(&node.name, neighbour, &their_nonce, &our_nonce);
                let auth = format_auth(&proof);
                stream.write_all(auth.as_bytes()).await?;
                tracing::info!(target: "wire", "{neighbour} > {}", auth.trim_end());
            }
            (Some(_), None) => bail!(
                "{neighbour} has no herd secret (its links are open); give every server the same secret"
            ),
            (None, Some(_)) => bail!(
                "{neighbour} requires the herd secret; set secret: in herd.yaml or {}",
                auth::SECRET_ENV
            ),
        }
        Ok(stream)
    };
    tokio::time::timeout(HANDSHAKE_TIMEOUT, attempt)
        .await
        .context("handshake timed out")?
}

/// Runs anti-entropy (now and every `sync_interval`), forwards queued updates, and applies
/// what the neighbour sends back, until the connection fails or closes.
async fn forward(
    node: &Node,
    neighbour: &str,
    stream: TcpStream,
    queue: &mut UpdateQueue,
) -> Result<()> {
    let (reader, mut writer) = stream.into_split();
    // Reading in its own task keeps the select below cancel-safe.
    let (lines_tx, mut lines) = mpsc::channel(1024);
    let _reader = AbortOnDrop(tokio::spawn(read_lines(reader, lines_tx)));

    // One exchange repairs both directions, and a restart or partition breaks both of a
    // link's one-way connections, so at link-up only the end with the smaller name starts
    // it: a returning server is sent what it missed once, not twice. A connection that
    // breaks alone (an idle timeout, a refused line) is repaired by the periodic exchange,
    // within `sync_interval`. The link was marked up before the digest is taken, so every
    // update is in the exchange or queued after it (a duplicate is harmless: newer-wins
    // drops it).
    if node.name.as_str() < neighbour {
        writer
            .write_all(format_digest(&node.table.digest()).as_bytes())
            .await?;
    }
    let period = node.config.reconnect.sync_interval;
    let mut exchange = tokio::time::interval_at(tokio::time::Instant::now() + period, period);

    let mut batch = String::new();
    loop {
        tokio::select! {
            update = queue.recv() => {
                let Some(first) = update else { return Ok(()) };
                batch.clear();
                batch.push_str(&format_update(first.line()));
                while batch.len() < 64 * 1024 {
                    match queue.try_recv() {
                        Ok(next) => batch.push_str(&format_update(next.line())),
                        Err(_) => break,
                    }
                }
                writer.write_all(batch.as_bytes()).await?;
                for line in batch.lines() {
                    tracing::info!(target: "wire", "{neighbour} > {line}");
                }
            }
            line = lines.recv() => {
                let Some(line) = line else { return Ok(()) };
                answer(node, neighbour, &line, &mut writer).await?;
            }
            _ = exchange.tick() => {
                writer.write_all(format_digest(&node.table.digest()).as_bytes()).await?;
            }
        }
    }
}

/// Handles one line the neighbour sent on this node's link: records that anti-entropy
/// repaired, and the buckets it wants from this node.
async fn answer(
    node: &Node,
    neighbour: &str,
    line: &[u8],
    writer: &mut OwnedWriteHalf,
) -> Result<()> {
    match protocol::parse_line(line) {
        Some(Command::Peer(PeerMessage::Sync(record))) => {
            node.accept_from_peer(AtRecord::from_fields(&record), neighbour, Arrival::Sync);
        }
        Some(Command::Peer(PeerMessage::Update(record))) => {
            node.accept_from_peer(AtRecord::from_fields(&record), neighbour, Arrival::Flood);
        }
        Some(Command::Peer(PeerMessage::Want(buckets))) => {
            let records = node.table.records_in(&buckets);
            for chunk in records.chunks(MAX_BATCH) {
                let lines: String = chunk.iter().map(|r| format_sync(r.line())).collect();
                writer.write_all(lines.as_bytes()).await?;
            }
            if !buckets.is_empty() {
                tracing::info!(
                    "anti-entropy with {neighbour}: it wanted {} buckets; sent {} records",
                    buckets.len(),
                    records.len()
                );
            }
        }
        // The neighbour refused something this side sent (e.g. AUTH): the link is not what
        // this side thinks it is, so drop it and let the handshake run again.
        _ if line.starts_with(b"? ") => {
            bail!("{neighbour} refused: {}", crate::logs::printable(line))
        }
        _ => tracing::warn!(
            "unexpected line from {neighbour}: {}",
            crate::logs::printable(line)
        ),
    }
    Ok(())
}

/// Feeds the neighbour's lines into `lines` until EOF or an error.
async fn read_lines(reader: OwnedReadHalf, lines: mpsc::Sender<Vec<u8>>) {
    let mut reader = BufReader::new(reader);
    while let Ok(Some(Line::Complete(line))) = read_line(&mut reader, MAX_LINE_BYTES).await {
        if lines.send(line).await.is_err() {
            return;
        }
    }
}

/// Aborts a task when the owner goes away, so a link's reader never outlives the link.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Capped exponential backoff with a little jitter, so a herd restarting together does not
/// dial in lockstep.
struct Backoff {
    settings: ReconnectSettings,
    current: Duration,
}

impl Backoff {
    fn new(settings: ReconnectSettings) -> Backoff {
        Backoff {
            settings,
            current: settings.initial,
        }
    }

    fn reset(&mut self) {
        self.current = self.settings.initial;
    }

    fn next_delay(&mut self) -> Duration {
        let delay = self.current;
        self.current = (self.current * 2).min(self.settings.max);
        let jitter_range = (delay.as_nanos() / 5).max(1) as u64;
        let jitter = super::server::now_nanos().unsigned_abs() as u64 % jitter_range;
        delay + Duration::from_nanos(jitter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_and_resets() {
        let mut b = Backoff::new(ReconnectSettings {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(1000),
            sync_interval: Duration::from_secs(30),
        });
        let delays: Vec<u128> = (0..6).map(|_| b.next_delay().as_millis()).collect();
        let floors = [100, 200, 400, 800, 1000, 1000];
        for (d, floor) in delays.iter().zip(floors) {
            assert!(*d >= floor && *d <= floor + floor / 5, "{delays:?}");
        }
        b.reset();
        assert!(b.next_delay() < Duration::from_millis(121));
    }

    #[test]
    fn flood_skips_the_sender_and_links_that_are_down() {
        let names: BTreeSet<String> = ["A", "B", "C"].map(String::from).into();
        let peers = Peers::new(&names);
        let mut receivers: BTreeMap<&str, UpdateQueue> = ["A", "B", "C"]
            .map(|n| (n, peers.links[n].receiver.lock().unwrap().take().unwrap()))
            .into();
        peers.links["A"].up.store(true, Ordering::Release);
        peers.links["B"].up.store(true, Ordering::Release);
        let record =
            Arc::new(AtRecord::from_parts("X", "+0.000000000", "kiwi", "+1+1", "5").unwrap());
        peers.flood(&record, Some("A"));
        assert!(
            receivers.get_mut("A").unwrap().try_recv().is_err(),
            "sender"
        );
        assert_eq!(receivers.get_mut("B").unwrap().try_recv().unwrap(), record);
        assert!(receivers.get_mut("C").unwrap().try_recv().is_err(), "down");
        assert_eq!(peers.links_up(), (2, 3));
    }
}

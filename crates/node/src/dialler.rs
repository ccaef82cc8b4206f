//! The dialler: one task per neighbour that connects, introduces this node (proving the herd
//! secret), runs the link's session, and reconnects with capped exponential
//! backoff when it drops, forever. A HELLO from the neighbour cuts the backoff short.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::handshake::greet;
use super::peers::Link;
use super::session;
use super::Node;
use herd_config::config::ReconnectSettings;
use herd_config::hosts::Endpoint;
use herd_config::tls::{BoxRead, BoxWrite, PeerCert};
use herd_wire::protocol::ACK_VERSION;

/// How long a neighbour has to accept a connection and answer HELLO.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Starts one dialler task per neighbour.
pub fn spawn_dialers(node: &Arc<Node>, shutdown: watch::Receiver<bool>) -> Vec<JoinHandle<()>> {
    node.peers
        .links()
        .into_iter()
        .map(|link| spawn_dialer(node, link, shutdown.clone()))
        .collect()
}

/// Starts the dialler of `link`; it runs until the node shuts down or a reload retires the
/// link.
pub fn spawn_dialer(
    node: &Arc<Node>,
    link: Arc<Link>,
    mut shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    let node = Arc::clone(node);
    tokio::spawn(async move {
        tokio::select! {
            _ = keep_link(&node, &link) => {}
            _ = shutdown.wait_for(|stop| *stop) => {}
            _ = link.retired() => {
                tracing::info!("peer link to {} removed (the herd file was reloaded)", link.name);
            }
        }
    })
}

/// Connects, runs the session, and reconnects with capped exponential backoff, forever.
/// The neighbour's address and the backoff settings are read from the herd file the node
/// runs at each attempt, so a reload that moves the neighbour is followed.
async fn keep_link(node: &Node, link: &Link) {
    let neighbour = link.name.as_str();
    let mut backoff = Retries::new(node.config().reconnect);
    // Each distinct reason is logged once, not every attempt: a down neighbour is one line,
    // and a new reason (say, a refused proof once it is back up) still gets its own.
    let mut last_failure: Option<String> = None;
    loop {
        let config = node.config();
        let Some(server) = config.servers.get(neighbour) else {
            return; // no longer in the herd file: the reload retires this link
        };
        let address = config.endpoint(server);
        backoff.follow(config.reconnect);
        drop(config);
        if link.fault.is_cut() {
            wait_while_cut(link).await;
            continue;
        }
        match handshake(node, neighbour, &address).await {
            Ok((stream, cert, version)) => {
                last_failure = None;
                backoff.reset();
                // Replies wait for the neighbour's acknowledgements when it offers them,
                // except across a `herdctl link delay`, whose delay line stands for the
                // wire: what enters it counts as handed over (see the README).
                let delayed = link.fault.get().is_some_and(|f| f.delay_ms > 0);
                link.up(version >= ACK_VERSION && !delayed);
                link.stats.went_up();
                tracing::info!("peer link to {neighbour} ({address}) up");
                let ended = session::run_dialled(node, link, stream, cert).await;
                link.down();
                link.stats.went_down(
                    super::link_stats::classify(ended.as_ref().err()),
                    Some(match &ended {
                        Ok(()) => "closed by peer".to_owned(),
                        Err(e) => format!("{e:#}"),
                    }),
                );
                let why = match ended {
                    Ok(()) => "closed by peer".to_owned(),
                    Err(e) => {
                        // Updates were lost on the way (queue full, a stalled write, no
                        // answer): the next link-up repairs them whatever the names' order.
                        link.mark_for_repair();
                        format!("{e:#}")
                    }
                };
                tracing::info!("peer link to {neighbour} ({address}) dropped: {why}");
            }
            Err(e) => {
                let reason = format!("{e:#}");
                link.stats.failed_to_connect(reason.clone());
                if last_failure.as_deref() != Some(reason.as_str()) {
                    tracing::info!(
                        "cannot reach {neighbour} at {address}: {reason}; retrying with backoff"
                    );
                    last_failure = Some(reason);
                }
            }
        }
        // A HELLO from the neighbour means it is back: dial now, from the first delay again.
        if link.backoff(backoff.next_delay()).await {
            backoff.reset();
        }
    }
}

/// Dials nothing while the operator has the link cut (`herdctl link cut`).
async fn wait_while_cut(link: &Link) {
    let mut watched = Some(link.fault.watch());
    tracing::warn!(
        "link to {} is cut (herdctl link cut): not dialling until it is healed",
        link.name
    );
    while link.fault.is_cut() {
        super::faults::changed(&mut watched).await;
    }
}

/// Dials `neighbour` (over mutual TLS when the herd has `links.tls`), introduces this node,
/// proves the herd secret over the neighbour's challenge and checks the neighbour's proof in
/// turn (see `auth.rs`); returns the connection's halves once the link is established, with
/// the certificate the neighbour presented and the version its WELCOME said.
async fn handshake(
    node: &Node,
    neighbour: &str,
    address: &Endpoint,
) -> Result<((BoxRead, BoxWrite), Option<PeerCert>, u32)> {
    let attempt = async {
        // Resolved at every dial: a neighbour whose name now points elsewhere is found.
        let stream = address.connect().await?;
        stream.set_nodelay(true)?;
        let Some(tls) = &node.tls else {
            let mut stream = stream;
            let version = greet(node, neighbour, &mut stream).await?;
            let (reader, writer) = stream.into_split();
            let halves: (BoxRead, BoxWrite) = (Box::new(reader), Box::new(writer));
            return Ok((halves, None, version));
        };
        let mut stream = tls
            .connector(neighbour)?
            .connect(herd_config::tls::server_name(), stream)
            .await
            .map_err(|e| anyhow!("TLS handshake with {neighbour} failed: {e}"))?;
        let cert = PeerCert::from_chain(stream.get_ref().1.peer_certificates());
        let version = greet(node, neighbour, &mut stream).await?;
        Ok((herd_config::tls::split(stream), cert, version))
    };
    tokio::time::timeout(HANDSHAKE_TIMEOUT, attempt)
        .await
        .context("handshake timed out")?
}

/// The dialler's retries: a count and its policy, jittered capped exponential backoff (`backoff.rs`) from
/// `reconnect:`, back to the first delay once a link comes up or the neighbour says HELLO.
struct Retries {
    policy: herd_os::backoff::Backoff,
    retries: u32,
}

impl Retries {
    fn new(settings: ReconnectSettings) -> Retries {
        Retries {
            policy: herd_os::backoff::Backoff {
                initial: settings.initial,
                max: settings.max,
            },
            retries: 0,
        }
    }

    /// Takes `reconnect:` as the herd file now says (a reload may have changed it).
    fn follow(&mut self, settings: ReconnectSettings) {
        self.policy.initial = settings.initial;
        self.policy.max = settings.max;
    }

    fn reset(&mut self) {
        self.retries = 0;
    }

    fn next_delay(&mut self) -> Duration {
        let delay = self.policy.jittered(self.retries);
        self.retries = self.retries.saturating_add(1);
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_and_resets() {
        let mut b = Retries::new(ReconnectSettings {
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
}

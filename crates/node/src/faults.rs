//! Link faults the operator sets on purpose (`herdctl link cut|delay|loss|heal`), applied by
//! the node itself so they work across hosts and need no root. Each end of a link is told
//! the same fault (with the same id) and applies it to what it sends and dials:
//!
//! - **cut**: no dialling, and a connection from the neighbour is ended after it said which
//!   fault it holds (below); nothing is exchanged.
//! - **delay**: every line this end sends on the link is held `ms` (± `jitter`) before it is
//!   written, in order, like a long wire. Both ends do it, so both directions are slow.
//! - **loss**: this share of the flooded lines (`HERD AT`) is dropped instead of written;
//!   anti-entropy repairs them.
//!
//! A change of fault restarts the link's sessions, so a session runs one fault from start to
//! end. Faults live in memory: a restart clears them. So that a restart of *either* end
//! clears the link, an end that holds a fault starts each session with `HERD FAULT <id>`,
//! and an end that holds none answers `HERD FAULT -`; an end that learns the other does not
//! hold its fault (it restarted, or was healed) clears its own, unless the fault was set
//! moments ago (the tool tells the two ends one after the other).

use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::watch;

use super::Node;
use herd_wire::protocol::ControlCommand;

/// A fault younger than this is kept even when the other end does not hold it: the tool
/// may not have told it yet.
const SETTLE: Duration = Duration::from_secs(2);

/// The faults of one link, as this end holds them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LinkFault {
    /// The id the tool gave the last command: the same at both ends.
    pub id: String,
    pub cut: bool,
    pub delay_ms: u32,
    pub jitter_ms: u32,
    pub loss_percent: u8,
    #[serde(skip)]
    pub set_at: Instant,
}

impl LinkFault {
    /// `cut`, `delay 100±20 ms, loss 30%`: for status and the log.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if self.cut {
            parts.push("cut".to_owned());
        }
        if self.delay_ms > 0 {
            parts.push(match self.jitter_ms {
                0 => format!("delay {} ms", self.delay_ms),
                j => format!("delay {}±{j} ms", self.delay_ms),
            });
        }
        if self.loss_percent > 0 {
            parts.push(format!("loss {}%", self.loss_percent));
        }
        parts.join(", ")
    }
}

/// One link's fault and its watchers (sessions and the dialler end when it changes).
pub struct FaultCell(watch::Sender<Option<LinkFault>>);

impl Default for FaultCell {
    fn default() -> FaultCell {
        FaultCell(watch::Sender::new(None))
    }
}

impl FaultCell {
    pub fn get(&self) -> Option<LinkFault> {
        self.0.borrow().clone()
    }

    pub fn is_cut(&self) -> bool {
        self.0.borrow().as_ref().is_some_and(|f| f.cut)
    }

    fn set(&self, fault: Option<LinkFault>) {
        self.0.send_replace(fault);
    }

    /// A receiver that sees every later change.
    pub fn watch(&self) -> watch::Receiver<Option<LinkFault>> {
        self.0.subscribe()
    }
}

/// Resolves when the fault watched by `rx` changes (never, without a receiver).
pub async fn changed(rx: &mut Option<watch::Receiver<Option<LinkFault>>>) {
    match rx {
        Some(rx) => {
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending::<()>().await,
    }
}

/// Carries out a link-fault command; returns the node's faults after it, or why not.
pub fn apply(node: &Node, command: &ControlCommand<'_>) -> Result<serde_json::Value, String> {
    let peer = match command {
        ControlCommand::Cut { peer, .. }
        | ControlCommand::Delay { peer, .. }
        | ControlCommand::Loss { peer, .. }
        | ControlCommand::Heal(peer) => *peer,
        ControlCommand::Digest | ControlCommand::Records(_) | ControlCommand::Forget { .. } => {
            return Err("not a link command".into());
        }
    };
    if let ControlCommand::Heal("*") = command {
        for link in node.peers.links() {
            if link.fault.get().is_some() {
                link.fault.set(None);
                tracing::warn!(
                    "link fault on the link to {}: healed (herdctl link heal all)",
                    link.name
                );
            }
        }
        return Ok(summary(node));
    }
    let Some(link) = node.peers.link(peer) else {
        return Err(format!("{peer} is not a neighbour of {}", node.name));
    };
    let mut fault = link.fault.get().unwrap_or(LinkFault {
        id: String::new(),
        cut: false,
        delay_ms: 0,
        jitter_ms: 0,
        loss_percent: 0,
        set_at: Instant::now(),
    });
    match *command {
        ControlCommand::Cut { id, .. } => {
            fault.cut = true;
            fault.id = id.to_owned();
        }
        ControlCommand::Delay {
            ms, jitter_ms, id, ..
        } => {
            fault.delay_ms = ms;
            fault.jitter_ms = jitter_ms;
            fault.id = id.to_owned();
        }
        ControlCommand::Loss { percent, id, .. } => {
            fault.loss_percent = percent;
            fault.id = id.to_owned();
        }
        _ => {
            if link.fault.get().is_some() {
                link.fault.set(None);
                tracing::warn!("link fault on the link to {peer}: healed (herdctl link heal)");
            }
            return Ok(summary(node));
        }
    }
    fault.set_at = Instant::now();
    let empty = !fault.cut && fault.delay_ms == 0 && fault.loss_percent == 0;
    tracing::warn!(
        "link fault on the link to {peer}: {} (herdctl link; id {})",
        match empty {
            true => "none".to_owned(),
            false => fault.describe(),
        },
        fault.id
    );
    link.fault.set((!empty).then_some(fault));
    Ok(summary(node))
}

/// The node's link faults: neighbour -> description (only links that have one).
pub fn summary(node: &Node) -> serde_json::Value {
    let faults: serde_json::Map<String, serde_json::Value> = described(node)
        .into_iter()
        .map(|(k, v)| (k, serde_json::Value::String(v)))
        .collect();
    serde_json::json!({ "name": node.name, "faults": faults })
}

/// Neighbour -> fault description, for `HERD STATUS`.
pub fn described(node: &Node) -> std::collections::BTreeMap<String, String> {
    node.peers
        .links()
        .iter()
        .filter_map(|l| Some((l.name.clone(), l.fault.get()?.describe())))
        .collect()
}

/// The neighbour said which fault it holds (`HERD FAULT`): if this end holds another one,
/// set long enough ago, the neighbour restarted or was healed, so this end lets go of its
/// own too. Returns whether the neighbour must be told that this end holds none (it said
/// it holds one, and this end holds none).
pub fn neighbour_holds(node: &Node, neighbour: &str, theirs: Option<&str>) -> bool {
    let Some(link) = node.peers.link(neighbour) else {
        return false;
    };
    let Some(ours) = link.fault.get() else {
        return theirs.is_some();
    };
    if Some(ours.id.as_str()) == theirs || ours.set_at.elapsed() < SETTLE {
        return false;
    }
    tracing::warn!(
        "link fault on the link to {neighbour}: cleared ({}); {neighbour} no longer holds it \
         (it restarted, or was healed)",
        ours.describe()
    );
    link.fault.set(None);
    false
}

/// A small, fast generator for loss and jitter decisions (not for anything secret).
pub struct Dice(u64);

impl Dice {
    pub fn new() -> Dice {
        let seed = herd_config::auth::nonce();
        Dice(u64::from_str_radix(&seed[..16], 16).unwrap_or(0x9e37_79b9_7f4a_7c15) | 1)
    }

    /// A number in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

impl Default for Dice {
    fn default() -> Dice {
        Dice::new()
    }
}

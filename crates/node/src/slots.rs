//! Who may hold a connection on the client port. Connection slots belong to clients
//! (`limits.max_connections`, at most `limits.max_connections_per_ip` from one address);
//! neighbours never compete with them for it:
//!
//! - a connection that finds the client slots full (or its address at its cap) still gets
//!   one of [`HANDSHAKE_SLOTS`] handshake slots, on which only a neighbour's handshake is
//!   heard (`HELLO`, then `AUTH`), each within `limits.first_line_timeout_s`; anything else
//!   closes it. So a flood of idle clients cannot keep a neighbour out.
//! - a connection that proves the secret moves to a slot of its own neighbour
//!   ([`SLOTS_PER_NEIGHBOUR`] each), giving back the client or handshake slot it came in on.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Connections at once that are not yet proved neighbours and found no client slot.
pub const HANDSHAKE_SLOTS: usize = 16;
/// Proved connections per neighbour (its dialled link, and room for one that replaces a
/// link not yet seen dead).
pub const SLOTS_PER_NEIGHBOUR: usize = 4;

/// What an open connection holds, given back when it closes. The permits are never read:
/// holding them is the point, and dropping them gives the slot back.
#[allow(dead_code)]
pub enum Slot {
    Client(OwnedSemaphorePermit, IpGuard),
    Handshake(OwnedSemaphorePermit),
    Peer(OwnedSemaphorePermit),
}

impl Slot {
    pub fn is_handshake(&self) -> bool {
        matches!(self, Slot::Handshake(_))
    }
}

/// Neighbours' room: handshake slots and per-neighbour slots.
pub struct PeerSlots {
    handshake: Arc<Semaphore>,
    per_neighbour: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl Default for PeerSlots {
    fn default() -> PeerSlots {
        PeerSlots {
            handshake: Arc::new(Semaphore::new(HANDSHAKE_SLOTS)),
            per_neighbour: Mutex::default(),
        }
    }
}

impl PeerSlots {
    pub fn try_handshake(&self) -> Option<OwnedSemaphorePermit> {
        Arc::clone(&self.handshake).try_acquire_owned().ok()
    }

    /// A slot for a connection that proved it is neighbour `name`.
    pub fn try_peer(&self, name: &str) -> Option<OwnedSemaphorePermit> {
        let semaphore = {
            let mut all = self.per_neighbour.lock().unwrap_or_else(|e| e.into_inner());
            Arc::clone(
                all.entry(name.to_owned())
                    .or_insert_with(|| Arc::new(Semaphore::new(SLOTS_PER_NEIGHBOUR))),
            )
        };
        semaphore.try_acquire_owned().ok()
    }
}

/// Open client connections per remote address, against `limits.max_connections_per_ip`.
pub struct PerIp {
    counts: Arc<Mutex<HashMap<IpAddr, usize>>>,
    max: AtomicUsize,
}

impl PerIp {
    pub fn new(max: usize) -> PerIp {
        PerIp {
            counts: Arc::default(),
            max: AtomicUsize::new(max),
        }
    }

    /// A reload's new cap, for connections opened from then on.
    pub fn set_max(&self, max: usize) {
        self.max.store(max, Ordering::Relaxed);
    }

    /// Counts a connection from `ip`, unless it is at its cap.
    pub fn try_enter(&self, ip: IpAddr) -> Option<IpGuard> {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let count = counts.entry(ip).or_insert(0);
        if *count >= self.max.load(Ordering::Relaxed) {
            return None;
        }
        *count += 1;
        Some(IpGuard {
            counts: Arc::clone(&self.counts),
            ip,
        })
    }
}

/// One connection counted against its address; uncounted when dropped.
pub struct IpGuard {
    counts: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl Drop for IpGuard {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = counts.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_gets_its_cap_and_its_room_back_on_close() {
        let per_ip = PerIp::new(2);
        let ip: IpAddr = [10, 0, 0, 1].into();
        let (a, _b) = (per_ip.try_enter(ip).unwrap(), per_ip.try_enter(ip).unwrap());
        assert!(per_ip.try_enter(ip).is_none());
        assert!(
            per_ip.try_enter([10, 0, 0, 2].into()).is_some(),
            "another address"
        );
        drop(a);
        assert!(per_ip.try_enter(ip).is_some());
    }

    #[test]
    fn neighbours_have_their_own_room() {
        let slots = PeerSlots::default();
        let held: Vec<_> = (0..SLOTS_PER_NEIGHBOUR)
            .map(|_| slots.try_peer("Ball").unwrap())
            .collect();
        assert!(slots.try_peer("Ball").is_none());
        assert!(slots.try_peer("Welsh").is_some());
        drop(held);
        assert!(slots.try_peer("Ball").is_some());
        let handshakes: Vec<_> = (0..HANDSHAKE_SLOTS)
            .map(|_| slots.try_handshake().unwrap())
            .collect();
        assert!(slots.try_handshake().is_none());
        drop(handshakes);
    }
}

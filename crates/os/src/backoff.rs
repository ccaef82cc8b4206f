//! Capped exponential backoff: the one rule behind the herd's two retry loops, a node
//! redialling a neighbour (`node/dialler.rs`) and the supervisor restarting a crashed node
//! (`supervisor/lifecycle.rs`).

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Backoff {
    /// The delay before retry number `retries` (0: the first): `initial * 2^retries`, capped
    /// at `max`.
    pub fn delay(&self, retries: u32) -> Duration {
        let doublings = retries.min(31);
        self.initial.saturating_mul(1u32 << doublings).min(self.max)
    }

    /// [`Backoff::delay`] plus up to a fifth more, at random, so that many processes retrying
    /// together (a herd restarting at once) spread out instead of retrying in lockstep.
    pub fn jittered(&self, retries: u32) -> Duration {
        let delay = self.delay(retries);
        let range = (delay.as_nanos() / 5).max(1) as u64;
        delay + Duration::from_nanos(random_u64() % range)
    }
}

/// A random number from the standard library's per-process random hasher keys (no extra
/// crate for a little jitter).
fn random_u64() -> u64 {
    RandomState::new().hash_one(std::time::Instant::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_the_cap() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(1000),
        };
        let delays: Vec<u128> = (0..6).map(|n| b.delay(n).as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(
            b.delay(u32::MAX),
            Duration::from_millis(1000),
            "no overflow"
        );
    }

    #[test]
    fn jitter_adds_at_most_a_fifth() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(1000),
        };
        for n in 0..50 {
            let d = b.jittered(n % 6);
            let floor = b.delay(n % 6);
            assert!(d >= floor && d <= floor + floor / 5, "{d:?} for {floor:?}");
        }
    }
}

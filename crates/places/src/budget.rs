//! What bounds a paid web service's bill (google, x): a client must not be able to make one
//! upstream request per WHATSAT.
//!
//! - [`rounded`]: queries are rounded before the cache looks them up (and the rounded query
//!   is what is sent), so near-identical queries share one answer: coordinates to
//!   [`COORDINATE_DECIMALS`] decimals (about 11 m), the radius to 0.1 km ([`RADIUS_STEPS_PER_KM`]).
//! - [`Budget`]: a token bucket (`places.max_requests_per_s`, bursts of one second's worth)
//!   and a cap on requests in flight (`places.max_in_flight`). A request over either is not
//!   sent: the WHATSAT is answered at once with the service's over-limit document.
//! - [`Spend`]: what the provider sent and refused, for status and metrics.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use super::NearbyQuery;

/// Decimals of latitude and longitude kept in a query sent upstream (1e-4 degree: 11 m or
/// less).
pub const COORDINATE_DECIMALS: i32 = 4;

/// The step a radius is rounded to, in kilometres (and the smallest radius sent), 0.1 km,
/// as a divisor: 105 steps are 105.0 / 10.0 = 10.5 exactly as printed,
/// where 105.0 * 0.1 would be 10.500000000000002.
const RADIUS_STEPS_PER_KM: f64 = 10.0;

/// `query` as it is cached and sent: coordinates to [`COORDINATE_DECIMALS`] decimals, the
/// radius to the nearest 0.1 km (at least one step). The bound is kept: it is
/// applied after the cache.
pub fn rounded(query: NearbyQuery) -> NearbyQuery {
    let scale = 10f64.powi(COORDINATE_DECIMALS);
    let coordinate = |degrees: f64| (degrees * scale).round() / scale;
    let steps = (query.radius_km * RADIUS_STEPS_PER_KM).round().max(1.0);
    NearbyQuery {
        lat: coordinate(query.lat),
        lng: coordinate(query.lng),
        radius_km: steps / RADIUS_STEPS_PER_KM,
        bound: query.bound,
    }
}

/// What a provider has spent upstream since the node started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Spend {
    /// Requests sent to the service.
    pub upstream_calls: u64,
    /// Requests not sent because they were over the budget (answered with an over-limit
    /// document instead).
    pub refused: u64,
}

/// Why a request was not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `max_requests_per_s` requests were already sent within the last second or so.
    Rate,
    /// `max_in_flight` requests are waiting for their answers.
    InFlight,
}

/// A token bucket: up to `capacity` tokens, refilled at `per_second`.
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The upstream budget; see the module docs.
#[derive(Debug)]
pub struct Budget {
    per_second: f64,
    max_in_flight: usize,
    bucket: Mutex<Bucket>,
    in_flight: AtomicUsize,
    calls: AtomicU64,
    refused: AtomicU64,
}

impl Budget {
    /// A budget of `per_second` requests a second (bursts up to that many) and
    /// `max_in_flight` at once; both at least one.
    pub fn new(per_second: u32, max_in_flight: usize) -> Budget {
        let per_second = f64::from(per_second.max(1));
        Budget {
            per_second,
            max_in_flight: max_in_flight.max(1),
            bucket: Mutex::new(Bucket {
                tokens: per_second,
                at: Instant::now(),
            }),
            in_flight: AtomicUsize::new(0),
            calls: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        }
    }

    /// Room for one request now: a permit to hold while it is in flight, or why not (counted
    /// as refused).
    pub fn take(&self) -> Result<Permit<'_>, Refusal> {
        self.try_take(Instant::now()).inspect_err(|_| {
            self.refused.fetch_add(1, Ordering::Relaxed);
        })
    }

    fn try_take(&self, now: Instant) -> Result<Permit<'_>, Refusal> {
        // The in-flight slot first, so a request refused for it spends no token.
        let taken = self
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max_in_flight).then_some(n + 1)
            });
        if taken.is_err() {
            return Err(Refusal::InFlight);
        }
        let permit = Permit(self);
        let mut bucket = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
        let refill = now.saturating_duration_since(bucket.at).as_secs_f64() * self.per_second;
        bucket.tokens = (bucket.tokens + refill).min(self.per_second);
        bucket.at = now;
        if bucket.tokens < 1.0 {
            return Err(Refusal::Rate); // the permit's drop gives the slot back
        }
        bucket.tokens -= 1.0;
        self.calls.fetch_add(1, Ordering::Relaxed);
        Ok(permit)
    }

    pub fn spend(&self) -> Spend {
        Spend {
            upstream_calls: self.calls.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
        }
    }

    /// The limits, for messages.
    pub fn per_second(&self) -> u32 {
        self.per_second as u32
    }

    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight
    }
}

/// One request's place in flight; dropping it frees the place.
#[derive(Debug)]
pub struct Permit<'a>(&'a Budget);

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn query(lat: f64, lng: f64, radius_km: f64) -> NearbyQuery {
        NearbyQuery {
            lat,
            lng,
            radius_km,
            bound: 5,
        }
    }

    #[test]
    fn near_identical_queries_round_to_one() {
        let r = rounded(query(34.068930, -118.445127, 10.001));
        assert_eq!(
            (
                r.lat.to_string(),
                r.lng.to_string(),
                r.radius_km.to_string()
            ),
            ("34.0689".into(), "-118.4451".into(), "10".into())
        );
        assert_eq!(r.bound, 5);
        // 10.001 .. 10.200 km: three radii (10, 10.1, 10.2).
        let radii: std::collections::BTreeSet<u64> = (1..=200)
            .map(|i| {
                rounded(query(1.0, 2.0, 10.0 + i as f64 / 1000.0))
                    .radius_km
                    .to_bits()
            })
            .collect();
        assert_eq!(radii.len(), 3);
        assert_eq!(rounded(query(0.0, 0.0, 10.5)).radius_km.to_string(), "10.5");
        assert_eq!(rounded(query(0.0, 0.0, 0.001)).radius_km.to_string(), "0.1");
        assert_eq!(rounded(query(0.0, 0.0, 50.0)).radius_km.to_string(), "50");
        assert_eq!(rounded(query(-90.0, 180.0, 1.0)).lat, -90.0);
        assert_eq!(rounded(query(-90.0, 180.0, 1.0)).lng, 180.0);
    }

    #[test]
    fn the_bucket_allows_a_burst_then_refills() {
        let budget = Budget::new(3, 100);
        let start = Instant::now();
        let permits: Vec<_> = (0..3).map(|_| budget.try_take(start).unwrap()).collect();
        assert_eq!(budget.try_take(start).unwrap_err(), Refusal::Rate);
        drop(permits);
        // A third of a second brings one token back, not more.
        let later = start + Duration::from_millis(340);
        assert!(budget.try_take(later).is_ok());
        assert_eq!(budget.try_take(later).unwrap_err(), Refusal::Rate);
        assert_eq!(budget.spend().upstream_calls, 4);
    }

    #[test]
    fn requests_in_flight_are_capped_and_freed() {
        let budget = Budget::new(100, 2);
        let a = budget.take().unwrap();
        let _b = budget.take().unwrap();
        assert_eq!(budget.take().unwrap_err(), Refusal::InFlight);
        drop(a);
        assert!(budget.take().is_ok());
        assert_eq!(
            budget.spend(),
            Spend {
                upstream_calls: 3,
                refused: 1
            }
        );
        // A refusal for the rate gives its in-flight place back.
        let budget = Budget::new(1, 1);
        drop(budget.take().unwrap());
        assert_eq!(budget.take().unwrap_err(), Refusal::Rate);
        assert_eq!(budget.in_flight.load(Ordering::SeqCst), 0);
    }
}

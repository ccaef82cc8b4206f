//! Metrics for the admin endpoint's `/metrics` (Prometheus text format): counters and
//! histograms the hot path bumps, and the page they are written to.
//!
//! The hot path only bumps atomics (relaxed: a scrape may see one counter a moment ahead of
//! another, which Prometheus tolerates); everything else is read from the node's state when
//! a scrape asks. Names follow Prometheus's conventions: base units, `_total` counters,
//! `_seconds` histograms, and only low-cardinality labels (command, result, peer, outcome).

pub mod process;
mod text;

use std::sync::atomic::{AtomicU64, Ordering};

pub use text::{Exposition, Kind};

/// A monotonic counter.
#[derive(Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn inc(&self) {
        self.add(1);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A histogram over fixed bucket bounds (seconds), with lock-free observation.
pub struct Histogram {
    bounds: &'static [f64],
    /// One count per bound, not cumulative (made cumulative when written), then +Inf.
    buckets: Vec<AtomicU64>,
    /// The sum of observations, in nanoseconds.
    sum_nanos: AtomicU64,
}

/// Observations one task gathers in plain integers and adds to a [`Histogram`] now and then
/// (a connection: once per batch of pipelined requests). Observing straight into the
/// histogram is two atomic adds on cache lines every worker thread writes, which under
/// pipelined load cost more than the rest of the bookkeeping together.
#[derive(Debug, Default)]
pub struct Tally {
    /// Per bucket, as [`Histogram`]'s (sized on the first observation).
    buckets: Vec<u64>,
    sum_nanos: u64,
    /// Whether anything was observed since the last [`Histogram::add`].
    any: bool,
}

/// Bounds for request and upstream latencies: 50 µs to 10 s.
pub const LATENCY_BOUNDS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
];

/// Bounds for propagation delays across the herd: 100 µs to 60 s (anti-entropy is slow).
pub const PROPAGATION_BOUNDS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0,
];

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_nanos: AtomicU64::new(0),
        }
    }

    /// Records one observation of `nanos` nanoseconds.
    pub fn observe_nanos(&self, nanos: u64) {
        self.buckets[self.bucket_of(nanos)].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// The bucket an observation of `nanos` falls in.
    fn bucket_of(&self, nanos: u64) -> usize {
        let seconds = nanos as f64 / 1e9;
        self.bounds
            .iter()
            .position(|b| seconds <= *b)
            .unwrap_or(self.bounds.len())
    }

    /// Records one observation of `nanos` nanoseconds in `tally`, for [`Histogram::add`]
    /// to bring here later.
    #[inline]
    pub fn observe_into(&self, tally: &mut Tally, nanos: u64) {
        if tally.buckets.len() != self.buckets.len() {
            tally.buckets.resize(self.buckets.len(), 0);
        }
        tally.buckets[self.bucket_of(nanos)] += 1;
        tally.sum_nanos += nanos;
        tally.any = true;
    }

    /// Adds what `tally` holds (observed with [`Histogram::observe_into`]) and empties it.
    pub fn add(&self, tally: &mut Tally) {
        if !std::mem::take(&mut tally.any) {
            return;
        }
        for (bucket, count) in self.buckets.iter().zip(&mut tally.buckets) {
            if *count != 0 {
                bucket.fetch_add(std::mem::take(count), Ordering::Relaxed);
            }
        }
        self.sum_nanos
            .fetch_add(std::mem::take(&mut tally.sum_nanos), Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// Writes the `_bucket`, `_sum` and `_count` samples under `labels`.
    pub fn write(&self, page: &mut Exposition, name: &str, labels: &[(&str, &str)]) {
        let bucket = format!("{name}_bucket");
        let mut cumulative = 0;
        for (i, count) in self.buckets.iter().enumerate() {
            cumulative += count.load(Ordering::Relaxed);
            let le = match self.bounds.get(i) {
                Some(bound) => bound.to_string(),
                None => "+Inf".to_owned(),
            };
            let mut with_le = labels.to_vec();
            with_le.push(("le", &le));
            page.sample(&bucket, &with_le, cumulative as f64);
        }
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        page.sample(&format!("{name}_sum"), labels, sum);
        page.sample(&format!("{name}_count"), labels, cumulative as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_histogram_is_written_cumulatively() {
        let h = Histogram::new(&[0.001, 0.01]);
        h.observe_nanos(500_000); // 0.5 ms
        h.observe_nanos(5_000_000); // 5 ms
        h.observe_nanos(2_000_000_000); // 2 s
        let mut page = Exposition::default();
        h.write(&mut page, "d_seconds", &[("command", "IAMAT")]);
        let text = page.finish();
        assert!(text.contains("d_seconds_bucket{command=\"IAMAT\",le=\"0.001\"} 1\n"));
        assert!(text.contains("d_seconds_bucket{command=\"IAMAT\",le=\"0.01\"} 2\n"));
        assert!(text.contains("d_seconds_bucket{command=\"IAMAT\",le=\"+Inf\"} 3\n"));
        assert!(text.contains("d_seconds_count{command=\"IAMAT\"} 3\n"));
        assert!(text.contains("d_seconds_sum{command=\"IAMAT\"} 2.0055\n"));
    }

    #[test]
    fn a_tally_adds_what_direct_observation_would() {
        let direct = Histogram::new(&[0.001, 0.01]);
        let tallied = Histogram::new(&[0.001, 0.01]);
        let mut tally = Tally::default();
        for nanos in [500_000, 5_000_000, 2_000_000_000, 1_000_000, 7] {
            direct.observe_nanos(nanos);
            tallied.observe_into(&mut tally, nanos);
        }
        assert_eq!(
            tallied.count(),
            0,
            "nothing reaches the histogram before add"
        );
        tallied.add(&mut tally);
        tallied.add(&mut tally); // emptied: adding again adds nothing
        let page = |h: &Histogram| {
            let mut page = Exposition::default();
            h.write(&mut page, "d_seconds", &[]);
            page.finish()
        };
        assert_eq!(page(&direct), page(&tallied));
        assert_eq!(tallied.count(), 5);
    }
}

//! A small TTL cache with single-flight: concurrent lookups of the same missing key share one
//! fetch, and only answers the caller marks cacheable are kept for later lookups.
//!
//! Each key maps to a `tokio::sync::OnceCell`. The first caller to reach an empty cell runs the
//! fetch; the others await the same cell. If that first caller is dropped mid-fetch (its client
//! went away), the cell stays empty and one of the waiters runs the fetch instead, so nobody
//! waits for an answer that will never come. A finished cell is served until its TTL passes,
//! unless its answer was not cacheable (an upstream failure): then it is removed at once, so
//! failures are shared only by the lookups that were already waiting for them.
//!
//! The size bound is kept on insertion: expired entries go first, then the oldest.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::OnceCell;

/// What a fetch produced, and when.
#[derive(Debug)]
struct Fetched<V> {
    value: V,
    cacheable: bool,
    at: Instant,
}

struct Entry<V> {
    cell: Arc<OnceCell<Fetched<V>>>,
    /// When the entry was created, for evicting the oldest.
    created: Instant,
}

/// Where an answer came from, for logs and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A finished, fresh entry.
    Hit,
    /// This lookup ran the fetch.
    Fetched,
    /// Another lookup's fetch, in flight when this one arrived.
    Joined,
}

/// A TTL cache with single-flight fetches; see the module docs.
pub struct Cache<K, V> {
    ttl: Duration,
    capacity: usize,
    entries: Mutex<HashMap<K, Entry<V>>>,
}

impl<K, V> Cache<K, V>
where
    K: Eq + Hash + Clone,
    V: Clone,
{
    /// A cache keeping answers for `ttl` (zero: never reused once finished) and at most
    /// `capacity` keys (at least one).
    pub fn new(ttl: Duration, capacity: usize) -> Cache<K, V> {
        Cache {
            ttl,
            capacity: capacity.max(1),
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// How many keys the cache holds (finished or in flight).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The answer for `key`: a fresh cached one, the one an in-flight fetch produces, or the
    /// one `fetch` produces. `fetch` returns the value and whether it may be cached.
    pub async fn get_or_fetch<F, Fut>(&self, key: K, fetch: F) -> (V, Source)
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = (V, bool)>,
    {
        let cell = {
            let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            match entries
                .get(&key)
                .map(|e| (Arc::clone(&e.cell), e.cell.get()))
            {
                Some((_, Some(done))) if done.cacheable && now < done.at + self.ttl => {
                    return (done.value.clone(), Source::Hit);
                }
                Some((cell, None)) => cell,
                _ => {
                    if !entries.contains_key(&key) && entries.len() >= self.capacity {
                        self.evict(&mut entries, now);
                    }
                    let cell = Arc::new(OnceCell::new());
                    entries.insert(
                        key.clone(),
                        Entry {
                            cell: Arc::clone(&cell),
                            created: now,
                        },
                    );
                    cell
                }
            }
        };
        let mut ran = false;
        let done = cell
            .get_or_init(|| {
                ran = true;
                let fetch = fetch();
                async move {
                    let (value, cacheable) = fetch.await;
                    Fetched {
                        value,
                        cacheable,
                        at: Instant::now(),
                    }
                }
            })
            .await;
        if !done.cacheable || self.ttl.is_zero() {
            // Drop it now rather than let it take a slot until evicted; only if it is still
            // this fetch's entry (a later lookup may have replaced it already).
            let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            if entries
                .get(&key)
                .is_some_and(|e| Arc::ptr_eq(&e.cell, &cell))
            {
                entries.remove(&key);
            }
        }
        let source = if ran { Source::Fetched } else { Source::Joined };
        (done.value.clone(), source)
    }

    /// Makes room for one more key: drops every finished entry that can no longer be served,
    /// and if that freed nothing, the oldest entry (a fetch in flight still completes for the
    /// lookups awaiting it; it is just not kept).
    fn evict(&self, entries: &mut HashMap<K, Entry<V>>, now: Instant) {
        let ttl = self.ttl;
        entries.retain(|_, e| match e.cell.get() {
            Some(done) => done.cacheable && now < done.at + ttl,
            None => true,
        });
        while entries.len() >= self.capacity {
            let Some(oldest) = entries
                .iter()
                .min_by_key(|(_, e)| e.created)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            entries.remove(&oldest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    async fn counting(calls: &AtomicUsize, value: u32, cacheable: bool) -> (u32, bool) {
        calls.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(50)).await;
        (value, cacheable)
    }

    #[tokio::test]
    async fn a_second_lookup_is_a_hit() {
        let cache = Cache::new(Duration::from_secs(60), 10);
        let calls = AtomicUsize::new(0);
        assert_eq!(
            cache.get_or_fetch(1, || counting(&calls, 7, true)).await,
            (7, Source::Fetched)
        );
        assert_eq!(
            cache.get_or_fetch(1, || counting(&calls, 8, true)).await,
            (7, Source::Hit)
        );
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn concurrent_misses_share_one_fetch() {
        let cache = Cache::new(Duration::from_secs(60), 10);
        let calls = AtomicUsize::new(0);
        let calls = &calls;
        let lookups = (0..10).map(|i| cache.get_or_fetch(1, move || counting(calls, i, true)));
        let answers = futures_join_all(lookups).await;
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(answers.iter().all(|(v, _)| *v == answers[0].0));
        assert_eq!(
            answers
                .iter()
                .filter(|(_, s)| *s == Source::Fetched)
                .count(),
            1
        );
    }

    #[tokio::test]
    async fn failures_are_not_kept() {
        let cache = Cache::new(Duration::from_secs(60), 10);
        let calls = AtomicUsize::new(0);
        cache.get_or_fetch(1, || counting(&calls, 0, false)).await;
        assert!(cache.is_empty());
        assert_eq!(
            cache.get_or_fetch(1, || counting(&calls, 5, true)).await,
            (5, Source::Fetched)
        );
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn entries_expire_and_the_size_is_bounded() {
        let cache = Cache::new(Duration::from_millis(100), 3);
        let calls = AtomicUsize::new(0);
        for k in 0..10 {
            cache.get_or_fetch(k, || counting(&calls, k, true)).await;
            assert!(cache.len() <= 3);
        }
        // The newest keys are kept, the oldest went.
        assert_eq!(
            cache.get_or_fetch(9, || counting(&calls, 0, true)).await.1,
            Source::Hit
        );
        assert_eq!(
            cache.get_or_fetch(0, || counting(&calls, 0, true)).await.1,
            Source::Fetched
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(
            cache.get_or_fetch(9, || counting(&calls, 0, true)).await.1,
            Source::Fetched
        );
    }

    #[tokio::test]
    async fn a_dropped_leader_hands_the_fetch_to_a_waiter() {
        let cache = Cache::new(Duration::from_secs(60), 10);
        let calls = AtomicUsize::new(0);
        let leader = cache.get_or_fetch(1, || counting(&calls, 1, true));
        // Poll the leader once so it owns the fetch, then drop it.
        tokio::select! {
            biased;
            _ = leader => panic!("the fetch sleeps, it cannot be done yet"),
            _ = tokio::task::yield_now() => {}
        }
        let (value, source) = cache.get_or_fetch(1, || counting(&calls, 2, true)).await;
        assert_eq!((value, source), (2, Source::Fetched));
    }

    /// `futures::future::join_all` without the crate.
    async fn futures_join_all<F: Future>(futures: impl Iterator<Item = F>) -> Vec<F::Output> {
        let mut set = Vec::new();
        for f in futures {
            set.push(Box::pin(f));
        }
        let mut out = Vec::new();
        // Drive them together: poll each in turn until all are done.
        let mut slots: Vec<Option<F::Output>> = set.iter().map(|_| None).collect();
        std::future::poll_fn(|cx| {
            let mut pending = false;
            for (f, slot) in set.iter_mut().zip(slots.iter_mut()) {
                if slot.is_none() {
                    match f.as_mut().poll(cx) {
                        std::task::Poll::Ready(v) => *slot = Some(v),
                        std::task::Poll::Pending => pending = true,
                    }
                }
            }
            if pending {
                std::task::Poll::Pending
            } else {
                std::task::Poll::Ready(())
            }
        })
        .await;
        out.extend(slots.into_iter().map(Option::unwrap));
        out
    }
}

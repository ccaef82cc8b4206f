//! The client table: each client's latest location, as the AT line of the server that first
//! received it. This is the one place that decides whether an update is new, and so the one
//! place that writes the store.

use std::collections::HashMap;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::store::{Seq, Store};
use crate::protocol::DIGEST_BUCKETS;
use crate::record::{client_bucket, AtRecord};

/// Independent locks. A client always lands in the same shard (its digest bucket decides),
/// so updates to different clients rarely wait for each other while updates to one client
/// stay strictly ordered.
const SHARDS: usize = 64;
const BUCKETS_PER_SHARD: usize = DIGEST_BUCKETS / SHARDS;

/// One shard: its records, and per digest bucket it owns (buckets `b` with
/// `b % SHARDS == shard`) the XOR of its records' line hashes, kept current in O(1) per update,
/// so two servers can compare digests to find where their tables differ.
#[derive(Default)]
struct Shard {
    records: HashMap<String, Arc<AtRecord>>,
    digests: [u64; BUCKETS_PER_SHARD],
}

impl Shard {
    /// Newer-wins; returns whether `record` was stored.
    fn store_if_newer(&mut self, record: &Arc<AtRecord>) -> bool {
        let slot = usize::from(record.bucket()) / SHARDS;
        match self.records.get_mut(record.client()) {
            Some(held) if !record.is_newer_than(held) => return false,
            Some(held) => {
                self.digests[slot] ^= held.digest_hash();
                *held = Arc::clone(record);
            }
            None => {
                self.records
                    .insert(record.client().to_owned(), Arc::clone(record));
            }
        }
        self.digests[slot] ^= record.digest_hash();
        true
    }
}

/// Latest record per client id. Readers (WHATSAT, sync) and writers (IAMAT, floods) share it;
/// every critical section is a hash lookup (plus, with a store, one in-memory sled insert).
pub struct Table {
    shards: Vec<RwLock<Shard>>,
    store: Option<Arc<Store>>,
}

impl Default for Table {
    fn default() -> Table {
        Table {
            shards: (0..SHARDS).map(|_| RwLock::default()).collect(),
            store: None,
        }
    }
}

impl Table {
    /// A table in memory only.
    pub fn new() -> Table {
        Table::default()
    }

    /// A table that writes every accepted record to `store`.
    pub fn with_store(store: Arc<Store>) -> Table {
        Table {
            store: Some(store),
            ..Table::default()
        }
    }

    /// Stores `record` if it is newer than what the table holds for its client (see
    /// [`AtRecord::is_newer_than`]). Returns `None` if it was not (stale or duplicate), else
    /// the store's sequence number for the write (0 without a store). Only stored records
    /// are flooded on, which is what makes flooding terminate.
    ///
    /// The store is written under the client's shard lock: the decision "newer" and the disk
    /// write are one step, so two racing updates for a client reach the store in the order
    /// the table took them and the store can never end with the older one.
    pub fn apply(&self, record: &Arc<AtRecord>) -> Option<Seq> {
        let mut shard = self.write(shard_of(record.bucket()));
        if !shard.store_if_newer(record) {
            return None;
        }
        Some(self.store.as_ref().map_or(0, |store| store.put(record)))
    }

    /// Loads records read back from the store (newer-wins, not written back). Returns how
    /// many clients the table holds afterwards.
    pub fn restore(&self, recovered: Vec<AtRecord>) -> usize {
        for record in recovered {
            let record = Arc::new(record);
            self.write(shard_of(record.bucket()))
                .store_if_newer(&record);
        }
        self.len()
    }

    /// The latest record for `client`.
    pub fn get(&self, client: &str) -> Option<Arc<AtRecord>> {
        let bucket = client_bucket(client);
        self.read(shard_of(bucket)).records.get(client).cloned()
    }

    pub fn len(&self) -> usize {
        (0..SHARDS).map(|s| self.read(s).records.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The table's digest: one hash per bucket of clients.
    pub fn digest(&self) -> Vec<u64> {
        let mut digest = vec![0; DIGEST_BUCKETS];
        for s in 0..SHARDS {
            let shard = self.read(s);
            for (slot, d) in shard.digests.iter().enumerate() {
                digest[slot * SHARDS + s] = *d;
            }
        }
        digest
    }

    /// The buckets where this table's digest and `theirs` differ.
    pub fn differing_buckets(&self, theirs: &[u64]) -> Vec<u16> {
        let ours = self.digest();
        (0..DIGEST_BUCKETS)
            .filter(|&b| theirs.get(b) != Some(&ours[b]))
            .map(|b| b as u16)
            .collect()
    }

    /// The records whose clients fall in one of `buckets`, one shard's worth at a time: only
    /// the shards that own those buckets are scanned, and a caller that streams each part
    /// before asking for the next holds at most one shard's records (1/64 of the table).
    pub fn records_in(&self, buckets: &[u16]) -> impl Iterator<Item = Vec<Arc<AtRecord>>> + '_ {
        let mut wanted = vec![false; DIGEST_BUCKETS];
        let mut shards = [false; SHARDS];
        for &b in buckets {
            wanted[usize::from(b)] = true;
            shards[shard_of(b)] = true;
        }
        (0..SHARDS).filter(move |&s| shards[s]).map(move |s| {
            self.read(s)
                .records
                .values()
                .filter(|r| wanted[usize::from(r.bucket())])
                .cloned()
                .collect()
        })
    }

    fn read(&self, shard: usize) -> RwLockReadGuard<'_, Shard> {
        self.shards[shard].read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self, shard: usize) -> RwLockWriteGuard<'_, Shard> {
        self.shards[shard]
            .write()
            .unwrap_or_else(|e| e.into_inner())
    }
}

fn shard_of(bucket: u16) -> usize {
    usize::from(bucket) % SHARDS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(origin: &str, client: &str, time: &str) -> Arc<AtRecord> {
        Arc::new(AtRecord::from_parts(origin, "+0.000000001", client, "+1+1", time).unwrap())
    }

    #[test]
    fn newer_wins_and_stale_or_duplicate_is_dropped() {
        let table = Table::new();
        assert!(table.apply(&record("Alford", "kiwi", "10.5")).is_some());
        assert!(
            table.apply(&record("Alford", "kiwi", "10.5")).is_none(),
            "duplicate"
        );
        assert!(
            table.apply(&record("Ball", "kiwi", "10.4")).is_none(),
            "older"
        );
        assert!(
            table.apply(&record("Ball", "kiwi", "10.6")).is_some(),
            "newer"
        );
        assert_eq!(table.get("kiwi").unwrap().origin(), "Ball");
        // Equal time: the origin name decides, the same on every server.
        assert!(table.apply(&record("Welsh", "kiwi", "10.6")).is_some());
        assert!(table.apply(&record("Alford", "kiwi", "10.6")).is_none());
        assert_eq!(table.get("kiwi").unwrap().origin(), "Welsh");
        assert!(table.apply(&record("Alford", "other", "1")).is_some());
        assert_eq!(table.len(), 2);
        assert!(table.get("nobody").is_none());
    }

    #[test]
    fn digests_match_exactly_when_tables_hold_the_same_records() {
        let a = Table::new();
        let b = Table::new();
        let updates: Vec<Arc<AtRecord>> = (0..300)
            .map(|i| record("Alford", &format!("c{}", i % 100), &format!("{i}")))
            .collect();
        for u in &updates {
            a.apply(u);
        }
        // Different arrival order and a history of overwritten records: same digest.
        for u in updates.iter().rev() {
            b.apply(u);
        }
        assert_eq!(a.digest(), b.digest());
        assert!(a.differing_buckets(&b.digest()).is_empty());
        let newer = record("Ball", "c7", "1000");
        b.apply(&newer);
        let differ = a.differing_buckets(&b.digest());
        assert_eq!(differ, [newer.bucket()]);
        let repair: Vec<_> = b.records_in(&differ).flatten().collect();
        assert!(repair.contains(&newer));
        assert!(repair.iter().all(|r| r.bucket() == newer.bucket()));
        for r in &repair {
            a.apply(r);
        }
        assert_eq!(a.digest(), b.digest());
        assert_eq!(b.records_in(&[]).count(), 0);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
        /// Flooding and anti-entropy deliver the same updates in any order, any number of
        /// times: every node must end with the same table and the same digest.
        #[test]
        fn any_order_and_duplication_gives_identical_tables(
            updates in proptest::collection::vec((0..4usize, 0..12u8, 0..6u8, 0..3u8), 1..60),
            order in proptest::collection::vec(proptest::prelude::any::<proptest::sample::Index>(), 0..120),
        ) {
            let origins = ["Alford", "Ball", "Hamilton", "Welsh"];
            let records: Vec<Arc<AtRecord>> = updates
                .iter()
                .map(|&(o, client, time, place)| {
                    let location = format!("+{place}+{place}");
                    Arc::new(
                        AtRecord::from_parts(
                            origins[o], "+0.000000001", &format!("c{client}"), &location,
                            &format!("{time}.5"),
                        )
                        .unwrap(),
                    )
                })
                .collect();
            let in_order = Table::new();
            records.iter().for_each(|r| { in_order.apply(r); });
            // Another node: a shuffled, duplicated delivery of the same updates, each at least once.
            let shuffled = Table::new();
            for pick in &order {
                shuffled.apply(&records[pick.index(records.len())]);
            }
            for r in records.iter().rev() {
                shuffled.apply(r);
            }
            proptest::prop_assert_eq!(in_order.digest(), shuffled.digest());
            proptest::prop_assert_eq!(in_order.len(), shuffled.len());
            for client in 0..12u8 {
                let id = format!("c{client}");
                proptest::prop_assert_eq!(in_order.get(&id), shuffled.get(&id));
            }
        }
    }

    #[test]
    fn arrival_order_does_not_change_the_winner() {
        let updates = [
            record("Alford", "kiwi", "5"),
            record("Ball", "kiwi", "7"),
            record("Welsh", "kiwi", "7"),
            record("Hamilton", "kiwi", "6.999999999"),
        ];
        let forward = Table::new();
        let backward = Table::new();
        updates.iter().for_each(|u| {
            forward.apply(u);
        });
        updates.iter().rev().for_each(|u| {
            backward.apply(u);
        });
        assert_eq!(forward.get("kiwi"), backward.get("kiwi"));
        assert_eq!(forward.get("kiwi").unwrap().origin(), "Welsh");
    }

    #[test]
    fn accepted_records_reach_the_store_and_stale_ones_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(&dir.path().join("A")).unwrap();
        let store = Arc::new(store);
        let table = Table::with_store(Arc::clone(&store));
        assert_eq!(table.apply(&record("Alford", "kiwi", "5")), Some(1));
        assert_eq!(table.apply(&record("Ball", "kiwi", "4")), None);
        assert_eq!(table.apply(&record("Ball", "kiwi", "6")), Some(2));
        let stored = store.load().unwrap().records;
        assert_eq!(stored, [(*record("Ball", "kiwi", "6")).clone()]);
        // Restoring keeps the newest per client and writes nothing back.
        let fresh = Table::new();
        let older = (*record("Alford", "kiwi", "5")).clone();
        assert_eq!(fresh.restore(vec![stored[0].clone(), older]), 1);
        assert_eq!(fresh.get("kiwi").unwrap().origin(), "Ball");
        assert_eq!(store.written(), 2);
    }

    #[test]
    fn racing_writers_leave_the_newest_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(&dir.path().join("A")).unwrap();
        let table = Arc::new(Table::with_store(Arc::new(store)));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let table = Arc::clone(&table);
                std::thread::spawn(move || {
                    for i in 0..500 {
                        // Interleaved times: every thread writes newer and older records.
                        let time = format!("{}", i * 4 + (3 - t));
                        table.apply(&record("Alford", "kiwi", &time));
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        let held = table.get("kiwi").unwrap();
        assert_eq!(held.line(), record("Alford", "kiwi", "1999").line());
        let stored = table.store.as_ref().unwrap().load().unwrap().records;
        assert_eq!(stored, [(*held).clone()]);
    }
}

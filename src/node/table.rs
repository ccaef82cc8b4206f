//! The client table: each client's latest location, as the AT line of the server that first
//! received it. This is the one place that decides whether an update is new, and so the one
//! place that queues updates for the store (in per-shard lanes the store drains; the table
//! does not know the store).

use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};

use hashbrown::hash_table::{Entry, HashTable};

use crate::protocol::DIGEST_BUCKETS;
use crate::record::{bucket_of, client_bucket, stable_hash, AtRecord};

/// The number of an update the table accepted while queueing for a store (from 1, in the
/// order they were accepted); a strict reply waits until the store made that one durable.
pub type Seq = u64;

/// An update the table accepted, waiting in its shard's lane for the store's writer, with
/// the stable hash of its client id (the store files the record by it).
pub struct Accepted {
    pub record: AtRecord,
    pub hash: u64,
}

/// Accepted updates the store has not taken yet, one lane per shard: a lane is pushed under
/// its shard's write lock, so a client's updates wait in the order the table took them.
struct Lanes {
    lanes: Vec<Mutex<Vec<Accepted>>>,
    /// The number of the latest update pushed.
    assigned: AtomicU64,
}

impl Lanes {
    fn new() -> Lanes {
        Lanes {
            lanes: (0..SHARDS).map(|_| Mutex::default()).collect(),
            assigned: AtomicU64::new(0),
        }
    }

    fn push(&self, shard: usize, accepted: Accepted) -> Seq {
        let mut lane = self.lanes[shard].lock().unwrap_or_else(|e| e.into_inner());
        // Numbered inside the lane lock: once the store has read `assigned` and then taken
        // every lane, it holds every update up to that number.
        let seq = self.assigned.fetch_add(1, Ordering::AcqRel) + 1;
        lane.push(accepted);
        seq
    }
}

/// Independent locks. A client always lands in the same shard (its digest bucket decides),
/// so updates to different clients rarely wait for each other while updates to one client
/// stay strictly ordered.
pub const SHARDS: usize = 64;
const BUCKETS_PER_SHARD: usize = DIGEST_BUCKETS / SHARDS;

/// One shard: its records, filed by client id (the key is read from the record itself, so a
/// client costs one pointer in the table and no second copy of its id), and per digest
/// bucket it owns (buckets `b` with `b % SHARDS == shard`) the XOR of its records' line
/// hashes, kept current in O(1) per update, so two servers can compare digests to find where
/// their tables differ.
#[derive(Default)]
struct Shard {
    records: HashTable<AtRecord>,
    /// Keyed per process (SipHash, as std's maps): client ids come from clients.
    hasher: RandomState,
    digests: [u64; BUCKETS_PER_SHARD],
}

impl Shard {
    /// Newer-wins; returns whether `record` (whose client is `client`, in digest bucket
    /// `bucket`) was stored.
    fn store_if_newer(&mut self, record: &AtRecord, client: &str, bucket: u16) -> bool {
        let slot = usize::from(bucket) / SHARDS;
        let hash = self.hasher.hash_one(client);
        let hasher = &self.hasher;
        match self.records.entry(
            hash,
            |held| held.client() == client,
            |held| hasher.hash_one(held.client()),
        ) {
            Entry::Occupied(mut held) => {
                if !record.is_newer_than(held.get()) {
                    return false;
                }
                self.digests[slot] ^= held.get().digest_hash();
                *held.get_mut() = record.clone();
            }
            Entry::Vacant(vacant) => {
                vacant.insert(record.clone());
            }
        }
        self.digests[slot] ^= record.digest_hash();
        true
    }

    fn get(&self, client: &str) -> Option<&AtRecord> {
        let hash = self.hasher.hash_one(client);
        self.records.find(hash, |held| held.client() == client)
    }
}

/// Latest record per client id. Readers (WHATSAT, sync) and writers (IAMAT, floods) share it;
/// every critical section is a hash lookup (plus, once queueing for a store, a push onto
/// the shard's lane: the disk is written by the store's own thread, never under these
/// locks). The table knows nothing of the store: the store takes what the lanes hold.
pub struct Table {
    shards: Vec<RwLock<Shard>>,
    lanes: OnceLock<Lanes>,
}

impl Default for Table {
    fn default() -> Table {
        Table {
            shards: (0..SHARDS).map(|_| RwLock::default()).collect(),
            lanes: OnceLock::new(),
        }
    }
}

impl Table {
    /// A table in memory only (until a store opened on it turns queueing on).
    pub fn new() -> Table {
        Table::default()
    }

    /// From now on every accepted record also waits in its shard's lane until
    /// [`Table::take_accepted`] takes it: what opening a store turns on (its writer drains
    /// the lanes). A table in memory only queues nothing.
    pub fn queue_accepted(&self) {
        self.lanes.get_or_init(Lanes::new);
    }

    /// Stores `record` if it is newer than what the table holds for its client (see
    /// [`AtRecord::is_newer_than`]). Returns `None` if it was not (stale or duplicate), else
    /// the update's number for the store (0 when not queueing). Only stored records are
    /// flooded on, which is what makes flooding terminate.
    ///
    /// The record is queued under the client's shard lock: the decision "newer" and the
    /// queueing are one step, so two racing updates for a client reach the store in the
    /// order the table took them. The client id is hashed once: its digest bucket and (in
    /// the store) its snapshot chunk both come from that hash.
    pub fn apply(&self, record: &AtRecord) -> Option<Seq> {
        let client = record.client();
        let hash = stable_hash(client.as_bytes());
        let bucket = bucket_of(hash);
        let shard = shard_of(bucket);
        let mut held = self.write(shard);
        if !held.store_if_newer(record, client, bucket) {
            return None;
        }
        Some(self.lanes.get().map_or(0, |lanes| {
            let record = record.clone();
            lanes.push(shard, Accepted { record, hash })
        }))
    }

    /// The number of the latest update queued (0 when not queueing).
    pub fn assigned(&self) -> Seq {
        self.lanes
            .get()
            .map_or(0, |lanes| lanes.assigned.load(Ordering::Acquire))
    }

    /// Takes every queued update, lane by lane, handing each to `each`; returns the number
    /// up to which all of them have now been taken. `spare` is an empty buffer swapped with
    /// each full lane, so both keep their capacity.
    pub fn take_accepted(&self, spare: &mut Vec<Accepted>, mut each: impl FnMut(&Accepted)) -> Seq {
        let Some(lanes) = self.lanes.get() else {
            return 0;
        };
        let upto = lanes.assigned.load(Ordering::Acquire);
        for lane in &lanes.lanes {
            std::mem::swap(&mut *lane.lock().unwrap_or_else(|e| e.into_inner()), spare);
            for accepted in spare.drain(..) {
                each(&accepted);
            }
        }
        upto
    }

    /// Makes room for about `clients` clients in all, so loading a store does not grow (and
    /// rehash) the table step by step.
    pub fn reserve(&self, clients: usize) {
        for shard in 0..SHARDS {
            let mut held = self.write(shard);
            let held = &mut *held;
            let wanted = (clients / SHARDS).saturating_sub(held.records.len());
            let hasher = &held.hasher;
            held.records
                .reserve(wanted, |record| hasher.hash_one(record.client()));
        }
    }

    /// Loads a record read back from the store (newer-wins, not written back); `client` is
    /// its client id, which the reader found on the way. Returns the stable hash of the id
    /// (the store files the record by it).
    pub fn restore(&self, record: &AtRecord, client: &str) -> u64 {
        let hash = stable_hash(client.as_bytes());
        let bucket = bucket_of(hash);
        self.write(shard_of(bucket))
            .store_if_newer(record, client, bucket);
        hash
    }

    /// Calls `f` with every record of shard `shard` (under its read lock: keep `f` short).
    pub fn visit_shard(&self, shard: usize, mut f: impl FnMut(&AtRecord)) {
        for record in &self.read(shard).records {
            f(record);
        }
    }

    /// Replaces what `into` holds with shard `shard`'s records (a reference each, taken
    /// under its read lock; whatever the caller then does with them holds up no update).
    pub fn copy_shard(&self, shard: usize, into: &mut Vec<AtRecord>) {
        into.clear();
        into.extend(self.read(shard).records.iter().cloned());
    }

    /// The latest record for `client`.
    pub fn get(&self, client: &str) -> Option<AtRecord> {
        let bucket = client_bucket(client);
        self.read(shard_of(bucket)).get(client).cloned()
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
    pub fn records_in(&self, buckets: &[u16]) -> impl Iterator<Item = Vec<AtRecord>> + '_ {
        let mut wanted = vec![false; DIGEST_BUCKETS];
        let mut shards = [false; SHARDS];
        for &b in buckets {
            wanted[usize::from(b)] = true;
            shards[shard_of(b)] = true;
        }
        (0..SHARDS).filter(move |&s| shards[s]).map(move |s| {
            self.read(s)
                .records
                .iter()
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

    fn record(origin: &str, client: &str, time: &str) -> AtRecord {
        AtRecord::from_parts(origin, "+0.000000001", client, "+1+1", time).unwrap()
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
        let updates: Vec<AtRecord> = (0..300)
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
            let records: Vec<AtRecord> = updates
                .iter()
                .map(|&(o, client, time, place)| {
                    let location = format!("+{place}+{place}");
                    AtRecord::from_parts(
                        origins[o], "+0.000000001", &format!("c{client}"), &location,
                        &format!("{time}.5"),
                    )
                    .unwrap()
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
    fn accepted_records_are_queued_once_queueing_and_stale_ones_are_not() {
        let table = Table::new();
        assert_eq!(table.apply(&record("Alford", "kiwi", "4")), Some(0));
        assert_eq!(table.assigned(), 0, "a table in memory only queues nothing");
        table.queue_accepted();
        assert_eq!(table.apply(&record("Alford", "kiwi", "5")), Some(1));
        assert_eq!(table.apply(&record("Ball", "kiwi", "4")), None);
        assert_eq!(table.apply(&record("Ball", "kiwi", "6")), Some(2));
        assert_eq!(table.assigned(), 2);
        // Restoring keeps the newest per client and queues nothing.
        for record in [record("Welsh", "plum", "6"), record("Alford", "plum", "5")] {
            table.restore(&record, record.client());
        }
        assert_eq!(table.get("plum").unwrap().origin(), "Welsh");
        assert_eq!(table.assigned(), 2);
        let mut taken = Vec::new();
        let upto = table.take_accepted(&mut Vec::new(), |a| {
            assert_eq!(a.hash, stable_hash(a.record.client().as_bytes()));
            taken.push(a.record.origin().to_owned());
        });
        assert_eq!(
            (upto, taken),
            (2, vec!["Alford".to_owned(), "Ball".to_owned()])
        );
        assert_eq!(
            table.take_accepted(&mut Vec::new(), |_| panic!("taken twice")),
            2
        );
    }

    #[test]
    fn racing_writers_leave_the_newest() {
        let table = std::sync::Arc::new(Table::new());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let table = std::sync::Arc::clone(&table);
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
    }
}

//! The client table: each client's latest location, as the AT line of the server that first
//! received it. This is the one place that decides whether an update is new, and so the one
//! place that queues updates for the store (in per-shard lanes the store drains; the table
//! does not know the store).
//!
//! It also decides a record's lifecycle (`clients:` in herd.yaml): a record older than the
//! expiry horizon is gone (refused when it arrives, never answered, removed by the sweep
//! that runs when the horizon moves); a tombstone (`herdctl forget`) is a record like any
//! other under newer-wins, with a horizon of its own; and a bounded table refuses new
//! clients when full. The horizon is the node's clock minus the ttl, rounded down to a step
//! of ttl/16 (1 s to 1 h), so servers whose clocks differ by less than a step agree on it
//! almost always; digests carry it, and two digests taken at different horizons are not
//! compared (see `sync.rs`).

use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::client_index::ClientIndex;
use herd_config::config::ClientsSettings;
use herd_wire::protocol::{client_hint, AtFields, Iamat, Timestamp, DIGEST_BUCKETS};
use herd_wire::record::{bucket_of, client_bucket, stable_hash, AtRecord, TOMBSTONE_LOCATION};

/// The number of an update the table accepted while queueing for a store (from 1, in the
/// order they were accepted); a strict reply waits until the store made that one durable.
pub type Seq = u64;

/// An update the table accepted, waiting in its shard's lane for the store's writer, with
/// the stable hash of its client id (the store files the record by it).
pub struct Accepted {
    pub record: AtRecord,
    pub hash: u64,
}

/// Where a client's record is looked up: what stage one of a [`Lookahead`] found.
#[derive(Debug, Clone, Copy)]
pub struct Hint {
    shard: usize,
    hash: u64,
}

/// Prefetching for a connection's buffered lines. A lookup under a spread-out load is three
/// loads from memory, each waiting for the one before (the slot's tag, the slot, the
/// record's line): about a quarter of a node's time per update. Lines arrive in bursts, so
/// a connection that sees the next line before it handles the current one starts those
/// loads early, in two stages a line apart: the slot for the line after the current one,
/// the record for the current one (whose slot was asked for a line ago), which then has
/// the current line's parsing to arrive in. Each stage reads only what the one before
/// brought in, so neither waits for memory; a wrong guess costs a wasted load, never a
/// wrong answer (the table decides as it always does when the line's turn comes).
#[derive(Debug, Default)]
pub struct Lookahead {
    /// The line at hand's slot, asked for while the line before it was handled.
    next: Option<Hint>,
}

impl Lookahead {
    /// Called before the line at hand is handled, with what is buffered after it.
    pub fn before_line(&mut self, table: &Table, after: &[u8]) {
        if let Some(hint) = self.next.take() {
            table.prefetch_record(hint);
        }
        self.next = client_hint(after).and_then(|client| table.prefetch_slot(client));
    }
}

/// Independent locks. A client always lands in the same shard (its digest bucket decides),
/// so updates to different clients rarely wait for each other while updates to one client
/// stay strictly ordered.
pub const SHARDS: usize = 64;
const BUCKETS_PER_SHARD: usize = DIGEST_BUCKETS / SHARDS;

/// A record the table is offered, with what deciding on it takes, each found once: its
/// client id, client time and digest hash, and whether it is a tombstone.
#[derive(Debug, Clone, Copy)]
pub struct Offer<'a> {
    record: &'a AtRecord,
    client: &'a str,
    time: Timestamp,
    tomb: bool,
    digest: u64,
}

impl<'a> Offer<'a> {
    /// Reads what the table needs from the record's line.
    pub fn of(record: &'a AtRecord) -> Offer<'a> {
        Offer::with_client(record, record.client())
    }

    /// The record [`AtRecord::from_iamat`] made of `iamat`: its client and time are the
    /// IAMAT's (already parsed), and an IAMAT never makes a tombstone.
    pub fn iamat(record: &'a AtRecord, iamat: &Iamat<'a>) -> Offer<'a> {
        debug_assert_eq!((record.client(), record.time()), (iamat.client, iamat.time));
        debug_assert!(!record.is_tombstone());
        Offer {
            record,
            client: iamat.client,
            time: iamat.time,
            tomb: false,
            digest: record.digest_hash(),
        }
    }

    /// The record [`AtRecord::from_wire`] made of a flooded line's checked `fields`: its
    /// client, time and kind are the fields' (already parsed), not read from its line again.
    pub fn flooded(record: &'a AtRecord, fields: &AtFields<'a>) -> Offer<'a> {
        let offer = Offer {
            record,
            client: fields.client,
            time: fields.time,
            tomb: fields.location == TOMBSTONE_LOCATION,
            digest: record.digest_hash(),
        };
        debug_assert_eq!(
            (offer.client, offer.time, offer.tomb),
            (record.client(), record.time(), record.is_tombstone())
        );
        offer
    }

    fn with_client(record: &'a AtRecord, client: &'a str) -> Offer<'a> {
        Offer {
            record,
            client,
            time: record.time(),
            tomb: record.is_tombstone(),
            digest: record.digest_hash(),
        }
    }

    /// Whether it wins over `held` under the herd's one newer-wins order.
    fn is_newer_than(&self, held: &AtRecord) -> bool {
        self.record.is_newer_at(self.time, held)
    }
}

/// A record in the table, with its digest hash (so replacing it does not hash its line
/// again, which would also read its second cache line).
struct Held {
    record: AtRecord,
    digest: u64,
}

impl Held {
    fn client(&self) -> &str {
        self.record.client()
    }
}

/// One shard: its records, filed by client id (the key is read from the record itself, so a
/// client costs one pointer and a hash in the table and no second copy of its id), and per
/// digest bucket it owns (buckets `b` with `b % SHARDS == shard`) the XOR of its records' line
/// hashes, kept current in O(1) per update, so two servers can compare digests to find where
/// their tables differ.
#[derive(Default)]
struct Shard {
    records: ClientIndex<Held>,
    /// Keyed per process (SipHash, as std's maps): client ids come from clients.
    hasher: RandomState,
    digests: [u64; BUCKETS_PER_SHARD],
    /// Updates this shard accepted that the store has not taken yet (while queueing: see
    /// [`Table::queue_accepted`]), in the order it took them. Under the shard's own lock: a
    /// lane with a lock of its own cost two more atomic operations per update, on a line the
    /// store's writer also takes, ~3% of a node's CPU under pipelined IAMATs; the writer
    /// takes each shard's lock once per drain instead.
    lane: Vec<Accepted>,
}

/// Why the table did not take a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Not newer than what the table holds (stale or a duplicate).
    Stale,
    /// Older than the expiry horizon (`clients.ttl_s`, or `tombstone_ttl_s` for a tombstone).
    Expired,
    /// A new client, and the table holds `clients.max` already.
    Full,
}

/// Live clients (records that are not tombstones) against `clients.max`.
struct Room<'a> {
    live: &'a AtomicUsize,
    /// 0: no bound.
    max: usize,
}

impl Room<'_> {
    /// One more live client, unless the table is full.
    fn take(&self) -> Result<(), Refused> {
        let before = self.live.fetch_add(1, Ordering::Relaxed);
        if self.max != 0 && before >= self.max {
            self.live.fetch_sub(1, Ordering::Relaxed);
            return Err(Refused::Full);
        }
        Ok(())
    }

    fn give(&self) {
        self.live.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Shard {
    /// Newer-wins; stores the offered record (whose client is in digest bucket `bucket`) or
    /// says why not. `tombstones` counts the table's.
    fn store_if_newer(
        &mut self,
        offer: &Offer<'_>,
        bucket: u16,
        room: &Room<'_>,
        tombstones: &AtomicUsize,
    ) -> Result<(), Refused> {
        let slot = usize::from(bucket) / SHARDS;
        let hash = self.hasher.hash_one(offer.client);
        let new = || Held {
            record: offer.record.clone(),
            digest: offer.digest,
        };
        match self
            .records
            .find_mut(hash, |held| held.client() == offer.client)
        {
            Some(held) => {
                if !offer.is_newer_than(&held.record) {
                    return Err(Refused::Stale);
                }
                match (held.record.is_tombstone(), offer.tomb) {
                    // A forgotten client comes back: it takes room like a new one.
                    (true, false) => {
                        room.take()?;
                        tombstones.fetch_sub(1, Ordering::Relaxed);
                    }
                    (false, true) => {
                        room.give();
                        tombstones.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {}
                }
                self.digests[slot] ^= held.digest;
                *held = new();
            }
            None => {
                match offer.tomb {
                    // A tombstone is always taken, even for a client this node never had:
                    // it must stop an older record arriving later.
                    true => tombstones.fetch_add(1, Ordering::Relaxed),
                    false => {
                        room.take()?;
                        0
                    }
                };
                let hasher = &self.hasher;
                self.records
                    .insert(hash, new(), |held| hasher.hash_one(held.client()));
            }
        }
        self.digests[slot] ^= offer.digest;
        Ok(())
    }

    fn get(&self, client: &str) -> Option<&AtRecord> {
        let hash = self.hasher.hash_one(client);
        self.records
            .find(hash, |held| held.client() == client)
            .map(|held| &held.record)
    }
}

/// Latest record per client id. Readers (WHATSAT, sync) and writers (IAMAT, floods) share it;
/// every critical section is a hash lookup (plus, once queueing for a store, a push onto
/// the shard's lane: the disk is written by the store's own thread, never under these
/// locks). The table knows nothing of the store: the store takes what the lanes hold.
pub struct Table {
    shards: Vec<RwLock<Shard>>,
    /// Whether accepted updates wait in their shard's lane for a store.
    queueing: AtomicBool,
    /// The number of the latest update queued.
    assigned: AtomicU64,
    life: Lifecycle,
}
/// No horizon: nothing expires.
pub const NO_HORIZON: i64 = i64::MIN;

/// The lifecycle settings and counts (atomics: a reload changes the settings while the
/// table is in use).
struct Lifecycle {
    ttl_s: AtomicU64,
    tombstone_ttl_s: AtomicU64,
    /// `clients.max`; 0: no bound.
    max: AtomicUsize,
    /// A live record whose client time (whole seconds) is below this is expired.
    live_horizon: AtomicI64,
    /// The same for tombstones.
    tombstone_horizon: AtomicI64,
    /// Held by a sweep, and while a digest is taken, so a digest never shows half a sweep.
    /// Holds the horizons the last sweep removed everything below.
    swept: Mutex<(i64, i64)>,
    live: AtomicUsize,
    tombstones: AtomicUsize,
    expired: AtomicU64,
    refused_full: AtomicU64,
}

impl Default for Lifecycle {
    fn default() -> Lifecycle {
        let defaults = ClientsSettings::default();
        Lifecycle {
            ttl_s: AtomicU64::new(0),
            tombstone_ttl_s: AtomicU64::new(defaults.tombstone_ttl_s),
            max: AtomicUsize::new(0),
            live_horizon: AtomicI64::new(NO_HORIZON),
            tombstone_horizon: AtomicI64::new(NO_HORIZON),
            swept: Mutex::new((NO_HORIZON, NO_HORIZON)),
            live: AtomicUsize::new(0),
            tombstones: AtomicUsize::new(0),
            expired: AtomicU64::new(0),
            refused_full: AtomicU64::new(0),
        }
    }
}

/// The table's lifecycle figures, for status and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LifeCounts {
    /// Clients with a location (tombstones not counted).
    pub clients: usize,
    /// Tombstones held: clients forgotten (`herdctl forget`) and not yet compacted away.
    pub forgotten: usize,
    /// Records that expired here since the start: removed, not loaded, or refused on arrival.
    pub expired: u64,
    /// New clients refused because the table was full.
    pub refused_full: u64,
    /// `clients.max`, if set.
    pub max: Option<usize>,
}

/// The expiry horizon at `now_s` for a `ttl_s`: now minus the ttl, rounded down to a step of
/// ttl/16 (at least 1 s, at most 1 h). A record whose time (whole seconds) is below it is
/// expired: it lives between `ttl_s` and `ttl_s` plus one step. The step makes servers
/// whose clocks differ by less than it agree on the horizon nearly always, and bounds how
/// often a sweep scans the table (16 times in a record's life).
pub fn horizon(now_s: i64, ttl_s: u64) -> i64 {
    let ttl = ttl_s.min(i64::MAX as u64 / 4) as i64;
    let step = (ttl / 16).clamp(1, 3600);
    let h = now_s.saturating_sub(ttl);
    h - h.rem_euclid(step)
}

/// What one sweep removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    pub expired: usize,
    pub tombstones: usize,
}

impl Default for Table {
    fn default() -> Table {
        Table {
            shards: (0..SHARDS).map(|_| RwLock::default()).collect(),
            queueing: AtomicBool::new(false),
            assigned: AtomicU64::new(0),
            life: Lifecycle::default(),
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
        self.queueing.store(true, Ordering::Release);
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
        self.offer(record).ok()
    }

    /// [`Table::apply`], saying why a record was not taken: stale, expired, or a new client
    /// when the table is full (counted).
    pub fn offer(&self, record: &AtRecord) -> Result<Seq, Refused> {
        self.offer_known(&Offer::of(record))
    }

    /// [`Table::offer`], for a caller that has what the table needs of the record at hand.
    pub fn offer_known(&self, offer: &Offer<'_>) -> Result<Seq, Refused> {
        let hash = stable_hash(offer.client.as_bytes());
        let bucket = bucket_of(hash);
        let shard = shard_of(bucket);
        let mut held = self.write(shard);
        // Under the shard lock: a sweep that moved the horizon has either scanned this
        // shard already (and this sees the new horizon) or will scan it after this.
        if self.is_expired_at(offer.time, offer.tomb) {
            self.life.expired.fetch_add(1, Ordering::Relaxed);
            return Err(Refused::Expired);
        }
        let room = Room {
            live: &self.life.live,
            max: self.life.max.load(Ordering::Relaxed),
        };
        if let Err(why) = held.store_if_newer(offer, bucket, &room, &self.life.tombstones) {
            if why == Refused::Full {
                self.life.refused_full.fetch_add(1, Ordering::Relaxed);
            }
            return Err(why);
        }
        if !self.queueing.load(Ordering::Acquire) {
            return Ok(0);
        }
        // Numbered under the shard lock: once the store has read `assigned` and then taken
        // every lane, it holds every update up to that number.
        let seq = self.assigned.fetch_add(1, Ordering::AcqRel) + 1;
        let record = offer.record.clone();
        held.lane.push(Accepted { record, hash });
        Ok(seq)
    }

    /// Whether `record` (`tomb`: a tombstone) is below its expiry horizon now. With no ttl
    /// this is one atomic load; with one, a read of the record's time from its line.
    fn is_expired(&self, record: &AtRecord, tomb: bool) -> bool {
        let horizon = self.horizon(tomb);
        horizon != NO_HORIZON && below(record.time(), horizon)
    }

    /// [`Table::is_expired`] for a record whose client time is `time`.
    fn is_expired_at(&self, time: Timestamp, tomb: bool) -> bool {
        let horizon = self.horizon(tomb);
        horizon != NO_HORIZON && below(time, horizon)
    }

    /// The expiry horizon in force for a live record or (`tomb`) a tombstone.
    fn horizon(&self, tomb: bool) -> i64 {
        match tomb {
            true => &self.life.tombstone_horizon,
            false => &self.life.live_horizon,
        }
        .load(Ordering::Relaxed)
    }

    /// Takes the `clients:` settings (at start, before the store is loaded, and at a
    /// reload) and the horizons they give at `now_nanos`.
    pub fn set_lifecycle(&self, settings: &ClientsSettings, now_nanos: i128) {
        let life = &self.life;
        life.ttl_s
            .store(settings.ttl_s.unwrap_or(0), Ordering::Relaxed);
        life.tombstone_ttl_s
            .store(settings.tombstone_ttl_s, Ordering::Relaxed);
        life.max.store(settings.max.unwrap_or(0), Ordering::Relaxed);
        let (live, tomb) = self.horizons_at(now_nanos);
        life.live_horizon.store(live, Ordering::Relaxed);
        life.tombstone_horizon.store(tomb, Ordering::Relaxed);
    }

    /// The horizons (live records, tombstones) the settings give at `now_nanos`.
    fn horizons_at(&self, now_nanos: i128) -> (i64, i64) {
        let now_s = now_nanos.div_euclid(1_000_000_000) as i64;
        let live = match self.life.ttl_s.load(Ordering::Relaxed) {
            0 => NO_HORIZON,
            ttl => horizon(now_s, ttl),
        };
        let tomb = horizon(now_s, self.life.tombstone_ttl_s.load(Ordering::Relaxed));
        (live, tomb)
    }

    /// The horizons in force: (live records, tombstones).
    pub fn horizons(&self) -> (i64, i64) {
        (
            self.life.live_horizon.load(Ordering::Relaxed),
            self.life.tombstone_horizon.load(Ordering::Relaxed),
        )
    }

    /// Moves the horizons to `now_nanos` and, when one moved, removes every record below it
    /// from the table (and its digest), for the store to mark their snapshot chunks
    /// for its next compaction, which removes them from disk. Called every second by the node; a
    /// scan happens once per step of a horizon (see [`horizon`]), and not at all with no
    /// ttl and no tombstones.
    /// `removed` is called with the stable hash of each removed record's client (the store
    /// files records by it).
    pub fn sweep(&self, now_nanos: i128, mut removed_hash: impl FnMut(u64)) -> Swept {
        let (live_h, tomb_h) = self.horizons_at(now_nanos);
        let mut swept = self.life.swept.lock().unwrap_or_else(|e| e.into_inner());
        self.life.live_horizon.store(live_h, Ordering::Relaxed);
        self.life.tombstone_horizon.store(tomb_h, Ordering::Relaxed);
        if *swept == (live_h, tomb_h) {
            return Swept::default();
        }
        *swept = (live_h, tomb_h);
        let mut removed = Swept::default();
        let nothing_to_find =
            live_h == NO_HORIZON && self.life.tombstones.load(Ordering::Relaxed) == 0;
        if nothing_to_find {
            return removed;
        }
        for s in 0..SHARDS {
            let mut shard = self.write(s);
            let Shard {
                records,
                digests,
                hasher,
                ..
            } = &mut *shard;
            let rehash = |held: &Held| hasher.hash_one(held.client());
            let expired = |held: &Held| {
                let record = &held.record;
                let horizon = if record.is_tombstone() {
                    tomb_h
                } else {
                    live_h
                };
                horizon != NO_HORIZON && below(record.time(), horizon)
            };
            records.retain(
                |held| !expired(held),
                |held| {
                    let hash = stable_hash(held.client().as_bytes());
                    digests[usize::from(bucket_of(hash)) / SHARDS] ^= held.digest;
                    removed_hash(hash);
                    match held.record.is_tombstone() {
                        true => removed.tombstones += 1,
                        false => removed.expired += 1,
                    }
                },
                rehash,
            );
        }
        self.life.live.fetch_sub(removed.expired, Ordering::Relaxed);
        self.life
            .tombstones
            .fetch_sub(removed.tombstones, Ordering::Relaxed);
        self.life
            .expired
            .fetch_add(removed.expired as u64, Ordering::Relaxed);
        removed
    }

    /// Clients, tombstones, expiries and refusals, for status and metrics.
    pub fn counts(&self) -> LifeCounts {
        let life = &self.life;
        LifeCounts {
            clients: life.live.load(Ordering::Relaxed),
            forgotten: life.tombstones.load(Ordering::Relaxed),
            expired: life.expired.load(Ordering::Relaxed),
            refused_full: life.refused_full.load(Ordering::Relaxed),
            max: match life.max.load(Ordering::Relaxed) {
                0 => None,
                max => Some(max),
            },
        }
    }

    /// Clients with a location (tombstones not counted).
    pub fn clients(&self) -> usize {
        self.life.live.load(Ordering::Relaxed)
    }

    /// The number of the latest update queued (0 when not queueing).
    pub fn assigned(&self) -> Seq {
        self.assigned.load(Ordering::Acquire)
    }

    /// Takes every queued update, lane by lane, handing each to `each`; returns the number
    /// up to which all of them have now been taken. `spare` is an empty buffer swapped with
    /// each full lane, so both keep their capacity.
    pub fn take_accepted(&self, spare: &mut Vec<Accepted>, mut each: impl FnMut(&Accepted)) -> Seq {
        if !self.queueing.load(Ordering::Acquire) {
            return 0;
        }
        let upto = self.assigned.load(Ordering::Acquire);
        for shard in 0..SHARDS {
            std::mem::swap(&mut self.write(shard).lane, spare);
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
                .reserve(wanted, |held| hasher.hash_one(held.client()));
        }
    }

    /// Loads a record read back from the store (newer-wins, not written back); `client` is
    /// its client id, which the reader found on the way. Returns the stable hash of the id
    /// (the store files the record by it).
    /// Expired records are not loaded (counted, and said by the second value, so the
    /// store rewrites their chunk without them); `clients.max` does not apply (what a node
    /// held before it restarted stays).
    pub fn restore(&self, record: &AtRecord, client: &str) -> (u64, bool) {
        let hash = stable_hash(client.as_bytes());
        let bucket = bucket_of(hash);
        let offer = Offer::with_client(record, client);
        if self.is_expired_at(offer.time, offer.tomb) {
            self.life.expired.fetch_add(1, Ordering::Relaxed);
            return (hash, true);
        }
        let room = Room {
            live: &self.life.live,
            max: 0,
        };
        let _ = self.write(shard_of(bucket)).store_if_newer(
            &offer,
            bucket,
            &room,
            &self.life.tombstones,
        );
        (hash, false)
    }

    /// Calls `f` with every record of shard `shard` (under its read lock: keep `f` short).
    pub fn visit_shard(&self, shard: usize, mut f: impl FnMut(&AtRecord)) {
        for held in self.read(shard).records.iter() {
            f(&held.record);
        }
    }

    /// Replaces what `into` holds with shard `shard`'s records (a reference each, taken
    /// under its read lock; whatever the caller then does with them holds up no update).
    pub fn copy_shard(&self, shard: usize, into: &mut Vec<AtRecord>) {
        into.clear();
        into.extend(
            self.read(shard)
                .records
                .iter()
                .map(|held| held.record.clone()),
        );
    }

    /// The latest record for `client`, whatever it is (a tombstone, or expired and not
    /// swept yet).
    pub fn get(&self, client: &str) -> Option<AtRecord> {
        let bucket = client_bucket(client);
        self.read(shard_of(bucket)).get(client).cloned()
    }

    /// Stage one of a look-ahead (see [`Lookahead`]): starts loading the slot where the
    /// record for `client` is looked up, and says where that is. Never waits: a shard
    /// another thread holds is skipped.
    pub fn prefetch_slot(&self, client: &str) -> Option<Hint> {
        let shard = shard_of(client_bucket(client));
        let held = self.shards[shard].try_read().ok()?;
        let hash = held.hasher.hash_one(client);
        held.records.prefetch_home(hash);
        Some(Hint { shard, hash })
    }

    /// Stage two, once the slot has had time to arrive: starts loading the record it
    /// points to (see [`AtRecord::prefetch`]).
    pub fn prefetch_record(&self, hint: Hint) {
        if let Ok(held) = self.shards[hint.shard].try_read() {
            held.records
                .for_each_candidate(hint.hash, |held| held.record.prefetch());
        }
    }

    /// The location to answer a WHATSAT with: `None` for a client never seen, forgotten
    /// (a tombstone) or expired.
    pub fn location_of(&self, client: &str) -> Option<AtRecord> {
        self.get(client)
            .filter(|r| !r.is_tombstone() && !self.is_expired(r, false))
    }

    pub fn len(&self) -> usize {
        (0..SHARDS).map(|s| self.read(s).records.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The table's digest and the horizons it was taken at (under the sweep's lock, so it
    /// never shows half a sweep): two digests are comparable only at the same horizons.
    pub fn digest_at_horizons(&self) -> (Vec<u64>, (i64, i64)) {
        let swept = self.life.swept.lock().unwrap_or_else(|e| e.into_inner());
        let digest = self.digest();
        let horizons = self.horizons();
        drop(swept);
        (digest, horizons)
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
        // Expired records are never sent (a neighbour whose clock is behind must not get
        // back what it has just removed, nor this node resurrect it elsewhere).
        (0..SHARDS).filter(move |&s| shards[s]).map(move |s| {
            self.read(s)
                .records
                .iter()
                .map(|held| &held.record)
                .filter(|r| wanted[usize::from(r.bucket())])
                .filter(|r| !self.is_expired(r, r.is_tombstone()))
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

/// Whether client time `time` is below `horizon` (whole seconds).
fn below(time: Timestamp, horizon: i64) -> bool {
    i64::try_from(time.secs).unwrap_or(i64::MAX) < horizon
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(origin: &str, client: &str, time: &str) -> AtRecord {
        AtRecord::from_parts(origin, "+0.000000001", client, "+1+1", time).unwrap()
    }

    /// The digest recomputed from the records the table holds (each line hashed again): what
    /// the digest kept current update by update must always equal.
    fn recomputed(table: &Table) -> Vec<u64> {
        let mut digest = vec![0; DIGEST_BUCKETS];
        for shard in 0..SHARDS {
            table.visit_shard(shard, |r| {
                digest[usize::from(r.bucket())] ^= r.digest_hash()
            });
        }
        digest
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
        assert_eq!(a.digest(), recomputed(&a));
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

    fn tombstone(origin: &str, client: &str, time: &str) -> AtRecord {
        let record = record(origin, client, time);
        AtRecord::tombstone(origin, 0, client, record.time())
    }

    const NANOS: i128 = 1_000_000_000;

    fn lifecycle(ttl_s: Option<u64>, tombstone_ttl_s: u64, max: Option<usize>) -> ClientsSettings {
        ClientsSettings {
            ttl_s,
            tombstone_ttl_s,
            max,
        }
    }

    #[test]
    fn the_horizon_moves_in_steps_of_a_sixteenth_of_the_ttl() {
        assert_eq!(horizon(1000, 30), 970);
        assert_eq!(horizon(1000, 160), 840);
        assert_eq!(horizon(1009, 160), 840);
        assert_eq!(horizon(1010, 160), 850);
        // At most an hour per step, whatever the ttl.
        assert_eq!(horizon(1_000_000, 7 * 86_400) % 3600, 0);
    }

    #[test]
    fn expired_records_are_refused_not_answered_and_swept() {
        let table = Table::new();
        table.apply(&record("Alford", "old", "100"));
        table.apply(&record("Alford", "young", "150"));
        table.apply(&record("Alford", "gone", "90"));
        let before = table.digest();
        // ttl 30 at t=140: everything before 110 is expired.
        table.set_lifecycle(&lifecycle(Some(30), 1000, None), 140 * NANOS);
        assert_eq!(table.horizons().0, 110);
        assert!(table.location_of("old").is_none(), "expired, not swept yet");
        assert!(table.location_of("young").is_some());
        assert_eq!(
            table.offer(&record("Ball", "new", "109.9")),
            Err(Refused::Expired)
        );
        let swept = table.sweep(140 * NANOS, |_| {});
        assert_eq!(swept.expired, 2);
        assert_eq!((table.clients(), table.len()), (1, 1));
        assert_eq!(table.counts().expired, 3);
        assert_ne!(table.digest(), before);
        // The same as a table that only ever held the young one.
        let fresh = Table::new();
        fresh.apply(&record("Alford", "young", "150"));
        assert_eq!(table.digest(), fresh.digest());
        // Nothing to do until a horizon moves; never sent by anti-entropy.
        assert_eq!(table.sweep(140 * NANOS, |_| {}), Swept::default());
        assert!(table
            .records_in(&[record("Alford", "old", "1").bucket()])
            .flatten()
            .all(|r| r.client() != "old"));
        // Restoring from a store leaves out what expired.
        let restored = Table::new();
        restored.set_lifecycle(&lifecycle(Some(30), 1000, None), 140 * NANOS);
        assert!(restored.restore(&record("Alford", "old", "100"), "old").1);
        assert!(
            !restored
                .restore(&record("Alford", "young", "150"), "young")
                .1
        );
        assert_eq!(restored.clients(), 1);
    }

    #[test]
    fn a_full_table_refuses_new_clients_but_not_existing_ones() {
        let table = Table::new();
        table.set_lifecycle(&lifecycle(None, 1000, Some(2)), 0);
        assert!(table.offer(&record("Alford", "a", "1")).is_ok());
        assert!(table.offer(&record("Alford", "b", "1")).is_ok());
        assert_eq!(table.offer(&record("Alford", "c", "1")), Err(Refused::Full));
        assert!(
            table.offer(&record("Alford", "a", "2")).is_ok(),
            "an update"
        );
        assert_eq!(
            table.offer(&record("Alford", "a", "1")),
            Err(Refused::Stale)
        );
        // A tombstone frees its client's room, and is taken even when full.
        assert!(table.offer(&tombstone("Ball", "b", "3")).is_ok());
        assert!(table.offer(&tombstone("Ball", "z", "3")).is_ok());
        assert!(table.offer(&record("Alford", "c", "1")).is_ok());
        let counts = table.counts();
        assert_eq!(
            (
                counts.clients,
                counts.forgotten,
                counts.refused_full,
                counts.max
            ),
            (2, 2, 1, Some(2))
        );
        assert!(table.get("c").is_some() && table.get("a").is_some());
    }

    #[test]
    fn a_tombstone_beats_older_updates_and_loses_to_newer_ones() {
        let table = Table::new();
        table.apply(&record("Alford", "kiwi", "10"));
        assert!(table.apply(&tombstone("Ball", "kiwi", "11")).is_some());
        assert!(table.location_of("kiwi").is_none());
        assert!(table.get("kiwi").unwrap().is_tombstone());
        assert!(
            table.apply(&record("Welsh", "kiwi", "10.5")).is_none(),
            "older"
        );
        assert_eq!((table.clients(), table.counts().forgotten), (0, 1));
        assert!(
            table.apply(&record("Welsh", "kiwi", "12")).is_some(),
            "newer"
        );
        assert_eq!(table.location_of("kiwi").unwrap().origin(), "Welsh");
        assert_eq!((table.clients(), table.counts().forgotten), (1, 0));
        // Tombstones expire on their own horizon.
        table.apply(&tombstone("Ball", "plum", "100"));
        table.set_lifecycle(&lifecycle(None, 50, None), 160 * NANOS);
        assert_eq!(table.sweep(160 * NANOS, |_| {}).tombstones, 1);
        assert!(table.get("plum").is_none());
        assert_eq!(table.apply(&tombstone("Ball", "plum", "100")), None);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        /// The same with tombstones and expiry: one node applies everything knowing the
        /// horizon; another gets a shuffled, duplicated delivery, part of it before it knew
        /// any horizon, then sweeps, then the rest. Both end with the same table and digest.
        #[test]
        fn tombstones_and_expiry_keep_tables_identical(
            updates in proptest::collection::vec((0..4usize, 0..8u8, 0..8u8, 0..4u8), 1..60),
            order in proptest::collection::vec(proptest::prelude::any::<proptest::sample::Index>(), 0..120),
            split in 0..120usize,
        ) {
            let origins = ["Alford", "Ball", "Hamilton", "Welsh"];
            let records: Vec<AtRecord> = updates
                .iter()
                .map(|&(o, client, time, kind)| {
                    let (client, time) = (format!("c{client}"), format!("{time}.5"));
                    match kind {
                        0 => tombstone(origins[o], &client, &time),
                        _ => record(origins[o], &client, &time),
                    }
                })
                .collect();
            // ttl 16 at t=19: horizon 3 for records and tombstones alike.
            let settings = lifecycle(Some(16), 16, None);
            let now = 19 * NANOS;
            let in_order = Table::new();
            in_order.set_lifecycle(&settings, now);
            records.iter().for_each(|r| { in_order.apply(r); });
            let shuffled = Table::new();
            let mut delivery: Vec<&AtRecord> =
                order.iter().map(|pick| &records[pick.index(records.len())]).collect();
            delivery.extend(records.iter().rev());
            let split = split.min(delivery.len());
            for r in &delivery[..split] {
                shuffled.apply(r);
            }
            shuffled.set_lifecycle(&settings, now);
            shuffled.sweep(now, |_| {});
            for r in &delivery[split..] {
                shuffled.apply(r);
            }
            proptest::prop_assert_eq!(in_order.digest(), shuffled.digest());
            proptest::prop_assert_eq!(shuffled.digest(), recomputed(&shuffled));
            proptest::prop_assert_eq!(in_order.len(), shuffled.len());
            proptest::prop_assert_eq!(in_order.clients(), shuffled.clients());
            proptest::prop_assert_eq!(in_order.counts().forgotten, shuffled.counts().forgotten);
            for client in 0..8u8 {
                let id = format!("c{client}");
                proptest::prop_assert_eq!(in_order.get(&id), shuffled.get(&id));
            }
        }

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
            proptest::prop_assert_eq!(in_order.digest(), recomputed(&in_order));
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

//! One table shard's index of its records: open addressing with linear probing, a one-byte
//! tag per slot, at most 7/8 full (the same memory per client as `hashbrown`'s table, which
//! it replaced).
//!
//! Why not `hashbrown`: a lookup under a spread-out load is three loads from memory (the
//! slot's tag, the slot, the record's line), each waiting for the one before, and they were
//! a quarter of a node's time per update. A session sees the next line in its buffer before
//! it handles the current one, so it can start those loads early: first the tag and slot at
//! the client's home ([`ClientIndex::prefetch_home`]), then, one line later, the record the
//! slot points to ([`ClientIndex::for_each_candidate`]). That needs to know where a hash
//! lands, which `hashbrown` keeps to itself.
//!
//! Records are only ever removed by a sweep ([`ClientIndex::retain`]), which shifts the rest
//! of a removed record's run back (no tombstones), so a lookup stops at the first empty slot.

use herd_wire::record::prefetch_cache_line;

/// An empty slot's tag; a full slot's has its high bit set.
const EMPTY: u8 = 0;
/// The smallest index that holds anything.
const MIN_SLOTS: usize = 8;

/// The tag stored for a record whose hash is `hash`: 7 bits the home slot does not use
/// (the home takes the low bits), so two records at one home rarely share a tag.
#[inline]
fn tag(hash: u64) -> u8 {
    0x80 | (hash >> 57) as u8
}

pub struct ClientIndex<T> {
    /// One per slot; [`EMPTY`] or a full slot's [`tag`].
    tags: Box<[u8]>,
    slots: Box<[Option<T>]>,
    len: usize,
}

impl<T> Default for ClientIndex<T> {
    fn default() -> Self {
        ClientIndex {
            tags: Box::new([]),
            slots: Box::new([]),
            len: 0,
        }
    }
}

impl<T> ClientIndex<T> {
    pub fn len(&self) -> usize {
        self.len
    }

    fn mask(&self) -> usize {
        self.tags.len().wrapping_sub(1)
    }

    /// The slots a lookup for `hash` visits, from its home to the first empty one.
    fn probe(&self, hash: u64) -> impl Iterator<Item = usize> + '_ {
        let mask = self.mask();
        let home = hash as usize & mask;
        (0..self.tags.len())
            .map(move |step| (home + step) & mask)
            .take_while(|&i| self.tags[i] != EMPTY)
    }

    /// The index of the record whose hash is `hash` and for which `eq` holds.
    fn position(&self, hash: u64, mut eq: impl FnMut(&T) -> bool) -> Option<usize> {
        let tag = tag(hash);
        self.probe(hash)
            .find(|&i| self.tags[i] == tag && self.slots[i].as_ref().is_some_and(&mut eq))
    }

    pub fn find(&self, hash: u64, eq: impl FnMut(&T) -> bool) -> Option<&T> {
        let i = self.position(hash, eq)?;
        self.slots[i].as_ref()
    }

    pub fn find_mut(&mut self, hash: u64, eq: impl FnMut(&T) -> bool) -> Option<&mut T> {
        let i = self.position(hash, eq)?;
        self.slots[i].as_mut()
    }

    /// Calls `f` with every record whose tag matches `hash`'s on its probe (nearly always
    /// only the one being looked for, if it is here), without comparing keys: reading a key
    /// would wait for the very load a prefetch wants to start.
    pub fn for_each_candidate(&self, hash: u64, mut f: impl FnMut(&T)) {
        let tag = tag(hash);
        for i in self.probe(hash) {
            if self.tags[i] == tag {
                if let Some(value) = &self.slots[i] {
                    f(value);
                }
            }
        }
    }

    /// Starts loading the tag and the slot where a lookup for `hash` begins (see the
    /// module's comment); waits for nothing.
    pub fn prefetch_home(&self, hash: u64) {
        if self.tags.is_empty() {
            return;
        }
        let home = hash as usize & self.mask();
        prefetch_cache_line(self.tags.as_ptr() as usize + home);
        let slot = self.slots.as_ptr() as usize + home * std::mem::size_of::<Option<T>>();
        prefetch_cache_line(slot);
        prefetch_cache_line(slot + std::mem::size_of::<Option<T>>() - 1);
    }

    /// Stores `value` (whose hash is `hash`; nothing equal to it is held). `rehash` gives
    /// the hash of a held record, for when the index grows.
    pub fn insert(&mut self, hash: u64, value: T, rehash: impl Fn(&T) -> u64) {
        self.reserve(1, rehash);
        self.place(hash, value);
        self.len += 1;
    }

    /// Puts `value` in the first empty slot of its probe (there is one: at most 7/8 full).
    fn place(&mut self, hash: u64, value: T) {
        let mask = self.mask();
        let mut i = hash as usize & mask;
        while self.tags[i] != EMPTY {
            i = (i + 1) & mask;
        }
        self.tags[i] = tag(hash);
        self.slots[i] = Some(value);
    }

    /// Makes room for `additional` more records without growing again.
    pub fn reserve(&mut self, additional: usize, rehash: impl Fn(&T) -> u64) {
        let wanted = self.len + additional;
        if wanted <= max_len(self.tags.len()) {
            return;
        }
        let mut slots = MIN_SLOTS.max(self.tags.len());
        while wanted > max_len(slots) {
            slots *= 2;
        }
        self.rebuild(slots, Some, rehash);
    }

    /// Keeps only the records for which `keep` holds (a sweep), handing each other one to
    /// `removed`. `keep` must be a plain test: it may be asked more than once about a record.
    /// A few removals are made in place: each shifts the rest of its run back (linear
    /// probing's deletion), so only the records after it are hashed again. Many (over an
    /// eighth of the records) rebuild the index instead, each kept record hashed once, as a
    /// run shifted back for every removal would cost more.
    pub fn retain(
        &mut self,
        keep: impl Fn(&T) -> bool,
        mut removed: impl FnMut(T),
        rehash: impl Fn(&T) -> u64,
    ) {
        let going = self.iter().filter(|value| !keep(value)).count();
        if going == 0 {
            return;
        }
        if going > self.len / 8 {
            let keep_or_hand_over = |value: T| match keep(&value) {
                true => Some(value),
                false => {
                    removed(value);
                    None
                }
            };
            self.rebuild(self.tags.len(), keep_or_hand_over, rehash);
            return;
        }
        let mut i = 0;
        while i < self.tags.len() {
            if self.slots[i].as_ref().is_some_and(|value| !keep(value)) {
                removed(self.remove_at(i, &rehash));
                // A record further along may have moved into slot `i`: look at it again.
                // (One shifted back across the end of the slots is looked at twice.)
                continue;
            }
            i += 1;
        }
    }

    /// Empties slot `hole` and moves back every later record of its run that a lookup
    /// would otherwise no longer reach (one whose home is not between the hole and it).
    fn remove_at(&mut self, mut hole: usize, rehash: &impl Fn(&T) -> u64) -> T {
        let mask = self.mask();
        self.tags[hole] = EMPTY;
        let gone = self.slots[hole].take().expect("a record to remove");
        self.len -= 1;
        let mut next = (hole + 1) & mask;
        while self.tags[next] != EMPTY {
            let value = self.slots[next]
                .as_ref()
                .expect("a tagged slot holds a record");
            let home = rehash(value) as usize & mask;
            // How far the record is from its home, and from the hole: it may fill the hole
            // if the hole is on its probe (between its home and where it is).
            if next.wrapping_sub(home) & mask >= next.wrapping_sub(hole) & mask {
                self.tags[hole] = self.tags[next];
                self.slots[hole] = self.slots[next].take();
                self.tags[next] = EMPTY;
                hole = next;
            }
            next = (next + 1) & mask;
        }
        gone
    }

    /// Moves every record that `keep` gives back into a new index of `slots` slots.
    fn rebuild(
        &mut self,
        slots: usize,
        mut keep: impl FnMut(T) -> Option<T>,
        rehash: impl Fn(&T) -> u64,
    ) {
        let old = std::mem::replace(
            &mut self.slots,
            std::iter::repeat_with(|| None).take(slots).collect(),
        );
        self.tags = vec![EMPTY; slots].into_boxed_slice();
        self.len = 0;
        for value in Vec::from(old).into_iter().flatten().filter_map(&mut keep) {
            self.place(rehash(&value), value);
            self.len += 1;
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &T> + '_ {
        self.slots.iter().flatten()
    }
}

/// The most records an index of `slots` slots holds (7/8 of them).
fn max_len(slots: usize) -> usize {
    slots - slots / 8
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    /// A weak hash, so that homes and tags collide often.
    fn weak(key: &u32) -> u64 {
        u64::from(*key % 37).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ u64::from(*key % 3) << 60
    }

    #[derive(Debug, Clone)]
    enum Op {
        Upsert(u32, u32),
        Sweep(u32),
        Reserve(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            8 => (0u32..200, any::<u32>()).prop_map(|(k, v)| Op::Upsert(k, v)),
            1 => (1u32..40).prop_map(Op::Sweep),
            1 => any::<u8>().prop_map(Op::Reserve),
        ]
    }

    proptest! {
        /// Whatever the updates, sweeps and reservations, the index holds what a HashMap
        /// holds, finds each record and finds nothing else.
        #[test]
        fn it_holds_what_a_hash_map_holds(ops in proptest::collection::vec(op(), 0..600)) {
            let mut index: ClientIndex<(u32, u32)> = ClientIndex::default();
            let mut model = HashMap::new();
            let rehash = |e: &(u32, u32)| weak(&e.0);
            for op in ops {
                match op {
                    Op::Upsert(k, v) => {
                        match index.find_mut(weak(&k), |e| e.0 == k) {
                            Some(e) => e.1 = v,
                            None => index.insert(weak(&k), (k, v), rehash),
                        }
                        model.insert(k, v);
                    }
                    Op::Sweep(m) => {
                        let mut gone = Vec::new();
                        index.retain(|e| e.1 % m != 0, |e| gone.push(e.0), rehash);
                        let mut expected: Vec<u32> =
                            model.iter().filter(|(_, v)| *v % m == 0).map(|(k, _)| *k).collect();
                        model.retain(|_, v| *v % m != 0);
                        gone.sort();
                        expected.sort();
                        // Each removed record is handed over exactly once.
                        prop_assert_eq!(gone, expected);
                    }
                    Op::Reserve(n) => index.reserve(usize::from(n), rehash),
                }
                prop_assert_eq!(index.len(), model.len());
                prop_assert!(index.len() <= max_len(index.tags.len()));
            }
            for k in 0..200 {
                prop_assert_eq!(index.find(weak(&k), |e| e.0 == k).map(|e| e.1), model.get(&k).copied());
                let mut candidates = 0;
                index.for_each_candidate(weak(&k), |e| candidates += usize::from(e.0 == k));
                prop_assert_eq!(candidates, usize::from(model.contains_key(&k)));
            }
            let mut all: Vec<_> = index.iter().copied().collect();
            all.sort();
            let mut expected: Vec<_> = model.into_iter().collect();
            expected.sort();
            prop_assert_eq!(all, expected);
        }
    }

    #[test]
    fn an_empty_index_finds_nothing_and_prefetches_nothing() {
        let index: ClientIndex<u32> = ClientIndex::default();
        assert!(index.find(7, |_| true).is_none());
        index.prefetch_home(7);
        index.for_each_candidate(7, |_| panic!("nothing is held"));
        assert_eq!(index.iter().count(), 0);
    }
}

//! The client table: each client's latest location, as the AT line of the server that first
//! received it. This is the one place that decides whether an update is new.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::protocol::AtRecord;

/// Latest record per client id. Readers (WHATSAT, sync) and writers (IAMAT, floods) share it;
/// every critical section is a hash lookup, so a plain lock is enough.
#[derive(Debug, Default)]
pub struct Table {
    records: RwLock<HashMap<String, Arc<AtRecord>>>,
}

impl Table {
    pub fn new() -> Table {
        Table::default()
    }

    /// Stores `record` if it is newer than what the table holds for its client (see
    /// [`AtRecord::is_newer_than`]). Returns whether it was stored: only stored records are
    /// flooded on, which is what makes flooding terminate.
    pub fn apply(&self, record: &Arc<AtRecord>) -> bool {
        let mut records = self.records.write().unwrap_or_else(|e| e.into_inner());
        match records.get_mut(record.client()) {
            Some(held) if !record.is_newer_than(held) => false,
            Some(held) => {
                *held = Arc::clone(record);
                true
            }
            None => {
                records.insert(record.client().to_owned(), Arc::clone(record));
                true
            }
        }
    }

    /// The latest record for `client`.
    pub fn get(&self, client: &str) -> Option<Arc<AtRecord>> {
        let records = self.records.read().unwrap_or_else(|e| e.into_inner());
        records.get(client).cloned()
    }

    /// Every record, for catching a neighbour up.
    pub fn snapshot(&self) -> Vec<Arc<AtRecord>> {
        let records = self.records.read().unwrap_or_else(|e| e.into_inner());
        records.values().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.records.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(origin: &str, client: &str, time: &str) -> Arc<AtRecord> {
        Arc::new(AtRecord::from_fields(origin, "+0.000000001", client, "+1+1", time).unwrap())
    }

    #[test]
    fn newer_wins_and_stale_or_duplicate_is_dropped() {
        let table = Table::new();
        assert!(table.apply(&record("Alford", "kiwi", "10.5")));
        assert!(!table.apply(&record("Alford", "kiwi", "10.5")), "duplicate");
        assert!(!table.apply(&record("Ball", "kiwi", "10.4")), "older");
        assert!(table.apply(&record("Ball", "kiwi", "10.6")), "newer");
        assert_eq!(table.get("kiwi").unwrap().origin(), "Ball");
        // Equal time: the origin name decides, the same on every server.
        assert!(table.apply(&record("Welsh", "kiwi", "10.6")));
        assert!(!table.apply(&record("Alford", "kiwi", "10.6")));
        assert_eq!(table.get("kiwi").unwrap().origin(), "Welsh");
        assert!(table.apply(&record("Alford", "other", "1")));
        assert_eq!(table.len(), 2);
        assert_eq!(table.snapshot().len(), 2);
        assert!(table.get("nobody").is_none());
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
}

//! The idempotency table: request id -> the outcome of its first application.
//!
//! Retention is bounded both in time and in count so the table cannot grow without limit. Eviction is
//! driven only by proposal times from the log, never by a local clock, so every node evicts the same
//! entries at the same log index and snapshots agree.

use std::collections::{HashMap, VecDeque};

use serde::{Deserialize, Serialize};

use super::{Applied, RequestId};

/// A retry must arrive within this window (by leader time) to be recognised.
pub const DEDUP_RETENTION_MS: u64 = 10 * 60 * 1000;
/// At most this many request ids are remembered; the oldest go first.
pub const DEDUP_MAX_ENTRIES: usize = 100_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DedupEntry {
    pub at_ms: u64,
    pub applied: Applied,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Dedup {
    entries: HashMap<RequestId, DedupEntry>,
    /// Insertion order, which is log order, so the front is always the oldest entry.
    order: VecDeque<RequestId>,
}

impl Dedup {
    pub fn get(&self, id: &RequestId) -> Option<&DedupEntry> {
        self.entries.get(id)
    }

    /// Records an outcome and returns the ids evicted to keep the bounds.
    pub fn insert(&mut self, id: RequestId, entry: DedupEntry) -> Vec<RequestId> {
        let now = entry.at_ms;
        if self.entries.insert(id.clone(), entry).is_none() {
            self.order.push_back(id);
        }
        let mut evicted = Vec::new();
        while let Some(front) = self.order.front() {
            let expired = self.entries.get(front).is_none_or(|e| now.saturating_sub(e.at_ms) > DEDUP_RETENTION_MS);
            if !expired && self.order.len() <= DEDUP_MAX_ENTRIES {
                break;
            }
            if let Some(old) = self.order.pop_front() {
                self.entries.remove(&old);
                evicted.push(old);
            }
        }
        evicted
    }

    /// Restores an entry loaded from storage; callers load in log order.
    pub fn restore(&mut self, id: RequestId, entry: DedupEntry) {
        self.entries.insert(id.clone(), entry);
        self.order.push_back(id);
    }

    pub fn iter(&self) -> impl Iterator<Item = (&RequestId, &DedupEntry)> {
        self.order.iter().filter_map(|id| self.entries.get(id).map(|e| (id, e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Reply;

    fn entry(at_ms: u64) -> DedupEntry {
        DedupEntry { at_ms, applied: Applied { index: at_ms, outcome: Ok(Reply::Nothing), deduplicated: false } }
    }

    fn id(s: &str) -> RequestId {
        RequestId::parse_optional(s).unwrap().unwrap()
    }

    #[test]
    fn entries_older_than_the_window_are_evicted_by_log_time() {
        let mut d = Dedup::default();
        assert!(d.insert(id("a"), entry(0)).is_empty());
        assert!(d.insert(id("b"), entry(DEDUP_RETENTION_MS)).is_empty());
        let evicted = d.insert(id("c"), entry(DEDUP_RETENTION_MS + 1));
        assert_eq!(evicted, vec![id("a")]);
        assert!(d.get(&id("a")).is_none());
        assert!(d.get(&id("b")).is_some());
    }

    #[test]
    fn the_table_never_exceeds_its_count_bound() {
        let mut d = Dedup::default();
        for i in 0..DEDUP_MAX_ENTRIES + 5 {
            d.insert(id(&format!("r{i}")), entry(1));
        }
        assert_eq!(d.iter().count(), DEDUP_MAX_ENTRIES);
        assert!(d.get(&id("r0")).is_none());
        assert!(d.get(&id(&format!("r{}", DEDUP_MAX_ENTRIES + 4))).is_some());
    }
}

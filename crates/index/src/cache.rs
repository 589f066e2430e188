//! One memory budget for the sealed-segment indexes of many logs.
//!
//! A sealed segment's index is loaded from its sidecar when a lookup needs it
//! and kept for the next one. Kept per log (as before), the memory grew with
//! the number of shards times the segments each holds: 1,000 shards with 64
//! cached indexes of 128 MiB segments each would hold 12 GiB. An engine
//! instead shares one [`IndexCache`] across all its logs, which keeps the
//! indexes it holds under one byte budget and drops the least recently used
//! first. A dropped index is loaded again from its sidecar (a few tens of
//! microseconds) the next time it is needed. The active segment's index is
//! not in the cache: every append adds to it, and it is rebuilt only by
//! recovery.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::sparse::SparseIndex;

/// Identifies one log among those sharing a cache.
pub(crate) type LogKey = u64;

/// Counters and sizes of an [`IndexCache`], for metrics and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    /// Bytes of the indexes held now.
    pub bytes: usize,
    /// Indexes held now.
    pub indexes: usize,
    /// Lookups answered from the cache.
    pub hits: u64,
    /// Lookups that had to load (or rebuild) an index.
    pub misses: u64,
    /// Indexes dropped to stay under the budget.
    pub evictions: u64,
}

#[derive(Debug)]
struct Slot {
    idx: Arc<SparseIndex>,
    /// Tick of the last use.
    used: u64,
    /// Tick under which the slot is queued in `State::lru`; older than
    /// `used` when it was used since. A hit only sets `used` (a time lookup
    /// touches two or three indexes, so hits must be cheap); eviction moves
    /// such slots to the back of the queue when it meets them.
    queued: u64,
    bytes: usize,
}

#[derive(Debug, Default)]
struct State {
    slots: HashMap<(LogKey, u64), Slot>,
    /// Queued tick → key, oldest first; one entry per slot.
    lru: BTreeMap<u64, (LogKey, u64)>,
    /// The segment bases each log has slots for, so that closing a log
    /// costs its own slots, not a scan of every log's.
    by_log: HashMap<LogKey, BTreeSet<u64>>,
    tick: u64,
    stats: CacheStats,
}

impl State {
    fn remove(&mut self, key: (LogKey, u64)) {
        if let Some(slot) = self.slots.remove(&key) {
            self.lru.remove(&slot.queued);
            self.forget(key);
            self.stats.bytes -= slot.bytes;
            self.stats.indexes -= 1;
        }
    }

    fn forget(&mut self, key: (LogKey, u64)) {
        if let Some(bases) = self.by_log.get_mut(&key.0) {
            bases.remove(&key.1);
            if bases.is_empty() {
                self.by_log.remove(&key.0);
            }
        }
    }

    /// Drops the least recently used slot. Each slot's `used` is at least its
    /// `queued`, so the first slot met whose two agree is used least recently.
    fn evict_one(&mut self) -> bool {
        while let Some((queued, key)) = self.lru.pop_first() {
            let Some(slot) = self.slots.get_mut(&key) else {
                continue;
            };
            if slot.used != queued {
                slot.queued = slot.used;
                self.lru.insert(slot.used, key);
                continue;
            }
            // Its queue entry is already popped; `remove` finds none to drop.
            self.remove(key);
            self.stats.evictions += 1;
            return true;
        }
        false
    }
}

/// Sealed-segment indexes of many logs under one memory budget, and the
/// thread that writes those logs' active-segment checkpoints.
#[derive(Debug)]
pub struct IndexCache {
    budget_bytes: usize,
    state: Mutex<State>,
    next_log: AtomicU64,
    /// Writes the active-segment checkpoints of the logs sharing this
    /// cache, off their syncing threads.
    pub(crate) checkpointer: crate::checkpointer::Checkpointer,
}

impl IndexCache {
    /// A cache that holds at most `budget_bytes` of indexes. An index larger
    /// than the whole budget is still served to the lookup that loaded it,
    /// but not kept.
    pub fn new(budget_bytes: usize) -> Arc<IndexCache> {
        Arc::new(IndexCache {
            budget_bytes,
            state: Mutex::new(State::default()),
            next_log: AtomicU64::new(0),
            checkpointer: crate::checkpointer::Checkpointer::new(),
        })
    }

    pub fn budget_bytes(&self) -> usize {
        self.budget_bytes
    }

    pub fn stats(&self) -> CacheStats {
        self.lock().stats
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Plain data kept consistent between statements; see the segment crate.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A key for a newly opened log.
    pub(crate) fn register(&self) -> LogKey {
        self.next_log.fetch_add(1, Ordering::Relaxed)
    }

    /// The cached index of segment `base` of `log`, if it covers exactly up to
    /// `end_seq`. An entry for another end (cached while the segment was still
    /// being written) is stale and dropped.
    pub(crate) fn get(&self, log: LogKey, base: u64, end_seq: u64) -> Option<Arc<SparseIndex>> {
        let mut st = self.lock();
        let key = (log, base);
        match st.slots.get(&key) {
            Some(slot) if slot.idx.end_seq == end_seq => {
                let idx = slot.idx.clone();
                st.tick += 1;
                let tick = st.tick;
                if let Some(slot) = st.slots.get_mut(&key) {
                    slot.used = tick;
                }
                st.stats.hits += 1;
                Some(idx)
            }
            Some(_) => {
                st.remove(key);
                st.stats.misses += 1;
                None
            }
            None => {
                st.stats.misses += 1;
                None
            }
        }
    }

    /// Keeps `idx` as the index of segment `idx.base_seq` of `log`, then drops
    /// the least recently used indexes until the cache is within its budget.
    pub(crate) fn insert(&self, log: LogKey, idx: Arc<SparseIndex>) {
        let bytes = idx.memory_bytes();
        let key = (log, idx.base_seq);
        let mut st = self.lock();
        st.remove(key);
        if bytes > self.budget_bytes {
            return;
        }
        st.tick += 1;
        let used = st.tick;
        st.slots.insert(
            key,
            Slot {
                idx,
                used,
                queued: used,
                bytes,
            },
        );
        st.lru.insert(used, key);
        st.by_log.entry(log).or_default().insert(key.1);
        st.stats.bytes += bytes;
        st.stats.indexes += 1;
        // The entry just inserted is the most recent, so it goes last, and
        // alone it fits.
        while st.stats.bytes > self.budget_bytes && st.evict_one() {}
    }

    /// Forgets the index of a deleted segment.
    pub(crate) fn remove(&self, log: LogKey, base: u64) {
        self.lock().remove((log, base));
    }

    /// Forgets every index of a log that is being closed.
    pub(crate) fn remove_log(&self, log: LogKey) {
        let mut st = self.lock();
        let bases = st.by_log.remove(&log).unwrap_or_default();
        for base in bases {
            st.remove((log, base));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sparse::Entry;

    fn index(base: u64, entries: usize) -> Arc<SparseIndex> {
        let mut idx = SparseIndex::new(base);
        idx.entries = (0..entries as u64)
            .map(|i| Entry {
                seq: base + i,
                offset: 64 + i as u32,
                arrival_ms: 0,
            })
            .collect();
        idx.end_seq = base + entries as u64;
        Arc::new(idx)
    }

    #[test]
    fn cache_stays_within_its_budget_and_drops_the_least_recently_used() {
        let one = index(0, 100).memory_bytes();
        let cache = IndexCache::new(3 * one);
        let log = cache.register();
        for b in 0..3u64 {
            cache.insert(log, index(b * 1000, 100));
        }
        assert_eq!(cache.stats().indexes, 3);
        // Using segment 0 makes segment 1000 the least recently used.
        assert!(cache.get(log, 0, 100).is_some());
        cache.insert(log, index(3000, 100));
        let s = cache.stats();
        assert_eq!((s.indexes, s.evictions), (3, 1));
        assert!(s.bytes <= cache.budget_bytes());
        assert!(cache.get(log, 1000, 1100).is_none());
        assert!(cache.get(log, 0, 100).is_some());
        assert!(cache.get(log, 3000, 3100).is_some());
    }

    #[test]
    fn logs_sharing_a_cache_do_not_see_each_others_indexes() {
        let cache = IndexCache::new(1 << 20);
        let (a, b) = (cache.register(), cache.register());
        cache.insert(a, index(0, 10));
        assert!(cache.get(b, 0, 10).is_none());
        cache.insert(b, index(0, 10));
        cache.remove_log(a);
        assert!(cache.get(a, 0, 10).is_none());
        assert!(cache.get(b, 0, 10).is_some());
        assert_eq!(cache.stats().indexes, 1);
        cache.remove_log(b);
        assert_eq!(
            cache.stats(),
            CacheStats {
                hits: 1,
                misses: 2,
                ..CacheStats::default()
            }
        );
        let st = cache.lock();
        assert!(st.by_log.is_empty() && st.lru.is_empty() && st.slots.is_empty());
    }

    #[test]
    fn stale_entry_for_another_end_is_dropped() {
        let cache = IndexCache::new(1 << 20);
        let log = cache.register();
        cache.insert(log, index(0, 10));
        assert!(cache.get(log, 0, 11).is_none());
        assert_eq!(cache.stats().indexes, 0);
        assert_eq!(cache.stats().bytes, 0);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u64, u64, usize),
        Get(u64, u64),
        Remove(u64, u64),
        RemoveLog(u64),
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            4 => (0..3u64, 0..6u64, 1..40usize).prop_map(|(l, b, n)| Op::Insert(l, b, n)),
            4 => (0..3u64, 0..6u64).prop_map(|(l, b)| Op::Get(l, b)),
            1 => (0..3u64, 0..6u64).prop_map(|(l, b)| Op::Remove(l, b)),
            1 => (0..3u64).prop_map(Op::RemoveLog),
        ]
    }

    proptest::proptest! {
        /// Against a model (a list in use order): the cache holds exactly
        /// the most recently used indexes that fit, and its counts agree.
        #[test]
        fn cache_matches_a_least_recently_used_model(ops in proptest::collection::vec(op(), 1..200)) {
            let unit = index(0, 10).memory_bytes();
            let budget = 3 * unit;
            let cache = IndexCache::new(budget);
            // (log, base, entries, bytes), least recently used first.
            let mut model: Vec<(u64, u64, usize, usize)> = Vec::new();
            for op in ops {
                match op {
                    Op::Insert(l, b, n) => {
                        let idx = index(b * 1000, n);
                        let bytes = idx.memory_bytes();
                        cache.insert(l, idx);
                        model.retain(|m| (m.0, m.1) != (l, b * 1000));
                        if bytes <= budget {
                            model.push((l, b * 1000, n, bytes));
                            while model.iter().map(|m| m.3).sum::<usize>() > budget {
                                model.remove(0);
                            }
                        }
                    }
                    Op::Get(l, b) => {
                        let pos = model.iter().position(|m| (m.0, m.1) == (l, b * 1000));
                        let end = pos.map_or(b * 1000 + 1, |p| b * 1000 + model[p].2 as u64);
                        let got = cache.get(l, b * 1000, end);
                        proptest::prop_assert_eq!(got.is_some(), pos.is_some());
                        if let Some(p) = pos {
                            let m = model.remove(p);
                            model.push(m);
                        }
                    }
                    Op::Remove(l, b) => {
                        cache.remove(l, b * 1000);
                        model.retain(|m| (m.0, m.1) != (l, b * 1000));
                    }
                    Op::RemoveLog(l) => {
                        cache.remove_log(l);
                        model.retain(|m| m.0 != l);
                    }
                }
                let st = cache.lock();
                proptest::prop_assert_eq!(st.stats.bytes, model.iter().map(|m| m.3).sum::<usize>());
                proptest::prop_assert!(st.stats.bytes <= budget);
                proptest::prop_assert_eq!(st.stats.indexes, model.len());
                proptest::prop_assert_eq!(st.slots.len(), model.len());
                proptest::prop_assert_eq!(st.lru.len(), model.len());
                proptest::prop_assert_eq!(st.by_log.values().map(BTreeSet::len).sum::<usize>(), model.len());
            }
        }
    }

    #[test]
    fn index_larger_than_the_budget_is_not_kept() {
        let cache = IndexCache::new(16);
        let log = cache.register();
        cache.insert(log, index(0, 10));
        assert_eq!(
            cache.stats(),
            CacheStats {
                misses: 0,
                ..CacheStats::default()
            }
        );
    }
}

//! Process-wide counters of the storage path (fsync latency, group-commit
//! sizes), for metrics. Atomic and lock-free: recording costs a few relaxed
//! increments on the write path.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the fsync latency buckets, in seconds.
pub const FSYNC_BUCKETS_SECONDS: [f64; 12] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];
/// Upper bounds of the group-commit size buckets, in records per sync.
pub const GROUP_BUCKETS_RECORDS: [f64; 10] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

/// A fixed-bucket histogram of atomics.
#[derive(Debug)]
pub struct AtomicHistogram<const N: usize> {
    bounds: [f64; N],
    /// Per bucket (not cumulative), then the overflow bucket.
    counts: [AtomicU64; 13],
    sum_micro: AtomicU64,
    count: AtomicU64,
}

/// A histogram's values at one moment: cumulative `(upper bound, count)`
/// pairs, the sum and the count, as Prometheus wants them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HistogramSnapshot {
    pub buckets: Vec<(f64, u64)>,
    pub sum: f64,
    pub count: u64,
}

impl<const N: usize> AtomicHistogram<N> {
    const fn new(bounds: [f64; N]) -> Self {
        AtomicHistogram {
            bounds,
            counts: [const { AtomicU64::new(0) }; 13],
            sum_micro: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    fn observe(&self, value: f64) {
        let i = self.bounds.iter().position(|b| value <= *b).unwrap_or(N);
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_micro
            .fetch_add((value * 1_000_000.0) as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> HistogramSnapshot {
        let mut acc = 0;
        let buckets = self
            .bounds
            .iter()
            .enumerate()
            .map(|(i, b)| {
                acc += self.counts[i].load(Ordering::Relaxed);
                (*b, acc)
            })
            .collect();
        HistogramSnapshot {
            buckets,
            sum: self.sum_micro.load(Ordering::Relaxed) as f64 / 1_000_000.0,
            count: self.count.load(Ordering::Relaxed),
        }
    }
}

const _: () = assert!(FSYNC_BUCKETS_SECONDS.len() < 13 && GROUP_BUCKETS_RECORDS.len() < 13);

static FSYNC: AtomicHistogram<12> = AtomicHistogram::new(FSYNC_BUCKETS_SECONDS);
static GROUP: AtomicHistogram<10> = AtomicHistogram::new(GROUP_BUCKETS_RECORDS);

static FLUSH: AtomicHistogram<12> = AtomicHistogram::new(FSYNC_BUCKETS_SECONDS);
static SHARED_GROUPS: AtomicU64 = AtomicU64::new(0);
static ZERO_FILL_BYTES: AtomicU64 = AtomicU64::new(0);
static CACHE_DROP_ADVISED_BYTES: AtomicU64 = AtomicU64::new(0);
static SEGMENTS_REUSED: AtomicU64 = AtomicU64::new(0);
static JOURNAL_SYNC: AtomicHistogram<12> = AtomicHistogram::new(FSYNC_BUCKETS_SECONDS);
static JOURNAL_WRITES: AtomicU64 = AtomicU64::new(0);

/// A journal sync (write and `fdatasync` of the journal file) that made
/// `writes` appends durable.
pub fn record_journal_sync(took: Duration, writes: u64) {
    JOURNAL_SYNC.observe(took.as_secs_f64());
    JOURNAL_WRITES.fetch_add(writes, Ordering::Relaxed);
}

/// Counts segments started in a file kept for reuse rather than a new one
/// (see `LogOptions::recycle_segments_max`).
pub fn record_segment_reused() {
    SEGMENTS_REUSED.fetch_add(1, Ordering::Relaxed);
}

/// Counts zeros written ahead of frames in segment space.
pub fn record_zero_fill(bytes: u64) {
    ZERO_FILL_BYTES.fetch_add(bytes, Ordering::Relaxed);
}

/// Counts bytes of segment files a log advised the kernel to drop from the
/// page cache (see `LogOptions::cache_window_bytes`). Advised, not dropped:
/// the kernel keeps mapped, dirty and in-flight pages, and some file
/// systems (tmpfs) ignore the advice; `Cached` in /proc/meminfo shows what
/// left.
pub fn record_cache_drop_advised(bytes: u64) {
    CACHE_DROP_ADVISED_BYTES.fetch_add(bytes, Ordering::Relaxed);
}

/// Records one fsync (`fdatasync` of a segment, or a shared `syncfs`).
pub fn record_fsync(took: Duration) {
    FSYNC.observe(took.as_secs_f64());
}

/// Records one device cache flush shared by the groups of many logs
/// (`FlushCoordinator`), and how long it took.
pub fn record_flush(took: Duration) {
    FLUSH.observe(took.as_secs_f64());
}

/// Counts one group made durable by a write-back and a shared flush
/// instead of its own `fdatasync`.
pub fn record_shared_group() {
    SHARED_GROUPS.fetch_add(1, Ordering::Relaxed);
}

/// Records how many records one group commit made durable.
pub fn record_group(records: u64) {
    GROUP.observe(records as f64);
}

/// The storage path's counters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StorageStats {
    pub fsync_seconds: HistogramSnapshot,
    pub group_commit_records: HistogramSnapshot,
    /// Zeros written ahead of frames so far (see `ZERO_FILL_GROUP_BYTES_MAX`).
    pub zero_fill_bytes: u64,
    /// Bytes of segment files advised out of the page cache so far.
    pub cache_drop_advised_bytes: u64,
    /// Segments started in a recycled file so far.
    pub segments_reused: u64,
    /// Device cache flushes shared by groups of many logs (`fdatasync`s a
    /// `FlushCoordinator` ran), by duration.
    pub shared_flush_seconds: HistogramSnapshot,
    /// Groups made durable by a write-back and a shared flush.
    pub shared_flush_groups: u64,
    /// Syncs of the engine's journal, by duration.
    pub journal_sync_seconds: HistogramSnapshot,
    /// Appends made durable through the journal.
    pub journal_writes: u64,
}

pub fn snapshot() -> StorageStats {
    StorageStats {
        fsync_seconds: FSYNC.snapshot(),
        group_commit_records: GROUP.snapshot(),
        zero_fill_bytes: ZERO_FILL_BYTES.load(Ordering::Relaxed),
        cache_drop_advised_bytes: CACHE_DROP_ADVISED_BYTES.load(Ordering::Relaxed),
        segments_reused: SEGMENTS_REUSED.load(Ordering::Relaxed),
        shared_flush_seconds: FLUSH.snapshot(),
        shared_flush_groups: SHARED_GROUPS.load(Ordering::Relaxed),
        journal_sync_seconds: JOURNAL_SYNC.snapshot(),
        journal_writes: JOURNAL_WRITES.load(Ordering::Relaxed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_and_count_everything() {
        let h: AtomicHistogram<3> = AtomicHistogram::new([1.0, 2.0, 4.0]);
        for v in [0.5, 1.0, 1.5, 3.0, 100.0] {
            h.observe(v);
        }
        let s = h.snapshot();
        assert_eq!(s.buckets, vec![(1.0, 2), (2.0, 3), (4.0, 4)]);
        assert_eq!(s.count, 5);
        assert!((s.sum - 106.0).abs() < 1e-6);
    }
}

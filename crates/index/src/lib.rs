//! Shardlog's index layer: maps sequence numbers to segment positions and
//! arrival times to sequence numbers, over a [`shardlog_segment::Log`].
//!
//! The index is derived data. Each sealed segment gets a sidecar file with its
//! own checksum; the active segment's index lives in memory and is rebuilt
//! from the log by recovery on open, from its last checkpoint on (a sidecar
//! of its durable prefix, written every `CHECKPOINT_INTERVAL_BYTES`). A sidecar that is missing, truncated,
//! zero-filled, or does not match its segment is never trusted: it is rebuilt
//! from the segment when first needed.

// Outside tests, no code may panic on input, I/O or a decode: every failure
// is a typed error. (Test modules unwrap freely; they are compiled with
// `test` set.)
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::unreachable,
        clippy::todo,
        clippy::unimplemented
    )
)]

pub mod cache;
mod checkpointer;
pub mod format;
pub mod sparse;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use shardlog_segment::format::SEGMENT_HEADER_BYTES;
use shardlog_segment::fs::{FileSystem, StdFs};
use shardlog_segment::{
    AppendObserver, Appended, Log, LogOptions, Placed, Position, ReadBatch, ReadLimits, RecordIn,
    RecoveryReport, ResumePoint, SealedInfo,
};

pub use cache::{CacheStats, IndexCache};
pub use shardlog_segment::{Error, Result};
pub use sparse::{checkpoint_file_name, index_file_name, Entry, SparseIndex};

use crate::cache::LogKey;
use crate::format::{
    CHECKPOINT_FILE_SUFFIX, CHECKPOINT_INTERVAL_BYTES, CHECKPOINT_TMP_SUFFIX, INDEX_CACHE_BYTES_DEFAULT,
    INDEX_FILE_SUFFIX, INDEX_INTERVAL_BYTES,
};

/// Most records one step of a time lookup's forward scan reads. An index
/// interval of the smallest frames (41 bytes) holds about 400.
const TIME_SCAN_RECORDS_MAX: usize = 4096;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Plain data kept consistent between statements; see the segment crate.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Counters of index maintenance, for tests and metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct IndexStats {
    /// Sidecar files loaded and found valid.
    pub loaded: u64,
    /// Sidecar files rebuilt from their segment.
    pub rebuilt: u64,
    /// Sidecar files that could not be written (the index stays in memory).
    pub write_failures: u64,
    /// Checkpoints of the active segment written.
    pub checkpoints: u64,
    /// Opens that resumed from a checkpoint instead of walking the whole
    /// active segment.
    pub resumed: u64,
}

#[derive(Debug)]
struct State {
    active: SparseIndex,
    /// Arrival time of the last record of each sealed segment whose index was
    /// seen, by base: 16 bytes a segment, kept outside the index cache so that
    /// a time lookup's search over segments and retention's checks do not
    /// load (or evict) whole indexes.
    max_arrival: std::collections::BTreeMap<u64, i64>,
    stats: IndexStats,
    /// Where the active segment's last checkpoint ends (0: none yet).
    checkpointed_upto: u64,
    /// A checkpoint is queued or being written; later points skip theirs
    /// until it ends (`Shared::checkpoint_done` signals the end).
    checkpointing: bool,
    /// The log was closed: no checkpoint is started after that.
    closed: bool,
    /// The checkpoint offered to recovery, until it says it used it.
    offered: Option<SparseIndex>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// Where this log's sealed-segment indexes are kept, under a budget that
    /// may be shared with other logs.
    cache: Arc<IndexCache>,
    key: LogKey,
    /// Signalled when a checkpoint ends, for a close that waits for it.
    checkpoint_done: Condvar,
    /// This, for the checkpoint thread's job.
    me: std::sync::Weak<Shared>,
    /// The log's file system and directory, for checkpoints.
    fs: Arc<dyn FileSystem>,
    dir: PathBuf,
}

/// Writes an index file, replacing any of that name, and returns its handle.
/// A sealed segment's sidecar is derived data and not synced: one torn by a
/// crash fails its checksum and is rebuilt. A checkpoint syncs it.
fn write_sidecar(
    fs: &dyn FileSystem,
    path: &Path,
    idx: &SparseIndex,
) -> std::io::Result<Arc<dyn shardlog_segment::FileHandle>> {
    if fs.exists(path) {
        fs.remove_file(path)?;
    }
    let file = fs.create_new(path)?;
    file.write_all_at(&idx.encode(), 0)?;
    Ok(file)
}

/// Writes an active segment's checkpoint: to a temporary name, synced, then
/// renamed over the last one and the directory synced, so that a crash or a
/// power cut leaves the old one or the new one. (Every 4 MiB of a shard's
/// data, two fsyncs buy an open that reads at most that much of it even
/// with a cold page cache.)
fn write_checkpoint(fs: &dyn FileSystem, dir: &Path, idx: &SparseIndex) -> std::io::Result<()> {
    let path = dir.join(checkpoint_file_name(idx.base_seq));
    let tmp = path.with_extension(CHECKPOINT_TMP_SUFFIX.trim_start_matches('.'));
    write_sidecar(fs, &tmp, idx)?.sync_data()?;
    fs.rename(&tmp, &path)?;
    fs.sync_dir(dir)
}

impl AppendObserver for Shared {
    fn placed(&self, segment_base: u64, records: &[Placed]) {
        let mut st = lock(&self.state);
        if st.active.base_seq != segment_base {
            st.active = SparseIndex::new(segment_base);
            st.checkpointed_upto = 0;
        }
        for r in records {
            st.active.add(r.seq, r.offset, r.arrival_ms, r.frame_len);
        }
    }

    fn sealed(&self, info: &SealedInfo) {
        let mut idx = {
            let mut st = lock(&self.state);
            st.checkpointed_upto = 0;
            std::mem::replace(&mut st.active, SparseIndex::new(info.end_seq))
        };
        // The sealed segment's sidecar replaces its checkpoint.
        let _ = info
            .fs
            .remove_file(&info.dir.join(checkpoint_file_name(info.segment_base)));
        if idx.base_seq != info.segment_base {
            // Nothing was placed in the sealed segment.
            idx = SparseIndex::new(info.segment_base);
        }
        idx.end_seq = info.end_seq;
        idx.end_offset = info.end_offset;
        idx.file_id = info.file_id;
        let path = info.dir.join(index_file_name(info.segment_base));
        let failed = write_sidecar(&*info.fs, &path, &idx).is_err();
        {
            let mut st = lock(&self.state);
            st.max_arrival.insert(idx.base_seq, idx.max_arrival_ms);
            if failed {
                st.stats.write_failures += 1;
            }
        }
        self.cache.insert(self.key, Arc::new(idx));
    }

    fn removed(&self, segment_base: u64) {
        self.cache.remove(self.key, segment_base);
        lock(&self.state).max_arrival.remove(&segment_base);
    }

    fn resume_point(&self, segment_base: u64, file_id: u64) -> Option<ResumePoint> {
        let path = self.dir.join(checkpoint_file_name(segment_base));
        let file = self.fs.open_read(&path).ok()?;
        let len = file.len().ok()?;
        let map = file.map(usize::try_from(len).ok()?).ok()?;
        // A torn, stale or foreign checkpoint is not used: the open walks
        // the whole segment, as without one.
        let idx = SparseIndex::decode(map.as_slice()).ok()?;
        if idx.base_seq != segment_base || idx.file_id != file_id || idx.end_seq == idx.base_seq {
            return None;
        }
        let point = ResumePoint {
            file_id,
            offset: idx.end_offset,
            next_seq: idx.end_seq,
            last_arrival_ms: idx.max_arrival_ms,
            anchor: idx.entries.last().map(|e| (u64::from(e.offset), e.seq)),
        };
        lock(&self.state).offered = Some(idx);
        Some(point)
    }

    fn resume_used(&self, segment_base: u64) {
        let mut st = lock(&self.state);
        if let Some(idx) = st.offered.take().filter(|i| i.base_seq == segment_base) {
            st.checkpointed_upto = idx.end_offset;
            st.active = idx;
            st.stats.resumed += 1;
        }
    }

    fn durable(&self, segment_base: u64, point: &ResumePoint) {
        let Some(shared) = self.me.upgrade() else {
            return;
        };
        let idx = {
            let mut st = lock(&self.state);
            if st.active.base_seq != segment_base
                || st.checkpointing
                || st.closed
                || point.offset < st.checkpointed_upto.saturating_add(CHECKPOINT_INTERVAL_BYTES)
            {
                return;
            }
            st.checkpointing = true;
            SparseIndex {
                base_seq: segment_base,
                end_seq: point.next_seq,
                file_id: point.file_id,
                end_offset: point.offset,
                max_arrival_ms: point.last_arrival_ms,
                entries: st
                    .active
                    .entries
                    .iter()
                    .filter(|e| u64::from(e.offset) < point.offset)
                    .copied()
                    .collect(),
            }
        };
        // Written on the checkpoint thread of the logs sharing this cache
        // (an engine's shards): the caller is the sync that just made the
        // point durable, and its two fsyncs, rename and directory sync (a
        // few milliseconds, more with online discard) would hold up the
        // acknowledgement of the groups behind it (measured: about a tenth
        // of the embedded engine's durable bandwidth at 4 puts in flight).
        // Past `CHECKPOINTS_QUEUED_MAX` queued, this thread writes it.
        // The guard ends the checkpoint however the job ends: written,
        // panicked, or dropped unrun.
        let ending = CheckpointEnding(shared);
        self.cache
            .checkpointer
            .run(Box::new(move || ending.0.write_checkpoint(idx)));
    }
}

/// Ends a log's checkpoint when dropped: later points may start one again,
/// and a close waiting for it goes on.
struct CheckpointEnding(Arc<Shared>);

impl Drop for CheckpointEnding {
    fn drop(&mut self) {
        lock(&self.0.state).checkpointing = false;
        self.0.checkpoint_done.notify_all();
    }
}

impl Shared {
    /// Writes a checkpoint taken by `durable` (its [`CheckpointEnding`]
    /// ends it).
    fn write_checkpoint(&self, idx: SparseIndex) {
        let written = write_checkpoint(&*self.fs, &self.dir, &idx).is_ok();
        let mut st = lock(&self.state);
        if st.active.base_seq != idx.base_seq {
            // The segment was sealed meanwhile; its sidecar replaces this.
            let _ = self
                .fs
                .remove_file(&self.dir.join(checkpoint_file_name(idx.base_seq)));
        } else if written {
            st.checkpointed_upto = idx.end_offset;
            st.stats.checkpoints += 1;
        } else {
            st.stats.write_failures += 1;
        }
    }

    /// Waits until no checkpoint is queued or being written.
    fn wait_checkpoint(&self) {
        let mut st = lock(&self.state);
        while st.checkpointing {
            st = self.checkpoint_done.wait(st).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// A log with its index: the storage of one shard.
#[derive(Debug)]
pub struct IndexedLog {
    log: Log,
    shared: Arc<Shared>,
}

impl Drop for IndexedLog {
    fn drop(&mut self) {
        // A checkpoint written after the close could land in a directory
        // being removed (a deleted stream), or race the next open's.
        lock(&self.shared.state).closed = true;
        self.shared.wait_checkpoint();
        // A closed log's indexes would only take budget from open ones.
        self.shared.cache.remove_log(self.shared.key);
    }
}

struct Seg {
    base_seq: u64,
    end_seq: Option<u64>,
}

/// A reader's place in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub pos: Position,
    pub seq: u64,
}

impl IndexedLog {
    /// Opens the log in `dir` on the real file system.
    pub fn open(dir: impl AsRef<Path>, opts: LogOptions) -> Result<IndexedLog> {
        IndexedLog::open_with(Arc::new(StdFs), dir, opts).map(|(l, _)| l)
    }

    /// Opens the log in `dir` through `fs`, with a cache of its own for its
    /// sealed-segment indexes (`INDEX_CACHE_BYTES_DEFAULT`).
    pub fn open_with(
        fs: Arc<dyn FileSystem>,
        dir: impl AsRef<Path>,
        opts: LogOptions,
    ) -> Result<(IndexedLog, RecoveryReport)> {
        IndexedLog::open_cached(fs, dir, opts, IndexCache::new(INDEX_CACHE_BYTES_DEFAULT))
    }

    /// Opens the log in `dir` through `fs`, keeping its sealed-segment
    /// indexes in `cache`, which other logs may share: one memory budget for
    /// the indexes of all the shards of an engine.
    pub fn open_cached(
        fs: Arc<dyn FileSystem>,
        dir: impl AsRef<Path>,
        opts: LogOptions,
        cache: Arc<IndexCache>,
    ) -> Result<(IndexedLog, RecoveryReport)> {
        let key = cache.register();
        let shared = Arc::new_cyclic(|me| Shared {
            state: Mutex::new(State {
                active: SparseIndex::new(u64::MAX),
                max_arrival: std::collections::BTreeMap::new(),
                stats: IndexStats::default(),
                checkpointed_upto: 0,
                checkpointing: false,
                closed: false,
                offered: None,
            }),
            cache,
            key,
            checkpoint_done: Condvar::new(),
            me: me.clone(),
            fs: fs.clone(),
            dir: dir.as_ref().to_path_buf(),
        });
        let (log, report) = Log::open_with(fs, dir, opts, shared.clone())?;
        {
            // The active index must describe the active segment even when
            // recovery found no records in it.
            let active_base = log.segments().last().map(|s| s.base_seq).unwrap_or(0);
            let mut st = lock(&shared.state);
            st.offered = None;
            if st.active.base_seq != active_base {
                st.active = SparseIndex::new(active_base);
            }
        }
        let me = IndexedLog { log, shared };
        me.remove_orphan_sidecars();
        if me.stats().resumed == 0 {
            // A checkpoint this open did not use (a full check, or one that
            // did not fit the file) may no longer describe the segment: a
            // full check may have cut the file below it. It goes; the next
            // one is written after 4 MiB more.
            if let Some(base) = me.log.segments().last().map(|s| s.base_seq) {
                let path = me.log.dir().join(checkpoint_file_name(base));
                if me.log.fs().exists(&path) && me.log.fs().remove_file(&path).is_ok() {
                    // Best effort: a stale checkpoint that survives is
                    // still refused, since recovery checks every one it is
                    // offered against the file (`ResumePoint::anchor`).
                    let _ = me.log.fs().sync_dir(me.log.dir());
                }
            }
        }
        Ok((me, report))
    }

    fn remove_orphan_sidecars(&self) {
        let fs = self.log.fs();
        let Ok(names) = fs.read_dir(self.log.dir()) else {
            return;
        };
        let segs: std::collections::HashSet<u64> = self.log.segments().iter().map(|s| s.base_seq).collect();
        let active = self.log.segments().last().map(|s| s.base_seq);
        for name in names {
            // Checkpoints of anything but the active segment, and ones a
            // crash left half-written, are of no use.
            if name.ends_with(CHECKPOINT_TMP_SUFFIX) {
                let _ = fs.remove_file(&self.log.dir().join(&name));
                continue;
            }
            if let Some(digits) = name.strip_suffix(CHECKPOINT_FILE_SUFFIX) {
                if digits.parse::<u64>().ok() != active {
                    let _ = fs.remove_file(&self.log.dir().join(&name));
                }
                continue;
            }
            let Some(digits) = name.strip_suffix(INDEX_FILE_SUFFIX) else {
                continue;
            };
            if let Ok(base) = digits.parse::<u64>() {
                if !segs.contains(&base) {
                    // Left over from retention interrupted by a crash.
                    let _ = fs.remove_file(&self.log.dir().join(&name));
                }
            }
        }
    }

    /// The underlying log.
    pub fn log(&self) -> &Log {
        &self.log
    }

    /// Waits until no checkpoint of the active segment is queued or being
    /// written (they are written on the checkpoint thread of the logs that
    /// share this log's `IndexCache`). A close waits for them too, so it may
    /// wait behind the checkpoints of other logs queued before (at most
    /// `CHECKPOINTS_QUEUED_MAX`, each two fsyncs and a directory sync).
    pub fn wait_checkpoint(&self) {
        self.shared.wait_checkpoint();
    }

    pub fn stats(&self) -> IndexStats {
        lock(&self.shared.state).stats
    }

    /// Appends records (see [`Log::append`]).
    pub fn append(&self, records: &[RecordIn<'_>]) -> Result<Appended> {
        self.log.append(records)
    }

    /// Writes records without waiting for durability (see
    /// [`Log::append_deferred`]); finish with [`Log::complete`].
    pub fn append_deferred(&self, records: &[RecordIn<'_>]) -> Result<(Appended, shardlog_segment::Pending)> {
        self.log.append_deferred(records)
    }

    fn sidecar_path(&self, base: u64) -> PathBuf {
        self.log.dir().join(index_file_name(base))
    }

    /// The index of the sealed segment `base`: cached, loaded from its sidecar
    /// (if valid), or rebuilt from the segment.
    fn sealed_index(&self, base: u64, end_seq: u64) -> Result<Arc<SparseIndex>> {
        if let Some(idx) = self.shared.cache.get(self.shared.key, base, end_seq) {
            return Ok(idx);
        }
        let path = self.sidecar_path(base);
        let fs = self.log.fs();
        let file_id = self.segment_file_id(base)?;
        let loaded = shardlog_segment::fs::read_all(&**fs, &path)
            .ok()
            .and_then(|bytes| SparseIndex::decode(&bytes).ok())
            .filter(|idx| idx.base_seq == base && idx.end_seq == end_seq && idx.file_id == file_id);
        let idx = match loaded {
            Some(idx) => {
                lock(&self.shared.state).stats.loaded += 1;
                idx
            }
            None => {
                let idx = self.rebuild(base, file_id)?;
                let mut st = lock(&self.shared.state);
                st.stats.rebuilt += 1;
                if write_sidecar(&**fs, &path, &idx).is_err() {
                    st.stats.write_failures += 1;
                }
                idx
            }
        };
        lock(&self.shared.state)
            .max_arrival
            .insert(base, idx.max_arrival_ms);
        let idx = Arc::new(idx);
        self.shared.cache.insert(self.shared.key, idx.clone());
        if self.log.first_seq() > base {
            // Retention deleted the segment while this load ran (oldest
            // first, so its base is now below the first record), and its
            // `removed` callback came before the insert: drop what would
            // otherwise linger until the log closes.
            self.shared.cache.remove(self.shared.key, base);
            lock(&self.shared.state).max_arrival.remove(&base);
        }
        Ok(idx)
    }

    /// Arrival time of the last record of the sealed segment `base`.
    fn sealed_max_arrival(&self, base: u64, end_seq: u64) -> Result<i64> {
        if let Some(t) = lock(&self.shared.state).max_arrival.get(&base) {
            return Ok(*t);
        }
        Ok(self.sealed_index(base, end_seq)?.max_arrival_ms)
    }

    fn segment_file_id(&self, base: u64) -> Result<u64> {
        let batch = self.log.read_at(
            Position {
                segment_base: base,
                offset: SEGMENT_HEADER_BYTES as u64,
            },
            base,
            ReadLimits {
                max_records: 0,
                max_bytes: 0,
            },
        )?;
        Ok(batch.segment().file_id())
    }

    fn rebuild(&self, base: u64, file_id: u64) -> Result<SparseIndex> {
        let mut idx = SparseIndex::new(base);
        idx.file_id = file_id;
        let end = self.log.scan_segment(base, |r| {
            idx.add(r.seq, r.offset, r.arrival_ms, r.frame_len);
        })?;
        idx.end_seq = end;
        if idx.entries.is_empty() {
            idx.end_offset = SEGMENT_HEADER_BYTES as u64;
        }
        Ok(idx)
    }

    /// Where the segment holding `seq` starts and its end (exclusive, `None`
    /// for the active segment).
    fn segment_of(&self, seq: u64) -> Result<(u64, Option<u64>)> {
        let first = self.log.first_seq();
        let next = self.log.visible_next_seq();
        if seq < first || seq > next {
            return Err(Error::SequenceOutOfRange { seq, first, next });
        }
        self.log
            .segment_of(seq)
            .ok_or(Error::SequenceOutOfRange { seq, first, next })
    }

    fn index_of(&self, base: u64, end: Option<u64>) -> Result<Arc<SparseIndex>> {
        match end {
            Some(end) => self.sealed_index(base, end),
            None => {
                let st = lock(&self.shared.state);
                if st.active.base_seq == base {
                    Ok(Arc::new(st.active.clone()))
                } else {
                    // The segment was sealed between the two lookups.
                    drop(st);
                    let end = self
                        .log
                        .segments()
                        .iter()
                        .find(|s| s.base_seq == base)
                        .and_then(|s| s.end_seq)
                        .unwrap_or(base);
                    self.sealed_index(base, end)
                }
            }
        }
    }

    /// The last index entry at or before `seq` in its segment, as a cursor.
    fn floor_cursor(&self, seq: u64) -> Result<Cursor> {
        let (base, end) = self.segment_of(seq)?;
        let entry = if end.is_none() {
            // Avoid copying the active index: search under the lock.
            let st = lock(&self.shared.state);
            if st.active.base_seq == base {
                st.active.floor_seq(seq)
            } else {
                drop(st);
                self.index_of(base, end)?.floor_seq(seq)
            }
        } else {
            self.index_of(base, end)?.floor_seq(seq)
        };
        Ok(match entry {
            Some(e) => Cursor {
                pos: Position {
                    segment_base: base,
                    offset: e.offset as u64,
                },
                seq: e.seq,
            },
            None => Cursor {
                pos: Position {
                    segment_base: base,
                    offset: SEGMENT_HEADER_BYTES as u64,
                },
                seq: base,
            },
        })
    }

    /// A cursor at the record with sequence number `seq` (or at the end of the
    /// log when `seq` is the next sequence number).
    pub fn cursor_at(&self, seq: u64) -> Result<Cursor> {
        let mut cur = self.floor_cursor(seq)?;
        // Bounded forward scan: at most one index interval of frames.
        while cur.seq < seq {
            let batch = self.log.read_at(
                cur.pos,
                cur.seq,
                ReadLimits {
                    max_records: (seq - cur.seq).min(4096) as usize,
                    max_bytes: usize::MAX,
                },
            )?;
            if batch.is_empty() && batch.next == cur.pos {
                break;
            }
            cur = Cursor {
                pos: batch.next,
                seq: batch.next_seq,
            };
        }
        Ok(cur)
    }

    /// A cursor at the oldest record still held.
    pub fn cursor_first(&self) -> Cursor {
        let base = self.log.first_seq();
        Cursor {
            pos: Position {
                segment_base: base,
                offset: SEGMENT_HEADER_BYTES as u64,
            },
            seq: base,
        }
    }

    /// Sequence number of the first record that arrived at or after `ts_ms`,
    /// or the next sequence number if none has.
    pub fn seq_at_time(&self, ts_ms: i64) -> Result<u64> {
        // The active index also covers records written but not yet visible;
        // an answer past the visible end means "no visible record yet".
        let visible = self.log.visible_next_seq();
        self.seq_at_time_unbounded(ts_ms).map(|s| s.min(visible))
    }

    fn seq_at_time_unbounded(&self, ts_ms: i64) -> Result<u64> {
        let segs: Vec<Seg> = self
            .log
            .segment_bounds()
            .into_iter()
            .map(|(base_seq, end_seq)| Seg { base_seq, end_seq })
            .collect();
        // Binary search over segments by their last arrival time.
        let (mut lo, mut hi) = (0usize, segs.len());
        while lo < hi {
            let mid = (lo + hi) / 2;
            let s = &segs[mid];
            let max = match s.end_seq {
                Some(end) => self.sealed_max_arrival(s.base_seq, end)?,
                None => {
                    let st = lock(&self.shared.state);
                    // An active segment without records counts as holding
                    // the future, which keeps the search's predicate monotonic.
                    if st.active.base_seq == s.base_seq && !st.active.entries.is_empty() {
                        st.active.max_arrival_ms
                    } else {
                        i64::MAX
                    }
                }
            };
            if max < ts_ms {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        let Some(s) = segs.get(lo) else {
            return Ok(self.log.visible_next_seq());
        };
        let entry = if s.end_seq.is_none() {
            // Avoid copying the active index: search under the lock.
            let st = lock(&self.shared.state);
            if st.active.base_seq == s.base_seq {
                st.active.floor_time(ts_ms)
            } else {
                drop(st);
                self.index_of(s.base_seq, s.end_seq)?.floor_time(ts_ms)
            }
        } else {
            self.index_of(s.base_seq, s.end_seq)?.floor_time(ts_ms)
        };
        let mut cur = match entry {
            Some(e) => Cursor {
                pos: Position {
                    segment_base: s.base_seq,
                    offset: e.offset as u64,
                },
                seq: e.seq,
            },
            None => return Ok(self.log.visible_next_seq().min(s.end_seq.unwrap_or(u64::MAX))),
        };
        loop {
            // Entries are at most one interval apart, so the answer is
            // normally within the first interval's worth of frames. The read
            // stops at the answer: verifying the checksums of the whole
            // interval instead doubled the lookup's cost.
            let batch = self.log.read_until(
                cur.pos,
                cur.seq,
                ReadLimits {
                    max_records: TIME_SCAN_RECORDS_MAX,
                    max_bytes: INDEX_INTERVAL_BYTES as usize,
                },
                |_, arrival_ms| arrival_ms >= ts_ms,
            )?;
            if let Some(r) = batch.iter().find(|r| r.arrival_ms >= ts_ms) {
                return Ok(r.seq);
            }
            if batch.is_empty() && batch.next == cur.pos {
                return Ok(batch.next_seq);
            }
            cur = Cursor {
                pos: batch.next,
                seq: batch.next_seq,
            };
        }
    }

    /// Reads from `cursor`, advancing it. Returns an empty batch at the end of
    /// the visible log. Crosses segment boundaries.
    pub fn read(&self, cursor: &mut Cursor, limits: ReadLimits) -> Result<ReadBatch> {
        loop {
            let batch = self.log.read_at(cursor.pos, cursor.seq, limits)?;
            let moved = batch.next != cursor.pos;
            cursor.pos = batch.next;
            cursor.seq = batch.next_seq;
            if !batch.is_empty() || !moved {
                return Ok(batch);
            }
        }
    }

    /// Deletes sealed segments whose records all arrived before `cutoff_ms`.
    /// Returns the number deleted.
    pub fn remove_older_than(&self, cutoff_ms: i64) -> Result<usize> {
        let mut before = None;
        for s in self.log.segments() {
            let Some(end) = s.end_seq else { break };
            if self.sealed_max_arrival(s.base_seq, end)? >= cutoff_ms {
                break;
            }
            before = Some(end);
        }
        let Some(before) = before else { return Ok(0) };
        let n = self.log.remove_segments_before(before)?;
        let fs = self.log.fs();
        for name in fs.read_dir(self.log.dir()).unwrap_or_default() {
            if let Some(digits) = name.strip_suffix(INDEX_FILE_SUFFIX) {
                if digits.parse::<u64>().is_ok_and(|b| b < before) {
                    let _ = fs.remove_file(&self.log.dir().join(&name));
                }
            }
        }
        Ok(n)
    }

    /// The oldest sealed segment: `(end_seq, arrival time of its last record)`.
    pub fn oldest_sealed(&self) -> Result<Option<(u64, i64)>> {
        let Some((base, Some(end))) = self.log.segment_bounds().first().copied() else {
            return Ok(None);
        };
        Ok(Some((end, self.sealed_max_arrival(base, end)?)))
    }

    /// Loads (and rebuilds where needed) the index of every sealed segment.
    pub fn check_indexes(&self) -> Result<()> {
        for s in self.log.segments() {
            if let Some(end) = s.end_seq {
                self.sealed_index(s.base_seq, end)?;
            }
        }
        Ok(())
    }
}

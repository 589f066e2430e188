//! A log: one directory of segment files, with group-committed appends,
//! recovery on open, zero-copy reads, retention and verification.

use byteorder::ByteOrder;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock, Weak};
use std::task::{Context, Poll, Waker};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};
use crate::format::*;
use crate::frame::{self, Decoded, Record, RecordIn};
use crate::fs::{FileHandle, FileSystem, LockGuard, Mapping};
use crate::segment::{
    parse_recycled_file_name, parse_segment_file_name, recycled_file_name, segment_file_name, SegmentHeader,
};

/// When an append is acknowledged relative to `fdatasync`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum SyncPolicy {
    /// An append returns only after an `fdatasync` covering it completed.
    /// Appends that arrive while a sync is in flight share the next one
    /// (group commit); a lone append is synced at once.
    #[default]
    Always,
    /// Appends return after the write; a background thread syncs every
    /// `n` milliseconds. A crash loses at most that window.
    IntervalMs(u64),
    /// Never sync appends (benchmarks). Segments are still synced when rolled.
    Never,
}

/// What recovery does with a damaged tail of the active segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum RecoveryPolicy {
    /// Truncate an incomplete or checksum-failing tail of the active segment,
    /// provided no later frame proves that the damaged bytes had been synced.
    #[default]
    TolerateTornTail,
    /// Refuse to open a log whose active segment has a damaged tail.
    Strict,
}

/// How much of the active segment recovery verifies against its checksums
/// before the log opens. Readers verify every frame they serve either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OpenCheck {
    /// Every frame: damage anywhere in the active segment is found (and
    /// quarantined) before the log opens.
    #[default]
    Full,
    /// Only the frames a crash can have torn: those after the last sync
    /// that a valid frame near the end records. The synced prefix before
    /// them is walked frame by frame (lengths, flags, sequence numbers,
    /// arrival times), which is all that building the index and finding
    /// the end need, and its checksums are left to
    /// [`Log::check_deferred`], which the caller runs after open and which
    /// quarantines the log if it finds damage. This halves the CPU time of
    /// an open after a crash, when the active segments are large.
    Deferred,
}

/// Settings of a log.
#[derive(Debug, Clone)]
pub struct LogOptions {
    pub sync: SyncPolicy,
    pub recovery: RecoveryPolicy,
    /// How much of the active segment is verified before the log opens.
    pub open_check: OpenCheck,
    /// Roll to a new segment once the active one would exceed this size.
    pub segment_bytes_max: u64,
    /// Roll once the active segment is older than this (and holds records).
    pub segment_age_max_ms: u64,
    /// Largest data blob accepted.
    pub data_bytes_max: usize,
    /// Segment mappings kept open at once (least recently used are dropped).
    pub mapped_segments_max: usize,
    /// Preallocation step.
    pub preallocate_bytes: u64,
    /// Sequence number of the first record of a new, empty log.
    pub first_seq: u64,
    /// Fsync the active segment when opening. A caller that opens many logs
    /// may turn this off and make them all durable with one
    /// [`FileSystem::sync_filesystem`] before serving any reader.
    pub sync_on_open: bool,
    /// Under `Always`, share syncs with other logs on the same file system
    /// through one `syncfs` per group instead of this log's own `fdatasync`.
    pub sync_coordinator: Option<Arc<crate::sync::SyncCoordinator>>,
    /// The coordinator of every `syncfs` run on this log's file system by
    /// its owner (the engine): after each `fdatasync` of a segment that
    /// makes appends durable, the log waits for the `syncfs` calls in flight
    /// ([`crate::SyncCoordinator::settled`]) and counts the sync as failed
    /// if one failed. A failing `syncfs` drops the dirty pages of every
    /// file and may report it to its own caller only: a segment sync that
    /// ran meanwhile may have written nothing.
    pub syncfs_watch: Option<Arc<crate::sync::SyncCoordinator>>,
    /// Threads that run group syncs for [`Log::durable`] waiters, so that
    /// async appenders block no thread on `fdatasync`.
    pub sync_pool: Option<Arc<crate::sync::SyncPool>>,
    /// Share device cache flushes with other logs: a group that only
    /// overwrites settled space of the active segment (written and covered
    /// by an `fdatasync` of the file before: zeros written ahead, or a
    /// recycled file) is written back (`sync_file_range`) and made durable
    /// by the next flush the coordinator runs for any of its logs, instead
    /// of this log's own `fdatasync`. Every other group, and the first of
    /// each segment, still syncs the file. Only set it for a file system
    /// whose [`FileSystem::shares_flushes`] says yes.
    pub flush_coordinator: Option<Arc<crate::sync::FlushCoordinator>>,
    /// The engine's journal (see [`crate::journal`]): under
    /// [`SyncPolicy::Always`], an append of at most `JOURNAL_WRITE_BYTES_MAX`
    /// frame bytes is made durable by the journal's shared sync instead of an
    /// `fdatasync` of the segment, once every earlier append is durable or
    /// journaled. The log's directory must lie under the journal's root
    /// (otherwise nothing is journaled), and [`crate::Journal::redo_found`] must
    /// have redone the journal before the log opens.
    pub journal: Option<Arc<crate::journal::Journal>>,
    /// How much of the log's most recently synced data stays in the page
    /// cache: after each sync, the written pages further behind the durable
    /// end are dropped (`posix_fadvise(DONTNEED)`; in the active segment in
    /// steps of `CACHE_RELEASE_STEP_BYTES`, in the segments sealed since the
    /// log opened as the window moves past them; pages a reader has mapped
    /// stay). `None` (the default) leaves the cache to the kernel. Under
    /// `SyncPolicy::Never` the durable end moves only at rolls and explicit
    /// syncs, and so does the dropping.
    ///
    /// Why: a log writes new pages for every byte. On a virtual machine
    /// whose free memory the host has taken back, each new page costs a
    /// fault in the host on first touch, while pages dropped and at once
    /// reused do not (measured with 4 writers syncing 1 MiB writes: 1,145
    /// MiB/s keeping every page, 1,750 MiB/s dropping them 32 MiB behind;
    /// once the cache has filled the memory the kernel's reclaim reuses
    /// pages as well and the two are alike; docs/PERFORMANCE.md). It also
    /// keeps the log's writes from pushing other data out of the cache.
    /// Readers further behind than the window read from the disk.
    pub cache_window_bytes: Option<u64>,
    /// How many sealed segments removed by retention the log keeps for
    /// reuse (as `<base:020>.free`) instead of unlinking them; a roll then
    /// renames one into place as the next segment and writes its header
    /// over the old one. Writes into a recycled file land on allocated,
    /// written blocks, so its syncs convert no extents and journal no
    /// allocation. Only files at least half of `segment_bytes_max` long are
    /// kept, and one is reused only once no reader holds a map of it. The
    /// files count as the log's disk space. 0 (the default) unlinks, as
    /// retention always did. At most `RECYCLE_SEGMENTS_LIMIT`.
    pub recycle_segments_max: usize,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            sync: SyncPolicy::Always,
            recovery: RecoveryPolicy::TolerateTornTail,
            open_check: OpenCheck::Full,
            segment_bytes_max: SEGMENT_BYTES_DEFAULT_MAX,
            segment_age_max_ms: SEGMENT_AGE_DEFAULT_MAX_MS,
            data_bytes_max: RECORD_DATA_BYTES_DEFAULT_MAX,
            mapped_segments_max: MAPPED_SEGMENTS_DEFAULT_MAX,
            preallocate_bytes: SEGMENT_PREALLOCATE_BYTES,
            first_seq: 0,
            sync_on_open: true,
            sync_coordinator: None,
            syncfs_watch: None,
            sync_pool: None,
            flush_coordinator: None,
            journal: None,
            cache_window_bytes: None,
            recycle_segments_max: 0,
        }
    }
}

impl LogOptions {
    fn validate(&self) -> Result<()> {
        if !(SEGMENT_BYTES_LIMIT_MIN..=SEGMENT_BYTES_LIMIT - APPEND_BYTES_MAX as u64)
            .contains(&self.segment_bytes_max)
        {
            return Err(Error::InvalidArgument(format!(
                "segment_bytes_max {} is outside {}..={}",
                self.segment_bytes_max,
                SEGMENT_BYTES_LIMIT_MIN,
                SEGMENT_BYTES_LIMIT - APPEND_BYTES_MAX as u64
            )));
        }
        if !(RECORD_DATA_BYTES_LIMIT_MIN..=RECORD_DATA_BYTES_LIMIT).contains(&self.data_bytes_max) {
            return Err(Error::InvalidArgument(format!(
                "data_bytes_max {} is outside {}..={} (Kinesis allows 1024 to 10240 KiB)",
                self.data_bytes_max, RECORD_DATA_BYTES_LIMIT_MIN, RECORD_DATA_BYTES_LIMIT
            )));
        }
        if self.recycle_segments_max > RECYCLE_SEGMENTS_LIMIT {
            return Err(Error::InvalidArgument(format!(
                "recycle_segments_max {} is above {RECYCLE_SEGMENTS_LIMIT}",
                self.recycle_segments_max
            )));
        }
        if self.mapped_segments_max == 0 {
            return Err(Error::InvalidArgument(
                "mapped_segments_max must be at least 1".into(),
            ));
        }
        if let SyncPolicy::IntervalMs(0) = self.sync {
            return Err(Error::InvalidArgument(
                "sync interval must be at least 1 ms".into(),
            ));
        }
        Ok(())
    }
}

/// Where a record was placed, reported to an [`AppendObserver`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placed {
    pub seq: u64,
    pub offset: u64,
    pub arrival_ms: i64,
    pub frame_len: u32,
}

/// Receives every placement of records (including those found by recovery on
/// open) and every change of the segment set, in log order. Calls happen
/// under the writer's lock, so they must be quick and must not call back
/// into the log's append path.
pub trait AppendObserver: Send + Sync + fmt::Debug {
    /// Records were written to (or recovered in) the segment `segment_base`.
    fn placed(&self, segment_base: u64, records: &[Placed]);
    /// The segment `segment_base` was sealed; it holds sequence numbers up to
    /// `end_seq` (exclusive) and its frames end at `end_offset`.
    fn sealed(&self, log: &SealedInfo);
    /// The segment `segment_base` was deleted by retention.
    fn removed(&self, segment_base: u64);
    /// Under [`OpenCheck::Deferred`], recovery asks where in the active
    /// segment `segment_base` (whose header says `file_id`) it may start
    /// reading. An observer that answers can give the placements of every
    /// frame below the point (from a checkpoint it made), all of them
    /// durable when it made it; recovery then walks only the frames after
    /// it and leaves the checksums below it to [`Log::check_deferred`]. It
    /// says so with [`AppendObserver::resume_used`]; a point it cannot use
    /// (one past the end of the file, say) it ignores and reads from the
    /// header. The default answers nothing.
    fn resume_point(&self, _segment_base: u64, _file_id: u64) -> Option<ResumePoint> {
        None
    }
    /// Recovery uses the point [`AppendObserver::resume_point`] offered for
    /// `segment_base`: from now on the observer holds the placements below
    /// it, and recovery reports only those after it.
    fn resume_used(&self, _segment_base: u64) {}
    /// The active segment `segment_base` is durable up to byte `offset`:
    /// the records before the point are described by `point`. Called after
    /// each sync that moved the point, outside the log's locks, on the
    /// thread that synced: the next group's sync waits for it, so slow work
    /// (a checkpoint's fsyncs) belongs on another thread.
    fn durable(&self, _segment_base: u64, _point: &ResumePoint) {}
}

/// A point in an active segment between two frames: where its frames end
/// after the record before `next_seq`, which arrived at `last_arrival_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResumePoint {
    pub file_id: u64,
    pub offset: u64,
    pub next_seq: u64,
    pub last_arrival_ms: i64,
    /// For a point offered to recovery: the offset and sequence number of a
    /// frame below it (the checkpoint's last index entry). Recovery uses
    /// the point only if that frame passes its checksum and a walk from it
    /// lands exactly on the point, with the point's sequence number and the
    /// arrival time of the frame before it: a checkpoint left over from
    /// before the file was cut, or otherwise out of step with it, is not
    /// used.
    pub anchor: Option<(u64, u64)>,
}

/// A sealed segment, as reported to observers.
#[derive(Debug, Clone)]
pub struct SealedInfo {
    pub dir: PathBuf,
    pub segment_base: u64,
    pub end_seq: u64,
    pub end_offset: u64,
    pub file_id: u64,
    pub fs: Arc<dyn FileSystem>,
}

/// An observer that ignores everything (tests and tools).
#[derive(Debug)]
pub struct NoObserver;

impl AppendObserver for NoObserver {
    fn placed(&self, _: u64, _: &[Placed]) {}
    fn sealed(&self, _: &SealedInfo) {}
    fn removed(&self, _: u64) {}
}

/// What an append assigned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Sequence number of the first record; the others follow contiguously.
    pub first_seq: u64,
    pub count: u32,
    /// Arrival time actually stored (made non-decreasing by the log).
    pub first_arrival_ms: i64,
    pub last_arrival_ms: i64,
}

/// An append written but not yet known durable (see
/// [`Log::append_deferred`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pending {
    mark: Watermark,
    ticket: u64,
}

/// A position in the log: a segment and a byte offset in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    pub segment_base: u64,
    pub offset: u64,
}

/// Counts and limits of one read.
#[derive(Debug, Clone, Copy)]
pub struct ReadLimits {
    pub max_records: usize,
    pub max_bytes: usize,
}

/// The active segment's space (see [`Log::active_space`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActiveSpace {
    /// End of the frames written.
    pub written: u64,
    /// End of the zeros written ahead of them (`written` when none are).
    pub zeroed: u64,
    /// End of the space reserved for the segment.
    pub preallocated: u64,
}

/// Public description of one segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentSummary {
    pub base_seq: u64,
    /// Exclusive end (`None` for the active segment).
    pub end_seq: Option<u64>,
    pub path: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Watermark {
    next_seq: u64,
    segment_base: u64,
    offset: u64,
    /// The segment's file id and the arrival time of the record before
    /// `next_seq`: what an observer's checkpoint of the point needs.
    file_id: u64,
    last_arrival_ms: i64,
}

#[derive(Debug)]
struct Active {
    base_seq: u64,
    file_id: u64,
    created_ms: i64,
    file: Arc<dyn FileHandle>,
    path: PathBuf,
    len: u64,
    allocated: u64,
    /// Bytes below this offset have been written (frames, or zeros written
    /// ahead of them): `fdatasync`s of writes below it convert no extents.
    /// Zeros are only ever written at or above `len`, never over a frame.
    zeroed: u64,
    /// Where the writer next decides whether to zero-fill: the end of the
    /// zeros while it does, `ZERO_FILL_DECIDE_BYTES` further while it does
    /// not.
    decide_at: u64,
    /// A recycled file: the bytes after `len` are an older segment's frames,
    /// not zeros, so every write ends with `RECYCLED_END_MARKER_BYTES` zeros
    /// and no zeros are written ahead.
    recycled: bool,
    /// A page boundary: the next early write-back (under
    /// `SyncPolicy::Always`) starts here. Each one ends at the last whole
    /// page of its append, so the page two large appends share goes to the
    /// device with the next one's pages rather than as a 4 KiB request of
    /// its own at the group's sync (a virtual disk counts requests); a
    /// large append that would hand over less than a step
    /// (`Log::early_write_back_step`) leaves it where it is, for the next
    /// large append's call. Any
    /// other append moves it past its own bytes: a small one may be
    /// acknowledged through the journal and not yet synced in the segment,
    /// and a failed write-back must never take such bytes with it. Syncs
    /// wait for the early write-backs in flight before they acknowledge
    /// anything (`SyncState::early_write_backs`), since a range may hold
    /// the tail of an earlier append that such a sync covers.
    early_write_back_from: u64,
}

impl Active {
    /// Records that the file was cut to `len` bytes (or that its space
    /// beyond `len` may no longer be preallocated or zeroed).
    fn cut_to(&mut self, len: u64) {
        // Nothing of an older segment is left after a cut.
        self.recycled = false;
        self.allocated = self.allocated.min(len);
        self.zeroed = self.zeroed.min(len);
        self.decide_at = self.decide_at.min(len);
        self.early_write_back_from = self.early_write_back_from.min(page_ceil(len));
    }
}

/// `offset` rounded up to a whole page of the page cache.
fn page_ceil(offset: u64) -> u64 {
    offset.div_ceil(CACHE_PAGE_BYTES) * CACHE_PAGE_BYTES
}

/// `offset` rounded down to a whole page of the page cache.
fn page_floor(offset: u64) -> u64 {
    offset / CACHE_PAGE_BYTES * CACHE_PAGE_BYTES
}

impl Writer {
    /// The writer of a segment that holds no record yet.
    fn starting(active: Active, last_arrival_ms: i64) -> Writer {
        Writer {
            next_seq: active.base_seq,
            last_arrival_ms,
            last_file_id: active.file_id,
            active,
            buf: Vec::new(),
            placed: Vec::new(),
        }
    }
}

#[derive(Debug)]
struct Writer {
    active: Active,
    next_seq: u64,
    last_arrival_ms: i64,
    last_file_id: u64,
    buf: Vec<u8>,
    placed: Vec<Placed>,
}

#[derive(Debug)]
struct SyncState {
    /// Threads blocked on `Inner::sync_cv` (see [`Inner::wait_sync`]).
    blocked: usize,
    written: Watermark,
    durable: Watermark,
    syncing: bool,
    poisoned: Option<String>,
    quarantine: Option<(PathBuf, u64)>,
    /// The file the next group sync covers (the active segment).
    active_file: Arc<dyn FileHandle>,
    /// Tasks awaiting [`Durable`]: the `next_seq` each needs durable.
    waiters: Vec<(u64, Waker)>,
    /// A sync pool job for this log is queued or running.
    queued: bool,
    /// The highest `next_seq` a [`Durable`] of this log was made for,
    /// polled yet or not. A producer that pipelines polls only its oldest
    /// put; the puts behind it are written and will be awaited. The sync
    /// job keeps syncing for them rather than ending when the polled ones
    /// are durable, only to be queued again (a wake-up of a writer and of
    /// a pool thread later) once the writer polls the next.
    awaited_through: u64,
    /// Moving average of the bytes one group sync makes durable (weight
    /// 1/8 for the newest), for the writer's zero-fill decision.
    group_bytes_avg: u64,
    /// The active segment's space (the segment `written` is in), for
    /// [`LogOptions::flush_coordinator`]: bytes below `space_written` have
    /// been written (frames, zeros ahead of them, or a recycled file's
    /// older frames).
    space_written: u64,
    /// Bytes past `written.offset` a group must make durable too: a
    /// recycled file's end marker.
    end_marker: u64,
    /// Bytes below this offset of the active segment are settled: written
    /// and covered by an `fdatasync` of the file since, so overwrites there
    /// need no metadata. Raised by each group `fdatasync` to the
    /// `space_written` it began with; lowered by every cut.
    settled: u64,
    /// Cuts of the active segment (and rolls) so far: a sync raises
    /// `settled` only when none happened while it ran.
    cuts: u64,
    /// The `next_seq` after the last append queued in the journal: its
    /// completion makes everything before it durable (or poisons the log).
    journal_through: u64,
    /// The `next_seq` after the last append not journaled: until it is
    /// durable (by a sync of the segment), no append is journaled, so that
    /// a journal completion never claims an unsynced append durable.
    unjournaled_through: u64,
    /// The `next_seq` after the last journaled append the journal has
    /// completed (made durable or failed).
    journal_done: u64,
    /// Where the last journaled append ended: a poisoned log keeps its bytes
    /// until the journal has decided on them.
    journal_last: Option<Watermark>,
    /// Early write-backs (`FileHandle::start_write_back`) started and not
    /// yet returned. A failed one may drop pages without an error for a
    /// later sync, and its range may hold the tail of an earlier append
    /// (the page two appends share): a sync that ran meanwhile waits for
    /// them before it acknowledges anything, and finds the log poisoned if
    /// one failed (`Log::early_write_backs_settled`). Each call has a
    /// ticket (`early_write_back_tickets` counts them); a sync waits only
    /// for the tickets issued before it ended, so a stream of new calls
    /// cannot hold it up.
    early_write_backs: Vec<u64>,
    early_write_back_tickets: u64,
}

impl SyncState {
    /// Registers a task awaiting durability up to `target` (once per waker:
    /// a future is polled again after each wake).
    fn add_waiter(&mut self, target: u64, waker: &Waker) {
        if !self
            .waiters
            .iter()
            .any(|(t, w)| *t == target && w.will_wake(waker))
        {
            self.waiters.push((target, waker.clone()));
        }
    }

    /// Whether the journaled append that ends before `target` is still
    /// undecided by the journal.
    fn journal_pending(&self, target: u64) -> bool {
        target <= self.journal_through && self.journal_done < target
    }

    /// The outcome for a waiter on a poisoned log once nothing it waits for
    /// is undecided: an append that became durable before the failure (by
    /// a sync of its segment, a roll, or the journal, which redoes it after
    /// a crash) succeeded, anything else failed. The durable mark never
    /// moves back, and no cut goes below it, so such an append stays; an
    /// answer of "failed" for it would only make its writer put it twice.
    fn poisoned_outcome(&self, target: u64, cause: &str) -> Result<()> {
        if self.durable.next_seq >= target {
            Ok(())
        } else {
            Err(Error::Poisoned {
                cause: cause.to_string(),
            })
        }
    }
}

/// Takes the wakers whose records are now durable (all of them once the log
/// is poisoned: they must learn of it).
fn take_ready(st: &mut SyncState) -> Vec<Waker> {
    if st.waiters.is_empty() {
        return Vec::new();
    }
    let durable = st.durable.next_seq;
    let all = st.poisoned.is_some();
    let mut ready = Vec::new();
    st.waiters.retain(|(target, w)| {
        if all || *target <= durable {
            ready.push(w.clone());
            false
        } else {
            true
        }
    });
    ready
}

/// Whether an async waiter needs a sync of the segment: one that is not
/// durable and not in the journal either. A [`Durable`] not yet polled
/// counts too (`SyncState::awaited_through`).
fn needs_segment_sync(st: &SyncState) -> bool {
    let durable = st.durable.next_seq;
    let needs = |t: u64| t > durable && t > st.journal_through;
    needs(st.awaited_through) || st.waiters.iter().any(|(t, _)| needs(*t))
}

/// Wakes tasks outside the log's locks (a wake may take the runtime's locks).
fn wake(ready: Vec<Waker>) {
    for w in ready {
        w.wake();
    }
}

/// Whether a log's sync job, about to be queued, may run on a bulk thread of
/// the sync pool: `crate::sync::BULK_SYNC_GROUP_BYTES_MIN` or more written
/// and not yet durable (in a segment begun since the last sync, its frames:
/// the roll synced the one before). The kind is fixed when the job is
/// queued; the job then syncs its log's groups until no waiter is left.
fn bulk_group(st: &SyncState) -> bool {
    let pending = if st.written.segment_base == st.durable.segment_base {
        st.written.offset.saturating_sub(st.durable.offset)
    } else {
        st.written.offset.saturating_sub(SEGMENT_HEADER_BYTES as u64)
    };
    pending >= crate::sync::BULK_SYNC_GROUP_BYTES_MIN
}

/// Queues the log's sync job on its pool: the caller found none queued and
/// a waiter that needs one. Submits outside the log's lock, which it takes
/// by value. Gives the job back when the pool cannot run it (no thread can
/// start): the caller then syncs on its own thread, rather than leave the
/// job marked queued with no thread to run it.
fn queue_pool_job(inner: &Arc<Inner>, mut st: MutexGuard<'_, SyncState>) -> Option<Box<dyn FnOnce() + Send>> {
    let pool = inner.opts.sync_pool.as_ref()?;
    st.queued = true;
    let bulk = bulk_group(&st);
    drop(st);
    let job_inner = inner.clone();
    pool.submit(Box::new(move || run_pool_sync(job_inner)), bulk)
        .err()
}

/// The sync pool's job for one log: group syncs until no async waiter is left
/// undurable.
fn run_pool_sync(inner: Arc<Inner>) {
    let log = Log { inner, flusher: None };
    let mut st = lock(&log.inner.sync);
    loop {
        let needed = needs_segment_sync(&st);
        if st.poisoned.is_some() || !needed {
            st.queued = false;
            let ready = take_ready(&mut st);
            drop(st);
            wake(ready);
            return;
        }
        if st.syncing {
            // A blocking appender or a roll is syncing; its end wakes us.
            st = log.inner.wait_sync(st);
            let ready = take_ready(&mut st);
            if !ready.is_empty() {
                drop(st);
                wake(ready);
                st = lock(&log.inner.sync);
            }
            continue;
        }
        // Still queued while leading, so no second job is queued meanwhile.
        st = log.lead_sync(st, false);
    }
}

/// Resolves once an append is durable; see [`Log::durable`].
#[derive(Debug)]
#[must_use = "the append is not known durable until this resolves"]
pub struct Durable {
    /// `None` when there is nothing to wait for.
    inner: Option<Arc<Inner>>,
    target: u64,
}

impl Future for Durable {
    type Output = Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let this = self.get_mut();
        let Some(inner) = &this.inner else {
            return Poll::Ready(Ok(()));
        };
        let mut st = lock(&inner.sync);
        if let Some(cause) = &st.poisoned {
            // A journaled append is decided by the journal, whose sync may
            // still make it durable; the decision wakes every waiter.
            if !st.journal_pending(this.target) {
                let outcome = st.poisoned_outcome(this.target, cause);
                drop(st);
                if outcome.is_err() {
                    // As in `Log::settle_poisoned`: a failed append's bytes
                    // must not outlive the answer. This takes the writer
                    // lock on the runtime's thread, on a failure path only.
                    Log {
                        inner: inner.clone(),
                        flusher: None,
                    }
                    .discard_undurable();
                }
                return Poll::Ready(outcome);
            }
            st.add_waiter(this.target, cx.waker());
            return Poll::Pending;
        }
        if st.durable.next_seq >= this.target {
            return Poll::Ready(Ok(()));
        }
        if inner.opts.sync_pool.is_none() {
            drop(st);
            let log = Log {
                inner: inner.clone(),
                flusher: None,
            };
            return Poll::Ready(log.wait_durable(this.target));
        }
        let target = this.target;
        st.add_waiter(target, cx.waker());
        // A journaled append is completed by the journal's thread.
        if !st.queued && target > st.journal_through {
            if let Some(job) = queue_pool_job(inner, st) {
                // Synced here, blocking this thread: wake to see it.
                job();
                cx.waker().wake_by_ref();
            }
        }
        Poll::Pending
    }
}

#[derive(Debug, Clone)]
struct SegmentEntry {
    path: PathBuf,
    /// Exclusive end sequence; `None` while the segment is active.
    end_seq: Option<u64>,
}

/// A segment made readable.
#[derive(Debug)]
pub struct MappedSegment {
    base_seq: u64,
    file_id: u64,
    path: PathBuf,
    map: Mapping,
    /// For snapshot mappings: bytes valid when the snapshot was taken.
    valid_upto: u64,
    live: bool,
    /// Mapped after the segment was sealed: holds all of its frames.
    complete: bool,
}

impl MappedSegment {
    pub fn bytes(&self) -> &[u8] {
        self.map.as_slice()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn file_id(&self) -> u64 {
        self.file_id
    }

    pub fn base_seq(&self) -> u64 {
        self.base_seq
    }
}

#[derive(Debug, Default)]
struct MapCache {
    maps: HashMap<u64, (Arc<MappedSegment>, u64)>,
    tick: u64,
    /// Every map made of each listed segment, cached or not: retention takes
    /// a segment's list when it removes the segment, and a file kept for
    /// reuse is written again only once all of them are gone (see
    /// [`Recyclable`]).
    live: HashMap<u64, Vec<Weak<MappedSegment>>>,
}

/// A sealed segment that retention kept for reuse.
#[derive(Debug)]
struct Recyclable {
    /// `<base:020>.free`.
    path: PathBuf,
    /// The file id of the frames it holds.
    file_id: u64,
    /// Maps made while it was a segment. The file is not written while any
    /// of them lives: their readers may still be reading its frames.
    maps: Vec<Weak<MappedSegment>>,
}

impl Recyclable {
    fn unmapped(&self) -> bool {
        self.maps.iter().all(|m| m.strong_count() == 0)
    }
}

struct Inner {
    fs: Arc<dyn FileSystem>,
    dir: PathBuf,
    opts: LogOptions,
    observer: Arc<dyn AppendObserver>,
    writer: Mutex<Writer>,
    sync: Mutex<SyncState>,
    /// Blocking waiters of `sync` wait here, through [`Inner::wait_sync`]
    /// only; changes that may release them call [`Inner::notify_sync`].
    sync_cv: Condvar,
    segments: RwLock<BTreeMap<u64, SegmentEntry>>,
    maps: Mutex<MapCache>,
    /// What [`Log::check_deferred`] has still to verify.
    deferred: Mutex<Option<DeferredCheck>>,
    /// Held by a running [`Log::check_deferred`], so that a second caller
    /// waits for it and then finds the work done, rather than repeating it.
    deferred_running: Mutex<()>,
    /// What has been dropped from the page cache (see
    /// `LogOptions::cache_window_bytes`).
    cache: Mutex<CacheRelease>,
    /// Files kept for reuse, oldest first (see
    /// `LogOptions::recycle_segments_max`).
    pool: Mutex<VecDeque<Recyclable>>,
    /// Whether a segment's removal may not be durable yet: a directory
    /// sync after one failed, or (at open) an earlier process may have
    /// left one so. No later segment may be removed until a directory sync
    /// succeeds (see [`Log::remove_segments_before`]). Held for a whole
    /// retention pass, so that two passes never interleave.
    removal_unsynced: Mutex<bool>,
    /// This log's place in the engine's journal, when it journals.
    journal: std::sync::OnceLock<JournalLink>,
    _lock: Box<dyn LockGuard>,
}

impl Inner {
    /// Waits on `sync_cv` until notified, counted in `SyncState::blocked`.
    fn wait_sync<'a>(&self, mut st: MutexGuard<'a, SyncState>) -> MutexGuard<'a, SyncState> {
        st.blocked += 1;
        let mut st = self.sync_cv.wait(st).unwrap_or_else(|p| p.into_inner());
        st.blocked -= 1;
        st
    }

    /// Wakes the threads blocked on `sync_cv`, if any. `st` is the locked
    /// state the releasing change was made in: a thread that blocks later
    /// sees that change before it waits, so skipping the call when nobody
    /// is blocked loses no wake-up. The skip matters on the journal's
    /// thread, which calls this once per completed append while async
    /// waiters (wakers, not blocked threads) are the rule; the standard
    /// condition variable makes a system call on every notify.
    fn notify_sync(&self, st: &SyncState) {
        if st.blocked > 0 {
            self.sync_cv.notify_all();
        }
    }
}

/// How a log writes to the engine's journal.
struct JournalLink {
    journal: Arc<crate::journal::Journal>,
    client_id: u64,
    client: Arc<dyn crate::journal::JournalClient>,
    /// Shared with `client`: set when the log is poisoned (it outlives the
    /// log, for checkpoints after it closed).
    poisoned_flag: Arc<std::sync::atomic::AtomicBool>,
}

impl fmt::Debug for JournalLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JournalLink")
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

/// A log as the journal's checkpoints see it: gone once the log is closed,
/// and then whether it was poisoned when it closed.
struct JournalClientOf {
    log: std::sync::Weak<Inner>,
    poisoned_flag: Arc<std::sync::atomic::AtomicBool>,
}

impl crate::journal::JournalClient for JournalClientOf {
    fn checkpoint(&self) -> Option<std::result::Result<(), String>> {
        let Some(inner) = self.log.upgrade() else {
            // A sync of a poisoned log's file proves nothing (its failure
            // was reported once, to the log).
            if self.poisoned_flag.load(std::sync::atomic::Ordering::Acquire) {
                return Some(Err("a log closed while poisoned".into()));
            }
            return None;
        };
        Some(Log { inner, flusher: None }.checkpoint_for_journal())
    }
}

/// How far a log's written pages have been dropped from the page cache.
#[derive(Debug)]
struct CacheRelease {
    /// The active segment: its base, file, and the offset below which its
    /// pages have been dropped.
    base: u64,
    file: Arc<dyn FileHandle>,
    upto: u64,
    /// Segments sealed since the log opened whose pages are not all dropped
    /// yet, oldest first: each one's file, how far it is dropped, and its
    /// length. Their tails are within the window until enough newer data
    /// is durable.
    sealed: VecDeque<SealedCache>,
    /// Bytes this log has advised the kernel to drop, in all.
    advised: u64,
}

#[derive(Debug)]
struct SealedCache {
    /// The segment's base, so that retention can forget it (a kept file may
    /// become the active segment, whose pages must not be dropped).
    base: u64,
    file: Arc<dyn FileHandle>,
    upto: u64,
    len: u64,
}

impl fmt::Debug for Inner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Log")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// The background thread of the interval policy and its stop signal.
type Flusher = (Arc<(Mutex<bool>, Condvar)>, JoinHandle<()>);

/// An open log directory. Cheap to share behind an `Arc`; appends from many
/// threads are group-committed.
#[derive(Debug)]
pub struct Log {
    inner: Arc<Inner>,
    flusher: Option<Flusher>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned std mutex only means another thread panicked while holding
    // it; the protected state is plain data kept consistent between
    // statements, so continuing is safe and better than cascading panics.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Milliseconds since the Unix epoch from the system clock.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// A batch of records read from one segment; the records borrow the mapped
/// file (zero copy). Their checksums were verified by the read.
#[derive(Debug)]
pub struct ReadBatch {
    segment: Arc<MappedSegment>,
    records: Vec<RecordSpan>,
    /// Where the next read continues.
    pub next: Position,
    /// Sequence number the next read expects.
    pub next_seq: u64,
}

#[derive(Debug, Clone, Copy)]
struct RecordSpan {
    seq: u64,
    arrival_ms: i64,
    offset: u32,
    frame_len: u32,
    key_len: u16,
    flags: u16,
}

impl ReadBatch {
    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The records, borrowing the mapped segment.
    pub fn iter(&self) -> impl Iterator<Item = Record<'_>> + '_ {
        let bytes = self.segment.bytes();
        self.records.iter().map(move |s| {
            let start = s.offset as usize;
            let key_start = start + FRAME_HEADER_BYTES;
            let data_start = key_start + s.key_len as usize;
            let end = start + s.frame_len as usize;
            Record {
                seq: s.seq,
                arrival_ms: s.arrival_ms,
                // The key was checked to be UTF-8 by the read that built this
                // batch; an empty fallback is never taken.
                partition_key: std::str::from_utf8(&bytes[key_start..data_start]).unwrap_or(""),
                data: &bytes[data_start..end],
                flags: s.flags,
                offset: s.offset as u64,
                frame_len: s.frame_len,
            }
        })
    }

    /// The records, each with its data as [`MappedBytes`]: a reader can keep
    /// the data past this batch (to encode it later, say) without a copy.
    pub fn iter_shared(&self) -> impl Iterator<Item = (Record<'_>, MappedBytes)> + '_ {
        self.iter().map(move |r| {
            let start = r.offset as usize + FRAME_HEADER_BYTES + r.partition_key.len();
            let shared = MappedBytes {
                segment: self.segment.clone(),
                start,
                end: start + r.data.len(),
            };
            (r, shared)
        })
    }

    /// The segment the records come from.
    pub fn segment(&self) -> &Arc<MappedSegment> {
        &self.segment
    }
}

/// One record's data in a mapped segment, which stays mapped while any
/// `MappedBytes` of it lives. Checksummed by the read that produced it.
#[derive(Clone)]
pub struct MappedBytes {
    segment: Arc<MappedSegment>,
    start: usize,
    end: usize,
}

impl std::ops::Deref for MappedBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.segment.bytes()[self.start..self.end]
    }
}

impl AsRef<[u8]> for MappedBytes {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl fmt::Debug for MappedBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MappedBytes")
            .field("path", &self.segment.path())
            .field("offset", &self.start)
            .field("len", &(self.end - self.start))
            .finish()
    }
}

/// One problem found by [`Log::verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: PathBuf,
    pub offset: u64,
    pub reason: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} @ {}: {}", self.path.display(), self.offset, self.reason)
    }
}

/// Result of [`Log::verify`].
#[derive(Debug, Clone, Default)]
pub struct VerifyReport {
    pub segments: usize,
    pub records: u64,
    pub bytes: u64,
    pub problems: Vec<Problem>,
}

impl VerifyReport {
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// What open-time recovery found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Bytes of torn tail truncated from the active segment.
    pub truncated_bytes: u64,
    /// Where the tail was truncated.
    pub truncated_at: Option<(PathBuf, u64)>,
    /// Set when acknowledged data was found damaged: the log is read-only.
    pub quarantined: Option<(PathBuf, u64, String)>,
    /// Records found in the active segment.
    pub active_records: u64,
    /// Under [`OpenCheck::Deferred`]: the active segment and the offset up to
    /// which its frames were walked but their checksums not yet verified
    /// (see [`Log::check_deferred`]).
    pub deferred_check: Option<(PathBuf, u64)>,
    /// Bytes of an older segment's frames cut from a recycled active
    /// segment after its data (not damage: see
    /// [`LogOptions::recycle_segments_max`]).
    pub recycled_tail_bytes: u64,
}

/// The synced prefix of a recovered active segment whose checksums
/// [`Log::check_deferred`] has still to verify, and how far it has come.
#[derive(Debug, Clone)]
struct DeferredCheck {
    path: PathBuf,
    file_id: u64,
    /// Where the unverified prefix ends (a frame boundary).
    end: u64,
    /// The next frame to verify and its sequence number.
    pos: u64,
    seq: u64,
}

struct Scan<'a> {
    /// Valid frames found.
    records: u64,
    end: u64,
    next_seq: u64,
    last_arrival_ms: i64,
    stop: Option<&'static str>,
    bytes: &'a [u8],
}

/// Valid frames a scan hands to its caller at a time: recovery's memory stays
/// bounded however many records the active segment holds (a 128 MiB segment
/// of tiny records holds millions).
const SCAN_CHUNK_RECORDS: usize = 4096;

/// How much [`Log::check_deferred`] verifies between two questions to its
/// caller whether to stop (a few milliseconds of checksumming).
pub const DEFERRED_CHECK_STEP_BYTES: u64 = 8 * 1024 * 1024;

/// Whether a resume point offered to recovery matches the file: its anchor
/// frame passes its checksum, and a walk of the frame headers from it ends
/// exactly at the point, with the point's sequence number and the arrival
/// time of the frame before it (see [`ResumePoint::anchor`]). The walk is
/// one index interval long.
fn resume_point_fits(bytes: &[u8], file_id: u64, point: &ResumePoint) -> bool {
    let Some((anchor_offset, anchor_seq)) = point.anchor else {
        return false;
    };
    let (Ok(mut pos), Ok(end)) = (usize::try_from(anchor_offset), usize::try_from(point.offset)) else {
        return false;
    };
    if pos < SEGMENT_HEADER_BYTES || pos >= end {
        return false;
    }
    if !matches!(frame::decode(bytes, pos, file_id), Decoded::Record(r) if r.seq == anchor_seq) {
        return false;
    }
    let mut seq = anchor_seq;
    let mut last_arrival_ms = None;
    while pos < end {
        match frame::decode_header(bytes, pos) {
            frame::DecodedHeader::Header(h) if h.seq == seq => {
                last_arrival_ms = Some(h.arrival_ms);
                pos += h.frame_len as usize;
                seq += 1;
            }
            _ => return false,
        }
    }
    pos == end && seq == point.next_seq && last_arrival_ms == Some(point.last_arrival_ms)
}

/// The header of the frame at `pos`, checked in full (checksum included)
/// unless the frame ends at or below `unchecked_upto`; `None` at the end of
/// data.
fn frame_at(
    bytes: &[u8],
    pos: usize,
    unchecked_upto: usize,
    file_id: u64,
) -> std::result::Result<Option<frame::Header>, &'static str> {
    if pos < unchecked_upto {
        if let frame::DecodedHeader::Header(h) = frame::decode_header(bytes, pos) {
            if h.offset + u64::from(h.frame_len) <= unchecked_upto as u64 {
                return Ok(Some(h));
            }
        }
    }
    match frame::decode(bytes, pos, file_id) {
        Decoded::End => Ok(None),
        Decoded::Invalid(reason) => Err(reason),
        Decoded::Record(r) => Ok(Some(frame::Header {
            seq: r.seq,
            arrival_ms: r.arrival_ms,
            offset: r.offset,
            frame_len: r.frame_len,
        })),
    }
}

/// Bytes [`last_nonzero`] checks at a time, without stopping early inside
/// them, which lets the compiler compare many bytes per instruction.
const ZERO_SCAN_CHUNK_BYTES: usize = 4096;

/// A recovery walk up to this long is fetched ahead in one go while the rest
/// of the map is read without read-around; a longer one uses sequential
/// read-ahead (see `Mapping::advise_walk`).
const SHORT_WALK_BYTES_MAX: usize = 16 * 1024 * 1024;

/// The zeros [`Log::prepare_space`] writes from: at most two steps at once.
static ZEROS: [u8; 2 * ZERO_FILL_STEP_BYTES as usize] = [0; 2 * ZERO_FILL_STEP_BYTES as usize];

/// The position of the last non-zero byte. Recovery scans preallocated
/// zeros with it (up to a preallocation step per shard, twice, when the
/// page cache holds them and the file system therefore reports them as
/// data): a byte at a time, that was two thirds of an open after a crash
/// with 100 shards (measured: 120 ms).
fn last_nonzero(bytes: &[u8]) -> Option<usize> {
    let chunk = bytes
        .chunks(ZERO_SCAN_CHUNK_BYTES)
        .rposition(|c| c.iter().fold(0u8, |acc, &b| acc | b) != 0)?;
    let start = chunk * ZERO_SCAN_CHUNK_BYTES;
    let end = (start + ZERO_SCAN_CHUNK_BYTES).min(bytes.len());
    bytes[start..end].iter().rposition(|&b| b != 0).map(|i| start + i)
}

/// How far back from the end of an active segment's data
/// [`last_valid_frame`] looks for a frame: one largest frame and a torn
/// write's worth more. Past it, nothing is proven synced and recovery
/// verifies the whole segment, as under [`OpenCheck::Full`].
const LAST_FRAME_SEARCH_BYTES: usize = 2 * FRAME_BYTES_MAX;

/// The offset of the last frame of this file that passes its checksum,
/// searched backwards from `data_end` (where the file's non-zero bytes
/// end) for at most [`LAST_FRAME_SEARCH_BYTES`]. Any such frame was written
/// there by this file's writer (the file id is in every checksum, and the
/// writer never rewrites bytes below its end), so its `synced_upto` proves
/// how far the segment was durable without walking the frames before it.
/// The cheap checks of [`frame::decode_header`] come before each checksum.
fn last_valid_frame(bytes: &[u8], file_id: u64, data_end: usize) -> Option<usize> {
    let data_end = data_end.min(bytes.len());
    let lowest = data_end
        .saturating_sub(LAST_FRAME_SEARCH_BYTES)
        .max(SEGMENT_HEADER_BYTES);
    (lowest..data_end.saturating_sub(FRAME_HEADER_BYTES - 1))
        .rev()
        .find(|&pos| {
            matches!(frame::decode_header(bytes, pos), frame::DecodedHeader::Header(_))
                && matches!(frame::decode(bytes, pos, file_id), Decoded::Record(_))
        })
}

/// Scans the frames of a segment from its header to the first position that
/// is not a valid, in-sequence frame, handing the valid ones to `on_placed`
/// in order, a chunk at a time. Frames that end at or below `unchecked_upto`
/// are checked by their headers only (see [`OpenCheck::Deferred`]).
fn scan_frames<'a>(
    bytes: &'a [u8],
    header: &SegmentHeader,
    limit: usize,
    unchecked_upto: usize,
    start: Option<&ResumePoint>,
    on_placed: &mut dyn FnMut(&[Placed]),
) -> Scan<'a> {
    let (mut pos, mut next_seq, mut last_arrival_ms) = match start {
        Some(r) => (r.offset as usize, r.next_seq, r.last_arrival_ms),
        None => (SEGMENT_HEADER_BYTES, header.base_seq, i64::MIN),
    };
    let mut records = 0u64;
    let mut placed = Vec::with_capacity(SCAN_CHUNK_RECORDS);
    let stop = loop {
        if pos >= limit {
            break None;
        }
        let r = match frame_at(&bytes[..limit], pos, unchecked_upto, header.file_id) {
            Ok(Some(r)) => r,
            Ok(None) => break None,
            Err(reason) => break Some(reason),
        };
        if r.seq != next_seq {
            break Some("frame has an out-of-sequence number");
        }
        if r.arrival_ms < last_arrival_ms {
            break Some("frame arrival time goes backwards");
        }
        placed.push(Placed {
            seq: r.seq,
            offset: r.offset,
            arrival_ms: r.arrival_ms,
            frame_len: r.frame_len,
        });
        if placed.len() == SCAN_CHUNK_RECORDS {
            on_placed(&placed);
            placed.clear();
        }
        records += 1;
        last_arrival_ms = r.arrival_ms;
        next_seq += 1;
        pos += r.frame_len as usize;
    };
    if !placed.is_empty() {
        on_placed(&placed);
    }
    Scan {
        records,
        end: pos as u64,
        next_seq,
        last_arrival_ms,
        stop,
        bytes,
    }
}

/// What [`Scan::evidence_in_recycled`] found after the scan's end.
struct RecycledTail {
    /// A later frame of this file proving the damage had been synced.
    evidence: Option<u64>,
    /// Where the first older frame begins (the file's end if none does).
    older_from: u64,
    /// The end of the last frame of this file found there (none synced
    /// after the damage): frames written and not synced, which make the
    /// tail torn even when the scan ended on zeros.
    own_end: Option<u64>,
}

impl Scan<'_> {
    /// [`Scan::evidence_of_synced_damage`] for a recycled file, whose bytes
    /// after this file's data are the frames of the segment it was before
    /// (file id `older`). Every byte after the scan's end is looked at,
    /// but a frame that passes its checksum under either id is stepped over
    /// whole: no frame of a later write can start inside one whose bytes
    /// are intact, and the older frames then cost one checksum each.
    /// Returns the evidence, and where the first older frame after the scan's
    /// end begins (the end of the file if there is none).
    fn evidence_in_recycled(&self, file_id: u64, older: u64) -> RecycledTail {
        let damage = self.end;
        let bytes = self.bytes;
        // An intact older frame may begin right where the scan stopped.
        let mut first_older = matches!(frame::decode(bytes, damage as usize, older), Decoded::Record(_))
            .then_some(damage as usize);
        let mut own_end = None;
        // Once in the older frames, they are tried first.
        let mut in_older = false;
        let mut pos = damage as usize + 1;
        while pos + FRAME_HEADER_BYTES <= bytes.len() {
            if !matches!(frame::decode_header(bytes, pos), frame::DecodedHeader::Header(_)) {
                pos += 1;
                continue;
            }
            let ids = if in_older {
                [older, file_id]
            } else {
                [file_id, older]
            };
            let mut stepped = false;
            for id in ids {
                if let Decoded::Record(r) = frame::decode(bytes, pos, id) {
                    if id == file_id {
                        if frame::synced_upto(bytes, pos) as u64 > damage {
                            return RecycledTail {
                                evidence: Some(r.offset),
                                older_from: first_older.unwrap_or(bytes.len()) as u64,
                                own_end,
                            };
                        }
                        own_end = Some(pos as u64 + u64::from(r.frame_len));
                        in_older = false;
                    } else {
                        first_older.get_or_insert(pos);
                        in_older = true;
                    }
                    pos += r.frame_len as usize;
                    stepped = true;
                    break;
                }
            }
            if !stepped {
                pos += 1;
            }
        }
        RecycledTail {
            evidence: None,
            older_from: first_older.unwrap_or(bytes.len()) as u64,
            own_end,
        }
    }

    /// Looks past a damaged position for a valid frame of this file whose
    /// `synced_upto` covers the damage: proof that the damaged bytes had been
    /// made durable (and so acknowledged) before.
    fn evidence_of_synced_damage(&self, file_id: u64) -> Option<u64> {
        let damage = self.end;
        let bytes = self.bytes;
        let mut pos = damage as usize + 1;
        while pos + FRAME_HEADER_BYTES <= bytes.len() {
            // Cheap filter before the checksum: a plausible frame length.
            let len = u32::from_le_bytes([
                bytes[pos + FRAME_LEN_OFFSET],
                bytes[pos + FRAME_LEN_OFFSET + 1],
                bytes[pos + FRAME_LEN_OFFSET + 2],
                bytes[pos + FRAME_LEN_OFFSET + 3],
            ]) as usize;
            if len <= FRAME_HEADER_BYTES || len > bytes.len() - pos {
                pos += 1;
                continue;
            }
            if let Decoded::Record(r) = frame::decode(bytes, pos, file_id) {
                if frame::synced_upto(bytes, pos) as u64 > damage {
                    return Some(r.offset);
                }
            }
            pos += 1;
        }
        None
    }
}

impl Log {
    /// Opens (creating if needed) the log in `dir` on the real file system.
    pub fn open(dir: impl AsRef<Path>, opts: LogOptions) -> Result<Log> {
        Log::open_with(Arc::new(crate::fs::StdFs), dir, opts, Arc::new(NoObserver)).map(|(l, _)| l)
    }

    /// Opens the log in `dir` through `fs`, reporting placements to
    /// `observer`. Returns what recovery did.
    pub fn open_with(
        fs: Arc<dyn FileSystem>,
        dir: impl AsRef<Path>,
        opts: LogOptions,
        observer: Arc<dyn AppendObserver>,
    ) -> Result<(Log, RecoveryReport)> {
        opts.validate()?;
        let dir = dir.as_ref().to_path_buf();
        let existed = fs.exists(&dir);
        fs.create_dir_all(&dir)
            .map_err(|e| Error::io("create directory", &dir, e))?;
        if !existed {
            // A new log directory must survive a crash with its entry.
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                fs.sync_dir(parent)
                    .map_err(|e| Error::io("fsync directory", parent, e))?;
            }
        }
        let lock_path = dir.join(LOCK_FILE_NAME);
        let lock_guard = fs.lock(&lock_path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::WouldBlock {
                Error::Locked { path: dir.clone() }
            } else {
                Error::io("lock", &lock_path, e)
            }
        })?;
        let names = fs
            .read_dir(&dir)
            .map_err(|e| Error::io("read directory", &dir, e))?;
        let mut bases: Vec<u64> = names.iter().filter_map(|n| parse_segment_file_name(n)).collect();
        bases.sort_unstable();

        let mut report = RecoveryReport::default();
        let mut segments = BTreeMap::new();
        for pair in bases.windows(2) {
            segments.insert(
                pair[0],
                SegmentEntry {
                    path: dir.join(segment_file_name(pair[0])),
                    end_seq: Some(pair[1]),
                },
            );
        }

        let (writer, quarantine) = match bases.last() {
            None => (
                Self::create_segment(&*fs, &dir, opts.first_seq, now_micros(), now_ms(), i64::MIN)?,
                None,
            ),
            Some(&base) => {
                Self::recover_active(&*fs, &dir, base, bases.len() > 1, &opts, &*observer, &mut report)?
            }
        };
        // The marker describes one clean stop; once this open has used it, a
        // later crash must not be read as clean.
        // A quarantined log keeps its marker: it never writes again, so the
        // marker stays true, and the next open must find the same damage
        // rather than take the data's early end for a torn tail and cut
        // acknowledged records after it.
        let clean_path = dir.join(CLEAN_FILE_NAME);
        if quarantine.is_none() && fs.exists(&clean_path) {
            fs.remove_file(&clean_path)
                .map_err(|e| Error::io("remove clean marker", &clean_path, e))?;
            if opts.sync_on_open {
                fs.sync_dir(&dir)
                    .map_err(|e| Error::io("fsync directory", &dir, e))?;
            }
        }
        let w = writer;
        let deferred = report.deferred_check.as_ref().map(|(path, end)| DeferredCheck {
            path: path.clone(),
            file_id: w.active.file_id,
            end: *end,
            pos: SEGMENT_HEADER_BYTES as u64,
            seq: w.active.base_seq,
        });
        segments.insert(
            w.active.base_seq,
            SegmentEntry {
                path: w.active.path.clone(),
                end_seq: None,
            },
        );
        let mark = Watermark {
            next_seq: w.next_seq,
            segment_base: w.active.base_seq,
            offset: w.active.len,
            file_id: w.active.file_id,
            last_arrival_ms: w.last_arrival_ms,
        };
        let sync = SyncState {
            blocked: 0,
            written: mark,
            durable: mark,
            syncing: false,
            waiters: Vec::new(),
            queued: false,
            awaited_through: 0,
            poisoned: None,
            quarantine,
            active_file: w.active.file.clone(),
            group_bytes_avg: GROUP_BYTES_AVG_INITIAL,
            space_written: w.active.zeroed.max(w.active.len),
            end_marker: 0,
            // Nothing is known settled until this log's first fdatasync.
            settled: 0,
            cuts: 0,
            journal_through: 0,
            unjournaled_through: 0,
            journal_done: 0,
            journal_last: None,
            early_write_backs: Vec::new(),
            early_write_back_tickets: 0,
        };
        let mark_file = w.active.file.clone();
        let pool = Self::load_pool(&*fs, &dir, &names, &opts);
        let inner = Arc::new(Inner {
            fs,
            dir,
            opts,
            observer,
            writer: Mutex::new(w),
            sync: Mutex::new(sync),
            sync_cv: Condvar::new(),
            segments: RwLock::new(segments),
            maps: Mutex::new(MapCache::default()),
            deferred: Mutex::new(deferred),
            deferred_running: Mutex::new(()),
            cache: Mutex::new(CacheRelease {
                base: mark.segment_base,
                file: mark_file,
                upto: 0,
                sealed: VecDeque::new(),
                advised: 0,
            }),
            pool: Mutex::new(pool),
            removal_unsynced: Mutex::new(true),
            journal: std::sync::OnceLock::new(),
            _lock: lock_guard,
        });
        if let Some(journal) = &inner.opts.journal {
            // Only a log under the journal's root can name its segments there.
            let under = inner.dir.strip_prefix(journal.root()).ok().is_some_and(|rel| {
                rel.to_str()
                    .is_some_and(|r| r.len() + 32 <= JOURNAL_PATH_BYTES_MAX)
            });
            if under && inner.opts.sync == SyncPolicy::Always {
                let poisoned_flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
                let _ = inner.journal.set(JournalLink {
                    journal: journal.clone(),
                    client_id: journal.client_id(),
                    client: Arc::new(JournalClientOf {
                        log: Arc::downgrade(&inner),
                        poisoned_flag: poisoned_flag.clone(),
                    }),
                    poisoned_flag,
                });
            }
        }
        let flusher = match inner.opts.sync {
            SyncPolicy::IntervalMs(ms) => Some(
                spawn_flusher(Arc::downgrade(&inner), ms)
                    .map_err(|e| Error::io("start the sync thread", &inner.dir, e))?,
            ),
            _ => None,
        };
        Ok((Log { inner, flusher }, report))
    }

    fn create_segment(
        fs: &dyn FileSystem,
        dir: &Path,
        base_seq: u64,
        file_id: u64,
        created_ms: i64,
        last_arrival_ms: i64,
    ) -> Result<Writer> {
        let path = dir.join(segment_file_name(base_seq));
        let header = SegmentHeader {
            file_id,
            base_seq,
            created_ms,
            recycled_from: None,
        };
        let file = fs
            .create_new(&path)
            .map_err(|e| Error::io("create segment", &path, e))?;
        let made = file
            .write_all_at(&header.encode(), 0)
            .map_err(|e| Error::io("write segment header", &path, e))
            .and_then(|()| file.sync_data().map_err(|e| Error::io("fsync segment", &path, e)))
            .and_then(|()| fs.sync_dir(dir).map_err(|e| Error::io("fsync directory", dir, e)));
        if let Err(e) = made {
            // Leave no half-made segment behind: a retry after ENOSPC must be
            // able to create it again, and a restart must not find it. A
            // restart that found it would take it for the active segment
            // and the previous one, which the caller keeps appending to,
            // for sealed at this base: the records appended meanwhile would
            // share sequence numbers with the ones after them. So when the
            // file cannot be removed for sure, the error is not retriable
            // (the caller poisons its writer).
            drop(file);
            return Err(remove_half_made(fs, dir, &path, e));
        }
        Ok(Writer::starting(
            Active {
                base_seq,
                file_id,
                created_ms,
                file,
                path,
                len: SEGMENT_HEADER_BYTES as u64,
                allocated: SEGMENT_HEADER_BYTES as u64,
                zeroed: SEGMENT_HEADER_BYTES as u64,
                decide_at: SEGMENT_HEADER_BYTES as u64,
                recycled: false,
                early_write_back_from: page_ceil(SEGMENT_HEADER_BYTES as u64),
            },
            last_arrival_ms,
        ))
    }

    /// The next segment at a roll: a file kept for reuse when one is free
    /// of readers, a new file otherwise.
    fn next_segment(
        &self,
        base_seq: u64,
        file_id: u64,
        created_ms: i64,
        last_arrival_ms: i64,
    ) -> Result<Writer> {
        let fs = &*self.inner.fs;
        let dir = &self.inner.dir;
        let free = {
            let mut pool = lock(&self.inner.pool);
            let at = pool.iter().position(Recyclable::unmapped);
            at.and_then(|i| pool.remove(i))
        };
        if let Some(r) = free {
            if let Some(w) = Self::reuse_segment(fs, dir, r, base_seq, file_id, created_ms, last_arrival_ms)?
            {
                return Ok(w);
            }
        }
        match Self::create_segment(fs, dir, base_seq, file_id, created_ms, last_arrival_ms) {
            // Kept files still mapped by readers could not be reused, but
            // their space can be given back.
            Err(e) if e.is_retriable() && self.free_kept_files() => {
                Self::create_segment(fs, dir, base_seq, file_id, created_ms, last_arrival_ms)
            }
            other => other,
        }
    }

    /// Preallocates the active segment past `upto`, to the next multiple of
    /// the preallocation step. When the disk is full, the files kept for
    /// reuse are given back first and the call is tried once more.
    fn preallocate(&self, w: &mut Writer, upto: u64) -> Result<()> {
        let step = self.inner.opts.preallocate_bytes.max(1);
        let target = upto.div_ceil(step) * step;
        let file = &w.active.file;
        match file.allocate(target) {
            Err(e) if crate::error::is_no_space(&e) && self.free_kept_files() => file.allocate(target),
            other => other,
        }
        .map_err(|e| Error::io("preallocate segment", &w.active.path, e))?;
        w.active.allocated = target;
        Ok(())
    }

    /// Unlinks every file kept for reuse: they are a cache of space, and a
    /// full disk needs the space more. A reader's map of one stays valid
    /// (unlinking does not change mapped bytes), and the file system gives
    /// that file's space back only when the last map goes, so the retry
    /// after this may still find the disk full; the error stays retriable.
    /// Returns whether there were any.
    fn free_kept_files(&self) -> bool {
        let kept: Vec<Recyclable> = lock(&self.inner.pool).drain(..).collect();
        if kept.is_empty() {
            return false;
        }
        for r in &kept {
            let _ = self.inner.fs.remove_file(&r.path);
        }
        let _ = self.inner.fs.sync_dir(&self.inner.dir);
        true
    }

    /// Makes the kept file `r` the segment of `base_seq`: its new header,
    /// with an end-of-data marker right after it, is written and synced
    /// while the file still has its `.free` name, and only then is it
    /// renamed into place and the directory synced. A crash in between
    /// leaves a free file (with either header) or a complete, empty
    /// segment. `Ok(None)` when the file could not be prepared (it is
    /// discarded, and the caller creates a new file instead).
    fn reuse_segment(
        fs: &dyn FileSystem,
        dir: &Path,
        r: Recyclable,
        base_seq: u64,
        file_id: u64,
        created_ms: i64,
        last_arrival_ms: i64,
    ) -> Result<Option<Writer>> {
        let path = dir.join(segment_file_name(base_seq));
        let header = SegmentHeader {
            file_id,
            base_seq,
            created_ms,
            recycled_from: Some(r.file_id),
        };
        let mut head = [0u8; SEGMENT_HEADER_BYTES + RECYCLED_END_MARKER_BYTES];
        head[..SEGMENT_HEADER_BYTES].copy_from_slice(&header.encode());
        let prepared = fs.open_rw(&r.path).and_then(|file| {
            file.write_all_at(&head, 0)?;
            file.sync_data()?;
            let len = file.len()?;
            Ok((file, len))
        });
        let (file, len) = match prepared {
            Ok(p) => p,
            Err(_) => {
                // A free file is only ever a cache of space: one that cannot
                // be written is dropped, and the roll goes on with a new file.
                let _ = fs.remove_file(&r.path);
                return Ok(None);
            }
        };
        if fs.rename(&r.path, &path).is_err() {
            drop(file);
            let _ = fs.remove_file(&r.path);
            return Ok(None);
        }
        if let Err(e) = fs.sync_dir(dir) {
            // As in create_segment: leave no half-made segment behind, and
            // when that is not certain, the error is not retriable.
            drop(file);
            return Err(remove_half_made(
                fs,
                dir,
                &path,
                Error::io("fsync directory", dir, e),
            ));
        }
        crate::stats::record_segment_reused();
        let end = (SEGMENT_HEADER_BYTES + RECYCLED_END_MARKER_BYTES) as u64;
        Ok(Some(Writer::starting(
            Active {
                base_seq,
                file_id,
                created_ms,
                file,
                path,
                len: SEGMENT_HEADER_BYTES as u64,
                allocated: len.max(end),
                zeroed: len.max(end),
                decide_at: u64::MAX,
                recycled: true,
                early_write_back_from: page_ceil(SEGMENT_HEADER_BYTES as u64),
            },
            last_arrival_ms,
        )))
    }

    /// Keeps the file of a segment retention just removed for reuse, if
    /// the pool has room and the file is most of a segment (files of
    /// segments rolled early by age are small and not worth it). Returns
    /// the kept file, renamed to `<base:020>.free`, for the caller to put
    /// in the pool once it has synced the directory: a roll rewrites a
    /// pooled file's header, and should the rename not be durable, a crash
    /// would bring the file back under its segment's name with another
    /// segment's header. `maps` are the maps made of it while it was listed.
    fn keep_for_reuse(
        &self,
        base: u64,
        path: &Path,
        maps: &mut Vec<Weak<MappedSegment>>,
    ) -> Option<Recyclable> {
        let max = self.inner.opts.recycle_segments_max;
        // The pool's lock is not held across the file's I/O: a roll (under
        // the writer lock) takes from the pool. Retention runs one pass at a
        // time per log, so the room seen here is still there below (a
        // concurrent pass could overfill by one; the next open trims).
        if max == 0 || lock(&self.inner.pool).len() >= max {
            return None;
        }
        let fs = &*self.inner.fs;
        let old_id = older_frames_id(fs, path, self.inner.opts.segment_bytes_max / 2)?;
        let to = self.inner.dir.join(recycled_file_name(base));
        fs.rename(path, &to).ok()?;
        lock(&self.inner.cache).sealed.retain(|c| c.base != base);
        Some(Recyclable {
            path: to,
            file_id: old_id,
            maps: std::mem::take(maps),
        })
    }

    /// The files kept for reuse that an open finds: up to
    /// `recycle_segments_max` of them whose header reads, oldest first; the
    /// others are removed.
    fn load_pool(
        fs: &dyn FileSystem,
        dir: &Path,
        names: &[String],
        opts: &LogOptions,
    ) -> VecDeque<Recyclable> {
        let mut bases: Vec<u64> = names.iter().filter_map(|n| parse_recycled_file_name(n)).collect();
        bases.sort_unstable();
        let mut pool = VecDeque::new();
        let mut removed = false;
        for base in bases {
            let path = dir.join(recycled_file_name(base));
            let stale_id = (pool.len() < opts.recycle_segments_max)
                .then(|| older_frames_id(fs, &path, 0))
                .flatten();
            match stale_id {
                Some(file_id) => pool.push_back(Recyclable {
                    path,
                    file_id,
                    maps: Vec::new(),
                }),
                // Kept files are only a cache of space: one that cannot be
                // removed now is tried again at the next open.
                None => removed |= fs.remove_file(&path).is_ok(),
            }
        }
        if removed {
            let _ = fs.sync_dir(dir);
        }
        pool
    }

    fn recover_active(
        fs: &dyn FileSystem,
        dir: &Path,
        base: u64,
        has_sealed_segments: bool,
        opts: &LogOptions,
        observer: &dyn AppendObserver,
        report: &mut RecoveryReport,
    ) -> Result<(Writer, Option<(PathBuf, u64)>)> {
        let clean = read_clean_marker(fs, dir);
        let path = dir.join(segment_file_name(base));
        let file = fs
            .open_rw(&path)
            .map_err(|e| Error::io("open segment", &path, e))?;
        let len = file.len().map_err(|e| Error::io("stat segment", &path, e))?;
        // The map is dropped before any truncation below.
        let map = file
            .map(len as usize)
            .map_err(|e| Error::io("map segment", &path, e))?;
        if opts.open_check == OpenCheck::Deferred {
            // A deferred open touches the header, a checkpoint's anchor and
            // the tail at scattered places; the range it walks is fetched
            // ahead below, once it is known.
            map.advise_scattered();
        }
        let bytes = map.as_slice();
        let header = match SegmentHeader::decode(bytes) {
            Ok(h) => h,
            Err(reason) => {
                // A segment is created, its header written and synced, and only
                // then its directory entry synced. A crash in between can leave
                // an entry for a file with a missing or partial header and no
                // records: that is a torn tail of the whole log.
                let blank_tail = bytes.len() < SEGMENT_HEADER_BYTES
                    || bytes[SEGMENT_HEADER_BYTES..].iter().all(|&b| b == 0);
                if !blank_tail {
                    return Err(Error::corruption(&path, 0, reason));
                }
                if opts.recovery == RecoveryPolicy::Strict {
                    return Err(Error::TornTail {
                        path,
                        offset: 0,
                        reason: reason.to_string(),
                    });
                }
                let torn_len = bytes.len() as u64;
                drop(map);
                drop(file);
                fs.remove_file(&path)
                    .map_err(|e| Error::io("remove torn segment", &path, e))?;
                fs.sync_dir(dir)
                    .map_err(|e| Error::io("fsync directory", dir, e))?;
                report.truncated_bytes = torn_len;
                report.truncated_at = Some((path, 0));
                // Without the lost header, the clock is the floor that keeps
                // arrival times from going back across segments.
                let floor = if has_sealed_segments { now_ms() } else { i64::MIN };
                let w = Self::create_segment(fs, dir, base, now_micros(), now_ms(), floor)?;
                return Ok((w, None));
            }
        };
        if header.base_seq != base {
            return Err(Error::corruption(
                &path,
                HDR_BASE_SEQ_OFFSET as u64,
                format!(
                    "header says base sequence {} but the file name says {base}",
                    header.base_seq
                ),
            ));
        }
        // Every frame the scan accepts is below its end, which is where the
        // log continues whatever the checks below decide (a torn tail is cut
        // there, damage is quarantined from there, and a strict refusal
        // opens nothing), so the observer can index them as they come.
        // An observer's checkpoint may spare the walk of the frames below
        // it; a point that does not fit this file is not used.
        let resume = match opts.open_check {
            OpenCheck::Full => None,
            OpenCheck::Deferred => observer.resume_point(base, header.file_id).filter(|r| {
                r.file_id == header.file_id
                    && (SEGMENT_HEADER_BYTES as u64..=bytes.len() as u64).contains(&r.offset)
                    && r.next_seq >= header.base_seq
                    && resume_point_fits(bytes, header.file_id, r)
            }),
        };
        // Where the file system reports data (one walk of its extents, used
        // for the end of the data here and for stray bytes after the scan):
        // preallocated space that was never written reads as zeros by
        // definition and need not be read.
        let data_ranges = file
            .data_ranges(SEGMENT_HEADER_BYTES as u64)
            .map_err(|e| Error::io("find data ranges", &path, e))?;
        // The end of the last range, zeros written ahead of the frames
        // included.
        let ranges_end = data_ranges
            .last()
            .map_or(bytes.len(), |&(_, end)| end as usize)
            .min(bytes.len());
        if opts.open_check == OpenCheck::Deferred {
            // What the scan walks: from the checkpoint (or the header) to the
            // end of the data.
            let walk_start = resume.map_or(SEGMENT_HEADER_BYTES, |r| r.offset as usize);
            let short = resume.is_some() && ranges_end.saturating_sub(walk_start) <= SHORT_WALK_BYTES_MAX;
            map.advise_walk(walk_start..ranges_end, short);
        }
        // A recycled file holds an older segment's frames after its data:
        // there are no zeros to find the end of the data by, and a search
        // backwards from the file's end would read those frames. So only a
        // checkpoint spares checksums in one.
        let recycled = header.recycled_from.is_some();
        let unchecked_upto = match opts.open_check {
            OpenCheck::Full => SEGMENT_HEADER_BYTES,
            OpenCheck::Deferred if recycled => SEGMENT_HEADER_BYTES,
            OpenCheck::Deferred => {
                // The synced point is read from the last valid frame, found
                // from the end of the data, so that the frames before it are
                // walked once only (each walk of a large active segment
                // costs a cache miss per frame).
                let data_end = last_nonzero(&bytes[..ranges_end]).map_or(SEGMENT_HEADER_BYTES, |z| z + 1);
                // A frame's synced_upto never exceeds its own offset; the
                // bound keeps a damaged-yet-valid value inside the walk.
                last_valid_frame(bytes, header.file_id, data_end).map_or(SEGMENT_HEADER_BYTES, |at| {
                    (frame::synced_upto(bytes, at) as usize).clamp(SEGMENT_HEADER_BYTES, at)
                })
            }
        };
        if resume.is_some() {
            observer.resume_used(base);
        }
        let unchecked_upto = unchecked_upto.max(resume.map_or(0, |r| r.offset as usize));
        let scan = scan_frames(
            bytes,
            &header,
            bytes.len(),
            unchecked_upto,
            resume.as_ref(),
            &mut |chunk| observer.placed(base, chunk),
        );
        if unchecked_upto > SEGMENT_HEADER_BYTES {
            report.deferred_check = Some((path.clone(), unchecked_upto as u64));
        }
        // Stray bytes after the scan's end, in the ranges that hold data. In
        // a recycled file every write ends with zeros, so a clean end reads
        // as the end of data; what follows it is the older segment's and
        // says nothing (it is cut below).
        let tail_dirty = scan.stop.is_some()
            || !recycled
                && data_ranges.iter().any(|&(a, b)| {
                    let (a, b) = (a.max(scan.end).min(len) as usize, b.min(len) as usize);
                    a < b && last_nonzero(&bytes[a..b]).is_some()
                });
        let clean_stop = clean
            .filter(|c| c.base_seq == base && c.file_id == header.file_id)
            .map(|c| c.end);
        // In a recycled file, zeros where the scan ended prove nothing about
        // what follows: a synced page the device lost reads as an older end
        // marker, and an older segment's frames follow every end. So unless
        // the log was stopped cleanly right there, the search for a later
        // synced frame of this file runs after every scan of one.
        let search = tail_dirty || recycled && clean_stop != Some(scan.end);
        let mut tail_dirty = tail_dirty;
        // Where the older segment's frames begin after the scan's end (the
        // file's end if none is found): what lies between is this file's.
        let mut older_from = len;
        let evidence = match (search, header.recycled_from) {
            (false, _) => None,
            (true, Some(older)) => {
                let tail = scan.evidence_in_recycled(header.file_id, older);
                older_from = tail.older_from;
                // Frames of this file after the end that nothing proves
                // synced: a torn tail, as in a new file (Strict refuses it,
                // and it is reported as cut).
                if let Some(end) = tail.own_end {
                    tail_dirty = true;
                    older_from = older_from.max(end);
                }
                tail.evidence
            }
            (true, None) => scan.evidence_of_synced_damage(header.file_id),
        };
        // After a clean stop the data ended exactly where the marker says:
        // ending earlier is damage (bit rot, a truncated file), not a torn
        // write. A marker of another segment, or one that ends before the
        // data does (appends after it was written), is stale and ignored.
        let clean_end = clean_stop.filter(|&end| scan.end < end);
        let Scan {
            records: placed_count,
            end: scan_end,
            next_seq,
            last_arrival_ms,
            stop,
            ..
        } = scan;
        drop(map);
        let mut quarantine = None;
        let mut valid_len = len;
        let mut truncated = false;
        let mut cut_older = false;
        if let Some(end) = clean_end {
            report.quarantined = Some((
                path.clone(),
                scan_end,
                format!(
                    "{}; the log was stopped cleanly with data up to offset {end}",
                    stop.unwrap_or("the data ends early")
                ),
            ));
            quarantine = Some((path.clone(), scan_end));
        } else if tail_dirty || evidence.is_some() {
            let reason = stop.unwrap_or(match (recycled, evidence.is_some()) {
                (true, true) => "the data ends (zeros) before later synced frames",
                (true, false) => "frames of this file follow the end of data and were never synced",
                (false, _) => "non-zero bytes after the end of data",
            });
            if let Some(later) = evidence {
                // Damage below the synced point: acknowledged data is gone.
                // Never truncate it; open read-only up to the damage.
                report.quarantined = Some((
                    path.clone(),
                    scan_end,
                    format!("{reason}; a valid frame at offset {later} shows these bytes had been synced"),
                ));
                quarantine = Some((path.clone(), scan_end));
            } else if opts.recovery == RecoveryPolicy::Strict {
                return Err(Error::TornTail {
                    path,
                    offset: scan_end,
                    reason: reason.to_string(),
                });
            } else {
                file.set_len(scan_end)
                    .map_err(|e| Error::io("truncate torn tail", &path, e))?;
                // In a recycled file the older segment's frames go with the
                // torn tail; they are counted apart.
                let older_from = older_from.max(scan_end);
                report.truncated_bytes = older_from - scan_end;
                report.recycled_tail_bytes = len - older_from;
                report.truncated_at = Some((path.clone(), scan_end));
                valid_len = scan_end;
                truncated = true;
            }
        }
        if recycled && quarantine.is_none() && !truncated && len > scan_end {
            // The older segment's frames after the data go: what a write
            // left there before a crash (frames of this file that were never
            // synced, past an end marker that was) must not be found by a
            // later scan after new frames that happen to end where one of
            // them starts. The rest of the segment is then new space, as
            // after any cut.
            file.set_len(scan_end)
                .map_err(|e| Error::io("cut a recycled segment's old frames", &path, e))?;
            report.recycled_tail_bytes = len - scan_end;
            valid_len = scan_end;
            cut_older = true;
        }
        // What survived the crash may still sit only in the page cache (after
        // a process crash); make it durable before anyone reads it.
        if opts.sync_on_open || truncated {
            file.sync_data()
                .map_err(|e| Error::io("fsync segment", &path, e))?;
        }
        report.active_records = placed_count;
        let has_sealed = has_sealed_segments;
        let writer = Writer {
            active: Active {
                base_seq: base,
                file_id: header.file_id,
                created_ms: header.created_ms,
                file,
                path,
                len: scan_end,
                allocated: valid_len,
                zeroed: scan_end,
                decide_at: scan_end,
                // Cut above unless quarantined, and a quarantined log never
                // writes.
                recycled: recycled && !truncated && !cut_older,
                early_write_back_from: page_ceil(scan_end),
            },
            next_seq,
            // Arrival times never go down across segments: a new segment's
            // creation time is at or above every earlier arrival (see
            // roll_locked), so an empty active segment after sealed ones
            // carries that floor forward.
            last_arrival_ms: if placed_count == 0 && has_sealed {
                last_arrival_ms.max(header.created_ms)
            } else {
                last_arrival_ms
            },
            last_file_id: header.file_id,
            buf: Vec::new(),
            placed: Vec::new(),
        };
        Ok((writer, quarantine))
    }

    /// The log's directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The file system the log uses.
    pub fn fs(&self) -> &Arc<dyn FileSystem> {
        &self.inner.fs
    }

    pub fn options(&self) -> &LogOptions {
        &self.inner.opts
    }

    /// Sequence number of the oldest record still held.
    pub fn first_seq(&self) -> u64 {
        let segs = self.inner.segments.read().unwrap_or_else(|p| p.into_inner());
        segs.keys().next().copied().unwrap_or(0)
    }

    /// Sequence number the next appended record gets (visible or not).
    pub fn next_seq(&self) -> u64 {
        lock(&self.inner.sync).written.next_seq
    }

    /// One past the last record readers may see (durable under `Always`).
    pub fn visible_next_seq(&self) -> u64 {
        self.visible().next_seq
    }

    fn visible(&self) -> Watermark {
        let st = lock(&self.inner.sync);
        match self.inner.opts.sync {
            SyncPolicy::Always => st.durable,
            _ => st.written,
        }
    }

    /// The segments, oldest first.
    pub fn segments(&self) -> Vec<SegmentSummary> {
        let segs = self.inner.segments.read().unwrap_or_else(|p| p.into_inner());
        segs.iter()
            .map(|(b, e)| SegmentSummary {
                base_seq: *b,
                end_seq: e.end_seq,
                path: e.path.clone(),
            })
            .collect()
    }

    /// `(base_seq, end_seq)` of every segment, oldest first, without paths:
    /// cheap enough for lookups.
    pub fn segment_bounds(&self) -> Vec<(u64, Option<u64>)> {
        let segs = self.inner.segments.read().unwrap_or_else(|p| p.into_inner());
        segs.iter().map(|(b, e)| (*b, e.end_seq)).collect()
    }

    /// `(base_seq, end_seq)` of the segment that holds (or will hold) `seq`.
    pub fn segment_of(&self, seq: u64) -> Option<(u64, Option<u64>)> {
        let segs = self.inner.segments.read().unwrap_or_else(|p| p.into_inner());
        segs.range(..=seq).next_back().map(|(b, e)| (*b, e.end_seq))
    }

    /// How far the active segment is written, zero-filled and preallocated.
    pub fn active_space(&self) -> ActiveSpace {
        let w = lock(&self.inner.writer);
        ActiveSpace {
            written: w.active.len,
            zeroed: w.active.zeroed.max(w.active.len),
            preallocated: w.active.allocated.max(w.active.len),
        }
    }

    /// Bytes the log's segment files occupy (their lengths, preallocation of
    /// the active segment included; files kept for reuse are
    /// [`Log::recyclable_bytes`]).
    pub fn bytes_on_disk(&self) -> u64 {
        self.files_len(self.segments().iter().map(|s| &s.path))
    }

    /// The summed lengths of `paths` (files that cannot be opened count 0).
    fn files_len<'p>(&self, paths: impl Iterator<Item = &'p PathBuf>) -> u64 {
        paths
            .filter_map(|p| self.inner.fs.open_read(p).and_then(|f| f.len()).ok())
            .sum()
    }

    /// Bytes the files kept for reuse occupy. Not part of
    /// [`Log::bytes_on_disk`]: they hold no data, and a byte cap on a
    /// stream's data must not remove records to make room for them.
    pub fn recyclable_bytes(&self) -> u64 {
        let pool: Vec<PathBuf> = lock(&self.inner.pool).iter().map(|r| r.path.clone()).collect();
        self.files_len(pool.iter())
    }

    /// Files this log keeps for reuse (see
    /// [`LogOptions::recycle_segments_max`]).
    pub fn recyclable_files(&self) -> usize {
        lock(&self.inner.pool).len()
    }

    /// Bytes of the active segment's synced prefix whose checksums
    /// [`Log::check_deferred`] has still to verify (0 under
    /// [`OpenCheck::Full`], and once the check is done).
    pub fn deferred_check_bytes(&self) -> u64 {
        lock(&self.inner.deferred).as_ref().map_or(0, |d| d.end - d.pos)
    }

    /// Verifies the checksums that recovery under [`OpenCheck::Deferred`]
    /// left unchecked: those of the synced prefix of the segment that was
    /// active at open. Damage there is acknowledged data gone bad on disk,
    /// so the log is quarantined (read-only from that frame on, as if
    /// recovery had found it) and the corruption is returned with file and
    /// offset. `stop` is asked every [`DEFERRED_CHECK_STEP_BYTES`]; when it
    /// says yes, the check returns `Ok(false)` and the next call resumes
    /// where it stopped. `Ok(true)` means nothing is left to verify. A call
    /// made while another runs waits for it and goes on from where it ended.
    pub fn check_deferred(&self, stop: &dyn Fn() -> bool) -> Result<bool> {
        let _running = lock(&self.inner.deferred_running);
        let Some(mut d) = lock(&self.inner.deferred).clone() else {
            return Ok(true);
        };
        let file = match self.inner.fs.open_read(&d.path) {
            Ok(f) => f,
            // Retention removed the segment: nothing of it is served any more.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                *lock(&self.inner.deferred) = None;
                return Ok(true);
            }
            Err(e) => return Err(Error::io("open segment", &d.path, e)),
        };
        let map = file
            .map(d.end as usize)
            .map_err(|e| Error::io("map segment", &d.path, e))?;
        let bytes = map.as_slice();
        let mut step_end = d.pos + DEFERRED_CHECK_STEP_BYTES;
        while d.pos < d.end {
            let checked = match frame::decode(bytes, d.pos as usize, d.file_id) {
                Decoded::Record(r) if r.seq == d.seq => Ok(r.frame_len),
                Decoded::Record(_) => Err("frame has an out-of-sequence number"),
                Decoded::End => Err("zeroed bytes below the end of synced data"),
                Decoded::Invalid(reason) => Err(reason),
            };
            let frame_len = match checked {
                Ok(len) => len,
                Err(reason) => {
                    *lock(&self.inner.deferred) = None;
                    {
                        let mut st = lock(&self.inner.sync);
                        match &st.quarantine {
                            // Recovery already quarantined this file at or
                            // before this point: nothing new to report.
                            Some((p, q)) if *p == d.path && *q <= d.pos => return Ok(true),
                            // Recovery's quarantine stays where it is (a
                            // reader stopped there must keep getting its
                            // error); this earlier damage is reported, and
                            // readers meet it as a checksum failure.
                            Some(_) => {}
                            None => st.quarantine = Some((d.path.clone(), d.pos)),
                        }
                    }
                    return Err(Error::corruption(
                    &d.path,
                    d.pos,
                    format!("{reason} (found by the checksum pass after open; the log is quarantined, read-only, from here)"),
                ));
                }
            };
            d.pos += u64::from(frame_len);
            d.seq += 1;
            if d.pos >= step_end && d.pos < d.end {
                *lock(&self.inner.deferred) = Some(d.clone());
                if stop() {
                    return Ok(false);
                }
                step_end = d.pos + DEFERRED_CHECK_STEP_BYTES;
            }
        }
        *lock(&self.inner.deferred) = None;
        Ok(true)
    }

    /// The error of a poisoned writer or quarantined log, if any.
    pub fn health(&self) -> Result<()> {
        let st = lock(&self.inner.sync);
        self.check_writable(&st)
    }

    fn check_writable(&self, st: &SyncState) -> Result<()> {
        if let Some((file, offset)) = &st.quarantine {
            return Err(Error::Quarantined {
                dir: self.inner.dir.clone(),
                file: file.clone(),
                offset: *offset,
            });
        }
        if let Some(cause) = &st.poisoned {
            return Err(Error::Poisoned { cause: cause.clone() });
        }
        Ok(())
    }

    /// Poisons the log (keeping the first cause), under its sync lock. The
    /// journal's checkpoints learn of it through a flag that outlives the
    /// log: a sync of a poisoned log's file proves nothing.
    fn set_poisoned(&self, st: &mut SyncState, cause: String) {
        if st.poisoned.is_none() {
            // A failed sync here may have dropped what other logs' groups
            // wrote back for a shared flush: they must not trust it.
            if let Some(coord) = &self.inner.opts.flush_coordinator {
                coord.note_failed_sync(&cause);
            }
            st.poisoned = Some(cause);
        }
        if let Some(link) = self.inner.journal.get() {
            link.poisoned_flag
                .store(true, std::sync::atomic::Ordering::Release);
        }
    }

    fn poison(&self, cause: String) -> Error {
        let mut st = lock(&self.inner.sync);
        self.set_poisoned(&mut st, cause.clone());
        self.inner.notify_sync(&st);
        let ready = take_ready(&mut st);
        drop(st);
        wake(ready);
        Error::Poisoned { cause }
    }

    /// Appends records; they get contiguous sequence numbers. Under
    /// [`SyncPolicy::Always`] this returns once they are durable.
    pub fn append(&self, records: &[RecordIn<'_>]) -> Result<Appended> {
        let (appended, pending) = self.append_deferred(records)?;
        self.complete(pending)?;
        Ok(appended)
    }

    /// Writes records like [`Log::append`] but does not wait for durability;
    /// pass the returned [`Pending`] to [`Log::complete`] (under `Always`)
    /// before acknowledging. With a sync coordinator, a caller that writes to
    /// several logs and then completes them all shares one sync among them.
    pub fn append_deferred(&self, records: &[RecordIn<'_>]) -> Result<(Appended, Pending)> {
        let total = self.check_batch(records)?;
        let mut w = lock(&self.inner.writer);
        self.health()?;
        let first_arrival = records[0].arrival_ms.max(w.last_arrival_ms);
        let age = first_arrival.saturating_sub(w.active.created_ms);
        let has_records = w.active.len > SEGMENT_HEADER_BYTES as u64;
        if has_records
            && (w.active.len + total as u64 > self.inner.opts.segment_bytes_max
                || age >= self.inner.opts.segment_age_max_ms as i64)
        {
            self.roll_locked(&mut w, first_arrival)?;
        }
        let start = w.active.len;
        let appended = self.write_locked(&mut w, records, total)?;
        let mark = self.queue_in_journal(&w, start, total);
        // A large append's group sync comes soon and will wait for these
        // pages: starting their write-back now lets the device take them
        // while the other appenders of the group still write, so the sync
        // waits for less. Advice only: `fdatasync` still writes and waits
        // for every dirty page and reports any write-back error. Smaller
        // appends go through the journal or would each cost a device
        // request. Outside the writer lock: submitting the pages takes a
        // while, and other appenders of this log need the lock meanwhile.
        let end = start + total as u64;
        let large = total > EARLY_WRITE_BACK_BYTES_MIN && self.inner.opts.sync == SyncPolicy::Always;
        // An early write-back runs from where the last one ended to the
        // last whole page of this append: the next append writes into the
        // partial one, and on a device that keeps pages stable while they
        // are written it would wait for this write. It waits until a step's
        // worth of pages has gathered (each call costs a device request and
        // its interrupts; pages left for a later call are still written by
        // the group's sync). Any other append's bytes are never in a range
        // (see `Active::early_write_back_from`).
        let first = w.active.early_write_back_from;
        let last = if large { page_floor(end) } else { page_ceil(end) };
        let starts = large && last >= first + self.early_write_back_step();
        w.active.early_write_back_from = match (large, starts) {
            // Too few pages yet: the next large append's call takes them.
            (true, false) => first,
            _ => last.max(first),
        };
        let early = starts.then(|| {
            // Registered before the writer lock goes, so that no sync can
            // end unaware of the call once it may begin.
            let mut st = lock(&self.inner.sync);
            st.early_write_back_tickets += 1;
            let early_ticket = st.early_write_back_tickets;
            st.early_write_backs.push(early_ticket);
            (
                w.active.file.clone(),
                w.active.path.clone(),
                first,
                last,
                early_ticket,
            )
        });
        let ticket = self
            .inner
            .opts
            .sync_coordinator
            .as_ref()
            .map_or(0, |c| c.ticket());
        drop(w);
        if let Some((file, path, first, last, early_ticket)) = early {
            // The kernel may have dropped pages it could not write without
            // recording an error for the next sync: this append and every
            // one not yet durable are lost (an earlier append's tail in the
            // range too, which is why syncs wait for this call).
            let lost = file
                .start_write_back(first, last - first)
                .err()
                .filter(write_back_lost_pages)
                .map(|e| {
                    format!(
                        "write-back of {} bytes {first}..{last} failed: {e}",
                        path.display()
                    )
                });
            {
                let mut st = lock(&self.inner.sync);
                if let Some(cause) = &lost {
                    self.set_poisoned(&mut st, cause.clone());
                }
                let oldest = st.early_write_backs.iter().min() == Some(&early_ticket);
                st.early_write_backs.retain(|&t| t != early_ticket);
                // Only the oldest call's end can release a waiting sync.
                if oldest {
                    self.inner.notify_sync(&st);
                }
            }
            if let Some(cause) = lost {
                let err = self.poison(cause);
                self.discard_undurable();
                return Err(err);
            }
        }
        Ok((appended, Pending { mark, ticket }))
    }

    /// How many bytes of whole pages a large append's early write-back
    /// waits for: half the average group sync, so that a group's pages go
    /// out in about two calls before its sync (each call is a device
    /// request and its interrupts), within `EARLY_WRITE_BACK_BYTES_MIN` and
    /// `EARLY_WRITE_BACK_STEP_BYTES_MAX`, on page boundaries.
    fn early_write_back_step(&self) -> u64 {
        let half_group = lock(&self.inner.sync).group_bytes_avg / 2;
        page_floor(half_group.clamp(EARLY_WRITE_BACK_BYTES_MIN as u64, EARLY_WRITE_BACK_STEP_BYTES_MAX))
    }

    /// After a write of `total` frame bytes at `start` (the bytes are in
    /// `w.buf`): queues it in the engine's journal when this log journals,
    /// the append is small, and every earlier append is durable or
    /// journaled; otherwise notes that it needs a sync of the segment.
    /// Returns the written mark. Runs under the writer lock, so that the
    /// journal gets each log's writes in order.
    fn queue_in_journal(&self, w: &Writer, start: u64, total: usize) -> Watermark {
        let mut st = lock(&self.inner.sync);
        let mark = st.written;
        let link = self.inner.journal.get().filter(|_| {
            total <= JOURNAL_WRITE_BYTES_MAX
                && st.durable.next_seq >= st.unjournaled_through
                && st.poisoned.is_none()
        });
        let path = link.and_then(|l| {
            let rel = w.active.path.strip_prefix(l.journal.root()).ok()?;
            Some(Arc::<str>::from(rel.to_str()?))
        });
        let (Some(link), Some(path)) = (link, path) else {
            st.unjournaled_through = mark.next_seq;
            return mark;
        };
        let inner = self.inner.clone();
        let write = crate::journal::JournalWrite {
            path,
            file_id: w.active.file_id,
            offset: start,
            // The frames only: not a recycled file's end marker after them,
            // which the next write covers (a write the journal may not
            // hold, which a redo of the marker would then damage).
            payload: w.buf[..total].to_vec(),
            client_id: link.client_id,
            client: link.client.clone(),
            file: w.active.file.clone(),
            done: Box::new(move |result| Log { inner, flusher: None }.journaled(mark, result)),
        };
        // The completion takes this lock on the journal's thread, which
        // never holds the journal's queue while it does.
        match link.journal.push(write) {
            Ok(()) => {
                st.journal_through = mark.next_seq;
                st.journal_last = Some(mark);
            }
            // The journal has stopped: the segment's own sync makes it durable.
            Err(_) => st.unjournaled_through = mark.next_seq,
        }
        mark
    }

    /// The journal sync holding an append that ended at `mark` completed
    /// (`Ok`) or failed: the log is durable up to `mark`, or poisoned (its
    /// unsynced tail is cut; the journal keeps what it wrote for the redo).
    ///
    /// A log poisoned meanwhile kept the bytes of its undecided journaled
    /// appends (`discard_undurable`), so a success makes them durable even
    /// then; once the journal has decided on all of them, the poisoned log
    /// cuts what is still not durable.
    fn journaled(&self, mark: Watermark, result: std::result::Result<(), String>) {
        let mut st = lock(&self.inner.sync);
        let mut advanced = false;
        match result {
            // A roll or a sync of the segment may have passed `mark`.
            Ok(()) if mark.next_seq > st.durable.next_seq => {
                st.durable = mark;
                advanced = true;
            }
            Ok(()) => {}
            Err(cause) => {
                self.set_poisoned(&mut st, cause);
            }
        }
        // A failed journal sync means the journal has stopped, so every
        // later journaled append of this log fails too: cut at once. After
        // a success, a log poisoned meanwhile cuts with its last undecided
        // append. Either way before any waiter learns the outcome (it may
        // act on it at once: retry, or stop the process).
        let failed = !advanced && st.poisoned.is_some() && mark.next_seq > st.durable.next_seq;
        if st.poisoned.is_some() && (failed || mark.next_seq >= st.journal_through) {
            drop(st);
            self.discard_undurable_keeping(false);
            st = lock(&self.inner.sync);
        }
        if advanced {
            // Before the waiters learn of it, as with the cut above: nothing
            // of this completion is left running once they have.
            drop(st);
            self.report_durable(mark);
            st = lock(&self.inner.sync);
        }
        st.journal_done = st.journal_done.max(mark.next_seq);
        self.inner.notify_sync(&st);
        let ready = take_ready(&mut st);
        drop(st);
        wake(ready);
    }

    /// A journal checkpoint: syncs the active segment (a roll synced the
    /// ones before it), as the only syncer, so that what this log journaled
    /// is durable in its own files. A quarantined log still syncs (its
    /// journaled appends are good); a poisoned one cannot prove anything and
    /// fails, as does a failed sync (which poisons the log).
    fn checkpoint_for_journal(&self) -> std::result::Result<(), String> {
        let file = {
            let mut st = self.no_sync_in_flight();
            if let Some(cause) = &st.poisoned {
                return Err(format!("log {} is poisoned ({cause})", self.inner.dir.display()));
            }
            st.syncing = true;
            st.active_file.clone()
        };
        let failed = file.sync_data().err().map(|e| {
            format!(
                "fdatasync of the active segment in {} failed: {e}",
                self.inner.dir.display()
            )
        });
        match self.end_sole_sync(failed.clone()) {
            Some(_) => {
                self.discard_undurable();
                Err(failed.unwrap_or_default())
            }
            None => Ok(()),
        }
    }

    /// After a segment sync: waits for the `syncfs` calls in flight and
    /// fails if one failed (see [`LogOptions::syncfs_watch`]).
    fn syncfs_settled(&self) -> std::result::Result<(), String> {
        match &self.inner.opts.syncfs_watch {
            Some(c) => c
                .settled()
                .map_err(|e| format!("a sync overlapped a failed syncfs ({e})")),
            None => Ok(()),
        }
    }

    /// Waits until a deferred append is durable (a no-op unless `Always`).
    pub fn complete(&self, pending: Pending) -> Result<()> {
        if self.inner.opts.sync != SyncPolicy::Always {
            return Ok(());
        }
        match &self.inner.opts.sync_coordinator {
            Some(coord) => self.wait_coordinated(coord, pending.mark, pending.ticket),
            None => self.wait_durable(pending.mark.next_seq),
        }
    }

    /// Waits until a deferred append is durable through `coord`, using a
    /// `ticket` taken after the append was written (a caller that wrote to
    /// several logs takes one ticket after all writes, and all of them share
    /// the one sync it waits for).
    pub fn complete_after_sync(
        &self,
        pending: Pending,
        coord: &crate::sync::SyncCoordinator,
        ticket: u64,
    ) -> Result<()> {
        if self.inner.opts.sync != SyncPolicy::Always {
            return Ok(());
        }
        self.wait_coordinated(coord, pending.mark, ticket)
    }

    fn wait_coordinated(
        &self,
        coord: &crate::sync::SyncCoordinator,
        goal: Watermark,
        ticket: u64,
    ) -> Result<()> {
        {
            let st = lock(&self.inner.sync);
            if st.poisoned.is_some() {
                drop(st);
                return self.settle_poisoned(goal.next_seq);
            }
            if st.durable.next_seq >= goal.next_seq {
                return Ok(());
            }
        }
        match coord.wait(ticket) {
            Ok(()) => {
                let mut st = self.early_write_backs_settled(lock(&self.inner.sync));
                // Another appender's failed sync may have poisoned the log and
                // cut its unsynced tail (ours included) after our sync ran.
                if st.poisoned.is_some() {
                    drop(st);
                    return self.settle_poisoned(goal.next_seq);
                }
                let advanced = goal.next_seq > st.durable.next_seq;
                if advanced {
                    st.durable = goal;
                }
                let ready = take_ready(&mut st);
                drop(st);
                wake(ready);
                if advanced {
                    self.report_durable(goal);
                }
                Ok(())
            }
            Err(cause) => {
                let _ = self.poison(cause);
                self.discard_undurable();
                self.settle_poisoned(goal.next_seq)
            }
        }
    }

    /// On a poisoned log: waits until the journal has decided on the
    /// append that ends before `target` if it was journaled, and returns
    /// the outcome ([`SyncState::poisoned_outcome`]).
    fn settle_poisoned(&self, target: u64) -> Result<()> {
        let mut st = lock(&self.inner.sync);
        loop {
            let cause = st.poisoned.clone().unwrap_or_default();
            if !st.journal_pending(target) {
                let outcome = st.poisoned_outcome(target, &cause);
                drop(st);
                if outcome.is_err() {
                    // This append failed: its bytes must not outlive the
                    // answer (a reader that then finds it absent must never
                    // see it come back after a crash). The poisoning cut
                    // what was written before it; an append that wrote
                    // after that cut, or was not journaled, is cut here.
                    self.discard_undurable();
                }
                return outcome;
            }
            st = self.inner.wait_sync(st);
        }
    }

    fn check_batch(&self, records: &[RecordIn<'_>]) -> Result<usize> {
        if records.is_empty() {
            return Err(Error::InvalidArgument(
                "an append needs at least one record".into(),
            ));
        }
        if records.len() > APPEND_RECORDS_MAX {
            return Err(Error::InvalidArgument(format!(
                "an append holds at most {APPEND_RECORDS_MAX} records"
            )));
        }
        let mut total = 0usize;
        for r in records {
            frame::validate(r, self.inner.opts.data_bytes_max)?;
            total += frame::frame_len(r.partition_key.len(), r.data.len());
        }
        if total > APPEND_BYTES_MAX {
            return Err(Error::InvalidArgument(format!(
                "an append holds at most {APPEND_BYTES_MAX} bytes, got {total}"
            )));
        }
        Ok(total)
    }

    /// Makes room for frames up to `need`: preallocates space in steps
    /// (`fallocate`), and, while this log's group syncs are small, writes
    /// zeros ahead of the frames.
    ///
    /// Why zeros: `fallocate`d space is an unwritten extent. Each `fdatasync`
    /// after a write into it converts part of the extent and writes the
    /// inode and extent blocks before the flush, two or three device round
    /// trips where overwriting written space needs one. For small groups
    /// (single records) that is most of a sync's cost; zeros written a step
    /// ahead are converted once per step, by the sync that happens to flush
    /// them. For large groups the conversion is a small share and the zeros
    /// would double the bytes written, so they are not written (see
    /// `ZERO_FILL_GROUP_BYTES_MAX` and docs/PERFORMANCE.md).
    ///
    /// Zeros are written only at or above `need`, never over a frame, and
    /// read back exactly as preallocated space does: recovery needs nothing
    /// new for them.
    fn prepare_space(&self, w: &mut Writer, need: u64) -> Result<()> {
        if w.active.recycled {
            // The file's blocks are written already; only what goes past
            // its old end is preallocated, and no zeros are written ahead
            // (they would double the bytes written).
            if need > w.active.allocated {
                self.preallocate(w, need)?;
            }
            return Ok(());
        }
        // Enough space, and no decision due: zeroed far enough while
        // zero-filling, or within a step of the last decision while not.
        if need <= w.active.allocated && need <= w.active.decide_at {
            return Ok(());
        }
        let zero_fill = lock(&self.inner.sync).group_bytes_avg <= ZERO_FILL_GROUP_BYTES_MAX;
        let zero_to = if zero_fill && need > w.active.zeroed {
            // Never past the roll size: the roll would cut those zeros.
            ((need / ZERO_FILL_STEP_BYTES + 2) * ZERO_FILL_STEP_BYTES)
                .min(self.inner.opts.segment_bytes_max)
                .max(need)
        } else {
            need
        };
        if zero_to > w.active.allocated {
            self.preallocate(w, zero_to)?;
        }
        if zero_to > need {
            // Nothing has been written at or after `need` since the file was
            // last cut there (`zeroed` would say so), so these zeros land on
            // preallocated space only. A failed write leaves zeros or nothing
            // there: no frame is touched, the error is the caller's alone.
            // The slice cannot overrun ZEROS: zero_to is at most
            // (need / step + 2) * step, so zero_to - need <= 2 * step.
            w.active
                .file
                .write_all_at(&ZEROS[..(zero_to - need) as usize], need)
                .map_err(|e| Error::io("zero-fill segment", &w.active.path, e))?;
            w.active.zeroed = zero_to;
            crate::stats::record_zero_fill(zero_to - need);
        }
        w.active.decide_at = if zero_to > need {
            zero_to
        } else {
            need + ZERO_FILL_DECIDE_BYTES
        };
        Ok(())
    }

    fn write_locked(&self, w: &mut Writer, records: &[RecordIn<'_>], total: usize) -> Result<Appended> {
        let start = w.active.len;
        let need = start + total as u64;
        // In a recycled file the zeros after the frames are written with
        // them: the bytes there are an older segment's, not zeros.
        let marker = if w.active.recycled {
            RECYCLED_END_MARKER_BYTES
        } else {
            0
        };
        self.prepare_space(w, need + marker as u64)?;
        let synced_upto = {
            let st = lock(&self.inner.sync);
            if st.durable.segment_base == w.active.base_seq {
                st.durable.offset as u32
            } else {
                SEGMENT_HEADER_BYTES as u32
            }
        };
        let mut buf = std::mem::take(&mut w.buf);
        buf.clear();
        let mut placed = std::mem::take(&mut w.placed);
        placed.clear();
        let first_seq = w.next_seq;
        let mut arrival = w.last_arrival_ms;
        let mut first_arrival = i64::MIN;
        for (i, r) in records.iter().enumerate() {
            arrival = arrival.max(r.arrival_ms);
            if i == 0 {
                first_arrival = arrival;
            }
            let offset = start + buf.len() as u64;
            let stored = RecordIn {
                arrival_ms: arrival,
                ..*r
            };
            frame::encode(
                &mut buf,
                w.active.file_id,
                first_seq + i as u64,
                synced_upto,
                &stored,
            );
            placed.push(Placed {
                seq: first_seq + i as u64,
                offset,
                arrival_ms: arrival,
                frame_len: (start + buf.len() as u64 - offset) as u32,
            });
        }
        let frames_len = buf.len();
        buf.resize(frames_len + marker, 0);
        if let Err(e) = w.active.file.write_all_at(&buf, start) {
            let err = Error::io("write", &w.active.path, e);
            // A failed write may have left part of the frames in the file:
            // whole frames, with valid checksums and the next sequence
            // numbers. Cutting the file back to the end of valid data removes
            // them, and the cut is made durable before anyone learns that the
            // write failed: a crash that kept the landed frames and lost the
            // cut would bring back, behind the acknowledged records, records
            // whose put was answered "failed" after a reader had found them
            // absent (`frames_a_failed_write_left_never_come_back_after_a_crash`).
            // If the cut is durable, a full disk is an ordinary, retriable
            // condition.
            //
            // The sync of the cut is the log's only sync while it runs, as a
            // roll's is: Linux reports a writeback error to one of several
            // concurrent fsyncs of a file only, so a group leader syncing
            // at the same moment could return success for pages this call
            // was told were lost. A failure poisons the log in the same
            // critical section that ends the sync (`end_sole_sync`). The
            // log's state is not checked first: the cut must be made
            // durable even if the log was poisoned meanwhile.
            let truncated = w.active.file.set_len(start).is_ok();
            let sync_failed = if truncated {
                self.no_sync_in_flight().syncing = true;
                let failed = w.active.file.sync_data().err().map(|e| {
                    format!(
                        "fsync of {} after cutting a failed write ({err}) failed: {e}",
                        w.active.path.display()
                    )
                });
                self.end_sole_sync(failed)
            } else {
                None
            };
            let cut_durable = truncated && sync_failed.is_none();
            if err.is_retriable() && cut_durable {
                self.cut_active(w, start);
                w.buf = buf;
                w.placed = placed;
                return Err(err);
            }
            w.buf = buf;
            w.placed = placed;
            let err = self.poison(format!("write to {} failed: {err}", w.active.path.display()));
            // What the failed write left in the file was never acknowledged,
            // nor (under Always) anything after the last sync: its appenders
            // learn of the poison. Cut it, so that a restart does not serve
            // it from the page cache. Readers never see past `start` (the
            // written watermark before this write) or, under Always, past
            // the durable one.
            if truncated {
                self.cut_active(w, start);
            }
            self.discard_undurable_locked(w);
            return Err(err);
        }
        w.active.len = start + frames_len as u64;
        w.next_seq = first_seq + records.len() as u64;
        w.last_arrival_ms = arrival;
        self.inner.observer.placed(w.active.base_seq, &placed);
        {
            let mut st = lock(&self.inner.sync);
            st.written = Watermark {
                next_seq: w.next_seq,
                segment_base: w.active.base_seq,
                offset: w.active.len,
                file_id: w.active.file_id,
                last_arrival_ms: w.last_arrival_ms,
            };
            st.space_written = w.active.zeroed.max(w.active.len).max(start + buf.len() as u64);
            st.end_marker = marker as u64;
        }
        w.buf = buf;
        w.placed = placed;
        Ok(Appended {
            first_seq,
            count: records.len() as u32,
            first_arrival_ms: first_arrival,
            last_arrival_ms: arrival,
        })
    }

    /// Seals the active segment (fsync) and starts a new one.
    fn roll_locked(&self, w: &mut Writer, created_ms: i64) -> Result<()> {
        // Opens scan only the active segment: one sealed with checksums the
        // pass after open has not verified yet would never be checked at an
        // open again, and damage in it would not keep the log quarantined.
        // So that pass is finished on it first.
        if lock(&self.inner.deferred)
            .as_ref()
            .is_some_and(|d| d.path == w.active.path)
        {
            self.check_deferred(&|| false)?;
        }
        let old_path = w.active.path.clone();
        // Sealed segments end exactly at their last frame: the preallocated
        // zeros go, so a sealed file holds nothing but header and frames. The
        // cut is at the end of valid data, at or above every reader's
        // watermark (see the SAFETY note in mmap.rs).
        //
        // The roll syncs the file itself, so it first becomes the only
        // syncer. That also refuses a quarantined log: the pass after open
        // may have found damage in this segment just now (on another
        // thread); it must not be sealed and written past.
        self.begin_sole_sync()?;
        let cut = if w.active.allocated > w.active.len {
            w.active.file.set_len(w.active.len)
        } else {
            Ok(())
        };
        if cut.is_ok() {
            // Should the next segment fail to start (a full disk), this one
            // stays active and must preallocate again before its next write.
            let len = w.active.len;
            self.cut_active(w, len);
        }
        let failed = cut
            .and_then(|()| w.active.file.sync_data())
            .map_err(|e| format!("fsync of {} failed: {e}", old_path.display()))
            .and_then(|()| self.syncfs_settled())
            .err();
        if let Some(err) = self.end_sole_sync_of_all(failed) {
            self.discard_undurable_locked(w);
            return Err(err);
        }
        let end_seq = w.next_seq;
        let end_offset = w.active.len;
        let old_base = w.active.base_seq;
        let old_file_id = w.active.file_id;
        // The last id comes from a header on disk and may be any u64; past
        // u64::MAX the clock alone picks the next one.
        let file_id = w.last_file_id.checked_add(1).unwrap_or(0).max(now_micros());
        let new = match self.next_segment(end_seq, file_id, created_ms, w.last_arrival_ms) {
            Ok(n) => n,
            // The old segment is intact and synced; a failure to create the
            // next one (disk full, say) leaves the log as it was.
            Err(e) if e.is_retriable() => return Err(e),
            Err(e) => return Err(self.poison(format!("could not start a new segment: {e}"))),
        };
        let old_file = std::mem::replace(&mut w.active, new.active).file;
        w.last_file_id = file_id;
        self.cache_rolled(old_file, end_offset, end_seq, &w.active.file);
        // A map made while the segment was active may be shorter than its
        // final length; readers of the sealed segment must map it afresh.
        lock(&self.inner.maps).maps.remove(&old_base);
        {
            let mut segs = self.inner.segments.write().unwrap_or_else(|p| p.into_inner());
            if let Some(e) = segs.get_mut(&old_base) {
                e.end_seq = Some(end_seq);
            }
            segs.insert(
                end_seq,
                SegmentEntry {
                    path: w.active.path.clone(),
                    end_seq: None,
                },
            );
        }
        {
            let mut st = lock(&self.inner.sync);
            let mark = Watermark {
                next_seq: end_seq,
                segment_base: end_seq,
                offset: SEGMENT_HEADER_BYTES as u64,
                file_id: w.active.file_id,
                last_arrival_ms: w.last_arrival_ms,
            };
            st.written = mark;
            st.durable = mark;
            st.active_file = w.active.file.clone();
            st.space_written = w.active.zeroed.max(w.active.len);
            st.end_marker = 0;
            st.settled = 0;
            st.cuts += 1;
            self.inner.notify_sync(&st);
            let ready = take_ready(&mut st);
            drop(st);
            wake(ready);
        }
        self.inner.observer.sealed(&SealedInfo {
            dir: self.inner.dir.clone(),
            segment_base: old_base,
            end_seq,
            end_offset,
            file_id: old_file_id,
            fs: self.inner.fs.clone(),
        });
        Ok(())
    }

    /// Rolls the active segment if it holds records and is older than the
    /// age limit at `now_ms`. Lets idle shards age out their data.
    pub fn roll_if_older(&self, now_ms: i64) -> Result<bool> {
        let mut w = lock(&self.inner.writer);
        self.health()?;
        let has_records = w.active.len > SEGMENT_HEADER_BYTES as u64;
        if has_records
            && now_ms.saturating_sub(w.active.created_ms) >= self.inner.opts.segment_age_max_ms as i64
        {
            let created = now_ms.max(w.last_arrival_ms);
            self.roll_locked(&mut w, created)?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Seals the active segment now (if it holds records).
    pub fn roll(&self) -> Result<()> {
        let mut w = lock(&self.inner.writer);
        self.health()?;
        if w.active.len > SEGMENT_HEADER_BYTES as u64 {
            let created = now_ms().max(w.last_arrival_ms);
            self.roll_locked(&mut w, created)?;
        }
        Ok(())
    }

    /// Waits until records below `target` are durable, leading a group sync
    /// when none is in flight.
    fn wait_durable(&self, target: u64) -> Result<()> {
        let mut st = lock(&self.inner.sync);
        loop {
            if st.poisoned.is_some() {
                drop(st);
                return self.settle_poisoned(target);
            }
            if st.durable.next_seq >= target {
                return Ok(());
            }
            // A journaled append: the journal's completion wakes us.
            if st.syncing || target <= st.journal_through {
                st = self.inner.wait_sync(st);
                continue;
            }
            st = self.lead_sync(st, true);
        }
    }

    /// Runs one group sync: everything written when it starts becomes
    /// durable. The caller found no sync in flight; `st` is released during
    /// the fsync and taken again after it. Wakes the waiters it satisfies.
    fn lead_sync<'a>(
        &'a self,
        mut st: MutexGuard<'a, SyncState>,
        yield_first: bool,
    ) -> MutexGuard<'a, SyncState> {
        st.syncing = true;
        drop(st);
        // A blocking appender that leads lets appenders that are already
        // runnable add their records to this group before it closes (+23%
        // at 16 appenders). This is a yield, not a timer: with no other
        // appender runnable it returns at once. A pool thread does not
        // yield: async appenders write on other threads before they wake
        // it, and measured, its yield only added latency.
        if yield_first {
            std::thread::yield_now();
        }
        st = lock(&self.inner.sync);
        let goal = st.written;
        let file = st.active_file.clone();
        // A group that only overwrites settled space needs no metadata: it
        // is written back here and made durable by a flush shared with
        // other logs. Anything else (the first group of a segment, one that
        // reaches zeros not yet synced or preallocated space) syncs the
        // file, which settles what had been written when it began.
        let shared = match &self.inner.opts.flush_coordinator {
            Some(coord)
                if goal.segment_base == st.durable.segment_base
                    && goal.offset + st.end_marker <= st.settled
                    && goal.offset - st.durable.offset.min(goal.offset) <= SHARED_FLUSH_GROUP_BYTES_MAX =>
            {
                Some((coord.clone(), st.durable.offset))
            }
            _ => None,
        };
        let space = (goal.segment_base, st.space_written, st.cuts);
        drop(st);
        let started = std::time::Instant::now();
        let result = match &shared {
            Some((coord, from)) => coord.sync_group(&*file, *from, &self.inner.dir),
            None => {
                let r = file.sync_data().map_err(|e| format!("fdatasync failed: {e}"));
                crate::stats::record_fsync(started.elapsed());
                r.map(|()| false)
            }
        }
        .and_then(|shared| self.syncfs_settled().map(|()| shared));
        st = self.early_write_backs_settled(lock(&self.inner.sync));
        st.syncing = false;
        let mut advanced = None;
        match result {
            Ok(true) => crate::stats::record_shared_group(),
            // An fdatasync of the file settled what was written when it began.
            Ok(false)
                if st.poisoned.is_none() && st.written.segment_base == space.0 && st.cuts == space.2 =>
            {
                st.settled = st.settled.max(space.1);
            }
            _ => {}
        }
        match result {
            // A log poisoned meanwhile (a failed write elsewhere) may have
            // been cut back below `goal`: the durable mark must not pass the
            // end of the file, or readers would map beyond it.
            Ok(_) if st.poisoned.is_some() => {}
            Ok(_) => {
                if goal.next_seq > st.durable.next_seq {
                    crate::stats::record_group(goal.next_seq - st.durable.next_seq);
                    if goal.segment_base == st.durable.segment_base {
                        let bytes = goal.offset.saturating_sub(st.durable.offset);
                        st.group_bytes_avg = st.group_bytes_avg - st.group_bytes_avg / 8 + bytes / 8;
                    }
                    st.durable = goal;
                    advanced = Some(goal);
                }
            }
            Err(e) => {
                self.set_poisoned(&mut st, e);
            }
        }
        // Blocking waiters first, before any cut: a roll may hold the
        // writer lock while it waits for this sync to end.
        self.inner.notify_sync(&st);
        if st.poisoned.is_some() {
            // Cut before async waiters learn of the failure: an appender
            // whose bytes were written while this sync ran (still pending,
            // not dropped with the failed sync's pages) would otherwise
            // answer "failed" while a crash could still bring its record
            // back. Blocking waiters cut on their own before they answer
            // (`settle_poisoned`), as async ones do too (`Durable::poll`).
            drop(st);
            self.discard_undurable();
            st = lock(&self.inner.sync);
            let ready = take_ready(&mut st);
            drop(st);
            wake(ready);
            return lock(&self.inner.sync);
        }
        let ready = take_ready(&mut st);
        drop(st);
        wake(ready);
        if let Some(goal) = advanced {
            self.report_durable(goal);
        }
        st = lock(&self.inner.sync);
        if self.waiters_need_a_job(&st) {
            if let Some(job) = queue_pool_job(&self.inner, st) {
                job();
            }
            st = lock(&self.inner.sync);
        }
        st
    }

    /// Whether async waiters are left that no sync in flight or queued will
    /// cover (records written during the sync that just ended, say): the
    /// log's job is then queued on the pool again.
    fn waiters_need_a_job(&self, st: &SyncState) -> bool {
        !(st.syncing || st.queued || st.poisoned.is_some()) && needs_segment_sync(st)
    }

    /// A future that resolves once a deferred append is durable (at once
    /// unless the policy is `Always`). Awaiting it blocks no thread when the
    /// log has a [`crate::sync::SyncPool`]: a pool thread runs the group sync
    /// and wakes the task. Without a pool the first poll syncs inline. On a
    /// poisoned log, the poll that reports a failed append first cuts the
    /// log's undurable bytes (the writer lock, a `set_len` and an
    /// `fdatasync` on the polling thread): a failure path only, but on a
    /// failing device that sync may be slow, and it blocks the runtime's
    /// worker meanwhile.
    ///
    /// Dropping the future does not undo the append, which may still become
    /// durable; the caller just does not learn of it.
    pub fn durable(&self, pending: Pending) -> Durable {
        let inner = (self.inner.opts.sync == SyncPolicy::Always).then(|| self.inner.clone());
        let target = pending.mark.next_seq;
        if inner.is_some() {
            self.await_from_pool(target);
        }
        Durable { inner, target }
    }

    /// Notes that a [`Durable`] waits for `target` and queues the log's sync
    /// job now if none is queued: the group sync starts when the future is
    /// made, not when it is first polled, and a job already running keeps
    /// going for it (`SyncState::awaited_through`). Without a pool the first
    /// poll syncs as before.
    fn await_from_pool(&self, target: u64) {
        if self.inner.opts.sync_pool.is_none() {
            return;
        }
        let mut st = lock(&self.inner.sync);
        if st.durable.next_seq >= target || st.poisoned.is_some() {
            return;
        }
        st.awaited_through = st.awaited_through.max(target);
        // A journaled append is completed by the journal's thread.
        if st.queued || target <= st.journal_through {
            return;
        }
        if let Some(job) = queue_pool_job(&self.inner, st) {
            job();
        }
    }

    /// Makes this thread the log's only syncer, once no group sync is in
    /// flight and the log takes writes. A roll and a clean-stop marker sync
    /// the file themselves, and Linux reports a writeback error to one of
    /// several concurrent fsyncs only: a group leader's failure must not be
    /// missed by them (or the other way round).
    fn begin_sole_sync(&self) -> Result<()> {
        let mut st = self.no_sync_in_flight();
        self.check_writable(&st)?;
        st.syncing = true;
        Ok(())
    }

    /// The sync state once no group sync, roll or checkpoint is syncing.
    fn no_sync_in_flight(&self) -> MutexGuard<'_, SyncState> {
        let mut st = lock(&self.inner.sync);
        while st.syncing {
            st = self.inner.wait_sync(st);
        }
        st
    }

    /// Ends [`Log::begin_sole_sync`]. A failed sync (`failed`, its cause)
    /// poisons the log in the same critical section that ends it: a waiter
    /// woken by the end must not lead a sync of its own, which Linux would
    /// report as a success after the error went to this one. Returns the
    /// poisoned error then.
    fn end_sole_sync(&self, failed: Option<String>) -> Option<Error> {
        {
            let mut st = self.early_write_backs_settled(lock(&self.inner.sync));
            st.syncing = false;
            if let Some(cause) = &failed {
                self.set_poisoned(&mut st, cause.clone());
            }
            self.inner.notify_sync(&st);
        }
        failed.map(|cause| self.poison(cause))
    }

    /// [`Log::end_sole_sync`] for a sync that vouches for every byte of the
    /// active segment (a roll sealing it, a clean-stop marker): it fails
    /// too if the log was poisoned while it ran, since a failed early
    /// write-back meanwhile may have dropped pages the sync then did not
    /// write. (A journal checkpoint vouches only for journaled bytes, which
    /// no early write-back covers, and uses `end_sole_sync`.)
    fn end_sole_sync_of_all(&self, failed: Option<String>) -> Option<Error> {
        let failed = self.end_sole_sync(failed);
        failed.or_else(|| {
            let cause = lock(&self.inner.sync).poisoned.clone()?;
            Some(Error::Poisoned { cause })
        })
    }

    /// `st` once every early write-back begun so far has returned (see
    /// [`SyncState::early_write_backs`]): a sync checks for poison only
    /// after this. The calls only submit pages, so the wait is short.
    fn early_write_backs_settled<'a>(&self, mut st: MutexGuard<'a, SyncState>) -> MutexGuard<'a, SyncState> {
        let issued = st.early_write_back_tickets;
        while st.early_write_backs.iter().any(|&t| t <= issued) {
            st = self.inner.wait_sync(st);
        }
        st
    }

    /// A roll sealed `old`, `old_len` bytes long (its pages are dropped
    /// as newer data fills the window), and made `new`, at `base`, active.
    /// No I/O here: the roll holds the writer.
    fn cache_rolled(&self, old: Arc<dyn FileHandle>, old_len: u64, base: u64, new: &Arc<dyn FileHandle>) {
        if self.inner.opts.cache_window_bytes.is_none() {
            return;
        }
        let mut c = lock(&self.inner.cache);
        let upto = c.upto;
        let old_base = c.base;
        c.sealed.push_back(SealedCache {
            base: old_base,
            file: old,
            upto,
            len: old_len,
        });
        c.base = base;
        c.file = new.clone();
        c.upto = 0;
    }

    /// Drops the written pages of this log that lie more than the cache
    /// window behind the durable end `goal`: in the active segment in steps
    /// of `CACHE_RELEASE_STEP_BYTES`, in sealed segments to their ends.
    /// Offsets are rounded down to pages, so each page is dropped by one
    /// call. Advice only: a failure is ignored, and a concurrent call
    /// leaves the work to the next sync.
    fn release_cache(&self, goal: Watermark) {
        let Some(window) = self.inner.opts.cache_window_bytes else {
            return;
        };
        let Ok(mut c) = self.inner.cache.try_lock() else {
            return;
        };
        if c.base != goal.segment_base {
            // A report for a segment sealed since; the next one catches up.
            return;
        }
        let page = |at: u64| at / CACHE_PAGE_BYTES * CACHE_PAGE_BYTES;
        let behind = page(goal.offset.saturating_sub(window));
        if behind >= c.upto.saturating_add(CACHE_RELEASE_STEP_BYTES) {
            let from = c.upto;
            if c.file.drop_cache(from, Some(behind - from)).is_ok() {
                crate::stats::record_cache_drop_advised(behind - from);
                c.advised += behind - from;
            }
            c.upto = behind;
        }
        // The bytes of the log after each sealed segment, newest first: if
        // they fill the window, the whole segment is behind it; otherwise
        // the window reaches back into it.
        let mut newer = goal.offset.saturating_sub(SEGMENT_HEADER_BYTES as u64);
        let tracked = c.sealed.len();
        let mut advised = 0;
        for (i, s) in c.sealed.iter_mut().enumerate().rev() {
            // Past the tracking limit, the oldest go whole whatever the
            // window (a window wider than this many segments).
            let end = if newer >= window || tracked - i > CACHE_SEALED_TRACKED_MAX {
                s.len
            } else {
                page(s.len.saturating_sub(window - newer))
            };
            if end > s.upto && (end == s.len || end >= s.upto.saturating_add(CACHE_RELEASE_STEP_BYTES)) {
                if s.file.drop_cache(s.upto, Some(end - s.upto)).is_ok() {
                    crate::stats::record_cache_drop_advised(end - s.upto);
                    advised += end - s.upto;
                }
                s.upto = end;
            }
            newer = newer.saturating_add(s.len.saturating_sub(SEGMENT_HEADER_BYTES as u64));
        }
        c.advised += advised;
        c.sealed.retain(|s| s.upto < s.len);
    }

    /// Tells the observer how far the active segment is durable (first: its
    /// checkpoints bound the work of an open after a crash), then drops
    /// what fell out of the cache window.
    fn report_durable(&self, goal: Watermark) {
        self.inner.observer.durable(
            goal.segment_base,
            &ResumePoint {
                file_id: goal.file_id,
                offset: goal.offset,
                next_seq: goal.next_seq,
                last_arrival_ms: goal.last_arrival_ms,
                anchor: None,
            },
        );
        self.release_cache(goal);
    }

    /// After a failed fsync the kernel may keep the unsynced pages in its
    /// cache while never writing them; a reopen would then read records that
    /// are not on disk and were never acknowledged. Under `Always`, cut the
    /// active segment back to its durable end so that what a reopen sees is
    /// what was acknowledged. Best effort: the writer is poisoned either way.
    fn discard_undurable(&self) {
        self.discard_undurable_keeping(true);
    }

    /// [`Log::discard_undurable`], keeping the journaled appends the journal
    /// has not decided on yet only with `keep_journaled`.
    fn discard_undurable_keeping(&self, keep_journaled: bool) {
        let mut w = lock(&self.inner.writer);
        self.discard_undurable_in(&mut w, keep_journaled);
    }

    /// [`Log::discard_undurable`] for a caller that holds the writer.
    fn discard_undurable_locked(&self, w: &mut Writer) {
        self.discard_undurable_in(w, true);
    }

    fn discard_undurable_in(&self, w: &mut Writer, keep_journaled: bool) {
        if self.inner.opts.sync != SyncPolicy::Always {
            return;
        }
        let (durable, keep) = {
            let st = lock(&self.inner.sync);
            // Journaled appends the journal has not decided on yet stay: its
            // sync may still make them durable (their waiters learn which),
            // and they will be cut once it has decided, if they are not.
            let keep = match st.journal_last {
                Some(j)
                    if keep_journaled
                        && st.journal_done < st.journal_through
                        && j.segment_base == st.durable.segment_base
                        && j.offset > st.durable.offset =>
                {
                    j.offset
                }
                _ => st.durable.offset,
            };
            (st.durable, keep)
        };
        if durable.segment_base == w.active.base_seq && w.active.len > keep {
            if w.active.file.set_len(keep).is_ok() {
                let _ = w.active.file.sync_data();
            }
            w.active.len = keep;
            self.cut_active(w, keep);
        }
    }

    /// Records that the active segment's file was cut to `len` bytes: the
    /// writer's space ([`Active::cut_to`]) and the settled space of shared
    /// flushes both end there now (a later extension is new space).
    fn cut_active(&self, w: &mut Writer, len: u64) {
        w.active.cut_to(len);
        let mut st = lock(&self.inner.sync);
        if st.written.segment_base == w.active.base_seq {
            st.settled = st.settled.min(len);
            st.space_written = st.space_written.min(len);
        }
        st.cuts += 1;
    }

    /// Bytes of this log's segment files it has advised the kernel to drop
    /// from the page cache (see `LogOptions::cache_window_bytes`).
    pub fn cache_drop_advised_bytes(&self) -> u64 {
        lock(&self.inner.cache).advised
    }

    /// Makes everything written so far durable (and visible).
    pub fn sync(&self) -> Result<()> {
        let target = self.next_seq();
        self.wait_durable(target)
    }

    /// Maps a segment. `need` is the readable end for the active segment, or
    /// `None` to ask for a complete (sealed) segment.
    /// The error for a segment that is not (or no longer) listed: the range
    /// error a reader gets for data retention has removed.
    /// Whether the segment at `base` is still listed (retention has not
    /// removed it).
    fn is_listed(&self, base: u64) -> bool {
        self.inner
            .segments
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(&base)
    }

    fn segment_gone(&self, base: u64) -> Error {
        let first = {
            let segs = self.inner.segments.read().unwrap_or_else(|p| p.into_inner());
            segs.keys().next().copied().unwrap_or(0)
        };
        Error::SequenceOutOfRange {
            seq: base,
            first,
            next: self.next_seq(),
        }
    }

    fn mapped(&self, base: u64, need: Option<u64>) -> Result<Arc<MappedSegment>> {
        {
            let mut cache = lock(&self.inner.maps);
            cache.tick += 1;
            let tick = cache.tick;
            if let Some((m, used)) = cache.maps.get_mut(&base) {
                let fresh = match need {
                    None => m.complete,
                    Some(need) if m.live => m.map.len() as u64 >= need,
                    Some(need) => m.valid_upto >= need,
                };
                if fresh {
                    *used = tick;
                    return Ok(m.clone());
                }
            }
        }
        let listed = {
            let segs = self.inner.segments.read().unwrap_or_else(|p| p.into_inner());
            segs.get(&base).map(|e| (e.path.clone(), e.end_seq.is_some()))
        };
        let Some((path, complete)) = listed else {
            return Err(self.segment_gone(base));
        };
        // Retention may remove the segment (unlink it, or rename it for
        // reuse) between the look-up above and the open: that is the range
        // error a look-up a moment later would give, not an I/O failure.
        let gone_or = |e: Error| -> Error {
            if self.is_listed(base) {
                e
            } else {
                self.segment_gone(base)
            }
        };
        let file = self
            .inner
            .fs
            .open_read(&path)
            .map_err(|e| gone_or(Error::io("open segment", &path, e)))?;
        let len = file
            .len()
            .map_err(|e| gone_or(Error::io("stat segment", &path, e)))?;
        let need = need.unwrap_or(0);
        if len < need {
            return Err(Error::corruption(
                &path,
                len,
                format!("segment is {len} bytes, expected at least {need}"),
            ));
        }
        let map = file
            .map(len as usize)
            .map_err(|e| gone_or(Error::io("map segment", &path, e)))?;
        // Retention may have removed the segment while it was being mapped.
        // Its file may then be kept for reuse and written again, so the map
        // is dropped unread, exactly as if the segment had been looked up a
        // moment later. The check and the registration of the map are made
        // under the cache's lock: retention takes a segment off the list
        // before it takes, under this lock, the list of the segment's maps,
        // so a map is either in that list or refused here. Caching a removed
        // segment's map would also keep its space in use. (Nothing takes the
        // cache's lock while holding the list's, so the nesting cannot
        // deadlock.)
        let mut cache = lock(&self.inner.maps);
        if !self.is_listed(base) {
            drop(cache);
            drop(map);
            return Err(self.segment_gone(base));
        }
        let header = SegmentHeader::decode(map.as_slice()).map_err(|r| Error::corruption(&path, 0, r))?;
        if header.base_seq != base {
            return Err(Error::corruption(
                &path,
                HDR_BASE_SEQ_OFFSET as u64,
                format!(
                    "header says base sequence {} but the file name says {base}",
                    header.base_seq
                ),
            ));
        }
        let live = matches!(map, Mapping::Mmap(_));
        let seg = Arc::new(MappedSegment {
            base_seq: base,
            file_id: header.file_id,
            path,
            map,
            valid_upto: need,
            live,
            complete,
        });
        let maps = cache.live.entry(base).or_default();
        maps.retain(|m| m.strong_count() > 0);
        maps.push(Arc::downgrade(&seg));
        cache.tick += 1;
        let tick = cache.tick;
        cache.maps.insert(base, (seg.clone(), tick));
        while cache.maps.len() > self.inner.opts.mapped_segments_max {
            let oldest = cache.maps.iter().min_by_key(|(_, (_, t))| *t).map(|(b, _)| *b);
            match oldest {
                Some(b) => {
                    cache.maps.remove(&b);
                }
                None => break,
            }
        }
        Ok(seg)
    }

    /// Position of the first record of the segment holding `seq`, found
    /// without an index (callers with an index pass a closer position).
    pub fn segment_start(&self, seq: u64) -> Result<Position> {
        let segs = self.inner.segments.read().unwrap_or_else(|p| p.into_inner());
        let next = self.next_seq();
        let first = segs.keys().next().copied().unwrap_or(0);
        if seq < first || seq > next {
            return Err(Error::SequenceOutOfRange { seq, first, next });
        }
        let (base, _) =
            segs.range(..=seq)
                .next_back()
                .ok_or(Error::SequenceOutOfRange { seq, first, next })?;
        Ok(Position {
            segment_base: *base,
            offset: SEGMENT_HEADER_BYTES as u64,
        })
    }

    /// The mapped segment that holds `pos`, the number of its bytes a reader
    /// may look at, whether that number is a bound inside the file (the
    /// active segment) rather than the file's end, and the segment's end
    /// sequence number (sealed segments only).
    fn readable(&self, pos: Position, expect_seq: u64) -> Result<Readable> {
        let visible = self.visible();
        let end_seq = {
            let segs = self.inner.segments.read().unwrap_or_else(|p| p.into_inner());
            match segs.get(&pos.segment_base) {
                Some(e) => e.end_seq,
                None => {
                    return Err(Error::SequenceOutOfRange {
                        seq: expect_seq,
                        first: segs.keys().next().copied().unwrap_or(0),
                        next: visible.next_seq,
                    })
                }
            }
        };
        // Bytes of this segment a reader may look at: all of a sealed one,
        // the visible prefix of the active one, and nothing of a segment that
        // became active after the watermark was read.
        let readable_end = if visible.segment_base == pos.segment_base {
            Some(visible.offset)
        } else if end_seq.is_some() {
            None
        } else {
            Some(SEGMENT_HEADER_BYTES as u64)
        };
        let seg = self.mapped(pos.segment_base, readable_end)?;
        let limit = match readable_end {
            Some(end) => end as usize,
            None => seg.bytes().len(),
        };
        Ok(Readable {
            seg,
            limit,
            bounded: readable_end.is_some(),
            end_seq,
        })
    }

    /// Reads records starting at `pos`, which must be the frame of sequence
    /// number `expect_seq`, up to `limits` or the end of the segment. Only
    /// records below the visible watermark are returned. At the end of a
    /// sealed segment `next` moves to the following segment. Every record
    /// returned has had its checksum verified.
    pub fn read_at(&self, pos: Position, expect_seq: u64, limits: ReadLimits) -> Result<ReadBatch> {
        self.read_until(pos, expect_seq, limits, |_, _| false)
    }

    /// [`Log::read_at`] that also stops right after the first record for
    /// which `stop` is true (sequence number, arrival time), so that a search
    /// verifies the checksums of the records up to its answer and no more.
    pub fn read_until(
        &self,
        pos: Position,
        expect_seq: u64,
        limits: ReadLimits,
        mut stop: impl FnMut(u64, i64) -> bool,
    ) -> Result<ReadBatch> {
        let Readable {
            seg,
            limit,
            bounded,
            end_seq,
        } = self.readable(pos, expect_seq)?;
        let readable_end = bounded.then_some(limit);
        let bytes = seg.bytes();
        let mut out = ReadBatch {
            segment: seg.clone(),
            records: Vec::new(),
            next: pos,
            next_seq: expect_seq,
        };
        let mut p = pos.offset as usize;
        let mut seq = expect_seq;
        let mut size = 0usize;
        while out.records.len() < limits.max_records {
            if readable_end.is_some() && p >= limit {
                break;
            }
            match frame::decode(&bytes[..limit], p, seg.file_id) {
                Decoded::Record(r) => {
                    if r.seq != seq {
                        let err = Error::corruption(
                            &seg.path,
                            p as u64,
                            format!("expected sequence number {seq}, found {}", r.seq),
                        );
                        return stop_at(out, err, pos.segment_base, p, seq);
                    }
                    // A sealed segment holds nothing at or past the next
                    // one's base: such a frame would serve a sequence number
                    // twice, with whatever data it carries.
                    if let Some(end) = end_seq.filter(|end| r.seq >= *end) {
                        let err = Error::corruption(
                            &seg.path,
                            p as u64,
                            format!(
                                "frame with sequence number {} past the end of the sealed segment (the next segment starts at {end})",
                                r.seq
                            ),
                        );
                        return stop_at(out, err, pos.segment_base, p, seq);
                    }
                    if !out.records.is_empty() && size + r.frame_len as usize > limits.max_bytes {
                        break;
                    }
                    size += r.frame_len as usize;
                    out.records.push(RecordSpan {
                        seq: r.seq,
                        arrival_ms: r.arrival_ms,
                        offset: p as u32,
                        frame_len: r.frame_len,
                        key_len: r.partition_key.len() as u16,
                        flags: r.flags,
                    });
                    p += r.frame_len as usize;
                    seq += 1;
                    if stop(r.seq, r.arrival_ms) {
                        break;
                    }
                }
                Decoded::End if readable_end.is_none() => {
                    // End of a sealed segment: it must end exactly where the
                    // next one begins, or records went missing.
                    match end_seq {
                        Some(end) if end == seq => {
                            out.next = Position {
                                segment_base: end,
                                offset: SEGMENT_HEADER_BYTES as u64,
                            };
                            out.next_seq = seq;
                            return Ok(out);
                        }
                        Some(end) => {
                            let err = Error::corruption(
                                &seg.path,
                                p as u64,
                                format!("segment ends at sequence number {seq} but the next segment starts at {end}"),
                            );
                            return stop_at(out, err, pos.segment_base, p, seq);
                        }
                        None => break,
                    }
                }
                Decoded::End => {
                    let err = Error::corruption(
                        &seg.path,
                        p as u64,
                        "zeroed bytes below the end of acknowledged data",
                    );
                    return stop_at(out, err, pos.segment_base, p, seq);
                }
                Decoded::Invalid(reason) => {
                    let err = Error::corruption(&seg.path, p as u64, reason);
                    return stop_at(out, err, pos.segment_base, p, seq);
                }
            }
        }
        if out.records.is_empty() {
            let st = lock(&self.inner.sync);
            if let Some((qpath, qoff)) = &st.quarantine {
                // Only a read stopped exactly at the damage: after a
                // quarantine found by the pass after open, the frames
                // appended past it are intact and a reader at the tail
                // beyond it has simply read everything.
                if *qpath == seg.path && p as u64 == *qoff {
                    return Err(Error::corruption(
                        qpath,
                        *qoff,
                        "damaged acknowledged data; the log is quarantined (read-only) at this point",
                    ));
                }
            }
        }
        out.next = Position {
            segment_base: pos.segment_base,
            offset: p as u64,
        };
        out.next_seq = seq;
        Ok(out)
    }

    /// Reads every record of one segment (up to the visible watermark) and
    /// reports its placement; used to rebuild indexes. Stops with an error at
    /// the first damaged frame.
    pub fn scan_segment(&self, base: u64, mut f: impl FnMut(&Record<'_>)) -> Result<u64> {
        let mut pos = Position {
            segment_base: base,
            offset: SEGMENT_HEADER_BYTES as u64,
        };
        let mut seq = base;
        loop {
            let batch = self.read_at(
                pos,
                seq,
                ReadLimits {
                    max_records: 4096,
                    max_bytes: usize::MAX,
                },
            )?;
            for r in batch.iter() {
                f(&r);
            }
            let done = batch.is_empty() || batch.next.segment_base != base;
            seq = batch.next_seq;
            pos = batch.next;
            if done {
                return Ok(seq);
            }
        }
    }

    /// Deletes sealed segments that hold only records below `seq`, oldest
    /// first, syncing the directory after each so a crash never leaves a gap.
    /// Returns how many were deleted. The active segment is never deleted.
    ///
    /// A crash may undo each unsynced unlink or rename on its own, so the
    /// files it leaves form a suffix only if no segment is removed while
    /// the removal before it is not known durable. After a failed directory
    /// sync, every later pass therefore syncs the directory first and
    /// removes nothing until that succeeds; so does a log's first pass
    /// after open, since the process before may have stopped between an
    /// unlink and its sync.
    pub fn remove_segments_before(&self, seq: u64) -> Result<usize> {
        let mut unsynced = lock(&self.inner.removal_unsynced);
        let victims: Vec<(u64, PathBuf)> = {
            let segs = self.inner.segments.read().unwrap_or_else(|p| p.into_inner());
            segs.iter()
                .take_while(|(_, e)| matches!(e.end_seq, Some(end) if end <= seq))
                .map(|(b, e)| (*b, e.path.clone()))
                .collect()
        };
        if victims.is_empty() {
            return Ok(0);
        }
        if *unsynced {
            self.inner
                .fs
                .sync_dir(&self.inner.dir)
                .map_err(|e| Error::io("fsync directory", &self.inner.dir, e))?;
            *unsynced = false;
        }
        let mut removed = 0;
        for (base, path) in victims {
            // Readers stop finding the segment first, so none maps a file
            // that is about to go.
            let entry = {
                let mut segs = self.inner.segments.write().unwrap_or_else(|p| p.into_inner());
                segs.remove(&base)
            };
            let mut maps = {
                let mut cache = lock(&self.inner.maps);
                cache.maps.remove(&base);
                cache.live.remove(&base).unwrap_or_default()
            };
            let kept = self.keep_for_reuse(base, &path, &mut maps);
            let unlinked = if kept.is_some() {
                Ok(())
            } else {
                match self.inner.fs.remove_file(&path) {
                    // Gone already (removed by hand, or by an earlier pass
                    // that failed after its unlink): what this pass wanted.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                    other => other,
                }
            };
            if let Err(e) = unlinked {
                // The file is still there: put it back, so that readers
                // still find what it holds and the next retention pass tries
                // again, instead of the file lingering unknown until a
                // restart. The observer (the index) was not told yet.
                if let Some(entry) = entry {
                    self.inner
                        .segments
                        .write()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(base, entry);
                    lock(&self.inner.maps)
                        .live
                        .entry(base)
                        .or_default()
                        .append(&mut maps);
                }
                return Err(Error::io("remove segment", &path, e));
            }
            self.inner.observer.removed(base);
            // A kept file whose rename is not durable stays out of the pool
            // (the next open finds it under either name); see
            // `keep_for_reuse`.
            if let Err(e) = self.inner.fs.sync_dir(&self.inner.dir) {
                *unsynced = true;
                return Err(Error::io("fsync directory", &self.inner.dir, e));
            }
            if let Some(r) = kept {
                lock(&self.inner.pool).push_back(r);
            }
            removed += 1;
        }
        Ok(removed)
    }

    /// Checks every record of every segment and reports each problem found.
    pub fn verify(&self) -> VerifyReport {
        let mut report = VerifyReport::default();
        let visible = self.visible();
        let segs = self.segments();
        for s in &segs {
            report.segments += 1;
            let need = if s.end_seq.is_none() {
                Some(if visible.segment_base == s.base_seq {
                    visible.offset
                } else {
                    SEGMENT_HEADER_BYTES as u64
                })
            } else {
                None
            };
            let seg = match self.mapped(s.base_seq, need) {
                Ok(m) => m,
                Err(e) => {
                    report.problems.push(problem_of(&s.path, e));
                    continue;
                }
            };
            let bytes = seg.bytes();
            report.bytes += bytes.len() as u64;
            let header = SegmentHeader {
                file_id: seg.file_id,
                base_seq: s.base_seq,
                created_ms: 0,
                recycled_from: None,
            };
            let limit = need.map_or(bytes.len(), |n| n as usize);
            // Verification checks every checksum.
            let scan = scan_frames(bytes, &header, limit.min(bytes.len()), 0, None, &mut |_| {});
            report.records += scan.records;
            if let Some(reason) = scan.stop {
                report.problems.push(Problem {
                    path: s.path.clone(),
                    offset: scan.end,
                    reason: reason.to_string(),
                });
                continue;
            }
            if let Some(end) = s.end_seq {
                if scan.next_seq != end {
                    report.problems.push(Problem {
                        path: s.path.clone(),
                        offset: scan.end,
                        reason: format!(
                            "segment ends at sequence number {} but the next segment starts at {end}",
                            scan.next_seq
                        ),
                    });
                } else if let Some(i) = bytes[scan.end as usize..].iter().position(|&b| b != 0) {
                    report.problems.push(Problem {
                        path: s.path.clone(),
                        offset: scan.end + i as u64,
                        reason: "non-zero bytes after the end of data".into(),
                    });
                }
            }
        }
        report
    }
}

/// What [`Log::read_at`] may look at in one segment.
struct Readable {
    seg: Arc<MappedSegment>,
    /// Bytes of the file a reader may look at.
    limit: usize,
    /// Whether `limit` is the visible end of the active segment rather than
    /// the end of a sealed file.
    bounded: bool,
    /// The sealed segment's end sequence number.
    end_seq: Option<u64>,
}

/// Ends a read at damaged bytes: the records before them are returned (the
/// next read, starting at the damage, gets the error); with none, the error.
fn stop_at(mut out: ReadBatch, err: Error, base: u64, p: usize, seq: u64) -> Result<ReadBatch> {
    if out.records.is_empty() {
        return Err(err);
    }
    out.next = Position {
        segment_base: base,
        offset: p as u64,
    };
    out.next_seq = seq;
    Ok(out)
}

fn problem_of(path: &Path, e: Error) -> Problem {
    match e {
        Error::Corruption { path, offset, reason } => Problem { path, offset, reason },
        other => Problem {
            path: path.to_path_buf(),
            offset: 0,
            reason: other.to_string(),
        },
    }
}

fn spawn_flusher(inner: Weak<Inner>, interval_ms: u64) -> std::io::Result<Flusher> {
    let stop = Arc::new((Mutex::new(false), Condvar::new()));
    let stop2 = stop.clone();
    let handle = std::thread::Builder::new()
        .name("shardlog-flusher".into())
        .spawn(move || loop {
            {
                let (m, cv) = &*stop2;
                let guard = lock(m);
                let (guard, _) = cv
                    .wait_timeout(guard, Duration::from_millis(interval_ms))
                    .unwrap_or_else(|p| p.into_inner());
                if *guard {
                    return;
                }
            }
            let Some(inner) = inner.upgrade() else { return };
            let log = Log { inner, flusher: None };
            // A failure poisons the log; appends report it.
            let _ = log.sync();
        });
    handle.map(|h| (stop, h))
}

/// The file id of the frames a kept file (or a sealed segment about to be
/// kept) holds after its header, if its header reads and it is at least
/// `len_min` bytes long. A crash after a reuse wrote its new header (and the
/// end marker after it) but before the rename leaves that header on the
/// kept file: the frames after it are still the older segment's. A sealed
/// segment has a frame at offset 64, so zeros there tell the two apart.
fn older_frames_id(fs: &dyn FileSystem, path: &Path, len_min: u64) -> Option<u64> {
    let file = fs.open_read(path).ok()?;
    if file.len().ok()? < len_min {
        return None;
    }
    let mut head = [0u8; SEGMENT_HEADER_BYTES + RECYCLED_END_MARKER_BYTES];
    file.read_exact_at(&mut head, 0).ok()?;
    let h = SegmentHeader::decode(&head).ok()?;
    let interrupted = head[SEGMENT_HEADER_BYTES..].iter().all(|&b| b == 0);
    Some(match h.recycled_from {
        Some(older) if interrupted => older,
        _ => h.file_id,
    })
}

/// Removes a segment whose creation (or reuse) failed with `failed`, and
/// syncs the directory, so that neither a retry nor a restart finds it.
/// Returns `failed` when that worked; otherwise the cleanup's error, which
/// is never retriable, whatever the cause (a full disk included): the file
/// may come back after a crash, so the writer must not go on as if it had
/// gone.
fn remove_half_made(fs: &dyn FileSystem, dir: &Path, path: &Path, failed: Error) -> Error {
    match fs.remove_file(path).and_then(|()| fs.sync_dir(dir)) {
        Ok(()) => failed,
        Err(source) => Error::Io {
            op: "remove half-made segment",
            path: path.to_path_buf(),
            source,
        },
    }
}

/// What a clean-stop marker records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CleanMarker {
    base_seq: u64,
    file_id: u64,
    end: u64,
}

fn encode_clean_marker(m: CleanMarker) -> [u8; CLEAN_BYTES] {
    let mut b = [0u8; CLEAN_BYTES];
    b[CLEAN_MAGIC_OFFSET..CLEAN_MAGIC_OFFSET + 8].copy_from_slice(&CLEAN_MAGIC);
    Endian::write_u32(&mut b[CLEAN_VERSION_OFFSET..], CLEAN_FORMAT_VERSION);
    Endian::write_u64(&mut b[CLEAN_BASE_SEQ_OFFSET..], m.base_seq);
    Endian::write_u64(&mut b[CLEAN_FILE_ID_OFFSET..], m.file_id);
    Endian::write_u64(&mut b[CLEAN_END_OFFSET..], m.end);
    let crc = crc32fast::hash(&b[..CLEAN_CRC_OFFSET]);
    Endian::write_u32(&mut b[CLEAN_CRC_OFFSET..], crc);
    b
}

/// The marker, if present and intact. A damaged marker is ignored: the log
/// then recovers as after a crash, which is always safe.
fn read_clean_marker(fs: &dyn FileSystem, dir: &Path) -> Option<CleanMarker> {
    let bytes = crate::fs::read_all(fs, &dir.join(CLEAN_FILE_NAME)).ok()?;
    if bytes.len() != CLEAN_BYTES
        || bytes[CLEAN_MAGIC_OFFSET..CLEAN_MAGIC_OFFSET + 8] != CLEAN_MAGIC
        || Endian::read_u32(&bytes[CLEAN_VERSION_OFFSET..]) != CLEAN_FORMAT_VERSION
        || crc32fast::hash(&bytes[..CLEAN_CRC_OFFSET]) != Endian::read_u32(&bytes[CLEAN_CRC_OFFSET..])
    {
        return None;
    }
    Some(CleanMarker {
        base_seq: Endian::read_u64(&bytes[CLEAN_BASE_SEQ_OFFSET..]),
        file_id: Endian::read_u64(&bytes[CLEAN_FILE_ID_OFFSET..]),
        end: Endian::read_u64(&bytes[CLEAN_END_OFFSET..]),
    })
}

impl Log {
    /// Leaves the clean-stop marker: where the active segment's data ends.
    /// Call it when closing, after the data is durable: with `sync` the log
    /// syncs its data and then the marker itself; without, the caller must
    /// have synced the data before (for example with one `syncfs` for many
    /// logs) and sync the marker after. Refused on a poisoned or quarantined
    /// log (it then recovers as after a crash). Appends after the marker make
    /// it stale, which recovery notices and ignores.
    pub fn mark_clean(&self, sync: bool) -> Result<()> {
        let mut w = lock(&self.inner.writer);
        if sync {
            // Like a roll, the marker's sync runs as the only syncer.
            self.begin_sole_sync()?;
            let failed = w
                .active
                .file
                .sync_data()
                .err()
                .map(|e| format!("fdatasync failed: {e}"));
            if let Some(err) = self.end_sole_sync_of_all(failed) {
                self.discard_undurable_locked(&mut w);
                return Err(err);
            }
        } else {
            self.check_writable(&lock(&self.inner.sync))?;
        }
        let fs = &*self.inner.fs;
        let dir = &self.inner.dir;
        let path = dir.join(CLEAN_FILE_NAME);
        let bytes = encode_clean_marker(CleanMarker {
            base_seq: w.active.base_seq,
            file_id: w.active.file_id,
            end: w.active.len,
        });
        let io = |op, e| Error::io(op, &path, e);
        if fs.exists(&path) {
            fs.remove_file(&path).map_err(|e| io("remove clean marker", e))?;
        }
        let file = fs.create_new(&path).map_err(|e| io("create clean marker", e))?;
        file.write_all_at(&bytes, 0)
            .map_err(|e| io("write clean marker", e))?;
        if sync {
            file.sync_data().map_err(|e| io("fsync clean marker", e))?;
            fs.sync_dir(dir)
                .map_err(|e| Error::io("fsync directory", dir, e))?;
        }
        Ok(())
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        if let Some((stop, handle)) = self.flusher.take() {
            *lock(&stop.0) = true;
            stop.1.notify_all();
            let _ = handle.join();
            // Sync what the interval policy has not yet made durable.
            let _ = self.sync();
        }
    }
}

/// Whether an error from [`FileHandle::start_write_back`] may mean pages
/// were dropped unwritten (an I/O error, a failed allocation, anything not
/// known to be harmless). The harmless ones only mean the advice was not
/// taken: no memory for it, or a file system without the call.
fn write_back_lost_pages(e: &std::io::Error) -> bool {
    !matches!(
        e.raw_os_error(),
        Some(libc::ENOMEM | libc::EAGAIN | libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP | libc::ESPIPE)
    )
}

#[cfg(test)]
mod zero_scan_tests {
    use super::last_nonzero;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn last_nonzero_finds_what_a_byte_by_byte_scan_finds(
            len in 0usize..20_000,
            marks in proptest::collection::vec((any::<usize>(), 1u8..=255), 0..4),
        ) {
            let mut bytes = vec![0u8; len];
            for (at, v) in &marks {
                if len > 0 {
                    bytes[at % len] = *v;
                }
            }
            let naive = bytes.iter().rposition(|&b| b != 0);
            prop_assert_eq!(last_nonzero(&bytes), naive);
        }
    }
}

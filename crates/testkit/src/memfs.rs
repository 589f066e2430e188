//! An in-memory, fault-injecting file system for tests.
//!
//! Every file has a *durable* image (what survives a crash) and a list of
//! *pending* operations (written but not yet covered by `sync_data`). Reads
//! see the current state, durable plus pending. [`MemFs::crash`] throws the
//! volatile state away and resolves each pending operation according to a
//! [`CrashPlan`]. Directory entries work the same way: creations, renames and
//! removals are pending until `sync_dir` of their directory.
//!
//! Faults follow Linux: after a failed `fsync` the pending pages count as
//! clean, so they are dropped from the pending list and will never become
//! durable even if a later `fsync` succeeds (Rebello et al., ATC'20).
//!
//! `write_back` (`sync_file_range`) sends a file's pending writes from an
//! offset on to the device's volatile cache: a crash resolves them like
//! other pending ones, and the next successful `sync_data` of *any* file (a
//! device flush) makes them durable if the write-back completed before that
//! sync began, but only where they overwrite *settled* blocks of their
//! file: bytes written and then covered by a `sync_data` of that same file
//! (and not cut since). Elsewhere a real file system would still have
//! metadata to commit (an unwritten extent, a length), so they stay
//! pending, and a log that trusted the flush loses acknowledged data in
//! these tests. A `sync_data` covers only operations made before it began.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use shardlog_segment::fs::{FileHandle, FileSystem, FsSyncer, LockGuard, Mapping};

/// How pending (unsynced) writes are resolved by a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashPlan {
    /// Every unsynced write is lost.
    LoseUnsynced,
    /// Every unsynced write reached the disk.
    KeepUnsynced,
    /// Pending writes landed in order up to `bytes` bytes in all (per file),
    /// tearing the write that crosses that point at that exact byte.
    TornPrefix { bytes: u64 },
    /// Each pending write independently lost, landed, or torn at a 512-byte
    /// sector boundary, decided by a seeded generator.
    Random { seed: u64 },
}

/// The storage operations a failpoint can stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FsOp {
    /// `write_all_at` of a file.
    Write,
    /// `sync_data` (fdatasync) of a file.
    SyncData,
    /// `set_len` / `allocate` of a file.
    SetLen,
    /// `create_new` of a file.
    Create,
    /// `rename` (matched against the source and the target path).
    Rename,
    /// `remove_file`.
    Remove,
    /// `sync_dir` (fsync of a directory).
    SyncDir,
    /// `remove_dir_all`.
    RemoveDirAll,
    /// `sync_filesystem` (syncfs).
    SyncFs,
    /// `write_back` (sync_file_range) of a file.
    WriteBack,
    /// `start_write_back` (sync_file_range without waiting) of a file. A
    /// failure drops the file's pending writes without an error for a
    /// later sync, as Linux does with pages it could not allocate blocks for
    /// in write-back: they stay readable but never become durable.
    StartWriteBack,
}

/// A named failpoint: the next `times` operations of kind `op` on a path
/// containing `path_contains` fail with EIO (a failed `SyncData` or `SyncFs`
/// also drops the pending writes, as Linux does).
#[derive(Debug, Clone)]
struct FailPoint {
    op: FsOp,
    path_contains: String,
    times: u32,
    hits: u32,
}

#[derive(Debug, Clone)]
enum Op {
    Write { offset: u64, data: Vec<u8> },
    SetLen(u64),
}

/// An operation not yet durable.
#[derive(Debug, Clone)]
struct PendingOp {
    /// When it was made (a count over the whole file system), so that a
    /// sync covers only what was made before it began.
    made: u64,
    /// The `write_back` that sent it to the device, by number: on the
    /// device, not yet flushed.
    written_back: Option<u64>,
    op: Op,
}

#[derive(Debug, Default)]
struct FileState {
    durable: Vec<u8>,
    current: Vec<u8>,
    /// Operations not yet durable, oldest first.
    pending: Vec<PendingOp>,
    /// Settled byte ranges (sorted, disjoint): written, then covered by a
    /// `sync_data` of this file, and not cut since.
    settled: Vec<(u64, u64)>,
}

impl FileState {
    /// Adds `start..end` to the settled ranges.
    fn settle(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        self.settled.push((start, end));
        self.settled.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(self.settled.len());
        for &(a, b) in &self.settled {
            match merged.last_mut() {
                Some(last) if a <= last.1 => last.1 = last.1.max(b),
                _ => merged.push((a, b)),
            }
        }
        self.settled = merged;
    }

    /// Settles what `ops`, just made durable in this order, wrote: a cut
    /// among them takes back what was written past it before.
    fn settle_ops(&mut self, ops: &[Op]) {
        for op in ops {
            match op {
                Op::Write { offset, data } => self.settle(*offset, *offset + data.len() as u64),
                Op::SetLen(len) => self.cut_settled(*len),
            }
        }
        let len = self.current.len() as u64;
        self.cut_settled(len);
    }

    /// A cut (or extension) to `len`: blocks past it are new from now on.
    fn cut_settled(&mut self, len: u64) {
        self.settled.retain(|r| r.0 < len);
        if let Some(last) = self.settled.last_mut() {
            last.1 = last.1.min(len);
        }
    }

    /// A device cache flush: the writes sent to the device by write-backs
    /// numbered up to `upto` (those completed when the flush began) become
    /// durable where they overwrite settled blocks. Parts elsewhere stay
    /// pending: a real file system still has their metadata to commit.
    fn flush_written_back(&mut self, upto: u64) {
        let mut left = Vec::with_capacity(self.pending.len());
        for p in std::mem::take(&mut self.pending) {
            let (Some(n), Op::Write { offset, data }) = (p.written_back, &p.op) else {
                left.push(p);
                continue;
            };
            if n > upto {
                left.push(p);
                continue;
            }
            let end = offset + data.len() as u64;
            let mut covered = 0u64;
            for &(a, b) in &self.settled {
                let (s, e) = (a.max(*offset), b.min(end));
                if s < e && e as usize <= self.durable.len() {
                    let part = data[(s - offset) as usize..(e - offset) as usize].to_vec();
                    apply(
                        &mut self.durable,
                        &Op::Write {
                            offset: s,
                            data: part,
                        },
                    );
                    covered += e - s;
                }
            }
            if covered < end - offset {
                left.push(p);
            }
        }
        self.pending = left;
    }

    /// Makes the operations made before `mark` durable, in order, and
    /// returns them; later ones stay pending.
    fn take_made_before(&mut self, mark: u64) -> Vec<Op> {
        let (now, later): (Vec<PendingOp>, Vec<PendingOp>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|p| p.made <= mark);
        self.pending = later;
        now.into_iter().map(|p| p.op).collect()
    }
}

#[derive(Debug, Default)]
struct DirState {
    current: BTreeMap<String, u64>,
    durable: BTreeMap<String, u64>,
}

#[derive(Debug, Default)]
struct Faults {
    /// Fail this many upcoming `sync_data` calls with EIO.
    fail_syncs: u32,
    /// Panic in the next `sync_data` of a file whose path contains this.
    panic_sync: Option<String>,
    /// Fail this many upcoming writes with EIO (nothing written).
    fail_writes: u32,
    /// Bytes all files together may occupy (current lengths); `None` is
    /// unlimited.
    capacity_bytes: Option<u64>,
    /// Make the next write land only its first `n` bytes and then fail EIO.
    short_write: Option<usize>,
    /// How long each `sync_data` takes (outside the file system's lock,
    /// so that other calls overlap it), as a device's flush does.
    sync_latency: Option<std::time::Duration>,
    /// How long each `syncfs` takes to return after it has taken effect
    /// (dropped the pages, when it fails), outside the lock.
    syncfs_latency: Option<std::time::Duration>,
    /// Mutating operations allowed before every further one fails with EIO
    /// (the process "dies" at that point); `None` is unlimited.
    ops_budget: Option<u64>,
    /// Make the next write land this many bytes away from where it was
    /// aimed, and report success (a misdirected write: firmware or driver
    /// bugs that only checksums catch).
    misdirect: Option<i64>,
    failpoints: Vec<FailPoint>,
    /// At most this long a pause after each operation, once it has taken
    /// effect and before it returns (see [`MemFs::set_jitter`]).
    jitter: Option<std::time::Duration>,
    /// The generator of those pauses.
    jitter_rng: u64,
}

#[derive(Debug, Default)]
struct Inner {
    /// Crashes so far: a handle opened before the last one belongs to the
    /// process that crashed and fails every operation (see `MemFile::with`).
    crashes: u64,
    files: HashMap<u64, FileState>,
    dirs: HashMap<PathBuf, DirState>,
    next_ino: u64,
    locks: HashSet<PathBuf>,
    faults: Faults,
    syncs: u64,
    write_backs: u64,
    /// Operations made so far (numbers `PendingOp::made`).
    ops_made: u64,
    /// `shares_flushes` answers this (see [`MemFs::set_shares_flushes`]).
    no_shared_flushes: bool,
    /// `allocate` does nothing (see [`MemFs::set_allocate_unsupported`]).
    no_allocate: bool,
    cache_drops: Vec<CacheDrop>,
    write_backs_started: Vec<WriteBackStart>,
    partial_writes: Vec<PartialWrite>,
}

/// One write a full disk stopped after some of its bytes had landed (see
/// [`MemFs::partial_no_space_writes`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartialWrite {
    /// The path the file was opened by.
    pub path: PathBuf,
    /// Where the write began.
    pub offset: u64,
    /// How many bytes it asked to write.
    pub asked: usize,
    /// How many of them landed before the disk was full.
    pub landed: usize,
    /// Whether every byte it asked to write was zero (a segment's
    /// zero-fill ahead of its frames, rather than frames).
    pub zeros: bool,
}

/// One `start_write_back` call a file received (see
/// [`MemFs::write_backs_started`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteBackStart {
    /// The path the file was opened by.
    pub path: PathBuf,
    /// Where the range the call named begins.
    pub start: u64,
    /// Where it ends (exclusive).
    pub end: u64,
}

/// One `drop_cache` call a file received (see [`MemFs::cache_drops`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheDrop {
    /// The path the file was opened by.
    pub path: PathBuf,
    /// The range the call named (its end clipped to the file's length).
    pub start: u64,
    pub end: u64,
    /// Whether every byte of the range was durable (synced) at the time.
    /// Dropping unsynced pages loses nothing on a real file system (the
    /// kernel writes them back first), but a log that does so has dropped
    /// more than it meant to.
    pub durable: bool,
}

impl Inner {
    /// Adds an operation to a file's pending list.
    fn push_pending(&mut self, ino: u64, op: Op) {
        self.ops_made += 1;
        let made = self.ops_made;
        if let Some(file) = self.files.get_mut(&ino) {
            file.pending.push(PendingOp {
                made,
                written_back: None,
                op,
            });
        }
    }

    /// Fails the operation if an armed failpoint matches it.
    fn failpoint(&mut self, op: FsOp, path: &Path) -> io::Result<()> {
        let p = path.to_string_lossy();
        for fp in &mut self.faults.failpoints {
            if fp.op == op && fp.times > 0 && p.contains(fp.path_contains.as_str()) {
                fp.times -= 1;
                fp.hits += 1;
                return Err(io::Error::other(format!(
                    "injected EIO at failpoint {op:?} on {}",
                    path.display()
                )));
            }
        }
        Ok(())
    }

    /// Counts a mutating operation against the budget.
    fn consume_op(&mut self) -> io::Result<()> {
        match &mut self.faults.ops_budget {
            None => Ok(()),
            Some(0) => Err(io::Error::other("injected EIO: operation budget exhausted")),
            Some(n) => {
                *n -= 1;
                Ok(())
            }
        }
    }

    /// Bytes of the files a directory names: an unlinked file's space
    /// counts as given back at once. (A real file system frees it once the
    /// last handle or map closes; the simulator tracks neither, so tests
    /// of freed space must hold no map of the file.)
    fn used_bytes(&self) -> u64 {
        let linked: HashSet<u64> = self
            .dirs
            .values()
            .flat_map(|d| d.current.values().copied())
            .collect();
        self.files
            .iter()
            .filter(|(ino, _)| linked.contains(ino))
            .map(|(_, f)| f.current.len() as u64)
            .sum()
    }

    fn lookup(&self, path: &Path) -> io::Result<u64> {
        let (dir, name) = split(path)?;
        self.dirs
            .get(&dir)
            .and_then(|d| d.current.get(&name))
            .copied()
            .ok_or_else(|| not_found(path))
    }

    /// How many bytes of a write at `offset` into a file of `old_len` bytes
    /// fit under the capacity: those inside the file, and as many past its
    /// end as the capacity has room for.
    fn room_for_write(&self, old_len: usize, offset: usize) -> usize {
        let free = match self.faults.capacity_bytes {
            Some(cap) => cap.saturating_sub(self.used_bytes()) as usize,
            None => usize::MAX,
        };
        old_len.saturating_add(free).saturating_sub(offset)
    }

    fn check_space(&self, old_len: usize, new_len: usize) -> io::Result<()> {
        if let Some(cap) = self.faults.capacity_bytes {
            if new_len > old_len && self.used_bytes() + (new_len - old_len) as u64 > cap {
                return Err(io::Error::from_raw_os_error(28));
            }
        }
        Ok(())
    }
}

/// The in-memory file system. Cloning gives another handle to the same one.
#[derive(Debug, Clone, Default)]
pub struct MemFs {
    inner: Arc<Mutex<Inner>>,
    /// The hold of [`MemFs::hold_next_write_back`], apart from `inner`:
    /// a call waits there without blocking every other operation.
    hold: Arc<Gate>,
    /// The hold of [`MemFs::hold_next_sync_return`], likewise.
    sync_hold: Arc<Gate>,
}

/// See [`MemFs::hold_next_write_back`] and [`MemFs::hold_next_sync_return`].
#[derive(Debug, Default)]
struct Hold {
    /// The path part the next held call's path contains.
    armed: Option<String>,
    /// A call is waiting at the hold.
    waiting: bool,
    released: bool,
}

/// A place where the next call on a matching path waits until released.
#[derive(Debug, Default)]
struct Gate {
    state: Mutex<Hold>,
    cv: std::sync::Condvar,
}

impl Gate {
    fn lock(&self) -> MutexGuard<'_, Hold> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn arm(&self, path_contains: &str) {
        let mut h = self.lock();
        h.armed = Some(path_contains.to_string());
        h.released = false;
    }

    fn is_waiting(&self) -> bool {
        self.lock().waiting
    }

    fn release(&self) {
        self.lock().released = true;
        self.cv.notify_all();
    }

    /// Waits here if armed for `path`, and disarms.
    fn wait_if_armed(&self, path: &Path) {
        let mut h = self.lock();
        let armed = h
            .armed
            .as_deref()
            .is_some_and(|part| path.to_string_lossy().contains(part));
        if !armed {
            return;
        }
        h.armed = None;
        h.waiting = true;
        while !h.released {
            h = self.cv.wait(h).unwrap_or_else(|p| p.into_inner());
        }
        h.waiting = false;
    }
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("{} not found", path.display()))
}

fn split(path: &Path) -> io::Result<(PathBuf, String)> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "bad path"))?;
    Ok((
        path.parent().unwrap_or(Path::new("")).to_path_buf(),
        name.to_string(),
    ))
}

fn apply(buf: &mut Vec<u8>, op: &Op) {
    match op {
        Op::Write { offset, data } => {
            let start = *offset as usize;
            let end = start + data.len();
            if buf.len() < end {
                buf.resize(end, 0);
            }
            buf[start..end].copy_from_slice(data);
        }
        Op::SetLen(len) => buf.resize(*len as usize, 0),
    }
}

/// A tiny deterministic generator (xorshift64*), enough for crash plans.
#[derive(Debug, Clone)]
pub struct SimRng(u64);

impl SimRng {
    pub fn new(seed: u64) -> SimRng {
        SimRng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A value in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

impl MemFs {
    pub fn new() -> MemFs {
        MemFs::default()
    }

    fn lock_inner(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding this lock can only come from a test assertion;
        // the state is still usable for inspection afterwards.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A handle of the file `ino`, opened by `path` in the current process
    /// (see `Inner::crashes`).
    fn handle(&self, inner: &Inner, path: &Path, ino: u64, writable: bool) -> Arc<dyn FileHandle> {
        Arc::new(MemFile {
            fs: self.clone(),
            path: path.to_path_buf(),
            ino,
            epoch: inner.crashes,
            writable,
        })
    }

    /// Fails the next `n` `sync_data` calls with EIO.
    pub fn fail_next_syncs(&self, n: u32) {
        self.lock_inner().faults.fail_syncs = n;
    }

    /// Makes the next `sync_data` of a file whose path contains
    /// `path_contains` panic (before it does anything), as a bug on the
    /// calling thread would: tests check that such a thread leaves no
    /// caller waiting forever.
    pub fn panic_next_sync(&self, path_contains: &str) {
        self.lock_inner().faults.panic_sync = Some(path_contains.to_string());
    }

    /// Makes every `sync_data` take `latency` (`None`: instant), so that
    /// appenders of several logs overlap each other's syncs as they do on
    /// a device.
    pub fn set_sync_latency(&self, latency: Option<std::time::Duration>) {
        self.lock_inner().faults.sync_latency = latency;
    }

    /// `syncfs` under the file system's lock (see `sync_filesystem`).
    fn sync_filesystem_locked(&self, inner: &mut Inner, path: &Path) -> io::Result<()> {
        inner.consume_op()?;
        if inner.faults.fail_syncs > 0 || inner.failpoint(FsOp::SyncFs, path).is_err() {
            inner.faults.fail_syncs = inner.faults.fail_syncs.saturating_sub(1);
            // As after a failed fsync, the dirty pages count as clean.
            for file in inner.files.values_mut() {
                file.pending.clear();
            }
            return Err(eio("syncfs"));
        }
        for file in inner.files.values_mut() {
            let ops: Vec<Op> = std::mem::take(&mut file.pending)
                .into_iter()
                .map(|p| p.op)
                .collect();
            for op in &ops {
                apply(&mut file.durable, op);
            }
            file.settle_ops(&ops);
        }
        for dir in inner.dirs.values_mut() {
            dir.durable = dir.current.clone();
        }
        Ok(())
    }

    /// Makes every `syncfs` return `latency` after it has taken effect:
    /// one that fails has dropped every file's dirty pages at once, and its
    /// caller learns of it only later, as when the kernel drops a file's
    /// pages early in a long `syncfs` and goes on writing others.
    pub fn set_syncfs_latency(&self, latency: Option<std::time::Duration>) {
        self.lock_inner().faults.syncfs_latency = latency;
    }

    /// Makes each operation pause for a random time of at most `max` (or
    /// give up the processor, one time in four) after it has taken effect
    /// and before it returns to its caller, outside the file system's lock.
    /// A real system call's effect and its return are not one instant
    /// either: another thread may run between them. The engine's threads
    /// (the journal's, a `syncfs` leader, sync workers) then meet in orders
    /// that an idle machine almost never shows, which a busy one does now
    /// and then.
    pub fn set_jitter(&self, max: Option<std::time::Duration>) {
        let mut inner = self.lock_inner();
        inner.faults.jitter = max;
        inner.faults.jitter_rng = 0x9e37_79b9_7f4a_7c15;
    }

    /// The pause [`MemFs::set_jitter`] asks for after one operation.
    fn next_jitter(inner: &mut Inner) -> Option<std::time::Duration> {
        let max = inner.faults.jitter?;
        // xorshift64: the pauses need not replay, only vary.
        let mut x = inner.faults.jitter_rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        inner.faults.jitter_rng = x;
        if x.is_multiple_of(4) {
            return Some(std::time::Duration::ZERO);
        }
        let nanos = max.as_nanos().max(1) as u64;
        Some(std::time::Duration::from_nanos((x >> 8) % nanos))
    }

    /// Fails the next `n` writes with EIO.
    pub fn fail_next_writes(&self, n: u32) {
        self.lock_inner().faults.fail_writes = n;
    }

    /// The next write lands only its first `n` bytes, then fails with EIO.
    pub fn short_next_write(&self, n: usize) {
        self.lock_inner().faults.short_write = Some(n);
    }

    /// Arms a named failpoint: the next `times` operations of kind `op` on
    /// a path containing `path_contains` fail with EIO.
    pub fn fail_at(&self, op: FsOp, path_contains: &str, times: u32) {
        self.lock_inner().faults.failpoints.push(FailPoint {
            op,
            path_contains: path_contains.to_string(),
            times,
            hits: 0,
        });
    }

    /// How often failpoints of `op` on paths containing `path_contains` fired.
    pub fn failpoint_hits(&self, op: FsOp, path_contains: &str) -> u32 {
        self.lock_inner()
            .faults
            .failpoints
            .iter()
            .filter(|f| f.op == op && f.path_contains == path_contains)
            .map(|f| f.hits)
            .sum()
    }

    /// The next write lands `delta` bytes away from its offset (clamped at
    /// the start of the file) and reports success.
    pub fn misdirect_next_write(&self, delta: i64) {
        self.lock_inner().faults.misdirect = Some(delta);
    }

    /// Lets `n` more mutating operations (writes, syncs, creations, renames,
    /// removals) succeed; every later one fails with EIO, as if the process
    /// had died there. A following [`MemFs::crash`] clears it.
    pub fn fail_after_ops(&self, n: u64) {
        self.lock_inner().faults.ops_budget = Some(n);
    }

    /// Mutating operations left in the budget (`None`: unlimited).
    pub fn ops_left(&self) -> Option<u64> {
        self.lock_inner().faults.ops_budget
    }

    /// Limits the bytes all files may occupy; writes past it fail with ENOSPC.
    pub fn set_capacity(&self, bytes: Option<u64>) {
        self.lock_inner().faults.capacity_bytes = bytes;
    }

    /// Bytes currently occupied by all files.
    pub fn used_bytes(&self) -> u64 {
        self.lock_inner().used_bytes()
    }

    /// Number of successful `sync_data` calls so far.
    pub fn sync_count(&self) -> u64 {
        self.lock_inner().syncs
    }

    /// Number of successful `write_back` calls so far.
    pub fn write_back_count(&self) -> u64 {
        self.lock_inner().write_backs
    }

    /// Sets what `shares_flushes` answers (yes by default, as on ext4 and
    /// XFS).
    pub fn set_shares_flushes(&self, yes: bool) {
        self.lock_inner().no_shared_flushes = !yes;
    }

    /// Makes `allocate` a no-op that succeeds, as the real file system's
    /// does where `fallocate` is not supported: writes then extend files
    /// themselves, and a full disk surfaces from a write, part-way.
    pub fn set_allocate_unsupported(&self, yes: bool) {
        self.lock_inner().no_allocate = yes;
    }

    /// Every `drop_cache` call so far, in order. The memory file system has
    /// no page cache, so the calls change nothing; tests check where they
    /// went.
    pub fn cache_drops(&self) -> Vec<CacheDrop> {
        self.lock_inner().cache_drops.clone()
    }

    /// Makes the next `start_write_back` of a file whose path contains
    /// `path_contains` wait, before it does anything, until
    /// [`MemFs::release_write_back`]: a test can then run other threads'
    /// operations while the call is in flight (a failpoint set with
    /// [`MemFs::fail_at`] still applies once it goes on).
    pub fn hold_next_write_back(&self, path_contains: &str) {
        self.hold.arm(path_contains);
    }

    /// Whether a `start_write_back` is waiting at the hold.
    pub fn write_back_held(&self) -> bool {
        self.hold.is_waiting()
    }

    /// Lets the held `start_write_back` go on.
    pub fn release_write_back(&self) {
        self.hold.release();
    }

    /// Makes the next `sync_data` of a file whose path contains
    /// `path_contains` wait after it has taken effect (its writes made
    /// durable, or, when it fails, dropped) and before it returns, until
    /// [`MemFs::release_sync`]. A test can then run another thread's sync
    /// between the effect of a failed sync and the moment its caller learns
    /// of the failure: the window in which Linux, which reports a writeback
    /// error to one of several concurrent fsyncs of a file only, lets the
    /// other sync return success for pages the failed one dropped.
    pub fn hold_next_sync_return(&self, path_contains: &str) {
        self.sync_hold.arm(path_contains);
    }

    /// Whether a `sync_data` is waiting at the hold.
    pub fn sync_held(&self) -> bool {
        self.sync_hold.is_waiting()
    }

    /// Lets the held `sync_data` return.
    pub fn release_sync(&self) {
        self.sync_hold.release();
    }

    /// Every `start_write_back` call so far, in order (failed ones too,
    /// and ones a crash point refused).
    /// The memory file system has nothing to write back early, so the calls
    /// change nothing unless a failpoint fails them; tests check where they
    /// went.
    pub fn write_backs_started(&self) -> Vec<WriteBackStart> {
        self.lock_inner().write_backs_started.clone()
    }

    /// Every write a full disk stopped part-way on this file system so far
    /// (see [`MemFs::set_capacity`]), in order: tests that mean to exercise
    /// what a log does after such a write check that it happened, and to
    /// which file.
    pub fn partial_no_space_writes(&self) -> Vec<PartialWrite> {
        self.lock_inner().partial_writes.clone()
    }

    /// Flips one bit of a file, in both its durable and current image (bit
    /// rot at rest).
    pub fn flip_bit(&self, path: &Path, offset: u64, bit: u8) -> io::Result<()> {
        let mut inner = self.lock_inner();
        let ino = inner.lookup(path)?;
        let file = inner.files.get_mut(&ino).ok_or_else(|| not_found(path))?;
        let off = offset as usize;
        if off >= file.current.len() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "offset past end"));
        }
        file.current[off] ^= 1 << (bit % 8);
        if off < file.durable.len() {
            file.durable[off] ^= 1 << (bit % 8);
        }
        Ok(())
    }

    /// Overwrites bytes of a file durably (a misdirected or corrupting write).
    pub fn corrupt(&self, path: &Path, offset: u64, bytes: &[u8]) -> io::Result<()> {
        let mut inner = self.lock_inner();
        let ino = inner.lookup(path)?;
        let file = inner.files.get_mut(&ino).ok_or_else(|| not_found(path))?;
        let op = Op::Write {
            offset,
            data: bytes.to_vec(),
        };
        apply(&mut file.current, &op);
        apply(&mut file.durable, &op);
        Ok(())
    }

    /// Truncates a file durably (as an operator or a bad tool might).
    pub fn truncate_durably(&self, path: &Path, len: u64) -> io::Result<()> {
        let mut inner = self.lock_inner();
        let ino = inner.lookup(path)?;
        let file = inner.files.get_mut(&ino).ok_or_else(|| not_found(path))?;
        file.current.truncate(len as usize);
        file.durable.truncate(len as usize);
        Ok(())
    }

    /// Current bytes of a file.
    pub fn contents(&self, path: &Path) -> io::Result<Vec<u8>> {
        let inner = self.lock_inner();
        let ino = inner.lookup(path)?;
        Ok(inner
            .files
            .get(&ino)
            .map(|f| f.current.clone())
            .unwrap_or_default())
    }

    /// Total bytes of pending (unsynced) writes of a file.
    pub fn pending_bytes(&self, path: &Path) -> io::Result<u64> {
        let inner = self.lock_inner();
        let ino = inner.lookup(path)?;
        Ok(inner
            .files
            .get(&ino)
            .map(|f| {
                f.pending
                    .iter()
                    .map(|p| match &p.op {
                        Op::Write { data, .. } => data.len() as u64,
                        Op::SetLen(_) => 0,
                    })
                    .sum()
            })
            .unwrap_or(0))
    }

    /// Simulates a power loss: unsynced directory changes are lost, pending
    /// file writes are resolved by `plan`, locks are released, and injected
    /// faults are cleared. Open handles must not be used afterwards.
    pub fn crash(&self, plan: CrashPlan) {
        let mut inner = self.lock_inner();
        inner.crashes += 1;
        let mut rng = match plan {
            CrashPlan::Random { seed } => SimRng::new(seed),
            _ => SimRng::new(0),
        };
        let mut inos: Vec<u64> = inner.files.keys().copied().collect();
        inos.sort_unstable();
        for ino in inos {
            let Some(file) = inner.files.get_mut(&ino) else {
                continue;
            };
            // Written-back writes, unflushed, are as uncertain as the rest.
            let pending: Vec<Op> = std::mem::take(&mut file.pending)
                .into_iter()
                .map(|p| p.op)
                .collect();
            let mut image = std::mem::take(&mut file.durable);
            match plan {
                CrashPlan::LoseUnsynced => {}
                CrashPlan::KeepUnsynced => pending.iter().for_each(|op| apply(&mut image, op)),
                CrashPlan::TornPrefix { bytes } => {
                    let mut budget = bytes;
                    for op in &pending {
                        match op {
                            Op::SetLen(_) => apply(&mut image, op),
                            Op::Write { offset, data } => {
                                if budget == 0 {
                                    break;
                                }
                                let take = (data.len() as u64).min(budget) as usize;
                                budget -= take as u64;
                                apply(
                                    &mut image,
                                    &Op::Write {
                                        offset: *offset,
                                        data: data[..take].to_vec(),
                                    },
                                );
                            }
                        }
                    }
                }
                CrashPlan::Random { .. } => {
                    for op in &pending {
                        match op {
                            Op::SetLen(_) => {
                                if rng.below(2) == 0 {
                                    apply(&mut image, op)
                                }
                            }
                            Op::Write { offset, data } => {
                                // Split into sectors; each lands or not.
                                let mut start = 0usize;
                                let choice = rng.below(3);
                                while start < data.len() {
                                    let sector_end =
                                        ((*offset as usize + start) / 512 + 1) * 512 - *offset as usize;
                                    let end = sector_end.min(data.len());
                                    let lands = match choice {
                                        0 => false,
                                        1 => true,
                                        _ => rng.below(2) == 0,
                                    };
                                    if lands {
                                        apply(
                                            &mut image,
                                            &Op::Write {
                                                offset: *offset + start as u64,
                                                data: data[start..end].to_vec(),
                                            },
                                        );
                                    }
                                    start = end;
                                }
                            }
                        }
                    }
                }
            }
            file.current = image.clone();
            file.durable = image;
            let len = file.current.len() as u64;
            file.cut_settled(len);
        }
        let mut live = HashSet::new();
        let mut dirs: Vec<PathBuf> = inner.dirs.keys().cloned().collect();
        dirs.sort();
        for path in dirs {
            let Some(dir) = inner.dirs.get_mut(&path) else {
                continue;
            };
            let mut image = dir.durable.clone();
            if let CrashPlan::Random { .. } = plan {
                // An unsynced create, rename or unlink may or may not have
                // reached the disk; decide each name on its own.
                let names: std::collections::BTreeSet<String> =
                    dir.current.keys().chain(dir.durable.keys()).cloned().collect();
                for name in names {
                    let now = dir.current.get(&name).copied();
                    if now != dir.durable.get(&name).copied() && rng.below(2) == 0 {
                        match now {
                            Some(ino) => image.insert(name, ino),
                            None => image.remove(&name),
                        };
                    }
                }
            }
            dir.current = image.clone();
            dir.durable = image;
            live.extend(dir.current.values().copied());
        }
        inner.files.retain(|ino, _| live.contains(ino));
        inner.locks.clear();
        inner.faults = Faults::default();
    }

    /// Names in a directory that are durable (would survive a crash).
    pub fn durable_names(&self, dir: &Path) -> Vec<String> {
        let inner = self.lock_inner();
        inner
            .dirs
            .get(dir)
            .map(|d| d.durable.keys().cloned().collect())
            .unwrap_or_default()
    }
}

#[derive(Debug)]
struct MemFile {
    fs: MemFs,
    ino: u64,
    /// `Inner::crashes` when the file was opened.
    epoch: u64,
    /// The path the file was opened by (for failpoints).
    path: PathBuf,
    writable: bool,
}

impl MemFile {
    fn with<T>(&self, f: impl FnOnce(&mut Inner, u64) -> io::Result<T>) -> io::Result<T> {
        let mut inner = self.fs.lock_inner();
        // A crashed process's threads (a test forgets its engine rather
        // than run destructors) must not touch what the next process sees:
        // its descriptors are gone.
        if self.epoch != inner.crashes {
            return Err(io::Error::other("the process that opened this file crashed"));
        }
        if !inner.files.contains_key(&self.ino) {
            return Err(io::Error::new(io::ErrorKind::NotFound, "file vanished (crashed)"));
        }
        let result = f(&mut inner, self.ino);
        let pause = MemFs::next_jitter(&mut inner);
        drop(inner);
        pause_for(pause);
        result
    }
}

/// Sleeps for `pause`, or gives up the processor for a zero one.
fn pause_for(pause: Option<std::time::Duration>) {
    match pause {
        None => {}
        Some(d) if d.is_zero() => std::thread::yield_now(),
        Some(d) => std::thread::sleep(d),
    }
}

fn eio(what: &str) -> io::Error {
    io::Error::other(format!("injected EIO on {what}"))
}

impl FileHandle for MemFile {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.with(|inner, ino| {
            let file = &inner.files[&ino];
            let start = offset as usize;
            let end = start + buf.len();
            if end > file.current.len() {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "read past end"));
            }
            buf.copy_from_slice(&file.current[start..end]);
            Ok(())
        })
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        if !self.writable {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "read-only handle",
            ));
        }
        self.with(|inner, ino| {
            inner.consume_op()?;
            inner.failpoint(FsOp::Write, &self.path)?;
            if inner.faults.fail_writes > 0 {
                inner.faults.fail_writes -= 1;
                return Err(eio("write"));
            }
            let offset = match inner.faults.misdirect.take() {
                Some(delta) => offset.saturating_add_signed(delta),
                None => offset,
            };
            let old_len = inner.files[&ino].current.len();
            let new_len = old_len.max(offset as usize + buf.len());
            let short = inner.faults.short_write.take();
            // A write that does not fit lands what fits, then fails with
            // ENOSPC, as `write_all` on Linux does: `write` returns a short
            // count at the full disk, and only the next call fails.
            let fits = match inner.check_space(old_len, new_len) {
                Ok(()) => None,
                Err(e) => Some((inner.room_for_write(old_len, offset as usize), e)),
            };
            let landed = match (short, &fits) {
                (Some(n), Some((room, _))) => n.min(*room),
                (Some(n), None) => n,
                (None, Some((room, _))) => *room,
                (None, None) => buf.len(),
            };
            let data = buf[..landed.min(buf.len())].to_vec();
            if !data.is_empty() {
                let op = Op::Write { offset, data };
                let file = inner.files.get_mut(&ino).ok_or_else(|| eio("write"))?;
                apply(&mut file.current, &op);
                inner.push_pending(ino, op);
            }
            if let Some((_, e)) = fits {
                if landed > 0 {
                    inner.partial_writes.push(PartialWrite {
                        path: self.path.clone(),
                        offset,
                        asked: buf.len(),
                        landed,
                        zeros: buf.iter().all(|b| *b == 0),
                    });
                }
                return Err(e);
            }
            if short.is_some() {
                return Err(eio("write (short)"));
            }
            Ok(())
        })
    }

    fn sync_data(&self) -> io::Result<()> {
        // Only what was made and written back before the call is covered:
        // writes made while it runs (see `set_sync_latency`) stay pending,
        // and its flush covers the write-backs that completed before it.
        let (latency, made_upto, flush_upto, panics) = self.with(|inner, _| {
            let panics = inner
                .faults
                .panic_sync
                .take_if(|part| self.path.to_string_lossy().contains(part.as_str()))
                .is_some();
            if !panics {
                inner.consume_op()?;
            }
            Ok((
                inner.faults.sync_latency,
                inner.ops_made,
                inner.write_backs,
                panics,
            ))
        })?;
        if panics {
            // The one panic outside this crate's tests, on purpose: it is
            // the fault `panic_next_sync` injects, reached only after a test
            // armed it (this crate is a dev-dependency only, never in a
            // shipped binary). Raised outside the file system's lock, so
            // that the state stays usable for the test's later checks.
            #[allow(clippy::panic)]
            {
                panic!("MemFs: injected panic in sync_data of {}", self.path.display());
            }
        }
        if let Some(d) = latency {
            std::thread::sleep(d);
        }
        let result = self.with(|inner, ino| {
            let failed = inner.faults.fail_syncs > 0 || inner.failpoint(FsOp::SyncData, &self.path).is_err();
            if failed {
                inner.faults.fail_syncs = inner.faults.fail_syncs.saturating_sub(1);
            } else {
                inner.syncs += 1;
            }
            let file = inner.files.get_mut(&ino).ok_or_else(|| eio("fsync"))?;
            let ops = file.take_made_before(made_upto);
            if failed {
                // Linux marks the pages clean after a failed writeback: the data
                // stays readable in the cache but will never be written. The
                // device's cache flush failed too: what other files wrote back
                // may be gone.
                for other in inner.files.values_mut() {
                    other
                        .pending
                        .retain(|p| p.written_back.is_none_or(|n| n > flush_upto));
                }
                return Err(eio("fsync"));
            }
            for op in &ops {
                apply(&mut file.durable, op);
            }
            // Every byte written so far is now in allocated, written blocks.
            file.settle_ops(&ops);
            // The fdatasync ended with a device cache flush.
            for other in inner.files.values_mut() {
                other.flush_written_back(flush_upto);
            }
            Ok(())
        });
        self.fs.sync_hold.wait_if_armed(&self.path);
        result
    }

    fn len(&self) -> io::Result<u64> {
        self.with(|inner, ino| Ok(inner.files[&ino].current.len() as u64))
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.with(|inner, ino| {
            inner.consume_op()?;
            inner.failpoint(FsOp::SetLen, &self.path)?;
            let old_len = inner.files[&ino].current.len();
            inner.check_space(old_len, len as usize)?;
            let op = Op::SetLen(len);
            let file = inner.files.get_mut(&ino).ok_or_else(|| eio("set_len"))?;
            apply(&mut file.current, &op);
            file.cut_settled(len);
            inner.push_pending(ino, op);
            Ok(())
        })
    }

    fn allocate(&self, len: u64) -> io::Result<()> {
        let current = self.len()?;
        if current >= len || self.fs.lock_inner().no_allocate {
            return Ok(());
        }
        self.set_len(len)
    }

    fn write_back(&self, offset: u64) -> io::Result<()> {
        self.with(|inner, ino| {
            inner.consume_op()?;
            let failed = inner.failpoint(FsOp::WriteBack, &self.path).is_err();
            inner.write_backs += 1;
            let n = inner.write_backs;
            let file = inner.files.get_mut(&ino).ok_or_else(|| eio("write-back"))?;
            let mut kept = Vec::with_capacity(file.pending.len());
            for mut p in std::mem::take(&mut file.pending) {
                // Lengths are metadata: only this file's own sync makes them
                // durable. Writes go from `offset` on; one that starts
                // below it is split there, the part below staying behind.
                let Op::Write { offset: at, data } = &p.op else {
                    kept.push(p);
                    continue;
                };
                let end = at + data.len() as u64;
                if p.written_back.is_some() || end <= offset {
                    kept.push(p);
                    continue;
                }
                if *at < offset {
                    let cut = (offset - at) as usize;
                    let (below, above) = data.split_at(cut);
                    let (below, above) = (below.to_vec(), above.to_vec());
                    kept.push(PendingOp {
                        made: p.made,
                        written_back: None,
                        op: Op::Write {
                            offset: *at,
                            data: below,
                        },
                    });
                    p.op = Op::Write { offset, data: above };
                }
                if failed {
                    // As after a failed fsync: the pages count as clean,
                    // and what they held will never be written.
                    continue;
                }
                p.written_back = Some(n);
                kept.push(p);
            }
            file.pending = kept;
            if failed {
                return Err(eio("write-back"));
            }
            Ok(())
        })
    }

    fn start_write_back(&self, offset: u64, len: u64) -> io::Result<()> {
        self.fs.hold.wait_if_armed(&self.path);
        self.with(|inner, ino| {
            inner.write_backs_started.push(WriteBackStart {
                path: self.path.clone(),
                start: offset,
                end: offset.saturating_add(len),
            });
            inner.consume_op()?;
            if inner.failpoint(FsOp::StartWriteBack, &self.path).is_err() {
                let made = inner.ops_made;
                let file = inner.files.get_mut(&ino).ok_or_else(|| eio("write-back"))?;
                file.take_made_before(made);
                return Err(eio("write-back"));
            }
            Ok(())
        })
    }

    fn drop_cache(&self, offset: u64, len: Option<u64>) -> io::Result<()> {
        self.with(|inner, ino| {
            let file = &inner.files[&ino];
            let file_len = file.current.len() as u64;
            let start = offset.min(file_len);
            let end = len.map_or(file_len, |n| offset.saturating_add(n).min(file_len));
            let (a, b) = (start as usize, end as usize);
            let durable = file.durable.len() >= b && file.current[a..b] == file.durable[a..b];
            inner.cache_drops.push(CacheDrop {
                path: self.path.clone(),
                start,
                end,
                durable,
            });
            Ok(())
        })
    }

    fn map(&self, len: usize) -> io::Result<Mapping> {
        self.with(|inner, ino| {
            let file = &inner.files[&ino];
            // As with mmap, a map may reach past the end of the file: a
            // writer may cut the file between a reader's look at its length
            // and the map. Pages past the end raise SIGBUS on Linux when
            // touched; here they are left out of the copy, so that a reader
            // that touches them fails its bounds checks (or panics) in tests.
            let len = len.min(file.current.len());
            Ok(Mapping::Owned(file.current[..len].to_vec()))
        })
    }
}

#[derive(Debug)]
struct MemSyncer {
    fs: MemFs,
    path: PathBuf,
}

impl FsSyncer for MemSyncer {
    fn sync(&self) -> io::Result<()> {
        self.fs.sync_filesystem(&self.path)
    }
}

#[derive(Debug)]
struct MemLock {
    fs: MemFs,
    path: PathBuf,
}

impl LockGuard for MemLock {}

impl Drop for MemLock {
    fn drop(&mut self) {
        self.fs.lock_inner().locks.remove(&self.path);
    }
}

impl FileSystem for MemFs {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        // Directories themselves are durable at once; only their entries
        // (files) are subject to `sync_dir`.
        let mut inner = self.lock_inner();
        for ancestor in path.ancestors() {
            inner.dirs.entry(ancestor.to_path_buf()).or_default();
        }
        Ok(())
    }

    fn read_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let inner = self.lock_inner();
        let dir = inner.dirs.get(path).ok_or_else(|| not_found(path))?;
        let mut names: Vec<String> = dir.current.keys().cloned().collect();
        for sub in inner.dirs.keys() {
            if sub.parent() == Some(path) {
                if let Some(name) = sub.file_name().and_then(|n| n.to_str()) {
                    names.push(name.to_string());
                }
            }
        }
        names.sort();
        Ok(names)
    }

    fn sync_filesystem(&self, path: &Path) -> io::Result<()> {
        let mut inner = self.lock_inner();
        let result = self.sync_filesystem_locked(&mut inner, path);
        let pause = MemFs::next_jitter(&mut inner);
        let latency = inner.faults.syncfs_latency;
        drop(inner);
        pause_for(pause);
        if let Some(d) = latency {
            std::thread::sleep(d);
        }
        result
    }

    fn filesystem_syncer(&self, path: &Path) -> io::Result<Box<dyn FsSyncer>> {
        Ok(Box::new(MemSyncer {
            fs: self.clone(),
            path: path.to_path_buf(),
        }))
    }

    fn shares_flushes(&self, _dir: &Path) -> bool {
        !self.lock_inner().no_shared_flushes
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        // Directory removal is durable at once in this model, like creation.
        let mut inner = self.lock_inner();
        inner.consume_op()?;
        inner.failpoint(FsOp::RemoveDirAll, path)?;
        inner.dirs.retain(|d, _| !d.starts_with(path));
        Ok(())
    }

    fn exists(&self, path: &Path) -> bool {
        let inner = self.lock_inner();
        inner.dirs.contains_key(path) || inner.lookup(path).is_ok()
    }

    fn create_new(&self, path: &Path) -> io::Result<Arc<dyn FileHandle>> {
        let (dir, name) = split(path)?;
        let mut inner = self.lock_inner();
        inner.consume_op()?;
        inner.failpoint(FsOp::Create, path)?;
        if inner.faults.fail_writes > 0 {
            inner.faults.fail_writes -= 1;
            return Err(eio("create"));
        }
        let ino = inner.next_ino;
        let d = inner.dirs.get_mut(&dir).ok_or_else(|| not_found(&dir))?;
        if d.current.contains_key(&name) {
            return Err(io::Error::new(io::ErrorKind::AlreadyExists, "exists"));
        }
        d.current.insert(name, ino);
        inner.next_ino += 1;
        inner.files.insert(ino, FileState::default());
        Ok(self.handle(&inner, path, ino, true))
    }

    fn open_rw(&self, path: &Path) -> io::Result<Arc<dyn FileHandle>> {
        let inner = self.lock_inner();
        let ino = inner.lookup(path)?;
        Ok(self.handle(&inner, path, ino, true))
    }

    fn open_read(&self, path: &Path) -> io::Result<Arc<dyn FileHandle>> {
        let inner = self.lock_inner();
        let ino = inner.lookup(path)?;
        Ok(self.handle(&inner, path, ino, false))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let (from_dir, from_name) = split(from)?;
        let (to_dir, to_name) = split(to)?;
        let mut inner = self.lock_inner();
        inner.consume_op()?;
        inner.failpoint(FsOp::Rename, from)?;
        inner.failpoint(FsOp::Rename, to)?;
        let ino = inner
            .dirs
            .get_mut(&from_dir)
            .and_then(|d| d.current.remove(&from_name))
            .ok_or_else(|| not_found(from))?;
        inner
            .dirs
            .get_mut(&to_dir)
            .ok_or_else(|| not_found(&to_dir))?
            .current
            .insert(to_name, ino);
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let (dir, name) = split(path)?;
        let mut inner = self.lock_inner();
        inner.consume_op()?;
        inner.failpoint(FsOp::Remove, path)?;
        inner
            .dirs
            .get_mut(&dir)
            .and_then(|d| d.current.remove(&name))
            .map(|_| ())
            .ok_or_else(|| not_found(path))
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        let mut inner = self.lock_inner();
        inner.consume_op()?;
        inner.failpoint(FsOp::SyncDir, path)?;
        if inner.faults.fail_syncs > 0 {
            inner.faults.fail_syncs -= 1;
            return Err(eio("directory fsync"));
        }
        let dir = inner.dirs.get_mut(path).ok_or_else(|| not_found(path))?;
        dir.durable = dir.current.clone();
        Ok(())
    }

    fn lock(&self, path: &Path) -> io::Result<Box<dyn LockGuard>> {
        let mut inner = self.lock_inner();
        if !inner.locks.insert(path.to_path_buf()) {
            return Err(io::Error::new(io::ErrorKind::WouldBlock, "lock is held"));
        }
        Ok(Box::new(MemLock {
            fs: self.clone(),
            path: path.to_path_buf(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two_files(fs: &MemFs) -> (Arc<dyn FileHandle>, Arc<dyn FileHandle>) {
        let d = Path::new("/d");
        fs.create_dir_all(d).unwrap();
        let a = fs.create_new(&d.join("a")).unwrap();
        let b = fs.create_new(&d.join("b")).unwrap();
        fs.sync_dir(d).unwrap();
        (a, b)
    }

    /// Writes 100 bytes of 1 at the start of `f` and syncs them: settled.
    fn ones_synced(f: &Arc<dyn FileHandle>) {
        f.write_all_at(&[1; 100], 0).unwrap();
        f.sync_data().unwrap();
    }

    fn contents(fs: &MemFs, name: &str) -> Vec<u8> {
        fs.contents(&Path::new("/d").join(name)).unwrap()
    }

    #[test]
    fn a_flush_makes_written_back_overwrites_of_settled_blocks_durable_and_nothing_else() {
        let fs = MemFs::new();
        let (a, b) = two_files(&fs);
        ones_synced(&a);
        // Allocated and synced, but never written: no settled blocks.
        a.allocate(300).unwrap();
        a.sync_data().unwrap();
        a.write_all_at(&[2; 50], 0).unwrap();
        a.write_all_at(&[3; 50], 150).unwrap();
        a.write_back(0).unwrap();
        assert_eq!(fs.write_back_count(), 1);
        // Another file's fdatasync is the device flush.
        b.write_all_at(&[9; 10], 0).unwrap();
        b.sync_data().unwrap();
        fs.crash(CrashPlan::LoseUnsynced);
        let got = contents(&fs, "a");
        assert_eq!(got.len(), 300);
        assert_eq!(&got[..50], &[2; 50], "an overwrite of settled blocks is durable");
        assert_eq!(&got[50..100], &[1; 50]);
        assert!(
            got[150..200].iter().all(|x| *x == 0),
            "a write into never-written space needs its own file's sync"
        );
        assert_eq!(contents(&fs, "b"), vec![9; 10]);
    }

    #[test]
    fn without_a_flush_a_written_back_write_is_as_uncertain_as_a_pending_one() {
        let fs = MemFs::new();
        let (a, _b) = two_files(&fs);
        ones_synced(&a);
        a.write_all_at(&[2; 100], 0).unwrap();
        a.write_back(0).unwrap();
        assert_eq!(fs.pending_bytes(Path::new("/d/a")).unwrap(), 100);
        fs.crash(CrashPlan::LoseUnsynced);
        assert_eq!(contents(&fs, "a"), vec![1; 100]);
    }

    #[test]
    fn a_flush_does_not_cover_a_write_back_that_completed_after_it_began() {
        let fs = MemFs::new();
        let (a, b) = two_files(&fs);
        ones_synced(&a);
        a.write_all_at(&[2; 100], 0).unwrap();
        fs.set_sync_latency(Some(std::time::Duration::from_millis(200)));
        std::thread::scope(|s| {
            let flush = s.spawn(|| b.sync_data().unwrap());
            // The flush has begun (it is sleeping) when the write-back lands.
            std::thread::sleep(std::time::Duration::from_millis(50));
            a.write_back(0).unwrap();
            flush.join().unwrap();
        });
        fs.crash(CrashPlan::LoseUnsynced);
        assert_eq!(contents(&fs, "a"), vec![1; 100], "a later flush was needed");
    }

    #[test]
    fn a_failed_flush_loses_what_every_file_wrote_back() {
        let fs = MemFs::new();
        let (a, b) = two_files(&fs);
        ones_synced(&a);
        a.write_all_at(&[2; 100], 0).unwrap();
        a.write_back(0).unwrap();
        fs.fail_next_syncs(1);
        assert!(b.sync_data().is_err());
        // A later successful flush cannot bring the write back.
        b.sync_data().unwrap();
        fs.crash(CrashPlan::KeepUnsynced);
        assert_eq!(contents(&fs, "a"), vec![1; 100]);
    }

    #[test]
    fn a_cut_unsettles_the_blocks_past_it() {
        let fs = MemFs::new();
        let (a, b) = two_files(&fs);
        ones_synced(&a);
        a.set_len(40).unwrap();
        a.set_len(100).unwrap();
        a.sync_data().unwrap();
        a.write_all_at(&[5; 10], 60).unwrap();
        a.write_all_at(&[6; 10], 20).unwrap();
        a.write_back(0).unwrap();
        b.sync_data().unwrap();
        fs.crash(CrashPlan::LoseUnsynced);
        let got = contents(&fs, "a");
        assert_eq!(&got[20..30], &[6; 10], "below the cut the blocks stay settled");
        assert!(got[60..70].iter().all(|x| *x == 0), "past the cut they are new");
    }

    #[test]
    fn a_write_back_sends_only_what_lies_from_its_offset_on() {
        let fs = MemFs::new();
        let (a, b) = two_files(&fs);
        ones_synced(&a);
        a.write_all_at(&[2; 100], 0).unwrap();
        a.write_back(50).unwrap();
        b.sync_data().unwrap();
        fs.crash(CrashPlan::LoseUnsynced);
        let got = contents(&fs, "a");
        assert_eq!(&got[..50], &[1; 50], "below the offset nothing was sent");
        assert_eq!(&got[50..], &[2; 50]);
    }

    #[test]
    fn a_sync_covers_only_what_was_written_before_it_began() {
        let fs = MemFs::new();
        let (a, _b) = two_files(&fs);
        a.write_all_at(&[1; 100], 0).unwrap();
        fs.set_sync_latency(Some(std::time::Duration::from_millis(200)));
        std::thread::scope(|s| {
            let sync = s.spawn(|| a.sync_data().unwrap());
            std::thread::sleep(std::time::Duration::from_millis(50));
            a.write_all_at(&[2; 100], 100).unwrap();
            sync.join().unwrap();
        });
        fs.crash(CrashPlan::LoseUnsynced);
        assert_eq!(contents(&fs, "a"), vec![1; 100]);
    }

    #[test]
    fn a_failed_write_back_drops_the_pages_like_a_failed_fsync() {
        let fs = MemFs::new();
        let (a, b) = two_files(&fs);
        ones_synced(&a);
        a.write_all_at(&[2; 100], 0).unwrap();
        fs.fail_at(FsOp::WriteBack, "/d/a", 1);
        assert!(a.write_back(0).is_err());
        a.sync_data().unwrap();
        b.sync_data().unwrap();
        fs.crash(CrashPlan::KeepUnsynced);
        assert_eq!(contents(&fs, "a"), vec![1; 100]);
    }

    #[test]
    fn a_write_past_the_capacity_lands_what_fits_and_is_recorded_with_its_file() {
        let fs = MemFs::new();
        let (a, b) = two_files(&fs);
        ones_synced(&a);
        fs.set_capacity(Some(fs.used_bytes() + 30));
        let err = a.write_all_at(&[2; 100], 80).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(28));
        // 20 bytes over old ones, 30 past the end: 50 landed.
        let got = contents(&fs, "a");
        assert_eq!(got.len(), 130);
        assert_eq!(&got[80..], &[2; 50]);
        // A write that lands nothing is not recorded; one of zeros that
        // lands in part is, as zeros.
        assert!(a.write_all_at(&[3; 10], 130).is_err());
        fs.set_capacity(Some(fs.used_bytes() + 10));
        assert!(b.write_all_at(&[0; 40], 0).is_err());
        assert_eq!(
            fs.partial_no_space_writes(),
            vec![
                PartialWrite {
                    path: PathBuf::from("/d/a"),
                    offset: 80,
                    asked: 100,
                    landed: 50,
                    zeros: false,
                },
                PartialWrite {
                    path: PathBuf::from("/d/b"),
                    offset: 0,
                    asked: 40,
                    landed: 10,
                    zeros: true,
                },
            ]
        );
    }
}

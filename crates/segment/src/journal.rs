//! One journal for the small groups of every log of an engine.
//!
//! Each log's group commit shares an `fdatasync` among that log's
//! appenders, but a sync of one file cannot cover another: with one record
//! per request and a few requests in flight per shard, a server syncs about
//! once per record. On a virtual disk every sync is a data write and a cache
//! flush, each a request to the device with its exit to the host and its
//! interrupt, and those requests, not the bytes, take the CPU.
//!
//! The journal turns the small appends of all logs into one stream: an
//! append of at most [`JOURNAL_WRITE_BYTES_MAX`] bytes is written to its
//! segment as always (page cache, no sync) and the same bytes are queued
//! here, with the segment's path, file id and offset. One thread writes the
//! queue to the journal file and syncs it; appends that arrive meanwhile
//! share the next sync. An append is durable once the journal sync that
//! holds it has completed: after a crash, [`Journal::open`] writes every
//! entry again into its segment (a redo, in the order written, idempotent)
//! before any log opens, so that the segments hold everything acknowledged.
//!
//! The journal has two files, zero-filled when made (so its syncs never
//! allocate), written in turn. When the current file is full, a
//! *checkpoint* syncs the segments of every log that wrote into it; only
//! then is the other file, whose logs were checkpointed at the previous
//! turn, written over. An entry carries the generation of its file's use,
//! so that entries of an older use left further on end the file.
//!
//! Failures: a failed journal write or sync fails the appends of that sync
//! (their logs poison themselves, as after a failed `fdatasync`) and stops
//! the journal for good: later appends sync their own segments, and the
//! journal's files are kept as they are for the redo at the next open. A
//! failed checkpoint does the same (a log whose segment sync failed may have
//! lost journaled pages; only the journal still has them).

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use byteorder::ByteOrder;

use crate::error::{Error, Result};
use crate::format::*;
use crate::fs::{FileHandle, FileSystem};
use crate::segment::SegmentHeader;

/// Entries of one segment closer than this are read ahead as one span by
/// the redo: reading a gap this small costs less than another request.
const REDO_PREFETCH_GAP_BYTES: u64 = 64 * 1024;

/// What the journal needs of a log to checkpoint it.
pub(crate) trait JournalClient: Send + Sync {
    /// Syncs the log's active segment (each roll synced the segments before
    /// it), so that what it journaled so far is durable without the
    /// journal. `None` when the log is closed; an error when the sync failed
    /// (the log has poisoned itself).
    fn checkpoint(&self) -> Option<std::result::Result<(), String>>;
}

/// Called once the journal sync holding a write has completed (or failed).
pub(crate) type Completion = Box<dyn FnOnce(std::result::Result<(), String>) + Send>;

/// One append's bytes, queued for the journal.
pub(crate) struct JournalWrite {
    /// The segment's path relative to the journal's root.
    pub path: Arc<str>,
    pub file_id: u64,
    pub offset: u64,
    pub payload: Vec<u8>,
    /// The log, for checkpoints: its id and how to sync it, and its active
    /// file, synced directly should the log be closed by then.
    pub client_id: u64,
    pub client: Arc<dyn JournalClient>,
    pub file: Arc<dyn FileHandle>,
    pub done: Completion,
}

impl JournalWrite {
    fn entry_bytes(&self) -> usize {
        JOURNAL_ENTRY_HEADER_BYTES + self.path.len() + self.payload.len()
    }
}

#[derive(Default)]
struct Queue {
    writes: Vec<JournalWrite>,
    stop: bool,
    /// Why the journal stopped taking writes, for good.
    dead: Option<String>,
    /// A thread is writing the queue (or about to): started by the first
    /// write that finds none, it ends after `JOURNAL_THREAD_IDLE_MS` without
    /// work, so an idle engine keeps no thread.
    running: bool,
    /// That thread, so that a drop on it does not wait for itself.
    thread: Option<std::thread::ThreadId>,
    /// The thread holds a batch it has not completed yet.
    in_flight: bool,
    /// The thread is waiting on the condition variable for work: only then
    /// does a push wake it (the standard condition variable makes a system
    /// call on every notify, waiter or not, and appenders push while the
    /// thread is busy syncing most of the time).
    waiting: bool,
}

/// How long the journal's thread waits for work before it ends.
const JOURNAL_THREAD_IDLE_MS: u64 = 1000;

/// Where the journal writes next, kept across its threads (one at a time).
struct Position {
    files: Vec<(Arc<dyn FileHandle>, PathBuf)>,
    file_bytes: u64,
    generation: u64,
    current: usize,
    offset: u64,
    /// The logs that wrote into the current file: what its checkpoint syncs.
    touched: HashMap<u64, Touched>,
    buf: Vec<u8>,
}

/// Run after every sync the journal counts on (see
/// [`Journal::set_settle_check`]).
type SettleCheck = Box<dyn Fn() -> std::result::Result<(), String> + Send + Sync>;

struct Shared {
    queue: Mutex<Queue>,
    cv: Condvar,
    settle: Mutex<Option<SettleCheck>>,
    position: Mutex<Position>,
    fs: Arc<dyn FileSystem>,
    root: PathBuf,
    syncs: AtomicU64,
    writes: AtomicU64,
    checkpoints: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs the settle check (see [`Journal::set_settle_check`]), then
    /// fails if the journal was stopped meanwhile.
    fn settled(&self) -> std::result::Result<(), String> {
        if let Some(check) = &*self.settle.lock().unwrap_or_else(|p| p.into_inner()) {
            check()?;
        }
        self.lock().dead.clone().map_or(Ok(()), Err)
    }
}

/// The engine's journal (see the module documentation).
pub struct Journal {
    dir: PathBuf,
    shared: Arc<Shared>,
    next_client_id: AtomicU64,
}

impl fmt::Debug for Journal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Journal")
            .field("dir", &self.dir)
            .field("syncs", &self.sync_count())
            .finish_non_exhaustive()
    }
}

/// What [`Journal::open`] did with the journal it found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RedoReport {
    /// Entries written again into their segments.
    pub entries_applied: u64,
    /// Entries whose segment is gone (removed by retention, or its stream
    /// deleted) or is now another file (another file id).
    pub entries_skipped: u64,
    pub bytes_applied: u64,
    /// Segment files synced after the redo.
    pub files_synced: u64,
}

/// A decoded entry (borrowing the file's bytes).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Entry<'a> {
    pub generation: u64,
    pub file_id: u64,
    pub offset: u64,
    pub path: &'a str,
    pub payload: &'a [u8],
}

/// Appends the entry of `w` with `generation` to `out`.
pub(crate) fn encode_entry(
    out: &mut Vec<u8>,
    generation: u64,
    path: &str,
    file_id: u64,
    offset: u64,
    payload: &[u8],
) {
    let start = out.len();
    out.resize(start + JOURNAL_ENTRY_HEADER_BYTES, 0);
    let h = &mut out[start..];
    Endian::write_u32(&mut h[JE_PAYLOAD_LEN_OFFSET..], payload.len() as u32);
    Endian::write_u16(&mut h[JE_PATH_LEN_OFFSET..], path.len() as u16);
    Endian::write_u64(&mut h[JE_GENERATION_OFFSET..], generation);
    Endian::write_u64(&mut h[JE_FILE_ID_OFFSET..], file_id);
    Endian::write_u64(&mut h[JE_SEGMENT_OFFSET..], offset);
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(payload);
    let crc = crc32fast::hash(&out[start + JE_PAYLOAD_LEN_OFFSET..]);
    Endian::write_u32(&mut out[start + JE_CRC_OFFSET..], crc);
}

/// Decodes the entry at `pos`: `None` at the end of the file's entries (zeros,
/// a torn or damaged entry, or one of another generation than `generation`
/// when that is given).
pub(crate) fn decode_entry(bytes: &[u8], pos: usize, generation: Option<u64>) -> Option<(Entry<'_>, usize)> {
    let h = bytes.get(pos..pos.checked_add(JOURNAL_ENTRY_HEADER_BYTES)?)?;
    let payload_len = Endian::read_u32(&h[JE_PAYLOAD_LEN_OFFSET..]) as usize;
    let path_len = Endian::read_u16(&h[JE_PATH_LEN_OFFSET..]) as usize;
    if payload_len == 0
        || payload_len > JOURNAL_WRITE_BYTES_MAX
        || path_len == 0
        || path_len > JOURNAL_PATH_BYTES_MAX
        || h[JE_RESERVED_OFFSET..JE_GENERATION_OFFSET]
            .iter()
            .any(|b| *b != 0)
    {
        return None;
    }
    let end = pos + JOURNAL_ENTRY_HEADER_BYTES + path_len + payload_len;
    let all = bytes.get(pos..end)?;
    if crc32fast::hash(&all[JE_PAYLOAD_LEN_OFFSET..]) != Endian::read_u32(&all[JE_CRC_OFFSET..]) {
        return None;
    }
    let gen = Endian::read_u64(&h[JE_GENERATION_OFFSET..]);
    if generation.is_some_and(|g| g != gen) {
        return None;
    }
    let path =
        std::str::from_utf8(&all[JOURNAL_ENTRY_HEADER_BYTES..JOURNAL_ENTRY_HEADER_BYTES + path_len]).ok()?;
    Some((
        Entry {
            generation: gen,
            file_id: Endian::read_u64(&h[JE_FILE_ID_OFFSET..]),
            offset: Endian::read_u64(&h[JE_SEGMENT_OFFSET..]),
            path,
            payload: &all[JOURNAL_ENTRY_HEADER_BYTES + path_len..],
        },
        end,
    ))
}

/// The entries of one journal file's current use, in order.
pub(crate) fn entries(bytes: &[u8]) -> Vec<Entry<'_>> {
    let mut out = Vec::new();
    let Some((first, mut pos)) = decode_entry(bytes, 0, None) else {
        return out;
    };
    let generation = first.generation;
    out.push(first);
    while let Some((e, next)) = decode_entry(bytes, pos, Some(generation)) {
        out.push(e);
        pos = next;
    }
    out
}

/// A relative path of plain names only: an entry never names a file outside
/// the data directory.
fn is_plain_relative(path: &Path) -> bool {
    path.components().all(|c| matches!(c, Component::Normal(_)))
}

impl Journal {
    /// Redoes the journal found under `root` (the engine's data directory)
    /// into the segments, syncs them and removes the journal
    /// ([`Journal::redo_found`]); then, with `file_bytes`, makes a new
    /// journal with files of that size ([`Journal::create`]). Must run before
    /// any log under `root` opens. Fails when a redo write or sync fails (the
    /// segments would lack acknowledged records) or the new journal cannot
    /// be made.
    pub fn open(
        fs: Arc<dyn FileSystem>,
        root: &Path,
        file_bytes: Option<u64>,
    ) -> Result<(Option<Arc<Journal>>, RedoReport)> {
        let report = Self::redo_found(&*fs, root)?;
        let journal = match file_bytes {
            Some(bytes) => Some(Self::create(fs, root, bytes)?),
            None => None,
        };
        Ok((journal, report))
    }

    /// Redoes the journal found under `root` into the segments, syncs them
    /// and removes the journal's files; nothing when there is none. Must run
    /// before any log under `root` opens, whatever the options: the journal
    /// may hold acknowledged records that no segment has yet.
    pub fn redo_found(fs: &dyn FileSystem, root: &Path) -> Result<RedoReport> {
        let dir = root.join(JOURNAL_DIR_NAME);
        if !fs.exists(&dir) {
            return Ok(RedoReport::default());
        }
        let report = redo(fs, root, &dir)?;
        remove_files(fs, &dir)?;
        Ok(report)
    }

    /// Makes a new journal under `root` with two files of `file_bytes`
    /// each, written with zeros and synced, and returns it (its thread
    /// starts with the first write). The journal's directory must hold no
    /// journal files: [`Journal::redo_found`] runs first. A journal that
    /// cannot be made holds nothing yet, so a caller may go on without one;
    /// the files made so far are removed (best effort: files of zeros hold
    /// no entries, so a later redo finds nothing in them).
    pub fn create(fs: Arc<dyn FileSystem>, root: &Path, file_bytes: u64) -> Result<Arc<Journal>> {
        if file_bytes < JOURNAL_FILE_BYTES_MIN {
            return Err(Error::InvalidArgument(format!(
                "journal files of {file_bytes} bytes are too small: at least {JOURNAL_FILE_BYTES_MIN}"
            )));
        }
        let dir = root.join(JOURNAL_DIR_NAME);
        let mut files = Vec::with_capacity(JOURNAL_FILE_NAMES.len());
        if let Err(e) = make_files(&*fs, &dir, file_bytes, &mut files) {
            // Only the files this call made: any other would be a journal
            // not yet redone.
            for (_, path) in &files {
                let _ = fs.remove_file(path);
            }
            return Err(e);
        }
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            cv: Condvar::new(),
            settle: Mutex::new(None),
            position: Mutex::new(Position {
                files,
                file_bytes,
                generation: 1,
                current: 0,
                offset: 0,
                touched: HashMap::new(),
                buf: Vec::new(),
            }),
            fs,
            root: root.to_path_buf(),
            syncs: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            checkpoints: AtomicU64::new(0),
        });
        Ok(Arc::new(Journal {
            dir,
            shared,
            next_client_id: AtomicU64::new(1),
        }))
    }

    /// The data directory the journal's paths are relative to.
    pub fn root(&self) -> &Path {
        &self.shared.root
    }

    /// A new id for a log that journals its appends.
    pub(crate) fn client_id(&self) -> u64 {
        self.next_client_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Queues a write. Must be called in the order the log wrote (under its
    /// writer lock). Gives the write back when the journal has stopped, so
    /// that the caller syncs its own segment instead.
    pub(crate) fn push(&self, w: JournalWrite) -> std::result::Result<(), JournalWrite> {
        let mut q = self.shared.lock();
        if q.dead.is_some() || q.stop {
            return Err(w);
        }
        q.writes.push(w);
        if !q.running {
            let shared = self.shared.clone();
            let spawned = std::thread::Builder::new()
                .name("shardlog-journal".into())
                .spawn(move || run(&shared));
            match spawned {
                Ok(h) => {
                    // Detached: a drop waits for `running` to fall instead of
                    // a join, so an ended thread leaves nothing behind.
                    q.running = true;
                    q.thread = Some(h.thread().id());
                }
                Err(_) => {
                    // No thread can start: the caller syncs its own segment.
                    return q.writes.pop().map_or(Ok(()), Err);
                }
            }
        } else if q.waiting && q.writes.len() == 1 {
            // All, not one: a drop or a drain may wait on the same variable,
            // and a single wake-up could go to it instead of the thread.
            self.shared.cv.notify_all();
        }
        Ok(())
    }

    /// Stops the journal for good, keeping its files for the redo at the
    /// next open: what is queued fails with `cause`, later appends sync their
    /// own segments, and no checkpoint writes over a file again. For a
    /// failure that may have dropped the dirty pages of segments whose
    /// journaled appends a checkpoint would otherwise take for synced.
    pub fn stop(&self, cause: &str) {
        let mut q = self.shared.lock();
        if q.dead.is_none() {
            q.dead = Some(format!("the journal stopped: {cause}"));
        }
    }

    /// Sets what the journal runs after each sync it counts on (of its own
    /// file before completing a batch, of the segments before a checkpoint
    /// turns to the other file): the engine gives
    /// [`crate::SyncCoordinator::settled`], a wait for the `syncfs` calls in
    /// flight. A `syncfs` that fails while such a sync runs may have dropped
    /// pages the sync then takes for written (the error is reported to one
    /// caller, not to every file's sync): the batch fails, or the checkpoint
    /// does, before any append is acknowledged or any entry written over.
    pub fn set_settle_check(
        &self,
        check: impl Fn() -> std::result::Result<(), String> + Send + Sync + 'static,
    ) {
        *self.shared.settle.lock().unwrap_or_else(|p| p.into_inner()) = Some(Box::new(check));
    }

    /// Waits until every write queued so far is decided (made durable or
    /// failed): for a clean stop, before the logs leave their clean-stop
    /// markers. Returns at once on the journal's own thread.
    pub fn drain(&self) {
        let mut q = self.shared.lock();
        let me = std::thread::current().id();
        while (!q.writes.is_empty() || q.in_flight) && q.running && q.thread != Some(me) {
            q = self.shared.cv.wait(q).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Whether the journal still takes writes.
    pub fn is_alive(&self) -> bool {
        let q = self.shared.lock();
        q.dead.is_none() && !q.stop
    }

    /// Journal syncs completed so far.
    pub fn sync_count(&self) -> u64 {
        self.shared.syncs.load(Ordering::Relaxed)
    }

    /// Appends made durable by the journal so far.
    pub fn write_count(&self) -> u64 {
        self.shared.writes.load(Ordering::Relaxed)
    }

    /// Checkpoints (turns to the other file) so far.
    pub fn checkpoint_count(&self) -> u64 {
        self.shared.checkpoints.load(Ordering::Relaxed)
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        let mut q = self.shared.lock();
        q.stop = true;
        self.shared.cv.notify_all();
        // Waits for the thread to finish what is queued and end. The last
        // log may close on the journal's own thread (a completion held it):
        // that thread ends by itself once the queue is empty.
        let me = std::thread::current().id();
        while q.running && q.thread != Some(me) {
            q = self.shared.cv.wait(q).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// The journal's thread: takes what is queued (up to a batch), writes it
/// after the entries before it and syncs the file, then completes each
/// write. Turns to the other file, after a checkpoint, when the batch does
/// not fit.
fn run(shared: &Shared) {
    // One thread at a time: a thread started while the last one ends waits
    // here for it.
    let mut guard = shared.position.lock().unwrap_or_else(|p| p.into_inner());
    let pos = &mut *guard;
    loop {
        let (mut batch, dead) = {
            let mut q = shared.lock();
            while q.writes.is_empty() {
                if q.stop {
                    q.running = false;
                    q.thread = None;
                    shared.cv.notify_all();
                    return;
                }
                q.waiting = true;
                let (next, waited) = shared
                    .cv
                    .wait_timeout(q, std::time::Duration::from_millis(JOURNAL_THREAD_IDLE_MS))
                    .unwrap_or_else(|p| p.into_inner());
                q = next;
                q.waiting = false;
                if waited.timed_out() && q.writes.is_empty() {
                    q.running = false;
                    q.thread = None;
                    // A drop may be waiting for this.
                    shared.cv.notify_all();
                    return;
                }
            }
            // Up to a batch's bytes, and always at least one write.
            let mut bytes = 0;
            let mut n = 0;
            while n < q.writes.len()
                && (n == 0 || bytes + q.writes[n].entry_bytes() <= JOURNAL_BATCH_BYTES_MAX)
            {
                bytes += q.writes[n].entry_bytes();
                n += 1;
            }
            q.in_flight = true;
            let batch: VecDeque<JournalWrite> = q.writes.drain(..n).collect();
            (batch, q.dead.clone())
        };
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            write_batch(shared, pos, &mut batch, dead)
        }));
        if outcome.is_err() {
            // A bug (the crates deny panicking code, so this needs one):
            // the journal cannot tell what its file or its writers' logs
            // hold now. Without this, the thread would be gone with
            // `running` still set, and every journaled append from then on
            // would wait forever. It stops for good instead, as after a
            // failed sync (its files stay for the next open's redo), and
            // fails what it had not completed; later appends sync their
            // own segments. Each write leaves the batch before its
            // completion runs, so a completion that panics too is not run
            // twice, and the loop ends.
            let cause = "the journal's thread panicked (a bug: the panic is on the process's standard error); the journal is kept for the redo at the next open and takes no more writes".to_string();
            shared.lock().dead = Some(cause.clone());
            while !batch.is_empty() {
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| fail(&mut batch, &cause)));
            }
        }
        let mut q = shared.lock();
        q.in_flight = false;
        if q.writes.is_empty() {
            // `drain` may be waiting for this.
            shared.cv.notify_all();
        }
    }
}

/// Writes one batch and completes its writes (see [`run`]).
fn write_batch(
    shared: &Shared,
    pos: &mut Position,
    batch: &mut VecDeque<JournalWrite>,
    dead: Option<String>,
) {
    let (fs, root, file_bytes) = (&*shared.fs, &*shared.root, pos.file_bytes);
    if let Some(cause) = dead {
        fail(batch, &cause);
        return;
    }
    let batch_bytes: u64 = batch.iter().map(|w| w.entry_bytes() as u64).sum();
    if pos.offset + batch_bytes > file_bytes {
        let checked = checkpoint(fs, root, &pos.touched).and_then(|()| shared.settled());
        if let Err(cause) = checked {
            let cause = format!(
                    "journal checkpoint failed ({cause}); the journal is kept for the redo at the next open and takes no more writes"
                );
            shared.lock().dead = Some(cause.clone());
            fail(batch, &cause);
            return;
        }
        shared.checkpoints.fetch_add(1, Ordering::Relaxed);
        pos.touched.clear();
        pos.generation += 1;
        pos.current = 1 - pos.current;
        pos.offset = 0;
    }
    pos.buf.clear();
    for w in batch.iter() {
        encode_entry(
            &mut pos.buf,
            pos.generation,
            &w.path,
            w.file_id,
            w.offset,
            &w.payload,
        );
        pos.touched.insert(
            w.client_id,
            Touched {
                client: w.client.clone(),
                file: w.file.clone(),
                path: w.path.clone(),
            },
        );
    }
    let (file, path) = pos.files[pos.current].clone();
    let started = std::time::Instant::now();
    let result = file
        .write_all_at(&pos.buf, pos.offset)
        .and_then(|()| file.sync_data());
    crate::stats::record_journal_sync(started.elapsed(), batch.len() as u64);
    // A sync that overlapped a failing syncfs (which may have dropped this
    // file's pages before the sync could write them, and is reported to
    // one caller only) or ended in a stopped journal proves nothing. The
    // syncfs may still be running: its failure is known only once it ends.
    let result = result.and_then(|()| shared.settled().map_err(std::io::Error::other));
    match result {
        Ok(()) => {
            pos.offset += pos.buf.len() as u64;
            shared.syncs.fetch_add(1, Ordering::Relaxed);
            shared.writes.fetch_add(batch.len() as u64, Ordering::Relaxed);
            // Each write leaves the batch before its completion runs (see
            // `run`).
            while let Some(w) = batch.pop_front() {
                (w.done)(Ok(()));
            }
        }
        Err(e) => {
            let cause = format!(
                    "journal write or fdatasync of {} failed: {e}; the journal is kept for the redo at the next open and takes no more writes",
                    path.display()
                );
            shared.lock().dead = Some(cause.clone());
            // The failed entries may still reach the disk, and a redo
            // would bring back appends their logs now cut: zeros over
            // them, if the device takes them. (Entries before are durable
            // and stay.)
            let zeros = vec![0u8; pos.buf.len()];
            let _ = file
                .write_all_at(&zeros, pos.offset)
                .and_then(|()| file.sync_data());
            fail(batch, &cause);
        }
    }
}

/// Fails the writes of `batch`, in order; each leaves the batch before its
/// completion runs (see [`run`]).
fn fail(batch: &mut VecDeque<JournalWrite>, cause: &str) {
    while let Some(w) = batch.pop_front() {
        (w.done)(Err(cause.to_string()));
    }
}

/// A log that wrote into the current journal file, and the segment it last
/// wrote to (relative to the root).
struct Touched {
    client: Arc<dyn JournalClient>,
    file: Arc<dyn FileHandle>,
    path: Arc<str>,
}

/// Syncs the segments of every log in `touched`: the log syncs itself, or,
/// once closed, its last active file is synced here. A failure on a segment
/// that is gone by now (its stream deleted) does not count: nothing is to be
/// kept of it.
fn checkpoint(
    fs: &dyn FileSystem,
    root: &Path,
    touched: &HashMap<u64, Touched>,
) -> std::result::Result<(), String> {
    for t in touched.values() {
        let result = match t.client.checkpoint() {
            Some(r) => r,
            None => t
                .file
                .sync_data()
                .map_err(|e| format!("fdatasync of {} (its log closed) failed: {e}", t.path)),
        };
        if let Err(e) = result {
            if fs.exists(&root.join(&*t.path)) {
                return Err(e);
            }
        }
    }
    Ok(())
}

/// Makes the journal's files in `dir`: each of `file_bytes`, written with
/// zeros (so that its blocks are allocated and a sync of an entry writes no
/// metadata) and synced, then the directory synced. Each file made is
/// pushed to `files` as soon as it exists, so that a caller can remove it
/// when a later step fails.
fn make_files(
    fs: &dyn FileSystem,
    dir: &Path,
    file_bytes: u64,
    files: &mut Vec<(Arc<dyn FileHandle>, PathBuf)>,
) -> Result<()> {
    fs.create_dir_all(dir)
        .map_err(|e| Error::io("create directory", dir, e))?;
    let zeros = vec![0u8; 1 << 20];
    for name in JOURNAL_FILE_NAMES {
        let path = dir.join(name);
        let file = fs
            .create_new(&path)
            .map_err(|e| Error::io("create journal file", &path, e))?;
        files.push((file.clone(), path.clone()));
        let mut at = 0;
        while at < file_bytes {
            let n = (file_bytes - at).min(zeros.len() as u64) as usize;
            file.write_all_at(&zeros[..n], at)
                .map_err(|e| Error::io("zero-fill journal file", &path, e))?;
            at += n as u64;
        }
        file.sync_data()
            .map_err(|e| Error::io("fsync journal file", &path, e))?;
    }
    fs.sync_dir(dir).map_err(|e| Error::io("fsync directory", dir, e))
}

/// Removes the journal's files in `dir` and syncs the directory.
fn remove_files(fs: &dyn FileSystem, dir: &Path) -> Result<()> {
    for name in JOURNAL_FILE_NAMES {
        let path = dir.join(name);
        if fs.exists(&path) {
            fs.remove_file(&path)
                .map_err(|e| Error::io("remove journal file", &path, e))?;
        }
    }
    fs.sync_dir(dir).map_err(|e| Error::io("fsync directory", dir, e))
}

/// Writes every entry of the journal in `dir` into its segment under `root`,
/// older file first, and syncs the segments written.
fn redo(fs: &dyn FileSystem, root: &Path, dir: &Path) -> Result<RedoReport> {
    // Mapped, not read: a heap copy of the two files (32 MiB by default)
    // would stay in the process's memory after every start.
    let mut contents = Vec::new();
    for name in JOURNAL_FILE_NAMES {
        let path = dir.join(name);
        if fs.exists(&path) {
            let map = crate::fs::map_all(fs, &path).map_err(|e| Error::io("map journal file", &path, e))?;
            contents.push(map);
        }
    }
    let mut files: Vec<Vec<Entry<'_>>> = contents
        .iter()
        .map(|m| entries(m.as_slice()))
        .filter(|e| !e.is_empty())
        .collect();
    files.sort_by_key(|e| e[0].generation);
    // Each segment once, with its entries in the journal's order.
    let mut segments: HashMap<(&str, u64), RedoTarget<'_>> = HashMap::new();
    for e in files.iter().flatten() {
        let target = match segments.entry((e.path, e.file_id)) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => v.insert(RedoTarget {
                file: open_segment(fs, root, e.path, e.file_id)?,
                entries: Vec::new(),
            }),
        };
        target.entries.push(e);
    }
    // After a reboot the segments' pages are not cached, and writing an
    // entry that starts or ends inside a page reads that page first: one
    // small read at a time, thousands of them after a busy journal (886 ms
    // of a cold open of 100 shards). Asking for every span of every segment
    // before any write lets the kernel read them together. Advice only: a
    // failed hint changes nothing that the writes below do not check
    // themselves.
    for target in segments.values() {
        if let Some(file) = &target.file {
            let mut ranges: Vec<(u64, u64)> = target
                .entries
                .iter()
                .map(|e| (e.offset, e.offset.saturating_add(e.payload.len() as u64)))
                .collect();
            for (start, end) in merge_close(&mut ranges) {
                let _ = file.prefetch(start, end - start);
            }
        }
    }
    let mut report = RedoReport::default();
    for ((path, _), target) in &segments {
        let Some(file) = &target.file else {
            report.entries_skipped += target.entries.len() as u64;
            continue;
        };
        for e in &target.entries {
            file.write_all_at(e.payload, e.offset)
                .map_err(|err| Error::io("redo journal entry into", root.join(path), err))?;
            report.entries_applied += 1;
            report.bytes_applied += e.payload.len() as u64;
        }
        file.sync_data()
            .map_err(|e| Error::io("fsync segment after the journal's redo", root.join(path), e))?;
        report.files_synced += 1;
    }
    Ok(report)
}

/// A segment the redo writes into, with its entries in the journal's
/// order; its file is `None` when it is gone or another file now.
struct RedoTarget<'a> {
    file: Option<Arc<dyn FileHandle>>,
    entries: Vec<&'a Entry<'a>>,
}

/// Sorts `ranges` and merges those less than `REDO_PREFETCH_GAP_BYTES`
/// apart: the spans to read ahead. Entries of one segment are mostly
/// contiguous, but appends too large for the journal may lie between
/// them, and a span over those would read what the redo never writes.
fn merge_close(ranges: &mut [(u64, u64)]) -> Vec<(u64, u64)> {
    ranges.sort_unstable();
    let mut spans: Vec<(u64, u64)> = Vec::new();
    for &(start, end) in ranges.iter() {
        match spans.last_mut() {
            Some(last) if start <= last.1.saturating_add(REDO_PREFETCH_GAP_BYTES) => {
                last.1 = last.1.max(end);
            }
            _ => spans.push((start, end)),
        }
    }
    spans
}

/// Opens the segment an entry names if it is still the file the entry was
/// written for (same file id in its header).
fn open_segment(
    fs: &dyn FileSystem,
    root: &Path,
    rel: &str,
    file_id: u64,
) -> Result<Option<Arc<dyn FileHandle>>> {
    let rel = Path::new(rel);
    if !is_plain_relative(rel) {
        return Ok(None);
    }
    let path = root.join(rel);
    if !fs.exists(&path) {
        return Ok(None);
    }
    let file = fs
        .open_rw(&path)
        .map_err(|e| Error::io("open segment for the journal's redo", &path, e))?;
    let mut head = [0u8; SEGMENT_HEADER_BYTES];
    match file.read_exact_at(&mut head, 0) {
        Ok(()) => {}
        // Shorter than a header: not the segment the entry was written for
        // (whose header was synced when it was made).
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        // The journal must stay until its entries can be written.
        Err(e) => return Err(Error::io("read segment header for the journal's redo", &path, e)),
    }
    match SegmentHeader::decode(&head) {
        Ok(h) if h.file_id == file_id => Ok(Some(file)),
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn entries_decode_to_what_was_encoded_and_end_at_zeros_damage_or_another_generation(
            payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..300), 1..8),
            generation in 1u64..1000,
            flip in any::<proptest::sample::Index>(),
        ) {
            let mut buf = Vec::new();
            for (i, p) in payloads.iter().enumerate() {
                encode_entry(&mut buf, generation, "streams/1/shard-0/00000000000000000000.seg", 7 + i as u64, 64 + i as u64 * 1000, p);
            }
            let clean = buf.len();
            // A stale entry of an older use of the file after them.
            encode_entry(&mut buf, generation - 1, "a/b.seg", 1, 64, b"stale");
            buf.extend_from_slice(&[0u8; 64]);
            let got = entries(&buf);
            prop_assert_eq!(got.len(), payloads.len());
            for (i, (e, p)) in got.iter().zip(&payloads).enumerate() {
                prop_assert_eq!(e.payload, &p[..]);
                prop_assert_eq!(e.file_id, 7 + i as u64);
                prop_assert_eq!(e.offset, 64 + i as u64 * 1000);
                prop_assert_eq!(e.generation, generation);
            }
            // One flipped byte ends the entries at the damaged one.
            let at = flip.index(clean);
            buf[at] ^= 0x40;
            let damaged = entries(&buf);
            prop_assert!(damaged.len() < payloads.len());
            for (e, p) in damaged.iter().zip(&payloads) {
                prop_assert_eq!(e.payload, &p[..]);
            }
        }
    }

    #[test]
    fn read_ahead_spans_merge_close_entries_and_leave_out_wide_gaps() {
        let gap = REDO_PREFETCH_GAP_BYTES;
        let mut ranges = vec![
            (5000, 6000),
            (0, 1000),
            (1000, 4000),
            (6000 + gap + 1, 6000 + gap + 10),
        ];
        assert_eq!(
            merge_close(&mut ranges),
            vec![(0, 6000), (6000 + gap + 1, 6000 + gap + 10)]
        );
        let mut touching = vec![(0, 10), (10 + gap, 20 + gap)];
        assert_eq!(merge_close(&mut touching), vec![(0, 20 + gap)]);
        assert!(merge_close(&mut []).is_empty());
    }

    #[test]
    fn an_entry_naming_a_path_outside_the_data_directory_is_never_applied() {
        assert!(!is_plain_relative(Path::new("../x.seg")));
        assert!(!is_plain_relative(Path::new("/etc/x.seg")));
        assert!(is_plain_relative(Path::new(
            "streams/1/shard-0/00000000000000000000.seg"
        )));
    }
}

//! Group commit across logs: one `syncfs` covers every log on a file system.
//!
//! Each log's own group commit shares an `fdatasync` among the appenders of
//! that log. An engine with many shards has many logs, and separate
//! `fdatasync`s cannot be shared between files. A [`SyncCoordinator`] makes
//! appends to all of them share one `syncfs` instead: an append takes a
//! *ticket* (the number of the first sync that begins after its write) and is
//! durable once a sync with that number or later has completed. Appends that
//! arrive while a sync runs share the next one; a lone append starts one at
//! once.
//!
//! A failed sync poisons the coordinator for good: after a failed writeback
//! the kernel may have dropped pages of any file written before, and a later
//! sync that succeeds would prove nothing (Rebello et al., ATC'20).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use crate::fs::{FileSystem, FsSyncer};

/// Numbered syncs run one at a time, shared by the coordinators below: a
/// waiter takes a *ticket* (the number of the first sync that begins after
/// its write) and is covered once a sync with that number or later has
/// completed.
#[derive(Debug, Default)]
struct State {
    /// Syncs begun so far; each is numbered by this count when it begins.
    started: u64,
    /// The number of the last sync that completed.
    completed: u64,
    running: bool,
    /// The latest failure: waiters with tickets up to this number fail
    /// (`u64::MAX`: every waiter, for good).
    failed: Option<(u64, String)>,
    syncs: u64,
    /// Syncs of other files that failed so far ([`FlushCoordinator::note_failed_sync`]),
    /// and the last one's cause.
    other_failures: u64,
    other_failure: Option<String>,
}

/// A [`State`] and the condition variable its waiters sleep on.
#[derive(Debug, Default)]
struct Tickets {
    state: Mutex<State>,
    cv: Condvar,
}

impl Tickets {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Plain counters, consistent between statements.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn wait<'a>(&self, st: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        self.cv.wait(st).unwrap_or_else(|p| p.into_inner())
    }

    /// Runs the next sync (`run`) as the caller, who found none in flight,
    /// with the lock released meanwhile; records its time with `record`.
    /// A failure is stored by `failed`, given the state, the sync's number
    /// and the error. Wakes every waiter and returns the lock again.
    fn lead<'a>(
        &'a self,
        mut st: MutexGuard<'a, State>,
        run: impl FnOnce() -> std::io::Result<()>,
        record: fn(std::time::Duration),
        failed: impl FnOnce(&mut State, u64, std::io::Error),
    ) -> MutexGuard<'a, State> {
        st.running = true;
        st.started += 1;
        let n = st.started;
        drop(st);
        let started = std::time::Instant::now();
        let result = run();
        record(started.elapsed());
        st = self.lock();
        st.running = false;
        match result {
            Ok(()) => {
                st.completed = n;
                st.syncs += 1;
            }
            Err(e) => failed(&mut st, n, e),
        }
        self.cv.notify_all();
        st
    }
}

/// Shares `syncfs` calls among the appends of many logs.
pub struct SyncCoordinator {
    syncer: Box<dyn FsSyncer>,
    dir: PathBuf,
    tickets: Tickets,
    /// Told of the failure, once: see [`SyncCoordinator::on_failure`].
    on_failure: Mutex<Option<FailureHook>>,
}

type FailureHook = Box<dyn Fn(&str) + Send + Sync>;

impl fmt::Debug for SyncCoordinator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SyncCoordinator")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl SyncCoordinator {
    /// A coordinator for the file system holding `dir`, which it opens once
    /// and keeps open (so it sees every writeback error from now on).
    pub fn new(fs: Arc<dyn FileSystem>, dir: impl Into<PathBuf>) -> std::io::Result<Arc<SyncCoordinator>> {
        let dir = dir.into();
        let syncer = fs.filesystem_syncer(&dir)?;
        Ok(Arc::new(SyncCoordinator {
            syncer,
            dir,
            tickets: Tickets::default(),
            on_failure: Mutex::new(None),
        }))
    }

    /// Calls `hook` with the cause when a sync fails, before any waiter
    /// learns of it. A failed `syncfs` may have dropped the dirty pages of
    /// any file on the file system, and the engine's journal must then keep
    /// its files for the redo (`Journal::stop`): segments its entries were
    /// checkpointed into may have lost them.
    pub fn on_failure(&self, hook: impl Fn(&str) + Send + Sync + 'static) {
        *self.on_failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(Box::new(hook));
    }

    /// The ticket of a write that has just completed: the number of the first
    /// sync that will begin after now.
    pub fn ticket(&self) -> u64 {
        self.tickets.lock().started + 1
    }

    /// Returns once a sync numbered `ticket` or later has completed, running
    /// one if none is in flight. Fails (for good) once any sync failed.
    pub fn wait(&self, ticket: u64) -> Result<(), String> {
        let mut st = self.tickets.lock();
        loop {
            if let Some((_, e)) = &st.failed {
                return Err(e.clone());
            }
            if st.completed >= ticket {
                return Ok(());
            }
            if st.running {
                st = self.tickets.wait(st);
                continue;
            }
            st = self.tickets.lead(
                st,
                || {
                    let result = self.syncer.sync();
                    // The hook runs while this sync still counts as running
                    // (waiters and `settled` wait on), and outside the
                    // tickets' lock: it may take other locks, and its
                    // upgraded reference may be the last one.
                    if let Err(e) = &result {
                        let cause = format!("syncfs of {} failed: {e}", self.dir.display());
                        if let Some(hook) = &*self.on_failure.lock().unwrap_or_else(|p| p.into_inner()) {
                            hook(&cause);
                        }
                    }
                    result
                },
                crate::stats::record_fsync,
                |st, _, e| {
                    st.failed = Some((u64::MAX, format!("syncfs of {} failed: {e}", self.dir.display())))
                },
            );
        }
    }

    /// Returns once no sync begun before this call is still running, failing
    /// if any sync so far has failed. Runs no sync itself.
    ///
    /// For a caller that has just synced a file of its own (the journal):
    /// a `syncfs` that failed while that sync ran may have dropped the
    /// file's dirty pages before the sync could write them, and the sync
    /// then succeeds with nothing written. Linux reports such a write-back
    /// error once per open file and older kernels to one caller only, so the
    /// file's own sync cannot be counted on to report it.
    pub fn settled(&self) -> Result<(), String> {
        let mut st = self.tickets.lock();
        let begun = st.started;
        loop {
            // A failure is stored under the same lock that ends its sync's
            // run, after the failure hook has run.
            if let Some((_, e)) = &st.failed {
                return Err(e.clone());
            }
            if !st.running || st.started != begun {
                return Ok(());
            }
            st = self.tickets.wait(st);
        }
    }

    /// Syncs completed so far.
    pub fn sync_count(&self) -> u64 {
        self.tickets.lock().syncs
    }
}

/// Shares device cache flushes among the group syncs of many logs.
///
/// A group that only overwrites blocks its file already holds, written and
/// synced before (segment space zeroed ahead, or a recycled file), needs
/// no metadata to be durable: only its data on the device and a cache
/// flush after it. A group that finds a flush in flight writes its data
/// back itself ([`crate::fs::FileHandle::write_back`], `sync_file_range`),
/// then takes a *ticket* (the number of the first flush that begins after
/// now) and waits for a flush with that number or later. The first waiter
/// that finds no flush in flight runs one: an `fdatasync` of its own
/// active file, which ends with a flush of the device's cache and so
/// covers every write the device completed before it, in every file.
/// Groups of many shards that arrive while a flush runs share the next
/// one. Only file systems that say so
/// ([`crate::fs::FileSystem::shares_flushes`]) get a coordinator.
///
/// A failed flush fails every group whose write-back completed before the
/// failure was known (each of their logs then poisons itself: the device
/// may have dropped what they wrote back), not later ones: a group written
/// back after it needs a flush that begins after its write-back, and a
/// successful one proves that group durable. A failed write-back fails its
/// own group only.
pub struct FlushCoordinator {
    tickets: Tickets,
}

impl fmt::Debug for FlushCoordinator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.tickets.lock();
        f.debug_struct("FlushCoordinator")
            .field("flushes", &st.syncs)
            .field("failed", &st.failed)
            .finish_non_exhaustive()
    }
}

impl FlushCoordinator {
    pub fn new() -> Arc<FlushCoordinator> {
        Arc::new(FlushCoordinator {
            tickets: Tickets::default(),
        })
    }

    /// Makes a group of `file` durable, the group's data being written
    /// (to the page cache) and past `from`. With no flush in flight, the
    /// caller runs one at once: an `fdatasync` of `file`, which writes the
    /// group and flushes, one system call as without a coordinator. With
    /// one in flight, it writes its group back meanwhile
    /// ([`crate::fs::FileHandle::write_back`]) and then waits for the next
    /// flush, which it runs itself unless another waiter does. So a lone
    /// group costs what its own `fdatasync` costs, and groups of many logs
    /// that meet a running flush share the next one. Returns whether the
    /// group was written back (and so shared a flush). Fails when the flush
    /// it waited for failed; a failed write-back fails this caller only.
    /// `what` names the caller's log in errors.
    pub fn sync_group(
        &self,
        file: &dyn crate::fs::FileHandle,
        from: u64,
        what: &Path,
    ) -> Result<bool, String> {
        let mut st = self.tickets.lock();
        // A failed sync of any other file noted from here on may have
        // dropped this group's pages once they are written back.
        let failures_before = st.other_failures;
        let written_back = st.running;
        if written_back {
            drop(st);
            file.write_back(from)
                .map_err(|e| format!("write-back (sync_file_range) of {} failed: {e}", what.display()))?;
            st = self.tickets.lock();
        }
        // The first flush that begins after the write-back completed (or,
        // without one, the flush this caller starts next) covers the group.
        let ticket = st.started + 1;
        loop {
            if st.completed >= ticket {
                if written_back && st.other_failures != failures_before {
                    return Err(format!(
                        "a sync of another file failed while the group of {} waited for a shared device cache flush, \
                         and its failed flush may have dropped what the group had written back: {}",
                        what.display(),
                        st.other_failure.as_deref().unwrap_or("unknown cause")
                    ));
                }
                return Ok(written_back);
            }
            if let Some((through, e)) = &st.failed {
                if ticket <= *through {
                    return Err(e.clone());
                }
            }
            if st.running {
                st = self.tickets.wait(st);
                continue;
            }
            st = self.tickets.lead(st, || file.sync_data(), crate::stats::record_flush, |st, n, e| {
                // Every ticket handed out so far is at most `n + 1` (taken
                // while this flush ran); a failure counts one more sync, so
                // that later tickets go above.
                st.started = n + 1;
                st.failed = Some((
                    n + 1,
                    format!(
                        "device cache flush (fdatasync of {}) shared by the groups of several logs failed: {e}",
                        what.display()
                    ),
                ));
            });
        }
    }

    /// Tells the coordinator that a sync of another file of this file
    /// system failed (a log poisoned by it calls this). A failed
    /// `fdatasync` may have failed its device cache flush, and such a
    /// flush may drop whatever the device held for every file, among it
    /// the pages a group waiting here wrote back; Linux reports the failure
    /// to that one caller only, and the next flush succeeds. So every group
    /// that was written back and is not yet acknowledged when this is
    /// noted fails instead of trusting the next flush. (A group syncing its
    /// own file is no different from a program without the coordinator,
    /// and is left to its own `fdatasync`.)
    pub fn note_failed_sync(&self, cause: &str) {
        let mut st = self.tickets.lock();
        st.other_failures += 1;
        st.other_failure = Some(cause.to_string());
    }

    /// Failed syncs of other files noted so far.
    pub fn noted_failures(&self) -> u64 {
        self.tickets.lock().other_failures
    }

    /// Flushes completed so far.
    pub fn flush_count(&self) -> u64 {
        self.tickets.lock().syncs
    }
}

/// Sync threads shared by many logs, for appenders that must not block on
/// `fdatasync` (an async server's workers).
///
/// An appender writes on its own thread and then awaits a [`crate::log::Durable`]
/// future. The first such future of a log made when no job of that log is
/// queued queues the log here (when the future is made, not when it is
/// first polled); one of the pool's threads then runs the log's group sync
/// (the same group commit that blocking appenders lead themselves) and
/// wakes every waiter it made durable. Appends that arrive while a sync
/// runs share the next one, which the same thread starts at once, as long
/// as any future made for them is not durable, polled yet or not. So a request costs one
/// wake-up of its task, and a group costs one hand-off to a sync thread,
/// instead of two thread hand-offs and a futex wait per request.
///
/// Threads start on demand, so a thousand idle logs cost none. There are
/// two kinds:
/// - *Regular* threads (one per core by default) run any job. Small groups
///   are bound by the count of syncs and by CPU: a job that waits for a
///   regular thread gathers more appends into its group, which costs less
///   than another thread syncing at once (docs/PERFORMANCE.md, thirteenth
///   pass).
/// - *Bulk* threads (up to [`SYNC_POOL_BULK_THREADS_MAX`] more) run only
///   jobs queued with at least [`BULK_SYNC_GROUP_BYTES_MIN`] waiting to be
///   synced (a job's kind is fixed when it is queued; it then syncs its
///   log's groups, large or small, until no waiter is left). Large groups are bound by the device, which moves more when
///   more files sync at once, as the raw 4-file rows of `rawdisk` do; with
///   regular threads only, two cores meant two shards syncing at a time
///   (docs/PERFORMANCE.md, twentieth pass).
pub struct SyncPool {
    shared: Arc<PoolShared>,
    threads: Mutex<PoolThreads>,
    threads_max: usize,
    bulk_threads_max: usize,
}

type Job = Box<dyn FnOnce() + Send>;

struct PoolShared {
    queue: Mutex<PoolQueue>,
    /// Regular threads wait here.
    cv: Condvar,
    /// Bulk threads wait here.
    bulk_cv: Condvar,
}

#[derive(Default)]
struct PoolThreads {
    regular: Vec<std::thread::JoinHandle<()>>,
    bulk: Vec<std::thread::JoinHandle<()>>,
}

#[derive(Default)]
struct PoolQueue {
    jobs: std::collections::VecDeque<Queued>,
    /// Regular threads waiting for a job.
    idle: usize,
    /// Bulk threads waiting for a job.
    idle_bulk: usize,
    stop: bool,
}

struct Queued {
    job: Job,
    /// Queued with at least [`BULK_SYNC_GROUP_BYTES_MIN`] to sync: a bulk
    /// thread may take it.
    bulk: bool,
}

/// The most regular sync threads a pool may have.
pub const SYNC_POOL_THREADS_MAX: usize = 64;
/// Bulk sync threads a pool may start besides its regular ones: up to this
/// many more logs' large groups sync at once. Measured with 8 shards of
/// 100 KiB puts on 2 cores: 8 syncing at once moved 2,497 MiB/s, 4 at once
/// 1,979, 2 at once 1,817.
pub const SYNC_POOL_BULK_THREADS_MAX: usize = 8;
/// A job queued with at least this many bytes written and not yet durable
/// may run on a bulk thread. Below it a group is bound by the count of
/// syncs (as for `SHARED_FLUSH_GROUP_BYTES_MAX`), not by the device's
/// bandwidth.
pub const BULK_SYNC_GROUP_BYTES_MIN: u64 = 64 * 1024;

impl fmt::Debug for SyncPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let threads = lock_any(&self.threads);
        f.debug_struct("SyncPool")
            .field("threads", &threads.regular.len())
            .field("bulk_threads", &threads.bulk.len())
            .field("threads_max", &self.threads_max)
            .field("bulk_threads_max", &self.bulk_threads_max)
            .finish_non_exhaustive()
    }
}

fn lock_any<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The protected data is a queue and a list of handles, consistent
    // between statements.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl SyncPool {
    /// A pool of up to `threads` regular sync threads (1 to
    /// [`SYNC_POOL_THREADS_MAX`]) and [`SYNC_POOL_BULK_THREADS_MAX`] bulk
    /// ones. Threads start on demand, when a job finds none idle: an engine
    /// whose appenders all block on their own syncs never starts one.
    pub fn new(threads: usize) -> std::io::Result<Arc<SyncPool>> {
        Ok(Arc::new(SyncPool {
            shared: Arc::new(PoolShared {
                queue: Mutex::new(PoolQueue::default()),
                cv: Condvar::new(),
                bulk_cv: Condvar::new(),
            }),
            threads: Mutex::new(PoolThreads::default()),
            threads_max: threads.clamp(1, SYNC_POOL_THREADS_MAX),
            bulk_threads_max: SYNC_POOL_BULK_THREADS_MAX,
        }))
    }

    /// Runs `job` on one of the pool's threads: a regular one, or for a
    /// `bulk` job (a group of at least [`BULK_SYNC_GROUP_BYTES_MIN`]) a
    /// regular or a bulk one, whichever takes it first (a regular thread
    /// leaves bulk jobs to idle bulk threads while it has a small job to
    /// take). A bulk thread is started only when every regular thread is
    /// busy or at its limit. Gives the job back when the
    /// pool has no thread and cannot start one (the system is out of
    /// threads or memory): the caller then runs it itself, so that no
    /// waiter is left waiting for a thread that will never come.
    pub(crate) fn submit(&self, job: Job, bulk: bool) -> Result<(), Job> {
        let mut threads = lock_any(&self.threads);
        // A thread counted idle may already have been woken for a job queued
        // before this one and not yet have taken it (it has not had the CPU
        // since): only idle threads beyond the queued jobs are free. Bulk
        // threads count only for bulk jobs.
        let free = {
            let q = lock_any(&self.shared.queue);
            // Bulk threads can take only the bulk jobs queued.
            let bulk_queued = q.jobs.iter().filter(|j| j.bulk).count();
            q.idle > q.jobs.len() || bulk && q.idle_bulk > bulk_queued
        };
        if !free {
            let kind = if threads.regular.len() < self.threads_max {
                Some(false)
            } else if bulk && threads.bulk.len() < self.bulk_threads_max {
                Some(true)
            } else {
                None
            };
            if let Some(kind_bulk) = kind {
                let shared = self.shared.clone();
                let name = if kind_bulk {
                    format!("shardlog-bulk-sync-{}", threads.bulk.len())
                } else {
                    format!("shardlog-sync-{}", threads.regular.len())
                };
                let spawned = std::thread::Builder::new()
                    .name(name)
                    .spawn(move || run_pool_thread(&shared, kind_bulk));
                match (spawned, kind_bulk) {
                    (Ok(h), false) => threads.regular.push(h),
                    (Ok(h), true) => threads.bulk.push(h),
                    (Err(_), _) if threads.regular.is_empty() => return Err(job),
                    // The running threads take the job when they are free.
                    (Err(_), _) => {}
                }
            }
        }
        // A bulk job goes to an idle bulk thread alone when there are more
        // of those than bulk jobs already queued: a regular thread woken for
        // it could take it and leave a small job that follows waiting while
        // the bulk thread idles. Otherwise a regular thread is woken, and for
        // a bulk job a bulk thread too; whichever comes second finds nothing
        // and waits again (one spare wake-up per large group, whose sync
        // takes milliseconds).
        let bulk_only = {
            let mut q = lock_any(&self.shared.queue);
            let bulk_before = q.jobs.iter().filter(|j| j.bulk).count();
            q.jobs.push_back(Queued { job, bulk });
            bulk && q.idle_bulk > bulk_before
        };
        if bulk_only {
            self.shared.bulk_cv.notify_one();
        } else {
            self.shared.cv.notify_one();
            if bulk {
                self.shared.bulk_cv.notify_one();
            }
        }
        Ok(())
    }

    /// The most regular sync threads this pool starts.
    pub fn threads_max(&self) -> usize {
        self.threads_max
    }

    /// The most bulk sync threads this pool starts besides its regular ones.
    pub fn bulk_threads_max(&self) -> usize {
        self.bulk_threads_max
    }

    /// Regular sync threads started so far.
    pub fn threads(&self) -> usize {
        lock_any(&self.threads).regular.len()
    }

    /// Bulk sync threads started so far.
    pub fn bulk_threads(&self) -> usize {
        lock_any(&self.threads).bulk.len()
    }
}

fn run_pool_thread(shared: &PoolShared, bulk: bool) {
    loop {
        let job = {
            let mut q = lock_any(&shared.queue);
            loop {
                // A bulk thread takes the oldest bulk job. A regular thread
                // takes the oldest job, except that while a bulk thread is
                // idle (or woken and not yet running) it takes the oldest
                // small job first: a bulk job may also go to that bulk
                // thread, a small one only to a regular thread. It takes a
                // bulk job when no small one is queued, so every job is
                // taken by the next regular thread that looks.
                let at = if bulk {
                    q.jobs.iter().position(|j| j.bulk)
                } else if q.idle_bulk > 0 {
                    q.jobs
                        .iter()
                        .position(|j| !j.bulk)
                        .or((!q.jobs.is_empty()).then_some(0))
                } else {
                    (!q.jobs.is_empty()).then_some(0)
                };
                if let Some(job) = at.and_then(|i| q.jobs.remove(i)) {
                    break job.job;
                }
                if q.stop {
                    return;
                }
                if bulk {
                    q.idle_bulk += 1;
                    q = shared.bulk_cv.wait(q).unwrap_or_else(|p| p.into_inner());
                    q.idle_bulk -= 1;
                } else {
                    q.idle += 1;
                    q = shared.cv.wait(q).unwrap_or_else(|p| p.into_inner());
                    q.idle -= 1;
                }
            }
        };
        job();
    }
}

impl Drop for SyncPool {
    fn drop(&mut self) {
        lock_any(&self.shared.queue).stop = true;
        self.shared.cv.notify_all();
        self.shared.bulk_cv.notify_all();
        // Queued jobs still run (each ends by waking its waiters): regular
        // threads take every job before they stop. The last reference may
        // be dropped by a job on one of the pool's own threads (a log
        // closing there); that thread cannot join itself and exits on its
        // own once the queue is empty.
        let me = std::thread::current().id();
        let mut all = std::mem::take(&mut *lock_any(&self.threads));
        all.regular.append(&mut all.bulk);
        for h in all.regular {
            if h.thread().id() != me {
                let _ = h.join();
            }
        }
    }
}

#[cfg(test)]
mod pool_tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// A gate that jobs wait at until the test opens it. The test's handle
    /// opens it when dropped too, however the test ends: a failed assertion
    /// must not leave the pool's drop joining threads that wait on it for ever.
    struct Gate(Arc<(Mutex<bool>, Condvar)>);

    impl Gate {
        fn new() -> Gate {
            Gate(Arc::new((Mutex::new(false), Condvar::new())))
        }

        fn open(&self) {
            *self.0 .0.lock().unwrap_or_else(|p| p.into_inner()) = true;
            self.0 .1.notify_all();
        }

        /// A job that counts itself in `running` (if given), waits at the
        /// gate and then counts itself in `done`.
        fn job(&self, running: Option<&Arc<AtomicUsize>>, done: &Arc<AtomicUsize>) -> Job {
            let (gate, running, done) = (self.0.clone(), running.cloned(), done.clone());
            Box::new(move || {
                if let Some(running) = running {
                    running.fetch_add(1, Ordering::SeqCst);
                }
                let (m, cv) = &*gate;
                let mut open = m.lock().unwrap();
                while !*open {
                    open = cv.wait(open).unwrap();
                }
                done.fetch_add(1, Ordering::SeqCst);
            })
        }
    }

    impl Drop for Gate {
        fn drop(&mut self) {
            self.open();
        }
    }

    /// Waits until `reached` holds, failing with `what` after 10 s.
    fn wait_until(what: &str, reached: impl FnMut() -> bool) {
        shardlog_testkit::wait_until(10, what, reached);
    }

    #[test]
    fn a_pool_starts_threads_only_on_demand_never_more_than_its_limit_and_runs_every_job() {
        let pool = SyncPool::new(3).unwrap();
        assert_eq!(pool.threads(), 0, "no job, no thread");
        let done = Arc::new(AtomicUsize::new(0));
        let gate = Gate::new();
        for _ in 0..20 {
            assert!(pool.submit(gate.job(None, &done), false).is_ok());
        }
        assert_eq!(pool.threads(), 3);
        gate.open();
        wait_until("jobs did not all run", || done.load(Ordering::SeqCst) >= 20);
        assert_eq!(pool.threads(), 3);
        drop(pool);
    }

    #[test]
    fn small_groups_run_on_regular_threads_only_and_large_ones_also_on_bulk_threads() {
        let pool = SyncPool::new(2).unwrap();
        let running_small = Arc::new(AtomicUsize::new(0));
        let running_bulk = Arc::new(AtomicUsize::new(0));
        let done = Arc::new(AtomicUsize::new(0));
        let gate = Gate::new();
        for _ in 0..10 {
            assert!(pool.submit(gate.job(Some(&running_small), &done), false).is_ok());
        }
        assert_eq!(
            (pool.threads(), pool.bulk_threads()),
            (2, 0),
            "small jobs start regular threads only"
        );
        for _ in 0..20 {
            assert!(pool.submit(gate.job(Some(&running_bulk), &done), true).is_ok());
        }
        assert_eq!(pool.bulk_threads(), SYNC_POOL_BULK_THREADS_MAX);
        // Every bulk thread takes a large job while the regular ones are
        // held by small jobs; no small job runs on a bulk thread.
        wait_until("bulk threads did not take the large jobs", || {
            running_bulk.load(Ordering::SeqCst) >= SYNC_POOL_BULK_THREADS_MAX
        });
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(
            running_small.load(Ordering::SeqCst),
            2,
            "small jobs on the 2 regular threads only"
        );
        assert_eq!(running_bulk.load(Ordering::SeqCst), SYNC_POOL_BULK_THREADS_MAX);
        gate.open();
        wait_until("jobs did not all run", || done.load(Ordering::SeqCst) >= 30);
        assert_eq!(
            (pool.threads(), pool.bulk_threads()),
            (2, SYNC_POOL_BULK_THREADS_MAX)
        );
        drop(pool);
    }

    #[test]
    fn a_small_job_is_not_left_waiting_while_a_bulk_job_takes_the_regular_thread_and_a_bulk_thread_idles() {
        // One regular and one bulk thread, both idle. A large group and then
        // a small one are queued: the large one must go to the bulk thread,
        // so that the small one runs at once on the regular thread.
        let pool = SyncPool::new(1).unwrap();
        let done = Arc::new(AtomicUsize::new(0));
        let gate = Gate::new();
        let done_at_least = |n: usize| {
            let done = done.clone();
            move || done.load(Ordering::SeqCst) >= n
        };
        // Start one thread of each kind, then let both go idle.
        let warm_up = Gate::new();
        assert!(pool.submit(warm_up.job(None, &done), false).is_ok());
        assert!(pool.submit(warm_up.job(None, &done), true).is_ok());
        assert_eq!((pool.threads(), pool.bulk_threads()), (1, 1));
        warm_up.open();
        wait_until("jobs did not run", done_at_least(2));
        wait_until("threads did not go idle", || {
            let q = lock_any(&pool.shared.queue);
            q.idle + q.idle_bulk >= 2
        });
        assert!(pool.submit(gate.job(None, &done), true).is_ok());
        let small = done.clone();
        assert!(pool
            .submit(
                Box::new(move || {
                    small.fetch_add(1, Ordering::SeqCst);
                }),
                false
            )
            .is_ok());
        // The large job is still held at its gate; the small one ran.
        wait_until("jobs did not run", done_at_least(3));
        assert_eq!(
            (pool.threads(), pool.bulk_threads()),
            (1, 1),
            "no thread was started for them"
        );
        gate.open();
        wait_until("jobs did not run", done_at_least(4));
        drop(pool);
    }
}

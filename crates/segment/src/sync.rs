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
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use crate::fs::{FileSystem, FsSyncer};

#[derive(Debug, Default)]
struct State {
    started: u64,
    completed: u64,
    running: bool,
    failed: Option<String>,
    syncs: u64,
}

/// Shares `syncfs` calls among the appends of many logs.
pub struct SyncCoordinator {
    syncer: Box<dyn FsSyncer>,
    dir: PathBuf,
    state: Mutex<State>,
    cv: Condvar,
}

impl fmt::Debug for SyncCoordinator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SyncCoordinator")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    // Plain counters, consistent between statements.
    m.lock().unwrap_or_else(|p| p.into_inner())
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
            state: Mutex::new(State::default()),
            cv: Condvar::new(),
        }))
    }

    /// The ticket of a write that has just completed: the number of the first
    /// sync that will begin after now.
    pub fn ticket(&self) -> u64 {
        lock(&self.state).started + 1
    }

    /// Returns once a sync numbered `ticket` or later has completed, running
    /// one if none is in flight. Fails (for good) once any sync failed.
    pub fn wait(&self, ticket: u64) -> Result<(), String> {
        let mut st = lock(&self.state);
        loop {
            if let Some(e) = &st.failed {
                return Err(e.clone());
            }
            if st.completed >= ticket {
                return Ok(());
            }
            if st.running {
                st = self.cv.wait(st).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            st.running = true;
            st.started += 1;
            let n = st.started;
            drop(st);
            let started = std::time::Instant::now();
            let result = self.syncer.sync();
            crate::stats::record_fsync(started.elapsed());
            st = lock(&self.state);
            st.running = false;
            match result {
                Ok(()) => {
                    st.completed = n;
                    st.syncs += 1;
                }
                Err(e) => st.failed = Some(format!("syncfs of {} failed: {e}", self.dir.display())),
            }
            self.cv.notify_all();
        }
    }

    /// Syncs completed so far.
    pub fn sync_count(&self) -> u64 {
        lock(&self.state).syncs
    }
}

/// Sync threads shared by many logs, for appenders that must not block on
/// `fdatasync` (an async server's workers).
///
/// An appender writes on its own thread and then awaits a [`crate::log::Durable`]
/// future. The first waiter of a log that finds no sync in flight queues that
/// log here; one of the pool's threads then runs the log's group sync (the
/// same group commit that blocking appenders lead themselves) and wakes every
/// waiter it made durable. Appends that arrive while a sync runs share the
/// next one, which the same thread starts at once. So a request costs one
/// wake-up of its task, and a group costs one hand-off to a sync thread,
/// instead of two thread hand-offs and a futex wait per request.
///
/// The pool has a fixed number of threads: syncs of different logs run in
/// parallel up to that number, which is what a device with several queues
/// wants, while a thousand idle logs cost no threads at all.
pub struct SyncPool {
    shared: Arc<PoolShared>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

type Job = Box<dyn FnOnce() + Send>;

struct PoolShared {
    queue: Mutex<PoolQueue>,
    cv: Condvar,
}

#[derive(Default)]
struct PoolQueue {
    jobs: std::collections::VecDeque<Job>,
    stop: bool,
}

/// The most sync threads a pool may have.
pub const SYNC_POOL_THREADS_MAX: usize = 64;

impl fmt::Debug for SyncPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SyncPool")
            .field("threads", &lock_any(&self.threads).len())
            .finish_non_exhaustive()
    }
}

fn lock_any<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The protected data is a queue and a list of handles, consistent
    // between statements.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl SyncPool {
    /// A pool of `threads` sync threads (1 to [`SYNC_POOL_THREADS_MAX`]).
    pub fn new(threads: usize) -> std::io::Result<Arc<SyncPool>> {
        let threads = threads.clamp(1, SYNC_POOL_THREADS_MAX);
        let shared = Arc::new(PoolShared {
            queue: Mutex::new(PoolQueue::default()),
            cv: Condvar::new(),
        });
        let mut handles = Vec::with_capacity(threads);
        for i in 0..threads {
            let mine = shared.clone();
            let handle = std::thread::Builder::new()
                .name(format!("shardlog-sync-{i}"))
                .spawn(move || loop {
                    let job = {
                        let mut q = lock_any(&mine.queue);
                        loop {
                            if let Some(job) = q.jobs.pop_front() {
                                break job;
                            }
                            if q.stop {
                                return;
                            }
                            q = mine.cv.wait(q).unwrap_or_else(|p| p.into_inner());
                        }
                    };
                    job();
                });
            match handle {
                Ok(h) => handles.push(h),
                Err(e) => {
                    // Stop the threads already started before failing.
                    lock_any(&shared.queue).stop = true;
                    shared.cv.notify_all();
                    for h in handles {
                        let _ = h.join();
                    }
                    return Err(e);
                }
            }
        }
        Ok(Arc::new(SyncPool {
            shared,
            threads: Mutex::new(handles),
        }))
    }

    /// Runs `job` on one of the pool's threads.
    pub(crate) fn submit(&self, job: Job) {
        lock_any(&self.shared.queue).jobs.push_back(job);
        self.shared.cv.notify_one();
    }

    /// Number of sync threads.
    pub fn threads(&self) -> usize {
        lock_any(&self.threads).len()
    }
}

impl Drop for SyncPool {
    fn drop(&mut self) {
        lock_any(&self.shared.queue).stop = true;
        self.shared.cv.notify_all();
        // Queued jobs still run (each ends by waking its waiters). The last
        // reference may be dropped by a job on one of the pool's own threads
        // (a log closing there); that thread cannot join itself and exits on
        // its own once the queue is empty.
        let me = std::thread::current().id();
        for h in lock_any(&self.threads).drain(..) {
            if h.thread().id() != me {
                let _ = h.join();
            }
        }
    }
}

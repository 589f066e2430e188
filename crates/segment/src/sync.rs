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

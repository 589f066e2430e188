//! The thread that writes the active-segment checkpoints of the logs that
//! share an [`crate::IndexCache`] (an engine's shards, or one log opened on
//! its own), one at a time, so that the sync which made a checkpoint's
//! point durable does not wait for its fsyncs.
//!
//! A log skips its later points while its own checkpoint is queued. When
//! `CHECKPOINTS_QUEUED_MAX` are queued already (many shards under load),
//! the syncing thread writes its own, as before this thread existed: an
//! unbounded queue would leave each shard's last checkpoint further and
//! further behind its data under a load the thread cannot keep up with, and
//! an open after a crash would walk more of each active segment; a crash
//! loses what is queued, at most this many. (A 10 GiB fill of 100 shards at
//! about 100 MB/s needs some 25 a second, and the cold open after it took
//! 340-381 ms either way.)

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, OnceLock};

pub(crate) type Job = Box<dyn FnOnce() + Send>;

/// Checkpoints queued on the thread (or being written there) at most.
pub(crate) const CHECKPOINTS_QUEUED_MAX: usize = 4;

pub(crate) struct Checkpointer {
    /// Started with the first checkpoint; `None` when it could not start
    /// (every checkpoint is then written by its syncing thread). The thread
    /// ends when this is dropped with its cache.
    queue: OnceLock<Option<Sender<Job>>>,
    queued: Arc<AtomicUsize>,
}

impl std::fmt::Debug for Checkpointer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpointer")
            .field("queued", &self.queued.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// A place in the queue, given back however its job ends (run, panicked,
/// or dropped unrun).
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Checkpointer {
    pub(crate) fn new() -> Checkpointer {
        Checkpointer {
            queue: OnceLock::new(),
            queued: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Runs `job` on the checkpoint thread, or on this thread when that
    /// thread is `CHECKPOINTS_QUEUED_MAX` behind or cannot be started.
    pub(crate) fn run(&self, job: Job) {
        if self.queued.fetch_add(1, Ordering::AcqRel) >= CHECKPOINTS_QUEUED_MAX {
            drop(Slot(self.queued.clone()));
            return job();
        }
        let slot = Slot(self.queued.clone());
        let job: Job = Box::new(move || {
            let _slot = slot;
            job();
        });
        let queue = self.queue.get_or_init(|| {
            let (tx, rx) = channel::<Job>();
            std::thread::Builder::new()
                .name("shardlog-checkpoint".into())
                .spawn(move || {
                    for job in rx {
                        // A checkpoint is an optimisation of the next open:
                        // one that panics must not take the others with it.
                        // Its guards end it (see `CheckpointEnding`).
                        let _ = std::panic::catch_unwind(AssertUnwindSafe(job));
                    }
                })
                .ok()
                .map(|_| tx)
        });
        match queue {
            Some(tx) => {
                if let Err(failed) = tx.send(job) {
                    (failed.0)();
                }
            }
            None => job(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::sync_channel;

    #[test]
    fn a_checkpoint_runs_on_the_calling_thread_once_the_thread_has_the_most_queued() {
        let checkpointer = Checkpointer::new();
        // Jobs that wait until released hold the thread and its queue.
        let (release_tx, release_rx) = sync_channel::<()>(0);
        let release_rx = Arc::new(std::sync::Mutex::new(release_rx));
        let (ran_tx, ran_rx) = channel::<std::thread::ThreadId>();
        for _ in 0..CHECKPOINTS_QUEUED_MAX {
            let (release_rx, ran_tx) = (release_rx.clone(), ran_tx.clone());
            checkpointer.run(Box::new(move || {
                let _ = release_rx.lock().unwrap().recv();
                ran_tx.send(std::thread::current().id()).unwrap();
            }));
        }
        let here = std::thread::current().id();
        let ran_tx_inline = ran_tx.clone();
        checkpointer.run(Box::new(move || {
            ran_tx_inline.send(std::thread::current().id()).unwrap()
        }));
        assert_eq!(
            ran_rx.recv().unwrap(),
            here,
            "the job past the limit ran here, at once"
        );
        for _ in 0..CHECKPOINTS_QUEUED_MAX {
            release_tx.send(()).unwrap();
            assert_ne!(ran_rx.recv().unwrap(), here, "the queued ones ran on the thread");
        }
        wait_until_empty(&checkpointer);
        // Below the limit again: the next one goes to the thread.
        checkpointer.run(Box::new(move || {
            ran_tx.send(std::thread::current().id()).unwrap()
        }));
        assert_ne!(ran_rx.recv().unwrap(), here);
    }

    #[test]
    fn a_job_that_panics_gives_its_place_back_and_the_thread_goes_on() {
        let checkpointer = Checkpointer::new();
        checkpointer.run(Box::new(|| panic!("injected panic in a checkpoint")));
        wait_until_empty(&checkpointer);
        let (tx, rx) = channel();
        checkpointer.run(Box::new(move || tx.send(std::thread::current().id()).unwrap()));
        assert_ne!(
            rx.recv().unwrap(),
            std::thread::current().id(),
            "the thread still runs jobs"
        );
    }

    fn wait_until_empty(checkpointer: &Checkpointer) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while checkpointer.queued.load(Ordering::Acquire) != 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "a place was never given back"
            );
            std::thread::yield_now();
        }
    }
}

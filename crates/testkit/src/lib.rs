//! Test machinery shared by shardlog's crates.
//!
//! - [`MemFs`]: a deterministic storage simulator behind the segment layer's
//!   [`FileSystem`](shardlog_segment::FileSystem) trait. Each file has a
//!   durable image and pending (unsynced) operations; [`MemFs::crash`]
//!   resolves every pending write as lost, landed or torn at sector
//!   granularity, and unsynced directory changes as lost or landed, per a
//!   [`CrashPlan`]. Faults: EIO on write and on fsync with Linux's semantics
//!   (after a failed fsync the pages count as clean), short writes, ENOSPC,
//!   bit flips, misdirected writes, "the process dies after N operations",
//!   and named failpoints ([`MemFs::fail_at`]): the next N operations of a
//!   kind ([`FsOp`]: write, fsync, set_len, create, rename, unlink, directory
//!   sync, directory removal, syncfs) on matching paths fail.
//! - [`SimRng`] and [`seeds`]: seeded randomness, so a failing run prints its
//!   seed and `SHARDLOG_SEED=<seed>` replays it exactly.

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

pub mod memfs;

pub use memfs::{CacheDrop, CrashPlan, FsOp, MemFs, PartialWrite, SimRng, WriteBackStart};

/// The seeds a simulation test runs: `SHARDLOG_SEED=<n>` replays one seed;
/// otherwise `SHARDLOG_SEEDS=<count>` seeds (default `default_count`)
/// starting at `SHARDLOG_SEED_START` (default 1).
pub fn seeds(default_count: u64) -> Vec<u64> {
    if let Some(one) = env_u64("SHARDLOG_SEED") {
        return vec![one];
    }
    let start = env_u64("SHARDLOG_SEED_START").unwrap_or(1);
    let count = env_u64("SHARDLOG_SEEDS").unwrap_or(default_count);
    (start..start.saturating_add(count)).collect()
}

/// Runs `body` for every seed of [`seeds`]; on a failure, names the seed and
/// how to replay it before passing the panic on.
pub fn for_each_seed(test: &str, default_count: u64, mut body: impl FnMut(u64)) {
    for seed in seeds(default_count) {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body(seed)));
        if let Err(panic) = r {
            eprintln!("{test} failed with seed {seed}; replay with SHARDLOG_SEED={seed} cargo test {test}");
            std::panic::resume_unwind(panic);
        }
    }
}

/// Waits until `reached` holds, looking every millisecond, and fails the
/// test with `what` once `seconds` have passed: a test that waits for
/// another thread must fail, not hang, when that thread never gets there.
pub fn wait_until(seconds: u64, what: &str, mut reached: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    while !reached() {
        assert!(std::time::Instant::now() < deadline, "{what}");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// A number from the environment (for the sizes of long test runs).
pub fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
}

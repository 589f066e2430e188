//! Shardlog's segment layer: append-only, CRC-checked segment files in one
//! directory per log, read through memory maps, with group commit and a named
//! recovery policy. This crate knows nothing of shards or streams.

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

pub mod error;
pub mod format;
pub mod frame;
pub mod fs;
pub mod journal;
pub mod log;
mod mmap;
pub mod segment;
pub mod stats;
pub mod sync;

pub use error::{Error, Result};
pub use frame::{Record, RecordIn};
pub use fs::{FileHandle, FileSystem, FsSyncer, Mapping, StdFs};
pub use journal::{Journal, RedoReport};
pub use log::{
    now_ms, ActiveSpace, AppendObserver, Appended, Durable, Log, LogOptions, MappedBytes, NoObserver,
    NoObserver as NoObserverForTests, OpenCheck, Pending, Placed, Position, Problem, ReadBatch, ReadLimits,
    RecoveryPolicy, RecoveryReport, ResumePoint, SealedInfo, SegmentSummary, SyncPolicy, VerifyReport,
};
pub use sync::{FlushCoordinator, SyncCoordinator, SyncPool};

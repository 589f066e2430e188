//! Shardlog's stream engine: Kinesis-style streams of shards over indexed
//! segment logs. This is the library other services embed; the HTTP server is
//! a thin layer over it.
//!
//! ```
//! use shardlog_stream::{CreateStreamOptions, Engine, EngineOptions, PutRecordInput, StartingPosition};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let engine = Engine::open(dir.path(), EngineOptions::default())?;
//! engine.create_stream("orders", 2, CreateStreamOptions::default())?;
//! let put = engine.put_record("orders", PutRecordInput::new("customer-7", b"hello"))?;
//! let it = engine.get_shard_iterator("orders", &put.shard_id, StartingPosition::TrimHorizon)?;
//! let out = engine.get_records(&it, Some(100))?;
//! assert_eq!(out.records[0].data, b"hello");
//! assert_eq!(out.records[0].sequence_number, put.sequence_number);
//! # Ok(())
//! # }
//! ```

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

pub mod clock;
pub mod crypto;
pub mod engine;
pub mod error;
pub mod hashkey;
pub mod iterator;
pub mod meta;
pub mod seqnum;
pub mod text;

pub use clock::{Clock, ManualClock, SystemClock};
pub use crypto::{KeySpec, KeyState, Keyring};
pub use engine::{
    limits, parse_shard_id, shard_id, sync_threads_for_this_machine, ChildShard, ConsumerDescription,
    CreateStreamOptions, DataDirReport, Engine, EngineMetrics, EngineOptions, GetRecordsOutput, GroupBatch,
    GroupDescription, GroupShard, GroupWorker, Lease, PutRecordFailure, PutRecordInput, PutRecordOutput,
    ReadOutput, ShardDescription, ShardMetrics, StartingPosition, StatusDelays, StoredRecord,
    StreamDescription, StreamMetrics, StreamStatus, StreamSummary, TrafficMetrics, INDEX_CACHE_BYTES_DEFAULT,
    SYNC_THREADS_AUTO_MAX, SYNC_THREADS_AUTO_MIN,
};
pub use error::{Error, Result};
pub use hashkey::HashRange;
pub use meta::StreamMode;
pub use seqnum::SeqNum;
pub use shardlog_index::{CacheStats, IndexCache};
pub use shardlog_segment::{OpenCheck, SyncPolicy};
pub use text::{shard_id_text, InlineText, SequenceNumber, ShardId};

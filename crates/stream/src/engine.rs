//! The engine: streams of shards over indexed segment logs.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use shardlog_index::{CacheStats, IndexCache, IndexedLog};
use shardlog_segment::format::FRAME_FLAG_TRANSFORMED;
use shardlog_segment::fs::{FileSystem, LockGuard, StdFs};
use shardlog_segment::{LogOptions, OpenCheck, ReadLimits, RecordIn, SyncPolicy};

use crate::clock::{Clock, SystemClock};
use crate::crypto::{self, Keyring};
use crate::error::{Error, Result};
use crate::hashkey::{even_ranges, hash_key_of, parse_explicit_hash_key, HashRange};
use crate::iterator::IteratorToken;
use crate::meta::{
    self, Checkpoints, ClosedMeta, ConsumerMeta, EngineMeta, ShardMeta, StreamMeta, StreamMode,
};
use crate::seqnum::{is_valid_sequence_number_syntax, SeqNum, GENERATION_MAX, SHARD_INDEX_MAX};
use crate::text::{shard_id_text, SequenceNumber, ShardId};

/// Kinesis's limits, with units in their names.
mod groups;
pub use groups::{
    GroupBatch, GroupDescription, GroupShard, GroupWorker, Lease, GROUP_LEASE_DEFAULT_MS, GROUP_LEASE_MAX_MS,
    GROUP_LEASE_MIN_MS, SHARD_END,
};

pub mod limits {
    pub const STREAM_NAME_CHARS_MAX: usize = 128;
    pub const PARTITION_KEY_CHARS_MAX: usize = 256;
    pub const PUT_RECORDS_COUNT_MAX: usize = 500;
    pub const PUT_RECORDS_BYTES_MAX: usize = 5 * 1024 * 1024;
    /// A PutRecords request to a stream that takes records over 1 MiB may
    /// carry up to this much (Kinesis since its 10 MiB records, 2025-10).
    pub const PUT_RECORDS_LARGE_BYTES_MAX: usize = 10 * 1024 * 1024;
    pub const GET_RECORDS_COUNT_MAX: usize = 10_000;
    pub const GET_RECORDS_BYTES_MAX: usize = 10 * 1024 * 1024;
    pub const RECORD_BYTES_DEFAULT_MAX: usize = 1024 * 1024;
    pub const RECORD_BYTES_LIMIT: usize = 10 * 1024 * 1024;
    pub const RETENTION_HOURS_DEFAULT: u32 = 24;
    pub const RETENTION_HOURS_MIN: u32 = 24;
    pub const RETENTION_HOURS_MAX: u32 = 8760;
    pub const CONSUMERS_PER_STREAM_MAX: usize = 20;
    pub const TAGS_PER_STREAM_MAX: usize = 50;
    pub const TAG_KEY_CHARS_MAX: usize = 128;
    pub const TAG_VALUE_CHARS_MAX: usize = 256;
    pub const SHARDS_PER_STREAM_MAX: u32 = 10_000;
    pub const SCALING_OPS_PER_DAY_MAX: usize = 10;
    /// Capacity-mode switches (UpdateStreamMode) a stream may make in any
    /// 24 hours, as Kinesis allows.
    pub const MODE_UPDATES_PER_DAY_MAX: usize = 2;
    pub const DAY_MS: i64 = 24 * 3600 * 1000;
    pub const HOUR_MS: i64 = 3600 * 1000;
    pub const SHARD_WRITE_BYTES_PER_SEC: f64 = 1024.0 * 1024.0;
    pub const SHARD_WRITE_RECORDS_PER_SEC: f64 = 1000.0;
    pub const SHARD_READ_BYTES_PER_SEC: f64 = 2.0 * 1024.0 * 1024.0;
    pub const SHARD_READ_CALLS_PER_SEC: f64 = 5.0;
}
use limits::*;

/// Sequence numbers per shard that verification looks up through the index.
pub const VERIFY_INDEX_SAMPLES: u64 = 256;

/// A stream as [`Engine::inspect`] sees it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StreamInspection {
    pub name: String,
    pub id: u64,
    pub shards: Vec<ShardInspection>,
}

/// A shard as [`Engine::inspect`] sees it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ShardInspection {
    pub shard_id: String,
    pub open: bool,
    pub segments: usize,
    pub bytes: u64,
    pub records: u64,
    pub oldest_ms: Option<i64>,
    pub newest_ms: Option<i64>,
}

/// What [`Engine::verify_data_dir`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DataDirReport {
    pub streams: usize,
    pub shards: usize,
    pub segments: usize,
    pub records: u64,
    pub bytes: u64,
    /// Each problem, naming the stream, shard, file and offset where known.
    pub findings: Vec<String>,
}

impl DataDirReport {
    pub fn is_ok(&self) -> bool {
        self.findings.is_empty()
    }
}

/// Subdirectory holding the engines of other accounts and regions.
pub const SCOPES_DIR: &str = "scopes";
/// Accounts and regions one server opens at most (each is an engine with
/// its own files; the bound stops random credentials from making
/// directories without end).
pub const SCOPES_MAX: usize = 256;
/// Fewest threads of the engine's sync pool when the machine's cores choose
/// (see [`EngineOptions::sync_threads`]): two shards' group syncs can
/// always run at once.
pub const SYNC_THREADS_AUTO_MIN: usize = 2;
/// Most threads of the engine's sync pool when the machine's cores choose.
pub const SYNC_THREADS_AUTO_MAX: usize = 8;

/// The sync pool's threads for `EngineOptions::sync_threads` = 0: one per
/// core, within [`SYNC_THREADS_AUTO_MIN`]..=[`SYNC_THREADS_AUTO_MAX`].
pub fn sync_threads_for_this_machine() -> usize {
    std::thread::available_parallelism()
        .map_or(SYNC_THREADS_AUTO_MIN, std::num::NonZeroUsize::get)
        .clamp(SYNC_THREADS_AUTO_MIN, SYNC_THREADS_AUTO_MAX)
}
/// Bytes of sealed-segment indexes an engine keeps in memory across all its
/// shards (and the scopes opened through it), unless
/// [`EngineOptions::index_cache`] gives another cache. At one 24-byte entry
/// per 16 KiB of frames this covers about 22 GB of segments; lookups in older
/// ones reload their index from its sidecar file.
pub const INDEX_CACHE_BYTES_DEFAULT: usize = 32 * 1024 * 1024;
/// Threads that open (and recover) a stream's shard logs at once.
pub const SHARD_OPEN_THREADS_MAX: usize = 8;
/// Longest region name accepted (AWS's are under 20 bytes).
pub const REGION_NAME_BYTES_MAX: usize = 32;

/// Settings of an engine.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Default durability of new streams (`Always`: acknowledge after fsync).
    pub sync: SyncPolicy,
    /// Shards the whole engine may hold (open and closed).
    pub shards_max: u64,
    /// How often the background task enforces retention (0: never; call
    /// [`Engine::enforce_retention`] yourself).
    pub retention_check_interval_ms: u64,
    /// Segment settings of every shard log (sync policy is per stream).
    pub log: LogOptions,
    /// How long streams stay CREATING, UPDATING and DELETING, as Kinesis's
    /// asynchronous operations do. Zero (the default) makes every change
    /// visible at once, which is what test suites want.
    pub status_delays: StatusDelays,
    /// Enforce Kinesis's per-shard limits (writes 1 MiB/s and 1,000
    /// records/s; reads 2 MiB/s and 5 calls/s) with
    /// `ProvisionedThroughputExceededException`. Off by default.
    pub enforce_shard_limits: bool,
    /// Group-commit across shards: a batch that spans shards is made
    /// durable by one shared `syncfs` instead of one `fdatasync` per shard.
    pub share_syncs_across_shards: bool,
    /// Share device cache flushes across shards: a shard's group that only
    /// overwrites settled segment space is written back and made durable
    /// by one flush shared with the other shards' groups
    /// (`LogOptions::flush_coordinator`). Takes effect only on file
    /// systems where that is safe (`FileSystem::shares_flushes`: ext2/3/4
    /// without data journaling or nobarrier, tmpfs); elsewhere every group syncs its
    /// own file. Off by default: with blocking appenders (the embedded
    /// API's `put_records` on threads of its own) it measured 15-26% fewer
    /// records/s, and the server's single-record puts with 8 connections
    /// 3-10% fewer, while with 64 connections the server gained 13% on
    /// average (`shardlog serve --share-flushes true`; docs/PERFORMANCE.md,
    /// ninth pass).
    pub share_flushes_across_shards: bool,
    /// Journal small appends of every shard in one file (see
    /// `shardlog_segment::journal`): an append of at most
    /// `JOURNAL_WRITE_BYTES_MAX` bytes is durable once one shared
    /// `fdatasync` of the journal covers it, instead of a sync of its
    /// shard's segment; after a crash the open writes the journal into the
    /// segments first. Only under `SyncPolicy::Always`. Whatever this says,
    /// a journal left by an earlier run is redone at open.
    pub journal_small_appends: bool,
    /// Threads of the sync pool that async appenders (the server's
    /// PutRecord, and PutRecords whose records all go to one shard:
    /// [`Engine::put_record_durable`], [`Engine::put_records_durable`])
    /// await durability from (no effect when `log.sync_pool` is given): up
    /// to this many shards' group syncs run at once. 0 (the default) is one
    /// per core, 2 to 8 ([`sync_threads_for_this_machine`]): each sync
    /// mostly waits for the device, but each group costs two thread
    /// hand-offs, and on 2 cores 2 threads gave single-record puts 7% more
    /// than 4 (docs/PERFORMANCE.md, thirteenth pass). At most
    /// [`shardlog_segment::sync::SYNC_POOL_THREADS_MAX`] (more count as that).
    pub sync_threads: usize,
    /// Size of each of the journal's two files (a checkpoint syncs the
    /// shards that wrote into a full one); at least `JOURNAL_FILE_BYTES_MIN`.
    pub journal_file_bytes: u64,
    /// The AWS account this engine serves (12 digits); it appears in ARNs
    /// and messages. A server keeps one engine per account and region.
    pub account_id: String,
    /// The AWS region this engine serves.
    pub region: String,
    /// Keys for encryption at rest (a local key file standing in for KMS).
    /// `alias/aws/kinesis` works without one (a per-directory managed key).
    pub keyring: Option<Arc<Keyring>>,
    /// Where every shard keeps its sealed-segment indexes: one memory budget
    /// for all of them. `None` makes a cache of
    /// [`INDEX_CACHE_BYTES_DEFAULT`] when the engine opens; engines given the
    /// same cache (a server's accounts and regions) share its budget.
    pub index_cache: Option<Arc<IndexCache>>,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            sync: SyncPolicy::Always,
            shards_max: 20_000,
            retention_check_interval_ms: 60_000,
            // An open after a crash verifies at once only what the crash can
            // have torn; a background pass checks the synced prefixes of the
            // active segments right after (see `Engine::finish_open_check`).
            log: LogOptions {
                open_check: OpenCheck::Deferred,
                ..LogOptions::default()
            },
            share_syncs_across_shards: true,
            share_flushes_across_shards: false,
            journal_small_appends: false,
            sync_threads: 0,
            journal_file_bytes: shardlog_segment::format::JOURNAL_FILE_BYTES_DEFAULT,
            enforce_shard_limits: false,
            status_delays: StatusDelays::default(),
            account_id: DEFAULT_ACCOUNT_ID.to_string(),
            region: DEFAULT_REGION.to_string(),
            keyring: None,
            index_cache: None,
        }
    }
}

/// The account of requests that name none (no SigV4 credential scope).
pub const DEFAULT_ACCOUNT_ID: &str = "000000000000";
/// The region of requests that name none.
pub const DEFAULT_REGION: &str = "us-east-1";

/// Delays of stream status transitions, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatusDelays {
    pub creating_ms: u64,
    pub updating_ms: u64,
    pub deleting_ms: u64,
}

/// Options of [`Engine::create_stream`].
#[derive(Debug, Clone, Default)]
pub struct CreateStreamOptions {
    pub mode: Option<StreamMode>,
    pub tags: BTreeMap<String, String>,
    /// Largest record in KiB (1024..=10240); default 1024.
    pub max_record_kib: Option<u32>,
    /// Durability of this stream; default the engine's.
    pub sync: Option<SyncPolicy>,
    /// Cap on bytes kept on disk (beyond Kinesis).
    pub retention_bytes_max: Option<u64>,
    /// Settings stored for the API layer from the start (warm throughput,
    /// say), in the same metadata write that creates the stream.
    pub settings: BTreeMap<String, serde_json::Value>,
}

/// Status of a stream as Kinesis reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamStatus {
    Creating,
    Active,
    Updating,
    Deleting,
}

impl StreamStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            StreamStatus::Creating => "CREATING",
            StreamStatus::Active => "ACTIVE",
            StreamStatus::Updating => "UPDATING",
            StreamStatus::Deleting => "DELETING",
        }
    }
}

/// A shard as listed by DescribeStream / ListShards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardDescription {
    pub shard_id: String,
    pub parent_shard_id: Option<String>,
    pub adjacent_parent_shard_id: Option<String>,
    pub hash_range: HashRange,
    pub starting_sequence_number: String,
    pub ending_sequence_number: Option<String>,
    /// When the shard was created (with its stream, or by a split or merge),
    /// in ms since the epoch.
    pub created_ms: i64,
    /// When a split or merge closed the shard, in ms since the epoch.
    pub closed_ms: Option<i64>,
}

/// A stream as described by DescribeStream.
#[derive(Debug, Clone)]
pub struct StreamDescription {
    pub name: String,
    pub id: u64,
    pub status: StreamStatus,
    pub created_ms: i64,
    pub retention_hours: u32,
    pub mode: StreamMode,
    pub shards: Vec<ShardDescription>,
    pub open_shard_count: usize,
    pub consumer_count: usize,
    pub max_record_kib: u32,
    pub tags: BTreeMap<String, String>,
    /// The KeyId new records are encrypted with, if the stream is encrypted.
    pub encryption_key_id: Option<String>,
}

/// One record to put.
#[derive(Debug, Clone, Copy)]
pub struct PutRecordInput<'a> {
    pub partition_key: &'a str,
    pub data: &'a [u8],
    pub explicit_hash_key: Option<&'a str>,
    pub sequence_number_for_ordering: Option<&'a str>,
}

impl<'a> PutRecordInput<'a> {
    pub fn new(partition_key: &'a str, data: &'a [u8]) -> Self {
        PutRecordInput {
            partition_key,
            data,
            explicit_hash_key: None,
            sequence_number_for_ordering: None,
        }
    }
}

/// Where a record went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutRecordOutput {
    pub shard_id: ShardId,
    pub sequence_number: SequenceNumber,
    /// Whether the record was encrypted at rest.
    pub encrypted: bool,
}

/// A record that PutRecords could not store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutRecordFailure {
    pub error_code: String,
    pub error_message: String,
}

/// Where a shard iterator starts.
#[derive(Debug, Clone)]
pub enum StartingPosition {
    TrimHorizon,
    Latest,
    AtSequenceNumber(String),
    AfterSequenceNumber(String),
    AtTimestamp(i64),
}

/// A record's data as read: shared with its mapped segment (no copy, the
/// segment stays mapped while this lives) or owned (decrypted records).
#[derive(Clone)]
pub enum RecordData {
    Owned(Vec<u8>),
    Mapped(shardlog_segment::MappedBytes),
}

impl RecordData {
    /// The bytes as an owned vector (a copy when mapped).
    pub fn into_vec(self) -> Vec<u8> {
        match self {
            RecordData::Owned(v) => v,
            RecordData::Mapped(m) => m.to_vec(),
        }
    }
}

impl std::ops::Deref for RecordData {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            RecordData::Owned(v) => v,
            RecordData::Mapped(m) => m,
        }
    }
}

impl AsRef<[u8]> for RecordData {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl fmt::Debug for RecordData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl PartialEq for RecordData {
    fn eq(&self, other: &RecordData) -> bool {
        **self == **other
    }
}

impl Eq for RecordData {}

impl std::hash::Hash for RecordData {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (**self).hash(state)
    }
}

impl PartialEq<[u8]> for RecordData {
    fn eq(&self, other: &[u8]) -> bool {
        **self == *other
    }
}

impl PartialEq<Vec<u8>> for RecordData {
    fn eq(&self, other: &Vec<u8>) -> bool {
        **self == **other
    }
}

impl<const N: usize> PartialEq<&[u8; N]> for RecordData {
    fn eq(&self, other: &&[u8; N]) -> bool {
        **self == other[..]
    }
}

impl PartialEq<&[u8]> for RecordData {
    fn eq(&self, other: &&[u8]) -> bool {
        **self == **other
    }
}

impl PartialEq<RecordData> for Vec<u8> {
    fn eq(&self, other: &RecordData) -> bool {
        **self == **other
    }
}

impl From<Vec<u8>> for RecordData {
    fn from(v: Vec<u8>) -> RecordData {
        RecordData::Owned(v)
    }
}

impl From<RecordData> for Vec<u8> {
    fn from(d: RecordData) -> Vec<u8> {
        d.into_vec()
    }
}

/// A record read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    pub sequence_number: SequenceNumber,
    pub approximate_arrival_ms: i64,
    pub partition_key: String,
    /// The data, shared with the mapped segment unless it was decrypted.
    pub data: RecordData,
    /// Whether the record is encrypted at rest (EncryptionType KMS).
    pub encrypted: bool,
}

/// A child of a closed shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildShard {
    pub shard_id: String,
    pub parent_shards: Vec<String>,
    pub hash_range: HashRange,
}

/// The result of a read at a position.
#[derive(Debug, Clone)]
pub struct ReadOutput {
    pub records: Vec<StoredRecord>,
    /// Position to continue from; `None` at the end of a closed shard.
    pub next_position: Option<u64>,
    pub millis_behind_latest: i64,
    /// At the end of a closed shard: its children.
    pub child_shards: Vec<ChildShard>,
}

/// The result of [`Engine::get_records`].
#[derive(Debug, Clone)]
pub struct GetRecordsOutput {
    /// The stream the iterator reads.
    pub stream_name: String,
    pub records: Vec<StoredRecord>,
    pub next_shard_iterator: Option<String>,
    pub millis_behind_latest: i64,
    pub child_shards: Vec<ChildShard>,
}

/// A registered consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerDescription {
    pub name: String,
    pub stream_name: String,
    pub created_ms: i64,
    pub status: &'static str,
}

/// A stream in a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSummary {
    pub name: String,
    pub status: StreamStatus,
    pub created_ms: i64,
    pub mode: StreamMode,
}

pub fn shard_id(index: u64) -> String {
    shard_id_text(index).into()
}

/// Parses `shardId-000000000042` (and, as AWS does, a bare number) to 42.
pub fn parse_shard_id(s: &str) -> Option<u64> {
    let digits = s.strip_prefix(crate::text::SHARD_ID_PREFIX).unwrap_or(s);
    if digits.is_empty() || digits.len() > 12 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Kinesis's name rule: 1–128 characters of `[a-zA-Z0-9_.-]`.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= STREAM_NAME_CHARS_MAX
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Plain data kept consistent between statements; a panic elsewhere does
    // not make it unusable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn read<T>(m: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(m: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(|p| p.into_inner())
}

#[derive(Debug)]
struct ShardRt {
    log: Arc<IndexedLog>,
    notify: Arc<tokio::sync::Notify>,
    limits: Mutex<ShardBuckets>,
    counters: Counters,
}

/// Traffic counters (CloudWatch's stream- and shard-level metrics).
#[derive(Debug, Default)]
struct Counters {
    incoming_bytes: AtomicU64,
    incoming_records: AtomicU64,
    outgoing_bytes: AtomicU64,
    outgoing_records: AtomicU64,
    get_records_calls: AtomicU64,
    write_throttled: AtomicU64,
    read_throttled: AtomicU64,
    /// The last reader's distance from the tip, in ms (a gauge).
    iterator_age_ms: std::sync::atomic::AtomicI64,
}

impl Counters {
    fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }

    fn snapshot(&self) -> TrafficMetrics {
        let g = |c: &AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        TrafficMetrics {
            incoming_bytes: g(&self.incoming_bytes),
            incoming_records: g(&self.incoming_records),
            outgoing_bytes: g(&self.outgoing_bytes),
            outgoing_records: g(&self.outgoing_records),
            get_records_calls: g(&self.get_records_calls),
            write_throttled: g(&self.write_throttled),
            read_throttled: g(&self.read_throttled),
            iterator_age_ms: self.iterator_age_ms.load(std::sync::atomic::Ordering::Relaxed),
        }
    }
}

/// Traffic of a stream or a shard since the server started.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrafficMetrics {
    pub incoming_bytes: u64,
    pub incoming_records: u64,
    pub outgoing_bytes: u64,
    pub outgoing_records: u64,
    pub get_records_calls: u64,
    pub write_throttled: u64,
    pub read_throttled: u64,
    pub iterator_age_ms: i64,
}

/// A shard's traffic and storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardMetrics {
    pub shard_id: String,
    pub traffic: TrafficMetrics,
    pub segments: usize,
    pub bytes_on_disk: u64,
    /// Segment files kept for reuse (`LogOptions::recycle_segments_max`).
    pub recyclable_bytes: u64,
}

/// A stream's traffic, by shard too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamMetrics {
    pub account_id: String,
    pub region: String,
    pub name: String,
    pub traffic: TrafficMetrics,
    pub shards: Vec<ShardMetrics>,
}

/// What [`Engine::metrics`] reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EngineMetrics {
    pub streams: Vec<StreamMetrics>,
    /// Segments retention deleted.
    pub retention_deleted_segments: u64,
    /// Shard logs whose open cut a torn tail.
    pub recoveries: u64,
    /// Damage found (shard logs quarantined, streams set aside).
    pub corruptions: u64,
    /// The sealed-segment index cache shared by all shards.
    pub index_cache: CacheStats,
    /// That cache's budget in bytes.
    pub index_cache_budget_bytes: usize,
    /// Bytes of active segments recovered at open whose checksums the
    /// background pass after open has still to verify.
    pub open_check_pending_bytes: u64,
}

/// Token buckets holding one second of a shard's allowance each.
#[derive(Debug, Default)]
struct ShardBuckets {
    refilled_ms: i64,
    write_bytes: f64,
    write_records: f64,
    read_bytes: f64,
    read_calls: f64,
}

impl ShardBuckets {
    fn refill(&mut self, now: i64) {
        if self.refilled_ms == 0 {
            *self = ShardBuckets {
                refilled_ms: now,
                write_bytes: SHARD_WRITE_BYTES_PER_SEC,
                write_records: SHARD_WRITE_RECORDS_PER_SEC,
                read_bytes: SHARD_READ_BYTES_PER_SEC,
                read_calls: SHARD_READ_CALLS_PER_SEC,
            };
            return;
        }
        let secs = (now - self.refilled_ms).max(0) as f64 / 1000.0;
        self.refilled_ms = now;
        self.write_bytes =
            (self.write_bytes + secs * SHARD_WRITE_BYTES_PER_SEC).min(SHARD_WRITE_BYTES_PER_SEC);
        self.write_records =
            (self.write_records + secs * SHARD_WRITE_RECORDS_PER_SEC).min(SHARD_WRITE_RECORDS_PER_SEC);
        self.read_bytes = (self.read_bytes + secs * SHARD_READ_BYTES_PER_SEC).min(SHARD_READ_BYTES_PER_SEC);
        self.read_calls = (self.read_calls + secs * SHARD_READ_CALLS_PER_SEC).min(SHARD_READ_CALLS_PER_SEC);
    }

    /// Takes a write of `records` records and `bytes` bytes if it fits.
    fn take_write(&mut self, now: i64, records: usize, bytes: usize) -> bool {
        self.refill(now);
        if self.write_records < records as f64 || self.write_bytes < bytes as f64 {
            return false;
        }
        self.write_records -= records as f64;
        self.write_bytes -= bytes as f64;
        true
    }

    /// Takes one read call; its bytes are charged after the read.
    fn take_read_call(&mut self, now: i64) -> bool {
        self.refill(now);
        if self.read_calls < 1.0 || self.read_bytes <= 0.0 {
            return false;
        }
        self.read_calls -= 1.0;
        true
    }
}

fn rate_exceeded(acct: &str, shard: u64, stream: &str) -> Error {
    Error::ProvisionedThroughputExceeded(format!(
        "Rate exceeded for shard {} in stream {stream} under account {acct}.",
        shard_id(shard)
    ))
}

#[derive(Debug)]
struct StreamState {
    meta: StreamMeta,
    shards: HashMap<u64, ShardRt>,
    /// Open shards sorted by range start, for routing.
    open: Vec<(HashRange, u64)>,
    deleted: bool,
}

impl StreamState {
    fn rebuild_routes(&mut self) {
        self.open = self
            .meta
            .shards
            .iter()
            .filter(|s| s.closed.is_none())
            .map(|s| (s.range, s.index))
            .collect();
        self.open.sort();
    }

    fn route(&self, key: u128) -> Option<u64> {
        let i = self.open.partition_point(|(r, _)| r.start <= key);
        let (range, index) = self.open.get(i.checked_sub(1)?)?;
        range.contains(key).then_some(*index)
    }
}

#[derive(Debug)]
struct Stream {
    id: u64,
    dir: PathBuf,
    state: RwLock<StreamState>,
    checkpoints: Mutex<Checkpoints>,
    counters: Counters,
}

struct Inner {
    fs: Arc<dyn FileSystem>,
    dir: PathBuf,
    clock: Arc<dyn Clock>,
    opts: EngineOptions,
    meta: Mutex<EngineMeta>,
    iterator_key: Vec<u8>,
    /// The key `alias/aws/kinesis` names unless the keyring defines it.
    managed_key: crypto::Key,
    /// Engines of other accounts and regions, opened on first use under
    /// `scopes/<account>/<region>/` of this directory.
    scopes: Mutex<HashMap<(String, String), Engine>>,
    /// Serializes the opening of new scopes (see [`Engine::for_scope`]).
    scope_opening: Mutex<()>,
    /// Problems found when opening (quarantined streams and logs).
    problems: Mutex<Vec<String>>,
    retention_deleted: AtomicU64,
    recoveries: AtomicU64,
    corruptions: AtomicU64,
    streams: RwLock<BTreeMap<String, Arc<Stream>>>,
    /// Serializes stream creation and deletion (the name map and ids).
    admin: Mutex<()>,
    /// Makes every issued iterator distinct.
    nonce: std::sync::atomic::AtomicU32,
    /// Streams in a transitional status, until a time (ms).
    transitions: Mutex<HashMap<String, (StreamStatus, i64)>>,
    /// Deleted streams still shown as DELETING, until a time (ms).
    deleting: Mutex<BTreeMap<String, (StreamDescription, i64)>>,
    /// Consumer-group leases, by stream id and application.
    groups: Mutex<HashMap<(u64, String), groups::GroupState>>,
    /// Lease ids: unique across restarts (they start from the clock).
    lease_ids: std::sync::atomic::AtomicU64,
    /// Shards of all streams (open and closed), kept without taking any
    /// stream's lock, so a reshard holding one stream's write lock never
    /// waits for another stream's lock.
    shard_total: std::sync::atomic::AtomicU64,
    /// Every `syncfs` of the engine goes through this coordinator: batches
    /// over several shards share one (with `share_syncs_across_shards`),
    /// and so do the open's and the clean stop's. A failed one may have
    /// dropped any file's dirty pages, the journal's among them: the
    /// coordinator stops the journal and fails every later wait, and the
    /// journal, after each of its syncs, waits for the ones in flight.
    coordinator: Arc<shardlog_segment::SyncCoordinator>,
    _lock: Box<dyn LockGuard>,
}

impl Drop for Inner {
    /// A clean stop: make every log's data durable with one `syncfs`, leave
    /// each log's clean-stop marker, and make the markers durable with a
    /// second one. The next open then treats data ending early as damage
    /// rather than a torn write. Any failure just leaves markers out, and
    /// the next open recovers as after a crash, which is always safe.
    fn drop(&mut self) {
        // Journaled appends still in flight are decided first: a clean-stop
        // marker must not cover bytes the journal then fails and cuts.
        if let Some(journal) = &self.opts.log.journal {
            journal.drain();
        }
        let streams = self.streams.get_mut().unwrap_or_else(|p| p.into_inner());
        // Through the coordinator, as every syncfs: a failure must stop the
        // journal (whose thread may still checkpoint for a scope's clone).
        let syncfs = || self.coordinator.wait(self.coordinator.ticket());
        if streams.is_empty() || syncfs().is_err() {
            return;
        }
        for stream in streams.values() {
            let st = read(&stream.state);
            for rt in st.shards.values() {
                let _ = rt.log.log().mark_clean(false);
            }
        }
        let _ = syncfs();
    }
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// A stream engine on a data directory. Cloning is cheap (shared state).
#[derive(Debug, Clone)]
pub struct Engine {
    inner: Arc<Inner>,
    /// Background threads (retention, the checksum pass after open): told
    /// to stop and joined when the last handle of this engine goes.
    _tasks: Vec<Arc<BackgroundTask>>,
}

#[derive(Debug)]
struct BackgroundTask {
    stop: Arc<(Mutex<bool>, std::sync::Condvar)>,
    handle: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Drop for BackgroundTask {
    fn drop(&mut self) {
        *lock(&self.stop.0) = true;
        self.stop.1.notify_all();
        if let Some(h) = lock(&self.handle).take() {
            let _ = h.join();
        }
    }
}

fn tracing_problem(problem: &str) {
    tracing::error!(target: "shardlog::storage", "{problem}");
}

/// Whether `c` is the consumer `name`, and, with `registered_at_s` (a
/// consumer ARN's creation time, in seconds), the one registered then.
fn consumer_matches(c: &meta::ConsumerMeta, name: &str, registered_at_s: Option<i64>) -> bool {
    c.name == name && registered_at_s.is_none_or(|s| c.created_ms.div_euclid(1000) == s)
}

/// AWS's answer for a retention period out of range, in its words.
fn check_retention_hours(hours: u32) -> Result<()> {
    if hours < RETENTION_HOURS_MIN {
        return Err(Error::InvalidArgument(format!(
            "Minimum allowed retention period is {RETENTION_HOURS_MIN} hours. Requested retention period ({hours} hours) is too short."
        )));
    }
    if hours > RETENTION_HOURS_MAX {
        return Err(Error::InvalidArgument(format!(
            "Maximum allowed retention period is {RETENTION_HOURS_MAX} hours. Requested retention period ({hours} hours) is too long."
        )));
    }
    Ok(())
}

/// A shard's `StartingSequenceNumber`: one below its first record's number,
/// so that, as at AWS, it sorts before every record of the shard and does
/// not move as retention removes records. Position 0 of a generation of at
/// least 1 (all the engine makes) always has a number below it; the first
/// record's own number stands in otherwise.
fn starting_sequence_number(s: &ShardMeta) -> String {
    let first = SeqNum {
        generation: s.generation,
        shard_index: s.index,
        position: 0,
    };
    first.encode_before().unwrap_or_else(|| first.encode())
}

fn not_found_stream(acct: &str, name: &str) -> Error {
    Error::ResourceNotFound(format!("Stream {name} under account {acct} not found."))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .filter_map(|i| u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok())
        .collect()
}

impl Engine {
    /// Opens (creating if needed) an engine on `dir` on the real file system.
    pub fn open(dir: impl AsRef<Path>, opts: EngineOptions) -> Result<Engine> {
        Engine::open_with(Arc::new(StdFs), dir, opts, Arc::new(SystemClock))
    }

    /// Opens an engine through `fs` with `clock`.
    pub fn open_with(
        fs: Arc<dyn FileSystem>,
        dir: impl AsRef<Path>,
        opts: EngineOptions,
        clock: Arc<dyn Clock>,
    ) -> Result<Engine> {
        Engine::open_in(fs, dir.as_ref().to_path_buf(), opts, clock, None)
    }

    /// Opens an engine; a scope gets its root's `syncfs` coordinator
    /// (`shared_coordinator`), since one `syncfs` covers the whole file
    /// system: the scopes' batches share it, and the root's journal, which
    /// waits for the `syncfs` calls in flight after each of its syncs,
    /// sees every one of them.
    fn open_in(
        fs: Arc<dyn FileSystem>,
        dir: PathBuf,
        mut opts: EngineOptions,
        clock: Arc<dyn Clock>,
        shared_coordinator: Option<Arc<shardlog_segment::SyncCoordinator>>,
    ) -> Result<Engine> {
        let io = |op: &'static str, p: &Path, e| Error::Storage(shardlog_segment::Error::io(op, p, e));
        fs.create_dir_all(&meta::streams_dir(&dir))
            .map_err(|e| io("create directory", &dir, e))?;
        let lock_path = dir.join("LOCK");
        let guard = fs.lock(&lock_path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::WouldBlock {
                Error::Storage(shardlog_segment::Error::Locked { path: dir.clone() })
            } else {
                io("lock", &lock_path, e)
            }
        })?;
        let engine_path = dir.join(meta::ENGINE_FILE);
        let engine_meta: EngineMeta = if fs.exists(&engine_path) {
            meta::load(&*fs, &engine_path)?
        } else {
            let mut key = [0u8; 16];
            getrandom::fill(&mut key).map_err(|e| Error::meta(&engine_path, e))?;
            let m = EngineMeta {
                version: meta::META_FORMAT_VERSION,
                next_stream_id: 1,
                iterator_key: hex(&key),
                settings: BTreeMap::new(),
                managed_key: String::new(),
            };
            meta::store(&*fs, &engine_path, &m)?;
            m
        };
        let mut engine_meta = engine_meta;
        if engine_meta.managed_key.is_empty() {
            // Made on first open (and added to directories made before
            // encryption existed); stored before any record can use it.
            let mut key = [0u8; crypto::KEY_BYTES];
            getrandom::fill(&mut key).map_err(|e| Error::meta(&engine_path, e))?;
            engine_meta.managed_key = hex(&key);
            meta::store(&*fs, &engine_path, &engine_meta)?;
        }
        // Records may already be sealed with the stored key: a damaged one is
        // reported, never replaced.
        let managed: [u8; crypto::KEY_BYTES] = match unhex(&engine_meta.managed_key).try_into() {
            Ok(k) if engine_meta.managed_key.len() == 2 * crypto::KEY_BYTES => k,
            _ => {
                return Err(Error::meta(
                    &engine_path,
                    format!("managed_key is not {} hex digits", 2 * crypto::KEY_BYTES),
                ))
            }
        };
        let managed_key = crypto::Key::new(crypto::MANAGED_KEY_ALIAS, managed);
        let iterator_key = unhex(&engine_meta.iterator_key);
        let coordinator = match shared_coordinator {
            Some(shared) => shared,
            None => shardlog_segment::SyncCoordinator::new(fs.clone(), dir.clone())
                .map_err(|e| Error::Storage(shardlog_segment::Error::io("open for syncfs", &dir, e)))?,
        };
        // Every segment sync that makes appends durable waits for the
        // syncfs calls in flight: a failing one may have dropped its pages.
        opts.log.syncfs_watch = Some(coordinator.clone());
        // Async appenders (the server's PutRecord) await durability from
        // these threads. Scopes opened later inherit the same pool through
        // the options.
        if opts.log.sync_pool.is_none() {
            let threads = match opts.sync_threads {
                0 => sync_threads_for_this_machine(),
                n => n,
            };
            let pool = shardlog_segment::SyncPool::new(threads)
                .map_err(|e| Error::Storage(shardlog_segment::Error::io("start sync threads", &dir, e)))?;
            opts.log.sync_pool = Some(pool);
        }
        if opts.share_flushes_across_shards && opts.log.flush_coordinator.is_none() && fs.shares_flushes(&dir)
        {
            opts.log.flush_coordinator = Some(shardlog_segment::FlushCoordinator::new());
        }
        // The journal is redone before any log opens (a scope's logs lie under
        // its root's directory and share the root's journal).
        let opened_journal = opts.log.journal.is_none();
        if opened_journal {
            let redo = shardlog_segment::Journal::redo_found(&*fs, &dir).map_err(Error::Storage)?;
            let journal = if opts.journal_small_appends && opts.sync == SyncPolicy::Always {
                match shardlog_segment::Journal::create(fs.clone(), &dir, opts.journal_file_bytes) {
                    Ok(journal) => Some(journal),
                    Err(e @ shardlog_segment::Error::InvalidArgument(_)) => return Err(Error::Storage(e)),
                    // A new journal holds nothing yet: without it every
                    // append syncs its own segment, slower but as durable.
                    // Refusing to open would keep a full disk's data from
                    // being read or deleted.
                    Err(e) => {
                        tracing::warn!(
                            target: "shardlog::storage",
                            "running without the journal (each shard syncs its own segment): {e}"
                        );
                        // Scopes copy these options: none may make a journal
                        // of its own, which only a root's open would redo.
                        opts.journal_small_appends = false;
                        None
                    }
                }
            } else {
                None
            };
            if redo.entries_applied + redo.entries_skipped > 0 {
                tracing::info!(
                    target: "shardlog::storage",
                    "journal redone: {} entries ({} bytes) written into {} segments, {} for segments gone",
                    redo.entries_applied,
                    redo.bytes_applied,
                    redo.files_synced,
                    redo.entries_skipped
                );
            }
            opts.log.journal = journal;
        }
        // A failed syncfs may have dropped any file's dirty pages, journaled
        // appends' among them: the journal must keep its files from then on.
        if let Some(journal) = &opts.log.journal {
            let coord = &coordinator;
            if opened_journal {
                // Each journal sync, and a checkpoint's segment syncs, wait
                // for the syncfs calls in flight: a failing one may have
                // dropped the pages those syncs took for written.
                let coord = coord.clone();
                journal.set_settle_check(move || coord.settled());
            }
            let journal = Arc::downgrade(journal);
            coord.on_failure(move |cause| {
                if let Some(j) = journal.upgrade() {
                    j.stop(cause);
                }
            });
        }
        if opts.index_cache.is_none() {
            opts.index_cache = Some(IndexCache::new(INDEX_CACHE_BYTES_DEFAULT));
        }
        let lease_id_base = (clock.now_ms().max(0) as u64) << 16;
        let inner = Arc::new(Inner {
            fs,
            dir,
            clock,
            opts,
            meta: Mutex::new(engine_meta),
            iterator_key,
            managed_key,
            scopes: Mutex::new(HashMap::new()),
            scope_opening: Mutex::new(()),
            problems: Mutex::new(Vec::new()),
            retention_deleted: AtomicU64::new(0),
            recoveries: AtomicU64::new(0),
            corruptions: AtomicU64::new(0),
            streams: RwLock::new(BTreeMap::new()),
            admin: Mutex::new(()),
            nonce: std::sync::atomic::AtomicU32::new(0),
            transitions: Mutex::new(HashMap::new()),
            shard_total: std::sync::atomic::AtomicU64::new(0),
            deleting: Mutex::new(BTreeMap::new()),
            groups: Mutex::new(HashMap::new()),
            lease_ids: std::sync::atomic::AtomicU64::new(lease_id_base),
            coordinator,
            _lock: guard,
        });
        let mut engine = Engine {
            inner,
            _tasks: Vec::new(),
        };
        engine.load_streams()?;
        if engine.inner.opts.retention_check_interval_ms > 0 {
            engine._tasks.push(engine.spawn_retention());
        }
        if engine.open_check_pending_bytes() > 0 {
            engine._tasks.push(engine.spawn_open_check());
        }
        Ok(engine)
    }

    /// Starts the checksum pass after open on its own thread: it verifies
    /// what recovery under [`OpenCheck::Deferred`] left unchecked, shard by
    /// shard, while the engine already serves, and stops early when the
    /// engine is dropped.
    fn spawn_open_check(&self) -> Arc<BackgroundTask> {
        let stop = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
        let weak = Arc::downgrade(&self.inner);
        let stop2 = stop.clone();
        let handle = std::thread::Builder::new()
            .name("shardlog-open-check".into())
            .spawn(move || {
                let Some(inner) = weak.upgrade() else { return };
                let engine = Engine {
                    inner,
                    _tasks: Vec::new(),
                };
                engine.open_check_pass(&|| *lock(&stop2.0));
            })
            .ok();
        Arc::new(BackgroundTask {
            stop,
            handle: Mutex::new(handle),
        })
    }

    /// Finishes, on the calling thread, the checksum pass that shard
    /// recovery left for after open ([`OpenCheck::Deferred`]); a shard the
    /// background pass is checking is waited for. Each damaged shard is
    /// quarantined (read-only from the damage on) and listed by
    /// [`Engine::problems`], as if recovery had found the damage. For tests
    /// and tools that must know the pass is done.
    pub fn finish_open_check(&self) {
        self.open_check_pass(&|| false);
    }

    /// Bytes the checksum pass after open has still to verify, in this
    /// engine's own shards (scopes report theirs in their metrics).
    fn open_check_pending_bytes(&self) -> u64 {
        read(&self.inner.streams)
            .values()
            .map(|stream| {
                read(&stream.state)
                    .shards
                    .values()
                    .map(|rt| rt.log.log().deferred_check_bytes())
                    .sum::<u64>()
            })
            .sum()
    }

    fn open_check_pass(&self, stop: &dyn Fn() -> bool) {
        let shards: Vec<(String, u64, Arc<IndexedLog>)> = read(&self.inner.streams)
            .values()
            .flat_map(|stream| {
                let st = read(&stream.state);
                st.shards
                    .iter()
                    .filter(|(_, rt)| rt.log.log().deferred_check_bytes() > 0)
                    .map(|(index, rt)| (st.meta.name.clone(), *index, rt.log.clone()))
                    .collect::<Vec<_>>()
            })
            .collect();
        for (name, index, log) in shards {
            if stop() {
                return;
            }
            match log.log().check_deferred(stop) {
                Ok(_) => {}
                Err(e) if e.is_corruption() => {
                    Counters::add(&self.inner.corruptions, 1);
                    self.report_problem(format!(
                        "stream {name} shard {} is read-only: acknowledged data is damaged: {e}; records before it are served",
                        shard_id(index)
                    ));
                }
                Err(e) => self.report_problem(format!(
                    "stream {name} shard {}: the checksum pass after open could not finish ({e}); readers still verify every record they serve",
                    shard_id(index)
                )),
            }
        }
        let scopes: Vec<Engine> = lock(&self.inner.scopes).values().cloned().collect();
        for e in scopes {
            e.open_check_pass(stop);
        }
    }

    fn spawn_retention(&self) -> Arc<BackgroundTask> {
        let stop = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
        let weak = Arc::downgrade(&self.inner);
        let stop2 = stop.clone();
        let interval = self.inner.opts.retention_check_interval_ms;
        let handle = std::thread::Builder::new()
            .name("shardlog-retention".into())
            .spawn(move || loop {
                {
                    let (m, cv) = &*stop2;
                    let g = lock(m);
                    // Checks the flag before sleeping, so a stop requested
                    // while retention ran is not missed for a whole interval.
                    let (g, _) = cv
                        .wait_timeout_while(g, Duration::from_millis(interval), |stop| !*stop)
                        .unwrap_or_else(|p| p.into_inner());
                    if *g {
                        return;
                    }
                }
                let Some(inner) = weak.upgrade() else { return };
                let engine = Engine {
                    inner,
                    _tasks: Vec::new(),
                };
                // Failures are retried at the next tick; the logs report
                // their own poisoning to writers.
                let _ = engine.enforce_retention();
            })
            .ok();
        Arc::new(BackgroundTask {
            stop,
            handle: Mutex::new(handle),
        })
    }

    fn log_options(&self, sync: SyncPolicy) -> LogOptions {
        LogOptions {
            sync,
            // The stream's own limit (which UpdateMaxRecordSize may change
            // at any time) is checked by the engine before the log sees a
            // record; the log only enforces the format's ceiling.
            data_bytes_max: shardlog_segment::format::RECORD_DATA_BYTES_LIMIT,
            first_seq: 0,
            // One syncfs after all logs are open replaces a thousand fsyncs.
            sync_on_open: false,
            ..self.inner.opts.log.clone()
        }
    }

    fn open_shard_log(&self, stream_dir: &Path, index: u64, m: &StreamMeta) -> Result<ShardRt> {
        let dir = meta::shard_dir(stream_dir, index);
        let cache = match &self.inner.opts.index_cache {
            Some(c) => c.clone(),
            // Set when the engine opened; a cache of the default size keeps
            // this path total anyway.
            None => IndexCache::new(INDEX_CACHE_BYTES_DEFAULT),
        };
        let (log, report) =
            IndexedLog::open_cached(self.inner.fs.clone(), &dir, self.log_options(m.sync), cache)?;
        if report.truncated_at.is_some() {
            Counters::add(&self.inner.recoveries, 1);
        }
        if report.quarantined.is_some() {
            Counters::add(&self.inner.corruptions, 1);
        }
        if let Some((file, offset)) = &report.truncated_at {
            // Normal after a crash (a write that was never acknowledged);
            // after a clean stop it can only be damage, so say so.
            self.report_problem(format!(
                "stream {} shard {}: recovery dropped {} bytes at {} byte offset {offset} as an unacknowledged torn tail (expected after a crash; after a clean stop this is damage to the last written records)",
                m.name,
                shard_id(index),
                report.truncated_bytes,
                file.display()
            ));
        }
        if let Some((file, offset, reason)) = &report.quarantined {
            self.report_problem(format!(
                "stream {} shard {} is read-only: acknowledged data is damaged in {} at byte offset {offset} ({reason}); records before it are served",
                m.name,
                shard_id(index),
                file.display()
            ));
        }
        Ok(ShardRt {
            log: Arc::new(log),
            notify: Arc::new(tokio::sync::Notify::new()),
            limits: Mutex::new(ShardBuckets::default()),
            counters: Counters::default(),
        })
    }

    /// Loads every stream; removes what a crash left half-made (a stream
    /// directory without STREAM.json, shard directories not in the metadata).
    /// Opens (recovering as needed) every shard log of stream `m`, on up
    /// to [`SHARD_OPEN_THREADS_MAX`] threads.
    fn open_shard_logs(&self, sdir: &Path, m: &StreamMeta) -> Result<Vec<(u64, ShardRt)>> {
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(SHARD_OPEN_THREADS_MAX)
            .min(m.shards.len());
        if threads <= 1 {
            return m
                .shards
                .iter()
                .map(|s| Ok((s.index, self.open_shard_log(sdir, s.index, m)?)))
                .collect();
        }
        let per_thread = m.shards.len().div_ceil(threads);
        let opened: Vec<Result<(u64, ShardRt)>> = std::thread::scope(|scope| {
            let handles: Vec<_> = m
                .shards
                .chunks(per_thread)
                .map(|chunk| {
                    scope.spawn(move || {
                        chunk
                            .iter()
                            .map(|s| Ok((s.index, self.open_shard_log(sdir, s.index, m)?)))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect()
        });
        opened.into_iter().collect()
    }

    fn load_streams(&self) -> Result<()> {
        let fs = &*self.inner.fs;
        let root = meta::streams_dir(&self.inner.dir);
        let names = fs
            .read_dir(&root)
            .map_err(|e| Error::Storage(shardlog_segment::Error::io("read directory", &root, e)))?;
        let mut streams = BTreeMap::new();
        for name in names {
            let Ok(id) = name.parse::<u64>() else { continue };
            let sdir = root.join(&name);
            let mpath = sdir.join(meta::STREAM_FILE);
            if !fs.exists(&mpath) {
                let _ = fs.remove_dir_all(&sdir);
                continue;
            }
            // A stream whose metadata or logs cannot be trusted is left on
            // disk untouched for an operator and not served; every other
            // stream is.
            let loaded = self.load_stream(id, &name, &sdir);
            match loaded {
                Ok(stream) => {
                    let n = read(&stream.state).meta.name.clone();
                    streams.insert(n, stream);
                }
                Err(e) => {
                    Counters::add(&self.inner.corruptions, 1);
                    self.report_problem(format!(
                        "stream directory {} is quarantined (not served): {e}",
                        sdir.display()
                    ))
                }
            }
        }
        // Recovered data may sit only in the page cache after a process crash:
        // make all of it durable, with one call, before anything is served.
        // Through the coordinator: a scope opens while the root's journal
        // runs, and a failed syncfs must stop that journal (it may have
        // dropped pages the journal's next checkpoint would take for synced).
        let coord = &self.inner.coordinator;
        coord.wait(coord.ticket()).map_err(|cause| {
            Error::Storage(shardlog_segment::Error::io(
                "syncfs",
                &self.inner.dir,
                std::io::Error::other(cause),
            ))
        })?;
        let total: u64 = streams
            .values()
            .map(|s| read(&s.state).meta.shards.len() as u64)
            .sum();
        self.inner
            .shard_total
            .store(total, std::sync::atomic::Ordering::SeqCst);
        *write(&self.inner.streams) = streams;
        Ok(())
    }

    fn report_problem(&self, problem: String) {
        tracing_problem(&problem);
        lock(&self.inner.problems).push(problem);
    }

    /// The most threads of the sync pool async appenders await durability
    /// from ([`EngineOptions::sync_threads`], resolved).
    pub fn sync_threads(&self) -> usize {
        self.inner
            .opts
            .log
            .sync_pool
            .as_ref()
            .map_or(0, |p| p.threads_max())
    }

    /// Whether small appends go through the engine's journal now: the
    /// option is on, the journal could be made at open and no failure has
    /// stopped it since (then every shard syncs its own segment, as durable
    /// but slower).
    pub fn journal_active(&self) -> bool {
        self.inner.opts.log.journal.as_ref().is_some_and(|j| j.is_alive())
    }

    /// What is wrong with this engine's data: streams quarantined at open,
    /// shard logs opened read-only because of corruption, and logs poisoned
    /// by a failed write or fsync since (they refuse writes until the engine
    /// is reopened). Empty when all is well.
    pub fn problems(&self) -> Vec<String> {
        let mut out = lock(&self.inner.problems).clone();
        for stream in read(&self.inner.streams).values() {
            let st = read(&stream.state);
            for (index, rt) in &st.shards {
                match rt.log.log().health() {
                    Ok(()) => {}
                    // Quarantines found at open or by the pass after it are
                    // reported when found; one found elsewhere (a roll that
                    // finished the pass itself) is listed here.
                    Err(shardlog_segment::Error::Quarantined { file, .. })
                        if out.iter().any(|p| p.contains(&file.display().to_string())) => {}
                    Err(e) => out.push(format!(
                        "stream {} shard {} refuses writes: {e}",
                        st.meta.name,
                        shard_id(*index)
                    )),
                }
            }
        }
        let scopes: Vec<Engine> = lock(&self.inner.scopes).values().cloned().collect();
        for e in scopes {
            let (a, r) = (e.account_id().to_string(), e.region().to_string());
            out.extend(
                e.problems()
                    .into_iter()
                    .map(|p| format!("account {a} region {r}: {p}")),
            );
        }
        out
    }

    fn load_stream(&self, id: u64, name: &str, sdir: &Path) -> Result<Arc<Stream>> {
        let fs = &*self.inner.fs;
        let sdir = sdir.to_path_buf();
        let mpath = sdir.join(meta::STREAM_FILE);
        {
            let m: StreamMeta = meta::load(fs, &mpath)?;
            if m.id != id {
                return Err(Error::meta(
                    &mpath,
                    format!("stream id {} does not match directory {name}", m.id),
                ));
            }
            let known: std::collections::HashSet<u64> = m.shards.iter().map(|s| s.index).collect();
            let shards_root = sdir.join(meta::SHARDS_DIR);
            for d in fs.read_dir(&shards_root).unwrap_or_default() {
                if d.parse::<u64>().is_ok_and(|i| !known.contains(&i)) {
                    let _ = fs.remove_dir_all(&shards_root.join(&d));
                }
            }
            // Recovery scans each shard's active segment (CRC of every
            // frame), which dominates opening a large directory after a
            // crash; shards are independent, so they open in parallel.
            let shards: HashMap<u64, ShardRt> = self.open_shard_logs(&sdir, &m)?.into_iter().collect();
            let cpath = sdir.join(meta::CHECKPOINTS_FILE);
            let checkpoints: Checkpoints = if fs.exists(&cpath) {
                match meta::load(fs, &cpath) {
                    Ok(c) => c,
                    Err(e) => {
                        // The stream's data is intact; its consumers restart
                        // from their own positions. Keep the damaged file.
                        let aside = sdir.join(format!("{}.damaged", meta::CHECKPOINTS_FILE));
                        let _ = fs.rename(&cpath, &aside);
                        let _ = fs.sync_dir(&sdir);
                        self.report_problem(format!(
                            "checkpoints of stream {} were damaged and are reset (the file is kept as {}): {e}",
                            m.name,
                            aside.display()
                        ));
                        Checkpoints::new()
                    }
                }
            } else {
                Checkpoints::new()
            };
            let mut state = StreamState {
                meta: m,
                shards,
                open: Vec::new(),
                deleted: false,
            };
            state.rebuild_routes();
            Ok(Arc::new(Stream {
                id,
                dir: sdir,
                state: RwLock::new(state),
                checkpoints: Mutex::new(checkpoints),
                counters: Counters::default(),
            }))
        }
    }

    fn next_nonce(&self) -> u32 {
        self.inner
            .nonce
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// The account this engine serves.
    pub fn account_id(&self) -> &str {
        &self.inner.opts.account_id
    }

    /// The region this engine serves.
    pub fn region(&self) -> &str {
        &self.inner.opts.region
    }

    /// The engine's clock (now, in ms).
    pub fn now_ms(&self) -> i64 {
        self.inner.clock.now_ms()
    }

    /// The status of a stream that exists: ACTIVE unless a transition with a
    /// configured delay is still running.
    fn status_of(&self, name: &str) -> StreamStatus {
        let now = self.now_ms();
        let mut t = lock(&self.inner.transitions);
        match t.get(name) {
            Some((status, until)) if now < *until => *status,
            Some(_) => {
                t.remove(name);
                StreamStatus::Active
            }
            None => StreamStatus::Active,
        }
    }

    fn begin_transition(&self, name: &str, status: StreamStatus, delay_ms: u64) {
        if delay_ms > 0 {
            let until = self.now_ms() + delay_ms as i64;
            lock(&self.inner.transitions).insert(name.to_string(), (status, until));
        }
    }

    /// The stream shows UPDATING for the configured delay.
    fn begin_updating(&self, name: &str) {
        self.begin_transition(
            name,
            StreamStatus::Updating,
            self.inner.opts.status_delays.updating_ms,
        );
    }

    /// Control operations need an ACTIVE stream, as on Kinesis.
    fn require_active(&self, name: &str) -> Result<()> {
        let acct = self.account_id();
        match self.status_of(name) {
            StreamStatus::Active => Ok(()),
            other => Err(Error::ResourceInUse(format!(
                "Stream {name} under account {acct} not ACTIVE, instead in state {}",
                other.as_str()
            ))),
        }
    }

    /// Reads and writes need the stream to exist beyond CREATING.
    fn require_created(&self, name: &str) -> Result<()> {
        if self.status_of(name) == StreamStatus::Creating {
            return Err(not_found_stream(self.account_id(), name));
        }
        Ok(())
    }

    fn deleting_ghost(&self, name: &str) -> Option<StreamDescription> {
        let now = self.now_ms();
        let mut d = lock(&self.inner.deleting);
        d.retain(|_, (_, until)| now < *until);
        d.get(name).map(|(desc, _)| desc.clone())
    }

    fn stream(&self, name: &str) -> Result<Arc<Stream>> {
        read(&self.inner.streams)
            .get(name)
            .cloned()
            .ok_or_else(|| not_found_stream(self.account_id(), name))
    }

    fn shard_total(&self) -> u64 {
        self.inner.shard_total.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn shard_total_add(&self, n: u64) {
        self.inner
            .shard_total
            .fetch_add(n, std::sync::atomic::Ordering::SeqCst);
    }

    fn shard_total_sub(&self, n: u64) {
        self.inner
            .shard_total
            .fetch_sub(n, std::sync::atomic::Ordering::SeqCst);
    }

    fn persist(&self, stream: &Stream, m: &StreamMeta) -> Result<()> {
        meta::store(&*self.inner.fs, &stream.dir.join(meta::STREAM_FILE), m)
    }

    // ----------------------------------------------------------------------
    // Streams
    // ----------------------------------------------------------------------

    /// Creates a stream with `shard_count` shards dividing the key space evenly.
    pub fn create_stream(&self, name: &str, shard_count: u32, opts: CreateStreamOptions) -> Result<()> {
        let acct = self.account_id();
        let region = self.region();
        if !is_valid_name(name) {
            return Err(Error::InvalidArgument(format!(
                "Stream name {name} is invalid: it must be 1 to 128 characters of [a-zA-Z0-9_.-]."
            )));
        }
        if shard_count == 0 {
            return Err(Error::InvalidArgument(format!(
                "ShardCount {shard_count} must be between 1 and {SHARDS_PER_STREAM_MAX}."
            )));
        }
        let max_record_bytes = match opts.max_record_kib {
            None => RECORD_BYTES_DEFAULT_MAX,
            Some(k) if (1024..=10240).contains(&k) => k as usize * 1024,
            Some(k) => {
                return Err(Error::InvalidArgument(format!(
                    "MaxRecordSizeInKiB {k} must be between 1024 and 10240."
                )))
            }
        };
        validate_tags(&opts.tags)?;
        let _admin = lock(&self.inner.admin);
        if read(&self.inner.streams).contains_key(name) {
            return Err(Error::ResourceInUse(format!(
                "Stream {name} under account {acct} already exists."
            )));
        }
        // More shards than the engine may hold, or than one stream may, is
        // a limit, as AWS answers a count above the account's shard quota.
        let total = self.shard_total();
        let limit = self
            .inner
            .opts
            .shards_max
            .min(total + u64::from(SHARDS_PER_STREAM_MAX));
        if total + u64::from(shard_count) > limit {
            return Err(Error::LimitExceeded(format!(
                "This request would exceed the shard limit for the account {acct} in {region}. Current shard count for the account: {total}. Limit: {limit}. Number of additional shards that would have resulted from this request: {shard_count}."
            )));
        }
        let id = {
            let mut em = lock(&self.inner.meta);
            let id = em.next_stream_id;
            let mut next = em.clone();
            next.next_stream_id += 1;
            meta::store(&*self.inner.fs, &self.inner.dir.join(meta::ENGINE_FILE), &next)?;
            *em = next;
            id
        };
        let now = self.now_ms();
        let sdir = meta::stream_dir(&self.inner.dir, id);
        let m = StreamMeta {
            version: meta::META_FORMAT_VERSION,
            id,
            name: name.to_string(),
            created_ms: now,
            retention_hours: RETENTION_HOURS_DEFAULT,
            mode: opts.mode.unwrap_or(StreamMode::Provisioned),
            tags: opts.tags,
            shards: even_ranges(shard_count)
                .into_iter()
                .enumerate()
                .map(|(i, range)| ShardMeta {
                    index: i as u64,
                    generation: 1,
                    range,
                    parent: None,
                    adjacent_parent: None,
                    created_ms: now,
                    closed: None,
                })
                .collect(),
            next_shard_index: shard_count as u64,
            consumers: Vec::new(),
            sync: opts.sync.unwrap_or(self.inner.opts.sync),
            max_record_bytes,
            retention_bytes_max: opts.retention_bytes_max,
            scaling_ops_ms: Vec::new(),
            mode_updates_ms: Vec::new(),
            encryption: None,
            encryption_keys: Vec::new(),
            settings: opts.settings,
        };
        // Shard logs first, metadata last: the stream exists once STREAM.json
        // is durable; a crash before leaves a directory that open removes.
        // The new directories' own entries are synced below (`streams/` here,
        // `shards/` by each log, `streams/<id>/` with STREAM.json).
        let mut shards = HashMap::new();
        for s in &m.shards {
            shards.insert(s.index, self.open_shard_log(&sdir, s.index, &m)?);
        }
        let root = meta::streams_dir(&self.inner.dir);
        self.inner
            .fs
            .sync_dir(&root)
            .map_err(|e| Error::Storage(shardlog_segment::Error::io("fsync directory", &root, e)))?;
        let stream = Stream {
            id,
            dir: sdir,
            state: RwLock::new(StreamState {
                meta: m.clone(),
                shards,
                open: Vec::new(),
                deleted: false,
            }),
            checkpoints: Mutex::new(Checkpoints::new()),
            counters: Counters::default(),
        };
        self.persist(&stream, &m)?;
        write(&stream.state).rebuild_routes();
        lock(&self.inner.deleting).remove(name);
        self.shard_total_add(shard_count as u64);
        self.begin_transition(
            name,
            StreamStatus::Creating,
            self.inner.opts.status_delays.creating_ms,
        );
        write(&self.inner.streams).insert(name.to_string(), Arc::new(stream));
        Ok(())
    }

    /// Deletes a stream and all its data. With registered consumers it needs
    /// `enforce_consumer_deletion`, as on Kinesis.
    pub fn delete_stream(&self, name: &str, enforce_consumer_deletion: bool) -> Result<()> {
        let acct = self.account_id();
        let _admin = lock(&self.inner.admin);
        let stream = self.stream(name)?;
        let ghost = match self.inner.opts.status_delays.deleting_ms {
            0 => None,
            ms => self.describe_stream(name).ok().map(|mut d| {
                d.status = StreamStatus::Deleting;
                (d, self.now_ms() + ms as i64)
            }),
        };
        let mut st = write(&stream.state);
        if !st.meta.consumers.is_empty() && !enforce_consumer_deletion {
            return Err(Error::ResourceInUse(format!(
                "Stream {name} under account {acct} has registered consumers; set EnforceConsumerDeletion to delete them with it."
            )));
        }
        // Removing STREAM.json (durably) is the commit point; the rest is
        // garbage that open would remove anyway.
        let mpath = stream.dir.join(meta::STREAM_FILE);
        let fs = &*self.inner.fs;
        fs.remove_file(&mpath)
            .and_then(|()| fs.sync_dir(&stream.dir))
            .map_err(|e| Error::Storage(shardlog_segment::Error::io("delete stream metadata", &mpath, e)))?;
        st.deleted = true;
        self.shard_total_sub(st.meta.shards.len() as u64);
        for rt in st.shards.values() {
            rt.notify.notify_waiters();
        }
        st.shards.clear();
        st.open.clear();
        drop(st);
        write(&self.inner.streams).remove(name);
        lock(&self.inner.transitions).remove(name);
        if let Some(g) = ghost {
            lock(&self.inner.deleting).insert(name.to_string(), g);
        }
        let _ = fs.remove_dir_all(&stream.dir);
        Ok(())
    }

    /// Streams, sorted by name.
    pub fn list_streams(&self) -> Vec<StreamSummary> {
        let mut out: Vec<StreamSummary> = read(&self.inner.streams)
            .values()
            .map(|s| {
                let st = read(&s.state);
                StreamSummary {
                    name: st.meta.name.clone(),
                    status: self.status_of(&st.meta.name),
                    created_ms: st.meta.created_ms,
                    mode: st.meta.mode,
                }
            })
            .collect();
        let now = self.now_ms();
        let mut ghosts = lock(&self.inner.deleting);
        ghosts.retain(|_, (_, until)| now < *until);
        for (d, _) in ghosts.values() {
            if !out.iter().any(|s| s.name == d.name) {
                out.push(StreamSummary {
                    name: d.name.clone(),
                    status: StreamStatus::Deleting,
                    created_ms: d.created_ms,
                    mode: d.mode,
                });
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    fn describe_shard(s: &ShardMeta) -> ShardDescription {
        let seq = |position: u64| {
            SeqNum {
                generation: s.generation,
                shard_index: s.index,
                position,
            }
            .encode()
        };
        ShardDescription {
            shard_id: shard_id(s.index),
            parent_shard_id: s.parent.map(shard_id),
            adjacent_parent_shard_id: s.adjacent_parent.map(shard_id),
            hash_range: s.range,
            starting_sequence_number: starting_sequence_number(s),
            ending_sequence_number: s.closed.map(|c| seq(c.end_next_position.saturating_sub(1))),
            created_ms: s.created_ms,
            closed_ms: s.closed.map(|c| c.closed_ms),
        }
    }

    /// Describes a stream and its shards (closed ones included until their
    /// data has expired).
    pub fn describe_stream(&self, name: &str) -> Result<StreamDescription> {
        let stream = match self.stream(name) {
            Ok(s) => s,
            Err(e) => return self.deleting_ghost(name).ok_or(e),
        };
        let st = read(&stream.state);
        let m = &st.meta;
        let mut shards: Vec<ShardDescription> = m
            .shards
            .iter()
            // Shards still held: a closed shard goes once retention has
            // removed its last record.
            .filter(|s| st.shards.contains_key(&s.index))
            .map(Self::describe_shard)
            .collect();
        shards.sort_by(|a, b| a.shard_id.cmp(&b.shard_id));
        Ok(StreamDescription {
            name: m.name.clone(),
            id: stream.id,
            status: self.status_of(name),
            created_ms: m.created_ms,
            retention_hours: m.retention_hours,
            mode: m.mode,
            open_shard_count: st.open.len(),
            shards,
            consumer_count: m.consumers.len(),
            max_record_kib: (m.max_record_bytes / 1024) as u32,
            tags: m.tags.clone(),
            encryption_key_id: m.encryption.as_ref().map(|e| e.key_id.clone()),
        })
    }

    /// The shards of a stream (as ListShards).
    pub fn list_shards(&self, name: &str) -> Result<Vec<ShardDescription>> {
        Ok(self.describe_stream(name)?.shards)
    }

    /// Bytes a stream occupies on disk.
    pub fn stream_bytes_on_disk(&self, name: &str) -> Result<u64> {
        let stream = self.stream(name)?;
        let st = read(&stream.state);
        Ok(st.shards.values().map(|rt| rt.log.log().bytes_on_disk()).sum())
    }

    // ----------------------------------------------------------------------
    // Writes
    // ----------------------------------------------------------------------

    /// Checks a record and gives its hash key; `same_key_hash` is the hash
    /// of the same partition key when the caller already has it (records of
    /// a batch often share their key, and MD5 is the costliest check).
    fn validate_record(
        st: &StreamState,
        r: &PutRecordInput<'_>,
        same_key_hash: Option<u128>,
    ) -> Result<u128> {
        let chars = r.partition_key.chars().count();
        if chars == 0 || chars > PARTITION_KEY_CHARS_MAX {
            return Err(Error::InvalidArgument(format!(
                "Partition key must be 1 to {PARTITION_KEY_CHARS_MAX} characters long, got {chars}."
            )));
        }
        let size = r.data.len() + r.partition_key.len();
        if size > st.meta.max_record_bytes {
            return Err(Error::InvalidArgument(format!(
                "Record size {size} bytes (data plus partition key) exceeds the stream's maximum of {} bytes.",
                st.meta.max_record_bytes
            )));
        }
        if let Some(s) = r.sequence_number_for_ordering {
            if !is_valid_sequence_number_syntax(s) {
                return Err(Error::InvalidArgument(format!(
                    "SequenceNumberForOrdering {s} is not a valid sequence number."
                )));
            }
        }
        match r.explicit_hash_key {
            Some(k) => parse_explicit_hash_key(k).ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "Invalid ExplicitHashKey. ExplicitHashKey must be in the range: [0, 2^128-1]. Specified value was {k}"
                ))
            }),
            None => Ok(same_key_hash.unwrap_or_else(|| hash_key_of(r.partition_key))),
        }
    }

    /// The generation of shard `index` (1, a first shard's, if the stream
    /// no longer lists it).
    fn generation_of(st: &StreamState, index: u64) -> u64 {
        st.meta.shard(index).map(|s| s.generation).unwrap_or(1)
    }

    /// Puts one record (PutRecord).
    pub fn put_record(&self, name: &str, record: PutRecordInput<'_>) -> Result<PutRecordOutput> {
        let mut out = self.put_records_inner(name, &[record], false)?;
        out.pop()
            .unwrap_or_else(|| Err(Failure::Err(Error::InvalidArgument("no record".into()))))
            .map_err(|f| match f {
                Failure::Err(e) => e,
                Failure::Record(f) => Error::InvalidArgument(f.error_message),
            })
    }

    /// Puts a batch (PutRecords): up to 500 records and 5 MiB. Records may go
    /// to different shards; each gets its own result.
    pub fn put_records(
        &self,
        name: &str,
        records: &[PutRecordInput<'_>],
    ) -> Result<Vec<Result<PutRecordOutput, PutRecordFailure>>> {
        self.check_put_records(name, records)?;
        let out = self.put_records_inner(name, records, true)?;
        Ok(batch_results(out))
    }

    /// Puts a batch like [`Engine::put_records`] without blocking on the
    /// fsyncs: the records are written on the calling thread and the
    /// returned future resolves once every shard's group is durable. Must
    /// be awaited inside a tokio runtime (a batch over several shards waits
    /// for the shared `syncfs` on its blocking pool).
    pub fn put_records_durable(
        &self,
        name: &str,
        records: &[PutRecordInput<'_>],
    ) -> Result<
        impl std::future::Future<Output = Result<Vec<Result<PutRecordOutput, PutRecordFailure>>>> + Send + 'static,
    > {
        self.check_put_records(name, records)?;
        let mut put = self.prepare_put(name, records, true)?;
        // A batch over several shards shares one syncfs through the
        // coordinator, as the blocking path does (measured: one fdatasync
        // per shard from the pool cost twice the server CPU per record and
        // ~14% of the rate). That wait blocks, so it runs on tokio's
        // blocking pool: one hand-off per batch, not per record.
        let shared = (self.inner.opts.share_syncs_across_shards && put.written.len() > 1)
            .then(|| (self.inner.coordinator.clone(), self.inner.coordinator.ticket()));
        let groups: Vec<_> = put.written.iter().map(|g| (g.log.clone(), g.pending)).collect();
        // Made now, not at the first poll: each queues its shard's group
        // sync at once, and a producer that keeps several puts in flight
        // (and polls only its oldest) has the later ones synced meanwhile.
        let waits: Option<Vec<_>> = shared.is_none().then(|| {
            groups
                .iter()
                .map(|(log, pending)| log.log().durable(*pending))
                .collect()
        });
        let engine = self.clone();
        Ok(async move {
            let outcomes = match shared {
                Some((coord, ticket)) => {
                    let dir = engine.inner.dir.clone();
                    tokio::task::spawn_blocking(move || {
                        groups
                            .iter()
                            .map(|(log, pending)| log.log().complete_after_sync(*pending, &coord, ticket))
                            .collect::<Vec<_>>()
                    })
                    .await
                    .map_err(|e| {
                        Error::Storage(shardlog_segment::Error::io(
                            "wait for the shared sync",
                            &dir,
                            std::io::Error::other(e.to_string()),
                        ))
                    })?
                }
                None => all_durable(waits.unwrap_or_default()).await,
            };
            Ok(batch_results(engine.finish_put(&mut put, outcomes, true)?))
        })
    }

    fn put_records_inner(
        &self,
        name: &str,
        records: &[PutRecordInput<'_>],
        batch: bool,
    ) -> Result<Vec<Result<PutRecordOutput, Failure>>> {
        let mut put = self.prepare_put(name, records, batch)?;
        // A batch over several shards shares one syncfs through the
        // coordinator; a single shard's group is cheaper with that log's own
        // group-committed fdatasync (measured: syncfs costs ~1.6x an
        // fdatasync here).
        let shared = (self.inner.opts.share_syncs_across_shards && put.written.len() > 1)
            .then(|| (self.inner.coordinator.clone(), self.inner.coordinator.ticket()));
        let mut outcomes = Vec::with_capacity(put.written.len());
        for group in &put.written {
            let pending = group.pending;
            outcomes.push(match &shared {
                Some((coord, ticket)) => group.log.log().complete_after_sync(pending, coord, *ticket),
                None => group.log.log().complete(pending),
            });
        }
        self.finish_put(&mut put, outcomes, batch)
    }

    /// Puts one record like [`Engine::put_record`] without blocking on the
    /// fsync: the record is written on the calling thread and the returned
    /// future resolves once it is durable (a sync pool thread runs the
    /// group's `fdatasync`). For async servers, whose threads must not wait
    /// on the disk. The write itself may still block briefly (a segment roll
    /// syncs the sealed segment).
    pub fn put_record_durable(
        &self,
        name: &str,
        record: PutRecordInput<'_>,
    ) -> Result<impl std::future::Future<Output = Result<PutRecordOutput>> + Send + 'static> {
        let mut put = self.prepare_put(name, &[record], false)?;
        let waits: Vec<_> = put
            .written
            .iter()
            .map(|g| g.log.log().durable(g.pending))
            .collect();
        let engine = self.clone();
        Ok(async move {
            let outcomes = all_durable(waits).await;
            let mut out = engine.finish_put(&mut put, outcomes, false)?;
            out.pop()
                .unwrap_or_else(|| Err(Failure::Err(Error::InvalidArgument("no record".into()))))
                .map_err(|f| match f {
                    Failure::Err(e) => e,
                    Failure::Record(f) => Error::InvalidArgument(f.error_message),
                })
        })
    }

    /// The first half of a put: validates, routes, seals and writes every
    /// shard's group, without waiting for durability.
    fn prepare_put(&self, name: &str, records: &[PutRecordInput<'_>], batch: bool) -> Result<PreparedPut> {
        let stream = self.stream(name)?;
        self.require_created(name)?;
        let st = read(&stream.state);
        if st.deleted {
            return Err(not_found_stream(self.account_id(), name));
        }
        // Validate everything first: an invalid record fails the whole call,
        // as Kinesis's request validation does.
        let mut routed: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
        let mut previous: Option<(&str, u128)> = None;
        for (i, r) in records.iter().enumerate() {
            let same = match previous {
                Some((pk, hash)) if pk == r.partition_key => Some(hash),
                _ => None,
            };
            let key = Self::validate_record(&st, r, same)?;
            if r.explicit_hash_key.is_none() {
                previous = Some((r.partition_key, key));
            }
            let index = st.route(key).ok_or_else(|| {
                Error::InvalidArgument(format!("No open shard covers hash key {key} in stream {name}."))
            })?;
            routed.entry(index).or_default().push(i);
        }
        // A missing or disabled key fails the write, as KMS errors do on AWS.
        let sealing = self.sealing_key(&st)?;
        let now = self.now_ms();
        let mut results: Vec<Option<Result<PutRecordOutput, Failure>>> =
            (0..records.len()).map(|_| None).collect();
        // Two phases: write every shard's group, then wait for durability, so
        // that one sync (shared across shards) covers the whole batch.
        let mut written = Vec::new();
        for (index, idxs) in routed {
            let Some(rt) = st.shards.get(&index) else { continue };
            let bytes: usize = idxs
                .iter()
                .map(|&i| records[i].data.len() + records[i].partition_key.len())
                .sum();
            if self.inner.opts.enforce_shard_limits && !lock(&rt.limits).take_write(now, idxs.len(), bytes) {
                for c in [&stream.counters, &rt.counters] {
                    Counters::add(&c.write_throttled, idxs.len() as u64);
                }
                let e = rate_exceeded(self.account_id(), index, name);
                if !batch {
                    return Err(e);
                }
                fail_records(&idxs, e, &mut results);
                continue;
            }
            // Sealed records carry their partition key inside the envelope.
            let sealed: Vec<Vec<u8>> = match &sealing {
                Some((slot, key)) => idxs
                    .iter()
                    .map(|&i| {
                        let r = &records[i];
                        crypto::seal(key, *slot, stream.id, index, r.partition_key, r.data)
                    })
                    .collect::<Result<_>>()?,
                None => Vec::new(),
            };
            let ins: Vec<RecordIn<'_>> = if sealing.is_some() {
                sealed
                    .iter()
                    .map(|envelope| RecordIn {
                        partition_key: crypto::SEALED_PARTITION_KEY,
                        data: envelope,
                        arrival_ms: now,
                        flags: FRAME_FLAG_TRANSFORMED,
                    })
                    .collect()
            } else {
                idxs.iter()
                    .map(|&i| RecordIn::new(records[i].partition_key, records[i].data, now))
                    .collect()
            };
            match rt.log.append_deferred(&ins) {
                Ok((a, pending)) => {
                    // The shard's generation is read now, while the
                    // stream's state is at hand; the sequence numbers are
                    // spelled only once the group is durable.
                    written.push(WrittenGroup {
                        index,
                        idxs,
                        pending,
                        bytes: bytes as u64,
                        generation: Self::generation_of(&st, index),
                        first_seq: a.first_seq,
                        log: rt.log.clone(),
                        notify: rt.notify.clone(),
                    })
                }
                Err(e) if !batch => return Err(e.into()),
                Err(e) => fail_records(&idxs, e.into(), &mut results),
            }
        }
        drop(st);
        Ok(PreparedPut {
            stream,
            results,
            written,
            encrypted: sealing.is_some(),
        })
    }

    /// The second half of a put, once each written group's durability is
    /// known (`outcomes` in the order of `put.written`): counts, wakes
    /// readers and names each record's result.
    fn finish_put(
        &self,
        put: &mut PreparedPut,
        outcomes: Vec<shardlog_segment::Result<()>>,
        batch: bool,
    ) -> Result<Vec<Result<PutRecordOutput, Failure>>> {
        let st = read(&put.stream.state);
        for (group, done) in put.written.drain(..).zip(outcomes) {
            match done {
                Ok(()) => {
                    group.notify.notify_waiters();
                    Counters::add(&put.stream.counters.incoming_records, group.idxs.len() as u64);
                    Counters::add(&put.stream.counters.incoming_bytes, group.bytes);
                    // The shard may have expired meanwhile; its counters
                    // went with it.
                    if let Some(rt) = st.shards.get(&group.index) {
                        Counters::add(&rt.counters.incoming_records, group.idxs.len() as u64);
                        Counters::add(&rt.counters.incoming_bytes, group.bytes);
                    }
                    let shard = shard_id_text(group.index);
                    for (k, &i) in group.idxs.iter().enumerate() {
                        let sequence_number = SeqNum {
                            generation: group.generation,
                            shard_index: group.index,
                            position: group.first_seq + k as u64,
                        }
                        .text();
                        put.results[i] = Some(Ok(PutRecordOutput {
                            shard_id: shard,
                            sequence_number,
                            encrypted: put.encrypted,
                        }));
                    }
                }
                Err(e) if !batch => return Err(e.into()),
                Err(e) => fail_records(&group.idxs, e.into(), &mut put.results),
            }
        }
        Ok(std::mem::take(&mut put.results)
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| {
                    Err(Failure::Record(PutRecordFailure {
                        error_code: "InternalFailure".into(),
                        error_message: "shard vanished during the write".into(),
                    }))
                })
            })
            .collect())
    }

    // ----------------------------------------------------------------------
    // Reads
    // ----------------------------------------------------------------------

    fn shard_meta<'a>(&self, st: &'a StreamState, name: &str, shard: &str) -> Result<&'a ShardMeta> {
        self.shard_rt(st, name, shard).map(|(s, _)| s)
    }

    /// A shard's metadata and its open log; `ResourceNotFound` for a shard
    /// the stream does not hold (unknown, or expired by retention).
    fn shard_rt<'a>(
        &self,
        st: &'a StreamState,
        name: &str,
        shard: &str,
    ) -> Result<(&'a ShardMeta, &'a ShardRt)> {
        let acct = self.account_id();
        // Kinesis's wording for reads of a shard it does not hold (splits
        // and merges say "Could not find shard" instead).
        let missing = || {
            Error::ResourceNotFound(format!(
                "Shard {shard} in stream {name} under account {acct} does not exist"
            ))
        };
        let index = parse_shard_id(shard).ok_or_else(missing)?;
        let s = st.meta.shard(index).ok_or_else(missing)?;
        let rt = st.shards.get(&index).ok_or_else(missing)?;
        Ok((s, rt))
    }

    /// Resolves a starting position to a shard position.
    pub fn position_of(&self, name: &str, shard: &str, start: &StartingPosition) -> Result<u64> {
        let acct = self.account_id();
        let stream = self.stream(name)?;
        self.require_created(name)?;
        let st = read(&stream.state);
        let (s, rt) = self.shard_rt(&st, name, shard)?;
        let log = &rt.log;
        let first = log.log().first_seq();
        let tip = log.log().visible_next_seq();
        let within = |p: u64, seq: &str| -> Result<u64> {
            // A number the shard never issued (for example from a deleted
            // stream of the same name) would park the reader past records
            // still to come.
            if p > tip {
                return Err(Error::InvalidArgument(format!(
                    "StartingSequenceNumber {seq} used in GetShardIterator on shard {shard} in stream {name} under account {acct} is invalid because it did not come from this stream."
                )));
            }
            Ok(p.max(first))
        };
        // AT or AFTER a record's number, or a number one below a record's
        // (the shard's StartingSequenceNumber), as `SeqNum::parse_start` says.
        let resolve = |seq: &str, after: bool| -> Result<u64> {
            let n = SeqNum::parse_start(seq, after).ok_or_else(|| {
                Error::InvalidArgument(format!("StartingSequenceNumber {seq} used in GetShardIterator on shard {shard} in stream {name} under account {acct} is invalid."))
            })?;
            if n.shard_index != s.index || n.generation != s.generation {
                return Err(Error::InvalidArgument(format!(
                    "Invalid StartingSequenceNumber. It encodes {}, while it was used in a call to a shard with {}",
                    shard_id(n.shard_index),
                    shard_id(s.index)
                )));
            }
            within(n.position, seq)
        };
        Ok(match start {
            StartingPosition::TrimHorizon => first,
            StartingPosition::Latest => tip,
            StartingPosition::AtSequenceNumber(seq) => resolve(seq, false)?,
            StartingPosition::AfterSequenceNumber(seq) => resolve(seq, true)?,
            StartingPosition::AtTimestamp(ts) => {
                let now = self.now_ms();
                if *ts > now {
                    return Err(Error::InvalidArgument(format!(
                        "The timestampInMillis parameter cannot be greater than the currentTimestampInMillis. timestampInMillis: {ts}, currentTimestampInMillis: {now}"
                    )));
                }
                log.seq_at_time(*ts)?.max(first)
            }
        })
    }

    /// Issues a shard iterator (GetShardIterator).
    pub fn get_shard_iterator(&self, name: &str, shard: &str, start: StartingPosition) -> Result<String> {
        let position = self.position_of(name, shard, &start)?;
        let stream = self.stream(name)?;
        let st = read(&stream.state);
        let s = self.shard_meta(&st, name, shard)?;
        Ok(IteratorToken {
            stream_id: stream.id,
            stream_created_ms: st.meta.created_ms,
            shard_index: s.index,
            position,
            issued_ms: self.now_ms(),
            nonce: self.next_nonce(),
        }
        .encode(&self.inner.iterator_key))
    }

    fn stream_by_id(&self, id: u64) -> Option<Arc<Stream>> {
        read(&self.inner.streams).values().find(|s| s.id == id).cloned()
    }

    /// The name of the stream a shard iterator reads, without reading: the
    /// server decides access by stream before a GetRecords runs. Fails as
    /// GetRecords would for a token that is altered, expired, or of another
    /// data directory or account.
    pub fn iterator_stream(&self, iterator: &str) -> Result<String> {
        let t = IteratorToken::decode(iterator, &self.inner.iterator_key, self.now_ms())?;
        let stream = self
            .stream_by_id(t.stream_id)
            .filter(|s| read(&s.state).meta.created_ms == t.stream_created_ms)
            .ok_or_else(|| {
                Error::ResourceNotFound(format!(
                    "Shard {} in stream with id {} under account {} does not exist",
                    shard_id(t.shard_index),
                    t.stream_id,
                    self.account_id()
                ))
            })?;
        let name = read(&stream.state).meta.name.clone();
        Ok(name)
    }

    /// Reads with a shard iterator (GetRecords).
    pub fn get_records(&self, iterator: &str, limit: Option<usize>) -> Result<GetRecordsOutput> {
        let acct = self.account_id();
        let now = self.now_ms();
        let t = IteratorToken::decode(iterator, &self.inner.iterator_key, now)?;
        let limit = limit.unwrap_or(GET_RECORDS_COUNT_MAX);
        if limit == 0 || limit > GET_RECORDS_COUNT_MAX {
            return Err(Error::InvalidArgument(format!(
                "Limit must be between 1 and {GET_RECORDS_COUNT_MAX}, got {limit}."
            )));
        }
        let stream = self
            .stream_by_id(t.stream_id)
            .filter(|s| read(&s.state).meta.created_ms == t.stream_created_ms)
            .ok_or_else(|| {
                Error::ResourceNotFound(format!(
                    "Shard {} in stream with id {} under account {acct} does not exist",
                    shard_id(t.shard_index),
                    t.stream_id
                ))
            })?;
        let name = read(&stream.state).meta.name.clone();
        let enforce = self.inner.opts.enforce_shard_limits;
        if enforce {
            let st = read(&stream.state);
            if let Some(rt) = st.shards.get(&t.shard_index) {
                if !lock(&rt.limits).take_read_call(now) {
                    Counters::add(&stream.counters.read_throttled, 1);
                    Counters::add(&rt.counters.read_throttled, 1);
                    return Err(rate_exceeded(self.account_id(), t.shard_index, &name));
                }
            }
        }
        let out = self.read_shard(
            &name,
            &shard_id(t.shard_index),
            t.position,
            limit,
            GET_RECORDS_BYTES_MAX,
        )?;
        Counters::add(&stream.counters.get_records_calls, 1);
        if enforce {
            let bytes: usize = out.records.iter().map(|r| r.data.len()).sum();
            let st = read(&stream.state);
            if let Some(rt) = st.shards.get(&t.shard_index) {
                // Charged after the read, as AWS does: a large read makes the
                // next calls wait (the bucket may go negative).
                lock(&rt.limits).read_bytes -= bytes as f64;
            }
        }
        let next_shard_iterator = out.next_position.map(|position| {
            IteratorToken {
                issued_ms: now,
                position,
                nonce: self.next_nonce(),
                ..t
            }
            .encode(&self.inner.iterator_key)
        });
        Ok(GetRecordsOutput {
            stream_name: name,
            records: out.records,
            next_shard_iterator,
            millis_behind_latest: out.millis_behind_latest,
            child_shards: out.child_shards,
        })
    }

    fn children_of(st: &StreamState, index: u64) -> Vec<ChildShard> {
        let mut out: Vec<ChildShard> = st
            .meta
            .shards
            .iter()
            .filter(|c| c.parent == Some(index) || c.adjacent_parent == Some(index))
            .map(|c| ChildShard {
                shard_id: shard_id(c.index),
                parent_shards: c
                    .parent
                    .iter()
                    .chain(c.adjacent_parent.iter())
                    .map(|p| shard_id(*p))
                    .collect(),
                hash_range: c.range,
            })
            .collect();
        out.sort_by(|a, b| a.shard_id.cmp(&b.shard_id));
        out
    }

    /// Reads up to `limit` records / `max_bytes` bytes of data from a shard
    /// position. A position before the trim horizon continues from it.
    pub fn read_shard(
        &self,
        name: &str,
        shard: &str,
        position: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<ReadOutput> {
        let stream = self.stream(name)?;
        let st = read(&stream.state);
        let (s, rt) = self.shard_rt(&st, name, shard)?;
        let (s, log) = (s.clone(), rt.log.clone());
        let now = self.now_ms();
        let first = log.log().first_seq();
        let tip = log.log().visible_next_seq();
        let mut pos = position.max(first);
        let end = s.closed.map(|c| c.end_next_position);
        if let Some(end) = end {
            if pos >= end {
                return Ok(ReadOutput {
                    records: Vec::new(),
                    next_position: None,
                    millis_behind_latest: 0,
                    child_shards: Self::children_of(&st, s.index),
                });
            }
        }
        let mut records = Vec::new();
        let mut bytes = 0usize;
        let mut last_arrival = None;
        let mut keys: HashMap<u16, crypto::Key> = HashMap::new();
        if pos < tip {
            let mut cur = match log.cursor_at(pos) {
                Ok(c) => c,
                // Retention deleted the segment between reading the trim
                // horizon and locating the position: continue from the new one.
                Err(shardlog_segment::Error::SequenceOutOfRange { .. }) => {
                    pos = pos.max(log.log().first_seq());
                    log.cursor_at(pos)?
                }
                Err(e) => return Err(e.into()),
            };
            'outer: while records.len() < limit {
                let batch = log.read(
                    &mut cur,
                    ReadLimits {
                        max_records: limit - records.len(),
                        max_bytes: max_bytes.saturating_sub(bytes).max(1),
                    },
                )?;
                if batch.is_empty() {
                    break;
                }
                for (r, shared) in batch.iter_shared() {
                    if !records.is_empty() && bytes + r.data.len() > max_bytes {
                        break 'outer;
                    }
                    bytes += r.data.len();
                    last_arrival = Some(r.arrival_ms);
                    let (partition_key, data, encrypted) = if r.flags & FRAME_FLAG_TRANSFORMED != 0 {
                        let (pk, data) = self.unseal(&st.meta, stream.id, s.index, &log, &r, &mut keys)?;
                        (pk, RecordData::Owned(data), true)
                    } else {
                        (r.partition_key.to_string(), RecordData::Mapped(shared), false)
                    };
                    records.push(StoredRecord {
                        sequence_number: SeqNum {
                            generation: s.generation,
                            shard_index: s.index,
                            position: r.seq,
                        }
                        .text(),
                        approximate_arrival_ms: r.arrival_ms,
                        partition_key,
                        data,
                        encrypted,
                    });
                    pos = r.seq + 1;
                }
            }
        }
        let at_tip = pos >= tip;
        let millis_behind_latest = if at_tip {
            0
        } else {
            last_arrival.map(|a| (now - a).max(0)).unwrap_or(0)
        };
        if let Some(rt) = st.shards.get(&s.index) {
            for c in [&stream.counters, &rt.counters] {
                Counters::add(&c.outgoing_records, records.len() as u64);
                Counters::add(&c.outgoing_bytes, bytes as u64);
                c.iterator_age_ms
                    .store(millis_behind_latest, std::sync::atomic::Ordering::Relaxed);
            }
        }
        let (next_position, child_shards) = match end {
            Some(end) if pos >= end => (None, Self::children_of(&st, s.index)),
            _ => (Some(pos), Vec::new()),
        };
        Ok(ReadOutput {
            records,
            next_position,
            millis_behind_latest,
            child_shards,
        })
    }

    /// Waits until the shard has records at or after `position`, the shard
    /// closes, or `timeout` passes. Returns whether there is something to read.
    /// Suits tokio: it awaits a notification instead of polling.
    pub async fn wait_for_records(
        &self,
        name: &str,
        shard: &str,
        position: u64,
        timeout: Duration,
    ) -> Result<bool> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let (notify, ready) = {
                let stream = self.stream(name)?;
                let st = read(&stream.state);
                let (s, rt) = self.shard_rt(&st, name, shard)?;
                let notify = rt.notify.clone();
                let ready = rt.log.log().visible_next_seq() > position || s.closed.is_some();
                (notify, ready)
            };
            if ready {
                return Ok(true);
            }
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            // Re-check after registering, so a put between the check and the
            // registration is not missed.
            {
                let stream = self.stream(name)?;
                let st = read(&stream.state);
                let (s, rt) = self.shard_rt(&st, name, shard)?;
                if rt.log.log().visible_next_seq() > position || s.closed.is_some() {
                    return Ok(true);
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ok(false);
            }
        }
    }

    // ----------------------------------------------------------------------
    // Resharding
    // ----------------------------------------------------------------------

    /// Closes `parent` (no writes can be in flight: the caller holds the write
    /// lock) and returns its end position.
    fn seal_parent(st: &StreamState, index: u64) -> Result<u64> {
        let log = &st
            .shards
            .get(&index)
            .ok_or_else(|| Error::InvalidArgument(format!("Shard {} has no log to seal.", shard_id(index))))?
            .log;
        log.log().sync()?;
        log.log().roll()?;
        Ok(log.log().next_seq())
    }

    /// Splits `index` at `key`. User requests follow Kinesis's rule
    /// (`start + 1 < key < end`); scaling (`kinesis_rule = false`) may split
    /// anywhere that leaves two non-empty ranges.
    fn split_in(
        &self,
        stream: &Stream,
        st: &mut StreamState,
        index: u64,
        key: u128,
        now: i64,
        kinesis_rule: bool,
    ) -> Result<()> {
        let acct = self.account_id();
        let parent = st.meta.shard(index).cloned().ok_or_else(|| {
            Error::ResourceNotFound(format!(
                "Could not find shard {} in stream {} under account {acct}.",
                shard_id(index),
                st.meta.name
            ))
        })?;
        if parent.closed.is_some() {
            return Err(Error::InvalidArgument(format!(
                "Shard {} in stream {} under account {acct} has already been merged or split, and thus is not eligible for merging or splitting.",
                shard_id(index),
                st.meta.name
            )));
        }
        let allowed = if kinesis_rule {
            key > parent.range.start.saturating_add(1) && key < parent.range.end
        } else {
            key > parent.range.start && key <= parent.range.end
        };
        if !allowed {
            return Err(Error::InvalidArgument(format!(
                "NewStartingHashKey {key} used in SplitShard() on shard {} in stream {} under account {acct} is not both greater than one plus the shard's StartingHashKey {} and less than the shard's EndingHashKey {}.",
                shard_id(index),
                st.meta.name,
                parent.range.start,
                parent.range.end
            )));
        }
        let generation = parent.generation + 1;
        let kids = [
            HashRange {
                start: parent.range.start,
                end: key - 1,
            },
            HashRange {
                start: key,
                end: parent.range.end,
            },
        ];
        self.close_and_add(stream, st, &[index], &kids, generation, now)
    }

    fn merge_in(&self, stream: &Stream, st: &mut StreamState, a: u64, b: u64, now: i64) -> Result<()> {
        let acct = self.account_id();
        let get = |i: u64| {
            st.meta.shard(i).cloned().ok_or_else(|| {
                Error::ResourceNotFound(format!(
                    "Could not find shard {} in stream {} under account {acct}.",
                    shard_id(i),
                    st.meta.name
                ))
            })
        };
        let (sa, sb) = (get(a)?, get(b)?);
        for s in [&sa, &sb] {
            if s.closed.is_some() {
                return Err(Error::InvalidArgument(format!(
                    "Shard {} in stream {} under account {acct} has already been merged or split, and thus is not eligible for merging or splitting.",
                    shard_id(s.index),
                    st.meta.name
                )));
            }
        }
        let adjacent = sa.range.end.checked_add(1) == Some(sb.range.start)
            || sb.range.end.checked_add(1) == Some(sa.range.start);
        if !adjacent || a == b {
            return Err(Error::InvalidArgument(format!(
                "Shards {} and {} in stream {} under account {acct} are not an adjacent pair of shards eligible for merging",
                shard_id(a),
                shard_id(b),
                st.meta.name
            )));
        }
        let range = HashRange {
            start: sa.range.start.min(sb.range.start),
            end: sa.range.end.max(sb.range.end),
        };
        let generation = sa.generation.max(sb.generation) + 1;
        self.close_and_add(stream, st, &[a, b], &[range], generation, now)
    }

    /// Closes `parents`, creates children with `ranges` (logs first), and
    /// updates the in-memory metadata. The caller persists it.
    fn close_and_add(
        &self,
        stream: &Stream,
        st: &mut StreamState,
        parents: &[u64],
        ranges: &[HashRange],
        generation: u64,
        now: i64,
    ) -> Result<()> {
        let acct = self.account_id();
        let region = self.region();
        if generation > GENERATION_MAX || st.meta.next_shard_index + ranges.len() as u64 > SHARD_INDEX_MAX {
            return Err(Error::LimitExceeded(
                "Shard generation or index space exhausted.".into(),
            ));
        }
        let (total, limit) = (self.shard_total(), self.inner.opts.shards_max);
        if total + ranges.len() as u64 > limit {
            return Err(Error::LimitExceeded(format!(
                "This request would exceed the shard limit for the account {acct} in {region}. Current shard count for the account: {total}. Limit: {limit}. Number of additional shards that would have resulted from this request: {}.",
                ranges.len()
            )));
        }
        let mut ends = Vec::new();
        for &p in parents {
            ends.push(Self::seal_parent(st, p)?);
        }
        let mut added = Vec::new();
        for range in ranges {
            let index = st.meta.next_shard_index;
            st.meta.next_shard_index += 1;
            let rt = self.open_shard_log(&stream.dir, index, &st.meta)?;
            st.shards.insert(index, rt);
            self.shard_total_add(1);
            added.push(ShardMeta {
                index,
                generation,
                range: *range,
                parent: Some(parents[0]),
                adjacent_parent: parents.get(1).copied(),
                created_ms: now,
                closed: None,
            });
        }
        for (&p, end) in parents.iter().zip(ends) {
            if let Some(s) = st.meta.shard_mut(p) {
                s.closed = Some(ClosedMeta {
                    end_next_position: end,
                    closed_ms: now,
                });
            }
        }
        st.meta.shards.extend(added);
        Ok(())
    }

    /// Runs `f` on a copy of the stream's state under the write lock and
    /// persists the result atomically; on error nothing changes (child logs
    /// already made are removed).
    fn reshard(
        &self,
        name: &str,
        f: impl FnOnce(&Self, &Stream, &mut StreamState) -> Result<()>,
    ) -> Result<()> {
        let stream = self.stream(name)?;
        let mut st = write(&stream.state);
        if st.deleted {
            return Err(not_found_stream(self.account_id(), name));
        }
        self.require_active(name)?;
        let before_meta = st.meta.clone();
        let before_shards: std::collections::HashSet<u64> = st.shards.keys().copied().collect();
        let result = match f(self, &stream, &mut st) {
            Err(e) => Err(e),
            Ok(()) => self.persist(&stream, &st.meta).inspect_err(|_| {
                // The new STREAM.json may already be in place (the write can
                // fail after its rename); put the old one back so disk and
                // memory agree after the rollback below. Best effort: if this
                // fails too, the next open reconciles from STREAM.json.
                let _ = self.persist(&stream, &before_meta);
            }),
        };
        match result {
            Ok(()) => {
                st.rebuild_routes();
                for rt in st.shards.values() {
                    rt.notify.notify_waiters();
                }
                self.begin_updating(name);
                Ok(())
            }
            Err(e) => {
                let added: Vec<u64> = st
                    .shards
                    .keys()
                    .filter(|k| !before_shards.contains(k))
                    .copied()
                    .collect();
                self.shard_total_sub(added.len() as u64);
                for k in added {
                    st.shards.remove(&k);
                    let _ = self.inner.fs.remove_dir_all(&meta::shard_dir(&stream.dir, k));
                }
                st.meta = before_meta;
                st.rebuild_routes();
                Err(e)
            }
        }
    }

    /// Splits a shard at `new_starting_hash_key` (SplitShard).
    pub fn split_shard(&self, name: &str, shard: &str, new_starting_hash_key: &str) -> Result<()> {
        let acct = self.account_id();
        let key = parse_explicit_hash_key(new_starting_hash_key).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "NewStartingHashKey {new_starting_hash_key} is not a number in [0, 2^128-1]."
            ))
        })?;
        let index = parse_shard_id(shard).ok_or_else(|| {
            Error::ResourceNotFound(format!(
                "Could not find shard {shard} in stream {name} under account {acct}."
            ))
        })?;
        let now = self.now_ms();
        self.reshard(name, |e, s, st| e.split_in(s, st, index, key, now, true))
    }

    /// Merges two adjacent open shards (MergeShards).
    pub fn merge_shards(&self, name: &str, shard: &str, adjacent: &str) -> Result<()> {
        let acct = self.account_id();
        let parse = |s: &str| {
            parse_shard_id(s).ok_or_else(|| {
                Error::ResourceNotFound(format!(
                    "Could not find shard {s} in stream {name} under account {acct}."
                ))
            })
        };
        let (a, b) = (parse(shard)?, parse(adjacent)?);
        let now = self.now_ms();
        self.reshard(name, |e, s, st| e.merge_in(s, st, a, b, now))
    }

    /// Scales to `target` open shards of equal ranges (UpdateShardCount with
    /// UNIFORM_SCALING), by splits and merges. Returns the previous count.
    pub fn update_shard_count(&self, name: &str, target: u32) -> Result<u32> {
        let now = self.now_ms();
        let mut previous = 0;
        self.reshard(name, |e, s, st| {
            let current = st.open.len() as u32;
            previous = current;
            if target == 0 || target > SHARDS_PER_STREAM_MAX {
                return Err(Error::InvalidArgument(format!(
                    "TargetShardCount {target} must be between 1 and {SHARDS_PER_STREAM_MAX}."
                )));
            }
            if target > current.saturating_mul(2) || target.saturating_mul(2) < current {
                return Err(Error::InvalidArgument(format!(
                    "UpdateShardCount cannot scale from {current} to {target} shards: the target must be between half and double the current open shard count."
                )));
            }
            st.meta.scaling_ops_ms.retain(|t| now - t < DAY_MS);
            if st.meta.scaling_ops_ms.len() >= SCALING_OPS_PER_DAY_MAX {
                return Err(Error::LimitExceeded(format!(
                    "UpdateShardCount can be called at most {SCALING_OPS_PER_DAY_MAX} times in 24 hours for stream {name}."
                )));
            }
            st.meta.scaling_ops_ms.push(now);
            let wanted = even_ranges(target);
            // 1. Split wherever a wanted boundary falls inside an open shard.
            for w in wanted.iter().skip(1) {
                let b = w.start;
                let inside = st.open.iter().find(|(r, _)| r.start < b && b <= r.end).map(|(r, i)| (*r, *i));
                if let Some((_, i)) = inside {
                    e.split_in(s, st, i, b, now, false)?;
                    st.rebuild_routes();
                }
            }
            // 2. Merge the open shards inside each wanted range into one.
            for w in &wanted {
                loop {
                    let inside: Vec<(HashRange, u64)> = st
                        .open
                        .iter()
                        .filter(|(r, _)| r.start >= w.start && r.end <= w.end)
                        .copied()
                        .collect();
                    if inside.len() < 2 {
                        break;
                    }
                    e.merge_in(s, st, inside[0].1, inside[1].1, now)?;
                    st.rebuild_routes();
                }
            }
            Ok(())
        })?;
        Ok(previous)
    }

    // ----------------------------------------------------------------------
    // Retention
    // ----------------------------------------------------------------------

    fn set_retention(&self, name: &str, hours: u32, increase: bool) -> Result<()> {
        let stream = self.stream(name)?;
        let mut st = write(&stream.state);
        if st.deleted {
            return Err(not_found_stream(self.account_id(), name));
        }
        self.require_active(name)?;
        let current = st.meta.retention_hours;
        check_retention_hours(hours)?;
        if increase && hours < current {
            return Err(Error::InvalidArgument(format!(
                "Requested retention period ({hours} hours) for stream {name} can not be shorter than existing retention period ({current} hours). Use DecreaseRetentionPeriod API."
            )));
        }
        if !increase && hours > current {
            return Err(Error::InvalidArgument(format!(
                "Requested retention period ({hours} hours) for stream {name} can not be longer than existing retention period ({current} hours). Use IncreaseRetentionPeriod API."
            )));
        }
        let mut m = st.meta.clone();
        m.retention_hours = hours;
        self.persist(&stream, &m)?;
        st.meta = m;
        Ok(())
    }

    /// IncreaseStreamRetentionPeriod.
    pub fn increase_retention(&self, name: &str, hours: u32) -> Result<()> {
        self.set_retention(name, hours, true)
    }

    /// DecreaseStreamRetentionPeriod.
    pub fn decrease_retention(&self, name: &str, hours: u32) -> Result<()> {
        self.set_retention(name, hours, false)
    }

    /// Deletes expired data now: whole segments whose newest record is past
    /// retention (or beyond the byte cap), and closed shards with nothing
    /// left. Returns the number of segments deleted.
    pub fn enforce_retention(&self) -> Result<usize> {
        let now = self.now_ms();
        let streams: Vec<Arc<Stream>> = read(&self.inner.streams).values().cloned().collect();
        let mut removed = 0;
        let mut failures: Vec<String> = Vec::new();
        for stream in streams {
            let (cutoff, cap, logs) = {
                let st = read(&stream.state);
                let logs: Vec<(u64, Arc<IndexedLog>)> =
                    st.shards.iter().map(|(i, rt)| (*i, rt.log.clone())).collect();
                (
                    now - st.meta.retention_hours as i64 * HOUR_MS,
                    st.meta.retention_bytes_max,
                    logs,
                )
            };
            // Active segments roll at min(retention / 8, the log's age limit),
            // so an idle shard's data expires at most an eighth late. The log
            // compares against its own age limit; shift the clock to match.
            let log_age_ms = self.inner.opts.log.segment_age_max_ms as i64;
            let age_roll_ms = log_age_ms.min((now - cutoff) / 8);
            let shifted_now = now.saturating_add(log_age_ms - age_roll_ms);
            for (index, log) in &logs {
                // One damaged or poisoned shard must not stop retention of
                // every other: note the failure and go on.
                let step = (|| -> Result<usize> {
                    if log.log().health().is_ok() {
                        log.log().roll_if_older(shifted_now)?;
                    }
                    Ok(log.remove_older_than(cutoff)?)
                })();
                match step {
                    Ok(n) => removed += n,
                    Err(e) => failures.push(format!(
                        "{} shard {}: {e}",
                        read(&stream.state).meta.name,
                        shard_id(*index)
                    )),
                }
            }
            let capped = (|| -> Result<()> {
                let Some(cap) = cap else { return Ok(()) };
                loop {
                    let total: u64 = logs.iter().map(|(_, l)| l.log().bytes_on_disk()).sum();
                    if total <= cap {
                        break;
                    }
                    let mut oldest: Option<(i64, u64, &Arc<IndexedLog>)> = None;
                    for (_, l) in &logs {
                        if let Some((end, max_arrival)) = l.oldest_sealed()? {
                            if oldest.is_none_or(|(a, _, _)| max_arrival < a) {
                                oldest = Some((max_arrival, end, l));
                            }
                        }
                    }
                    let Some((_, end, l)) = oldest else { break };
                    removed += l.log().remove_segments_before(end)?;
                }
                Ok(())
            })();
            if let Err(e) = capped {
                // As above: one shard whose oldest segment cannot go stops
                // the cap of its own stream only, never the other streams'
                // retention or the expiry of closed shards.
                failures.push(format!("{} (byte cap): {e}", read(&stream.state).meta.name));
            }
            if let Err(e) = self.expire_closed_shards(&stream, now) {
                failures.push(format!("{}: {e}", read(&stream.state).meta.name));
            }
        }
        match failures.first() {
            None => {
                self.inner
                    .retention_deleted
                    .fetch_add(removed as u64, std::sync::atomic::Ordering::Relaxed);
                Ok(removed)
            }
            Some(first) => Err(Error::meta(
                &self.inner.dir,
                format!(
                    "retention failed for {} shard(s) or stream(s), first: {first}",
                    failures.len()
                ),
            )),
        }
    }

    /// Drops closed shards whose records have all expired.
    fn expire_closed_shards(&self, stream: &Stream, now: i64) -> Result<()> {
        let mut st = write(&stream.state);
        if st.deleted {
            return Ok(());
        }
        let retention_ms = st.meta.retention_hours as i64 * HOUR_MS;
        let expired: Vec<u64> = st
            .meta
            .shards
            .iter()
            .filter(|s| {
                s.closed.is_some_and(|c| {
                    let empty = st
                        .shards
                        .get(&s.index)
                        .is_none_or(|rt| rt.log.log().first_seq() >= c.end_next_position);
                    empty && now - c.closed_ms >= retention_ms
                })
            })
            .map(|s| s.index)
            .collect();
        if expired.is_empty() {
            return Ok(());
        }
        let mut m = st.meta.clone();
        m.shards.retain(|s| !expired.contains(&s.index));
        self.persist(stream, &m)?;
        st.meta = m;
        self.shard_total_sub(expired.len() as u64);
        for i in expired {
            st.shards.remove(&i);
            let _ = self.inner.fs.remove_dir_all(&meta::shard_dir(&stream.dir, i));
        }
        Ok(())
    }

    // ----------------------------------------------------------------------
    // Settings kept for the API layer, mode and record size
    // ----------------------------------------------------------------------

    fn update_meta(&self, name: &str, f: impl FnOnce(&mut StreamMeta) -> Result<()>) -> Result<()> {
        let stream = self.stream(name)?;
        let mut st = write(&stream.state);
        if st.deleted {
            return Err(not_found_stream(self.account_id(), name));
        }
        let mut m = st.meta.clone();
        f(&mut m)?;
        self.persist(&stream, &m)?;
        st.meta = m;
        Ok(())
    }

    /// A stored per-stream setting.
    pub fn stream_setting(&self, name: &str, key: &str) -> Result<Option<serde_json::Value>> {
        Ok(read(&self.stream(name)?.state).meta.settings.get(key).cloned())
    }

    /// Changes a per-stream setting atomically (read, change, store durably
    /// under the stream's lock), so concurrent updates are not lost.
    pub fn update_stream_setting(
        &self,
        name: &str,
        key: &str,
        f: impl FnOnce(Option<&serde_json::Value>) -> Result<Option<serde_json::Value>>,
    ) -> Result<Option<serde_json::Value>> {
        self.update_setting_checked(name, key, |_| Ok(()), f)
    }

    /// Changes a per-stream setting under the stream's lock once `check`
    /// has passed on the stream's metadata there.
    fn update_setting_checked(
        &self,
        name: &str,
        key: &str,
        check: impl FnOnce(&StreamMeta) -> Result<()>,
        f: impl FnOnce(Option<&serde_json::Value>) -> Result<Option<serde_json::Value>>,
    ) -> Result<Option<serde_json::Value>> {
        let mut out = None;
        self.update_meta(name, |m| {
            check(m)?;
            let next = f(m.settings.get(key))?;
            match &next {
                Some(v) => m.settings.insert(key.to_string(), v.clone()),
                None => m.settings.remove(key),
            };
            out = next;
            Ok(())
        })?;
        Ok(out)
    }

    /// Changes a per-stream setting that belongs to a consumer, as
    /// [`Engine::update_stream_setting`], but only while that consumer is
    /// registered; with `registered_at_s` (the creation time a consumer ARN
    /// ends in, in seconds), only while the consumer registered then is. Both
    /// are checked under the stream's lock, where the change is made, so an
    /// old ARN cannot change a consumer registered again under the same name
    /// between a check and the change.
    pub fn update_consumer_setting(
        &self,
        name: &str,
        consumer: &str,
        registered_at_s: Option<i64>,
        key: &str,
        f: impl FnOnce(Option<&serde_json::Value>) -> Result<Option<serde_json::Value>>,
    ) -> Result<Option<serde_json::Value>> {
        let acct = self.account_id();
        let registered = |m: &StreamMeta| {
            if m.consumers
                .iter()
                .any(|c| consumer_matches(c, consumer, registered_at_s))
            {
                return Ok(());
            }
            Err(Error::consumer_not_found(acct, name, consumer))
        };
        self.update_setting_checked(name, key, registered, f)
    }

    /// Shards the engine may hold in all.
    pub fn shards_max(&self) -> u64 {
        self.inner.opts.shards_max
    }

    /// Stores (or with `None` removes) a per-stream setting, durably.
    pub fn set_stream_setting(&self, name: &str, key: &str, value: Option<serde_json::Value>) -> Result<()> {
        self.update_meta(name, |m| {
            match value {
                Some(v) => m.settings.insert(key.to_string(), v),
                None => m.settings.remove(key),
            };
            Ok(())
        })
    }

    /// A stored account-level setting.
    pub fn account_setting(&self, key: &str) -> Option<serde_json::Value> {
        lock(&self.inner.meta).settings.get(key).cloned()
    }

    /// Stores an account-level setting durably (in ENGINE.json).
    pub fn set_account_setting(&self, key: &str, value: serde_json::Value) -> Result<()> {
        let mut em = lock(&self.inner.meta);
        let mut next = em.clone();
        next.settings.insert(key.to_string(), value);
        meta::store(&*self.inner.fs, &self.inner.dir.join(meta::ENGINE_FILE), &next)?;
        *em = next;
        Ok(())
    }

    /// UpdateStreamMode: at most [`MODE_UPDATES_PER_DAY_MAX`] switches in
    /// any 24 hours. Asking for the mode the stream already has changes
    /// nothing and does not count.
    pub fn update_stream_mode(&self, name: &str, mode: StreamMode) -> Result<()> {
        {
            let stream = self.stream(name)?;
            let st = read(&stream.state);
            if !st.deleted && st.meta.mode == mode {
                // Nothing changes, so nothing is written.
                return Ok(());
            }
        }
        let now = self.now_ms();
        let acct = self.account_id().to_string();
        self.update_meta(name, |m| {
            if m.mode == mode {
                return Ok(());
            }
            m.mode_updates_ms.retain(|t| now - t < DAY_MS);
            if m.mode_updates_ms.len() >= MODE_UPDATES_PER_DAY_MAX {
                let next = m.mode_updates_ms.iter().min().copied().unwrap_or(now) + DAY_MS;
                return Err(Error::LimitExceeded(format!(
                    "The capacity mode of stream {name} under account {acct} can be updated at most {MODE_UPDATES_PER_DAY_MAX} times in 24 hours; the next update is allowed in {} minutes.",
                    (next - now).max(0).div_euclid(60_000) + 1
                )));
            }
            m.mode_updates_ms.push(now);
            m.mode = mode;
            Ok(())
        })
    }

    /// UpdateMaxRecordSize: the largest record (data plus key), 1024–10240 KiB.
    pub fn update_max_record_size(&self, name: &str, kib: u32) -> Result<()> {
        if !(1024..=10240).contains(&kib) {
            return Err(Error::InvalidArgument(format!(
                "MaxRecordSizeInKiB {kib} must be between 1024 and 10240."
            )));
        }
        self.update_meta(name, |m| {
            m.max_record_bytes = kib as usize * 1024;
            Ok(())
        })
    }

    // ----------------------------------------------------------------------
    // Metrics
    // ----------------------------------------------------------------------

    /// Traffic of every stream and shard (of this account and region, and of
    /// the others this engine opened), and the storage counters.
    pub fn metrics(&self) -> EngineMetrics {
        let g = |c: &AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        let mut m = EngineMetrics {
            streams: Vec::new(),
            retention_deleted_segments: g(&self.inner.retention_deleted),
            recoveries: g(&self.inner.recoveries),
            corruptions: g(&self.inner.corruptions),
            // Scopes share this cache (they inherit the options), so it is
            // counted once, here.
            index_cache: self
                .inner
                .opts
                .index_cache
                .as_ref()
                .map(|c| c.stats())
                .unwrap_or_default(),
            index_cache_budget_bytes: self
                .inner
                .opts
                .index_cache
                .as_ref()
                .map_or(0, |c| c.budget_bytes()),
            open_check_pending_bytes: self.open_check_pending_bytes(),
        };
        let streams: Vec<Arc<Stream>> = read(&self.inner.streams).values().cloned().collect();
        for stream in streams {
            let st = read(&stream.state);
            let mut shards: Vec<ShardMetrics> = st
                .shards
                .iter()
                .map(|(index, rt)| ShardMetrics {
                    shard_id: shard_id(*index),
                    traffic: rt.counters.snapshot(),
                    segments: rt.log.log().segments().len(),
                    bytes_on_disk: rt.log.log().bytes_on_disk(),
                    recyclable_bytes: rt.log.log().recyclable_bytes(),
                })
                .collect();
            shards.sort_by(|a, b| a.shard_id.cmp(&b.shard_id));
            m.streams.push(StreamMetrics {
                account_id: self.account_id().to_string(),
                region: self.region().to_string(),
                name: st.meta.name.clone(),
                traffic: stream.counters.snapshot(),
                shards,
            });
        }
        let scopes: Vec<Engine> = lock(&self.inner.scopes).values().cloned().collect();
        for e in scopes {
            let sm = e.metrics();
            m.streams.extend(sm.streams);
            m.retention_deleted_segments += sm.retention_deleted_segments;
            m.recoveries += sm.recoveries;
            m.corruptions += sm.corruptions;
            m.open_check_pending_bytes += sm.open_check_pending_bytes;
        }
        m
    }

    // ----------------------------------------------------------------------
    // Inspection
    // ----------------------------------------------------------------------

    /// Streams, shards, segments, bytes and record times, for operators.
    pub fn inspect(&self) -> Vec<StreamInspection> {
        let streams: Vec<Arc<Stream>> = read(&self.inner.streams).values().cloned().collect();
        let mut out = Vec::new();
        for stream in streams {
            let st = read(&stream.state);
            let mut shards = Vec::new();
            for s in &st.meta.shards {
                let Some(rt) = st.shards.get(&s.index) else {
                    continue;
                };
                let log = rt.log.log();
                let (first, next) = (log.first_seq(), log.visible_next_seq());
                let time_at = |seq: u64| -> Option<i64> {
                    let mut c = rt.log.cursor_at(seq).ok()?;
                    let batch = rt
                        .log
                        .read(
                            &mut c,
                            ReadLimits {
                                max_records: 1,
                                max_bytes: usize::MAX,
                            },
                        )
                        .ok()?;
                    let t = batch.iter().next().map(|r| r.arrival_ms);
                    t
                };
                shards.push(ShardInspection {
                    shard_id: shard_id(s.index),
                    open: s.closed.is_none(),
                    segments: log.segments().len(),
                    bytes: log.bytes_on_disk(),
                    records: next.saturating_sub(first),
                    oldest_ms: if next > first { time_at(first) } else { None },
                    newest_ms: if next > first { time_at(next - 1) } else { None },
                });
            }
            out.push(StreamInspection {
                name: st.meta.name.clone(),
                id: stream.id,
                shards,
            });
        }
        out
    }

    // ----------------------------------------------------------------------
    // Offline verification
    // ----------------------------------------------------------------------

    /// Checks an engine's data directory without serving it: opens it with
    /// the `Strict` recovery policy (so a torn tail is reported, not cut),
    /// checks every record's checksum, every index against its log, the
    /// metadata of every stream (open shards tile the hash-key space, every
    /// parent and child exists), and reports what it found. Fails only when
    /// the directory cannot be examined at all (for example, a running
    /// server holds its lock).
    pub fn verify_data_dir(dir: impl AsRef<Path>, mut opts: EngineOptions) -> Result<DataDirReport> {
        opts.retention_check_interval_ms = 0;
        opts.log.recovery = shardlog_segment::RecoveryPolicy::Strict;
        let e = Engine::open(dir, opts)?;
        let mut report = e.verify();
        // The engines of other accounts and regions live below this one.
        let scopes = e.inner.dir.join(SCOPES_DIR);
        for account in e.inner.fs.read_dir(&scopes).unwrap_or_default() {
            for region in e.inner.fs.read_dir(&scopes.join(&account)).unwrap_or_default() {
                match e.for_scope(&account, &region) {
                    Ok(scoped) => {
                        let r = scoped.verify();
                        report.streams += r.streams;
                        report.shards += r.shards;
                        report.segments += r.segments;
                        report.records += r.records;
                        report.bytes += r.bytes;
                        report.findings.extend(
                            r.findings
                                .into_iter()
                                .map(|f| format!("account {account} region {region}: {f}")),
                        );
                    }
                    Err(err) => report
                        .findings
                        .push(format!("account {account} region {region}: cannot open: {err}")),
                }
            }
        }
        Ok(report)
    }

    /// See [`Engine::verify_data_dir`]; this checks an open engine.
    pub fn verify(&self) -> DataDirReport {
        let mut report = DataDirReport {
            findings: self.problems(),
            ..DataDirReport::default()
        };
        let streams: Vec<Arc<Stream>> = read(&self.inner.streams).values().cloned().collect();
        for stream in streams {
            let st = read(&stream.state);
            let name = st.meta.name.clone();
            report.streams += 1;
            let mut open: Vec<HashRange> = st.open.iter().map(|(range, _)| *range).collect();
            open.sort_by_key(|r| r.start);
            let tiles = open.first().is_some_and(|r| r.start == 0)
                && open.last().is_some_and(|r| r.end == u128::MAX)
                && open
                    .windows(2)
                    .all(|w| w[0].end.checked_add(1) == Some(w[1].start));
            if !tiles {
                report.findings.push(format!(
                    "stream {name}: open shards do not cover the hash-key space exactly once"
                ));
            }
            for s in &st.meta.shards {
                for p in s.parent.iter().chain(s.adjacent_parent.iter()) {
                    if st.meta.shard(*p).is_none() && st.shards.contains_key(&s.index) {
                        // A parent may have expired through retention; only
                        // a parent id at or above the child's is impossible.
                        if *p >= s.index {
                            report.findings.push(format!(
                                "stream {name}: shard {} names parent {} that cannot precede it",
                                shard_id(s.index),
                                shard_id(*p)
                            ));
                        }
                    }
                }
            }
            for (index, rt) in &st.shards {
                report.shards += 1;
                let log = &rt.log;
                let v = log.log().verify();
                report.segments += v.segments;
                report.records += v.records;
                report.bytes += v.bytes;
                for p in v.problems {
                    report
                        .findings
                        .push(format!("stream {name} shard {}: {p}", shard_id(*index)));
                }
                if let Err(e) = log.check_indexes() {
                    report
                        .findings
                        .push(format!("stream {name} shard {}: index: {e}", shard_id(*index)));
                }
                // The index agrees with the log: a cursor found through the
                // index for a sample of sequence numbers starts exactly there.
                let (first, next) = (log.log().first_seq(), log.log().visible_next_seq());
                let step = ((next - first) / VERIFY_INDEX_SAMPLES).max(1);
                let mut seq = first;
                while seq < next {
                    let found = log.cursor_at(seq).and_then(|mut c| {
                        log.read(
                            &mut c,
                            ReadLimits {
                                max_records: 1,
                                max_bytes: usize::MAX,
                            },
                        )
                        .map(|b| b.iter().next().map(|r| r.seq))
                    });
                    match found {
                        Ok(Some(got)) if got == seq => {}
                        Ok(other) => report.findings.push(format!(
                            "stream {name} shard {}: index points sequence {seq} at {other:?}",
                            shard_id(*index)
                        )),
                        Err(e) => {
                            report.findings.push(format!(
                                "stream {name} shard {}: cannot read sequence {seq}: {e}",
                                shard_id(*index)
                            ));
                            break;
                        }
                    }
                    seq += step;
                }
            }
        }
        report.findings.dedup();
        report
    }

    // ----------------------------------------------------------------------
    // Encryption at rest
    // ----------------------------------------------------------------------

    /// The key a KeyId names (key id, key ARN, alias or alias ARN), with the
    /// canonical id recorded in the stream's key list.
    fn resolve_key(&self, key_ref: &str) -> Result<(String, crypto::Key)> {
        if let Some(k) = self.inner.opts.keyring.as_ref().and_then(|r| r.resolve(key_ref)) {
            return Ok((k.id.clone(), k.clone()));
        }
        if crypto::strip_kms_arn(key_ref) == crypto::MANAGED_KEY_ALIAS {
            return Ok((crypto::MANAGED_KEY_ID.to_string(), self.inner.managed_key.clone()));
        }
        Err(crypto::key_not_found(key_ref))
    }

    /// The key behind a canonical id of a stream's key list.
    fn key_by_canonical(&self, canonical: &str) -> Result<crypto::Key> {
        if canonical == crypto::MANAGED_KEY_ID {
            return Ok(self.inner.managed_key.clone());
        }
        self.inner
            .opts
            .keyring
            .as_ref()
            .and_then(|r| r.resolve(canonical))
            .cloned()
            .ok_or_else(|| crypto::key_not_found(canonical))
    }

    /// The slot and key new records of the stream are sealed with.
    fn sealing_key(&self, st: &StreamState) -> Result<Option<(u16, crypto::Key)>> {
        let Some(enc) = &st.meta.encryption else {
            return Ok(None);
        };
        let canonical = st
            .meta
            .encryption_keys
            .get(enc.slot as usize)
            .ok_or_else(|| Error::Metadata {
                path: format!("stream {}", st.meta.name),
                reason: format!("encryption key slot {} is not in the key list", enc.slot),
            })?;
        let key = self.key_by_canonical(canonical)?;
        key.usable()?;
        Ok(Some((enc.slot, key)))
    }

    /// Opens a sealed record read from `log`; a record that fails
    /// authentication is corruption, reported with file and offset.
    fn unseal(
        &self,
        m: &StreamMeta,
        stream_id: u64,
        shard_index: u64,
        log: &IndexedLog,
        r: &shardlog_segment::Record<'_>,
        keys: &mut HashMap<u16, crypto::Key>,
    ) -> Result<(String, Vec<u8>)> {
        let corrupt = |reason: &str| {
            let base = log.log().segment_of(r.seq).map(|(b, _)| b).unwrap_or(0);
            Error::Storage(shardlog_segment::Error::Corruption {
                path: log
                    .log()
                    .dir()
                    .join(shardlog_segment::segment::segment_file_name(base)),
                offset: r.offset,
                reason: reason.to_string(),
            })
        };
        let slot = crypto::slot_of(r.data).ok_or_else(|| corrupt("not an encryption envelope"))?;
        let key = match keys.entry(slot) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                let canonical = m
                    .encryption_keys
                    .get(slot as usize)
                    .ok_or_else(|| corrupt("envelope names a key slot the stream never had"))?;
                let key = self.key_by_canonical(canonical)?;
                key.usable()?;
                v.insert(key)
            }
        };
        crypto::open(key, stream_id, shard_index, r.data).map_err(corrupt)
    }

    /// StartStreamEncryption: records written from now on are sealed with
    /// the key `key_id` names. A stream already encrypted moves to the new key;
    /// its older records keep naming theirs.
    pub fn start_stream_encryption(&self, name: &str, key_id: &str) -> Result<()> {
        self.require_active(name)?;
        let (canonical, key) = self.resolve_key(key_id)?;
        key.usable()?;
        self.update_meta(name, |m| {
            let slot = match m.encryption_keys.iter().position(|k| *k == canonical) {
                Some(i) => i,
                None => {
                    if m.encryption_keys.len() >= crypto::STREAM_KEYS_MAX {
                        return Err(Error::LimitExceeded(format!(
                            "Stream {name} has used {} encryption keys, the most it may.",
                            crypto::STREAM_KEYS_MAX
                        )));
                    }
                    m.encryption_keys.push(canonical.clone());
                    m.encryption_keys.len() - 1
                }
            };
            m.encryption = Some(meta::EncryptionMeta {
                key_id: key_id.to_string(),
                slot: slot as u16,
            });
            Ok(())
        })?;
        self.begin_updating(name);
        Ok(())
    }

    /// StopStreamEncryption: records written from now on are stored in the
    /// clear; records already sealed stay sealed and readable. `key_id` must
    /// name the stream's current key.
    pub fn stop_stream_encryption(&self, name: &str, key_id: &str) -> Result<()> {
        self.require_active(name)?;
        let (canonical, _) = self.resolve_key(key_id)?;
        self.update_meta(name, |m| {
            let Some(enc) = &m.encryption else {
                return Ok(());
            };
            if m.encryption_keys.get(enc.slot as usize) != Some(&canonical) {
                return Err(Error::InvalidArgument(format!(
                    "Stream {name} is encrypted with key {}, not {key_id}.",
                    enc.key_id
                )));
            }
            m.encryption = None;
            Ok(())
        })?;
        self.begin_updating(name);
        Ok(())
    }

    // ----------------------------------------------------------------------
    // Accounts and regions
    // ----------------------------------------------------------------------

    /// Whether the engine of `account_id` and `region` is open already (so
    /// that [`Engine::for_scope`] answers from memory).
    pub fn scope_is_open(&self, account_id: &str, region: &str) -> bool {
        (account_id == self.account_id() && region == self.region())
            || lock(&self.inner.scopes).contains_key(&(account_id.to_string(), region.to_string()))
    }

    /// The engine of another account and region: its streams, consumers and
    /// iterators are invisible to this one. Opened on first use under
    /// `scopes/<account>/<region>/` with this engine's settings.
    pub fn for_scope(&self, account_id: &str, region: &str) -> Result<Engine> {
        if account_id == self.account_id() && region == self.region() {
            return Ok(self.clone());
        }
        if account_id.len() != 12 || !account_id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Error::InvalidArgument(format!(
                "Account {account_id:?} is not a 12-digit AWS account id."
            )));
        }
        let region_ok = !region.is_empty()
            && region.len() <= REGION_NAME_BYTES_MAX
            && region
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !region_ok {
            return Err(Error::InvalidArgument(format!(
                "Region {region:?} is not a valid AWS region name."
            )));
        }
        let key = (account_id.to_string(), region.to_string());
        if let Some(e) = lock(&self.inner.scopes).get(&key) {
            return Ok(e.clone());
        }
        // Opening recovers logs and may take a while: only other openings
        // wait for it, not requests to scopes already open.
        let _opening = lock(&self.inner.scope_opening);
        if let Some(e) = lock(&self.inner.scopes).get(&key) {
            return Ok(e.clone());
        }
        if lock(&self.inner.scopes).len() >= SCOPES_MAX {
            return Err(Error::LimitExceeded(format!(
                "This server already serves {SCOPES_MAX} accounts and regions; no more can be opened."
            )));
        }
        let opts = EngineOptions {
            account_id: account_id.to_string(),
            region: region.to_string(),
            ..self.inner.opts.clone()
        };
        let dir = self.inner.dir.join(SCOPES_DIR).join(account_id).join(region);
        let e = Engine::open_in(
            self.inner.fs.clone(),
            dir,
            opts,
            self.inner.clock.clone(),
            Some(self.inner.coordinator.clone()),
        )?;
        lock(&self.inner.scopes).insert(key, e.clone());
        Ok(e)
    }

    // ----------------------------------------------------------------------
    // Tags
    // ----------------------------------------------------------------------

    pub fn add_tags(&self, name: &str, tags: &BTreeMap<String, String>) -> Result<()> {
        let stream = self.stream(name)?;
        let mut st = write(&stream.state);
        if st.deleted {
            return Err(not_found_stream(self.account_id(), name));
        }
        let mut m = st.meta.clone();
        for (k, v) in tags {
            m.tags.insert(k.clone(), v.clone());
        }
        validate_tags(&m.tags)?;
        self.persist(&stream, &m)?;
        st.meta = m;
        Ok(())
    }

    pub fn remove_tags(&self, name: &str, keys: &[String]) -> Result<()> {
        let stream = self.stream(name)?;
        let mut st = write(&stream.state);
        if st.deleted {
            return Err(not_found_stream(self.account_id(), name));
        }
        let mut m = st.meta.clone();
        for k in keys {
            m.tags.remove(k);
        }
        self.persist(&stream, &m)?;
        st.meta = m;
        Ok(())
    }

    pub fn list_tags(&self, name: &str) -> Result<BTreeMap<String, String>> {
        Ok(read(&self.stream(name)?.state).meta.tags.clone())
    }

    // ----------------------------------------------------------------------
    // Consumers
    // ----------------------------------------------------------------------

    pub fn register_consumer(&self, name: &str, consumer: &str) -> Result<ConsumerDescription> {
        self.register_consumer_forgetting(name, consumer, &[])
    }

    /// Registers a consumer as [`Engine::register_consumer`] and removes the
    /// stream settings named in `forget_settings` in the same durable
    /// change: what a layer above keeps of a consumer (its tags, its
    /// policy) under the stream's lock, so a consumer registered under a
    /// name used before never starts with the old one's settings.
    pub fn register_consumer_forgetting(
        &self,
        name: &str,
        consumer: &str,
        forget_settings: &[String],
    ) -> Result<ConsumerDescription> {
        let acct = self.account_id();
        if !is_valid_name(consumer) {
            return Err(Error::InvalidArgument(format!(
                "Consumer name {consumer} is invalid: it must be 1 to 128 characters of [a-zA-Z0-9_.-]."
            )));
        }
        let stream = self.stream(name)?;
        let mut st = write(&stream.state);
        if st.deleted {
            return Err(not_found_stream(self.account_id(), name));
        }
        if st.meta.consumers.iter().any(|c| c.name == consumer) {
            return Err(Error::ResourceInUse(format!(
                "Consumer {consumer} under stream {name} already exists for account {acct}."
            )));
        }
        if st.meta.consumers.len() >= CONSUMERS_PER_STREAM_MAX {
            return Err(Error::LimitExceeded(format!(
                "Stream {name} under account {acct} already has {CONSUMERS_PER_STREAM_MAX} registered consumers."
            )));
        }
        let mut m = st.meta.clone();
        let c = ConsumerMeta {
            name: consumer.to_string(),
            created_ms: self.now_ms(),
        };
        m.consumers.push(c.clone());
        for key in forget_settings {
            m.settings.remove(key);
        }
        self.persist(&stream, &m)?;
        st.meta = m;
        Ok(ConsumerDescription {
            name: c.name,
            stream_name: name.to_string(),
            created_ms: c.created_ms,
            status: self.consumer_status(c.created_ms),
        })
    }

    /// A consumer is CREATING for the configured creation delay (as
    /// RegisterStreamConsumer is asynchronous on AWS), then ACTIVE.
    fn consumer_status(&self, created_ms: i64) -> &'static str {
        if self.now_ms() < created_ms + self.inner.opts.status_delays.creating_ms as i64 {
            "CREATING"
        } else {
            "ACTIVE"
        }
    }

    /// Checks that `consumer` of `name` may subscribe (SubscribeToShard
    /// needs an ACTIVE consumer).
    pub fn require_active_consumer(&self, name: &str, consumer: &str) -> Result<ConsumerDescription> {
        let c = self.describe_consumer(name, consumer)?;
        if c.status != "ACTIVE" {
            return Err(Error::ResourceInUse(format!(
                "Consumer {consumer} of stream {name} is {}, not ACTIVE; wait until it is ACTIVE to subscribe.",
                c.status
            )));
        }
        Ok(c)
    }

    /// The ContinuationSequenceNumber for a reader at `position` of a shard:
    /// passed back with AFTER_SEQUENCE_NUMBER, it resumes exactly at
    /// `position`.
    pub fn continuation_sequence_number(&self, name: &str, shard: &str, position: u64) -> Result<String> {
        let stream = self.stream(name)?;
        let st = read(&stream.state);
        let s = self.shard_meta(&st, name, shard)?;
        // Before any record: the shard's StartingSequenceNumber, which AT
        // and AFTER both resume at the first record.
        if position == 0 {
            return Ok(starting_sequence_number(s));
        }
        Ok(SeqNum {
            generation: s.generation,
            shard_index: s.index,
            position: position - 1,
        }
        .encode())
    }

    /// Deregisters a consumer. With `registered_at_s` (the creation time a
    /// consumer ARN ends in, in seconds), only the consumer registered then:
    /// checked under the stream's lock, so that an old ARN cannot remove a
    /// consumer registered again under the same name meanwhile. The stream
    /// settings named in `forget_settings` (what a layer above keeps of the
    /// consumer) go in the same durable change.
    pub fn deregister_consumer(
        &self,
        name: &str,
        consumer: &str,
        registered_at_s: Option<i64>,
        forget_settings: &[String],
    ) -> Result<()> {
        let acct = self.account_id();
        let stream = self.stream(name)?;
        let mut st = write(&stream.state);
        if st.deleted {
            return Err(not_found_stream(self.account_id(), name));
        }
        if !st
            .meta
            .consumers
            .iter()
            .any(|c| consumer_matches(c, consumer, registered_at_s))
        {
            return Err(Error::consumer_not_found(acct, name, consumer));
        }
        let mut m = st.meta.clone();
        m.consumers.retain(|c| c.name != consumer);
        for key in forget_settings {
            m.settings.remove(key);
        }
        self.persist(&stream, &m)?;
        st.meta = m;
        Ok(())
    }

    pub fn list_consumers(&self, name: &str) -> Result<Vec<ConsumerDescription>> {
        let stream = self.stream(name)?;
        let st = read(&stream.state);
        Ok(st
            .meta
            .consumers
            .iter()
            .map(|c| ConsumerDescription {
                name: c.name.clone(),
                stream_name: name.to_string(),
                created_ms: c.created_ms,
                status: self.consumer_status(c.created_ms),
            })
            .collect())
    }

    pub fn describe_consumer(&self, name: &str, consumer: &str) -> Result<ConsumerDescription> {
        let acct = self.account_id();
        self.list_consumers(name)?
            .into_iter()
            .find(|c| c.name == consumer)
            .ok_or_else(|| Error::consumer_not_found(acct, name, consumer))
    }

    // ----------------------------------------------------------------------
    // Checkpoints
    // ----------------------------------------------------------------------

    /// The checkpoint of `application` on `shard`.
    pub fn get_checkpoint(&self, name: &str, application: &str, shard: &str) -> Result<Option<String>> {
        let stream = self.stream(name)?;
        {
            let st = read(&stream.state);
            self.shard_meta(&st, name, shard)?;
        }
        let shard_key = shard_id(parse_shard_id(shard).unwrap_or(0));
        let cps = lock(&stream.checkpoints);
        Ok(cps.get(application).and_then(|m| m.get(&shard_key)).cloned())
    }

    /// Sets a checkpoint if the current value is `expected` (compare-and-set),
    /// durably. `sequence_number` must be one of the shard's numbers.
    pub fn set_checkpoint(
        &self,
        name: &str,
        application: &str,
        shard: &str,
        sequence_number: &str,
        expected: Option<&str>,
    ) -> Result<()> {
        if !is_valid_name(application) {
            return Err(Error::InvalidArgument(format!(
                "Application name {application} is invalid."
            )));
        }
        let stream = self.stream(name)?;
        {
            let st = read(&stream.state);
            let s = self.shard_meta(&st, name, shard)?;
            // A record's number, or one below a record's (the shard's
            // StartingSequenceNumber: nothing read yet).
            let n = SeqNum::parse_resume_point(sequence_number).ok_or_else(|| {
                Error::InvalidArgument(format!("Sequence number {sequence_number} is invalid."))
            })?;
            if n.shard_index != s.index || n.generation != s.generation {
                return Err(Error::InvalidArgument(format!(
                    "Sequence number {sequence_number} does not belong to shard {shard}."
                )));
            }
        }
        let shard_key = shard_id(parse_shard_id(shard).unwrap_or(0));
        let cps = lock(&stream.checkpoints);
        let current = cps.get(application).and_then(|m| m.get(&shard_key)).cloned();
        if current.as_deref() != expected {
            return Err(Error::CheckpointConflict {
                application: application.to_string(),
                shard_id: shard_key,
                current,
                expected: expected.map(str::to_string),
            });
        }
        self.store_checkpoint(&stream, cps, application, &shard_key, sequence_number)
    }

    /// Writes one checkpoint durably (no comparison).
    fn write_checkpoint(
        &self,
        stream: &Stream,
        application: &str,
        shard_key: &str,
        value: &str,
    ) -> Result<()> {
        let cps = lock(&stream.checkpoints);
        self.store_checkpoint(stream, cps, application, shard_key, value)
    }

    fn store_checkpoint(
        &self,
        stream: &Stream,
        mut cps: MutexGuard<'_, Checkpoints>,
        application: &str,
        shard_key: &str,
        value: &str,
    ) -> Result<()> {
        let mut next = cps.clone();
        next.entry(application.to_string())
            .or_default()
            .insert(shard_key.to_string(), value.to_string());
        meta::store(&*self.inner.fs, &stream.dir.join(meta::CHECKPOINTS_FILE), &next)?;
        *cps = next;
        Ok(())
    }
}

enum Failure {
    Record(PutRecordFailure),
    Err(Error),
}

impl Engine {
    /// PutRecords' own limits: 1 to 500 records and 5 MiB, or 10 MiB for a
    /// stream that takes records over 1 MiB (so that one such record fits
    /// in a batch as it does in PutRecord).
    fn check_put_records(&self, name: &str, records: &[PutRecordInput<'_>]) -> Result<()> {
        if records.is_empty() || records.len() > PUT_RECORDS_COUNT_MAX {
            return Err(Error::InvalidArgument(format!(
                "PutRecords takes 1 to {PUT_RECORDS_COUNT_MAX} records, got {}.",
                records.len()
            )));
        }
        let total: usize = records.iter().map(|r| r.data.len() + r.partition_key.len()).sum();
        if total > PUT_RECORDS_BYTES_MAX {
            // Only a request this large pays for the stream lookup.
            let large = self
                .stream(name)
                .is_ok_and(|s| read(&s.state).meta.max_record_bytes > RECORD_BYTES_DEFAULT_MAX);
            let (max, mb) = if large {
                (PUT_RECORDS_LARGE_BYTES_MAX, 10)
            } else {
                (PUT_RECORDS_BYTES_MAX, 5)
            };
            if total > max {
                return Err(Error::InvalidArgument(format!(
                    "Records size exceeds {mb} MB limit"
                )));
            }
        }
        Ok(())
    }
}

/// A batch's per-record results, failures named as PutRecords reports them.
fn batch_results(
    out: Vec<Result<PutRecordOutput, Failure>>,
) -> Vec<Result<PutRecordOutput, PutRecordFailure>> {
    out.into_iter()
        .map(|r| {
            r.map_err(|f| match f {
                Failure::Record(f) => f,
                Failure::Err(e) => PutRecordFailure {
                    error_code: e.kinesis_name().to_string(),
                    error_message: e.to_string(),
                },
            })
        })
        .collect()
}

/// Awaits every wait at once, so that the syncs of several shards are
/// queued together and run in parallel on the sync pool. The results are in
/// the order of `waits`.
async fn all_durable(waits: Vec<shardlog_segment::Durable>) -> Vec<shardlog_segment::Result<()>> {
    use std::future::Future;
    use std::task::Poll;
    let mut waits: Vec<Option<shardlog_segment::Durable>> = waits.into_iter().map(Some).collect();
    let mut out: Vec<Option<shardlog_segment::Result<()>>> = waits.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (wait, slot) in waits.iter_mut().zip(out.iter_mut()) {
            if let Some(w) = wait {
                match std::pin::Pin::new(w).poll(cx) {
                    Poll::Ready(r) => {
                        *slot = Some(r);
                        *wait = None;
                    }
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    // Every slot was filled before the poll above returned Ready.
    out.into_iter().map(|r| r.unwrap_or(Ok(()))).collect()
}

/// Marks the records `idxs` of a batch failed with `e`.
fn fail_records(idxs: &[usize], e: Error, results: &mut [Option<Result<PutRecordOutput, Failure>>]) {
    for &i in idxs {
        results[i] = Some(Err(Failure::Record(PutRecordFailure {
            error_code: e.kinesis_name().to_string(),
            error_message: e.to_string(),
        })));
    }
}

/// A put between its write and its acknowledgement.
struct PreparedPut {
    stream: Arc<Stream>,
    results: Vec<Option<Result<PutRecordOutput, Failure>>>,
    written: Vec<WrittenGroup>,
    encrypted: bool,
}

/// One shard's part of a put, written and awaiting durability.
struct WrittenGroup {
    index: u64,
    /// Positions of its records in the request.
    idxs: Vec<usize>,
    pending: shardlog_segment::Pending,
    /// Partition key and data bytes, for the traffic counters.
    bytes: u64,
    /// Its shard's generation and its first record's position: record k of
    /// the group is at `first_seq + k`.
    generation: u64,
    first_seq: u64,
    log: Arc<IndexedLog>,
    notify: Arc<tokio::sync::Notify>,
}

fn validate_tags(tags: &BTreeMap<String, String>) -> Result<()> {
    if tags.len() > TAGS_PER_STREAM_MAX {
        return Err(Error::LimitExceeded(format!(
            "A stream can have at most {TAGS_PER_STREAM_MAX} tags."
        )));
    }
    for (k, v) in tags {
        if k.is_empty() || k.chars().count() > TAG_KEY_CHARS_MAX || v.chars().count() > TAG_VALUE_CHARS_MAX {
            return Err(Error::InvalidArgument(format!(
                "Tag {k} is invalid: keys are 1 to {TAG_KEY_CHARS_MAX} characters, values at most {TAG_VALUE_CHARS_MAX}."
            )));
        }
    }
    Ok(())
}

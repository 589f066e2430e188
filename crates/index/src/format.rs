//! Layout of the per-segment index sidecar file (`<base:020>.idx`).
//! Described in prose in `docs/FORMAT.md`. Little-endian throughout.

pub use shardlog_segment::format::Endian;

pub const INDEX_MAGIC: [u8; 8] = *b"SHRDLIDX";
pub const INDEX_FORMAT_VERSION: u16 = 1;

pub const IDX_MAGIC_OFFSET: usize = 0;
pub const IDX_VERSION_OFFSET: usize = 8;
/// `u16`, reserved, zero.
pub const IDX_FLAGS_OFFSET: usize = 10;
/// Number of entries (`u32`).
pub const IDX_COUNT_OFFSET: usize = 12;
/// First sequence number of the segment (`u64`).
pub const IDX_BASE_SEQ_OFFSET: usize = 16;
/// One past the last sequence number of the segment (`u64`).
pub const IDX_END_SEQ_OFFSET: usize = 24;
/// File id of the segment the index was built from (`u64`).
pub const IDX_FILE_ID_OFFSET: usize = 32;
/// Byte offset where the segment's frames end (`u64`).
pub const IDX_END_OFFSET_OFFSET: usize = 40;
/// Arrival time of the segment's last record (`i64`).
pub const IDX_MAX_ARRIVAL_OFFSET: usize = 48;
pub const IDX_HEADER_BYTES: usize = 56;

/// One entry: `seq - base_seq` (`u32`), frame offset (`u32`), arrival (`i64`).
pub const IDX_ENTRY_BYTES: usize = 16;
pub const ENTRY_SEQ_DELTA_OFFSET: usize = 0;
pub const ENTRY_FILE_OFFSET_OFFSET: usize = 4;
pub const ENTRY_ARRIVAL_OFFSET: usize = 8;

/// Trailing CRC-32 over every byte before it.
pub const IDX_CRC_BYTES: usize = 4;

pub const INDEX_FILE_SUFFIX: &str = ".idx";

/// Suffix of an active segment's checkpoint, `<base:020>.ckpt`: its index up
/// to a point where it was durable, in the sidecar layout above (`end_seq`,
/// `end_offset` and `max_arrival` describe that point exactly), so that an
/// open walks only the frames after it. Written to `<base:020>.ckpt.tmp`, synced,
/// and renamed over the last one; a lost or torn checkpoint only means a
/// longer walk.
pub const CHECKPOINT_FILE_SUFFIX: &str = ".ckpt";
pub const CHECKPOINT_TMP_SUFFIX: &str = ".ckpt.tmp";

/// A checkpoint is written each time the active segment's durable end has
/// moved this far past the last one. An open then walks at most this much
/// (plus what was written after the last sync) of each active segment,
/// instead of up to a whole segment. A checkpoint of a 128 MiB segment grows
/// to 128 KiB at its end, so checkpoints cost about 1.6% of the bytes
/// written and two fsyncs per 4 MiB (an open after a crash with 10 GiB in
/// 100 shards took 25-33 ms with them, 555-640 ms without; 8 MiB gave
/// 58-72 ms). They are written by the checkpoint thread of the logs that
/// share an index cache, one at a time: on the syncing thread they held up
/// the next group (at 1.8 GB/s, 400 checkpoints a second cost the embedded
/// engine about a tenth of its bandwidth). A log skips its points while its
/// last one is queued, and with 4 queued the syncing thread writes its own
/// (`checkpointer.rs`).
pub const CHECKPOINT_INTERVAL_BYTES: u64 = 4 * 1024 * 1024;

/// An entry is added at least every this many bytes of frames, so a lookup
/// scans at most this much of a segment after its binary search. The
/// indexes live in memory (24 bytes per entry, sealed ones up to a budget,
/// `INDEX_CACHE_BYTES_DEFAULT`): 16 KiB keeps them
/// at 0.15% of the data (measured: with 4 KiB, the indexes of 3 GB written
/// in 10 s took ~19 MiB of a server's 64 MiB memory target), while a lookup
/// still reads only 16 KiB of mapped frame headers. Readers do not depend on
/// the interval: sidecars written with another one stay valid.
pub const INDEX_INTERVAL_BYTES: u64 = 16 * 1024;

/// Bytes of sealed-segment indexes a log opened on its own keeps in memory
/// (least recently used are dropped and reloaded from their sidecar files on
/// demand). An engine shares one budget across all its shards instead; see
/// `IndexCache`. 16 MiB holds the indexes of about 11 GB of segments at one
/// 24-byte entry per `INDEX_INTERVAL_BYTES`.
pub const INDEX_CACHE_BYTES_DEFAULT: usize = 16 * 1024 * 1024;

const _: () = assert!(IDX_MAX_ARRIVAL_OFFSET + 8 == IDX_HEADER_BYTES);
const _: () = assert!(ENTRY_ARRIVAL_OFFSET + 8 == IDX_ENTRY_BYTES);
// Segments hold fewer than 2^32 records (a frame is over 40 bytes and a
// segment at most 1 GiB), so sequence deltas fit in u32.
const _: () = assert!(
    shardlog_segment::format::SEGMENT_BYTES_LIMIT / (shardlog_segment::format::FRAME_HEADER_BYTES as u64)
        < u32::MAX as u64
);

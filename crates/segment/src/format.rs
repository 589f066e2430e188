//! The on-disk format of segment files, written down once.
//!
//! `docs/FORMAT.md` describes the same layout in prose; every byte offset used by
//! the encoder and decoder is a named constant here, so the two cannot drift
//! apart silently. All integers are little-endian (`byteorder::LittleEndian`).

use byteorder::LittleEndian;

/// The one byte order of every integer on disk.
pub type Endian = LittleEndian;

// ---------------------------------------------------------------------------
// Segment header
// ---------------------------------------------------------------------------

/// Magic bytes at offset 0 of every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"SHRDLSEG";
/// Version of the segment format this code writes and reads.
pub const SEGMENT_FORMAT_VERSION: u16 = 1;
/// Total size of the segment header; the first frame starts right after it.
pub const SEGMENT_HEADER_BYTES: usize = 64;

pub const HDR_MAGIC_OFFSET: usize = 0;
pub const HDR_VERSION_OFFSET: usize = 8;
pub const HDR_HEADER_LEN_OFFSET: usize = 10;
pub const HDR_FLAGS_OFFSET: usize = 12;
pub const HDR_FILE_ID_OFFSET: usize = 16;
pub const HDR_BASE_SEQ_OFFSET: usize = 24;
pub const HDR_CREATED_MS_OFFSET: usize = 32;
/// `u64`: in a recycled segment (flag [`SEGMENT_FLAG_RECYCLED`]), the file
/// id of the segment whose frames the file held before; 0 otherwise.
pub const HDR_RECYCLED_FROM_OFFSET: usize = 40;
/// Bytes 48..60 are reserved and must be zero.
pub const HDR_RESERVED_OFFSET: usize = 48;
/// CRC-32 (IEEE, crc32fast) of header bytes `0..HDR_CRC_OFFSET`.
pub const HDR_CRC_OFFSET: usize = 60;

/// Header flag: the file is a recycled segment. The bytes after its data are
/// not zeros but the frames of the segment it was before (another file id,
/// so none passes a checksum here); the writer ends every write with
/// [`RECYCLED_END_MARKER_BYTES`] zeros, so that the end of data still reads
/// as the all-zero frame header.
pub const SEGMENT_FLAG_RECYCLED: u32 = 0x1;
/// Header flags this version knows; a header with others is refused.
pub const SEGMENT_FLAGS_KNOWN: u32 = SEGMENT_FLAG_RECYCLED;

// ---------------------------------------------------------------------------
// Recycled segment files
// ---------------------------------------------------------------------------

/// A sealed segment that retention removes is kept for reuse under
/// `<base:020>.free` (its old base) instead of being unlinked, while the
/// log holds fewer than `LogOptions::recycle_segments_max` such files.
/// Reusing one writes into allocated, written blocks: its syncs convert no
/// extents and journal no allocation.
pub const RECYCLED_FILE_SUFFIX: &str = ".free";
/// Zeros written after the frames of every write into a recycled segment:
/// one frame header's worth, which is what ends the data (see
/// `frame::decode`). The next write starts over them.
pub const RECYCLED_END_MARKER_BYTES: usize = FRAME_HEADER_BYTES;
/// The most recycled files a log may keep (a limit on the setting).
pub const RECYCLE_SEGMENTS_LIMIT: usize = 16;

// ---------------------------------------------------------------------------
// Record frame
// ---------------------------------------------------------------------------

/// Fixed part of every record frame; the partition key and the data follow.
pub const FRAME_HEADER_BYTES: usize = 40;

/// CRC-32 over: the segment's file id (8 bytes, little-endian, not stored in
/// the frame), then frame bytes `FRAME_LEN_OFFSET..frame_len`. The file id
/// takes part so that bytes left over from an older file never validate.
pub const FRAME_CRC_OFFSET: usize = 0;
/// Total frame length in bytes (header + key + data); 0 only in the all-zero
/// end-of-data marker.
pub const FRAME_LEN_OFFSET: usize = 4;
/// The record's sequence number (a shard-local position, `u64`).
pub const FRAME_SEQ_OFFSET: usize = 8;
/// Arrival time in milliseconds since the Unix epoch (`i64`).
pub const FRAME_ARRIVAL_MS_OFFSET: usize = 16;
/// The file offset up to which this segment was known durable (fdatasync
/// completed) when this frame was written (`u32`). Recovery uses it to tell a
/// torn, never-acknowledged tail from corruption of acknowledged data.
pub const FRAME_SYNCED_UPTO_OFFSET: usize = 24;
/// Length of the partition key (`u16`).
pub const FRAME_KEY_LEN_OFFSET: usize = 28;
/// Record flags (`u16`); unknown bits are rejected. See [`FRAME_FLAGS_KNOWN`].
pub const FRAME_FLAGS_OFFSET: usize = 30;
/// Length of the data blob (`u32`).
pub const FRAME_DATA_LEN_OFFSET: usize = 32;
/// Bytes 36..40 are reserved and must be zero.
pub const FRAME_RESERVED_OFFSET: usize = 36;

/// Flag bit: the data blob is opaque to the segment layer but was transformed
/// by an upper layer (for example, encrypted). The segment layer stores it.
pub const FRAME_FLAG_TRANSFORMED: u16 = 0x0001;
/// All flag bits this version understands.
pub const FRAME_FLAGS_KNOWN: u16 = FRAME_FLAG_TRANSFORMED;

// ---------------------------------------------------------------------------
// Limits
// ---------------------------------------------------------------------------

/// Partition keys are 1 to 256 Unicode characters in Kinesis, so up to 1024
/// bytes of UTF-8; the stream layer checks the character count.
pub const PARTITION_KEY_BYTES_MIN: usize = 1;
pub const PARTITION_KEY_BYTES_MAX: usize = 1024;
/// Default maximum data blob size (Kinesis' default of 1 MiB).
pub const RECORD_DATA_BYTES_DEFAULT_MAX: usize = 1024 * 1024;
/// Room above Kinesis's largest record for an upper layer's envelope around
/// the data (the stream layer's encryption adds 45 bytes and moves the
/// partition key inside the data).
pub const RECORD_ENVELOPE_BYTES_MAX: usize = 4 * 1024;
/// The largest configurable maximum: Kinesis's 10240 KiB plus the envelope
/// room.
pub const RECORD_DATA_BYTES_LIMIT: usize = 10 * 1024 * 1024 + RECORD_ENVELOPE_BYTES_MAX;
/// The smallest configurable maximum (Kinesis: 1024 KiB).
pub const RECORD_DATA_BYTES_LIMIT_MIN: usize = 1024 * 1024;
/// Largest possible frame.
pub const FRAME_BYTES_MAX: usize = FRAME_HEADER_BYTES + PARTITION_KEY_BYTES_MAX + RECORD_DATA_BYTES_LIMIT;

/// Default segment roll size.
pub const SEGMENT_BYTES_DEFAULT_MAX: u64 = 128 * 1024 * 1024;
/// Segments never exceed 1 GiB, so in-file offsets fit in `u32`.
pub const SEGMENT_BYTES_LIMIT: u64 = 1024 * 1024 * 1024;
/// Smallest allowed roll size (must hold at least one largest frame).
pub const SEGMENT_BYTES_LIMIT_MIN: u64 = 64 * 1024;
/// Default segment roll age: one hour.
pub const SEGMENT_AGE_DEFAULT_MAX_MS: u64 = 60 * 60 * 1000;
/// Space is reserved (fallocate) in steps of this size ahead of the writer, so
/// ENOSPC surfaces before any byte of a record is written and fdatasync does
/// not have to journal a size change on every append.
pub const SEGMENT_PREALLOCATE_BYTES: u64 = 4 * 1024 * 1024;

/// While a log's group syncs average at most this many bytes, new space is
/// zero-filled ahead of the frames, so that those syncs overwrite written
/// space instead of converting preallocated (unwritten) extents. Above it
/// the conversion is a small share of each sync and the zeros would double
/// the bytes written. Measured on ext4: 1 KiB syncs gain 15-35%, 100 KiB
/// syncs lose 35% (docs/PERFORMANCE.md).
pub const ZERO_FILL_GROUP_BYTES_MAX: u64 = 16 * 1024;
/// Zeros are written this far ahead of the frames, one to two steps at a
/// time. Recovery reads at most two steps of them per log after a crash.
pub const ZERO_FILL_STEP_BYTES: u64 = 256 * 1024;
/// While not zero-filling, the writer asks again whether it should after
/// this many bytes (a look at the group-size average, under a lock it takes
/// for each append anyway).
pub const ZERO_FILL_DECIDE_BYTES: u64 = 16 * 1024;
/// A new log's group size until it has synced: large, so that a log never
/// zero-fills before its syncs have shown they are small.
pub const GROUP_BYTES_AVG_INITIAL: u64 = 1024 * 1024;
const _: () = assert!(GROUP_BYTES_AVG_INITIAL > ZERO_FILL_GROUP_BYTES_MAX);
const _: () = assert!(SEGMENT_PREALLOCATE_BYTES.is_multiple_of(ZERO_FILL_STEP_BYTES));

/// Group syncs of at most this many bytes may share a device cache flush
/// with other logs (`LogOptions::flush_coordinator`). Small groups are
/// bound by the count of syncs, which sharing cuts; large ones by
/// bandwidth, where waiting for the next shared flush after the write-back
/// only adds to the wait (measured: 320 KiB groups in recycled files lost
/// 4-9%; docs/PERFORMANCE.md).
pub const SHARED_FLUSH_GROUP_BYTES_MAX: u64 = 64 * 1024;

/// Written pages of a log are dropped from the page cache (once synced) in
/// steps of at least this much, so that the call and the kernel's walk of
/// the cache are paid once per step rather than per group sync.
pub const CACHE_RELEASE_STEP_BYTES: u64 = 4 * 1024 * 1024;
/// Cache drops are rounded down to this page size, so that the page a step
/// ends in is dropped whole by the next step (the kernel drops whole pages
/// only). Larger pages are multiples of it.
pub const CACHE_PAGE_BYTES: u64 = 4096;
/// Sealed segments whose pages a log still drops as the window moves on;
/// older ones are dropped whole at once (a window wider than this many
/// segments).
pub const CACHE_SEALED_TRACKED_MAX: usize = 64;
const _: () = assert!(CACHE_RELEASE_STEP_BYTES.is_multiple_of(CACHE_PAGE_BYTES));

/// Upper bound on records in one append call.
pub const APPEND_RECORDS_MAX: usize = 100_000;

/// Number of segment mappings kept open by one log (LRU beyond it).
pub const MAPPED_SEGMENTS_DEFAULT_MAX: usize = 64;

/// Width of the zero-padded sequence number in segment file names; 20 digits
/// hold every `u64`.
pub const SEGMENT_FILE_NAME_DIGITS: usize = 20;
pub const SEGMENT_FILE_SUFFIX: &str = ".seg";
pub const LOCK_FILE_NAME: &str = "LOCK";

/// The marker a log leaves when it is closed cleanly: where its data ended.
/// At the next open, valid data ending before that point is damage (never a
/// torn write, since nothing was being written), so it is quarantined rather
/// than cut. The marker is removed at open, before any write.
pub const CLEAN_FILE_NAME: &str = "CLEAN";
pub const CLEAN_MAGIC: [u8; 8] = *b"SHRDLCLN";
pub const CLEAN_FORMAT_VERSION: u32 = 1;
pub const CLEAN_BYTES: usize = 40;
pub const CLEAN_MAGIC_OFFSET: usize = 0;
/// `u32` format version.
pub const CLEAN_VERSION_OFFSET: usize = 8;
/// `u64` base sequence of the active segment at close.
pub const CLEAN_BASE_SEQ_OFFSET: usize = 12;
/// `u64` file id of the active segment at close.
pub const CLEAN_FILE_ID_OFFSET: usize = 20;
/// `u64` end of valid data in the active segment at close.
pub const CLEAN_END_OFFSET: usize = 28;
/// CRC-32 of bytes `0..CLEAN_CRC_OFFSET`.
pub const CLEAN_CRC_OFFSET: usize = 36;
const _: () = assert!(CLEAN_CRC_OFFSET + 4 == CLEAN_BYTES);
const _: () = assert!(CLEAN_END_OFFSET + 8 == CLEAN_CRC_OFFSET);

// Compile-time checks of the relations between the limits.
const _: () = assert!(SEGMENT_HEADER_BYTES > HDR_CRC_OFFSET + 3);
const _: () = assert!(HDR_RECYCLED_FROM_OFFSET + 8 == HDR_RESERVED_OFFSET);
const _: () = assert!(HDR_RESERVED_OFFSET + 12 == HDR_CRC_OFFSET);
const _: () = assert!(FRAME_RESERVED_OFFSET + 4 == FRAME_HEADER_BYTES);
const _: () = assert!(SEGMENT_BYTES_LIMIT <= u32::MAX as u64);
const _: () = assert!(PARTITION_KEY_BYTES_MAX <= u16::MAX as usize);
const _: () = assert!(RECORD_DATA_BYTES_LIMIT <= u32::MAX as usize);
const _: () = assert!(RECORD_DATA_BYTES_DEFAULT_MAX <= RECORD_DATA_BYTES_LIMIT);
const _: () = assert!(SEGMENT_BYTES_DEFAULT_MAX <= SEGMENT_BYTES_LIMIT);
const _: () = assert!(SEGMENT_PREALLOCATE_BYTES <= SEGMENT_BYTES_DEFAULT_MAX);
const _: () = assert!((SEGMENT_HEADER_BYTES + FRAME_BYTES_MAX) as u64 <= SEGMENT_BYTES_LIMIT);

/// Upper bound on the bytes of one append call (frames included). A batch is
/// never split across segments, so a segment may exceed its roll size by at
/// most this much.
pub const APPEND_BYTES_MAX: usize = 64 * 1024 * 1024;
const _: () = assert!(APPEND_BYTES_MAX >= 10 * FRAME_BYTES_MAX / 2);

// ---------------------------------------------------------------------------
// The engine's journal (docs/FORMAT.md, "Journal")
// ---------------------------------------------------------------------------

/// Directory of the journal, under the engine's data directory.
pub const JOURNAL_DIR_NAME: &str = "journal";
/// The journal's two files, written in turn: a full file's logs are synced
/// (a checkpoint) before the other file is written over.
pub const JOURNAL_FILE_NAMES: [&str; 2] = ["0.journal", "1.journal"];
/// Size of each journal file, written with zeros when it is made so that
/// the journal's `fdatasync`s write data and never allocate.
pub const JOURNAL_FILE_BYTES_DEFAULT: u64 = 16 * 1024 * 1024;
/// The smallest journal file a caller may ask for (tests use small ones to
/// make checkpoints frequent).
pub const JOURNAL_FILE_BYTES_MIN: u64 = 256 * 1024;
/// Appends of more frame bytes than this sync their own segment instead:
/// large groups are bound by bandwidth, which writing them twice would halve,
/// small ones by the count of syncs, which the journal cuts.
pub const JOURNAL_WRITE_BYTES_MAX: usize = 64 * 1024;
/// Under `SyncPolicy::Always`, an append of more frame bytes than this starts
/// its write-back at once (`FileHandle::start_write_back`), so that the
/// device has its pages before the group's `fdatasync` asks for them.
/// Smaller appends go through the journal, or are too small to pay for a
/// device request each.
pub const EARLY_WRITE_BACK_BYTES_MIN: usize = 64 * 1024;
const _: () = assert!(EARLY_WRITE_BACK_BYTES_MIN >= JOURNAL_WRITE_BYTES_MAX);
/// A large append starts a write-back only once enough whole pages wait
/// for one (its own and those of the large appends before it since the
/// last call): half the log's average group sync, at least
/// `EARLY_WRITE_BACK_BYTES_MIN` and at most this. So a group's pages go to
/// the device in about two requests before its sync, not in one per
/// append. Measured with 16 embedded writers of 100 KiB (docs/PERFORMANCE.md,
/// twentieth pass): a call per append cost 0.57-0.65 CPU seconds per GiB
/// made durable with 1.4 MiB groups, this rule 0.51-0.54, at the same rate.
pub const EARLY_WRITE_BACK_STEP_BYTES_MAX: u64 = 1024 * 1024;
const _: () = assert!(EARLY_WRITE_BACK_STEP_BYTES_MAX >= EARLY_WRITE_BACK_BYTES_MIN as u64);
const _: () = assert!(EARLY_WRITE_BACK_STEP_BYTES_MAX.is_multiple_of(CACHE_PAGE_BYTES));
/// The longest segment path (relative to the data directory) an entry holds;
/// logs with longer paths sync their own segments.
pub const JOURNAL_PATH_BYTES_MAX: usize = 1024;
/// The most bytes of entries one journal sync writes; the rest of the queue
/// waits for the next.
pub const JOURNAL_BATCH_BYTES_MAX: usize = 256 * 1024;

/// Bytes of an entry's header; the segment path and then the payload follow.
pub const JOURNAL_ENTRY_HEADER_BYTES: usize = 40;
/// `u32` CRC-32 (IEEE) of the entry's bytes from `JE_PAYLOAD_LEN_OFFSET` to
/// its end (header, path and payload).
pub const JE_CRC_OFFSET: usize = 0;
/// `u32` bytes of the payload (never 0).
pub const JE_PAYLOAD_LEN_OFFSET: usize = 4;
/// `u16` bytes of the path (UTF-8, relative, no `..`).
pub const JE_PATH_LEN_OFFSET: usize = 8;
/// Bytes 10..16 are reserved and zero.
pub const JE_RESERVED_OFFSET: usize = 10;
/// `u64` generation of the file's current use: an entry of an older use
/// left after the newer entries ends the file.
pub const JE_GENERATION_OFFSET: usize = 16;
/// `u64` file id of the segment (its header's), checked before a redo.
pub const JE_FILE_ID_OFFSET: usize = 24;
/// `u64` byte offset in the segment file where the payload was written.
pub const JE_SEGMENT_OFFSET: usize = 32;
const _: () = assert!(JE_SEGMENT_OFFSET + 8 == JOURNAL_ENTRY_HEADER_BYTES);
const _: () = assert!(JOURNAL_PATH_BYTES_MAX <= u16::MAX as usize);
const _: () = assert!(
    JOURNAL_ENTRY_HEADER_BYTES + JOURNAL_PATH_BYTES_MAX + JOURNAL_WRITE_BYTES_MAX <= JOURNAL_BATCH_BYTES_MAX
);
const _: () = assert!(JOURNAL_BATCH_BYTES_MAX as u64 <= JOURNAL_FILE_BYTES_MIN);
const _: () = assert!(JOURNAL_FILE_BYTES_MIN <= JOURNAL_FILE_BYTES_DEFAULT);

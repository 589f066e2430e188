//! The one place where memory maps are made.
//!
//! Everything else in the workspace is `#![deny(unsafe_code)]`.
#![allow(unsafe_code)]

use std::fs::File;
use std::io;

use memmap2::{Mmap, MmapOptions};

/// Maps the first `len` bytes of `file` read-only.
///
/// Callers only ever read bytes below the log's visible watermark through the
/// returned map, and `len` never exceeds the file's length at the time of the
/// call.
pub(crate) fn map_read_only(file: &File, len: usize) -> io::Result<Mmap> {
    // SAFETY: memmap2 requires that the mapped file is not truncated or
    // modified underneath the map while it lives, or reads could see changed
    // bytes or fault with SIGBUS. Shardlog holds an exclusive lock on the log
    // directory (LOCK), so no other cooperating process writes these files.
    // Within the process, bytes below a segment's visible watermark are
    // immutable: appends only ever write past the end of valid data, recovery
    // truncates before any map exists, and the only later truncation (undoing a
    // failed write after ENOSPC) cuts at the end of valid data, which is at or
    // above every watermark a reader was handed. Readers never touch bytes at
    // or beyond the watermark, so no mapped byte that is read can change or
    // disappear. Retention unlinks whole files, which leaves existing maps
    // valid on Linux, or keeps a file for reuse (recycle_segments_max): every
    // map of a listed segment is registered (as a Weak) under the log's map
    // cache lock, a map of a segment retention already took off the list is
    // dropped before any byte of it is read, and a kept file is written again
    // only once every registered map of it is gone (log.rs, `Recyclable`).
    unsafe { MmapOptions::new().len(len).map(file) }
}

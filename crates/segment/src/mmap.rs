//! The one place with `unsafe` code: where memory maps are made, and the
//! one system call the storage path needs that rustix does not wrap
//! (`sync_file_range`).
//!
//! Everything else in the workspace is `#![deny(unsafe_code)]`.
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

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
    // The journal's files are mapped only by the redo at open
    // (journal.rs, `redo`): it runs before any log under its directory
    // opens, when no journal of this process writes that directory (a
    // root's journal is made after its redo; a scope redoes its own
    // directory only when its root has no journal), and it drops its maps
    // before it removes the files.
    unsafe { MmapOptions::new().len(len).map(file) }
}

/// Starts write-back of `offset..offset + len` of `file` without waiting
/// (`SYNC_FILE_RANGE_WRITE` alone): see `FileHandle::start_write_back`.
pub(crate) fn start_write_back(file: &File, offset: u64, len: u64) -> io::Result<()> {
    // Zero would mean "to the end of the file"; an empty range is nothing.
    if len == 0 {
        return Ok(());
    }
    sync_file_range(file, offset, len, libc::SYNC_FILE_RANGE_WRITE)
}

/// Writes the dirty pages of `file` from `offset` to its end to the device
/// and waits until the device has them: `sync_file_range` with
/// `WAIT_BEFORE | WRITE | WAIT_AFTER`, which waits for writeback already
/// running, writes the rest and waits for it (since Linux 5.2 in the
/// integrity mode `fdatasync` uses; before, `WAIT_BEFORE` still waited for
/// pages already under writeback), and reports a writeback error of the
/// file (errseq) as `fdatasync` would. No device cache flush and no
/// metadata: see `FileHandle::write_back` for when that is enough.
pub(crate) fn write_back_from(file: &File, offset: u64) -> io::Result<()> {
    // A length of zero means "to the end of the file".
    let flags =
        libc::SYNC_FILE_RANGE_WAIT_BEFORE | libc::SYNC_FILE_RANGE_WRITE | libc::SYNC_FILE_RANGE_WAIT_AFTER;
    sync_file_range(file, offset, 0, flags)
}

/// `sync_file_range(2)` on `offset..offset + len` of `file` (zero `len`:
/// to the end of the file).
fn sync_file_range(file: &File, offset: u64, len: u64, flags: libc::c_uint) -> io::Result<()> {
    let offset = libc::off64_t::try_from(offset)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "write-back offset too large"))?;
    let len = libc::off64_t::try_from(len)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "write-back length too large"))?;
    // SAFETY: the call takes a descriptor and three integers and touches no
    // memory of this process. The descriptor is borrowed from `file`, which
    // is open for the whole call.
    let rc = unsafe { libc::sync_file_range(file.as_raw_fd(), offset, len, flags) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

//! Errors of the segment layer.
//!
//! Corruption is kept apart from I/O failure: the first means bytes on disk are
//! wrong (and says where), the second that the operating system refused an
//! operation. `Poisoned` is sticky: after a failed write or fsync nothing is
//! retried until the log is reopened and recovered from what is on disk.

use std::io;
use std::path::PathBuf;

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the segment layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The operating system failed an operation on a file.
    #[error("I/O error during {op} on {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// Bytes on disk fail their checksum or violate the format.
    #[error("corruption in {} at byte offset {offset}: {reason}; the log is readable up to this point, run verify and restore this file from a replica or backup", path.display())]
    Corruption {
        path: PathBuf,
        offset: u64,
        reason: String,
    },

    /// Recovery under the `Strict` policy found an incomplete tail.
    #[error("torn tail in {} at byte offset {offset} ({reason}); the Strict recovery policy refuses to truncate it, reopen with TolerateTornTail to drop the unacknowledged tail", path.display())]
    TornTail {
        path: PathBuf,
        offset: u64,
        reason: String,
    },

    /// An earlier write or fsync failed; the writer refuses all appends until
    /// the log is reopened (fsync is never retried as if nothing happened).
    #[error("log writer is poisoned by an earlier failure ({cause}); reopen the log to recover from what is on disk")]
    Poisoned { cause: String },

    /// The device is full. Nothing was written; retry once space is freed.
    #[error("no space left on device while writing {}; nothing was written, free space and retry", path.display())]
    NoSpace { path: PathBuf },

    /// A record's data blob is larger than the configured maximum.
    #[error("record data is {len} bytes, larger than the maximum of {max} bytes")]
    DataTooLarge { len: usize, max: usize },

    /// A partition key is empty, too long or not UTF-8.
    #[error("partition key is invalid: {reason} (must be 1 to 1024 bytes of UTF-8)")]
    InvalidPartitionKey { reason: String },

    /// An argument is out of its allowed range.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// Another process (or another open handle) holds the directory's lock.
    #[error("log directory {} is locked by another process; stop it or point to another data directory", path.display())]
    Locked { path: PathBuf },

    /// The log was opened read-only because corruption was found in acknowledged
    /// data; appends are refused.
    #[error("log {} is quarantined (read-only) because of corruption at {} offset {offset}", dir.display(), file.display())]
    Quarantined {
        dir: PathBuf,
        file: PathBuf,
        offset: u64,
    },

    /// A sequence number was asked for that the log does not hold.
    #[error("sequence number {seq} is outside the log (first {first}, next {next})")]
    SequenceOutOfRange { seq: u64, first: u64, next: u64 },
}

impl Error {
    /// Wraps an `io::Error`, turning ENOSPC into [`Error::NoSpace`].
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Error {
        let path = path.into();
        if is_no_space(&source) {
            return Error::NoSpace { path };
        }
        Error::Io { op, path, source }
    }

    /// Whether the caller may retry the same operation later (disk full).
    pub fn is_retriable(&self) -> bool {
        matches!(self, Error::NoSpace { .. })
    }

    /// Whether this error reports bad bytes on disk.
    pub fn is_corruption(&self) -> bool {
        matches!(
            self,
            Error::Corruption { .. } | Error::TornTail { .. } | Error::Quarantined { .. }
        )
    }

    pub(crate) fn corruption(path: impl Into<PathBuf>, offset: u64, reason: impl Into<String>) -> Error {
        Error::Corruption {
            path: path.into(),
            offset,
            reason: reason.into(),
        }
    }
}

/// ENOSPC (and EDQUOT, which users experience the same way).
pub(crate) fn is_no_space(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    ) || e.raw_os_error() == Some(28)
}

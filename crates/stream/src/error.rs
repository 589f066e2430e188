//! Errors of the stream engine. Each variant corresponds to a Kinesis error
//! name (see [`Error::kinesis_name`]); messages follow Kinesis's wording so the
//! server can pass them through unchanged.

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `ResourceNotFoundException`.
    #[error("{0}")]
    ResourceNotFound(String),
    /// `ResourceInUseException`.
    #[error("{0}")]
    ResourceInUse(String),
    /// `InvalidArgumentException`.
    #[error("{0}")]
    InvalidArgument(String),
    /// `LimitExceededException`.
    #[error("{0}")]
    LimitExceeded(String),
    /// `ExpiredIteratorException`.
    #[error("{0}")]
    ExpiredIterator(String),
    /// `ProvisionedThroughputExceededException` (per-shard limits, when
    /// enforced).
    #[error("{0}")]
    ProvisionedThroughputExceeded(String),
    /// A compare-and-set on a checkpoint found another value.
    #[error("checkpoint for application {application} on shard {shard_id} is {current:?}, not the expected {expected:?}")]
    CheckpointConflict {
        application: String,
        shard_id: String,
        current: Option<String>,
        expected: Option<String>,
    },
    /// A key for encryption at rest is missing, disabled or unusable; `kind`
    /// is the KMS error name Kinesis returns (`KMSNotFoundException`, ...).
    #[error("{message}")]
    Kms { kind: &'static str, message: String },
    /// A consumer-group checkpoint from a worker that no longer holds the
    /// shard's lease (`LeaseLostException` in the groups API).
    #[error("{0}")]
    LeaseLost(String),
    /// The storage layer failed (`InternalFailure` at the API).
    #[error(transparent)]
    Storage(#[from] shardlog_segment::Error),
    /// Metadata on disk could not be read or written.
    #[error("metadata error in {path}: {reason}")]
    Metadata { path: String, reason: String },
}

impl Error {
    /// A consumer that is not there (or not the one an ARN names), in
    /// Kinesis's words.
    pub fn consumer_not_found(account: &str, stream: &str, consumer: &str) -> Error {
        Error::ResourceNotFound(format!(
            "Consumer {consumer} under stream {stream} not found for account {account}."
        ))
    }

    /// The Kinesis error name for this error.
    pub fn kinesis_name(&self) -> &'static str {
        match self {
            Error::ResourceNotFound(_) => "ResourceNotFoundException",
            Error::ResourceInUse(_) => "ResourceInUseException",
            Error::InvalidArgument(_) => "InvalidArgumentException",
            Error::LimitExceeded(_) => "LimitExceededException",
            Error::ExpiredIterator(_) => "ExpiredIteratorException",
            Error::ProvisionedThroughputExceeded(_) => "ProvisionedThroughputExceededException",
            Error::CheckpointConflict { .. } => "ResourceInUseException",
            Error::Kms { kind, .. } => kind,
            Error::LeaseLost(_) => "LeaseLostException",
            Error::Storage(e) if e.is_retriable() => "ProvisionedThroughputExceededException",
            Error::Storage(_) | Error::Metadata { .. } => "InternalFailure",
        }
    }

    /// Whether the caller is at fault (HTTP 400) rather than the server (500).
    pub fn is_client_error(&self) -> bool {
        !matches!(self.kinesis_name(), "InternalFailure")
    }

    pub(crate) fn meta(path: &std::path::Path, reason: impl std::fmt::Display) -> Error {
        Error::Metadata {
            path: path.display().to_string(),
            reason: reason.to_string(),
        }
    }
}

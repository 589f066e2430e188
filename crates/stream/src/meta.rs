//! Durable metadata: what the engine knows about streams, shards, consumers
//! and checkpoints, as JSON files replaced atomically (temporary file, fsync,
//! rename, fsync of the directory), so a crash leaves the old or the new
//! state and never a mix.
//!
//! Layout of a data directory (see docs/FORMAT.md):
//!
//! ```text
//! ENGINE.json                       engine metadata (next stream id, iterator key)
//! LOCK                              one process at a time
//! streams/<id:016>/STREAM.json      a stream, its shards, lineage, consumers
//! streams/<id:016>/CHECKPOINTS.json per (application, shard) checkpoints
//! streams/<id:016>/shards/<index:012>/  the shard's segment log
//! ```
//!
//! Directory names are numeric ids, never user input, so no stream name can
//! reach outside the data directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use shardlog_segment::fs::{read_all, write_atomic, FileSystem};
use shardlog_segment::SyncPolicy;

use crate::error::{Error, Result};
use crate::hashkey::HashRange;

pub const ENGINE_FILE: &str = "ENGINE.json";
pub const STREAM_FILE: &str = "STREAM.json";
pub const CHECKPOINTS_FILE: &str = "CHECKPOINTS.json";
pub const STREAMS_DIR: &str = "streams";
pub const SHARDS_DIR: &str = "shards";
pub const META_FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EngineMeta {
    pub version: u32,
    pub next_stream_id: u64,
    /// Key that authenticates shard iterators (hex), so they survive restarts
    /// but cannot be forged by accident.
    pub iterator_key: String,
    /// Account-level settings stored for the API layer.
    #[serde(default)]
    pub settings: BTreeMap<String, serde_json::Value>,
    /// Material (hex) of this data directory's managed encryption key
    /// (`alias/aws/kinesis`), made on first open.
    #[serde(default)]
    pub managed_key: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StreamMode {
    Provisioned,
    OnDemand,
}

impl StreamMode {
    pub fn as_str(&self) -> &'static str {
        match self {
            StreamMode::Provisioned => "PROVISIONED",
            StreamMode::OnDemand => "ON_DEMAND",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardMeta {
    pub index: u64,
    pub generation: u64,
    pub range: HashRange,
    pub parent: Option<u64>,
    pub adjacent_parent: Option<u64>,
    pub created_ms: i64,
    /// Set when the shard was closed by a split or merge.
    pub closed: Option<ClosedMeta>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClosedMeta {
    /// One past the position of the shard's last record.
    pub end_next_position: u64,
    pub closed_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumerMeta {
    pub name: String,
    pub created_ms: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StreamMeta {
    pub version: u32,
    pub id: u64,
    pub name: String,
    pub created_ms: i64,
    pub retention_hours: u32,
    pub mode: StreamMode,
    pub tags: BTreeMap<String, String>,
    pub shards: Vec<ShardMeta>,
    pub next_shard_index: u64,
    pub consumers: Vec<ConsumerMeta>,
    /// Durability of this stream's appends.
    pub sync: SyncPolicy,
    /// Largest record (data plus partition key) accepted, in bytes.
    pub max_record_bytes: usize,
    /// Optional cap on the bytes the stream keeps on disk.
    pub retention_bytes_max: Option<u64>,
    /// Times (ms) of recent UpdateShardCount calls, for the 24-hour limit.
    #[serde(default)]
    pub scaling_ops_ms: Vec<i64>,
    /// Times (ms) of recent capacity-mode switches, for the 24-hour limit.
    #[serde(default)]
    pub mode_updates_ms: Vec<i64>,
    /// Settings the engine stores for the API layer without interpreting
    /// them (enhanced monitoring, resource policies, warm throughput, ...).
    #[serde(default)]
    pub settings: BTreeMap<String, serde_json::Value>,
    /// Encryption of new records (StartStreamEncryption); `None`: plaintext.
    #[serde(default)]
    pub encryption: Option<EncryptionMeta>,
    /// Canonical ids of every key records of this stream were sealed with;
    /// an envelope's slot indexes this list, which only ever grows.
    #[serde(default)]
    pub encryption_keys: Vec<String>,
}

/// The key new records of a stream are sealed with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncryptionMeta {
    /// The KeyId as the client gave it (shown by DescribeStream).
    pub key_id: String,
    /// Index into [`StreamMeta::encryption_keys`].
    pub slot: u16,
}

impl StreamMeta {
    pub fn shard(&self, index: u64) -> Option<&ShardMeta> {
        self.shards.iter().find(|s| s.index == index)
    }

    pub fn shard_mut(&mut self, index: u64) -> Option<&mut ShardMeta> {
        self.shards.iter_mut().find(|s| s.index == index)
    }
}

/// `application -> shard id -> sequence number`.
pub type Checkpoints = BTreeMap<String, BTreeMap<String, String>>;

pub fn streams_dir(root: &Path) -> PathBuf {
    root.join(STREAMS_DIR)
}

pub fn stream_dir(root: &Path, id: u64) -> PathBuf {
    streams_dir(root).join(format!("{id:016}"))
}

pub fn shard_dir(stream_dir: &Path, index: u64) -> PathBuf {
    stream_dir.join(SHARDS_DIR).join(format!("{index:012}"))
}

/// Metadata files end with a line `#crc32:<8 hex digits>` over the JSON
/// before it: JSON has no checksum of its own, and a flipped digit in a hash
/// range or a retention period would otherwise parse as valid.
pub const META_CRC_PREFIX: &str = "\n#crc32:";

pub fn store<T: Serialize>(fs: &dyn FileSystem, path: &Path, value: &T) -> Result<()> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|e| Error::meta(path, e))?;
    let crc = crc32fast::hash(&bytes);
    bytes.extend_from_slice(format!("{META_CRC_PREFIX}{crc:08x}\n").as_bytes());
    write_atomic(fs, path, &bytes)
        .map_err(|e| Error::Storage(shardlog_segment::Error::io("write metadata", path, e)))
}

/// Splits a metadata file into its JSON and checks the trailer. Files
/// written before the trailer existed (no trailer) are accepted as they are.
pub fn verify_meta_bytes(bytes: &[u8]) -> std::result::Result<&[u8], String> {
    let Some(at) = bytes
        .windows(META_CRC_PREFIX.len())
        .rposition(|w| w == META_CRC_PREFIX.as_bytes())
    else {
        return Ok(bytes);
    };
    let (json, trailer) = bytes.split_at(at);
    let hex = std::str::from_utf8(&trailer[META_CRC_PREFIX.len()..])
        .map_err(|_| "checksum trailer is not text".to_string())?
        .trim();
    let want = u32::from_str_radix(hex, 16).map_err(|_| format!("checksum trailer {hex:?} is not hex"))?;
    let got = crc32fast::hash(json);
    if got != want {
        return Err(format!(
            "checksum mismatch (stored {want:08x}, computed {got:08x}): the file is damaged; restore it from a backup"
        ));
    }
    Ok(json)
}

pub fn load<T: for<'de> Deserialize<'de>>(fs: &dyn FileSystem, path: &Path) -> Result<T> {
    let bytes = read_all(fs, path)
        .map_err(|e| Error::Storage(shardlog_segment::Error::io("read metadata", path, e)))?;
    let json = verify_meta_bytes(&bytes).map_err(|e| Error::meta(path, e))?;
    serde_json::from_slice(json).map_err(|e| Error::meta(path, format!("cannot parse: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_flipped_digit_in_metadata_is_caught() {
        let fs = shardlog_segment::StdFs;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.json");
        store(&fs, &path, &serde_json::json!({"retention_hours": 24})).unwrap();
        let v: serde_json::Value = load(&fs, &path).unwrap();
        assert_eq!(v["retention_hours"], 24);
        let mut bytes = std::fs::read(&path).unwrap();
        let at = bytes.iter().position(|b| *b == b'4').unwrap();
        bytes[at] = b'6';
        std::fs::write(&path, &bytes).unwrap();
        let err = load::<serde_json::Value>(&fs, &path).unwrap_err();
        assert!(err.to_string().contains("checksum mismatch"), "{err}");
    }

    proptest! {
        #[test]
        fn checking_any_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256), tail in "[0-9a-z\\n#:]{0,20}") {
            let mut b = bytes;
            b.extend_from_slice(tail.as_bytes());
            let _ = verify_meta_bytes(&b);
        }
    }
}

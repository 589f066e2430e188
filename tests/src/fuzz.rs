//! Bodies of the fuzz targets in `fuzz/`, as plain functions so that the
//! stable test `tests/tests/fuzz_corpus.rs` runs exactly the same code over
//! the seed corpus and random inputs.
//!
//! Every body takes arbitrary bytes, must return without panicking, and
//! asserts the invariants of a successful decode (a decoded value re-encodes
//! to the bytes it came from, nothing whose checksum fails is returned, ...).
//!
//! Inputs that carry a checksum start with a control byte. When its low bit
//! is set, the body recomputes the checksum before decoding, so the fuzzer
//! explores the code behind the checksum instead of stopping at it; with the
//! bit clear the bytes are decoded as they are.

use std::path::Path;
use std::sync::Arc;

use base64::Engine as _;
use byteorder::{ByteOrder, LittleEndian};
use serde_json::Value;

use shardlog_index::format as idx_fmt;
use shardlog_index::SparseIndex;
use shardlog_segment::format as seg_fmt;
use shardlog_segment::frame::{self, Decoded};
use shardlog_segment::segment::{parse_segment_file_name, segment_file_name, SegmentHeader};
use shardlog_segment::{FileSystem, LogOptions, ReadLimits, RecordIn, RecoveryPolicy, SyncPolicy};
use shardlog_server::protocol::{self, Format};
use shardlog_stream::iterator::{IteratorToken, ITERATOR_TTL_MS};
use shardlog_stream::meta::{self, Checkpoints, EngineMeta, StreamMeta};
use shardlog_testkit::MemFs;

/// A fuzz target: a name (also the corpus directory) and its body.
pub type Target = (&'static str, fn(&[u8]));

/// Every target, by name.
pub const TARGETS: &[Target] = &[
    ("segment_frame", segment_frame),
    ("segment_header", segment_header),
    ("segment_log", segment_log),
    ("index_sidecar", index_sidecar),
    ("stream_metadata", stream_metadata),
    ("iterator_token", iterator_token),
    ("request_json", request_json),
    ("request_cbor", request_cbor),
];

fn split_u64(data: &[u8]) -> Option<(u64, &[u8])> {
    let head = data.get(..8)?;
    Some((LittleEndian::read_u64(head), &data[8..]))
}

// ---------------------------------------------------------------------------
// Segment frames
// ---------------------------------------------------------------------------

/// Writes the right CRC into the frame at `pos` when its length field is
/// consistent enough to say which bytes it covers.
fn fix_frame_crc(buf: &mut [u8], pos: usize, file_id: u64) {
    let Some(h) = buf.get(pos..pos + seg_fmt::FRAME_HEADER_BYTES) else {
        return;
    };
    let total = LittleEndian::read_u32(&h[seg_fmt::FRAME_LEN_OFFSET..]) as usize;
    if total < seg_fmt::FRAME_HEADER_BYTES || pos + total > buf.len() {
        return;
    }
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&file_id.to_le_bytes());
    hasher.update(&buf[pos + seg_fmt::FRAME_LEN_OFFSET..pos + total]);
    let crc = hasher.finalize();
    LittleEndian::write_u32(&mut buf[pos + seg_fmt::FRAME_CRC_OFFSET..], crc);
}

/// `[control][file id: u64][segment bytes...]`: decodes frames one after
/// another from the position the control byte picks. A decoded frame must
/// re-encode to exactly its bytes and fail its checksum under any other file
/// id; an end marker must be zeros.
pub fn segment_frame(data: &[u8]) {
    let Some((&ctl, rest)) = data.split_first() else {
        return;
    };
    let Some((file_id, bytes)) = split_u64(rest) else {
        return;
    };
    let fix = ctl & 1 != 0;
    let mut buf = bytes.to_vec();
    // Positions past the end are allowed and must be reported as invalid.
    let mut pos = (ctl >> 1) as usize % (buf.len() + 2);
    loop {
        if fix {
            fix_frame_crc(&mut buf, pos, file_id);
        }
        match frame::decode(&buf, pos, file_id) {
            Decoded::Record(r) => {
                let total = r.frame_len as usize;
                assert_eq!(r.offset, pos as u64);
                assert_eq!(total, frame::frame_len(r.partition_key.len(), r.data.len()));
                assert!(pos + total <= buf.len());
                assert!(
                    (seg_fmt::PARTITION_KEY_BYTES_MIN..=seg_fmt::PARTITION_KEY_BYTES_MAX)
                        .contains(&r.partition_key.len())
                );
                assert!(r.data.len() <= seg_fmt::RECORD_DATA_BYTES_LIMIT);
                assert_eq!(r.flags & !seg_fmt::FRAME_FLAGS_KNOWN, 0);
                let synced = LittleEndian::read_u32(&buf[pos + seg_fmt::FRAME_SYNCED_UPTO_OFFSET..]);
                let rec = RecordIn {
                    partition_key: r.partition_key,
                    data: r.data,
                    arrival_ms: r.arrival_ms,
                    flags: r.flags,
                };
                assert!(frame::validate(&rec, seg_fmt::RECORD_DATA_BYTES_LIMIT).is_ok());
                let mut again = Vec::with_capacity(total);
                frame::encode(&mut again, file_id, r.seq, synced, &rec);
                assert_eq!(
                    again,
                    &buf[pos..pos + total],
                    "a decoded frame re-encodes to its bytes"
                );
                // A CRC-32 detects every single-bit change of its input, so the
                // frame cannot validate under a file id one bit away.
                assert!(!matches!(
                    frame::decode(&buf, pos, file_id ^ 1),
                    Decoded::Record(_)
                ));
                pos += total;
            }
            Decoded::End => {
                let end = buf.len().min(pos + seg_fmt::FRAME_HEADER_BYTES);
                assert!(buf[pos..end].iter().all(|&b| b == 0), "end marker is zeros");
                return;
            }
            Decoded::Invalid(_) => return,
        }
    }
}

// ---------------------------------------------------------------------------
// Segment headers and names
// ---------------------------------------------------------------------------

/// `[control][header bytes...]`. A decoded header re-encodes to the same
/// fields; with zero flags and reserved bytes, to the same bytes.
pub fn segment_header(data: &[u8]) {
    if let Ok(name) = std::str::from_utf8(data) {
        if let Some(base) = parse_segment_file_name(name) {
            assert_eq!(segment_file_name(base), name);
        }
    }
    let Some((&ctl, bytes)) = data.split_first() else {
        return;
    };
    let mut buf = bytes.to_vec();
    if ctl & 1 != 0 && buf.len() >= seg_fmt::SEGMENT_HEADER_BYTES {
        let crc = crc32fast::hash(&buf[..seg_fmt::HDR_CRC_OFFSET]);
        LittleEndian::write_u32(&mut buf[seg_fmt::HDR_CRC_OFFSET..], crc);
    }
    let Ok(h) = SegmentHeader::decode(&buf) else {
        return;
    };
    let encoded = h.encode();
    assert_eq!(SegmentHeader::decode(&encoded), Ok(h));
    let read = &buf[..seg_fmt::SEGMENT_HEADER_BYTES];
    // The reserved bytes are covered by the CRC but not interpreted
    // (docs/FORMAT.md); everything before them, the flags and the recycled
    // file's older id included, must match byte for byte.
    assert_eq!(
        read[..seg_fmt::HDR_RESERVED_OFFSET],
        encoded[..seg_fmt::HDR_RESERVED_OFFSET]
    );
    let uninterpreted_zero = read[seg_fmt::HDR_RESERVED_OFFSET..seg_fmt::HDR_CRC_OFFSET]
        .iter()
        .all(|&b| b == 0);
    if uninterpreted_zero {
        assert_eq!(read, &encoded[..]);
    }
}

// ---------------------------------------------------------------------------
// A whole segment through recovery
// ---------------------------------------------------------------------------

/// `[control][segment file...]`: the file becomes the only segment of a log
/// on an in-memory file system, which is opened (recovery), read to its end
/// and verified. With the control bit set the header is made valid and
/// every frame's CRC fixed, so recovery sees structurally valid logs.
pub fn segment_log(data: &[u8]) {
    let Some((&ctl, bytes)) = data.split_first() else {
        return;
    };
    let mut buf = bytes.to_vec();
    if ctl & 1 != 0 && buf.len() >= seg_fmt::SEGMENT_HEADER_BYTES {
        buf[..8].copy_from_slice(&seg_fmt::SEGMENT_MAGIC);
        LittleEndian::write_u16(
            &mut buf[seg_fmt::HDR_VERSION_OFFSET..],
            seg_fmt::SEGMENT_FORMAT_VERSION,
        );
        LittleEndian::write_u16(
            &mut buf[seg_fmt::HDR_HEADER_LEN_OFFSET..],
            seg_fmt::SEGMENT_HEADER_BYTES as u16,
        );
        LittleEndian::write_u64(&mut buf[seg_fmt::HDR_BASE_SEQ_OFFSET..], 0);
        let crc = crc32fast::hash(&buf[..seg_fmt::HDR_CRC_OFFSET]);
        LittleEndian::write_u32(&mut buf[seg_fmt::HDR_CRC_OFFSET..], crc);
        let file_id = LittleEndian::read_u64(&buf[seg_fmt::HDR_FILE_ID_OFFSET..]);
        let mut pos = seg_fmt::SEGMENT_HEADER_BYTES;
        while pos + seg_fmt::FRAME_HEADER_BYTES <= buf.len() {
            fix_frame_crc(&mut buf, pos, file_id);
            match frame::decode(&buf, pos, file_id) {
                Decoded::Record(r) => pos += r.frame_len as usize,
                _ => break,
            }
        }
    }
    let fs = MemFs::new();
    let dir = Path::new("/log");
    if fs.create_dir_all(dir).is_err() {
        return;
    }
    let path = dir.join(segment_file_name(0));
    let Ok(file) = fs.create_new(&path) else {
        return;
    };
    if file.write_all_at(&buf, 0).is_err() || fs.sync_filesystem(dir).is_err() {
        return;
    }
    drop(file);
    let opts = LogOptions {
        sync: SyncPolicy::Never,
        recovery: if ctl & 2 != 0 {
            RecoveryPolicy::Strict
        } else {
            RecoveryPolicy::TolerateTornTail
        },
        preallocate_bytes: 4096,
        ..LogOptions::default()
    };
    let Ok((log, _report)) = shardlog_segment::Log::open_with(
        Arc::new(fs.clone()),
        dir,
        opts,
        Arc::new(shardlog_segment::NoObserver),
    ) else {
        return;
    };
    // Read every visible record: sequence numbers run on by one, and every
    // record read is a valid frame of the file's id.
    let first = log.first_seq();
    let mut pos = match log.segment_start(first) {
        Ok(p) => p,
        Err(_) => return,
    };
    let mut seq = first;
    for _ in 0..buf.len() + 1 {
        let Ok(batch) = log.read_at(
            pos,
            seq,
            ReadLimits {
                max_records: 64,
                max_bytes: 1 << 20,
            },
        ) else {
            break;
        };
        for r in batch.iter() {
            assert_eq!(r.seq, seq, "records run on by one");
            seq += 1;
            let bytes = batch.segment().bytes();
            let start = r.offset as usize;
            assert!(matches!(
                frame::decode(bytes, start, batch.segment().file_id()),
                Decoded::Record(x) if x == r
            ));
        }
        if batch.is_empty() && batch.next == pos {
            break;
        }
        pos = batch.next;
        seq = batch.next_seq;
    }
    assert!(seq <= log.visible_next_seq());
    let _ = log.verify();
    // A log that recovery accepted takes appends, numbered on from its end.
    if log.health().is_ok() {
        let next = log.next_seq();
        if let Ok(a) = log.append(&[RecordIn::new("k", b"after recovery", 1)]) {
            assert_eq!((a.first_seq, a.count), (next, 1));
            assert_eq!(log.next_seq(), next + 1);
        }
    }
}

// ---------------------------------------------------------------------------
// Index sidecars
// ---------------------------------------------------------------------------

/// `[control][sidecar bytes...]`. A decoded index has strictly increasing
/// entries, decodes again from its own encoding, and re-encodes to the same
/// bytes when the (uninterpreted) flags are zero.
pub fn index_sidecar(data: &[u8]) {
    let Some((&ctl, bytes)) = data.split_first() else {
        return;
    };
    let mut buf = bytes.to_vec();
    if ctl & 1 != 0 && buf.len() >= idx_fmt::IDX_HEADER_BYTES + idx_fmt::IDX_CRC_BYTES {
        let crc_at = buf.len() - idx_fmt::IDX_CRC_BYTES;
        let crc = crc32fast::hash(&buf[..crc_at]);
        LittleEndian::write_u32(&mut buf[crc_at..], crc);
    }
    let Ok(idx) = SparseIndex::decode(&buf) else {
        return;
    };
    assert_eq!(
        buf.len(),
        idx_fmt::IDX_HEADER_BYTES + idx.entries.len() * idx_fmt::IDX_ENTRY_BYTES + idx_fmt::IDX_CRC_BYTES
    );
    for w in idx.entries.windows(2) {
        assert!(w[0].seq < w[1].seq && w[0].offset < w[1].offset && w[0].arrival_ms <= w[1].arrival_ms);
    }
    for e in &idx.entries {
        assert!(e.seq >= idx.base_seq && e.seq - idx.base_seq <= u32::MAX as u64);
    }
    let encoded = idx.encode();
    assert_eq!(SparseIndex::decode(&encoded).as_ref(), Ok(&idx));
    let flags = LittleEndian::read_u16(&buf[idx_fmt::IDX_FLAGS_OFFSET..]);
    if flags == 0 {
        assert_eq!(encoded, buf, "a decoded index re-encodes to its bytes");
    }
    // Lookups answer with an entry at or before what was asked.
    let probes = [0, idx.base_seq, idx.end_seq, u64::MAX]
        .into_iter()
        .chain(idx.entries.iter().map(|e| e.seq));
    for seq in probes {
        if let Some(e) = idx.floor_seq(seq) {
            assert!(e.seq <= seq);
        }
    }
    for ts in [i64::MIN, 0, idx.max_arrival_ms, i64::MAX] {
        let _ = idx.floor_time(ts);
    }
}

// ---------------------------------------------------------------------------
// Stream metadata
// ---------------------------------------------------------------------------

/// An ENGINE.json an engine opens (seed corpus and fixtures).
pub const VALID_ENGINE_JSON: &str = r#"{"version":1,"next_stream_id":2,"iterator_key":"00112233445566778899aabbccddeeff","managed_key":"000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"}"#;
/// A STREAM.json of stream 1 with one open shard.
pub const VALID_STREAM_JSON: &str = r#"{"version":1,"id":1,"name":"s","created_ms":1700000000000,"retention_hours":24,"mode":"PROVISIONED","tags":{},"shards":[{"index":0,"generation":1,"range":{"start":"0","end":"340282366920938463463374607431768211455"},"parent":null,"adjacent_parent":null,"created_ms":1700000000000,"closed":null}],"next_shard_index":1,"consumers":[],"sync":"Always","max_record_bytes":1048576,"retention_bytes_max":null}"#;

fn load_and_restore<T>(fs: &MemFs, path: &Path)
where
    T: serde::Serialize + for<'de> serde::Deserialize<'de>,
{
    let Ok(value) = meta::load::<T>(fs, path) else {
        return;
    };
    let first = serde_json::to_value(&value).expect("loaded metadata serializes");
    let again = Path::new("/again.json");
    meta::store(fs, again, &value).expect("in-memory store succeeds");
    let reloaded = meta::load::<T>(fs, again).expect("stored metadata loads again");
    let second = serde_json::to_value(&reloaded).expect("reloaded metadata serializes");
    assert!(
        json_eq(&first, &second, None, false),
        "metadata survives a store and a load"
    );
}

fn put_file(fs: &MemFs, path: &Path, bytes: &[u8]) -> bool {
    if let Some(parent) = path.parent() {
        if fs.create_dir_all(parent).is_err() {
            return false;
        }
    }
    shardlog_segment::fs::write_atomic(fs, path, bytes).is_ok()
}

/// `[control][JSON...]`. Every metadata type is loaded from the JSON (and a
/// loaded value must store and load back to itself); then, by the control
/// byte, the JSON becomes ENGINE.json, a stream's STREAM.json or its
/// CHECKPOINTS.json of a data directory that an engine opens and describes.
pub fn stream_metadata(data: &[u8]) {
    let Some((&ctl, json)) = data.split_first() else {
        return;
    };
    let fs = MemFs::new();
    let probe = Path::new("/probe.json");
    if !put_file(&fs, probe, json) {
        return;
    }
    load_and_restore::<EngineMeta>(&fs, probe);
    load_and_restore::<StreamMeta>(&fs, probe);
    load_and_restore::<Checkpoints>(&fs, probe);

    let root = Path::new("/data");
    let sdir = meta::stream_dir(root, 1);
    let (engine, stream, checkpoints): (&[u8], &[u8], Option<&[u8]>) = match ctl % 3 {
        0 => (json, VALID_STREAM_JSON.as_bytes(), None),
        1 => (VALID_ENGINE_JSON.as_bytes(), json, None),
        _ => (
            VALID_ENGINE_JSON.as_bytes(),
            VALID_STREAM_JSON.as_bytes(),
            Some(json),
        ),
    };
    if !put_file(&fs, &root.join(meta::ENGINE_FILE), engine)
        || !put_file(&fs, &sdir.join(meta::STREAM_FILE), stream)
    {
        return;
    }
    if let Some(c) = checkpoints {
        if !put_file(&fs, &sdir.join(meta::CHECKPOINTS_FILE), c) {
            return;
        }
    }
    let opts = shardlog_stream::EngineOptions {
        retention_check_interval_ms: 0,
        share_syncs_across_shards: false,
        log: LogOptions {
            preallocate_bytes: 4096,
            ..LogOptions::default()
        },
        ..shardlog_stream::EngineOptions::default()
    };
    let clock = Arc::new(shardlog_stream::ManualClock::new(1_700_000_000_000));
    let Ok(engine) = shardlog_stream::Engine::open_with(Arc::new(fs.clone()), root, opts, clock) else {
        return;
    };
    for s in engine.list_streams() {
        let _ = engine.describe_stream(&s.name);
        if let Ok(shards) = engine.list_shards(&s.name) {
            for shard in shards {
                let _ = engine.get_checkpoint(&s.name, "app", &shard.shard_id);
            }
        }
        let _ = engine.list_consumers(&s.name);
        let _ = engine.list_tags(&s.name);
    }
}

// ---------------------------------------------------------------------------
// Shard iterators
// ---------------------------------------------------------------------------

/// `[control][key length][key][now: i64][token...]`. With the control bit
/// set the token is made from the bytes with a valid CRC (version byte
/// forced to 1), else the bytes are the token text. A decoded token is the
/// canonical encoding of what it decodes to, and is not expired.
pub fn iterator_token(data: &[u8]) {
    let Some((&ctl, rest)) = data.split_first() else {
        return;
    };
    let Some((&key_len, rest)) = rest.split_first() else {
        return;
    };
    let key_len = (key_len as usize % 33).min(rest.len());
    let (key, rest) = rest.split_at(key_len);
    let Some((now, rest)) = split_u64(rest) else {
        return;
    };
    let now = now as i64;
    let token = if ctl & 1 != 0 {
        let mut body = [0u8; 45];
        let n = rest.len().min(45);
        body[..n].copy_from_slice(&rest[..n]);
        body[0] = 1;
        let mut h = crc32fast::Hasher::new();
        h.update(key);
        h.update(&body);
        let mut raw = body.to_vec();
        raw.extend_from_slice(&h.finalize().to_le_bytes());
        let t = base64::engine::general_purpose::STANDARD.encode(raw);
        if ctl & 2 != 0 {
            format!("\"{t}\"")
        } else {
            t
        }
    } else {
        String::from_utf8_lossy(rest).into_owned()
    };
    match IteratorToken::decode(&token, key, now) {
        Ok(t) => {
            assert!(now.saturating_sub(t.issued_ms) <= ITERATOR_TTL_MS, "not expired");
            let canonical = t.encode(key);
            assert_eq!(
                canonical,
                token.trim_matches('"'),
                "a token is its canonical encoding"
            );
            assert_eq!(IteratorToken::decode(&canonical, key, now).ok(), Some(t));
        }
        Err(shardlog_stream::Error::InvalidArgument(m)) => assert_eq!(m, "Invalid ShardIterator."),
        Err(shardlog_stream::Error::ExpiredIterator(_)) => {}
        Err(e) => panic!("unexpected error kind: {e}"),
    }
}

// ---------------------------------------------------------------------------
// Request bodies
// ---------------------------------------------------------------------------

const TIMESTAMP_MEMBERS: &[&str] = &[
    "ApproximateArrivalTimestamp",
    "StreamCreationTimestamp",
    "ConsumerCreationTimestamp",
    "Timestamp",
];

fn numbers_eq(a: &serde_json::Number, b: &serde_json::Number) -> bool {
    if let (Some(x), Some(y)) = (a.as_i64(), b.as_i64()) {
        return x == y;
    }
    if let (Some(x), Some(y)) = (a.as_u64(), b.as_u64()) {
        return x == y;
    }
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y || (x - y).abs() <= 1e-12 * x.abs().max(y.abs()),
        _ => false,
    }
}

/// Equality of two decoded trees. Float text may round by an ulp; through
/// CBOR (`wire`), numbers under timestamp members are carried as integer
/// milliseconds, so only their being numbers is compared.
pub fn json_eq(a: &Value, b: &Value, key: Option<&str>, wire: bool) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            (wire && key.is_some_and(|k| TIMESTAMP_MEMBERS.contains(&k))) || numbers_eq(x, y)
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| json_eq(p, q, key, wire))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w, Some(k), wire)))
        }
        _ => a == b,
    }
}

fn check_request(v: &Value) {
    assert!(v.is_object(), "a decoded request is an object");
    let json = protocol::encode(Format::Json, v);
    let back = protocol::decode(Format::Json, &json).expect("encoded JSON decodes");
    assert!(json_eq(v, &back, None, false), "JSON round trip");
    let cbor = protocol::encode(Format::Cbor, v);
    let back = protocol::decode(Format::Cbor, &cbor).expect("encoded CBOR decodes");
    assert!(json_eq(v, &back, None, true), "CBOR round trip");
}

/// A JSON request body: an object or a clean error, and what decodes
/// survives encoding to JSON and to CBOR and decoding again.
pub fn request_json(data: &[u8]) {
    match protocol::decode(Format::Json, data) {
        Ok(v) => check_request(&v),
        Err(e) => assert!(e.starts_with("Malformed JSON") || e.starts_with("The request body")),
    }
}

/// A CBOR request body, as [`request_json`].
pub fn request_cbor(data: &[u8]) {
    if let Ok(v) = protocol::decode(Format::Cbor, data) {
        check_request(&v);
    }
}

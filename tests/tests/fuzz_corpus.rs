//! The fuzz targets' bodies (`shardlog_tests::fuzz`) on stable Rust: every
//! target runs over every file of its seed corpus in `fuzz/corpus/<target>/`
//! and over a few thousand inputs mutated from it by a seeded generator.
//! No input may panic, take long, or make one large allocation.
//!
//! The seed corpus is written by the ignored test `write_seed_corpus`:
//!
//! ```text
//! cargo test -p shardlog-tests --test fuzz_corpus -- --ignored write_seed_corpus
//! ```

// A counting global allocator needs `unsafe impl GlobalAlloc`; it only
// forwards to the system allocator.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use shardlog_index::SparseIndex;
use shardlog_segment::frame;
use shardlog_segment::segment::SegmentHeader;
use shardlog_segment::RecordIn;
use shardlog_server::protocol::{self, Format};
use shardlog_stream::iterator::IteratorToken;
use shardlog_tests::fuzz::{self, TARGETS, VALID_ENGINE_JSON, VALID_STREAM_JSON};

/// Largest single allocation seen (bytes).
static LARGEST_ALLOCATION: AtomicUsize = AtomicUsize::new(0);

struct Counting;

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST_ALLOCATION.fetch_max(layout.size(), Ordering::Relaxed);
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST_ALLOCATION.fetch_max(new_size, Ordering::Relaxed);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// No input of at most a few KiB may ask for more than this at once.
const ALLOCATION_MAX: usize = 64 * 1024 * 1024;
/// Nor take longer than this (unoptimised-ish test profile, shared CPU).
const INPUT_TIME_MAX: Duration = Duration::from_secs(2);
/// Mutated inputs per target.
const MUTATIONS: usize = 3000;

fn corpus_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus")
}

fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = corpus_root().join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect()
}

/// SplitMix64: small, seeded, reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Interesting values that mutations write (lengths, limits, boundaries).
const INTERESTING: &[u64] = &[
    0,
    1,
    0x7f,
    0xff,
    0xffff,
    40,
    41,
    64,
    1024,
    1025,
    0x7fff_ffff,
    0xffff_ffff,
    i64::MAX as u64,
    u64::MAX,
];

fn mutate(rng: &mut Rng, seeds: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut v = if seeds.is_empty() || rng.below(10) == 0 {
        (0..rng.below(200)).map(|_| rng.next() as u8).collect()
    } else {
        seeds[rng.below(seeds.len())].1.clone()
    };
    for _ in 0..1 + rng.below(4) {
        let len = v.len();
        match rng.below(8) {
            0 if len > 0 => {
                let i = rng.below(len);
                v[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                v[i] = rng.next() as u8;
            }
            2 => v.truncate(rng.below(len + 1)),
            3 => {
                let i = rng.below(len + 1);
                let n = rng.below(16);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                v.splice(i..i, bytes);
            }
            4 if len > 0 => {
                // Overwrite with an interesting little-endian integer.
                let x = INTERESTING[rng.below(INTERESTING.len())].to_le_bytes();
                let width = [1, 2, 4, 8][rng.below(4)];
                let i = rng.below(len);
                for (k, b) in x.iter().take(width).enumerate() {
                    if let Some(slot) = v.get_mut(i + k) {
                        *slot = *b;
                    }
                }
            }
            5 if !seeds.is_empty() => {
                // Splice in part of another seed.
                let other = &seeds[rng.below(seeds.len())].1;
                let from = rng.below(other.len() + 1);
                let to = from + rng.below(other.len() - from + 1);
                let at = rng.below(len + 1);
                v.splice(at..at, other[from..to].iter().copied());
            }
            6 if len > 0 => {
                // Toggle the control byte's checksum-fixing bit.
                v[0] ^= 1;
            }
            _ => {
                let i = rng.below(len + 1);
                v.insert(i, rng.next() as u8);
            }
        }
    }
    v
}

fn run_one(name: &str, body: fn(&[u8]), what: &str, input: &[u8]) {
    LARGEST_ALLOCATION.store(0, Ordering::Relaxed);
    let start = Instant::now();
    let outcome = std::panic::catch_unwind(|| body(input));
    let took = start.elapsed();
    let largest = LARGEST_ALLOCATION.load(Ordering::Relaxed);
    let hex: String = input.iter().take(256).map(|b| format!("{b:02x}")).collect();
    assert!(outcome.is_ok(), "{name} panicked on {what} (first bytes {hex})");
    assert!(
        took <= INPUT_TIME_MAX,
        "{name} took {took:?} on {what} (first bytes {hex})"
    );
    assert!(
        largest <= ALLOCATION_MAX,
        "{name} allocated {largest} bytes at once on {what} (first bytes {hex})"
    );
}

#[test]
fn every_target_survives_its_corpus_and_mutations_of_it() {
    let started = Instant::now();
    for &(name, body) in TARGETS {
        let seeds = corpus(name);
        assert!(
            seeds.len() >= 3,
            "{name}: seed corpus is missing; see the module doc"
        );
        for (file, bytes) in &seeds {
            run_one(name, body, file, bytes);
        }
        let mut rng = Rng(0x5EED ^ name.len() as u64 ^ (name.as_bytes()[0] as u64) << 8);
        for i in 0..MUTATIONS {
            let input = mutate(&mut rng, &seeds);
            run_one(name, body, &format!("mutation {i}"), &input);
        }
    }
    eprintln!("fuzz bodies: {:?} in total", started.elapsed());
}

// ---------------------------------------------------------------------------
// The seed corpus
// ---------------------------------------------------------------------------

fn frame_bytes(file_id: u64, records: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, (k, d)) in records.iter().enumerate() {
        frame::encode(
            &mut out,
            file_id,
            100 + i as u64,
            0,
            &RecordIn::new(k, d, 1_700_000_000_000 + i as i64),
        );
    }
    out
}

fn with_prefix(prefix: &[u8], rest: &[u8]) -> Vec<u8> {
    let mut v = prefix.to_vec();
    v.extend_from_slice(rest);
    v
}

fn seeds() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let mut s: Vec<(&str, &str, Vec<u8>)> = Vec::new();
    let file_id = 0x0102_0304_0506_0708u64;
    let id = file_id.to_le_bytes();

    // segment_frame: [control][file id][bytes]
    let frames = frame_bytes(
        file_id,
        &[("key-1", b"hello"), ("k", b""), ("ключ", &[0xAB; 100])],
    );
    let mut zero_tail = frames.clone();
    zero_tail.extend_from_slice(&[0; 48]);
    s.push((
        "segment_frame",
        "valid-three-frames",
        with_prefix(&[0], &[&id[..], &frames].concat()),
    ));
    s.push((
        "segment_frame",
        "valid-then-zeros",
        with_prefix(&[0], &[&id[..], &zero_tail].concat()),
    ));
    let mut at7 = vec![0xEE; 7];
    at7.extend_from_slice(&frames);
    s.push((
        "segment_frame",
        "valid-at-offset-7",
        with_prefix(&[7 << 1], &[&id[..], &at7].concat()),
    ));
    let mut flipped = frames.clone();
    flipped[45] ^= 0x10;
    s.push((
        "segment_frame",
        "invalid-bit-flip",
        with_prefix(&[0], &[&id[..], &flipped].concat()),
    ));
    s.push((
        "segment_frame",
        "fixcrc-bit-flip",
        with_prefix(&[1], &[&id[..], &flipped].concat()),
    ));
    s.push((
        "segment_frame",
        "invalid-truncated",
        with_prefix(&[0], &[&id[..], &frames[..60]].concat()),
    ));
    let mut bad_len = frames.clone();
    bad_len[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
    s.push((
        "segment_frame",
        "fixcrc-huge-length",
        with_prefix(&[1], &[&id[..], &bad_len].concat()),
    ));
    let mut bad_utf8 = frame_bytes(file_id, &[("ab", b"x")]);
    bad_utf8[40] = 0xFF;
    s.push((
        "segment_frame",
        "fixcrc-key-not-utf8",
        with_prefix(&[1], &[&id[..], &bad_utf8].concat()),
    ));

    // segment_header: [control][header]
    let header = SegmentHeader {
        file_id,
        base_seq: 42,
        created_ms: 1_700_000_000_000,
        recycled_from: None,
    }
    .encode();
    s.push(("segment_header", "valid", with_prefix(&[0], &header)));
    let mut hdr_frames = header.to_vec();
    hdr_frames.extend_from_slice(&frames);
    s.push((
        "segment_header",
        "valid-with-frames",
        with_prefix(&[0], &hdr_frames),
    ));
    let mut reserved = header;
    reserved[50] = 1;
    s.push((
        "segment_header",
        "fixcrc-reserved-set",
        with_prefix(&[1], &reserved),
    ));
    let recycled = SegmentHeader {
        file_id,
        base_seq: 42,
        created_ms: 1_700_000_000_000,
        recycled_from: Some(file_id - 1),
    }
    .encode();
    s.push(("segment_header", "valid-recycled", with_prefix(&[0], &recycled)));
    let mut version = header;
    version[8] = 2;
    s.push(("segment_header", "fixcrc-version-2", with_prefix(&[1], &version)));
    s.push((
        "segment_header",
        "invalid-short",
        with_prefix(&[0], &header[..63]),
    ));
    s.push(("segment_header", "invalid-zeros", vec![0; 65]));
    s.push(("segment_header", "name", b"00000000000000000042.seg".to_vec()));

    // segment_log: [control][segment file]; base 0, the file's name.
    let seg_header = SegmentHeader {
        file_id,
        base_seq: 0,
        created_ms: 1_700_000_000_000,
        recycled_from: None,
    }
    .encode();
    let mut seg = seg_header.to_vec();
    for (i, (k, d)) in [("a", &b"one"[..]), ("b", b"two"), ("c", b"three")]
        .iter()
        .enumerate()
    {
        let synced = if i == 2 { seg.len() as u32 } else { 0 };
        frame::encode(&mut seg, file_id, i as u64, synced, &RecordIn::new(k, d, 5));
    }
    let mut seg_zeros = seg.clone();
    seg_zeros.extend_from_slice(&[0; 64]);
    s.push(("segment_log", "valid-three-records", with_prefix(&[0], &seg)));
    s.push((
        "segment_log",
        "valid-preallocated-tail",
        with_prefix(&[0], &seg_zeros),
    ));
    s.push((
        "segment_log",
        "torn-tail",
        with_prefix(&[0], &seg[..seg.len() - 3]),
    ));
    s.push((
        "segment_log",
        "torn-tail-strict",
        with_prefix(&[2], &seg[..seg.len() - 3]),
    ));
    let mut acked_damage = seg.clone();
    acked_damage[64 + 42] ^= 1;
    s.push((
        "segment_log",
        "damage-before-synced-frame",
        with_prefix(&[0], &acked_damage),
    ));
    s.push(("segment_log", "fixcrc-header-only", with_prefix(&[1], &[0; 64])));
    let mut wrong_seq = seg.clone();
    wrong_seq[64 + 8] = 9;
    s.push(("segment_log", "fixcrc-wrong-seq", with_prefix(&[1], &wrong_seq)));

    // index_sidecar: [control][sidecar]
    let mut idx = SparseIndex::new(1000);
    idx.file_id = file_id;
    // Three entries pushed directly (`add` spaces them by
    // INDEX_INTERVAL_BYTES, which may change), so the seed stays the same
    // bytes; `add` at an entry's own offset only moves the ends forward.
    for i in 0..3u64 {
        idx.entries.push(shardlog_index::Entry {
            seq: 1000 + i,
            offset: (64 + i * 5000) as u32,
            arrival_ms: 10 + i as i64,
        });
        idx.add(1000 + i, 64 + i * 5000, 10 + i as i64, 5000);
    }
    let idx_bytes = idx.encode();
    s.push((
        "index_sidecar",
        "valid-three-entries",
        with_prefix(&[0], &idx_bytes),
    ));
    s.push((
        "index_sidecar",
        "valid-empty",
        with_prefix(&[0], &SparseIndex::new(7).encode()),
    ));
    s.push((
        "index_sidecar",
        "invalid-truncated",
        with_prefix(&[0], &idx_bytes[..idx_bytes.len() - 1]),
    ));
    let mut flags = idx_bytes.clone();
    flags[10] = 1;
    s.push(("index_sidecar", "fixcrc-flags-set", with_prefix(&[1], &flags)));
    let mut unordered = idx_bytes.clone();
    unordered[56 + 16 + 4] = 0;
    unordered[56 + 16 + 5] = 0;
    s.push((
        "index_sidecar",
        "fixcrc-offsets-not-increasing",
        with_prefix(&[1], &unordered),
    ));
    let mut count = idx_bytes.clone();
    count[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
    s.push(("index_sidecar", "fixcrc-huge-count", with_prefix(&[1], &count)));

    // stream_metadata: [control][JSON]; control % 3 picks the file.
    s.push((
        "stream_metadata",
        "engine-valid",
        with_prefix(&[0], VALID_ENGINE_JSON.as_bytes()),
    ));
    s.push((
        "stream_metadata",
        "stream-valid",
        with_prefix(&[1], VALID_STREAM_JSON.as_bytes()),
    ));
    let two_shards = VALID_STREAM_JSON.replace(
        r#""closed":null}]"#,
        r#""closed":{"end_next_position":0,"closed_ms":1700000000001}},{"index":1,"generation":2,"range":{"start":"0","end":"340282366920938463463374607431768211455"},"parent":0,"adjacent_parent":null,"created_ms":1700000000001,"closed":null}]"#,
    );
    s.push((
        "stream_metadata",
        "stream-split-lineage",
        with_prefix(&[1], two_shards.as_bytes()),
    ));
    s.push((
        "stream_metadata",
        "checkpoints-valid",
        with_prefix(
            &[2],
            br#"{"app":{"shardId-000000000000":"49000000000100000000000000000000000000000000000000000000"}}"#,
        ),
    ));
    s.push((
        "stream_metadata",
        "engine-legacy-no-managed-key",
        with_prefix(&[0], br#"{"version":1,"next_stream_id":1,"iterator_key":"00"}"#),
    ));
    s.push((
        "stream_metadata",
        "invalid-truncated",
        with_prefix(&[1], &VALID_STREAM_JSON.as_bytes()[..90]),
    ));
    s.push((
        "stream_metadata",
        "invalid-not-json",
        with_prefix(&[0], b"\xff\x00not json"),
    ));

    // iterator_token: [control][key length][key][now][token]
    let key = b"0123456789abcdef";
    let token = IteratorToken {
        stream_id: 1,
        stream_created_ms: 1_700_000_000_000,
        shard_index: 0,
        position: 42,
        issued_ms: 1_700_000_000_000,
        nonce: 3,
    };
    let text = token.encode(key);
    let now = 1_700_000_000_500i64.to_le_bytes();
    let head = |ctl: u8| [&[ctl, key.len() as u8][..], key, &now].concat();
    s.push(("iterator_token", "valid", with_prefix(&head(0), text.as_bytes())));
    s.push((
        "iterator_token",
        "valid-quoted",
        with_prefix(&head(0), format!("\"{text}\"").as_bytes()),
    ));
    let late = 1_800_000_000_000i64.to_le_bytes();
    s.push((
        "iterator_token",
        "expired",
        [&[0, key.len() as u8][..], key, &late, text.as_bytes()].concat(),
    ));
    let raw = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, &text).unwrap();
    s.push(("iterator_token", "fixcrc-raw", with_prefix(&head(1), &raw[..45])));
    s.push((
        "iterator_token",
        "fixcrc-raw-quoted",
        with_prefix(&head(3), &raw[..45]),
    ));
    s.push((
        "iterator_token",
        "invalid-garbage",
        with_prefix(&head(0), b"garbage!"),
    ));
    s.push((
        "iterator_token",
        "invalid-other-key",
        with_prefix(&[0, 3, b'k', b'e', b'y', 0, 0, 0, 0, 0, 0, 0, 0], text.as_bytes()),
    ));

    // request_json and request_cbor: the same requests in both formats.
    let requests = [
        (
            "put-record",
            json!({"StreamName": "s", "PartitionKey": "k", "Data": "aGVsbG8="}),
        ),
        (
            "put-records",
            json!({"StreamName": "s", "Records": [{"PartitionKey": "a", "Data": "AA=="}, {"PartitionKey": "b", "Data": "", "ExplicitHashKey": "340282366920938463463374607431768211455"}]}),
        ),
        (
            "get-shard-iterator-at-timestamp",
            json!({"StreamName": "s", "ShardId": "shardId-000000000000", "ShardIteratorType": "AT_TIMESTAMP", "Timestamp": 1_700_000_000.123}),
        ),
        (
            "get-records",
            json!({"ShardIterator": "AQAAAA==", "Limit": 10000}),
        ),
        (
            "numbers",
            json!({"a": -1, "b": u64::MAX, "c": 1.5e300, "d": [null, true, false, {}]}),
        ),
        ("empty-object", json!({})),
    ];
    for (name, v) in &requests {
        let json_name: &'static str = Box::leak(format!("valid-{name}").into_boxed_str());
        s.push(("request_json", json_name, protocol::encode(Format::Json, v)));
        s.push(("request_cbor", json_name, protocol::encode(Format::Cbor, v)));
    }
    s.push(("request_json", "invalid-array", b"[1,2]".to_vec()));
    s.push((
        "request_json",
        "invalid-unterminated",
        br#"{"StreamName": "s"#.to_vec(),
    ));
    s.push((
        "request_json",
        "deep-nesting",
        [&b"{\"a\":"[..], &[b'['; 200], &[b']'; 200], b"}"].concat(),
    ));
    s.push(("request_cbor", "invalid-break", vec![0xff, 0x00]));
    s.push(("request_cbor", "invalid-array", vec![0x82, 0x01, 0x02]));
    // A map with a declared length far beyond the body, and a byte string
    // that claims 2^32 bytes.
    s.push((
        "request_cbor",
        "huge-declared-map",
        vec![0xbb, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff],
    ));
    s.push((
        "request_cbor",
        "huge-declared-bytes",
        vec![
            0xa1, 0x64, b'D', b'a', b't', b'a', 0x5a, 0xff, 0xff, 0xff, 0xff, 0,
        ],
    ));
    // Indefinite-length map holding a tag-1 timestamp of integer ms.
    s.push((
        "request_cbor",
        "indefinite-map-tag-1",
        [
            &[0xbf, 0x69][..],
            b"Timestamp",
            &[0xc1, 0x1b, 0x00, 0x00, 0x01, 0x8b, 0xcf, 0xe5, 0x68, 0x7b, 0xff],
        ]
        .concat(),
    ));
    s
}

#[test]
#[ignore = "writes fuzz/corpus/; run by hand after changing a format"]
fn write_seed_corpus() {
    for (target, name, bytes) in seeds() {
        let dir = corpus_root().join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("seed-{name}")), bytes).unwrap();
    }
}

#[test]
fn seed_corpus_is_checked_in_and_current() {
    for (target, name, bytes) in seeds() {
        let path = corpus_root().join(target).join(format!("seed-{name}"));
        let on_disk =
            std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}; run write_seed_corpus", path.display()));
        assert_eq!(
            on_disk,
            bytes,
            "{} is stale; run write_seed_corpus",
            path.display()
        );
    }
    for &(name, _) in TARGETS {
        assert!(corpus_root().join(name).is_dir(), "no corpus for {name}");
    }
}

#[test]
fn valid_seeds_decode() {
    // The "valid" seeds reach past the decoders' checks, so the fuzzer
    // starts from inputs that exercise the whole of each body.
    let frames = frame_bytes(9, &[("k", b"v")]);
    assert!(matches!(frame::decode(&frames, 0, 9), frame::Decoded::Record(_)));
    assert!(protocol::decode(
        Format::Cbor,
        &protocol::encode(Format::Cbor, &json!({"Data": "AA=="}))
    )
    .is_ok());
    let fs = shardlog_testkit::MemFs::new();
    let root = Path::new("/d");
    let sdir = shardlog_stream::meta::stream_dir(root, 1);
    shardlog_segment::FileSystem::create_dir_all(&fs, &sdir).unwrap();
    shardlog_segment::fs::write_atomic(&fs, &root.join("ENGINE.json"), VALID_ENGINE_JSON.as_bytes()).unwrap();
    shardlog_segment::fs::write_atomic(&fs, &sdir.join("STREAM.json"), VALID_STREAM_JSON.as_bytes()).unwrap();
    let engine = shardlog_stream::Engine::open_with(
        std::sync::Arc::new(fs),
        root,
        shardlog_stream::EngineOptions {
            retention_check_interval_ms: 0,
            ..Default::default()
        },
        std::sync::Arc::new(shardlog_stream::ManualClock::new(0)),
    )
    .unwrap();
    assert_eq!(engine.list_streams().len(), 1);
    assert_eq!(engine.list_shards("s").unwrap().len(), 1);
    // The bodies themselves accept the valid seeds.
    fuzz::stream_metadata(&with_prefix(&[1], VALID_STREAM_JSON.as_bytes()));
}

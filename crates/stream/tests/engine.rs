//! Integration tests of the stream engine, on the real file system and on the
//! fault-injecting one.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use shardlog_segment::SyncPolicy;
use shardlog_stream::limits::{DAY_MS, HOUR_MS};
use shardlog_stream::{
    CreateStreamOptions, Engine, EngineOptions, Error, ManualClock, PutRecordInput, SeqNum, StartingPosition,
    StoredRecord, StreamMode,
};
use shardlog_testkit::{CrashPlan, FsOp, MemFs};

const T0: i64 = 1_800_000_000_000;

fn opts() -> EngineOptions {
    EngineOptions {
        retention_check_interval_ms: 0,
        ..EngineOptions::default()
    }
}

fn small_opts() -> EngineOptions {
    let mut o = opts();
    o.log.segment_bytes_max = 64 * 1024;
    o.log.preallocate_bytes = 8 * 1024;
    o
}

fn mem_engine(fs: &MemFs, clock: &ManualClock) -> Engine {
    Engine::open_with(
        Arc::new(fs.clone()),
        PathBuf::from("/data"),
        small_opts(),
        Arc::new(clock.clone()),
    )
    .unwrap()
}

fn read_all(engine: &Engine, stream: &str, shard: &str) -> Vec<StoredRecord> {
    let mut it = engine
        .get_shard_iterator(stream, shard, StartingPosition::TrimHorizon)
        .unwrap();
    let mut out = Vec::new();
    loop {
        let r = engine.get_records(&it, Some(1000)).unwrap();
        let empty = r.records.is_empty();
        out.extend(r.records);
        match r.next_shard_iterator {
            Some(next) if !empty => it = next,
            _ => return out,
        }
    }
}

#[test]
fn create_describe_and_list_follow_kinesis_arithmetic() {
    let tmp = tempfile::tempdir().unwrap();
    let e = Engine::open(tmp.path(), opts()).unwrap();
    e.create_stream("s", 3, CreateStreamOptions::default()).unwrap();
    let d = e.describe_stream("s").unwrap();
    assert_eq!(d.shards.len(), 3);
    assert_eq!(d.shards[0].shard_id, "shardId-000000000000");
    assert_eq!(d.shards[2].shard_id, "shardId-000000000002");
    let step = u128::MAX / 3 + u128::from(u128::MAX % 3 == 2);
    assert_eq!(d.shards[1].hash_range.start, step);
    assert_eq!(d.shards[2].hash_range.end, u128::MAX);
    assert_eq!(d.retention_hours, 24);
    assert_eq!(d.shards[0].starting_sequence_number.len(), 56);
    assert!(matches!(
        e.create_stream("s", 1, CreateStreamOptions::default()),
        Err(Error::ResourceInUse(_))
    ));
    assert!(matches!(
        e.create_stream("bad/name", 1, CreateStreamOptions::default()),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        e.describe_stream("nope"),
        Err(Error::ResourceNotFound(_))
    ));
    // Dot names are valid stream names and never become paths.
    for name in [".", "..", "a..b"] {
        e.create_stream(name, 1, CreateStreamOptions::default()).unwrap();
        e.put_record(name, PutRecordInput::new("k", b"v")).unwrap();
    }
    let names: Vec<String> = e.list_streams().into_iter().map(|s| s.name).collect();
    assert_eq!(names, vec![".", "..", "a..b", "s"]);
    for entry in std::fs::read_dir(tmp.path().join("streams")).unwrap() {
        let n = entry.unwrap().file_name().into_string().unwrap();
        assert!(
            n.bytes().all(|b| b.is_ascii_digit()),
            "stream directory {n} is not an id"
        );
    }
    assert_eq!(
        std::fs::read_dir(tmp.path()).unwrap().count(),
        3,
        "ENGINE.json, LOCK, streams only"
    );
}

#[test]
fn records_route_by_md5_or_explicit_hash_key_and_read_back_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let e = Engine::open(tmp.path(), opts()).unwrap();
    e.create_stream("s", 4, CreateStreamOptions::default()).unwrap();
    let d = e.describe_stream("s").unwrap();
    let mut by_shard: HashMap<String, Vec<String>> = HashMap::new();
    for i in 0..200 {
        let key = format!("key-{i}");
        let data = format!("data-{i}");
        let out = e
            .put_record("s", PutRecordInput::new(&key, data.as_bytes()))
            .unwrap();
        let h = shardlog_stream::hashkey::hash_key_of(&key);
        let owner = d.shards.iter().find(|s| s.hash_range.contains(h)).unwrap();
        assert_eq!(out.shard_id, owner.shard_id, "record routed by MD5 of its key");
        by_shard
            .entry(out.shard_id.to_string())
            .or_default()
            .push(out.sequence_number.to_string());
    }
    // An explicit hash key overrides the partition key.
    let last = &d.shards[3];
    let out = e
        .put_record(
            "s",
            PutRecordInput {
                explicit_hash_key: Some(&last.hash_range.start.to_string()),
                ..PutRecordInput::new("key-0", b"x")
            },
        )
        .unwrap();
    assert_eq!(out.shard_id, last.shard_id);
    by_shard
        .get_mut(out.shard_id.as_str())
        .unwrap()
        .push(out.sequence_number.to_string());
    for (shard, seqs) in &by_shard {
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1] && w[0].len() == 56),
            "increasing, fixed width"
        );
        let got: Vec<String> = read_all(&e, "s", shard)
            .into_iter()
            .map(|r| r.sequence_number.to_string())
            .collect();
        assert_eq!(&got, seqs);
    }
    let bad = PutRecordInput {
        explicit_hash_key: Some("340282366920938463463374607431768211456"),
        ..PutRecordInput::new("k", b"x")
    };
    assert!(matches!(e.put_record("s", bad), Err(Error::InvalidArgument(_))));
    assert!(matches!(
        e.put_record("s", PutRecordInput::new("", b"x")),
        Err(Error::InvalidArgument(_))
    ));
    let long = "é".repeat(256);
    e.put_record("s", PutRecordInput::new(&long, b"x")).unwrap();
    assert!(e
        .put_record("s", PutRecordInput::new(&"é".repeat(257), b"x"))
        .is_err());
    let big = vec![0u8; 1024 * 1024];
    assert!(matches!(
        e.put_record("s", PutRecordInput::new("k", &big)),
        Err(Error::InvalidArgument(_))
    ));
}

#[test]
fn put_records_spans_shards_and_reports_per_record() {
    let tmp = tempfile::tempdir().unwrap();
    let e = Engine::open(tmp.path(), opts()).unwrap();
    e.create_stream("s", 4, CreateStreamOptions::default()).unwrap();
    let keys: Vec<String> = (0..500).map(|i| format!("k{i}")).collect();
    let recs: Vec<PutRecordInput<'_>> = keys
        .iter()
        .map(|k| PutRecordInput::new(k, k.as_bytes()))
        .collect();
    let out = e.put_records("s", &recs).unwrap();
    assert_eq!(out.len(), 500);
    let shards: std::collections::HashSet<&str> = out
        .iter()
        .map(|r| r.as_ref().unwrap().shard_id.as_str())
        .collect();
    assert_eq!(shards.len(), 4);
    let too_many: Vec<PutRecordInput<'_>> = (0..501).map(|_| PutRecordInput::new("k", b"")).collect();
    assert!(matches!(
        e.put_records("s", &too_many),
        Err(Error::InvalidArgument(_))
    ));
    let big = vec![0u8; 900 * 1024];
    let six: Vec<PutRecordInput<'_>> = (0..6).map(|_| PutRecordInput::new("k", &big)).collect();
    let err = e.put_records("s", &six).unwrap_err();
    assert!(err.to_string().contains("5 MB"), "{err}");
    // A stream that takes records up to 10 MiB takes a PutRecords of one
    // such record too (requests up to 10 MiB), as PutRecord does.
    e.create_stream(
        "large",
        1,
        CreateStreamOptions {
            max_record_kib: Some(10 * 1024),
            ..CreateStreamOptions::default()
        },
    )
    .unwrap();
    let huge = vec![7u8; 6 * 1024 * 1024];
    let out = e
        .put_records("large", &[PutRecordInput::new("k", &huge)])
        .unwrap();
    assert!(out[0].is_ok());
    let twelve: Vec<PutRecordInput<'_>> = (0..12).map(|_| PutRecordInput::new("k", &big)).collect();
    let err = e.put_records("large", &twelve).unwrap_err();
    assert!(err.to_string().contains("10 MB"), "{err}");
}

#[test]
fn iterator_types_resolve_as_kinesis_does() {
    let fs = MemFs::new();
    let clock = ManualClock::new(T0);
    let e = mem_engine(&fs, &clock);
    e.create_stream("s", 2, CreateStreamOptions::default()).unwrap();
    let mut seqs = Vec::new();
    for i in 0..10 {
        clock.advance(1000);
        seqs.push(
            e.put_record(
                "s",
                PutRecordInput {
                    explicit_hash_key: Some("0"),
                    ..PutRecordInput::new("k", format!("{i}").as_bytes())
                },
            )
            .unwrap(),
        );
    }
    let shard = seqs[0].shard_id.to_string();
    let first_of = |p: StartingPosition| {
        let it = e.get_shard_iterator("s", &shard, p).unwrap();
        e.get_records(&it, Some(1))
            .unwrap()
            .records
            .first()
            .map(|r| r.data.to_vec())
    };
    assert_eq!(first_of(StartingPosition::TrimHorizon), Some(b"0".to_vec()));
    assert_eq!(first_of(StartingPosition::Latest), None);
    assert_eq!(
        first_of(StartingPosition::AtSequenceNumber(
            seqs[4].sequence_number.to_string()
        )),
        Some(b"4".to_vec())
    );
    assert_eq!(
        first_of(StartingPosition::AfterSequenceNumber(
            seqs[4].sequence_number.to_string()
        )),
        Some(b"5".to_vec())
    );
    assert_eq!(
        first_of(StartingPosition::AtTimestamp(T0 + 3_000)),
        Some(b"2".to_vec())
    );
    assert_eq!(
        first_of(StartingPosition::AtTimestamp(T0 + 3_500)),
        Some(b"3".to_vec()),
        "next later record"
    );
    assert_eq!(
        first_of(StartingPosition::AtTimestamp(0)),
        Some(b"0".to_vec()),
        "before trim horizon"
    );
    let err = e
        .get_shard_iterator("s", &shard, StartingPosition::AtTimestamp(clock.now() + 1))
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)));
    // A sequence number of another shard is rejected, saying which.
    let other = if shard.ends_with('0') {
        "shardId-000000000001"
    } else {
        "shardId-000000000000"
    };
    let err = e
        .get_shard_iterator(
            "s",
            other,
            StartingPosition::AtSequenceNumber(seqs[0].sequence_number.to_string()),
        )
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("Invalid StartingSequenceNumber. It encodes"),
        "{err}"
    );
    // LATEST then a new put: the iterator sees it; MillisBehindLatest is 0 at the tip.
    let it = e
        .get_shard_iterator("s", &shard, StartingPosition::Latest)
        .unwrap();
    e.put_record(
        "s",
        PutRecordInput {
            explicit_hash_key: Some("0"),
            ..PutRecordInput::new("k", b"new")
        },
    )
    .unwrap();
    let r = e.get_records(&it, None).unwrap();
    assert_eq!(r.records.len(), 1);
    assert_eq!(r.millis_behind_latest, 0);
    // Behind the tip, MillisBehindLatest is real.
    let it = e
        .get_shard_iterator("s", &shard, StartingPosition::TrimHorizon)
        .unwrap();
    clock.advance(5_000);
    let r = e.get_records(&it, Some(2)).unwrap();
    assert!(r.millis_behind_latest >= 5_000, "{}", r.millis_behind_latest);
    // Iterators expire after five minutes.
    clock.advance(300_001);
    assert!(matches!(e.get_records(&it, None), Err(Error::ExpiredIterator(_))));
}

trait Now {
    fn now(&self) -> i64;
}
impl Now for ManualClock {
    fn now(&self) -> i64 {
        shardlog_stream::Clock::now_ms(self)
    }
}

/// Writes `per_key` records for each of `keys` keys and returns the expected
/// per-key data in order.
fn write_keys(
    e: &Engine,
    keys: usize,
    per_key: usize,
    tag: &str,
    expect: &mut BTreeMap<String, Vec<String>>,
) {
    for n in 0..per_key {
        for k in 0..keys {
            let key = format!("key-{k}");
            let data = format!("{tag}-{n}");
            e.put_record("s", PutRecordInput::new(&key, data.as_bytes()))
                .unwrap();
            expect.entry(key).or_default().push(data);
        }
    }
}

/// Reads the whole stream the way a KCL worker does: parents before
/// children, following ChildShards; returns per-key data in read order.
fn read_by_lineage(e: &Engine) -> BTreeMap<String, Vec<String>> {
    let shards = e.list_shards("s").unwrap();
    let mut done: std::collections::HashSet<String> = Default::default();
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut queue: Vec<String> = shards
        .iter()
        .filter(|s| s.parent_shard_id.is_none())
        .map(|s| s.shard_id.to_string())
        .collect();
    while let Some(shard) = queue.pop() {
        let desc = shards.iter().find(|s| s.shard_id == shard).unwrap();
        let parents_done = desc
            .parent_shard_id
            .iter()
            .chain(desc.adjacent_parent_shard_id.iter())
            .all(|p| done.contains(p));
        if !parents_done || done.contains(&shard) {
            continue;
        }
        let mut it = e
            .get_shard_iterator("s", &shard, StartingPosition::TrimHorizon)
            .unwrap();
        loop {
            let r = e.get_records(&it, Some(500)).unwrap();
            for rec in &r.records {
                out.entry(rec.partition_key.clone())
                    .or_default()
                    .push(String::from_utf8(rec.data.to_vec()).unwrap());
            }
            match r.next_shard_iterator {
                Some(n) => {
                    if r.records.is_empty() {
                        break; // open shard at its tip
                    }
                    it = n;
                }
                None => {
                    assert!(
                        !r.child_shards.is_empty(),
                        "end of a closed shard names its children"
                    );
                    for c in r.child_shards {
                        queue.insert(0, c.shard_id);
                    }
                    break;
                }
            }
        }
        done.insert(shard);
    }
    out
}

#[test]
fn every_key_reads_in_write_order_across_a_split_and_a_merge() {
    let tmp = tempfile::tempdir().unwrap();
    let e = Engine::open(tmp.path(), opts()).unwrap();
    e.create_stream("s", 2, CreateStreamOptions::default()).unwrap();
    let mut expect = BTreeMap::new();
    write_keys(&e, 40, 5, "before", &mut expect);
    e.split_shard("s", "shardId-000000000000", &(1u128 << 126).to_string())
        .unwrap();
    let d = e.describe_stream("s").unwrap();
    assert_eq!(d.shards.len(), 4);
    assert_eq!(d.open_shard_count, 3);
    let parent = &d.shards[0];
    assert!(parent.ending_sequence_number.is_some());
    let kid = &d.shards[2];
    assert_eq!(kid.shard_id, "shardId-000000000002");
    assert_eq!(kid.parent_shard_id.as_deref(), Some("shardId-000000000000"));
    assert!(
        kid.starting_sequence_number > *parent.ending_sequence_number.as_ref().unwrap(),
        "children sort after parents"
    );
    write_keys(&e, 40, 5, "split", &mut expect);
    e.merge_shards("s", "shardId-000000000003", "shardId-000000000001")
        .unwrap();
    let d = e.describe_stream("s").unwrap();
    assert_eq!(d.open_shard_count, 2);
    let merged = d
        .shards
        .iter()
        .find(|s| s.shard_id == "shardId-000000000004")
        .unwrap();
    assert_eq!(merged.parent_shard_id.as_deref(), Some("shardId-000000000003"));
    assert_eq!(
        merged.adjacent_parent_shard_id.as_deref(),
        Some("shardId-000000000001")
    );
    write_keys(&e, 40, 5, "merged", &mut expect);
    assert_eq!(read_by_lineage(&e), expect);
    // And the same after a restart.
    drop(e);
    let e = Engine::open(tmp.path(), opts()).unwrap();
    assert_eq!(read_by_lineage(&e), expect);
    // Kinesis's rules.
    let err = e.split_shard("s", "shardId-000000000000", "5").unwrap_err();
    assert!(err.to_string().contains("already been merged or split"), "{err}");
    let err = e.split_shard("s", "shardId-000000000002", "1").unwrap_err();
    assert!(
        err.to_string().contains("not both greater than one plus"),
        "{err}"
    );
    e.create_stream("m", 3, CreateStreamOptions::default()).unwrap();
    let err = e
        .merge_shards("m", "shardId-000000000000", "shardId-000000000002")
        .unwrap_err();
    assert!(err.to_string().contains("not an adjacent pair"), "{err}");
}

#[test]
fn update_shard_count_reaches_even_ranges() {
    let tmp = tempfile::tempdir().unwrap();
    let e = Engine::open(tmp.path(), opts()).unwrap();
    e.create_stream("s", 4, CreateStreamOptions::default()).unwrap();
    let mut expect = BTreeMap::new();
    write_keys(&e, 20, 2, "a", &mut expect);
    for target in [8u32, 5, 3, 6] {
        e.update_shard_count("s", target).unwrap();
        let d = e.describe_stream("s").unwrap();
        let mut open: Vec<_> = d
            .shards
            .iter()
            .filter(|s| s.ending_sequence_number.is_none())
            .map(|s| s.hash_range)
            .collect();
        open.sort();
        assert_eq!(
            open,
            shardlog_stream::hashkey::even_ranges(target),
            "target {target}"
        );
        write_keys(&e, 20, 2, &format!("t{target}"), &mut expect);
    }
    assert_eq!(read_by_lineage(&e), expect);
    assert!(matches!(
        e.update_shard_count("s", 13),
        Err(Error::InvalidArgument(_))
    ));
}

#[test]
fn retention_moves_the_trim_horizon_and_expires_closed_shards() {
    let fs = MemFs::new();
    let clock = ManualClock::new(T0);
    let e = mem_engine(&fs, &clock);
    e.create_stream("s", 1, CreateStreamOptions::default()).unwrap();
    let data = vec![1u8; 1000];
    for _ in 0..200 {
        e.put_record("s", PutRecordInput::new("k", &data)).unwrap();
    }
    let old_it = e
        .get_shard_iterator("s", "shardId-000000000000", StartingPosition::TrimHorizon)
        .unwrap();
    clock.advance(20 * HOUR_MS);
    for _ in 0..50 {
        e.put_record("s", PutRecordInput::new("k", &data)).unwrap();
    }
    clock.advance(5 * HOUR_MS);
    assert!(e.enforce_retention().unwrap() > 0);
    let rest = read_all(&e, "s", "shardId-000000000000");
    assert!(rest.len() >= 50 && rest.len() < 250, "{}", rest.len());
    assert!(rest
        .iter()
        .all(|r| r.approximate_arrival_ms >= T0 + 20 * HOUR_MS - 3_600_000));
    // A reader holding an old position continues from the trim horizon.
    let r = e.get_records(&old_it, Some(1));
    // The old iterator expired by time; take a fresh one at the old number.
    assert!(r.is_err());
    let first_seq = SeqNum {
        generation: 1,
        shard_index: 0,
        position: 0,
    }
    .encode();
    let it = e
        .get_shard_iterator(
            "s",
            "shardId-000000000000",
            StartingPosition::AtSequenceNumber(first_seq),
        )
        .unwrap();
    let r = e.get_records(&it, Some(1)).unwrap();
    assert_eq!(r.records[0].sequence_number, rest[0].sequence_number);
    // Closed shards disappear once their data expired.
    e.split_shard("s", "shardId-000000000000", &(1u128 << 127).to_string())
        .unwrap();
    clock.advance(25 * HOUR_MS);
    e.enforce_retention().unwrap();
    clock.advance(25 * HOUR_MS);
    e.enforce_retention().unwrap();
    let ids: Vec<String> = e
        .list_shards("s")
        .unwrap()
        .into_iter()
        .map(|s| s.shard_id)
        .collect();
    assert_eq!(ids, vec!["shardId-000000000001", "shardId-000000000002"]);
    // Retention changes follow Kinesis's rules.
    assert!(e.increase_retention("s", 12).is_err());
    e.increase_retention("s", 48).unwrap();
    assert!(e.decrease_retention("s", 72).is_err());
    assert!(e.increase_retention("s", 8761).is_err());
    e.decrease_retention("s", 24).unwrap();
}

/// As at AWS, a shard's StartingSequenceNumber sorts before every record of
/// the shard and does not move with retention: AT_SEQUENCE_NUMBER and
/// AFTER_SEQUENCE_NUMBER with it both start at the oldest record held (a
/// reader that starts AFTER it must not skip the first record), and it
/// serves as a checkpoint meaning "nothing read yet".
#[test]
fn a_shards_starting_sequence_number_sorts_before_its_records_and_stays_through_retention() {
    let fs = MemFs::new();
    let clock = ManualClock::new(T0);
    let e = mem_engine(&fs, &clock);
    e.create_stream("s", 1, CreateStreamOptions::default()).unwrap();
    let shard = "shardId-000000000000";
    let start = e.describe_stream("s").unwrap().shards[0]
        .starting_sequence_number
        .clone();
    let data = vec![1u8; 1000];
    let first = e.put_record("s", PutRecordInput::new("k", &data)).unwrap();
    for _ in 0..199 {
        e.put_record("s", PutRecordInput::new("k", &data)).unwrap();
    }
    assert_eq!(start.len(), first.sequence_number.len());
    assert!(
        *start < *first.sequence_number,
        "{start} vs {}",
        first.sequence_number
    );
    let from = |e: &Engine, p: StartingPosition| {
        let it = e.get_shard_iterator("s", shard, p).unwrap();
        e.get_records(&it, Some(1)).unwrap().records[0].sequence_number
    };
    for p in [
        StartingPosition::AtSequenceNumber(start.clone()),
        StartingPosition::AfterSequenceNumber(start.clone()),
    ] {
        assert_eq!(from(&e, p), first.sequence_number);
    }
    // A checkpoint at the StartingSequenceNumber: nothing read yet.
    e.set_checkpoint("s", "app", shard, &start, None).unwrap();

    // Retention removes the oldest records; the number stays, and both
    // starts move to the oldest record still held.
    clock.advance(20 * HOUR_MS);
    for _ in 0..50 {
        e.put_record("s", PutRecordInput::new("k", &data)).unwrap();
    }
    clock.advance(5 * HOUR_MS);
    assert!(e.enforce_retention().unwrap() > 0);
    let oldest = read_all(&e, "s", shard)[0].sequence_number;
    assert_ne!(oldest, first.sequence_number);
    assert_eq!(
        e.describe_stream("s").unwrap().shards[0].starting_sequence_number,
        start
    );
    for p in [
        StartingPosition::AtSequenceNumber(start.clone()),
        StartingPosition::AfterSequenceNumber(start.clone()),
    ] {
        assert_eq!(from(&e, p), oldest);
    }

    // A child's StartingSequenceNumber sorts after every number of its
    // parent, and AFTER it starts at the child's first record.
    e.split_shard("s", shard, &(1u128 << 127).to_string()).unwrap();
    let d = e.describe_stream("s").unwrap();
    let parent_end = d.shards[0].ending_sequence_number.clone().unwrap();
    let kid = d
        .shards
        .iter()
        .find(|s| s.shard_id == "shardId-000000000001")
        .unwrap();
    assert!(kid.starting_sequence_number > parent_end);
    let put = e
        .put_record(
            "s",
            PutRecordInput {
                explicit_hash_key: Some("0"),
                ..PutRecordInput::new("k", &data)
            },
        )
        .unwrap();
    assert_eq!(put.shard_id, "shardId-000000000001");
    let it = e
        .get_shard_iterator(
            "s",
            "shardId-000000000001",
            StartingPosition::AfterSequenceNumber(kid.starting_sequence_number.clone()),
        )
        .unwrap();
    assert_eq!(
        e.get_records(&it, Some(1)).unwrap().records[0].sequence_number,
        put.sequence_number
    );
    // Another shard's StartingSequenceNumber is refused.
    let err = e
        .get_shard_iterator(
            "s",
            shard,
            StartingPosition::AfterSequenceNumber(kid.starting_sequence_number.clone()),
        )
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
}

#[test]
fn byte_cap_deletes_oldest_segments_first() {
    let fs = MemFs::new();
    let clock = ManualClock::new(T0);
    let e = mem_engine(&fs, &clock);
    e.create_stream(
        "s",
        2,
        CreateStreamOptions {
            retention_bytes_max: Some(300 * 1024),
            ..Default::default()
        },
    )
    .unwrap();
    let data = vec![1u8; 1000];
    for i in 0..1000 {
        clock.advance(1);
        e.put_record("s", PutRecordInput::new(&format!("k{i}"), &data))
            .unwrap();
    }
    assert!(e.stream_bytes_on_disk("s").unwrap() > 300 * 1024);
    assert!(e.enforce_retention().unwrap() > 0);
    assert!(e.stream_bytes_on_disk("s").unwrap() <= 300 * 1024);
}

#[test]
fn a_byte_capped_stream_whose_segment_cannot_be_removed_stops_no_other_stream() {
    let fs = MemFs::new();
    let clock = ManualClock::new(T0);
    let e = mem_engine(&fs, &clock);
    for name in ["a", "b"] {
        e.create_stream(
            name,
            1,
            CreateStreamOptions {
                retention_bytes_max: Some(300 * 1024),
                ..Default::default()
            },
        )
        .unwrap();
    }
    let data = vec![1u8; 1000];
    for i in 0..700 {
        clock.advance(1);
        for name in ["a", "b"] {
            e.put_record(name, PutRecordInput::new(&format!("k{i}"), &data))
                .unwrap();
        }
    }
    let before = e.stream_bytes_on_disk("a").unwrap();
    assert!(before > 300 * 1024);
    // Stream a (the first created) cannot unlink its segments.
    fs.fail_at(FsOp::Remove, "/streams/0000000000000001/", 1);
    let err = e.enforce_retention().unwrap_err();
    assert!(err.to_string().contains("a (byte cap)"), "{err}");
    assert!(
        e.stream_bytes_on_disk("b").unwrap() <= 300 * 1024,
        "b's cap was enforced all the same"
    );
    assert_eq!(e.stream_bytes_on_disk("a").unwrap(), before);
    assert_eq!(
        read_all(&e, "a", "shardId-000000000000").len(),
        700,
        "a lost nothing"
    );
    assert_eq!(fs.failpoint_hits(FsOp::Remove, "/streams/0000000000000001/"), 1);
    // Once the file can go, the next pass caps a too.
    assert!(e.enforce_retention().unwrap() > 0);
    assert!(e.stream_bytes_on_disk("a").unwrap() <= 300 * 1024);
    let left = read_all(&e, "a", "shardId-000000000000");
    assert!(!left.is_empty() && left.len() < 700);
}

#[test]
fn consumers_and_checkpoints_survive_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let seq;
    {
        let e = Engine::open(tmp.path(), opts()).unwrap();
        e.create_stream("s", 1, CreateStreamOptions::default()).unwrap();
        e.register_consumer("s", "app-1").unwrap();
        assert!(matches!(
            e.register_consumer("s", "app-1"),
            Err(Error::ResourceInUse(_))
        ));
        for i in 2..=20 {
            e.register_consumer("s", &format!("app-{i}")).unwrap();
        }
        assert!(matches!(
            e.register_consumer("s", "app-21"),
            Err(Error::LimitExceeded(_))
        ));
        e.deregister_consumer("s", "app-20", None, &[]).unwrap();
        seq = e
            .put_record("s", PutRecordInput::new("k", b"v"))
            .unwrap()
            .sequence_number
            .to_string();
        e.set_checkpoint("s", "worker", "shardId-000000000000", &seq, None)
            .unwrap();
        let err = e
            .set_checkpoint("s", "worker", "shardId-000000000000", &seq, None)
            .unwrap_err();
        assert!(
            matches!(err, Error::CheckpointConflict { .. }),
            "compare-and-set refuses a stale expectation"
        );
        let mut tags = BTreeMap::new();
        tags.insert("team".to_string(), "data".to_string());
        e.add_tags("s", &tags).unwrap();
        e.increase_retention("s", 100).unwrap();
    }
    let e = Engine::open(tmp.path(), opts()).unwrap();
    assert_eq!(e.list_consumers("s").unwrap().len(), 19);
    assert_eq!(
        e.get_checkpoint("s", "worker", "shardId-000000000000").unwrap(),
        Some(seq.clone())
    );
    e.set_checkpoint("s", "worker", "shardId-000000000000", &seq, Some(&seq))
        .unwrap();
    assert_eq!(
        e.list_tags("s").unwrap().get("team").map(String::as_str),
        Some("data")
    );
    assert_eq!(e.describe_stream("s").unwrap().retention_hours, 100);
    assert!(matches!(
        e.delete_stream("s", false),
        Err(Error::ResourceInUse(_))
    ));
    e.delete_stream("s", true).unwrap();
    drop(e);
    let e = Engine::open(tmp.path(), opts()).unwrap();
    assert!(e.list_streams().is_empty());
}

#[test]
fn a_second_engine_on_the_same_directory_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let _e = Engine::open(tmp.path(), opts()).unwrap();
    let err = Engine::open(tmp.path(), opts()).unwrap_err();
    assert!(err.to_string().contains("locked"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tailing_reader_wakes_when_a_record_arrives() {
    let tmp = tempfile::tempdir().unwrap();
    let e = Engine::open(tmp.path(), opts()).unwrap();
    e.create_stream("s", 1, CreateStreamOptions::default()).unwrap();
    let e2 = e.clone();
    let waiter = tokio::spawn(async move {
        e2.wait_for_records("s", "shardId-000000000000", 0, Duration::from_secs(10))
            .await
            .unwrap()
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let e3 = e.clone();
    tokio::task::spawn_blocking(move || e3.put_record("s", PutRecordInput::new("k", b"v")).unwrap())
        .await
        .unwrap();
    assert!(waiter.await.unwrap());
    assert!(!e
        .wait_for_records("s", "shardId-000000000000", 1, Duration::from_millis(50))
        .await
        .unwrap());
}

#[test]
fn concurrent_writers_keep_per_shard_order() {
    let tmp = tempfile::tempdir().unwrap();
    let e = Engine::open(tmp.path(), opts()).unwrap();
    e.create_stream("s", 3, CreateStreamOptions::default()).unwrap();
    std::thread::scope(|s| {
        for t in 0..8 {
            let e = &e;
            s.spawn(move || {
                for i in 0..100 {
                    let key = format!("t{t}");
                    e.put_record("s", PutRecordInput::new(&key, format!("{i}").as_bytes()))
                        .unwrap();
                }
            });
        }
    });
    let mut per_key: HashMap<String, Vec<u32>> = HashMap::new();
    for shard in e.list_shards("s").unwrap() {
        for r in read_all(&e, "s", &shard.shard_id) {
            per_key
                .entry(r.partition_key)
                .or_default()
                .push(String::from_utf8(r.data.into_vec()).unwrap().parse().unwrap());
        }
    }
    assert_eq!(per_key.len(), 8);
    for v in per_key.values() {
        assert_eq!(*v, (0..100).collect::<Vec<_>>());
    }
}

/// Snapshot of everything durable about the engine.
fn snapshot(e: &Engine) -> Vec<String> {
    let mut out = Vec::new();
    for s in e.list_streams() {
        let d = e.describe_stream(&s.name).unwrap();
        out.push(format!("{} {} {:?}", d.name, d.retention_hours, d.tags));
        for sh in d.shards {
            // The StartingSequenceNumber is metadata: fixed when the shard
            // is made, whatever retention removes.
            out.push(format!("{sh:?}"));
        }
        for c in e.list_consumers(&s.name).unwrap() {
            out.push(c.name);
        }
    }
    out
}

fn crash_setup(fs: &MemFs, clock: &ManualClock, name: &str) -> Engine {
    let e = mem_engine(fs, clock);
    e.create_stream(
        "s",
        2,
        CreateStreamOptions {
            sync: Some(SyncPolicy::Always),
            ..Default::default()
        },
    )
    .unwrap();
    for i in 0..20 {
        e.put_record("s", PutRecordInput::new(&format!("k{i}"), b"v"))
            .unwrap();
    }
    if name == "expire" {
        e.split_shard("s", "shardId-000000000000", &(1u128 << 126).to_string())
            .unwrap();
        clock.advance(49 * HOUR_MS);
    }
    e
}

#[test]
fn metadata_is_old_or_new_after_a_crash_at_every_step() {
    type Op = fn(&Engine) -> shardlog_stream::Result<()>;
    let ops: Vec<(&str, Op)> = vec![
        ("create", |e| {
            e.create_stream("t", 3, CreateStreamOptions::default())
        }),
        ("delete", |e| e.delete_stream("s", true)),
        ("split", |e| {
            e.split_shard("s", "shardId-000000000000", &(1u128 << 126).to_string())
        }),
        ("merge", |e| {
            e.merge_shards("s", "shardId-000000000000", "shardId-000000000001")
        }),
        ("scale", |e| e.update_shard_count("s", 3).map(|_| ())),
        ("retention", |e| e.increase_retention("s", 48)),
        ("consumer", |e| e.register_consumer("s", "c").map(|_| ())),
        ("tags", |e| {
            e.add_tags("s", &BTreeMap::from([("a".to_string(), "b".to_string())]))
        }),
        ("expire", |e| e.enforce_retention().map(|_| ())),
    ];
    for (name, op) in ops {
        // The state the operation leads to, from a fault-free run.
        let (before, after) = {
            let fs = MemFs::new();
            let clock = ManualClock::new(T0);
            let e = crash_setup(&fs, &clock, name);
            let before = snapshot(&e);
            op(&e).unwrap();
            (before, snapshot(&e))
        };
        assert_ne!(before, after, "{name} changes nothing visible");
        let mut step = 0u64;
        loop {
            let fs = MemFs::new();
            let clock = ManualClock::new(T0);
            let e = crash_setup(&fs, &clock, name);
            fs.fail_after_ops(step);
            let finished = op(&e).is_ok();
            std::mem::forget(e);
            fs.crash(CrashPlan::Random { seed: step });
            let e = mem_engine(&fs, &clock);
            let now = snapshot(&e);
            if finished {
                assert_eq!(now, after, "{name}: a completed operation was lost in a crash");
            } else {
                assert!(
                    now == before || now == after,
                    "{name} step {step}: torn metadata {now:#?}"
                );
            }
            // Every shard is readable, and no acknowledged record is lost
            // (retention may legitimately remove all of them).
            let mut total = 0;
            for s in e.list_streams() {
                for sh in e.list_shards(&s.name).unwrap() {
                    let n = read_all(&e, &s.name, &sh.shard_id).len();
                    if s.name == "s" {
                        total += n;
                    }
                }
            }
            if e.list_streams().iter().any(|s| s.name == "s") && name != "expire" {
                assert_eq!(total, 20, "{name} step {step}: acknowledged records lost");
            }
            if finished {
                break;
            }
            step += 1;
            assert!(step < 500, "{name} never completed");
        }
    }
}

#[test]
fn shard_limits_when_enforced_answer_provisioned_throughput_exceeded() {
    let fs = MemFs::new();
    let clock = ManualClock::new(T0);
    let mut o = small_opts();
    o.enforce_shard_limits = true;
    let e = Engine::open_with(
        Arc::new(fs.clone()),
        PathBuf::from("/data"),
        o,
        Arc::new(clock.clone()),
    )
    .unwrap();
    e.create_stream("s", 1, CreateStreamOptions::default()).unwrap();
    let keys: Vec<String> = (0..500).map(|i| format!("k{i}")).collect();
    let recs: Vec<PutRecordInput<'_>> = keys.iter().map(|k| PutRecordInput::new(k, b"v")).collect();
    assert!(e.put_records("s", &recs).unwrap().iter().all(|r| r.is_ok()));
    assert!(e.put_records("s", &recs).unwrap().iter().all(|r| r.is_ok()));
    // 1,000 records in this second: the next write is refused.
    let err = e.put_record("s", PutRecordInput::new("k", b"v")).unwrap_err();
    assert_eq!(err.kinesis_name(), "ProvisionedThroughputExceededException");
    assert!(
        err.to_string()
            .contains("Rate exceeded for shard shardId-000000000000"),
        "{err}"
    );
    let out = e.put_records("s", &recs[..2]).unwrap();
    assert_eq!(
        out[0].as_ref().unwrap_err().error_code,
        "ProvisionedThroughputExceededException"
    );
    clock.advance(1000);
    e.put_record("s", PutRecordInput::new("k", b"v")).unwrap();
    // Five reads per second.
    let it = e
        .get_shard_iterator("s", "shardId-000000000000", StartingPosition::Latest)
        .unwrap();
    for _ in 0..5 {
        e.get_records(&it, Some(1)).unwrap();
    }
    assert!(matches!(
        e.get_records(&it, Some(1)),
        Err(Error::ProvisionedThroughputExceeded(_))
    ));
    clock.advance(200);
    e.get_records(&it, Some(1)).unwrap();
}

#[test]
fn configured_status_delays_show_creating_updating_and_deleting() {
    let fs = MemFs::new();
    let clock = ManualClock::new(T0);
    let mut o = small_opts();
    o.status_delays = shardlog_stream::StatusDelays {
        creating_ms: 500,
        updating_ms: 500,
        deleting_ms: 500,
    };
    let e = Engine::open_with(
        Arc::new(fs.clone()),
        PathBuf::from("/data"),
        o,
        Arc::new(clock.clone()),
    )
    .unwrap();
    e.create_stream("s", 2, CreateStreamOptions::default()).unwrap();
    assert_eq!(e.describe_stream("s").unwrap().status.as_str(), "CREATING");
    assert!(matches!(
        e.put_record("s", PutRecordInput::new("k", b"v")),
        Err(Error::ResourceNotFound(_))
    ));
    assert!(matches!(
        e.split_shard("s", "shardId-000000000000", "1000"),
        Err(Error::ResourceInUse(_))
    ));
    clock.advance(500);
    assert_eq!(e.describe_stream("s").unwrap().status.as_str(), "ACTIVE");
    e.put_record("s", PutRecordInput::new("k", b"v")).unwrap();
    e.split_shard("s", "shardId-000000000000", "1000").unwrap();
    assert_eq!(e.describe_stream("s").unwrap().status.as_str(), "UPDATING");
    e.put_record("s", PutRecordInput::new("k", b"v")).unwrap(); // writes go on while UPDATING
    assert!(matches!(
        e.increase_retention("s", 48),
        Err(Error::ResourceInUse(_))
    ));
    clock.advance(500);
    e.delete_stream("s", false).unwrap();
    assert_eq!(e.describe_stream("s").unwrap().status.as_str(), "DELETING");
    assert_eq!(e.list_streams()[0].status.as_str(), "DELETING");
    clock.advance(500);
    assert!(matches!(e.describe_stream("s"), Err(Error::ResourceNotFound(_))));
    assert!(e.list_streams().is_empty());
}

#[test]
fn reshards_of_two_streams_and_listings_run_concurrently_without_deadlock() {
    let tmp = tempfile::tempdir().unwrap();
    let e = Engine::open(tmp.path(), opts()).unwrap();
    e.create_stream("a", 2, CreateStreamOptions::default()).unwrap();
    e.create_stream("b", 2, CreateStreamOptions::default()).unwrap();
    std::thread::scope(|s| {
        for name in ["a", "b"] {
            let e = &e;
            s.spawn(move || {
                for target in [4u32, 2, 4, 2] {
                    e.update_shard_count(name, target).unwrap();
                }
            });
        }
        let e = &e;
        s.spawn(move || {
            for i in 0..200 {
                assert_eq!(e.list_streams().len(), 2);
                if i % 50 == 0 {
                    e.create_stream(&format!("c{i}"), 1, CreateStreamOptions::default())
                        .unwrap();
                    e.delete_stream(&format!("c{i}"), false).unwrap();
                }
            }
        });
    });
    assert_eq!(e.describe_stream("a").unwrap().open_shard_count, 2);
}

#[test]
fn sequence_numbers_the_shard_never_issued_are_rejected_and_checkpoint_ids_are_normalised() {
    let tmp = tempfile::tempdir().unwrap();
    let e = Engine::open(tmp.path(), opts()).unwrap();
    e.create_stream("s", 1, CreateStreamOptions::default()).unwrap();
    let put = e.put_record("s", PutRecordInput::new("k", b"v")).unwrap();
    let future = SeqNum {
        generation: 1,
        shard_index: 0,
        position: 1000,
    }
    .encode();
    let err = e
        .get_shard_iterator(
            "s",
            "shardId-000000000000",
            StartingPosition::AtSequenceNumber(future),
        )
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
    // AFTER the newest record is the tip, which is fine.
    e.get_shard_iterator(
        "s",
        "shardId-000000000000",
        StartingPosition::AfterSequenceNumber(put.sequence_number.to_string()),
    )
    .unwrap();
    e.set_checkpoint("s", "app", "shardId-0", &put.sequence_number, None)
        .unwrap();
    assert_eq!(
        e.get_checkpoint("s", "app", "shardId-0").unwrap(),
        Some(put.sequence_number.to_string())
    );
    assert_eq!(
        e.get_checkpoint("s", "app", "shardId-000000000000").unwrap(),
        Some(put.sequence_number.to_string())
    );
}

/// A subscriber that has read nothing of an empty shard gets a
/// ContinuationSequenceNumber that marks "before the first record"; KCL
/// resubscribes with it (AFTER_SEQUENCE_NUMBER) every five minutes. It must
/// be accepted while the shard is still empty, and resume at the first
/// record once one arrives, never past it.
#[test]
fn a_continuation_number_from_before_the_first_record_resumes_at_the_first_record() {
    let tmp = tempfile::tempdir().unwrap();
    let e = Engine::open(tmp.path(), opts()).unwrap();
    e.create_stream("s", 1, CreateStreamOptions::default()).unwrap();
    let shard = "shardId-000000000000";
    let marker = e.continuation_sequence_number("s", shard, 0).unwrap();
    for start in [
        StartingPosition::AfterSequenceNumber(marker.clone()),
        StartingPosition::AtSequenceNumber(marker.clone()),
    ] {
        // Still empty: accepted, and nothing to read yet.
        let it = e.get_shard_iterator("s", shard, start.clone()).unwrap();
        let r = e.get_records(&it, Some(10)).unwrap();
        assert!(r.records.is_empty(), "{start:?}");
    }
    let put = e.put_record("s", PutRecordInput::new("k", b"first")).unwrap();
    e.put_record("s", PutRecordInput::new("k", b"second")).unwrap();
    for start in [
        StartingPosition::AfterSequenceNumber(marker.clone()),
        StartingPosition::AtSequenceNumber(marker.clone()),
    ] {
        let it = e.get_shard_iterator("s", shard, start.clone()).unwrap();
        let r = e.get_records(&it, Some(10)).unwrap();
        let data: Vec<&[u8]> = r.records.iter().map(|r| &r.data[..]).collect();
        assert_eq!(data, [&b"first"[..], &b"second"[..]], "{start:?}");
        assert_eq!(r.records[0].sequence_number, put.sequence_number);
    }
    // Once the first record is read, the continuation is that record's own
    // number, and AFTER it resumes at the second.
    let after_first = e.continuation_sequence_number("s", shard, 1).unwrap();
    assert_eq!(after_first, put.sequence_number.to_string());
    let it = e
        .get_shard_iterator("s", shard, StartingPosition::AfterSequenceNumber(after_first))
        .unwrap();
    let r = e.get_records(&it, Some(10)).unwrap();
    assert_eq!(r.records.len(), 1);
    assert_eq!(&r.records[0].data[..], b"second");
    // The marker of older builds (position 0, sub-sequence 1), which a
    // consumer may have checkpointed, means the same, for reads and for
    // checkpoints.
    let old = SeqNum {
        generation: 1,
        shard_index: 0,
        position: 0,
    }
    .encode_before_start();
    for start in [
        StartingPosition::AfterSequenceNumber(old.clone()),
        StartingPosition::AtSequenceNumber(old.clone()),
    ] {
        let it = e.get_shard_iterator("s", shard, start.clone()).unwrap();
        let r = e.get_records(&it, Some(1)).unwrap();
        assert_eq!(r.records[0].sequence_number, put.sequence_number, "{start:?}");
    }
    e.set_checkpoint("s", "app", shard, &old, None).unwrap();
    // Another shard's marker is refused with Kinesis's message, the new
    // form and the old.
    e.create_stream("t", 2, CreateStreamOptions::default()).unwrap();
    let other = e
        .continuation_sequence_number("t", "shardId-000000000001", 0)
        .unwrap();
    let other_old = SeqNum {
        generation: 1,
        shard_index: 1,
        position: 0,
    }
    .encode_before_start();
    for seq in [other, other_old] {
        let err = e
            .get_shard_iterator(
                "t",
                "shardId-000000000000",
                StartingPosition::AfterSequenceNumber(seq),
            )
            .unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
        assert!(
            err.to_string()
                .contains("It encodes shardId-000000000001, while it was used in a call to a shard with shardId-000000000000"),
            "{err}"
        );
    }
}

/// A consumer ARN names the consumer registered at the time it ends in: a
/// deregistration by an old ARN must not remove a consumer registered again
/// under the same name, and the check is made where the consumer is removed.
#[test]
fn a_deregistration_for_another_registration_time_leaves_the_consumer() {
    let tmp = tempfile::tempdir().unwrap();
    let e = Engine::open(tmp.path(), opts()).unwrap();
    e.create_stream("s", 1, CreateStreamOptions::default()).unwrap();
    let c = e.register_consumer("s", "app").unwrap();
    let at_s = c.created_ms.div_euclid(1000);
    let err = e
        .deregister_consumer("s", "app", Some(at_s - 1), &[])
        .unwrap_err();
    assert!(matches!(err, Error::ResourceNotFound(_)), "{err}");
    assert_eq!(e.describe_consumer("s", "app").unwrap().created_ms, c.created_ms);
    e.deregister_consumer("s", "app", Some(at_s), &[]).unwrap();
    assert!(e.describe_consumer("s", "app").is_err());
}

/// A consumer's settings (its tags and policy, kept by the server as
/// stream settings) change only while the consumer an ARN names is
/// registered, checked under the stream's lock; and they go with the
/// consumer, in the change that removes it, so a consumer registered again
/// under the name starts without them.
#[test]
fn consumer_settings_change_only_for_the_registration_named_and_go_with_the_consumer() {
    let tmp = tempfile::tempdir().unwrap();
    let e = Engine::open(tmp.path(), opts()).unwrap();
    e.create_stream("s", 1, CreateStreamOptions::default()).unwrap();
    let at_s = e
        .register_consumer("s", "app")
        .unwrap()
        .created_ms
        .div_euclid(1000);
    let set = |at: Option<i64>, v: i64| {
        e.update_consumer_setting("s", "app", at, "Tags/app", |_| Ok(Some(v.into())))
    };

    let err = set(Some(at_s - 1), 1).unwrap_err();
    assert!(matches!(err, Error::ResourceNotFound(_)), "{err}");
    assert_eq!(e.stream_setting("s", "Tags/app").unwrap(), None);
    let err = e
        .update_consumer_setting("s", "other", None, "Tags/other", |_| Ok(Some(1.into())))
        .unwrap_err();
    assert!(matches!(err, Error::ResourceNotFound(_)), "{err}");
    assert_eq!(e.stream_setting("s", "Tags/other").unwrap(), None);

    set(Some(at_s), 2).unwrap();
    set(None, 3).unwrap();
    e.set_stream_setting("s", "Unrelated", Some(4.into())).unwrap();
    assert_eq!(e.stream_setting("s", "Tags/app").unwrap(), Some(3.into()));

    e.deregister_consumer("s", "app", Some(at_s), &["Tags/app".to_string()])
        .unwrap();
    assert_eq!(e.stream_setting("s", "Tags/app").unwrap(), None);
    assert_eq!(e.stream_setting("s", "Unrelated").unwrap(), Some(4.into()));
    let err = set(None, 5).unwrap_err();
    assert!(matches!(err, Error::ResourceNotFound(_)), "{err}");

    // A setting left behind (by a stop of an older build between its two
    // steps) is removed by the registration that reuses the name.
    e.set_stream_setting("s", "Tags/app", Some(6.into())).unwrap();
    e.register_consumer_forgetting("s", "app", &["Tags/app".to_string()])
        .unwrap();
    assert_eq!(e.stream_setting("s", "Tags/app").unwrap(), None);
    assert_eq!(e.stream_setting("s", "Unrelated").unwrap(), Some(4.into()));

    // Both changes are durable: a reopened engine sees the same.
    drop(e);
    let e = Engine::open(tmp.path(), opts()).unwrap();
    assert_eq!(e.stream_setting("s", "Tags/app").unwrap(), None);
    assert_eq!(e.stream_setting("s", "Unrelated").unwrap(), Some(4.into()));
    assert!(e.describe_consumer("s", "app").is_ok());
}

fn keyring(state: shardlog_stream::KeyState) -> Arc<shardlog_stream::Keyring> {
    use base64::Engine as _;
    Arc::new(
        shardlog_stream::Keyring::from_specs(vec![shardlog_stream::KeySpec {
            id: "11111111-2222-3333-4444-555555555555".into(),
            aliases: vec!["alias/orders".into()],
            material: base64::engine::general_purpose::STANDARD.encode([7u8; 32]),
            state,
        }])
        .unwrap(),
    )
}

fn files_contain(dir: &std::path::Path, needle: &[u8]) -> bool {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if std::fs::read(&p)
                .unwrap()
                .windows(needle.len())
                .any(|w| w == needle)
            {
                return true;
            }
        }
    }
    false
}

#[test]
fn encrypted_streams_keep_keys_and_data_off_disk_and_read_back_across_restart_and_stop() {
    let tmp = tempfile::tempdir().unwrap();
    let with_keys = EngineOptions {
        keyring: Some(keyring(shardlog_stream::KeyState::Enabled)),
        ..opts()
    };
    {
        let e = Engine::open(tmp.path(), with_keys.clone()).unwrap();
        e.create_stream("enc", 1, CreateStreamOptions::default()).unwrap();
        let err = e.start_stream_encryption("enc", "alias/missing").unwrap_err();
        assert_eq!(err.kinesis_name(), "KMSNotFoundException", "{err}");
        e.start_stream_encryption("enc", "arn:aws:kms:us-east-1:000000000000:alias/orders")
            .unwrap();
        let d = e.describe_stream("enc").unwrap();
        assert_eq!(
            d.encryption_key_id.as_deref(),
            Some("arn:aws:kms:us-east-1:000000000000:alias/orders")
        );
        let out = e
            .put_record("enc", PutRecordInput::new("secret-key-SL", b"secret-data-SL"))
            .unwrap();
        assert!(out.encrypted);
        // Stopping keeps old records sealed; new ones are stored in the clear.
        e.stop_stream_encryption("enc", "alias/orders").unwrap();
        let out = e
            .put_record("enc", PutRecordInput::new("plain-key", b"plain-data"))
            .unwrap();
        assert!(!out.encrypted);
    }
    assert!(
        !files_contain(tmp.path(), b"secret-data-SL"),
        "sealed data is on disk in the clear"
    );
    assert!(
        !files_contain(tmp.path(), b"secret-key-SL"),
        "sealed key is on disk in the clear"
    );
    assert!(files_contain(tmp.path(), b"plain-data"));

    let e = Engine::open(tmp.path(), with_keys).unwrap();
    let recs = read_all(&e, "enc", "shardId-000000000000");
    let got: Vec<(&str, &[u8], bool)> = recs
        .iter()
        .map(|r| (r.partition_key.as_str(), &r.data[..], r.encrypted))
        .collect();
    assert_eq!(
        got,
        vec![
            ("secret-key-SL", &b"secret-data-SL"[..], true),
            ("plain-key", &b"plain-data"[..], false)
        ]
    );
    assert_eq!(e.describe_stream("enc").unwrap().encryption_key_id, None);
    drop(e);

    // Without the key, sealed records are refused with KMS's error, not
    // served as garbage.
    let e = Engine::open(tmp.path(), opts()).unwrap();
    let it = e
        .get_shard_iterator("enc", "shardId-000000000000", StartingPosition::TrimHorizon)
        .unwrap();
    let err = e.get_records(&it, None).unwrap_err();
    assert_eq!(err.kinesis_name(), "KMSNotFoundException", "{err}");
}

#[test]
fn a_disabled_key_refuses_writes_and_the_managed_key_needs_no_key_file() {
    let tmp = tempfile::tempdir().unwrap();
    let e = Engine::open(
        tmp.path(),
        EngineOptions {
            keyring: Some(keyring(shardlog_stream::KeyState::Disabled)),
            ..opts()
        },
    )
    .unwrap();
    e.create_stream("s", 2, CreateStreamOptions::default()).unwrap();
    let err = e.start_stream_encryption("s", "alias/orders").unwrap_err();
    assert_eq!(err.kinesis_name(), "KMSDisabledException");
    e.start_stream_encryption("s", "alias/aws/kinesis").unwrap();
    let recs: Vec<PutRecordInput<'_>> = (0..50)
        .map(|i| PutRecordInput::new(["a", "b", "c", "d", "e"][i % 5], b"payload"))
        .collect();
    let out = e.put_records("s", &recs).unwrap();
    assert!(out.iter().all(|r| r.as_ref().unwrap().encrypted));
    let total: usize = ["shardId-000000000000", "shardId-000000000001"]
        .iter()
        .map(|s| {
            read_all(&e, "s", s)
                .iter()
                .filter(|r| r.encrypted && r.data == b"payload")
                .count()
        })
        .sum();
    assert_eq!(total, 50);
}

#[test]
fn a_damaged_sealed_record_is_reported_as_corruption_never_served() {
    let fs = MemFs::new();
    let clock = ManualClock::new(T0);
    {
        let e = mem_engine(&fs, &clock);
        e.create_stream("s", 1, CreateStreamOptions::default()).unwrap();
        e.start_stream_encryption("s", "alias/aws/kinesis").unwrap();
        e.put_record("s", PutRecordInput::new("k", &[0x5a; 200])).unwrap();
    }
    // Flip a byte inside the ciphertext and fix up the frame CRC so only the
    // AEAD tag can notice (a CRC-valid forgery or a misdirected write).
    let shard_dir = PathBuf::from("/data/streams/0000000000000001/shards/000000000000");
    let name = fs
        .durable_names(&shard_dir)
        .into_iter()
        .find(|n| n.ends_with(".seg"))
        .unwrap();
    let seg = shard_dir.join(name);
    let mut bytes = fs.contents(&seg).unwrap();
    let frame_at = 64; // the first frame follows the 64-byte segment header
    let len = u32::from_le_bytes(bytes[frame_at + 4..frame_at + 8].try_into().unwrap()) as usize;
    bytes[frame_at + len - 20] ^= 0x01; // inside the ciphertext
    let mut h = crc32fast::Hasher::new();
    h.update(&bytes[16..24]); // the segment's file id
    h.update(&bytes[frame_at + 4..frame_at + len]);
    let crc = h.finalize().to_le_bytes();
    fs.corrupt(
        &seg,
        (frame_at + len - 20) as u64,
        &bytes[frame_at + len - 20..frame_at + len - 19],
    )
    .unwrap();
    fs.corrupt(&seg, frame_at as u64, &crc).unwrap();
    let e = mem_engine(&fs, &clock);
    let it = e
        .get_shard_iterator("s", "shardId-000000000000", StartingPosition::TrimHorizon)
        .unwrap();
    let err = e.get_records(&it, None).unwrap_err();
    assert!(err.to_string().contains("corruption"), "{err}");
    assert!(err.to_string().contains(".seg"), "names the file: {err}");
}

#[test]
fn accounts_and_regions_see_only_their_own_streams() {
    let tmp = tempfile::tempdir().unwrap();
    let root = Engine::open(tmp.path(), opts()).unwrap();
    root.create_stream("same-name", 1, CreateStreamOptions::default())
        .unwrap();
    let other = root.for_scope("111122223333", "eu-west-1").unwrap();
    assert!(other.list_streams().is_empty());
    other
        .create_stream("same-name", 3, CreateStreamOptions::default())
        .unwrap();
    other
        .put_record("same-name", PutRecordInput::new("k", b"theirs"))
        .unwrap();
    assert_eq!(root.describe_stream("same-name").unwrap().open_shard_count, 1);
    let err = other.describe_stream("nope").unwrap_err();
    assert!(err.to_string().contains("under account 111122223333"), "{err}");
    // An iterator of one account is useless in another.
    let it = other
        .get_shard_iterator("same-name", "shardId-000000000000", StartingPosition::TrimHorizon)
        .unwrap();
    assert!(root.get_records(&it, None).is_err());
    assert!(root.for_scope("12", "eu-west-1").is_err());
    assert!(root.for_scope("111122223333", "EU WEST").is_err());
    drop(other);
    drop(root);
    // Scopes persist in their own directories.
    let root = Engine::open(tmp.path(), opts()).unwrap();
    let other = root.for_scope("111122223333", "eu-west-1").unwrap();
    assert_eq!(other.describe_stream("same-name").unwrap().open_shard_count, 3);
}

#[test]
fn a_full_disk_refuses_writes_with_a_retriable_error_keeps_reads_and_recovers_when_space_returns() {
    let fs = MemFs::new();
    let clock = ManualClock::new(T0);
    let e = mem_engine(&fs, &clock);
    e.create_stream("s", 1, CreateStreamOptions::default()).unwrap();
    for i in 0..20 {
        e.put_record("s", PutRecordInput::new("k", format!("before-{i}").as_bytes()))
            .unwrap();
    }
    fs.set_capacity(Some(fs.used_bytes()));
    let big = vec![7u8; 64 * 1024];
    let mut refused = 0;
    for _ in 0..5 {
        match e.put_record("s", PutRecordInput::new("k", &big)) {
            Ok(_) => {}
            Err(err) => {
                assert_eq!(
                    err.kinesis_name(),
                    "ProvisionedThroughputExceededException",
                    "{err}"
                );
                assert!(err.to_string().contains("no space left"), "{err}");
                refused += 1;
            }
        }
    }
    assert!(refused > 0, "a full disk must refuse some writes");
    assert!(
        e.problems().is_empty(),
        "a full disk is not damage: {:?}",
        e.problems()
    );
    assert_eq!(read_all(&e, "s", "shardId-000000000000").len(), 20 + 5 - refused);
    fs.set_capacity(None);
    e.put_record("s", PutRecordInput::new("k", b"after")).unwrap();
    drop(e);
    fs.crash(CrashPlan::LoseUnsynced);
    let e = mem_engine(&fs, &clock);
    let recs = read_all(&e, "s", "shardId-000000000000");
    assert_eq!(recs.len(), 20 + 5 - refused + 1);
    assert_eq!(recs.last().unwrap().data, b"after");
}

#[test]
fn a_failed_fsync_fences_only_its_shard_shows_in_problems_and_reopening_recovers() {
    let fs = MemFs::new();
    let clock = ManualClock::new(T0);
    let e = mem_engine(&fs, &clock);
    e.create_stream("s", 1, CreateStreamOptions::default()).unwrap();
    e.create_stream("other", 1, CreateStreamOptions::default())
        .unwrap();
    e.put_record("s", PutRecordInput::new("k", b"acked")).unwrap();
    fs.fail_next_syncs(1);
    let err = e
        .put_record("s", PutRecordInput::new("k", b"failed"))
        .unwrap_err();
    assert_eq!(err.kinesis_name(), "InternalFailure", "{err}");
    // Sticky: the shard refuses writes until the engine is reopened; the
    // fsync is never retried as if nothing happened.
    let again = e.put_record("s", PutRecordInput::new("k", b"later")).unwrap_err();
    assert!(again.to_string().contains("poisoned"), "{again}");
    let problems = e.problems();
    assert!(
        problems
            .iter()
            .any(|p| p.contains("stream s shard shardId-000000000000 refuses writes")),
        "{problems:?}"
    );
    // Other streams go on.
    e.put_record("other", PutRecordInput::new("k", b"fine")).unwrap();
    // Reads of the fenced shard still work and show only durable records.
    let data: Vec<Vec<u8>> = read_all(&e, "s", "shardId-000000000000")
        .into_iter()
        .map(|r| r.data.into_vec())
        .collect();
    assert_eq!(data, vec![b"acked".to_vec()]);
    drop(e);
    fs.crash(CrashPlan::KeepUnsynced);
    let e = mem_engine(&fs, &clock);
    assert!(e.problems().is_empty(), "{:?}", e.problems());
    let data: Vec<Vec<u8>> = read_all(&e, "s", "shardId-000000000000")
        .into_iter()
        .map(|r| r.data.into_vec())
        .collect();
    assert_eq!(
        data,
        vec![b"acked".to_vec()],
        "the unacknowledged record never reappears"
    );
    e.put_record("s", PutRecordInput::new("k", b"after-reopen"))
        .unwrap();
}

/// Reads shard 0 of stream "s" from its trim horizon, `limit` records a
/// call, until its end or a read error, which must name corruption; returns
/// the data served.
fn served_until_damage(e: &Engine, limit: usize) -> Vec<Vec<u8>> {
    let mut it = e
        .get_shard_iterator("s", "shardId-000000000000", StartingPosition::TrimHorizon)
        .unwrap();
    let mut served = Vec::new();
    loop {
        match e.get_records(&it, Some(limit)) {
            Ok(r) => {
                let empty = r.records.is_empty();
                served.extend(r.records.into_iter().map(|r| r.data.into_vec()));
                match r.next_shard_iterator {
                    Some(n) if !empty => it = n,
                    _ => return served,
                }
            }
            Err(err) => {
                assert!(err.to_string().contains("corruption"), "{err}");
                return served;
            }
        }
    }
}

#[test]
fn a_misdirected_write_over_acknowledged_data_is_caught_by_checksums_and_never_served() {
    let fs = MemFs::new();
    let clock = ManualClock::new(T0);
    let e = mem_engine(&fs, &clock);
    e.create_stream("s", 1, CreateStreamOptions::default()).unwrap();
    let written: Vec<Vec<u8>> = (0..30)
        .map(|i| format!("record-{i:03}-{}", "y".repeat(100)).into_bytes())
        .collect();
    for d in &written {
        e.put_record("s", PutRecordInput::new("k", d)).unwrap();
    }
    // The next write lands 1,500 bytes early, over acknowledged records,
    // and reports success.
    fs.misdirect_next_write(-1500);
    let _ = e.put_record("s", PutRecordInput::new("k", b"misdirected"));
    drop(e);
    fs.crash(CrashPlan::KeepUnsynced);
    let e = mem_engine(&fs, &clock);
    let problems = e.problems();
    assert!(
        problems
            .iter()
            .any(|p| p.contains("read-only") && p.contains(".seg")),
        "the damage is reported with its file: {problems:?}"
    );
    // Everything served is exactly what was written, in order; the read
    // stops at the damage with a corruption error.
    let served = served_until_damage(&e, 7);
    assert!(served.len() < written.len(), "damaged records are not served");
    assert_eq!(served[..], written[..served.len()]);
    let err = e.put_record("s", PutRecordInput::new("k", b"x")).unwrap_err();
    assert!(err.to_string().contains("quarantined"), "{err}");
}

#[test]
fn damage_in_a_synced_prefix_is_found_by_the_pass_after_open_and_quarantines_the_shard() {
    let fs = MemFs::new();
    let clock = ManualClock::new(T0);
    let written: Vec<Vec<u8>> = (0..30)
        .map(|i| format!("record-{i:03}-{}", "z".repeat(200)).into_bytes())
        .collect();
    {
        let e = mem_engine(&fs, &clock);
        e.create_stream("s", 1, CreateStreamOptions::default()).unwrap();
        for d in &written {
            e.put_record("s", PutRecordInput::new("k", d)).unwrap();
        }
        std::mem::forget(e); // a crash: no clean stop
    }
    fs.crash(CrashPlan::KeepUnsynced);
    let shard_dir = PathBuf::from("/data/streams/0000000000000001/shards/000000000000");
    // The active segment is the last one.
    let name = fs
        .durable_names(&shard_dir)
        .into_iter()
        .filter(|n| n.ends_with(".seg"))
        .max()
        .unwrap();
    let seg = shard_dir.join(name);
    // Rot one bit in the data of its 6th record: the header stays valid, so
    // only the checksum can tell, and the open walks past it.
    let bytes = fs.contents(&seg).unwrap();
    let mut at = 64usize;
    for _ in 0..5 {
        at += u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
    }
    fs.flip_bit(&seg, (at + 100) as u64, 2).unwrap();
    let e = mem_engine(&fs, &clock);
    e.finish_open_check();
    assert_eq!(e.metrics().open_check_pending_bytes, 0);
    assert_eq!(e.metrics().corruptions, 1);
    let problems = e.problems();
    assert!(
        problems
            .iter()
            .any(|p| p.contains("read-only") && p.contains(".seg") && p.contains(&at.to_string())),
        "the damage is reported with its file and offset: {problems:?}"
    );
    let err = e.put_record("s", PutRecordInput::new("k", b"x")).unwrap_err();
    assert!(err.to_string().contains("quarantined"), "{err}");
    // Readers get the records before the damage, then a corruption error.
    let served = served_until_damage(&e, 4);
    assert!(served.len() < written.len(), "damaged records are not served");
    assert_eq!(served[..], written[..served.len()]);
}

#[test]
fn an_engine_opened_after_a_crash_checks_its_synced_prefixes_in_the_background() {
    let fs = MemFs::new();
    let clock = ManualClock::new(T0);
    {
        let e = mem_engine(&fs, &clock);
        e.create_stream("s", 3, CreateStreamOptions::default()).unwrap();
        for i in 0..300 {
            e.put_record("s", PutRecordInput::new(&format!("k{i}"), &[7u8; 300]))
                .unwrap();
        }
        std::mem::forget(e);
    }
    fs.crash(CrashPlan::KeepUnsynced);
    let e = mem_engine(&fs, &clock);
    // The background pass finishes on its own; nothing is damaged.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while e.metrics().open_check_pending_bytes > 0 {
        assert!(std::time::Instant::now() < deadline, "the pass never finished");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert!(e.problems().is_empty(), "{:?}", e.problems());
    let total: usize = [
        "shardId-000000000000",
        "shardId-000000000001",
        "shardId-000000000002",
    ]
    .iter()
    .map(|s| read_all(&e, "s", s).len())
    .sum();
    assert_eq!(total, 300);
    e.put_record("s", PutRecordInput::new("k", b"after")).unwrap();
}

#[test]
fn dropping_an_engine_stops_its_retention_thread_without_waiting_an_interval() {
    let tmp = tempfile::tempdir().unwrap();
    for _ in 0..20 {
        let e = Engine::open(
            tmp.path(),
            EngineOptions {
                retention_check_interval_ms: 600_000,
                ..EngineOptions::default()
            },
        )
        .unwrap();
        let started = std::time::Instant::now();
        drop(e);
        // Ten minutes is the interval; a lost wake-up would wait for it.
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "drop waited {:?}",
            started.elapsed()
        );
    }
}

/// Found by the `stream_metadata` fuzz target: an ENGINE.json whose
/// `managed_key` had the right length but a non-hex digit panicked in
/// `copy_from_slice` on open. A damaged key is now a metadata error (records
/// may be sealed with it, so it is never silently replaced); a missing one
/// (directories from before encryption) is still made on open.
#[test]
fn engine_with_a_malformed_managed_key_fails_to_open_instead_of_panicking() {
    let fs = MemFs::new();
    let clock = ManualClock::new(T0);
    drop(mem_engine(&fs, &clock));
    let path = PathBuf::from("/data/ENGINE.json");
    let bytes = fs.contents(&path).unwrap();
    let good: serde_json::Value =
        serde_json::from_slice(shardlog_stream::meta::verify_meta_bytes(&bytes).unwrap()).unwrap();
    let key = good["managed_key"].as_str().unwrap().to_string();
    assert_eq!(key.len(), 64);
    let reopen = |managed_key: &str| {
        let mut m = good.clone();
        m["managed_key"] = managed_key.into();
        shardlog_segment::fs::write_atomic(&fs, &path, &serde_json::to_vec(&m).unwrap()).unwrap();
        Engine::open_with(
            Arc::new(fs.clone()),
            PathBuf::from("/data"),
            small_opts(),
            Arc::new(clock.clone()),
        )
    };
    let not_hex = format!("{}={}", &key[..9], &key[10..]);
    let short = &key[..62];
    let long = format!("{key}00");
    for bad in [not_hex.as_str(), short, long.as_str(), &"é".repeat(32)] {
        match reopen(bad) {
            Err(Error::Metadata { .. }) => {}
            Err(e) => panic!("{bad:?}: unexpected error {e}"),
            Ok(_) => panic!("{bad:?}: opened with a malformed managed key"),
        }
    }
    assert!(reopen(&key).is_ok());
    // A directory made before encryption at rest gets a key on open.
    drop(reopen("").unwrap());
    let bytes = fs.contents(&path).unwrap();
    let m: serde_json::Value =
        serde_json::from_slice(shardlog_stream::meta::verify_meta_bytes(&bytes).unwrap()).unwrap();
    assert_eq!(m["managed_key"].as_str().unwrap().len(), 64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_puts_on_runtime_workers_are_durable_ordered_and_survive_a_crash() {
    let fs = MemFs::new();
    let clock = ManualClock::new(T0);
    let e = mem_engine(&fs, &clock);
    e.create_stream("s", 3, CreateStreamOptions::default()).unwrap();
    // 8 tasks put 50 records each, awaiting durability on the workers.
    let mut tasks = Vec::new();
    for t in 0..8 {
        let e = e.clone();
        tasks.push(tokio::spawn(async move {
            let key = format!("t{t}");
            let mut seqs = Vec::new();
            for i in 0..50u32 {
                let wait = e
                    .put_record_durable("s", PutRecordInput::new(&key, i.to_string().as_bytes()))
                    .unwrap();
                let out = wait.await.unwrap();
                seqs.push((out.shard_id.to_string(), out.sequence_number.to_string()));
            }
            seqs
        }));
    }
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    assert_eq!(acked.len(), 400);
    // An unknown stream is refused before anything is written.
    assert!(matches!(
        e.put_record_durable("nope", PutRecordInput::new("k", b"v")),
        Err(Error::ResourceNotFound(_))
    ));
    std::mem::forget(e);
    fs.crash(CrashPlan::LoseUnsynced);
    let e = mem_engine(&fs, &clock);
    let mut per_key: HashMap<String, Vec<u32>> = HashMap::new();
    let mut found = std::collections::HashSet::new();
    for shard in e.list_shards("s").unwrap() {
        for r in read_all(&e, "s", &shard.shard_id) {
            found.insert((shard.shard_id.to_string(), r.sequence_number.to_string()));
            per_key
                .entry(r.partition_key)
                .or_default()
                .push(String::from_utf8(r.data.into_vec()).unwrap().parse().unwrap());
        }
    }
    for a in &acked {
        assert!(found.contains(a), "acknowledged {a:?} lost in the crash");
    }
    for v in per_key.values() {
        assert_eq!(*v, (0..50).collect::<Vec<_>>());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_batches_over_one_and_many_shards_are_durable_and_survive_a_crash() {
    let fs = MemFs::new();
    let clock = ManualClock::new(T0);
    let e = mem_engine(&fs, &clock);
    e.create_stream("s", 4, CreateStreamOptions::default()).unwrap();
    let mut acked = Vec::new();
    for b in 0..20u32 {
        // Even batches keep one key (one shard, the pool's fdatasync); odd
        // ones spread over every shard (the coordinator's shared syncfs).
        let keys: Vec<String> = (0..50u32)
            .map(|i| {
                if b % 2 == 0 {
                    format!("one-{b}")
                } else {
                    format!("k{b}-{i}")
                }
            })
            .collect();
        let data: Vec<Vec<u8>> = (0..50u32).map(|i| format!("{b}-{i}").into_bytes()).collect();
        let batch: Vec<PutRecordInput<'_>> = keys
            .iter()
            .zip(&data)
            .map(|(k, d)| PutRecordInput::new(k, d))
            .collect();
        let wait = e.put_records_durable("s", &batch).unwrap();
        for (r, d) in wait.await.unwrap().into_iter().zip(&data) {
            let out = r.unwrap();
            acked.push((
                out.shard_id.to_string(),
                out.sequence_number.to_string(),
                d.clone(),
            ));
        }
    }
    assert_eq!(acked.len(), 1000);
    std::mem::forget(e);
    fs.crash(CrashPlan::LoseUnsynced);
    let e = mem_engine(&fs, &clock);
    let mut found = HashMap::new();
    for shard in e.list_shards("s").unwrap() {
        for r in read_all(&e, "s", &shard.shard_id) {
            found.insert(
                (shard.shard_id.to_string(), r.sequence_number.to_string()),
                r.data.to_vec(),
            );
        }
    }
    for (shard, seq, data) in &acked {
        assert_eq!(
            found.get(&(shard.clone(), seq.clone())),
            Some(data),
            "acknowledged {seq} lost"
        );
    }
}

#[test]
fn all_shards_share_one_index_memory_budget_and_iterators_still_find_every_record() {
    let fs = MemFs::new();
    let clock = ManualClock::new(T0);
    // Far too small for the sealed indexes of 4 shards × ~15 segments.
    let budget = 4 * 1024;
    let e = Engine::open_with(
        Arc::new(fs.clone()),
        PathBuf::from("/data"),
        EngineOptions {
            index_cache: Some(shardlog_stream::IndexCache::new(budget)),
            ..small_opts()
        },
        Arc::new(clock.clone()),
    )
    .unwrap();
    e.create_stream("s", 4, CreateStreamOptions::default()).unwrap();
    let data = vec![9u8; 1000];
    let mut written = Vec::new();
    for i in 0..4000u32 {
        if i % 50 == 0 {
            clock.advance(1);
        }
        let out = e
            .put_record("s", PutRecordInput::new(&format!("k{i}"), &data))
            .unwrap();
        written.push((out.shard_id.to_string(), out.sequence_number.to_string(), i));
    }
    for (shard, seq, i) in written.iter().step_by(37) {
        let it = e
            .get_shard_iterator("s", shard, StartingPosition::AtSequenceNumber(seq.clone()))
            .unwrap();
        let r = e.get_records(&it, Some(1)).unwrap();
        assert_eq!(&r.records[0].sequence_number, seq, "record {i}");
        assert_eq!(r.records[0].partition_key, format!("k{i}"));
        let m = e.metrics();
        assert!(m.index_cache.bytes <= budget, "{:?}", m.index_cache);
    }
    let m = e.metrics();
    assert_eq!(m.index_cache_budget_bytes, budget);
    assert!(m.index_cache.evictions > 0, "{:?}", m.index_cache);
    assert!(
        m.index_cache.misses > 0 && m.index_cache.hits > 0,
        "{:?}",
        m.index_cache
    );
}

#[test]
fn capacity_mode_switches_twice_a_day_at_most_and_the_count_survives_a_restart() {
    let fs = MemFs::new();
    let clock = ManualClock::new(1_700_000_000_000);
    {
        let e = mem_engine(&fs, &clock);
        e.create_stream("s", 1, CreateStreamOptions::default()).unwrap();
        e.update_stream_mode("s", StreamMode::OnDemand).unwrap();
        // Asking for the mode it has changes nothing and does not count.
        e.update_stream_mode("s", StreamMode::OnDemand).unwrap();
        clock.advance(HOUR_MS);
        e.update_stream_mode("s", StreamMode::Provisioned).unwrap();
        clock.advance(HOUR_MS);
        let err = e.update_stream_mode("s", StreamMode::OnDemand).unwrap_err();
        assert!(matches!(err, Error::LimitExceeded(_)), "{err}");
        assert!(err.to_string().contains("at most 2 times in 24 hours"), "{err}");
        assert_eq!(e.describe_stream("s").unwrap().mode, StreamMode::Provisioned);
    }
    // After a restart the two switches still count, until the first is a
    // day old.
    let e = mem_engine(&fs, &clock);
    assert!(matches!(
        e.update_stream_mode("s", StreamMode::OnDemand),
        Err(Error::LimitExceeded(_))
    ));
    clock.advance(DAY_MS - 2 * HOUR_MS);
    e.update_stream_mode("s", StreamMode::OnDemand).unwrap();
    assert_eq!(e.describe_stream("s").unwrap().mode, StreamMode::OnDemand);
    assert!(matches!(
        e.update_stream_mode("s", StreamMode::Provisioned),
        Err(Error::LimitExceeded(_))
    ));
}

fn recyclable_bytes(e: &Engine, stream: &str) -> u64 {
    e.metrics()
        .streams
        .iter()
        .filter(|s| s.name == stream)
        .flat_map(|s| s.shards.iter().map(|sh| sh.recyclable_bytes))
        .sum()
}

/// The record put as number `i`: its key and data say which it is.
fn numbered(i: u32) -> (String, Vec<u8>) {
    let mut data = format!("record {i} ").into_bytes();
    data.resize(1000, (i % 251) as u8);
    (format!("k{i}"), data)
}

fn assert_numbered_run(records: &[StoredRecord], last: u32, what: &str) {
    let first = last + 1 - records.len() as u32;
    for (r, i) in records.iter().zip(first..) {
        let (key, data) = numbered(i);
        assert_eq!(r.partition_key, key, "{what}");
        assert_eq!(&r.data[..], &data[..], "{what}: record {i}");
    }
}

#[test]
fn expired_segments_are_reused_for_new_records_that_read_back_across_a_restart() {
    let fs = MemFs::new();
    let clock = ManualClock::new(T0);
    let mut o = small_opts();
    o.log.recycle_segments_max = 2;
    let open = || {
        Engine::open_with(
            Arc::new(fs.clone()),
            PathBuf::from("/data"),
            o.clone(),
            Arc::new(clock.clone()),
        )
        .unwrap()
    };
    let e = open();
    e.create_stream("s", 1, CreateStreamOptions::default()).unwrap();
    let shard = "shardId-000000000000";
    let put = |e: &Engine, range: std::ops::Range<u32>| {
        for i in range {
            clock.advance(1);
            let (key, data) = numbered(i);
            e.put_record("s", PutRecordInput::new(&key, &data)).unwrap();
        }
    };
    put(&e, 0..400);
    // A reader keeps records of the oldest segment (their data is shared
    // with its map) while that segment expires.
    let mut it = e
        .get_shard_iterator("s", shard, StartingPosition::TrimHorizon)
        .unwrap();
    let held = e.get_records(&it, Some(10)).unwrap().records;
    assert_numbered_run(&held, 9, "held");
    clock.advance(25 * HOUR_MS);
    assert!(e.enforce_retention().unwrap() >= 4);
    assert!(recyclable_bytes(&e, "s") >= 2 * 32 * 1024, "two files kept");
    // New records roll into the kept files: the one a reader holds stays
    // kept until the reader lets go.
    put(&e, 400..520);
    assert!(recyclable_bytes(&e, "s") > 0, "the held file is not reused");
    assert_numbered_run(&held, 9, "held records unchanged");
    drop(held);
    put(&e, 520..800);
    assert_eq!(recyclable_bytes(&e, "s"), 0, "both kept files reused");
    let got = read_all(&e, "s", shard);
    assert!(got.len() >= 400, "{} records", got.len());
    assert_numbered_run(&got, 799, "before the restart");
    it = e
        .get_shard_iterator("s", shard, StartingPosition::Latest)
        .unwrap();
    drop(e);
    let e = open();
    let again = read_all(&e, "s", shard);
    assert_eq!(again.len(), got.len());
    assert_numbered_run(&again, 799, "after the restart");
    put(&e, 800..810);
    let tail = e.get_records(&it, Some(100)).unwrap().records;
    assert_numbered_run(&tail, 809, "after the restart, from LATEST");
    assert_eq!(tail.len(), 10);
}

#[test]
fn a_byte_cap_keeps_as_many_records_with_recycling_as_without() {
    let mut kept = Vec::new();
    for recycle in [0usize, 3] {
        let fs = MemFs::new();
        let clock = ManualClock::new(T0);
        let mut o = small_opts();
        o.log.recycle_segments_max = recycle;
        let e = Engine::open_with(
            Arc::new(fs.clone()),
            PathBuf::from("/data"),
            o,
            Arc::new(clock.clone()),
        )
        .unwrap();
        e.create_stream(
            "s",
            1,
            CreateStreamOptions {
                retention_bytes_max: Some(300 * 1024),
                ..Default::default()
            },
        )
        .unwrap();
        for round in 0..3u32 {
            for i in round * 400..(round + 1) * 400 {
                clock.advance(1);
                let (key, data) = numbered(i);
                e.put_record("s", PutRecordInput::new(&key, &data)).unwrap();
            }
            e.enforce_retention().unwrap();
            assert!(
                e.stream_bytes_on_disk("s").unwrap() <= 300 * 1024,
                "recycle {recycle}"
            );
        }
        if recycle > 0 {
            assert!(recyclable_bytes(&e, "s") > 0, "files were kept");
        }
        let got = read_all(&e, "s", "shardId-000000000000");
        assert_numbered_run(&got, 1199, &format!("recycle {recycle}"));
        kept.push(got.len());
    }
    // Kept files are not data: the cap does not remove records for them.
    assert_eq!(kept[0], kept[1]);
}

/// An engine on `/data` of `fs` whose small appends go through the journal
/// (or not), with the smallest journal files so that checkpoints come often.
/// Every record in `acked` (stream, shard, sequence number, data) is read
/// back from the stream of that name in its engine.
fn assert_acknowledged_found(streams: &[(&Engine, &str)], acked: &[(&str, String, String, Vec<u8>)]) {
    let mut found = HashMap::new();
    for &(engine, stream) in streams {
        for shard in engine.list_shards(stream).unwrap() {
            for r in read_all(engine, stream, &shard.shard_id) {
                found.insert(
                    (stream, shard.shard_id.to_string(), r.sequence_number.to_string()),
                    r.data.to_vec(),
                );
            }
        }
    }
    for (stream, shard, seq, data) in acked {
        assert_eq!(
            found.get(&(*stream, shard.clone(), seq.clone())),
            Some(data),
            "acknowledged {stream}/{shard}/{seq} lost"
        );
    }
}

fn journal_engine(fs: &MemFs, clock: &ManualClock, journal: bool) -> Engine {
    let mut o = small_opts();
    o.journal_small_appends = journal;
    o.journal_file_bytes = shardlog_segment::format::JOURNAL_FILE_BYTES_MIN;
    Engine::open_with(
        Arc::new(fs.clone()),
        PathBuf::from("/data"),
        o,
        Arc::new(clock.clone()),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn journaled_puts_of_every_kind_survive_a_crash_and_are_redone_even_by_an_engine_without_the_journal() {
    let fs = MemFs::new();
    let clock = ManualClock::new(T0);
    let e = journal_engine(&fs, &clock, true);
    assert!(e.journal_active());
    e.create_stream("s", 4, CreateStreamOptions::default()).unwrap();
    // Another account's streams live under this engine's directory and
    // share its journal.
    let other = e.for_scope("123456789012", "eu-west-1").unwrap();
    other
        .create_stream("o", 2, CreateStreamOptions::default())
        .unwrap();
    let mut tasks = Vec::new();
    for t in 0..8 {
        let (e, other) = (e.clone(), other.clone());
        tasks.push(tokio::spawn(async move {
            let key = format!("t{t}");
            let mut acked = Vec::new();
            for i in 0..60u32 {
                let data = format!("{t}-{i}-{}", "d".repeat(200));
                let target = if i % 5 == 0 { &other } else { &e };
                let stream = if i % 5 == 0 { "o" } else { "s" };
                let out = target
                    .put_record_durable(stream, PutRecordInput::new(&key, data.as_bytes()))
                    .unwrap()
                    .await
                    .unwrap();
                acked.push((
                    stream,
                    out.shard_id.to_string(),
                    out.sequence_number.to_string(),
                    data.into_bytes(),
                ));
            }
            acked
        }));
    }
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    // Blocking puts and a batch over every shard too.
    for i in 0..40u32 {
        let data = format!("blocking-{i}");
        let out = e
            .put_record("s", PutRecordInput::new("b", data.as_bytes()))
            .unwrap();
        acked.push((
            "s",
            out.shard_id.to_string(),
            out.sequence_number.to_string(),
            data.into_bytes(),
        ));
    }
    let keys: Vec<String> = (0..50).map(|i| format!("spread-{i}")).collect();
    let batch: Vec<PutRecordInput<'_>> = keys
        .iter()
        .map(|k| PutRecordInput::new(k, k.as_bytes()))
        .collect();
    for (r, k) in e.put_records("s", &batch).unwrap().into_iter().zip(&keys) {
        let out = r.unwrap();
        acked.push((
            "s",
            out.shard_id.to_string(),
            out.sequence_number.to_string(),
            k.clone().into_bytes(),
        ));
    }
    assert_eq!(acked.len(), 8 * 60 + 40 + 50);
    std::mem::forget(other);
    std::mem::forget(e);
    fs.crash(CrashPlan::LoseUnsynced);
    // The journal is redone at open even with the option off.
    let e = journal_engine(&fs, &clock, false);
    let other = e.for_scope("123456789012", "eu-west-1").unwrap();
    assert_acknowledged_found(&[(&e, "s"), (&other, "o")], &acked);
    assert!(e.problems().is_empty(), "{:?}", e.problems());
    assert!(!e.journal_active());
    assert!(
        !shardlog_segment::FileSystem::exists(&fs, std::path::Path::new("/data/journal/0.journal")),
        "the journal was removed after its redo"
    );
}

#[test]
fn an_engine_whose_journal_cannot_be_made_opens_without_it_and_keeps_every_put() {
    use shardlog_segment::FileSystem as _;
    let fs = MemFs::new();
    let clock = ManualClock::new(T0);
    // Room for one of the journal's two files, not both: the disk is full.
    let journal_bytes = shardlog_segment::format::JOURNAL_FILE_BYTES_MIN;
    fs.set_capacity(Some(fs.used_bytes() + journal_bytes + journal_bytes / 2));
    let e = journal_engine(&fs, &clock, true);
    assert!(!e.journal_active(), "no room for the journal");
    for name in ["0.journal", "1.journal"] {
        assert!(
            !fs.exists(&PathBuf::from("/data/journal").join(name)),
            "{name}: a journal that could not be made leaves no file behind"
        );
    }
    fs.set_capacity(None);
    // A scope opened now, with room again, must not make a journal of its
    // own: only a root's open redoes one.
    let other = e.for_scope("123456789012", "eu-west-1").unwrap();
    assert!(!other.journal_active());
    let mut acked = Vec::new();
    for (engine, stream) in [(&e, "s"), (&other, "o")] {
        engine
            .create_stream(stream, 2, CreateStreamOptions::default())
            .unwrap();
        for i in 0..30u32 {
            let data = format!("without-journal-{stream}-{i}");
            let out = engine
                .put_record(stream, PutRecordInput::new(&format!("k{i}"), data.as_bytes()))
                .unwrap();
            acked.push((
                stream,
                out.shard_id.to_string(),
                out.sequence_number.to_string(),
                data.into_bytes(),
            ));
        }
    }
    assert!(!fs.exists(std::path::Path::new(
        "/data/scopes/123456789012/eu-west-1/journal/0.journal"
    )));
    std::mem::forget(other);
    std::mem::forget(e);
    fs.crash(CrashPlan::LoseUnsynced);
    // With room again, the next open makes its journal.
    let e = journal_engine(&fs, &clock, true);
    assert!(e.journal_active());
    let other = e.for_scope("123456789012", "eu-west-1").unwrap();
    assert!(other.journal_active(), "a scope shares its root's journal");
    assert_acknowledged_found(&[(&e, "s"), (&other, "o")], &acked);
}

/// Ten blocking puts to stream "s" of `e`, each acknowledged, as
/// `assert_acknowledged_found` takes them.
fn ten_acknowledged_puts(e: &Engine) -> Vec<(&'static str, String, String, Vec<u8>)> {
    (0..10u32)
        .map(|i| {
            let data = format!("before-{i}");
            let out = e
                .put_record("s", PutRecordInput::new(&format!("k{i}"), data.as_bytes()))
                .unwrap();
            (
                "s",
                out.shard_id.to_string(),
                out.sequence_number.to_string(),
                data.into_bytes(),
            )
        })
        .collect()
}

/// A `syncfs` that fails drops every file's dirty pages at once, the
/// journal's and the segments' among them, and Linux may tell only its own
/// caller. A journal sync, or a shard's own `fdatasync`, that runs meanwhile
/// then succeeds with nothing written: the append it holds must be refused,
/// not acknowledged, and what was acknowledged before must survive a crash.
/// The failing `syncfs` comes from a batch of the root or of a scope (which
/// shares the root's coordinator).
#[test]
fn a_put_whose_sync_overlaps_a_failing_syncfs_is_refused_and_earlier_puts_survive() {
    for (journal, batch_in_scope) in [(true, false), (true, true), (false, false)] {
        let fs = MemFs::new();
        let clock = ManualClock::new(T0);
        let e = journal_engine(&fs, &clock, journal);
        let other = e.for_scope("123456789012", "eu-west-1").unwrap();
        e.create_stream("s", 2, CreateStreamOptions::default()).unwrap();
        other
            .create_stream("o", 2, CreateStreamOptions::default())
            .unwrap();
        let acked = ten_acknowledged_puts(&e);
        // The put's sync takes 100 ms; the batch's syncfs fails 30 ms
        // into it, at once, and returns 300 ms later.
        fs.set_sync_latency(Some(Duration::from_millis(100)));
        fs.set_syncfs_latency(Some(Duration::from_millis(300)));
        fs.fail_at(FsOp::SyncFs, "", 1);
        let (batch_engine, batch_stream) = if batch_in_scope { (&other, "o") } else { (&e, "s") };
        let put = std::thread::scope(|s| {
            let single = s.spawn(|| e.put_record("s", PutRecordInput::new("k0", b"during the syncfs")));
            std::thread::sleep(Duration::from_millis(30));
            let keys: Vec<String> = (0..20).map(|i| format!("spread-{i}")).collect();
            let batch: Vec<PutRecordInput<'_>> = keys
                .iter()
                .map(|k| PutRecordInput::new(k, k.as_bytes()))
                .collect();
            let results = batch_engine.put_records(batch_stream, &batch).unwrap();
            let batch_acked: Vec<_> = results
                .into_iter()
                .zip(&keys)
                .filter_map(|(r, k)| {
                    r.ok().map(|out| {
                        (
                            out.shard_id.to_string(),
                            out.sequence_number.to_string(),
                            k.clone().into_bytes(),
                        )
                    })
                })
                .collect();
            (single.join().unwrap(), batch_acked)
        });
        let (put, batch_acked) = put;
        assert_eq!(fs.failpoint_hits(FsOp::SyncFs, ""), 1, "the batch ran its syncfs");
        assert!(
            put.is_err(),
            "a put whose sync overlapped a failing syncfs was acknowledged: {put:?} (journal: {journal}, batch in a scope: {batch_in_scope})"
        );
        assert!(!e.journal_active(), "the failed syncfs stopped the journal");
        fs.set_sync_latency(None);
        fs.set_syncfs_latency(None);
        std::mem::forget(other);
        std::mem::forget(e);
        fs.crash(CrashPlan::KeepUnsynced);
        let e = journal_engine(&fs, &clock, journal);
        let other = e.for_scope("123456789012", "eu-west-1").unwrap();
        // The batch's records may have been acknowledged by the journal,
        // whose sync of them began after the syncfs had failed.
        let batch_acked: Vec<_> = batch_acked
            .into_iter()
            .map(|(shard, seq, data)| (batch_stream, shard, seq, data))
            .collect();
        assert_acknowledged_found(&[(&e, "s"), (&other, "o")], &acked);
        assert_acknowledged_found(&[(&e, "s"), (&other, "o")], &batch_acked);
    }
}

/// Every `syncfs` of the engine goes through its coordinator, the one a
/// scope's open runs at run time included: when it fails, it may have
/// dropped every file's dirty pages, so the journal stops (keeping its
/// files for the redo) and no segment sync is trusted again until a reopen.
/// Before, a scope's failed open left the journal running, and its next
/// checkpoint wrote over entries whose segment pages were gone.
#[test]
fn a_scope_whose_open_syncfs_fails_stops_the_journal_and_loses_nothing_acknowledged() {
    let fs = MemFs::new();
    let clock = ManualClock::new(T0);
    let e = journal_engine(&fs, &clock, true);
    e.create_stream("s", 2, CreateStreamOptions::default()).unwrap();
    let mut acked = ten_acknowledged_puts(&e);
    fs.fail_at(FsOp::SyncFs, "", 1);
    assert!(e.for_scope("123456789012", "eu-west-1").is_err());
    assert_eq!(fs.failpoint_hits(FsOp::SyncFs, ""), 1);
    assert!(!e.journal_active(), "the failed syncfs stopped the journal");
    // Enough for several journal files: none may be written over, and no
    // segment sync may acknowledge pages the syncfs dropped.
    let big = "x".repeat(4000);
    for i in 0..400u32 {
        let data = format!("after-{i}-{big}");
        if let Ok(out) = e.put_record("s", PutRecordInput::new(&format!("k{i}"), data.as_bytes())) {
            acked.push((
                "s",
                out.shard_id.to_string(),
                out.sequence_number.to_string(),
                data.into_bytes(),
            ));
        }
    }
    assert_eq!(
        acked.len(),
        10,
        "no put is acknowledged after a failed syncfs until a reopen"
    );
    std::mem::forget(e);
    fs.crash(CrashPlan::LoseUnsynced);
    let e = journal_engine(&fs, &clock, true);
    assert_acknowledged_found(&[(&e, "s")], &acked);
    assert!(e.journal_active());
    // After the reopen, puts are acknowledged again.
    e.put_record("s", PutRecordInput::new("k", b"after the reopen"))
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sync_pool_has_one_thread_per_core_within_bounds_unless_told() {
    let auto = shardlog_stream::sync_threads_for_this_machine();
    assert!(
        (shardlog_stream::SYNC_THREADS_AUTO_MIN..=shardlog_stream::SYNC_THREADS_AUTO_MAX).contains(&auto),
        "{auto}"
    );
    let clock = ManualClock::new(T0);
    let fs = MemFs::new();
    assert_eq!(mem_engine(&fs, &clock).sync_threads(), auto);
    for (asked, got) in [
        (3, 3),
        (1, 1),
        (1_000, shardlog_segment::sync::SYNC_POOL_THREADS_MAX),
    ] {
        let e = Engine::open_with(
            Arc::new(MemFs::new()),
            PathBuf::from("/data"),
            EngineOptions {
                sync_threads: asked,
                ..small_opts()
            },
            Arc::new(clock.clone()),
        )
        .unwrap();
        assert_eq!(e.sync_threads(), got, "asked for {asked}");
        // The pool serves the async path with any count.
        e.create_stream("s", 2, CreateStreamOptions::default()).unwrap();
        let put = e.put_record_durable("s", PutRecordInput::new("k", b"v")).unwrap();
        put.await.unwrap();
    }
}

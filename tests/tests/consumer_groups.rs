//! Consumer groups end to end: several embedded workers of one application
//! share a stream while it is split and merged; workers join, and one dies
//! without checkpointing its last batch. Every record must be processed at
//! least once, each partition key's records first processed in write order
//! (parents before children), and after the last checkpoint nothing is
//! processed again.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use shardlog_segment::fs::StdFs;
use shardlog_stream::{CreateStreamOptions, Engine, EngineOptions, GroupWorker, ManualClock, PutRecordInput};

const T0: i64 = 1_800_000_000_000;
const LEASE_MS: u64 = 3_000;
const ROUND_MS: i64 = 1_000;
const TOTAL: usize = 900;
const PER_ROUND: usize = 30;
const KEYS: usize = 20;

fn open(dir: &std::path::Path, clock: &ManualClock) -> Engine {
    Engine::open_with(
        Arc::new(StdFs),
        dir,
        EngineOptions {
            retention_check_interval_ms: 0,
            ..EngineOptions::default()
        },
        Arc::new(clock.clone()),
    )
    .unwrap()
}

/// An engine with stream "g" of one shard holding records `r0`..`r9`.
fn one_shard_of_ten_records(dir: &std::path::Path, clock: &ManualClock) -> Engine {
    let e = open(dir, clock);
    e.create_stream("g", 1, CreateStreamOptions::default()).unwrap();
    for i in 0..10 {
        e.put_record("g", PutRecordInput::new("k", format!("r{i}").as_bytes()))
            .unwrap();
    }
    e
}

/// Splits the open shard with the widest range, or merges the first two
/// adjacent open shards.
fn reshard(e: &Engine, split: bool) {
    let d = e.describe_stream("g").unwrap();
    let mut open: Vec<_> = d
        .shards
        .iter()
        .filter(|s| s.ending_sequence_number.is_none())
        .collect();
    open.sort_by_key(|s| s.hash_range.start);
    if split {
        let s = open
            .iter()
            .max_by_key(|s| s.hash_range.end - s.hash_range.start)
            .unwrap();
        let mid = s.hash_range.start + (s.hash_range.end - s.hash_range.start) / 2;
        e.split_shard("g", &s.shard_id, &mid.to_string()).unwrap();
    } else {
        e.merge_shards("g", &open[0].shard_id, &open[1].shard_id).unwrap();
    }
}

#[test]
fn workers_share_a_resharding_stream_process_everything_in_key_order_and_never_again_after_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let e = open(dir.path(), &clock);
    e.create_stream("g", 2, CreateStreamOptions::default()).unwrap();
    let new_worker = |id: &str| GroupWorker::new(e.clone(), "g", "billing", id).with_lease_ms(LEASE_MS);
    let mut workers: BTreeMap<String, GroupWorker> = BTreeMap::new();
    for id in ["w0", "w1"] {
        workers.insert(id.to_string(), new_worker(id));
    }
    let mut written: Vec<(String, Vec<u8>)> = Vec::new();
    let mut first_seen: Vec<Vec<u8>> = Vec::new();
    let mut seen = HashSet::new();
    let mut processed_total = 0usize;
    let mut idle_rounds = 0;
    for round in 0..2000 {
        // The writer, and resharding under the workers' feet.
        if written.len() < TOTAL {
            for _ in 0..PER_ROUND {
                let i = written.len();
                let key = format!("key-{}", i % KEYS);
                let data = format!("{key}/{i:05}").into_bytes();
                e.put_record("g", PutRecordInput::new(&key, &data)).unwrap();
                written.push((key, data));
            }
        }
        match round {
            6 | 20 => reshard(&e, true),
            13 => reshard(&e, false),
            8 => {
                workers.insert("w2".into(), new_worker("w2"));
            }
            _ => {}
        }
        let mut processed_now = 0;
        let ids: Vec<String> = workers.keys().cloned().collect();
        for id in ids {
            let dies = id == "w1" && round == 16;
            let w = workers.get_mut(&id).unwrap();
            // Workers lag behind the writer, so parents still hold records
            // when their children fill up: the lease order must keep keys
            // in order.
            let batches = w.poll(4).unwrap();
            let n = batches.len();
            for (b, batch) in batches.into_iter().enumerate() {
                for r in &batch.records {
                    processed_now += 1;
                    if seen.insert(r.data.clone()) {
                        first_seen.push(r.data.to_vec());
                    }
                }
                // The dying worker never checkpoints its last batch.
                if dies && b + 1 == n {
                    continue;
                }
                // A lost lease (the shard moved) is expected; the batch is
                // dropped and the new owner starts from the checkpoint.
                let _ = w.checkpoint(&batch);
            }
            if dies {
                // Killed: no shutdown, its leases simply expire.
                workers.remove(&id);
            }
        }
        processed_total += processed_now;
        clock.advance(ROUND_MS);
        if written.len() >= TOTAL && processed_now == 0 {
            idle_rounds += 1;
            if idle_rounds > 2 * (LEASE_MS as i64 / ROUND_MS) as usize && seen.len() == TOTAL {
                break;
            }
        } else {
            idle_rounds = 0;
        }
    }
    assert_eq!(seen.len(), TOTAL, "every record is processed at least once");
    assert!(
        processed_total > TOTAL,
        "the dead worker's unacknowledged batch was processed again ({processed_total})"
    );
    // Per key, records were first processed in the order they were written.
    for k in 0..KEYS {
        let key = format!("key-{k}");
        let text = |d: &Vec<u8>| String::from_utf8_lossy(d).to_string();
        let want: Vec<String> = written
            .iter()
            .filter(|(kk, _)| *kk == key)
            .map(|(_, d)| text(d))
            .collect();
        let got: Vec<String> = first_seen
            .iter()
            .filter(|d| d.starts_with(format!("{key}/").as_bytes()))
            .map(text)
            .collect();
        assert_eq!(got, want, "{key} out of order");
    }
    // Closed shards are finished; open ones have nothing left.
    let d = e.group_describe("g", "billing").unwrap();
    for s in &d.shards {
        assert_eq!(s.records_behind, 0, "{s:?}");
    }
    let closed: Vec<String> = e
        .describe_stream("g")
        .unwrap()
        .shards
        .iter()
        .filter(|s| s.ending_sequence_number.is_some())
        .map(|s| s.shard_id.to_string())
        .collect();
    assert_eq!(closed.len(), 4, "two splits and a merge close four shards");
    for c in &closed {
        assert!(
            d.shards.iter().any(|s| &s.shard_id == c && s.finished),
            "{c} is finished"
        );
    }
    // Everyone leaves; a new worker after the last checkpoints gets nothing.
    for (_, w) in std::mem::take(&mut workers) {
        w.shutdown().unwrap();
    }
    let mut late = new_worker("late");
    for _ in 0..5 {
        let batches = late.poll(1000).unwrap();
        let n: usize = batches.iter().map(|b| b.records.len()).sum();
        assert_eq!(n, 0, "nothing is processed again after the last checkpoint");
        clock.advance(ROUND_MS);
    }
    assert!(!late.shards().is_empty(), "the late worker holds the open shards");
}

#[test]
fn a_worker_that_lost_its_lease_cannot_overwrite_its_successors_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let e = one_shard_of_ten_records(dir.path(), &clock);
    let mut a = GroupWorker::new(e.clone(), "g", "app", "a").with_lease_ms(LEASE_MS);
    let stale = a.poll(5).unwrap().remove(0);
    // a stalls past its lease; b takes the shard and checkpoints.
    clock.advance(LEASE_MS as i64 + 1);
    let mut b = GroupWorker::new(e.clone(), "g", "app", "b").with_lease_ms(LEASE_MS);
    let fresh = b.poll(10).unwrap().remove(0);
    assert_eq!(
        fresh.records.len(),
        10,
        "b starts from the last checkpoint (none): everything"
    );
    b.checkpoint(&fresh).unwrap();
    let err = a.checkpoint(&stale).unwrap_err();
    assert_eq!(err.kinesis_name(), "LeaseLostException", "{err}");
    let cp = e.get_checkpoint("g", "app", "shardId-000000000000").unwrap();
    assert_eq!(
        cp.as_deref(),
        Some(fresh.records.last().unwrap().sequence_number.as_str())
    );
    // The checkpoint is durable.
    drop((a, b));
    drop(e);
    let e = open(dir.path(), &clock);
    assert_eq!(
        e.get_checkpoint("g", "app", "shardId-000000000000")
            .unwrap()
            .as_deref(),
        Some(fresh.records.last().unwrap().sequence_number.as_str())
    );
    assert_eq!(e.group_list("g").unwrap(), vec!["app".to_string()]);
}

/// A group checkpoint at the shard's StartingSequenceNumber means "nothing
/// processed yet": the shard's whole backlog counts as behind, and the
/// worker that takes the lease next starts at the first record.
#[test]
fn a_checkpoint_at_the_starting_sequence_number_resumes_at_the_first_record() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let e = one_shard_of_ten_records(dir.path(), &clock);
    let shard = "shardId-000000000000";
    let start = e.describe_stream("g").unwrap().shards[0]
        .starting_sequence_number
        .clone();
    let lease = e.group_heartbeat("g", "app", "a", LEASE_MS).unwrap().remove(0);
    e.group_checkpoint("g", "app", "a", shard, lease.lease_id, &start)
        .unwrap();
    let d = e.group_describe("g", "app").unwrap();
    assert_eq!(d.shards[0].checkpoint.as_deref(), Some(start.as_str()));
    assert_eq!(d.shards[0].records_behind, 10, "{:?}", d.shards[0]);
    e.group_release("g", "app", "a").unwrap();
    let mut b = GroupWorker::new(e.clone(), "g", "app", "b").with_lease_ms(LEASE_MS);
    let batch = b.poll(100).unwrap().remove(0);
    let data: Vec<&[u8]> = batch.records.iter().map(|r| &r.data[..]).collect();
    assert_eq!(data.len(), 10);
    assert_eq!(data[0], b"r0", "the first record is not skipped");
}

#[test]
fn four_shards_over_three_workers_give_every_worker_work() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let e = open(dir.path(), &clock);
    e.create_stream("g", 4, CreateStreamOptions::default()).unwrap();
    let beat = |w: &str| e.group_heartbeat("g", "app", w, LEASE_MS).unwrap().len();
    assert_eq!(beat("a"), 4, "alone, a takes every shard");
    for _ in 0..3 {
        for w in ["a", "b", "c"] {
            beat(w);
        }
        clock.advance(ROUND_MS);
    }
    let counts: Vec<usize> = ["a", "b", "c"].iter().map(|w| beat(w)).collect();
    assert_eq!(counts.iter().sum::<usize>(), 4, "{counts:?}");
    assert!(counts.iter().all(|&n| n >= 1), "nobody idles: {counts:?}");
    // Releasing every worker lets the group be forgotten: 100 more
    // applications can come and go on the stream.
    for w in ["a", "b", "c"] {
        e.group_release("g", "app", w).unwrap();
    }
    for i in 0..150 {
        let app = format!("short-lived-{i}");
        e.group_heartbeat("g", &app, "w", LEASE_MS).unwrap();
        e.group_release("g", &app, "w").unwrap();
    }
}

//! Named failpoints at every write, fsync, preallocation, create, rename,
//! unlink, directory sync, directory removal and syncfs of the storage path
//! (the simulator's `MemFs::fail_at`, compiled only into tests). Each case
//! arms one failpoint, runs the operation that reaches it, checks that the
//! failpoint fired and the caller got a typed error (or, where the engine
//! can do without the write, that it carried on), then crashes the simulated
//! machine with every crash plan and checks after reopening that every
//! acknowledged record is there, nothing unacknowledged is, and metadata is
//! the old or the new state.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use shardlog_stream::{
    CreateStreamOptions, Engine, EngineOptions, ManualClock, PutRecordInput, StartingPosition,
};
use shardlog_testkit::{CrashPlan, FsOp, MemFs};

const T0: i64 = 1_800_000_000_000;

fn opts() -> EngineOptions {
    shardlog_tests::small_engine_options()
}

fn open(fs: &MemFs, clock: &ManualClock) -> Engine {
    Engine::open_with(
        Arc::new(fs.clone()),
        PathBuf::from("/data"),
        opts(),
        Arc::new(clock.clone()),
    )
    .expect("the engine opens after any failure and crash")
}

/// Every stream's records, by shard.
fn contents(e: &Engine) -> BTreeMap<(String, String), Vec<Vec<u8>>> {
    let mut out = BTreeMap::new();
    for s in e.list_streams() {
        for shard in e.describe_stream(&s.name).unwrap().shards {
            let mut it = e
                .get_shard_iterator(&s.name, &shard.shard_id, StartingPosition::TrimHorizon)
                .unwrap();
            let mut recs = Vec::new();
            loop {
                let r = e
                    .get_records(&it, None)
                    .expect("reads never fail after a failpoint");
                let empty = r.records.is_empty();
                recs.extend(r.records.into_iter().map(|r| r.data.into_vec()));
                match r.next_shard_iterator {
                    Some(n) if !empty => it = n,
                    _ => break,
                }
            }
            out.insert((s.name.clone(), shard.shard_id), recs);
        }
    }
    out
}

/// A stream with acknowledged records in two shards, a few segments long.
fn setup(fs: &MemFs, clock: &ManualClock) -> (Engine, Vec<Vec<u8>>) {
    let e = open(fs, clock);
    e.create_stream("s", 2, CreateStreamOptions::default()).unwrap();
    let mut acked = Vec::new();
    for i in 0..300 {
        let d = format!("acked-{i}-{}", "p".repeat(300)).into_bytes();
        e.put_record("s", PutRecordInput::new(&format!("k{}", i % 7), &d))
            .unwrap();
        acked.push(d);
    }
    (e, acked)
}

/// Records acknowledged, and whether a failure was reported.
type Outcome = (Vec<Vec<u8>>, bool);
type CaseFn = fn(&Engine, &ManualClock) -> Outcome;

struct Case {
    name: &'static str,
    op: FsOp,
    path: &'static str,
    /// Runs the operation that reaches the failpoint; returns records it
    /// had acknowledged, and whether it reported a failure.
    run: CaseFn,
    /// Whether the operation must report the failure (some writes, such as
    /// index sidecars, are optional: the engine carries on without them).
    must_fail: bool,
}

fn put_many(e: &Engine, tag: &str, n: usize) -> Outcome {
    let mut acked = Vec::new();
    let mut failed = false;
    for i in 0..n {
        let d = format!("{tag}-{i}-{}", "q".repeat(2000)).into_bytes();
        match e.put_record("s", PutRecordInput::new(&format!("k{}", i % 7), &d)) {
            Ok(_) => acked.push(d),
            Err(err) => {
                assert!(!err.kinesis_name().is_empty());
                failed = true;
            }
        }
    }
    (acked, failed)
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "segment write",
            op: FsOp::Write,
            path: ".seg",
            run: |e, _| put_many(e, "w", 5),
            must_fail: true,
        },
        Case {
            name: "segment fdatasync",
            op: FsOp::SyncData,
            path: ".seg",
            run: |e, _| put_many(e, "f", 5),
            must_fail: true,
        },
        Case {
            name: "segment preallocation",
            op: FsOp::SetLen,
            path: ".seg",
            run: |e, _| put_many(e, "p", 60),
            must_fail: true,
        },
        Case {
            name: "segment create (roll)",
            op: FsOp::Create,
            path: ".seg",
            run: |e, _| put_many(e, "c", 80),
            must_fail: true,
        },
        Case {
            name: "shard directory fsync (roll)",
            op: FsOp::SyncDir,
            path: "/shards/",
            run: |e, _| put_many(e, "d", 80),
            must_fail: true,
        },
        Case {
            name: "index sidecar write",
            op: FsOp::Write,
            path: ".idx",
            run: |e, _| put_many(e, "i", 80),
            must_fail: false,
        },
        Case {
            name: "index sidecar create",
            op: FsOp::Create,
            path: ".idx",
            run: |e, _| put_many(e, "r", 80),
            must_fail: false,
        },
        Case {
            name: "stream metadata write (split)",
            op: FsOp::Write,
            path: "STREAM.json",
            run: |e, _| {
                (
                    Vec::new(),
                    e.split_shard("s", "shardId-000000000000", &(1u128 << 126).to_string())
                        .is_err(),
                )
            },
            must_fail: true,
        },
        Case {
            name: "stream metadata rename (merge)",
            op: FsOp::Rename,
            path: "STREAM.json",
            run: |e, _| {
                (
                    Vec::new(),
                    e.merge_shards("s", "shardId-000000000000", "shardId-000000000001")
                        .is_err(),
                )
            },
            must_fail: true,
        },
        Case {
            name: "stream directory fsync (tags)",
            op: FsOp::SyncDir,
            path: "/streams/0000000000000001",
            run: |e, _| {
                let tags = BTreeMap::from([("team".to_string(), "data".to_string())]);
                (Vec::new(), e.add_tags("s", &tags).is_err())
            },
            must_fail: true,
        },
        Case {
            name: "checkpoint rename",
            op: FsOp::Rename,
            path: "CHECKPOINTS.json",
            run: |e, _| {
                let seq = e.describe_stream("s").unwrap().shards[0]
                    .starting_sequence_number
                    .clone();
                (
                    Vec::new(),
                    e.set_checkpoint("s", "app", "shardId-000000000000", &seq, None)
                        .is_err(),
                )
            },
            must_fail: true,
        },
        Case {
            name: "engine metadata rename (create stream)",
            op: FsOp::Rename,
            path: "ENGINE.json",
            run: |e, _| {
                (
                    Vec::new(),
                    e.create_stream("t", 1, CreateStreamOptions::default()).is_err(),
                )
            },
            must_fail: true,
        },
        Case {
            name: "retention unlink",
            op: FsOp::Remove,
            path: ".seg",
            run: |e, clock| {
                clock.advance(25 * 3600 * 1000);
                (Vec::new(), e.enforce_retention().is_err())
            },
            must_fail: true,
        },
        Case {
            name: "stream directory removal (delete)",
            op: FsOp::RemoveDirAll,
            path: "/streams/",
            run: |e, _| (Vec::new(), e.delete_stream("s", true).is_err()),
            must_fail: false,
        },
        Case {
            name: "syncfs (batch over shards)",
            op: FsOp::SyncFs,
            path: "/data",
            run: |e, _| {
                let recs: Vec<Vec<u8>> = (0..20).map(|i| format!("batch-{i}").into_bytes()).collect();
                let inputs: Vec<PutRecordInput<'_>> = recs
                    .iter()
                    .enumerate()
                    .map(|(i, d)| PutRecordInput::new(["a", "b", "c", "d"][i % 4], d))
                    .collect();
                let out = e.put_records("s", &inputs).unwrap();
                let acked = out
                    .iter()
                    .zip(&recs)
                    .filter(|(r, _)| r.is_ok())
                    .map(|(_, d)| d.clone())
                    .collect();
                (acked, out.iter().any(|r| r.is_err()))
            },
            must_fail: true,
        },
    ]
}

#[test]
fn every_storage_failpoint_surfaces_as_an_error_and_loses_nothing_acknowledged() {
    let plans = [
        CrashPlan::LoseUnsynced,
        CrashPlan::KeepUnsynced,
        CrashPlan::Random { seed: 7 },
        CrashPlan::Random { seed: 8 },
    ];
    for case in cases() {
        for plan in plans {
            let fs = MemFs::new();
            let clock = ManualClock::new(T0);
            let (e, mut acked) = setup(&fs, &clock);
            let before = contents(&e);
            fs.fail_at(case.op, case.path, 1);
            let (more, failed) = (case.run)(&e, &clock);
            acked.extend(more);
            assert!(
                fs.failpoint_hits(case.op, case.path) > 0,
                "{}: the failpoint {:?} on {:?} was never reached",
                case.name,
                case.op,
                case.path
            );
            if case.must_fail {
                assert!(failed, "{}: the caller was not told of the failure", case.name);
            }
            let deleted = case.name.starts_with("stream directory removal") && e.list_streams().is_empty();
            let retention = case.name == "retention unlink";
            fs.crash(plan);
            std::mem::forget(e); // a crashed process runs no destructors
            let e = open(&fs, &clock);
            if deleted {
                continue;
            }
            let after = contents(&e);
            let all: Vec<&Vec<u8>> = after.values().flatten().collect();
            if !retention {
                for d in &acked {
                    assert!(
                        all.contains(&d),
                        "{} / {plan:?}: acknowledged record {:?} lost",
                        case.name,
                        String::from_utf8_lossy(&d[..20])
                    );
                }
            }
            // Nothing appears that was not acknowledged or already there.
            let known: Vec<&Vec<u8>> = before.values().flatten().chain(acked.iter()).collect();
            for d in &all {
                let unacked_failed_write = !known.contains(d);
                assert!(
                    !unacked_failed_write,
                    "{} / {plan:?}: a record the engine refused came back: {:?}",
                    case.name,
                    String::from_utf8_lossy(&d[..20])
                );
            }
            // Metadata is the old or the new state: the open shards tile.
            let d = e.describe_stream("s").unwrap();
            let open: Vec<_> = d
                .shards
                .iter()
                .filter(|s| s.ending_sequence_number.is_none())
                .collect();
            assert!(
                !open.is_empty() && open.len() <= 3,
                "{} / {plan:?}: {} open shards",
                case.name,
                open.len()
            );
            e.put_record("s", PutRecordInput::new("k", b"after")).unwrap();
        }
    }
}

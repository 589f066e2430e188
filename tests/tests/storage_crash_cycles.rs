//! Cross-crate: the indexed log (segment + index) through many crash and
//! reopen cycles on the fault-injecting file system. After every crash, every
//! acknowledged record is present in order exactly once, nothing unwritten
//! appears, and the index agrees with the log.

use std::path::PathBuf;
use std::sync::Arc;

use shardlog_index::IndexedLog;
use shardlog_segment::{LogOptions, ReadLimits, RecordIn, SyncPolicy};
use shardlog_testkit::{CrashPlan, MemFs, SimRng};

fn opts(sync: SyncPolicy) -> LogOptions {
    LogOptions {
        sync,
        segment_bytes_max: 64 * 1024,
        preallocate_bytes: 8 * 1024,
        ..LogOptions::default()
    }
}

fn data_of(i: u64) -> Vec<u8> {
    let mut v = i.to_le_bytes().to_vec();
    v.resize(8 + (i * 131 % 900) as usize, (i % 256) as u8);
    v
}

#[test]
fn acknowledged_records_survive_random_crash_cycles_and_indexes_agree() {
    let seeds: u64 = std::env::var("CRASH_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    for seed in 0..seeds {
        let fs = MemFs::new();
        let dir = PathBuf::from("/s");
        let mut rng = SimRng::new(seed);
        // The model: the record with sequence number i holds data_of(id[i]).
        let mut model: Vec<(u64, i64)> = Vec::new();
        let mut acked = 0usize;
        let mut next_id = 0u64;
        let mut clock = 1_000i64;
        for cycle in 0..6 {
            let durable = rng.below(3) != 0;
            let policy = if durable {
                SyncPolicy::Always
            } else {
                SyncPolicy::Never
            };
            let (log, _) = IndexedLog::open_with(Arc::new(fs.clone()), &dir, opts(policy))
                .unwrap_or_else(|e| panic!("seed {seed} cycle {cycle}: {e}"));
            // Check the recovered state against the model.
            let mut cur = log.cursor_first();
            let mut got = Vec::new();
            loop {
                let b = log
                    .read(
                        &mut cur,
                        ReadLimits {
                            max_records: 500,
                            max_bytes: usize::MAX,
                        },
                    )
                    .unwrap_or_else(|e| panic!("seed {seed} cycle {cycle}: {e}"));
                if b.is_empty() {
                    break;
                }
                for r in b.iter() {
                    got.push((r.seq, r.data.to_vec(), r.arrival_ms));
                }
            }
            let first = log.log().first_seq() as usize;
            assert!(
                got.len() + first >= acked,
                "seed {seed} cycle {cycle}: acknowledged records lost"
            );
            assert!(
                got.len() + first <= model.len(),
                "seed {seed} cycle {cycle}: records invented"
            );
            for (seq, data, ts) in &got {
                let (id, mts) = model[*seq as usize];
                assert_eq!(data, &data_of(id), "seed {seed} cycle {cycle} seq {seq}");
                assert_eq!(*ts, mts, "seed {seed} cycle {cycle} seq {seq}");
            }
            // The log is a prefix of what was written: drop the lost tail.
            model.truncate(first + got.len());
            acked = acked.min(model.len());
            // Indexes agree with the log.
            for (seq, _, ts) in got.iter().step_by(17) {
                assert_eq!(log.cursor_at(*seq).unwrap().seq, *seq);
                let expect = got.iter().find(|r| r.2 >= *ts).map(|r| r.0).unwrap();
                assert_eq!(log.seq_at_time(*ts).unwrap(), expect, "seed {seed}");
            }
            // Write some more.
            let appends = 1 + rng.below(60);
            for _ in 0..appends {
                let n = 1 + rng.below(5);
                clock += rng.below(50) as i64;
                let ids: Vec<u64> = (0..n).map(|k| next_id + k).collect();
                next_id += n;
                let datas: Vec<Vec<u8>> = ids.iter().map(|i| data_of(*i)).collect();
                let recs: Vec<RecordIn<'_>> = datas.iter().map(|d| RecordIn::new("pk", d, clock)).collect();
                let a = log.append(&recs).unwrap();
                assert_eq!(a.first_seq as usize, model.len(), "seed {seed}");
                for id in ids {
                    model.push((id, a.first_arrival_ms.max(clock)));
                }
                if durable {
                    acked = model.len();
                }
            }
            if rng.below(4) == 0 {
                log.remove_older_than(clock - 100).unwrap();
            }
            std::mem::forget(log);
            fs.crash(CrashPlan::Random {
                seed: seed * 31 + cycle,
            });
        }
    }
}

//! Corruption at rest: flip bits in, overwrite and truncate random files
//! (segments, index sidecars, stream metadata, checkpoints) of a stopped data
//! directory on the real file system, then reopen. The engine must open,
//! report what it cannot trust (file and offset), quarantine it, serve
//! everything else, and never return a record that differs from what was
//! written.
//!
//! `SHARDLOG_SEEDS=2000 cargo test -p shardlog-tests --test corruption_at_rest`
//! runs a longer campaign; `SHARDLOG_SEED=<n>` replays one case.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use shardlog_stream::{CreateStreamOptions, Engine, EngineOptions, PutRecordInput, StartingPosition};
use shardlog_testkit::{for_each_seed, SimRng};

type Expected = BTreeMap<(String, String), Vec<(String, Vec<u8>)>>;

fn opts() -> EngineOptions {
    shardlog_tests::small_engine_options()
}

/// A stopped data directory with three streams (one encrypted), several
/// segments per shard, a split, and checkpoints.
fn build(dir: &Path) -> Expected {
    let e = Engine::open(dir, opts()).unwrap();
    let mut expected = Expected::new();
    for (name, shards) in [("a", 1u32), ("b", 2), ("sealed", 1)] {
        e.create_stream(name, shards, CreateStreamOptions::default())
            .unwrap();
    }
    e.start_stream_encryption("sealed", "alias/aws/kinesis").unwrap();
    e.split_shard("b", "shardId-000000000000", &(1u128 << 126).to_string())
        .unwrap();
    for i in 0..600 {
        for name in ["a", "b", "sealed"] {
            let pk = format!("key-{}", i % 13);
            let data = format!("{name}-{i:05}-{}", "d".repeat(i % 300)).into_bytes();
            let out = e.put_record(name, PutRecordInput::new(&pk, &data)).unwrap();
            expected
                .entry((name.to_string(), out.shard_id.to_string()))
                .or_default()
                .push((pk, data));
        }
    }
    for name in ["a", "b"] {
        let seq = e.describe_stream(name).unwrap().shards[0]
            .starting_sequence_number
            .clone();
        e.set_checkpoint(name, "app", "shardId-000000000000", &seq, None)
            .unwrap();
    }
    expected
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            files(&p, out);
        } else {
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            // ENGINE.json holds the keys; its damage stops the engine with a
            // clear error (tested below), so it is not a random target.
            if name != "LOCK" && name != "ENGINE.json" {
                out.push(p);
            }
        }
    }
}

#[derive(Debug)]
enum Damage {
    FlipBits(Vec<(u64, u8)>),
    Overwrite(u64, Vec<u8>),
    Truncate(u64),
}

fn damage(path: &Path, rng: &mut SimRng) -> Damage {
    let mut bytes = std::fs::read(path).unwrap();
    let len = bytes.len() as u64;
    if len == 0 {
        return Damage::Truncate(0);
    }
    let d = match rng.below(3) {
        0 => Damage::FlipBits(
            (0..1 + rng.below(4))
                .map(|_| (rng.below(len), rng.below(8) as u8))
                .collect(),
        ),
        1 => {
            let at = rng.below(len);
            let n = 1 + rng.below(64.min(len - at));
            Damage::Overwrite(at, (0..n).map(|_| rng.below(256) as u8).collect())
        }
        _ => Damage::Truncate(rng.below(len)),
    };
    match &d {
        Damage::FlipBits(flips) => flips.iter().for_each(|(at, bit)| bytes[*at as usize] ^= 1 << bit),
        Damage::Overwrite(at, junk) => bytes[*at as usize..*at as usize + junk.len()].copy_from_slice(junk),
        Damage::Truncate(at) => bytes.truncate(*at as usize),
    }
    std::fs::write(path, bytes).unwrap();
    d
}

#[test]
fn damaged_files_are_reported_and_quarantined_and_no_wrong_record_is_ever_served() {
    let pristine = tempfile::tempdir().unwrap();
    let expected = build(pristine.path());
    let mut detected = 0;
    let mut cases = 0;
    for_each_seed(
        "damaged_files_are_reported_and_quarantined_and_no_wrong_record_is_ever_served",
        40,
        |seed| {
            let mut rng = SimRng::new(seed);
            let work = tempfile::tempdir().unwrap();
            copy_dir(pristine.path(), work.path());
            let mut all = Vec::new();
            files(work.path(), &mut all);
            all.sort();
            let victim = all[rng.below(all.len() as u64) as usize].clone();
            let what = damage(&victim, &mut rng);
            let e = Engine::open(work.path(), opts()).unwrap_or_else(|err| {
                panic!("seed {seed}: the engine must open despite damage to {victim:?} ({what:?}): {err}")
            });
            let problems = e.problems();
            let mut complete = true;
            let mut errors = Vec::new();
            for ((stream, shard), want) in &expected {
                if e.describe_stream(stream).is_err() {
                    // Quarantined as a whole: it must be reported.
                    assert!(
                        problems.iter().any(|p| p.contains("quarantined")),
                        "seed {seed}: stream {stream} vanished without a report ({victim:?}, {what:?})"
                    );
                    complete = false;
                    continue;
                }
                let mut served: Vec<(String, Vec<u8>)> = Vec::new();
                let mut it = e
                    .get_shard_iterator(stream, shard, StartingPosition::TrimHorizon)
                    .unwrap();
                loop {
                    match e.get_records(&it, Some(97)) {
                        Ok(r) => {
                            let empty = r.records.is_empty();
                            served.extend(
                                r.records
                                    .into_iter()
                                    .map(|r| (r.partition_key, r.data.into_vec())),
                            );
                            match r.next_shard_iterator {
                                Some(n) if !empty => it = n,
                                _ => break,
                            }
                        }
                        Err(err) => {
                            errors.push(err.to_string());
                            break;
                        }
                    }
                }
                assert!(
                    served.len() <= want.len() && served[..] == want[..served.len()],
                    "seed {seed}: {stream}/{shard} served a record that was not written ({victim:?}, {what:?})"
                );
                complete &= served.len() == want.len();
            }
            cases += 1;
            if !complete {
                // Missing records are always explained by a report or a read
                // error: the directory was stopped cleanly, so each log's
                // clean-stop marker says where its data ended.
                let explained = !problems.is_empty() || !errors.is_empty();
                assert!(
                    explained,
                    "seed {seed}: records went missing silently ({victim:?}, {what:?})"
                );
                if explained {
                    detected += 1;
                }
            }
            for err in &errors {
                assert!(
                    err.contains("corruption") || err.contains("damaged") || err.contains("KMS"),
                    "seed {seed}: a read failed without naming the damage: {err}"
                );
            }
        },
    );
    eprintln!("{cases} damage cases, {detected} with missing records all reported");
}

#[test]
fn a_damaged_engine_file_stops_the_engine_with_a_clear_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    drop(Engine::open(dir.path(), opts()).unwrap());
    let path = dir.path().join("ENGINE.json");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[20] ^= 0x04;
    std::fs::write(&path, bytes).unwrap();
    let err = Engine::open(dir.path(), opts()).unwrap_err().to_string();
    assert!(err.contains("ENGINE.json"), "{err}");
}

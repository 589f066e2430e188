//! Integration tests of the index: lookups agree with a brute-force scan, and
//! every kind of bad sidecar file is rebuilt from its segment.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use shardlog_index::{index_file_name, Cursor, IndexedLog};
use shardlog_segment::{LogOptions, ReadLimits, RecordIn};
use shardlog_testkit::MemFs;

const ALL: ReadLimits = ReadLimits {
    max_records: usize::MAX,
    max_bytes: usize::MAX,
};

fn opts() -> LogOptions {
    LogOptions {
        segment_bytes_max: 64 * 1024,
        preallocate_bytes: 16 * 1024,
        ..LogOptions::default()
    }
}

fn dir() -> PathBuf {
    PathBuf::from("/idx")
}

fn open(fs: &MemFs) -> IndexedLog {
    IndexedLog::open_with(Arc::new(fs.clone()), dir(), opts())
        .unwrap()
        .0
}

/// Appends `n` records of varying size; arrival times advance irregularly,
/// with runs of equal times.
fn fill(log: &IndexedLog, n: u64) -> Vec<(u64, i64, Vec<u8>)> {
    let mut out = Vec::new();
    for i in 0..n {
        let data = vec![(i % 251) as u8; (i * 37 % 700) as usize];
        let ts = 1_000 + (i / 3) as i64 * 7;
        let a = log.append(&[RecordIn::new("key", &data, ts)]).unwrap();
        out.push((a.first_seq, a.first_arrival_ms, data));
    }
    out
}

fn read_from(log: &IndexedLog, mut cur: Cursor, max: usize) -> Vec<(u64, i64, Vec<u8>)> {
    let mut out = Vec::new();
    while out.len() < max {
        let batch = log.read(&mut cur, ALL).unwrap();
        if batch.is_empty() {
            break;
        }
        out.extend(batch.iter().map(|r| (r.seq, r.arrival_ms, r.data.to_vec())));
    }
    out
}

#[test]
fn lookups_by_sequence_and_time_match_a_brute_force_scan() {
    let fs = MemFs::new();
    let log = open(&fs);
    let written = fill(&log, 2500);
    assert!(log.log().segments().len() > 3);
    let all = read_from(&log, log.cursor_first(), usize::MAX);
    assert_eq!(all, written);
    for seq in (0..2500).step_by(7).chain([0, 2499, 2500]) {
        let cur = log.cursor_at(seq).unwrap();
        assert_eq!(cur.seq, seq);
        let got = read_from(&log, cur, 1);
        assert_eq!(got.first().map(|r| r.0), written.get(seq as usize).map(|r| r.0));
    }
    for ts in (900..1_000 + 2500 / 3 * 7 + 20).step_by(5) {
        let expect = written.iter().find(|r| r.1 >= ts).map(|r| r.0).unwrap_or(2500);
        assert_eq!(log.seq_at_time(ts).unwrap(), expect, "time {ts}");
    }
    // The same answers after a reopen, from the sidecar files.
    drop(log);
    let log = open(&fs);
    for seq in (0..2500).step_by(11) {
        assert_eq!(log.cursor_at(seq).unwrap().seq, seq);
    }
    assert_eq!(
        log.seq_at_time(1_500).unwrap(),
        written.iter().find(|r| r.1 >= 1_500).unwrap().0
    );
    assert!(log.stats().loaded > 0);
    assert_eq!(log.stats().rebuilt, 0);
}

#[test]
fn out_of_range_sequence_numbers_are_a_typed_error() {
    let fs = MemFs::new();
    let log = open(&fs);
    fill(&log, 10);
    assert!(matches!(
        log.cursor_at(11),
        Err(shardlog_index::Error::SequenceOutOfRange { seq: 11, .. })
    ));
}

fn sidecar(log: &IndexedLog) -> PathBuf {
    let base = log.log().segments()[1].base_seq;
    dir().join(index_file_name(base))
}

fn check_rebuilt(fs: &MemFs, damage: impl Fn(&MemFs, &Path)) {
    let written;
    let path;
    {
        let log = open(fs);
        written = fill(&log, 1500);
        path = sidecar(&log);
        assert!(fs.exists(&path));
    }
    damage(fs, &path);
    let log = open(fs);
    for seq in (0..1500).step_by(13) {
        let got = read_from(&log, log.cursor_at(seq).unwrap(), 1);
        assert_eq!(got[0], written[seq as usize]);
    }
    assert!(log.stats().rebuilt >= 1, "a bad sidecar must be rebuilt");
    // The rebuilt sidecar is valid again.
    drop(log);
    let log = open(fs);
    log.check_indexes().unwrap();
    assert_eq!(log.stats().rebuilt, 0);
}

use shardlog_segment::FileSystem;

#[test]
fn missing_index_file_is_rebuilt_from_the_segment() {
    check_rebuilt(&MemFs::new(), |fs, p| fs.remove_file(p).unwrap());
}

#[test]
fn truncated_index_file_is_rebuilt_from_the_segment() {
    check_rebuilt(&MemFs::new(), |fs, p| fs.truncate_durably(p, 30).unwrap());
}

#[test]
fn zero_filled_index_file_is_rebuilt_from_the_segment() {
    check_rebuilt(&MemFs::new(), |fs, p| {
        let len = fs.contents(p).unwrap().len();
        fs.corrupt(p, 0, &vec![0u8; len]).unwrap();
    });
}

#[test]
fn index_file_of_another_segment_is_rebuilt_from_the_segment() {
    check_rebuilt(&MemFs::new(), |fs, p| {
        // A valid sidecar, but of a different segment.
        let other = p.with_file_name(index_file_name(0));
        let bytes = fs.contents(&other).unwrap();
        fs.remove_file(p).unwrap();
        let f = fs.create_new(p).unwrap();
        f.write_all_at(&bytes, 0).unwrap();
    });
}

#[test]
fn time_retention_deletes_old_segments_and_their_indexes() {
    let fs = MemFs::new();
    let log = open(&fs);
    let written = fill(&log, 2500);
    let segs = log.log().segments();
    let cutoff = written[segs[3].base_seq as usize].1;
    let removed = log.remove_older_than(cutoff).unwrap();
    assert!(removed >= 2, "removed {removed}");
    let first = log.log().first_seq();
    assert!(written[first as usize - 1].1 < cutoff);
    assert!(!fs.exists(&dir().join(index_file_name(0))));
    let rest = read_from(&log, log.cursor_first(), usize::MAX);
    assert_eq!(rest, written[first as usize..].to_vec());
}

#[test]
fn recovery_indexes_an_active_segment_of_many_thousand_records_after_a_crash() {
    // Tiny records in one large active segment: recovery hands them to the
    // index in chunks (4,096 at a time); every one must still be found by
    // sequence number and by time after an unclean stop.
    let fs = MemFs::new();
    let big = || LogOptions {
        segment_bytes_max: 8 * 1024 * 1024,
        ..opts()
    };
    let n = 10_000u64;
    {
        let log = IndexedLog::open_with(Arc::new(fs.clone()), dir(), big())
            .unwrap()
            .0;
        let batch: Vec<Vec<u8>> = (0..100u64).map(|i| i.to_le_bytes().to_vec()).collect();
        for b in 0..n / 100 {
            let recs: Vec<RecordIn<'_>> = batch
                .iter()
                .map(|d| RecordIn::new("k", d, 1_000 + b as i64))
                .collect();
            log.append(&recs).unwrap();
        }
        assert_eq!(log.log().segments().len(), 1, "one active segment");
        // No clean stop: the next open recovers by scanning.
        std::mem::forget(log);
    }
    fs.crash(shardlog_testkit::CrashPlan::LoseUnsynced);
    let log = IndexedLog::open_with(Arc::new(fs.clone()), dir(), big())
        .unwrap()
        .0;
    assert_eq!(log.log().next_seq(), n);
    for seq in (0..n).step_by(997).chain([4095, 4096, 4097, 8191, 8192, n - 1]) {
        let cur = log.cursor_at(seq).unwrap();
        let got = read_from(&log, cur, 1);
        assert_eq!(got[0].0, seq);
        assert_eq!(got[0].2, (seq % 100).to_le_bytes().to_vec());
    }
    assert_eq!(log.seq_at_time(1_050).unwrap(), 5_000);
}

#[test]
fn time_lookup_reports_a_damaged_record_it_scans_past_instead_of_skipping_it() {
    let fs = MemFs::new();
    let (path, target, damaged_at) = {
        let log = open(&fs);
        // 1 KiB records with one arrival time each, so an index interval
        // holds about 16 of them and a lookup scans forward inside one.
        let data = vec![7u8; 1000];
        for i in 0..120i64 {
            log.append(&[RecordIn::new("key", &data, 10_000 + i)]).unwrap();
        }
        log.log().roll().unwrap();
        let seg = log.log().segments()[0].clone();
        // A record in the middle of an interval and one a few records after it.
        let damaged = 37u64;
        let target = 41u64;
        assert_eq!(log.seq_at_time(10_000 + target as i64).unwrap(), target);
        let at = log.cursor_at(damaged).unwrap().pos;
        assert_eq!(at.segment_base, seg.base_seq);
        (seg.path, target, at.offset + 200)
    };
    fs.flip_bit(&path, damaged_at, 2).unwrap();
    let log = open(&fs);
    match log.seq_at_time(10_000 + target as i64) {
        Err(e) => {
            assert!(e.is_corruption(), "{e}");
            assert!(e.to_string().contains(&path.display().to_string()), "{e}");
        }
        Ok(seq) => panic!("the lookup skipped a damaged record and answered {seq}"),
    }
    // Lookups that stop before the damage still answer.
    assert_eq!(log.seq_at_time(10_000 + 32).unwrap(), 32);
}

#[test]
fn logs_sharing_one_index_cache_stay_within_its_budget_and_still_answer_every_lookup() {
    use shardlog_index::IndexCache;
    let fs = MemFs::new();
    // Room for about three sealed indexes of these logs in all: far fewer
    // than the logs hold between them.
    let probe = {
        let log = open(&fs);
        fill(&log, 600);
        log.check_indexes().unwrap();
        let seg = log.log().segments()[0].clone();
        drop(log);
        let bytes = fs.contents(&dir().join(index_file_name(seg.base_seq))).unwrap();
        shardlog_index::SparseIndex::decode(&bytes)
            .unwrap()
            .memory_bytes()
    };
    let cache = IndexCache::new(3 * probe);
    type Written = Vec<(u64, i64, Vec<u8>)>;
    let logs: Vec<(IndexedLog, Written)> = (0..4)
        .map(|i| {
            let (log, _) = IndexedLog::open_cached(
                Arc::new(fs.clone()),
                PathBuf::from(format!("/shared/{i}")),
                opts(),
                cache.clone(),
            )
            .unwrap();
            let written = fill(&log, 1500);
            assert!(log.log().segments().len() > 4);
            (log, written)
        })
        .collect();
    for round in 0..2 {
        for (log, written) in &logs {
            for seq in (0..1500).step_by(97) {
                let got = read_from(log, log.cursor_at(seq).unwrap(), 1);
                assert_eq!(got[0], written[seq as usize], "round {round}");
            }
            for ts in (1_000..1_000 + 1500 / 3 * 7).step_by(301) {
                let expect = written.iter().find(|r| r.1 >= ts).map(|r| r.0).unwrap_or(1500);
                assert_eq!(log.seq_at_time(ts).unwrap(), expect);
            }
            let s = cache.stats();
            assert!(s.bytes <= cache.budget_bytes(), "{s:?}");
        }
    }
    let s = cache.stats();
    assert!(s.evictions > 0, "{s:?}");
    assert!(s.hits > 0, "{s:?}");
    // Closing a log gives its share of the budget back.
    drop(logs);
    assert_eq!(cache.stats().indexes, 0);
    assert_eq!(cache.stats().bytes, 0);
}

/// Options for checkpoint tests: one large active segment, and the open
/// check that may use checkpoints.
fn ckpt_opts(open_check: shardlog_segment::OpenCheck) -> LogOptions {
    LogOptions {
        segment_bytes_max: 64 * 1024 * 1024,
        open_check,
        ..opts()
    }
}

/// Opens the log of `fs` for checkpoint tests.
fn open_ckpt(fs: &MemFs, open_check: shardlog_segment::OpenCheck) -> IndexedLog {
    open_ckpt_reported(fs, open_check).0
}

/// [`open_ckpt`], with what recovery found.
fn open_ckpt_reported(
    fs: &MemFs,
    open_check: shardlog_segment::OpenCheck,
) -> (IndexedLog, shardlog_segment::RecoveryReport) {
    IndexedLog::open_with(Arc::new(fs.clone()), dir(), ckpt_opts(open_check)).unwrap()
}

/// Appends `batches` synced batches of 100 records of 1 KiB (about 100 KiB
/// each), then `unsynced` more batches that a crash may lose, and crashes
/// by `plan`. Returns the records acknowledged.
fn crashed_with_checkpoints(
    fs: &MemFs,
    batches: u64,
    unsynced: u64,
    plan: shardlog_testkit::CrashPlan,
) -> Vec<(u64, i64, Vec<u8>)> {
    let mut acked = Vec::new();
    {
        let log = open_ckpt(fs, shardlog_segment::OpenCheck::Deferred);
        for b in 0..batches {
            let data: Vec<Vec<u8>> = (0..100u64)
                .map(|i| vec![((b * 100 + i) % 251) as u8; 1000])
                .collect();
            let recs: Vec<RecordIn<'_>> = data
                .iter()
                .map(|d| RecordIn::new("k", d, 1_000 + b as i64 / 2))
                .collect();
            let a = log.append(&recs).unwrap();
            acked.extend(
                data.into_iter()
                    .enumerate()
                    .map(|(i, d)| (a.first_seq + i as u64, 1_000 + b as i64 / 2, d)),
            );
        }
        log.wait_checkpoint();
        assert!(log.stats().checkpoints >= 1, "{:?}", log.stats());
    }
    {
        let log = IndexedLog::open_with(
            Arc::new(fs.clone()),
            dir(),
            LogOptions {
                sync: shardlog_segment::SyncPolicy::Never,
                ..ckpt_opts(shardlog_segment::OpenCheck::Deferred)
            },
        )
        .unwrap()
        .0;
        for b in batches..batches + unsynced {
            let data = vec![9u8; 1000];
            let recs: Vec<RecordIn<'_>> = (0..100)
                .map(|_| RecordIn::new("k", &data, 1_000 + b as i64 / 2))
                .collect();
            log.append(&recs).unwrap();
        }
        std::mem::forget(log);
    }
    fs.crash(plan);
    acked
}

/// Every acknowledged record is found by sequence number and by time, and
/// reads from the start give them all, in order.
fn assert_lookups(log: &IndexedLog, acked: &[(u64, i64, Vec<u8>)]) {
    let all = read_from(log, log.cursor_first(), usize::MAX);
    assert!(all.len() >= acked.len(), "acknowledged records lost");
    assert_eq!(all[..acked.len()], acked[..]);
    for (seq, ts, data) in acked.iter().step_by(97) {
        let got = read_from(log, log.cursor_at(*seq).unwrap(), 1);
        assert_eq!((got[0].0, &got[0].2), (*seq, data));
        let first_at = all.iter().find(|r| r.1 >= *ts).unwrap().0;
        assert_eq!(log.seq_at_time(*ts).unwrap(), first_at, "time {ts}");
    }
}

#[test]
fn an_open_after_a_crash_resumes_from_the_last_checkpoint_and_answers_every_lookup() {
    let fs = MemFs::new();
    // About 25 MiB acknowledged: three checkpoints at 8 MiB steps.
    let acked = crashed_with_checkpoints(&fs, 250, 5, shardlog_testkit::CrashPlan::LoseUnsynced);
    let (log, report) = open_ckpt_reported(&fs, shardlog_segment::OpenCheck::Deferred);
    assert_eq!(log.stats().resumed, 1);
    assert!(
        report.active_records < 10_000,
        "the open walked only the records after the checkpoint: {}",
        report.active_records
    );
    assert_eq!(log.log().next_seq(), acked.len() as u64);
    assert_lookups(&log, &acked);
    // The pass after open verifies the prefix the checkpoint let the open skip.
    assert!(log.log().deferred_check_bytes() > 16 * 1024 * 1024);
    assert!(log.log().check_deferred(&|| false).unwrap());
    // Appends go on where the records end, and a second crash resumes again.
    let a = log.append(&[RecordIn::new("k", b"after", 5_000)]).unwrap();
    assert_eq!(a.first_seq, acked.len() as u64);
    drop(log);
    let log = open_ckpt(&fs, shardlog_segment::OpenCheck::Deferred);
    assert_lookups(&log, &acked);
    assert_eq!(log.log().next_seq(), acked.len() as u64 + 1);
    // An open that does not use the checkpoint (a full check may cut the
    // file below it) removes it; a stale one is never used later.
    drop(log);
    let ckpt = dir().join(shardlog_index::checkpoint_file_name(0));
    assert!(fs.contents(&ckpt).is_ok());
    let log = open_ckpt(&fs, shardlog_segment::OpenCheck::Full);
    assert_eq!(log.stats().resumed, 0);
    assert!(fs.contents(&ckpt).is_err(), "the unused checkpoint is gone");
    assert_lookups(&log, &acked);
}

#[test]
fn a_checkpoint_is_written_off_the_syncing_thread_and_a_close_waits_for_it() {
    // The sync that makes a checkpoint's point durable hands the checkpoint
    // (two fsyncs, a rename, a directory sync) to the checkpoint thread of
    // its index cache (this log's own: other tests' logs are not held up):
    // appends go on being acknowledged while it is stuck, and a close waits
    // for it, so that it never lands in a directory being removed.
    let fs = MemFs::new();
    fs.hold_next_sync_return(shardlog_index::format::CHECKPOINT_TMP_SUFFIX);
    // Should an assertion fail while the sync is held, its unwinding must
    // not wait forever for the writer stuck behind it.
    struct ReleaseOnUnwind<'a>(&'a MemFs);
    impl Drop for ReleaseOnUnwind<'_> {
        fn drop(&mut self) {
            if std::thread::panicking() {
                self.0.release_sync();
            }
        }
    }
    let log = open_ckpt(&fs, shardlog_segment::OpenCheck::Deferred);
    let data = vec![7u8; 1000];
    // Past two checkpoint intervals, while the first checkpoint is held.
    let batches = 2 * shardlog_index::format::CHECKPOINT_INTERVAL_BYTES / 100_000 + 1;
    std::thread::scope(|s| {
        // Dropped before the scope joins the writer.
        let _release = ReleaseOnUnwind(&fs);
        let writer = s.spawn(|| {
            for b in 0..batches {
                let recs: Vec<RecordIn<'_>> = (0..100)
                    .map(|_| RecordIn::new("k", &data, 1_000 + b as i64))
                    .collect();
                log.append(&recs).unwrap();
            }
        });
        shardlog_testkit::wait_until(20, "appends waited for a held checkpoint", || {
            writer.is_finished()
        });
    });
    assert!(fs.sync_held(), "the first checkpoint is still held");
    assert_eq!(log.stats().checkpoints, 0, "{:?}", log.stats());
    let records = log.log().next_seq();
    let closing = std::thread::spawn(move || drop(log));
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert!(
        !closing.is_finished(),
        "the close did not wait for the checkpoint"
    );
    fs.release_sync();
    closing.join().unwrap();
    let ckpt = dir().join(shardlog_index::checkpoint_file_name(0));
    assert!(fs.contents(&ckpt).is_ok(), "the held checkpoint was written");
    // After a crash, the open resumes from it and finds every record.
    std::mem::forget(open_ckpt(&fs, shardlog_segment::OpenCheck::Deferred));
    fs.crash(shardlog_testkit::CrashPlan::LoseUnsynced);
    let (log, report) = open_ckpt_reported(&fs, shardlog_segment::OpenCheck::Deferred);
    assert_eq!(log.stats().resumed, 1);
    assert!(report.active_records < records, "{report:?}");
    assert_eq!(log.log().next_seq(), records);
    assert!(log.log().check_deferred(&|| false).unwrap());
}

#[test]
fn a_damaged_or_stale_checkpoint_is_not_used_and_the_open_walks_the_whole_segment() {
    let ckpt = dir().join(shardlog_index::checkpoint_file_name(0));
    type Damage = fn(&MemFs, &Path);
    let damages: [(&str, Damage); 3] = [
        ("a flipped bit", |fs, p| fs.flip_bit(p, 40, 1).unwrap()),
        ("a truncation", |fs, p| fs.truncate_durably(p, 30).unwrap()),
        // The segment itself cut below the checkpoint's end: the point is
        // past the data and must not be used.
        ("a shorter segment", |fs, _| {
            let seg = dir().join("00000000000000000000.seg");
            fs.truncate_durably(&seg, 4 * 1024 * 1024).unwrap()
        }),
    ];
    for (what, damage) in damages {
        let fs = MemFs::new();
        let acked = crashed_with_checkpoints(&fs, 250, 0, shardlog_testkit::CrashPlan::KeepUnsynced);
        assert!(fs.contents(&ckpt).is_ok(), "a checkpoint was written");
        damage(&fs, &ckpt);
        let log = open_ckpt(&fs, shardlog_segment::OpenCheck::Deferred);
        assert_eq!(log.stats().resumed, 0, "{what}");
        let all = read_from(&log, log.cursor_first(), usize::MAX);
        if what == "a shorter segment" {
            assert!(all.len() < acked.len(), "{what}");
            assert_eq!(all[..], acked[..all.len()], "{what}");
        } else {
            assert_lookups(&log, &acked);
        }
        assert!(log.log().check_deferred(&|| false).unwrap(), "{what}");
    }
}

#[test]
fn opens_resumed_from_checkpoints_end_like_full_checks_whatever_the_crash_tore() {
    shardlog_testkit::for_each_seed(
        "opens_resumed_from_checkpoints_end_like_full_checks_whatever_the_crash_tore",
        12,
        |seed| {
            let outcome = |open_check| {
                let fs = MemFs::new();
                let acked = crashed_with_checkpoints(
                    &fs,
                    90 + seed % 40,
                    1 + seed % 7,
                    shardlog_testkit::CrashPlan::Random { seed },
                );
                let log = open_ckpt(&fs, open_check);
                assert!(log.log().check_deferred(&|| false).unwrap(), "seed {seed}");
                assert_lookups(&log, &acked);
                let all = read_from(&log, log.cursor_first(), usize::MAX);
                (all, log.log().next_seq(), log.stats().resumed)
            };
            let (full, full_next, _) = outcome(shardlog_segment::OpenCheck::Full);
            let (resumed, resumed_next, used) = outcome(shardlog_segment::OpenCheck::Deferred);
            assert_eq!(used, 1, "seed {seed}: the checkpoint was used");
            assert_eq!(full_next, resumed_next, "seed {seed}");
            assert!(full == resumed, "seed {seed}: the records served differ");
        },
    );
}

#[test]
fn a_checkpoint_left_over_from_before_the_file_was_cut_is_refused_even_when_the_file_has_grown_past_it() {
    let fs = MemFs::new();
    let acked = crashed_with_checkpoints(&fs, 250, 0, shardlog_testkit::CrashPlan::KeepUnsynced);
    let ckpt = dir().join(shardlog_index::checkpoint_file_name(0));
    let seg = dir().join("00000000000000000000.seg");
    let stale = fs.contents(&ckpt).unwrap();
    // The file is cut well below the checkpoint (a full check cut a damaged
    // tail, say), and appends then grow it past the checkpoint's end again.
    fs.truncate_durably(&seg, 4 * 1024 * 1024).unwrap();
    let kept = {
        let log = open_ckpt(&fs, shardlog_segment::OpenCheck::Full);
        let kept = log.log().next_seq();
        for b in 0..250u64 {
            let data = vec![0xEEu8; 1000];
            let recs: Vec<RecordIn<'_>> = (0..100)
                .map(|_| RecordIn::new("k", &data, 9_000 + b as i64))
                .collect();
            log.append(&recs).unwrap();
        }
        kept
    };
    assert!(kept < acked.len() as u64);
    // The stale checkpoint comes back (its removal was lost, say).
    if fs.contents(&ckpt).is_ok() {
        fs.remove_file(&ckpt).unwrap();
    }
    let f = fs.create_new(&ckpt).unwrap();
    f.write_all_at(&stale, 0).unwrap();
    f.sync_data().unwrap();
    fs.sync_dir(&dir()).unwrap();
    fs.crash(shardlog_testkit::CrashPlan::KeepUnsynced);
    let log = open_ckpt(&fs, shardlog_segment::OpenCheck::Deferred);
    assert_eq!(log.stats().resumed, 0, "the stale checkpoint is refused");
    assert_eq!(log.log().next_seq(), kept + 25_000);
    let all = read_from(&log, log.cursor_first(), usize::MAX);
    assert_eq!(all.len() as u64, kept + 25_000);
    assert_eq!(all[..kept as usize], acked[..kept as usize]);
    assert!(log.log().check_deferred(&|| false).unwrap());
}

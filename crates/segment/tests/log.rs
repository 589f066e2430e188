//! Integration tests of the segment log: durability rules proven through the
//! fault-injecting file system, and the real file system for locks and maps.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use shardlog_segment::format::{
    CACHE_PAGE_BYTES, EARLY_WRITE_BACK_BYTES_MIN, EARLY_WRITE_BACK_STEP_BYTES_MAX, GROUP_BYTES_AVG_INITIAL,
    SEGMENT_HEADER_BYTES,
};
use shardlog_segment::{
    Error, FileSystem, Log, LogOptions, NoObserverForTests, OpenCheck, Position, ReadLimits, RecordIn,
    RecoveryPolicy, SyncPolicy,
};
use shardlog_testkit::{CrashPlan, FsOp, MemFs};

const ALL: ReadLimits = ReadLimits {
    max_records: usize::MAX,
    max_bytes: usize::MAX,
};

fn dir() -> PathBuf {
    PathBuf::from("/shard")
}

fn small_opts() -> LogOptions {
    LogOptions {
        segment_bytes_max: 64 * 1024,
        preallocate_bytes: 16 * 1024,
        ..LogOptions::default()
    }
}

fn open(fs: &MemFs, opts: LogOptions) -> shardlog_segment::Result<Log> {
    Log::open_with(Arc::new(fs.clone()), dir(), opts, Arc::new(NoObserverForTests)).map(|(l, _)| l)
}

fn payload(i: u64) -> Vec<u8> {
    format!("record-{i}-{}", "x".repeat((i % 37) as usize)).into_bytes()
}

type Row = (u64, String, Vec<u8>, i64);

/// Reads every visible record as (seq, key, data, arrival).
fn read_all(log: &Log) -> shardlog_segment::Result<Vec<Row>> {
    let mut out = Vec::new();
    let first = log.first_seq();
    let mut pos = Position {
        segment_base: first,
        offset: SEGMENT_HEADER_BYTES as u64,
    };
    let mut seq = first;
    loop {
        let batch = log.read_at(pos, seq, ALL)?;
        for r in batch.iter() {
            out.push((r.seq, r.partition_key.to_string(), r.data.to_vec(), r.arrival_ms));
        }
        let moved = batch.next != pos;
        pos = batch.next;
        seq = batch.next_seq;
        if batch.is_empty() && !moved {
            return Ok(out);
        }
    }
}

fn append_n(log: &Log, from: u64, n: u64) -> Vec<u64> {
    (from..from + n)
        .map(|i| {
            let data = payload(i);
            let key = format!("pk{i}");
            log.append(&[RecordIn::new(&key, &data, 1_000 + i as i64)])
                .expect("append")
                .first_seq
        })
        .collect()
}

fn assert_records(log: &Log, expected: u64) {
    let got = read_all(log).expect("read");
    assert_eq!(got.len() as u64, expected, "record count");
    for (i, (seq, key, data, _)) in got.iter().enumerate() {
        assert_eq!(*seq, i as u64);
        assert_eq!(key, &format!("pk{i}"));
        assert_eq!(data, &payload(i as u64));
    }
}

#[test]
fn appended_records_read_back_in_order_across_segment_rolls() {
    let fs = MemFs::new();
    let log = open(&fs, small_opts()).unwrap();
    let seqs = append_n(&log, 0, 3000);
    assert_eq!(seqs, (0..3000).collect::<Vec<_>>());
    assert!(log.segments().len() > 2, "expected several segments");
    assert_records(&log, 3000);
    drop(log);
    let log = open(&fs, small_opts()).unwrap();
    assert_records(&log, 3000);
    assert!(log.verify().is_ok(), "{:?}", log.verify().problems);
}

#[test]
fn batch_append_assigns_contiguous_sequence_numbers_and_monotonic_arrival() {
    let fs = MemFs::new();
    let log = open(&fs, small_opts()).unwrap();
    let recs = [
        RecordIn::new("a", b"1", 50),
        RecordIn::new("b", b"2", 40),
        RecordIn::new("c", b"3", 60),
    ];
    let a = log.append(&recs).unwrap();
    assert_eq!((a.first_seq, a.count), (0, 3));
    let got = read_all(&log).unwrap();
    let arrivals: Vec<i64> = got.iter().map(|r| r.3).collect();
    assert_eq!(
        arrivals,
        vec![50, 50, 60],
        "arrival times are made non-decreasing"
    );
}

#[test]
fn invalid_records_are_rejected_before_anything_is_written() {
    let fs = MemFs::new();
    let log = open(&fs, small_opts()).unwrap();
    let big = vec![0u8; 1024 * 1024 + 1];
    let err = log
        .append(&[RecordIn::new("ok", b"x", 1), RecordIn::new("k", &big, 1)])
        .unwrap_err();
    assert!(matches!(err, Error::DataTooLarge { .. }), "{err}");
    assert!(matches!(
        log.append(&[RecordIn::new("", b"x", 1)]),
        Err(Error::InvalidPartitionKey { .. })
    ));
    assert!(matches!(log.append(&[]), Err(Error::InvalidArgument(_))));
    assert_eq!(log.next_seq(), 0);
    assert!(read_all(&log).unwrap().is_empty());
}

#[test]
fn first_seq_of_a_new_log_is_honoured() {
    let fs = MemFs::new();
    let log = open(
        &fs,
        LogOptions {
            first_seq: 500,
            ..small_opts()
        },
    )
    .unwrap();
    assert_eq!(log.append(&[RecordIn::new("k", b"v", 1)]).unwrap().first_seq, 500);
}

/// Builds a log with `acked` acknowledged records, then one more append whose
/// fsync fails (so it is never acknowledged), and returns the bytes pending.
fn log_with_unacked_tail(fs: &MemFs, acked: u64) -> u64 {
    let log = open(fs, small_opts()).unwrap();
    append_n(&log, 0, acked);
    fs.fail_next_syncs(1);
    let data = payload(acked);
    let keys: Vec<String> = (0..3).map(|i| format!("pk{}", acked + i)).collect();
    let recs: Vec<RecordIn<'_>> = keys.iter().map(|k| RecordIn::new(k, &data, 5_000)).collect();
    let err = log.append(&recs).unwrap_err();
    assert!(matches!(err, Error::Poisoned { .. }), "{err}");
    let seg = dir().join(shardlog_segment::segment::segment_file_name(
        log.segments().last().unwrap().base_seq,
    ));
    let _ = seg;
    drop(log);
    3
}

#[test]
fn write_torn_at_every_byte_recovers_exactly_the_acknowledged_records() {
    // Size the torn write: the three frames of the unacknowledged append.
    let probe = MemFs::new();
    let log = open(&probe, small_opts()).unwrap();
    append_n(&log, 0, 5);
    let before = log.segments().last().map(|s| s.path.clone()).unwrap();
    let len_before = probe.contents(&before).unwrap().len();
    drop(log);
    let frame_bytes = 3 * (40 + 3 + payload(5).len());
    let _ = len_before;

    for torn_at in 0..=frame_bytes as u64 + 1 {
        let fs = MemFs::new();
        // Record the acknowledged appends, then write an unsynced tail by
        // hand through the Never policy so that exactly those bytes pend.
        {
            let log = open(&fs, small_opts()).unwrap();
            append_n(&log, 0, 5);
        }
        {
            let log = open(
                &fs,
                LogOptions {
                    sync: SyncPolicy::Never,
                    ..small_opts()
                },
            )
            .unwrap();
            let data = payload(5);
            log.append(&[
                RecordIn::new("pk5", &data, 9_000),
                RecordIn::new("pk6", &data, 9_000),
                RecordIn::new("pk7", &data, 9_000),
            ])
            .unwrap();
            std::mem::forget(log); // a crash runs no destructors
        }
        fs.crash(CrashPlan::TornPrefix { bytes: torn_at });
        let open_check = if torn_at % 2 == 0 {
            OpenCheck::Full
        } else {
            OpenCheck::Deferred
        };
        let log = open(
            &fs,
            LogOptions {
                open_check,
                ..small_opts()
            },
        )
        .unwrap();
        assert_eq!(
            log.check_deferred(&|| false).ok(),
            Some(true),
            "torn at {torn_at}"
        );
        let got = read_all(&log).unwrap();
        assert!(got.len() >= 5, "torn at {torn_at}: acknowledged records lost");
        for (i, (seq, key, _, _)) in got.iter().enumerate() {
            assert_eq!(*seq, i as u64, "torn at {torn_at}");
            assert_eq!(key, &format!("pk{i}"), "torn at {torn_at}");
        }
        // Only whole frames of the torn batch may survive, in order.
        assert!(got.len() <= 8);
        // The log is writable again and the next record follows on.
        let next = log.append(&[RecordIn::new("after", b"x", 10_000)]).unwrap();
        assert_eq!(next.first_seq, got.len() as u64, "torn at {torn_at}");
        assert!(
            log.verify().is_ok(),
            "torn at {torn_at}: {:?}",
            log.verify().problems
        );
    }
}

#[test]
fn failed_fsync_append_is_never_acknowledged_and_never_reappears() {
    for plan in [CrashPlan::LoseUnsynced, CrashPlan::KeepUnsynced] {
        let fs = MemFs::new();
        log_with_unacked_tail(&fs, 10);
        fs.crash(plan);
        let log = open(&fs, small_opts()).unwrap();
        assert_records(&log, 10);
    }
    // Without a crash: reopening in the same "boot" must not serve the
    // unsynced records the kernel may still hold in its cache.
    let fs = MemFs::new();
    log_with_unacked_tail(&fs, 10);
    let log = open(&fs, small_opts()).unwrap();
    assert_records(&log, 10);
}

#[test]
fn random_crashes_keep_every_acknowledged_record() {
    for seed in 0..200u64 {
        let fs = MemFs::new();
        let acked;
        {
            let log = open(&fs, small_opts()).unwrap();
            acked = 20 + seed % 50;
            append_n(&log, 0, acked);
        }
        {
            let log = open(
                &fs,
                LogOptions {
                    sync: SyncPolicy::Never,
                    ..small_opts()
                },
            )
            .unwrap();
            let n = 1 + seed % 40;
            append_n(&log, acked, n);
            std::mem::forget(log);
        }
        fs.crash(CrashPlan::Random { seed });
        let open_check = if seed % 2 == 0 {
            OpenCheck::Full
        } else {
            OpenCheck::Deferred
        };
        let opts = LogOptions {
            open_check,
            ..small_opts()
        };
        let log = open(&fs, opts).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        assert_eq!(log.check_deferred(&|| false).ok(), Some(true), "seed {seed}");
        let got = read_all(&log).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        assert!(
            got.len() as u64 >= acked,
            "seed {seed}: lost acknowledged records"
        );
        for (i, (seq, key, data, _)) in got.iter().enumerate() {
            assert_eq!(*seq, i as u64, "seed {seed}");
            assert_eq!(key, &format!("pk{i}"), "seed {seed}");
            assert_eq!(data, &payload(i as u64), "seed {seed}");
        }
    }
}

#[test]
fn lost_unsynced_data_under_interval_policy_loses_only_the_unsynced_window() {
    let fs = MemFs::new();
    {
        let log = open(
            &fs,
            LogOptions {
                sync: SyncPolicy::IntervalMs(3_600_000),
                ..small_opts()
            },
        )
        .unwrap();
        append_n(&log, 0, 50);
        log.sync().unwrap();
        append_n(&log, 50, 25);
        assert_eq!(
            read_all(&log).unwrap().len(),
            75,
            "written records are visible under Interval"
        );
        std::mem::forget(log);
    }
    fs.crash(CrashPlan::LoseUnsynced);
    let log = open(&fs, small_opts()).unwrap();
    assert_records(&log, 50);
}

#[test]
fn poisoned_writer_refuses_appends_until_reopened() {
    let fs = MemFs::new();
    let log = open(&fs, small_opts()).unwrap();
    append_n(&log, 0, 3);
    fs.fail_next_syncs(1);
    assert!(matches!(
        log.append(&[RecordIn::new("k", b"v", 1)]),
        Err(Error::Poisoned { .. })
    ));
    // The fault is gone, but the writer must not pretend nothing happened.
    assert!(matches!(
        log.append(&[RecordIn::new("k", b"v", 1)]),
        Err(Error::Poisoned { .. })
    ));
    assert!(log.health().is_err());
    assert_eq!(
        read_all(&log).unwrap().len(),
        3,
        "readers still see acknowledged data"
    );
    drop(log);
    let log = open(&fs, small_opts()).unwrap();
    assert_records(&log, 3);
    append_n(&log, 3, 2);
    assert_records(&log, 5);
}

#[test]
fn failed_write_poisons_the_writer() {
    let fs = MemFs::new();
    let log = open(&fs, small_opts()).unwrap();
    append_n(&log, 0, 3);
    fs.short_next_write(10);
    assert!(matches!(
        log.append(&[RecordIn::new("pk3", b"v", 1)]),
        Err(Error::Poisoned { .. })
    ));
    drop(log);
    let log = open(&fs, small_opts()).unwrap();
    assert_records(&log, 3);
}

/// A write that fails after part of it landed can leave whole frames, with
/// valid checksums and the next sequence numbers, in the page cache. The
/// writer cuts them off before its appender learns of the failure; that cut
/// must be durable too, or a crash could keep the frames and lose the cut,
/// and the next open would serve records whose put was answered "failed"
/// after a reader had found them absent.
#[test]
fn frames_a_failed_write_left_never_come_back_after_a_crash() {
    let mut came_back = Vec::new();
    for seed in 0..64 {
        let fs = MemFs::new();
        let log = open(&fs, small_opts()).unwrap();
        append_n(&log, 0, 3);
        let (keys, data) = kib_batch_data();
        let batch = kib_batch(&keys, &data, 2_000);
        // Two whole frames (about 1,050 bytes each) and part of a third land.
        fs.short_next_write(2_500);
        assert!(matches!(log.append(&batch), Err(Error::Poisoned { .. })));
        assert_eq!(
            read_all(&log).unwrap().len(),
            3,
            "a reader finds the failed put absent"
        );
        drop(log);
        fs.crash(CrashPlan::Random { seed });
        let log = open(&fs, small_opts()).unwrap();
        let n = read_all(&log).unwrap().len();
        if n == 3 {
            assert_records(&log, 3);
        } else {
            came_back.push((seed, n));
        }
    }
    assert!(
        came_back.is_empty(),
        "(seed, records after the crash) where the failed put came back: {came_back:?}"
    );
}

/// Records 3..8 of about 1 KiB each, the batch the tests of failed writes
/// send after `append_n(log, 0, 3)`.
fn kib_batch_data() -> (Vec<String>, Vec<Vec<u8>>) {
    let data = (3..8).map(|i| vec![i as u8; 1_000]).collect();
    let keys = (3..8).map(|i| format!("pk{i}")).collect();
    (keys, data)
}

/// The records of [`kib_batch_data`], arriving at `arrival_ms`.
fn kib_batch<'a>(keys: &'a [String], data: &'a [Vec<u8>], arrival_ms: i64) -> Vec<RecordIn<'a>> {
    keys.iter()
        .zip(data)
        .map(|(k, d)| RecordIn::new(k, d, arrival_ms))
        .collect()
}

#[test]
fn a_group_sync_after_a_failed_cut_sync_acknowledges_nothing_that_failure_dropped() {
    // A write fails part-way, and the sync of its cut fails too: it drops
    // the pages of an append written before it and not yet synced, and
    // Linux reports the error to that one fsync only. A group leader
    // syncing in the window before the failure is known would find nothing
    // left to write, succeed, and acknowledge a record the device never
    // got. The cut's sync is the log's only sync while it runs and poisons
    // the log as it ends, so the waiter is told its put failed instead.
    let fs = MemFs::new();
    let log = open(&fs, small_opts()).unwrap();
    append_n(&log, 0, 3);
    let first = payload(3);
    let (_, pending) = log
        .append_deferred(&[RecordIn::new("pk3", &first, 2_000)])
        .unwrap();
    let (keys, data) = kib_batch_data();
    let batch = kib_batch(&keys, &data, 2_001);
    fs.short_next_write(2_500);
    fs.fail_next_syncs(1);
    fs.hold_next_sync_return(shardlog_segment::format::SEGMENT_FILE_SUFFIX);
    std::thread::scope(|s| {
        let failing = s.spawn(|| log.append(&batch));
        shardlog_testkit::wait_until(10, "the cut's sync never ran", || fs.sync_held());
        // The cut's sync has failed and dropped the earlier append's pages;
        // its caller has not heard of it yet. The waiter gets time to lead
        // a sync of its own, if the log let it.
        let waiter = s.spawn(|| block_on(log.durable(pending)));
        std::thread::sleep(std::time::Duration::from_millis(100));
        let early = waiter.is_finished();
        fs.release_sync();
        let failed = failing.join().unwrap();
        assert!(matches!(failed, Err(Error::Poisoned { .. })), "{failed:?}");
        let outcome = waiter.join().unwrap();
        assert!(
            outcome.is_err(),
            "the waiter was told its put was written (before the cut's sync returned: {early}), \
             but the failed sync dropped it"
        );
    });
    drop(log);
    for plan in [CrashPlan::LoseUnsynced, CrashPlan::Random { seed: 7 }] {
        let crashed = fs.clone();
        crashed.crash(plan);
        let log = open(&crashed, small_opts()).unwrap();
        assert_records(&log, 3);
    }
}

#[test]
fn a_write_a_full_disk_stops_part_way_is_cut_and_synced_so_none_of_it_comes_back() {
    // Where `fallocate` is not supported, writes extend the segment file
    // themselves and a full disk stops one part-way, after whole frames
    // with valid checksums may have landed. The write is refused with a
    // retriable error, the log goes on, and the cut is durable before the
    // answer: no crash brings the refused records back (without the sync
    // of the cut, 5 of these 63 crash seeds did).
    let (keys, data) = kib_batch_data();
    let batch = kib_batch(&keys, &data, 2_000);
    let mut came_back = Vec::new();
    for seed in 0..64 {
        let fs = MemFs::new();
        fs.set_allocate_unsupported(true);
        let log = open(&fs, small_opts()).unwrap();
        append_n(&log, 0, 3);
        // Room for two whole frames (about 1,050 bytes each) and part of a third.
        fs.set_capacity(Some(fs.used_bytes() + 2_500));
        let err = log.append(&batch).unwrap_err();
        let partial = fs.partial_no_space_writes();
        assert!(
            partial.iter().any(|w| !w.zeros
                && w.landed > 2_000
                && w.path
                    .to_string_lossy()
                    .ends_with(shardlog_segment::format::SEGMENT_FILE_SUFFIX)),
            "two whole frames of the batch landed in the segment before the disk was full: {partial:?}"
        );
        assert!(matches!(err, Error::NoSpace { .. }), "{err}");
        assert!(err.is_retriable(), "{err}");
        assert!(log.health().is_ok(), "a full disk must not poison the log");
        assert_eq!(
            read_all(&log).unwrap().len(),
            3,
            "a reader finds the refused put absent"
        );
        if seed == 0 {
            // Once space returns, the log goes on right after the acknowledged records.
            fs.set_capacity(None);
            append_n(&log, 3, 4);
            assert_records(&log, 7);
            continue;
        }
        drop(log);
        fs.crash(CrashPlan::Random { seed });
        let log = open(&fs, small_opts()).unwrap();
        let n = read_all(&log).unwrap().len();
        if n == 3 {
            assert_records(&log, 3);
        } else {
            came_back.push((seed, n));
        }
    }
    assert!(
        came_back.is_empty(),
        "(seed, records after the crash) where the refused put came back: {came_back:?}"
    );

    // The disk did take part of the write: when the cut itself fails, the
    // log is poisoned, and a crash that keeps unsynced data brings back
    // the two whole frames (the known limit after two failures in a row).
    let fs = MemFs::new();
    fs.set_allocate_unsupported(true);
    let log = open(&fs, small_opts()).unwrap();
    append_n(&log, 0, 3);
    fs.set_capacity(Some(fs.used_bytes() + 2_500));
    fs.fail_at(FsOp::SetLen, ".seg", 1);
    assert!(matches!(log.append(&batch), Err(Error::Poisoned { .. })));
    drop(log);
    fs.crash(CrashPlan::KeepUnsynced);
    fs.set_capacity(None);
    let log = open(&fs, small_opts()).unwrap();
    assert_eq!(
        read_all(&log).unwrap().len(),
        5,
        "two whole frames of the refused write had landed"
    );
}

#[test]
fn no_space_is_retriable_and_damages_nothing() {
    let fs = MemFs::new();
    let log = open(&fs, small_opts()).unwrap();
    append_n(&log, 0, 10);
    fs.set_capacity(Some(fs.used_bytes()));
    // Fill the preallocated space, then hit the limit.
    let mut next = 10;
    let err = loop {
        let data = payload(next);
        let key = format!("pk{next}");
        match log.append(&[RecordIn::new(&key, &data, 2_000)]) {
            Ok(_) => next += 1,
            Err(e) => break e,
        }
        assert!(next < 10_000, "capacity never reached");
    };
    assert!(matches!(err, Error::NoSpace { .. }), "{err}");
    assert!(err.is_retriable());
    assert!(log.health().is_ok(), "ENOSPC must not poison the writer");
    assert_records(&log, next);
    fs.set_capacity(None);
    append_n(&log, next, 5);
    drop(log);
    let log = open(&fs, small_opts()).unwrap();
    assert_records(&log, next + 5);
}

/// Options under which single synced appends cross a preallocation step
/// quickly, so that the zero-fill decision is taken within a few hundred
/// records.
fn zero_fill_opts() -> LogOptions {
    LogOptions {
        // Not a multiple of the zero-fill step, so that the cap at the roll
        // size binds.
        segment_bytes_max: 900 * 1024,
        preallocate_bytes: 32 * 1024,
        ..LogOptions::default()
    }
}

#[test]
fn small_synced_appends_zero_fill_ahead_of_the_frames_and_never_over_them() {
    let fs = MemFs::new();
    let log = open(&fs, zero_fill_opts()).unwrap();
    let before = log.active_space();
    assert_eq!(
        before.zeroed, before.written,
        "a new log has not synced yet: no zeros"
    );
    append_n(&log, 0, 1500);
    let space = log.active_space();
    assert!(
        space.zeroed > space.written,
        "one-record groups must zero-fill ahead: {space:?}"
    );
    assert!(
        space.zeroed <= 1024 * 1024,
        "zeros stop at the roll size: {space:?}"
    );
    assert!(space.preallocated >= space.zeroed, "{space:?}");
    let seg = log.segments().last().unwrap().path.clone();
    let bytes = fs.contents(&seg).unwrap();
    assert!(
        bytes[space.written as usize..space.zeroed as usize]
            .iter()
            .all(|b| *b == 0),
        "only zeros lie ahead of the frames"
    );
    assert_records(&log, 1500);
    // Appends keep overwriting the zeros in order, across rolls; zeros never
    // reach past the roll size.
    for i in 1500..21_500 {
        append_n(&log, i, 1);
        let space = log.active_space();
        assert!(
            space.zeroed <= space.written.max(900 * 1024),
            "zeros past the roll size: {space:?}"
        );
    }
    assert!(log.segments().len() > 1, "the test must cross a roll");
    assert_records(&log, 21_500);
    assert!(log.verify().is_ok(), "{:?}", log.verify().problems);
    drop(log);
    let log = open(&fs, zero_fill_opts()).unwrap();
    assert_records(&log, 21_500);
}

#[test]
fn large_group_syncs_do_not_zero_fill_and_turn_it_off_again() {
    let fs = MemFs::new();
    // Segments large enough that the test never rolls.
    let log = open(
        &fs,
        LogOptions {
            segment_bytes_max: 16 * 1024 * 1024,
            ..zero_fill_opts()
        },
    )
    .unwrap();
    let data = vec![7u8; 1024];
    let keys: Vec<String> = (0..64).map(|i| format!("k{i}")).collect();
    let big_groups = |n: usize| {
        for _ in 0..n {
            let recs: Vec<RecordIn<'_>> = keys.iter().map(|k| RecordIn::new(k, &data, 1_000)).collect();
            log.append(&recs).unwrap();
        }
    };
    big_groups(10);
    let space = log.active_space();
    assert_eq!(space.zeroed, space.written, "64 KiB groups must not write zeros");
    // Small groups turn zero-filling on...
    for i in 0..800 {
        log.append(&[RecordIn::new("small", b"x", 2_000 + i)]).unwrap();
    }
    let on = log.active_space();
    assert!(on.zeroed > on.written, "one-record groups zero-fill: {on:?}");
    // ...and large ones off again: the frames run past the last zeros.
    big_groups(20);
    let off = log.active_space();
    assert!(off.written > on.zeroed, "frames ran past the zeros: {off:?}");
    assert_eq!(
        off.zeroed, off.written,
        "no zeros are written ahead once groups are large again"
    );
}

/// Appends single records until the log's frames are within 200 bytes of
/// the end of its zeros, so that one of the next appends writes the next
/// step of zeros. Returns the next record number.
fn run_up_to_the_zeros(log: &Log, mut next: u64) -> u64 {
    while log.active_space().written + 200 < log.active_space().zeroed {
        append_n(log, next, 1);
        next += 1;
    }
    next
}

/// Opens after a crash and checks that exactly the acknowledged records (and
/// at most the one unacknowledged append) are there, in order and intact.
fn reopen_after_crash(fs: &MemFs, acked: u64, seed: u64) -> (Log, u64) {
    let open_check = if seed.is_multiple_of(2) {
        OpenCheck::Full
    } else {
        OpenCheck::Deferred
    };
    let log = open(
        fs,
        LogOptions {
            open_check,
            ..zero_fill_opts()
        },
    )
    .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    assert_eq!(log.check_deferred(&|| false).ok(), Some(true), "seed {seed}");
    let got = read_all(&log).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    assert!(
        got.len() as u64 >= acked,
        "seed {seed}: lost acknowledged records"
    );
    assert!(
        got.len() as u64 <= acked + 1,
        "seed {seed}: more than the one unacknowledged append"
    );
    for (i, (seq, key, data, _)) in got.iter().enumerate() {
        assert_eq!(*seq, i as u64, "seed {seed}");
        assert_eq!(key, &format!("pk{i}"), "seed {seed}");
        assert_eq!(data, &payload(i as u64), "seed {seed}");
    }
    assert!(log.verify().is_ok(), "seed {seed}: {:?}", log.verify().problems);
    let n = got.len() as u64;
    (log, n)
}

#[test]
fn a_crash_at_any_step_while_zero_filling_keeps_every_acknowledged_record() {
    let mut crashes_with_unsynced_zeros = 0;
    for seed in 0..60u64 {
        let fs = MemFs::new();
        let log = open(&fs, zero_fill_opts()).unwrap();
        // Enough one-record groups that zero-filling is on, then up to the
        // end of its zeros: the next appends write another step of them.
        append_n(&log, 0, 800);
        let mut acked = run_up_to_the_zeros(&log, 800);
        // The process dies after a few storage operations: before, within or
        // after the next zero-fill, a frame write or a sync, by the seed. The
        // crash then loses, keeps or tears each unsynced write, zeros included.
        fs.fail_after_ops(seed % 10);
        loop {
            let data = payload(acked);
            let key = format!("pk{acked}");
            match log.append(&[RecordIn::new(&key, &data, 1_000 + acked as i64)]) {
                Ok(_) => acked += 1,
                Err(_) => break,
            }
            assert!(acked < 100_000, "seed {seed}: the budget never ran out");
        }
        let seg = log.segments().last().unwrap().path.clone();
        if fs.pending_bytes(&seg).unwrap() >= 128 * 1024 {
            crashes_with_unsynced_zeros += 1;
        }
        std::mem::forget(log); // a crash runs no destructors
        fs.crash(CrashPlan::Random { seed });
        let (log, n) = reopen_after_crash(&fs, acked, seed);
        // After the reopen (which starts from the end of the frames), the log
        // zero-fills again once its syncs prove small, and a second crash
        // keeps everything acknowledged.
        let next = log.append(&[RecordIn::new(&format!("pk{n}"), &payload(n), 1_000_000)]);
        assert_eq!(next.unwrap().first_seq, n, "seed {seed}");
        append_n(&log, n + 1, 1_500);
        assert!(
            log.active_space().zeroed > log.active_space().written,
            "seed {seed}: zero-filling again after the reopen: {:?}",
            log.active_space()
        );
        let acked = n + 1_501;
        std::mem::forget(log);
        fs.crash(CrashPlan::Random { seed: seed + 1_000 });
        let (_log, _) = reopen_after_crash(&fs, acked, seed);
    }
    assert!(
        crashes_with_unsynced_zeros >= 10,
        "only {crashes_with_unsynced_zeros} crashes came with zeros unsynced"
    );
}

#[test]
fn a_failed_zero_fill_refuses_the_append_and_damages_nothing() {
    let fs = MemFs::new();
    let log = open(&fs, zero_fill_opts()).unwrap();
    append_n(&log, 0, 800);
    // Run up to the end of the zeros; a 300-byte record then needs more.
    let next = run_up_to_the_zeros(&log, 800);
    let before = log.active_space();
    fs.fail_at(FsOp::Write, ".seg", 1);
    let big = vec![b'z'; 300];
    let err = log
        .append(&[RecordIn::new("big", &big, 3_000)])
        .expect_err("the zero-fill write fails");
    assert_eq!(fs.failpoint_hits(FsOp::Write, ".seg"), 1);
    assert!(err.to_string().contains("zero-fill"), "{err}");
    assert!(
        log.health().is_ok(),
        "no frame was written: the writer stays healthy"
    );
    assert_eq!(log.active_space().written, before.written, "nothing was appended");
    assert_records(&log, next);
    append_n(&log, next, 2_000);
    assert_records(&log, next + 2_000);
    drop(log);
    let log = open(&fs, zero_fill_opts()).unwrap();
    assert_records(&log, next + 2_000);
}

#[test]
fn a_second_opener_gets_a_clear_lock_error() {
    let fs = MemFs::new();
    let log = open(&fs, small_opts()).unwrap();
    let err = open(&fs, small_opts()).unwrap_err();
    assert!(matches!(err, Error::Locked { .. }), "{err}");
    drop(log);
    open(&fs, small_opts()).unwrap();

    let tmp = tempfile::tempdir().unwrap();
    let real = Log::open(tmp.path(), LogOptions::default()).unwrap();
    let err = Log::open(tmp.path(), LogOptions::default()).unwrap_err();
    assert!(matches!(err, Error::Locked { .. }), "{err}");
    assert!(err.to_string().contains("locked by another process"));
    drop(real);
    Log::open(tmp.path(), LogOptions::default()).unwrap();
}

fn sealed_segment_path(log: &Log) -> PathBuf {
    log.segments().first().unwrap().path.clone()
}

#[test]
fn bit_flips_anywhere_in_a_sealed_segment_are_detected() {
    let opts = || LogOptions {
        segment_bytes_max: 64 * 1024,
        ..small_opts()
    };
    let build = || {
        let fs = MemFs::new();
        let log = open(&fs, opts()).unwrap();
        for i in 0..12u64 {
            let data = payload(i);
            log.append(&[RecordIn::new(&format!("pk{i}"), &data, i as i64)])
                .unwrap();
        }
        log.roll().unwrap();
        append_n(&log, 12, 1);
        let path = sealed_segment_path(&log);
        drop(log);
        (fs, path)
    };
    let (fs0, path0) = build();
    let len = fs0.contents(&path0).unwrap().len() as u64;
    for offset in (0..len).take(
        std::env::var("FLIP_MAX")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(usize::MAX),
    ) {
        let (fs, path) = build();
        fs.flip_bit(&path, offset, (offset % 8) as u8).unwrap();
        let log = open(&fs, opts()).unwrap();
        let report = log.verify();
        assert!(!report.is_ok(), "flip at {offset} not detected by verify");
        match read_all(&log) {
            Err(e) => assert!(e.is_corruption(), "flip at {offset}: {e}"),
            Ok(records) => panic!("flip at {offset} served {} records without error", records.len()),
        }
        // Whatever was returned before the error is intact (read in pieces).
        let batch = log.read_at(
            Position {
                segment_base: 0,
                offset: SEGMENT_HEADER_BYTES as u64,
            },
            0,
            ALL,
        );
        if let Ok(batch) = batch {
            for (i, r) in batch.iter().enumerate() {
                assert_eq!(r.data, payload(i as u64).as_slice(), "flip at {offset}");
            }
        }
    }
}

#[test]
fn mid_log_corruption_of_synced_data_quarantines_instead_of_truncating() {
    let fs = MemFs::new();
    let log = open(&fs, small_opts()).unwrap();
    append_n(&log, 0, 20);
    let path = log.segments().last().unwrap().path.clone();
    drop(log);
    // Damage the 6th record; later records carry proof it had been synced.
    let offset =
        SEGMENT_HEADER_BYTES as u64 + (0..5).map(|i| 40 + 3 + payload(i).len() as u64).sum::<u64>() + 41;
    fs.flip_bit(&path, offset, 3).unwrap();
    for policy in [RecoveryPolicy::TolerateTornTail, RecoveryPolicy::Strict] {
        let (log, report) = Log::open_with(
            Arc::new(fs.clone()),
            dir(),
            LogOptions {
                recovery: policy,
                ..small_opts()
            },
            Arc::new(NoObserverForTests),
        )
        .unwrap();
        let (qpath, qoff, _) = report.quarantined.clone().expect("quarantined");
        assert_eq!(qpath, path);
        assert!(qoff < offset + 1);
        assert!(matches!(
            log.append(&[RecordIn::new("k", b"v", 1)]),
            Err(Error::Quarantined { .. })
        ));
        let err = read_all(&log).unwrap_err();
        assert!(err.is_corruption());
        assert!(err.to_string().contains(&path.display().to_string()), "{err}");
        let batch = log
            .read_at(
                Position {
                    segment_base: 0,
                    offset: SEGMENT_HEADER_BYTES as u64,
                },
                0,
                ALL,
            )
            .unwrap();
        assert_eq!(batch.len(), 5, "records before the damage stay readable");
        drop(log);
        // Nothing was truncated.
        assert!(fs.contents(&path).unwrap().len() as u64 > offset + 1000);
    }
}

/// The byte offset of record `i` (0-based) in a log that `append_n` filled
/// from 0 within its first segment.
fn frame_offset(i: u64) -> u64 {
    SEGMENT_HEADER_BYTES as u64
        + (0..i)
            .map(|j| 40 + format!("pk{j}").len() as u64 + payload(j).len() as u64)
            .sum::<u64>()
}

#[test]
fn deferred_open_check_leaves_the_synced_prefix_to_a_later_pass_that_quarantines_its_damage() {
    let fs = MemFs::new();
    let log = open(&fs, small_opts()).unwrap();
    append_n(&log, 0, 20);
    let path = log.segments().last().unwrap().path.clone();
    drop(log);
    // A bit of the 6th record's data rots; its header stays intact, so
    // only its checksum can tell.
    let damaged = frame_offset(5);
    fs.flip_bit(&path, damaged + 40 + 3 + 2, 5).unwrap();
    let deferred = LogOptions {
        open_check: OpenCheck::Deferred,
        ..small_opts()
    };
    let (log, report) = Log::open_with(
        Arc::new(fs.clone()),
        dir(),
        deferred.clone(),
        Arc::new(NoObserverForTests),
    )
    .unwrap();
    assert_eq!(
        report.quarantined, None,
        "the walk of the synced prefix checks headers only"
    );
    let (dpath, dend) = report.deferred_check.clone().expect("a deferred check");
    assert_eq!(dpath, path);
    assert!(dend > damaged, "the synced prefix covers the damage");
    assert_eq!(log.deferred_check_bytes(), dend - SEGMENT_HEADER_BYTES as u64);
    // Readers verify every frame whatever the open check: the damaged
    // record is never served.
    let err = read_all(&log).unwrap_err();
    assert!(err.is_corruption(), "{err}");
    // The log takes appends until the pass finds the damage...
    log.append(&[RecordIn::new("pk20", b"v", 5_000)]).unwrap();
    let err = log.check_deferred(&|| false).unwrap_err();
    assert!(err.is_corruption(), "{err}");
    let text = err.to_string();
    assert!(text.contains(&path.display().to_string()), "{text}");
    assert!(text.contains(&damaged.to_string()), "{text}");
    // ...and is quarantined from then on, exactly as a full check at open
    // would have left it.
    assert!(matches!(
        log.append(&[RecordIn::new("k", b"v", 6_000)]),
        Err(Error::Quarantined { .. })
    ));
    let first = log
        .read_at(
            Position {
                segment_base: 0,
                offset: SEGMENT_HEADER_BYTES as u64,
            },
            0,
            ALL,
        )
        .unwrap();
    assert_eq!(first.len(), 5, "records before the damage stay readable");
    assert_eq!(log.deferred_check_bytes(), 0);
    // A reader that had read everything, past the damage, still finds the
    // tail quiet rather than an error at every poll.
    let tail = frame_offset(20) + 40 + 4 + 1;
    let quiet = log
        .read_at(
            Position {
                segment_base: 0,
                offset: tail,
            },
            21,
            ALL,
        )
        .unwrap();
    assert!(quiet.is_empty());
    drop(log);
    let (_, full) = Log::open_with(
        Arc::new(fs.clone()),
        dir(),
        small_opts(),
        Arc::new(NoObserverForTests),
    )
    .unwrap();
    let (qpath, qoff, _) = full.quarantined.expect("a full check quarantines at open");
    assert_eq!((qpath, qoff), (path, damaged));
}

#[test]
fn a_roll_finishes_the_deferred_check_first_so_damage_is_never_sealed_away_unchecked() {
    let fs = MemFs::new();
    let log = open(&fs, small_opts()).unwrap();
    append_n(&log, 0, 20);
    let path = log.segments().last().unwrap().path.clone();
    drop(log);
    fs.flip_bit(&path, frame_offset(5) + 40 + 3 + 2, 5).unwrap();
    let log = open(
        &fs,
        LogOptions {
            open_check: OpenCheck::Deferred,
            ..small_opts()
        },
    )
    .unwrap();
    assert!(log.deferred_check_bytes() > 0);
    // Opens scan only the active segment; sealing this one unchecked would
    // hide the damage from every later open.
    let err = log.roll().unwrap_err();
    assert!(err.is_corruption(), "{err}");
    assert_eq!(log.segments().len(), 1, "nothing was sealed");
    assert_eq!(log.deferred_check_bytes(), 0);
    assert!(matches!(
        log.append(&[RecordIn::new("k", b"v", 9_000)]),
        Err(Error::Quarantined { .. })
    ));
}

#[test]
fn damage_the_pass_after_open_finds_before_a_quarantine_from_recovery_leaves_that_quarantine_in_place() {
    let fs = MemFs::new();
    let log = open(&fs, small_opts()).unwrap();
    append_n(&log, 0, 20);
    let path = log.segments().last().unwrap().path.clone();
    drop(log);
    // Record 5's data rots (only its checksum can tell) and record 10's
    // length is hit (the walk stops there, and later frames prove it synced).
    fs.flip_bit(&path, frame_offset(5) + 40 + 3 + 2, 5).unwrap();
    fs.flip_bit(&path, frame_offset(10) + 4, 6).unwrap();
    let (log, report) = Log::open_with(
        Arc::new(fs.clone()),
        dir(),
        LogOptions {
            open_check: OpenCheck::Deferred,
            ..small_opts()
        },
        Arc::new(NoObserverForTests),
    )
    .unwrap();
    let (_, q, _) = report.quarantined.expect("recovery quarantines at record 10");
    assert_eq!(q, frame_offset(10));
    let err = log.check_deferred(&|| false).unwrap_err();
    assert!(err.to_string().contains(&frame_offset(5).to_string()), "{err}");
    // A reader stopped at recovery's quarantine still gets its error rather
    // than a quiet end of data.
    let at_quarantine = log.read_at(
        Position {
            segment_base: 0,
            offset: frame_offset(10),
        },
        10,
        ALL,
    );
    assert!(matches!(at_quarantine, Err(e) if e.is_corruption()));
}

#[test]
fn deferred_open_check_resumes_where_it_was_stopped_and_passes_an_intact_log() {
    let fs = MemFs::new();
    let opts = LogOptions {
        segment_bytes_max: 64 * 1024 * 1024,
        ..small_opts()
    };
    let log = open(&fs, opts.clone()).unwrap();
    // About 10 MiB in one segment: more than one step of the pass.
    let data = vec![0xA7u8; 100 * 1024];
    for i in 0..100 {
        log.append(&[RecordIn::new("k", &data, i)]).unwrap();
    }
    drop(log);
    let (log, report) = Log::open_with(
        Arc::new(fs.clone()),
        dir(),
        LogOptions {
            open_check: OpenCheck::Deferred,
            ..opts
        },
        Arc::new(NoObserverForTests),
    )
    .unwrap();
    assert_eq!(report.active_records, 100);
    let total = log.deferred_check_bytes();
    assert!(
        total > shardlog_segment::log::DEFERRED_CHECK_STEP_BYTES,
        "{total}"
    );
    assert!(!log.check_deferred(&|| true).unwrap(), "stops when asked");
    let left = log.deferred_check_bytes();
    assert!(0 < left && left < total, "{left} of {total} left");
    assert!(log.check_deferred(&|| false).unwrap());
    assert_eq!(log.deferred_check_bytes(), 0);
    assert!(log.check_deferred(&|| false).unwrap(), "nothing left is done");
    assert_eq!(read_all(&log).unwrap().len(), 100);
}

/// Builds a log with `acked` acknowledged records and `unsynced` more
/// under the Never policy, crashes it by `crash_seed`, and flips the given
/// bits of its active segment: the same state for the same inputs.
fn crashed_and_damaged(acked: u64, unsynced: u64, crash_seed: u64, flips: &[(u64, u8)]) -> MemFs {
    let fs = MemFs::new();
    {
        let log = open(&fs, small_opts()).unwrap();
        append_n(&log, 0, acked);
    }
    {
        let log = open(
            &fs,
            LogOptions {
                sync: SyncPolicy::Never,
                ..small_opts()
            },
        )
        .unwrap();
        append_n(&log, acked, unsynced);
        std::mem::forget(log); // a crash runs no destructors
    }
    fs.crash(CrashPlan::Random { seed: crash_seed });
    let mut segments: Vec<String> = fs
        .read_dir(&dir())
        .unwrap()
        .into_iter()
        .filter(|n| n.ends_with(".seg"))
        .collect();
    segments.sort();
    let active = dir().join(segments.last().unwrap());
    let len = fs.contents(&active).unwrap().len() as u64;
    for &(at, bit) in flips {
        fs.flip_bit(&active, at % len, bit % 8).unwrap();
    }
    fs
}

/// What a reader gets from the start until the first error or the end, and
/// whether the log takes writes; or that it did not open.
fn outcome_after_open(fs: &MemFs, open_check: OpenCheck) -> Result<(Vec<Row>, bool), String> {
    let log = open(
        fs,
        LogOptions {
            open_check,
            ..small_opts()
        },
    )
    .map_err(|e| format!("{e:?}").split('{').next().unwrap_or_default().to_string())?;
    let _ = log.check_deferred(&|| false);
    let mut served = Vec::new();
    let mut pos = Position {
        segment_base: log.first_seq(),
        offset: SEGMENT_HEADER_BYTES as u64,
    };
    let mut seq = log.first_seq();
    while let Ok(batch) = log.read_at(pos, seq, ALL) {
        for r in batch.iter() {
            served.push((r.seq, r.partition_key.to_string(), r.data.to_vec(), r.arrival_ms));
        }
        if batch.is_empty() && batch.next == pos {
            break;
        }
        pos = batch.next;
        seq = batch.next_seq;
    }
    Ok((served, log.health().is_ok()))
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

    /// A deferred open check followed by its pass ends where a full check at
    /// open does: the same records served, the same decision to take writes
    /// or to quarantine, whatever the crash tore and whatever bits rotted.
    #[test]
    fn deferred_open_check_then_its_pass_ends_like_a_full_check(
        acked in 1u64..120,
        unsynced in 0u64..20,
        crash_seed in proptest::prelude::any::<u64>(),
        flips in proptest::collection::vec((proptest::prelude::any::<u64>(), proptest::prelude::any::<u8>()), 0..3),
    ) {
        let full = outcome_after_open(&crashed_and_damaged(acked, unsynced, crash_seed, &flips), OpenCheck::Full);
        let deferred = outcome_after_open(&crashed_and_damaged(acked, unsynced, crash_seed, &flips), OpenCheck::Deferred);
        proptest::prop_assert_eq!(&full, &deferred);
        if let Ok((served, _)) = &full {
            for (i, (seq, key, data, _)) in served.iter().enumerate() {
                proptest::prop_assert_eq!(*seq, i as u64);
                proptest::prop_assert_eq!(key, &format!("pk{i}"));
                proptest::prop_assert_eq!(data, &payload(i as u64));
            }
            if flips.is_empty() {
                proptest::prop_assert!(served.len() as u64 >= acked, "acknowledged records lost");
            }
        }
    }
}

#[test]
fn strict_policy_refuses_a_torn_tail_and_tolerant_policy_truncates_it() {
    let fs = MemFs::new();
    let log = open(&fs, small_opts()).unwrap();
    append_n(&log, 0, 4);
    let path = log.segments().last().unwrap().path.clone();
    drop(log);
    let end = SEGMENT_HEADER_BYTES as u64 + (0..4).map(|i| 40 + 3 + payload(i).len() as u64).sum::<u64>();
    // A torn frame: a plausible header with garbage after it.
    fs.corrupt(&path, end, &[7u8; 30]).unwrap();
    let strict = LogOptions {
        recovery: RecoveryPolicy::Strict,
        ..small_opts()
    };
    let err = open(&fs, strict).unwrap_err();
    assert!(matches!(err, Error::TornTail { .. }), "{err}");
    let (log, report) = Log::open_with(
        Arc::new(fs.clone()),
        dir(),
        small_opts(),
        Arc::new(NoObserverForTests),
    )
    .unwrap();
    assert_eq!(report.truncated_at, Some((path.clone(), end)));
    assert_records(&log, 4);
}

#[test]
fn crash_while_creating_a_segment_recovers() {
    let fs = MemFs::new();
    let log = open(&fs, small_opts()).unwrap();
    append_n(&log, 0, 4);
    log.roll().unwrap();
    let active = log.segments().last().unwrap().path.clone();
    drop(log);
    // The new segment's header was lost, though its name was not.
    fs.truncate_durably(&active, 10).unwrap();
    let log = open(&fs, small_opts()).unwrap();
    assert_records(&log, 4);
    append_n(&log, 4, 2);
    assert_records(&log, 6);
}

#[test]
fn retention_removes_whole_sealed_segments_oldest_first() {
    let fs = MemFs::new();
    let log = open(&fs, small_opts()).unwrap();
    append_n(&log, 0, 3000);
    let segs = log.segments();
    let cut = segs[2].base_seq;
    assert_eq!(log.remove_segments_before(cut).unwrap(), 2);
    assert_eq!(log.first_seq(), cut);
    assert!(!fs.exists(&segs[0].path));
    assert_eq!(
        fs.durable_names(&dir())
            .iter()
            .filter(|n| n.ends_with(".seg"))
            .count(),
        segs.len() - 2
    );
    // Never the active segment.
    log.remove_segments_before(u64::MAX).unwrap();
    assert_eq!(log.segments().len(), 1);
    assert_eq!(log.next_seq(), 3000);
}

#[test]
fn a_segment_whose_removal_fails_stays_readable_and_is_removed_by_the_next_pass() {
    let fs = MemFs::new();
    let log = open(&fs, small_opts()).unwrap();
    append_n(&log, 0, 3000);
    let segs = log.segments();
    let cut = segs[2].base_seq;
    let first = segs[0].path.to_string_lossy().into_owned();
    fs.fail_at(FsOp::Remove, &first, 1);
    let err = log.remove_segments_before(cut).unwrap_err();
    assert!(err.to_string().contains("remove segment"), "{err}");
    // The file is still there, and so is every record in it.
    assert!(fs.exists(&segs[0].path));
    assert_eq!(log.first_seq(), 0);
    assert_records(&log, 3000);
    // The next pass removes both segments.
    assert_eq!(log.remove_segments_before(cut).unwrap(), 2);
    assert_eq!(log.first_seq(), cut);
    assert!(!fs.exists(&segs[0].path) && !fs.exists(&segs[1].path));
}

/// Retention removes segments oldest first and syncs the directory after
/// each, so that the files a crash leaves are always a suffix. When that
/// sync fails, the removal before it is not known to be durable: a later
/// pass must not remove the next segment until a directory sync has
/// succeeded, or a crash could bring the older file back without the newer
/// one, a gap the next open reports as corruption (found by the engine
/// model, seed 150008251).
#[test]
fn a_failed_directory_sync_stops_later_removals_until_one_succeeds_so_a_crash_leaves_no_gap() {
    let mut gaps = Vec::new();
    for seed in 0..32 {
        let fs = MemFs::new();
        let log = open(&fs, small_opts()).unwrap();
        append_n(&log, 0, 3000);
        let segs = log.segments();
        assert_eq!(log.remove_segments_before(segs[1].base_seq).unwrap(), 1);
        // Two passes, each of whose directory syncs fails: the first after
        // removing segment 1, the second before removing anything.
        fs.fail_at(FsOp::SyncDir, "", 2);
        assert!(log.remove_segments_before(segs[2].base_seq).is_err());
        assert!(log.remove_segments_before(segs[3].base_seq).is_err());
        drop(log);
        fs.crash(CrashPlan::Random { seed });
        let log = open(&fs, small_opts()).unwrap();
        match read_all(&log) {
            Ok(rows) => {
                let first = rows.first().map_or(0, |r| r.0);
                assert_eq!(
                    rows.len() as u64,
                    3000 - first,
                    "seed {seed}: records from {first} on"
                );
            }
            Err(e) => gaps.push((seed, e.to_string())),
        }
    }
    assert!(gaps.is_empty(), "crashes that left a gap: {gaps:?}");
    // Removals resume once a directory sync succeeds.
    let fs = MemFs::new();
    let log = open(&fs, small_opts()).unwrap();
    append_n(&log, 0, 3000);
    let segs = log.segments();
    assert_eq!(log.remove_segments_before(segs[1].base_seq).unwrap(), 1);
    fs.fail_at(FsOp::SyncDir, "", 1);
    assert!(log.remove_segments_before(segs[2].base_seq).is_err());
    assert_eq!(log.remove_segments_before(segs[3].base_seq).unwrap(), 1);
    assert_eq!(log.first_seq(), segs[3].base_seq);
}

/// Remembers which segments the log reported removed.
#[derive(Debug, Default)]
struct RemovalRecorder(std::sync::Mutex<Vec<u64>>);

impl shardlog_segment::AppendObserver for RemovalRecorder {
    fn placed(&self, _: u64, _: &[shardlog_segment::Placed]) {}
    fn sealed(&self, _: &shardlog_segment::SealedInfo) {}
    fn removed(&self, base: u64) {
        self.0.lock().unwrap().push(base);
    }
}

#[test]
fn the_observer_hears_of_a_removal_only_once_the_file_is_gone() {
    let fs = MemFs::new();
    let recorder = Arc::new(RemovalRecorder::default());
    let (log, _) = Log::open_with(Arc::new(fs.clone()), dir(), small_opts(), recorder.clone()).unwrap();
    append_n(&log, 0, 3000);
    let segs = log.segments();
    let cut = segs[1].base_seq;
    fs.fail_at(FsOp::Remove, &segs[0].path.to_string_lossy(), 1);
    assert!(log.remove_segments_before(cut).is_err());
    assert!(recorder.0.lock().unwrap().is_empty(), "told before the file went");
    assert_eq!(log.remove_segments_before(cut).unwrap(), 1);
    assert_eq!(*recorder.0.lock().unwrap(), vec![0]);
}

#[test]
fn a_segment_file_already_gone_counts_as_removed() {
    let fs = MemFs::new();
    let log = open(&fs, small_opts()).unwrap();
    append_n(&log, 0, 3000);
    let segs = log.segments();
    let cut = segs[1].base_seq;
    // Removed behind the log's back (by hand, or by an earlier pass).
    FileSystem::remove_file(&fs, &segs[0].path).unwrap();
    assert_eq!(log.remove_segments_before(cut).unwrap(), 1);
    assert_eq!(log.first_seq(), cut);
    assert_eq!(log.remove_segments_before(cut).unwrap(), 0);
}

#[test]
fn a_frame_past_the_end_of_a_sealed_segment_is_reported_not_served_twice() {
    let fs = MemFs::new();
    {
        let log = open(&fs, small_opts()).unwrap();
        append_n(&log, 0, 3000);
    }
    let path = dir().join(shardlog_segment::segment::segment_file_name(0));
    let bytes = fs.contents(&path).unwrap();
    let header = shardlog_segment::segment::SegmentHeader::decode(&bytes).unwrap();
    let log = open(&fs, small_opts()).unwrap();
    let end = log.segments()[1].base_seq;
    drop(log);
    // A well-formed frame for the next segment's first sequence number,
    // appended to the sealed file, as a bad copy or restore might leave it.
    let mut frame = Vec::new();
    let data = b"not the real record";
    shardlog_segment::frame::encode(
        &mut frame,
        header.file_id,
        end,
        0,
        &RecordIn::new("intruder", data, 1_000),
    );
    fs.corrupt(&path, bytes.len() as u64, &frame).unwrap();
    let log = open(&fs, small_opts()).unwrap();
    let start = Position {
        segment_base: 0,
        offset: SEGMENT_HEADER_BYTES as u64,
    };
    let batch = log.read_at(start, 0, ALL).unwrap();
    assert_eq!(batch.len() as u64, end, "only the segment's own records");
    let err = log.read_at(batch.next, batch.next_seq, ALL).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("past the end of the sealed segment"), "{msg}");
    assert!(
        msg.contains(&bytes.len().to_string()),
        "the offset is named: {msg}"
    );
    assert!(!log.verify().is_ok(), "verify reports it too");
}

#[test]
fn idle_segment_rolls_by_age() {
    let fs = MemFs::new();
    let log = open(
        &fs,
        LogOptions {
            segment_age_max_ms: 1_000,
            ..small_opts()
        },
    )
    .unwrap();
    log.append(&[RecordIn::new("k", b"v", 10_000)]).unwrap();
    let created = log.segments().len();
    assert!(!log.roll_if_older(shardlog_segment::now_ms().min(0)).unwrap());
    assert!(log.roll_if_older(i64::MAX / 2).unwrap());
    assert_eq!(log.segments().len(), created + 1);
    // An append whose arrival is past the age limit rolls too.
    log.append(&[RecordIn::new("k", b"v", i64::MAX / 2)]).unwrap();
    log.append(&[RecordIn::new("k", b"v", i64::MAX / 2 + 5_000)])
        .unwrap();
    assert_eq!(log.segments().len(), created + 2);
}

#[test]
fn concurrent_appenders_share_fsyncs_through_group_commit() {
    let fs = MemFs::new();
    let log = Arc::new(open(&fs, small_opts()).unwrap());
    let syncs_before = fs.sync_count();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                let mut seqs = Vec::new();
                for i in 0..200 {
                    let key = format!("t{t}");
                    let data = format!("{t}-{i}");
                    seqs.push(
                        log.append(&[RecordIn::new(&key, data.as_bytes(), 1)])
                            .unwrap()
                            .first_seq,
                    );
                }
                seqs
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in threads {
        let seqs = t.join().unwrap();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]));
        all.extend(seqs);
    }
    all.sort_unstable();
    assert_eq!(all, (0..1600).collect::<Vec<_>>());
    let syncs = fs.sync_count() - syncs_before;
    assert!(
        syncs <= 1600 + 20,
        "at most one fsync per append (plus rolls), got {syncs}"
    );
    // Every record of every thread is there, in per-thread order.
    let got = read_all(&log).unwrap();
    assert_eq!(got.len(), 1600);
    for t in 0..8 {
        let mine: Vec<String> = got
            .iter()
            .filter(|r| r.1 == format!("t{t}"))
            .map(|r| String::from_utf8(r.2.clone()).unwrap())
            .collect();
        assert_eq!(mine, (0..200).map(|i| format!("{t}-{i}")).collect::<Vec<_>>());
    }
}

#[test]
fn real_files_round_trip_through_memory_maps() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = || LogOptions {
        segment_bytes_max: 64 * 1024,
        ..LogOptions::default()
    };
    {
        let log = Log::open(tmp.path(), opts()).unwrap();
        append_n(&log, 0, 2000);
        assert_records(&log, 2000);
    }
    let log = Log::open(tmp.path(), opts()).unwrap();
    assert_records(&log, 2000);
    let report = log.verify();
    assert!(report.is_ok(), "{:?}", report.problems);
    assert_eq!(report.records, 2000);
    // Sealed segments hold no preallocated slack.
    let sealed = &log.segments()[0];
    let len = std::fs::metadata(&sealed.path).unwrap().len();
    assert!(len <= 64 * 1024, "sealed segment is {len} bytes");
    assert!(Path::new(&sealed.path).exists());
}

#[test]
fn stray_bytes_in_preallocated_space_of_a_real_file_are_found_and_cut() {
    use std::os::unix::fs::FileExt;
    let tmp = tempfile::tempdir().unwrap();
    let path;
    let end;
    {
        let log = Log::open(tmp.path(), LogOptions::default()).unwrap();
        append_n(&log, 0, 10);
        path = log.segments()[0].path.clone();
        end = SEGMENT_HEADER_BYTES as u64 + (0..10).map(|i| 40 + 3 + payload(i).len() as u64).sum::<u64>();
    }
    // A torn write's later sector landed far past the end of data, in the
    // preallocated (never written) space.
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    let len = f.metadata().unwrap().len();
    assert!(len > end + 300_000, "segment is preallocated");
    f.write_all_at(&[0xAB; 512], end + 200_000).unwrap();
    drop(f);
    let strict = LogOptions {
        recovery: RecoveryPolicy::Strict,
        ..LogOptions::default()
    };
    assert!(matches!(
        Log::open(tmp.path(), strict),
        Err(Error::TornTail { .. })
    ));
    let log = Log::open(tmp.path(), LogOptions::default()).unwrap();
    assert_records(&log, 10);
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        end,
        "cut back to the end of data"
    );
}

#[test]
fn logs_sharing_a_sync_coordinator_share_syncs_and_fail_together() {
    let fs = MemFs::new();
    let coord = shardlog_segment::SyncCoordinator::new(Arc::new(fs.clone()), "/").unwrap();
    let opts = || LogOptions {
        sync_coordinator: Some(coord.clone()),
        ..small_opts()
    };
    let open_at = |d: &str| {
        Log::open_with(
            Arc::new(fs.clone()),
            PathBuf::from(d),
            opts(),
            Arc::new(NoObserverForTests),
        )
        .unwrap()
        .0
    };
    let (a, b) = (open_at("/a"), open_at("/b"));
    // Deferred appends to both logs, then one sync covers both.
    let (_, pa) = a.append_deferred(&[RecordIn::new("k", b"1", 1)]).unwrap();
    let (_, pb) = b.append_deferred(&[RecordIn::new("k", b"2", 1)]).unwrap();
    let before = coord.sync_count();
    a.complete(pa).unwrap();
    b.complete(pb).unwrap();
    assert_eq!(coord.sync_count() - before, 1, "one syncfs for both logs");
    assert_eq!(a.visible_next_seq(), 1);
    assert_eq!(b.visible_next_seq(), 1);
    // Everything acknowledged survives a crash.
    std::thread::scope(|s| {
        for log in [&a, &b] {
            s.spawn(move || {
                for i in 0..50 {
                    log.append(&[RecordIn::new("k", format!("{i}").as_bytes(), 2)])
                        .unwrap();
                }
            });
        }
    });
    // The in-memory sync is instant, so concurrent appends rarely overlap
    // here; at most one sync per append (the benches show the sharing).
    assert!(coord.sync_count() <= 101, "{}", coord.sync_count());
    // A failed syncfs poisons every log that waits on it, and for good.
    fs.fail_next_syncs(1);
    assert!(matches!(
        a.append(&[RecordIn::new("k", b"x", 3)]),
        Err(Error::Poisoned { .. })
    ));
    assert!(matches!(
        b.append(&[RecordIn::new("k", b"y", 3)]),
        Err(Error::Poisoned { .. })
    ));
    std::mem::forget(a);
    std::mem::forget(b);
    fs.crash(CrashPlan::LoseUnsynced);
    let (a, b) = (open_at("/a"), open_at("/b"));
    assert_eq!(a.next_seq(), 51);
    assert_eq!(b.next_seq(), 51);
}

fn open_report(fs: &MemFs) -> (Log, shardlog_segment::RecoveryReport) {
    Log::open_with(
        Arc::new(fs.clone()),
        dir(),
        small_opts(),
        Arc::new(NoObserverForTests),
    )
    .unwrap()
}

fn active_segment(fs: &MemFs) -> PathBuf {
    let mut names: Vec<String> = fs
        .durable_names(&dir())
        .into_iter()
        .filter(|n| n.ends_with(".seg"))
        .collect();
    names.sort();
    dir().join(names.last().unwrap())
}

#[test]
fn after_a_clean_stop_data_ending_early_is_quarantined_as_damage_not_cut_as_a_torn_tail() {
    let fs = MemFs::new();
    let log = open(&fs, small_opts()).unwrap();
    for i in 0..10 {
        log.append(&[RecordIn::new("k", &payload(i), 1)]).unwrap();
    }
    log.mark_clean(true).unwrap();
    drop(log);
    // Lose the last record exactly at its frame boundary: without the marker
    // the log would simply look shorter.
    let seg = active_segment(&fs);
    let bytes = fs.contents(&seg).unwrap();
    let last_len = 40 + 1 + payload(9).len();
    let end = bytes.iter().rposition(|&b| b != 0).unwrap() + 1;
    fs.corrupt(&seg, (end - last_len) as u64, &vec![0u8; last_len])
        .unwrap();
    let (log, report) = open_report(&fs);
    let (file, offset, reason) = report.quarantined.expect("damage after a clean stop is reported");
    assert_eq!(file, seg);
    assert_eq!(offset as usize, end - last_len);
    assert!(reason.contains("stopped cleanly"), "{reason}");
    assert_eq!(report.truncated_bytes, 0, "nothing is cut");
    let start = Position {
        segment_base: 0,
        offset: SEGMENT_HEADER_BYTES as u64,
    };
    let nine = ReadLimits {
        max_records: 9,
        max_bytes: usize::MAX,
    };
    assert_eq!(
        log.read_at(start, 0, nine).unwrap().iter().count(),
        9,
        "records before the damage are served"
    );
    match read_all(&log) {
        Err(Error::Corruption { offset: at, .. }) => assert_eq!(at as usize, end - last_len),
        other => panic!("reading past the damage must fail: {other:?}"),
    }
    assert!(
        log.append(&[RecordIn::new("k", b"x", 1)]).is_err(),
        "a quarantined log refuses writes"
    );
    // The quarantine outlives the open that found it: later opens (after a
    // clean stop or a crash) find the same damage and never take the early
    // end for a torn tail to cut.
    drop(log);
    for crash in [false, true] {
        if crash {
            fs.crash(CrashPlan::LoseUnsynced);
        }
        let (log, report) = open_report(&fs);
        let (file, offset, _) = report.quarantined.expect("still quarantined");
        assert_eq!((file, offset as usize), (seg.clone(), end - last_len));
        assert_eq!(report.truncated_bytes, 0, "nothing is cut");
        assert!(log.append(&[RecordIn::new("k", b"x", 1)]).is_err());
    }
}

#[test]
fn a_failed_roll_fsync_discards_unacknowledged_frames_so_a_restart_cannot_serve_them() {
    let fs = MemFs::new();
    let log = open(&fs, small_opts()).unwrap();
    let data = vec![0x42u8; 1000];
    for i in 0..60 {
        log.append(&[RecordIn::new("k", &data, i)]).unwrap();
    }
    // Written, waiting for its group sync: not acknowledged.
    let (_, pending) = log
        .append_deferred(&[RecordIn::new("k", b"waiting", 60)])
        .unwrap();
    // The next batch does not fit: the roll's fsync of the full segment fails.
    fs.fail_at(shardlog_testkit::FsOp::SyncData, ".seg", 1);
    let batch: Vec<RecordIn<'_>> = (0..3).map(|_| RecordIn::new("k", &data, 61)).collect();
    assert!(matches!(log.append(&batch), Err(Error::Poisoned { .. })));
    assert!(log.complete(pending).is_err(), "the waiting record is refused");
    drop(log);
    // Reopened in the same boot, where the kernel still caches whatever the
    // failed sync did not write: the refused record must not reappear.
    let log = open(&fs, small_opts()).unwrap();
    assert_eq!(read_all(&log).unwrap().len(), 60);
    assert_eq!(log.next_seq(), 60);
}

#[test]
fn a_segment_whose_creation_fails_is_removed_so_a_restart_cannot_take_it_for_the_active_one() {
    let fs = MemFs::new();
    let log = open(&fs, small_opts()).unwrap();
    let data = vec![0x42u8; 1000];
    for i in 0..60 {
        log.append(&[RecordIn::new("k", &data, i)]).unwrap();
    }
    // The roll creates the next segment, but the directory sync that would
    // make its name durable fails.
    fs.fail_at(shardlog_testkit::FsOp::SyncDir, "shard", 1);
    let batch: Vec<RecordIn<'_>> = (0..3).map(|_| RecordIn::new("k", &data, 61)).collect();
    assert!(log.append(&batch).is_err());
    let segments = fs
        .read_dir(&dir())
        .unwrap()
        .into_iter()
        .filter(|n| n.ends_with(".seg"))
        .count();
    assert_eq!(segments, 1, "no half-made segment is left behind");
    drop(log);
    let log = open(&fs, small_opts()).unwrap();
    assert_eq!(read_all(&log).unwrap().len(), 60);
    let next = log.append(&batch).unwrap();
    assert_eq!(next.first_seq, 60, "sequence numbers go on from the records kept");
    assert_eq!(read_all(&log).unwrap().len(), 63);
}

#[test]
fn the_clean_marker_is_used_once_and_a_stale_one_is_ignored() {
    let fs = MemFs::new();
    let log = open(&fs, small_opts()).unwrap();
    log.append(&[RecordIn::new("k", b"one", 1)]).unwrap();
    log.mark_clean(true).unwrap();
    // Appends after the marker make it stale: a later torn tail is still a
    // torn tail, not damage.
    log.append(&[RecordIn::new("k", b"two", 1)]).unwrap();
    log.append_deferred(&[RecordIn::new("k", b"never acknowledged", 1)])
        .unwrap();
    std::mem::forget(log);
    fs.crash(CrashPlan::TornPrefix { bytes: 30 });
    let (log, report) = open_report(&fs);
    assert!(report.quarantined.is_none(), "{report:?}");
    assert_eq!(read_all(&log).unwrap().len(), 2);
    drop(log);
    // Opening removed the marker: a crash now is recovered as a crash.
    assert!(
        fs.contents(&dir().join("CLEAN")).is_err(),
        "the marker is removed at open"
    );
}

/// Found by the `segment_log` fuzz target: a segment whose header carries
/// the largest file id (any u64 can be on disk) made the next roll compute
/// `file_id + 1` and overflow.
#[test]
fn rolling_after_a_segment_with_the_largest_file_id_does_not_overflow() {
    use shardlog_segment::segment::{segment_file_name, SegmentHeader};
    let fs = MemFs::new();
    fs.create_dir_all(&dir()).unwrap();
    let header = SegmentHeader {
        file_id: u64::MAX,
        base_seq: 0,
        created_ms: 0,
        recycled_from: None,
    };
    let file = fs.create_new(&dir().join(segment_file_name(0))).unwrap();
    file.write_all_at(&header.encode(), 0).unwrap();
    file.sync_data().unwrap();
    fs.sync_dir(&dir()).unwrap();
    drop(file);
    let log = open(&fs, small_opts()).unwrap();
    log.append(&[RecordIn::new("k", b"before", 1)]).unwrap();
    log.roll().unwrap();
    log.append(&[RecordIn::new("k", b"after", 2)]).unwrap();
    let segs = log.segments();
    assert_eq!(segs.len(), 2);
    drop(log);
    let log = open(&fs, small_opts()).unwrap();
    assert_eq!(log.next_seq(), 2);
}

/// Runs a future to completion on this thread (the tests need no runtime:
/// the waker unparks the thread).
fn block_on<F: std::future::Future>(fut: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    loop {
        if let std::task::Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}

fn pooled_opts() -> LogOptions {
    LogOptions {
        sync_pool: Some(shardlog_segment::SyncPool::new(2).unwrap()),
        ..small_opts()
    }
}

#[test]
fn async_appends_acknowledged_through_the_sync_pool_survive_a_crash() {
    for plan in [CrashPlan::LoseUnsynced, CrashPlan::Random { seed: 7 }] {
        let fs = MemFs::new();
        let log = Arc::new(open(&fs, pooled_opts()).unwrap());
        let acked: Vec<u64> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4u64)
                .map(|t| {
                    let log = log.clone();
                    s.spawn(move || {
                        let mut acked = Vec::new();
                        for i in 0..50u64 {
                            let data = payload(t * 1000 + i);
                            let (a, pending) =
                                log.append_deferred(&[RecordIn::new("k", &data, 1_000)]).unwrap();
                            block_on(log.durable(pending)).unwrap();
                            acked.push(a.first_seq);
                        }
                        acked
                    })
                })
                .collect();
            handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(acked.len(), 200);
        // Nothing but the pool's syncs made them durable: no clean close.
        std::mem::forget(Arc::try_unwrap(log).unwrap());
        fs.crash(plan);
        let log = open(&fs, small_opts()).unwrap();
        let got = read_all(&log).unwrap();
        let seqs: std::collections::BTreeSet<u64> = got.iter().map(|r| r.0).collect();
        for s in &acked {
            assert!(seqs.contains(s), "{plan:?}: acknowledged record {s} lost");
        }
    }
}

/// Waits up to 10 s for `log` to make everything before `next_seq` durable
/// (visible, under `SyncPolicy::Always`).
fn wait_durable_through(log: &Log, next_seq: u64, what: &str) {
    shardlog_testkit::wait_until(10, what, || log.visible_next_seq() >= next_seq);
}

#[test]
fn a_durable_future_is_synced_for_from_when_it_is_made_and_puts_behind_the_polled_one_need_no_poll() {
    // A producer that pipelines makes a future per put and polls only its
    // oldest. The sync pool starts a group sync when a future is made, and
    // a running job keeps going for puts not yet polled, so the producer's
    // later puts are synced while it waits on the first.
    let fs = MemFs::new();
    let pool = shardlog_segment::SyncPool::new(1).unwrap();
    let log = open(
        &fs,
        LogOptions {
            sync_pool: Some(pool),
            ..unrolled_opts()
        },
    )
    .unwrap();
    let put = |i: i64| {
        let (a, pending) = log
            .append_deferred(&[RecordIn::new("k", b"pipelined", 1_000 + i)])
            .unwrap();
        (a.first_seq + 1, log.durable(pending))
    };
    // Never polled: made is enough.
    let (end_a, _a) = put(0);
    wait_durable_through(
        &log,
        end_a,
        "a put whose future was made but not polled was never synced",
    );
    // B's sync is held; C is written meanwhile and its future made, not
    // polled. Only B is awaited: the job that synced B syncs C next.
    fs.hold_next_sync_return(shardlog_segment::format::SEGMENT_FILE_SUFFIX);
    let (end_b, b) = put(1);
    shardlog_testkit::wait_until(10, "B's sync never started", || fs.sync_held());
    let (end_c, _c) = put(2);
    assert!(log.visible_next_seq() < end_b);
    fs.release_sync();
    block_on(b).unwrap();
    wait_durable_through(
        &log,
        end_c,
        "the put behind the polled one waited for its own poll",
    );
    // They are durable: a crash that loses everything unsynced keeps all three.
    std::mem::forget(log);
    fs.crash(CrashPlan::LoseUnsynced);
    let log = open(&fs, unrolled_opts()).unwrap();
    let got = read_all(&log).unwrap();
    assert_eq!(got.iter().map(|r| r.0).collect::<Vec<_>>(), vec![0, 1, 2]);
}

#[test]
fn large_async_groups_of_several_logs_sync_on_bulk_threads_and_survive_a_crash() {
    // One regular sync thread for four logs: groups of 64 KiB or more may
    // also sync on bulk threads, several logs at once. What they
    // acknowledge must be as durable as what a regular thread does.
    let fs = MemFs::new();
    let pool = shardlog_segment::SyncPool::new(1).unwrap();
    let opts = LogOptions {
        sync_pool: Some(pool.clone()),
        ..unrolled_opts()
    };
    let path = |n: u64| PathBuf::from(format!("/bulk-{n}"));
    let open_at = |n: u64, opts: LogOptions| {
        Log::open_with(Arc::new(fs.clone()), path(n), opts, Arc::new(NoObserverForTests))
            .map(|(l, _)| l)
            .unwrap()
    };
    let logs: Vec<Arc<Log>> = (0..4).map(|n| Arc::new(open_at(n, opts.clone()))).collect();
    let data = vec![0x6Bu8; 100_000];
    // The regular thread is held inside log 0's first sync, so the other
    // logs' large groups find it busy.
    fs.hold_next_sync_return("/bulk-0/");
    let acked: Vec<Vec<u64>> = std::thread::scope(|s| {
        let handles: Vec<_> = logs
            .iter()
            .enumerate()
            .map(|(n, log)| {
                if n == 1 {
                    shardlog_testkit::wait_until(20, "log 0's sync never started", || fs.sync_held());
                }
                let (log, data) = (log.clone(), &data);
                s.spawn(move || {
                    let mut acked = Vec::new();
                    // Two puts in flight, so that groups hold two appends.
                    let mut in_flight = std::collections::VecDeque::new();
                    for i in 0..12i64 {
                        let (a, pending) = log
                            .append_deferred(&[RecordIn::new("k", data, 1_000 + i)])
                            .unwrap();
                        in_flight.push_back((a.first_seq, log.durable(pending)));
                        if in_flight.len() == 2 {
                            let (seq, durable) = in_flight.pop_front().unwrap();
                            block_on(durable).unwrap();
                            acked.push(seq);
                        }
                    }
                    for (seq, durable) in in_flight {
                        block_on(durable).unwrap();
                        acked.push(seq);
                    }
                    acked
                })
            })
            .collect();
        // Logs 1 to 3 finish on bulk threads while log 0's sync is held.
        for h in &handles[1..] {
            shardlog_testkit::wait_until(20, "a log waited for the held regular thread", || h.is_finished());
        }
        fs.release_sync();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(
        pool.bulk_threads() >= 1,
        "large groups found the regular thread busy and used bulk threads"
    );
    assert!(pool.bulk_threads() <= shardlog_segment::sync::SYNC_POOL_BULK_THREADS_MAX);
    assert_eq!(pool.threads(), 1);
    // Nothing but the pool's syncs made them durable: no clean close.
    for log in logs {
        std::mem::forget(Arc::try_unwrap(log).unwrap());
    }
    fs.crash(CrashPlan::LoseUnsynced);
    for (n, acked) in acked.iter().enumerate() {
        assert_eq!(acked.len(), 12);
        let log = open_at(n as u64, unrolled_opts());
        let got = read_all(&log).unwrap();
        for seq in acked {
            let row = got.iter().find(|r| r.0 == *seq);
            assert!(
                row.is_some_and(|r| r.2 == data),
                "log {n}: acknowledged record {seq} lost"
            );
        }
    }
}

#[test]
fn async_append_whose_fsync_fails_is_refused_and_never_reappears() {
    let fs = MemFs::new();
    let log = open(&fs, pooled_opts()).unwrap();
    append_n(&log, 0, 10);
    fs.fail_next_syncs(1);
    let data = payload(10);
    let (_, pending) = log.append_deferred(&[RecordIn::new("k", &data, 5_000)]).unwrap();
    let err = block_on(log.durable(pending)).unwrap_err();
    assert!(matches!(err, Error::Poisoned { .. }), "{err}");
    // The writer stays poisoned: later waits fail too, never retry blindly.
    assert!(matches!(
        log.append(&[RecordIn::new("k", &data, 5_000)]),
        Err(Error::Poisoned { .. })
    ));
    drop(log);
    for plan in [CrashPlan::LoseUnsynced, CrashPlan::KeepUnsynced] {
        let crashed = fs.clone();
        crashed.crash(plan);
        let log = open(&crashed, small_opts()).unwrap();
        assert_records(&log, 10);
    }
}

#[test]
fn async_wait_without_a_sync_pool_syncs_inline() {
    let fs = MemFs::new();
    let log = open(&fs, small_opts()).unwrap();
    let (_, pending) = log.append_deferred(&[RecordIn::new("k", b"v", 1_000)]).unwrap();
    block_on(log.durable(pending)).unwrap();
    std::mem::forget(log);
    fs.crash(CrashPlan::LoseUnsynced);
    let log = open(&fs, small_opts()).unwrap();
    assert_eq!(read_all(&log).unwrap().len(), 1);
}

#[test]
fn async_waits_across_segment_rolls_all_resolve() {
    // Records big enough that the 64 KiB segments roll every few appends,
    // with the waits outstanding while later appends roll the segment.
    let fs = MemFs::new();
    let log = open(&fs, pooled_opts()).unwrap();
    let data = vec![7u8; 9_000];
    let waits: Vec<_> = (0..40)
        .map(|_| {
            let (_, pending) = log.append_deferred(&[RecordIn::new("k", &data, 1_000)]).unwrap();
            log.durable(pending)
        })
        .collect();
    assert!(log.segments().len() > 3);
    for w in waits {
        block_on(w).unwrap();
    }
    std::mem::forget(log);
    fs.crash(CrashPlan::LoseUnsynced);
    let log = open(&fs, small_opts()).unwrap();
    assert_eq!(read_all(&log).unwrap().len(), 40);
}

/// Appends `n` records of `bytes` each, one per append, checking the drops
/// each (acknowledged, so durable) append caused: only synced bytes, and
/// only where at least `window` bytes of the log follow the drop's end.
/// The log's bytes after an offset of a segment are the rest of that
/// segment and the frames of every newer one, up to the durable end.
fn append_checking_cache_drops(fs: &MemFs, log: &Log, n: u64, bytes: usize, window: u64) {
    let data = vec![0xA5u8; bytes];
    let mut seen = 0;
    for i in 0..n {
        log.append(&[RecordIn::new("pk", &data, 1_000 + i as i64)])
            .expect("append");
        let segments = log.segments();
        let durable_end = log.active_space().written;
        let data_len = |k: usize| -> u64 {
            if k + 1 == segments.len() {
                durable_end
            } else {
                fs.contents(&segments[k].path).unwrap().len() as u64
            }
        };
        let drops = fs.cache_drops();
        for d in &drops[seen..] {
            assert!(d.durable, "dropped bytes that were not synced: {d:?}");
            let k = segments
                .iter()
                .position(|s| s.path == d.path)
                .unwrap_or_else(|| panic!("dropped pages of a file that is not a segment: {d:?}"));
            let after: u64 = data_len(k) - d.end
                + (k + 1..segments.len())
                    .map(|j| data_len(j) - SEGMENT_HEADER_BYTES as u64)
                    .sum::<u64>();
            assert!(
                after >= window,
                "dropped {d:?} with only {after} bytes of the log after it (window {window})"
            );
        }
        seen = drops.len();
    }
}

/// The ranges dropped from a segment's pages, in order.
fn dropped_ranges(fs: &MemFs, path: &Path) -> Vec<(u64, u64)> {
    fs.cache_drops()
        .iter()
        .filter(|d| d.path == path)
        .map(|d| (d.start, d.end))
        .collect()
}

/// Checks that `ranges` cover `0..end` in order, each page once.
fn assert_contiguous_from_start(ranges: &[(u64, u64)], end: u64, what: &str) {
    let mut at = 0;
    for (start, stop) in ranges {
        assert_eq!(*start, at, "ranges of {what} are not contiguous: {ranges:?}");
        assert!(
            stop % 4096 == 0 || *stop == end,
            "{what}: a range ends inside a page: {ranges:?}"
        );
        at = *stop;
    }
    assert_eq!(at, end, "{what} was not dropped to {end}: {ranges:?}");
}

#[test]
fn cache_window_drops_only_synced_pages_behind_the_window_and_every_sealed_segment_whole() {
    let fs = MemFs::new();
    let window = 1024 * 1024;
    let opts = LogOptions {
        segment_bytes_max: 12 * 1024 * 1024,
        cache_window_bytes: Some(window),
        ..LogOptions::default()
    };
    let log = open(&fs, opts.clone()).unwrap();
    // 40 MiB in 100 KiB records: three rolls, and several release steps in
    // each segment.
    append_checking_cache_drops(&fs, &log, 400, 100 * 1024, window);
    let segments = log.segments();
    assert!(segments.len() >= 4, "expected rolls, got {segments:?}");
    // Every sealed segment is dropped whole, in steps, each page once: the
    // active one holds more than the window.
    assert!(log.active_space().written > window + SEGMENT_HEADER_BYTES as u64);
    for seg in &segments[..segments.len() - 1] {
        let ranges = dropped_ranges(&fs, &seg.path);
        let len = fs.contents(&seg.path).unwrap().len() as u64;
        assert_contiguous_from_start(&ranges, len, &seg.path.display().to_string());
        assert!(ranges.len() >= 2, "expected steps within the segment: {ranges:?}");
    }
    // Dropping is advice: every record reads back, also after a reopen.
    let expected = read_all(&log).unwrap();
    assert_eq!(expected.len(), 400);
    assert!(expected
        .iter()
        .all(|(_, _, d, _)| d.len() == 100 * 1024 && d.iter().all(|&b| b == 0xA5)));
    drop(log);
    let log = open(&fs, opts).unwrap();
    assert_eq!(read_all(&log).unwrap(), expected);
}

#[test]
fn a_cache_window_wider_than_a_segment_keeps_the_tails_of_several_sealed_segments() {
    let fs = MemFs::new();
    // A 10 MiB window over 4 MiB segments: the window reaches back across
    // two sealed segments into a third.
    let window = 10 * 1024 * 1024;
    let opts = LogOptions {
        segment_bytes_max: 4 * 1024 * 1024,
        cache_window_bytes: Some(window),
        ..LogOptions::default()
    };
    let log = open(&fs, opts).unwrap();
    append_checking_cache_drops(&fs, &log, 300, 100 * 1024, window);
    let segments = log.segments();
    assert!(segments.len() >= 7, "expected rolls, got {segments:?}");
    // The newest two sealed segments lie wholly in the window: untouched.
    for seg in &segments[segments.len() - 3..segments.len() - 1] {
        assert_eq!(
            dropped_ranges(&fs, &seg.path),
            Vec::new(),
            "{}",
            seg.path.display()
        );
    }
    // The oldest ones are dropped whole, each page once.
    for seg in &segments[..segments.len() - 5] {
        let len = fs.contents(&seg.path).unwrap().len() as u64;
        assert_contiguous_from_start(
            &dropped_ranges(&fs, &seg.path),
            len,
            &seg.path.display().to_string(),
        );
    }
}

#[test]
fn a_cache_window_as_wide_as_u64_drops_nothing_and_overflows_nothing() {
    let fs = MemFs::new();
    let log = open(
        &fs,
        LogOptions {
            segment_bytes_max: 1024 * 1024,
            cache_window_bytes: Some(u64::MAX),
            ..LogOptions::default()
        },
    )
    .unwrap();
    append_checking_cache_drops(&fs, &log, 40, 100 * 1024, u64::MAX);
    assert!(log.segments().len() >= 3);
    assert_eq!(fs.cache_drops(), Vec::new());
}

#[test]
fn without_a_cache_window_nothing_is_dropped_from_the_cache() {
    let fs = MemFs::new();
    let log = open(
        &fs,
        LogOptions {
            segment_bytes_max: 4 * 1024 * 1024,
            ..LogOptions::default()
        },
    )
    .unwrap();
    append_checking_cache_drops(&fs, &log, 100, 100 * 1024, 0);
    assert!(log.segments().len() >= 2);
    assert_eq!(fs.cache_drops(), Vec::new());
}

#[test]
fn records_read_back_intact_from_the_real_file_system_after_their_pages_were_dropped() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = LogOptions {
        segment_bytes_max: 6 * 1024 * 1024,
        cache_window_bytes: Some(0),
        ..LogOptions::default()
    };
    let log = Log::open(tmp.path(), opts.clone()).unwrap();
    // 16 MiB of 64 KiB records with distinct contents: pages are dropped
    // behind every sync once 4 MiB have gathered, and at every roll. A
    // reader holds a map of the active segment meanwhile (the log's map
    // cache keeps it), touched after each append.
    let records: Vec<Vec<u8>> = (0..256u32)
        .map(|i| {
            (0..64 * 1024u32)
                .map(|j| (i.wrapping_mul(31) ^ j) as u8)
                .collect()
        })
        .collect();
    for (i, r) in records.iter().enumerate() {
        let at = log.append(&[RecordIn::new("pk", r, 1_000)]).unwrap();
        let read = read_all(&log).unwrap();
        assert_eq!(read.len(), i + 1);
        assert_eq!(read[at.first_seq as usize].2, *r);
    }
    assert!(log.segments().len() >= 3);
    // The kernel accepted the advice (the call succeeded) for at least the
    // two sealed segments. That pages left the cache is the kernel's
    // business: dropping is advice, and tmpfs ignores it.
    let advised = log.cache_drop_advised_bytes();
    assert!(advised >= 10 * 1024 * 1024, "only {advised} bytes advised");
    let read: Vec<Vec<u8>> = read_all(&log)
        .unwrap()
        .into_iter()
        .map(|(_, _, d, _)| d)
        .collect();
    assert_eq!(read, records);
    drop(log);
    let log = Log::open(tmp.path(), opts).unwrap();
    let read: Vec<Vec<u8>> = read_all(&log)
        .unwrap()
        .into_iter()
        .map(|(_, _, d, _)| d)
        .collect();
    assert_eq!(read, records);
    assert!(log.verify().is_ok(), "{:?}", log.verify().problems);
}

// ---------------------------------------------------------------------------
// Recycled segment files (LogOptions::recycle_segments_max)
// ---------------------------------------------------------------------------

fn recycling_opts() -> LogOptions {
    LogOptions {
        recycle_segments_max: 2,
        ..small_opts()
    }
}

fn free_names(fs: &MemFs) -> Vec<String> {
    let mut names: Vec<String> = fs
        .durable_names(&dir())
        .into_iter()
        .filter(|n| n.ends_with(".free"))
        .collect();
    names.sort();
    names
}

/// Every segment of `log` passes `verify`.
fn assert_verifies(log: &Log, what: &str) {
    let report = log.verify();
    assert!(report.is_ok(), "{what}: {:?}", report.problems);
}

/// Every visible record, checked against what `append_n` wrote for its
/// sequence number; returns how many there are.
fn assert_intact_from_first(log: &Log, what: &str) -> u64 {
    let got = read_all(log).unwrap_or_else(|e| panic!("{what}: {e}"));
    let first = log.first_seq();
    for (i, (seq, key, data, _)) in got.iter().enumerate() {
        assert_eq!(*seq, first + i as u64, "{what}");
        assert_eq!(key, &format!("pk{seq}"), "{what}");
        assert_eq!(data, &payload(*seq), "{what}: data of record {seq}");
    }
    got.len() as u64
}

/// A log whose retention has kept files for reuse and whose active segment
/// is one of them, with `records` acknowledged records in all.
fn log_in_a_recycled_segment(fs: &MemFs, opts: LogOptions) -> (Log, u64) {
    let log = open(fs, opts).unwrap();
    append_n(&log, 0, 6000);
    let segs = log.segments();
    assert!(segs.len() > 4, "{} segments", segs.len());
    let removed = log.remove_segments_before(segs[3].base_seq).unwrap();
    assert_eq!(removed, 3);
    // Two kept (the pool's size), the third unlinked.
    assert_eq!(log.recyclable_files(), 2);
    assert_eq!(free_names(fs).len(), 2);
    log.roll().unwrap();
    assert_eq!(log.recyclable_files(), 1, "the roll took a kept file");
    // The new active segment is that file: bytes of the older segment
    // follow its header.
    let active = log.segments().last().unwrap().path.clone();
    let bytes = fs.contents(&active).unwrap();
    assert!(bytes.len() >= 32 * 1024, "a recycled file is most of a segment");
    assert!(bytes[SEGMENT_HEADER_BYTES + 40..].iter().any(|&b| b != 0));
    append_n(&log, 6000, 20);
    (log, 6020)
}

#[test]
fn retention_keeps_segment_files_for_reuse_and_rolls_write_into_them() {
    let fs = MemFs::new();
    let (log, next) = log_in_a_recycled_segment(&fs, recycling_opts());
    assert_eq!(log.next_seq(), next);
    let n = assert_intact_from_first(&log, "in the recycled segment");
    assert_eq!(log.first_seq() + n, next);
    assert_verifies(&log, "recycling log");
    // More rolls use the other kept file, then new files again.
    append_n(&log, next, 2000);
    assert_eq!(log.recyclable_files(), 0);
    assert!(free_names(&fs).is_empty());
    assert_eq!(
        assert_intact_from_first(&log, "after more rolls") + log.first_seq(),
        next + 2000
    );
    assert_verifies(&log, "recycling log");
}

/// Retention renames a kept file to `.free` and syncs the directory, and
/// only then may a roll rewrite the file's header. When that sync fails, a
/// crash may bring the file back under its segment's name; had a roll
/// rewritten its header meanwhile (and then failed to rename it into
/// place), that segment would read as damaged: another segment's header
/// under its name.
#[test]
fn a_kept_file_whose_rename_is_not_durable_is_never_rewritten() {
    let fs = MemFs::new();
    let log = open(&fs, recycling_opts()).unwrap();
    append_n(&log, 0, 6000);
    let segs = log.segments();
    fs.fail_at(FsOp::SyncDir, "", 1);
    assert!(log.remove_segments_before(segs[3].base_seq).is_err());
    assert_eq!(
        log.recyclable_files(),
        0,
        "a kept file whose rename may not be durable is not offered for reuse"
    );
    // A roll that took the file would rewrite its header, then fail to
    // rename it, to drop it and to make a new file instead (nothing syncs
    // the directory again before the crash).
    fs.fail_at(FsOp::Rename, ".free", 1);
    fs.fail_at(FsOp::Remove, ".free", 1);
    fs.fail_at(FsOp::Create, ".seg", 1);
    assert!(log.roll().is_err());
    std::mem::forget(log);
    fs.crash(CrashPlan::LoseUnsynced);
    let log = open(&fs, recycling_opts()).unwrap();
    assert_verifies(&log, "after the crash");
    assert_eq!(
        assert_intact_from_first(&log, "after the crash") + log.first_seq(),
        6000
    );
}

#[test]
fn a_recycled_segment_reopened_after_a_stop_cuts_the_older_frames_and_keeps_its_own() {
    for clean in [true, false] {
        let fs = MemFs::new();
        let (log, next) = log_in_a_recycled_segment(&fs, recycling_opts());
        let first = log.first_seq();
        let active = log.segments().last().unwrap().path.clone();
        if clean {
            log.mark_clean(true).unwrap();
            drop(log);
        } else {
            // A process crash: the page cache keeps every write.
            std::mem::forget(log);
            fs.crash(CrashPlan::KeepUnsynced);
        }
        let (log, report) = Log::open_with(
            Arc::new(fs.clone()),
            dir(),
            recycling_opts(),
            Arc::new(NoObserverForTests),
        )
        .unwrap();
        assert_eq!(report.truncated_bytes, 0, "clean {clean}: nothing torn");
        assert!(
            report.quarantined.is_none(),
            "clean {clean}: {:?}",
            report.quarantined
        );
        assert!(report.recycled_tail_bytes > 0, "clean {clean}");
        assert_eq!(log.first_seq(), first);
        assert_eq!(log.next_seq(), next, "clean {clean}");
        assert_eq!(assert_intact_from_first(&log, "reopened") + first, next);
        // The older frames are gone from the file, and the kept file not
        // yet used is still kept.
        assert_eq!(
            fs.contents(&active).unwrap().len() as u64,
            log.active_space().written
        );
        assert_eq!(log.recyclable_files(), 1);
        append_n(&log, next, 10);
        assert_verifies(&log, "recycling log");
    }
}

#[test]
fn crashes_while_writing_into_a_recycled_segment_keep_every_acknowledged_record() {
    for seed in 0..120u64 {
        let fs = MemFs::new();
        let (log, acked) = log_in_a_recycled_segment(&fs, recycling_opts());
        let first = log.first_seq();
        // Writes that are never synced: several appends, so that the end
        // markers of some may land and the frames of others not.
        for k in 0..(1 + seed % 5) {
            let from = acked + k * 3;
            let keys: Vec<String> = (from..from + 3).map(|i| format!("pk{i}")).collect();
            let data: Vec<Vec<u8>> = (from..from + 3).map(payload).collect();
            let recs: Vec<RecordIn<'_>> = keys
                .iter()
                .zip(&data)
                .map(|(k, d)| RecordIn::new(k, d, 50_000))
                .collect();
            let _pending = log.append_deferred(&recs).unwrap();
        }
        std::mem::forget(log);
        let plan = match seed % 3 {
            0 => CrashPlan::Random { seed },
            1 => CrashPlan::TornPrefix { bytes: seed * 37 },
            _ => CrashPlan::LoseUnsynced,
        };
        fs.crash(plan);
        let open_check = if seed % 2 == 0 {
            OpenCheck::Full
        } else {
            OpenCheck::Deferred
        };
        let opts = LogOptions {
            open_check,
            ..recycling_opts()
        };
        let (log, report) = Log::open_with(Arc::new(fs.clone()), dir(), opts, Arc::new(NoObserverForTests))
            .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        assert!(
            report.quarantined.is_none(),
            "seed {seed}: {:?}",
            report.quarantined
        );
        assert_eq!(log.check_deferred(&|| false).ok(), Some(true), "seed {seed}");
        assert_eq!(log.first_seq(), first);
        let n = assert_intact_from_first(&log, &format!("seed {seed}"));
        assert!(first + n >= acked, "seed {seed}: acknowledged records lost");
        // The log goes on after whatever survived, and what it writes next
        // reads back after another crash that keeps only synced data.
        let next = first + n;
        append_n(&log, next, 5);
        std::mem::forget(log);
        fs.crash(CrashPlan::LoseUnsynced);
        let log = open(&fs, recycling_opts()).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        assert_eq!(
            assert_intact_from_first(&log, &format!("seed {seed}, second open")) + first,
            next + 5
        );
        assert_verifies(&log, &format!("seed {seed}"));
    }
}

#[test]
fn damage_to_synced_frames_of_a_recycled_segment_is_quarantined_not_cut() {
    let fs = MemFs::new();
    let (log, next) = log_in_a_recycled_segment(&fs, recycling_opts());
    let active = log.segments().last().unwrap().path.clone();
    drop(log);
    // A bit of the first frame of the recycled segment goes bad: later
    // synced frames prove it had been synced.
    fs.flip_bit(&active, SEGMENT_HEADER_BYTES as u64 + 50, 3).unwrap();
    let (log, report) = Log::open_with(
        Arc::new(fs.clone()),
        dir(),
        recycling_opts(),
        Arc::new(NoObserverForTests),
    )
    .unwrap();
    let (path, offset, _) = report.quarantined.clone().expect("quarantined");
    assert_eq!(path, active);
    assert_eq!(offset, SEGMENT_HEADER_BYTES as u64);
    assert_eq!(report.recycled_tail_bytes, 0, "a quarantined file is not cut");
    assert!(log.append(&[RecordIn::new("k", b"x", 1)]).is_err());
    let _ = next;
}

#[test]
fn a_kept_file_is_not_reused_while_a_reader_holds_a_map_of_it() {
    let fs = MemFs::new();
    let opts = LogOptions {
        recycle_segments_max: 1,
        ..small_opts()
    };
    let log = open(&fs, opts.clone()).unwrap();
    append_n(&log, 0, 3000);
    let segs = log.segments();
    let pos = Position {
        segment_base: segs[0].base_seq,
        offset: SEGMENT_HEADER_BYTES as u64,
    };
    let held = log.read_at(pos, segs[0].base_seq, ALL).unwrap();
    assert!(!held.is_empty());
    assert_eq!(log.remove_segments_before(segs[1].base_seq).unwrap(), 1);
    assert_eq!(log.recyclable_files(), 1);
    log.roll().unwrap();
    assert_eq!(log.recyclable_files(), 1, "held by a reader: not reused");
    // The new segment is a new file: nothing follows its header.
    let active = log.segments().last().unwrap().path.clone();
    assert!(fs.contents(&active).unwrap()[SEGMENT_HEADER_BYTES..]
        .iter()
        .all(|&b| b == 0));
    for r in held.iter() {
        assert_eq!(r.data, &payload(r.seq)[..]);
    }
    drop(held);
    append_n(&log, 3000, 1);
    log.roll().unwrap();
    assert_eq!(log.recyclable_files(), 0, "free of readers: reused");
    append_n(&log, 3001, 10);
    assert_eq!(
        assert_intact_from_first(&log, "after reuse") + log.first_seq(),
        3011
    );
    // A log that no longer recycles removes the files it finds kept.
    drop(log);
    assert_eq!(free_names(&fs).len(), 0);
    let log = open(&fs, opts).unwrap();
    append_n(&log, 3011, 500);
    assert!(log.remove_segments_before(log.segments()[2].base_seq).unwrap() >= 1);
    assert_eq!(free_names(&fs).len(), 1);
    drop(log);
    let log = open(&fs, small_opts()).unwrap();
    assert!(free_names(&fs).is_empty());
    assert_eq!(log.recyclable_files(), 0);
}

#[test]
fn a_failure_at_any_step_of_reusing_a_file_then_a_crash_keeps_every_acknowledged_record() {
    for budget in 0..16u64 {
        for seed in [budget, budget + 100] {
            let fs = MemFs::new();
            let log = open(&fs, recycling_opts()).unwrap();
            append_n(&log, 0, 3000);
            let segs = log.segments();
            log.remove_segments_before(segs[3].base_seq).unwrap();
            let first = log.first_seq();
            fs.fail_after_ops(budget);
            let rolled = log.roll();
            std::mem::forget(log);
            fs.crash(CrashPlan::Random { seed });
            let log = open(&fs, recycling_opts())
                .unwrap_or_else(|e| panic!("budget {budget}, seed {seed} (roll: {rolled:?}): {e}"));
            assert_eq!(log.first_seq(), first);
            assert_eq!(
                assert_intact_from_first(&log, &format!("budget {budget}, seed {seed}")) + first,
                3000,
                "budget {budget}, seed {seed}"
            );
            append_n(&log, 3000, 1500);
            assert_eq!(assert_intact_from_first(&log, "after") + first, 4500);
            assert_verifies(&log, &format!("budget {budget}"));
        }
    }
}

#[test]
fn records_in_a_recycled_real_file_read_back_and_survive_a_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = LogOptions {
        recycle_segments_max: 1,
        ..small_opts()
    };
    let log = Log::open(tmp.path(), opts.clone()).unwrap();
    append_n(&log, 0, 3000);
    let segs = log.segments();
    assert_eq!(log.remove_segments_before(segs[2].base_seq).unwrap(), 2);
    assert_eq!(log.recyclable_files(), 1);
    log.roll().unwrap();
    assert_eq!(log.recyclable_files(), 0);
    append_n(&log, 3000, 300);
    assert_eq!(
        assert_intact_from_first(&log, "real file") + log.first_seq(),
        3300
    );
    assert_verifies(&log, "recycling log");
    drop(log);
    let log = Log::open(tmp.path(), opts).unwrap();
    assert_eq!(assert_intact_from_first(&log, "reopened") + log.first_seq(), 3300);
    append_n(&log, 3300, 10);
    assert_verifies(&log, "recycling log");
}

/// Offset of the `k`-th frame of the active segment of `log`.
fn active_frame_offset(fs: &MemFs, log: &Log, k: usize) -> u64 {
    let path = log.segments().last().unwrap().path.clone();
    let bytes = fs.contents(&path).unwrap();
    let mut pos = SEGMENT_HEADER_BYTES;
    for _ in 0..k {
        let len = u32::from_le_bytes(bytes[pos + 4..pos + 8].try_into().unwrap()) as usize;
        pos += len;
    }
    pos as u64
}

#[test]
fn a_synced_frame_of_a_recycled_segment_that_reads_as_zeros_again_is_quarantined_not_cut() {
    // A device that loses a synced page of a recycled segment shows the
    // older end marker there (zeros), and the older segment's frames
    // after it. The later synced frames prove the loss.
    for (k, crash) in [(5usize, false), (12, true), (19, true)] {
        let fs = MemFs::new();
        let (log, _) = log_in_a_recycled_segment(&fs, recycling_opts());
        let active = log.segments().last().unwrap().path.clone();
        let at = active_frame_offset(&fs, &log, k);
        let len_before = fs.contents(&active).unwrap().len();
        if crash {
            std::mem::forget(log);
            fs.crash(CrashPlan::KeepUnsynced);
        } else {
            drop(log);
        }
        fs.corrupt(&active, at, &[0u8; 40]).unwrap();
        let (log, report) = Log::open_with(
            Arc::new(fs.clone()),
            dir(),
            recycling_opts(),
            Arc::new(NoObserverForTests),
        )
        .unwrap();
        if k == 19 {
            // The last frame: nothing later proves it was synced, so it is
            // a torn tail like any other (it is cut, with the older frames).
            assert!(report.quarantined.is_none(), "{:?}", report.quarantined);
            assert!(report.recycled_tail_bytes > 0);
            assert_eq!(log.next_seq(), 6019);
            continue;
        }
        let (path, offset, reason) = report.quarantined.clone().expect("quarantined");
        assert_eq!(path, active);
        assert_eq!(offset, at, "{reason}");
        assert_eq!(report.recycled_tail_bytes, 0, "nothing is cut");
        assert_eq!(report.truncated_bytes, 0, "nothing is cut");
        assert_eq!(fs.contents(&active).unwrap().len(), len_before);
        assert!(log.append(&[RecordIn::new("k", b"x", 1)]).is_err());
    }
}

#[test]
fn a_torn_tail_in_a_recycled_segment_counts_the_older_frames_apart() {
    let fs = MemFs::new();
    let (log, acked) = log_in_a_recycled_segment(&fs, recycling_opts());
    let active = log.segments().last().unwrap().path.clone();
    let len = fs.contents(&active).unwrap().len() as u64;
    // Bytes unlike the older frames' (whose payloads are runs of `x`), so
    // that no torn frame is completed by chance by the bytes under it.
    let data = vec![0xEEu8; 200];
    let recs: Vec<RecordIn<'_>> = (0..3).map(|_| RecordIn::new("torn", &data, 60_000)).collect();
    let _pending = log.append_deferred(&recs).unwrap();
    let end = log.active_space().written;
    std::mem::forget(log);
    // Half of the unsynced frames land.
    fs.crash(CrashPlan::TornPrefix { bytes: 60 });
    let (log, report) = Log::open_with(
        Arc::new(fs.clone()),
        dir(),
        recycling_opts(),
        Arc::new(NoObserverForTests),
    )
    .unwrap();
    assert!(report.quarantined.is_none());
    let (_, at) = report.truncated_at.clone().expect("a torn tail");
    assert_eq!(at, log.active_space().written);
    assert_eq!(log.next_seq(), acked);
    // The torn bytes are at most the frames written; the rest of the file
    // was the older segment's.
    assert!(
        report.truncated_bytes > 0 && report.truncated_bytes <= end + 40 + 200 - at,
        "{report:?}"
    );
    assert_eq!(report.truncated_bytes + report.recycled_tail_bytes, len - at);
}

#[test]
fn readers_holding_mapped_records_never_see_them_change_while_retention_recycles_files() {
    // Real files and real maps: a kept file reused while a reader still has
    // it mapped would show the reader new bytes where its records were.
    let tmp = tempfile::tempdir().unwrap();
    let opts = LogOptions {
        recycle_segments_max: 2,
        ..small_opts()
    };
    let log = Arc::new(Log::open(tmp.path(), opts).unwrap());
    append_n(&log, 0, 500);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let checked = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let readers: Vec<_> = (0..2)
        .map(|r| {
            let (log, stop, checked) = (log.clone(), stop.clone(), checked.clone());
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let first = log.first_seq();
                    let Ok(start) = log.segment_start(first) else {
                        continue;
                    };
                    let batch = match log.read_at(start, first, ALL) {
                        Ok(b) => b,
                        // Retention got there first.
                        Err(Error::SequenceOutOfRange { .. }) => continue,
                        Err(e) => panic!("reader {r}: {e}"),
                    };
                    // Hold the records while the writer rolls and retention
                    // keeps and reuses files, then look again.
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    for rec in batch.iter() {
                        assert_eq!(
                            rec.data,
                            &payload(rec.seq)[..],
                            "reader {r}: record {} changed",
                            rec.seq
                        );
                        assert_eq!(rec.partition_key, format!("pk{}", rec.seq));
                    }
                    checked.fetch_add(batch.len() as u64, std::sync::atomic::Ordering::Relaxed);
                }
            })
        })
        .collect();
    let mut next = 500;
    let started = std::time::Instant::now();
    while started.elapsed() < std::time::Duration::from_millis(1500) {
        // Batches of 100: a roll every few appends.
        let keys: Vec<String> = (next..next + 100).map(|i| format!("pk{i}")).collect();
        let data: Vec<Vec<u8>> = (next..next + 100).map(payload).collect();
        let recs: Vec<RecordIn<'_>> = keys
            .iter()
            .zip(&data)
            .map(|(k, d)| RecordIn::new(k, d, 1_000))
            .collect();
        log.append(&recs).unwrap();
        next += 100;
        let segs = log.segments();
        if segs.len() > 3 {
            log.remove_segments_before(segs[segs.len() - 3].base_seq).unwrap();
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for r in readers {
        r.join().unwrap();
    }
    assert!(checked.load(std::sync::atomic::Ordering::Relaxed) > 1000);
    assert_verifies(&log, "recycling log");
    assert_eq!(
        assert_intact_from_first(&log, "after the race") + log.first_seq(),
        next
    );
}

#[test]
fn a_full_disk_takes_the_space_of_kept_files_before_refusing_a_write() {
    let fs = MemFs::new();
    let log = open(&fs, recycling_opts()).unwrap();
    append_n(&log, 0, 6000);
    let segs = log.segments();
    log.remove_segments_before(segs[3].base_seq).unwrap();
    assert_eq!(log.recyclable_files(), 2);
    // The active segment becomes a kept file; the other stays kept. No
    // reader maps it (a real file system gives a mapped file's space back
    // only when the map goes).
    log.roll().unwrap();
    assert_eq!(log.recyclable_files(), 1);
    let segments = log.segments().len();
    fs.set_capacity(Some(fs.used_bytes()));
    // The kept file is a sealed segment's length, a little under the roll
    // size: near its end the writer needs new space (for the frames and the
    // end marker) before the segment rolls. The disk has none, so the
    // writer gives back the other kept file and goes on.
    let mut next = 6000;
    while log.recyclable_files() > 0 {
        assert!(next < 8000, "the kept file was never given back");
        log.append(&[RecordIn::new(
            &format!("pk{next}"),
            &payload(next),
            1_000 + next as i64,
        )])
        .unwrap_or_else(|e| panic!("record {next}: {e}"));
        next += 1;
    }
    // Given back while the segment was being written, not reused by a roll.
    assert_eq!(log.segments().len(), segments);
    assert_eq!(log.recyclable_files(), 0);
    assert!(free_names(&fs).is_empty());
    assert_eq!(
        assert_intact_from_first(&log, "on a full disk") + log.first_seq(),
        next
    );
    // With nothing kept, a full disk refuses the write, retriably.
    fs.set_capacity(Some(fs.used_bytes()));
    let err = (0..2000)
        .find_map(|i| log.append(&[RecordIn::new("k", &payload(i), 1)]).err())
        .expect("the disk fills");
    assert!(err.is_retriable(), "{err}");
}

#[test]
fn unsynced_frames_behind_a_lost_page_of_a_recycled_segment_are_a_torn_tail() {
    // Power loss: the page where an unsynced write began reads as the end
    // marker synced before it (zeros), while later pages of that write
    // reached the disk. Those frames were never acknowledged; as in a new
    // file they are a torn tail: cut and reported, refused under Strict.
    for strict in [false, true] {
        let fs = MemFs::new();
        let (log, acked) = log_in_a_recycled_segment(&fs, recycling_opts());
        let active = log.segments().last().unwrap().path.clone();
        let at = log.active_space().written;
        let data = vec![0xEEu8; 300];
        let recs: Vec<RecordIn<'_>> = (0..4).map(|_| RecordIn::new("unsynced", &data, 70_000)).collect();
        let _pending = log.append_deferred(&recs).unwrap();
        std::mem::forget(log);
        fs.crash(CrashPlan::KeepUnsynced);
        fs.corrupt(&active, at, &[0u8; 40]).unwrap();
        let opts = LogOptions {
            recovery: if strict {
                RecoveryPolicy::Strict
            } else {
                RecoveryPolicy::TolerateTornTail
            },
            ..recycling_opts()
        };
        let opened = Log::open_with(Arc::new(fs.clone()), dir(), opts, Arc::new(NoObserverForTests));
        if strict {
            let err = opened.unwrap_err();
            assert!(
                matches!(err, Error::TornTail { offset, .. } if offset == at),
                "{err}"
            );
            continue;
        }
        let (log, report) = opened.unwrap();
        assert!(report.quarantined.is_none(), "{:?}", report.quarantined);
        assert_eq!(report.truncated_at, Some((active.clone(), at)));
        assert!(report.truncated_bytes >= 3 * 340, "{report:?}");
        assert_eq!(log.next_seq(), acked);
        assert_eq!(fs.contents(&active).unwrap().len() as u64, at);
    }
}

/// Options of a log that shares flushes through `coord`: small segments
/// (the runs below cross rolls) that zero-fill ahead of one-record groups.
fn sharing_opts(coord: &Arc<shardlog_segment::FlushCoordinator>) -> LogOptions {
    LogOptions {
        segment_bytes_max: 64 * 1024,
        preallocate_bytes: 16 * 1024,
        flush_coordinator: Some(coord.clone()),
        ..LogOptions::default()
    }
}

fn open_at(fs: &MemFs, d: &str, opts: LogOptions) -> Log {
    Log::open_with(
        Arc::new(fs.clone()),
        PathBuf::from(d),
        opts,
        Arc::new(NoObserverForTests),
    )
    .unwrap()
    .0
}

#[test]
fn logs_sharing_flushes_keep_every_acknowledged_record_through_any_crash() {
    sharing_flushes_keeps_acknowledged_records(0);
}

#[test]
fn logs_sharing_flushes_in_recycled_files_keep_every_acknowledged_record_through_any_crash() {
    sharing_flushes_keeps_acknowledged_records(2);
}

/// Four logs sharing flushes, two appenders each, then a crash of each
/// kind: every acknowledged record is there after. With `recycle`,
/// retention runs meanwhile and the logs reuse its files.
fn sharing_flushes_keeps_acknowledged_records(recycle: usize) {
    const LOGS: [&str; 4] = ["/a", "/b", "/c", "/d"];
    let plans = [
        CrashPlan::LoseUnsynced,
        CrashPlan::Random { seed: 1 },
        CrashPlan::Random { seed: 2 },
        CrashPlan::TornPrefix { bytes: 700 },
    ];
    let mut written_back = 0;
    let opts = |coord: &Arc<shardlog_segment::FlushCoordinator>| LogOptions {
        recycle_segments_max: recycle,
        ..sharing_opts(coord)
    };
    for plan in plans {
        let fs = MemFs::new();
        // Syncs take time, as on a device, so groups of one log meet the
        // flushes of others in flight.
        fs.set_sync_latency(Some(std::time::Duration::from_micros(300)));
        let coord = shardlog_segment::FlushCoordinator::new();
        let logs: Vec<Log> = LOGS.iter().map(|d| open_at(&fs, d, opts(&coord))).collect();
        // (log, seq, data) of every acknowledged append.
        let acked = std::sync::Mutex::new(Vec::new());
        let kept = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            for (l, log) in logs.iter().enumerate() {
                for t in 0..2 {
                    let (acked, kept) = (&acked, &kept);
                    s.spawn(move || {
                        // Enough for retention to remove and reuse segments.
                        let n = if recycle > 0 { 1200 } else { 400 };
                        for i in 0..n {
                            let data = format!("log{l}-thread{t}-{i}-{}", "y".repeat(i % 50));
                            let a = log.append(&[RecordIn::new("k", data.as_bytes(), 1)]).unwrap();
                            acked.lock().unwrap().push((l, a.first_seq, data.into_bytes()));
                            if recycle > 0 && t == 0 && i % 50 == 49 {
                                log.remove_segments_before(a.first_seq.saturating_sub(300))
                                    .unwrap();
                                if log.recyclable_files() > 0 {
                                    kept.store(true, std::sync::atomic::Ordering::Relaxed);
                                }
                            }
                        }
                    });
                }
            }
        });
        if recycle > 0 {
            // Kept files are reused at the next roll, which every log reaches.
            assert!(kept.into_inner(), "{plan:?}: retention kept no file for reuse");
        }
        written_back += fs.write_back_count();
        assert!(
            logs.iter().all(|l| l.segments().len() > 1),
            "the runs must cross rolls"
        );
        for log in logs {
            std::mem::forget(log);
        }
        fs.crash(plan);
        for (l, d) in LOGS.iter().enumerate() {
            let log = open_at(&fs, d, opts(&coord));
            if recycle > 0 {
                assert!(log.first_seq() > 0, "retention must have removed segments");
            }
            assert_acknowledged_kept(&log, l, &acked.lock().unwrap(), &format!("{plan:?}: log {d}"));
        }
    }
    assert!(
        written_back > 100,
        "groups must have shared flushes ({written_back} write-backs)"
    );
}

/// After a crash and a reopen: every acknowledged record `(log, seq, data)`
/// of log number `l` that retention has not removed is in `log`, and the
/// log verifies. `what` names the case in failures.
fn assert_acknowledged_kept(log: &Log, l: usize, acked: &[(usize, u64, Vec<u8>)], what: &str) {
    let rows = read_all(log).unwrap();
    let first = log.first_seq();
    for (_, seq, data) in acked.iter().filter(|(x, seq, _)| *x == l && *seq >= first) {
        let row = rows.iter().find(|r| r.0 == *seq);
        assert_eq!(
            row.map(|r| &r.2),
            Some(data),
            "{what} lost acknowledged record {seq}"
        );
    }
    assert!(log.verify().is_ok(), "{what}: {:?}", log.verify().problems);
}

type Handle = Arc<dyn shardlog_segment::FileHandle>;

/// Files `/d/<name>` of a new memory file system, created and listed durably.
fn mem_files(names: &[&str]) -> (MemFs, Vec<Handle>) {
    let fs = MemFs::new();
    let d = Path::new("/d");
    fs.create_dir_all(d).unwrap();
    let files = names.iter().map(|n| fs.create_new(&d.join(n)).unwrap()).collect();
    fs.sync_dir(d).unwrap();
    (fs, files)
}

/// Syncs the groups of `first` (`/d/a`) and, 50 ms into the 200 ms sync
/// that starts, of `second` (`/d/b`) through `coord`; returns both results.
fn first_then_second_meeting_its_flush(
    fs: &MemFs,
    coord: &shardlog_segment::FlushCoordinator,
    first: &Handle,
    second: &Handle,
) -> (Result<bool, String>, Result<bool, String>) {
    fs.set_sync_latency(Some(std::time::Duration::from_millis(200)));
    let results = std::thread::scope(|s| {
        let a = s.spawn(|| coord.sync_group(&**first, 0, Path::new("/d/a")));
        std::thread::sleep(std::time::Duration::from_millis(50));
        let b = coord.sync_group(&**second, 0, Path::new("/d/b"));
        (a.join().unwrap(), b)
    });
    fs.set_sync_latency(None);
    results
}

#[test]
fn a_group_that_meets_a_flush_in_flight_is_written_back_and_made_durable_by_the_next() {
    let (fs, files) = mem_files(&["a", "b"]);
    let (a, b) = (&files[0], &files[1]);
    for f in [a, b] {
        f.write_all_at(&[1; 100], 0).unwrap();
        f.sync_data().unwrap();
    }
    let coord = shardlog_segment::FlushCoordinator::new();
    a.write_all_at(&[2; 10], 0).unwrap();
    b.write_all_at(&[3; 10], 0).unwrap();
    let (ra, rb) = first_then_second_meeting_its_flush(&fs, &coord, a, b);
    assert_eq!(ra, Ok(false), "a lone group syncs its own file");
    assert_eq!(rb, Ok(true), "a group meeting a flush is written back");
    assert_eq!(fs.write_back_count(), 1);
    assert_eq!(
        coord.flush_count(),
        2,
        "the second group waited for a flush of its own"
    );
    fs.crash(CrashPlan::LoseUnsynced);
    assert_eq!(&fs.contents(Path::new("/d/b")).unwrap()[..10], &[3; 10]);
}

#[test]
fn a_failed_shared_flush_fails_the_groups_that_waited_on_it_and_no_later_one() {
    let (fs, files) = mem_files(&["a", "b", "c"]);
    let coord = shardlog_segment::FlushCoordinator::new();
    fs.fail_next_syncs(1);
    let (ra, rb) = first_then_second_meeting_its_flush(&fs, &coord, &files[0], &files[1]);
    assert!(ra.is_err() && rb.is_err(), "{ra:?} {rb:?}");
    let err = rb.unwrap_err();
    assert!(err.contains("fdatasync of /d/a"), "{err}");
    // A group written back after the failure needs, and gets, a flush of
    // its own that succeeds.
    files[2].write_all_at(&[4; 10], 0).unwrap();
    assert_eq!(coord.sync_group(&*files[2], 0, Path::new("/d/c")), Ok(false));
    fs.crash(CrashPlan::LoseUnsynced);
    assert_eq!(fs.contents(Path::new("/d/c")).unwrap(), vec![4; 10]);
}

#[test]
fn a_group_written_back_for_a_shared_flush_fails_when_another_files_sync_fails_meanwhile() {
    // The failed fdatasync of /d/c (another log's) fails its device cache
    // flush, which drops what /d/b had written back while it waited for
    // the next shared flush; that flush then succeeds. Linux tells only
    // /d/c's caller. The log poisoned by it tells the coordinator, and
    // /d/b's group must fail rather than be acknowledged and lost.
    let (fs, files) = mem_files(&["a", "b", "c"]);
    for f in &files {
        f.write_all_at(&[1; 100], 0).unwrap();
        f.sync_data().unwrap();
    }
    let coord = shardlog_segment::FlushCoordinator::new();
    files[0].write_all_at(&[2; 10], 0).unwrap();
    files[1].write_all_at(&[3; 10], 0).unwrap();
    files[2].write_all_at(&[4; 10], 0).unwrap();
    fs.fail_at(FsOp::SyncData, "/d/c", 1);
    fs.set_sync_latency(Some(std::time::Duration::from_millis(300)));
    let (ra, rb) = std::thread::scope(|s| {
        // /d/a's lone group syncs its file (300 ms)...
        let a = s.spawn(|| coord.sync_group(&*files[0], 0, Path::new("/d/a")));
        std::thread::sleep(std::time::Duration::from_millis(50));
        // ...so /d/b's group is written back and waits for the next flush...
        let b = s.spawn(|| coord.sync_group(&*files[1], 0, Path::new("/d/b")));
        std::thread::sleep(std::time::Duration::from_millis(50));
        // ...while /d/c's own fdatasync fails (at about 400 ms, before the
        // flush /d/b waits for ends at about 600 ms).
        let failed = files[2].sync_data();
        assert!(failed.is_err());
        coord.note_failed_sync("fdatasync of /d/c failed: injected");
        (a.join().unwrap(), b.join().unwrap())
    });
    fs.set_sync_latency(None);
    assert_eq!(
        ra,
        Ok(false),
        "a lone group synced its own file before the failure"
    );
    let err =
        rb.expect_err("a group whose written-back pages a failed flush may have dropped was acknowledged");
    assert!(err.contains("/d/c") && err.contains("/d/b"), "{err}");
    // What the test models: /d/b's written-back bytes are gone.
    fs.crash(CrashPlan::LoseUnsynced);
    assert_eq!(&fs.contents(Path::new("/d/b")).unwrap()[..10], &[1; 10]);
    assert_eq!(&fs.contents(Path::new("/d/a")).unwrap()[..10], &[2; 10]);
}

#[test]
fn a_log_poisoned_by_a_failed_sync_tells_the_flush_coordinator_it_shares() {
    let fs = MemFs::new();
    let coord = shardlog_segment::FlushCoordinator::new();
    let log = open(
        &fs,
        LogOptions {
            flush_coordinator: Some(coord.clone()),
            ..small_opts()
        },
    )
    .unwrap();
    append_n(&log, 0, 3);
    assert_eq!(coord.noted_failures(), 0);
    fs.fail_next_syncs(1);
    assert!(log.append(&[RecordIn::new("k", b"lost", 1_000)]).is_err());
    assert_eq!(
        coord.noted_failures(),
        1,
        "the other logs' waiting groups must learn of it"
    );
}

#[test]
fn a_failed_write_back_fails_only_its_own_group() {
    let (fs, files) = mem_files(&["a", "b"]);
    let coord = shardlog_segment::FlushCoordinator::new();
    fs.fail_at(FsOp::WriteBack, "/d/b", 1);
    let (ra, rb) = first_then_second_meeting_its_flush(&fs, &coord, &files[0], &files[1]);
    assert_eq!(ra, Ok(false));
    assert!(rb.unwrap_err().contains("write-back"));
    assert_eq!(
        coord.sync_group(&*files[0], 0, Path::new("/d/a")),
        Ok(false),
        "the coordinator goes on"
    );
}

// ---------------------------------------------------------------------------
// The engine's journal
// ---------------------------------------------------------------------------

/// A journal under `/e` with the smallest files, so that checkpoints come
/// often.
fn small_journal(fs: &MemFs) -> Arc<shardlog_segment::Journal> {
    let (journal, redo) = shardlog_segment::Journal::open(
        Arc::new(fs.clone()),
        Path::new("/e"),
        Some(shardlog_segment::format::JOURNAL_FILE_BYTES_MIN),
    )
    .unwrap();
    assert_eq!(redo, shardlog_segment::RedoReport::default());
    journal.unwrap()
}

fn journaled_opts(journal: &Arc<shardlog_segment::Journal>, recycle: usize) -> LogOptions {
    LogOptions {
        segment_bytes_max: 128 * 1024,
        preallocate_bytes: 16 * 1024,
        journal: Some(journal.clone()),
        sync_pool: Some(shardlog_segment::SyncPool::new(2).unwrap()),
        recycle_segments_max: recycle,
        ..LogOptions::default()
    }
}

#[test]
fn journaled_appends_keep_every_acknowledged_record_through_any_crash() {
    journaled_appends_keep_acknowledged_records(0);
}

#[test]
fn journaled_appends_in_recycled_files_keep_every_acknowledged_record_through_any_crash() {
    journaled_appends_keep_acknowledged_records(2);
}

/// Four logs journal their small appends (one blocking appender and one
/// async appender each, the async one with now and then an append too large
/// for the journal, which syncs its segment), then a crash of each kind; the
/// redo at the next open brings back every acknowledged record. With
/// `recycle`, retention removes and reuses segments meanwhile, so that some
/// entries name segments that are gone by the redo.
fn journaled_appends_keep_acknowledged_records(recycle: usize) {
    const LOGS: [&str; 4] = ["/e/s/a", "/e/s/b", "/e/s/c", "/e/s/d"];
    let plans = [
        CrashPlan::LoseUnsynced,
        CrashPlan::Random { seed: 3 },
        CrashPlan::Random { seed: 4 },
        CrashPlan::TornPrefix { bytes: 900 },
    ];
    for plan in plans {
        let fs = MemFs::new();
        fs.set_sync_latency(Some(std::time::Duration::from_micros(200)));
        let journal = small_journal(&fs);
        let logs: Vec<Log> = LOGS
            .iter()
            .map(|d| open_at(&fs, d, journaled_opts(&journal, recycle)))
            .collect();
        let acked = std::sync::Mutex::new(Vec::new());
        std::thread::scope(|s| {
            for (l, log) in logs.iter().enumerate() {
                let acked = &acked;
                s.spawn(move || {
                    for i in 0..300 {
                        let data = format!("log{l}-blocking-{i}-{}", "b".repeat(100 + i % 300));
                        let a = log.append(&[RecordIn::new("k", data.as_bytes(), 1)]).unwrap();
                        acked.lock().unwrap().push((l, a.first_seq, data.into_bytes()));
                        if recycle > 0 && i % 40 == 39 {
                            log.remove_segments_before(a.first_seq.saturating_sub(200))
                                .unwrap();
                        }
                    }
                });
                s.spawn(move || {
                    for i in 0..300 {
                        let datas: Vec<Vec<u8>> = if i % 37 == 36 {
                            // Above JOURNAL_WRITE_BYTES_MAX: the segment syncs.
                            (0..10)
                                .map(|j| format!("log{l}-big-{i}-{j}-{}", "B".repeat(7000)).into_bytes())
                                .collect()
                        } else {
                            vec![format!("log{l}-async-{i}-{}", "a".repeat(50 + i % 200)).into_bytes()]
                        };
                        let records: Vec<RecordIn<'_>> =
                            datas.iter().map(|d| RecordIn::new("k", d, 1)).collect();
                        let (a, pending) = log.append_deferred(&records).unwrap();
                        block_on(log.durable(pending)).unwrap();
                        let mut acked = acked.lock().unwrap();
                        for (j, d) in datas.into_iter().enumerate() {
                            acked.push((l, a.first_seq + j as u64, d));
                        }
                    }
                });
            }
        });
        assert!(
            journal.write_count() > 1000,
            "{plan:?}: {} journaled",
            journal.write_count()
        );
        assert!(
            journal.checkpoint_count() >= 2,
            "{plan:?}: the journal must have turned files"
        );
        assert!(
            logs.iter().all(|l| l.segments().len() > 1),
            "the runs must cross rolls"
        );
        for log in logs {
            std::mem::forget(log);
        }
        fs.crash(plan);
        let (none, redo) =
            shardlog_segment::Journal::open(Arc::new(fs.clone()), Path::new("/e"), None).unwrap();
        assert!(none.is_none());
        if plan == CrashPlan::LoseUnsynced {
            assert!(redo.entries_applied > 0, "{redo:?}");
        }
        if recycle > 0 {
            assert!(
                redo.entries_skipped > 0,
                "{plan:?}: some entries name removed segments: {redo:?}"
            );
        }
        for (l, d) in LOGS.iter().enumerate() {
            let log = open_at(
                &fs,
                d,
                LogOptions {
                    segment_bytes_max: 128 * 1024,
                    ..LogOptions::default()
                },
            );
            assert_acknowledged_kept(&log, l, &acked.lock().unwrap(), &format!("{plan:?}: log {d}"));
        }
    }
}

#[test]
fn without_its_redo_a_crash_loses_journaled_records_so_the_redo_is_what_keeps_them() {
    // The control for the test above: the same kind of run, but the logs
    // reopen without the journal's redo. Journaled records were never synced
    // in their segments, so some are gone.
    let fs = MemFs::new();
    let journal = small_journal(&fs);
    let log = open_at(&fs, "/e/s/a", journaled_opts(&journal, 0));
    for i in 0..50 {
        log.append(&[RecordIn::new("k", &payload(i), 1)]).unwrap();
    }
    assert_eq!(journal.write_count(), 50);
    std::mem::forget(log);
    fs.crash(CrashPlan::LoseUnsynced);
    let log = open_at(&fs, "/e/s/a", small_opts());
    assert!(read_all(&log).unwrap().len() < 50);
    drop(log);
    let (_, redo) = shardlog_segment::Journal::open(Arc::new(fs.clone()), Path::new("/e"), None).unwrap();
    assert_eq!(redo.entries_applied, 50, "{redo:?}");
    let log = open_at(&fs, "/e/s/a", small_opts());
    assert_eq!(read_all(&log).unwrap().len(), 50);
}

#[test]
fn a_failed_journal_sync_fails_its_appends_and_later_appends_sync_their_own_segments() {
    let fs = MemFs::new();
    let journal = small_journal(&fs);
    let (a, b) = two_journaled_logs_with_ten_records(&fs, &journal);
    fs.fail_at(FsOp::SyncData, "journal", 1);
    let err = a.append(&[RecordIn::new("k", &payload(10), 1)]).unwrap_err();
    assert!(matches!(err, Error::Poisoned { .. }), "{err}");
    assert!(err.to_string().contains("journal"), "{err}");
    assert!(!journal.is_alive());
    ten_more_records_without_the_journal(&b, &journal);
    assert!(matches!(
        a.append(&[RecordIn::new("k", b"x", 1)]),
        Err(Error::Poisoned { .. })
    ));
    std::mem::forget(a);
    std::mem::forget(b);
    after_a_crash_a_keeps_its_ten_records_and_b_twenty(&fs);
}

/// Two logs, `/e/s/a` and `/e/s/b`, journaling into `journal`, with ten
/// acknowledged records each.
fn two_journaled_logs_with_ten_records(fs: &MemFs, journal: &Arc<shardlog_segment::Journal>) -> (Log, Log) {
    let a = open_at(fs, "/e/s/a", journaled_opts(journal, 0));
    let b = open_at(fs, "/e/s/b", journaled_opts(journal, 0));
    for i in 0..10 {
        a.append(&[RecordIn::new(&format!("pk{i}"), &payload(i), 1)])
            .unwrap();
        b.append(&[RecordIn::new(&format!("pk{i}"), &payload(i), 1)])
            .unwrap();
    }
    (a, b)
}

/// After the journal stopped: `b` goes on with records 10..20, each synced
/// in its own segment (the journal takes none of them).
fn ten_more_records_without_the_journal(b: &Log, journal: &shardlog_segment::Journal) {
    let writes = journal.write_count();
    for i in 10..20 {
        b.append(&[RecordIn::new(&format!("pk{i}"), &payload(i), 1)])
            .unwrap();
    }
    assert_eq!(
        journal.write_count(),
        writes,
        "later appends sync their own segments"
    );
}

/// Crashes `fs` (unsynced data lost), redoes the journal, and checks that
/// `/e/s/a` kept its ten acknowledged records and `/e/s/b` has all 20.
fn after_a_crash_a_keeps_its_ten_records_and_b_twenty(fs: &MemFs) {
    fs.crash(CrashPlan::LoseUnsynced);
    shardlog_segment::Journal::open(Arc::new(fs.clone()), Path::new("/e"), None).unwrap();
    let a = open_at(fs, "/e/s/a", small_opts());
    let b = open_at(fs, "/e/s/b", small_opts());
    let rows = read_all(&a).unwrap();
    assert!(rows.len() >= 10, "the acknowledged ten are kept");
    for (i, r) in rows.iter().take(10).enumerate() {
        assert_eq!(r.2, payload(i as u64));
    }
    assert_records(&b, 20);
}

#[test]
fn a_panic_on_the_journals_thread_fails_its_appends_instead_of_leaving_them_waiting() {
    // A bug that panics the journal's thread must not leave appenders
    // waiting forever (the thread gone, the journal still taking writes):
    // the journal stops as after a failed sync, the appends it held fail,
    // and later appends sync their own segments.
    let fs = MemFs::new();
    let journal = small_journal(&fs);
    let (a, b) = two_journaled_logs_with_ten_records(&fs, &journal);
    let a = Arc::new(a);
    fs.panic_next_sync("journal");
    let appender = {
        let a = a.clone();
        std::thread::spawn(move || a.append(&[RecordIn::new("k", &payload(10), 1)]).map(|_| ()))
    };
    shardlog_testkit::wait_until(
        20,
        "the append is still waiting 20 s after the journal's thread panicked",
        || appender.is_finished(),
    );
    let err = appender.join().unwrap().unwrap_err();
    assert!(matches!(err, Error::Poisoned { .. }), "{err}");
    assert!(err.to_string().contains("panicked"), "{err}");
    assert!(!journal.is_alive());
    ten_more_records_without_the_journal(&b, &journal);
    std::mem::forget(b);
    std::mem::forget(a);
    after_a_crash_a_keeps_its_ten_records_and_b_twenty(&fs);
}

#[test]
fn a_log_outside_the_journals_root_syncs_its_own_segment() {
    let fs = MemFs::new();
    let journal = small_journal(&fs);
    let log = open_at(&fs, "/elsewhere", journaled_opts(&journal, 0));
    log.append(&[RecordIn::new("k", b"v", 1)]).unwrap();
    assert_eq!(journal.write_count(), 0);
    std::mem::forget(log);
    fs.crash(CrashPlan::LoseUnsynced);
    assert_eq!(
        read_all(&open_at(&fs, "/elsewhere", small_opts())).unwrap().len(),
        1
    );
}

#[test]
fn a_checkpoint_syncs_the_segments_before_the_journal_writes_over_their_entries() {
    // One log, no rolls and no appends large enough to sync the segment:
    // only checkpoints make the entries of a file written over durable.
    let fs = MemFs::new();
    let journal = small_journal(&fs);
    let opts = LogOptions {
        segment_bytes_max: 64 * 1024 * 1024,
        ..journaled_opts(&journal, 0)
    };
    let log = open_at(&fs, "/e/s/a", opts);
    let data = vec![0x5Au8; 2000];
    let n = 400;
    for _ in 0..n {
        log.append(&[RecordIn::new("k", &data, 1)]).unwrap();
    }
    assert_eq!(log.segments().len(), 1);
    assert!(
        journal.checkpoint_count() >= 2,
        "{} checkpoints",
        journal.checkpoint_count()
    );
    std::mem::forget(log);
    fs.crash(CrashPlan::LoseUnsynced);
    shardlog_segment::Journal::open(Arc::new(fs.clone()), Path::new("/e"), None).unwrap();
    let log = open_at(&fs, "/e/s/a", small_opts());
    assert_eq!(read_all(&log).unwrap().len(), n);
}

#[test]
fn a_log_closed_after_a_failed_segment_sync_keeps_the_journal_from_writing_over_its_entries() {
    let fs = MemFs::new();
    let journal = small_journal(&fs);
    let a = open_at(&fs, "/e/s/a", journaled_opts(&journal, 0));
    for i in 0..20 {
        a.append(&[RecordIn::new(&format!("pk{i}"), &payload(i), 1)])
            .unwrap();
    }
    // An append too large for the journal syncs the segment itself, and
    // that sync fails: the journaled appends' pages may be gone with it,
    // and only the journal still holds them.
    fs.fail_at(FsOp::SyncData, "/e/s/a", 1);
    let big = vec![7u8; 70_000];
    assert!(a.append(&[RecordIn::new("big", &big, 1)]).is_err());
    drop(a);
    // Another log fills the journal past a turn: the checkpoint must refuse
    // the closed, poisoned log rather than take its file for synced.
    let b = open_at(
        &fs,
        "/e/s/b",
        LogOptions {
            segment_bytes_max: 64 * 1024 * 1024,
            ..journaled_opts(&journal, 0)
        },
    );
    let data = vec![1u8; 2000];
    for _ in 0..400 {
        let _ = b.append(&[RecordIn::new("k", &data, 1)]);
    }
    assert!(!journal.is_alive(), "the checkpoint must have failed");
    std::mem::forget(b);
    fs.crash(CrashPlan::LoseUnsynced);
    shardlog_segment::Journal::open(Arc::new(fs.clone()), Path::new("/e"), None).unwrap();
    let a = open_at(&fs, "/e/s/a", small_opts());
    let rows = read_all(&a).unwrap();
    assert!(rows.len() >= 20, "{} records", rows.len());
    for (i, r) in rows.iter().take(20).enumerate() {
        assert_eq!(r.2, payload(i as u64));
    }
}

/// A large append starts its write-back at once. If that fails, the kernel
/// may have dropped its pages without an error for the next sync (an
/// allocation failing in write-back): the append must be refused and the
/// log poisoned, or a sync that then "succeeds" would acknowledge records
/// that never reach the disk.
#[test]
fn a_large_append_whose_early_write_back_fails_is_refused_and_poisons_the_log() {
    let fs = MemFs::new();
    let opts = LogOptions {
        segment_bytes_max: 4 << 20,
        ..small_opts()
    };
    let log = open(&fs, opts.clone()).unwrap();
    append_n(&log, 0, 5);
    let data = vec![0x42u8; 1024];
    // More than a step of whole pages, so that the append starts a call.
    let n = (EARLY_WRITE_BACK_STEP_BYTES_MAX / 1024 + 100) as usize;
    let keys: Vec<String> = (0..n).map(|i| format!("big{i}")).collect();
    let big: Vec<RecordIn<'_>> = keys.iter().map(|k| RecordIn::new(k, &data, 9_000)).collect();
    // A large append whose early write-back works is acknowledged as ever.
    log.append(&big).unwrap();
    fs.fail_at(FsOp::StartWriteBack, ".seg", 1);
    let err = log.append(&big).unwrap_err();
    assert!(matches!(err, Error::Poisoned { .. }), "{err}");
    assert!(err.to_string().contains("write-back"), "{err}");
    assert!(matches!(
        log.append(&[RecordIn::new("k", b"after", 9_001)]),
        Err(Error::Poisoned { .. })
    ));
    drop(log);
    fs.crash(CrashPlan::LoseUnsynced);
    let log = open(&fs, opts).unwrap();
    let rows = read_all(&log).unwrap();
    assert_eq!(rows.len(), 5 + n, "the acknowledged records, and only those");
    assert!(rows[5..].iter().all(|r| r.2 == data));
    // Writable again after the reopen.
    log.append(&[RecordIn::new("k", b"reopened", 9_002)]).unwrap();
}

/// An append made durable before a later failure poisoned its log is
/// reported as written: the durable mark never moves back and no cut goes
/// below it, so the record survives any crash, and an answer of "failed"
/// would only make its writer put it twice.
#[test]
fn a_waiter_whose_append_was_durable_before_the_log_was_poisoned_is_told_it_succeeded() {
    let fs = MemFs::new();
    let log = open(&fs, small_opts()).unwrap();
    append_n(&log, 0, 10);
    let data = payload(10);
    let (_, pending) = log
        .append_deferred(&[RecordIn::new("pk10", &data, 2_000)])
        .unwrap();
    // Another caller's sync makes it durable before its waiter looks.
    log.sync().unwrap();
    fs.fail_next_writes(1);
    let later = payload(11);
    assert!(log.append(&[RecordIn::new("pk11", &later, 2_001)]).is_err());
    assert!(matches!(log.health(), Err(Error::Poisoned { .. })));
    block_on(log.durable(pending)).expect("durable before the poisoning: written");
    std::mem::forget(log);
    for plan in [CrashPlan::LoseUnsynced, CrashPlan::Random { seed: 5 }] {
        let crashed = fs.clone();
        crashed.crash(plan);
        let log = open(&crashed, small_opts()).unwrap();
        assert_records(&log, 11);
    }
}

/// A journal checkpoint's sync of a segment fails while an append too
/// large for the journal is written into it. That sync drops the journaled
/// appends' pages (the redo brings them back) but not the large append's,
/// written after it began; the checkpoint wakes the waiters before it cuts.
/// The large append's writer must hear "failed" only once the cut of its
/// bytes is durable: a crash the moment it has its answer must never bring
/// it back behind the redone records.
#[test]
fn an_append_written_during_a_failing_checkpoint_never_comes_back_after_its_writer_heard_it_failed() {
    append_written_during_a_failing_checkpoint_never_comes_back(false);
}

/// The same through the async wait (`Log::durable`, the server's
/// PutRecord): a sync-pool thread waits out the checkpoint and wakes the
/// task, whose poll answers.
#[test]
fn an_async_append_written_during_a_failing_checkpoint_never_comes_back_after_its_writer_heard_it_failed() {
    append_written_during_a_failing_checkpoint_never_comes_back(true);
}

fn append_written_during_a_failing_checkpoint_never_comes_back(async_wait: bool) {
    let latency = std::time::Duration::from_millis(60);
    for seed in 0..24u64 {
        let fs = MemFs::new();
        let journal = small_journal(&fs);
        let opts = LogOptions {
            segment_bytes_max: 64 * 1024 * 1024,
            ..journaled_opts(&journal, 0)
        };
        let log = Arc::new(open_at(&fs, "/e/s/a", opts));
        // Four journaled appends nearly fill the smallest journal file.
        let fill = vec![0x11u8; 60_000];
        for _ in 0..4 {
            log.append(&[RecordIn::new("k", &fill, 1)]).unwrap();
        }
        fs.set_sync_latency(Some(latency));
        fs.fail_at(FsOp::SyncData, "/e/s/a/", 1);
        // Another log's append does not fit: the journal checkpoints first,
        // and its sync of the first log's segment fails after `latency`.
        // (In the first log a journaled append pending there would leave a
        // hole before the large one, and no record could come back.)
        let other = open_at(&fs, "/e/s/b", journaled_opts(&journal, 0));
        let fifth = std::thread::spawn(move || {
            let data = vec![0x22u8; 60_000];
            let r = other.append(&[RecordIn::new("k", &data, 2)]).map(|_| ());
            std::mem::forget(other);
            r
        });
        std::thread::sleep(latency / 3);
        let big = vec![0x33u8; 70_000];
        let answered = log
            .append_deferred(&[RecordIn::new("big", &big, 3)])
            .and_then(|(_, pending)| {
                if async_wait {
                    block_on(log.durable(pending))
                } else {
                    log.complete(pending)
                }
            });
        assert!(answered.is_err(), "seed {seed}: the big append cannot be durable");
        fs.set_sync_latency(None);
        fs.crash(CrashPlan::Random { seed });
        assert!(
            fifth.join().unwrap().is_err(),
            "seed {seed}: the fifth append failed"
        );
        std::mem::forget(Arc::try_unwrap(log).unwrap());
        shardlog_segment::Journal::open(Arc::new(fs.clone()), Path::new("/e"), None).unwrap();
        let log = open_at(&fs, "/e/s/a", small_opts());
        let rows = read_all(&log).unwrap();
        assert!(
            rows.iter().all(|r| r.2 != big),
            "seed {seed}: the big append came back after its writer heard it failed ({} records)",
            rows.len()
        );
        assert_eq!(
            rows.len(),
            4,
            "seed {seed}: the four acknowledged appends are there"
        );
    }
}

/// The default options with segments large enough that a few 100 KB
/// appends never roll, so every early write-back lands in one file.
fn unrolled_opts() -> LogOptions {
    LogOptions {
        segment_bytes_max: 8 << 20,
        ..LogOptions::default()
    }
}

#[test]
fn early_write_back_hands_whole_pages_over_once_in_steps_and_skips_small_appends() {
    // Large appends start their write-back once a step's worth of whole
    // pages has gathered (half the average group sync, bounded), each call
    // from where the last one ended to the last whole page of its own
    // append, so the page two appends share goes out with the later one's
    // pages and every whole page goes out once. A small append's bytes
    // (perhaps acknowledged through the journal, not yet synced in the
    // segment) are never in a range.
    let fs = MemFs::new();
    let log = open(&fs, unrolled_opts()).unwrap();
    assert_eq!(log.options().sync, SyncPolicy::Always);
    let large = vec![0x5Au8; 100_000];
    let small = vec![0x33u8; 1_000];
    let page_floor = |o: u64| o / CACHE_PAGE_BYTES * CACHE_PAGE_BYTES;
    let page_ceil = |o: u64| o.div_ceil(CACHE_PAGE_BYTES) * CACHE_PAGE_BYTES;
    // Nothing is synced until the end, so the average group is still the
    // initial one and the step is half of it.
    let step = page_floor(
        (GROUP_BYTES_AVG_INITIAL / 2)
            .clamp(EARLY_WRITE_BACK_BYTES_MIN as u64, EARLY_WRITE_BACK_STEP_BYTES_MAX),
    );
    assert_eq!(step, 512 * 1024);
    // Two runs of 25 large appends (about 4.7 steps each) with a small one
    // between them.
    let plan: Vec<&Vec<u8>> = std::iter::repeat_n(&large, 25)
        .chain([&small])
        .chain(std::iter::repeat_n(&large, 25))
        .collect();
    let mut appends = Vec::new();
    let mut pending = Vec::new();
    for (i, data) in plan.iter().enumerate() {
        let start = log.active_space().written;
        let (_, p) = log
            .append_deferred(&[RecordIn::new("pk", data, 1_000 + i as i64)])
            .unwrap();
        pending.push(p);
        appends.push((start, log.active_space().written, data.len() == large.len()));
    }
    for p in pending {
        log.complete(p).unwrap();
    }
    let path = log.segments().last().unwrap().path.clone();
    let ranges: Vec<(u64, u64)> = fs
        .write_backs_started()
        .into_iter()
        .filter(|w| w.path == path)
        .map(|w| (w.start, w.end))
        .collect();
    // The rule, written out: a range starts where the last ended (or past
    // the last small append) and is cut at the first large append whose
    // last whole page is a step or more beyond that start.
    let mut expected = Vec::new();
    let mut from = page_ceil(SEGMENT_HEADER_BYTES as u64);
    for &(_, end, is_large) in &appends {
        if !is_large {
            from = page_ceil(end);
        } else if page_floor(end) >= from + step {
            expected.push((from, page_floor(end)));
            from = page_floor(end);
        }
    }
    assert_eq!(ranges, expected, "appends at {appends:?}");
    assert_eq!(
        ranges.len(),
        8,
        "four calls in each run of 25 appends: {ranges:?}"
    );
    // Appends end inside pages, so a range that ended at its append's
    // page_ceil would take the page the next append shares.
    assert!(appends.iter().all(|a| !a.1.is_multiple_of(CACHE_PAGE_BYTES)));
    let (small_start, small_end, _) = appends[25];
    for (i, &(start, end)) in ranges.iter().enumerate() {
        assert!(end - start >= step, "range {i} is a step or more");
        assert!(
            end <= small_start || start >= small_end,
            "range {i} holds the small append's bytes"
        );
        if let Some(&(next, _)) = ranges.get(i + 1) {
            assert!(next >= end, "ranges {i} and {} overlap", i + 1);
        }
    }
    assert_eq!(
        ranges[4].0,
        page_ceil(small_end),
        "the range after the small append starts past it"
    );
}

#[test]
fn early_write_back_steps_follow_the_average_group_so_small_groups_still_overlap_their_sync() {
    // Groups of one 100 KB append each: once the average group has come
    // down from its initial 1 MiB, the step is the 64 KiB floor and every
    // append starts its own call, so a blocking writer's pages still reach
    // the device before its sync asks for them.
    let fs = MemFs::new();
    let log = open(&fs, unrolled_opts()).unwrap();
    let large = vec![0x5Au8; 100_000];
    let mut ends = Vec::new();
    for i in 0..40 {
        log.append(&[RecordIn::new("pk", &large, 1_000 + i)]).unwrap();
        ends.push(log.active_space().written);
    }
    let path = log.segments().last().unwrap().path.clone();
    let ends_of_calls: Vec<u64> = fs
        .write_backs_started()
        .into_iter()
        .filter(|w| w.path == path)
        .map(|w| w.end)
        .collect();
    // The first appends gather pages for the initial step; the last ten
    // each end a call at their own last whole page.
    assert!(ends_of_calls.len() < 40, "{ends_of_calls:?}");
    let last_ten: Vec<u64> = ends[30..]
        .iter()
        .map(|e| e / CACHE_PAGE_BYTES * CACHE_PAGE_BYTES)
        .collect();
    assert_eq!(ends_of_calls[ends_of_calls.len() - 10..], last_ten[..]);
}

#[test]
fn a_sync_acknowledges_nothing_while_an_early_write_back_over_its_tail_is_in_flight() {
    // A is written; B's early write-back (its range starts on the page A's
    // tail shares) is held in flight and then fails, as if the kernel had
    // dropped the pages. A's sync, run meanwhile, must wait for it and
    // then refuse: the failed call may have taken A's last page with it.
    let fs = MemFs::new();
    let log = Arc::new(open(&fs, unrolled_opts()).unwrap());
    let large = vec![0x5Au8; 100_000];
    // Each append is more than a step of the early write-back, so each
    // starts its own call.
    let step_batch = |arrival_ms: i64| -> Vec<RecordIn<'_>> {
        let n = (EARLY_WRITE_BACK_STEP_BYTES_MAX / large.len() as u64 + 1) as usize;
        (0..n).map(|_| RecordIn::new("pk", &large, arrival_ms)).collect()
    };
    let (_, a) = log.append_deferred(&step_batch(1_000)).unwrap();
    let a_end = log.active_space().written;
    let started = fs.write_backs_started();
    assert_eq!(started.len(), 1, "A started its own write-back");
    assert_eq!(started[0].end, a_end / CACHE_PAGE_BYTES * CACHE_PAGE_BYTES);
    assert!(
        !a_end.is_multiple_of(CACHE_PAGE_BYTES),
        "A's tail shares a page with B"
    );
    fs.hold_next_write_back(".seg");
    fs.fail_at(FsOp::StartWriteBack, ".seg", 1);
    let b = std::thread::spawn({
        let log = log.clone();
        let batch: Vec<(String, Vec<u8>)> = (0..step_batch(0).len())
            .map(|_| ("pk".to_string(), large.clone()))
            .collect();
        move || {
            let records: Vec<RecordIn<'_>> = batch.iter().map(|(k, d)| RecordIn::new(k, d, 1_001)).collect();
            log.append_deferred(&records).map(|_| ())
        }
    });
    while !fs.write_back_held() {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let sync = std::thread::spawn({
        let log = log.clone();
        move || log.complete(a)
    });
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(
        !sync.is_finished(),
        "A's sync ended while an early write-back over its last page was in flight"
    );
    fs.release_write_back();
    assert!(b.join().unwrap().is_err(), "B's failed write-back refuses B");
    assert!(
        sync.join().unwrap().is_err(),
        "A was acknowledged although the failed write-back may have dropped its last page"
    );
}

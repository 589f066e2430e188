//! The checked-in format fixtures in data/fixtures/ stay readable: a change
//! that breaks reading logs written by format version 1 fails here.

use std::path::{Path, PathBuf};

use shardlog_index::IndexedLog;
use shardlog_segment::{LogOptions, ReadLimits, RecordIn, SyncPolicy};

const RECORDS: u64 = 300;

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/fixtures/segment-v1")
}

fn record(i: u64) -> (String, Vec<u8>, i64) {
    (
        format!("key-{}", i % 7),
        format!("fixture record {i}")
            .repeat(1 + (i % 5) as usize)
            .into_bytes(),
        1_700_000_000_000 + i as i64 * 10,
    )
}

fn opts() -> LogOptions {
    LogOptions {
        segment_bytes_max: 64 * 1024,
        ..LogOptions::default()
    }
}

#[test]
#[ignore = "run by hand to regenerate the fixture"]
fn regenerate() {
    let dir = fixture_dir();
    let _ = std::fs::remove_dir_all(&dir);
    let log = IndexedLog::open(
        &dir,
        LogOptions {
            sync: SyncPolicy::Always,
            preallocate_bytes: 4096,
            ..opts()
        },
    )
    .unwrap();
    for i in 0..RECORDS {
        let (k, d, t) = record(i);
        log.append(&[RecordIn::new(&k, &d, t)]).unwrap();
        if i == 200 {
            log.log().roll().unwrap();
        }
    }
    drop(log);
    std::fs::remove_file(dir.join("LOCK")).unwrap();
}

#[test]
fn format_v1_fixture_reads_back_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(fixture_dir()).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), tmp.path().join(entry.file_name())).unwrap();
    }
    let log = IndexedLog::open(tmp.path(), opts()).unwrap();
    assert_eq!(log.log().segments().len(), 2);
    let mut cur = log.cursor_first();
    let mut i = 0u64;
    loop {
        let batch = log
            .read(
                &mut cur,
                ReadLimits {
                    max_records: 1000,
                    max_bytes: usize::MAX,
                },
            )
            .unwrap();
        if batch.is_empty() {
            break;
        }
        for r in batch.iter() {
            let (k, d, t) = record(i);
            assert_eq!(
                (r.seq, r.partition_key, r.data, r.arrival_ms),
                (i, k.as_str(), d.as_slice(), t)
            );
            i += 1;
        }
    }
    assert_eq!(i, RECORDS);
    log.check_indexes().unwrap();
    assert_eq!(
        log.stats().rebuilt,
        0,
        "the fixture's index sidecar must load as is"
    );
    assert!(log.log().verify().is_ok());
    assert_eq!(log.seq_at_time(1_700_000_000_000 + 2_005).unwrap(), 201);
}

//! Criterion benchmarks of the storage core. Figures and the raw device
//! limits beside them are in docs/PERFORMANCE.md.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use shardlog_index::IndexedLog;
use shardlog_segment::{LogOptions, ReadLimits, RecordIn, SyncPolicy};

const RECORD: usize = 1024;

fn opts(sync: SyncPolicy) -> LogOptions {
    LogOptions {
        sync,
        ..LogOptions::default()
    }
}

fn bench_append(c: &mut Criterion) {
    let data = vec![7u8; RECORD];
    let mut g = c.benchmark_group("append_1KiB");
    g.sample_size(10).measurement_time(Duration::from_secs(5));

    // Never: 100-record batches, no fsync.
    {
        let tmp = tempfile::tempdir().unwrap();
        let log = IndexedLog::open(tmp.path(), opts(SyncPolicy::Never)).unwrap();
        let batch: Vec<RecordIn<'_>> = (0..100)
            .map(|_| RecordIn::new("partition-key", &data, 1))
            .collect();
        g.throughput(Throughput::Bytes((RECORD * 100) as u64));
        g.bench_function("never_batch100", |b| b.iter(|| log.append(&batch).unwrap()));
    }

    // Always: N concurrent appenders, one record per append; group commit
    // shares fsyncs among them.
    for appenders in [1usize, 4, 16] {
        let tmp = tempfile::tempdir().unwrap();
        let log = Arc::new(IndexedLog::open(tmp.path(), opts(SyncPolicy::Always)).unwrap());
        let per_thread = 64usize;
        g.throughput(Throughput::Bytes((RECORD * per_thread * appenders) as u64));
        g.bench_with_input(
            BenchmarkId::new("always_appenders", appenders),
            &appenders,
            |b, &n| {
                b.iter_custom(|iters| {
                    let start = Instant::now();
                    for _ in 0..iters {
                        std::thread::scope(|s| {
                            for _ in 0..n {
                                let log = &log;
                                let data = &data;
                                s.spawn(move || {
                                    for _ in 0..per_thread {
                                        log.append(&[RecordIn::new("partition-key", data, 1)]).unwrap();
                                    }
                                });
                            }
                        });
                    }
                    start.elapsed()
                })
            },
        );
    }

    // Always with 100-record batches from 16 appenders: the durable bandwidth.
    {
        let tmp = tempfile::tempdir().unwrap();
        let log = Arc::new(IndexedLog::open(tmp.path(), opts(SyncPolicy::Always)).unwrap());
        let batch: Vec<RecordIn<'_>> = (0..100)
            .map(|_| RecordIn::new("partition-key", &data, 1))
            .collect();
        g.throughput(Throughput::Bytes((RECORD * 100 * 16 * 4) as u64));
        g.bench_function("always_batch100_appenders16", |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    std::thread::scope(|s| {
                        for _ in 0..16 {
                            let log = &log;
                            let batch = &batch;
                            s.spawn(move || {
                                for _ in 0..4 {
                                    log.append(batch).unwrap();
                                }
                            });
                        }
                    });
                }
                start.elapsed()
            })
        });
    }
    g.finish();
}

/// A log of `n` 1 KiB records over small segments, all sealed.
fn build(n: usize, segment_bytes_max: u64) -> (tempfile::TempDir, IndexedLog) {
    let tmp = tempfile::tempdir().unwrap();
    let log = IndexedLog::open(
        tmp.path(),
        LogOptions {
            sync: SyncPolicy::Never,
            segment_bytes_max,
            ..LogOptions::default()
        },
    )
    .unwrap();
    let data = vec![3u8; RECORD];
    for chunk in 0..n / 100 {
        let batch: Vec<RecordIn<'_>> = (0..100)
            .map(|i| RecordIn::new("partition-key", &data, (chunk * 100 + i) as i64))
            .collect();
        log.append(&batch).unwrap();
    }
    log.log().roll().unwrap();
    (tmp, log)
}

fn bench_read(c: &mut Criterion) {
    let n = 131_000; // ~128 MiB of records
    let (_tmp, log) = build(n, 32 * 1024 * 1024);
    let mut g = c.benchmark_group("read");
    g.sample_size(10).measurement_time(Duration::from_secs(5));
    g.throughput(Throughput::Bytes((n * RECORD) as u64));
    g.bench_function("sequential_sealed_crc_verified", |b| {
        b.iter(|| {
            let mut cur = log.cursor_first();
            let mut bytes = 0usize;
            loop {
                let batch = log
                    .read(
                        &mut cur,
                        ReadLimits {
                            max_records: 10_000,
                            max_bytes: usize::MAX,
                        },
                    )
                    .unwrap();
                if batch.is_empty() {
                    break;
                }
                bytes += batch.iter().map(|r| r.data.len()).sum::<usize>();
            }
            assert_eq!(bytes, n * RECORD);
        })
    });
    g.finish();

    let mut g = c.benchmark_group("lookup");
    let mut x = 0x1234_5678_9abc_def0u64;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    log.check_indexes().unwrap();
    g.bench_function("random_sequence_number", |b| {
        b.iter(|| log.cursor_at(rnd() % n as u64).unwrap())
    });
    g.bench_function("random_timestamp", |b| {
        b.iter(|| log.seq_at_time((rnd() % n as u64) as i64).unwrap())
    });
    g.finish();
}

fn bench_open(c: &mut Criterion) {
    // 1,000 sealed segments plus an active one with records, as after kill -9.
    let (tmp, log) = build(1000 * 110, 64 * 1024);
    let data = vec![1u8; RECORD];
    log.append(&[RecordIn::new("k", &data, 1)]).unwrap();
    assert!(log.log().segments().len() >= 1000);
    drop(log);
    let mut g = c.benchmark_group("open");
    g.sample_size(10);
    g.bench_function("recover_1000_segments", |b| {
        b.iter(|| IndexedLog::open(tmp.path(), opts(SyncPolicy::Always)).unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench_append, bench_read, bench_open);
criterion_main!(benches);

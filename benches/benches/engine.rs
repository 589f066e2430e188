//! Criterion benchmarks of the stream engine API (no HTTP): durable ingest of
//! 1 KiB records with several shard and writer counts, and replay.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use shardlog_stream::{CreateStreamOptions, Engine, EngineOptions, PutRecordInput, StartingPosition};

fn engine() -> (tempfile::TempDir, Engine) {
    let tmp = tempfile::tempdir().unwrap();
    let e = Engine::open(
        tmp.path(),
        EngineOptions {
            retention_check_interval_ms: 0,
            ..EngineOptions::default()
        },
    )
    .unwrap();
    (tmp, e)
}

fn bench_ingest(c: &mut Criterion) {
    let data = vec![5u8; 1024];
    let mut g = c.benchmark_group("engine_put_record_1KiB_always");
    g.sample_size(10).measurement_time(Duration::from_secs(4));
    for (shards, writers) in [(1u32, 1usize), (1, 8), (4, 8), (64, 8), (64, 64)] {
        let (_tmp, e) = engine();
        e.create_stream("s", shards, CreateStreamOptions::default())
            .unwrap();
        let per_writer = 64usize.max(512 / writers);
        g.throughput(Throughput::Bytes((1024 * per_writer * writers) as u64));
        g.bench_with_input(
            BenchmarkId::new(format!("shards{shards}"), format!("writers{writers}")),
            &writers,
            |b, &w| {
                b.iter_custom(|iters| {
                    let start = Instant::now();
                    for it in 0..iters {
                        std::thread::scope(|s| {
                            for t in 0..w {
                                let (e, data) = (&e, &data);
                                s.spawn(move || {
                                    for i in 0..per_writer {
                                        let key = format!("{it}-{t}-{i}");
                                        e.put_record("s", PutRecordInput::new(&key, data)).unwrap();
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
    g.finish();

    let mut g = c.benchmark_group("engine_put_records_100x1KiB_always");
    g.sample_size(10).measurement_time(Duration::from_secs(4));
    for (shards, writers) in [(4u32, 8usize), (64, 8)] {
        let (_tmp, e) = engine();
        e.create_stream("s", shards, CreateStreamOptions::default())
            .unwrap();
        let keys: Vec<String> = (0..100).map(|i| format!("key-{i}")).collect();
        g.throughput(Throughput::Bytes((1024 * 100 * 8 * writers) as u64));
        g.bench_with_input(
            BenchmarkId::new(format!("shards{shards}"), format!("writers{writers}")),
            &writers,
            |b, &w| {
                b.iter_custom(|iters| {
                    let start = Instant::now();
                    for _ in 0..iters {
                        std::thread::scope(|s| {
                            for _ in 0..w {
                                let (e, data, keys) = (&e, &data, &keys);
                                s.spawn(move || {
                                    let recs: Vec<PutRecordInput<'_>> =
                                        keys.iter().map(|k| PutRecordInput::new(k, data)).collect();
                                    for _ in 0..8 {
                                        e.put_records("s", &recs).unwrap();
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
    g.finish();
}

fn bench_replay(c: &mut Criterion) {
    let (_tmp, e) = engine();
    e.create_stream("s", 4, CreateStreamOptions::default()).unwrap();
    let data = vec![9u8; 1024];
    let keys: Vec<String> = (0..500).map(|i| format!("key-{i}")).collect();
    let recs: Vec<PutRecordInput<'_>> = keys.iter().map(|k| PutRecordInput::new(k, &data)).collect();
    for _ in 0..200 {
        e.put_records("s", &recs).unwrap();
    }
    let total = 100_000usize;
    let mut g = c.benchmark_group("engine_replay");
    g.sample_size(10).measurement_time(Duration::from_secs(4));
    g.throughput(Throughput::Elements(total as u64));
    g.bench_function("get_records_limit10000_4_shards", |b| {
        b.iter(|| {
            let mut n = 0;
            for shard in e.list_shards("s").unwrap() {
                let mut it = e
                    .get_shard_iterator("s", &shard.shard_id, StartingPosition::TrimHorizon)
                    .unwrap();
                loop {
                    let r = e.get_records(&it, Some(10_000)).unwrap();
                    if r.records.is_empty() {
                        break;
                    }
                    n += r.records.len();
                    it = r.next_shard_iterator.unwrap();
                }
            }
            assert_eq!(n, total);
        })
    });
    g.finish();
}

criterion_group!(benches, bench_ingest, bench_replay);
criterion_main!(benches);

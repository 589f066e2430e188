//! Latency and memory probe of the stream engine (no HTTP):
//!
//! 1. put latency under `Always` (one writer; p50/p99 over 5,000 puts);
//! 2. an engine with 1,000 shards: time to open it again, and resident
//!    memory once idle.
//!
//! Usage: `cargo run --release -p shardlog-benches --bin engine_probe`

use std::time::Instant;

use shardlog_stream::{CreateStreamOptions, Engine, EngineOptions, PutRecordInput};

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

fn main() {
    let opts = || EngineOptions {
        retention_check_interval_ms: 0,
        ..EngineOptions::default()
    };
    let tmp = tempfile::tempdir().unwrap();
    {
        let e = Engine::open(tmp.path(), opts()).unwrap();
        e.create_stream("lat", 1, CreateStreamOptions::default()).unwrap();
        let data = vec![1u8; 1024];
        let mut lat = Vec::new();
        for i in 0..5000 {
            let key = format!("k{i}");
            let t = Instant::now();
            e.put_record("lat", PutRecordInput::new(&key, &data)).unwrap();
            lat.push(t.elapsed());
        }
        lat.sort();
        println!(
            "put_record 1 KiB, Always, 1 writer: p50 {} us, p99 {} us",
            lat[lat.len() / 2].as_micros(),
            lat[lat.len() * 99 / 100].as_micros()
        );
        e.delete_stream("lat", false).unwrap();
        e.create_stream("big", 1000, CreateStreamOptions::default())
            .unwrap();
        for i in 0..5000 {
            e.put_record("big", PutRecordInput::new(&format!("k{i}"), &data))
                .unwrap();
        }
    }
    let before = rss_mib();
    let t = Instant::now();
    let e = Engine::open(tmp.path(), opts()).unwrap();
    let open = t.elapsed();
    std::thread::sleep(std::time::Duration::from_millis(200));
    println!(
        "open engine with 1,000 shards: {:?}; resident memory idle: {:.1} MiB (process total; {:.1} MiB before open)",
        open,
        rss_mib(),
        before
    );
    assert_eq!(e.list_shards("big").unwrap().len(), 1000);
}

//! A first run of the storage core: writes records durably into a log
//! directory, reopens it (recovery), looks records up by sequence number and
//! by arrival time, and verifies every checksum.
//!
//! `cargo run --release -p shardlog-index --example quickstart [DIR]`

use shardlog_index::IndexedLog;
use shardlog_segment::{now_ms, LogOptions, ReadLimits, RecordIn};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "data/local/quickstart".to_string());
    let log = IndexedLog::open(&dir, LogOptions::default())?;
    let start = log.log().next_seq();
    let t0 = std::time::Instant::now();
    for i in 0..1000 {
        let data = format!("{{\"event\":{i},\"at\":{}}}", now_ms());
        let key = format!("user-{}", i % 17);
        log.append(&[RecordIn::new(&key, data.as_bytes(), now_ms())])?;
    }
    println!(
        "appended 1000 durable records (fdatasync each, group-committed) in {:?}; sequence numbers {start}..{}",
        t0.elapsed(),
        log.log().next_seq()
    );
    drop(log);

    let log = IndexedLog::open(&dir, LogOptions::default())?;
    let mut cur = log.cursor_at(start + 500)?;
    let batch = log.read(
        &mut cur,
        ReadLimits {
            max_records: 3,
            max_bytes: 1 << 20,
        },
    )?;
    for r in batch.iter() {
        println!(
            "seq {} key {} arrival {} data {}",
            r.seq,
            r.partition_key,
            r.arrival_ms,
            String::from_utf8_lossy(r.data)
        );
    }
    let since = log.seq_at_time(now_ms() - 60_000)?;
    println!("first record of the last minute: seq {since}");
    let report = log.log().verify();
    println!(
        "verify: {} segments, {} records, {} problems",
        report.segments,
        report.records,
        report.problems.len()
    );
    Ok(())
}

//! Appends 2 GB of 1 KiB records (100 per append) under `SyncPolicy::Never`
//! and prints the rate: the burst figure, which stays within the kernel's
//! dirty-page limits, beside criterion's sustained one.
//!
//! Usage: `cargo run --release -p shardlog-benches --bin never_burst -- SEGMENT_BYTES PREALLOCATE_BYTES`
//! (for example `134217728 4194304`, the defaults).

use shardlog_index::IndexedLog;
use shardlog_segment::{LogOptions, RecordIn, SyncPolicy};
use std::time::Instant;
fn main() {
    let arg = |i: usize, d: u64| std::env::args().nth(i).and_then(|a| a.parse().ok()).unwrap_or(d);
    let seg = arg(1, 134_217_728);
    let pre = arg(2, 4_194_304);
    let tmp = tempfile::tempdir().unwrap();
    let log = IndexedLog::open(
        tmp.path(),
        LogOptions {
            sync: SyncPolicy::Never,
            segment_bytes_max: seg,
            preallocate_bytes: pre,
            ..LogOptions::default()
        },
    )
    .unwrap();
    let data = vec![7u8; 1024];
    let batch: Vec<RecordIn<'_>> = (0..100)
        .map(|_| RecordIn::new("partition-key", &data, 1))
        .collect();
    let t = Instant::now();
    for _ in 0..20000 {
        log.append(&batch).unwrap();
    }
    let el = t.elapsed().as_secs_f64();
    println!(
        "seg {seg} pre {pre}: {:.0} MB/s",
        20000.0 * 100.0 * 1064.0 / el / 1e6
    );
}

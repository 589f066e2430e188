//! Time to accept writes again after a process crash, with a large data
//! directory (issue 8: 10 GiB in 100 shards, ≤ 1 s).
//!
//! `open_probe fill DIR GIB SHARDS [always|never]` writes GIB GiB of 1 KiB
//! records into a stream of SHARDS shards (batches of 500), then aborts the
//! process: no clean stop, no clean-stop markers, as after `kill -9`.
//! `always` (the default, as a server acknowledges) syncs each batch before
//! the next, so the frames record how far their segment was synced and the
//! open verifies only the rest at once (`OpenCheck::Deferred`); `never`
//! syncs nothing, so nothing is proven synced and the open verifies every
//! checksum of the active segments: the worst case. `recycle` (after
//! `always` or `never`) fills under a byte cap of half of GIB with
//! retention every 200 batches and 2 kept files per shard
//! (`LogOptions::recycle_segments_max`), so that the active segments the
//! open recovers are recycled files: the open then also walks what follows
//! their data (see docs/FORMAT.md, recycled segment files).
//!
//! `open_probe open DIR` opens the engine (recovery scans each shard's
//! active segment) and times it and the first acknowledged `put_record`
//! under `SyncPolicy::Always`, then aborts again (so repeated runs each
//! measure an open after a crash).
//!
//! Usage: `cargo run --release -p shardlog-benches --bin open_probe -- fill /work/big 10 100`
//! (`SHARDLOG_JOURNAL=true` fills and opens with the engine's journal)
//! then `... -- open /work/big`.

use std::time::Instant;

use shardlog_stream::{CreateStreamOptions, Engine, EngineOptions, PutRecordInput, SyncPolicy};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: open_probe fill DIR GIB SHARDS [always|never] [recycle] | open_probe open DIR";
    let dir = args.get(2).expect(usage);
    match args.get(1).map(String::as_str) {
        Some("fill") => {
            let gib: u64 = args.get(3).and_then(|s| s.parse().ok()).expect(usage);
            let shards: u32 = args.get(4).and_then(|s| s.parse().ok()).expect(usage);
            let recycle = args.get(6).map(String::as_str) == Some("recycle");
            let mut opts = EngineOptions {
                sync: match args.get(5).map(String::as_str) {
                    Some("never") => SyncPolicy::Never,
                    _ => SyncPolicy::Always,
                },
                retention_check_interval_ms: 0,
                ..EngineOptions::default()
            };
            opts.log.recycle_segments_max = if recycle { 2 } else { 0 };
            opts.journal_small_appends = journal_from_env();
            let e = Engine::open(dir, opts).unwrap();
            e.create_stream(
                "big",
                shards,
                CreateStreamOptions {
                    retention_bytes_max: recycle.then_some((gib << 30) / 2),
                    ..CreateStreamOptions::default()
                },
            )
            .unwrap();
            let data = vec![7u8; 1024];
            let keys: Vec<String> = (0..500).map(|i| format!("key-{i}")).collect();
            let total = gib << 30;
            let mut written = 0u64;
            let t = Instant::now();
            let mut round = 0u64;
            while written < total {
                let batch: Vec<PutRecordInput<'_>> =
                    keys.iter().map(|k| PutRecordInput::new(k, &data)).collect();
                e.put_records("big", &batch).unwrap();
                written += 500 * 1024;
                round += 1;
                if recycle && round.is_multiple_of(200) {
                    e.enforce_retention().unwrap();
                }
                if round.is_multiple_of(2000) {
                    eprintln!("{} MiB", written >> 20);
                }
            }
            println!(
                "filled {} GiB in {shards} shards in {:.1} s; aborting without a clean stop",
                gib,
                t.elapsed().as_secs_f64()
            );
            std::process::abort();
        }
        Some("open") => {
            let mut opts = EngineOptions {
                retention_check_interval_ms: 0,
                ..EngineOptions::default()
            };
            // Kept files from a `recycle` fill stay kept (no removals timed).
            opts.log.recycle_segments_max = 2;
            opts.journal_small_appends = journal_from_env();
            let t = Instant::now();
            let e = Engine::open(dir, opts).unwrap();
            let opened = t.elapsed();
            e.put_record("big", PutRecordInput::new("after-crash", b"x"))
                .unwrap();
            let first_write = t.elapsed();
            println!(
                "open after a crash: engine open {:.0} ms, first durable write acknowledged at {:.0} ms",
                opened.as_secs_f64() * 1000.0,
                first_write.as_secs_f64() * 1000.0
            );
            // Crash again, so that every run measures an open after a crash.
            std::process::abort();
        }
        _ => panic!("{usage}"),
    }
}

/// `SHARDLOG_JOURNAL=true` fills and opens with the engine's journal (the
/// fill's batches put about 5 KiB per shard, so they go through it; an
/// open after such a fill redoes what the journal holds).
fn journal_from_env() -> bool {
    std::env::var("SHARDLOG_JOURNAL").is_ok_and(|v| v == "true")
}

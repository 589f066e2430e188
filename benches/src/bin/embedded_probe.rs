//! Durable bandwidth of the embedded engine (no HTTP): W writer threads put
//! batches of 100 × 1 KiB records into a stream of S shards for a number of
//! seconds, every put acknowledged only after fdatasync; prints MiB/s of
//! record data. Each writer keeps to one partition key, so each batch goes
//! to one shard and is made durable by that shard's group commit.
//!
//! Usage: `cargo run --release -p shardlog-benches --bin embedded_probe -- [DIR] [WRITERS] [SHARDS] [SECONDS] [CACHE_WINDOW_MIB|keep] [RECYCLE CAP_MIB]`
//! (`CACHE_WINDOW_MIB` sets `LogOptions::cache_window_bytes`: `keep` leaves
//! every written page in the page cache; without it the engine's default
//! holds). With `RECYCLE CAP_MIB` the run measures a steady state of
//! retention: the stream keeps at most `CAP_MIB` of data (a byte cap,
//! enforced every 100 ms), each shard keeps up to `RECYCLE` removed segment
//! files for reuse (`LogOptions::recycle_segments_max`; 0 unlinks them),
//! and the clock starts only once the stream has filled its cap and
//! retention has removed a segment of every shard. `SHARDLOG_SHARE_FLUSHES=true`
//! turns on `EngineOptions::share_flushes_across_shards` (off by default);
//! `SHARDLOG_RECORDS_PER_PUT=N` puts N records per call instead of 100;
//! `SHARDLOG_JOURNAL=true` turns on `EngineOptions::journal_small_appends`;
//! `SHARDLOG_IN_FLIGHT=N` (N > 1) has each writer keep N puts in flight
//! through `Engine::put_records_durable` (each written at once, awaited in
//! order), as a producer that pipelines would, instead of one blocking
//! `put_records` at a time. `SHARDLOG_PROBE_JSON=1` adds a last line with
//! the figures as one JSON object (for `benches/targets.sh`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use shardlog_stream::{CreateStreamOptions, Engine, EngineOptions, PutRecordInput};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let base = args
        .get(1)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let writers: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(16);
    let shards: u32 = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(4);
    let seconds: u64 = args.get(4).and_then(|a| a.parse().ok()).unwrap_or(5);
    let cache_window_bytes: Option<u64> = match args.get(5).map(String::as_str) {
        None => EngineOptions::default().log.cache_window_bytes,
        Some("keep") => None,
        Some(mib) => Some(
            mib.parse::<u64>()
                .expect("CACHE_WINDOW_MIB is a number or `keep`")
                << 20,
        ),
    };
    let recycle: Option<(usize, u64)> = match (args.get(6), args.get(7)) {
        (Some(n), Some(cap)) => Some((
            n.parse().expect("RECYCLE is a number"),
            cap.parse::<u64>().expect("CAP_MIB is a number") << 20,
        )),
        _ => None,
    };
    // SHARDLOG_RECORDS_PER_PUT sets the batch (100 by default).
    let per_put: usize = std::env::var("SHARDLOG_RECORDS_PER_PUT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let in_flight: usize = std::env::var("SHARDLOG_IN_FLIGHT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
        .max(1);
    let tmp = tempfile::tempdir_in(&base).expect("temporary directory");
    let engine = Engine::open(
        tmp.path(),
        EngineOptions {
            retention_check_interval_ms: 0,
            log: shardlog_segment::LogOptions {
                cache_window_bytes,
                recycle_segments_max: recycle.map_or(0, |(n, _)| n),
                ..EngineOptions::default().log
            },
            // SHARDLOG_SHARE_FLUSHES=true measures with shared flushes.
            share_flushes_across_shards: std::env::var("SHARDLOG_SHARE_FLUSHES").is_ok_and(|v| v == "true"),
            // SHARDLOG_JOURNAL=true measures with the engine's journal.
            journal_small_appends: std::env::var("SHARDLOG_JOURNAL").is_ok_and(|v| v == "true"),
            // SHARDLOG_SYNC_THREADS=N sizes the sync pool (0, the default,
            // lets the machine's cores choose).
            sync_threads: std::env::var("SHARDLOG_SYNC_THREADS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            ..EngineOptions::default()
        },
    )
    .expect("open engine");
    engine
        .create_stream(
            "bw",
            shards,
            CreateStreamOptions {
                retention_bytes_max: recycle.map(|(_, cap)| cap),
                ..CreateStreamOptions::default()
            },
        )
        .expect("create stream");
    let data = vec![0x5Au8; 1024];
    let stop = AtomicBool::new(false);
    let records = AtomicU64::new(0);
    let warm = AtomicBool::new(recycle.is_none());
    let mut started = Instant::now();
    let mut before = shardlog_segment::stats::snapshot();
    let mut cpu_before = Cpu::now();
    std::thread::scope(|s| {
        if recycle.is_some() {
            let (engine, stop, warm) = (&engine, &stop, &warm);
            s.spawn(move || {
                let mut removed = 0;
                while !stop.load(Ordering::Relaxed) {
                    removed += engine.enforce_retention().expect("retention");
                    if removed >= shards as usize {
                        warm.store(true, Ordering::Release);
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            });
        }
        for w in 0..writers {
            let (engine, data, stop, records) = (&engine, &data, &stop, &records);
            s.spawn(move || {
                let key = format!("writer-{w}");
                let batch: Vec<PutRecordInput<'_>> =
                    (0..per_put).map(|_| PutRecordInput::new(&key, data)).collect();
                if in_flight == 1 {
                    while !stop.load(Ordering::Relaxed) {
                        let out = engine.put_records("bw", &batch).expect("put");
                        assert!(out.iter().all(|r| r.is_ok()), "a record failed");
                        records.fetch_add(per_put as u64, Ordering::Relaxed);
                    }
                    return;
                }
                // Pipelined: the oldest put is awaited once `in_flight` are
                // written. One partition key, so each batch is one shard's
                // group and its future needs no runtime (the sync pool
                // wakes this thread).
                let mut queue = std::collections::VecDeque::new();
                loop {
                    let stopping = stop.load(Ordering::Relaxed);
                    if !stopping && queue.len() < in_flight {
                        queue.push_back(Box::pin(engine.put_records_durable("bw", &batch).expect("put")));
                        continue;
                    }
                    let Some(oldest) = queue.pop_front() else { break };
                    let out = block_on(oldest).expect("put");
                    assert!(out.iter().all(|r| r.is_ok()), "a record failed");
                    records.fetch_add(per_put as u64, Ordering::Relaxed);
                }
            });
        }
        if recycle.is_some() {
            let warming = Instant::now();
            while !warm.load(Ordering::Acquire) {
                std::thread::sleep(Duration::from_millis(20));
            }
            println!(
                "warm-up: {:.1} s, {} records, until retention removed a segment per shard",
                warming.elapsed().as_secs_f64(),
                records.load(Ordering::Relaxed)
            );
            before = shardlog_segment::stats::snapshot();
            records.store(0, Ordering::Relaxed);
            started = Instant::now();
            cpu_before = Cpu::now();
        }
        std::thread::sleep(Duration::from_secs(seconds));
        stop.store(true, Ordering::Relaxed);
    });
    let secs = started.elapsed().as_secs_f64();
    let cpu = Cpu::now().since(&cpu_before);
    let n = records.load(Ordering::Relaxed);
    // How the group commit went: the syncs, their mean time and the records
    // each made durable (the segment crate's process-wide counters, less
    // what the warm-up counted).
    let mut stats = shardlog_segment::stats::snapshot();
    stats.fsync_seconds.count -= before.fsync_seconds.count;
    stats.fsync_seconds.sum -= before.fsync_seconds.sum;
    stats.group_commit_records.count -= before.group_commit_records.count;
    stats.group_commit_records.sum -= before.group_commit_records.sum;
    if let Some((n, cap)) = recycle {
        println!(
            "retention: cap {} MiB, {n} files kept per shard, {} segments started in kept files",
            cap >> 20,
            stats.segments_reused - before.segments_reused
        );
    }
    let syncs = stats.fsync_seconds.count.max(1);
    let per_group = stats.group_commit_records.sum / stats.group_commit_records.count.max(1) as f64;
    println!(
        "{writers} writers ({in_flight} puts in flight each), {shards} shards, cache window {}, {per_put} x 1 KiB per put, sync always: {:.0} MiB/s ({:.0} records/s, {n} records in {secs:.1} s)",
        cache_window_bytes.map_or("keep".to_string(), |b| format!("{} MiB", b >> 20)),
        n as f64 / 1024.0 / secs,
        n as f64 / secs
    );
    println!(
        "group commit: {:.0} syncs/s, mean fdatasync {:.0} us, {:.1} records ({:.0} KiB) per group",
        syncs as f64 / secs,
        stats.fsync_seconds.sum / syncs as f64 * 1e6,
        per_group,
        per_group * 1077.0 / 1024.0
    );
    let gib = n as f64 * 1024.0 / f64::from(1u32 << 30);
    println!(
        "CPU: this process {:.2} s per GiB ({:.2} of the machine's cores), the machine {:.0}% busy and {:.0}% waiting on I/O",
        cpu.process_seconds / gib.max(f64::MIN_POSITIVE),
        cpu.process_seconds / secs,
        cpu.busy_share * 100.0,
        cpu.iowait_share * 100.0
    );
    if std::env::var("SHARDLOG_PROBE_JSON").is_ok_and(|v| v == "1") {
        let figures = serde_json::json!({
            "writers": writers,
            "shards": shards,
            "puts_in_flight_per_writer": in_flight,
            "records_per_put": per_put,
            "seconds": secs,
            "records": n,
            "mib_per_second": n as f64 / 1024.0 / secs,
            "records_per_second": n as f64 / secs,
            "syncs_per_second": syncs as f64 / secs,
            "mean_fdatasync_us": stats.fsync_seconds.sum / syncs as f64 * 1e6,
            "records_per_group": per_group,
            "process_cpu_seconds_per_gib": cpu.process_seconds / gib.max(f64::MIN_POSITIVE),
            "machine_busy_share": cpu.busy_share,
            "machine_iowait_share": cpu.iowait_share,
        });
        println!("{figures}");
    }
}

/// CPU time so far: this process's (`/proc/self/stat`) and the machine's
/// (`/proc/stat`), so that a run can say what each GiB made durable cost.
struct Cpu {
    process_ticks: u64,
    /// Machine-wide ticks: all, idle, waiting on I/O.
    machine: [u64; 3],
}

/// [`Cpu`] between two points of time.
struct CpuSpent {
    process_seconds: f64,
    /// Share of the machine's CPU time that was neither idle nor waiting.
    busy_share: f64,
    iowait_share: f64,
}

impl Cpu {
    fn now() -> Cpu {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        // The fields after the command name, which is in parentheses;
        // utime and stime are the line's fields 14 and 15.
        let rest = stat.rsplit(')').next().unwrap_or("");
        let f: Vec<u64> = rest.split_whitespace().filter_map(|x| x.parse().ok()).collect();
        let process_ticks = f.get(10).copied().unwrap_or(0) + f.get(11).copied().unwrap_or(0);
        let all = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let cpu: Vec<u64> = all
            .lines()
            .next()
            .unwrap_or("")
            .split_whitespace()
            .skip(1)
            .filter_map(|x| x.parse().ok())
            .collect();
        let machine = [
            cpu.iter().sum(),
            cpu.get(3).copied().unwrap_or(0),
            cpu.get(4).copied().unwrap_or(0),
        ];
        Cpu {
            process_ticks,
            machine,
        }
    }

    fn since(&self, before: &Cpu) -> CpuSpent {
        // Both files count in clock ticks of 10 ms (USER_HZ).
        let total = self.machine[0].saturating_sub(before.machine[0]).max(1) as f64;
        let idle = self.machine[1].saturating_sub(before.machine[1]) as f64;
        let iowait = self.machine[2].saturating_sub(before.machine[2]) as f64;
        CpuSpent {
            process_seconds: self.process_ticks.saturating_sub(before.process_ticks) as f64 / 100.0,
            busy_share: (total - idle - iowait) / total,
            iowait_share: iowait / total,
        }
    }
}

/// Runs a future to completion on this thread (its waker unparks it).
fn block_on<F: std::future::Future>(fut: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(std::sync::Arc::new(Unpark(std::thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    loop {
        if let std::task::Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}

//! Measures the raw durable-write limits of the disk under a directory, the
//! figures every storage benchmark in docs/PERFORMANCE.md is set beside:
//!
//! 1. sequential 1 MiB writes + fdatasync into a growing file (MiB/s);
//! 2. the same into already-allocated (previously written) space (MiB/s);
//! 3. 1 KiB append + fdatasync into a growing file (operations/s, p50/p99);
//! 4. 1 KiB overwrite + fdatasync into allocated space (operations/s);
//! 5. 1 MiB writes + fdatasync into space reserved by `fallocate` but never
//!    written (MiB/s);
//! 6. 1 KiB append + fdatasync with 4 and 8 files in parallel, one thread per
//!    file (operations/s): the device overlaps syncs of different files, and
//!    a stream's shards are different files, so this is the limit beside the
//!    one-record-per-request target;
//! 7. 1 MiB writes + fdatasync with 4 files in parallel, growing and into
//!    allocated space (MiB/s): the limit beside the embedded 4-shard target;
//! 8. 1 KiB append + fdatasync with 4 files in parallel into `fallocate`d
//!    space, as a shard's preallocated segment takes them, and the same with
//!    zeros written 256 KiB steps ahead of the appends, as the segment writer
//!    does while its syncs are small (operations/s);
//! 9. 1 MiB writes + fdatasync with 4 files in parallel into `fallocate`d
//!    space, dropping the written pages from the page cache 32 MiB behind
//!    the writes, as a log with a cache window does (MiB/s). Beside row 7's
//!    `fallocate`d figure it shows what new page-cache pages cost: on a
//!    virtual machine whose free memory the host has taken back, each new
//!    page faults in the host, so the figures depend on how much of the
//!    memory was touched before (printed first: `MemFree`).
//! 10. 1 KiB overwrites of allocated space in 4 files, a thread per file:
//!     each `fdatasync`ing its own file, against each going through one
//!     `FlushCoordinator` as shards sharing flushes do (a write meeting a
//!     flush in flight is written back with `sync_file_range` and waits for
//!     the next flush); with the process's CPU time per write and the
//!     flushes per write.
//! 11. 400 KiB writes + fdatasync with 4 files in parallel into allocated
//!     space (MiB/s): the embedded probe's 16 writers of 100 KiB over 4
//!     shards, grouped perfectly, four writers' batches per sync per file.
//!
//! Usage: `cargo run --release -p shardlog-benches --bin rawdisk [DIR] [bandwidth SECONDS | limits SECONDS | direct SECONDS]`
//!
//! With `bandwidth SECONDS` only rows 7 (allocated) and 11 run, each for
//! that long rather than 3 s: the figures beside an embedded-probe run of
//! the same length, alternated with it (a virtual disk's rate drifts from
//! one minute to the next).
//!
//! With `limits SECONDS` rows 7 (allocated), 11 and 6 (4 files) run, each
//! for that long, and one JSON object is printed with their figures: the
//! raw limits `benches/targets.sh` sets beside each issue-8 target.
//!
//! With `direct SECONDS` rows 7 (allocated) and 11 run twice each, through
//! the page cache and with `O_DIRECT` (aligned buffers, the same allocated
//! files), with the process's CPU seconds per GiB: what skipping the copy
//! into the page cache would give a writer on this machine.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

fn main() -> std::io::Result<()> {
    let dir = std::env::args()
        .nth(1)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let tmp = tempfile::tempdir_in(&dir)?;
    let args: Vec<String> = std::env::args().collect();
    if args.get(2).map(String::as_str) == Some("bandwidth") {
        let seconds: u64 = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(8);
        let (mib_1m, mib_400k) = bandwidth_rows(tmp.path(), Duration::from_secs(seconds))?;
        println!("1 MiB write + fdatasync, 4 files in parallel, allocated, {seconds} s: {mib_1m:6.0} MiB/s");
        println!(
            "400 KiB write + fdatasync, 4 files in parallel, allocated, {seconds} s: {mib_400k:6.0} MiB/s"
        );
        return Ok(());
    }
    if args.get(2).map(String::as_str) == Some("direct") {
        let seconds: u64 = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(5);
        let run = Duration::from_secs(seconds);
        for block in [1usize << 20, 400 << 10] {
            for direct in [false, true] {
                let (ops, latency, cpu) =
                    parallel_io(tmp.path(), 4, block, Some(Space::Written), run, direct)?;
                let mib_s = ops * block as f64 / (1 << 20) as f64;
                let cpu_per_gib = cpu / (mib_s * seconds as f64 / 1024.0);
                println!(
                    "{} KiB write + fdatasync, 4 files, allocated, {}: {mib_s:6.0} MiB/s, {cpu_per_gib:.2} CPU s per GiB, {latency}",
                    block >> 10,
                    if direct { "O_DIRECT" } else { "buffered" }
                );
            }
        }
        return Ok(());
    }
    if args.get(2).map(String::as_str) == Some("limits") {
        let seconds: u64 = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(5);
        let run = Duration::from_secs(seconds);
        let (mib_1m, mib_400k) = bandwidth_rows(tmp.path(), run)?;
        let (ops_1k, latency) = parallel_for(tmp.path(), 4, 1024, None, run)?;
        let limits = serde_json::json!({
            "seconds": seconds,
            "write_1mib_fdatasync_4_files_allocated_mib_per_second": mib_1m,
            "write_400kib_fdatasync_4_files_allocated_mib_per_second": mib_400k,
            "append_1kib_fdatasync_4_files_ops_per_second": ops_1k,
            "append_1kib_fdatasync_4_files_latency_us": {
                "p50": latency.p50_us,
                "p99": latency.p99_us,
                "p99.9": latency.p999_us,
                "max": latency.max_us,
            },
        });
        println!("{limits}");
        return Ok(());
    }
    // New page-cache pages cost more while the memory is untouched (see row
    // 9), so the figures below depend on it.
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    for line in meminfo
        .lines()
        .filter(|l| l.starts_with("MemTotal") || l.starts_with("MemFree"))
    {
        println!("{}", line.split_whitespace().collect::<Vec<_>>().join(" "));
    }
    let path = tmp.path().join("raw.bin");
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)?;

    let block = vec![0xA5u8; 1 << 20];
    let total_mib = 256u64;
    let t = Instant::now();
    for i in 0..total_mib {
        file.write_all_at(&block, i << 20)?;
        file.sync_data()?;
    }
    let growing = total_mib as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    for i in 0..total_mib {
        file.write_all_at(&block, i << 20)?;
        file.sync_data()?;
    }
    let allocated = total_mib as f64 / t.elapsed().as_secs_f64();
    println!("1 MiB write + fdatasync, growing file:     {growing:8.0} MiB/s");
    println!("1 MiB write + fdatasync, allocated space:  {allocated:8.0} MiB/s");

    // Space reserved with fallocate but never written: the extents are
    // "unwritten", and each write that lands in one changes metadata that
    // fdatasync must also write.
    let f3 = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(tmp.path().join("fallocated.bin"))?;
    rustix::fs::fallocate(&f3, rustix::fs::FallocateFlags::empty(), 0, total_mib << 20)?;
    f3.sync_all()?;
    let t = Instant::now();
    for i in 0..total_mib {
        f3.write_all_at(&block, i << 20)?;
        f3.sync_data()?;
    }
    let fallocated = total_mib as f64 / t.elapsed().as_secs_f64();
    println!("1 MiB write + fdatasync, fallocated space: {fallocated:8.0} MiB/s");

    let small = vec![0x5Au8; 1024];
    let f2 = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(tmp.path().join("small.bin"))?;
    let n = 3000u64;
    let mut lat = Vec::with_capacity(n as usize);
    let t = Instant::now();
    for i in 0..n {
        let s = Instant::now();
        f2.write_all_at(&small, i * 1024)?;
        f2.sync_data()?;
        lat.push(s.elapsed());
    }
    report(
        "1 KiB append + fdatasync, growing file:   ",
        n,
        t.elapsed(),
        &mut lat,
    );
    lat.clear();
    let t = Instant::now();
    for i in 0..n {
        let s = Instant::now();
        f2.write_all_at(&small, i * 1024)?;
        f2.sync_data()?;
        lat.push(s.elapsed());
    }
    report(
        "1 KiB write + fdatasync, allocated space: ",
        n,
        t.elapsed(),
        &mut lat,
    );

    for files in [4, 8] {
        let (ops, latency) = parallel_for(tmp.path(), files, 1024, None, Duration::from_secs(3))?;
        println!("1 KiB append + fdatasync, {files} files in parallel: {ops:8.0} ops/s  {latency}");
    }
    let ops = parallel(tmp.path(), 4, 1024, Some(Space::Fallocated))?;
    println!("1 KiB append + fdatasync, 4 files in parallel, fallocated: {ops:8.0} ops/s");
    let ops = parallel(tmp.path(), 4, 1024, Some(Space::ZerosAhead))?;
    println!("1 KiB append + fdatasync, 4 files in parallel, zeros ahead: {ops:7.0} ops/s");
    let ops = parallel(tmp.path(), 4, 1 << 20, None)?;
    println!("1 MiB write + fdatasync, 4 files in parallel, growing:   {ops:8.0} MiB/s");
    let ops = parallel(tmp.path(), 4, 1 << 20, Some(Space::Fallocated))?;
    println!("1 MiB write + fdatasync, 4 files in parallel, fallocated: {ops:7.0} MiB/s");
    let ops = parallel(tmp.path(), 4, 1 << 20, Some(Space::Written))?;
    println!("1 MiB write + fdatasync, 4 files in parallel, allocated: {ops:8.0} MiB/s");
    let ops = parallel(tmp.path(), 4, 1 << 20, Some(Space::FallocatedDropBehind))?;
    println!("1 MiB write + fdatasync, 4 files in parallel, fallocated, pages dropped 32 MiB behind: {ops:7.0} MiB/s");
    for shared in [false, true] {
        let (ops, cpu_us, flushes) = flush_sharing(tmp.path(), shared)?;
        let how = if shared {
            "shared flushes"
        } else {
            "an fdatasync each"
        };
        println!(
            "1 KiB overwrite, 4 files in parallel, {how}: {ops:8.0} writes/s, {cpu_us:5.1} us CPU and {flushes:.2} flushes per write"
        );
    }
    // The embedded probe's shape: 16 writers of 100 KiB over 4 shards. A
    // perfect group commit syncs each shard's 4 writers at once, 400 KiB per
    // fdatasync per file, so this is the most that shape can reach on the
    // device; row 7's 1 MiB figure needs more bytes in flight than 16
    // writers of 100 KiB hold.
    let ops = parallel(tmp.path(), 4, 400 << 10, Some(Space::Written))?;
    let mib = ops * 400.0 / 1024.0;
    println!("400 KiB write + fdatasync, 4 files in parallel, allocated: {mib:6.0} MiB/s");
    Ok(())
}

/// Rows 7 (allocated) and 11, each for `run`: MiB/s of 1 MiB writes and of
/// 400 KiB writes, each + `fdatasync`, 4 files in parallel.
fn bandwidth_rows(dir: &Path, run: Duration) -> std::io::Result<(f64, f64)> {
    let (mib_1m, _) = parallel_for(dir, 4, 1 << 20, Some(Space::Written), run)?;
    let (ops_400k, _) = parallel_for(dir, 4, 400 << 10, Some(Space::Written), run)?;
    Ok((mib_1m, ops_400k * 400.0 / 1024.0))
}

/// This process's user and system CPU time so far, in seconds
/// (`/proc/self/stat`, in clock ticks of 10 ms).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The fields after the command name, which is in parentheses.
    let rest = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<u64> = rest.split_whitespace().filter_map(|x| x.parse().ok()).collect();
    // utime and stime are fields 14 and 15 of the line, 11 and 12 here.
    (f.get(10).copied().unwrap_or(0) + f.get(11).copied().unwrap_or(0)) as f64 / 100.0
}

/// Row 10: 1 KiB overwrites of written, synced space in 4 files for three
/// seconds; returns writes per second, CPU µs per write and flushes
/// (`fdatasync`s) per write.
fn flush_sharing(dir: &Path, shared: bool) -> std::io::Result<(f64, f64, f64)> {
    use shardlog_segment::fs::{FileHandle, FileSystem, StdFs};
    let blocks = 16 * 1024u64;
    let mut files: Vec<std::sync::Arc<dyn FileHandle>> = Vec::new();
    for i in 0..4 {
        let path = dir.join(format!("shared-{i}.bin"));
        let _ = std::fs::remove_file(&path);
        let file = StdFs.create_new(&path)?;
        let zeros = vec![0u8; 1 << 20];
        for m in 0..(blocks * 1024) >> 20 {
            file.write_all_at(&zeros, m << 20)?;
        }
        file.sync_data()?;
        files.push(file);
    }
    let stop = AtomicBool::new(false);
    let writes = AtomicU64::new(0);
    let buf = vec![0x7Eu8; 1024];
    let cpu = cpu_seconds();
    let started = Instant::now();
    let coord = shardlog_segment::FlushCoordinator::new();
    let result = std::thread::scope(|s| {
        let mut workers = Vec::new();
        for f in &files {
            let (stop, writes, buf, coord) = (&stop, &writes, &buf, &coord);
            workers.push(s.spawn(move || -> std::io::Result<()> {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let at = (n % blocks) * 1024;
                    f.write_all_at(buf, at)?;
                    if shared {
                        coord.sync_group(&**f, at, dir).map_err(std::io::Error::other)?;
                    } else {
                        f.sync_data()?;
                    }
                    n += 1;
                    writes.fetch_add(1, Ordering::Relaxed);
                }
                Ok(())
            }));
        }
        std::thread::sleep(Duration::from_secs(3));
        stop.store(true, Ordering::Relaxed);
        join_all(workers)
    });
    let secs = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu;
    for i in 0..4 {
        std::fs::remove_file(dir.join(format!("shared-{i}.bin")))?;
    }
    result?;
    let n = writes.load(Ordering::Relaxed).max(1) as f64;
    let flushes = if shared { coord.flush_count() as f64 } else { n };
    Ok((n / secs, cpu / n * 1e6, flushes / n))
}

/// The kind of space the timed writes of [`parallel`] land in.
#[derive(Clone, Copy)]
enum Space {
    /// Written and synced before the timing starts.
    Written,
    /// Reserved with `fallocate` and never written: each write converts
    /// an unwritten extent, as a shard's preallocated segment does.
    Fallocated,
    /// Reserved with `fallocate`, and zeros are written ahead of the timed
    /// writes in `ZERO_STEP_BYTES` steps (one to two steps ahead), as the
    /// segment writer does while its group syncs are small.
    ZerosAhead,
    /// Reserved with `fallocate`, and the pages written are dropped from
    /// the page cache `DROP_BEHIND_BYTES` behind the writes, as a log with
    /// a cache window drops them.
    FallocatedDropBehind,
}

/// How far behind its writes [`Space::FallocatedDropBehind`] drops pages.
const DROP_BEHIND_BYTES: u64 = 32 << 20;

/// The segment writer's zero-fill step (`ZERO_FILL_STEP_BYTES`).
const ZERO_STEP_BYTES: u64 = 256 * 1024;

impl Space {
    /// How long each file of [`parallel`] is, in blocks. Written space is
    /// rewritten round and round, so 1 GiB per file is enough. Fallocated
    /// space must not wrap into space the run has already converted: three
    /// seconds at 1,600 MiB/s over four files stay inside 2 GiB per file.
    fn blocks(self, block: usize) -> u64 {
        match self {
            Space::Written => 1024,
            Space::Fallocated | Space::ZerosAhead | Space::FallocatedDropBehind => {
                (2u64 << 30) / block as u64
            }
        }
    }
}

/// Runs one thread per file for three seconds, each writing `block` bytes
/// and then `fdatasync`ing, and returns the operations per second of all of
/// them together (MiB/s when `block` is 1 MiB). With `space`, each file
/// first gets [`Space::blocks`] blocks of space of that kind, and the
/// timed writes go round and round inside it; without, the files grow.
fn parallel(dir: &Path, files: usize, block: usize, space: Option<Space>) -> std::io::Result<f64> {
    parallel_for(dir, files, block, space, Duration::from_secs(3)).map(|(rate, _)| rate)
}

/// Percentiles of the time each write and its `fdatasync` took together.
struct Latency {
    p50_us: u64,
    p99_us: u64,
    p999_us: u64,
    max_us: u64,
}

impl std::fmt::Display for Latency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "p50 {} us  p99 {} us  p99.9 {} us  max {} us",
            self.p50_us, self.p99_us, self.p999_us, self.max_us
        )
    }
}

/// [`parallel`] for `run` rather than three seconds, with the percentiles
/// of each write and sync's time.
fn parallel_for(
    dir: &Path,
    files: usize,
    block: usize,
    space: Option<Space>,
    run: Duration,
) -> std::io::Result<(f64, Latency)> {
    parallel_io(dir, files, block, space, run, false).map(|(rate, latency, _)| (rate, latency))
}

/// [`parallel_for`], with the timed writes made through a second handle
/// opened with `O_DIRECT` when `direct` is set (the space is still prepared
/// through the page cache and synced first); also returns the process's
/// CPU seconds during the timed writes.
fn parallel_io(
    dir: &Path,
    files: usize,
    block: usize,
    space: Option<Space>,
    run: Duration,
    direct: bool,
) -> std::io::Result<(f64, Latency, f64)> {
    let times = std::sync::Mutex::new(Vec::<u64>::new());
    let rewrite_blocks = space.map(|s| s.blocks(block));
    let stop = AtomicBool::new(false);
    let ops = AtomicU64::new(0);
    // O_DIRECT wants the buffer aligned to the logical block size: take an
    // aligned window of a larger vector.
    let backing = vec![0x3Cu8; block + 4096];
    let skip = backing.as_ptr().align_offset(4096);
    let buf = &backing[skip..skip + block];
    let mut handles = Vec::with_capacity(files);
    for i in 0..files {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.join(format!("parallel-{i}.bin")))?;
        match space {
            None => {}
            Some(Space::Written) => {
                for b in 0..Space::Written.blocks(block) {
                    file.write_all_at(buf, b * block as u64)?;
                }
            }
            Some(space @ (Space::Fallocated | Space::ZerosAhead | Space::FallocatedDropBehind)) => {
                let len = space.blocks(block) * block as u64;
                rustix::fs::fallocate(&file, rustix::fs::FallocateFlags::empty(), 0, len)?;
            }
        }
        file.sync_all()?;
        let file = if direct {
            use std::os::unix::fs::OpenOptionsExt;
            OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(rustix::fs::OFlags::DIRECT.bits() as i32)
                .open(dir.join(format!("parallel-{i}.bin")))?
        } else {
            file
        };
        handles.push(file);
    }
    let started = Instant::now();
    let cpu_before = cpu_seconds();
    let result = std::thread::scope(|s| {
        let workers: Vec<_> = handles
            .iter()
            .map(|file| {
                let (stop, ops, times) = (&stop, &ops, &times);
                s.spawn(move || -> std::io::Result<()> {
                    let mut mine = Vec::new();
                    let mut n = 0u64;
                    let mut zeroed = 0u64;
                    let zeros = vec![0u8; 2 * ZERO_STEP_BYTES as usize];
                    while !stop.load(Ordering::Relaxed) {
                        let slot = rewrite_blocks.map_or(n, |blocks| n % blocks);
                        let at = slot * buf.len() as u64;
                        let end = at + buf.len() as u64;
                        if matches!(space, Some(Space::ZerosAhead)) && end > zeroed {
                            let to = (end / ZERO_STEP_BYTES + 2) * ZERO_STEP_BYTES;
                            file.write_all_at(&zeros[..(to - end) as usize], end)?;
                            zeroed = to;
                        }
                        let t = Instant::now();
                        file.write_all_at(buf, at)?;
                        file.sync_data()?;
                        mine.push(t.elapsed().as_micros() as u64);
                        if matches!(space, Some(Space::FallocatedDropBehind)) && at >= DROP_BEHIND_BYTES {
                            let len = std::num::NonZeroU64::new(buf.len() as u64);
                            rustix::fs::fadvise(
                                file,
                                at - DROP_BEHIND_BYTES,
                                len,
                                rustix::fs::Advice::DontNeed,
                            )?;
                        }
                        n += 1;
                        ops.fetch_add(1, Ordering::Relaxed);
                    }
                    times.lock().unwrap_or_else(|p| p.into_inner()).extend(mine);
                    Ok(())
                })
            })
            .collect();
        std::thread::sleep(run);
        stop.store(true, Ordering::Relaxed);
        join_all(workers)
    });
    let secs = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu_before;
    for i in 0..files {
        std::fs::remove_file(dir.join(format!("parallel-{i}.bin")))?;
    }
    result?;
    let mut times = times.into_inner().unwrap_or_else(|p| p.into_inner());
    times.sort_unstable();
    let at = |q: f64| {
        times
            .get(((times.len() as f64 * q) as usize).min(times.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    let latency = Latency {
        p50_us: at(0.5),
        p99_us: at(0.99),
        p999_us: at(0.999),
        max_us: times.last().copied().unwrap_or(0),
    };
    Ok((ops.load(Ordering::Relaxed) as f64 / secs, latency, cpu))
}

/// Joins writer threads; the first error (or panic) of any is the result.
fn join_all(workers: Vec<std::thread::ScopedJoinHandle<'_, std::io::Result<()>>>) -> std::io::Result<()> {
    workers.into_iter().try_for_each(|w| {
        w.join()
            .unwrap_or_else(|_| Err(std::io::Error::other("writer panicked")))
    })
}

fn report(label: &str, n: u64, total: Duration, lat: &mut [Duration]) {
    lat.sort();
    let p = |q: f64| lat[((lat.len() as f64 - 1.0) * q) as usize].as_micros();
    println!(
        "{label}{:8.0} ops/s  p50 {} us  p99 {} us",
        n as f64 / total.as_secs_f64(),
        p(0.5),
        p(0.99)
    );
}

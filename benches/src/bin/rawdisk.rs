//! Measures the raw durable-write limits of the disk under a directory, the
//! figures every storage benchmark in docs/PERFORMANCE.md is set beside:
//!
//! 1. sequential 1 MiB writes + fdatasync into a growing file (MiB/s);
//! 2. the same into already-allocated (previously written) space (MiB/s);
//! 3. 1 KiB append + fdatasync into a growing file (operations/s, p50/p99);
//! 4. 1 KiB overwrite + fdatasync into allocated space (operations/s);
//! 5. 1 MiB writes + fdatasync into space reserved by `fallocate` but never
//!    written (MiB/s).
//!
//! Usage: `cargo run --release -p shardlog-benches --bin rawdisk [DIR]`

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

fn main() -> std::io::Result<()> {
    let dir = std::env::args()
        .nth(1)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let tmp = tempfile::tempdir_in(&dir)?;
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
    Ok(())
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

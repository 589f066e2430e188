//! The floor of a durable single-record put over HTTP on this machine: the
//! least any Kinesis-compatible server could do per PutRecord, measured with
//! the same load generator (`shardlog bench`) on the same two cores.
//!
//! It answers just enough of the API for `shardlog bench --mode put`
//! (DescribeStreamSummary, PutRecord, DeleteStream) and does nothing a real
//! server must do beyond the durable write: it does not parse the JSON,
//! check the signature, route by partition key, frame, checksum or index
//! the record. Each request body is written as it came (`pwrite`) into one
//! file whose space was written with zeros at start, so that a sync of it
//! needs no allocation, and a dedicated thread syncs every write that has
//! completed since its last `fdatasync` as one group, the group commit a
//! real server would use. A request is answered only after the sync that
//! covers its write returned.
//!
//! Its figure is therefore an upper bound for Shardlog's durable PutRecord
//! rate with the same client on the same machine: whatever Shardlog does
//! beyond this costs CPU on the same two cores. docs/PERFORMANCE.md (the
//! twenty-fourth pass) has the measurement.
//!
//! Usage: `http_floor DIR PORT never|group|dsync [FILE_MIB]`, then
//! `shardlog bench --endpoint http://127.0.0.1:PORT --batch 1 --mode put`.
//! `never` answers after the `pwrite` (no sync at all); `group` after the
//! group `fdatasync` of one sync thread (`FLOOR_SYNC_THREADS=N` runs N of
//! them, each taking whatever has been written when it is free); `dsync`
//! writes each body to an `O_DSYNC` file on a blocking thread, leaving the
//! merging of the device flushes to the block layer. On the 2-core VM of
//! the twenty-fourth pass, `group` with one thread was the fastest durable
//! mode. Counts of records and group syncs go to standard error each
//! second.

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use tokio::sync::oneshot;

/// Size of the file the bodies are written into, round robin; zeros are
/// written over all of it at start.
const FILE_MIB_DEFAULT: u64 = 512;

/// Largest request body taken: the server's default request limit.
const BODY_BYTES_MAX: usize = shardlog_server::REQUEST_BODY_BYTES_MAX;

/// Smallest file: several of the largest bodies, so that the round robin
/// over it always has room.
const FILE_BYTES_MIN: u64 = 64 << 20;
const _: () = assert!(FILE_BYTES_MIN >= 4 * BODY_BYTES_MAX as u64);

/// How a put is made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Not at all: answered after its `pwrite`. The ceiling.
    Never,
    /// By the sync thread's group `fdatasync`.
    Group,
    /// By its own `pwrite` to a file opened `O_DSYNC`, on one of the
    /// runtime's blocking threads, so that concurrent puts' device flushes
    /// may be merged by the block layer instead of by the server.
    Dsync,
}

/// What the sync thread has not synced yet: the waiters of writes that have
/// completed, each answered once an `fdatasync` that began after its write
/// returns.
#[derive(Default)]
struct Pending {
    waiters: Vec<oneshot::Sender<()>>,
}

struct Floor {
    file: File,
    file_bytes: u64,
    /// Next offset to write at (round robin over the file).
    next: AtomicU64,
    sync: Mode,
    /// Group syncs done, for the group size printed at the end.
    groups: AtomicU64,
    pending: Mutex<Pending>,
    wake: Condvar,
    sequence: AtomicU64,
}

impl std::fmt::Debug for Floor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Floor").field("sync", &self.sync).finish()
    }
}

impl Floor {
    /// Writes one body and waits until it is durable (if syncing).
    async fn put(self: &Arc<Self>, body: &[u8]) -> std::io::Result<u64> {
        let len = body.len() as u64;
        let mut at = self.next.fetch_add(len, Ordering::Relaxed) % self.file_bytes;
        if at + len > self.file_bytes {
            at = 0;
        }
        if self.sync == Mode::Dsync {
            let floor = self.clone();
            let body = body.to_vec();
            tokio::task::spawn_blocking(move || floor.file.write_at(&body, at))
                .await
                .map_err(std::io::Error::other)??;
        } else {
            self.file.write_at(body, at)?;
        }
        let seq = self.sequence.fetch_add(1, Ordering::Relaxed);
        if self.sync == Mode::Group {
            let (tx, rx) = oneshot::channel();
            {
                let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
                p.waiters.push(tx);
            }
            self.wake.notify_one();
            rx.await
                .map_err(|_| std::io::Error::other("the sync thread stopped"))?;
        }
        Ok(seq)
    }

    /// The group commit: one `fdatasync` for every write completed before it
    /// began. A failed sync ends the process; this is a measurement, and a
    /// real server would poison its writer instead.
    fn sync_loop(&self) {
        loop {
            let group = {
                let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
                while p.waiters.is_empty() {
                    p = self.wake.wait(p).unwrap_or_else(|e| e.into_inner());
                }
                std::mem::take(&mut p.waiters)
            };
            self.groups.fetch_add(1, Ordering::Relaxed);
            if let Err(e) = self.file.sync_data() {
                eprintln!("fdatasync failed: {e}");
                std::process::exit(1);
            }
            for w in group {
                let _ = w.send(());
            }
        }
    }
}

/// A Kinesis-style error answer, its message escaped as JSON.
fn error_reply(status: u16, kind: &str, message: &str) -> Response<Full<Bytes>> {
    reply(
        status,
        serde_json::json!({"__type": kind, "message": message}).to_string(),
    )
}

fn reply(status: u16, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::BAD_REQUEST);
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/x-amz-json-1.1"),
    );
    r
}

async fn handle(
    floor: Arc<Floor>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let target = req
        .headers()
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .rsplit('.')
        .next()
        .unwrap_or("")
        .to_owned();
    // Bounded as the server bounds a request, and far below the file, so
    // that a write never runs past the written space.
    let body = match http_body_util::Limited::new(req.into_body(), BODY_BYTES_MAX)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(e) => return Ok(error_reply(413, "SerializationException", &e.to_string())),
    };
    Ok(match target.as_str() {
        "PutRecord" => match floor.put(&body).await {
            Ok(seq) => reply(
                200,
                format!(
                    "{{\"ShardId\":\"shardId-000000000000\",\"SequenceNumber\":\"{}\"}}",
                    49_000_000_000_000_000_000_000_000u128 + u128::from(seq)
                ),
            ),
            Err(e) => error_reply(500, "InternalFailure", &e.to_string()),
        },
        "DescribeStreamSummary" => reply(
            200,
            "{\"StreamDescriptionSummary\":{\"StreamStatus\":\"ACTIVE\"}}".to_owned(),
        ),
        "DeleteStream" | "CreateStream" => reply(200, "{}".to_owned()),
        other => error_reply(400, "UnknownOperationException", other),
    })
}

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = || std::io::Error::other("usage: http_floor DIR PORT never|group|dsync [FILE_MIB]");
    let dir = PathBuf::from(args.next().ok_or_else(usage)?);
    let port: u16 = args.next().and_then(|p| p.parse().ok()).ok_or_else(usage)?;
    let sync = match args.next().as_deref() {
        Some("never") => Mode::Never,
        Some("group") => Mode::Group,
        Some("dsync") => Mode::Dsync,
        _ => return Err(usage()),
    };
    let sync_threads: usize = std::env::var("FLOOR_SYNC_THREADS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1);
    let file_bytes = args
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(FILE_MIB_DEFAULT)
        << 20;
    if file_bytes < FILE_BYTES_MIN {
        return Err(std::io::Error::other(format!(
            "FILE_MIB must be at least {} (the file holds many bodies of up to {BODY_BYTES_MAX} bytes)",
            FILE_BYTES_MIN >> 20
        )));
    }
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("floor.data");
    let mut file = File::options()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)?;
    // Written and synced once, so that the puts' syncs overwrite allocated,
    // written blocks and never change the file's size or extents.
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..(file_bytes >> 20) {
        file.write_all(&zeros)?;
    }
    file.sync_all()?;
    if sync == Mode::Dsync {
        use std::os::unix::fs::OpenOptionsExt;
        file = File::options()
            .write(true)
            .custom_flags(libc::O_DSYNC)
            .open(&path)?;
    }
    let floor = Arc::new(Floor {
        file,
        file_bytes,
        next: AtomicU64::new(0),
        sync,
        groups: AtomicU64::new(0),
        pending: Mutex::new(Pending::default()),
        wake: Condvar::new(),
        sequence: AtomicU64::new(0),
    });
    {
        // Cumulative counts each second on standard error, for the group
        // size of a run (the last line before the process is stopped).
        let f = floor.clone();
        std::thread::Builder::new()
            .name("floor-stats".into())
            .spawn(move || loop {
                std::thread::sleep(std::time::Duration::from_secs(1));
                eprintln!(
                    "records {} groups {}",
                    f.sequence.load(Ordering::Relaxed),
                    f.groups.load(Ordering::Relaxed)
                );
            })?;
    }
    if sync == Mode::Group {
        // More than one thread lets a sync start while another is in
        // flight (`FLOOR_SYNC_THREADS`, default 1).
        for _ in 0..sync_threads.max(1) {
            let f = floor.clone();
            std::thread::Builder::new()
                .name("floor-sync".into())
                .spawn(move || f.sync_loop())?;
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        eprintln!("http_floor listening on 127.0.0.1:{port}, sync {sync:?}");
        loop {
            let (tcp, _) = listener.accept().await?;
            tcp.set_nodelay(true)?;
            let floor = floor.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| handle(floor.clone(), req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    })
}

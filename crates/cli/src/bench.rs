//! `shardlog bench`: a load generator speaking the Kinesis API (JSON over
//! HTTP) to any endpoint, like redis-benchmark or Kafka's perf tools. It
//! puts records from many connections, replays the stream from the trim
//! horizon, and verifies that every acknowledged record comes back exactly
//! once with intact data.
//!
//! It uses a lean JSON client (reqwest) rather than the AWS SDK so that the
//! load generator, which shares the machine with the server in local runs,
//! spends as little CPU as it can.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use serde_json::{json, Value};

use crate::client::{JsonApi, RawConn};

#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Stream to use (created if missing; deleted afterwards unless --keep).
    #[arg(long, default_value = "shardlog-bench")]
    pub stream: String,
    /// Shards of the stream when it is created.
    #[arg(long, default_value_t = 4)]
    pub shards: u32,
    /// Concurrent connections (each one request at a time).
    #[arg(long, default_value_t = 8)]
    pub connections: usize,
    /// Records per request: 1 uses PutRecord, more use PutRecords (≤ 500).
    #[arg(long, default_value_t = 100)]
    pub batch: usize,
    /// Bytes of data per record (at least 17). Readers require exactly this
    /// length, so `--mode get` of a stream put earlier needs the value that
    /// put it.
    #[arg(long, default_value_t = 1024)]
    pub record_bytes: usize,
    /// How long to put, in seconds.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Stop after this many records instead (whichever comes first).
    #[arg(long)]
    pub records: Option<u64>,
    /// Distinct partition keys (0: a fresh random key per record).
    #[arg(long, default_value_t = 0)]
    pub keys: u64,
    /// Share of records (0 to 1) that use one hot partition key, so that
    /// one shard takes more than its part of the load; the rest follow
    /// `--keys`.
    #[arg(long, default_value_t = 0.0)]
    pub hot_key_share: f64,
    /// What to run: put, get (replay and verify what a previous put left),
    /// both (put, then replay), or mixed (put while one consumer per shard
    /// tails the stream from LATEST; reports end-to-end latency, from a
    /// put's send to its record's read, and verifies what the consumers
    /// saw).
    #[arg(long, default_value = "both")]
    pub mode: String,
    /// Keep the stream afterwards.
    #[arg(long)]
    pub keep: bool,
    /// A file of acknowledged records, one `ID SEQUENCE-NUMBER` line each:
    /// a put writes it, and a later `--mode get` reads it and verifies the
    /// replay against it (every acknowledged record back once, intact, with
    /// its sequence number). Without it `--mode get` can check only what
    /// the records say of themselves: intact, none read twice.
    #[arg(long)]
    pub acked_file: Option<std::path::PathBuf>,
}

/// Latency percentiles of a phase, in microseconds.
#[derive(Debug, Default, Clone)]
struct Phase {
    name: String,
    requests: u64,
    records: u64,
    bytes: u64,
    seconds: f64,
    latencies_us: Vec<u64>,
    failed_records: u64,
}

impl Phase {
    /// Adds the counts and latencies of one connection's share of a phase.
    fn absorb(&mut self, part: Phase) {
        self.requests += part.requests;
        self.records += part.records;
        self.bytes += part.bytes;
        self.failed_records += part.failed_records;
        self.latencies_us.extend(part.latencies_us);
    }

    fn pct(&self, p: f64) -> u64 {
        if self.latencies_us.is_empty() {
            return 0;
        }
        let mut v = self.latencies_us.clone();
        v.sort_unstable();
        let i = ((p / 100.0) * (v.len() - 1) as f64).round() as usize;
        v[i.min(v.len() - 1)]
    }

    fn json(&self) -> Value {
        json!({
            "phase": self.name,
            "requests": self.requests,
            "records": self.records,
            "bytes": self.bytes,
            "seconds": self.seconds,
            "records_per_second": self.records as f64 / self.seconds.max(1e-9),
            "mib_per_second": self.bytes as f64 / self.seconds.max(1e-9) / 1_048_576.0,
            "latency_us": {"p50": self.pct(50.0), "p99": self.pct(99.0), "p99.9": self.pct(99.9), "max": self.pct(100.0)},
            "failed_records": self.failed_records,
        })
    }
}

/// The data of record `id`: the id, then a pattern derived from it, so a
/// reader can check every byte.
fn payload(id: u64, len: usize) -> Vec<u8> {
    let total = len.max(17);
    let mut d = Vec::with_capacity(total);
    d.extend_from_slice(format!("{id:016x}:").as_bytes());
    // Eight bytes a step, appended as a slice: the generator shares the
    // cores with the server it measures.
    let mut x = pattern_seed(id);
    while d.len() < total {
        x = pattern_step(x);
        let take = (total - d.len()).min(8);
        d.extend_from_slice(&pattern_word(x).to_le_bytes()[..take]);
    }
    d
}

fn pattern_seed(id: u64) -> u64 {
    id.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1
}

fn pattern_step(mut x: u64) -> u64 {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x
}

/// The letters of one step of the pattern after a record's id, as the
/// little-endian word of eight bytes: a xorshift sequence seeded by the id,
/// each byte's low four bits over `a` (a division per byte made the
/// generator, not the server, the bottleneck of the benchmark). No byte
/// carries into the next: 15 + `a` is below 256.
fn pattern_word(x: u64) -> u64 {
    (x & 0x0F0F_0F0F_0F0F_0F0F) + 0x6161_6161_6161_6161
}

/// The id of a record's data when it is exactly what [`payload`] made for
/// records of `len` bytes: every byte, and the length too (a record cut
/// short, or one with bytes added after the pattern, is damage as much as a
/// changed byte is). Compares a word of eight bytes a step: the verifying reader shares the
/// cores with the server whose replay it measures (a byte-wise iterator
/// comparison, then a `memcmp` per eight bytes, took a fifth to a quarter
/// of all samples of a replay).
fn check(data: &[u8], len: usize) -> Option<u64> {
    if data.len() != len.max(17) {
        return None;
    }
    // Exactly what `payload` writes: sixteen lower-case hex digits (the
    // parser alone would also take upper case and a sign).
    let hex = data.get(..16)?;
    if !hex
        .iter()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
        || data.get(16) != Some(&b':')
    {
        return None;
    }
    let id = u64::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
    let mut x = pattern_seed(id);
    let words = data[17..].chunks_exact(8);
    let rest = words.remainder();
    for word in words {
        x = pattern_step(x);
        let got = u64::from_le_bytes(word.try_into().ok()?);
        if got != pattern_word(x) {
            return None;
        }
    }
    if !rest.is_empty() {
        x = pattern_step(x);
        if rest != &pattern_word(x).to_le_bytes()[..rest.len()] {
            return None;
        }
    }
    Some(id)
}

/// The parts of answers the load generator reads, parsed without a value
/// tree (record data stays borrowed from the response's bytes).
#[derive(serde::Deserialize)]
struct PutRecordOut {
    #[serde(rename = "SequenceNumber")]
    sequence_number: Option<String>,
}

#[derive(serde::Deserialize)]
struct PutRecordsOut {
    #[serde(rename = "Records", default)]
    records: Vec<PutRecordOut>,
}

#[derive(serde::Deserialize)]
struct GetRecordsOut<'a> {
    #[serde(rename = "Records", borrow, default)]
    records: Vec<RecordOut<'a>>,
    #[serde(rename = "NextShardIterator")]
    next_shard_iterator: Option<String>,
}

#[derive(serde::Deserialize)]
struct RecordOut<'a> {
    #[serde(rename = "Data", borrow)]
    data: std::borrow::Cow<'a, str>,
    #[serde(rename = "SequenceNumber", borrow)]
    sequence_number: std::borrow::Cow<'a, str>,
}

/// Whether record `id` uses the hot partition key: a fixed pseudo-random
/// choice per id, so that `share` of all records do.
fn is_hot(id: u64, share: f64) -> bool {
    let unit = (id.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11) as f64 / (1u64 << 53) as f64;
    share > 0.0 && unit < share
}

/// A PutRecord or PutRecords request body for records `ids`, written
/// straight into one string (base64 encoded in place).
fn put_body(stream_json: &str, ids: &[u64], args: &BenchArgs) -> String {
    use std::fmt::Write as _;
    // SIMD base64: the load generator shares the cores with the server in
    // local runs, so its CPU is taken from what it measures.
    let b64 = base64_simd::STANDARD;
    let per_record = args.record_bytes.div_ceil(3) * 4 + 64;
    let mut body = String::with_capacity(stream_json.len() + 32 + ids.len() * per_record);
    let record = |body: &mut String, id: u64| {
        body.push_str("\"PartitionKey\":\"");
        if is_hot(id, args.hot_key_share) {
            body.push_str("hot");
        } else if args.keys == 0 {
            let _ = write!(body, "k{:x}", id.wrapping_mul(0x2545_F491_4F6C_DD1D));
        } else {
            let _ = write!(body, "k{}", id % args.keys);
        }
        body.push_str("\",\"Data\":\"");
        b64.encode_append(payload(id, args.record_bytes), body);
        body.push('"');
    };
    body.push_str("{\"StreamName\":");
    body.push_str(stream_json);
    if args.batch == 1 {
        body.push(',');
        record(&mut body, ids[0]);
    } else {
        body.push_str(",\"Records\":[");
        for (i, &id) in ids.iter().enumerate() {
            if i > 0 {
                body.push(',');
            }
            body.push('{');
            record(&mut body, id);
            body.push('}');
        }
        body.push(']');
    }
    body.push('}');
    body
}

pub async fn run(
    http: reqwest::Client,
    endpoint: &str,
    region: &str,
    args: &BenchArgs,
    json_out: bool,
) -> Result<()> {
    if !(1..=500).contains(&args.batch) {
        bail!("--batch must be 1 to 500");
    }
    if args.record_bytes < 17 || args.record_bytes > 1024 * 1024 {
        bail!("--record-bytes must be 17 bytes to 1 MiB (each record carries its id)");
    }
    if !(0.0..=1.0).contains(&args.hot_key_share) {
        bail!("--hot-key-share must be 0 to 1");
    }
    if !["put", "get", "both", "mixed"].contains(&args.mode.as_str()) {
        bail!("--mode must be put, get, both or mixed");
    }
    let api = Arc::new(JsonApi::new(http, endpoint, shardlog_server::TARGET_PREFIX).signing(region));
    let stream = args.stream.clone();
    if api
        .call("DescribeStreamSummary", json!({"StreamName": stream}))
        .await
        .is_err()
    {
        api.call(
            "CreateStream",
            json!({"StreamName": stream, "ShardCount": args.shards}),
        )
        .await?;
        for _ in 0..200 {
            let d = api
                .call("DescribeStreamSummary", json!({"StreamName": stream}))
                .await?;
            if d["StreamDescriptionSummary"]["StreamStatus"] == "ACTIVE" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let mut phases = Vec::new();
    // id -> sequence number of every acknowledged record.
    let acked: Arc<Mutex<HashMap<u64, String>>> = Arc::default();
    if args.mode == "put" || args.mode == "both" {
        phases.push(put_phase(&api, args, &acked).await?);
    }
    let mut verified = None;
    if args.mode == "mixed" {
        let (mut ps, report) = mixed_phases(&api, args, &acked).await?;
        phases.append(&mut ps);
        verified = Some(report);
    }
    if args.mode != "get" {
        if let Some(path) = &args.acked_file {
            let snapshot = acked.lock().unwrap_or_else(|p| p.into_inner());
            write_acked(path, &snapshot)?;
        }
    }
    if args.mode == "get" || args.mode == "both" {
        let snapshot = if args.mode == "get" {
            match &args.acked_file {
                Some(path) => Some(read_acked(path)?),
                None => None,
            }
        } else {
            Some(acked.lock().unwrap_or_else(|p| p.into_inner()).clone())
        };
        let (phase, report) = replay_phase(&api, &stream, snapshot, args.record_bytes).await?;
        phases.push(phase);
        verified = Some(report);
    }
    if !args.keep && (args.mode == "both" || args.mode == "mixed") {
        let _ = api.call("DeleteStream", json!({"StreamName": stream})).await;
    }
    if json_out {
        println!(
            "{}",
            json!({"phases": phases.iter().map(Phase::json).collect::<Vec<_>>(), "verify": verified})
        );
    } else {
        println!(
            "{:<8} {:>9} {:>11} {:>12} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "phase", "requests", "records", "records/s", "MiB/s", "p50 µs", "p99 µs", "p99.9 µs", "max µs"
        );
        for p in &phases {
            println!(
                "{:<8} {:>9} {:>11} {:>12.0} {:>9.1} {:>9} {:>9} {:>9} {:>9}",
                p.name,
                p.requests,
                p.records,
                p.records as f64 / p.seconds.max(1e-9),
                p.bytes as f64 / p.seconds.max(1e-9) / 1_048_576.0,
                p.pct(50.0),
                p.pct(99.0),
                p.pct(99.9),
                p.pct(100.0)
            );
            if p.failed_records > 0 {
                println!("         {} records failed (not acknowledged)", p.failed_records);
            }
        }
        if let Some(v) = &verified {
            println!("verify: {v}");
        }
    }
    if let Some(v) = verified {
        if v["ok"] != true {
            bail!("verification failed: {v}");
        }
    }
    Ok(())
}

async fn put_phase(
    api: &Arc<JsonApi>,
    args: &BenchArgs,
    acked: &Arc<Mutex<HashMap<u64, String>>>,
) -> Result<Phase> {
    put_phase_timed(api, args, acked, None).await
}

/// When each request was sent: request number (`id / batch`) → µs since
/// `start`, for end-to-end latency.
#[derive(Clone)]
struct SendTimes {
    start: Instant,
    by_request: Arc<Mutex<HashMap<u64, u64>>>,
}

async fn put_phase_timed(
    api: &Arc<JsonApi>,
    args: &BenchArgs,
    acked: &Arc<Mutex<HashMap<u64, String>>>,
    sent: Option<SendTimes>,
) -> Result<Phase> {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.seconds);
    let next_id = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let limit = args.records.unwrap_or(u64::MAX);
    let mut tasks = Vec::new();
    for _ in 0..args.connections {
        let (api, acked, next_id, args, sent) = (
            api.clone(),
            acked.clone(),
            next_id.clone(),
            args.clone(),
            sent.clone(),
        );
        let stream_json = Value::from(args.stream.as_str()).to_string();
        tasks.push(tokio::spawn(async move {
            let mut p = Phase::default();
            let mut conn = api.raw_conn().await;
            while Instant::now() < deadline {
                let first = next_id.fetch_add(args.batch as u64, std::sync::atomic::Ordering::Relaxed);
                if first >= limit {
                    break;
                }
                let ids: Vec<u64> = (first..(first + args.batch as u64).min(limit)).collect();
                let body = put_body(&stream_json, &ids, &args);
                let t = Instant::now();
                if let Some(sent) = &sent {
                    let us = t.duration_since(sent.start).as_micros() as u64;
                    sent.by_request
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(first / args.batch as u64, us);
                }
                let result = if args.batch == 1 {
                    call(&api, &mut conn, "PutRecord", body).await.map(|b| {
                        let seq = serde_json::from_slice::<PutRecordOut>(&b)
                            .ok()
                            .and_then(|o| o.sequence_number);
                        vec![(ids[0], seq)]
                    })
                } else {
                    call(&api, &mut conn, "PutRecords", body).await.map(|b| {
                        let out = serde_json::from_slice::<PutRecordsOut>(&b)
                            .map(|o| o.records)
                            .unwrap_or_default();
                        ids.iter()
                            .zip(out)
                            .map(|(&id, r)| (id, r.sequence_number))
                            .collect::<Vec<_>>()
                    })
                };
                p.latencies_us.push(t.elapsed().as_micros() as u64);
                p.requests += 1;
                match result {
                    Ok(out) => {
                        let mut a = acked.lock().unwrap_or_else(|e| e.into_inner());
                        for (id, seq) in out {
                            match seq {
                                Some(s) => {
                                    a.insert(id, s);
                                    p.records += 1;
                                    p.bytes += args.record_bytes as u64;
                                }
                                None => p.failed_records += 1,
                            }
                        }
                    }
                    Err(_) => p.failed_records += ids.len() as u64,
                }
            }
            p
        }));
    }
    let mut total = Phase {
        name: "put".into(),
        ..Phase::default()
    };
    for t in tasks {
        let p = t.await.map_err(|e| anyhow!("writer task: {e}"))?;
        total.absorb(p);
    }
    total.seconds = started.elapsed().as_secs_f64();
    Ok(total)
}

/// What one shard's replay found.
#[derive(Default)]
struct ShardReplay {
    phase: Phase,
    seen: Vec<u64>,
    /// Sequence numbers of `seen`, when they are checked afterwards.
    seen_seq: Vec<String>,
    damaged: u64,
    misplaced: u64,
    /// End-to-end latency of each record read (tailing consumers).
    e2e_us: Vec<u64>,
}

async fn shard_iterator(api: &JsonApi, stream: &str, shard: &str, kind: &str) -> Result<String> {
    let v = api
        .call(
            "GetShardIterator",
            json!({"StreamName": stream, "ShardId": shard, "ShardIteratorType": kind}),
        )
        .await?;
    v["ShardIterator"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| anyhow!("GetShardIterator answered without an iterator: {v}"))
}

/// A consumer that tails a shard while the put phase runs.
struct Tail {
    /// Set once every put has been answered.
    put_done: Arc<std::sync::atomic::AtomicBool>,
    sent: SendTimes,
    batch: u64,
}

/// Idle wait of a tailing consumer after an empty GetRecords answer; it
/// doubles with each further empty answer up to the maximum, so that idle
/// shards do not take the server's time from the puts being measured.
const TAIL_IDLE_POLL: Duration = Duration::from_millis(1);
const TAIL_IDLE_POLL_MAX: Duration = Duration::from_millis(16);
/// Wait after a throttled GetRecords (a server that enforces Kinesis's
/// five reads a second per shard) before the consumer tries again.
const TAIL_THROTTLED_WAIT: Duration = Duration::from_millis(200);

/// Calls `op` over the task's own connection when it has one, else through
/// the shared client.
async fn call(api: &JsonApi, conn: &mut Option<RawConn>, op: &str, body: String) -> Result<bytes::Bytes> {
    match conn {
        Some(c) => c.call(op, body).await,
        None => api.call_raw(op, body).await,
    }
}

/// Reads one shard from its trim horizon to its end, checking every record.
async fn replay_shard(
    api: Arc<JsonApi>,
    stream: String,
    shard: String,
    acked: Option<Arc<HashMap<u64, String>>>,
    record_bytes: usize,
) -> Result<ShardReplay> {
    let it = shard_iterator(&api, &stream, &shard, "TRIM_HORIZON").await?;
    read_shard(api, it, acked, None, record_bytes).await
}

/// Reads a shard from iterator `it`, checking every record against
/// `acked` (when known up front). Without `tail` it stops at the end of the
/// shard's data; with it, it waits for more until the put phase is over and
/// a read that began after that found nothing, and measures each record's
/// end-to-end latency.
async fn read_shard(
    api: Arc<JsonApi>,
    mut it: String,
    acked: Option<Arc<HashMap<u64, String>>>,
    tail: Option<Tail>,
    record_bytes: usize,
) -> Result<ShardReplay> {
    let mut out = ShardReplay::default();
    let b64 = base64_simd::STANDARD;
    let mut data = Vec::new();
    let mut idle = TAIL_IDLE_POLL;
    let mut conn = api.raw_conn().await;
    loop {
        let put_done = tail
            .as_ref()
            .is_none_or(|t| t.put_done.load(std::sync::atomic::Ordering::Acquire));
        let t = Instant::now();
        let body = json!({"ShardIterator": it, "Limit": 10000}).to_string();
        let bytes = match call(&api, &mut conn, "GetRecords", body).await {
            Ok(b) => b,
            Err(e) if tail.is_some() && e.to_string().contains("ProvisionedThroughputExceeded") => {
                tokio::time::sleep(TAIL_THROTTLED_WAIT).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        out.phase.latencies_us.push(t.elapsed().as_micros() as u64);
        out.phase.requests += 1;
        let r: GetRecordsOut<'_> =
            serde_json::from_slice(&bytes).map_err(|e| anyhow!("GetRecords answer does not parse: {e}"))?;
        for rec in &r.records {
            data.clear();
            if b64.decode_append(rec.data.as_bytes(), &mut data).is_err() {
                out.damaged += 1;
                continue;
            }
            out.phase.records += 1;
            out.phase.bytes += data.len() as u64;
            match check(&data, record_bytes) {
                Some(id) => {
                    out.seen.push(id);
                    if let Some(acked) = &acked {
                        if acked.get(&id).is_some_and(|seq| *seq != rec.sequence_number) {
                            out.misplaced += 1;
                        }
                    } else if tail.is_some() {
                        // A tailing consumer checks sequence numbers once
                        // the puts are over; a replay without the
                        // acknowledged records has nothing to check them by.
                        out.seen_seq.push(rec.sequence_number.to_string());
                    }
                    if let Some(tail) = &tail {
                        let now = tail.sent.start.elapsed().as_micros() as u64;
                        let sent = tail
                            .sent
                            .by_request
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .get(&(id / tail.batch))
                            .copied();
                        if let Some(sent) = sent {
                            out.e2e_us.push(now.saturating_sub(sent));
                        }
                    }
                }
                None => out.damaged += 1,
            }
        }
        let empty = r.records.is_empty();
        match r.next_shard_iterator {
            // A closed shard read to its end.
            None => break,
            Some(n) => it = n,
        }
        if !empty {
            idle = TAIL_IDLE_POLL;
        } else {
            if put_done {
                break;
            }
            tokio::time::sleep(idle).await;
            idle = (idle * 2).min(TAIL_IDLE_POLL_MAX);
        }
    }
    Ok(out)
}

/// Writes the acknowledged records to `path`, one `ID SEQUENCE-NUMBER`
/// line each, for a later `--mode get --acked-file`.
fn write_acked(path: &std::path::Path, acked: &HashMap<u64, String>) -> Result<()> {
    use std::io::Write;
    let file = std::fs::File::create(path)
        .map_err(|e| anyhow!("cannot create --acked-file {}: {e}", path.display()))?;
    let mut out = std::io::BufWriter::new(file);
    let mut ids: Vec<(&u64, &String)> = acked.iter().collect();
    ids.sort_unstable();
    for (id, seq) in ids {
        writeln!(out, "{id} {seq}")?;
    }
    out.into_inner()
        .map_err(|e| anyhow!("cannot write --acked-file {}: {e}", path.display()))?
        .sync_all()
        .map_err(|e| anyhow!("cannot sync --acked-file {}: {e}", path.display()))?;
    Ok(())
}

/// Reads a file [`write_acked`] wrote.
fn read_acked(path: &std::path::Path) -> Result<HashMap<u64, String>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow!("cannot read --acked-file {}: {e}", path.display()))?;
    let mut acked = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let parsed = line.split_once(' ').and_then(|(id, seq)| {
            let seq_ok = !seq.is_empty() && seq.bytes().all(|b| b.is_ascii_digit());
            Some((id.parse::<u64>().ok()?, seq)).filter(|_| seq_ok)
        });
        let Some((id, seq)) = parsed else {
            bail!(
                "--acked-file {} line {}: expected `ID SEQUENCE-NUMBER`, found {line:?}",
                path.display(),
                n + 1
            );
        };
        acked.insert(id, seq.to_string());
    }
    Ok(acked)
}

/// Replays every shard at once (one connection each) and verifies that
/// every acknowledged record came back once, intact, with its sequence
/// number; when which records were acknowledged is not known (`None`:
/// `--mode get` without `--acked-file`), that every record read was intact
/// and none was read twice.
async fn replay_phase(
    api: &Arc<JsonApi>,
    stream: &str,
    acked: Option<HashMap<u64, String>>,
    record_bytes: usize,
) -> Result<(Phase, Value)> {
    let started = Instant::now();
    let shards = api.call("ListShards", json!({"StreamName": stream})).await?;
    let acked = acked.map(Arc::new);
    let mut tasks = Vec::new();
    for s in shards["Shards"].as_array().cloned().unwrap_or_default() {
        let sid = s["ShardId"].as_str().unwrap_or_default().to_string();
        tasks.push(tokio::spawn(replay_shard(
            api.clone(),
            stream.to_string(),
            sid,
            acked.clone(),
            record_bytes,
        )));
    }
    let mut p = Phase {
        name: "replay".into(),
        ..Phase::default()
    };
    let mut done = Vec::with_capacity(tasks.len());
    for t in tasks {
        done.push(t.await.map_err(|e| anyhow!("reader task: {e}"))??);
    }
    // The replay ends when the last shard is read; counting what was seen
    // comes after, untimed (millions of map inserts, on the cores the
    // readers of the other shards were still using).
    p.seconds = started.elapsed().as_secs_f64();
    let mut seen: HashMap<u64, u32> = HashMap::with_capacity(p.records as usize);
    let (mut damaged, mut misplaced) = (0u64, 0u64);
    for r in done {
        p.absorb(r.phase);
        damaged += r.damaged;
        misplaced += r.misplaced;
        for id in r.seen {
            *seen.entry(id).or_default() += 1;
        }
    }
    let report = verify_report(acked.as_deref(), &seen, p.records, damaged, misplaced);
    Ok((p, report))
}

/// Whether every acknowledged record was read once, intact, with its
/// sequence number. Without the acknowledged records (`None`), whether
/// every record read was intact and none was read twice; `acknowledged`,
/// `missing` and `wrong_sequence_number` are then null.
fn verify_report(
    acked: Option<&HashMap<u64, String>>,
    seen: &HashMap<u64, u32>,
    read: u64,
    damaged: u64,
    misplaced: u64,
) -> Value {
    let duplicated = seen.values().filter(|&&n| n > 1).count();
    let Some(acked) = acked else {
        return json!({
            // Nothing read proves nothing, as below.
            "ok": read > 0 && duplicated == 0 && damaged == 0,
            "checked": "integrity only: which records were acknowledged is unknown (see --acked-file)",
            "acknowledged": null,
            "read": read,
            "missing": null,
            "duplicated": duplicated,
            "damaged": damaged,
            "wrong_sequence_number": null,
        });
    };
    let missing = acked.keys().filter(|id| !seen.contains_key(id)).count();
    json!({
        // Nothing acknowledged proves nothing: a run whose every put failed
        // is not a pass.
        "ok": !acked.is_empty() && missing == 0 && duplicated == 0 && damaged == 0 && misplaced == 0,
        "acknowledged": acked.len(),
        "read": read,
        "missing": missing,
        "duplicated": duplicated,
        "damaged": damaged,
        "wrong_sequence_number": misplaced,
    })
}

/// Puts while one consumer per shard tails the stream from LATEST (taken
/// before the first put), then verifies that the consumers saw every
/// acknowledged record once. Phases: put, consume (GetRecords calls) and e2e
/// (from a put's send to its record's read, per record).
async fn mixed_phases(
    api: &Arc<JsonApi>,
    args: &BenchArgs,
    acked: &Arc<Mutex<HashMap<u64, String>>>,
) -> Result<(Vec<Phase>, Value)> {
    let shards = api.call("ListShards", json!({"StreamName": args.stream})).await?;
    let sent = SendTimes {
        start: Instant::now(),
        by_request: Arc::default(),
    };
    let put_done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut readers = Vec::new();
    for s in shards["Shards"].as_array().cloned().unwrap_or_default() {
        if s["SequenceNumberRange"]["EndingSequenceNumber"].is_string() {
            continue; // closed: nothing new arrives there
        }
        let sid = s["ShardId"].as_str().unwrap_or_default().to_string();
        let it = shard_iterator(api, &args.stream, &sid, "LATEST").await?;
        let tail = Tail {
            put_done: put_done.clone(),
            sent: sent.clone(),
            batch: args.batch as u64,
        };
        readers.push(tokio::spawn(read_shard(
            api.clone(),
            it,
            None,
            Some(tail),
            args.record_bytes,
        )));
    }
    let consume_started = Instant::now();
    let put = put_phase_timed(api, args, acked, Some(sent)).await;
    put_done.store(true, std::sync::atomic::Ordering::Release);
    let mut consume = Phase {
        name: "consume".into(),
        ..Phase::default()
    };
    let mut e2e = Phase {
        name: "e2e".into(),
        ..Phase::default()
    };
    let mut seen: HashMap<u64, u32> = HashMap::new();
    let mut read_seq: Vec<(u64, String)> = Vec::new();
    let mut damaged = 0;
    for r in readers {
        let r = r.await.map_err(|e| anyhow!("consumer task: {e}"))??;
        consume.absorb(r.phase);
        damaged += r.damaged;
        e2e.latencies_us.extend(r.e2e_us);
        for (id, seq) in r.seen.into_iter().zip(r.seen_seq) {
            *seen.entry(id).or_default() += 1;
            read_seq.push((id, seq));
        }
    }
    let put = put?;
    consume.seconds = consume_started.elapsed().as_secs_f64();
    e2e.records = consume.records;
    e2e.bytes = consume.bytes;
    e2e.seconds = consume.seconds;
    let acked = acked.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let misplaced = read_seq
        .iter()
        .filter(|(id, seq)| acked.get(id).is_some_and(|s| s != seq))
        .count() as u64;
    let report = verify_report(Some(&acked), &seen, consume.records, damaged, misplaced);
    Ok((vec![put, consume, e2e], report))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hot_key_share_picks_that_share_of_records() {
        for share in [0.0, 0.1, 0.5, 1.0] {
            let hot = (0..100_000u64).filter(|&id| is_hot(id, share)).count() as f64 / 100_000.0;
            assert!((hot - share).abs() < 0.01, "share {share}: {hot}");
        }
    }

    #[test]
    fn payloads_carry_their_id_and_any_changed_byte_is_caught() {
        for id in [0u64, 1, 42, u64::MAX] {
            for len in [1usize, 17, 18, 24, 25, 100, 1024] {
                let mut d = payload(id, len);
                assert_eq!(d.len(), len.max(17));
                assert_eq!(check(&d, len), Some(id));
                for at in 0..d.len() {
                    for bit in 0..8 {
                        d[at] ^= 1 << bit;
                        assert_ne!(
                            check(&d, len),
                            Some(id),
                            "id {id}, length {len}: bit {bit} of byte {at} changed"
                        );
                        d[at] ^= 1 << bit;
                    }
                }
            }
        }
    }

    #[test]
    fn payloads_cut_short_or_lengthened_are_caught() {
        for id in [0u64, 7, u64::MAX] {
            for len in [17usize, 18, 24, 25, 100, 1024] {
                let d = payload(id, len);
                // Every shorter prefix: a record truncated anywhere, even on
                // a step of the pattern, is not the record that was put.
                for cut in 0..d.len() {
                    assert_eq!(check(&d[..cut], len), None, "id {id}, length {len}: cut to {cut}");
                }
                // Bytes appended, whether they continue the pattern or not.
                let longer = payload(id, len + 8);
                assert_eq!(
                    check(&longer, len),
                    None,
                    "id {id}, length {len}: pattern continued"
                );
                let mut padded = d.clone();
                padded.push(0);
                assert_eq!(check(&padded, len), None, "id {id}, length {len}: a byte added");
                // And a record of another configured length is refused.
                assert_eq!(check(&d, len + 1), None);
            }
        }
    }
}

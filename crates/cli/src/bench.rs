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
    use std::io::Write as _;
    let total = len.max(17);
    let mut d = vec![0u8; total];
    // Into the buffer's first 17 bytes, which always exist.
    let _ = write!(&mut d[..17], "{id:016x}:");
    // Eight bytes a step, written in place: the generator shares the cores
    // with the server it measures (appending each word as a slice took
    // eight times the instructions).
    let seed = pattern_seed(id);
    for (i, chunk) in d[17..].chunks_mut(8).enumerate() {
        chunk.copy_from_slice(&pattern_word(seed, i as u64).to_le_bytes()[..chunk.len()]);
    }
    d
}

fn pattern_seed(id: u64) -> u64 {
    id.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5851_F42D_4C95_7F2D
}

/// Word `i` of the pattern after a record's id, as the little-endian word
/// of eight bytes: letters `a` to `p`, each byte's low four bits over `a`
/// (no byte carries into the next: 15 + `a` is below 256). Each word is a
/// function of the seed and its place alone, so a reader computes the
/// words independently and the compiler keeps several in flight; a
/// xorshift chain, each step waiting for the last, made the verifying
/// reader's check a tenth of all its samples in a replay (2026-11-28).
/// The high bits folded into the low ones make neighbouring words and
/// neighbouring ids differ in every byte's letter.
fn pattern_word(seed: u64, i: u64) -> u64 {
    let x = seed.wrapping_add(i.wrapping_add(1).wrapping_mul(0xD6E8_FEB8_6659_FD93));
    ((x ^ (x >> 28)) & 0x0F0F_0F0F_0F0F_0F0F) + 0x6161_6161_6161_6161
}

/// The id of a record's data when it is exactly what [`payload`] made for
/// records of `len` bytes: every byte, and the length too (a record cut
/// short, or one with bytes added after the pattern, is damage as much as a
/// changed byte is). Compares a word of eight bytes a step and branches
/// once at the end: the verifying reader shares the cores with the server
/// whose replay it measures (a byte-wise iterator comparison, then a
/// `memcmp` per eight bytes, took a fifth to a quarter of all samples of a
/// replay).
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
    let seed = pattern_seed(id);
    let words = data[17..].chunks_exact(8);
    let rest = words.remainder();
    let mut diff = 0u64;
    let mut i = 0u64;
    for word in words {
        let mut w = [0u8; 8];
        w.copy_from_slice(word);
        diff |= u64::from_le_bytes(w) ^ pattern_word(seed, i);
        i += 1;
    }
    if diff != 0 || rest != &pattern_word(seed, i).to_le_bytes()[..rest.len()] {
        return None;
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
    data: RawString<'a>,
    #[serde(rename = "SequenceNumber", borrow)]
    sequence_number: std::borrow::Cow<'a, str>,
}

/// The bytes of a JSON string, borrowed from the answer when it has no
/// escapes (base64 never has), taken without checking that they are UTF-8:
/// the base64 decoder that reads them refuses anything but its alphabet,
/// and the check serde_json makes for a `str` was a twentieth of the
/// verifying reader's samples in a replay.
struct RawString<'a>(std::borrow::Cow<'a, [u8]>);

impl<'de: 'a, 'a> serde::Deserialize<'de> for RawString<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for V<'a> {
            type Value = RawString<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_bytes<E>(self, v: &'de [u8]) -> std::result::Result<Self::Value, E> {
                Ok(RawString(std::borrow::Cow::Borrowed(v)))
            }
            fn visit_bytes<E>(self, v: &[u8]) -> std::result::Result<Self::Value, E> {
                Ok(RawString(std::borrow::Cow::Owned(v.to_vec())))
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> std::result::Result<Self::Value, E> {
                Ok(RawString(std::borrow::Cow::Borrowed(v.as_bytes())))
            }
            fn visit_str<E>(self, v: &str) -> std::result::Result<Self::Value, E> {
                Ok(RawString(std::borrow::Cow::Owned(v.as_bytes().to_vec())))
            }
        }
        // serde_json answers a bytes request for a JSON string with the
        // string's bytes, escapes undone, without a UTF-8 check.
        d.deserialize_bytes(V(std::marker::PhantomData))
    }
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
    let acked: Arc<Mutex<Acked>> = Arc::default();
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
            // Nothing reads the put phase's table after this: take it
            // rather than copy it.
            Some(std::mem::take(
                &mut *acked.lock().unwrap_or_else(|p| p.into_inner()),
            ))
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

async fn put_phase(api: &Arc<JsonApi>, args: &BenchArgs, acked: &Arc<Mutex<Acked>>) -> Result<Phase> {
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
    acked: &Arc<Mutex<Acked>>,
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
                                    a.insert(id, s.as_bytes());
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
    acked: Option<Arc<Acked>>,
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
    acked: Option<Arc<Acked>>,
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
            if b64.decode_append(&rec.data.0, &mut data).is_err() {
                out.damaged += 1;
                continue;
            }
            out.phase.records += 1;
            out.phase.bytes += data.len() as u64;
            match check(&data, record_bytes) {
                Some(id) => {
                    out.seen.push(id);
                    if let Some(acked) = &acked {
                        if acked
                            .get(id)
                            .is_some_and(|seq| seq != rec.sequence_number.as_bytes())
                        {
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

/// The acknowledged records: each one's sequence number, by id. The put
/// phase hands ids out from 0 in order, so a table indexed by id holds
/// them densely, their sequence numbers side by side in one buffer; a
/// verifying reader looks one up for every record it reads, and a hash map
/// of strings (a cache miss or two a record) was a tenth of its samples in
/// a replay. Ids far past the dense range (a hand-made `--acked-file`) and
/// sequence numbers longer than a span can say go to a map instead.
#[derive(Debug, Default, Clone)]
struct Acked {
    /// Per id: where its sequence number starts in `text`, shifted left by
    /// eight bits, and its length in the low eight; 0 when the id was not
    /// acknowledged (a sequence number is never empty).
    spans: Vec<u64>,
    text: Vec<u8>,
    sparse: HashMap<u64, Vec<u8>>,
    count: usize,
}

impl Acked {
    /// Ids the dense table may grow to beyond those it holds: a run's ids
    /// are dense from 0, so this is never reached by one.
    const DENSE_SLACK_IDS: u64 = 1 << 20;

    fn insert(&mut self, id: u64, seq: &[u8]) {
        let dense_limit = (self.count as u64)
            .saturating_mul(4)
            .saturating_add(Self::DENSE_SLACK_IDS);
        let fits = !seq.is_empty() && seq.len() <= usize::from(u8::MAX) && id < dense_limit;
        let had = if fits {
            let i = id as usize;
            if self.spans.len() <= i {
                self.spans.resize(i + 1, 0);
            }
            let span = ((self.text.len() as u64) << 8) | seq.len() as u64;
            self.text.extend_from_slice(seq);
            std::mem::replace(&mut self.spans[i], span) != 0 || self.sparse.remove(&id).is_some()
        } else {
            let in_dense = self.spans.get(id as usize).is_some_and(|s| *s != 0);
            if in_dense {
                self.spans[id as usize] = 0;
            }
            self.sparse.insert(id, seq.to_vec()).is_some() || in_dense
        };
        if !had {
            self.count += 1;
        }
    }

    fn get(&self, id: u64) -> Option<&[u8]> {
        match self.spans.get(id as usize) {
            Some(&span) if span != 0 => {
                let start = (span >> 8) as usize;
                Some(&self.text[start..start + (span & 0xFF) as usize])
            }
            _ if self.sparse.is_empty() => None,
            _ => self.sparse.get(&id).map(Vec::as_slice),
        }
    }

    fn len(&self) -> usize {
        self.count
    }

    fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Every acknowledged record: those of the dense table in order of
    /// id, then the others in order of id.
    fn iter(&self) -> impl Iterator<Item = (u64, &[u8])> + '_ {
        let mut sparse: Vec<(u64, &[u8])> = self.sparse.iter().map(|(id, s)| (*id, s.as_slice())).collect();
        sparse.sort_unstable_by_key(|(id, _)| *id);
        self.spans
            .iter()
            .enumerate()
            .filter(|(_, span)| **span != 0)
            .map(|(id, _)| (id as u64, self.get(id as u64).unwrap_or_default()))
            .chain(sparse)
    }
}

/// Writes the acknowledged records to `path`, one `ID SEQUENCE-NUMBER`
/// line each, for a later `--mode get --acked-file`.
fn write_acked(path: &std::path::Path, acked: &Acked) -> Result<()> {
    use std::io::Write;
    let file = std::fs::File::create(path)
        .map_err(|e| anyhow!("cannot create --acked-file {}: {e}", path.display()))?;
    let mut out = std::io::BufWriter::new(file);
    for (id, seq) in acked.iter() {
        write!(out, "{id} ")?;
        out.write_all(seq)?;
        out.write_all(b"\n")?;
    }
    out.into_inner()
        .map_err(|e| anyhow!("cannot write --acked-file {}: {e}", path.display()))?
        .sync_all()
        .map_err(|e| anyhow!("cannot sync --acked-file {}: {e}", path.display()))?;
    Ok(())
}

/// Reads a file [`write_acked`] wrote.
fn read_acked(path: &std::path::Path) -> Result<Acked> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow!("cannot read --acked-file {}: {e}", path.display()))?;
    let mut acked = Acked::default();
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
        acked.insert(id, seq.as_bytes());
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
    acked: Option<Acked>,
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
    acked: Option<&Acked>,
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
    let missing = acked.iter().filter(|(id, _)| !seen.contains_key(id)).count();
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
    acked: &Arc<Mutex<Acked>>,
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
        .filter(|(id, seq)| acked.get(*id).is_some_and(|s| s != seq.as_bytes()))
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

    /// The payload as the load generator wrote it before it wrote words in
    /// place: streams put by an older build must still verify.
    fn payload_as_first_written(id: u64, len: usize) -> Vec<u8> {
        let total = len.max(17);
        let mut d = Vec::with_capacity(total);
        d.extend_from_slice(format!("{id:016x}:").as_bytes());
        let seed = pattern_seed(id);
        let mut i = 0;
        while d.len() < total {
            let take = (total - d.len()).min(8);
            d.extend_from_slice(&pattern_word(seed, i).to_le_bytes()[..take]);
            i += 1;
        }
        d
    }

    #[test]
    fn payloads_are_byte_for_byte_what_earlier_builds_wrote() {
        for id in [0u64, 1, 42, 0xdead_beef, u64::MAX] {
            for len in [1usize, 17, 18, 24, 25, 100, 1023, 1024, 1025, 4096] {
                assert_eq!(
                    payload(id, len),
                    payload_as_first_written(id, len),
                    "id {id}, length {len}"
                );
            }
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
    fn a_payload_under_another_records_id_is_caught() {
        // The pattern depends on the id: a record's body behind another
        // record's header is damage, for neighbouring and distant ids.
        for (a, b) in [(0u64, 1u64), (41, 42), (1000, 1256), (7, u64::MAX)] {
            let (pa, pb) = (payload(a, 1024), payload(b, 1024));
            let mut spliced = pa[..17].to_vec();
            spliced.extend_from_slice(&pb[17..]);
            assert_eq!(check(&spliced, 1024), None, "body of {b} under header of {a}");
            let differing = pa[17..].iter().zip(&pb[17..]).filter(|(x, y)| x != y).count();
            assert!(
                differing > 800,
                "ids {a} and {b}: only {differing} of 1007 bytes differ"
            );
        }
    }

    #[test]
    fn acked_keeps_every_sequence_number_by_id_dense_or_not() {
        let mut a = Acked::default();
        assert!(a.is_empty());
        a.insert(2, b"200");
        a.insert(0, b"100");
        // Far past the dense range, and too long for a span: kept aside.
        a.insert(u64::MAX, b"9");
        let long = vec![b'7'; 300];
        a.insert(5, &long);
        assert_eq!(a.len(), 4);
        assert_eq!(a.get(0), Some(&b"100"[..]));
        assert_eq!(a.get(1), None);
        assert_eq!(a.get(2), Some(&b"200"[..]));
        assert_eq!(a.get(5), Some(&long[..]));
        assert_eq!(a.get(u64::MAX), Some(&b"9"[..]));
        assert_eq!(a.get(3), None);
        // A second answer for an id replaces the first and counts once,
        // whichever side each was kept on.
        a.insert(2, b"201");
        a.insert(5, b"500");
        assert_eq!(a.len(), 4);
        assert_eq!(a.get(2), Some(&b"201"[..]));
        assert_eq!(a.get(5), Some(&b"500"[..]));
        let all: Vec<(u64, Vec<u8>)> = a.iter().map(|(id, s)| (id, s.to_vec())).collect();
        assert_eq!(
            all,
            vec![
                (0, b"100".to_vec()),
                (2, b"201".to_vec()),
                (5, b"500".to_vec()),
                (u64::MAX, b"9".to_vec())
            ]
        );
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

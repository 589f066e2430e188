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
use base64::Engine as _;
use serde_json::{json, Value};

use crate::client::JsonApi;

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
    /// Bytes of data per record.
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
    /// What to run: put, get (replay and verify what a previous put left),
    /// or both.
    #[arg(long, default_value = "both")]
    pub mode: String,
    /// Keep the stream afterwards.
    #[arg(long)]
    pub keep: bool,
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
    let mut d = format!("{id:016x}:").into_bytes();
    let mut x = id.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    while d.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        d.push(b'a' + (x % 26) as u8);
    }
    d.truncate(len.max(17));
    d
}

fn check(data: &[u8]) -> Option<u64> {
    let id = u64::from_str_radix(std::str::from_utf8(data.get(..16)?).ok()?, 16).ok()?;
    (payload(id, data.len()) == data).then_some(id)
}

pub async fn run(endpoint: &str, args: &BenchArgs, json_out: bool) -> Result<()> {
    if !(1..=500).contains(&args.batch) {
        bail!("--batch must be 1 to 500");
    }
    if args.record_bytes < 17 || args.record_bytes > 1024 * 1024 {
        bail!("--record-bytes must be 17 bytes to 1 MiB (each record carries its id)");
    }
    let api = Arc::new(JsonApi::new(
        reqwest::Client::builder()
            .pool_max_idle_per_host(args.connections)
            .build()?,
        endpoint,
        shardlog_server::TARGET_PREFIX,
    ));
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
    if args.mode == "get" || args.mode == "both" {
        let snapshot = acked.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let (phase, report) = replay_phase(&api, &stream, &snapshot).await?;
        phases.push(phase);
        verified = Some(report);
    }
    if !args.keep && args.mode == "both" {
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
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.seconds);
    let next_id = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let limit = args.records.unwrap_or(u64::MAX);
    let mut tasks = Vec::new();
    for _ in 0..args.connections {
        let (api, acked, next_id, args) = (api.clone(), acked.clone(), next_id.clone(), args.clone());
        tasks.push(tokio::spawn(async move {
            let mut p = Phase::default();
            let b64 = base64::engine::general_purpose::STANDARD;
            while Instant::now() < deadline {
                let first = next_id.fetch_add(args.batch as u64, std::sync::atomic::Ordering::Relaxed);
                if first >= limit {
                    break;
                }
                let ids: Vec<u64> = (first..(first + args.batch as u64).min(limit)).collect();
                let key = |id: u64| {
                    if args.keys == 0 {
                        format!("k{:x}", id.wrapping_mul(0x2545_F491_4F6C_DD1D))
                    } else {
                        format!("k{}", id % args.keys)
                    }
                };
                let t = Instant::now();
                let result = if args.batch == 1 {
                    let id = ids[0];
                    api.call(
                        "PutRecord",
                        json!({"StreamName": args.stream, "PartitionKey": key(id), "Data": b64.encode(payload(id, args.record_bytes))}),
                    )
                    .await
                    .map(|v| vec![(id, v["SequenceNumber"].as_str().map(str::to_string))])
                } else {
                    let records: Vec<Value> = ids
                        .iter()
                        .map(|&id| json!({"PartitionKey": key(id), "Data": b64.encode(payload(id, args.record_bytes))}))
                        .collect();
                    api.call("PutRecords", json!({"StreamName": args.stream, "Records": records}))
                        .await
                        .map(|v| {
                            ids.iter()
                                .zip(v["Records"].as_array().cloned().unwrap_or_default())
                                .map(|(&id, r)| (id, r["SequenceNumber"].as_str().map(str::to_string)))
                                .collect()
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
        total.requests += p.requests;
        total.records += p.records;
        total.bytes += p.bytes;
        total.failed_records += p.failed_records;
        total.latencies_us.extend(p.latencies_us);
    }
    total.seconds = started.elapsed().as_secs_f64();
    Ok(total)
}

async fn replay_phase(api: &JsonApi, stream: &str, acked: &HashMap<u64, String>) -> Result<(Phase, Value)> {
    let started = Instant::now();
    let shards = api.call("ListShards", json!({"StreamName": stream})).await?;
    let mut p = Phase {
        name: "replay".into(),
        ..Phase::default()
    };
    let mut seen: HashMap<u64, u32> = HashMap::new();
    let mut damaged = 0u64;
    let mut misplaced = 0u64;
    let b64 = base64::engine::general_purpose::STANDARD;
    for s in shards["Shards"].as_array().cloned().unwrap_or_default() {
        let sid = s["ShardId"].as_str().unwrap_or_default().to_string();
        let mut it = api
            .call(
                "GetShardIterator",
                json!({"StreamName": stream, "ShardId": sid, "ShardIteratorType": "TRIM_HORIZON"}),
            )
            .await?["ShardIterator"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        loop {
            let t = Instant::now();
            let r = api
                .call("GetRecords", json!({"ShardIterator": it, "Limit": 10000}))
                .await?;
            p.latencies_us.push(t.elapsed().as_micros() as u64);
            p.requests += 1;
            let recs = r["Records"].as_array().cloned().unwrap_or_default();
            for rec in &recs {
                let data = b64
                    .decode(rec["Data"].as_str().unwrap_or_default())
                    .unwrap_or_default();
                p.records += 1;
                p.bytes += data.len() as u64;
                match check(&data) {
                    Some(id) => {
                        *seen.entry(id).or_default() += 1;
                        if acked
                            .get(&id)
                            .is_some_and(|seq| Some(seq.as_str()) != rec["SequenceNumber"].as_str())
                        {
                            misplaced += 1;
                        }
                    }
                    None => damaged += 1,
                }
            }
            match r["NextShardIterator"].as_str() {
                Some(n) if !recs.is_empty() => it = n.to_string(),
                _ => break,
            }
        }
    }
    p.seconds = started.elapsed().as_secs_f64();
    let missing = acked.keys().filter(|id| !seen.contains_key(id)).count();
    let duplicated = seen.values().filter(|&&n| n > 1).count();
    let report = json!({
        "ok": missing == 0 && duplicated == 0 && damaged == 0 && misplaced == 0,
        "acknowledged": acked.len(),
        "read": p.records,
        "missing": missing,
        "duplicated": duplicated,
        "damaged": damaged,
        "wrong_sequence_number": misplaced,
    });
    Ok((p, report))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_carry_their_id_and_any_changed_byte_is_caught() {
        for id in [0u64, 1, 42, u64::MAX] {
            for len in [17usize, 100, 1024] {
                let mut d = payload(id, len);
                assert_eq!(d.len(), len);
                assert_eq!(check(&d), Some(id));
                let last = d.len() - 1;
                d[last] ^= 1;
                assert_eq!(check(&d), None);
            }
        }
    }
}

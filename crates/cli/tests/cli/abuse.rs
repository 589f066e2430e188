//! Hostile traffic against a real `shardlog serve`, on loopback, bounded in
//! time: slowloris clients, a connection flood beyond the limit, and
//! malformed requests of every kind, mixed into valid writers. The server
//! must stay up, keep answering the valid writers, keep its memory bounded,
//! count the refusals, and lose nothing it acknowledged.
//!
//! `SHARDLOG_ABUSE_SECONDS=120 cargo test --release -p shardlog --test cli abuse`
//! runs it longer.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::json;
use shardlog_testkit::{env_u64, SimRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::kill9::{call, read_stream, start_with};

/// Connections the server accepts in this test; the flood goes beyond.
const CONNECTIONS_MAX: usize = 200;
const SLOWLORIS_CONNECTIONS: usize = 120;
const FLOOD_CONNECTIONS: usize = 150;
/// The server's resident memory may not pass this at any time.
const RSS_BYTES_MAX: u64 = 128 * 1024 * 1024;

fn rss_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

/// Requests that are wrong in every way a parser can be hurt.
fn malformed(rng: &mut SimRng) -> Vec<u8> {
    let json_req = |target: &str, body: &str| {
        format!(
            "POST / HTTP/1.1\r\nHost: x\r\nX-Amz-Target: {target}\r\nContent-Type: application/x-amz-json-1.1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    };
    match rng.below(10) {
        0 => (0..(rng.below(4096) + 1)).map(|_| rng.below(256) as u8).collect(),
        1 => json_req("Kinesis_20131202.PutRecords", "{\"Records\": [{\"Data\": \"AAAA\""),
        2 => json_req("Kinesis_20131202.NoSuchThing", "{}"),
        3 => json_req(
            "Kinesis_20131202.PutRecord",
            &format!("{{\"StreamName\": \"abuse\", \"Data\": \"!!!\", \"PartitionKey\": \"{}\"}}", "k".repeat(300)),
        ),
        4 => json_req("Kinesis_20131202.CreateStream", "{\"StreamName\": \"\", \"ShardCount\": -1}"),
        5 => b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\nX-Amz-Target: Kinesis_20131202.PutRecord\r\n\r\n{".to_vec(),
        6 => {
            let mut r = b"POST / HTTP/1.1\r\nHost: x\r\n".to_vec();
            for i in 0..300 {
                r.extend_from_slice(format!("X-H{i}: v\r\n").as_bytes());
            }
            r.extend_from_slice(b"\r\n");
            r
        }
        7 => {
            let mut r = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
            r.extend((0..64).map(|_| rng.below(256) as u8));
            r
        }
        8 => {
            let deep = "[".repeat(100_000);
            json_req("Kinesis_20131202.ListShards", &deep)
        }
        _ => {
            let mut r = b"POST / HTTP/1.1\r\nHost: x\r\nX-Amz-Target: Kinesis_20131202.ListStreams\r\nContent-Type: application/x-amz-cbor-1.1\r\nContent-Length: 16\r\nConnection: close\r\n\r\n".to_vec();
            r.extend((0..16).map(|_| rng.below(256) as u8));
            r
        }
    }
}

#[test]
fn hostile_traffic_mixed_with_valid_writers_loses_nothing_and_memory_stays_bounded() {
    let seconds = env_u64("SHARDLOG_ABUSE_SECONDS").unwrap_or(10);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("limits.toml");
    std::fs::write(
        &config,
        format!(
            "[limits]\nconnections_max = {CONNECTIONS_MAX}\nheader_read_timeout_ms = 1000\nbody_read_timeout_ms = 1000\nidle_timeout_ms = 6000\n"
        ),
    )
    .unwrap();
    let server = start_with(&dir.path().join("data"), &["--config", config.to_str().unwrap()]);
    let pid = server.child.id();
    let endpoint = server.endpoint.clone();
    let addr = endpoint.trim_start_matches("http://").to_string();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let client = reqwest::Client::new();
    rt.block_on(call(
        &client,
        &endpoint,
        "CreateStream",
        json!({"StreamName": "abuse", "ShardCount": 4}),
    ))
    .unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<HashMap<String, String>>> = Arc::default();
    let valid_failures = Arc::new(AtomicU64::new(0));
    let rss_max = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    rt.block_on(async {
        let mut tasks = Vec::new();
        // Valid writers, each on its own kept-alive connection.
        for w in 0..4 {
            let (stop, acked, failures, endpoint) =
                (stop.clone(), acked.clone(), valid_failures.clone(), endpoint.clone());
            tasks.push(tokio::spawn(async move {
                let client = reqwest::Client::new();
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let datas: Vec<String> = (0..20).map(|i| format!("w{w}-{n}-{i}")).collect();
                    n += 1;
                    let records: Vec<_> = datas
                        .iter()
                        .map(|d| json!({"Data": base64::engine::general_purpose::STANDARD.encode(d), "PartitionKey": d}))
                        .collect();
                    match call(&client, &endpoint, "PutRecords", json!({"StreamName": "abuse", "Records": records})).await {
                        Ok(v) => {
                            let mut a = acked.lock().unwrap();
                            for (d, r) in datas.iter().zip(v["Records"].as_array().unwrap()) {
                                if let Some(seq) = r["SequenceNumber"].as_str() {
                                    a.insert(d.clone(), seq.to_string());
                                }
                            }
                        }
                        Err(_) => {
                            failures.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }));
        }
        // Slowloris: headers trickled a byte at a time, reconnecting when cut.
        for i in 0..SLOWLORIS_CONNECTIONS {
            let (stop, addr) = (stop.clone(), addr.clone());
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let Ok(mut s) = TcpStream::connect(&addr).await else {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    };
                    if s.write_all(format!("POST / HTTP/1.1\r\nHost: x\r\nX-Slow-{i}: ").as_bytes()).await.is_err() {
                        continue;
                    }
                    while !stop.load(Ordering::Relaxed) {
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        if s.write_all(b"a").await.is_err() {
                            break;
                        }
                    }
                }
            }));
        }
        // A flood of connections beyond the limit, held open briefly.
        {
            let (stop, addr) = (stop.clone(), addr.clone());
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let mut held = Vec::new();
                    for _ in 0..FLOOD_CONNECTIONS {
                        if let Ok(s) = TcpStream::connect(&addr).await {
                            held.push(s);
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    drop(held);
                }
            }));
        }
        // Malformed requests, as fast as they are answered.
        for t in 0..4u64 {
            let (stop, addr) = (stop.clone(), addr.clone());
            tasks.push(tokio::spawn(async move {
                let mut rng = SimRng::new(0xABu64 << 8 | t);
                while !stop.load(Ordering::Relaxed) {
                    let Ok(mut s) = TcpStream::connect(&addr).await else {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    };
                    let _ = s.write_all(&malformed(&mut rng)).await;
                    let mut buf = vec![0u8; 8192];
                    let _ = tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf)).await;
                }
            }));
        }
        // The server's memory, sampled throughout.
        {
            let (stop, rss_max) = (stop.clone(), rss_max.clone());
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    rss_max.fetch_max(rss_bytes(pid), Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }));
        }
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
    });
    let elapsed = started.elapsed();

    let acked = acked.lock().unwrap().clone();
    let rss_max = rss_max.load(Ordering::Relaxed);
    let failures = valid_failures.load(Ordering::Relaxed);
    eprintln!(
        "abuse: {:.1} s, {} records acknowledged to valid writers, {failures} valid requests refused, server RSS max {} MiB",
        elapsed.as_secs_f64(),
        acked.len(),
        rss_max >> 20
    );
    assert!(
        acked.len() >= 1000,
        "valid writers were starved: {} records acknowledged",
        acked.len()
    );
    assert!(rss_max > 0, "RSS was sampled");
    assert!(
        rss_max <= RSS_BYTES_MAX,
        "server RSS reached {} MiB",
        rss_max >> 20
    );

    // The server is up and healthy, and every acknowledged record is there
    // exactly once, with the sequence number it was acknowledged with.
    let health = rt
        .block_on(async { reqwest::get(format!("{endpoint}/_health")).await?.text().await })
        .unwrap();
    assert!(health.contains("\"ok\""), "{health}");
    let got = rt.block_on(read_stream(&client, &endpoint, "abuse"));
    let mut seen = HashSet::new();
    for recs in got.values() {
        for (data, seq) in recs {
            assert!(seen.insert(data.clone()), "{data} appears twice");
            if let Some(acked_seq) = acked.get(data) {
                assert_eq!(acked_seq, seq, "{data} has a different sequence number");
            }
        }
    }
    let missing: Vec<_> = acked.keys().filter(|d| !seen.contains(*d)).take(5).collect();
    assert!(missing.is_empty(), "acknowledged records missing: {missing:?}");

    // The refusals were counted by the limit that made them.
    let metrics = rt
        .block_on(async { reqwest::get(format!("{endpoint}/metrics")).await?.text().await })
        .unwrap();
    let count = |limit: &str| -> u64 {
        let needle = format!("shardlog_limit_rejections_total{{limit=\"{limit}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&needle))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    assert!(count("connections_max") > 0, "the flood was refused and counted");
    assert!(
        count("header_read_timeout_ms") > 0,
        "slowloris clients were cut off and counted"
    );
}

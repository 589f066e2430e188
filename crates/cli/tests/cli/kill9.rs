//! Process crashes, for real: the `shardlog` server runs as a child process
//! while writers put records through the Kinesis API; the test kills it with
//! SIGKILL at a random moment, restarts it on the same data directory, and
//! checks that every acknowledged record is there, once, in order, and that
//! nothing appears that was never sent.
//!
//! This tests process crashes only: the kernel keeps whatever the process
//! wrote, synced or not. Power loss (unsynced data lost or torn) is covered by
//! the storage simulator (`shardlog-testkit`, `tests/tests/engine_model.rs`).
//!
//! `SHARDLOG_KILL_CYCLES=100 cargo test --release -p shardlog --test cli kill9`
//! runs the long version; a failing seed replays with `SHARDLOG_SEED`.

use std::collections::{BTreeMap, HashSet};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};
use shardlog_testkit::{env_u64, SimRng};

pub(crate) struct Server {
    pub(crate) child: Child,
    pub(crate) endpoint: String,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub(crate) fn start(dir: &Path) -> Server {
    start_with(dir, &[])
}

/// Whether process `pid` itself holds a listening TCP socket on `port`
/// (from /proc/net/tcp and the process's descriptors). A port picked free
/// may be taken by another test's server before ours binds it; a plain
/// connect would then reach that server, which another test may kill.
fn listens_on(pid: u32, port: u16) -> bool {
    let Ok(table) = std::fs::read_to_string("/proc/net/tcp") else {
        return false;
    };
    let want = format!(":{port:04X}");
    let inode = table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        (f.len() > 9 && f[1].ends_with(&want) && f[3] == "0A").then(|| f[9].to_string())
    });
    let Some(inode) = inode else { return false };
    let target = format!("socket:[{inode}]");
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|fds| {
            fds.flatten()
                .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l.to_string_lossy() == target))
        })
        .unwrap_or(false)
}

/// Starts `shardlog serve` on `dir` with `extra` arguments, on a free port
/// that this server itself listens on (it starts again on another port
/// when the one picked was taken meanwhile).
pub(crate) fn start_with(dir: &Path, extra: &[&str]) -> Server {
    for _ in 0..5 {
        let port = free_port();
        let mut child = Command::new(env!("CARGO_BIN_EXE_shardlog"))
            .args(["serve", "--data-dir"])
            .arg(dir)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(extra)
            .env("SHARDLOG_LOG", "warn")
            // Tests that start a server "by default" mean the binary's defaults.
            .env_remove("SHARDLOG_JOURNAL")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start shardlog serve");
        let endpoint = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if listens_on(child.id(), port) {
                return Server { child, endpoint };
            }
            if child.try_wait().ok().flatten().is_some() {
                // It could not bind (the port was taken): another port.
                break;
            }
            assert!(Instant::now() < deadline, "server did not start listening");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    panic!("shardlog serve did not start on any of 5 free ports")
}

pub(crate) async fn call(
    client: &reqwest::Client,
    endpoint: &str,
    op: &str,
    body: Value,
) -> Result<Value, String> {
    let r = client
        .post(endpoint)
        .header("x-amz-target", format!("Kinesis_20131202.{op}"))
        .header("content-type", "application/x-amz-json-1.1")
        .body(body.to_string())
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = r.status();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    if status.is_success() {
        Ok(v)
    } else {
        Err(format!("{status}: {v}"))
    }
}

async fn read_everything(
    client: &reqwest::Client,
    endpoint: &str,
) -> BTreeMap<String, Vec<(String, String)>> {
    read_stream(client, endpoint, "crash").await
}

/// Every record of `stream`, by shard: (data as text, sequence number).
pub(crate) async fn read_stream(
    client: &reqwest::Client,
    endpoint: &str,
    stream: &str,
) -> BTreeMap<String, Vec<(String, String)>> {
    let shards = call(client, endpoint, "ListShards", json!({"StreamName": stream}))
        .await
        .unwrap();
    let mut out = BTreeMap::new();
    for s in shards["Shards"].as_array().unwrap() {
        let id = s["ShardId"].as_str().unwrap().to_string();
        let mut it = call(
            client,
            endpoint,
            "GetShardIterator",
            json!({"StreamName": stream, "ShardId": id, "ShardIteratorType": "TRIM_HORIZON"}),
        )
        .await
        .unwrap()["ShardIterator"]
            .as_str()
            .unwrap()
            .to_string();
        let mut recs = Vec::new();
        loop {
            let r = call(
                client,
                endpoint,
                "GetRecords",
                json!({"ShardIterator": it, "Limit": 10000}),
            )
            .await
            .unwrap();
            let batch = r["Records"].as_array().unwrap();
            for rec in batch {
                let data = base64::engine::general_purpose::STANDARD
                    .decode(rec["Data"].as_str().unwrap())
                    .unwrap();
                recs.push((
                    String::from_utf8(data).unwrap(),
                    rec["SequenceNumber"].as_str().unwrap().to_string(),
                ));
            }
            match r["NextShardIterator"].as_str() {
                Some(n) if !batch.is_empty() => it = n.to_string(),
                _ => break,
            }
        }
        out.insert(id, recs);
    }
    out
}

/// The server as it starts by default, without the journal: each small
/// write syncs its own segment.
#[test]
fn every_acknowledged_record_survives_kill_9_of_the_server() {
    kill_9_cycles(&[], false);
}

/// The same with the journal: each restart redoes the journal the killed
/// server left into the segments before it serves (real files, the real
/// binary).
#[test]
fn every_acknowledged_record_survives_kill_9_of_a_server_with_the_journal() {
    kill_9_cycles(&["--journal", "true"], true);
}

/// Puts from six writers, SIGKILL at a random moment, restart (with
/// `extra` arguments each time), and checks of every record, for a number
/// of cycles. `journal` is whether the server must say its journal is on.
fn kill_9_cycles(extra: &[&str], journal: bool) {
    let cycles = env_u64("SHARDLOG_KILL_CYCLES").unwrap_or(4);
    let seed = env_u64("SHARDLOG_SEED").unwrap_or(0x5eed);
    eprintln!("kill -9 harness: {cycles} cycles, seed {seed} (replay with SHARDLOG_SEED={seed})");
    let mut rng = SimRng::new(seed);
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let client = reqwest::Client::new();
    // data -> (shard, sequence number) of every acknowledged put.
    let acked: Arc<Mutex<BTreeMap<String, (String, String)>>> = Arc::default();
    let sent: Arc<Mutex<HashSet<String>>> = Arc::default();
    {
        let mut s = start_with(dir.path(), extra);
        assert_eq!(
            crate::verbs::metric(&s.endpoint, "shardlog_journal_active"),
            Some(u64::from(journal)),
            "{extra:?}"
        );
        rt.block_on(call(
            &client,
            &s.endpoint,
            "CreateStream",
            json!({"StreamName": "crash", "ShardCount": 3}),
        ))
        .unwrap();
        s.child.kill().unwrap();
        s.child.wait().unwrap();
    }
    for cycle in 0..cycles {
        let mut server = start_with(dir.path(), extra);
        let endpoint = server.endpoint.clone();
        let kill_after = Duration::from_millis(100 + rng.below(400));
        let writers: Vec<_> = (0..6)
            .map(|w| {
                let (client, endpoint, acked, sent) =
                    (client.clone(), endpoint.clone(), acked.clone(), sent.clone());
                rt.spawn(async move {
                    for n in 0.. {
                        let data = format!("c{cycle}-w{w}-n{n}");
                        sent.lock().unwrap().insert(data.clone());
                        let body = json!({
                            "StreamName": "crash",
                            "PartitionKey": format!("pk-{}", n % 17),
                            "Data": base64::engine::general_purpose::STANDARD.encode(&data),
                        });
                        match call(&client, &endpoint, "PutRecord", body).await {
                            Ok(v) => {
                                let shard = v["ShardId"].as_str().unwrap().to_string();
                                let seq = v["SequenceNumber"].as_str().unwrap().to_string();
                                acked.lock().unwrap().insert(data, (shard, seq));
                            }
                            Err(_) => return,
                        }
                    }
                })
            })
            .collect();
        std::thread::sleep(kill_after);
        server.child.kill().unwrap(); // SIGKILL
        server.child.wait().unwrap();
        rt.block_on(async {
            for w in writers {
                let _ = w.await;
            }
        });
        let server = start_with(dir.path(), extra);
        let got = rt.block_on(read_everything(&client, &server.endpoint));
        let acked = acked.lock().unwrap();
        let sent = sent.lock().unwrap();
        let mut seen = HashSet::new();
        for (shard, recs) in &got {
            for (data, seq) in recs {
                assert!(
                    sent.contains(data),
                    "cycle {cycle}: {shard} holds {data:?}, which was never sent"
                );
                assert!(seen.insert(data.clone()), "cycle {cycle}: {data:?} appears twice");
                if let Some((s, q)) = acked.get(data) {
                    assert_eq!((s, q), (shard, seq), "cycle {cycle}: {data:?} moved");
                }
            }
            // Sequence numbers strictly increase within a shard.
            let mut prev: Option<u128> = None;
            for (_, seq) in recs {
                let n: u128 = seq[seq.len() - 32..].parse().unwrap();
                assert!(
                    prev.is_none_or(|p| n > p),
                    "cycle {cycle}: order broken in {shard}"
                );
                prev = Some(n);
            }
        }
        for data in acked.keys() {
            assert!(
                seen.contains(data),
                "cycle {cycle}: acknowledged record {data:?} was lost"
            );
        }
        eprintln!(
            "cycle {cycle}: killed after {kill_after:?}; {} acknowledged so far, all present",
            acked.len()
        );
        drop(server);
    }
    assert!(
        acked.lock().unwrap().len() > cycles as usize,
        "the writers made progress"
    );
}

#[test]
fn every_acknowledged_record_survives_kill_9_of_an_embedding_process() {
    use std::io::BufRead as _;
    let cycles = env_u64("SHARDLOG_KILL_CYCLES").unwrap_or(4);
    let seed = env_u64("SHARDLOG_SEED").unwrap_or(0xe1b);
    let mut rng = SimRng::new(seed);
    let dir = tempfile::tempdir().unwrap();
    let mut acked: BTreeMap<String, (String, String)> = BTreeMap::new();
    for cycle in 0..cycles {
        let mut child = Command::new(env!("CARGO_BIN_EXE_shardlog"))
            .args(["crash-writer", "--tag", &format!("c{cycle}"), "--data-dir"])
            .arg(dir.path())
            .env("SHARDLOG_LOG", "off")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            std::io::BufReader::new(out)
                .lines()
                .map_while(Result::ok)
                .collect::<Vec<String>>()
        });
        std::thread::sleep(Duration::from_millis(150 + rng.below(400)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        for line in reader.join().unwrap() {
            let mut parts = line.split(' ');
            if let (Some(d), Some(s), Some(q)) = (parts.next(), parts.next(), parts.next()) {
                acked.insert(d.to_string(), (s.to_string(), q.to_string()));
            }
        }
        // The dead process's lock is gone: open in this process and check.
        let e = shardlog_stream::Engine::open(dir.path(), shardlog_stream::EngineOptions::default()).unwrap();
        let mut seen = HashSet::new();
        let Ok(shards) = e.list_shards("crash") else {
            // Killed before its stream existed (a slow start under load):
            // then nothing can have been acknowledged.
            assert!(
                acked.is_empty(),
                "cycle {cycle}: acknowledged records but no stream"
            );
            continue;
        };
        for shard in shards {
            let mut it = e
                .get_shard_iterator(
                    "crash",
                    &shard.shard_id,
                    shardlog_stream::StartingPosition::TrimHorizon,
                )
                .unwrap();
            loop {
                let r = e.get_records(&it, None).unwrap();
                let empty = r.records.is_empty();
                for rec in r.records {
                    let data = String::from_utf8(rec.data.into_vec()).unwrap();
                    assert!(data.starts_with('c'), "cycle {cycle}: unknown record {data:?}");
                    assert!(seen.insert(data.clone()), "cycle {cycle}: {data:?} twice");
                    if let Some((s, q)) = acked.get(&data) {
                        assert_eq!(
                            (s, q),
                            (&shard.shard_id, &rec.sequence_number.to_string()),
                            "cycle {cycle}: {data:?} moved"
                        );
                    }
                }
                match r.next_shard_iterator {
                    Some(n) if !empty => it = n,
                    _ => break,
                }
            }
        }
        for d in acked.keys() {
            assert!(seen.contains(d), "cycle {cycle}: acknowledged record {d:?} lost");
        }
        eprintln!(
            "embedded cycle {cycle}: {} acknowledged so far, all present",
            acked.len()
        );
    }
    assert!(!acked.is_empty(), "the writer made progress");
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

//! The web console in a real browser: a `shardlog serve` process with a
//! seeded stream (records, a split, a merge, a consumer and a group), and
//! `tests/console/e2e.mjs` driving headless Chromium through the pages. The
//! script splits and merges shards, changes retention and creates and
//! deletes a stream through the UI; this test then checks through the API
//! that each happened.
//!
//! Needs Node.js and Chromium (`/usr/bin/chromium`, or `SHARDLOG_CHROMIUM`);
//! `.ci/run` installs both. Without them the test fails and says so, so a
//! machine that cannot run it never reports it as passed.
//! `SHARDLOG_SCREENSHOTS=DIR` keeps a screenshot of each page.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};

use crate::kill9::{call, start};

const STREAM: &str = "console-demo";

fn e2e_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/console")
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Calls an operation that must succeed.
async fn must(client: &reqwest::Client, endpoint: &str, op: &str, body: Value) -> Value {
    call(client, endpoint, op, body)
        .await
        .unwrap_or_else(|e| panic!("{op}: {e}"))
}

/// Resharding leaves the stream UPDATING for a moment; the next reshard
/// would be refused until it is ACTIVE again.
async fn wait_active(client: &reqwest::Client, endpoint: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let d = must(
            client,
            endpoint,
            "DescribeStreamSummary",
            json!({"StreamName": STREAM}),
        )
        .await;
        if d["StreamDescriptionSummary"]["StreamStatus"] == "ACTIVE" {
            return;
        }
        assert!(Instant::now() < deadline, "stream did not become ACTIVE: {d}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn shards(client: &reqwest::Client, endpoint: &str) -> Vec<Value> {
    let v = must(client, endpoint, "ListShards", json!({"StreamName": STREAM})).await;
    v["Shards"].as_array().cloned().unwrap_or_default()
}

/// Two shards; four records in shard 0 (the order e2e.mjs expects); shard 0
/// split at the midpoint; its upper child merged with shard 1; a consumer, a
/// group with a worker, and some traffic across the key space.
async fn seed(client: &reqwest::Client, ep: &str) {
    must(
        client,
        ep,
        "CreateStream",
        json!({"StreamName": STREAM, "ShardCount": 2}),
    )
    .await;
    wait_active(client, ep).await;
    must(
        client,
        ep,
        "EnableEnhancedMonitoring",
        json!({"StreamName": STREAM, "ShardLevelMetrics": ["ALL"]}),
    )
    .await;
    let records: [(&str, &[u8]); 4] = [
        ("user-ada", br#"{"user":"ada","action":"login","n":1}"#),
        ("blob", &[0x00, 0x9f, 0x92, 0x96, 0xff]),
        ("greeting", "héllo wörld".as_bytes()),
        ("user-grace", br#"{"user":"grace","action":"logout","n":2}"#),
    ];
    for (key, data) in records {
        must(
            client,
            ep,
            "PutRecord",
            json!({"StreamName": STREAM, "PartitionKey": key, "Data": b64(data), "ExplicitHashKey": "0"}),
        )
        .await;
    }
    must(
        client,
        ep,
        "SplitShard",
        json!({"StreamName": STREAM, "ShardToSplit": "shardId-000000000000",
               "NewStartingHashKey": (1u128 << 126).to_string()}),
    )
    .await;
    wait_active(client, ep).await;
    let upper_child = shards(client, ep)
        .await
        .into_iter()
        .filter(|s| s["ParentShardId"] == "shardId-000000000000")
        .max_by_key(|s| {
            s["HashKeyRange"]["StartingHashKey"]
                .as_str()
                .and_then(|k| k.parse::<u128>().ok())
        })
        .expect("the split made children");
    must(
        client,
        ep,
        "MergeShards",
        json!({"StreamName": STREAM, "ShardToMerge": upper_child["ShardId"],
               "AdjacentShardToMerge": "shardId-000000000001"}),
    )
    .await;
    wait_active(client, ep).await;
    let arn = must(client, ep, "DescribeStreamSummary", json!({"StreamName": STREAM})).await
        ["StreamDescriptionSummary"]["StreamARN"]
        .clone();
    must(
        client,
        ep,
        "RegisterStreamConsumer",
        json!({"StreamARN": arn, "ConsumerName": "analytics"}),
    )
    .await;
    let r = client
        .post(ep)
        .header("x-amz-target", "ShardlogGroups_20261126.Heartbeat")
        .header("content-type", "application/x-amz-json-1.1")
        .body(json!({"StreamName": STREAM, "ApplicationName": "billing", "WorkerId": "worker-1"}).to_string())
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "group heartbeat: {}", r.status());
    for i in 0..40 {
        must(
            client,
            ep,
            "PutRecord",
            json!({"StreamName": STREAM, "PartitionKey": format!("warmup-{i}"),
                   "Data": b64(format!(r#"{{"event":"warmup","i":{i}}}"#).as_bytes())}),
        )
        .await;
    }
}

/// A steady trickle of writes (and reads) while the browser is open, so the
/// live rates and charts have something to show.
fn traffic(endpoint: String, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let client = reqwest::Client::new();
        rt.block_on(async {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                // Writes may race the UI's split; a refused one is retried by
                // the next round, which is all this load needs.
                let _ = call(
                    &client,
                    &endpoint,
                    "PutRecords",
                    json!({"StreamName": STREAM, "Records": (0..5).map(|j| json!({
                        "PartitionKey": format!("k{}", i * 5 + j),
                        "Data": b64(format!(r#"{{"event":"click","i":{}}}"#, i * 5 + j).as_bytes()),
                    })).collect::<Vec<_>>()}),
                )
                .await;
                i += 1;
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
        });
    })
}

#[test]
fn console_shows_and_changes_streams_in_a_headless_browser() {
    let chromium = std::env::var("SHARDLOG_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "the console test needs Chromium at {chromium}: `apt-get install -y chromium` \
         (or set SHARDLOG_CHROMIUM); .ci/run installs it"
    );
    let node = Command::new("node").arg("--version").output();
    assert!(
        matches!(&node, Ok(o) if o.status.success()),
        "the console test needs Node.js (`node` on PATH): `apt-get install -y nodejs npm`"
    );
    let dir = e2e_dir();
    if !dir.join("node_modules/playwright-core").exists() {
        let npm = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .output()
            .expect("the console test needs npm to install playwright-core");
        assert!(
            npm.status.success(),
            "npm ci in tests/console failed: {}",
            String::from_utf8_lossy(&npm.stderr)
        );
    }
    let data = tempfile::tempdir().unwrap();
    let server = start(data.path());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = reqwest::Client::new();
    rt.block_on(seed(&client, &server.endpoint));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = traffic(server.endpoint.clone(), stop.clone());
    let out = Command::new("node")
        .arg(dir.join("e2e.mjs"))
        .arg(&server.endpoint)
        .env("SHARDLOG_STREAM", STREAM)
        .env("SHARDLOG_CHROMIUM", &chromium)
        .output()
        .expect("run node");
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the browser test failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result: Value = stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("e2e.mjs printed no result: {stdout}"));
    let split = result["split"]
        .as_str()
        .expect("the split shard's id")
        .to_string();
    // The UI's split and merge, as the API sees them.
    let all = rt.block_on(shards(&client, &server.endpoint));
    assert_eq!(
        all.len(),
        8,
        "five seeded shards, two from the UI's split, one from its merge: {all:?}"
    );
    let parent = all.iter().find(|s| s["ShardId"] == split.as_str()).unwrap();
    assert!(
        parent["SequenceNumberRange"]["EndingSequenceNumber"].is_string(),
        "the split shard is closed: {parent}"
    );
    let children: Vec<&Value> = all
        .iter()
        .filter(|s| s["ParentShardId"] == split.as_str())
        .collect();
    assert_eq!(children.len(), 2, "two children of {split}: {all:?}");
    let range = |s: &Value, k: &str| s["HashKeyRange"][k].as_str().unwrap().parse::<u128>().unwrap();
    let (lo, hi) = (range(parent, "StartingHashKey"), range(parent, "EndingHashKey"));
    let mut kids: Vec<(u128, u128)> = children
        .iter()
        .map(|c| (range(c, "StartingHashKey"), range(c, "EndingHashKey")))
        .collect();
    kids.sort();
    let mid = lo + (hi - lo).div_ceil(2);
    assert_eq!(
        kids,
        vec![(lo, mid - 1), (mid, hi)],
        "split at the midpoint the UI proposed"
    );
    let (a, b) = (&result["merged"][0], &result["merged"][1]);
    assert!(
        all.iter()
            .any(|s| &s["ParentShardId"] == a && &s["AdjacentParentShardId"] == b),
        "a shard merged from {a} and {b}: {all:?}"
    );
    let d = rt.block_on(must(
        &client,
        &server.endpoint,
        "DescribeStreamSummary",
        json!({"StreamName": STREAM}),
    ));
    assert_eq!(
        d["StreamDescriptionSummary"]["RetentionPeriodHours"], 48,
        "the UI's retention change"
    );
    let streams = rt.block_on(must(&client, &server.endpoint, "ListStreams", json!({})));
    assert_eq!(
        streams["StreamNames"],
        json!([STREAM]),
        "the stream the UI created and deleted is gone"
    );
}

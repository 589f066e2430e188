//! The server as clients see it: real HTTP on an ephemeral port, driven by
//! boto3 and the AWS CLI (from the virtualenv `.ci/run` makes), and by raw
//! JSON and CBOR requests for the byte-level and bad-input cases.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};
use shardlog_stream::{Engine, EngineOptions};

/// SigV4 authentication and resource policies, with real signers.
#[path = "api/auth.rs"]
mod auth;
#[path = "api/limits.rs"]
mod limits;

struct Server {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    fn start(dir: &Path) -> Server {
        Server::start_with(dir, shardlog_server::ServeOptions::default())
    }

    fn start_with(dir: &Path, options: shardlog_server::ServeOptions) -> Server {
        let engine = Engine::open(dir, EngineOptions::default()).expect("open engine");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (atx, arx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let (listener, addr) = shardlog_server::bind("127.0.0.1:0".parse().unwrap())
                    .await
                    .unwrap();
                atx.send(addr).unwrap();
                shardlog_server::serve_with(listener, engine, options, async {
                    let _ = rx.await;
                })
                .await
                .unwrap();
            });
        });
        let addr = arx.recv().unwrap();
        Server {
            addr,
            stop: Some(tx),
            thread: Some(thread),
        }
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A program of the test virtualenv (boto3, the AWS CLI, prometheus_client),
/// made on first use from `tests/python/requirements.txt` when it is
/// missing, so `cargo test` works on a fresh machine with Python 3 (`.ci/run`
/// makes it up front).
fn venv_bin(name: &str) -> PathBuf {
    static READY: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    let venv = workspace().join(".venv");
    let ready = READY.get_or_init(|| {
        let ok = venv.join("bin/aws").exists()
            && Command::new(venv.join("bin/python"))
                .args(["-c", "import boto3, prometheus_client"])
                .status()
                .is_ok_and(|s| s.success());
        if ok {
            return Ok(());
        }
        let run = |cmd: &mut Command| -> Result<(), String> {
            let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "{cmd:?} failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                ))
            }
        };
        run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
        run(Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check", "-r"])
            .arg(workspace().join("tests/python/requirements.txt")))
    });
    if let Err(e) = ready {
        panic!("the test virtualenv could not be made (needs python3 and PyPI): {e}");
    }
    venv.join("bin").join(name)
}

/// Runs `tests/python/<script>` with the server's endpoint and `args`, and
/// asserts it succeeded (printing its output when it did not).
fn run_python(script: &str, server: &Server, args: &[&str], what: &str) {
    let out = Command::new(venv_bin("python"))
        .arg(workspace().join("tests/python").join(script))
        .arg(server.endpoint())
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn boto3_journey_survives_a_server_restart() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let server = Server::start(tmp.path());
        run_python("boto3_journey.py", &server, &["write"], "boto3 write phase");
    }
    // A new server process state on the same data directory.
    let server = Server::start(tmp.path());
    run_python("boto3_journey.py", &server, &["read"], "boto3 read phase");
}

/// The AWS SDK for JavaScript v3 (`tests/js`, pinned by its lock file):
/// create and wait, put, read every shard from its StartingSequenceNumber,
/// typed errors, a split followed through ChildShards, and SubscribeToShard
/// over cleartext HTTP/2 through the SDK's event-stream decoder.
#[test]
fn js_sdk_v3_journey_puts_reads_splits_and_subscribes_over_http2() {
    let dir = workspace().join("tests/js");
    let node = Command::new("node").arg("--version").output();
    assert!(
        matches!(&node, Ok(o) if o.status.success()),
        "the JavaScript SDK test needs Node.js (`node` on PATH): `apt-get install -y nodejs npm`"
    );
    if !dir.join("node_modules/@aws-sdk/client-kinesis").exists() {
        let npm = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .output()
            .expect("the JavaScript SDK test needs npm to install @aws-sdk/client-kinesis");
        assert!(
            npm.status.success(),
            "npm ci in tests/js failed: {}",
            String::from_utf8_lossy(&npm.stderr)
        );
    }
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path());
    let out = Command::new("node")
        .arg(dir.join("sdk_journey.mjs"))
        .arg(server.endpoint())
        .output()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("js sdk journey passed"),
        "the JavaScript SDK journey failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn boto3_subscribe_to_shard_receives_every_record_in_order_across_a_split() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path());
    run_python("boto3_subscribe.py", &server, &[], "boto3 subscribe");
}

#[test]
fn python_workers_share_a_stream_through_the_consumer_groups_extension() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path());
    run_python("groups_worker.py", &server, &[], "python group workers");
}

#[test]
fn metrics_parse_as_prometheus_text_and_count_the_traffic_sent() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path());
    run_python("metrics_check.py", &server, &[], "metrics check");
}

#[test]
fn aws_cli_journey() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path());
    let out = Command::new("bash")
        .arg(workspace().join("tests/shell/awscli_journey.sh"))
        .arg(server.endpoint())
        .arg(venv_bin("aws"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "aws cli journey failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

async fn call(
    client: &reqwest::Client,
    server: &Server,
    op: &str,
    ct: &str,
    body: Vec<u8>,
) -> (u16, Vec<u8>, reqwest::header::HeaderMap) {
    let r = client
        .post(server.endpoint())
        .header("X-Amz-Target", format!("Kinesis_20131202.{op}"))
        .header("Content-Type", ct)
        .body(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{op}: {e}"));
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, r.bytes().await.unwrap().to_vec(), headers)
}

async fn json_call(client: &reqwest::Client, server: &Server, op: &str, body: Value) -> (u16, Value) {
    let (s, b, h) = call(
        client,
        server,
        op,
        "application/x-amz-json-1.1",
        serde_json::to_vec(&body).unwrap(),
    )
    .await;
    assert!(
        h.contains_key("x-amzn-requestid"),
        "every response carries x-amzn-RequestId"
    );
    let v = if b.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&b).unwrap()
    };
    (s, v)
}

fn cbor(v: ciborium::Value) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::into_writer(&v, &mut out).unwrap();
    out
}

fn text(s: &str) -> ciborium::Value {
    ciborium::Value::Text(s.into())
}

#[test]
fn cbor_requests_carry_bytes_and_tagged_millisecond_timestamps() {
    use ciborium::Value as C;
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path());
    rt().block_on(async {
        let client = reqwest::Client::new();
        let ct = "application/x-amz-cbor-1.1";
        let (s, _, h) = call(&client, &server, "CreateStream", ct, cbor(C::Map(vec![(text("StreamName"), text("s")), (text("ShardCount"), C::Integer(1.into()))]))).await;
        assert_eq!(s, 200);
        assert_eq!(h["content-type"], ct);
        // The reference's byte-level PutRecord example.
        let put: Vec<u8> = "a3 6a 53 74 72 65 61 6d 4e 61 6d 65 61 73 64 44 61 74 61 45 68 65 6c 6c 6f 6c 50 61 72 74 69 74 69 6f 6e 4b 65 79 61 6b"
            .split(' ')
            .map(|b| u8::from_str_radix(b, 16).unwrap())
            .collect();
        let (s, body, _) = call(&client, &server, "PutRecord", ct, put).await;
        assert_eq!(s, 200);
        let v: C = ciborium::from_reader(body.as_slice()).unwrap();
        let seq = v.as_map().unwrap().iter().find(|(k, _)| k.as_text() == Some("SequenceNumber")).unwrap().1.as_text().unwrap().to_string();
        // AT_TIMESTAMP with a tag-1 millisecond timestamp in the past.
        let now_ms = shardlog_segment::now_ms();
        let req = C::Map(vec![
            (text("StreamName"), text("s")),
            (text("ShardId"), text("shardId-000000000000")),
            (text("ShardIteratorType"), text("AT_TIMESTAMP")),
            (text("Timestamp"), C::Tag(1, Box::new(C::Integer((now_ms - 60_000).into())))),
        ]);
        let (s, body, _) = call(&client, &server, "GetShardIterator", ct, cbor(req)).await;
        assert_eq!(s, 200, "{:?}", ciborium::from_reader::<C, _>(body.as_slice()));
        let v: C = ciborium::from_reader(body.as_slice()).unwrap();
        let it = v.as_map().unwrap()[0].1.as_text().unwrap().to_string();
        let (s, body, _) = call(&client, &server, "GetRecords", ct, cbor(C::Map(vec![(text("ShardIterator"), text(&it))]))).await;
        assert_eq!(s, 200);
        let v: C = ciborium::from_reader(body.as_slice()).unwrap();
        let records = v.as_map().unwrap().iter().find(|(k, _)| k.as_text() == Some("Records")).unwrap().1.as_array().unwrap().clone();
        let rec = records[0].as_map().unwrap();
        let field = |name: &str| rec.iter().find(|(k, _)| k.as_text() == Some(name)).unwrap().1.clone();
        assert_eq!(field("Data"), C::Bytes(b"hello".to_vec()), "Data is a byte string");
        assert_eq!(field("SequenceNumber"), text(&seq));
        match field("ApproximateArrivalTimestamp") {
            C::Tag(1, inner) => {
                let ms: i128 = inner.as_integer().unwrap().into();
                assert!((ms as i64 - now_ms).abs() < 60_000, "milliseconds, not seconds: {ms}");
            }
            other => panic!("timestamp must be tag 1, got {other:?}"),
        }
        // PutRecords in CBOR: byte-string Data in, per-record results out.
        let rec = |k: &str, d: &[u8]| C::Map(vec![(text("PartitionKey"), text(k)), (text("Data"), C::Bytes(d.to_vec()))]);
        let req = C::Map(vec![(text("StreamName"), text("s")), (text("Records"), C::Array(vec![rec("a", b"\x00\x01"), rec("b", b"\xff")]))]);
        let (s, body, _) = call(&client, &server, "PutRecords", ct, cbor(req)).await;
        assert_eq!(s, 200);
        let v: C = ciborium::from_reader(body.as_slice()).unwrap();
        let m = v.as_map().unwrap();
        let failed = m.iter().find(|(k, _)| k.as_text() == Some("FailedRecordCount")).unwrap().1.clone();
        assert_eq!(failed, C::Integer(0.into()));
        // Stream timestamps are tag 1 as well.
        let (s, body, _) = call(&client, &server, "DescribeStreamSummary", ct, cbor(C::Map(vec![(text("StreamName"), text("s"))]))).await;
        assert_eq!(s, 200);
        let v: C = ciborium::from_reader(body.as_slice()).unwrap();
        let summary = v.as_map().unwrap()[0].1.as_map().unwrap().clone();
        let created = summary.iter().find(|(k, _)| k.as_text() == Some("StreamCreationTimestamp")).unwrap().1.clone();
        assert!(matches!(created, C::Tag(1, _)), "{created:?}");
        // Errors come back in CBOR too.
        let (s, body, _) = call(&client, &server, "DescribeStream", ct, cbor(C::Map(vec![(text("StreamName"), text("nope"))]))).await;
        assert_eq!(s, 400);
        let v: C = ciborium::from_reader(body.as_slice()).unwrap();
        assert_eq!(v.as_map().unwrap()[0], (text("__type"), text("ResourceNotFoundException")));
    });
}

#[test]
fn bad_input_gets_the_right_error_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path());
    rt().block_on(async {
        let client = reqwest::Client::new();
        let (s, _) = json_call(&client, &server, "CreateStream", json!({"StreamName": "s", "ShardCount": 1})).await;
        assert_eq!(s, 200);
        // 1,050,000 bytes once decoded: over the 1 MiB record limit.
        let big = "A".repeat(4 * 350_000);
        let cases: Vec<(&str, Value, &str, &str)> = vec![
            ("CreateStream", json!({"StreamName": "a b", "ShardCount": 1}), "ValidationException", "Member must satisfy regular expression pattern: [a-zA-Z0-9_.-]+"),
            ("CreateStream", json!({"ShardCount": 1}), "ValidationException", "Value null at 'streamName' failed to satisfy constraint: Member must not be null"),
            ("CreateStream", json!({"StreamName": "x".repeat(129), "ShardCount": 1}), "ValidationException", "Member must have length less than or equal to 128"),
            ("CreateStream", json!({"StreamName": "t", "ShardCount": 0}), "ValidationException", "Member must have value greater than or equal to 1"),
            ("CreateStream", json!({"StreamName": "t", "ShardCount": "two"}), "SerializationException", ""),
            ("CreateStream", json!({"StreamName": "s", "ShardCount": 1}), "ResourceInUseException", "already exists"),
            ("DescribeStream", json!({"StreamName": "missing"}), "ResourceNotFoundException", "Stream missing under account 000000000000 not found."),
            ("PutRecord", json!({"StreamName": "s", "Data": "aGk="}), "ValidationException", "partitionKey"),
            ("PutRecord", json!({"StreamName": "s", "PartitionKey": "k", "Data": "abcde"}), "SerializationException", "Base64"),
            ("PutRecord", json!({"StreamName": "s", "PartitionKey": "k", "Data": "aGk=", "ExplicitHashKey": "-1"}), "ValidationException", "explicitHashKey"),
            ("PutRecord", json!({"StreamName": "s", "PartitionKey": "k", "Data": big}), "InvalidArgumentException", "exceeds"),
            ("PutRecords", json!({"StreamName": "s", "Records": []}), "ValidationException", "Member must have length greater than or equal to 1"),
            ("GetShardIterator", json!({"StreamName": "s", "ShardId": "shardId-000000000000", "ShardIteratorType": "SIDEWAYS"}), "ValidationException", "enum value set"),
            ("GetShardIterator", json!({"StreamName": "s", "ShardId": "shardId-000000000000", "ShardIteratorType": "AT_SEQUENCE_NUMBER"}), "InvalidArgumentException", "StartingSequenceNumber"),
            ("GetShardIterator", json!({"StreamName": "s", "ShardId": "shardId-000000000009", "ShardIteratorType": "LATEST"}), "ResourceNotFoundException", "does not exist"),
            ("GetRecords", json!({"ShardIterator": "AAAA"}), "InvalidArgumentException", "Invalid ShardIterator."),
            ("GetRecords", json!({"ShardIterator": "AAAA", "Limit": 10001}), "ValidationException", "less than or equal to 10000"),
            ("SplitShard", json!({"StreamName": "s", "ShardToSplit": "shardId-000000000000", "NewStartingHashKey": "1"}), "InvalidArgumentException", "not both greater than one plus"),
            // Retention: the service validates 1-10,000 and refuses a
            // period out of 24-8,760 itself, as AWS does; ShardCount has no
            // upper bound in the model, and too many is a limit.
            ("IncreaseStreamRetentionPeriod", json!({"StreamName": "s", "RetentionPeriodHours": 8761}), "InvalidArgumentException", "Maximum allowed retention period is 8760 hours. Requested retention period (8761 hours) is too long."),
            ("IncreaseStreamRetentionPeriod", json!({"StreamName": "s", "RetentionPeriodHours": 10_001}), "ValidationException", "Member must have value less than or equal to 10000"),
            ("DecreaseStreamRetentionPeriod", json!({"StreamName": "s", "RetentionPeriodHours": 23}), "InvalidArgumentException", "Minimum allowed retention period is 24 hours. Requested retention period (23 hours) is too short."),
            ("DecreaseStreamRetentionPeriod", json!({"StreamName": "s", "RetentionPeriodHours": 0}), "ValidationException", "Member must have value greater than or equal to 1"),
            ("IncreaseStreamRetentionPeriod", json!({"StreamName": "s"}), "ValidationException", "Value null at 'retentionPeriodHours' failed to satisfy constraint: Member must not be null"),
            ("CreateStream", json!({"StreamName": "t", "ShardCount": 20_001}), "LimitExceededException", "This request would exceed the shard limit for the account"),
            // The stream is looked up before the service's own checks.
            ("IncreaseStreamRetentionPeriod", json!({"StreamName": "missing", "RetentionPeriodHours": 8761}), "ResourceNotFoundException", "Stream missing under account 000000000000 not found."),
            ("CreateStream", json!({"StreamName": "s", "ShardCount": 20_001}), "ResourceInUseException", "already exists"),
            ("CreateStream", json!({"StreamName": "t", "ShardCount": 9_000_000_000i64}), "LimitExceededException", "This request would exceed the shard limit for the account"),
            ("DecreaseStreamRetentionPeriod", json!({"StreamName": "s", "RetentionPeriodHours": 48}), "InvalidArgumentException", "can not be longer"),
            ("NotAnOperation", json!({}), "UnknownOperationException", ""),
            ("ListStreams", json!({"NextToken": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "streams\ns\n1000")}), "ExpiredNextTokenException", "300 seconds"),
            ("ListStreams", json!({"NextToken": "bm90IGEgdG9rZW4="}), "InvalidArgumentException", "Invalid NextToken"),
            // Shapes the model constrains are ValidationExceptions before any
            // lookup, as at AWS: a malformed shard id is not a missing shard,
            // a malformed sequence number not an invalid one.
            ("GetShardIterator", json!({"StreamName": "s", "ShardId": "bad id!", "ShardIteratorType": "LATEST"}), "ValidationException", "at 'shardId' failed to satisfy constraint: Member must satisfy regular expression pattern"),
            ("GetShardIterator", json!({"StreamName": "s", "ShardId": "s".repeat(129), "ShardIteratorType": "LATEST"}), "ValidationException", "Member must have length less than or equal to 128"),
            ("GetShardIterator", json!({"StreamName": "s", "ShardId": "shardId-000000000000", "ShardIteratorType": "AT_SEQUENCE_NUMBER", "StartingSequenceNumber": "0123"}), "ValidationException", "at 'startingSequenceNumber' failed to satisfy constraint"),
            ("GetShardIterator", json!({"StreamName": "s", "ShardId": "shardId-000000000000", "ShardIteratorType": "AT_SEQUENCE_NUMBER", "StartingSequenceNumber": format!("1{}", "0".repeat(129))}), "ValidationException", "startingSequenceNumber"),
            ("PutRecord", json!({"StreamName": "s", "PartitionKey": "k", "Data": "aGk=", "SequenceNumberForOrdering": "abc"}), "ValidationException", "at 'sequenceNumberForOrdering'"),
            ("SplitShard", json!({"StreamName": "s", "ShardToSplit": "shardId-000000000000", "NewStartingHashKey": "0850"}), "ValidationException", "newStartingHashKey"),
            ("SplitShard", json!({"StreamName": "s", "ShardToSplit": "shardId-000000000000", "NewStartingHashKey": format!("1{}", "0".repeat(39))}), "ValidationException", "newStartingHashKey"),
            ("SplitShard", json!({"StreamName": "s", "ShardToSplit": "bad id!", "NewStartingHashKey": "1"}), "ValidationException", "shardToSplit"),
            ("MergeShards", json!({"StreamName": "s", "ShardToMerge": "bad id!", "AdjacentShardToMerge": "shardId-000000000001"}), "ValidationException", "shardToMerge"),
            ("DescribeStream", json!({"StreamName": "s", "ExclusiveStartShardId": "bad id!"}), "ValidationException", "exclusiveStartShardId"),
            ("ListShards", json!({"StreamName": "s", "ExclusiveStartShardId": "bad id!"}), "ValidationException", "exclusiveStartShardId"),
            ("ListShards", json!({"StreamName": "s", "ShardFilter": {"ShardId": "shardId-000000000000"}}), "ValidationException", "shardFilter.type"),
            ("ListShards", json!({"StreamName": "s", "ShardFilter": {"Type": "AFTER_SHARD_ID", "ShardId": "bad id!"}}), "ValidationException", "shardFilter.shardId"),
            ("EnableEnhancedMonitoring", json!({"StreamName": "s", "ShardLevelMetrics": vec!["IncomingBytes"; 8]}), "ValidationException", "less than or equal to 7"),
            ("AddTagsToStream", json!({"StreamName": "s", "Tags": {}}), "ValidationException", "at 'tags' failed to satisfy constraint: Member must have length greater than or equal to 1"),
            ("AddTagsToStream", json!({"StreamName": "s", "Tags": {"k".repeat(129): "v"}}), "ValidationException", "Map keys must satisfy constraint"),
            ("AddTagsToStream", json!({"StreamName": "s", "Tags": {"k": "v".repeat(257)}}), "ValidationException", "Map value must satisfy constraint"),
            ("CreateStream", json!({"StreamName": "t", "ShardCount": 1, "Tags": {}}), "ValidationException", "at 'tags'"),
            ("RemoveTagsFromStream", json!({"StreamName": "s", "TagKeys": []}), "ValidationException", "at 'tagKeys'"),
            ("RemoveTagsFromStream", json!({"StreamName": "s", "TagKeys": (0..51).map(|i| format!("k{i}")).collect::<Vec<_>>()}), "ValidationException", "less than or equal to 50"),
            ("UntagResource", json!({"ResourceARN": "arn:aws:kinesis:us-east-1:000000000000:stream/s", "TagKeys": ["k".repeat(129)]}), "ValidationException", "at 'tagKeys.1.member'"),
            ("TagResource", json!({"ResourceARN": "arn:aws:s3:::bucket", "Tags": {"k": "v"}}), "ValidationException", "at 'resourceARN'"),
            ("DescribeStreamConsumer", json!({"ConsumerARN": "arn:aws:kinesis:us-east-1:000000000000:garbage"}), "ValidationException", "at 'consumerARN'"),
            ("DescribeStreamConsumer", json!({"ConsumerARN": "arn:aws:kinesis:us-east-1:000000000000:stream/s/consumer/c:abc"}), "ValidationException", "at 'consumerARN'"),
            ("DescribeStreamConsumer", json!({"ConsumerARN": "arn:aws:s3:us-east-1:000000000000:stream/s/consumer/c:1"}), "ValidationException", "at 'consumerARN'"),
            ("ListTagsForResource", json!({"ResourceARN": "arn:aws:kinesis:us-east-1:000000000000:stream/s/consumer/c:+1"}), "ValidationException", "at 'resourceARN'"),
        ];
        for (op, body, kind, needle) in cases {
            let (s, v) = json_call(&client, &server, op, body.clone()).await;
            let shown: String = body.to_string().chars().take(200).collect();
            assert_eq!(s, 400, "{op} {shown}: {v}");
            assert_eq!(v["__type"], kind, "{op} {shown}: {v}");
            let msg = v["message"].as_str().or(v["Message"].as_str()).unwrap_or("");
            assert!(msg.contains(needle), "{op}: message {msg:?} lacks {needle:?}");
        }
        // Malformed bodies and unknown targets.
        let (s, b, _) = call(&client, &server, "CreateStream", "application/x-amz-json-1.1", b"{not json".to_vec()).await;
        assert_eq!(s, 400);
        assert!(String::from_utf8_lossy(&b).contains("SerializationException"));
        let (s, b, _) = call(&client, &server, "CreateStream", "application/x-amz-cbor-1.1", vec![0xff, 0xff]).await;
        assert_eq!(s, 400);
        assert!(b.windows(22).any(|w| w == b"SerializationException"));
        // An oversized body is refused without buffering it all: either a
        // 413 naming the limit, or (when the server answers before the client
        // finished sending) a closed connection. The server stays up.
        let r = reqwest::Client::new()
            .post(server.endpoint())
            .header("X-Amz-Target", "Kinesis_20131202.PutRecord")
            .header("Content-Type", "application/x-amz-json-1.1")
            .body(vec![b' '; 17 * 1024 * 1024])
            .send()
            .await;
        if let Ok(r) = r {
            assert_eq!(r.status(), 413);
            assert!(r.text().await.unwrap().contains("exceeds"));
        }
        // Nothing changed: one stream, no records.
        let (_, v) = json_call(&client, &server, "ListStreams", json!({})).await;
        assert_eq!(v["StreamNames"], json!(["s"]));
        let (_, v) = json_call(&client, &server, "GetShardIterator", json!({"StreamName": "s", "ShardId": "shardId-000000000000", "ShardIteratorType": "TRIM_HORIZON"})).await;
        let (_, v) = json_call(&client, &server, "GetRecords", json!({"ShardIterator": v["ShardIterator"]})).await;
        assert_eq!(v["Records"], json!([]));
    });
}

#[test]
fn cbor_subscribe_to_shard_over_h2c_streams_framed_events_with_byte_string_data() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path());
    rt().block_on(async {
        let h2 = reqwest::Client::builder()
            .http2_prior_knowledge()
            .build()
            .unwrap();
        let (s, _) = json_call(
            &h2,
            &server,
            "CreateStream",
            json!({"StreamName": "c", "ShardCount": 1}),
        )
        .await;
        assert_eq!(s, 200);
        let (_, c) = json_call(
            &h2,
            &server,
            "RegisterStreamConsumer",
            json!({"StreamARN": "arn:aws:kinesis:us-east-1:000000000000:stream/c", "ConsumerName": "j"}),
        )
        .await;
        let consumer_arn = c["Consumer"]["ConsumerARN"].as_str().unwrap().to_string();
        for i in 0..3 {
            let (s, _) = json_call(
                &h2,
                &server,
                "PutRecord",
                json!({"StreamName": "c", "PartitionKey": "k", "Data": base64_of(&format!("cbor-{i}"))}),
            )
            .await;
            assert_eq!(s, 200);
        }
        let req = ciborium::Value::Map(vec![
            (text("ConsumerARN"), text(&consumer_arn)),
            (text("ShardId"), text("shardId-000000000000")),
            (
                text("StartingPosition"),
                ciborium::Value::Map(vec![(text("Type"), text("TRIM_HORIZON"))]),
            ),
        ]);
        let mut resp = h2
            .post(server.endpoint())
            .header("X-Amz-Target", "Kinesis_20131202.SubscribeToShard")
            .header("Content-Type", "application/x-amz-cbor-1.1")
            .body(cbor(req))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.version(), reqwest::Version::HTTP_2);
        assert_eq!(resp.status(), 200);
        assert_eq!(
            resp.headers()["content-type"],
            "application/vnd.amazon.eventstream"
        );
        // Read frames until the first SubscribeToShardEvent; each frame's
        // prelude and message CRCs are checked by the decoder.
        let mut buf = bytes::BytesMut::new();
        let mut decoder = aws_smithy_eventstream::frame::MessageFrameDecoder::new();
        let mut messages = Vec::new();
        while messages.len() < 2 {
            let chunk = resp.chunk().await.unwrap().expect("the stream stays open");
            buf.extend_from_slice(&chunk);
            while let aws_smithy_eventstream::frame::DecodedFrame::Complete(m) =
                decoder.decode_frame(&mut buf).unwrap()
            {
                messages.push(m);
            }
        }
        let header = |m: &aws_smithy_types::event_stream::Message, name: &str| {
            m.headers()
                .iter()
                .find(|h| h.name().as_str() == name)
                .and_then(|h| h.value().as_string().ok().map(|s| s.as_str().to_string()))
        };
        assert_eq!(
            header(&messages[0], ":event-type").as_deref(),
            Some("initial-response")
        );
        assert_eq!(
            header(&messages[1], ":event-type").as_deref(),
            Some("SubscribeToShardEvent")
        );
        assert_eq!(
            header(&messages[1], ":content-type").as_deref(),
            Some("application/x-amz-cbor-1.1")
        );
        let payload: ciborium::Value = ciborium::from_reader(messages[1].payload().as_ref()).unwrap();
        let map = payload.as_map().unwrap();
        let get = |k: &str| {
            map.iter()
                .find(|(key, _)| key.as_text() == Some(k))
                .map(|(_, v)| v.clone())
        };
        let records = get("Records").unwrap();
        let records = records.as_array().unwrap();
        assert_eq!(records.len(), 3);
        let data: Vec<Vec<u8>> = records
            .iter()
            .map(|r| {
                r.as_map()
                    .unwrap()
                    .iter()
                    .find(|(k, _)| k.as_text() == Some("Data"))
                    .and_then(|(_, v)| v.as_bytes().cloned())
                    .expect("Data is a CBOR byte string")
            })
            .collect();
        assert_eq!(
            data,
            vec![b"cbor-0".to_vec(), b"cbor-1".to_vec(), b"cbor-2".to_vec()]
        );
        assert!(get("ContinuationSequenceNumber").unwrap().as_text().is_some());
        assert!(get("MillisBehindLatest").unwrap().as_integer().is_some());
    });
}

#[test]
fn get_records_json_is_exact_for_awkward_keys_binary_data_and_child_shards() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path());
    rt().block_on(async {
        let c = reqwest::Client::new();
        json_call(&c, &server, "CreateStream", json!({"StreamName": "j", "ShardCount": 1})).await;
        let key = "q\"uo\\te é \u{1} ✓";
        let data = [0u8, 255, 10, 34, 92];
        let b64 = {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.encode(data)
        };
        let (s, _) = json_call(&c, &server, "PutRecord", json!({"StreamName": "j", "PartitionKey": key, "Data": b64})).await;
        assert_eq!(s, 200);
        let (_, sp) = json_call(
            &c,
            &server,
            "SplitShard",
            json!({"StreamName": "j", "ShardToSplit": "shardId-000000000000", "NewStartingHashKey": "12345"}),
        )
        .await;
        assert!(sp.is_null() || sp.is_object());
        let (_, it) = json_call(
            &c,
            &server,
            "GetShardIterator",
            json!({"StreamName": "j", "ShardId": "shardId-000000000000", "ShardIteratorType": "TRIM_HORIZON"}),
        )
        .await;
        let (s, r) = json_call(&c, &server, "GetRecords", json!({"ShardIterator": it["ShardIterator"]})).await;
        assert_eq!(s, 200);
        let rec = &r["Records"][0];
        assert_eq!(rec["PartitionKey"], key);
        assert_eq!(rec["Data"], b64);
        assert_eq!(rec["EncryptionType"], "NONE");
        assert!(rec["ApproximateArrivalTimestamp"].as_f64().unwrap() > 1.0e9);
        assert!(rec["SequenceNumber"].as_str().unwrap().starts_with("49"));
        assert_eq!(r["MillisBehindLatest"], 0);
        // At the end of the closed parent: no NextShardIterator, ChildShards.
        let (_, end) = json_call(&c, &server, "GetRecords", json!({"ShardIterator": it["ShardIterator"], "Limit": 10})).await;
        let mut it2 = end["NextShardIterator"].clone();
        let mut last = end;
        while let Some(i) = it2.as_str().map(str::to_string) {
            let (_, next) = json_call(&c, &server, "GetRecords", json!({"ShardIterator": i})).await;
            it2 = next["NextShardIterator"].clone();
            last = next;
        }
        assert_eq!(last["ChildShards"].as_array().unwrap().len(), 2, "{last}");
    });
}

fn base64_of(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[test]
fn http2_prior_knowledge_and_health_endpoints_work() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path());
    rt().block_on(async {
        let client = reqwest::Client::builder()
            .http2_prior_knowledge()
            .build()
            .unwrap();
        let r = client
            .post(server.endpoint())
            .header("X-Amz-Target", "Kinesis_20131202.ListStreams")
            .header("Content-Type", "application/x-amz-json-1.1")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(r.version(), reqwest::Version::HTTP_2);
        assert_eq!(r.status(), 200);
        let h = reqwest::get(format!("{}/_health/ready", server.endpoint()))
            .await
            .unwrap();
        assert_eq!(h.status(), 200);
        assert_eq!(
            h.headers().get("content-type").and_then(|v| v.to_str().ok()),
            Some("application/json")
        );
        assert_eq!(h.text().await.unwrap(), r#"{"status":"ok"}"#);
    });
}

mod rust_sdk {
    use super::*;
    use aws_sdk_kinesis::config::{BehaviorVersion, Credentials, Region};
    use aws_sdk_kinesis::primitives::{Blob, DateTime};
    use aws_sdk_kinesis::types::{PutRecordsRequestEntry, ScalingType, ShardIteratorType};
    use aws_sdk_kinesis::Client;

    fn client(server: &Server) -> Client {
        client_as(server, "test", "us-east-1")
    }

    /// A client signing with `access_key` in `region` (a 12-digit key id
    /// selects that account while authentication is off).
    fn client_as(server: &Server, access_key: &str, region: &'static str) -> Client {
        let conf = aws_sdk_kinesis::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(region))
            .credentials_provider(Credentials::new(access_key, "secret", None, None, "static"))
            .endpoint_url(server.endpoint())
            .http_client(aws_smithy_http_client::Builder::new().build_http())
            .build();
        Client::from_conf(conf)
    }

    async fn read_all(k: &Client, stream: &str, shard: &str) -> Vec<aws_sdk_kinesis::types::Record> {
        let mut it = k
            .get_shard_iterator()
            .stream_name(stream)
            .shard_id(shard)
            .shard_iterator_type(ShardIteratorType::TrimHorizon)
            .send()
            .await
            .unwrap()
            .shard_iterator
            .unwrap();
        let mut out = Vec::new();
        loop {
            let r = k
                .get_records()
                .shard_iterator(&it)
                .limit(1000)
                .send()
                .await
                .unwrap();
            let empty = r.records().is_empty();
            out.extend(r.records().iter().cloned());
            match r.next_shard_iterator() {
                Some(n) if !empty => it = n.to_string(),
                _ => return out,
            }
        }
    }

    #[test]
    fn aws_sdk_for_rust_journey_survives_a_server_restart() {
        let tmp = tempfile::tempdir().unwrap();
        let total;
        {
            let server = Server::start(tmp.path());
            let k = client(&server);
            total = rt().block_on(async {
                k.create_stream()
                    .stream_name("rs")
                    .shard_count(2)
                    .send()
                    .await
                    .unwrap();
                let d = k.describe_stream().stream_name("rs").send().await.unwrap();
                let desc = d.stream_description().unwrap();
                assert_eq!(desc.shards().len(), 2);
                let put = k
                    .put_record()
                    .stream_name("rs")
                    .partition_key("k")
                    .data(Blob::new(b"hello".to_vec()))
                    .send()
                    .await
                    .unwrap();
                let shard = put.shard_id().to_string();
                let entries: Vec<PutRecordsRequestEntry> = (0..200)
                    .map(|i| {
                        PutRecordsRequestEntry::builder()
                            .partition_key(format!("key-{i}"))
                            .data(Blob::new(format!("batch-{i}").into_bytes()))
                            .build()
                            .unwrap()
                    })
                    .collect();
                let r = k
                    .put_records()
                    .stream_name("rs")
                    .set_records(Some(entries))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.failed_record_count(), Some(0));
                // Iterator types.
                let recs = read_all(&k, "rs", &shard).await;
                assert_eq!(recs[0].data().as_ref(), b"hello");
                assert_eq!(recs[0].sequence_number(), put.sequence_number());
                let at = |t: ShardIteratorType| {
                    k.get_shard_iterator()
                        .stream_name("rs")
                        .shard_id(&shard)
                        .shard_iterator_type(t)
                };
                let it = at(ShardIteratorType::AfterSequenceNumber)
                    .starting_sequence_number(recs[0].sequence_number())
                    .send()
                    .await
                    .unwrap();
                let r = k
                    .get_records()
                    .shard_iterator(it.shard_iterator().unwrap())
                    .limit(1)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.records()[0].sequence_number(), recs[1].sequence_number());
                let ts = recs[2]
                    .approximate_arrival_timestamp()
                    .unwrap()
                    .to_millis()
                    .unwrap();
                let it = at(ShardIteratorType::AtTimestamp)
                    .timestamp(DateTime::from_millis(ts))
                    .send()
                    .await
                    .unwrap();
                let r = k
                    .get_records()
                    .shard_iterator(it.shard_iterator().unwrap())
                    .limit(1)
                    .send()
                    .await
                    .unwrap();
                let got = r.records()[0]
                    .approximate_arrival_timestamp()
                    .unwrap()
                    .to_millis()
                    .unwrap();
                let all: Vec<i64> = recs
                    .iter()
                    .map(|x| x.approximate_arrival_timestamp().unwrap().to_millis().unwrap())
                    .collect();
                // The SDK may send the timestamp at whole-second precision;
                // the answer is the first record at or after what was sent.
                assert!(
                    got >= ts - ts % 1000 && got <= ts,
                    "got {got}, ts {ts}; arrivals {:?}",
                    &all[..5]
                );
                let it = at(ShardIteratorType::Latest).send().await.unwrap();
                let r = k
                    .get_records()
                    .shard_iterator(it.shard_iterator().unwrap())
                    .send()
                    .await
                    .unwrap();
                assert!(r.records().is_empty());
                assert_eq!(r.millis_behind_latest(), Some(0));
                // Resharding, tags, consumers, retention.
                k.split_shard()
                    .stream_name("rs")
                    .shard_to_split("shardId-000000000000")
                    .new_starting_hash_key((1u128 << 126).to_string())
                    .send()
                    .await
                    .unwrap();
                k.merge_shards()
                    .stream_name("rs")
                    .shard_to_merge("shardId-000000000002")
                    .adjacent_shard_to_merge("shardId-000000000003")
                    .send()
                    .await
                    .unwrap();
                let r = k
                    .update_shard_count()
                    .stream_name("rs")
                    .target_shard_count(4)
                    .scaling_type(ScalingType::UniformScaling)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.target_shard_count(), Some(4));
                k.add_tags_to_stream()
                    .stream_name("rs")
                    .tags("team", "data")
                    .send()
                    .await
                    .unwrap();
                let arn = k
                    .describe_stream_summary()
                    .stream_name("rs")
                    .send()
                    .await
                    .unwrap()
                    .stream_description_summary()
                    .unwrap()
                    .stream_arn()
                    .to_string();
                k.register_stream_consumer()
                    .stream_arn(&arn)
                    .consumer_name("c")
                    .send()
                    .await
                    .unwrap();
                k.increase_stream_retention_period()
                    .stream_name("rs")
                    .retention_period_hours(48)
                    .send()
                    .await
                    .unwrap();
                let err = k.describe_stream().stream_name("nope").send().await.unwrap_err();
                assert!(err.into_service_error().is_resource_not_found_exception());
                let mut n = 0;
                for s in k.list_shards().stream_name("rs").send().await.unwrap().shards() {
                    n += read_all(&k, "rs", s.shard_id()).await.len();
                }
                n
            });
            assert_eq!(total, 201);
        }
        let server = Server::start(tmp.path());
        let k = client(&server);
        rt().block_on(async {
            let mut n = 0;
            for s in k.list_shards().stream_name("rs").send().await.unwrap().shards() {
                n += read_all(&k, "rs", s.shard_id()).await.len();
            }
            assert_eq!(n, total, "every record is back after the restart");
            let tags = k.list_tags_for_stream().stream_name("rs").send().await.unwrap();
            assert_eq!(tags.tags()[0].key(), "team");
            k.delete_stream()
                .stream_name("rs")
                .enforce_consumer_deletion(true)
                .send()
                .await
                .unwrap();
        });
    }

    #[test]
    fn stream_encryption_seals_new_records_and_reports_kms_everywhere() {
        let tmp = tempfile::tempdir().unwrap();
        let server = Server::start(tmp.path());
        let k = client(&server);
        rt().block_on(async {
            use aws_sdk_kinesis::types::EncryptionType;
            k.create_stream()
                .stream_name("enc")
                .shard_count(1)
                .send()
                .await
                .unwrap();
            let err = k
                .start_stream_encryption()
                .stream_name("enc")
                .encryption_type(EncryptionType::Kms)
                .key_id("alias/not-there")
                .send()
                .await
                .unwrap_err()
                .into_service_error();
            assert!(err.is_kms_not_found_exception(), "{err:?}");
            k.start_stream_encryption()
                .stream_name("enc")
                .encryption_type(EncryptionType::Kms)
                .key_id("alias/aws/kinesis")
                .send()
                .await
                .unwrap();
            let d = k
                .describe_stream_summary()
                .stream_name("enc")
                .send()
                .await
                .unwrap();
            let d = d.stream_description_summary().unwrap();
            assert_eq!(d.encryption_type(), Some(&EncryptionType::Kms));
            assert_eq!(d.key_id(), Some("alias/aws/kinesis"));
            let put = k
                .put_record()
                .stream_name("enc")
                .partition_key("pk")
                .data(Blob::new("sealed"))
                .send()
                .await
                .unwrap();
            assert_eq!(put.encryption_type(), Some(&EncryptionType::Kms));
            k.stop_stream_encryption()
                .stream_name("enc")
                .encryption_type(EncryptionType::Kms)
                .key_id("alias/aws/kinesis")
                .send()
                .await
                .unwrap();
            let put = k
                .put_record()
                .stream_name("enc")
                .partition_key("pk")
                .data(Blob::new("clear"))
                .send()
                .await
                .unwrap();
            assert_eq!(put.encryption_type(), Some(&EncryptionType::None));
            let recs = read_all(&k, "enc", "shardId-000000000000").await;
            let got: Vec<(&[u8], Option<&EncryptionType>)> = recs
                .iter()
                .map(|r| (r.data().as_ref(), r.encryption_type()))
                .collect();
            assert_eq!(
                got,
                vec![
                    (&b"sealed"[..], Some(&EncryptionType::Kms)),
                    (&b"clear"[..], Some(&EncryptionType::None))
                ]
            );
        });
    }

    #[test]
    fn accounts_and_regions_from_the_credential_scope_are_isolated() {
        let tmp = tempfile::tempdir().unwrap();
        let server = Server::start(tmp.path());
        let a = client_as(&server, "111122223333", "us-east-1");
        let b = client_as(&server, "444455556666", "us-east-1");
        let a_west = client_as(&server, "111122223333", "us-west-2");
        rt().block_on(async {
            a.create_stream()
                .stream_name("mine")
                .shard_count(1)
                .send()
                .await
                .unwrap();
            let arn = a
                .describe_stream_summary()
                .stream_name("mine")
                .send()
                .await
                .unwrap()
                .stream_description_summary()
                .unwrap()
                .stream_arn()
                .to_string();
            assert_eq!(arn, "arn:aws:kinesis:us-east-1:111122223333:stream/mine");
            assert!(b.list_streams().send().await.unwrap().stream_names().is_empty());
            assert!(a_west
                .list_streams()
                .send()
                .await
                .unwrap()
                .stream_names()
                .is_empty());
            let err = b
                .describe_stream_summary()
                .stream_name("mine")
                .send()
                .await
                .unwrap_err()
                .into_service_error();
            assert!(err.is_resource_not_found_exception(), "{err:?}");
            // Account A's ARN used by account B is refused.
            let err = b
                .put_record()
                .stream_arn(&arn)
                .partition_key("k")
                .data(Blob::new("x"))
                .send()
                .await
                .unwrap_err()
                .into_service_error();
            assert!(err.is_access_denied_exception(), "{err:?}");
            // An iterator of account A is no use to account B.
            let it = a
                .get_shard_iterator()
                .stream_name("mine")
                .shard_id("shardId-000000000000")
                .shard_iterator_type(ShardIteratorType::TrimHorizon)
                .send()
                .await
                .unwrap()
                .shard_iterator
                .unwrap();
            assert!(b.get_records().shard_iterator(it).send().await.is_err());
            assert_eq!(a.list_streams().send().await.unwrap().stream_names(), ["mine"]);
        });
    }

    #[test]
    fn aws_sdk_subscribe_to_shard_receives_a_live_writers_records_then_child_shards() {
        use aws_sdk_kinesis::types::{StartingPosition, SubscribeToShardEventStream};
        let tmp = tempfile::tempdir().unwrap();
        let server = Server::start(tmp.path());
        let k = client(&server);
        rt().block_on(async {
            k.create_stream()
                .stream_name("efo")
                .shard_count(1)
                .send()
                .await
                .unwrap();
            let arn = k
                .describe_stream_summary()
                .stream_name("efo")
                .send()
                .await
                .unwrap()
                .stream_description_summary()
                .unwrap()
                .stream_arn()
                .to_string();
            let consumer = k
                .register_stream_consumer()
                .stream_arn(&arn)
                .consumer_name("rust-app")
                .send()
                .await
                .unwrap()
                .consumer
                .unwrap();
            let mut sub = k
                .subscribe_to_shard()
                .consumer_arn(consumer.consumer_arn())
                .shard_id("shardId-000000000000")
                .starting_position(
                    StartingPosition::builder()
                        .r#type(ShardIteratorType::TrimHorizon)
                        .build()
                        .unwrap(),
                )
                .send()
                .await
                .unwrap();
            // A live writer on another connection; the split closes the shard.
            let writer = {
                let k = k.clone();
                tokio::spawn(async move {
                    let mut sent = Vec::new();
                    for i in 0..120 {
                        let data = format!("live-{i:03}");
                        k.put_record()
                            .stream_name("efo")
                            .partition_key(format!("k{}", i % 5))
                            .data(Blob::new(data.clone()))
                            .send()
                            .await
                            .unwrap();
                        sent.push(data);
                    }
                    k.split_shard()
                        .stream_name("efo")
                        .shard_to_split("shardId-000000000000")
                        .new_starting_hash_key((1u128 << 127).to_string())
                        .send()
                        .await
                        .unwrap();
                    sent
                })
            };
            let mut got = Vec::new();
            let mut children = Vec::new();
            while let Some(ev) = sub.event_stream.recv().await.unwrap() {
                if let SubscribeToShardEventStream::SubscribeToShardEvent(e) = ev {
                    got.extend(
                        e.records()
                            .iter()
                            .map(|r| String::from_utf8(r.data().as_ref().to_vec()).unwrap()),
                    );
                    if !e.child_shards().is_empty() {
                        children = e
                            .child_shards()
                            .iter()
                            .map(|c| c.shard_id().to_string())
                            .collect();
                        break;
                    }
                }
            }
            let sent = writer.await.unwrap();
            assert_eq!(got, sent, "every record, in order, exactly once");
            children.sort();
            assert_eq!(children, ["shardId-000000000001", "shardId-000000000002"]);
        });
    }

    #[test]
    fn deregistering_a_consumer_ends_its_subscription_with_an_exception_event() {
        use aws_sdk_kinesis::types::StartingPosition;
        let tmp = tempfile::tempdir().unwrap();
        let server = Server::start(tmp.path());
        let k = client(&server);
        rt().block_on(async {
            k.create_stream()
                .stream_name("d")
                .shard_count(1)
                .send()
                .await
                .unwrap();
            let arn = "arn:aws:kinesis:us-east-1:000000000000:stream/d";
            let c = k
                .register_stream_consumer()
                .stream_arn(arn)
                .consumer_name("gone")
                .send()
                .await
                .unwrap()
                .consumer
                .unwrap();
            let mut sub = k
                .subscribe_to_shard()
                .consumer_arn(c.consumer_arn())
                .shard_id("shardId-000000000000")
                .starting_position(
                    StartingPosition::builder()
                        .r#type(ShardIteratorType::Latest)
                        .build()
                        .unwrap(),
                )
                .send()
                .await
                .unwrap();
            k.deregister_stream_consumer()
                .consumer_arn(c.consumer_arn())
                .send()
                .await
                .unwrap();
            // The write wakes the subscription, which finds its consumer gone.
            k.put_record()
                .stream_name("d")
                .partition_key("k")
                .data(Blob::new("x"))
                .send()
                .await
                .unwrap();
            let mut outcome = None;
            for _ in 0..10 {
                match sub.event_stream.recv().await {
                    Ok(Some(_)) => continue,
                    Ok(None) => break,
                    Err(e) => {
                        outcome = Some(format!("{:?}", e.into_service_error()));
                        break;
                    }
                }
            }
            let outcome = outcome.expect("the subscription ends with an error");
            assert!(outcome.contains("ResourceNotFound"), "{outcome}");
        });
    }
}

fn epoch_seconds_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as f64
        / 1000.0
}

async fn shard_ids(c: &reqwest::Client, server: &Server, filter: Value) -> Vec<String> {
    let (s, r) = json_call(
        c,
        server,
        "ListShards",
        json!({"StreamName": "f", "ShardFilter": filter}),
    )
    .await;
    assert_eq!(s, 200, "{filter}: {r}");
    r["Shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            s["ShardId"]
                .as_str()
                .unwrap()
                .trim_start_matches("shardId-00000000000")
                .to_string()
        })
        .collect()
}

#[test]
fn list_shards_filters_follow_shard_lifetimes_and_consumer_lists_page() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path());
    let pause = || std::thread::sleep(std::time::Duration::from_millis(50));
    rt().block_on(async {
        let c = reqwest::Client::new();
        json_call(
            &c,
            &server,
            "CreateStream",
            json!({"StreamName": "f", "ShardCount": 2}),
        )
        .await;
        pause();
        let before_split = epoch_seconds_now();
        pause();
        let (s, _) = json_call(
            &c,
            &server,
            "SplitShard",
            json!({"StreamName": "f", "ShardToSplit": "shardId-000000000000", "NewStartingHashKey": "12345"}),
        )
        .await;
        assert_eq!(s, 200);
        pause();
        let after_split = epoch_seconds_now();
        // Shard 0 closed at the split; its children 2 and 3 opened then.
        assert_eq!(
            shard_ids(&c, &server, json!({"Type": "FROM_TRIM_HORIZON"})).await,
            ["0", "1", "2", "3"]
        );
        assert_eq!(
            shard_ids(&c, &server, json!({"Type": "AT_LATEST"})).await,
            ["1", "2", "3"]
        );
        // The stream is younger than its retention: its trim horizon is its
        // creation, when shards 0 and 1 were open.
        assert_eq!(
            shard_ids(&c, &server, json!({"Type": "AT_TRIM_HORIZON"})).await,
            ["0", "1"]
        );
        assert_eq!(
            shard_ids(
                &c,
                &server,
                json!({"Type": "AT_TIMESTAMP", "Timestamp": before_split})
            )
            .await,
            ["0", "1"]
        );
        assert_eq!(
            shard_ids(
                &c,
                &server,
                json!({"Type": "AT_TIMESTAMP", "Timestamp": after_split})
            )
            .await,
            ["1", "2", "3"]
        );
        // Before the trim horizon counts as the horizon.
        assert_eq!(
            shard_ids(&c, &server, json!({"Type": "AT_TIMESTAMP", "Timestamp": 1000.0})).await,
            ["0", "1"]
        );
        assert_eq!(
            shard_ids(
                &c,
                &server,
                json!({"Type": "FROM_TIMESTAMP", "Timestamp": before_split})
            )
            .await,
            ["0", "1", "2", "3"]
        );
        assert_eq!(
            shard_ids(
                &c,
                &server,
                json!({"Type": "FROM_TIMESTAMP", "Timestamp": after_split})
            )
            .await,
            ["1", "2", "3"]
        );
        assert_eq!(
            shard_ids(
                &c,
                &server,
                json!({"Type": "AFTER_SHARD_ID", "ShardId": "shardId-000000000001"})
            )
            .await,
            ["2", "3"]
        );
        for bad in [json!({"Type": "AT_TIMESTAMP"}), json!({"Type": "FROM_TIMESTAMP"})] {
            let (s, r) = json_call(
                &c,
                &server,
                "ListShards",
                json!({"StreamName": "f", "ShardFilter": bad}),
            )
            .await;
            assert_eq!(s, 400);
            assert_eq!(r["__type"], "InvalidArgumentException", "{r}");
        }
        // An unknown filter type is refused before the stream is looked up.
        let (s, r) = json_call(
            &c,
            &server,
            "ListShards",
            json!({"StreamName": "nope", "ShardFilter": {"Type": "SOMETIMES"}}),
        )
        .await;
        assert_eq!(s, 400);
        assert_eq!(r["__type"], "ValidationException", "{r}");
        let (s, r) = json_call(
            &c,
            &server,
            "ListShards",
            json!({"StreamName": "f", "MaxResults": 10000}),
        )
        .await;
        assert_eq!(s, 200);
        assert_eq!(r["Shards"].as_array().unwrap().len(), 4);

        // ListStreamConsumers pages with MaxResults and NextToken.
        let (_, d) = json_call(&c, &server, "DescribeStreamSummary", json!({"StreamName": "f"})).await;
        let arn = d["StreamDescriptionSummary"]["StreamARN"]
            .as_str()
            .unwrap()
            .to_string();
        for i in 0..5 {
            let (s, r) = json_call(
                &c,
                &server,
                "RegisterStreamConsumer",
                json!({"StreamARN": arn, "ConsumerName": format!("c{i}")}),
            )
            .await;
            assert_eq!(s, 200, "{r}");
        }
        let mut seen = Vec::new();
        let mut token: Option<String> = None;
        let mut pages = 0;
        loop {
            let mut body = json!({"StreamARN": arn, "MaxResults": 2});
            if let Some(t) = &token {
                body["NextToken"] = json!(t);
            }
            let (s, r) = json_call(&c, &server, "ListStreamConsumers", body).await;
            assert_eq!(s, 200, "{r}");
            let page = r["Consumers"].as_array().unwrap();
            assert!(page.len() <= 2);
            seen.extend(
                page.iter()
                    .map(|c| c["ConsumerName"].as_str().unwrap().to_string()),
            );
            pages += 1;
            match r["NextToken"].as_str() {
                Some(t) => token = Some(t.to_string()),
                None => break,
            }
        }
        assert_eq!(pages, 3);
        assert_eq!(seen, ["c0", "c1", "c2", "c3", "c4"]);
        let (s, r) = json_call(&c, &server, "ListStreamConsumers", json!({"StreamARN": arn})).await;
        assert_eq!(s, 200);
        assert_eq!(r["Consumers"].as_array().unwrap().len(), 5);
        assert!(r.get("NextToken").is_none(), "{r}");
    });
}

#[test]
fn a_subscription_replaced_by_a_newer_one_ends_with_resource_in_use() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path());
    rt().block_on(async {
        let h2 = reqwest::Client::builder()
            .http2_prior_knowledge()
            .build()
            .unwrap();
        json_call(&h2, &server, "CreateStream", json!({"StreamName": "r", "ShardCount": 1})).await;
        let (_, c) = json_call(
            &h2,
            &server,
            "RegisterStreamConsumer",
            json!({"StreamARN": "arn:aws:kinesis:us-east-1:000000000000:stream/r", "ConsumerName": "old-and-new"}),
        )
        .await;
        let consumer_arn = c["Consumer"]["ConsumerARN"].as_str().unwrap().to_string();
        let subscribe = || {
            h2.post(server.endpoint())
                .header("X-Amz-Target", "Kinesis_20131202.SubscribeToShard")
                .header("Content-Type", "application/x-amz-json-1.1")
                .body(
                    serde_json::to_vec(&json!({
                        "ConsumerARN": consumer_arn,
                        "ShardId": "shardId-000000000000",
                        "StartingPosition": {"Type": "LATEST"}
                    }))
                    .unwrap(),
                )
                .send()
        };
        let mut old = subscribe().await.unwrap();
        assert_eq!(old.status(), 200);
        // Five seconds later a second subscription takes over.
        tokio::time::sleep(std::time::Duration::from_millis(5_200)).await;
        let new = subscribe().await.unwrap();
        assert_eq!(new.status(), 200);
        let mut buf = bytes::BytesMut::new();
        let mut decoder = aws_smithy_eventstream::frame::MessageFrameDecoder::new();
        let mut exception = None;
        'read: while let Some(chunk) = old.chunk().await.unwrap() {
            buf.extend_from_slice(&chunk);
            while let aws_smithy_eventstream::frame::DecodedFrame::Complete(m) = decoder.decode_frame(&mut buf).unwrap() {
                let kind = m
                    .headers()
                    .iter()
                    .find(|h| h.name().as_str() == ":exception-type")
                    .and_then(|h| h.value().as_string().ok().map(|s| s.as_str().to_string()));
                if kind.is_some() {
                    exception = kind;
                    break 'read;
                }
            }
        }
        assert_eq!(exception.as_deref(), Some("ResourceInUseException"));
        drop(new);
    });
}

#[test]
fn warm_throughput_is_set_at_creation_and_described_and_mode_switches_are_limited() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path());
    rt().block_on(async {
        let c = reqwest::Client::new();
        let (s, r) = json_call(
            &c,
            &server,
            "CreateStream",
            json!({"StreamName": "p", "ShardCount": 1, "WarmThroughputMiBps": 10}),
        )
        .await;
        assert_eq!((s, r["__type"].as_str()), (400, Some("ValidationException")), "{r}");
        let (s, r) = json_call(
            &c,
            &server,
            "CreateStream",
            json!({"StreamName": "w", "StreamModeDetails": {"StreamMode": "ON_DEMAND"}, "WarmThroughputMiBps": 40}),
        )
        .await;
        assert_eq!(s, 200, "{r}");
        let (_, d) = json_call(&c, &server, "DescribeStreamSummary", json!({"StreamName": "w"})).await;
        let summary = &d["StreamDescriptionSummary"];
        assert_eq!(summary["WarmThroughput"], json!({"TargetMiBps": 40, "CurrentMiBps": 40}), "{d}");
        let arn = summary["StreamARN"].as_str().unwrap().to_string();
        let (_, r) = json_call(
            &c,
            &server,
            "UpdateStreamWarmThroughput",
            json!({"StreamARN": arn, "WarmThroughputMiBps": 100}),
        )
        .await;
        assert_eq!(r["WarmThroughput"]["TargetMiBps"], 100, "{r}");
        let (_, d) = json_call(&c, &server, "DescribeStreamSummary", json!({"StreamName": "w"})).await;
        assert_eq!(d["StreamDescriptionSummary"]["WarmThroughput"]["CurrentMiBps"], 100, "{d}");

        // Two capacity-mode switches a day, then LimitExceededException.
        let switch = |mode: &'static str| {
            let (c, arn, server) = (&c, arn.clone(), &server);
            async move {
                json_call(
                    c,
                    server,
                    "UpdateStreamMode",
                    json!({"StreamARN": arn, "StreamModeDetails": {"StreamMode": mode}}),
                )
                .await
            }
        };
        assert_eq!(switch("PROVISIONED").await.0, 200);
        let (_, d) = json_call(&c, &server, "DescribeStreamSummary", json!({"StreamName": "w"})).await;
        assert!(
            d["StreamDescriptionSummary"].get("WarmThroughput").is_none(),
            "a provisioned stream has no warm throughput: {d}"
        );
        assert_eq!(switch("ON_DEMAND").await.0, 200);
        let (s, r) = switch("PROVISIONED").await;
        assert_eq!((s, r["__type"].as_str()), (400, Some("LimitExceededException")), "{r}");
        let (_, d) = json_call(&c, &server, "DescribeStreamSummary", json!({"StreamName": "w"})).await;
        assert_eq!(d["StreamDescriptionSummary"]["StreamModeDetails"]["StreamMode"], "ON_DEMAND");
    });
}

/// One JSON call that must succeed (`refused: None`) or be refused with
/// the error named; returns the answer.
async fn expect(c: &reqwest::Client, server: &Server, op: &str, body: Value, refused: Option<&str>) -> Value {
    let (s, v) = json_call(c, server, op, body).await;
    match refused {
        None => assert_eq!(s, 200, "{op}: {v}"),
        Some(kind) => assert_eq!((s, v["__type"].as_str()), (400, Some(kind)), "{op}: {v}"),
    }
    v
}

/// Found by an API audit against the Kinesis model: a consumer ARN names the
/// consumer registered at its creation time, not a later one of the same
/// name (which starts without the old one's tags); ListShards refuses a
/// NextToken beside a start shard or a creation time instead of ignoring
/// one, unless the paginator's StreamName comes too; ListStreams answers at
/// most 100 names whatever Limit asks.
#[test]
fn stale_consumer_arns_name_nothing_and_list_calls_keep_the_models_bounds() {
    const GONE: Option<&str> = Some("ResourceNotFoundException");
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path());
    rt().block_on(async {
        let c = &reqwest::Client::new();
        let server = &server;
        expect(
            c,
            server,
            "CreateStream",
            json!({"StreamName": "s", "ShardCount": 3}),
            None,
        )
        .await;
        let d = expect(
            c,
            server,
            "DescribeStreamSummary",
            json!({"StreamName": "s"}),
            None,
        )
        .await;
        let stream_arn = d["StreamDescriptionSummary"]["StreamARN"]
            .as_str()
            .unwrap()
            .to_string();
        let register = json!({"StreamARN": stream_arn, "ConsumerName": "c"});
        let r = expect(c, server, "RegisterStreamConsumer", register.clone(), None).await;
        let old_arn = r["Consumer"]["ConsumerARN"].as_str().unwrap().to_string();
        expect(
            c,
            server,
            "DescribeStreamConsumer",
            json!({"ConsumerARN": old_arn}),
            None,
        )
        .await;
        // The same name with another creation time names nothing.
        let (prefix, created) = old_arn.rsplit_once(':').unwrap();
        let other = format!("{prefix}:{}", created.parse::<i64>().unwrap() - 7);
        for (op, body) in [
            ("DescribeStreamConsumer", json!({"ConsumerARN": other})),
            ("DeregisterStreamConsumer", json!({"ConsumerARN": other})),
            ("TagResource", json!({"ResourceARN": other, "Tags": {"k": "v"}})),
            ("ListTagsForResource", json!({"ResourceARN": other})),
        ] {
            expect(c, server, op, body, GONE).await;
        }
        // Tags of the old consumer do not pass to a new one of its name.
        expect(
            c,
            server,
            "TagResource",
            json!({"ResourceARN": old_arn, "Tags": {"team": "old"}}),
            None,
        )
        .await;
        // Deregistered and registered again (a second later, so that its
        // ARN differs): the old ARN no longer names it.
        expect(
            c,
            server,
            "DeregisterStreamConsumer",
            json!({"ConsumerARN": old_arn}),
            None,
        )
        .await;
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let r = expect(c, server, "RegisterStreamConsumer", register, None).await;
        let new_arn = r["Consumer"]["ConsumerARN"].as_str().unwrap().to_string();
        assert_ne!(new_arn, old_arn);
        expect(
            c,
            server,
            "DescribeStreamConsumer",
            json!({"ConsumerARN": old_arn}),
            GONE,
        )
        .await;
        expect(
            c,
            server,
            "DescribeStreamConsumer",
            json!({"ConsumerARN": new_arn}),
            None,
        )
        .await;
        let v = expect(
            c,
            server,
            "ListTagsForResource",
            json!({"ResourceARN": new_arn}),
            None,
        )
        .await;
        assert_eq!(v["Tags"], json!([]), "{v}");

        // ListShards: a NextToken carries where the listing goes on.
        let r = expect(
            c,
            server,
            "ListShards",
            json!({"StreamName": "s", "MaxResults": 1}),
            None,
        )
        .await;
        let token = r["NextToken"].as_str().unwrap().to_string();
        // Any of the first page's parameters beside it is refused, as at
        // AWS, StreamName too (which botocore's paginator resends, and
        // which fails at AWS as well).
        for (other, value) in [
            ("StreamName", json!("s")),
            (
                "StreamARN",
                json!("arn:aws:kinesis:us-east-1:000000000000:stream/s"),
            ),
            ("ExclusiveStartShardId", json!("shardId-000000000000")),
            ("StreamCreationTimestamp", json!(1_700_000_000)),
        ] {
            let v = expect(
                c,
                server,
                "ListShards",
                json!({"NextToken": token, other: value}),
                Some("InvalidArgumentException"),
            )
            .await;
            assert_eq!(
                v["message"],
                format!("NextToken and {other} cannot be provided together."),
                "{v}"
            );
        }
        let r = expect(c, server, "ListShards", json!({"NextToken": token}), None).await;
        assert_eq!(r["Shards"][0]["ShardId"], "shardId-000000000001");

        // ListStreams: at most 100 names, the rest behind a NextToken.
        for i in 0..101 {
            expect(
                c,
                server,
                "CreateStream",
                json!({"StreamName": format!("many-{i:03}"), "ShardCount": 1}),
                None,
            )
            .await;
        }
        let r = expect(c, server, "ListStreams", json!({"Limit": 150}), None).await;
        assert_eq!(r["StreamNames"].as_array().unwrap().len(), 100);
        assert_eq!(r["HasMoreStreams"], true);
        let r = expect(
            c,
            server,
            "ListStreams",
            json!({"NextToken": r["NextToken"]}),
            None,
        )
        .await;
        assert_eq!(r["StreamNames"].as_array().unwrap().len(), 2, "{r}");
    });
}

//! The client verbs as a user runs them: a spawned binary against a real
//! server.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::kill9::{start, start_with};

fn run(endpoint: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shardlog"))
        .args(["--endpoint", endpoint])
        .args(args)
        .env("SHARDLOG_LOG", "off")
        .output()
        .unwrap()
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).to_string()
}

fn workspace() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn every_verb_works_against_a_server_and_json_output_parses() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let ep = server.endpoint.as_str();
    ok(&run(ep, &["stream", "create", "v", "--shards", "2"]));
    let list: Value = serde_json::from_str(&ok(&run(ep, &["--json", "stream", "list"]))).unwrap();
    assert_eq!(list, serde_json::json!(["v"]));
    // put: a value, a file, stdin lines.
    let put: Value =
        serde_json::from_str(&ok(&run(ep, &["--json", "put", "v", "one", "--key", "k"]))).unwrap();
    assert!(put["sequence_number"].as_str().unwrap().starts_with("49"));
    let file = dir.path().join("blob.bin");
    std::fs::write(&file, [0u8, 159, 146, 150]).unwrap();
    ok(&run(
        ep,
        &["put", "v", "--file", file.to_str().unwrap(), "--key", "k"],
    ));
    let mut child = Command::new(env!("CARGO_BIN_EXE_shardlog"))
        .args(["--endpoint", ep, "put", "v", "--key", "k"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"two\nthree\n").unwrap();
    assert!(child.wait_with_output().unwrap().status.success());
    // get: JSON lines, binary data as base64; --raw.
    let lines = ok(&run(ep, &["get", "v"]));
    let recs: Vec<Value> = lines.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(recs.len(), 4);
    let texts: Vec<Option<&str>> = recs.iter().map(|r| r["data"].as_str()).collect();
    assert_eq!(texts, vec![Some("one"), None, Some("two"), Some("three")]);
    assert_eq!(recs[1]["data_base64"], "AJ+Slg==");
    let limited = ok(&run(ep, &["get", "v", "--limit", "2"]));
    assert_eq!(limited.lines().count(), 2);
    let after = ok(&run(
        ep,
        &[
            "get",
            "v",
            "--raw",
            "--from",
            &format!("after:{}", recs[2]["sequence_number"].as_str().unwrap()),
        ],
    ));
    assert_eq!(after, "three\n");
    // describe, retention, reshard, consumers.
    let d: Value = serde_json::from_str(&ok(&run(ep, &["--json", "stream", "describe", "v"]))).unwrap();
    assert_eq!(d["open_shards"], 2);
    ok(&run(ep, &["stream", "retention", "v", "48"]));
    ok(&run(ep, &["reshard", "split", "v", "shardId-000000000000"]));
    ok(&run(
        ep,
        &[
            "reshard",
            "merge",
            "v",
            "shardId-000000000002",
            "shardId-000000000003",
        ],
    ));
    ok(&run(ep, &["reshard", "scale", "v", "4"]));
    let d: Value = serde_json::from_str(&ok(&run(ep, &["--json", "stream", "describe", "v"]))).unwrap();
    assert_eq!(
        (d["open_shards"].as_i64(), d["retention_hours"].as_i64()),
        (Some(4), Some(48))
    );
    ok(&run(ep, &["consumer", "register", "v", "app"]));
    let c: Value = serde_json::from_str(&ok(&run(ep, &["--json", "consumer", "list", "v"]))).unwrap();
    assert_eq!(c[0]["name"], "app");
    ok(&run(ep, &["consumer", "deregister", "v", "app"]));
    ok(&run(ep, &["checkpoint", "v"]));
    ok(&run(ep, &["stream", "delete", "v"]));
    // Errors are one line and a non-zero status.
    let missing = run(ep, &["stream", "describe", "v"]);
    assert_eq!(missing.status.code(), Some(2));
    let err = String::from_utf8_lossy(&missing.stderr).to_string();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("ResourceNotFoundException"), "{err}");
    let nowhere = run("http://127.0.0.1:9", &["stream", "list"]);
    assert_eq!(nowhere.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&nowhere.stderr).contains("cannot reach http://127.0.0.1:9"));
}

/// A client verb run with exactly these AWS variables (none inherited).
fn run_as(endpoint: &str, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_shardlog"));
    cmd.args(["--endpoint", endpoint])
        .args(args)
        .env("SHARDLOG_LOG", "off");
    for k in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_SHARED_CREDENTIALS_FILE",
    ] {
        cmd.env_remove(k);
    }
    cmd.envs(env.iter().copied()).output().unwrap()
}

#[test]
fn client_verbs_sign_with_environment_or_profile_keys_against_an_authenticating_server() {
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("credentials");
    std::fs::write(
        &creds,
        "[ops]\naws_access_key_id = AKIDOPS\naws_secret_access_key = ops/secret+1\naccount_id = 123456789012\n",
    )
    .unwrap();
    let server = start_with(
        &dir.path().join("data"),
        &["--credentials-file", creds.to_str().unwrap()],
    );
    let ep = server.endpoint.as_str();
    let keys = [
        ("AWS_ACCESS_KEY_ID", "AKIDOPS"),
        ("AWS_SECRET_ACCESS_KEY", "ops/secret+1"),
    ];
    ok(&run_as(
        ep,
        &keys,
        &["stream", "create", "signed", "--shards", "1"],
    ));
    ok(&run_as(ep, &keys, &["put", "signed", "hello", "--key", "k"]));
    let profile = [
        ("AWS_SHARED_CREDENTIALS_FILE", creds.to_str().unwrap()),
        ("AWS_PROFILE", "ops"),
    ];
    let got = ok(&run_as(ep, &profile, &["get", "signed", "--raw"]));
    assert_eq!(got, "hello\n");
    let d: Value = serde_json::from_str(&ok(&run_as(
        ep,
        &profile,
        &["--json", "stream", "describe", "signed"],
    )))
    .unwrap();
    assert!(
        d.to_string().contains("123456789012"),
        "the key's account owns the stream: {d}"
    );
    // The load generator and the groups verb (plain JSON callers, not the
    // SDK) sign with the same keys.
    let bench = ok(&run_as(
        ep,
        &keys,
        &[
            "--json",
            "bench",
            "--seconds",
            "1",
            "--records",
            "300",
            "--batch",
            "50",
            "--connections",
            "2",
        ],
    ));
    let b: Value = serde_json::from_str(bench.lines().last().unwrap()).unwrap();
    assert_eq!(b["verify"]["ok"], true, "{b}");
    assert_eq!(b["verify"]["read"], 300, "{b}");
    ok(&run_as(ep, &profile, &["groups", "--stream", "signed"]));

    let wrong = run_as(
        ep,
        &[
            ("AWS_ACCESS_KEY_ID", "AKIDOPS"),
            ("AWS_SECRET_ACCESS_KEY", "wrong"),
        ],
        &["stream", "list"],
    );
    assert_eq!(wrong.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("InvalidSignatureException"));
    let anonymous = run_as(ep, &[], &["stream", "list"]);
    assert_eq!(anonymous.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&anonymous.stderr).contains("UnrecognizedClientException"));
}

#[test]
fn import_then_export_round_trips_the_sample_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let ep = server.endpoint.as_str();
    ok(&run(ep, &["stream", "create", "clicks", "--shards", "1"]));
    let sample = workspace().join("data/samples/clickstream.jsonl");
    let imported = ok(&run(
        ep,
        &[
            "--json",
            "import",
            "clicks",
            sample.to_str().unwrap(),
            "--key-field",
            "user_id",
        ],
    ));
    let v: Value = serde_json::from_str(&imported).unwrap();
    assert_eq!(v["records"], 2000);
    let out = dir.path().join("export.jsonl");
    ok(&run(ep, &["export", "clicks", "--to", out.to_str().unwrap()]));
    let exported: Vec<String> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| {
            let r: Value = serde_json::from_str(l).unwrap();
            r["data"].as_str().unwrap().to_string()
        })
        .collect();
    let original: Vec<String> = std::fs::read_to_string(&sample)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(exported, original, "one shard keeps the file's order exactly");
    // Raw lines from stdin, and CSV with a header.
    let csv = dir.path().join("x.csv");
    std::fs::write(&csv, "user,item\nu1,apple\nu2,pear\n").unwrap();
    ok(&run(
        ep,
        &[
            "import",
            "clicks",
            csv.to_str().unwrap(),
            "--format",
            "csv",
            "--key-field",
            "user",
        ],
    ));
    let tail = ok(&run(ep, &["get", "clicks", "--raw", "--from", "trim-horizon"]));
    let last: Vec<&str> = tail.lines().rev().take(2).collect();
    assert_eq!(
        last,
        vec![
            r#"{"item":"pear","user":"u2"}"#,
            r#"{"item":"apple","user":"u1"}"#
        ]
    );
}

#[test]
fn tail_follows_a_stream_through_a_split() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let ep = server.endpoint.clone();
    ok(&run(&ep, &["stream", "create", "t", "--shards", "1"]));
    let mut child = Command::new(env!("CARGO_BIN_EXE_shardlog"))
        .args(["--endpoint", &ep, "tail", "t", "--from", "trim-horizon", "--raw"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut got = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            let done = line == "after-9";
            got.push(line);
            if done {
                break;
            }
        }
        got
    });
    for i in 0..10 {
        ok(&run(
            &ep,
            &["put", "t", &format!("before-{i}"), "--key", &format!("k{i}")],
        ));
    }
    ok(&run(&ep, &["reshard", "split", "t", "shardId-000000000000"]));
    for i in 0..10 {
        ok(&run(&ep, &["put", "t", &format!("after-{i}"), "--key", "k0"]));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while !reader.is_finished() {
        assert!(Instant::now() < deadline, "tail did not follow into the children");
        std::thread::sleep(Duration::from_millis(50));
    }
    let got = reader.join().unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let want: Vec<String> = (0..10)
        .map(|i| format!("before-{i}"))
        .chain((0..10).map(|i| format!("after-{i}")))
        .collect();
    assert_eq!(got, want, "parent first, then the child holding key k0, in order");
}

#[test]
fn each_api_call_logs_one_json_line_at_debug() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("server.log");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let mut child = Command::new(env!("CARGO_BIN_EXE_shardlog"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(dir.path().join("data"))
        .env("SHARDLOG_LOG", "shardlog::request=debug")
        .env("SHARDLOG_LOG_FORMAT", "json")
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    }
    ok(&run(&endpoint, &["stream", "create", "logged"]));
    let _ = run(&endpoint, &["stream", "describe", "missing"]);
    let _ = child.kill();
    let _ = child.wait();
    let lines: Vec<Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|v: &Value| v["fields"]["message"] == "api call")
        .collect();
    let ops: Vec<(&str, bool)> = lines
        .iter()
        .map(|v| {
            (
                v["fields"]["operation"].as_str().unwrap(),
                v["fields"]["ok"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        ops,
        vec![("CreateStream", true), ("DescribeStreamSummary", false)]
    );
    assert_eq!(lines[1]["fields"]["error"], "ResourceNotFoundException");
}

#[test]
fn bench_get_of_an_earlier_put_verifies_against_its_acked_file_or_checks_integrity_without_one() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let acked = dir.path().join("acked.txt");
    let acked_arg = acked.to_str().unwrap();
    let common = ["--stream", "later", "--record-bytes", "100", "--shards", "2"];
    let put = |extra: &[&str]| {
        let mut a = vec![
            "--json",
            "bench",
            "--mode",
            "put",
            "--keep",
            "--records",
            "300",
            "--batch",
            "30",
        ];
        a.extend(common);
        a.extend(extra);
        run(&server.endpoint, &a)
    };
    let get = |extra: &[&str]| {
        let mut a = vec!["--json", "bench", "--mode", "get", "--keep"];
        a.extend(common);
        a.extend(extra);
        run(&server.endpoint, &a)
    };
    let put_out: Value = serde_json::from_str(&ok(&put(&["--acked-file", acked_arg]))).unwrap();
    assert_eq!(put_out["phases"][0]["records"], 300, "{put_out}");
    assert_eq!(std::fs::read_to_string(&acked).unwrap().lines().count(), 300);

    // With the file: every acknowledged record, once, with its sequence number.
    let v: Value = serde_json::from_str(&ok(&get(&["--acked-file", acked_arg]))).unwrap();
    assert_eq!(v["verify"]["ok"], true, "{v}");
    assert_eq!(v["verify"]["acknowledged"], 300, "{v}");
    assert_eq!(v["verify"]["missing"], 0, "{v}");

    // Without it: only what the records say of themselves, and said so.
    let v: Value = serde_json::from_str(&ok(&get(&[]))).unwrap();
    assert_eq!(v["verify"]["ok"], true, "{v}");
    assert_eq!(v["verify"]["read"], 300, "{v}");
    assert!(v["verify"]["acknowledged"].is_null(), "{v}");

    // A file naming a record that is not in the stream, or a wrong
    // sequence number, fails the run.
    let text = std::fs::read_to_string(&acked).unwrap();
    let (first, rest) = text.split_once('\n').unwrap();
    let (id, seq) = first.split_once(' ').unwrap();
    let wrong_seq = format!("{id} {}0\n{rest}", seq);
    std::fs::write(&acked, &wrong_seq).unwrap();
    let bad = get(&["--acked-file", acked_arg]);
    assert!(!bad.status.success(), "{bad:?}");
    let v: Value = serde_json::from_slice(&bad.stdout).unwrap();
    assert_eq!(v["verify"]["wrong_sequence_number"], 1, "{v}");
    std::fs::write(&acked, format!("{text}999999 1\n")).unwrap();
    let bad = get(&["--acked-file", acked_arg]);
    let v: Value = serde_json::from_slice(&bad.stdout).unwrap();
    assert_eq!(v["verify"]["missing"], 1, "{v}");
    assert!(!bad.status.success());
    // A file that is not one gets a message naming the line.
    std::fs::write(&acked, "7 x\n").unwrap();
    let bad = get(&["--acked-file", acked_arg]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("line 1"), "{bad:?}");
}

#[test]
fn bench_puts_replays_and_verifies_every_acknowledged_record() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let out = ok(&run(
        &server.endpoint,
        &[
            "--json",
            "bench",
            "--seconds",
            "1",
            "--connections",
            "2",
            "--batch",
            "20",
            "--record-bytes",
            "256",
            "--shards",
            "2",
        ],
    ));
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["verify"]["ok"], true, "{v}");
    let put = &v["phases"][0];
    assert_eq!(put["phase"], "put");
    assert!(put["records"].as_u64().unwrap() > 0);
    assert_eq!(v["verify"]["acknowledged"], put["records"]);
    assert!(put["latency_us"]["p99"].as_u64().unwrap() >= put["latency_us"]["p50"].as_u64().unwrap());
    let single = ok(&run(
        &server.endpoint,
        &["bench", "--records", "50", "--batch", "1", "--stream", "one"],
    ));
    assert!(
        single.contains("verify:") && single.contains("\"ok\":true"),
        "{single}"
    );
    // Mixed: consumers tail the stream from LATEST while the puts run, and
    // must see every acknowledged record once; end-to-end latency per record.
    let mixed = ok(&run(
        &server.endpoint,
        &[
            "--json",
            "bench",
            "--mode",
            "mixed",
            "--seconds",
            "1",
            "--connections",
            "2",
            "--batch",
            "10",
            "--hot-key-share",
            "0.3",
            "--stream",
            "mixed",
        ],
    ));
    let m: Value = serde_json::from_str(&mixed).unwrap();
    assert_eq!(m["verify"]["ok"], true, "{m}");
    let names: Vec<&str> = m["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["phase"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["put", "consume", "e2e"]);
    let put_records = m["phases"][0]["records"].as_u64().unwrap();
    assert!(put_records > 0);
    assert_eq!(m["verify"]["acknowledged"].as_u64(), Some(put_records), "{m}");
    assert_eq!(m["phases"][2]["records"].as_u64(), Some(put_records), "{m}");
    assert!(m["phases"][2]["latency_us"]["p50"].as_u64().unwrap() > 0, "{m}");
    let bad = run(&server.endpoint, &["bench", "--mode", "sideways"]);
    assert_eq!(bad.status.code(), Some(2), "{bad:?}");
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("--mode must be"),
        "{bad:?}"
    );
}

#[test]
fn bench_groups_and_verbs_reach_an_https_server_that_ca_bundle_trusts() {
    let dir = tempfile::tempdir().unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    let data = dir.path().join("data");
    let server = start_with(
        &data,
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    // The certificate names localhost; the server listens on 127.0.0.1.
    let endpoint = server.endpoint.replace("http://127.0.0.1", "https://localhost");
    let trusted = ["--ca-bundle", cert.to_str().unwrap()];
    let with = |args: &[&str]| -> Vec<String> { trusted.iter().chain(args).map(|s| s.to_string()).collect() };
    let args = with(&[
        "--json",
        "bench",
        "--records",
        "200",
        "--batch",
        "50",
        "--connections",
        "2",
        "--keep",
    ]);
    let out = ok(&run(
        &endpoint,
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    ));
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["verify"]["ok"], true, "{v}");
    assert_eq!(v["verify"]["acknowledged"], 200, "{v}");
    // The SDK-based verbs and the groups view go through the same trust.
    let args = with(&["--json", "stream", "list"]);
    let out = ok(&run(
        &endpoint,
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    ));
    assert!(out.contains("shardlog-bench"), "{out}");
    let args = with(&["--json", "groups", "--stream", "shardlog-bench"]);
    ok(&run(
        &endpoint,
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    ));
    // Without the bundle the self-signed certificate is refused.
    let refused = run(&endpoint, &["bench", "--records", "10"]);
    assert!(!refused.status.success());
    let refused = run(&endpoint, &["stream", "list"]);
    assert!(!refused.status.success());
    // A bundle that is not PEM is a clear error.
    let bad = dir.path().join("bad.pem");
    std::fs::write(&bad, "not a certificate").unwrap();
    let o = run(
        &endpoint,
        &["--ca-bundle", bad.to_str().unwrap(), "stream", "list"],
    );
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("holds no PEM certificate"),
        "{o:?}"
    );
}

/// Reads one sample of the server's `/metrics` (a plain HTTP/1.0 GET).
pub(crate) fn metric(endpoint: &str, name: &str) -> Option<u64> {
    let addr = endpoint.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(s, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut text = String::new();
    std::io::Read::read_to_string(&mut s, &mut text).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
}

#[test]
fn a_server_with_a_page_cache_window_advises_pages_behind_it_out_and_serves_every_record() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_with(dir.path(), &["--page-cache-window-bytes", "1"]);
    assert_eq!(
        metric(&server.endpoint, "shardlog_page_cache_drop_advised_bytes_total"),
        Some(0)
    );
    // 12 MB into one shard: two or three 4 MiB steps of pages fall behind a
    // window of one byte and are advised out of the cache; the replay reads
    // every record back and verifies it.
    let out = ok(&run(
        &server.endpoint,
        &[
            "--json",
            "bench",
            "--records",
            "12000",
            "--batch",
            "500",
            "--connections",
            "2",
            "--shards",
            "1",
            "--seconds",
            "60",
        ],
    ));
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["verify"]["ok"], true, "{v}");
    assert_eq!(v["verify"]["acknowledged"], 12000, "{v}");
    let advised = metric(&server.endpoint, "shardlog_page_cache_drop_advised_bytes_total").unwrap();
    assert!(advised >= 8 * 1024 * 1024, "advised {advised} bytes");
}

#[test]
fn a_server_journals_small_writes_only_when_told_to() {
    for (args, journaled) in [(&[][..], false), (&["--journal", "true"][..], true)] {
        let dir = tempfile::tempdir().unwrap();
        let server = start_with(dir.path(), args);
        assert_eq!(
            metric(&server.endpoint, "shardlog_journal_active"),
            Some(u64::from(journaled)),
            "{args:?}"
        );
        let out = ok(&run(
            &server.endpoint,
            &[
                "--json",
                "bench",
                "--records",
                "300",
                "--batch",
                "1",
                "--connections",
                "2",
                "--seconds",
                "60",
            ],
        ));
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["verify"]["ok"], true, "{v}");
        assert_eq!(v["verify"]["acknowledged"], 300, "{v}");
        let appends = metric(&server.endpoint, "shardlog_journal_appends_total").unwrap();
        if journaled {
            assert!(appends >= 300, "{appends} appends journaled");
        } else {
            assert_eq!(appends, 0);
        }
    }
}

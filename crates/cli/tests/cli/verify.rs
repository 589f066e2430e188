//! `shardlog verify` and `shardlog dump` as an operator runs them.

use std::path::Path;
use std::process::{Command, Output};

use shardlog_stream::{CreateStreamOptions, Engine, EngineOptions, PutRecordInput};

fn shardlog(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shardlog"))
        .args(args)
        .arg(dir)
        .env("SHARDLOG_LOG", "off")
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn opts() -> EngineOptions {
    let mut o = EngineOptions {
        retention_check_interval_ms: 0,
        ..EngineOptions::default()
    };
    o.log.segment_bytes_max = 64 * 1024;
    o
}

fn segments(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "seg") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn verify_passes_a_clean_directory_flags_damage_with_its_file_and_refuses_a_busy_one() {
    let dir = tempfile::tempdir().unwrap();
    {
        let e = Engine::open(dir.path(), opts()).unwrap();
        e.create_stream("orders", 2, CreateStreamOptions::default())
            .unwrap();
        for i in 0..2000 {
            let data = format!("order-{i}-{}", "z".repeat(100));
            e.put_record(
                "orders",
                PutRecordInput::new(&format!("k{}", i % 9), data.as_bytes()),
            )
            .unwrap();
        }
        // A running engine holds the directory: verify says so and exits 2.
        let busy = shardlog(&["verify", "--data-dir"], dir.path());
        assert_eq!(busy.status.code(), Some(2), "{}", text(&busy));
        assert!(text(&busy).contains("stop the server"), "{}", text(&busy));
    }
    let inspected = shardlog(&["--json", "inspect", "--data-dir"], dir.path());
    assert_eq!(inspected.status.code(), Some(0), "{}", text(&inspected));
    let v: serde_json::Value = serde_json::from_slice(&inspected.stdout).unwrap();
    assert_eq!(v[0]["name"], "orders");
    let shards = v[0]["shards"].as_array().unwrap();
    assert_eq!(shards.len(), 2);
    let records: u64 = shards.iter().map(|s| s["records"].as_u64().unwrap()).sum();
    assert_eq!(records, 2000);
    assert!(shards
        .iter()
        .all(|s| s["segments"].as_u64().unwrap() >= 1 && s["oldest_ms"].is_i64()));
    let clean = shardlog(&["verify", "--data-dir"], dir.path());
    assert_eq!(clean.status.code(), Some(0), "{}", text(&clean));
    assert!(text(&clean).contains("2000 records"), "{}", text(&clean));
    assert!(text(&clean).contains("no problems found"), "{}", text(&clean));

    // Bit rot in the middle of a sealed segment.
    let victim = segments(dir.path())[0].clone();
    let mut bytes = std::fs::read(&victim).unwrap();
    bytes[5000] ^= 0x10;
    std::fs::write(&victim, bytes).unwrap();
    let damaged = shardlog(&["verify", "--data-dir"], dir.path());
    assert_eq!(damaged.status.code(), Some(1), "{}", text(&damaged));
    let name = victim.file_name().unwrap().to_string_lossy().to_string();
    assert!(
        text(&damaged).contains(&name),
        "names the file: {}",
        text(&damaged)
    );
    assert!(text(&damaged).contains("checksum"), "{}", text(&damaged));

    let json = shardlog(&["verify", "--json", "--data-dir"], dir.path());
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["ok"], false);

    let dump = shardlog(&["dump"], &segments(dir.path())[1]);
    assert_eq!(dump.status.code(), Some(0), "{}", text(&dump));
    assert!(text(&dump).contains("order-"), "{}", text(&dump));
    assert!(text(&dump).contains("end of data"), "{}", text(&dump));
    let dump_damaged = shardlog(&["dump"], &victim);
    assert_eq!(dump_damaged.status.code(), Some(2));
    assert!(
        text(&dump_damaged).contains("INVALID FRAME"),
        "{}",
        text(&dump_damaged)
    );

    let missing = shardlog(&["verify", "--data-dir"], &dir.path().join("nope"));
    assert_eq!(missing.status.code(), Some(2));
    assert!(text(&missing).contains("not a shardlog data directory"));
}

//! `shardlog groups` against a running server.

use std::process::Command;

use serde_json::json;

use crate::kill9::{call, start};

#[test]
fn groups_shows_workers_leases_checkpoints_and_lag() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = reqwest::Client::new();
    rt.block_on(async {
        call(&client, &server.endpoint, "CreateStream", json!({"StreamName": "s", "ShardCount": 1}))
            .await
            .unwrap();
        for i in 0..7 {
            call(
                &client,
                &server.endpoint,
                "PutRecord",
                json!({"StreamName": "s", "PartitionKey": "k", "Data": "aGk=", "ExplicitHashKey": i.to_string()}),
            )
            .await
            .unwrap();
        }
        let r = client
            .post(&server.endpoint)
            .header("x-amz-target", "ShardlogGroups_20261126.Heartbeat")
            .header("content-type", "application/x-amz-json-1.1")
            .body(json!({"StreamName": "s", "ApplicationName": "billing", "WorkerId": "w-1"}).to_string())
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
    });
    let out = Command::new(env!("CARGO_BIN_EXE_shardlog"))
        .args(["groups", "--stream", "s", "--endpoint", &server.endpoint])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("application billing: 1 live worker(s) (w-1)"),
        "{text}"
    );
    assert!(
        text.contains("shardId-000000000000") && text.contains("w-1"),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.contains("shardId-000000000000") && l.contains(" 7 ")),
        "7 records behind: {text}"
    );
    let unreachable = Command::new(env!("CARGO_BIN_EXE_shardlog"))
        .args(["groups", "--stream", "s", "--endpoint", "http://127.0.0.1:9"])
        .output()
        .unwrap();
    assert_eq!(unreachable.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&unreachable.stderr).contains("cannot reach a shardlog server"));
}

//! The consumer-groups extension of the API (beyond Kinesis), so workers in
//! any language can share a stream through the engine's leases: `POST /`
//! with `X-Amz-Target: ShardlogGroups_20261126.<Operation>` and an
//! awsJson 1.1 (or CBOR) body. Workers read records with GetShardIterator /
//! GetRecords from the position their lease names (after its checkpoint).
//! docs/CONSUMERS.md describes each operation.

use serde_json::{json, Value};
use shardlog_stream::engine::{GROUP_LEASE_DEFAULT_MS, SHARD_END};
use shardlog_stream::Engine;

use crate::error::{ApiError, Violations};
use crate::ops::{opt_int, opt_str, stream_name};

pub const GROUPS_TARGET_PREFIX: &str = "ShardlogGroups_20261126.";

type R = Result<Value, ApiError>;

fn required<'a>(v: &'a Value, key: &str, viol: &mut Violations) -> Result<&'a str, ApiError> {
    let s = opt_str(v, key)?;
    if s.is_none() {
        let mut c = key.chars();
        let member: String = c
            .next()
            .map(|f| f.to_lowercase().chain(c).collect())
            .unwrap_or_default();
        viol.add(None, &member, "Member must not be null");
    }
    Ok(s.unwrap_or(""))
}

/// Runs one consumer-groups operation.
/// The caller has checked the request's ARNs ([`crate::ops::check_arn_scope`]).
pub fn dispatch(e: &Engine, op: &str, v: &Value) -> R {
    match op {
        "Heartbeat" => heartbeat(e, v),
        "Checkpoint" => checkpoint(e, v),
        "Release" => release(e, v),
        "ListGroups" => list_groups(e, v),
        "DescribeGroup" => describe_group(e, v),
        other => Err(ApiError::new(
            "UnknownOperationException",
            format!("Operation {other} is not a consumer-groups operation (Heartbeat, Checkpoint, Release, ListGroups, DescribeGroup)."),
        )),
    }
}

fn heartbeat(e: &Engine, v: &Value) -> R {
    let mut viol = Violations::default();
    let name = stream_name(v, &mut viol)?;
    let app = required(v, "ApplicationName", &mut viol)?;
    let worker = required(v, "WorkerId", &mut viol)?;
    let lease_ms = opt_int(v, "LeaseDurationMillis")?.unwrap_or(GROUP_LEASE_DEFAULT_MS as i64);
    viol.into_result()?;
    let leases = e.group_heartbeat(&name, app, worker, lease_ms.max(0) as u64)?;
    Ok(json!({
        "Leases": leases.iter().map(|l| json!({
            "ShardId": l.shard_id,
            "LeaseId": l.lease_id,
            "Checkpoint": l.checkpoint,
            "ExpiresAtMillis": l.expires_ms,
        })).collect::<Vec<_>>()
    }))
}

fn checkpoint(e: &Engine, v: &Value) -> R {
    let mut viol = Violations::default();
    let name = stream_name(v, &mut viol)?;
    let app = required(v, "ApplicationName", &mut viol)?;
    let worker = required(v, "WorkerId", &mut viol)?;
    let shard = required(v, "ShardId", &mut viol)?;
    let lease = opt_int(v, "LeaseId")?;
    if lease.is_none() {
        viol.add(None, "leaseId", "Member must not be null");
    }
    let shard_end = matches!(v.get("ShardEnd"), Some(Value::Bool(true)));
    let seq = opt_str(v, "SequenceNumber")?;
    viol.into_result()?;
    let value = match (seq, shard_end) {
        (Some(s), false) => s,
        (None, true) => SHARD_END,
        _ => {
            return Err(ApiError::invalid(
                "Give either SequenceNumber (the last record processed) or ShardEnd: true.",
            ))
        }
    };
    e.group_checkpoint(&name, app, worker, shard, lease.unwrap_or(0).max(0) as u64, value)?;
    Ok(Value::Null)
}

fn release(e: &Engine, v: &Value) -> R {
    let mut viol = Violations::default();
    let name = stream_name(v, &mut viol)?;
    let app = required(v, "ApplicationName", &mut viol)?;
    let worker = required(v, "WorkerId", &mut viol)?;
    viol.into_result()?;
    e.group_release(&name, app, worker)?;
    Ok(Value::Null)
}

fn list_groups(e: &Engine, v: &Value) -> R {
    let mut viol = Violations::default();
    let name = stream_name(v, &mut viol)?;
    viol.into_result()?;
    Ok(json!({"ApplicationNames": e.group_list(&name)?}))
}

fn describe_group(e: &Engine, v: &Value) -> R {
    let mut viol = Violations::default();
    let name = stream_name(v, &mut viol)?;
    let app = required(v, "ApplicationName", &mut viol)?;
    viol.into_result()?;
    let d = e.group_describe(&name, app)?;
    Ok(json!({
        "ApplicationName": d.application,
        "Workers": d.workers.iter().map(|(w, seen)| json!({"WorkerId": w, "LastHeartbeatMillis": seen})).collect::<Vec<_>>(),
        "Shards": d.shards.iter().map(|s| json!({
            "ShardId": s.shard_id,
            "Owner": s.owner,
            "LeaseId": s.lease_id,
            "ExpiresAtMillis": s.expires_ms,
            "Checkpoint": s.checkpoint,
            "RecordsBehind": s.records_behind,
            "Finished": s.finished,
        })).collect::<Vec<_>>(),
    }))
}

//! The Kinesis operations: decode and validate members, call the engine,
//! shape the response. Runs on a blocking thread (the engine fsyncs).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::Write as _;

use base64::Engine as _;
use serde_json::{json, Map, Value};
use shardlog_stream::{
    limits, CreateStreamOptions, Engine, PutRecordInput, ShardDescription, StartingPosition, StreamMode,
};

use crate::error::{ApiError, Violations};
use crate::protocol::timestamp;

const NAME_PATTERN: &str = "Member must satisfy regular expression pattern: [a-zA-Z0-9_.-]+";

type R = Result<Value, ApiError>;

fn stream_arn(e: &Engine, name: &str) -> String {
    format!("arn:aws:kinesis:{}:{}:stream/{name}", e.region(), e.account_id())
}

fn consumer_arn(e: &Engine, stream: &str, consumer: &str, created_ms: i64) -> String {
    format!(
        "{}/consumer/{consumer}:{}",
        stream_arn(e, stream),
        created_ms / 1000
    )
}

/// Rejects an ARN of another account or region than the engine's: streams
/// of one account are invisible to another. Without `--credentials-file`
/// the credential scope chooses the account unverified, so this is
/// isolation, not security; with it, `policy::authorize` has already moved
/// a request that a resource policy allows onto the owner's engine.
pub(crate) fn check_arn_scope(e: &Engine, v: &Value) -> Result<(), ApiError> {
    for member in ["StreamARN", "ConsumerARN", "ResourceARN"] {
        let Some(Value::String(arn)) = v.get(member) else {
            continue;
        };
        let parts: Vec<&str> = arn.splitn(6, ':').collect();
        if parts.len() != 6 || parts[0] != "arn" || parts[2] != "kinesis" {
            continue;
        }
        if parts[4] != e.account_id() {
            return Err(ApiError::new(
                "AccessDeniedException",
                format!(
                    "Account {} is not authorized to access {arn}, which belongs to account {}.",
                    e.account_id(),
                    parts[4]
                ),
            ));
        }
        if parts[3] != e.region() {
            return Err(ApiError::new(
                "ResourceNotFoundException",
                format!(
                    "{arn} is in region {}, but this request was signed for region {}.",
                    parts[3],
                    e.region()
                ),
            ));
        }
    }
    Ok(())
}

fn type_error(member: &str, expected: &str) -> ApiError {
    ApiError::serialization(format!("Member {member} must be {expected}"))
}

pub(crate) fn opt_str<'a>(v: &'a Value, key: &str) -> Result<Option<&'a str>, ApiError> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(type_error(key, "a string")),
    }
}

pub(crate) fn opt_int(v: &Value, key: &str) -> Result<Option<i64>, ApiError> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n.as_i64().map(Some).ok_or_else(|| type_error(key, "an integer")),
        Some(_) => Err(ApiError::serialization(format!(
            "class java.lang.String can not be converted to an Integer ({key})"
        ))),
    }
}

fn opt_bool(v: &Value, key: &str) -> Result<Option<bool>, ApiError> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(type_error(key, "a boolean")),
    }
}

fn opt_timestamp_ms(v: &Value, key: &str) -> Result<Option<i64>, ApiError> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => Ok(n.as_f64().map(|s| (s * 1000.0).round() as i64)),
        Some(_) => Err(type_error(key, "a timestamp")),
    }
}

fn blob(v: &Value, key: &str) -> Result<Option<Vec<u8>>, ApiError> {
    match opt_str(v, key)? {
        None => Ok(None),
        // SIMD decode: with the general decoder, a PutRecord of 1 KiB spent
        // a seventh of the server's instructions here (callgrind, the
        // twenty-fourth pass). It accepts exactly what that decoder does
        // (`simd_base64_agrees_with_the_general_decoder_*` below).
        Some(s) => base64_simd::STANDARD
            .decode_to_vec(s)
            .map(Some)
            .map_err(|_| {
                ApiError::serialization(format!(
                    "'{s:.32}' can not be converted to a Blob: Base64 encoded length is expected a multiple of 4 bytes but found: {}",
                    s.len()
                ))
            }),
    }
}

fn lower_camel(member: &str) -> String {
    let mut c = member.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => String::new(),
    }
}

/// A required string member of 1 to `max_chars` characters, reported in
/// Kinesis's wording.
fn check_text(viol: &mut Violations, member: &str, value: Option<&str>, max_chars: usize) {
    match value {
        None => viol.add(None, member, "Member must not be null"),
        Some(s) if s.is_empty() => viol.add(
            Some(s),
            member,
            "Member must have length greater than or equal to 1",
        ),
        Some(s) if s.chars().count() > max_chars => viol.add(
            Some(s),
            member,
            &format!("Member must have length less than or equal to {max_chars}"),
        ),
        Some(_) => {}
    }
}

fn check_name(viol: &mut Violations, member: &str, value: Option<&str>, required: bool) {
    // The member's name in messages is made only for a violation: every
    // request names a stream, and most names are valid.
    let m = || lower_camel(member);
    match value {
        None if required => viol.add(None, &m(), "Member must not be null"),
        None => {}
        Some(s) => {
            if s.is_empty() {
                viol.add(
                    Some(s),
                    &m(),
                    "Member must have length greater than or equal to 1",
                );
            } else if s.len() > 128 {
                viol.add(Some(s), &m(), "Member must have length less than or equal to 128");
            } else if !shardlog_stream::engine::is_valid_name(s) {
                viol.add(Some(s), &m(), NAME_PATTERN);
            }
        }
    }
}

/// A shard id's shape (the model's: 1 to 128 of `[a-zA-Z0-9_.-]`), checked
/// before the engine looks it up, so that a malformed id is a
/// ValidationException as at AWS, not a shard that does not exist.
fn check_shard_id(viol: &mut Violations, member: &str, value: Option<&str>) {
    check_name(viol, member, value, false);
}

/// A sequence number's shape (the model's pattern `0|([1-9]\d{0,128})`).
fn check_sequence_number(viol: &mut Violations, member: &str, value: Option<&str>) {
    if let Some(s) = value {
        if !shardlog_stream::seqnum::is_valid_sequence_number_syntax(s) {
            viol.add(
                Some(s),
                member,
                "Member must satisfy regular expression pattern: 0|([1-9]\\d{0,128})",
            );
        }
    }
}

/// The stream an operation names, by `StreamName` or `StreamARN`.
pub(crate) fn stream_name(v: &Value, viol: &mut Violations) -> Result<String, ApiError> {
    let name = opt_str(v, "StreamName")?;
    let arn = opt_str(v, "StreamARN")?;
    let from_arn = arn.and_then(|a| {
        a.rsplit_once(":stream/")
            .map(|(_, n)| n.split('/').next().unwrap_or(n))
    });
    if arn.is_some() && from_arn.is_none() {
        viol.add(
            arn,
            "streamARN",
            "Member must satisfy regular expression pattern: arn:aws.*:kinesis:.*:\\d{12}:stream/\\S+",
        );
    }
    match (name, from_arn) {
        (Some(n), Some(a)) if n != a => {
            return Err(ApiError::invalid(format!(
                "StreamName {n} and StreamARN {} do not name the same stream.",
                arn.unwrap_or("")
            )))
        }
        _ => {}
    }
    let chosen = name.or(from_arn);
    if chosen.is_none() && arn.is_none() {
        check_name(viol, "StreamName", None, true);
    } else {
        check_name(viol, "StreamName", chosen, false);
    }
    Ok(chosen.unwrap_or("").to_string())
}

fn int_range(viol: &mut Violations, member: &str, value: Option<i64>, min: i64, max: i64) {
    if let Some(x) = value {
        if x < min {
            viol.add(
                Some(&x.to_string()),
                &lower_camel(member),
                &format!("Member must have value greater than or equal to {min}"),
            );
        } else if x > max {
            viol.add(
                Some(&x.to_string()),
                &lower_camel(member),
                &format!("Member must have value less than or equal to {max}"),
            );
        }
    }
}

/// A required integer member within `min..=max`, violations collected.
fn req_int(
    v: &Value,
    viol: &mut Violations,
    member: &str,
    min: i64,
    max: i64,
) -> Result<Option<i64>, ApiError> {
    let x = opt_int(v, member)?;
    if x.is_none() {
        viol.add(None, &lower_camel(member), "Member must not be null");
    }
    int_range(viol, member, x, min, max);
    Ok(x)
}

fn shard_json(s: &ShardDescription) -> Value {
    let mut m = Map::new();
    m.insert("ShardId".into(), json!(s.shard_id));
    if let Some(p) = &s.parent_shard_id {
        m.insert("ParentShardId".into(), json!(p));
    }
    if let Some(p) = &s.adjacent_parent_shard_id {
        m.insert("AdjacentParentShardId".into(), json!(p));
    }
    m.insert(
        "HashKeyRange".into(),
        json!({"StartingHashKey": s.hash_range.start.to_string(), "EndingHashKey": s.hash_range.end.to_string()}),
    );
    let mut range = Map::new();
    range.insert("StartingSequenceNumber".into(), json!(s.starting_sequence_number));
    if let Some(e) = &s.ending_sequence_number {
        range.insert("EndingSequenceNumber".into(), json!(e));
    }
    m.insert("SequenceNumberRange".into(), Value::Object(range));
    Value::Object(m)
}

fn mode_json(mode: StreamMode) -> Value {
    json!({"StreamMode": mode.as_str()})
}

fn tags_of(v: &Value, key: &str) -> Result<BTreeMap<String, String>, ApiError> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(BTreeMap::new()),
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, x)| match x {
                Value::String(s) => Ok((k.clone(), s.clone())),
                _ => Err(type_error(key, "a map of strings")),
            })
            .collect(),
        Some(_) => Err(type_error(key, "a map of strings")),
    }
}

/// Entries a tag map may have by the API model (`TagMap`), before the
/// engine's own limit of tags per resource.
const TAG_MAP_ENTRIES_MAX: usize = 200;

/// A tag map as the model bounds it: 1 to 200 entries when given, keys of
/// 1 to 128 characters, values of at most 256.
fn check_tag_count(viol: &mut Violations, v: &Value, key: &str) {
    if let Some(Value::Object(m)) = v.get(key) {
        let member = lower_camel(key);
        if m.is_empty() {
            viol.add(
                Some("{}"),
                &member,
                "Member must have length greater than or equal to 1",
            );
        } else if m.len() > TAG_MAP_ENTRIES_MAX {
            // The model's bound; the engine's limit of 50 tags per resource
            // (a LimitExceededException) applies after it.
            viol.add(None, &member, "Member must have length less than or equal to 200");
        }
        for (k, x) in m {
            let n = k.chars().count();
            if n == 0 || n > 128 {
                viol.add(Some(k), &member, "Map keys must satisfy constraint: [Member must have length less than or equal to 128, Member must have length greater than or equal to 1]");
            }
            if x.as_str().is_some_and(|x| x.chars().count() > 256) {
                viol.add(x.as_str(), &member, "Map value must satisfy constraint: [Member must have length less than or equal to 256, Member must have length greater than or equal to 0]");
            }
        }
    }
}

/// A list member of 1 to `max` entries, in the model's wording; `shown` is
/// the value an over-long list is reported with.
fn check_list_len(viol: &mut Violations, member: &str, len: usize, max: usize, shown: Option<&str>) {
    if len == 0 {
        viol.add(
            Some("[]"),
            member,
            "Member must have length greater than or equal to 1",
        );
    } else if len > max {
        viol.add(
            shown,
            member,
            &format!("Member must have length less than or equal to {max}"),
        );
    }
}

/// A list of tag keys as the model bounds it: 1 to 50 keys, each of 1 to
/// 128 characters.
fn check_tag_keys(viol: &mut Violations, keys: &[String]) {
    check_list_len(viol, "tagKeys", keys.len(), limits::TAGS_PER_STREAM_MAX, None);
    for (i, k) in keys.iter().enumerate() {
        let n = k.chars().count();
        if n == 0 {
            viol.add(
                Some(k),
                &format!("tagKeys.{}.member", i + 1),
                "Member must have length greater than or equal to 1",
            );
        } else if n > 128 {
            viol.add(
                Some(k),
                &format!("tagKeys.{}.member", i + 1),
                "Member must have length less than or equal to 128",
            );
        }
    }
}

/// Runs one operation.
/// The caller has checked the request's ARNs against the engine's account
/// and region ([`check_arn_scope`]).
pub fn dispatch(engine: &Engine, op: &str, v: &Value) -> R {
    match op {
        "CreateStream" => create_stream(engine, v),
        "DeleteStream" => delete_stream(engine, v),
        "DescribeStream" => describe_stream(engine, v),
        "DescribeStreamSummary" => describe_stream_summary(engine, v),
        "ListStreams" => list_streams(engine, v),
        "ListShards" => list_shards(engine, v),
        "PutRecord" => put_record(engine, v),
        "PutRecords" => put_records(engine, v),
        "GetShardIterator" => get_shard_iterator(engine, v),
        "GetRecords" => get_records(engine, v),
        "SplitShard" => split_shard(engine, v),
        "MergeShards" => merge_shards(engine, v),
        "UpdateShardCount" => update_shard_count(engine, v),
        "IncreaseStreamRetentionPeriod" => retention(engine, v, true),
        "DecreaseStreamRetentionPeriod" => retention(engine, v, false),
        "AddTagsToStream" => add_tags(engine, v),
        "RemoveTagsFromStream" => remove_tags(engine, v),
        "ListTagsForStream" => list_tags(engine, v),
        "RegisterStreamConsumer" => register_consumer(engine, v),
        "DeregisterStreamConsumer" => deregister_consumer(engine, v),
        "DescribeStreamConsumer" => describe_consumer(engine, v),
        "ListStreamConsumers" => list_consumers(engine, v),
        "DescribeLimits" => describe_limits(engine),
        "EnableEnhancedMonitoring" => monitoring(engine, v, true),
        "DisableEnhancedMonitoring" => monitoring(engine, v, false),
        "UpdateStreamMode" => update_stream_mode(engine, v),
        "UpdateMaxRecordSize" => update_max_record_size(engine, v),
        "TagResource" => tag_resource(engine, v),
        "UntagResource" => untag_resource(engine, v),
        "ListTagsForResource" => list_tags_for_resource(engine, v),
        "PutResourcePolicy" => put_policy(engine, v),
        "GetResourcePolicy" => get_policy(engine, v),
        "DeleteResourcePolicy" => delete_policy(engine, v),
        "DescribeAccountSettings" => describe_account_settings(engine),
        "UpdateAccountSettings" => update_account_settings(engine, v),
        "UpdateStreamWarmThroughput" => update_warm_throughput(engine, v),
        "StartStreamEncryption" => stream_encryption(engine, v, true),
        "StopStreamEncryption" => stream_encryption(engine, v, false),
        // Served as an event stream by `crate::subscribe` before dispatch.
        "SubscribeToShard" => Err(ApiError::new(
            "InternalFailure",
            "SubscribeToShard is not dispatched here.",
        )),
        other => Err(ApiError::new(
            "UnknownOperationException",
            format!("Operation {other} is not a Kinesis operation."),
        )),
    }
}

const METRICS: &[&str] = &[
    "IncomingBytes",
    "IncomingRecords",
    "OutgoingBytes",
    "OutgoingRecords",
    "WriteProvisionedThroughputExceeded",
    "ReadProvisionedThroughputExceeded",
    "IteratorAgeMilliseconds",
];

fn enhanced_monitoring(e: &Engine, name: &str) -> Vec<String> {
    e.stream_setting(name, "ShardLevelMetrics")
        .ok()
        .flatten()
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default()
}

fn string_list(v: &Value, key: &str) -> Result<Option<Vec<String>>, ApiError> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| {
                x.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| type_error(key, "a list of strings"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(type_error(key, "a list of strings")),
    }
}

/// The model's bound on a ShardLevelMetrics list: the seven metric names.
const SHARD_LEVEL_METRICS_MAX: usize = 7;

fn monitoring(e: &Engine, v: &Value, enable: bool) -> R {
    let mut viol = Violations::default();
    let name = stream_name(v, &mut viol)?;
    let metrics = string_list(v, "ShardLevelMetrics")?;
    match &metrics {
        None => viol.add(None, "shardLevelMetrics", "Member must not be null"),
        Some(m) if m.is_empty() || m.len() > SHARD_LEVEL_METRICS_MAX => check_list_len(
            &mut viol,
            "shardLevelMetrics",
            m.len(),
            SHARD_LEVEL_METRICS_MAX,
            None,
        ),
        Some(m) => {
            for x in m {
                if x != "ALL" && !METRICS.contains(&x.as_str()) {
                    viol.add(Some(x), "shardLevelMetrics", "Member must satisfy enum value set: [IncomingBytes, IncomingRecords, OutgoingBytes, OutgoingRecords, WriteProvisionedThroughputExceeded, ReadProvisionedThroughputExceeded, IteratorAgeMilliseconds, ALL]");
                }
            }
        }
    }
    viol.into_result()?;
    let asked: Vec<String> = metrics
        .unwrap_or_default()
        .into_iter()
        .flat_map(|m| {
            if m == "ALL" {
                METRICS.iter().map(|s| s.to_string()).collect()
            } else {
                vec![m]
            }
        })
        .collect();
    // Read, change and store under the stream's lock: concurrent calls
    // must not lose each other's metrics.
    let mut current: Vec<String> = Vec::new();
    let mut desired: Vec<String> = Vec::new();
    e.update_stream_setting(&name, "ShardLevelMetrics", |old| {
        current = old
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .unwrap_or_default();
        desired = if enable {
            current.iter().cloned().chain(asked.iter().cloned()).collect()
        } else {
            current.iter().filter(|m| !asked.contains(m)).cloned().collect()
        };
        desired.sort_by_key(|m| METRICS.iter().position(|x| x == m));
        desired.dedup();
        Ok(Some(json!(desired)))
    })?;
    Ok(json!({
        "StreamName": name,
        "StreamARN": stream_arn(e, &name),
        "CurrentShardLevelMetrics": current,
        "DesiredShardLevelMetrics": desired,
    }))
}

fn update_stream_mode(e: &Engine, v: &Value) -> R {
    let mut viol = Violations::default();
    if opt_str(v, "StreamARN")?.is_none() {
        viol.add(None, "streamARN", "Member must not be null");
    }
    let name = stream_name(v, &mut viol)?;
    let mode = match v
        .get("StreamModeDetails")
        .and_then(|m| m.get("StreamMode"))
        .and_then(Value::as_str)
    {
        Some("PROVISIONED") => Some(StreamMode::Provisioned),
        Some("ON_DEMAND") => Some(StreamMode::OnDemand),
        Some(other) => {
            viol.add(
                Some(other),
                "streamModeDetails.streamMode",
                "Member must satisfy enum value set: [ON_DEMAND, PROVISIONED]",
            );
            None
        }
        None => {
            viol.add(None, "streamModeDetails", "Member must not be null");
            None
        }
    };
    viol.into_result()?;
    e.update_stream_mode(&name, mode.unwrap_or(StreamMode::Provisioned))?;
    Ok(Value::Null)
}

/// StartStreamEncryption / StopStreamEncryption.
fn stream_encryption(e: &Engine, v: &Value, start: bool) -> R {
    let mut viol = Violations::default();
    let name = stream_name(v, &mut viol)?;
    let kind = opt_str(v, "EncryptionType")?;
    match kind {
        None => viol.add(None, "encryptionType", "Member must not be null"),
        Some("KMS") | Some("NONE") => {}
        Some(other) => viol.add(
            Some(other),
            "encryptionType",
            "Member must satisfy enum value set: [KMS, NONE]",
        ),
    }
    let key_id = opt_str(v, "KeyId")?;
    check_text(&mut viol, "keyId", key_id, 2048);
    viol.into_result()?;
    if kind == Some("NONE") {
        return Err(ApiError::invalid(
            "EncryptionType NONE is not valid here; server-side encryption uses KMS.",
        ));
    }
    let key_id = key_id.unwrap_or_default();
    if start {
        e.start_stream_encryption(&name, key_id)?;
    } else {
        e.stop_stream_encryption(&name, key_id)?;
    }
    Ok(Value::Null)
}

fn encryption_type(encrypted: bool) -> &'static str {
    if encrypted {
        "KMS"
    } else {
        "NONE"
    }
}

fn update_max_record_size(e: &Engine, v: &Value) -> R {
    let mut viol = Violations::default();
    let name = stream_name(v, &mut viol)?;
    let kib = req_int(v, &mut viol, "MaxRecordSizeInKiB", 1024, 10240)?;
    viol.into_result()?;
    e.update_max_record_size(&name, kib.unwrap_or(1024) as u32)?;
    Ok(Value::Null)
}

/// What a resource ARN names: a stream, or a consumer of a stream (with
/// the creation time, in seconds, its ARN ends in).
enum Resource {
    Stream(String),
    Consumer(String, String, i64),
}

/// The creation time at the end of a consumer ARN: digits only.
fn is_epoch_seconds(s: &str) -> bool {
    !s.is_empty() && s.len() <= 19 && s.bytes().all(|b| b.is_ascii_digit())
}

/// A Kinesis ARN's stream name and, for a consumer ARN, the consumer's name
/// and the creation time (seconds) it ends in; -1 when those digits do not
/// fit an `i64`, which names no consumer since times are not negative.
/// `None` when the ARN has neither shape.
fn parse_kinesis_arn(arn: &str) -> Option<(&str, Option<(&str, i64)>)> {
    let (_, rest) = arn
        .split_once(":stream/")
        .filter(|(head, _)| head.starts_with("arn:aws") && head.contains(":kinesis:"))?;
    match rest.split_once("/consumer/") {
        Some((stream, tail)) => {
            let (consumer, t) = tail.rsplit_once(':').filter(|(_, t)| is_epoch_seconds(t))?;
            Some((stream, Some((consumer, t.parse().unwrap_or(-1)))))
        }
        None => Some((rest, None)),
    }
}

/// A consumer ARN ends in its consumer's creation time (seconds): an ARN of
/// a consumer since deregistered and registered again under the same name
/// names nothing, as at AWS, rather than the new consumer.
/// An operation that changes the consumer checks the time again under the
/// stream's lock, where it makes the change.
fn check_consumer_arn_current(
    e: &Engine,
    stream: &str,
    consumer: &str,
    created_s: i64,
) -> Result<(), ApiError> {
    let Ok(c) = e.describe_consumer(stream, consumer) else {
        // Not there at all: the operation itself says so.
        return Ok(());
    };
    if created_s == c.created_ms.div_euclid(1000) {
        return Ok(());
    }
    Err(consumer_not_found(e, stream, consumer))
}

/// The answer for a consumer that is not there, as AWS words it.
fn consumer_not_found(e: &Engine, stream: &str, consumer: &str) -> ApiError {
    shardlog_stream::Error::consumer_not_found(e.account_id(), stream, consumer).into()
}

fn resource(e: &Engine, v: &Value, viol: &mut Violations) -> Result<Resource, ApiError> {
    let Some(arn) = opt_str(v, "ResourceARN")? else {
        viol.add(None, "resourceARN", "Member must not be null");
        return Ok(Resource::Stream(String::new()));
    };
    // A stream ARN, or a consumer ARN ending in its creation time.
    let Some((stream, consumer)) = parse_kinesis_arn(arn) else {
        // Not the model's pattern for a Kinesis ARN: refused before any
        // lookup, as AWS does.
        viol.add(
            Some(arn),
            "resourceARN",
            "Member must satisfy regular expression pattern: arn:aws.*:kinesis:.*:\\d{12}:stream/\\S+",
        );
        std::mem::take(viol).into_result()?;
        return Ok(Resource::Stream(String::new()));
    };
    Ok(match consumer {
        Some((consumer, created_s)) => {
            check_consumer_arn_current(e, stream, consumer, created_s)?;
            Resource::Consumer(stream.to_string(), consumer.to_string(), created_s)
        }
        None => Resource::Stream(stream.to_string()),
    })
}

/// Tags of a resource: a stream's own tags, or a consumer's (kept as a
/// setting of its stream).
fn resource_tags(e: &Engine, r: &Resource) -> Result<BTreeMap<String, String>, ApiError> {
    Ok(match r {
        Resource::Stream(s) => e.list_tags(s)?,
        Resource::Consumer(s, c, _) => {
            e.describe_consumer(s, c)?;
            e.stream_setting(s, &consumer_tags_key(c))?
                .and_then(|v| serde_json::from_value(v).ok())
                .unwrap_or_default()
        }
    })
}

/// Where a consumer's tags are kept: a setting of its stream.
fn consumer_tags_key(consumer: &str) -> String {
    format!("ConsumerTags/{consumer}")
}

/// Changes a consumer's tags atomically: under its stream's lock, and only
/// while the consumer its ARN names (by creation time) is registered.
fn update_consumer_tags(
    e: &Engine,
    stream: &str,
    consumer: &str,
    registered_at_s: i64,
    change: impl FnOnce(&mut BTreeMap<String, String>) -> shardlog_stream::Result<()>,
) -> Result<(), ApiError> {
    e.update_consumer_setting(
        stream,
        consumer,
        Some(registered_at_s),
        &consumer_tags_key(consumer),
        |old| {
            let mut all: BTreeMap<String, String> = old
                .and_then(|v| serde_json::from_value(v.clone()).ok())
                .unwrap_or_default();
            change(&mut all)?;
            Ok(Some(json!(all)))
        },
    )?;
    Ok(())
}

/// Changes a resource's policy (`change` maps the stored one to the new
/// one; `None` removes it) under its stream's lock: a consumer's only while
/// the consumer its ARN names is registered.
fn update_resource_policy(
    e: &Engine,
    r: &Resource,
    change: impl FnOnce(Option<&Value>) -> shardlog_stream::Result<Option<Value>>,
) -> Result<(), ApiError> {
    match r {
        Resource::Stream(s) => {
            e.update_stream_setting(s, &crate::policy::policy_setting_key(None), change)?;
        }
        Resource::Consumer(s, c, at_s) => {
            e.update_consumer_setting(
                s,
                c,
                Some(*at_s),
                &crate::policy::policy_setting_key(Some(c)),
                change,
            )?;
        }
    }
    Ok(())
}

fn tag_resource(e: &Engine, v: &Value) -> R {
    let mut viol = Violations::default();
    let r = resource(e, v, &mut viol)?;
    let tags = tags_of(v, "Tags")?;
    if v.get("Tags").is_none() {
        viol.add(None, "tags", "Member must not be null");
    }
    check_tag_count(&mut viol, v, "Tags");
    viol.into_result()?;
    match &r {
        Resource::Stream(s) => e.add_tags(s, &tags)?,
        Resource::Consumer(s, c, at_s) => {
            update_consumer_tags(e, s, c, *at_s, |all| {
                all.extend(tags);
                if all.len() > limits::TAGS_PER_STREAM_MAX {
                    return Err(shardlog_stream::Error::LimitExceeded(
                        "A resource can have at most 50 tags.".into(),
                    ));
                }
                Ok(())
            })?;
        }
    }
    Ok(Value::Null)
}

fn untag_resource(e: &Engine, v: &Value) -> R {
    let mut viol = Violations::default();
    let r = resource(e, v, &mut viol)?;
    let keys = string_list(v, "TagKeys")?;
    match &keys {
        None => viol.add(None, "tagKeys", "Member must not be null"),
        Some(k) => check_tag_keys(&mut viol, k),
    }
    viol.into_result()?;
    let keys = keys.unwrap_or_default();
    match &r {
        Resource::Stream(s) => e.remove_tags(s, &keys)?,
        Resource::Consumer(s, c, at_s) => {
            update_consumer_tags(e, s, c, *at_s, |all| {
                all.retain(|k, _| !keys.contains(k));
                Ok(())
            })?;
        }
    }
    Ok(Value::Null)
}

fn list_tags_for_resource(e: &Engine, v: &Value) -> R {
    let mut viol = Violations::default();
    let r = resource(e, v, &mut viol)?;
    viol.into_result()?;
    let tags = resource_tags(e, &r)?;
    Ok(json!({"Tags": tags.iter().map(|(k, v)| json!({"Key": k, "Value": v})).collect::<Vec<_>>()}))
}

fn policy_key(r: &Resource) -> (String, String) {
    match r {
        Resource::Stream(s) => (s.clone(), crate::policy::policy_setting_key(None)),
        Resource::Consumer(s, c, _) => (s.clone(), crate::policy::policy_setting_key(Some(c))),
    }
}

fn check_resource_exists(e: &Engine, r: &Resource) -> Result<(), ApiError> {
    match r {
        Resource::Stream(s) => e.describe_stream(s).map(|_| ()).map_err(Into::into),
        Resource::Consumer(s, c, _) => e.describe_consumer(s, c).map(|_| ()).map_err(Into::into),
    }
}

fn put_policy(e: &Engine, v: &Value) -> R {
    let mut viol = Violations::default();
    let r = resource(e, v, &mut viol)?;
    let policy = opt_str(v, "Policy")?;
    if policy.is_none() {
        viol.add(None, "policy", "Member must not be null");
    }
    viol.into_result()?;
    let policy = policy.unwrap_or("");
    // Validated whether or not the server checks signatures, so a policy
    // stored now is enforced as written once authentication is turned on.
    crate::policy::Policy::parse(policy).map_err(|e| ApiError::invalid(e.to_string()))?;
    check_resource_exists(e, &r)?;
    update_resource_policy(e, &r, |_| Ok(Some(json!(policy))))?;
    Ok(Value::Null)
}

fn get_policy(e: &Engine, v: &Value) -> R {
    let mut viol = Violations::default();
    let r = resource(e, v, &mut viol)?;
    viol.into_result()?;
    check_resource_exists(e, &r)?;
    let (stream, key) = policy_key(&r);
    let policy = e
        .stream_setting(&stream, &key)?
        .and_then(|p| p.as_str().map(str::to_string));
    Ok(json!({"Policy": policy.unwrap_or_else(|| "{}".to_string())}))
}

fn delete_policy(e: &Engine, v: &Value) -> R {
    let mut viol = Violations::default();
    let r = resource(e, v, &mut viol)?;
    viol.into_result()?;
    check_resource_exists(e, &r)?;
    // Checked where the policy is removed, under the stream's lock, so of
    // two deletions at once the second finds none.
    update_resource_policy(e, &r, |old| match old {
        None => Err(shardlog_stream::Error::ResourceNotFound(
            "No resource policy found for the resource.".into(),
        )),
        Some(_) => Ok(None),
    })?;
    Ok(Value::Null)
}

fn describe_account_settings(e: &Engine) -> R {
    let commitment = e
        .account_setting("MinimumThroughputBillingCommitment")
        .unwrap_or_else(|| json!({"Status": "DISABLED"}));
    Ok(json!({"MinimumThroughputBillingCommitment": commitment}))
}

fn update_account_settings(e: &Engine, v: &Value) -> R {
    let mut viol = Violations::default();
    let status = v
        .get("MinimumThroughputBillingCommitment")
        .and_then(|c| c.get("Status"))
        .and_then(Value::as_str);
    match status {
        None => viol.add(
            None,
            "minimumThroughputBillingCommitment",
            "Member must not be null",
        ),
        Some("ENABLED") | Some("DISABLED") => {}
        Some(other) => viol.add(
            Some(other),
            "minimumThroughputBillingCommitment.status",
            "Member must satisfy enum value set: [ENABLED, DISABLED]",
        ),
    }
    viol.into_result()?;
    let value = json!({"Status": status.unwrap_or("DISABLED")});
    e.set_account_setting("MinimumThroughputBillingCommitment", value.clone())?;
    Ok(json!({"MinimumThroughputBillingCommitment": value}))
}

/// The stream setting that holds an on-demand stream's warm throughput.
const WARM_THROUGHPUT_SETTING: &str = "WarmThroughputMiBps";
/// The largest warm throughput a stream may ask for, in MiB/s.
const WARM_THROUGHPUT_MIBPS_MAX: i64 = 10_240;

fn update_warm_throughput(e: &Engine, v: &Value) -> R {
    let mut viol = Violations::default();
    let name = stream_name(v, &mut viol)?;
    let mibps = req_int(v, &mut viol, "WarmThroughputMiBps", 0, WARM_THROUGHPUT_MIBPS_MAX)?;
    viol.into_result()?;
    let d = e.describe_stream(&name)?;
    if d.mode != StreamMode::OnDemand {
        return Err(ApiError::new(
            "ValidationException",
            "Warm throughput can only be set on ON_DEMAND streams.",
        ));
    }
    let target = mibps.unwrap_or(0);
    e.set_stream_setting(&name, WARM_THROUGHPUT_SETTING, Some(json!(target)))?;
    Ok(json!({
        "StreamARN": stream_arn(e, &name),
        "StreamName": name,
        "WarmThroughput": {"TargetMiBps": target, "CurrentMiBps": target},
    }))
}

fn create_stream(e: &Engine, v: &Value) -> R {
    let mut viol = Violations::default();
    let name = opt_str(v, "StreamName")?;
    check_name(&mut viol, "StreamName", name, true);
    let count = opt_int(v, "ShardCount")?;
    // The model's minimum; no maximum (too many shards is the engine's
    // LimitExceededException).
    int_range(&mut viol, "ShardCount", count, 1, i64::MAX);
    let mode = match v
        .get("StreamModeDetails")
        .and_then(|m| m.get("StreamMode"))
        .and_then(Value::as_str)
    {
        None => None,
        Some("PROVISIONED") => Some(StreamMode::Provisioned),
        Some("ON_DEMAND") => Some(StreamMode::OnDemand),
        Some(other) => {
            viol.add(
                Some(other),
                "streamModeDetails.streamMode",
                "Member must satisfy enum value set: [ON_DEMAND, PROVISIONED]",
            );
            None
        }
    };
    let kib = opt_int(v, "MaxRecordSizeInKiB")?;
    int_range(&mut viol, "MaxRecordSizeInKiB", kib, 1024, 10240);
    let warm = opt_int(v, "WarmThroughputMiBps")?;
    int_range(
        &mut viol,
        "WarmThroughputMiBps",
        warm,
        0,
        WARM_THROUGHPUT_MIBPS_MAX,
    );
    check_tag_count(&mut viol, v, "Tags");
    viol.into_result()?;
    if warm.is_some() && mode != Some(StreamMode::OnDemand) {
        return Err(ApiError::new(
            "ValidationException",
            "Warm throughput can only be set on ON_DEMAND streams.",
        ));
    }
    let shards = match (mode, count) {
        (Some(StreamMode::OnDemand), Some(_)) => {
            return Err(ApiError::new(
                "ValidationException",
                "ShardCount must not be specified for an ON_DEMAND stream.",
            ))
        }
        (Some(StreamMode::OnDemand), None) | (None, None) => 4,
        (_, Some(c)) => u32::try_from(c).unwrap_or(u32::MAX),
        (Some(StreamMode::Provisioned), None) => {
            return Err(ApiError::invalid(
                "ShardCount is required for a PROVISIONED stream.",
            ))
        }
    };
    e.create_stream(
        name.unwrap_or(""),
        shards,
        CreateStreamOptions {
            mode,
            tags: tags_of(v, "Tags")?,
            max_record_kib: kib.map(|k| k as u32),
            settings: warm
                .map(|mibps| (WARM_THROUGHPUT_SETTING.to_string(), json!(mibps)))
                .into_iter()
                .collect(),
            ..Default::default()
        },
    )?;
    Ok(Value::Null)
}

fn delete_stream(e: &Engine, v: &Value) -> R {
    let mut viol = Violations::default();
    let name = stream_name(v, &mut viol)?;
    let enforce = opt_bool(v, "EnforceConsumerDeletion")?.unwrap_or(false);
    viol.into_result()?;
    e.delete_stream(&name, enforce)?;
    Ok(Value::Null)
}

fn describe_stream(e: &Engine, v: &Value) -> R {
    let mut viol = Violations::default();
    let name = stream_name(v, &mut viol)?;
    let limit = opt_int(v, "Limit")?;
    int_range(&mut viol, "Limit", limit, 1, 10_000);
    check_shard_id(
        &mut viol,
        "ExclusiveStartShardId",
        opt_str(v, "ExclusiveStartShardId")?,
    );
    // `shardId-1` and `shardId-000000000001` name the same shard.
    let start_norm = opt_str(v, "ExclusiveStartShardId")?.map(|x| {
        shardlog_stream::parse_shard_id(x)
            .map(shardlog_stream::shard_id)
            .unwrap_or_else(|| x.to_string())
    });
    let start = start_norm.as_deref();
    viol.into_result()?;
    let d = e.describe_stream(&name)?;
    let limit = limit.unwrap_or(100) as usize;
    let after: Vec<&ShardDescription> = d
        .shards
        .iter()
        .filter(|s| start.is_none_or(|st| s.shard_id.as_str() > st))
        .collect();
    let has_more = after.len() > limit;
    let shards: Vec<Value> = after.into_iter().take(limit).map(shard_json).collect();
    Ok(json!({"StreamDescription": {
        "StreamName": d.name,
        "StreamARN": stream_arn(e, &d.name),
        "StreamStatus": d.status.as_str(),
        "StreamModeDetails": mode_json(d.mode),
        "Shards": shards,
        "HasMoreShards": has_more,
        "RetentionPeriodHours": d.retention_hours,
        "StreamCreationTimestamp": timestamp(d.created_ms),
        "EnhancedMonitoring": [{"ShardLevelMetrics": enhanced_monitoring(e, &d.name)}],
        "EncryptionType": encryption_type(d.encryption_key_id.is_some()),
    }}))
    .map(|mut out| {
        if let Some(k) = &d.encryption_key_id {
            out["StreamDescription"]["KeyId"] = json!(k);
        }
        out
    })
}

fn describe_stream_summary(e: &Engine, v: &Value) -> R {
    let mut viol = Violations::default();
    let name = stream_name(v, &mut viol)?;
    viol.into_result()?;
    let d = e.describe_stream(&name)?;
    Ok(json!({"StreamDescriptionSummary": {
        "StreamName": d.name,
        "StreamARN": stream_arn(e, &d.name),
        "StreamStatus": d.status.as_str(),
        "StreamModeDetails": mode_json(d.mode),
        "RetentionPeriodHours": d.retention_hours,
        "StreamCreationTimestamp": timestamp(d.created_ms),
        "EnhancedMonitoring": [{"ShardLevelMetrics": enhanced_monitoring(e, &d.name)}],
        "EncryptionType": encryption_type(d.encryption_key_id.is_some()),
        "OpenShardCount": d.open_shard_count,
        "ConsumerCount": d.consumer_count,
        "MaxRecordSizeInKiB": d.max_record_kib,
    }}))
    .map(|mut out| {
        if let Some(k) = &d.encryption_key_id {
            out["StreamDescriptionSummary"]["KeyId"] = json!(k);
        }
        // An on-demand stream's warm throughput, once one was asked for. It
        // is met at once here: nothing has to be scaled up to reach it.
        if d.mode == StreamMode::OnDemand {
            if let Ok(Some(t)) = e.stream_setting(&d.name, WARM_THROUGHPUT_SETTING) {
                out["StreamDescriptionSummary"]["WarmThroughput"] =
                    json!({"TargetMiBps": t, "CurrentMiBps": t});
            }
        }
        out
    })
}

/// Pagination tokens expire like AWS's (ExpiredNextTokenException).
const NEXT_TOKEN_TTL_MS: i64 = 300_000;
/// Most shards one ListShards page returns, whatever `MaxResults` asks
/// (Kinesis accepts up to 10,000 there but returns at most 1,000).
const LIST_SHARDS_PAGE_MAX: i64 = 1_000;
/// Consumers one ListStreamConsumers page returns when `MaxResults` is not
/// given (Kinesis's default).
const LIST_CONSUMERS_PAGE_DEFAULT: i64 = 100;

fn token_encode(parts: &[&str]) -> String {
    let issued = shardlog_segment::now_ms().to_string();
    let mut all: Vec<&str> = parts.to_vec();
    all.push(&issued);
    base64::engine::general_purpose::STANDARD.encode(all.join("\n"))
}

/// The token's parts (without its issue time); `None` if it is not a token.
fn token_decode(token: &str) -> Result<Option<Vec<String>>, ApiError> {
    let Some(mut parts) = base64::engine::general_purpose::STANDARD
        .decode(token)
        .ok()
        .and_then(|raw| String::from_utf8(raw).ok())
        .map(|s| s.split('\n').map(str::to_string).collect::<Vec<_>>())
    else {
        return Ok(None);
    };
    let Some(issued) = parts.pop().and_then(|t| t.parse::<i64>().ok()) else {
        return Ok(None);
    };
    if shardlog_segment::now_ms() - issued > NEXT_TOKEN_TTL_MS {
        return Err(ApiError::new(
            "ExpiredNextTokenException",
            "The timestamp of the NextToken is older than 300 seconds; list again without it.",
        ));
    }
    Ok(Some(parts))
}

fn list_streams(e: &Engine, v: &Value) -> R {
    let mut viol = Violations::default();
    let limit = opt_int(v, "Limit")?;
    int_range(&mut viol, "Limit", limit, 1, 10_000);
    let start = opt_str(v, "ExclusiveStartStreamName")?;
    check_name(&mut viol, "ExclusiveStartStreamName", start, false);
    let token = opt_str(v, "NextToken")?;
    viol.into_result()?;
    let after = match token {
        Some(t) => match token_decode(t)?.as_deref() {
            Some([kind, last]) if kind == "streams" => Some(last.clone()),
            _ => return Err(ApiError::invalid("Invalid NextToken.")),
        },
        None => start.map(str::to_string),
    };
    // "If you specify a value greater than 100, at most 100 results are
    // returned" (the API reference).
    let limit = limit.unwrap_or(100).min(100) as usize;
    let all: Vec<_> = e
        .list_streams()
        .into_iter()
        .filter(|s| after.as_deref().is_none_or(|a| s.name.as_str() > a))
        .collect();
    let has_more = all.len() > limit;
    let page: Vec<_> = all.into_iter().take(limit).collect();
    let mut out = json!({
        "StreamNames": page.iter().map(|s| s.name.clone()).collect::<Vec<_>>(),
        "HasMoreStreams": has_more,
        "StreamSummaries": page.iter().map(|s| json!({
            "StreamName": s.name,
            "StreamARN": stream_arn(e, &s.name),
            "StreamStatus": s.status.as_str(),
            "StreamModeDetails": mode_json(s.mode),
            "StreamCreationTimestamp": timestamp(s.created_ms),
        })).collect::<Vec<_>>(),
    });
    if has_more {
        if let Some(last) = page.last() {
            out["NextToken"] = json!(token_encode(&["streams", &last.name]));
        }
    }
    Ok(out)
}

fn list_shards(e: &Engine, v: &Value) -> R {
    let mut viol = Violations::default();
    let token = opt_str(v, "NextToken")?;
    let max = opt_int(v, "MaxResults")?;
    int_range(&mut viol, "MaxResults", max, 1, 10_000);
    check_shard_id(
        &mut viol,
        "ExclusiveStartShardId",
        opt_str(v, "ExclusiveStartShardId")?,
    );
    // `shardId-1` and `shardId-000000000001` name the same shard.
    let start_norm = opt_str(v, "ExclusiveStartShardId")?.map(|x| {
        shardlog_stream::parse_shard_id(x)
            .map(shardlog_stream::shard_id)
            .unwrap_or_else(|| x.to_string())
    });
    let start = start_norm.as_deref();
    let (name, after) = match token {
        Some(t) => {
            let (stream, last) = match token_decode(t)?.as_deref() {
                Some([kind, stream, last]) if kind == "shards" => (stream.clone(), last.clone()),
                _ => return Err(ApiError::invalid("Invalid NextToken.")),
            };
            // The token names the stream and where the listing goes on; AWS
            // refuses any of the first page's parameters beside it rather
            // than pick one. botocore's paginator and the AWS CLI resend
            // StreamName with the token and fail at AWS (botocore#2009,
            // aws-cli#9635), so they fail here too, where a test finds it.
            for other in [
                "StreamName",
                "StreamARN",
                "ExclusiveStartShardId",
                "StreamCreationTimestamp",
            ] {
                if v.get(other).is_some_and(|x| !x.is_null()) {
                    return Err(ApiError::invalid(format!(
                        "NextToken and {other} cannot be provided together."
                    )));
                }
            }
            (stream, Some(last))
        }
        None => (stream_name(v, &mut viol)?, start.map(str::to_string)),
    };
    viol.into_result()?;
    let filter = v.get("ShardFilter");
    let ftype = filter.and_then(|f| f.get("Type")).and_then(Value::as_str);
    let fshard = filter.and_then(|f| f.get("ShardId")).and_then(Value::as_str);
    let fstamp = match filter {
        Some(f) => opt_timestamp_ms(f, "Timestamp")?,
        None => None,
    };
    if let Some(f) = filter.filter(|f| !f.is_null()) {
        let mut viol = Violations::default();
        if f.get("Type").is_none_or(Value::is_null) {
            viol.add(None, "shardFilter.type", "Member must not be null");
        }
        check_shard_id(&mut viol, "shardFilter.shardId", opt_str(f, "ShardId")?);
        viol.into_result()?;
    }
    if let Some(t) = ftype {
        if ![
            "AFTER_SHARD_ID",
            "AT_TRIM_HORIZON",
            "FROM_TRIM_HORIZON",
            "AT_LATEST",
            "AT_TIMESTAMP",
            "FROM_TIMESTAMP",
        ]
        .contains(&t)
        {
            let mut viol = Violations::default();
            viol.add(Some(t), "shardFilter.type", "Member must satisfy enum value set: [AFTER_SHARD_ID, AT_TRIM_HORIZON, FROM_TRIM_HORIZON, AT_LATEST, AT_TIMESTAMP, FROM_TIMESTAMP]");
            viol.into_result()?;
        }
    }
    if ftype == Some("AFTER_SHARD_ID") && fshard.is_none() {
        return Err(ApiError::invalid(
            "ShardFilter of type AFTER_SHARD_ID requires a ShardId.",
        ));
    }
    if let (Some(t @ ("AT_TIMESTAMP" | "FROM_TIMESTAMP")), None) = (ftype, fstamp) {
        return Err(ApiError::invalid(format!(
            "ShardFilter of type {t} requires a Timestamp."
        )));
    }

    let fshard_norm = fshard.map(|x| {
        shardlog_stream::parse_shard_id(x)
            .map(shardlog_stream::shard_id)
            .unwrap_or_else(|| x.to_string())
    });
    let fshard = fshard_norm.as_deref();
    let stream = e.describe_stream(&name)?;
    // The trim horizon as a time: the oldest moment whose records are kept,
    // or the stream's creation when it is younger than its retention.
    let horizon_ms = (e.now_ms() - i64::from(stream.retention_hours) * 3_600_000).max(stream.created_ms);
    // Whether a shard was open at a time (its end counts as open, as
    // Kinesis's "end timestamp is greater than or equal to" says).
    let open_at = |s: &ShardDescription, t: i64| s.created_ms <= t && s.closed_ms.is_none_or(|c| c >= t);
    let not_closed_before = |s: &ShardDescription, t: i64| s.closed_ms.is_none_or(|c| c >= t);
    let kept: Vec<&ShardDescription> = stream
        .shards
        .iter()
        .filter(|s| after.as_deref().is_none_or(|a| s.shard_id.as_str() > a))
        .filter(|s| match (ftype, fstamp) {
            (Some("AT_LATEST"), _) => s.closed_ms.is_none(),
            (Some("AT_TRIM_HORIZON"), _) => open_at(s, horizon_ms),
            // A timestamp before the trim horizon is taken as the horizon.
            (Some("AT_TIMESTAMP"), Some(t)) => open_at(s, t.max(horizon_ms)),
            (Some("FROM_TIMESTAMP"), Some(t)) => not_closed_before(s, t.max(horizon_ms)),
            (Some("AFTER_SHARD_ID"), _) => fshard.is_none_or(|f| s.shard_id.as_str() > f),
            // FROM_TRIM_HORIZON, the default: every shard still kept.
            _ => true,
        })
        .collect();
    // Kinesis accepts up to 10,000 but returns at most 1,000 shards a page.
    let max = max.unwrap_or(1000).min(LIST_SHARDS_PAGE_MAX) as usize;
    let has_more = kept.len() > max;
    let page: Vec<&ShardDescription> = kept.into_iter().take(max).collect();
    let mut out = json!({"Shards": page.iter().map(|s| shard_json(s)).collect::<Vec<_>>()});
    if has_more {
        if let Some(last) = page.last() {
            out["NextToken"] = json!(token_encode(&["shards", &name, &last.shard_id]));
        }
    }
    Ok(out)
}

struct RecordArgs {
    key: String,
    data: Vec<u8>,
    ehk: Option<String>,
}

fn record_args(
    v: &Value,
    prefix: &str,
    viol: &mut Violations,
    max_data: usize,
) -> Result<RecordArgs, ApiError> {
    let key = opt_str(v, "PartitionKey")?;
    let data = blob(v, "Data")?;
    let ehk = opt_str(v, "ExplicitHashKey")?;
    check_text(
        viol,
        &format!("{prefix}partitionKey"),
        key,
        limits::PARTITION_KEY_CHARS_MAX,
    );
    match &data {
        None => viol.add(None, &format!("{prefix}data"), "Member must not be null"),
        Some(d) if d.len() > max_data => viol.add(
            Some(&format!(
                "java.nio.HeapByteBuffer[pos=0 lim={0} cap={0}]",
                d.len()
            )),
            &format!("{prefix}data"),
            &format!("Member must have length less than or equal to {max_data}"),
        ),
        _ => {}
    }
    if let Some(h) = ehk {
        check_explicit_hash_key(viol, prefix, h);
    }
    Ok(RecordArgs {
        key: key.unwrap_or("").to_string(),
        data: data.unwrap_or_default(),
        ehk: ehk.map(str::to_string),
    })
}

fn check_explicit_hash_key(viol: &mut Violations, prefix: &str, h: &str) {
    if h.is_empty()
        || h.len() > 39
        || !h.bytes().all(|b| b.is_ascii_digit())
        || (h.len() > 1 && h.starts_with('0'))
    {
        viol.add(
            Some(h),
            &format!("{prefix}explicitHashKey"),
            "Member must satisfy regular expression pattern: 0|([1-9]\\d{0,38})",
        );
    }
}

/// A value the fast paths take only as a JSON object. serde's derived
/// structs also accept an array of the members in declaration order, which
/// the general path refuses ("The request body must be an object."); so the
/// fast paths read every struct through this, and an array goes to the
/// general path for its error.
struct Obj<T>(T);

impl<'de, T: serde::Deserialize<'de>> serde::Deserialize<'de> for Obj<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit<T>(std::marker::PhantomData<T>);
        impl<'de, T: serde::Deserialize<'de>> serde::de::Visitor<'de> for Visit<T> {
            type Value = Obj<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Obj<T>, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(Obj)
            }
        }
        d.deserialize_map(Visit(std::marker::PhantomData))
    }
}

/// A PutRecords request as the fast path reads it: the records' strings
/// borrowed from the body (copied only when they hold escapes). serde
/// copies an optional `Cow` always, so the stream name and a hash key are
/// copied; they are short.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FastPutRecords<'a> {
    #[serde(rename = "StreamName", borrow)]
    stream_name: Option<Cow<'a, str>>,
    #[serde(rename = "StreamARN", borrow)]
    stream_arn: Option<Cow<'a, str>>,
    #[serde(rename = "Records", borrow)]
    records: Vec<Obj<FastRecord<'a>>>,
}

/// A record as the fast paths read it: an entry of PutRecords' `Records`,
/// or a whole PutRecord request, which also names its stream. Any other
/// member (`StreamARN`, `SequenceNumberForOrdering`, a misspelling) sends
/// the request to the general path.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FastRecord<'a> {
    #[serde(rename = "Data", borrow)]
    data: Cow<'a, str>,
    #[serde(rename = "PartitionKey", borrow)]
    partition_key: Cow<'a, str>,
    #[serde(rename = "ExplicitHashKey", borrow)]
    explicit_hash_key: Option<Cow<'a, str>>,
    /// PutRecord only; an entry of `Records` that has one is not plain.
    #[serde(rename = "StreamName", borrow)]
    stream_name: Option<Cow<'a, str>>,
}

/// What the fast path answered: the JSON body, and the records and data
/// bytes it wrote (for metrics).
#[derive(Debug)]
pub struct FastAnswer {
    pub body: Vec<u8>,
    pub records: u64,
    pub bytes: u64,
}

/// PutRecords in JSON without a value tree: the body is parsed into
/// borrowed fields, every record's data is base64-decoded into one buffer,
/// and the answer is written straight into its bytes. It takes only valid
/// requests that name their stream by name: anything else (a parse error,
/// a violated constraint, a stream ARN) returns `None`, and the general
/// path answers it with its exact errors. The checks are the general
/// path's own functions, so both accept the same requests.
///
/// `engine_for` answers the engine for the named stream (the caller's, or
/// with authentication the one a resource policy lets it into).
/// The stream's name comes back beside the outcome, for the call's metrics,
/// whether it succeeded or not.
pub fn put_records_fast(
    engine_for: impl FnOnce(&str) -> Result<Engine, ApiError>,
    body: &[u8],
) -> Option<(String, Result<FastAnswer, ApiError>)> {
    let (stream, prepared) =
        put_records_fast_with(engine_for, body, |e, name, inputs| e.put_records(name, inputs))?;
    let out =
        prepared.and_then(|(parsed, results)| results.map(|r| parsed.answer(r)).map_err(ApiError::from));
    Some((stream, out))
}

/// What the fast path keeps of a request to write its answer.
#[derive(Debug)]
pub struct FastPut {
    /// Data bytes of each record, in request order.
    sizes: Vec<usize>,
}

/// A request the fast path took: its stream's name (for the call's
/// metrics, whatever the outcome), then what it keeps for the answer and
/// what `put` gave, or the engine lookup's error.
pub type FastPrepared<T> = (String, Result<(FastPut, T), ApiError>);

/// The fast path's parse and checks; `put` is called with the engine, the
/// stream and the decoded records (a blocking put, or one that returns a
/// future). `None`, and the stream's name, as for [`put_records_fast`].
pub fn put_records_fast_with<T>(
    engine_for: impl FnOnce(&str) -> Result<Engine, ApiError>,
    body: &[u8],
    put: impl FnOnce(&Engine, &str, &[PutRecordInput<'_>]) -> T,
) -> Option<FastPrepared<T>> {
    let Obj(req) = serde_json::from_slice::<Obj<FastPutRecords<'_>>>(body).ok()?;
    if req.stream_arn.is_some() {
        return None;
    }
    let name = req.stream_name.as_deref()?;
    let n = req.records.len();
    if n == 0 || n > limits::PUT_RECORDS_COUNT_MAX {
        return None;
    }
    let mut viol = Violations::default();
    check_name(&mut viol, "StreamName", Some(name), false);
    // SIMD decode: base64 was a tenth of the server's CPU under PutRecords.
    // It accepts exactly what the general path's decoder does (see the
    // property test `simd_base64_agrees_with_the_general_decoder`).
    let b64 = base64_simd::STANDARD;
    let mut arena = Vec::with_capacity(req.records.iter().map(|r| r.0.data.len() / 4 * 3).sum());
    let mut spans = Vec::with_capacity(n);
    for Obj(r) in &req.records {
        if r.stream_name.is_some() {
            return None;
        }
        check_fast_record(&mut viol, &r.partition_key, r.explicit_hash_key.as_deref());
        let start = arena.len();
        b64.decode_append(r.data.as_bytes(), &mut arena).ok()?;
        if arena.len() - start > limits::RECORD_BYTES_LIMIT {
            return None;
        }
        spans.push(start..arena.len());
    }
    if !viol.is_empty() {
        return None;
    }
    let inputs: Vec<PutRecordInput<'_>> = req
        .records
        .iter()
        .zip(&spans)
        .map(|(Obj(r), span)| PutRecordInput {
            partition_key: &r.partition_key,
            data: &arena[span.clone()],
            explicit_hash_key: r.explicit_hash_key.as_deref(),
            sequence_number_for_ordering: None,
        })
        .collect();
    let e = match engine_for(name) {
        Ok(e) => e,
        Err(err) => return Some((name.to_string(), Err(err))),
    };
    let out = put(&e, name, &inputs);
    let parsed = FastPut {
        sizes: spans.iter().map(|s| s.len()).collect(),
    };
    Some((name.to_string(), Ok((parsed, out))))
}

impl FastPut {
    /// The PutRecords answer, written straight into bytes.
    pub fn answer(
        &self,
        results: Vec<Result<shardlog_stream::PutRecordOutput, shardlog_stream::PutRecordFailure>>,
    ) -> FastAnswer {
        let n = self.sizes.len();
        let failed = results.iter().filter(|r| r.is_err()).count();
        let encrypted = results.iter().any(|r| r.as_ref().is_ok_and(|o| o.encrypted));
        let (mut records, mut bytes) = (0u64, 0u64);
        let mut out = Vec::with_capacity(64 + n * 96);
        // Members in the order the general path's value tree writes them
        // (sorted), so that both paths answer the same bytes.
        let _ = write!(
            out,
            "{{\"EncryptionType\":\"{}\",\"FailedRecordCount\":{failed},\"Records\":[",
            encryption_type(encrypted)
        );
        for (i, (r, size)) in results.iter().zip(&self.sizes).enumerate() {
            if i > 0 {
                out.push(b',');
            }
            // Sequence numbers, shard ids and error names are plain ASCII;
            // error messages go through the JSON encoder for their escapes.
            let _ = match r {
                Ok(o) => {
                    records += 1;
                    bytes += *size as u64;
                    write!(
                        out,
                        "{{\"SequenceNumber\":\"{}\",\"ShardId\":\"{}\"}}",
                        o.sequence_number, o.shard_id
                    )
                }
                Err(f) => {
                    let _ = write!(out, "{{\"ErrorCode\":\"{}\",\"ErrorMessage\":", f.error_code);
                    let _ = serde_json::to_writer(&mut out, &f.error_message);
                    write!(out, "}}")
                }
            };
        }
        out.extend_from_slice(b"]}");
        FastAnswer {
            body: out,
            records,
            bytes,
        }
    }
}

/// The checks of a record's key members that both fast paths make, with
/// the general path's own functions; its data is checked where it is
/// decoded.
fn check_fast_record(viol: &mut Violations, partition_key: &str, explicit_hash_key: Option<&str>) {
    check_text(
        viol,
        "partitionKey",
        Some(partition_key),
        limits::PARTITION_KEY_CHARS_MAX,
    );
    if let Some(h) = explicit_hash_key {
        check_explicit_hash_key(viol, "", h);
    }
}

/// A PutRecord the fast path took: its checked members, the data decoded.
#[derive(Debug)]
pub(crate) struct FastRecordArgs<'a> {
    pub stream: Cow<'a, str>,
    pub partition_key: Cow<'a, str>,
    pub explicit_hash_key: Option<Cow<'a, str>>,
    pub data: Vec<u8>,
}

impl FastRecordArgs<'_> {
    pub(crate) fn input(&self) -> PutRecordInput<'_> {
        PutRecordInput {
            partition_key: &self.partition_key,
            data: &self.data,
            explicit_hash_key: self.explicit_hash_key.as_deref(),
            sequence_number_for_ordering: None,
        }
    }
}

/// PutRecord in JSON without a value tree, the single-record write path:
/// the body is parsed into borrowed members and checked by the general
/// path's own functions. Only a plain valid request is taken; anything else
/// (a parse error, a violated constraint, a member the struct does not
/// name) returns `None`, and the general path answers it with its exact
/// errors. Against the value tree this saved about 6,000 instructions of a
/// 1 KiB PutRecord (callgrind, docs/PERFORMANCE.md, twenty-fourth pass).
pub(crate) fn put_record_fast_args(body: &[u8]) -> Option<FastRecordArgs<'_>> {
    let Obj(req) = serde_json::from_slice::<Obj<FastRecord<'_>>>(body).ok()?;
    let stream = req.stream_name?;
    let mut viol = Violations::default();
    check_name(&mut viol, "StreamName", Some(&stream), false);
    check_fast_record(&mut viol, &req.partition_key, req.explicit_hash_key.as_deref());
    if !viol.is_empty() {
        return None;
    }
    // The same decoder as `blob`, so both paths accept the same data.
    let data = base64_simd::STANDARD.decode_to_vec(req.data.as_bytes()).ok()?;
    if data.len() > limits::RECORD_BYTES_LIMIT {
        return None;
    }
    Some(FastRecordArgs {
        stream,
        partition_key: req.partition_key,
        explicit_hash_key: req.explicit_hash_key,
        data,
    })
}

/// The PutRecord answer, written straight into bytes: shard ids and
/// sequence numbers are plain ASCII, so no escaping is needed. The members
/// are in the order the general path's value tree writes them (sorted), so
/// both paths answer the same bytes.
pub(crate) fn put_record_answer_bytes(out: &shardlog_stream::PutRecordOutput) -> Vec<u8> {
    let mut body = Vec::with_capacity(128);
    let _ = write!(
        body,
        "{{\"EncryptionType\":\"{}\",\"SequenceNumber\":\"{}\",\"ShardId\":\"{}\"}}",
        encryption_type(out.encrypted),
        out.sequence_number,
        out.shard_id
    );
    body
}

/// Parses a PutRecord request and hands its stream name and record to `f`.
fn with_put_record<T>(
    v: &Value,
    f: impl FnOnce(&str, PutRecordInput<'_>) -> Result<T, ApiError>,
) -> Result<T, ApiError> {
    let mut viol = Violations::default();
    let name = stream_name(v, &mut viol)?;
    let r = record_args(v, "", &mut viol, limits::RECORD_BYTES_LIMIT)?;
    let ordering = opt_str(v, "SequenceNumberForOrdering")?;
    check_sequence_number(&mut viol, "sequenceNumberForOrdering", ordering);
    viol.into_result()?;
    f(
        &name,
        PutRecordInput {
            partition_key: &r.key,
            data: &r.data,
            explicit_hash_key: r.ehk.as_deref(),
            sequence_number_for_ordering: ordering,
        },
    )
}

fn put_record_answer(out: shardlog_stream::PutRecordOutput) -> Value {
    json!({"ShardId": out.shard_id, "SequenceNumber": out.sequence_number, "EncryptionType": encryption_type(out.encrypted)})
}

fn put_record(e: &Engine, v: &Value) -> R {
    with_put_record(v, |name, input| Ok(put_record_answer(e.put_record(name, input)?)))
}

/// PutRecord for an async caller: the record is written now, and the
/// returned future gives the answer once it is durable, without holding a
/// thread during the fsync (see `Engine::put_record_durable`).
pub(crate) fn put_record_durable(
    e: &Engine,
    v: &Value,
) -> Result<impl std::future::Future<Output = R> + Send + 'static, ApiError> {
    let durable = with_put_record(v, |name, input| Ok(e.put_record_durable(name, input)?))?;
    Ok(async move { Ok(put_record_answer(durable.await?)) })
}

fn put_records(e: &Engine, v: &Value) -> R {
    let mut viol = Violations::default();
    let name = stream_name(v, &mut viol)?;
    let records = match v.get("Records") {
        None | Some(Value::Null) => {
            viol.add(None, "records", "Member must not be null");
            &[][..]
        }
        Some(Value::Array(a)) => a.as_slice(),
        Some(_) => return Err(type_error("Records", "a list")),
    };
    if v.get("Records").is_some_and(Value::is_array) {
        check_list_len(
            &mut viol,
            "records",
            records.len(),
            limits::PUT_RECORDS_COUNT_MAX,
            Some("[...]"),
        );
    }
    let mut args = Vec::with_capacity(records.len());
    for (i, r) in records.iter().enumerate() {
        if !r.is_object() {
            return Err(type_error(&format!("Records.{}", i + 1), "a structure"));
        }
        args.push(record_args(
            r,
            &format!("records.{}.member.", i + 1),
            &mut viol,
            limits::RECORD_BYTES_LIMIT,
        )?);
    }
    viol.into_result()?;
    let inputs: Vec<PutRecordInput<'_>> = args
        .iter()
        .map(|a| PutRecordInput {
            partition_key: &a.key,
            data: &a.data,
            explicit_hash_key: a.ehk.as_deref(),
            sequence_number_for_ordering: None,
        })
        .collect();
    Ok(put_records_answer(e.put_records(&name, &inputs)?))
}

/// The PutRecords answer as a value tree (the general path's).
fn put_records_answer(
    results: Vec<Result<shardlog_stream::PutRecordOutput, shardlog_stream::PutRecordFailure>>,
) -> Value {
    let failed = results.iter().filter(|r| r.is_err()).count();
    let encrypted = results.iter().any(|r| r.as_ref().is_ok_and(|o| o.encrypted));
    let out: Vec<Value> = results
        .into_iter()
        .map(|r| match r {
            Ok(o) => json!({"SequenceNumber": o.sequence_number, "ShardId": o.shard_id}),
            Err(f) => json!({"ErrorCode": f.error_code, "ErrorMessage": f.error_message}),
        })
        .collect();
    json!({"FailedRecordCount": failed, "Records": out, "EncryptionType": encryption_type(encrypted)})
}

fn get_shard_iterator(e: &Engine, v: &Value) -> R {
    let mut viol = Violations::default();
    let name = stream_name(v, &mut viol)?;
    let shard = opt_str(v, "ShardId")?;
    if shard.is_none() {
        viol.add(None, "shardId", "Member must not be null");
    }
    check_shard_id(&mut viol, "ShardId", shard);
    let kind = opt_str(v, "ShardIteratorType")?;
    let seq = opt_str(v, "StartingSequenceNumber")?;
    check_sequence_number(&mut viol, "startingSequenceNumber", seq);
    let ts = opt_timestamp_ms(v, "Timestamp")?;
    const TYPES: &str = "Member must satisfy enum value set: [AT_SEQUENCE_NUMBER, AFTER_SEQUENCE_NUMBER, TRIM_HORIZON, LATEST, AT_TIMESTAMP]";
    match kind {
        None => viol.add(None, "shardIteratorType", "Member must not be null"),
        Some(k)
            if ![
                "AT_SEQUENCE_NUMBER",
                "AFTER_SEQUENCE_NUMBER",
                "TRIM_HORIZON",
                "LATEST",
                "AT_TIMESTAMP",
            ]
            .contains(&k) =>
        {
            viol.add(Some(k), "shardIteratorType", TYPES)
        }
        _ => {}
    }
    viol.into_result()?;
    let start = starting_position(kind, seq, ts)?;
    let it = e.get_shard_iterator(&name, shard.unwrap_or(""), start)?;
    Ok(json!({"ShardIterator": it}))
}

/// The starting position named by an iterator type, sequence number and
/// timestamp (GetShardIterator and SubscribeToShard share the rules).
fn starting_position(
    kind: Option<&str>,
    seq: Option<&str>,
    ts: Option<i64>,
) -> Result<StartingPosition, ApiError> {
    Ok(match kind.unwrap_or("") {
        "TRIM_HORIZON" | "LATEST" if seq.is_some() => {
            return Err(ApiError::invalid(format!(
                "Request specified StartingSequenceNumber {} with ShardIteratorType {}, which is not allowed.",
                seq.unwrap_or(""),
                kind.unwrap_or("")
            )))
        }
        "TRIM_HORIZON" => StartingPosition::TrimHorizon,
        "LATEST" => StartingPosition::Latest,
        "AT_SEQUENCE_NUMBER" | "AFTER_SEQUENCE_NUMBER" => {
            let s = seq.ok_or_else(|| {
                ApiError::invalid(format!(
                    "Must specify a StartingSequenceNumber when using ShardIteratorType {}.",
                    kind.unwrap_or("")
                ))
            })?;
            if kind == Some("AT_SEQUENCE_NUMBER") {
                StartingPosition::AtSequenceNumber(s.to_string())
            } else {
                StartingPosition::AfterSequenceNumber(s.to_string())
            }
        }
        _ => StartingPosition::AtTimestamp(
            ts.ok_or_else(|| ApiError::invalid("Must specify timestampInMillis parameter for iterator of type AT_TIMESTAMP. Current request has no timestamp parameter."))?,
        ),
    })
}

/// Records as GetRecords and SubscribeToShardEvent carry them.
pub(crate) fn records_json(records: &[shardlog_stream::StoredRecord]) -> Value {
    Value::Array(
        records
            .iter()
            .map(|r| {
                json!({
                    "SequenceNumber": r.sequence_number,
                    "ApproximateArrivalTimestamp": timestamp(r.approximate_arrival_ms),
                    "Data": base64::engine::general_purpose::STANDARD.encode(&r.data),
                    "PartitionKey": r.partition_key,
                    "EncryptionType": encryption_type(r.encrypted),
                })
            })
            .collect(),
    )
}

pub(crate) fn child_shards_json(children: &[shardlog_stream::ChildShard]) -> Value {
    Value::Array(
        children
            .iter()
            .map(|c| {
                json!({
                    "ShardId": c.shard_id,
                    "ParentShards": c.parent_shards,
                    "HashKeyRange": {"StartingHashKey": c.hash_range.start.to_string(), "EndingHashKey": c.hash_range.end.to_string()},
                })
            })
            .collect(),
    )
}

/// A validated SubscribeToShard request.
#[derive(Debug, Clone)]
pub struct Subscription {
    pub stream: String,
    pub consumer: String,
    pub consumer_arn: String,
    /// When the consumer was registered: a consumer deregistered and
    /// registered again under the same name mid-subscription is another
    /// consumer, and ends the subscription as a deregistration does.
    pub consumer_created_ms: i64,
    pub shard: String,
    pub position: u64,
}

/// Validates SubscribeToShard and resolves its starting position.
pub fn prepare_subscription(e: &Engine, v: &Value) -> Result<Subscription, ApiError> {
    check_arn_scope(e, v)?;
    let mut viol = Violations::default();
    let arn = opt_str(v, "ConsumerARN")?;
    if arn.is_none() {
        viol.add(None, "consumerARN", "Member must not be null");
    }
    let shard = opt_str(v, "ShardId")?;
    if shard.is_none() {
        viol.add(None, "shardId", "Member must not be null");
    }
    let sp = match v.get("StartingPosition") {
        None | Some(Value::Null) => {
            viol.add(None, "startingPosition", "Member must not be null");
            Value::Null
        }
        Some(x @ Value::Object(_)) => x.clone(),
        Some(_) => return Err(type_error("StartingPosition", "a structure")),
    };
    let kind = opt_str(&sp, "Type")?;
    if !sp.is_null() {
        match kind {
            None => viol.add(None, "startingPosition.type", "Member must not be null"),
            Some(k)
                if ![
                    "AT_SEQUENCE_NUMBER",
                    "AFTER_SEQUENCE_NUMBER",
                    "TRIM_HORIZON",
                    "LATEST",
                    "AT_TIMESTAMP",
                ]
                .contains(&k) =>
            {
                viol.add(Some(k), "startingPosition.type", "Member must satisfy enum value set: [AT_SEQUENCE_NUMBER, AFTER_SEQUENCE_NUMBER, TRIM_HORIZON, LATEST, AT_TIMESTAMP]")
            }
            _ => {}
        }
    }
    check_shard_id(&mut viol, "ShardId", shard);
    let seq = opt_str(&sp, "SequenceNumber")?;
    check_sequence_number(&mut viol, "startingPosition.sequenceNumber", seq);
    viol.into_result()?;
    let ts = opt_timestamp_ms(&sp, "Timestamp")?;
    let start = starting_position(kind, seq, ts)?;
    let mut viol = Violations::default();
    let (stream, consumer, registered_at_s) = consumer_target(e, v, &mut viol)?;
    viol.into_result()?;
    let consumer_created_ms = e.require_active_consumer(&stream, &consumer)?.created_ms;
    // The consumer the ARN names, not one registered again since its check.
    if registered_at_s.is_some_and(|s| s != consumer_created_ms.div_euclid(1000)) {
        return Err(consumer_not_found(e, &stream, &consumer));
    }
    let shard = shard.unwrap_or("");
    let position = e.position_of(&stream, shard, &start)?;
    Ok(Subscription {
        stream,
        consumer,
        consumer_arn: arn.unwrap_or("").to_string(),
        consumer_created_ms,
        shard: shardlog_stream::parse_shard_id(shard)
            .map(shardlog_stream::shard_id)
            .unwrap_or_else(|| shard.to_string()),
        position,
    })
}

fn get_records(e: &Engine, v: &Value) -> R {
    Ok(get_records_value(&get_records_output(e, v)?))
}

/// A GetRecords answer as a value (for CBOR, which the encoder converts).
pub fn get_records_value(out: &shardlog_stream::GetRecordsOutput) -> Value {
    let mut m = Map::new();
    m.insert("Records".into(), records_json(&out.records));
    m.insert("MillisBehindLatest".into(), json!(out.millis_behind_latest));
    if let Some(next) = &out.next_shard_iterator {
        m.insert("NextShardIterator".into(), json!(next));
    }
    if !out.child_shards.is_empty() {
        m.insert("ChildShards".into(), child_shards_json(&out.child_shards));
    }
    Value::Object(m)
}

/// Records per piece of a GetRecords answer in JSON (about 350 KB of
/// base64 for 1 KiB records).
pub const GET_RECORDS_CHUNK_RECORDS: usize = 256;

/// The JSON answer of GetRecords in pieces of [`GET_RECORDS_CHUNK_RECORDS`]
/// records, written straight from the records (no value tree) and encoded
/// only as the connection takes them: a 10,000-record answer never exists
/// whole, and each record's copy is freed once it is encoded.
pub fn get_records_json_chunks(
    out: shardlog_stream::GetRecordsOutput,
) -> impl Iterator<Item = Vec<u8>> + Send {
    let quoted = |s: &str| serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into());
    let mut tail = String::from("],\"MillisBehindLatest\":");
    tail.push_str(&out.millis_behind_latest.to_string());
    if let Some(next) = &out.next_shard_iterator {
        tail.push_str(",\"NextShardIterator\":");
        tail.push_str(&quoted(next));
    }
    if !out.child_shards.is_empty() {
        tail.push_str(",\"ChildShards\":");
        tail.push_str(&child_shards_json(&out.child_shards).to_string());
    }
    tail.push('}');
    let mut records = out.records.into_iter();
    let (mut first, mut done) = (true, false);
    std::iter::from_fn(move || {
        if done {
            return None;
        }
        let mut body = String::with_capacity(GET_RECORDS_CHUNK_RECORDS * 1600);
        if first {
            body.push_str("{\"Records\":[");
        }
        for r in records.by_ref().take(GET_RECORDS_CHUNK_RECORDS) {
            if !first {
                body.push(',');
            }
            first = false;
            body.push_str("{\"SequenceNumber\":\"");
            body.push_str(&r.sequence_number);
            body.push_str("\",\"ApproximateArrivalTimestamp\":");
            body.push_str(&timestamp(r.approximate_arrival_ms).to_string());
            body.push_str(",\"Data\":\"");
            base64_simd::STANDARD.encode_append(&*r.data, &mut body);
            body.push_str("\",\"PartitionKey\":");
            body.push_str(&quoted(&r.partition_key));
            body.push_str(",\"EncryptionType\":\"");
            body.push_str(encryption_type(r.encrypted));
            body.push_str("\"}");
        }
        first = false;
        if records.len() == 0 {
            body.push_str(&tail);
            done = true;
        }
        Some(body.into_bytes())
    })
}

/// Validates a GetRecords request and reads (shared by the JSON and CBOR
/// answers).
pub fn get_records_output(e: &Engine, v: &Value) -> Result<shardlog_stream::GetRecordsOutput, ApiError> {
    let mut viol = Violations::default();
    let it = opt_str(v, "ShardIterator")?;
    check_text(&mut viol, "shardIterator", it, 512);
    let limit = opt_int(v, "Limit")?;
    int_range(&mut viol, "Limit", limit, 1, 10_000);
    viol.into_result()?;
    Ok(e.get_records(it.unwrap_or(""), limit.map(|l| l as usize))?)
}

/// Split, merge and UpdateShardCount are for provisioned streams only.
fn require_provisioned(e: &Engine, name: &str, op: &str) -> Result<(), ApiError> {
    if e.describe_stream(name)?.mode == StreamMode::OnDemand {
        return Err(ApiError::new(
            "ValidationException",
            format!("{op} is not supported for stream {name} because it is in ON_DEMAND mode; switch it to PROVISIONED first."),
        ));
    }
    Ok(())
}

fn split_shard(e: &Engine, v: &Value) -> R {
    let mut viol = Violations::default();
    let name = stream_name(v, &mut viol)?;
    let shard = opt_str(v, "ShardToSplit")?;
    let key = opt_str(v, "NewStartingHashKey")?;
    if shard.is_none() {
        viol.add(None, "shardToSplit", "Member must not be null");
    }
    check_shard_id(&mut viol, "ShardToSplit", shard);
    match key {
        None => viol.add(None, "newStartingHashKey", "Member must not be null"),
        Some(k)
            if !k.bytes().all(|b| b.is_ascii_digit())
                || k.is_empty()
                || k.len() > 39
                || (k.len() > 1 && k.starts_with('0')) =>
        {
            viol.add(
                Some(k),
                "newStartingHashKey",
                "Member must satisfy regular expression pattern: 0|([1-9]\\d{0,38})",
            )
        }
        _ => {}
    }
    viol.into_result()?;
    require_provisioned(e, &name, "SplitShard")?;
    e.split_shard(&name, shard.unwrap_or(""), key.unwrap_or(""))?;
    Ok(Value::Null)
}

fn merge_shards(e: &Engine, v: &Value) -> R {
    let mut viol = Violations::default();
    let name = stream_name(v, &mut viol)?;
    let a = opt_str(v, "ShardToMerge")?;
    let b = opt_str(v, "AdjacentShardToMerge")?;
    if a.is_none() {
        viol.add(None, "shardToMerge", "Member must not be null");
    }
    if b.is_none() {
        viol.add(None, "adjacentShardToMerge", "Member must not be null");
    }
    check_shard_id(&mut viol, "ShardToMerge", a);
    check_shard_id(&mut viol, "AdjacentShardToMerge", b);
    viol.into_result()?;
    require_provisioned(e, &name, "MergeShards")?;
    e.merge_shards(&name, a.unwrap_or(""), b.unwrap_or(""))?;
    Ok(Value::Null)
}

fn update_shard_count(e: &Engine, v: &Value) -> R {
    let mut viol = Violations::default();
    let name = stream_name(v, &mut viol)?;
    let target = req_int(v, &mut viol, "TargetShardCount", 1, 100_000)?;
    match opt_str(v, "ScalingType")? {
        None => viol.add(None, "scalingType", "Member must not be null"),
        Some("UNIFORM_SCALING") => {}
        Some(other) => viol.add(
            Some(other),
            "scalingType",
            "Member must satisfy enum value set: [UNIFORM_SCALING]",
        ),
    }
    viol.into_result()?;
    let target = target.unwrap_or(1) as u32;
    require_provisioned(e, &name, "UpdateShardCount")?;
    let previous = e.update_shard_count(&name, target)?;
    Ok(
        json!({"StreamName": name, "StreamARN": stream_arn(e, &name), "CurrentShardCount": previous, "TargetShardCount": target}),
    )
}

fn retention(e: &Engine, v: &Value, increase: bool) -> R {
    let mut viol = Violations::default();
    let name = stream_name(v, &mut viol)?;
    // The service's own validation takes 1-10,000 (as recorded against AWS
    // by kinesalite; the public model lost the bounds); within that, the
    // service refuses a period out of 24-8,760 with an
    // InvalidArgumentException.
    let hours = req_int(v, &mut viol, "RetentionPeriodHours", 1, 10_000)?;
    viol.into_result()?;
    // Within 1-10,000 now; the engine checks 24-8,760 after it has found
    // the stream, so a missing stream is reported first, as at AWS.
    let hours = u32::try_from(hours.unwrap_or(24)).unwrap_or(u32::MAX);
    if increase {
        e.increase_retention(&name, hours)?;
    } else {
        e.decrease_retention(&name, hours)?;
    }
    Ok(Value::Null)
}

fn add_tags(e: &Engine, v: &Value) -> R {
    let mut viol = Violations::default();
    let name = stream_name(v, &mut viol)?;
    let tags = tags_of(v, "Tags")?;
    if v.get("Tags").is_none() {
        viol.add(None, "tags", "Member must not be null");
    }
    check_tag_count(&mut viol, v, "Tags");
    viol.into_result()?;
    e.add_tags(&name, &tags)?;
    Ok(Value::Null)
}

fn remove_tags(e: &Engine, v: &Value) -> R {
    let mut viol = Violations::default();
    let name = stream_name(v, &mut viol)?;
    let keys: Vec<String> = match v.get("TagKeys") {
        Some(Value::Array(a)) => a.iter().filter_map(|k| k.as_str().map(str::to_string)).collect(),
        None | Some(Value::Null) => {
            viol.add(None, "tagKeys", "Member must not be null");
            Vec::new()
        }
        Some(_) => return Err(type_error("TagKeys", "a list of strings")),
    };
    if v.get("TagKeys").is_some_and(Value::is_array) {
        check_tag_keys(&mut viol, &keys);
    }
    viol.into_result()?;
    e.remove_tags(&name, &keys)?;
    Ok(Value::Null)
}

fn list_tags(e: &Engine, v: &Value) -> R {
    let mut viol = Violations::default();
    let name = stream_name(v, &mut viol)?;
    let start = opt_str(v, "ExclusiveStartTagKey")?;
    let limit = opt_int(v, "Limit")?;
    int_range(&mut viol, "Limit", limit, 1, 50);
    viol.into_result()?;
    let tags = e.list_tags(&name)?;
    let limit = limit.unwrap_or(50) as usize;
    let after: Vec<_> = tags
        .iter()
        .filter(|(k, _)| start.is_none_or(|s| k.as_str() > s))
        .collect();
    let has_more = after.len() > limit;
    Ok(json!({
        "Tags": after.into_iter().take(limit).map(|(k, v)| json!({"Key": k, "Value": v})).collect::<Vec<_>>(),
        "HasMoreTags": has_more,
    }))
}

/// `(stream, consumer)` from ConsumerARN, or from StreamARN + ConsumerName.
/// The stream and consumer a request names (by ConsumerARN, or by
/// StreamARN and ConsumerName), and the creation time (seconds) an ARN
/// ends in, which an operation that changes the consumer checks again
/// where it makes the change.
fn consumer_target(
    e: &Engine,
    v: &Value,
    viol: &mut Violations,
) -> Result<(String, String, Option<i64>), ApiError> {
    if let Some(arn) = opt_str(v, "ConsumerARN")? {
        let Some((stream, Some((consumer, created_s)))) = parse_kinesis_arn(arn) else {
            viol.add(
                Some(arn),
                "consumerARN",
                "Member must satisfy regular expression pattern: ^(arn):aws.*:kinesis:.*:\\d{12}:.*stream\\/[a-zA-Z0-9_.-]+\\/consumer\\/[a-zA-Z0-9_.-]+:[0-9]+",
            );
            std::mem::take(viol).into_result()?;
            return Err(ApiError::invalid(format!("ConsumerARN {arn} is invalid.")));
        };
        check_consumer_arn_current(e, stream, consumer, created_s)?;
        return Ok((stream.to_string(), consumer.to_string(), Some(created_s)));
    }
    let stream = stream_name(v, viol)?;
    let consumer = opt_str(v, "ConsumerName")?;
    check_name(viol, "ConsumerName", consumer, true);
    Ok((stream, consumer.unwrap_or("").to_string(), None))
}

fn consumer_json(e: &Engine, stream: &str, c: &shardlog_stream::ConsumerDescription) -> Value {
    json!({
        "ConsumerName": c.name,
        "ConsumerARN": consumer_arn(e, stream, &c.name, c.created_ms),
        "ConsumerStatus": c.status,
        "ConsumerCreationTimestamp": timestamp(c.created_ms),
    })
}

fn register_consumer(e: &Engine, v: &Value) -> R {
    let mut viol = Violations::default();
    let arn = opt_str(v, "StreamARN")?;
    if arn.is_none() {
        viol.add(None, "streamARN", "Member must not be null");
    }
    let name = stream_name(v, &mut viol)?;
    let consumer = opt_str(v, "ConsumerName")?;
    check_name(&mut viol, "ConsumerName", consumer, true);
    viol.into_result()?;
    let consumer = consumer.unwrap_or("");
    // A consumer registered under a name used before starts without the
    // old one's tags and policy: a deregistration removes them with the
    // consumer, and a registration removes any left by an older build in
    // the same durable change that adds the consumer.
    let c = e.register_consumer_forgetting(&name, consumer, &consumer_setting_keys(consumer))?;
    Ok(json!({"Consumer": consumer_json(e, &name, &c)}))
}

/// The stream settings that hold what the server keeps of a consumer
/// beside the engine's record of it: its tags and its resource policy.
fn consumer_setting_keys(consumer: &str) -> [String; 2] {
    [
        consumer_tags_key(consumer),
        crate::policy::policy_setting_key(Some(consumer)),
    ]
}

fn deregister_consumer(e: &Engine, v: &Value) -> R {
    let mut viol = Violations::default();
    let (stream, consumer, registered_at_s) = consumer_target(e, v, &mut viol)?;
    viol.into_result()?;
    // The creation time the ARN ends in (checked above) is checked again
    // under the stream's lock, where the consumer and its settings are
    // removed in one durable change.
    e.deregister_consumer(
        &stream,
        &consumer,
        registered_at_s,
        &consumer_setting_keys(&consumer),
    )?;
    Ok(Value::Null)
}

fn describe_consumer(e: &Engine, v: &Value) -> R {
    let mut viol = Violations::default();
    let (stream, consumer, _) = consumer_target(e, v, &mut viol)?;
    viol.into_result()?;
    let c = e.describe_consumer(&stream, &consumer)?;
    let mut d = consumer_json(e, &stream, &c);
    d["StreamARN"] = json!(stream_arn(e, &stream));
    Ok(json!({"ConsumerDescription": d}))
}

fn list_consumers(e: &Engine, v: &Value) -> R {
    let mut viol = Violations::default();
    if opt_str(v, "StreamARN")?.is_none() {
        viol.add(None, "streamARN", "Member must not be null");
    }
    let name = stream_name(v, &mut viol)?;
    let max = opt_int(v, "MaxResults")?;
    int_range(&mut viol, "MaxResults", max, 1, 10_000);
    let token = opt_str(v, "NextToken")?;
    viol.into_result()?;
    // A page ends at a consumer; the next one starts after it in the order
    // of registration (creation time, then name), so consumers registered
    // or deregistered between pages neither repeat nor push others out.
    let after: Option<(i64, String)> = match token {
        None => None,
        Some(t) => match token_decode(t)?.as_deref() {
            Some([kind, stream, created, last]) if kind == "consumers" && *stream == name => {
                let created = created
                    .parse::<i64>()
                    .map_err(|_| ApiError::invalid("Invalid NextToken."))?;
                Some((created, last.clone()))
            }
            _ => return Err(ApiError::invalid("Invalid NextToken.")),
        },
    };
    let mut cs = e.list_consumers(&name)?;
    cs.sort_by(|a, b| (a.created_ms, &a.name).cmp(&(b.created_ms, &b.name)));
    let max = max.unwrap_or(LIST_CONSUMERS_PAGE_DEFAULT) as usize;
    let rest: Vec<_> = cs
        .iter()
        .filter(|c| {
            after
                .as_ref()
                .is_none_or(|(t, n)| (c.created_ms, &c.name) > (*t, n))
        })
        .collect();
    let page = &rest[..rest.len().min(max)];
    let mut out = json!({"Consumers": page.iter().map(|c| consumer_json(e, &name, c)).collect::<Vec<_>>()});
    if rest.len() > max {
        if let Some(last) = page.last() {
            out["NextToken"] = json!(token_encode(&[
                "consumers",
                &name,
                &last.created_ms.to_string(),
                &last.name
            ]));
        }
    }
    Ok(out)
}

fn describe_limits(e: &Engine) -> R {
    let mut open = 0;
    let mut on_demand = 0;
    for s in e.list_streams() {
        if s.mode == StreamMode::OnDemand {
            on_demand += 1;
        }
        if let Ok(d) = e.describe_stream(&s.name) {
            open += d.open_shard_count;
        }
    }
    Ok(json!({
        "ShardLimit": e.shards_max(),
        "OpenShardCount": open,
        "OnDemandStreamCount": on_demand,
        "OnDemandStreamCountLimit": 50,
    }))
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use proptest::prelude::*;

    /// The general path decodes with `base64`; the PutRecords fast path with
    /// `base64_simd`. A record the one accepts and the other refuses would
    /// be stored by one path and refused by the other.
    fn agree(text: &[u8]) -> Result<(), TestCaseError> {
        let general = base64::engine::general_purpose::STANDARD.decode(text).ok();
        let mut simd = vec![7u8]; // decode_append must keep what is there
        let simd = base64_simd::STANDARD
            .decode_append(text, &mut simd)
            .ok()
            .map(|()| simd[1..].to_vec());
        prop_assert_eq!(general, simd, "input {:?}", String::from_utf8_lossy(text));
        Ok(())
    }

    #[test]
    fn the_put_record_fast_path_takes_only_plain_valid_requests() {
        let take = |body: &str| super::put_record_fast_args(body.as_bytes()).is_some();
        // Plain requests, with or without an explicit hash key, and with an
        // escape in a string (copied, not borrowed): taken.
        let plain = r#"{"StreamName":"s1","PartitionKey":"k","Data":"aGVsbG8="}"#;
        let args = super::put_record_fast_args(plain.as_bytes()).unwrap();
        assert_eq!(
            (&*args.stream, &*args.partition_key, &args.data[..]),
            ("s1", "k", &b"hello"[..])
        );
        assert!(take(
            r#"{"Data":"","PartitionKey":"k","StreamName":"s1","ExplicitHashKey":"0"}"#
        ));
        assert!(take(
            r#"{"StreamName":"s1","PartitionKey":"k\u00e9","Data":"aGVsbG8="}"#
        ));
        // Everything else goes to the general path, which answers with its
        // exact errors (the api tests cover those answers).
        for declined in [
            r#"{"StreamARN":"arn:aws:kinesis:us-east-1:000000000000:stream/s1","PartitionKey":"k","Data":"aGVsbG8="}"#,
            r#"{"StreamName":"s1","PartitionKey":"k","Data":"aGVsbG8=","SequenceNumberForOrdering":"1"}"#,
            r#"{"StreamName":"s1","PartitionKey":"k","Data":"aGVsbG8=","Extra":1}"#,
            r#"{"StreamName":"s1","PartitionKey":"k"}"#,
            r#"{"StreamName":"s1","PartitionKey":null,"Data":"aGVsbG8="}"#,
            r#"{"StreamName":"s1","PartitionKey":"","Data":"aGVsbG8="}"#,
            r#"{"StreamName":"bad name!","PartitionKey":"k","Data":"aGVsbG8="}"#,
            r#"{"StreamName":"s1","PartitionKey":"k","Data":"aGVsbG8"}"#,
            r#"{"StreamName":"s1","PartitionKey":"k","Data":7}"#,
            r#"{"StreamName":"s1","PartitionKey":"k","Data":"aGVsbG8=","ExplicitHashKey":"01"}"#,
            r#"{"StreamName":"s1","StreamName":"s2","PartitionKey":"k","Data":"aGVsbG8="}"#,
            r#"{"StreamName":"s1","PartitionKey":"k","Data":"aGVsbG8="} trailing"#,
            "not json",
            // serde's structs also take arrays of the members in order; the
            // general path refuses a body that is not an object.
            r#"["aGVsbG8=","k",null,"s1"]"#,
        ] {
            assert!(!take(declined), "{declined}");
        }
        // Data over the record limit (1 MiB) is the general path's
        // ValidationException, not the fast path's.
        let big = base64::engine::general_purpose::STANDARD.encode(vec![
            0u8;
            shardlog_stream::limits::RECORD_BYTES_LIMIT
                + 1
        ]);
        assert!(!take(&format!(
            r#"{{"StreamName":"s1","PartitionKey":"k","Data":"{big}"}}"#
        )));
        let at_limit = base64::engine::general_purpose::STANDARD
            .encode(vec![0u8; shardlog_stream::limits::RECORD_BYTES_LIMIT]);
        assert!(take(&format!(
            r#"{{"StreamName":"s1","PartitionKey":"k","Data":"{at_limit}"}}"#
        )));
        // PutRecords' fast path reads its entries with the same struct: an
        // entry that names a stream is not plain and goes to the general path.
        let declined = |body: &str| {
            super::put_records_fast_with(
                |_| -> Result<super::Engine, super::ApiError> { unreachable!("declined before the engine") },
                body.as_bytes(),
                |_, _, _| (),
            )
            .is_none()
        };
        assert!(declined(
            r#"{"StreamName":"s1","Records":[{"StreamName":"s1","PartitionKey":"k","Data":"aGVsbG8="}]}"#
        ));
        assert!(declined(
            r#"{"StreamName":"s1","Records":[["aGVsbG8=","k",null,null]]}"#
        ));
        assert!(declined(
            r#"["s1",null,[{"PartitionKey":"k","Data":"aGVsbG8="}]]"#
        ));
        // And the plain one is taken (it reaches the engine lookup).
        let taken = super::put_records_fast_with(
            |_| -> Result<super::Engine, super::ApiError> {
                Err(super::ApiError::not_found("no engine here"))
            },
            br#"{"StreamName":"s1","Records":[{"PartitionKey":"k","Data":"aGVsbG8="}]}"#,
            |_, _, _| (),
        );
        assert!(matches!(taken, Some((name, Err(_))) if name == "s1"));
        // A partition key over 256 characters.
        let long_key = "k".repeat(shardlog_stream::limits::PARTITION_KEY_CHARS_MAX + 1);
        assert!(!take(&format!(
            r#"{{"StreamName":"s1","PartitionKey":"{long_key}","Data":""}}"#
        )));
    }

    #[test]
    fn the_put_records_answer_in_bytes_is_the_value_trees_answer_byte_for_byte() {
        let ok = |shard: &str, seq: &str, encrypted| {
            Ok(shardlog_stream::PutRecordOutput {
                shard_id: shardlog_stream::ShardId::new(shard).unwrap(),
                sequence_number: shardlog_stream::SequenceNumber::new(seq).unwrap(),
                encrypted,
            })
        };
        let failed = || {
            Err(shardlog_stream::PutRecordFailure {
                error_code: "ProvisionedThroughputExceededException".into(),
                error_message: "Rate exceeded for shard \"shardId-000000000001\" \u{e9}".into(),
            })
        };
        for encrypted in [false, true] {
            let results = || {
                vec![
                    ok(
                        "shardId-000000000000",
                        "49000000000000000000000000000000000000000000000000000001",
                        encrypted,
                    ),
                    failed(),
                    ok(
                        "shardId-000000000002",
                        "49000000000000000000000000000000000000000000000000000002",
                        false,
                    ),
                ]
            };
            let fast = super::FastPut { sizes: vec![3, 4, 5] }.answer(results());
            let tree = crate::protocol::encode(
                crate::protocol::Format::Json,
                &super::put_records_answer(results()),
            );
            assert_eq!(
                String::from_utf8_lossy(&fast.body),
                String::from_utf8_lossy(&tree)
            );
            assert_eq!((fast.records, fast.bytes), (2, 8));
        }
    }

    #[test]
    fn the_put_record_answer_in_bytes_is_the_value_trees_answer_byte_for_byte() {
        let out = shardlog_stream::PutRecordOutput {
            shard_id: shardlog_stream::ShardId::new("shardId-000000000003").unwrap(),
            sequence_number: shardlog_stream::SequenceNumber::new(
                "49000000000000000000000000000000000000000000000000000001",
            )
            .unwrap(),
            encrypted: true,
        };
        let bytes = super::put_record_answer_bytes(&out);
        let tree = crate::protocol::encode(crate::protocol::Format::Json, &super::put_record_answer(out));
        assert_eq!(String::from_utf8_lossy(&bytes), String::from_utf8_lossy(&tree));
    }

    /// A JSON member for the PutRecord property test: a name (the real ones,
    /// others, repeats) and a value that is sometimes a string, sometimes
    /// not, sometimes empty, escaped, over a limit or not base64.
    fn put_record_member() -> impl Strategy<Value = String> {
        let name = proptest::sample::select(vec![
            "StreamName",
            "PartitionKey",
            "Data",
            "ExplicitHashKey",
            "StreamARN",
            "SequenceNumberForOrdering",
            "Other",
        ]);
        (name, put_record_value()).prop_map(|(n, v)| format!("\"{n}\":{v}"))
    }

    fn put_record_value() -> impl Strategy<Value = String> {
        prop_oneof![
            proptest::sample::select(vec![
                r#""s1""#,
                r#""""#,
                r#""ké""#,
                r#""aGVsbG8=""#,
                r#""aGVsbG8""#,
                r#""0""#,
                r#""01""#,
                r#""340282366920938463463374607431768211455""#,
                r#""bad name!""#,
                "null",
                "7",
                "true",
                "[]",
                "{}",
            ])
            .prop_map(str::to_string),
            "[a-zA-Z0-9+/=]{0,12}".prop_map(|t| format!("\"{t}\"")),
        ]
    }

    /// A PutRecord body: the three members it needs, each with any value,
    /// maybe a hash key, maybe other members, in any order; most of them
    /// are requests the fast path takes.
    fn put_record_body() -> impl Strategy<Value = String> {
        let quoted = |t: String| format!("\"{t}\"");
        (
            prop_oneof![3 => "[a-zA-Z0-9_.-]{1,8}".prop_map(quoted), 1 => put_record_value()],
            prop_oneof![3 => "[a-z\u{e9}]{1,8}".prop_map(quoted), 1 => put_record_value()],
            prop_oneof![
                3 => proptest::collection::vec(any::<u8>(), 0..40)
                    .prop_map(move |d| quoted(base64::engine::general_purpose::STANDARD.encode(d))),
                1 => put_record_value(),
            ],
            proptest::option::of(
                prop_oneof![3 => "[1-9][0-9]{0,38}".prop_map(quoted), 1 => put_record_value()],
            ),
            prop_oneof![3 => Just(Vec::new()), 1 => proptest::collection::vec(put_record_member(), 1..2)],
        )
            .prop_map(|(name, key, data, hash, extra)| {
                let mut members = vec![
                    format!("\"StreamName\":{name}"),
                    format!("\"PartitionKey\":{key}"),
                    format!("\"Data\":{data}"),
                ];
                members.extend(hash.map(|h| format!("\"ExplicitHashKey\":{h}")));
                members.extend(extra);
                members
            })
            .prop_shuffle()
            .prop_map(|members| format!("{{{}}}", members.join(",")))
    }

    /// Mostly objects, sometimes an array of values: any values, or ones
    /// that serde's derived struct would read as a valid record if it took
    /// an array (data, key, hash key, stream: the fields' order).
    fn put_record_body_or_array() -> impl Strategy<Value = String> {
        let quoted = |t: String| format!("\"{t}\"");
        prop_oneof![
            6 => put_record_body(),
            1 => proptest::collection::vec(put_record_value(), 3..5).prop_map(|v| format!("[{}]", v.join(","))),
            1 => (
                proptest::collection::vec(any::<u8>(), 0..20)
                    .prop_map(move |d| quoted(base64::engine::general_purpose::STANDARD.encode(d))),
                "[a-z]{1,8}".prop_map(quoted),
                "[a-zA-Z0-9_.-]{1,8}".prop_map(quoted),
            )
                .prop_map(|(d, k, n)| format!("[{d},{k},null,{n}]")),
        ]
    }

    proptest! {
        /// Whatever the fast path takes, the general path takes too, with
        /// the same stream, key, hash key and data: the fast path changes
        /// the cost of a PutRecord, never its outcome.
        #[test]
        fn a_put_record_the_fast_path_takes_is_the_general_paths_put_record(body in put_record_body_or_array()) {
            if let Some(fast) = super::put_record_fast_args(body.as_bytes()) {
                let v: serde_json::Value = serde_json::from_str(&body).unwrap();
                let general = super::with_put_record(&v, |name, input| {
                    Ok((
                        name.to_string(),
                        input.partition_key.to_string(),
                        input.explicit_hash_key.map(str::to_string),
                        input.data.to_vec(),
                        input.sequence_number_for_ordering.is_some(),
                    ))
                });
                let general = general.map_err(|e| e.message);
                prop_assert_eq!(
                    general,
                    Ok((
                        fast.stream.to_string(),
                        fast.partition_key.to_string(),
                        fast.explicit_hash_key.as_deref().map(str::to_string),
                        fast.data.clone(),
                        false,
                    )),
                    "body {}", body
                );
            }
        }

        #[test]
        fn simd_base64_agrees_with_the_general_decoder_on_valid_data(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let text = base64::engine::general_purpose::STANDARD.encode(&data);
            agree(text.as_bytes())?;
            let mut encoded = String::from("x");
            base64_simd::STANDARD.encode_append(&data, &mut encoded);
            prop_assert_eq!(&encoded[1..], text.as_str());
        }

        #[test]
        fn simd_base64_agrees_with_the_general_decoder_on_any_text(
            text in proptest::collection::vec(
                prop_oneof![
                    8 => proptest::sample::select(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".to_vec()),
                    1 => Just(b'='),
                    1 => any::<u8>(),
                ],
                0..120,
            )
        ) {
            agree(&text)?;
        }

        #[test]
        fn simd_base64_agrees_on_damaged_padding_and_trailing_bits(data in proptest::collection::vec(any::<u8>(), 1..64), at in any::<usize>(), to in any::<u8>()) {
            let mut text = base64::engine::general_purpose::STANDARD.encode(&data).into_bytes();
            let i = at % text.len();
            // Mostly the last characters, where padding and the spare bits are.
            let i = if at % 2 == 0 { text.len() - 1 - (i % 3.min(text.len())) } else { i };
            text[i] = to;
            agree(&text)?;
        }
    }
}

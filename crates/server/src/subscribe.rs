//! SubscribeToShard (enhanced fan-out): records pushed to a registered
//! consumer as an `application/vnd.amazon.eventstream` body.
//!
//! The body is a sequence of binary event-stream messages (prelude with
//! lengths and CRC, typed headers, payload, message CRC; encoded by
//! `aws-smithy-eventstream`, the AWS SDKs' own implementation). The first is
//! the `initial-response` event; then `SubscribeToShardEvent`s carry records
//! as they arrive (the engine's tail wait wakes the subscription; no polling
//! loop), a real `MillisBehindLatest`, a `ContinuationSequenceNumber` to
//! resume from, and at the end of a closed shard its `ChildShards`. Errors
//! after the response has started are `exception` messages.
//!
//! A subscription lasts [`SUBSCRIPTION_MS`] like AWS's. Subscribing again
//! with the same consumer to the same shard within [`RESUBSCRIBE_MIN_MS`]
//! answers `ResourceInUseException`; later, the new subscription replaces
//! the old one, which ends with a `ResourceInUseException` event. Events go through a channel of
//! [`EVENTS_BUFFERED_MAX`] messages: a slow subscriber slows its own reads
//! instead of making the server buffer without bound.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
use axum::body::Body;
use axum::http::{HeaderValue as HttpHeaderValue, StatusCode};
use axum::response::Response;
use serde_json::{json, Map, Value};
use shardlog_stream::Engine;

use crate::error::ApiError;
use crate::ops;
use crate::protocol::{self, Format};

/// How long a subscription lasts (AWS: 5 minutes).
pub const SUBSCRIPTION_MS: u64 = 5 * 60 * 1000;
/// A second subscription of a consumer to a shard sooner than this after
/// the first is refused (AWS: 5 seconds).
pub const RESUBSCRIBE_MIN_MS: u64 = 5_000;
/// An event is sent at least this often, records or not, so subscribers see
/// `MillisBehindLatest` and know the subscription is alive.
pub const HEARTBEAT_MS: u64 = 5_000;
/// Records per event, and their data bytes.
pub const EVENT_RECORDS_MAX: usize = 10_000;
pub const EVENT_BYTES_MAX: usize = 1024 * 1024;
/// Encoded events waiting for a slow subscriber.
pub const EVENTS_BUFFERED_MAX: usize = 2;
/// Subscriptions the server tracks at once.
pub const SUBSCRIPTIONS_MAX: usize = 10_000;

pub const EVENT_STREAM_CONTENT_TYPE: &str = "application/vnd.amazon.eventstream";

type Key = (String, String, String, String);

/// Active subscriptions, by account, region, consumer ARN and shard.
#[derive(Debug)]
struct Entry {
    id: u64,
    started: Instant,
    live: bool,
}

#[derive(Debug)]
pub struct Subscriptions {
    active: Mutex<HashMap<Key, Entry>>,
    next: AtomicU64,
    max: usize,
}

impl Default for Subscriptions {
    fn default() -> Self {
        Subscriptions::with_max(SUBSCRIPTIONS_MAX)
    }
}

impl Subscriptions {
    /// Tracks at most `max` subscriptions at once.
    pub fn with_max(max: usize) -> Self {
        Subscriptions {
            active: Mutex::default(),
            next: AtomicU64::default(),
            max,
        }
    }

    /// Registers a subscription, replacing an older one of the same key.
    /// At most `max` may be live at once; ended ones are kept only as long
    /// as the 5-second rule needs them.
    fn start(&self, key: Key) -> Result<u64, ApiError> {
        let mut active = self.active.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = active.get(&key) {
            if e.started.elapsed() < Duration::from_millis(RESUBSCRIBE_MIN_MS) {
                return Err(ApiError::new(
                    "ResourceInUseException",
                    format!(
                        "Another active subscription exists for consumer {} on shard {}; subscribe again after {} seconds.",
                        key.2,
                        key.3,
                        RESUBSCRIBE_MIN_MS / 1000
                    ),
                ));
            }
        }
        // A replaced subscription ends at its next event; it does not count.
        let replacing = active.get(&key).is_some_and(|e| e.live);
        if active.len() >= self.max {
            let rule = Duration::from_millis(RESUBSCRIBE_MIN_MS);
            active.retain(|_, e| e.live || e.started.elapsed() < rule);
        }
        let live = active.values().filter(|e| e.live).count() - usize::from(replacing);
        if live >= self.max || active.len() >= self.max.saturating_mul(2) {
            return Err(ApiError::new(
                "LimitExceededException",
                format!(
                    "This server serves at most {} subscriptions at once (limits.subscriptions_max); retry later.",
                    self.max
                ),
            ));
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        active.insert(
            key,
            Entry {
                id,
                started: Instant::now(),
                live: true,
            },
        );
        Ok(id)
    }

    /// Marks subscription `id` ended (if it is still the key's current one).
    fn end(&self, key: &Key, id: u64) {
        let mut active = self.active.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = active.get_mut(key) {
            if e.id == id {
                e.live = false;
            }
        }
    }

    fn is_current(&self, key: &Key, id: u64) -> bool {
        let active = self.active.lock().unwrap_or_else(|p| p.into_inner());
        active.get(key).is_some_and(|e| e.id == id)
    }
}

fn header(name: &'static str, value: &str) -> Header {
    Header::new(name, HeaderValue::String(value.to_string().into()))
}

/// One event-stream message.
fn frame(headers: Vec<Header>, payload: Vec<u8>) -> bytes::Bytes {
    let mut out = Vec::with_capacity(payload.len() + 128);
    let message = Message::new_from_parts(headers, payload);
    // Writing to a Vec fails only for headers or payloads beyond the
    // format's limits, which these events never reach.
    if aws_smithy_eventstream::frame::write_message_to(&message, &mut out).is_err() {
        out.clear();
    }
    out.into()
}

fn event(format: Format, event_type: &'static str, payload: &Value) -> bytes::Bytes {
    frame(
        vec![
            header(":message-type", "event"),
            header(":event-type", event_type),
            header(":content-type", format.content_type()),
        ],
        protocol::encode(format, payload),
    )
}

fn exception(format: Format, e: &ApiError) -> bytes::Bytes {
    frame(
        vec![
            header(":message-type", "exception"),
            header(":exception-type", e.kind),
            header(":content-type", format.content_type()),
        ],
        protocol::encode(format, &json!({"message": e.message})),
    )
}

/// Answers a SubscribeToShard request: an error response if it is invalid,
/// otherwise the event stream.
pub async fn subscribe(
    root: Engine,
    subs: Arc<Subscriptions>,
    metrics: Arc<crate::metrics::ServerMetrics>,
    account: String,
    region: String,
    format: Format,
    request: Value,
) -> Result<Response, ApiError> {
    let prepared = tokio::task::spawn_blocking(move || {
        let engine = root.for_scope(&account, &region)?;
        let sub = ops::prepare_subscription(&engine, &request)?;
        Ok::<_, ApiError>((engine, sub, account, region))
    })
    .await
    .map_err(|_| ApiError::new("InternalFailure", "Internal service failure."))??;
    let (engine, sub, account, region) = prepared;
    // Keyed by the consumer itself, not the ARN's spelling: two ARNs of one
    // consumer are one subscriber.
    let key: Key = (
        account,
        region,
        format!("{}/consumer/{}", sub.stream, sub.consumer),
        sub.shard.clone(),
    );
    let id = subs.start(key.clone()).inspect_err(|e| {
        if e.kind == "LimitExceededException" {
            metrics.limit_rejected(crate::metrics::Limit::Subscriptions);
        }
    })?;
    let (tx, rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(EVENTS_BUFFERED_MAX);
    tokio::spawn(async move {
        pump(engine, &subs, &metrics, &key, id, sub, format, tx).await;
        // The entry stays after the stream ends (the 5-second rule counts
        // from the start of the last successful subscription), but no
        // longer counts as live.
        subs.end(&key, id);
    });
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, std::convert::Infallible>(b), rx))
    });
    let mut resp = Response::new(Body::from_stream(body));
    *resp.status_mut() = StatusCode::OK;
    resp.headers_mut().insert(
        "content-type",
        HttpHeaderValue::from_static(EVENT_STREAM_CONTENT_TYPE),
    );
    Ok(resp)
}

/// Sends an event, waiting for a slow subscriber at most `left`; `false`
/// when the subscriber is gone or did not take it in time.
async fn send_within(
    tx: &tokio::sync::mpsc::Sender<bytes::Bytes>,
    event: bytes::Bytes,
    left: Duration,
) -> bool {
    matches!(tokio::time::timeout(left, tx.send(event)).await, Ok(Ok(())))
}

/// Reads the shard and sends events until the subscription ends, the shard
/// ends, it is replaced, or the subscriber goes away.
#[allow(clippy::too_many_arguments)]
async fn pump(
    engine: Engine,
    subs: &Subscriptions,
    metrics: &crate::metrics::ServerMetrics,
    key: &Key,
    id: u64,
    sub: ops::Subscription,
    format: Format,
    tx: tokio::sync::mpsc::Sender<bytes::Bytes>,
) {
    if tx
        .send(event(format, "initial-response", &json!({})))
        .await
        .is_err()
    {
        return;
    }
    let started = Instant::now();
    let lifetime = Duration::from_millis(SUBSCRIPTION_MS);
    let heartbeat = Duration::from_millis(HEARTBEAT_MS);
    let mut position = sub.position;
    let mut last_sent = Instant::now();
    loop {
        if !subs.is_current(key, id) {
            // Replaced by a newer subscription of the same consumer to the
            // same shard: as on AWS, the old one fails with
            // ResourceInUseException rather than ending quietly.
            let replaced = ApiError::new(
                "ResourceInUseException",
                format!(
                    "A newer subscription of consumer {} to shard {} replaced this one.",
                    key.2, key.3
                ),
            );
            let _ = tx.send(exception(format, &replaced)).await;
            return;
        }
        if started.elapsed() >= lifetime {
            return;
        }
        let (e, s) = (engine.clone(), sub.clone());
        let read = tokio::task::spawn_blocking(move || {
            // A consumer deregistered (or a stream deleted) mid-subscription
            // ends it with the error, as on AWS.
            if e.require_active_consumer(&s.stream, &s.consumer)?.created_ms != s.consumer_created_ms {
                return Err(shardlog_stream::Error::consumer_not_found(
                    e.account_id(),
                    &s.stream,
                    &s.consumer,
                ));
            }
            let out = e.read_shard(&s.stream, &s.shard, position, EVENT_RECORDS_MAX, EVENT_BYTES_MAX)?;
            let continuation = match out.next_position {
                Some(p) => Some(e.continuation_sequence_number(&s.stream, &s.shard, p)?),
                None => None,
            };
            Ok::<_, shardlog_stream::Error>((out, continuation))
        })
        .await;
        let (out, continuation) = match read {
            Ok(Ok(x)) => x,
            Ok(Err(err)) => {
                let _ = tx.send(exception(format, &ApiError::from(err))).await;
                return;
            }
            Err(_) => {
                let _ = tx
                    .send(exception(
                        format,
                        &ApiError::new("InternalFailure", "Internal service failure."),
                    ))
                    .await;
                return;
            }
        };
        let at_end = out.next_position.is_none();
        if !out.records.is_empty() || at_end || last_sent.elapsed() >= heartbeat {
            let mut m = Map::new();
            m.insert("Records".into(), ops::records_json(&out.records));
            m.insert("ContinuationSequenceNumber".into(), json!(continuation));
            m.insert("MillisBehindLatest".into(), json!(out.millis_behind_latest));
            if at_end {
                m.insert("ChildShards".into(), ops::child_shards_json(&out.child_shards));
            }
            // Waiting here is the back-pressure: nothing more is read until
            // the subscriber has taken this event.
            // The wait is bounded by the subscription's lifetime, so a
            // client that stops reading cannot pin it forever.
            let left = lifetime.saturating_sub(started.elapsed());
            if !send_within(
                &tx,
                event(format, "SubscribeToShardEvent", &Value::Object(m)),
                left,
            )
            .await
            {
                return;
            }
            last_sent = Instant::now();
            metrics.record_event(
                &sub.stream,
                out.records.len() as u64,
                out.records.iter().map(|r| r.data.len() as u64).sum(),
                out.millis_behind_latest,
            );
        }
        match out.next_position {
            None => return,
            Some(p) => position = p,
        }
        if out.records.is_empty() {
            let wait = heartbeat
                .saturating_sub(last_sent.elapsed())
                .min(lifetime.saturating_sub(started.elapsed()))
                .max(Duration::from_millis(1));
            let woke = engine
                .wait_for_records(&sub.stream, &sub.shard, position, wait)
                .await;
            if let Err(err) = woke {
                let _ = tx.send(exception(format, &ApiError::from(err))).await;
                return;
            }
        }
    }
}

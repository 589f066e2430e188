//! Shardlog's Kinesis-compatible server: the Kinesis Data Streams API over
//! HTTP/1.1 and cleartext HTTP/2 (prior knowledge), in awsJson 1.1 and the
//! Java SDK's CBOR, over the stream engine. A thin layer: every semantic lives
//! in `shardlog-stream`; this crate decodes, validates and encodes.

// Outside tests, no code may panic on input, I/O or a decode: every failure
// is a typed error. (Test modules unwrap freely; they are compiled with
// `test` set.)
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::unreachable,
        clippy::todo,
        clippy::unimplemented
    )
)]

pub mod auth;
pub mod console;
pub mod error;
pub mod groups;
pub mod metrics;
pub mod net;
pub mod ops;
pub mod policy;
pub mod protocol;
pub mod subscribe;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::{to_bytes, Body};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};
use shardlog_stream::Engine;
use tokio::net::TcpListener;

use crate::error::ApiError;
use crate::protocol::Format;

/// Largest request body accepted (a 10 MiB record, base64-encoded, plus room).
pub const REQUEST_BODY_BYTES_MAX: usize = 16 * 1024 * 1024;
pub const TARGET_PREFIX: &str = "Kinesis_20131202.";

pub use net::{load_tls, Limits, ServeOptions, TlsError};

#[derive(Clone)]
struct AppState {
    engine: Engine,
    subscriptions: Arc<subscribe::Subscriptions>,
    metrics: Arc<metrics::ServerMetrics>,
    limits: Limits,
    /// Set when requests must be signed: SigV4 is verified and resource
    /// policies are enforced. `None` keeps the unauthenticated behaviour.
    auth: Option<Arc<auth::Verifier>>,
    console_unsigned_reads: bool,
}

/// The HTTP routes: `POST /` for the API, health endpoints for scripts.
pub fn router(engine: Engine) -> Router {
    app(engine, &ServeOptions::default()).0
}

/// [`router`] with options (limits, authentication).
pub fn router_with(engine: Engine, options: ServeOptions) -> Router {
    app(engine, &options).0
}

/// The routes under `options`, and the counters they share with the
/// listener.
fn app(engine: Engine, options: &ServeOptions) -> (Router, Arc<metrics::ServerMetrics>) {
    let limits = &options.limits;
    let metrics: Arc<metrics::ServerMetrics> = Arc::default();
    let router = Router::new()
        .route("/", post(api))
        .route("/_health", get(health))
        .route("/_health/ready", get(health))
        .route("/metrics", get(prometheus))
        .merge(console::routes())
        .fallback(post(api))
        .with_state(Arc::new(AppState {
            engine,
            subscriptions: Arc::new(subscribe::Subscriptions::with_max(limits.subscriptions_max)),
            metrics: metrics.clone(),
            limits: limits.clone(),
            auth: options.verifier.clone(),
            console_unsigned_reads: options.console_unsigned_reads,
        }));
    (router, metrics)
}

/// Liveness and readiness: 200 while the server answers. The body says
/// `degraded` and lists the problems (quarantined streams and shards, logs
/// that refuse writes after a failed fsync) when there are any, so scripts
/// and operators see them without reading logs.
async fn health(axum::extract::State(state): axum::extract::State<Arc<AppState>>) -> impl IntoResponse {
    let problems = state.engine.problems();
    let body = if problems.is_empty() {
        json!({"status": "ok"})
    } else {
        json!({"status": "degraded", "problems": problems})
    };
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
}

/// A request id in the UUID shape AWS uses (8-4-4-4-12 hex digits), unique
/// within the process and unpredictable across processes. Ids need no
/// secrecy, so one random seed per process and a counter replace a
/// `getrandom` system call per request: the first half is a bijection of
/// the counter (SplitMix64's finalizer), so no two requests of a process
/// share it; the second half mixes it with a second seed.
fn request_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEEDS: std::sync::OnceLock<(u64, u64)> = std::sync::OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let (a, b) = *SEEDS.get_or_init(|| {
        let mut s = [0u8; 16];
        if getrandom::fill(&mut s).is_err() {
            // No entropy source: the clock still keeps ids apart from the
            // last run's in practice.
            s[..8].copy_from_slice(&shardlog_segment::now_ms().to_le_bytes());
        }
        let (x, y) = s.split_at(8);
        (
            u64::from_le_bytes(x.try_into().unwrap_or_default()),
            u64::from_le_bytes(y.try_into().unwrap_or_default()),
        )
    });
    fn mix(mut z: u64) -> u64 {
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let hi = mix(a.wrapping_add(n.wrapping_mul(0x9e37_79b9_7f4a_7c15)));
    let lo = mix(hi ^ b);
    // One write into one buffer: every answer carries an id, and two
    // `format!`s and the slicing between them took a twentieth of a
    // PutRecord's instructions (callgrind, the twenty-fourth pass).
    use std::fmt::Write as _;
    let mut id = String::with_capacity(36);
    let _ = write!(
        id,
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        hi >> 32,
        (hi >> 16) & 0xffff,
        hi & 0xffff,
        lo >> 48,
        lo & 0xffff_ffff_ffff
    );
    id
}

/// An operation's answer: a value to encode, a body already encoded, or a
/// body encoded piece by piece as the connection takes it.
enum Answer {
    Tree(Value),
    Text(Vec<u8>),
    Pieces(Box<dyn Iterator<Item = Vec<u8>> + Send>),
}

fn respond(format: Format, status: u16, body: Option<&Value>) -> Response {
    let bytes = body.map(|b| protocol::encode(format, b)).unwrap_or_default();
    respond_bytes(format, status, bytes)
}

/// The request-id headers every answer carries, as constants: a name given
/// as text is parsed on every insert (callgrind, the twenty-fourth pass).
const X_AMZN_REQUESTID: HeaderName = HeaderName::from_static("x-amzn-requestid");
const X_AMZ_ID_2: HeaderName = HeaderName::from_static("x-amz-id-2");

fn respond_bytes(format: Format, status: u16, bytes: Vec<u8>) -> Response {
    let mut resp = Response::new(Body::from(bytes));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(format.content_type()));
    if let Ok(v) = HeaderValue::from_str(&request_id()) {
        h.insert(X_AMZN_REQUESTID, v.clone());
        h.insert(X_AMZ_ID_2, v);
    }
    resp
}

fn error_response(format: Format, e: &ApiError) -> Response {
    let mut resp = respond(format, e.status, Some(&e.body()));
    if let Ok(v) = HeaderValue::from_str(e.kind) {
        resp.headers_mut().insert("x-amzn-errortype", v);
    }
    resp
}

/// The account and region a request is for, from its SigV4 credential
/// scope (`Credential=<key id>/<date>/<region>/kinesis/aws4_request`, in the
/// Authorization header or a presigned URL's `X-Amz-Credential`).
///
/// Without `--credentials-file` nothing is verified: an access key id of 12
/// digits is taken as the account (as LocalStack does), any other key uses
/// the default account. Requests without a scope use the defaults.
pub fn scope_of(headers: &HeaderMap, query: Option<&str>) -> (String, String) {
    // Every request passes here, so the usual header shape
    // ("AWS4-HMAC-SHA256 Credential=...") is matched as a prefix before the
    // search, and the credential is borrowed, not copied.
    let from_header = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|a| {
            a.strip_prefix("AWS4-HMAC-SHA256 Credential=")
                .or_else(|| a.split_once("Credential=").map(|(_, rest)| rest))
        })
        .map(|rest| std::borrow::Cow::Borrowed(rest.split([',', ' ']).next().unwrap_or_default()));
    let from_query = || {
        query?
            .split('&')
            .find_map(|kv| kv.strip_prefix("X-Amz-Credential="))
            .map(|c| std::borrow::Cow::Owned(c.replace("%2F", "/").replace("%2f", "/")))
    };
    let credential = from_header.or_else(from_query).unwrap_or_default();
    let mut parts = credential.split('/');
    let account = match parts.next() {
        Some(k) if k.len() == 12 && k.bytes().all(|b| b.is_ascii_digit()) => k.to_string(),
        _ => shardlog_stream::engine::DEFAULT_ACCOUNT_ID.to_string(),
    };
    let region = match parts.nth(1) {
        Some(r) if !r.is_empty() => r.to_string(),
        _ => shardlog_stream::engine::DEFAULT_REGION.to_string(),
    };
    (account, region)
}

async fn prometheus(axum::extract::State(state): axum::extract::State<Arc<AppState>>) -> Response {
    let (engine, m) = (state.engine.clone(), state.metrics.clone());
    let text = tokio::task::spawn_blocking(move || metrics::render(&engine, &m))
        .await
        .unwrap_or_default();
    let mut resp = Response::new(Body::from(text));
    resp.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    resp
}

/// Decoded length of a base64 string.
fn b64_len(s: &str) -> u64 {
    let pad = s.bytes().rev().take_while(|&b| b == b'=').count();
    ((s.len() / 4) * 3).saturating_sub(pad) as u64
}

/// The stream a request names, for the metrics' labels.
fn stream_label(v: &Value) -> String {
    if let Some(n) = v.get("StreamName").and_then(Value::as_str) {
        return n.to_string();
    }
    for key in ["StreamARN", "ConsumerARN"] {
        if let Some(arn) = v.get(key).and_then(Value::as_str) {
            if let Some((_, rest)) = arn.split_once(":stream/") {
                return rest.split('/').next().unwrap_or(rest).to_string();
            }
        }
    }
    String::new()
}

/// One debug line and the metrics of an answered API call; `moved` is the
/// (bytes, records) it wrote or read.
#[allow(clippy::too_many_arguments)]
fn note_call(
    metrics: &metrics::ServerMetrics,
    operation: &str,
    stream: String,
    account: &str,
    region: &str,
    error: Option<&'static str>,
    started: std::time::Instant,
    moved: (u64, u64),
) {
    tracing::debug!(
        target: "shardlog::request",
        operation = %operation,
        stream = %stream,
        account = %account,
        region = %region,
        ok = error.is_none(),
        error = error.unwrap_or(""),
        latency_us = started.elapsed().as_micros() as u64,
        "api call"
    );
    metrics.record_call(metrics::CallFacts {
        operation: operation.to_string(),
        stream,
        success: error.is_none(),
        latency: started.elapsed(),
        bytes: moved.0,
        records: moved.1,
    });
}

/// Bytes and records an answered write moved (GetRecords counts its own).
fn call_volume(op: &str, req: &Value, resp: &Value) -> (u64, u64) {
    let data_len = |r: &Value| r.get("Data").and_then(Value::as_str).map(b64_len).unwrap_or(0);
    match op {
        "PutRecord" => (data_len(req), 1),
        "PutRecords" => {
            let recs = req
                .get("Records")
                .and_then(Value::as_array)
                .map(Vec::as_slice)
                .unwrap_or_default();
            let outs = resp
                .get("Records")
                .and_then(Value::as_array)
                .map(Vec::as_slice)
                .unwrap_or_default();
            let ok: Vec<&Value> = recs
                .iter()
                .zip(outs)
                .filter(|(_, out)| out.get("ErrorCode").is_none())
                .map(|(r, _)| r)
                .collect();
            (ok.iter().map(|r| data_len(r)).sum(), ok.len() as u64)
        }
        _ => (0, 0),
    }
}

async fn api(
    axum::extract::State(state): axum::extract::State<Arc<AppState>>,
    method: axum::http::Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let format = Format::from_content_type(headers.get("content-type").and_then(|v| v.to_str().ok()));
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let groups_op = target
        .strip_prefix(groups::GROUPS_TARGET_PREFIX)
        .map(str::to_string);
    let op = target
        .strip_prefix(TARGET_PREFIX)
        .map(str::to_string)
        .or_else(|| groups_op.clone());
    let unknown_target = || {
        error_response(
            format,
            &ApiError::new("UnknownOperationException", format!("Unknown target '{target}'.")),
        )
    };
    // Without authentication an unknown target is answered before the body
    // is read, as it always was; with it, the signature comes first so an
    // unsigned caller learns nothing, not even which operations exist.
    if op.is_none() && state.auth.is_none() {
        return unknown_target();
    }
    // The body must arrive whole, within its size and time limits, before
    // anything else happens: a slow or endless sender holds nothing else.
    let body_max = state.limits.request_body_bytes_max;
    let body_time = std::time::Duration::from_millis(state.limits.body_read_timeout_ms);
    let bytes = match tokio::time::timeout(body_time, to_bytes(body, body_max)).await {
        Ok(Ok(b)) => b,
        Ok(Err(_)) => {
            state.metrics.limit_rejected(metrics::Limit::RequestBodyBytes);
            let mut e = ApiError::serialization(format!(
                "Request body exceeds {body_max} bytes (limits.request_body_bytes_max)."
            ));
            e.status = 413;
            return error_response(format, &e);
        }
        Err(_) => {
            state.metrics.limit_rejected(metrics::Limit::BodyTimeout);
            let mut e = ApiError::new(
                "RequestTimeoutException",
                format!(
                    "The request body did not arrive within {} ms (limits.body_read_timeout_ms).",
                    state.limits.body_read_timeout_ms
                ),
            );
            e.status = 408;
            return error_response(format, &e);
        }
    };
    // With authentication on, the web console (which cannot sign) may still
    // read, unsigned, in the default account: only the operations below,
    // only with its header (a custom header that cross-site pages cannot
    // send without a CORS preflight, which this server never grants), and
    // only while `console_unsigned_reads` is on.
    let console_read = state.auth.is_some()
        && state.console_unsigned_reads
        && headers.contains_key(console::CONSOLE_HEADER)
        && !headers.contains_key("authorization")
        && !uri.query().is_some_and(|q| q.contains("X-Amz-Signature="))
        && op
            .as_deref()
            .is_some_and(|o| console::READ_OPERATIONS.contains(&o));
    let identity = match &state.auth {
        None => None,
        Some(_) if console_read => Some(auth::Identity {
            access_key_id: String::new(),
            account: shardlog_stream::engine::DEFAULT_ACCOUNT_ID.to_string(),
            region: shardlog_stream::engine::DEFAULT_REGION.to_string(),
        }),
        Some(verifier) => {
            let signed = auth::SignedRequest {
                method: method.as_str(),
                path: uri.path(),
                query: uri.query(),
                headers: &headers,
                authority: uri.authority().map(|a| a.as_str()),
                body: &bytes,
            };
            match verifier.verify(&signed, std::time::SystemTime::now()) {
                Ok(id) => Some(id),
                Err(e) => {
                    tracing::debug!(error = %e.kind, message = %e.message, "request not authenticated");
                    return error_response(format, &e);
                }
            }
        }
    };
    let Some(op) = op else {
        return unknown_target();
    };
    // PutRecords in JSON, the hot write path, is parsed on the blocking
    // thread without a value tree (see `ops::put_records_fast`).
    let fast_put = groups_op.is_none() && op == "PutRecords" && format == Format::Json;
    // PutRecord in JSON likewise, on this worker (see
    // `ops::put_record_fast_args`); the tree is made below only when the
    // fast path declines the request.
    let fast_put_record = groups_op.is_none() && op == "PutRecord" && format == Format::Json;
    let value = if fast_put || fast_put_record {
        Value::Null
    } else {
        match protocol::decode(format, &bytes) {
            Ok(v) => v,
            Err(m) => return error_response(format, &ApiError::serialization(m)),
        }
    };
    let root = state.engine.clone();
    // A verified key's account is the caller; without verification the
    // credential scope is taken at its word.
    let (account, region) = match &identity {
        Some(id) => (id.account.clone(), id.region.clone()),
        None => scope_of(&headers, uri.query()),
    };
    // Which engine the call runs against: the caller's, or with
    // authentication the owner's when a resource policy lets the caller in.
    let authorize = {
        let verifier = state.auth.clone();
        move |root: &Engine, account: &str, region: &str, op: &str, value: &Value, kinesis_op: bool| {
            match &verifier {
                Some(v) if kinesis_op => {
                    policy::authorize(root, account, region, op, value, |a| v.knows_account(a))
                }
                _ => root.for_scope(account, region).map_err(ApiError::from),
            }
        }
    };
    if op == "SubscribeToShard" && groups_op.is_none() {
        let subs = state.subscriptions.clone();
        let m = state.metrics.clone();
        let checked = {
            let (root, value, authorize) = (root.clone(), value.clone(), authorize.clone());
            tokio::task::spawn_blocking(move || {
                authorize(&root, &account, &region, "SubscribeToShard", &value, true)
                    .map(|e| (e.account_id().to_string(), region))
            })
            .await
        };
        let (owner, region) = match checked {
            Ok(Ok(scope)) => scope,
            Ok(Err(e)) => return error_response(format, &e),
            Err(_) => {
                return error_response(
                    format,
                    &ApiError::new("InternalFailure", "Internal service failure."),
                )
            }
        };
        return match subscribe::subscribe(root, subs, m, owner, region, format, value).await {
            Ok(mut resp) => {
                if let Ok(v) = HeaderValue::from_str(&request_id()) {
                    resp.headers_mut().insert("x-amzn-requestid", v);
                }
                resp
            }
            Err(e) => error_response(format, &e),
        };
    }
    let op_name = op.clone();
    let metrics = state.metrics.clone();
    let started = std::time::Instant::now();
    if fast_put_record && root.scope_is_open(&account, &region) {
        if let Some(args) = ops::put_record_fast_args(&bytes) {
            let out = async {
                let engine = for_stream(&authorize, &root, &account, &region, &op_name, &args.stream)?;
                let durable = engine.put_record_durable(&args.stream, args.input())?;
                let written = durable.await?;
                Ok(ops::FastAnswer {
                    body: ops::put_record_answer_bytes(&written),
                    records: 1,
                    bytes: args.data.len() as u64,
                })
            }
            .await;
            let stream = args.stream.to_string();
            let answer = note_fast_put(&metrics, &op_name, stream, &account, &region, started, out);
            return answer_response(&op, format, Ok(answer));
        }
    }
    // Not taken by the fast path: the general path needs the value tree.
    let value = if fast_put_record {
        match protocol::decode(format, &bytes) {
            Ok(v) => v,
            Err(m) => return error_response(format, &ApiError::serialization(m)),
        }
    } else {
        value
    };
    // PutRecord, one small record, is written on this worker and awaits its
    // fsync from the engine's sync threads: no thread hand-off per request.
    // Only when everything it needs is in memory: the caller's engine is
    // open and no ARN may name another account's.
    let async_put = groups_op.is_none()
        && op == "PutRecord"
        && value.get("StreamARN").is_none()
        && root.scope_is_open(&account, &region);
    if async_put {
        let out: Result<Answer, ApiError> = async {
            let engine = authorize(&root, &account, &region, &op_name, &value, true)?;
            ops::check_arn_scope(&engine, &value)?;
            let answer = ops::put_record_durable(&engine, &value)?.await?;
            Ok(Answer::Tree(answer))
        }
        .await;
        let volume = match &out {
            Ok(Answer::Tree(resp)) => call_volume(&op_name, &value, resp),
            _ => (0, 0),
        };
        let error = out.as_ref().err().map(|e| e.kind);
        note_call(
            &metrics,
            &op_name,
            stream_label(&value),
            &account,
            &region,
            error,
            started,
            volume,
        );
        return answer_response(&op, format, Ok(out));
    }
    // PutRecords in JSON likewise writes on this worker and awaits the
    // syncs of its shards from the sync pool, in parallel; a request the
    // fast path does not take goes to the general path below.
    let async_fast_put = fast_put && root.scope_is_open(&account, &region);
    if async_fast_put {
        let engine_for = |name: &str| for_stream(&authorize, &root, &account, &region, &op_name, name);
        let prepared = ops::put_records_fast_with(engine_for, &bytes, |e, name, inputs| {
            e.put_records_durable(name, inputs)
        });
        if let Some((stream, prepared)) = prepared {
            let out = match prepared {
                Ok((parsed, Ok(durable))) => durable
                    .await
                    .map(|results| parsed.answer(results))
                    .map_err(ApiError::from),
                Ok((_, Err(e))) => Err(ApiError::from(e)),
                Err(e) => Err(e),
            };
            let answer = note_fast_put(&metrics, &op_name, stream, &account, &region, started, out);
            return answer_response(&op, format, Ok(answer));
        }
    }
    // The engine blocks on fdatasync; keep it off the async workers.
    let result = tokio::task::spawn_blocking(move || {
        let mut value = value;
        if fast_put {
            // The async fast path above already found this request not a
            // plain valid one; otherwise (the caller's engine is not open
            // yet) the fast path runs here, where opening may block.
            let fast = if async_fast_put {
                None
            } else {
                let engine_for =
                    |name: &str| for_stream(&authorize, &root, &account, &region, &op_name, name);
                ops::put_records_fast(engine_for, &bytes)
            };
            match fast {
                Some((stream, out)) => {
                    return note_fast_put(&metrics, &op_name, stream, &account, &region, started, out)
                }
                // Not a plain valid request: the general path answers it.
                None => value = protocol::decode(format, &bytes).map_err(ApiError::serialization)?,
            }
        }
        let engine = authorize(&root, &account, &region, &op_name, &value, groups_op.is_none())?;
        // One check of the request's ARNs for every operation below.
        ops::check_arn_scope(&engine, &value)?;
        let mut label = stream_label(&value);
        let (out, (bytes, records)) = if groups_op.is_none() && op_name == "GetRecords" {
            // The read names its stream (the request only has an
            // iterator); JSON answers skip the value tree.
            match ops::get_records_output(&engine, &value) {
                Ok(got) => {
                    label.clone_from(&got.stream_name);
                    let volume = (
                        got.records.iter().map(|r| r.data.len() as u64).sum(),
                        got.records.len() as u64,
                    );
                    let answer = match format {
                        Format::Json => Answer::Pieces(Box::new(ops::get_records_json_chunks(got))),
                        Format::Cbor => Answer::Tree(ops::get_records_value(&got)),
                    };
                    (Ok(answer), volume)
                }
                Err(e) => (Err(e), (0, 0)),
            }
        } else {
            let out = if groups_op.is_some() {
                groups::dispatch(&engine, &op_name, &value)
            } else {
                ops::dispatch(&engine, &op_name, &value)
            };
            let volume = match &out {
                Ok(resp) => call_volume(&op_name, &value, resp),
                Err(_) => (0, 0),
            };
            (out.map(Answer::Tree), volume)
        };
        let error = out.as_ref().err().map(|e| e.kind);
        note_call(
            &metrics,
            &op_name,
            label,
            &account,
            &region,
            error,
            started,
            (bytes, records),
        );
        out
    })
    .await;
    answer_response(&op, format, result)
}

/// The engine a fast-path PutRecords writes to: the stream is known only
/// once the body is parsed, and the authorization is the general path's,
/// for that stream.
fn for_stream(
    authorize: &impl Fn(&Engine, &str, &str, &str, &Value, bool) -> Result<Engine, ApiError>,
    root: &Engine,
    account: &str,
    region: &str,
    op: &str,
    stream: &str,
) -> Result<Engine, ApiError> {
    authorize(root, account, region, op, &json!({ "StreamName": stream }), true)
}

/// Counts a fast-path PutRecords or PutRecord and gives its answer.
fn note_fast_put(
    metrics: &metrics::ServerMetrics,
    op: &str,
    stream: String,
    account: &str,
    region: &str,
    started: std::time::Instant,
    out: Result<ops::FastAnswer, ApiError>,
) -> Result<Answer, ApiError> {
    // The stream labels failures too, as the general path's `stream_label`.
    let (bytes, records) = match &out {
        Ok(a) => (a.bytes, a.records),
        Err(_) => (0, 0),
    };
    let error = out.as_ref().err().map(|e| e.kind);
    note_call(
        metrics,
        op,
        stream,
        account,
        region,
        error,
        started,
        (bytes, records),
    );
    out.map(|a| Answer::Text(a.body))
}

/// The HTTP response of an operation's outcome.
fn answer_response(
    op: &str,
    format: Format,
    result: Result<Result<Answer, ApiError>, tokio::task::JoinError>,
) -> Response {
    match result {
        Ok(Ok(Answer::Tree(Value::Null))) => respond(format, 200, None),
        Ok(Ok(Answer::Tree(v))) => respond(format, 200, Some(&v)),
        Ok(Ok(Answer::Text(body))) => respond_bytes(format, 200, body),
        Ok(Ok(Answer::Pieces(pieces))) => {
            let mut resp = respond_bytes(format, 200, Vec::new());
            let stream = futures_util::stream::iter(pieces.map(Ok::<_, std::convert::Infallible>));
            *resp.body_mut() = Body::from_stream(stream);
            resp
        }
        Ok(Err(e)) => {
            if e.status >= 500 {
                tracing::error!(operation = %op, error = %e.kind, message = %e.message, "request failed");
            } else {
                tracing::debug!(operation = %op, error = %e.kind, message = %e.message, "request failed");
            }
            error_response(format, &e)
        }
        Err(join) => {
            tracing::error!(operation = %op, error = %join, "operation panicked");
            error_response(
                format,
                &ApiError::new("InternalFailure", "Internal service failure."),
            )
        }
    }
}

/// Serves the API on `listener` until `shutdown` completes; in-flight
/// requests finish first.
pub async fn serve(
    listener: TcpListener,
    engine: Engine,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(listener, engine, ServeOptions::default(), shutdown).await
}

/// Serves the API on `listener` with `options` (limits, TLS) until
/// `shutdown` completes; in-flight requests get the shutdown grace.
pub async fn serve_with(
    listener: TcpListener,
    engine: Engine,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (router, metrics) = app(engine, &options);
    net::run(listener, router, metrics, options, shutdown).await
}

/// Binds `addr` and returns the listener and the address actually bound
/// (useful with port 0).
pub async fn bind(addr: SocketAddr) -> std::io::Result<(TcpListener, SocketAddr)> {
    let l = TcpListener::bind(addr).await?;
    let a = l.local_addr()?;
    Ok((l, a))
}

#[cfg(test)]
mod tests {
    use super::{request_id, scope_of};
    use axum::http::{HeaderMap, HeaderValue};

    fn auth(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("authorization", HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn the_credential_scope_names_the_account_and_region_wherever_the_credential_is() {
        // (Authorization header, query, account, region).
        let cases = [
            (
                Some("AWS4-HMAC-SHA256 Credential=123456789012/20250101/eu-west-1/kinesis/aws4_request, SignedHeaders=host, Signature=x"),
                None,
                "123456789012",
                "eu-west-1",
            ),
            // Another order of the parts, and no space after the comma.
            (
                Some("AWS4-HMAC-SHA256 SignedHeaders=host,Credential=210987654321/20250101/ap-south-1/kinesis/aws4_request,Signature=x"),
                None,
                "210987654321",
                "ap-south-1",
            ),
            // A key id that is not an account number: the default account.
            (
                Some("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20250101/us-west-2/kinesis/aws4_request"),
                None,
                "000000000000",
                "us-west-2",
            ),
            // A presigned URL's credential, percent-encoded.
            (
                None,
                Some("X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=123456789012%2F20250101%2Fus-east-2%2Fkinesis%2Faws4_request"),
                "123456789012",
                "us-east-2",
            ),
            // Nothing, or a credential cut short or without a region: the
            // defaults.
            (None, None, "000000000000", "us-east-1"),
            (
                Some("AWS4-HMAC-SHA256 Credential=123456789012/20250101"),
                None,
                "123456789012",
                "us-east-1",
            ),
            (
                Some("AWS4-HMAC-SHA256 Credential=123456789012/20250101//kinesis/aws4_request"),
                None,
                "123456789012",
                "us-east-1",
            ),
        ];
        for (header, query, account, region) in cases {
            let headers = header.map(auth).unwrap_or_default();
            assert_eq!(
                scope_of(&headers, query),
                (account.to_string(), region.to_string()),
                "{header:?} {query:?}"
            );
        }
    }

    #[test]
    fn request_ids_have_the_uuid_shape_and_never_repeat_within_a_process() {
        let ids: std::collections::HashSet<String> = (0..100_000).map(|_| request_id()).collect();
        assert_eq!(ids.len(), 100_000);
        for id in ids.iter().take(100) {
            let parts: Vec<usize> = id.split('-').map(str::len).collect();
            assert_eq!(parts, [8, 4, 4, 4, 12], "{id}");
            assert!(id.chars().all(|c| c == '-' || c.is_ascii_hexdigit()), "{id}");
        }
    }
}

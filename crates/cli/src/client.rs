//! Client verbs: the Kinesis API of a shardlog server (or of any endpoint,
//! real AWS included) through aws-sdk-kinesis.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, Write};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use aws_sdk_kinesis::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_kinesis::primitives::{Blob, DateTime};
use aws_sdk_kinesis::types::{
    PutRecordsRequestEntry, ScalingType, ShardIteratorType, StreamMode, StreamModeDetails,
};
use aws_sdk_kinesis::Client;
use base64::Engine as _;
use serde_json::{json, Value};

/// Where and how to reach the API.
#[derive(clap::Args, Debug, Clone)]
pub struct ClientArgs {
    /// The API endpoint (a shardlog server, or AWS's).
    #[arg(
        long,
        global = true,
        env = "SHARDLOG_ENDPOINT",
        default_value = "http://127.0.0.1:4567"
    )]
    pub endpoint: String,
    /// The region to sign for.
    #[arg(long, global = true, env = "AWS_REGION", default_value = "us-east-1")]
    pub region: String,
    /// Machine-readable output (JSON) instead of text for people.
    #[arg(long, global = true)]
    pub json: bool,
    /// PEM file of certificates to trust for `https://` endpoints besides
    /// the system's roots (a server with its own or a self-signed
    /// certificate), as the AWS CLI's `AWS_CA_BUNDLE`.
    #[arg(long, global = true, env = "AWS_CA_BUNDLE")]
    pub ca_bundle: Option<std::path::PathBuf>,
}

impl ClientArgs {
    /// The extra trusted certificates (PEM), if `--ca-bundle` names a file.
    pub fn trusted_pem(&self) -> anyhow::Result<Option<Vec<u8>>> {
        let Some(path) = &self.ca_bundle else {
            return Ok(None);
        };
        let pem =
            std::fs::read(path).with_context(|| format!("cannot read --ca-bundle {}", path.display()))?;
        if !pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") {
            anyhow::bail!("--ca-bundle {} holds no PEM certificate", path.display());
        }
        Ok(Some(pem))
    }

    /// An HTTP client for the plain JSON callers (bench, groups): HTTP/1.1
    /// or HTTP/2 by ALPN over TLS for `https://` endpoints, trusting the
    /// system's roots and `--ca-bundle`.
    pub fn http_client(&self, idle_per_host: usize) -> anyhow::Result<reqwest::Client> {
        let mut b = reqwest::Client::builder()
            .use_rustls_tls()
            .pool_max_idle_per_host(idle_per_host);
        if let Some(pem) = self.trusted_pem()? {
            for cert in reqwest::Certificate::from_pem_bundle(&pem).context("--ca-bundle is not valid PEM")? {
                b = b.add_root_certificate(cert);
            }
        }
        b.build().context("cannot build the HTTP client")
    }
}

/// The access key, secret and session token to sign with: the environment's
/// `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`, else profile
/// `AWS_PROFILE` (default `default`) of the shared-credentials file
/// (`AWS_SHARED_CREDENTIALS_FILE`, default `~/.aws/credentials`), as the AWS
/// CLI looks them up; else a placeholder, which a server without
/// `--credentials-file` accepts.
fn credentials() -> (String, String, Option<String>) {
    found_credentials().unwrap_or_else(|| ("shardlog".into(), "shardlog".into(), None))
}

/// The credentials the environment or the shared-credentials file name, if
/// any (see [`credentials`]).
fn found_credentials() -> Option<(String, String, Option<String>)> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    if let (Some(key), Some(secret)) = (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
        return Some((key, secret, env("AWS_SESSION_TOKEN")));
    }
    let file = env("AWS_SHARED_CREDENTIALS_FILE")
        .map(std::path::PathBuf::from)
        .or_else(|| env("HOME").map(|h| std::path::Path::new(&h).join(".aws/credentials")));
    let profile = env("AWS_PROFILE").unwrap_or_else(|| "default".into());
    let from_file = file
        .and_then(|f| ini::Ini::load_from_file_noescape(f).ok())
        .and_then(|ini| {
            let section = ini.section(Some(profile.as_str()))?;
            let key = section.get("aws_access_key_id")?.trim().to_string();
            let secret = section.get("aws_secret_access_key")?.trim().to_string();
            let token = section.get("aws_session_token").map(|t| t.trim().to_string());
            Some((key, secret, token))
        });
    from_file
}

pub struct Ctx {
    pub client: Client,
    pub json: bool,
    pub endpoint: String,
}

/// Records PutRecords takes per call, and bytes.
const BATCH_RECORDS_MAX: usize = 500;
const BATCH_BYTES_MAX: usize = 5 * 1024 * 1024;
/// Attempts for records a PutRecords call reports as failed.
const PUT_ATTEMPTS_MAX: u32 = 8;

impl Ctx {
    pub fn new(args: &ClientArgs) -> anyhow::Result<Ctx> {
        use aws_smithy_http_client::tls;
        let (key, secret, token) = credentials();
        let mut trust = tls::TrustStore::default();
        if let Some(pem) = args.trusted_pem()? {
            trust = trust.with_pem_certificate(pem);
        }
        let context = tls::TlsContext::builder()
            .with_trust_store(trust)
            .build()
            .context("cannot set up TLS")?;
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(tls::rustls_provider::CryptoMode::Ring))
            .tls_context(context)
            .build_https();
        let conf = aws_sdk_kinesis::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(args.region.clone()))
            .credentials_provider(Credentials::new(key, secret, token, None, "environment"))
            .endpoint_url(&args.endpoint)
            .http_client(http)
            .build();
        Ok(Ctx {
            client: Client::from_conf(conf),
            json: args.json,
            endpoint: args.endpoint.clone(),
        })
    }

    /// One line for an API failure: the service's error name and message,
    /// or that the endpoint cannot be reached.
    pub fn explain<E, R>(&self, e: aws_sdk_kinesis::error::SdkError<E, R>) -> anyhow::Error
    where
        E: aws_sdk_kinesis::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: std::fmt::Debug,
    {
        use aws_sdk_kinesis::error::SdkError;
        match &e {
            SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => anyhow!(
                "cannot reach {} (is the server running? set --endpoint or SHARDLOG_ENDPOINT)",
                self.endpoint
            ),
            SdkError::ServiceError(s) => {
                let err = s.err();
                anyhow!(
                    "{}: {}",
                    err.code().unwrap_or("error"),
                    err.message().unwrap_or("the service refused the request")
                )
            }
            _ => anyhow!("{}", aws_sdk_kinesis::error::DisplayErrorContext(&e)),
        }
    }
}

/// A plain awsJson 1.1 caller, without the SDK: the load generator (which
/// should spend little CPU beside the server) and the consumer-groups
/// extension (which the SDK does not know) use it.
#[derive(Debug, Clone)]
pub struct JsonApi {
    http: reqwest::Client,
    endpoint: String,
    /// The endpoint parsed once: parsing it for every request (with IDNA
    /// host checks) was a visible share of the load generator's CPU.
    url: Option<reqwest::Url>,
    /// `X-Amz-Target` prefix, such as `Kinesis_20131202.`.
    prefix: &'static str,
    /// Real SigV4 signing, when credentials were found.
    signer: Option<Signer>,
}

/// What requests are signed with: found credentials, the region, and the
/// `Host` header the HTTP client will send (which the signature covers).
#[derive(Clone)]
struct Signer {
    identity: aws_credential_types::Credentials,
    region: String,
    host: String,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret.
        f.debug_struct("Signer")
            .field("region", &self.region)
            .field("host", &self.host)
            .finish_non_exhaustive()
    }
}

impl JsonApi {
    pub fn new(http: reqwest::Client, endpoint: &str, prefix: &'static str) -> JsonApi {
        JsonApi {
            http,
            endpoint: endpoint.to_string(),
            url: reqwest::Url::parse(endpoint).ok(),
            prefix,
            signer: None,
        }
    }

    /// Signs every request with SigV4 for `region` when the environment or
    /// the shared-credentials file has credentials (as the client verbs
    /// find them), so the caller works against a server with
    /// `--credentials-file` and against AWS. Without credentials requests
    /// keep an unsigned header, and cost no hashing.
    pub fn signing(mut self, region: &str) -> JsonApi {
        let host = reqwest::Url::parse(&self.endpoint).ok().and_then(|u| {
            let host = u.host_str()?.to_string();
            Some(match u.port() {
                Some(p) => format!("{host}:{p}"),
                None => host,
            })
        });
        if let (Some((key, secret, token)), Some(host)) = (found_credentials(), host) {
            self.signer = Some(Signer {
                identity: aws_credential_types::Credentials::new(key, secret, token, None, "shardlog"),
                region: region.to_string(),
                host,
            });
        }
        self
    }

    /// The SigV4 headers of a request with `target` and `body`.
    fn sign(signer: &Signer, target: &str, body: &[u8]) -> Result<Vec<(String, String)>> {
        use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
        let identity = signer.identity.clone().into();
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&identity)
            .region(&signer.region)
            .name("kinesis")
            .time(std::time::SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| anyhow!("cannot sign the request: {e}"))?
            .into();
        let headers = [
            ("host", signer.host.as_str()),
            ("content-type", "application/x-amz-json-1.1"),
            ("x-amz-target", target),
        ];
        let signable = SignableRequest::new("POST", "/", headers.into_iter(), SignableBody::Bytes(body))
            .map_err(|e| anyhow!("cannot sign the request: {e}"))?;
        let (instructions, _) = sign(signable, &params)
            .map_err(|e| anyhow!("cannot sign the request: {e}"))?
            .into_parts();
        Ok(instructions
            .headers()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect())
    }

    /// Calls `op`; a refusal becomes one line with the error name and message.
    pub async fn call(&self, op: &str, body: Value) -> Result<Value> {
        let bytes = self.call_raw(op, body.to_string()).await?;
        Ok(serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    /// Calls `op` with a body already encoded, and returns the answer's
    /// bytes (for callers that parse it into their own types, like the
    /// load generator, which must not spend the CPU it measures).
    ///
    /// Signed requests (see [`JsonApi::signing`]) carry a real SigV4
    /// signature. Otherwise the request carries an Authorization header in
    /// SigV4's shape but with no real signature: a shardlog server without
    /// `--credentials-file` takes only the account and region from it (here
    /// the defaults), and the local Kinesis mocks that `shardlog bench` is
    /// compared with (kinesalite, kinesis-mock; benches/peers) refuse a
    /// request that has none.
    pub async fn call_raw(&self, op: &str, body: String) -> Result<bytes::Bytes> {
        let target = format!("{}{op}", self.prefix);
        let post = || match &self.url {
            Some(url) => self.http.post(url.clone()),
            // Not a URL: reqwest reports that with the request.
            None => self.http.post(&self.endpoint),
        };
        if let Some(signer) = &self.signer {
            let mut req = post()
                .header("x-amz-target", &target)
                .header("content-type", "application/x-amz-json-1.1");
            for (k, v) in Self::sign(signer, &target, body.as_bytes())? {
                req = req.header(k, v);
            }
            return Self::answer(req.body(body).send().await, &self.endpoint).await;
        }
        let (stamp, authorization) = unsigned_headers(now_secs());
        let sent = post()
            .header("x-amz-target", &target)
            .header("content-type", "application/x-amz-json-1.1")
            .header("x-amz-date", &stamp)
            .header("authorization", authorization)
            .body(body)
            .send()
            .await;
        Self::answer(sent, &self.endpoint).await
    }

    /// A connection of its own for a hot loop of calls ([`RawConn`]), when
    /// the endpoint is plain HTTP and requests go unsigned (the shape
    /// [`JsonApi::call_raw`] sends without credentials); `None` otherwise,
    /// and the caller keeps to `call_raw`.
    pub async fn raw_conn(&self) -> Option<RawConn> {
        if self.signer.is_some() {
            return None;
        }
        let url = self.url.as_ref()?;
        if url.scheme() != "http" {
            return None;
        }
        let host = url.host_str()?.to_string();
        let port = url.port_or_known_default()?;
        let path = url.path().to_string();
        let authority = match url.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.clone(),
        };
        let mut conn = RawConn {
            addr: (host, port),
            authority: hyper::header::HeaderValue::from_str(&authority).ok()?,
            path,
            prefix: self.prefix,
            sender: None,
            target: (String::new(), hyper::header::HeaderValue::from_static("")),
            stamp: (
                0,
                hyper::header::HeaderValue::from_static(""),
                hyper::header::HeaderValue::from_static(""),
            ),
        };
        conn.connect().await.ok()?;
        Some(conn)
    }

    /// The answer's bytes, or its error as one line.
    async fn answer(sent: reqwest::Result<reqwest::Response>, endpoint: &str) -> Result<bytes::Bytes> {
        let r = sent.with_context(|| {
            format!("cannot reach a shardlog server at {endpoint} (is it running? see --endpoint)")
        })?;
        let ok = r.status().is_success();
        let bytes = r.bytes().await.unwrap_or_default();
        if !ok {
            return Err(refused(&bytes));
        }
        Ok(bytes)
    }
}

fn print_json(v: &Value) {
    println!("{v}");
}

fn millis(t: Option<&DateTime>) -> Option<i64> {
    t.map(|t| t.to_millis().unwrap_or(0))
}

/// A record as JSON lines carry it: data as text when it is UTF-8, else
/// base64 (`data_base64`).
pub fn record_json(shard: &str, r: &aws_sdk_kinesis::types::Record) -> Value {
    let data = r.data().as_ref();
    let mut v = json!({
        "shard": shard,
        "sequence_number": r.sequence_number(),
        "partition_key": r.partition_key(),
        "arrival_ms": millis(r.approximate_arrival_timestamp()),
    });
    match std::str::from_utf8(data) {
        Ok(s) => v["data"] = json!(s),
        Err(_) => v["data_base64"] = json!(base64::engine::general_purpose::STANDARD.encode(data)),
    }
    v
}

// ---------------------------------------------------------------------------
// stream …

pub async fn stream_create(ctx: &Ctx, name: &str, shards: Option<i32>, on_demand: bool) -> Result<()> {
    let mut req = ctx.client.create_stream().stream_name(name);
    if on_demand {
        req = req.stream_mode_details(
            StreamModeDetails::builder()
                .stream_mode(StreamMode::OnDemand)
                .build()?,
        );
    } else {
        req = req.shard_count(shards.unwrap_or(1));
    }
    req.send().await.map_err(|e| ctx.explain(e))?;
    if ctx.json {
        print_json(&json!({"created": name}));
    } else {
        println!("created stream {name}");
    }
    Ok(())
}

pub async fn stream_list(ctx: &Ctx) -> Result<()> {
    let mut names = Vec::new();
    let mut pages = ctx.client.list_streams().into_paginator().send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| ctx.explain(e))?;
        names.extend(page.stream_names().iter().cloned());
    }
    if ctx.json {
        print_json(&json!(names));
    } else if names.is_empty() {
        println!("no streams");
    } else {
        for n in names {
            println!("{n}");
        }
    }
    Ok(())
}

pub async fn stream_describe(ctx: &Ctx, name: &str) -> Result<()> {
    let s = ctx
        .client
        .describe_stream_summary()
        .stream_name(name)
        .send()
        .await
        .map_err(|e| ctx.explain(e))?;
    let s = s
        .stream_description_summary()
        .ok_or_else(|| anyhow!("empty answer"))?;
    let shards = list_all_shards(ctx, name).await?;
    let shard_json: Vec<Value> = shards
        .iter()
        .map(|sh| {
            json!({
                "shard_id": sh.shard_id(),
                "parent": sh.parent_shard_id(),
                "adjacent_parent": sh.adjacent_parent_shard_id(),
                "hash_key_range": sh.hash_key_range().map(|r| [r.starting_hash_key(), r.ending_hash_key()]),
                "open": sh.sequence_number_range().is_some_and(|r| r.ending_sequence_number().is_none()),
            })
        })
        .collect();
    if ctx.json {
        print_json(&json!({
            "name": s.stream_name(),
            "arn": s.stream_arn(),
            "status": s.stream_status().as_str(),
            "mode": s.stream_mode_details().map(|m| m.stream_mode().as_str()),
            "retention_hours": s.retention_period_hours(),
            "open_shards": s.open_shard_count(),
            "consumers": s.consumer_count(),
            "encryption": s.encryption_type().map(|e| e.as_str()),
            "shards": shard_json,
        }));
    } else {
        println!("stream {} ({})", s.stream_name(), s.stream_status().as_str());
        println!("  arn            {}", s.stream_arn());
        println!(
            "  mode           {}",
            s.stream_mode_details()
                .map(|m| m.stream_mode().as_str())
                .unwrap_or("PROVISIONED")
        );
        println!("  retention      {} h", s.retention_period_hours());
        println!("  open shards    {}", s.open_shard_count());
        println!("  consumers      {}", s.consumer_count().unwrap_or(0));
        println!(
            "  encryption     {}",
            s.encryption_type().map(|e| e.as_str()).unwrap_or("NONE")
        );
        println!("  shards:");
        for sh in &shards {
            let open = sh
                .sequence_number_range()
                .is_some_and(|r| r.ending_sequence_number().is_none());
            let parents: Vec<&str> = sh
                .parent_shard_id()
                .into_iter()
                .chain(sh.adjacent_parent_shard_id())
                .collect();
            println!(
                "    {} {}{}",
                sh.shard_id(),
                if open { "open" } else { "closed" },
                if parents.is_empty() {
                    String::new()
                } else {
                    format!(" (from {})", parents.join(" + "))
                }
            );
        }
    }
    Ok(())
}

pub async fn stream_delete(ctx: &Ctx, name: &str, force: bool) -> Result<()> {
    ctx.client
        .delete_stream()
        .stream_name(name)
        .enforce_consumer_deletion(force)
        .send()
        .await
        .map_err(|e| ctx.explain(e))?;
    if ctx.json {
        print_json(&json!({"deleted": name}));
    } else {
        println!("deleted stream {name}");
    }
    Ok(())
}

pub async fn stream_retention(ctx: &Ctx, name: &str, hours: i32) -> Result<()> {
    let current = ctx
        .client
        .describe_stream_summary()
        .stream_name(name)
        .send()
        .await
        .map_err(|e| ctx.explain(e))?
        .stream_description_summary()
        .map(|s| s.retention_period_hours())
        .unwrap_or(24);
    if hours > current {
        ctx.client
            .increase_stream_retention_period()
            .stream_name(name)
            .retention_period_hours(hours)
            .send()
            .await
            .map_err(|e| ctx.explain(e))?;
    } else if hours < current {
        ctx.client
            .decrease_stream_retention_period()
            .stream_name(name)
            .retention_period_hours(hours)
            .send()
            .await
            .map_err(|e| ctx.explain(e))?;
    }
    if ctx.json {
        print_json(&json!({"stream": name, "retention_hours": hours}));
    } else {
        println!("stream {name} keeps records for {hours} h (was {current} h)");
    }
    Ok(())
}

async fn list_all_shards(ctx: &Ctx, name: &str) -> Result<Vec<aws_sdk_kinesis::types::Shard>> {
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut req = ctx.client.list_shards();
        req = match &token {
            Some(t) => req.next_token(t),
            None => req.stream_name(name),
        };
        let page = req.send().await.map_err(|e| ctx.explain(e))?;
        out.extend(page.shards().iter().cloned());
        match page.next_token() {
            Some(t) => token = Some(t.to_string()),
            None => return Ok(out),
        }
    }
}

// ---------------------------------------------------------------------------
// put, import

fn random_key() -> String {
    let mut b = [0u8; 8];
    let _ = getrandom::fill(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub async fn put(
    ctx: &Ctx,
    stream: &str,
    key: Option<&str>,
    value: Option<&str>,
    file: Option<&str>,
) -> Result<()> {
    let records: Vec<Vec<u8>> = match (value, file) {
        (Some(v), None) => vec![v.as_bytes().to_vec()],
        (None, Some(f)) => vec![std::fs::read(f).with_context(|| format!("cannot read {f}"))?],
        (None, None) => {
            // Each line of standard input is a record.
            let stdin = std::io::stdin();
            stdin
                .lock()
                .lines()
                .map(|l| l.map(String::into_bytes))
                .collect::<std::io::Result<_>>()
                .context("cannot read standard input")?
        }
        (Some(_), Some(_)) => bail!("give a value or --file, not both"),
    };
    let entries: Vec<(String, Vec<u8>)> = records
        .into_iter()
        .map(|d| (key.map(str::to_string).unwrap_or_else(random_key), d))
        .collect();
    if entries.len() == 1 {
        let (k, d) = &entries[0];
        let out = ctx
            .client
            .put_record()
            .stream_name(stream)
            .partition_key(k)
            .data(Blob::new(d.clone()))
            .send()
            .await
            .map_err(|e| ctx.explain(e))?;
        if ctx.json {
            print_json(&json!({"shard": out.shard_id(), "sequence_number": out.sequence_number()}));
        } else {
            println!("{} {}", out.shard_id(), out.sequence_number());
        }
        return Ok(());
    }
    let n = put_batched(ctx, stream, entries, &mut |_, _| {}).await?;
    if ctx.json {
        print_json(&json!({"records": n}));
    } else {
        println!("put {n} records");
    }
    Ok(())
}

/// Puts records with PutRecords in batches (500 records, 5 MiB), retrying
/// the records a call reports as failed with backoff; `progress` hears of
/// every batch (records, bytes).
pub async fn put_batched(
    ctx: &Ctx,
    stream: &str,
    entries: Vec<(String, Vec<u8>)>,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<u64> {
    let mut done = 0u64;
    let mut batch: Vec<(String, Vec<u8>)> = Vec::new();
    let mut bytes = 0usize;
    let mut it = entries.into_iter().peekable();
    while let Some((k, d)) = it.next() {
        bytes += k.len() + d.len();
        batch.push((k, d));
        let next_fits = it.peek().is_some_and(|(k2, d2)| {
            batch.len() < BATCH_RECORDS_MAX && bytes + k2.len() + d2.len() <= BATCH_BYTES_MAX
        });
        if !next_fits {
            let (n, b) = (batch.len() as u64, bytes as u64);
            put_with_retries(ctx, stream, std::mem::take(&mut batch)).await?;
            done += n;
            progress(n, b);
            bytes = 0;
        }
    }
    Ok(done)
}

async fn put_with_retries(ctx: &Ctx, stream: &str, mut batch: Vec<(String, Vec<u8>)>) -> Result<()> {
    for attempt in 0..PUT_ATTEMPTS_MAX {
        let entries: Vec<PutRecordsRequestEntry> = batch
            .iter()
            .map(|(k, d)| {
                PutRecordsRequestEntry::builder()
                    .partition_key(k)
                    .data(Blob::new(d.clone()))
                    .build()
                    .map_err(|e| anyhow!("{e}"))
            })
            .collect::<Result<_>>()?;
        let out = ctx
            .client
            .put_records()
            .stream_name(stream)
            .set_records(Some(entries))
            .send()
            .await
            .map_err(|e| ctx.explain(e))?;
        if out.failed_record_count().unwrap_or(0) == 0 {
            return Ok(());
        }
        let mut last_error = String::new();
        batch = batch
            .into_iter()
            .zip(out.records())
            .filter(|(_, r)| {
                if let Some(code) = r.error_code() {
                    last_error = format!("{code}: {}", r.error_message().unwrap_or(""));
                    true
                } else {
                    false
                }
            })
            .map(|(e, _)| e)
            .collect();
        if attempt + 1 == PUT_ATTEMPTS_MAX {
            bail!(
                "{} records still failing after {PUT_ATTEMPTS_MAX} attempts ({last_error})",
                batch.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(50 << attempt.min(6))).await;
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// get, tail, export

/// Where to start reading, as people write it.
#[derive(Debug, Clone)]
pub enum Position {
    TrimHorizon,
    Latest,
    At(String),
    After(String),
    Time(DateTime),
}

impl std::str::FromStr for Position {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Position, String> {
        Ok(match s {
            "trim-horizon" | "start" | "oldest" => Position::TrimHorizon,
            "latest" | "end" | "now" => Position::Latest,
            _ => {
                if let Some(seq) = s.strip_prefix("at:") {
                    Position::At(seq.to_string())
                } else if let Some(seq) = s.strip_prefix("after:") {
                    Position::After(seq.to_string())
                } else if let Some(t) = s.strip_prefix("time:") {
                    let dt = match t.parse::<i64>() {
                        Ok(ms) => DateTime::from_millis(ms),
                        Err(_) => {
                            DateTime::from_str(t, aws_sdk_kinesis::primitives::DateTimeFormat::DateTime)
                                .map_err(|e| {
                                    format!("{t:?} is not an RFC 3339 time or epoch milliseconds: {e}")
                                })?
                        }
                    };
                    Position::Time(dt)
                } else {
                    return Err(format!(
                        "{s:?}: use trim-horizon, latest, at:SEQ, after:SEQ or time:(RFC 3339 or epoch ms)"
                    ));
                }
            }
        })
    }
}

async fn iterator(ctx: &Ctx, stream: &str, shard: &str, from: &Position) -> Result<String> {
    let mut req = ctx
        .client
        .get_shard_iterator()
        .stream_name(stream)
        .shard_id(shard);
    req = match from {
        Position::TrimHorizon => req.shard_iterator_type(ShardIteratorType::TrimHorizon),
        Position::Latest => req.shard_iterator_type(ShardIteratorType::Latest),
        Position::At(s) => req
            .shard_iterator_type(ShardIteratorType::AtSequenceNumber)
            .starting_sequence_number(s),
        Position::After(s) => req
            .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
            .starting_sequence_number(s),
        Position::Time(t) => req
            .shard_iterator_type(ShardIteratorType::AtTimestamp)
            .timestamp(*t),
    };
    let out = req.send().await.map_err(|e| ctx.explain(e))?;
    out.shard_iterator
        .ok_or_else(|| anyhow!("no iterator for {shard}"))
}

/// Writes one record: a JSON line, or with `raw` its data and a newline.
fn emit(out: &mut dyn Write, shard: &str, r: &aws_sdk_kinesis::types::Record, raw: bool) -> Result<()> {
    if raw {
        out.write_all(r.data().as_ref())?;
        out.write_all(b"\n")?;
    } else {
        writeln!(out, "{}", record_json(shard, r))?;
    }
    Ok(())
}

/// Reads shards from a position. With `follow`, keeps reading as records
/// arrive and moves from closed shards to their children (parents first,
/// so a key's records come out in order); without, stops at the end.
/// Returns the number of records written.
/// What to read, for [`read`].
#[derive(Debug, Clone)]
pub struct ReadSpec<'a> {
    pub shard: Option<&'a str>,
    pub from: &'a Position,
    pub limit: Option<u64>,
    pub follow: bool,
    pub raw: bool,
}

pub async fn read(
    ctx: &Ctx,
    stream: &str,
    spec: ReadSpec<'_>,
    out: &mut dyn Write,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<u64> {
    let ReadSpec {
        shard,
        from,
        limit,
        follow,
        raw,
    } = spec;
    let all = list_all_shards(ctx, stream).await?;
    // Which shards to start with: the one asked for, or every shard whose
    // parents are not in the listing (the oldest generation still held);
    // for `latest`, the open shards.
    let ids: BTreeSet<String> = all.iter().map(|s| s.shard_id().to_string()).collect();
    let mut pending: Vec<String> = match shard {
        Some(s) => vec![s.to_string()],
        None => match from {
            Position::Latest => all
                .iter()
                .filter(|s| {
                    s.sequence_number_range()
                        .is_some_and(|r| r.ending_sequence_number().is_none())
                })
                .map(|s| s.shard_id().to_string())
                .collect(),
            _ => all
                .iter()
                .filter(|s| {
                    s.parent_shard_id().is_none_or(|p| !ids.contains(p))
                        && s.adjacent_parent_shard_id().is_none_or(|p| !ids.contains(p))
                })
                .map(|s| s.shard_id().to_string())
                .collect(),
        },
    };
    let mut iters: BTreeMap<String, String> = BTreeMap::new();
    if shard.is_none() && matches!(from, Position::At(_) | Position::After(_)) {
        // A sequence number belongs to one shard: read from the shard that
        // accepts it.
        for s in all.iter().map(|s| s.shard_id().to_string()) {
            if let Ok(it) = iterator(ctx, stream, &s, from).await {
                iters.insert(s, it);
                break;
            }
        }
        if iters.is_empty() {
            bail!("no shard of {stream} holds that sequence number");
        }
        pending.clear();
    }
    for s in &pending {
        iters.insert(s.clone(), iterator(ctx, stream, s, from).await?);
    }
    pending.clear();
    let mut finished: BTreeSet<String> = BTreeSet::new();
    // Children wait until all their parents are finished.
    let mut waiting: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut written = 0u64;
    loop {
        let mut any = false;
        let current: Vec<(String, String)> = iters.iter().map(|(a, b)| (a.clone(), b.clone())).collect();
        for (sid, it) in current {
            let r = ctx
                .client
                .get_records()
                .shard_iterator(&it)
                .limit(10_000)
                .send()
                .await
                .map_err(|e| ctx.explain(e))?;
            let mut bytes = 0u64;
            for rec in r.records() {
                if limit.is_some_and(|l| written >= l) {
                    return Ok(written);
                }
                emit(out, &sid, rec, raw)?;
                bytes += rec.data().as_ref().len() as u64;
                written += 1;
                any = true;
            }
            if !r.records().is_empty() {
                progress(r.records().len() as u64, bytes);
            }
            match r.next_shard_iterator() {
                Some(n) => {
                    iters.insert(sid.clone(), n.to_string());
                }
                None => {
                    iters.remove(&sid);
                    finished.insert(sid.clone());
                    if shard.is_none() {
                        for c in r.child_shards() {
                            waiting
                                .entry(c.shard_id().to_string())
                                .or_insert_with(|| c.parent_shards().to_vec());
                        }
                    }
                }
            }
        }
        // Start children whose parents are all finished.
        let ready: Vec<String> = waiting
            .iter()
            .filter(|(_, parents)| parents.iter().all(|p| finished.contains(p) || !ids.contains(p)))
            .map(|(c, _)| c.clone())
            .collect();
        for c in ready {
            waiting.remove(&c);
            if !iters.contains_key(&c) && !finished.contains(&c) {
                iters.insert(
                    c.clone(),
                    iterator(ctx, stream, &c, &Position::TrimHorizon).await?,
                );
                any = true;
            }
        }
        out.flush()?;
        if iters.is_empty() && waiting.is_empty() {
            return Ok(written);
        }
        if !any {
            if !follow {
                return Ok(written);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

// ---------------------------------------------------------------------------
// reshard, consumers

pub async fn reshard_split(ctx: &Ctx, stream: &str, shard: &str, at: Option<&str>) -> Result<()> {
    let key = match at {
        Some(k) => k.to_string(),
        None => {
            let all = list_all_shards(ctx, stream).await?;
            let s = all
                .iter()
                .find(|s| s.shard_id() == shard)
                .ok_or_else(|| anyhow!("stream {stream} has no shard {shard}"))?;
            let r = s
                .hash_key_range()
                .ok_or_else(|| anyhow!("shard {shard} has no range"))?;
            let lo: u128 = r.starting_hash_key().parse()?;
            let hi: u128 = r.ending_hash_key().parse()?;
            (lo + (hi - lo) / 2 + 1).to_string()
        }
    };
    ctx.client
        .split_shard()
        .stream_name(stream)
        .shard_to_split(shard)
        .new_starting_hash_key(&key)
        .send()
        .await
        .map_err(|e| ctx.explain(e))?;
    if ctx.json {
        print_json(&json!({"split": shard, "at": key}));
    } else {
        println!("split {shard} at hash key {key}");
    }
    Ok(())
}

pub async fn reshard_merge(ctx: &Ctx, stream: &str, a: &str, b: &str) -> Result<()> {
    ctx.client
        .merge_shards()
        .stream_name(stream)
        .shard_to_merge(a)
        .adjacent_shard_to_merge(b)
        .send()
        .await
        .map_err(|e| ctx.explain(e))?;
    if ctx.json {
        print_json(&json!({"merged": [a, b]}));
    } else {
        println!("merged {a} and {b}");
    }
    Ok(())
}

pub async fn reshard_scale(ctx: &Ctx, stream: &str, target: i32) -> Result<()> {
    let out = ctx
        .client
        .update_shard_count()
        .stream_name(stream)
        .target_shard_count(target)
        .scaling_type(ScalingType::UniformScaling)
        .send()
        .await
        .map_err(|e| ctx.explain(e))?;
    if ctx.json {
        print_json(&json!({"from": out.current_shard_count(), "to": out.target_shard_count()}));
    } else {
        println!(
            "scaled {stream} from {} to {} open shards",
            out.current_shard_count().unwrap_or(0),
            out.target_shard_count().unwrap_or(0)
        );
    }
    Ok(())
}

async fn stream_arn(ctx: &Ctx, stream: &str) -> Result<String> {
    Ok(ctx
        .client
        .describe_stream_summary()
        .stream_name(stream)
        .send()
        .await
        .map_err(|e| ctx.explain(e))?
        .stream_description_summary()
        .map(|s| s.stream_arn().to_string())
        .unwrap_or_default())
}

pub async fn consumer(ctx: &Ctx, action: &str, stream: &str, name: Option<&str>) -> Result<()> {
    let arn = stream_arn(ctx, stream).await?;
    let need = || name.ok_or_else(|| anyhow!("give the consumer's name"));
    match action {
        "register" => {
            let c = ctx
                .client
                .register_stream_consumer()
                .stream_arn(&arn)
                .consumer_name(need()?)
                .send()
                .await
                .map_err(|e| ctx.explain(e))?;
            let c = c.consumer().ok_or_else(|| anyhow!("empty answer"))?;
            if ctx.json {
                print_json(
                    &json!({"name": c.consumer_name(), "arn": c.consumer_arn(), "status": c.consumer_status().as_str()}),
                );
            } else {
                println!(
                    "registered {} ({})",
                    c.consumer_arn(),
                    c.consumer_status().as_str()
                );
            }
        }
        "deregister" => {
            ctx.client
                .deregister_stream_consumer()
                .stream_arn(&arn)
                .consumer_name(need()?)
                .send()
                .await
                .map_err(|e| ctx.explain(e))?;
            if ctx.json {
                print_json(&json!({"deregistered": need()?}));
            } else {
                println!("deregistered {}", need()?);
            }
        }
        "describe" => {
            let c = ctx
                .client
                .describe_stream_consumer()
                .stream_arn(&arn)
                .consumer_name(need()?)
                .send()
                .await
                .map_err(|e| ctx.explain(e))?;
            let c = c.consumer_description().ok_or_else(|| anyhow!("empty answer"))?;
            if ctx.json {
                print_json(
                    &json!({"name": c.consumer_name(), "arn": c.consumer_arn(), "status": c.consumer_status().as_str(), "created_ms": millis(Some(c.consumer_creation_timestamp()))}),
                );
            } else {
                println!(
                    "{} {} {}",
                    c.consumer_name(),
                    c.consumer_status().as_str(),
                    c.consumer_arn()
                );
            }
        }
        _ => {
            let out = ctx
                .client
                .list_stream_consumers()
                .stream_arn(&arn)
                .send()
                .await
                .map_err(|e| ctx.explain(e))?;
            let list: Vec<Value> = out
                .consumers()
                .iter()
                .map(|c| json!({"name": c.consumer_name(), "arn": c.consumer_arn(), "status": c.consumer_status().as_str()}))
                .collect();
            if ctx.json {
                print_json(&json!(list));
            } else if list.is_empty() {
                println!("stream {stream} has no consumers");
            } else {
                for c in out.consumers() {
                    println!("{} {}", c.consumer_name(), c.consumer_status().as_str());
                }
            }
        }
    }
    Ok(())
}

/// Parses an import line into (partition key, data).
pub fn import_record(
    format: &str,
    line: &str,
    key_field: Option<&str>,
    data_field: Option<&str>,
    header: &[String],
) -> Result<(String, Vec<u8>)> {
    match format {
        "lines" => Ok((random_key(), line.as_bytes().to_vec())),
        "jsonl" => {
            let v: Value = serde_json::from_str(line).with_context(|| format!("not JSON: {line:.60}"))?;
            let key = match key_field {
                Some(f) => field_text(&v, f).ok_or_else(|| anyhow!("no field {f:?} in {line:.60}"))?,
                None => random_key(),
            };
            let data = match data_field {
                Some(f) => field_text(&v, f)
                    .ok_or_else(|| anyhow!("no field {f:?} in {line:.60}"))?
                    .into_bytes(),
                None => line.as_bytes().to_vec(),
            };
            Ok((key, data))
        }
        "csv" => {
            let cells: Vec<&str> = line.split(',').collect();
            let key = match key_field {
                Some(f) => {
                    let i = header
                        .iter()
                        .position(|h| h == f)
                        .ok_or_else(|| anyhow!("no column {f:?} in the CSV header"))?;
                    cells.get(i).map(|s| s.to_string()).unwrap_or_default()
                }
                None => random_key(),
            };
            let data = if header.is_empty() {
                line.as_bytes().to_vec()
            } else {
                let obj: serde_json::Map<String, Value> = header
                    .iter()
                    .zip(cells.iter())
                    .map(|(h, c)| (h.clone(), json!(c)))
                    .collect();
                serde_json::to_vec(&obj)?
            };
            Ok((if key.is_empty() { random_key() } else { key }, data))
        }
        other => bail!("unknown format {other:?}: use jsonl, csv or lines"),
    }
}

fn field_text(v: &Value, field: &str) -> Option<String> {
    let x = field.split('.').try_fold(v, |v, part| v.get(part))?;
    Some(match x {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    })
}

/// Seconds since the Unix epoch.
fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The `x-amz-date` and `authorization` headers of an unsigned request made
/// at `secs` (see [`JsonApi::call_raw`]).
fn unsigned_headers(secs: i64) -> (String, String) {
    let stamp = DateTime::from_secs(secs)
        .fmt(aws_sdk_kinesis::primitives::DateTimeFormat::DateTime)
        .unwrap_or_default()
        .replace(['-', ':'], "");
    let day = stamp.get(..8).unwrap_or("19700101");
    let authorization = format!(
        "AWS4-HMAC-SHA256 Credential=shardlog/{day}/us-east-1/kinesis/aws4_request, \
         SignedHeaders=content-type;host;x-amz-date;x-amz-target, Signature=unsigned"
    );
    (stamp, authorization)
}

/// The error of a refused request, as one line, from its JSON body.
fn refused(body: &[u8]) -> anyhow::Error {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let message = v["message"].as_str().or(v["Message"].as_str());
    anyhow!(
        "{}: {}",
        v["__type"].as_str().unwrap_or("error"),
        message.unwrap_or("the server refused the request")
    )
}

type RawSender = hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>;

/// One HTTP/1.1 connection of its own to a plain-HTTP endpoint, for the
/// load generator's hot loop: the same requests as [`JsonApi::call_raw`]
/// sends without credentials, minus reqwest's connection pool and
/// per-request URL work, which cost the load generator (on the same CPUs
/// as the server it measures) a visible share of its time. A failed call
/// drops the connection; the next call opens a new one.
///
/// Its header values are made once (the host), once per operation (the
/// target) or once per second (the date and authorization), and its header
/// names are constants: a header given as text is parsed on every request.
pub struct RawConn {
    addr: (String, u16),
    /// The `Host` header.
    authority: hyper::header::HeaderValue,
    path: String,
    prefix: &'static str,
    sender: Option<RawSender>,
    /// The operation of the last call and its `x-amz-target` value.
    target: (String, hyper::header::HeaderValue),
    /// The second the date headers were made for, and the `x-amz-date`
    /// and `authorization` values.
    stamp: (i64, hyper::header::HeaderValue, hyper::header::HeaderValue),
}

impl std::fmt::Debug for RawConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawConn")
            .field("addr", &self.addr)
            .field("connected", &self.sender.is_some())
            .finish_non_exhaustive()
    }
}

impl RawConn {
    async fn connect(&mut self) -> Result<()> {
        let stream = tokio::net::TcpStream::connect((self.addr.0.as_str(), self.addr.1))
            .await
            .with_context(|| {
                format!(
                    "cannot reach a shardlog server at {}:{} (is it running? see --endpoint)",
                    self.addr.0, self.addr.1
                )
            })?;
        let _ = stream.set_nodelay(true);
        let (sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        // The connection runs until the sender is dropped or the server
        // closes it.
        tokio::spawn(connection);
        self.sender = Some(sender);
        Ok(())
    }

    /// Calls `op` with a JSON `body`, as [`JsonApi::call_raw`] does.
    pub async fn call(&mut self, op: &str, body: String) -> Result<bytes::Bytes> {
        let result = self.try_call(op, body).await;
        if result.is_err() {
            self.sender = None;
        }
        result
    }

    async fn try_call(&mut self, op: &str, body: String) -> Result<bytes::Bytes> {
        use http_body_util::BodyExt;
        if self.sender.as_ref().is_none_or(|s| s.is_closed()) {
            self.connect().await?;
        }
        use hyper::header::{HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST};
        const X_AMZ_TARGET: HeaderName = HeaderName::from_static("x-amz-target");
        const X_AMZ_DATE: HeaderName = HeaderName::from_static("x-amz-date");
        let secs = now_secs();
        if self.stamp.0 != secs {
            let (stamp, authorization) = unsigned_headers(secs);
            self.stamp = (
                secs,
                HeaderValue::from_str(&stamp)?,
                HeaderValue::from_str(&authorization)?,
            );
        }
        if self.target.0 != op {
            self.target = (
                op.to_string(),
                HeaderValue::from_str(&format!("{}{op}", self.prefix))?,
            );
        }
        let mut request = hyper::Request::post(self.path.as_str())
            .body(http_body_util::Full::new(bytes::Bytes::from(body)))?;
        let h = request.headers_mut();
        h.insert(HOST, self.authority.clone());
        h.insert(X_AMZ_TARGET, self.target.1.clone());
        h.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/x-amz-json-1.1"),
        );
        h.insert(X_AMZ_DATE, self.stamp.1.clone());
        h.insert(AUTHORIZATION, self.stamp.2.clone());
        let Some(sender) = self.sender.as_mut() else {
            bail!("not connected");
        };
        sender.ready().await?;
        let response = sender.send_request(request).await?;
        let ok = response.status().is_success();
        let bytes = response.into_body().collect().await?.to_bytes();
        if !ok {
            return Err(refused(&bytes));
        }
        Ok(bytes)
    }
}

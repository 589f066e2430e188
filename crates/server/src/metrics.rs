//! `GET /metrics`: Prometheus text exposition (format 0.0.4) of the
//! CloudWatch metrics Kinesis users know, per stream (and per shard for the
//! metrics EnableEnhancedMonitoring turned on), and of the engine's own
//! (fsync latency, group-commit size, segments and bytes per shard,
//! retention deletions, recoveries, corruption found).
//!
//! CloudWatch's names have dots (`PutRecord.Latency`); Prometheus's cannot,
//! so each is spelled `kinesis_put_record_latency_seconds` and its HELP line
//! gives the CloudWatch name.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

use shardlog_segment::stats::HistogramSnapshot;
use shardlog_stream::Engine;

/// Operations that get their own metric names (the Kinesis API and the
/// consumer-groups extension); anything else is counted as `Unknown`.
pub const KNOWN_OPERATIONS: &[&str] = &[
    "AddTagsToStream",
    "CreateStream",
    "DecreaseStreamRetentionPeriod",
    "DeleteResourcePolicy",
    "DeleteStream",
    "DeregisterStreamConsumer",
    "DescribeAccountSettings",
    "DescribeLimits",
    "DescribeStream",
    "DescribeStreamConsumer",
    "DescribeStreamSummary",
    "DisableEnhancedMonitoring",
    "EnableEnhancedMonitoring",
    "GetRecords",
    "GetResourcePolicy",
    "GetShardIterator",
    "IncreaseStreamRetentionPeriod",
    "ListShards",
    "ListStreamConsumers",
    "ListStreams",
    "ListTagsForResource",
    "ListTagsForStream",
    "MergeShards",
    "PutRecord",
    "PutRecords",
    "PutResourcePolicy",
    "RegisterStreamConsumer",
    "RemoveTagsFromStream",
    "SplitShard",
    "StartStreamEncryption",
    "StopStreamEncryption",
    "SubscribeToShard",
    "TagResource",
    "UntagResource",
    "UpdateAccountSettings",
    "UpdateMaxRecordSize",
    "UpdateShardCount",
    "UpdateStreamMode",
    "UpdateStreamWarmThroughput",
    "Heartbeat",
    "Checkpoint",
    "Release",
    "ListGroups",
    "DescribeGroup",
];

/// Upper bounds of the request latency buckets, in seconds.
pub const LATENCY_BUCKETS_SECONDS: [f64; 12] = [
    0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];
/// Distinct (operation, stream) series kept; beyond it new streams share
/// the series of stream "" so a flood of names cannot grow memory.
pub const SERIES_MAX: usize = 20_000;

#[derive(Debug, Clone, Default)]
struct Hist {
    counts: [u64; 13],
    sum: f64,
    count: u64,
}

impl Hist {
    fn observe(&mut self, v: f64) {
        let i = LATENCY_BUCKETS_SECONDS.iter().position(|b| v <= *b).unwrap_or(12);
        self.counts[i] += 1;
        self.sum += v;
        self.count += 1;
    }

    fn snapshot(&self) -> HistogramSnapshot {
        let mut acc = 0;
        HistogramSnapshot {
            buckets: LATENCY_BUCKETS_SECONDS
                .iter()
                .enumerate()
                .map(|(i, b)| {
                    acc += self.counts[i];
                    (*b, acc)
                })
                .collect(),
            sum: self.sum,
            count: self.count,
        }
    }
}

#[derive(Debug, Clone, Default)]
struct OpStats {
    success: u64,
    failure: u64,
    latency: Hist,
    bytes: u64,
    records: u64,
}

/// What one API call did, for the metrics.
#[derive(Debug, Clone, Default)]
pub struct CallFacts {
    pub operation: String,
    pub stream: String,
    pub success: bool,
    pub latency: Duration,
    pub bytes: u64,
    pub records: u64,
}

#[derive(Debug, Clone, Default)]
struct SubStats {
    events: u64,
    records: u64,
    bytes: u64,
    millis_behind: i64,
}

/// Counters the server keeps (the engine keeps the traffic ones).
#[derive(Debug, Default)]
pub struct ServerMetrics {
    ops: Mutex<BTreeMap<(String, String), OpStats>>,
    subs: Mutex<BTreeMap<String, SubStats>>,
    rejections: [std::sync::atomic::AtomicU64; Limit::ALL.len()],
}

/// A server limit (see `net::Limits`) that refused or ended something.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Limit {
    Connections,
    RequestBodyBytes,
    HeaderBytes,
    HeaderTimeout,
    BodyTimeout,
    IdleTimeout,
    TlsHandshake,
    Subscriptions,
}

// Checked at compile time: `ALL` lists the limits in discriminant order, so
// `limit as usize` indexes the counters.
const _: () = {
    let mut i = 0;
    while i < Limit::ALL.len() {
        assert!(Limit::ALL[i] as usize == i);
        i += 1;
    }
};

impl Limit {
    /// Every limit, in declaration order: a limit's discriminant is its
    /// index here and in `ServerMetrics::rejections`.
    pub const ALL: [Limit; 8] = [
        Limit::Connections,
        Limit::RequestBodyBytes,
        Limit::HeaderBytes,
        Limit::HeaderTimeout,
        Limit::BodyTimeout,
        Limit::IdleTimeout,
        Limit::TlsHandshake,
        Limit::Subscriptions,
    ];

    /// The label value, named after the setting in `[limits]`.
    pub fn name(self) -> &'static str {
        match self {
            Limit::Connections => "connections_max",
            Limit::RequestBodyBytes => "request_body_bytes_max",
            Limit::HeaderBytes => "header_bytes_max",
            Limit::HeaderTimeout => "header_read_timeout_ms",
            Limit::BodyTimeout => "body_read_timeout_ms",
            Limit::IdleTimeout => "idle_timeout_ms",
            Limit::TlsHandshake => "tls_handshake_timeout_ms",
            Limit::Subscriptions => "subscriptions_max",
        }
    }
}

impl ServerMetrics {
    /// Counts one refusal (or forced end) by `limit`.
    pub fn limit_rejected(&self, limit: Limit) {
        self.rejections[limit as usize].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Refusals so far by `limit`.
    pub fn limit_rejections(&self, limit: Limit) -> u64 {
        self.rejections[limit as usize].load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn record_call(&self, f: CallFacts) {
        // Only names of real operations become metric names: a client
        // cannot mint metric families (or break the exposition) by sending
        // arbitrary targets.
        let operation = if KNOWN_OPERATIONS.contains(&f.operation.as_str()) {
            f.operation
        } else {
            "Unknown".to_string()
        };
        let mut ops = self.ops.lock().unwrap_or_else(|p| p.into_inner());
        let mut key = (operation, f.stream);
        if !ops.contains_key(&key) && ops.len() >= SERIES_MAX {
            key.1 = String::new();
        }
        let s = ops.entry(key).or_default();
        if f.success {
            s.success += 1;
            s.bytes += f.bytes;
            s.records += f.records;
        } else {
            s.failure += 1;
        }
        s.latency.observe(f.latency.as_secs_f64());
    }

    pub fn record_event(&self, stream: &str, records: u64, bytes: u64, millis_behind: i64) {
        let mut subs = self.subs.lock().unwrap_or_else(|p| p.into_inner());
        if !subs.contains_key(stream) && subs.len() >= SERIES_MAX {
            return;
        }
        let s = subs.entry(stream.to_string()).or_default();
        s.events += 1;
        s.records += records;
        s.bytes += bytes;
        s.millis_behind = millis_behind;
    }
}

/// Escapes a label value.
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

struct Out {
    text: String,
    declared: std::collections::BTreeSet<String>,
}

impl Out {
    fn declare(&mut self, name: &str, kind: &str, help: &str) {
        if self.declared.insert(name.to_string()) {
            let _ = writeln!(self.text, "# HELP {name} {help}");
            let _ = writeln!(self.text, "# TYPE {name} {kind}");
        }
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        let l: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", esc(v)))
            .collect();
        if l.is_empty() {
            let _ = writeln!(self.text, "{name} {value}");
        } else {
            let _ = writeln!(self.text, "{name}{{{}}} {value}", l.join(","));
        }
    }

    fn histogram(&mut self, name: &str, help: &str, labels: &[(&str, &str)], h: &HistogramSnapshot) {
        self.declare(name, "histogram", help);
        for (le, n) in &h.buckets {
            let le = le.to_string();
            let mut l = labels.to_vec();
            l.push(("le", &le));
            self.sample(&format!("{name}_bucket"), &l, n);
        }
        let mut l = labels.to_vec();
        l.push(("le", "+Inf"));
        self.sample(&format!("{name}_bucket"), &l, h.count);
        self.sample(&format!("{name}_sum"), labels, h.sum);
        self.sample(&format!("{name}_count"), labels, h.count);
    }
}

/// CloudWatch operation name → Prometheus stem.
fn stem(op: &str) -> String {
    let mut out = String::new();
    for (i, c) in op.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

/// Renders every metric.
pub fn render(root: &Engine, server: &ServerMetrics) -> String {
    let mut o = Out {
        text: String::new(),
        declared: Default::default(),
    };
    let em = root.metrics();
    type Pick = fn(&shardlog_stream::TrafficMetrics) -> u64;
    let traffic: [(&str, &str, &str, Pick); 7] = [
        (
            "kinesis_incoming_bytes_total",
            "IncomingBytes",
            "IncomingBytes",
            |t| t.incoming_bytes,
        ),
        (
            "kinesis_incoming_records_total",
            "IncomingRecords",
            "IncomingRecords",
            |t| t.incoming_records,
        ),
        (
            "kinesis_outgoing_bytes_total",
            "OutgoingBytes",
            "OutgoingBytes",
            |t| t.outgoing_bytes,
        ),
        (
            "kinesis_outgoing_records_total",
            "OutgoingRecords",
            "OutgoingRecords",
            |t| t.outgoing_records,
        ),
        (
            "kinesis_write_provisioned_throughput_exceeded_total",
            "WriteProvisionedThroughputExceeded",
            "WriteProvisionedThroughputExceeded",
            |t| t.write_throttled,
        ),
        (
            "kinesis_read_provisioned_throughput_exceeded_total",
            "ReadProvisionedThroughputExceeded",
            "ReadProvisionedThroughputExceeded",
            |t| t.read_throttled,
        ),
        (
            "kinesis_get_records_calls_total",
            "GetRecords.Success",
            "GetRecords",
            |t| t.get_records_calls,
        ),
    ];
    // The shard-level metrics each stream turned on, read once per scrape.
    let enabled: Vec<Vec<String>> = em.streams.iter().map(|s| shard_level(root, s)).collect();
    for (name, cw, shard_metric, pick) in traffic {
        o.declare(
            name,
            "counter",
            &format!(
                "CloudWatch {cw}: per stream, and per shard when enhanced monitoring enables {shard_metric}."
            ),
        );
        for (s, enabled) in em.streams.iter().zip(&enabled) {
            let labels = [
                ("account", s.account_id.as_str()),
                ("region", s.region.as_str()),
                ("stream", s.name.as_str()),
            ];
            o.sample(name, &labels, pick(&s.traffic));
            if enabled.iter().any(|m| m == shard_metric || m == "ALL") {
                for sh in &s.shards {
                    let mut l = labels.to_vec();
                    l.push(("shard", sh.shard_id.as_str()));
                    o.sample(name, &l, pick(&sh.traffic));
                }
            }
        }
    }
    let name = "kinesis_get_records_iterator_age_milliseconds";
    o.declare(name, "gauge", "CloudWatch GetRecords.IteratorAgeMilliseconds (IteratorAgeMilliseconds per shard): how far behind the tip the last read was.");
    for (s, enabled) in em.streams.iter().zip(&enabled) {
        let labels = [
            ("account", s.account_id.as_str()),
            ("region", s.region.as_str()),
            ("stream", s.name.as_str()),
        ];
        o.sample(name, &labels, s.traffic.iterator_age_ms);
        if enabled
            .iter()
            .any(|m| m == "IteratorAgeMilliseconds" || m == "ALL")
        {
            for sh in &s.shards {
                let mut l = labels.to_vec();
                l.push(("shard", sh.shard_id.as_str()));
                o.sample(name, &l, sh.traffic.iterator_age_ms);
            }
        }
    }
    // Per operation: PutRecord.*, PutRecords.*, GetRecords.* and the rest.
    let ops = server.ops.lock().unwrap_or_else(|p| p.into_inner()).clone();
    // Each metric's samples stay together, as the text format requires.
    let mut by_op: BTreeMap<&str, Vec<(&str, &OpStats)>> = BTreeMap::new();
    for ((op, stream), st) in &ops {
        by_op.entry(op.as_str()).or_default().push((stream.as_str(), st));
    }
    for (op, rows) in by_op {
        let base = format!("kinesis_{}", stem(op));
        type OpPick = fn(&OpStats) -> u64;
        let mut counters: Vec<(&str, String, OpPick)> = vec![
            (
                "success_total",
                format!("CloudWatch {op}.Success: calls that succeeded."),
                |s| s.success,
            ),
            ("failure_total", format!("Calls of {op} that failed."), |s| {
                s.failure
            }),
        ];
        if matches!(op, "PutRecord" | "PutRecords" | "GetRecords") {
            counters.push(("bytes_total", format!("CloudWatch {op}.Bytes."), |s| s.bytes));
            if op != "PutRecord" {
                counters.push((
                    "records_total",
                    format!("CloudWatch {op}.Records (successful records)."),
                    |s| s.records,
                ));
            }
        }
        for (suffix, help, pick) in counters {
            let n = format!("{base}_{suffix}");
            o.declare(&n, "counter", &help);
            for (stream, st) in &rows {
                o.sample(&n, &[("stream", stream)], pick(st));
            }
        }
        let n = format!("{base}_latency_seconds");
        for (stream, st) in &rows {
            o.histogram(
                &n,
                &format!("CloudWatch {op}.Latency."),
                &[("stream", stream)],
                &st.latency.snapshot(),
            );
        }
    }
    let subs = server.subs.lock().unwrap_or_else(|p| p.into_inner()).clone();
    type SubPick = fn(&SubStats) -> i64;
    let sub_metrics: [(&str, &str, &str, SubPick); 4] = [
        (
            "kinesis_subscribe_to_shard_event_total",
            "counter",
            "SubscribeToShardEvent.Success: events pushed.",
            |s| s.events as i64,
        ),
        (
            "kinesis_subscribe_to_shard_event_records_total",
            "counter",
            "SubscribeToShardEvent.Records.",
            |s| s.records as i64,
        ),
        (
            "kinesis_subscribe_to_shard_event_bytes_total",
            "counter",
            "SubscribeToShardEvent.Bytes.",
            |s| s.bytes as i64,
        ),
        (
            "kinesis_subscribe_to_shard_event_millis_behind_latest",
            "gauge",
            "SubscribeToShardEvent.MillisBehindLatest of the last event.",
            |s| s.millis_behind,
        ),
    ];
    if !subs.is_empty() {
        for (n, kind, help, pick) in sub_metrics {
            o.declare(n, kind, &format!("CloudWatch {help}"));
            for (stream, s) in &subs {
                o.sample(n, &[("stream", stream.as_str())], pick(s));
            }
        }
    }
    // The engine's own.
    let storage = shardlog_segment::stats::snapshot();
    o.histogram(
        "shardlog_fsync_seconds",
        "Latency of each fdatasync of a segment or shared syncfs.",
        &[],
        &storage.fsync_seconds,
    );
    o.histogram(
        "shardlog_group_commit_records",
        "Records made durable by one group-committed sync.",
        &[],
        &storage.group_commit_records,
    );
    o.declare(
        "shardlog_zero_fill_bytes_total",
        "counter",
        "Zeros written ahead of records into preallocated segment space, so that most small syncs convert no extents.",
    );
    o.sample("shardlog_zero_fill_bytes_total", &[], storage.zero_fill_bytes);
    o.declare(
        "shardlog_page_cache_drop_advised_bytes_total",
        "counter",
        "Bytes of segment files behind the cache window (page_cache_window_bytes; 0 while it is off) that the server advised the kernel to drop from the page cache (posix_fadvise DONTNEED; the kernel keeps mapped, dirty and in-flight pages).",
    );
    o.sample(
        "shardlog_page_cache_drop_advised_bytes_total",
        &[],
        storage.cache_drop_advised_bytes,
    );
    o.declare(
        "shardlog_segments_recycled_total",
        "counter",
        "Segments started in a file that retention kept for reuse (recycle_segments_per_shard; 0 while it is off) instead of a new file.",
    );
    o.sample("shardlog_segments_recycled_total", &[], storage.segments_reused);
    o.histogram(
        "shardlog_shared_flush_seconds",
        "Latency of each device cache flush (an fdatasync) shared by the group syncs of many shards.",
        &[],
        &storage.shared_flush_seconds,
    );
    o.declare(
        "shardlog_shared_flush_groups_total",
        "counter",
        "Group syncs made durable by a write-back (sync_file_range) and a shared flush instead of their own fdatasync.",
    );
    o.sample(
        "shardlog_shared_flush_groups_total",
        &[],
        storage.shared_flush_groups,
    );
    o.histogram(
        "shardlog_journal_sync_seconds",
        "Latency of each journal sync (write and fdatasync of the journal file), shared by the small appends of every shard (serve --journal true).",
        &[],
        &storage.journal_sync_seconds,
    );
    o.declare(
        "shardlog_journal_appends_total",
        "counter",
        "Appends made durable by a journal sync instead of a sync of their shard's segment.",
    );
    o.sample("shardlog_journal_appends_total", &[], storage.journal_writes);
    o.declare(
        "shardlog_journal_active",
        "gauge",
        "1 while small appends go through the journal; 0 when it is off, the sync policy is not `always` (the only one it serves), it could not be made at start or it stopped after a failure (each shard then syncs its own segment: as durable, slower).",
    );
    o.sample("shardlog_journal_active", &[], u64::from(root.journal_active()));
    for (n, kind, help) in [
        ("shardlog_shard_segments", "gauge", "Segment files of a shard."),
        (
            "shardlog_shard_bytes",
            "gauge",
            "Bytes a shard's segment files occupy.",
        ),
        (
            "shardlog_shard_recyclable_bytes",
            "gauge",
            "Bytes of segment files a shard keeps for reuse (recycle_segments_per_shard); on disk, but holding no data.",
        ),
    ] {
        o.declare(n, kind, help);
        for s in &em.streams {
            for sh in &s.shards {
                let v = if n.ends_with("segments") {
                    sh.segments as u64
                } else if n.ends_with("recyclable_bytes") {
                    sh.recyclable_bytes
                } else {
                    sh.bytes_on_disk
                };
                o.sample(
                    n,
                    &[
                        ("account", &s.account_id),
                        ("region", &s.region),
                        ("stream", &s.name),
                        ("shard", &sh.shard_id),
                    ],
                    v,
                );
            }
        }
    }
    for (n, help, v) in [
        (
            "shardlog_retention_deleted_segments_total",
            "Segments deleted by retention.",
            em.retention_deleted_segments,
        ),
        (
            "shardlog_recoveries_total",
            "Shard logs whose open cut an unacknowledged torn tail.",
            em.recoveries,
        ),
        (
            "shardlog_corruption_found_total",
            "Damage found: shard logs quarantined and streams set aside.",
            em.corruptions,
        ),
    ] {
        o.declare(n, "counter", help);
        o.sample(n, &[], v);
    }
    let ic = em.index_cache;
    for (n, kind, help, v) in [
        (
            "shardlog_index_cache_bytes",
            "gauge",
            "Bytes of sealed-segment indexes held in memory.",
            ic.bytes as u64,
        ),
        (
            "shardlog_index_cache_budget_bytes",
            "gauge",
            "Most bytes of sealed-segment indexes held in memory (index_cache_bytes).",
            em.index_cache_budget_bytes as u64,
        ),
        (
            "shardlog_index_cache_indexes",
            "gauge",
            "Sealed-segment indexes held in memory.",
            ic.indexes as u64,
        ),
        (
            "shardlog_index_cache_hits_total",
            "counter",
            "Index lookups answered from memory.",
            ic.hits,
        ),
        (
            "shardlog_index_cache_misses_total",
            "counter",
            "Index lookups that loaded a sidecar file (or rebuilt it from its segment).",
            ic.misses,
        ),
        (
            "shardlog_index_cache_evictions_total",
            "counter",
            "Indexes dropped from memory to stay within the budget.",
            ic.evictions,
        ),
        (
            "shardlog_open_check_pending_bytes",
            "gauge",
            "Bytes of active segments recovered at open whose checksums the background pass has still to verify.",
            em.open_check_pending_bytes,
        ),
    ] {
        o.declare(n, kind, help);
        o.sample(n, &[], v);
    }
    let problems = root.problems();
    o.declare(
        "shardlog_problems",
        "gauge",
        "Problems /_health lists (quarantines, fenced shards).",
    );
    o.sample("shardlog_problems", &[], problems.len());
    o.declare(
        "shardlog_limit_rejections_total",
        "counter",
        "Connections and requests refused or ended by a server limit, by the limit's setting.",
    );
    for limit in Limit::ALL {
        o.sample(
            "shardlog_limit_rejections_total",
            &[("limit", limit.name())],
            server.limit_rejections(limit),
        );
    }
    o.text
}

/// The shard-level metrics EnableEnhancedMonitoring turned on for a stream.
fn shard_level(root: &Engine, s: &shardlog_stream::StreamMetrics) -> Vec<String> {
    root.for_scope(&s.account_id, &s.region)
        .ok()
        .and_then(|e| e.stream_setting(&s.name, "ShardLevelMetrics").ok().flatten())
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default()
}

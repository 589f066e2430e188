//! The hot pieces, one by one, so a regression shows in review: segment
//! framing (encode and CRC-checked decode), CRC32 alone, partition-key
//! routing (MD5), and the API's JSON and CBOR codecs, including the
//! PutRecords fast path against the general value-tree decode.
//!
//! `cargo bench -p shardlog-benches --bench hot`

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use shardlog_segment::frame;
use shardlog_segment::RecordIn;
use shardlog_server::protocol::{self, Format};

fn bench_framing(c: &mut Criterion) {
    let mut g = c.benchmark_group("frame");
    let data = vec![0x5au8; 1024];
    let record = RecordIn::new("partition-key-1", &data, 1_764_000_000_000);
    g.throughput(Throughput::Elements(1));
    let mut out = Vec::with_capacity(4096);
    g.bench_function("encode_1KiB", |b| {
        b.iter(|| {
            out.clear();
            frame::encode(&mut out, 7, 42, 0, &record);
            out.len()
        })
    });
    out.clear();
    frame::encode(&mut out, 7, 42, 0, &record);
    g.bench_function("decode_crc_checked_1KiB", |b| {
        b.iter(|| matches!(frame::decode(&out, 0, 7), frame::Decoded::Record(_)))
    });
    g.finish();
    let mut g = c.benchmark_group("crc32");
    for size in [1024usize, 1 << 20] {
        let buf = vec![0xa5u8; size];
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_with_input(BenchmarkId::from_parameter(size), &buf, |b, buf| {
            b.iter(|| crc32fast::hash(buf))
        });
    }
    g.finish();
}

fn bench_routing(c: &mut Criterion) {
    let keys: Vec<String> = (0..1024).map(|i| format!("user-{i:08}")).collect();
    let mut g = c.benchmark_group("routing");
    g.throughput(Throughput::Elements(keys.len() as u64));
    g.bench_function("md5_hash_key_1024_keys", |b| {
        b.iter(|| {
            keys.iter()
                .map(|k| shardlog_stream::hashkey::hash_key_of(k))
                .fold(0u128, |a, h| a ^ h)
        })
    });
    g.finish();
}

fn put_records_body(records: usize) -> Vec<u8> {
    use base64::Engine as _;
    let data = base64::engine::general_purpose::STANDARD.encode(vec![0x42u8; 1024]);
    let recs: Vec<serde_json::Value> = (0..records)
        .map(|i| serde_json::json!({"PartitionKey": format!("k{i}"), "Data": data}))
        .collect();
    serde_json::to_vec(&serde_json::json!({"StreamName": "s", "Records": recs})).unwrap()
}

fn bench_codec(c: &mut Criterion) {
    let body = put_records_body(100);
    let mut g = c.benchmark_group("codec_put_records_100x1KiB");
    g.throughput(Throughput::Elements(100));
    g.bench_function("json_value_tree_decode", |b| {
        b.iter(|| protocol::decode(Format::Json, &body).unwrap())
    });
    let value = protocol::decode(Format::Json, &body).unwrap();
    g.bench_function("json_encode", |b| {
        b.iter(|| protocol::encode(Format::Json, &value))
    });
    let cbor = protocol::encode(Format::Cbor, &value);
    g.bench_function("cbor_decode", |b| {
        b.iter(|| protocol::decode(Format::Cbor, &cbor).unwrap())
    });
    g.bench_function("cbor_encode", |b| {
        b.iter(|| protocol::encode(Format::Cbor, &value))
    });
    // The fast path end to end without the disk: parse, validate, decode
    // base64, and refuse at the engine lookup (no such scope here).
    g.bench_function("json_fast_path_parse_and_validate", |b| {
        b.iter(|| {
            shardlog_server::ops::put_records_fast(
                |_| Err(shardlog_server::error::ApiError::not_found("bench")),
                &body,
            )
            .is_some()
        })
    });
    g.finish();
}

criterion_group!(benches, bench_framing, bench_routing, bench_codec);
criterion_main!(benches);

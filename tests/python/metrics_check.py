"""Sends known traffic with boto3, then parses GET /metrics with the
Prometheus client library's text-format parser and checks the counters.
Usage: python metrics_check.py ENDPOINT
"""
import sys
import urllib.error
import urllib.request

import boto3
from prometheus_client.parser import text_string_to_metric_families

endpoint = sys.argv[1]
k = boto3.client("kinesis", endpoint_url=endpoint, region_name="us-east-1",
                 aws_access_key_id="test", aws_secret_access_key="test")
k.create_stream(StreamName="m", ShardCount=2)
k.enable_enhanced_monitoring(StreamName="m", ShardLevelMetrics=["IncomingRecords"])
for i in range(10):
    k.put_record(StreamName="m", PartitionKey=f"k{i}", Data=b"x" * 100)
k.put_records(StreamName="m", Records=[{"PartitionKey": f"b{i}", "Data": b"y" * 50} for i in range(20)])
read = 0
for s in k.list_shards(StreamName="m")["Shards"]:
    it = k.get_shard_iterator(StreamName="m", ShardId=s["ShardId"], ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    read += len(k.get_records(ShardIterator=it)["Records"])
assert read == 30

# An arbitrary target must not become a metric name (or break the text).
bad = urllib.request.Request(endpoint, data=b"{}", method="POST", headers={
    "X-Amz-Target": 'Kinesis_20131202.Foo Bar{"x"}', "Content-Type": "application/x-amz-json-1.1"})
try:
    urllib.request.urlopen(bad)
except urllib.error.HTTPError:
    pass

# Failed puts are counted under the stream they named, on the fast paths
# (plain PutRecord and PutRecords) as on the general one.
for call in (lambda: k.put_record(StreamName="nope", PartitionKey="k", Data=b"x"),
             lambda: k.put_records(StreamName="nope", Records=[{"PartitionKey": "k", "Data": b"x"}])):
    try:
        call()
        raise AssertionError("a put to a missing stream succeeded")
    except k.exceptions.ResourceNotFoundException:
        pass

text = urllib.request.urlopen(endpoint + "/metrics").read().decode()
assert "Foo" not in text, "an unknown operation became a metric name"
samples = {}
for family in text_string_to_metric_families(text):  # raises on malformed text
    for s in family.samples:
        samples[(s.name, tuple(sorted(s.labels.items())))] = s.value


def value(name, **labels):
    return samples[(name, tuple(sorted(labels.items())))]


stream = {"account": "000000000000", "region": "us-east-1", "stream": "m"}
assert value("kinesis_incoming_records_total", **stream) == 30
put_bytes = sum(len(f"k{i}") + 100 for i in range(10)) + sum(len(f"b{i}") + 50 for i in range(20))
assert value("kinesis_incoming_bytes_total", **stream) == put_bytes  # data plus partition keys
assert value("kinesis_outgoing_records_total", **stream) == 30
per_shard = sum(v for (n, l), v in samples.items() if n == "kinesis_incoming_records_total" and dict(l).get("shard"))
assert per_shard == 30, per_shard  # enhanced monitoring turned per-shard IncomingRecords on
assert not any(n == "kinesis_incoming_bytes_total" and dict(l).get("shard") for (n, l) in samples), "not enabled per shard"
assert value("kinesis_put_record_success_total", stream="m") == 10
assert value("kinesis_put_record_bytes_total", stream="m") == 1000
assert value("kinesis_put_records_records_total", stream="m") == 20
assert value("kinesis_put_records_bytes_total", stream="m") == 1000
assert value("kinesis_get_records_records_total", stream="m") == 30
assert value("kinesis_put_record_latency_seconds_count", stream="m") == 10
assert value("kinesis_put_record_failure_total", stream="nope") == 1
assert value("kinesis_put_records_failure_total", stream="nope") == 1
assert value("shardlog_fsync_seconds_count") >= 1
assert value("shardlog_group_commit_records_count") >= 1
assert value("shardlog_corruption_found_total") == 0
assert value("shardlog_page_cache_drop_advised_bytes_total") == 0  # the window is off by default
assert value("shardlog_segments_recycled_total") == 0  # recycling is off by default
shards = [l for (n, l) in samples if n == "shardlog_shard_segments" and dict(l).get("stream") == "m"]
assert len(shards) == 2, shards
print("metrics check passed")

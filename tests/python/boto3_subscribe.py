"""SubscribeToShard with boto3 against a shardlog server, across a split.
Usage: python boto3_subscribe.py ENDPOINT

A writer puts records while a subscriber reads the parent shard from
TRIM_HORIZON; halfway the shard is split. The parent's event stream must
carry every record written to it, in order, and end with its ChildShards;
subscriptions to the children then carry every record written to them.
"""
import sys
import threading
import time

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

endpoint = sys.argv[1]
k = boto3.client("kinesis", endpoint_url=endpoint, region_name="us-east-1",
                 aws_access_key_id="test", aws_secret_access_key="test",
                 config=Config(retries={"max_attempts": 1}, read_timeout=30))

k.create_stream(StreamName="efo", ShardCount=1)
arn = k.describe_stream_summary(StreamName="efo")["StreamDescriptionSummary"]["StreamARN"]
consumer = k.register_stream_consumer(StreamARN=arn, ConsumerName="app")["Consumer"]
for _ in range(50):
    if k.describe_stream_consumer(ConsumerARN=consumer["ConsumerARN"])["ConsumerDescription"]["ConsumerStatus"] == "ACTIVE":
        break
    time.sleep(0.1)

written = {}  # shard id -> [data, ...] in acknowledgement order
split_done = threading.Event()


def writer():
    for i in range(300):
        if i == 150:
            k.split_shard(StreamName="efo", ShardToSplit="shardId-000000000000",
                          NewStartingHashKey=str(2**127))
            split_done.set()
        data = f"rec-{i:04d}".encode()
        r = k.put_record(StreamName="efo", PartitionKey=f"key-{i % 11}", Data=data)
        written.setdefault(r["ShardId"], []).append(data)
        if i % 50 == 0:
            time.sleep(0.05)


t = threading.Thread(target=writer)
t.start()


def read_shard(shard_id, expect_end):
    r = k.subscribe_to_shard(ConsumerARN=consumer["ConsumerARN"], ShardId=shard_id,
                             StartingPosition={"Type": "TRIM_HORIZON"})
    got, children, behind = [], None, []
    deadline = time.time() + 60
    for ev in r["EventStream"]:
        e = ev["SubscribeToShardEvent"]
        got += [x["Data"] for x in e["Records"]]
        behind.append(e["MillisBehindLatest"])
        if e.get("ChildShards"):
            children = e["ChildShards"]
            break
        if not expect_end and not t.is_alive() and len(got) >= len(written.get(shard_id, [])):
            break
        assert time.time() < deadline, f"{shard_id}: only {len(got)} records after 60 s"
    return got, children, behind


parent, children, _ = read_shard("shardId-000000000000", expect_end=True)
t.join()
assert parent == written["shardId-000000000000"], (len(parent), len(written["shardId-000000000000"]))
assert sorted(c["ShardId"] for c in children) == ["shardId-000000000001", "shardId-000000000002"], children
assert all(c["ParentShards"] == ["shardId-000000000000"] for c in children), children

# A second subscription to the same shard within 5 seconds is refused.
try:
    k.subscribe_to_shard(ConsumerARN=consumer["ConsumerARN"], ShardId="shardId-000000000000",
                         StartingPosition={"Type": "TRIM_HORIZON"})
    raise AssertionError("a resubscription within 5 s was accepted")
except ClientError as e:
    assert e.response["Error"]["Code"] == "ResourceInUseException", e

total = len(parent)
for c in children:
    got, _, _ = read_shard(c["ShardId"], expect_end=False)
    assert got == written.get(c["ShardId"], []), (c["ShardId"], len(got))
    total += len(got)
assert total == 300, total
# An idle shard: the first event carries no records and a
# ContinuationSequenceNumber from before the first record. KCL checkpoints
# it and resubscribes with AFTER_SEQUENCE_NUMBER (every five minutes); that
# must be accepted while the shard is empty, and must start at the first
# record written later, not past it.
k.create_stream(StreamName="idle", ShardCount=1)
idle_arn = k.describe_stream_summary(StreamName="idle")["StreamDescriptionSummary"]["StreamARN"]
idle_consumers = []
for name in ("first", "resumed"):
    c = k.register_stream_consumer(StreamARN=idle_arn, ConsumerName=name)["Consumer"]
    for _ in range(50):
        if k.describe_stream_consumer(ConsumerARN=c["ConsumerARN"])["ConsumerDescription"]["ConsumerStatus"] == "ACTIVE":
            break
        time.sleep(0.1)
    idle_consumers.append(c["ConsumerARN"])
r = k.subscribe_to_shard(ConsumerARN=idle_consumers[0], ShardId="shardId-000000000000",
                         StartingPosition={"Type": "TRIM_HORIZON"})
first_event = next(iter(r["EventStream"]))["SubscribeToShardEvent"]
r["EventStream"].close()
assert first_event["Records"] == [], first_event
continuation = first_event["ContinuationSequenceNumber"]
it = k.get_shard_iterator(StreamName="idle", ShardId="shardId-000000000000",
                          ShardIteratorType="AFTER_SEQUENCE_NUMBER",
                          StartingSequenceNumber=continuation)["ShardIterator"]
put = k.put_record(StreamName="idle", PartitionKey="k", Data=b"the first record")
got = k.get_records(ShardIterator=it)["Records"]
assert [x["Data"] for x in got] == [b"the first record"], got
# As at AWS, the shard's StartingSequenceNumber sorts before its first
# record, and AFTER_SEQUENCE_NUMBER with it starts at that record; the
# continuation from before the first record is that number.
start = k.describe_stream(StreamName="idle")["StreamDescription"]["Shards"][0]["SequenceNumberRange"]["StartingSequenceNumber"]
assert int(start) < int(put["SequenceNumber"]), (start, put["SequenceNumber"])
assert continuation == start, (continuation, start)
it = k.get_shard_iterator(StreamName="idle", ShardId="shardId-000000000000",
                          ShardIteratorType="AFTER_SEQUENCE_NUMBER",
                          StartingSequenceNumber=start)["ShardIterator"]
got = k.get_records(ShardIterator=it)["Records"]
assert [x["SequenceNumber"] for x in got] == [put["SequenceNumber"]], got
# The resubscription (by another consumer: one consumer may subscribe to a
# shard once every 5 s) starts at that record too.
r = k.subscribe_to_shard(ConsumerARN=idle_consumers[1], ShardId="shardId-000000000000",
                         StartingPosition={"Type": "AFTER_SEQUENCE_NUMBER", "SequenceNumber": continuation})
resumed = []
for ev in r["EventStream"]:
    resumed += ev["SubscribeToShardEvent"]["Records"]
    if resumed:
        break
r["EventStream"].close()
assert [x["SequenceNumber"] for x in resumed] == [put["SequenceNumber"]], resumed
print("boto3 subscribe passed:", total, "records; an idle shard's continuation resumes at its first record")

"""A user's journey through the Kinesis API with boto3 against a shardlog
server. Usage: python boto3_journey.py ENDPOINT [DATA_PHASE]

Phase "write" (default "all") creates streams and writes; phase "read" checks,
after a server restart, that everything written is still there.
"""
import datetime
import json
import sys
import time

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

endpoint = sys.argv[1]
phase = sys.argv[2] if len(sys.argv) > 2 else "all"
k = boto3.client(
    "kinesis",
    endpoint_url=endpoint,
    region_name="us-east-1",
    aws_access_key_id="test",
    aws_secret_access_key="test",
    config=Config(retries={"max_attempts": 1}),
)


def expect_error(code, fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except ClientError as e:
        got = e.response["Error"]["Code"]
        assert got == code, f"expected {code}, got {got}: {e}"
        return e.response["Error"]["Message"]
    raise AssertionError(f"expected {code}, call succeeded")


def read_shard(stream, shard_id, **kw):
    it = k.get_shard_iterator(StreamName=stream, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON", **kw)["ShardIterator"]
    out = []
    while True:
        r = k.get_records(ShardIterator=it, Limit=1000)
        out.extend(r["Records"])
        nxt = r.get("NextShardIterator")
        if nxt is None or not r["Records"]:
            return out, r
        it = nxt


def write_phase():
    k.create_stream(StreamName="journey", ShardCount=2)
    k.get_waiter("stream_exists").wait(StreamName="journey", WaiterConfig={"Delay": 1, "MaxAttempts": 5})
    d = k.describe_stream(StreamName="journey")["StreamDescription"]
    assert d["StreamStatus"] == "ACTIVE"
    assert len(d["Shards"]) == 2
    assert d["Shards"][1]["HashKeyRange"]["StartingHashKey"] == str(2**127)
    assert isinstance(d["StreamCreationTimestamp"], datetime.datetime)

    # Single and batch puts.
    seqs = {}
    for i in range(50):
        r = k.put_record(StreamName="journey", PartitionKey=f"key-{i % 7}", Data=f"single-{i}".encode())
        seqs.setdefault(r["ShardId"], []).append(r["SequenceNumber"])
    batch = [{"PartitionKey": f"key-{i % 7}", "Data": f"batch-{i}".encode()} for i in range(300)]
    r = k.put_records(StreamName="journey", Records=batch)
    assert r["FailedRecordCount"] == 0
    assert len(r["Records"]) == 300
    for rec in r["Records"]:
        seqs.setdefault(rec["ShardId"], []).append(rec["SequenceNumber"])
    for shard, s in seqs.items():
        assert s == sorted(s), "sequence numbers increase per shard"

    # Each iterator type.
    shard0 = d["Shards"][0]["ShardId"]
    records, _ = read_shard("journey", shard0)
    assert [r["SequenceNumber"] for r in records] == seqs[shard0]
    first = records[0]
    assert isinstance(first["ApproximateArrivalTimestamp"], datetime.datetime)
    at = k.get_shard_iterator(StreamName="journey", ShardId=shard0, ShardIteratorType="AT_SEQUENCE_NUMBER",
                              StartingSequenceNumber=records[3]["SequenceNumber"])["ShardIterator"]
    assert k.get_records(ShardIterator=at, Limit=1)["Records"][0]["SequenceNumber"] == records[3]["SequenceNumber"]
    after = k.get_shard_iterator(StreamName="journey", ShardId=shard0, ShardIteratorType="AFTER_SEQUENCE_NUMBER",
                                 StartingSequenceNumber=records[3]["SequenceNumber"])["ShardIterator"]
    assert k.get_records(ShardIterator=after, Limit=1)["Records"][0]["SequenceNumber"] == records[4]["SequenceNumber"]
    latest = k.get_shard_iterator(StreamName="journey", ShardId=shard0, ShardIteratorType="LATEST")["ShardIterator"]
    r = k.get_records(ShardIterator=latest)
    assert r["Records"] == [] and r["MillisBehindLatest"] == 0 and r["NextShardIterator"] != latest
    ts = k.get_shard_iterator(StreamName="journey", ShardId=shard0, ShardIteratorType="AT_TIMESTAMP",
                              Timestamp=first["ApproximateArrivalTimestamp"])["ShardIterator"]
    assert k.get_records(ShardIterator=ts, Limit=1)["Records"][0]["SequenceNumber"] == first["SequenceNumber"]
    # Quoted iterators are accepted, as on AWS.
    assert k.get_records(ShardIterator='"' + at + '"', Limit=1)["Records"]

    # Resharding: split, then merge, then scale.
    k.split_shard(StreamName="journey", ShardToSplit=shard0, NewStartingHashKey=str(2**126))
    for i in range(20):
        k.put_record(StreamName="journey", PartitionKey=f"key-{i % 7}", Data=f"after-split-{i}".encode())
    shards = k.list_shards(StreamName="journey")["Shards"]
    assert len(shards) == 4
    closed, r = read_shard("journey", shard0)
    assert "NextShardIterator" not in r and [c["ShardId"] for c in r["ChildShards"]] == ["shardId-000000000002", "shardId-000000000003"]
    k.merge_shards(StreamName="journey", ShardToMerge="shardId-000000000002", AdjacentShardToMerge="shardId-000000000003")
    r = k.update_shard_count(StreamName="journey", TargetShardCount=4, ScalingType="UNIFORM_SCALING")
    assert r["TargetShardCount"] == 4 and r["CurrentShardCount"] == 2
    open_shards = k.list_shards(StreamName="journey", ShardFilter={"Type": "AT_LATEST"})["Shards"]
    assert len(open_shards) == 4
    # Pages as AWS takes them: the first by StreamName, the rest by
    # NextToken alone.
    pages = [k.list_shards(StreamName="journey", MaxResults=2)]
    while "NextToken" in pages[-1]:
        pages.append(k.list_shards(NextToken=pages[-1]["NextToken"], MaxResults=2))
    assert sum(len(p["Shards"]) for p in pages) == len(k.list_shards(StreamName="journey")["Shards"])
    assert len(pages) > 1
    # botocore's paginator resends StreamName beside NextToken, which AWS
    # refuses (botocore#2009); Shardlog refuses it too.
    try:
        list(k.get_paginator("list_shards").paginate(StreamName="journey", PaginationConfig={"PageSize": 2}))
        raise AssertionError("ListShards took StreamName beside NextToken")
    except k.exceptions.InvalidArgumentException as e:
        assert "NextToken and StreamName cannot be provided together." in str(e), e

    # Tags, consumers, retention.
    k.add_tags_to_stream(StreamName="journey", Tags={"team": "data", "env": "test"})
    k.remove_tags_from_stream(StreamName="journey", TagKeys=["env"])
    assert k.list_tags_for_stream(StreamName="journey")["Tags"] == [{"Key": "team", "Value": "data"}]
    arn = k.describe_stream_summary(StreamName="journey")["StreamDescriptionSummary"]["StreamARN"]
    c = k.register_stream_consumer(StreamARN=arn, ConsumerName="reader")["Consumer"]
    assert c["ConsumerStatus"] == "ACTIVE"
    assert k.describe_stream_consumer(ConsumerARN=c["ConsumerARN"])["ConsumerDescription"]["ConsumerName"] == "reader"
    assert [x["ConsumerName"] for x in k.list_stream_consumers(StreamARN=arn)["Consumers"]] == ["reader"]
    k.increase_stream_retention_period(StreamName="journey", RetentionPeriodHours=48)
    expect_error("InvalidArgumentException", k.decrease_stream_retention_period, StreamName="journey", RetentionPeriodHours=72)

    # Newer operations: monitoring, mode, record size, ARN tagging, policies,
    # account settings, warm throughput.
    r = k.enable_enhanced_monitoring(StreamName="journey", ShardLevelMetrics=["IncomingBytes", "IteratorAgeMilliseconds"])
    assert r["DesiredShardLevelMetrics"] == ["IncomingBytes", "IteratorAgeMilliseconds"]
    r = k.disable_enhanced_monitoring(StreamName="journey", ShardLevelMetrics=["IteratorAgeMilliseconds"])
    assert r["DesiredShardLevelMetrics"] == ["IncomingBytes"]
    k.update_max_record_size(StreamARN=arn, MaxRecordSizeInKiB=2048)
    big = k.put_record(StreamName="journey", PartitionKey="big", Data=b"x" * (1536 * 1024))
    k.tag_resource(ResourceARN=arn, Tags={"owner": "me"})
    assert {"Key": "owner", "Value": "me"} in k.list_tags_for_resource(ResourceARN=arn)["Tags"]
    k.untag_resource(ResourceARN=arn, TagKeys=["owner"])
    k.tag_resource(ResourceARN=c["ConsumerARN"], Tags={"kind": "efo"})
    assert k.list_tags_for_resource(ResourceARN=c["ConsumerARN"])["Tags"] == [{"Key": "kind", "Value": "efo"}]
    policy = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::000000000000:root"}, "Action": "kinesis:GetRecords", "Resource": arn}]})
    k.put_resource_policy(ResourceARN=arn, Policy=policy)
    assert json.loads(k.get_resource_policy(ResourceARN=arn)["Policy"]) == json.loads(policy)
    k.update_account_settings(MinimumThroughputBillingCommitment={"Status": "ENABLED"})
    assert k.describe_account_settings()["MinimumThroughputBillingCommitment"]["Status"] == "ENABLED"
    k.create_stream(StreamName="ondemand", StreamModeDetails={"StreamMode": "ON_DEMAND"})
    assert len(k.list_shards(StreamName="ondemand")["Shards"]) == 4
    r = k.update_stream_warm_throughput(StreamName="ondemand", WarmThroughputMiBps=100)
    assert r["WarmThroughput"]["TargetMiBps"] == 100
    k.update_stream_mode(StreamARN=arn.replace("journey", "ondemand"), StreamModeDetails={"StreamMode": "PROVISIONED"})
    assert k.describe_stream_summary(StreamName="ondemand")["StreamDescriptionSummary"]["StreamModeDetails"]["StreamMode"] == "PROVISIONED"
    k.delete_stream(StreamName="ondemand")

    # Errors clients depend on.
    expect_error("ResourceNotFoundException", k.describe_stream, StreamName="missing")
    expect_error("ResourceInUseException", k.create_stream, StreamName="journey", ShardCount=1)
    msg = expect_error("InvalidArgumentException", k.get_records, ShardIterator="bogus")
    assert "Invalid ShardIterator" in msg

    # A stream to delete, and the streams listing and paginator.
    k.create_stream(StreamName="doomed", ShardCount=1)
    names = [n for p in k.get_paginator("list_streams").paginate(PaginationConfig={"PageSize": 1}) for n in p["StreamNames"]]
    assert names == ["doomed", "journey"], names
    k.delete_stream(StreamName="doomed")
    k.get_waiter("stream_not_exists").wait(StreamName="doomed", WaiterConfig={"Delay": 1, "MaxAttempts": 5})

    # Encryption at rest with the managed key; a record sealed before
    # StopStreamEncryption stays readable after the restart.
    k.create_stream(StreamName="sealed", ShardCount=1)
    expect_error("KMSNotFoundException", k.start_stream_encryption, StreamName="sealed", EncryptionType="KMS", KeyId="alias/nope")
    k.start_stream_encryption(StreamName="sealed", EncryptionType="KMS", KeyId="alias/aws/kinesis")
    summary = k.describe_stream_summary(StreamName="sealed")["StreamDescriptionSummary"]
    assert (summary["EncryptionType"], summary["KeyId"]) == ("KMS", "alias/aws/kinesis"), summary
    assert k.put_record(StreamName="sealed", PartitionKey="p", Data=b"secret")["EncryptionType"] == "KMS"
    k.stop_stream_encryption(StreamName="sealed", EncryptionType="KMS", KeyId="alias/aws/kinesis")
    assert k.put_record(StreamName="sealed", PartitionKey="p", Data=b"clear")["EncryptionType"] == "NONE"

    # Another account (a 12-digit access key id) sees none of this.
    other = boto3.client("kinesis", endpoint_url=endpoint, region_name="us-east-1",
                         aws_access_key_id="111122223333", aws_secret_access_key="x")
    assert other.list_streams()["StreamNames"] == []
    try:
        other.describe_stream_summary(StreamARN=arn)
        raise AssertionError("another account's ARN was accepted")
    except ClientError as e:
        assert e.response["Error"]["Code"] == "AccessDeniedException", e

    with open(sys.argv[3] if len(sys.argv) > 3 else "/dev/null", "w") as f:
        json.dump({"total": 371}, f)


def read_phase():
    # After a restart: every record written is still there, with its lineage.
    total = 0
    for s in k.list_shards(StreamName="journey")["Shards"]:
        records, _ = read_shard("journey", s["ShardId"])
        total += len(records)
    assert total == 371, total
    assert k.list_tags_for_stream(StreamName="journey")["Tags"] == [{"Key": "team", "Value": "data"}]
    assert k.describe_stream_summary(StreamName="journey")["StreamDescriptionSummary"]["RetentionPeriodHours"] == 48
    summary = k.describe_stream_summary(StreamName="journey")["StreamDescriptionSummary"]
    arn = summary["StreamARN"]
    assert len(k.list_stream_consumers(StreamARN=arn)["Consumers"]) == 1
    assert summary["EnhancedMonitoring"] == [{"ShardLevelMetrics": ["IncomingBytes"]}]
    assert summary["MaxRecordSizeInKiB"] == 2048
    assert "Statement" in json.loads(k.get_resource_policy(ResourceARN=arn)["Policy"])
    k.delete_resource_policy(ResourceARN=arn)
    try:
        k.delete_resource_policy(ResourceARN=arn)
        raise AssertionError("a second DeleteResourcePolicy found a policy")
    except k.exceptions.ResourceNotFoundException as e:
        assert "No resource policy found" in str(e), e
    assert json.loads(k.get_resource_policy(ResourceARN=arn)["Policy"]) == {}
    assert k.describe_account_settings()["MinimumThroughputBillingCommitment"]["Status"] == "ENABLED"
    sealed, _ = read_shard("sealed", "shardId-000000000000")
    assert [(r["Data"], r["EncryptionType"]) for r in sealed] == [(b"secret", "KMS"), (b"clear", "NONE")], sealed
    assert k.describe_stream_summary(StreamName="sealed")["StreamDescriptionSummary"]["EncryptionType"] == "NONE"
    k.delete_stream(StreamName="sealed")
    k.delete_stream(StreamName="journey", EnforceConsumerDeletion=True)
    assert k.list_streams()["StreamNames"] == []


if phase in ("write", "all"):
    write_phase()
if phase in ("read", "all"):
    read_phase()
print("boto3 journey passed:", phase)

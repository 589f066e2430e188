"""Two consumer-group workers written in Python against a shardlog server:
the groups extension (ShardlogGroups_20261126.*) over plain HTTP for leases
and checkpoints, boto3 for reading records. Usage: python groups_worker.py ENDPOINT
"""
import json
import sys
import urllib.error
import urllib.request

import boto3

endpoint = sys.argv[1]
k = boto3.client("kinesis", endpoint_url=endpoint, region_name="us-east-1",
                 aws_access_key_id="test", aws_secret_access_key="test")


def groups(op, **body):
    req = urllib.request.Request(endpoint, data=json.dumps(body).encode(), method="POST", headers={
        "X-Amz-Target": f"ShardlogGroups_20261126.{op}",
        "Content-Type": "application/x-amz-json-1.1",
    })
    try:
        with urllib.request.urlopen(req) as r:
            raw = r.read()
            return json.loads(raw) if raw else {}
    except urllib.error.HTTPError as e:
        err = json.loads(e.read())
        raise RuntimeError(err["__type"]) from None


k.create_stream(StreamName="grp", ShardCount=2)
for i in range(100):
    k.put_record(StreamName="grp", PartitionKey=f"key-{i}", Data=f"r{i}".encode())


def work(worker, processed):
    leases = groups("Heartbeat", StreamName="grp", ApplicationName="py", WorkerId=worker,
                    LeaseDurationMillis=30000)["Leases"]
    for lease in leases:
        if lease.get("Checkpoint"):
            it = k.get_shard_iterator(StreamName="grp", ShardId=lease["ShardId"],
                                      ShardIteratorType="AFTER_SEQUENCE_NUMBER",
                                      StartingSequenceNumber=lease["Checkpoint"])["ShardIterator"]
        else:
            it = k.get_shard_iterator(StreamName="grp", ShardId=lease["ShardId"],
                                      ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        records = k.get_records(ShardIterator=it, Limit=1000)["Records"]
        processed.extend(r["Data"] for r in records)
        if records:
            groups("Checkpoint", StreamName="grp", ApplicationName="py", WorkerId=worker,
                   ShardId=lease["ShardId"], LeaseId=lease["LeaseId"],
                   SequenceNumber=records[-1]["SequenceNumber"])
    return leases


a_done, b_done = [], []
first = groups("Heartbeat", StreamName="grp", ApplicationName="py", WorkerId="a")["Leases"]
assert len(first) == 2, first  # alone, a takes both shards
b = work("b", b_done)  # b joins and takes one of them (balancing)
assert len(b) == 1, b
# a's old lease on b's shard is fenced: its checkpoint is refused.
stolen = next(l for l in first if l["ShardId"] == b[0]["ShardId"])
try:
    groups("Checkpoint", StreamName="grp", ApplicationName="py", WorkerId="a", ShardId=stolen["ShardId"],
           LeaseId=stolen["LeaseId"], SequenceNumber=k.describe_stream(StreamName="grp")["StreamDescription"]["Shards"][0]["SequenceNumberRange"]["StartingSequenceNumber"])
    raise AssertionError("a stale lease's checkpoint was accepted")
except RuntimeError as e:
    assert str(e) == "LeaseLostException", e
a = work("a", a_done)
assert len(a) == 1 and a[0]["ShardId"] != b[0]["ShardId"], (a, b)
assert sorted(a_done + b_done) == sorted(f"r{i}".encode() for i in range(100))

d = groups("DescribeGroup", StreamName="grp", ApplicationName="py")
assert sorted(w["WorkerId"] for w in d["Workers"]) == ["a", "b"], d
assert all(s["RecordsBehind"] == 0 for s in d["Shards"]), d
assert groups("ListGroups", StreamName="grp")["ApplicationNames"] == ["py"]
groups("Release", StreamName="grp", ApplicationName="py", WorkerId="a")
groups("Release", StreamName="grp", ApplicationName="py", WorkerId="b")
# A new worker resumes after the checkpoints: nothing to process again.
again = []
work("c", again)
assert again == [], again
print("python group workers passed")

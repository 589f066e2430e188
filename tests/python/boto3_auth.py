"""boto3 against a shardlog server with SigV4 authentication on: the right
secret works, a wrong one is refused, and account B reads and writes account
A's stream once A's resource policy allows it.

Usage: python boto3_auth.py ENDPOINT A_KEY A_SECRET A_ACCOUNT B_KEY B_SECRET B_ACCOUNT
"""
import json
import sys
import time

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

endpoint, a_key, a_secret, a_account, b_key, b_secret, b_account = sys.argv[1:8]


def client(key, secret):
    return boto3.client(
        "kinesis",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=key,
        aws_secret_access_key=secret,
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


a = client(a_key, a_secret)
b = client(b_key, b_secret)

a.create_stream(StreamName="py-shared", ShardCount=1)
for _ in range(100):
    summary = a.describe_stream_summary(StreamName="py-shared")["StreamDescriptionSummary"]
    if summary["StreamStatus"] == "ACTIVE":
        break
    time.sleep(0.05)
arn = summary["StreamARN"]
assert arn == f"arn:aws:kinesis:us-east-1:{a_account}:stream/py-shared", arn
a.put_record(StreamName="py-shared", PartitionKey="k", Data=b"from a")

message = expect_error("InvalidSignatureException", client(a_key, "wrong").list_streams)
assert message.startswith("The request signature we calculated does not match"), message
expect_error("UnrecognizedClientException", client("AKIDNOBODY", a_secret).list_streams)

message = expect_error("AccessDeniedException", b.describe_stream_summary, StreamARN=arn)
assert message.startswith(f"User: arn:aws:iam::{b_account}:root is not authorized"), message

a.put_resource_policy(
    ResourceARN=arn,
    Policy=json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"AWS": b_account},
                    "Action": ["kinesis:DescribeStreamSummary", "kinesis:PutRecord", "kinesis:GetShardIterator", "kinesis:GetRecords"],
                    "Resource": arn,
                }
            ],
        }
    ),
)
b.put_record(StreamARN=arn, PartitionKey="k", Data=b"from b")
shard = b.describe_stream_summary(StreamARN=arn)["StreamDescriptionSummary"]
assert shard["StreamName"] == "py-shared"
it = b.get_shard_iterator(StreamARN=arn, ShardId="shardId-000000000000", ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
records = b.get_records(StreamARN=arn, ShardIterator=it)["Records"]
assert [r["Data"] for r in records] == [b"from a", b"from b"], records
expect_error("AccessDeniedException", b.delete_stream, StreamARN=arn)
print("boto3 auth: ok")

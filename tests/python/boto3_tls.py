"""boto3 over HTTPS against a server with a self-signed certificate.

Usage: boto3_tls.py PLAIN_ENDPOINT HTTPS_ENDPOINT CA_BUNDLE

(PLAIN_ENDPOINT is what every test script gets first; unused here.)

The client verifies the server's certificate against CA_BUNDLE (the test's
own certificate), then writes and reads back a record.
"""
import sys

import boto3
import botocore.config

endpoint, ca = sys.argv[2], sys.argv[3]
k = boto3.client(
    "kinesis",
    endpoint_url=endpoint,
    region_name="us-east-1",
    aws_access_key_id="AKIDEXAMPLE",
    aws_secret_access_key="secret",
    verify=ca,
    config=botocore.config.Config(retries={"max_attempts": 1}),
)
k.create_stream(StreamName="over-tls", ShardCount=1)
put = k.put_record(StreamName="over-tls", Data=b"sealed in transit", PartitionKey="p")
shard = put["ShardId"]
it = k.get_shard_iterator(StreamName="over-tls", ShardId=shard, ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
records = k.get_records(ShardIterator=it)["Records"]
assert [r["Data"] for r in records] == [b"sealed in transit"], records

# A client that does not trust the certificate must fail.
strict = boto3.client(
    "kinesis",
    endpoint_url=endpoint,
    region_name="us-east-1",
    aws_access_key_id="AKIDEXAMPLE",
    aws_secret_access_key="secret",
    config=botocore.config.Config(retries={"max_attempts": 1}),
)
try:
    strict.list_streams()
except Exception as e:  # botocore raises SSLError wrapped in EndpointConnectionError variants
    assert "SSL" in type(e).__name__ or "certificate" in str(e).lower(), repr(e)
else:
    raise AssertionError("an untrusted certificate was accepted")
print("ok")

#!/usr/bin/env bash
# The AWS CLI against a shardlog server: usage awscli_journey.sh ENDPOINT AWS
set -euo pipefail
endpoint=$1
aws=${2:-aws}
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_DEFAULT_REGION=us-east-1 AWS_PAGER=""
k() { "$aws" kinesis --endpoint-url "$endpoint" --output json "$@"; }

k create-stream --stream-name cli --shard-count 2
k wait stream-exists --stream-name cli
status=$(k describe-stream-summary --stream-name cli --query StreamDescriptionSummary.StreamStatus --output text)
[ "$status" = ACTIVE ] || { echo "status $status"; exit 1; }
shard=$(k put-record --stream-name cli --partition-key pk --data hello --query ShardId --output text)
k put-records --stream-name cli --records PartitionKey=a,Data=x PartitionKey=b,Data=y >/dev/null
it=$(k get-shard-iterator --stream-name cli --shard-id "$shard" --shard-iterator-type TRIM_HORIZON --query ShardIterator --output text)
data=$(k get-records --shard-iterator "$it" --query 'Records[0].Data' --output text)
[ "$data" = aGVsbG8= ] || { echo "data $data"; exit 1; }
k split-shard --stream-name cli --shard-to-split shardId-000000000000 --new-starting-hash-key 85070591730234615865843651857942052864
n=$(k list-shards --stream-name cli --query 'length(Shards)' --output text)
[ "$n" = 4 ] || { echo "shards $n"; exit 1; }
k add-tags-to-stream --stream-name cli --tags team=data
k increase-stream-retention-period --stream-name cli --retention-period-hours 36
if k describe-stream --stream-name nope 2>/tmp/awscli_err; then echo "expected failure"; exit 1; fi
grep -q ResourceNotFoundException /tmp/awscli_err
k start-stream-encryption --stream-name cli --encryption-type KMS --key-id alias/aws/kinesis
enc=$(k put-record --stream-name cli --partition-key pk --data c2VhbGVk --query EncryptionType --output text)
[ "$enc" = KMS ] || { echo "encryption $enc"; exit 1; }
k stop-stream-encryption --stream-name cli --encryption-type KMS --key-id alias/aws/kinesis
k delete-stream --stream-name cli
k wait stream-not-exists --stream-name cli
echo "aws cli journey passed"

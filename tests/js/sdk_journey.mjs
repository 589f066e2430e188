// The AWS SDK for JavaScript v3 (@aws-sdk/client-kinesis) against a real
// `shardlog serve`: usage `node sdk_journey.mjs ENDPOINT`. Run by
// crates/server/tests/api.rs; exits non-zero on the first wrong answer.
//
// It covers what a Node.js producer and consumer do: create and wait, put
// one and many records, list shards, read every shard from its
// StartingSequenceNumber with AFTER_SEQUENCE_NUMBER (which must not skip
// the first record), split a shard and follow ChildShards, typed errors,
// and SubscribeToShard over HTTP/2 (cleartext, prior knowledge) through the
// SDK's event-stream decoder.

import assert from "node:assert/strict";
import {
  CreateStreamCommand,
  DeleteStreamCommand,
  DescribeStreamCommand,
  DescribeStreamConsumerCommand,
  GetRecordsCommand,
  GetShardIteratorCommand,
  KinesisClient,
  ListShardsCommand,
  PutRecordCommand,
  PutRecordsCommand,
  RegisterStreamConsumerCommand,
  ResourceNotFoundException,
  SplitShardCommand,
  SubscribeToShardCommand,
  waitUntilStreamExists,
} from "@aws-sdk/client-kinesis";
import { NodeHttp2Handler } from "@smithy/node-http-handler";

const endpoint = process.argv[2];
assert.ok(endpoint, "usage: node sdk_journey.mjs ENDPOINT");
const config = {
  endpoint,
  region: "us-east-1",
  credentials: { accessKeyId: "AKIDEXAMPLE", secretAccessKey: "secret" },
  maxAttempts: 1,
};
const k = new KinesisClient(config);
const enc = new TextEncoder();
const dec = new TextDecoder();
const STREAM = "js";

// Create, and wait with the SDK's own waiter (DescribeStream polling).
await k.send(new CreateStreamCommand({ StreamName: STREAM, ShardCount: 2 }));
await waitUntilStreamExists({ client: k, maxWaitTime: 30 }, { StreamName: STREAM });

// One record, then 60 in one PutRecords.
const written = new Map(); // shard id -> [{seq, key, data}]
const note = (shard, seq, key, data) => {
  if (!written.has(shard)) written.set(shard, []);
  written.get(shard).push({ seq, key, data });
};
const one = await k.send(
  new PutRecordCommand({ StreamName: STREAM, PartitionKey: "first", Data: enc.encode("the first record") }),
);
note(one.ShardId, one.SequenceNumber, "first", "the first record");
const batch = Array.from({ length: 60 }, (_, i) => ({ PartitionKey: `k${i}`, Data: enc.encode(`record ${i}`) }));
const many = await k.send(new PutRecordsCommand({ StreamName: STREAM, Records: batch }));
assert.equal(many.FailedRecordCount ?? 0, 0);
assert.equal(many.Records.length, 60);
many.Records.forEach((r, i) => note(r.ShardId, r.SequenceNumber, `k${i}`, `record ${i}`));

// Every shard, read from its StartingSequenceNumber with
// AFTER_SEQUENCE_NUMBER: every record, in order, the first one included.
const shards = (await k.send(new ListShardsCommand({ StreamName: STREAM }))).Shards;
assert.equal(shards.length, 2);
async function readShard(shardId, start) {
  let it = (
    await k.send(
      new GetShardIteratorCommand({
        StreamName: STREAM,
        ShardId: shardId,
        ShardIteratorType: "AFTER_SEQUENCE_NUMBER",
        StartingSequenceNumber: start,
      }),
    )
  ).ShardIterator;
  const got = [];
  for (let i = 0; i < 100 && it; i++) {
    const r = await k.send(new GetRecordsCommand({ ShardIterator: it, Limit: 25 }));
    got.push(...r.Records);
    // The end of a closed shard (no iterator), or caught up on an open one.
    if (!r.NextShardIterator || (r.Records.length === 0 && (r.MillisBehindLatest ?? 0) === 0)) {
      return { got, last: r };
    }
    it = r.NextShardIterator;
  }
  return { got, last: null };
}
for (const s of shards) {
  const start = s.SequenceNumberRange.StartingSequenceNumber;
  const want = written.get(s.ShardId) ?? [];
  const { got } = await readShard(s.ShardId, start);
  assert.deepEqual(
    got.map((r) => [r.SequenceNumber, r.PartitionKey, dec.decode(r.Data)]),
    want.map((w) => [w.seq, w.key, w.data]),
    `shard ${s.ShardId}`,
  );
  for (const r of got) {
    assert.ok(BigInt(start) < BigInt(r.SequenceNumber), "StartingSequenceNumber sorts before every record");
    assert.ok(r.ApproximateArrivalTimestamp instanceof Date);
  }
}

// Typed errors, in Kinesis's words.
await assert.rejects(
  k.send(new DescribeStreamCommand({ StreamName: "missing" })),
  (e) => e instanceof ResourceNotFoundException && e.message === "Stream missing under account 000000000000 not found.",
);
await assert.rejects(
  k.send(
    new GetShardIteratorCommand({ StreamName: STREAM, ShardId: shards[0].ShardId, ShardIteratorType: "SIDEWAYS" }),
  ),
  (e) => e.name === "ValidationException" && /enum value set/.test(e.message),
);

// Split the first shard: its reader ends with ChildShards and no iterator.
const parent = shards[0];
const lo = BigInt(parent.HashKeyRange.StartingHashKey);
const hi = BigInt(parent.HashKeyRange.EndingHashKey);
await k.send(
  new SplitShardCommand({
    StreamName: STREAM,
    ShardToSplit: parent.ShardId,
    NewStartingHashKey: ((lo + hi) / 2n).toString(),
  }),
);
await waitUntilStreamExists({ client: k, maxWaitTime: 30 }, { StreamName: STREAM });
const { last } = await readShard(parent.ShardId, parent.SequenceNumberRange.StartingSequenceNumber);
assert.ok(last, "the closed parent's reader reached its end");
assert.equal(last.NextShardIterator, undefined, "a closed shard's last page has no NextShardIterator");
assert.equal(last.ChildShards.length, 2);
const child = last.ChildShards[0].ShardId;

// SubscribeToShard over HTTP/2: records put into a child arrive through
// the SDK's event stream, in order.
const arn = (await k.send(new DescribeStreamCommand({ StreamName: STREAM }))).StreamDescription.StreamARN;
const consumer = (await k.send(new RegisterStreamConsumerCommand({ StreamARN: arn, ConsumerName: "js" }))).Consumer;
for (let i = 0; i < 100; i++) {
  const d = await k.send(new DescribeStreamConsumerCommand({ ConsumerARN: consumer.ConsumerARN }));
  if (d.ConsumerDescription.ConsumerStatus === "ACTIVE") break;
  await new Promise((r) => setTimeout(r, 100));
}
const childRange = last.ChildShards[0].HashKeyRange;
const pushed = [];
for (let i = 0; i < 5; i++) {
  const r = await k.send(
    new PutRecordCommand({
      StreamName: STREAM,
      PartitionKey: `pushed-${i}`,
      ExplicitHashKey: childRange.StartingHashKey,
      Data: enc.encode(`pushed ${i}`),
    }),
  );
  assert.equal(r.ShardId, child);
  pushed.push(r.SequenceNumber);
}
const h2 = new KinesisClient({ ...config, requestHandler: new NodeHttp2Handler() });
const abort = new AbortController();
const sub = await h2.send(
  new SubscribeToShardCommand({
    ConsumerARN: consumer.ConsumerARN,
    ShardId: child,
    StartingPosition: { Type: "TRIM_HORIZON" },
  }),
  { abortSignal: abort.signal },
);
// A subscription lasts five minutes: give up (and fail) after 30 s.
const deadline = setTimeout(() => abort.abort(), 30_000);
const received = [];
for await (const ev of sub.EventStream) {
  assert.ok(ev.SubscribeToShardEvent, `an event of another kind: ${JSON.stringify(Object.keys(ev))}`);
  for (const r of ev.SubscribeToShardEvent.Records) {
    received.push([r.SequenceNumber, dec.decode(r.Data)]);
  }
  if (received.length >= pushed.length) break;
}
clearTimeout(deadline);
abort.abort();
h2.destroy();
assert.deepEqual(
  received,
  pushed.map((seq, i) => [seq, `pushed ${i}`]),
);

await k.send(new DeleteStreamCommand({ StreamName: STREAM, EnforceConsumerDeletion: true }));
await assert.rejects(
  k.send(new DescribeStreamCommand({ StreamName: STREAM })),
  (e) => e instanceof ResourceNotFoundException,
);
k.destroy();
console.log(`js sdk journey passed: ${written.size} shards read, ${received.length} records pushed over HTTP/2`);

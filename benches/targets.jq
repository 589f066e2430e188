# The Markdown table of benches/targets.sh, from its results JSON
# (`jq -r -f benches/targets.jq results-DATE.json`).

def cs: if length <= 3 then . else (.[:-3] | cs) + "," + .[-3:] end;
# A number with thousands separators, rounded.
def commas: round | tostring | cs;
def ms: . / 1000 | . * 100 | round | . / 100 | tostring;
def mib: . / 1024 | round | tostring;
def status(ok): if ok then "**met**" else "missed" end;
def put: (.phases // []) | map(select(.phase == "put")) | first;
def replay: (.phases // []) | map(select(.phase == "replay")) | first;
def checked: .verify.ok == true;
def verified:
  if .verify == null then "no check"
  elif checked then "all \(.verify.acknowledged | commas) read back once, intact"
  else "CHECK FAILED: \(.verify)" end;
# What the CPU did during a run (bench in targets.sh), when it was taken.
def cpu_text:
  if .cpu == null or .cpu.machine_busy_share == null then ""
  else "; during the run\(if replay == null then "" else " (replay included)" end) the machine's cores \(.cpu.machine_busy_share * 100 | round)% busy"
    + (if ((put | .records) // 0) > 0 then ", the server \(.cpu.server_cpu_seconds / (put | .records) * 1000000 | round) µs of CPU per record put" else "" end)
  end;
def rate_row(name; goal; run; p99_max_us; raw):
  if run == null or (run | put) == null then "| \(name) | \(goal) | not run | | \(raw) |"
  else (run | put) as $p
    | "| \(name) | \(goal) | \($p.records_per_second | commas) rec/s, p99 \($p.latency_us.p99 | ms) ms, p99.9 \($p.latency_us."p99.9" | ms) ms; \(run | verified)\(run | cpu_text) | "
      + status((run | checked) and $p.records_per_second >= .goal_rate and (p99_max_us == null or $p.latency_us.p99 <= p99_max_us))
      + " | \(raw) |"
  end;

# The server runs follow the last raw run (after the embedded pairs).
.raw[-1] as $raw
| ($raw.append_1kib_fdatasync_4_files_latency_us // {}) as $lat
| "# Issue-8 targets, one run\n",
  "\(.machine)\n",
  "| target | goal | measured | status | raw limit, same run |",
  "|---|---|---|---|---|",
  ({goal_rate: 150000} + . | rate_row("PutRecords ×100, 8 connections"; "≥ 150,000 rec/s"; .batch; null;
      "1 MiB write + `fdatasync`, 4 files, allocated: \($raw.write_1mib_fdatasync_4_files_allocated_mib_per_second | commas) MiB/s")),
  ({goal_rate: 25000} + . | rate_row("PutRecord ×1, 8 connections"; "≥ 25,000 rec/s, p99 ≤ 2 ms"; .single8; 2000;
      "1 KiB append + `fdatasync`, 4 files: \($raw.append_1kib_fdatasync_4_files_ops_per_second | commas) ops/s, p99 \($lat.p99 | ms) ms, p99.9 \($lat."p99.9" | ms) ms")),
  ({goal_rate: 25000} + . | rate_row("PutRecord ×1, 8 connections, `--journal true` (not the default)"; "as above"; ."single8-journal"; 2000; "as above")),
  (if ."single8-nosync" == null or (."single8-nosync" | put) == null then "| the same with `--sync never` (no fsync at all) | the ceiling | not run | | |"
   else (."single8-nosync" | put) as $p
   | "| the same with `--sync never`: no fsync at all, this server's ceiling on this machine | none (no durable run can pass it) | \($p.records_per_second | commas) rec/s, p99 \($p.latency_us.p99 | ms) ms; \(."single8-nosync" | verified)\(."single8-nosync" | cpu_text) | — | \(if $p.records_per_second > 0 then "the durable run above is \(((.single8 | put | .records_per_second) // 0) / $p.records_per_second * 100 | round)% of it; the goal is \(25000 / $p.records_per_second * 100 | round)% of it" else "" end) |"
   end),
  (if ."single8-floor" == null or (."single8-floor" | put) == null then "| HTTP floor: HTTP + `pwrite` + group `fdatasync`, nothing else | the most any durable server reaches here | not run | | |"
   else (."single8-floor" | put) as $p
   | "| HTTP floor (`http_floor`): the same HTTP stack, a `pwrite` of each body and a group `fdatasync`, nothing else, 8 connections | none (the reference for the durable rows: the same HTTP stack, runtime and client, with no work but the durable write) | \($p.records_per_second | commas) rec/s, p99 \($p.latency_us.p99 | ms) ms\(."single8-floor" | cpu_text) | — | \(if $p.records_per_second > 0 then "the durable run above is \(((.single8 | put | .records_per_second) // 0) / $p.records_per_second * 100 | round)% of it; the goal is \(25000 / $p.records_per_second * 100 | round)% of it" else "" end) |"
   end),
  ({goal_rate: (((.single8 | put | .records_per_second) // 0) + 1)} + . | rate_row("PutRecord ×1, 64 connections"; "more than at 8"; .single64; null; "")),
  (if (.batch | replay) == null then "| replay, GetRecords Limit 10,000 | ≥ 400,000 rec/s | not run | | page cache |"
   else (.batch | replay) as $r
   | "| replay, GetRecords Limit 10,000 | ≥ 400,000 rec/s | \($r.records_per_second | commas) rec/s (\($r.records | commas) records; \(.batch | verified)) | \(status((.batch | checked) and $r.records_per_second >= 400000)) | read from the page cache |"
   end),
  (if .server_memory == null then "| server memory during the load | ≤ 64 MiB + page cache | not run | | |"
   else "| server memory during the load | ≤ 64 MiB + page cache | RssAnon peak \(.server_memory.max_anon_kib | mib) MiB (VmRSS \(.server_memory.max_rss_kib | mib) MiB with the mapped segments' page cache) | \(status(.server_memory.max_anon_kib <= 65536)) | |"
   end),
  (if .idle == null then "| idle with 1,000 shards | ≤ 100 MiB | not run | | |"
   else .idle as $i
   | "| idle with \($i.shards | commas) shards | ≤ 100 MiB | VmRSS \($i.created.rss_kib | mib) MiB after creating them, \($i.restarted.rss_kib | mib) MiB after a restart (answering \($i.restarted.answering_after_ms) ms after start) | \(status([$i.created.rss_kib, $i.restarted.rss_kib] | max <= 102400)) | |"
   end),
  (if .open == null then "| open after kill -9, 10 GiB in 100 shards | accepting writes ≤ 1 s | not run | | |"
   else .open as $o
   | ($o.first_put_acknowledged_ms.warm + (if $o.cold_attempted then [$o.first_put_acknowledged_ms.cold] else [] end)) as $all
   | def shown: if . == null then "failed" else tostring end;
     "| open after kill -9, \($o.gib) GiB in \($o.shards) shards | accepting writes ≤ 1 s | first PutRecord acknowledged \($o.first_put_acknowledged_ms.warm | map(shown) | join(", ")) ms after the server's start (the first run after the fill's abort, the others after a `kill -9` of the run before); \(if $o.cold_attempted then "\($o.first_put_acknowledged_ms.cold | shown) ms with the page cache dropped" else "cold cache not run (needs root)" end) | \(status(($all | length) > 0 and ($all | all(. != null and . <= 1000)))) | |"
   end),
  (. as $d | ["embedded", "embedded_deep"][] as $series
   | ($d[$series] // []) as $runs
   | if ($runs | length) == 0 then
       (if $series == "embedded" then "| embedded engine, 16 writers | ≥ 80% of the allocated-space durable bandwidth | not run | | |" else empty end)
     else
       [range(0; $runs | length) | {e: $runs[.].mib_per_second, r: ($d.raw[. + 1] // $raw).write_1mib_fdatasync_4_files_allocated_mib_per_second, s: ($d.raw[. + 1] // $raw).write_400kib_fdatasync_4_files_allocated_mib_per_second}] as $pairs
       | "| embedded engine, 16 writers (\($runs | map(select(. != null)) | first | .puts_in_flight_per_writer // "?") puts in flight each) | ≥ 80% of the allocated-space durable bandwidth | "
         + ($pairs | map(if .e == null or .r == null then "failed" else "\(.e | commas) MiB/s = \(.e / .r * 100 | round)%" end) | join("; "))
         + " | \(status($pairs | all(.e != null and .r != null and .e >= 0.8 * .r))) | each run beside the raw rows right after it: 1 MiB, 4 files: "
         + ($pairs | map(.r // "?" | if type == "number" then commas else . end) | join(", ")) + " MiB/s; 400 KiB, 4 files (the probe's own shape): "
         + ($pairs | map(.s // "?" | if type == "number" then commas else . end) | join(", ")) + " MiB/s |"
     end),
  "",
  "Every rate counts 1 KiB records acknowledged only after `fdatasync` (the server runs `--sync always`, its default). The raw limits are `rawdisk DIR limits SECONDS` on the same disk in the same run."

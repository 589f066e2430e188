#!/usr/bin/env bash
# Side-by-side comparison of Shardlog with other local Kinesis servers and
# with Redis Streams (issue 8).
#
# For each peer this script
#   1. installs it from its own registry into a cache directory (once),
#   2. starts it on loopback, on its own port, with a fresh data directory,
#   3. runs the same workloads against it and samples its memory,
#   4. stops it,
# and at the end prints one Markdown table and writes it, with the raw
# numbers, to benches/peers/results-<date>.{md,json} (results-<date>-2, -3, ... for later runs the same day).
#
# Workloads (all records 1 KiB, 4 shards, 8 connections, BENCH_SECONDS each):
#   batch  : PutRecords of 100 records  (`shardlog bench --batch 100`)
#   replay : read back everything `batch` wrote, from TRIM_HORIZON, with
#            GetRecords Limit 10000 (the replay phase of the batch run, which
#            also verifies that every acknowledged record comes back exactly
#            once)
#   single : PutRecord, one record per request (`shardlog bench --batch 1`),
#            then its replay too, for the check (not timed in the table)
# Kinesis peers are driven by the same client, `shardlog bench`. Redis does
# not speak Kinesis, so it is driven by redis-benchmark with commands that
# approximate the same work (see run_redis below and the README).
#
# Usage: bash benches/peers/run.sh
# Environment:
#   SECONDS or BENCH_SECONDS  seconds per put workload (default 10). bash
#                             takes SECONDS from the environment, so
#                             `SECONDS=30 bash run.sh` works.
#   PEERS        comma-separated subset of: shardlog, kinesalite,
#                kinesis-local, ferrokinesis, ferrokinesis-state, redis-always,
#                redis-everysec (default: all)
#   CACHE        install cache and scratch data (default benches/peers/.cache,
#                git-ignored; on the same disk as the repository)
#   SHARDLOG_BIN the shardlog binary (default target/release/shardlog under
#                CARGO_TARGET_DIR or the repository; built if missing)
#   PORT_BASE    first loopback port to use (default 14700)
#   KINESIS_LOCAL_BATCH_RECORDS / KINESIS_LOCAL_SINGLE_RECORDS,
#   FERRO_STATE_BATCH_RECORDS / FERRO_STATE_SINGLE_RECORDS
#                caps on the runs of the slow peers (see below)
#   OUT_DIR      where the results files go (default benches/peers)

# Read SECONDS before anything else: when it does not come from the
# environment it counts the seconds since the shell started (0 here).
RUN_SECONDS=${BENCH_SECONDS:-$SECONDS}
set -euo pipefail
if [[ ! $RUN_SECONDS =~ ^[0-9]+$ ]] || ((RUN_SECONDS < 1)); then RUN_SECONDS=10; fi

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
CACHE=${CACHE:-$HERE/.cache}
OUT_DIR=${OUT_DIR:-$HERE}
PEERS=${PEERS:-shardlog,kinesalite,kinesis-local,ferrokinesis,ferrokinesis-state,redis-always,redis-everysec}
PORT_BASE=${PORT_BASE:-14700}
# kinesis-mock (the kinesis-local package) keeps every stream in immutable
# Scala.js data structures and answers a few hundred to a few thousand
# records a second; its runs stop at these counts (or at BENCH_SECONDS,
# whichever comes first) so that its replay also ends in time.
KINESIS_LOCAL_BATCH_RECORDS=${KINESIS_LOCAL_BATCH_RECORDS:-50000}
KINESIS_LOCAL_SINGLE_RECORDS=${KINESIS_LOCAL_SINGLE_RECORDS:-20000}
# ferrokinesis with --state-dir rewrites its whole state at every put (see
# peer_ferrokinesis): capped as well.
FERRO_STATE_BATCH_RECORDS=${FERRO_STATE_BATCH_RECORDS:-20000}
FERRO_STATE_SINGLE_RECORDS=${FERRO_STATE_SINGLE_RECORDS:-2000}
# A bench run that takes longer than this is stopped (a hung peer must not
# stall the whole comparison).
BENCH_TIMEOUT=$((RUN_SECONDS * 4 + 120))

DATE=$(date -u +%F)
STAMP=$(date -u +%FT%TZ)
mkdir -p "$CACHE" "$OUT_DIR"
RAW=$(mktemp -d "$CACHE/raw.XXXXXX")   # one JSON file per peer, merged at the end
LOG=$CACHE/logs
mkdir -p "$LOG"

say() { printf '== %s\n' "$*" >&2; }

# ---------------------------------------------------------------------------
# Processes this script started, stopped on any exit.
SERVER_PID=""
SAMPLER_PID=""
cleanup() {
    [[ -n $SAMPLER_PID ]] && kill "$SAMPLER_PID" 2>/dev/null || true
    [[ -n $SERVER_PID ]] && kill "$SERVER_PID" 2>/dev/null || true
    return 0
}
trap cleanup EXIT

# Memory sampling (rss_tree_kib, start_sampler), stop_server and
# wait_kinesis are shared with benches/targets.sh.
# shellcheck source=../lib.sh
source "$HERE/../lib.sh"

# Writes a row that did not run: peer, durable, reason.
not_run() {
    say "$1: not run: $3"
    jq -n --arg peer "$1" --arg durable "$2" --arg reason "$3" \
        '{peer: $peer, durable: $durable, status: ("not run: " + $reason)}' >"$RAW/$1.json"
}

# A fresh, empty data directory for a peer.
fresh_dir() {
    local d=$CACHE/data/$1
    rm -rf "$d"
    mkdir -p "$d"
    echo "$d"
}

# ---------------------------------------------------------------------------
# Installs. Each is skipped when the peer is already there.

SHARDLOG_BIN=${SHARDLOG_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/shardlog}
install_shardlog() {
    [[ -x $SHARDLOG_BIN ]] && return 0
    say "building shardlog (release)"
    (cd "$ROOT" && cargo build --release -p shardlog) >"$LOG/shardlog-build.log" 2>&1
}

# kinesalite 3.3.3 from npm. Its LevelDB binding (leveldown) ships prebuilt
# binaries, so it works even where npm does not run install scripts.
KINESALITE_JS=$CACHE/kinesalite/node_modules/kinesalite/cli.js
install_kinesalite() {
    [[ -f $KINESALITE_JS ]] && return 0
    mkdir -p "$CACHE/kinesalite"
    (cd "$CACHE/kinesalite" && npm install --no-audit --no-fund kinesalite@3.3.3) >"$LOG/kinesalite-install.log" 2>&1
}

# kinesis-mock, as the npm package kinesis-local 0.6.2: one Scala.js bundle,
# main.js, configured by environment variables (KINESIS_MOCK_PLAIN_PORT for
# plain HTTP, KINESIS_MOCK_TLS_PORT for HTTPS).
KINESIS_LOCAL_DIR=$CACHE/kinesis-local/node_modules/kinesis-local
install_kinesis_local() {
    [[ -f $KINESIS_LOCAL_DIR/main.js ]] && return 0
    mkdir -p "$CACHE/kinesis-local"
    (cd "$CACHE/kinesis-local" && npm install --no-audit --no-fund kinesis-local@0.6.2) >"$LOG/kinesis-local-install.log" 2>&1
}

# ferrokinesis 0.7 from crates.io, compiled here (long on 2 cores: one job,
# so as not to crowd other work; its own target dir so a rerun resumes).
FERRO_BIN=$CACHE/ferrokinesis/bin/ferrokinesis
install_ferrokinesis() {
    [[ -x $FERRO_BIN ]] && return 0
    say "compiling ferrokinesis 0.7 (this takes a while; PEERS=... skips it)"
    CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-1} CARGO_TARGET_DIR=$CACHE/ferrokinesis-target \
        cargo install ferrokinesis --version '~0.7' --locked --root "$CACHE/ferrokinesis" \
        >"$LOG/ferrokinesis-install.log" 2>&1
}

# Redis 7 from Debian (redis-server brings redis-benchmark and redis-cli).
install_redis() {
    command -v redis-server >/dev/null && command -v redis-benchmark >/dev/null && return 0
    local sudo=""
    ((EUID == 0)) || sudo=sudo
    $sudo apt-get install -y redis-server >"$LOG/redis-install.log" 2>&1 ||
        { $sudo apt-get update >/dev/null 2>&1 && $sudo apt-get install -y redis-server >>"$LOG/redis-install.log" 2>&1; }
}

# ---------------------------------------------------------------------------
# Kinesis peers: all driven by `shardlog bench`.

# bench NAME URL OUT ARGS...: one `shardlog bench --json` run; its JSON to
# OUT (or {"error": ...} when it printed none).
bench() {
    local name=$1 url=$2 out=$3
    shift 3
    local line
    line=$(timeout "$BENCH_TIMEOUT" "$SHARDLOG_BIN" --endpoint "$url" --json bench \
        --shards 4 --connections 8 --record-bytes 1024 --seconds "$RUN_SECONDS" --mode both "$@" \
        2>>"$LOG/$name-bench.err" | grep '^{' | tail -1 || true)
    if [[ -n $line ]]; then
        echo "$line" >"$out"
    else
        jq -n --arg e "$(tail -c 300 "$LOG/$name-bench.err" 2>/dev/null)" '{error: ("no result: " + $e)}' >"$out"
    fi
}

# run_kinesis PEER DURABLE PORT CAP_BATCH CAP_SINGLE -- COMMAND...: starts the
# server (COMMAND, in the background, logging to the cache), runs batch (with
# its replay) and single, samples memory, stops it.
run_kinesis() {
    local peer=$1 durable=$2 port=$3 cap_batch=$4 cap_single=$5
    shift 6
    local url="http://127.0.0.1:$port" rss_file=$RAW/$peer.rss
    : >"$LOG/$peer-bench.err"
    say "$peer: starting on $url"
    "$@" >"$LOG/$peer-server.log" 2>&1 &
    SERVER_PID=$!
    if ! wait_kinesis "$url" "$SERVER_PID"; then
        stop_server
        not_run "$peer" "$durable" "did not answer on $url (see $LOG/$peer-server.log)"
        return 0
    fi
    start_sampler "$SERVER_PID" "$rss_file"
    local caps=()
    [[ $cap_batch -gt 0 ]] && caps=(--records "$cap_batch")
    say "$peer: PutRecords x100 for ${RUN_SECONDS}s, then replay"
    bench "$peer" "$url" "$RAW/$peer.batch" --stream peers-batch --batch 100 "${caps[@]}"
    caps=()
    [[ $cap_single -gt 0 ]] && caps=(--records "$cap_single")
    say "$peer: PutRecord x1 for ${RUN_SECONDS}s, then replay"
    bench "$peer" "$url" "$RAW/$peer.single" --stream peers-single --batch 1 "${caps[@]}"
    stop_server
    jq -n --arg peer "$peer" --arg durable "$durable" --argjson rss "$(cat "$rss_file")" \
        --slurpfile b "$RAW/$peer.batch" --slurpfile s "$RAW/$peer.single" \
        --argjson cb "$cap_batch" --argjson cs "$cap_single" \
        '{peer: $peer, durable: $durable, status: "ok", client: "shardlog bench",
          max_rss_kib: $rss.max_rss_kib, max_anon_kib: $rss.max_anon_kib, batch: $b[0], single: $s[0],
          record_caps: {batch: $cb, single: $cs}}' >"$RAW/$peer.json"
}

peer_shardlog() {
    local port=$1 dir
    install_shardlog || { not_run shardlog "yes" "build failed (see $LOG/shardlog-build.log)"; return 0; }
    dir=$(fresh_dir shardlog)
    # --sync always: every acknowledged write is fdatasync'ed (the default,
    # spelled out so that a SHARDLOG_SYNC in the environment cannot change it).
    run_kinesis shardlog "yes (fdatasync before ack)" "$port" 0 0 -- \
        env -u SHARDLOG_CONFIG "$SHARDLOG_BIN" serve --listen "127.0.0.1:$port" --data-dir "$dir" --sync always
}

peer_kinesalite() {
    local port=$1 dir
    install_kinesalite || { not_run kinesalite "no" "npm install failed (see $LOG/kinesalite-install.log)"; return 0; }
    dir=$(fresh_dir kinesalite)
    # --path: LevelDB on disk (in memory without it). LevelDB writes are not
    # synced, so acknowledged records can be lost in a crash. The 500 ms
    # CREATING/DELETING delays are set to 0 as Shardlog's are.
    run_kinesis kinesalite "no (LevelDB, no fsync)" "$port" 0 0 -- \
        node "$KINESALITE_JS" --port "$port" --path "$dir" --createStreamMs 0 --deleteStreamMs 0 --updateStreamMs 0
}

peer_kinesis_local() {
    local port=$1
    install_kinesis_local || { not_run kinesis-local "no" "npm install failed (see $LOG/kinesis-local-install.log)"; return 0; }
    # In memory (SHOULD_PERSIST_DATA=false, its default). It runs from its
    # package directory, where its TLS certificate (server.json) is.
    run_kinesis kinesis-local "no (in memory)" "$port" "$KINESIS_LOCAL_BATCH_RECORDS" "$KINESIS_LOCAL_SINGLE_RECORDS" -- \
        env -C "$KINESIS_LOCAL_DIR" KINESIS_MOCK_PLAIN_PORT="$port" KINESIS_MOCK_TLS_PORT=$((port + 50)) \
        LOG_LEVEL=WARN CREATE_STREAM_DURATION=0ms DELETE_STREAM_DURATION=0ms SHARD_LIMIT=100 \
        node main.js
}

FERRO_FAILED=""
peer_ferrokinesis() {
    local port=$1 variant=$2 dir
    if [[ -z $FERRO_FAILED ]] && ! install_ferrokinesis; then FERRO_FAILED="cargo install failed (see $LOG/ferrokinesis-install.log)"; fi
    if [[ -n $FERRO_FAILED ]]; then not_run "$variant" "no" "$FERRO_FAILED"; return 0; fi
    if [[ $variant == ferrokinesis ]]; then
        run_kinesis ferrokinesis "no (in memory)" "$port" 0 0 -- \
            "$FERRO_BIN" --port "$port" --create-stream-ms 0 --delete-stream-ms 0 --update-stream-ms 0 --log-level warn
    else
        # --state-dir: after every put, ferrokinesis 0.7 serializes its whole
        # state (every record, as JSON) into its WAL and fsyncs it, under one
        # write lock (store.rs, put_records_batch -> persist_current_state_result).
        # Durable, but each put costs time in proportion to all the data held,
        # so its rate falls as the stream grows: its runs are capped.
        dir=$(fresh_dir ferrokinesis-state)
        run_kinesis ferrokinesis-state "yes (whole state re-written + fsync per put)" "$port" \
            "$FERRO_STATE_BATCH_RECORDS" "$FERRO_STATE_SINGLE_RECORDS" -- \
            "$FERRO_BIN" --port "$port" --create-stream-ms 0 --delete-stream-ms 0 --update-stream-ms 0 --log-level warn \
            --state-dir "$dir"
    fi
}

# ---------------------------------------------------------------------------
# Redis Streams, with redis-benchmark: an approximation of the same work, not
# the same client. A record is an XADD of one 1 KiB field to one of 4 stream
# keys (s:000000000000 .. s:000000000003, standing for 4 shards); 8
# connections. "PutRecords x100" is XADD pipelined 100 deep per connection
# (-P 100), "PutRecord x1" is one XADD at a time per connection (-P 1).
# "Replay" is XRANGE <key> - + COUNT 10000 from one connection, counted as
# the entries it returns; unlike Kinesis's replay, which walks the whole
# stream once, it reads the head of each stream again and again.
#
# redis-benchmark stops after a count, not a time: a short first run
# measures the rate, and the measured run is sized to last about
# BENCH_SECONDS.

# rb PORT N ARGS...: one redis-benchmark run; prints "rps,p99_ms".
rb() {
    local port=$1 n=$2
    shift 2
    redis-benchmark -p "$port" -n "$n" -r 4 --csv "$@" 2>/dev/null |
        python3 -c 'import csv,sys; r=list(csv.reader(sys.stdin))[-1]; print(r[1]+","+r[6])'
}

# rb_timed PORT CALIBRATION_N ARGS...: calibrates, then runs for ~BENCH_SECONDS.
rb_timed() {
    local port=$1 calib=$2 rate n
    shift 2
    rate=$(rb "$port" "$calib" "$@" | cut -d, -f1)
    n=$(python3 -c "print(max($calib, int(float('$rate') * $RUN_SECONDS)))")
    rb "$port" "$n" "$@"
}

run_redis() {
    local peer=$1 fsync=$2 port=$3 durable dir value
    install_redis || { not_run "$peer" "-" "apt-get install redis-server failed (see $LOG/redis-install.log)"; return 0; }
    if [[ $fsync == always ]]; then durable="yes (AOF, fsync before reply)"; else durable="no (AOF, fsync every second)"; fi
    dir=$(fresh_dir "$peer")
    say "$peer: starting redis-server on 127.0.0.1:$port (appendfsync $fsync)"
    # --save '': no RDB snapshots. --auto-aof-rewrite-percentage 0: no
    # background AOF rewrite (a forked child that would compete for the CPUs
    # and, with copy-on-write, blur the memory figure) during the runs.
    redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly yes --appendfsync "$fsync" \
        --auto-aof-rewrite-percentage 0 --dir "$dir" --daemonize no --logfile "$LOG/$peer-server.log" &
    SERVER_PID=$!
    local up=""
    for _ in $(seq 100); do
        if redis-cli -p "$port" ping 2>/dev/null | grep -q PONG; then up=1; break; fi
        sleep 0.1
    done
    if [[ -z $up ]]; then stop_server; not_run "$peer" "$durable" "redis-server did not start"; return 0; fi
    start_sampler "$SERVER_PID" "$RAW/$peer.rss"
    value=$(head -c 1024 /dev/zero | tr '\0' x)
    say "$peer: XADD pipelined x100, 8 connections, ~${RUN_SECONDS}s"
    local batch single replay lens per_call
    batch=$(rb_timed "$port" 50000 -c 8 -P 100 XADD 's:__rand_int__' '*' d "$value")
    # Entries per XRANGE call: the average over the 4 keys of min(10000, XLEN).
    lens=$(for k in 0 1 2 3; do redis-cli -p "$port" XLEN "s:00000000000$k"; done | tr '\n' ' ')
    per_call=$(python3 -c "l=[int(x) for x in '$lens'.split()]; print(sum(min(10000,x) for x in l)/len(l))")
    say "$peer: XRANGE COUNT 10000, 1 connection, ~${RUN_SECONDS}s"
    replay=$(rb_timed "$port" 20 -c 1 -P 1 XRANGE 's:__rand_int__' - + COUNT 10000)
    say "$peer: XADD one at a time, 8 connections, ~${RUN_SECONDS}s"
    single=$(rb_timed "$port" 5000 -c 8 -P 1 XADD 's:__rand_int__' '*' d "$value")
    stop_server
    jq -n --arg peer "$peer" --arg durable "$durable" --argjson rss "$(cat "$RAW/$peer.rss")" \
        --arg batch "$batch" --arg single "$single" --arg replay "$replay" --argjson per_call "$per_call" \
        --arg lens "$lens" \
        '{peer: $peer, durable: $durable, status: "ok", client: "redis-benchmark (approximation)",
          max_rss_kib: $rss.max_rss_kib, max_anon_kib: $rss.max_anon_kib,
          batch: {records_per_second: ($batch | split(",")[0] | tonumber), p99_ms: ($batch | split(",")[1] | tonumber)},
          single: {records_per_second: ($single | split(",")[0] | tonumber), p99_ms: ($single | split(",")[1] | tonumber)},
          replay: {calls_per_second: ($replay | split(",")[0] | tonumber), entries_per_call: $per_call,
                   records_per_second: (($replay | split(",")[0] | tonumber) * $per_call)},
          stream_lengths_after_batch: ($lens | split(" ") | map(select(. != "") | tonumber))}' >"$RAW/$peer.json"
}

# ---------------------------------------------------------------------------
# Run the peers named in PEERS, in order.

for tool in curl jq python3 node npm cargo; do
    command -v "$tool" >/dev/null || say "warning: $tool not found; peers that need it will not run"
done

i=0
IFS=, read -ra LIST <<<"$PEERS"
for peer in "${LIST[@]}"; do
    port=$((PORT_BASE + i * 2))
    i=$((i + 1))
    case $peer in
    shardlog) peer_shardlog "$port" ;;
    kinesalite) peer_kinesalite "$port" ;;
    kinesis-local) peer_kinesis_local "$port" ;;
    ferrokinesis | ferrokinesis-state) peer_ferrokinesis "$port" "$peer" ;;
    redis-always) run_redis redis-always always "$port" ;;
    redis-everysec) run_redis redis-everysec everysec "$port" ;;
    *) say "unknown peer $peer (skipped)" ;;
    esac
done

# ---------------------------------------------------------------------------
# The table and the raw JSON.

MACHINE="$(machine_line "$CACHE" "$STAMP"), BENCH_SECONDS=$RUN_SECONDS"
NAME=$(results_name "$OUT_DIR" "$DATE")
MD=$OUT_DIR/$NAME.md
JSON=$OUT_DIR/$NAME.json
# Rows in the order of PEERS.
FILES=()
for peer in "${LIST[@]}"; do [[ -f $RAW/$peer.json ]] && FILES+=("$RAW/$peer.json"); done
if ((${#FILES[@]} == 0)); then say "no peer ran (PEERS=$PEERS)"; exit 1; fi
jq -s --arg machine "$MACHINE" --arg seconds "$RUN_SECONDS" \
    '{machine: $machine, seconds: ($seconds | tonumber), peers: .}' "${FILES[@]}" >"$JSON"

python3 - "$JSON" >"$MD" <<'EOF'
import json, sys

doc = json.load(open(sys.argv[1]))

def phase(run, name):
    # A `shardlog bench --json` result: {"phases": [...], "verify": {...}}.
    if not isinstance(run, dict):
        return None
    for p in run.get("phases") or []:
        if p.get("phase") == name:
            return p
    return None

def figures(p):
    """batch rec/s, single rec/s, single p99 ms, replay rec/s, notes."""
    notes = []
    if p["client"].startswith("redis"):
        b, s, r = p["batch"], p["single"], p["replay"]
        return (b["records_per_second"], s["records_per_second"], s["p99_ms"],
                r["records_per_second"], "redis-benchmark; replay = XRANGE COUNT 10000 of the stream heads")
    out = []
    for key in ("batch", "single"):
        run = p.get(key) or {}
        put, rep = phase(run, "put"), phase(run, "replay")
        if "error" in run:
            notes.append(f"{key}: {run['error'][:120]}")
        v = run.get("verify")
        if v is not None and v.get("ok") is not True:
            notes.append(f"{key}: verify failed ({v.get('missing')} missing, {v.get('duplicated')} duplicated, "
                         f"{v.get('damaged')} damaged of {v.get('acknowledged')})")
        elif v is not None:
            notes.append(f"{key}: {v['acknowledged']:,} verified")
        if put and put.get("failed_records"):
            notes.append(f"{key}: {put['failed_records']:,} puts refused")
        cap = (p.get("record_caps") or {}).get(key)
        if cap and put and put["records"] + put.get("failed_records", 0) >= cap:
            notes.append(f"{key}: stopped at its cap of {cap:,} records")
        out.append((put, rep))
    (bput, brep), (sput, _) = out
    rate = lambda ph: ph["records_per_second"] if ph else None
    p99 = sput["latency_us"]["p99"] / 1000 if sput else None
    return rate(bput), rate(sput), p99, rate(brep), "; ".join(notes)

rows = []
base = None
for p in doc["peers"]:
    if p.get("status") != "ok":
        rows.append((p, None))
        continue
    f = figures(p)
    rows.append((p, f))
    if p["peer"] == "shardlog":
        base = f

def num(x):
    return "—" if x is None else f"{x:,.0f}"

def ratio(x, i):
    if x is None or base is None or not base[i]:
        return "—"
    return f"{x / base[i]:.2f}×"

print(f"Machine: {doc['machine']}")
print()
print("| server | durable? | PutRecords ×100 rec/s | ratio | PutRecord ×1 rec/s (p99 ms) | ratio | replay rec/s | ratio | max RSS MiB (anon) | notes |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|---|")
for p, f in rows:
    if f is None:
        print(f"| {p['peer']} | {p.get('durable', '')} | {p['status']} | | | | | | | |")
        continue
    b, s, p99, r, notes = f
    single = "—" if s is None else f"{num(s)} ({p99:.1f})" if p99 is not None else num(s)
    rss, anon = (p.get("max_rss_kib") or 0) / 1024, (p.get("max_anon_kib") or 0) / 1024
    print(f"| {p['peer']} | {p['durable']} | {num(b)} | {ratio(b, 0)} | {single} | {ratio(s, 1)} | "
          f"{num(r)} | {ratio(r, 3)} | {rss:,.0f} ({anon:,.0f}) | {notes} |")
print()
print("Client and server share the machine's CPUs. Kinesis servers are driven by `shardlog bench`; "
      "Redis by redis-benchmark with XADD/XRANGE (an approximation of the same work, not the same client). "
      "Ratios are to Shardlog's figure in the same column. Max RSS is VmRSS, which counts mapped file pages "
      "(Shardlog's segments, read through maps during replay); in parentheses RssAnon, the process's own memory. "
      "Produced by `bash benches/peers/run.sh`.")
EOF

# The peers' data (GBs after a long run) is not kept.
rm -rf "$RAW" "$CACHE/data"
cat "$MD"
say "wrote $MD and $JSON"

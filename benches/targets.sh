#!/usr/bin/env bash
# Every performance target of issue 8, measured in one run on this machine,
# each beside the raw limit of the same disk measured in the same run.
#
#   1. raw limits (`rawdisk DIR limits SECONDS`): 1 MiB and 400 KiB writes
#      + fdatasync into allocated space, 4 files in parallel; 1 KiB appends
#      + fdatasync, 4 files in parallel, with latency percentiles;
#   2. the embedded engine (`embedded_probe`, 16 writers of 100 × 1 KiB over
#      4 shards, recycled segment files, PAIRS runs, each with IN_FLIGHT and
#      then IN_FLIGHT_DEEP puts in flight per writer), each run followed by
#      the raw limits again, so that each run has its own figure beside it
#      (a virtual disk's rate drifts from one minute to the next);
#   3. a `shardlog serve` with its defaults (`--sync always`: every
#      acknowledged record fdatasync'ed), driven by `shardlog bench` (1 KiB
#      records, 4 shards, each run verifying that every acknowledged record
#      reads back once and intact): PutRecords ×100 and its replay with
#      GetRecords Limit 10,000, PutRecord ×1 at 8 and at 64 connections, the
#      server's memory sampled throughout; then PutRecord ×1 at 8 connections
#      again with `--journal true` (not the default), for comparison, and
#      with `--sync never` (no fsync at all: the ceiling of the server's
#      request path on this machine, beside the durable figure); each run
#      with the machine's CPU busy share and the server's CPU time; then
#      the HTTP floor (`http_floor DIR PORT group`: the same HTTP stack, a
#      `pwrite` of each body and a group `fdatasync`, nothing else), the
#      most any durable server reaches with this client on this machine;
#   4. a server idle with IDLE_SHARDS shards (streams of 100 shards), its
#      memory after they were created and after a restart;
#   5. open after a crash: `open_probe fill` writes OPEN_GIB GiB of 1 KiB
#      records into OPEN_SHARDS shards and aborts (no clean stop, as after
#      `kill -9`); then OPEN_RUNS times a server is started on that
#      directory, the time until its first PutRecord is acknowledged is
#      taken, and the server is killed with SIGKILL; one more run after
#      dropping the page cache when this process may (root).
#
# Output: one Markdown table on standard output and in
# benches/targets/results-<date>.md (-2, -3, ... for later runs the same
# day), every raw figure in results-<date>.json.
#
# Usage: bash benches/targets.sh
# Environment:
#   SECONDS or BENCH_SECONDS  seconds of each put run, probe run and raw
#                             bandwidth row (default 8)
#   PAIRS        embedded probe runs, each with its raw figures (default 3)
#   IN_FLIGHT    puts each embedded writer keeps in flight (default 4;
#                1 is blocking writers)
#   IN_FLIGHT_DEEP  the same for a second probe run in each pair, a
#                producer that pipelines deeper (default 16; 0 leaves it out)
#   IDLE_SHARDS  shards of the idle server (default 1000)
#   OPEN_GIB, OPEN_SHARDS, OPEN_RUNS  the crash-open data set (default 10
#                GiB in 100 shards, 3 warm runs)
#   SKIP         comma-separated parts to leave out: embedded, server,
#                journal, floor, idle, open
#   WORK         scratch data directories (default benches/targets/.work,
#                git-ignored; on the disk measured; emptied at the end)
#   OUT_DIR      where the results files go (default benches/targets)
#   PORT         loopback port of the servers (default 14800)
#   CARGO_TARGET_DIR  where the release binaries are (built first)

# Read SECONDS before anything else: when it does not come from the
# environment it counts the seconds since the shell started (0 here).
RUN_SECONDS=${BENCH_SECONDS:-$SECONDS}
set -euo pipefail
if [[ ! $RUN_SECONDS =~ ^[0-9]+$ ]] || ((RUN_SECONDS < 1)); then RUN_SECONDS=8; fi

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
OUT_DIR=${OUT_DIR:-$HERE/targets}
WORK=${WORK:-$HERE/targets/.work}
PAIRS=${PAIRS:-3}
IN_FLIGHT=${IN_FLIGHT:-4}
IN_FLIGHT_DEEP=${IN_FLIGHT_DEEP:-16}
IDLE_SHARDS=${IDLE_SHARDS:-1000}
OPEN_GIB=${OPEN_GIB:-10}
OPEN_SHARDS=${OPEN_SHARDS:-100}
OPEN_RUNS=${OPEN_RUNS:-3}
SKIP=,${SKIP:-},
PORT=${PORT:-14800}
URL=http://127.0.0.1:$PORT
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
BENCH_TIMEOUT=$((RUN_SECONDS * 4 + 300))

DATE=$(date -u +%F)
STAMP=$(date -u +%FT%TZ)
mkdir -p "$OUT_DIR" "$WORK"
RAW=$(mktemp -d "$WORK/raw.XXXXXX")
LOG=$WORK/logs
mkdir -p "$LOG"

say() { printf '== %s\n' "$*" >&2; }
skipped() { [[ $SKIP == *",$1,"* ]]; }

SERVER_PID=""
SAMPLER_PID=""
# On any exit: stop what this script started and remove the scratch data
# (the 10 GiB of the open test among it); the logs stay in WORK/logs.
cleanup() {
    [[ -n $SAMPLER_PID ]] && kill "$SAMPLER_PID" 2>/dev/null || true
    [[ -n $SERVER_PID ]] && kill -9 "$SERVER_PID" 2>/dev/null || true
    [[ -n $SERVER_PID ]] && wait "$SERVER_PID" 2>/dev/null || true
    rm -rf "$WORK/server" "$WORK/floor" "$WORK/idle" "$WORK/open" "$RAW"
    return 0
}
trap cleanup EXIT
# shellcheck source=lib.sh
source "$HERE/lib.sh"

say "building the release binaries"
(cd "$ROOT" && cargo build --release -p shardlog -p shardlog-benches --bins) >"$LOG/build.log" 2>&1 ||
    { echo "build failed: see $LOG/build.log" >&2; exit 1; }

# raw_limits OUT: the raw rows for RUN_SECONDS each, as one JSON object.
raw_limits() {
    "$BIN/rawdisk" "$WORK" limits "$RUN_SECONDS" 2>>"$LOG/rawdisk.err" | grep '^{' | tail -1 >"$1" || true
}

# start_server DIR ARGS...: a server on PORT with a fresh log; waits until
# it answers.
start_server() {
    local dir=$1
    shift
    env -u SHARDLOG_CONFIG "$BIN/shardlog" serve --data-dir "$dir" --listen "127.0.0.1:$PORT" "$@" \
        >>"$LOG/server.log" 2>&1 &
    SERVER_PID=$!
    wait_kinesis "$URL" "$SERVER_PID" || { echo "the server did not start: see $LOG/server.log" >&2; exit 1; }
}

# cpu_snapshot: "TOTAL IDLE SERVER" in clock ticks: the machine's time in
# all (every core, /proc/stat without the guest columns), its idle and
# I/O-wait time, and the server's own user and system time.
cpu_snapshot() {
    local srv
    srv=$(awk '{print $14 + $15}' "/proc/$SERVER_PID/stat" 2>/dev/null || echo 0)
    # printf: mawk prints large sums in exponent form, which bash cannot use.
    awk -v srv="$srv" '/^cpu / {t = 0; for (i = 2; i <= 9; i++) t += $i; printf "%.0f %.0f %.0f\n", t, $5 + $6, srv}' /proc/stat
}

# bench OUT ARGS...: one `shardlog bench --json` run against the server,
# with what the CPU did meanwhile (whole run, replay included): the share
# of the machine's cores busy, and the server's CPU seconds.
bench() {
    local out=$1 t0 i0 s0 t1 i1 s1
    shift
    read -r t0 i0 s0 < <(cpu_snapshot)
    timeout "$BENCH_TIMEOUT" "$BIN/shardlog" --endpoint "$URL" --json bench \
        --shards 4 --record-bytes 1024 --seconds "$RUN_SECONDS" "$@" 2>>"$LOG/bench.err" |
        grep '^{' | tail -1 >"$out" || true
    read -r t1 i1 s1 < <(cpu_snapshot)
    if [[ -s $out ]]; then
        jq --argjson busy "$(jq -n --argjson t $((t1 - t0)) --argjson i $((i1 - i0)) 'if $t > 0 then 1 - $i / $t else null end')" \
            --argjson srv "$(jq -n --argjson s $((s1 - s0)) --argjson hz "$(getconf CLK_TCK)" '$s / $hz')" \
            '. + {cpu: {machine_busy_share: $busy, server_cpu_seconds: $srv}}' "$out" >"$out.cpu" && mv "$out.cpu" "$out"
    else
        echo '{"error": "no result (see logs/bench.err)"}' >"$out"
    fi
}

# ---------------------------------------------------------------------------
say "raw limits of the disk under $WORK (${RUN_SECONDS} s a row)"
raw_limits "$RAW/raw-0.json"

if ! skipped embedded; then
    for i in $(seq "$PAIRS"); do
        say "embedded engine, run $i of $PAIRS, then the raw limits again"
        SHARDLOG_IN_FLIGHT=$IN_FLIGHT SHARDLOG_PROBE_JSON=1 "$BIN/embedded_probe" "$WORK" 16 4 "$RUN_SECONDS" keep 2 2048 \
            2>>"$LOG/embedded.err" | grep '^{' | tail -1 >"$RAW/embedded-$i.json" || true
        if ((IN_FLIGHT_DEEP > 0)); then
            SHARDLOG_IN_FLIGHT=$IN_FLIGHT_DEEP SHARDLOG_PROBE_JSON=1 "$BIN/embedded_probe" "$WORK" 16 4 "$RUN_SECONDS" keep 2 2048 \
                2>>"$LOG/embedded.err" | grep '^{' | tail -1 >"$RAW/embedded-deep-$i.json" || true
        fi
        raw_limits "$RAW/raw-$i.json"
    done
fi

if ! skipped server; then
    say "server with its defaults: PutRecords x100 (and replay), PutRecord x1 at 8 and 64 connections"
    rm -rf "$WORK/server"
    start_server "$WORK/server"
    start_sampler "$SERVER_PID" "$RAW/server.rss"
    bench "$RAW/batch.json" --stream t-batch --connections 8 --batch 100 --mode both
    bench "$RAW/single8.json" --stream t-single8 --connections 8 --batch 1 --mode both
    bench "$RAW/single64.json" --stream t-single64 --connections 64 --batch 1 --mode both
    stop_server
    if ! skipped journal; then
        say "server with --journal true: PutRecord x1 at 8 connections"
        rm -rf "$WORK/server"
        start_server "$WORK/server" --journal true
        bench "$RAW/single8-journal.json" --stream t-single8j --connections 8 --batch 1 --mode both
        stop_server
    fi
    # The ceiling of this server's request path on this machine: the same
    # run with no fsync at all. No durable configuration can pass it.
    say "server with --sync never: PutRecord x1 at 8 connections (the ceiling without any fsync)"
    rm -rf "$WORK/server"
    start_server "$WORK/server" --sync never
    bench "$RAW/single8-nosync.json" --stream t-single8n --connections 8 --batch 1 --mode both
    stop_server
    rm -rf "$WORK/server"
fi

# The reference for the single-record rows: `http_floor` answers PutRecord
# after nothing but the same HTTP stack, a `pwrite` of the body and a group
# `fdatasync` (src/bin/http_floor.rs).
if ! skipped floor; then
    say "HTTP floor (HTTP + pwrite + group fdatasync, nothing else): PutRecord x1 at 8 connections"
    rm -rf "$WORK/floor"
    "$BIN/http_floor" "$WORK/floor" "$PORT" group 512 >>"$LOG/floor.log" 2>&1 &
    SERVER_PID=$!
    wait_kinesis "$URL" "$SERVER_PID" || { echo "the HTTP floor did not start: see $LOG/floor.log" >&2; exit 1; }
    bench "$RAW/single8-floor.json" --stream t-floor --connections 8 --batch 1 --mode put
    stop_server
    rm -rf "$WORK/floor"
fi

if ! skipped idle; then
    say "server idle with $IDLE_SHARDS shards"
    rm -rf "$WORK/idle"
    start_server "$WORK/idle"
    # Streams of 100 shards, and one of the rest.
    for s in $(seq $((IDLE_SHARDS / 100))); do
        "$BIN/shardlog" --endpoint "$URL" stream create "idle-$s" --shards 100 >>"$LOG/idle.log" 2>&1
    done
    if ((IDLE_SHARDS % 100 > 0)); then
        "$BIN/shardlog" --endpoint "$URL" stream create idle-rest --shards $((IDLE_SHARDS % 100)) >>"$LOG/idle.log" 2>&1
    fi
    sleep 5
    read -r idle_rss idle_anon < <(rss_tree_kib "$SERVER_PID")
    stop_server
    t0=$(date +%s%N)
    start_server "$WORK/idle"
    reopen_ms=$((($(date +%s%N) - t0) / 1000000))
    sleep 5
    read -r reopened_rss reopened_anon < <(rss_tree_kib "$SERVER_PID")
    stop_server
    rm -rf "$WORK/idle"
    jq -n --argjson shards "$IDLE_SHARDS" --argjson a "$idle_rss" --argjson b "$idle_anon" \
        --argjson c "$reopened_rss" --argjson d "$reopened_anon" --argjson ms "$reopen_ms" \
        '{shards: $shards, created: {rss_kib: $a, anon_kib: $b},
          restarted: {rss_kib: $c, anon_kib: $d, answering_after_ms: $ms}}' >"$RAW/idle.json"
fi

# first_put_ms: starts a server on WORK/open, times it until a PutRecord
# to the filled stream is acknowledged (200), then kills it with SIGKILL.
# Sets FIRST_PUT_MS (null when no put was acknowledged within 60 s). Not
# run in a subshell, so that the EXIT trap knows the server's PID.
first_put_ms() {
    local t0 code="" now
    t0=$(date +%s%N)
    env -u SHARDLOG_CONFIG "$BIN/shardlog" serve --data-dir "$WORK/open" --listen "127.0.0.1:$PORT" \
        >>"$LOG/open-server.log" 2>&1 &
    SERVER_PID=$!
    while kill -0 "$SERVER_PID" 2>/dev/null; do
        code=$(kinesis_post "$URL" PutRecord '{"StreamName":"big","PartitionKey":"after-crash","Data":"eA=="}' -o /dev/null -w '%{http_code}' || true)
        [[ $code == 200 ]] && break
        now=$(date +%s%N)
        (((now - t0) / 1000000 > 60000)) && break
        sleep 0.005
    done
    local ms=$((($(date +%s%N) - t0) / 1000000))
    kill -9 "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
    if [[ $code == 200 ]]; then FIRST_PUT_MS=$ms; else FIRST_PUT_MS=null; fi
}

if ! skipped open; then
    say "open after a crash: filling $OPEN_GIB GiB into $OPEN_SHARDS shards (aborts at the end, as kill -9)"
    rm -rf "$WORK/open"
    fill=$("$BIN/open_probe" fill "$WORK/open" "$OPEN_GIB" "$OPEN_SHARDS" 2>>"$LOG/open.err" | grep '^filled' || true)
    warm=()
    for i in $(seq "$OPEN_RUNS"); do
        say "open after a crash, run $i of $OPEN_RUNS (warm page cache)"
        first_put_ms
        warm+=("$FIRST_PUT_MS")
    done
    cold=null cold_attempted=false
    if sync && echo 3 2>/dev/null >/proc/sys/vm/drop_caches; then
        say "open after a crash, page cache dropped"
        first_put_ms
        cold=$FIRST_PUT_MS cold_attempted=true
    fi
    du_kib=$(du -sk "$WORK/open" | cut -f1)
    rm -rf "$WORK/open"
    jq -n --arg fill "$fill" --argjson gib "$OPEN_GIB" --argjson shards "$OPEN_SHARDS" --argjson kib "$du_kib" \
        --argjson cold "$cold" --argjson warm "[$(IFS=,; echo "${warm[*]}")]" --argjson tried "$cold_attempted" \
        '{fill: $fill, gib: $gib, shards: $shards, directory_kib: $kib, cold_attempted: $tried,
          first_put_acknowledged_ms: {warm: $warm, cold: $cold}}' >"$RAW/open.json"
fi

# ---------------------------------------------------------------------------
# The results: every raw file in one JSON document, then the table from it.
NAME=$(results_name "$OUT_DIR" "$DATE")
JSON=$OUT_DIR/$NAME.json
MD=$OUT_DIR/$NAME.md
MACHINE="$(machine_line "$WORK" "$STAMP"), SECONDS=$RUN_SECONDS, commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
slurp() { if [[ -s $1 ]]; then cat "$1"; else echo null; fi; }
{
    echo "{\"machine\": $(jq -Rn --arg m "$MACHINE" '$m'), \"seconds\": $RUN_SECONDS,"
    # raw[0] was measured first; raw[i] right after embedded[i - 1].
    echo "\"raw\": [$(for i in $(seq 0 "$PAIRS"); do [[ -e $RAW/raw-$i.json ]] && { slurp "$RAW/raw-$i.json"; echo ,; }; done | sed '$d')],"
    echo "\"embedded\": [$(for i in $(seq "$PAIRS"); do [[ -e $RAW/embedded-$i.json ]] && { slurp "$RAW/embedded-$i.json"; echo ,; }; done | sed '$d')],"
    echo "\"embedded_deep\": [$(for i in $(seq "$PAIRS"); do [[ -e $RAW/embedded-deep-$i.json ]] && { slurp "$RAW/embedded-deep-$i.json"; echo ,; }; done | sed '$d')],"
    for part in batch single8 single64 single8-journal single8-nosync single8-floor idle open; do
        echo "\"$part\": $(slurp "$RAW/$part.json"),"
    done
    echo "\"server_memory\": $(slurp "$RAW/server.rss")}"
} | jq . >"$JSON"

jq -r -f "$HERE/targets.jq" "$JSON" | tee "$MD"
echo
say "results: $MD and $JSON"

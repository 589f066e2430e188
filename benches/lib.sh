# Shell functions shared by benches/peers/run.sh and benches/targets.sh:
# sampling a server's memory, stopping it, waiting for its Kinesis API.
# Sourced, not run. The caller sets SERVER_PID and SAMPLER_PID (empty when
# none) and stops both on exit.

# Memory: VmRSS and RssAnon of a process and all its descendants (node and
# redis may fork or spawn), each summed, in KiB: "RSS ANON". VmRSS counts the
# pages of mapped files too (Shardlog reads its segments through maps, so a
# replay raises its VmRSS with page cache that the kernel can drop);
# RssAnon is the process's own memory.
rss_tree_kib() {
    local pid=$1 rss=0 anon=0 kids child r a
    read -r r a < <(awk '/^VmRSS:/ {r=$2} /^RssAnon:/ {a=$2} END {print r+0, a+0}' "/proc/$pid/status" 2>/dev/null || echo 0 0)
    rss=$((rss + ${r:-0})) anon=$((anon + ${a:-0}))
    kids=$(cat /proc/"$pid"/task/*/children 2>/dev/null || true)
    for child in $kids; do
        read -r r a < <(rss_tree_kib "$child")
        rss=$((rss + r)) anon=$((anon + a))
    done
    echo "$rss $anon"
}

# Samples rss_tree_kib every 200 ms until stopped; FILE holds the maxima so
# far, as JSON.
start_sampler() {
    local pid=$1 file=$2
    echo '{"max_rss_kib": 0, "max_anon_kib": 0}' >"$file"
    (
        max=0 max_anon=0
        while kill -0 "$pid" 2>/dev/null; do
            read -r now anon < <(rss_tree_kib "$pid")
            if ((now > max || anon > max_anon)); then
                ((now > max)) && max=$now
                ((anon > max_anon)) && max_anon=$anon
                echo "{\"max_rss_kib\": $max, \"max_anon_kib\": $max_anon}" >"$file"
            fi
            sleep 0.2
        done
    ) &
    SAMPLER_PID=$!
}

stop_server() {
    if [[ -n $SAMPLER_PID ]]; then kill "$SAMPLER_PID" 2>/dev/null || true; wait "$SAMPLER_PID" 2>/dev/null || true; fi
    SAMPLER_PID=""
    if [[ -n $SERVER_PID ]]; then
        kill "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    SERVER_PID=""
}

# kinesis_post URL OPERATION BODY [CURL ARGS...]: one Kinesis JSON call,
# unsigned (the local servers measured here do not check signatures), with
# a 5 s limit; prints the answer (or what CURL ARGS ask for).
kinesis_post() {
    local url=$1 op=$2 body=$3
    shift 3
    curl -s -m 5 -X POST "$url" -H "x-amz-target: Kinesis_20131202.$op" \
        -H 'content-type: application/x-amz-json-1.1' -H 'x-amz-date: 20250101T000000Z' \
        -H 'authorization: AWS4-HMAC-SHA256 Credential=shardlog/20250101/us-east-1/kinesis/aws4_request, SignedHeaders=host, Signature=unsigned' \
        -d "$body" "$@" 2>/dev/null
}

# Waits up to 60 s until the Kinesis API at URL answers ListStreams (with any
# JSON); fails if the server died first.
wait_kinesis() {
    local url=$1 pid=$2
    for _ in $(seq 600); do
        kill -0 "$pid" 2>/dev/null || return 1
        if kinesis_post "$url" ListStreams '{}' | grep -q '{'; then
            return 0
        fi
        sleep 0.1
    done
    return 1
}


# One line on the machine, for a results file: when the run started
# (STAMP), cores, memory, kernel, and the file system and disk under DIR.
machine_line() {
    local dir=$1 stamp=$2 dev fs info
    dev=$(df --output=source "$dir" | tail -1)
    fs=$(df --output=fstype "$dir" | tail -1)
    info=$(lsblk -dno NAME,SIZE,ROTA,MODEL "$dev" 2>/dev/null | awk '{$3 = "rota=" $3; print}' || true)
    echo "started $stamp, nproc $(nproc), $(awk '/MemTotal/ {printf "%.0f GiB RAM", $2/1048576}' /proc/meminfo), Linux $(uname -r), disk: $fs on $dev (${info:-unknown})"
}

# A results file's name without extension, results-DATE, or results-DATE-2,
# -3, ... when an earlier run of the same day has its files in OUT_DIR:
# the results of earlier runs are cited by docs and must stay as they were.
results_name() {
    local out_dir=$1 date=$2 name n=1
    name=results-$date
    while [[ -e $out_dir/$name.md || -e $out_dir/$name.json ]]; do
        n=$((n + 1))
        name=results-$date-$n
    done
    echo "$name"
}

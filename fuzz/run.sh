#!/usr/bin/env bash
# Runs every cargo-fuzz target of shardlog for SECONDS each (default 10).
#
#   fuzz/run.sh            # 10 s per target (CI)
#   fuzz/run.sh 3600       # an hour per target
#   TARGETS="request_cbor segment_log" fuzz/run.sh 600
#
# Needs a nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`);
# without either it says so and exits 0, so CI on a stable-only machine
# skips it. The stable test tests/tests/fuzz_corpus.rs runs the same target
# bodies over the seed corpus in every `cargo test`.
#
# New inputs go to fuzz/corpus-work/<target>/ (not checked in); the seed
# corpus in fuzz/corpus/<target>/ is only read. A crash leaves its input in
# fuzz/artifacts/<target>/ and makes this script exit 1.
set -euo pipefail

seconds="${1:-10}"
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"

# Asked of rustup's list: a recent rustup would download a missing
# toolchain the first time `cargo +nightly` names it.
if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    echo "fuzz/run.sh: SKIPPED: no nightly toolchain (rustup toolchain install nightly)"
    exit 0
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "fuzz/run.sh: SKIPPED: cargo-fuzz is not installed (cargo install cargo-fuzz)"
    exit 0
fi

all_targets="segment_frame segment_header segment_log index_sidecar stream_metadata iterator_token request_json request_cbor"
targets="${TARGETS:-$all_targets}"
jobs="${CARGO_BUILD_JOBS:-$(nproc 2>/dev/null || echo 2)}"

# -a: debug assertions and overflow checks, so arithmetic overflow is a crash.
echo "fuzz/run.sh: building targets (nightly, debug assertions on)"
if ! CARGO_BUILD_JOBS="$jobs" cargo +nightly fuzz build -a; then
    # The same target bodies are compiled and run on stable by
    # tests/tests/fuzz_corpus.rs; a nightly toolchain that cannot build the
    # instrumented binaries here is an environment problem, said loudly.
    echo "fuzz/run.sh: SKIPPED: the nightly toolchain could not build the fuzz targets (see above)"
    exit 0
fi

failed=""
summary=""
for t in $targets; do
    mkdir -p "corpus-work/$t" "artifacts/$t"
    log="$(mktemp)"
    echo "fuzz/run.sh: $t for ${seconds}s"
    if CARGO_BUILD_JOBS="$jobs" cargo +nightly fuzz run -a "$t" "corpus-work/$t" "corpus/$t" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=512 \
        -max_len=8192 -print_final_stats=1 >"$log" 2>&1; then
        status=ok
    else
        status=CRASH
        failed="$failed $t"
        grep -m 1 -A 2 'panicked at' "$log" || true
        grep -E 'SUMMARY|Test unit written|Reproduce|cargo fuzz (run|tmin)' "$log" || tail -n 40 "$log"
    fi
    execs="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')"
    rate="$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')"
    cov="$(grep -o 'cov: [0-9]*' "$log" | tail -n 1 | grep -o '[0-9]*' || echo '?')"
    summary="$summary$(printf '%-16s %6ss %12s execs %8s exec/s cov %6s %s' "$t" "$seconds" "$execs" "$rate" "$cov" "$status")"$'\n'
    rm -f "$log"
done

echo
echo "fuzz/run.sh: summary"
printf '%s' "$summary"
if [ -n "$failed" ]; then
    echo "fuzz/run.sh: FAILED:$failed (inputs in fuzz/artifacts/)"
    exit 1
fi
echo "fuzz/run.sh: all targets ran without a crash"

#!/usr/bin/env bash
# Chunker throughput: borg 1.4.5's C chunker against ours, on the same random file, in the same
# run, alternating (so both see the same machine load).
#
#   bash compat/bench_chunker.sh            # 256 MiB, 5 rounds, file in /dev/shm
#   SIZE_MIB=64 ROUNDS=3 BENCH_DIR=/var/tmp bash compat/bench_chunker.sh
#   CHUNK_BENCH=path/to/chunk_bench PARAMS="default fixed,65536" bash compat/bench_chunker.sh
#
# Reports the median of wall-clock and of process CPU throughput (CPU time is the fairer
# figure when other work shares the cores). The file is read once before each run so it is
# in the page cache (borg drops pages behind itself with posix_fadvise).
set -euo pipefail
cd "$(dirname "$0")/.."

SIZE_MIB=${SIZE_MIB:-256}
ROUNDS=${ROUNDS:-5}
BENCH_DIR=${BENCH_DIR:-/dev/shm}
PY=${BORG_PYTHON:-.compat-env/borg-1.4.5/bin/python}
PARAMS=${PARAMS:-"default buzhash,15,19,17,4095 fixed,4194304"}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}

[ -x "$PY" ] || { echo "missing $PY: run compat/setup.sh" >&2; exit 1; }
if [ -n "${CHUNK_BENCH:-}" ]; then
    OURS=$CHUNK_BENCH # a prebuilt examples/chunk_bench
else
    cargo build --quiet --release --example chunk_bench
    OURS="$CARGO_TARGET_DIR/release/examples/chunk_bench"
fi

FILE=$(mktemp -p "$BENCH_DIR" chunker-bench.XXXXXX)
trap 'rm -f "$FILE"' EXIT
head -c $((SIZE_MIB << 20)) /dev/urandom >"$FILE"

# field NAME LINE: the value of NAME=... in a result line.
field() { tr ' ' '\n' <<<"$2" | sed -n "s/^$1=//p"; }

median() { sort -g | awk '{v[NR]=$1} END {print (NR%2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }

printf '%-24s %12s %12s %7s   %12s %12s %7s\n' params "borg MB/s" "ours MB/s" ratio "borg cpuMB/s" "ours cpuMB/s" ratio
for p in $PARAMS; do
    bw=() ow=() bc=() oc=()
    for ((r = 0; r < ROUNDS; r++)); do
        cat "$FILE" >/dev/null
        b=$("$PY" compat/py/bench_chunker.py "$FILE" "$p")
        cat "$FILE" >/dev/null
        o=$("$OURS" "$FILE" "$p")
        [ "$(field chunks "$b")" = "$(field chunks "$o")" ] || {
            echo "chunk counts differ for $p: borg: $b / ours: $o" >&2
            exit 1
        }
        bytes=$(field bytes "$o")
        bw+=("$(awk -v n="$bytes" -v s="$(field seconds "$b")" 'BEGIN {print n/s/1e6}')")
        ow+=("$(awk -v n="$bytes" -v s="$(field seconds "$o")" 'BEGIN {print n/s/1e6}')")
        bc+=("$(awk -v n="$bytes" -v s="$(field cpu "$b")" 'BEGIN {print n/s/1e6}')")
        oc+=("$(awk -v n="$bytes" -v s="$(field cpu "$o")" 'BEGIN {print n/s/1e6}')")
    done
    mbw=$(printf '%s\n' "${bw[@]}" | median)
    mow=$(printf '%s\n' "${ow[@]}" | median)
    mbc=$(printf '%s\n' "${bc[@]}" | median)
    moc=$(printf '%s\n' "${oc[@]}" | median)
    awk -v p="$p" -v bw="$mbw" -v ow="$mow" -v bc="$mbc" -v oc="$moc" \
        'BEGIN {printf "%-24s %12.0f %12.0f %6.2fx   %12.0f %12.0f %6.2fx\n", p, bw, ow, ow/bw, bc, oc, oc/bc}'
done
echo "($SIZE_MIB MiB random data in $BENCH_DIR, median of $ROUNDS alternating rounds, $(nproc) cpus, load $(cut -d' ' -f1-3 /proc/loadavg))"

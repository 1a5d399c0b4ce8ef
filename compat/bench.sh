#!/usr/bin/env bash
# proxborg-native against borg 1.4.5 on the same data, with the same settings, in one run,
# alternating the two programs (so both see the same machine load), and a table of wall
# time, MB/s, speed-up (borg's time / ours), peak RSS and stored size per scenario:
#
#   first   first backup of a generated tree (incompressible files of many sizes, a text
#           corpus, many small files, a sparse disk image), per compression
#   rerun   the same tree again into the same repository (files cache hits)
#   stdin   a stream of half the scale read from stdin (`create REPO::A -`)
#   image   one image file of the full scale (random, text and zero extents)
#   remote  the first backup into a repository on 127.0.0.1 over ssh (a private sshd on a
#           free port; `borg serve` of borg 1.4.5 on the server side for both programs)
#   chunker borg's C buzhash chunker (its Python module, as `create` drives it) against
#           ours on one thread and on all threads: the largest random file of the tree,
#           default parameters (`benchmark chunk`, hidden, prints the same line)
#   ceiling ours only: the per-chunk work of `create` (chunk, id, dedup, compress, encrypt,
#           MAC, CRC) on the tree held in memory, on all cores, without any I/O
#           (`benchmark pipeline`, hidden): what the primitives allow; "first" is set
#           against it
#
# Not part of the test suite (a full run takes 10-20 minutes). Usage:
#
#   bash compat/bench.sh                 # 2 GiB scale, 3 rounds, medians
#   bash compat/bench.sh --smoke         # ~50 MB, 1 round: checks that everything runs
#   SCALE_MIB=8192 ROUNDS=1 SCENARIOS="first" bash compat/bench.sh   # RSS as data grows
#
# Environment: BENCH_DIR (data set; default /var/tmp/proxborg-bench, reused while its
# parameters match), REPO_DIR (repositories; default /dev/shm), SCALE_MIB, ROUNDS, SEED,
# CHUNK_REPS (chunker runs per program and round; default 5),
# SCENARIOS (subset of "chunker ceiling first rerun stdin image remote"), COMPRESSIONS (for "first"; the
# other scenarios use the first one), ENCRYPTION (default repokey-blake2), OURS (a prebuilt
# proxborg-native; default: cargo build --release), BORG (default .compat-env/borg-1.4.5/bin/borg).
# The page cache is warmed right before every timed run (borg drops what it read).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

SMOKE=0
if [ "${1:-}" = "--smoke" ]; then
    SMOKE=1
fi
if ((SMOKE)); then
    SCALE_MIB=${SCALE_MIB:-24}
    ROUNDS=${ROUNDS:-1}
    CHUNK_REPS=${CHUNK_REPS:-1}
else
    SCALE_MIB=${SCALE_MIB:-2048}
    ROUNDS=${ROUNDS:-3}
fi
SEED=${SEED:-1}
CHUNK_REPS=${CHUNK_REPS:-5}
SCENARIOS=${SCENARIOS:-"chunker ceiling first rerun stdin image remote"}
COMPRESSIONS=${COMPRESSIONS:-"lz4 none zstd,3"}
ENCRYPTION=${ENCRYPTION:-repokey-blake2}
BENCH_DIR=${BENCH_DIR:-/var/tmp/proxborg-bench}
REPO_DIR=${REPO_DIR:-/dev/shm}
BORG=${BORG:-$root/.compat-env/borg-1.4.5/bin/borg}
PY=${BENCH_PYTHON:-python3}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target}

[ -x "$BORG" ] || { echo "missing $BORG: run compat/setup.sh" >&2; exit 1; }
if [ -n "${OURS:-}" ]; then
    OURS=$(readlink -f "$OURS")
else
    cargo build --quiet --release --bin proxborg-native
    OURS="$CARGO_TARGET_DIR/release/proxborg-native"
fi
BORG_SERVE=$(readlink -f "$BORG")

data="$BENCH_DIR/data-$SCALE_MIB-$SEED"
mkdir -p "$data"
echo "generating the data set in $data (scale $SCALE_MIB MiB, seed $SEED; reused when present)" >&2
"$PY" compat/py/bench_data.py "$data" "$SCALE_MIB" "$SEED"

work=$(mktemp -d -p "$REPO_DIR" proxborg-bench.XXXXXX)
sshd_pid=
cleanup() {
    if [ -n "$sshd_pid" ]; then
        kill "$sshd_pid" 2>/dev/null || true
        wait "$sshd_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

export BORG_PASSPHRASE=bench
export BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes
export BORG_RELOCATED_REPO_ACCESS_IS_OK=yes
unset BORG_REPO BORG_NEW_PASSPHRASE BORG_RSH BORG_REMOTE_PATH

# bytes SPEC...: apparent size of files and trees.
bytes() { find "$@" -type f -printf '%s\n' | awk '{s += $1} END {printf "%.0f\n", s}'; }
# warm PATH...: read everything once so the timed run starts from the page cache.
warm() { find "$@" -type f -print0 | xargs -0 cat >/dev/null; }
# field NAME LINE
field() { tr ' ' '\n' <<<"$2" | sed -n "s/^$1=//p"; }
median() { sort -g | awk '{v[NR]=$1} END {print (NR%2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }

exe() { if [ "$1" = ours ]; then echo "$OURS"; else echo "$BORG"; fi; }

# Private sshd on a free loopback port; both programs reach `borg serve` through it.
start_sshd() {
    local d="$work/sshd"
    mkdir -p "$d/server-home" /run/sshd
    ssh-keygen -q -t ed25519 -N '' -f "$d/host_key"
    ssh-keygen -q -t ed25519 -N '' -f "$d/client_key"
    cp "$d/client_key.pub" "$d/authorized_keys"
    local port
    for _ in 1 2 3; do
        port=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
        cat >"$d/sshd_config" <<EOF
Port $port
ListenAddress 127.0.0.1
HostKey $d/host_key
PidFile $d/sshd.pid
AuthorizedKeysFile $d/authorized_keys
UsePAM no
StrictModes no
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
SetEnv BORG_BASE_DIR=$d/server-home
EOF
        /usr/sbin/sshd -D -f "$d/sshd_config" -E "$d/sshd.log" &
        sshd_pid=$!
        for _ in $(seq 100); do
            if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
                SSH_PORT=$port
                export BORG_RSH="ssh -i $d/client_key -o IdentitiesOnly=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o LogLevel=ERROR"
                export BORG_REMOTE_PATH=$BORG_SERVE
                return 0
            fi
            kill -0 "$sshd_pid" 2>/dev/null || break
            sleep 0.1
        done
        kill "$sshd_pid" 2>/dev/null || true
        wait "$sshd_pid" 2>/dev/null || true
        sshd_pid=
    done
    echo "sshd did not start:" >&2
    cat "$d/sshd.log" >&2
    return 1
}

# server_cpu [SINCE]: CPU seconds (user + sys) of everything sshd ran and reaped (the
# connection's sshd, `borg serve`), minus SINCE. Waits a moment so the session is reaped.
server_cpu() {
    sleep 0.5
    local tck
    tck=$(getconf CLK_TCK)
    awk -v since="${1:-0}" -v tck="$tck" '{sub(/.*\) /, ""); printf "%.2f\n", ($14 + $15) / tck - since}' "/proc/$sshd_pid/stat"
}

# repo_url PROG NAME: a fresh repository location for PROG (remote for NAME=remote*).
repo_url() {
    local path="$work/repos/$1-$2"
    rm -rf "$path"
    mkdir -p "$work/repos"
    case $2 in
    remote*) echo "ssh://root@127.0.0.1:$SSH_PORT$path" ;;
    *) echo "$path" ;;
    esac
}

# fresh_home PROG: empty keys/caches/security dirs for PROG.
fresh_home() {
    rm -rf "$work/home-$1"
    export BORG_BASE_DIR="$work/home-$1"
}

# timed PROG [--stdin FILE] ARGS...: runs PROG's create, prints the result line.
timed() {
    local prog=$1
    shift
    local x
    x=$(exe "$prog")
    local stdin=()
    if [ "$1" = --stdin ]; then
        stdin=(--stdin "$2")
        shift 2
    fi
    local line
    line=$("$PY" compat/py/bench_run.py "${stdin[@]}" -- "$x" create "$@" 2>"$work/last.err")
    if [ "$(field rc "$line")" != 0 ]; then
        echo "$prog create $* failed:" >&2
        cat "$work/last.err" >&2
        exit 1
    fi
    echo "$line"
}

results="$work/results"
: >"$results"
# record SCENARIO COMP PROG BYTES LINE STORED
record() { echo "$1 $2 $3 $4 $(field wall "$5") $(field user "$5") $(field sys "$5") $(field rss_mib "$5") $6" >>"$results"; }

# chunk_line NAME CMD...: one chunker run (same output format for borg and ours).
chunk_line() {
    local name=$1 line
    shift
    line=$("$@")
    echo "$name $(field chunks "$line") $(field bytes "$line") $(field seconds "$line") $(field cpu "$line")" >>"$work/chunker"
}

stored() {
    case $1 in
    ssh://*) du -sb "${1#ssh://root@127.0.0.1:$SSH_PORT}" | cut -f1 ;;
    *) du -sb "$1" | cut -f1 ;;
    esac
}

# one_round PROG ROUND: every scenario once for PROG.
one_round() {
    local prog=$1 x r comp line
    x=$(exe "$prog")
    first_comp=${COMPRESSIONS%% *}
    for scen in $SCENARIOS; do
        case $scen in
        first | rerun)
            # The re-run goes into the repository of the first backup with the first
            # compression: done there when "first" runs too, else after an unrecorded one.
            local comps=$COMPRESSIONS
            if [ "$scen" = rerun ]; then
                [[ " $SCENARIOS " == *" first "* ]] && continue
                comps=$first_comp
            fi
            for comp in $comps; do
                fresh_home "$prog"
                r=$(repo_url "$prog" "first")
                "$x" init -e "$ENCRYPTION" "$r" >/dev/null 2>&1
                warm "$data/tree"
                line=$(timed "$prog" -C "$comp" "$r::first" "$data/tree")
                if [ "$scen" = first ]; then
                    record first "$comp" "$prog" "$tree_bytes" "$line" "$(stored "$r")"
                fi
                if [ "$comp" = "$first_comp" ] && [[ " $SCENARIOS " == *" rerun "* ]]; then
                    warm "$data/tree"
                    line=$(timed "$prog" -C "$comp" "$r::rerun" "$data/tree")
                    record rerun "$comp" "$prog" "$tree_bytes" "$line" "$(stored "$r")"
                fi
                rm -rf "$work/repos/$prog-first"
            done
            ;;
        stdin)
            fresh_home "$prog"
            r=$(repo_url "$prog" stdin)
            "$x" init -e "$ENCRYPTION" "$r" >/dev/null 2>&1
            warm "$data/stream.bin"
            line=$(timed "$prog" --stdin "$data/stream.bin" -C "$first_comp" "$r::stdin" -)
            record stdin "$first_comp" "$prog" "$stream_bytes" "$line" "$(stored "$r")"
            rm -rf "$work/repos/$prog-stdin"
            ;;
        image)
            fresh_home "$prog"
            r=$(repo_url "$prog" image)
            "$x" init -e "$ENCRYPTION" "$r" >/dev/null 2>&1
            warm "$data/image.raw"
            line=$(timed "$prog" -C "$first_comp" "$r::image" "$data/image.raw")
            record image "$first_comp" "$prog" "$image_bytes" "$line" "$(stored "$r")"
            rm -rf "$work/repos/$prog-image"
            ;;
        chunker)
            local f
            f=$(find "$data/tree/random" -type f -printf '%s %p\n' | sort -n | tail -1 | cut -d' ' -f2)
            # runs of well under a second: several per round, so that a median is not
            # at the mercy of one run's clock (borg's chunker alone varied 600-960 MB/s)
            local rep
            for ((rep = 0; rep < CHUNK_REPS; rep++)); do
                if [ "$prog" = borg ]; then
                    warm "$f"
                    chunk_line borg "$(dirname "$BORG")/python" compat/py/bench_chunker.py "$f" default
                else
                    warm "$f"
                    chunk_line ours-1 "$OURS" benchmark chunk --threads 1 "$f"
                    warm "$f"
                    chunk_line "ours-$(nproc)" "$OURS" benchmark chunk "$f"
                fi
            done
            ;;
        ceiling)
            if [ "$prog" = ours ]; then
                line=$("$OURS" benchmark pipeline -e "$ENCRYPTION" -C "$first_comp" "$data/tree")
                echo "$(field wall "$line") $(field cpu "$line") $(field bytes "$line")" >>"$work/ceiling"
            fi
            ;;
        remote)
            fresh_home "$prog"
            r=$(repo_url "$prog" remote)
            "$x" init -e "$ENCRYPTION" "$r" >/dev/null 2>&1
            warm "$data/tree"
            local before
            before=$(server_cpu)
            line=$(timed "$prog" -C "$first_comp" "$r::remote" "$data/tree")
            record remote "$first_comp" "$prog" "$tree_bytes" "$line" "$(stored "$r")"
            echo "$prog $(server_cpu "$before")" >>"$work/server"
            rm -rf "$work/repos/$prog-remote"
            ;;
        *)
            echo "unknown scenario $scen" >&2
            exit 2
            ;;
        esac
    done
}

tree_bytes=$(bytes "$data/tree")
stream_bytes=$(bytes "$data/stream.bin")
image_bytes=$(bytes "$data/image.raw")
if [[ " $SCENARIOS " == *" remote "* ]]; then
    start_sshd
fi
echo "proxborg-native: $("$OURS" --version)   borg: $("$BORG" --version)" >&2
for ((round = 1; round <= ROUNDS; round++)); do
    # alternate which program goes first
    if ((round % 2)); then order="ours borg"; else order="borg ours"; fi
    for prog in $order; do
        echo "round $round/$ROUNDS: $prog (load $(cut -d' ' -f1-3 /proc/loadavg))" >&2
        one_round "$prog"
    done
done

# Table: medians over rounds per (scenario, compression, program).
echo
echo "$ENCRYPTION; data: tree $((tree_bytes / 1000000)) MB ($(find "$data/tree" -type f | wc -l) files), stream $((stream_bytes / 1000000)) MB, image $((image_bytes / 1000000)) MB; medians of $ROUNDS alternating rounds; $(nproc) cpus; repos in $REPO_DIR"
if [ -s "$work/chunker" ]; then
    echo "chunker (buzhash default on $(awk '{print int($3 / 1e6); exit}' "$work/chunker") MB of random data, $((ROUNDS * CHUNK_REPS)) runs each): median MB/s (wall / cpu) and speed-up over borg"
    bmed=$(awk '$1 == "borg" {print $3 / $4 / 1e6}' "$work/chunker" | median)
    for who in borg ours-1 "ours-$(nproc)"; do
        if [ "$(awk -v w="$who" '$1 == w {print $2}' "$work/chunker" | sort -u | wc -l)" -gt 1 ]; then
            echo "chunk counts differ between runs of $who" >&2
        fi
        w=$(awk -v w="$who" '$1 == w {print $3 / $4 / 1e6}' "$work/chunker" | median)
        c=$(awk -v w="$who" '$1 == w {print $3 / $5 / 1e6}' "$work/chunker" | median)
        n=$(awk -v w="$who" '$1 == w {print $2; exit}' "$work/chunker")
        awk -v who="$who" -v w="$w" -v c="$c" -v b="$bmed" -v n="$n" \
            'BEGIN {printf "  %-10s %8.0f MB/s wall %8.0f MB/s cpu %6.2fx  (%d chunks)\n", who, w, c, w / b, n}'
    done
    if [ "$(awk '{print $2}' "$work/chunker" | sort -u | wc -l)" -gt 1 ]; then
        echo "CHUNK COUNTS DIFFER between borg and ours" >&2
        exit 1
    fi
fi
printf '%-7s %-7s %9s %9s %8s %8s %8s %7s %8s %8s %9s %9s %9s\n' \
    scenario comp "borg s" "ours s" "borg MB/s" "ours MB/s" speedup "" "borg RSS" "ours RSS" "borg cpu" "ours cpu" "stored o/b"
for scen in first rerun stdin image remote; do
    for comp in $COMPRESSIONS; do
        grep -q "^$scen $comp " "$results" || continue
        declare -A m=()
        for prog in borg ours; do
            for col in 5 6 7 8 9; do
                m[$prog$col]=$(awk -v s="$scen" -v c="$comp" -v p="$prog" -v k="$col" \
                    '$1 == s && $2 == c && $3 == p {print $k}' "$results" | median)
            done
            m[${prog}cpu]=$(awk -v s="$scen" -v c="$comp" -v p="$prog" \
                '$1 == s && $2 == c && $3 == p {print $6 + $7}' "$results" | median)
        done
        n=$(awk -v s="$scen" -v c="$comp" '$1 == s && $2 == c {print $4; exit}' "$results")
        awk -v s="$scen" -v c="$comp" -v n="$n" -v bw="${m[borg5]}" -v ow="${m[ours5]}" \
            -v br="${m[borg8]}" -v or="${m[ours8]}" -v bc="${m[borgcpu]}" -v oc="${m[ourscpu]}" \
            -v bs="${m[borg9]}" -v os="${m[ours9]}" 'BEGIN {
            printf "%-7s %-7s %9.2f %9.2f %9.0f %9.0f %7.2fx %7s %6.0f MiB %5.0f MiB %8.1f s %7.1f s %9.3f\n",
                s, c, bw, ow, n / bw / 1e6, n / ow / 1e6, bw / ow, "", br, or, bc, oc, (bs > 0 ? os / bs : 0)
        }'
    done
done
echo "(speedup = borg wall time / ours; cpu = user + sys; stored o/b = repository size ours / borg)"
if [ -s "$work/ceiling" ]; then
    # The first backup against what the primitives allow on this data and these cores.
    cw=$(awk '{print $1}' "$work/ceiling" | median)
    cc=$(awk '{print $2}' "$work/ceiling" | median)
    fo=$(awk -v c="$first_comp" '$1 == "first" && $2 == c && $3 == "ours" {print $5}' "$results" | median)
    fb=$(awk -v c="$first_comp" '$1 == "first" && $2 == c && $3 == "borg" {print $5}' "$results" | median)
    ou=$(awk -v c="$first_comp" '$1 == "first" && $2 == c && $3 == "ours" {print $6}' "$results" | median)
    os=$(awk -v c="$first_comp" '$1 == "first" && $2 == c && $3 == "ours" {print $7}' "$results" | median)
    # Each round measures the ceiling right before its first backup: the share per round
    # is not moved by the machine's speed drifting between rounds, as medians taken apart are.
    rounds=$(paste -d ' ' <(awk '{print $1}' "$work/ceiling") \
        <(awk -v c="$first_comp" '$1 == "first" && $2 == c && $3 == "ours" {print $5}' "$results") |
        awk 'NF == 2 && $2 > 0 {printf "%s%.0f%%", (NR > 1 ? ", " : ""), 100 * $1 / $2}')
    awk -v cw="$cw" -v cc="$cc" -v n="$tree_bytes" -v fo="$fo" -v fb="$fb" -v c="$first_comp" -v p="$(nproc)" \
        -v ou="${ou:-0}" -v os="${os:-0}" -v rounds="$rounds" 'BEGIN {
        printf "pipeline ceiling (%s, tree in memory, no I/O): %.0f MB/s on %d cpus, %.0f MB/s per CPU second\n", c, n / cw / 1e6, p, n / cc / 1e6
        if (fo > 0) printf "  first backup (%s): %.0f%% of the ceiling (round by round: %s)\n", c, 100 * cw / fo, rounds
        if (fb > 0) printf "  3.5x borg would need %.0f MB/s: %.0f%% of the ceiling\n", 3.5 * n / fb / 1e6, 100 * 3.5 * cw / fb
        # The ceiling leaves out the kernel: reading the tree, writing the segments, faults.
        if (fo > 0 && fb > 0) {
            b = (cc + os) / p
            printf "  first backup CPU: user %.1f s (the ceiling'"'"'s work: %.1f s), kernel %.1f s; user at the ceiling'"'"'s and the kernel as measured need >= %.2f s on %d cpus: at most %.0f%% of the ceiling, %.2fx borg\n", ou, cc, os, b, p, 100 * cw / b, fb / b
        }
    }'
fi
if [ -s "$work/server" ]; then
    # Both programs and the server share the cores: their CPU seconds together, over the
    # cores, bound the remote wall time from below.
    for prog in borg ours; do
        sc=$(awk -v p="$prog" '$1 == p {print $2}' "$work/server" | median)
        cc=$(awk -v p="$prog" '$1 == "remote" && $3 == p {print $6 + $7}' "$results" | median)
        awk -v p="$prog" -v sc="$sc" -v cc="$cc" -v n="$(nproc)" 'BEGIN {
            printf "remote %s: server side (sshd + borg serve) %.1f CPU s; with the client %.1f CPU s, so >= %.2f s on %d cpus\n",
                p, sc, sc + cc, (sc + cc) / n, n }'
    done
    # Even a client as cheap as our local run leaves the server's share on the same cores.
    sc=$(awk '$1 == "ours" {print $2}' "$work/server" | median)
    lw=$(awk -v c="$first_comp" '$1 == "first" && $2 == c && $3 == "ours" {print $5}' "$results" | median)
    lc=$(awk -v c="$first_comp" '$1 == "first" && $2 == c && $3 == "ours" {print $6 + $7}' "$results" | median)
    rw=$(awk -v c="$first_comp" '$1 == "remote" && $2 == c && $3 == "ours" {print $5}' "$results" | median)
    if [ -n "$lw" ] && [ -n "$rw" ]; then
        awk -v sc="$sc" -v lw="$lw" -v lc="$lc" -v rw="$rw" -v n="$(nproc)" 'BEGIN {
            b = (sc + lc) / n; if (b < lw) b = lw
            printf "remote ours: %.0f%% of local throughput; at most %.0f%% with the client at its local CPU cost and the server at its measured one (>= %.2f s)\n",
                100 * lw / rw, 100 * lw / b, b }'
    fi
fi
if ((SMOKE)); then
    echo "smoke run: OK"
fi

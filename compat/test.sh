#!/usr/bin/env bash
# The project's test command: installs what the tests drive (upstream borg 1.2 and 1.4.5,
# sshd, zfs-fuse, tools), then runs every test and prints one summary line.
# Needs root for apt-get on a fresh machine.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash compat/setup.sh
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --lib --bins --tests "$@" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
set -e
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed;/) p += $i; if ($(i+1) ~ /^failed;/) f += $i } }
     END { printf "%d passed, %d failed\n", p, f }' "$log"
exit "$rc"

#!/usr/bin/env bash
# The project's test command: installs what the tests drive (upstream borg 1.2 and 1.4.5,
# sshd, zfs-fuse, tools), then runs every test. Needs root for apt-get on a fresh machine.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash compat/setup.sh
cargo test "$@"

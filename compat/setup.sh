#!/usr/bin/env bash
# Installs what the compatibility tests drive: upstream borg 1.2.x (Debian's package,
# /usr/bin/borg) and borg 1.4.5 (PyPI, in a venv under .compat-env/), plus sshd, zfs-fuse,
# GNU tar, the acl/attr tools and strace (crash injection). Idempotent: present pieces are reused.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
env_dir="$root/.compat-env"
venv="$env_dir/borg-1.4.5"

apt_pkgs=()
have() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
for p in borgbackup pkg-config libacl1-dev libssl-dev liblz4-dev libzstd-dev libxxhash-dev \
         openssh-server openssh-client zfs-fuse acl attr tar python3-venv strace; do
    have "$p" || apt_pkgs+=("$p")
done
if ((${#apt_pkgs[@]})); then
    echo "setup: installing Debian packages: ${apt_pkgs[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${apt_pkgs[@]}" >/dev/null
fi

if ! "$venv/bin/borg" --version 2>/dev/null | grep -q '1\.4\.5'; then
    echo "setup: building borgbackup==1.4.5 in $venv" >&2
    mkdir -p "$env_dir"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check 'borgbackup==1.4.5'
fi

/usr/bin/borg --version >&2
"$venv/bin/borg" --version >&2

#!/usr/bin/env bash
# Build Rampart from this checkout and start a single-node server (the README's first command).
# On a fresh Debian machine: installs the build prerequisites, builds the static release
# binary, installs it as /usr/local/bin/rampart and runs `rampart server` in the foreground.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA_DIR="${RAMPART_DATA_DIR:-/var/lib/rampart/server}"
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

packages=(clang libclang-dev build-essential)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
command -v cargo >/dev/null || { echo "rampart: cargo is required (https://rustup.rs)" >&2; exit 1; }

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/rampart/target}"
cargo build --release --bin rampart
BIN="$CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/release/rampart"
$SUDO install -m 0755 "$BIN" /usr/local/bin/rampart
echo "installed /usr/local/bin/rampart ($(du -h "$BIN" | cut -f1)); starting the server in $DATA_DIR"
exec $SUDO /usr/local/bin/rampart server --data-dir "$DATA_DIR"

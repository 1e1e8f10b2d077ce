#!/usr/bin/env bash
# Installs what is missing, builds Palisade and starts it in the foreground
# (`palisade up`: host, vault and web UI; SQLite and bubblewrap). Arguments are passed
# to `palisade up` (see `palisade up --help`; e.g. --detach, --listen ADDR).
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/palisade-target}"

bash scripts/install-deps.sh
echo "[up] cargo build --release -p palisade"
cargo build --release --quiet -p palisade
palisade="$CARGO_TARGET_DIR/release/palisade"
[ -x "$palisade" ] || { echo "[up] error: build produced no binary at $palisade" >&2; exit 1; }
echo "[up] $palisade up $*"
exec "$palisade" up "$@"

#!/usr/bin/env bash
# Installs what is missing, builds Palisade and starts it.
# Until the host (`palisade up`) exists this starts the vault gateway on its own
# (`palisade vault serve`). Arguments are passed through.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/palisade-target}"

bash scripts/install-deps.sh
echo "[up] cargo build --release -p palisade"
cargo build --release --quiet -p palisade
palisade="$CARGO_TARGET_DIR/release/palisade"
[ -x "$palisade" ] || { echo "[up] error: build produced no binary at $palisade" >&2; exit 1; }

if "$palisade" up --help >/dev/null 2>&1; then
  exec "$palisade" up "$@"
else
  echo "[up] 'palisade up' is not there yet; starting the vault gateway standalone"
  exec "$palisade" vault serve "$@"
fi

#!/usr/bin/env bash
# Installs what is missing, builds Palisade, puts `palisade` on the PATH
# (/usr/local/bin as root, else ~/.local/bin) and starts it in the foreground
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
# The commands in the README (`palisade doctor`, `palisade send`, …) then work as typed.
if [ "$(id -u)" = 0 ]; then bin=/usr/local/bin; else bin="$HOME/.local/bin"; fi
mkdir -p "$bin"
install -m 0755 "$palisade" "$bin/palisade.new" && mv -f "$bin/palisade.new" "$bin/palisade"
echo "[up] installed $bin/palisade"
case ":$PATH:" in
    *":$bin:"*) ;;
    *) echo "[up] note: $bin is not on your PATH; add it (export PATH=\"$bin:\$PATH\") to type \`palisade\`" ;;
esac
echo "[up] palisade up $*"
exec "$bin/palisade" up "$@"

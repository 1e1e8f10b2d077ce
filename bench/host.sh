#!/usr/bin/env bash
# Host benchmark (issue 5): message accepted -> warm runner has it (against the same
# frames echoed over a bare Unix socket), cold start (no runner -> runner has it) with
# bubblewrap and podman (against `palisade sandbox run -- true` and bare bwrap/podman),
# idle runner memory, and the host's memory with 100 agents and 10 warm runners.
# All in one run, on loopback, with the real `palisade up` and the testkit's fake
# Anthropic API over TLS reached through the vault. Podman runs only when its image
# exists (`palisade sandbox image build`). The driver is `host-bench`
# (crates/palisade-bench/src/host_bench); its --help lists the knobs.
#
# Usage: bench/host.sh [host-bench options, e.g. --warm-samples 500 --json out.json]
#   PALISADE=path/to/palisade HOST_BENCH=path/to/host-bench skip the release build.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
if [ -z "${PALISADE:-}" ] || [ -z "${HOST_BENCH:-}" ]; then
  echo "building palisade and host-bench (release)..." >&2
  cargo build --release -q -p palisade -p palisade-bench --manifest-path "$ROOT/Cargo.toml"
fi
PALISADE=${PALISADE:-$TARGET/release/palisade}
HOST_BENCH=${HOST_BENCH:-$TARGET/release/host-bench}
for tool in bwrap; do
  command -v "$tool" >/dev/null || { echo "bench/host.sh: $tool is missing (scripts/install-deps.sh)" >&2; exit 1; }
done
echo "# $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $(uname -r), palisade $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')"
exec "$HOST_BENCH" run --palisade "$PALISADE" "$@"

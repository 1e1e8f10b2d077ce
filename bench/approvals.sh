#!/usr/bin/env bash
# Approval benchmark (issue 12): from a button press arriving at the channel to the held
# request leaving for its upstream (p50/p99), against the same kind of request with no
# approval on a warm tunnel, interleaved in the same run; and approval cards for 100
# requests held at once (each card's delay, then every card pressed and the time until
# all 100 reached the upstream). The real `palisade up` with its vault listener, the
# testkit's fake Slack (Socket Mode) and a TLS upstream, all on 127.0.0.1. The driver
# is `approval-bench` (crates/palisade-bench/src/approval_bench); its --help lists the
# knobs.
#
# Usage: bench/approvals.sh [approval-bench options, e.g. --samples 500 --json out.json]
#   PALISADE=path/to/palisade APPROVAL_BENCH=path/to/approval-bench skip the release build.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
if [ -z "${PALISADE:-}" ] || [ -z "${APPROVAL_BENCH:-}" ]; then
  echo "building palisade and approval-bench (release)..." >&2
  cargo build --release -q -p palisade -p palisade-bench --manifest-path "$ROOT/Cargo.toml"
fi
PALISADE=${PALISADE:-$TARGET/release/palisade}
APPROVAL_BENCH=${APPROVAL_BENCH:-$TARGET/release/approval-bench}
echo "# $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $(uname -r), palisade $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')"
exec "$APPROVAL_BENCH" run --palisade "$PALISADE" "$@"

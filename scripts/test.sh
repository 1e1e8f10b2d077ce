#!/usr/bin/env bash
# Installs what is missing, then runs every check CI runs: format, lints, tests.
# Works unattended (CI=true, no stdin).
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/palisade-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
exec </dev/null

started=$(date +%s)
stage="install-deps"
summary() {
  local status=$?
  local elapsed=$(( $(date +%s) - started ))
  if [ "$status" -eq 0 ]; then
    echo "test.sh: all checks passed (fmt, clippy, tests) in ${elapsed}s"
  else
    echo "test.sh: FAILED at ${stage} after ${elapsed}s (exit ${status})"
  fi
}
trap summary EXIT
# Each stage's header says how long the run has taken so far, so a slow stage shows.
header() { echo "== $1 (at $(( $(date +%s) - started ))s)"; }

header "install-deps"
bash scripts/install-deps.sh

stage="cargo fmt"
header "cargo fmt --check"
cargo fmt --all -- --check

stage="cargo clippy"
header "cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings

stage="sandbox image"
header "sandbox image (podman; kept when present)"
cargo build --quiet -p palisade
"$CARGO_TARGET_DIR/debug/palisade" sandbox image build

stage="test user"
header "unprivileged test user (account, rootless podman storage, its copy of the image)"
# Done here, once, before any test runs: the tests only read this state.
bash scripts/test-user.sh
# The podman cases of the sandbox tests skip without the image unless told not to;
# here the image was just built, so a missing one is a failure, not a skip.
export PALISADE_REQUIRE_PODMAN=1

stage="cargo test"
header "cargo test"
cargo test --workspace

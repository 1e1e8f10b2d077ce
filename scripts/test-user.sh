#!/usr/bin/env bash
# Prepares the unprivileged user the sandbox tests run Palisade as (`palisade-test`):
# the account, its rootless podman storage (overlay), and, when root has the sandbox
# image, a copy of it in the user's own image store. Idempotent: only what is missing is
# done, and nothing is reset once the user's store holds data of the right kind.
#
# Runs as root. scripts/test.sh calls it once after building the image, before any test
# starts; crates/palisade/tests/sandbox_escape.rs calls it once too (behind a lock every
# test waits on), so `cargo test` alone works as well. It must never run while tests
# already use the user's store.
set -euo pipefail

TEST_USER=palisade-test
IMAGE=localhost/palisade-sandbox:latest

step() { printf '[test-user] %s\n' "$*"; }
fail() { printf '[test-user] error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || fail "run as root (the sandbox tests use the unprivileged user only when they run as root)"

as_user() { runuser -u "$TEST_USER" -- "$@"; }

if ! id "$TEST_USER" >/dev/null 2>&1; then
  step "creating unprivileged user $TEST_USER"
  useradd --create-home --shell /bin/bash "$TEST_USER" || fail "could not create user $TEST_USER"
fi
home=$(getent passwd "$TEST_USER" | cut -d: -f6)
[ -d "$home" ] || fail "the home of $TEST_USER ($home) does not exist"

command -v podman >/dev/null 2>&1 || { step "no podman: nothing more to prepare"; exit 0; }

# Rootless podman picks the vfs driver by default here, which copies the whole image for
# every container (~25 s). Overlay must be configured before the user's first podman
# command; a store already created with vfs is reset once, here, never during tests.
conf="$home/.config/containers/storage.conf"
if ! grep -qs '^driver = "overlay"' "$conf"; then
  step "rootless podman storage: overlay"
  as_user mkdir -p "$home/.config/containers"
  as_user sh -c "printf '[storage]\\ndriver = \"overlay\"\\n' > '$conf'"
fi
driver=$(cd / && as_user podman info --format '{{.Store.GraphDriverName}}' 2>/dev/null || true)
if [ "$driver" != "overlay" ]; then
  step "resetting the user's podman store (driver was ${driver:-unknown})"
  (cd / && as_user podman system reset -f >/dev/null 2>&1) || fail "podman system reset failed for $TEST_USER"
  driver=$(cd / && as_user podman info --format '{{.Store.GraphDriverName}}' 2>/dev/null || true)
  [ "$driver" = "overlay" ] || fail "rootless podman of $TEST_USER still uses ${driver:-no} storage driver"
fi

if ! podman image exists "$IMAGE" 2>/dev/null; then
  step "root has no $IMAGE yet: the user's copy is made once it is built (palisade sandbox image build)"
  exit 0
fi
root_id=$(podman image inspect --format '{{.Id}}' "$IMAGE")
user_id=$(cd / && as_user podman image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true)
if [ "$root_id" != "$user_id" ]; then
  step "copying $IMAGE into the rootless store of $TEST_USER"
  scratch=$(mktemp -d /var/tmp/palisade-sandbox-image.XXXXXX)
  trap 'rm -rf "$scratch"' EXIT
  chmod 755 "$scratch"
  archive="$scratch/image.tar"
  podman save -q -o "$archive" "$IMAGE" || fail "podman save failed"
  chmod 644 "$archive"
  (cd / && as_user podman load -q -i "$archive" >/dev/null) || fail "podman load failed for $TEST_USER"
  user_id=$(cd / && as_user podman image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true)
  [ "$root_id" = "$user_id" ] || fail "the image in the store of $TEST_USER differs from root's after loading"
fi
# Sandboxes of an unprivileged user run with --userns=keep-id; podman prepares an
# id-shifted copy of the image the first time (seconds), done here rather than in a test.
(cd / && as_user podman --cgroup-manager cgroupfs --runtime runc run --rm --network none \
  --userns=keep-id --ulimit nofile=4096:4096 "$IMAGE" true) || fail "podman run --userns=keep-id failed for $TEST_USER"
step "ready ($TEST_USER: overlay storage, $IMAGE present)"

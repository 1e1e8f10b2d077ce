#!/usr/bin/env bash
# Sandbox start, before and after a change, in the same minute: `palisade sandbox run
# --agent bench -- true` with two binaries (each with its own home) and bare bwrap as
# the load's baseline, in one hyperfine run per case (bubblewrap with the in-process
# vault, bubblewrap with a running gateway, and with PODMAN=1 podman); then a new
# connection through shim and vault (one refused request each, 280 measured) inside a
# bubblewrap sandbox, twice per binary, alternating.
#
# Usage: bench/sandbox-ab.sh BEFORE-BINARY AFTER-BINARY [RUNS]   (PODMAN=1, PODMAN_RUNS=20)
set -euo pipefail
BEFORE=$(realpath "$1") AFTER=$(realpath "$2") RUNS=${3:-100}
WORK=$(mktemp -d /var/tmp/palisade-bench-ab-XXXXXX)
chmod 755 "$WORK"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
cd "$WORK"
ln -s "$BEFORE" palisade-before
ln -s "$AFTER" palisade-after
for v in before after; do "./palisade-$v" --home "$WORK/home-$v" agents create bench >/dev/null; done
p50() { python3 -c 'import json,sys; t=sorted(json.load(open(sys.argv[1]))["results"][int(sys.argv[2])]["times"]); q=lambda p: t[min(len(t)-1,int(p*len(t)))]*1000; print(f"p50 {q(0.5):7.2f} ms   p99 {q(0.99):7.2f} ms")' "$1" "$2"; }
ab() { # name runs extra-args...
  local name=$1 runs=$2 file; shift 2
  file="${name//[^a-z]/_}.json"
  hyperfine -N --style none --warmup 5 --runs "$runs" --export-json "$file" \
    "./palisade-before --home $WORK/home-before sandbox run --agent bench $* -- true" \
    "./palisade-after --home $WORK/home-after sandbox run --agent bench $* -- true" \
    "bwrap --unshare-all --die-with-parent --ro-bind /usr /usr --symlink usr/bin /bin --symlink usr/lib /lib --symlink usr/lib64 /lib64 --proc /proc --dev /dev -- /usr/bin/true" >/dev/null 2>&1
  echo "## $name (load $(cut -d' ' -f1-3 /proc/loadavg))"
  echo "  before:     $(p50 "$file" 0)"
  echo "  after:      $(p50 "$file" 1)"
  echo "  bare bwrap: $(p50 "$file" 2)"
}
ab "bwrap, in-process vault" "$RUNS"
for v in before after; do
  "./palisade-$v" --home "$WORK/home-$v" vault serve --listen 127.0.0.1:0 >/dev/null 2>&1 & PIDS+=($!)
done
for _ in $(seq 100); do [ -S home-before/run/agents/bench.sock ] && [ -S home-after/run/agents/bench.sock ] && break; sleep 0.1; done
ab "bwrap, running gateway" "$RUNS"
if [ -n "${PODMAN:-}" ]; then
  ab "podman, running gateway" "${PODMAN_RUNS:-20}" --runtime podman
fi
cat > conn.py <<'PY'
import socket, time
samples = []
for i in range(300):
    t0 = time.perf_counter()
    s = socket.create_connection(("127.0.0.1", 3128))
    s.sendall(b"GET http://127.0.0.1:9/ HTTP/1.1\r\nHost: 127.0.0.1:9\r\nConnection: close\r\n\r\n")
    s.recv(200)
    s.close()
    samples.append((time.perf_counter() - t0) * 1000)
samples = sorted(samples[20:])
print(f"p50 {samples[len(samples) // 2]:.3f} ms   p90 {samples[int(len(samples) * 0.9)]:.3f} ms")
PY
chmod 644 conn.py
echo "## new connection through shim and vault, one refused request (load $(cut -d' ' -f1-3 /proc/loadavg))"
for round in 1 2; do
  for v in before after; do
    printf '  [%s] %-7s %s\n' "$round" "$v:" "$("./palisade-$v" --home "$WORK/home-$v" sandbox run --agent bench --mount "$WORK/conn.py:/mnt/conn.py" -- python3 /mnt/conn.py)"
  done
done

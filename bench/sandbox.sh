#!/usr/bin/env bash
# Sandbox benchmark: start to first instruction and full `sandbox run -- true` round
# trip (p50/p99) for bubblewrap and podman, against bare `true`, bare bwrap and bare
# `podman run`; then curl through shim+vault inside a sandbox vs curl through the
# vault's TCP listener directly, per request on one warm tunnel. All in one run, all
# on loopback. Needs: hyperfine, bwrap, podman with the image
# (`palisade sandbox image build`), openssl, python3, curl.
#
# Usage: bench/sandbox.sh [RUNS]   (PALISADE=path/to/palisade to skip the build)
set -euo pipefail
RUNS=${1:-100}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
if [ -z "${PALISADE:-}" ]; then
  cargo build --release -q -p palisade --manifest-path "$ROOT/Cargo.toml"
  PALISADE="${CARGO_TARGET_DIR:-$ROOT/target}/release/palisade"
fi
WORK=$(mktemp -d /var/tmp/palisade-bench-XXXXXX)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
export PALISADE_HOME="$WORK/home"
P() { "$PALISADE" "$@"; }
P agents create bench >/dev/null
# Created before the gateway starts, so its listener knows it from the first request.
TOKEN=$(P agents token bench | tail -1 | awk '{print $NF}')

# Local HTTPS upstream on 127.0.0.2 (127.0.0.1 is in the sandbox's NO_PROXY).
cd "$WORK"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem -subj /CN=bench-ca -days 2 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout server.key -out server.csr -subj /CN=127.0.0.2 2>/dev/null
printf 'subjectAltName=IP:127.0.0.2\n' > ext
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 -extfile ext 2>/dev/null
UPORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.2",0)); print(s.getsockname()[1])')
cat > upstream.py <<'PY'
import http.server, ssl, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    def log_message(self, *a): pass
    def do_GET(self):
        # One write: headers and body in separate segments meet Nagle + delayed ACK
        # (40 ms) on the reading side.
        self.wfile.write(b'HTTP/1.1 200 OK\r\ncontent-length: 1024\r\n\r\n' + b'x' * 1024)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); ctx.load_cert_chain('server.pem', 'server.key')
s = http.server.ThreadingHTTPServer(('127.0.0.2', int(sys.argv[1])), H); s.socket = ctx.wrap_socket(s.socket, server_side=True); s.serve_forever()
PY
python3 upstream.py "$UPORT" & PIDS+=($!)
VPORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$PALISADE" vault serve --listen "127.0.0.1:$VPORT" --upstream-ca ca.pem --allow-local-upstream 127.0.0.2 >"$WORK/vault.log" 2>&1 & PIDS+=($!)
for _ in $(seq 100); do [ -S "$PALISADE_HOME/run/agents/bench.sock" ] && break; sleep 0.1; done

percentiles() { # hyperfine JSON -> "p50 p99" in ms
  python3 -c 'import json,sys; t=sorted(json.load(open(sys.argv[1]))["results"][0]["times"]); q=lambda p: t[min(len(t)-1,int(p*len(t)))]*1000; print(f"{q(0.5):.2f} {q(0.99):.2f}")' "$1"
}
measure() { # name runs command...
  local name=$1 runs=$2; shift 2
  hyperfine -N --style none --warmup 3 --runs "$runs" --export-json "$WORK/${name//[^a-z0-9]/_}.json" -- "$(printf "%q " "$@")" >/dev/null 2>&1
  local p50 p99
  read -r p50 p99 < <(percentiles "$WORK/${name//[^a-z0-9]/_}.json")
  printf '%-44s p50 %8s ms   p99 %8s ms\n' "$name" "$p50" "$p99"
}
if [ -z "${ONLY_CURL:-}" ]; then
echo "## sandbox start ($RUNS runs each; podman ${PODMAN_RUNS:=20}; load average $(cut -d' ' -f1-3 /proc/loadavg))"
measure "true" "$RUNS" true
measure "bare bwrap --unshare-all ... true" "$RUNS" bwrap --unshare-all --die-with-parent --ro-bind /usr /usr --symlink usr/bin /bin --symlink usr/lib /lib --symlink usr/lib64 /lib64 --proc /proc --dev /dev -- /usr/bin/true
measure "palisade sandbox run -- true (bwrap)" "$RUNS" "$PALISADE" sandbox run --agent bench -- true
HAS_PODMAN=0
if podman image exists localhost/palisade-sandbox:latest 2>/dev/null; then
  HAS_PODMAN=1
  measure "bare podman run --rm --network none true" "$PODMAN_RUNS" podman --cgroup-manager cgroupfs --runtime runc run --rm --network none --ulimit nofile=4096:4096 --ulimit nproc=4096:4096 localhost/palisade-sandbox:latest true
  measure "palisade sandbox run -- true (podman)" "$PODMAN_RUNS" "$PALISADE" sandbox run --agent bench --runtime podman -- true
fi
# With no gateway running, sandbox run serves the vault in-process.
kill "${PIDS[1]}"; wait "${PIDS[1]}" 2>/dev/null || true
measure "sandbox run -- true (bwrap, in-process vault)" "$RUNS" "$PALISADE" sandbox run --agent bench -- true
"$PALISADE" vault serve --listen "127.0.0.1:$VPORT" --upstream-ca ca.pem --allow-local-upstream 127.0.0.2 >>"$WORK/vault.log" 2>&1 & PIDS+=($!)
for _ in $(seq 100); do [ -S "$PALISADE_HOME/run/agents/bench.sock" ] && break; sleep 0.1; done
sleep 0.3

first_instruction() { # runtime runs -> p50 p99 ms from spawn to the command's first instruction
  python3 - "$PALISADE" "$1" "$2" <<'PY'
import subprocess, sys, time
palisade, runtime, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
samples = []
for _ in range(runs):
    t0 = time.time()
    out = subprocess.run([palisade, 'sandbox', 'run', '--agent', 'bench', '--runtime', runtime, '--', '/bin/date', '+%s.%N'], capture_output=True, text=True, timeout=60)
    samples.append((float(out.stdout.strip()) - t0) * 1000)
samples.sort()
q = lambda p: samples[min(len(samples) - 1, int(p * len(samples)))]
print(f"{q(0.5):.2f} {q(0.99):.2f}")
PY
}
read -r a b < <(first_instruction bwrap "$RUNS"); printf '%-44s p50 %8s ms   p99 %8s ms\n' "start to first instruction (bwrap)" "$a" "$b"
if [ "$HAS_PODMAN" = 1 ]; then
  read -r a b < <(first_instruction podman "$PODMAN_RUNS"); printf '%-44s p50 %8s ms   p99 %8s ms\n' "start to first instruction (podman)" "$a" "$b"
fi

fi
echo
echo "## curl per request on one warm tunnel (1 KiB responses, ${REQS:=200} requests; load average $(cut -d' ' -f1-3 /proc/loadavg))"
URLS=$(for _ in $(seq "$REQS"); do printf -- '-o /dev/null https://127.0.0.2:%s/x ' "$UPORT"; done)
P vault ca-cert > bundle.pem 2>/dev/null || true
# Input: "CODE SECONDS" per request; the first (CONNECT + TLS) is left out, any
# non-200 fails the run.
summarise() { python3 -c '
import sys
rows = [l.split() for l in sys.stdin.read().splitlines() if l.strip()]
bad = [r for r in rows if r[0] != "200"]
if bad: sys.exit(f"non-200 responses: {bad[:3]}")
t = sorted(float(r[1]) * 1000 for r in rows[1:])
q = lambda p: t[min(len(t) - 1, int(p * len(t)))]
print(f"{q(0.5):.3f} {q(0.99):.3f}")'; }
# Rounds alternate direct and shim so both see the same machine load; the verdict is
# the median of the per-round differences.
DELTAS=()
for round in $(seq "${ROUNDS:=5}"); do
  read -r d50 d99 < <(curl -s --cacert bundle.pem -x "http://x:$TOKEN@127.0.0.1:$VPORT" -w '%{http_code} %{time_total}\n' $URLS | summarise)
  printf '%-44s p50 %8s ms   p99 %8s ms\n' "[$round] curl -> vault TCP listener (host)" "$d50" "$d99"
  read -r s50 s99 < <(P sandbox run --agent bench -- curl -s -w '%{http_code} %{time_total}\n' $URLS | summarise)
  printf '%-44s p50 %8s ms   p99 %8s ms\n' "[$round] curl -> shim -> vault socket (bwrap)" "$s50" "$s99"
  DELTAS+=("$(python3 -c "print(float('$s50') - float('$d50'))")")
done
python3 -c "import statistics, sys; d = sorted(float(x) for x in sys.argv[1:]); print(f'shim adds {statistics.median(d):+.3f} ms per request at p50 (median of {len(d)} rounds; range {d[0]:+.3f} .. {d[-1]:+.3f}; includes the unix-socket vs TCP difference on the vault side)')" "${DELTAS[@]}"
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"

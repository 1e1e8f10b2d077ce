#!/usr/bin/env bash
# Benchmarks the vault gateway in one run, against a direct HTTPS baseline and
# mitmproxy as a reference peer, all on 127.0.0.1:
#   upstream  nginx (TLS from a throwaway CA, HTTP/1.1 + h2, keep-alive, 1 KiB body)
#   direct    vault-load -> nginx
#   vault     vault-load -> CONNECT (agent token) -> vault MITM (bearer injected,
#             allow rule evaluated) -> nginx
#   mitmproxy vault-load -> CONNECT -> mitmdump -> nginx
#   nginx-proxy  vault-load -> a second nginx as a TLS reverse proxy (the same bearer
#             set by proxy_set_header, upstream keep-alive, upstream certificate
#             verified) -> nginx: no CONNECT, rules, audit or tokens, so it is the
#             cheapest a second TLS session and HTTP exchange get on this machine, a
#             measured bound on what any proxy can reach here
# Modes: warm keep-alive at 1 and 16 connections, a new tunnel per request, then the
# vault's RSS after load and with 10 000 idle tunnels open.
#
# Usage: bash bench/vault.sh
#   (defaults: BENCH_DURATION=5s BENCH_WARMUP=1s BENCH_ROUNDS=3 BENCH_IDLE_TUNNELS=10000
#    BENCH_CLIENT_THREADS=2; the table goes to stdout, progress to stderr)
#   A/B experiments: BENCH_VAULT_B_ENV="NAME=VALUE ..." also runs a second vault
#   ("vault-b", same home, own socket dir) with that environment, back to back with the
#   first in every round; BENCH_VAULT_B_BIN=path runs another palisade build as vault-b.
#   BENCH_NO_MITM=1 leaves mitmproxy out; BENCH_NO_NGINX_PROXY=1 the nginx proxy.
#   Every timed run also records the CPU time of the load generator, the proxy and
#   nginx, printed as CPU per request with the ceiling it sets on the ratio when all of
#   them are CPU-bound on the same cores.
#   BENCH_PERF_DIR=DIR records `perf record -g` of the (first) vault and of the nginx
#   proxy during each of their timed runs into DIR/VIA-MODE.data, and writes
#   DIR/VIA-MODE.txt (top symbols).
#   BENCH_SYSCALLS_DIR=DIR counts system calls by kind (and context switches) of the
#   proxy, or of nginx for the direct runs, during each timed run into DIR/VIA-MODE.csv
#   (perf stat's CSV, then the run's request count on the last line).
#   BENCH_PERF_CALLGRAPH="--call-graph dwarf,8192" BENCH_PERF_FREQ=499 gives whole call
#   stacks (inclusive costs) from a release build without frame pointers.
#   An independent load generator, oha (installed with cargo when missing), measures
#   direct and vault again in the same rounds (warm 1, warm 16, new tunnel per request)
#   and gets a table of its own. BENCH_NO_OHA=1 leaves it out.
# Needs: cargo, nginx (Debian nginx-light), openssl, curl; mitmdump is optional (it is
# installed from PyPI when missing; rows are skipped if that fails).
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION="${BENCH_DURATION:-5s}"
WARMUP="${BENCH_WARMUP:-1s}"
IDLE_TUNNELS="${BENCH_IDLE_TUNNELS:-10000}"
ROUNDS="${BENCH_ROUNDS:-3}"
THREADS="${BENCH_CLIENT_THREADS:-2}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/palisade-target}"
SECRET_VALUE="bench-secret-$RANDOM$RANDOM"

work="$(mktemp -d -t palisade-bench.XXXXXX)"
pids=()
cleanup() {
  local status=$? pid
  if [ "$status" -ne 0 ]; then
    for log in "$work"/*.log "$work"/nginx/logs/error.log; do
      [ -s "$log" ] && { echo "--- $log" >&2; tail -n 20 "$log" >&2; }
    done
  fi
  for pid in "${pids[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${pids[@]}"; do
    for _ in $(seq 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say() { printf '== %s\n' "$*" >&2; }

# Waits (at most ~10 s) until a command succeeds.
wait_for() {
  local what="$1"
  shift
  for _ in $(seq 100); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  echo "timed out waiting for $what" >&2
  return 1
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

# CPU time (user + system, all threads) of the given processes, in clock ticks.
ticks_of() {
  local total=0 pid
  for pid in "$@"; do
    [ -r "/proc/$pid/stat" ] && total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
  done
  echo "$total"
}
# Context switches (voluntary and not, all live threads) of the given processes.
switches_of() {
  local total=0 pid
  for pid in "$@"; do
    total=$((total + $(cat /proc/"$pid"/task/*/status 2>/dev/null |
      awk '/ctxt_switches:/ {n += $2} END {print n + 0}')))
  done
  echo "$total"
}
# CPU time of this shell's finished children (the load generator of each run), in ms,
# into the variable CHILDREN_MS (`times` must run in this shell, not a subshell).
children_ms() {
  times >"$work/times"
  CHILDREN_MS="$(tail -n 1 "$work/times" | awk '{
    total = 0
    for (i = 1; i <= 2; i++) { split($i, part, "m"); total += part[1] * 60000 + part[2] * 1000 }
    printf "%d\n", total }')"
}
CLK_TCK="$(getconf CLK_TCK)"

# Ten thousand tunnels need ten thousand descriptors in the gateway and in the client.
hard_limit="$(ulimit -Hn)"
if [ "$hard_limit" = unlimited ] || [ "$hard_limit" -gt 65536 ]; then hard_limit=65536; fi
ulimit -n "$hard_limit"
if [ "$hard_limit" -lt $((IDLE_TUNNELS + 512)) ]; then
  IDLE_TUNNELS=$((hard_limit - 512))
  say "descriptor limit $hard_limit: idle tunnels lowered to $IDLE_TUNNELS"
fi

say "building release binaries"
cargo build --release --quiet -p palisade -p palisade-bench
palisade="$CARGO_TARGET_DIR/release/palisade"
load="$CARGO_TARGET_DIR/release/vault-load"

oha=""
if [ -z "${BENCH_NO_OHA:-}" ]; then
  if ! command -v oha >/dev/null 2>&1; then
    say "oha missing: cargo install oha (a few minutes, once)"
    cargo install --quiet --locked oha >&2 || say "oha could not be installed; its table is skipped"
  fi
  oha="$(command -v oha || true)"
fi

if ! command -v mitmdump >/dev/null 2>&1; then
  say "mitmdump missing: installing mitmproxy from PyPI (wheels only where sources fail to build)"
  timeout 300 python3 -m pip install --quiet --prefer-binary \
    --only-binary=zstandard,cryptography,aioquic,pylsqpack,mitmproxy-rs,brotli,ruamel.yaml.clib \
    'mitmproxy==11.0.2' >&2 || say "mitmproxy could not be installed; its rows are skipped"
fi

say "test CA and upstream certificate"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -keyout "$work/ca.key" -out "$work/ca.pem" -subj "/CN=Palisade bench CA" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
  -keyout "$work/upstream.key" -out "$work/upstream.csr" -subj "/CN=localhost" 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n' >"$work/upstream.ext"
openssl x509 -req -in "$work/upstream.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" \
  -CAcreateserial -days 2 -extfile "$work/upstream.ext" -out "$work/upstream.pem" 2>/dev/null

say "nginx upstream"
nginx_port="$(free_port)"
mkdir -p "$work/nginx/www" "$work/nginx/logs" "$work/nginx/tmp"
head -c 1024 /dev/zero | tr '\0' 'x' >"$work/nginx/www/1k"
# nginx_head DIR: the start of an nginx.conf run from DIR, up to inside `http {`.
nginx_head() {
  local dir="$1"
  cat <<EOF
# Workers run as this user so they can read the private temp dir.
user $(id -un);
worker_processes 2;
daemon off;
pid $dir/nginx.pid;
error_log $dir/logs/error.log warn;
events { worker_connections 16384; }
http {
  access_log off;
  default_type application/octet-stream;
  keepalive_timeout 300s;
  keepalive_requests 100000000;
  client_body_temp_path $dir/tmp/body;
  proxy_temp_path $dir/tmp/proxy;
  fastcgi_temp_path $dir/tmp/fastcgi;
  uwsgi_temp_path $dir/tmp/uwsgi;
  scgi_temp_path $dir/tmp/scgi;
EOF
}
{ nginx_head "$work/nginx"; cat <<EOF
  server {
    listen 127.0.0.1:$nginx_port ssl http2;
    server_name localhost;
    ssl_certificate $work/upstream.pem;
    ssl_certificate_key $work/upstream.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    root $work/nginx/www;
    location = /1k { }
    # 200 only when the vault injected the bench credential.
    location = /auth-check {
      if (\$http_authorization != "Bearer $SECRET_VALUE") { return 401; }
      return 200 "injected\n";
    }
  }
}
EOF
} >"$work/nginx/nginx.conf"
nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" -e "$work/nginx/logs/error.log" &
nginx_pid=$!
pids+=("$nginx_pid")
upstream="https://localhost:$nginx_port/1k"
wait_for nginx curl -sf --cacert "$work/ca.pem" "$upstream"

say "vault gateway (temporary PALISADE_HOME)"
export PALISADE_HOME="$work/home"
"$palisade" agents create bench --profile action >/dev/null
token="$("$palisade" agents token bench | tr -d '[:space:]')"
printf '%s' "$SECRET_VALUE" >"$work/secret"
"$palisade" secrets create --name bench-upstream --host-pattern localhost --inject bearer \
  --agent bench <"$work/secret" >/dev/null
rm -f "$work/secret"
"$palisade" rules create --name bench-allow --host-pattern localhost --action allow >/dev/null
"$palisade" vault ca-cert >"$work/vault-ca.pem"
vault_port="$(free_port)"
# One agent opens every benchmark connection, the idle tunnels included: its share of
# connections is raised above the default (256) and idle tunnels are kept while the
# idle run counts them.
vault_limits=(--max-connections-per-agent $((IDLE_TUNNELS + 1024)) --client-idle-timeout 15m)
RUST_LOG=warn "$palisade" vault serve --listen "127.0.0.1:$vault_port" "${vault_limits[@]}" \
  --upstream-ca "$work/ca.pem" --allow-local-upstream localhost >"$work/vault.log" 2>&1 &
vault_pid=$!
pids+=("$vault_pid")
wait_for vault curl -sf "http://127.0.0.1:$vault_port/healthz"
check="$(curl -sS --max-time 10 --proxy "http://127.0.0.1:$vault_port" --proxy-user "x:$token" \
  --cacert "$work/vault-ca.pem" -o /dev/null -w '%{http_code}' "https://localhost:$nginx_port/auth-check")"
if [ "$check" != 200 ]; then
  echo "the vault did not inject the bench credential (upstream answered $check)" >&2
  exit 1
fi
direct_check="$(curl -sS --max-time 10 --cacert "$work/ca.pem" -o /dev/null -w '%{http_code}' \
  "https://localhost:$nginx_port/auth-check")"
[ "$direct_check" = 401 ] || { echo "auth-check is not checking (direct got $direct_check)" >&2; exit 1; }

vault_b_port=""
if [ -n "${BENCH_VAULT_B_ENV:-}${BENCH_VAULT_B_BIN:-}" ]; then
  say "vault-b: ${BENCH_VAULT_B_BIN:-same binary} with env ${BENCH_VAULT_B_ENV:-(none)}"
  vault_b_port="$(free_port)"
  # shellcheck disable=SC2086 # the variable holds NAME=VALUE words on purpose
  env ${BENCH_VAULT_B_ENV:-} RUST_LOG=warn "${BENCH_VAULT_B_BIN:-$palisade}" vault serve \
    --listen "127.0.0.1:$vault_b_port" --socket-dir "$work/sockets-b" "${vault_limits[@]}" \
    --upstream-ca "$work/ca.pem" --allow-local-upstream localhost >"$work/vault-b.log" 2>&1 &
  vault_b_pid=$!
  pids+=("$vault_b_pid")
  wait_for vault-b curl -sf "http://127.0.0.1:$vault_b_port/healthz"
fi

ref_port=""
if [ -z "${BENCH_NO_NGINX_PROXY:-}" ]; then
  say "nginx as a reverse proxy (the reference bound)"
  ref_port="$(free_port)"
  mkdir -p "$work/ref/logs" "$work/ref/tmp"
  { nginx_head "$work/ref"; cat <<EOF
  upstream bench_upstream {
    server 127.0.0.1:$nginx_port;
    keepalive 256;
    keepalive_requests 100000000;
  }
  server {
    listen 127.0.0.1:$ref_port ssl http2;
    server_name localhost;
    ssl_certificate $work/upstream.pem;
    ssl_certificate_key $work/upstream.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    location / {
      proxy_pass https://bench_upstream;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host localhost;
      proxy_set_header Authorization "Bearer $SECRET_VALUE";
      proxy_ssl_server_name on;
      proxy_ssl_name localhost;
      proxy_ssl_verify on;
      proxy_ssl_trusted_certificate $work/ca.pem;
      proxy_ssl_session_reuse on;
    }
  }
}
EOF
  } >"$work/ref/nginx.conf"
  nginx -p "$work/ref" -c "$work/ref/nginx.conf" -e "$work/ref/logs/error.log" &
  ref_pid=$!
  pids+=("$ref_pid")
  wait_for nginx-proxy curl -sf --cacert "$work/ca.pem" "https://localhost:$ref_port/1k"
  ref_check="$(curl -sS --max-time 10 --cacert "$work/ca.pem" -o /dev/null -w '%{http_code}' \
    "https://localhost:$ref_port/auth-check")"
  if [ "$ref_check" != 200 ]; then
    echo "the nginx proxy did not set the bench credential (upstream answered $ref_check)" >&2
    exit 1
  fi
fi

mitm_port=""
if [ -z "${BENCH_NO_MITM:-}" ] && command -v mitmdump >/dev/null 2>&1; then
  say "mitmproxy reference peer"
  mitm_port="$(free_port)"
  mkdir -p "$work/mitm"
  mitmdump --quiet --listen-host 127.0.0.1 -p "$mitm_port" --set confdir="$work/mitm" \
    --set ssl_verify_upstream_trusted_ca="$work/ca.pem" >"$work/mitm.log" 2>&1 &
  mitm_pid=$!
  pids+=("$mitm_pid")
  if ! wait_for mitmproxy curl -sf --max-time 5 --proxy "http://127.0.0.1:$mitm_port" \
    --cacert "$work/mitm/mitmproxy-ca-cert.pem" "$upstream"; then
    say "mitmproxy did not come up; its rows are skipped"
    mitm_port=""
  fi
fi

results="$work/results.jsonl"
vias=(direct vault)
[ -n "$vault_b_port" ] && vias+=(vault-b)
[ -n "$ref_port" ] && vias+=(nginx-proxy)
[ -n "$mitm_port" ] && vias+=(mitmproxy)

# run ROUND VIA NAME MODE CONNECTIONS [EXTRA...]: one timed run, one JSON line appended.
run() {
  local round="$1" via="$2" name="$3" mode="$4" connections="$5"
  shift 5
  local args=(--url "$upstream" --mode "$mode" --connections "$connections"
    --duration "$DURATION" --warmup "$WARMUP" --threads "$THREADS" --expect-bytes 1024
    --label "$via $name" "$@")
  case "$via" in
    direct) args+=(--connect-to "127.0.0.1:$nginx_port" --ca "$work/ca.pem") ;;
    vault) args+=(--proxy "127.0.0.1:$vault_port" --ca "$work/vault-ca.pem") ;;
    vault-b) args+=(--proxy "127.0.0.1:$vault_b_port" --ca "$work/vault-ca.pem") ;;
    nginx-proxy) args+=(--connect-to "127.0.0.1:$ref_port" --ca "$work/ca.pem") ;;
    mitmproxy) args+=(--proxy "127.0.0.1:$mitm_port" --ca "$work/mitm/mitmproxy-ca-cert.pem") ;;
  esac
  say "round $round: $via $name ($DURATION)"
  # CPU spent by each process on the path during the run (warm-up included), for the
  # CPU-per-request table.
  local proxy_pid=""
  case "$via" in
    vault) proxy_pid="$vault_pid" ;;
    vault-b) proxy_pid="$vault_b_pid" ;;
    nginx-proxy) proxy_pid="$ref_pid $(pgrep -P "$ref_pid" | tr '\n' ' ')" ;;
    mitmproxy) proxy_pid="$mitm_pid" ;;
  esac
  local nginx_all=("$nginx_pid" $(pgrep -P "$nginx_pid" || true))
  local perf_pid="" perf_out=""
  if [ -n "${BENCH_PERF_DIR:-}" ] && { [ "$via" = vault ] || [ "$via" = nginx-proxy ]; }; then
    mkdir -p "$BENCH_PERF_DIR"
    perf_out="$BENCH_PERF_DIR/${via}-${name// /-}-round$round"
    perf record -q -F "${BENCH_PERF_FREQ:-1999}" ${BENCH_PERF_CALLGRAPH:--g} \
      -p "$(echo $proxy_pid | tr ' ' ',')" -o "$perf_out.data" >/dev/null 2>&1 &
    perf_pid=$!
  fi
  local stat_pid=""
  if [ -n "${BENCH_SYSCALLS_DIR:-}" ]; then
    mkdir -p "$BENCH_SYSCALLS_DIR"
    local counted="$proxy_pid"
    [ "$via" = direct ] && counted="${nginx_all[*]}"
    perf stat -x, -e "$syscall_events" -p "$(echo $counted | tr ' ' ',')" \
      -o "$BENCH_SYSCALLS_DIR/${via}-${name// /-}-round$round.csv" >/dev/null 2>&1 &
    stat_pid=$!
  fi
  local nginx_before proxy_before load_before proxy_switches_before nginx_switches_before
  nginx_before="$(ticks_of "${nginx_all[@]}")"
  proxy_before="$(ticks_of $proxy_pid)"
  nginx_switches_before="$(switches_of "${nginx_all[@]}")"
  proxy_switches_before="$(switches_of $proxy_pid)"
  children_ms
  load_before="$CHILDREN_MS"
  VAULT_LOAD_PROXY_TOKEN="$token" timeout 120 "$load" "${args[@]}" | tee -a "$results" >&2
  children_ms
  python3 -c 'import json, sys; row = json.loads(open(sys.argv[1]).readlines()[-1]); print(json.dumps({"label": row["label"], "requests_per_second": row["requests_per_second"], "seconds": float(sys.argv[2]), "load_ms": int(sys.argv[3]), "proxy_ms": int(sys.argv[4]), "nginx_ms": int(sys.argv[5]), "proxy_switches": int(sys.argv[6]), "nginx_switches": int(sys.argv[7])}))' \
    "$results" "$(( ${DURATION%s} + ${WARMUP%s} ))" "$(( CHILDREN_MS - load_before ))" \
    "$(( ($(ticks_of $proxy_pid) - proxy_before) * 1000 / CLK_TCK ))" \
    "$(( ($(ticks_of "${nginx_all[@]}") - nginx_before) * 1000 / CLK_TCK ))" \
    "$(( $(switches_of $proxy_pid) - proxy_switches_before ))" \
    "$(( $(switches_of "${nginx_all[@]}") - nginx_switches_before ))" >>"$work/cpu.jsonl"
  if [ -n "$stat_pid" ]; then
    kill -INT "$stat_pid" 2>/dev/null || true
    wait "$stat_pid" 2>/dev/null || true
    python3 -c 'import json, sys; row = json.loads(open(sys.argv[1]).readlines()[-1]); print("requests (timed and warm-up; estimated)," + str(round(row["requests_per_second"] * float(sys.argv[2]))))' \
      "$results" "$(( ${DURATION%s} + ${WARMUP%s} ))" >>"$BENCH_SYSCALLS_DIR/${via}-${name// /-}-round$round.csv"
  fi
  if [ -n "$perf_pid" ]; then
    kill -INT "$perf_pid" 2>/dev/null || true
    wait "$perf_pid" 2>/dev/null || true
    perf report -i "$perf_out.data" --stdio --no-children --sort comm,dso,symbol \
      --percent-limit 1 -g none 2>/dev/null | grep -v '^#' | grep -v '^$' | head -60 >"$perf_out.txt" || true
  fi
}

# System calls counted per process by BENCH_SYSCALLS_DIR (the proxy's, or nginx's for
# the direct runs).
syscall_events="raw_syscalls:sys_enter,syscalls:sys_enter_writev,syscalls:sys_enter_write,syscalls:sys_enter_sendto,syscalls:sys_enter_recvfrom,syscalls:sys_enter_read,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_futex,context-switches"

oha_results="$work/oha.jsonl"
# oha_run ROUND VIA NAME OHA-ARGS...: one timed oha run, one JSON line appended.
oha_run() {
  local round="$1" via="$2" name="$3"
  shift 3
  local args=(-z "$DURATION" --no-tui --output-format json "$@") url="$upstream"
  case "$via" in
    direct) args+=(--cacert "$work/ca.pem") ;;
    nginx-proxy) args+=(--cacert "$work/ca.pem") url="https://localhost:$ref_port/1k" ;;
    vault) args+=(-x "http://127.0.0.1:$vault_port"
      --proxy-header "Proxy-Authorization: Basic $(printf 'x:%s' "$token" | base64 -w0)"
      --cacert "$work/vault-ca.pem") ;;
  esac
  say "round $round: oha $via $name ($DURATION)"
  timeout 120 "$oha" "${args[@]}" "$url" >"$work/oha-run.json" 2>"$work/oha-run.err" || true
  python3 "$work/oha_row.py" "$work/oha-run.json" "$via" "$name" "$round" >>"$oha_results"
}
cat >"$work/oha_row.py" <<'PY'
import json, sys
path, via, name, round_ = sys.argv[1:]
try:
    data = json.load(open(path))
except Exception as error:
    print(json.dumps({"via": via, "name": name, "round": int(round_), "error": str(error)}))
    sys.exit(0)
summary, pct = data.get("summary", {}), data.get("latencyPercentiles", {})
print(json.dumps({"via": via, "name": name, "round": int(round_),
    "requests_per_second": summary.get("requestsPerSec") or 0,
    "p50_ms": (pct.get("p50") or 0) * 1000, "p99_ms": (pct.get("p99") or 0) * 1000,
    "success_rate": summary.get("successRate") or 0}))
PY

# Peers run back to back within each mode, and the whole set is repeated, so a burst
# of background load on the machine hits every peer alike; the table takes medians.
for round in $(seq "$ROUNDS"); do
  for via in "${vias[@]}"; do run "$round" "$via" "warm 1" warm 1; done
  for via in "${vias[@]}"; do run "$round" "$via" "warm 16" warm 16; done
  for via in "${vias[@]}"; do run "$round" "$via" "new" new 1; done
  for via in "${vias[@]}"; do run "$round" "$via" "warm 16 h2" warm 16 --http2; done
  if [ -n "$oha" ]; then
    oha_vias=(direct vault)
    [ -n "$ref_port" ] && oha_vias+=(nginx-proxy)
    for via in "${oha_vias[@]}"; do oha_run "$round" "$via" "warm 1" -c 1; done
    for via in "${oha_vias[@]}"; do oha_run "$round" "$via" "warm 16" -c 16; done
    for via in "${oha_vias[@]}"; do oha_run "$round" "$via" "new" -c 1 --disable-keepalive; done
  fi
done

rss_after_load="$(rss_kib "$vault_pid")"
say "vault RSS after load: $rss_after_load KiB"
rss_b_after_load=0
if [ -n "$vault_b_port" ]; then
  rss_b_after_load="$(rss_kib "$vault_b_pid")"
  say "vault-b RSS after load: $rss_b_after_load KiB"
fi
say "vault: $IDLE_TUNNELS idle tunnels"
VAULT_LOAD_PROXY_TOKEN="$token" timeout 300 "$load" --url "$upstream" --mode idle \
  --connections "$IDLE_TUNNELS" --open-concurrency 64 --open-within 180s \
  --watch-pid "$vault_pid" --threads "$THREADS" --expect-bytes 1024 --label "vault idle" \
  --proxy "127.0.0.1:$vault_port" --ca "$work/vault-ca.pem" | tee -a "$results" >&2
# The gateway hands freed memory back at most 5 s after many connections closed.
sleep 7
rss_after_idle_closed="$(rss_kib "$vault_pid")"

python3 - "$results" "$rss_after_load" "$rss_after_idle_closed" "$rss_b_after_load" <<'EOF'
import json, statistics, sys
path, rss_load, rss_closed, rss_b_load = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rows = [json.loads(line) for line in open(path) if line.strip()]
idle = [r for r in rows if r["mode"] == "idle"]
runs = {}
for r in rows:
    if r["mode"] != "idle":
        runs.setdefault(r["label"], []).append(r)
median = lambda values: statistics.median(values)
timed = {}
for label, group in runs.items():
    timed[label] = {
        "mode": group[0]["mode"],
        "requests_per_second": median([g["requests_per_second"] for g in group]),
        "p50_ms": median([g["p50_ms"] for g in group]),
        "p99_ms": median([g["p99_ms"] for g in group]),
        "errors": sum(g["errors"] for g in group),
        "rounds": len(group),
        "first_error": next((g["first_error"] for g in group if g.get("first_error")), None),
    }
order = ["warm 1", "warm 16", "new", "warm 16 h2"]
peers = ["direct", "vault", "vault-b", "nginx-proxy", "mitmproxy"]
def position(label):
    via, rest = label.split(" ", 1)
    return (order.index(rest) if rest in order else 99, peers.index(via) if via in peers else 99)
labels = sorted(timed, key=position)
print("| run | req/s | p50 ms | p99 ms | errors | vs direct |")
print("|---|---:|---:|---:|---:|---|")
for label in labels:
    r = timed[label]
    via, rest = label.split(" ", 1)
    base = timed.get("direct " + rest)
    if via == "direct" or base is None:
        ratio = ""
    elif r["mode"] == "new":
        ratio = f"{via}/direct p50 = {r['p50_ms'] / base['p50_ms']:.2f}x (+{r['p50_ms'] - base['p50_ms']:.3f} ms)"
    else:
        ratio = f"{via}/direct = {r['requests_per_second'] / base['requests_per_second']:.2f}, p50 +{r['p50_ms'] - base['p50_ms']:.3f} ms"
    print(f"| {label} | {r['requests_per_second']:.0f} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | {r['errors']} | {ratio} |")
    if r.get("first_error"):
        print(f"|  first error: {r['first_error'][:120]} | | | | | |")
print()
print(f"medians of {max(r['rounds'] for r in timed.values())} rounds")
print()
print(f"vault RSS after load: {rss_load / 1024:.1f} MiB")
if rss_b_load:
    print(f"vault-b RSS after load: {rss_b_load / 1024:.1f} MiB")
for r in idle:
    before, after = r["rss_before_kib"] or 0, r["rss_after_kib"] or 0
    print(f"vault idle tunnels: {r['opened']}/{r['requested']} open in {r['open_seconds']:.1f} s, "
          f"RSS {before / 1024:.1f} -> {after / 1024:.1f} MiB "
          f"(+{(after - before) / 1024:.1f} MiB, {r['per_tunnel_kib'] or 0:.1f} KiB per tunnel), errors {r['errors']}")
    if r.get("first_error"):
        print(f"  first error: {r['first_error'][:200]}")
print(f"vault RSS after the idle tunnels closed: {rss_closed / 1024:.1f} MiB")
EOF

# CPU per request of each process on the path (medians over the rounds). When every
# process is CPU-bound on the same cores, the throughput ratio cannot exceed the ratio
# of the paths' total CPU per request: that is the ceiling this machine allows.
python3 - "$work/cpu.jsonl" <<'EOF'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
groups = {}
for r in rows:
    groups.setdefault(r["label"], []).append(r)
def per_request(r, key):
    requests = r["requests_per_second"] * r["seconds"]
    return r[key] * 1000 / requests if requests else 0
print()
print("CPU per request, µs (user + system, warm-up included; medians of the rounds), and")
print("context switches per request of the proxy and of nginx:")
print()
print("| run | load generator | proxy | nginx | total | ceiling vs direct | proxy switches | nginx switches |")
print("|---|---:|---:|---:|---:|---|---:|---:|")
totals, switches = {}, {}
for label, group in groups.items():
    cells = {key: statistics.median(per_request(r, key) for r in group)
             for key in ("load_ms", "proxy_ms", "nginx_ms")}
    totals[label] = (cells, sum(cells.values()))
    # per_request scales by 1000 (ms to µs); switches are counts.
    switches[label] = {key: statistics.median(per_request(r, key) for r in group) / 1000
                       for key in ("proxy_switches", "nginx_switches")}
order = ["warm 1", "warm 16", "new", "warm 16 h2"]
peers = ["direct", "vault", "vault-b", "nginx-proxy", "mitmproxy"]
def position(label):
    via, rest = label.split(" ", 1)
    return (order.index(rest) if rest in order else 99, peers.index(via) if via in peers else 99)
for label in sorted(totals, key=position):
    cells, total = totals[label]
    via, rest = label.split(" ", 1)
    base = totals.get("direct " + rest)
    ceiling = f"{base[1] / total:.2f}" if via != "direct" and base and total else ""
    proxy = f"{cells['proxy_ms']:.1f}" if via != "direct" else ""
    proxy_switches = f"{switches[label]['proxy_switches']:.2f}" if via != "direct" else ""
    print(f"| {label} | {cells['load_ms']:.1f} | {proxy} | {cells['nginx_ms']:.1f} | {total:.1f} | {ceiling} "
          f"| {proxy_switches} | {switches[label]['nginx_switches']:.2f} |")
EOF

if [ -s "$oha_results" ]; then
  python3 - "$oha_results" <<'EOF'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
groups = {}
for r in rows:
    groups.setdefault((r["via"], r["name"]), []).append(r)
def median(group, key):
    values = [g.get(key, 0) for g in group if "error" not in g]
    return statistics.median(values) if values else 0
print()
print("oha (independent load generator), same rounds:")
print()
print("| run | req/s | p50 ms | p99 ms | success | vs direct |")
print("|---|---:|---:|---:|---:|---|")
for name in ["warm 1", "warm 16", "new"]:
    base = groups.get(("direct", name), [])
    for via in ["direct", "vault", "nginx-proxy"]:
        group = groups.get((via, name))
        if not group:
            continue
        rps, p50, p99 = median(group, "requests_per_second"), median(group, "p50_ms"), median(group, "p99_ms")
        success = min(g.get("success_rate", 0) for g in group)
        ratio = ""
        if via != "direct" and base:
            if name == "new":
                ratio = f"p50 +{p50 - median(base, 'p50_ms'):.3f} ms"
            else:
                ratio = f"{rps / max(median(base, 'requests_per_second'), 1e-9):.2f}, p50 +{p50 - median(base, 'p50_ms'):.3f} ms"
        print(f"| oha {via} {name} | {rps:.0f} | {p50:.3f} | {p99:.3f} | {success:.3f} | {ratio} |")
EOF
fi

if [ -n "${BENCH_SYSCALLS_DIR:-}" ]; then
  python3 - "$BENCH_SYSCALLS_DIR" <<'PY'
import glob, os, statistics, sys
# Per run and process: system calls by kind and context switches per request (medians
# over the rounds; the request count includes the warm-up, as perf stat's counts do).
columns = ["sys_enter", "sys_enter_writev", "sys_enter_write", "sys_enter_sendto",
           "sys_enter_recvfrom", "sys_enter_read", "sys_enter_epoll_wait",
           "sys_enter_futex", "context-switches"]
runs = {}
for path in glob.glob(os.path.join(sys.argv[1], "*.csv")):
    label = os.path.basename(path)[:-4].rsplit("-round", 1)[0]
    lines = [l.strip() for l in open(path) if l.strip() and not l.startswith("#")]
    try:
        requests = int(lines[-1].rsplit(",", 1)[1])
    except (IndexError, ValueError):
        print(f"{path}: no counts (perf stat failed?)", file=sys.stderr)
        continue
    if requests <= 0:
        continue
    counts = {}
    for line in lines[:-1]:
        fields = line.split(",")
        if fields[0].isdigit():
            counts[fields[2].split(":")[-1]] = int(fields[0]) / requests
    runs.setdefault(label, []).append(counts)
order = {"warm-1": 0, "warm-16": 1, "new": 2, "warm-16-h2": 3}
def split(label):
    for via in ("nginx-proxy", "vault-b", "vault", "mitmproxy", "direct"):
        if label.startswith(via + "-"):
            return via, label[len(via) + 1:]
    return label, ""
def key(label):
    via, mode = split(label)
    return (order.get(mode, 9), via)
print()
print("System calls and context switches per request (the proxy's; nginx's for direct):")
print()
print("| run | all | writev | write | sendto | recvfrom | read | epoll_wait | futex | switches |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for label in sorted(runs, key=key):
    cells = [f"{statistics.median(r.get(c, 0) for r in runs[label]):.2f}" for c in columns]
    via, mode = split(label)
    print(f"| {via} {mode.replace('-', ' ')} | " + " | ".join(cells) + " |")
PY
fi

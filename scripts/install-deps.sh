#!/usr/bin/env bash
# Installs what Palisade's build and tests need on a fresh Debian machine.
# Idempotent: only what is missing is installed. Runs as root, or through sudo.
set -euo pipefail

APT_PACKAGES=(
  bubblewrap podman runc uidmap slirp4netns fuse-overlayfs debootstrap
  chromium chromium-driver nginx-light curl git ca-certificates python3-pip
  sqlite3 iproute2 procps nodejs python3-requests openssl hyperfine keyutils
  e2fsprogs util-linux mount
  # C compiler and headers: bundled SQLite and zstd are built from their C sources.
  gcc libc6-dev
)
# pip name, then the module that proves it is installed.
PIP_PACKAGES=(
  "requests:requests"
  "httpx[http2]:h2"
  "httpx[http2]:httpx"
  "anthropic:anthropic"
  "websockets:websockets"
  "websocket-client:websocket"
)

step() { printf '[install-deps] %s\n' "$*"; }
fail() { printf '[install-deps] error: %s\n' "$*" >&2; exit 1; }

if [ "$(id -u)" -eq 0 ]; then
  SUDO=()
elif command -v sudo >/dev/null 2>&1; then
  SUDO=(sudo -n)
else
  fail "not root and sudo is not available; run this script as root"
fi

export DEBIAN_FRONTEND=noninteractive
log=$(mktemp)
trap 'rm -f "$log"' EXIT

run_quiet() {
  # Runs a command with its output kept aside; shows the tail of it on failure.
  if ! "$@" >"$log" 2>&1; then
    tail -n 20 "$log" >&2
    return 1
  fi
}

missing=()
for package in "${APT_PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$package")
  fi
done
step "apt-get update"
run_quiet "${SUDO[@]}" apt-get update -q || fail "apt-get update failed"
if [ "${#missing[@]}" -gt 0 ]; then
  step "apt-get install ${missing[*]}"
  run_quiet "${SUDO[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}" \
    || fail "apt-get install failed for: ${missing[*]}"
else
  step "system packages: all present"
fi

command -v python3 >/dev/null 2>&1 || fail "python3 not found after installing system packages"
# The @onecli-sh/sdk compatibility test runs the real npm package. Debian ships npm
# apart from nodejs, while NodeSource's nodejs bundles it (and conflicts with Debian's).
if ! command -v npm >/dev/null 2>&1; then
  step "apt-get install npm"
  run_quiet "${SUDO[@]}" apt-get install -y -q --no-install-recommends npm \
    || fail "apt-get install failed for: npm"
fi
pip_missing=()
for entry in "${PIP_PACKAGES[@]}"; do
  name=${entry%%:*}
  module=${entry##*:}
  if ! python3 -c "import $module" >/dev/null 2>&1; then
    case " ${pip_missing[*]-} " in *" $name "*) ;; *) pip_missing+=("$name") ;; esac
  fi
done
if [ "${#pip_missing[@]}" -gt 0 ]; then
  step "pip install ${pip_missing[*]}"
  pip_cmd=(python3 -m pip install --quiet --disable-pip-version-check)
  # Debian's own python3 refuses pip installs outside a venv (PEP 668); these are
  # test clients on a test machine, so installing beside the system packages is fine.
  if ! run_quiet "${pip_cmd[@]}" "${pip_missing[@]}"; then
    if grep -q externally-managed "$log"; then
      run_quiet "${SUDO[@]}" "${pip_cmd[@]}" --break-system-packages "${pip_missing[@]}" \
        || fail "pip install failed for: ${pip_missing[*]}"
    else
      fail "pip install failed for: ${pip_missing[*]}"
    fi
  fi
else
  step "python packages: all present"
fi

if ! command -v cargo >/dev/null 2>&1; then
  fail "cargo not found: install the Rust toolchain (rustup) and put cargo on PATH"
fi
step "done ($(cargo --version))"

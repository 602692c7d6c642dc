#!/usr/bin/env bash
# Set up everything in one go: Chromium (Debian) for the browser tests, Node.js + npm if
# missing, .venv with chatwidget (editable, dev extras) and CPU torch, the JS toolchain
# through npm, and the front-end bundle.
#
#   ./scripts/setup.sh              set up (again) from scratch, always
#   ./scripts/setup.sh --if-needed  only when something is missing or changed (what
#                                   ./scripts/test.sh and ./scripts/demo.sh run first)
#
# --if-needed compares a stamp (.venv/.chatwidget-setup) holding the hashes of
# pyproject.toml, js/package-lock.json and this script with the files of now, and checks
# that the venv, node_modules, the bundle and Chromium exist. A bundle older than js/src
# is rebuilt (about a second). On a machine that is set up, the check takes well under 1 s.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
# torch 2.13.0 CPU is available as a local wheel on the project's machines; a looser spec
# would pull a multi-GB CUDA build from PyPI. Override with TORCH_SPEC if you need another.
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
CHROMIUM=${CHATWIDGET_CHROMIUM:-/usr/bin/chromium}
STAMP=.venv/.chatwidget-setup

step() { printf '\n==> [%s] %s\n' "$(date +%T)" "$*"; }

# What the stamp records: the inputs that decide what gets installed.
fingerprint() {
  { sha256sum pyproject.toml js/package-lock.json scripts/setup.sh; echo "torch: $TORCH_SPEC"; } \
    2>/dev/null
}

# Why a set-up is needed ("" when everything is in place and unchanged).
missing() {
  [ -x .venv/bin/python ] || { echo "no .venv"; return; }
  [ -f "$STAMP" ] || { echo "never set up here"; return; }
  [ "$(cat "$STAMP")" = "$(fingerprint)" ] \
    || { echo "pyproject.toml, js/package-lock.json or scripts/setup.sh changed"; return; }
  [ -f js/node_modules/.package-lock.json ] || { echo "no js/node_modules"; return; }
  [ -f chatwidget/static/widget.js ] || { echo "no front-end bundle"; return; }
  command -v npm >/dev/null 2>&1 || { echo "no npm"; return; }
  if [ ! -x "$CHROMIUM" ] && command -v apt-get >/dev/null 2>&1; then
    echo "no Chromium at $CHROMIUM"
    return
  fi
}

# The bundle is built on install; rebuild it when a front-end source is newer.
rebuild_stale_bundle() {
  if [ -n "$(find js/src js/build.mjs -newer chatwidget/static/widget.js -print -quit)" ]; then
    echo "front-end sources changed since the bundle was built: rebuilding it"
    (cd js && npm run --silent build)
  fi
}

if [ "${1:-}" = "--if-needed" ]; then
  started=$EPOCHREALTIME
  why=$(missing)
  if [ -z "$why" ]; then
    rebuild_stale_bundle
    elapsed_us=$(( ${EPOCHREALTIME/./} - ${started/./} ))
    printf '==> set-up is current (checked in %d.%02d s)\n' $((elapsed_us / 1000000)) $((elapsed_us % 1000000 / 10000))
    exit 0
  fi
  echo "==> setting up: $why"
fi

SUDO=""
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi
APT_UPDATED=""
apt_install() {
  if [ -z "$APT_UPDATED" ]; then
    $SUDO apt-get update -qq
    APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
}

# Some machines' pip config names local indexes that may be missing; pip then warns once per
# package. Hide only that warning, keep pip's exit status.
pip_install() {
  .venv/bin/python -m pip install -q "$@" 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }
}

step "Chromium for browser tests"
if [ -x "$CHROMIUM" ]; then
  echo "found $CHROMIUM"
elif command -v apt-get >/dev/null 2>&1; then
  apt_install chromium
  echo "installed $(/usr/bin/chromium --version 2>/dev/null | tail -1)"
else
  echo "SKIPPED: apt-get is not available, so Chromium was not installed."
  echo "         Browser tests need /usr/bin/chromium (or CHATWIDGET_CHROMIUM=/path/to/chromium)."
fi

step "Node.js and npm"
if ! command -v npm >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    apt_install nodejs npm
  else
    echo "npm not found: install Node.js 20+ and npm, then run again." >&2
    exit 1
  fi
fi
node --version

step "Python environment in .venv"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
pip_install --upgrade pip
pip_install "$TORCH_SPEC"

step "JS dependencies (npm ci in js/)"
(cd js && if [ -f package-lock.json ]; then npm ci --no-audit --no-fund; else npm install --no-audit --no-fund; fi)

step "chatwidget, editable, with dev extras (builds the front-end bundle)"
rm -f chatwidget/static/widget.js chatwidget/static/widget.css
pip_install -e ".[dev]" "$TORCH_SPEC"
test -f chatwidget/static/widget.js || { echo "front-end bundle was not built" >&2; exit 1; }

fingerprint >"$STAMP"
step "Done"
echo "Run the demo:   ./scripts/demo.sh"
echo "Run the tests:  ./scripts/test.sh"

#!/usr/bin/env bash
# Set up everything in one go: .venv with chatwidget (editable, dev extras) and CPU torch,
# the JS toolchain through npm, and Chromium from Debian for the browser tests.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
# torch 2.13.0 CPU is available as a local wheel on the project's machines; a looser spec
# would pull a multi-GB CUDA build from PyPI. Override with TORCH_SPEC if you need another.
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}

step() { printf '\n==> [%s] %s\n' "$(date +%T)" "$*"; }

# Some machines' pip config names local indexes that may be missing; pip then warns once per
# package. Hide only that warning, keep pip's exit status.
pip_install() {
  .venv/bin/python -m pip install -q "$@" 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }
}

step "Chromium for browser tests"
if [ -x /usr/bin/chromium ]; then
  echo "found /usr/bin/chromium"
elif command -v apt-get >/dev/null 2>&1; then
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
  echo "installed $(/usr/bin/chromium --version 2>/dev/null | tail -1)"
else
  echo "SKIPPED: apt-get is not available, so Chromium was not installed."
  echo "         Browser tests need /usr/bin/chromium (or CHATWIDGET_CHROMIUM=/path/to/chromium)."
fi

step "Node.js and npm"
if ! command -v npm >/dev/null 2>&1; then
  echo "npm not found: install Node.js 20+ (e.g. apt-get install nodejs npm) and run again." >&2
  exit 1
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

step "Done"
echo "Run the tests:  ./scripts/test.sh"
echo "Run the demo:   .venv/bin/chatwidget demo"

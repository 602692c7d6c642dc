#!/usr/bin/env bash
# Every test, on any machine: sets up whatever is missing first (./scripts/setup.sh
# --if-needed: a second or less when nothing changed), then lint, types, JS unit tests,
# Python tests (unit, integration, browser in JupyterLab, Notebook 7 and marimo) and every
# notebook under nbval. The browser tests run in a second pytest process beside the rest.
# Extra arguments go to pytest (then a single run, with your selection).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> [%s] %s\n' "$(date +%T)" "$*"; }

step "set-up check"
./scripts/setup.sh --if-needed

PY=.venv/bin/python
export PATH="$PWD/.venv/bin:$PATH"

step "ruff"
$PY -m ruff check chatwidget tests bench
$PY -m ruff format --check chatwidget tests bench

step "mypy (strict on chatwidget/)"
$PY -m mypy

step "tsc --noEmit and prettier"
(cd js && npx tsc --noEmit && npx prettier --check --log-level warn src tests dev vitest.config.ts build.mjs)

step "JS unit tests (vitest + jsdom)"
(cd js && npx vitest run)

# The notebooks run offline, on the bundled local hub with tiny models.
export CHATWIDGET_OFFLINE=1
# One math thread per process: on a small machine the suite runs hubs, download children and
# kernels beside torch, and OpenMP's spinning threads then slow everything down.
export OMP_NUM_THREADS=1
NBVAL=(--nbval-lax --nbval-sanitize-with notebooks/sanitize.cfg)

if [ "$#" -gt 0 ]; then
  # A selection of your own (-k, -m, a file ...): one pytest run, as you asked for it. With
  # no path among the arguments it runs over tests/ and notebooks/.
  paths=(tests notebooks)
  for arg in "$@"; do
    if [ -e "${arg%%::*}" ]; then paths=(); break; fi
  done
  step "pytest ${paths[*]} $*"
  exec $PY -m pytest "${paths[@]}" "${NBVAL[@]}" "$@"
fi

# The whole suite in two processes side by side: the browser tests spend most of their time
# waiting (kernels starting, throttled downloads), the rest mostly computes. Every test runs
# in exactly one of them (-m browser / -m "not browser"). Each pytest exits non-zero when it
# fails or collects nothing (5), and then so does this script.
step "Python tests and notebooks (pytest, nbval): browser tests in a second process beside the rest"
mkdir -p test-artifacts
BROWSER_LOG=test-artifacts/pytest-browser.log
# With job control on (set -m), the background job gets SIGINT like a foreground one: without
# it, bash starts background jobs with SIGINT ignored, and the tests that press Ctrl+C on a
# process they start (`chatwidget demo`) would see it ignored too. It then has its own
# process group, so Ctrl+C here is passed on to it by the trap.
set -m
$PY -m pytest tests -m browser -p no:cacheprovider >"$BROWSER_LOG" 2>&1 &
browser_pid=$!
set +m
trap 'kill -INT "$browser_pid" 2>/dev/null || true' INT EXIT
set +e
$PY -m pytest tests notebooks -m "not browser" "${NBVAL[@]}"
rest=$?
wait "$browser_pid"
browser=$?
set -e
trap - INT EXIT
step "browser tests (pytest -m browser, output from $BROWSER_LOG)"
cat "$BROWSER_LOG"
printf '\n==> [%s] pytest exit status: %s (not browser), %s (browser)\n' "$(date +%T)" "$rest" "$browser"
[ "$rest" -eq 0 ] && [ "$browser" -eq 0 ]

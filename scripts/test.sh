#!/usr/bin/env bash
# Every test, on any machine: sets up whatever is missing first (./scripts/setup.sh
# --if-needed: a second or less when nothing changed), then lint, types, JS unit tests,
# Python tests (unit, integration, browser in JupyterLab, Notebook 7 and marimo) and every
# notebook under nbval. Extra arguments go to pytest.
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

step "Python tests and notebooks (pytest, nbval)"
# The notebooks run offline, on the bundled local hub with tiny models.
export CHATWIDGET_OFFLINE=1
# One math thread per process: on a small machine the suite runs hubs, download children and
# kernels beside torch, and OpenMP's spinning threads then slow everything down.
export OMP_NUM_THREADS=1
# pytest exits 5 when it collects nothing; that is a failure here, as is any other non-zero.
$PY -m pytest tests notebooks --nbval-lax --nbval-sanitize-with notebooks/sanitize.cfg "$@"

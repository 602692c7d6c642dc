#!/usr/bin/env bash
# The whole suite: lint, types, JS unit tests, Python tests (unit, integration, browser),
# and the notebooks under nbval. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
export PATH="$PWD/.venv/bin:$PATH"

step() { printf '\n==> [%s] %s\n' "$(date +%T)" "$*"; }

step "ruff"
$PY -m ruff check chatwidget tests bench
$PY -m ruff format --check chatwidget tests bench

step "mypy (strict on chatwidget/)"
$PY -m mypy

step "tsc --noEmit"
(cd js && npx tsc --noEmit)

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

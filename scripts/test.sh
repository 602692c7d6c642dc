#!/usr/bin/env bash
# The whole suite: lint, types, JS unit tests, Python tests (unit, integration, browser),
# and the notebooks under nbval. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
export PATH="$PWD/.venv/bin:$PATH"

step() { printf '\n==> %s\n' "$*"; }

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
# pytest exits 5 when it collects nothing; that is a failure here, as is any other non-zero.
$PY -m pytest tests notebooks --nbval-lax --nbval-sanitize-with notebooks/sanitize.cfg "$@"

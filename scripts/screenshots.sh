#!/usr/bin/env bash
# Make the README's screenshots again: docs/screenshot.png (light) and
# docs/screenshot-dark.png, from tests/browser/test_browser_accessibility.py (a
# deterministic parrot model's Markdown reply beside a download in progress, offline).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh --if-needed
export OMP_NUM_THREADS=1 CHATWIDGET_UPDATE_DOCS=1
.venv/bin/python -m pytest tests/browser/test_browser_accessibility.py -q
ls -l docs/screenshot.png docs/screenshot-dark.png

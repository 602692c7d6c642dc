#!/usr/bin/env bash
# The offline demo, on any machine: sets up whatever is missing first (./scripts/setup.sh
# --if-needed: a second or less when nothing changed), then runs `chatwidget demo`.
# Extra arguments pass through:
#   ./scripts/demo.sh                 JupyterLab on the quickstart, local hub + tiny models
#   ./scripts/demo.sh --hub           the same with real models from the Hugging Face Hub
#   ./scripts/demo.sh --marimo        marimo on notebooks/marimo_quickstart.py instead
#   ./scripts/demo.sh --help          every option
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh --if-needed
exec .venv/bin/chatwidget demo "$@"

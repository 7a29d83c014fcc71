#!/usr/bin/env bash
# Run the whole test suite in the repo's own virtual environment (created on first use).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/system_deps.sh
exec .venv/bin/python -m pytest "$@"

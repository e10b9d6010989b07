#!/usr/bin/env bash
# Sets everything up (Python venv, npm packages) and runs the whole test suite:
# ruff, mypy --strict on shared/, and pytest (unit, integration, e2e).
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -m unit`.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
if [ ! -f node_modules/azurite/package.json ]; then
  npm ci --no-audit --no-fund --silent
fi

echo "== ruff"
.venv/bin/ruff check .
echo "== mypy --strict shared/"
.venv/bin/mypy
echo "== pytest"
mkdir -p .local
.venv/bin/python -m pytest -p no:cacheprovider --junitxml=.local/test-results.xml "$@"

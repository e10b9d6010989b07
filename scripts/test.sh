#!/usr/bin/env bash
# Sets everything up (Python venv, npm packages) and runs the whole test suite:
# ruff, mypy --strict on shared/, and pytest (unit, integration, e2e).
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -m unit`.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/python ]; then
  if ! python3 -m venv .venv; then
    # Debian's python3 ships venv separately.
    rm -rf .venv
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      apt-get update -qq && apt-get install -y -qq python3-venv
      python3 -m venv .venv
    else
      echo "error: could not create .venv; install python3-venv first" >&2
      exit 1
    fi
  fi
fi
if ! command -v npm >/dev/null; then
  echo "error: Node.js 20 and npm are needed (Azurite runs on Node)" >&2
  exit 1
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
# The Functions worker's own indexing code (see the file for why it is installed apart).
.venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps \
  --ignore-requires-python -r requirements-worker.txt
if [ ! -f node_modules/azurite/package.json ]; then
  npm ci --no-audit --no-fund --silent
fi
# The developer console's browser tests run Debian's chromium (browser downloads are not possible).
if ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "error: the console's browser tests need chromium: sudo apt-get install chromium" >&2
    exit 1
  fi
fi

echo "== ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check --exclude "*.md" .
echo "== mypy --strict shared/"
.venv/bin/mypy
echo "== pytest"
mkdir -p .local
.venv/bin/python -m pytest -p no:cacheprovider --junitxml=.local/test-results.xml "$@"

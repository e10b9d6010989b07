#!/usr/bin/env bash
# The APNs benchmark in one command: installs what it needs, then runs our client, aioapns,
# @parse/node-apn and h2load side by side against one local nginx (loopback only).
#
#   bash bench/apns/run.sh                       # 3 rounds of 20,000 pushes each; writes bench/results/apns.json
#   bash bench/apns/run.sh --pushes 5000 --rounds 1 --out -      # quick look, no JSON
#   bash bench/apns/run.sh --only pushrelay --profile cprofile   # where our CPU goes
#
# Installs: Debian's nginx and nghttp2-client (h2load) with apt-get; aioapns into its own
# virtualenv bench/.venv-aioapns; @parse/node-apn under bench/apns/node (its own package.json
# and lock file). None of these is a dependency of pushrelay itself.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cd "$repo"

AIOAPNS_VERSION="4.0"
python_bin="${PYTHON:-python3.11}"
command -v "$python_bin" >/dev/null || python_bin=python3

sudo_if_needed() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

if ! command -v nginx >/dev/null && [ ! -x /usr/sbin/nginx ] || ! command -v h2load >/dev/null; then
  echo "== installing nginx and h2load (apt-get)"
  sudo_if_needed apt-get update -q
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -q nginx nghttp2-client
fi
export PATH="$PATH:/usr/sbin"

if [ ! -x .venv/bin/python ]; then
  echo "== creating .venv with pushrelay's requirements"
  "$python_bin" -m venv .venv
  .venv/bin/pip install -q -r requirements.txt
fi

aioapns_python=bench/.venv-aioapns/bin/python
if ! "$aioapns_python" -c "import importlib.metadata as m, sys; sys.exit(m.version('aioapns') != '$AIOAPNS_VERSION')" 2>/dev/null; then
  echo "== installing aioapns $AIOAPNS_VERSION into bench/.venv-aioapns"
  "$python_bin" -m venv bench/.venv-aioapns
  "$aioapns_python" -m pip install -q "aioapns==$AIOAPNS_VERSION"
fi

if [ ! -f bench/apns/node/node_modules/@parse/node-apn/package.json ] \
  || [ bench/apns/node/package-lock.json -nt bench/apns/node/node_modules/.package-lock.json ]; then
  echo "== installing @parse/node-apn (npm ci)"
  (cd bench/apns/node && npm ci --no-audit --no-fund --loglevel=error)
fi

exec .venv/bin/python bench/apns/bench.py "$@"

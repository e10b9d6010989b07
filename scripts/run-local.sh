#!/usr/bin/env bash
# Sets everything up (Python venv, npm packages) and runs the app locally: Azurite, the
# development services (APNs simulator, local ACS identity service, local identity provider,
# each unless the real one is configured in local.settings.json) and the local development
# host on http://127.0.0.1:7071. Ctrl-C stops everything.
# Extra arguments go to devtools/run_local.py, e.g. `bash scripts/run-local.sh --port 7072`.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/python ]; then
  if ! python3 -m venv .venv; then
    rm -rf .venv
    echo "error: could not create .venv; on Debian/Ubuntu install python3-venv first" >&2
    exit 1
  fi
fi
exec .venv/bin/python -m devtools.run_local "$@"

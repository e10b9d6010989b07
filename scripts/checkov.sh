#!/usr/bin/env bash
# Static analysis of infra/ (Bicep) with checkov, in its own virtual environment (.venv-checkov):
# checkov pins old versions of common libraries, so it never goes into .venv.
# Configuration and every suppression, with its reason: .checkov.yaml.
# Exits non-zero when a check fails or checkov cannot run.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv-checkov/bin/checkov ]; then
  python3 -m venv .venv-checkov
  .venv-checkov/bin/python -m pip install --quiet --disable-pip-version-check 'checkov==3.*'
fi

echo "== checkov (bicep)"
.venv-checkov/bin/checkov --config-file .checkov.yaml "$@"

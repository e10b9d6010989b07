#!/usr/bin/env bash
# Refreshes the developer console's pictures in docs/console/ (the README shows them): runs the
# console's browser tests, which save their screenshots when CONSOLE_SCREENSHOTS names a folder.
# Needs what scripts/test.sh installs (run it once first); fonts-noto-color-emoji, when
# installed, draws the emoji the way a phone does.
set -euo pipefail
cd "$(dirname "$0")/.."
CONSOLE_SCREENSHOTS="$PWD/docs/console" .venv/bin/python -m pytest -q -p no:cacheprovider \
  tests/e2e/test_console_browser.py -k "decrypted or call or fault" "$@"
ls -l docs/console/*.png

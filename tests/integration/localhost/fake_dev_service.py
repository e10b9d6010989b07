"""A development service that follows the command-line contract, for the local-run tests.

``python -m tests.integration.localhost.fake_dev_service --state-dir DIR`` prints one JSON line
with ``settings``, serves until SIGTERM/SIGINT, then writes ``DIR/stopped`` and exits 0.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--state-dir", type=Path, required=True)
    args = parser.parse_args()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    line = {"settings": {"AUTH_JWT_ISSUER": "https://fake.idp.local/"}, "token_url": "http://x"}
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()
    stop.wait()
    (args.state_dir / "stopped").write_text("cleanly")
    return 0


if __name__ == "__main__":
    sys.exit(main())

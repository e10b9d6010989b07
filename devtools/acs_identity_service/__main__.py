"""Command line: ``python -m devtools.acs_identity_service --state-dir DIR [--port N]``.

Prints one JSON line (endpoint, CA file, control URL and the app ``settings`` that point at the
service: ACS_CONNECTION_STRING, ACS_CA_FILE), serves until SIGINT/SIGTERM, then stops cleanly
with exit code 0. Logs go to stderr. Development only: the access key lives in the state dir.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from devtools.stop_signals import serve_until, stop_on_signals

# Only the standard library above: the signal handlers go in before the service (cryptography)
# is imported, so a SIGTERM during start-up also ends with exit 0.

log = logging.getLogger("devtools.acs_identity_service")


def main(argv: list[str] | None = None) -> int:
    """Run the service until SIGINT/SIGTERM; returns the exit code."""
    stop = stop_on_signals()
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s %(message)s"
    )
    parser = argparse.ArgumentParser(prog="python -m devtools.acs_identity_service")
    parser.add_argument("--state-dir", type=Path, required=True, help="CA, key and identities")
    parser.add_argument("--port", type=int, default=0, help="HTTPS port (default: a free one)")
    args = parser.parse_args(argv)
    from devtools.acs_identity_service.server import AcsIdentityService

    service = AcsIdentityService.start(args.state_dir, port=args.port)
    try:
        ca_file = str(service.ca_file.resolve())
        line = {
            "endpoint": service.endpoint,
            "ca_file": ca_file,
            "control_url": f"{service.endpoint}/_dev",
            "settings": {
                "ACS_CONNECTION_STRING": service.connection_string,
                "ACS_CA_FILE": ca_file,
            },
        }
        sys.stdout.write(json.dumps(line) + "\n")
        sys.stdout.flush()
        serve_until(stop)
    finally:
        service.stop()
    log.info("local ACS identity service stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())

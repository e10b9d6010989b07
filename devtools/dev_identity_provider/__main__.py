"""Command line: ``python -m devtools.dev_identity_provider --state-dir DIR [--port N]
[--audience AUD]``.

Prints one JSON line (issuer, JWKS URL, ``token_url`` and the app ``settings`` AUTH_JWT_ISSUER,
AUTH_JWT_AUDIENCE, AUTH_JWKS_URL), serves until SIGINT/SIGTERM, then stops cleanly with exit
code 0. Logs go to stderr. DEVELOPMENT ONLY: it hands a token to anyone who asks.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from devtools.stop_signals import serve_until, stop_on_signals

# Only the standard library above: the signal handlers go in before the provider (cryptography,
# PyJWT) is imported, so a SIGTERM during start-up also ends with exit 0.

log = logging.getLogger("devtools.dev_identity_provider")


def main(argv: list[str] | None = None) -> int:
    """Run the provider until SIGINT/SIGTERM; returns the exit code."""
    stop = stop_on_signals()
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s %(message)s"
    )
    from devtools.dev_identity_provider.server import (
        DEFAULT_AUDIENCE,
        WARNING,
        DevIdentityProvider,
    )

    parser = argparse.ArgumentParser(prog="python -m devtools.dev_identity_provider")
    parser.add_argument("--state-dir", type=Path, required=True, help="signing key")
    parser.add_argument("--port", type=int, default=0, help="HTTP port (default: a free one)")
    parser.add_argument("--audience", default=DEFAULT_AUDIENCE, help="'aud' of issued tokens")
    args = parser.parse_args(argv)
    idp = DevIdentityProvider.start(args.state_dir, port=args.port, audience=args.audience)
    try:
        line = {
            "issuer": idp.issuer,
            "jwks_url": idp.jwks_url,
            "token_url": idp.token_url,
            "warning": WARNING,
            "settings": idp.settings,
        }
        sys.stdout.write(json.dumps(line) + "\n")
        sys.stdout.flush()
        serve_until(stop)
    finally:
        idp.stop()
    log.info("development identity provider stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A DEVELOPMENT-ONLY identity provider (JWKS over HTTP, RS256 tokens for any subject).

    with DevIdentityProvider.start(state_dir) as idp:
        idp.settings            # AUTH_JWT_ISSUER, AUTH_JWT_AUDIENCE, AUTH_JWKS_URL
        idp.token("alice")      # or GET idp.token_url?sub=alice
        idp.outage = True       # the JWKS answers 503 (or POST /control/outage?on=true)

Independent of ``shared/`` on purpose.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from devtools.dev_identity_provider.server import WARNING, DevIdentityProvider

__all__ = ["WARNING", "DevIdentityProvider"]


def __getattr__(name: str) -> Any:
    # Imported on first use, so ``python -m devtools.dev_identity_provider`` installs its signal
    # handlers before the server's dependencies load (see devtools/stop_signals.py).
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module("devtools.dev_identity_provider.server"), name)
    globals()[name] = value
    return value

"""A local ACS identity service (HTTPS with its own CA) that checks HMAC signatures like ACS.

    with AcsIdentityService.start(state_dir) as acs:
        acs.connection_string   # endpoint=https://127.0.0.1:PORT/;accesskey=...
        acs.ca_file             # trust this CA (ACS_CA_FILE, or connection_verify= for the SDK)

Independent of ``shared/`` on purpose: it checks our client, so it must not reuse its code.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from devtools.acs_identity_service.server import AcsIdentityService, ApiError, verify_hmac

__all__ = ["AcsIdentityService", "ApiError", "verify_hmac"]


def __getattr__(name: str) -> Any:
    # Imported on first use, so ``python -m devtools.acs_identity_service`` installs its signal
    # handlers before the server's dependencies load (see devtools/stop_signals.py).
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module("devtools.acs_identity_service.server"), name)
    globals()[name] = value
    return value

"""A local ACS identity service (HTTPS with its own CA) that checks HMAC signatures like ACS.

    with AcsIdentityService.start(state_dir) as acs:
        acs.connection_string   # endpoint=https://127.0.0.1:PORT/;accesskey=...
        acs.ca_file             # trust this CA (ACS_CA_FILE, or connection_verify= for the SDK)

Independent of ``shared/`` on purpose: it checks our client, so it must not reuse its code.
"""

from devtools.acs_identity_service.server import AcsIdentityService, ApiError, verify_hmac

__all__ = ["AcsIdentityService", "ApiError", "verify_hmac"]

"""A DEVELOPMENT-ONLY identity provider (JWKS over HTTP, RS256 tokens for any subject).

    with DevIdentityProvider.start(state_dir) as idp:
        idp.settings            # AUTH_JWT_ISSUER, AUTH_JWT_AUDIENCE, AUTH_JWKS_URL
        idp.token("alice")      # or GET idp.token_url?sub=alice
        idp.outage = True       # the JWKS answers 503 (or POST /control/outage?on=true)

Independent of ``shared/`` on purpose.
"""

from devtools.dev_identity_provider.server import WARNING, DevIdentityProvider

__all__ = ["WARNING", "DevIdentityProvider"]

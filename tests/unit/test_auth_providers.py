"""Bearer tokens as real identity providers issue them: each provider's documented claim set.

Claim sets from each provider's documentation (values made up, shapes theirs):

- Microsoft Entra ID access tokens, v1.0 and v2.0 ("Access token claims reference"): both carry
  ``nbf``; v1.0 ``iss`` is ``https://sts.windows.net/{tenant}/``, v2.0
  ``https://login.microsoftonline.com/{tenant}/v2.0``.
- Firebase Authentication ID tokens ("Verify ID tokens using a third-party JWT library"):
  ``aud`` = project ID, ``iss`` = ``https://securetoken.google.com/{project}``, no ``nbf``.
- Auth0 access tokens ("Access token profiles"): ``aud`` a list when the token also grants
  ``/userinfo``, ``iss`` with a trailing slash, no ``nbf``.
- Amazon Cognito user pool ID and access tokens ("Understanding user pool JSON web tokens"):
  no ``nbf``; the ID token's ``aud`` is the app client ID, the access token has no ``aud`` and
  names the app client in ``client_id`` with ``token_use: access``.
- Google ID tokens ("Verify the integrity of the ID token"): ``iss`` is
  ``https://accounts.google.com`` or ``accounts.google.com``.

Before the fix every token without ``nbf`` was refused ("token lacks the nbf claim"), so
Firebase, Auth0 and Cognito users could not get an ACS token at all.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt import PyJWK

from shared.domain.callers import AuthSource, Caller
from shared.edges.auth import Authenticator, AuthError
from shared.settings import load_settings

pytestmark = pytest.mark.unit

NOW = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
T = int(NOW.timestamp())
TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
CLIENT = "6e74172b-be56-4843-9ff4-e66a39bb12e3"
POOL = "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_AbCdEf123"
COGNITO_CLIENT = "1example23456789abcdefghij"
GOOGLE_CLIENT = "1234567890-abc123def456.apps.googleusercontent.com"


class OneKey:
    def __init__(self, jwk: PyJWK) -> None:
        self.jwk = jwk

    async def key_for(self, kid: str) -> PyJWK | None:
        return self.jwk if kid == self.jwk.key_id else None


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _authenticator(key: rsa.RSAPrivateKey, issuer: str, audience: str) -> Authenticator:
    data = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    data.update(kid="k1", alg="RS256", use="sig")
    settings = load_settings(
        {"AUTH_JWT_ISSUER": issuer, "AUTH_JWT_AUDIENCE": audience, "AUTH_JWKS_URL": "http://j"},
        require=False,
    )
    return Authenticator(settings, OneKey(PyJWK(data)), clock=lambda: NOW)


def _bearer(key: rsa.RSAPrivateKey, claims: Mapping[str, Any]) -> dict[str, str]:
    token = jwt.encode(dict(claims), key, algorithm="RS256", headers={"kid": "k1"})
    return {"Authorization": f"Bearer {token}"}


ENTRA_V1 = {
    "aud": f"api://{CLIENT}",
    "iss": f"https://sts.windows.net/{TENANT}/",
    "iat": T - 60, "nbf": T - 60, "exp": T + 3600,
    "aio": "E2ZgYJh...", "appid": "a0b1c2d3-0000-4000-8000-000000000001", "appidacr": "0",
    "oid": "00000000-0000-0000-66f3-3332eca7ea81", "rh": "0.AAAA...", "scp": "access_as_user",
    "sub": "l3_roISQU222bULS9yi2k0XpqpOiMz5H3ZACo1GeXA", "tid": TENANT,
    "unique_name": "ann@contoso.example", "uti": "fqiBqXLPj0eQa82S-IYFAA", "ver": "1.0",
}  # fmt: skip
ENTRA_V2 = {
    "aud": CLIENT,
    "iss": f"https://login.microsoftonline.com/{TENANT}/v2.0",
    "iat": T - 60, "nbf": T - 60, "exp": T + 3600,
    "aio": "AXQAi/8...", "azp": "a0b1c2d3-0000-4000-8000-000000000001", "azpacr": "0",
    "name": "Ann", "oid": "690222be-ff1a-4d56-abd1-7e4f7d38e474",
    "preferred_username": "ann@contoso.example", "rh": "I", "scp": "access_as_user",
    "sub": "HKZpfaHyWadeOouYlitjrI-KffTm222X5rrV3xDqfKQ", "tid": TENANT,
    "uti": "fqiBqXLPj0eQa82S-IYFAA", "ver": "2.0",
}  # fmt: skip
FIREBASE = {
    "iss": "https://securetoken.google.com/pushrelay-demo",
    "aud": "pushrelay-demo",
    "auth_time": T - 300,
    "user_id": "Xy1PvQmZ2abcDEF3ghIJ4klMNop5", "sub": "Xy1PvQmZ2abcDEF3ghIJ4klMNop5",
    "iat": T - 60, "exp": T + 3540,
    "email": "ann@example.com", "email_verified": True,
    "firebase": {"identities": {"email": ["ann@example.com"]}, "sign_in_provider": "password"},
}  # fmt: skip
AUTH0 = {
    "iss": "https://pushrelay-demo.eu.auth0.com/",
    "sub": "auth0|64f1c2d3e4f5a6b7c8d9e0f1",
    "aud": ["https://api.pushrelay.example", "https://pushrelay-demo.eu.auth0.com/userinfo"],
    "iat": T - 60, "exp": T + 86340, "azp": "AbCdEfGhIjKlMnOpQrStUvWxYz012345",
    "scope": "openid profile email",
}  # fmt: skip
COGNITO_ID = {
    "sub": "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",
    "aud": COGNITO_CLIENT, "email_verified": True, "token_use": "id", "auth_time": T - 300,
    "iss": POOL, "cognito:username": "ann", "exp": T + 3540, "iat": T - 60,
    "email": "ann@example.com", "jti": "d1a2b3c4-0000-4000-8000-000000000002",
    "origin_jti": "e1a2b3c4-0000-4000-8000-000000000003",
    "event_id": "f1a2b3c4-0000-4000-8000-000000000004",
}  # fmt: skip
COGNITO_ACCESS = {
    "sub": "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",
    "iss": POOL, "version": 2, "client_id": COGNITO_CLIENT,
    "origin_jti": "e1a2b3c4-0000-4000-8000-000000000003",
    "event_id": "f1a2b3c4-0000-4000-8000-000000000004", "token_use": "access",
    "scope": "aws.cognito.signin.user.admin", "auth_time": T - 300, "exp": T + 3540,
    "iat": T - 60, "jti": "a9a2b3c4-0000-4000-8000-000000000005", "username": "ann",
}  # fmt: skip
GOOGLE = {
    "iss": "https://accounts.google.com",
    "azp": GOOGLE_CLIENT, "aud": GOOGLE_CLIENT, "sub": "110169484474386276334",
    "email": "ann@gmail.example", "email_verified": True, "at_hash": "X_B3Z3Fi4udZ2mf75RWo3w",
    "nbf": T - 120, "name": "Ann", "given_name": "Ann", "iat": T - 60, "exp": T + 3540,
    "jti": "9a8b7c6d5e4f3a2b1c0d",
}  # fmt: skip

PROVIDERS = {
    "entra-v1": (ENTRA_V1, f"https://sts.windows.net/{TENANT}/", f"api://{CLIENT}"),
    "entra-v2": (ENTRA_V2, f"https://login.microsoftonline.com/{TENANT}/v2.0", CLIENT),
    "firebase": (FIREBASE, "https://securetoken.google.com/pushrelay-demo", "pushrelay-demo"),
    "auth0": (AUTH0, "https://pushrelay-demo.eu.auth0.com/", "https://api.pushrelay.example"),
    "cognito-id": (COGNITO_ID, POOL, COGNITO_CLIENT),
    "cognito-access": (COGNITO_ACCESS, POOL, COGNITO_CLIENT),
    "google": (GOOGLE, "https://accounts.google.com", GOOGLE_CLIENT),
}


@pytest.mark.parametrize("provider", sorted(PROVIDERS))
async def test_each_providers_documented_token_is_accepted(
    key: rsa.RSAPrivateKey, provider: str
) -> None:
    claims, issuer, audience = PROVIDERS[provider]
    caller = await _authenticator(key, issuer, audience).authenticate(_bearer(key, claims))
    assert caller == Caller(issuer, str(claims["sub"]), AuthSource.JWT)


@pytest.mark.parametrize("provider", sorted(PROVIDERS))
async def test_each_providers_token_for_another_audience_is_refused(
    key: rsa.RSAPrivateKey, provider: str
) -> None:
    claims, issuer, _ = PROVIDERS[provider]
    auth = _authenticator(key, issuer, "api://another-app")
    with pytest.raises(AuthError) as caught:
        await auth.authenticate(_bearer(key, claims))
    assert caught.value.reason in ("wrong token audience", "token lacks the aud claim")


async def test_a_token_without_nbf_is_accepted(key: rsa.RSAPrivateKey) -> None:
    claims = {"iss": "https://idp", "aud": "api://x", "sub": "ann", "exp": T + 60, "iat": T}
    caller = await _authenticator(key, "https://idp", "api://x").authenticate(_bearer(key, claims))
    assert caller.subject == "ann"


async def test_an_audience_list_without_ours_is_refused(key: rsa.RSAPrivateKey) -> None:
    claims = {**AUTH0, "aud": ["https://api.other.example", "https://x.auth0.com/userinfo"]}
    auth = _authenticator(key, str(AUTH0["iss"]), "https://api.pushrelay.example")
    with pytest.raises(AuthError) as caught:
        await auth.authenticate(_bearer(key, claims))
    assert caught.value.reason == "wrong token audience"


@pytest.mark.parametrize("aud", [[], [7], {"a": 1}, 5])
async def test_an_audience_that_is_not_strings_is_refused(
    key: rsa.RSAPrivateKey, aud: object
) -> None:
    claims = {**AUTH0, "aud": aud}
    auth = _authenticator(key, str(AUTH0["iss"]), "https://api.pushrelay.example")
    with pytest.raises(AuthError):
        await auth.authenticate(_bearer(key, claims))


async def test_client_id_stands_for_aud_only_in_a_cognito_access_token(
    key: rsa.RSAPrivateKey,
) -> None:
    """An ID token (or any token) without ``aud`` is refused even when client_id matches."""
    claims = {**COGNITO_ACCESS, "token_use": "id"}
    auth = _authenticator(key, POOL, COGNITO_CLIENT)
    with pytest.raises(AuthError) as caught:
        await auth.authenticate(_bearer(key, claims))
    assert caught.value.reason == "token lacks the aud claim"


async def test_both_google_issuer_forms_map_to_one_caller(key: rsa.RSAPrivateKey) -> None:
    auth = _authenticator(key, "https://accounts.google.com", GOOGLE_CLIENT)
    with_scheme = await auth.authenticate(_bearer(key, GOOGLE))
    bare = await auth.authenticate(_bearer(key, {**GOOGLE, "iss": "accounts.google.com"}))
    assert bare == with_scheme and bare.key == with_scheme.key


async def test_other_issuers_get_no_alias(key: rsa.RSAPrivateKey) -> None:
    claims = {**FIREBASE, "iss": "securetoken.google.com/pushrelay-demo"}
    auth = _authenticator(key, str(FIREBASE["iss"]), "pushrelay-demo")
    with pytest.raises(AuthError) as caught:
        await auth.authenticate(_bearer(key, claims))
    assert caught.value.reason == "wrong token issuer"

"""Caller authentication: the security corpus (bad credentials are 401s, an IdP outage a 503)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt import PyJWK

from shared.domain.callers import AuthSource, Caller, caller_key
from shared.edges.auth import Authenticator, AuthError, AuthUnavailableError, HttpJwks
from shared.edges.http_api import error_response, status_of
from shared.errors import SettingsError
from shared.settings import Settings, load_settings

pytestmark = pytest.mark.unit

ISSUER = "https://idp.example/tenant"
AUDIENCE = "api://pushrelay"
NOW = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
T = int(NOW.timestamp())


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def other_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _jwk(public: Any, kid: str, alg: str) -> PyJWK:
    if alg.startswith("RS"):
        data = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(public))
    else:
        data = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(public))
    data.update(kid=kid, alg=alg, use="sig")
    return PyJWK(data)


class FixedJwks:
    """A JWKS that never changes (or is down)."""

    def __init__(self, keys: Mapping[str, PyJWK], *, down: bool = False) -> None:
        self.keys = dict(keys)
        self.down = down

    async def key_for(self, kid: str) -> PyJWK | None:
        if self.down:
            raise AuthUnavailableError("the identity provider's JWKS could not be fetched")
        return self.keys.get(kid)


def _settings(**env: str) -> Settings:
    base = {"AUTH_JWT_ISSUER": ISSUER, "AUTH_JWT_AUDIENCE": AUDIENCE, "AUTH_JWKS_URL": "http://x"}
    return load_settings({**base, **env}, require=False)


@pytest.fixture
def jwks(rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey) -> FixedJwks:
    return FixedJwks(
        {
            "rsa1": _jwk(rsa_key.public_key(), "rsa1", "RS256"),
            "ec1": _jwk(ec_key.public_key(), "ec1", "ES256"),
        }
    )


@pytest.fixture
def auth(jwks: FixedJwks) -> Authenticator:
    return Authenticator(_settings(), jwks, clock=lambda: NOW)


def _claims(**overrides: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "alice",
        "exp": T + 600,
        "nbf": T - 10,
        "iat": T - 10,
    }
    for name, value in overrides.items():
        if value is None:
            claims.pop(name, None)
        else:
            claims[name] = value
    return claims


def _token(key: Any, *, kid: str | None = "rsa1", alg: str = "RS256", **overrides: Any) -> str:
    headers = {} if kid is None else {"kid": kid}
    return jwt.encode(_claims(**overrides), key, algorithm=alg, headers=headers)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _reject(auth: Authenticator, headers: Mapping[str, str]) -> AuthError:
    with pytest.raises(AuthError) as caught:
        await auth.authenticate(headers)
    return caught.value


# --- accepted --------------------------------------------------------------------------------


async def test_valid_rs256_token_names_the_caller(
    auth: Authenticator, rsa_key: rsa.RSAPrivateKey
) -> None:
    caller = await auth.authenticate(_bearer(_token(rsa_key)))
    assert caller == Caller(ISSUER, "alice", AuthSource.JWT)


async def test_valid_es256_token_names_the_caller(
    auth: Authenticator, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    caller = await auth.authenticate(_bearer(_token(ec_key, kid="ec1", alg="ES256")))
    assert caller.subject == "alice"


def test_caller_key_is_sha256_of_issuer_nul_subject() -> None:
    expected = hashlib.sha256(f"{ISSUER}\0alice".encode()).hexdigest()
    assert Caller(ISSUER, "alice", AuthSource.JWT).key == expected == caller_key(ISSUER, "alice")


async def test_token_expired_within_leeway_is_accepted(
    auth: Authenticator, rsa_key: rsa.RSAPrivateKey
) -> None:
    caller = await auth.authenticate(_bearer(_token(rsa_key, exp=T - 30)))
    assert caller.subject == "alice"


# --- the security corpus ---------------------------------------------------------------------


async def test_alg_none_is_rejected(auth: Authenticator) -> None:
    header = _b64(json.dumps({"alg": "none", "kid": "rsa1", "typ": "JWT"}).encode())
    payload = _b64(json.dumps(_claims()).encode())
    error = await _reject(auth, _bearer(f"{header}.{payload}."))
    assert error.reason == "token algorithm not allowed"


async def test_hs256_keyed_with_the_rsa_public_key_is_rejected(
    auth: Authenticator, rsa_key: rsa.RSAPrivateKey
) -> None:
    public_pem = rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = _b64(json.dumps({"alg": "HS256", "kid": "rsa1", "typ": "JWT"}).encode())
    payload = _b64(json.dumps(_claims()).encode())
    signature = hmac.new(public_pem, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    error = await _reject(auth, _bearer(f"{header}.{payload}.{_b64(signature)}"))
    assert error.reason == "token algorithm not allowed"


async def test_expired_token_is_rejected(auth: Authenticator, rsa_key: rsa.RSAPrivateKey) -> None:
    error = await _reject(auth, _bearer(_token(rsa_key, exp=T - 61)))
    assert error.reason == "token expired"


async def test_not_yet_valid_token_is_rejected(
    auth: Authenticator, rsa_key: rsa.RSAPrivateKey
) -> None:
    error = await _reject(auth, _bearer(_token(rsa_key, nbf=T + 61)))
    assert error.reason == "token not yet valid"


async def test_wrong_issuer_is_rejected(auth: Authenticator, rsa_key: rsa.RSAPrivateKey) -> None:
    error = await _reject(auth, _bearer(_token(rsa_key, iss="https://evil.example")))
    assert error.reason == "wrong token issuer"


async def test_wrong_audience_is_rejected(auth: Authenticator, rsa_key: rsa.RSAPrivateKey) -> None:
    error = await _reject(auth, _bearer(_token(rsa_key, aud="api://someone-else")))
    assert error.reason == "wrong token audience"


async def test_unknown_kid_is_rejected(auth: Authenticator, rsa_key: rsa.RSAPrivateKey) -> None:
    error = await _reject(auth, _bearer(_token(rsa_key, kid="rotated-away")))
    assert error.reason == "unknown signing key"


async def test_token_without_kid_is_rejected(
    auth: Authenticator, rsa_key: rsa.RSAPrivateKey
) -> None:
    error = await _reject(auth, _bearer(_token(rsa_key, kid=None)))
    assert error.reason == "token has no key id"


@pytest.mark.parametrize("claim", ["exp", "iss", "aud", "sub"])
async def test_token_missing_a_required_claim_is_rejected(
    auth: Authenticator, rsa_key: rsa.RSAPrivateKey, claim: str
) -> None:
    error = await _reject(auth, _bearer(_token(rsa_key, **{claim: None})))
    assert error.reason == f"token lacks the {claim} claim"


async def test_token_signed_by_another_key_with_a_known_kid_is_rejected(
    auth: Authenticator, other_rsa_key: rsa.RSAPrivateKey
) -> None:
    error = await _reject(auth, _bearer(_token(other_rsa_key)))
    assert error.reason == "bad token signature"


async def test_tampered_payload_is_rejected(
    auth: Authenticator, rsa_key: rsa.RSAPrivateKey
) -> None:
    header, _, signature = _token(rsa_key).split(".")
    forged = _b64(json.dumps(_claims(sub="bob")).encode())
    error = await _reject(auth, _bearer(f"{header}.{forged}.{signature}"))
    assert error.reason == "bad token signature"


async def test_token_whose_alg_differs_from_its_keys_is_rejected(
    auth: Authenticator, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    error = await _reject(auth, _bearer(_token(ec_key, kid="rsa1", alg="ES256")))
    assert error.reason == "token algorithm does not match its key"


async def test_non_numeric_exp_is_rejected(auth: Authenticator, rsa_key: rsa.RSAPrivateKey) -> None:
    error = await _reject(auth, _bearer(_token(rsa_key, exp="never")))
    assert status_of(error) == 401


async def test_garbage_token_is_rejected(auth: Authenticator) -> None:
    error = await _reject(auth, _bearer("not.a.jwt"))
    assert error.reason == "malformed token"


async def test_oversized_token_is_rejected(auth: Authenticator) -> None:
    error = await _reject(auth, _bearer("a" * 9000))
    assert error.reason == "token too large"


async def test_missing_credentials_get_a_bare_bearer_challenge(auth: Authenticator) -> None:
    response = error_response(await _reject(auth, {}))
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="pushrelay"'
    assert json.loads(response.get_body()) == {"error": "missing bearer token"}


async def test_bad_token_gets_an_invalid_token_challenge(
    auth: Authenticator, rsa_key: rsa.RSAPrivateKey
) -> None:
    response = error_response(await _reject(auth, _bearer(_token(rsa_key, exp=T - 3600))))
    assert response.headers["WWW-Authenticate"] == (
        'Bearer realm="pushrelay", error="invalid_token", error_description="token expired"'
    )


async def test_basic_authorization_is_rejected(auth: Authenticator) -> None:
    error = await _reject(auth, {"Authorization": "Basic YWxpY2U6cHc="})
    assert error.error == "invalid_request"


async def test_bearer_tokens_are_refused_when_no_issuer_is_configured(
    jwks: FixedJwks, rsa_key: rsa.RSAPrivateKey
) -> None:
    auth = Authenticator(load_settings({}, require=False), jwks, clock=lambda: NOW)
    error = await _reject(auth, _bearer(_token(rsa_key)))
    assert error.reason == "bearer tokens are not accepted here"


async def test_jwks_outage_is_a_503_not_a_401(rsa_key: rsa.RSAPrivateKey) -> None:
    auth = Authenticator(_settings(), FixedJwks({}, down=True), clock=lambda: NOW)
    with pytest.raises(AuthUnavailableError) as caught:
        await auth.authenticate(_bearer(_token(rsa_key)))
    response = error_response(caught.value)
    assert response.status_code == 503
    assert json.loads(response.get_body()) == {"error": "identity_provider_unavailable"}


@pytest.mark.parametrize("algorithms", ["RS256,HS256", "none", "RS256,NONE", "HS512"])
def test_symmetric_or_none_algorithms_are_refused_at_startup(
    jwks: FixedJwks, algorithms: str
) -> None:
    with pytest.raises(SettingsError):
        Authenticator(_settings(AUTH_JWT_ALGORITHMS=algorithms), jwks)


async def test_algorithm_outside_the_allow_list_is_rejected(
    jwks: FixedJwks, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    auth = Authenticator(_settings(AUTH_JWT_ALGORITHMS="RS256"), jwks, clock=lambda: NOW)
    error = await _reject(auth, _bearer(_token(ec_key, kid="ec1", alg="ES256")))
    assert error.reason == "token algorithm not allowed"


# --- Easy Auth -------------------------------------------------------------------------------


def _principal(claims: list[dict[str, str]], auth_typ: str = "aad") -> str:
    body = {"auth_typ": auth_typ, "claims": claims, "name_typ": "name", "role_typ": "roles"}
    return base64.b64encode(json.dumps(body).encode()).decode()


ALICE_PRINCIPAL = _principal([{"typ": "iss", "val": ISSUER}, {"typ": "sub", "val": "alice"}])


async def test_easy_auth_headers_are_ignored_while_it_is_off(auth: Authenticator) -> None:
    headers = {"X-MS-CLIENT-PRINCIPAL": ALICE_PRINCIPAL, "X-MS-CLIENT-PRINCIPAL-ID": "alice"}
    error = await _reject(auth, headers)
    assert error.reason == "missing bearer token"


async def test_forged_easy_auth_header_cannot_override_the_bearer_while_off(
    auth: Authenticator, rsa_key: rsa.RSAPrivateKey
) -> None:
    forged = _principal([{"typ": "iss", "val": ISSUER}, {"typ": "sub", "val": "bob"}])
    headers = {**_bearer(_token(rsa_key)), "x-ms-client-principal": forged}
    caller = await auth.authenticate(headers)
    assert (caller.subject, caller.source) == ("alice", AuthSource.JWT)


async def test_valid_easy_auth_principal_is_trusted_while_on(jwks: FixedJwks) -> None:
    auth = Authenticator(_settings(EASY_AUTH_ENABLED="true"), jwks, clock=lambda: NOW)
    caller = await auth.authenticate({"X-MS-CLIENT-PRINCIPAL": ALICE_PRINCIPAL})
    assert caller == Caller(ISSUER, "alice", AuthSource.EASY_AUTH)


async def test_easy_auth_maps_the_same_user_to_the_same_key_as_a_jwt(
    jwks: FixedJwks, rsa_key: rsa.RSAPrivateKey
) -> None:
    auth = Authenticator(_settings(EASY_AUTH_ENABLED="true"), jwks, clock=lambda: NOW)
    via_easy_auth = await auth.authenticate({"X-MS-CLIENT-PRINCIPAL": ALICE_PRINCIPAL})
    via_jwt = await auth.authenticate(_bearer(_token(rsa_key)))
    assert via_easy_auth.key == via_jwt.key


async def test_easy_auth_nameidentifier_claim_is_the_subject(jwks: FixedJwks) -> None:
    auth = Authenticator(_settings(EASY_AUTH_ENABLED="true"), jwks, clock=lambda: NOW)
    nameid = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/nameidentifier"
    principal = _principal([{"typ": nameid, "val": "u-42"}], auth_typ="apple")
    caller = await auth.authenticate({"X-MS-CLIENT-PRINCIPAL": principal})
    assert (caller.issuer, caller.subject) == ("easyauth:apple", "u-42")


@pytest.mark.parametrize(
    "principal",
    [
        "%%%not-base64%%%",
        base64.b64encode(b"not json").decode(),
        base64.b64encode(b'{"claims": "nope"}').decode(),
        _principal([{"typ": "iss", "val": ISSUER}]),
    ],
)
async def test_malformed_easy_auth_principal_is_rejected_while_on(
    jwks: FixedJwks, principal: str
) -> None:
    auth = Authenticator(_settings(EASY_AUTH_ENABLED="true"), jwks, clock=lambda: NOW)
    error = await _reject(auth, {"X-MS-CLIENT-PRINCIPAL": principal})
    assert status_of(error) == 401


# --- hostile claims in a correctly signed token or a trusted principal -----------------------
# Every one must be a 401 with a reason, never an exception the trigger turns into a 500.


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"sub": "\ud800"}, "token subject is not valid text"),
        ({"sub": "alice\udfff"}, "token subject is not valid text"),
        ({"sub": "ali\x00ce"}, "token subject is not valid text"),
        ({"sub": "line\nbreak"}, "token subject is not valid text"),
        ({"exp": 10**400}, "token exp must be a number"),
        ({"nbf": -(10**400)}, "token nbf must be a number"),
        ({"iat": 10**400}, "token iat must be a number"),
    ],
    ids=["lone-high-surrogate", "lone-low-surrogate", "nul", "newline", "exp-10^400",
         "nbf--10^400", "iat-10^400"],
)  # fmt: skip
async def test_signed_token_with_a_hostile_claim_is_a_401(
    auth: Authenticator, rsa_key: rsa.RSAPrivateKey, claims: dict[str, Any], reason: str
) -> None:
    error = await _reject(auth, _bearer(_token(rsa_key, **claims)))
    assert (status_of(error), error.reason) == (401, reason)


def _raw_principal(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


SUBJECT_TEXT = "client principal subject is not valid text"
ISSUER_TEXT = "client principal issuer is not valid text"
MALFORMED = "malformed client principal"


@pytest.mark.parametrize(
    ("principal", "reason"),
    [
        (_principal([{"typ": "sub", "val": "\ud800"}]), SUBJECT_TEXT),
        (_principal([{"typ": "iss", "val": "https://i\udc80"}, {"typ": "sub", "val": "a"}]),
         ISSUER_TEXT),
        (_principal([{"typ": "sub", "val": "a"}], auth_typ="\udc00"), ISSUER_TEXT),
        (_principal([{"typ": "sub", "val": "a\x00b"}]), SUBJECT_TEXT),
        (_raw_principal(b'{"claims": [], "x": ' + b"[" * 10000 + b"]" * 10000 + b"}"), MALFORMED),
        (_raw_principal(b'{"claims": [], "x": ' + b"[" * 24000 + b"}"), MALFORMED),
    ],
    ids=["sub-surrogate", "iss-surrogate", "auth-typ-surrogate", "sub-nul", "nested-10000",
         "open-24000"],
)  # fmt: skip
async def test_trusted_principal_with_a_hostile_claim_is_a_401(
    jwks: FixedJwks, principal: str, reason: str
) -> None:
    auth = Authenticator(_settings(EASY_AUTH_ENABLED="true"), jwks, clock=lambda: NOW)
    error = await _reject(auth, {"X-MS-CLIENT-PRINCIPAL": principal})
    assert (status_of(error), error.reason) == (401, reason)


# --- the HTTP JWKS cache ---------------------------------------------------------------------


class FakeFetcher:
    """Stands in for PyJWKClient: serves a key list, or fails like it does."""

    def __init__(self, keys: list[PyJWK]) -> None:
        self.keys = keys
        self.fetches = 0
        self.down = False

    def get_signing_keys(self, refresh: bool = False) -> list[PyJWK]:
        self.fetches += 1
        if self.down:
            raise jwt.PyJWKClientConnectionError("Fail to fetch data from the url")
        return list(self.keys)


class Ticker:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def rsa_jwk(rsa_key: rsa.RSAPrivateKey) -> PyJWK:
    return _jwk(rsa_key.public_key(), "rsa1", "RS256")


async def test_jwks_is_fetched_once_while_fresh(rsa_jwk: PyJWK) -> None:
    fetcher = FakeFetcher([rsa_jwk])
    jwks = HttpJwks("http://idp", fetcher=fetcher, monotonic=Ticker())
    assert await jwks.key_for("rsa1") is rsa_jwk
    assert await jwks.key_for("rsa1") is rsa_jwk
    assert fetcher.fetches == 1


async def test_unknown_kids_refetch_at_most_once_per_cooldown(rsa_jwk: PyJWK) -> None:
    fetcher, ticker = FakeFetcher([rsa_jwk]), Ticker()
    jwks = HttpJwks("http://idp", fetcher=fetcher, monotonic=ticker, cooldown=30)
    await jwks.key_for("rsa1")
    ticker.t += 31
    for n in range(5):
        assert await jwks.key_for(f"random-{n}") is None
    assert fetcher.fetches == 2


async def test_rotated_key_is_found_after_the_cooldown(
    rsa_jwk: PyJWK, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    fetcher, ticker = FakeFetcher([rsa_jwk]), Ticker()
    jwks = HttpJwks("http://idp", fetcher=fetcher, monotonic=ticker, cooldown=30)
    await jwks.key_for("rsa1")
    new_key = _jwk(ec_key.public_key(), "ec-new", "ES256")
    fetcher.keys.append(new_key)
    ticker.t += 31
    assert await jwks.key_for("ec-new") is new_key


async def test_cached_keys_survive_an_outage_after_expiry(rsa_jwk: PyJWK) -> None:
    fetcher, ticker = FakeFetcher([rsa_jwk]), Ticker()
    jwks = HttpJwks("http://idp", fetcher=fetcher, monotonic=ticker, lifespan=60)
    await jwks.key_for("rsa1")
    fetcher.down = True
    ticker.t += 120
    assert await jwks.key_for("rsa1") is rsa_jwk


async def test_outage_without_cached_keys_is_unavailable(rsa_jwk: PyJWK) -> None:
    fetcher = FakeFetcher([rsa_jwk])
    fetcher.down = True
    jwks = HttpJwks("http://idp", fetcher=fetcher, monotonic=Ticker())
    with pytest.raises(AuthUnavailableError):
        await jwks.key_for("rsa1")

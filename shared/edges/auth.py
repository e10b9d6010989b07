"""Caller authentication: a bearer JWT from the app's identity provider, or Easy Auth's principal.

A caller (:class:`shared.domain.callers.Caller`) is (issuer, subject). Two ways in:

- ``Authorization: Bearer <JWT>`` signed by the app's identity provider. The key comes from its
  JWKS (fetched over HTTP, cached, chosen by ``kid``); the algorithm must be in
  ``AUTH_JWT_ALGORITHMS`` (never ``none`` nor an HMAC one, whose "key" would be public);
  ``exp``, ``iss``, ``aud`` and ``sub`` are required and checked against the settings and an
  injected clock, with ``AUTH_JWT_LEEWAY_SECONDS`` of leeway; ``nbf`` and ``iat`` are checked
  when present (Firebase, Auth0 and Cognito tokens carry no ``nbf``). ``aud`` may be a string
  or a list (Auth0 sends a list); a token without ``aud`` passes only as an Amazon Cognito
  access token, which names the app client in ``client_id`` (with ``token_use: access``).
- ``X-MS-CLIENT-PRINCIPAL`` (base64 JSON claims) injected by App Service Easy Auth, which strips
  client-sent copies. Trusted only when ``EASY_AUTH_ENABLED``; otherwise the header is ignored
  (a request carrying only it is unauthenticated).

Raises :class:`AuthError` (401, with a ``WWW-Authenticate`` challenge) for every bad credential,
and :class:`AuthUnavailableError` (503) when the JWKS cannot be fetched: an outage of the identity
provider is not the caller's fault.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import math
import re
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Final, Protocol

import jwt
from jwt import PyJWK

from shared.domain.callers import AuthSource, Caller
from shared.edges.http_api import MAX_JSON_DEPTH, nested_deeper_than
from shared.errors import SettingsError, TransientError, UnauthenticatedError
from shared.settings import Settings

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
MAX_TOKEN_BYTES: Final = 8192
MAX_PRINCIPAL_BYTES: Final = 32768
_FORBIDDEN_ALGORITHMS: Final = frozenset({"none", "HS256", "HS384", "HS512"})
# Text that cannot name a caller: control characters (NUL would blur the issuer/subject boundary
# of the caller key) and surrogate code points (not encodable as UTF-8, so not hashable).
_NOT_IDENTITY_TEXT: Final = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_OBJECT_ID_CLAIMS: Final = ("oid", "http://schemas.microsoft.com/identity/claims/objectidentifier")
# Issuers that name themselves two ways: Google's ID tokens carry "https://accounts.google.com"
# or "accounts.google.com" (Google Identity, "Verify the integrity of the ID token"). Either is
# accepted and the caller gets the configured form, so one user keeps one ACS identity.
_ISSUER_ALIASES: Final = {
    "https://accounts.google.com": "accounts.google.com",
    "accounts.google.com": "https://accounts.google.com",
}
_SUBJECT_CLAIMS: Final = (
    "sub",
    "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/nameidentifier",
)


class AuthError(UnauthenticatedError):
    """The request carries no acceptable credentials; the challenge is a Bearer one."""

    def __init__(self, reason: str, *, error: str | None = "invalid_token") -> None:
        # RFC 6750 §3: no error code when the request had no credentials at all.
        challenge = 'Bearer realm="pushrelay"'
        if error is not None:
            challenge += f', error="{error}", error_description="{reason}"'
        super().__init__(reason, challenge=challenge)
        self.error = error


class AuthUnavailableError(TransientError):
    """The identity provider's JWKS could not be fetched (503, not the caller's fault)."""

    public_reason = "identity_provider_unavailable"


class JwksSource(Protocol):
    """Where signing keys come from (the IdP's JWKS; a fixed set in tests)."""

    async def key_for(self, kid: str) -> PyJWK | None:
        """The signing key with this ``kid``, or None. Raises AuthUnavailableError on an outage."""
        ...


class KeyFetcher(Protocol):
    """What HttpJwks needs of ``jwt.PyJWKClient`` (a stand-in in unit tests)."""

    def get_signing_keys(self, refresh: bool = False) -> list[PyJWK]:
        """Fetch the JWKS; raises PyJWKClientConnectionError or PyJWKClientError."""
        ...


class HttpJwks:
    """A JWKS fetched over HTTP with PyJWT's ``PyJWKClient``, cached, and refreshed carefully.

    Keys are cached for ``lifespan`` seconds. An unknown ``kid`` forces a refetch (key rotation)
    at most once per ``cooldown`` seconds, so random kids cannot make us hammer the IdP. When a
    refetch fails, keys already cached keep working; with none cached it is an outage.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 5.0,
        lifespan: float = 3600.0,
        cooldown: float = 30.0,
        monotonic: Callable[[], float] = time.monotonic,
        fetcher: KeyFetcher | None = None,
    ) -> None:
        self._client: KeyFetcher = fetcher or jwt.PyJWKClient(
            url, cache_jwk_set=False, timeout=timeout
        )
        self._lifespan = lifespan
        self._cooldown = cooldown
        self._monotonic = monotonic
        self._keys: dict[str, PyJWK] = {}
        self._fetched_at: float | None = None
        self._tried_at: float | None = None
        self._lock = asyncio.Lock()

    async def key_for(self, kid: str) -> PyJWK | None:
        """The signing key for ``kid``; raises AuthUnavailableError on a JWKS outage."""
        now = self._monotonic()
        fresh = self._fetched_at is not None and now - self._fetched_at < self._lifespan
        if fresh and kid in self._keys:
            return self._keys[kid]
        async with self._lock:
            now = self._monotonic()
            fresh = self._fetched_at is not None and now - self._fetched_at < self._lifespan
            cooling = self._tried_at is not None and now - self._tried_at < self._cooldown
            if not fresh or (kid not in self._keys and not cooling):
                await self._refresh(now)
            return self._keys.get(kid)

    async def _refresh(self, now: float) -> None:
        self._tried_at = now
        try:
            keys = await asyncio.to_thread(self._client.get_signing_keys, True)
        except jwt.PyJWKClientConnectionError as exc:
            if self._keys:
                log.warning("JWKS refresh failed, keeping %d cached keys", len(self._keys))
                return
            raise AuthUnavailableError("the identity provider's JWKS could not be fetched") from exc
        except (jwt.PyJWKClientError, jwt.PyJWKSetError, ValueError) as exc:
            # ValueError: a body that is not JSON (PyJWKClient lets json.load's error through).
            if self._keys:
                log.warning("JWKS refresh returned no usable keys, keeping cached ones")
                return
            raise AuthUnavailableError("the identity provider's JWKS holds no usable keys") from exc
        self._keys = {k.key_id: k for k in keys if k.key_id}
        self._fetched_at = now


class Authenticator:
    """Turns request headers into a :class:`Caller`, or raises AuthError / AuthUnavailableError."""

    def __init__(
        self,
        settings: Settings,
        jwks: JwksSource | None,
        clock: Clock = lambda: datetime.now(UTC),
    ) -> None:
        """Raises SettingsError if the allowed algorithms include ``none`` or an HMAC one."""
        bad = {
            a
            for a in settings.auth_jwt_algorithms
            if a in _FORBIDDEN_ALGORITHMS or a.lower() == "none" or a.upper().startswith("HS")
        }
        if bad:
            raise SettingsError(
                "setting AUTH_JWT_ALGORITHMS must list asymmetric algorithms only, not "
                + ", ".join(sorted(bad))
            )
        self._settings = settings
        self._jwks = jwks
        self._clock = clock
        self._algorithms = frozenset(settings.auth_jwt_algorithms)

    @property
    def jwt_configured(self) -> bool:
        """Whether bearer JWTs can be checked (issuer, audience and JWKS configured)."""
        s = self._settings
        return bool(s.auth_jwt_issuer and s.auth_jwt_audience and self._jwks is not None)

    async def authenticate(self, headers: Mapping[str, str]) -> Caller:
        """The caller of a request with these headers.

        Raises AuthError (401) for missing or bad credentials and AuthUnavailableError (503) when
        the JWKS cannot be fetched.
        """
        lower = {k.lower(): v for k, v in headers.items()}
        principal = lower.get("x-ms-client-principal")
        if self._settings.easy_auth_enabled and principal:
            return _easy_auth_caller(principal, lower.get("x-ms-client-principal-idp"))
        authorization = lower.get("authorization", "").strip()
        if not authorization:
            raise AuthError("missing bearer token", error=None)
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthError("authorization must be a bearer token", error="invalid_request")
        return await self._jwt_caller(token.strip())

    async def _jwt_caller(self, token: str) -> Caller:
        if not self.jwt_configured or self._jwks is None:
            log.warning("bearer token presented but AUTH_JWT_* settings are not configured")
            raise AuthError("bearer tokens are not accepted here")
        if len(token) > MAX_TOKEN_BYTES:
            raise AuthError("token too large")
        try:
            header = jwt.get_unverified_header(token)
        except (jwt.InvalidTokenError, UnicodeError):
            # A header with bytes that are not UTF-8 reaches us surrogate-escaped; PyJWT's
            # encode then raises UnicodeEncodeError, which is bad input, not an outage.
            raise AuthError("malformed token") from None
        alg, kid = header.get("alg"), header.get("kid")
        if not isinstance(alg, str) or alg not in self._algorithms:
            raise AuthError("token algorithm not allowed")
        if not isinstance(kid, str) or not kid:
            raise AuthError("token has no key id")
        key = await self._jwks.key_for(kid)
        if key is None:
            raise AuthError("unknown signing key")
        claims = self._verified_claims(token, key, alg)
        subject = _identity_text(claims["sub"], "token subject")
        oid = claims.get("oid")
        object_id = _identity_text(oid, "token oid") if isinstance(oid, str) else ""
        return Caller(self._settings.auth_jwt_issuer, subject, AuthSource.JWT, object_id)

    def _verified_claims(self, token: str, key: PyJWK, alg: str) -> dict[str, Any]:
        issuer = self._settings.auth_jwt_issuer
        alias = _ISSUER_ALIASES.get(issuer)
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[alg],
                issuer=issuer if alias is None else (issuer, alias),
                # Time claims and the audience are checked below (the clock is injected; a
                # Cognito access token has no aud).
                options={
                    "require": ["exp", "iss", "sub"],
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                    "verify_aud": False,
                    "enforce_minimum_key_length": True,
                },
            )
        except jwt.MissingRequiredClaimError as exc:
            raise AuthError(f"token lacks the {exc.claim} claim") from None
        except jwt.InvalidIssuerError:
            raise AuthError("wrong token issuer") from None
        except jwt.InvalidAudienceError:
            raise AuthError("wrong token audience") from None
        except jwt.InvalidSignatureError:
            raise AuthError("bad token signature") from None
        except jwt.InvalidAlgorithmError:
            raise AuthError("token algorithm does not match its key") from None
        except jwt.InvalidTokenError:
            raise AuthError("invalid token") from None
        self._check_audience(claims)
        self._check_times(claims)
        if not isinstance(claims.get("sub"), str) or not claims["sub"]:
            raise AuthError("token subject must be a non-empty string")
        return claims

    def _check_audience(self, claims: Mapping[str, Any]) -> None:
        expected = self._settings.auth_jwt_audience
        aud = claims.get("aud")
        if aud is None or aud in ("", []):
            # Amazon Cognito's access tokens carry the app client ID in client_id, not aud.
            if claims.get("token_use") == "access" and claims.get("client_id") == expected:
                return
            raise AuthError("token lacks the aud claim")
        values = [aud] if isinstance(aud, str) else aud
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise AuthError("wrong token audience")
        if expected not in values:
            raise AuthError("wrong token audience")

    def _check_times(self, claims: Mapping[str, Any]) -> None:
        now = self._clock().timestamp()
        leeway = self._settings.auth_jwt_leeway_seconds
        if _numeric(claims, "exp") <= now - leeway:
            raise AuthError("token expired")
        # nbf is optional (RFC 7519 4.1.5): Firebase, Auth0 and Cognito tokens carry none.
        if "nbf" in claims and _numeric(claims, "nbf") > now + leeway:
            raise AuthError("token not yet valid")
        if "iat" in claims and _numeric(claims, "iat") > now + leeway:
            raise AuthError("token issued in the future")


def _numeric(claims: Mapping[str, Any], name: str) -> float:
    value = claims[name]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise AuthError(f"token {name} must be a number")
    try:
        number = float(value)  # an int past 1.8e308 does not fit a float
    except OverflowError:
        raise AuthError(f"token {name} must be a number") from None
    if not math.isfinite(number):
        raise AuthError(f"token {name} must be a number")
    return number


def _identity_text(value: str, what: str) -> str:
    """``value`` if it can name a caller; raises AuthError (401) naming ``what`` otherwise."""
    if _NOT_IDENTITY_TEXT.search(value):
        raise AuthError(f"{what} is not valid text")
    return value


def _easy_auth_caller(principal: str, idp: str | None) -> Caller:
    """The caller named by Easy Auth's ``X-MS-CLIENT-PRINCIPAL`` (only called when trusted)."""
    if len(principal) > MAX_PRINCIPAL_BYTES:
        raise AuthError("client principal too large")
    try:
        text = base64.b64decode(principal, validate=True).decode("utf-8")
        if nested_deeper_than(text, MAX_JSON_DEPTH):
            raise AuthError("malformed client principal")
        data = json.loads(text)
    except (binascii.Error, ValueError):
        raise AuthError("malformed client principal") from None
    if not isinstance(data, dict) or not isinstance(data.get("claims"), list):
        raise AuthError("malformed client principal")
    claims: dict[str, str] = {}
    for item in data["claims"]:
        if isinstance(item, dict) and isinstance(item.get("typ"), str):
            val = item.get("val")
            if isinstance(val, str) and item["typ"] not in claims:
                claims[item["typ"]] = val
    subject = next((claims[c] for c in _SUBJECT_CLAIMS if claims.get(c)), "")
    if not subject:
        raise AuthError("client principal has no subject")
    provider = data.get("auth_typ") if isinstance(data.get("auth_typ"), str) else idp
    issuer = claims.get("iss") or f"easyauth:{provider or 'unknown'}"
    object_id = next((claims[c] for c in _OBJECT_ID_CLAIMS if claims.get(c)), "")
    return Caller(
        _identity_text(issuer, "client principal issuer"),
        _identity_text(subject, "client principal subject"),
        AuthSource.EASY_AUTH,
        _identity_text(object_id, "client principal object id"),
    )


def build_jwks(settings: Settings) -> HttpJwks | None:
    """The JWKS source for the settings, or None when no JWKS URL is configured."""
    if not settings.auth_jwks_url:
        return None
    return HttpJwks(settings.auth_jwks_url)

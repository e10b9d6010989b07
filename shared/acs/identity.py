"""ACS Identity REST client (api-version 2023-10-01) on ``httpx.AsyncClient``.

Not the official ``azure-communication-identity`` async client (``.aio``): its retries are
azure-core's, which retry identity creation on any failure although ACS creates an identity even
when the answer is lost (see below), and it cannot tell our TransientError from a refusal without
mapping azure-core's exceptions anyway. Its two calls are small, so we keep ours.

Authenticates with HMAC-SHA256 over the exact bytes sent (connection string) or with an Entra ID
token (managed identity, scope ``https://communication.azure.com/.default``).

    AcsUnavailableError (TransientError)   no answer, 429 or 5xx after the retry budget: 503
    AcsRejectedError (PushRelayError)      ACS refused the request (401, 403, 400, 404…): 502

Retries: 429 and 5xx are retried a small number of times with back-off (``Retry-After`` is
honoured up to a cap). Creating an identity is not idempotent at ACS, so it is retried only when
the request surely created nothing (a connection never made, 429, 503); anything else ends the
call and the caller decides (see ``shared.usecases.access_tokens``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import logging
import ssl
from collections.abc import AsyncGenerator, Awaitable, Callable, Generator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any, Final, Protocol
from urllib.parse import quote

import httpx

from shared.errors import PushRelayError, SettingsError, TransientError

log = logging.getLogger(__name__)

API_VERSION: Final = "2023-10-01"
ENTRA_SCOPE: Final = "https://communication.azure.com/.default"
SIGNED_HEADERS: Final = "x-ms-date;host;x-ms-content-sha256"
DEFAULT_TIMEOUT: Final = httpx.Timeout(10.0, connect=5.0)
MAX_RETRY_AFTER_SECONDS: Final = 2.0
_NOTHING_CREATED: Final = frozenset({429, 503})

Clock = Callable[[], datetime]
Sleep = Callable[[float], Awaitable[None]]


class AcsUnavailableError(TransientError):
    """ACS did not answer, or kept answering 429/5xx: retry later (503)."""

    public_reason = "acs_unavailable"


class AcsRejectedError(PushRelayError):
    """ACS refused the request (bad credentials, bad request, unknown identity): 502."""

    public_reason = "acs_rejected"

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class AcsToken:
    """An ACS user access token and its expiry, as ACS returned it (ISO 8601)."""

    token: str
    expires_on: str


@dataclass(frozen=True, slots=True)
class AcsConnection:
    """A parsed connection string: ``endpoint=https://…/;accesskey=<base64>``."""

    endpoint: str  # https://host[:port], no trailing slash
    access_key: bytes

    def __repr__(self) -> str:
        return f"AcsConnection(endpoint={self.endpoint!r}, access_key=<hidden>)"


def parse_connection_string(text: str) -> AcsConnection:
    """Parse an ACS connection string. Raises SettingsError (never echoing the key)."""
    parts: dict[str, str] = {}
    for element in text.split(";"):
        name, sep, value = element.strip().partition("=")
        if sep:
            parts[name.strip().lower()] = value.strip()
    endpoint = parts.get("endpoint", "").rstrip("/")
    if not endpoint.lower().startswith("https://") or len(endpoint) <= len("https://"):
        raise SettingsError("setting ACS_CONNECTION_STRING needs endpoint=https://…")
    try:
        key = base64.b64decode(parts.get("accesskey", ""), validate=True)
    except binascii.Error:
        raise SettingsError(
            "setting ACS_CONNECTION_STRING has an accesskey that is not base64"
        ) from None
    if not key:
        raise SettingsError("setting ACS_CONNECTION_STRING needs accesskey=<base64>")
    return AcsConnection(endpoint, key)


def content_hash(body: bytes) -> str:
    """``x-ms-content-sha256``: base64 of SHA-256 of the body bytes (empty body included)."""
    return base64.b64encode(hashlib.sha256(body).digest()).decode("ascii")


def string_to_sign(method: str, path_and_query: str, date: str, host: str, body_hash: str) -> str:
    """ACS's string-to-sign: ``VERB\\npath?query\\ndate;host;content-hash``."""
    return f"{method.upper()}\n{path_and_query}\n{date};{host};{body_hash}"


def hmac_headers(
    method: str, path_and_query: str, host: str, body: bytes, *, key: bytes, date: str
) -> dict[str, str]:
    """The headers that authenticate one request with the access key."""
    body_hash = content_hash(body)
    sts = string_to_sign(method, path_and_query, date, host, body_hash)
    signature = base64.b64encode(hmac.new(key, sts.encode("utf-8"), hashlib.sha256).digest())
    return {
        "x-ms-date": date,
        "x-ms-content-sha256": body_hash,
        "Authorization": (
            f"HMAC-SHA256 SignedHeaders={SIGNED_HEADERS}&Signature={signature.decode('ascii')}"
        ),
    }


def http_date(moment: datetime) -> str:
    """RFC 1123 date in GMT, as ``x-ms-date`` wants it."""
    return format_datetime(moment.astimezone(UTC), usegmt=True)


class HmacAuth(httpx.Auth):
    """Signs each request over the exact path, query, Host and body bytes httpx sends."""

    requires_request_body = True

    def __init__(self, key: bytes, clock: Clock = lambda: datetime.now(UTC)) -> None:
        self._key = key
        self._clock = clock

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        """Add x-ms-date, x-ms-content-sha256 and Authorization, then send."""
        headers = hmac_headers(
            request.method,
            request.url.raw_path.decode("ascii"),
            request.headers["host"],
            request.content,
            key=self._key,
            date=http_date(self._clock()),
        )
        request.headers.update(headers)
        yield request


class AsyncTokenSource(Protocol):
    """What an ``azure.identity.aio`` credential offers (``get_token``)."""

    async def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        """An access token object with ``.token``."""
        ...


class EntraAuth(httpx.Auth):
    """Bearer token from Entra ID (managed identity); the credential caches and refreshes it."""

    def __init__(self, credential: AsyncTokenSource) -> None:
        self._credential = credential

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        """Add ``Authorization: Bearer`` and send."""
        token = await self._credential.get_token(ENTRA_SCOPE)
        request.headers["Authorization"] = f"Bearer {token.token}"
        yield request


def tls_context(ca_file: str) -> ssl.SSLContext:
    """System CAs plus ``ca_file`` (the local ACS identity service's CA) when given."""
    context = ssl.create_default_context()
    if ca_file:
        context.load_verify_locations(cafile=ca_file)
    return context


class AcsIdentityClient:
    """The four Identity calls pushrelay needs, with a small retry budget."""

    def __init__(
        self,
        endpoint: str,
        auth: httpx.Auth,
        *,
        verify: ssl.SSLContext | bool = True,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        retries: int = 2,
        backoff: float = 0.2,
        sleep: Sleep = asyncio.sleep,
        close_also: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.endpoint = endpoint.rstrip("/")
        self._client = httpx.AsyncClient(
            base_url=self.endpoint,
            auth=auth,
            verify=verify,
            transport=transport,
            timeout=timeout,
            headers={"Accept": "application/json"},
        )
        self._retries = retries
        self._backoff = backoff
        self._sleep = sleep
        self._close_also = close_also

    async def create_identity(self) -> str:
        """Create an identity and return its rawId (``8:acs:…``).

        Raises AcsUnavailableError or AcsRejectedError.
        """
        data = await self._call("POST", "/identities", {}, idempotent=False)
        identity = data.get("identity")
        raw_id = identity.get("id") if isinstance(identity, dict) else None
        if not isinstance(raw_id, str) or not raw_id:
            raise AcsRejectedError("ACS create identity answered without identity.id")
        return raw_id

    async def issue_token(self, user_id: str, scopes: Sequence[str], minutes: int) -> AcsToken:
        """Issue a user access token. Raises AcsUnavailableError or AcsRejectedError."""
        body = {"scopes": list(scopes), "expiresInMinutes": minutes}
        data = await self._call("POST", f"/identities/{_segment(user_id)}/:issueAccessToken", body)
        token, expires = data.get("token"), data.get("expiresOn")
        if not isinstance(token, str) or not isinstance(expires, str):
            raise AcsRejectedError("ACS issue token answered without token/expiresOn")
        return AcsToken(token, expires)

    async def revoke_tokens(self, user_id: str) -> None:
        """Revoke every token of an identity. Raises AcsUnavailableError or AcsRejectedError."""
        await self._call("POST", f"/identities/{_segment(user_id)}/:revokeAccessTokens", None)

    async def delete_identity(self, user_id: str) -> None:
        """Delete an identity and its data. Raises AcsUnavailableError or AcsRejectedError."""
        await self._call("DELETE", f"/identities/{_segment(user_id)}", None)

    async def aclose(self) -> None:
        """Close the connection pool (and the managed-identity credential, if any)."""
        await self._client.aclose()
        if self._close_also is not None:
            await self._close_also()

    async def _call(
        self, method: str, path: str, body: object | None, *, idempotent: bool = True
    ) -> dict[str, Any]:
        attempt = 0
        while True:
            response, failure = await self._attempt(method, path, body)
            if response is not None and not _overloaded(response):
                return _parse(method, path, response)
            if attempt >= self._retries or not _retryable(response, failure, idempotent):
                raise _unavailable(method, path, response, failure)
            attempt += 1
            await self._sleep(self._delay(attempt, response))

    async def _attempt(
        self, method: str, path: str, body: object | None
    ) -> tuple[httpx.Response | None, httpx.TransportError | None]:
        try:
            response = await self._client.request(
                method, path, params={"api-version": API_VERSION}, json=body
            )
        except httpx.TransportError as exc:
            log.warning("ACS %s %s failed: %s", method, _route(path), type(exc).__name__)
            return None, exc
        return response, None

    def _delay(self, attempt: int, response: httpx.Response | None) -> float:
        delay = self._backoff * float(2 ** (attempt - 1))
        if response is not None:
            hint = response.headers.get("retry-after", "")
            if hint.isdigit():
                delay = min(float(hint), MAX_RETRY_AFTER_SECONDS)
        return delay


def _overloaded(response: httpx.Response) -> bool:
    return response.status_code == 429 or response.is_server_error


def _retryable(
    response: httpx.Response | None, failure: httpx.TransportError | None, idempotent: bool
) -> bool:
    """Whether to try again; a non-idempotent call only when it surely changed nothing."""
    if response is not None:
        return idempotent or response.status_code in _NOTHING_CREATED
    if idempotent:
        return True
    return isinstance(failure, httpx.ConnectError | httpx.ConnectTimeout)


def _segment(user_id: str) -> str:
    return quote(user_id, safe="")


def _route(path: str) -> str:
    """A path for logs: identity ids are not secrets but need not be logged in full."""
    head, _, tail = path.partition("/identities/")
    if not tail:
        return path
    ident, _, rest = tail.partition("/")
    return f"{head}/identities/{ident[:16]}…/{rest}" if rest else f"{head}/identities/{ident[:16]}…"


def _parse(method: str, path: str, response: httpx.Response) -> dict[str, Any]:
    if response.is_success:
        if response.status_code == 204 or not response.content:
            return {}
        try:
            data = response.json()
        except ValueError:
            raise AcsRejectedError("ACS answered with a body that is not JSON") from None
        if not isinstance(data, dict):
            raise AcsRejectedError("ACS answered with a JSON body that is not an object")
        return data
    code = _error_code(response)
    log.warning("ACS %s %s refused: %d %s", method, _route(path), response.status_code, code)
    raise AcsRejectedError(
        f"ACS refused {method} {_route(path)}: {response.status_code} {code}",
        response.status_code,
    )


def _error_code(response: httpx.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        return "(no error body)"
    error = data.get("error") if isinstance(data, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    return str(code)[:80] if code else "(no error code)"


def _unavailable(
    method: str, path: str, response: httpx.Response | None, failure: Exception | None
) -> AcsUnavailableError:
    if response is not None:
        what = f"{response.status_code} {_error_code(response)}"
    else:
        what = type(failure).__name__
    log.warning("ACS %s %s unavailable: %s", method, _route(path), what)
    return AcsUnavailableError(f"ACS {method} {_route(path)} did not succeed: {what}")


def build_acs_client(connection_string: str, endpoint: str, ca_file: str = "") -> AcsIdentityClient:
    """The client the settings ask for: HMAC with ``ACS_CONNECTION_STRING``, else managed
    identity (``DefaultAzureCredential``) at ``ACS_ENDPOINT``.

    Raises SettingsError when neither is set or the connection string is malformed.
    """
    verify = tls_context(ca_file)
    if connection_string.strip():
        conn = parse_connection_string(connection_string)
        return AcsIdentityClient(conn.endpoint, HmacAuth(conn.access_key), verify=verify)
    if not endpoint.strip().lower().startswith("https://"):
        raise SettingsError(
            "setting ACS_CONNECTION_STRING or ACS_ENDPOINT (https://…) is required to issue tokens"
        )
    from azure.identity.aio import DefaultAzureCredential

    credential = DefaultAzureCredential()
    return AcsIdentityClient(
        endpoint.strip(), EntraAuth(credential), verify=verify, close_also=credential.close
    )

"""A small Table Storage client: the operations the app's adapters use, nothing else.

Why not the azure-data-tables SDK on these paths: each SDK call walks the azure-core pipeline (a
dozen policies), the generated operations layer and its serializers, and costs 2-10x the CPU of
the same request made with aiohttp and a Shared Key signature (``bench/storage.py``; the numbers,
and the SDK trimmed to the policies a request needs, are in ``docs/performance.md``). This client
builds each request directly: one signature, one request on a kept-alive connection
(:mod:`shared.storage.table_http`), one JSON parse.

- :class:`TableService` is the account (endpoint, credentials, connections, retries);
  :meth:`TableService.table` hands out a :class:`TableClient` per table.
- :class:`TableClient` has the same method names, arguments and results as the SDK's async
  ``TableClient`` for what the adapters call (``get_entity``, ``query_entities``,
  ``create_entity``, ``upsert_entity``, ``update_entity``, ``delete_entity``,
  ``submit_transaction``), so an adapter works on either (``STORAGE_CLIENT``).
- Authorization: :class:`SharedKey` (an account key from a connection string) or
  :class:`TokenAuth` (Entra ID, scope ``https://storage.azure.com/.default``, the token reused
  until 5 minutes before it expires) from :class:`AppServiceIdentity` (the managed identity
  endpoint of App Service and Functions, asked directly) or any ``azure.identity.aio``
  credential (``DefaultAzureCredential`` everywhere else).
- Retries: a request that got no answer (connection refused or reset, timeout) or a 408, 429,
  500, 502, 503 or 504 is sent again, at most ``attempts`` times in all: at once (a reset is
  usually a connection the server closed while idle), then after a jittered back-off. Like the
  SDK's retries, a retried create can meet its own first attempt (409) and a retried
  conditional write its own new ETag (412): callers already treat those as "re-read".
- Errors are :mod:`shared.storage.tables`' (404 EntityNotFoundError, but 404 TableNotFound
  TableMissingError; 409 EntityExistsError, 412 EntityChangedError, other 4xx
  StorageRejectedError; no answer, 408/429/5xx after the retries, 401/403, and 409
  TableBeingDeleted StorageUnavailableError). Messages name the table, the operation and the
  service's error code, never a key (keys hold user ids). A delete of a missing entity (or in
  a missing table) succeeds, as with the SDK.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import random
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any, Final, Protocol
from urllib.parse import urlencode, urlsplit

from shared.storage.table_http import HttpAnswer, HttpClient, NoAnswerError
from shared.storage.table_wire import (
    API_VERSION,
    JSON_TYPE,
    MAX_BATCH_BYTES,
    MAX_OPERATIONS,
    MINIMAL_METADATA,
    Entity,
    SubRequest,
    canonical_resource,
    decode_batch,
    decode_entity,
    encode_batch,
    encode_entity,
    entity_path,
    failed_index,
    parse_error,
    query_string,
    shared_key_string,
    signature,
    substitute,
)
from shared.storage.tables import (
    TABLE_NOT_FOUND,
    EntityChangedError,
    EntityExistsError,
    EntityNotFoundError,
    MatchConditions,
    StorageRejectedError,
    StorageUnavailableError,
    TableMissingError,
    UpdateMode,
)

log = logging.getLogger(__name__)

STORAGE_SCOPE: Final = "https://storage.azure.com/.default"
RETRYABLE_STATUS: Final = frozenset({408, 429, 500, 502, 503, 504})
DEVELOPMENT_ACCOUNT: Final = "devstoreaccount1"
# Azurite's well-known development key (public, documented by Microsoft; not a secret).
DEVELOPMENT_KEY: Final = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
_TOKEN_MARGIN: Final = 300.0  # renew an access token this many seconds before it expires


# --- authorization --------------------------------------------------------------------------------


class Authorizer(Protocol):
    """Produces the ``Authorization`` header of one request."""

    async def authorization(self, method: str, content_type: str, date: str, path: str) -> str:
        """The header value for a request to the encoded ``path`` dated ``date``."""
        ...

    def rejected(self) -> None:
        """The service answered 401: whatever is cached is stale."""
        ...

    async def aclose(self) -> None:
        """Release what the authorizer holds."""
        ...


class SharedKey:
    """Shared Key authorization (Table service form) with the account's key."""

    def __init__(self, account: str, key: str) -> None:
        try:
            self._key = base64.b64decode(key, validate=True)
        except binascii.Error as exc:
            raise ValueError("the storage account key is not base64") from exc
        self.account = account

    async def authorization(self, method: str, content_type: str, date: str, path: str) -> str:
        """``SharedKey <account>:<signature>`` over the request's method, type, date, path."""
        text = shared_key_string(method, content_type, date, canonical_resource(self.account, path))
        return f"SharedKey {self.account}:{signature(self._key, text)}"

    def rejected(self) -> None:
        """Nothing cached to drop: a 401 means a wrong key or a clock far off."""

    async def aclose(self) -> None:
        """Nothing to release."""


class TokenSource(Protocol):
    """What an ``azure.identity.aio`` credential offers."""

    async def get_token(self, *scopes: str) -> Any:
        """An access token with ``.token`` and ``.expires_on`` (epoch seconds)."""
        ...

    async def close(self) -> None:
        """Release the credential's transport."""
        ...


class TokenUnavailableError(Exception):
    """The managed identity endpoint gave no token (see :class:`AppServiceIdentity`)."""


@dataclass(frozen=True, slots=True)
class AccessToken:
    """A bearer token and when it expires (epoch seconds), as azure-identity returns them."""

    token: str
    expires_on: int


# With any of these set, DefaultAzureCredential would not use the managed identity first.
_OTHER_IDENTITY_SETTINGS: Final = (
    "AZURE_CLIENT_SECRET",
    "AZURE_CLIENT_CERTIFICATE_PATH",
    "AZURE_USERNAME",
    "AZURE_FEDERATED_TOKEN_FILE",
    "AZURE_TOKEN_CREDENTIALS",
)


class AppServiceIdentity:
    """The app's managed identity asked directly, as on App Service and Azure Functions.

    The platform sets ``IDENTITY_ENDPOINT`` and ``IDENTITY_HEADER``; a token is ``GET
    <endpoint>?api-version=2019-08-01&resource=<resource>`` with the header
    ``X-IDENTITY-HEADER``, answered ``{"access_token", "expires_on" (epoch seconds), ...}``
    (Microsoft's "managed identities for App Service and Azure Functions" REST protocol; what
    azure-identity's ``AppServiceCredential`` sends). Used instead of ``DefaultAzureCredential``
    where that would pick the managed identity anyway, because importing azure-identity and the
    aiohttp it sends on costs ~300 ms of CPU on the first request of every cold start.
    """

    API_VERSION: Final = "2019-08-01"

    def __init__(
        self,
        endpoint: str,
        secret: str,
        client_id: str | None = None,
        *,
        http: HttpTransport | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("IDENTITY_ENDPOINT must be an http(s) URL")
        self._path = parts.path or "/"
        self._query = parts.query
        self._secret = secret
        self._client_id = client_id
        self._http = http or HttpClient(f"{parts.scheme}://{parts.netloc}")
        self._clock = clock

    @classmethod
    def from_environment(cls, env: Mapping[str, str]) -> AppServiceIdentity | None:
        """The platform's identity endpoint, or None where DefaultAzureCredential is needed
        (no endpoint, or another identity configured ahead of the managed one)."""
        endpoint, secret = env.get("IDENTITY_ENDPOINT"), env.get("IDENTITY_HEADER")
        if not endpoint or not secret or any(env.get(n) for n in _OTHER_IDENTITY_SETTINGS):
            return None
        return cls(endpoint, secret, env.get("AZURE_CLIENT_ID") or None)

    async def get_token(self, *scopes: str) -> AccessToken:
        """A token for the one scope (``https://storage.azure.com/.default``).

        Raises TokenUnavailableError (never with the endpoint's secret or answer in it).
        """
        if len(scopes) != 1:
            raise ValueError("one scope per token")
        params = {"api-version": self.API_VERSION, "resource": scopes[0].removesuffix("/.default")}
        if self._client_id:
            params["client_id"] = self._client_id
        query = "&".join(filter(None, (self._query, urlencode(params))))
        started = self._clock()
        try:
            answer = await self._http.request(
                "GET", f"{self._path}?{query}", {"X-IDENTITY-HEADER": self._secret}
            )
        except NoAnswerError as exc:
            raise TokenUnavailableError("no answer from the managed identity endpoint") from exc
        if answer.status != 200:
            raise TokenUnavailableError(f"the managed identity endpoint answered {answer.status}")
        try:
            content = json.loads(answer.body)
            expires = content.get("expires_on") or int(content["expires_in"]) + started
            return AccessToken(str(content["access_token"]), int(expires))
        except (ValueError, KeyError, TypeError) as exc:
            raise TokenUnavailableError("unreadable answer from the managed identity") from exc

    async def close(self) -> None:
        """Close the connection to the endpoint."""
        await self._http.aclose()


def _azure_identity_errors() -> tuple[type[BaseException], ...]:
    # azure-identity's credentials raise azure-core's ClientAuthenticationError; azure-core is
    # loaded with them, and only then can that error occur.
    module = sys.modules.get("azure.core.exceptions")
    return () if module is None else (module.ClientAuthenticationError,)


class TokenAuth:
    """Entra ID authorization: a bearer token for Azure Storage, reused until near expiry."""

    def __init__(self, credential: TokenSource, clock: Callable[[], float] = time.time) -> None:
        self._credential = credential
        self._clock = clock
        self._header = ""
        self._renew_at = 0.0
        self._lock = asyncio.Lock()

    async def authorization(self, method: str, content_type: str, date: str, path: str) -> str:
        """``Bearer <token>``; gets a token first when there is none or it expires soon.

        Raises StorageUnavailableError when no token can be had.
        """
        if self._clock() >= self._renew_at:
            async with self._lock:
                if self._clock() >= self._renew_at:
                    await self._renew()
        return self._header

    async def _renew(self) -> None:
        try:
            token = await self._credential.get_token(STORAGE_SCOPE)
        except TokenUnavailableError as exc:
            raise StorageUnavailableError(f"no access token for storage: {exc}") from exc
        except _azure_identity_errors() as exc:
            raise StorageUnavailableError("no access token for storage") from exc
        self._header = f"Bearer {token.token}"
        self._renew_at = float(token.expires_on) - _TOKEN_MARGIN

    def rejected(self) -> None:
        """Drop the token: the next request gets a new one."""
        self._renew_at = 0.0

    async def aclose(self) -> None:
        """Close the credential."""
        await self._credential.close()


# --- the account ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClientOptions:
    """Timeouts, retries and the hooks tests and benchmarks use."""

    connect_timeout: float = 5.0
    read_timeout: float = 15.0
    attempts: int = 3  # in all, the first included
    backoff: float = 0.4  # the second retry waits 0.2-0.6 s, each later one twice as long
    backoff_cap: float = 4.0
    idle_seconds: float = 4.0  # idle connections closed before Azurite's 5 s keep-alive does
    max_connections: int = 64
    on_request: Callable[[], None] | None = None  # called before every request sent
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    random: Callable[[], float] = random.random
    wall_clock: Callable[[], float] = time.time  # for x-ms-date
    http_factory: Callable[[str, ClientOptions], HttpTransport] | None = field(
        default=None, compare=False
    )


class HttpTransport(Protocol):
    """What the client sends requests on (:class:`shared.storage.table_http.HttpClient`; fakes)."""

    async def request(
        self, method: str, target: str, headers: dict[str, str], body: bytes | None = None
    ) -> HttpAnswer:
        """One request to the origin. Raises NoAnswerError."""
        ...

    async def aclose(self) -> None:
        """Close the connections."""
        ...


def default_http(origin: str, options: ClientOptions) -> HttpTransport:
    """Our HTTP/1.1 client for ``origin`` with the options' timeouts and keep-alive."""
    return HttpClient(
        origin,
        connect_timeout=options.connect_timeout,
        read_timeout=options.read_timeout,
        idle_seconds=options.idle_seconds,
        max_connections=options.max_connections,
    )


def parse_connection_string(text: str) -> dict[str, str]:
    """The ``Key=Value;...`` pairs of a storage connection string, keys lower-cased (as the
    SDK reads them: names are case-insensitive)."""
    pairs = {}
    for part in text.strip().split(";"):
        if part.strip():
            name, sep, value = part.partition("=")
            if not sep:
                raise ValueError("malformed storage connection string")
            pairs[name.strip().lower()] = value.strip()
    return pairs


def _table_endpoint(pairs: Mapping[str, str]) -> str:
    if pairs.get("usedevelopmentstorage", "").lower() == "true":
        return f"http://127.0.0.1:10002/{DEVELOPMENT_ACCOUNT}"
    if "tableendpoint" in pairs:
        return pairs["tableendpoint"]
    account = pairs.get("accountname")
    if not account:
        raise ValueError("the storage connection string names no account")
    scheme = pairs.get("defaultendpointsprotocol", "https")
    suffix = pairs.get("endpointsuffix", "core.windows.net")
    return f"{scheme}://{account}.table.{suffix}"


class TableService:
    """One storage account's Table endpoint: credentials, kept-alive connections, retries."""

    def __init__(
        self, endpoint: str, auth: Authorizer, options: ClientOptions | None = None
    ) -> None:
        parts = urlsplit(endpoint.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("the table endpoint must be an http(s) URL")
        self._origin = f"{parts.scheme}://{parts.netloc}"
        self._base_path = parts.path.rstrip("/")
        self._auth = auth
        self._options = options or ClientOptions()
        self._http: HttpTransport | None = None
        self._date: tuple[int, str] = (0, "")

    @classmethod
    def from_connection_string(
        cls, text: str, options: ClientOptions | None = None
    ) -> TableService:
        """Connect with an account key connection string (``UseDevelopmentStorage=true`` too).

        Raises ValueError when it has no account key (a SAS string needs the SDK client).
        """
        pairs = parse_connection_string(text)
        if pairs.get("usedevelopmentstorage", "").lower() == "true":
            pairs = {"accountname": DEVELOPMENT_ACCOUNT, "accountkey": DEVELOPMENT_KEY, **pairs}
        account, key = pairs.get("accountname"), pairs.get("accountkey")
        if not account or not key:
            raise ValueError("the storage connection string has no AccountName and AccountKey")
        return cls(_table_endpoint(pairs), SharedKey(account, key), options)

    @property
    def base_url(self) -> str:
        """The endpoint URL, no trailing slash (what batch sub-requests are relative to)."""
        return self._origin + self._base_path

    def table(self, name: str) -> TableClient:
        """A client for table ``name`` (nothing is sent)."""
        return TableClient(self, name)

    async def create_table(self, name: str) -> bool:
        """Create table ``name``; False when it exists already. Raises as :meth:`send`."""
        body = json.dumps({"TableName": name}).encode()
        answer = await self.send(
            "POST", "Tables", body=body, prefer_no_content=True, what=f"create table {name}"
        )
        if answer.status in (201, 204):
            return True
        error = parse_error(answer.body, answer.headers.get("x-ms-error-code"))
        if answer.status == 409 and error.code == "TableAlreadyExists":
            return False
        raise failure(answer.status, error.code, f"create table {name}")

    def _http_now(self) -> HttpTransport:
        if self._http is None:
            factory = self._options.http_factory or default_http
            self._http = factory(self._origin, self._options)
        return self._http

    def _x_ms_date(self) -> str:
        # The text changes once a second; formatting it per request would cost more than HMAC.
        now = int(self._options.wall_clock())
        second, text = self._date
        if second != now:
            text = formatdate(now, usegmt=True)
            self._date = (now, text)
        return text

    async def send(
        self,
        method: str,
        path: str,
        query: str = "",
        *,
        body: bytes | None = None,
        content_type: str = JSON_TYPE,
        accept: str = MINIMAL_METADATA,
        if_match: str | None = None,
        prefer_no_content: bool = False,
        what: str,
    ) -> HttpAnswer:
        """Send one request (``path`` encoded, relative to the endpoint), retried as the module
        says; the answer, whatever its status, unless the retries ran out.

        Raises StorageUnavailableError when no answer came or the last one was retryable.
        """
        raw_path = f"{self._base_path}/{path}"
        target = raw_path + query
        ctype = content_type if body is not None else ""
        options = self._options
        for attempt in range(1, options.attempts + 1):
            date = self._x_ms_date()
            headers = {
                "x-ms-date": date,
                "x-ms-version": API_VERSION,
                "DataServiceVersion": "3.0",
                "Accept": accept,
                "Authorization": await self._auth.authorization(method, ctype, date, raw_path),
            }
            if ctype:
                headers["Content-Type"] = ctype
            if if_match is not None:
                headers["If-Match"] = if_match
            if prefer_no_content:
                headers["Prefer"] = "return-no-content"
            if method == "POST" and path == "$batch":
                headers["MaxDataServiceVersion"] = "3.0;NetFx"
            if options.on_request is not None:
                options.on_request()
            try:
                answer = await self._http_now().request(method, target, headers, body)
            except NoAnswerError as exc:
                if attempt == options.attempts:
                    raise StorageUnavailableError(f"{what}: no answer ({exc})") from exc
                log.info("%s: no answer (%s), retrying", what, exc)
            else:
                if answer.status == 401:
                    self._auth.rejected()
                if answer.status not in RETRYABLE_STATUS:
                    return answer
                if attempt == options.attempts:
                    code = parse_error(answer.body, answer.headers.get("x-ms-error-code")).code
                    raise failure(answer.status, code, what)
                log.info("%s: storage answered %d, retrying", what, answer.status)
            await options.sleep(self._delay(attempt))
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _delay(self, attempt: int) -> float:
        """Seconds before attempt ``attempt + 1``: none after the first, then jittered doubling."""
        if attempt <= 1:
            return 0.0
        base = min(self._options.backoff_cap, self._options.backoff * 2 ** (attempt - 2))
        return float(base * (0.5 + self._options.random()))

    async def aclose(self) -> None:
        """Close the connections and the credential."""
        if self._http is not None:
            await self._http.aclose()
            self._http = None
        await self._auth.aclose()


TABLE_BEING_DELETED: Final = "TableBeingDeleted"
"""409 code of every request to a table while Azure deletes it, "at least 40 seconds" by the
Delete Table reference (Azurite drops a table at once). The name is usable again when deletion
ends: an outage, not a conflict, so it is StorageUnavailableError and callers retry later."""


def failure(status: int, code: str, what: str) -> Exception:
    """Our storage error for an error status (``code`` is the service's error code)."""
    detail = f"{status} {code}".strip()
    if status == 404 and code == TABLE_NOT_FOUND:
        return TableMissingError(f"{what}: table missing, created again on next use ({detail})")
    if status == 404:
        return EntityNotFoundError(f"{what}: not found ({detail})")
    if status == 409 and code == TABLE_BEING_DELETED:
        return StorageUnavailableError(f"{what}: table being deleted, retry later ({detail})")
    if status == 409:
        return EntityExistsError(f"{what}: entity exists ({detail})")
    if status == 412:
        return EntityChangedError(f"{what}: entity changed ({detail})")
    if status in (401, 403):
        return StorageUnavailableError(f"{what}: storage refused our credentials ({detail})")
    if status in RETRYABLE_STATUS:
        return StorageUnavailableError(f"{what}: storage unavailable ({detail})")
    return StorageRejectedError(f"{what}: request refused ({detail})")


def _raise_for(answer: HttpAnswer, what: str) -> None:
    code = parse_error(answer.body, answer.headers.get("x-ms-error-code")).code
    raise failure(answer.status, code, what)


# --- one table ------------------------------------------------------------------------------------


def _if_match(etag: str | None, match_condition: MatchConditions | None) -> str:
    """The If-Match value the SDK would send for these arguments. Raises ValueError.

    Conditions are compared by name, so azure-core's ``MatchConditions`` (an adapter written
    against the SDK) means the same as ours.
    """
    condition = getattr(match_condition, "name", None)
    if condition == MatchConditions.IfNotModified.name:
        if not etag:
            raise ValueError("IfNotModified needs an etag")
        return etag
    if condition not in (None, MatchConditions.Unconditionally.name):
        raise ValueError(f"unsupported match condition: {match_condition}")
    if etag:
        raise ValueError("an etag needs match_condition=IfNotModified")
    return "*"


def _meta(answer: HttpAnswer) -> dict[str, Any]:
    return {"etag": answer.headers.get("etag"), "date": answer.headers.get("date")}


_CREATE_HEADERS: Final = (
    ("Accept", MINIMAL_METADATA),
    ("Prefer", "return-no-content"),
    ("DataServiceVersion", "3.0"),
)


class TableClient:
    """One table on a :class:`TableService`; the SDK async TableClient's methods we use."""

    def __init__(self, service: TableService, table_name: str) -> None:
        self._service = service
        self.table_name = table_name

    def _what(self, operation: str) -> str:
        return f"{operation} on {self.table_name}"

    async def get_entity(
        self, partition_key: str, row_key: str, *, select: Sequence[str] | None = None
    ) -> Entity:
        """One entity (point read). Raises EntityNotFoundError, TableMissingError and as
        :meth:`TableService.send`."""
        query = "?$select=" + ",".join(select) if select else ""
        what = self._what("read")
        answer = await self._service.send(
            "GET", entity_path(self.table_name, partition_key, row_key), query, what=what
        )
        if answer.status != 200:
            _raise_for(answer, what)
        entity = decode_entity(json.loads(answer.body))
        if "etag" not in entity.metadata:
            entity.metadata["etag"] = answer.headers.get("etag")
        return entity

    async def query_entities(
        self,
        query_filter: str,
        *,
        parameters: Mapping[str, object] | None = None,
        select: Sequence[str] | None = None,
        results_per_page: int | None = None,
    ) -> AsyncIterator[Entity]:
        """The entities matching ``query_filter`` (``@name`` parameters substituted), page by
        page following the continuation headers."""
        text = substitute(query_filter, parameters)
        what = self._what("query")
        continuation: tuple[str | None, str | None] = (None, None)
        while True:
            query = query_string(text, select, results_per_page, continuation)
            answer = await self._service.send("GET", f"{self.table_name}()", query, what=what)
            if answer.status != 200:
                _raise_for(answer, what)
            for raw in json.loads(answer.body)["value"]:
                yield decode_entity(raw)
            # A page may be short, even empty, and still have a continuation (5 s or partition
            # boundaries on the service): only its absence ends the query.
            next_pk = answer.headers.get("x-ms-continuation-nextpartitionkey")
            next_rk = answer.headers.get("x-ms-continuation-nextrowkey")
            if next_pk is None and next_rk is None:
                return
            continuation = (next_pk, next_rk)

    def list_entities(
        self, *, select: Sequence[str] | None = None, results_per_page: int | None = None
    ) -> AsyncIterator[Entity]:
        """Every entity of the table (a scan: tools and tests only, never a hot path)."""
        return self.query_entities("", select=select, results_per_page=results_per_page)

    async def create_entity(self, entity: Mapping[str, Any]) -> dict[str, Any]:
        """Insert; its ETag. Raises EntityExistsError (409) and as :meth:`TableService.send`."""
        what = self._what("create")
        answer = await self._service.send(
            "POST", self.table_name, body=encode_entity(entity), prefer_no_content=True, what=what
        )
        if answer.status not in (201, 204):
            _raise_for(answer, what)
        return _meta(answer)

    async def upsert_entity(
        self, entity: Mapping[str, Any], mode: UpdateMode = UpdateMode.MERGE
    ) -> dict[str, Any]:
        """Insert or merge (or replace); its ETag. Raises as :meth:`TableService.send`."""
        return await self._write(entity, mode, None, "upsert")

    async def update_entity(
        self,
        entity: Mapping[str, Any],
        mode: UpdateMode = UpdateMode.MERGE,
        *,
        etag: str | None = None,
        match_condition: MatchConditions | None = None,
    ) -> dict[str, Any]:
        """Merge (or replace) an existing entity, under ``etag`` with IfNotModified; its ETag.

        Raises EntityNotFoundError (404), EntityChangedError (412) and as
        :meth:`TableService.send`.
        """
        return await self._write(entity, mode, _if_match(etag, match_condition), "update")

    async def _write(
        self, entity: Mapping[str, Any], mode: UpdateMode, if_match: str | None, operation: str
    ) -> dict[str, Any]:
        what = self._what(operation)
        path = entity_path(self.table_name, entity["PartitionKey"], entity["RowKey"])
        method = "PUT" if mode == UpdateMode.REPLACE else "PATCH"
        answer = await self._service.send(
            method, path, body=encode_entity(entity), if_match=if_match, what=what
        )
        if answer.status != 204:
            _raise_for(answer, what)
        return _meta(answer)

    async def delete_entity(
        self,
        partition_key: str,
        row_key: str,
        *,
        etag: str | None = None,
        match_condition: MatchConditions | None = None,
    ) -> None:
        """Delete (absent is fine, as with the SDK). Raises EntityChangedError (412) and as
        :meth:`TableService.send`."""
        what = self._what("delete")
        answer = await self._service.send(
            "DELETE",
            entity_path(self.table_name, partition_key, row_key),
            if_match=_if_match(etag, match_condition),
            what=what,
        )
        if answer.status not in (204, 404):
            _raise_for(answer, what)

    async def submit_transaction(
        self, operations: Sequence[tuple[Any, ...]]
    ) -> list[dict[str, Any]]:
        """Run operations (``("create" | "upsert" | "update" | "delete", entity[, options])``)
        as one entity-group transaction; each one's ETag, in order.

        All or nothing: raises the failed operation's error (EntityExistsError,
        EntityChangedError, EntityNotFoundError, TableMissingError, StorageRejectedError),
        StorageRejectedError before sending when the transaction breaks a service limit (100
        operations, one partition, 4 MiB), and as :meth:`TableService.send`.
        """
        if not operations:
            return []
        what = self._what(f"transaction of {len(operations)}")
        requests = [self._sub_request(op) for op in operations]
        if len(requests) > MAX_OPERATIONS:
            raise StorageRejectedError(f"{what}: over {MAX_OPERATIONS} operations")
        if len({op[1]["PartitionKey"] for op in operations}) != 1:
            raise StorageRejectedError(f"{what}: operations span several partitions")
        content_type, body = encode_batch(self._service.base_url, requests)
        if len(body) > MAX_BATCH_BYTES:
            raise StorageRejectedError(f"{what}: over 4 MiB")
        answer = await self._service.send(
            "POST", "$batch", body=body, content_type=content_type, accept=JSON_TYPE, what=what
        )
        if answer.status != 202:
            _raise_for(answer, what)
        try:
            parts = decode_batch(answer.headers.get("content-type", ""), answer.body)
        except ValueError as exc:
            raise StorageUnavailableError(f"{what}: unreadable answer") from exc
        for part in parts:
            if part.status >= 300:
                error = parse_error(part.body)
                index = failed_index(error.message)
                at = f" (operation {index})" if index is not None else ""
                raise failure(part.status, error.code, what + at)
        if len(parts) != len(requests):
            raise StorageUnavailableError(f"{what}: {len(parts)} answers to {len(requests)}")
        return [{"etag": part.headers.get("etag")} for part in parts]

    def _sub_request(self, operation: tuple[Any, ...]) -> SubRequest:
        kind, entity = str(getattr(operation[0], "value", operation[0])).lower(), operation[1]
        options: Mapping[str, Any] = operation[2] if len(operation) > 2 else {}
        if kind == "create":
            return SubRequest("POST", self.table_name, _CREATE_HEADERS, encode_entity(entity))
        path = entity_path(self.table_name, entity["PartitionKey"], entity["RowKey"])
        accept = ("Accept", MINIMAL_METADATA)
        mode = options.get("mode", UpdateMode.MERGE)
        method = "PUT" if mode == UpdateMode.REPLACE else "PATCH"
        version = ("DataServiceVersion", "3.0")
        if kind == "upsert":
            return SubRequest(method, path, (accept, version), encode_entity(entity))
        if_match = ("If-Match", _if_match(options.get("etag"), options.get("match_condition")))
        if kind == "update":
            return SubRequest(method, path, (accept, if_match, version), encode_entity(entity))
        if kind == "delete":
            return SubRequest("DELETE", path, (accept, if_match, version), b"")
        raise ValueError(f"unknown transaction operation: {operation[0]!r}")

    async def close(self) -> None:
        """Nothing to close: the service owns the session."""

"""Table Storage: the connection, key encoding, batches, INT64 values and error mapping.

Every storage adapter (``devices``, ``renewal_schedule``, ``identities``, ``deliveries`` ...)
builds on this module and on the :class:`TableClient` port it defines.

- :class:`Tables` connects from ``STORAGE_CONNECTION`` (a connection string, e.g. Azurite's, or
  a table endpoint URL reached with the app's managed identity) and hands out table clients that
  share kept-alive connections. Tables (``<TABLE_PREFIX><name>``) are created idempotently, once
  per process, and again on the next use after the service said one is gone (deleted while the
  app runs: :class:`TableMissingError`). ``STORAGE_CLIENT`` picks the client: ``lean``
  (:mod:`shared.storage.table_client`, ours, the default) or ``sdk`` (azure-data-tables,
  :mod:`shared.storage.tables_sdk`); both answer the same
  calls with the same results and errors.
- :func:`encode_key` / :func:`decode_key`: Table Storage forbids ``/ \\ # ?`` and control
  characters in PartitionKey and RowKey; we escape them (and ``%``, and ``~`` and ``|``, the
  separators of our composite keys) percent-style, so any text round-trips.
  :func:`pair_key` / :func:`split_pair_key`: a (user, device) key. :func:`key_fits`: a key is at
  most 1 KiB (:data:`MAX_KEY_UNITS`).
- :func:`batches` / :func:`submit_batches`: a transaction holds at most 100 operations of one
  partition (Azurite does not reject larger ones cleanly).
- :func:`int64` / :func:`read_int`: integers at or above 2**31 need an explicit ``Edm.Int64``.
- The storage errors both clients raise (:func:`storage_errors` maps the SDK's)::

      PushRelayError
      ├── StorageConflictError          a precondition failed: re-read and decide
      │   ├── EntityExistsError         409: create of an existing entity
      │   └── EntityChangedError        412: the ETag no longer matches
      ├── EntityNotFoundError           404 where the entity was required
      ├── StorageRejectedError          any other 4xx: a bug or oversized data; no retry helps
      └── TransientError
          └── StorageUnavailableError   no answer, a 408/429/5xx, credentials that failed, or
              │                         a table still being deleted (409 TableBeingDeleted)
              └── TableMissingError     404 TableNotFound: the table was deleted; recreated
                                        on the next use

- :func:`round_trips` counts the HTTP requests sent to storage by this process (retries
  included); benchmarks read it.
"""

from __future__ import annotations

import enum
import logging
import os
import re
import sys
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, Protocol, TypeVar

from shared.errors import PushRelayError, TransientError
from shared.settings import StorageClient
from shared.storage.table_wire import Edm, Entity, Typed, parse_error

if TYPE_CHECKING:
    from shared.storage.table_client import ClientOptions

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_BATCH: Final = 100
"""Operations in one entity-group transaction (all in one partition)."""

_INT32_MAX: Final = 2**31 - 1
_RETRYABLE_STATUS: Final = frozenset({408, 429, 500, 502, 503, 504})


# --- errors ---------------------------------------------------------------------------------------


class StorageConflictError(PushRelayError):
    """A precondition failed (entity exists, or its ETag changed): re-read and decide."""


class EntityExistsError(StorageConflictError):
    """409: the entity (or transaction member) already exists."""


class EntityChangedError(StorageConflictError):
    """412: the entity changed since it was read (ETag mismatch)."""


class EntityNotFoundError(PushRelayError):
    """404 where the entity (or table) had to exist."""


class StorageRejectedError(PushRelayError):
    """Storage refused the request (a 4xx other than 404/409/412): retrying will not help."""


class StorageUnavailableError(TransientError):
    """Storage did not answer, answered 408/429/5xx, or refused our credentials."""


class TableMissingError(StorageUnavailableError):
    """404 TableNotFound: the table is gone (deleted while the app runs, an account restored).

    Never EntityNotFoundError: adapters read that as "this row is absent" and would carry on
    as if the data were. An outage of the table instead: the client :class:`Tables` handed out
    creates the table again on its next call, and the caller retries (Event Grid redelivers,
    the HTTP edge answers 503 with Retry-After).
    """


TABLE_NOT_FOUND: Final = "TableNotFound"
"""The service's error code for a request to a table that does not exist (404; in a
transaction, the failed operation's answer says it, e.g. ``0:The table specified does not
exist.``)."""


def says_table_missing(exc: BaseException) -> bool:
    """Whether ``exc`` says the table does not exist: ours, or the SDK's 404 TableNotFound."""
    if isinstance(exc, TableMissingError):
        return True
    return getattr(exc, "status_code", None) == 404 and _service_code(exc) == TABLE_NOT_FOUND


def _service_code(exc: BaseException) -> str:
    """The service's error code an SDK error carries.

    The SDK sets ``error_code`` (a ``TableErrorCode``, or in a transaction's error the plain
    string) on the errors it decodes; its ``create_entity`` re-raises the undecoded one
    (azure-data-tables 12.7, ``aio/_table_client_async.py``), so the code is read from the
    answer it holds.
    """
    code = getattr(exc, "error_code", None)
    if code is not None:
        return str(getattr(code, "value", code))
    response = getattr(exc, "response", None)
    if response is None:
        return ""
    unread: tuple[type[BaseException], ...] = (ValueError, *_sdk_errors())
    try:
        body = response.body()
    except unread:  # an answer not read: no code to be had
        return ""
    return parse_error(
        body if isinstance(body, bytes) else b"", response.headers.get("x-ms-error-code")
    ).code


def _sdk_errors() -> tuple[type[BaseException], ...]:
    """The azure-core errors :func:`storage_errors` maps: none until the SDK has been loaded
    (the lean client raises ours already, and importing azure-core for nothing costs a cold
    start)."""
    module = sys.modules.get("azure.core.exceptions")
    if module is None:
        return ()
    return (module.AzureError,)


@contextmanager
def storage_errors(what: str) -> Iterator[None]:
    """Map the Tables SDK's errors raised inside the block to ours (``what`` names the operation).

    Our own storage errors (the lean client's) pass through as they are. Raises
    EntityExistsError, EntityChangedError, EntityNotFoundError, StorageRejectedError,
    TableMissingError or StorageUnavailableError, each ``from`` the library error.
    """
    try:
        yield
    except _sdk_errors() as exc:
        raise _from_sdk(what, exc) from exc


def _from_sdk(what: str, exc: BaseException) -> PushRelayError:
    from azure.core import exceptions as sdk
    from azure.data.tables import TableTransactionError

    if _service_code(exc) == "TableBeingDeleted":
        # Azure answers 409 for 40 s or more after a table's deletion: an outage of that table.
        return StorageUnavailableError(f"{what}: table being deleted, retry later (409)")
    if says_table_missing(exc):
        # Before ResourceNotFoundError (which the SDK raises for it too): a missing table is
        # an outage, never an absent entity.
        return TableMissingError(f"{what}: table missing, created again on next use (404)")
    if isinstance(exc, sdk.ResourceModifiedError):
        return EntityChangedError(f"{what}: entity changed (412)")
    if isinstance(exc, sdk.ResourceExistsError):
        return EntityExistsError(f"{what}: entity exists (409)")
    if isinstance(exc, sdk.ResourceNotFoundError):
        return EntityNotFoundError(f"{what}: not found (404)")
    if isinstance(exc, sdk.ClientAuthenticationError):
        return StorageUnavailableError(f"{what}: storage refused our credentials")
    if isinstance(exc, TableTransactionError):
        return _from_status(what, exc.status_code, "transaction failed")
    if isinstance(exc, sdk.HttpResponseError):
        return _from_status(what, exc.status_code, "request failed")
    return StorageUnavailableError(f"{what}: no answer from storage ({type(exc).__name__})")


def _from_status(what: str, status: int | None, text: str) -> PushRelayError:
    if status == 409:
        return EntityExistsError(f"{what}: {text}, entity exists (409)")
    if status == 412:
        return EntityChangedError(f"{what}: {text}, entity changed (412)")
    if status == 404:
        return EntityNotFoundError(f"{what}: {text}, not found (404)")
    if status is None or status in _RETRYABLE_STATUS:
        return StorageUnavailableError(f"{what}: {text} ({status})")
    return StorageRejectedError(f"{what}: {text} ({status})")


# --- keys -----------------------------------------------------------------------------------------

# Forbidden in keys: / \ # ? and the control characters U+0000-U+001F and U+007F-U+009F
# (learn.microsoft.com "Understanding the Table service data model"). '%' is the escape itself;
# '~' and '|' separate the parts of our composite keys (PAIR_SEPARATOR; the deliveries table's
# keys), so no encoded part may hold one. Hex ids and ACS rawIds hold none of these, so their
# keys are the ids themselves, as they were before '~' and '|' were escaped here.
_ESCAPED: Final = re.compile(r"[/\\#?%~|\x00-\x1f\x7f-\x9f]")
_ESCAPE: Final = re.compile(r"%([0-9A-F]{2})")
PAIR_SEPARATOR: Final = "~"


def encode_key(text: str) -> str:
    """Encode ``text`` for use in a PartitionKey or RowKey, or as one part of a composite key
    (percent-escapes what Tables forbids and the separators ``~`` and ``|``)."""
    return _ESCAPED.sub(lambda m: f"%{ord(m.group()):02X}", text)


MAX_KEY_UNITS: Final = 512
"""Longest PartitionKey or RowKey in UTF-16 code units: "a string value up to 1 KiB in size"
(learn.microsoft.com "Understanding the Table service data model"), and the service's strings
are UTF-16. Azurite allows 1024; a longer key is a 400 there, which no retry fixes."""


def key_units(key: str) -> int:
    """The length of ``key`` in UTF-16 code units (what the 1 KiB limit counts)."""
    return len(key.encode("utf-16-le", "surrogatepass")) // 2


def key_fits(key: str) -> bool:
    """Whether ``key`` (already encoded) is within Table Storage's key size limit."""
    return key_units(key) <= MAX_KEY_UNITS


def decode_key(key: str) -> str:
    """Invert :func:`encode_key`. Raises ValueError on text that encode_key cannot produce."""
    text = _ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), key)
    if encode_key(text) != key:
        raise ValueError("not an encoded key: forbidden character or non-canonical escape")
    return text


def pair_key(first: str, second: str) -> str:
    """One key of two texts (a user and a device): each encoded, joined by ``~``."""
    return encode_key(first) + PAIR_SEPARATOR + encode_key(second)


def split_pair_key(key: str) -> tuple[str, str]:
    """Invert :func:`pair_key`. Raises ValueError on a key pair_key cannot produce."""
    first, separator, second = key.partition(PAIR_SEPARATOR)
    if not separator:
        raise ValueError(f"not a pair key: no {PAIR_SEPARATOR!r}")
    return decode_key(first), decode_key(second)


# --- values ---------------------------------------------------------------------------------------


def int64(value: int) -> Typed:
    """``value`` typed as Edm.Int64 (either client takes it; the SDK raises on a plain int >=
    2**31)."""
    return Typed(value, Edm.INT64)


def read_int(value: object, default: int = 0) -> int:
    """An integer property as read back (int, or an Int64 typed value); ``default`` if absent."""
    if value is None:
        return default
    if isinstance(value, tuple):  # Typed, or the SDK's EntityProperty
        value = value[0]
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise TypeError(f"not an integer property: {type(value).__name__}")
    return int(value)


def int_property(value: int) -> int | Typed:
    """``value`` as Int32 when it fits, else explicitly Int64."""
    return value if -_INT32_MAX - 1 <= value <= _INT32_MAX else int64(value)


def read_time(value: object) -> datetime:
    """A datetime property as read back (either client), as a plain aware UTC datetime.

    Raises TypeError for anything but a datetime.
    """
    if not isinstance(value, datetime):
        raise TypeError(f"expected a datetime property, got {type(value).__name__}")
    # The SDK returns a datetime subclass; normalise to a plain aware UTC datetime.
    v = value.astimezone(UTC)
    return datetime(v.year, v.month, v.day, v.hour, v.minute, v.second, v.microsecond, UTC)


def read_text(entity: Mapping[str, Any], name: str) -> str | None:
    """A text property; None when it is absent or empty."""
    value = entity.get(name)
    return str(value) if value not in (None, "") else None


def times_text(times: Iterable[datetime]) -> str:
    """Times as one text property: UTC ISO 8601, comma-separated ("" for none)."""
    return ",".join(t.astimezone(UTC).isoformat() for t in times)


def read_times(text: object) -> tuple[datetime, ...]:
    """Invert :func:`times_text`; () when absent or empty. Raises ValueError on other text."""
    if not isinstance(text, str) or not text:
        return ()
    return tuple(datetime.fromisoformat(part) for part in text.split(","))


# --- the table port -------------------------------------------------------------------------------


class UpdateMode(enum.StrEnum):
    """How a write treats the stored entity's other properties (the SDK's names and values)."""

    REPLACE = "replace"
    MERGE = "merge"


class MatchConditions(enum.Enum):
    """ETag conditions of a write (the azure-core names; only these two are used)."""

    Unconditionally = 1
    IfNotModified = 2


class TableClient(Protocol):
    """One table: the calls the adapters make, as both clients answer them.

    Entities are read as :class:`~shared.storage.table_wire.Entity` (``.metadata["etag"]``); writes
    return ``{"etag": ...}``; a transaction returns one such dict per operation. Raises the
    storage errors of this module.
    """

    table_name: str

    async def get_entity(
        self, partition_key: str, row_key: str, *, select: Sequence[str] | None = None
    ) -> Entity:
        """One entity. Raises EntityNotFoundError."""
        ...

    def query_entities(
        self,
        query_filter: str,
        *,
        parameters: Mapping[str, object] | None = None,
        select: Sequence[str] | None = None,
        results_per_page: int | None = None,
    ) -> AsyncIterator[Entity]:
        """Entities matching ``query_filter`` (``@name`` parameters substituted)."""
        ...

    def list_entities(
        self, *, select: Sequence[str] | None = None, results_per_page: int | None = None
    ) -> AsyncIterator[Entity]:
        """Every entity of the table (a scan: tools and tests only)."""
        ...

    async def create_entity(self, entity: Mapping[str, Any]) -> dict[str, Any]:
        """Insert. Raises EntityExistsError."""
        ...

    async def upsert_entity(
        self, entity: Mapping[str, Any], mode: UpdateMode = UpdateMode.MERGE
    ) -> dict[str, Any]:
        """Insert or merge/replace."""
        ...

    async def update_entity(
        self,
        entity: Mapping[str, Any],
        mode: UpdateMode = UpdateMode.MERGE,
        *,
        etag: str | None = None,
        match_condition: MatchConditions | None = None,
    ) -> dict[str, Any]:
        """Merge/replace an existing entity. Raises EntityNotFoundError, EntityChangedError."""
        ...

    async def delete_entity(
        self,
        partition_key: str,
        row_key: str,
        *,
        etag: str | None = None,
        match_condition: MatchConditions | None = None,
    ) -> None:
        """Delete (absent is fine). Raises EntityChangedError."""
        ...

    async def submit_transaction(
        self, operations: Sequence[tuple[Any, ...]]
    ) -> list[dict[str, Any]]:
        """One entity-group transaction, all or nothing."""
        ...


class TableBackend(Protocol):
    """An account as :class:`Tables` uses it (``TableService`` or the SDK's, wrapped)."""

    def table(self, name: str) -> TableClient:
        """A client for table ``name``."""
        ...

    async def create_table(self, name: str) -> bool:
        """Create the table; False when it exists."""
        ...

    async def aclose(self) -> None:
        """Close the transport and credential."""
        ...


async def read_entity(
    table: TableClient, partition_key: str, row_key: str, *, what: str
) -> Entity | None:
    """One point read; None when the entity is absent. Raises as :func:`storage_errors`."""
    try:
        with storage_errors(what):
            return await table.get_entity(partition_key, row_key)
    except EntityNotFoundError:
        return None


async def write_if_unchanged(
    table: TableClient, entity: Mapping[str, Any], etag: str | None, *, what: str
) -> dict[str, Any]:
    """Write what was read back, only if nobody wrote it since: create ``entity`` when the read
    found nothing (``etag`` None), else replace it under ``etag``; its new ETag.

    Raises EntityExistsError (created meanwhile), EntityChangedError (changed since),
    EntityNotFoundError (deleted since), or as :func:`storage_errors`.
    """
    with storage_errors(what):
        if etag is None:
            return await table.create_entity(entity)
        return await table.update_entity(
            entity,
            mode=UpdateMode.REPLACE,
            etag=etag,
            match_condition=MatchConditions.IfNotModified,
        )


# --- batches --------------------------------------------------------------------------------------

Operation = tuple[Any, ...]
"""One transaction operation as the SDK takes it: ``("upsert", entity)``, ``("delete", entity)``,
``("update", entity, {"mode": UpdateMode.REPLACE})`` ..."""


def batches(operations: Sequence[Operation], limit: int = MAX_BATCH) -> list[list[Operation]]:
    """Split operations into transactions of at most ``limit`` operations within one partition.

    Order is kept within each partition. Raises ValueError if ``limit`` is outside 1..100.
    """
    if not 1 <= limit <= MAX_BATCH:
        raise ValueError(f"a transaction holds 1 to {MAX_BATCH} operations")
    by_partition: dict[str, list[Operation]] = {}
    for op in operations:
        entity: Mapping[str, Any] = op[1]
        by_partition.setdefault(str(entity["PartitionKey"]), []).append(op)
    out: list[list[Operation]] = []
    for ops in by_partition.values():
        out.extend(ops[i : i + limit] for i in range(0, len(ops), limit))
    return out


async def submit_batches(table: TableClient, operations: Sequence[Operation]) -> int:
    """Submit operations as transactions (:func:`batches`); returns how many were sent.

    Each transaction is atomic; the whole set is not. Raises as :func:`storage_errors`.
    """
    sent = 0
    for chunk in batches(operations):
        with storage_errors(f"transaction on {table.table_name}"):
            await table.submit_transaction(chunk)
        sent += 1
    return sent


# --- round trips ----------------------------------------------------------------------------------


class _RoundTrips:
    """Counts HTTP requests sent to Table Storage by this process."""

    def __init__(self) -> None:
        self.count = 0

    def on_request(self, _request: object = None) -> None:
        self.count += 1


_ROUND_TRIPS: Final = _RoundTrips()


def round_trips() -> int:
    """HTTP requests this process has sent to Table Storage so far (retries count)."""
    return _ROUND_TRIPS.count


# --- connection -----------------------------------------------------------------------------------

IDLE_SECONDS: Final = 4.0
"""How long an idle connection to storage is kept open: under Azurite's 5 s keep-alive.

Azurite closes an idle connection after 5 s, and a request written to a connection the server
is closing fails with "Connection reset by peer" or "Server disconnected" (two batch writers
against Azurite failed this way within a minute). Azure Storage keeps idle connections for
minutes, so 4 s costs little there.
"""

CONNECT_TIMEOUT: Final = 5.0
READ_TIMEOUT: Final = 15.0
ATTEMPTS: Final = 3
"""Requests sent at most this many times: fail over to the caller's retry (Event Grid, the app)
rather than stall an invocation."""


def _is_url(text: str) -> bool:
    return text.lower().startswith(("https://", "http://"))


class Tables:
    """The storage account: hands out table clients (shared connections), creating tables once,
    and again after one was deleted under the running app (:class:`KeptTable`).

    Build with :meth:`connect`; close with :meth:`aclose`.
    """

    def __init__(self, backend: TableBackend, prefix: str, client: StorageClient) -> None:
        self._backend = backend
        self._prefix = prefix
        self.client = client
        self._kept: dict[str, KeptTable] = {}

    @classmethod
    def connect(
        cls, connection: str, prefix: str, client: StorageClient | str = StorageClient.LEAN
    ) -> Tables:
        """Connect by connection string, or by table endpoint URL with the app's managed identity
        (asked directly on App Service and Functions) or else DefaultAzureCredential.

        A connection string with a shared access signature always uses the SDK client (the
        lean one signs with an account key or a token only). Nothing is sent until a table is
        first used. Raises ValueError on an unusable setting.
        """
        text = connection.strip()
        if not text:
            raise ValueError("no storage connection configured")
        kind = StorageClient(client)
        if (
            kind is StorageClient.LEAN
            and not _is_url(text)
            and "sharedaccesssignature=" in (text.lower())
        ):
            log.info("storage connection string holds a SAS: using the SDK client")
            kind = StorageClient.SDK
        if kind is StorageClient.SDK:
            from shared.storage.tables_sdk import connect_sdk

            return cls(connect_sdk(text, on_request=_ROUND_TRIPS.on_request), prefix, kind)
        return cls(_connect_lean(text), prefix, kind)

    def name(self, table: str) -> str:
        """The full table name: ``<prefix><table>``."""
        return self._prefix + table

    async def table(self, table: str) -> TableClient:
        """A client for ``<prefix><table>``, creating the table on first use in this process
        (and again if a call of the client answered that the table is gone).

        Raises StorageUnavailableError or StorageRejectedError when the table cannot be created.
        """
        kept = self._kept.get(table)
        if kept is None:
            # One client per table, whoever asks first (no await since the lookup).
            kept = self._kept[table] = KeptTable(self._backend, self.name(table))
        if not kept.created:
            await kept.create()
        return kept

    async def aclose(self) -> None:
        """Close the shared connections and the credential."""
        self._kept.clear()
        await self._backend.aclose()


def _table_failures() -> tuple[type[BaseException], ...]:
    # Evaluated only when a call raised: what may say "no such table" (ours, or the SDK's
    # errors, which the adapters map with storage_errors).
    return (TableMissingError, *_sdk_errors())


class KeptTable:
    """The table client :class:`Tables` hands out: the backend's, and the table's existence.

    Adapters keep the client they were given for the life of the process (``shared.wiring``
    builds each adapter once), but the table can go while the app runs: an operator cleaning
    up, a storage account restored. A call the service answers 404 TableNotFound raises as it
    is (TableMissingError once mapped: transient, so Event Grid redelivers and the HTTP edge
    answers 503) and marks the table missing; the next call, through this client or
    :meth:`Tables.table`, creates the table first. While Azure is still deleting the old table
    (40 s or more), that create answers 409 TableBeingDeleted, StorageUnavailableError: the
    callers retry later, and the table is created once the name is free.
    """

    def __init__(self, backend: TableBackend, name: str) -> None:
        self._backend = backend
        self._client = backend.table(name)
        self.table_name = name
        self.created = False

    async def create(self) -> None:
        """Create the table (idempotent: concurrent first uses may both create).

        Raises StorageUnavailableError or StorageRejectedError.
        """
        with storage_errors(f"create table {self.table_name}"):
            await self._backend.create_table(self.table_name)
        log.debug("table %s ready", self.table_name)
        self.created = True

    async def _call(self, send: Callable[[], Awaitable[T]]) -> T:
        """``send()`` on the table, created first if need be; a missing table is marked."""
        if not self.created:
            await self.create()
        try:
            return await send()
        except _table_failures() as exc:
            self._failed(exc)
            raise

    def _failed(self, exc: BaseException) -> None:
        if says_table_missing(exc) and self.created:
            self.created = False
            log.warning("table %s does not exist: creating it again on next use", self.table_name)

    async def get_entity(
        self, partition_key: str, row_key: str, *, select: Sequence[str] | None = None
    ) -> Entity:
        """One entity. Raises EntityNotFoundError (as the backend client does)."""
        return await self._call(
            lambda: self._client.get_entity(partition_key, row_key, select=select)
        )

    def query_entities(
        self,
        query_filter: str,
        *,
        parameters: Mapping[str, object] | None = None,
        select: Sequence[str] | None = None,
        results_per_page: int | None = None,
    ) -> AsyncIterator[Entity]:
        """Entities matching ``query_filter`` (``@name`` parameters substituted)."""
        return self._entities(
            lambda: self._client.query_entities(
                query_filter,
                parameters=parameters,
                select=select,
                results_per_page=results_per_page,
            )
        )

    def list_entities(
        self, *, select: Sequence[str] | None = None, results_per_page: int | None = None
    ) -> AsyncIterator[Entity]:
        """Every entity of the table (a scan: tools and tests only)."""
        return self._entities(
            lambda: self._client.list_entities(select=select, results_per_page=results_per_page)
        )

    async def _entities(self, query: Callable[[], AsyncIterator[Entity]]) -> AsyncIterator[Entity]:
        if not self.created:
            await self.create()
        try:
            async for entity in query():
                yield entity
        except _table_failures() as exc:
            self._failed(exc)
            raise

    async def create_entity(self, entity: Mapping[str, Any]) -> dict[str, Any]:
        """Insert. Raises EntityExistsError."""
        return await self._call(lambda: self._client.create_entity(entity))

    async def upsert_entity(
        self, entity: Mapping[str, Any], mode: UpdateMode = UpdateMode.MERGE
    ) -> dict[str, Any]:
        """Insert or merge/replace."""
        return await self._call(lambda: self._client.upsert_entity(entity, mode))

    async def update_entity(
        self,
        entity: Mapping[str, Any],
        mode: UpdateMode = UpdateMode.MERGE,
        *,
        etag: str | None = None,
        match_condition: MatchConditions | None = None,
    ) -> dict[str, Any]:
        """Merge/replace an existing entity. Raises EntityNotFoundError, EntityChangedError."""
        return await self._call(
            lambda: self._client.update_entity(
                entity, mode, etag=etag, match_condition=match_condition
            )
        )

    async def delete_entity(
        self,
        partition_key: str,
        row_key: str,
        *,
        etag: str | None = None,
        match_condition: MatchConditions | None = None,
    ) -> None:
        """Delete (absent is fine, a missing table too: both clients take any 404 as done).
        Raises EntityChangedError."""
        if not self.created:
            await self.create()
        await self._client.delete_entity(
            partition_key, row_key, etag=etag, match_condition=match_condition
        )

    async def submit_transaction(
        self, operations: Sequence[tuple[Any, ...]]
    ) -> list[dict[str, Any]]:
        """One entity-group transaction, all or nothing."""
        return await self._call(lambda: self._client.submit_transaction(operations))


def lean_options() -> ClientOptions:
    """The lean client's options: the timeouts, attempts and keep-alive above, counted."""
    from shared.storage.table_client import ClientOptions

    return ClientOptions(
        connect_timeout=CONNECT_TIMEOUT,
        read_timeout=READ_TIMEOUT,
        attempts=ATTEMPTS,
        idle_seconds=IDLE_SECONDS,
        on_request=_ROUND_TRIPS.on_request,
    )


def _connect_lean(text: str) -> TableBackend:
    from shared.storage.table_client import AppServiceIdentity, TableService, TokenAuth, TokenSource

    if _is_url(text):
        source: TokenSource | None = AppServiceIdentity.from_environment(os.environ)
        if source is None:
            from azure.identity.aio import DefaultAzureCredential

            source = DefaultAzureCredential()
        return TableService(text, TokenAuth(source), lean_options())
    return TableService.from_connection_string(text, lean_options())

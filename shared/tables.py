"""Table Storage: the connection, key encoding, batches, INT64 values and error mapping.

Every storage adapter (``devices``, ``renewal_schedule``, ``identities``, ``deliveries``) builds on
this module; nothing else imports the Tables SDK.

- :class:`Tables` connects from ``STORAGE_CONNECTION`` (a connection string, e.g. Azurite's, or
  a table endpoint URL reached with ``DefaultAzureCredential``) and hands out async table clients
  that share one aiohttp transport. Tables (``<TABLE_PREFIX><name>``) are created idempotently, once
  per process.
- :func:`encode_key` / :func:`decode_key`: Table Storage forbids ``/ \\ # ?`` and control
  characters in PartitionKey and RowKey; we escape them (and ``%``) percent-style, so any text
  round-trips. :func:`key_fits`: a key is at most 1 KiB (:data:`MAX_KEY_UNITS`).
- :func:`batches` / :func:`submit_batches`: a transaction holds at most 100 operations of one
  partition (Azurite does not reject larger ones cleanly).
- :func:`int64` / :func:`read_int`: integers at or above 2**31 need an explicit ``Edm.Int64``.
- :func:`storage_errors` maps ``azure.core`` errors to ours::

      PushRelayError
      ├── StorageConflictError          a precondition failed: re-read and decide
      │   ├── EntityExistsError         409: create of an existing entity
      │   └── EntityChangedError        412: the ETag no longer matches
      ├── EntityNotFoundError           404 where the entity was required
      ├── StorageRejectedError          any other 4xx: a bug or oversized data; no retry helps
      └── TransientError
          └── StorageUnavailableError   no answer, a 408/429/5xx, or credentials that failed

- :func:`round_trips` counts the HTTP requests sent to storage by this process (retries
  included); benchmarks read it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Final

import aiohttp
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.core.pipeline.transport._aiohttp import AioHttpTransport
from azure.data.tables import EdmType, EntityProperty, TableTransactionError
from azure.data.tables.aio import TableClient, TableServiceClient

from shared.errors import PushRelayError, TransientError

log = logging.getLogger(__name__)

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


@contextmanager
def storage_errors(what: str) -> Iterator[None]:
    """Map the Tables SDK's errors raised inside the block to ours (``what`` names the operation).

    Raises EntityExistsError, EntityChangedError, EntityNotFoundError, StorageRejectedError or
    StorageUnavailableError, each ``from`` the library error.
    """
    try:
        yield
    except ResourceModifiedError as exc:
        raise EntityChangedError(f"{what}: entity changed (412)") from exc
    except ResourceExistsError as exc:
        raise EntityExistsError(f"{what}: entity exists (409)") from exc
    except ResourceNotFoundError as exc:
        raise EntityNotFoundError(f"{what}: not found (404)") from exc
    except ClientAuthenticationError as exc:
        raise StorageUnavailableError(f"{what}: storage refused our credentials") from exc
    except TableTransactionError as exc:
        raise _from_status(what, exc.status_code, "transaction failed") from exc
    except HttpResponseError as exc:
        raise _from_status(what, exc.status_code, "request failed") from exc
    except (ServiceRequestError, ServiceResponseError) as exc:
        raise StorageUnavailableError(
            f"{what}: no answer from storage ({type(exc).__name__})"
        ) from exc


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
# (learn.microsoft.com "Understanding the Table service data model"). '%' is the escape itself.
_ESCAPED: Final = re.compile(r"[/\\#?%\x00-\x1f\x7f-\x9f]")
_ESCAPE: Final = re.compile(r"%([0-9A-F]{2})")


def encode_key(text: str) -> str:
    """Encode ``text`` for use in a PartitionKey or RowKey (percent-escapes what Tables forbids)."""
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


# --- values ---------------------------------------------------------------------------------------


def int64(value: int) -> EntityProperty:
    """``value`` typed as Edm.Int64 (a plain int >= 2**31 makes the SDK raise TypeError)."""
    return EntityProperty(value, EdmType.INT64)


def read_int(value: object, default: int = 0) -> int:
    """An integer property as read back (int, or Int64 EntityProperty); ``default`` if absent."""
    if value is None:
        return default
    if isinstance(value, EntityProperty):
        value = value.value
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise TypeError(f"not an integer property: {type(value).__name__}")
    return int(value)


def int_property(value: int) -> int | EntityProperty:
    """``value`` as Int32 when it fits, else explicitly Int64."""
    return value if -_INT32_MAX - 1 <= value <= _INT32_MAX else int64(value)


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

    def on_request(self, _request: object) -> None:
        self.count += 1


_ROUND_TRIPS: Final = _RoundTrips()


def round_trips() -> int:
    """HTTP requests this process has sent to Table Storage so far (retries count)."""
    return _ROUND_TRIPS.count


# --- connection -----------------------------------------------------------------------------------

IDLE_SECONDS: Final = 4.0
"""How long an idle connection to storage is kept open: under Azurite's 5 s keep-alive."""


class _Transport(AioHttpTransport):
    """The SDK's aiohttp transport, closing idle connections before the server does.

    aiohttp keeps an idle connection 15 s; Azurite closes it after 5 s, and a request written to
    a connection the server is closing fails with "Connection reset by peer" or "Server
    disconnected" (two batch writers against Azurite failed this way within a minute). Azure
    Storage keeps idle connections for minutes, so 4 s costs little there.
    """

    async def open(self) -> None:
        if self.session is None and self._session_owner:
            self.session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(keepalive_timeout=IDLE_SECONDS),
                trust_env=False,
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False,
            )
        await super().open()  # type: ignore[no-untyped-call]


class Tables:
    """The storage account: hands out table clients (one shared transport), creating tables once.

    Build with :meth:`connect`; close with :meth:`aclose`.
    """

    def __init__(self, service: TableServiceClient, prefix: str, credential: Any = None) -> None:
        self._service = service
        self._prefix = prefix
        self._credential = credential
        self._ready: dict[str, TableClient] = {}

    @classmethod
    def connect(cls, connection: str, prefix: str) -> Tables:
        """Connect by connection string, or by table endpoint URL with DefaultAzureCredential.

        Nothing is sent until a table is first used. Raises ValueError on an unusable setting.
        """
        timeouts: dict[str, Any] = {
            "connection_timeout": 5,
            "read_timeout": 15,
            # Otherwise aiohttp reads ~/.netrc and the proxy variables in a worker thread on
            # every request (two thread hops per round trip); storage is reached directly.
            "use_env_settings": False,
        }
        options: dict[str, Any] = {
            "raw_request_hook": _ROUND_TRIPS.on_request,
            # Fail over to the caller's retry (Event Grid, the app) rather than stall a request.
            "retry_total": 2,
            **timeouts,
            "transport": _Transport(**timeouts),
        }
        text = connection.strip()
        if text.lower().startswith(("https://", "http://")):
            from azure.identity.aio import DefaultAzureCredential

            credential = DefaultAzureCredential()
            service = TableServiceClient(endpoint=text, credential=credential, **options)
            return cls(service, prefix, credential)
        if not text:
            raise ValueError("no storage connection configured")
        return cls(TableServiceClient.from_connection_string(text, **options), prefix)

    def name(self, table: str) -> str:
        """The full table name: ``<prefix><table>``."""
        return self._prefix + table

    async def table(self, table: str) -> TableClient:
        """A client for ``<prefix><table>``, creating the table on first use in this process.

        Raises StorageUnavailableError or StorageRejectedError when the table cannot be created.
        """
        client = self._ready.get(table)
        if client is not None:
            return client
        full = self.name(table)
        with storage_errors(f"create table {full}"):
            client = await self._service.create_table_if_not_exists(full)
        log.debug("table %s ready", full)
        # Concurrent first uses may both create; keep one client.
        return self._ready.setdefault(table, client)

    async def aclose(self) -> None:
        """Close the table clients, the shared transport and the credential."""
        for client in self._ready.values():
            await client.close()
        self._ready.clear()
        await self._service.close()
        if self._credential is not None:
            await self._credential.close()

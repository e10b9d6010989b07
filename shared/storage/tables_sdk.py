"""azure-data-tables behind the ``shared.storage.tables.TableClient`` port (``STORAGE_CLIENT=sdk``).

The fallback client, and the baseline the storage benchmark measures the lean client against.
It is what every adapter ran on before the lean client: the SDK's async ``TableClient`` on one
shared aiohttp transport, 2 retries, the same timeouts and keep-alive. :class:`SdkTable` only
translates our ``MatchConditions`` into azure-core's and hands entities back as
:class:`~shared.storage.table_wire.Entity`; values keep the SDK's types (Int64 as
``EntityProperty``, datetimes as its datetime subclass), which every adapter reads.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

import aiohttp
from azure.core import MatchConditions as SdkMatch
from azure.core.pipeline.transport._aiohttp import AioHttpTransport
from azure.data.tables import UpdateMode as SdkMode
from azure.data.tables.aio import TableClient as SdkTableClient
from azure.data.tables.aio import TableServiceClient

from shared.storage.table_wire import Entity
from shared.storage.tables import (
    ATTEMPTS,
    CONNECT_TIMEOUT,
    IDLE_SECONDS,
    READ_TIMEOUT,
    MatchConditions,
    TableClient,
    UpdateMode,
    storage_errors,
)

_MATCH = {
    MatchConditions.Unconditionally: SdkMatch.Unconditionally,
    MatchConditions.IfNotModified: SdkMatch.IfNotModified,
}


class _Transport(AioHttpTransport):
    """The SDK's aiohttp transport, closing idle connections before the server does
    (``shared.storage.tables.IDLE_SECONDS`` says why)."""

    async def open(self) -> None:
        if self.session is None and self._session_owner:
            self.session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(keepalive_timeout=IDLE_SECONDS),
                trust_env=False,
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False,
            )
        await super().open()  # type: ignore[no-untyped-call]


def _entity(raw: Mapping[str, Any]) -> Entity:
    entity = Entity(raw)
    entity.metadata = dict(getattr(raw, "metadata", {}))
    return entity


def _options(options: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(options)
    if "mode" in out:
        out["mode"] = SdkMode(UpdateMode(out["mode"]).value)
    if out.get("match_condition") is not None:
        out["match_condition"] = _MATCH.get(out["match_condition"], out["match_condition"])
    return out


class SdkTable:
    """One SDK table client, answering as :class:`shared.storage.tables.TableClient`."""

    def __init__(self, client: SdkTableClient) -> None:
        self._client = client
        self.table_name: str = client.table_name

    async def get_entity(
        self, partition_key: str, row_key: str, *, select: Sequence[str] | None = None
    ) -> Entity:
        """One entity. Raises the SDK's errors (map them with ``storage_errors``)."""
        chosen = list(select) if select else None
        return _entity(await self._client.get_entity(partition_key, row_key, select=chosen))

    async def query_entities(
        self,
        query_filter: str,
        *,
        parameters: Mapping[str, object] | None = None,
        select: Sequence[str] | None = None,
        results_per_page: int | None = None,
    ) -> AsyncIterator[Entity]:
        """Entities matching the filter, every page."""
        extra: dict[str, Any] = {}
        if select:
            extra["select"] = list(select)
        if results_per_page is not None:
            extra["results_per_page"] = results_per_page
        pages = self._client.query_entities(
            query_filter, parameters=dict(parameters or {}), **extra
        )
        async for raw in pages:
            yield _entity(raw)

    async def list_entities(
        self, *, select: Sequence[str] | None = None, results_per_page: int | None = None
    ) -> AsyncIterator[Entity]:
        """Every entity of the table."""
        extra: dict[str, Any] = {"results_per_page": results_per_page}
        if select:
            extra["select"] = list(select)
        async for raw in self._client.list_entities(**extra):
            yield _entity(raw)

    async def create_entity(self, entity: Mapping[str, Any]) -> dict[str, Any]:
        """Insert."""
        return dict(await self._client.create_entity(entity))

    async def upsert_entity(
        self, entity: Mapping[str, Any], mode: UpdateMode = UpdateMode.MERGE
    ) -> dict[str, Any]:
        """Insert or merge/replace."""
        return dict(await self._client.upsert_entity(entity, mode=SdkMode(mode.value)))

    async def update_entity(
        self,
        entity: Mapping[str, Any],
        mode: UpdateMode = UpdateMode.MERGE,
        *,
        etag: str | None = None,
        match_condition: MatchConditions | None = None,
    ) -> dict[str, Any]:
        """Merge/replace an existing entity."""
        extra = _options({"etag": etag, "match_condition": match_condition})
        meta = await self._client.update_entity(entity, mode=SdkMode(mode.value), **extra)
        return dict(meta)

    async def delete_entity(
        self,
        partition_key: str,
        row_key: str,
        *,
        etag: str | None = None,
        match_condition: MatchConditions | None = None,
    ) -> None:
        """Delete (the SDK ignores a 404)."""
        extra = _options({"etag": etag, "match_condition": match_condition})
        await self._client.delete_entity(partition_key, row_key, **extra)

    async def submit_transaction(
        self, operations: Sequence[tuple[Any, ...]]
    ) -> list[dict[str, Any]]:
        """One entity-group transaction."""
        ops = [(op[0], op[1], _options(op[2])) if len(op) > 2 else op for op in operations]
        return [dict(meta) for meta in await self._client.submit_transaction(ops)]


class SdkTables:
    """The account through the SDK's ``TableServiceClient`` (one shared transport)."""

    def __init__(self, service: TableServiceClient, credential: Any = None) -> None:
        self._service = service
        self.credential = credential
        self._clients: list[SdkTableClient] = []

    def table(self, name: str) -> TableClient:
        """A client for table ``name``."""
        client = self._service.get_table_client(name)
        self._clients.append(client)
        return SdkTable(client)

    async def create_table(self, name: str) -> bool:
        """Create the table if it does not exist (the SDK does not say which happened)."""
        with storage_errors(f"create table {name}"):
            await self._service.create_table_if_not_exists(name)
        return True

    async def aclose(self) -> None:
        """Close the table clients, the shared transport and the credential."""
        for client in self._clients:
            await client.close()
        self._clients.clear()
        await self._service.close()
        if self.credential is not None:
            await self.credential.close()


def connect_sdk(text: str, on_request: Callable[[object], None]) -> SdkTables:
    """The SDK client for a connection string or a table endpoint URL (DefaultAzureCredential).

    Raises ValueError on an unusable connection string.
    """
    timeouts: dict[str, Any] = {
        "connection_timeout": CONNECT_TIMEOUT,
        "read_timeout": READ_TIMEOUT,
        # Otherwise aiohttp reads ~/.netrc and the proxy variables in a worker thread on
        # every request (two thread hops per round trip); storage is reached directly.
        "use_env_settings": False,
    }
    options: dict[str, Any] = {
        "raw_request_hook": on_request,
        "retry_total": ATTEMPTS - 1,
        **timeouts,
        "transport": _Transport(**timeouts),
    }
    if text.lower().startswith(("https://", "http://")):
        from azure.identity.aio import DefaultAzureCredential

        credential = DefaultAzureCredential()
        return SdkTables(TableServiceClient(endpoint=text, credential=credential, **options),
                         credential)  # fmt: skip
    return SdkTables(TableServiceClient.from_connection_string(text, **options))

"""The inbox store's contract, held by the Azurite adapter and by the fake the unit tests use."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from devtools.azurite import Azurite
from shared.storage.inbox import (
    CHUNK_CHARS,
    EMPTY,
    INBOX_ROW,
    Inbox,
    InboxStore,
    TableInboxStore,
    UnreadableInboxError,
    change_inbox,
    encode_inbox,
)
from shared.storage.tables import Tables, encode_key
from tests.fakes.inbox import FakeInbox

pytestmark = pytest.mark.integration

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
USER = "8:acs:res_00000008-578d-7d05-83fe-084822000f6d"
THREAD = "19:6e5d6ca1d75044a49a36a7965ec4a906@thread.v2"
M = 1_772_366_400_000


@pytest.fixture(params=["table", "table writing schema 2", "sdk table", "fake"])
async def store(
    request: pytest.FixtureRequest, azurite: Azurite, table_prefix: str
) -> AsyncIterator[InboxStore]:
    if request.param == "fake":
        yield FakeInbox()
        return
    client = "sdk" if request.param == "sdk table" else "lean"
    tables = Tables.connect(azurite.connection_string, table_prefix, client)
    try:
        schema = 2 if "schema 2" in request.param else 1
        yield TableInboxStore(await tables.table("inbox"), write_schema=schema)
    finally:
        await tables.aclose()


def received(*orders: int) -> Inbox:
    box = Inbox()
    for order in orders:
        box = box.received(THREAD, order, NOW)
    return box


async def test_a_user_without_a_row_has_an_empty_inbox(store: InboxStore) -> None:
    assert await store.read(USER) == EMPTY


async def test_a_first_write_reads_back(store: InboxStore) -> None:
    await store.write(USER, EMPTY, received(M))
    assert (await store.read(USER)).inbox == received(M)


async def test_a_first_write_loses_to_another_first_write(store: InboxStore) -> None:
    await store.write(USER, EMPTY, received(M))
    assert await store.write(USER, EMPTY, received(M + 1)) is None


async def test_a_write_under_a_stale_etag_is_refused(store: InboxStore) -> None:
    first = await store.write(USER, EMPTY, received(M))
    assert first is not None
    await store.write(USER, first, received(M, M + 1))
    assert await store.write(USER, first, received(M, M + 2)) is None


async def test_a_write_under_the_current_etag_replaces_the_row(store: InboxStore) -> None:
    first = await store.write(USER, EMPTY, received(M))
    assert first is not None
    await store.write(USER, first, received(M, M + 1))
    assert (await store.read(USER)).inbox == received(M, M + 1)


async def test_users_have_rows_of_their_own(store: InboxStore) -> None:
    await store.write(USER, EMPTY, received(M))
    assert await store.read("8:acs:res_someone_else") == EMPTY


async def test_an_inbox_longer_than_one_property_round_trips(store: InboxStore) -> None:
    big = Inbox()
    for thread in range(12):
        for order in range(M, M + 1000 * 12345, 12345):
            big = big.received(f"19:{thread}@thread.v2", order, NOW)
    assert len(encode_inbox(big)) > 2 * CHUNK_CHARS
    await store.write(USER, EMPTY, big)
    assert (await store.read(USER)).inbox == big


async def test_concurrent_changes_count_every_message_once(store: InboxStore) -> None:
    await asyncio.gather(
        *(
            change_inbox(store, USER, lambda b, k=k: b.received(THREAD, M + k % 5, NOW), NOW)
            for k in range(8)
        )
    )
    assert (await store.read(USER)).inbox.badge(NOW) == 5


async def test_a_row_the_module_did_not_write_is_unreadable(
    azurite: Azurite, table_prefix: str
) -> None:
    tables = Tables.connect(azurite.connection_string, table_prefix)
    try:
        table = await tables.table("inbox")
        row = {"PartitionKey": encode_key(USER), "RowKey": INBOX_ROW, "chunks": 2, "s0": "{}"}
        await table.create_entity(row)
        with pytest.raises(UnreadableInboxError):
            await TableInboxStore(table).read(USER)
    finally:
        await tables.aclose()

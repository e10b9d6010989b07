"""The identity store's contract, held by the Azurite adapter (with each Table Storage client) and
by the fake the unit tests use: conditional writes, and one identity per caller."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from devtools.azurite import Azurite
from shared.domain.callers import AuthSource, Caller
from shared.storage.identities import TABLE, TableIdentityStore
from shared.storage.tables import Tables
from shared.usecases.access_tokens import IdentityStore, acs_user_for
from tests.fakes.acs_identity import FakeAcs
from tests.fakes.clock import FakeClock, no_sleep
from tests.fakes.identities import FakeIdentityStore

pytestmark = pytest.mark.integration

ALICE = Caller("https://idp.example", "alice", AuthSource.JWT)
NOW = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


@pytest.fixture(params=["lean", "sdk", "fake"])
async def store(
    request: pytest.FixtureRequest, azurite: Azurite, table_prefix: str
) -> AsyncIterator[IdentityStore]:
    if request.param == "fake":
        yield FakeIdentityStore()
        return
    tables = Tables.connect(azurite.connection_string, table_prefix, str(request.param))
    try:
        yield TableIdentityStore(await tables.table(TABLE))
    finally:
        await tables.aclose()


async def test_second_reservation_of_a_caller_is_refused(store: IdentityStore) -> None:
    assert await store.reserve(ALICE.key, NOW) is not None
    assert await store.reserve(ALICE.key, NOW) is None


async def test_filled_in_row_reads_back_ready(store: IdentityStore) -> None:
    mine = await store.reserve(ALICE.key, NOW)
    assert mine is not None
    await store.fill_in(mine, "8:acs:r_1")
    row = await store.get(ALICE.key)
    assert row is not None and row.acs_user_id == "8:acs:r_1"


async def test_fill_in_after_a_take_over_is_refused(store: IdentityStore) -> None:
    mine = await store.reserve(ALICE.key, NOW)
    assert mine is not None
    theirs = await store.take_over(mine, NOW + timedelta(seconds=61))
    assert theirs is not None
    assert await store.fill_in(mine, "8:acs:r_stale") is None
    row = await store.get(ALICE.key)
    assert row is not None and row.acs_user_id is None


async def test_of_two_take_overs_from_one_read_only_the_first_lands(store: IdentityStore) -> None:
    mine = await store.reserve(ALICE.key, NOW)
    assert mine is not None
    later = NOW + timedelta(seconds=61)
    assert await store.take_over(mine, later) is not None
    assert await store.take_over(mine, later) is None
    assert await store.get("https://idp.example|nobody") is None


async def test_release_removes_an_unchanged_reservation(store: IdentityStore) -> None:
    mine = await store.reserve(ALICE.key, NOW)
    assert mine is not None
    await store.release(mine)
    assert await store.get(ALICE.key) is None


async def test_release_keeps_a_row_that_changed(store: IdentityStore) -> None:
    mine = await store.reserve(ALICE.key, NOW)
    assert mine is not None
    await store.fill_in(mine, "8:acs:r_1")
    await store.release(mine)
    row = await store.get(ALICE.key)
    assert row is not None and row.acs_user_id == "8:acs:r_1"


async def test_rate_bucket_round_trips(store: IdentityStore) -> None:
    mine = await store.reserve(ALICE.key, NOW)
    assert mine is not None
    filled = await store.fill_in(mine, "8:acs:r_1")
    assert filled is not None
    await store.save_rate(filled, 2.5, NOW)
    row = await store.get(ALICE.key)
    assert row is not None and (row.rate_tokens, row.rate_at) == (2.5, NOW)


async def test_stale_rate_write_is_refused(store: IdentityStore) -> None:
    mine = await store.reserve(ALICE.key, NOW)
    assert mine is not None
    filled = await store.fill_in(mine, "8:acs:r_1")
    assert filled is not None
    assert await store.save_rate(filled, 2.0, NOW) is not None
    assert await store.save_rate(filled, 1.0, NOW) is None


async def test_concurrent_first_calls_yield_one_identity(
    store: IdentityStore,
) -> None:
    acs, clock = FakeAcs(), FakeClock(NOW)
    ids = await asyncio.gather(
        *(acs_user_for(ALICE, store, acs, clock=clock, sleep=no_sleep) for _ in range(5))
    )
    assert len(set(ids)) == 1
    assert acs.live == {ids[0]}


async def test_keys_with_odata_characters_stay_in_their_own_row(
    store: IdentityStore,
) -> None:
    odd = Caller("https://idp.example/'or'1'eq'1", "a/b#c?d' or PartitionKey ne '", AuthSource.JWT)
    acs, clock = FakeAcs(), FakeClock(NOW)
    odd_id = await acs_user_for(odd, store, acs, clock=clock, sleep=no_sleep)
    alice_id = await acs_user_for(ALICE, store, acs, clock=clock, sleep=no_sleep)
    assert odd_id != alice_id
    assert acs.created == 2

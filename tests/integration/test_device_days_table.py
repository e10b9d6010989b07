"""The device-day index's contract, held by the Azurite adapter (with each Table Storage client)
and by the fake the unit tests use: one entry per device and day, oldest day first, a limit,
removal that tolerates entries already gone, and IDs that try to escape a filter."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from devtools.azurite import Azurite
from shared.storage.registry_purge import DAYS_TABLE, DayEntry, DeviceDays, TableDeviceDays
from shared.storage.tables import Tables
from tests.fakes.device_days import FakeDeviceDays

pytestmark = pytest.mark.integration

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
TODAY, TOMORROW = "20260301", "20260302"
ALICE = "8:acs:res_00000008-578d-7d05-83fe-084822000f6d"
BOB = "8:acs:res_00000009-1111-2222-3333-444455556666"
DEVICE = "d" * 64


@pytest.fixture(params=["lean", "sdk", "fake"])
async def days(
    request: pytest.FixtureRequest, azurite: Azurite, table_prefix: str
) -> AsyncIterator[DeviceDays]:
    if request.param == "fake":
        yield FakeDeviceDays()
        return
    tables = Tables.connect(azurite.connection_string, table_prefix, str(request.param))
    try:
        yield TableDeviceDays(await tables.table(DAYS_TABLE))
    finally:
        await tables.aclose()


async def test_a_note_is_read_from_the_next_day_on(days: DeviceDays) -> None:
    await days.note(ALICE, "d1", NOW)
    assert await days.read_before(TODAY, 10) == []
    assert await days.read_before(TOMORROW, 10) == [DayEntry(TODAY, ALICE, "d1")]


async def test_a_device_noted_twice_a_day_has_one_entry_and_one_per_day(days: DeviceDays) -> None:
    await days.note(ALICE, "d1", NOW)
    await days.note(ALICE, "d1", NOW + timedelta(hours=1))
    await days.note(ALICE, "d1", NOW + timedelta(days=1))
    assert await days.read_before("20260303", 10) == [
        DayEntry(TODAY, ALICE, "d1"),
        DayEntry(TOMORROW, ALICE, "d1"),
    ]


async def test_entries_come_oldest_day_first_up_to_the_limit(days: DeviceDays) -> None:
    await days.note(BOB, "d3", NOW + timedelta(days=2))
    await days.note(ALICE, "d2", NOW + timedelta(days=1))
    await days.note(BOB, "d1", NOW)
    got = await days.read_before("20260310", 2)
    assert got == [DayEntry(TODAY, BOB, "d1"), DayEntry(TOMORROW, ALICE, "d2")]


async def test_entries_of_one_day_come_in_key_order(days: DeviceDays) -> None:
    # Key order is the encoded IDs' order ("8:acs:a/" is stored as "8:acs:a%2F", and "%" sorts
    # before the "~" that ends "8:acs:a"), not the IDs' own: a limited read takes that first.
    for user in ("8:acs:b", "8:acs:a", "8:acs:a/"):
        await days.note(user, DEVICE, NOW)
    got = [e.user_id for e in await days.read_before(TOMORROW, 10)]
    assert got == ["8:acs:a/", "8:acs:a", "8:acs:b"]
    assert [e.user_id for e in await days.read_before(TOMORROW, 1)] == ["8:acs:a/"]


async def test_removed_entries_are_gone_and_absent_ones_do_not_stop_the_rest(
    days: DeviceDays,
) -> None:
    await days.note(ALICE, "d1", NOW)
    await days.note(ALICE, "d2", NOW)
    await days.note(BOB, "d3", NOW)
    await days.remove([DayEntry(TODAY, ALICE, "d1")])
    await days.remove([DayEntry(TODAY, ALICE, "d1"), DayEntry(TODAY, ALICE, "d2")])
    assert await days.read_before(TOMORROW, 10) == [DayEntry(TODAY, BOB, "d3")]


@pytest.mark.parametrize("day", ["2026-03-01", "soon", "20261301"])
async def test_read_before_refuses_text_that_is_not_a_day(days: DeviceDays, day: str) -> None:
    with pytest.raises(ValueError):
        await days.read_before(day, 10)


EVIL = ["x' or PartitionKey ne 'x", "a~b~c", "8:acs:res_1 / # ? % \\ \t", "🧵" * 10, "a|b"]


@pytest.mark.parametrize("evil", EVIL)
async def test_user_ids_with_separators_quotes_and_operators_round_trip(
    days: DeviceDays, evil: str
) -> None:
    await days.note(evil, DEVICE, NOW)
    assert await days.read_before(TOMORROW, 10) == [DayEntry(TODAY, evil, DEVICE)]


@pytest.mark.parametrize("evil", EVIL)
async def test_device_ids_with_separators_quotes_and_operators_round_trip(
    days: DeviceDays, evil: str
) -> None:
    # Ours are SHA-256 hex (device_id_for), but the index must not depend on it.
    await days.note(ALICE, evil, NOW)
    assert await days.read_before(TOMORROW, 10) == [DayEntry(TODAY, ALICE, evil)]


async def test_ids_holding_the_row_separator_stay_two_entries(days: DeviceDays) -> None:
    # The RowKey joins user and device with "~": escaped inside each, neither pair takes the
    # other's row.
    await days.note("8:acs:a", "b~c", NOW)
    await days.note("8:acs:a~b", "c", NOW)
    got = {(e.user_id, e.device_id) for e in await days.read_before(TOMORROW, 10)}
    assert got == {("8:acs:a", "b~c"), ("8:acs:a~b", "c")}

"""The stale-registration purge on Azurite: the device-day index, what the purge removes and keeps,
and the ``purge`` timer function doing it through the app's wiring."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import azure.functions as func
import pytest

from devtools.azurite import Azurite
from devtools.localhost.catalog import app_functions
from devtools.localhost.timers import timer_request
from shared import wiring
from shared.domain.devices import device_id_for
from shared.domain.key_wrap import KeyWrapper
from shared.storage.devices import DEVICES_TABLE, OWNERS_TABLE, DeviceStore
from shared.storage.registry_purge import DAYS_TABLE, TableDeviceDays, day_key, purge_stale_devices
from shared.storage.renewal_schedule import RENEWALS_TABLE, TableRenewalSchedule
from shared.storage.tables import Tables, round_trips
from shared.usecases.registration import RegistrationRules, register_device

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
ALICE = "8:acs:res_00000008-578d-7d05-83fe-084822000f6d"
BOB = "8:acs:res_00000009-1111-2222-3333-444455556666"
KEK = "k1=" + base64.b64encode(b"\x07" * 32).decode()
TOPIC = "com.example.chat"
RULES = RegistrationRules(
    allowed_topics=frozenset({TOPIC}),
    key_lifetime=timedelta(minutes=45),
    renewal_lead=timedelta(minutes=10),
)


@dataclass
class Stores:
    tables: Tables
    registry: DeviceStore
    schedule: TableRenewalSchedule
    days: TableDeviceDays

    async def rows(self, table: str) -> list[tuple[str, str]]:
        client = await self.tables.table(table)
        return sorted([(e["PartitionKey"], e["RowKey"]) async for e in client.list_entities()])


@pytest.fixture
async def stores(azurite: Azurite, table_prefix: str, storage_client: str) -> AsyncIterator[Stores]:
    tables = Tables.connect(azurite.connection_string, table_prefix, storage_client)
    try:
        yield Stores(
            tables,
            DeviceStore(
                await tables.table(DEVICES_TABLE),
                await tables.table(OWNERS_TABLE),
                KeyWrapper.from_setting(KEK),
            ),
            TableRenewalSchedule(await tables.table(RENEWALS_TABLE)),
            TableDeviceDays(await tables.table(DAYS_TABLE)),
        )
    finally:
        await tables.aclose()


def token(n: int) -> str:
    return f"{n:02x}" * 32


def body(n: int, **fields: Any) -> dict[str, Any]:
    base = {"token": token(n), "kind": "alert", "topic": TOPIC, "environment": "sandbox"}
    base["key"] = base64.b64encode(bytes(range(64))).decode()
    base.update(fields)
    return {k: v for k, v in base.items() if v is not None}


async def register(s: Stores, n: int, when: datetime, user: str = ALICE, **fields: Any) -> str:
    done = await register_device(
        user,
        body(n, **fields),
        when,
        registry=s.registry,
        schedule=s.schedule,
        rules=RULES,
        days=s.days,
    )
    return done.device_id


async def test_stale_devices_go_with_their_owner_rows_and_schedule_and_the_rest_stays(
    stores: Stores,
) -> None:
    stale = await register(stores, 1, T0)
    stale_voip = await register(stores, 2, T0, kind="voip", key=None)
    renewed = await register(stores, 3, T0)
    await register(stores, 3, T0 + timedelta(days=20))
    fresh = await register(stores, 4, T0 + timedelta(days=25), user=BOB)

    report = await purge_stale_devices(
        stores.days,
        stores.registry,
        stores.schedule,
        clock=lambda: T0 + timedelta(days=31),
        stale_after=timedelta(days=30),
        renewal_lead=RULES.renewal_lead,
    )

    assert (report.entries, report.removed, report.finished) == (3, 2, True)
    left = {rk for _, rk in await stores.rows(DEVICES_TABLE)}
    assert left == {renewed, fresh}
    assert {pk for pk, _ in await stores.rows(OWNERS_TABLE)} == {renewed, fresh}
    scheduled = {rk.rpartition("~")[2] for _, rk in await stores.rows(RENEWALS_TABLE)}
    assert stale not in scheduled and stale_voip not in left
    assert {pk for pk, _ in await stores.rows(DAYS_TABLE)} == {
        day_key(T0 + timedelta(days=20)),
        day_key(T0 + timedelta(days=25)),
    }


async def test_quotes_and_operators_in_ids_round_trip_through_the_index(stores: Stores) -> None:
    odd_user = "8:acs:x' or PartitionKey ne '/#?%"
    await register(stores, 5, T0, user=odd_user)
    await register(stores, 6, T0 + timedelta(days=29), user=BOB)
    await purge_stale_devices(
        stores.days,
        stores.registry,
        stores.schedule,
        clock=lambda: T0 + timedelta(days=31),
        stale_after=timedelta(days=30),
        renewal_lead=RULES.renewal_lead,
    )
    assert await stores.registry.list_for_user(odd_user) == []
    assert [d.device_id for d in await stores.registry.list_for_user(BOB)] == [
        device_id_for(token(6))
    ]


async def test_a_device_is_noted_once_a_day_per_process(stores: Stores) -> None:
    await register(stores, 7, T0)
    before = round_trips()
    await stores.days.note(ALICE, device_id_for(token(7)), T0 + timedelta(minutes=45))
    same_day = round_trips() - before
    await stores.days.note(ALICE, device_id_for(token(7)), T0 + timedelta(days=1))
    assert (same_day, round_trips() - before) == (0, 1)
    assert len(await stores.rows(DAYS_TABLE)) == 2


async def test_a_renewal_costs_one_more_round_trip_only_on_its_first_of_the_day(
    stores: Stores,
) -> None:
    await register(stores, 8, T0)

    async def trips(when: datetime) -> int:
        before = round_trips()
        await register(stores, 8, when)
        return round_trips() - before

    # merge + schedule, and the day's index entry on the first renewal of a new day
    assert await trips(T0 + timedelta(minutes=40)) == 2
    assert await trips(T0 + timedelta(days=1)) == 3


async def test_the_purge_timer_removes_stale_registrations(
    azurite: Azurite, table_prefix: str
) -> None:
    from function_app import app

    env = {
        "STORAGE_CONNECTION": azurite.connection_string,
        "TABLE_PREFIX": table_prefix,
        "APNS_APPS": json.dumps([{"bundleId": TOPIC, "teamId": "T", "keyId": "K"}]),
        "KEY_ENCRYPTION_KEYS": KEK,
        "DEVICE_STALE_DAYS": "30",
    }
    container = wiring.reset(env)
    try:
        now = datetime.now(UTC)
        registry, schedule = await container.device_registry(), await container.renewal_schedule()
        for n, age in ((9, 40), (10, 2)):
            await register_device(
                ALICE,
                body(n),
                now - timedelta(days=age),
                registry=registry,
                schedule=schedule,
                rules=container.registration_rules(),
                days=await container.device_days(),
            )
        functions = {f.get_function_name(): f.get_user_function() for f in app_functions(app)}
        purge: Callable[[func.TimerRequest], Awaitable[None]] = functions["purge"]
        await purge(timer_request(past_due=False, last=None, next_at=now, now=now))
        left = [d.device_id for d in await registry.list_for_user(ALICE)]
    finally:
        await container.aclose()
        wiring.reset()
    assert left == [device_id_for(token(10))]

"""The delivery log's contract, held by the Azurite adapter (with each Table Storage client) and
by the fake the unit tests use: claims, leases, outcomes, the log and the purge."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from devtools.azurite import Azurite
from shared.storage.deliveries import (
    LEGACY_MUTE_ROW,
    DeliveryKey,
    DeliveryKind,
    DeliveryState,
    DeliveryStore,
    DeviceTarget,
    Outcome,
    TableDeliveryStore,
    partition_key,
)
from shared.storage.tables import Tables
from tests.fakes.deliveries import FakeDeliveries

pytestmark = pytest.mark.integration

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
LEASE = timedelta(seconds=30)
USER = "8:acs:res_00000008-578d-7d05-83fe-084822000f6d"
THREAD = "19:6e5d6ca1d75044a49a36a7965ec4a906@thread.v2"
KEY = DeliveryKey(USER, THREAD, "1613694358927", DeliveryKind.RECEIVED, 1613694358927)
DEVICES = [DeviceTarget(f"{n:064x}", f"dev{n}", "com.example.chat", "sandbox") for n in range(3)]
DELIVERED = Outcome(DeliveryState.DELIVERED, 200, None, "0a0a0a0a-0000-4000-8000-000000000000", 1)
RELEASED = Outcome(DeliveryState.RELEASED, 503, "ServiceUnavailable", None, 3)


@pytest.fixture(params=["lean", "sdk", "fake"])
async def store(
    request: pytest.FixtureRequest, azurite: Azurite, table_prefix: str
) -> AsyncIterator[DeliveryStore]:
    if request.param == "fake":
        yield FakeDeliveries()
        return
    tables = Tables.connect(azurite.connection_string, table_prefix, str(request.param))
    try:
        yield TableDeliveryStore(await tables.table("deliveries"))
    finally:
        await tables.aclose()


def adapter(store: DeliveryStore) -> TableDeliveryStore:
    """The Table Storage adapter; skips for the fake (the test reads or writes raw rows)."""
    if not isinstance(store, TableDeliveryStore):
        pytest.skip("raw rows of the Table Storage adapter")
    return store


async def claim(store: DeliveryStore, now: datetime = NOW, key: DeliveryKey = KEY):
    return await store.claim(key, DEVICES, now=now, lease=LEASE, event_id="e1")


async def test_first_delivery_claims_every_device(store: DeliveryStore) -> None:
    got = await claim(store)
    assert sorted(r.device.device_id for r in got.claimed) == [d.device_id for d in DEVICES]


async def test_redelivery_during_the_lease_claims_nothing(store: DeliveryStore) -> None:
    await claim(store)
    again = await claim(store, NOW + timedelta(seconds=5))
    assert (len(again.claimed), len(again.in_flight)) == (0, 3)


async def test_delivered_devices_are_done_on_redelivery(store: DeliveryStore) -> None:
    first = await claim(store)
    await store.complete([(r, DELIVERED) for r in first.claimed], NOW)
    again = await claim(store, NOW + timedelta(hours=1))
    assert (len(again.claimed), len(again.done)) == (0, 3)


async def test_released_device_is_claimed_again_and_only_it(store: DeliveryStore) -> None:
    first = await claim(store)
    released, *delivered = first.claimed
    await store.complete([(released, RELEASED)] + [(r, DELIVERED) for r in delivered], NOW)
    again = await claim(store, NOW + timedelta(seconds=10))
    assert [(r.device.device_id, r.claims) for r in again.claimed] == [
        (released.device.device_id, 2)
    ]


async def test_expired_lease_is_claimed_again(store: DeliveryStore) -> None:
    await claim(store)
    again = await claim(store, NOW + LEASE + timedelta(seconds=1))
    assert len(again.claimed) == 3


async def test_outcome_after_a_takeover_does_not_overwrite_the_new_claim(
    store: DeliveryStore,
) -> None:
    first = await claim(store)
    late = NOW + LEASE + timedelta(seconds=1)
    second = await claim(store, late)
    await store.complete([(r, RELEASED) for r in first.claimed], late)
    records = await store.history(USER, THREAD, KEY.message_id)
    assert {r.state for r in records} == {DeliveryState.PENDING}
    assert len(second.claimed) == 3


async def test_concurrent_claims_give_each_device_to_exactly_one(
    store: DeliveryStore,
) -> None:
    sets = await asyncio.gather(*(claim(store) for _ in range(6)))
    claimed = [r.device.device_id for s in sets for r in s.claimed]
    assert sorted(claimed) == [d.device_id for d in DEVICES]


async def test_an_edit_is_a_new_delivery(store: DeliveryStore) -> None:
    first = await claim(store)
    await store.complete([(r, DELIVERED) for r in first.claimed], NOW)
    edit = DeliveryKey(USER, THREAD, KEY.message_id, DeliveryKind.EDITED, KEY.version + 5)
    assert len((await claim(store, NOW, edit)).claimed) == 3


async def test_history_tells_what_happened_to_the_message(store: DeliveryStore) -> None:
    first = await claim(store)
    other = DeliveryKey(USER, THREAD, "999", DeliveryKind.RECEIVED, 999)
    await claim(store, NOW, other)
    await store.complete([(r, DELIVERED) for r in first.claimed], NOW + timedelta(seconds=1))
    records = await store.history(USER, THREAD, KEY.message_id)
    assert [(r.device.short_token, r.state, r.status, r.apns_id) for r in records] == [
        (d.short_token, DeliveryState.DELIVERED, 200, DELIVERED.apns_id) for d in DEVICES
    ]


async def test_history_of_another_user_is_empty(store: DeliveryStore) -> None:
    await claim(store)
    assert await store.history("8:acs:res_other", THREAD, KEY.message_id) == []


async def test_purge_removes_old_records_and_keeps_recent_ones(
    store: DeliveryStore,
) -> None:
    old = NOW - timedelta(days=10)
    await claim(store, old)
    recent = DeliveryKey(USER, THREAD, "2000", DeliveryKind.RECEIVED, 2000)
    await claim(store, NOW, recent)
    report = await store.purge(now=NOW, retention=timedelta(days=7))
    assert (report.records, await store.history(USER, THREAD, KEY.message_id)) == (3, [])
    assert len(await store.history(USER, THREAD, "2000")) == 3


async def test_purge_keeps_a_later_redelivery_of_an_old_message(store: DeliveryStore) -> None:
    old = NOW - timedelta(days=10)
    await claim(store, old)
    edit = DeliveryKey(USER, THREAD, KEY.message_id, DeliveryKind.EDITED, KEY.version + 1)
    await claim(store, NOW, edit)
    await store.purge(now=NOW, retention=timedelta(days=7))
    kinds = {r.key.kind for r in await store.history(USER, THREAD, KEY.message_id)}
    assert kinds == {DeliveryKind.EDITED}


async def test_second_purge_walks_no_day_twice(store: DeliveryStore) -> None:
    await store.purge(now=NOW, retention=timedelta(days=7))
    report = await store.purge(now=NOW + timedelta(hours=1), retention=timedelta(days=7))
    assert report.days == 0


async def test_purge_removes_the_mute_rows_of_earlier_versions(store: DeliveryStore) -> None:
    table = adapter(store)._table
    legacy = {"PartitionKey": partition_key(USER, THREAD), "RowKey": LEGACY_MUTE_ROW, "muted": True}
    await table.create_entity(legacy)
    await claim(store, NOW - timedelta(days=10))
    await store.purge(now=NOW, retention=timedelta(days=7))
    rows = [e async for e in table.query_entities(
        "PartitionKey eq @pk", parameters={"pk": partition_key(USER, THREAD)}
    )]  # fmt: skip
    assert rows == []


async def test_purge_reaches_partitions_indexed_by_another_process(
    store: DeliveryStore,
) -> None:
    other_process = TableDeliveryStore(adapter(store)._table)
    old = NOW - timedelta(days=10)
    await other_process.claim(KEY, DEVICES, now=old, lease=LEASE, event_id="e1")
    report = await store.purge(now=NOW, retention=timedelta(days=7))
    assert report.records == 3


# --- ids of any length, tombstones ------------------------------------------------------------


@pytest.mark.parametrize(
    ("thread", "message"),
    [
        ("19:" + "t" * 2000 + "@thread.v2", "1613694358927"),
        (THREAD, "m" * 2000),
        ("19:" + "😀" * 700, "🧵" * 700),  # non-BMP: two UTF-16 units each
    ],
)
async def test_ids_over_the_key_limit_are_claimed_and_logged(
    store: DeliveryStore, thread: str, message: str
) -> None:
    """Before: Azurite (and Azure) refused the key with a 400, and Event Grid retried for 24 h."""
    key = DeliveryKey(USER, thread, message, DeliveryKind.RECEIVED, 5)
    first = await claim(store, NOW, key)
    await store.complete([(r, DELIVERED) for r in first.claimed], NOW)
    again = await claim(store, NOW + timedelta(minutes=1), key)
    records = await store.history(USER, thread, message)
    assert (len(first.claimed), len(again.done)) == (3, 3)
    assert [(r.key.thread_id, r.key.message_id, r.state) for r in records] == [
        (thread, message, DeliveryState.DELIVERED)
    ] * 3


async def test_long_ids_that_share_a_prefix_stay_apart(store: DeliveryStore) -> None:
    a = DeliveryKey(USER, THREAD, "m" * 600 + "a", DeliveryKind.RECEIVED, 5)
    b = DeliveryKey(USER, THREAD, "m" * 600 + "b", DeliveryKind.RECEIVED, 5)
    await claim(store, NOW, a)
    assert len((await claim(store, NOW, b)).claimed) == 3


async def test_a_tombstone_is_seen_by_that_message_only(store: DeliveryStore) -> None:
    await store.mark_deleted(USER, THREAD, KEY.message_id, at=NOW, event_id="d1")
    state = await store.message_state(USER, THREAD, KEY.message_id)
    other = await store.message_state(USER, THREAD, "999")
    assert (state.deleted_at, other.deleted_at) == (NOW, None)


async def test_the_tombstone_of_a_long_message_id_is_found(store: DeliveryStore) -> None:
    await store.mark_deleted(USER, THREAD, "m" * 900, at=NOW, event_id="d1")
    state = await store.message_state(USER, THREAD, "m" * 900)
    assert state.deleted_at == NOW


async def test_a_tombstone_is_not_a_record_of_the_log(store: DeliveryStore) -> None:
    await claim(store)
    await store.mark_deleted(USER, THREAD, KEY.message_id, at=NOW, event_id="d1")
    assert len(await store.history(USER, THREAD, KEY.message_id)) == 3


async def test_tombstones_are_purged_with_the_claims(store: DeliveryStore) -> None:
    old = NOW - timedelta(days=10)
    await store.mark_deleted(USER, THREAD, KEY.message_id, at=old, event_id="d1")
    await store.purge(now=NOW, retention=timedelta(days=7))
    assert (await store.message_state(USER, THREAD, KEY.message_id)).deleted_at is None

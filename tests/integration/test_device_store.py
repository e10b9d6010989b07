"""The device registry's and renewal schedule's contract, held by the Azurite adapters (with each
Table Storage client) and by the fakes the unit tests use: ownership, ETags, the 410 guard,
batches, key encoding, and IDs that try to escape a filter."""

from __future__ import annotations

import asyncio
import base64
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import asdict, replace
from datetime import UTC, datetime, timedelta

import pytest

from devtools.azurite import Azurite
from shared.apns.notification import Environment
from shared.domain.devices import Device, DeviceKind, device_id_for
from shared.domain.key_wrap import KeyWrapper
from shared.storage.devices import DEVICES_TABLE, OWNERS_TABLE, DeviceStore, RegistrationOutcome
from shared.storage.renewal_schedule import (
    RENEWALS_TABLE,
    EntryState,
    ScheduleEntry,
    TableRenewalSchedule,
    bucket_for,
)
from shared.storage.tables import Tables, encode_key, round_trips
from tests.fakes.devices import FakeDeviceStore
from tests.fakes.renewal_schedule import FakeRenewalSchedule

pytestmark = pytest.mark.integration

NOW = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
ALICE = "8:acs:res_00000008-578d-7d05-83fe-084822000f6d"
BOB = "8:acs:res_00000009-1111-2222-3333-444455556666"
KEY = bytes(range(64))
KEK = "k1=" + base64.b64encode(b"\x07" * 32).decode()


class Registry:
    """The store and schedule under test, plus what the store really holds (the rows of the
    tables, or of the fake): the contract below holds for the adapter and the fake alike."""

    def __init__(
        self,
        store: DeviceStore | FakeDeviceStore,
        schedule: TableRenewalSchedule | FakeRenewalSchedule,
        tables: Tables | None = None,
    ) -> None:
        self.store = store
        self.schedule = schedule
        self._tables = tables

    @property
    def tables(self) -> Tables:
        """The adapter's tables (tests of storage details only, skipped for the fake)."""
        self.adapter_only()
        assert self._tables is not None
        return self._tables

    def adapter_only(self) -> None:
        """Skip for the fake: the test checks how the adapter uses storage (round trips, bytes
        at rest), which the fake has no counterpart of."""
        if self._tables is None:
            pytest.skip("a storage detail of the Table Storage adapter")

    async def raw_devices(self) -> list[dict[str, object]]:
        if isinstance(self.store, FakeDeviceStore):
            return [asdict(d) for d in self.store.rows.values()]
        table = await self.tables.table(DEVICES_TABLE)
        return [dict(e) async for e in table.list_entities()]

    async def owner(self, device_id: str) -> str | None:
        if isinstance(self.store, FakeDeviceStore):
            return self.store.owners.get(device_id)
        table = await self.tables.table(OWNERS_TABLE)
        rows = [e async for e in table.list_entities() if e["PartitionKey"] == device_id]
        return str(rows[0]["owner"]) if rows else None

    async def lose_device_row(self, user_id: str, device_id: str) -> None:
        """Delete a device row but not its owner row, as a crash mid-move leaves them."""
        if isinstance(self.store, FakeDeviceStore):
            del self.store.rows[(user_id, device_id)]
            return
        table = await self.tables.table(DEVICES_TABLE)
        await table.delete_entity(encode_key(user_id), encode_key(device_id))


@pytest.fixture(params=["lean", "sdk", "fake"])
async def registry(
    request: pytest.FixtureRequest, azurite: Azurite, table_prefix: str
) -> AsyncIterator[Registry]:
    if request.param == "fake":
        yield Registry(FakeDeviceStore(), FakeRenewalSchedule())
        return
    tables = Tables.connect(azurite.connection_string, table_prefix, str(request.param))
    try:
        store = DeviceStore(
            await tables.table(DEVICES_TABLE),
            await tables.table(OWNERS_TABLE),
            KeyWrapper.from_setting(KEK),
        )
        schedule = TableRenewalSchedule(await tables.table(RENEWALS_TABLE))
        yield Registry(store, schedule, tables)
    finally:
        await tables.aclose()


def device(user: str = ALICE, token: str = "a1" * 32, at: datetime = NOW, **kw: object) -> Device:
    fields: dict[str, object] = {
        "user_id": user,
        "device_id": device_id_for(token),
        "token": token,
        "kind": DeviceKind.ALERT,
        "topic": "com.example.chat",
        "environment": Environment.SANDBOX,
        "registered_at": at,
        "renewed_at": at,
        "preview_key": KEY,
        "key_expires_at": at + timedelta(minutes=45),
    }
    fields.update(kw)
    return Device(**fields)  # type: ignore[arg-type]


async def test_a_registered_device_reads_back_whole(registry: Registry) -> None:
    sent = device(app_version="1.2", locale="fr_CA")
    assert (await registry.store.register(sent)).outcome is RegistrationOutcome.CREATED
    got = await registry.store.get(ALICE, sent.device_id)
    assert got is not None
    assert replace(got, etag=None) == sent


async def test_the_preview_key_is_stored_encrypted(registry: Registry) -> None:
    registry.adapter_only()
    await registry.store.register(device())
    (row,) = await registry.raw_devices()
    stored = str(row["previewKey"])
    assert stored.startswith("k1:")
    assert base64.b64encode(KEY).decode() not in stored
    assert KEY.hex() not in stored


async def test_a_renewal_refreshes_the_key_and_keeps_the_bookkeeping(registry: Registry) -> None:
    first = device()
    await registry.store.register(first)
    await registry.store.record_result(
        ALICE, first.device_id, "400 BadDeviceToken", bad_token=True, at=NOW
    )
    later = NOW + timedelta(minutes=40)
    new_key = bytes(64)
    renewed = device(at=later, preview_key=new_key, environment=Environment.PRODUCTION)
    assert (await registry.store.register(renewed)).outcome is RegistrationOutcome.RENEWED
    got = await registry.store.get(ALICE, first.device_id)
    assert got is not None
    assert (got.registered_at, got.renewed_at, got.preview_key) == (NOW, later, new_key)
    assert (got.environment, got.bad_token_count) == (Environment.PRODUCTION, 1)


async def test_a_renewal_without_a_key_drops_the_old_key(registry: Registry) -> None:
    await registry.store.register(device())
    await registry.store.register(device(preview_key=None, key_expires_at=None))
    got = await registry.store.get(ALICE, device_id_for("a1" * 32))
    assert got is not None
    assert (got.preview_key, got.live_key(NOW)) == (None, None)


async def test_a_token_registered_by_another_user_moves_to_them(registry: Registry) -> None:
    await registry.store.register(device(ALICE))
    result = await registry.store.register(device(BOB))
    assert (result.outcome, result.previous_owner) == (RegistrationOutcome.MOVED, ALICE)
    assert await registry.store.list_for_user(ALICE) == []
    assert [d.user_id for d in await registry.store.list_for_user(BOB)] == [BOB]
    assert await registry.owner(device_id_for("a1" * 32)) == BOB


async def test_a_token_can_move_back(registry: Registry) -> None:
    for user in (ALICE, BOB, ALICE):
        await registry.store.register(device(user))
    assert len(await registry.store.list_for_user(ALICE)) == 1
    assert await registry.store.list_for_user(BOB) == []
    assert await registry.owner(device_id_for("a1" * 32)) == ALICE


async def test_a_move_leaves_the_previous_owners_other_devices(registry: Registry) -> None:
    await registry.store.register(device(ALICE, token="b2" * 32))
    await registry.store.register(device(ALICE))
    await registry.store.register(device(BOB))
    assert [d.device_id for d in await registry.store.list_for_user(ALICE)] == [
        device_id_for("b2" * 32)
    ]


async def test_a_token_renewed_since_held_since_stays_with_its_holder(registry: Registry) -> None:
    await registry.store.register(device(ALICE))
    before = await registry.raw_devices()
    result = await registry.store.register(device(BOB, at=NOW + timedelta(days=1)), held_since=NOW)
    assert (result.outcome, result.previous_owner) == (RegistrationOutcome.HELD, ALICE)
    assert result.holder is not None and result.holder.user_id == ALICE
    assert await registry.raw_devices() == before
    assert await registry.owner(device_id_for("a1" * 32)) == ALICE


async def test_a_token_not_renewed_since_held_since_moves(registry: Registry) -> None:
    await registry.store.register(device(ALICE))
    later = NOW + timedelta(days=31)
    result = await registry.store.register(
        device(BOB, at=later), held_since=NOW + timedelta(microseconds=1)
    )
    assert (result.outcome, await registry.owner(device_id_for("a1" * 32))) == (
        RegistrationOutcome.MOVED,
        BOB,
    )


async def test_a_token_whose_holders_row_is_gone_moves_despite_held_since(
    registry: Registry,
) -> None:
    await registry.store.register(device(ALICE))
    await registry.lose_device_row(ALICE, device_id_for("a1" * 32))  # a crash mid-move
    result = await registry.store.register(device(BOB), held_since=NOW)
    assert result.outcome is RegistrationOutcome.MOVED


async def test_another_user_cannot_remove_a_device(registry: Registry) -> None:
    await registry.store.register(device(BOB))
    assert await registry.store.remove(ALICE, device_id_for("a1" * 32)) is None
    assert len(await registry.store.list_for_user(BOB)) == 1
    assert await registry.owner(device_id_for("a1" * 32)) == BOB


async def test_the_owner_removes_the_device_and_its_token_ownership(registry: Registry) -> None:
    await registry.store.register(device())
    removed = await registry.store.remove(ALICE, device_id_for("a1" * 32))
    assert removed is not None
    assert removed.preview_key == KEY
    assert await registry.raw_devices() == []
    assert await registry.owner(device_id_for("a1" * 32)) is None


async def test_a_device_renewed_after_the_410_timestamp_is_kept(registry: Registry) -> None:
    await registry.store.register(device(at=NOW))
    gone_at = NOW - timedelta(seconds=1)
    assert (
        await registry.store.remove_if_registered_before(ALICE, device_id_for("a1" * 32), gone_at)
        is None
    )
    assert len(await registry.store.list_for_user(ALICE)) == 1


async def test_a_device_not_renewed_since_the_410_timestamp_is_removed(registry: Registry) -> None:
    await registry.store.register(device(at=NOW))
    gone_at = NOW + timedelta(seconds=1)
    removed = await registry.store.remove_if_registered_before(
        ALICE, device_id_for("a1" * 32), gone_at
    )
    assert removed is not None
    assert await registry.store.list_for_user(ALICE) == []


async def test_concurrent_bad_token_results_are_all_counted(registry: Registry) -> None:
    await registry.store.register(device())
    device_id = device_id_for("a1" * 32)
    counts = await asyncio.gather(
        *(
            registry.store.record_result(ALICE, device_id, "BadDeviceToken", bad_token=True, at=NOW)
            for _ in range(3)
        )
    )
    assert sorted(c for c in counts if c is not None) == [1, 2, 3]
    got = await registry.store.get(ALICE, device_id)
    assert got is not None
    assert got.bad_token_count == 3


async def test_a_success_resets_the_bad_token_count(registry: Registry) -> None:
    await registry.store.register(device())
    device_id = device_id_for("a1" * 32)
    await registry.store.record_result(ALICE, device_id, "BadDeviceToken", bad_token=True, at=NOW)
    assert await registry.store.record_result(ALICE, device_id, "200", bad_token=False, at=NOW) == 0
    got = await registry.store.get(ALICE, device_id)
    assert got is not None
    assert (got.bad_token_count, got.last_result, got.last_result_at) == (0, "200", NOW)


async def test_results_for_a_removed_device_do_not_recreate_it(registry: Registry) -> None:
    device_id = device_id_for("a1" * 32)
    assert (
        await registry.store.record_result(ALICE, device_id, "200", bad_token=False, at=NOW) is None
    )
    assert await registry.store.record_result(ALICE, device_id, "x", bad_token=True, at=NOW) is None
    assert await registry.store.mark_stale(ALICE, device_id) is False
    assert await registry.raw_devices() == []


async def test_background_pushes_are_recorded_for_the_budget(registry: Registry) -> None:
    await registry.store.register(device())
    device_id = device_id_for("a1" * 32)
    times = [NOW + timedelta(minutes=m) for m in (0, 25, 50)]
    for t in times:
        await registry.store.record_background_push(ALICE, device_id, t, renewal=True)
    got = await registry.store.get(ALICE, device_id)
    assert got is not None
    assert (got.background_sent, got.unanswered_wakes) == (tuple(times), 3)


async def test_a_renewal_answers_the_wakes_and_clears_staleness(registry: Registry) -> None:
    await registry.store.register(device())
    device_id = device_id_for("a1" * 32)
    await registry.store.record_background_push(ALICE, device_id, NOW, renewal=True)
    await registry.store.mark_stale(ALICE, device_id)
    await registry.store.register(device(at=NOW + timedelta(minutes=5)))
    got = await registry.store.get(ALICE, device_id)
    assert got is not None
    assert (got.stale, got.unanswered_wakes, got.background_sent) == (False, 0, (NOW,))


@pytest.mark.parametrize(
    "evil",
    [
        "x' or PartitionKey ne 'x",
        "' or '1' eq '1",
        "a') or (RowKey ge '",
        "8:acs:res_1 / # ? % \\ \t",
    ],
)
async def test_ids_with_quotes_and_operators_stay_inside_their_partition(
    registry: Registry, evil: str
) -> None:
    await registry.store.register(device(ALICE))
    await registry.store.register(device(evil, token="c3" * 32))
    assert [d.device_id for d in await registry.store.list_for_user(evil)] == [
        device_id_for("c3" * 32)
    ]
    assert [d.user_id for d in await registry.store.list_for_user(evil)] == [evil]
    assert await registry.store.get(evil, device_id_for("a1" * 32)) is None
    assert await registry.store.remove(evil, device_id_for("a1" * 32)) is None
    assert await registry.store.get(ALICE, evil) is None
    assert len(await registry.store.list_for_user(ALICE)) == 1


async def test_round_trips_of_a_renewal_a_first_registration_and_a_move(registry: Registry) -> None:
    registry.adapter_only()

    async def trips(d: Device) -> int:
        before = round_trips()
        await registry.store.register(d)
        return round_trips() - before

    assert await trips(device(ALICE)) == 3
    assert await trips(device(ALICE)) == 1
    assert await trips(device(BOB)) == 6


async def test_an_owner_row_left_without_its_device_is_reclaimed(registry: Registry) -> None:
    await registry.store.register(device())
    await registry.lose_device_row(ALICE, device_id_for("a1" * 32))
    result = await registry.store.register(device())
    assert result.outcome is RegistrationOutcome.CREATED
    assert len(await registry.store.list_for_user(ALICE)) == 1


async def test_concurrent_first_registrations_of_one_token_make_one_device(
    registry: Registry,
) -> None:
    await asyncio.gather(*(registry.store.register(device()) for _ in range(3)))
    assert len(await registry.raw_devices()) == 1
    assert await registry.owner(device_id_for("a1" * 32)) == ALICE


async def test_background_pushes_older_than_the_window_are_forgotten(registry: Registry) -> None:
    await registry.store.register(device())
    device_id = device_id_for("a1" * 32)
    await registry.store.record_background_push(ALICE, device_id, NOW, renewal=False)
    later = NOW + timedelta(hours=25)
    got = await registry.store.record_background_push(ALICE, device_id, later, renewal=False)
    assert got is not None
    assert (got.background_sent, got.unanswered_wakes) == ((later,), 0)


async def test_a_wake_claimed_under_the_current_etag_is_recorded(registry: Registry) -> None:
    registered = await registry.store.register(device())
    device_id = device_id_for("a1" * 32)
    assert registered.etag is not None
    sent, wake_at = NOW + timedelta(minutes=1), NOW + timedelta(hours=2)
    claimed = await registry.store.claim_wake(
        ALICE,
        device_id,
        registered.etag,
        sent=[sent],
        unanswered_wakes=1,
        wake_at=wake_at,
        wake_sweep="s1",
    )
    assert (claimed.etag is not None, claimed.gone) == (True, False)
    got = await registry.store.get(ALICE, device_id)
    assert got is not None
    assert (got.background_sent, got.unanswered_wakes, got.wake_at, got.wake_sweep) == (
        (sent,),
        1,
        wake_at,
        "s1",
    )
    assert got.etag == claimed.etag


async def test_a_wake_claimed_under_a_stale_etag_writes_nothing(registry: Registry) -> None:
    registered = await registry.store.register(device())
    device_id = device_id_for("a1" * 32)
    assert registered.etag is not None
    await registry.store.record_result(ALICE, device_id, "200", bad_token=False, at=NOW)
    before = await registry.raw_devices()
    claimed = await registry.store.claim_wake(
        ALICE,
        device_id,
        registered.etag,
        sent=[NOW],
        unanswered_wakes=1,
        wake_at=None,
        wake_sweep="s1",
    )
    assert (claimed.etag, claimed.gone) == (None, False)
    assert await registry.raw_devices() == before


async def test_a_wake_claimed_for_a_removed_device_reports_it_gone(registry: Registry) -> None:
    registered = await registry.store.register(device())
    device_id = device_id_for("a1" * 32)
    assert registered.etag is not None
    await registry.store.remove(ALICE, device_id)
    claimed = await registry.store.claim_wake(
        ALICE,
        device_id,
        registered.etag,
        sent=[NOW],
        unanswered_wakes=1,
        wake_at=None,
        wake_sweep=None,
    )
    assert (claimed.etag, claimed.gone) == (None, True)
    assert await registry.raw_devices() == []


async def test_renewal_pushes_replace_each_other_and_read_back_with_the_others(
    registry: Registry,
) -> None:
    await registry.store.register(device())
    device_id = device_id_for("a1" * 32)
    pushed = await registry.store.record_background_push(ALICE, device_id, NOW, renewal=False)
    assert pushed is not None and pushed.etag is not None
    first, second = NOW + timedelta(minutes=5), NOW + timedelta(minutes=10)
    claimed = await registry.store.claim_wake(
        ALICE,
        device_id,
        pushed.etag,
        sent=[first],
        unanswered_wakes=1,
        wake_at=None,
        wake_sweep=None,
    )
    assert claimed.etag is not None
    await registry.store.claim_wake(
        ALICE,
        device_id,
        claimed.etag,
        sent=[second],
        unanswered_wakes=2,
        wake_at=None,
        wake_sweep=None,
    )
    got = await registry.store.get(ALICE, device_id)
    assert got is not None
    assert (got.background_sent, got.unanswered_wakes) == ((NOW, second), 2)


async def test_marking_stale_under_a_stale_etag_writes_nothing(registry: Registry) -> None:
    registered = await registry.store.register(device())
    device_id = device_id_for("a1" * 32)
    assert registered.etag is not None
    await registry.store.record_result(ALICE, device_id, "200", bad_token=False, at=NOW)
    assert await registry.store.mark_stale(ALICE, device_id, registered.etag) is False
    got = await registry.store.get(ALICE, device_id)
    assert got is not None and got.stale is False
    assert await registry.store.mark_stale(ALICE, device_id, got.etag) is True


# --- renewal schedule -----------------------------------------------------------------------------


async def test_read_due_returns_the_entries_of_the_bucket_range(registry: Registry) -> None:
    due = datetime(2026, 3, 1, 12, 7, tzinfo=UTC)
    await registry.schedule.schedule(ALICE, "d1", due)
    await registry.schedule.schedule(BOB, "d2", due + timedelta(minutes=5))
    await registry.schedule.schedule(BOB, "d3", due + timedelta(minutes=10))
    got = await registry.schedule.read_due("202603011205", "202603011210")
    assert got == [
        ScheduleEntry("202603011205", ALICE, "d1"),
        ScheduleEntry("202603011210", BOB, "d2"),
    ]


async def test_ids_holding_the_row_separator_stay_two_entries_and_read_back_whole(
    registry: Registry,
) -> None:
    # The RowKey joins user and device with "~": escaped inside each, neither pair takes the
    # other's row.
    await registry.schedule.schedule("8:acs:a", "b~c", NOW)
    await registry.schedule.schedule("8:acs:a~b", "c", NOW)
    got = await registry.schedule.read_due(bucket_for(NOW), bucket_for(NOW))
    assert sorted((e.user_id, e.device_id) for e in got) == [("8:acs:a", "b~c"), ("8:acs:a~b", "c")]


async def test_unschedule_removes_the_entry(registry: Registry) -> None:
    await registry.schedule.schedule(ALICE, "d1", NOW)
    await registry.schedule.unschedule(ALICE, "d1", NOW)
    assert await registry.schedule.read_due(bucket_for(NOW), bucket_for(NOW)) == []


async def test_removing_250_entries_of_one_bucket_takes_one_transaction_per_100_per_partition(
    registry: Registry,
) -> None:
    registry.adapter_only()
    bucket = bucket_for(NOW)
    entries = [ScheduleEntry(bucket, f"8:acs:user{i:03}", f"{i:064x}") for i in range(250)]
    for e in entries:
        await registry.schedule.schedule(e.user_id, e.device_id, NOW)
    assert len(await registry.schedule.read_due(bucket, bucket)) == 250
    per_partition = Counter(e.partition for e in entries)
    before = round_trips()
    await registry.schedule.remove(entries)
    assert round_trips() - before == sum(-(-n // 100) for n in per_partition.values())
    assert await registry.schedule.read_due(bucket, bucket) == []


async def test_removing_entries_already_gone_still_removes_the_rest(registry: Registry) -> None:
    bucket = bucket_for(NOW)
    await registry.schedule.schedule(ALICE, "d1", NOW)
    await registry.schedule.schedule(ALICE, "d2", NOW)
    await registry.schedule.unschedule(ALICE, "d1", NOW)
    await registry.schedule.remove(
        [ScheduleEntry(bucket, ALICE, "d1"), ScheduleEntry(bucket, ALICE, "d2")]
    )
    assert await registry.schedule.read_due(bucket, bucket) == []


async def test_schedule_rows_round_trip_awkward_user_ids(registry: Registry) -> None:
    user = "8:acs:weird~id/with#chars?%"
    await registry.schedule.schedule(user, "d1", NOW)
    assert await registry.schedule.read_due(bucket_for(NOW), bucket_for(NOW)) == [
        ScheduleEntry(bucket_for(NOW), user, "d1")
    ]


def state(etag: str, **kw: object) -> EntryState:
    fields: dict[str, object] = {
        "token": "a1" * 32,
        "topic": "com.example.chat",
        "environment": "sandbox",
        "etag": etag,
        "at": NOW,
        "sent": (NOW - timedelta(minutes=30), NOW),
        "wakes": 2,
        "wake_at": NOW,
        "wake_sweep": "s1",
        "bad_tokens": 1,
        "last_result": "400 BadDeviceToken",
        "last_result_at": NOW,
    }
    fields.update(kw)
    return EntryState(**fields)  # type: ignore[arg-type]


async def test_entries_carry_their_state_and_the_last_one_for_a_key_wins(
    registry: Registry,
) -> None:
    bucket = bucket_for(NOW)
    await registry.schedule.put_many(
        [
            ScheduleEntry(bucket, ALICE, "d1", state('W/"1"')),
            ScheduleEntry(bucket, BOB, "d2"),
            ScheduleEntry(bucket, ALICE, "d1", state('W/"2"', wake_at=None, wake_sweep=None)),
        ]
    )
    got = {
        (e.user_id, e.device_id): e.state for e in await registry.schedule.read_due(bucket, bucket)
    }
    assert got == {
        (ALICE, "d1"): state('W/"2"', wake_at=None, wake_sweep=None),
        (BOB, "d2"): None,
    }


async def test_a_state_reads_back_as_stored(registry: Registry) -> None:
    await registry.schedule.schedule(ALICE, "d1", NOW, state('W/"1"', last_result="", sent=()))
    await registry.schedule.schedule(BOB, "d2", NOW, state(""))
    got = {
        e.device_id: e.state
        for e in await registry.schedule.read_due(bucket_for(NOW), bucket_for(NOW))
    }
    assert got == {"d1": state('W/"1"', last_result=None, sent=()), "d2": None}


async def test_rescheduling_without_a_state_drops_the_state(registry: Registry) -> None:
    await registry.schedule.schedule(ALICE, "d1", NOW, state('W/"1"'))
    await registry.schedule.schedule(ALICE, "d1", NOW)
    (entry,) = await registry.schedule.read_due(bucket_for(NOW), bucket_for(NOW))
    assert entry.state is None


async def test_a_removed_entry_scheduled_again_carries_only_its_new_state(
    registry: Registry,
) -> None:
    bucket = bucket_for(NOW)
    await registry.schedule.schedule(ALICE, "d1", NOW, state('W/"1"'))
    await registry.schedule.remove([ScheduleEntry(bucket, ALICE, "d1")])
    await registry.schedule.put_many([ScheduleEntry(bucket, ALICE, "d1")])
    (entry,) = await registry.schedule.read_due(bucket, bucket)
    assert entry.state is None


@pytest.mark.parametrize("bucket", ["202603011203", "2026030112", "soon"])
async def test_read_due_refuses_text_that_is_not_a_bucket(registry: Registry, bucket: str) -> None:
    with pytest.raises(ValueError):
        await registry.schedule.read_due(bucket, "202603011205")
    with pytest.raises(ValueError):
        await registry.schedule.read_due("202603011205", bucket)


async def test_a_renewal_that_keeps_the_key_leaves_key_and_expiry_as_stored(
    registry: Registry,
) -> None:
    first = device()
    await registry.store.register(first)
    later = NOW + timedelta(minutes=20)
    bare = device(at=later, preview_key=None, key_expires_at=None)
    renewed = await registry.store.register(bare, keep_key=True)
    assert renewed.outcome is RegistrationOutcome.RENEWED
    got = await registry.store.get(ALICE, first.device_id)
    assert got is not None
    assert (got.preview_key, got.key_expires_at, got.renewed_at) == (
        KEY,
        first.key_expires_at,
        later,
    )

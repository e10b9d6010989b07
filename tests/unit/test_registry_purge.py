"""The stale-registration purge on fakes: what it removes, what it keeps, what it reads."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.domain.devices import device_id_for
from shared.storage.registry_purge import DayEntry, day_key, purge_stale_devices
from shared.usecases.registration import RegistrationRules, register_device
from tests.fakes.clock import FakeClock
from tests.fakes.device_days import FakeDeviceDays
from tests.fakes.devices import FakeDeviceStore
from tests.fakes.renewal_schedule import FakeRenewalSchedule

pytestmark = pytest.mark.unit

START = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
STALE = timedelta(days=30)
ALICE, BOB = "8:acs:res_alice", "8:acs:res_bob"
TOPIC = "com.example.chat"
RULES = RegistrationRules(
    allowed_topics=frozenset({TOPIC}),
    key_lifetime=timedelta(minutes=45),
    renewal_lead=timedelta(minutes=10),
)


class CountingStore(FakeDeviceStore):
    """Records which devices the purge looked at."""

    def __init__(self) -> None:
        super().__init__()
        self.looked_at: list[str] = []

    async def remove_if_registered_before(
        self, user_id: str, device_id: str, when: datetime
    ) -> Any:
        self.looked_at.append(device_id)
        return await super().remove_if_registered_before(user_id, device_id, when)


@pytest.fixture
def store() -> CountingStore:
    return CountingStore()


@pytest.fixture
def schedule() -> FakeRenewalSchedule:
    return FakeRenewalSchedule()


@pytest.fixture
def days() -> FakeDeviceDays:
    return FakeDeviceDays()


def token(n: int) -> str:
    return f"{n:02x}" * 32


async def register(
    store: FakeDeviceStore,
    schedule: FakeRenewalSchedule,
    days: FakeDeviceDays,
    n: int,
    when: datetime,
    user: str = ALICE,
    **fields: Any,
) -> str:
    body = {"token": token(n), "kind": "alert", "topic": TOPIC, "environment": "sandbox"}
    body["key"] = base64.b64encode(bytes(64)).decode()
    body.update(fields)
    body = {k: v for k, v in body.items() if v is not None}
    done = await register_device(
        user, body, when, registry=store, schedule=schedule, rules=RULES, days=days
    )
    return done.device_id


async def purge(
    store: FakeDeviceStore,
    schedule: FakeRenewalSchedule,
    days: FakeDeviceDays,
    clock: Any,
    **kwargs: Any,
) -> Any:
    return await purge_stale_devices(
        days,
        store,
        schedule,
        clock=clock,
        stale_after=STALE,
        renewal_lead=RULES.renewal_lead,
        **kwargs,
    )


async def test_a_device_not_renewed_for_the_stale_days_is_removed_with_its_schedule(
    store: CountingStore, schedule: FakeRenewalSchedule, days: FakeDeviceDays
) -> None:
    await register(store, schedule, days, 1, START)
    report = await purge(store, schedule, days, FakeClock(START + timedelta(days=31)))
    assert (store.rows, store.owners, schedule.entries()) == ({}, {}, [])
    assert (report.removed, report.finished) == (1, True)


async def test_a_device_renewed_since_the_cutoff_is_kept(
    store: CountingStore, schedule: FakeRenewalSchedule, days: FakeDeviceDays
) -> None:
    device = await register(store, schedule, days, 1, START)
    await register(store, schedule, days, 1, START + timedelta(days=20))
    await purge(store, schedule, days, FakeClock(START + timedelta(days=31)))
    assert list(store.rows) == [(ALICE, device)]
    assert days.rows == {DayEntry(day_key(START + timedelta(days=20)), ALICE, device)}


async def test_a_voip_device_without_a_key_is_purged_too(
    store: CountingStore, schedule: FakeRenewalSchedule, days: FakeDeviceDays
) -> None:
    await register(store, schedule, days, 1, START, kind="voip", key=None)
    report = await purge(store, schedule, days, FakeClock(START + timedelta(days=31)))
    assert (report.removed, store.rows) == (1, {})


async def test_a_device_within_the_stale_days_is_not_even_looked_at(
    store: CountingStore, schedule: FakeRenewalSchedule, days: FakeDeviceDays
) -> None:
    old = await register(store, schedule, days, 1, START)
    for n in range(2, 12):
        await register(store, schedule, days, n, START + timedelta(days=10), user=BOB)
    await purge(store, schedule, days, FakeClock(START + timedelta(days=31)))
    assert store.looked_at == [old]
    assert len(store.rows) == 10


async def test_the_cutoff_day_itself_is_left_for_the_next_purge(
    store: CountingStore, schedule: FakeRenewalSchedule, days: FakeDeviceDays
) -> None:
    await register(store, schedule, days, 1, START)
    await purge(store, schedule, days, FakeClock(START + timedelta(days=30, hours=1)))
    assert len(store.rows) == 1
    await purge(store, schedule, days, FakeClock(START + timedelta(days=31)))
    assert store.rows == {}


async def test_a_moved_token_is_purged_from_nobody_but_its_stale_owner(
    store: CountingStore, schedule: FakeRenewalSchedule, days: FakeDeviceDays
) -> None:
    await register(store, schedule, days, 1, START)
    await register(store, schedule, days, 1, START + timedelta(days=25), user=BOB)
    await purge(store, schedule, days, FakeClock(START + timedelta(days=31)))
    assert list(store.rows) == [(BOB, device_id_for(token(1)))]


async def test_a_purge_over_its_budget_stops_between_pages_and_the_next_one_goes_on(
    store: CountingStore, schedule: FakeRenewalSchedule, days: FakeDeviceDays
) -> None:
    for n in range(1, 8):
        await register(store, schedule, days, n, START)

    class TickingClock(FakeClock):
        def __call__(self) -> datetime:
            self.advance(60)  # every look at the clock takes a minute
            return self.now

    first = await purge(
        store,
        schedule,
        days,
        TickingClock(START + timedelta(days=31)),
        page=3,
        budget=timedelta(minutes=1),
    )
    assert (first.entries, first.removed, first.finished, len(store.rows)) == (3, 3, False, 4)
    second = await purge(store, schedule, days, FakeClock(START + timedelta(days=31)), page=3)
    assert (second.removed, second.finished, store.rows, days.rows) == (4, True, {}, set())

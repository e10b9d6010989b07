"""Renewal rules on an injected clock: the budget, the schedule, the sweep and the worker.

Devices are registered through the real registration use case (which writes the schedule), on the
in-memory registry, schedule and sweep log of ``tests/fakes``; APNs is ``FakeApns``. Tests
assert what was pushed and what the stores hold.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

import pytest

from shared.apns.errors import ApnsUnavailable
from shared.apns.notification import Environment, Notification, Priority, PushType
from shared.apns.response import PushResult, Reason
from shared.domain.devices import Device, DeviceKind, device_id_for
from shared.push.budget import background_budget_allows, next_background_at
from shared.storage.renewal_schedule import LANES, EntryState, ScheduleEntry, bucket_for
from shared.storage.renewal_sweeps import Checkpoint, ShardReport
from shared.usecases.registration import RegistrationRules, register_device
from shared.usecases.renewal import (
    Decision,
    MalformedShardError,
    RenewalRules,
    Shard,
    ShardItem,
    SweepResult,
    parse_shard,
    renew_shard,
    run_sweep,
)
from shared.usecases.renewal.rules import decide
from shared.usecases.renewal.shards import MAX_MESSAGE_BYTES, group_entries, split_shards
from shared.usecases.renewal.sweep import sweep_range
from tests.fakes.apns import FakeApns
from tests.fakes.clock import T0, FakeClock
from tests.fakes.devices import FakeDeviceStore
from tests.fakes.renewal_schedule import FakeRenewalSchedule
from tests.fakes.renewal_sweeps import FakeSweepLog

pytestmark = pytest.mark.unit

APP = "com.example.chat"
USER = "8:acs:resource_00000000-0000-0000-0000-000000000001"
KEY = base64.b64encode(bytes(range(64))).decode()
RULES = RenewalRules(
    lead=timedelta(minutes=10),
    max_per_hour=2,
    min_spacing=timedelta(minutes=20),
    stale_after=3,
    shard_size=2,
    catch_up=timedelta(hours=6),
    send_budget=1.0,
    bad_token_remove_after=3,
    config_error_threshold=5,
)
REGISTRATION = RegistrationRules(frozenset({APP}), timedelta(minutes=45), RULES.lead)


def token(n: int) -> str:
    return f"{n:02x}" * 32


@dataclass
class TimedApns(FakeApns):
    """FakeApns that also notes when (by the test clock) each push was sent."""

    clock: FakeClock = field(default_factory=FakeClock)
    times: list[tuple[str, datetime]] = field(default_factory=list)

    async def send(
        self, n: Notification, *, environment: Environment, budget: float | None = None
    ) -> PushResult:
        self.times.append((n.device_token, self.clock()))
        return await super().send(n, environment=environment, budget=budget)


class Renewal:
    """Registry, schedule, sweep log and APNs in memory, driven by one clock."""

    def __init__(self, rules: RenewalRules = RULES) -> None:
        self.rules = rules
        self.clock = FakeClock(T0)
        self.devices = FakeDeviceStore()
        self.schedule = FakeRenewalSchedule()
        self.sweeps = FakeSweepLog()
        self.apns = TimedApns(topic=APP, clock=self.clock)

    async def register(self, n: int, *, user: str = USER) -> str:
        body = {"token": token(n), "kind": "alert", "topic": APP, "environment": "sandbox"}
        done = await register_device(
            user,
            {**body, "key": KEY},
            self.clock(),
            registry=self.devices,
            schedule=self.schedule,
            rules=REGISTRATION,
        )
        return done.device_id

    def at(self, minutes: float) -> None:
        self.clock.now = T0 + timedelta(minutes=minutes)

    async def sweep(self) -> SweepResult:
        return await run_sweep(
            schedule=self.schedule, sweeps=self.sweeps, now=self.clock(), rules=self.rules
        )

    async def work(self, message: str) -> ShardReport:
        return await renew_shard(
            parse_shard(message),
            devices=self.devices,
            schedule=self.schedule,
            sweeps=self.sweeps,
            pushers={APP: self.apns},
            rules=self.rules,
            clock=self.clock,
        )

    async def tick(self) -> SweepResult:
        swept = await self.sweep()
        for message in swept.messages:
            await self.work(message)
        return swept

    def device(self, device_id: str, user: str = USER) -> Device | None:
        return self.devices.rows.get((user, device_id))

    def pending(self) -> list[ScheduleEntry]:
        """Entries not swept yet (consumed ones stay until their bucket is purged)."""
        now = bucket_for(self.clock())
        return [e for e in self.schedule.entries() if e.bucket > now]

    def pushes(self, n: int) -> list[datetime]:
        return [at for t, at in self.apns.times if t == token(n)]


@pytest.fixture
def renewal() -> Renewal:
    return Renewal()


def sent(minutes: Sequence[float]) -> tuple[datetime, ...]:
    return tuple(T0 + timedelta(minutes=m) for m in minutes)


# --- budget ---------------------------------------------------------------------------------------


def test_next_background_push_waits_for_the_minimum_spacing() -> None:
    at = next_background_at(
        sent([0]), T0 + timedelta(minutes=5), max_per_hour=2, min_spacing=timedelta(minutes=20)
    )
    assert at == T0 + timedelta(minutes=20)


def test_next_background_push_waits_for_the_hourly_limit() -> None:
    at = next_background_at(
        sent([0, 25]), T0 + timedelta(minutes=50), max_per_hour=2, min_spacing=timedelta(minutes=20)
    )
    assert at == T0 + timedelta(minutes=60)


@pytest.mark.parametrize(
    ("history", "now", "per_hour", "spacing"),
    [
        ([], 0, 2, 20),
        ([0], 30, 2, 20),
        ([0, 21], 30, 2, 20),
        ([-50, -10, 0], 5, 3, 5),
        ([-120, -61], 0, 1, 30),
        ([0, 10, 20, 30], 31, 4, 10),
    ],
)
def test_next_background_push_is_the_first_moment_the_budget_allows(
    history: list[float], now: float, per_hour: int, spacing: float
) -> None:
    times, moment = sent(history), T0 + timedelta(minutes=now)
    rules = {"max_per_hour": per_hour, "min_spacing": timedelta(minutes=spacing)}
    at = next_background_at(times, moment, **rules)  # type: ignore[arg-type]
    assert at >= moment
    assert background_budget_allows(times, at, **rules)  # type: ignore[arg-type]
    if at > moment:
        assert not background_budget_allows(times, at - timedelta(seconds=1), **rules)  # type: ignore[arg-type]


def _device(**fields: object) -> Device:
    t = token(1)
    base = Device(
        user_id=USER,
        device_id=device_id_for(t),
        token=t,
        kind=DeviceKind.ALERT,
        topic=APP,
        environment=Environment.SANDBOX,
        registered_at=T0,
        renewed_at=T0,
        preview_key=bytes(64),
        key_expires_at=T0 + timedelta(minutes=45),
    )
    return replace(base, **fields)  # type: ignore[arg-type]


def test_a_device_whose_key_falls_due_later_renewed_by_itself() -> None:
    due = bucket_for(T0 + timedelta(minutes=35))
    later = _device(key_expires_at=T0 + timedelta(minutes=50))
    assert decide(later, due, T0 + timedelta(minutes=35), RULES) is Decision.RENEWED


def test_a_device_over_its_background_budget_is_woken_later() -> None:
    now = T0 + timedelta(minutes=35)
    recent = _device(background_sent=(now - timedelta(minutes=5),))
    assert decide(recent, bucket_for(now), now, RULES) is Decision.LATER


def test_a_device_with_too_many_unanswered_wakes_is_marked_stale() -> None:
    now = T0 + timedelta(minutes=35)
    quiet = _device(unanswered_wakes=RULES.stale_after)
    assert decide(quiet, bucket_for(now), now, RULES) is Decision.MARK_STALE


@pytest.mark.parametrize(
    ("device", "decision"),
    [
        (None, Decision.GONE),
        (_device(stale=True), Decision.STALE),
        (
            _device(kind=DeviceKind.VOIP, preview_key=None, key_expires_at=None),
            Decision.UNSCHEDULED,
        ),
        (_device(), Decision.WAKE),
    ],
)
def test_decisions_for_devices_that_are_not_simply_due(
    device: Device | None, decision: Decision
) -> None:
    now = T0 + timedelta(minutes=35)
    assert decide(device, bucket_for(now), now, RULES) is decision


# --- the schedule and the sweep -------------------------------------------------------------------


def test_the_first_sweep_looks_back_over_the_catch_up_window() -> None:
    now = T0 + timedelta(minutes=2)
    assert sweep_range(Checkpoint(), now, RULES) == (
        bucket_for(now - RULES.catch_up),
        bucket_for(now),
    )


def test_a_sweep_reads_from_the_bucket_after_the_checkpoint_through_now() -> None:
    done = bucket_for(T0)
    assert sweep_range(Checkpoint(done=done), T0 + timedelta(minutes=61), RULES) == (
        bucket_for(T0 + timedelta(minutes=5)),
        bucket_for(T0 + timedelta(minutes=60)),
    )


def test_catch_up_never_reaches_further_back_than_the_setting() -> None:
    now = T0 + timedelta(hours=30)
    start, _ = sweep_range(Checkpoint(done=bucket_for(T0)), now, RULES)
    assert start == bucket_for(now - RULES.catch_up)


def test_a_device_due_in_several_buckets_is_one_item_from_its_latest_entry() -> None:
    state = EntryState("ab" * 32, APP, "sandbox", 'W/"2"', T0)
    entries = [
        ScheduleEntry("202603011200", "u", "a"),
        ScheduleEntry("202603011205", "u", "b"),
        ScheduleEntry("202603011210", "u", "a", state),
    ]
    items = group_entries(entries)
    assert [(i.device_id, i.buckets, i.due_bucket, i.state) for i in items] == [
        ("a", ("202603011200", "202603011210"), "202603011210", state),
        ("b", ("202603011205",), "202603011205", None),
    ]


def test_shards_hold_at_most_the_shard_size_and_fit_a_queue_message() -> None:
    long_user = "8:acs:" + "x" * 400
    state = EntryState("ab" * 100, APP, "production", 'W/"datetime\'2026-03-01T12%3A00Z\'"', T0,
                       sent=(T0, T0), wakes=3, wake_at=T0, wake_sweep="202603011155")  # fmt: skip
    items = [ShardItem(long_user, f"{n:064x}", ("202603011200",), state) for n in range(450)]
    shards = split_shards("202603011200", items, 200)
    assert all(len(s.items) <= 200 for s in shards)
    assert all(len(s.to_json().encode()) <= MAX_MESSAGE_BYTES for s in shards)
    assert [i for s in shards for i in s.items] == items
    assert [s.index for s in shards] == list(range(len(shards)))


def test_a_bucket_is_spread_over_partitions() -> None:
    entries = [ScheduleEntry("202603011200", "u", f"{n:064x}") for n in range(1000)]
    assert len({e.partition for e in entries}) == LANES
    assert all(e.partition.startswith("202603011200-") for e in entries)


def test_a_shard_survives_its_message() -> None:
    state = EntryState(
        "ab" * 32, APP, "sandbox", 'W/"1"', T0, (T0,), 2, T0, "202603011150",
        bad_tokens=2, last_result="BadDeviceToken", last_result_at=T0,
    )  # fmt: skip
    item = ShardItem("8:acs:u/#?", "d" * 64, ("202603011155",), state)
    shard = Shard("202603011200", 3, (item, ShardItem("u", "e" * 64, ("202603011155",))))
    assert parse_shard(shard.to_json().encode()) == shard
    purge = Shard("202603011200", 4, purge="202603010555")
    assert parse_shard(purge.to_json()) == purge


def test_a_shard_queued_before_entries_carried_results_is_still_read() -> None:
    state = EntryState("ab" * 32, APP, "sandbox", 'W/"1"', T0, (T0,), 2, T0, "202603011150")
    item = ShardItem("u", "d" * 64, ("202603011155",), state)
    message = json.loads(Shard("202603011200", 3, (item,)).to_json())
    message["devices"][0][3] = message["devices"][0][3][:9]

    assert parse_shard(json.dumps(message)).items == (item,)


@pytest.mark.parametrize(
    "body", [b"", b"{}", b'{"v": 2, "sweep": "x", "shard": 0, "devices": []}', b"[1]",
             b'{"v": 1, "sweep": "s", "shard": 0, "devices": [["u", "d", ["nope"], null]]}',
             b'{"v": 1, "sweep": "s", "shard": 0, "devices": [["u", "d", ["202603011200"], [1]]]}',
             b'{"v": 1, "sweep": "s", "shard": 0, "purge": "nope"}'],
)  # fmt: skip
def test_a_message_that_is_not_a_shard_is_refused(body: bytes) -> None:
    with pytest.raises(MalformedShardError):
        parse_shard(body)


async def test_a_timer_firing_twice_in_a_bucket_sweeps_once(renewal: Renewal) -> None:
    await renewal.register(1)
    renewal.at(35)
    first, second = await renewal.sweep(), await renewal.sweep()
    assert (first.devices, len(first.messages)) == (1, 1)
    assert (second.sweep_id, second.messages, second.note) == (None, (), "already swept")


async def test_concurrent_timer_fires_sweep_once(renewal: Renewal) -> None:
    await renewal.register(1)
    renewal.at(35)
    results = await asyncio.gather(renewal.sweep(), renewal.sweep())
    assert sorted(len(r.messages) for r in results) == [0, 1]


async def test_a_sweep_that_died_holding_its_lease_is_redone_after_the_lease(
    renewal: Renewal,
) -> None:
    await renewal.register(1)
    renewal.at(35)
    seen = await renewal.sweeps.checkpoint()
    await renewal.sweeps.claim(
        seen, bucket_for(renewal.clock()), renewal.clock() + RULES.sweep_lease
    )
    assert (await renewal.sweep()).note == "in progress"
    renewal.at(35 + RULES.sweep_lease.total_seconds() / 60 + 1)
    assert (await renewal.sweep()).devices == 1


# --- the worker -----------------------------------------------------------------------------------


async def test_a_due_device_gets_one_silent_background_push(renewal: Renewal) -> None:
    await renewal.register(7)
    renewal.at(35)
    await renewal.tick()
    [push] = renewal.apns.to(token(7))
    n = push.notification
    assert (n.push_type, n.priority, n.topic, push.environment) == (
        PushType.BACKGROUND,
        Priority.CONSIDERATE,
        APP,
        Environment.SANDBOX,
    )
    assert json.loads(n.payload) == {"aps": {"content-available": 1}}
    assert n.expiration == int((renewal.clock() + RULES.lead).timestamp())


async def test_a_woken_device_is_scheduled_again_when_its_budget_allows(renewal: Renewal) -> None:
    device_id = await renewal.register(7)
    renewal.at(35)
    await renewal.tick()
    assert renewal.pending() == [
        ScheduleEntry(bucket_for(T0 + timedelta(minutes=55)), USER, device_id)
    ]
    stored = renewal.device(device_id)
    assert stored is not None
    assert (stored.background_sent, stored.unanswered_wakes) == ((renewal.clock(),), 1)


async def test_a_device_that_renewed_by_itself_is_not_woken(renewal: Renewal) -> None:
    device_id = await renewal.register(7)
    renewal.at(30)
    await renewal.register(7)
    renewal.at(35)
    await renewal.tick()
    assert renewal.apns.sent == []
    assert renewal.pending() == [
        ScheduleEntry(bucket_for(T0 + timedelta(minutes=65)), USER, device_id)
    ]


async def test_a_redelivered_shard_pushes_nobody_twice(renewal: Renewal) -> None:
    await renewal.register(1)
    await renewal.register(2)
    renewal.at(35)
    [message] = (await renewal.sweep()).messages
    first = await renewal.work(message)
    renewal.at(36)
    again = await renewal.work(message)
    assert len(renewal.apns.sent) == 2
    assert first.count("woken") == again.count("woken") == 2


async def test_concurrent_deliveries_of_one_shard_push_each_device_once(renewal: Renewal) -> None:
    for n in (1, 2):
        await renewal.register(n)
    renewal.at(35)
    [message] = (await renewal.sweep()).messages
    await asyncio.gather(renewal.work(message), renewal.work(message), renewal.work(message))
    assert sorted(s.notification.device_token for s in renewal.apns.sent) == [token(1), token(2)]


async def test_a_withdraw_push_draws_on_the_same_budget(renewal: Renewal) -> None:
    device_id = await renewal.register(7)
    renewal.at(30)
    await renewal.devices.record_background_push(USER, device_id, renewal.clock(), renewal=False)
    renewal.at(35)
    await renewal.tick()
    assert renewal.apns.sent == []
    assert renewal.pending() == [
        ScheduleEntry(bucket_for(T0 + timedelta(minutes=50)), USER, device_id)
    ]


async def test_an_unanswered_device_is_woken_within_budget_then_marked_stale(
    renewal: Renewal,
) -> None:
    device_id = await renewal.register(7)
    for minutes in range(35, 6 * 60, 5):
        renewal.at(minutes)
        await renewal.tick()
    times = renewal.pushes(7)
    assert len(times) == RULES.stale_after
    assert all(sum(1 for u in times if t <= u < t + timedelta(hours=1)) <= 2 for t in times)
    stored = renewal.device(device_id)
    assert stored is not None and stored.stale
    assert renewal.pending() == []


async def test_a_device_that_renews_after_a_wake_is_credited_to_that_sweep(
    renewal: Renewal,
) -> None:
    await renewal.register(1)
    await renewal.register(2)
    renewal.at(35)
    woke = await renewal.tick()
    renewal.at(38)
    await renewal.register(1)  # the app ran and handed over a fresh key
    for minutes in range(40, 80, 5):
        renewal.at(minutes)
        await renewal.tick()
    assert woke.sweep_id is not None
    assert renewal.sweeps.woken(woke.sweep_id) == 2
    assert renewal.sweeps.credits[woke.sweep_id] == {device_id_for(token(1))}


async def test_an_unregistered_device_is_removed(renewal: Renewal) -> None:
    device_id = await renewal.register(7)
    renewal.apns.answer(
        token(7), 410, Reason.UNREGISTERED, unregistered_at=T0 + timedelta(minutes=1)
    )
    renewal.at(35)
    await renewal.tick()
    assert renewal.device(device_id) is None


async def test_a_wake_without_an_answer_gives_its_budget_back_and_is_retried_next_bucket(
    renewal: Renewal,
) -> None:
    device_id = await renewal.register(7)
    renewal.apns.fail(token(7), ApnsUnavailable("no answer"))
    renewal.at(35)
    await renewal.tick()
    stored = renewal.device(device_id)
    assert stored is not None
    assert (stored.background_sent, stored.unanswered_wakes) == ((), 0)
    assert renewal.pending() == [
        ScheduleEntry(bucket_for(T0 + timedelta(minutes=40)), USER, device_id)
    ]
    renewal.apns.script.clear()
    renewal.at(40)
    await renewal.tick()
    assert len(renewal.apns.to(token(7))) == 2


async def test_an_app_down_for_an_hour_catches_up_without_bursting_past_the_budget(
    renewal: Renewal,
) -> None:
    for n in range(1, 13):
        renewal.at(n * 5 - 5)
        await renewal.register(n)  # due at 35, 40, ..., 90 minutes
        if n == 8:
            await renewal.tick()  # at 35: wakes device 1; then no sweep runs for an hour
    renewal.at(60)
    await renewal.register(3)  # renewed by itself meanwhile: due at 95, entries in two buckets
    renewal.at(90)
    await renewal.devices.record_background_push(
        USER, device_id_for(token(5)), renewal.clock(), renewal=False
    )
    renewal.at(95)
    caught_up = await renewal.tick()
    assert caught_up.devices == 12
    assert [len(renewal.pushes(n)) for n in range(1, 13)] == [2, 1, 1, 1, 0] + [1] * 7
    assert renewal.pushes(1)[1] - renewal.pushes(1)[0] >= RULES.min_spacing


async def test_a_due_device_is_woken_without_reading_it(renewal: Renewal) -> None:
    reads: list[str] = []
    get = renewal.devices.get

    async def counted(user_id: str, device_id: str) -> Device | None:
        reads.append(device_id)
        return await get(user_id, device_id)

    renewal.devices.get = counted  # type: ignore[method-assign]
    await renewal.register(7)
    renewal.at(35)
    await renewal.tick()
    assert (len(renewal.pushes(7)), reads) == (1, [])


async def test_a_device_removed_since_its_entry_was_written_is_not_woken(
    renewal: Renewal,
) -> None:
    device_id = await renewal.register(7)
    await renewal.devices.remove(USER, device_id)
    renewal.at(35)
    await renewal.tick()
    assert (renewal.pushes(7), renewal.pending()) == ([], [])


async def test_buckets_that_leave_the_catch_up_window_are_purged(renewal: Renewal) -> None:
    await renewal.register(7)
    renewal.at(35)
    await renewal.tick()
    consumed = bucket_for(renewal.clock())
    for minutes in range(40, 35 + 6 * 60 + 10, 5):
        renewal.at(minutes)
        await renewal.tick()
    floor = bucket_for(renewal.clock() - RULES.catch_up)
    left = {e.bucket for e in renewal.schedule.entries()}
    assert consumed not in left
    assert left and all(b >= floor for b in left)


def test_a_re_registration_that_kept_the_old_key_is_still_woken() -> None:
    """Registering without a key keeps the key and its due time: the wake must still go."""
    now = T0 + timedelta(minutes=35)
    kept = _device(renewed_at=T0 + timedelta(minutes=20))
    assert decide(kept, bucket_for(now), now, RULES, entry_at=T0) is Decision.WAKE


async def test_a_wake_answered_200_clears_the_bad_token_count_as_a_chat_push_does(
    renewal: Renewal,
) -> None:
    device_id = await renewal.register(7)
    for minutes in (1, 20):
        await renewal.devices.record_result(
            USER, device_id, "BadDeviceToken", bad_token=True, at=T0 + timedelta(minutes=minutes)
        )
    renewal.at(35)

    await renewal.tick()

    stored = renewal.device(device_id)
    assert stored is not None and len(renewal.apns.to(token(7))) == 1
    assert (stored.bad_token_count, stored.last_result) == (0, "200")

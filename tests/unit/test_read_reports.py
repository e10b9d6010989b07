"""Read reports, unread counts and preferences on fakes: what the caller and their devices see."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest

from shared.apns.notification import Priority, PushType
from shared.domain.devices import DeviceKind
from shared.edges.http_api import status_of
from shared.errors import InvalidInputError
from shared.settings import Settings
from shared.storage.inbox import Inbox, change_inbox
from shared.usecases.preferences import get_preferences, put_preferences, put_thread_preferences
from shared.usecases.read_reports import (
    BadgeUpdates,
    parse_thread_id,
    report_read,
    unread_counts,
)
from tests.fakes.apns import FakeApns
from tests.fakes.clock import T0, FakeClock
from tests.fakes.devices import FakeDeviceStore
from tests.fakes.inbox import FakeInbox
from tests.unit.chat_fakes import device, settings

pytestmark = pytest.mark.unit

USER = "8:acs:res_alice"
T1, T2 = "19:aaaa@thread.v2", "19:bbbb@thread.v2"
M = 1_772_366_400_000


@dataclass
class World:
    """Alice's phone (1), tablet (2) and PushKit token (3), with unread messages in two threads."""

    registry: FakeDeviceStore = field(
        default_factory=lambda: FakeDeviceStore(
            device(USER, 1), device(USER, 2), device(USER, 3, kind=DeviceKind.VOIP)
        )
    )
    inbox: FakeInbox = field(default_factory=FakeInbox)
    apns: FakeApns = field(default_factory=FakeApns)
    clock: FakeClock = field(default_factory=FakeClock)
    settings: Settings = field(default_factory=settings)

    @property
    def updates(self) -> BadgeUpdates:
        return BadgeUpdates(self.registry, {self.apns.topic: self.apns}, self.settings)

    async def receive(self, thread: str, *orders: int) -> None:
        def change(box: Inbox) -> Inbox:
            for order in orders:
                box = box.received(thread, order, self.clock())
            return box

        await change_inbox(self.inbox, USER, change, self.clock())

    async def read(self, thread: str, body: dict[str, Any]) -> dict[str, Any]:
        return await report_read(
            USER, thread, body, self.clock(), inbox=self.inbox, updates=self.updates
        )

    async def thread_prefs(self, thread: str, body: dict[str, Any]) -> dict[str, Any]:
        return await put_thread_preferences(
            USER, thread, body, self.clock(), inbox=self.inbox, updates=self.updates
        )

    async def prefs(self, body: dict[str, Any]) -> dict[str, Any]:
        return await put_preferences(
            USER, body, self.clock(), inbox=self.inbox, updates=self.updates
        )

    def device_id(self, n: int) -> str:
        return device(USER, n).device_id

    def badges_to(self, n: int) -> list[Any]:
        return [s.payload["aps"]["badge"] for s in self.apns.to(device(USER, n).token)]


@pytest.fixture
async def world() -> World:
    w = World()
    await w.receive(T1, M, M + 1, M + 2)
    await w.receive(T2, M + 5)
    return w


# --- GET /api/unread ------------------------------------------------------------------------------


async def test_unread_counts_give_the_badge_and_each_thread(world: World) -> None:
    view = await unread_counts(USER, T0, inbox=world.inbox)
    assert view == {
        "badge": 4,
        "unread": 4,
        "threads": [
            {"threadId": T1, "unread": 3, "counted": True, "muted": False},
            {"threadId": T2, "unread": 1, "counted": True, "muted": False},
        ],
    }


async def test_a_user_with_nothing_stored_has_nothing_unread() -> None:
    view = await unread_counts("8:acs:res_nobody", T0, inbox=FakeInbox())
    assert view == {"badge": 0, "unread": 0, "threads": []}


# --- PUT /api/threads/{threadId}/read -------------------------------------------------------------


async def test_a_read_report_reads_up_to_its_message(world: World) -> None:
    answer = await world.read(T1, {"messageId": str(M + 1)})
    assert answer == {"threadId": T1, "unread": 1, "badge": 2}


async def test_a_read_report_updates_the_other_devices_badges(world: World) -> None:
    await world.read(T1, {"messageId": str(M + 2), "deviceId": world.device_id(1)})
    assert (world.badges_to(1), world.badges_to(2), world.badges_to(3)) == ([], [1], [])


async def test_a_badge_update_after_a_read_is_a_quiet_alert_push(world: World) -> None:
    await world.read(T1, {"messageId": str(M + 2)})
    n = world.apns.sent[0].notification
    assert (n.push_type, n.priority, n.expiration) == (PushType.ALERT, Priority.CONSIDERATE, 0)


async def test_an_older_read_report_changes_nothing_and_pushes_nothing(world: World) -> None:
    await world.read(T1, {"messageId": str(M + 2)})
    sent = len(world.apns.sent)
    answer = await world.read(T1, {"messageId": str(M)})
    assert (answer["unread"], answer["badge"], len(world.apns.sent)) == (0, 1, sent)


async def test_reads_from_two_devices_at_once_agree_on_the_count(world: World) -> None:
    answers = await asyncio.gather(
        world.read(T1, {"messageId": str(M + 2), "deviceId": world.device_id(1)}),
        world.read(T1, {"messageId": str(M), "deviceId": world.device_id(2)}),
    )
    box = world.inbox.of(USER)
    assert (box.thread(T1).unread_count, box.badge(T0), min(a["badge"] for a in answers)) == (
        0,
        1,
        1,
    )


async def test_reads_of_two_threads_from_two_devices_at_once_clear_both(world: World) -> None:
    await asyncio.gather(
        world.read(T1, {"messageId": str(M + 2), "deviceId": world.device_id(1)}),
        world.read(T2, {"messageId": str(M + 5), "deviceId": world.device_id(2)}),
    )
    assert world.inbox.of(USER).badge(T0) == 0


async def test_reading_a_thread_with_nothing_counted_is_harmless(world: World) -> None:
    answer = await world.read("19:cccc@thread.v2", {"messageId": str(M)})
    assert (answer["unread"], answer["badge"], world.apns.sent) == (0, 4, [])


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "messageId"),
        ({"messageId": 1613694358927}, "messageId"),
        ({"messageId": "abc"}, "messageId"),
        ({"messageId": "0"}, "messageId"),
        ({"messageId": str(M), "deviceId": "ABC"}, "deviceId"),
    ],
)
async def test_a_bad_read_report_is_refused(world: World, body: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInputError) as error:
        await world.read(T1, body)
    assert (status_of(error.value), error.value.field, world.inbox.writes) == (400, field, 2)


@pytest.mark.parametrize("value", [None, "", "19:has space", "x" * 201, "19:\u00e9@thread.v2"])
def test_a_thread_id_that_acs_would_not_give_is_refused(value: str | None) -> None:
    with pytest.raises(InvalidInputError) as error:
        parse_thread_id(value)
    assert (status_of(error.value), error.value.field) == (400, "threadId")


# --- preferences ----------------------------------------------------------------------------------


async def test_a_thread_muted_until_a_time_reads_back(world: World) -> None:
    await world.thread_prefs(T1, {"mutedUntil": "2026-03-01T15:00:00+02:00"})
    view = await get_preferences(USER, T0, inbox=world.inbox)
    assert view["threads"] == [
        {"threadId": T1, "alerts": "all", "mutedUntil": "2026-03-01T13:00:00Z", "muted": True}
    ]


async def test_a_thread_muted_for_good_reads_back(world: World) -> None:
    answer = await world.thread_prefs(T1, {"mutedUntil": "forever"})
    assert answer == {"threadId": T1, "alerts": "all", "mutedUntil": "forever", "muted": True}


async def test_a_thread_with_alerts_off_reads_back(world: World) -> None:
    answer = await world.thread_prefs(T1, {"alerts": "none"})
    assert answer == {"threadId": T1, "alerts": "none", "muted": True}


async def test_a_mute_expires_by_itself(world: World) -> None:
    await world.thread_prefs(T1, {"mutedUntil": "2026-03-01T13:00:00Z"})
    later = await get_preferences(USER, T0 + timedelta(hours=1), inbox=world.inbox)
    assert later["threads"] == []


async def test_unmuting_keeps_the_alert_setting(world: World) -> None:
    await world.thread_prefs(T1, {"alerts": "none", "mutedUntil": "forever"})
    answer = await world.thread_prefs(T1, {"mutedUntil": None})
    assert answer == {"threadId": T1, "alerts": "none", "muted": True}


async def test_a_mute_in_the_past_mutes_nothing(world: World) -> None:
    answer = await world.thread_prefs(T1, {"mutedUntil": "2020-01-01T00:00:00Z"})
    assert answer["muted"] is False


async def test_muting_a_thread_with_unread_messages_lowers_the_other_badges(
    world: World,
) -> None:
    await world.thread_prefs(T1, {"mutedUntil": "forever", "deviceId": world.device_id(2)})
    assert (world.badges_to(1), world.badges_to(2)) == ([1], [])


async def test_counting_muted_threads_again_pushes_nothing(world: World) -> None:
    await world.thread_prefs(T1, {"mutedUntil": "forever"})
    sent = len(world.apns.sent)
    view = await world.prefs({"countMutedThreads": True})
    assert (view["countMutedThreads"], len(world.apns.sent)) == (True, sent)


async def test_quiet_hours_read_back_and_turn_off(world: World) -> None:
    hours = {"start": "22:00", "end": "07:00", "timeZone": "Asia/Tokyo", "calls": "silent"}
    on = await world.prefs({"quietHours": hours})
    off = await world.prefs({"quietHours": None})
    assert (on["quietHours"], off["quietHours"]) == (hours, None)


async def test_changing_one_preference_keeps_the_other(world: World) -> None:
    hours = {"start": "22:00", "end": "07:00", "timeZone": "UTC", "calls": "ring"}
    await world.prefs({"quietHours": hours})
    view = await world.prefs({"countMutedThreads": True})
    assert view["quietHours"] == hours


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, None),
        ({"countMutedThreads": "yes"}, "countMutedThreads"),
        (
            {"quietHours": {"start": "22:00", "end": "07:00", "timeZone": "Nowhere"}},
            "quietHours.timeZone",
        ),
    ],
)
async def test_bad_preferences_are_refused_and_nothing_changes(
    world: World, body: dict[str, Any], field: str | None
) -> None:
    with pytest.raises(InvalidInputError) as error:
        await world.prefs(body)
    assert (status_of(error.value), error.value.field, world.inbox.writes) == (400, field, 2)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, None),
        ({"alerts": "some"}, "alerts"),
        ({"alerts": ["none"]}, "alerts"),
        ({"mutedUntil": "tomorrow"}, "mutedUntil"),
        ({"mutedUntil": "2026-03-02T00:00:00"}, "mutedUntil"),
        ({"mutedUntil": 1772409600}, "mutedUntil"),
        ({"mutedUntil": "9999-12-31T23:59:59-14:00"}, "mutedUntil"),
    ],
)
async def test_bad_thread_preferences_are_refused_and_nothing_changes(
    world: World, body: dict[str, Any], field: str | None
) -> None:
    with pytest.raises(InvalidInputError) as error:
        await world.thread_prefs(T1, body)
    assert (status_of(error.value), error.value.field, world.inbox.writes) == (400, field, 2)

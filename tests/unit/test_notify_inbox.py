"""The chat push and the recipient's inbox: the badge on every alert, muted threads, quiet hours."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

from shared.apns.errors import ApnsUnavailable
from shared.apns.notification import Priority, PushType
from shared.domain.quiet_hours import QuietHours, parse_quiet_hours
from shared.push.pipeline import PushSummary
from shared.storage.deliveries import DeliveryKind, DeliveryState
from shared.storage.inbox import (
    FOREVER,
    Alerts,
    Inbox,
    InboxSnapshot,
    Preferences,
    change_inbox,
)
from shared.storage.tables import StorageUnavailableError
from tests.fakes.clock import T0
from tests.fakes.devices import FakeDeviceStore
from tests.fakes.inbox import FakeInbox
from tests.unit.chat_fakes import device, sample
from tests.unit.test_notify import MESSAGE, RECEIVED, THREAD, USER, World, event

pytestmark = pytest.mark.unit

RECEIVED_NAME = "chat_message_received.eventgrid.json"
DELETED = sample("chat_message_deleted.eventgrid.json")
EDITED = sample("chat_message_edited.eventgrid.json")
LEFT = sample("chat_participant_removed_from_thread_with_user.eventgrid.json")
OTHER_THREAD = "19:another@thread.v2"


@pytest.fixture
def world() -> World:
    return World()


def message(n: int, thread: str = THREAD) -> dict[str, Any]:
    """A ChatMessageReceived for the recipient: the sample's message id plus ``n``."""
    return event(RECEIVED_NAME, messageId=str(int(MESSAGE) + n), threadId=thread)


def badges(world: World) -> list[Any]:
    return [s.payload["aps"].get("badge") for s in world.apns.sent]


def badge_only(world: World) -> list[Any]:
    """The badge-only pushes sent: ``{"aps": {"badge": n}}`` and nothing else."""
    return [
        s
        for s in world.apns.sent
        if set(s.payload) == {"aps"} and set(s.payload["aps"]) == {"badge"}
    ]


async def prefer(world: World, change: Any) -> None:
    await change_inbox(world.inbox, USER, change, world.clock())


def mute(until: Any = FOREVER, alerts: Alerts = Alerts.ALL) -> Any:
    return lambda box: box.with_thread_preference(THREAD, alerts, until, T0)


def quiet(body: dict[str, str]) -> Any:
    hours = parse_quiet_hours(body)
    return lambda box: box.with_preferences(Preferences(quiet_hours=hours))


# --- the count on every alert ---------------------------------------------------------------------


async def test_an_alert_carries_the_unread_count(world: World) -> None:
    await world.handle(RECEIVED)
    assert badges(world) == [1, 1]


async def test_each_new_message_raises_the_badge(world: World) -> None:
    await world.handle(message(0))
    await world.handle(message(1, OTHER_THREAD))
    assert badges(world)[2:] == [2, 2]


async def test_an_edit_carries_the_count_without_raising_it(world: World) -> None:
    await world.handle(RECEIVED)
    await world.handle(EDITED)
    assert badges(world)[2:] == [1, 1]


async def test_a_redelivered_message_is_counted_once(world: World) -> None:
    await world.handle(RECEIVED)
    await world.handle(RECEIVED)
    assert (world.inbox.of(USER).badge(T0), world.inbox.writes) == (1, 1)


async def test_concurrent_deliveries_of_one_message_count_it_once(world: World) -> None:
    await asyncio.gather(*(world.handle(RECEIVED) for _ in range(4)))
    assert world.inbox.of(USER).badge(T0) == 1


async def test_concurrent_messages_are_all_counted(world: World) -> None:
    await asyncio.gather(*(world.handle(message(n)) for n in range(5)))
    assert world.inbox.of(USER).badge(T0) == 5


async def test_a_retry_after_a_failed_push_carries_the_same_count(world: World) -> None:
    world.apns.fail(world.token(1), ApnsUnavailable("no answer"))
    await world.handle(RECEIVED)
    world.apns.script.clear()
    world.clock.advance(seconds=30)
    await world.handle(RECEIVED)
    assert [s.payload["aps"]["badge"] for s in world.apns.to(world.token(1))] == [1, 1]


async def test_a_recipient_without_devices_is_not_counted(world: World) -> None:
    world.registry = FakeDeviceStore()
    await world.handle(RECEIVED)
    assert world.inbox.writes == 0


async def test_a_message_id_that_is_not_an_acs_id_is_pushed_uncounted(world: World) -> None:
    await world.handle(event(RECEIVED_NAME, messageId="not-a-number"))
    assert (badges(world), world.inbox.writes) == ([0, 0], 0)


async def test_an_unreadable_inbox_still_pushes_without_a_badge(world: World) -> None:
    world.inbox.rows[USER] = ("{not json", "1")
    await world.handle(RECEIVED)
    assert (badges(world), world.inbox.rows[USER][0]) == ([None, None], "{not json")


async def test_a_failure_to_count_releases_the_claims_for_the_redelivery(world: World) -> None:
    class Down(FakeInbox):
        async def write(self, user_id: str, prior: InboxSnapshot, inbox: Inbox) -> None:
            raise StorageUnavailableError("write an inbox: no answer")

    world.inbox = Down()
    with pytest.raises(StorageUnavailableError):
        await world.handle(RECEIVED)
    assert (world.apns.sent, world.states()) == ([], [DeliveryState.RELEASED] * 2)


# --- the count falls ------------------------------------------------------------------------------


async def test_deleting_an_unread_message_takes_it_off(world: World) -> None:
    await world.handle(RECEIVED)
    await world.handle(DELETED)
    assert world.inbox.of(USER).badge(T0) == 0


async def test_deleting_an_unread_message_updates_every_badge(world: World) -> None:
    await world.handle(RECEIVED)
    await world.handle(DELETED)
    updates = badge_only(world)
    assert sorted(s.notification.device_token for s in updates) == [world.token(1), world.token(2)]


async def test_a_badge_update_is_an_alert_push_of_priority_5_never_stored(world: World) -> None:
    await world.handle(RECEIVED)
    await world.handle(DELETED)
    n = badge_only(world)[0].notification
    assert (n.push_type, n.priority, n.expiration, n.payload) == (
        PushType.ALERT,
        Priority.CONSIDERATE,
        0,
        b'{"aps":{"badge":0}}',
    )


async def test_a_redelivered_delete_updates_no_badge_again(world: World) -> None:
    await world.handle(RECEIVED)
    await world.handle(DELETED)
    world.clock.advance(hours=2)  # past the background budget's spacing
    await world.handle(DELETED)
    assert len(badge_only(world)) == 2


async def test_a_message_deleted_before_it_arrived_is_neither_counted_nor_alerted(
    world: World,
) -> None:
    await world.handle(DELETED)
    await world.handle(RECEIVED)
    assert (world.inbox.of(USER).badge(T0), badges(world)) == (0, [None, None])


async def test_a_new_message_is_checked_for_a_delete_in_the_inbox_alone(world: World) -> None:
    await world.handle(RECEIVED)
    assert world.deliveries.state_reads == 0


async def test_a_message_older_than_the_read_marker_asks_the_delivery_log(world: World) -> None:
    await prefer(world, lambda box: box.read(THREAD, int(MESSAGE) + 5, T0))
    await world.handle(DELETED)
    await world.handle(RECEIVED)
    assert (world.deliveries.state_reads, world.states()) == (1, [DeliveryState.SKIPPED] * 2)


async def test_an_edit_asks_the_delivery_log_for_a_delete(world: World) -> None:
    await world.handle(EDITED)
    assert world.deliveries.state_reads == 1


async def test_leaving_a_thread_takes_its_messages_off_and_updates_the_badge(
    world: World,
) -> None:
    await world.handle(RECEIVED)
    await world.handle(message(1, OTHER_THREAD))
    await world.handle(LEFT)
    assert (world.inbox.of(USER).badge(T0), [s.payload for s in badge_only(world)]) == (
        1,
        [{"aps": {"badge": 1}}] * 2,
    )


async def test_a_deleted_thread_takes_its_messages_off(world: World) -> None:
    await world.handle(RECEIVED)
    await world.handle(sample("chat_thread_with_user_deleted.eventgrid.json"))
    assert world.inbox.of(USER).badge(T0) == 0


# --- muted threads --------------------------------------------------------------------------------


async def test_a_muted_thread_sends_no_alert(world: World) -> None:
    await prefer(world, mute())
    summary = await world.handle(RECEIVED)
    assert (world.apns.sent, summary) == (
        [],
        PushSummary(devices=2, skipped=2, note="muted"),
    )


async def test_a_muted_threads_messages_are_logged_muted(world: World) -> None:
    await prefer(world, mute())
    await world.handle(RECEIVED)
    assert world.states() == [DeliveryState.MUTED] * 2


async def test_alerts_none_sends_no_alert(world: World) -> None:
    await prefer(world, mute(until=None, alerts=Alerts.NONE))
    await world.handle(RECEIVED)
    assert (world.apns.sent, world.states()) == ([], [DeliveryState.MUTED] * 2)


async def test_an_edit_in_a_muted_thread_sends_no_alert(world: World) -> None:
    await prefer(world, mute())
    await world.handle(EDITED)
    assert (world.apns.sent, world.states(DeliveryKind.EDITED)) == ([], [DeliveryState.MUTED] * 2)


async def test_a_muted_threads_message_is_still_counted(world: World) -> None:
    await prefer(world, mute())
    await world.handle(RECEIVED)
    assert world.inbox.of(USER).thread(THREAD).unread_count == 1


async def test_a_muted_thread_raises_the_badge_silently_when_the_user_counts_it(
    world: World,
) -> None:
    await prefer(world, mute())
    await prefer(world, lambda box: box.with_preferences(Preferences(count_muted=True)))
    await world.handle(RECEIVED)
    assert [s.payload for s in world.apns.sent] == [{"aps": {"badge": 1}}] * 2


async def test_a_muted_badge_update_is_logged_muted_with_apns_answer(world: World) -> None:
    await prefer(world, mute())
    await prefer(world, lambda box: box.with_preferences(Preferences(count_muted=True)))
    await world.handle(RECEIVED)
    records = [r for r in world.deliveries.rows.values()]
    assert {(r.state, r.status) for r in records} == {(DeliveryState.MUTED, 200)}


async def test_a_mute_that_has_ended_alerts_again(world: World) -> None:
    await prefer(world, mute(until=T0 + timedelta(hours=1)))
    world.clock.advance(hours=1)
    await world.handle(RECEIVED)
    assert badges(world) == [1, 1]


async def test_muting_one_thread_leaves_the_others_alerting(world: World) -> None:
    await prefer(world, mute())
    await world.handle(message(0, OTHER_THREAD))
    assert len(world.apns.sent) == 2


# --- quiet hours ----------------------------------------------------------------------------------

QUIET_NOW = {"start": "11:00", "end": "14:00", "timeZone": "Europe/Berlin"}  # T0 is 13:00 there
QUIET_LATER = {"start": "22:00", "end": "07:00", "timeZone": "Europe/Berlin"}


async def test_quiet_hours_deliver_passive_alerts_without_sound(world: World) -> None:
    await prefer(world, quiet(QUIET_NOW))
    await world.handle(RECEIVED)
    aps = world.apns.sent[0].payload["aps"]
    assert (aps.get("interruption-level"), "sound" in aps, aps["badge"]) == ("passive", False, 1)


async def test_outside_quiet_hours_alerts_sound(world: World) -> None:
    await prefer(world, quiet(QUIET_LATER))
    await world.handle(RECEIVED)
    aps = world.apns.sent[0].payload["aps"]
    assert (aps.get("interruption-level"), aps.get("sound")) == (None, "default")


async def test_quiet_hours_follow_the_users_new_time_zone(world: World) -> None:
    await prefer(world, quiet(QUIET_NOW))
    moved = QuietHours.from_stored({**QUIET_NOW, "timeZone": "America/New_York"})
    await prefer(world, lambda box: box.with_preferences(Preferences(quiet_hours=moved)))
    await world.handle(RECEIVED)
    assert world.apns.sent[0].payload["aps"].get("sound") == "default"


async def test_quiet_hours_still_deliver_the_alert(world: World) -> None:
    await prefer(world, quiet(QUIET_NOW))
    summary = await world.handle(RECEIVED)
    assert (summary.delivered, world.states()) == (2, [DeliveryState.DELIVERED] * 2)


async def test_a_second_user_is_counted_apart(world: World) -> None:
    other = "8:acs:res_bob"
    world.registry = FakeDeviceStore(device(USER, 1), device(other, 2))
    bob = {"rawId": other, "communicationUser": {"id": other}}
    await world.handle(event(RECEIVED_NAME, recipientCommunicationIdentifier=bob))
    await world.handle(RECEIVED)
    assert (world.inbox.of(USER).badge(T0), world.inbox.of(other).badge(T0)) == (1, 1)

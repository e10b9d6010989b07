"""The chat push use case on fakes: each event type and each APNs outcome, one outcome per test."""

from __future__ import annotations

import asyncio
import copy
import json
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest

from shared.apns.errors import ApnsUnavailable, CredentialError
from shared.apns.notification import Environment, PushType
from shared.apns.response import PushResult, Reason
from shared.domain.devices import Device, DeviceKind
from shared.push.outcomes import ConfigAlarm
from shared.push.pipeline import PushSummary
from shared.settings import Settings
from shared.storage.deliveries import DeliveryKind, DeliveryState
from shared.storage.tables import StorageRejectedError
from shared.usecases.chat import handle_chat_event
from tests.fakes.apns import FakeApns
from tests.fakes.clock import T0, FakeClock
from tests.fakes.deliveries import FakeDeliveries
from tests.fakes.devices import FakeDeviceStore
from tests.fakes.inbox import FakeInbox
from tests.unit.chat_fakes import device, sample, settings

pytestmark = pytest.mark.unit

RECEIVED = sample("chat_message_received.eventgrid.json")
USER = RECEIVED["data"]["recipientCommunicationIdentifier"]["rawId"]
THREAD = RECEIVED["data"]["threadId"]
MESSAGE = RECEIVED["data"]["messageId"]
OTHER_APP = "com.example.other"


@dataclass
class World:
    """The recipient's two alert devices and one VoIP device, and everything around them."""

    registry: FakeDeviceStore = field(
        default_factory=lambda: FakeDeviceStore(
            device(USER, 1), device(USER, 2), device(USER, 3, kind=DeviceKind.VOIP)
        )
    )
    deliveries: FakeDeliveries = field(default_factory=FakeDeliveries)
    inbox: FakeInbox = field(default_factory=FakeInbox)
    apns: FakeApns = field(default_factory=FakeApns)
    other_app: FakeApns = field(default_factory=lambda: FakeApns(topic=OTHER_APP))
    clock: FakeClock = field(default_factory=FakeClock)
    settings: Settings = field(default_factory=settings)
    alarm: ConfigAlarm | None = None

    async def handle(self, event: Any) -> PushSummary:
        return await handle_chat_event(
            event,
            devices=self.registry,
            deliveries=self.deliveries,
            inbox=self.inbox,
            pushers={self.apns.topic: self.apns, OTHER_APP: self.other_app},
            settings=self.settings,
            clock=self.clock,
            alarm=self.alarm,
        )

    def token(self, n: int) -> str:
        return device(USER, n).token

    def devices(self) -> list[Device]:
        return self.registry.of(USER)

    def states(self, kind: DeliveryKind = DeliveryKind.RECEIVED) -> list[DeliveryState]:
        return sorted(r.state for (k, _), r in self.deliveries.rows.items() if k.kind is kind)


def event(name: str, **data: Any) -> dict[str, Any]:
    """A sample event with some ``data`` fields replaced."""
    e = copy.deepcopy(sample(name))
    e["data"].update(data)
    return e


def added(at: str = "2021-02-25T06:50:00Z", who: str = USER) -> dict[str, Any]:
    """The recipient (or ``who``) added to the thread at ``at``."""
    ident = {"rawId": who, "communicationUser": {"id": who}}
    return event(
        "chat_participant_added_to_thread_with_user.eventgrid.json",
        time=at,
        participantAdded={"displayName": "Alice", "participantCommunicationIdentifier": ident},
    )


@pytest.fixture
def world() -> World:
    return World()


# --- ChatMessageReceived ------------------------------------------------------------------------


async def test_received_message_reaches_every_alert_device_once(world: World) -> None:
    await world.handle(RECEIVED)
    assert sorted(s.notification.device_token for s in world.apns.sent) == [
        world.token(1),
        world.token(2),
    ]


async def test_voip_device_gets_no_chat_push(world: World) -> None:
    await world.handle(RECEIVED)
    assert world.apns.to(world.token(3)) == []


async def test_chat_push_is_an_alert_grouped_by_thread(world: World) -> None:
    await world.handle(RECEIVED)
    sent = world.apns.sent[0]
    assert (sent.notification.push_type, sent.payload["aps"]["thread-id"]) == (
        PushType.ALERT,
        THREAD,
    )


async def test_summary_counts_the_delivered_devices(world: World) -> None:
    summary = await world.handle(RECEIVED)
    assert summary == PushSummary(devices=2, delivered=2)


async def test_cloud_events_schema_is_pushed_too(world: World) -> None:
    await world.handle(sample("chat_message_received.cloudevents.json"))
    assert len(world.apns.sent) == 2


async def test_push_goes_to_the_devices_environment(world: World) -> None:
    prod = device(USER, 4, environment=Environment.PRODUCTION)
    world.registry = FakeDeviceStore(prod)
    await world.handle(RECEIVED)
    assert [s.environment for s in world.apns.sent] == [Environment.PRODUCTION]


async def test_each_device_is_pushed_with_its_apps_credentials(world: World) -> None:
    world.registry = FakeDeviceStore(device(USER, 1), device(USER, 5, topic=OTHER_APP))
    await world.handle(RECEIVED)
    assert [s.notification.topic for s in world.other_app.sent] == [OTHER_APP]


async def test_sends_to_several_devices_run_concurrently(world: World) -> None:
    both = asyncio.Event()

    async def wait_for_both(n: Any) -> PushResult:
        if world.apns.in_flight == 2:
            both.set()
        await asyncio.wait_for(both.wait(), 1)
        return PushResult(200, None, n.apns_id or "", None, None, 1)

    world.apns.script = {world.token(1): wait_for_both, world.token(2): wait_for_both}
    await world.handle(RECEIVED)
    assert world.apns.max_in_flight == 2


async def test_sends_share_the_retry_budget(world: World) -> None:
    world.settings = settings(apns_retry_budget_seconds=7.5)
    await world.handle(RECEIVED)
    assert {s.budget for s in world.apns.sent} == {7.5}


async def test_recipient_without_devices_is_acknowledged(world: World) -> None:
    world.registry = FakeDeviceStore()
    assert await world.handle(RECEIVED) == PushSummary(note="no devices")


async def test_phone_recipient_is_acknowledged_without_a_push(world: World) -> None:
    summary = await world.handle(sample("chat_message_received_phone_recipient.eventgrid.json"))
    assert (world.apns.sent, summary.retry_needed) == ([], False)


async def test_teams_recipient_is_acknowledged_without_a_push(world: World) -> None:
    await world.handle(sample("chat_message_received_teams_recipient.cloudevents.json"))
    assert world.apns.sent == []


# --- redelivery -----------------------------------------------------------------------------------


async def test_redelivered_event_pushes_no_device_twice(world: World) -> None:
    await world.handle(RECEIVED)
    world.clock.advance(seconds=10)
    await world.handle(RECEIVED)
    assert len(world.apns.sent) == 2


async def test_redelivery_of_a_delivered_event_succeeds(world: World) -> None:
    await world.handle(RECEIVED)
    summary = await world.handle(RECEIVED)
    assert summary == PushSummary(devices=2, skipped=2)


async def test_concurrent_redelivery_pushes_each_device_once(world: World) -> None:
    await asyncio.gather(*(world.handle(RECEIVED) for _ in range(5)))
    assert len(world.apns.sent) == 2


async def test_push_in_flight_elsewhere_asks_for_redelivery(world: World) -> None:
    gate = asyncio.Event()

    async def held(n: Any) -> PushResult:
        await gate.wait()
        return PushResult(200, None, n.apns_id or "", None, None, 1)

    world.apns.script = {world.token(1): held}
    first = asyncio.ensure_future(world.handle(RECEIVED))
    await asyncio.sleep(0)
    while not world.apns.sent:
        await asyncio.sleep(0)
    second = await world.handle(RECEIVED)
    gate.set()
    await first
    assert second.retry_needed


async def test_claim_left_by_a_crash_is_pushed_after_its_lease(world: World) -> None:
    world.apns.script = {world.token(1): _crash}
    with pytest.raises(_Crash):
        await world.handle(RECEIVED)
    world.apns.script = {}
    world.clock.advance(minutes=1)
    await world.handle(RECEIVED)
    assert len(world.apns.to(world.token(1))) == 2


class _Crash(BaseException):
    """The process dies mid-send (not an error the use case handles)."""


async def _crash(n: Any) -> PushResult:
    raise _Crash


# --- ChatMessageEdited / ChatMessageDeleted -----------------------------------------------------


async def test_edited_message_replaces_the_banner(world: World) -> None:
    await world.handle(sample("chat_message_edited.eventgrid.json"))
    assert {s.notification.collapse_id for s in world.apns.sent} == {MESSAGE}


async def test_edit_after_delivery_is_a_new_push(world: World) -> None:
    await world.handle(RECEIVED)
    await world.handle(sample("chat_message_edited.eventgrid.json"))
    assert len(world.apns.to(world.token(1))) == 2


async def test_edit_is_recorded_under_its_own_kind(world: World) -> None:
    await world.handle(sample("chat_message_edited.eventgrid.json"))
    assert world.states(DeliveryKind.EDITED) == [DeliveryState.DELIVERED] * 2


async def test_deleted_message_sends_a_background_push(world: World) -> None:
    await world.handle(sample("chat_message_deleted.eventgrid.json"))
    sent = world.apns.sent[0]
    assert (sent.notification.push_type, sent.payload["aps"]) == (
        PushType.BACKGROUND,
        {"content-available": 1},
    )


async def test_deleted_push_names_the_message(world: World) -> None:
    await world.handle(sample("chat_message_deleted.eventgrid.json"))
    assert MESSAGE in world.apns.sent[0].notification.payload.decode()


async def test_deleted_push_counts_against_the_background_budget(world: World) -> None:
    await world.handle(sample("chat_message_deleted.eventgrid.json"))
    assert [d.background_sent for d in world.devices() if d.kind is DeviceKind.ALERT] == [
        (T0,),
        (T0,),
    ]


async def test_deleted_push_over_the_background_budget_is_skipped(world: World) -> None:
    spent = (T0 - timedelta(minutes=50), T0 - timedelta(minutes=25))
    world.registry = FakeDeviceStore(device(USER, 1, background_sent=spent))
    await world.handle(sample("chat_message_deleted.eventgrid.json"))
    assert (world.apns.sent, world.states(DeliveryKind.DELETED)) == ([], [DeliveryState.SKIPPED])


async def test_deleted_push_too_soon_after_another_is_skipped(world: World) -> None:
    world.registry = FakeDeviceStore(device(USER, 1, background_sent=(T0 - timedelta(minutes=5),)))
    await world.handle(sample("chat_message_deleted.eventgrid.json"))
    assert world.apns.sent == []


# --- APNs outcomes --------------------------------------------------------------------------------


async def test_every_outcome_goes_to_the_delivery_log(world: World) -> None:
    world.apns.answer(world.token(1), 410, Reason.UNREGISTERED, unregistered_at=T0, attempts=1)
    await world.handle(RECEIVED)
    world.clock.advance(seconds=1)
    log = await world.deliveries.history(USER, THREAD, MESSAGE)
    gone = next(r for r in log if r.status == 410)
    assert (gone.state, gone.reason, gone.apns_attempts, gone.completed_at, bool(gone.apns_id)) == (
        DeliveryState.FAILED,
        "Unregistered",
        1,
        T0,
        True,
    )


async def test_unregistered_device_is_removed(world: World) -> None:
    world.apns.answer(world.token(1), 410, Reason.UNREGISTERED, unregistered_at=T0)
    await world.handle(RECEIVED)
    assert world.token(1) not in [d.token for d in world.devices()]


async def test_expired_token_device_is_removed(world: World) -> None:
    world.apns.answer(world.token(1), 410, Reason.EXPIRED_TOKEN, unregistered_at=T0)
    await world.handle(RECEIVED)
    assert world.token(1) not in [d.token for d in world.devices()]


async def test_device_registered_again_after_the_410_is_kept(world: World) -> None:
    world.registry = FakeDeviceStore(device(USER, 1, registered_at=T0))
    world.apns.answer(
        world.token(1), 410, Reason.UNREGISTERED, unregistered_at=T0 - timedelta(hours=1)
    )
    await world.handle(RECEIVED)
    assert [d.token for d in world.devices()] == [world.token(1)]


async def test_unregistered_device_is_not_retried(world: World) -> None:
    world.apns.answer(world.token(1), 410, Reason.UNREGISTERED, unregistered_at=T0)
    summary = await world.handle(RECEIVED)
    assert (summary.failed, summary.retry_needed) == (1, False)


async def test_bad_device_token_is_recorded_and_the_device_kept(world: World) -> None:
    world.apns.answer(world.token(1), 400, Reason.BAD_DEVICE_TOKEN)
    await world.handle(RECEIVED)
    kept = next(d for d in world.devices() if d.token == world.token(1))
    assert (kept.bad_token_count, kept.last_result) == (1, "BadDeviceToken")


async def test_bad_device_token_repeated_over_time_removes_the_device(world: World) -> None:
    world.apns.answer(world.token(1), 400, Reason.BAD_DEVICE_TOKEN)
    for n in range(world.settings.bad_token_remove_after):
        await world.handle(event("chat_message_received.eventgrid.json", messageId=f"m{n}"))
        world.clock.advance(hours=1)
    assert world.token(1) not in [d.token for d in world.devices()]


async def test_bad_device_token_burst_counts_once(world: World) -> None:
    world.apns.answer(world.token(1), 400, Reason.BAD_DEVICE_TOKEN)
    for n in range(world.settings.bad_token_remove_after + 1):
        await world.handle(event("chat_message_received.eventgrid.json", messageId=f"m{n}"))
        world.clock.advance(seconds=20)
    assert next(d for d in world.devices() if d.token == world.token(1)).bad_token_count == 1


async def test_device_token_not_for_topic_is_recorded(world: World) -> None:
    world.apns.answer(world.token(1), 400, Reason.DEVICE_TOKEN_NOT_FOR_TOPIC)
    await world.handle(RECEIVED)
    assert next(d for d in world.devices() if d.token == world.token(1)).bad_token_count == 1


async def test_success_after_a_bad_token_resets_the_count(world: World) -> None:
    world.registry = FakeDeviceStore(device(USER, 1, bad_token_count=2))
    await world.handle(RECEIVED)
    assert world.devices()[0].bad_token_count == 0


async def test_many_devices_of_one_user_failing_together_are_dead_devices(world: World) -> None:
    """One user's many bad tokens are that user's (perhaps fake) devices, not a configuration
    error: the attack run's twenty fake tokens of one user tripped the app-wide alarm."""
    world.settings = settings(
        config_error_threshold=3, bad_token_remove_after=1, max_devices_per_user=30
    )
    world.registry = FakeDeviceStore(*(device(USER, n) for n in range(1, 21)))
    for n in range(1, 21):
        world.apns.answer(world.token(n), 400, Reason.BAD_DEVICE_TOKEN)
    await world.handle(RECEIVED)
    assert world.devices() == []


async def test_one_users_fake_tokens_do_not_shield_another_users_dead_token(world: World) -> None:
    world.settings = settings(
        config_error_threshold=3, bad_token_remove_after=1, max_devices_per_user=30
    )
    world.alarm = ConfigAlarm(threshold=3, clock=world.clock)
    other = "8:acs:res_other"
    world.registry = FakeDeviceStore(*(device(USER, n) for n in range(1, 21)), device(other, 21))
    for n in range(1, 22):
        world.apns.answer(device(USER, n).token, 400, Reason.BAD_DEVICE_TOKEN)
    await world.handle(RECEIVED)
    recipient = {"rawId": other, "communicationUser": {"id": other}}
    await world.handle(event(RECEIVED_NAME, recipientCommunicationIdentifier=recipient))
    assert world.registry.rows == {}


async def test_app_wide_failure_across_recipients_deletes_nothing(world: World) -> None:
    world.settings = settings(config_error_threshold=3, bad_token_remove_after=1)
    world.alarm = ConfigAlarm(threshold=3, clock=world.clock)
    others = [f"8:acs:res_{n}" for n in range(3)]
    world.registry = FakeDeviceStore(*(device(u, n) for n, u in enumerate(others, start=1)))
    for n in range(1, 4):
        world.apns.answer(device(USER, n).token, 400, Reason.BAD_DEVICE_TOKEN)
    for u in others:
        recipient = {"rawId": u, "communicationUser": {"id": u}}
        await world.handle(event(RECEIVED_NAME, recipientCommunicationIdentifier=recipient))
    assert len(world.registry.rows) == 3 - 2  # the first two looked like dead devices


RECEIVED_NAME = "chat_message_received.eventgrid.json"


async def test_bad_topic_deletes_nothing(world: World) -> None:
    world.settings = settings(bad_token_remove_after=1)
    world.apns.answer(world.token(1), 400, Reason.BAD_TOPIC)
    await world.handle(RECEIVED)
    assert len(world.devices()) == 3


async def test_provider_token_error_fails_the_invocation(world: World) -> None:
    world.apns.answer(world.token(1), 403, Reason.INVALID_PROVIDER_TOKEN)
    assert (await world.handle(RECEIVED)).retry_needed


async def test_provider_token_error_releases_the_claim(world: World) -> None:
    world.apns.answer(world.token(1), 403, Reason.EXPIRED_PROVIDER_TOKEN)
    await world.handle(RECEIVED)
    assert world.states() == [DeliveryState.DELIVERED, DeliveryState.RELEASED]


async def test_unusable_credentials_fail_the_invocation(world: World) -> None:
    world.apns.fail(world.token(1), CredentialError("key unreadable"))
    assert (await world.handle(RECEIVED)).retry_needed


async def test_service_unavailable_releases_the_claim(world: World) -> None:
    world.apns.answer(world.token(1), 503, Reason.SERVICE_UNAVAILABLE, attempts=3)
    await world.handle(RECEIVED)
    assert world.states() == [DeliveryState.DELIVERED, DeliveryState.RELEASED]


async def test_too_many_requests_fails_the_invocation(world: World) -> None:
    world.apns.answer(world.token(1), 429, Reason.TOO_MANY_REQUESTS)
    assert (await world.handle(RECEIVED)).retry_needed


async def test_no_answer_releases_the_claim(world: World) -> None:
    world.apns.fail(world.token(2), ApnsUnavailable("connection lost", attempts=3))
    summary = await world.handle(RECEIVED)
    assert (summary.retry_needed, world.states()) == (
        True,
        [DeliveryState.DELIVERED, DeliveryState.RELEASED],
    )


async def test_redelivery_after_a_retryable_failure_pushes_only_unfinished_devices(
    world: World,
) -> None:
    world.apns.answer(world.token(1), 500, Reason.INTERNAL_SERVER_ERROR)
    await world.handle(RECEIVED)
    world.apns.script = {}
    world.clock.advance(seconds=10)
    summary = await world.handle(RECEIVED)
    assert (len(world.apns.to(world.token(1))), len(world.apns.to(world.token(2))), summary) == (
        2,
        1,
        PushSummary(devices=2, delivered=1, skipped=1),
    )


async def test_send_past_the_budget_is_released(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("shared.push.pipeline.SEND_GRACE_SECONDS", 0.0)
    world.settings = settings(apns_retry_budget_seconds=0.01)

    async def never(n: Any) -> PushResult:
        await asyncio.Event().wait()
        raise AssertionError

    world.apns.script = {world.token(1): never}
    summary = await world.handle(RECEIVED)
    assert (summary.retry_needed, world.states()) == (
        True,
        [DeliveryState.DELIVERED, DeliveryState.RELEASED],
    )


async def test_a_lone_device_past_the_budget_is_released(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One device is sent in place rather than as a task: the deadline must still hold.
    monkeypatch.setattr("shared.push.pipeline.SEND_GRACE_SECONDS", 0.0)
    world.settings = settings(apns_retry_budget_seconds=0.01)
    world.registry = FakeDeviceStore(device(USER, 1))

    async def never(n: Any) -> PushResult:
        await asyncio.Event().wait()
        raise AssertionError

    world.apns.script = {world.token(1): never}
    # The outer wait only keeps a broken deadline from hanging the suite.
    summary = await asyncio.wait_for(world.handle(RECEIVED), 30)
    assert (summary.retry_needed, world.states()) == (True, [DeliveryState.RELEASED])


async def test_rejected_request_is_not_retried(world: World) -> None:
    world.apns.answer(world.token(1), 413, Reason.PAYLOAD_TOO_LARGE)
    summary = await world.handle(RECEIVED)
    assert (summary.failed, summary.retry_needed) == (1, False)


async def test_device_of_an_app_without_credentials_fails_without_retry(world: World) -> None:
    world.registry = FakeDeviceStore(device(USER, 1, topic="com.example.unknown"))
    summary = await world.handle(RECEIVED)
    assert (summary.failed, summary.retry_needed, world.apns.sent) == (1, False, [])


# --- thread events --------------------------------------------------------------------------------


async def test_removed_participant_gets_no_more_pushes_for_the_thread(world: World) -> None:
    await world.handle(sample("chat_participant_removed_from_thread_with_user.eventgrid.json"))
    summary = await world.handle(RECEIVED)
    assert (world.apns.sent, summary.skipped) == ([], 2)


async def test_deleted_thread_gets_no_more_pushes(world: World) -> None:
    await world.handle(sample("chat_thread_with_user_deleted.cloudevents.json"))
    await world.handle(RECEIVED)
    assert world.apns.sent == []


async def test_participant_added_again_gets_pushes_again(world: World) -> None:
    await world.handle(sample("chat_participant_removed_from_thread_with_user.eventgrid.json"))
    await world.handle(added())
    await world.handle(RECEIVED)
    assert len(world.apns.sent) == 2


async def test_another_participant_added_leaves_the_thread_muted(world: World) -> None:
    await world.handle(sample("chat_participant_removed_from_thread_with_user.eventgrid.json"))
    await world.handle(added(who="8:acs:res_carol"))
    await world.handle(RECEIVED)
    assert world.apns.sent == []


async def test_late_add_older_than_the_removal_keeps_the_thread_muted(world: World) -> None:
    await world.handle(sample("chat_participant_removed_from_thread_with_user.eventgrid.json"))
    await world.handle(added(at="2021-02-25T06:00:00Z"))
    await world.handle(RECEIVED)
    assert world.apns.sent == []


async def test_another_participant_removed_does_not_mute_the_recipient(world: World) -> None:
    other = {"rawId": "8:acs:res_other", "communicationUser": {"id": "8:acs:res_other"}}
    removed = event(
        "chat_participant_removed_from_thread_with_user.eventgrid.json",
        participantRemoved={"displayName": "Eve", "participantCommunicationIdentifier": other},
    )
    await world.handle(removed)
    await world.handle(RECEIVED)
    assert len(world.apns.sent) == 2


async def test_muting_one_thread_leaves_other_threads_pushed(world: World) -> None:
    await world.handle(sample("chat_participant_removed_from_thread_with_user.eventgrid.json"))
    await world.handle(event(RECEIVED_NAME, threadId="19:another@thread.v2"))
    assert len(world.apns.sent) == 2


async def test_thread_created_event_is_acknowledged(world: World) -> None:
    summary = await world.handle(sample("chat_thread_created_with_user.eventgrid.json"))
    assert (summary.retry_needed, world.apns.sent) == (False, [])


# --- ignored and malformed ------------------------------------------------------------------------


async def test_thread_level_event_is_acknowledged(world: World) -> None:
    summary = await world.handle(sample("chat_message_received_in_thread.eventgrid.json"))
    assert (summary.note, world.apns.sent) == ("thread-level chat event", [])


async def test_unknown_event_type_is_acknowledged(world: World) -> None:
    summary = await world.handle(dict(RECEIVED, eventType="Microsoft.Communication.Unheard"))
    assert (summary.retry_needed, world.apns.sent) == (False, [])


async def test_malformed_event_is_acknowledged(world: World) -> None:
    summary = await world.handle(event(RECEIVED_NAME, threadId=42))
    assert summary == PushSummary(note="malformed")


async def test_malformed_event_is_logged_with_its_id(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    await world.handle(event(RECEIVED_NAME, messageId=None))
    assert RECEIVED["id"] in caplog.text


async def test_message_body_is_never_logged(world: World, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")
    world.apns.answer(world.token(1), 400, Reason.BAD_DEVICE_TOKEN)
    await world.handle(RECEIVED)
    assert RECEIVED["data"]["messageBody"] not in caplog.text


async def test_a_user_with_more_devices_than_the_limit_gets_only_the_freshest_pushed(
    world: World,
) -> None:
    """Rows from before MAX_DEVICES_PER_USER, or a registration race, never widen a fan-out."""
    world.settings = settings(max_devices_per_user=3)
    world.registry = FakeDeviceStore(
        *(device(USER, n, registered_at=T0 - timedelta(hours=40 - n)) for n in range(1, 31))
    )
    await world.handle(RECEIVED)
    assert sorted(s.notification.device_token for s in world.apns.sent) == [
        world.token(n) for n in (28, 29, 30)
    ]


# --- policy skips say why; every registered device gets something ----------------------------


def details(world: World, kind: DeliveryKind) -> list[str | None]:
    return sorted(str(r.detail) for (k, _), r in world.deliveries.rows.items() if k.kind is kind)


async def test_an_edit_arriving_after_its_delete_alerts_nobody(world: World) -> None:
    await world.handle(sample("chat_message_deleted.eventgrid.json"))
    summary = await world.handle(sample("chat_message_edited.eventgrid.json"))
    assert [s.notification.push_type for s in world.apns.sent] == [PushType.BACKGROUND] * 2
    assert (summary.skipped, summary.retry_needed) == (2, False)
    assert world.states(DeliveryKind.EDITED) == [DeliveryState.SKIPPED] * 2
    assert (
        details(world, DeliveryKind.EDITED)
        == ["the message was deleted before this event arrived"] * 2
    )


async def test_the_message_arriving_after_its_delete_alerts_nobody(world: World) -> None:
    await world.handle(sample("chat_message_deleted.eventgrid.json"))
    await world.handle(RECEIVED)
    assert world.states(DeliveryKind.RECEIVED) == [DeliveryState.SKIPPED] * 2
    assert all(s.notification.push_type is PushType.BACKGROUND for s in world.apns.sent)


async def test_a_redelivered_delete_is_not_stopped_by_its_own_tombstone(world: World) -> None:
    world.apns.answer(world.token(1), 503, Reason.SERVICE_UNAVAILABLE)
    first = await world.handle(sample("chat_message_deleted.eventgrid.json"))
    del world.apns.script[world.token(1)]
    world.clock.advance(seconds=30)
    await world.handle(sample("chat_message_deleted.eventgrid.json"))
    assert first.retry_needed
    assert world.states(DeliveryKind.DELETED) == [DeliveryState.DELIVERED] * 2


async def test_an_edit_of_another_message_is_not_stopped_by_a_tombstone(world: World) -> None:
    await world.handle(sample("chat_message_deleted.eventgrid.json"))
    await world.handle(event("chat_message_edited.eventgrid.json", messageId="1613694999999"))
    assert world.states(DeliveryKind.EDITED) == [DeliveryState.DELIVERED] * 2


async def test_a_left_thread_says_so_in_the_delivery_log(world: World) -> None:
    await world.handle(sample("chat_participant_removed_from_thread_with_user.eventgrid.json"))
    await world.handle(RECEIVED)
    assert (
        details(world, DeliveryKind.RECEIVED)
        == ["the recipient left the thread (or it was deleted)"] * 2
    )


async def test_a_message_with_huge_metadata_reaches_every_device(world: World) -> None:
    keyed = [device(USER, n, preview_key=bytes(64), key_expires_at=T0 + timedelta(minutes=30))
             for n in (1, 2)]  # fmt: skip
    world.registry = FakeDeviceStore(*keyed)
    files = [{"name": f"f{n}.pdf", "url": "https://x.example/" + "u" * 400} for n in range(6)]
    metadata = {"fileSharingMetadata": json.dumps(files)}
    summary = await world.handle(event("chat_message_received.eventgrid.json", metadata=metadata))
    assert summary.delivered == 2 and all("data" in s.payload for s in world.apns.sent)
    assert details(world, DeliveryKind.RECEIVED) == ["metadata dropped"] * 2


async def test_a_push_refused_before_sending_is_not_logged_as_apns_rejecting_it(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    world.registry = FakeDeviceStore(device(USER, 1, topic="com.example.unknown"))
    await world.handle(RECEIVED)
    text = caplog.text
    assert "push not sent" in text and "APNs rejected" not in text
    assert details(world, DeliveryKind.RECEIVED)[0].startswith("NotificationError")


async def test_storage_refusing_the_events_data_is_acknowledged(world: World) -> None:
    async def refuse(*args: Any, **kwargs: Any) -> Any:
        raise StorageRejectedError("claim deliveries: request failed (400)")

    world.deliveries.claim = refuse  # type: ignore[method-assign]
    summary = await world.handle(RECEIVED)
    assert (summary.retry_needed, summary.note) == (False, "storage refused the event's data")

"""The incoming-call use case on fakes: VoIP pushes, freshness, claims, outcomes, one per test."""

from __future__ import annotations

import asyncio
import copy
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.apns.errors import ApnsUnavailable
from shared.apns.notification import PushType
from shared.apns.response import Reason
from shared.domain.devices import DeviceKind
from shared.domain.events import IncomingCallEvent, parse_event
from shared.domain.quiet_hours import parse_quiet_hours
from shared.push.pipeline import PushSummary
from shared.settings import Settings
from shared.storage.deliveries import CALLS_THREAD, DeliveryKind, DeliveryRecord, DeliveryState
from shared.storage.inbox import Preferences, change_inbox
from shared.usecases.calls import (
    GIVEN_UP,
    QUIET,
    call_age,
    handle_call_event,
    send_budget,
    worth_retrying,
)
from tests.fakes.apns import FakeApns
from tests.fakes.clock import FakeClock
from tests.fakes.deliveries import FakeDeliveries
from tests.fakes.devices import FakeDeviceStore
from tests.fakes.inbox import FakeInbox
from tests.unit.chat_fakes import device, sample, settings

pytestmark = pytest.mark.unit

CALL = sample("incoming_call.eventgrid.json")
CALLEE = CALL["data"]["to"]["rawId"]
CALLER = CALL["data"]["from"]["rawId"]
SERVER_CALL_ID = CALL["data"]["serverCallId"]
CORRELATION_ID = CALL["data"]["correlationId"]
RANG_AT = datetime.fromisoformat(CALL["eventTime"])
APP = "com.example.chat"
# The base64 "cc" claim inside the sample's incomingCallContext.
CP = "b3BhcXVlLWNhbGwtY29udGV4dC1mb3ItdGhlLWNhbGxpbmctc2RrLzAxMjM0NTY3ODk="


@dataclass
class World:
    """The callee's two VoIP phones and one alert-only device; the call rang 2 s ago."""

    registry: FakeDeviceStore = field(
        default_factory=lambda: FakeDeviceStore(
            device(CALLEE, 1, kind=DeviceKind.VOIP),
            device(CALLEE, 2, kind=DeviceKind.VOIP),
            device(CALLEE, 3),
        )
    )
    deliveries: FakeDeliveries = field(default_factory=FakeDeliveries)
    inbox: FakeInbox = field(default_factory=FakeInbox)
    apns: FakeApns = field(default_factory=FakeApns)
    clock: FakeClock = field(default_factory=lambda: FakeClock(RANG_AT + timedelta(seconds=2)))
    settings: Settings = field(default_factory=settings)

    async def handle(self, event: Any) -> PushSummary:
        return await handle_call_event(
            event,
            devices=self.registry,
            deliveries=self.deliveries,
            inbox=self.inbox,
            pushers={APP: self.apns},
            settings=self.settings,
            clock=self.clock,
        )

    def token(self, n: int) -> str:
        return device(CALLEE, n).token

    def at_age(self, seconds: float) -> None:
        self.clock.now = RANG_AT + timedelta(seconds=seconds)

    def records(self) -> list[DeliveryRecord]:
        return sorted(self.deliveries.rows.values(), key=lambda r: r.device.device_id)


def call(**data: Any) -> dict[str, Any]:
    """The sample IncomingCall with some ``data`` fields replaced."""
    event = copy.deepcopy(CALL)
    event["data"].update(data)
    return event


@pytest.fixture
def world() -> World:
    return World()


# --- what the phones get ------------------------------------------------------------------------


async def test_incoming_call_rings_every_voip_device_once(world: World) -> None:
    await world.handle(CALL)
    assert sorted(s.notification.device_token for s in world.apns.sent) == [
        world.token(1),
        world.token(2),
    ]


async def test_alert_only_device_is_not_rung(world: World) -> None:
    await world.handle(CALL)
    assert world.apns.to(world.token(3)) == []


async def test_call_push_is_a_voip_push_to_the_voip_topic(world: World) -> None:
    await world.handle(CALL)
    n = world.apns.sent[0].notification
    assert (n.push_type, n.topic) == (PushType.VOIP, APP + ".voip")


async def test_call_push_has_priority_10_and_is_never_stored(world: World) -> None:
    await world.handle(CALL)
    n = world.apns.sent[0].notification
    assert (n.priority, n.expiration) == (10, 0)


async def test_call_payload_carries_what_the_calling_sdk_reads(world: World) -> None:
    await world.handle(CALL)
    assert world.apns.sent[0].payload == {
        "aps": {},
        "data": {
            "eventId": 107,
            "cp": CP,
            "callId": CORRELATION_ID,
            "recipientId": CALLEE,
            "callerId": CALLER,
            "displayName": "Bob(Admin)",
            "videoCall": "false",
        },
        "serverCallId": SERVER_CALL_ID,
    }


async def test_long_caller_name_is_shortened_within_the_voip_limit(world: World) -> None:
    await world.handle(call(callerDisplayName="名" * 3000))
    payload = world.apns.sent[0].notification.payload
    assert 4096 < len(payload) <= 5120


async def test_cloud_events_schema_rings_too(world: World) -> None:
    await world.handle(sample("incoming_call.cloudevents.json"))
    assert len(world.apns.sent) == 2


async def test_summary_counts_the_rung_devices(world: World) -> None:
    assert await world.handle(CALL) == PushSummary(devices=2, delivered=2)


async def test_each_device_is_rung_in_its_environment(world: World) -> None:
    await world.handle(CALL)
    assert {s.environment for s in world.apns.sent} == {device(CALLEE, 1).environment}


# --- freshness ----------------------------------------------------------------------------------


async def test_call_older_than_the_maximum_age_rings_nobody(world: World) -> None:
    world.at_age(20.5)
    await world.handle(CALL)
    assert world.apns.sent == []


async def test_stale_call_is_acknowledged_not_retried(world: World) -> None:
    world.at_age(60)
    assert await world.handle(CALL) == PushSummary(note="stale")


async def test_stale_call_leaves_nothing_in_the_delivery_log(world: World) -> None:
    world.at_age(21)
    await world.handle(CALL)
    assert world.deliveries.rows == {}


async def test_call_just_at_the_maximum_age_still_rings(world: World) -> None:
    world.at_age(20)
    await world.handle(CALL)
    assert len(world.apns.sent) == 2


async def test_maximum_age_comes_from_the_settings(world: World) -> None:
    world.settings = settings(call_max_age_seconds=5.0)
    world.at_age(6)
    await world.handle(CALL)
    assert world.apns.sent == []


async def test_cloud_event_time_is_used_for_the_age(world: World) -> None:
    world.at_age(25)
    await world.handle(sample("incoming_call.cloudevents.json"))
    assert world.apns.sent == []


async def test_call_stamped_slightly_in_the_future_rings(world: World) -> None:
    world.at_age(-3)  # the sender's clock runs ahead of ours
    await world.handle(CALL)
    assert len(world.apns.sent) == 2


async def test_call_without_an_event_time_rings(world: World) -> None:
    event = call()
    del event["eventTime"]
    await world.handle(event)
    assert len(world.apns.sent) == 2


# --- claims and the delivery log ----------------------------------------------------------------


async def test_redelivered_call_rings_no_device_twice(world: World) -> None:
    await world.handle(CALL)
    world.at_age(4)
    await world.handle(CALL)
    assert len(world.apns.sent) == 2


async def test_redelivery_of_a_rung_call_is_acknowledged(world: World) -> None:
    await world.handle(CALL)
    assert await world.handle(CALL) == PushSummary(devices=2, skipped=2)


async def test_concurrent_redelivery_rings_each_device_once(world: World) -> None:
    await asyncio.gather(*(world.handle(CALL) for _ in range(5)))
    assert len(world.apns.sent) == 2


async def test_delivery_is_keyed_by_callee_server_call_id_and_kind_call(world: World) -> None:
    await world.handle(CALL)
    keys = {(r.key.user_id, r.key.thread_id, r.key.message_id, r.key.kind, r.key.version)
            for r in world.records()}  # fmt: skip
    assert keys == {(CALLEE, CALLS_THREAD, SERVER_CALL_ID, DeliveryKind.CALL, 0)}


async def test_call_without_server_call_id_is_keyed_by_correlation_id(world: World) -> None:
    await world.handle(call(serverCallId=None))
    assert {r.key.message_id for r in world.records()} == {CORRELATION_ID}


async def test_delivery_log_shows_the_call_by_its_id(world: World) -> None:
    await world.handle(CALL)
    history = await world.deliveries.history(CALLEE, CALLS_THREAD, SERVER_CALL_ID)
    assert [r.state for r in history] == [DeliveryState.DELIVERED] * 2


async def test_same_call_to_another_callee_is_a_delivery_of_its_own(world: World) -> None:
    other = "8:acs:109f0644-b956-4cd9-87b1-71024f6e2f44_00000008-0000-0000-0000-00000000beef"
    world.registry.rows[(other, device(other, 4).device_id)] = device(
        other, 4, kind=DeviceKind.VOIP
    )
    await world.handle(CALL)
    await world.handle(call(to={"rawId": other, "communicationUser": {"id": other}}))
    assert len(world.apns.sent) == 3


async def test_call_in_flight_elsewhere_asks_for_redelivery_while_fresh(world: World) -> None:
    gate = asyncio.Event()

    async def held(n: Any) -> Any:
        await gate.wait()
        raise ApnsUnavailable("test ends")

    world.apns.script = {world.token(1): held, world.token(2): held}
    first = asyncio.ensure_future(world.handle(CALL))
    await asyncio.sleep(0)
    while world.apns.in_flight < 2:
        await asyncio.sleep(0)
    second = await world.handle(CALL)
    gate.set()
    await first
    assert (second.skipped, second.retry_needed) == (2, True)


# --- APNs outcomes ------------------------------------------------------------------------------


async def test_unregistered_voip_device_is_removed(world: World) -> None:
    gone_at = device(CALLEE, 1).registered_at + timedelta(hours=1)
    world.apns.answer(world.token(1), 410, Reason.UNREGISTERED, unregistered_at=gone_at)
    await world.handle(CALL)
    assert sorted(d.token for d in world.registry.of(CALLEE)) == [world.token(2), world.token(3)]


async def test_retryable_failure_while_fresh_asks_for_redelivery(world: World) -> None:
    world.apns.answer(world.token(1), 503, Reason.SERVICE_UNAVAILABLE)
    summary = await world.handle(CALL)
    assert (summary.delivered, summary.retry_needed) == (1, True)


async def test_retryable_failure_while_fresh_releases_the_claim(world: World) -> None:
    world.apns.answer(world.token(1), 503, Reason.SERVICE_UNAVAILABLE)
    await world.handle(CALL)
    assert sorted(r.state for r in world.records()) == [
        DeliveryState.DELIVERED,
        DeliveryState.RELEASED,
    ]


async def test_redelivery_after_a_retryable_failure_rings_only_the_unfinished(
    world: World,
) -> None:
    world.apns.answer(world.token(1), 503, Reason.SERVICE_UNAVAILABLE)
    await world.handle(CALL)
    world.apns.script.clear()
    world.at_age(13)
    summary = await world.handle(CALL)
    assert ([s.notification.device_token for s in world.apns.sent[2:]], summary.retry_needed) == (
        [world.token(1)],
        False,
    )


async def test_retryable_failure_too_late_for_a_retry_is_acknowledged(world: World) -> None:
    world.at_age(11)  # the earliest redelivery, 10 s later, would ring a 21 s old call
    world.apns.answer(world.token(1), 503, Reason.SERVICE_UNAVAILABLE)
    summary = await world.handle(CALL)
    assert (summary.retry_needed, summary.failed) == (False, 1)


async def test_retryable_failure_too_late_for_a_retry_is_closed_in_the_log(world: World) -> None:
    world.at_age(11)
    world.apns.fail(world.token(1), ApnsUnavailable("connection lost"))
    await world.handle(CALL)
    closed = [r for r in world.records() if r.device.device_id == device(CALLEE, 1).device_id]
    assert [(r.state, r.detail is not None and GIVEN_UP in r.detail) for r in closed] == [
        (DeliveryState.FAILED, True)
    ]


async def test_call_without_an_event_time_is_never_retried(world: World) -> None:
    event = call()
    del event["eventTime"]
    world.apns.answer(world.token(1), 503, Reason.SERVICE_UNAVAILABLE)
    assert (await world.handle(event)).retry_needed is False


async def test_send_budget_is_cut_to_what_is_left_of_the_call(world: World) -> None:
    world.at_age(15)
    await world.handle(CALL)
    assert {s.budget for s in world.apns.sent} == {5.0}


async def test_send_budget_of_a_fresh_call_is_the_retry_budget(world: World) -> None:
    world.settings = settings(apns_retry_budget_seconds=3.0)
    await world.handle(CALL)
    assert {s.budget for s in world.apns.sent} == {3.0}


def test_send_budget_is_never_cut_below_one_second() -> None:
    assert send_budget(timedelta(seconds=19.9), timedelta(seconds=20), 12.0) == 1.0


def test_send_budget_below_one_second_in_the_settings_is_kept() -> None:
    assert send_budget(timedelta(seconds=2), timedelta(seconds=20), 0.5) == 0.5


@pytest.mark.parametrize(
    ("age", "worth"), [(0.0, True), (10.0, True), (10.5, False), (None, False)]
)
def test_a_retry_is_worth_it_only_if_the_redelivery_still_finds_the_call_ringing(
    age: float | None, worth: bool
) -> None:
    delta = None if age is None else timedelta(seconds=age)
    assert worth_retrying(delta, timedelta(seconds=20)) is worth


def test_call_age_is_measured_from_the_event_time() -> None:
    event = parse_event(CALL)
    assert isinstance(event, IncomingCallEvent)
    assert call_age(event, RANG_AT + timedelta(seconds=7)) == timedelta(seconds=7)


async def test_device_of_an_app_without_credentials_fails_without_retry(world: World) -> None:
    world.registry = FakeDeviceStore(device(CALLEE, 5, kind=DeviceKind.VOIP, topic="com.example.x"))
    summary = await world.handle(CALL)
    assert (summary.failed, summary.retry_needed) == (1, False)


# --- acknowledged without a push ----------------------------------------------------------------


@pytest.mark.parametrize("schema", ["eventgrid", "cloudevents"])
async def test_phone_callee_is_acknowledged_without_a_push(world: World, schema: str) -> None:
    summary = await world.handle(sample(f"incoming_call_phone_callee.{schema}.json"))
    assert (world.apns.sent, summary.note) == ([], "callee is not an ACS user")


async def test_callee_without_voip_devices_is_acknowledged(world: World) -> None:
    world.registry = FakeDeviceStore(device(CALLEE, 3))
    assert await world.handle(CALL) == PushSummary(note="no devices")


async def test_unreadable_call_context_is_acknowledged_without_a_push(world: World) -> None:
    summary = await world.handle(call(incomingCallContext="not-a-token"))
    assert (world.apns.sent, summary.retry_needed) == ([], False)


async def test_call_without_a_callee_is_acknowledged_as_malformed(world: World) -> None:
    event = call()
    del event["data"]["to"]
    assert await world.handle(event) == PushSummary(note="malformed")


async def test_chat_event_on_the_calls_function_is_acknowledged(world: World) -> None:
    summary = await world.handle(sample("chat_message_received.eventgrid.json"))
    assert (world.apns.sent, summary.note) == ([], "not an IncomingCall")


async def test_caller_name_and_call_context_are_never_logged(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    world.apns.answer(world.token(1), 410, Reason.UNREGISTERED)
    await world.handle(call(callerDisplayName="Mallory Secretname"))
    text = caplog.text
    assert ("Secretname" in text, CP in text, world.token(1) in text) == (False, False, False)


# --- quiet hours ----------------------------------------------------------------------------------


def quiet_hours(calls: str) -> Any:
    """Quiet hours in UTC around the sample call's time, with the callee's choice for calls."""
    start = (RANG_AT - timedelta(hours=1)).astimezone(UTC)
    end = (RANG_AT + timedelta(hours=1)).astimezone(UTC)
    hours = parse_quiet_hours(
        {"start": f"{start:%H:%M}", "end": f"{end:%H:%M}", "timeZone": "UTC", "calls": calls}
    )
    return lambda box: box.with_preferences(Preferences(quiet_hours=hours))


async def test_a_call_in_quiet_hours_still_rings(world: World) -> None:
    await change_inbox(world.inbox, CALLEE, quiet_hours("ring"), world.clock())
    await world.handle(CALL)
    assert len(world.apns.sent) == 2


async def test_a_call_in_quiet_hours_rings_nobody_when_the_callee_silenced_calls(
    world: World,
) -> None:
    await change_inbox(world.inbox, CALLEE, quiet_hours("silent"), world.clock())
    summary = await world.handle(CALL)
    assert (world.apns.sent, summary.note) == ([], "quiet hours")


async def test_a_call_silenced_by_quiet_hours_is_logged_skipped(world: World) -> None:
    await change_inbox(world.inbox, CALLEE, quiet_hours("silent"), world.clock())
    await world.handle(CALL)
    assert [(r.state, r.detail) for r in world.records()] == [(DeliveryState.SKIPPED, QUIET)] * 2


async def test_a_call_outside_quiet_hours_rings_whatever_the_choice(world: World) -> None:
    await change_inbox(world.inbox, CALLEE, quiet_hours("silent"), world.clock())
    later = RANG_AT + timedelta(hours=2)
    event = {**call(), "eventTime": later.isoformat()}
    world.clock.now = later + timedelta(seconds=2)
    await world.handle(event)
    assert len(world.apns.sent) == 2


async def test_a_callee_whose_inbox_cannot_be_read_is_rung(world: World) -> None:
    world.inbox.rows[CALLEE] = ("{not json", "1")
    await world.handle(CALL)
    assert len(world.apns.sent) == 2

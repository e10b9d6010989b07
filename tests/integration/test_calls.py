"""Incoming calls on real parts: Azurite tables, the APNs simulator over HTTP/2+TLS, our client.

Collaborators come from the composition root (``shared.wiring.Container``) built from settings.
The simulator validates like APNs (push type against the topic suffix, the 5120-byte VoIP limit)
and records each request's headers and payload, so every assertion is about what APNs received
or what storage holds.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import pytest

from devtools.apns_simulator import ApnsSimulator, Fault, RequestRecord
from devtools.azurite import Azurite
from shared.domain.devices import DeviceKind
from shared.push.pipeline import PushSummary
from shared.storage.deliveries import CALLS_THREAD, DeliveryRecord, DeliveryState
from shared.storage.tables import round_trips
from shared.usecases.calls import handle_call_event
from shared.wiring import Container
from tests.local_apns import APP, KEY, sandbox_device, simulator_settings, token
from tests.sample_events import sample_event as sample

pytestmark = pytest.mark.integration

CALL = sample("incoming_call.eventgrid.json")
CALLEE = CALL["data"]["to"]["rawId"]
CALL_ID = CALL["data"]["serverCallId"]
RANG_AT = datetime.fromisoformat(CALL["eventTime"])
SDK_KEYS = {"eventId", "cp", "callId", "recipientId", "callerId", "displayName", "videoCall"}


def app_settings(sim: ApnsSimulator, azurite: Azurite, prefix: str) -> dict[str, str]:
    return {
        "STORAGE_CONNECTION": azurite.connection_string,
        "TABLE_PREFIX": prefix,
        **simulator_settings(sim, [KEY.app(APP)]),
        "APNS_RETRY_BUDGET_SECONDS": "0.6",
        "APNS_REQUEST_TIMEOUT_SECONDS": "0.5",
        "KEY_ENCRYPTION_KEYS": "k1=" + base64.b64encode(bytes(range(32))).decode(),
    }


class Stack:
    """The real collaborators from the composition root; the call rang ``age`` seconds ago."""

    def __init__(self, container: Container, sim: ApnsSimulator) -> None:
        self.c = container
        self.sim = sim
        self.now = RANG_AT + timedelta(seconds=2)

    def clock(self) -> datetime:
        return self.now

    def at_age(self, seconds: float) -> None:
        self.now = RANG_AT + timedelta(seconds=seconds)

    async def handle(self, event: Any) -> PushSummary:
        c = self.c
        return await handle_call_event(
            event,
            devices=await c.device_registry(),
            deliveries=await c.deliveries(),
            inbox=await c.inbox(),
            pushers=await c.pushers(),
            settings=c.settings,
            clock=self.clock,
            alarm=c.config_alarm(),
        )

    async def register(
        self, n: int, *, kind: DeviceKind = DeviceKind.VOIP, user: str = CALLEE
    ) -> str:
        t = token(n)
        device = sandbox_device(user, t, at=RANG_AT - timedelta(days=1), kind=kind)
        await (await self.c.device_registry()).register(device)
        return t

    async def tokens(self) -> list[str]:
        return sorted(d.token for d in await (await self.c.device_registry()).list_for_user(CALLEE))

    async def log(self) -> list[DeliveryRecord]:
        return await (await self.c.deliveries()).history(CALLEE, CALLS_THREAD, CALL_ID)

    def pushes(self, status: int | None = None) -> list[RequestRecord]:
        return [r for r in self.sim.requests() if status is None or r.status == status]


@pytest.fixture
async def stack(apns: ApnsSimulator, azurite: Azurite, table_prefix: str) -> AsyncIterator[Stack]:
    container = Container(app_settings(apns, azurite, table_prefix))
    try:
        yield Stack(container, apns)
    finally:
        await container.aclose()


# --- what APNs receives ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["incoming_call.eventgrid.json", "incoming_call.cloudevents.json"])
async def test_incoming_call_rings_each_voip_device_once(stack: Stack, name: str) -> None:
    phones = [await stack.register(1), await stack.register(2)]
    await stack.register(3, kind=DeviceKind.ALERT)
    await stack.handle(sample(name))
    assert sorted(r.token for r in stack.pushes(200)) == phones


async def test_apns_gets_a_voip_push_to_the_voip_topic_at_once_and_never_stored(
    stack: Stack,
) -> None:
    await stack.register(1)
    await stack.handle(CALL)
    (push,) = stack.pushes()
    h = push.headers
    assert (
        push.status,
        h["apns-push-type"],
        h["apns-topic"],
        h["apns-priority"],
        h["apns-expiration"],
    ) == (200, "voip", APP + ".voip", "10", "0")


async def test_apns_gets_exactly_the_calling_sdks_keys(stack: Stack) -> None:
    await stack.register(1)
    await stack.handle(CALL)
    (push,) = stack.pushes()
    assert (sorted(push.payload), sorted(push.payload["data"]), push.payload["aps"]) == (
        ["aps", "data", "serverCallId"],
        sorted(SDK_KEYS),
        {},
    )


async def test_apns_gets_the_call_ids_the_sdk_hands_to_callkit(stack: Stack) -> None:
    await stack.register(1)
    await stack.handle(CALL)
    data = stack.pushes()[0].payload["data"]
    assert (data["eventId"], data["callId"], data["recipientId"], data["callerId"]) == (
        107,
        CALL["data"]["correlationId"],
        CALLEE,
        CALL["data"]["from"]["rawId"],
    )


async def test_call_payload_over_4096_but_within_5120_bytes_is_accepted(stack: Stack) -> None:
    await stack.register(1)
    await stack.handle(sample("incoming_call.eventgrid.json", callerDisplayName="名" * 3000))
    (push,) = stack.pushes()
    assert (push.status, 4096 < push.raw_size <= 5120) == (200, True)


# --- freshness ------------------------------------------------------------------------------------


async def test_stale_call_rings_nobody(stack: Stack) -> None:
    await stack.register(1)
    stack.at_age(21)
    summary = await stack.handle(CALL)
    assert (summary.note, stack.pushes(), await stack.log()) == ("stale", [], [])


async def test_stale_cloud_event_rings_nobody(stack: Stack) -> None:
    await stack.register(1)
    stack.at_age(30)
    await stack.handle(sample("incoming_call.cloudevents.json"))
    assert stack.pushes() == []


# --- exactly once ---------------------------------------------------------------------------------


async def test_sequential_redelivery_rings_each_device_once(stack: Stack) -> None:
    phones = [await stack.register(1), await stack.register(2)]
    for _ in range(3):
        await stack.handle(CALL)
    assert sorted(r.token for r in stack.pushes()) == phones


async def test_concurrent_redelivery_rings_each_device_once(stack: Stack) -> None:
    phones = [await stack.register(1), await stack.register(2)]
    await asyncio.gather(*(stack.handle(CALL) for _ in range(6)))
    assert sorted(r.token for r in stack.pushes()) == phones


async def test_delivery_log_shows_what_the_simulator_answered(stack: Stack) -> None:
    await stack.register(1)
    await stack.handle(CALL)
    (record,) = await stack.log()
    (push,) = stack.pushes()
    assert (record.state, record.status, record.apns_id) == (
        DeliveryState.DELIVERED,
        200,
        push.apns_id,
    )


# --- retryable failures ---------------------------------------------------------------------------


async def test_outage_while_the_call_is_fresh_asks_for_a_redelivery(stack: Stack) -> None:
    first, second = await stack.register(1), await stack.register(2)
    stack.sim.add_fault(Fault(token=first, reason="ServiceUnavailable"))
    summary = await stack.handle(CALL)
    states = {r.device.short_token[:6]: r.state for r in await stack.log()}
    assert (summary.retry_needed, states) == (
        True,
        {first[:6]: DeliveryState.RELEASED, second[:6]: DeliveryState.DELIVERED},
    )


async def test_redelivery_after_an_outage_rings_only_the_unfinished(stack: Stack) -> None:
    first, second = await stack.register(1), await stack.register(2)
    stack.sim.add_fault(Fault(token=first, reason="ServiceUnavailable"))
    await stack.handle(CALL)
    stack.sim.clear_faults()
    stack.at_age(12)
    summary = await stack.handle(CALL)
    assert (summary, sorted(r.token for r in stack.pushes(200))) == (
        PushSummary(devices=2, delivered=1, skipped=1),
        sorted([first, second]),
    )


async def test_outage_too_late_for_a_redelivery_is_acknowledged(stack: Stack) -> None:
    phone = await stack.register(1)
    stack.sim.add_fault(Fault(token=phone, reason="ServiceUnavailable"))
    stack.at_age(12)
    summary = await stack.handle(CALL)
    assert (summary.retry_needed, [r.state for r in await stack.log()]) == (
        False,
        [DeliveryState.FAILED],
    )


# --- outcomes -------------------------------------------------------------------------------------


async def test_unregistered_voip_device_is_removed(stack: Stack) -> None:
    gone, kept = await stack.register(1), await stack.register(2)
    stack.sim.unregister_device(gone)
    await stack.handle(CALL)
    assert await stack.tokens() == [kept]


async def test_storage_round_trips_do_not_grow_with_the_devices(stack: Stack) -> None:
    async def trips(devices: int) -> int:
        user = f"8:acs:res_calls_{devices}"
        for n in range(devices):
            await stack.register(10 * devices + n, user=user)
        callee = {"rawId": user, "communicationUser": {"id": user}}
        await stack.handle(sample("incoming_call.eventgrid.json", to=callee))  # warms up
        again = sample("incoming_call.eventgrid.json", to=callee, serverCallId=f"call-{devices}")
        before = round_trips()
        await stack.handle(again)
        return round_trips() - before

    one, three = await trips(1), await trips(3)
    assert (one, three) == (one, one)

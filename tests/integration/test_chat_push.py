"""The chat push on real parts: Azurite tables, the APNs simulator over HTTP/2+TLS, our APNs client.

Collaborators come from the composition root (``shared.wiring.Container``) built from settings,
so the wiring of APNS_APPS (several apps, token keys and a certificate) is under test too. Every
assertion counts what the simulator received or what storage holds.
"""

from __future__ import annotations

import asyncio
import base64
import io
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from devtools.apns_simulator import ApnsSimulator, Fault, RequestRecord
from devtools.azurite import Azurite
from shared.apns.notification import Environment
from shared.push.pipeline import PushSummary
from shared.storage.deliveries import DeliveryState
from shared.storage.tables import round_trips
from shared.usecases.chat import handle_chat_event
from shared.wiring import Container
from tests.local_apns import (
    APP,
    KEY,
    KEY_ID,
    ProviderKey,
    sandbox_device,
    simulator_settings,
    token,
)
from tests.sample_events import sample_event as sample

pytestmark = pytest.mark.integration

OTHER_APP = "com.example.other"
CERT_APP = "com.example.certified"
OTHER_TEAM, OTHER_KEY_ID = "TEAM654321", "KEY7654321"
OTHER_KEY = ProviderKey(OTHER_KEY_ID, OTHER_TEAM)

RECEIVED = sample("chat_message_received.eventgrid.json")
USER = RECEIVED["data"]["recipientCommunicationIdentifier"]["rawId"]
THREAD = RECEIVED["data"]["threadId"]
MESSAGE = RECEIVED["data"]["messageId"]


@pytest.fixture
def apns(sim: ApnsSimulator) -> ApnsSimulator:
    sim.reset()
    KEY.trust(sim, APP)
    OTHER_KEY.trust(sim, OTHER_APP)
    return sim


def app_settings(sim: ApnsSimulator, azurite: Azurite, prefix: str, **extra: str) -> dict[str, str]:
    apps = [
        KEY.app(APP),
        OTHER_KEY.app(OTHER_APP),
        {
            "bundleId": CERT_APP,
            "p12": base64.b64encode(sim.make_client_certificate(CERT_APP, password=b"pw")).decode(),
            "p12Password": "pw",
        },
    ]
    return {
        "STORAGE_CONNECTION": azurite.connection_string,
        "TABLE_PREFIX": prefix,
        **simulator_settings(sim, apps),
        "APNS_RETRY_BUDGET_SECONDS": "0.6",
        "APNS_REQUEST_TIMEOUT_SECONDS": "0.5",
        "KEY_ENCRYPTION_KEYS": "k1=" + base64.b64encode(bytes(range(32))).decode(),
        **extra,
    }


class Stack:
    """The real collaborators from the composition root, and a way to run one event."""

    def __init__(self, container: Container, sim: ApnsSimulator) -> None:
        self.c = container
        self.sim = sim
        self.now = datetime.now(UTC)

    def clock(self) -> datetime:
        return self.now

    async def handle(self, event: Any) -> PushSummary:
        c = self.c
        return await handle_chat_event(
            event,
            devices=await c.device_registry(),
            deliveries=await c.deliveries(),
            inbox=await c.inbox(),
            pushers=await c.pushers(),
            settings=c.settings,
            clock=self.clock,
            alarm=c.config_alarm(),
        )

    async def register(self, n: int, *, topic: str = APP, user: str = USER, **kw: Any) -> str:
        t = token(n)
        device = sandbox_device(user, t, at=self.now - timedelta(minutes=5), topic=topic, **kw)
        await (await self.c.device_registry()).register(device)
        return t

    async def tokens(self, user: str = USER) -> list[str]:
        return sorted(d.token for d in await (await self.c.device_registry()).list_for_user(user))

    def pushes(self, status: int | None = None) -> list[RequestRecord]:
        return [r for r in self.sim.requests() if status is None or r.status == status]

    def pushes_to(self, t: str) -> list[RequestRecord]:
        return [r for r in self.sim.requests() if r.token == t]


@pytest.fixture
async def stack(apns: ApnsSimulator, azurite: Azurite, table_prefix: str) -> AsyncIterator[Stack]:
    container = Container(app_settings(apns, azurite, table_prefix))
    try:
        yield Stack(container, apns)
    finally:
        await container.aclose()


# --- each event type, both schemas ----------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["chat_message_received.eventgrid.json", "chat_message_received.cloudevents.json"]
)
async def test_received_message_is_pushed_once_to_each_device(stack: Stack, name: str) -> None:
    await stack.register(1)
    await stack.register(2)
    await stack.handle(sample(name))
    assert sorted(r.token for r in stack.pushes(200)) == [token(1), token(2)]


async def test_received_push_is_an_alert_for_the_thread(stack: Stack) -> None:
    await stack.register(1)
    await stack.handle(RECEIVED)
    (push,) = stack.pushes()
    assert (push.headers["apns-push-type"], push.payload["aps"]["thread-id"]) == ("alert", THREAD)


@pytest.mark.parametrize(
    "name", ["chat_message_edited.eventgrid.json", "chat_message_edited.cloudevents.json"]
)
async def test_edited_message_replaces_the_banner(stack: Stack, name: str) -> None:
    await stack.register(1)
    await stack.handle(sample(name))
    assert [r.headers.get("apns-collapse-id") for r in stack.pushes(200)] == [MESSAGE]


@pytest.mark.parametrize(
    "name", ["chat_message_deleted.eventgrid.json", "chat_message_deleted.cloudevents.json"]
)
async def test_deleted_message_sends_a_background_push_naming_it(stack: Stack, name: str) -> None:
    await stack.register(1)
    await stack.handle(sample(name))
    (push,) = stack.pushes(200)
    assert (push.headers["apns-push-type"], push.headers["apns-priority"], push.payload) == (
        "background",
        "5",
        {"aps": {"content-available": 1}, "deleted": {"threadId": THREAD, "messageId": MESSAGE}},
    )


async def test_second_delete_within_the_background_budget_spacing_is_skipped(
    stack: Stack,
) -> None:
    await stack.register(1)
    await stack.handle(sample("chat_message_deleted.eventgrid.json"))
    await stack.handle(sample("chat_message_deleted.eventgrid.json", messageId="other"))
    assert len(stack.pushes()) == 1


@pytest.mark.parametrize(
    "name",
    [
        "chat_participant_removed_from_thread_with_user.eventgrid.json",
        "chat_thread_with_user_deleted.cloudevents.json",
    ],
)
async def test_thread_left_by_the_user_is_no_longer_pushed(stack: Stack, name: str) -> None:
    await stack.register(1)
    await stack.handle(sample(name))
    await stack.handle(RECEIVED)
    assert stack.pushes() == []


async def test_user_added_back_is_pushed_again(stack: Stack) -> None:
    await stack.register(1)
    await stack.handle(sample("chat_participant_removed_from_thread_with_user.eventgrid.json"))
    me = {"rawId": USER, "communicationUser": {"id": USER}}
    await stack.handle(
        sample(
            "chat_participant_added_to_thread_with_user.cloudevents.json",
            time="2030-01-01T00:00:00Z",
            participantAdded={"displayName": "Alice", "participantCommunicationIdentifier": me},
        )
    )
    await stack.handle(RECEIVED)
    assert len(stack.pushes(200)) == 1


@pytest.mark.parametrize(
    "name",
    [
        "chat_message_received_in_thread.eventgrid.json",
        "chat_message_received_phone_recipient.cloudevents.json",
        "chat_message_received_teams_recipient.eventgrid.json",
        "chat_thread_created.cloudevents.json",
    ],
)
async def test_events_without_an_acs_recipient_push_nothing(stack: Stack, name: str) -> None:
    await stack.register(1)
    summary = await stack.handle(sample(name))
    assert (stack.pushes(), summary.retry_needed) == ([], False)


async def test_malformed_event_is_acknowledged(stack: Stack) -> None:
    await stack.register(1)
    summary = await stack.handle(sample("chat_message_received.eventgrid.json", threadId=None))
    assert (summary.note, stack.pushes()) == ("malformed", [])


# --- several apps ---------------------------------------------------------------------------------


async def test_each_app_is_pushed_with_its_own_key(stack: Stack) -> None:
    await stack.register(1)
    await stack.register(2, topic=OTHER_APP)
    await stack.handle(RECEIVED)
    kids = {r.headers["apns-topic"]: r.jwt_header["kid"] for r in stack.pushes(200)}
    assert kids == {APP: KEY_ID, OTHER_APP: OTHER_KEY_ID}


async def test_certificate_app_is_pushed_over_certificate_auth(stack: Stack) -> None:
    await stack.register(3, topic=CERT_APP)
    await stack.handle(RECEIVED)
    # The connections that carried this test's pushes: the simulator's list also holds
    # connections a previous test's client has not closed yet (reset keeps open ones).
    used = {r.connection_id for r in stack.pushes(200)}
    auth = {c.auth for c in stack.sim.connections() if c.id in used}
    assert (len(stack.pushes(200)), auth) == (1, {"certificate"})


async def test_production_device_is_pushed_on_production(stack: Stack) -> None:
    await stack.register(1, environment=Environment.PRODUCTION)
    await stack.handle(RECEIVED)
    assert [r.environment for r in stack.pushes(200)] == ["production"]


# --- redelivery -----------------------------------------------------------------------------------


async def test_sequential_redelivery_pushes_each_device_once(stack: Stack) -> None:
    for n in (1, 2, 3):
        await stack.register(n)
    for _ in range(3):
        await stack.handle(RECEIVED)
    assert sorted(r.token for r in stack.pushes()) == [token(1), token(2), token(3)]


async def test_concurrent_redelivery_pushes_each_device_once(stack: Stack) -> None:
    for n in (1, 2, 3):
        await stack.register(n)
    await asyncio.gather(*(stack.handle(RECEIVED) for _ in range(6)))
    assert sorted(r.token for r in stack.pushes()) == [token(1), token(2), token(3)]


async def test_retryable_fault_releases_the_claim_for_the_redelivery(stack: Stack) -> None:
    first, second = await stack.register(1), await stack.register(2)
    stack.sim.add_fault(Fault(token=first, reason="ServiceUnavailable"))
    summary = await stack.handle(RECEIVED)
    states = {r.device.short_token[:6]: r.state for r in await stack_log(stack)}
    assert (summary.retry_needed, states) == (
        True,
        {first[:6]: DeliveryState.RELEASED, second[:6]: DeliveryState.DELIVERED},
    )


async def test_redelivery_after_a_retryable_fault_completes_only_the_unfinished(
    stack: Stack,
) -> None:
    first, second = await stack.register(1), await stack.register(2)
    stack.sim.add_fault(Fault(token=first, reason="ServiceUnavailable"))
    await stack.handle(RECEIVED)
    stack.sim.clear_faults()
    stack.now += timedelta(seconds=10)
    summary = await stack.handle(RECEIVED)
    ok = [r.token for r in stack.pushes(200)]
    assert (summary, sorted(ok)) == (
        PushSummary(devices=2, delivered=1, skipped=1),
        sorted([first, second]),
    )


async def test_no_answer_releases_the_claim(stack: Stack) -> None:
    await stack.register(1)
    stack.sim.add_fault(Fault(no_answer=True))
    summary = await stack.handle(RECEIVED)
    assert (summary.retry_needed, [r.state for r in await stack_log(stack)]) == (
        True,
        [DeliveryState.RELEASED],
    )


async def stack_log(stack: Stack) -> list[Any]:
    return await (await stack.c.deliveries()).history(USER, THREAD, MESSAGE)


# --- outcomes -------------------------------------------------------------------------------------


async def test_unregistered_device_is_removed(stack: Stack) -> None:
    gone = await stack.register(1)
    kept = await stack.register(2)
    stack.sim.unregister_device(gone)
    await stack.handle(RECEIVED)
    assert await stack.tokens() == [kept]


async def test_device_registered_again_after_the_410_is_kept(stack: Stack) -> None:
    t = await stack.register(1)
    long_ago = int((stack.now - timedelta(days=3)).timestamp() * 1000)
    stack.sim.unregister_device(t, at_ms=long_ago)
    await stack.handle(RECEIVED)
    assert await stack.tokens() == [t]


async def test_bad_device_token_is_counted_and_the_device_kept(stack: Stack) -> None:
    t = await stack.register(1)
    stack.sim.add_fault(Fault(token=t, reason="BadDeviceToken"))
    await stack.handle(RECEIVED)
    (device,) = await (await stack.c.device_registry()).list_for_user(USER)
    assert (device.bad_token_count, device.last_result) == (1, "BadDeviceToken")


async def test_bad_device_token_repeated_over_time_removes_the_device(stack: Stack) -> None:
    t = await stack.register(1)
    stack.sim.add_fault(Fault(token=t, reason="BadDeviceToken"))
    for n in range(stack.c.settings.bad_token_remove_after):
        await stack.handle(sample("chat_message_received.eventgrid.json", messageId=f"m{n}"))
        stack.now += timedelta(hours=1)
    assert await stack.tokens() == []


async def test_devices_of_many_users_rejected_together_are_kept(stack: Stack) -> None:
    users = [f"8:acs:res_{n:04d}" for n in range(stack.c.settings.config_error_threshold)]
    tokens = {u: await stack.register(n, user=u) for n, u in enumerate(users, start=1)}
    stack.sim.add_fault(Fault(reason="DeviceTokenNotForTopic"))
    for n in range(stack.c.settings.bad_token_remove_after):
        for u in users:
            me = {"rawId": u, "communicationUser": {"id": u}}
            event = sample(RECEIVED_FILE, messageId=f"m{n}", recipientCommunicationIdentifier=me)
            await stack.handle(event)
        stack.now += timedelta(hours=1)
    assert {u: await stack.tokens(u) for u in users} == {u: [t] for u, t in tokens.items()}


async def test_many_devices_of_one_user_rejected_together_are_removed(stack: Stack) -> None:
    for n in range(1, stack.c.settings.config_error_threshold + 1):
        await stack.register(n)
    stack.sim.add_fault(Fault(reason="DeviceTokenNotForTopic"))
    for n in range(stack.c.settings.bad_token_remove_after):
        await stack.handle(sample(RECEIVED_FILE, messageId=f"m{n}"))
        stack.now += timedelta(hours=1)
    assert await stack.tokens() == []


RECEIVED_FILE = "chat_message_received.eventgrid.json"


async def test_provider_token_refused_fails_the_invocation(stack: Stack) -> None:
    stack.sim.reset()  # forget the keys: every token is now invalid
    await stack.register(1)
    summary = await stack.handle(RECEIVED)
    assert (summary.retry_needed, [r.state for r in await stack_log(stack)]) == (
        True,
        [DeliveryState.RELEASED],
    )


async def test_delivery_log_shows_what_the_simulator_answered(stack: Stack) -> None:
    await stack.register(1)
    await stack.handle(RECEIVED)
    (record,) = await stack_log(stack)
    (push,) = stack.pushes()
    assert (record.state, record.status, record.apns_id) == (
        DeliveryState.DELIVERED,
        200,
        push.apns_id,
    )


# --- storage round trips --------------------------------------------------------------------------


async def round_trips_for(stack: Stack, devices: int, message: int) -> int:
    user = f"8:acs:res_{devices}_{message}"
    for n in range(devices):
        await stack.register(10 * devices + n, user=user)
    recipient = {"rawId": user, "communicationUser": {"id": user}}
    event = sample(
        "chat_message_received.eventgrid.json",
        messageId=str(message),
        recipientCommunicationIdentifier=recipient,
    )
    await stack.handle(event)  # warms the tables and connections
    event["data"]["messageId"] = str(message + 1)  # a new message: counted, so the inbox written
    before = round_trips()
    await stack.handle(event)
    return round_trips() - before


async def test_storage_round_trips_do_not_grow_with_the_devices(stack: Stack) -> None:
    one = await round_trips_for(stack, 1, 1613694358001)
    three = await round_trips_for(stack, 3, 1613694358003)
    assert (one, three) == (one, one)


# --- the delivery log command ---------------------------------------------------------------------


async def test_delivery_log_command_prints_the_outcome(
    stack: Stack, azurite: Azurite, table_prefix: str
) -> None:
    from devtools.delivery_log import main

    await stack.register(1)
    await stack.handle(RECEIVED)
    out = io.StringIO()
    args = ["--thread", THREAD, "--message", MESSAGE, "--user", USER]
    args += ["--storage", azurite.connection_string, "--prefix", table_prefix]
    status = await asyncio.to_thread(main, args, out)
    (push,) = stack.pushes()
    assert (status, "delivered" in out.getvalue(), str(push.apns_id) in out.getvalue()) == (
        0,
        True,
        True,
    )

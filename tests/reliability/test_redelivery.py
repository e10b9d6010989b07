"""Redelivery: every chat event delivered three times (some copies at once) through the local host.

Event Grid delivers at least once and resends a whole delivery when the webhook fails or is slow,
so the same event may arrive again while its first copy is still being pushed. The simulator
counts what APNs received: exactly one push per device and event, whatever the order of copies.
"""

from __future__ import annotations

import asyncio
import copy
import json
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from devtools.apns_simulator import ApnsSimulator
from devtools.azurite import Azurite
from tests.reliability.conftest import (
    EG_HEADERS,
    WEBHOOK,
    Served,
    app_env,
    device_token,
    raw_id,
    redeliver,
    sample_event,
    served_app,
    store_devices,
)

pytestmark = [pytest.mark.reliability, pytest.mark.e2e]

USERS = 12
THREAD = "19:redeliveryredeliveryredelivery0@thread.v2"
TEMPLATES = {
    "received.eventgrid": "chat_message_received.eventgrid.json",
    "received.cloudevents": "chat_message_received.cloudevents.json",
    "edited.eventgrid": "chat_message_edited.eventgrid.json",
    "edited.cloudevents": "chat_message_edited.cloudevents.json",
    "deleted.eventgrid": "chat_message_deleted.eventgrid.json",
    "deleted.cloudevents": "chat_message_deleted.cloudevents.json",
}


def kinds_for(user: int) -> list[str]:
    """Every kind, but one delete per user: withdraw pushes share the device's background budget
    (at most one per RENEWAL_MIN_SPACING_MINUTES), so a second one is rightly skipped."""
    skip = "deleted.cloudevents" if user % 2 else "deleted.eventgrid"
    return [k for k in TEMPLATES if k != skip]


def devices_of(user: int) -> list[str]:
    return [device_token(user, n) for n in range(1 + user % 3)]


def event_for(kind: str, user: int, seq: int) -> tuple[str, bytes]:
    """One event of ``kind`` to ``user`` with its own message id; (messageId, delivery body)."""
    event: dict[str, Any] = copy.deepcopy(sample_event(TEMPLATES[kind]))
    message = f"{1700000000000 + seq}"
    event["id"] = f"redelivery-{seq}"
    event["data"].update(
        messageId=message,
        threadId=THREAD,
        recipientCommunicationIdentifier={
            "rawId": raw_id(user),
            "communicationUser": {"id": raw_id(user)},
        },
    )
    body = event if "specversion" in event else [event]
    return message, json.dumps(body).encode()


@pytest.fixture(scope="module")
def served(sim: ApnsSimulator, azurite: Azurite) -> Iterator[Served]:
    env = app_env(azurite.connection_string, "r" + uuid.uuid4().hex[:12], sim=sim)
    asyncio.run(
        store_devices(
            env, [(raw_id(u), t, u % 2 == 0) for u in range(USERS) for t in devices_of(u)]
        )
    )
    with served_app(env) as served:
        yield served


async def deliver_three_times(base: str, bodies: dict[str, bytes]) -> dict[str, list[int]]:
    """Each body three times: a third all at once, a third two at once then one, a third in turn;
    then Event Grid-style redelivery of whatever was not acknowledged."""
    statuses: dict[str, list[int]] = {m: [] for m in bodies}
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:

        async def post(message: str) -> None:
            r = await client.post(WEBHOOK + "on_chat_event", content=bodies[message],
                                  headers=EG_HEADERS)  # fmt: skip
            statuses[message].append(r.status_code)

        async def three(i: int, message: str) -> None:
            if i % 3 == 0:
                await asyncio.gather(post(message), post(message), post(message))
            elif i % 3 == 1:
                await asyncio.gather(post(message), post(message))
                await post(message)
            else:
                for _ in range(3):
                    await post(message)

        await asyncio.gather(*(three(i, m) for i, m in enumerate(bodies)))
        unfinished = {m: bodies[m] for m, s in statuses.items() if 202 not in s}
        more = await redeliver(client, "on_chat_event", unfinished)
    for message, extra in more.items():
        statuses[message].extend(extra)
    return statuses


def test_every_event_three_times_pushes_each_device_exactly_once(
    served: Served, sim: ApnsSimulator, figures: dict[str, dict[str, Any]]
) -> None:
    mark = max((r.seq for r in sim.requests()), default=0)
    expected: Counter[tuple[str, str]] = Counter()
    bodies: dict[str, bytes] = {}
    for seq, (kind, user) in enumerate((k, u) for u in range(USERS) for k in kinds_for(u)):
        message, body = event_for(kind, user, seq)
        bodies[message] = body
        expected.update((token, message) for token in devices_of(user))

    statuses = asyncio.run(deliver_three_times(served.base, bodies))

    pushed = Counter(
        (r.token, str(r.payload.get("messageId") or r.payload.get("deleted", {}).get("messageId")))
        for r in sim.requests()
        if r.seq > mark and r.status == 200 and r.outcome == "answered"
    )
    figures["redelivery"] = {
        "events": len(bodies),
        "deliveries": sum(len(s) for s in statuses.values()),
        "answered_500_while_a_copy_was_in_flight": sum(s.count(500) for s in statuses.values()),
        "pushes_expected": len(expected),
        "pushes_received_by_apns": sum(pushed.values()),
        "lost": sum(1 for k in expected if pushed[k] == 0),
        "duplicated": sum(1 for k in expected if pushed[k] > 1),
    }
    assert pushed == expected


def test_a_fourth_copy_long_after_pushes_nobody(served: Served, sim: ApnsSimulator) -> None:
    message, body = event_for("received.eventgrid", 1, 10_000)
    asyncio.run(deliver_three_times(served.base, {message: body}))
    mark = max(r.seq for r in sim.requests())
    again = httpx.post(served.base + WEBHOOK + "on_chat_event", content=body, headers=EG_HEADERS,
                       timeout=30)  # fmt: skip
    assert (again.status_code, [r for r in sim.requests() if r.seq > mark]) == (202, [])


def test_alert_and_voip_pushes_share_a_connection_cleanly(
    served: Served, sim: ApnsSimulator
) -> None:
    """An incoming call between chat messages to the same user: VoIP and alert requests go out on
    one connection, each with its own headers once (the soak found a duplicated apns-push-type)."""
    voip = "d7" * 32
    asyncio.run(store_devices(served.env, [(raw_id(USERS + 1), voip, False)], kind="voip"))
    asyncio.run(store_devices(served.env, [(raw_id(USERS + 1), "d8" * 32, False)]))
    call: dict[str, Any] = copy.deepcopy(sample_event("incoming_call.eventgrid.json"))
    call["id"] = "mixed-call"
    call["eventTime"] = datetime.now(UTC).isoformat()
    call["data"]["to"] = {
        "rawId": raw_id(USERS + 1),
        "communicationUser": {"id": raw_id(USERS + 1)},
    }
    mark = max((r.seq for r in sim.requests()), default=0)
    bodies = [
        ("on_chat_event", event_for("received.eventgrid", USERS + 1, 20_000)[1]),
        ("on_call_event", json.dumps([call]).encode()),
        ("on_chat_event", event_for("received.eventgrid", USERS + 1, 20_001)[1]),
    ]

    async def post_in_turn() -> None:
        async with httpx.AsyncClient(base_url=served.base, timeout=30) as client:
            for n, (function, body) in enumerate(bodies):
                statuses = await redeliver(client, function, {str(n): body})
                assert statuses[str(n)][-1] == 202

    asyncio.run(post_in_turn())
    records = [r for r in sim.requests() if r.seq > mark]
    accepted = [r.headers["apns-push-type"] for r in records if r.status == 200]
    assert (accepted, [r.reason for r in records if r.status != 200]) == (
        ["alert", "voip", "alert"], [],
    )  # fmt: skip

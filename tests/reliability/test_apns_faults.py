"""APNs faults at a steady rate, then Event Grid-style redelivery: every device gets its push.

The simulator hits every 4th request with one fault kind. Events whose webhook answered 500 are
posted again after a short delay until all are acknowledged. Then every device must have had
its push accepted, and duplicates are counted two ways:

- *duplicated*: APNs answered 200 twice for one (device, message). The app never allows this
  when it saw the first answer, whatever the fault.
- *possible duplicate*: APNs received a request whose answer the app never saw (a stalled
  stream, or an answer after the client's deadline) and the push was sent again. Real APNs may
  have delivered both: the app cannot know, and the figure says how often it happens.
"""

from __future__ import annotations

import asyncio
import copy
import json
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from devtools.apns_simulator import ApnsSimulator, Fault, RequestRecord
from devtools.azurite import Azurite
from tests.reliability.conftest import (
    Served,
    app_env,
    device_token,
    raw_id,
    redeliver,
    register_app_key,
    sample_event,
    served_app,
    store_devices,
)

pytestmark = [pytest.mark.reliability, pytest.mark.e2e]

USERS = 16
TIMEOUT = 0.6  # APNS_REQUEST_TIMEOUT_SECONDS for this module
EVERY = 4
FAULTS = {
    "500": Fault(every=EVERY, status=500, reason="InternalServerError"),
    "503": Fault(every=EVERY, reason="ServiceUnavailable"),
    "429": Fault(every=EVERY, reason="TooManyRequests"),
    "GOAWAY": Fault(every=EVERY, goaway="Shutdown"),
    "connection close": Fault(every=EVERY, close_connection=True),
    "stalled stream": Fault(every=EVERY, no_answer=True),
    "answer after the deadline": Fault(every=EVERY, delay=TIMEOUT + 0.4),
    "REFUSED_STREAM": Fault(every=EVERY, refuse_stream=True),
    "ExpiredProviderToken": Fault(every=EVERY, reason="ExpiredProviderToken"),
    "TooManyProviderTokenUpdates": Fault(every=EVERY, reason="TooManyProviderTokenUpdates"),
}
UNSEEN_ANSWER = {"stalled stream", "answer after the deadline"}
DROPS_CONNECTION = {"connection close"}


def count_pushes(
    records: list[RequestRecord], fault_id: str, name: str, expected: set[tuple[str, str]]
) -> dict[str, int]:
    """Lost, duplicated and possible duplicates of the ``expected`` (token, messageId) pairs.

    A 200 written on a connection the fault then dropped may never have reached the app (the
    connection was closed with the answer unread): a second push after it is a possible
    duplicate, like one after a stalled stream or a late answer. Two 200s otherwise are a real
    duplicate.
    """
    dropped = {r.connection_id for r in records if r.fault_id == fault_id}
    answered: dict[tuple[str, str], list[RequestRecord]] = {k: [] for k in expected}
    unseen: Counter[tuple[str, str]] = Counter()
    for r in records:
        key = (
            r.token or "",
            str(r.payload.get("messageId")) if isinstance(r.payload, dict) else "",
        )
        if r.status != 200 or key not in answered:
            continue
        if r.fault_id == fault_id and name in UNSEEN_ANSWER:
            unseen[key] += 1
        elif r.outcome == "answered":
            answered[key].append(r)
    lost = duplicated = possible = 0
    for key, got in answered.items():
        earlier_unread = name in DROPS_CONNECTION and any(
            r.connection_id in dropped for r in got[:-1]
        )
        lost += not got
        duplicated += len(got) > 1 and not earlier_unread
        possible += bool(got) and (unseen[key] > 0 or earlier_unread)
    return {"lost": lost, "duplicated": duplicated, "possible_duplicates": possible}


def devices_of(user: int) -> list[str]:
    return [device_token(user, n) for n in range(1 + user % 2)]


@pytest.fixture(scope="module")
def served(sim: ApnsSimulator, azurite: Azurite) -> Iterator[Served]:
    env = app_env(
        azurite.connection_string,
        "f" + uuid.uuid4().hex[:12],
        sim=sim,
        APNS_REQUEST_TIMEOUT_SECONDS=str(TIMEOUT),
        APNS_RETRY_BUDGET_SECONDS="1.0",
    )
    devices = [(raw_id(u), t, u % 2 == 0) for u in range(USERS) for t in devices_of(u)]
    asyncio.run(store_devices(env, devices))
    with served_app(env) as served:
        yield served


def events(tag: str) -> dict[str, bytes]:
    """One ChatMessageReceived per user; message ids unique to ``tag``."""
    template = sample_event("chat_message_received.eventgrid.json")
    out: dict[str, bytes] = {}
    for user in range(USERS):
        e: dict[str, Any] = copy.deepcopy(template)
        message = f"{tag}-{user}"
        e["id"] = f"fault-{message}"
        e["data"].update(
            messageId=message,
            recipientCommunicationIdentifier={
                "rawId": raw_id(user),
                "communicationUser": {"id": raw_id(user)},
            },
        )
        out[message] = json.dumps([e]).encode()
    return out


async def post_all(base: str, bodies: dict[str, bytes]) -> dict[str, list[int]]:
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        return await redeliver(client, "on_chat_event", bodies, delay=0.2, rounds=40)


@pytest.mark.parametrize("name", list(FAULTS))
def test_every_device_gets_its_push_despite_the_fault(
    name: str, served: Served, sim: ApnsSimulator, figures: dict[str, dict[str, Any]]
) -> None:
    mark = max((r.seq for r in sim.requests()), default=0)
    fault_id = sim.add_fault(FAULTS[name])
    tag = uuid.uuid4().hex[:8]
    bodies = events(tag)
    try:
        statuses = asyncio.run(post_all(served.base, bodies))
    finally:
        sim.clear_faults()
    records = [r for r in sim.requests() if r.seq > mark]
    expected = {(t, f"{tag}-{u}") for u in range(USERS) for t in devices_of(u)}
    tally = count_pushes(records, fault_id, name, expected)
    hits = sum(1 for r in records if r.fault_id == fault_id)
    figures[f"apns fault: {name}"] = {
        "pushes_expected": len(expected),
        "apns_requests": len(records),
        "faults_hit": hits,
        "webhook_500s_redelivered": sum(s.count(500) for s in statuses.values()),
        **tally,
    }
    assert hits > 0, "the fault never fired: the test proves nothing"
    assert all(s[-1] == 202 for s in statuses.values())
    assert (tally["lost"], tally["duplicated"]) == (0, 0)


def test_a_request_that_timed_out_after_reaching_apns_is_sent_again(
    served: Served, sim: ApnsSimulator, figures: dict[str, dict[str, Any]]
) -> None:
    """The measured duplicate risk: every push whose answer came after the deadline was sent
    again (the app cannot tell "not received" from "received, answer lost")."""
    mark = max((r.seq for r in sim.requests()), default=0)
    fault_id = sim.add_fault(Fault(every=EVERY, delay=TIMEOUT + 0.4))
    tag = uuid.uuid4().hex[:8]
    try:
        asyncio.run(post_all(served.base, events(tag)))
    finally:
        sim.clear_faults()
    records = [r for r in sim.requests() if r.seq > mark]
    late = {(r.token, str(r.payload["messageId"])) for r in records if r.fault_id == fault_id}
    resent = {
        (r.token, str(r.payload["messageId"]))
        for r in records
        if r.fault_id != fault_id and r.outcome == "answered" and r.status == 200
    }
    figures["timed-out request reached APNs"] = {
        "late_answers": len(late),
        "sent_again": len(late & resent),
        "duplicate_rate": round(len(late & resent) / len(late), 2) if late else None,
    }
    assert late and late <= resent


def test_the_simulator_is_clean_between_tests(sim: ApnsSimulator) -> None:
    sim.reset()
    register_app_key(sim)
    assert sim.requests() == []

"""The client's fault handling against the simulator, where a plain "it got through" is too weak.

A GOAWAY'd or refused stream gets through even when the client mistakes it for a lost one (it
backs off, then resends), so these tests pin *how* it gets through: at once, without back-off.
The others pin what the simulator makes observable only with a scripted order of events (a
lowered stream limit, a provider token APNs' clock calls expired, a budget shorter than the
per-request timeout).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from devtools.apns_simulator import ApnsSimulator, Fault
from shared.apns.errors import ApnsUnavailable
from shared.apns.notification import Environment, Notification, PushType
from shared.apns.payload import alert_payload, encode_payload
from shared.apns.response import Reason
from tests.integration.apns.conftest import TOPIC

pytestmark = pytest.mark.integration

SANDBOX = Environment.SANDBOX
TOKEN = "fedcba9876543210" * 4


def alert() -> Notification:
    payload = encode_payload(alert_payload(title="Ann", body="hi", thread_id="t1"))
    return Notification(device_token=TOKEN, topic=TOPIC, push_type=PushType.ALERT, payload=payload)


class Sleeps:
    """The client's ``sleep``: records every back-off it takes, then really waits."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        await asyncio.sleep(seconds)


class SkewedClocks:
    """Our monotonic and wall clocks, moved by hand; the simulator's clock moves separately."""

    def __init__(self) -> None:
        self.offset = 0.0

    def mono(self) -> float:
        return time.monotonic() + self.offset

    def wall(self) -> float:
        return time.time() + self.offset


def connection_ids(sim: ApnsSimulator) -> list[int]:
    return [r.connection_id for r in sim.requests()]


async def test_goaway_stream_is_resent_at_once_on_a_new_connection(
    sim: ApnsSimulator, make_client: Any
) -> None:
    sleeps = Sleeps()
    client = make_client(sleep=sleeps)
    assert (await client.send(alert(), environment=SANDBOX)).ok
    sim.add_fault(Fault(goaway="Shutdown", times=1))
    result = await client.send(alert(), environment=SANDBOX)
    assert result.ok and result.attempts == 2
    first, goaway, resent = connection_ids(sim)
    assert first == goaway != resent
    # Above last_stream_id means unprocessed: no back-off (a client that waited for the
    # connection to drop would see an ambiguous loss and back off first).
    assert sleeps.delays == []


async def test_refused_stream_is_resent_at_once(sim: ApnsSimulator, make_client: Any) -> None:
    sleeps = Sleeps()
    client = make_client(sleep=sleeps)
    assert (await client.send(alert(), environment=SANDBOX)).ok
    sim.add_fault(Fault(refuse_stream=True, times=1))
    result = await client.send(alert(), environment=SANDBOX)
    assert result.ok and result.attempts == 2
    assert [r.outcome for r in sim.requests()] == ["answered", "reset", "answered"]
    assert sleeps.delays == []


async def test_lowered_stream_limit_is_obeyed_by_later_pushes(
    sim: ApnsSimulator, make_client: Any
) -> None:
    client = make_client(connections=1)
    assert (await client.send(alert(), environment=SANDBOX)).ok  # limit raised to 1000
    sim.add_fault(Fault(max_concurrent_streams=2, times=1))
    assert (await client.send(alert(), environment=SANDBOX)).ok  # SETTINGS: 2, then the answer
    # Answers held back a little, so streams stay open and the simulator sees them overlap.
    sim.add_fault(Fault(delay=0.03))
    results = await client.send_many([alert() for _ in range(20)], environment=SANDBOX)
    assert all(getattr(r, "ok", False) for r in results)
    # A client ignoring the SETTINGS opens 20 streams at once and the simulator refuses 18.
    assert [r.outcome for r in sim.requests()] == ["answered"] * 22
    (conn,) = [c for c in sim.connections() if c.id in set(connection_ids(sim))]
    assert conn.max_concurrent_streams == 2


async def test_expired_provider_token_is_signed_afresh_on_a_new_connection(
    sim: ApnsSimulator, make_client: Any
) -> None:
    clocks = SkewedClocks()
    client = make_client(
        clock=clocks.mono, wall_clock=clocks.wall, idle_timeout=10_000.0, ping_after=10_000.0
    )
    assert (await client.send(alert(), environment=SANDBOX)).ok
    # 46 minutes pass for us (under the 50-minute re-signing) but 61 for APNs, whose clock
    # is 15 minutes ahead: APNs calls the connection's token expired.
    clocks.offset += 46 * 60
    sim.advance(61 * 60)
    result = await client.send(alert(), environment=SANDBOX)
    assert result.ok and result.attempts == 2
    records = sim.requests()
    assert [(r.status, r.reason) for r in records] == [
        (200, None),
        (403, "ExpiredProviderToken"),
        (200, None),
    ]
    assert records[0].connection_id == records[1].connection_id != records[2].connection_id
    iats = [r.jwt_claims["iat"] if r.jwt_claims else None for r in records]
    assert iats[0] == iats[1] and iats[2] is not None and iats[2] - iats[0] >= 46 * 60


async def test_provider_token_expired_on_the_new_connection_too_is_returned(
    sim: ApnsSimulator, make_client: Any
) -> None:
    sim.add_fault(Fault(reason="ExpiredProviderToken", times=2))
    result = await make_client().send(alert(), environment=SANDBOX)
    assert result.reason is Reason.EXPIRED_PROVIDER_TOKEN and result.attempts == 2
    assert len(set(connection_ids(sim))) == 2


async def test_too_many_token_updates_retries_on_a_new_connection_without_resigning_early(
    sim: ApnsSimulator, make_client: Any
) -> None:
    client = make_client()
    assert (await client.send(alert(), environment=SANDBOX)).ok
    sim.add_fault(Fault(reason="TooManyProviderTokenUpdates", times=1))
    result = await client.send(alert(), environment=SANDBOX)
    assert result.ok and result.attempts == 2
    first, rejected, retried = connection_ids(sim)
    assert first == rejected != retried
    assert all(c.rejected_token_updates == 0 for c in sim.connections())


async def test_no_answer_gives_up_at_the_budget_not_after_every_request_timeout(
    sim: ApnsSimulator, make_client: Any
) -> None:
    sim.add_fault(Fault(no_answer=True))
    client = make_client(request_timeout=2.0)
    started = time.monotonic()
    with pytest.raises(ApnsUnavailable) as caught:
        await client.send(alert(), environment=SANDBOX, budget=0.4)
    assert time.monotonic() - started < 1.5  # 5 attempts x 2 s if the budget were ignored
    assert caught.value.attempts == 1
    assert [r.outcome for r in sim.requests()] == ["no_answer"]

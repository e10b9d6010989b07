"""The APNs client over real HTTP/2 + TLS against the validating APNs simulator."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from devtools.apns_simulator import ApnsSimulator, ConnectionRecord, Fault
from shared.apns.certificate import CertificateCredential
from shared.apns.errors import ApnsUnavailable
from shared.apns.notification import Environment, Notification, Priority, PushType
from shared.apns.payload import alert_payload, background_payload, encode_payload
from shared.apns.response import RETRYABLE_REASONS, Reason
from tests.integration.apns.conftest import KEY_ID, TEAM_ID, TOPIC

pytestmark = pytest.mark.integration

SANDBOX = Environment.SANDBOX
PRODUCTION = Environment.PRODUCTION
TOKEN = "0123456789abcdef" * 4


def alert(**changes: Any) -> Notification:
    values: dict[str, Any] = {
        "device_token": TOKEN,
        "topic": TOPIC,
        "push_type": PushType.ALERT,
        "payload": encode_payload(alert_payload(title="Ann", body="hi", thread_id="t1")),
    }
    values.update(changes)
    return Notification(**values)


def connection_ids(sim: ApnsSimulator) -> list[int]:
    return [r.connection_id for r in sim.requests()]


def used_connections(sim: ApnsSimulator) -> list[ConnectionRecord]:
    """Connections that carried this test's requests (earlier tests' may still be closing)."""
    ids = set(connection_ids(sim))
    return [c for c in sim.connections() if c.id in ids]


# --- the happy path, over HTTP/2 ----------------------------------------------------------


async def test_alert_is_accepted_over_http2_with_a_valid_token(
    sim: ApnsSimulator, make_client: Any
) -> None:
    client = make_client()
    result = await client.send(alert(collapse_id="m1", expiration=0), environment=SANDBOX)
    assert result.ok and result.apns_unique_id
    (record,) = sim.requests()
    assert (record.status, record.outcome, record.stream_id % 2) == (200, "answered", 1)
    assert record.apns_id == result.apns_id
    assert record.jwt_claims is not None and record.jwt_claims["iss"] == TEAM_ID
    assert record.jwt_header is not None and record.jwt_header["kid"] == KEY_ID
    assert record.headers["apns-collapse-id"] == "m1"
    assert record.payload == {"aps": {"alert": {"title": "Ann", "body": "hi"}, "thread-id": "t1"}}
    (conn,) = client._pools[SANDBOX]._conns
    assert conn.alpn == "h2"


async def test_production_answers_without_unique_id(sim: ApnsSimulator, make_client: Any) -> None:
    result = await make_client().send(alert(), environment=PRODUCTION)
    assert result.ok and result.apns_unique_id is None
    assert sim.requests()[0].environment == "production"


async def test_background_push_passes_apple_rules(sim: ApnsSimulator, make_client: Any) -> None:
    n = alert(push_type=PushType.BACKGROUND, payload=encode_payload(background_payload({"m": 1})))
    assert (await make_client().send(n, environment=SANDBOX)).ok
    assert sim.requests()[0].headers["apns-priority"] == "5"


async def test_voip_payload_of_5120_bytes_is_accepted(sim: ApnsSimulator, make_client: Any) -> None:
    body = b'{"x":"' + b"v" * 5112 + b'"}'
    n = alert(
        push_type=PushType.VOIP, topic=TOPIC + ".voip", payload=body, priority=Priority.IMMEDIATE
    )
    client = make_client(connections=1)
    results = await asyncio.gather(*(client.send(n, environment=SANDBOX) for _ in range(20)))
    assert all(r.ok for r in results)
    assert {r.raw_size for r in sim.requests()} == {5120}


async def test_many_large_payloads_flow_through_one_connection(
    sim: ApnsSimulator, make_client: Any
) -> None:
    client = make_client(connections=1)
    body = b'{"x":"' + b"a" * 4080 + b'"}'
    results = await client.send_many([alert(payload=body) for _ in range(60)], environment=SANDBOX)
    assert all(getattr(r, "ok", False) for r in results)
    assert len({r.connection_id for r in sim.requests()}) == 1


async def test_first_stream_goes_alone_then_many(sim: ApnsSimulator, make_client: Any) -> None:
    client = make_client(connections=1)
    results = await client.send_many([alert() for _ in range(50)], environment=SANDBOX)
    assert all(getattr(r, "ok", False) for r in results)
    assert {r.outcome for r in sim.requests()} == {"answered"}
    assert len(used_connections(sim)) == 1


# --- environments -------------------------------------------------------------------------


async def test_tokens_are_routed_to_their_environment(sim: ApnsSimulator, make_client: Any) -> None:
    sim.strict_devices = True
    sim.register_device(TOKEN, environment="sandbox")
    client = make_client()
    wrong = await client.send(alert(), environment=PRODUCTION)
    right = await client.send(alert(), environment=SANDBOX)
    assert (wrong.status, wrong.reason, wrong.permanent) == (400, Reason.BAD_DEVICE_TOKEN, True)
    assert right.ok
    assert [r.environment for r in sim.requests()] == ["production", "sandbox"]


# --- every reason class -------------------------------------------------------------------

PERMANENT = sorted(
    r.value
    for r in Reason
    if r not in RETRYABLE_REASONS
    and r is not Reason.UNKNOWN
    and r.value
    not in {
        "FeatureNotEnabled",
        "MissingChannelId",
        "BadChannelId",
        "ChannelNotRegistered",
        "BadRequestParams",
        "BadRequestPayload",
        "MissingPushType",
        "CannotCreateChannelConfig",
        "TopicMismatch",
    }
)


@pytest.mark.parametrize("reason", PERMANENT)
async def test_permanent_rejections_are_values_sent_once(
    sim: ApnsSimulator, make_client: Any, reason: str
) -> None:
    sim.add_fault(Fault(reason=reason, times=1))
    result = await make_client().send(alert(), environment=SANDBOX)
    assert result.reason == reason and result.permanent
    assert result.attempts == 1 and len(sim.requests()) == 1


@pytest.mark.parametrize("reason", ["TooManyRequests", "InternalServerError", "ServiceUnavailable"])
async def test_load_rejections_are_retried_on_the_same_connection(
    sim: ApnsSimulator, make_client: Any, reason: str
) -> None:
    sim.add_fault(Fault(reason=reason, times=1))
    result = await make_client().send(alert(), environment=SANDBOX)
    assert result.ok and result.attempts == 2
    ids = connection_ids(sim)
    assert ids[0] == ids[1]
    assert len({r.apns_id for r in sim.requests()}) == 1


@pytest.mark.parametrize(
    "reason",
    [
        "ExpiredProviderToken",
        "TooManyProviderTokenUpdates",
        "UnrelatedKeyIdInToken",
        "IdleTimeout",
        "Shutdown",
    ],
)
async def test_connection_rejections_move_to_a_new_connection(
    sim: ApnsSimulator, make_client: Any, reason: str
) -> None:
    sim.add_fault(Fault(reason=reason, times=1))
    result = await make_client().send(alert(), environment=SANDBOX)
    assert result.ok and result.attempts == 2
    first, second = connection_ids(sim)
    assert first != second


async def test_unregistered_device_returns_410_with_its_timestamp(
    sim: ApnsSimulator, make_client: Any
) -> None:
    sim.unregister_device(TOKEN, at_ms=1_700_000_000_000)
    result = await make_client().send(alert(), environment=SANDBOX)
    assert (result.status, result.reason) == (410, Reason.UNREGISTERED)
    assert result.unregistered_at == datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)


async def test_device_registered_for_another_topic(sim: ApnsSimulator, make_client: Any) -> None:
    sim.strict_devices = True
    sim.register_device(TOKEN, environment="sandbox", topics=["com.example.other"])
    result = await make_client().send(alert(), environment=SANDBOX)
    assert result.reason is Reason.DEVICE_TOKEN_NOT_FOR_TOPIC and result.permanent


async def test_topic_outside_the_key_is_rejected(
    sim: ApnsSimulator, make_client: Any, p8: tuple[str, str]
) -> None:
    sim.reset()
    sim.register_key(KEY_ID, TEAM_ID, p8[1], topics=["com.example.other"])
    result = await make_client().send(alert(), environment=SANDBOX)
    assert result.status == 403 and result.permanent


# --- token rotation -----------------------------------------------------------------------


class Clocks:
    """Our monotonic and wall clocks, moved together with the simulator's clock."""

    def __init__(self, sim: ApnsSimulator) -> None:
        self.sim = sim
        self.offset = 0.0

    def mono(self) -> float:
        return time.monotonic() + self.offset

    def wall(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds
        self.sim.advance(seconds)


async def test_token_is_renewed_on_the_same_connection_after_fifty_minutes(
    sim: ApnsSimulator, make_client: Any
) -> None:
    clocks = Clocks(sim)
    sim.set_time(time.time())
    client = make_client(
        clock=clocks.mono, wall_clock=clocks.wall, idle_timeout=10_000.0, ping_after=10_000.0
    )
    results = []
    for step in (0, 19 * 60, 11 * 60, 21 * 60):
        clocks.advance(step)
        results.append(await client.send(alert(), environment=SANDBOX))
    assert all(r.ok for r in results)
    (conn,) = used_connections(sim)
    assert (conn.token_changes, conn.rejected_token_updates) == (1, 0)
    iats = [r.jwt_claims["iat"] for r in sim.requests() if r.jwt_claims]
    assert iats[0] == iats[1] == iats[2] < iats[3]


async def test_expired_token_gets_one_retry_on_a_fresh_connection(
    sim: ApnsSimulator, make_client: Any
) -> None:
    sim.advance(2 * 3600)  # APNs' clock is ahead: every token we sign looks two hours old
    result = await make_client().send(alert(), environment=SANDBOX)
    assert result.reason is Reason.EXPIRED_PROVIDER_TOKEN and result.attempts == 2
    assert len(set(connection_ids(sim))) == 2


# --- scripted faults ----------------------------------------------------------------------


async def test_refused_stream_is_resent(sim: ApnsSimulator, make_client: Any) -> None:
    sim.add_fault(Fault(refuse_stream=True, times=1))
    result = await make_client().send(alert(), environment=SANDBOX)
    assert result.ok and result.attempts == 2
    assert [r.outcome for r in sim.requests()] == ["reset", "answered"]


async def test_goaway_resends_on_a_new_connection(sim: ApnsSimulator, make_client: Any) -> None:
    client = make_client()
    await client.send(alert(), environment=SANDBOX)
    sim.add_fault(Fault(goaway="Shutdown", times=1))
    result = await client.send(alert(), environment=SANDBOX)
    assert result.ok and result.attempts == 2
    ids = connection_ids(sim)
    assert ids[0] == ids[1] != ids[2]
    assert used_connections(sim)[0].goaway_reason == "Shutdown"


async def test_dropped_connection_fails_every_stream_and_all_are_retried(
    sim: ApnsSimulator, make_client: Any
) -> None:
    client = make_client(connections=1)
    await client.send(alert(), environment=SANDBOX)
    sim.add_fault(Fault(nth=10, close_connection=True, times=1))
    results = await client.send_many([alert() for _ in range(30)], environment=SANDBOX)
    assert all(getattr(r, "ok", False) for r in results)
    assert len(used_connections(sim)) >= 2


async def test_stream_without_answer_times_out_and_is_resent(
    sim: ApnsSimulator, make_client: Any
) -> None:
    sim.add_fault(Fault(no_answer=True, times=1))
    client = make_client(request_timeout=0.3)
    result = await client.send(alert(), environment=SANDBOX)
    assert result.ok and result.attempts == 2
    ids = connection_ids(sim)
    assert len(set(ids)) == 2  # the silent connection was recycled


async def test_slow_answer_inside_the_timeout_is_waited_for(
    sim: ApnsSimulator, make_client: Any
) -> None:
    sim.add_fault(Fault(delay=0.2, times=1))
    result = await make_client(request_timeout=2.0).send(alert(), environment=SANDBOX)
    assert result.ok and result.attempts == 1


async def test_no_answer_ever_raises_unavailable_within_budget(
    sim: ApnsSimulator, make_client: Any
) -> None:
    sim.add_fault(Fault(no_answer=True))
    client = make_client(request_timeout=0.2)
    started = time.monotonic()
    with pytest.raises(ApnsUnavailable):
        await client.send(alert(), environment=SANDBOX, budget=1.0)
    assert time.monotonic() - started < 2.0


async def test_stream_limit_lowered_to_one_is_obeyed(sim: ApnsSimulator, make_client: Any) -> None:
    client = make_client(connections=1)
    await client.send(alert(), environment=SANDBOX)
    sim.add_fault(Fault(max_concurrent_streams=1, times=1))
    results = await client.send_many([alert() for _ in range(40)], environment=SANDBOX)
    assert all(getattr(r, "ok", False) for r in results)
    assert {r.outcome for r in sim.requests()} == {"answered"}


# --- certificate auth ---------------------------------------------------------------------


async def test_certificate_auth_is_accepted(sim: ApnsSimulator, make_client: Any) -> None:
    p12 = sim.make_client_certificate(TOPIC, password=b"pw")
    client = make_client(credential=CertificateCredential(p12, b"pw"))
    assert client.not_after is not None and client.not_after > datetime.now(UTC)
    voip = alert(push_type=PushType.VOIP, topic=TOPIC + ".voip")
    assert (await client.send(alert(), environment=SANDBOX)).ok
    assert (await client.send(voip, environment=SANDBOX)).ok
    assert {c.auth for c in used_connections(sim)} == {"certificate"}
    assert "authorization" not in sim.requests()[0].headers


async def test_certificate_for_another_topic_is_bad_topic(
    sim: ApnsSimulator, make_client: Any
) -> None:
    p12 = sim.make_client_certificate("com.example.other", password=None)
    result = await make_client(credential=CertificateCredential(p12)).send(
        alert(), environment=SANDBOX
    )
    assert result.reason is Reason.BAD_TOPIC and result.permanent


async def test_expired_certificate_is_bad_certificate(sim: ApnsSimulator, make_client: Any) -> None:
    expired = datetime.fromtimestamp(sim.now(), UTC) - timedelta(days=1)
    p12 = sim.make_client_certificate(TOPIC, not_after=expired, password=None)
    result = await make_client(credential=CertificateCredential(p12)).send(
        alert(), environment=SANDBOX
    )
    assert (result.status, result.reason) == (403, Reason.BAD_CERTIFICATE)

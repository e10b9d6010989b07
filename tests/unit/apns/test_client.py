"""The APNs client against an in-memory HTTP/2 APNs: outcomes, retries, HTTP/2 rules."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import jwt
import pytest

from shared.apns.client import ApnsClient, ApnsConfig
from shared.apns.errors import ApnsUnavailable, NotificationError
from shared.apns.notification import Environment, Notification, Priority, PushType
from shared.apns.payload import alert_payload, background_payload, encode_payload
from shared.apns.response import Reason
from shared.apns.token import TokenCredential
from tests.fakes.apns_server import Act, FakeApnsServer, let_traffic_flow
from tests.unit.apns.keys import new_p8

pytestmark = pytest.mark.unit

SANDBOX = Environment.SANDBOX
PRIVATE, PUBLIC = new_p8()
CREDENTIAL = TokenCredential("KEY1234567", "TEAM123456", PRIVATE)
TOKEN = "ab" * 32


@dataclass
class Clock:
    """Monotonic and wall clocks that move only when a test (or a fake sleep) moves them."""

    now: float = 1000.0
    wall: float = 1_700_000_000.0
    sleeps: list[float] = field(default_factory=list)

    def __call__(self) -> float:
        return self.now

    def wall_clock(self) -> float:
        return self.wall

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.wall += seconds

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.advance(seconds)
        await asyncio.sleep(0)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def fake() -> FakeApnsServer:
    return FakeApnsServer()


@pytest.fixture
async def make(fake: FakeApnsServer, clock: Clock) -> AsyncIterator[Any]:
    clients: list[ApnsClient] = []

    def build(**overrides: Any) -> ApnsClient:
        settings: dict[str, Any] = {
            "credential": CREDENTIAL,
            "sandbox_origin": "https://sandbox.test:443",
            "production_origin": "https://production.test:2197",
            "opener": fake.opener,
            "clock": clock,
            "sleep": clock.sleep,
            "random": lambda: 0.5,
            "wall_clock": clock.wall_clock,
            "request_timeout": 5.0,
            "connect_timeout": 2.0,
        }
        settings.update(overrides)
        client = ApnsClient(ApnsConfig(**settings))
        clients.append(client)
        return client

    yield build
    for client in clients:
        await client.aclose()


def alert(**changes: Any) -> Notification:
    values: dict[str, Any] = {
        "device_token": TOKEN,
        "topic": "com.example.chat",
        "push_type": PushType.ALERT,
        "payload": encode_payload(alert_payload(title="Ann", body="hi")),
    }
    values.update(changes)
    return Notification(**values)


def jwt_of(headers: dict[str, str]) -> str:
    return headers["authorization"].removeprefix("bearer ")


# --- a plain push -------------------------------------------------------------------------


async def test_accepted_push_is_ok_with_the_apns_id(make: Any, fake: FakeApnsServer) -> None:
    client = make()
    result = await client.send(
        alert(apns_id="0a0b0c0d-0000-4000-8000-000000000001"), environment=SANDBOX
    )
    assert result.ok and result.attempts == 1
    assert result.apns_id == "0a0b0c0d-0000-4000-8000-000000000001"
    request = fake.received[0]
    assert request.headers[":path"] == f"/3/device/{TOKEN}"
    assert request.headers[":method"] == "POST"
    assert request.headers["apns-topic"] == "com.example.chat"
    assert request.headers["apns-push-type"] == "alert"
    assert request.json == {"aps": {"alert": {"title": "Ann", "body": "hi"}}}


async def test_request_carries_a_valid_provider_token(
    make: Any, fake: FakeApnsServer, clock: Clock
) -> None:
    await make().send(alert(), environment=SANDBOX)
    token = jwt_of(fake.received[0].headers)
    claims = jwt.decode(token, PUBLIC, algorithms=["ES256"], options={"verify_iat": False})
    assert claims == {"iss": "TEAM123456", "iat": int(clock.wall)}
    assert jwt.get_unverified_header(token)["kid"] == "KEY1234567"


async def test_path_and_authorization_are_never_indexed(make: Any, fake: FakeApnsServer) -> None:
    client = make()
    await client.send(alert(), environment=SANDBOX)
    await client.send(alert(), environment=SANDBOX)
    assert {":path", "authorization", "apns-id"} <= fake.received[1].never_indexed
    assert "apns-topic" not in fake.received[1].never_indexed
    assert fake.received[1].headers["apns-topic"] == "com.example.chat"


async def test_generated_apns_id_is_a_fresh_lowercase_uuid(make: Any, fake: FakeApnsServer) -> None:
    client = make()
    first = await client.send(alert(), environment=SANDBOX)
    second = await client.send(alert(), environment=SANDBOX)
    assert first.apns_id != second.apns_id
    assert fake.received[0].headers["apns-id"] == first.apns_id
    assert first.apns_id == first.apns_id.lower()


async def test_optional_headers_are_sent_when_set(make: Any, fake: FakeApnsServer) -> None:
    n = alert(priority=Priority.CONSIDERATE, expiration=0, collapse_id="msg-1")
    await make().send(n, environment=SANDBOX)
    headers = fake.received[0].headers
    assert (headers["apns-priority"], headers["apns-expiration"], headers["apns-collapse-id"]) == (
        "5",
        "0",
        "msg-1",
    )


async def test_background_push_without_priority_goes_out_with_5(
    make: Any, fake: FakeApnsServer
) -> None:
    n = alert(push_type=PushType.BACKGROUND, payload=encode_payload(background_payload()))
    await make().send(n, environment=SANDBOX)
    assert fake.received[0].headers["apns-priority"] == "5"


async def test_alert_without_priority_leaves_the_header_out(
    make: Any, fake: FakeApnsServer
) -> None:
    await make().send(alert(), environment=SANDBOX)
    assert "apns-priority" not in fake.received[0].headers


async def test_invalid_notification_is_refused_before_sending(
    make: Any, fake: FakeApnsServer
) -> None:
    with pytest.raises(NotificationError):
        await make().send(alert(device_token="xyz"), environment=SANDBOX)
    assert fake.received == [] and fake.opened_to == []


async def test_environments_go_to_their_own_origins(make: Any, fake: FakeApnsServer) -> None:
    client = make()
    await client.send(alert(), environment=Environment.PRODUCTION)
    await client.send(alert(), environment=Environment.SANDBOX)
    assert fake.opened_to == [("production.test", 2197), ("sandbox.test", 443)]
    assert fake.received[0].headers[":authority"] == "production.test:2197"


async def test_connection_opens_lazily_and_is_reused(make: Any, fake: FakeApnsServer) -> None:
    client = make()
    assert fake.opened_to == []
    for _ in range(3):
        await client.send(alert(), environment=SANDBOX)
    assert len(fake.connections) == 1


# --- rejections are values ----------------------------------------------------------------


async def test_bad_device_token_is_a_permanent_value_not_retried(
    make: Any, fake: FakeApnsServer
) -> None:
    fake.then(Act(400, "BadDeviceToken"))
    result = await make().send(alert(), environment=SANDBOX)
    assert (result.status, result.reason, result.permanent) == (400, Reason.BAD_DEVICE_TOKEN, True)
    assert len(fake.received) == 1


async def test_unregistered_carries_its_timestamp(make: Any, fake: FakeApnsServer) -> None:
    fake.then(Act(410, "Unregistered", timestamp=1_700_000_000_000))
    result = await make().send(alert(), environment=SANDBOX)
    assert result.unregistered_at == datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)


async def test_503_is_retried_after_a_jittered_back_off(
    make: Any, fake: FakeApnsServer, clock: Clock
) -> None:
    fake.then(Act(503, "ServiceUnavailable"), Act(500, "InternalServerError"))
    result = await make(backoff_base=0.4).send(alert(), environment=SANDBOX)
    assert result.ok and result.attempts == 3
    # Half the ceiling plus random() (0.5 here) times the other half: 0.4 -> 0.3, 0.8 -> 0.6.
    assert clock.sleeps == pytest.approx([0.3, 0.6])
    ids = {r.headers["apns-id"] for r in fake.received}
    assert len(ids) == 1  # the same apns-id every time


async def test_too_many_requests_returns_the_rejection_when_budget_ends(
    make: Any, fake: FakeApnsServer, clock: Clock
) -> None:
    fake.then(*[Act(429, "TooManyRequests")] * 10)
    result = await make(backoff_base=1.0).send(alert(), environment=SANDBOX, budget=3.0)
    assert result.reason is Reason.TOO_MANY_REQUESTS and result.retryable
    assert clock.sleeps == pytest.approx([0.75, 1.5])  # the next (3.0) would not fit
    assert result.attempts == len(fake.received) == 3


async def test_attempts_are_capped(make: Any, fake: FakeApnsServer) -> None:
    fake.then(*[Act(500, "InternalServerError")] * 10)
    result = await make(max_attempts=3, backoff_base=0.01).send(alert(), environment=SANDBOX)
    assert result.status == 500 and result.attempts == 3
    assert len(fake.received) == 3


# --- HTTP/2 faults ------------------------------------------------------------------------


async def test_refused_stream_is_resent_at_once(
    make: Any, fake: FakeApnsServer, clock: Clock
) -> None:
    fake.then(Act(kind="refuse"))
    result = await make().send(alert(), environment=SANDBOX)
    assert result.ok and result.attempts == 2
    assert clock.sleeps == []
    assert fake.received[0].headers["apns-id"] == fake.received[1].headers["apns-id"]


async def test_goaway_resends_on_a_new_connection_and_logs_the_reason(
    make: Any, fake: FakeApnsServer, caplog: pytest.LogCaptureFixture
) -> None:
    fake.then(Act(kind="goaway", goaway_reason="Shutdown"))
    with caplog.at_level(logging.WARNING, logger="shared.apns.connection"):
        result = await make().send(alert(), environment=SANDBOX)
    assert result.ok and result.attempts == 2
    assert [r.connection for r in fake.received] == [0, 1]
    assert any("Shutdown" in r.getMessage() for r in caplog.records)


async def test_streams_below_goaway_last_stream_still_get_their_answers(
    make: Any, fake: FakeApnsServer
) -> None:
    client = make(connections=1)
    await client.send(alert(), environment=SANDBOX)  # stream 1
    fake.then(*[Act(kind="hold")] * 3)
    sends = [asyncio.create_task(client.send(alert(), environment=SANDBOX)) for _ in range(3)]
    await let_traffic_flow()
    assert [r.stream_id for _, r in fake.held] == [3, 5, 7]
    fake.goaway(last_stream_id=5, reason="Shutdown")
    await let_traffic_flow()
    fake.release(2)  # APNs answers the two streams it had accepted
    results = await asyncio.gather(*sends)
    assert [r.attempts for r in results] == [1, 1, 2]  # only stream 7 was resent
    assert fake.received[-1].connection == 1
    assert fake.received[-1].headers["apns-id"] == fake.received[3].headers["apns-id"]


async def test_connection_loss_fails_and_retries_every_stream(
    make: Any, fake: FakeApnsServer
) -> None:
    client = make()
    await client.send(alert(), environment=SANDBOX)  # token proven: many streams allowed
    fake.then(*[Act(kind="hold")] * 5)
    sends = [asyncio.create_task(client.send(alert(), environment=SANDBOX)) for _ in range(5)]
    await let_traffic_flow()
    assert len(fake.held) == 5
    fake.held.clear()
    fake.connections[0].close()
    results = await asyncio.gather(*sends)
    assert all(r.ok and r.attempts == 2 for r in results)
    assert 0 not in {r.connection for r in fake.received[6:]}


async def test_stream_that_never_answers_times_out_and_recycles_the_connection(
    make: Any, fake: FakeApnsServer
) -> None:
    fake.then(Act(kind="ignore"))
    result = await make(request_timeout=0.05).send(alert(), environment=SANDBOX)
    assert result.ok and result.attempts == 2
    assert [r.connection for r in fake.received] == [0, 1]
    await let_traffic_flow()
    assert not fake.connections[0].alive


async def test_no_answer_within_budget_raises_unavailable(make: Any, fake: FakeApnsServer) -> None:
    fake.then(*[Act(kind="ignore")] * 10)
    client = make(request_timeout=0.02, backoff_base=1.0)
    with pytest.raises(ApnsUnavailable) as info:
        await client.send(alert(), environment=SANDBOX, budget=2.5)
    assert info.value.attempts >= 2
    assert info.value.apns_id == fake.received[0].headers["apns-id"]


async def test_connect_failures_back_off_then_succeed(
    make: Any, fake: FakeApnsServer, clock: Clock
) -> None:
    fake.refuse_connects = 2
    result = await make().send(alert(), environment=SANDBOX)
    assert result.ok
    assert len(fake.opened_to) == 3
    assert len(clock.sleeps) == 2 and clock.sleeps[1] > clock.sleeps[0]


async def test_unreachable_apns_raises_unavailable(make: Any, fake: FakeApnsServer) -> None:
    fake.refuse_connects = 100
    with pytest.raises(ApnsUnavailable):
        await make().send(alert(), environment=SANDBOX, budget=5.0)


# --- token rules --------------------------------------------------------------------------


async def test_expired_provider_token_retries_once_on_a_new_connection_with_a_new_token(
    make: Any, fake: FakeApnsServer, clock: Clock
) -> None:
    client = make(idle_timeout=10_000.0, ping_after=10_000.0)
    await client.send(alert(), environment=SANDBOX)
    clock.advance(30 * 60)
    fake.then(Act(403, "ExpiredProviderToken"))
    result = await client.send(alert(), environment=SANDBOX)
    assert result.ok and result.attempts == 2
    first, second = fake.received[1], fake.received[2]
    assert (first.connection, second.connection) == (0, 1)
    assert jwt_of(first.headers) != jwt_of(second.headers)


async def test_expired_provider_token_twice_is_returned(make: Any, fake: FakeApnsServer) -> None:
    fake.then(Act(403, "ExpiredProviderToken"), Act(403, "ExpiredProviderToken"))
    result = await make().send(alert(), environment=SANDBOX)
    assert result.reason is Reason.EXPIRED_PROVIDER_TOKEN and result.attempts == 2
    assert len(fake.received) == 2


async def test_too_many_token_updates_retires_the_connection(
    make: Any, fake: FakeApnsServer
) -> None:
    fake.then(Act(429, "TooManyProviderTokenUpdates"))
    result = await make().send(alert(), environment=SANDBOX)
    assert result.ok
    assert [r.connection for r in fake.received] == [0, 1]


async def test_token_is_reused_then_renewed_at_fifty_minutes(
    make: Any, fake: FakeApnsServer, clock: Clock
) -> None:
    client = make(idle_timeout=10_000.0, ping_after=10_000.0)
    await client.send(alert(), environment=SANDBOX)
    clock.advance(49 * 60)
    await client.send(alert(), environment=SANDBOX)
    clock.advance(60)
    await client.send(alert(), environment=SANDBOX)
    tokens = [jwt_of(r.headers) for r in fake.received]
    assert tokens[0] == tokens[1] != tokens[2]
    assert {r.connection for r in fake.received} == {0}


async def test_one_stream_until_apns_accepts_the_token(make: Any, fake: FakeApnsServer) -> None:
    client = make(connections=1)
    fake.then(*[Act(kind="hold")] * 20)
    sends = [asyncio.create_task(client.send(alert(), environment=SANDBOX)) for _ in range(20)]
    await let_traffic_flow()
    assert len(fake.held) == 1  # the first request goes out alone
    fake.release()
    await let_traffic_flow()
    assert len(fake.held) == 19  # the rest together, once APNs accepted the token
    fake.release()
    assert all(r.ok for r in await asyncio.gather(*sends))


async def test_certificate_auth_sends_no_authorization(
    make: Any, fake: FakeApnsServer, tmp_path: Any
) -> None:
    from shared.apns.certificate import CertificateCredential
    from tests.unit.apns.keys import new_p12

    p12 = new_p12("com.example.chat", datetime(2099, 1, 1, tzinfo=UTC), b"pw")
    client = make(credential=CertificateCredential(p12, b"pw"))
    assert client.not_after == datetime(2099, 1, 1, tzinfo=UTC)
    assert (await client.send(alert(), environment=SANDBOX)).ok
    assert "authorization" not in fake.received[0].headers


# --- stream limits, flow control, bounded in-flight ----------------------------------------


async def test_stream_limit_going_down_to_one_and_back_is_obeyed(
    make: Any, fake: FakeApnsServer
) -> None:
    client = make(connections=1)
    await client.send(alert(), environment=SANDBOX)
    fake.set_max_streams(1)
    await let_traffic_flow()
    fake.max_open_seen = 0
    fake.then(*[Act(kind="hold")] * 10)
    sends = [asyncio.create_task(client.send(alert(), environment=SANDBOX)) for _ in range(10)]
    await let_traffic_flow()
    assert len(fake.held) == 1
    fake.set_max_streams(100)
    await let_traffic_flow()
    assert fake.release(1) == 1
    await let_traffic_flow()
    assert len(fake.held) == 9  # the other nine went out together once the limit rose
    fake.release()
    assert all(r.ok for r in await asyncio.gather(*sends))


async def test_large_payloads_wait_for_window_updates(make: Any, fake: FakeApnsServer) -> None:
    fake.initial_window = 1000
    fake.withhold_window = True
    body = b'{"x":"' + b"a" * 5100 + b'"}'
    n = alert(push_type=PushType.VOIP, topic="com.example.chat.voip", payload=body)
    task = asyncio.create_task(make().send(n, environment=SANDBOX))
    await let_traffic_flow()
    assert fake.received == []  # 1000 of 5108 bytes sent; the rest waits for WINDOW_UPDATE
    fake.withhold_window = False
    for _ in range(6):
        fake.grant_window()
        await let_traffic_flow()
    result = await task
    assert result.ok
    assert fake.received[0].body == body


async def test_many_large_payloads_exceed_the_connection_window(
    make: Any, fake: FakeApnsServer
) -> None:
    client = make(connections=1)
    await client.send(alert(), environment=SANDBOX)
    body = b'{"x":"' + b"a" * 4000 + b'"}'
    results = await asyncio.gather(
        *(client.send(alert(payload=body), environment=SANDBOX) for _ in range(40))
    )
    assert all(r.ok for r in results)
    assert all(r.body == body for r in fake.received[1:])


async def test_in_flight_pushes_are_bounded(make: Any, fake: FakeApnsServer) -> None:
    client = make(max_in_flight=3)
    await client.send(alert(), environment=SANDBOX)
    fake.then(*[Act(kind="hold")] * 10)
    sends = [asyncio.create_task(client.send(alert(), environment=SANDBOX)) for _ in range(10)]
    await let_traffic_flow()
    assert len(fake.held) == 3
    while fake.held:
        fake.release()
        await let_traffic_flow()
    assert all(r.ok for r in await asyncio.gather(*sends))
    assert fake.max_total_open == 3


async def test_several_connections_are_opened_when_one_is_full(
    make: Any, fake: FakeApnsServer
) -> None:
    fake.max_streams = 2
    client = make(connections=3)
    await client.send(alert(), environment=SANDBOX)
    fake.then(*[Act(kind="hold")] * 6)
    sends = [asyncio.create_task(client.send(alert(), environment=SANDBOX)) for _ in range(6)]
    await let_traffic_flow(60)
    assert len(fake.connections) == 3
    while fake.held:
        fake.release()
        await let_traffic_flow()
    assert all(r.ok for r in await asyncio.gather(*sends))


# --- idle, ping, close --------------------------------------------------------------------


async def test_idle_connection_is_not_reused_past_the_idle_timeout(
    make: Any, fake: FakeApnsServer, clock: Clock
) -> None:
    client = make(idle_timeout=100.0, ping_after=1000.0)
    await client.send(alert(), environment=SANDBOX)
    clock.advance(99)
    await client.send(alert(), environment=SANDBOX)
    clock.advance(100)
    await client.send(alert(), environment=SANDBOX)
    assert [r.connection for r in fake.received] == [0, 0, 1]


async def test_housekeeping_pings_then_closes_idle_connections(
    make: Any, fake: FakeApnsServer, clock: Clock
) -> None:
    client = make(idle_timeout=100.0, ping_after=30.0)
    await client.send(alert(), environment=SANDBOX)
    pool = client._pools[SANDBOX]
    clock.advance(31)
    pool.housekeep()
    await let_traffic_flow()
    assert fake.connections[0].pings == 1 and fake.connections[0].alive
    clock.advance(70)
    pool.housekeep()
    await let_traffic_flow()
    assert not fake.connections[0].alive


async def test_discarding_a_connection_again_and_again_is_harmless(
    make: Any, fake: FakeApnsServer
) -> None:
    client = make(connections=1)
    await client.send(alert(), environment=SANDBOX)
    (conn,) = client._pools[SANDBOX]._conns
    conn.retire("first")
    conn.retire("second")
    conn.close()
    conn.abort("third")
    conn.close()
    fake.connections[0].close()  # the transport reports the loss as well
    await let_traffic_flow()
    assert (await client.send(alert(), environment=SANDBOX)).ok
    assert [r.connection for r in fake.received] == [0, 1]
    assert len(client._pools[SANDBOX]._conns) == 1


async def test_send_many_returns_results_in_order(make: Any, fake: FakeApnsServer) -> None:
    fake.then(Act(), Act(410, "Unregistered", timestamp=1), Act())
    tokens = ["aa" * 32, "bb" * 32, "cc" * 32]
    results = await make(connections=1).send_many(
        [alert(device_token=t) for t in tokens], environment=SANDBOX
    )
    assert [getattr(r, "status", None) for r in results] == [200, 410, 200]


async def test_send_many_reports_unavailable_per_push(make: Any, fake: FakeApnsServer) -> None:
    fake.refuse_connects = 100
    results = await make().send_many([alert(), alert()], environment=SANDBOX, budget=1.0)
    assert all(isinstance(r, ApnsUnavailable) for r in results)


async def test_closed_client_refuses_to_send(make: Any, fake: FakeApnsServer) -> None:
    client = make()
    await client.send(alert(), environment=SANDBOX)
    await client.aclose()
    await client.aclose()
    await let_traffic_flow()
    assert not fake.connections[0].alive
    with pytest.raises(ApnsUnavailable):
        await client.send(alert(), environment=SANDBOX)


def test_client_used_from_a_second_event_loop_reconnects(
    fake: FakeApnsServer, clock: Clock
) -> None:
    client = ApnsClient(
        ApnsConfig(
            credential=CREDENTIAL,
            sandbox_origin="https://sandbox.test:443",
            opener=fake.opener,
            clock=clock,
            sleep=clock.sleep,
            wall_clock=clock.wall_clock,
        )
    )
    assert asyncio.run(client.send(alert(), environment=SANDBOX)).ok
    assert asyncio.run(client.send(alert(), environment=SANDBOX)).ok
    assert [r.connection for r in fake.received] == [0, 1]
    asyncio.run(client.aclose())

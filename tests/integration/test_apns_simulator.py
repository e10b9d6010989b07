"""The APNs simulator validates like APNs and scripts faults, over real HTTP/2 + TLS.

Driven by a small raw h2 client (so tests can break HTTP/2 rules a real client would honour:
open streams over the advertised limit, send duplicate headers) and, where a stock client is
enough, httpx. One simulator per module with an injected fixed clock; each test resets it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import json
import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    PingAckReceived,
    RemoteSettingsChanged,
    ResponseReceived,
    StreamEnded,
    StreamReset,
    WindowUpdated,
)
from h2.settings import SettingCodes, Settings

from devtools.apns_simulator import ApnsSimulator, Fault
from devtools.apns_simulator.pki import Pki

pytestmark = pytest.mark.integration

T0 = 1_700_000_000.0
KEY_ID = "KEYID00001"
TEAM = "TEAMID0001"
TOPIC = "com.example.chat"
TOKEN = "ab" * 32
OTHER_TOKEN = "cd" * 32
ALERT = b'{"aps":{"alert":{"title":"Ann","body":"hi"}}}'
REPO = Path(__file__).resolve().parents[2]


class FixedClock:
    """Time stands still unless the simulator's set_time/advance moves it."""

    def __call__(self) -> float:
        return T0


@pytest.fixture(scope="module")
def signing_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def simulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApnsSimulator]:
    with ApnsSimulator.start(tmp_path_factory.mktemp("apns-sim"), clock=FixedClock()) as sim:
        yield sim


@pytest.fixture
def sim(simulator: ApnsSimulator, signing_key: ec.EllipticCurvePrivateKey) -> ApnsSimulator:
    simulator.reset()
    simulator.set_time(T0)
    simulator.register_key(KEY_ID, TEAM, _public_pem(signing_key))
    return simulator


def _public_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def make_jwt(
    key: ec.EllipticCurvePrivateKey,
    *,
    iat: float = T0,
    kid: str = KEY_ID,
    iss: str = TEAM,
    der: bool = False,
) -> str:
    """A provider token; ``der`` signs with a DER signature (Java/Pushy style) instead of r||s."""
    token = pyjwt.encode(
        {"iss": iss, "iat": int(iat)}, key, algorithm="ES256", headers={"kid": kid}
    )
    if not der:
        return token
    head, body, _ = token.split(".")
    signature = key.sign(f"{head}.{body}".encode(), ec.ECDSA(hashes.SHA256()))
    return f"{head}.{body}." + base64.urlsafe_b64encode(signature).rstrip(b"=").decode()


def _trust(ca_file: str | Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca_file))


# --- a raw HTTP/2 client ----------------------------------------------------------------------


class _Unenforced(Settings):
    """Client-side remote settings that let the test exceed the server's stream limit."""

    @property
    def max_concurrent_streams(self) -> int:
        return 2**31 - 1


@dataclass
class Answer:
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    reset: int | None = None
    done: bool = False

    @property
    def reason(self) -> str | None:
        return json.loads(self.body)["reason"] if self.body else None


class RawH2:
    """Just enough HTTP/2 client to see every frame the simulator sends."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str):
        self.reader, self.writer, self.authority = reader, writer, host
        self.h2 = H2Connection(H2Configuration(client_side=True, header_encoding="utf-8"))
        self.h2.remote_settings = _Unenforced(client=False)
        self.answers: dict[int, Answer] = {}
        self.settings_seen: list[int] = []
        self.goaway: ConnectionTerminated | None = None
        self.pings = 0
        self.closed = False
        self.changed = asyncio.Event()
        self.pump = asyncio.get_running_loop().create_task(self._pump())

    @classmethod
    async def connect(
        cls, origin: str, ca_file: Path, *, cert: tuple[Path, Path] | None = None
    ) -> RawH2:
        url = urlsplit(origin)
        ctx = ssl.create_default_context(cafile=str(ca_file))
        ctx.set_alpn_protocols(["h2"])
        if cert is not None:
            ctx.load_cert_chain(*cert)
        reader, writer = await asyncio.open_connection(url.hostname, url.port, ssl=ctx)
        assert writer.get_extra_info("ssl_object").selected_alpn_protocol() == "h2"
        client = cls(reader, writer, url.netloc)
        client.h2.initiate_connection()
        client.flush()
        await client.until(lambda: bool(client.settings_seen) or client.closed)
        if client.closed:
            raise ConnectionError("simulator closed the connection before its SETTINGS")
        return client

    @property
    def stream_limit(self) -> int:
        return self.h2.remote_settings[SettingCodes.MAX_CONCURRENT_STREAMS]

    def flush(self) -> None:
        data = self.h2.data_to_send()
        if data and not self.closed:
            self.writer.write(data)

    async def _pump(self) -> None:
        try:
            while data := await self.reader.read(65536):
                for event in self.h2.receive_data(data):
                    self._on(event)
                self.flush()
                self.changed.set()
        except (ConnectionError, ssl.SSLError):
            pass
        self.closed = True
        self.changed.set()

    def _on(self, event: object) -> None:
        if isinstance(event, ResponseReceived):
            answer = self.answers[event.stream_id]
            answer.headers = dict(event.headers)  # type: ignore[arg-type]
            answer.status = int(answer.headers[":status"])
        elif isinstance(event, DataReceived):
            self.answers[event.stream_id].body += event.data
            self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, StreamEnded):
            self.answers[event.stream_id].done = True
        elif isinstance(event, StreamReset):
            self.answers[event.stream_id].reset = event.error_code
            self.answers[event.stream_id].done = True
        elif isinstance(event, RemoteSettingsChanged):
            changed = event.changed_settings.get(SettingCodes.MAX_CONCURRENT_STREAMS)
            if changed is not None:
                self.settings_seen.append(changed.new_value)
        elif isinstance(event, ConnectionTerminated):
            self.goaway = event
        elif isinstance(event, PingAckReceived):
            self.pings += 1
        elif isinstance(event, WindowUpdated):
            pass

    async def until(self, condition: Any, timeout: float = 3.0) -> bool:
        deadline = time.monotonic() + timeout
        while not condition():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), left)
            except TimeoutError:
                return False
        return True

    async def start(
        self,
        token: str = TOKEN,
        body: bytes = ALERT,
        *,
        method: str = "POST",
        path: str | None = None,
        headers: list[tuple[str, str]] | None = None,
        end: bool = True,
    ) -> int:
        """Open a stream with this request (body sent within flow control); returns its id.
        With ``end`` false the stream stays open until :meth:`end`."""
        sid = self.h2.get_next_available_stream_id()
        self.answers[sid] = Answer()
        pseudo = [
            (":method", method),
            (":scheme", "https"),
            (":authority", self.authority),
            (":path", path if path is not None else f"/3/device/{token}"),
        ]
        self.h2.send_headers(sid, pseudo + (headers or []), end_stream=end and not body)
        self.flush()
        while body:
            window = min(self.h2.local_flow_control_window(sid), self.h2.max_outbound_frame_size)
            if window <= 0:
                assert await self.until(
                    lambda: self.h2.local_flow_control_window(sid) > 0 or self.closed
                ), "no WINDOW_UPDATE from the simulator"
                assert not self.closed
                continue
            chunk, body = body[:window], body[window:]
            self.h2.send_data(sid, chunk, end_stream=end and not body)
            self.flush()
        return sid

    async def ping(self) -> None:
        """Round-trip a PING: every frame the simulator sent before its ACK has arrived."""
        expected = self.pings + 1
        self.h2.ping(b"12345678")
        self.flush()
        assert await self.until(lambda: self.pings >= expected)

    def end(self, sid: int) -> None:
        self.h2.end_stream(sid)
        self.flush()

    async def answer(self, sid: int, timeout: float = 3.0) -> Answer:
        await self.until(lambda: self.answers[sid].done or self.closed, timeout)
        return self.answers[sid]

    async def push(self, token: str = TOKEN, body: bytes = ALERT, **kwargs: Any) -> Answer:
        return await self.answer(await self.start(token, body, **kwargs))

    async def close(self) -> None:
        self.pump.cancel()
        self.writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await self.writer.wait_closed()


def hdrs(
    jwt: str | None,
    *,
    topic: str | None = TOPIC,
    push_type: str | None = "alert",
    **extra: str,
) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    if jwt is not None:
        out.append(("authorization", f"bearer {jwt}"))
    if topic is not None:
        out.append(("apns-topic", topic))
    if push_type is not None:
        out.append(("apns-push-type", push_type))
    out += [(name.replace("_", "-"), value) for name, value in extra.items()]
    return out


@pytest.fixture
def good_jwt(signing_key: ec.EllipticCurvePrivateKey) -> str:
    return make_jwt(signing_key)


async def connect(sim: ApnsSimulator, production: bool = False, **kw: Any) -> RawH2:
    origin = sim.production_origin if production else sim.sandbox_origin
    return await RawH2.connect(origin, sim.ca_file, **kw)


async def push_once(sim: ApnsSimulator, jwt: str | None, **kwargs: Any) -> Answer:
    client = await connect(sim, production=kwargs.pop("production", False))
    try:
        headers = kwargs.pop("headers", None)
        return await client.push(headers=headers if headers is not None else hdrs(jwt), **kwargs)
    finally:
        await client.close()


# --- transport --------------------------------------------------------------------------------


async def test_httpx_negotiates_http2_and_gets_200(sim: ApnsSimulator, good_jwt: str) -> None:
    async with httpx.AsyncClient(http2=True, verify=_trust(sim.ca_file)) as client:
        response = await client.post(
            f"{sim.sandbox_origin}/3/device/{TOKEN}",
            headers=dict(hdrs(good_jwt)),
            content=ALERT,
        )
    assert (response.http_version, response.status_code) == ("HTTP/2", 200)


async def test_connection_without_h2_alpn_is_closed(sim: ApnsSimulator) -> None:
    url = urlsplit(sim.sandbox_origin)
    ctx = ssl.create_default_context(cafile=str(sim.ca_file))
    ctx.set_alpn_protocols(["http/1.1"])
    with pytest.raises((ssl.SSLError, ConnectionError)):
        reader, writer = await asyncio.open_connection(url.hostname, url.port, ssl=ctx)
        writer.write(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        assert await asyncio.wait_for(reader.read(100), 3) == b""
        raise ConnectionError("closed")


async def test_server_certificate_is_valid_for_localhost(sim: ApnsSimulator, good_jwt: str) -> None:
    origin = sim.sandbox_origin.replace("127.0.0.1", "localhost")
    client = await RawH2.connect(origin, sim.ca_file)
    try:
        assert (await client.push(headers=hdrs(good_jwt))).status == 200
    finally:
        await client.close()


# --- stateless validation ---------------------------------------------------------------------

REJECTIONS = [
    ("get", {"method": "GET"}, None, 405, "MethodNotAllowed"),
    ("bad-path", {"path": "/3/other/" + TOKEN}, None, 404, "BadPath"),
    ("empty-token", {"path": "/3/device/"}, None, 400, "MissingDeviceToken"),
    ("odd-token", {"token": "a" * 65}, None, 400, "BadDeviceToken"),
    ("non-hex-token", {"token": "zz" * 32}, None, 400, "BadDeviceToken"),
    ("short-token", {"token": "ab" * 31}, None, 400, "BadDeviceToken"),
    ("long-token", {"token": "ab" * 101}, None, 400, "BadDeviceToken"),
    ("upper-apns-id", {}, {"apns_id": "6F3E0A52-1B7C-4A8E-9C55-2B1F0E3D4C5A"}, 400, "BadMessageId"),
    ("no-topic", {}, {"topic": None}, 400, "MissingTopic"),
    ("no-push-type", {}, {"push_type": None}, 400, "InvalidPushType"),
    ("unknown-push-type", {}, {"push_type": "banner"}, 400, "InvalidPushType"),
    ("voip-without-suffix", {}, {"push_type": "voip"}, 400, "BadTopic"),
    ("alert-on-voip-topic", {}, {"topic": TOPIC + ".voip"}, 400, "InvalidPushType"),
    ("priority-7", {}, {"apns_priority": "7"}, 400, "BadPriority"),
    ("background-10", {}, {"push_type": "background", "apns_priority": "10"}, 400, "BadPriority"),
    ("background-default", {}, {"push_type": "background"}, 400, "BadPriority"),
    ("expiration-text", {}, {"apns_expiration": "soon"}, 400, "BadExpirationDate"),
    ("expiration-negative", {}, {"apns_expiration": "-1"}, 400, "BadExpirationDate"),
    ("collapse-65", {}, {"apns_collapse_id": "é" * 32 + "x"}, 400, "BadCollapseId"),
    ("empty-body", {"body": b""}, None, 400, "PayloadEmpty"),
    ("body-4097", {"body": b'{"a":"' + b"x" * 4089 + b'"}'}, None, 413, "PayloadTooLarge"),
    (
        "voip-5121",
        {"body": b'{"a":"' + b"x" * 5113 + b'"}'},
        {"push_type": "voip", "topic": TOPIC + ".voip"},
        413,
        "PayloadTooLarge",
    ),
    ("not-json", {"body": b"{aps"}, None, 400, "PayloadEmpty"),
    ("json-array", {"body": b"[1]"}, None, 400, "PayloadEmpty"),
    (
        "background-alert",
        {"body": ALERT},
        {"push_type": "background", "apns_priority": "5"},
        400,
        "InvalidPushType",
    ),
]


@pytest.mark.parametrize(
    ("request_args", "header_args", "status", "reason"),
    [case[1:] for case in REJECTIONS],
    ids=[case[0] for case in REJECTIONS],
)
async def test_invalid_request_is_rejected_with_apple_reason(
    sim: ApnsSimulator,
    good_jwt: str,
    request_args: dict[str, Any],
    header_args: dict[str, Any] | None,
    status: int,
    reason: str,
) -> None:
    answer = await push_once(
        sim, good_jwt, headers=hdrs(good_jwt, **(header_args or {})), **request_args
    )
    assert (answer.status, answer.reason) == (status, reason)
    assert answer.headers["content-type"] == "application/json"


async def test_duplicate_header_is_rejected(sim: ApnsSimulator, good_jwt: str) -> None:
    headers = [*hdrs(good_jwt), ("apns-topic", TOPIC)]
    answer = await push_once(sim, good_jwt, headers=headers)
    assert (answer.status, answer.reason) == (400, "DuplicateHeaders")


ACCEPTED = [
    ("token-100", {"token": "0f" * 50}, None),
    ("token-200", {"token": "AB" * 100}, None),
    (
        "voip-5120",
        {"body": b'{"a":"' + b"x" * 5112 + b'"}'},
        {"push_type": "voip", "topic": TOPIC + ".voip"},
    ),
    ("alert-4096", {"body": b'{"a":"' + b"x" * 4088 + b'"}'}, None),
    (
        "background-5",
        {"body": b'{"aps":{"content-available":1}}'},
        {"push_type": "background", "apns_priority": "5"},
    ),
    ("priority-1", {}, {"apns_priority": "1"}),
    ("expiration-0", {}, {"apns_expiration": "0"}),
    ("collapse-64", {}, {"apns_collapse_id": "é" * 32}),
    ("liveactivity", {}, {"push_type": "liveactivity", "topic": TOPIC + ".push-type.liveactivity"}),
    ("pushtotalk", {}, {"push_type": "pushtotalk", "topic": TOPIC + ".voip-ptt"}),
]


@pytest.mark.parametrize(
    ("request_args", "header_args"),
    [case[1:] for case in ACCEPTED],
    ids=[case[0] for case in ACCEPTED],
)
async def test_valid_request_variant_is_accepted(
    sim: ApnsSimulator,
    good_jwt: str,
    request_args: dict[str, Any],
    header_args: dict[str, Any] | None,
) -> None:
    answer = await push_once(
        sim, good_jwt, headers=hdrs(good_jwt, **(header_args or {})), **request_args
    )
    assert (answer.status, answer.body) == (200, b"")


async def test_large_body_is_read_under_flow_control_and_rejected(
    sim: ApnsSimulator, good_jwt: str
) -> None:
    client = await connect(sim)
    try:
        big = await client.push(body=b"x" * 300_000, headers=hdrs(good_jwt))
        after = await client.push(headers=hdrs(good_jwt))
    finally:
        await client.close()
    assert (big.status, big.reason, after.status) == (413, "PayloadTooLarge", 200)
    assert sim.requests()[0].raw_size == 300_000


# --- responses --------------------------------------------------------------------------------


async def test_sandbox_success_echoes_apns_id_and_adds_unique_id(
    sim: ApnsSimulator, good_jwt: str
) -> None:
    apns_id = "6f3e0a52-1b7c-4a8e-9c55-2b1f0e3d4c5a"
    answer = await push_once(sim, good_jwt, headers=hdrs(good_jwt, apns_id=apns_id))
    assert answer.headers["apns-id"] == apns_id
    assert len(answer.headers["apns-unique-id"]) == 36


async def test_production_success_generates_lowercase_apns_id_without_unique_id(
    sim: ApnsSimulator, good_jwt: str
) -> None:
    answer = await push_once(sim, good_jwt, production=True)
    assert answer.status == 200
    assert answer.headers["apns-id"] == answer.headers["apns-id"].lower()
    assert len(answer.headers["apns-id"]) == 36
    assert "apns-unique-id" not in answer.headers


# --- provider tokens --------------------------------------------------------------------------


async def test_missing_authorization_is_missing_provider_token(sim: ApnsSimulator) -> None:
    answer = await push_once(sim, None)
    assert (answer.status, answer.reason) == (403, "MissingProviderToken")


async def test_der_signature_is_accepted(
    sim: ApnsSimulator, signing_key: ec.EllipticCurvePrivateKey
) -> None:
    answer = await push_once(sim, make_jwt(signing_key, der=True))
    assert answer.status == 200


@pytest.mark.parametrize(
    "variant", ["unknown-kid", "other-key", "wrong-iss", "hs256", "garbage", "future-iat"]
)
async def test_bad_provider_token_is_invalid_provider_token(
    sim: ApnsSimulator, signing_key: ec.EllipticCurvePrivateKey, variant: str
) -> None:
    tokens = {
        "unknown-kid": lambda: make_jwt(signing_key, kid="NOSUCHKEY1"),
        "other-key": lambda: make_jwt(ec.generate_private_key(ec.SECP256R1())),
        "wrong-iss": lambda: make_jwt(signing_key, iss="OTHERTEAM1"),
        "hs256": lambda: pyjwt.encode(
            {"iss": TEAM, "iat": int(T0)}, "s" * 32, algorithm="HS256", headers={"kid": KEY_ID}
        ),
        "garbage": lambda: "not.a.jwt",
        "future-iat": lambda: make_jwt(signing_key, iat=T0 + 61),
    }
    answer = await push_once(sim, tokens[variant]())
    assert (answer.status, answer.reason) == (403, "InvalidProviderToken")


async def test_token_older_than_an_hour_is_expired(
    sim: ApnsSimulator, signing_key: ec.EllipticCurvePrivateKey
) -> None:
    answer = await push_once(sim, make_jwt(signing_key, iat=T0 - 3601))
    assert (answer.status, answer.reason) == (403, "ExpiredProviderToken")


async def test_token_expires_on_an_open_connection_when_the_clock_moves(
    sim: ApnsSimulator, good_jwt: str
) -> None:
    client = await connect(sim)
    try:
        first = await client.push(headers=hdrs(good_jwt))
        sim.advance(3601)
        second = await client.push(headers=hdrs(good_jwt))
    finally:
        await client.close()
    assert (first.status, second.reason) == (200, "ExpiredProviderToken")


async def test_topic_outside_the_keys_topics_is_rejected(
    sim: ApnsSimulator, signing_key: ec.EllipticCurvePrivateKey
) -> None:
    sim.register_key(KEY_ID, TEAM, _public_pem(signing_key), topics=["com.example.other"])
    answer = await push_once(sim, make_jwt(signing_key))
    assert (answer.status, answer.reason) == (403, "InvalidProviderToken")


async def test_topic_specific_key_allows_its_voip_topic(
    sim: ApnsSimulator, signing_key: ec.EllipticCurvePrivateKey
) -> None:
    sim.register_key(KEY_ID, TEAM, _public_pem(signing_key), topics=[TOPIC])
    jwt = make_jwt(signing_key)
    answer = await push_once(sim, jwt, headers=hdrs(jwt, topic=TOPIC + ".voip", push_type="voip"))
    assert answer.status == 200


async def test_second_team_on_one_connection_is_rejected(
    sim: ApnsSimulator, signing_key: ec.EllipticCurvePrivateKey
) -> None:
    other = ec.generate_private_key(ec.SECP256R1())
    sim.register_key("KEYID00002", "TEAMID0002", _public_pem(other))
    client = await connect(sim)
    try:
        await client.push(headers=hdrs(make_jwt(signing_key)))
        sim.advance(1300)
        answer = await client.push(
            headers=hdrs(make_jwt(other, kid="KEYID00002", iss="TEAMID0002", iat=T0 + 1300))
        )
    finally:
        await client.close()
    assert (answer.status, answer.reason) == (403, "InvalidProviderToken")


async def test_new_token_within_20_minutes_is_too_many_updates(
    sim: ApnsSimulator, signing_key: ec.EllipticCurvePrivateKey
) -> None:
    client = await connect(sim)
    try:
        await client.push(headers=hdrs(make_jwt(signing_key)))
        sim.advance(1199)
        answer = await client.push(headers=hdrs(make_jwt(signing_key, iat=T0 + 1199)))
    finally:
        await client.close()
    assert (answer.status, answer.reason) == (429, "TooManyProviderTokenUpdates")
    assert sim.connections()[-1].rejected_token_updates == 1


async def test_new_token_after_20_minutes_is_accepted_and_counted(
    sim: ApnsSimulator, signing_key: ec.EllipticCurvePrivateKey
) -> None:
    client = await connect(sim)
    try:
        await client.push(headers=hdrs(make_jwt(signing_key)))
        sim.advance(1200)
        answer = await client.push(headers=hdrs(make_jwt(signing_key, iat=T0 + 1200)))
    finally:
        await client.close()
    assert answer.status == 200
    assert sim.connections()[-1].token_changes == 1


async def test_same_token_on_two_connections_is_not_an_update(
    sim: ApnsSimulator, good_jwt: str
) -> None:
    first = await push_once(sim, good_jwt)
    second = await push_once(sim, good_jwt)
    assert (first.status, second.status) == (200, 200)


# --- stream limits ----------------------------------------------------------------------------


async def test_token_connection_allows_one_stream_until_first_success(
    sim: ApnsSimulator, good_jwt: str
) -> None:
    client = await connect(sim)
    try:
        before = client.stream_limit
        await client.push(headers=hdrs(good_jwt))
        await client.until(lambda: client.stream_limit != before)
        after = client.stream_limit
    finally:
        await client.close()
    assert (before, after) == (1, sim.max_concurrent_streams)


async def test_second_stream_before_first_success_is_refused(
    sim: ApnsSimulator, good_jwt: str
) -> None:
    client = await connect(sim)
    try:
        first = await client.start(headers=hdrs(good_jwt), end=False)
        second = await client.start(headers=hdrs(good_jwt))
        client.end(first)
        answers = [await client.answer(first), await client.answer(second)]
    finally:
        await client.close()
    assert (answers[0].status, answers[1].reset) == (200, ErrorCodes.REFUSED_STREAM)


async def test_rejected_first_request_keeps_the_one_stream_limit(
    sim: ApnsSimulator, signing_key: ec.EllipticCurvePrivateKey
) -> None:
    client = await connect(sim)
    try:
        await client.push(headers=hdrs(make_jwt(signing_key, kid="NOSUCHKEY1")))
        await client.ping()
        limit = client.stream_limit
    finally:
        await client.close()
    assert limit == 1
    assert sim.connections()[-1].max_concurrent_streams == 1


async def test_streams_within_the_raised_limit_run_concurrently(
    sim: ApnsSimulator, good_jwt: str
) -> None:
    client = await connect(sim)
    try:
        await client.push(headers=hdrs(good_jwt))
        await client.until(lambda: client.stream_limit > 1)
        sids = [await client.start(headers=hdrs(good_jwt)) for _ in range(50)]
        answers = [await client.answer(sid) for sid in sids]
    finally:
        await client.close()
    assert {a.status for a in answers} == {200}


# --- device state -----------------------------------------------------------------------------


async def test_unregistered_device_gets_410_with_its_timestamp(
    sim: ApnsSimulator, good_jwt: str
) -> None:
    sim.unregister_device(TOKEN, at_ms=1_650_000_000_123)
    answer = await push_once(sim, good_jwt)
    assert answer.status == 410
    assert json.loads(answer.body) == {"reason": "Unregistered", "timestamp": 1_650_000_000_123}


async def test_unregistration_time_defaults_to_the_simulator_clock(
    sim: ApnsSimulator, good_jwt: str
) -> None:
    sim.set_time(T0 + 42)
    sim.unregister_device(TOKEN)
    answer = await push_once(sim, good_jwt)
    assert json.loads(answer.body)["timestamp"] == int((T0 + 42) * 1000)


async def test_lenient_mode_accepts_any_token_in_both_environments(
    sim: ApnsSimulator, good_jwt: str
) -> None:
    sandbox = await push_once(sim, good_jwt)
    production = await push_once(sim, good_jwt, production=True)
    assert (sandbox.status, production.status) == (200, 200)


async def test_strict_mode_rejects_an_unknown_token(sim: ApnsSimulator, good_jwt: str) -> None:
    sim.strict_devices = True
    answer = await push_once(sim, good_jwt)
    assert (answer.status, answer.reason) == (400, "BadDeviceToken")


async def test_strict_mode_rejects_a_sandbox_token_on_production(
    sim: ApnsSimulator, good_jwt: str
) -> None:
    sim.strict_devices = True
    sim.register_device(TOKEN, environment="sandbox")
    production = await push_once(sim, good_jwt, production=True)
    sandbox = await push_once(sim, good_jwt)
    assert (production.status, production.reason, sandbox.status) == (400, "BadDeviceToken", 200)


async def test_strict_mode_accepts_a_production_token_on_production(
    sim: ApnsSimulator, good_jwt: str
) -> None:
    sim.strict_devices = True
    sim.register_device(TOKEN, environment="production")
    answer = await push_once(sim, good_jwt, production=True)
    assert answer.status == 200


async def test_device_registered_for_another_topic_is_rejected(
    sim: ApnsSimulator, good_jwt: str
) -> None:
    sim.register_device(TOKEN, topics=["com.example.other"])
    answer = await push_once(sim, good_jwt)
    assert (answer.status, answer.reason) == (400, "DeviceTokenNotForTopic")


async def test_registering_again_clears_an_unregistration(
    sim: ApnsSimulator, good_jwt: str
) -> None:
    sim.unregister_device(TOKEN, at_ms=1)
    sim.register_device(TOKEN)
    assert (await push_once(sim, good_jwt)).status == 200


# --- certificate auth -------------------------------------------------------------------------


def _cert_files(p12: bytes, folder: Path, password: bytes | None = None) -> tuple[Path, Path]:
    key, cert, _ = pkcs12.load_key_and_certificates(p12, password)
    assert key is not None and cert is not None
    cert_path, key_path = folder / "client.pem", folder / "client-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.mark.parametrize(
    ("topic", "push_type"), [(TOPIC, "alert"), (TOPIC + ".voip", "voip")], ids=["alert", "voip"]
)
async def test_certificate_connection_pushes_its_topics(
    sim: ApnsSimulator, tmp_path: Path, topic: str, push_type: str
) -> None:
    p12 = sim.make_client_certificate(TOPIC, password=b"secret")
    client = await connect(sim, cert=_cert_files(p12, tmp_path, b"secret"))
    try:
        limit = client.stream_limit
        answer = await client.push(headers=hdrs(None, topic=topic, push_type=push_type))
    finally:
        await client.close()
    assert (answer.status, limit) == (200, sim.max_concurrent_streams)
    assert sim.connections()[-1].auth == "certificate"


async def test_certificate_for_another_topic_is_bad_topic(
    sim: ApnsSimulator, tmp_path: Path
) -> None:
    p12 = sim.make_client_certificate("com.example.other")
    client = await connect(sim, cert=_cert_files(p12, tmp_path))
    try:
        answer = await client.push(headers=hdrs(None))
    finally:
        await client.close()
    assert (answer.status, answer.reason) == (400, "BadTopic")


async def test_expired_certificate_is_bad_certificate(sim: ApnsSimulator, tmp_path: Path) -> None:
    expired = dt.datetime.fromtimestamp(T0, dt.UTC) - dt.timedelta(days=1)
    p12 = sim.make_client_certificate(TOPIC, not_after=expired)
    client = await connect(sim, cert=_cert_files(p12, tmp_path))
    try:
        answer = await client.push(headers=hdrs(None))
    finally:
        await client.close()
    assert (answer.status, answer.reason) == (403, "BadCertificate")


async def test_certificate_from_a_registered_ca_is_trusted(
    sim: ApnsSimulator, tmp_path: Path
) -> None:
    foreign = Pki.load_or_create(tmp_path / "foreign")
    now = dt.datetime.fromtimestamp(T0, dt.UTC)
    files = _cert_files(foreign.client_p12(TOPIC, now=now, not_after=None, password=None), tmp_path)
    with pytest.raises((ConnectionError, ssl.SSLError)):
        refused = await connect(sim, cert=files)
        await refused.push(headers=hdrs(None))
        await refused.close()
        if refused.closed:
            raise ConnectionError("closed")
    sim.register_certificate_ca(foreign.client_ca_file.read_text())
    client = await connect(sim, cert=files)
    try:
        answer = await client.push(headers=hdrs(None))
    finally:
        await client.close()
    assert answer.status == 200


# --- faults -----------------------------------------------------------------------------------


async def test_fault_reason_answers_with_its_apple_status(
    sim: ApnsSimulator, good_jwt: str
) -> None:
    sim.add_fault(Fault(reason="TooManyRequests"))
    answer = await push_once(sim, good_jwt)
    assert (answer.status, answer.reason) == (429, "TooManyRequests")


async def test_fault_status_alone_gets_a_matching_reason(sim: ApnsSimulator, good_jwt: str) -> None:
    sim.add_fault(Fault(status=500))
    answer = await push_once(sim, good_jwt)
    assert (answer.status, answer.reason) == (500, "InternalServerError")


async def test_fault_unregistered_carries_a_timestamp(sim: ApnsSimulator, good_jwt: str) -> None:
    sim.add_fault(Fault(reason="Unregistered"))
    answer = await push_once(sim, good_jwt)
    assert json.loads(answer.body) == {"reason": "Unregistered", "timestamp": int(T0 * 1000)}


async def test_nth_fault_hits_only_that_request(sim: ApnsSimulator, good_jwt: str) -> None:
    client = await connect(sim)
    try:
        await client.push(headers=hdrs(good_jwt))
        sim.add_fault(Fault(nth=2, reason="ServiceUnavailable"))
        statuses = [(await client.push(headers=hdrs(good_jwt))).status for _ in range(3)]
    finally:
        await client.close()
    assert statuses == [200, 503, 200]


async def test_every_fault_hits_every_kth_request(sim: ApnsSimulator, good_jwt: str) -> None:
    sim.add_fault(Fault(every=2, status=503))
    client = await connect(sim)
    try:
        statuses = [(await client.push(headers=hdrs(good_jwt))).status for _ in range(4)]
    finally:
        await client.close()
    assert statuses == [200, 503, 200, 503]


async def test_token_fault_is_spent_after_its_times(sim: ApnsSimulator, good_jwt: str) -> None:
    sim.add_fault(Fault(token=OTHER_TOKEN, times=2, reason="TooManyRequests"))
    client = await connect(sim)
    try:
        await client.push(headers=hdrs(good_jwt))
        statuses = [
            (await client.push(token, headers=hdrs(good_jwt))).status
            for token in (OTHER_TOKEN, TOKEN, OTHER_TOKEN, OTHER_TOKEN)
        ]
    finally:
        await client.close()
    assert statuses == [429, 200, 429, 200]


async def test_cleared_faults_stop_hitting(sim: ApnsSimulator, good_jwt: str) -> None:
    sim.add_fault(Fault(reason="Shutdown"))
    sim.clear_faults()
    assert (await push_once(sim, good_jwt)).status == 200


async def test_delayed_answer_does_not_hold_up_other_streams(
    sim: ApnsSimulator, good_jwt: str
) -> None:
    client = await connect(sim)
    try:
        await client.push(headers=hdrs(good_jwt))
        await client.until(lambda: client.stream_limit > 1)
        sim.add_fault(Fault(token=OTHER_TOKEN, delay=0.5))
        started = time.monotonic()
        slow = await client.start(OTHER_TOKEN, headers=hdrs(good_jwt))
        fast = await client.push(headers=hdrs(good_jwt))
        slow_pending_when_fast_answered = not client.answers[slow].done
        slow_answer = await client.answer(slow)
        slow_done = time.monotonic() - started
    finally:
        await client.close()
    assert (fast.status, slow_answer.status) == (200, 200)
    assert slow_pending_when_fast_answered
    assert slow_done >= 0.5


async def test_no_answer_fault_leaves_the_stream_open(sim: ApnsSimulator, good_jwt: str) -> None:
    client = await connect(sim)
    try:
        await client.push(headers=hdrs(good_jwt))
        await client.until(lambda: client.stream_limit > 1)
        sim.add_fault(Fault(nth=1, no_answer=True))
        silent = await client.start(headers=hdrs(good_jwt))
        other = await client.push(headers=hdrs(good_jwt))
        silent_answer = client.answers[silent]
    finally:
        await client.close()
    assert other.status == 200
    assert (silent_answer.done, silent_answer.status) == (False, None)
    assert [r.outcome for r in sim.requests()] == ["answered", "no_answer", "answered"]


async def test_close_connection_fault_drops_the_connection(
    sim: ApnsSimulator, good_jwt: str
) -> None:
    sim.add_fault(Fault(close_connection=True))
    client = await connect(sim)
    try:
        answer = await client.push(headers=hdrs(good_jwt))
    finally:
        await client.close()
    assert (client.closed, answer.status, client.goaway) == (True, None, None)
    assert sim.wait_for_requests(1)[0].outcome == "closed"


async def test_goaway_fault_names_the_previous_stream_and_reason(
    sim: ApnsSimulator, good_jwt: str
) -> None:
    client = await connect(sim)
    try:
        first = await client.push(headers=hdrs(good_jwt))
        sim.add_fault(Fault(nth=1, goaway="Shutdown"))
        second = await client.push(headers=hdrs(good_jwt))
        await client.until(lambda: client.closed)
    finally:
        await client.close()
    goaway = client.goaway
    assert goaway is not None and first.status == 200 and second.status is None
    assert (goaway.last_stream_id, goaway.error_code) == (1, ErrorCodes.NO_ERROR)
    assert json.loads(goaway.additional_data or b"") == {"reason": "Shutdown"}
    assert client.closed
    assert sim.connections()[-1].goaway_reason == "Shutdown"


async def test_refuse_stream_fault_resets_with_refused_stream(
    sim: ApnsSimulator, good_jwt: str
) -> None:
    sim.add_fault(Fault(refuse_stream=True, times=1))
    client = await connect(sim)
    try:
        refused = await client.push(headers=hdrs(good_jwt))
        retried = await client.push(headers=hdrs(good_jwt))
    finally:
        await client.close()
    assert (refused.reset, retried.status) == (ErrorCodes.REFUSED_STREAM, 200)
    assert sim.requests()[0].outcome == "reset"


async def test_settings_fault_lowers_the_stream_limit_before_answering(
    sim: ApnsSimulator, good_jwt: str
) -> None:
    client = await connect(sim)
    try:
        await client.push(headers=hdrs(good_jwt))
        await client.until(lambda: client.stream_limit > 1)
        sim.add_fault(Fault(nth=1, max_concurrent_streams=3))
        sid = await client.start(headers=hdrs(good_jwt))
        answer = await client.answer(sid)
        limit_when_answered = client.stream_limit
    finally:
        await client.close()
    assert (answer.status, limit_when_answered) == (200, 3)


async def test_streams_over_a_lowered_limit_are_refused(sim: ApnsSimulator, good_jwt: str) -> None:
    client = await connect(sim)
    try:
        await client.push(headers=hdrs(good_jwt))
        await client.until(lambda: client.stream_limit > 1)
        sim.add_fault(Fault(nth=1, max_concurrent_streams=1))
        await client.push(headers=hdrs(good_jwt))
        sim.add_fault(Fault(nth=1, no_answer=True))
        await client.start(headers=hdrs(good_jwt))
        over = await client.push(headers=hdrs(good_jwt))
    finally:
        await client.close()
    assert over.reset == ErrorCodes.REFUSED_STREAM


# --- log, reset, lifecycle --------------------------------------------------------------------


async def test_request_log_records_what_was_sent_and_answered(
    sim: ApnsSimulator, good_jwt: str
) -> None:
    await push_once(sim, good_jwt, headers=hdrs(good_jwt, apns_collapse_id="m1"))
    record = sim.wait_for_requests(1)[0]
    assert (record.token, record.environment, record.method) == (TOKEN, "sandbox", "POST")
    assert record.payload == json.loads(ALERT) and record.raw_size == len(ALERT)
    assert record.jwt_claims == {"iss": TEAM, "iat": int(T0)}
    assert record.jwt_header is not None and record.jwt_header["kid"] == KEY_ID
    assert record.headers["apns-collapse-id"] == "m1"
    assert good_jwt not in record.headers["authorization"]
    assert (record.status, record.reason, record.outcome) == (200, None, "answered")


async def test_request_log_is_read_per_device_token_and_since_a_seq(
    sim: ApnsSimulator, good_jwt: str
) -> None:
    client = await connect(sim)
    try:
        for token in (TOKEN, OTHER_TOKEN, TOKEN.upper(), OTHER_TOKEN):
            await client.push(token, headers=hdrs(good_jwt))
    finally:
        await client.close()
    first = sim.requests()[0].seq - 1  # seq keeps counting across resets
    mine = sim.requests(token=TOKEN)
    later = sim.requests(token=OTHER_TOKEN, since=first + 2)
    async with httpx.AsyncClient(base_url=sim.control_url) as control:
        query = {"token": TOKEN, "since": first + 1}
        served = (await control.get("/requests", params=query)).json()
    assert ([r.seq - first for r in mine], [r.seq - first for r in later]) == ([1, 3], [4])
    assert [r["seq"] - first for r in served] == [3]


def test_wait_for_requests_times_out_naming_the_count(sim: ApnsSimulator) -> None:
    with pytest.raises(TimeoutError, match="saw 0 requests, expected 1"):
        sim.wait_for_requests(1, timeout=0.05)


async def test_reset_forgets_devices_keys_faults_and_log(sim: ApnsSimulator, good_jwt: str) -> None:
    sim.unregister_device(TOKEN)
    sim.add_fault(Fault(reason="Shutdown"))
    await push_once(sim, good_jwt)
    sim.reset()
    answer = await push_once(sim, good_jwt)
    assert (answer.status, answer.reason) == (403, "InvalidProviderToken")
    assert len(sim.requests()) == 1


def test_stop_is_idempotent_and_closes_the_listeners(tmp_path: Path) -> None:
    sim = ApnsSimulator.start(tmp_path)
    port = urlsplit(sim.sandbox_origin).port
    sim.stop()
    sim.stop()
    with pytest.raises(OSError):
        import socket

        socket.create_connection(("127.0.0.1", port or 0), timeout=1).close()


def test_certificates_are_kept_across_restarts(tmp_path: Path) -> None:
    with ApnsSimulator.start(tmp_path) as first:
        ca = first.ca_file.read_bytes()
    with ApnsSimulator.start(tmp_path) as second:
        assert second.ca_file.read_bytes() == ca


# --- control endpoint -------------------------------------------------------------------------


async def test_control_endpoint_scripts_and_inspects(
    sim: ApnsSimulator, signing_key: ec.EllipticCurvePrivateKey
) -> None:
    other = ec.generate_private_key(ec.SECP256R1())
    async with httpx.AsyncClient(base_url=sim.control_url) as control:
        health = await control.get("/health")
        await control.post("/reset")
        await control.post(
            "/keys",
            json={
                "keyId": "CTRLKEY001",
                "teamId": "CTRLTEAM01",
                "publicKeyPem": _public_pem(other).decode(),
            },
        )
        await control.post("/devices/unregister", json={"token": OTHER_TOKEN, "atMs": 7})
        await control.post("/faults", json={"token": TOKEN, "reason": "TooManyRequests"})
        await control.post("/clock", json={"advanceSeconds": 10})
        jwt = make_jwt(other, kid="CTRLKEY001", iss="CTRLTEAM01", iat=T0 + 10)
        client = await connect(sim)
        try:
            gone = await client.push(OTHER_TOKEN, headers=hdrs(jwt))
            limited = await client.push(headers=hdrs(jwt))
            await control.delete("/faults")
            ok = await client.push(headers=hdrs(jwt))
        finally:
            await client.close()
        requests = (await control.get("/requests")).json()
        connections = (await control.get("/connections")).json()
        missing = await control.get("/nowhere")
        bad = await control.post("/devices", json={"environment": "sandbox"})
    assert health.json()["status"] == "ok"
    assert json.loads(gone.body) == {"reason": "Unregistered", "timestamp": 7}
    assert (limited.status, ok.status) == (429, 200)
    assert [r["status"] for r in requests] == [410, 429, 200]
    assert requests[0]["jwtClaims"]["iss"] == "CTRLTEAM01"
    assert connections[-1]["teamId"] == "CTRLTEAM01"
    assert (missing.status_code, bad.status_code) == (404, 400)


async def test_control_endpoint_registers_strict_devices_and_sets_the_clock(
    sim: ApnsSimulator, signing_key: ec.EllipticCurvePrivateKey
) -> None:
    async with httpx.AsyncClient(base_url=sim.control_url) as control:
        await control.post("/devices/strict", json={"enabled": True})
        await control.post("/devices", json={"token": TOKEN, "environment": "production"})
        now = (await control.post("/clock", json={"epochSeconds": T0 + 5000})).json()["now"]
    answer = await push_once(sim, make_jwt(signing_key, iat=T0 + 5000), production=True)
    assert (now, answer.status) == (T0 + 5000, 200)


# --- command line -----------------------------------------------------------------------------


def test_cli_prints_settings_serves_and_exits_cleanly_on_sigterm(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    keys_dir = tmp_path / "keys"
    keys_dir.mkdir()
    (keys_dir / "FILEKEY001.json").write_text(
        json.dumps({"teamId": "FILETEAM01", "publicKeyPem": _public_pem(key).decode()})
    )
    faults = tmp_path / "faults.json"
    faults.write_text(json.dumps([{"token": OTHER_TOKEN, "reason": "TooManyRequests"}]))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "devtools.apns_simulator",
            "--state-dir",
            str(tmp_path / "state"),
            "--keys-dir",
            str(keys_dir),
            "--faults",
            str(faults),
            "--dev-app",
            TOPIC,
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert proc.stdout is not None
        line = json.loads(proc.stdout.readline())
        settings = line["settings"]
        health = httpx.get(line["control_url"] + "/health", timeout=5)
        app = json.loads(settings["APNS_APPS"])[0]
        dev_key = serialization.load_pem_private_key(
            Path(app["privateKeyFile"]).read_bytes(), password=None
        )
        assert isinstance(dev_key, ec.EllipticCurvePrivateKey)
        now = time.time()
        dev_jwt = make_jwt(dev_key, kid=app["keyId"], iss=app["teamId"], iat=now)
        file_jwt = make_jwt(key, kid="FILEKEY001", iss="FILETEAM01", iat=now)
        with httpx.Client(http2=True, verify=_trust(settings["APNS_CA_FILE"])) as client:
            url = f"{settings['APNS_PRODUCTION_ORIGIN']}/3/device/"
            dev = client.post(url + TOKEN, headers=dict(hdrs(dev_jwt)), content=ALERT)
            with httpx.Client(http2=True, verify=_trust(settings["APNS_CA_FILE"])) as second:
                faulted = second.post(
                    url + OTHER_TOKEN, headers=dict(hdrs(file_jwt)), content=ALERT
                )
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=10)
    assert code == 0
    assert health.status_code == 200
    assert settings["APNS_SANDBOX_ORIGIN"] == line["sandbox_origin"]
    assert (app["bundleId"], len(app["keyId"]), len(app["teamId"])) == (TOPIC, 10, 10)
    assert (dev.status_code, faulted.status_code) == (200, 429)

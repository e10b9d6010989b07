"""The connection's own HTTP/2 framing against a server-side ``h2`` connection, byte for byte.

Each test wires one :class:`Connection` to an ``h2`` server in memory and moves the bytes by
hand, so frame splitting, CONTINUATION, flow control, padding and protocol errors are checked
against an independent HTTP/2 implementation.
"""

from __future__ import annotations

import asyncio
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.settings
import pytest
from h2.errors import ErrorCodes

from shared.apns import frames
from shared.apns.connection import Connection, Request, StreamFailed

pytestmark = pytest.mark.unit

FIELDS = ((b"apns-topic", b"com.example.chat"), (b"apns-push-type", b"alert"))


class _Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.sent = bytearray()
        self.closing = False
        self.aborted = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.sent += data

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = self.aborted = True

    def is_closing(self) -> bool:
        return self.closing

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def take(self) -> bytes:
        data = bytes(self.sent)
        self.sent.clear()
        return data


class Wire:
    """A Connection and an h2 server joined by hand-moved bytes."""

    def __init__(self, server_settings: dict[int, int] | None = None) -> None:
        config = h2.config.H2Configuration(client_side=False, header_encoding=None)
        self.server = h2.connection.H2Connection(config=config)
        self.server.local_settings = h2.settings.Settings(
            client=False, initial_values=dict(server_settings or {})
        )
        self.conn = Connection(
            authority="apns.test",
            token=None,
            max_streams=1000,
            clock=lambda: 0.0,
            on_change=lambda _c: None,
        )
        self.transport = _Transport()
        self.events: list[h2.events.Event] = []
        self.conn.connection_made(self.transport)
        self.server.initiate_connection()
        self.exchange()

    def exchange(self, chunk: int | None = None) -> None:
        """Move bytes both ways until neither side has anything left to say."""
        for _ in range(50):
            self.conn._flush()
            to_server = self.transport.take()
            if to_server:
                self.events += self.server.receive_data(to_server)
            to_client = self.server.data_to_send()
            if not to_server and not to_client:
                return
            step = chunk or len(to_client) or 1
            for at in range(0, len(to_client), step):
                self.conn.data_received(to_client[at : at + step])

    def requests(self, ack: bool = True) -> dict[int, tuple[dict[bytes, bytes], bytes]]:
        seen: dict[int, tuple[dict[bytes, bytes], bytes]] = {}
        for event in self.events:
            if isinstance(event, h2.events.RequestReceived):
                seen[event.stream_id] = (dict(event.headers), b"")
            elif isinstance(event, h2.events.DataReceived):
                headers, body = seen[event.stream_id]
                seen[event.stream_id] = (headers, body + event.data)
                if ack:
                    self.server.acknowledge_received_data(
                        event.flow_controlled_length, event.stream_id
                    )
        return seen

    def submit(self, body: bytes = b'{"aps":{}}', **per_push: bytes) -> asyncio.Future[Any]:
        extra = tuple((name.replace("_", "-").encode(), value) for name, value in per_push.items())
        request = Request(b"/3/device/" + b"ab" * 32, FIELDS, ((b"apns-id", b"x"), *extra), body)
        return self.conn.submit(request, timeout=5.0)


async def test_header_block_over_the_frame_size_goes_out_in_continuation_frames() -> None:
    wire = Wire()
    big = b"v" * 40_000
    wire.submit(apns_big=big)
    wire.exchange()
    ((headers, body),) = wire.requests().values()
    assert (headers[b"apns-big"], body) == (big, b'{"aps":{}}')


async def test_body_over_the_peers_frame_size_is_split_and_arrives_whole() -> None:
    wire = Wire({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1 << 20})
    wire.server.increment_flow_control_window(1 << 20)
    wire.exchange()
    body = bytes(range(256)) * 200  # 51,200 bytes: four DATA frames of at most 16,384
    wire.submit(body)
    wire.exchange()
    ((_, received),) = wire.requests().values()
    assert received == body


async def test_body_waits_when_settings_shrink_the_stream_window_then_resumes() -> None:
    wire = Wire({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 100})
    body = b"y" * 1_000
    wire.submit(body)
    wire.exchange()
    assert len(wire.requests(ack=False)[1][1]) == 100
    wire.server.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 65_535})
    wire.exchange()  # no WINDOW_UPDATE: only the new initial window lets the rest go
    assert wire.requests(ack=False)[1][1] == body


async def test_answers_split_at_every_byte_are_read_whole() -> None:
    wire = Wire()
    future = wire.submit()
    wire.exchange()
    wire.server.send_headers(1, [(b":status", b"400"), (b"apns-id", b"abc")])
    wire.server.send_data(1, b'{"reason":"BadDeviceToken"}', end_stream=True, pad_length=7)
    wire.exchange(chunk=1)
    assert future.result() == (400, b'{"reason":"BadDeviceToken"}', "abc", None)


async def test_informational_answer_is_skipped_for_the_final_one() -> None:
    wire = Wire()
    future = wire.submit()
    wire.exchange()
    # A padded 1xx (":status" literal "1") with an empty priority block before it.
    block = b"\x08\x01\x31"
    padded = b"\x03" + b"\x00\x00\x00\x00\x10" + block + b"\x00" * 3
    flags = frames.END_HEADERS | frames.PADDED | frames.PRIORITY_FLAG
    wire.conn.data_received(frames.frame(frames.HEADERS, flags, 1, padded))
    wire.server.send_headers(1, [(b":status", b"200"), (b"apns-id", b"abc")], end_stream=True)
    wire.exchange()
    assert future.result() == (200, b"", "abc", None)


async def test_large_answers_refill_our_receive_windows() -> None:
    wire = Wire()
    futures = [wire.submit() for _ in range(3)]
    wire.exchange()
    body = b"z" * 40_000  # three of these exceed our 65,535-byte connection window
    for stream_id in (1, 3, 5):
        wire.server.send_headers(stream_id, [(b":status", b"500")])
    pending = {1: body, 3: body, 5: body}
    for _ in range(20):
        for stream_id, rest in list(pending.items()):
            size = min(len(rest), wire.server.local_flow_control_window(stream_id), 16_384)
            if size:
                wire.server.send_data(stream_id, rest[:size], end_stream=size == len(rest))
                pending[stream_id] = rest[size:]
                if not pending[stream_id]:
                    del pending[stream_id]
        wire.exchange()
    assert [f.result()[1] for f in futures] == [body] * 3


async def test_ping_from_apns_is_acknowledged_with_its_payload() -> None:
    wire = Wire()
    wire.server.ping(b"8 bytes!")
    wire.exchange()
    assert any(isinstance(e, h2.events.PingAckReceived) for e in wire.events)


async def test_frame_over_our_size_limit_ends_the_connection_with_goaway() -> None:
    wire = Wire()
    future = wire.submit()
    wire.exchange()
    wire.conn.data_received(frames.frame(frames.DATA, 0, 1, b"x" * 20_000))
    with pytest.raises(StreamFailed) as failed:
        future.result()
    events = wire.server.receive_data(wire.transport.take())
    goaway = [e for e in events if isinstance(e, h2.events.ConnectionTerminated)]
    assert (failed.value.unprocessed, goaway[0].error_code, wire.transport.aborted) == (
        False,
        ErrorCodes.FRAME_SIZE_ERROR,
        True,
    )


async def test_undecodable_header_block_is_a_compression_error() -> None:
    wire = Wire()
    wire.submit()
    wire.exchange()
    wire.conn.data_received(frames.frame(frames.HEADERS, frames.END_HEADERS, 1, b"\xff"))
    events = wire.server.receive_data(wire.transport.take())
    goaway = [e for e in events if isinstance(e, h2.events.ConnectionTerminated)]
    assert goaway[0].error_code == ErrorCodes.COMPRESSION_ERROR


async def test_data_beyond_our_window_is_a_flow_control_error() -> None:
    wire = Wire()
    wire.submit()
    wire.exchange()
    for _ in range(4):  # 4 x 16,000 bytes fit in 65,535; a fifth, unacknowledged, does not
        wire.conn._receive(frames.frame(frames.DATA, 0, 1, b"x" * 16_000))
    with pytest.raises(frames.FrameError) as error:
        wire.conn._receive(frames.frame(frames.DATA, 0, 1, b"x" * 16_000))
    assert error.value.code == ErrorCodes.FLOW_CONTROL_ERROR


async def test_answer_on_a_stream_never_opened_is_a_protocol_error() -> None:
    wire = Wire()
    wire.submit()
    wire.exchange()
    with pytest.raises(frames.FrameError):
        wire.conn._receive(frames.frame(frames.HEADERS, frames.END_HEADERS, 3, b"\x88"))


async def test_new_streams_stop_at_the_peers_limit() -> None:
    wire = Wire({h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 2})
    first, second, third = wire.submit(), wire.submit(), wire.submit()
    wire.exchange()
    with pytest.raises(StreamFailed) as refused:
        third.result()
    assert (refused.value.unprocessed, sorted(wire.requests())) == (True, [1, 3])
    assert not first.done() and not second.done()

"""An in-memory HTTP/2 APNs server for the APNs client's unit tests: real h2 framing, no sockets.

The client's ``opener`` is replaced by :meth:`FakeApnsServer.opener`, which wires the client
protocol to a server-side ``h2`` connection through in-memory transports. Each request is
answered by the next scripted :class:`Act` (default: 200), so a test says what APNs does and
asserts what the client ends up with. (The push use cases' tests fake the client itself, one
level up: :mod:`tests.fakes.apns`.)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from h2.errors import ErrorCodes


@dataclass(frozen=True)
class Act:
    """What the fake APNs does with one request."""

    status: int = 200
    reason: str | None = None
    timestamp: int | None = None
    kind: str = "answer"  # answer | hold | ignore | refuse | goaway | close
    goaway_reason: str | None = None
    max_streams_before: int | None = None  # send SETTINGS lowering/raising the limit first


@dataclass
class Received:
    """One request as the fake server saw it."""

    connection: int
    stream_id: int
    headers: dict[str, str]
    never_indexed: set[str]
    body: bytes = b""

    @property
    def json(self) -> Any:
        return json.loads(self.body)


class _Pipe(asyncio.Transport):
    """One direction-aware end of an in-memory byte pipe."""

    def __init__(self, loop: asyncio.AbstractEventLoop, deliver: Callable[[bytes], None]) -> None:
        super().__init__()
        self._loop = loop
        self._deliver = deliver
        self._closing = False
        self.on_close: Callable[[], None] = lambda: None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._closing and data:
            self._loop.call_soon(self._deliver, bytes(data))

    def close(self) -> None:
        if not self._closing:
            self._closing = True
            self._loop.call_soon(self.on_close)

    def abort(self) -> None:
        self.close()

    def is_closing(self) -> bool:
        return self._closing

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


class _ServerConnection:
    def __init__(self, server: FakeApnsServer, index: int, client: asyncio.Protocol) -> None:
        self.server = server
        self.index = index
        self.client = client
        self.alive = True
        config = h2.config.H2Configuration(client_side=False, header_encoding=None)
        self.h2 = h2.connection.H2Connection(config=config)
        self.h2.local_settings = h2.settings.Settings(
            client=False,
            initial_values={
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: server.max_streams,
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: server.initial_window,
            },
        )
        self.requests: dict[int, Received] = {}
        self.open = 0
        self.pings = 0

    def start(self) -> None:
        self.h2.initiate_connection()
        if self.server.connection_window > 65535:
            self.h2.increment_flow_control_window(self.server.connection_window - 65535)
        self.flush()

    def flush(self) -> None:
        data = self.h2.data_to_send()
        if data and self.alive:
            loop = asyncio.get_running_loop()
            loop.call_soon(self._to_client, data)

    def _to_client(self, data: bytes) -> None:
        if self.alive:
            self.client.data_received(data)

    def receive(self, data: bytes) -> None:
        if not self.alive:
            return
        for event in self.h2.receive_data(data):
            if isinstance(event, h2.events.RequestReceived):
                headers = {k.decode(): v.decode() for k, v in event.headers}
                never = {
                    h[0].decode() for h in event.headers if getattr(h, "indexable", True) is False
                }
                self.requests[event.stream_id] = Received(
                    self.index, event.stream_id, headers, never
                )
                self.open += 1
                self.server.max_open_seen = max(self.server.max_open_seen, self.open)
                self.server.max_total_open = max(
                    self.server.max_total_open, self.server.total_open()
                )
            elif isinstance(event, h2.events.DataReceived):
                self.requests[event.stream_id].body += event.data
                if not self.server.withhold_window:
                    self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                self.server.dispatch(self, self.requests[event.stream_id])
            elif isinstance(event, h2.events.PingReceived):
                self.pings += 1
            elif isinstance(event, h2.events.StreamReset) and event.stream_id in self.requests:
                self.open -= 1
        self.flush()

    def answer(self, request: Received, act: Act) -> None:
        if not self.alive:
            return
        self.open -= 1
        headers = [(b":status", str(act.status).encode()), (b"apns-id", request_id(request))]
        if act.status == 200:
            self.h2.send_headers(request.stream_id, headers, end_stream=True)
        else:
            document: dict[str, object] = {"reason": act.reason}
            if act.timestamp is not None:
                document["timestamp"] = act.timestamp
            body = json.dumps(document).encode()
            headers.append((b"content-type", b"application/json"))
            self.h2.send_headers(request.stream_id, headers)
            self.h2.send_data(request.stream_id, body, end_stream=True)
        self.flush()

    def close(self) -> None:
        if self.alive:
            self.alive = False
            self.server.transports[self.index].close()


def request_id(request: Received) -> bytes:
    return request.headers.get("apns-id", "00000000-0000-4000-8000-000000000000").encode()


@dataclass
class FakeApnsServer:
    """The fake APNs: scripted answers, a request log, and connection bookkeeping."""

    max_streams: int = 1000
    initial_window: int = 65535
    connection_window: int = 65535
    withhold_window: bool = False
    refuse_connects: int = 0
    script: deque[Act] = field(default_factory=deque)
    received: list[Received] = field(default_factory=list)
    held: list[tuple[_ServerConnection, Received]] = field(default_factory=list)
    connections: list[_ServerConnection] = field(default_factory=list)
    transports: list[_Pipe] = field(default_factory=list)
    opened_to: list[tuple[str, int]] = field(default_factory=list)
    max_open_seen: int = 0
    max_total_open: int = 0

    def then(self, *acts: Act) -> FakeApnsServer:
        self.script.extend(acts)
        return self

    def total_open(self) -> int:
        return sum(c.open for c in self.connections if c.alive)

    async def opener(
        self, factory: Callable[[], asyncio.Protocol], host: str, port: int, **_: Any
    ) -> tuple[asyncio.Transport, asyncio.Protocol]:
        self.opened_to.append((host, port))
        if self.refuse_connects > 0:
            self.refuse_connects -= 1
            raise ConnectionRefusedError(f"refused {host}:{port}")
        loop = asyncio.get_running_loop()
        protocol = factory()
        index = len(self.connections)
        server = _ServerConnection(self, index, protocol)
        client_end = _Pipe(loop, server.receive)
        self.connections.append(server)
        self.transports.append(client_end)

        def closed() -> None:
            server.alive = False
            protocol.connection_lost(None)

        client_end.on_close = closed
        protocol.connection_made(client_end)
        server.start()
        return client_end, protocol

    def dispatch(self, conn: _ServerConnection, request: Received) -> None:
        self.received.append(request)
        act = self.script.popleft() if self.script else Act()
        if act.max_streams_before is not None:
            conn.h2.update_settings(
                {h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: act.max_streams_before}
            )
            conn.flush()
        if act.kind == "answer":
            conn.answer(request, act)
        elif act.kind == "hold":
            self.held.append((conn, request))
        elif act.kind == "refuse":
            conn.open -= 1
            conn.h2.reset_stream(request.stream_id, ErrorCodes.REFUSED_STREAM)
            conn.flush()
        elif act.kind == "goaway":
            data = json.dumps({"reason": act.goaway_reason}).encode()
            conn.h2.close_connection(
                ErrorCodes.NO_ERROR, additional_data=data, last_stream_id=request.stream_id - 2
            )
            conn.flush()
            asyncio.get_running_loop().call_soon(conn.close)
        elif act.kind == "close":
            conn.close()
        # "ignore": never answer

    def release(self, count: int | None = None, act: Act | None = None) -> int:
        """Answer held requests (all, or the first ``count``) with ``act`` (default 200)."""
        released = 0
        while self.held and (count is None or released < count):
            conn, request = self.held.pop(0)
            conn.answer(request, act or Act())
            released += 1
        return released

    def goaway(self, last_stream_id: int, reason: str) -> None:
        """GOAWAY on the first connection, then keep answering streams up to ``last_stream_id``
        (as a draining server does; h2 itself would stop, so its state is nudged back)."""
        conn = self.connections[0]
        data = json.dumps({"reason": reason}).encode()
        conn.h2.close_connection(ErrorCodes.NO_ERROR, data, last_stream_id=last_stream_id)
        conn.h2.state_machine.state = h2.connection.ConnectionState.SERVER_OPEN
        conn.flush()

    def set_max_streams(self, value: int) -> None:
        for conn in self.connections:
            if conn.alive:
                conn.h2.update_settings({h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: value})
                conn.flush()

    def grant_window(self) -> None:
        """Send WINDOW_UPDATEs for everything received (after ``withhold_window``)."""
        for conn in self.connections:
            if not conn.alive:
                continue
            for request in conn.requests.values():
                if request.body:
                    conn.h2.increment_flow_control_window(len(request.body))
                    with contextlib.suppress(h2.exceptions.StreamClosedError):
                        conn.h2.increment_flow_control_window(
                            len(request.body), stream_id=request.stream_id
                        )
            conn.flush()


async def let_traffic_flow(rounds: int = 20) -> None:
    """Let in-memory traffic flow: a few loop turns (no wall-clock waiting)."""
    for _ in range(rounds):
        await asyncio.sleep(0)

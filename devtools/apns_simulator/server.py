"""The HTTP/2 side: one asyncio protocol per TLS connection, driving ``h2`` directly.

The simulator enforces the advertised SETTINGS_MAX_CONCURRENT_STREAMS itself (a stream over the
limit is reset with REFUSED_STREAM, as APNs does) instead of letting h2 turn it into a connection
error, so h2's own inbound limit is lifted."""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from dataclasses import dataclass, field
from typing import Any

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    RequestReceived,
    StreamEnded,
    StreamReset,
    WindowUpdated,
)
from h2.exceptions import ProtocolError
from h2.settings import SettingCodes, Settings

from devtools.apns_simulator.pki import certificate_identity
from devtools.apns_simulator.state import (
    ConnState,
    Decision,
    Environment,
    IncomingRequest,
    SimulatorState,
    fast_uuid4,
)

log = logging.getLogger(__name__)

# Keep at most this much of a body: enough to decode any valid payload, and bounded for floods.
BODY_CAP = 64 * 1024
GOAWAY_GRACE_SECONDS = 0.25


# Our own response headers are well-formed lowercase bytes: skip h2's per-header outbound checks
# (the hot path under load). Inbound headers are still validated.
_H2_CONFIG = H2Configuration(
    client_side=False,
    header_encoding=None,
    validate_outbound_headers=False,
    normalize_outbound_headers=False,
    split_outbound_cookies=False,
)


class _SimulatorEnforcedLimit(Settings):
    """h2 local settings whose inbound stream limit is enforced by the simulator, not by h2."""

    @property
    def max_concurrent_streams(self) -> int:
        return 2**31 - 1


@dataclass
class _Stream:
    stream_id: int
    method: str
    path: str
    headers: list[tuple[str, str]]
    body: bytearray = field(default_factory=bytearray)
    raw_size: int = 0


class ApnsProtocol(asyncio.Protocol):
    """One client connection to the sandbox or production listener."""

    def __init__(self, state: SimulatorState, environment: Environment, live: set[ApnsProtocol]):
        self.state = state
        self.environment: Environment = environment
        self.live = live
        self.transport: asyncio.Transport | None = None
        self.h2: H2Connection | None = None
        self.conn: ConnState | None = None
        self.streams: dict[int, _Stream] = {}
        self.seen: list[int] = []
        self.pending: dict[int, bytes] = {}
        self.closed = False
        self.goaway_sent = False

    # --- asyncio callbacks --------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.live.add(self)
        ssl_object: ssl.SSLObject | None = transport.get_extra_info("ssl_object")
        if ssl_object is None or ssl_object.selected_alpn_protocol() != "h2":
            log.info("closing a connection that did not negotiate h2 via ALPN")
            transport.close()
            return
        der = ssl_object.getpeercert(binary_form=True)
        if der:
            topic, not_after = certificate_identity(der)
            self.conn = self.state.open_connection(
                self.environment, "certificate", topic, not_after
            )
        else:
            self.conn = self.state.open_connection(self.environment, "token", None, None)
        self.h2 = H2Connection(_H2_CONFIG)
        self.h2.local_settings = _SimulatorEnforcedLimit(
            client=False,
            initial_values={
                SettingCodes.MAX_CONCURRENT_STREAMS: self.conn.stream_limit,
                SettingCodes.MAX_HEADER_LIST_SIZE: 65536,
            },
        )
        self.h2.initiate_connection()
        self._flush()

    def data_received(self, data: bytes) -> None:
        if self.h2 is None or self.goaway_sent or self.closed:
            return
        try:
            events = self.h2.receive_data(data)
        except ProtocolError as exc:
            log.info("connection %s: HTTP/2 protocol error: %s", self._cid(), exc)
            self._flush()
            self._close()
            return
        for event in events:
            if self.goaway_sent or self.closed:
                break  # streams after a GOAWAY or a dropped connection are never processed
            if isinstance(event, RequestReceived):
                self._on_request(event)
            elif isinstance(event, DataReceived):
                self._on_data(event)
            elif isinstance(event, StreamEnded):
                self._on_end(event.stream_id)
            elif isinstance(event, StreamReset):
                self.streams.pop(event.stream_id, None)
                self.pending.pop(event.stream_id, None)
            elif isinstance(event, WindowUpdated):
                self._send_pending()
            elif isinstance(event, ConnectionTerminated):
                self._close()
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.live.discard(self)
        if self.conn is not None:
            self.state.close_connection(self.conn)

    # --- request handling ---------------------------------------------------------------------
    def _on_request(self, event: RequestReceived) -> None:
        assert self.h2 is not None and self.conn is not None
        method = path = ""
        headers: list[tuple[str, str]] = []
        for raw_name, raw_value in event.headers or ():
            name = bytes(raw_name).decode("latin-1")
            value = bytes(raw_value).decode("utf-8", "replace")
            if name == ":method":
                method = value
            elif name == ":path":
                path = value
            elif not name.startswith(":"):
                headers.append((name, value))
        sid = event.stream_id
        self.seen.append(sid)
        limit = self.h2.local_settings[SettingCodes.MAX_CONCURRENT_STREAMS]
        if len(self.streams) >= limit:
            self.h2.reset_stream(sid, ErrorCodes.REFUSED_STREAM)
            self.state.refused_by_limit(self.conn, sid, method, path)
            return
        self.streams[sid] = _Stream(sid, method, path, headers)

    def _on_data(self, event: DataReceived) -> None:
        assert self.h2 is not None
        stream = self.streams.get(event.stream_id)
        data = event.data or b""
        if stream is not None:
            stream.raw_size += len(data)
            if len(stream.body) < BODY_CAP:
                stream.body += data
        self.h2.acknowledge_received_data(event.flow_controlled_length or 0, event.stream_id)

    def _on_end(self, stream_id: int) -> None:
        assert self.h2 is not None and self.conn is not None
        stream = self.streams.get(stream_id)
        if stream is None:
            return
        request = IncomingRequest(
            stream_id, stream.method, stream.path, stream.headers, bytes(stream.body),
            stream.raw_size,
        )  # fmt: skip
        decision = self.state.decide(self.conn, request)
        if decision.lower_streams_to is not None:
            self._set_stream_limit(decision.lower_streams_to)
        if decision.action == "no_answer":
            self.state.finish(decision.record, "no_answer")
            return
        if decision.delay > 0:
            loop = asyncio.get_running_loop()
            loop.call_later(decision.delay, self._execute_later, decision)
        else:
            self._execute(decision)

    def _execute_later(self, decision: Decision) -> None:
        self._execute(decision)
        self._flush()

    def _execute(self, decision: Decision) -> None:
        assert self.h2 is not None and self.conn is not None
        sid = decision.record.stream_id
        if self.closed or self.goaway_sent:
            self.state.finish(decision.record, "closed")
            return
        if sid not in self.streams:
            # The client reset the stream while the answer was delayed.
            self.state.finish(decision.record, "closed")
            return
        if decision.action == "close":
            self.state.finish(decision.record, "closed")
            self._abort()
        elif decision.action == "goaway":
            self._goaway(decision)
        elif decision.action == "reset":
            del self.streams[sid]
            self.h2.reset_stream(sid, ErrorCodes.REFUSED_STREAM)
            self.state.finish(decision.record, "reset")
        else:
            self._answer(decision)

    def _answer(self, decision: Decision) -> None:
        assert self.h2 is not None and self.conn is not None
        sid = decision.record.stream_id
        headers = [(b":status", b"%d" % decision.status), (b"apns-id", decision.apns_id.encode())]
        if decision.unique_id:
            headers.append((b"apns-unique-id", fast_uuid4().encode()))
        if decision.body:
            headers.append((b"content-type", b"application/json"))
            headers.append((b"content-length", b"%d" % len(decision.body)))
        del self.streams[sid]
        self.h2.send_headers(sid, headers, end_stream=not decision.body)
        if decision.body:
            self.pending[sid] = decision.body
            self._send_pending()
        self.state.finish(decision.record, "answered")
        if decision.status == 200 and not self.conn.first_success:
            self.conn.first_success = True
            if self.conn.auth == "token" and self.conn.stream_limit == 1:
                self._set_stream_limit(self.state.max_concurrent_streams)

    def _goaway(self, decision: Decision) -> None:
        assert self.h2 is not None and self.conn is not None
        sid = decision.record.stream_id
        last = max((s for s in self.seen if s < sid), default=0)
        reason = decision.goaway or ""
        self.conn.goaway_reason = reason
        self.h2.close_connection(
            error_code=ErrorCodes.NO_ERROR,
            additional_data=json.dumps({"reason": reason}).encode(),
            last_stream_id=last,
        )
        self.goaway_sent = True
        self.state.finish(decision.record, "closed")
        self._flush()
        asyncio.get_running_loop().call_later(GOAWAY_GRACE_SECONDS, self._close)

    def _set_stream_limit(self, limit: int) -> None:
        assert self.h2 is not None and self.conn is not None
        self.conn.stream_limit = limit
        self.h2.update_settings({SettingCodes.MAX_CONCURRENT_STREAMS: limit})
        self._flush()

    def _send_pending(self) -> None:
        assert self.h2 is not None
        for sid, data in list(self.pending.items()):
            try:
                window = self.h2.local_flow_control_window(sid)
            except ProtocolError:
                self.pending.pop(sid, None)
                continue
            size = min(window, self.h2.max_outbound_frame_size, len(data))
            if size <= 0:
                continue
            rest = data[size:]
            self.h2.send_data(sid, data[:size], end_stream=not rest)
            if rest:
                self.pending[sid] = rest
            else:
                del self.pending[sid]

    # --- plumbing -----------------------------------------------------------------------------
    def _flush(self) -> None:
        if self.h2 is None or self.transport is None or self.closed:
            return
        data = self.h2.data_to_send()
        if data:
            self.transport.write(data)

    def _close(self) -> None:
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.close()

    def _abort(self) -> None:
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.abort()

    def shutdown(self) -> None:
        """Drop the connection (simulator stop)."""
        self._abort()

    def _cid(self) -> Any:
        return self.conn.id if self.conn else "-"

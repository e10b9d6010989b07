"""One HTTP/2 connection to APNs: an asyncio protocol driving one ``h2`` connection object.

The hot path is lean on purpose: header tuples are prepared once per (topic, push type,
priority), HPACK is done by :class:`RequestHeaderEncoder`, writes are coalesced into one
``transport.write`` per event-loop turn, and a request costs one future and one timer.

What this module guarantees (the pain points of other providers, reference §4):

- every stream ends: answered, reset, failed on GOAWAY/connection loss, or timed out;
- REFUSED_STREAM and streams above a GOAWAY's ``last_stream_id`` fail as *unprocessed* (safe to
  resend at once); connection loss and timeouts fail as *ambiguous* (APNs may have delivered);
- SETTINGS_MAX_CONCURRENT_STREAMS is read on every SETTINGS frame and obeyed, and with token
  auth a fresh connection carries one stream until APNs has accepted its token (Apple);
- request bodies respect HTTP/2 flow control (queued until WINDOW_UPDATE);
- a timed-out stream retires its connection, and retire/close are idempotent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import ssl
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from h2.errors import ErrorCodes
from hpack import NeverIndexedHeaderTuple

from shared.apns.header_block import RequestHeaderEncoder, ResponseHeaderDecoder
from shared.apns.token import ProviderToken

logger = logging.getLogger(__name__)

_H2_CONFIG: Final = h2.config.H2Configuration(
    client_side=True,
    header_encoding=None,
    validate_outbound_headers=False,
    normalize_outbound_headers=False,
    validate_inbound_headers=False,
    normalize_inbound_headers=False,
)
_MAX_CONCURRENT: Final = h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS
# Token-auth answers that do not prove the token valid (so the one-stream rule still holds).
_UNPROVEN_STATUSES: Final = frozenset({403, 429})

Response = tuple[int, bytes, str | None, str | None]
"""(status, body, apns-id, apns-unique-id) of one answered request."""


class StreamFailed(Exception):  # noqa: N818 (internal signal, never leaves shared.apns)
    """A request got no answer. ``unprocessed``: APNs certainly did not act on it."""

    def __init__(self, message: str, *, unprocessed: bool) -> None:
        super().__init__(message)
        self.unprocessed = unprocessed


@dataclass(frozen=True, slots=True)
class Request:
    """What one push puts on the wire, independent of the connection it goes out on."""

    path: NeverIndexedHeaderTuple
    fields: tuple[tuple[bytes, bytes], ...]
    per_push: tuple[NeverIndexedHeaderTuple, ...]
    body: bytes


class _LeanH2Connection(h2.connection.H2Connection):
    """h2 counts open streams by scanning every stream it knows on each new stream. Closed
    streams are dropped from ``streams`` as soon as they end (:meth:`Connection._forget`), so
    the count is simply its length: O(1) instead of O(in flight) per request."""

    @property
    def open_outbound_streams(self) -> int:
        return len(self.streams)


class _Stream:
    __slots__ = ("apns_id", "body", "future", "pending", "status", "timer", "unique_id")

    def __init__(self, future: asyncio.Future[Response], timer: asyncio.TimerHandle) -> None:
        self.future = future
        self.timer = timer
        self.status = 0
        self.body = b""
        self.apns_id: str | None = None
        self.unique_id: str | None = None
        self.pending: memoryview | None = None


class Connection(asyncio.Protocol):
    """One APNs connection. Open it with :func:`open_connection`; submit with :meth:`submit`.

    ``on_change`` is called when capacity may have grown or the connection left service
    (answered stream, SETTINGS, retire, close); the pool uses it to wake waiting senders.
    """

    def __init__(
        self,
        *,
        authority: str,
        token: ProviderToken | None,
        max_streams: int,
        clock: Callable[[], float],
        on_change: Callable[[Connection], None],
        seq: int = 0,
        label: str = "",
    ) -> None:
        self.seq = seq
        self.label = label
        self.loop = asyncio.get_running_loop()
        self.ready: asyncio.Future[None] = self.loop.create_future()
        self.lost: asyncio.Future[None] = self.loop.create_future()
        self.retired = False
        self.closed = False
        self.alpn: str | None = None
        self.idle_since: float | None = clock()
        self._clock = clock
        self._on_change = on_change
        self._authority = (b":authority", authority.encode("ascii"))
        self._token = token
        self._token_proven = token is None
        self._auth_value = ""
        self._auth_header: NeverIndexedHeaderTuple | None = None
        self._max_streams = max_streams
        self._remote_max = 1
        self._streams: dict[int, _Stream] = {}
        self._blocked: deque[int] = deque()
        self._transport: asyncio.Transport | None = None
        self._flush_scheduled = False
        self._ping_sent_at: float | None = None
        self._h2 = _LeanH2Connection(config=_H2_CONFIG)
        self._h2.encoder = RequestHeaderEncoder()  # type: ignore[assignment]  # same interface
        self._h2.decoder = ResponseHeaderDecoder()  # type: ignore[assignment]  # same interface
        self._dispatch: dict[type, Callable[[Any], None]] = {
            h2.events.ResponseReceived: self._on_response,
            h2.events.DataReceived: self._on_data,
            h2.events.StreamEnded: self._on_stream_ended,
            h2.events.StreamReset: self._on_reset,
            h2.events.WindowUpdated: self._on_window,
            h2.events.RemoteSettingsChanged: self._on_settings,
            h2.events.ConnectionTerminated: self._on_goaway,
            h2.events.PingAckReceived: self._on_ping_ack,
        }

    # --- capacity -------------------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        """Streams waiting for an answer."""
        return len(self._streams)

    @property
    def available(self) -> int:
        """How many more streams may be opened now (0 when retired, closed or not ready)."""
        if self.retired or self.closed or not self.ready.done():
            return 0
        limit = self._remote_max if self._remote_max < self._max_streams else self._max_streams
        if not self._token_proven:
            limit = 1
        return limit - len(self._streams)

    # --- sending --------------------------------------------------------------------------

    def submit(self, request: Request, timeout: float) -> asyncio.Future[Response]:
        """Open a stream for ``request`` now (the caller checked :attr:`available`).

        The future resolves to a :data:`Response` or fails with :class:`StreamFailed`.
        """
        h2c = self._h2
        future: asyncio.Future[Response] = self.loop.create_future()
        headers = [
            (b":method", b"POST"),
            (b":scheme", b"https"),
            self._authority,
            request.path,
        ]
        if self._token is not None:
            headers.append(self._authorization())
        headers.extend(request.fields)
        headers.extend(request.per_push)
        try:
            stream_id = h2c.get_next_available_stream_id()
            h2c.send_headers(stream_id, headers)
        except h2.exceptions.TooManyStreamsError:
            future.set_exception(StreamFailed("stream limit reached", unprocessed=True))
            return future
        except h2.exceptions.H2Error as exc:
            future.set_exception(StreamFailed(f"cannot open a stream: {exc}", unprocessed=True))
            self.retire("h2 refused a new stream")
            return future
        timer = self.loop.call_at(self.loop.time() + timeout, self._timed_out, stream_id)
        stream = _Stream(future, timer)
        self._streams[stream_id] = stream
        self.idle_since = None
        body = request.body
        if len(body) <= h2c.local_flow_control_window(stream_id) and (
            len(body) <= h2c.max_outbound_frame_size
        ):
            h2c.send_data(stream_id, body, end_stream=True)
        else:
            stream.pending = memoryview(body)
            self._blocked.append(stream_id)
            self._pump()
        self._schedule_flush()
        return future

    def _authorization(self) -> NeverIndexedHeaderTuple:
        assert self._token is not None  # only called with token auth
        value = self._token.authorization()
        if value is not self._auth_value or self._auth_header is None:
            if self._auth_value:
                logger.info("connection %s: provider token renewed", self.label)
            self._auth_value = value
            self._auth_header = NeverIndexedHeaderTuple(b"authorization", value.encode("ascii"))
        return self._auth_header

    def _pump(self) -> None:
        """Send queued body bytes as far as the flow-control windows allow."""
        h2c = self._h2
        while self._blocked:
            stream_id = self._blocked[0]
            stream = self._streams.get(stream_id)
            if stream is None or stream.pending is None:
                self._blocked.popleft()
                continue
            window = min(h2c.local_flow_control_window(stream_id), h2c.max_outbound_frame_size)
            if window <= 0:
                return
            chunk = stream.pending[:window]
            rest = stream.pending[window:]
            done = len(rest) == 0
            h2c.send_data(stream_id, chunk.tobytes(), end_stream=done)
            stream.pending = None if done else rest
            if done:
                self._blocked.popleft()

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        data = self._h2.data_to_send()
        if data and self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    # --- asyncio.Protocol -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Start HTTP/2: preface and SETTINGS (no server push)."""
        assert isinstance(transport, asyncio.Transport)  # stream transports only
        self._transport = transport
        ssl_object = transport.get_extra_info("ssl_object")
        self.alpn = ssl_object.selected_alpn_protocol() if ssl_object is not None else None
        if ssl_object is not None and self.alpn != "h2":
            self._fail_ready("APNs did not negotiate HTTP/2 (ALPN h2)")
            transport.abort()
            return
        self._h2.initiate_connection()
        self._h2.update_settings({h2.settings.SettingCodes.ENABLE_PUSH: 0})
        self._flush()

    def data_received(self, data: bytes) -> None:
        """Feed bytes to h2 and handle the events."""
        try:
            events = self._h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            logger.warning("connection %s: HTTP/2 protocol error from APNs: %s", self.label, exc)
            self._flush()
            self.abort("protocol error")
            return
        dispatch = self._dispatch
        for event in events:
            handler = dispatch.get(type(event))
            if handler is not None:
                handler(event)
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        """Fail every stream still waiting; APNs may or may not have acted on them."""
        self.closed = True
        self.retired = True
        self._fail_ready("connection closed before HTTP/2 was ready")
        if self._streams:
            logger.warning(
                "connection %s lost with %d streams in flight", self.label, len(self._streams)
            )
            self._fail_all("connection lost", unprocessed=False)
        if not self.lost.done():
            self.lost.set_result(None)
        self._on_change(self)

    # --- events ---------------------------------------------------------------------------

    def _on_response(self, event: h2.events.ResponseReceived) -> None:
        stream = self._streams.get(event.stream_id)
        if stream is None:
            return
        for name, value in event.headers:
            if name == b":status":
                stream.status = int(value)
            elif name == b"apns-id":
                stream.apns_id = value.decode("ascii", "replace")
            elif name == b"apns-unique-id":
                stream.unique_id = value.decode("ascii", "replace")

    def _on_data(self, event: h2.events.DataReceived) -> None:
        self._h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        stream = self._streams.get(event.stream_id)
        if stream is not None:
            stream.body += event.data

    def _on_stream_ended(self, event: h2.events.StreamEnded) -> None:
        stream_id = event.stream_id
        stream = self._streams.pop(stream_id, None)
        if stream is None:
            return
        stream.timer.cancel()
        if stream.pending is not None:
            # APNs answered before reading the whole body (e.g. 413): close our half too.
            self._reset(stream_id, ErrorCodes.NO_ERROR)
        self._forget(stream_id)
        if not self._token_proven and stream.status not in _UNPROVEN_STATUSES:
            self._token_proven = True
        if not stream.future.done():
            stream.future.set_result((stream.status, stream.body, stream.apns_id, stream.unique_id))
        self._stream_finished()

    def _on_reset(self, event: h2.events.StreamReset) -> None:
        stream = self._streams.pop(event.stream_id, None)
        if stream is None:
            return
        stream.timer.cancel()
        self._forget(event.stream_id)
        refused = event.error_code == ErrorCodes.REFUSED_STREAM
        if not stream.future.done():
            stream.future.set_exception(
                StreamFailed(f"stream reset by APNs ({event.error_code!r})", unprocessed=refused)
            )
        self._stream_finished()

    def _on_window(self, _event: h2.events.WindowUpdated) -> None:
        if self._blocked:
            self._pump()

    def _on_settings(self, event: h2.events.RemoteSettingsChanged) -> None:
        changed = event.changed_settings.get(_MAX_CONCURRENT)
        if changed is not None:
            self._remote_max = max(0, int(changed.new_value))
            logger.debug("connection %s: APNs allows %d streams", self.label, self._remote_max)
        elif not self.ready.done():
            self._remote_max = self._h2.remote_settings.max_concurrent_streams
        if not self.ready.done():
            self.ready.set_result(None)
        self._on_change(self)

    def _on_goaway(self, event: h2.events.ConnectionTerminated) -> None:
        last = event.last_stream_id or 0
        logger.warning(
            "connection %s: APNs sent GOAWAY (%r, reason %s, last stream %d, %d in flight)",
            self.label,
            event.error_code,
            _goaway_reason(event.additional_data),
            last,
            len(self._streams),
        )
        self.retired = True
        for stream_id in [s for s in self._streams if s > last]:
            stream = self._streams.pop(stream_id)
            stream.timer.cancel()
            if not stream.future.done():
                stream.future.set_exception(
                    StreamFailed("above the GOAWAY's last stream", unprocessed=True)
                )
        if self._streams:
            # h2 stops accepting frames after GOAWAY, but APNs still answers the streams at or
            # below last_stream_id: keep receiving (we never open another stream here).
            self._h2.state_machine.state = h2.connection.ConnectionState.CLIENT_OPEN
        else:
            self.close()
        self._on_change(self)

    def _on_ping_ack(self, _event: h2.events.PingAckReceived) -> None:
        self._ping_sent_at = None

    # --- lifecycle ------------------------------------------------------------------------

    def _stream_finished(self) -> None:
        if not self._streams:
            self.idle_since = self._clock()
            if self.retired:
                self.close()
        self._on_change(self)

    def _forget(self, stream_id: int) -> None:
        # h2 counts open streams by scanning its dict on every new stream; dropping closed ones
        # at once keeps that scan as short as the number in flight.
        h2_stream = self._h2.streams.pop(stream_id, None)
        if h2_stream is not None:
            self._h2._closed_streams[stream_id] = h2_stream.closed_by

    def _reset(self, stream_id: int, code: ErrorCodes) -> None:
        try:
            self._h2.reset_stream(stream_id, code)
        except h2.exceptions.H2Error:
            return

    def _timed_out(self, stream_id: int) -> None:
        stream = self._streams.pop(stream_id, None)
        if stream is None:
            return
        self._reset(stream_id, ErrorCodes.CANCEL)
        self._forget(stream_id)
        if not stream.future.done():
            stream.future.set_exception(StreamFailed("no answer in time", unprocessed=False))
        # A stream that never answers is how dead connections show (reference §4.1): recycle.
        self.retire("a request timed out")
        self._stream_finished()
        self._schedule_flush()

    def retire(self, why: str) -> None:
        """Take no new streams; close once the streams in flight are answered. Idempotent."""
        if self.retired:
            return
        self.retired = True
        logger.info("connection %s retired: %s", self.label, why)
        if not self._streams:
            self.close()
        self._on_change(self)

    def close(self) -> None:
        """Say GOAWAY and close; streams still in flight fail as ambiguous. Idempotent."""
        self.retired = True
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(h2.exceptions.H2Error):
            self._h2.close_connection()
        self._flush()
        if self._transport is not None:
            self._transport.close()
        self._fail_all("connection closed", unprocessed=False)
        self._on_change(self)

    def abort(self, why: str) -> None:
        """Drop the connection at once (no GOAWAY). Idempotent."""
        self.retired = True
        self.closed = True
        self._fail_ready(why)
        if self._transport is not None:
            self._transport.abort()
        self._fail_all(why, unprocessed=False)
        self._on_change(self)

    def housekeep(
        self, now: float, *, idle_timeout: float, ping_after: float, ping_timeout: float
    ) -> None:
        """Close when idle too long; PING when idle a while; drop if a PING goes unanswered."""
        if self.closed or self._streams or self.idle_since is None:
            return
        idle = now - self.idle_since
        if idle >= idle_timeout:
            logger.debug("connection %s idle for %.0f s: closing", self.label, idle)
            self.close()
        elif self._ping_sent_at is not None:
            if now - self._ping_sent_at >= ping_timeout:
                logger.warning("connection %s: PING unanswered, dropping it", self.label)
                self.abort("PING unanswered")
        elif idle >= ping_after:
            self._ping_sent_at = now
            self._h2.ping(os.urandom(8))
            self._flush()

    def _fail_all(self, why: str, *, unprocessed: bool) -> None:
        streams, self._streams = self._streams, {}
        self._blocked.clear()
        for stream in streams.values():
            stream.timer.cancel()
            if not stream.future.done():
                stream.future.set_exception(StreamFailed(why, unprocessed=unprocessed))

    def _fail_ready(self, why: str) -> None:
        if not self.ready.done():
            self.ready.set_exception(StreamFailed(why, unprocessed=True))
            self.ready.exception()  # retrieved here: nobody may be waiting any more


Opener = Callable[..., Awaitable[tuple[asyncio.BaseTransport, asyncio.BaseProtocol]]]
"""``loop.create_connection``'s shape; tests pass an in-memory one."""


async def open_connection(
    connection: Connection,
    *,
    host: str,
    port: int,
    ssl_context: ssl.SSLContext,
    opener: Opener,
    connect_timeout: float,
) -> None:
    """Connect ``connection`` (TLS, ALPN h2) and wait for APNs' SETTINGS.

    Raises :class:`StreamFailed` (unprocessed) unless that happens within ``connect_timeout``.
    """
    try:
        async with asyncio.timeout(connect_timeout):
            await opener(lambda: connection, host, port, ssl=ssl_context, server_hostname=host)
            await connection.ready
    except (StreamFailed, asyncio.CancelledError):
        connection.abort("connect failed")
        raise
    except (OSError, TimeoutError) as exc:
        connection.abort("connect failed")
        reason = "timed out" if isinstance(exc, TimeoutError) else str(exc)
        raise StreamFailed(f"cannot connect to {host}:{port}: {reason}", unprocessed=True) from exc


def _goaway_reason(data: bytes | None) -> str:
    if not data:
        return "-"
    try:
        document = json.loads(data)
    except ValueError:
        return repr(data[:100])
    if isinstance(document, dict) and isinstance(document.get("reason"), str):
        return str(document["reason"])
    return repr(data[:100])

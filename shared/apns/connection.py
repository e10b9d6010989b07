"""One HTTP/2 connection to APNs: an asyncio protocol speaking the client side of HTTP/2.

The hot path is lean on purpose: header fields are prepared once per (topic, push type,
priority), HPACK is done by :class:`RequestHeaderEncoder`, frames are built and parsed here
(:mod:`shared.apns.frames`) rather than through a generic HTTP/2 library, writes are coalesced
into one ``transport.write`` per event-loop turn, and a request costs one future and one timer.

What this module guarantees (the pain points of other providers, reference §4):

- every stream ends: answered, reset, failed on GOAWAY/connection loss, or timed out;
- REFUSED_STREAM and streams above a GOAWAY's ``last_stream_id`` fail as *unprocessed* (safe to
  resend at once); connection loss and timeouts fail as *ambiguous* (APNs may have delivered);
- SETTINGS_MAX_CONCURRENT_STREAMS is read on every SETTINGS frame and obeyed, and with token
  auth a fresh connection carries one stream until APNs has accepted its token (Apple);
- request bodies respect HTTP/2 flow control (queued until WINDOW_UPDATE), header blocks and
  DATA frames the peer's SETTINGS_MAX_FRAME_SIZE (CONTINUATION beyond it);
- a peer that breaks HTTP/2 (bad frame sizes, windows, HPACK) gets GOAWAY and the connection is
  dropped;
- a timed-out stream retires its connection, and retire/close are idempotent.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import ssl
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import ClassVar, Final

from h2.errors import ErrorCodes
from hpack.exceptions import HPACKError

from shared.apns import frames
from shared.apns.header_block import RequestHeaderEncoder, ResponseHeaderDecoder
from shared.apns.token import ProviderToken

logger = logging.getLogger(__name__)

_HEAD: Final = frames.HEAD
_FLOW_CONTROL_ERROR: Final = ErrorCodes.FLOW_CONTROL_ERROR
_LOCAL_SETTINGS: Final = {
    frames.ENABLE_PUSH: 0,
    frames.MAX_CONCURRENT_STREAMS: 100,
    frames.MAX_HEADER_LIST_SIZE: 2**16,
}
_SETTINGS_ACK: Final = frames.frame(frames.SETTINGS, frames.ACK, 0)
# Our receive windows are the default 65,535 bytes; refill them once half is used.
_WINDOW_REFILL: Final = frames.DEFAULT_WINDOW // 2
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

    path: bytes
    fields: tuple[tuple[bytes, bytes], ...]
    """Indexable fields shared by many pushes (the same tuple object each time)."""
    per_push: tuple[tuple[bytes, bytes], ...]
    """Fields sent never indexed (``apns-id``, ``apns-expiration``, ``apns-collapse-id``)."""
    body: bytes


class _Stream:
    __slots__ = (
        "apns_id",
        "body",
        "future",
        "pending",
        "received",
        "status",
        "timer",
        "unique_id",
        "window",
    )

    def __init__(
        self, future: asyncio.Future[Response], timer: asyncio.TimerHandle, window: int
    ) -> None:
        self.future = future
        self.timer = timer
        self.window = window  # what we may still send on it (the peer's flow control)
        self.received = 0  # DATA bytes taken since our last WINDOW_UPDATE for it
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
        self._pseudo = (
            (b":method", b"POST"),
            (b":scheme", b"https"),
            (b":authority", authority.encode("ascii")),
        )
        self._token = token
        self._token_proven = token is None
        self._auth_value = ""
        self._auth_bytes = b""
        self._max_streams = max_streams
        self._remote_max = 1
        self._streams: dict[int, _Stream] = {}
        self._blocked: deque[int] = deque()
        self._transport: asyncio.Transport | None = None
        self._flush_scheduled = False
        self._ping_sent_at: float | None = None
        self._encoder = RequestHeaderEncoder()
        self._decoder = ResponseHeaderDecoder()
        self._out: list[bytes] = []
        self._inbox = b""
        self._next_stream_id = 1
        self._goaway = False
        self._settings_seen = False
        self._send_window = frames.DEFAULT_WINDOW
        self._initial_window = frames.DEFAULT_WINDOW
        self._max_frame = frames.DEFAULT_MAX_FRAME
        self._recv_window = frames.DEFAULT_WINDOW
        self._recv_unacked = 0
        self._headers_open: tuple[int, int, list[bytes]] | None = None

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
        future: asyncio.Future[Response] = self.loop.create_future()
        streams = self._streams
        stream_id = self._next_stream_id
        if self.closed or self._goaway or stream_id > frames.MAX_STREAM_ID:
            future.set_exception(StreamFailed("cannot open a stream", unprocessed=True))
            self.retire("no new streams on this connection")
            return future
        if len(streams) >= self._remote_max:
            future.set_exception(StreamFailed("stream limit reached", unprocessed=True))
            return future
        self._next_stream_id = stream_id + 2
        block = self._encoder.encode_request(
            self._pseudo,
            request.path,
            self._authorization() if self._token is not None else None,
            request.fields,
            request.per_push,
        )
        body = request.body
        size = len(body)
        out = self._out
        max_frame = self._max_frame
        if len(block) <= max_frame:
            flags = frames.END_HEADERS if size else frames.END_HEADERS | frames.END_STREAM
            out.append(_HEAD.pack(len(block) << 8 | frames.HEADERS, flags, stream_id))
            out.append(block)
        else:
            out.extend(frames.header_frames(stream_id, block, max_frame, end_stream=not size))
        timer = self.loop.call_at(self.loop.time() + timeout, self._timed_out, stream_id)
        stream = _Stream(future, timer, self._initial_window)
        streams[stream_id] = stream
        self.idle_since = None
        if size:
            if size <= self._send_window and size <= stream.window and size <= max_frame:
                out.append(_HEAD.pack(size << 8 | frames.DATA, frames.END_STREAM, stream_id))
                out.append(body)
                self._send_window -= size
                stream.window -= size
            else:
                stream.pending = memoryview(body)
                self._blocked.append(stream_id)
                self._pump()
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)
        return future

    def _authorization(self) -> bytes:
        assert self._token is not None  # only called with token auth
        value = self._token.authorization()
        if value is not self._auth_value:
            if self._auth_value:
                logger.info("connection %s: provider token renewed", self.label)
            self._auth_value = value
            self._auth_bytes = value.encode("ascii")
        return self._auth_bytes

    def _pump(self) -> None:
        """Send queued body bytes as far as the flow-control windows allow."""
        blocked = self._blocked
        for _ in range(len(blocked)):
            if self._send_window <= 0:
                return
            stream_id = blocked.popleft()
            stream = self._streams.get(stream_id)
            if stream is None or stream.pending is None:
                continue
            pending = stream.pending
            while pending and stream.window > 0 and self._send_window > 0:
                size = min(len(pending), stream.window, self._send_window, self._max_frame)
                done = size == len(pending)
                flags = frames.END_STREAM if done else 0
                self._out.append(frames.frame(frames.DATA, flags, stream_id, bytes(pending[:size])))
                self._send_window -= size
                stream.window -= size
                pending = pending[size:]
            if pending:
                stream.pending = pending
                blocked.append(stream_id)  # waits for a WINDOW_UPDATE, behind the others
            else:
                stream.pending = None

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        out = self._out
        if not out:
            return
        data = b"".join(out)
        out.clear()
        if self._transport is not None and not self._transport.is_closing():
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
        self._out.append(frames.PREFACE)
        self._out.append(frames.settings_frame(_LOCAL_SETTINGS))
        self._flush()

    def data_received(self, data: bytes) -> None:
        """Parse the frames in ``data`` (and what an earlier call left incomplete)."""
        if self.closed:
            return
        buffer = self._inbox + data if self._inbox else data
        try:
            used = self._receive(buffer)
        except (frames.FrameError, HPACKError) as exc:
            code = exc.code if isinstance(exc, frames.FrameError) else ErrorCodes.COMPRESSION_ERROR
            logger.warning("connection %s: HTTP/2 protocol error from APNs: %s", self.label, exc)
            self._out.append(frames.goaway_frame(0, code))
            self._flush()
            self.abort("protocol error")
            return
        self._inbox = buffer[used:] if used < len(buffer) else b""
        if self._recv_unacked >= _WINDOW_REFILL:
            self._out.append(frames.window_update_frame(0, self._recv_unacked))
            self._recv_window += self._recv_unacked
            self._recv_unacked = 0
        if self._out:
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

    # --- receiving ------------------------------------------------------------------------

    def _receive(self, buffer: bytes) -> int:
        """Handle every whole frame in ``buffer``; how many bytes were used. Raises
        FrameError or HPACKError when the peer breaks the protocol."""
        at = 0
        end = len(buffer)
        unpack = _HEAD.unpack_from
        while end - at >= 9 and not self.closed:
            head, flags, stream_id = unpack(buffer, at)
            length = head >> 8
            if length > frames.DEFAULT_MAX_FRAME:
                raise frames.FrameError("frame over our size limit", ErrorCodes.FRAME_SIZE_ERROR)
            stop = at + 9 + length
            if stop > end:
                break
            payload = buffer[at + 9 : stop]
            at = stop
            kind = head & 0xFF
            stream_id &= frames.MAX_STREAM_ID
            if self._headers_open is not None and kind != frames.CONTINUATION:
                raise frames.FrameError("header block interrupted")
            if kind == frames.HEADERS:
                self._on_headers_frame(stream_id, flags, payload)
            elif kind == frames.DATA:
                self._on_data(stream_id, flags, payload)
            elif not self._settings_seen and kind != frames.SETTINGS:
                raise frames.FrameError("APNs did not start with SETTINGS")
            else:
                handler = self._handlers.get(kind)
                if handler is not None:  # unknown frame types are ignored (RFC 9113 §4.1)
                    handler(self, stream_id, flags, payload)
        return at

    def _on_headers_frame(self, stream_id: int, flags: int, payload: bytes) -> None:
        if not self._settings_seen:
            raise frames.FrameError("APNs did not start with SETTINGS")
        if stream_id == 0:
            raise frames.FrameError("HEADERS on stream 0")
        if flags & (frames.PADDED | frames.PRIORITY_FLAG):
            payload = frames.unpad(payload, flags)
            if flags & frames.PRIORITY_FLAG:
                payload = payload[5:]
        if flags & frames.END_HEADERS:
            self._on_header_block(stream_id, flags, payload)
        else:
            self._headers_open = (stream_id, flags, [payload])

    def _on_continuation(self, stream_id: int, flags: int, payload: bytes) -> None:
        started = self._headers_open
        if started is None or started[0] != stream_id:
            raise frames.FrameError("CONTINUATION without its HEADERS")
        started[2].append(payload)
        if flags & frames.END_HEADERS:
            self._headers_open = None
            self._on_header_block(stream_id, started[1], b"".join(started[2]))

    def _on_header_block(self, stream_id: int, flags: int, block: bytes) -> None:
        headers = self._decoder.decode(block)  # always: the HPACK table must stay in step
        if stream_id >= self._next_stream_id or not stream_id & 1:
            raise frames.FrameError("HEADERS on a stream we never opened")
        stream = self._streams.get(stream_id)
        if stream is not None and stream.status == 0:
            for name, value in headers:
                if name == b":status":
                    stream.status = int(value)
                elif name == b"apns-id":
                    stream.apns_id = value.decode("ascii", "replace")
                elif name == b"apns-unique-id":
                    stream.unique_id = value.decode("ascii", "replace")
            if stream.status < 200:  # informational (1xx): the answer is still to come
                stream.status = 0
                stream.apns_id = stream.unique_id = None
        if flags & frames.END_STREAM:
            self._on_stream_ended(stream_id)

    def _on_data(self, stream_id: int, flags: int, payload: bytes) -> None:
        if stream_id == 0:
            raise frames.FrameError("DATA on stream 0")
        size = len(payload)
        self._recv_window -= size
        if self._recv_window < 0:
            raise frames.FrameError("DATA over the connection window", _FLOW_CONTROL_ERROR)
        self._recv_unacked += size
        stream = self._streams.get(stream_id)
        if stream is not None:
            stream.body += frames.unpad(payload, flags)
            stream.received += size
            if stream.received >= _WINDOW_REFILL and not flags & frames.END_STREAM:
                self._out.append(frames.window_update_frame(stream_id, stream.received))
                stream.received = 0
        if flags & frames.END_STREAM:
            self._on_stream_ended(stream_id)

    def _on_stream_ended(self, stream_id: int) -> None:
        stream = self._streams.pop(stream_id, None)
        if stream is None:
            return
        stream.timer.cancel()
        if stream.pending is not None:
            # APNs answered before reading the whole body (e.g. 413): close our half too.
            self._out.append(frames.rst_stream_frame(stream_id, ErrorCodes.NO_ERROR))
        if not self._token_proven and stream.status not in _UNPROVEN_STATUSES:
            self._token_proven = True
        if not stream.future.done():
            stream.future.set_result((stream.status, stream.body, stream.apns_id, stream.unique_id))
        self._stream_finished()

    def _on_rst_stream(self, stream_id: int, _flags: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise frames.FrameError("RST_STREAM of the wrong size", ErrorCodes.FRAME_SIZE_ERROR)
        if stream_id == 0:
            raise frames.FrameError("RST_STREAM on stream 0")
        stream = self._streams.pop(stream_id, None)
        if stream is None:
            return
        stream.timer.cancel()
        code = frames.error_code(frames.u32(payload))
        if not stream.future.done():
            stream.future.set_exception(
                StreamFailed(
                    f"stream reset by APNs ({code!r})",
                    unprocessed=code == ErrorCodes.REFUSED_STREAM,
                )
            )
        self._stream_finished()

    def _on_settings(self, stream_id: int, flags: int, payload: bytes) -> None:
        if stream_id != 0:
            raise frames.FrameError("SETTINGS on a stream")
        if flags & frames.ACK:
            if payload:
                raise frames.FrameError("SETTINGS ACK with a payload", ErrorCodes.FRAME_SIZE_ERROR)
            return
        first = not self._settings_seen
        self._settings_seen = True
        limit_set = False
        for code, value in frames.parse_settings(payload):
            if code == frames.MAX_CONCURRENT_STREAMS:
                self._remote_max = value
                limit_set = True
                logger.debug("connection %s: APNs allows %d streams", self.label, value)
            elif code == frames.INITIAL_WINDOW_SIZE:
                self._set_initial_window(value)
            elif code == frames.MAX_FRAME_SIZE:
                if not frames.DEFAULT_MAX_FRAME <= value <= 2**24 - 1:
                    raise frames.FrameError(f"MAX_FRAME_SIZE {value} out of range")
                self._max_frame = value
            elif code == frames.HEADER_TABLE_SIZE:
                self._encoder.header_table_size = value
        self._out.append(_SETTINGS_ACK)
        if first and not limit_set:
            self._remote_max = frames.UNLIMITED_STREAMS
        if self._blocked:
            self._pump()
        if not self.ready.done():
            self.ready.set_result(None)
        self._on_change(self)

    def _set_initial_window(self, value: int) -> None:
        if value > frames.MAX_WINDOW:
            raise frames.FrameError("INITIAL_WINDOW_SIZE over 2^31-1", _FLOW_CONTROL_ERROR)
        delta = value - self._initial_window
        self._initial_window = value
        for stream in self._streams.values():
            stream.window += delta
            if stream.window > frames.MAX_WINDOW:
                raise frames.FrameError("stream window over 2^31-1", _FLOW_CONTROL_ERROR)

    def _on_window_update(self, stream_id: int, _flags: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise frames.FrameError("WINDOW_UPDATE of the wrong size", ErrorCodes.FRAME_SIZE_ERROR)
        increment = frames.u32(payload) & frames.MAX_WINDOW
        if increment == 0:
            raise frames.FrameError("WINDOW_UPDATE of 0")
        if stream_id == 0:
            self._send_window += increment
            if self._send_window > frames.MAX_WINDOW:
                raise frames.FrameError("connection window over 2^31-1", _FLOW_CONTROL_ERROR)
        else:
            stream = self._streams.get(stream_id)
            if stream is None:
                return
            stream.window += increment
            if stream.window > frames.MAX_WINDOW:
                raise frames.FrameError("stream window over 2^31-1", _FLOW_CONTROL_ERROR)
        if self._blocked:
            self._pump()

    def _on_ping(self, stream_id: int, flags: int, payload: bytes) -> None:
        if len(payload) != 8:
            raise frames.FrameError("PING of the wrong size", ErrorCodes.FRAME_SIZE_ERROR)
        if stream_id != 0:
            raise frames.FrameError("PING on a stream")
        if flags & frames.ACK:
            self._ping_sent_at = None
        else:
            self._out.append(frames.frame(frames.PING, frames.ACK, 0, payload))

    def _on_goaway(self, stream_id: int, _flags: int, payload: bytes) -> None:
        if len(payload) < 8:
            raise frames.FrameError("GOAWAY too short", ErrorCodes.FRAME_SIZE_ERROR)
        if stream_id != 0:
            raise frames.FrameError("GOAWAY on a stream")
        last = frames.u32(payload) & frames.MAX_STREAM_ID
        logger.warning(
            "connection %s: APNs sent GOAWAY (%r, reason %s, last stream %d, %d in flight)",
            self.label,
            frames.error_code(frames.u32(payload, 4)),
            _goaway_reason(payload[8:]),
            last,
            len(self._streams),
        )
        self._goaway = True
        self.retired = True
        for above in [s for s in self._streams if s > last]:
            stream = self._streams.pop(above)
            stream.timer.cancel()
            if not stream.future.done():
                stream.future.set_exception(
                    StreamFailed("above the GOAWAY's last stream", unprocessed=True)
                )
        # APNs still answers the streams at or below last_stream_id: keep receiving (we never
        # open another stream here).
        if not self._streams:
            self.close()
        self._on_change(self)

    def _on_push_promise(self, _stream_id: int, _flags: int, _payload: bytes) -> None:
        raise frames.FrameError("PUSH_PROMISE although we disabled server push")

    def _ignore(self, _stream_id: int, _flags: int, _payload: bytes) -> None:
        """PRIORITY frames carry nothing a client must act on (RFC 9113 §5.3.2)."""

    _handlers: ClassVar[dict[int, Callable[[Connection, int, int, bytes], None]]] = {
        frames.CONTINUATION: _on_continuation,
        frames.RST_STREAM: _on_rst_stream,
        frames.SETTINGS: _on_settings,
        frames.WINDOW_UPDATE: _on_window_update,
        frames.PING: _on_ping,
        frames.GOAWAY: _on_goaway,
        frames.PUSH_PROMISE: _on_push_promise,
        frames.PRIORITY: _ignore,
    }

    # --- lifecycle ------------------------------------------------------------------------

    def _stream_finished(self) -> None:
        if not self._streams:
            self.idle_since = self._clock()
            if self.retired:
                self.close()
        self._on_change(self)

    def _timed_out(self, stream_id: int) -> None:
        stream = self._streams.pop(stream_id, None)
        if stream is None:
            return
        if not self.closed:
            self._out.append(frames.rst_stream_frame(stream_id, ErrorCodes.CANCEL))
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
        self._out.append(frames.goaway_frame(0, ErrorCodes.NO_ERROR))
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
            self._out.append(frames.frame(frames.PING, 0, 0, os.urandom(8)))
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

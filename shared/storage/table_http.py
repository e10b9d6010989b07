"""A minimal HTTP/1.1 client for one origin: what the Table Storage client sends its requests on.

Why not aiohttp: importing it costs more CPU than everything else a cold start loads for the first
chat event (it builds two TLS contexts with the system's CA bundle at import time; 90-145 ms here,
``bench/cold_start.py``), and each request walks its generic client (cookies, redirects, tracing,
proxies). Table Storage needs a small part of HTTP/1.1: requests with a Content-Length body, and
answers framed by Content-Length or chunked, over kept-alive connections (TLS for Azure).

- :class:`HttpClient` keeps idle connections to its origin (most recently used first), opens
  more as requests overlap (at most ``max_connections``), drops the ones idle longer than
  ``idle_seconds`` (under the server's keep-alive: Azurite closes after 5 s) and never reuses a
  connection the server closed, said ``Connection: close`` about, or left mid-answer.
- A request costs one ``transport.write`` and one future; its answer is parsed by the
  connection's protocol as bytes arrive (status line, headers, Content-Length or chunked body).
- Everything that means "no usable answer" (refused, reset, closed early, timed out, malformed)
  is :class:`NoAnswerError` with the cause chained; the caller decides whether to retry.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

_MAX_HEAD: Final = 64 * 1024  # an answer's status line and headers, at most
_USER_AGENT: Final = "pushrelay-tables/1"


class NoAnswerError(Exception):
    """No usable answer came: the connection failed, closed, timed out or spoke nonsense."""


@dataclass(frozen=True, slots=True)
class HttpAnswer:
    """An answer: status, headers (names lower-case; the last of repeated ones), body."""

    status: int
    headers: dict[str, str]
    body: bytes


class _Connection(asyncio.Protocol):
    """One kept-alive connection: one request at a time, its answer parsed as bytes arrive."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._buffer = bytearray()
        self._answer: asyncio.Future[HttpAnswer] | None = None
        self._head: tuple[int, dict[str, str]] | None = None
        self._length: int | None = None  # body bytes expected; None: chunked or until close
        self._chunked = False
        self._chunks: list[bytes] = []
        self._reusable = True

    # --- asyncio.Protocol ---

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self._answer is None or self._answer.done():
            # Bytes nobody asked for: the connection is out of step; never reuse it.
            self._close()
            return
        self._buffer += data
        try:
            self._parse()
        except ValueError as exc:
            self._fail(NoAnswerError(f"malformed answer: {exc}"))
            self._close()

    def eof_received(self) -> bool | None:
        # An answer with neither Content-Length nor chunks is framed by the close itself.
        framed_by_close = self._head is not None and self._length is None and not self._chunked
        if framed_by_close and self._answer is not None and not self._answer.done():
            self._finish(bytes(self._buffer))
            self._buffer.clear()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        cause = exc or ConnectionResetError("connection closed by the server")
        self._fail(NoAnswerError(f"connection lost ({type(cause).__name__})"), cause)

    # --- requests ---

    def send(self, request: bytes, answer: asyncio.Future[HttpAnswer]) -> None:
        """Write ``request``; ``answer`` resolves with its answer or NoAnswerError."""
        assert self.transport is not None
        self._answer = answer
        self._head, self._length, self._chunked, self._chunks = None, None, False, []
        self._buffer.clear()
        self.transport.write(request)

    @property
    def reusable(self) -> bool:
        """Whether the last answer left the connection fit for another request."""
        return self._reusable and not self.closed and not self._buffer

    def _close(self) -> None:
        self._reusable = False
        if self.transport is not None and not self.closed:
            self.transport.close()

    def abort(self) -> None:
        """Drop the connection (a timed-out or abandoned request)."""
        self._reusable = False
        if self.transport is not None:
            self.transport.abort()

    def _fail(self, error: NoAnswerError, cause: BaseException | None = None) -> None:
        if self._answer is not None and not self._answer.done():
            error.__cause__ = cause
            self._answer.set_exception(error)
        self._reusable = False

    def _finish(self, body: bytes) -> None:
        assert self._head is not None and self._answer is not None
        status, headers = self._head
        if not self._answer.done():
            self._answer.set_result(HttpAnswer(status, headers, body))

    # --- parsing ---

    def _parse(self) -> None:
        if self._head is None and not self._parse_head():
            return
        if self._chunked:
            self._parse_chunks()
        elif self._length is not None and len(self._buffer) >= self._length:
            body = bytes(self._buffer[: self._length])
            del self._buffer[: self._length]
            self._finish(body)

    def _parse_head(self) -> bool:
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buffer) > _MAX_HEAD:
                raise ValueError("header block too long")
            return False
        lines = self._buffer[:end].decode("latin-1").split("\r\n")
        del self._buffer[: end + 4]
        version, _, rest = lines[0].partition(" ")
        status_text = rest[:3]
        if not version.startswith("HTTP/1.") or not status_text.isdigit():
            raise ValueError("no HTTP/1.x status line")
        status = int(status_text)
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep:
                raise ValueError("header line without a colon")
            headers[name.strip().lower()] = value.strip()
        if 100 <= status < 200:  # an interim answer (100 Continue): the real one follows
            return self._parse_head() if self._buffer else False
        connection = headers.get("connection", "").lower()
        if connection == "close" or (version == "HTTP/1.0" and connection != "keep-alive"):
            self._reusable = False
        self._head = (status, headers)
        if status in (204, 304):
            self._length = 0
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            self._chunked = True
        elif "content-length" in headers:
            self._length = int(headers["content-length"])
            if self._length < 0:
                raise ValueError("negative Content-Length")
        else:
            self._reusable = False  # the body ends when the server closes
        return True

    def _parse_chunks(self) -> None:
        while True:
            line_end = self._buffer.find(b"\r\n")
            if line_end < 0:
                return
            size = int(bytes(self._buffer[:line_end]).split(b";", 1)[0].strip(), 16)
            if size == 0:
                # The last chunk, then trailer lines (none, usually), then an empty line.
                end = self._buffer.find(b"\r\n\r\n", line_end)
                if end < 0:
                    return
                del self._buffer[: end + 4]
                self._finish(b"".join(self._chunks))
                return
            if len(self._buffer) < line_end + 2 + size + 2:
                return
            start = line_end + 2
            self._chunks.append(bytes(self._buffer[start : start + size]))
            if self._buffer[start + size : start + size + 2] != b"\r\n":
                raise ValueError("chunk without its CRLF")
            del self._buffer[: start + size + 2]


class HttpClient:
    """Kept-alive HTTP/1.1 connections to one origin (``http[s]://host[:port]``)."""

    def __init__(
        self,
        origin: str,
        *,
        connect_timeout: float = 5.0,
        read_timeout: float = 15.0,
        idle_seconds: float = 4.0,
        max_connections: int = 64,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("the origin must be an http(s) URL")
        self._tls = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port or (443 if self._tls else 80)
        default = (self._tls and self._port == 443) or (not self._tls and self._port == 80)
        host = f"[{self._host}]" if ":" in self._host else self._host
        self._host_header = host if default else f"{host}:{self._port}"
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._idle_seconds = idle_seconds
        self._ssl_context = ssl_context
        self._idle: list[_Connection] = []
        self._slots = asyncio.Semaphore(max_connections)
        self._busy: set[_Connection] = set()

    async def request(
        self, method: str, target: str, headers: dict[str, str], body: bytes | None = None
    ) -> HttpAnswer:
        """Send one request (``target``: the encoded path and query) and read its answer.

        Raises NoAnswerError.
        """
        head = [f"{method} {target} HTTP/1.1\r\nHost: {self._host_header}\r\n"]
        head += [f"{name}: {value}\r\n" for name, value in headers.items()]
        if any("\n" in value or "\r" in value for value in headers.values()):
            raise ValueError("a header value holds a line break")
        if body is not None or method not in ("GET", "HEAD"):
            head.append(f"Content-Length: {len(body) if body else 0}\r\n")
        head.append(f"User-Agent: {_USER_AGENT}\r\n\r\n")
        request = "".join(head).encode("latin-1") + (body or b"")
        async with self._slots:
            connection = await self._connection()
            loop = asyncio.get_running_loop()
            answer: asyncio.Future[HttpAnswer] = loop.create_future()
            timer = loop.call_later(self._read_timeout, self._time_out, connection, answer)
            self._busy.add(connection)
            try:
                connection.send(request, answer)
                result = await answer
            except BaseException:
                # Failed, timed out or cancelled mid-answer: the connection is out of step.
                connection.abort()
                raise
            finally:
                timer.cancel()
                self._busy.discard(connection)
            if connection.reusable:
                connection.idle_since = now = loop.time()
                self._idle.append(connection)
                # The oldest idle connections are at the front: drop the ones past keep-alive.
                while self._idle and now - self._idle[0].idle_since >= self._idle_seconds:
                    self._idle.pop(0).abort()
            else:
                connection.abort()
            return result

    def _time_out(self, connection: _Connection, answer: asyncio.Future[HttpAnswer]) -> None:
        if not answer.done():
            error = NoAnswerError(f"no answer within {self._read_timeout} s")
            error.__cause__ = TimeoutError()
            answer.set_exception(error)
        connection.abort()

    async def _connection(self) -> _Connection:
        """The most recently used idle connection still fit for use, or a new one."""
        now = asyncio.get_running_loop().time()
        while self._idle:
            connection = self._idle.pop()
            if connection.reusable and now - connection.idle_since < self._idle_seconds:
                return connection
            connection.abort()
        return await self._open()

    async def _open(self) -> _Connection:
        loop = asyncio.get_running_loop()
        context = None
        if self._tls:
            if self._ssl_context is None:
                # Built on first use, not at import: loading the CA bundle costs ~20 ms of CPU.
                self._ssl_context = ssl.create_default_context()
            context = self._ssl_context
        try:
            async with asyncio.timeout(self._connect_timeout):
                _, connection = await loop.create_connection(
                    _Connection,
                    self._host,
                    self._port,
                    ssl=context,
                    server_hostname=self._host if context else None,
                )
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            raise NoAnswerError(f"cannot connect ({type(exc).__name__})") from exc
        return connection

    async def aclose(self) -> None:
        """Close every connection."""
        for connection in [*self._idle, *self._busy]:
            connection.abort()
        self._idle.clear()
        await asyncio.sleep(0)  # let the transports finish closing

"""shared.storage.table_http without sockets: answers parsed as bytes arrive, connections reused.

A scripted transport stands in for the socket: each request written to it is answered with the
next scripted bytes (or nothing, or a close), delivered to the protocol in pieces.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.storage.table_http import HttpAnswer, HttpClient, NoAnswerError, _Connection

pytestmark = pytest.mark.unit

CHUNKED = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
    b'ETag: W/"x"\r\n\r\n'
    b'5;ext=1\r\n{"a":\r\n4\r\n 1, \r\n8\r\n"b": 2}\n\r\n0\r\nX-Trailer: t\r\n\r\n'
)
CHUNKED_BODY = b'{"a": 1, "b": 2}\n'


class ScriptedTransport(asyncio.Transport):
    """Answers each write with the next script entry: bytes (in ``pieces``), None (silence) or
    "close" (the server hangs up)."""

    def __init__(self, protocol: _Connection, script: list[Any], pieces: int = 1) -> None:
        super().__init__()
        self.protocol = protocol
        self.script = script
        self.pieces = pieces
        self.written: list[bytes] = []
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written.append(bytes(data))
        answer = self.script.pop(0)
        loop = asyncio.get_running_loop()
        if answer == "close":
            loop.call_soon(self._lose)
        elif answer is not None:
            step = max(1, len(answer) // self.pieces)
            for i in range(0, len(answer), step):
                loop.call_soon(self.protocol.data_received, answer[i : i + step])

    def _lose(self) -> None:
        self.closed = True
        self.protocol.connection_lost(None)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.protocol.connection_lost(None)

    def abort(self) -> None:
        self.close()

    def is_closing(self) -> bool:
        return self.closed


class ScriptedClient(HttpClient):
    """An HttpClient whose connections are scripted transports."""

    def __init__(self, *scripts: list[Any], pieces: int = 1, **options: Any) -> None:
        super().__init__("http://storage.test:10002", **options)
        self.scripts = list(scripts)
        self.pieces = pieces
        self.opened: list[ScriptedTransport] = []

    async def _open(self) -> _Connection:
        connection = _Connection()
        transport = ScriptedTransport(connection, self.scripts.pop(0), self.pieces)
        connection.connection_made(transport)
        self.opened.append(transport)
        return connection


def run(make: Callable[[], Any]) -> Any:
    async def go() -> Any:
        return await make()

    return asyncio.run(go())


def ok(body: bytes = b"{}", **headers: str) -> bytes:
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n{head}\r\n".encode() + body


# --- parsing --------------------------------------------------------------------------------------


@given(st.integers(min_value=1, max_value=len(CHUNKED)))
def test_a_chunked_answer_reads_the_same_however_it_is_split(pieces: int) -> None:
    client = ScriptedClient([CHUNKED], pieces=pieces)
    answer = run(lambda: client.request("GET", "/t()", {}))
    assert answer == HttpAnswer(
        200,
        {"content-type": "application/json", "transfer-encoding": "chunked", "etag": 'W/"x"'},
        CHUNKED_BODY,
    )


@given(st.integers(min_value=1, max_value=60))
def test_a_content_length_answer_reads_the_same_however_it_is_split(pieces: int) -> None:
    client = ScriptedClient([ok(b'{"value": []}', ETag="e")], pieces=pieces)
    answer = run(lambda: client.request("GET", "/t()", {}))
    assert (answer.status, answer.headers["etag"], answer.body) == (200, "e", b'{"value": []}')


def test_a_no_content_answer_has_no_body_and_keeps_the_connection() -> None:
    client = ScriptedClient([b"HTTP/1.1 204 No Content\r\nETag: e\r\n\r\n", ok()])

    async def twice() -> list[int]:
        first = await client.request("PATCH", "/t(PartitionKey='p',RowKey='r')", {}, b"{}")
        second = await client.request("GET", "/t()", {})
        return [first.status, second.status]

    assert run(twice) == [204, 200]
    assert len(client.opened) == 1


def test_an_interim_answer_is_skipped() -> None:
    client = ScriptedClient([b"HTTP/1.1 100 Continue\r\n\r\n" + ok(b"[]")])
    assert run(lambda: client.request("GET", "/t()", {})).body == b"[]"


def test_an_answer_framed_by_the_close_ends_there_and_is_not_reused() -> None:
    client = ScriptedClient([b"HTTP/1.0 200 OK\r\n\r\nhello"], [ok()])

    async def twice() -> bytes:
        connection_script = client.request("GET", "/a", {})
        task = asyncio.ensure_future(connection_script)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        transport = client.opened[0]
        transport.protocol.eof_received()
        body = (await task).body
        await client.request("GET", "/b", {})
        return body

    assert run(twice) == b"hello"
    assert len(client.opened) == 2


def test_connection_close_retires_the_connection() -> None:
    client = ScriptedClient([ok(Connection="close")], [ok()])

    async def twice() -> None:
        await client.request("GET", "/a", {})
        await client.request("GET", "/b", {})

    run(twice)
    assert len(client.opened) == 2
    assert client.opened[0].closed


@pytest.mark.parametrize(
    "answer",
    [b"SPDY/3 200 OK\r\n\r\n", b"HTTP/1.1 2xx OK\r\n\r\n", b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
     b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"],
)  # fmt: skip
def test_a_malformed_answer_is_no_answer(answer: bytes) -> None:
    client = ScriptedClient([answer])
    with pytest.raises(NoAnswerError, match="malformed"):
        run(lambda: client.request("GET", "/t()", {}))
    assert client.opened[0].closed


def test_a_hang_up_mid_answer_is_no_answer_and_the_next_request_opens_anew() -> None:
    client = ScriptedClient(["close"], [ok()])

    async def go() -> int:
        with pytest.raises(NoAnswerError, match="connection lost") as caught:
            await client.request("GET", "/a", {})
        assert isinstance(caught.value.__cause__, ConnectionResetError)
        return (await client.request("GET", "/a", {})).status

    assert run(go) == 200
    assert len(client.opened) == 2


def test_silence_times_out_as_no_answer_and_drops_the_connection() -> None:
    client = ScriptedClient([None], read_timeout=0)
    with pytest.raises(NoAnswerError, match="no answer within") as caught:
        run(lambda: client.request("GET", "/t()", {}))
    assert isinstance(caught.value.__cause__, TimeoutError)
    assert client.opened[0].closed


def test_an_idle_connection_past_its_keep_alive_is_not_reused() -> None:
    client = ScriptedClient([ok()], [ok()], idle_seconds=0)

    async def twice() -> None:
        await client.request("GET", "/a", {})
        await client.request("GET", "/b", {})

    run(twice)
    assert len(client.opened) == 2
    assert client.opened[0].closed


def test_overlapping_requests_use_separate_connections_then_share_them() -> None:
    client = ScriptedClient([ok(), ok()], [ok(), ok()])

    async def go() -> None:
        await asyncio.gather(client.request("GET", "/a", {}), client.request("GET", "/b", {}))
        await client.request("GET", "/c", {})

    run(go)
    assert len(client.opened) == 2


# --- requests -------------------------------------------------------------------------------------


def test_a_request_is_one_write_with_host_length_and_body() -> None:
    client = ScriptedClient([ok(), ok()])

    async def go() -> None:
        await client.request("POST", "/acct/t", {"Content-Type": "application/json"}, b'{"a":1}')
        await client.request("DELETE", "/acct/t(PartitionKey='p',RowKey='r')", {"If-Match": "*"})

    run(go)
    post, delete = client.opened[0].written
    assert post == (
        b"POST /acct/t HTTP/1.1\r\nHost: storage.test:10002\r\nContent-Type: application/json\r\n"
        b'Content-Length: 7\r\nUser-Agent: pushrelay-tables/1\r\n\r\n{"a":1}'
    )
    assert delete.startswith(b"DELETE /acct/t(PartitionKey='p',RowKey='r') HTTP/1.1\r\n")
    assert b"Content-Length: 0\r\n" in delete


@pytest.mark.parametrize(
    ("origin", "host"),
    [("https://acct.table.core.windows.net", "acct.table.core.windows.net"),
     ("http://127.0.0.1:10002", "127.0.0.1:10002"), ("http://[::1]:8080", "[::1]:8080")],
)  # fmt: skip
def test_the_host_header_leaves_out_the_default_port(origin: str, host: str) -> None:
    assert HttpClient(origin)._host_header == host


def test_an_origin_that_is_not_http_is_refused() -> None:
    with pytest.raises(ValueError, match="http"):
        HttpClient("ftp://example.com")


def test_a_header_value_with_a_line_break_is_refused_unsent() -> None:
    client = ScriptedClient([ok()])
    with pytest.raises(ValueError, match="line break"):
        run(lambda: client.request("GET", "/t()", {"If-Match": 'W/"x"\r\nX-Evil: 1'}))
    assert client.opened == []


def test_connections_idle_past_their_keep_alive_are_closed_when_others_come_back() -> None:
    client = ScriptedClient([ok(), ok()], [ok(), ok()], idle_seconds=60)

    async def go() -> None:
        await asyncio.gather(client.request("GET", "/a", {}), client.request("GET", "/b", {}))
        oldest, newest = client._idle
        oldest.idle_since -= 3600  # idle for an hour: past any keep-alive
        await client.request("GET", "/c", {})  # runs on the newest, then sweeps
        assert client._idle == [newest]

    run(go)
    assert sum(t.closed for t in client.opened) == 1

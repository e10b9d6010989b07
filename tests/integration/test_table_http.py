"""shared.storage.table_http over real sockets: TLS with certificate checks, chunked and sized
answers, keep-alive, and a server that hangs up, against an aiohttp web server on 127.0.0.1."""

from __future__ import annotations

import datetime as dt
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization

from devtools.pki import issue_ca, issue_leaf, pem_key, subject_name
from shared.storage.table_http import HttpClient, NoAnswerError

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    now = dt.datetime.now(dt.UTC)
    ca = issue_ca(subject_name("test CA", "pushrelay tests"), now)
    cert, key = issue_leaf(ca, subject_name("localhost", "pushrelay tests"), now - dt.timedelta(1),
                           now + dt.timedelta(1), server=True)  # fmt: skip
    folder = tmp_path_factory.mktemp("tls")
    paths = (folder / "ca.pem", folder / "cert.pem", folder / "key.pem")
    paths[0].write_bytes(ca[0].public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(pem_key(key))
    return paths


async def chunked(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"ETag": 'W/"c"'})
    response.enable_chunked_encoding()
    await response.prepare(request)
    for piece in (b'{"value": [', b'{"n": 1}', b"]}"):
        await response.write(piece)
    await response.write_eof()
    return response


async def sized(request: web.Request) -> web.Response:
    body = await request.read()
    return web.Response(status=201, body=body, headers={"X-Method": request.method})


async def hang_up(request: web.Request) -> web.Response:
    assert request.transport is not None
    request.transport.close()
    return web.Response()


@pytest.fixture
async def origin(certificates: tuple[Path, Path, Path]) -> AsyncIterator[str]:
    _, cert, key = certificates
    app = web.Application()
    app.router.add_get("/chunked", chunked)
    app.router.add_route("*", "/sized", sized)
    app.router.add_get("/hang-up", hang_up)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    port = runner.addresses[0][1]
    yield f"https://localhost:{port}"
    await runner.cleanup()


def trusting(ca: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca))


async def test_answers_come_back_over_tls_on_one_kept_alive_connection(
    origin: str, certificates: tuple[Path, Path, Path]
) -> None:
    client = HttpClient(origin, ssl_context=trusting(certificates[0]))
    try:
        first = await client.request("GET", "/chunked", {})
        second = await client.request("PUT", "/sized", {"Content-Type": "text/plain"}, b"hello")
        assert (first.status, first.headers["etag"]) == (200, 'W/"c"')
        assert first.body == b'{"value": [{"n": 1}]}'
        assert (second.status, second.headers["x-method"], second.body) == (201, "PUT", b"hello")
        assert len(client._idle) == 1
    finally:
        await client.aclose()


async def test_a_server_certificate_nobody_vouches_for_is_refused(origin: str) -> None:
    client = HttpClient(origin)  # the system CAs: the test CA is not among them
    try:
        with pytest.raises(NoAnswerError, match="cannot connect") as caught:
            await client.request("GET", "/chunked", {})
        assert isinstance(caught.value.__cause__, ssl.SSLCertVerificationError)
    finally:
        await client.aclose()


async def test_a_server_hanging_up_is_no_answer_and_the_next_request_reconnects(
    origin: str, certificates: tuple[Path, Path, Path]
) -> None:
    client = HttpClient(origin, ssl_context=trusting(certificates[0]))
    try:
        with pytest.raises(NoAnswerError, match="connection lost"):
            await client.request("GET", "/hang-up", {})
        assert (await client.request("GET", "/chunked", {})).status == 200
    finally:
        await client.aclose()


async def test_nothing_listening_is_no_answer() -> None:
    from devtools.azurite import free_port

    client = HttpClient(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(NoAnswerError, match="cannot connect"):
        await client.request("GET", "/", {})

"""The console's actions refuse input that cannot work with a 4xx and a JSON reason."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from devtools.console.actions import ConsoleConfig
from devtools.console.server import Console
from devtools.console.state import Rules

pytestmark = pytest.mark.integration


@pytest.fixture
async def client() -> AsyncIterator[TestClient[Any, Any]]:
    console = Console(
        config=ConsoleConfig(app_url="http://127.0.0.1:9", token_url=None, topic="com.example"),
        rules=Rules(),
        storage_connection="UseDevelopmentStorage=true",
        table_prefix="unused",
        simulator_url=None,
    )
    async with TestClient(TestServer(console.web_app())) as c:
        yield c
    await console.http.aclose()
    await console.tables.aclose()


@pytest.mark.parametrize(
    ("path", "body", "status", "reason"),
    [
        ("/api/messages", b"{not json", 400, "the body is not JSON"),
        ("/api/messages", b"[1]", 400, "the body must be a JSON object"),
        ("/api/messages", b'{"from": "8:acs:x", "to": "8:acs:y", "text": "hi"}', 400, "from"),
        ("/api/messages/123/edit", b'{"text": "x"}', 404, "no such message"),
        ("/api/phones/abc/uninstall", b"", 404, "no such phone"),
        ("/api/phones", b'{"name": "<script>"}', 400, "name"),
        ("/api/phones", b'{"name": "alice"}', 409, "identity provider"),
        ("/api/faults", b'{"kind": "ServiceUnavailable"}', 409, "simulator"),
        ("/api/clock", b'{"seconds": 60}', 409, "simulator"),
        ("/api/events/nope/redeliver", b"", 404, "no such event"),
    ],
)
async def test_bad_input_is_a_4xx_naming_the_problem(
    client: TestClient[Any, Any], path: str, body: bytes, status: int, reason: str
) -> None:
    answer = await client.post(path, data=body)
    assert (answer.status, reason in (await answer.json())["error"]) == (status, True)

"""A small HTTP/1.1 JSON endpoint (asyncio streams) for inspecting and scripting the simulator
from another process. One request per connection; the routes live in :mod:`simulator`."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

log = logging.getLogger(__name__)

Handler = Callable[[str, str, Any], tuple[int, Any]]
MAX_BODY = 1024 * 1024


class ControlServer:
    """Serves ``handler(method, path, json_body) -> (status, json)`` on 127.0.0.1."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Read one request, answer it, close."""
        try:
            status, result = await self._read_and_dispatch(reader)
        except (asyncio.IncompleteReadError, ConnectionError, ValueError) as exc:
            status, result = 400, {"error": f"bad request: {exc}"}
        body = json.dumps(result).encode()
        phrase = HTTPStatus(status).phrase
        writer.write(
            f"HTTP/1.1 {status} {phrase}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n".encode()
            + body
        )
        try:
            await writer.drain()
            writer.close()
            await writer.wait_closed()
        except ConnectionError:
            pass

    async def _read_and_dispatch(self, reader: asyncio.StreamReader) -> tuple[int, Any]:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip())
        if length > MAX_BODY:
            return 413, {"error": "body too large"}
        raw = await reader.readexactly(length) if length else b""
        try:
            data = json.loads(raw) if raw.strip() else None
        except ValueError:
            return 400, {"error": "body is not JSON"}
        try:
            return self.handler(method.upper(), target, data)
        except (KeyError, TypeError, ValueError) as exc:
            return 400, {"error": f"{type(exc).__name__}: {exc}"}

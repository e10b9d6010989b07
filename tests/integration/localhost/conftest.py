"""Serve the test-only app (``sample_app``) with the local host, in the test's event loop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from devtools.localhost import HostOptions, LocalHost, QueueOptions
from tests.integration.localhost.sample_app import Recorder, build_app

FAST_QUEUES = QueueOptions(poll_interval=0.02, visibility_timeout=0.0, lease_seconds=60)


@dataclass
class Served:
    host: LocalHost
    rec: Recorder
    client: httpx.AsyncClient


def base_env(prefix: str = "t0") -> dict[str, str]:
    return {
        "ROUTE_SETTING": "svc",
        "TICK_SCHEDULE": "*/10 * * * * *",
        "WORK_QUEUE": f"{prefix}-work",
        "OUT_QUEUE": f"{prefix}-out",
    }


Serve = Callable[..., Awaitable[Served]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """``await serve(env, **HostOptions fields)`` starts a host on a free port."""
    started: list[Served] = []

    async def start(env: dict[str, str], **options: Any) -> Served:
        rec = Recorder(asyncio.get_running_loop())
        options = {"port": 0, "timers": False, "queues": False, "queue": FAST_QUEUES, **options}
        host = LocalHost(build_app(rec), env, HostOptions(**options))
        base = await host.start()
        served = Served(host, rec, httpx.AsyncClient(base_url=base, timeout=10))
        started.append(served)
        return served

    yield start
    for s in started:
        await s.client.aclose()
        await s.host.stop()


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = 10.0) -> Any:
    """Re-run ``check`` until it returns a truthy value (work finishing in the background)."""
    async with asyncio.timeout(timeout):
        while not (result := await check()):
            await asyncio.sleep(0.02)
    return result

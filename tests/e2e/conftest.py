"""End-to-end fixtures: the REAL ``function_app`` served by the local host, in-process.

``local_app(settings) -> base URL`` starts the local host on a free port in a background thread
(its own event loop), so both sync and async tests can drive it over HTTP::

    async def test_something(local_app, azurite, table_prefix):
        base = local_app({
            "STORAGE_CONNECTION": azurite.connection_string,
            "AzureWebJobsStorage": azurite.connection_string,   # queue triggers poll only if set
            "TABLE_PREFIX": table_prefix,
            "RENEWAL_QUEUE": table_prefix + "-renewal",         # unique queue per test
        })
        async with httpx.AsyncClient(base_url=base) as client:
            r = await client.post("/runtime/webhooks/eventgrid?functionName=on_chat_event",
                                  headers={"aeg-event-type": "Notification"}, content=body)

What it does:

- The environment is every setting's default (``shared.settings.SETTINGS_TABLE``) overlaid with
  ``settings``; it is applied to ``os.environ`` for the test (restored afterwards) and the
  composition root is rebuilt from it (``shared.wiring.reset``), so the app reads exactly it.
- HTTP routes under ``/api``, the Event Grid webhook, and ``POST /admin/functions/NAME`` with
  ``{"input": ""}`` to run a timer (or any non-HTTP function) now: 202, the function runs in
  the background.
- Timers are NOT scheduled unless ``timers=True`` (pass ``clock=ManualClock(...)`` to drive
  them). Queue triggers poll every 50 ms when ``AzureWebJobsStorage`` is set, and a failed
  message is retried at once (visibility timeout 0), so poison-after-5 takes milliseconds;
  override with ``queue=QueueOptions(...)``.
- At teardown the host stops, the container's adapters are closed, and the environment is restored.

Calling ``local_app`` twice in one test starts two hosts (the last one's settings win in
``os.environ``).
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

import pytest

from devtools.localhost import (
    Clock,
    HostJson,
    HostOptions,
    LocalHost,
    QueueOptions,
    SystemClock,
    import_app,
)
from devtools.settings_doc import defaults

REPO = Path(__file__).resolve().parents[2]
FAST_QUEUES = QueueOptions(poll_interval=0.05, visibility_timeout=0.0, lease_seconds=60)


class LocalApp(Protocol):
    """The ``local_app`` fixture's signature."""

    def __call__(
        self,
        settings: Mapping[str, str],
        *,
        timers: bool = False,
        clock: Clock | None = None,
        queue: QueueOptions | None = None,
    ) -> str: ...


class ServedApp:
    """The real app served by a LocalHost on its own event loop in a daemon thread."""

    def __init__(self, env: Mapping[str, str], options: HostOptions) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.host = LocalHost(import_app("function_app", app_dir=REPO), env, options)

    def start(self) -> str:
        self.thread.start()
        future = asyncio.run_coroutine_threadsafe(self.host.start(), self.loop)
        return future.result(timeout=30)

    def run(self, coroutine: Any, timeout: float = 30.0) -> Any:
        """Run a coroutine on the host's loop (e.g. to inspect adapters) and return its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=timeout)

    async def _shutdown(self) -> None:
        await self.host.stop()
        from shared import wiring

        await wiring.container().aclose()

    def stop(self) -> None:
        try:
            self.run(self._shutdown())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=10)
            self.loop.close()


@pytest.fixture
def local_app() -> Iterator[LocalApp]:
    """Start the real app on the local host with ``settings``; returns its base URL."""
    from shared import wiring

    served: list[ServedApp] = []
    saved_environ = dict(os.environ)
    host_json = HostJson.read(REPO / "host.json")

    def start(
        settings: Mapping[str, str],
        *,
        timers: bool = False,
        clock: Clock | None = None,
        queue: QueueOptions | None = None,
    ) -> str:
        env = {**defaults(), **settings}
        os.environ.update(env)
        wiring.reset(dict(os.environ))
        options = HostOptions(
            port=0,
            route_prefix=host_json.route_prefix,
            timers=timers,
            clock=clock or SystemClock(),
            queue=queue or FAST_QUEUES,
        )
        app = ServedApp(env, options)
        served.append(app)
        return app.start()

    try:
        yield start
    finally:
        for app in reversed(served):
            app.stop()
        os.environ.clear()
        os.environ.update(saved_environ)
        wiring.reset()

"""The console's web server (aiohttp, already a dependency of the app): one page, its JSON, its
actions, and a server-sent-events stream.

Live updates are server-sent events, not browser polling: the sources (the simulator's request
log, the app's tables) must be polled by the server anyway, since neither can notify; doing it
once here, whatever the number of open tabs, and pushing the page's JSON only when it changed
gives each tab the change within one poll step and no traffic when nothing happens.
``EventSource`` is built into every browser, reconnects by itself, and needs no client library
and no build step; a WebSocket would add a second direction nothing uses (actions are plain
POSTs).

    GET  /                         the page (static/console.html, .css, .js)
    GET  /api/state                the page's JSON
    GET  /api/events               text/event-stream: "state" events carrying that JSON
    POST /api/phones               {name, calls?}             add a reference device (signs in,
                                                              registers)
    POST /api/phones/{id}/uninstall                           APNs: its tokens are unregistered
    POST /api/phones/{id}/call     {answer: accept|decline}   end the ringing call
    POST /api/messages             {from, to, text, senderName?, schema?}
    POST /api/messages/{id}/edit   {text, schema?}
    POST /api/messages/{id}/delete {schema?}
    POST /api/events/{id}/redeliver                           post an event again
    POST /api/calls                {from, to, callerName?, schema?}
    POST /api/faults               {kind, times?, phoneId?, tokenKind?};  DELETE /api/faults
    POST /api/clock                {seconds} | {reset: true}  the simulator's clock
    POST /api/renewal-sweep                                   run renewal_sweep now

Development only: it lives in ``devtools/`` (left out of the deployed package by .funcignore),
listens on 127.0.0.1, and has no authentication.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from aiohttp import web

from devtools.console.actions import ActionError, Actions, ConsoleConfig
from devtools.console.sources import AppTables, Simulator
from devtools.console.state import ConsoleState, Rules

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
POLL_SECONDS = 0.25  # one read of the simulator's log per step (a since= query: cheap)
KEEP_ALIVE_SECONDS = 15.0
MAX_BODY = 64 * 1024


def config_from_settings(
    env: Mapping[str, str], app_url: str, token_url: str | None
) -> tuple[ConsoleConfig, Rules]:
    """The console's configuration from the app's settings (local.settings.json + services)."""
    from shared.settings import load_settings

    s = load_settings(env, require=False)
    topic = "com.example.pushrelay"
    try:
        apps = json.loads(s.apns_apps) if s.apns_apps.strip() else []
        topic = next(str(a["bundleId"]) for a in apps if isinstance(a, dict) and a.get("bundleId"))
    except (ValueError, StopIteration):
        pass
    resource = env.get("ACS_RESOURCE_ID", "").strip()
    config = ConsoleConfig(app_url=app_url, token_url=token_url, topic=topic)
    if resource:
        config = ConsoleConfig(app_url, token_url, topic, resource)
    rules = Rules(
        renewal_lead=timedelta(minutes=s.renewal_lead_minutes),
        max_per_hour=s.renewal_max_per_hour,
        min_spacing=timedelta(minutes=s.renewal_min_spacing_minutes),
    )
    return config, rules


class Console:
    """The console: its state, its actions, its refresh loop and its HTTP server."""

    def __init__(
        self,
        *,
        config: ConsoleConfig,
        rules: Rules,
        storage_connection: str,
        table_prefix: str,
        simulator_url: str | None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.config = config
        self.host = host
        self.port = port
        self.http = httpx.AsyncClient(timeout=30.0)
        simulator = Simulator(simulator_url, self.http) if simulator_url else None
        self.tables = AppTables(storage_connection, table_prefix)
        self.state = ConsoleState(self.tables, simulator, rules)
        self.actions = Actions(self.state, self.http, config)
        self._version = 0
        self._changed = asyncio.Event()
        self._poke = asyncio.Event()
        self._closing = False
        self._loop_task: asyncio.Task[None] | None = None
        self._runner: web.AppRunner | None = None

    @classmethod
    def from_settings(
        cls,
        env: Mapping[str, str],
        *,
        app_url: str,
        simulator_url: str | None,
        token_url: str | None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> Console:
        """A console for the app served at ``app_url`` with these settings."""
        config, rules = config_from_settings(env, app_url, token_url)
        return cls(
            config=config,
            rules=rules,
            storage_connection=env.get("STORAGE_CONNECTION", ""),
            table_prefix=env.get("TABLE_PREFIX", "") or "pushrelay",
            simulator_url=simulator_url,
            host=host,
            port=port,
        )

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    # --- the refresh loop -----------------------------------------------------------------------
    def _publish(self) -> None:
        self._version += 1
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def _run(self) -> None:
        while not self._closing:
            try:
                if await self.state.refresh() or self._poke.is_set():
                    self._publish()
            except Exception:  # the loop must outlive any one bad step
                log.exception("console refresh failed")
            self._poke.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._poke.wait(), POLL_SECONDS)

    def poke(self) -> None:
        """Refresh and publish now (after an action)."""
        self._poke.set()

    # --- HTTP -----------------------------------------------------------------------------------
    async def _page(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC / "console.html")

    async def _state(self, request: web.Request) -> web.Response:
        return web.json_response(self.state.snapshot())

    async def _events(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            }
        )
        await response.prepare(request)
        seen = -1
        try:
            while not self._closing:
                if seen != self._version:
                    seen = self._version
                    data = json.dumps(self.state.snapshot(), default=str)
                    await response.write(f"event: state\ndata: {data}\n\n".encode())
                changed = self._changed
                try:
                    await asyncio.wait_for(changed.wait(), KEEP_ALIVE_SECONDS)
                except TimeoutError:
                    await response.write(b": keep-alive\n\n")
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        return response

    def _action(
        self, run: Callable[[web.Request, dict[str, Any]], Awaitable[dict[str, Any]]]
    ) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handler(request: web.Request) -> web.Response:
            raw = await request.read()
            try:
                body = json.loads(raw) if raw.strip() else {}
            except ValueError:
                return web.json_response({"error": "the body is not JSON"}, status=400)
            if not isinstance(body, dict):
                return web.json_response({"error": "the body must be a JSON object"}, status=400)
            try:
                result = await run(request, body)
            except ActionError as exc:
                return web.json_response({"error": str(exc)}, status=exc.status)
            finally:
                self.poke()
            return web.json_response(result)

        return handler

    def web_app(self) -> web.Application:
        """The aiohttp application."""
        a = self.actions
        app = web.Application(client_max_size=MAX_BODY)
        r = app.router
        r.add_get("/", self._page)
        r.add_static("/static", STATIC)
        r.add_get("/api/state", self._state)
        r.add_get("/api/events", self._events)
        mi = "{id}"
        post = {
            "/api/phones": lambda q, b: a.add_phone(b),
            f"/api/phones/{mi}/uninstall": lambda q, b: a.uninstall(q.match_info["id"]),
            f"/api/phones/{mi}/call": lambda q, b: a.end_call(
                q.match_info["id"], str(b.get("answer", ""))
            ),
            "/api/messages": lambda q, b: a.send_message(b),
            f"/api/messages/{mi}/edit": lambda q, b: a.edit_message(q.match_info["id"], b),
            f"/api/messages/{mi}/delete": lambda q, b: a.delete_message(q.match_info["id"], b),
            f"/api/events/{mi}/redeliver": lambda q, b: a.redeliver(q.match_info["id"]),
            "/api/calls": lambda q, b: a.call(b),
            "/api/faults": lambda q, b: a.add_fault(b),
            "/api/clock": lambda q, b: a.advance_clock(b),
            "/api/renewal-sweep": lambda q, b: a.run_sweep(),
        }
        for path, run in post.items():
            r.add_post(path, self._action(run))
        r.add_delete("/api/faults", self._action(lambda q, b: a.clear_faults()))
        return app

    # --- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> str:
        """Listen and start refreshing; returns the page's URL."""
        self._runner = web.AppRunner(self.web_app(), access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        if self.port == 0 and site._server is not None:
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        self._loop_task = asyncio.ensure_future(self._run())
        return self.url

    async def stop(self) -> None:
        """Stop refreshing, end the event streams, stop listening, close the clients."""
        self._closing = True
        self._publish()
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        for agent in self.state.agents:
            agent.close()
        await self.http.aclose()
        await self.tables.aclose()

"""The local development host: serves a FunctionApp's functions like the Functions host does.

This is not the Azure Functions host. It exists because Core Tools cannot be installed offline;
with Core Tools, ``func start`` serves the same app. What it serves comes from the app object
only (see :mod:`devtools.localhost.catalog`):

- HTTP triggers under ``/<routePrefix>/<route>`` (``api`` unless host.json says otherwise);
- the Event Grid webhook ``/runtime/webhooks/eventgrid?functionName=NAME``;
- ``POST /admin/functions/NAME`` with ``{"input": "..."}`` to run a non-HTTP function now;
- timers on their schedules and queue triggers polling their queues.

Keys are not checked (the real host does not check them locally either), and Easy Auth's
``X-MS-CLIENT-PRINCIPAL*`` headers are stripped, since no Easy Auth stands in front of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import azure.functions as func
from aiohttp import web

from devtools.localhost import eventgrid, invoke
from devtools.localhost.catalog import Catalog, FunctionSpec, build_catalog
from devtools.localhost.queues import (
    QueueOptions,
    QueuePoller,
    QueueStore,
    connection_name,
    output_payloads,
    queue_message,
)
from devtools.localhost.routes import RouteTable
from devtools.localhost.timers import Clock, SystemClock, TimerRunner, timer_request

log = logging.getLogger(__name__)

EVENTGRID_PATH = "/runtime/webhooks/eventgrid"
ADMIN_PREFIX = "/admin/functions/"
EASY_AUTH_HEADER = "x-ms-client-principal"
# The Functions host accepts request bodies up to 100 MB.
MAX_BODY = 100 * 1024 * 1024
BANNER_TITLE = (
    "pushrelay LOCAL DEVELOPMENT HOST: not the Azure Functions host "
    "(with Azure Functions Core Tools installed, `func start` serves the same app)"
)


def _timespan(text: str) -> float | None:
    m = re.fullmatch(r"(?:(\d+)\.)?(\d{1,2}):(\d{2}):(\d{2}(?:\.\d+)?)", text.strip())
    if m is None:
        return None
    days, hours, minutes = (int(g or 0) for g in m.groups()[:3])
    return timedelta(days=days, hours=hours, minutes=minutes, seconds=float(m[4])).total_seconds()


@dataclass(frozen=True)
class HostJson:
    """The parts of host.json the local host honours."""

    route_prefix: str = "api"
    visibility_timeout: float = 0.0
    max_dequeue_count: int = 5
    batch_size: int = 16

    @classmethod
    def read(cls, path: Path) -> HostJson:
        """Read host.json; a missing file gives the host's defaults."""
        if not path.exists():
            return cls()
        data = json.loads(path.read_text(encoding="utf-8"))
        extensions = data.get("extensions", {})
        queues = extensions.get("queues", {})
        visibility = _timespan(str(queues.get("visibilityTimeout", "00:00:00"))) or 0.0
        return cls(
            route_prefix=str(extensions.get("http", {}).get("routePrefix", "api")).strip("/"),
            visibility_timeout=visibility,
            max_dequeue_count=int(queues.get("maxDequeueCount", 5)),
            batch_size=int(queues.get("batchSize", 16)),
        )

    def queue_options(self, poll_interval: float = 1.0) -> QueueOptions:
        return QueueOptions(
            poll_interval=poll_interval,
            visibility_timeout=self.visibility_timeout,
            max_dequeue_count=self.max_dequeue_count,
            batch_size=self.batch_size,
        )


@dataclass(frozen=True)
class HostOptions:
    """How the local host runs; tests inject a clock and short intervals."""

    host: str = "127.0.0.1"
    port: int = 7071
    route_prefix: str = "api"
    timers: bool = True
    queues: bool = True
    clock: Clock = field(default_factory=SystemClock)
    queue: QueueOptions = field(default_factory=QueueOptions)
    strip_easy_auth: bool = True


def host_query(query: Mapping[str, str]) -> dict[str, str]:
    """The query as the Functions host hands it to the worker (``req.params``).

    The host drops parameters whose value is empty and joins a repeated parameter's values with
    ``,`` (``?a=1&a=2&b=`` arrives as ``{"a": "1,2"}``); aiohttp's MultiDict keeps them all.
    """
    params: dict[str, str] = {}
    for key in dict.fromkeys(query):
        values = [v for v in query.getall(key) if v]  # type: ignore[attr-defined]
        if values:
            params[key] = ",".join(values)
    return params


def _json(status: int, body: Mapping[str, Any]) -> web.Response:
    return web.json_response(dict(body), status=status)


def _http_response(result: Any) -> web.Response:
    """Translate a function's return value like the worker's HttpResponseConverter."""
    if result is None:
        return web.Response(status=204)
    if isinstance(result, str):
        return web.Response(status=200, body=result.encode("utf-8"), content_type="text/plain")
    if isinstance(result, func.HttpResponse):
        headers = dict(result.headers.items())
        if not any(k.lower() == "content-type" for k in headers):
            mimetype = result.mimetype
            text = mimetype.startswith("text/")
            headers["Content-Type"] = f"{mimetype}; charset={result.charset}" if text else mimetype
        return web.Response(status=result.status_code, body=result.get_body(), headers=headers)
    raise TypeError(f"an HTTP function returned {type(result).__name__}, not an HttpResponse")


class LocalHost:
    """Serves one FunctionApp: HTTP, Event Grid, admin, timers and queues."""

    def __init__(
        self,
        app: func.FunctionApp,
        env: Mapping[str, str],
        options: HostOptions | None = None,
    ) -> None:
        self.options = options or HostOptions()
        self.env = dict(env)
        self.catalog: Catalog = build_catalog(app, self.env)
        self.routes = RouteTable.build(self.catalog.of_type("httpTrigger"))
        self._stores: dict[str, QueueStore] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._warned_keys: set[str] = set()
        self._warned_easy_auth = False
        self._runner: web.AppRunner | None = None
        self.port = self.options.port
        self.disabled: dict[str, str] = dict(self.catalog.errors)

    # --- invoking ----------------------------------------------------------------------------
    def _store(self, connection: str) -> QueueStore:
        value = self.env.get(connection, "")
        if not value:
            raise RuntimeError(f"setting {connection} (a Storage connection string) is not set")
        store = self._stores.get(value)
        if store is None:
            store = self._stores[value] = QueueStore(value)
        return store

    async def run_function(self, spec: FunctionSpec, trigger_value: Any) -> invoke.Invocation:
        """Invoke a function and write its queue outputs; its exceptions propagate."""
        invocation = await invoke.call(spec, trigger_value)
        for binding in spec.outputs:
            if binding.type != "queue":
                continue
            encoder, pytype = spec.output_types.get(binding.name, ("queue", None))
            payloads = output_payloads(invocation.output(binding), encoder, pytype)
            if payloads:
                store = self._store(connection_name(binding))
                name = str(binding.get("queueName", "")).lower()
                for payload in payloads:
                    await store.send(name, payload)
        return invocation

    # --- HTTP --------------------------------------------------------------------------------
    def _headers(self, request: web.Request) -> dict[str, str]:
        headers: dict[str, str] = {}
        for key, value in request.headers.items():
            lower = key.lower()
            if self.options.strip_easy_auth and lower.startswith(EASY_AUTH_HEADER):
                if not self._warned_easy_auth:
                    log.warning("stripped %s* headers: no Easy Auth runs locally", key)
                    self._warned_easy_auth = True
                continue
            headers[lower] = f"{headers[lower]}, {value}" if lower in headers else value
        return headers

    async def _http(self, request: web.Request, path: str) -> web.StreamResponse:
        route, params, allowed = self.routes.find(request.method, path)
        if route is None:
            if allowed:
                return _json(405, {"error": "method not allowed", "allow": sorted(allowed)})
            return _json(404, {"error": "no function serves this route"})
        spec = route.function
        level = str(spec.trigger.get("authLevel", "ANONYMOUS")).upper()
        if level != "ANONYMOUS" and spec.name not in self._warned_keys:
            self._warned_keys.add(spec.name)
            log.warning(
                "function %s has auth level %s: keys are not checked locally", spec.name, level
            )
        req = func.HttpRequest(
            method=request.method,
            url=str(request.url),
            headers=self._headers(request),
            params=host_query(request.query),
            route_params=params,
            body=await request.read(),
        )
        try:
            invocation = await self.run_function(spec, req)
            return _http_response(invocation.return_value)
        except Exception as exc:
            log.exception("function %s failed", spec.name)
            return _json(500, {"error": "the function failed", "type": type(exc).__name__})

    # --- Event Grid --------------------------------------------------------------------------
    async def _eventgrid(self, request: web.Request) -> web.StreamResponse:
        name = request.query.get("functionName", "")
        spec = self.catalog.functions.get(name)
        if spec is None or spec.trigger_type != "eventGridTrigger":
            return _json(404, {"error": f"cannot find function: '{name}'"})
        if request.method == "OPTIONS":
            origin = eventgrid.allowed_origin(request.headers.get("WebHook-Request-Origin"))
            return web.Response(status=200, headers={"WebHook-Allowed-Origin": origin})
        if request.method != "POST":
            return _json(405, {"error": "use POST (or OPTIONS for the CloudEvents handshake)"})
        kind = request.headers.get("aeg-event-type", "").lower()
        body = await request.read()
        try:
            if kind == "subscriptionvalidation":
                code = eventgrid.validation_code(body)
                log.info("perform handshake with eventGrid for function: %s", name)
                return _json(200, {"validationResponse": code})
            if kind == "unsubscribe":
                return web.Response(status=202)
            if kind != "notification":
                return _json(400, {"error": "header aeg-event-type must be Notification"})
            events = [eventgrid.decode_event(e) for e in eventgrid.parse_events(body)]
        except eventgrid.MalformedEventsError as exc:
            return _json(400, {"error": str(exc)})
        results = await asyncio.gather(
            *(self.run_function(spec, event) for event in events), return_exceptions=True
        )
        failed = [r for r in results if isinstance(r, BaseException)]
        for error in failed:
            log.error("function %s failed: %s", name, error, exc_info=error)
        if failed:
            return _json(500, {"error": "an invocation failed", "failed": len(failed)})
        return web.Response(status=202)

    # --- admin -------------------------------------------------------------------------------
    def _admin_value(self, spec: FunctionSpec, text: str) -> Any:
        clock = self.options.clock
        if spec.trigger_type == "timerTrigger":
            now = clock.now()
            return timer_request(past_due=False, last=None, next_at=now, now=now)
        if spec.trigger_type == "queueTrigger":
            return func.QueueMessage(body=text.encode("utf-8"))
        return eventgrid.decode_event(eventgrid.parse_events(text.encode("utf-8"))[0])

    async def _admin(self, request: web.Request, name: str) -> web.StreamResponse:
        spec = self.catalog.functions.get(name)
        if spec is None:
            return _json(404, {"error": f"no function named {name!r}"})
        if request.method != "POST":
            return _json(405, {"error": "use POST"})
        if spec.trigger_type == "httpTrigger":
            return _json(400, {"error": "call an HTTP function at its route"})
        raw = await request.read()
        try:
            payload = json.loads(raw) if raw.strip() else {}
            value = self._admin_value(spec, str(payload.get("input", "")))
        except (ValueError, AttributeError, eventgrid.MalformedEventsError) as exc:
            return _json(400, {"error": f'body must be {{"input": ...}}: {exc}'})
        self.spawn(self._fire(spec, value))
        return web.Response(status=202)

    async def _fire(self, spec: FunctionSpec, value: Any) -> None:
        try:
            await self.run_function(spec, value)
        except Exception:
            log.exception("function %s failed", spec.name)

    # --- server ------------------------------------------------------------------------------
    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Dispatch one request by path."""
        path = request.rel_url.raw_path
        prefix = f"/{self.options.route_prefix}/" if self.options.route_prefix else "/"
        if path == EVENTGRID_PATH:
            return await self._eventgrid(request)
        if path.startswith(ADMIN_PREFIX):
            return await self._admin(request, path[len(ADMIN_PREFIX) :])
        if path == "/" and request.method in ("GET", "HEAD"):
            return web.Response(text=BANNER_TITLE + "\n")
        if path.startswith(prefix) or path + "/" == prefix:
            return await self._http(request, path[len(prefix) :])
        return _json(404, {"error": "not found"})

    def web_app(self) -> web.Application:
        """The aiohttp application (tests may serve it with aiohttp's test server)."""
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app

    def spawn(self, coroutine: Any) -> asyncio.Task[Any]:
        """Run a background task owned by the host (cancelled by :meth:`stop`)."""
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def start_triggers(self) -> None:
        """Start the timers and queue pollers the options allow."""
        if self.options.timers:
            for spec in self.catalog.of_type("timerTrigger"):
                try:
                    self.spawn(TimerRunner(spec, self.run_function, self.options.clock).run())
                except ValueError as exc:
                    self.disabled[spec.name] = str(exc)
        if self.options.queues:
            for spec in self.catalog.of_type("queueTrigger"):
                try:
                    store = self._store(connection_name(spec.trigger))
                except RuntimeError as exc:
                    self.disabled[spec.name] = str(exc)
                    continue
                poller = QueuePoller(spec, store, self.run_function, self.options.queue)
                self.spawn(poller.run())

    async def start(self) -> str:
        """Listen, start the triggers, and return the base URL."""
        self._runner = web.AppRunner(self.web_app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.options.host, self.options.port)
        await site.start()
        server = site._server
        if self.options.port == 0 and server is not None:
            self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        self.start_triggers()
        return self.base_url

    @property
    def base_url(self) -> str:
        return f"http://{self.options.host}:{self.port}"

    async def stop(self) -> None:
        """Cancel the triggers, close the queue clients and stop listening."""
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for store in self._stores.values():
            await store.aclose()
        self._stores.clear()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def banner(self) -> str:
        """What is served where, and a clear word that this is a local development host."""
        base = self.base_url
        lines = [BANNER_TITLE, "", "Functions:"]
        for spec in self.catalog.functions.values():
            if spec.name in self.disabled:
                continue
            t = spec.trigger
            if spec.trigger_type == "httpTrigger":
                methods = ",".join(t.get("methods") or ["ANY"])
                route = str(t.get("route") or spec.name)
                prefix = f"/{self.options.route_prefix}" if self.options.route_prefix else ""
                lines.append(f"  {spec.name}: [{methods}] {base}{prefix}/{route}")
            elif spec.trigger_type == "eventGridTrigger":
                url = f"{base}{EVENTGRID_PATH}?functionName={spec.name}"
                lines.append(f"  {spec.name}: eventGridTrigger {url}")
            elif spec.trigger_type == "timerTrigger":
                state = "" if self.options.timers else ", not scheduled"
                lines.append(
                    f"  {spec.name}: timerTrigger ({t.get('schedule')}{state}); "
                    f'run now: POST {base}{ADMIN_PREFIX}{spec.name} {{"input": ""}}'
                )
            else:
                state = "" if self.options.queues else ", not polled"
                lines.append(f"  {spec.name}: queueTrigger ({t.get('queueName')}{state})")
        if not self.catalog.functions:
            lines.append("  (the app has no functions yet)")
        for name, reason in self.disabled.items():
            lines.append(f"  {name}: NOT SERVED: {reason}")
        return "\n".join(lines)


__all__ = ["HostJson", "HostOptions", "LocalHost", "queue_message"]

"""A test-only FunctionApp that exercises every binding the local host serves.

Each function records what it received in a :class:`Recorder`, so tests assert on what the
function saw. Built per test (``build_app``) so tests never share state.
"""

from __future__ import annotations

import asyncio
import json
import threading
import typing
from dataclasses import dataclass, field
from typing import Any

import azure.functions as func


@dataclass
class Recorder:
    """Thread-safe record of invocations; tests await a number of them."""

    loop: asyncio.AbstractEventLoop
    calls: list[tuple[str, Any]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    barrier: asyncio.Barrier | None = None

    def record(self, name: str, value: Any) -> None:
        with self._lock:
            self.calls.append((name, value))
        self.loop.call_soon_threadsafe(self._changed.set)

    def of(self, name: str) -> list[Any]:
        with self._lock:
            return [v for n, v in self.calls if n == name]

    async def wait_for(self, name: str, count: int, timeout: float = 10.0) -> list[Any]:
        """Wait until ``name`` was invoked ``count`` times; returns what it received."""
        async with asyncio.timeout(timeout):
            while len(self.of(name)) < count:
                self._changed.clear()
                if len(self.of(name)) >= count:
                    break
                await self._changed.wait()
        return self.of(name)


def build_app(rec: Recorder) -> func.FunctionApp:
    app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)

    @app.route(route="hello/{name}", methods=["GET"])
    async def hello(req: func.HttpRequest) -> func.HttpResponse:
        rec.record("hello", req)
        greeting = req.params.get("greeting", "hello")
        return func.HttpResponse(f"{greeting} {req.route_params['name']}")

    @app.route(route="items/{id:int}", methods=["GET", "DELETE"])
    def items(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse(
            json.dumps({"method": req.method, "id": req.route_params["id"]}),
            mimetype="application/json",
        )

    @app.route(route="echo", methods=["POST"])
    def echo(req: func.HttpRequest) -> func.HttpResponse:
        rec.record("echo", threading.current_thread().name)
        body = {
            "body": req.get_json(),
            "header": req.headers.get("x-test"),
            "principal": req.headers.get("x-ms-client-principal"),
            "url": req.url,
        }
        return func.HttpResponse(
            json.dumps(body),
            status_code=201,
            headers={"X-Served-By": "echo"},
            mimetype="application/json",
        )

    @app.route(route="boom")
    def boom(req: func.HttpRequest) -> func.HttpResponse:
        raise RuntimeError("secret detail that must not leak")

    @app.route(route="%ROUTE_SETTING%/ping", methods=["GET"])
    def ping(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse("pong")

    @app.route(route="keyed", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
    def keyed(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse("keyed")

    @app.route(route="enqueue", methods=["POST"])
    @app.queue_output(arg_name="out", queue_name="%OUT_QUEUE%", connection="AzureWebJobsStorage")
    def enqueue(req: func.HttpRequest, out: func.Out[str]) -> func.HttpResponse:
        out.set(req.get_body().decode())
        return func.HttpResponse(status_code=202)

    @app.event_grid_trigger(arg_name="event")
    async def on_event(event: func.EventGridEvent) -> None:
        rec.record("on_event", event)
        if rec.barrier is not None:
            await rec.barrier.wait()
        data = event.get_json()
        if isinstance(data, dict) and data.get("fail"):
            raise RuntimeError("this event fails")

    @app.timer_trigger(arg_name="timer", schedule="%TICK_SCHEDULE%")
    def tick(timer: func.TimerRequest) -> None:
        rec.record("tick", timer)

    @app.queue_trigger(arg_name="msg", queue_name="%WORK_QUEUE%", connection="AzureWebJobsStorage")
    @app.queue_output(arg_name="out", queue_name="%OUT_QUEUE%", connection="AzureWebJobsStorage")
    # typing.List: the Python worker refuses builtin generics such as list[str].
    async def work(msg: func.QueueMessage, out: func.Out[typing.List[str]]) -> None:  # noqa: UP006
        body = msg.get_body().decode()
        rec.record("work", msg)
        if body == "fail":
            raise RuntimeError("this message fails")
        out.set([body + "-a", body + "-b"])

    return app

"""``python -m devtools.localhost``: serve the Function App locally until Ctrl-C or SIGTERM.

Settings come from the environment, then from ``local.settings.json``'s ``Values`` for names the
environment does not set. Azurite must already run for queue triggers (the README's run
command starts everything).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Protocol

from devtools.localhost.catalog import import_app
from devtools.localhost.server import HostJson, HostOptions, LocalHost
from devtools.localhost.worker import WorkerIndexError, WorkerUnavailableError

log = logging.getLogger("devtools.localhost")


class Companion(Protocol):
    """Something served beside the app on the host's event loop (the developer console)."""

    async def start(self, host: LocalHost) -> None:
        """Start once the host listens (its base URL is known)."""
        ...

    async def stop(self) -> None:
        """Stop before the host stops."""
        ...


def read_local_settings(path: Path) -> dict[str, str]:
    """The ``Values`` of a local.settings.json file (empty when it does not exist)."""
    if not path.exists():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    values = data.get("Values", {})
    return {str(k): "" if v is None else str(v) for k, v in values.items()}


async def serve(
    env: Mapping[str, str],
    *,
    app_target: str = "function_app",
    app_dir: Path | None = None,
    options: HostOptions | None = None,
    on_ready: Callable[[LocalHost], None] | None = None,
    stop: asyncio.Event | None = None,
    on_shutdown: Callable[[], Awaitable[None]] | None = None,
    companions: Sequence[Companion] = (),
) -> None:
    """Serve the app until ``stop`` is set (or SIGINT/SIGTERM when no event is given).

    ``env`` is applied to ``os.environ`` first, so the app's own code reads the same settings.
    ``companions`` start after the host listens and before ``on_ready``, and stop before it.
    ``on_shutdown`` runs after the host stopped, on the same loop (the app's clients live there).
    """
    os.environ.update(env)
    directory = (app_dir or Path.cwd()).resolve()
    host_json = HostJson.read(directory / "host.json")
    if options is None:
        options = HostOptions(route_prefix=host_json.route_prefix, queue=host_json.queue_options())
    host = LocalHost(import_app(app_target, app_dir=directory), os.environ, options)
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
    await host.start()
    started: list[Companion] = []
    try:
        for companion in companions:
            await companion.start(host)
            started.append(companion)
        if on_ready is not None:
            on_ready(host)
        await stop.wait()
    finally:
        for companion in reversed(started):
            try:
                await companion.stop()
            except Exception:  # the host must still stop
                log.exception("stopping %s failed", type(companion).__name__)
        await host.stop()
        if on_shutdown is not None:
            await on_shutdown()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.localhost",
        description="Local development host for the Function App (not the Azure Functions host; "
        "`func start` serves the same app where Core Tools are installed).",
    )
    parser.add_argument("--app", default="function_app", help="module[:attribute] of the app")
    parser.add_argument("--app-dir", type=Path, default=Path.cwd(), help="folder of the app")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7071)
    parser.add_argument("--settings", type=Path, default=Path("local.settings.json"))
    parser.add_argument("--no-timers", action="store_true", help="do not run timer schedules")
    parser.add_argument("--no-queues", action="store_true", help="do not poll queue triggers")
    parser.add_argument("--poll-interval", type=float, default=1.0, help="queue poll seconds")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")

    env = {**read_local_settings(args.settings), **os.environ}
    host_json = HostJson.read(args.app_dir / "host.json")
    options = HostOptions(
        host=args.host,
        port=args.port,
        route_prefix=host_json.route_prefix,
        timers=not args.no_timers,
        queues=not args.no_queues,
        queue=host_json.queue_options(args.poll_interval),
    )

    def ready(host: LocalHost) -> None:
        print(host.banner(), flush=True)

    try:
        asyncio.run(
            serve(env, app_target=args.app, app_dir=args.app_dir, options=options, on_ready=ready)
        )
    except WorkerIndexError as exc:
        # The host's own words in Azure; it then serves no function at all.
        print(f"error: Worker failed to index functions: {exc}", file=sys.stderr)
        return 1
    except WorkerUnavailableError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

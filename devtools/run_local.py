"""The local run behind ``bash scripts/run-local.sh``: everything the app needs, then the app.

1. Install (unless ``--no-install``): ``requirements-dev.txt`` into this interpreter's venv and
   the npm packages (Azurite) when they are missing.
2. ``local.settings.json``: copied from ``local.settings.sample.json`` on first run, with a freshly
   generated ``KEY_ENCRYPTION_KEYS`` (kept across runs, or stored preview keys would be lost).
3. Azurite on disk under ``.local/azurite`` (ports 10000-10002 unless busy).
4. The development services, each by the same command-line contract
   (``python -m devtools.<name> --state-dir DIR`` prints one JSON line with ``settings``): the
   APNs simulator unless real APNs credentials (``APNS_APPS``) are configured, the local ACS
   identity service unless ``ACS_CONNECTION_STRING`` is, the local identity provider unless
   ``AUTH_JWKS_URL`` is. A service whose module does not exist is skipped, and said so.
5. Settings: local.settings.json ``Values`` <- the services' settings (Azurite's connection
   string replaces ``UseDevelopmentStorage=true``). The settings table's defaults are applied by
   the app itself, never by the host: ``%SETTING%`` binding expressions resolve from these only.
6. The app on the local development host (127.0.0.1:7071) and, beside it on the same event
   loop, the developer console (``devtools/console``, 127.0.0.1:7072 unless busy): what each
   registered phone would show, the APNs wire, and actions. A summary with every URL, and a
   clean stop of everything on Ctrl-C or SIGTERM. While it is up, ``.local/run.json`` says where
   its storage is (Azurite may be on other ports than 10000-10002), so
   ``python -m devtools.delivery_log`` finds it by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import importlib.util
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from devtools.localhost.server import LocalHost

REPO = Path(__file__).resolve().parent.parent
DEV_STORAGE = "UseDevelopmentStorage=true"
STORAGE_SETTINGS = ("AzureWebJobsStorage", "STORAGE_CONNECTION")
AZURITE_PORTS = (10000, 10001, 10002)
DEV_BUNDLE_ID = "com.example.pushrelay"
READY_TIMEOUT = 60.0
CONSOLE_PORT = 7072
RUN_FILE = "run.json"  # read by devtools.delivery_log: where this run's storage is


class RunError(RuntimeError):
    """The local run cannot continue; the message says why and what to do."""


@dataclass(frozen=True)
class DevService:
    """A development service started by the command-line contract."""

    name: str
    module: str
    title: str
    # The setting that, when configured, means the real service is used instead.
    real_when: str
    args: tuple[str, ...] = ()

    def module_exists(self) -> bool:
        try:
            return importlib.util.find_spec(self.module) is not None
        except ModuleNotFoundError:
            return False


DEV_SERVICES: tuple[DevService, ...] = (
    DevService(
        "apns_simulator",
        "devtools.apns_simulator",
        "APNs simulator",
        "APNS_APPS",
        ("--dev-app", DEV_BUNDLE_ID),
    ),
    DevService(
        "acs_identity_service",
        "devtools.acs_identity_service",
        "local ACS identity service",
        "ACS_CONNECTION_STRING",
    ),
    DevService(
        "dev_identity_provider",
        "devtools.dev_identity_provider",
        "local identity provider",
        "AUTH_JWKS_URL",
    ),
)


@dataclass
class Started:
    """A running development service and what it reported."""

    service: DevService
    process: subprocess.Popen[bytes]
    report: dict[str, Any]
    log_path: Path


@dataclass
class Plan:
    """What the run decided: settings, and which services it started or skipped and why."""

    settings: dict[str, str] = field(default_factory=dict)
    started: list[Started] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def say(text: str = "", out: IO[str] | None = None) -> None:
    stream = out or sys.stdout
    stream.write(text + "\n")
    stream.flush()


# --- installing ---------------------------------------------------------------------------------
def install(repo: Path = REPO) -> None:
    """Install the Python and npm dependencies. Raises RunError when a step fails."""
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    steps: list[list[str]] = [
        [*pip, "-r", str(repo / "requirements-dev.txt")],
        # The Functions worker's indexing code declares Python >= 3.13 but runs on 3.11.
        [
            *pip,
            "--no-deps",
            "--ignore-requires-python",
            "-r",
            str(repo / "requirements-worker.txt"),
        ],
    ]
    if not (repo / "node_modules" / "azurite" / "package.json").exists():
        npm = shutil.which("npm")
        if npm is None:
            raise RunError("npm is not on PATH: install Node.js 20 (Azurite needs it)")
        steps.append([npm, "ci", "--no-audit", "--no-fund", "--silent"])
    for step in steps:
        say(f"== {Path(step[0]).name} {' '.join(step[1:])}")
        if subprocess.run(step, cwd=repo, check=False).returncode != 0:
            raise RunError(f"installing failed: {' '.join(step)}")


# --- settings -----------------------------------------------------------------------------------
def new_key_encryption_keys() -> str:
    """A fresh key-encryption key in the KEY_ENCRYPTION_KEYS format ``id=base64(32 bytes)``."""
    return "local1=" + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def prepare_local_settings(path: Path, sample: Path) -> tuple[dict[str, str], bool]:
    """The ``Values`` of local.settings.json, created from the sample on first run.

    An empty KEY_ENCRYPTION_KEYS is filled with a fresh key and written back. Returns the values
    and whether the file was created.
    """
    created = not path.exists()
    if created:
        data = json.loads(sample.read_text(encoding="utf-8"))
    else:
        data = json.loads(path.read_text(encoding="utf-8"))
    values = data.setdefault("Values", {})
    changed = created
    if not str(values.get("KEY_ENCRYPTION_KEYS") or "").strip():
        values["KEY_ENCRYPTION_KEYS"] = new_key_encryption_keys()
        changed = True
    if changed:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        path.chmod(0o600)
    return {str(k): "" if v is None else str(v) for k, v in values.items()}, created


def merge_settings(
    local_values: Mapping[str, str],
    services: list[Mapping[str, str]],
    storage_connection: str,
) -> dict[str, str]:
    """local values <- services' settings; Azurite replaces development storage.

    The settings table's defaults stay out: they are the app's own (``shared/settings.py``
    applies them), while the Functions host resolves ``%SETTING%`` binding expressions from app
    settings alone, so a schedule missing from ``local.settings.json`` must fail here as in Azure.
    """
    merged = dict(local_values)
    for reported in services:
        merged.update({str(k): str(v) for k, v in reported.items()})
    for name in STORAGE_SETTINGS:
        if merged.get(name, "").strip() in ("", DEV_STORAGE):
            merged[name] = storage_connection
    return merged


# --- processes ----------------------------------------------------------------------------------
def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _read_ready_line(process: subprocess.Popen[bytes], timeout: float) -> bytes:
    """The first stdout line of a service, or b"" when it exited or took too long."""
    assert process.stdout is not None
    result: list[bytes] = []
    stdout = process.stdout
    reader = threading.Thread(target=lambda: result.append(stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return result[0] if result else b""


def _drain(stream: IO[bytes], sink: Path) -> None:
    with sink.open("ab") as fh:
        for line in stream:
            fh.write(line)


def start_service(
    service: DevService, state_dir: Path, log_dir: Path, timeout: float = READY_TIMEOUT
) -> Started:
    """Start a service by the contract and wait for its JSON line. Raises RunError."""
    state = state_dir / service.name
    state.mkdir(parents=True, exist_ok=True)
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{service.name}.log"
    command = [sys.executable, "-m", service.module, "--state-dir", str(state), *service.args]
    with log_path.open("ab") as log_file:
        process = subprocess.Popen(
            command,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=log_file,
            start_new_session=True,
        )
    line = _read_ready_line(process, timeout)
    try:
        report = json.loads(line)
        if not isinstance(report, dict) or not isinstance(report.get("settings"), dict):
            raise ValueError("no settings object")
    except ValueError:
        stop_process(process)
        raise RunError(
            f"{service.title} did not report ready within {timeout:.0f} s; see {log_path}"
        ) from None
    assert process.stdout is not None
    threading.Thread(target=_drain, args=(process.stdout, log_path), daemon=True).start()
    return Started(service, process, report, log_path)


def stop_process(process: subprocess.Popen[bytes], timeout: float = 10.0) -> int | None:
    """SIGTERM the process (its session), then SIGKILL after ``timeout``; returns its code."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return process.returncode


# --- the run ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Options:
    """Where the run keeps its files and which ports it uses."""

    repo: Path = REPO
    local_dir: Path = REPO / ".local"
    settings_file: Path = REPO / "local.settings.json"
    host: str = "127.0.0.1"
    port: int = 7071
    azurite_auto_ports: bool = False
    skip: frozenset[str] = frozenset()
    extra_services: tuple[str, ...] = ()
    timers: bool = True
    console: bool = True
    console_port: int = CONSOLE_PORT


def _services(options: Options) -> list[DevService]:
    extra = [
        DevService(m.rsplit(".", 1)[-1], m, m.rsplit(".", 1)[-1], "")
        for m in options.extra_services
    ]
    return [*DEV_SERVICES, *extra]


def start_services(options: Options, local_values: Mapping[str, str], plan: Plan) -> None:
    """Start every development service that is needed and present; record the others."""
    for service in _services(options):
        if service.name in options.skip:
            plan.skipped.append(f"{service.title}: skipped (--skip {service.name})")
            continue
        if service.real_when and str(local_values.get(service.real_when, "")).strip():
            plan.skipped.append(
                f"{service.title}: not started ({service.real_when} is configured in "
                f"{options.settings_file.name}: the real service is used)"
            )
            continue
        if not service.module_exists():
            plan.skipped.append(f"{service.title}: not started (module {service.module} is absent)")
            continue
        say(f"== starting the {service.title}")
        plan.started.append(start_service(service, options.local_dir, options.local_dir / "logs"))


def endpoints(host: LocalHost) -> list[str]:
    """The URLs to point things at, from the functions the local host serves (its catalog).

    Event Grid webhooks first (the ACS event subscriptions go there), then the HTTP API, then
    how to run a timer function now. Functions the host cannot serve are left out.
    """
    from devtools.localhost.server import ADMIN_PREFIX, EVENTGRID_PATH

    base = host.base_url
    prefix = f"/{host.options.route_prefix}" if host.options.route_prefix else ""
    served = [f for f in host.catalog.functions.values() if f.name not in host.disabled]
    webhooks = [
        f"  {f.name}: {base}{EVENTGRID_PATH}?functionName={f.name}"
        for f in served
        if f.trigger_type == "eventGridTrigger"
    ]
    api = [
        f"  {','.join(f.trigger.get('methods') or ['ANY'])} "
        f"{base}{prefix}/{f.trigger.get('route') or f.name} ({f.name})"
        for f in served
        if f.trigger_type == "httpTrigger"
    ]
    timers = [f.name for f in served if f.trigger_type == "timerTrigger"]
    lines: list[str] = []
    if webhooks:
        lines += ["Event Grid webhooks (subscribe the ACS events here):", *webhooks]
    if api:
        lines += ["HTTP API:", *api]
    if timers:
        lines.append(
            f'Run a timer now: POST {base}{ADMIN_PREFIX}<name> {{"input": ""}} '
            f"(name: {', '.join(timers)})"
        )
    return lines


@dataclass
class ConsoleCompanion:
    """The developer console, started beside the app once the app listens (its URL is known).

    Development only: it is in ``devtools/`` (left out of the deployed package by .funcignore)
    and only the local run starts it.
    """

    settings: Mapping[str, str]
    reports: Mapping[str, Mapping[str, Any]]
    host: str = "127.0.0.1"
    port: int = CONSOLE_PORT
    url: str | None = None
    moved: bool = False
    _console: Any = None

    async def start(self, host: LocalHost) -> None:
        from devtools.console.server import Console

        port = self.port
        if port and not port_is_free(port, self.host):
            port, self.moved = 0, True
        simulator = self.reports.get("apns_simulator", {}).get("control_url")
        idp = self.reports.get("dev_identity_provider", {}).get("token_url")
        self._console = Console.from_settings(
            self.settings,
            app_url=host.base_url,
            simulator_url=str(simulator) if simulator else None,
            token_url=str(idp) if idp else None,
            host=self.host,
            port=port,
        )
        self.url = await self._console.start()

    async def stop(self) -> None:
        if self._console is not None:
            await self._console.stop()

    def line(self) -> str:
        """The summary's line for the console."""
        busy = f" (port {self.port} was busy)" if self.moved else ""
        return (
            f"Developer console (each phone's lock screen, the APNs wire, actions): "
            f"{self.url}{busy}"
        )


def summary(
    plan: Plan,
    azurite: Any,
    banner: str,
    endpoint_lines: list[str],
    console_line: str | None = None,
) -> str:
    """What runs where, what is simulated and what was skipped, and the endpoints to use
    (``endpoint_lines``: from :func:`endpoints`), then the developer console's URL."""
    lines = [
        "",
        "=" * 78,
        banner,
        "",
        f"Azurite (data in {azurite.location}): blob {azurite.blob_port}, "
        f"queue {azurite.queue_port}, table {azurite.table_port}",
    ]
    for started in plan.started:
        extras = {k: v for k, v in started.report.items() if k != "settings" and isinstance(v, str)}
        detail = ", ".join(f"{k} {v}" for k, v in extras.items())
        lines.append(f"{started.service.title} (simulated; log {started.log_path}): {detail}")
    lines += plan.skipped
    lines += [
        "",
        *endpoint_lines,
        "What happened to a message (reads this run's storage; see .local/run.json):",
        "  .venv/bin/python -m devtools.delivery_log --thread THREAD_ID --message MESSAGE_ID "
        "--user ACS_USER_ID",
    ]
    if console_line:
        lines += ["", console_line]
    lines += [
        "Stop with Ctrl-C.",
        "=" * 78,
    ]
    return "\n".join(lines)


def write_run_file(path: Path, settings: Mapping[str, str], app_url: str) -> None:
    """Say where this run's storage is, for the tools that read it (owner-only: the
    connection string may carry an account key)."""
    run = {
        "pid": os.getpid(),
        "app": app_url,
        "STORAGE_CONNECTION": settings.get("STORAGE_CONNECTION", ""),
        "TABLE_PREFIX": settings.get("TABLE_PREFIX", ""),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_text(json.dumps(run, indent=2) + "\n", encoding="utf-8")


def _azurite_ports(options: Options) -> tuple[int, int, int] | None:
    if options.azurite_auto_ports:
        return None
    if all(port_is_free(p) for p in AZURITE_PORTS):
        return AZURITE_PORTS
    say("Azurite's usual ports 10000-10002 are busy: using free ports instead")
    return None


async def close_app_clients() -> None:
    """Close the app's storage and HTTP clients, as a worker's exit would (no unclosed sessions)."""
    from shared.wiring import container

    await container().aclose()


def run(
    options: Options,
    *,
    stop: asyncio.Event | None = None,
    on_ready: Callable[[str], None] | None = None,
) -> int:
    """Start everything, serve until stopped, stop everything. Returns the exit code."""
    from devtools.azurite import Azurite
    from devtools.localhost.__main__ import serve
    from devtools.localhost.server import HostJson, HostOptions
    from devtools.localhost.worker import WorkerIndexError, WorkerUnavailableError

    if not port_is_free(options.port, options.host):
        raise RunError(
            f"port {options.port} is busy (another local run or `func start`?); use --port"
        )
    local_values, created = prepare_local_settings(
        options.settings_file, options.repo / "local.settings.sample.json"
    )
    if created:
        say(f"created {options.settings_file} from the sample, with a new KEY_ENCRYPTION_KEYS")
    plan = Plan()
    say("== starting Azurite")
    azurite = Azurite.start(
        options.local_dir / "azurite",
        ports=_azurite_ports(options),
        log=options.local_dir / "logs" / "azurite.log",
    )
    try:
        start_services(options, local_values, plan)
        plan.settings = merge_settings(
            local_values,
            [s.report["settings"] for s in plan.started],
            azurite.connection_string,
        )
        host_json = HostJson.read(options.repo / "host.json")
        host_options = HostOptions(
            host=options.host,
            port=options.port,
            route_prefix=host_json.route_prefix,
            timers=options.timers,
            queue=host_json.queue_options(),
        )

        console = None
        if options.console:
            console = ConsoleCompanion(
                plan.settings,
                {s.service.name: s.report for s in plan.started},
                host=options.host,
                port=options.console_port,
            )

        def ready(host: LocalHost) -> None:
            write_run_file(options.local_dir / RUN_FILE, plan.settings, host.base_url)
            line = console.line() if console is not None else None
            say(summary(plan, azurite, host.banner(), endpoints(host), line))
            if on_ready is not None:
                on_ready(host.base_url)

        try:
            asyncio.run(
                serve(
                    plan.settings,
                    app_dir=options.repo,
                    options=host_options,
                    on_ready=ready,
                    stop=stop,
                    on_shutdown=close_app_clients,
                    companions=[console] if console is not None else [],
                )
            )
        except WorkerIndexError as exc:
            # What Azure's host logs before it serves nothing: the local run refuses the app too.
            raise RunError(f"Worker failed to index functions: {exc}") from exc
        except WorkerUnavailableError as exc:
            raise RunError(str(exc)) from exc
    finally:
        (options.local_dir / RUN_FILE).unlink(missing_ok=True)
        for started in reversed(plan.started):
            code = stop_process(started.process)
            say(f"stopped the {started.service.title} (exit {code})")
        azurite.stop()
        say("stopped Azurite")
    return 0


def parse_args(argv: list[str] | None) -> tuple[bool, Options]:
    """(install or not, options) from the command line."""
    parser = argparse.ArgumentParser(
        prog="python -m devtools.run_local",
        description="Run the app locally: Azurite, development services, the local host.",
    )
    parser.add_argument("--no-install", action="store_true", help="skip pip and npm installs")
    parser.add_argument("--port", type=int, default=7071, help="the app's port (7071)")
    parser.add_argument("--local-dir", type=Path, default=REPO / ".local", help="run data")
    parser.add_argument(
        "--settings", type=Path, default=REPO / "local.settings.json", help="settings file"
    )
    parser.add_argument(
        "--azurite-free-ports", action="store_true", help="Azurite on free ports, not 10000-10002"
    )
    parser.add_argument(
        "--skip",
        action="append",
        default=[],
        choices=[s.name for s in DEV_SERVICES],
        help="do not start this development service",
    )
    parser.add_argument(
        "--extra-service",
        action="append",
        default=[],
        metavar="MODULE",
        help="also start this module by the development-service command-line contract",
    )
    parser.add_argument("--no-timers", action="store_true", help="do not run timer schedules")
    parser.add_argument(
        "--console-port",
        type=int,
        default=CONSOLE_PORT,
        help=f"the developer console's port ({CONSOLE_PORT}; a free one if busy)",
    )
    parser.add_argument("--no-console", action="store_true", help="do not serve the console")
    parser.add_argument(
        "--app-dir",
        type=Path,
        default=REPO,
        help="folder of the app: function_app.py, host.json, local.settings.sample.json",
    )
    args = parser.parse_args(argv)
    return not args.no_install, Options(
        repo=args.app_dir.resolve(),
        local_dir=args.local_dir.resolve(),
        settings_file=args.settings.resolve(),
        port=args.port,
        azurite_auto_ports=args.azurite_free_ports,
        skip=frozenset(args.skip),
        extra_services=tuple(args.extra_service),
        timers=not args.no_timers,
        console=not args.no_console,
        console_port=args.console_port,
    )


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    wants_install, options = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    # Until the host's event loop takes over SIGINT/SIGTERM, SIGTERM unwinds like Ctrl-C, so
    # whatever already started (Azurite, services) is stopped by `run`'s cleanup.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        if wants_install:
            install(REPO)
        return run(options)
    except RunError as exc:
        say(f"error: {exc}", sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark the device registry and the token issuer through the local host against Azurite.

    .venv/bin/python bench/registry.py [--requests 400] [--rounds 3] [--profile SCENARIO]

Starts Azurite, the development identity provider and the local ACS identity service (each its
own process), and serves the real ``function_app`` on the local host in a thread of this process.
A separate client process sends the requests, so this process's CPU time is the host's alone.
Prints, per scenario, requests/s, host CPU ms per request, Table Storage round trips per request
(``shared.storage.tables.round_trips``: every HTTP request sent to Table Storage, retries
included), ACS
Identity API calls per request (counted by the local ACS identity service) and latency
percentiles, and writes them to ``bench/results/registry.json``. A benchmark, not a test:
numbers depend on the machine and on whatever else it runs (the load average is recorded), so
each scenario is measured ``--rounds`` times and the round with the least CPU per request is
kept (every round's CPU is in the JSON).

Scenarios (each caller's identity and the tables exist before measuring, as in a warm instance):

- ``PUT renewal``: the same devices re-registered with a fresh key (what a running app does
  every few minutes to keep its preview key live);
- ``PUT new device``: a token the service has never seen;
- ``POST token``: an ACS token for a caller whose identity exists (what an app does at start
  and before its ACS token expires); the rate limit is raised so none is refused, but its
  bucket is still written;
- ``POST token first``: a caller's very first token (the identity is created at ACS).

The app uses the default Table Storage client; ``BENCH_STORAGE_CLIENT=sdk`` in the environment
runs it on azure-data-tables instead (``STORAGE_CLIENT``).

``--profile SCENARIO`` runs that scenario once more under cProfile (on the host's event-loop
thread, after the measured runs) and prints where its CPU time goes.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import cProfile
import io
import json
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

TOPIC = "com.example.bench"
RESULTS = REPO / "bench" / "results" / "registry.json"


# --- client process -------------------------------------------------------------------------------


async def _client(plan: dict[str, Any]) -> dict[str, Any]:
    import httpx

    limits = httpx.Limits(max_connections=plan["concurrency"])
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    for item in plan["requests"]:
        queue.put_nowait(item)
    latencies: list[float] = []
    failures: list[int] = []

    async with httpx.AsyncClient(base_url=plan["base"], limits=limits, timeout=30) as client:

        async def worker() -> None:
            while not queue.empty():
                item = queue.get_nowait()
                start = time.perf_counter()
                response = await client.request(
                    plan["method"], plan["path"], headers=item["headers"], json=item.get("body")
                )
                latencies.append(time.perf_counter() - start)
                if response.status_code != 200:
                    failures.append(response.status_code)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(plan["concurrency"])))
        elapsed = time.perf_counter() - started
    return {"elapsed": elapsed, "latencies": latencies, "failures": failures}


def client_main() -> int:
    plan = json.loads(sys.stdin.read())
    sys.stdout.write(json.dumps(asyncio.run(_client(plan))) + "\n")
    return 0


# --- services -------------------------------------------------------------------------------------


class Service:
    """A development service run as ``python -m MODULE``; its first stdout line is JSON."""

    def __init__(self, module: str, state_dir: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", module, "--state-dir", str(state_dir)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.process.stdout is not None
        self.info: dict[str, Any] = json.loads(self.process.stdout.readline())

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


class ServedApp:
    """The real app on the local host, on its own event loop in a thread of this process."""

    def __init__(self, env: dict[str, str]) -> None:
        from devtools.localhost import HostOptions, LocalHost, import_app

        options = HostOptions(port=0, timers=False, queues=False)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.host = LocalHost(import_app("function_app", app_dir=REPO), env, options)

    def start(self) -> str:
        self.thread.start()
        return str(asyncio.run_coroutine_threadsafe(self.host.start(), self.loop).result(30))

    def on_loop(self, call: Callable[[], Any]) -> Any:
        """Run a plain call on the event-loop thread (cProfile profiles the calling thread)."""

        async def run() -> Any:
            return call()

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(10)

    def thread_cpu(self) -> float:
        assert self.thread.ident is not None
        return time.clock_gettime(time.pthread_getcpuclockid(self.thread.ident))

    def stop(self) -> None:
        async def shutdown() -> None:
            from shared import wiring

            await self.host.stop()
            await wiring.container().aclose()

        try:
            asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(30)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=10)


# --- measuring ------------------------------------------------------------------------------------


def _token(idp: Service, subject: str) -> str:
    url = f"{idp.info['token_url']}?sub={subject}"
    with urllib.request.urlopen(url, timeout=10) as answer:  # loopback dev IdP only
        return str(json.loads(answer.read())["access_token"])


def _acs_calls(acs: Service) -> int:
    """API calls the local ACS identity service has answered so far."""
    url = acs.info["settings"]["ACS_CONNECTION_STRING"].split(";")[0].removeprefix("endpoint=")
    import ssl

    context = ssl.create_default_context(cafile=acs.info["settings"]["ACS_CA_FILE"])
    with urllib.request.urlopen(f"{url.rstrip('/')}/_dev/stats", context=context) as answer:
        return int(json.loads(answer.read())["apiCalls"])


def _body(token: str, n: int) -> dict[str, Any]:
    key = base64.b64encode(n.to_bytes(64, "big")).decode()
    return {"token": token, "kind": "alert", "topic": TOPIC, "environment": "sandbox", "key": key}


class Bench:
    """The running services and app, and one method per measured pass."""

    def __init__(self, app: ServedApp, base: str, acs: Service, concurrency: int) -> None:
        self.app, self.base, self.acs, self.concurrency = app, base, acs, concurrency

    def send(self, method: str, path: str, requests: list[dict[str, Any]]) -> dict[str, Any]:
        """Send ``requests`` from a client process; its timings."""
        plan = {
            "base": self.base,
            "concurrency": self.concurrency,
            "method": method,
            "path": path,
            "requests": requests,
        }
        done = subprocess.run(
            [sys.executable, __file__, "--client"],
            input=json.dumps(plan),
            capture_output=True,
            text=True,
            check=True,
            cwd=REPO,
        )
        result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        if result["failures"]:
            raise SystemExit(
                f"{method} {path}: requests failed with statuses {sorted(set(result['failures']))}"
            )
        return result

    def measure(self, method: str, path: str, requests: list[dict[str, Any]]) -> dict[str, Any]:
        """One measured pass: throughput, host CPU, storage round trips and ACS calls."""
        from shared.storage.tables import round_trips

        trips, acs, cpu = round_trips(), _acs_calls(self.acs), time.process_time()
        thread_cpu = self.app.thread_cpu()
        result = self.send(method, path, requests)
        cpu, thread_cpu = time.process_time() - cpu, self.app.thread_cpu() - thread_cpu
        trips, acs = round_trips() - trips, _acs_calls(self.acs) - acs
        n = len(requests)
        lat = sorted(result["latencies"])
        return {
            "method": method,
            "path": "/api/" + path.removeprefix("/api/"),
            "requests": n,
            "requests_per_s": round(n / result["elapsed"], 1),
            "cpu_ms_per_request": round(1000 * cpu / n, 2),
            "loop_cpu_ms_per_request": round(1000 * thread_cpu / n, 2),
            "storage_round_trips_per_request": round(trips / n, 2),
            "acs_calls_per_request": round(acs / n, 2),
            "latency_ms_p50": round(1000 * statistics.median(lat), 1),
            "latency_ms_p95": round(1000 * lat[int(0.95 * (len(lat) - 1))], 1),
        }

    def profile(
        self, method: str, path: str, requests: list[dict[str, Any]], dump: str | None
    ) -> str:
        """Send ``requests`` with cProfile on the event-loop thread; the top of its report."""
        profiler = cProfile.Profile(time.thread_time)  # CPU time of the loop thread, not wall
        self.app.on_loop(profiler.enable)
        try:
            self.send(method, path, requests)
        finally:
            self.app.on_loop(profiler.disable)
        if dump:
            profiler.dump_stats(dump)
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out)
        stats.sort_stats("cumulative").print_stats(45)
        stats.sort_stats("tottime").print_stats(25)
        return out.getvalue()


def _scenarios(
    idp: Service, users: list[dict[str, str]], n: int, round_no: int = 0
) -> dict[str, tuple[str, str, list[dict[str, Any]], list[dict[str, Any]]]]:
    """name -> (method, path, warm-up requests, measured requests); new tokens and new callers
    differ from round to round."""
    devices = [(users[u % len(users)], f"{u:064x}") for u in range(len(users) * 2)]
    warm_put = [{"headers": h, "body": _body(t, 0)} for h, t in devices]
    renew = [
        {"headers": h, "body": _body(t, i)}
        for i in range(n)
        for h, t in [devices[i % len(devices)]]
    ]
    fresh = [
        {"headers": users[i % len(users)], "body": _body(f"{round_no + 1:x}{i:0127x}", i)}
        for i in range(n)
    ]
    warm_token = [{"headers": h} for h in users]
    tokens = [{"headers": users[i % len(users)]} for i in range(n)]
    newcomers = [
        {"headers": {"Authorization": f"Bearer {_token(idp, f'new{round_no}-{i}')}"}}
        for i in range(n)
    ]
    return {
        "PUT renewal": ("PUT", "/api/devices", warm_put, renew),
        "PUT new device": ("PUT", "/api/devices", [], fresh),
        "POST token": ("POST", "/api/token", warm_token, tokens),
        "POST token first": ("POST", "/api/token", [], newcomers),
    }


def _best(measured: list[dict[str, Any]]) -> dict[str, Any]:
    """The round with the least host CPU per request (others' load only ever adds to it)."""
    best = dict(min(measured, key=lambda r: r["cpu_ms_per_request"]))
    best["cpu_ms_per_request_rounds"] = [r["cpu_ms_per_request"] for r in measured]
    return best


def _print(rows: list[tuple[str, dict[str, Any]]], args: argparse.Namespace) -> None:
    print(
        f"Device registry and token issuer through the local host on Azurite and the local ACS "
        f"identity service ({args.concurrency} in flight, {args.users} callers, "
        f"Python {sys.version.split()[0]}, load {os.getloadavg()[0]:.1f})"
    )
    print(
        f"{'scenario':<17} {'requests':>8} {'req/s':>7} {'CPU ms/req':>10} {'(loop)':>7} "
        f"{'storage RT/req':>14} {'ACS/req':>7} {'p50 ms':>7} {'p95 ms':>7}"
    )
    for name, r in rows:
        print(
            f"{name:<17} {r['requests']:>8} {r['requests_per_s']:>7.0f} "
            f"{r['cpu_ms_per_request']:>10.2f} {r['loop_cpu_ms_per_request']:>7.2f} "
            f"{r['storage_round_trips_per_request']:>14.2f} {r['acs_calls_per_request']:>7.2f} "
            f"{r['latency_ms_p50']:>7.1f} {r['latency_ms_p95']:>7.1f}"
        )
    print("CPU ms/req: this process (the host); (loop): its event-loop thread only.")


def _write(rows: list[tuple[str, dict[str, Any]]], args: argparse.Namespace) -> None:
    report = {
        "benchmark": "device registry and token issuer",
        "command": "python bench/registry.py",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "python": sys.version.split()[0],
            "cpus": os.cpu_count(),
            "load_average_1m": round(os.getloadavg()[0], 2),
        },
        "settings": {
            "rounds": args.rounds,
            "requests": args.requests,
            "concurrency": args.concurrency,
            "callers": args.users,
        },
        "scenarios": [{"name": name, **r} for name, r in rows],
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"written to {RESULTS.relative_to(REPO)}")


def _env(azurite: Any, idp: Service, acs: Service) -> dict[str, str]:
    from devtools.settings_doc import defaults

    return {
        **defaults(),
        "STORAGE_CONNECTION": azurite.connection_string,
        "TABLE_PREFIX": "bench",
        "STORAGE_CLIENT": os.environ.get("BENCH_STORAGE_CLIENT", "lean"),
        "APNS_APPS": json.dumps([{"bundleId": TOPIC, "teamId": "T", "keyId": "K"}]),
        "KEY_ENCRYPTION_KEYS": "k1=" + base64.b64encode(os.urandom(32)).decode(),
        # Measure the bucket write without refusing anyone.
        "TOKEN_RATE_LIMIT_PER_MINUTE": "1000000",
        **idp.info["settings"],
        **acs.info["settings"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=400, help="requests per scenario")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight")
    parser.add_argument("--users", type=int, default=16, help="distinct callers")
    parser.add_argument(
        "--rounds", type=int, default=3, help="measure each scenario this often, keep the best"
    )
    parser.add_argument("--profile", help="scenario to run once more under cProfile")
    parser.add_argument("--profile-dump", help="also write the raw cProfile stats to this file")
    parser.add_argument("--no-write", action="store_true", help=f"do not write {RESULTS.name}")
    args = parser.parse_args(argv)

    from devtools.azurite import Azurite
    from shared import wiring

    rows: list[tuple[str, dict[str, Any]]] = []
    report = ""
    with tempfile.TemporaryDirectory() as tmp, Azurite.start(None) as azurite:
        idp = Service("devtools.dev_identity_provider", Path(tmp) / "idp")
        acs = Service("devtools.acs_identity_service", Path(tmp) / "acs")
        app: ServedApp | None = None
        try:
            env = _env(azurite, idp, acs)
            os.environ.update(env)
            wiring.reset(env)
            app = ServedApp(env)
            bench = Bench(app, app.start(), acs, args.concurrency)
            users = [
                {"Authorization": f"Bearer {_token(idp, f'bench{u}')}"} for u in range(args.users)
            ]
            runs: dict[str, list[dict[str, Any]]] = {}
            for round_no in range(args.rounds):
                scenarios = _scenarios(idp, users, args.requests, round_no)
                for name, (method, path, warm, requests) in scenarios.items():
                    if warm and round_no == 0:
                        bench.send(method, path, warm)
                    runs.setdefault(name, []).append(bench.measure(method, path, requests))
            rows = [(name, _best(measured)) for name, measured in runs.items()]
            if args.profile:
                # One more round's inputs: its new tokens and callers are new indeed.
                fresh = _scenarios(idp, users, args.requests, args.rounds)
                method, path, _, requests = fresh[args.profile]
                report = bench.profile(method, path, requests, args.profile_dump)
        finally:
            if app is not None:
                app.stop()
            idp.stop()
            acs.stop()

    _print(rows, args)
    if not args.no_write:
        _write(rows, args)
    if report:
        print(f"\ncProfile of {args.profile!r} on the host's event-loop thread:\n{report}")
    return 0


if __name__ == "__main__":
    sys.exit(client_main() if "--client" in sys.argv[1:] else main())

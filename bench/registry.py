"""Benchmark PUT /api/devices through the local host against Azurite.

    .venv/bin/python bench/registry.py [--requests 400] [--concurrency 8]

Starts Azurite, the development identity provider and the local ACS identity service (each its
own process), and serves the real ``function_app`` on the local host in a thread of this process.
A separate client process sends the requests, so this process's CPU time is the host's alone.
Prints, per scenario, requests/s, host CPU ms per request, Table Storage round trips per request
(``shared.tables.round_trips``: every HTTP request the Tables SDK sent, retries included) and
latency percentiles. A benchmark, not a test: numbers depend on the machine.

Scenarios (each caller's identity and the tables exist before measuring, as in a warm instance):
- ``renewal``: the same devices re-registered with a fresh key (what a running app does every
  few minutes to keep its preview key live);
- ``new device``: a token the service has never seen.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

TOPIC = "com.example.bench"


# --- client process -------------------------------------------------------------------------------


async def _client(plan: dict[str, Any]) -> dict[str, Any]:
    import httpx

    limits = httpx.Limits(max_connections=plan["concurrency"])
    queue: asyncio.Queue[tuple[dict[str, str], dict[str, Any]]] = asyncio.Queue()
    for item in plan["requests"]:
        queue.put_nowait((item["headers"], item["body"]))
    latencies: list[float] = []
    failures: list[int] = []

    async with httpx.AsyncClient(base_url=plan["base"], limits=limits, timeout=30) as client:

        async def worker() -> None:
            while not queue.empty():
                headers, body = queue.get_nowait()
                start = time.perf_counter()
                response = await client.put("/api/devices", headers=headers, json=body)
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


def _body(token: str, n: int) -> dict[str, Any]:
    key = base64.b64encode(n.to_bytes(64, "big")).decode()
    return {"token": token, "kind": "alert", "topic": TOPIC, "environment": "sandbox", "key": key}


def _run_client(base: str, concurrency: int, requests: list[dict[str, Any]]) -> dict[str, Any]:
    plan = {"base": base, "concurrency": concurrency, "requests": requests}
    done = subprocess.run(
        [sys.executable, __file__, "--client"],
        input=json.dumps(plan),
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _measure(
    app: ServedApp, base: str, concurrency: int, requests: list[dict[str, Any]]
) -> dict[str, float]:
    from shared.tables import round_trips

    trips, cpu, thread_cpu = round_trips(), time.process_time(), app.thread_cpu()
    result = _run_client(base, concurrency, requests)
    trips, cpu = round_trips() - trips, time.process_time() - cpu
    thread_cpu = app.thread_cpu() - thread_cpu
    if result["failures"]:
        raise SystemExit(f"requests failed with statuses {sorted(set(result['failures']))}")
    n = len(requests)
    lat = sorted(result["latencies"])
    return {
        "requests": n,
        "rps": n / result["elapsed"],
        "cpu_ms": 1000 * cpu / n,
        "loop_cpu_ms": 1000 * thread_cpu / n,
        "round_trips": trips / n,
        "p50_ms": 1000 * statistics.median(lat),
        "p95_ms": 1000 * lat[int(0.95 * (len(lat) - 1))],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=400, help="requests per scenario")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight")
    parser.add_argument("--users", type=int, default=16, help="distinct callers")
    args = parser.parse_args(argv)

    from devtools.azurite import Azurite
    from devtools.settings_doc import defaults
    from shared import wiring

    with tempfile.TemporaryDirectory() as tmp, Azurite.start(None) as azurite:
        idp = Service("devtools.dev_identity_provider", Path(tmp) / "idp")
        acs = Service("devtools.acs_identity_service", Path(tmp) / "acs")
        app: ServedApp | None = None
        try:
            env = {
                **defaults(),
                "STORAGE_CONNECTION": azurite.connection_string,
                "TABLE_PREFIX": "bench",
                "APNS_APPS": json.dumps([{"bundleId": TOPIC, "teamId": "T", "keyId": "K"}]),
                "KEY_ENCRYPTION_KEYS": "k1=" + base64.b64encode(os.urandom(32)).decode(),
                **idp.info["settings"],
                **acs.info["settings"],
            }
            os.environ.update(env)
            wiring.reset(env)
            app = ServedApp(env)
            base = app.start()
            users = [
                {"Authorization": f"Bearer {_token(idp, f'bench{u}')}"} for u in range(args.users)
            ]
            devices = [(users[u % len(users)], f"{u:064x}") for u in range(args.users * 2)]
            warm = [{"headers": h, "body": _body(t, 0)} for h, t in devices]
            _run_client(base, args.concurrency, warm)

            renew = [
                {"headers": h, "body": _body(t, i)}
                for i in range(args.requests)
                for h, t in [devices[i % len(devices)]]
            ]
            fresh = [
                {"headers": users[i % len(users)], "body": _body(f"{i + 1:0128x}", i)}
                for i in range(args.requests)
            ]
            rows = [
                ("renewal", _measure(app, base, args.concurrency, renew)),
                ("new device", _measure(app, base, args.concurrency, fresh)),
            ]
        finally:
            if app is not None:
                app.stop()
            idp.stop()
            acs.stop()

    print(
        f"PUT /api/devices through the local host on Azurite "
        f"({args.concurrency} in flight, {args.users} callers, Python {sys.version.split()[0]})"
    )
    print(
        f"{'scenario':<12} {'requests':>8} {'req/s':>7} {'CPU ms/req':>10} "
        f"{'(loop)':>7} {'storage RT/req':>14} {'p50 ms':>7} {'p95 ms':>7}"
    )
    for name, r in rows:
        print(
            f"{name:<12} {r['requests']:>8.0f} {r['rps']:>7.0f} {r['cpu_ms']:>10.2f} "
            f"{r['loop_cpu_ms']:>7.2f} {r['round_trips']:>14.2f} {r['p50_ms']:>7.1f} "
            f"{r['p95_ms']:>7.1f}"
        )
    print("CPU ms/req: this process (the host); (loop): its event-loop thread only.")
    return 0


if __name__ == "__main__":
    sys.exit(client_main() if "--client" in sys.argv[1:] else main())

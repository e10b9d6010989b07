"""Renewal benchmark: 100,000 devices due now, swept and woken against the APNs simulator.

    .venv/bin/python bench/renewal.py [--devices 100000] [--workers 2] [--batch 4]

Starts Azurite (in memory) and the APNs simulator (its own process), seeds ``--devices`` alert
devices whose preview keys fall due now (device rows and their schedule entries, written in
100-entity transactions by ``--seeders`` processes; not timed), then times the renewal itself:
the real ``renewal_sweep`` function runs once on the local development host (timer → queue output
on Azurite), and ``--workers`` processes, each a local host polling the renewal queue and running
the real ``renewal_worker`` function, wake every device. The run ends when every shard's report
is in storage.

Prints devices/s end to end (sweep start to last shard report: read, push, record), CPU ms per
device (the app's processes; Azurite and the simulator apart), Table Storage round trips per
device (every HTTP request sent to Table Storage, retries included) and the total time, checks
that the simulator received one background push per device, and writes
``bench/results/renewal.json``. A benchmark, not a test: the numbers depend on the machine.

Target (issue "Renewal"): the 100,000 devices within 180 s on a 2-core machine.

``--clients lean sdk`` runs the whole benchmark once per Table Storage client
(``STORAGE_CLIENT``), each on a fresh Azurite and simulator, and reports the lean client's app
CPU per device as a ratio of the SDK's (issue "Storage on the hot path": at most a third); the
file then holds the first client's figures at the top and each client's under ``clients``.
The workers' CPU includes the local host polling the queue through azure-storage-queue (in
Azure the Functions host does that, outside the Python worker): each worker measures its idle
polling for a few seconds before the sweep, and ``cpu_ms_per_device_app_less_polling`` takes
that rate times the run's duration off.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402

from devtools.azurite import Azurite  # noqa: E402
from devtools.settings_doc import defaults  # noqa: E402

TOPIC = "com.example.bench"
RESULTS = REPO / "bench" / "results" / "renewal.json"
KEK = "bench=" + base64.b64encode(b"\x42" * 32).decode()
IDLE_PROBE_S = 3.0  # how long a worker measures its idle queue polling before starting
DEVICES_PER_USER = 100  # seeding only: 100 devices share a partition so they go in one transaction


def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def user_id(n: int) -> str:
    return f"8:acs:bench_{n // DEVICES_PER_USER:08d}-0000-0000-0000-000000000000"


def token(n: int) -> str:
    return f"{n:010x}".ljust(64, "b")


# --- seeding (its own processes, not timed) -------------------------------------------------------


async def seed(part: int, parts: int, devices: int, now: datetime) -> None:
    """Write devices ``part::parts`` (by user partition) and their schedule entries."""
    from shared.apns.notification import Environment
    from shared.domain.devices import Device, DeviceKind, device_id_for
    from shared.storage.devices import DEVICES_TABLE, DeviceStore
    from shared.storage.renewal_schedule import (
        RENEWALS_TABLE,
        EntryState,
        ScheduleEntry,
        TableRenewalSchedule,
        bucket_for,
    )
    from shared.wiring import container

    c = container()
    tables = await c.tables()
    store = DeviceStore(await tables.table(DEVICES_TABLE), await tables.table("tokenowners"),
                        await c.key_wrapper())  # fmt: skip
    schedule = TableRenewalSchedule(await tables.table(RENEWALS_TABLE))
    devices_table = await tables.table(DEVICES_TABLE)
    renewed = now - timedelta(minutes=35)
    key = os.urandom(64)
    gate = asyncio.Semaphore(4)

    async def one_user(first: int) -> None:
        batch = [
            Device(user_id=user_id(n), device_id=device_id_for(token(n)), token=token(n),
                   kind=DeviceKind.ALERT, topic=TOPIC, environment=Environment.SANDBOX,
                   registered_at=renewed, renewed_at=renewed, preview_key=key,
                   key_expires_at=now + timedelta(minutes=10))
            for n in range(first, min(first + DEVICES_PER_USER, devices))
        ]  # fmt: skip
        async with gate:
            results = await devices_table.submit_transaction(
                [("upsert", store._new_entity(d)) for d in batch]
            )
            entries = [
                ScheduleEntry(bucket_for(now), d.user_id, d.device_id,
                              EntryState.of(d, str(meta["etag"]), renewed))
                for d, meta in zip(batch, results, strict=True)
            ]  # fmt: skip
            await schedule.put_many(entries)

    firsts = range(part * DEVICES_PER_USER, devices, parts * DEVICES_PER_USER)
    await asyncio.gather(*(one_user(f) for f in firsts))
    await c.aclose()


def seed_main(part: int, parts: int, devices: int, now: str) -> int:
    asyncio.run(seed(part, parts, devices, datetime.fromisoformat(now)))
    return 0


# --- a worker process -----------------------------------------------------------------------------


async def worker(batch: int) -> dict[str, Any]:
    """A local host polling the renewal queue until stdin closes; returns what it spent."""
    from devtools.localhost import HostOptions, LocalHost, QueueOptions, import_app
    from shared import wiring
    from shared.storage.tables import round_trips

    queue = QueueOptions(poll_interval=0.05, visibility_timeout=5.0, lease_seconds=600,
                         batch_size=batch)  # fmt: skip
    options = HostOptions(port=0, timers=False, queues=True, queue=queue)
    host = LocalHost(import_app("function_app", app_dir=REPO), dict(os.environ), options)
    await host.start()
    # What the local host spends polling an empty queue (azure-storage-queue, in this process;
    # in Azure the Functions host polls, not the Python worker): measured before any work.
    idle = time.process_time()
    await asyncio.sleep(IDLE_PROBE_S)
    idle_cpu_per_s = (time.process_time() - idle) / IDLE_PROBE_S
    cpu, trips = time.process_time(), round_trips()
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    result = {
        "cpu_s": time.process_time() - cpu,
        "round_trips": round_trips() - trips,
        "idle_polling_cpu_per_s": idle_cpu_per_s,
    }
    await host.stop()
    await wiring.container().aclose()
    return result


def worker_main(batch: int) -> int:
    result = asyncio.run(worker(batch))
    print(json.dumps(result), flush=True)
    return 0


# --- the run --------------------------------------------------------------------------------------


@contextmanager
def simulator(state_dir: Path) -> Iterator[tuple[dict[str, Any], subprocess.Popen[str]]]:
    """The APNs simulator in its own process, with a generated key for the bench app."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "devtools.apns_simulator", "--state-dir", str(state_dir),
         "--dev-app", TOPIC],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        if not line:
            raise RuntimeError("the APNs simulator did not start")
        yield json.loads(line), proc
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def run(cmd: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, __file__, *cmd], cwd=REPO, env=env, text=True,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
    )  # fmt: skip


async def sweep_and_wait(env: dict[str, str], timeout: float, azurite: int) -> dict[str, Any]:
    """Sweep once, then wait until every shard has reported; times and what the sweep spent
    (Azurite's CPU during the sweep included)."""
    from shared import wiring

    start, storage = time.perf_counter(), proc_cpu(azurite)
    swept = await sweep_once(env)
    swept["seconds"] = time.perf_counter() - start
    swept["azurite_cpu_s"] = proc_cpu(azurite) - storage
    end, counts = await wait_done(timeout)
    await wiring.container().aclose()
    return {"sweep": swept, "seconds": end - start, "counts": counts}


async def sweep_once(env: dict[str, str]) -> dict[str, Any]:
    """Run the real renewal_sweep function once (its queue output goes to Azurite)."""
    from azure.functions.timer import TimerRequest

    from devtools.localhost import HostOptions, LocalHost, import_app
    from devtools.localhost.timers import timer_request
    from shared import wiring
    from shared.storage.tables import round_trips

    wiring.reset(env)
    host = LocalHost(import_app("function_app", app_dir=REPO), env,
                     HostOptions(port=0, timers=False, queues=False))  # fmt: skip
    now = datetime.now(UTC)
    request: TimerRequest = timer_request(past_due=False, last=None, next_at=now, now=now)
    trips, cpu = round_trips(), time.process_time()
    invocation = await host.run_function(host.catalog.functions["renewal_sweep"], request)
    result = {
        "messages": len(invocation.outputs.get("shards") or []),
        "cpu_s": time.process_time() - cpu,
        "round_trips": round_trips() - trips,
    }
    await host.stop()
    return result


async def reported() -> tuple[int, int, dict[str, int]]:
    """(shards of the last sweep, shards reported, summed counts) from the sweeps table."""
    from shared import wiring
    from shared.storage.renewal_schedule import bucket_for

    c = wiring.container()
    rates = await (await c.sweep_log()).rates(bucket_for(datetime.now(UTC) - timedelta(hours=1)))
    if not rates:
        return 0, 0, {}
    last = rates[-1]
    return last.record.shards, last.shards_reported, dict(last.counts)


async def wait_done(timeout: float) -> tuple[float, dict[str, int]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        shards, done, counts = await reported()
        if shards and done >= shards:
            return time.perf_counter(), counts
        await asyncio.sleep(0.5)
    raise TimeoutError(f"the workers did not report every shard within {timeout:.0f} s")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--devices", type=int, default=100_000)
    p.add_argument("--workers", type=int, default=2, help="worker processes")
    p.add_argument("--batch", type=int, default=2, help="queue messages a worker runs at once")
    p.add_argument("--seeders", type=int, default=2, help="seeding processes")
    p.add_argument("--timeout", type=float, default=900.0)
    p.add_argument("--results", type=Path, default=RESULTS)
    p.add_argument(
        "--clients", nargs="+", default=["lean"], choices=["lean", "sdk"],
        help="Table Storage clients to run, each on a fresh Azurite (compare: lean sdk)",
    )  # fmt: skip
    args = p.parse_args(argv)

    results = {client: run_client(args, client) for client in args.clients}
    result = dict(results[args.clients[0]])
    if len(results) > 1:
        result["clients"] = results
    if {"lean", "sdk"} <= results.keys():
        lean, sdk = results["lean"], results["sdk"]
        ratio = (
            lean["cpu_ms_per_device_app_less_polling"] / sdk["cpu_ms_per_device_app_less_polling"]
        )
        result["lean_vs_sdk"] = {
            "cpu_per_device_app": round(
                lean["cpu_ms_per_device_app"] / sdk["cpu_ms_per_device_app"], 2
            ),
            "cpu_per_device_app_less_polling": round(ratio, 2),
            "sweep_cpu_per_device": round(
                lean["sweep_cpu_ms_per_device"] / sdk["sweep_cpu_ms_per_device"], 2
            ),
            "within_a_third": ratio <= 1 / 3,
        }
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    ok = all(r["shard_counts"].get("woken", 0) == args.devices for r in results.values())
    ok = ok and all(r["pushes_received_by_simulator"] >= args.devices for r in results.values())
    if not ok:
        print("MISMATCH: not every device was woken exactly once", file=sys.stderr)
    return 0 if ok else 1


def run_client(args: argparse.Namespace, client: str) -> dict[str, Any]:
    """The whole benchmark with one Table Storage client, on a fresh Azurite and simulator."""
    with tempfile.TemporaryDirectory() as tmp, Azurite.start(None) as az, \
            simulator(Path(tmp) / "apns") as (sim, sim_proc):  # fmt: skip
        env = {
            **os.environ, **defaults(), **sim["settings"],
            "STORAGE_CONNECTION": az.connection_string,
            "AzureWebJobsStorage": az.connection_string,
            "TABLE_PREFIX": "bench", "RENEWAL_QUEUE": "bench-renewal",
            "STORAGE_CLIENT": client,
            "KEY_ENCRYPTION_KEYS": KEK, "APNS_RETRY_BUDGET_SECONDS": "30",
            "APNS_REQUEST_TIMEOUT_SECONDS": "20",
        }  # fmt: skip
        os.environ.update(env)
        now = datetime.now(UTC)
        print(f"[{client}] seeding {args.devices} devices due now ({args.seeders} processes)...",
              flush=True)  # fmt: skip
        started = time.perf_counter()
        seeders = [run(["--seed", f"{i}/{args.seeders}", str(args.devices), now.isoformat()], env)
                   for i in range(args.seeders)]  # fmt: skip
        if any(s.wait() != 0 for s in seeders):
            raise RuntimeError("seeding failed")
        seeded = time.perf_counter() - started
        print(f"[{client}] seeded in {seeded:.1f} s (not counted)", flush=True)

        workers = [run(["--worker", str(args.batch)], env) for _ in range(args.workers)]
        for w in workers:
            assert w.stdout is not None
            if w.stdout.readline().strip() != "ready":
                raise RuntimeError("a worker did not start")
        pushed0 = httpx.get(sim["control_url"] + "/health", timeout=30).json()["requests"]
        cpu0 = {"azurite": proc_cpu(az.process.pid), "simulator": proc_cpu(sim_proc.pid)}

        timed = asyncio.run(sweep_and_wait(env, args.timeout, az.process.pid))
        swept, counts = timed["sweep"], timed["counts"]

        cpu1 = {"azurite": proc_cpu(az.process.pid), "simulator": proc_cpu(sim_proc.pid)}
        spent = []
        for w in workers:
            out, _ = w.communicate(input="", timeout=120)
            spent.append(json.loads(out.strip().splitlines()[-1]))
        pushed = httpx.get(sim["control_url"] + "/health", timeout=30).json()["requests"] - pushed0

    n, total = args.devices, timed["seconds"]
    app_cpu = swept["cpu_s"] + sum(s["cpu_s"] for s in spent)
    polling = sum(s["idle_polling_cpu_per_s"] for s in spent) * total
    trips = swept["round_trips"] + sum(s["round_trips"] for s in spent)
    return {
        "benchmark": "renewal",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_average_1m_after": round(os.getloadavg()[0], 2),
        },
        "settings": {
            "devices": n,
            "workers": args.workers,
            "batch": args.batch,
            "shard_size": int(env["RENEWAL_SHARD_SIZE"]),
            "storage_client": client,
        },
        "seconds_seeding_not_counted": round(seeded, 1),
        "seconds_total": round(total, 1),
        "seconds_sweep": round(swept["seconds"], 2),
        "sweep_cpu_ms_per_device": round(swept["cpu_s"] * 1000 / n, 3),
        "sweep_azurite_cpu_ms_per_device": round(swept["azurite_cpu_s"] * 1000 / n, 3),
        "devices_per_s": round(n / total, 1),
        "cpu_ms_per_device_app": round(app_cpu * 1000 / n, 3),
        "cpu_ms_per_device_host_polling": round(polling * 1000 / n, 3),
        "cpu_ms_per_device_app_less_polling": round((app_cpu - polling) * 1000 / n, 3),
        "cpu_ms_per_device_azurite": round((cpu1["azurite"] - cpu0["azurite"]) * 1000 / n, 3),
        "cpu_ms_per_device_simulator": round((cpu1["simulator"] - cpu0["simulator"]) * 1000 / n, 3),
        "round_trips_per_device": round(trips / n, 3),
        "queue_messages": swept["messages"],
        "pushes_received_by_simulator": pushed,
        "shard_counts": counts,
        "target_within_180_s": total <= 180,
    }


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--seed":
        part, parts = (int(x) for x in sys.argv[2].split("/"))
        sys.exit(seed_main(part, parts, int(sys.argv[3]), sys.argv[4]))
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        sys.exit(worker_main(int(sys.argv[2])))
    sys.exit(main())

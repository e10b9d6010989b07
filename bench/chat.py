"""Chat push benchmark: ChatMessageReceived events through the local host, pushed to the simulator.

    .venv/bin/python bench/chat.py [--events 600] [--concurrency 8] [--parts 200]

Starts Azurite (in memory), the APNs simulator (its own process) and the real app on the local
development host (a thread of this process), registers recipients with 1, 2 and 3 alert devices
(half of them with a live preview key, so both the encrypted and the generic payload are built),
then posts a stream of ChatMessageReceived events to the Event Grid webhook, one phase per device
count, ``--concurrency`` at a time, like Event Grid delivering one event per request.

Prints, per phase and overall: events/s, pushes/s, p50/p99 latency from the webhook request to
the APNs request (the simulator's receive time), CPU ms of the app's thread per event and
storage round trips per event. Beside them, the same run's figures for each part alone, run on
the app's thread: one device query, one batched write (a 2-entity transaction), one bare push,
and the recipient's inbox row read and replaced (the unread count). Then one read report per
recipient (``shared.usecases.read_reports.report_read`` on the app's thread: the HTTP layer and
caller authentication left out) reading everything it was sent, with the badge-only pushes it
sends to the recipient's other devices: CPU, round trips and pushes per report. Writes everything to
``bench/results/chat.json``.

Targets (issue "Chat push"): round trips per event do not grow with the number of devices; CPU
per event within 1.5x the sum of its parts; p99 under 5x p50.

``--clients lean sdk`` (the default) runs everything once per Table Storage client
(``STORAGE_CLIENT``) in the same run, against the same Azurite and simulator, and reports the
lean client's CPU per event as a ratio of the SDK's (issue "Storage on the hot path": at most a
third at one device); ``--rounds N`` repeats that N times in alternating order and reports the
median round and the median of the per-round ratios. The JSON's top-level figures are the first
client's; each client's are under ``clients``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import copy
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402

from devtools.azurite import Azurite  # noqa: E402
from devtools.localhost import HostOptions, LocalHost, import_app  # noqa: E402
from devtools.settings_doc import defaults  # noqa: E402

SAMPLE = REPO / "tests" / "samples" / "chat_message_received.eventgrid.json"
WEBHOOK = "/runtime/webhooks/eventgrid?functionName=on_chat_event"
RESULTS = REPO / "bench" / "results" / "chat.json"
THREAD = "19:benchbenchbenchbenchbenchbench00@thread.v2"
PARTS_USER = 200_000  # a recipient with 2 devices (see main)
INBOX_USER = 900_000  # nobody's recipient: the inbox part writes its row
KEK = "bench=" + base64.b64encode(b"\x42" * 32).decode()


# --- the moving parts ---------------------------------------------------------------------------


@contextmanager
def simulator(state_dir: Path) -> Iterator[dict[str, Any]]:
    """The APNs simulator in its own process, with a generated key for the bench app."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "devtools.apns_simulator", "--state-dir", str(state_dir),
         "--dev-app", "com.example.bench"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        if not line:
            raise RuntimeError("the APNs simulator did not start")
        yield json.loads(line)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


class ServedApp:
    """The real function_app on the local host, on its own event loop thread."""

    def __init__(self, env: dict[str, str]) -> None:
        from shared import wiring

        os.environ.update(env)
        wiring.reset(env)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        options = HostOptions(port=0, timers=False, queues=False)
        self.host = LocalHost(import_app("function_app", app_dir=REPO), env, options)

    def start(self) -> str:
        self.thread.start()
        return self.run(self.host.start())

    def run(self, coroutine: Awaitable[Any], timeout: float = 600) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)  # type: ignore[arg-type]

    def cpu(self) -> float:
        """CPU seconds the app's thread has used (its own clock: other threads don't count)."""
        ident = self.thread.ident
        assert ident is not None
        return time.clock_gettime(time.pthread_getcpuclockid(ident))

    def stop(self) -> None:
        async def shutdown() -> None:
            from shared import wiring

            await self.host.stop()
            await wiring.container().aclose()

        try:
            self.run(shutdown(), timeout=30)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=10)


def token(user: int, n: int) -> str:
    return f"{user:08x}{n:02x}".ljust(64, "e")


def user_id(user: int) -> str:
    return f"8:acs:bench_{user:08d}-0000-0000-0000-000000000000"


async def register(users: dict[int, int]) -> None:
    """Store each bench user's devices through the app's own registry (on the app's loop)."""
    from shared.apns.notification import Environment
    from shared.domain.devices import Device, DeviceKind, device_id_for
    from shared.wiring import container

    registry = await container().device_registry()
    now = datetime.now(UTC)
    for user, count in users.items():
        for n in range(count):
            t = token(user, n)
            keyed = (user + n) % 2 == 0
            await registry.register(
                Device(
                    user_id=user_id(user), device_id=device_id_for(t), token=t,
                    kind=DeviceKind.ALERT, topic="com.example.bench",
                    environment=Environment.SANDBOX, registered_at=now, renewed_at=now,
                    preview_key=os.urandom(64) if keyed else None,
                    key_expires_at=now + timedelta(hours=2) if keyed else None,
                )
            )  # fmt: skip


def event(template: dict[str, Any], user: int, seq: int) -> bytes:
    e = copy.deepcopy(template)
    e["id"] = f"bench-{seq}"
    raw = user_id(user)
    e["data"].update(
        messageId=f"{seq}",
        version=1700000000000 + seq,
        threadId=THREAD,
        messageBody=f"Benchmark message {seq}: are we still on for 3pm? 🙂",
        recipientCommunicationIdentifier={"rawId": raw, "communicationUser": {"id": raw}},
    )
    return json.dumps([e]).encode()


# --- measuring ----------------------------------------------------------------------------------


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def post_stream(base: str, bodies: list[list[str]], concurrency: int) -> dict[str, Any]:
    """Post every event (in the client process): send times by messageId, seconds, failures."""
    sent: dict[str, float] = {}
    failures = 0
    gate = asyncio.Semaphore(concurrency)
    headers = {"aeg-event-type": "Notification", "content-type": "application/json"}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as client:

        async def one(message: str, body: str) -> None:
            nonlocal failures
            async with gate:
                sent[message] = time.time()
                response = await client.post(WEBHOOK, content=body.encode(), headers=headers)
                failures += response.status_code != 202

        start = time.perf_counter()
        await asyncio.gather(*(one(m, b) for m, b in bodies))
        elapsed = time.perf_counter() - start
    return {"sent": sent, "seconds": elapsed, "failures": failures}


def client_main() -> int:
    """The load generator, in its own process so that its CPU never counts as the app's."""
    plan = json.loads(sys.stdin.read())
    result = asyncio.run(post_stream(plan["base"], plan["bodies"], plan["concurrency"]))
    sys.stdout.write(json.dumps(result))
    return 0


def post_from_client(base: str, bodies: list[list[str]], concurrency: int) -> dict[str, Any]:
    """Run the client process on ``bodies`` ([messageId, JSON]) and return what it measured."""
    plan = {"base": base, "bodies": bodies, "concurrency": concurrency}
    done = subprocess.run(
        [sys.executable, __file__, "--client"],
        input=json.dumps(plan), capture_output=True, text=True, check=True, cwd=REPO,
    )  # fmt: skip
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def sim_requests(control: str) -> list[dict[str, Any]]:
    return httpx.get(control + "/requests", timeout=60).json()


def run_phase(
    app: ServedApp, base: str, control: str, template: dict[str, Any],
    users: list[int], devices: int, events: int, concurrency: int, seq0: int,
) -> dict[str, Any]:  # fmt: skip
    """One stream of ``events`` events to recipients with ``devices`` devices each."""
    from shared.storage.tables import round_trips

    bodies = [
        [str(seq0 + i), event(template, users[i % len(users)], seq0 + i).decode()]
        for i in range(events)
    ]
    seen = len(sim_requests(control))
    cpu0, trips0 = app.cpu(), round_trips()
    posted = post_from_client(base, bodies, concurrency)
    cpu = app.cpu() - cpu0
    sent, elapsed, failures = posted["sent"], posted["seconds"], posted["failures"]
    trips = round_trips() - trips0
    pushes = [r for r in sim_requests(control)[seen:] if r.get("status") == 200]
    latencies = [
        (r["receivedAt"] - sent[str(r["payload"]["messageId"])]) * 1000
        for r in pushes
        if isinstance(r.get("payload"), dict) and str(r["payload"].get("messageId")) in sent
    ]
    figures = phase_figures(events, failures, len(pushes), elapsed, latencies, cpu, trips)
    return {"devices_per_recipient": devices, **figures, "_cpu": cpu, "_trips": trips}


def phase_figures(
    events: int, failures: int, pushes: int, elapsed: float,
    latencies: list[float], cpu: float, trips: int,
) -> dict[str, Any]:  # fmt: skip
    """A phase's figures: rates, webhook-to-APNs latency, CPU and round trips per event."""
    return {
        "events": events,
        "failed_events": failures,
        "pushes": pushes,
        "seconds": round(elapsed, 3),
        "events_per_s": round(events / elapsed, 1),
        "pushes_per_s": round(pushes / elapsed, 1),
        "latency_ms_p50": round(pct(latencies, 50), 2) if latencies else None,
        "latency_ms_p99": round(pct(latencies, 99), 2) if latencies else None,
        "cpu_ms_per_event": round(cpu * 1000 / events, 3),
        "round_trips_per_event": round(trips / events, 2),
        "_latencies": latencies,
    }


async def timed(
    app: ServedApp, op: Callable[[int], Awaitable[Any]], count: int
) -> dict[str, float]:
    """Run ``op`` ``count`` times one after another on the app's loop; latency, CPU, trips."""
    from shared.storage.tables import round_trips

    for i in range(5):  # warm connections and caches
        await op(-1 - i)
    latencies = []
    cpu0, trips0 = app.cpu(), round_trips()
    for i in range(count):
        start = time.perf_counter()
        await op(i)
        latencies.append((time.perf_counter() - start) * 1000)
    return {
        "latency_ms_p50": round(pct(latencies, 50), 3),
        "latency_ms_p99": round(pct(latencies, 99), 3),
        "cpu_ms": round((app.cpu() - cpu0) * 1000 / count, 3),
        "round_trips": round((round_trips() - trips0) / count, 2),
    }


async def parts(app: ServedApp, count: int) -> dict[str, dict[str, float]]:
    """Each part alone, on the app's own thread and connections."""
    from shared.apns.notification import Environment, Notification, Priority, PushType
    from shared.domain.chat_payload import chat_notification
    from shared.domain.events import parse_event
    from shared.storage.deliveries import DELIVERIES_TABLE
    from shared.storage.inbox import Inbox
    from shared.wiring import container

    c = container()
    registry, pushers, inbox = await c.device_registry(), await c.pushers(), await c.inbox()
    table = await (await c.tables()).table(DELIVERIES_TABLE)
    template = json.loads(SAMPLE.read_text())[0]
    parsed = parse_event(json.loads(event(template, PARTS_USER, 0))[0])
    device = (await registry.list_for_user(user_id(PARTS_USER)))[0]
    built = chat_notification(parsed, device, c.settings, datetime.now(UTC))
    client = pushers["com.example.bench"]

    async def query(_: int) -> None:
        await registry.list_for_user(user_id(PARTS_USER))

    async def batch(i: int) -> None:
        rows = [
            {"PartitionKey": "bench|parts", "RowKey": f"{i}|{n}", "state": "pending"}
            for n in (0, 1)
        ]
        await table.submit_transaction([("upsert", r) for r in rows])

    async def single(i: int) -> None:
        row = {"PartitionKey": "bench|parts", "RowKey": f"single|{i}", "state": "pending"}
        await table.upsert_entity(row)

    async def inbox_read(_: int) -> None:
        await inbox.read(user_id(PARTS_USER))

    # A recipient with unread messages in a few threads, as after the phases.
    box = Inbox()
    for n in range(12):
        box = box.received(f"19:bench{n % 3}@thread.v2", 1_700_000_000_000 + n, datetime.now(UTC))
    written = [await inbox.write(user_id(INBOX_USER), await inbox.read(user_id(INBOX_USER)), box)]

    async def inbox_write(i: int) -> None:
        prior = written[-1]
        assert prior is not None
        written.append(await inbox.write(user_id(INBOX_USER), prior, box))

    async def push(_: int) -> None:
        n = Notification(built.device_token, built.topic, PushType.ALERT, built.payload,
                         priority=Priority.IMMEDIATE, collapse_id=built.collapse_id)  # fmt: skip
        await client.send(n, environment=Environment.SANDBOX)

    return {
        "device_query": await timed(app, query, count),
        "batched_write_2": await timed(app, batch, count),
        "single_write": await timed(app, single, count),
        "bare_push": await timed(app, push, count),
        "inbox_read": await timed(app, inbox_read, count),
        "inbox_write": await timed(app, inbox_write, count),
    }


# --- the command --------------------------------------------------------------------------------


def parts_sum(alone: dict[str, dict[str, float]], devices: int) -> float:
    """CPU of an event's parts: one device query, the inbox read and write (the count), two
    delivery writes (claims, outcomes), the pushes.

    One device's claim and outcome are plain writes; two or more devices' are transactions.
    """
    write = alone["single_write" if devices == 1 else "batched_write_2"]["cpu_ms"]
    inbox = alone["inbox_read"]["cpu_ms"] + alone["inbox_write"]["cpu_ms"]
    query = alone["device_query"]["cpu_ms"]
    return query + inbox + 2 * write + devices * alone["bare_push"]["cpu_ms"]


def summarize(phases: list[dict[str, Any]], alone: dict[str, dict[str, float]]) -> dict[str, Any]:
    events = sum(p["events"] for p in phases)
    seconds = sum(p["seconds"] for p in phases)
    pushes = sum(p["pushes"] for p in phases)
    latencies = [x for p in phases for x in p["_latencies"]]
    cpu_per_event = sum(p["_cpu"] for p in phases) * 1000 / events
    for p in phases:
        p["sum_of_parts_cpu_ms"] = round(parts_sum(alone, p["devices_per_recipient"]), 3)
        p["cpu_vs_parts"] = round(p["cpu_ms_per_event"] / p["sum_of_parts_cpu_ms"], 2)
    sum_of_parts = sum(p["sum_of_parts_cpu_ms"] * p["events"] for p in phases) / events
    p50, p99 = pct(latencies, 50), pct(latencies, 99)
    trips = [p["round_trips_per_event"] for p in phases]
    return {
        "events": events,
        "pushes": pushes,
        "events_per_s": round(events / seconds, 1),
        "pushes_per_s": round(pushes / seconds, 1),
        "latency_ms_p50": round(p50, 2),
        "latency_ms_p99": round(p99, 2),
        "cpu_ms_per_event": round(cpu_per_event, 3),
        "round_trips_per_event": round(sum(p["_trips"] for p in phases) / events, 2),
        "sum_of_parts_cpu_ms": round(sum_of_parts, 3),
        "targets": {
            "round_trips_do_not_grow_with_devices": trips[-1] <= trips[0] + 0.05,
            "cpu_vs_sum_of_parts": round(cpu_per_event / sum_of_parts, 2),
            "cpu_within_1_5x_parts": cpu_per_event <= 1.5 * sum_of_parts,
            "p99_over_p50": round(p99 / p50, 2),
            "p99_under_5x_p50": p99 < 5 * p50,
        },
    }


def report(phases: list[dict[str, Any]], alone: dict[str, Any], total: dict[str, Any]) -> None:
    print(
        f"{'':<12}{'events/s':>9}{'pushes/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'CPU ms/ev':>10}"
        f"{'parts ms':>9}{'trips/ev':>9}"
    )
    overall = {
        **total,
        "devices_per_recipient": "all",
        "sum_of_parts_cpu_ms": total["sum_of_parts_cpu_ms"],
    }
    for p in [*phases, overall]:
        label = f"{p['devices_per_recipient']} device(s)"
        print(
            f"{label:<12}{p['events_per_s']:>9}{p['pushes_per_s']:>9}{p['latency_ms_p50']:>9}"
            f"{p['latency_ms_p99']:>9}{p['cpu_ms_per_event']:>10}{p['sum_of_parts_cpu_ms']:>9}"
            f"{p['round_trips_per_event']:>9}"
        )
    print(f"\n{'parts alone':<18}{'p50 ms':>9}{'p99 ms':>9}{'CPU ms':>9}{'trips':>7}")
    for name, f in alone.items():
        print(
            f"{name:<18}{f['latency_ms_p50']:>9}{f['latency_ms_p99']:>9}{f['cpu_ms']:>9}"
            f"{f['round_trips']:>7}"
        )
    t = total["targets"]
    print(
        f"\nCPU per event {total['cpu_ms_per_event']} ms vs sum of parts "
        f"{total['sum_of_parts_cpu_ms']} ms (query + inbox read and write + 2 writes + the "
        f"pushes): "
        f"{t['cpu_vs_sum_of_parts']}x (target <= 1.5)\n"
        f"p99/p50 {t['p99_over_p50']} (target < 5); round trips per event do not grow from 1 "
        f"to 3 devices: {t['round_trips_do_not_grow_with_devices']}\n"
        f"webhook + parse alone (an acknowledged thread-level event): "
        f"{total['webhook_and_parse_alone']['cpu_ms']} CPU ms; load average "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )


async def read_reports(
    app: ServedApp, groups: dict[int, list[int]], control: str
) -> dict[str, dict[str, float]]:
    """Each recipient reads everything it was sent, reporting from its first device.

    Per device count: CPU ms, storage round trips and badge-only pushes per read report.
    """
    from shared.storage.tables import round_trips
    from shared.usecases.read_reports import report_read
    from shared.wiring import container, utc_now

    c = container()
    inbox, updates = await c.inbox(), await c.badge_updates()
    out: dict[str, dict[str, float]] = {}
    for devices, users in groups.items():
        seen = len(await asyncio.to_thread(sim_requests, control))
        cpu0, trips0 = app.cpu(), round_trips()
        for user in users:
            box = (await inbox.read(user_id(user))).inbox
            body = {"messageId": str(max(box.thread(THREAD).unread)),
                    "deviceId": device_id_of(user, 0)}  # fmt: skip
            await report_read(user_id(user), THREAD, body, utc_now(), inbox=inbox, updates=updates)
        cpu, trips = app.cpu() - cpu0, round_trips() - trips0
        pushes = len(await asyncio.to_thread(sim_requests, control)) - seen
        n = len(users)
        out[f"{devices}_devices"] = {
            "reports": n,
            # The benchmark's own read of the inbox (to find the last message) is left out.
            "cpu_ms_per_report": round(cpu * 1000 / n, 3),
            "round_trips_per_report": round(trips / n - 1, 2),
            "badge_pushes_per_report": round(pushes / n, 2),
        }
    return out


def device_id_of(user: int, n: int) -> str:
    from shared.domain.devices import device_id_for

    return device_id_for(token(user, n))


def print_read_reports(reads: dict[str, dict[str, float]]) -> None:
    print(f"\n{'read reports':<18}{'CPU ms':>9}{'trips':>7}{'pushes':>8}")
    for name, f in reads.items():
        print(
            f"{name:<18}{f['cpu_ms_per_report']:>9}{f['round_trips_per_report']:>7}"
            f"{f['badge_pushes_per_report']:>8}"
        )


def acknowledged_only(app: ServedApp, base: str, events: int, concurrency: int) -> dict[str, Any]:
    """The host's webhook and our parsing alone: thread-level events, acknowledged, no I/O."""
    from shared.storage.tables import round_trips

    sample = REPO / "tests" / "samples" / "chat_message_received_in_thread.eventgrid.json"
    template = json.loads(sample.read_text())[0]
    bodies = []
    for i in range(events):
        e = copy.deepcopy(template)
        e["id"] = f"ack-{i}"
        bodies.append([f"ack-{i}", json.dumps([e])])
    cpu0, trips0 = app.cpu(), round_trips()
    posted = post_from_client(base, bodies, concurrency)
    return {
        "events_per_s": round(events / posted["seconds"], 1),
        "cpu_ms": round((app.cpu() - cpu0) * 1000 / events, 3),
        "round_trips": round((round_trips() - trips0) / events, 2),
    }


def main(argv: list[str] | None = None) -> int:
    if argv is None and sys.argv[1:] == ["--client"]:
        return client_main()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=600, help="events in all (split 3 ways)")
    parser.add_argument("--users", type=int, default=60, help="recipients per device count")
    parser.add_argument("--concurrency", type=int, default=8, help="events in flight")
    parser.add_argument("--parts", type=int, default=200, help="repetitions of each part alone")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--clients", nargs="+", default=["lean", "sdk"], choices=["lean", "sdk"],
        help="Table Storage clients to run, one after the other",
    )  # fmt: skip
    parser.add_argument(
        "--rounds", type=int, default=1,
        help="run the clients this many times, alternating their order (median reported)",
    )  # fmt: skip
    args = parser.parse_args(argv)

    template = json.loads(SAMPLE.read_text())[0]
    rounds: list[dict[str, dict[str, Any]]] = []
    with (
        tempfile.TemporaryDirectory() as tmp,
        Azurite.start(None) as az,
        simulator(Path(tmp)) as sim,
    ):
        for r in range(args.rounds):
            order = args.clients if r % 2 == 0 else list(reversed(args.clients))
            rounds.append({})
            for client in order:
                env = {
                    **defaults(),
                    **sim["settings"],
                    "STORAGE_CONNECTION": az.connection_string,
                    "TABLE_PREFIX": f"bench{client}{r}",
                    "STORAGE_CLIENT": client,
                    "KEY_ENCRYPTION_KEYS": KEK,
                }
                print(f"\n== round {r + 1}: STORAGE_CLIENT={client}", flush=True)
                rounds[-1][client] = run_client(args, env, sim, template)

    runs = {client: median_round([rnd[client] for rnd in rounds]) for client in args.clients}
    for client, run in runs.items():
        print(f"\n== STORAGE_CLIENT={client} (median round of {args.rounds})")
        report(run["phases"], run["parts_alone"], run["overall"])
        print_read_reports(run["read_reports"])
    comparison = compare(rounds)
    settings = {"events": args.events, "concurrency": args.concurrency, "parts": args.parts,
                "clients": args.clients, "rounds": args.rounds}  # fmt: skip
    first = runs[args.clients[0]]
    clients = {}
    for client, run in runs.items():
        per_round = [[p["cpu_ms_per_event"] for p in rnd[client]["phases"]] for rnd in rounds]
        clients[client] = {**public(run), "cpu_ms_per_event_rounds": per_round}
    extra = {
        "parts_alone": first["parts_alone"],
        "overall": first["overall"],
        "read_reports": first["read_reports"],
        "clients": clients,
        "lean_vs_sdk": comparison,
    }
    write_result(args.out, "chat push", settings, first["phases"], extra)
    return 0


def median_round(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run whose CPU per event (all phases) is the median of the rounds'."""
    ordered = sorted(runs, key=lambda run: run["overall"]["cpu_ms_per_event"])
    return ordered[(len(ordered) - 1) // 2]


def run_client(
    args: argparse.Namespace, env: dict[str, str], sim: dict[str, Any], template: dict[str, Any]
) -> dict[str, Any]:
    """The whole chat benchmark with one app configuration: phases, parts, the webhook alone,
    read reports."""
    app = ServedApp(env)
    base = app.start()
    try:
        groups = {d: [d * 100_000 + u for u in range(args.users)] for d in (1, 2, 3)}
        app.run(register({u: d for d, us in groups.items() for u in us}))
        # Warm-up: one message to every recipient, so connections are open and each
        # (user, thread) partition is already in today's purge index (the steady state of a
        # conversation; its first message of the day costs one more round trip).
        for d in (1, 2, 3):
            run_phase(
                app, base, sim["control_url"], template, groups[d], d, args.users,
                args.concurrency, d * 10**7,
            )  # fmt: skip
        per = args.events // 3
        phases = [
            run_phase(app, base, sim["control_url"], template, groups[d], d, per,
                      args.concurrency, d * 10**6)
            for d in (1, 2, 3)
        ]  # fmt: skip
        alone = app.run(parts(app, args.parts))
        webhook = acknowledged_only(app, base, args.parts, args.concurrency)
        reads = app.run(read_reports(app, groups, sim["control_url"]))
    finally:
        app.stop()
    total = summarize(phases, alone)
    total["webhook_and_parse_alone"] = webhook
    return {"phases": phases, "parts_alone": alone, "overall": total, "read_reports": reads}


def public(run: dict[str, Any]) -> dict[str, Any]:
    """A client's run without the raw ``_`` fields of its phases."""
    phases = [{k: v for k, v in p.items() if not k.startswith("_")} for p in run["phases"]]
    return {**run, "phases": phases}


def compare(rounds: list[dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """The lean client's CPU per event (and per part) over the SDK's, round by round (each
    round runs both), and the median of those ratios."""
    if not rounds or not {"lean", "sdk"} <= rounds[0].keys():
        return {}
    per_round: list[dict[str, float]] = []
    parts_rounds: list[dict[str, float]] = []
    for rnd in rounds:
        lean, sdk = rnd["lean"], rnd["sdk"]
        phases = zip(lean["phases"], sdk["phases"], strict=True)
        per_round.append(
            {f"{p['devices_per_recipient']}_device": p["cpu_ms_per_event"] / q["cpu_ms_per_event"]
             for p, q in phases}
        )  # fmt: skip
        parts_rounds.append(
            {name: lean["parts_alone"][name]["cpu_ms"] / sdk["parts_alone"][name]["cpu_ms"]
             for name in lean["parts_alone"]}
        )  # fmt: skip
    per_phase = {k: round(statistics.median(r[k] for r in per_round), 2) for k in per_round[0]}
    parts = {k: round(statistics.median(r[k] for r in parts_rounds), 2) for k in parts_rounds[0]}
    shown = [{k: round(v, 2) for k, v in r.items()} for r in per_round]
    one = per_phase["1_device"]
    print(
        f"\nlean / sdk CPU per event, median of {len(rounds)} round(s): {per_phase} (target at "
        f"one device <= 0.33: {one <= 0.33}); rounds: {shown}; parts: {parts}"
    )
    return {
        "cpu_per_event": per_phase,
        "cpu_per_event_rounds": shown,
        "parts": parts,
        "one_device_within_a_third": one <= 0.33,
    }


def write_result(
    out: Path, name: str, settings: dict[str, Any], phases: list[dict[str, Any]],
    extra: dict[str, Any],
) -> None:  # fmt: skip
    """Write a run's figures (phases without their raw ``_`` fields) with the machine's."""
    result = {
        "benchmark": name,
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_average_1m": round(os.getloadavg()[0], 2),
        },
        "settings": settings,
        "phases": [{k: v for k, v in p.items() if not k.startswith("_")} for p in phases],
        **extra,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {out.relative_to(REPO) if out.is_relative_to(REPO) else out}")


if __name__ == "__main__":
    sys.exit(main())

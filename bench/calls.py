"""Incoming-call benchmark: IncomingCall events through the local host, rung on the simulator.

    .venv/bin/python bench/calls.py [--events 300] [--concurrency 8] [--chat-events 100]

The chat benchmark's harness (bench/chat.py: Azurite in memory, the APNs simulator in its own
process, the real app on the local development host in a thread of this process). Registers
callees with 1, 2 and 3 VoIP devices, then posts a stream of IncomingCall events, each stamped
with the current time (older ones are dropped, by design), to the ``on_call_event`` webhook,
one phase per device count, ``--concurrency`` at a time. For comparison under the same load, one
phase of ChatMessageReceived events to recipients with 2 alert devices runs through
``on_chat_event`` in the same process.

Prints, per phase and overall: events/s, pushes/s, p50/p99 latency from the webhook request to
the APNs request (the simulator's receive time), CPU ms of the app's thread per event and
storage round trips per event. Writes everything to ``bench/results/calls.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402

from bench.chat import (  # noqa: E402
    KEK,
    ServedApp,
    pct,
    phase_figures,
    simulator,
    user_id,
    write_result,
)
from bench.chat import SAMPLE as CHAT_SAMPLE  # noqa: E402
from bench.chat import register as register_chat  # noqa: E402
from bench.chat import run_phase as run_chat_phase  # noqa: E402
from devtools.azurite import Azurite  # noqa: E402
from devtools.settings_doc import defaults  # noqa: E402

SAMPLE = REPO / "tests" / "samples" / "incoming_call.eventgrid.json"
WEBHOOK = "/runtime/webhooks/eventgrid?functionName=on_call_event"
RESULTS = REPO / "bench" / "results" / "calls.json"
APP = "com.example.bench"
CALLEES = 7_000_000  # callee numbers start here (chat recipients use lower ones)


def voip_token(user: int, n: int) -> str:
    return f"{user:08x}{n:02x}".ljust(64, "c")


def call_id(seq: int) -> str:
    return f"00000000-0000-4000-8000-{seq:012d}"


async def register_callees(users: dict[int, int]) -> None:
    """Store each callee's VoIP devices through the app's own registry (on the app's loop)."""
    from shared.apns.notification import Environment
    from shared.domain.devices import Device, DeviceKind, device_id_for
    from shared.wiring import container

    registry = await container().device_registry()
    now = datetime.now(UTC)
    for user, count in users.items():
        for n in range(count):
            t = voip_token(user, n)
            await registry.register(
                Device(
                    user_id=user_id(user), device_id=device_id_for(t), token=t,
                    kind=DeviceKind.VOIP, topic=APP, environment=Environment.SANDBOX,
                    registered_at=now, renewed_at=now,
                )
            )  # fmt: skip


def call_event(template: dict[str, Any], user: int, seq: int) -> bytes:
    """A fresh IncomingCall to ``user``: its own ids, stamped now."""
    e = copy.deepcopy(template)
    raw = user_id(user)
    e["id"] = f"bench-call-{seq}"
    e["eventTime"] = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    e["data"].update(
        to={"kind": "communicationUser", "rawId": raw, "communicationUser": {"id": raw}},
        serverCallId=f"bench-call-{seq}",
        correlationId=call_id(seq),
    )
    return json.dumps([e]).encode()


async def post_calls(
    base: str, template: dict[str, Any], plan: list[tuple[int, int]], concurrency: int
) -> tuple[dict[str, float], float, int]:
    """Post every call (built just before it is sent); (callId → send time), seconds, failures."""
    sent: dict[str, float] = {}
    failures = 0
    gate = asyncio.Semaphore(concurrency)
    headers = {"aeg-event-type": "Notification", "content-type": "application/json"}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as client:

        async def one(user: int, seq: int) -> None:
            nonlocal failures
            async with gate:
                body = call_event(template, user, seq)
                sent[call_id(seq)] = time.time()
                response = await client.post(WEBHOOK, content=body, headers=headers)
                failures += response.status_code != 202

        start = time.perf_counter()
        await asyncio.gather(*(one(u, s) for u, s in plan))
        elapsed = time.perf_counter() - start
    return sent, elapsed, failures


def sim_requests(control: str, since: int) -> list[dict[str, Any]]:
    return httpx.get(control + "/requests", params={"since": since}, timeout=60).json()


def last_seq(control: str) -> int:
    return int(httpx.get(control + "/health", timeout=60).json()["requests"])


def run_call_phase(
    app: ServedApp, base: str, control: str, template: dict[str, Any],
    users: list[int], devices: int, events: int, concurrency: int, seq0: int,
) -> dict[str, Any]:  # fmt: skip
    """One stream of ``events`` calls to callees with ``devices`` VoIP devices each."""
    from shared.storage.tables import round_trips

    plan = [(users[i % len(users)], seq0 + i) for i in range(events)]
    seen = last_seq(control)
    cpu0, trips0 = app.cpu(), round_trips()
    sent, elapsed, failures = asyncio.run(post_calls(base, template, plan, concurrency))
    cpu = app.cpu() - cpu0
    trips = round_trips() - trips0
    rung = [
        r for r in sim_requests(control, seen)
        if r.get("status") == 200 and r["headers"].get("apns-push-type") == "voip"
    ]  # fmt: skip
    latencies = [
        (r["receivedAt"] - sent[r["payload"]["data"]["callId"]]) * 1000
        for r in rung
        if r["payload"]["data"]["callId"] in sent
    ]
    figures = phase_figures(events, failures, len(rung), elapsed, latencies, cpu, trips)
    return {"event": "IncomingCall", "devices_per_recipient": devices, **figures}


def report(phases: list[dict[str, Any]]) -> None:
    print(
        f"{'':<34}{'events/s':>9}{'pushes/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'CPU ms/ev':>10}"
        f"{'trips/ev':>9}"
    )
    for p in phases:
        label = f"{p['event']}, {p['devices_per_recipient']} device(s)"
        print(
            f"{label:<34}{p['events_per_s']:>9}{p['pushes_per_s']:>9}{p['latency_ms_p50']:>9}"
            f"{p['latency_ms_p99']:>9}{p['cpu_ms_per_event']:>10}{p['round_trips_per_event']:>9}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=300, help="calls in all (split 3 ways)")
    parser.add_argument("--users", type=int, default=40, help="callees per device count")
    parser.add_argument("--concurrency", type=int, default=8, help="events in flight")
    parser.add_argument("--chat-events", type=int, default=100, help="chat events to compare")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    template = json.loads(SAMPLE.read_text())[0]
    chat_template = json.loads(CHAT_SAMPLE.read_text())[0]
    with (
        tempfile.TemporaryDirectory() as tmp,
        Azurite.start(None) as az,
        simulator(Path(tmp)) as sim,
    ):
        env = {
            **defaults(),
            **sim["settings"],
            "STORAGE_CONNECTION": az.connection_string,
            "TABLE_PREFIX": "benchcalls",
            "KEY_ENCRYPTION_KEYS": KEK,
        }
        app = ServedApp(env)
        base = app.start()
        control = sim["control_url"]
        try:
            groups = {d: [CALLEES + d * 100_000 + u for u in range(args.users)] for d in (1, 2, 3)}
            app.run(register_callees({u: d for d, us in groups.items() for u in us}))
            chat_users = [200_000 + u for u in range(args.users)]
            app.run(register_chat({u: 2 for u in chat_users}))
            run_call_phase(app, base, control, template, groups[2], 2, 30, args.concurrency, 1)
            per = args.events // 3
            phases = [
                run_call_phase(app, base, control, template, groups[d], d, per,
                               args.concurrency, d * 10**6)
                for d in (1, 2, 3)
            ]  # fmt: skip
            chat = run_chat_phase(app, base, control, chat_template, chat_users, 2,
                                  args.chat_events, args.concurrency, 9 * 10**6)  # fmt: skip
            phases.append({"event": "ChatMessageReceived", **chat})
        finally:
            app.stop()

    calls = [x for p in phases if p["event"] == "IncomingCall" for x in p["_latencies"]]
    overall = {
        "calls": sum(p["events"] for p in phases if p["event"] == "IncomingCall"),
        "latency_ms_p50": round(pct(calls, 50), 2) if calls else None,
        "latency_ms_p99": round(pct(calls, 99), 2) if calls else None,
    }
    report(phases)
    print(f"\nall calls: webhook-to-APNs p50 {overall['latency_ms_p50']} ms, "
          f"p99 {overall['latency_ms_p99']} ms")  # fmt: skip
    name = "incoming calls (with a chat phase for comparison)"
    settings = {
        "events": args.events,
        "concurrency": args.concurrency,
        "chat_events": args.chat_events,
    }
    write_result(args.out, name, settings, phases, {"overall_calls": overall})
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark runner: pushrelay's own APNs client (``shared.apns``), one process.

    .venv/bin/python bench/apns/run_ours.py PLAN.json [--profile sample|cprofile|pyinstrument]

Run by ``bench.py``; prints one JSON line. With ``--profile`` the measured phase runs under a
profiler and its top entries go to stderr (and ``PLAN.json``'s ``profile_out`` if set).
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from workload import drive, read_plan, report

from shared.apns.client import ApnsClient, ApnsConfig
from shared.apns.notification import Environment, Notification, Priority, PushType
from shared.apns.payload import encode_payload
from shared.apns.token import TokenCredential


async def main(plan: dict[str, Any], profiler: str | None) -> None:
    credential = TokenCredential.from_file(
        plan["key_file"], key_id=plan["key_id"], team_id=plan["team_id"]
    )
    client = ApnsClient(
        ApnsConfig(
            credential=credential,
            sandbox_origin=f"https://{plan['host']}:{plan['port']}",
            ca_file=plan["ca_file"],
            connections=plan["connections"],
        )
    )
    token, topic, message = plan["device_token"], plan["topic"], plan["payload"]
    collapse_id = plan["collapse_id"]

    async def send(_: int) -> bool:
        n = Notification(
            device_token=token,
            topic=topic,
            push_type=PushType.ALERT,
            payload=encode_payload(message),
            priority=Priority.IMMEDIATE,
            collapse_id=collapse_id,
        )
        result = await client.send(n, environment=Environment.SANDBOX)
        return result.status == 200

    await drive(send, plan["warmup"], plan["concurrency"])
    if profiler is None:
        result = await drive(send, plan["pushes"], plan["concurrency"])
    else:
        result = await _profiled(profiler, drive(send, plan["pushes"], plan["concurrency"]), plan)
    await client.aclose()
    report(result, client="pushrelay")


async def _profiled(kind: str, phase: Any, plan: dict[str, Any]) -> dict[str, Any]:
    out = plan.get("profile_out")
    if kind == "sample":
        from sampler import CpuSampler

        sampler = CpuSampler()
        sampler.start()
        result: dict[str, Any] = await phase
        sampler.stop()
        text = sampler.report(plan["pushes"])
    elif kind == "pyinstrument":
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.0005, async_mode="disabled")
        profiler.start()
        result = await phase
        profiler.stop()
        tree = profiler.output_text(time="percent_of_total")
        flat = profiler.output_text(time="percent_of_total", flat=True, show_all=True)
        text = tree + "\nSelf time by function (top 40):\n" + "\n".join(flat.splitlines()[:48])
    else:
        import cProfile
        import io
        import pstats

        profile = cProfile.Profile()
        profile.enable()
        result = await phase
        profile.disable()
        buffer = io.StringIO()
        stats = pstats.Stats(profile, stream=buffer).strip_dirs()
        stats.sort_stats("tottime").print_stats(25)
        stats.sort_stats("cumulative").print_stats(25)
        text = buffer.getvalue()
    print(text, file=sys.stderr)
    if out:
        Path(out).write_text(text, encoding="utf-8")
    return result


if __name__ == "__main__":
    kind = None
    if "--profile" in sys.argv:
        kind = sys.argv[sys.argv.index("--profile") + 1]
    asyncio.run(main(read_plan(), kind))

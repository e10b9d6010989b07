"""The workload every Python runner drives, and how it measures itself (standard library only).

A runner gets a plan (JSON, see ``bench.py``), builds its client, then calls :func:`drive`
twice: a warm-up (connection, TLS, token signing, caches; not reported) and the measured phase.
``concurrency`` workers each loop "take the next push number, send, record the latency", so at
most ``concurrency`` pushes are in flight, as in node's runner. CPU time is the process's own
user + system time (``getrusage(RUSAGE_SELF)``, every thread) across the measured phase only.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any


def read_plan() -> dict[str, Any]:
    """The plan the orchestrator passed as the first argument (a JSON file)."""
    with open(sys.argv[1], encoding="utf-8") as handle:
        plan: dict[str, Any] = json.load(handle)
    return plan


async def drive(
    send: Callable[[int], Awaitable[bool]], total: int, concurrency: int
) -> dict[str, Any]:
    """Send ``total`` pushes with ``concurrency`` in flight; ``send(i)`` says whether APNs said 200.

    Returns pushes, failures, wall seconds, CPU seconds (user, system) and per-push latencies.
    """
    latencies = [0] * total
    failures = 0
    counter = iter(range(total))
    clock = time.perf_counter_ns

    async def worker() -> None:
        nonlocal failures
        for i in counter:
            started = clock()
            ok = await send(i)
            latencies[i] = clock() - started
            if not ok:
                failures += 1

    before = resource.getrusage(resource.RUSAGE_SELF)
    wall = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - wall
    after = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "pushes": total,
        "failures": failures,
        "wall_s": wall,
        "cpu_user_s": after.ru_utime - before.ru_utime,
        "cpu_sys_s": after.ru_stime - before.ru_stime,
        "latency_ns": latencies,
    }


def report(result: dict[str, Any], **extra: Any) -> None:
    """Print the runner's one-line JSON result (latency percentiles instead of raw samples)."""
    latencies = sorted(result.pop("latency_ns"))
    result["latency_ms"] = {
        "p50": percentile(latencies, 50) / 1e6,
        "p99": percentile(latencies, 99) / 1e6,
        "max": latencies[-1] / 1e6 if latencies else 0.0,
    }
    result.update(extra)
    print(json.dumps(result), flush=True)


def percentile(ordered: list[int], pct: float) -> float:
    """Nearest-rank percentile of an ascending list (0 for an empty one)."""
    if not ordered:
        return 0.0
    rank = max(1, -(-len(ordered) * pct // 100))
    return float(ordered[int(rank) - 1])

"""Inbox CPU per chat event: the row's schema 1 (every thread decoded) beside schema 2 (lazy).

    .venv/bin/python bench/inbox.py [--baseline 7c862fe] [--repeat 200] [--rounds 5]

What one ``ChatMessageReceived`` does to the recipient's inbox row, measured alone, without
storage: decode the row, count the message in one thread, the badge, prune, fit, encode. The
recipient holds an unread backlog of THREADS x UNREAD (1x10, 5x20, 20x200, 50x1000); the event
lands in a thread with a short unread list of its own, so what grows is what the *other*
threads hold.

``v1`` is ``shared/storage/inbox.py`` as it was at ``--baseline`` (the last commit with schema 1,
loaded from git as its own module): the whole row decoded into thread states and printed again.
``v2`` is the module of this tree. CPU is ``time.thread_time`` per event, the median of
``--rounds`` rounds of ``--repeat`` events each, the two paths alternating round by round; the
ratio is v2 / v1 in the same run. Writes ``bench/results/inbox.json``. A benchmark, not a test:
compare the ratios of one run.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from shared.storage import inbox as v2  # noqa: E402

RESULTS = REPO / "bench" / "results" / "inbox.json"
BACKLOGS = ((1, 10), (5, 20), (20, 200), (50, 1000))
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
M = 1_772_366_400_000  # a message id: epoch ms
EVENT_THREAD = "19:event@thread.v2"


def baseline_module(commit: str) -> ModuleType:
    """``shared/storage/inbox.py`` at ``commit``, imported under its own name."""
    source = subprocess.run(
        ["git", "show", f"{commit}:shared/storage/inbox.py"],
        cwd=REPO, check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    spec = importlib.util.spec_from_loader("inbox_baseline", loader=None)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    exec(compile(source, f"{commit}:shared/storage/inbox.py", "exec"), module.__dict__)
    return module


def backlog_row(module: ModuleType, threads: int, unread: int) -> str:
    """The stored row of a recipient with ``threads`` x ``unread`` unread messages."""
    box = module.Inbox()
    for n in range(threads):
        for k in range(unread):
            # Messages a few seconds to minutes apart, as in a busy group.
            box = box.received(f"19:{n:04x}backlog@thread.v2", M + k * 7_919 + n, NOW)
    for k in range(3):
        box = box.received(EVENT_THREAD, M + k * 1000, NOW)
    return str(module.encode_inbox(box))


def one_event(module: ModuleType, row: str, order: int) -> str:
    """What a ChatMessageReceived does to the row, storage aside."""
    box = module.decode_inbox(row)
    after = box.received(EVENT_THREAD, order, NOW)
    after.badge(NOW), box.badge(NOW)
    after = module.fit_inbox(after.pruned(NOW), NOW)
    return str(module.encode_inbox(after))


def cpu_ms(module: ModuleType, row: str, repeat: int) -> float:
    start = time.thread_time()
    for k in range(repeat):
        one_event(module, row, M + 10_000_000 + k)
    return (time.thread_time() - start) * 1000 / repeat


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="7c862fe", help="commit of schema 1's module")
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    v1 = baseline_module(args.baseline)
    paths = {"v1": v1, "v2": v2}
    results: dict[str, Any] = {}
    for threads, unread in BACKLOGS:
        rows = {name: backlog_row(module, threads, unread) for name, module in paths.items()}
        for name, module in paths.items():  # both read their own rows back alike
            assert module.decode_inbox(one_event(module, rows[name], M + 1)).badge(NOW) == (
                threads * unread + 4
            )
        # Fewer events for the big rows: each round stays a fraction of a second.
        repeat = max(5, args.repeat * 10 // (threads * unread) ** 0.5 // 1)
        rounds: dict[str, list[float]] = {name: [] for name in paths}
        for r in range(args.rounds):
            for name in paths if r % 2 == 0 else reversed(list(paths)):
                rounds[name].append(cpu_ms(paths[name], rows[name], int(repeat)))
        median = {name: statistics.median(values) for name, values in rounds.items()}
        key = f"{threads}x{unread}"
        results[key] = {
            "row_chars": {name: len(row) for name, row in rows.items()},
            "cpu_ms": {name: round(value, 4) for name, value in median.items()},
            "cpu_ms_rounds": {n: [round(v, 4) for v in vs] for n, vs in rounds.items()},
            "events_per_round": int(repeat),
            "ratio_v2_to_v1": round(median["v2"] / median["v1"], 3),
        }
        print(
            f"{key:>8}: v1 {median['v1']:8.3f} ms  v2 {median['v2']:7.3f} ms  "
            f"ratio {median['v2'] / median['v1']:.3f}  row {len(rows['v1'])} / {len(rows['v2'])}"
        )
    RESULTS.write_text(
        json.dumps(
            {
                "benchmark": "inbox CPU per chat event (decode, received, badge, prune, fit, "
                "encode)",
                "when": datetime.now(UTC).isoformat(timespec="seconds"),
                "machine": {"python": platform.python_version(), "cpus": _cpus()},
                "settings": vars(args),
                "backlogs": results,
            },
            indent=2,
        )
        + "\n"
    )


def _cpus() -> int | None:
    import os

    return os.cpu_count()


if __name__ == "__main__":
    main()

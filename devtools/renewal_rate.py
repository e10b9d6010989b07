"""Print the renewal rate per sweep: devices woken, how many renewed afterwards, and the rate.

    python -m devtools.renewal_rate [--hours 24] [--json] [--storage CONNECTION] [--prefix P]

Reads the ``renewalsweeps`` table (``shared.storage.renewal_sweeps``): one row per sweep, its
shards' reports and the renewals credited to it; nothing is written. Storage comes from
``--storage``, else ``STORAGE_CONNECTION``, else ``local.settings.json`` (the local run's Azurite).

A woken device is credited to its sweep when the worker next reads it (its next schedule entry,
``RENEWAL_MIN_SPACING_MINUTES`` or more after the wake) and finds it renewed since. A sweep's
rate is therefore final only once that time has passed: younger sweeps are marked ``pending``.
Exit status: 0 when sweeps were found, 1 when there were none, 2 on a usage or storage error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from shared.errors import PushRelayError
from shared.storage.renewal_schedule import bucket_for
from shared.storage.renewal_sweeps import SWEEPS_TABLE, SweepRate, TableSweepLog
from shared.storage.tables import Tables

REPO = Path(__file__).resolve().parent.parent
AZURITE_DEFAULT = "UseDevelopmentStorage=true"
# Credits arrive when a woken device is next read: the minimum spacing (20 min by default) plus
# a sweep interval and the queue's latency.
SETTLED_AFTER = timedelta(minutes=30)


def _local_setting(name: str) -> str | None:
    path = REPO / "local.settings.json"
    if not path.exists():
        return None
    value = json.loads(path.read_text()).get("Values", {}).get(name)
    return value if isinstance(value, str) and value else None


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.renewal_rate",
        description="Renewal rate per sweep: woken devices, renewed afterwards, and the rate.",
    )
    parser.add_argument("--hours", type=float, default=24.0, help="sweeps of the last N hours")
    parser.add_argument("--storage", help="storage connection string or table endpoint URL")
    parser.add_argument("--prefix", help="TABLE_PREFIX of the deployment")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parser.parse_args(argv)


def as_json(rates: Sequence[SweepRate], now: datetime) -> dict[str, Any]:
    """The rates as JSON-ready data, with totals over the settled sweeps."""
    sweeps = [
        {
            "sweep": r.record.sweep_id,
            "at": r.record.at.isoformat(),
            "buckets": [r.record.from_bucket, r.record.to_bucket],
            "due": r.record.devices,
            "shards": r.record.shards,
            "shardsReported": r.shards_reported,
            "woken": r.woken,
            "renewed": r.renewed_after,
            "rate": r.rate,
            "pending": now - r.record.at < SETTLED_AFTER,
            "skipped": {k: v for k, v in r.counts.items() if k != "woken"},
        }
        for r in rates
    ]
    settled = [s for s in sweeps if not s["pending"]]
    woken = sum(int(s["woken"]) for s in settled)
    renewed = sum(int(s["renewed"]) for s in settled)
    total = {"woken": woken, "renewed": renewed, "rate": renewed / woken if woken else None}
    return {"sweeps": sweeps, "settled": total}


def _percent(rate: object) -> str:
    return "-" if not isinstance(rate, float) else f"{rate:.1%}"


def render(data: dict[str, Any], out: TextIO) -> None:
    """Print one aligned line per sweep and the settled total."""
    out.write(
        f"{'sweep':<13} {'at (UTC)':<20} {'due':>7} {'shards':>9} {'woken':>7} "
        f"{'renewed':>8} {'rate':>7}  skipped\n"
    )
    for s in data["sweeps"]:
        at = datetime.fromisoformat(s["at"]).strftime("%Y-%m-%d %H:%M:%S")
        shards = f"{s['shardsReported']}/{s['shards']}"
        skipped = ", ".join(f"{k} {v}" for k, v in s["skipped"].items() if v)
        out.write(
            f"{s['sweep']:<13} {at:<20} {s['due']:>7} {shards:>9} {s['woken']:>7} "
            f"{s['renewed']:>8} {_percent(s['rate']):>7}  {skipped or '-'}"
            + ("  (pending)" if s["pending"] else "")
            + "\n"
        )
    t = data["settled"]
    out.write(
        f"settled sweeps: {t['woken']} woken, {t['renewed']} renewed afterwards, "
        f"rate {_percent(t['rate'])}\n"
    )


async def fetch(storage: str, prefix: str, since: datetime) -> list[SweepRate]:
    """The sweeps since ``since`` with their counts and credits."""
    tables = Tables.connect(storage, prefix)
    try:
        log = TableSweepLog(await tables.table(SWEEPS_TABLE))
        return await log.rates(bucket_for(since))
    finally:
        await tables.aclose()


def main(
    argv: Sequence[str] | None = None, out: TextIO = sys.stdout, now: datetime | None = None
) -> int:
    """Run the command; returns the exit status. ``now`` is injectable for tests."""
    args = _arguments(argv)
    storage = (
        args.storage
        or os.environ.get("STORAGE_CONNECTION")
        or _local_setting("STORAGE_CONNECTION")
        or AZURITE_DEFAULT
    )
    prefix = args.prefix or os.environ.get("TABLE_PREFIX") or _local_setting("TABLE_PREFIX")
    moment = now or datetime.now(UTC)
    try:
        rates = asyncio.run(
            fetch(storage, prefix or "pushrelay", moment - timedelta(hours=args.hours))
        )
    except (PushRelayError, ValueError) as exc:
        print(f"cannot read the renewal sweeps: {exc}", file=sys.stderr)
        return 2
    data = as_json(rates, moment)
    if args.json:
        out.write(json.dumps(data, indent=2) + "\n")
    else:
        render(data, out)
    return 0 if rates else 1


if __name__ == "__main__":
    sys.exit(main())

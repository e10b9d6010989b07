"""The renewal sweeps' log (``shared.storage.renewal_sweeps.TableSweepLog``) in memory.

The checkpoint changes only under its ETag and every write gives it a new one; shard reports and
renewal credits are idempotent (a redelivered shard rewrites, never doubles); ``rates`` reads
them back as the adapter does. tests/integration/test_sweep_log_table.py holds it and the
adapter to the same contract.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Mapping, Sequence
from datetime import datetime

from shared.storage.renewal_sweeps import (
    SHARD_COUNTS,
    Checkpoint,
    ShardReport,
    SweepRate,
    SweepRecord,
)


class FakeSweepLog:
    """The renewalsweeps table in memory: checkpoint under an ETag, records, shards, credits."""

    def __init__(self) -> None:
        self.cursor: Checkpoint | None = None
        self.records: dict[str, SweepRecord] = {}
        self.shards: dict[tuple[str, int], ShardReport] = {}
        self.credits: dict[str, set[str]] = {}
        self._etags = itertools.count(1)

    def _etag(self) -> str:
        return f'W/"s{next(self._etags)}"'

    async def checkpoint(self) -> Checkpoint:
        await asyncio.sleep(0)
        return self.cursor or Checkpoint()

    async def claim(
        self, seen: Checkpoint, through: str, lease_until: datetime
    ) -> Checkpoint | None:
        await asyncio.sleep(0)
        if (self.cursor.etag if self.cursor else None) != seen.etag:
            return None
        self.cursor = Checkpoint(seen.done, through, lease_until, self._etag())
        return self.cursor

    async def finish(self, claimed: Checkpoint, record: SweepRecord) -> bool:
        await asyncio.sleep(0)
        if self.cursor is None or self.cursor.etag != claimed.etag:
            return False
        self.cursor = Checkpoint(record.to_bucket, record.to_bucket, record.at, self._etag())
        self.records[record.sweep_id] = record
        return True

    async def record_shard(self, report: ShardReport, renewed: Mapping[str, Sequence[str]]) -> None:
        await asyncio.sleep(0)
        self.shards[(report.sweep_id, report.shard)] = report
        for sweep_id, ids in renewed.items():
            self.credits.setdefault(sweep_id, set()).update(ids)

    async def rates(self, since_bucket: str) -> list[SweepRate]:
        await asyncio.sleep(0)
        rates = []
        for sweep_id in sorted(s for s in self.records if s >= since_bucket):
            reports = [r for (s, _), r in self.shards.items() if s == sweep_id]
            counts = {name: sum(r.count(name) for r in reports) for name in SHARD_COUNTS}
            renewed = len(self.credits.get(sweep_id, ()))
            rates.append(SweepRate(self.records[sweep_id], len(reports), counts, renewed))
        return rates

    def woken(self, sweep_id: str) -> int:
        return sum(r.count("woken") for (s, _), r in self.shards.items() if s == sweep_id)

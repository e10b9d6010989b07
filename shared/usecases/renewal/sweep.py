"""The renewal sweep (timer): the due buckets of the schedule become shard messages."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final, Protocol

from shared.storage.renewal_schedule import RenewalSchedule, bucket_for, bucket_start
from shared.storage.renewal_sweeps import Checkpoint, ShardReport, SweepRecord
from shared.usecases.renewal.rules import BUCKET, RenewalRules
from shared.usecases.renewal.shards import Shard, group_entries, split_shards

log = logging.getLogger(__name__)

PURGE_LOOKBACK: Final = timedelta(hours=24)  # how far below the window a purge looks at most


class SweepLog(Protocol):
    """Port: the checkpoint and per-sweep records (``storage.renewal_sweeps.TableSweepLog``)."""

    async def checkpoint(self) -> Checkpoint:
        """The checkpoint (empty before the first sweep)."""
        ...

    async def claim(
        self, seen: Checkpoint, through: str, lease_until: datetime
    ) -> Checkpoint | None:
        """Claim buckets through ``through`` under ``seen``'s ETag; None if another sweep won."""
        ...

    async def finish(self, claimed: Checkpoint, record: SweepRecord) -> bool:
        """Move the checkpoint and store the sweep's record; False if the claim was lost."""
        ...

    async def record_shard(self, report: ShardReport, renewed: Mapping[str, Sequence[str]]) -> None:
        """Store a shard's report and credit renewals (sweep id -> deviceIds)."""
        ...


@dataclass(frozen=True, slots=True)
class SweepResult:
    """What a sweep did: the queue messages to send, and why it sent none if so."""

    sweep_id: str | None
    messages: tuple[str, ...] = ()
    devices: int = 0
    from_bucket: str | None = None
    note: str = ""


def sweep_range(checkpoint: Checkpoint, now: datetime, rules: RenewalRules) -> tuple[str, str]:
    """The buckets to read: after the checkpoint (at most ``catch_up`` back) through ``now``'s."""
    floor = bucket_for(now - rules.catch_up)
    start = floor
    if checkpoint.done is not None:
        start = max(floor, bucket_for(bucket_start(checkpoint.done) + BUCKET))
    return start, bucket_for(now)


def purge_buckets(checkpoint: Checkpoint, now: datetime, rules: RenewalRules) -> list[str]:
    """Buckets that left the catch-up window since the last sweep: never read again.

    At most ``PURGE_LOOKBACK`` of them after a long outage (older ones are left behind).
    """
    if checkpoint.done is None:
        return []
    floor = bucket_start(bucket_for(now - rules.catch_up))
    previous = bucket_start(bucket_for(bucket_start(checkpoint.done) - rules.catch_up))
    start = max(previous, floor - PURGE_LOOKBACK)
    count = int((floor - start) / BUCKET)
    return [bucket_for(start + i * BUCKET) for i in range(count)]


async def run_sweep(
    *, schedule: RenewalSchedule, sweeps: SweepLog, now: datetime, rules: RenewalRules
) -> SweepResult:
    """Read the due buckets once and return them as shard messages for the renewal queue.

    Raises StorageUnavailableError (the timer fires again; the claim's lease lets it redo).
    """
    seen = await sweeps.checkpoint()
    if seen.in_progress(now):
        log.info("renewal sweep skipped: buckets through %s are being swept", seen.claimed)
        return SweepResult(None, note="in progress")
    start, end = sweep_range(seen, now, rules)
    if start > end:
        log.info("renewal sweep skipped: buckets through %s already swept", seen.done)
        return SweepResult(None, note="already swept")
    claimed = await sweeps.claim(seen, end, now + rules.sweep_lease)
    if claimed is None:
        log.info("renewal sweep skipped: another sweep claimed buckets through %s", end)
        return SweepResult(None, note="claimed elsewhere")
    items = group_entries(await schedule.read_due(start, end))
    shards = split_shards(end, items, rules.shard_size)
    devices = len(items)
    old_buckets = purge_buckets(seen, now, rules)
    purges = [Shard(end, len(shards) + n, purge=b) for n, b in enumerate(old_buckets)]
    record = SweepRecord(end, now, start, end, devices, len(shards))
    if not await sweeps.finish(claimed, record):
        return SweepResult(None, note="claim lost")
    log.info(
        "renewal sweep %s: buckets %s..%s, %d devices in %d shards, %d buckets to purge",
        end, start, end, devices, len(shards), len(purges),
    )  # fmt: skip
    messages = tuple(s.to_json() for s in (*shards, *purges))
    return SweepResult(end, messages, devices, start)

"""The renewal sweep's own state on Table Storage: its checkpoint and what each sweep did.

Table ``renewalsweeps`` (three kinds of partition)::

    PartitionKey   RowKey          holds
    sweeps         ~cursor         the checkpoint: last bucket swept (done), the bucket a running
                                   sweep claimed and its lease; ETag-guarded
    sweeps         <sweep id>      one sweep: when, buckets from..to, devices due, shards
    w|<sweep id>   <shard, 5 dig>  one shard of that sweep: devices woken, skipped and why
    c|<sweep id>   <deviceId>      a device woken by that sweep that renewed afterwards

A sweep id is the last bucket it read (``YYYYMMDDHHMM``): the checkpoint makes every bucket
swept once, so ids are unique, and a sweep redone after a crash keeps its id (its rows are
rewritten, not doubled). ``~`` sorts after digits, so the cursor never shows up among sweeps.

The renewal rate of a sweep is ``count(c|<id>) / sum(woken of w|<id>)``: renewals are credited
per device (an idempotent upsert), so a device read several times after it renewed counts once.
Storage errors are :mod:`shared.storage.tables`' (``StorageUnavailableError`` is transient).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from shared.storage.tables import (
    EntityChangedError,
    EntityExistsError,
    MatchConditions,
    TableClient,
    UpdateMode,
    encode_key,
    read_entity,
    read_int,
    read_text,
    read_time,
    storage_errors,
    submit_batches,
    write_if_unchanged,
)

log = logging.getLogger(__name__)

SWEEPS_TABLE: Final = "renewalsweeps"
SWEEPS_PARTITION: Final = "sweeps"
CURSOR_ROW: Final = "~cursor"
SHARD_COUNTS: Final = (
    "woken", "renewed", "later", "stale", "gone", "failed", "released", "errors",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """Where the sweeps stand: ``done`` is the last bucket fully swept."""

    done: str | None = None
    claimed: str | None = None
    lease_until: datetime | None = None
    etag: str | None = field(default=None, compare=False)

    def in_progress(self, now: datetime) -> bool:
        """Whether another sweep holds a live lease on buckets after ``done``."""
        return (
            self.claimed is not None
            and self.claimed > (self.done or "")
            and self.lease_until is not None
            and self.lease_until > now
        )


@dataclass(frozen=True, slots=True)
class SweepRecord:
    """What one sweep read and enqueued."""

    sweep_id: str
    at: datetime
    from_bucket: str
    to_bucket: str
    devices: int
    shards: int


@dataclass(frozen=True, slots=True)
class ShardReport:
    """What one shard's worker did, by device: ``woken`` counts devices this sweep woke."""

    sweep_id: str
    shard: int
    devices: int
    counts: Mapping[str, int] = field(default_factory=dict)

    def count(self, name: str) -> int:
        """One of :data:`SHARD_COUNTS` (0 if absent)."""
        return self.counts.get(name, 0)


@dataclass(frozen=True, slots=True)
class SweepRate:
    """One sweep with what its shards reported and the renewals credited to it."""

    record: SweepRecord
    shards_reported: int
    counts: Mapping[str, int]
    renewed_after: int

    @property
    def woken(self) -> int:
        """Devices this sweep woke."""
        return self.counts.get("woken", 0)

    @property
    def rate(self) -> float | None:
        """Renewed after the wake / woken; None when the sweep woke nobody."""
        return self.renewed_after / self.woken if self.woken else None


def _record(entity: Mapping[str, Any]) -> SweepRecord:
    return SweepRecord(
        sweep_id=str(entity["RowKey"]),
        at=read_time(entity["at"]),
        from_bucket=str(entity["fromBucket"]),
        to_bucket=str(entity["toBucket"]),
        devices=read_int(entity.get("devices")),
        shards=read_int(entity.get("shards")),
    )


class TableSweepLog:
    """The checkpoint, sweep records, shard reports and renewal credits (renewalsweeps table)."""

    def __init__(self, table: TableClient) -> None:
        self._table = table

    async def checkpoint(self) -> Checkpoint:
        """The checkpoint (empty before the first sweep). Raises StorageUnavailableError."""
        e = await read_entity(
            self._table, SWEEPS_PARTITION, CURSOR_ROW, what="read sweep checkpoint"
        )
        if e is None:
            return Checkpoint()
        lease = e.get("leaseUntil")
        return Checkpoint(
            done=read_text(e, "done"),
            claimed=read_text(e, "claimed"),
            lease_until=read_time(lease) if lease is not None else None,
            etag=e.metadata["etag"],
        )

    async def claim(
        self, seen: Checkpoint, through: str, lease_until: datetime
    ) -> Checkpoint | None:
        """Claim buckets up to ``through`` under ``seen``'s ETag; None if another sweep won.

        Raises StorageUnavailableError.
        """
        entity = {
            "PartitionKey": SWEEPS_PARTITION,
            "RowKey": CURSOR_ROW,
            "done": seen.done or "",
            "claimed": through,
            "leaseUntil": lease_until,
        }
        try:
            meta = await write_if_unchanged(self._table, entity, seen.etag, what="claim sweep")
        except (EntityExistsError, EntityChangedError):
            return None
        return Checkpoint(seen.done, through, lease_until, str(meta["etag"]))

    async def finish(self, claimed: Checkpoint, record: SweepRecord) -> bool:
        """Move the checkpoint to ``record.to_bucket`` and store the record: one transaction.

        False when the claim was lost meanwhile (a sweep took over after the lease ran out).
        Raises StorageUnavailableError.
        """
        cursor = {
            "PartitionKey": SWEEPS_PARTITION,
            "RowKey": CURSOR_ROW,
            "done": record.to_bucket,
            "claimed": record.to_bucket,
            "leaseUntil": record.at,
        }
        row = {
            "PartitionKey": SWEEPS_PARTITION,
            "RowKey": record.sweep_id,
            "at": record.at,
            "fromBucket": record.from_bucket,
            "toBucket": record.to_bucket,
            "devices": record.devices,
            "shards": record.shards,
        }
        guard = {"etag": claimed.etag, "match_condition": MatchConditions.IfNotModified}
        try:
            await submit_batches(
                self._table,
                [("update", cursor, {"mode": UpdateMode.REPLACE, **guard}), ("upsert", row)],
            )
        except EntityChangedError:
            log.warning("sweep %s lost its claim before finishing", record.sweep_id)
            return False
        return True

    async def record_shard(self, report: ShardReport, renewed: Mapping[str, Sequence[str]]) -> None:
        """Store a shard's report and credit renewals: ``renewed`` maps sweep id -> deviceIds.

        Idempotent (upserts): a redelivered shard rewrites the same rows. Raises
        StorageUnavailableError.
        """
        row: dict[str, Any] = {
            "PartitionKey": "w|" + report.sweep_id,
            "RowKey": f"{report.shard:05d}",
            "devices": report.devices,
            **{name: report.count(name) for name in SHARD_COUNTS},
        }
        ops: list[tuple[Any, ...]] = [("upsert", row)]
        for sweep_id, device_ids in renewed.items():
            pk = "c|" + sweep_id
            ops.extend(
                ("upsert", {"PartitionKey": pk, "RowKey": encode_key(d)})
                for d in dict.fromkeys(device_ids)
            )
        await submit_batches(self._table, ops)

    async def rates(self, since_bucket: str) -> list[SweepRate]:
        """Every sweep from ``since_bucket`` on, oldest first, with its counts and renewals.

        Reads the sweeps partition, then each sweep's two small partitions (a devtool's query,
        never on a hot path). Raises StorageUnavailableError.
        """
        with storage_errors("read sweeps"):
            records = [
                _record(e)
                async for e in self._table.query_entities(
                    "PartitionKey eq @pk and RowKey ge @lo and RowKey lt @hi",
                    parameters={"pk": SWEEPS_PARTITION, "lo": since_bucket, "hi": "~"},
                )
            ]
        return [await self._rate(r) for r in records]

    async def _rate(self, record: SweepRecord) -> SweepRate:
        counts = dict.fromkeys(SHARD_COUNTS, 0)
        shards = renewed = 0
        with storage_errors("read sweep shards"):
            async for e in self._table.query_entities(
                "PartitionKey eq @pk", parameters={"pk": "w|" + record.sweep_id}
            ):
                shards += 1
                for name in SHARD_COUNTS:
                    counts[name] += read_int(e.get(name))
            async for _ in self._table.query_entities(
                "PartitionKey eq @pk",
                parameters={"pk": "c|" + record.sweep_id},
                select=["RowKey"],
            ):
                renewed += 1
        return SweepRate(record, shards, counts, renewed)

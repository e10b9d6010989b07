"""The renewal schedule: which devices are due for a wake-up push, indexed by time (renewals table).

    PartitionKey  due bucket ``YYYYMMDDHHMM``: the UTC start of a 5-minute bucket
    RowKey        encode_key(rawId) + "~" + deviceId

An entry holds nothing else: the sweep reads the due buckets (a PartitionKey range, never a full
scan) and the worker loads each device for its token, topic and budget anyway.

Only alert devices with a preview key are scheduled (a key expires; a VoIP token has none). A
renewal schedules the new due time but does not delete the previous entry: finding it would cost
a read on every renewal. The previous entry is *superseded*: :func:`is_current` tells the sweep to
skip it (the device's due bucket moved on) and the sweep deletes what it has read. Removing a
device unschedules it when its due time is known.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final, Protocol

from azure.data.tables import UpdateMode
from azure.data.tables.aio import TableClient

from shared.tables import (
    EntityNotFoundError,
    decode_key,
    encode_key,
    storage_errors,
    submit_batches,
)

log = logging.getLogger(__name__)

RENEWALS_TABLE: Final = "renewals"
BUCKET_MINUTES: Final = 5
_FORMAT: Final = "%Y%m%d%H%M"
_SEPARATOR: Final = "~"


def bucket_for(when: datetime) -> str:
    """The 5-minute UTC bucket holding ``when``, as ``YYYYMMDDHHMM``. Raises on a naive time."""
    if when.tzinfo is None:
        raise ValueError("bucket_for needs an aware datetime")
    t = when.astimezone(UTC)
    return t.replace(minute=t.minute - t.minute % BUCKET_MINUTES).strftime(_FORMAT)


def bucket_start(bucket: str) -> datetime:
    """The UTC start of a bucket. Raises ValueError for text that is not a bucket."""
    start = datetime.strptime(bucket, _FORMAT).replace(tzinfo=UTC)
    if len(bucket) != 12 or start.minute % BUCKET_MINUTES:
        raise ValueError(f"not a {BUCKET_MINUTES}-minute bucket: {bucket!r}")
    return start


def due_at(key_expires_at: datetime, lead: timedelta) -> datetime:
    """When a device with a key expiring at ``key_expires_at`` should be woken."""
    return key_expires_at - lead


def row_key(user_id: str, device_id: str) -> str:
    """The schedule RowKey of one device."""
    return encode_key(user_id) + _SEPARATOR + encode_key(device_id)


@dataclass(frozen=True, slots=True)
class ScheduleEntry:
    """One device due in one bucket."""

    bucket: str
    user_id: str
    device_id: str

    @classmethod
    def from_keys(cls, partition_key: str, row: str) -> ScheduleEntry:
        """Parse stored keys. Raises ValueError for a row this module did not write."""
        user, sep, device = row.rpartition(_SEPARATOR)
        if not sep:
            raise ValueError("not a schedule row")
        return cls(partition_key, decode_key(user), decode_key(device))


def is_current(entry: ScheduleEntry, key_expires_at: datetime | None, lead: timedelta) -> bool:
    """Whether ``entry`` is still the device's schedule (False: superseded by a renewal)."""
    return key_expires_at is not None and bucket_for(due_at(key_expires_at, lead)) == entry.bucket


class RenewalSchedule(Protocol):
    """The schedule port (``TableRenewalSchedule`` and the test fake)."""

    async def schedule(self, user_id: str, device_id: str, due: datetime) -> None:
        """Make the device due at ``due`` (idempotent)."""
        ...

    async def schedule_many(self, items: Sequence[tuple[str, str, datetime]]) -> None:
        """Make each (user, device) due at its time: one transaction per bucket and 100 rows."""
        ...

    async def unschedule(self, user_id: str, device_id: str, due: datetime) -> None:
        """Drop the device's entry for ``due`` (absent is fine)."""
        ...

    async def read_due(self, from_bucket: str, to_bucket: str) -> list[ScheduleEntry]:
        """Every entry in buckets ``from_bucket`` through ``to_bucket`` (inclusive)."""
        ...

    async def remove(self, entries: Sequence[ScheduleEntry]) -> None:
        """Delete entries the sweep has handled (absent ones are fine)."""
        ...


class TableRenewalSchedule:
    """The renewal schedule on Table Storage."""

    def __init__(self, table: TableClient) -> None:
        self._table = table

    async def schedule(self, user_id: str, device_id: str, due: datetime) -> None:
        """Upsert the device's entry in the bucket of ``due``. Raises StorageUnavailableError."""
        entity = {"PartitionKey": bucket_for(due), "RowKey": row_key(user_id, device_id)}
        with storage_errors("schedule renewal"):
            await self._table.upsert_entity(entity, mode=UpdateMode.REPLACE)

    async def schedule_many(self, items: Sequence[tuple[str, str, datetime]]) -> None:
        """Upsert many entries: devices due together share a bucket, so this batches well.

        Raises StorageUnavailableError.
        """
        # A transaction may not touch one entity twice.
        keys = dict.fromkeys((bucket_for(due), row_key(u, d)) for u, d, due in items)
        ops = [("upsert", {"PartitionKey": pk, "RowKey": rk}) for pk, rk in keys]
        await submit_batches(self._table, ops)

    async def unschedule(self, user_id: str, device_id: str, due: datetime) -> None:
        """Delete the device's entry in the bucket of ``due``. Raises StorageUnavailableError."""
        with storage_errors("unschedule renewal"):
            await self._table.delete_entity(bucket_for(due), row_key(user_id, device_id))

    async def read_due(self, from_bucket: str, to_bucket: str) -> list[ScheduleEntry]:
        """Entries of buckets ``from_bucket``..``to_bucket``: one PartitionKey range query.

        Raises ValueError for malformed buckets, StorageUnavailableError on an outage.
        """
        bucket_start(from_bucket)
        bucket_start(to_bucket)
        entries: list[ScheduleEntry] = []
        with storage_errors("read renewal schedule"):
            async for e in self._table.query_entities(
                "PartitionKey ge @lo and PartitionKey le @hi",
                parameters={"lo": from_bucket, "hi": to_bucket},
                select=["PartitionKey", "RowKey"],
            ):
                try:
                    entries.append(ScheduleEntry.from_keys(e["PartitionKey"], e["RowKey"]))
                except ValueError:
                    log.warning("skipping a malformed renewal row in bucket %s", e["PartitionKey"])
        return entries

    async def remove(self, entries: Sequence[ScheduleEntry]) -> None:
        """Delete handled entries, 100 per bucket transaction. Raises StorageUnavailableError."""
        ops = [
            ("delete", {"PartitionKey": e.bucket, "RowKey": row_key(e.user_id, e.device_id)})
            for e in entries
        ]
        try:
            await submit_batches(self._table, ops)
        except EntityNotFoundError:
            # A transaction fails whole on one missing row (unscheduled meanwhile): go one by one.
            for _, entity in ops:
                with storage_errors("remove renewal entry"):
                    await self._table.delete_entity(entity["PartitionKey"], entity["RowKey"])

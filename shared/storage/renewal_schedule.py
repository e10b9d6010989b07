"""The renewal schedule: which devices are due for a wake-up push, indexed by time (renewals table).

    PartitionKey  due bucket ``YYYYMMDDHHMM`` (the UTC start of a 5-minute bucket) + "-" + lane
    RowKey        pair_key(rawId, deviceId): encode_key(rawId) + "~" + encode_key(deviceId)

A bucket is spread over ``LANES`` partitions (the lane is a hash of the deviceId): every device
due in one 5 minutes lands in one bucket, and one partition takes about 2,000 entities/s in
Azure Table Storage (Azurite also scans a partition on every write). The sweep still reads a
bucket range with one PartitionKey range query.

An entry may carry an :class:`EntryState`: what the renewal worker needs to wake the device
without reading it (token, topic, environment, the background-push budget) and the device's ETag
when that was true. The worker claims a wake with a write under that ETag; if the device changed
since (it renewed, was removed, got a withdraw push), the write fails and the worker reads it.
Registration writes the state of the device it just wrote; the worker carries it forward.

Only alert devices with a preview key are scheduled (a key expires; a VoIP token has none). A
renewal schedules the new due time but does not delete the previous entry: finding it would cost
a read on every renewal. The previous entry is *superseded*: the worker skips it (the device
renewed after the entry was written). The sweep reads each bucket once and purges buckets that
have left its catch-up window. Removing a device unschedules it when its due time is known.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final, Protocol

from shared.storage.tables import (
    EntityNotFoundError,
    TableClient,
    UpdateMode,
    pair_key,
    read_times,
    split_pair_key,
    storage_errors,
    submit_batches,
    times_text,
)

if TYPE_CHECKING:
    from shared.domain.devices import Device

log = logging.getLogger(__name__)

RENEWALS_TABLE: Final = "renewals"
BUCKET_MINUTES: Final = 5
_FORMAT: Final = "%Y%m%d%H%M"
LANES: Final = 16


def partition_key(bucket: str, device_id: str) -> str:
    """The PartitionKey of a device's entry in ``bucket``: the bucket and the device's lane."""
    return f"{bucket}-{zlib.crc32(device_id.encode()) % LANES:x}"


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
    return pair_key(user_id, device_id)


@dataclass(frozen=True, slots=True)
class EntryState:
    """What an entry carries so the worker can wake the device without reading it.

    True of the device while its ETag is ``etag``; ``at`` is when it was taken. ``sent``: recent
    background pushes (the budget), ``wakes``: renewal pushes not followed by a renewal,
    ``wake_at`` / ``wake_sweep``: the last renewal push and the sweep that sent it.
    """

    token: str = field(repr=False)
    topic: str
    environment: str
    etag: str
    at: datetime
    sent: tuple[datetime, ...] = ()
    wakes: int = 0
    wake_at: datetime | None = None
    wake_sweep: str | None = None
    # What settling an APNs answer needs (shared.push.outcomes): a 200 clears a bad-token count, and
    # repeated BadDeviceToken answers count once per spacing. Without them a wake answered 200
    # left the count standing and the next stray BadDeviceToken deleted a device just proven good.
    bad_tokens: int = 0
    last_result: str | None = None
    last_result_at: datetime | None = None

    @classmethod
    def of(cls, device: Device, etag: str, at: datetime) -> EntryState:
        """What ``device`` (just read or written, with ``etag``) looks like to the worker."""
        recent = [t for t in device.background_sent if t > at - timedelta(hours=1)]
        return cls(
            token=device.token,
            topic=device.topic,
            environment=device.environment.value,
            etag=etag,
            at=at,
            sent=tuple(recent),
            wakes=device.unanswered_wakes,
            wake_at=device.wake_at,
            wake_sweep=device.wake_sweep,
            bad_tokens=device.bad_token_count,
            last_result=device.last_result,
            last_result_at=device.last_result_at,
        )

    def properties(self) -> dict[str, Any]:
        """The entity properties that store it."""
        return {
            "token": self.token,
            "topic": self.topic,
            "environment": self.environment,
            "etag": self.etag,
            "at": times_text([self.at]),
            "sent": times_text(self.sent),
            "wakes": self.wakes,
            "wakeAt": times_text([self.wake_at] if self.wake_at else []),
            "wakeSweep": self.wake_sweep or "",
            "badTokens": self.bad_tokens,
            "lastResult": self.last_result or "",
            "lastResultAt": times_text([self.last_result_at] if self.last_result_at else []),
        }

    @classmethod
    def from_properties(cls, entity: Mapping[str, Any]) -> EntryState | None:
        """The state stored in an entity, or None for an entry without one (or a damaged one)."""
        try:
            if not entity.get("etag"):
                return None
            wake_at = read_times(entity.get("wakeAt"))
            result_at = read_times(entity.get("lastResultAt"))
            return cls(
                token=str(entity["token"]),
                topic=str(entity["topic"]),
                environment=str(entity["environment"]),
                etag=str(entity["etag"]),
                at=read_times(str(entity["at"]))[0],
                sent=read_times(entity.get("sent")),
                wakes=int(entity.get("wakes") or 0),
                wake_at=wake_at[0] if wake_at else None,
                wake_sweep=str(entity.get("wakeSweep") or "") or None,
                bad_tokens=int(entity.get("badTokens") or 0),
                last_result=str(entity.get("lastResult") or "") or None,
                last_result_at=result_at[0] if result_at else None,
            )
        except (KeyError, ValueError, IndexError, TypeError):
            return None


@dataclass(frozen=True, slots=True)
class ScheduleEntry:
    """One device due in one bucket, with what it carries (if anything)."""

    bucket: str
    user_id: str
    device_id: str
    state: EntryState | None = field(default=None, compare=False)

    @classmethod
    def from_keys(cls, partition: str, row: str) -> ScheduleEntry:
        """Parse stored keys. Raises ValueError for a row this module did not write."""
        user, device = split_pair_key(row)
        bucket = partition.partition("-")[0]
        bucket_start(bucket)
        return cls(bucket, user, device)

    @property
    def partition(self) -> str:
        """The entry's PartitionKey."""
        return partition_key(self.bucket, self.device_id)

    @property
    def row(self) -> str:
        """The entry's RowKey."""
        return row_key(self.user_id, self.device_id)

    def entity(self) -> dict[str, Any]:
        """The entity that stores this entry."""
        props = self.state.properties() if self.state is not None else {}
        return {"PartitionKey": self.partition, "RowKey": self.row, **props}


class RenewalSchedule(Protocol):
    """The schedule port (``TableRenewalSchedule`` and the test fake)."""

    async def schedule(
        self, user_id: str, device_id: str, due: datetime, state: EntryState | None = None
    ) -> None:
        """Make the device due at ``due`` (idempotent), carrying ``state`` if given."""
        ...

    async def put_many(self, entries: Sequence[ScheduleEntry]) -> None:
        """Write entries (replacing any with the same keys): one transaction per bucket and 100."""
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

    async def schedule(
        self, user_id: str, device_id: str, due: datetime, state: EntryState | None = None
    ) -> None:
        """Upsert the device's entry in the bucket of ``due``. Raises StorageUnavailableError."""
        entity = ScheduleEntry(bucket_for(due), user_id, device_id, state).entity()
        with storage_errors("schedule renewal"):
            await self._table.upsert_entity(entity, mode=UpdateMode.REPLACE)

    async def put_many(self, entries: Sequence[ScheduleEntry]) -> None:
        """Upsert many entries: devices due together share a bucket, so this batches well.

        Raises StorageUnavailableError.
        """
        # A transaction may not touch one entity twice: the last entry for a key wins.
        unique = {(e.partition, e.row): e for e in entries}
        ops = [("upsert", e.entity(), {"mode": UpdateMode.REPLACE}) for e in unique.values()]
        await submit_batches(self._table, ops)

    async def unschedule(self, user_id: str, device_id: str, due: datetime) -> None:
        """Delete the device's entry in the bucket of ``due``. Raises StorageUnavailableError."""
        entry = ScheduleEntry(bucket_for(due), user_id, device_id)
        with storage_errors("unschedule renewal"):
            await self._table.delete_entity(entry.partition, entry.row)

    async def read_due(self, from_bucket: str, to_bucket: str) -> list[ScheduleEntry]:
        """Entries of buckets ``from_bucket``..``to_bucket`` with what they carry: one
        PartitionKey range query over the buckets' lanes.

        Raises ValueError for malformed buckets, StorageUnavailableError on an outage.
        """
        bucket_start(from_bucket)
        bucket_start(to_bucket)
        return await self._query(
            "PartitionKey ge @lo and PartitionKey le @hi",
            {"lo": from_bucket + "-", "hi": to_bucket + "-~"},
        )

    async def _query(self, text: str, parameters: dict[str, str]) -> list[ScheduleEntry]:
        entries: list[ScheduleEntry] = []
        with storage_errors("read renewal schedule"):
            async for e in self._table.query_entities(text, parameters=parameters):
                try:
                    entry = ScheduleEntry.from_keys(e["PartitionKey"], e["RowKey"])
                except ValueError:
                    log.warning("skipping a malformed renewal row in bucket %s", e["PartitionKey"])
                    continue
                entries.append(replace(entry, state=EntryState.from_properties(e)))
        return entries

    async def remove(self, entries: Sequence[ScheduleEntry]) -> None:
        """Delete handled entries, 100 per bucket transaction. Raises StorageUnavailableError."""
        ops = [("delete", {"PartitionKey": e.partition, "RowKey": e.row}) for e in entries]
        try:
            await submit_batches(self._table, ops)
        except EntityNotFoundError:
            # A transaction fails whole on one missing row (unscheduled meanwhile): go one by one.
            for _, entity in ops:
                with storage_errors("remove renewal entry"):
                    await self._table.delete_entity(entity["PartitionKey"], entity["RowKey"])

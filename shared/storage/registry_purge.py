"""Purge of dead registrations: devices not renewed for ``DEVICE_STALE_DAYS``, without a full scan.

A registration lives until it is removed, reported dead by APNs, or *stale*: its app has not
registered or renewed it for ``DEVICE_STALE_DAYS`` (uninstalled, or a phone in a drawer).
Table Storage has no TTL and no secondary index, and the devices table is partitioned by user,
so finding old rows there would be a full scan. Instead, a small index says on which UTC days
each device was (re-)registered (table ``devicedays``)::

    PartitionKey  UTC day ``YYYYMMDD`` of a registration or renewal
    RowKey        pair_key(rawId, deviceId): encode_key(rawId) + "~" + encode_key(deviceId)

- :meth:`TableDeviceDays.note` writes today's entry of a device, once a day per process (an app
  renews every ~45 minutes; only the first renewal of the day pays the write). It cannot share a
  transaction with the device row: a transaction is limited to one partition of one table, and
  the device row's partition is its user's. So the first registration of the day in a process
  costs one more storage round trip (sent concurrently with the renewal-schedule write).
- :func:`purge_stale_devices` reads the entries of the days before the cutoff (one PartitionKey
  range query, oldest first, a page at a time), and for each removes the device *only if it was
  not renewed since the cutoff* (``remove_if_registered_before``: ETag-guarded, so a renewal
  racing with the purge keeps the device), drops its renewal-schedule entry, then deletes the
  entries it handled (batched per day). A device renewed since the cutoff has a newer entry that
  a later purge will look at.

Cost of a purge: one read per expired entry (about the number of devices that were active on the
expiring day) plus the deletes; the devices that are still renewing are never scanned. Devices
registered before this index existed are not in it (no backfill is done).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final, Protocol

from shared.domain.devices import DeviceKind
from shared.settings import Settings
from shared.storage.devices import DeviceRegistry
from shared.storage.renewal_schedule import RenewalSchedule, due_at
from shared.storage.tables import (
    EntityNotFoundError,
    TableClient,
    UpdateMode,
    pair_key,
    split_pair_key,
    storage_errors,
    submit_batches,
)

log = logging.getLogger(__name__)

DAYS_TABLE: Final = "devicedays"
PAGE: Final = 500  # index entries handled per round of the purge
CONCURRENCY: Final = 16  # device removals in flight at once
DEFAULT_BUDGET: Final = timedelta(minutes=2)  # the purge timer shares functionTimeout (5 min)
_FORMAT: Final = "%Y%m%d"

Clock = Callable[[], datetime]


def day_key(when: datetime) -> str:
    """The index partition of the UTC day holding ``when``. Raises ValueError on a naive time."""
    if when.tzinfo is None:
        raise ValueError("day_key needs an aware datetime")
    return when.astimezone(UTC).strftime(_FORMAT)


def index_row(user_id: str, device_id: str) -> str:
    """The index RowKey of one device of one user."""
    return pair_key(user_id, device_id)


@dataclass(frozen=True, slots=True)
class DayEntry:
    """One device (re-)registered on one day."""

    day: str
    user_id: str
    device_id: str

    @classmethod
    def from_keys(cls, partition_key: str, row_key: str) -> DayEntry:
        """Parse stored keys. Raises ValueError for a row this module did not write."""
        if len(partition_key) != 8 or not partition_key.isdigit():
            raise ValueError("not a device-day row")
        user, device = split_pair_key(row_key)
        return cls(partition_key, user, device)


@dataclass(frozen=True, slots=True)
class RegistryPurgeReport:
    """What one purge did: index entries read, devices removed, and whether it finished."""

    entries: int = 0
    removed: int = 0
    finished: bool = True


class DeviceDays(Protocol):
    """The device-day index (``TableDeviceDays`` and the test fake)."""

    async def note(self, user_id: str, device_id: str, now: datetime) -> None:
        """Record that the device was (re-)registered on the day of ``now``."""
        ...

    async def read_before(self, day: str, limit: int) -> list[DayEntry]:
        """At most ``limit`` entries of days before ``day``, oldest first."""
        ...

    async def remove(self, entries: Sequence[DayEntry]) -> None:
        """Delete handled entries (absent ones are fine)."""
        ...


class TableDeviceDays:
    """:class:`DeviceDays` on Table Storage; remembers today's notes per process."""

    def __init__(self, table: TableClient) -> None:
        self._table = table
        self._noted: tuple[str, set[str]] = ("", set())

    async def note(self, user_id: str, device_id: str, now: datetime) -> None:
        """Upsert today's entry unless this process wrote it already today.

        Raises StorageUnavailableError.
        """
        day, seen = self._noted
        today = day_key(now)
        if day != today:
            seen = set()
            self._noted = (today, seen)
        row = index_row(user_id, device_id)
        if row in seen:
            return
        with storage_errors("note device day"):
            await self._table.upsert_entity(
                {"PartitionKey": today, "RowKey": row}, mode=UpdateMode.REPLACE
            )
        seen.add(row)

    async def read_before(self, day: str, limit: int) -> list[DayEntry]:
        """One PartitionKey range query (days before ``day``), first ``limit`` entries.

        Raises ValueError for a malformed day, StorageUnavailableError on an outage.
        """
        datetime.strptime(day, _FORMAT)
        entries: list[DayEntry] = []
        with storage_errors("read device days"):
            async for e in self._table.query_entities(
                "PartitionKey lt @day",
                parameters={"day": day},
                select=["PartitionKey", "RowKey"],
                results_per_page=min(limit, 1000),
            ):
                try:
                    entries.append(DayEntry.from_keys(e["PartitionKey"], e["RowKey"]))
                except ValueError:
                    log.warning("skipping a malformed device-day row on %s", e["PartitionKey"])
                if len(entries) >= limit:
                    break
        return entries

    async def remove(self, entries: Sequence[DayEntry]) -> None:
        """Delete entries, 100 per day transaction. Raises StorageUnavailableError."""
        ops = [
            ("delete", {"PartitionKey": e.day, "RowKey": index_row(e.user_id, e.device_id)})
            for e in entries
        ]
        try:
            await submit_batches(self._table, ops)
        except EntityNotFoundError:
            # One missing row fails its whole transaction (a purge that stopped half-way).
            for _, entity in ops:
                with storage_errors("remove device day"):
                    # A single delete of a missing entity succeeds (the SDK ignores its 404).
                    await self._table.delete_entity(entity["PartitionKey"], entity["RowKey"])


async def purge_stale_devices(
    days: DeviceDays,
    registry: DeviceRegistry,
    schedule: RenewalSchedule,
    *,
    clock: Clock,
    stale_after: timedelta,
    renewal_lead: timedelta,
    budget: timedelta = DEFAULT_BUDGET,
    page: int = PAGE,
) -> RegistryPurgeReport:
    """Remove devices not (re-)registered for ``stale_after``, found through the day index.

    Stops between pages once ``budget`` has passed on ``clock``; what is left waits for the
    next purge. Raises the stores' storage errors (the next run starts over where this stopped).
    """
    started = clock()
    cutoff = started - stale_after
    purge = _Purge(registry, schedule, cutoff, renewal_lead)
    before = day_key(cutoff)  # whole days before the cutoff's day: all older than the cutoff
    entries = removed = 0
    while True:
        batch = await days.read_before(before, page)
        removed += await purge.entries(batch)
        await days.remove(batch)
        entries += len(batch)
        if len(batch) < page:
            break
        if clock() - started >= budget:
            log.warning("registry purge stopped after %d entries: time budget spent", entries)
            return RegistryPurgeReport(entries, removed, finished=False)
    log.info("registry purge: %d devices removed, %d day entries read", removed, entries)
    return RegistryPurgeReport(entries, removed)


@dataclass(frozen=True, slots=True)
class _Purge:
    """One purge run's collaborators and cutoff."""

    registry: DeviceRegistry
    schedule: RenewalSchedule
    cutoff: datetime
    lead: timedelta

    async def entries(self, entries: Sequence[DayEntry]) -> int:
        """Handle a page of index entries; how many devices were removed."""
        # One look per (user, device): its other old days say nothing new.
        unique = list(dict.fromkeys((e.user_id, e.device_id) for e in entries))
        limit = asyncio.Semaphore(CONCURRENCY)

        async def one(user_id: str, device_id: str) -> bool:
            async with limit:
                return await self.device(user_id, device_id)

        return sum(await asyncio.gather(*(one(u, d) for u, d in unique)))

    async def device(self, user_id: str, device_id: str) -> bool:
        """Remove one device if it was not renewed after the cutoff; True if it was removed."""
        gone = await self.registry.remove_if_registered_before(user_id, device_id, self.cutoff)
        if gone is None:
            return False
        if gone.kind is DeviceKind.ALERT and gone.key_expires_at is not None:
            due = due_at(gone.key_expires_at, self.lead)
            await self.schedule.unschedule(user_id, device_id, due)
        log.info("device %s purged: not renewed since %s", device_id, gone.renewed_at.date())
        return True


async def purge_registrations(
    days: DeviceDays,
    registry: DeviceRegistry,
    schedule: RenewalSchedule,
    settings: Settings,
    clock: Clock,
) -> RegistryPurgeReport:
    """The ``purge`` timer's step: :func:`purge_stale_devices` with ``DEVICE_STALE_DAYS``."""
    return await purge_stale_devices(
        days,
        registry,
        schedule,
        clock=clock,
        stale_after=timedelta(days=settings.device_stale_days),
        renewal_lead=timedelta(minutes=settings.renewal_lead_minutes),
    )

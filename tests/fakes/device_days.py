"""The device-day index (``shared.storage.registry_purge.TableDeviceDays``) in memory.

Entries read back oldest day first and, within a day, in the adapter's key order; a malformed
day is refused as the adapter refuses it. tests/integration/test_device_days_table.py holds it
and the adapter to the same contract.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime

from shared.storage.registry_purge import DayEntry, day_key, index_row


class FakeDeviceDays:
    """The devicedays table in memory; records which days were read."""

    def __init__(self) -> None:
        self.rows: set[DayEntry] = set()
        self.reads: list[str] = []

    async def note(self, user_id: str, device_id: str, now: datetime) -> None:
        await asyncio.sleep(0)
        self.rows.add(DayEntry(day_key(now), user_id, device_id))

    async def read_before(self, day: str, limit: int) -> list[DayEntry]:
        await asyncio.sleep(0)
        datetime.strptime(day, "%Y%m%d")  # the adapter's check: ValueError for a malformed day
        self.reads.append(day)
        ordered = sorted(self.rows, key=lambda e: (e.day, index_row(e.user_id, e.device_id)))
        return [e for e in ordered if e.day < day][:limit]

    async def remove(self, entries: Sequence[DayEntry]) -> None:
        await asyncio.sleep(0)
        self.rows.difference_update(entries)

"""The renewal schedule (``shared.storage.renewal_schedule``) in memory.

Entries replace entries with the same (bucket, user, device), the state an entry carries reads
back as the table stores it, buckets are checked as the adapter checks them.
tests/integration/test_device_store.py holds it and the adapter to the same contract.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime

from shared.storage.renewal_schedule import EntryState, ScheduleEntry, bucket_for, bucket_start


class FakeRenewalSchedule:
    """The renewals table in memory: bucket -> set of (user, device)."""

    def __init__(self) -> None:
        self.buckets: dict[str, set[tuple[str, str]]] = {}
        self.states: dict[tuple[str, str, str], EntryState | None] = {}

    async def schedule(
        self, user_id: str, device_id: str, due: datetime, state: EntryState | None = None
    ) -> None:
        await asyncio.sleep(0)
        self._put(ScheduleEntry(bucket_for(due), user_id, device_id, state))

    def _put(self, e: ScheduleEntry) -> None:
        self.buckets.setdefault(e.bucket, set()).add((e.user_id, e.device_id))
        # Through the entity's properties, as the table keeps it (an empty ETag reads as none).
        state = EntryState.from_properties(e.state.properties()) if e.state else None
        self.states[(e.bucket, e.user_id, e.device_id)] = state

    def _drop(self, bucket: str, user_id: str, device_id: str) -> None:
        self.buckets.get(bucket, set()).discard((user_id, device_id))
        self.states.pop((bucket, user_id, device_id), None)

    async def put_many(self, entries: Sequence[ScheduleEntry]) -> None:
        await asyncio.sleep(0)
        for e in entries:
            self._put(e)

    async def unschedule(self, user_id: str, device_id: str, due: datetime) -> None:
        await asyncio.sleep(0)
        self._drop(bucket_for(due), user_id, device_id)

    async def read_due(self, from_bucket: str, to_bucket: str) -> list[ScheduleEntry]:
        await asyncio.sleep(0)
        bucket_start(from_bucket)
        bucket_start(to_bucket)
        return [
            ScheduleEntry(bucket, user, device, self.states.get((bucket, user, device)))
            for bucket in sorted(self.buckets)
            if from_bucket <= bucket <= to_bucket
            for user, device in sorted(self.buckets[bucket])
        ]

    async def remove(self, entries: Sequence[ScheduleEntry]) -> None:
        await asyncio.sleep(0)
        for e in entries:
            self._drop(e.bucket, e.user_id, e.device_id)

    def entries(self) -> list[ScheduleEntry]:
        """Every entry, in bucket order."""
        return [
            ScheduleEntry(bucket, user, device)
            for bucket in sorted(self.buckets)
            for user, device in sorted(self.buckets[bucket])
        ]

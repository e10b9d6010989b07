"""The delivery log (``shared.storage.deliveries``) in memory.

``FakeDeliveries`` keeps the adapter's rules: a claim is created once and changed only under its
ETag, a tombstone is per message, history is oldest claim first, and the purge walks the same
per-day index (a (user, thread) is indexed on each day it is claimed or tombstoned; a purge walks
the days ``days_to_purge`` names and removes, in each partition indexed then, whatever was
claimed before the cutoff). tests/integration/test_deliveries_table.py holds it and the adapter
to the same contract.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import replace
from datetime import date, datetime, timedelta

from shared.storage.deliveries import (
    ClaimSet,
    ClaimVerdict,
    DeliveryKey,
    DeliveryRecord,
    DeviceTarget,
    MessageState,
    Outcome,
    PurgeReport,
    days_to_purge,
    new_claim,
    verdict,
)


class FakeDeliveries:
    """The delivery log in a dict, with the table store's claim and ETag rules."""

    def __init__(self) -> None:
        self.rows: dict[tuple[DeliveryKey, str], DeliveryRecord] = {}
        self.tombstones: dict[tuple[str, str, str], datetime] = {}
        self.state_reads = 0
        self.index: dict[date, set[tuple[str, str]]] = {}
        self.cursor: date | None = None
        self._etags = itertools.count(1)

    def _touch_index(self, user_id: str, thread_id: str, at: datetime) -> None:
        self.index.setdefault(at.date(), set()).add((user_id, thread_id))

    def _stamp(self, record: DeliveryRecord) -> DeliveryRecord:
        stamped = replace(record, etag=str(next(self._etags)))
        self.rows[(record.key, record.device.device_id)] = stamped
        return stamped

    async def claim(
        self,
        key: DeliveryKey,
        devices: Sequence[DeviceTarget],
        *,
        now: datetime,
        lease: timedelta,
        event_id: str,
    ) -> ClaimSet:
        claimed, done, busy = [], [], []
        self._touch_index(key.user_id, key.thread_id, now)
        for d in devices:
            prior = self.rows.get((key, d.device_id))
            what = verdict(prior, now)
            if prior is not None and what is ClaimVerdict.DONE:
                done.append(prior)
            elif prior is not None and what is ClaimVerdict.IN_FLIGHT:
                busy.append(prior)
            else:
                claim = new_claim(key, d, now=now, lease=lease, event_id=event_id, previous=prior)
                claimed.append(self._stamp(claim))
        return ClaimSet(tuple(claimed), tuple(done), tuple(busy))

    async def complete(
        self, results: Sequence[tuple[DeliveryRecord, Outcome]], now: datetime
    ) -> None:
        for record, outcome in results:
            current = self.rows.get((record.key, record.device.device_id))
            if current is not None and current.etag == record.etag:
                self._stamp(record.with_outcome(outcome, now))

    async def message_state(self, user_id: str, thread_id: str, message_id: str) -> MessageState:
        self.state_reads += 1
        return MessageState(self.tombstones.get((user_id, thread_id, message_id)))

    async def mark_deleted(
        self, user_id: str, thread_id: str, message_id: str, *, at: datetime, event_id: str
    ) -> None:
        self.tombstones[(user_id, thread_id, message_id)] = at
        self._touch_index(user_id, thread_id, at)

    async def history(self, user_id: str, thread_id: str, message_id: str) -> list[DeliveryRecord]:
        records = [
            r
            for (k, _), r in self.rows.items()
            if (k.user_id, k.thread_id, k.message_id) == (user_id, thread_id, message_id)
        ]
        return sorted(records, key=lambda r: (r.claimed_at, r.key.kind, r.device.device_id))

    async def purge(self, *, now: datetime, retention: timedelta) -> PurgeReport:
        cutoff = now - retention
        days = records = index_rows = 0
        for day in days_to_purge(self.cursor, now, retention):
            partitions = self.index.pop(day, set())
            old = [
                k
                for k, r in self.rows.items()
                if (k[0].user_id, k[0].thread_id) in partitions and r.claimed_at < cutoff
            ]
            dead = [
                k for k, at in self.tombstones.items() if (k[0], k[1]) in partitions and at < cutoff
            ]
            for k in old:
                del self.rows[k]
            for t in dead:
                del self.tombstones[t]
            days, records, index_rows = (
                days + 1,
                records + len(old) + len(dead),
                index_rows + len(partitions),
            )
            self.cursor = day
        return PurgeReport(days=days, records=records, index_rows=index_rows)

"""The delivery log (``shared.storage.deliveries``) in memory."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta

from shared.storage.deliveries import (
    ClaimSet,
    ClaimVerdict,
    DeliveryKey,
    DeliveryRecord,
    DeviceTarget,
    MessageState,
    Outcome,
    PurgeReport,
    new_claim,
    verdict,
)


class FakeDeliveries:
    """The delivery log in a dict, with the table store's claim and ETag rules."""

    def __init__(self) -> None:
        self.rows: dict[tuple[DeliveryKey, str], DeliveryRecord] = {}
        self.tombstones: dict[tuple[str, str, str], datetime] = {}
        self.state_reads = 0
        self._etags = itertools.count(1)

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

    async def history(self, user_id: str, thread_id: str, message_id: str) -> list[DeliveryRecord]:
        return [
            r
            for (k, _), r in self.rows.items()
            if (k.user_id, k.thread_id, k.message_id) == (user_id, thread_id, message_id)
        ]

    async def purge(self, *, now: datetime, retention: timedelta) -> PurgeReport:
        old = [k for k, r in self.rows.items() if r.claimed_at < now - retention]
        for k in old:
            del self.rows[k]
        return PurgeReport(records=len(old))

"""The identities table (``shared.storage.identities.TableIdentityStore``) in memory.

Keeps Table Storage's concurrency rules (create fails on an existing row, conditional writes
fail on a stale ETag) and yields to the event loop on every call, so concurrent callers
interleave the way they do against real storage. tests/integration/test_identities_table.py
holds it and the adapter to the same contract.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import replace
from datetime import datetime

from shared.usecases.access_tokens import IdentityRecord


class FakeIdentityStore:
    """The identities table in memory, with ETag and create-conflict semantics."""

    def __init__(self) -> None:
        self.rows: dict[str, IdentityRecord] = {}
        self._etags = itertools.count(1)
        self.calls = 0

    async def _tick(self) -> None:
        self.calls += 1
        await asyncio.sleep(0)

    def _tag(self) -> str:
        return f'W/"{next(self._etags)}"'

    async def get(self, caller_key: str) -> IdentityRecord | None:
        await self._tick()
        return self.rows.get(caller_key)

    async def reserve(self, caller_key: str, now: datetime) -> IdentityRecord | None:
        await self._tick()
        if caller_key in self.rows:
            return None
        record = IdentityRecord(caller_key, None, now, self._tag())
        self.rows[caller_key] = record
        return record

    def _current(self, record: IdentityRecord) -> bool:
        row = self.rows.get(record.caller_key)
        return row is not None and row.etag == record.etag

    async def take_over(self, record: IdentityRecord, now: datetime) -> IdentityRecord | None:
        await self._tick()
        if not self._current(record):
            return None
        new = replace(record, acs_user_id=None, reserved_at=now, etag=self._tag())
        self.rows[record.caller_key] = new
        return new

    async def fill_in(self, record: IdentityRecord, acs_user_id: str) -> IdentityRecord | None:
        await self._tick()
        if not self._current(record):
            return None
        new = replace(self.rows[record.caller_key], acs_user_id=acs_user_id, etag=self._tag())
        self.rows[record.caller_key] = new
        return new

    async def release(self, record: IdentityRecord) -> None:
        await self._tick()
        if self._current(record):
            del self.rows[record.caller_key]

    async def save_rate(
        self, record: IdentityRecord, tokens: float, at: datetime
    ) -> IdentityRecord | None:
        await self._tick()
        if not self._current(record):
            return None
        new = replace(
            self.rows[record.caller_key], rate_tokens=tokens, rate_at=at, etag=self._tag()
        )
        self.rows[record.caller_key] = new
        return new

"""In-memory fakes for the token issuer's ports: the identities table and the ACS Identity API.

``FakeIdentityStore`` keeps Table Storage's concurrency rules (create fails on an existing row,
conditional writes fail on a stale ETag) and yields to the event loop on every call, so
concurrent callers interleave the way they do against real storage.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from shared.acs.identity import AcsToken, AcsUnavailableError
from shared.usecases.access_tokens import IdentityRecord


class FakeClock:
    """A settable clock (UTC)."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 1, 5, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


async def no_sleep(_seconds: float) -> None:
    """Yield to other tasks without waiting (tests never sleep on the clock)."""
    await asyncio.sleep(0)


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


@dataclass
class FakeAcs:
    """The ACS Identity API in memory: counts identities, can fail or stall a creation."""

    endpoint: str = "https://fake.communication.azure.com"
    live: set[str] = field(default_factory=set)
    created: int = 0
    deleted: list[str] = field(default_factory=list)
    issued: list[tuple[str, tuple[str, ...], int]] = field(default_factory=list)
    fail_create: bool = False
    hold: asyncio.Event | None = None  # creation waits for it (a stalled ACS call)

    async def create_identity(self) -> str:
        await asyncio.sleep(0)
        if self.fail_create:
            raise AcsUnavailableError("ACS POST /identities did not succeed: 503")
        self.created += 1
        raw_id = f"8:acs:fake_{self.created:08d}"
        self.live.add(raw_id)
        hold, self.hold = self.hold, None
        if hold is not None:
            await hold.wait()
        await asyncio.sleep(0)
        return raw_id

    async def issue_token(self, user_id: str, scopes: Sequence[str], minutes: int) -> AcsToken:
        await asyncio.sleep(0)
        self.issued.append((user_id, tuple(scopes), minutes))
        return AcsToken(f"token-for-{user_id}", "2026-01-06T12:00:00Z")

    async def delete_identity(self, user_id: str) -> None:
        await asyncio.sleep(0)
        self.live.discard(user_id)
        self.deleted.append(user_id)

"""In-memory fakes for the token issuer: a clock and the ACS Identity API (the identities
table's fake is :mod:`tests.fakes.identities`)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from shared.acs.identity import AcsToken, AcsUnavailableError


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

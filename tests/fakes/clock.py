"""A UTC clock and a sleep that tests move by hand: tests never wait for the wall clock."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
"""The fake clock's default start."""


class FakeClock:
    """A clock (a ``Callable[[], datetime]``) that moves only when a test moves it."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float = 0.0, **delta: float) -> None:
        """Move on by ``seconds`` and any other ``timedelta`` fields (``minutes=5``)."""
        self.now += timedelta(seconds=seconds, **delta)


async def no_sleep(_seconds: float) -> None:
    """Yield to other tasks without waiting (tests never sleep on the clock)."""
    await asyncio.sleep(0)

"""The per-device background push budget, shared by renewal wakes and withdraw pushes.

Apple ("Pushing background updates to your App"): background pushes are low priority and
throttled; "don't try to send more than two or three per hour". Every background push a device
gets (a renewal wake, a withdraw on delete) is drawn from one budget: at most ``max_per_hour`` in
any hour, at least ``min_spacing`` apart (``RENEWAL_MAX_PER_HOUR``,
``RENEWAL_MIN_SPACING_MINUTES``). The device row keeps its recent pushes
(``shared.storage.devices.BACKGROUND_KEEP``); this module only decides.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from shared.settings import Settings

HOUR: Final = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class BackgroundBudget:
    """How many background pushes a device may get: per hour, and how far apart."""

    max_per_hour: int
    min_spacing: timedelta

    @classmethod
    def from_settings(cls, s: Settings) -> BackgroundBudget:
        """The budget as configured (``RENEWAL_MAX_PER_HOUR``, ``RENEWAL_MIN_SPACING_MINUTES``)."""
        return cls(s.renewal_max_per_hour, timedelta(minutes=s.renewal_min_spacing_minutes))

    def allows(self, sent: Sequence[datetime], now: datetime) -> bool:
        """Whether one more background push fits at ``now`` after those ``sent``."""
        return background_budget_allows(
            sent, now, max_per_hour=self.max_per_hour, min_spacing=self.min_spacing
        )

    def next_at(self, sent: Sequence[datetime], now: datetime) -> datetime:
        """The earliest time at or after ``now`` when one more push fits."""
        return next_background_at(
            sent, now, max_per_hour=self.max_per_hour, min_spacing=self.min_spacing
        )


def spend(sent: Sequence[datetime], now: datetime) -> tuple[datetime, ...]:
    """The pushes the budget still counts after one more at ``now`` (the last hour's)."""
    return (*[t for t in sent if t > now - HOUR], now)


def background_budget_allows(
    sent: Sequence[datetime], now: datetime, *, max_per_hour: int, min_spacing: timedelta
) -> bool:
    """Whether one more background push fits the device's budget at ``now``."""
    recent = [t for t in sent if now - HOUR < t <= now]
    if len(recent) >= max_per_hour:
        return False
    return not recent or now - max(recent) >= min_spacing


def next_background_at(
    sent: Sequence[datetime], now: datetime, *, max_per_hour: int, min_spacing: timedelta
) -> datetime:
    """The earliest time at or after ``now`` when the budget allows one more background push.

    The inverse of :func:`background_budget_allows`.
    """
    recent = sorted(t for t in sent if now - HOUR < t <= now)
    candidates = [now]
    if recent:
        candidates.append(recent[-1] + min_spacing)
    if len(recent) >= max_per_hour:
        candidates.append(recent[-max_per_hour] + HOUR)
    return max(candidates)

"""Quiet hours: a user's daily window, in their own time zone, when alerts make no noise.

A window is a start and an end wall-clock time (``"22:00"`` to ``"07:00"``) in an IANA time zone
(``"Europe/Berlin"``). It is evaluated on the wall clock of that zone at the instant asked about
(:mod:`zoneinfo`), so it follows daylight-saving changes and a user who moves simply sends their
new zone. A start later than the end crosses midnight; start and end may not be equal.

During quiet hours chat alerts are still delivered, but ``interruption-level: passive`` (iOS 15+:
"added to the notification list without lighting up the screen or playing a sound", Apple's
UNNotificationInterruptionLevel) and without ``sound`` (so older iOS, which ignores the level, is
silent too). Calls still ring unless the user chose ``"calls": "silent"``.

Raises :class:`InvalidQuietHoursError` (400 naming the field) for a window that cannot be used.
"""

from __future__ import annotations

import enum
import functools
import logging
import re
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, time
from typing import Any, Final

from shared.errors import InvalidInputError

log = logging.getLogger(__name__)

_CLOCK: Final = re.compile(r"([01]\d|2[0-3]):([0-5]\d)")
_ZONE: Final = re.compile(r"[A-Za-z0-9_+\-/]{1,64}")


class InvalidQuietHoursError(InvalidInputError):
    """A quiet-hours field is missing or malformed (the edge answers 400 with the field)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(reason, field=f"quietHours.{field}" if field else "quietHours")


class CallsInQuietHours(enum.StrEnum):
    """What an incoming call does during quiet hours."""

    RING = "ring"  # the default: a call is not a chat message
    SILENT = "silent"  # no VoIP push at all (PushKit requires every VoIP push to ring)


@functools.cache
def known_zones() -> frozenset[str]:
    """Every IANA zone name this process can load (read once: it scans the zone files)."""
    return frozenset(zoneinfo.available_timezones())


@functools.cache
def _zone(name: str) -> zoneinfo.ZoneInfo | None:
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return None


@dataclass(frozen=True, slots=True)
class QuietHours:
    """A daily window ``[start, end)`` on the wall clock of ``time_zone``."""

    start: time
    end: time
    time_zone: str
    calls: CallsInQuietHours = CallsInQuietHours.RING

    def is_quiet(self, now: datetime) -> bool:
        """Whether the instant ``now`` (aware) falls inside the window in the user's zone.

        A zone this process cannot load (a stored name later dropped from the zone database)
        counts as never quiet, logged: alerts are better loud than lost.
        """
        zone = _zone(self.time_zone)
        if zone is None:
            log.warning("quiet hours in unknown time zone %r ignored", self.time_zone)
            return False
        local = now.astimezone(zone).time().replace(tzinfo=None)
        if self.start < self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end

    def rings(self, now: datetime) -> bool:
        """Whether an incoming call rings at ``now``."""
        return self.calls is CallsInQuietHours.RING or not self.is_quiet(now)

    @classmethod
    def from_stored(cls, value: Mapping[str, Any]) -> QuietHours:
        """A window as :meth:`as_json` stored it (the zone is not checked again: see is_quiet).

        Raises ValueError or KeyError on a value this module did not write.
        """
        return cls(
            time.fromisoformat(str(value["start"])),
            time.fromisoformat(str(value["end"])),
            str(value["timeZone"]),
            CallsInQuietHours(value.get("calls", CallsInQuietHours.RING.value)),
        )

    def as_json(self) -> dict[str, str]:
        """The window as the API shows it (and as it is stored)."""
        return {
            "start": f"{self.start:%H:%M}",
            "end": f"{self.end:%H:%M}",
            "timeZone": self.time_zone,
            "calls": self.calls.value,
        }


def parse_quiet_hours(value: object) -> QuietHours:
    """A window from its JSON object ``{start, end, timeZone, calls?}``.

    Raises InvalidQuietHoursError naming the first bad field.
    """
    if not isinstance(value, Mapping):
        raise InvalidQuietHoursError("", "must be an object or null")
    start, end = _clock(value, "start"), _clock(value, "end")
    if start == end:
        raise InvalidQuietHoursError("end", "must differ from start")
    zone = value.get("timeZone")
    if not isinstance(zone, str) or not _ZONE.fullmatch(zone) or zone not in known_zones():
        raise InvalidQuietHoursError("timeZone", "must be an IANA time zone such as Europe/Berlin")
    calls = value.get("calls", CallsInQuietHours.RING.value)
    if not isinstance(calls, str) or calls not in {c.value for c in CallsInQuietHours}:
        raise InvalidQuietHoursError("calls", "must be ring or silent")
    return QuietHours(start, end, zone, CallsInQuietHours(calls))


def _clock(value: Mapping[str, Any], name: str) -> time:
    text = value.get(name)
    match = _CLOCK.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise InvalidQuietHoursError(name, "must be a 24-hour time HH:MM")
    return time(int(match.group(1)), int(match.group(2)))

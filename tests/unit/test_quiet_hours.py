"""Quiet hours on the user's own wall clock: across midnight, across zones and DST changes."""

from __future__ import annotations

from datetime import UTC, datetime, time
from typing import Any

import pytest

from shared.domain.quiet_hours import (
    CallsInQuietHours,
    InvalidQuietHoursError,
    QuietHours,
    parse_quiet_hours,
)
from shared.edges.http_api import status_of

pytestmark = pytest.mark.unit

NIGHT = QuietHours(time(22, 0), time(7, 0), "Europe/Berlin")
LUNCH = QuietHours(time(12, 0), time(13, 30), "Europe/Berlin")


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("instant", "quiet"),
    [
        ("2026-01-15T20:59:59", False),  # 21:59:59 in Berlin (UTC+1)
        ("2026-01-15T21:00:00", True),  # 22:00, the window opens
        ("2026-01-15T23:30:00", True),  # 00:30, past midnight
        ("2026-01-16T05:59:59", True),  # 06:59:59
        ("2026-01-16T06:00:00", False),  # 07:00, the window has closed
        ("2026-01-16T11:00:00", False),  # noon
    ],
)
def test_a_window_across_midnight(instant: str, quiet: bool) -> None:
    assert NIGHT.is_quiet(utc(instant)) is quiet


@pytest.mark.parametrize(
    ("instant", "quiet"),
    [
        ("2026-01-15T10:59:00", False),  # 11:59 in Berlin
        ("2026-01-15T11:00:00", True),
        ("2026-01-15T12:29:59", True),
        ("2026-01-15T12:30:00", False),
    ],
)
def test_a_window_within_one_day(instant: str, quiet: bool) -> None:
    assert LUNCH.is_quiet(utc(instant)) is quiet


def test_the_same_instant_is_quiet_in_one_zone_and_not_another() -> None:
    instant = utc("2026-01-15T22:30:00")  # 23:30 in Berlin, 17:30 in New York
    moved = QuietHours(NIGHT.start, NIGHT.end, "America/New_York")
    assert (NIGHT.is_quiet(instant), moved.is_quiet(instant)) == (True, False)


def test_a_user_who_moves_west_gets_quiet_hours_later_in_utc() -> None:
    instant = utc("2026-01-16T04:00:00")  # 05:00 in Berlin, 23:00 in New York the day before
    moved = QuietHours(NIGHT.start, NIGHT.end, "America/New_York")
    assert (NIGHT.is_quiet(instant), moved.is_quiet(instant)) == (True, True)


def test_the_window_follows_the_spring_daylight_saving_change() -> None:
    # Berlin goes from UTC+1 to UTC+2 at 01:00 UTC on 2026-03-29: 07:00 local is 05:00 UTC after.
    before, after = utc("2026-03-29T05:30:00"), utc("2026-03-28T05:30:00")
    assert (NIGHT.is_quiet(before), NIGHT.is_quiet(after)) == (False, True)


def test_the_window_follows_the_autumn_daylight_saving_change() -> None:
    # Berlin goes back to UTC+1 at 01:00 UTC on 2026-10-25: 22:00 local is 21:00 UTC after.
    assert (
        NIGHT.is_quiet(utc("2026-10-24T20:30:00")),
        NIGHT.is_quiet(utc("2026-10-25T21:30:00")),
    ) == (
        True,
        True,
    )
    assert NIGHT.is_quiet(utc("2026-10-25T20:30:00")) is False


def test_an_unknown_stored_zone_is_never_quiet() -> None:
    gone = QuietHours(time(0, 0), time(23, 59), "Mars/Olympus_Mons")
    assert gone.is_quiet(utc("2026-01-15T12:00:00")) is False


def test_calls_ring_in_quiet_hours_by_default() -> None:
    assert NIGHT.rings(utc("2026-01-15T23:30:00")) is True


def test_calls_silenced_by_choice_do_not_ring_in_quiet_hours() -> None:
    silent = QuietHours(NIGHT.start, NIGHT.end, NIGHT.time_zone, CallsInQuietHours.SILENT)
    assert (silent.rings(utc("2026-01-15T23:30:00")), silent.rings(utc("2026-01-15T12:00:00"))) == (
        False,
        True,
    )


def test_a_window_parses_from_the_api_and_round_trips() -> None:
    body = {"start": "22:00", "end": "07:00", "timeZone": "Europe/Berlin", "calls": "silent"}
    parsed = parse_quiet_hours(body)
    assert (parsed.as_json(), QuietHours.from_stored(parsed.as_json())) == (body, parsed)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"start": "24:00", "end": "07:00", "timeZone": "UTC"}, "quietHours.start"),
        ({"start": "22:00", "end": "7:00", "timeZone": "UTC"}, "quietHours.end"),
        ({"start": "22:00", "end": "22:00", "timeZone": "UTC"}, "quietHours.end"),
        ({"start": "22:00", "end": "07:00", "timeZone": "Mars/Base"}, "quietHours.timeZone"),
        ({"start": "22:00", "end": "07:00", "timeZone": "../../etc/passwd"}, "quietHours.timeZone"),
        ({"start": "22:00", "end": "07:00"}, "quietHours.timeZone"),
        (
            {"start": "22:00", "end": "07:00", "timeZone": "UTC", "calls": "maybe"},
            "quietHours.calls",
        ),
        ("22:00-07:00", "quietHours"),
        (
            {"start": "22:00", "end": "07:00", "timeZone": "UTC", "calls": ["ring"]},
            "quietHours.calls",
        ),
    ],
)
def test_a_bad_window_is_refused_naming_the_field(body: Any, field: str) -> None:
    with pytest.raises(InvalidQuietHoursError) as refused:
        parse_quiet_hours(body)
    assert (status_of(refused.value), refused.value.field) == (400, field)

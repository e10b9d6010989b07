"""Use cases: the caller's notification preferences, and each thread's.

``GET /api/preferences`` answers the caller's choices and every thread with a preference in
force::

    {"countMutedThreads": false,
     "quietHours": {"start": "22:00", "end": "07:00", "timeZone": "Europe/Berlin",
                    "calls": "ring"} | null,
     "threads": [{"threadId": "19:...@thread.v2", "alerts": "all", "mutedUntil": "...Z"}]}

``PUT /api/preferences`` changes the fields it names (``countMutedThreads``, ``quietHours``: an
object or ``null`` to turn them off) and answers the same view.

``PUT /api/threads/{threadId}/preferences`` changes a thread's fields it names: ``alerts``
(``"all"`` or ``"none"``) and ``mutedUntil`` (an ISO 8601 time with its offset, ``"forever"``, or
``null`` to unmute). A mute ends by itself at its time; ``alerts: "none"`` stays until changed.
Either way the thread's messages send no alert and are logged ``muted``; they count towards the
badge only with ``countMutedThreads``. Answers ``{"threadId", "alerts", "mutedUntil"?, "muted"}``.

When a change lowers the badge (a thread with unread messages muted, or muted threads no longer
counted), the caller's other devices get a badge-only push, as after a read report;
``deviceId`` in the body names the device making the change.

Raises :class:`InvalidPreferenceError` (400 naming the field), InvalidQuietHoursError (400),
InboxFullError (409) and storage errors.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from shared.domain.quiet_hours import parse_quiet_hours
from shared.errors import InvalidInputError
from shared.storage.inbox import FOREVER, Alerts, Inbox, InboxStore, ThreadState, change_inbox
from shared.usecases.read_reports import BadgeUpdates, lower_badges, parse_device_id


class InvalidPreferenceError(InvalidInputError):
    """A preference field is missing or malformed (the edge answers 400 with the field)."""

    def __init__(self, field: str | None, reason: str) -> None:
        super().__init__(reason, field=field)


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


def thread_view(thread_id: str, state: ThreadState, now: datetime) -> dict[str, Any]:
    """One thread's preference as the API shows it."""
    view: dict[str, Any] = {"threadId": thread_id, "alerts": state.alerts.value}
    if state.muted_until is not None and state.muted_until > now:
        view["mutedUntil"] = "forever" if state.muted_until == FOREVER else _iso(state.muted_until)
    view["muted"] = state.silenced(now)
    return view


def preferences_view(inbox: Inbox, now: datetime) -> dict[str, Any]:
    """``GET /api/preferences``'s answer."""
    prefs = inbox.preferences
    quiet = prefs.quiet_hours
    threads = [thread_view(t, s, now) for t, s in sorted(inbox.threads.items()) if s.silenced(now)]
    return {
        "countMutedThreads": prefs.count_muted,
        "quietHours": None if quiet is None else quiet.as_json(),
        "threads": threads,
    }


async def get_preferences(user_id: str, now: datetime, *, inbox: InboxStore) -> dict[str, Any]:
    """The caller's preferences (one point read)."""
    return preferences_view((await inbox.read(user_id)).inbox, now)


async def put_preferences(
    user_id: str,
    body: Mapping[str, Any],
    now: datetime,
    *,
    inbox: InboxStore,
    updates: BadgeUpdates,
) -> dict[str, Any]:
    """Change the caller's own choices; answers :func:`preferences_view`.

    Raises InvalidPreferenceError, InvalidQuietHoursError and storage errors.
    """
    changes: dict[str, Any] = {}
    if "countMutedThreads" in body:
        value = body["countMutedThreads"]
        if not isinstance(value, bool):
            raise InvalidPreferenceError("countMutedThreads", "must be true or false")
        changes["count_muted"] = value
    if "quietHours" in body:
        quiet = body["quietHours"]
        changes["quiet_hours"] = None if quiet is None else parse_quiet_hours(quiet)
    if not changes:
        raise InvalidPreferenceError(None, "name countMutedThreads or quietHours")
    device_id = parse_device_id(body)
    done = await change_inbox(
        inbox, user_id, lambda box: box.with_preferences(replace(box.preferences, **changes)), now
    )
    await lower_badges(user_id, done, now, updates, except_device=device_id)
    return preferences_view(done.after, now)


def _muted_until(value: object, now: datetime) -> datetime | None:
    if value is None:
        return None
    if value == "forever":
        return FOREVER
    try:
        when = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        when = None
    if when is None or when.tzinfo is None:
        raise InvalidPreferenceError(
            "mutedUntil", 'must be an ISO 8601 time with its offset, "forever" or null'
        )
    if when <= now:
        return None
    try:
        return when.astimezone(UTC)
    except OverflowError:
        # 9999-12-31T23:59:59-14:00 is later than the last time UTC can hold.
        raise InvalidPreferenceError("mutedUntil", 'is past year 9999: use "forever"') from None


async def put_thread_preferences(
    user_id: str,
    thread_id: str,
    body: Mapping[str, Any],
    now: datetime,
    *,
    inbox: InboxStore,
    updates: BadgeUpdates,
) -> dict[str, Any]:
    """Change one thread's alerts or mute; answers :func:`thread_view`.

    Raises InvalidPreferenceError, InboxFullError (409) and storage errors.
    """
    if "alerts" not in body and "mutedUntil" not in body:
        raise InvalidPreferenceError(None, "name alerts or mutedUntil")
    alerts: Alerts | None = None
    if "alerts" in body:
        value = body["alerts"]
        if not isinstance(value, str) or value not in {a.value for a in Alerts}:
            raise InvalidPreferenceError("alerts", "must be all or none")
        alerts = Alerts(value)
    muted = "mutedUntil" in body
    until = _muted_until(body.get("mutedUntil"), now)
    device_id = parse_device_id(body)

    def change(box: Inbox) -> Inbox:
        state = box.thread(thread_id)
        return box.with_thread_preference(
            thread_id,
            alerts if alerts is not None else state.alerts,
            until if muted else state.muted_until,
            now,
        )

    done = await change_inbox(inbox, user_id, change, now)
    await lower_badges(user_id, done, now, updates, except_device=device_id)
    return thread_view(thread_id, done.after.thread(thread_id), now)

"""Use cases: the caller's unread counts, and their read reports.

``GET /api/unread`` answers the badge and each thread's unread number (one point read)::

    {"badge": 3, "unread": 5,
     "threads": [{"threadId": "19:...@thread.v2", "unread": 2, "counted": true, "muted": false}]}

``unread`` counts every thread; ``badge`` leaves out the muted ones unless the caller counts them
(``countMutedThreads``, :mod:`shared.usecases.preferences`). Threads with nothing unread are not
listed.

``PUT /api/threads/{threadId}/read`` with ``{"messageId": "<ACS message id>", "deviceId"?}``
moves the caller's read marker in that thread: every message up to and including that one is
read (what an ACS read receipt for it means). A marker older than the one stored changes nothing,
so two devices reporting at once, or out of order, end at the newest. When the badge falls, the
caller's other alert devices get a badge-only push (:mod:`shared.usecases.badge`); ``deviceId`` (the
one ``PUT /api/devices`` answered) is the device reporting, which updates its own badge. Cost: one
point read and, when the marker moves, one write; a device query and the pushes when the badge
falls.

Raises :class:`InvalidReadReportError` (400 naming the field); storage errors pass through.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Protocol

from shared.domain.devices import Device
from shared.errors import InvalidInputError
from shared.push.outcomes import DeviceOutcomes
from shared.push.pipeline import Pushers
from shared.settings import Settings
from shared.storage.inbox import Inbox, InboxChange, InboxStore, change_inbox, message_order
from shared.usecases.badge import update_badges

log = logging.getLogger(__name__)

_THREAD_ID: Final = re.compile(r"[\x21-\x7e]{1,200}")
_DEVICE_ID: Final = re.compile(r"[0-9a-f]{64}")


class InvalidReadReportError(InvalidInputError):
    """A read report's field is missing or malformed (the edge answers 400 with the field)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(reason, field=field)


class BadgeDevices(DeviceOutcomes, Protocol):
    """Port: the registry operations a badge update needs (``storage.devices.DeviceStore``)."""

    async def list_for_user(self, user_id: str) -> list[Device]:
        """Every device of ``user_id`` (one partition query)."""
        ...


@dataclass(frozen=True, slots=True)
class BadgeUpdates:
    """What a change that may lower the badge needs to tell the user's other devices."""

    devices: BadgeDevices
    pushers: Pushers
    settings: Settings


def parse_thread_id(value: str | None) -> str:
    """A thread id from a route: printable ASCII without spaces, 1-200 characters.

    Raises InvalidReadReportError (field ``threadId``).
    """
    if value is None or not _THREAD_ID.fullmatch(value):
        raise InvalidReadReportError("threadId", "must be an ACS thread id")
    return value


def parse_device_id(body: Mapping[str, Any]) -> str | None:
    """The optional ``deviceId`` of the device making the request (64 lowercase hex)."""
    value = body.get("deviceId")
    if value is None:
        return None
    if not isinstance(value, str) or not _DEVICE_ID.fullmatch(value):
        raise InvalidReadReportError("deviceId", "must be a deviceId from PUT /api/devices")
    return value


def unread_view(inbox: Inbox, now: datetime) -> dict[str, Any]:
    """``GET /api/unread``'s answer: the badge, the total and each thread with unread messages."""
    listed = sorted(
        ((t, s) for t, s in inbox.threads.items() if s.unread_count),
        key=lambda item: (-item[1].touched, item[0]),
    )
    threads = [
        {
            "threadId": t,
            "unread": s.unread_count,
            "counted": inbox.counts(t, now),
            "muted": s.silenced(now),
        }
        for t, s in listed
    ]
    return {
        "badge": inbox.badge(now),
        "unread": sum(s.unread_count for s in inbox.threads.values()),
        "threads": threads,
    }


async def unread_counts(user_id: str, now: datetime, *, inbox: InboxStore) -> dict[str, Any]:
    """The caller's unread counts (:func:`unread_view`): one point read."""
    return unread_view((await inbox.read(user_id)).inbox, now)


async def report_read(
    user_id: str,
    thread_id: str,
    body: Mapping[str, Any],
    now: datetime,
    *,
    inbox: InboxStore,
    updates: BadgeUpdates,
) -> dict[str, Any]:
    """Move the caller's read marker in ``thread_id``; their thread count and badge after it.

    Raises InvalidReadReportError, InboxBusyError and storage errors.
    """
    message_id = body.get("messageId")
    order = message_order(message_id) if isinstance(message_id, str) else None
    if order is None:
        raise InvalidReadReportError("messageId", "must be an ACS message id (decimal digits)")
    device_id = parse_device_id(body)
    done = await change_inbox(inbox, user_id, lambda box: box.read(thread_id, order, now), now)
    await lower_badges(user_id, done, now, updates, except_device=device_id)
    log.info("read report moved the marker: %s", done.changed)
    return {
        "threadId": thread_id,
        "unread": done.after.thread(thread_id).unread_count,
        "badge": done.after.badge(now),
    }


async def lower_badges(
    user_id: str,
    done: InboxChange,
    now: datetime,
    updates: BadgeUpdates,
    *,
    except_device: str | None,
) -> int:
    """Badge-only pushes to the user's devices (but one) when ``done`` lowered the badge.

    Returns how many devices took the update. Raises the registry's storage errors.
    """
    badge = done.after.badge(now)
    if badge >= done.before.badge(now):
        return 0
    devices = await updates.devices.list_for_user(user_id)
    return await update_badges(
        devices,
        badge,
        pushers=updates.pushers,
        registry=updates.devices,
        settings=updates.settings,
        now=now,
        tag=f"badge update for a user's devices ({badge})",
        except_device=except_device,
    )

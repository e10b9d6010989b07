"""Pure payload builders: the ``aps`` dictionary and its compact JSON encoding.

Size limits are on the encoded bytes (Apple: 4096 bytes, 5120 for VoIP); measure with
``len(encode_payload(p))``, never on characters.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Final

from shared.apns.errors import NotificationError

MAX_PAYLOAD_BYTES: Final = 4096
MAX_VOIP_PAYLOAD_BYTES: Final = 5120

INTERRUPTION_LEVELS: Final = frozenset({"passive", "active", "time-sensitive", "critical"})

_ENCODER: Final = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def max_payload_bytes(push_type: str) -> int:
    """The largest payload APNs accepts for ``push_type`` (a :class:`PushType` or its value)."""
    return MAX_VOIP_PAYLOAD_BYTES if push_type == "voip" else MAX_PAYLOAD_BYTES


def encode_payload(payload: Mapping[str, object]) -> bytes:
    """Compact UTF-8 JSON (no spaces, non-ASCII kept as UTF-8) as sent to APNs."""
    return _ENCODER.encode(payload).encode("utf-8")


def alert_payload(
    *,
    title: str | None = None,
    subtitle: str | None = None,
    body: str | None = None,
    badge: int | None = None,
    sound: str | None = None,
    thread_id: str | None = None,
    category: str | None = None,
    mutable_content: bool = False,
    interruption_level: str | None = None,
    custom: Mapping[str, object] | None = None,
) -> dict[str, object]:
    """An alert payload: ``{"aps": {"alert": {...}, ...}, **custom}``.

    Raises :class:`NotificationError` when ``custom`` tries to set ``aps``, the badge is
    negative, or the interruption level is not one Apple defines.
    """
    alert: dict[str, object] = {}
    for key, value in (("title", title), ("subtitle", subtitle), ("body", body)):
        if value is not None:
            alert[key] = value
    aps: dict[str, object] = {}
    if alert:
        aps["alert"] = alert
    if badge is not None:
        if isinstance(badge, bool) or badge < 0:
            raise NotificationError("badge", "must be a whole number >= 0")
        aps["badge"] = badge
    if sound:
        aps["sound"] = sound
    if thread_id:
        aps["thread-id"] = thread_id
    if category:
        aps["category"] = category
    if mutable_content:
        aps["mutable-content"] = 1
    if interruption_level is not None:
        if interruption_level not in INTERRUPTION_LEVELS:
            raise NotificationError(
                "interruption_level", f"must be one of {sorted(INTERRUPTION_LEVELS)}"
            )
        aps["interruption-level"] = interruption_level
    return _with_custom(aps, custom)


def background_payload(custom: Mapping[str, object] | None = None) -> dict[str, object]:
    """A background (silent) payload: ``{"aps": {"content-available": 1}, **custom}``.

    Send it with push type ``background`` and priority 5; Apple forbids alert, sound and badge.
    """
    return _with_custom({"content-available": 1}, custom)


def _with_custom(aps: dict[str, object], custom: Mapping[str, object] | None) -> dict[str, object]:
    payload: dict[str, object] = {"aps": aps}
    if custom:
        if "aps" in custom:
            raise NotificationError("custom", 'custom keys may not include "aps"')
        payload.update(custom)
    return payload

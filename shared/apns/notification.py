"""The request model: one notification for one device."""

from __future__ import annotations

import enum
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from shared.apns.errors import NotificationError
from shared.apns.payload import max_payload_bytes


class Environment(enum.StrEnum):
    """APNs environment a device token belongs to."""

    SANDBOX = "sandbox"
    PRODUCTION = "production"


class PushType(enum.StrEnum):
    """The ``apns-push-type`` header; it must match the payload and the topic suffix."""

    ALERT = "alert"
    BACKGROUND = "background"
    VOIP = "voip"
    COMPLICATION = "complication"
    FILEPROVIDER = "fileprovider"
    MDM = "mdm"
    LOCATION = "location"
    LIVEACTIVITY = "liveactivity"
    PUSHTOTALK = "pushtotalk"
    WIDGETS = "widgets"
    CONTROLS = "controls"


class Priority(enum.IntEnum):
    """The ``apns-priority`` header."""

    IMMEDIATE = 10
    CONSIDERATE = 5
    LOW = 1


# Apple, "Sending notification requests to APNs": the topic suffix each push type requires.
TOPIC_SUFFIXES: Final[dict[PushType, str]] = {
    PushType.VOIP: ".voip",
    PushType.COMPLICATION: ".complication",
    PushType.FILEPROVIDER: ".pushkit.fileprovider",
    PushType.LOCATION: ".location-query",
    PushType.LIVEACTIVITY: ".push-type.liveactivity",
    PushType.WIDGETS: ".push-type.widgets",
    PushType.CONTROLS: ".push-type.controls",
    PushType.PUSHTOTALK: ".voip-ptt",
}
_ALL_SUFFIXES: Final = tuple(TOPIC_SUFFIXES.values())

MIN_DEVICE_TOKEN_HEX: Final = 64
MAX_DEVICE_TOKEN_HEX: Final = 200
MAX_COLLAPSE_ID_BYTES: Final = 64
_MAX_EXPIRATION: Final = 2**32 - 1

_HEX = re.compile(r"[0-9a-fA-F]+")
_TOPIC = re.compile(r"[A-Za-z0-9._\-]+")
_APNS_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_BACKGROUND_FORBIDDEN: Final = ("alert", "sound", "badge")


def is_device_token(token: str) -> bool:
    """Whether ``token`` looks like an APNs device token: even-length hex (length not fixed)."""
    return (
        MIN_DEVICE_TOKEN_HEX <= len(token) <= MAX_DEVICE_TOKEN_HEX
        and len(token) % 2 == 0
        and _HEX.fullmatch(token) is not None
    )


def is_apns_id(value: str) -> bool:
    """Whether ``value`` is a canonical lowercase UUID, the only form APNs accepts."""
    return _APNS_ID.fullmatch(value) is not None


def new_apns_id(random_bytes: Callable[[int], bytes] = os.urandom) -> str:
    """A fresh lowercase UUID4 for ``apns-id``; ``random_bytes`` is injectable for tests."""
    raw = bytearray(random_bytes(16))
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


@dataclass(frozen=True, slots=True)
class Notification:
    """One push to one device.

    ``payload`` is compact JSON bytes (see :func:`shared.apns.payload.encode_payload`);
    ``expiration`` is UNIX seconds (0: one delivery attempt, not stored; None: APNs' storage
    policy); ``priority`` None lets APNs default to 10, except for background pushes, which are
    always sent with priority 5 (Apple rejects 10 for them).
    """

    device_token: str
    topic: str
    push_type: PushType
    payload: bytes
    priority: Priority | None = None
    expiration: int | None = None
    collapse_id: str | None = None
    apns_id: str | None = None

    def validate(self) -> None:
        """Check what APNs would reject; raises :class:`NotificationError` naming the field."""
        if not is_device_token(self.device_token):
            raise NotificationError(
                "device_token",
                f"must be even-length hex of {MIN_DEVICE_TOKEN_HEX}-{MAX_DEVICE_TOKEN_HEX} "
                f"characters (got {len(self.device_token)} characters)",
            )
        self._validate_topic()
        self._validate_headers()
        self._validate_payload()

    def _validate_topic(self) -> None:
        if not self.topic or _TOPIC.fullmatch(self.topic) is None:
            raise NotificationError("topic", "must be a bundle ID (letters, digits, . _ -)")
        if not isinstance(self.push_type, PushType):
            raise NotificationError("push_type", f"unknown push type {self.push_type!r}")
        suffix = TOPIC_SUFFIXES.get(self.push_type)
        if suffix is not None:
            if not self.topic.endswith(suffix) or len(self.topic) == len(suffix):
                raise NotificationError(
                    "topic", f"{self.push_type} pushes need a topic ending in {suffix!r}"
                )
        elif self.push_type is not PushType.MDM and self.topic.endswith(_ALL_SUFFIXES):
            raise NotificationError(
                "topic", f"{self.push_type} pushes go to the bare bundle ID, not {self.topic!r}"
            )

    def _validate_headers(self) -> None:
        if self.priority is not None and self.priority not in (10, 5, 1):
            raise NotificationError("priority", "must be 10, 5 or 1")
        if self.push_type is PushType.BACKGROUND and self.priority == Priority.IMMEDIATE:
            raise NotificationError("priority", "background pushes must use priority 5 or 1")
        if self.expiration is not None and (
            isinstance(self.expiration, bool)
            or not isinstance(self.expiration, int)
            or not 0 <= self.expiration <= _MAX_EXPIRATION
        ):
            raise NotificationError("expiration", "must be UNIX seconds >= 0 (0: one attempt)")
        if self.collapse_id is not None:
            size = len(self.collapse_id.encode("utf-8"))
            if not 0 < size <= MAX_COLLAPSE_ID_BYTES or not self.collapse_id.isprintable():
                raise NotificationError(
                    "collapse_id", f"must be 1-{MAX_COLLAPSE_ID_BYTES} printable UTF-8 bytes"
                )
        if self.apns_id is not None and not is_apns_id(self.apns_id):
            raise NotificationError("apns_id", "must be a lowercase canonical UUID")

    def _validate_payload(self) -> None:
        payload = self.payload
        if not isinstance(payload, bytes | bytearray) or not payload:
            raise NotificationError("payload", "must be non-empty JSON bytes")
        limit = max_payload_bytes(self.push_type)
        if len(payload) > limit:
            raise NotificationError(
                "payload", f"is {len(payload)} bytes; {self.push_type} allows {limit}"
            )
        if payload[:1] != b"{" or payload.rstrip()[-1:] != b"}":
            raise NotificationError("payload", "must be a JSON object")
        if self.push_type is PushType.BACKGROUND:
            self._validate_background_payload()

    def _validate_background_payload(self) -> None:
        try:
            document = json.loads(self.payload)
        except ValueError:
            raise NotificationError("payload", "is not valid JSON") from None
        aps = document.get("aps") if isinstance(document, dict) else None
        if not isinstance(aps, dict) or aps.get("content-available") != 1:
            raise NotificationError("payload", 'background pushes need "content-available": 1')
        forbidden = [key for key in _BACKGROUND_FORBIDDEN if key in aps]
        if forbidden:
            raise NotificationError(
                "payload", f"background pushes may not carry {', '.join(forbidden)}"
            )

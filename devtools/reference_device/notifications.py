"""What the user sees: the notification service extension of docs/ios.md and Notification Center.

The extension (docs/ios.md, ``NotificationService.swift``) runs for an alert with
``mutable-content: 1``: it decrypts with the app group's keys and shows the sender's name and the
message; when decryption fails (no live key, another key, a malformed push) or the decrypted
message is empty, the push's own text stays (the fallback). Notification Center shows one banner
per ``apns-collapse-id`` (APNs: later pushes with the same collapse id replace the earlier one),
and the app withdraws banners when a message is deleted.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from devtools.reference_device.decryption import DecryptError, decrypt_payload


@dataclass(frozen=True, slots=True)
class Banner:
    """One delivered notification as the user sees it."""

    identifier: str  # the apns-collapse-id, else the apns-id (iOS's request identifier)
    title: str
    body: str
    thread_id: str | None
    message_id: str | None
    kind: str | None  # "received" / "edited" (pushrelay's custom key)
    decrypted: bool  # True when the extension replaced the fallback text
    delivered_at: datetime

    def as_json(self) -> dict[str, Any]:
        """JSON-ready form (for the command line and a console)."""
        return {
            "identifier": self.identifier,
            "title": self.title,
            "body": self.body,
            "threadId": self.thread_id,
            "messageId": self.message_id,
            "kind": self.kind,
            "decrypted": self.decrypted,
            "deliveredAt": self.delivered_at.isoformat(),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Banner:
        """The inverse of :meth:`as_json`."""
        return cls(
            identifier=data["identifier"],
            title=data["title"],
            body=data["body"],
            thread_id=data.get("threadId"),
            message_id=data.get("messageId"),
            kind=data.get("kind"),
            decrypted=bool(data.get("decrypted")),
            delivered_at=datetime.fromisoformat(data["deliveredAt"]),
        )


@dataclass(frozen=True, slots=True)
class Content:
    """The extension's output for one alert."""

    title: str
    body: str
    decrypted: bool


def extension_content(
    payload: Mapping[str, Any], retrieve_keys: Callable[[], list[str]]
) -> Content:
    """What ``NotificationService.didReceive`` hands iOS for this alert payload."""
    raw_aps = payload.get("aps")
    aps: Mapping[str, Any] = raw_aps if isinstance(raw_aps, dict) else {}
    title, body = _alert_text(aps.get("alert"))
    if aps.get("mutable-content") != 1:
        return Content(title, body, decrypted=False)  # iOS does not run the extension
    try:
        event = decrypt_payload(payload, retrieve_keys)
    except DecryptError:
        return Content(title, body, decrypted=False)
    if event.sender_display_name:
        title = event.sender_display_name
    if event.message.strip():
        return Content(title, event.message, decrypted=True)
    return Content(title, body, decrypted=False)  # an empty message keeps the fallback


def _alert_text(alert: Any) -> tuple[str, str]:
    if isinstance(alert, str):
        return "", alert
    if isinstance(alert, dict):
        return str(alert.get("title", "")), str(alert.get("body", ""))
    return "", ""


class NotificationCenter:
    """Delivered banners, newest last; one per identifier."""

    def __init__(self) -> None:
        self._banners: dict[str, Banner] = {}

    def deliver(self, banner: Banner) -> None:
        """Show ``banner``; one with the same identifier (collapse id) is replaced."""
        self._banners.pop(banner.identifier, None)
        self._banners[banner.identifier] = banner

    def withdraw(self, thread_id: str, message_id: str) -> int:
        """Remove the banners of one message (docs/ios.md: the deleted-message handler)."""
        gone = [
            b.identifier
            for b in self._banners.values()
            if b.thread_id == thread_id and b.message_id == message_id
        ]
        for identifier in gone:
            del self._banners[identifier]
        return len(gone)

    def remove_thread(self, thread_id: str) -> int:
        """Remove a conversation's banners (the user opened it)."""
        gone = [b.identifier for b in self._banners.values() if b.thread_id == thread_id]
        for identifier in gone:
            del self._banners[identifier]
        return len(gone)

    def remove_all(self) -> None:
        """``removeAllDeliveredNotifications()`` (sign-out)."""
        self._banners.clear()

    @property
    def banners(self) -> list[Banner]:
        """Delivered banners, oldest first."""
        return list(self._banners.values())

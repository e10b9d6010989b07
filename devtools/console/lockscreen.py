"""What an iPhone's lock screen shows, push by push (pure: no I/O, no clock of its own).

The rules iOS and the app of docs/ios.md apply, in the order pushes arrive:

- An alert shows its ``aps.alert`` (title, subtitle, body; a string alert is the body).
  Notifications with the same ``apns-collapse-id`` are one notification: a later one replaces
  the earlier (APNs: "the notification with the same collapse identifier is updated").
  Notifications are grouped by ``aps.thread-id`` (no thread-id: the app's own group).
- ``mutable-content: 1`` runs the notification service extension: it decrypts ``data.e`` with
  the keys the phone holds and shows the sender's name and the message; without a key that
  opens it (none, expired, another), or when the message is empty, the alert's own text stays:
  the fallback. The extension is the reference device's
  (:func:`devtools.reference_device.extension_content`, the ACS SDK's ``decryptPayload`` written
  from its source, never from ``shared/``): the console has no decryptor of its own.
- ``aps.badge`` sets the number on the app icon (0 clears it); a push without it leaves it.
- A background push (``content-available: 1``, no alert) shows nothing: it is a mark on the
  timeline. With ``deleted`` the app withdraws that message's notifications; with
  ``pushrelay.tokenProof`` it proves it holds the token; otherwise it is a renewal wake.
- A VoIP push rings: the incoming-call screen until the call is answered or declined.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from devtools.reference_device import Push, extension_content

NO_THREAD = ""


class Preview(enum.StrEnum):
    """How a notification's text came to be."""

    DECRYPTED = "decrypted"  # the extension opened data.e with a key the phone holds
    FALLBACK = "fallback"  # encrypted, but no key on the phone opens it: the alert's own text
    PLAIN = "plain"  # not encrypted: the alert as sent


@dataclass(frozen=True, slots=True)
class Notification:
    """One notification on the lock screen."""

    identifier: str  # apns-collapse-id, else apns-id (iOS's request identifier)
    thread_id: str
    title: str
    subtitle: str
    body: str
    preview: Preview
    message_id: str | None
    kind: str | None
    seq: int
    received_at: float
    replaced: int = 0  # how many earlier versions this one replaced (edits)

    def as_json(self) -> dict[str, Any]:
        """JSON for the page."""
        return {
            "id": self.identifier,
            "threadId": self.thread_id,
            "title": self.title,
            "subtitle": self.subtitle,
            "body": self.body,
            "preview": self.preview.value,
            "messageId": self.message_id,
            "kind": self.kind,
            "seq": self.seq,
            "at": self.received_at,
            "replaced": self.replaced,
        }


class Mark(enum.StrEnum):
    """What a silent push was for."""

    RENEWAL = "renewal"
    WITHDRAW = "withdraw"
    TOKEN_PROOF = "tokenProof"  # noqa: S105 - a push's purpose, not a secret


@dataclass(frozen=True, slots=True)
class SilentMark:
    """A background push on the phone's timeline."""

    mark: Mark
    seq: int
    received_at: float
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Call:
    """The incoming-call screen of a VoIP push."""

    caller: str
    call_id: str
    seq: int
    received_at: float


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def alert_text(aps: Mapping[str, Any]) -> tuple[str, str, str]:
    """(title, subtitle, body) of ``aps.alert``."""
    alert = aps.get("alert")
    if isinstance(alert, str):
        return "", "", alert
    if isinstance(alert, dict):
        return _text(alert.get("title")), _text(alert.get("subtitle")), _text(alert.get("body"))
    return "", "", ""


def extension(push: Push, keys: Sequence[str]) -> tuple[str, str, Preview]:
    """(title, body, how) after the notification service extension ran on ``push``.

    ``keys``: what ``onRetrieveKeys()`` would return now (base64, newest first; [] for none).
    """
    title, _, body = alert_text(push.aps)
    data = push.payload.get("data")
    if push.aps.get("mutable-content") != 1 or not isinstance(data, dict) or "e" not in data:
        return title, body, Preview.PLAIN
    content = extension_content(push.payload, lambda: list(keys))
    return content.title, content.body, Preview.DECRYPTED if content.decrypted else Preview.FALLBACK


def silent_mark(push: Push) -> SilentMark:
    """The timeline mark of a background push."""
    deleted = push.payload.get("deleted")
    if isinstance(deleted, dict):
        message = _text(deleted.get("messageId"))
        return SilentMark(Mark.WITHDRAW, push.seq, push.received_at, message)
    relay = push.payload.get("pushrelay")
    if isinstance(relay, dict) and "tokenProof" in relay:
        return SilentMark(Mark.TOKEN_PROOF, push.seq, push.received_at)
    return SilentMark(Mark.RENEWAL, push.seq, push.received_at)


@dataclass
class LockScreen:
    """One phone's screen; :meth:`receive` applies a push as iOS and the app would."""

    notifications: list[Notification] = field(default_factory=list)  # oldest first
    badge: int | None = None
    call: Call | None = None
    marks: list[SilentMark] = field(default_factory=list)
    last_seq: int = 0

    def receive(self, push: Push, keys: Sequence[str] = ()) -> None:
        """Apply one delivered push; ``keys`` are the preview keys the phone holds now."""
        self.last_seq = max(self.last_seq, push.seq)
        if push.push_type == "voip":
            data = push.payload.get("data")
            data = data if isinstance(data, dict) else {}
            caller = _text(data.get("displayName")) or "Unknown caller"
            call_id = _text(data.get("callId")) or _text(push.payload.get("serverCallId"))
            self.call = Call(caller, call_id, push.seq, push.received_at)
            return
        aps = push.aps
        badge = aps.get("badge")
        if isinstance(badge, int) and not isinstance(badge, bool):
            self.badge = badge or None
        if push.push_type == "background" or "alert" not in aps:
            if aps.get("content-available") == 1:
                self._silent(push)
            return
        self._show(push, keys)

    def _silent(self, push: Push) -> None:
        mark = silent_mark(push)
        self.marks.append(mark)
        deleted = push.payload.get("deleted")
        if mark.mark is Mark.WITHDRAW and isinstance(deleted, dict):
            self.withdraw(_text(deleted.get("threadId")), _text(deleted.get("messageId")))

    def _show(self, push: Push, keys: Sequence[str]) -> None:
        title, body, preview = extension(push, keys)
        _, subtitle, _ = alert_text(push.aps)
        identifier = push.collapse_id or push.apns_id or f"seq-{push.seq}"
        earlier = [n for n in self.notifications if n.identifier == identifier]
        self.notifications = [n for n in self.notifications if n.identifier != identifier]
        message_id = push.payload.get("messageId")
        kind = push.payload.get("kind")
        self.notifications.append(
            Notification(
                identifier=identifier,
                thread_id=_text(push.aps.get("thread-id")) or NO_THREAD,
                title=title,
                subtitle=subtitle,
                body=body,
                preview=preview,
                message_id=message_id if isinstance(message_id, str) else None,
                kind=kind if isinstance(kind, str) else None,
                seq=push.seq,
                received_at=push.received_at,
                replaced=sum(n.replaced + 1 for n in earlier),
            )
        )

    def withdraw(self, thread_id: str, message_id: str) -> int:
        """Remove a message's notifications (the app's handler of a deleted message)."""
        before = len(self.notifications)
        self.notifications = [
            n
            for n in self.notifications
            if not (n.message_id == message_id and n.thread_id == thread_id)
        ]
        return before - len(self.notifications)

    def keep_only(self, identifiers: Collection[str]) -> int:
        """Drop the notifications the phone's app removed itself (a reconciled delete, an opened
        thread): the phone's Notification Center holds ``identifiers``. How many went."""
        before = len(self.notifications)
        self.notifications = [n for n in self.notifications if n.identifier in identifiers]
        return before - len(self.notifications)

    def end_call(self) -> None:
        """The call was answered or declined: the call screen goes."""
        self.call = None

    def groups(self) -> list[dict[str, Any]]:
        """Notifications grouped by thread, newest group and newest notification first."""
        by_thread: dict[str, list[Notification]] = {}
        for n in sorted(self.notifications, key=lambda n: n.seq, reverse=True):
            by_thread.setdefault(n.thread_id, []).append(n)
        return [
            {"threadId": thread, "notifications": [n.as_json() for n in items]}
            for thread, items in by_thread.items()
        ]

    def as_json(self) -> dict[str, Any]:
        """JSON for the page."""
        c = self.call
        return {
            "groups": self.groups(),
            "badge": self.badge,
            "call": None
            if c is None
            else {"caller": c.caller, "callId": c.call_id, "seq": c.seq, "at": c.received_at},
            "marks": [
                {"mark": m.mark.value, "seq": m.seq, "at": m.received_at, "detail": m.detail}
                for m in self.marks
            ],
        }


__all__ = ["Call", "LockScreen", "Mark", "Notification", "Preview", "Push", "SilentMark"]

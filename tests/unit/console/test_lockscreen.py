"""What a phone's lock screen shows, push by push (devtools/console/lockscreen.py).

Encrypted pushes are made with the app's own encryption (``shared.domain.preview_crypto``) and
opened by the reference device's extension (the console has no decryptor of its own), so these tests
also prove the lock screen reads what the app sends.
"""

from __future__ import annotations

import ast
import base64
from pathlib import Path
from typing import Any

import pytest

from devtools.console.lockscreen import LockScreen, Mark, Preview, Push
from shared.domain.preview_crypto import PreviewFields, data_part, encrypt_fields

pytestmark = pytest.mark.unit

KEY, OTHER_KEY = bytes(range(64)), bytes(range(64, 128))
# As the phone's key storage holds them (what onRetrieveKeys returns).
KEY_B64, OTHER_KEY_B64 = (base64.b64encode(k).decode() for k in (KEY, OTHER_KEY))
THREAD, OTHER_THREAD = "19:aaa@thread.v2", "19:bbb@thread.v2"
TOKEN = "ab" * 32


def push(
    seq: int,
    payload: dict[str, Any],
    *,
    push_type: str = "alert",
    collapse_id: str | None = None,
) -> Push:
    headers = {"apns-push-type": push_type}
    if collapse_id is not None:
        headers["apns-collapse-id"] = collapse_id
    record = {
        "seq": seq,
        "token": TOKEN,
        "headers": headers,
        "payload": payload,
        "apnsId": f"00000000-0000-0000-0000-{seq:012d}",
        "receivedAt": 1_700_000_000.0 + seq,
    }
    return Push.from_record(record)


def chat(seq: int, message: str, body: str, thread: str = THREAD, kind: str = "received") -> Push:
    payload = {
        "aps": {"alert": {"title": "Bob", "body": body}, "thread-id": thread},
        "threadId": thread,
        "messageId": message,
        "kind": kind,
    }
    return push(seq, payload, collapse_id=message)


def encrypted(seq: int, message: str, text: str, key: bytes = KEY) -> Push:
    fields = PreviewFields(
        senderId="8:acs:bob", recipientId="8:acs:alice", transactionId="t1", groupId=THREAD,
        messageId=message, messageType="text", messageBody=text, senderDisplayName="Bob",
        clientMessageId="", originalArrivalTime="2026-01-01T12:00:00.000Z", priority="Normal",
        version=message, acsChatMessageMetadata="null",
    )  # fmt: skip
    blob = encrypt_fields(key, fields)
    payload = {
        "aps": {
            "alert": {"title": "New message", "body": "You have a new message"},
            "thread-id": THREAD,
            "mutable-content": 1,
        },
        "threadId": THREAD,
        "messageId": message,
        "kind": "received",
        "data": data_part(blob),
    }
    return push(seq, payload, collapse_id=message)


def texts(screen: LockScreen) -> list[tuple[str, str]]:
    return [(n.title, n.body) for n in screen.notifications]


def test_a_phone_holding_the_key_shows_the_decrypted_message() -> None:
    screen = LockScreen()
    screen.receive(encrypted(1, "m1", "Lunch at noon?"), [KEY_B64])
    assert (texts(screen), screen.notifications[0].preview) == (
        [("Bob", "Lunch at noon?")],
        Preview.DECRYPTED,
    )


def test_a_phone_without_a_key_shows_the_fallback_text() -> None:
    screen = LockScreen()
    screen.receive(encrypted(1, "m1", "Lunch at noon?"), [])
    assert (texts(screen), screen.notifications[0].preview) == (
        [("New message", "You have a new message")],
        Preview.FALLBACK,
    )


def test_another_key_does_not_open_the_preview() -> None:
    screen = LockScreen()
    screen.receive(encrypted(1, "m1", "secret"), [OTHER_KEY_B64])
    assert screen.notifications[0].preview is Preview.FALLBACK


def test_the_previous_key_still_opens_a_push_encrypted_before_a_renewal() -> None:
    screen = LockScreen()
    screen.receive(encrypted(1, "m1", "just before"), [OTHER_KEY_B64, KEY_B64])
    assert texts(screen) == [("Bob", "just before")]


def test_a_tampered_blob_shows_the_fallback() -> None:
    p = encrypted(1, "m1", "hello")
    blob = p.payload["data"]["e"]
    damaged = {**p.payload, "data": {"eventId": 200, "e": blob[:-8] + "AAAAAAA="}}
    screen = LockScreen()
    screen.receive(push(1, damaged, collapse_id="m1"), [KEY_B64])
    assert screen.notifications[0].preview is Preview.FALLBACK


def test_an_edit_with_the_same_collapse_id_replaces_the_banner() -> None:
    screen = LockScreen()
    screen.receive(chat(1, "m1", "3pm?"))
    screen.receive(chat(2, "m1", "4pm instead", kind="edited"))
    assert (texts(screen), screen.notifications[0].replaced) == ([("Bob", "4pm instead")], 1)


def test_notifications_are_grouped_by_thread_newest_first() -> None:
    screen = LockScreen()
    screen.receive(chat(1, "m1", "one"))
    screen.receive(chat(2, "m2", "other thread", thread=OTHER_THREAD))
    screen.receive(chat(3, "m3", "two"))
    groups = [(g["threadId"], [n["body"] for n in g["notifications"]]) for g in screen.groups()]
    assert groups == [(THREAD, ["two", "one"]), (OTHER_THREAD, ["other thread"])]


def test_a_deleted_message_is_withdrawn_and_marked_on_the_timeline() -> None:
    screen = LockScreen()
    screen.receive(chat(1, "m1", "oops"))
    screen.receive(chat(2, "m2", "keep"))
    withdraw = {"aps": {"content-available": 1}, "deleted": {"threadId": THREAD, "messageId": "m1"}}
    screen.receive(push(3, withdraw, push_type="background"))
    assert (texts(screen), [m.mark for m in screen.marks]) == ([("Bob", "keep")], [Mark.WITHDRAW])


def test_a_silent_push_without_deleted_is_a_renewal_wake() -> None:
    screen = LockScreen()
    screen.receive(push(1, {"aps": {"content-available": 1}}, push_type="background"))
    assert ([m.mark for m in screen.marks], screen.notifications) == ([Mark.RENEWAL], [])


def test_a_token_proof_push_is_marked_as_such() -> None:
    screen = LockScreen()
    proof = {"aps": {"content-available": 1}, "pushrelay": {"tokenProof": "123456"}}
    screen.receive(push(1, proof, push_type="background"))
    assert [m.mark for m in screen.marks] == [Mark.TOKEN_PROOF]


def test_a_voip_push_rings_until_the_call_ends() -> None:
    screen = LockScreen()
    voip = {"aps": {}, "data": {"eventId": 107, "displayName": "Bob", "callId": "c1"}}
    screen.receive(push(1, voip, push_type="voip"))
    ringing = screen.call
    screen.end_call()
    assert (ringing is not None and ringing.caller, screen.call) == ("Bob", None)


def test_the_badge_follows_aps_badge_and_zero_clears_it() -> None:
    screen = LockScreen()
    screen.receive(push(1, {"aps": {"alert": "hi", "badge": 3}}))
    shown = screen.badge
    screen.receive(push(2, {"aps": {"alert": "again"}}))
    kept = screen.badge
    screen.receive(push(3, {"aps": {"badge": 0}}))
    assert (shown, kept, screen.badge) == (3, 3, None)


def test_title_subtitle_and_a_string_alert_are_shown_as_ios_does() -> None:
    screen = LockScreen()
    screen.receive(push(1, {"aps": {"alert": {"title": "T", "subtitle": "S", "body": "B"}}}))
    screen.receive(push(2, {"aps": {"alert": "just a body"}}))
    shown = [(n.title, n.subtitle, n.body) for n in screen.notifications]
    assert shown == [("T", "S", "B"), ("", "", "just a body")]


def test_an_empty_decrypted_message_keeps_the_fallback_body() -> None:
    screen = LockScreen()
    screen.receive(encrypted(1, "m1", "  "), [KEY_B64])
    # The guide's extension: the sender's name as title, the push's own body.
    assert (texts(screen), screen.notifications[0].preview) == (
        [("Bob", "You have a new message")],
        Preview.FALLBACK,
    )


def test_notifications_the_phones_app_removed_leave_the_screen() -> None:
    screen = LockScreen()
    for seq, message in enumerate(("m1", "m2"), start=1):
        screen.receive(chat(seq, message, message))
    gone = screen.keep_only({"m2"})  # the app cleared m1's banner (a delete it reconciled)
    assert (gone, [n.message_id for n in screen.notifications]) == (1, ["m2"])


def test_the_console_has_no_decryptor_of_its_own() -> None:
    # One implementation of the phone: the reference device's extension opens every preview.
    console = Path(__file__).resolve().parents[3] / "devtools" / "console"
    imported: set[str] = set()
    for path in console.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module)
    crypto = {m for m in imported if m.split(".")[0] in {"cryptography", "hmac", "hashlib"}}
    assert (crypto - {"hashlib"}, "shared.domain.preview_crypto" in imported) == (set(), False)

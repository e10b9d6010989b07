"""Chat and call payloads: what each preview mode shows, and never over the size limit."""

from __future__ import annotations

import base64
import dataclasses
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.apns.errors import NotificationError
from shared.apns.notification import Environment, Notification, Priority, PushType
from shared.domain.chat_payload import (
    ELLIPSIS,
    ChatPayloadOptions,
    PayloadError,
    PreviewShown,
    build_call_payload,
    build_chat_payload,
    build_deleted_payload,
    call_context_cc,
    chat_notification,
    is_boundary,
    shorten_to_fit,
    withdraw_notification,
)
from shared.domain.devices import Device, DeviceKind
from shared.domain.events import ChatMessageEvent, IncomingCallEvent, MessageEventKind, parse_event
from shared.domain.preview_crypto import PreviewKeyError
from shared.settings import PreviewMode, load_settings
from tests.unit.test_events import ALICE, BOB, sample
from tests.unit.test_preview_crypto import SpecDecryptor

pytestmark = pytest.mark.unit

KEY = bytes(range(100, 164))
LIMIT = 4096
ENCRYPTED = ChatPayloadOptions(preview_mode=PreviewMode.ENCRYPTED)
PLAINTEXT = ChatPayloadOptions(preview_mode=PreviewMode.PLAINTEXT, category="CHAT")
NONE = ChatPayloadOptions(preview_mode=PreviewMode.NONE)
FAMILY = "👨\u200d👩\u200d👧\u200d👦"


def received(**changes: Any) -> ChatMessageEvent:
    event = parse_event(sample("chat_message_received"))
    assert isinstance(event, ChatMessageEvent)
    return dataclasses.replace(event, **changes)


def decoded(encoded: bytes) -> dict[str, Any]:
    doc = json.loads(encoded.decode("utf-8"))
    assert isinstance(doc, dict)
    return doc


def open_blob(payload: dict[str, Any], key: bytes = KEY) -> dict[str, str]:
    data = payload["data"]
    assert data["eventId"] == 200 and isinstance(data["eventId"], int)
    return SpecDecryptor(key).open(data["e"])


# --- preview modes ---------------------------------------------------------------------------


def test_plaintext_alert_shows_sender_and_text() -> None:
    built = build_chat_payload(received(), PLAINTEXT)
    doc = decoded(built.encoded)
    assert doc["aps"] == {
        "alert": {"title": "Bob(Admin)", "body": "Welcome to Azure Communication Services"},
        "sound": "default",
        "thread-id": "19:6e5d6ca1d75044a49a36a7965ec4a906@thread.v2",
        "category": "CHAT",
    }
    assert {k: doc[k] for k in ("threadId", "messageId", "senderId", "kind")} == {
        "threadId": "19:6e5d6ca1d75044a49a36a7965ec4a906@thread.v2",
        "messageId": "1613694358927",
        "senderId": BOB,
        "kind": "received",
    }
    assert (built.push_type, built.priority, built.collapse_id) == (
        PushType.ALERT,
        Priority.IMMEDIATE,
        "1613694358927",
    )
    assert built.preview is PreviewShown.PLAINTEXT and not built.shortened


def test_plaintext_without_sender_name_uses_the_generic_title() -> None:
    doc = decoded(build_chat_payload(received(sender_display_name=""), PLAINTEXT).encoded)
    assert doc["aps"]["alert"]["title"] == "New message"


def test_plaintext_html_message_shows_plain_text() -> None:
    event = parse_event(sample("chat_message_received_html"))
    assert isinstance(event, ChatMessageEvent)
    doc = decoded(build_chat_payload(event, PLAINTEXT).encoded)
    assert doc["aps"]["alert"]["body"] == "Lunch at Café Müller? 12:30 & bring the slides 😀"


def test_silent_deployment_sends_no_sound() -> None:
    options = dataclasses.replace(PLAINTEXT, sound="")
    assert "sound" not in decoded(build_chat_payload(received(), options).encoded)["aps"]


def test_none_mode_reveals_nothing_of_the_message() -> None:
    built = build_chat_payload(received(), NONE, preview_key=KEY)
    doc = decoded(built.encoded)
    assert doc["aps"]["alert"] == {"title": "New message", "body": "You have a new message"}
    assert b"Welcome" not in built.encoded and b"Bob(Admin)" not in built.encoded
    assert "data" not in doc and "mutable-content" not in doc["aps"]
    assert built.preview is PreviewShown.GENERIC


def test_encrypted_mode_with_a_live_key_sends_the_blob_and_a_generic_alert() -> None:
    built = build_chat_payload(received(), ENCRYPTED, preview_key=KEY)
    doc = decoded(built.encoded)
    assert doc["aps"]["alert"] == {"title": "New message", "body": "You have a new message"}
    assert doc["aps"]["mutable-content"] == 1
    assert b"Welcome" not in built.encoded and b"Bob(Admin)" not in built.encoded
    fields = open_blob(doc)
    assert fields == {
        "senderId": BOB,
        "recipientId": ALICE,
        "transactionId": "oh+LGB2dUUadMcTAdRWQxQ.1.1.1.1.1827536918.1.7",
        "groupId": "19:6e5d6ca1d75044a49a36a7965ec4a906@thread.v2",
        "messageId": "1613694358927",
        "messageType": "text",
        "messageBody": "Welcome to Azure Communication Services",
        "senderDisplayName": "Bob(Admin)",
        "clientMessageId": "",
        "originalArrivalTime": "2021-02-19T00:25:58.927Z",
        "priority": "Normal",
        "version": "1613694358927",
        "acsChatMessageMetadata": json.dumps(
            {"key": "value", "description": "A map of data associated with the message"},
            separators=(",", ":"),
        ),
    }
    assert built.preview is PreviewShown.ENCRYPTED


def test_encrypted_preview_metadata_is_null_when_empty() -> None:
    built = build_chat_payload(received(metadata={}), ENCRYPTED, preview_key=KEY)
    assert open_blob(decoded(built.encoded))["acsChatMessageMetadata"] == "null"


def test_encrypted_mode_without_a_key_sends_the_generic_alert_only() -> None:
    built = build_chat_payload(received(), ENCRYPTED, preview_key=None)
    doc = decoded(built.encoded)
    assert doc["aps"]["alert"] == {"title": "New message", "body": "You have a new message"}
    assert "data" not in doc
    assert b"Welcome" not in built.encoded and b"Bob(Admin)" not in built.encoded
    assert built.preview is PreviewShown.GENERIC


def test_encrypted_blob_uses_the_injected_iv() -> None:
    iv = bytes(range(16))
    built = build_chat_payload(received(), ENCRYPTED, preview_key=KEY, random_bytes=lambda n: iv)
    blob = decoded(built.encoded)["data"]["e"]
    assert base64.b64decode(blob)[1:17] == iv


def test_wrong_length_key_is_refused() -> None:
    with pytest.raises(PreviewKeyError):
        build_chat_payload(received(), ENCRYPTED, preview_key=bytes(32))


def test_edited_message_has_the_same_shape_and_collapse_id() -> None:
    event = parse_event(sample("chat_message_edited"))
    assert isinstance(event, ChatMessageEvent)
    original = build_chat_payload(received(), PLAINTEXT)
    edited = build_chat_payload(event, PLAINTEXT)
    doc = decoded(edited.encoded)
    assert doc["kind"] == "edited"
    assert doc["aps"]["alert"]["body"] == "Let's meet at 4pm instead"
    assert edited.collapse_id == original.collapse_id == "1613694358927"
    assert set(doc) == set(decoded(original.encoded))


def test_edited_message_encrypted_carries_the_new_text_and_version() -> None:
    event = parse_event(sample("chat_message_edited"))
    assert isinstance(event, ChatMessageEvent)
    fields = open_blob(decoded(build_chat_payload(event, ENCRYPTED, preview_key=KEY).encoded))
    assert (fields["messageBody"], fields["version"]) == (
        "Let's meet at 4pm instead",
        "1613694500784",
    )


@pytest.mark.parametrize("options", [ENCRYPTED, PLAINTEXT, NONE])
def test_deleted_message_gets_a_background_push_naming_it(options: ChatPayloadOptions) -> None:
    event = parse_event(sample("chat_message_deleted"))
    assert isinstance(event, ChatMessageEvent)
    built = build_chat_payload(event, options, preview_key=KEY)
    assert decoded(built.encoded) == {
        "aps": {"content-available": 1},
        "deleted": {
            "threadId": "19:6e5d6ca1d75044a49a36a7965ec4a906@thread.v2",
            "messageId": "1613694358927",
        },
    }
    assert (built.push_type, built.priority) == (PushType.BACKGROUND, Priority.CONSIDERATE)
    assert built == build_deleted_payload(event)


# --- notifications for a device ---------------------------------------------------------------

NOW = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def device(
    key: bytes | None = KEY, expires: datetime | None = NOW + timedelta(minutes=5)
) -> Device:
    return Device(
        user_id=ALICE,
        device_id="d" * 64,
        token="ab" * 32,
        kind=DeviceKind.ALERT,
        topic="com.example.chat",
        environment=Environment.SANDBOX,
        registered_at=NOW,
        renewed_at=NOW,
        preview_key=key,
        key_expires_at=expires,
    )


SETTINGS = load_settings({}, require=False)


def test_chat_notification_uses_the_live_key_and_the_device_topic() -> None:
    n = chat_notification(received(), device(), SETTINGS, NOW)
    n.validate()
    assert (n.device_token, n.topic, n.collapse_id) == (
        "ab" * 32,
        "com.example.chat",
        "1613694358927",
    )
    assert open_blob(decoded(n.payload))["messageBody"].startswith("Welcome")


def test_chat_notification_with_an_expired_key_is_generic() -> None:
    n = chat_notification(received(), device(expires=NOW), SETTINGS, NOW)
    assert "data" not in decoded(n.payload)
    assert b"Welcome" not in n.payload


def test_chat_notification_with_a_corrupt_stored_key_is_generic() -> None:
    n = chat_notification(received(), device(key=bytes(10)), SETTINGS, NOW)
    assert "data" not in decoded(n.payload)


def test_chat_notification_with_ids_too_long_is_the_generic_alert_without_them() -> None:
    """Before: NotificationError, and the device got nothing (logged as "APNs rejected")."""
    n = chat_notification(received(thread_id="t" * 5000), device(), SETTINGS, NOW)
    n.validate()
    doc = decoded(n.payload)
    assert doc["aps"]["alert"] == {"title": "New message", "body": "You have a new message"}
    assert "thread-id" not in doc["aps"] and "threadId" not in doc and "data" not in doc


def test_chat_notification_that_cannot_fit_is_a_notification_error() -> None:
    """Only a deployment whose generic text alone is over the limit gets here."""
    settings = load_settings({"NOTIFICATION_GENERIC_BODY": "b" * 5000}, require=False)
    with pytest.raises(NotificationError) as caught:
        chat_notification(received(), device(key=None), settings, NOW)
    assert caught.value.field == "payload"


def test_withdraw_notification_is_a_valid_background_push() -> None:
    event = parse_event(sample("chat_message_deleted"))
    assert isinstance(event, ChatMessageEvent)
    n = withdraw_notification(event, device())
    n.validate()
    assert n.push_type is PushType.BACKGROUND and n.priority is Priority.CONSIDERATE


def test_options_come_from_settings() -> None:
    s = load_settings(
        {
            "PREVIEW_MODE": "plaintext",
            "NOTIFICATION_GENERIC_TITLE": "Chat",
            "NOTIFICATION_SOUND": "ping.caf",
            "NOTIFICATION_CATEGORY": "MSG",
        },
        require=False,
    )
    assert ChatPayloadOptions.from_settings(s) == ChatPayloadOptions(
        PreviewMode.PLAINTEXT, "Chat", "You have a new message", "ping.caf", "MSG"
    )


# --- shortening ------------------------------------------------------------------------------


def test_long_plaintext_is_shortened_with_an_ellipsis() -> None:
    body = "word " * 2000
    built = build_chat_payload(received(body=body), PLAINTEXT)
    shown = decoded(built.encoded)["aps"]["alert"]["body"]
    assert built.shortened and len(built.encoded) <= LIMIT
    assert shown.endswith(ELLIPSIS) and body.startswith(shown[:-1])
    assert LIMIT - len(built.encoded) < 10  # as long as fits, not arbitrarily short


def test_long_encrypted_body_is_shortened_inside_the_blob() -> None:
    body = "漢字かな交じり文" * 1000
    built = build_chat_payload(received(body=body), ENCRYPTED, preview_key=KEY)
    message = open_blob(decoded(built.encoded))["messageBody"]
    assert built.shortened and len(built.encoded) <= LIMIT
    assert message.endswith(ELLIPSIS) and body.startswith(message[:-1])
    assert LIMIT - len(built.encoded) < 120  # within a cipher block and a base64 quantum


def test_emoji_sequences_are_never_split() -> None:
    body = (FAMILY + "🇯🇵" + "👍🏽") * 500
    built = build_chat_payload(received(body=body), PLAINTEXT)
    shown = decoded(built.encoded)["aps"]["alert"]["body"][:-1]
    unit = FAMILY + "🇯🇵" + "👍🏽"
    assert shown == unit * (len(shown) // len(unit)) + unit[: len(shown) % len(unit)]
    assert shown.endswith((FAMILY, "🇯🇵", "👍🏽"))


def test_json_escapes_are_counted() -> None:
    body = '"\\\n\x01' * 2000  # each character grows when JSON-escaped
    built = build_chat_payload(received(body=body), PLAINTEXT)
    assert len(built.encoded) <= LIMIT
    shown = decoded(built.encoded)["aps"]["alert"]["body"]
    assert shown.endswith(ELLIPSIS) and body.startswith(shown[:-1])
    assert LIMIT - len(built.encoded) < 10


def test_huge_sender_name_is_shortened_too() -> None:
    built = build_chat_payload(received(sender_display_name="N" * 6000), PLAINTEXT)
    alert = decoded(built.encoded)["aps"]["alert"]
    assert len(built.encoded) <= LIMIT
    assert alert["title"].endswith(ELLIPSIS) and alert["body"] == ELLIPSIS


def test_ids_that_alone_exceed_the_limit_get_the_generic_alert() -> None:
    built = build_chat_payload(received(message_id="m" * 5000), PLAINTEXT)
    assert built.preview is PreviewShown.GENERIC and len(built.encoded) <= LIMIT
    assert "messageId" not in decoded(built.encoded) and built.collapse_id is None
    assert built.note.startswith("generic alert: the plaintext preview did not fit")


@pytest.mark.parametrize(
    ("text", "index", "ok"),
    [
        ("ab", 1, True),
        ("e\u0301x", 1, False),  # before a combining acute
        ("e\u0301x", 2, True),
        (FAMILY, 1, False),  # before a ZWJ
        (FAMILY, 2, False),  # after a ZWJ
        ("🇯🇵🇫🇷", 1, False),  # inside a flag (a pair of regional indicators)
        ("🇯🇵🇫🇷", 2, True),  # between two flags
        ("🇯🇵🇫🇷", 3, False),
        ("a🇯🇵", 1, True),
        ("👍🏽", 1, False),  # before a skin-tone modifier
        ("❤\ufe0f", 1, False),  # before a variation selector
        ("\u1100\u1161\u11a8", 1, False),  # conjoining Hangul jamo
        ("\u1100\u1161\u11a8", 2, False),
        ("한국", 1, True),
        ("中文", 1, True),
        ("a\r\nb", 2, False),
        ("", 0, True),
    ],
)
def test_is_boundary(text: str, index: int, ok: bool) -> None:
    assert is_boundary(text, index) is ok


def test_flags_split_between_pairs() -> None:
    flags = "🇯🇵🇫🇷"
    assert [i for i in range(len(flags) + 1) if is_boundary(flags, i)] == [0, 2, 4]


def test_shorten_to_fit_returns_text_untouched_when_it_fits() -> None:
    assert shorten_to_fit("hello", lambda t: True) == ("hello", False)
    assert shorten_to_fit("hello", lambda t: False) == (None, True)
    assert shorten_to_fit("hello world", lambda t: len(t) <= 7) == ("hello…", True)


# --- IncomingCall ----------------------------------------------------------------------------


def call_event(**changes: Any) -> IncomingCallEvent:
    event = parse_event(sample("incoming_call"))
    assert isinstance(event, IncomingCallEvent)
    return dataclasses.replace(event, **changes)


def test_call_payload_keys_and_values() -> None:
    event = call_event()
    built = build_call_payload(event)
    doc = decoded(built.encoded)
    cc = base64.b64encode(b"opaque-call-context-for-the-calling-sdk/0123456789").decode()
    assert doc == {
        "aps": {},
        "data": {
            "eventId": 107,
            "cp": cc,
            "callId": "5a2e3f1b-8c7d-4e6f-9a0b-1c2d3e4f5a6b",
            "videoCall": "false",
            "recipientId": event.to_id,
            "callerId": event.from_id,
            "displayName": "Bob(Admin)",
        },
        "serverCallId": event.server_call_id,
    }
    assert (built.push_type, built.priority) == (PushType.VOIP, Priority.IMMEDIATE)
    Notification("ab" * 32, "com.example.chat.voip", built.push_type, built.encoded).validate()


def test_call_payload_stays_within_5120_bytes() -> None:
    built = build_call_payload(call_event(caller_display_name="名" * 4000))
    assert len(built.encoded) <= 5120 and built.shortened
    assert len(built.encoded) > 4096  # the VoIP limit, not the alert one


@pytest.mark.parametrize(
    "context",
    [
        "",
        "a.b",
        "a.!!!.c",
        "a." + base64.urlsafe_b64encode(b"[1]").decode().rstrip("=") + ".c",
        "a." + base64.urlsafe_b64encode(b'{"cc": ""}').decode().rstrip("=") + ".c",
    ],
)
def test_unreadable_call_context_is_a_payload_error(context: str) -> None:
    with pytest.raises(PayloadError):
        build_call_payload(call_event(incoming_call_context=context))


def test_cc_is_read_from_base64url_without_padding() -> None:
    # {"cc": "x+/y==", "p": "???>>>"}: its base64url form has "_" and "-" and needs padding.
    middle = "eyJjYyI6ICJ4Ky95PT0iLCAicCI6ICI_Pz8-Pj4ifQ"
    assert call_context_cc(f"h.{middle}.s") == "x+/y=="


# --- properties ------------------------------------------------------------------------------

PIECES = st.sampled_from(
    [
        "a",
        "word ",
        " ",
        "é",
        "e\u0301",
        FAMILY,
        "🇯🇵",
        "👍🏽",
        "❤\ufe0f",
        "漢字",
        "한",
        "\u1100\u1161",
        '"',
        "\\",
        "\n",
        "\x00",
        "\u2028",
        "<b>",
        "&amp;",
    ]
)
BODIES = st.tuples(st.lists(PIECES | st.text(max_size=3), max_size=40), st.integers(1, 200)).map(
    lambda t: "".join(t[0]) * t[1]
)


def _assert_prefix(shown: str, original: str, shortened: bool) -> None:
    """Unshortened: the original. Shortened: a prefix cut on a boundary (or before trailing
    whitespace that was dropped), then the ellipsis."""
    if not shortened:
        assert shown == original
        return
    assert shown.endswith(ELLIPSIS)
    prefix = shown[: -len(ELLIPSIS)]
    assert original.startswith(prefix)
    cut = len(prefix)
    assert cut < len(original)
    assert is_boundary(original, cut) or original[cut].isspace()


@settings(deadline=None, max_examples=120)
@given(BODIES, st.text(max_size=60))
def test_plaintext_payload_is_valid_json_within_the_limit(body: str, name: str) -> None:
    built = build_chat_payload(received(body=body, sender_display_name=name), PLAINTEXT)
    assert len(built.encoded) <= LIMIT
    shown = decoded(built.encoded)["aps"]["alert"]["body"]
    _assert_prefix(shown, body if body.strip() else "You have a new message", built.shortened)


@settings(deadline=None, max_examples=80)
@given(BODIES, st.text(max_size=60))
def test_encrypted_payload_is_valid_json_within_the_limit(body: str, name: str) -> None:
    built = build_chat_payload(
        received(body=body, sender_display_name=name), ENCRYPTED, preview_key=KEY
    )
    assert len(built.encoded) <= LIMIT
    fields = open_blob(decoded(built.encoded))
    expected = body if body.strip() else "You have a new message"
    _assert_prefix(fields["messageBody"], expected, built.shortened)
    assert fields["senderDisplayName"] == name


@settings(deadline=None, max_examples=60)
@given(
    BODIES, st.sampled_from(list(MessageEventKind)), st.sampled_from([ENCRYPTED, PLAINTEXT, NONE])
)
def test_every_mode_and_kind_fits(
    body: str, kind: MessageEventKind, options: ChatPayloadOptions
) -> None:
    built = build_chat_payload(received(body=body, kind=kind), options, preview_key=KEY)
    assert len(built.encoded) <= LIMIT
    decoded(built.encoded)


@settings(deadline=None, max_examples=60)
@given(st.text(max_size=3000))
def test_call_payload_always_fits(name: str) -> None:
    built = build_call_payload(call_event(caller_display_name=name))
    assert len(built.encoded) <= 5120
    _assert_prefix(decoded(built.encoded)["data"]["displayName"], name, built.shortened)

"""Every chat message gets a push that fits, whatever its metadata, text and sender's name carry.

What does not fit is given up in a fixed order: the metadata (``acsChatMessageMetadata`` becomes
``"null"``), then the text, then the display name, each cut on a character boundary; when even
that does not fit, the generic alert. Before this, only the body was ever shortened: a message
with large metadata (a file-sharing message with six attachments, a metadata value of ~2,100
characters) or a sender named with 1,000 emoji raised PayloadError, and the device got nothing.

A message with no text after HTML is stripped shows the files its metadata names, or the generic
body: never a blank banner.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.domain.chat_payload import (
    ELLIPSIS,
    ChatPayload,
    ChatPayloadOptions,
    PreviewShown,
    attached_file_names,
    build_chat_payload,
    is_boundary,
)
from shared.domain.events import ChatMessageEvent, parse_event
from shared.settings import PreviewMode
from tests.unit.test_events import sample
from tests.unit.test_preview_crypto import SpecDecryptor

pytestmark = pytest.mark.unit

KEY = bytes(range(7, 71))
LIMIT = 4096
ENCRYPTED = ChatPayloadOptions(preview_mode=PreviewMode.ENCRYPTED)
PLAINTEXT = ChatPayloadOptions(preview_mode=PreviewMode.PLAINTEXT)
GENERIC_BODY = "You have a new message"
FAMILY = "👨\u200d👩\u200d👧\u200d👦"


def received(**changes: Any) -> ChatMessageEvent:
    event = parse_event(sample("chat_message_received"))
    assert isinstance(event, ChatMessageEvent)
    return dataclasses.replace(event, **changes)


def doc(built: ChatPayload) -> dict[str, Any]:
    assert len(built.encoded) <= LIMIT
    value = json.loads(built.encoded)
    assert isinstance(value, dict)
    return value


def opened(built: ChatPayload) -> dict[str, str]:
    return SpecDecryptor(KEY).open(doc(built)["data"]["e"])


def file_sharing(count: int, name_length: int = 40) -> dict[str, str]:
    """Metadata as the ACS UI library's chat composite sends it for ``count`` attached files."""
    files = [
        {
            "id": f"{n:08d}-aaaa-bbbb-cccc-000000000000",
            "name": f"{'Quarterly report ' * 3}"[:name_length] + f" {n}.pdf",
            "extension": "pdf",
            "url": "https://contoso-my.sharepoint.com/personal/ann_contoso_com/Documents/"
            f"Microsoft%20Teams%20Chat%20Files/Quarterly%20report%20{n}.pdf?download=1&"
            "e=" + "x" * 180,
            "attachmentType": "fileSharing",
        }
        for n in range(count)
    ]
    return {"fileSharingMetadata": json.dumps(files)}


# --- the cases the issue names -----------------------------------------------------------------


def test_a_file_sharing_message_with_six_attachments_keeps_its_encrypted_preview() -> None:
    event = received(body="Here are the files", metadata=file_sharing(6))
    built = build_chat_payload(event, ENCRYPTED, preview_key=KEY)
    fields = opened(built)
    assert built.preview is PreviewShown.ENCRYPTED
    assert fields["acsChatMessageMetadata"] == "null" and fields["messageBody"] == event.body
    assert fields["senderDisplayName"] == event.sender_display_name
    assert built.note == "metadata dropped"


def test_one_metadata_value_of_2200_characters_keeps_the_encrypted_preview() -> None:
    """With the sample's text, a value over ~2,120 characters no longer fits beside it."""
    event = received(metadata={"blob": "m" * 2200})
    fields = opened(build_chat_payload(event, ENCRYPTED, preview_key=KEY))
    assert fields["acsChatMessageMetadata"] == "null" and fields["messageBody"] == event.body


def test_metadata_that_fits_is_kept_whole() -> None:
    event = received(metadata=file_sharing(1))
    fields = opened(build_chat_payload(event, ENCRYPTED, preview_key=KEY))
    assert json.loads(fields["acsChatMessageMetadata"]) == dict(event.metadata)


def test_a_sender_named_with_1000_emoji_gets_a_shortened_name() -> None:
    name = "😀" * 1000
    built = build_chat_payload(received(sender_display_name=name), ENCRYPTED, preview_key=KEY)
    fields = opened(built)
    assert fields["messageBody"] == ELLIPSIS  # the text goes before the name
    assert fields["senderDisplayName"].endswith(ELLIPSIS)
    assert name.startswith(fields["senderDisplayName"][:-1])
    assert built.note == "metadata dropped, text and display name shortened"


def test_a_long_name_in_plaintext_mode_is_shortened_too() -> None:
    built = build_chat_payload(received(sender_display_name=FAMILY * 400), PLAINTEXT)
    alert = doc(built)["aps"]["alert"]
    assert alert["body"] == ELLIPSIS and alert["title"].endswith(ELLIPSIS)
    assert alert["title"][:-1] == FAMILY * (len(alert["title"][:-1]) // len(FAMILY))


def test_when_nothing_fits_the_generic_alert_goes() -> None:
    event = received(thread_id="19:" + "t" * 3000 + "@thread.v2")
    built = build_chat_payload(event, ENCRYPTED, preview_key=KEY)
    alert = doc(built)
    assert built.preview is PreviewShown.GENERIC and "data" not in alert
    assert alert["aps"]["alert"] == {"title": "New message", "body": GENERIC_BODY}
    assert built.note.startswith("generic alert: the encrypted preview did not fit")


# --- empty text ---------------------------------------------------------------------------------


def test_an_image_only_html_message_shows_the_generic_body() -> None:
    event = parse_event(
        {
            **sample("chat_message_received"),
            "data": {
                **sample("chat_message_received")["data"],
                "type": "html",
                "messageBody": '<p><img alt="image" src="" itemscope="png" id="x"></p>',
                "metadata": {},
            },
        }
    )
    assert isinstance(event, ChatMessageEvent) and event.body == ""
    fields = opened(build_chat_payload(event, ENCRYPTED, preview_key=KEY))
    plain = doc(build_chat_payload(event, PLAINTEXT))["aps"]["alert"]
    assert fields["messageBody"] == GENERIC_BODY == plain["body"]


def test_a_message_with_files_and_no_text_shows_an_attachment_line() -> None:
    metadata = file_sharing(2, name_length=6)
    event = received(body="", metadata=metadata)
    built = build_chat_payload(event, ENCRYPTED, preview_key=KEY)
    assert opened(built)["messageBody"] == "📎 Quarte 0.pdf, Quarte 1.pdf"
    assert built.note == "empty text: attachment line"
    plain = doc(build_chat_payload(event, PLAINTEXT))["aps"]["alert"]["body"]
    assert plain == "📎 Quarte 0.pdf, Quarte 1.pdf"


def test_a_whitespace_only_body_is_empty_text() -> None:
    shown = doc(build_chat_payload(received(body=" \n\t "), PLAINTEXT))["aps"]["alert"]["body"]
    assert shown == GENERIC_BODY


@pytest.mark.parametrize(
    "metadata",
    [
        {},
        {"fileSharingMetadata": "not json"},
        {"fileSharingMetadata": '{"name": "a.pdf"}'},
        {"fileSharingMetadata": '[{"name": 5}, "x", {"name": "  "}]'},
        {"fileSharingMetadata": "[]"},
    ],
)
def test_metadata_that_names_no_file_gives_the_generic_body(metadata: dict[str, str]) -> None:
    assert attached_file_names(metadata) == []
    shown = doc(build_chat_payload(received(body="", metadata=metadata), PLAINTEXT))
    assert shown["aps"]["alert"]["body"] == GENERIC_BODY


# --- properties ---------------------------------------------------------------------------------

GRAPHEMES = st.sampled_from(
    ["a", " ", "é", "e\u0301", FAMILY, "🇯🇵", "👍🏽", "❤\ufe0f", "漢", "한", '"', "\\", "\n", "😀"]
)


def _texts(max_units: int) -> st.SearchStrategy[str]:
    return st.tuples(st.lists(GRAPHEMES, max_size=12), st.integers(0, max_units)).map(
        lambda t: "".join(t[0]) * t[1]
    )


METADATA = st.one_of(
    st.dictionaries(st.text(max_size=20), st.text(max_size=50) | _texts(300), max_size=5),
    st.integers(0, 12).map(file_sharing),
)


def _cut_of(shown: str, original: str) -> None:
    """``shown`` is ``original``, or a prefix of it cut on a boundary followed by "…"."""
    if shown == original:
        return
    assert shown.endswith(ELLIPSIS)
    prefix = shown[: -len(ELLIPSIS)]
    assert original.startswith(prefix) and len(prefix) < len(original)
    assert is_boundary(original, len(prefix)) or original[len(prefix)].isspace()


@settings(deadline=None, max_examples=150)
@given(body=_texts(400), name=_texts(400), metadata=METADATA)
def test_encrypted_previews_always_go_and_give_up_in_order(
    body: str, name: str, metadata: dict[str, str]
) -> None:
    event = received(body=body, sender_display_name=name, metadata=metadata)
    built = build_chat_payload(event, ENCRYPTED, preview_key=KEY)
    # With real ids there is always room for an encrypted preview: nothing else is acceptable.
    assert built.preview is PreviewShown.ENCRYPTED
    fields = opened(built)
    text = body if body.strip() else fields["messageBody"]
    _cut_of(fields["messageBody"], text)
    _cut_of(fields["senderDisplayName"], name)
    kept_metadata = fields["acsChatMessageMetadata"] != "null"
    if kept_metadata:
        assert json.loads(fields["acsChatMessageMetadata"]) == dict(metadata)
    if kept_metadata or fields["messageBody"] != ELLIPSIS:
        assert fields["senderDisplayName"] == name  # the name goes last
    if kept_metadata:
        assert fields["messageBody"] == text  # the text goes after the metadata


@settings(deadline=None, max_examples=150)
@given(body=_texts(400), name=_texts(400), metadata=METADATA)
def test_plaintext_alerts_always_go_and_give_up_in_order(
    body: str, name: str, metadata: dict[str, str]
) -> None:
    event = received(body=body, sender_display_name=name, metadata=metadata)
    built = build_chat_payload(event, PLAINTEXT)
    assert built.preview is PreviewShown.PLAINTEXT
    alert = doc(built)["aps"]["alert"]
    title = name or "New message"
    _cut_of(alert["title"], title)
    if alert["body"] != ELLIPSIS:
        assert alert["title"] == title
    if body.strip():
        _cut_of(alert["body"], body)
    elif attached_file_names(metadata):
        assert alert["body"].startswith("📎") or alert["body"] == ELLIPSIS
    else:
        _cut_of(alert["body"], GENERIC_BODY)


@settings(deadline=None, max_examples=60)
@given(
    thread=st.integers(0, 5000),
    message=st.integers(0, 5000),
    sender=st.integers(0, 3000),
    mode=st.sampled_from([ENCRYPTED, PLAINTEXT]),
)
def test_ids_of_any_length_still_get_an_alert_within_the_limit(
    thread: int, message: int, sender: int, mode: ChatPayloadOptions
) -> None:
    event = received(
        thread_id="19:" + "t" * thread,
        message_id="1" + "0" * message,
        sender_id="8:acs:" + "s" * sender,
    )
    built = build_chat_payload(event, mode, preview_key=KEY)
    alert = doc(built)["aps"]["alert"]
    assert alert["title"] and alert["body"]

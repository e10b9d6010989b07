"""The notification model rejects, naming the field, what APNs would reject."""

from __future__ import annotations

import dataclasses
import uuid

import pytest

from shared.apns.errors import NotificationError
from shared.apns.notification import (
    Notification,
    Priority,
    PushType,
    is_apns_id,
    is_device_token,
    new_apns_id,
)
from shared.apns.payload import alert_payload, background_payload, encode_payload

pytestmark = pytest.mark.unit

TOKEN = "ab" * 32


def _alert(**changes: object) -> Notification:
    base = Notification(
        device_token=TOKEN,
        topic="com.example.chat",
        push_type=PushType.ALERT,
        payload=encode_payload(alert_payload(title="Ann", body="hi")),
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def _field_of(n: Notification) -> str:
    with pytest.raises(NotificationError) as info:
        n.validate()
    return info.value.field


def test_a_well_formed_alert_is_valid() -> None:
    _alert(priority=Priority.IMMEDIATE, expiration=0, collapse_id="m1").validate()


@pytest.mark.parametrize("length", [64, 100, 160, 200])
def test_device_tokens_of_any_even_hex_length_are_accepted(length: int) -> None:
    _alert(device_token="a" * length).validate()


@pytest.mark.parametrize("token", ["", "ab" * 31, "a" * 65, "zz" * 32, "ab" * 101, " " + "a" * 64])
def test_malformed_device_token_names_the_field(token: str) -> None:
    assert _field_of(_alert(device_token=token)) == "device_token"


def test_uppercase_hex_token_is_a_device_token() -> None:
    assert is_device_token("AB" * 32)


@pytest.mark.parametrize("topic", ["", "com.example chat", "com.example/chat"])
def test_malformed_topic_is_rejected(topic: str) -> None:
    assert _field_of(_alert(topic=topic)) == "topic"


def test_voip_push_needs_a_voip_topic() -> None:
    assert _field_of(_alert(push_type=PushType.VOIP)) == "topic"
    _alert(push_type=PushType.VOIP, topic="com.example.chat.voip").validate()


def test_alert_to_a_voip_topic_is_rejected() -> None:
    assert _field_of(_alert(topic="com.example.chat.voip")) == "topic"


def test_liveactivity_topic_suffix_is_checked() -> None:
    good = "com.example.chat.push-type.liveactivity"
    _alert(push_type=PushType.LIVEACTIVITY, topic=good).validate()
    assert _field_of(_alert(push_type=PushType.LIVEACTIVITY)) == "topic"


def test_background_with_priority_10_is_rejected() -> None:
    n = _alert(
        push_type=PushType.BACKGROUND,
        payload=encode_payload(background_payload()),
        priority=Priority.IMMEDIATE,
    )
    assert _field_of(n) == "priority"


def test_background_with_alert_in_aps_is_rejected() -> None:
    n = _alert(push_type=PushType.BACKGROUND, payload=b'{"aps":{"content-available":1,"badge":1}}')
    assert _field_of(n) == "payload"


def test_background_payload_is_valid_for_background_push() -> None:
    _alert(
        push_type=PushType.BACKGROUND,
        payload=encode_payload(background_payload({"m": "1"})),
        priority=Priority.CONSIDERATE,
    ).validate()


def test_payload_size_counts_encoded_bytes_not_characters() -> None:
    # 1400 three-byte characters: 4200 bytes once encoded, although only ~1400 characters.
    body = "€" * 1400
    payload = encode_payload(alert_payload(body=body))
    assert len(payload) > 4096
    assert _field_of(_alert(payload=payload)) == "payload"


def test_voip_allows_5120_bytes() -> None:
    payload = b'{"x":"' + b"a" * (5120 - 8) + b'"}'
    assert len(payload) == 5120
    _alert(push_type=PushType.VOIP, topic="com.example.chat.voip", payload=payload).validate()
    assert _field_of(_alert(payload=payload)) == "payload"


@pytest.mark.parametrize("payload", [b"", b"[1]", b"hello"])
def test_payload_must_be_a_json_object(payload: bytes) -> None:
    assert _field_of(_alert(payload=payload)) == "payload"


def test_collapse_id_over_64_bytes_is_rejected() -> None:
    _alert(collapse_id="x" * 64).validate()
    assert _field_of(_alert(collapse_id="é" * 33)) == "collapse_id"


@pytest.mark.parametrize("expiration", [-1, 2**40, True])
def test_bad_expiration_is_rejected(expiration: object) -> None:
    assert _field_of(_alert(expiration=expiration)) == "expiration"


def test_uppercase_apns_id_is_rejected() -> None:
    assert _field_of(_alert(apns_id=str(uuid.uuid4()).upper())) == "apns_id"


def test_priority_outside_apple_values_is_rejected() -> None:
    assert _field_of(_alert(priority=7)) == "priority"


def test_new_apns_id_is_a_lowercase_uuid4() -> None:
    value = new_apns_id()
    assert is_apns_id(value)
    assert uuid.UUID(value).version == 4


def test_new_apns_id_uses_the_injected_randomness() -> None:
    assert new_apns_id(lambda n: b"\x00" * n) == "00000000-0000-4000-8000-000000000000"

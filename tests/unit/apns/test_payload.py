"""Payload builders produce what Apple documents, in compact UTF-8 JSON."""

from __future__ import annotations

import json

import pytest

from shared.apns.errors import NotificationError
from shared.apns.notification import PushType
from shared.apns.payload import (
    alert_payload,
    background_payload,
    encode_payload,
    max_payload_bytes,
)

pytestmark = pytest.mark.unit


def test_alert_payload_carries_every_given_field() -> None:
    payload = alert_payload(
        title="Ann",
        subtitle="Team",
        body="hi",
        badge=3,
        sound="default",
        thread_id="t1",
        category="CHAT",
        mutable_content=True,
        interruption_level="time-sensitive",
        custom={"messageId": "m1"},
    )
    assert payload == {
        "aps": {
            "alert": {"title": "Ann", "subtitle": "Team", "body": "hi"},
            "badge": 3,
            "sound": "default",
            "thread-id": "t1",
            "category": "CHAT",
            "mutable-content": 1,
            "interruption-level": "time-sensitive",
        },
        "messageId": "m1",
    }


def test_alert_payload_omits_unset_fields() -> None:
    assert alert_payload(body="hi") == {"aps": {"alert": {"body": "hi"}}}


def test_badge_zero_is_kept() -> None:
    assert alert_payload(badge=0) == {"aps": {"badge": 0}}


def test_custom_keys_may_not_replace_aps() -> None:
    with pytest.raises(NotificationError) as info:
        background_payload({"aps": {}})
    assert info.value.field == "custom"


def test_unknown_interruption_level_is_rejected() -> None:
    with pytest.raises(NotificationError):
        alert_payload(interruption_level="urgent")


def test_background_payload_is_content_available_only() -> None:
    assert background_payload({"m": 1}) == {"aps": {"content-available": 1}, "m": 1}


def test_encode_payload_is_compact_utf8() -> None:
    raw = encode_payload({"aps": {"alert": {"body": "héllo €"}}})
    assert raw == '{"aps":{"alert":{"body":"héllo €"}}}'.encode()
    assert json.loads(raw) == {"aps": {"alert": {"body": "héllo €"}}}


def test_voip_limit_is_larger() -> None:
    assert max_payload_bytes(PushType.VOIP) == 5120
    assert max_payload_bytes(PushType.ALERT) == 4096
    assert max_payload_bytes(PushType.BACKGROUND) == 4096

"""Each simulator request is linked to the delivery-log key the app wrote for it."""

from __future__ import annotations

from typing import Any

import pytest

from devtools.console.state import link_of

pytestmark = pytest.mark.unit

USER = "8:acs:r_u"


def record(push_type: str, payload: dict[str, Any]) -> dict[str, Any]:
    return {"seq": 1, "headers": {"apns-push-type": push_type}, "payload": payload}


def test_a_chat_alert_links_to_its_message_and_kind() -> None:
    payload = {"aps": {"alert": "x"}, "threadId": "19:t", "messageId": "m1", "kind": "edited"}
    link, what = link_of(record("alert", payload), USER)
    assert (link, what) == (
        {"userId": USER, "threadId": "19:t", "messageId": "m1", "kind": "edited"},
        "message m1 edited",
    )


def test_a_withdraw_push_links_to_the_deleted_message() -> None:
    payload = {"aps": {"content-available": 1}, "deleted": {"threadId": "19:t", "messageId": "m1"}}
    link, _ = link_of(record("background", payload), USER)
    assert link == {"userId": USER, "threadId": "19:t", "messageId": "m1", "kind": "deleted"}


def test_a_voip_push_links_to_the_users_calls_by_server_call_id() -> None:
    payload = {"aps": {}, "data": {"eventId": 107}, "serverCallId": "call-1"}
    link, what = link_of(record("voip", payload), USER)
    assert (link, what) == (
        {"userId": USER, "threadId": "calls", "messageId": "call-1", "kind": "call"},
        "incoming call",
    )


def test_a_renewal_wake_is_not_in_the_delivery_log() -> None:
    assert link_of(record("background", {"aps": {"content-available": 1}}), USER) == (
        None,
        "renewal wake",
    )


def test_a_push_to_a_token_nobody_registered_has_no_link() -> None:
    payload = {"aps": {"alert": "x"}, "threadId": "19:t", "messageId": "m1", "kind": "received"}
    assert link_of(record("alert", payload), None)[0] is None

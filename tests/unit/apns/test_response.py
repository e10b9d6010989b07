"""Responses parse into values that say whether a retry can help."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from shared.apns.response import PushResult, Reason, parse_result

pytestmark = pytest.mark.unit

ID = "00000000-0000-4000-8000-000000000000"


def test_success_is_ok_and_neither_permanent_nor_retryable() -> None:
    result = parse_result(200, b"", ID, "u1", 1)
    assert (result.ok, result.permanent, result.retryable) == (True, False, False)
    assert result.apns_unique_id == "u1"


def test_unregistered_carries_the_timestamp_in_utc() -> None:
    result = parse_result(410, b'{"reason":"Unregistered","timestamp":1700000000123}', ID, None, 1)
    assert result.reason is Reason.UNREGISTERED
    assert result.unregistered_at == datetime(2023, 11, 14, 22, 13, 20, 123000, tzinfo=UTC)
    assert result.permanent and result.unregistered


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        (400, "BadDeviceToken"),
        (400, "DeviceTokenNotForTopic"),
        (403, "Forbidden"),
        (410, "ExpiredToken"),
        (413, "PayloadTooLarge"),
        (403, "InvalidProviderToken"),
    ],
)
def test_apple_never_retry_reasons_are_permanent(status: int, reason: str) -> None:
    result = parse_result(status, f'{{"reason":"{reason}"}}'.encode(), ID, None, 1)
    assert result.permanent
    assert result.reason == reason


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        (429, "TooManyRequests"),
        (500, "InternalServerError"),
        (503, "ServiceUnavailable"),
        (503, "Shutdown"),
        (403, "ExpiredProviderToken"),
        (429, "TooManyProviderTokenUpdates"),
    ],
)
def test_load_and_connection_reasons_are_retryable(status: int, reason: str) -> None:
    assert parse_result(status, f'{{"reason":"{reason}"}}'.encode(), ID, None, 1).retryable


def test_unlisted_reason_is_unknown_and_judged_by_status() -> None:
    assert parse_result(502, b'{"reason":"Weird"}', ID, None, 1).retryable
    unknown = parse_result(400, b'{"reason":"Weird"}', ID, None, 1)
    assert unknown.reason is Reason.UNKNOWN and unknown.permanent


def test_body_that_is_not_json_is_unknown() -> None:
    assert parse_result(500, b"<html>", ID, None, 1).reason is Reason.UNKNOWN


def test_every_reason_round_trips_from_its_text() -> None:
    for reason in Reason:
        assert Reason.parse(reason.value) is reason


def test_push_result_is_immutable() -> None:
    result = PushResult(200, None, ID)
    with pytest.raises(AttributeError):
        result.status = 400  # type: ignore[misc]

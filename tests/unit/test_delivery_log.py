"""Asking the delivery log: the query, the admin check and the JSON answer."""

from __future__ import annotations

from datetime import timedelta

import pytest

from shared.auth import AuthSource, Caller
from shared.deliveries import DeliveryKey, DeliveryKind, DeliveryState, DeviceTarget, Outcome
from shared.delivery_log import LogQuery, answer_log_request, parse_query, purge_deliveries
from shared.http_api import RequestError
from tests.unit.chat_fakes import T0, Clock, FakeDeliveries, settings

pytestmark = pytest.mark.unit

PARAMS = {"userId": "8:acs:r_u", "threadId": "19:t@thread.v2", "messageId": "17"}
KEY = DeliveryKey("8:acs:r_u", "19:t@thread.v2", "17", DeliveryKind.RECEIVED, 17)
DEVICE = DeviceTarget("d" * 64, "abcdef…0123", "com.example.chat", "sandbox")
ADMIN = Caller("https://idp", "admin-1", AuthSource.JWT)


async def logged() -> FakeDeliveries:
    store = FakeDeliveries()
    claims = await store.claim(KEY, [DEVICE], now=T0, lease=timedelta(seconds=30), event_id="e")
    outcome = Outcome(DeliveryState.DELIVERED, 200, None, "0a-1", 1)
    await store.complete([(claims.claimed[0], outcome)], T0 + timedelta(seconds=1))
    return store


def test_query_reads_the_three_ids() -> None:
    assert parse_query(PARAMS) == LogQuery("8:acs:r_u", "19:t@thread.v2", "17")


@pytest.mark.parametrize("missing", ["userId", "threadId", "messageId"])
def test_query_without_an_id_names_the_field(missing: str) -> None:
    with pytest.raises(RequestError) as caught:
        parse_query({k: v for k, v in PARAMS.items() if k != missing})
    assert (caught.value.status, caught.value.field) == (400, missing)


async def test_non_admin_is_refused() -> None:
    caller = Caller("https://idp", "someone", AuthSource.JWT)
    with pytest.raises(RequestError) as caught:
        await answer_log_request(
            PARAMS, caller, settings(delivery_log_admins=("admin-1",)), FakeDeliveries()
        )
    assert caught.value.status == 403


async def test_admin_reads_each_device_outcome() -> None:
    answer = await answer_log_request(
        PARAMS, ADMIN, settings(delivery_log_admins=("admin-1",)), await logged()
    )
    (row,) = answer["deliveries"]
    assert (row["state"], row["status"], row["apnsId"], row["token"], row["completedAt"]) == (
        "delivered",
        200,
        "0a-1",
        "abcdef…0123",
        "2026-03-01T12:00:01Z",
    )


async def test_purge_removes_records_past_the_retention() -> None:
    store = await logged()
    clock = Clock(T0 + timedelta(days=8))
    report = await purge_deliveries(store, settings(delivery_retention_days=7), clock)
    assert (report.records, store.rows) == (1, {})

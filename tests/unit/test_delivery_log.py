"""Asking the delivery log: the query, the admin check and the JSON answer."""

from __future__ import annotations

from datetime import timedelta

import pytest

from shared.domain.callers import AuthSource, Caller
from shared.edges.http_api import status_of
from shared.errors import RefusalError
from shared.settings import Settings
from shared.storage.deliveries import (
    DeliveryKey,
    DeliveryKind,
    DeliveryState,
    DeviceTarget,
    Outcome,
)
from shared.usecases.delivery_log import (
    LogQuery,
    answer_log_request,
    is_admin,
    parse_query,
    purge_deliveries,
)
from tests.fakes.clock import T0, FakeClock
from tests.fakes.deliveries import FakeDeliveries
from tests.unit.chat_fakes import settings

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
    with pytest.raises(RefusalError) as caught:
        parse_query({k: v for k, v in PARAMS.items() if k != missing})
    assert (status_of(caught.value), caught.value.field) == (400, missing)


async def test_non_admin_is_refused() -> None:
    caller = Caller("https://idp", "someone", AuthSource.JWT)
    with pytest.raises(RefusalError) as caught:
        await answer_log_request(PARAMS, caller, ADMINS_BARE, FakeDeliveries())
    assert status_of(caught.value) == 403


ADMINS_BARE = settings(delivery_log_admins=("admin-1",), auth_jwt_issuer="https://idp")
ENTRA = "https://login.microsoftonline.com/tenant-1/v2.0"
OID = "6f1d2c3b-0000-4000-8000-00000000a11c"
ADMINS_NAMED = settings(delivery_log_admins=(f"{ENTRA} admin-1", f"{ENTRA} {OID}"))


@pytest.mark.parametrize(
    ("caller", "admins"),
    [
        (ADMIN, ADMINS_BARE),  # a bare subject is one at AUTH_JWT_ISSUER
        (Caller(ENTRA, "admin-1", AuthSource.EASY_AUTH), ADMINS_NAMED),
        (Caller(ENTRA, "pairwise-sub", AuthSource.EASY_AUTH, object_id=OID), ADMINS_NAMED),
        (Caller(ENTRA, "pairwise-sub", AuthSource.JWT, object_id=OID), ADMINS_NAMED),
    ],
    ids=["bare-subject", "issuer-and-subject", "easy-auth-object-id", "jwt-object-id"],
)
def test_an_admin_is_named_by_issuer_and_subject_or_object_id(
    caller: Caller, admins: Settings
) -> None:
    assert is_admin(caller, admins)


@pytest.mark.parametrize(
    ("caller", "admins"),
    [
        # Easy Auth may front several providers: subject "admin-1" elsewhere is someone else.
        (Caller("https://evil.example", "admin-1", AuthSource.EASY_AUTH), ADMINS_BARE),
        (Caller("easyauth:aad", "admin-1", AuthSource.EASY_AUTH), ADMINS_BARE),
        (Caller("https://evil.example", "admin-1", AuthSource.EASY_AUTH), ADMINS_NAMED),
        (Caller("https://evil.example", "x", AuthSource.EASY_AUTH, object_id=OID), ADMINS_NAMED),
        (Caller("https://idp", "admin-1", AuthSource.JWT), ADMINS_NAMED),
        (Caller("https://idp", "admin-1", AuthSource.JWT),
         settings(delivery_log_admins=("admin-1",))),  # no AUTH_JWT_ISSUER: bare names nobody
    ],
    ids=["other-issuer-bare", "no-issuer-bare", "other-issuer-named", "other-issuer-oid",
         "named-elsewhere", "bare-without-issuer"],
)  # fmt: skip
def test_the_same_subject_from_another_issuer_is_not_an_admin(
    caller: Caller, admins: Settings
) -> None:
    assert not is_admin(caller, admins)


async def test_admin_reads_each_device_outcome() -> None:
    answer = await answer_log_request(PARAMS, ADMIN, ADMINS_BARE, await logged())
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
    clock = FakeClock(T0 + timedelta(days=8))
    report = await purge_deliveries(store, settings(delivery_retention_days=7), clock)
    assert (report.records, store.rows) == (1, {})

"""Device registration use cases on in-memory fakes: validation, ownership, keys, schedule."""

from __future__ import annotations

import asyncio
import base64
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.apns.notification import Environment
from shared.domain.devices import DeviceKind, device_id_for
from shared.edges.http_api import status_of
from shared.storage.devices import RegistrationOutcome
from shared.storage.renewal_schedule import ScheduleEntry, bucket_for
from shared.usecases.registration import (
    DeviceNotFoundError,
    InvalidFieldError,
    RegistrationRules,
    allowed_topics,
    list_devices,
    register_device,
    remove_device,
)
from tests.fakes.devices import FakeDeviceStore
from tests.fakes.renewal_schedule import FakeRenewalSchedule

pytestmark = pytest.mark.unit

NOW = datetime(2026, 1, 5, 12, 0, 30, tzinfo=UTC)
ALICE = "8:acs:res_00000001-alice"
BOB = "8:acs:res_00000002-bob"
TOPIC = "com.example.chat"
TOKEN = "a1" * 32
KEY = bytes(range(64))
RULES = RegistrationRules(
    allowed_topics=frozenset({TOPIC}),
    key_lifetime=timedelta(minutes=45),
    renewal_lead=timedelta(minutes=10),
)


def body(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "token": TOKEN,
        "kind": "alert",
        "topic": TOPIC,
        "environment": "production",
        "key": base64.b64encode(KEY).decode(),
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


@pytest.fixture
def store() -> FakeDeviceStore:
    return FakeDeviceStore()


@pytest.fixture
def schedule() -> FakeRenewalSchedule:
    return FakeRenewalSchedule()


async def register(
    store: FakeDeviceStore,
    schedule: FakeRenewalSchedule,
    user: str = ALICE,
    now: datetime = NOW,
    **fields: Any,
) -> Any:
    return await register_device(
        user, body(**fields), now, registry=store, schedule=schedule, rules=RULES
    )


async def test_the_device_id_is_the_sha256_of_the_lowercase_token(
    store: FakeDeviceStore, schedule: FakeRenewalSchedule
) -> None:
    result = await register(store, schedule, token=TOKEN.upper())
    assert result.device_id == device_id_for(TOKEN)
    device = await store.get(ALICE, result.device_id)
    assert device is not None
    assert device.token == TOKEN


async def test_a_registered_device_keeps_what_the_app_sent(
    store: FakeDeviceStore, schedule: FakeRenewalSchedule
) -> None:
    result = await register(store, schedule, appVersion="2.3.1 (45)", locale="de_CH")
    device = await store.get(ALICE, result.device_id)
    assert device is not None
    assert (device.kind, device.topic, device.environment) == (
        DeviceKind.ALERT,
        TOPIC,
        Environment.PRODUCTION,
    )
    assert (device.app_version, device.locale) == ("2.3.1 (45)", "de_CH")


async def test_the_preview_key_is_live_for_the_key_lifetime(
    store: FakeDeviceStore, schedule: FakeRenewalSchedule
) -> None:
    result = await register(store, schedule)
    device = await store.get(ALICE, result.device_id)
    assert device is not None
    assert device.live_key(NOW + timedelta(minutes=44, seconds=59)) == KEY
    assert device.live_key(NOW + timedelta(minutes=45)) is None
    assert result.as_json()["keyExpiresAt"] == "2026-01-05T12:45:30Z"


async def test_an_alert_device_with_a_key_is_scheduled_before_the_key_expires(
    store: FakeDeviceStore, schedule: FakeRenewalSchedule
) -> None:
    result = await register(store, schedule)
    assert schedule.entries() == [ScheduleEntry("202601051235", ALICE, result.device_id)]


async def test_an_alert_device_without_a_key_is_not_scheduled(
    store: FakeDeviceStore, schedule: FakeRenewalSchedule
) -> None:
    result = await register(store, schedule, key=None)
    assert schedule.entries() == []
    assert "keyExpiresAt" not in result.as_json()


async def test_a_voip_device_is_registered_and_never_scheduled(
    store: FakeDeviceStore, schedule: FakeRenewalSchedule
) -> None:
    result = await register(store, schedule, kind="voip", key=None)
    device = await store.get(ALICE, result.device_id)
    assert device is not None
    assert device.kind is DeviceKind.VOIP
    assert schedule.entries() == []


async def test_development_is_accepted_as_sandbox(
    store: FakeDeviceStore, schedule: FakeRenewalSchedule
) -> None:
    result = await register(store, schedule, environment="development")
    device = await store.get(ALICE, result.device_id)
    assert device is not None
    assert device.environment is Environment.SANDBOX


async def test_a_renewal_keeps_the_registration_time_and_moves_the_schedule(
    store: FakeDeviceStore, schedule: FakeRenewalSchedule
) -> None:
    later = NOW + timedelta(minutes=40)
    await register(store, schedule)
    again = await register(store, schedule, now=later)
    device = await store.get(ALICE, again.device_id)
    assert again.outcome is RegistrationOutcome.RENEWED
    assert device is not None
    assert (device.registered_at, device.renewed_at) == (NOW, later)
    assert bucket_for(later + timedelta(minutes=35)) in schedule.buckets


async def test_a_token_registered_by_another_user_moves_to_that_user(
    store: FakeDeviceStore, schedule: FakeRenewalSchedule
) -> None:
    await register(store, schedule, ALICE)
    moved = await register(store, schedule, BOB)
    assert moved.outcome is RegistrationOutcome.MOVED
    assert await store.list_for_user(ALICE) == []
    assert [d.device_id for d in await store.list_for_user(BOB)] == [moved.device_id]


async def test_taking_over_one_token_leaves_the_other_users_other_devices_alone(
    store: FakeDeviceStore, schedule: FakeRenewalSchedule
) -> None:
    other = await register(store, schedule, ALICE, token="b2" * 32)
    await register(store, schedule, ALICE)
    await register(store, schedule, BOB)
    assert [d.device_id for d in await store.list_for_user(ALICE)] == [other.device_id]


async def test_a_listing_shows_neither_the_key_nor_the_full_token(
    store: FakeDeviceStore, schedule: FakeRenewalSchedule
) -> None:
    await register(store, schedule)
    listing = await list_devices(ALICE, NOW, registry=store)
    text = json.dumps(listing)
    assert TOKEN not in text
    assert base64.b64encode(KEY).decode() not in text
    assert listing[0]["token"] == "a1a1a1…a1a1"
    assert listing[0]["hasLiveKey"] is True


async def test_a_listing_shows_only_the_callers_devices(
    store: FakeDeviceStore, schedule: FakeRenewalSchedule
) -> None:
    mine = await register(store, schedule, ALICE)
    await register(store, schedule, BOB, token="c3" * 32)
    listing = await list_devices(ALICE, NOW, registry=store)
    assert [d["deviceId"] for d in listing] == [mine.device_id]


async def test_the_owner_removes_a_device_and_its_schedule(
    store: FakeDeviceStore, schedule: FakeRenewalSchedule
) -> None:
    result = await register(store, schedule)
    await remove_device(ALICE, result.device_id, registry=store, schedule=schedule, rules=RULES)
    assert await store.list_for_user(ALICE) == []
    assert schedule.entries() == []


async def test_removing_another_users_device_is_not_found_and_changes_nothing(
    store: FakeDeviceStore, schedule: FakeRenewalSchedule
) -> None:
    bobs = await register(store, schedule, BOB)
    with pytest.raises(DeviceNotFoundError) as theirs:
        await remove_device(ALICE, bobs.device_id, registry=store, schedule=schedule, rules=RULES)
    with pytest.raises(DeviceNotFoundError) as missing:
        await remove_device(ALICE, "0" * 64, registry=store, schedule=schedule, rules=RULES)
    assert (status_of(theirs.value), theirs.value.reason) == (
        status_of(missing.value),
        missing.value.reason,
    )
    assert [d.device_id for d in await store.list_for_user(BOB)] == [bobs.device_id]
    assert len(schedule.entries()) == 1


@pytest.mark.parametrize("device_id", ["", "abc", "' or 1 eq 1", "A" * 64, "0" * 63 + "/"])
async def test_a_malformed_device_id_is_not_found_without_touching_storage(
    store: FakeDeviceStore, schedule: FakeRenewalSchedule, device_id: str
) -> None:
    with pytest.raises(DeviceNotFoundError):
        await remove_device(ALICE, device_id, registry=store, schedule=schedule, rules=RULES)
    assert store.calls == 0


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"token": None}, "token"),
        ({"token": 42}, "token"),
        ({"token": "a1" * 31}, "token"),
        ({"token": "a1" * 100 + "a1"}, "token"),
        ({"token": "a1" * 32 + "a"}, "token"),
        ({"token": "g1" * 32}, "token"),
        ({"token": " " + "a1" * 32}, "token"),
        ({"kind": "banner"}, "kind"),
        ({"kind": None}, "kind"),
        ({"topic": "com.evil.app"}, "topic"),
        ({"topic": TOPIC + ".voip"}, "topic"),
        ({"environment": "staging"}, "environment"),
        ({"environment": None}, "environment"),
        ({"key": "not base64!"}, "key"),
        ({"key": base64.b64encode(bytes(63)).decode()}, "key"),
        ({"key": base64.b64encode(bytes(65)).decode()}, "key"),
        ({"key": base64.b64encode(KEY).decode().rstrip("=")}, "key"),
        ({"key": base64.urlsafe_b64encode(b"\xff" * 64).decode()}, "key"),
        ({"key": "\n" + base64.b64encode(KEY).decode()}, "key"),
        ({"kind": "voip"}, "key"),
        ({"appVersion": "x" * 65}, "appVersion"),
        ({"appVersion": "1.0\n"}, "appVersion"),
        ({"locale": "en US"}, "locale"),
        ({"locale": ["en"]}, "locale"),
    ],
)
async def test_an_invalid_field_is_refused_by_name_and_stores_nothing(
    store: FakeDeviceStore,
    schedule: FakeRenewalSchedule,
    fields: dict[str, Any],
    field: str,
) -> None:
    with pytest.raises(InvalidFieldError) as err:
        await register(store, schedule, **fields)
    assert (status_of(err.value), err.value.field) == (400, field)
    assert store.calls == 0
    assert schedule.entries() == []


@pytest.mark.parametrize("length", [64, 200])
async def test_tokens_of_64_to_200_hex_digits_are_accepted(
    store: FakeDeviceStore, schedule: FakeRenewalSchedule, length: int
) -> None:
    result = await register(store, schedule, token="f" * length)
    assert await store.get(ALICE, result.device_id) is not None


def test_allowed_topics_are_the_bundle_ids_of_the_configured_apps() -> None:
    apps = json.dumps([{"bundleId": "com.a", "keyId": "K"}, {"bundleId": "com.b", "p12": "x"}])
    assert allowed_topics(apps) == {"com.a", "com.b"}
    assert allowed_topics("") == frozenset()


# --- the per-user device limit (MAX_DEVICES_PER_USER) -----------------------------------------

LIMITED = replace(RULES, max_devices=3)


async def register_limited(
    store: FakeDeviceStore, schedule: FakeRenewalSchedule, n: int, at: datetime
) -> Any:
    return await register_device(
        ALICE, body(token=f"{n:02x}" * 32), at, registry=store, schedule=schedule, rules=LIMITED
    )


async def test_a_user_at_the_limit_loses_the_stalest_registration_to_a_new_one(
    store: FakeDeviceStore, schedule: FakeRenewalSchedule
) -> None:
    for n in (1, 2, 3):
        await register_limited(store, schedule, n, NOW + timedelta(minutes=n))
    await register_limited(store, schedule, 1, NOW + timedelta(minutes=5))  # 1 renewed: 2 stalest
    await register_limited(store, schedule, 4, NOW + timedelta(minutes=6))
    kept = sorted(d.token[:2] for d in await store.list_for_user(ALICE))
    assert kept == ["01", "03", "04"]


async def test_the_removed_registration_leaves_the_renewal_schedule(
    store: FakeDeviceStore, schedule: FakeRenewalSchedule
) -> None:
    for n in (1, 2, 3, 4):
        await register_limited(store, schedule, n, NOW + timedelta(minutes=n))
    scheduled = {device for bucket in schedule.buckets.values() for _, device in bucket}
    assert scheduled == {d.device_id for d in await store.list_for_user(ALICE)}


async def test_renewals_at_the_limit_remove_nothing(
    store: FakeDeviceStore, schedule: FakeRenewalSchedule
) -> None:
    for n in (1, 2, 3):
        await register_limited(store, schedule, n, NOW + timedelta(minutes=n))
    for n in (3, 2, 1):
        await register_limited(store, schedule, n, NOW + timedelta(minutes=10 + n))
    assert len(await store.list_for_user(ALICE)) == 3


async def test_a_flood_of_registrations_keeps_the_newest_within_the_limit(
    store: FakeDeviceStore, schedule: FakeRenewalSchedule
) -> None:
    await asyncio.gather(
        *(register_limited(store, schedule, n, NOW + timedelta(seconds=n)) for n in range(1, 41))
    )
    kept = sorted(d.token[:2] for d in await store.list_for_user(ALICE))
    assert kept == ["26", "27", "28"]  # 38, 39 and 40 in hex


async def test_another_users_devices_are_never_removed_to_make_room(
    store: FakeDeviceStore, schedule: FakeRenewalSchedule
) -> None:
    await register(store, schedule, BOB, token="b0" * 32)
    for n in range(1, 6):
        await register_limited(store, schedule, n, NOW + timedelta(minutes=n))
    assert [d.token for d in await store.list_for_user(BOB)] == ["b0" * 32]

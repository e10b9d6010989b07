"""Re-registering a device: an absent ``key`` keeps the stored preview key, ``"key": null``
removes it.

Apps register on every launch and whenever the device token changes, often with no key at hand
(the key comes from the chat SDK's key storage, later). Before, such a re-registration erased
the live key, and previews turned generic until the next renewal.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.domain.devices import device_id_for
from shared.usecases.registration import RegistrationRules, list_devices, register_device
from tests.fakes.devices import FakeDeviceStore
from tests.fakes.renewal_schedule import FakeRenewalSchedule

pytestmark = pytest.mark.unit

NOW = datetime(2026, 1, 5, 12, 0, 30, tzinfo=UTC)
ALICE = "8:acs:res_00000001-alice"
BOB = "8:acs:res_00000002-bob"
TOKEN = "a1" * 32
KEY = bytes(range(64))
RULES = RegistrationRules(
    allowed_topics=frozenset({"com.example.chat"}),
    key_lifetime=timedelta(minutes=45),
    renewal_lead=timedelta(minutes=10),
)
BASE = {"token": TOKEN, "kind": "alert", "topic": "com.example.chat", "environment": "sandbox"}
WITH_KEY = {**BASE, "key": base64.b64encode(KEY).decode()}


class World:
    def __init__(self) -> None:
        self.store, self.schedule = FakeDeviceStore(), FakeRenewalSchedule()

    async def put(self, body: dict[str, Any], at: datetime, user: str = ALICE) -> dict[str, str]:
        done = await register_device(
            user, body, at, registry=self.store, schedule=self.schedule, rules=RULES
        )
        return done.as_json()

    async def live_key(self, at: datetime, user: str = ALICE) -> bytes | None:
        device = await self.store.get(user, device_id_for(TOKEN))
        return None if device is None else device.live_key(at)


async def test_re_registering_without_a_key_keeps_the_live_key() -> None:
    world = World()
    await world.put(WITH_KEY, NOW)
    later = NOW + timedelta(minutes=10)
    answer = await world.put(BASE, later)
    assert await world.live_key(later) == KEY
    assert "keyExpiresAt" not in answer  # this request stored no key


async def test_the_kept_key_keeps_its_expiry() -> None:
    world = World()
    await world.put(WITH_KEY, NOW)
    await world.put(BASE, NOW + timedelta(minutes=40))
    assert await world.live_key(NOW + timedelta(minutes=46)) is None


async def test_a_null_key_removes_the_stored_key() -> None:
    world = World()
    await world.put(WITH_KEY, NOW)
    await world.put({**BASE, "key": None}, NOW + timedelta(minutes=1))
    assert await world.live_key(NOW + timedelta(minutes=2)) is None
    listing = await list_devices(ALICE, NOW + timedelta(minutes=2), registry=world.store)
    assert listing[0]["hasLiveKey"] is False


async def test_a_new_key_replaces_the_stored_one() -> None:
    world = World()
    await world.put(WITH_KEY, NOW)
    fresh = bytes(64)
    await world.put({**BASE, "key": base64.b64encode(fresh).decode()}, NOW + timedelta(minutes=5))
    assert await world.live_key(NOW + timedelta(minutes=6)) == fresh


async def test_a_token_moved_to_another_user_does_not_take_the_key_along() -> None:
    world = World()
    await world.put(WITH_KEY, NOW)
    await world.put(BASE, NOW + timedelta(minutes=1), user=BOB)
    assert await world.live_key(NOW + timedelta(minutes=2), user=BOB) is None

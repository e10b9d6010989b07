"""Settling a batch of APNs answers: each outcome comes back beside the item it was for."""

from __future__ import annotations

import pytest

from shared.apns.errors import ApnsUnavailable
from shared.apns.response import PushResult, Reason
from shared.push.outcomes import Answered, OutcomeRules, settle
from shared.push.pipeline import settling_of
from shared.storage.deliveries import DeliveryState
from tests.fakes.clock import T0
from tests.fakes.devices import FakeDeviceStore
from tests.unit.chat_fakes import device

pytestmark = pytest.mark.unit

USER = "8:acs:res_00000000-0000-0000-0000-000000000001"
APNS_ID = "00000000-0000-4000-8000-000000000000"
RULES = OutcomeRules(bad_token_remove_after=3, config_error_threshold=5)


async def test_each_outcome_stands_beside_its_item_in_the_order_given() -> None:
    ok, gone, busy = device(USER, 1), device(USER, 2), device(USER, 3)
    registry = FakeDeviceStore(ok, gone, busy)
    answered = [
        Answered("first", settling_of(ok), PushResult(200, None, APNS_ID)),
        Answered("second", settling_of(gone), PushResult(410, Reason.UNREGISTERED, APNS_ID)),
        Answered("third", settling_of(busy), ApnsUnavailable("no answer")),
    ]
    settled = await settle(answered, devices=registry, now=T0, rules=RULES)
    states = [(item, outcome.state) for item, outcome in settled.outcomes]
    assert states == [
        ("first", DeliveryState.DELIVERED),
        ("second", DeliveryState.FAILED),
        ("third", DeliveryState.RELEASED),
    ]
    counts = (settled.delivered, settled.failed, settled.released, settled.removed)
    left = sorted(d.device_id for d in registry.of(USER))
    assert (counts, settled.retry_needed) == ((1, 1, 1, 1), True)
    assert left == sorted([ok.device_id, busy.device_id])

"""Incoming calls through the real app on the local host, driven like an iOS app and Event Grid.

The callee signs in with the development identity provider, gets their ACS identity from
``POST /api/token`` (the local ACS identity service), registers a PushKit token with
``PUT /api/devices`` (``"kind": "voip"``), and then the IncomingCall sample, addressed to them, is
posted to ``/runtime/webhooks/eventgrid?functionName=on_call_event``. The APNs simulator shows
exactly what APNs received.
"""

from __future__ import annotations

import base64
import copy
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from devtools.acs_identity_service import AcsIdentityService
from devtools.apns_simulator import ApnsSimulator, Fault, RequestRecord
from devtools.azurite import Azurite
from devtools.dev_identity_provider import DevIdentityProvider
from tests.e2e.conftest import LocalApp
from tests.local_apns import APP, KEY, simulator_settings
from tests.sample_events import SAMPLES

pytestmark = pytest.mark.e2e

WEBHOOK = "/runtime/webhooks/eventgrid?functionName=on_call_event"
PHONE, LAPTOP = "c4" * 32, "d5" * 32  # a PushKit token, and an alert-only device


def settings(
    sim: ApnsSimulator,
    idp: DevIdentityProvider,
    acs: AcsIdentityService,
    az: Azurite,
    prefix: str,
) -> dict[str, str]:
    return {
        "STORAGE_CONNECTION": az.connection_string,
        "TABLE_PREFIX": prefix,
        **simulator_settings(sim, [KEY.app(APP)]),
        "APNS_RETRY_BUDGET_SECONDS": "0.6",
        "KEY_ENCRYPTION_KEYS": "k1=" + base64.b64encode(b"\x09" * 32).decode(),
        "ACS_CONNECTION_STRING": acs.connection_string,
        "ACS_CA_FILE": str(acs.ca_file),
        **idp.settings,
    }


class Callee:
    """The served app, seen by a signed-in user with a PushKit token, and by Event Grid."""

    def __init__(self, base: str, sim: ApnsSimulator, idp: DevIdentityProvider) -> None:
        self.base = base
        self.sim = sim
        self.auth = {"Authorization": "Bearer " + idp.token("carol")}
        issued = httpx.post(base + "/api/token", headers=self.auth, timeout=30)
        assert issued.status_code == 200, issued.text
        self.acs_user_id: str = issued.json()["acsUserId"]

    def register(self, token: str, kind: str) -> None:
        body: dict[str, Any] = {"token": token, "kind": kind, "topic": APP}
        body["environment"] = "sandbox"
        response = httpx.put(self.base + "/api/devices", headers=self.auth, json=body, timeout=30)
        assert response.status_code == 200, response.text

    def call(
        self, schema: str = "eventgrid", *, age: timedelta | None = timedelta(seconds=1)
    ) -> httpx.Response:
        """The IncomingCall sample addressed to this user; ``age`` None keeps its 2023 time."""
        doc = json.loads((SAMPLES / f"incoming_call.{schema}.json").read_text())
        event = copy.deepcopy(doc[0] if isinstance(doc, list) else doc)
        raw = self.acs_user_id
        event["data"]["to"] = {"kind": "communicationUser", "rawId": raw,
                               "communicationUser": {"id": raw}}  # fmt: skip
        if age is not None:
            stamp = (datetime.now(UTC) - age).isoformat().replace("+00:00", "Z")
            event["eventTime" if schema == "eventgrid" else "time"] = stamp
        body = [event] if isinstance(doc, list) else event
        return httpx.post(
            self.base + WEBHOOK,
            headers={"aeg-event-type": "Notification", "content-type": "application/json"},
            content=json.dumps(body).encode(),
            timeout=30,
        )

    def rung(self) -> list[RequestRecord]:
        return self.sim.requests()


@pytest.fixture
def callee(
    local_app: LocalApp,
    apns: ApnsSimulator,
    idp: DevIdentityProvider,
    acs: AcsIdentityService,
    azurite: Azurite,
    table_prefix: str,
) -> Callee:
    user = Callee(local_app(settings(apns, idp, acs, azurite, table_prefix)), apns, idp)
    user.register(PHONE, "voip")
    user.register(LAPTOP, "alert")
    return user


# --- tests ----------------------------------------------------------------------------------------


def test_incoming_call_is_accepted(callee: Callee) -> None:
    assert callee.call().status_code == 202


def test_incoming_call_rings_the_registered_pushkit_token_only(callee: Callee) -> None:
    callee.call()
    assert [(r.token, r.status) for r in callee.rung()] == [(PHONE, 200)]


def test_apns_got_a_voip_push_for_callkit(callee: Callee) -> None:
    callee.call()
    (push,) = callee.rung()
    h = push.headers
    assert (h["apns-push-type"], h["apns-topic"], h["apns-priority"], h["apns-expiration"]) == (
        "voip",
        APP + ".voip",
        "10",
        "0",
    )


def test_the_push_names_the_callee_for_the_calling_sdk(callee: Callee) -> None:
    callee.call()
    data = callee.rung()[0].payload["data"]
    assert (data["eventId"], data["recipientId"]) == (107, callee.acs_user_id)


def test_cloud_event_call_rings_too(callee: Callee) -> None:
    assert callee.call("cloudevents").status_code == 202
    assert [r.token for r in callee.rung()] == [PHONE]


def test_call_that_is_over_is_acknowledged_without_ringing(callee: Callee) -> None:
    response = callee.call(age=None)  # the sample's own time: 2023
    assert (response.status_code, callee.rung()) == (202, [])


def test_redelivered_call_rings_once(callee: Callee) -> None:
    callee.call()
    again = callee.call()
    assert (again.status_code, len(callee.rung())) == (202, 1)


def test_apns_outage_while_the_call_rings_makes_event_grid_redeliver(callee: Callee) -> None:
    callee.sim.add_fault(Fault(token=PHONE, reason="ServiceUnavailable"))
    assert callee.call().status_code == 500


def test_apns_outage_for_a_call_about_to_end_is_acknowledged(callee: Callee) -> None:
    callee.sim.add_fault(Fault(token=PHONE, reason="ServiceUnavailable"))
    assert callee.call(age=timedelta(seconds=15)).status_code == 202

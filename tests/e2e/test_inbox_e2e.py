"""The unread badge, read reports, thread preferences and quiet hours end to end.

The real app on the local host; Alice signs in through the development identity provider, gets
her ACS identity from the local ACS identity service, registers her phone and her tablet like
the iOS app does, and Event Grid posts chat events for her. The APNs simulator shows what each
device got.
"""

from __future__ import annotations

import base64
import copy
import json
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from devtools.acs_identity_service import AcsIdentityService
from devtools.apns_simulator import ApnsSimulator, RequestRecord
from devtools.azurite import Azurite
from devtools.dev_identity_provider import DevIdentityProvider
from tests.e2e.conftest import LocalApp
from tests.local_apns import APP, KEY, simulator_settings
from tests.sample_events import SAMPLES

pytestmark = pytest.mark.e2e

WEBHOOK = "/runtime/webhooks/eventgrid?functionName=on_chat_event"
TEMPLATE = json.loads((SAMPLES / "chat_message_received.eventgrid.json").read_bytes())[0]
THREAD = TEMPLATE["data"]["threadId"]
FIRST = int(TEMPLATE["data"]["messageId"])
PHONE, TABLET = "a1" * 32, "b2" * 32
ADMIN = "ops-admin"


class Alice:
    """Alice's app on her phone and tablet, and the events Event Grid posts for her."""

    def __init__(self, base: str, idp: DevIdentityProvider, sim: ApnsSimulator) -> None:
        answer = httpx.get(idp.token_url, params={"sub": "alice"}, timeout=10)
        self.http = httpx.Client(
            base_url=base,
            headers={"Authorization": "Bearer " + answer.json()["access_token"]},
            timeout=30,
        )
        self.base, self.sim, self.idp = base, sim, idp
        self.user = self.http.post("/api/token").json()["acsUserId"]
        self.devices = {t: self.register(t) for t in (PHONE, TABLET)}

    def register(self, token: str) -> str:
        body = {"token": token, "kind": "alert", "topic": APP, "environment": "sandbox"}
        answer = self.http.put("/api/devices", json=body)
        assert answer.status_code == 200
        device_id: str = answer.json()["deviceId"]
        return device_id

    def message(self, n: int) -> int:
        """Event Grid posts message ``FIRST + n`` for Alice; the webhook's status."""
        event = copy.deepcopy(TEMPLATE)
        event["id"] = f"e2e-{n}"
        event["data"]["messageId"] = str(FIRST + n)
        event["data"]["recipientCommunicationIdentifier"] = {
            "rawId": self.user,
            "communicationUser": {"id": self.user},
        }
        answer = httpx.post(
            self.base + WEBHOOK,
            headers={"aeg-event-type": "Notification", "content-type": "application/json"},
            content=json.dumps([event]),
            timeout=30,
        )
        return answer.status_code

    def thread(self, what: str) -> str:
        return f"/api/threads/{quote(THREAD, safe='')}/{what}"

    def to(self, token: str) -> list[RequestRecord]:
        return [r for r in self.sim.requests() if r.token == token]

    def log(self, n: int) -> list[dict[str, Any]]:
        admin = {"Authorization": "Bearer " + self.idp.token(ADMIN)}
        params = {"threadId": THREAD, "messageId": str(FIRST + n), "userId": self.user}
        answer = self.http.get("/api/deliveries", params=params, headers=admin)
        records: list[dict[str, Any]] = answer.json()["deliveries"]
        return records


@pytest.fixture
def alice(
    local_app: LocalApp,
    apns: ApnsSimulator,
    idp: DevIdentityProvider,
    acs: AcsIdentityService,
    azurite: Azurite,
    table_prefix: str,
) -> Alice:
    base = local_app(
        {
            "STORAGE_CONNECTION": azurite.connection_string,
            "TABLE_PREFIX": table_prefix,
            **simulator_settings(apns, [KEY.app(APP)]),
            "APNS_RETRY_BUDGET_SECONDS": "0.6",
            "KEY_ENCRYPTION_KEYS": "k1=" + base64.b64encode(b"\x09" * 32).decode(),
            "ACS_CONNECTION_STRING": acs.connection_string,
            "ACS_CA_FILE": str(acs.ca_file),
            "DELIVERY_LOG_ADMINS": ADMIN,
            **idp.settings,
        }
    )
    return Alice(base, idp, apns)


def test_every_alert_carries_the_unread_count(alice: Alice) -> None:
    assert (alice.message(0), alice.message(1)) == (202, 202)
    assert [r.payload["aps"]["badge"] for r in alice.to(PHONE)] == [1, 2]


def test_the_app_reads_its_unread_counts(alice: Alice) -> None:
    alice.message(0)
    alice.message(1)
    answer = alice.http.get("/api/unread")
    assert answer.json() == {
        "badge": 2,
        "unread": 2,
        "threads": [{"threadId": THREAD, "unread": 2, "counted": True, "muted": False}],
    }


def test_a_read_on_the_phone_brings_the_tablets_badge_down(alice: Alice) -> None:
    alice.message(0)
    alice.message(1)
    body = {"messageId": str(FIRST), "deviceId": alice.devices[PHONE]}
    answer = alice.http.put(alice.thread("read"), json=body)
    assert answer.json() == {"threadId": THREAD, "unread": 1, "badge": 1}
    update = alice.to(TABLET)[-1]
    assert (update.payload, len(alice.to(PHONE))) == ({"aps": {"badge": 1}}, 2)
    h = update.headers
    assert (h["apns-push-type"], h["apns-priority"], h["apns-expiration"]) == ("alert", "5", "0")


def test_a_muted_thread_alerts_nobody_and_is_logged_muted(alice: Alice) -> None:
    mute = alice.http.put(alice.thread("preferences"), json={"mutedUntil": "forever"})
    assert mute.json() == {
        "threadId": THREAD,
        "alerts": "all",
        "mutedUntil": "forever",
        "muted": True,
    }
    alice.message(0)
    assert (alice.sim.requests(), {r["state"] for r in alice.log(0)}) == ([], {"muted"})


def test_preferences_read_back(alice: Alice) -> None:
    until = (datetime.now(UTC) + timedelta(hours=8)).replace(microsecond=0)
    alice.http.put(alice.thread("preferences"), json={"mutedUntil": until.isoformat()})
    hours = {"start": "00:00", "end": "23:59", "timeZone": "Europe/Berlin", "calls": "ring"}
    alice.http.put("/api/preferences", json={"quietHours": hours, "countMutedThreads": True})
    assert alice.http.get("/api/preferences").json() == {
        "countMutedThreads": True,
        "quietHours": hours,
        "threads": [
            {
                "threadId": THREAD,
                "alerts": "all",
                "mutedUntil": until.isoformat().replace("+00:00", "Z"),
                "muted": True,
            }
        ],
    }


def test_in_quiet_hours_an_alert_arrives_passive_and_silent(alice: Alice) -> None:
    now = datetime.now(UTC)
    hours = {
        "start": f"{now - timedelta(hours=1):%H:%M}",
        "end": f"{now + timedelta(hours=1):%H:%M}",
        "timeZone": "UTC",
    }
    assert alice.http.put("/api/preferences", json={"quietHours": hours}).status_code == 200
    alice.message(0)
    aps = alice.to(PHONE)[0].payload["aps"]
    assert (aps["interruption-level"], "sound" in aps, aps["badge"]) == ("passive", False, 1)


def test_a_bad_read_report_is_a_400_naming_the_field(alice: Alice) -> None:
    answer = alice.http.put(alice.thread("read"), json={"messageId": "latest"})
    assert (answer.status_code, answer.json()) == (
        400,
        {"error": "must be an ACS message id (decimal digits)", "field": "messageId"},
    )


def test_nobody_reads_or_mutes_without_signing_in(alice: Alice) -> None:
    anonymous = httpx.Client(base_url=alice.base, timeout=30)
    answers = [
        anonymous.get("/api/unread"),
        anonymous.put(alice.thread("read"), json={"messageId": str(FIRST)}),
        anonymous.put(alice.thread("preferences"), json={"alerts": "none"}),
        anonymous.get("/api/preferences"),
        anonymous.put("/api/preferences", json={"countMutedThreads": True}),
    ]
    assert [a.status_code for a in answers] == [401] * 5

"""Chat events through the real app on the local host, as Event Grid would post them.

Devices are stored in the app's Azurite tables; the sample events are posted to
``/runtime/webhooks/eventgrid?functionName=on_chat_event``; the APNs simulator shows exactly what
APNs received; the encrypted preview is decrypted here as the iOS notification service extension
would (from the spec, importing nothing from ``shared``); and the admin-only
``GET /api/deliveries`` tells what happened.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from devtools.apns_simulator import ApnsSimulator, Fault, RequestRecord
from devtools.azurite import Azurite
from devtools.dev_identity_provider import DevIdentityProvider
from tests.e2e.conftest import LocalApp
from tests.local_apns import APP, KEY, sandbox_device, simulator_settings
from tests.sample_events import SAMPLES

pytestmark = pytest.mark.e2e

WEBHOOK = "/runtime/webhooks/eventgrid?functionName=on_chat_event"
ADMIN = "ops-admin"
PREVIEW_KEY = bytes(range(64))  # what the ACS SDK handed the app through onPersistKey
KEK = "k1=" + base64.b64encode(b"\x07" * 32).decode()


def sample_body(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


def sample_data(name: str) -> dict[str, Any]:
    body = json.loads(sample_body(name))
    return (body[0] if isinstance(body, list) else body)["data"]


RECEIVED = sample_data("chat_message_received.eventgrid.json")
USER = RECEIVED["recipientCommunicationIdentifier"]["rawId"]
THREAD = RECEIVED["threadId"]
MESSAGE = RECEIVED["messageId"]
WITH_KEY, WITHOUT_KEY = "a1" * 32, "b2" * 32


# --- the device's side: decrypting the preview (from the spec, nothing from shared/) -------------


def decrypt_as_the_device(key: bytes, blob_b64: str) -> dict[str, str]:
    """What the ACS SDK's extension does: check the HMAC, then AES-256-CBC/PKCS7 decrypt."""
    blob = base64.b64decode(blob_b64, validate=True)
    mode, iv, ciphertext, tag = blob[0], blob[1:17], blob[17:-32], blob[-32:]
    aes_key, auth_key = key[:32], key[32:]
    expected = hmac.new(hashlib.sha256(auth_key).digest(), blob[:-32], hashlib.sha256).digest()
    assert mode == 0x70 and hmac.compare_digest(tag, expected)
    decryptor = Cipher(algorithms.AES(aes_key), modes.CBC(iv)).decryptor()
    padded = decryptor.update(ciphertext) + decryptor.finalize()
    unpadder = padding.PKCS7(128).unpadder()
    return json.loads(unpadder.update(padded) + unpadder.finalize())


# --- fixtures -------------------------------------------------------------------------------------


def settings(
    sim: ApnsSimulator, idp: DevIdentityProvider, az: Azurite, prefix: str
) -> dict[str, str]:
    return {
        "STORAGE_CONNECTION": az.connection_string,
        "TABLE_PREFIX": prefix,
        **simulator_settings(sim, [KEY.app(APP)]),
        "APNS_RETRY_BUDGET_SECONDS": "0.6",
        "KEY_ENCRYPTION_KEYS": KEK,
        "DELIVERY_LOG_ADMINS": ADMIN,
        **idp.settings,
    }


async def register_devices(env: dict[str, str]) -> None:
    """Store the recipient's two phones as registration would: one with a live preview key."""
    from shared.domain.key_wrap import KeyWrapper
    from shared.storage.devices import DEVICES_TABLE, OWNERS_TABLE, DeviceStore
    from shared.storage.tables import Tables

    tables = Tables.connect(env["STORAGE_CONNECTION"], env["TABLE_PREFIX"])
    try:
        store = DeviceStore(
            await tables.table(DEVICES_TABLE),
            await tables.table(OWNERS_TABLE),
            KeyWrapper.from_setting(env["KEY_ENCRYPTION_KEYS"]),
        )
        now = datetime.now(UTC)
        for token, key in ((WITH_KEY, PREVIEW_KEY), (WITHOUT_KEY, None)):
            expires = None if key is None else now + timedelta(minutes=45)
            device = sandbox_device(USER, token, at=now, preview_key=key, key_expires_at=expires)
            await store.register(device)
    finally:
        await tables.aclose()


class App:
    """The served app, its simulator and the admin's view of the delivery log."""

    def __init__(self, base: str, sim: ApnsSimulator, idp: DevIdentityProvider) -> None:
        self.base = base
        self.sim = sim
        self.idp = idp

    def post(self, name: str) -> httpx.Response:
        return httpx.post(
            self.base + WEBHOOK,
            headers={"aeg-event-type": "Notification", "content-type": "application/json"},
            content=sample_body(name),
            timeout=30,
        )

    def deliveries(self, subject: str = ADMIN, message: str = MESSAGE) -> httpx.Response:
        return httpx.get(
            self.base + "/api/deliveries",
            params={"threadId": THREAD, "messageId": message, "userId": USER},
            headers={"Authorization": "Bearer " + self.idp.token(subject)},
            timeout=30,
        )

    def received(self) -> list[RequestRecord]:
        return self.sim.requests()

    def to(self, token: str) -> list[RequestRecord]:
        return [r for r in self.sim.requests() if r.token == token]


@pytest.fixture
def app(
    local_app: LocalApp,
    apns: ApnsSimulator,
    idp: DevIdentityProvider,
    azurite: Azurite,
    table_prefix: str,
) -> App:
    env = settings(apns, idp, azurite, table_prefix)
    asyncio.run(register_devices(env))
    return App(local_app(env), apns, idp)


# --- tests ----------------------------------------------------------------------------------------


def test_received_event_is_accepted(app: App) -> None:
    assert app.post("chat_message_received.eventgrid.json").status_code == 202


def test_received_event_reaches_each_phone_exactly_once(app: App) -> None:
    app.post("chat_message_received.eventgrid.json")
    assert sorted(r.token for r in app.received()) == sorted([WITH_KEY, WITHOUT_KEY])


def test_apns_got_an_alert_for_the_thread_with_the_message_as_collapse_id(app: App) -> None:
    app.post("chat_message_received.eventgrid.json")
    (push,) = app.to(WITH_KEY)
    h = push.headers
    assert (h["apns-push-type"], h["apns-topic"], h["apns-priority"], h["apns-collapse-id"]) == (
        "alert",
        APP,
        "10",
        MESSAGE,
    )


def test_phone_with_a_key_decrypts_the_message_as_the_sdk_would(app: App) -> None:
    app.post("chat_message_received.eventgrid.json")
    (push,) = app.to(WITH_KEY)
    assert (push.payload["aps"]["mutable-content"], push.payload["data"]["eventId"]) == (1, 200)
    fields = decrypt_as_the_device(PREVIEW_KEY, push.payload["data"]["e"])
    assert (fields["messageBody"], fields["senderDisplayName"], fields["groupId"]) == (
        RECEIVED["messageBody"],
        RECEIVED["senderDisplayName"],
        THREAD,
    )


def test_no_plaintext_leaves_for_a_phone_without_a_key(app: App) -> None:
    app.post("chat_message_received.eventgrid.json")
    (push,) = app.to(WITHOUT_KEY)
    raw = json.dumps(push.payload, ensure_ascii=False)
    assert (RECEIVED["messageBody"] in raw, "data" in push.payload) == (False, False)


def test_cloud_event_is_pushed_too(app: App) -> None:
    assert app.post("chat_message_received.cloudevents.json").status_code == 202
    assert len(app.received()) == 2


def test_redelivered_event_pushes_nobody_twice(app: App) -> None:
    app.post("chat_message_received.eventgrid.json")
    again = app.post("chat_message_received.eventgrid.json")
    assert (again.status_code, len(app.received())) == (202, 2)


def test_edited_message_replaces_the_banner(app: App) -> None:
    app.post("chat_message_edited.cloudevents.json")
    assert {r.headers["apns-collapse-id"] for r in app.received()} == {MESSAGE}


def test_deleted_message_is_withdrawn_by_a_background_push(app: App) -> None:
    app.post("chat_message_deleted.eventgrid.json")
    assert [r.payload["deleted"] for r in app.to(WITH_KEY)] == [
        {"threadId": THREAD, "messageId": MESSAGE}
    ]


def test_thread_level_event_is_acknowledged_without_a_push(app: App) -> None:
    response = app.post("chat_message_received_in_thread.eventgrid.json")
    assert (response.status_code, app.received()) == (202, [])


def test_apns_outage_makes_event_grid_redeliver(app: App) -> None:
    app.sim.add_fault(Fault(token=WITH_KEY, reason="ServiceUnavailable"))
    assert app.post("chat_message_received.eventgrid.json").status_code == 500


def test_redelivery_after_an_outage_completes_the_unfinished_phone(app: App) -> None:
    app.sim.add_fault(Fault(token=WITH_KEY, reason="ServiceUnavailable"))
    app.post("chat_message_received.eventgrid.json")
    app.sim.clear_faults()
    second = app.post("chat_message_received.eventgrid.json")
    ok = [r.token for r in app.received() if r.status == 200]
    assert (second.status_code, sorted(ok)) == (202, sorted([WITH_KEY, WITHOUT_KEY]))


def test_delivery_log_tells_the_admin_what_happened(app: App) -> None:
    app.post("chat_message_received.eventgrid.json")
    answer = app.deliveries().json()
    sent = {r.token[:6]: r.apns_id for r in app.received()}
    got = {d["token"][:6]: (d["state"], d["status"], d["apnsId"]) for d in answer["deliveries"]}
    assert got == {t: ("delivered", 200, apns_id) for t, apns_id in sent.items()}


def test_delivery_log_is_refused_to_a_non_admin(app: App) -> None:
    assert app.deliveries(subject="alice").status_code == 403


def test_delivery_log_needs_a_caller(app: App) -> None:
    response = httpx.get(app.base + "/api/deliveries", params={"threadId": THREAD}, timeout=30)
    assert response.status_code == 401

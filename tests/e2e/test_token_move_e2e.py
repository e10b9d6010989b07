"""A phone changing hands, end to end: the real app on the local host, the APNs simulator, the
development identity provider and Azurite. The proof-of-possession code reaches the new user's
app only through the background push the simulator receives for the phone's token, as it would
on a real phone; a stranger who only knows the token never sees it."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import pytest

from devtools.acs_identity_service import AcsIdentityService
from devtools.apns_simulator import ApnsSimulator
from devtools.azurite import Azurite
from devtools.dev_identity_provider import DevIdentityProvider
from shared.domain.devices import device_id_for
from tests.e2e.conftest import LocalApp
from tests.e2e.test_registry_e2e import KEK, PREVIEW_KEY, Phone, Served
from tests.local_apns import APP, KEY, simulator_settings

pytestmark = pytest.mark.e2e

ALERT = "a7" * 32  # the phone's APNs token
VOIP = "b8" * 32  # the same phone's PushKit token


@pytest.fixture
def served(
    local_app: LocalApp,
    azurite: Azurite,
    table_prefix: str,
    idp: DevIdentityProvider,
    acs: AcsIdentityService,
    apns: ApnsSimulator,
) -> Served:
    base = local_app(
        {
            "STORAGE_CONNECTION": azurite.connection_string,
            "TABLE_PREFIX": table_prefix,
            "KEY_ENCRYPTION_KEYS": KEK,
            "ACS_CONNECTION_STRING": acs.connection_string,
            "ACS_CA_FILE": str(acs.ca_file),
            **simulator_settings(apns, [KEY.app(APP)]),
            **idp.settings,
        }
    )
    return Served(base, azurite, table_prefix, idp)


def put(phone: Phone, token: str = ALERT, **fields: Any) -> httpx.Response:
    body = {"token": token, "kind": "alert", "topic": APP, "environment": "sandbox"}
    body.update(fields)
    return phone.http.put("/api/devices", json=body)


def proof_pushes(sim: ApnsSimulator, token: str = ALERT) -> list[dict[str, Any]]:
    """What the phone's app received: the background pushes carrying a token proof."""
    return [
        {"headers": r.headers, "payload": r.payload}
        for r in sim.requests()
        if r.token == token and isinstance(r.payload, dict) and "pushrelay" in r.payload
    ]


def devices_and_owners(served: Served) -> dict[Any, Any]:
    return {k: v for k, v in served.snapshot().items() if k[0] in {"devices", "tokenowners"}}


@pytest.fixture
def alices_phone(served: Served) -> Phone:
    """Alice's phone: its alert token with a preview key, and its PushKit token."""
    alice = served.phone("alice")
    assert put(alice, key=PREVIEW_KEY).status_code == 200
    assert put(alice, VOIP, kind="voip").status_code == 200
    return alice


def test_a_phone_given_to_another_user_moves_with_the_code_its_push_carried(
    served: Served, alices_phone: Phone, apns: ApnsSimulator
) -> None:
    bob = served.phone("bob")  # Bob now holds the phone and signs in on it
    challenged = put(bob)
    assert challenged.status_code == 202, challenged.text
    assert set(challenged.json()) == {"status", "deviceId", "expiresAt"}
    assert challenged.json()["status"] == "proofRequired"

    (push,) = proof_pushes(apns)  # the app on the phone gets it
    assert (push["headers"]["apns-push-type"], push["headers"]["apns-priority"]) == (
        "background", "5",
    )  # fmt: skip
    assert push["payload"]["aps"] == {"content-available": 1}
    code = push["payload"]["pushrelay"]["tokenProof"]

    assert put(bob, tokenProof=code).status_code == 200
    assert put(bob, VOIP, kind="voip").status_code == 200  # the phone's VoIP token follows
    assert {d["token"] for d in bob.devices()} == {"a7a7a7…a7a7", "b8b8b8…b8b8"}
    assert alices_phone.devices() == []


def test_a_stranger_who_knows_the_token_cannot_take_the_phone(
    served: Served, alices_phone: Phone, apns: ApnsSimulator
) -> None:
    before = devices_and_owners(served)
    mallory = served.phone("mallory")
    assert put(mallory).status_code == 202  # the code went to Alice's phone, not to Mallory
    guesses = [put(mallory, tokenProof=guess) for guess in ("A" * 22, "0", "x" * 64)]
    voip = put(mallory, VOIP, kind="voip")
    assert [g.json() for g in guesses] == [
        {"error": "invalid_token_proof", "field": "tokenProof"}
    ] * 3
    assert [g.status_code for g in guesses] + [voip.status_code] == [403, 403, 403, 409]
    assert devices_and_owners(served) == before
    stored = json.dumps([v for k, v in served.snapshot().items() if k[0] == "tokenproofs"],
                        default=str)  # fmt: skip
    code = proof_pushes(apns)[0]["payload"]["pushrelay"]["tokenProof"]
    assert code not in stored  # kept only as a hash


def test_a_phone_signed_out_of_moves_without_a_challenge(
    served: Served, alices_phone: Phone, apns: ApnsSimulator
) -> None:
    for token in (ALERT, VOIP):
        assert alices_phone.delete(device_id_for(token)).status_code == 204
    bob = served.phone("bob")
    assert [put(bob).status_code, put(bob, VOIP, kind="voip").status_code] == [200, 200]
    assert proof_pushes(apns) == []


def test_the_preview_key_of_the_moved_device_is_the_new_users(
    served: Served, alices_phone: Phone, apns: ApnsSimulator
) -> None:
    bob = served.phone("bob")
    put(bob)
    code = proof_pushes(apns)[0]["payload"]["pushrelay"]["tokenProof"]
    new_key = base64.b64encode(bytes(range(64, 128))).decode()
    answer = put(bob, tokenProof=code, key=new_key)
    assert (answer.status_code, "keyExpiresAt" in answer.json()) == (200, True)
    (listed,) = [d for d in bob.devices() if d["kind"] == "alert"]
    assert listed["hasLiveKey"] is True

"""The token issuer and device registry end to end: the real app on the local host, driven over
HTTP like an iOS app, with the development identity provider's JWKS served over HTTP, the local
ACS identity service over HTTPS, and Azurite. Every refused request is checked against a snapshot
of every table the app owns: nothing stored changes."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from devtools.acs_identity_service import AcsIdentityService
from devtools.azurite import Azurite
from devtools.dev_identity_provider import DevIdentityProvider
from tests.e2e.conftest import LocalApp

pytestmark = pytest.mark.e2e

TOPIC = "com.example.chat"
KEK = "k1=" + base64.b64encode(b"\x05" * 32).decode()
PREVIEW_KEY = base64.b64encode(bytes(range(64))).decode()
ALICE_TOKEN = "c0ffee" * 10 + "abcd"  # 64 hex digits: an APNs device token
Snapshot = dict[tuple[str, str, str], dict[str, Any]]


class Phone:
    """An iOS app's view of the service: a signed-in subject, a bearer token, HTTP calls."""

    def __init__(self, base: str, idp: DevIdentityProvider, subject: str) -> None:
        answer = httpx.get(idp.token_url, params={"sub": subject}, timeout=10)
        answer.raise_for_status()
        self.auth = {"Authorization": "Bearer " + answer.json()["access_token"]}
        self.http = httpx.Client(base_url=base, headers=self.auth, timeout=30)

    def token(self, **kwargs: Any) -> httpx.Response:
        return self.http.post("/api/token", **kwargs)

    def register(self, token: str = ALICE_TOKEN, **fields: Any) -> httpx.Response:
        body = {"token": token, "kind": "alert", "topic": TOPIC, "environment": "sandbox"}
        body["key"] = PREVIEW_KEY
        body.update(fields)
        return self.http.put("/api/devices", json=body)

    def devices(self) -> list[dict[str, Any]]:
        answer = self.http.get("/api/devices")
        assert answer.status_code == 200
        devices: list[dict[str, Any]] = answer.json()["devices"]
        return devices

    def delete(self, device_id: str) -> httpx.Response:
        return self.http.delete("/api/devices/" + device_id)


class Served:
    """The served app plus a view of every row in its tables."""

    def __init__(self, base: str, azurite: Azurite, prefix: str, idp: DevIdentityProvider) -> None:
        self.base, self._azurite, self._prefix, self._idp = base, azurite, prefix, idp

    def phone(self, subject: str) -> Phone:
        return Phone(self.base, self._idp, subject)

    def snapshot(self) -> Snapshot:
        """Every entity of every table with the app's prefix (Timestamp left out)."""
        return asyncio.run(self._snapshot())

    async def _snapshot(self) -> Snapshot:
        from azure.data.tables.aio import TableServiceClient

        rows: Snapshot = {}
        async with TableServiceClient.from_connection_string(
            self._azurite.connection_string
        ) as service:
            async for table in service.list_tables():
                if not table.name.startswith(self._prefix):
                    continue
                client = service.get_table_client(table.name)
                async for e in client.list_entities():
                    key = (table.name.removeprefix(self._prefix), e["PartitionKey"], e["RowKey"])
                    rows[key] = {k: v for k, v in e.items() if k != "Timestamp"}
        return rows


@pytest.fixture
def served(
    local_app: LocalApp,
    azurite: Azurite,
    table_prefix: str,
    idp: DevIdentityProvider,
    acs: AcsIdentityService,
) -> Served:
    base = local_app(
        {
            "STORAGE_CONNECTION": azurite.connection_string,
            "TABLE_PREFIX": table_prefix,
            "APNS_APPS": json.dumps([{"bundleId": TOPIC, "teamId": "TEAM123456", "keyId": "K1"}]),
            "KEY_ENCRYPTION_KEYS": KEK,
            "ACS_CONNECTION_STRING": acs.connection_string,
            "ACS_CA_FILE": str(acs.ca_file),
            **idp.settings,
        }
    )
    return Served(base, azurite, table_prefix, idp)


def device_id(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


# --- the iOS app's session ------------------------------------------------------------------------


def test_a_phone_gets_a_token_registers_lists_and_deletes_its_device(
    served: Served, acs: AcsIdentityService
) -> None:
    alice = served.phone("alice")
    issued = alice.token()
    assert issued.status_code == 200, issued.text
    body = issued.json()
    assert set(body) == {"acsUserId", "acsEndpoint", "userToken", "expiresOn"}
    assert (body["acsEndpoint"], body["acsUserId"] in acs.identities()) == (acs.endpoint, True)
    assert issued.headers["Cache-Control"] == "no-store"

    registered = alice.register()
    assert registered.status_code == 200, registered.text
    assert registered.json()["deviceId"] == device_id(ALICE_TOKEN)
    # The device lives in the partition of the ACS identity the token was issued for.
    stored = [k for k in served.snapshot() if k[0] == "devices"]
    assert stored == [("devices", body["acsUserId"], device_id(ALICE_TOKEN))]

    listed = alice.devices()
    assert [(d["deviceId"], d["token"], d["hasLiveKey"]) for d in listed] == [
        (device_id(ALICE_TOKEN), "c0ffee…abcd", True)
    ]
    assert PREVIEW_KEY not in json.dumps(listed) and ALICE_TOKEN not in json.dumps(listed)

    assert alice.delete(device_id(ALICE_TOKEN)).status_code == 204
    assert alice.devices() == []
    assert [k for k in served.snapshot() if k[0] in {"devices", "tokenowners"}] == []


def test_a_bad_body_from_a_new_caller_is_400_and_changes_nothing(
    served: Served, acs: AcsIdentityService
) -> None:
    before, identities = served.snapshot(), acs.identities()
    answer = served.phone("newcomer").register(environment="staging")
    assert (answer.status_code, answer.json()) == (
        400,
        {"error": "must be one of development, production, sandbox", "field": "environment"},
    )
    assert (served.snapshot(), acs.identities()) == (before, identities)


# --- the identity provider's outage -----------------------------------------------------------


def test_a_jwks_outage_is_503_with_a_json_reason_and_stores_nothing(
    served: Served, idp: DevIdentityProvider, acs: AcsIdentityService
) -> None:
    alice = served.phone("alice")  # a token issued before the outage
    identities = acs.identities()
    httpx.post(idp.issuer + "/control/outage", params={"on": "true"}, timeout=10)
    try:
        answers = [alice.token(), alice.register(), alice.http.get("/api/devices")]
        snapshot = served.snapshot()
    finally:
        httpx.post(idp.issuer + "/control/outage", params={"on": "false"}, timeout=10)
    for answer in answers:
        assert (answer.status_code, answer.json()) == (
            503,
            {"error": "identity_provider_unavailable"},
        )
        assert answer.headers["Retry-After"].isdigit()
        assert "WWW-Authenticate" not in answer.headers  # not the caller's fault
    assert (snapshot, acs.identities()) == ({}, identities)
    assert alice.token().status_code == 200  # back once the provider answers


# --- users A and B ------------------------------------------------------------------------------


@pytest.fixture
def alice_registered(served: Served) -> tuple[Phone, str]:
    alice = served.phone("alice")
    user_id = alice.token().json()["acsUserId"]
    assert alice.register().status_code == 200
    return alice, user_id


def test_another_user_can_neither_list_nor_delete_the_first_users_device(
    served: Served, alice_registered: tuple[Phone, str]
) -> None:
    alice, _ = alice_registered
    before = served.snapshot()
    bob = served.phone("bob")
    assert bob.devices() == []
    theirs, missing = bob.delete(device_id(ALICE_TOKEN)), bob.delete("0" * 64)
    assert (theirs.status_code, theirs.json()) == (404, missing.json())
    changed = {k for k, v in served.snapshot().items() if before.get(k) != v}
    assert all(table == "identities" for table, _, _ in changed)  # only bob's own row
    assert [d["deviceId"] for d in alice.devices()] == [device_id(ALICE_TOKEN)]


def test_another_user_cannot_get_a_token_for_the_first_users_identity(
    served: Served, alice_registered: tuple[Phone, str], acs: AcsIdentityService
) -> None:
    _, alice_user = alice_registered
    bob = served.phone("bob")
    naming_alice = bob.token(
        params={"acsUserId": alice_user, "userId": alice_user},
        json={"acsUserId": alice_user, "sub": "alice"},
    )
    assert naming_alice.status_code == 200
    assert naming_alice.json()["acsUserId"] != alice_user
    assert bob.token().json()["acsUserId"] == naming_alice.json()["acsUserId"]


def test_knowing_a_device_id_does_not_let_another_user_take_the_device(
    served: Served, alice_registered: tuple[Phone, str]
) -> None:
    alice, alice_user = alice_registered
    bob = served.phone("bob")
    # The deviceId is 64 hex digits, so it passes as a token: it names another (new) device.
    assert bob.register(token=device_id(ALICE_TOKEN), deviceId=device_id(ALICE_TOKEN)).is_success
    assert [d["deviceId"] for d in alice.devices()] == [device_id(ALICE_TOKEN)]
    owners = {pk: v["owner"] for (t, pk, _), v in served.snapshot().items() if t == "tokenowners"}
    assert owners[device_id(ALICE_TOKEN)] == alice_user


def test_forged_easy_auth_headers_name_nobody(
    served: Served, alice_registered: tuple[Phone, str]
) -> None:
    before = served.snapshot()
    principal = base64.b64encode(
        json.dumps({"auth_typ": "aad", "claims": [{"typ": "sub", "val": "alice"}]}).encode()
    ).decode()
    forged = {"X-MS-CLIENT-PRINCIPAL": principal, "X-MS-CLIENT-PRINCIPAL-IDP": "aad"}
    answers = [
        httpx.get(served.base + "/api/devices", headers=forged, timeout=30),
        httpx.delete(served.base + "/api/devices/" + device_id(ALICE_TOKEN), headers=forged),
        httpx.post(served.base + "/api/token", headers=forged, timeout=30),
    ]
    assert [a.status_code for a in answers] == [401, 401, 401]
    assert served.snapshot() == before


# --- quotes and OData operators inside IDs ------------------------------------------------------

HOSTILE = [
    "' or 1 eq 1",
    "x') or (PartitionKey ne '",
    "alice' or PartitionKey gt '",
    '" or RowKey ne "',
    "a/b#c?d%25e",
]


@pytest.mark.parametrize("hostile", HOSTILE)
def test_hostile_device_ids_in_the_path_are_404_and_change_nothing(
    served: Served, alice_registered: tuple[Phone, str], hostile: str
) -> None:
    alice, _ = alice_registered
    before = served.snapshot()
    answer = alice.delete(quote(hostile, safe=""))
    assert answer.status_code == 404
    assert "error" in answer.json()
    assert served.snapshot() == before


@pytest.mark.parametrize("hostile", HOSTILE)
def test_hostile_subjects_get_their_own_identity_and_see_nothing_else(
    served: Served, alice_registered: tuple[Phone, str], hostile: str
) -> None:
    _, alice_user = alice_registered
    before = served.snapshot()
    mallory = served.phone(hostile)
    issued = mallory.token()
    assert issued.status_code == 200
    assert issued.json()["acsUserId"] != alice_user
    assert mallory.devices() == []
    assert mallory.delete(device_id(ALICE_TOKEN)).status_code == 404
    after = served.snapshot()
    assert {k: v for k, v in after.items() if k in before} == before
    assert {t for t, _, _ in set(after) - set(before)} == {"identities"}


def test_a_hostile_token_value_is_400_naming_the_field_and_changes_nothing(
    served: Served, alice_registered: tuple[Phone, str]
) -> None:
    alice, _ = alice_registered
    before = served.snapshot()
    answer = alice.register(token="' or 1 eq 1 or '" + "a" * 64)
    assert (answer.status_code, answer.json()["field"]) == (400, "token")
    assert served.snapshot() == before

"""PUT/GET/DELETE /api/devices through the app's registered functions, with real
``func.HttpRequest`` objects, on Azurite, the local ACS identity service and the development
identity provider's JWKS. Every refused request leaves storage unchanged."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import azure.functions as func
import pytest
from azure.data.tables.aio import TableServiceClient

from devtools.acs_identity_service import AcsIdentityService
from devtools.azurite import Azurite
from devtools.dev_identity_provider import DevIdentityProvider
from devtools.localhost.catalog import app_functions
from shared import wiring
from shared.domain.devices import device_id_for
from shared.storage.tables import round_trips

pytestmark = pytest.mark.integration

Fn = Callable[[func.HttpRequest], Awaitable[func.HttpResponse]]
TOPIC = "com.example.chat"
APNS_APPS = json.dumps(
    [{"bundleId": TOPIC, "teamId": "TEAM123456", "keyId": "KEY1234567", "privateKeyFile": "x.p8"}]
)
TOKEN = "5e" * 32
KEY = bytes(range(64))


@pytest.fixture(scope="module")
def functions() -> dict[str, Fn]:
    """The app's registered functions (``app.get_functions()``, safe to index again)."""
    from function_app import app

    return {f.get_function_name(): f.get_user_function() for f in app_functions(app)}


def app_env(
    azurite: Azurite, table_prefix: str, idp: DevIdentityProvider, acs: AcsIdentityService
) -> dict[str, str]:
    return {
        "STORAGE_CONNECTION": azurite.connection_string,
        "TABLE_PREFIX": table_prefix,
        "APNS_APPS": APNS_APPS,
        "KEY_ENCRYPTION_KEYS": "k1=" + base64.b64encode(b"\x01" * 32).decode(),
        "ACS_CONNECTION_STRING": acs.connection_string,
        "ACS_CA_FILE": str(acs.ca_file),
        "MAX_REQUEST_BODY_BYTES": "2048",
        **idp.settings,
    }


@pytest.fixture
async def app(
    azurite: Azurite,
    table_prefix: str,
    idp: DevIdentityProvider,
    acs: AcsIdentityService,
    functions: dict[str, Fn],
) -> AsyncIterator[dict[str, Fn]]:
    container = wiring.reset(app_env(azurite, table_prefix, idp, acs))
    yield functions
    await container.aclose()


@pytest.fixture
async def app_on_each_client(
    azurite: Azurite,
    table_prefix: str,
    idp: DevIdentityProvider,
    acs: AcsIdentityService,
    functions: dict[str, Fn],
    storage_client: str,
) -> AsyncIterator[dict[str, Fn]]:
    env = {**app_env(azurite, table_prefix, idp, acs), "STORAGE_CLIENT": storage_client}
    container = wiring.reset(env)
    yield functions
    await container.aclose()


def request(
    method: str,
    path: str,
    headers: dict[str, str],
    body: object = None,
    *,
    raw: bytes | None = None,
    route_params: dict[str, str] | None = None,
) -> func.HttpRequest:
    data = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
    return func.HttpRequest(
        method,
        f"http://127.0.0.1/api/{path}",
        headers={"Content-Type": "application/json", **headers},
        params={},
        route_params=route_params or {},
        body=data,
    )


def bearer(idp: DevIdentityProvider, sub: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {idp.token(sub)}"}


def registration(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "token": TOKEN,
        "kind": "alert",
        "topic": TOPIC,
        "environment": "sandbox",
        "key": base64.b64encode(KEY).decode(),
        "appVersion": "1.0",
    }
    body.update(overrides)
    return body


async def put(app: dict[str, Fn], headers: dict[str, str], body: object) -> func.HttpResponse:
    return await app["put_device"](request("PUT", "devices", headers, body))


async def listing(app: dict[str, Fn], headers: dict[str, str]) -> list[dict[str, Any]]:
    response = await app["list_devices"](request("GET", "devices", headers))
    assert response.status_code == 200
    devices: list[dict[str, Any]] = json.loads(response.get_body())["devices"]
    return devices


async def delete(app: dict[str, Fn], headers: dict[str, str], device_id: str) -> func.HttpResponse:
    req = request("DELETE", f"devices/{device_id}", headers, route_params={"deviceId": device_id})
    return await app["delete_device"](req)


async def stored_devices() -> list[dict[str, Any]]:
    table = await (await wiring.container().tables()).table("devices")
    return [dict(e) async for e in table.list_entities()]


def error(response: func.HttpResponse) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(response.get_body())
    return body


async def test_a_device_is_registered_listed_and_deleted(
    app: dict[str, Fn], idp: DevIdentityProvider
) -> None:
    alice = bearer(idp, "alice")
    response = await put(app, alice, registration())
    assert response.status_code == 200
    device_id = json.loads(response.get_body())["deviceId"]
    assert device_id == device_id_for(TOKEN)
    listed = await listing(app, alice)
    assert [(d["deviceId"], d["token"], d["hasLiveKey"]) for d in listed] == [
        (device_id, "5e5e5e…5e5e", True)
    ]
    assert (await delete(app, alice, device_id)).status_code == 204
    assert await listing(app, alice) == []
    assert await stored_devices() == []


async def test_a_devices_table_deleted_under_the_app_is_503_then_the_table_is_back(
    app_on_each_client: dict[str, Fn], idp: DevIdentityProvider, azurite: Azurite
) -> None:
    app = app_on_each_client
    alice = bearer(idp, "alice")
    assert (await put(app, alice, registration())).status_code == 200
    # An operator deletes the table while the app runs.
    name = (await wiring.container().tables()).name("devices")
    async with TableServiceClient.from_connection_string(azurite.connection_string) as account:
        await account.delete_table(name)

    # Not an empty list (the device was never removed), not a 502: retry later.
    response = await app["list_devices"](request("GET", "devices", alice))
    assert response.status_code == 503
    assert int(response.headers["Retry-After"]) > 0
    assert error(response)["error"] == "service_unavailable"
    # The retry finds the table created again (empty), and a registration lands in it.
    assert await listing(app, alice) == []
    assert (await put(app, alice, registration())).status_code == 200
    assert [d["deviceId"] for d in await listing(app, alice)] == [device_id_for(TOKEN)]


async def test_a_listing_carries_neither_key_nor_full_token(
    app: dict[str, Fn], idp: DevIdentityProvider
) -> None:
    alice = bearer(idp, "alice")
    await put(app, alice, registration())
    response = await app["list_devices"](request("GET", "devices", alice))
    text = response.get_body().decode()
    assert TOKEN not in text
    assert base64.b64encode(KEY).decode() not in text
    assert "previewKey" not in text


async def test_a_request_without_credentials_is_401_and_stores_nothing(
    app: dict[str, Fn],
) -> None:
    response = await put(app, {}, registration())
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert "error" in error(response)
    assert await stored_devices() == []


async def test_forged_easy_auth_headers_are_ignored_while_it_is_off(app: dict[str, Fn]) -> None:
    principal = base64.b64encode(
        json.dumps({"claims": [{"typ": "sub", "val": "alice"}]}).encode()
    ).decode()
    response = await put(app, {"X-MS-CLIENT-PRINCIPAL": principal}, registration())
    assert response.status_code == 401
    assert await stored_devices() == []


async def test_an_invalid_field_is_400_naming_it_and_stores_nothing(
    app: dict[str, Fn], idp: DevIdentityProvider
) -> None:
    response = await put(app, bearer(idp, "alice"), registration(environment="staging"))
    assert response.status_code == 400
    assert error(response)["field"] == "environment"
    assert await stored_devices() == []


async def test_an_unknown_topic_is_refused(app: dict[str, Fn], idp: DevIdentityProvider) -> None:
    response = await put(app, bearer(idp, "alice"), registration(topic="com.other.app"))
    assert (response.status_code, error(response)["field"]) == (400, "topic")
    assert await stored_devices() == []


async def test_an_oversized_body_is_413_and_stores_nothing(
    app: dict[str, Fn], idp: DevIdentityProvider
) -> None:
    response = await put(app, bearer(idp, "alice"), registration(appVersion="1", pad="x" * 4096))
    assert response.status_code == 413
    assert await stored_devices() == []


@pytest.mark.parametrize("raw", [b"{", b"[]", b"\xff\xfe", b'{"token": NaN}', b""])
async def test_a_malformed_body_is_400_and_stores_nothing(
    app: dict[str, Fn], idp: DevIdentityProvider, raw: bytes
) -> None:
    req = request("PUT", "devices", bearer(idp, "alice"), raw=raw)
    response = await app["put_device"](req)
    assert response.status_code == 400
    assert "error" in error(response)
    assert await stored_devices() == []


async def test_a_user_cannot_see_another_users_devices(
    app: dict[str, Fn], idp: DevIdentityProvider
) -> None:
    await put(app, bearer(idp, "alice"), registration())
    assert await listing(app, bearer(idp, "bob")) == []


async def test_a_user_cannot_delete_another_users_device(
    app: dict[str, Fn], idp: DevIdentityProvider
) -> None:
    alice, bob = bearer(idp, "alice"), bearer(idp, "bob")
    await put(app, alice, registration())
    theirs = await delete(app, bob, device_id_for(TOKEN))
    missing = await delete(app, bob, "0" * 64)
    assert (theirs.status_code, theirs.get_body()) == (404, missing.get_body())
    assert len(await listing(app, alice)) == 1


@pytest.mark.parametrize("device_id", ["' or 1 eq 1", "x') or (PartitionKey ne '", "%2F.."])
async def test_ids_with_quotes_and_operators_in_the_url_are_not_found(
    app: dict[str, Fn], idp: DevIdentityProvider, device_id: str
) -> None:
    alice = bearer(idp, "alice")
    await put(app, alice, registration())
    assert (await delete(app, alice, device_id)).status_code == 404
    assert len(await stored_devices()) == 1


async def test_registering_a_token_another_user_holds_moves_nothing_without_proof(
    app: dict[str, Fn], idp: DevIdentityProvider
) -> None:
    """The proof push cannot be sent here (no APNs): 503, and nothing of Alice's moves. The
    whole proof is driven end to end with the APNs simulator in tests/e2e/test_registry_e2e.py."""
    alice, bob = bearer(idp, "alice"), bearer(idp, "bob")
    await put(app, alice, registration(token="77" * 32))
    await put(app, alice, registration())
    before = await stored_devices()
    answer = await put(app, bob, registration())
    assert (answer.status_code, error(answer)["error"]) == (503, "token_proof_push_failed")
    assert (await stored_devices(), await listing(app, bob)) == (before, [])


async def test_a_token_signed_out_of_moves_to_the_next_user_at_once(
    app: dict[str, Fn], idp: DevIdentityProvider
) -> None:
    alice, bob = bearer(idp, "alice"), bearer(idp, "bob")
    await put(app, alice, registration())
    assert (await delete(app, alice, device_id_for(TOKEN))).status_code == 204
    assert (await put(app, bob, registration())).status_code == 200
    assert [d["deviceId"] for d in await listing(app, bob)] == [device_id_for(TOKEN)]


async def test_an_expired_token_is_401(app: dict[str, Fn], idp: DevIdentityProvider) -> None:
    expired = {"Authorization": f"Bearer {idp.token('alice', ttl=-3600)}"}
    response = await put(app, expired, registration())
    assert response.status_code == 401
    assert await stored_devices() == []


async def test_a_voip_device_is_registered_without_a_key(
    app: dict[str, Fn], idp: DevIdentityProvider
) -> None:
    alice = bearer(idp, "alice")
    response = await put(app, alice, registration(kind="voip", key=None))
    assert response.status_code == 200
    assert "keyExpiresAt" not in json.loads(response.get_body())
    assert [d["kind"] for d in await listing(app, alice)] == ["voip"]


async def test_storage_round_trips_per_put(app: dict[str, Fn], idp: DevIdentityProvider) -> None:
    alice = bearer(idp, "alice")
    await put(app, alice, registration(token="99" * 32))  # tables, identity: once per process

    async def trips(body: dict[str, Any]) -> int:
        before = round_trips()
        assert (await put(app, alice, body)).status_code == 200
        return round_trips() - before

    # new token: merge 404, owner create, write, schedule, the day's purge-index entry, and the
    # user's devices read against MAX_DEVICES_PER_USER
    assert await trips(registration()) == 6
    assert await trips(registration()) == 2  # renewal: merge, schedule (indexed today already)
    assert await trips(registration(kind="voip", key=None, token="98" * 32)) == 5


@pytest.mark.parametrize(
    "raw",
    [
        json.dumps(registration(environment="staging")).encode(),
        json.dumps(registration(token="not-hex")).encode(),
        b'{"token": ',
        json.dumps(registration(pad="x" * 4096)).encode(),
    ],
    ids=["bad-field", "bad-token", "not-json", "oversized"],
)
async def test_a_bad_body_from_a_new_caller_creates_no_identity_and_sends_nothing_to_storage(
    app: dict[str, Fn], idp: DevIdentityProvider, acs: AcsIdentityService, raw: bytes
) -> None:
    identities, before = acs.identities(), round_trips()
    req = request("PUT", "devices", bearer(idp, "newcomer-with-a-bad-body"), raw=raw)
    response = await app["put_device"](req)
    assert response.status_code in (400, 413)
    assert (round_trips() - before, acs.identities()) == (0, identities)

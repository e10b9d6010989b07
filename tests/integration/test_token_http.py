"""POST /api/token through the app's registered function, with real ``func.HttpRequest`` objects,
on Azurite, the local ACS identity service and the development identity provider's JWKS."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest

from devtools.acs_identity_service import AcsIdentityService
from devtools.azurite import Azurite, free_port
from devtools.dev_identity_provider import DevIdentityProvider
from shared import wiring

pytestmark = pytest.mark.integration

Fn = Callable[[func.HttpRequest], Awaitable[func.HttpResponse]]
APNS_APPS = '[{"bundleId": "com.example.chat", "teamId": "TEAM123456", "keyId": "KEY1234567", "privateKeyFile": "unused.p8"}]'  # noqa: E501


@pytest.fixture(scope="module")
def idp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevIdentityProvider]:
    with DevIdentityProvider.start(tmp_path_factory.mktemp("idp")) as provider:
        yield provider


@pytest.fixture
def acs(tmp_path: Path) -> Iterator[AcsIdentityService]:
    with AcsIdentityService.start(tmp_path / "acs") as service:
        yield service


def _env(
    azurite: Azurite, prefix: str, idp: DevIdentityProvider, acs: AcsIdentityService
) -> dict[str, str]:
    return {
        "STORAGE_CONNECTION": azurite.connection_string,
        "TABLE_PREFIX": prefix,
        "APNS_APPS": APNS_APPS,
        "KEY_ENCRYPTION_KEYS": "k1=" + base64.b64encode(b"\x01" * 32).decode(),
        "ACS_CONNECTION_STRING": acs.connection_string,
        "ACS_CA_FILE": str(acs.ca_file),
        "TOKEN_RATE_LIMIT_PER_MINUTE": "3",
        **idp.settings,
    }


@pytest.fixture
async def app_env(
    azurite: Azurite, table_prefix: str, idp: DevIdentityProvider, acs: AcsIdentityService
) -> AsyncIterator[dict[str, str]]:
    env = _env(azurite, table_prefix, idp, acs)
    container = wiring.reset(env)
    yield env
    await wiring.container().aclose()
    await container.aclose()
    idp.outage = False


@pytest.fixture(scope="module")
def issue_token() -> Fn:
    """The registered ``issue_token`` function, found through ``app.get_functions()``."""
    from function_app import app

    # azure-functions 1.26 rejects a second get_functions() on one app (it remembers the names
    # it indexed); index afresh and leave the app as found for other tests.
    seen = app.functions_bindings
    app.functions_bindings = {}
    try:
        functions = {f.get_function_name(): f for f in app.get_functions()}
    finally:
        app.functions_bindings = seen
    fn: Fn = functions["issue_token"].get_user_function()
    return fn


def _request(headers: dict[str, str] | None = None) -> func.HttpRequest:
    return func.HttpRequest(
        "POST",
        "http://127.0.0.1/api/token",
        headers=headers or {},
        params={},
        route_params={},
        body=b"",
    )


def _bearer(idp: DevIdentityProvider, sub: str = "alice", **kwargs: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {idp.token(sub, **kwargs)}"}


def _json(response: func.HttpResponse) -> Any:
    return json.loads(response.get_body())


async def test_token_answer_has_the_sample_fields(
    app_env: dict[str, str], issue_token: Fn, idp: DevIdentityProvider, acs: AcsIdentityService
) -> None:
    response = await issue_token(_request(_bearer(idp)))
    body = _json(response)
    assert response.status_code == 200
    assert set(body) == {"acsUserId", "acsEndpoint", "userToken", "expiresOn"}
    assert body["acsEndpoint"] == acs.endpoint
    assert acs.identities() == [body["acsUserId"]]
    assert response.headers["Cache-Control"] == "no-store"


async def test_same_caller_keeps_the_same_identity(
    app_env: dict[str, str], issue_token: Fn, idp: DevIdentityProvider, acs: AcsIdentityService
) -> None:
    first = _json(await issue_token(_request(_bearer(idp))))
    second = _json(await issue_token(_request(_bearer(idp))))
    assert first["acsUserId"] == second["acsUserId"]
    assert first["userToken"] != second["userToken"]
    assert len(acs.identities()) == 1


async def test_concurrent_first_calls_create_one_identity(
    app_env: dict[str, str], issue_token: Fn, idp: DevIdentityProvider, acs: AcsIdentityService
) -> None:
    responses = await asyncio.gather(*(issue_token(_request(_bearer(idp))) for _ in range(3)))
    assert [r.status_code for r in responses] == [200, 200, 200]
    assert len({_json(r)["acsUserId"] for r in responses}) == 1
    assert len(acs.identities()) == 1


async def test_different_callers_get_different_identities(
    app_env: dict[str, str], issue_token: Fn, idp: DevIdentityProvider
) -> None:
    alice = _json(await issue_token(_request(_bearer(idp, "alice"))))
    bob = _json(await issue_token(_request(_bearer(idp, "bob"))))
    assert alice["acsUserId"] != bob["acsUserId"]


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        (lambda idp: {}, "missing bearer token"),
        (lambda idp: _bearer(idp, audience="api://someone-else"), "wrong token audience"),
        (
            lambda idp: {"Authorization": "Bearer " + idp.token("alice")[:-4] + "AAAA"},
            "bad token signature",
        ),
        (
            lambda idp: {
                "X-MS-CLIENT-PRINCIPAL": base64.b64encode(
                    b'{"claims":[{"typ":"sub","val":"alice"}]}'
                ).decode()
            },
            "missing bearer token",
        ),
    ],
    ids=["no-credentials", "wrong-audience", "bad-signature", "forged-easy-auth"],
)
async def test_bad_credentials_are_401_and_create_nothing(
    app_env: dict[str, str],
    issue_token: Fn,
    idp: DevIdentityProvider,
    acs: AcsIdentityService,
    headers: Callable[[DevIdentityProvider], dict[str, str]],
    reason: str,
) -> None:
    response = await issue_token(_request(headers(idp)))
    assert (response.status_code, _json(response)) == (401, {"error": reason})
    assert response.headers["WWW-Authenticate"].startswith('Bearer realm="pushrelay"')
    assert acs.identities() == []


async def test_fourth_token_in_a_minute_is_429_with_retry_after(
    app_env: dict[str, str], issue_token: Fn, idp: DevIdentityProvider
) -> None:
    for _ in range(3):
        assert (await issue_token(_request(_bearer(idp)))).status_code == 200
    response = await issue_token(_request(_bearer(idp)))
    assert (response.status_code, _json(response)) == (429, {"error": "rate_limited"})
    assert 1 <= int(response.headers["Retry-After"]) <= 20


async def test_acs_failing_is_503_with_json(
    app_env: dict[str, str], issue_token: Fn, idp: DevIdentityProvider, acs: AcsIdentityService
) -> None:
    acs.fail_next(503, times=10)
    response = await issue_token(_request(_bearer(idp)))
    assert (response.status_code, _json(response)) == (503, {"error": "acs_unavailable"})
    assert response.headers["Retry-After"] == "5"


async def test_acs_unreachable_is_503_with_json(
    azurite: Azurite,
    table_prefix: str,
    idp: DevIdentityProvider,
    acs: AcsIdentityService,
    issue_token: Fn,
) -> None:
    env = _env(azurite, table_prefix, idp, acs)
    env["ACS_CONNECTION_STRING"] = env["ACS_CONNECTION_STRING"].replace(
        acs.endpoint, f"https://127.0.0.1:{free_port()}"
    )
    container = wiring.reset(env)
    try:
        response = await issue_token(_request(_bearer(idp)))
    finally:
        await container.aclose()
    assert (response.status_code, _json(response)) == (503, {"error": "acs_unavailable"})


async def test_acs_refusing_our_key_is_502_with_json(
    azurite: Azurite,
    table_prefix: str,
    idp: DevIdentityProvider,
    acs: AcsIdentityService,
    issue_token: Fn,
) -> None:
    env = _env(azurite, table_prefix, idp, acs)
    env["ACS_CONNECTION_STRING"] = (
        f"endpoint={acs.endpoint}/;accesskey={base64.b64encode(b'w' * 64).decode()}"
    )
    container = wiring.reset(env)
    try:
        response = await issue_token(_request(_bearer(idp)))
    finally:
        await container.aclose()
    assert (response.status_code, _json(response)) == (502, {"error": "acs_rejected"})
    assert acs.identities() == []


async def test_jwks_outage_is_503_not_401(
    app_env: dict[str, str], issue_token: Fn, idp: DevIdentityProvider, acs: AcsIdentityService
) -> None:
    idp.outage = True
    response = await issue_token(_request(_bearer(idp)))
    assert (response.status_code, _json(response)) == (
        503,
        {"error": "identity_provider_unavailable"},
    )
    assert acs.identities() == []

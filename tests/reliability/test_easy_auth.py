"""Forged Easy Auth headers against the registered functions themselves.

The local host strips ``X-MS-CLIENT-PRINCIPAL*`` (no Easy Auth stands in front of it), but in
Azure with Easy Auth off the headers reach the app as the client sent them. So the functions
are called directly, with real ``func.HttpRequest`` objects: with ``EASY_AUTH_ENABLED`` off a
forged principal is never trusted, and with it on a malformed one is refused. Storage and the
ACS identities stay unchanged.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import azure.functions as func
import pytest

from devtools.acs_identity_service import AcsIdentityService
from devtools.azurite import Azurite
from devtools.dev_identity_provider import DevIdentityProvider
from devtools.localhost.catalog import app_functions
from shared import wiring
from tests.reliability.conftest import app_env, principal, snapshot

pytestmark = [pytest.mark.reliability, pytest.mark.integration]

Fn = Callable[[func.HttpRequest], Awaitable[func.HttpResponse]]
PREFIX = "e" + uuid.uuid4().hex[:12]


@pytest.fixture
async def functions() -> AsyncIterator[Callable[..., Awaitable[int]]]:
    """Call a registered function with headers under settings; the container is closed after."""
    from function_app import app

    registered: dict[str, Fn] = {
        f.get_function_name(): f.get_user_function() for f in app_functions(app)
    }

    async def call(
        name: str,
        headers: dict[str, str],
        env: dict[str, str],
        params: dict[str, str] | None = None,
    ) -> int:
        container = wiring.reset(env)
        try:
            method = "GET" if name in ("list_devices", "delivery_log") else "POST"
            req = func.HttpRequest(method, "http://127.0.0.1/api/x", headers=headers,
                                   params=params or {}, route_params={}, body=b"{}")  # fmt: skip
            return (await registered[name](req)).status_code
        finally:
            await container.aclose()

    yield call
    wiring.reset()


def settings(az: Azurite, idp: DevIdentityProvider, acs: AcsIdentityService, on: bool) -> Any:
    return app_env(az.connection_string, PREFIX, idp=idp, acs=acs,
                   EASY_AUTH_ENABLED="true" if on else "false")  # fmt: skip


def state(az: Azurite, acs: AcsIdentityService) -> tuple[Any, list[str]]:
    return snapshot(az.connection_string, PREFIX), sorted(acs.identities())


@pytest.mark.parametrize("name", ["issue_token", "list_devices", "put_device"])
async def test_forged_principal_is_ignored_when_easy_auth_is_off(
    name: str,
    functions: Callable[..., Awaitable[int]],
    azurite: Azurite,
    idp: DevIdentityProvider,
    acs: AcsIdentityService,
) -> None:
    before = state(azurite, acs)
    headers = {"X-MS-CLIENT-PRINCIPAL": principal("alice"), "X-MS-CLIENT-PRINCIPAL-ID": "alice"}
    status = await functions(name, headers, settings(azurite, idp, acs, on=False))
    assert (status, state(azurite, acs)) == (401, before)


@pytest.mark.parametrize(
    "value",
    ["not base64!", base64.b64encode(b"[]").decode(), base64.b64encode(b'{"claims": 1}').decode(),
     base64.b64encode(b'{"claims": [{"typ": "sub", "val": ""}]}').decode(), "A" * 20000,
     # Well-formed JSON naming a subject or issuer no caller key can hold, and deep nesting:
     # these were 500s (UnicodeEncodeError, RecursionError) before shared/edges/auth.py checked
    # them.
     base64.b64encode(b'{"claims": [{"typ": "sub", "val": "\\ud800"}]}').decode(),
     base64.b64encode(b'{"claims": [{"typ": "sub", "val": "a"}, {"typ": "iss", "val": "\\udc00"}]}'
                      ).decode(),
     base64.b64encode(b'{"claims": [], "x": ' + b"[" * 20000 + b"}").decode()],
)  # fmt: skip
async def test_malformed_principal_is_refused_when_easy_auth_is_on(
    value: str,
    functions: Callable[..., Awaitable[int]],
    azurite: Azurite,
    idp: DevIdentityProvider,
    acs: AcsIdentityService,
) -> None:
    before = state(azurite, acs)
    status = await functions(
        "issue_token", {"X-MS-CLIENT-PRINCIPAL": value}, settings(azurite, idp, acs, on=True)
    )
    assert (status, state(azurite, acs)) == (401, before)


async def test_a_wellformed_principal_is_trusted_only_when_easy_auth_is_on(
    functions: Callable[..., Awaitable[int]],
    azurite: Azurite,
    idp: DevIdentityProvider,
    acs: AcsIdentityService,
) -> None:
    """The control case: the same header that is refused when off works when on."""
    headers = {"X-MS-CLIENT-PRINCIPAL": principal("carol")}
    off = await functions("list_devices", headers, settings(azurite, idp, acs, on=False))
    on = await functions("list_devices", headers, settings(azurite, idp, acs, on=True))
    assert (off, on) == (401, 200)


# --- delivery-log admins are named by issuer ------------------------------------------------------

ENTRA = "https://login.microsoftonline.com/tenant-1/v2.0"
OID = "6f1d2c3b-0000-4000-8000-00000000a11c"
LOG_QUERY = {"threadId": "t", "messageId": "m", "userId": "8:acs:r_u"}


def signed_in(issuer: str | None, subject: str, oid: str | None = None) -> dict[str, str]:
    """Easy Auth's principal for a user of ``issuer`` (None: a provider whose token has none)."""
    claims = [{"typ": "sub", "val": subject}]
    claims += [{"typ": "iss", "val": issuer}] if issuer else []
    oid_type = "http://schemas.microsoft.com/identity/claims/objectidentifier"
    claims += [{"typ": oid_type, "val": oid}] if oid else []
    body = json.dumps({"auth_typ": "aad", "claims": claims}).encode()
    return {"X-MS-CLIENT-PRINCIPAL": base64.b64encode(body).decode()}


@pytest.mark.parametrize(
    ("admins", "headers"),
    [
        ("ops", signed_in("https://evil.example", "ops")),  # the attack run's case
        ("ops", signed_in(None, "ops")),
        (f"{ENTRA} ops", signed_in("https://evil.example", "ops")),
        (f"{ENTRA} {OID}", signed_in("https://evil.example", "x", oid=OID)),
    ],
    ids=["bare-subject-any-issuer", "bare-subject-no-issuer", "named-other-issuer",
         "object-id-other-issuer"],
)  # fmt: skip
async def test_the_admin_subject_from_another_issuer_reads_no_delivery_log(
    admins: str,
    headers: dict[str, str],
    functions: Callable[..., Awaitable[int]],
    azurite: Azurite,
    idp: DevIdentityProvider,
    acs: AcsIdentityService,
) -> None:
    env = {**settings(azurite, idp, acs, on=True), "DELIVERY_LOG_ADMINS": admins}
    before = state(azurite, acs)
    status = await functions("delivery_log", headers, env, LOG_QUERY)
    assert (status, state(azurite, acs)) == (403, before)


@pytest.mark.parametrize(
    ("admins", "headers"),
    [
        (f"{ENTRA} ops", signed_in(ENTRA, "ops")),
        (f"{ENTRA} {OID}", signed_in(ENTRA, "pairwise-subject", oid=OID)),
    ],
    ids=["issuer-and-subject", "issuer-and-object-id"],
)
async def test_an_admin_named_by_issuer_reads_the_delivery_log(
    admins: str,
    headers: dict[str, str],
    functions: Callable[..., Awaitable[int]],
    azurite: Azurite,
    idp: DevIdentityProvider,
    acs: AcsIdentityService,
) -> None:
    env = {**settings(azurite, idp, acs, on=True), "DELIVERY_LOG_ADMINS": admins}
    assert await functions("delivery_log", headers, env, LOG_QUERY) == 200

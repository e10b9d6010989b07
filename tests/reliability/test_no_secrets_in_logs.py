"""No secrets in logs: every log record of a full end-to-end run, root logger at DEBUG, is scanned.

The run goes through the local host like an iOS app and Event Grid would, on its good and bad
paths: tokens for two users, registrations with preview keys (alert and VoIP), a listing, chat
events to phones with and without a key, an APNs outage answered by redelivery, a phone that
APNs reports as unregistered, an incoming call, the admin's delivery log, refused callers, a
malformed event, a removal. The APNs simulator runs in its own process, so every record here
comes from the app, the host or the libraries the app uses (the development identity provider
and ACS identity service, test doubles in this process, are left out by logger name).

None of these may appear in any record (message, arguments or traceback): the key-encryption
key, the ACS access key, the storage account key, the APNs signing key, a JWT of any kind
(caller tokens, ACS user tokens, provider tokens, the call context), a full device token, a
preview key, or a message body.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import logging
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization

from devtools.acs_identity_service import AcsIdentityService
from devtools.azurite import ACCOUNT_KEY, Azurite
from devtools.dev_identity_provider import DevIdentityProvider
from tests.reliability.conftest import (
    APP,
    EG_HEADERS,
    KEK,
    KEY_ID,
    REPO,
    SIGNING_KEY,
    TEAM,
    WEBHOOK,
    app_env,
    sample_event,
    served_app,
)

pytestmark = [pytest.mark.reliability, pytest.mark.e2e]

JWT = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")
PHONE, PHONE_NO_KEY, PHONE_GONE, VOIP = "d1" * 32, "d2" * 32, "d3" * 32, "d4" * 32
PREVIEW_KEY = bytes(range(100, 164))
SECRET_TEXT = "the vault code is 4 8 15 16 23 42 and nobody may read this"
EXCLUDED = ("devtools.dev_identity_provider", "devtools.acs_identity_service")


class Everything(logging.Handler):
    """Keeps every record formatted in full (message, arguments, exception, stack)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.texts: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith(EXCLUDED):
            return
        text = self.format(record)
        if record.stack_info:
            text += "\n" + record.stack_info
        self.texts.append(text + " " + repr(record.args))


@pytest.fixture(scope="module")
def simulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The APNs simulator in its own process (its logs stay out of this one)."""
    state = tmp_path_factory.mktemp("apns-proc")
    keys = state / "keys"
    keys.mkdir()
    public = SIGNING_KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (keys / f"{KEY_ID}.json").write_text(
        json.dumps({"teamId": TEAM, "publicKeyPem": public.decode()})
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "devtools.apns_simulator", "--state-dir", str(state),
         "--keys-dir", str(keys)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        assert line, "the APNs simulator did not start"
        yield json.loads(line)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def chat_event(name: str, user: str, message: str, **data: Any) -> bytes:
    event: dict[str, Any] = copy.deepcopy(sample_event(name))
    event["id"] = f"logs-{message}"
    event["data"].update(
        messageId=message,
        messageBody=SECRET_TEXT,
        recipientCommunicationIdentifier={"rawId": user, "communicationUser": {"id": user}},
        **data,
    )
    return json.dumps([event]).encode()


def call_event(user: str) -> bytes:
    event: dict[str, Any] = copy.deepcopy(sample_event("incoming_call.eventgrid.json"))
    event["id"] = "logs-call"
    event["eventTime"] = datetime.now(UTC).isoformat()
    event["data"]["to"] = {"kind": "communicationUser", "rawId": user,
                           "communicationUser": {"id": user}}  # fmt: skip
    return json.dumps([event]).encode()


THREAD = sample_event("chat_message_received.eventgrid.json")["data"]["threadId"]


class Phone:
    """The iOS app's side of the run, and Event Grid's."""

    def __init__(self, client: httpx.AsyncClient, idp: DevIdentityProvider) -> None:
        self.c, self.idp = client, idp

    def auth(self, subject: str) -> dict[str, str]:
        return {"Authorization": "Bearer " + self.idp.token(subject)}

    async def register(self, subject: str, token: str, kind: str, key: bool) -> int:
        body = {"token": token, "kind": kind, "topic": APP, "environment": "sandbox"}
        if key:
            body["key"] = base64.b64encode(PREVIEW_KEY).decode()
        r = await self.c.put("/api/devices", headers=self.auth(subject), json=body)
        return r.status_code

    async def event(self, function: str, body: bytes) -> int:
        r = await self.c.post(WEBHOOK + function, headers=EG_HEADERS, content=body)
        return r.status_code


async def full_run(base: str, control: str, idp: DevIdentityProvider) -> tuple[list[str], str]:
    """Drive every path once; returns the ACS user tokens handed out during the run and the
    token-proof code Bob's move of one of Alice's phones was proven with."""
    async with (
        httpx.AsyncClient(base_url=base, timeout=30) as client,
        httpx.AsyncClient(base_url=control) as sim,
    ):
        app = Phone(client, idp)
        alice = (await client.post("/api/token", headers=app.auth("alice"))).json()
        bob = (await client.post("/api/token", headers=app.auth("bob"))).json()
        user = alice["acsUserId"]
        for token, kind, key in (
            (PHONE, "alert", True),
            (PHONE_NO_KEY, "alert", False),
            (PHONE_GONE, "alert", True),
            (VOIP, "voip", False),
        ):
            assert await app.register("alice", token, kind, key) == 200
        assert await app.register("alice", PHONE[:-1], "alert", True) == 400
        await client.get("/api/devices", headers=app.auth("alice"))
        bad = {"Authorization": "Bearer " + idp.token("alice") + "x"}
        await client.post("/api/token", headers=bad)
        await client.post("/api/token", headers={"Authorization": "Bearer " + alice["userToken"]})
        await sim.post("/devices/unregister", json={"token": PHONE_GONE})
        await sim.post("/faults", json={"token": PHONE, "reason": "ServiceUnavailable"})
        received = chat_event("chat_message_received.eventgrid.json", user, "m1")
        statuses = [await app.event("on_chat_event", received)]
        await sim.delete("/faults")
        statuses.append(await app.event("on_chat_event", received))
        assert statuses == [500, 202]
        await app.event(
            "on_chat_event", chat_event("chat_message_edited.cloudevents.json", user, "m1")
        )
        malformed = chat_event("chat_message_received.eventgrid.json", user, "m2",
                               senderDisplayName=SECRET_TEXT, version="oops")  # fmt: skip
        assert await app.event("on_chat_event", malformed) == 202
        await app.event("on_call_event", call_event(user))
        log_query = {"threadId": THREAD, "messageId": "m1", "userId": user}
        await client.get("/api/deliveries", headers=app.auth("ops-admin"), params=log_query)
        code = await move_a_phone(app, sim)
        listed = (await client.get("/api/devices", headers=app.auth("alice"))).json()
        device_id = listed["devices"][0]["deviceId"]
        await client.delete(f"/api/devices/{device_id}", headers=app.auth("alice"))
    return [alice["userToken"], bob["userToken"]], code


async def move_a_phone(app: Phone, sim: httpx.AsyncClient) -> str:
    """Bob takes over Alice's keyless phone with proof of possession (a wrong code first)."""
    body = {"token": PHONE_NO_KEY, "kind": "alert", "topic": APP, "environment": "sandbox"}
    assert (await app.c.put("/api/devices", headers=app.auth("bob"), json=body)).status_code == 202
    pushed = (await sim.get("/requests")).json()
    (code,) = [r["payload"]["pushrelay"]["tokenProof"] for r in pushed
               if isinstance(r.get("payload"), dict) and "pushrelay" in r["payload"]]  # fmt: skip
    wrong = await app.c.put(
        "/api/devices", headers=app.auth("bob"), json=body | {"tokenProof": "x"}
    )
    right = await app.c.put(
        "/api/devices", headers=app.auth("bob"), json=body | {"tokenProof": code}
    )
    assert (wrong.status_code, right.status_code) == (403, 200)
    return str(code)


@pytest.fixture(scope="module")
def logs(
    simulator: dict[str, Any],
    idp: DevIdentityProvider,
    acs: AcsIdentityService,
    azurite: Azurite,
) -> Iterator[tuple[list[str], dict[str, str]]]:
    env = app_env(azurite.connection_string, "l" + uuid.uuid4().hex[:12], idp=idp, acs=acs,
                  **simulator["settings"])  # fmt: skip
    handler = Everything()
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        with served_app(env) as served:
            handed_out, code = asyncio.run(full_run(served.base, simulator["control_url"], idp))
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    pem_lines = [
        line
        for line in json.loads(env["APNS_APPS"])[0]["privateKey"].splitlines()
        if "---" not in line
    ]
    secrets = {
        "key-encryption key": KEK.split("=", 1)[1],
        "ACS access key": acs.connection_string.split("accesskey=", 1)[1],
        "storage account key": ACCOUNT_KEY,
        "APNs signing key": max(pem_lines, key=len),
        "preview key (base64)": base64.b64encode(PREVIEW_KEY).decode(),
        "preview key (hex)": PREVIEW_KEY.hex(),
        "message body": SECRET_TEXT,
        **{f"device token {t[:4]}": t for t in (PHONE, PHONE_NO_KEY, PHONE_GONE, VOIP)},
        **{f"ACS user token {i}": t for i, t in enumerate(handed_out)},
        "token proof code": code,
    }
    yield handler.texts, secrets


def test_the_run_logged_something_to_scan(logs: tuple[list[str], dict[str, str]]) -> None:
    texts, _ = logs
    assert len(texts) > 50 and any("shared." in t for t in texts)


@pytest.mark.parametrize(
    "what",
    ["key-encryption key", "ACS access key", "storage account key", "APNs signing key",
     "preview key (base64)", "preview key (hex)", "message body", "device token d1d1",
     "device token d2d2", "device token d3d3", "device token d4d4", "ACS user token 0",
     "ACS user token 1", "token proof code"],
)  # fmt: skip
def test_no_log_record_holds_the_secret(
    what: str, logs: tuple[list[str], dict[str, str]], figures: dict[str, dict[str, Any]]
) -> None:
    texts, secrets = logs
    figures.setdefault("log scan", {"records": len(texts), "secrets_checked": len(secrets) + 1})
    leaks = [t[:300] for t in texts if secrets[what] in t or secrets[what].upper() in t]
    assert leaks == []


def test_no_log_record_holds_a_jwt(logs: tuple[list[str], dict[str, str]]) -> None:
    texts, _ = logs
    assert [t[:300] for t in texts if JWT.search(t)] == []


def test_scanner_finds_a_planted_secret(logs: tuple[list[str], dict[str, str]]) -> None:
    """The scan itself works: a record holding a device token would be caught."""
    _, secrets = logs
    planted = Everything()
    planted.emit(logging.makeLogRecord({"name": "shared.x", "msg": "token %s", "args": (PHONE,)}))
    assert any(secrets["device token d1d1"] in t for t in planted.texts)

"""pushrelay's device API as the registration contract fixes it, in memory, for phones.

:class:`ContractServer` answers ``/api/token`` and ``/api/devices`` (token-move proof, absent
``key`` keeping the stored one, ``null`` removing it) and the development identity provider's
``/idp/token``, and is the phones' ``PushSource`` for the pushes it sends. Used by the reference
device's tests and the console's (whose phones are reference devices).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from devtools.reference_device import (
    DevIdentityProvider,
    Push,
    PushSource,
    ReferenceDevice,
    RelayClient,
)

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


class ContractServer:
    """pushrelay's ``/api/token`` and ``/api/devices`` per the registration contract, in memory,
    plus the development identity provider's ``/token`` and the pushes it sends."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.owners: dict[str, str] = {}  # token -> subject
        self.keys: dict[str, str | None] = {}  # token -> stored key
        self.codes: dict[str, tuple[str, str, datetime]] = {}  # token -> (code, subject, expiry)
        self.puts: list[dict[str, Any]] = []
        self.delivered: list[Push] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/idp/token":
            sub = request.url.params["sub"]
            return httpx.Response(200, json={"access_token": "tok-" + sub, "expires_in": 3600})
        subject = request.headers["Authorization"].removeprefix("Bearer tok-")
        if path == "/api/token":
            return httpx.Response(200, json={"acsUserId": "8:acs:" + subject,
                                             "acsEndpoint": "https://acs", "userToken": "t",
                                             "expiresOn": "2026-03-02T00:00:00Z"})  # fmt: skip
        if request.method == "PUT":
            return self.put(subject, json.loads(request.content))
        device_id = path.rsplit("/", 1)[-1]
        for token, owner in list(self.owners.items()):
            if owner == subject and hashlib.sha256(token.encode()).hexdigest() == device_id:
                del self.owners[token]
                return httpx.Response(204)
        return httpx.Response(404, json={"error": "device_not_found"})

    def put(self, subject: str, body: dict[str, Any]) -> httpx.Response:
        self.puts.append(body)
        token, now = body["token"], self.clock()
        device_id = hashlib.sha256(token.encode()).hexdigest()
        holder = self.owners.get(token)
        if holder is not None and holder != subject:
            proof = body.get("tokenProof")
            if proof is None:
                code = uuid.uuid4().hex
                self.codes[token] = (code, subject, now + timedelta(minutes=5))
                self.send(token, {"aps": {"content-available": 1},
                                  "pushrelay": {"tokenProof": code}})  # fmt: skip
                expires = (now + timedelta(minutes=5)).isoformat()
                return httpx.Response(
                    202,
                    json={"status": "proofRequired", "deviceId": device_id, "expiresAt": expires},
                )
            expected = self.codes.get(token)
            if expected is None or expected[:2] != (proof, subject) or expected[2] <= now:
                return httpx.Response(403, json={"error": "token_proof_invalid"})
            del self.codes[token]
        self.owners[token] = subject
        answer: dict[str, Any] = {"deviceId": device_id}
        if "key" in body:  # absent keeps the stored key; null removes it
            self.keys[token] = body["key"]
        if self.keys.get(token) is not None and body["kind"] == "alert":
            answer["keyExpiresAt"] = (now + timedelta(minutes=45)).isoformat()
        return httpx.Response(200, json=answer)

    def send(self, token: str, payload: dict[str, Any]) -> None:
        push_type = "background" if "content-available" in payload["aps"] else "alert"
        self.delivered.append(Push(len(self.delivered) + 1, token, push_type, "app", "5", None,
                                   None, payload))  # fmt: skip

    def pushes(self, token: str, since: int) -> list[Push]:
        return [p for p in self.delivered if p.token == token and p.seq > since]


def contract_phone(
    server: ContractServer,
    clock: Clock,
    *,
    pushes: PushSource | None = None,
    token_url: str = "http://relay/idp/token",
    handler: Callable[[httpx.Request], httpx.Response] | None = None,
    **options: Any,
) -> tuple[ReferenceDevice, httpx.Client]:
    """A reference device talking to ``server`` (or ``handler``), and its HTTP client."""
    http = httpx.Client(transport=httpx.MockTransport(handler or server.handle))
    device = ReferenceDevice(
        relay=RelayClient("http://relay", http),
        idp=DevIdentityProvider(token_url, http),
        pushes=pushes or server,
        topic="app",
        clock=clock,
        **options,
    )
    return device, http

"""Attacks on the HTTP API, through the local host (and, for Easy Auth headers, which the local
host strips, through the registered functions themselves): every one is refused and storage and
the ACS identities are unchanged.

- a JWT corpus: ``alg: none``, HS256 keyed with the RSA public key, expired, future ``nbf``,
  wrong ``iss``/``aud``, unknown ``kid``, a foreign key reusing the real ``kid``, a valid token of
  another app's identity provider, and a JWKS outage;
- forged Easy Auth headers are stripped by the local host (the functions themselves are checked
  in ``test_easy_auth.py``);
- cross-user access to devices, identities and tokens, and the delivery log;
- key and OData injection through the device id, the log's query and the token subject.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from devtools.acs_identity_service import AcsIdentityService
from devtools.apns_simulator import ApnsSimulator, Fault
from devtools.azurite import Azurite
from devtools.dev_identity_provider import DevIdentityProvider
from shared.storage.tables import encode_key
from tests.reliability.conftest import (
    APP,
    EG_HEADERS,
    WEBHOOK,
    Served,
    app_env,
    device_token,
    principal,
    raw_id,
    sample_event,
    served_app,
    snapshot,
    store_devices,
)

pytestmark = [pytest.mark.reliability, pytest.mark.e2e]

PREFIX = "a" + uuid.uuid4().hex[:12]
ALICE, BOB = "alice", "bob"
ALICE_TOKEN = "a1" * 32
KEY = base64.b64encode(bytes(range(64))).decode()
ROUTES = [
    ("POST", "/api/token"),
    ("PUT", "/api/devices"),
    ("GET", "/api/devices"),
    ("DELETE", "/api/devices/" + hashlib.sha256(bytes.fromhex(ALICE_TOKEN)).hexdigest()),
    ("GET", "/api/deliveries?threadId=t&messageId=m&userId=u"),
]


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.fixture(scope="module")
def idp_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("attack-idp")


@pytest.fixture(scope="module")
def idp(idp_dir: Path) -> Iterator[DevIdentityProvider]:
    with DevIdentityProvider.start(idp_dir) as provider:
        yield provider


@pytest.fixture(scope="module")
def other_idp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevIdentityProvider]:
    """Another app's identity provider: its tokens are valid, for the wrong audience/issuer."""
    with DevIdentityProvider.start(
        tmp_path_factory.mktemp("other-idp"), audience="api://another-app"
    ) as provider:
        yield provider


@pytest.fixture(scope="module")
def served(idp: DevIdentityProvider, acs: AcsIdentityService, azurite: Azurite) -> Iterator[Served]:
    env = app_env(azurite.connection_string, PREFIX, idp=idp, acs=acs)
    with served_app(env) as served:
        # Alice exists: her identity and her phone are what the attacks go after.
        alice = {"Authorization": "Bearer " + idp.token(ALICE)}
        assert httpx.post(served.base + "/api/token", headers=alice).status_code == 200
        device = {"token": ALICE_TOKEN, "kind": "alert", "topic": APP, "environment": "sandbox",
                  "key": KEY}  # fmt: skip
        assert (
            httpx.put(served.base + "/api/devices", headers=alice, json=device).status_code == 200
        )
        yield served


class JwtCorpus:
    """Forged and misused tokens for the subject ``alice``."""

    def __init__(self, idp: DevIdentityProvider, idp_dir: Path, other: DevIdentityProvider) -> None:
        key = serialization.load_pem_private_key((idp_dir / "dev-idp-key.pem").read_bytes(), None)
        assert isinstance(key, rsa.RSAPrivateKey)
        self.key, self.idp, self.other = key, idp, other

    def claims(self, **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        claims = {"iss": self.idp.issuer, "aud": self.idp.audience, "sub": ALICE, "iat": now,
                  "nbf": now, "exp": now + 600}  # fmt: skip
        claims.update(overrides)
        return claims

    def signed(self, key: Any = None, alg: str = "RS256", kid: str | None = None,
               **claims: Any) -> str:  # fmt: skip
        headers = {"kid": self.idp.kid if kid is None else kid}
        return jwt.encode(self.claims(**claims), key or self.key, algorithm=alg, headers=headers)

    def tokens(self) -> dict[str, str]:
        now = int(time.time())
        header = b64url(json.dumps({"alg": "none", "kid": self.idp.kid, "typ": "JWT"}).encode())
        body = b64url(json.dumps(self.claims()).encode())
        public_pem = self.key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        hs_header = b64url(json.dumps({"alg": "HS256", "kid": self.idp.kid}).encode())
        hs_sig = hmac.new(public_pem, f"{hs_header}.{body}".encode(), hashlib.sha256).digest()
        stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return {
            "alg none": f"{header}.{body}.",
            "HS256 keyed with the RSA public key": f"{hs_header}.{body}.{b64url(hs_sig)}",
            "expired": self.signed(exp=now - 3600, iat=now - 7200, nbf=now - 7200),
            "future nbf": self.signed(nbf=now + 3600),
            "issued in the future": self.signed(iat=now + 3600),
            "wrong iss": self.signed(iss="https://evil.example"),
            "wrong aud": self.signed(aud="api://another-app"),
            "no sub": self.signed(sub=""),
            "unknown kid": self.signed(kid="no-such-kid"),
            "foreign key with the real kid": self.signed(key=stranger),
            "ES256 claiming the RSA kid": self.signed(
                key=ec.generate_private_key(ec.SECP256R1()), alg="ES256"
            ),
            "valid token of another app": self.other.token(ALICE),
            "exp as text": self.signed(exp="tomorrow"),
            # Correctly signed, hostile inside: each was a 500 before shared/edges/auth.py checked
            # it.
            "sub with a lone surrogate": self.signed(sub="\ud800"),
            "sub with a NUL": self.signed(sub="alice\x00"),
            "exp past a float": self.signed(exp=10**400),
            "iat past a float": self.signed(iat=10**400),
        }


@pytest.fixture(scope="module")
def corpus(idp: DevIdentityProvider, idp_dir: Path, other_idp: DevIdentityProvider) -> JwtCorpus:
    return JwtCorpus(idp, idp_dir, other_idp)


def state(az: Azurite, acs: AcsIdentityService) -> tuple[Any, list[str]]:
    return snapshot(az.connection_string, PREFIX), sorted(acs.identities())


def request(base: str, method: str, path: str, headers: dict[str, str]) -> httpx.Response:
    body = {"token": "b2" * 32, "kind": "alert", "topic": APP, "environment": "sandbox"}
    return httpx.request(method, base + path, headers=headers, json=body, timeout=30)


@pytest.mark.parametrize(
    "name",
    [
        "alg none", "HS256 keyed with the RSA public key", "expired", "future nbf",
        "issued in the future", "wrong iss", "wrong aud", "no sub", "unknown kid",
        "foreign key with the real kid", "ES256 claiming the RSA kid",
        "valid token of another app", "exp as text", "sub with a lone surrogate",
        "sub with a NUL", "exp past a float", "iat past a float",
    ],
)  # fmt: skip
def test_forged_or_misused_jwt_is_refused_everywhere(
    name: str,
    corpus: JwtCorpus,
    served: Served,
    azurite: Azurite,
    acs: AcsIdentityService,
    figures: dict[str, dict[str, Any]],
) -> None:
    before = state(azurite, acs)
    headers = {"Authorization": "Bearer " + corpus.tokens()[name]}
    statuses = {path: request(served.base, m, path, headers).status_code for m, path in ROUTES}
    tally = figures.setdefault("attacks", {"requests": 0, "refused": 0})
    tally["requests"] += len(statuses)
    tally["refused"] += sum(1 for s in statuses.values() if s in (401, 403))
    assert (set(statuses.values()), state(azurite, acs)) == ({401}, before)


def test_jwks_outage_refuses_tokens_it_cannot_check(
    corpus: JwtCorpus, served: Served, idp: DevIdentityProvider, azurite: Azurite,
    acs: AcsIdentityService,
) -> None:  # fmt: skip
    before = state(azurite, acs)
    headers = {"Authorization": "Bearer " + corpus.signed(kid="rotated-key")}
    idp.outage = True
    try:
        statuses = {request(served.base, m, p, headers).status_code for m, p in ROUTES}
    finally:
        idp.outage = False
    assert statuses <= {401, 503} and state(azurite, acs) == before


# --- Easy Auth headers (function level: test_easy_auth.py) --------------------------------------


def test_local_host_strips_easy_auth_headers(served: Served) -> None:
    forged = {"X-MS-CLIENT-PRINCIPAL": principal(ALICE)}
    r = httpx.get(served.base + "/api/devices", headers=forged)
    assert r.status_code == 401


# --- cross-user access and injection --------------------------------------------------------------


def bearer(idp: DevIdentityProvider, subject: str) -> dict[str, str]:
    return {"Authorization": "Bearer " + idp.token(subject)}


def test_another_user_sees_none_of_alices_devices(served: Served, idp: DevIdentityProvider) -> None:
    listed = httpx.get(served.base + "/api/devices", headers=bearer(idp, BOB)).json()
    assert listed == {"devices": []}


def test_another_user_cannot_delete_alices_device(
    served: Served, idp: DevIdentityProvider, azurite: Azurite, acs: AcsIdentityService
) -> None:
    httpx.get(served.base + "/api/devices", headers=bearer(idp, BOB))  # Bob exists
    before = state(azurite, acs)
    r = httpx.delete(served.base + ROUTES[3][1], headers=bearer(idp, BOB))
    assert (r.status_code, state(azurite, acs)) == (404, before)


def test_another_user_gets_their_own_identity_and_token(
    served: Served, idp: DevIdentityProvider
) -> None:
    alice = httpx.post(served.base + "/api/token", headers=bearer(idp, ALICE)).json()
    bob = httpx.post(served.base + "/api/token", headers=bearer(idp, BOB)).json()
    assert alice["acsUserId"] != bob["acsUserId"] and alice["userToken"] != bob["userToken"]


def test_a_non_admin_cannot_read_alices_delivery_log(
    served: Served, idp: DevIdentityProvider
) -> None:
    alice = httpx.post(served.base + "/api/token", headers=bearer(idp, ALICE)).json()
    params = {"threadId": "t", "messageId": "m", "userId": alice["acsUserId"]}
    r = httpx.get(served.base + "/api/deliveries", headers=bearer(idp, BOB), params=params)
    assert r.status_code == 403


@pytest.mark.parametrize(
    "device_id",
    ["' or PartitionKey ne '", "%27%20or%20RowKey%20ne%20%27", "*", "..%2F..%2Fdevices",
     hashlib.sha256(bytes.fromhex(ALICE_TOKEN)).hexdigest().upper(), "a" * 64 + "' or '1'='1"],
)  # fmt: skip
def test_device_id_injection_deletes_nothing(
    device_id: str,
    served: Served,
    idp: DevIdentityProvider,
    azurite: Azurite,
    acs: AcsIdentityService,
) -> None:
    httpx.get(served.base + "/api/devices", headers=bearer(idp, BOB))
    before = state(azurite, acs)
    r = httpx.delete(served.base + "/api/devices/" + device_id, headers=bearer(idp, BOB))
    assert (r.status_code, state(azurite, acs)) == (404, before)


@pytest.mark.parametrize(
    "params",
    [
        {"threadId": "t' or '1' eq '1", "messageId": "m", "userId": "u"},
        {"threadId": "t", "messageId": "m') or (PartitionKey ne '", "userId": "u"},
        {"threadId": "t", "messageId": "m", "userId": "' or PartitionKey gt '"},
        {"threadId": "t", "messageId": "*", "userId": "*"},
    ],
)
def test_odata_injection_in_the_delivery_log_query_reads_nothing_else(
    params: dict[str, str],
    served: Served,
    idp: DevIdentityProvider,
    azurite: Azurite,
    acs: AcsIdentityService,
) -> None:
    before = state(azurite, acs)
    r = httpx.get(served.base + "/api/deliveries", headers=bearer(idp, "ops-admin"), params=params)
    assert r.status_code in (200, 400) and state(azurite, acs) == before
    assert r.status_code == 400 or r.json().get("deliveries") == []


def test_injection_in_the_token_subject_gets_a_new_identity_of_its_own(
    served: Served, idp: DevIdentityProvider
) -> None:
    alice = httpx.post(served.base + "/api/token", headers=bearer(idp, ALICE)).json()
    sneaky = httpx.post(
        served.base + "/api/token", headers=bearer(idp, "alice' or PartitionKey ne '")
    ).json()
    assert sneaky["acsUserId"] != alice["acsUserId"]


# --- events that did not come from our ACS resource -----------------------------------------------

OUR_ACS = (
    "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/chat/providers/"
    "Microsoft.Communication/communicationServices/ours"
)
THEIR_ACS = OUR_ACS.removesuffix("ours") + "theirs"
EVENTS_PREFIX = "v" + uuid.uuid4().hex[:12]
VICTIM, VICTIM_ALERT, VICTIM_VOIP = raw_id(7), device_token(7, 1), device_token(7, 2)


@pytest.fixture(scope="module")
def events_app(sim: ApnsSimulator, azurite: Azurite) -> Iterator[Served]:
    """The app with ACS_RESOURCE_ID set, and a user with a phone (alert and VoIP tokens)."""
    env = app_env(azurite.connection_string, EVENTS_PREFIX, sim=sim, ACS_RESOURCE_ID=OUR_ACS)
    with served_app(env) as served:
        asyncio.run(store_devices(env, [(VICTIM, VICTIM_ALERT, True)]))
        asyncio.run(store_devices(env, [(VICTIM, VICTIM_VOIP, False)], kind="voip"))
        yield served


def addressed(name: str, origin: str | None, event_id: str) -> dict[str, Any]:
    """A sample event for the victim, stamped now, claiming to come from ``origin``."""
    event = sample_event(name)
    ident = {"rawId": VICTIM, "communicationUser": {"id": VICTIM}}
    now = datetime.now(UTC).isoformat()
    if "IncomingCall" in str(event.get("eventType") or event.get("type")):
        event["data"]["to"] = {"kind": "communicationUser", **ident}
        event["data"]["serverCallId"] = event["data"]["correlationId"] = event_id  # a new call
    else:
        event["data"]["recipientCommunicationIdentifier"] = ident
        event["data"]["messageId"] = event["data"]["version"] = str(time.time_ns())[:13]
    key = "source" if "specversion" in event else "topic"
    event["eventTime" if key == "topic" else "time"] = now
    event["id"] = event_id
    if origin is None:
        event.pop(key, None)
    else:
        event[key] = origin
    return event


FORGED = [
    ("on_chat_event", "chat_message_received.eventgrid.json", THEIR_ACS),
    ("on_chat_event", "chat_message_received.cloudevents.json", THEIR_ACS),
    ("on_chat_event", "chat_message_received.eventgrid.json", None),
    ("on_chat_event", "chat_message_received.eventgrid.json", OUR_ACS + "/../theirs"),
    ("on_call_event", "incoming_call.eventgrid.json", THEIR_ACS),
    ("on_call_event", "incoming_call.cloudevents.json", THEIR_ACS),
]


@pytest.mark.parametrize(("function", "sample", "origin"), FORGED)
def test_an_event_from_another_resource_pushes_nobody_and_writes_nothing(
    function: str,
    sample: str,
    origin: str | None,
    events_app: Served,
    sim: ApnsSimulator,
    azurite: Azurite,
    caplog: pytest.LogCaptureFixture,
) -> None:
    event_id = "forged-" + uuid.uuid4().hex
    event = addressed(sample, origin, event_id)
    body = json.dumps(event if "specversion" in event else [event])
    before, pushes = snapshot(azurite.connection_string, EVENTS_PREFIX), len(sim.requests())
    with caplog.at_level(logging.WARNING):
        r = httpx.post(events_app.base + WEBHOOK + function, content=body, headers=EG_HEADERS)
    after = snapshot(azurite.connection_string, EVENTS_PREFIX)
    assert (r.status_code // 100, len(sim.requests()) - pushes, after) == (2, 0, before)
    assert any(event_id in m and "another source" in m for m in caplog.messages)


@pytest.mark.parametrize(
    ("function", "sample"),
    [(f, s) for f, s, _ in FORGED[::4]] + [("on_chat_event", FORGED[1][1])],
)
def test_the_same_event_from_our_resource_pushes(
    function: str, sample: str, events_app: Served, sim: ApnsSimulator
) -> None:
    """The control case: with our resource id (in other letter case) the phone is pushed."""
    event = addressed(sample, OUR_ACS.upper(), "ours-" + uuid.uuid4().hex)
    body = json.dumps(event if "specversion" in event else [event])
    pushes = len(sim.requests())
    r = httpx.post(events_app.base + WEBHOOK + function, content=body, headers=EG_HEADERS)
    assert (r.status_code // 100, len(sim.wait_for_requests(pushes + 1)) - pushes) == (2, 1)


# --- one user's many devices ----------------------------------------------------------------------

LIMIT = 5
FLOOD_PREFIX = "l" + uuid.uuid4().hex[:12]


@pytest.fixture(scope="module")
def limited_app(
    sim: ApnsSimulator, idp: DevIdentityProvider, acs: AcsIdentityService, azurite: Azurite
) -> Iterator[Served]:
    env = app_env(azurite.connection_string, FLOOD_PREFIX, sim=sim, idp=idp, acs=acs,
                  MAX_DEVICES_PER_USER=str(LIMIT), BAD_TOKEN_REMOVE_AFTER="1")  # fmt: skip
    with served_app(env) as served:
        yield served


def acs_user(served: Served, idp: DevIdentityProvider, subject: str) -> str:
    r = httpx.post(served.base + "/api/token", headers=bearer(idp, subject), timeout=30)
    return str(r.json()["acsUserId"])


async def register_many(
    served: Served, idp: DevIdentityProvider, subject: str, n: int
) -> list[str]:
    """``n`` registrations of made-up tokens, at once; the tokens."""
    tokens = [f"{subject.encode().hex()[:8]}{i:04x}".ljust(64, "e") for i in range(n)]
    async with httpx.AsyncClient(base_url=served.base, timeout=60) as client:
        answers = await asyncio.gather(*(
            client.put("/api/devices", headers=bearer(idp, subject), json={
                "token": t, "kind": "alert", "topic": APP, "environment": "sandbox"})
            for t in tokens
        ))  # fmt: skip
    assert {r.status_code for r in answers} == {200}
    return tokens


def chat_to(user: str) -> bytes:
    event = sample_event("chat_message_received.eventgrid.json")
    event["data"]["recipientCommunicationIdentifier"] = {"rawId": user}
    event["data"]["messageId"] = event["data"]["version"] = str(time.time_ns())[:13]
    event["id"] = uuid.uuid4().hex
    return json.dumps([event]).encode()


def test_a_registration_flood_leaves_one_user_within_the_limit_and_others_untouched(
    limited_app: Served, idp: DevIdentityProvider, sim: ApnsSimulator, azurite: Azurite,
    figures: dict[str, dict[str, Any]],
) -> None:  # fmt: skip
    bystander = acs_user(limited_app, idp, "bystander")
    asyncio.run(register_many(limited_app, idp, "bystander", 2))
    flooder = acs_user(limited_app, idp, "flooder")

    def bystanders_rows() -> list[dict[str, Any]]:
        devices = snapshot(azurite.connection_string, FLOOD_PREFIX)[FLOOD_PREFIX + "devices"]
        return [r for r in devices if r["PartitionKey"] == encode_key(bystander)]

    before = bystanders_rows()
    asyncio.run(register_many(limited_app, idp, "flooder", 60))
    listed = httpx.get(limited_app.base + "/api/devices", headers=bearer(idp, "flooder")).json()
    pushes = len(sim.requests())
    r = httpx.post(limited_app.base + WEBHOOK + "on_chat_event", content=chat_to(flooder),
                   headers=EG_HEADERS, timeout=60)  # fmt: skip
    sent = len(sim.requests()) - pushes
    figures["device flood"] = {"registered": 60, "kept": len(listed["devices"]), "pushes": sent}
    assert (len(listed["devices"]), r.status_code // 100, sent) == (LIMIT, 2, LIMIT)
    assert bystanders_rows() == before


def test_one_users_bad_tokens_do_not_shield_another_users_dead_token(
    limited_app: Served, idp: DevIdentityProvider, sim: ApnsSimulator
) -> None:
    """The attack run's case: twenty fake tokens of one user tripped the app-wide configuration
    alarm, after which another user's dead token was kept. The alarm now counts users."""
    victim = acs_user(limited_app, idp, "victim-with-a-dead-phone")
    (dead,) = asyncio.run(register_many(limited_app, idp, "victim-with-a-dead-phone", 1))
    attacker = acs_user(limited_app, idp, "fake-token-owner")
    fakes = asyncio.run(register_many(limited_app, idp, "fake-token-owner", LIMIT))
    for token in [*fakes, dead]:
        sim.add_fault(Fault(token=token, reason="BadDeviceToken"))
    try:
        for user in (attacker, victim):
            r = httpx.post(limited_app.base + WEBHOOK + "on_chat_event", content=chat_to(user),
                           headers=EG_HEADERS, timeout=60)  # fmt: skip
            assert r.status_code // 100 == 2
    finally:
        sim.clear_faults()
    left = httpx.get(limited_app.base + "/api/devices",
                     headers=bearer(idp, "victim-with-a-dead-phone")).json()  # fmt: skip
    assert left == {"devices": []}  # BAD_TOKEN_REMOVE_AFTER=1: the dead token is gone


# --- taking over a phone by its token -------------------------------------------------------------

MOVE_PREFIX = "m" + uuid.uuid4().hex[:12]


@pytest.fixture(scope="module")
def phone_app(
    sim: ApnsSimulator, idp: DevIdentityProvider, acs: AcsIdentityService, azurite: Azurite
) -> Iterator[Served]:
    env = app_env(azurite.connection_string, MOVE_PREFIX, sim=sim, idp=idp, acs=acs)
    with served_app(env) as served:
        yield served


@dataclass(frozen=True)
class PhoneOf:
    """A phone registered by its owner: its alert token (with a preview key) and PushKit token."""

    alert: str
    voip: str


@pytest.fixture
def phone(phone_app: Served, idp: DevIdentityProvider) -> PhoneOf:
    n = uuid.uuid4().hex[:8]
    owned = PhoneOf(alert=n + "a" * 56, voip=n + "b" * 56)
    for token, kind in ((owned.alert, "alert"), (owned.voip, "voip")):
        body = {"token": token, "kind": kind, "topic": APP, "environment": "sandbox"}
        body |= {"key": KEY} if kind == "alert" else {}
        r = httpx.put(phone_app.base + "/api/devices", headers=bearer(idp, "owner-" + n), json=body)
        assert r.status_code == 200
    return owned


def put_token(
    served: Served, idp: DevIdentityProvider, subject: str, token: str, **fields: Any
) -> int:
    body = {"token": token, "kind": "alert", "topic": APP, "environment": "sandbox"}
    r = httpx.put(served.base + "/api/devices", headers=bearer(idp, subject), json=body | fields)
    return r.status_code


def registrations(az: Azurite) -> dict[str, Any]:
    """The devices and tokenowners tables: what a takeover would have to change."""
    tables = snapshot(az.connection_string, MOVE_PREFIX)
    return {name: rows for name, rows in tables.items() if name.endswith(("devices", "owners"))}


def proof_codes(sim: ApnsSimulator, token: str) -> list[str]:
    """The codes the phone's app received (only whoever holds the phone ever sees them)."""
    return [
        r.payload["pushrelay"]["tokenProof"]
        for r in sim.requests()
        if r.token == token and isinstance(r.payload, dict) and "pushrelay" in r.payload
    ]


def thief() -> str:
    return "token-thief-" + uuid.uuid4().hex[:8]


@pytest.mark.parametrize(
    "attempt",
    [
        {},
        {"tokenProof": "A" * 22},
        {"tokenProof": "AQEBAQEBAQEBAQEBAQEBAQ"},
        {"kind": "voip"},
        {"voip": True, "kind": "voip"},
        {"voip": True, "kind": "alert"},
        {"environment": "production"},
        {"upper": True},
    ],
    ids=["plain", "guessed-code", "guessed-code-2", "alert-token-as-voip", "voip-token",
         "voip-token-as-alert", "other-environment", "upper-case-token"],
)  # fmt: skip
def test_knowing_a_phones_token_does_not_move_it(
    attempt: dict[str, Any],
    phone: PhoneOf,
    phone_app: Served,
    idp: DevIdentityProvider,
    azurite: Azurite,
    figures: dict[str, dict[str, Any]],
) -> None:
    fields = dict(attempt)
    token = phone.voip if fields.pop("voip", False) else phone.alert
    token = token.upper() if fields.pop("upper", False) else token
    before = registrations(azurite)
    status = put_token(phone_app, idp, thief(), token, **fields)
    tally = figures.setdefault("token takeover", {"attempts": 0, "moved": 0})
    tally["attempts"] += 1
    tally["moved"] += int(status == 200)
    assert status in (202, 403, 409) and registrations(azurite) == before


def test_guessing_codes_voids_the_challenge(
    phone: PhoneOf, phone_app: Served, idp: DevIdentityProvider, azurite: Azurite,
    sim: ApnsSimulator,
) -> None:  # fmt: skip
    before, mallory = registrations(azurite), thief()
    first = put_token(phone_app, idp, mallory, phone.alert)
    guesses = [
        put_token(phone_app, idp, mallory, phone.alert, tokenProof=f"g{n}") for n in range(5)
    ]
    (code,) = proof_codes(sim, phone.alert)  # suppose it leaked to her after all
    late = put_token(phone_app, idp, mallory, phone.alert, tokenProof=code)
    assert (first, set(guesses), late, registrations(azurite)) == (202, {403}, 403, before)


def test_a_code_sent_for_one_user_moves_nothing_for_another(
    phone: PhoneOf, phone_app: Served, idp: DevIdentityProvider, azurite: Azurite,
    sim: ApnsSimulator,
) -> None:  # fmt: skip
    """Even a leaked code is bound to the user it was sent for."""
    assert put_token(phone_app, idp, "new-owner-" + uuid.uuid4().hex[:6], phone.alert) == 202
    (code,) = proof_codes(sim, phone.alert)
    before = registrations(azurite)
    assert put_token(phone_app, idp, thief(), phone.alert, tokenProof=code) in (403, 429)
    assert registrations(azurite) == before


def test_a_storm_of_claims_pushes_the_phone_at_most_three_times_an_hour(
    phone: PhoneOf, phone_app: Served, idp: DevIdentityProvider, sim: ApnsSimulator,
    figures: dict[str, dict[str, Any]],
) -> None:  # fmt: skip
    statuses = [put_token(phone_app, idp, f"stormer-{n}", phone.alert) for n in range(20)]
    pushed = len(proof_codes(sim, phone.alert))
    figures["proof push storm"] = {"claims": 20, "proof pushes": pushed}
    assert pushed <= 3 and set(statuses) <= {202, 429}


def test_the_phones_owner_is_still_pushed_after_the_attempts(
    phone: PhoneOf, phone_app: Served, idp: DevIdentityProvider, sim: ApnsSimulator
) -> None:
    put_token(phone_app, idp, thief(), phone.alert)
    owner = acs_user(phone_app, idp, "owner-" + phone.alert[:8])
    pushes = len(sim.requests())
    r = httpx.post(phone_app.base + WEBHOOK + "on_chat_event", content=chat_to(owner),
                   headers=EG_HEADERS, timeout=60)  # fmt: skip
    (push,) = sim.wait_for_requests(pushes + 1)[pushes:]
    assert (r.status_code // 100, push.token) == (2, phone.alert)

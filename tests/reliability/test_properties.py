"""Property tests that extend the unit suite's (see docs/reliability.md for the full list).

Already in ``tests/unit``: event parsing of arbitrary JSON and mutated samples raises only
``MalformedEvent`` (test_events_properties.py); payloads are valid JSON within the limit with the
preview a prefix of the original for built-up bodies (test_chat_payload.py); key encoding
round-trips and never yields a forbidden character (test_tables_keys.py). Here:

- payloads for *any* text an event's JSON can carry, lone surrogates included, through the
  parser (which replaces them) to the payload;
- HTTP bodies, device registrations and Authorization headers: arbitrary input raises only our
  own 4xx errors (the surrogate-escaped header found by the corpus is one such input);
- key encoding round-trips through real Table Storage (Azurite), not only in memory;
- the APNs client's HPACK request blocks decode (with hpack's decoder) to exactly the fields sent,
  whatever mix of push types shares a connection.

Profiles (``tests/conftest.py``): no deadline; derandomized when ``CI`` is set.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import azure.functions as func
import jwt
import pytest
from azure.data.tables import TableServiceClient
from cryptography.hazmat.primitives.asymmetric import ec
from hpack import Decoder
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jwt import PyJWK

from devtools.azurite import Azurite
from shared.apns.header_block import RequestHeaderEncoder
from shared.domain.chat_payload import ChatPayloadOptions, build_chat_payload
from shared.domain.events import ChatMessageEvent, parse_event
from shared.edges.auth import Authenticator, AuthError, AuthUnavailableError
from shared.edges.http_api import read_json_body, status_of
from shared.errors import RefusalError
from shared.settings import PreviewMode, load_settings
from shared.storage.tables import decode_key, encode_key
from shared.usecases.registration import InvalidFieldError, parse_device_request
from tests.reliability.conftest import sample_event

pytestmark = pytest.mark.reliability

LIMIT = 4096
ELLIPSIS = "…"
# Letters, marks, symbols, spaces, controls and surrogates (lone ones included).
CHARS = st.characters(codec=None, categories=["L", "M", "N", "P", "S", "Z", "Cc", "Cf", "Cs"])
ANY_TEXT = st.text(CHARS, max_size=3000)
KEY = bytes(range(64))


def received(body: str, name: str = "Bob") -> ChatMessageEvent:
    """A ChatMessageReceived carrying ``body`` and ``name`` as its JSON would, parsed."""
    event = sample_event("chat_message_received.eventgrid.json")
    event["data"].update(messageBody=body, senderDisplayName=name)
    parsed = parse_event(json.loads(json.dumps(event)))
    assert isinstance(parsed, ChatMessageEvent)
    return parsed


# --- payloads -------------------------------------------------------------------------------------


@pytest.mark.unit
@settings(max_examples=150)
@given(ANY_TEXT, st.text(max_size=80), st.sampled_from(list(PreviewMode)))
def test_payload_for_any_text_is_valid_json_within_the_limit(
    body: str, name: str, mode: PreviewMode
) -> None:
    built = build_chat_payload(
        received(body, name), ChatPayloadOptions(preview_mode=mode), preview_key=KEY
    )
    doc = json.loads(built.encoded.decode("utf-8"))
    assert len(built.encoded) <= LIMIT and isinstance(doc["aps"], dict)


@pytest.mark.unit
@settings(max_examples=150)
@given(ANY_TEXT)
def test_plaintext_preview_is_a_prefix_of_the_original(body: str) -> None:
    event = received(body)
    built = build_chat_payload(event, ChatPayloadOptions(preview_mode=PreviewMode.PLAINTEXT))
    shown = json.loads(built.encoded)["aps"]["alert"]["body"]
    if not built.shortened:
        assert shown in (event.body, "You have a new message")
    else:
        prefix = shown.removesuffix(ELLIPSIS)
        assert shown.endswith(ELLIPSIS) and event.body.startswith(prefix)


# --- HTTP input -----------------------------------------------------------------------------------

JSON_TEXT = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | ANY_TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(ANY_TEXT, inner, max_size=4),
    max_leaves=12,
).map(lambda v: json.dumps(v, ensure_ascii=True))


@pytest.mark.unit
@settings(max_examples=300)
@given(st.binary(max_size=300) | JSON_TEXT.map(str.encode) | ANY_TEXT.map(lambda t: t.encode("utf-8", "surrogatepass")))  # fmt: skip  # noqa: E501
def test_any_body_is_an_object_or_a_request_error(body: bytes) -> None:
    req = func.HttpRequest("PUT", "http://h/api/devices", headers={}, body=body)
    try:
        value = read_json_body(req, 1024)
    except RefusalError as exc:
        assert 400 <= status_of(exc) < 500
    else:
        assert isinstance(value, dict)


REGISTRATION_VALUES = st.none() | st.booleans() | st.integers() | ANY_TEXT | st.sampled_from(
    ["alert", "voip", "sandbox", "production", "com.example.chat", "ab" * 32, "A" * 88]
)  # fmt: skip


@pytest.mark.unit
@settings(max_examples=300)
@given(
    st.dictionaries(
        st.sampled_from(
            ["token", "kind", "topic", "environment", "key", "appVersion", "locale", "tokenProof"]
        ),
        REGISTRATION_VALUES,
    )
)
def test_any_registration_body_is_valid_or_names_a_field(body: dict[str, Any]) -> None:
    try:
        parse_device_request(body, frozenset({"com.example.chat"}))
    except InvalidFieldError as exc:
        required = ("token", "kind", "topic", "environment")
        assert status_of(exc) == 400 and (exc.field in body or exc.field in required)


class NoKeys:
    async def key_for(self, kid: str) -> None:
        return None


AUTH_SETTINGS = load_settings(
    {"AUTH_JWT_ISSUER": "https://idp", "AUTH_JWT_AUDIENCE": "api://x", "AUTH_JWKS_URL": "http://j"},
    require=False,
)
HEADER_TEXT = st.text(CHARS, max_size=200)


@pytest.mark.unit
@settings(max_examples=300)
@given(
    st.sampled_from(["Bearer ", "bearer ", "", "Basic ", "Bearer eyJ"]),
    HEADER_TEXT,
    st.booleans(),
)
def test_any_authorization_header_is_a_401(scheme: str, text: str, easy_auth: bool) -> None:
    auth = Authenticator(AUTH_SETTINGS, NoKeys())
    headers = {"Authorization": scheme + text}
    if easy_auth:
        headers["X-MS-CLIENT-PRINCIPAL"] = text
    with pytest.raises((AuthError, AuthUnavailableError)):
        asyncio.run(auth.authenticate(headers))


SIGNING_KEY = ec.generate_private_key(ec.SECP256R1())


class OneKey:
    """The JWKS of SIGNING_KEY: every token below is correctly signed."""

    def __init__(self) -> None:
        data = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(SIGNING_KEY.public_key()))
        self.key = PyJWK({**data, "kid": "k1", "alg": "ES256"})

    async def key_for(self, kid: str) -> PyJWK | None:
        return self.key if kid == "k1" else None


# Short texts rich in what breaks identity text: lone surrogates, NUL, controls, astral characters.
CLAIM_TEXT = st.text(st.sampled_from(["a", "\ud800", "\udfff", "\x00", "\n", "é", "😀"]) | CHARS,
                     max_size=12)  # fmt: skip
HOSTILE = st.sampled_from(["\ud800", "a\udfff", "\ud83d", "a\x00b", "\x7f", 10**400, -(10**400)])
CLAIM_VALUES = (
    HOSTILE | st.none() | st.booleans() | st.integers() | st.floats() | CLAIM_TEXT
    | st.lists(st.integers() | CLAIM_TEXT, max_size=3)
    | st.integers(min_value=10**300, max_value=10**400) | st.integers(max_value=-(10**300))
)  # fmt: skip


def signed(claims: dict[str, Any]) -> str:
    """``claims`` as a signed JWT, written as a hostile IdP could (lone surrogates as \\u escapes,
    NaN, numbers past a float): PyJWT's own encoder refuses some of these."""
    payload = json.dumps(claims).encode()
    jws = jwt.api_jws.PyJWS()
    return jws.encode(payload, SIGNING_KEY, algorithm="ES256", headers={"kid": "k1"})


@pytest.mark.unit
@settings(max_examples=300)
@given(
    st.fixed_dictionaries(
        {},
        optional={name: CLAIM_VALUES for name in ("iss", "aud", "sub", "exp", "nbf", "iat")},
    ),
    st.booleans(),
)
def test_any_claims_in_a_signed_token_are_a_caller_or_a_401(
    claims: dict[str, Any], valid_envelope: bool
) -> None:
    if valid_envelope:  # the claims the app checks hold, so the hostile ones get through to it
        now = int(time.time())
        claims = {"iss": "https://idp", "aud": "api://x", "exp": now + 60, "nbf": now} | {
            k: v for k, v in claims.items() if k in ("sub", "iat")
        }
    token = signed(claims)
    auth = Authenticator(AUTH_SETTINGS, OneKey())
    try:
        caller = asyncio.run(auth.authenticate({"Authorization": "Bearer " + token}))
    except AuthError as exc:
        assert status_of(exc) == 401
        return
    assert len(caller.key) == 64  # the caller's key (a hash of its identity) can be computed


@pytest.mark.unit
@settings(max_examples=300)
@given(
    st.lists(st.fixed_dictionaries({"typ": st.sampled_from(["iss", "sub", "name"]) | CLAIM_TEXT,
                                     "val": CLAIM_VALUES}), max_size=4),
    st.none() | CLAIM_TEXT,
)  # fmt: skip
def test_any_trusted_principal_is_a_caller_or_a_401(
    claims: list[dict[str, Any]], auth_typ: str | None
) -> None:
    body = json.dumps({"auth_typ": auth_typ, "claims": claims}).encode()
    headers = {"X-MS-CLIENT-PRINCIPAL": base64.b64encode(body).decode()}
    auth = Authenticator(load_settings({"EASY_AUTH_ENABLED": "true"}, require=False), None)
    try:
        caller = asyncio.run(auth.authenticate(headers))
    except AuthError as exc:
        assert status_of(exc) == 401
        return
    assert len(caller.key) == 64


# --- HPACK request blocks -------------------------------------------------------------------------

PSEUDO = ((b":method", b"POST"), (b":scheme", b"https"), (b":authority", b"api.push.apple.com"))
TOPICS = st.sampled_from([b"com.example.chat", b"com.example.chat.voip", b"com.example.other"])
FIELDS = st.tuples(
    TOPICS,
    st.sampled_from([b"alert", b"voip", b"background"]),
    st.sampled_from([b"10", b"5"]),
).map(lambda t: ((b"apns-topic", t[0]), (b"apns-push-type", t[1]), (b"apns-priority", t[2])))


@pytest.mark.unit
@settings(max_examples=300)
@given(st.lists(FIELDS, min_size=1, max_size=12), st.sampled_from([64, 128, 4096]))
def test_request_blocks_decode_to_exactly_the_fields_sent(
    requests: list[tuple[tuple[bytes, bytes], ...]], table_size: int
) -> None:
    """The hand-written HPACK encoder, checked block by block against hpack's decoder on one
    connection: alert, VoIP and background pushes interleaved (the soak found a duplicated
    ``apns-push-type`` when a VoIP push followed alerts on a connection)."""
    encoder, decoder = RequestHeaderEncoder(), Decoder()
    encoder.header_table_size = table_size
    decoder.header_table_size = table_size
    for n, fields in enumerate(requests):
        path = b"/3/device/" + b"%064x" % n
        per_push = ((b"apns-id", b"%032x" % n),)
        block = encoder.encode_request(PSEUDO, path, b"bearer x.y.z", fields, per_push)
        decoded = [(bytes(k), bytes(v)) for k, v in decoder.decode(block, raw=True)]
        expected = [*PSEUDO, (b":path", path), (b"authorization", b"bearer x.y.z"), *fields,
                    *per_push]  # fmt: skip
        assert decoded == expected


# --- key encoding through real storage ------------------------------------------------------------


@pytest.fixture(scope="module")
def keys_table(azurite: Azurite) -> Iterator[Any]:
    service = TableServiceClient.from_connection_string(azurite.connection_string)
    table = service.create_table("k" + uuid.uuid4().hex[:12])
    yield table
    service.delete_table(table.table_name)


@pytest.mark.integration
@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=120), st.text(max_size=120))
def test_key_encoding_round_trips_through_table_storage(
    keys_table: Any, partition: str, row: str
) -> None:
    entity = {"PartitionKey": encode_key(partition), "RowKey": encode_key(row), "v": 1}
    keys_table.upsert_entity(entity)
    back = keys_table.get_entity(entity["PartitionKey"], entity["RowKey"])
    assert (decode_key(back["PartitionKey"]), decode_key(back["RowKey"])) == (partition, row)

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
import json
import uuid
from collections.abc import Iterator
from typing import Any

import azure.functions as func
import pytest
from azure.data.tables import TableServiceClient
from hpack import Decoder
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devtools.azurite import Azurite
from shared.apns.header_block import RequestHeaderEncoder
from shared.auth import Authenticator, AuthError, AuthUnavailableError
from shared.chat_payload import ChatPayloadOptions, build_chat_payload
from shared.events import ChatMessageEvent, parse_event
from shared.http_api import RequestError, read_json_body
from shared.registration import InvalidFieldError, parse_device_request
from shared.settings import PreviewMode, load_settings
from shared.tables import decode_key, encode_key
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
    except RequestError as exc:
        assert 400 <= exc.status < 500
    else:
        assert isinstance(value, dict)


REGISTRATION_VALUES = st.none() | st.booleans() | st.integers() | ANY_TEXT | st.sampled_from(
    ["alert", "voip", "sandbox", "production", "com.example.chat", "ab" * 32, "A" * 88]
)  # fmt: skip


@pytest.mark.unit
@settings(max_examples=300)
@given(
    st.dictionaries(
        st.sampled_from(["token", "kind", "topic", "environment", "key", "appVersion", "locale"]),
        REGISTRATION_VALUES,
    )
)
def test_any_registration_body_is_valid_or_names_a_field(body: dict[str, Any]) -> None:
    try:
        parse_device_request(body, frozenset({"com.example.chat"}))
    except InvalidFieldError as exc:
        required = ("token", "kind", "topic", "environment")
        assert exc.status == 400 and (exc.field in body or exc.field in required)


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

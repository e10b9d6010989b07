"""HMAC-SHA256 request signing for the ACS Identity API: the known-answer vector and the wire."""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, datetime

import httpx
import pytest

from shared.acs.identity import (
    AcsConnection,
    HmacAuth,
    content_hash,
    hmac_headers,
    http_date,
    parse_connection_string,
    string_to_sign,
)
from shared.errors import SettingsError

pytestmark = pytest.mark.unit

KEY_B64 = base64.b64encode(b"testkeytestkeytestkeytestkey1234").decode()
VECTOR_BODY = b'{"createTokenWithScopes": ["chat"], "expiresInMinutes": 60}'
VECTOR_DATE = "Mon, 02 Jun 2025 10:00:00 GMT"


def test_known_answer_content_hash() -> None:
    assert content_hash(VECTOR_BODY) == "apyRfEbiXMeeaNZWFW9Wexp0u7HcMjIECdv8QSmwPtQ="


def test_known_answer_signature() -> None:
    headers = hmac_headers(
        "POST",
        "/identities?api-version=2023-10-01",
        "contoso.communication.azure.com",
        VECTOR_BODY,
        key=base64.b64decode(KEY_B64),
        date=VECTOR_DATE,
    )
    assert headers == {
        "x-ms-date": VECTOR_DATE,
        "x-ms-content-sha256": "apyRfEbiXMeeaNZWFW9Wexp0u7HcMjIECdv8QSmwPtQ=",
        "Authorization": "HMAC-SHA256 SignedHeaders=x-ms-date;host;x-ms-content-sha256"
        "&Signature=QZxdNYL8kHQHWKqhvkiu4e96RzWjZmgOtgHXiwl8aPA=",
    }


def test_empty_body_hash_is_the_hash_of_nothing() -> None:
    assert content_hash(b"") == base64.b64encode(hashlib.sha256(b"").digest()).decode()


def test_string_to_sign_layout() -> None:
    assert string_to_sign("post", "/p?q=1", "D", "h:1", "H") == "POST\n/p?q=1\nD;h:1;H"


def test_http_date_is_rfc1123_gmt() -> None:
    assert http_date(datetime(2025, 6, 2, 10, 0, tzinfo=UTC)) == VECTOR_DATE


def _verify(request: httpx.Request, key: bytes) -> bool:
    """Check a request the way ACS does: recompute over what arrived."""
    body_hash = base64.b64encode(hashlib.sha256(request.content).digest()).decode()
    if request.headers["x-ms-content-sha256"] != body_hash:
        return False
    sts = string_to_sign(
        request.method,
        request.url.raw_path.decode(),
        request.headers["x-ms-date"],
        request.headers["host"],
        body_hash,
    )
    expected = base64.b64encode(hmac.new(key, sts.encode(), hashlib.sha256).digest()).decode()
    return request.headers["authorization"].endswith("&Signature=" + expected)


async def test_hmac_auth_signs_the_exact_bytes_sent() -> None:
    key = base64.b64decode(KEY_B64)
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={})

    clock = lambda: datetime(2025, 6, 2, 10, 0, tzinfo=UTC)  # noqa: E731
    async with httpx.AsyncClient(
        transport=httpx.MockTransport(handler), auth=HmacAuth(key, clock)
    ) as client:
        await client.post(
            "https://res.communication.azure.com:8443/identities/8%3Aacs%3Ax/:issueAccessToken",
            params={"api-version": "2023-10-01"},
            json={"scopes": ["chat"], "expiresInMinutes": 60, "note": "é"},
        )
    assert seen[0].headers["x-ms-date"] == VECTOR_DATE
    assert seen[0].headers["host"] == "res.communication.azure.com:8443"
    assert _verify(seen[0], key)


async def test_signature_does_not_verify_after_the_body_changes() -> None:
    key = base64.b64decode(KEY_B64)
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={})

    async with httpx.AsyncClient(
        transport=httpx.MockTransport(handler), auth=HmacAuth(key)
    ) as client:
        await client.post("https://res.communication.azure.com/identities", json={"a": 1})
    signed = seen[0]
    tampered = httpx.Request(signed.method, signed.url, headers=signed.headers, content=b'{"a":2}')
    assert not _verify(tampered, key)


def test_connection_string_is_parsed() -> None:
    conn = parse_connection_string(
        f"endpoint=https://res.communication.azure.com/;accesskey={KEY_B64}"
    )
    assert conn == AcsConnection("https://res.communication.azure.com", base64.b64decode(KEY_B64))


def test_connection_string_repr_hides_the_key() -> None:
    conn = parse_connection_string(f"endpoint=https://r.example/;accesskey={KEY_B64}")
    assert KEY_B64 not in repr(conn) and "testkey" not in repr(conn)


@pytest.mark.parametrize(
    "text",
    [
        "endpoint=https://r.example/",
        f"accesskey={KEY_B64}",
        f"endpoint=http://r.example/;accesskey={KEY_B64}",
        "endpoint=https://r.example/;accesskey=not*base64!",
    ],
)
def test_bad_connection_string_is_a_settings_error_without_the_key(text: str) -> None:
    with pytest.raises(SettingsError) as caught:
        parse_connection_string(text)
    assert "not*base64" not in str(caught.value) and KEY_B64 not in str(caught.value)

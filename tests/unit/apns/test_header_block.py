"""Our HPACK encoder's output decodes, with hpack's own decoder, to what was sent."""

from __future__ import annotations

import hpack
import pytest
from hpack import HeaderTuple, NeverIndexedHeaderTuple
from hypothesis import given
from hypothesis import strategies as st

from shared.apns.header_block import RequestHeaderEncoder, encode_integer

pytestmark = pytest.mark.unit


def _request(
    token: str, push_id: str, topic: bytes = b"com.example.chat"
) -> list[tuple[bytes, bytes]]:
    return [
        (b":method", b"POST"),
        (b":scheme", b"https"),
        (b":authority", b"api.push.apple.com"),
        NeverIndexedHeaderTuple(b":path", b"/3/device/" + token.encode()),
        NeverIndexedHeaderTuple(b"authorization", b"bearer " + b"x" * 200),
        (b"apns-topic", topic),
        (b"apns-push-type", b"alert"),
        NeverIndexedHeaderTuple(b"apns-id", push_id.encode()),
    ]


def _plain(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    return [(bytes(n), bytes(v)) for n, v in headers]


def test_blocks_decode_to_the_headers_in_order() -> None:
    encoder, decoder = RequestHeaderEncoder(), hpack.Decoder()
    for i in range(5):
        headers = _request("ab" * (32 + i), f"id-{i}")
        decoded = decoder.decode(encoder.encode(headers), raw=True)
        assert _plain(decoded) == _plain(headers)


def test_path_and_authorization_arrive_never_indexed() -> None:
    encoder, decoder = RequestHeaderEncoder(), hpack.Decoder()
    decoded = decoder.decode(encoder.encode(_request("ab" * 32, "id")), raw=True)
    never = {bytes(h[0]) for h in decoded if isinstance(h, NeverIndexedHeaderTuple)}
    assert never == {b":path", b"authorization", b"apns-id"}
    assert all(not (isinstance(h, HeaderTuple) and not h.indexable) for h in decoded[:3])


def test_repeated_fields_shrink_to_one_byte_each() -> None:
    encoder = RequestHeaderEncoder()
    static = [(b":method", b"POST"), (b"apns-topic", b"com.example.chat")]
    first = encoder.encode(static)
    again = encoder.encode(static)
    assert len(again) == 2 and len(first) > 2


def test_full_table_falls_back_to_literals_without_diverging() -> None:
    encoder, decoder = RequestHeaderEncoder(), hpack.Decoder()
    for i in range(200):  # ~200 distinct topics: far more than 4096 bytes of table
        headers = _request("ab" * 32, f"id-{i}", topic=f"com.example.app{i}".encode())
        assert _plain(decoder.decode(encoder.encode(headers), raw=True)) == _plain(headers)
    repeat = _request("ab" * 32, "again", topic=b"com.example.app3")
    assert _plain(decoder.decode(encoder.encode(repeat), raw=True)) == _plain(repeat)


def test_smaller_table_size_clears_both_tables() -> None:
    encoder, decoder = RequestHeaderEncoder(), hpack.Decoder()
    decoder.decode(encoder.encode(_request("ab" * 32, "a")), raw=True)
    encoder.header_table_size = 100
    decoder.max_allowed_table_size = 100
    headers = _request("cd" * 32, "b")
    assert _plain(decoder.decode(encoder.encode(headers), raw=True)) == _plain(headers)
    assert decoder.header_table_size == 100


@given(
    st.lists(
        st.tuples(
            st.sampled_from([b"apns-topic", b"apns-push-type", b"x-custom", b":authority"]),
            st.binary(min_size=0, max_size=300),
            st.booleans(),
        ),
        max_size=12,
    ),
    st.integers(min_value=1, max_value=4),
)
def test_any_header_sequence_round_trips(
    fields: list[tuple[bytes, bytes, bool]], blocks: int
) -> None:
    encoder, decoder = RequestHeaderEncoder(), hpack.Decoder()
    for _ in range(blocks):
        headers = [NeverIndexedHeaderTuple(n, v) if never else (n, v) for n, v, never in fields]
        assert _plain(decoder.decode(encoder.encode(headers), raw=True)) == _plain(headers)


@pytest.mark.parametrize("value", [0, 14, 15, 16, 127, 128, 300, 2**20])
def test_integers_match_hpack(value: int) -> None:
    expected = bytearray(hpack.hpack.encode_integer(value, 4))
    expected[0] |= 0x10
    assert encode_integer(value, 4, 0x10) == bytes(expected)

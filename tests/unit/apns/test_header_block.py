"""Our HPACK encoder and decoder interoperate with hpack's own, header for header."""

from __future__ import annotations

import hpack
import pytest
from hpack import HeaderTuple, NeverIndexedHeaderTuple
from hpack.exceptions import HPACKDecodingError, OversizedHeaderListError
from hpack.huffman import HuffmanEncoder
from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH
from hpack.huffman_table import decode_huffman as hpack_decode_huffman
from hypothesis import given
from hypothesis import strategies as st

from shared.apns.header_block import (
    RequestHeaderEncoder,
    ResponseHeaderDecoder,
    decode_huffman,
    encode_integer,
)

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


# --- the response decoder -----------------------------------------------------------------

header_lists = st.lists(
    st.tuples(
        st.sampled_from([b":status", b"apns-id", b"apns-unique-id", b"content-type", b"x-a"]),
        st.binary(max_size=120),
        st.booleans(),
    ),
    max_size=8,
)


@given(
    st.lists(header_lists, min_size=1, max_size=6), st.booleans(), st.sampled_from([4096, 256, 0])
)
def test_decoder_matches_hpack_encoder(
    blocks: list[list[tuple[bytes, bytes, bool]]], huffman: bool, table_size: int
) -> None:
    encoder, decoder = hpack.Encoder(), ResponseHeaderDecoder()
    encoder.header_table_size = table_size  # sends a size update; entries get evicted
    for fields in blocks:
        headers = [NeverIndexedHeaderTuple(n, v) if never else (n, v) for n, v, never in fields]
        decoded = decoder.decode(encoder.encode(headers, huffman=huffman), raw=True)
        assert _plain(decoded) == _plain(headers)
        # (hpack's encoder may send a sensitive field as an index when the same pair is already
        # in its table, so only "decoded never-indexed implies sent never-indexed" holds.)
        for header, (_, _, never) in zip(decoded, fields, strict=True):
            assert never or not isinstance(header, NeverIndexedHeaderTuple)


@given(st.binary(max_size=200))
def test_huffman_decoding_matches_hpack(data: bytes) -> None:
    encoded = HuffmanEncoder(REQUEST_CODES, REQUEST_CODES_LENGTH).encode(data)
    assert decode_huffman(encoded) == data == hpack_decode_huffman(encoded)


def test_apns_response_decodes() -> None:
    encoder, decoder = hpack.Encoder(), ResponseHeaderDecoder()
    block = encoder.encode([(b":status", b"410"), (b"apns-id", b"a-b"), (b"content-type", b"x")])
    assert _plain(decoder.decode(block, raw=True)) == [
        (b":status", b"410"),
        (b"apns-id", b"a-b"),
        (b"content-type", b"x"),
    ]


@pytest.mark.parametrize(
    "block",
    [
        b"\x82\xff",  # truncated integer
        b"\x40\x85ab",  # string longer than the block
        b"\xbe",  # dynamic index 62 with an empty table
        b"\x80",  # index 0
        b"\x00\x81\xff",  # Huffman string of padding only past 7 bits (EOS)
        b"\x3f\xe2\x1f",  # table size update to 4097, above the allowed 4096
    ],
)
def test_malformed_blocks_raise_hpack_errors(block: bytes) -> None:
    with pytest.raises(HPACKDecodingError):
        ResponseHeaderDecoder().decode(block, raw=True)


def test_header_list_over_the_limit_is_refused() -> None:
    decoder = ResponseHeaderDecoder()
    decoder.max_header_list_size = 100
    block = hpack.Encoder().encode([(b"x-a", b"v" * 100)])
    with pytest.raises(OversizedHeaderListError):
        decoder.decode(block, raw=True)


def test_decoder_keeps_the_never_indexed_mark() -> None:
    decoded = ResponseHeaderDecoder().decode(
        RequestHeaderEncoder().encode(_request("ab" * 32, "i"))
    )
    never = {bytes(h[0]) for h in decoded if isinstance(h, NeverIndexedHeaderTuple)}
    assert never == {b":path", b"authorization", b"apns-id"}

"""The ACS-compatible encrypted preview: a known-answer vector, an independent decryptor, tampering.

``SpecDecryptor`` below is written from the specification (the ACS iOS SDK's CryptoUtils and
PushNotificationKeyStorage) and imports nothing from ``shared``: it is the device's view.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.domain.preview_crypto import (
    PreviewDecryptError,
    PreviewFields,
    PreviewKeyError,
    arrival_time_field,
    blob_length,
    data_part,
    decode_key,
    decrypt_preview,
    encrypt_fields,
    encrypt_preview,
    metadata_field,
)

pytestmark = pytest.mark.unit

FIELD_NAMES = (
    "senderId",
    "recipientId",
    "transactionId",
    "groupId",
    "messageId",
    "messageType",
    "messageBody",
    "senderDisplayName",
    "clientMessageId",
    "originalArrivalTime",
    "priority",
    "version",
    "acsChatMessageMetadata",
)


class SpecDecryptor:
    """Decrypts a preview blob exactly as the spec says a device does."""

    def __init__(self, key: bytes) -> None:
        assert len(key) == 64
        self.aes_key, self.auth_key = key[:32], key[32:]  # bytes 0-31 AES, 32-63 auth

    def open(self, blob: str) -> dict[str, str]:
        assert "\n" not in blob
        raw = base64.b64decode(blob, validate=True)  # standard, padded
        signed, tag = raw[:-32], raw[-32:]
        hmac_key = hashlib.sha256(self.auth_key).digest()  # keyed with SHA-256(authKey)
        expected = hmac.new(hmac_key, signed, hashlib.sha256).digest()
        if not hmac.compare_digest(expected, tag):
            raise ValueError("HMAC mismatch")
        if signed[0] != 0x70:
            raise ValueError("mode byte")
        iv, ciphertext = signed[1:17], signed[17:]
        decryptor = Cipher(algorithms.AES(self.aes_key), modes.CBC(iv)).decryptor()
        padded = decryptor.update(ciphertext) + decryptor.finalize()
        unpadder = padding.PKCS7(128).unpadder()
        plaintext = unpadder.update(padded) + unpadder.finalize()
        obj = json.loads(plaintext.decode("utf-8"))
        assert isinstance(obj, dict)
        assert set(obj) == set(FIELD_NAMES)
        assert all(isinstance(value, str) for value in obj.values())
        meta = obj["acsChatMessageMetadata"]
        assert meta == "null" or isinstance(json.loads(meta), dict)
        return obj


KEY = bytes(range(64))
IV = bytes(range(0xA0, 0xB0))
FIELDS = PreviewFields(
    senderId="8:acs:res_sender",
    recipientId="8:acs:res_recipient",
    transactionId="oh+LGB2dUUadMcTAdRWQxQ.1.1.1.1.1827536918.1.7",
    groupId="19:6e5d6ca1d75044a49a36a7965ec4a906@thread.v2",
    messageId="1613694358927",
    messageType="text",
    messageBody="Café at 4? 😀",
    senderDisplayName="Bob",
    clientMessageId="",
    originalArrivalTime="2021-02-19T00:25:58.927Z",
    priority="Normal",
    version="1613694358927",
    acsChatMessageMetadata='{"k":"v"}',
)
# Computed independently with the openssl CLI (enc -aes-256-cbc with the first 32 key bytes and
# IV; dgst -sha256 -mac HMAC keyed with sha256 of the last 32 key bytes) over FIELDS' JSON.
KNOWN_BLOB = (
    "cKChoqOkpaanqKmqq6ytrq9ysR2NG1UdhvTiItpbCimbBXxtvxkEybfKIaBv1XBVIys7n84YvLxl5kDBV65oeR94Q4Rg"
    "OESKjGP8A0og2BpEeoVl2m/tPE2EbuK5osT5mJ4ivG0umVKzTgDwYW8PYlQ3tv/oxqWmb0oMOPd+hi8S0rsXDb81zDxX"
    "SnpNzdI4TuXOFedbZ/ztKEPUaRNJ4jUpWJqQXMH5sbQ88JqK8KUXtVQk+amprTRwn74lKtfwD8BSwGlmUJiRdYRhDkJs"
    "e5i6N98v4ZHdaylwgNJlkx28NXCqkpEgk7cCMxOMzCSqkCUIRgZ5fyHeJJcXeeOgcsiStTmKRB0QoLllk8RFveqKYEV5"
    "h7lCXhgu+c/G4tdYJjcJFQYemzOuIQ8/nHPe1Hxo3q6iKa5aZcRf4nJvilj6mB3SblpnSgZroldueATfILlIVHrOF08N"
    "7K7kf0H+U54rEekOa40LDyMmSgV0dOsnmTMK43wJ21Ztuw07lwRpB9hteXxdZko5PwZTQGmMv/PhcDUlymJli9gLchkj"
    "vO4oSoODbEiOl8Jw89/2QmfL4vLRodhVSvwXMKTKuS8hTYCAjrxzMqVAB0tYE0xxcgRfNmIUrAYYvuNXui5RVNOzxdf4"
    "KgQzqkal0SkTOSvbgHun9kZl3qVCGQy2GQUSz/hU"
)


def fixed_iv(n: int) -> bytes:
    assert n == 16
    return IV


def test_known_answer_vector() -> None:
    assert encrypt_fields(KEY, FIELDS, random_bytes=fixed_iv) == KNOWN_BLOB


def test_known_plaintext_is_the_13_field_json_object() -> None:
    assert (
        FIELDS.to_json_bytes()
        == (
            '{"senderId":"8:acs:res_sender","recipientId":"8:acs:res_recipient",'
            '"transactionId":"oh+LGB2dUUadMcTAdRWQxQ.1.1.1.1.1827536918.1.7",'
            '"groupId":"19:6e5d6ca1d75044a49a36a7965ec4a906@thread.v2","messageId":"1613694358927",'
            '"messageType":"text","messageBody":"Café at 4? 😀","senderDisplayName":"Bob",'
            '"clientMessageId":"","originalArrivalTime":"2021-02-19T00:25:58.927Z",'
            '"priority":"Normal","version":"1613694358927","acsChatMessageMetadata":"{\\"k\\":\\"v\\"}"}'
        ).encode()
    )


def test_known_blob_opens_with_the_spec_decryptor() -> None:
    fields = SpecDecryptor(KEY).open(KNOWN_BLOB)
    assert fields["messageBody"] == "Café at 4? 😀"
    assert fields["groupId"] == FIELDS.groupId


def test_blob_layout_mode_iv_ciphertext_hmac() -> None:
    raw = base64.b64decode(KNOWN_BLOB)
    assert raw[0] == 0x70
    assert raw[1:17] == IV
    assert (len(raw) - 1 - 16 - 32) % 16 == 0


@settings(deadline=None, max_examples=50)
@given(st.binary(min_size=64, max_size=64), st.text(max_size=300), st.text(max_size=40))
def test_any_preview_round_trips_through_the_spec_decryptor(
    key: bytes, body: str, name: str
) -> None:
    fields = PreviewFields(
        **{**dataclasses.asdict(FIELDS), "messageBody": body, "senderDisplayName": name}
    )
    blob = encrypt_fields(key, fields)
    opened = SpecDecryptor(key).open(blob)
    assert opened["messageBody"] == body and opened["senderDisplayName"] == name
    assert len(blob) == blob_length(len(fields.to_json_bytes()))


def test_a_fresh_iv_every_time() -> None:
    assert encrypt_fields(KEY, FIELDS) != encrypt_fields(KEY, FIELDS)


@pytest.mark.parametrize("index", [0, 1, 16, 17, 40, -33, -1])
def test_any_flipped_bit_is_rejected(index: int) -> None:
    raw = bytearray(base64.b64decode(KNOWN_BLOB))
    raw[index] ^= 0x01
    tampered = base64.b64encode(bytes(raw)).decode()
    with pytest.raises(ValueError, match="HMAC"):
        SpecDecryptor(KEY).open(tampered)
    with pytest.raises(PreviewDecryptError):
        decrypt_preview([KEY], tampered)


def test_truncated_blob_is_rejected() -> None:
    raw = base64.b64decode(KNOWN_BLOB)
    for cut in (raw[:-1], raw[:40], raw[:-32]):
        with pytest.raises(PreviewDecryptError):
            decrypt_preview([KEY], base64.b64encode(cut).decode())


def test_wrong_key_is_rejected() -> None:
    other = bytes(reversed(KEY))
    with pytest.raises(ValueError, match="HMAC"):
        SpecDecryptor(other).open(KNOWN_BLOB)
    with pytest.raises(PreviewDecryptError):
        decrypt_preview([other], KNOWN_BLOB)


def test_key_halves_in_the_documented_order_do_not_open_it() -> None:
    swapped = KEY[32:] + KEY[:32]  # the SDK's doc comment order, not what its code does
    with pytest.raises(ValueError, match="HMAC"):
        SpecDecryptor(swapped).open(KNOWN_BLOB)


def test_hmac_is_keyed_with_the_hash_of_the_auth_key_not_the_raw_key() -> None:
    raw = base64.b64decode(KNOWN_BLOB)
    signed, tag = raw[:-32], raw[-32:]
    assert hmac.new(KEY[32:], signed, hashlib.sha256).digest() != tag
    assert hmac.new(hashlib.sha256(KEY[32:]).digest(), signed, hashlib.sha256).digest() == tag


def test_decrypt_tries_each_key_like_the_extension() -> None:
    stale, live = bytes(64), KEY
    assert decrypt_preview([stale, live], KNOWN_BLOB) == FIELDS.to_json_bytes()


@pytest.mark.parametrize("bad", [b"", bytes(32), bytes(63), bytes(65)])
def test_keys_that_are_not_64_bytes_are_refused(bad: bytes) -> None:
    with pytest.raises(PreviewKeyError):
        encrypt_preview(bad, b"x")


def test_decode_key_accepts_the_sdk_base64_form() -> None:
    text = base64.b64encode(KEY).decode()
    assert len(text) == 88
    assert decode_key(text) == KEY


@pytest.mark.parametrize("text", ["", "not base64!", base64.b64encode(bytes(48)).decode()])
def test_decode_key_refuses_anything_else(text: str) -> None:
    with pytest.raises(PreviewKeyError):
        decode_key(text)


def test_data_part_event_id_is_a_json_number() -> None:
    encoded = json.dumps({"data": data_part("QUJD")}, separators=(",", ":"))
    assert encoded == '{"data":{"eventId":200,"e":"QUJD"}}'


def test_metadata_is_null_or_a_json_object_string_never_empty() -> None:
    assert metadata_field({}) == "null"
    assert json.loads(metadata_field({"a": "b", "ü": '"'})) == {"a": "b", "ü": '"'}


@pytest.mark.parametrize(
    ("when", "text"),
    [
        (datetime(2021, 11, 4, 4, 49, 10, 674999, tzinfo=UTC), "2021-11-04T04:49:10.674Z"),
        (
            datetime(2021, 11, 4, 6, 49, 10, tzinfo=timezone(timedelta(hours=2))),
            "2021-11-04T04:49:10.000Z",
        ),
        (datetime(2021, 11, 4, 4, 49, 10, 5000), "2021-11-04T04:49:10.005Z"),
        (None, ""),
    ],
)
def test_arrival_time_format(when: datetime | None, text: str) -> None:
    assert arrival_time_field(when) == text

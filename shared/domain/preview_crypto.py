"""The encrypted chat preview that the ACS iOS chat SDK's notification service extension decrypts.

The device generates a 64-byte key (the SDK hands it to ``PushNotificationKeyStorage.onPersistKey``
as standard base64) and uploads it to us. Of those 64 bytes, 0-31 are the AES-256 key and 32-63
the auth key (the SDK's doc comment says the reverse; its ``splitEncryptionKey`` is what runs).

    blob = 0x70 || IV(16) || ct || HMAC-SHA256(key=SHA-256(authKey), msg=0x70 || IV || ct)
    ct   = AES-256-CBC/PKCS7(aesKey, IV, plaintext)

sent as standard padded base64 in ``{"data": {"eventId": 200, "e": blob}}``. The plaintext is a JSON
object of 13 fields, all strings (the SDK's ``Decodable`` payload requires each one). Source:
Azure/azure-sdk-for-ios ``AzureCommunicationChat`` (``CryptoUtils.swift``,
``PushNotificationKeyStorage.swift``, ``PushNotificationBaseEvent.swift``).

Imports nothing else from ``shared``. Raises :class:`PreviewKeyError` for a key that is not 64
bytes; decrypting raises :class:`PreviewDecryptError`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Final

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

MODE_BYTE: Final = 0x70
CHAT_MESSAGE_RECEIVED_EVENT_ID: Final = 200  # PushNotificationChatEventType.chatMessageReceived
KEY_BYTES: Final = 64
IV_BYTES: Final = 16
HMAC_BYTES: Final = 32
_BLOCK: Final = 16

RandomBytes = Callable[[int], bytes]


class PreviewKeyError(ValueError):
    """A preview key that is not 64 bytes (or not base64 of 64 bytes)."""


class PreviewDecryptError(ValueError):
    """A blob that no given key authenticates, or that is not a well-formed blob."""


@dataclass(frozen=True, slots=True)
class PreviewFields:
    """The 13 string fields of the SDK's ``PushNotificationMessageReceivedPayload``."""

    senderId: str  # noqa: N815 (the SDK's JSON names, used as-is)
    recipientId: str  # noqa: N815
    transactionId: str  # noqa: N815
    groupId: str  # noqa: N815 (the thread id)
    messageId: str  # noqa: N815
    messageType: str  # noqa: N815
    messageBody: str  # noqa: N815
    senderDisplayName: str  # noqa: N815
    clientMessageId: str  # noqa: N815
    originalArrivalTime: str  # noqa: N815 (e.g. 2021-11-04T04:49:10.674Z)
    priority: str
    version: str
    acsChatMessageMetadata: str  # noqa: N815 ("null" or a JSON object encoded as a string)

    def to_json_bytes(self) -> bytes:
        """Compact UTF-8 JSON of the 13 fields, in the order declared."""
        return _ENCODER.encode({name: getattr(self, name) for name in _FIELD_NAMES}).encode()


_FIELD_NAMES: Final = tuple(f.name for f in fields(PreviewFields))
_ENCODER: Final = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def metadata_field(metadata: Mapping[str, str]) -> str:
    """``acsChatMessageMetadata``: ``"null"`` when empty, else the map as a JSON string.

    The SDK decodes it unless it is exactly ``"null"``; ``""`` would make the decode fail.
    """
    if not metadata:
        return "null"
    return _ENCODER.encode(dict(metadata))


def arrival_time_field(when: datetime | None) -> str:
    """``originalArrivalTime``: UTC with milliseconds, like 2021-11-04T04:49:10.674Z."""
    if when is None:
        return ""
    utc = when.astimezone(UTC) if when.tzinfo is not None else when.replace(tzinfo=UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def split_key(key: bytes) -> tuple[bytes, bytes]:
    """(AES-256 key, auth key) of a 64-byte preview key. Raises :class:`PreviewKeyError`."""
    if len(key) != KEY_BYTES:
        raise PreviewKeyError(f"a preview key is {KEY_BYTES} bytes, got {len(key)}")
    return key[:32], key[32:]


def decode_key(text: str) -> bytes:
    """The 64 bytes of a key as the SDK persists it (standard base64). Raises PreviewKeyError."""
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise PreviewKeyError("a preview key is standard base64") from None
    split_key(key)
    return key


def blob_length(plaintext_bytes: int) -> int:
    """Length in base64 characters of the blob for a plaintext of this many bytes."""
    ciphertext = (plaintext_bytes // _BLOCK + 1) * _BLOCK
    raw = 1 + IV_BYTES + ciphertext + HMAC_BYTES
    return 4 * ((raw + 2) // 3)


def encrypt_preview(key: bytes, plaintext: bytes, *, random_bytes: RandomBytes = os.urandom) -> str:
    """The base64 blob of ``plaintext`` under ``key``. Raises :class:`PreviewKeyError`."""
    aes_key, auth_key = split_key(key)
    iv = random_bytes(IV_BYTES)
    if len(iv) != IV_BYTES:
        raise ValueError("random_bytes returned the wrong number of bytes")
    padder = padding.PKCS7(128).padder()
    padded = padder.update(plaintext) + padder.finalize()
    encryptor = Cipher(algorithms.AES(aes_key), modes.CBC(iv)).encryptor()
    signed = bytes([MODE_BYTE]) + iv + encryptor.update(padded) + encryptor.finalize()
    tag = hmac.new(hashlib.sha256(auth_key).digest(), signed, hashlib.sha256).digest()
    return base64.b64encode(signed + tag).decode("ascii")


def encrypt_fields(
    key: bytes, fields: PreviewFields, *, random_bytes: RandomBytes = os.urandom
) -> str:
    """The base64 blob of the 13-field JSON object. Raises :class:`PreviewKeyError`."""
    return encrypt_preview(key, fields.to_json_bytes(), random_bytes=random_bytes)


def data_part(blob: str) -> dict[str, object]:
    """The ``data`` custom key the SDK reads: ``eventId`` must be a JSON number, not "200"."""
    return {"eventId": CHAT_MESSAGE_RECEIVED_EVENT_ID, "e": blob}


def decrypt_preview(keys: Iterable[bytes], blob: str) -> bytes:
    """Plaintext of ``blob`` under the first key whose HMAC matches, as the SDK's extension does.

    Raises :class:`PreviewDecryptError` when the blob is malformed or no key authenticates it.
    """
    try:
        raw = base64.b64decode(blob, validate=True)
    except (binascii.Error, ValueError):
        raise PreviewDecryptError("blob is not standard base64") from None
    if len(raw) < 1 + IV_BYTES + _BLOCK + HMAC_BYTES or raw[0] != MODE_BYTE:
        raise PreviewDecryptError("blob is too short or has an unknown mode byte")
    signed, tag = raw[:-HMAC_BYTES], raw[-HMAC_BYTES:]
    iv, ciphertext = signed[1 : 1 + IV_BYTES], signed[1 + IV_BYTES :]
    if len(ciphertext) % _BLOCK:
        raise PreviewDecryptError("ciphertext is not whole blocks")
    for key in keys:
        aes_key, auth_key = split_key(key)
        expected = hmac.new(hashlib.sha256(auth_key).digest(), signed, hashlib.sha256).digest()
        if hmac.compare_digest(expected, tag):
            return _decrypt_cbc(aes_key, iv, ciphertext)
    raise PreviewDecryptError("no key authenticates this blob")


def _decrypt_cbc(aes_key: bytes, iv: bytes, ciphertext: bytes) -> bytes:
    decryptor = Cipher(algorithms.AES(aes_key), modes.CBC(iv)).decryptor()
    padded = decryptor.update(ciphertext) + decryptor.finalize()
    unpadder = padding.PKCS7(128).unpadder()
    try:
        return unpadder.update(padded) + unpadder.finalize()
    except ValueError:
        raise PreviewDecryptError("bad padding") from None

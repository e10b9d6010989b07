"""Decrypting a chat push the way the ACS iOS chat SDK's ``decryptPayload(notification:)`` does.

Written from the SDK's source, independently of pushrelay's encryption (``shared/`` is never
imported here; ``tests/unit/test_reference_device.py`` checks that). Azure/azure-sdk-for-ios,
AzureCommunicationChat 1.3.0 to 1.3.7 (these files did not change in between),
``sdk/communication/AzureCommunicationChat/Source/``:

``PushNotification/PushNotificationKeyStorage.swift`` (``decryptPayload(notification:)``)
    ``notification["data"]`` must be a dictionary; ``data["eventId"]`` must cast to ``Int``
    (a JSON number: the string "200" fails) and be 200 (``PushNotificationChatEventType``, the
    only case); ``data["e"]`` must be a ``String``; the keys come from ``onRetrieveKeys()``.
``decryptPayload(encryptedStr:encryptionKeys:)`` and ``NotificationUtils/CryptoUtils.swift``
    ``Data(base64Encoded:)`` with default options (no whitespace, padding required); the blob is
    ``mode(1) | IV(16) | ciphertext | HMAC(32)``; the mode byte is skipped, not checked (the HMAC
    covers it). For each key in turn: ``splitEncryptionKey`` (base64 with
    ``.ignoreUnknownCharacters``, bytes 0-31 the AES key, 32-63 the auth key), HMAC-SHA256 keyed
    with SHA-256(auth key) over ``mode | IV | ciphertext``; the first key whose HMAC matches
    decrypts with AES-256-CBC/PKCS7 (CommonCrypto) and no other key is tried after it. The
    plaintext is read as UTF-8, invalid bytes replaced.
``PushNotification/PushNotificationPayload.swift``, ``PushNotificationBaseEvent.swift``
    the plaintext is a JSON object with 13 required ``String`` fields; ``acsChatMessageMetadata``
    is either exactly ``"null"`` or a JSON object of string (or null) values encoded as a string,
    anything else throws; ``originalArrivalTime`` that does not parse is just nil.

Where the SDK would crash rather than throw (a blob shorter than 49 bytes: ``copyOfRange`` with
a negative count; a key shorter than 64 bytes: ``Data.remove(at:)`` on empty data) this raises
:class:`DecryptError` too: either way iOS shows the push's own (fallback) text.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from devtools.reference_device.keystore import KeyStorageError

CHAT_MESSAGE_RECEIVED: Final = 200
_MODE, _IV, _HMAC = 1, 16, 32
_FIELDS: Final = (
    "senderId", "recipientId", "transactionId", "groupId", "messageId", "messageType",
    "messageBody", "senderDisplayName", "clientMessageId", "originalArrivalTime", "priority",
    "version", "acsChatMessageMetadata",
)  # fmt: skip
_NOT_BASE64: Final = re.compile(r"[^A-Za-z0-9+/=]")


class DecryptError(Exception):
    """``decryptPayload`` threw (or would have crashed): the banner keeps the push's own text."""


@dataclass(frozen=True, slots=True)
class ChatMessageReceived:
    """``PushNotificationChatMessageReceivedEvent``: what the extension gets back."""

    message_id: str
    message_type: str
    thread_id: str
    sender_raw_id: str
    recipient_raw_id: str
    sender_display_name: str
    original_arrival_time: datetime | None
    version: str
    message: str
    metadata: dict[str, str | None] | None


def decrypt_payload(
    notification: Mapping[str, Any], retrieve_keys: Callable[[], list[str]]
) -> ChatMessageReceived:
    """The SDK's ``decryptPayload(notification:)``. Raises DecryptError where it throws."""
    data = notification.get("data")
    if not isinstance(data, dict):
        raise DecryptError("Push notification does not contain data payload")
    event_id = data.get("eventId")
    if not isinstance(event_id, int) or isinstance(event_id, bool):
        raise DecryptError("Push notification does not contain eventId or it is not an Int")
    if event_id != CHAT_MESSAGE_RECEIVED:
        raise DecryptError(f"Event id: {event_id} is unsupported")
    encrypted = data.get("e")
    if not isinstance(encrypted, str):
        raise DecryptError("Push notification does not contain encryptedPayload")
    try:
        keys = retrieve_keys()
    except KeyStorageError as exc:
        raise DecryptError(f"no key: {exc}") from exc
    if not keys:
        raise DecryptError("Failed to retrieve valid encryption key")
    return parse_message(decrypt_blob(encrypted, keys))


def decrypt_blob(encrypted: str, keys: list[str]) -> str:
    """``decryptPayload(encryptedStr:encryptionKeys:)``: the plaintext of the first matching key."""
    try:
        blob = base64.b64decode(encrypted, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise DecryptError("the encrypted payload is not base64") from exc
    if len(blob) < _MODE + _IV + _HMAC:
        raise DecryptError(f"a blob of {len(blob)} bytes (the SDK would crash)")
    signed, tag = blob[:-_HMAC], blob[-_HMAC:]
    iv, ciphertext = blob[_MODE : _MODE + _IV], blob[_MODE + _IV : -_HMAC]
    for key in keys:
        aes_key, auth_key = split_key(key)
        mac_key = hashlib.sha256(auth_key).digest()
        if hmac.compare_digest(hmac.new(mac_key, signed, hashlib.sha256).digest(), tag):
            return _aes_cbc_decrypt(aes_key, iv, ciphertext).decode("utf-8", errors="replace")
    raise DecryptError("Failed to decrypt the push notification.")


def split_key(key: str) -> tuple[bytes, bytes]:
    """``splitEncryptionKey``: (AES key, auth key) = bytes 0-31 and 32-63 of the decoded key."""
    cleaned = _NOT_BASE64.sub("", key)  # .ignoreUnknownCharacters
    try:
        raw = base64.b64decode(cleaned + "=" * (-len(cleaned) % 4))
    except (binascii.Error, ValueError) as exc:
        raise DecryptError("Failed to convert base64Encoded string into Data format.") from exc
    if len(raw) < 64:
        raise DecryptError(f"a key of {len(raw)} bytes (the SDK would crash)")
    return raw[:32], raw[32:64]


def _aes_cbc_decrypt(aes_key: bytes, iv: bytes, ciphertext: bytes) -> bytes:
    if len(ciphertext) % 16:
        raise DecryptError("Error in decrypting Notification Payload: not whole blocks")
    decryptor = Cipher(algorithms.AES(aes_key), modes.CBC(iv)).decryptor()
    padded = decryptor.update(ciphertext) + decryptor.finalize()
    unpadder = padding.PKCS7(128).unpadder()
    try:
        return unpadder.update(padded) + unpadder.finalize()
    except ValueError as exc:
        raise DecryptError("Error in decrypting Notification Payload: bad padding") from exc


def parse_message(plaintext: str) -> ChatMessageReceived:
    """``PushNotificationChatMessageReceivedEvent(from:)``. Raises DecryptError as it throws."""
    try:
        fields = json.loads(plaintext)
    except ValueError as exc:
        raise DecryptError("the decrypted payload is not JSON") from exc
    if not isinstance(fields, dict):
        raise DecryptError("the decrypted payload is not a JSON object")
    for name in _FIELDS:
        if not isinstance(fields.get(name), str):
            raise DecryptError(f"field {name} is missing or not a string")
    return ChatMessageReceived(
        message_id=fields["messageId"],
        message_type=fields["messageType"],
        thread_id=fields["groupId"],
        sender_raw_id=fields["senderId"],
        recipient_raw_id=fields["recipientId"],
        sender_display_name=fields["senderDisplayName"],
        original_arrival_time=_iso8601(fields["originalArrivalTime"]),
        version=fields["version"],
        message=fields["messageBody"],
        metadata=_metadata(fields["acsChatMessageMetadata"]),
    )


def _metadata(text: str) -> dict[str, str | None] | None:
    if text == "null":
        return None
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise DecryptError("acsChatMessageMetadata is neither 'null' nor JSON") from exc
    if not isinstance(value, dict) or not all(
        v is None or isinstance(v, str) for v in value.values()
    ):
        raise DecryptError("acsChatMessageMetadata is not an object of strings")
    return value


def _iso8601(text: str) -> datetime | None:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None

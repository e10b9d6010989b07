"""The phone's side of the encrypted preview, written from the format, not from ``shared/``.

What the ACS iOS SDK's ``decryptPayload`` does in the notification service extension, so the
console can show what a phone holding the key would show (and nothing when it holds none):

    blob = base64( 0x70 | IV (16) | AES-256-CBC/PKCS7 ciphertext | HMAC-SHA256 (32) )

The 64-byte key splits into the AES key (bytes 0-31) and the auth key (32-63); the HMAC covers
mode, IV and ciphertext and is keyed with SHA-256 of the auth key. The plaintext is a JSON object
of strings (senderDisplayName, messageBody, groupId, messageId, ...). The push carries the blob at
``data.e`` with ``data.eventId`` 200. It is kept apart from ``shared.preview_crypto`` on purpose:
if both were one code, a mistake in it would encrypt and "decrypt" alike and the console would
show a preview no iPhone could.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Iterable, Mapping
from typing import Any

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

MODE = 0x70
CHAT_EVENT_ID = 200
KEY_BYTES = 64
_IV, _TAG = 16, 32


class DecryptError(ValueError):
    """The blob is not one this key made (wrong key, damaged, or not the SDK's format)."""


def encrypted_blob(payload: Mapping[str, Any]) -> str | None:
    """The blob of an encrypted chat push (``data.e`` with ``data.eventId`` 200), else None."""
    data = payload.get("data")
    if not isinstance(data, dict) or data.get("eventId") != CHAT_EVENT_ID:
        return None
    blob = data.get("e")
    return blob if isinstance(blob, str) else None


def decrypt(key: bytes, blob_b64: str) -> dict[str, str]:
    """The preview fields of ``blob_b64`` under ``key``. Raises DecryptError."""
    if len(key) != KEY_BYTES:
        raise DecryptError(f"a preview key is {KEY_BYTES} bytes, not {len(key)}")
    try:
        blob = base64.b64decode(blob_b64, validate=True)
    except binascii.Error as exc:
        raise DecryptError("the blob is not standard base64") from exc
    if len(blob) < 1 + _IV + 16 + _TAG or blob[0] != MODE:
        raise DecryptError("the blob is not mode 0x70 with an IV, ciphertext and tag")
    body, tag = blob[:-_TAG], blob[-_TAG:]
    expected = hmac.new(hashlib.sha256(key[32:]).digest(), body, hashlib.sha256).digest()
    if not hmac.compare_digest(tag, expected):
        raise DecryptError("the HMAC does not match this key")
    iv, ciphertext = body[1 : 1 + _IV], body[1 + _IV :]
    decryptor = Cipher(algorithms.AES(key[:32]), modes.CBC(iv)).decryptor()
    try:
        padded = decryptor.update(ciphertext) + decryptor.finalize()
        unpadder = padding.PKCS7(128).unpadder()
        plain = unpadder.update(padded) + unpadder.finalize()
        fields = json.loads(plain)
    except ValueError as exc:
        raise DecryptError("the plaintext is not padded JSON") from exc
    if not isinstance(fields, dict):
        raise DecryptError("the plaintext is not a JSON object")
    return {str(k): str(v) for k, v in fields.items()}


def decrypt_with_any(keys: Iterable[bytes], blob_b64: str) -> dict[str, str]:
    """Try each key the phone holds (newest first, as ``onRetrieveKeys`` lists them).

    Raises DecryptError when none fits.
    """
    for key in keys:
        try:
            return decrypt(key, blob_b64)
        except DecryptError:
            continue
    raise DecryptError("no key on this phone opens the blob")

"""Preview keys at rest: AES-256-GCM under a key-encryption key (KEK) from settings.

``KEY_ENCRYPTION_KEYS`` is a comma-separated list of ``id=base64(32 bytes)``. The first key
encrypts; every listed key decrypts, so a KEK is rotated by putting a new one first and dropping
the old one once no stored key uses it (stored keys live 45 minutes, registrations until removed).

A wrapped key is stored as ``<kek id>:<base64(nonce || ciphertext+tag)>``. The associated data
binds it to its (user, device) and KEK id: a wrapped key copied to another row does not decrypt.
Unwrapped keys are never logged; :class:`WrappedKey` and :class:`KeyWrapper` hide their bytes from
``repr``.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from shared.errors import PushRelayError, SettingsError

KEK_BYTES: Final = 32
NONCE_BYTES: Final = 12
_KEY_ID: Final = re.compile(r"[A-Za-z0-9_-]{1,32}")
_CONTEXT: Final = b"pushrelay/preview-key/v1"


class KeyUnwrapError(PushRelayError):
    """A stored key cannot be decrypted: unknown KEK id, tampered, or bound to another device."""


@dataclass(frozen=True, slots=True)
class WrappedKey:
    """An encrypted preview key and the id of the KEK that encrypted it."""

    key_id: str
    sealed: bytes = field(repr=False)  # nonce || ciphertext || tag

    def to_text(self) -> str:
        """The stored form ``<kek id>:<base64>``."""
        return f"{self.key_id}:{base64.b64encode(self.sealed).decode('ascii')}"

    @classmethod
    def from_text(cls, text: str) -> WrappedKey:
        """Parse the stored form. Raises KeyUnwrapError when it is malformed."""
        key_id, sep, blob = text.partition(":")
        if not sep or not _KEY_ID.fullmatch(key_id):
            raise KeyUnwrapError("stored key is malformed")
        try:
            sealed = base64.b64decode(blob, validate=True)
        except binascii.Error:
            raise KeyUnwrapError("stored key is malformed") from None
        if len(sealed) <= NONCE_BYTES:
            raise KeyUnwrapError("stored key is malformed")
        return cls(key_id, sealed)


def _associated_data(key_id: str, user_id: str, device_id: str) -> bytes:
    # Length-prefixed so no choice of IDs can collide with another.
    parts = (_CONTEXT, key_id.encode(), user_id.encode(), device_id.encode())
    return b"".join(len(p).to_bytes(4, "big") + p for p in parts)


class KeyWrapper:
    """Encrypts preview keys under the first KEK; decrypts under any listed KEK."""

    def __init__(
        self,
        keys: Sequence[tuple[str, bytes]],
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        """Raises SettingsError when the list is empty, an id repeats, or a key is not 32 bytes."""
        if not keys:
            raise SettingsError("setting KEY_ENCRYPTION_KEYS must list at least one key")
        self._aeads: dict[str, AESGCM] = {}
        for key_id, key in keys:
            if not _KEY_ID.fullmatch(key_id):
                raise SettingsError(
                    "setting KEY_ENCRYPTION_KEYS: key ids are 1-32 letters, digits, '-' or '_'"
                )
            if len(key) != KEK_BYTES or key_id in self._aeads:
                raise SettingsError(
                    f"setting KEY_ENCRYPTION_KEYS: key {key_id!r} must be 32 bytes, listed once"
                )
            self._aeads[key_id] = AESGCM(key)
        self._current = keys[0][0]
        self._random = random_bytes

    def __repr__(self) -> str:
        return f"KeyWrapper(current={self._current!r}, ids={list(self._aeads)!r})"

    @classmethod
    def from_setting(
        cls, text: str, random_bytes: Callable[[int], bytes] = os.urandom
    ) -> KeyWrapper:
        """Parse ``KEY_ENCRYPTION_KEYS`` (``id=base64, ...``). Raises SettingsError if malformed."""
        keys: list[tuple[str, bytes]] = []
        for item in (part.strip() for part in text.split(",")):
            if not item:
                continue
            key_id, sep, b64 = item.partition("=")
            if not sep:
                raise SettingsError("setting KEY_ENCRYPTION_KEYS: each item is id=base64(32 bytes)")
            try:
                key = base64.b64decode(b64.strip(), validate=True)
            except binascii.Error:
                raise SettingsError(
                    f"setting KEY_ENCRYPTION_KEYS: key {key_id.strip()!r} is not base64"
                ) from None
            keys.append((key_id.strip(), key))
        return cls(keys, random_bytes)

    @property
    def current_key_id(self) -> str:
        """The id of the KEK that encrypts."""
        return self._current

    def wrap(self, key: bytes, *, user_id: str, device_id: str) -> WrappedKey:
        """Encrypt ``key`` for the device ``(user_id, device_id)`` under the current KEK."""
        nonce = self._random(NONCE_BYTES)
        if len(nonce) != NONCE_BYTES:
            raise ValueError("random_bytes returned the wrong length")
        aad = _associated_data(self._current, user_id, device_id)
        sealed = self._aeads[self._current].encrypt(nonce, key, aad)
        return WrappedKey(self._current, nonce + sealed)

    def unwrap(self, wrapped: WrappedKey, *, user_id: str, device_id: str) -> bytes:
        """Decrypt a wrapped key of ``(user_id, device_id)``.

        Raises KeyUnwrapError for an unknown KEK id, tampering, or a key bound to another device.
        """
        aead = self._aeads.get(wrapped.key_id)
        if aead is None:
            raise KeyUnwrapError(f"no key-encryption key with id {wrapped.key_id!r}")
        nonce, sealed = wrapped.sealed[:NONCE_BYTES], wrapped.sealed[NONCE_BYTES:]
        aad = _associated_data(wrapped.key_id, user_id, device_id)
        try:
            return aead.decrypt(nonce, sealed, aad)
        except InvalidTag:
            raise KeyUnwrapError("stored key does not decrypt for this device") from None

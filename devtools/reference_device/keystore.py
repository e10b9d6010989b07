"""The phone's preview-key storage, as the ACS iOS chat SDK's ``AppGroupPushNotificationKeyStorage``
keeps it, and the 64-byte key the app generates for itself.

What the SDK does (Azure/azure-sdk-for-ios, AzureCommunicationChat 1.3.0 to 1.3.7, unchanged in
between: ``sdk/communication/AzureCommunicationChat/Source/PushNotification/
AppGroupPushNotificationKeyStorage.swift``):

- every key lives in ONE dictionary ``[base64 key: expiry Date]`` stored under ``keyTag`` in the
  app group's ``UserDefaults``, so the app and its notification service extension share it;
- ``onPersistKey(_:expiryTime:)`` sets that key's expiry (storing a key again replaces its
  expiry) and drops every key whose expiry is ``<=`` the device's clock;
- ``onRetrieveKeys()`` returns the keys whose expiry is ``>`` now, drops the others, and throws
  when there is no dictionary at all or no live key.

The app chooses the expiry (the SDK only uses 45 minutes for keys it generates itself in
``ChatClient.startPushNotifications``, which the guide does not call).
"""

from __future__ import annotations

import base64
import os
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Final

KEY_BYTES: Final = 64  # 32 bytes AES-256 key, then 32 bytes auth (HMAC) key

Clock = Callable[[], datetime]


class KeyStorageError(Exception):
    """What ``onRetrieveKeys`` throws: no key dictionary, or every key expired."""


def generate_key(random_bytes: Callable[[int], bytes] = os.urandom) -> str:
    """64 random bytes as standard padded base64 (88 characters), as the guide's app makes them."""
    return base64.b64encode(random_bytes(KEY_BYTES)).decode("ascii")


class AppGroupKeyStorage:
    """The app group's key dictionary with the SDK's rules, on the phone's clock."""

    def __init__(self, clock: Clock, keys: Mapping[str, datetime] | None = None) -> None:
        self._clock = clock
        # None models "no dictionary in UserDefaults yet" (onRetrieveKeys throws then).
        self._keys: dict[str, datetime] | None = dict(keys) if keys is not None else None

    def persist_key(self, key: str, expiry: datetime) -> None:
        """``onPersistKey(_:expiryTime:)``: set ``key``'s expiry, drop expired keys."""
        keys = self._keys if self._keys is not None else {}
        keys[key] = expiry
        now = self._clock()
        self._keys = {k: when for k, when in keys.items() if when > now}

    def retrieve_keys(self) -> list[str]:
        """``onRetrieveKeys()``: the live keys. Raises KeyStorageError when there are none."""
        if self._keys is None:
            raise KeyStorageError("There is no encryption key in UserDefaults.")
        now = self._clock()
        self._keys = {k: when for k, when in self._keys.items() if when > now}
        if not self._keys:
            raise KeyStorageError("All encryption keys in UserDefaults expire.")
        return list(self._keys)

    def clear(self) -> None:
        """Sign-out: remove the dictionary (``UserDefaults.removeObject(forKey: keyTag)``)."""
        self._keys = None

    def expiries(self) -> dict[str, datetime]:
        """Every stored key and its expiry, live or not (a copy; for inspection and saving)."""
        return dict(self._keys or {})

    def live_until(self) -> datetime | None:
        """The latest expiry among live keys, or None when no key is live."""
        now = self._clock()
        live = [when for when in (self._keys or {}).values() if when > now]
        return max(live) if live else None

    @property
    def exists(self) -> bool:
        """Whether a dictionary is stored at all (False before the first key and after clear)."""
        return self._keys is not None

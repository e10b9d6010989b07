"""A phone the console holds: the app of docs/ios.md reduced to what reaches pushrelay.

It signs in as its user at the development identity provider, gets its ACS identity from
``POST /api/token``, generates its own 64-byte preview key, registers its APNs token with the key
(and, for calls, a PushKit token) through ``PUT /api/devices``, decrypts its pushes with its own
keys (:mod:`devtools.console.decryption`), renews its key when a renewal wake arrives, and
answers a token-proof push by repeating the registration with the code. Its tokens are random
64-hex-digit strings, which the APNs simulator accepts in its default (lenient) mode.

It is what the console draws when no reference device is at hand: the phones of the iOS guide's
reference device, when that package exists, hold their keys in the same way.
"""

from __future__ import annotations

import base64
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

from devtools.console.lockscreen import Mark, Push, silent_mark

log = logging.getLogger(__name__)

KEYS_KEPT = 2  # the new key and the one before it: pushes encrypted just before a renewal open


class PhoneError(RuntimeError):
    """The app refused or did not answer a step of the phone's sign-in or registration."""


@dataclass(frozen=True, slots=True)
class HeldKey:
    """A preview key in the phone's app-group storage, with the expiry the app told it."""

    key: bytes = field(repr=False)
    expires_at: datetime | None


def _expiry(answer: dict[str, Any]) -> datetime | None:
    text = answer.get("keyExpiresAt")
    if not isinstance(text, str):
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


class ConsolePhone:
    """One phone of one user: an alert token with a preview key, and optionally a VoIP token."""

    source = "console"

    def __init__(
        self,
        name: str,
        *,
        http: httpx.AsyncClient,
        app_url: str,
        token_url: str,
        topic: str,
        calls: bool = True,
        environment: str = "sandbox",
        random_bytes: Callable[[int], bytes] = os.urandom,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.name = name
        self._http = http
        self._app = app_url.rstrip("/")
        self._token_url = token_url
        self.topic = topic
        self.environment = environment
        self._random = random_bytes
        self._clock = clock
        self.alert_token = random_bytes(32).hex()
        self.voip_token = random_bytes(32).hex() if calls else None
        self.user_id = ""
        self._held: list[HeldKey] = []
        self._pending: tuple[bytes, dict[str, Any]] | None = None
        self.renewals = 0

    @property
    def tokens(self) -> dict[str, str]:
        """kind -> token."""
        tokens = {"alert": self.alert_token}
        if self.voip_token:
            tokens["voip"] = self.voip_token
        return tokens

    def keys(self, now: datetime | None = None) -> list[bytes]:
        """The live keys, newest first (what ``onRetrieveKeys`` hands the extension)."""
        at = now or self._clock()
        return [h.key for h in reversed(self._held) if h.expires_at is None or at < h.expires_at]

    @property
    def key_expires_at(self) -> datetime | None:
        """When the newest key expires, as the app answered."""
        return self._held[-1].expires_at if self._held else None

    async def _bearer(self) -> dict[str, str]:
        try:
            answer = await self._http.get(self._token_url, params={"sub": self.name})
            answer.raise_for_status()
        except httpx.HTTPError as exc:
            raise PhoneError(f"the identity provider gave {self.name} no token: {exc}") from exc
        return {"Authorization": "Bearer " + str(answer.json()["access_token"])}

    async def _call(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        headers = await self._bearer()
        try:
            answer = await self._http.request(
                method, self._app + path, json=body, headers=headers, timeout=30.0
            )
        except httpx.HTTPError as exc:
            raise PhoneError(f"{method} {path}: {exc}") from exc
        if answer.status_code not in (200, 202):
            raise PhoneError(f"{method} {path} answered {answer.status_code}: {answer.text[:200]}")
        data = answer.json()
        return data if isinstance(data, dict) else {}

    async def sign_in(self) -> str:
        """The ACS identity of this phone's user (created on first use). Raises PhoneError."""
        self.user_id = str((await self._call("POST", "/api/token"))["acsUserId"])
        return self.user_id

    async def register(self) -> None:
        """Register the alert token with a fresh key, and the VoIP token. Raises PhoneError."""
        await self.renew_key()
        if self.voip_token:
            await self._put(
                {
                    "token": self.voip_token,
                    "kind": "voip",
                    "topic": self.topic,
                    "environment": self.environment,
                }
            )

    async def renew_key(self) -> None:
        """A new 64-byte key, uploaded with the alert token's registration. Raises PhoneError."""
        key = self._random(64)
        body: dict[str, Any] = {
            "token": self.alert_token,
            "kind": "alert",
            "topic": self.topic,
            "environment": self.environment,
            "key": base64.b64encode(key).decode(),
        }
        await self._upload(key, body)

    async def _upload(self, key: bytes, body: dict[str, Any]) -> None:
        answer = await self._put(body)
        if answer.get("status") == "proofRequired":
            # Another user still holds the token: the app proves it is this phone with the code
            # the next background push brings, repeating the same registration (handle_push).
            self._pending = (key, body)
            return
        self._pending = None
        self._held = [*self._held, HeldKey(key, _expiry(answer))][-KEYS_KEPT:]

    async def _put(self, body: dict[str, Any]) -> dict[str, Any]:
        return await self._call("PUT", "/api/devices", body)

    async def handle_push(self, push: Push) -> str | None:
        """What the app does with a background push; returns a line for the activity list."""
        if push.token != self.alert_token or push.push_type != "background":
            return None
        mark = silent_mark(push)
        if mark.mark is Mark.RENEWAL:
            await self.renew_key()
            self.renewals += 1
            return f"{self.name}'s phone woke up and renewed its preview key"
        if mark.mark is Mark.TOKEN_PROOF:
            relay = push.payload.get("pushrelay")
            code = relay.get("tokenProof") if isinstance(relay, dict) else None
            if isinstance(code, str) and self._pending is not None:
                key, body = self._pending
                await self._upload(key, {**body, "tokenProof": code})
                return f"{self.name}'s phone proved it holds its token"
        return None

"""The console's phones are reference devices: the app of docs/ios.md, with an async face.

There is one implementation of "a phone that behaves like the guide's app":
:class:`~devtools.reference_device.ReferenceDevice`. It generates and stores its own key with the
ACS SDK's storage rules, registers both tokens, decrypts with its own ``decryptPayload``, renews
on every background wake, answers token-move proofs and reports VoIP pushes to CallKit. The
console draws it; it does not re-implement it.

The reference device is synchronous (``httpx.Client``: the calls its command line and the e2e
tests make). Each phone gets a single-thread executor, and every call into the device runs
there, one at a time and in order: the console's event loop never waits on the app's answers
(the local run serves the app on that same loop, so a blocking call there would never be
answered), and no two threads ever touch one device.

Pushes: the console reads the APNs simulator's log once, for every phone, and hands each phone
the pushes for its tokens through :class:`ConsoleFeed` (the device's ``PushSource``); the
device's own ``sync`` handles them, as it does on the command line.

The chat layer: the console plays ACS, so it answers the device's "which of these messages are
deleted" (``deleted_messages``) from the messages it deleted itself.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any, TypeVar

import httpx

from devtools.reference_device import (
    DeviceEvent,
    DevIdentityProvider,
    Happened,
    KeyStorageError,
    Push,
    ReferenceDevice,
    RelayClient,
    RelayError,
    SignedOutError,
)
from devtools.reference_device.device import DeletedMessages

log = logging.getLogger(__name__)

T = TypeVar("T")
LOG_SHOWN = 8  # the app's last events under each phone


class PhoneError(RuntimeError):
    """The app refused or did not answer a step of the phone's sign-in or registration."""


class ConsoleFeed:
    """The device's ``PushSource``: the pushes the console read from the simulator's log."""

    def __init__(self) -> None:
        self._pushes: list[Push] = []

    def add(self, push: Push) -> None:
        """A push APNs accepted for one of the phone's tokens."""
        self._pushes.append(push)

    def pushes(self, token: str, since: int) -> list[Push]:
        """The pushes to ``token`` after sequence number ``since``, in order."""
        return [p for p in self._pushes if p.token == token and p.seq > since]

    def clear(self) -> None:
        """Forget what the device has read."""
        self._pushes.clear()


def activity_line(name: str, event: DeviceEvent) -> str | None:
    """The activity list's line for one thing the phone's app did (None: the screen shows it)."""
    d, what, phone = event.detail, event.what, f"{name}'s phone"
    if what is Happened.RENEWAL_WAKE:
        return f"{phone} woke up (renewal wake)"
    if what is Happened.KEY_UPLOADED:
        until = str(d.get("keyExpiresAt", ""))[11:19]  # ISO 8601 UTC: the time of day
        return f"{phone} renewed its preview key (pushrelay uses it until {until} UTC)"
    if what is Happened.PROOF_COMPLETED:
        return f"{phone} proved it holds its {d.get('kind')} token (token-move proof)"
    if what is Happened.PROOF_REFUSED:
        return f"{phone}: its token-move proof was refused ({d.get('error')})"
    if what is Happened.VOIP_HELD:
        return f"{phone}: another user holds its PushKit token until the alert token's proof"
    if what is Happened.WITHDRAWN and d.get("reconciled"):
        return f"{phone} cleared the banner of deleted message {d.get('messageId')} (no withdraw)"
    if what is Happened.PLACEHOLDER_CALL:
        return f"{phone} reported an unreadable VoIP push to CallKit as a call, and ended it"
    if what is Happened.NOT_DELIVERED:
        return f"{phone}: iOS did not hand a push to the app ({d.get('reason') or 'not shown'})"
    return None


class ReferencePhone:
    """A :class:`~devtools.reference_device.ReferenceDevice` on the console's page."""

    source = "reference"

    def __init__(
        self,
        name: str,
        device: ReferenceDevice,
        feed: ConsoleFeed,
        http: httpx.Client | None = None,
    ) -> None:
        self.name = name
        self.device = device
        self._feed = feed
        self._http = http  # the device's HTTP client, when this phone opened it
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"phone-{name}")

    @classmethod
    def connect(
        cls,
        name: str,
        *,
        app_url: str,
        token_url: str,
        topic: str,
        calls: bool = True,
        deleted_messages: DeletedMessages | None = None,
    ) -> ReferencePhone:
        """A phone talking HTTP to the app and the identity provider (close it with close)."""
        http = httpx.Client(timeout=30.0)
        feed = ConsoleFeed()
        device = ReferenceDevice(
            relay=RelayClient(app_url, http),
            idp=DevIdentityProvider(token_url, http),
            pushes=feed,
            topic=topic,
            calls=calls,
            deleted_messages=deleted_messages,
        )
        return cls(name, device, feed, http)

    async def _run(self, call: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    async def start(self) -> None:
        """Sign in as the phone's name and launch the app. Raises PhoneError."""

        def launch() -> None:
            self.device.sign_in(self.name)
            self.device.launch()

        try:
            await self._run(launch)
        except (RelayError, SignedOutError, httpx.HTTPError) as exc:
            raise PhoneError(f"{self.name}'s phone: {exc}") from exc

    # --- what the page shows --------------------------------------------------------------------
    @property
    def user_id(self) -> str:
        """The ACS identity ``POST /api/token`` gave the phone's user."""
        return self.device.acs_user_id or ""

    @property
    def tokens(self) -> dict[str, str]:
        """kind -> token (no PushKit token for an app without calls)."""
        tokens = {"alert": self.device.alert_token}
        if self.device.calls_enabled:
            tokens["voip"] = self.device.voip_token
        return tokens

    @property
    def key_expires_at(self) -> datetime | None:
        """The latest expiry in the phone's key storage (past ones too, until it drops them)."""
        expiries = self.device.keys.expiries().values()
        return max(expiries) if expiries else None

    def banner_ids(self) -> set[str]:
        """The identifiers of the banners in the phone's Notification Center."""
        return {b.identifier for b in self.device.banners}

    def app_log(self) -> list[dict[str, Any]]:
        """The app's last events, newest first, JSON-ready."""
        return [e.as_json() for e in reversed(self.device.events[-LOG_SHOWN:])]

    # --- what the phone does --------------------------------------------------------------------
    async def live_keys(self) -> list[str]:
        """``onRetrieveKeys()``: the keys the extension would try now ([] when it throws)."""

        def retrieve() -> list[str]:
            try:
                return self.device.keys.retrieve_keys()
            except KeyStorageError:
                return []

        return await self._run(retrieve)

    async def handle_push(self, push: Push) -> list[str]:
        """Deliver one push to the phone; the activity lines for what its app did."""

        def deliver() -> list[DeviceEvent]:
            self._feed.add(push)
            try:
                return self.device.sync()
            finally:
                self._feed.clear()

        events = await self._run(deliver)
        return [line for e in events if (line := activity_line(self.name, e)) is not None]

    async def end_call(self, call_id: str, *, accept: bool) -> None:
        """The user answers or declines in CallKit (a call id CallKit does not know: nothing)."""
        try:
            ident = uuid.UUID(call_id)
        except ValueError:
            return
        act = self.device.answer if accept else self.device.end_call
        await self._run(lambda: act(ident))

    def close(self) -> None:
        """Close the phone's HTTP client once its pending work is done."""
        if self._http is not None:
            self._executor.submit(self._http.close)
        self._executor.shutdown(wait=False)

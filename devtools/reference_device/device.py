"""A phone running the app of docs/ios.md, against pushrelay, the development identity provider
and the APNs simulator.

It does what the guide's Swift files do, step for step:

- ``PreviewKeyManager``: the app generates its own 64-byte key, stores it in the app group with
  the SDK's storage rules (before uploading, so the extension can decrypt at once), uploads it
  with ``PUT /api/devices`` and stores it again with the expiry the answer gives
  (``keyExpiresAt``); on a launch with an unchanged token and a key with more than
  :data:`RENEW_BEFORE` left it re-registers WITHOUT ``key`` (pushrelay keeps the stored key); on
  a new APNs token it registers the new one with a fresh key and deletes the old registration;
- ``AppDelegate``'s background-push handler: a token-move proof code completes the pending
  registration (and then registers the PushKit token again: it follows the alert token's proof,
  409 until then); any other wake (``deleted`` withdraws that message's banners first) uploads
  a fresh key; and every wake clears the banners of messages deleted since, asking the app's
  chat layer (``deleted_messages``), since a delete whose withdraw push the background budget
  skipped never arrives; opening a thread clears its banners (:meth:`ReferenceDevice.open_thread`);
- ``NotificationService``: decrypts with the SDK's rules (:mod:`.decryption`), keeps the
  fallback when it cannot or the message is empty;
- ``VoipCalls``: every VoIP push is reported to CallKit, a push it cannot read as a placeholder
  call that ends at once; the answer action is fulfilled for a ringing call (an app built
  without calls, ``calls=False``, registers no PushKit token);
- sign-out deletes both registrations, the keys and the delivered banners.

Pushes arrive by reading the APNs simulator's log (:mod:`.apns`): call :meth:`ReferenceDevice.sync`
(or :meth:`ReferenceDevice.wait_for_push`). Time is the injected ``clock`` (the key storage's
expiry checks and every timestamp), so tests can move the phone through simulated hours.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Final

import httpx

from devtools.reference_device.apns import Push, PushSource, SimulatorPushes
from devtools.reference_device.calls import (
    Call,
    CallKit,
    CallKitError,
    CallPhase,
    EndReason,
    parse_voip_push,
)
from devtools.reference_device.keystore import AppGroupKeyStorage, Clock, generate_key
from devtools.reference_device.notifications import Banner, NotificationCenter, extension_content
from devtools.reference_device.relay import (
    DevIdentityProvider,
    ProofRequired,
    Registered,
    RelayClient,
    RelayError,
)

DEFAULT_TOPIC: Final = "com.example.pushrelay"  # the local run's development app
# Until the upload's answer says when pushrelay stops using the key (docs/ios.md, KeyManager).
PROVISIONAL_KEY_LIFETIME: Final = timedelta(minutes=10)
# A launch renews the key when less than this is left (pushrelay wakes 10 minutes before).
RENEW_BEFORE: Final = timedelta(minutes=15)


DeletedMessages = Callable[[str, Collection[str]], Collection[str]]
"""The app's chat layer (``DeletedMessageLookup`` in docs/ios.md): which of these message ids of
this thread are deleted. On a phone, ACS answers (``ChatMessage.deletedOn``); in tests and the
console, whoever plays ACS."""


def utc_now() -> datetime:
    """The real clock, UTC."""
    return datetime.now(UTC)


class Happened(StrEnum):
    """What the phone did (its event log, for tests and a console)."""

    SIGNED_IN = "signedIn"
    REGISTERED = "registered"
    KEY_UPLOADED = "keyUploaded"
    PROOF_REQUIRED = "proofRequired"
    PROOF_COMPLETED = "proofCompleted"
    PROOF_REFUSED = "proofRefused"  # 403: the code expired or was not this token's
    VOIP_HELD = "voipHeld"  # 409: another user holds the PushKit token until the alert's proof
    DEREGISTERED = "deregistered"
    BANNER = "banner"
    BADGE = "badge"  # a badge-only push set the app icon's number, nothing shown
    WITHDRAWN = "withdrawn"
    THREAD_OPENED = "threadOpened"
    RENEWAL_WAKE = "renewalWake"
    CALL_REPORTED = "callReported"
    PLACEHOLDER_CALL = "placeholderCall"
    CALL_ANSWERED = "callAnswered"
    CALL_ENDED = "callEnded"
    NOT_DELIVERED = "notDelivered"  # iOS would not hand this push to the app
    SIGNED_OUT = "signedOut"


@dataclass(frozen=True, slots=True)
class DeviceEvent:
    """One thing the phone did, with its details."""

    what: Happened
    at: datetime
    detail: Mapping[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"what": self.what.value, "at": self.at.isoformat(), **self.detail}


@dataclass(frozen=True, slots=True)
class Registration:
    """What the app keeps about one registration (the guide keeps it in UserDefaults)."""

    token: str
    device_id: str


@dataclass(frozen=True, slots=True)
class Endpoints:
    """Where the phone finds pushrelay, the identity provider and APNs (the simulator)."""

    app: str  # pushrelay's base URL, e.g. http://127.0.0.1:7071
    idp: str  # the development identity provider's token URL (its token_url)
    apns: str  # the APNs simulator's control URL


class SignedOutError(RuntimeError):
    """An action that needs a signed-in user was asked of a signed-out phone."""


class ReferenceDevice:
    """One phone: an alert (APNs) token, a PushKit token, the app group's keys, CallKit."""

    def __init__(
        self,
        *,
        relay: RelayClient,
        idp: DevIdentityProvider,
        pushes: PushSource,
        topic: str = DEFAULT_TOPIC,
        environment: str = "sandbox",
        clock: Clock = utc_now,
        random_bytes: Callable[[int], bytes] = os.urandom,
        alert_token: str | None = None,
        voip_token: str | None = None,
        calls: bool = True,
        deleted_messages: DeletedMessages | None = None,
    ) -> None:
        self.relay, self.idp, self.source = relay, idp, pushes
        self.topic, self.environment = topic, environment
        self.clock, self._random = clock, random_bytes
        self.alert_token = (alert_token or random_bytes(32).hex()).lower()
        self.voip_token = (voip_token or random_bytes(32).hex()).lower()
        self.calls_enabled = calls  # False: an app without VoipCalls (no PushKit token)
        self.deleted_messages = deleted_messages
        self.keys = AppGroupKeyStorage(clock)
        self.center = NotificationCenter()
        self.callkit = CallKit()
        self.subject: str | None = None
        self.acs_user_id: str | None = None
        self.running = True  # False: force-quit, iOS delivers no background pushes to the app
        self.previews_enabled = True  # the user's setting (docs/ios.md section 5)
        self.badge: int | None = None  # the app icon's number, as the last push with one set it
        self.registrations: dict[str, Registration] = {}  # "alert" / "voip"
        self.pending_proofs: dict[str, dict[str, Any]] = {}  # token -> the PUT body to repeat
        self.cursors: dict[str, int] = {}  # token -> last push sequence number seen
        self.events: list[DeviceEvent] = []
        self._owned_http: httpx.Client | None = None

    @classmethod
    def connect(cls, endpoints: Endpoints, **options: Any) -> ReferenceDevice:
        """A phone talking HTTP to the three endpoints (close it with :meth:`close`)."""
        http = httpx.Client(timeout=30.0)
        device = cls(
            relay=RelayClient(endpoints.app, http),
            idp=DevIdentityProvider(endpoints.idp, http),
            pushes=SimulatorPushes(endpoints.apns, http),
            **options,
        )
        device._owned_http = http
        return device

    def close(self) -> None:
        """Close the HTTP client :meth:`connect` opened."""
        if self._owned_http is not None:
            self._owned_http.close()

    # --- signing in and registering (the guide's KeyManager) ----------------------------------

    def sign_in(self, subject: str) -> str:
        """Sign in as ``subject`` and get the ACS identity from ``POST /api/token``.

        Another user signing in on this phone starts from nothing: the previous user's
        registrations, keys and banners are dropped here (their sign-out, had it run, would
        have deleted the registrations too; now pushrelay asks this phone for a token proof).
        """
        if self.subject is not None and self.subject != subject:
            self.registrations.clear()
            self.pending_proofs.clear()
            self.keys.clear()
            self.center.remove_all()
        self.subject = subject
        issued = self.relay.issue_token(self._bearer())
        self.acs_user_id = issued.acs_user_id
        self._note(Happened.SIGNED_IN, subject=subject, acsUserId=issued.acs_user_id)
        return issued.acs_user_id

    def launch(self) -> None:
        """The app starts (or comes to the foreground): iOS hands it both tokens again."""
        self.running = True
        self.apns_token_received(self.alert_token)
        if self.calls_enabled:
            self.voip_token_received(self.voip_token)

    def apns_token_received(self, token: str) -> None:
        """``didRegisterForRemoteNotificationsWithDeviceToken``: register, keep or renew the key."""
        token = token.lower()
        previous = self.registrations.get("alert")
        self.alert_token = token
        until = self.keys.live_until()
        fresh = until is not None and until - self.clock() > RENEW_BEFORE
        if not self.previews_enabled or (
            previous is not None and previous.token == token and fresh
        ):
            # No "key": pushrelay keeps the stored one (none while previews are off).
            self._put(self._body("alert", token))
        else:
            self.renew_key()
        if previous is not None and previous.token != token:
            self._delete(previous)

    def voip_token_received(self, token: str) -> None:
        """``pushRegistry(_:didUpdate:for:)``: register the PushKit token (kind voip, no key)."""
        token = token.lower()
        previous = self.registrations.get("voip")
        self.voip_token = token
        try:
            self._put(self._body("voip", token))
        except RelayError as exc:
            if exc.status != 409:
                raise
            # A PushKit token cannot carry a proof code: it follows the alert token's proof
            # (docs/ios.md, token moves), registered again in _complete_proof.
            self._note(Happened.VOIP_HELD, error=exc.body)
            return
        if previous is not None and previous.token != token:
            self._delete(previous)

    def rotate_apns_token(self) -> str:
        """APNs hands the app a new device token (restore from backup, reinstall, ...)."""
        new = self._random(32).hex()
        self.apns_token_received(new)
        return new

    def renew_key(self) -> None:
        """A fresh key: stored (provisional expiry), uploaded, stored with pushrelay's expiry."""
        if not self.previews_enabled:
            return
        key = generate_key(self._random)
        self.keys.persist_key(key, self.clock() + PROVISIONAL_KEY_LIFETIME)
        body = self._body("alert", self.alert_token)
        body["key"] = key
        self._put(body)

    def disable_previews(self) -> None:
        """The user turns previews off: ``"key": null`` removes the key, and the local keys go."""
        self.previews_enabled = False
        body: dict[str, Any] = self._body("alert", self.alert_token)
        body["key"] = None
        self._put(body)
        self.keys.clear()

    def enable_previews(self) -> None:
        """The user turns previews on again: a fresh key now."""
        self.previews_enabled = True
        self.renew_key()

    def sign_out(self) -> None:
        """Delete both registrations, then the keys and the delivered banners; forget the user."""
        for registration in list(self.registrations.values()):
            self._delete(registration)
        self.keys.clear()
        self.center.remove_all()
        self.pending_proofs.clear()
        self.previews_enabled = True
        self._note(Happened.SIGNED_OUT, subject=self.subject)
        self.subject = self.acs_user_id = None

    def force_quit(self) -> None:
        """The user swipes the app away: iOS no longer launches it for background pushes."""
        self.running = False

    # --- receiving ------------------------------------------------------------------------------

    def sync(self) -> list[DeviceEvent]:
        """Handle every push delivered since the last sync; returns what the phone did."""
        start = len(self.events)
        for token in (self.alert_token, self.voip_token):
            for push in self.source.pushes(token, self.cursors.get(token, 0)):
                self.cursors[token] = max(self.cursors.get(token, 0), push.seq)
                self.handle(push)
        return self.events[start:]

    def wait_for_push(self, timeout: float = 10.0, interval: float = 0.05) -> list[DeviceEvent]:
        """Sync until at least one push arrived; raises TimeoutError after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            before = dict(self.cursors)
            done = self.sync()
            if self.cursors != before:
                return done
            if time.monotonic() >= deadline:
                raise TimeoutError(f"no push reached the phone within {timeout} s")
            time.sleep(interval)  # polling the simulator's log, not waiting for a clock

    def handle(self, push: Push) -> None:
        """What iOS and the app do with one delivered push."""
        if push.push_type == "voip" and push.token == self.voip_token:
            self._on_voip(push)
        elif push.push_type == "background":
            self._on_background(push)
        elif push.push_type == "alert":
            self._on_alert(push)
        else:
            self._note(Happened.NOT_DELIVERED, pushType=push.push_type, seq=push.seq)

    def _on_alert(self, push: Push) -> None:
        payload = push.payload
        aps = payload.get("aps") if isinstance(payload.get("aps"), dict) else {}
        badge = aps.get("badge")
        if isinstance(badge, int) and not isinstance(badge, bool):
            self.badge = badge  # iOS sets the icon from every push that carries a badge
        if "alert" not in aps:
            # A badge-only push (docs/ios.md section 13): no banner, the extension does not run.
            self._note(Happened.BADGE, badge=badge, seq=push.seq)
            return
        content = extension_content(payload, self.keys.retrieve_keys)
        banner = Banner(
            identifier=push.collapse_id or push.apns_id or f"seq-{push.seq}",
            title=content.title,
            body=content.body,
            thread_id=_string(payload.get("threadId")),
            message_id=_string(payload.get("messageId")),
            kind=_string(payload.get("kind")),
            decrypted=content.decrypted,
            delivered_at=self.clock(),
        )
        self.center.deliver(banner)
        self._note(Happened.BANNER, **banner.as_json())

    def _on_background(self, push: Push) -> None:
        if not self.running:
            self._note(Happened.NOT_DELIVERED, reason="app force-quit", seq=push.seq)
            return
        payload = push.payload
        relay = payload.get("pushrelay")
        code = relay.get("tokenProof") if isinstance(relay, dict) else None
        deleted = payload.get("deleted")
        if isinstance(code, str):
            # The registration it completes carries its key already.
            self._complete_proof(push.token, code)
        else:
            if isinstance(deleted, dict):
                self._withdraw(_string(deleted.get("threadId")), _string(deleted.get("messageId")))
            else:
                self._note(Happened.RENEWAL_WAKE, seq=push.seq)
            if self.subject is not None:
                # Any wake renews (a withdraw wake too): it moves pushrelay's next renewal wake
                # later, and the two share one background budget.
                self.renew_key()
        self.clear_deleted_banners()

    def _withdraw(self, thread: str | None, message: str | None) -> None:
        # Without both ids nothing is matched: a banner without ids is never a deleted message.
        removed = self.center.withdraw(thread, message) if thread and message else 0
        self._note(Happened.WITHDRAWN, threadId=thread, messageId=message, removed=removed)

    def clear_deleted_banners(self) -> int:
        """Withdraw the banners of messages the chat layer says are deleted; how many went.

        A second delete within ``RENEWAL_MIN_SPACING_MINUTES`` of the last background push gets
        no withdraw push (docs/ios.md section 7): the next wake, whatever it is for, clears it.
        """
        if self.deleted_messages is None:
            return 0
        by_thread: dict[str, list[str]] = {}
        for banner in self.banners:
            if banner.thread_id and banner.message_id:
                by_thread.setdefault(banner.thread_id, []).append(banner.message_id)
        removed = 0
        for thread, messages in by_thread.items():
            for message in self.deleted_messages(thread, messages):
                gone = self.center.withdraw(thread, message)
                if gone:
                    removed += gone
                    self._note(Happened.WITHDRAWN, threadId=thread, messageId=message,
                               removed=gone, reconciled=True)  # fmt: skip
        return removed

    def open_thread(self, thread_id: str) -> int:
        """The user opens a conversation: its banners go (the thread itself comes from ACS)."""
        removed = self.center.remove_thread(thread_id)
        self._note(Happened.THREAD_OPENED, threadId=thread_id, removed=removed)
        return removed

    def _on_voip(self, push: Push) -> None:
        info = parse_voip_push(push.payload)
        now = self.clock()
        proof = push.payload.get("pushrelay")
        if isinstance(proof, dict) and isinstance(proof.get("tokenProof"), str):
            # A PushKit token only gets VoIP pushes, and each must be reported as a call.
            self._complete_proof(push.token, proof["tokenProof"])
        if info is None:
            # Report something anyway (Apple's rule), then end it: the push could not be read.
            placeholder = uuid.UUID(bytes=self._random(16), version=4)
            call = Call(placeholder, "Unknown caller", "unknown", False, True, CallPhase.RINGING,
                        None, now)  # fmt: skip
            self.callkit.report_new_incoming_call(call)
            self.callkit.report_ended(placeholder, EndReason.FAILED)
            self._note(Happened.PLACEHOLDER_CALL, uuid=str(placeholder), seq=push.seq)
            return
        call = Call(
            uuid=info.call_id,
            caller_name=info.display_name or "Unknown caller",
            handle=info.caller_raw_id,
            video=info.video,
            placeholder=False,
            phase=CallPhase.RINGING,
            end_reason=None,
            reported_at=now,
            server_call_id=info.server_call_id,
        )
        try:
            self.callkit.report_new_incoming_call(call)
        except CallKitError as exc:
            self._note(Happened.CALL_REPORTED, uuid=str(info.call_id), error=str(exc))
            return
        self._note(Happened.CALL_REPORTED, **call.as_json())

    def answer(self, call_id: uuid.UUID | str) -> bool:
        """The user answers in CallKit: ``CXAnswerCallAction`` fulfilled for a ringing call."""
        ident = uuid.UUID(str(call_id))
        done = self.callkit.answer(ident)
        self._note(Happened.CALL_ANSWERED, uuid=str(ident), fulfilled=done)
        return done

    def end_call(self, call_id: uuid.UUID | str) -> bool:
        """The user declines or hangs up: ``CXEndCallAction``."""
        ident = uuid.UUID(str(call_id))
        done = self.callkit.end(ident)
        self._note(Happened.CALL_ENDED, uuid=str(ident), fulfilled=done)
        return done

    # --- views ----------------------------------------------------------------------------------

    @property
    def banners(self) -> list[Banner]:
        """The banners in Notification Center, oldest first."""
        return self.center.banners

    @property
    def calls(self) -> list[Call]:
        """Every call reported to CallKit."""
        return self.callkit.calls

    # --- saving (the command line keeps a phone in a file between commands) --------------------

    def to_state(self) -> dict[str, Any]:
        """Everything the phone knows, JSON-ready (keys included: development state only)."""
        return {
            "topic": self.topic,
            "environment": self.environment,
            "alertToken": self.alert_token,
            "voipToken": self.voip_token,
            "subject": self.subject,
            "acsUserId": self.acs_user_id,
            "running": self.running,
            "takesCalls": self.calls_enabled,
            "previewsEnabled": self.previews_enabled,
            "badge": self.badge,
            "registrations": {
                kind: {"token": r.token, "deviceId": r.device_id}
                for kind, r in self.registrations.items()
            },
            "pendingProofs": self.pending_proofs,
            "cursors": self.cursors,
            "keys": None
            if not self.keys.exists
            else {k: when.isoformat() for k, when in self.keys.expiries().items()},
            "banners": [b.as_json() for b in self.banners],
            "calls": [c.as_json() for c in self.calls],
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        """Take back what :meth:`to_state` saved (topic and environment come from the state)."""
        self.topic, self.environment = state["topic"], state["environment"]
        self.alert_token, self.voip_token = state["alertToken"], state["voipToken"]
        self.subject, self.acs_user_id = state.get("subject"), state.get("acsUserId")
        self.running = bool(state.get("running", True))
        self.calls_enabled = bool(state.get("takesCalls", True))
        self.previews_enabled = bool(state.get("previewsEnabled", True))
        badge = state.get("badge")
        self.badge = badge if isinstance(badge, int) else None
        self.registrations = {
            kind: Registration(r["token"], r["deviceId"])
            for kind, r in (state.get("registrations") or {}).items()
        }
        self.pending_proofs = dict(state.get("pendingProofs") or {})
        self.cursors = {t: int(n) for t, n in (state.get("cursors") or {}).items()}
        keys = state.get("keys")
        self.keys = AppGroupKeyStorage(
            self.clock,
            None if keys is None else {k: datetime.fromisoformat(v) for k, v in keys.items()},
        )
        self.center = NotificationCenter()
        for banner in state.get("banners") or []:
            self.center.deliver(Banner.from_json(banner))
        self.callkit = CallKit()
        for call in state.get("calls") or []:
            self.callkit.restore(Call.from_json(call))

    # --- plumbing -------------------------------------------------------------------------------

    def _bearer(self) -> str:
        if self.subject is None:
            raise SignedOutError("sign in first")
        return self.idp.access_token(self.subject)

    def _body(self, kind: str, token: str) -> dict[str, Any]:
        return {
            "token": token,
            "kind": kind,
            "topic": self.topic,
            "environment": self.environment,
            "appVersion": "reference-device",
            "locale": "en_US",
        }

    def _put(self, body: dict[str, Any]) -> None:
        result = self.relay.put_device(self._bearer(), body)
        if isinstance(result, ProofRequired):
            self.pending_proofs[body["token"]] = body
            self._note(Happened.PROOF_REQUIRED, kind=body["kind"], deviceId=result.device_id)
            return
        self._registered(body, result)

    def _registered(self, body: Mapping[str, Any], result: Registered) -> None:
        kind = str(body["kind"])
        self.registrations[kind] = Registration(str(body["token"]), result.device_id)
        key = body.get("key")
        if isinstance(key, str) and result.key_expires_at is not None:
            self.keys.persist_key(key, result.key_expires_at)
            self._note(Happened.KEY_UPLOADED, deviceId=result.device_id,
                       keyExpiresAt=result.key_expires_at.isoformat())  # fmt: skip
        else:
            detail: dict[str, Any] = {"kind": kind, "deviceId": result.device_id}
            if kind == "alert":  # pushrelay keeps the stored key unless "key" is null
                detail["key"] = "removed" if "key" in body else "kept"
            self._note(Happened.REGISTERED, **detail)

    def _complete_proof(self, token: str, code: str) -> None:
        body = self.pending_proofs.pop(token, None)
        if body is None or self.subject is None:
            return  # no registration waiting for this token (an old or stray code)
        try:
            result = self.relay.put_device(self._bearer(), {**body, "tokenProof": code})
        except RelayError as exc:
            if exc.status != 403:
                raise
            # The next launch registers again and gets a new challenge.
            self._note(Happened.PROOF_REFUSED, kind=body["kind"], error=exc.body)
            return
        if isinstance(result, Registered):
            self._note(Happened.PROOF_COMPLETED, kind=body["kind"], deviceId=result.device_id)
            self._registered(body, result)
            if body["kind"] == "alert" and self.calls_enabled and "voip" not in self.registrations:
                self.voip_token_received(self.voip_token)  # the PushKit token follows now

    def _delete(self, registration: Registration) -> None:
        removed = self.relay.delete_device(self._bearer(), registration.device_id)
        for kind, known in list(self.registrations.items()):
            if known == registration:
                del self.registrations[kind]
        self._note(Happened.DEREGISTERED, deviceId=registration.device_id, removed=removed)

    def _note(self, what: Happened, **detail: Any) -> None:
        self.events.append(DeviceEvent(what, self.clock(), detail))


def _string(value: Any) -> str | None:
    return value if isinstance(value, str) else None

"""Moving a device token that another user still holds: proof of possession.

A device token names one app on one phone, but it is no secret (apps hand it to analytics and
other push services). If registering it moved it at once, anyone who learnt a phone's token could
take the phone over: its owner's notifications would stop, and the taker's chats and calls would
land on it. So a token another user *still holds* (renewed within ``DEVICE_STALE_DAYS``) moves
only when the caller proves the phone is in their hands:

1. ``PUT /api/devices`` answers **202** ``{"status": "proofRequired", "deviceId", "expiresAt"}``
   and sends the token a background push (``content-available: 1``, priority 5) whose payload
   carries ``{"pushrelay": {"tokenProof": "<code>"}}``. Only the app on that phone sees it.
2. The app repeats the same PUT with ``"tokenProof": "<code>"``: the token moves (200). A wrong,
   expired or used code is 403 ``invalid_token_proof``.

Codes: 16 random bytes (base64url, 22 characters), one live code per token at a time, bound to
the token and the claiming user (a code answers only that user's PUT of that token), stored only
as SHA-256 of (deviceId, claimant, code), live :data:`PROOF_LIFETIME`, single use (voided under
its ETag before the move), void after :data:`MAX_WRONG_PROOFS` wrong codes. Rate: at most
:data:`PROOF_PUSHES_PER_HOUR` proof pushes per token whoever asks (429 ``token_proof_rate_limited``
past it), so nobody can turn this into silent-push spam at a phone; while one user's code is live,
another user's PUT of the token is 429 ``token_proof_pending``. A PUT repeated without the code
while the caller's code is live answers 202 again and sends nothing (the push already carries it).
Proof pushes do not spend the device's renewal budget: a stranger's attempt writes nothing to the
holder's row.

No proof is ever asked of a token nobody holds: an app that deletes its registration on sign-out
(``DELETE /api/devices/{id}``) leaves the token free, and a holder not renewed for
``DEVICE_STALE_DAYS`` no longer counts. When APNs answers the proof push 410 (the token is dead),
the holder's registration is removed and the token moves at once.

**VoIP (PushKit) tokens** cannot carry the code: PushKit delivers only VoIP pushes, and iOS 13 and
later ends an app that does not report each one as a call. A VoIP token another user still holds
moves to a caller who proved, within :data:`PROVEN_MOVE_WINDOW`, possession of an alert token that
*the same user* held for the same app (the phone's alert token: register it first); otherwise 409
``voip_token_held``. What that proves is "the caller holds one of that user's phones", not "this
phone": the remaining exposure is documented in docs/reliability.md.

**When the push is not delivered** (the phone is off or offline, iOS defers or drops background
pushes: Low Power Mode, Background App Refresh off, an app the user force-quit): nothing moves. The
code expires; a PUT after ``expiresAt`` sends a new one (within the hourly budget). Meanwhile the
previous user keeps the token, and it becomes free once they sign out (delete it) or stop renewing
it for ``DEVICE_STALE_DAYS``.

Raises :class:`TokenProofError` (403), :class:`TokenProofPendingError` and
:class:`TokenProofRateLimitedError` (429), :class:`VoipTokenHeldError` (409),
:class:`ProofPushFailedError` (503: APNs did not take the push) and the stores' errors.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import math
import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Final, Protocol

from shared.apns.errors import ApnsError
from shared.apns.notification import Notification, Priority, PushType
from shared.apns.payload import background_payload, encode_payload
from shared.apns.response import PushResult
from shared.domain.devices import Device, DeviceKind
from shared.errors import ConflictError, ForbiddenError, RateLimitedError, TransientError
from shared.push.outcomes import Disposition, classify
from shared.push.pipeline import Pushers, Route, send_all
from shared.storage.devices import DeviceRegistry, Registered, RegistrationOutcome

log = logging.getLogger(__name__)

PROOF_LIFETIME: Final = timedelta(minutes=5)
PROOF_PUSHES_PER_HOUR: Final = 3
MAX_WRONG_PROOFS: Final = 5
PROVEN_MOVE_WINDOW: Final = timedelta(hours=24)
PROOF_PUSH_BUDGET_SECONDS: Final = 5.0  # inside a PUT: one request and a retry at most
CODE_BYTES: Final = 16
_HOUR: Final = timedelta(hours=1)


class TokenProofError(ForbiddenError):
    """The tokenProof is wrong, expired, used, or not this caller's."""

    def __init__(self) -> None:
        super().__init__("invalid_token_proof", field="tokenProof")


class TokenProofPendingError(RateLimitedError):
    """Another user's proof for this token is under way, until its code expires."""

    def __init__(self, retry_after: int) -> None:
        super().__init__("token_proof_pending", retry_after=retry_after)


class TokenProofRateLimitedError(RateLimitedError):
    """This token had its proof pushes for the hour."""

    def __init__(self, retry_after: int) -> None:
        super().__init__("token_proof_rate_limited", retry_after=retry_after)


class VoipTokenHeldError(ConflictError):
    """Another user holds this VoIP token and the caller proved none of their alert tokens."""

    def __init__(self) -> None:
        super().__init__("voip_token_held", field="token")


class ProofPushFailedError(TransientError):
    """APNs did not take the proof push (outage, refusal): 503, try again later."""

    public_reason = "token_proof_push_failed"


@dataclass(frozen=True, slots=True)
class ProofRequired:
    """What ``PUT /api/devices`` answers (202) when the move needs the code from the push."""

    device_id: str
    expires_at: datetime

    @property
    def status(self) -> int:
        """The HTTP status of this answer."""
        return 202

    def as_json(self) -> dict[str, str]:
        """``{"status": "proofRequired", "deviceId", "expiresAt"}``."""
        expires = self.expires_at.isoformat().replace("+00:00", "Z")
        return {"status": "proofRequired", "deviceId": self.device_id, "expiresAt": expires}


@dataclass(frozen=True, slots=True)
class Challenge:
    """The proof state of one token: the live code (hashed), its claimant, recent pushes."""

    device_id: str
    claimant: str = ""  # SHA-256 hex of the claiming user's rawId
    code_hash: str = ""  # "" when no code is live
    expires_at: datetime | None = None
    wrong: int = 0
    sent: tuple[datetime, ...] = ()  # proof pushes of the last hour
    etag: str | None = None

    def live(self, now: datetime) -> bool:
        """Whether a code is live at ``now`` (issued, unexpired, not voided by wrong codes)."""
        return (
            bool(self.code_hash)
            and self.expires_at is not None
            and now < self.expires_at
            and self.wrong < MAX_WRONG_PROOFS
        )


class ProofStore(Protocol):
    """Port: where challenges and proven moves are kept (``shared.storage.token_proofs``)."""

    async def read(self, device_id: str) -> Challenge | None:
        """The token's challenge row, or None."""
        ...

    async def write(self, challenge: Challenge) -> Challenge | None:
        """Create (no ETag) or replace under its ETag; the stored row, or None on a conflict."""
        ...

    async def note_move(self, claimant: str, previous: str, topic: str, at: datetime) -> None:
        """Record that ``claimant`` proved holding a phone of ``previous`` for ``topic``."""
        ...

    async def moved_at(self, claimant: str, previous: str, topic: str) -> datetime | None:
        """When ``claimant`` last proved holding a phone of ``previous`` for ``topic``."""
        ...


def user_key(user_id: str) -> str:
    """SHA-256 hex of a rawId (what the proofs table stores instead of the id)."""
    return hashlib.sha256(user_id.encode()).hexdigest()


def code_hash(device_id: str, claimant_user_id: str, code: str) -> str:
    """SHA-256 hex of (deviceId, claimant, code): a code is good for one token and one user."""
    return hashlib.sha256(f"{device_id}\0{claimant_user_id}\0{code}".encode()).hexdigest()


def new_code(random: Callable[[int], bytes] = os.urandom) -> str:
    """A fresh one-time code: :data:`CODE_BYTES` random bytes, base64url without padding."""
    return base64.urlsafe_b64encode(random(CODE_BYTES)).rstrip(b"=").decode("ascii")


def proof_notification(holder: Device, code: str, now: datetime) -> Notification:
    """The background push carrying ``code`` to the holder's registration of the token; it
    expires with the code, so APNs never delivers a dead one."""
    return Notification(
        device_token=holder.token,
        topic=holder.topic,
        push_type=PushType.BACKGROUND,
        payload=encode_payload(background_payload({"pushrelay": {"tokenProof": code}})),
        priority=Priority.CONSIDERATE,
        expiration=int((now + PROOF_LIFETIME).timestamp()),
    )


def _seconds_until(when: datetime, now: datetime) -> int:
    return max(1, math.ceil((when - now).total_seconds()))


@dataclass(frozen=True, slots=True)
class TokenMoves:
    """Registration with proof of possession for tokens other users hold (see the module doc).

    ``pushers`` is asked for only when a proof push is due, so an ordinary registration builds
    no APNs client.
    """

    proofs: ProofStore
    pushers: Callable[[], Awaitable[Pushers]]
    stale_after: timedelta  # DEVICE_STALE_DAYS: a holder not renewed for this long is gone
    random: Callable[[int], bytes] = os.urandom

    async def register(
        self,
        registry: DeviceRegistry,
        device: Device,
        proof: str | None,
        now: datetime,
        *,
        keep_key: bool = False,
    ) -> Registered | ProofRequired:
        """Register ``device``; a token another user still holds needs ``proof``.

        ``keep_key`` as for ``DeviceRegistry.register`` (a renewal keeps the stored key).
        Raises the errors listed in the module doc.
        """
        held_since = now - self.stale_after
        result = await registry.register(device, keep_key=keep_key, held_since=held_since)
        if result.outcome is not RegistrationOutcome.HELD or result.holder is None:
            return result
        holder = result.holder
        if DeviceKind.VOIP in (holder.kind, device.kind):
            return await self._voip_move(registry, device, holder, now)
        if proof is not None:
            await self._redeem(device, proof, now)
            moved = await registry.register(device)
            await self.proofs.note_move(device.user_id, holder.user_id, holder.topic, now)
            log.info("device %s moved to another user with proof of possession", device.device_id)
            return moved
        return await self._challenge(registry, device, holder, now)

    async def _voip_move(
        self, registry: DeviceRegistry, device: Device, holder: Device, now: datetime
    ) -> Registered:
        proven = await self.proofs.moved_at(device.user_id, holder.user_id, holder.topic)
        if proven is None or now - proven > PROVEN_MOVE_WINDOW:
            log.info("VoIP token of device %s held by another user: refused", device.device_id)
            raise VoipTokenHeldError()
        log.info("VoIP device %s moved after its user's proven alert move", device.device_id)
        return await registry.register(device)

    async def _redeem(self, device: Device, proof: str, now: datetime) -> None:
        """Use up the caller's live code if ``proof`` is it; raises TokenProofError if not."""
        challenge = await self.proofs.read(device.device_id)
        mine = challenge is not None and challenge.claimant == user_key(device.user_id)
        if challenge is None or not mine or not challenge.live(now):
            raise TokenProofError()
        expected = code_hash(device.device_id, device.user_id, proof)
        if not hmac.compare_digest(challenge.code_hash, expected):
            await self.proofs.write(replace(challenge, wrong=challenge.wrong + 1))
            log.warning("wrong token proof for device %s", device.device_id)
            raise TokenProofError()
        # Single use: the code is voided under the row's ETag, so of two redeemers one wins. (A
        # delete would not do: the Tables SDK reports deleting a row already gone as success.)
        used = replace(challenge, code_hash="", expires_at=now)
        if await self.proofs.write(used) is None:
            raise TokenProofError()

    async def _challenge(
        self, registry: DeviceRegistry, device: Device, holder: Device, now: datetime
    ) -> Registered | ProofRequired:
        current = await self.proofs.read(device.device_id)
        claimant = user_key(device.user_id)
        if current is not None and current.live(now) and current.expires_at is not None:
            if current.claimant == claimant:
                return ProofRequired(device.device_id, current.expires_at)
            raise TokenProofPendingError(_seconds_until(current.expires_at, now))
        sent = _recent(current.sent if current else (), now)
        if len(sent) >= PROOF_PUSHES_PER_HOUR:
            raise TokenProofRateLimitedError(_seconds_until(sent[0] + _HOUR, now))
        code = new_code(self.random)
        issued = Challenge(
            device.device_id,
            claimant,
            code_hash(device.device_id, device.user_id, code),
            now + PROOF_LIFETIME,
            sent=(*sent, now),
            etag=current.etag if current else None,
        )
        # Stored before the push: the app may answer before this request does.
        written = await self.proofs.write(issued)
        if written is None:
            raise TokenProofPendingError(1)
        return await self._push(registry, device, holder, written, code=code, now=now)

    async def _push(
        self,
        registry: DeviceRegistry,
        device: Device,
        holder: Device,
        issued: Challenge,
        *,
        code: str,
        now: datetime,
    ) -> Registered | ProofRequired:
        """Send the code to the holder's registration; 202 once APNs took it."""
        answer = await self._send(holder, proof_notification(holder, code, now))
        disposition = classify(answer)
        if disposition is Disposition.DELIVERED:
            log.info("token proof pushed to device %s", device.device_id)
            return ProofRequired(device.device_id, issued.expires_at or now + PROOF_LIFETIME)
        # Not delivered: void the code (keep the push count) so the next PUT starts afresh.
        await self.proofs.write(replace(issued, code_hash="", expires_at=now))
        if disposition is Disposition.UNREGISTERED:
            when = answer.unregistered_at if isinstance(answer, PushResult) else None
            gone = await registry.remove_if_registered_before(
                holder.user_id, holder.device_id, when or now
            )
            if gone is not None:
                log.info("device %s: proof push found the token dead, moving it", device.device_id)
                moved = await registry.register(device, held_since=now - self.stale_after)
                if moved.outcome is not RegistrationOutcome.HELD:
                    return moved
        log.warning("token proof push to device %s failed: %s", device.device_id, disposition)
        raise ProofPushFailedError(f"proof push not taken by APNs ({disposition})")

    async def _send(self, holder: Device, n: Notification) -> PushResult | ApnsError:
        """APNs' answer, or the error that kept the push from being sent (raises nothing)."""
        try:
            pushers = await self.pushers()
        except ApnsError as exc:  # unusable APNS_APPS credentials: nothing can be pushed
            log.error("no APNs client for the token proof push: %s", exc)
            return exc
        tag = f"token proof {holder.device_id}"
        (answer,) = await send_all(
            [(Route(holder.topic, holder.environment), n)],
            pushers,
            budget=PROOF_PUSH_BUDGET_SECONDS,
            tag=tag,
        )
        return answer


def _recent(sent: Sequence[datetime], now: datetime) -> tuple[datetime, ...]:
    return tuple(sorted(t for t in sent if now - _HOUR < t <= now))

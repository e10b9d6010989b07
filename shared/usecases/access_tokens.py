"""Use case: give the signed-in caller an ACS user access token for their own ACS identity.

**One ACS identity per caller, even with concurrent first calls, and no identity leaks.** The
identities table holds one row per caller (key = SHA-256 of issuer, NUL, subject). The row is
*reserved first* (``create_entity``: exactly one writer wins the 409 race), and only the holder of
the reservation creates the identity at ACS, then fills the row in (ETag-checked). Everyone
else waits briefly for the row to be filled in and then uses it. So:

- a second identity is never created for a caller whose row exists;
- if ACS creation fails, the holder deletes its reservation at once (the next call retries);
- if the holder dies mid-way, its reservation expires after ``lease`` and another call takes
  it over (ETag-checked, so only one does);
- if a holder whose lease expired finds its row taken over, it deletes the identity it just
  created (it was never handed out) and uses the winner's.

The one leak left: the process dies (or ACS's answer is lost) after ACS created the identity
and before the row is filled in. ACS's stable API has no idempotent create (``customId`` is
preview-only), so that identity is never used, never returned and holds no data.

**Rate limit** (``TOKEN_RATE_LIMIT_PER_MINUTE``): a token bucket per caller kept *in the caller's
identity row* (ETag-checked), so it is shared by every instance, at the price of one write per
token.

**Storage round trips.** A ready row changes only when a token is issued to its caller, so each
process remembers the rows it last read or wrote (:class:`KnownIdentities`, bounded): the next
request of the same caller writes the bucket under the remembered ETag at once. Per token
request: 1 (the bucket write) when this process has seen the caller; 2 (read, bucket write) when
it has not, or when another instance issued the caller a token meanwhile (the stale ETag costs
the failed write, a read and the write: 3); 4 on the caller's very first call (read, reserve,
fill in, bucket write).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Final, Protocol

from shared.domain.callers import Caller
from shared.errors import PushRelayError, RateLimitedError, TransientError

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
Sleep = Callable[[float], Awaitable[None]]

DEFAULT_LEASE: Final = timedelta(seconds=60)
WAIT_DELAYS: Final = (0.05, 0.1, 0.2, 0.4, 0.8, 1.6)
# Each conflict means another request of the same caller took a token, so this bounds how many
# of one caller's requests may race; past it the caller is clearly over any sane rate.
MAX_BUCKET_CONFLICTS: Final = 10


@dataclass(frozen=True, slots=True)
class IdentityRecord:
    """The identities row of one caller: reserved (no ACS id yet) or ready."""

    caller_key: str
    acs_user_id: str | None
    reserved_at: datetime
    etag: str
    rate_tokens: float | None = None  # token bucket level; None: full
    rate_at: datetime | None = None


class KnownIdentities:
    """The identities rows this process last read or wrote, by caller key (at most ``limit``).

    Only ready rows are kept. A remembered row may be stale (another instance wrote it): every
    write made from it is ETag-checked, so staleness costs a re-read, never a wrong answer.
    """

    def __init__(self, limit: int = 10_000) -> None:
        self._records: dict[str, IdentityRecord] = {}
        self._limit = limit

    def get(self, caller_key: str) -> IdentityRecord | None:
        """The remembered ready row of this caller, or None."""
        return self._records.get(caller_key)

    def remember(self, record: IdentityRecord) -> None:
        """Keep ``record`` if it is ready; the oldest entry goes when full."""
        if record.acs_user_id is None:
            return
        self._records.pop(record.caller_key, None)
        if len(self._records) >= self._limit:
            del self._records[next(iter(self._records))]
        self._records[record.caller_key] = record

    def forget(self, caller_key: str) -> None:
        """Drop the remembered row of this caller."""
        self._records.pop(caller_key, None)


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """What ``POST /api/token`` answers (field names of the ACS auto-renew sample)."""

    acs_user_id: str
    acs_endpoint: str
    user_token: str
    expires_on: str

    def as_json(self) -> dict[str, str]:
        """``{acsUserId, acsEndpoint, userToken, expiresOn}``."""
        return {
            "acsUserId": self.acs_user_id,
            "acsEndpoint": self.acs_endpoint,
            "userToken": self.user_token,
            "expiresOn": self.expires_on,
        }


@dataclass(frozen=True, slots=True)
class TokenPolicy:
    """Scopes, lifetime (60-1440 minutes) and per-caller rate of issued tokens."""

    scopes: tuple[str, ...]
    lifetime_minutes: int
    per_minute: int  # 0 or less: no limit


class IdentityStore(Protocol):
    """The identities table (``shared.storage.identities``); conflicts answer None/False."""

    async def get(self, caller_key: str) -> IdentityRecord | None:
        """The caller's row, or None."""
        ...

    async def reserve(self, caller_key: str, now: datetime) -> IdentityRecord | None:
        """Create a reserved row; None if a row already exists."""
        ...

    async def take_over(self, record: IdentityRecord, now: datetime) -> IdentityRecord | None:
        """Renew an expired reservation as ours; None if the row changed meanwhile."""
        ...

    async def fill_in(self, record: IdentityRecord, acs_user_id: str) -> IdentityRecord | None:
        """Record the ACS identity on our reservation; None if the row changed meanwhile."""
        ...

    async def release(self, record: IdentityRecord) -> None:
        """Delete our reservation unless it changed meanwhile."""
        ...

    async def save_rate(
        self, record: IdentityRecord, tokens: float, at: datetime
    ) -> IdentityRecord | None:
        """Store the token bucket level; None if the row changed meanwhile."""
        ...


class AcsIdentities(Protocol):
    """The ACS Identity API (``shared.acs.identity.AcsIdentityClient``)."""

    endpoint: str

    async def create_identity(self) -> str:
        """Create an identity; its rawId."""
        ...

    async def issue_token(self, user_id: str, scopes: Sequence[str], minutes: int) -> _Token:
        """Issue a token for the identity."""
        ...

    async def delete_identity(self, user_id: str) -> None:
        """Delete the identity."""
        ...


class _Token(Protocol):
    @property
    def token(self) -> str: ...

    @property
    def expires_on(self) -> str: ...


class IdentityPendingError(TransientError):
    """Another request is creating this caller's identity and has not finished: retry (503)."""

    public_reason = "identity_pending"


class TokenRateLimitedError(RateLimitedError):
    """The caller asked for tokens too often."""

    def __init__(self, retry_after: int) -> None:
        super().__init__("rate_limited", retry_after=retry_after)


def _utcnow() -> datetime:
    return datetime.now(UTC)


async def acs_user_for(
    caller: Caller,
    identities: IdentityStore,
    acs: AcsIdentities,
    *,
    clock: Clock = _utcnow,
    sleep: Sleep = asyncio.sleep,
    lease: timedelta = DEFAULT_LEASE,
    known: KnownIdentities | None = None,
) -> str:
    """The caller's ACS rawId, created on first use; exactly one per caller.

    With ``known``, a caller this process has seen costs no storage round trip (a ready row's
    ACS identity never changes). Raises IdentityPendingError (503) when a concurrent first call
    has not finished in time, and the store's or ACS's errors (TransientError subclasses, or
    502-mapped refusals).
    """
    remembered = known.get(caller.key) if known is not None else None
    if remembered is not None and remembered.acs_user_id is not None:
        return remembered.acs_user_id
    record, user_id = await _ready_record(
        caller.key, identities, acs, clock=clock, sleep=sleep, lease=lease
    )
    if known is not None:
        known.remember(record)
    return user_id


async def issue_token(
    caller: Caller,
    identities: IdentityStore,
    acs: AcsIdentities,
    policy: TokenPolicy,
    *,
    clock: Clock = _utcnow,
    sleep: Sleep = asyncio.sleep,
    lease: timedelta = DEFAULT_LEASE,
    known: KnownIdentities | None = None,
) -> IssuedToken:
    """Issue an ACS token for the caller's own identity (created on first use).

    ``known``: rows this process remembers (see the module docstring: one round trip instead of
    two). Raises TokenRateLimitedError (429), IdentityPendingError (503), and the store's or ACS's
    errors.
    """
    record = known.get(caller.key) if known is not None else None
    if record is None:
        record, _ = await _ready_record(
            caller.key, identities, acs, clock=clock, sleep=sleep, lease=lease
        )
    if policy.per_minute > 0:
        saved = await _consume_rate(record, identities, policy.per_minute, clock)
        if saved is None or saved.acs_user_id is None:
            # The row vanished or was re-created since it was read: start over on the next call.
            if known is not None:
                known.forget(caller.key)
            raise IdentityPendingError("the caller's identity row changed; retry")
        record = saved
    if known is not None:
        known.remember(record)
    user_id = record.acs_user_id
    if user_id is None:
        raise IdentityPendingError("the caller's ACS identity is still being created")
    token = await acs.issue_token(user_id, policy.scopes, policy.lifetime_minutes)
    log.info("issued ACS token to caller %s… (%s)", caller.key[:12], caller.source)
    return IssuedToken(user_id, acs.endpoint, token.token, token.expires_on)


async def _ready_record(
    key: str,
    identities: IdentityStore,
    acs: AcsIdentities,
    *,
    clock: Clock,
    sleep: Sleep,
    lease: timedelta,
) -> tuple[IdentityRecord, str]:
    record = await identities.get(key)
    for delay in (*WAIT_DELAYS, None):
        if record is not None and record.acs_user_id is not None:
            return record, record.acs_user_id
        mine = await _claim(key, record, identities, clock, lease)
        if mine is not None:
            return await _create(mine, identities, acs)
        if record is not None and delay is not None:
            await sleep(delay)
        record = await identities.get(key)
    if record is not None and record.acs_user_id is not None:
        return record, record.acs_user_id
    log.warning("identity of caller %s… still being created elsewhere", key[:12])
    raise IdentityPendingError("the caller's ACS identity is still being created")


async def _claim(
    key: str,
    record: IdentityRecord | None,
    identities: IdentityStore,
    clock: Clock,
    lease: timedelta,
) -> IdentityRecord | None:
    """Our reservation (a new one, or an expired one taken over), or None."""
    now = clock()
    if record is None:
        return await identities.reserve(key, now)
    if now - record.reserved_at >= lease:
        log.warning("taking over an expired identity reservation of %s…", key[:12])
        return await identities.take_over(record, now)
    return None


async def _create(
    mine: IdentityRecord, identities: IdentityStore, acs: AcsIdentities
) -> tuple[IdentityRecord, str]:
    try:
        raw_id = await acs.create_identity()
    except PushRelayError:
        await _quietly(identities.release(mine), "release reservation")
        raise
    filled = await identities.fill_in(mine, raw_id)
    if filled is not None:
        log.info("created ACS identity for caller %s…", mine.caller_key[:12])
        return filled, raw_id
    # Our lease expired and another call took over: the identity we made was never handed out.
    await _quietly(acs.delete_identity(raw_id), "delete superseded identity")
    winner = await identities.get(mine.caller_key)
    if winner is not None and winner.acs_user_id is not None:
        return winner, winner.acs_user_id
    raise IdentityPendingError("the caller's ACS identity is still being created")


async def _quietly(step: Awaitable[None], what: str) -> None:
    try:
        await step
    except PushRelayError as exc:
        log.warning("could not %s: %s", what, type(exc).__name__)


async def _consume_rate(
    record: IdentityRecord, identities: IdentityStore, per_minute: int, clock: Clock
) -> IdentityRecord | None:
    """Take one token from the caller's bucket: the row as written, or None if it vanished.

    ``record`` may be stale (remembered): a failed ETag check re-reads the row. Raises
    TokenRateLimitedError when the bucket is empty or the row kept changing.
    """
    rate = per_minute / 60.0
    current: IdentityRecord | None = record
    for _ in range(MAX_BUCKET_CONFLICTS):
        if current is None:
            return None
        now = clock()
        level = _level(current, per_minute, rate, now)
        if level < 1.0:
            raise TokenRateLimitedError(max(1, math.ceil((1.0 - level) / rate)))
        saved = await identities.save_rate(current, level - 1.0, now)
        if saved is not None:
            return saved
        current = await identities.get(record.caller_key)
    raise TokenRateLimitedError(1)


def _level(record: IdentityRecord, capacity: int, rate: float, now: datetime) -> float:
    if record.rate_tokens is None or record.rate_at is None:
        return float(capacity)
    elapsed = max(0.0, (now - record.rate_at).total_seconds())
    return min(float(capacity), record.rate_tokens + elapsed * rate)


def with_rate(record: IdentityRecord, tokens: float, at: datetime, etag: str) -> IdentityRecord:
    """``record`` after a bucket write (for stores)."""
    return replace(record, rate_tokens=tokens, rate_at=at, etag=etag)

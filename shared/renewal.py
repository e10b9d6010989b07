"""Use cases: the renewal sweep (schedule → shards) and the worker (shard → background pushes).

A preview key lives 45 minutes; apps hand over a fresh one when they run. Devices whose key falls
due are woken with a silent background push (``{"aps": {"content-available": 1}}``, push type
``background``, priority 5) so the app runs and renews. Apple throttles these (a few per device
per hour; force-quit apps are not woken at all), so every wake is drawn from one per-device
budget that withdraw-on-delete pushes share (:func:`shared.notify.background_budget_allows`).

**Sweep** (timer, :func:`run_sweep`). Reads the renewal schedule from the bucket after the
checkpoint through the bucket holding ``now`` (entries are already written at key expiry minus
``RENEWAL_LEAD_MINUTES``, so this is every device due before the next sweep), never further back
than ``RENEWAL_CATCH_UP_HOURS``: buckets missed while the app was down are caught up, bounded.
The checkpoint (``shared.renewal_sweeps``) is claimed under its ETag with a lease before reading,
so a timer that fires twice reads nothing the second time. Entries are grouped by device (a
device due in several buckets is woken once, from its latest entry) and split into JSON shards
of at most ``RENEWAL_SHARD_SIZE`` devices (fewer when a queue message would be too big), each
carrying what its entries carry: the queue messages. Buckets that have left the catch-up window
get a purge message. The device table is never scanned.

**Worker** (queue, :func:`renew_shard`). An entry carries what the worker needs
(:class:`~shared.renewal_schedule.EntryState`: token, topic, environment, budget, and the
device's ETag when that was true), so a device is not read on the common path:

1. decide on the carried state: over budget → a later entry; too many unanswered wakes → mark
   stale (under the ETag); otherwise
2. *claim* the wake: write the push into the device's budget under the carried ETag (one round
   trip). If the device changed since (it renewed, got a withdraw push, was removed), the write
   fails: read it, skip it if it renewed after the entry was written (or is gone or stale), else
   decide again on what was read. A second delivery of the shard loses the same way and finds
   the budget spent, so no device is pushed twice;
3. push, and settle the outcomes as chat push does (``shared.outcomes``: 410 removes, bad tokens
   count, configuration errors delete nothing); a wake without an answer (429, 5xx, timeouts)
   gives its budget back and is retried in the next bucket;
4. write each device's next entry, carrying its new state, at the earliest time its budget
   allows: devices handled together are due together, so the entries share a bucket partition
   and go out in one transaction per 100 — one batched write per device.

After ``RENEWAL_STALE_AFTER`` unanswered wakes a device is marked stale and leaves the schedule
(its chat pushes continue, with the generic text, until the app runs and registers again).

**Renewal rate.** Each wake records its sweep on the device. When the device's next entry finds
it renewed since (it is read then: its ETag changed), the sweep is credited;
``devtools/renewal_rate.py`` prints woken, renewed and the rate per sweep.

Storage errors propagate (``TransientError``: the queue redelivers the shard, which is safe).
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Final, Protocol, TypeVar

from shared.apns.errors import ApnsError, NotificationError
from shared.apns.notification import Environment, Notification, Priority, PushType
from shared.apns.payload import background_payload, encode_payload
from shared.apns.response import PushResult
from shared.deliveries import DeliveryState
from shared.devices import Device, DeviceKind, Guarded
from shared.errors import InputError, TransientError
from shared.notify import Pushers, background_budget_allows
from shared.outcomes import Attempt, ConfigAlarm, DeviceOutcomes, settle
from shared.renewal_schedule import (
    BUCKET_MINUTES,
    EntryState,
    RenewalSchedule,
    ScheduleEntry,
    bucket_for,
    bucket_start,
    due_at,
)
from shared.renewal_sweeps import Checkpoint, ShardReport, SweepRecord
from shared.settings import Settings

log = logging.getLogger(__name__)

SHARD_VERSION: Final = 1
MAX_MESSAGE_BYTES: Final = 45_000  # a queue message is 64 KiB once base64-encoded
CLAIM_ATTEMPTS: Final = 3
CONCURRENCY: Final = 32  # devices of one shard in flight at once (aiohttp pools 100 connections)
PURGE_LOOKBACK: Final = timedelta(hours=24)  # how far below the window a purge looks at most
HOUR: Final = timedelta(hours=1)
BUCKET: Final = timedelta(minutes=BUCKET_MINUTES)
T = TypeVar("T")


class MalformedShardError(InputError):
    """A queue message that is not a shard this module wrote (acknowledged, never retried)."""


@dataclass(frozen=True, slots=True)
class RenewalRules:
    """The renewal settings the use cases need."""

    lead: timedelta
    max_per_hour: int
    min_spacing: timedelta
    stale_after: int
    shard_size: int
    catch_up: timedelta
    send_budget: float
    bad_token_remove_after: int
    config_error_threshold: int
    sweep_lease: timedelta = timedelta(minutes=5)

    @classmethod
    def from_settings(cls, s: Settings) -> RenewalRules:
        """The rules as configured (``RENEWAL_*``, the APNs retry budget, outcome thresholds)."""
        return cls(
            lead=timedelta(minutes=s.renewal_lead_minutes),
            max_per_hour=s.renewal_max_per_hour,
            min_spacing=timedelta(minutes=s.renewal_min_spacing_minutes),
            stale_after=s.renewal_stale_after,
            shard_size=s.renewal_shard_size,
            catch_up=timedelta(hours=s.renewal_catch_up_hours),
            send_budget=s.apns_retry_budget_seconds,
            bad_token_remove_after=s.bad_token_remove_after,
            config_error_threshold=s.config_error_threshold,
        )

    @property
    def push_expiration(self) -> timedelta:
        """How long APNs may hold a wake for an offline device: until the key would expire."""
        return self.lead


# --- ports ----------------------------------------------------------------------------------------


class RenewalDevices(DeviceOutcomes, Protocol):
    """Port: the registry operations renewal needs (``shared.devices.DeviceStore``)."""

    async def get(self, user_id: str, device_id: str) -> Device | None:
        """One device, or None."""
        ...

    async def claim_wake(
        self,
        user_id: str,
        device_id: str,
        etag: str,
        *,
        sent: Sequence[datetime],
        unanswered_wakes: int,
        wake_at: datetime | None,
        wake_sweep: str | None,
    ) -> Guarded:
        """Record renewal pushes under ``etag``; nothing is written if it changed or is gone."""
        ...

    async def mark_stale(self, user_id: str, device_id: str, etag: str | None = None) -> bool:
        """Stop waking the device; False if it is gone (or changed since ``etag``)."""
        ...


class SweepLog(Protocol):
    """Port: the checkpoint and per-sweep records (``shared.renewal_sweeps.TableSweepLog``)."""

    async def checkpoint(self) -> Checkpoint:
        """The checkpoint (empty before the first sweep)."""
        ...

    async def claim(
        self, seen: Checkpoint, through: str, lease_until: datetime
    ) -> Checkpoint | None:
        """Claim buckets through ``through`` under ``seen``'s ETag; None if another sweep won."""
        ...

    async def finish(self, claimed: Checkpoint, record: SweepRecord) -> bool:
        """Move the checkpoint and store the sweep's record; False if the claim was lost."""
        ...

    async def record_shard(self, report: ShardReport, renewed: Mapping[str, Sequence[str]]) -> None:
        """Store a shard's report and credit renewals (sweep id -> deviceIds)."""
        ...


# --- budget and decisions (pure) ------------------------------------------------------------------


def next_background_at(
    sent: Sequence[datetime], now: datetime, *, max_per_hour: int, min_spacing: timedelta
) -> datetime:
    """The earliest time at or after ``now`` when the budget allows one more background push.

    The inverse of :func:`shared.notify.background_budget_allows`: at most ``max_per_hour`` in
    any hour and ``min_spacing`` between two.
    """
    recent = sorted(t for t in sent if now - HOUR < t <= now)
    candidates = [now]
    if recent:
        candidates.append(recent[-1] + min_spacing)
    if len(recent) >= max_per_hour:
        candidates.append(recent[-max_per_hour] + HOUR)
    return max(candidates)


class Decision(enum.StrEnum):
    """What the worker does with one device of a shard."""

    WAKE = "wake"  # due, within budget: push
    LATER = "later"  # due, over budget: scheduled for when the budget allows
    RENEWED = "renewed"  # the app renewed by itself since the entry was written: skip
    MARK_STALE = "mark_stale"  # too many unanswered wakes: mark stale, stop waking
    STALE = "stale"  # already stale: skip
    UNSCHEDULED = "unscheduled"  # no key to keep fresh (VoIP, or no key): skip
    GONE = "gone"  # removed since: skip


def decide_state(state: EntryState, now: datetime, rules: RenewalRules) -> Decision:
    """Decide on what an entry carries (true of the device while its ETag is unchanged)."""
    if state.wakes >= rules.stale_after:
        return Decision.MARK_STALE
    allowed = background_budget_allows(
        state.sent, now, max_per_hour=rules.max_per_hour, min_spacing=rules.min_spacing
    )
    return Decision.WAKE if allowed else Decision.LATER


def renewed_since(
    device: Device, entry_at: datetime | None, due_bucket: str, lead: timedelta
) -> bool:
    """Whether the device renewed its key by itself after its entry was written.

    Its key must now fall due in a later bucket: a re-registration without a key keeps the old
    key (and its due time) while moving ``renewed_at``, and must not cancel the wake. ``entry_at``
    is when the entry's state was taken (None for an entry without state).
    """
    expires = device.key_expires_at
    if expires is None or bucket_for(due_at(expires, lead)) <= due_bucket:
        return False
    return entry_at is None or device.renewed_at > entry_at


def decide(
    device: Device | None,
    due_bucket: str,
    now: datetime,
    rules: RenewalRules,
    entry_at: datetime | None = None,
) -> Decision:
    """Decide for a device read at ``now`` from an entry in ``due_bucket`` written at
    ``entry_at`` (None: an entry without state)."""
    if device is None:
        return Decision.GONE
    if device.kind is not DeviceKind.ALERT or device.key_expires_at is None:
        return Decision.UNSCHEDULED
    if device.stale:
        return Decision.STALE
    if renewed_since(device, entry_at, due_bucket, rules.lead):
        return Decision.RENEWED
    if device.unanswered_wakes >= rules.stale_after:
        return Decision.MARK_STALE
    if not background_budget_allows(
        device.background_sent, now, max_per_hour=rules.max_per_hour, min_spacing=rules.min_spacing
    ):
        return Decision.LATER
    return Decision.WAKE


def renewal_credit(device: Device | None, sweep_id: str) -> str | None:
    """The earlier sweep whose wake this device answered (it renewed after it), if any."""
    if device is None or device.wake_sweep is None or device.wake_at is None:
        return None
    if device.wake_sweep == sweep_id or device.renewed_at <= device.wake_at:
        return None
    return device.wake_sweep


def woken(state: EntryState, now: datetime, sweep_id: str) -> EntryState:
    """The state after a wake at ``now`` by sweep ``sweep_id`` (ETag still the old one)."""
    return replace(
        state,
        at=now,
        sent=(*[t for t in state.sent if t > now - HOUR], now),
        wakes=state.wakes + 1,
        wake_at=now,
        wake_sweep=sweep_id,
    )


def wake_notification(state: EntryState, now: datetime, rules: RenewalRules) -> Notification:
    """The silent push that wakes the app: background, priority 5, expiring with the key."""
    return Notification(
        device_token=state.token,
        topic=state.topic,
        push_type=PushType.BACKGROUND,
        payload=encode_payload(background_payload()),
        priority=Priority.CONSIDERATE,
        expiration=int((now + rules.push_expiration).timestamp()),
    )


def next_bucket_start(now: datetime) -> datetime:
    """The start of the bucket after the one holding ``now`` (already swept by then)."""
    return bucket_start(bucket_for(now)) + BUCKET


# --- shards ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ShardItem:
    """One device of a shard: the buckets it was found in and what its latest entry carries."""

    user_id: str
    device_id: str
    buckets: tuple[str, ...]
    state: EntryState | None = None

    @property
    def due_bucket(self) -> str:
        """The latest bucket the device was due in (the one that decides)."""
        return max(self.buckets)


def _state_json(s: EntryState | None) -> list[object] | None:
    if s is None:
        return None
    wake_at = s.wake_at.isoformat() if s.wake_at else None
    sent = [t.isoformat() for t in s.sent]
    result_at = s.last_result_at.isoformat() if s.last_result_at else None
    return [s.token, s.topic, s.environment, s.etag, s.at.isoformat(), sent, s.wakes, wake_at,
            s.wake_sweep, s.bad_tokens, s.last_result, result_at]  # fmt: skip


def _state_from(v: object) -> EntryState | None:
    if v is None:
        return None
    # 9 fields: a shard queued before entries carried the settling state (still in flight).
    if not isinstance(v, list) or len(v) not in (9, 12):
        raise TypeError("not an entry state")
    token, topic, env, etag, at, sent, wakes, wake_at, sweep = v[:9]
    bad_tokens, last_result, result_at = v[9:] if len(v) == 12 else (0, None, None)
    return EntryState(
        token=str(token),
        topic=str(topic),
        environment=Environment(env).value,
        etag=str(etag),
        at=datetime.fromisoformat(at),
        sent=tuple(datetime.fromisoformat(t) for t in sent),
        wakes=int(wakes),
        wake_at=datetime.fromisoformat(wake_at) if wake_at else None,
        wake_sweep=str(sweep) if sweep else None,
        bad_tokens=int(bad_tokens),
        last_result=str(last_result) if last_result else None,
        last_result_at=datetime.fromisoformat(result_at) if result_at else None,
    )


@dataclass(frozen=True, slots=True)
class Shard:
    """One queue message: devices of one sweep for one worker invocation, or a bucket to purge."""

    sweep_id: str
    index: int
    items: tuple[ShardItem, ...] = ()
    purge: str | None = None

    def to_json(self) -> str:
        """The message body (compact JSON)."""
        body: dict[str, object] = {"v": SHARD_VERSION, "sweep": self.sweep_id, "shard": self.index}
        if self.purge is not None:
            body["purge"] = self.purge
        else:
            body["devices"] = [
                [i.user_id, i.device_id, list(i.buckets), _state_json(i.state)] for i in self.items
            ]
        return json.dumps(body, separators=(",", ":"))


def parse_shard(body: bytes | str) -> Shard:
    """Read a queue message. Raises MalformedShardError for anything :meth:`Shard.to_json` did
    not write."""
    try:
        data = json.loads(body)
        if data["v"] != SHARD_VERSION:
            raise MalformedShardError(f"unknown shard version {data['v']!r}")
        if "purge" in data:
            bucket_start(str(data["purge"]))
            return Shard(str(data["sweep"]), int(data["shard"]), purge=str(data["purge"]))
        items = tuple(
            ShardItem(str(u), str(d), tuple(str(b) for b in buckets), _state_from(state))
            for u, d, buckets, state in data["devices"]
        )
        for item in items:
            bucket_start(item.due_bucket)
    except (ValueError, KeyError, TypeError) as exc:
        raise MalformedShardError(f"not a renewal shard: {type(exc).__name__}") from exc
    return Shard(str(data["sweep"]), int(data["shard"]), items)


def group_entries(entries: Iterable[ScheduleEntry]) -> list[ShardItem]:
    """One item per device (a device due in several buckets is woken once), in entry order.

    The item carries the state of its latest entry: an older one was superseded by it.
    """
    latest: dict[tuple[str, str], ScheduleEntry] = {}
    buckets: dict[tuple[str, str], set[str]] = {}
    for e in entries:
        key = (e.user_id, e.device_id)
        buckets.setdefault(key, set()).add(e.bucket)
        if key not in latest or e.bucket >= latest[key].bucket:
            latest[key] = e
    return [
        ShardItem(u, d, tuple(sorted(buckets[(u, d)])), e.state) for (u, d), e in latest.items()
    ]


def split_shards(sweep_id: str, items: Sequence[ShardItem], size: int) -> list[Shard]:
    """Shards of at most ``size`` devices, halved further while a message would be too big."""
    chunks = [list(items[i : i + size]) for i in range(0, len(items), size)]
    shards: list[Shard] = []
    while chunks:
        chunk = chunks.pop(0)
        shard = Shard(sweep_id, len(shards), tuple(chunk))
        if len(chunk) > 1 and len(shard.to_json().encode()) > MAX_MESSAGE_BYTES:
            half = len(chunk) // 2
            chunks[:0] = [chunk[:half], chunk[half:]]
            continue
        shards.append(shard)
    return shards


# --- the sweep ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SweepResult:
    """What a sweep did: the queue messages to send, and why it sent none if so."""

    sweep_id: str | None
    messages: tuple[str, ...] = ()
    devices: int = 0
    from_bucket: str | None = None
    note: str = ""


def sweep_range(checkpoint: Checkpoint, now: datetime, rules: RenewalRules) -> tuple[str, str]:
    """The buckets to read: after the checkpoint (at most ``catch_up`` back) through ``now``'s."""
    floor = bucket_for(now - rules.catch_up)
    start = floor
    if checkpoint.done is not None:
        start = max(floor, bucket_for(bucket_start(checkpoint.done) + BUCKET))
    return start, bucket_for(now)


def purge_buckets(checkpoint: Checkpoint, now: datetime, rules: RenewalRules) -> list[str]:
    """Buckets that left the catch-up window since the last sweep: never read again.

    At most ``PURGE_LOOKBACK`` of them after a long outage (older ones are left behind).
    """
    if checkpoint.done is None:
        return []
    floor = bucket_start(bucket_for(now - rules.catch_up))
    previous = bucket_start(bucket_for(bucket_start(checkpoint.done) - rules.catch_up))
    start = max(previous, floor - PURGE_LOOKBACK)
    count = int((floor - start) / BUCKET)
    return [bucket_for(start + i * BUCKET) for i in range(count)]


async def run_sweep(
    *, schedule: RenewalSchedule, sweeps: SweepLog, now: datetime, rules: RenewalRules
) -> SweepResult:
    """Read the due buckets once and return them as shard messages for the renewal queue.

    Raises StorageUnavailableError (the timer fires again; the claim's lease lets it redo).
    """
    seen = await sweeps.checkpoint()
    if seen.in_progress(now):
        log.info("renewal sweep skipped: buckets through %s are being swept", seen.claimed)
        return SweepResult(None, note="in progress")
    start, end = sweep_range(seen, now, rules)
    if start > end:
        log.info("renewal sweep skipped: buckets through %s already swept", seen.done)
        return SweepResult(None, note="already swept")
    claimed = await sweeps.claim(seen, end, now + rules.sweep_lease)
    if claimed is None:
        log.info("renewal sweep skipped: another sweep claimed buckets through %s", end)
        return SweepResult(None, note="claimed elsewhere")
    items = group_entries(await schedule.read_due(start, end))
    shards = split_shards(end, items, rules.shard_size)
    devices = len(items)
    old_buckets = purge_buckets(seen, now, rules)
    purges = [Shard(end, len(shards) + n, purge=b) for n, b in enumerate(old_buckets)]
    record = SweepRecord(end, now, start, end, devices, len(shards))
    if not await sweeps.finish(claimed, record):
        return SweepResult(None, note="claim lost")
    log.info(
        "renewal sweep %s: buckets %s..%s, %d devices in %d shards, %d buckets to purge",
        end, start, end, devices, len(shards), len(purges),
    )  # fmt: skip
    messages = tuple(s.to_json() for s in (*shards, *purges))
    return SweepResult(end, messages, devices, start)


# --- the worker -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Looked:
    """One device after its decision: what it carries to its next entry (``state``), and for a
    wake what it carried before the claim (to give the budget back)."""

    item: ShardItem
    decision: Decision
    state: EntryState | None
    before: EntryState | None = None
    credit: str | None = None
    soon: bool = False  # try again in the next bucket (no answer from APNs or storage)


async def _bounded(coros: Iterable[Awaitable[T]], limit: int) -> list[T]:
    semaphore = asyncio.Semaphore(limit)

    async def one(c: Awaitable[T]) -> T:
        async with semaphore:
            return await c

    return list(await asyncio.gather(*(one(c) for c in coros)))


def as_device(item: ShardItem, state: EntryState) -> Device:
    """The device as the entry knows it, for settling an APNs answer (``shared.outcomes``)."""
    return Device(
        user_id=item.user_id,
        device_id=item.device_id,
        token=state.token,
        kind=DeviceKind.ALERT,
        topic=state.topic,
        environment=Environment(state.environment),
        registered_at=state.at,
        renewed_at=state.at,
        bad_token_count=state.bad_tokens,
        last_result=state.last_result,
        last_result_at=state.last_result_at,
    )


class _ShardRun:
    """One shard's processing (state kept here so each step stays short)."""

    def __init__(
        self,
        shard: Shard,
        devices: RenewalDevices,
        rules: RenewalRules,
        clock: Callable[[], datetime],
    ) -> None:
        self.shard = shard
        self.devices = devices
        self.rules = rules
        self.now = clock()
        self.tag = f"renewal {shard.sweep_id}/{shard.index}"

    async def look(self, item: ShardItem) -> Looked:
        """Decide and claim; storage that does not answer for one device leaves it for the next
        bucket rather than failing the whole shard (whose other claims would then be lost)."""
        try:
            return await self._look(item)
        except TransientError as exc:
            log.warning(
                "%s: device %s left for the next bucket: %s (%r)",
                self.tag, item.device_id, exc, exc.__cause__,
            )  # fmt: skip
            return Looked(item, Decision.LATER, item.state, soon=True)

    async def _look(self, item: ShardItem) -> Looked:
        """Decide on the carried state and claim; read the device only when that fails."""
        if item.state is not None:
            fast = await self.act(item, item.state)
            if fast is not None:
                return fast
        for _ in range(CLAIM_ATTEMPTS):
            device = await self.devices.get(item.user_id, item.device_id)
            entry_at = item.state.at if item.state is not None else None
            decision = decide(device, item.due_bucket, self.now, self.rules, entry_at)
            credit = renewal_credit(device, self.shard.sweep_id)
            if device is None or device.etag is None or decision in _SKIPPED:
                return Looked(item, decision, None, credit=credit)
            acted = await self.act(item, EntryState.of(device, device.etag, self.now))
            if acted is not None:
                return replace(acted, credit=credit)
        log.info("%s: device %s kept changing; trying it later", self.tag, item.device_id)
        return Looked(item, Decision.LATER, None)

    async def act(self, item: ShardItem, state: EntryState) -> Looked | None:
        """Act on ``state`` under its ETag: None when the device changed (read it)."""
        decision = decide_state(state, self.now, self.rules)
        if decision is Decision.LATER:
            return Looked(item, decision, state)
        user, device_id = item.user_id, item.device_id
        if decision is Decision.MARK_STALE:
            marked = await self.devices.mark_stale(user, device_id, state.etag)
            return Looked(item, decision, None) if marked else None
        after = woken(state, self.now, self.shard.sweep_id)
        claimed = await self.devices.claim_wake(
            user, device_id, state.etag, sent=after.sent, unanswered_wakes=after.wakes,
            wake_at=after.wake_at, wake_sweep=after.wake_sweep,
        )  # fmt: skip
        if claimed.gone:
            return Looked(item, Decision.GONE, None)
        if claimed.etag is None:
            return None
        return Looked(item, decision, replace(after, etag=claimed.etag), before=state)

    async def send(self, state: EntryState, pushers: Pushers) -> PushResult | ApnsError:
        """One wake push; rejections and failures come back as values."""
        pusher = pushers.get(state.topic)
        if pusher is None:
            log.error("%s: no APNs credentials for app %s", self.tag, state.topic)
            return NotificationError("topic", f"no APNs credentials configured for {state.topic}")
        try:
            n = wake_notification(state, self.now, self.rules)
            env = Environment(state.environment)
            return await pusher.send(n, environment=env, budget=self.rules.send_budget)
        except ApnsError as exc:
            return exc

    async def give_back(self, looked: Looked) -> Looked:
        """Undo a wake's budget write after a retryable failure (nothing reached the device)."""
        before, claimed, item = looked.before, looked.state, looked.item
        if before is None or claimed is None:
            return replace(looked, state=None)
        undone = await self.devices.claim_wake(
            item.user_id, item.device_id, claimed.etag, sent=before.sent,
            unanswered_wakes=before.wakes, wake_at=before.wake_at, wake_sweep=before.wake_sweep,
        )  # fmt: skip
        if undone.etag is None:
            log.info("%s: device %s changed; budget not given back", self.tag, item.device_id)
            return replace(looked, state=None, soon=True)
        return replace(looked, state=replace(before, etag=undone.etag, at=self.now), soon=True)

    def next_entry(self, looked: Looked) -> ScheduleEntry | None:
        """The device's next entry, or None (it leaves the schedule)."""
        if looked.decision not in (Decision.WAKE, Decision.LATER):
            return None
        state, r = looked.state, self.rules
        at = next_background_at(
            state.sent if state is not None else (), self.now,
            max_per_hour=r.max_per_hour, min_spacing=r.min_spacing,
        )  # fmt: skip
        at = max(at, next_bucket_start(self.now))
        if looked.soon:
            at = next_bucket_start(self.now)
        return ScheduleEntry(bucket_for(at), looked.item.user_id, looked.item.device_id, state)


_SKIPPED: Final = frozenset({Decision.GONE, Decision.UNSCHEDULED, Decision.STALE, Decision.RENEWED})


async def renew_shard(
    shard: Shard,
    *,
    devices: RenewalDevices,
    schedule: RenewalSchedule,
    sweeps: SweepLog,
    pushers: Pushers,
    rules: RenewalRules,
    clock: Callable[[], datetime],
    alarm: ConfigAlarm | None = None,
) -> ShardReport:
    """Wake the due devices of one shard within their budget; see the module docstring.

    Raises TransientError subclasses when storage does not answer (redelivering is safe).
    """
    if shard.purge is not None:
        return await purge_bucket(shard, schedule)
    run = _ShardRun(shard, devices, rules, clock)
    looked = await _bounded((run.look(i) for i in shard.items), CONCURRENCY)
    wake = [(x, x.state) for x in looked if x.decision is Decision.WAKE and x.state is not None]
    answers = await _bounded((run.send(s, pushers) for _, s in wake), CONCURRENCY)
    settled = await settle(
        [Attempt(x, as_device(x.item, s), a) for (x, s), a in zip(wake, answers, strict=True)],
        devices=devices,
        now=clock(),
        bad_token_remove_after=rules.bad_token_remove_after,
        config_error_threshold=rules.config_error_threshold,
        alarm=alarm,
        correlation=run.tag,
    )
    states = {id(x): o.state for x, o in settled.outcomes}
    released = {id(x) for x in looked if states.get(id(x)) is DeliveryState.RELEASED}
    given_back = await _bounded((run.give_back(x) for x in looked if id(x) in released), 16)
    entries = [run.next_entry(x) for x in looked if id(x) not in released]
    entries += [run.next_entry(x) for x in given_back]
    await schedule.put_many([e for e in entries if e is not None])
    report = _report(shard, looked, states)
    await sweeps.record_shard(report, _credits(looked))
    _log_report(run.tag, report)
    return report


async def purge_bucket(shard: Shard, schedule: RenewalSchedule) -> ShardReport:
    """Delete what is left in a bucket that has left the catch-up window (read once, long ago)."""
    bucket = shard.purge or ""
    entries = await schedule.read_due(bucket, bucket)
    await schedule.remove(entries)
    log.info("renewal purge of bucket %s: %d entries deleted", bucket, len(entries))
    return ShardReport(shard.sweep_id, shard.index, len(entries), {"purged": len(entries)})


def _credits(looked: Sequence[Looked]) -> dict[str, list[str]]:
    credits: dict[str, list[str]] = {}
    for x in looked:
        if x.credit is not None:
            credits.setdefault(x.credit, []).append(x.item.device_id)
    return credits


_COUNTED: Final[Mapping[Decision, str]] = {
    Decision.RENEWED: "renewed",
    Decision.LATER: "later",
    Decision.MARK_STALE: "stale",
    Decision.GONE: "gone",
}


def _report(
    shard: Shard, looked: Sequence[Looked], states: Mapping[int, DeliveryState]
) -> ShardReport:
    """Counts by device. ``woken``: APNs accepted this sweep's wake. A redelivered shard finds
    its devices over budget and their last wake from this sweep, so it reports them woken too."""
    counts: Counter[str] = Counter()
    for x in looked:
        state = states.get(id(x))
        if state is DeliveryState.RELEASED:
            counts["released"] += 1
        elif x.soon:
            counts["errors"] += 1
        elif state is DeliveryState.FAILED:
            counts["failed"] += 1
        elif state is DeliveryState.DELIVERED or (
            x.state is not None and x.state.wake_sweep == shard.sweep_id
        ):
            counts["woken"] += 1
        elif x.decision in _COUNTED:
            counts[_COUNTED[x.decision]] += 1
    return ShardReport(shard.sweep_id, shard.index, len(looked), dict(counts))


def _log_report(tag: str, report: ShardReport) -> None:
    log.info(
        "%s: %d devices, %d woken, %d renewed by themselves, %d over budget, %d marked stale, "
        "%d failed, %d released",
        tag,
        report.devices,
        report.count("woken"),
        report.count("renewed"),
        report.count("later"),
        report.count("stale"),
        report.count("failed"),
        report.count("released"),
    )


def shard_from_message(body: bytes | str) -> Shard | None:
    """The shard in a queue message, or None (logged) when it is not one: acknowledge it."""
    try:
        return parse_shard(body)
    except MalformedShardError as exc:
        log.error("renewal queue message dropped: %s", exc)
        return None

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
device due in several buckets is woken once) and split into JSON shards of
``RENEWAL_SHARD_SIZE`` devices, the queue messages. The device table is never scanned.

**Worker** (queue, :func:`renew_shard`). For each device of a shard, concurrently: one point read,
then :func:`decide`. A wake is *claimed* by writing the budget under the ETag just read (one
round trip: the push time, the unanswered count, the wake's sweep); a concurrent or redelivered
worker loses that write, re-reads, and finds the budget spent. Then the pushes go out, the
outcomes are settled as chat push settles them (``shared.outcomes``: 410 removes, bad tokens
count, configuration errors delete nothing), and a wake that got no answer (429, 5xx, timeouts)
gives its budget back and is retried in the next bucket. Every device still due gets its next
entry at the earliest time its budget allows; devices handled together are due together, so
these entries share a bucket partition and go out in one transaction per 100. After
``RENEWAL_STALE_AFTER`` unanswered wakes a device is marked stale and left out (its chat pushes
continue, with the generic text, until the app runs and registers again).

**Renewal rate.** Each wake records its sweep on the device. The next read of that device (its
next entry, ``RENEWAL_MIN_SPACING_MINUTES`` or more later) credits the sweep when the device
renewed since; ``devtools/renewal_rate.py`` prints woken, renewed and the rate per sweep.

Storage errors propagate (``TransientError``: the queue redelivers the shard, which is safe).
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final, Protocol, TypeVar

from shared.apns.errors import ApnsError, NotificationError
from shared.apns.notification import Notification, Priority, PushType
from shared.apns.payload import background_payload, encode_payload
from shared.apns.response import PushResult
from shared.deliveries import DeliveryState
from shared.devices import Device, DeviceKind
from shared.errors import InputError
from shared.notify import Pushers, background_budget_allows
from shared.outcomes import Attempt, ConfigAlarm, DeviceOutcomes, settle
from shared.renewal_schedule import (
    BUCKET_MINUTES,
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
CONCURRENCY: Final = 64  # devices of one shard in flight at once
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

    async def update_wake(
        self,
        device: Device,
        *,
        background_sent: Sequence[datetime],
        unanswered_wakes: int,
        wake_at: datetime | None,
        wake_sweep: str | None,
    ) -> Device | None:
        """Write the renewal fields under the device's ETag; None when it changed or is gone."""
        ...

    async def mark_stale(self, user_id: str, device_id: str) -> bool:
        """Stop waking the device; False if it is gone."""
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


def decide(device: Device | None, due_bucket: str, now: datetime, rules: RenewalRules) -> Decision:
    """Decide for one device read at ``now`` from an entry in ``due_bucket``.

    A device renewed by itself when its key now falls due after ``due_bucket``: its own newer
    entry will handle it.
    """
    if device is None:
        return Decision.GONE
    if device.kind is not DeviceKind.ALERT or device.key_expires_at is None:
        return Decision.UNSCHEDULED
    if device.stale:
        return Decision.STALE
    if bucket_for(due_at(device.key_expires_at, rules.lead)) > due_bucket:
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


def wake_notification(device: Device, now: datetime, rules: RenewalRules) -> Notification:
    """The silent push that wakes the app: background, priority 5, expiring with the key."""
    return Notification(
        device_token=device.token,
        topic=device.topic,
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
    """One device of a shard and the buckets it was found in."""

    user_id: str
    device_id: str
    buckets: tuple[str, ...]

    @property
    def due_bucket(self) -> str:
        """The latest bucket the device was due in (the one that decides)."""
        return max(self.buckets)

    def entries(self) -> list[ScheduleEntry]:
        """The schedule entries this item stands for."""
        return [ScheduleEntry(b, self.user_id, self.device_id) for b in self.buckets]


@dataclass(frozen=True, slots=True)
class Shard:
    """One queue message: devices of one sweep for one worker invocation."""

    sweep_id: str
    index: int
    items: tuple[ShardItem, ...]

    def to_json(self) -> str:
        """The message body (compact JSON)."""
        body = {
            "v": SHARD_VERSION,
            "sweep": self.sweep_id,
            "shard": self.index,
            "devices": [[i.user_id, i.device_id, list(i.buckets)] for i in self.items],
        }
        return json.dumps(body, separators=(",", ":"))


def parse_shard(body: bytes | str) -> Shard:
    """Read a queue message. Raises MalformedShardError for anything :meth:`Shard.to_json` did
    not write."""
    try:
        data = json.loads(body)
        if data["v"] != SHARD_VERSION:
            raise MalformedShardError(f"unknown shard version {data['v']!r}")
        items = tuple(
            ShardItem(str(u), str(d), tuple(str(b) for b in buckets) or ("",))
            for u, d, buckets in data["devices"]
        )
        shard = Shard(str(data["sweep"]), int(data["shard"]), items)
        for item in items:
            bucket_start(item.due_bucket)
    except (ValueError, KeyError, TypeError) as exc:
        raise MalformedShardError(f"not a renewal shard: {type(exc).__name__}") from exc
    return shard


def group_entries(entries: Iterable[ScheduleEntry]) -> list[ShardItem]:
    """One item per device (a device due in several buckets is woken once), in entry order."""
    buckets: dict[tuple[str, str], list[str]] = {}
    for e in entries:
        buckets.setdefault((e.user_id, e.device_id), []).append(e.bucket)
    return [ShardItem(u, d, tuple(sorted(set(b)))) for (u, d), b in buckets.items()]


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
    record = SweepRecord(end, now, start, end, len(items), len(shards))
    if not await sweeps.finish(claimed, record):
        return SweepResult(None, note="claim lost")
    log.info(
        "renewal sweep %s: buckets %s..%s, %d devices in %d shards",
        end,
        start,
        end,
        len(items),
        len(shards),
    )
    messages = tuple(s.to_json() for s in shards)
    return SweepResult(end, messages, len(items), start)


# --- the worker -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Looked:
    """One device after its read: the decision, the device (as claimed for a wake), and what it
    was before the claim (to give the budget back)."""

    item: ShardItem
    decision: Decision
    device: Device | None
    before: Device | None = None
    credit: str | None = None


async def _bounded(coros: Iterable[Awaitable[T]], limit: int) -> list[T]:
    semaphore = asyncio.Semaphore(limit)

    async def one(c: Awaitable[T]) -> T:
        async with semaphore:
            return await c

    return list(await asyncio.gather(*(one(c) for c in coros)))


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
        self.clock = clock
        self.now = clock()
        self.tag = f"renewal {shard.sweep_id}/{shard.index}"

    async def look(self, item: ShardItem) -> Looked:
        """Read, decide, and claim a wake under the device's ETag (re-read on a lost claim)."""
        for _ in range(CLAIM_ATTEMPTS):
            device = await self.devices.get(item.user_id, item.device_id)
            decision = decide(device, item.due_bucket, self.now, self.rules)
            credit = renewal_credit(device, self.shard.sweep_id)
            if decision is not Decision.WAKE or device is None:
                return Looked(item, decision, device, credit=credit)
            claimed = await self.devices.update_wake(
                device,
                background_sent=[*device.background_sent, self.now],
                unanswered_wakes=device.unanswered_wakes + 1,
                wake_at=self.now,
                wake_sweep=self.shard.sweep_id,
            )
            if claimed is not None:
                return Looked(item, decision, claimed, before=device, credit=credit)
        log.info("%s: device %s kept changing; trying it later", self.tag, item.device_id)
        return Looked(item, Decision.LATER, None)

    async def send(self, device: Device, pushers: Pushers) -> PushResult | ApnsError:
        """One wake push; rejections and failures come back as values."""
        pusher = pushers.get(device.topic)
        if pusher is None:
            log.error("%s: no APNs credentials for app %s", self.tag, device.topic)
            return NotificationError("topic", f"no APNs credentials configured for {device.topic}")
        try:
            n = wake_notification(device, self.now, self.rules)
            return await pusher.send(
                n, environment=device.environment, budget=self.rules.send_budget
            )
        except ApnsError as exc:
            return exc

    async def give_back(self, looked: Looked) -> None:
        """Undo a wake's budget write after a retryable failure (nothing reached the device)."""
        before, claimed = looked.before, looked.device
        if before is None or claimed is None:
            return
        undone = await self.devices.update_wake(
            claimed,
            background_sent=before.background_sent,
            unanswered_wakes=before.unanswered_wakes,
            wake_at=before.wake_at,
            wake_sweep=before.wake_sweep,
        )
        if undone is None:
            log.info("%s: device %s changed; budget not given back", self.tag, claimed.device_id)

    def next_due(self, looked: Looked) -> datetime | None:
        """When the device should be looked at again, or None (it leaves the schedule)."""
        device, r = looked.device, self.rules
        if looked.decision not in (Decision.WAKE, Decision.LATER):
            return None
        sent = device.background_sent if device is not None else ()
        at = next_background_at(
            sent, self.now, max_per_hour=r.max_per_hour, min_spacing=r.min_spacing
        )
        return max(at, next_bucket_start(self.now))


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
    run = _ShardRun(shard, devices, rules, clock)
    looked = await _bounded((run.look(i) for i in shard.items), CONCURRENCY)
    wake = [(x, x.device) for x in looked if x.decision is Decision.WAKE and x.device is not None]
    answers = await _bounded((run.send(d, pushers) for _, d in wake), CONCURRENCY)
    settled = await settle(
        [Attempt(x, d, a) for (x, d), a in zip(wake, answers, strict=True)],
        devices=devices,
        now=clock(),
        bad_token_remove_after=rules.bad_token_remove_after,
        config_error_threshold=rules.config_error_threshold,
        alarm=alarm,
        correlation=run.tag,
    )
    states = {id(x): o.state for x, o in settled.outcomes}
    released = [x for x, _ in wake if states[id(x)] is DeliveryState.RELEASED]
    await _bounded((run.give_back(x) for x in released), CONCURRENCY)
    stale = [x for x in looked if x.decision is Decision.MARK_STALE]
    await _bounded((devices.mark_stale(x.item.user_id, x.item.device_id) for x in stale), 16)
    await schedule.schedule_many(_next_entries(run, looked, states))
    await schedule.remove([e for x in looked for e in x.item.entries()])
    report = _report(shard, looked, states)
    await sweeps.record_shard(report, _credits(looked))
    _log_report(run.tag, report)
    return report


def _next_entries(
    run: _ShardRun, looked: Sequence[Looked], states: Mapping[int, DeliveryState]
) -> list[tuple[str, str, datetime]]:
    """Each device still due, at the earliest time its budget allows; a released wake is
    retried in the next bucket (its budget was given back)."""
    entries: list[tuple[str, str, datetime]] = []
    for x in looked:
        at = run.next_due(x)
        if states.get(id(x)) is DeliveryState.RELEASED:
            at = next_bucket_start(run.now)
        if at is not None:
            entries.append((x.item.user_id, x.item.device_id, at))
    return entries


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
        elif state is DeliveryState.FAILED:
            counts["failed"] += 1
        elif state is DeliveryState.DELIVERED or (
            x.device is not None and x.device.wake_sweep == shard.sweep_id
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

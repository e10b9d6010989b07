"""The renewal worker (queue): one shard's due devices woken through the push pipeline.

target (the shard's devices, decided on what their entries carry) -> claim (the wake written into
the device's budget under its ETag) -> send and settle (:mod:`shared.push`, as for chat pushes)
-> record (each device's next schedule entry). See the package docstring.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Final, Protocol, TypeVar

from shared.apns.errors import ApnsError
from shared.apns.notification import Environment, Notification
from shared.domain.devices import Device
from shared.errors import TransientError
from shared.push.outcomes import Answered, ConfigAlarm, DeviceOutcomes, Settling, settle
from shared.push.pipeline import Pushers, Route, send_all
from shared.storage.deliveries import DeliveryState
from shared.storage.devices import Guarded
from shared.storage.renewal_schedule import EntryState, RenewalSchedule, ScheduleEntry, bucket_for
from shared.storage.renewal_sweeps import ShardReport
from shared.usecases.renewal.rules import (
    Decision,
    RenewalRules,
    decide,
    decide_state,
    next_bucket_start,
    renewal_credit,
    wake_notification,
    woken,
)
from shared.usecases.renewal.shards import Shard, ShardItem
from shared.usecases.renewal.sweep import SweepLog

log = logging.getLogger(__name__)

CLAIM_ATTEMPTS: Final = 3
CONCURRENCY: Final = 32  # devices of one shard in flight at once (aiohttp pools 100 connections)
T = TypeVar("T")


class RenewalDevices(DeviceOutcomes, Protocol):
    """Port: the registry operations renewal needs (``shared.storage.devices.DeviceStore``)."""

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


def settling_of(item: ShardItem, state: EntryState) -> Settling:
    """What settling a wake's answer needs, as the device's entry carries it (its bad-token
    count and last result were true of the device when the entry's state was taken)."""
    return Settling(
        item.user_id, item.device_id, state.topic, f"{state.token[:6]}…{state.token[-4:]}",
        state.bad_tokens, state.last_result, state.last_result_at,
    )  # fmt: skip


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

    def wake(self, state: EntryState) -> tuple[Route, Notification] | ApnsError:
        """The wake push of one claimed device, or why it cannot be built."""
        try:
            n = wake_notification(state, self.now, self.rules)
        except ApnsError as exc:
            return exc
        return Route(state.topic, Environment(state.environment)), n

    async def push(
        self, wake: Sequence[tuple[Looked, EntryState]], pushers: Pushers, alarm: ConfigAlarm | None
    ) -> dict[tuple[str, str], DeliveryState]:
        """Send the wakes and settle their answers (:mod:`shared.push`); each device's outcome.

        Raises TransientError subclasses when the registry does not answer while settling.
        """
        built = [self.wake(s) for _, s in wake]
        ready = [b for b in built if not isinstance(b, ApnsError)]
        sent = iter(
            await send_all(
                ready,
                pushers,
                budget=self.rules.send_budget,
                tag=self.tag,
                concurrency=CONCURRENCY,
            )
        )
        answers = [b if isinstance(b, ApnsError) else next(sent) for b in built]
        settled = await settle(
            [
                Answered(x.item.key, settling_of(x.item, s), a)
                for (x, s), a in zip(wake, answers, strict=True)
            ],
            devices=self.devices,
            now=self.clock(),
            rules=replace(self.rules.outcomes, alarm=alarm),
            correlation=self.tag,
        )
        return {key: outcome.state for key, outcome in settled.outcomes}

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
        state = looked.state
        at = self.rules.budget.next_at(state.sent if state is not None else (), self.now)
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
    states = await run.push(wake, pushers, alarm)
    released = [x for x in looked if states.get(x.item.key) is DeliveryState.RELEASED]
    given_back = await _bounded((run.give_back(x) for x in released), 16)
    kept = [x for x in looked if states.get(x.item.key) is not DeliveryState.RELEASED]
    entries = [run.next_entry(x) for x in (*kept, *given_back)]
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
    shard: Shard, looked: Sequence[Looked], states: Mapping[tuple[str, str], DeliveryState]
) -> ShardReport:
    """Counts by device. ``woken``: APNs accepted this sweep's wake. A redelivered shard finds
    its devices over budget and their last wake from this sweep, so it reports them woken too."""
    counts: Counter[str] = Counter()
    for x in looked:
        state = states.get(x.item.key)
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

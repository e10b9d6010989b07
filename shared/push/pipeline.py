"""The one push pipeline every use case that pushes goes through.

    target -> claim -> send -> settle -> record

A use case picks the **targets** (chat: the recipient's alert devices; calls: the callee's VoIP
devices; renewal: the due devices of a shard) and each one's notification. **Claim** makes sure
no device is pushed twice for one reason: chat and calls claim a delivery-log key per device
(:mod:`shared.storage.deliveries`, one transaction, :meth:`FanOut.claim`); renewal claims a wake by
writing it into the device's background budget under its ETag. **Send** is :func:`send_all`,
the same for all: concurrently, through the APNs client of each device's app, every failure an
answer. **Settle** is :func:`shared.push.outcomes.settle`, the same for all: a 410 removes the
device, token failures are counted (and a 200 clears the count), many at once are a
configuration error. **Record**: chat and calls complete the delivery log; renewal writes each
device's next schedule entry.

Every push use case answers with one :class:`PushSummary`; when it says ``retry_needed`` the
trigger raises :class:`PushIncompleteError`, so Event Grid redelivers and only the unfinished
devices are tried again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final, Generic, Protocol, TypeVar

from shared.apns.errors import ApnsError, ApnsUnavailable, NotificationError
from shared.apns.notification import Environment, Notification
from shared.apns.response import PushResult
from shared.domain.devices import Device
from shared.errors import TransientError
from shared.push.outcomes import (
    Answered,
    ConfigAlarm,
    DeviceOutcomes,
    OutcomeRules,
    Settled,
    Settling,
    settle,
)
from shared.settings import Settings
from shared.storage.deliveries import (
    DeliveryKey,
    DeliveryRecord,
    DeliveryStore,
    DeviceTarget,
)

log = logging.getLogger(__name__)

LEASE_MARGIN: Final = timedelta(seconds=5)
SEND_GRACE_SECONDS: Final = 2.0  # past the retry budget before unfinished sends are abandoned


class Pusher(Protocol):
    """Port: sends one notification (``shared.apns.client.ApnsClient``)."""

    async def send(
        self, n: Notification, *, environment: Environment, budget: float | None = None
    ) -> PushResult:
        """Send ``n``; rejections are results; raises ApnsUnavailable or NotificationError."""
        ...


Pushers = Mapping[str, Pusher]
"""The APNs client of each app, by topic (bundle ID): one deployment may push several apps."""

D = TypeVar("D", bound=DeviceOutcomes)


@dataclass(frozen=True, slots=True)
class Route:
    """Which APNs client sends a push: the device's app (bundle ID) and environment."""

    topic: str
    environment: Environment


@dataclass(frozen=True, slots=True)
class PushSummary:
    """What one event did: devices targeted and how each ended."""

    devices: int = 0
    delivered: int = 0
    skipped: int = 0  # by policy, already done, or in flight in another invocation
    failed: int = 0
    retry_needed: bool = False
    note: str = ""


class PushIncompleteError(TransientError):
    """Some devices were not pushed yet (released, or in flight elsewhere): redeliver the event."""

    def __init__(self, summary: PushSummary) -> None:
        super().__init__(f"push incomplete, Event Grid should redeliver: {summary}")
        self.summary = summary


def lease_for(settings: Settings) -> timedelta:
    """How long a claim is held: the whole send budget plus one request, plus a margin."""
    seconds = settings.apns_retry_budget_seconds + settings.apns_request_timeout_seconds
    return timedelta(seconds=seconds) + LEASE_MARGIN


def outcome_rules(settings: Settings, alarm: ConfigAlarm | None) -> OutcomeRules:
    """The outcome thresholds as configured, with the process's configuration alarm."""
    return OutcomeRules(settings.bad_token_remove_after, settings.config_error_threshold, alarm)


def freshest(devices: Sequence[Device], limit: int) -> list[Device]:
    """The ``limit`` most recently renewed of ``devices`` (all of them when ``limit`` is 0).

    Registration keeps a user within ``MAX_DEVICES_PER_USER``; this also bounds a fan-out over
    rows written before the limit, or by a registration race, to that many APNs requests.
    """
    if limit <= 0 or len(devices) <= limit:
        return list(devices)
    return sorted(devices, key=lambda d: (d.renewed_at, d.device_id), reverse=True)[:limit]


def target_of(device: Device) -> DeviceTarget:
    """What the delivery log keeps of a device."""
    return DeviceTarget(device.device_id, device.short_token, device.topic, device.environment)


def settling_of(device: Device) -> Settling:
    """What settling an answer needs of a registered device."""
    return Settling(
        device.user_id, device.device_id, device.topic, device.short_token,
        device.bad_token_count, device.last_result, device.last_result_at,
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class Claimed:
    """What claiming a fan-out gave: ours to send (with their devices), and how many were not."""

    mine: tuple[tuple[DeliveryRecord, Device], ...] = ()
    done: int = 0  # finished by an earlier delivery of the event
    in_flight: int = 0  # claimed by another invocation whose lease still runs


@dataclass(frozen=True, slots=True)
class Attempt:
    """One device's push in a fan-out: the claim, the device, and what its send came back with."""

    record: DeliveryRecord
    device: Device
    answer: PushResult | ApnsError
    note: str = ""  # what the delivery log adds about the payload (given up to fit, substituted)


@dataclass(frozen=True, slots=True)
class FanOut(Generic[D]):
    """One event's collaborators and the claim, send and settle steps chat and calls take."""

    devices: D
    deliveries: DeliveryStore
    pushers: Pushers
    settings: Settings
    clock: Callable[[], datetime]
    alarm: ConfigAlarm | None
    tag: str  # the event's correlation, on every log line

    async def claim(
        self, key: DeliveryKey, targets: Sequence[Device], *, now: datetime, event_id: str
    ) -> Claimed:
        """Claim ``key`` for each of ``targets`` (one transaction); raises TransientError."""
        claims = await self.deliveries.claim(
            key,
            [target_of(d) for d in targets],
            now=now,
            lease=lease_for(self.settings),
            event_id=event_id,
        )
        by_id = {d.device_id: d for d in targets}
        return Claimed(
            mine=tuple((r, by_id[r.device.device_id]) for r in claims.claimed),
            done=len(claims.done),
            in_flight=len(claims.in_flight),
        )

    async def send(
        self, items: Sequence[tuple[Device, Notification]], *, budget: float
    ) -> list[PushResult | ApnsError]:
        """:func:`send_all` through this event's pushers; raises nothing."""
        routed = [(Route(d.topic, d.environment), n) for d, n in items]
        return await send_all(routed, self.pushers, budget=budget, tag=self.tag)

    async def settle(self, attempts: Sequence[Attempt]) -> Settled[DeliveryRecord]:
        """Settle the answers now (:func:`shared.push.outcomes.settle`), each outcome beside
        its claim, ready for the delivery log; raises TransientError."""
        return await settle(
            [Answered(a.record, settling_of(a.device), a.answer, a.note) for a in attempts],
            devices=self.devices,
            now=self.clock(),
            rules=outcome_rules(self.settings, self.alarm),
            correlation=self.tag,
        )


async def send_all(
    items: Sequence[tuple[Route, Notification]],
    pushers: Pushers,
    *,
    budget: float,
    tag: str,
    concurrency: int | None = None,
) -> list[PushResult | ApnsError]:
    """Send concurrently through each device's app; answers in the order given.

    A send still running ``SEND_GRACE_SECONDS`` past ``budget`` counts as unanswered
    (:class:`ApnsUnavailable`); a device whose app has no credentials gets a NotificationError.
    ``concurrency`` bounds the sends in flight (a renewal shard holds hundreds of devices); each
    send then has its own deadline, counted from when it starts. Raises nothing: every failure is
    an answer.
    """
    if not items:
        return []
    if concurrency is not None:
        gate = asyncio.Semaphore(concurrency)
        return list(
            await asyncio.gather(*(_send_gated(gate, i, pushers, budget, tag) for i in items))
        )
    if len(items) == 1:
        # One device (the common chat event): sent in place under a deadline, without the
        # task and the wait() machinery that overlapping several sends needs.
        route, n = items[0]
        try:
            async with asyncio.timeout(budget + SEND_GRACE_SECONDS):
                return [await _send(route, n, pushers, budget, tag)]
        except TimeoutError:
            return [ApnsUnavailable("no answer within the retry budget")]
    tasks = [asyncio.ensure_future(_send(r, n, pushers, budget, tag)) for r, n in items]
    done, pending = await asyncio.wait(tasks, timeout=budget + SEND_GRACE_SECONDS)
    for task in pending:
        task.cancel()
    out: list[PushResult | ApnsError] = []
    for task in tasks:
        if task in done:
            out.append(task.result())
        else:
            out.append(ApnsUnavailable("no answer within the retry budget"))
    return out


async def _send_gated(
    gate: asyncio.Semaphore,
    item: tuple[Route, Notification],
    pushers: Pushers,
    budget: float,
    tag: str,
) -> PushResult | ApnsError:
    route, n = item
    async with gate:
        try:
            return await asyncio.wait_for(
                _send(route, n, pushers, budget, tag), budget + SEND_GRACE_SECONDS
            )
        except TimeoutError:
            return ApnsUnavailable("no answer within the retry budget")


async def _send(
    route: Route, n: Notification, pushers: Pushers, budget: float, tag: str
) -> PushResult | ApnsError:
    pusher = pushers.get(route.topic)
    if pusher is None:
        log.error("no APNs credentials for app %s: %s", route.topic, tag)
        return NotificationError("topic", f"no APNs credentials configured for {route.topic}")
    try:
        return await pusher.send(n, environment=route.environment, budget=budget)
    except ApnsError as exc:
        return exc

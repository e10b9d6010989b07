"""The fan-out chat and call pushes share: claim each device, send concurrently, settle.

A use case (:mod:`shared.notify`, :mod:`shared.calls`) picks the devices, the delivery key, each
device's notification, the send budget and what an unfinished device means. :class:`FanOut`
does the rest the same way for both: claim the key for every device (:mod:`shared.deliveries`,
one transaction), send through the APNs client of each device's app, and settle the answers
(:mod:`shared.outcomes`: a 410 removes the device, token failures are counted, many at once are
a configuration error).
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
from shared.deliveries import DeliveryKey, DeliveryRecord, DeliveryStore, DeviceTarget
from shared.devices import Device
from shared.outcomes import Attempt, ConfigAlarm, DeviceOutcomes, Settlement, settle
from shared.settings import Settings

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


def lease_for(settings: Settings) -> timedelta:
    """How long a claim is held: the whole send budget plus one request, plus a margin."""
    seconds = settings.apns_retry_budget_seconds + settings.apns_request_timeout_seconds
    return timedelta(seconds=seconds) + LEASE_MARGIN


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


@dataclass(frozen=True, slots=True)
class Claimed:
    """What claiming a fan-out gave: ours to send (with their devices), and how many were not."""

    mine: tuple[tuple[DeliveryRecord, Device], ...] = ()
    done: int = 0  # finished by an earlier delivery of the event
    in_flight: int = 0  # claimed by another invocation whose lease still runs


@dataclass(frozen=True, slots=True)
class FanOut(Generic[D]):
    """One event's collaborators and the claim, send and settle steps every push use case takes."""

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
        return await send_all(items, self.pushers, budget=budget, tag=self.tag)

    async def settle(self, attempts: Sequence[Attempt]) -> Settlement:
        """Settle the answers now (:func:`shared.outcomes.settle`); raises TransientError."""
        return await settle(
            attempts,
            devices=self.devices,
            now=self.clock(),
            bad_token_remove_after=self.settings.bad_token_remove_after,
            config_error_threshold=self.settings.config_error_threshold,
            alarm=self.alarm,
            correlation=self.tag,
        )


async def send_all(
    items: Sequence[tuple[Device, Notification]], pushers: Pushers, *, budget: float, tag: str
) -> list[PushResult | ApnsError]:
    """Send concurrently through each device's app; answers in the order given.

    A send still running ``SEND_GRACE_SECONDS`` past ``budget`` counts as unanswered
    (:class:`ApnsUnavailable`); a device whose app has no credentials gets a NotificationError.
    Raises nothing: every failure is an answer.
    """
    if not items:
        return []
    tasks = [asyncio.ensure_future(_send(d, n, pushers, budget, tag)) for d, n in items]
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


async def _send(
    device: Device, n: Notification, pushers: Pushers, budget: float, tag: str
) -> PushResult | ApnsError:
    pusher = pushers.get(device.topic)
    if pusher is None:
        log.error("no APNs credentials for app %s: %s", device.topic, tag)
        return NotificationError("topic", f"no APNs credentials configured for {device.topic}")
    try:
        return await pusher.send(n, environment=device.environment, budget=budget)
    except ApnsError as exc:
        return exc

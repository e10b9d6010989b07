"""Use case: one ACS chat event becomes at most one push per device of its recipient.

``ChatMessageReceived`` / ``ChatMessageEdited``: load the recipient's devices (one partition
query) and the thread's mute state, claim the delivery of (thread, message, kind, version) for
every alert device (one transaction), build each payload, send them concurrently through the
APNs client of each device's app, settle the outcomes (``shared.outcomes``) and write them to the
delivery log (one transaction). An edit is sent with ``apns-collapse-id`` = messageId, so the
banner is replaced. ``ChatMessageDeleted`` sends a background push naming the message, within
the device's background budget (the one the renewal sweep draws on too).

``ChatThreadWithUserDeleted`` and ``ChatParticipantRemovedFromThreadWithUser`` (for the removed
user) mute the thread for that user; ``ChatParticipantAddedToThreadWithUser`` (for the added user)
un-mutes it. Recipients that are not ACS users, other thread events, thread-level and unknown
types are acknowledged and logged. A malformed event is logged with its id and acknowledged: a
retry cannot fix it.

The result is a :class:`ChatPushSummary`; when ``retry_needed`` the trigger raises, so Event Grid
redelivers and only the unfinished devices are tried again. Storage outages propagate as
:class:`~shared.errors.TransientError` (the trigger lets them fail the invocation).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final, Protocol

from shared.apns.errors import ApnsError, ApnsUnavailable, NotificationError
from shared.apns.notification import Environment, Notification
from shared.apns.response import PushResult
from shared.chat_payload import chat_notification, withdraw_notification
from shared.deliveries import (
    DeliveryKey,
    DeliveryKind,
    DeliveryRecord,
    DeliveryState,
    DeliveryStore,
    DeviceTarget,
    Outcome,
)
from shared.devices import Device, DeviceKind
from shared.errors import TransientError
from shared.events import (
    ChatMessageEvent,
    Ignored,
    IncomingCallEvent,
    MalformedEvent,
    MessageEventKind,
    ThreadEvent,
    ThreadEventKind,
    describe,
    parse_event,
)
from shared.outcomes import Attempt, ConfigAlarm, DeviceOutcomes, Settlement, settle
from shared.settings import Settings

log = logging.getLogger(__name__)

LEASE_MARGIN: Final = timedelta(seconds=5)
SEND_GRACE_SECONDS: Final = 2.0  # past the retry budget before unfinished sends are abandoned


class ChatPushIncompleteError(TransientError):
    """Some devices were not pushed yet (released, or in flight elsewhere): redeliver the event."""

    def __init__(self, summary: ChatPushSummary) -> None:
        super().__init__(f"chat push incomplete, Event Grid should redeliver: {summary}")
        self.summary = summary


class Pusher(Protocol):
    """Port: sends one notification (``shared.apns.client.ApnsClient``)."""

    async def send(
        self, n: Notification, *, environment: Environment, budget: float | None = None
    ) -> PushResult:
        """Send ``n``; rejections are results; raises ApnsUnavailable or NotificationError."""
        ...


Pushers = Mapping[str, Pusher]
"""The APNs client of each app, by topic (bundle ID): one deployment may push several apps."""


class ChatDevices(DeviceOutcomes, Protocol):
    """Port: the registry operations a chat push needs (``shared.devices.DeviceStore``)."""

    async def list_for_user(self, user_id: str) -> list[Device]:
        """Every device of ``user_id`` (one partition query)."""
        ...

    async def record_background_push(
        self, user_id: str, device_id: str, at: datetime, *, renewal: bool
    ) -> Device | None:
        """Record a background push for the device's budget; None when the device is gone."""
        ...


@dataclass(frozen=True, slots=True)
class ChatPushSummary:
    """What one chat event did: devices targeted and how each ended."""

    devices: int = 0
    delivered: int = 0
    skipped: int = 0
    failed: int = 0
    retry_needed: bool = False
    note: str = ""


_KINDS: Final = {
    MessageEventKind.RECEIVED: DeliveryKind.RECEIVED,
    MessageEventKind.EDITED: DeliveryKind.EDITED,
    MessageEventKind.DELETED: DeliveryKind.DELETED,
}


async def handle_chat_event(
    event: object,
    *,
    devices: ChatDevices,
    deliveries: DeliveryStore,
    pushers: Pushers,
    settings: Settings,
    clock: Callable[[], datetime],
    alarm: ConfigAlarm | None = None,
) -> ChatPushSummary:
    """Handle one chat event (raw from the trigger, or already parsed); see the module doc.

    Raises TransientError subclasses when storage does not answer.
    """
    try:
        parsed = event if isinstance(event, _PARSED) else parse_event(event)
    except MalformedEvent as exc:
        log.warning("malformed chat event %s acknowledged: %s", exc.event_id or "(no id)", exc)
        return ChatPushSummary(note="malformed")
    if isinstance(parsed, ChatMessageEvent):
        push = _ChatPush(parsed, devices, deliveries, pushers, settings, clock=clock, alarm=alarm)
        return await push.run()
    if isinstance(parsed, ThreadEvent):
        return await _thread_event(parsed, deliveries, clock)
    if isinstance(parsed, IncomingCallEvent):
        log.warning("IncomingCall on the chat subscription acknowledged: %s", describe(parsed))
        return ChatPushSummary(note="call event on the chat function")
    log.info("chat event acknowledged, nothing to do: %s", describe(parsed))
    return ChatPushSummary(note=parsed.reason)


_PARSED: Final = (ChatMessageEvent, ThreadEvent, IncomingCallEvent, Ignored)


async def _thread_event(
    event: ThreadEvent, deliveries: DeliveryStore, clock: Callable[[], datetime]
) -> ChatPushSummary:
    """Mute or un-mute a thread for the recipient; other thread events need nothing."""
    if not event.recipient_is_acs_user:
        log.info("thread event for a non-ACS recipient acknowledged: %s", describe(event))
        return ChatPushSummary(note="recipient is not an ACS user")
    mute: bool | None = None
    if event.kind is ThreadEventKind.THREAD_DELETED or event.recipient_was_removed:
        mute = True
    elif (
        event.kind is ThreadEventKind.PARTICIPANT_ADDED
        and event.participant_id == event.recipient_id
    ):
        mute = False
    if mute is None:
        log.info("thread event acknowledged: %s", describe(event))
        return ChatPushSummary(note="thread event")
    at = event.time or event.event_time or clock()
    applied = await deliveries.set_muted(event.recipient_id, event.thread_id, muted=mute, at=at)
    log.info(
        "thread %s for recipient of %s (%s)",
        "muted" if mute else "un-muted",
        describe(event),
        "applied" if applied else "a later change wins",
    )
    return ChatPushSummary(note="muted" if mute else "unmuted")


def lease_for(settings: Settings) -> timedelta:
    """How long a claim is held: the whole send budget plus one request, plus a margin."""
    seconds = settings.apns_retry_budget_seconds + settings.apns_request_timeout_seconds
    return timedelta(seconds=seconds) + LEASE_MARGIN


def target_of(device: Device) -> DeviceTarget:
    """What the delivery log keeps of a device."""
    return DeviceTarget(device.device_id, device.short_token, device.topic, device.environment)


def background_budget_allows(
    sent: Sequence[datetime], now: datetime, *, max_per_hour: int, min_spacing: timedelta
) -> bool:
    """Whether one more background push fits the device's budget at ``now``.

    Apple: "don't send more than two or three per hour"; renewal and withdraw pushes share it.
    """
    recent = [t for t in sent if now - timedelta(hours=1) < t <= now]
    if len(recent) >= max_per_hour:
        return False
    return not recent or now - max(recent) >= min_spacing


class _ChatPush:
    """One message event's fan-out (state kept here so each step stays short)."""

    def __init__(
        self,
        event: ChatMessageEvent,
        devices: ChatDevices,
        deliveries: DeliveryStore,
        pushers: Pushers,
        settings: Settings,
        *,
        clock: Callable[[], datetime],
        alarm: ConfigAlarm | None,
    ) -> None:
        self.event = event
        self.devices = devices
        self.deliveries = deliveries
        self.pushers = pushers
        self.settings = settings
        self.clock = clock
        self.alarm = alarm
        self.tag = describe(event)

    async def run(self) -> ChatPushSummary:
        event = self.event
        if not event.recipient_is_acs_user:
            log.info("chat event for a non-ACS recipient acknowledged: %s", self.tag)
            return ChatPushSummary(note="recipient is not an ACS user")
        listed, muted = await asyncio.gather(
            self.devices.list_for_user(event.recipient_id),
            self.deliveries.is_muted(event.recipient_id, event.thread_id),
        )
        alert = [d for d in listed if d.kind is DeviceKind.ALERT]
        if muted:
            log.info(
                "thread muted for this recipient, %d devices skipped: %s", len(alert), self.tag
            )
            return ChatPushSummary(devices=len(alert), skipped=len(alert), note="muted")
        if not alert:
            log.info("recipient has no alert devices: %s", self.tag)
            return ChatPushSummary(note="no devices")
        return await self._fan_out(alert)

    async def _fan_out(self, alert: Sequence[Device]) -> ChatPushSummary:
        event, now = self.event, self.clock()
        key = DeliveryKey(
            event.recipient_id, event.thread_id, event.message_id, _KINDS[event.kind], event.version
        )
        claims = await self.deliveries.claim(
            key,
            [target_of(d) for d in alert],
            now=now,
            lease=lease_for(self.settings),
            event_id=event.event_id,
        )
        if claims.in_flight:
            log.info("%d devices in flight elsewhere: %s", len(claims.in_flight), self.tag)
        by_id = {d.device_id: d for d in alert}
        mine = [(r, by_id[r.device.device_id]) for r in claims.claimed]
        settled, skipped = await self._push_all(mine, now)
        await self.deliveries.complete(settled.outcomes + skipped, self.clock())
        return ChatPushSummary(
            devices=len(alert),
            delivered=settled.delivered,
            skipped=len(claims.done) + len(claims.in_flight) + len(skipped),
            failed=settled.failed,
            retry_needed=settled.retry_needed or bool(claims.in_flight),
        )

    async def _push_all(
        self, mine: Sequence[tuple[DeliveryRecord, Device]], now: datetime
    ) -> tuple[Settlement, tuple[tuple[DeliveryRecord, Outcome], ...]]:
        ready: list[tuple[DeliveryRecord, Device, Notification]] = []
        early: list[Attempt] = []
        skipped: list[tuple[DeliveryRecord, Outcome]] = []
        for record, device in mine:
            built = await self._notification(record, device, now)
            if isinstance(built, Notification):
                ready.append((record, device, built))
            elif isinstance(built, Outcome):
                skipped.append((record, built))
            else:
                early.append(Attempt(record, device, built))
        answers = await self._send_all([(d, n) for _, d, n in ready])
        attempts = early + [Attempt(r, d, a) for (r, d, _), a in zip(ready, answers, strict=True)]
        settled = await settle(
            attempts,
            devices=self.devices,
            now=self.clock(),
            bad_token_remove_after=self.settings.bad_token_remove_after,
            config_error_threshold=self.settings.config_error_threshold,
            alarm=self.alarm,
            correlation=self.tag,
        )
        return settled, tuple(skipped)

    async def _notification(
        self, record: DeliveryRecord, device: Device, now: datetime
    ) -> Notification | Outcome | ApnsError:
        """The device's notification, a skip (over the background budget), or why it can't be."""
        event = self.event
        try:
            if event.kind is not MessageEventKind.DELETED:
                return chat_notification(event, device, self.settings, now)
            if not await self._spend_background_budget(device, now):
                return Outcome(DeliveryState.SKIPPED, detail="over the background push budget")
            return withdraw_notification(event, device)
        except NotificationError as exc:
            return exc

    async def _spend_background_budget(self, device: Device, now: datetime) -> bool:
        s = self.settings
        allowed = background_budget_allows(
            device.background_sent,
            now,
            max_per_hour=s.renewal_max_per_hour,
            min_spacing=timedelta(minutes=s.renewal_min_spacing_minutes),
        )
        if not allowed:
            log.info(
                "withdraw push skipped, device %s over its background budget: %s",
                device.short_token,
                self.tag,
            )
            return False
        recorded = await self.devices.record_background_push(
            device.user_id, device.device_id, now, renewal=False
        )
        return recorded is not None

    async def _send_all(
        self, items: Sequence[tuple[Device, Notification]]
    ) -> list[PushResult | ApnsError]:
        budget = self.settings.apns_retry_budget_seconds
        return await send_all(items, self.pushers, budget=budget, tag=self.tag)


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

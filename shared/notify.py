"""Use case: one ACS chat event becomes at most one push per device of its recipient.

``ChatMessageReceived`` / ``ChatMessageEdited``: load the recipient's devices (one partition
query) and the message's state (the thread's mute row and the message's tombstone, one query),
claim the delivery of (thread, message, kind, version) for
every alert device (one transaction), build each payload, send them concurrently through the
APNs client of each device's app, settle the outcomes (``shared.outcomes``) and write them to the
delivery log (one transaction). An edit is sent with ``apns-collapse-id`` = messageId, so the
banner is replaced. ``ChatMessageDeleted`` leaves a tombstone, then sends a background push
naming the message, within the device's background budget (the one the renewal sweep draws on
too): a second delete to a device within ``RENEWAL_MIN_SPACING_MINUTES`` is skipped. Every
alert device of a registered recipient gets a push, or a delivery-log record saying why policy
skipped it: thread muted, message already deleted (an edit arriving after its delete), over
the background budget.

``ChatThreadWithUserDeleted`` and ``ChatParticipantRemovedFromThreadWithUser`` (for the removed
user) mute the thread for that user; ``ChatParticipantAddedToThreadWithUser`` (for the added user)
un-mutes it. Recipients that are not ACS users, other thread events, thread-level and unknown
types are acknowledged and logged. A malformed event is logged with its id and acknowledged: a
retry cannot fix it.

The result is a :class:`PushSummary`; when ``retry_needed`` the trigger raises, so Event Grid
redelivers and only the unfinished devices are tried again. Storage outages propagate as
:class:`~shared.errors.TransientError` (the trigger lets them fail the invocation); a request
storage refuses (``StorageRejectedError``) is logged and acknowledged, since every redelivery
would be refused the same way.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Protocol

from shared.apns.errors import ApnsError, NotificationError
from shared.apns.notification import Notification
from shared.chat_payload import chat_push, withdraw_notification
from shared.deliveries import (
    DeliveryKey,
    DeliveryKind,
    DeliveryRecord,
    DeliveryState,
    DeliveryStore,
    MessageState,
    Outcome,
)
from shared.devices import Device, DeviceKind
from shared.events import (
    ChatMessageEvent,
    EventSource,
    Ignored,
    IncomingCallEvent,
    MalformedEvent,
    MessageEventKind,
    ThreadEvent,
    ThreadEventKind,
    describe,
    parse_event,
)
from shared.push.budget import BackgroundBudget
from shared.push.outcomes import ConfigAlarm, DeviceOutcomes
from shared.push.pipeline import Attempt, FanOut, Pushers, PushSummary, Settlement, freshest
from shared.settings import Settings
from shared.tables import StorageRejectedError

log = logging.getLogger(__name__)


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


_MUTED: Final = "thread muted for this recipient"
_DELETED: Final = "the message was deleted before this event arrived"

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
    source: EventSource | None = None,
) -> PushSummary:
    """Handle one chat event (raw from the trigger, or already parsed); see the module doc.

    ``source``: the ACS resource events must come from; others are acknowledged and logged.
    Raises TransientError subclasses when storage does not answer.
    """
    if source is not None and not source.admits(event):
        return PushSummary(note="another source")
    try:
        parsed = event if isinstance(event, _PARSED) else parse_event(event)
    except MalformedEvent as exc:
        log.warning("malformed chat event %s acknowledged: %s", exc.event_id or "(no id)", exc)
        return PushSummary(note="malformed")
    if isinstance(parsed, ChatMessageEvent):
        fan = FanOut(devices, deliveries, pushers, settings, clock, alarm, describe(parsed))
        try:
            return await _ChatPush(parsed, fan).run()
        except StorageRejectedError as exc:
            # A 4xx from storage for this event's data: every redelivery would get it too.
            log.error("storage refused this chat event's data, acknowledged: %s: %s", exc, fan.tag)
            return PushSummary(note="storage refused the event's data")
    if isinstance(parsed, ThreadEvent):
        return await _thread_event(parsed, deliveries, clock)
    if isinstance(parsed, IncomingCallEvent):
        log.warning("IncomingCall on the chat subscription acknowledged: %s", describe(parsed))
        return PushSummary(note="call event on the chat function")
    log.info("chat event acknowledged, nothing to do: %s", describe(parsed))
    return PushSummary(note=parsed.reason)


_PARSED: Final = (ChatMessageEvent, ThreadEvent, IncomingCallEvent, Ignored)


async def _thread_event(
    event: ThreadEvent, deliveries: DeliveryStore, clock: Callable[[], datetime]
) -> PushSummary:
    """Mute or un-mute a thread for the recipient; other thread events need nothing."""
    if not event.recipient_is_acs_user:
        log.info("thread event for a non-ACS recipient acknowledged: %s", describe(event))
        return PushSummary(note="recipient is not an ACS user")
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
        return PushSummary(note="thread event")
    at = event.time or event.event_time or clock()
    applied = await deliveries.set_muted(event.recipient_id, event.thread_id, muted=mute, at=at)
    log.info(
        "thread %s for recipient of %s (%s)",
        "muted" if mute else "un-muted",
        describe(event),
        "applied" if applied else "a later change wins",
    )
    return PushSummary(note="muted" if mute else "unmuted")


@dataclass(frozen=True, slots=True)
class _ChatPush:
    """One message event's fan-out (state kept here so each step stays short)."""

    event: ChatMessageEvent
    fan: FanOut[ChatDevices]

    async def run(self) -> PushSummary:
        event, fan = self.event, self.fan
        if not event.recipient_is_acs_user:
            log.info("chat event for a non-ACS recipient acknowledged: %s", fan.tag)
            return PushSummary(note="recipient is not an ACS user")
        listed, state = await asyncio.gather(
            fan.devices.list_for_user(event.recipient_id),
            fan.deliveries.message_state(event.recipient_id, event.thread_id, event.message_id),
        )
        listed = freshest(listed, fan.settings.max_devices_per_user)
        alert = [d for d in listed if d.kind is DeviceKind.ALERT]
        if not alert:
            log.info("recipient has no alert devices (muted: %s): %s", state.muted, fan.tag)
            return PushSummary(note="muted" if state.muted else "no devices")
        why = self._skip_reason(state)
        if why:
            return await self._skip_all(alert, why)
        if event.kind is MessageEventKind.DELETED:
            await fan.deliveries.mark_deleted(
                event.recipient_id,
                event.thread_id,
                event.message_id,
                at=fan.clock(),
                event_id=event.event_id,
            )
        return await self._fan_out(alert)

    def _skip_reason(self, state: MessageState) -> str:
        """Why policy sends this event to none of the devices ("" when it goes to all)."""
        if state.muted:
            return _MUTED
        if state.deleted_at is not None and self.event.kind is not MessageEventKind.DELETED:
            # Event Grid does not keep order: an edit (or the message) may arrive after its
            # delete, and must not alert again.
            return _DELETED
        return ""

    async def _skip_all(self, alert: Sequence[Device], why: str) -> PushSummary:
        """Record every device as skipped and why, so the delivery log answers for the event."""
        fan, now = self.fan, self.fan.clock()
        claimed = await fan.claim(self._key(), alert, now=now, event_id=self.event.event_id)
        outcome = Outcome(DeliveryState.SKIPPED, detail=why)
        await fan.deliveries.complete([(r, outcome) for r, _ in claimed.mine], fan.clock())
        log.info("%d devices skipped, %s: %s", len(alert), why, fan.tag)
        note = "muted" if why is _MUTED else "deleted"
        return PushSummary(devices=len(alert), skipped=len(alert), note=note)

    def _key(self) -> DeliveryKey:
        e = self.event
        return DeliveryKey(e.recipient_id, e.thread_id, e.message_id, _KINDS[e.kind], e.version)

    async def _fan_out(self, alert: Sequence[Device]) -> PushSummary:
        event, fan, now = self.event, self.fan, self.fan.clock()
        key = self._key()
        claimed = await fan.claim(key, alert, now=now, event_id=event.event_id)
        if claimed.in_flight:
            log.info("%d devices in flight elsewhere: %s", claimed.in_flight, fan.tag)
        settled, skipped = await self._push_all(claimed.mine, now)
        await fan.deliveries.complete(settled.outcomes + skipped, fan.clock())
        return PushSummary(
            devices=len(alert),
            delivered=settled.delivered,
            skipped=claimed.done + claimed.in_flight + len(skipped),
            failed=settled.failed,
            retry_needed=settled.retry_needed or bool(claimed.in_flight),
        )

    async def _push_all(
        self, mine: Sequence[tuple[DeliveryRecord, Device]], now: datetime
    ) -> tuple[Settlement, tuple[tuple[DeliveryRecord, Outcome], ...]]:
        ready: list[tuple[DeliveryRecord, Device, Notification, str]] = []
        early: list[Attempt] = []
        skipped: list[tuple[DeliveryRecord, Outcome]] = []
        for record, device in mine:
            built = await self._notification(record, device, now)
            if isinstance(built, tuple):
                ready.append((record, device, *built))
            elif isinstance(built, Outcome):
                skipped.append((record, built))
            else:
                early.append(Attempt(record, device, built))
        budget = self.fan.settings.apns_retry_budget_seconds
        answers = await self.fan.send([(d, n) for _, d, n, _ in ready], budget=budget)
        attempts = early + [
            Attempt(r, d, a, note) for (r, d, _, note), a in zip(ready, answers, strict=True)
        ]
        return await self.fan.settle(attempts), tuple(skipped)

    async def _notification(
        self, record: DeliveryRecord, device: Device, now: datetime
    ) -> tuple[Notification, str] | Outcome | ApnsError:
        """The device's notification and what the log notes of its payload, a skip (over the
        background budget), or why it can't be sent."""
        event = self.event
        try:
            if event.kind is not MessageEventKind.DELETED:
                notification, payload = chat_push(event, device, self.fan.settings, now)
                return notification, payload.note
            if not await self._spend_background_budget(device, now, retry=record.claims > 1):
                return Outcome(DeliveryState.SKIPPED, detail="over the background push budget")
            return withdraw_notification(event, device), ""
        except NotificationError as exc:
            return exc

    async def _spend_background_budget(self, device: Device, now: datetime, *, retry: bool) -> bool:
        """Record one background push on the device's budget; False when over it.

        A retry of this same withdraw (its claim was released: APNs was busy or did not answer)
        already passed the check when it was first claimed, and its own first try is what now
        fills the budget's spacing: it goes again rather than being skipped by itself.
        """
        budget = BackgroundBudget.from_settings(self.fan.settings)
        allowed = retry or budget.allows(device.background_sent, now)
        if not allowed:
            log.info(
                "withdraw push skipped, device %s over its background budget: %s",
                device.short_token,
                self.fan.tag,
            )
            return False
        recorded = await self.fan.devices.record_background_push(
            device.user_id, device.device_id, now, renewal=False
        )
        return recorded is not None

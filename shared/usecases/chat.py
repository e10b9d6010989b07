"""Use case: one ACS chat event becomes at most one push per device of its recipient.

``ChatMessageReceived`` / ``ChatMessageEdited``: load the recipient's devices (one partition
query) and their inbox (one point read, :mod:`shared.storage.inbox`), then, concurrently, count the
message (one write when the count changes, :mod:`shared.usecases.unread`) and claim the delivery of
(thread, message, kind, version) for every alert device (one transaction); build each payload
with the recipient's badge (and passive, without sound, in their quiet hours), send them
concurrently through the APNs client of each device's app, settle the outcomes
(``shared.push.outcomes``) and write them to the delivery log (one transaction). An edit is
sent with ``apns-collapse-id`` = messageId, so the banner is replaced. A thread the recipient
muted (or set to no alerts) gets no alert: its claims are logged ``muted``, with a badge-only
push when the user counts muted threads and the number rose.

``ChatMessageDeleted`` takes an unread message off the count, leaves a tombstone, then sends a
background push naming the message, within the device's background budget (the one the renewal
sweep draws on too): a second delete to a device within ``RENEWAL_MIN_SPACING_MINUTES`` is
skipped; a badge-only push follows when the number fell. An edit (or the message itself)
arriving after its delete pushes nothing: the inbox remembers deletes of messages not read yet,
and the deliveries table's tombstone (one point read: always for an edit, for a message only
when the inbox cannot tell) answers for the rest. Every alert device of a registered recipient
gets a push, or a delivery-log record saying why policy skipped it: the recipient left the
thread, the thread is muted, the message was already deleted, over the background budget.

``ChatThreadWithUserDeleted`` and ``ChatParticipantRemovedFromThreadWithUser`` (for the removed
user) take the thread's unread messages off and stop its pushes for that user;
``ChatParticipantAddedToThreadWithUser`` (for the added user) starts them again. Recipients that
are not ACS users, other thread events, thread-level and unknown types are acknowledged and
logged. A malformed event is logged with its id and acknowledged: a retry cannot fix it.

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
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Final, Protocol

from shared.apns.errors import ApnsError, NotificationError
from shared.apns.notification import Notification
from shared.domain.chat_payload import chat_push, withdraw_notification
from shared.domain.devices import Device, DeviceKind
from shared.domain.events import (
    ChatMessageEvent,
    EventSource,
    IncomingCallEvent,
    MessageEventKind,
    ThreadEvent,
    describe,
)
from shared.overlap import both, result
from shared.push.budget import BackgroundBudget
from shared.push.outcomes import ConfigAlarm, DeviceOutcomes, Settled
from shared.push.pipeline import (
    Attempt,
    Claimed,
    FanOut,
    Pushers,
    PushSummary,
    freshest,
)
from shared.settings import Settings
from shared.storage.deliveries import (
    DeliveryKey,
    DeliveryKind,
    DeliveryRecord,
    DeliveryState,
    DeliveryStore,
    Outcome,
)
from shared.storage.inbox import (
    InboxSnapshot,
    InboxStore,
    UnreadableInboxError,
    change_inbox,
    message_order,
)
from shared.storage.tables import StorageRejectedError
from shared.usecases.badge import badge_notification, update_badges
from shared.usecases.event_intake import parsed_or_acknowledged
from shared.usecases.unread import Presentation, membership_change, note_message

log = logging.getLogger(__name__)


class ChatDevices(DeviceOutcomes, Protocol):
    """Port: the registry operations a chat push needs (``shared.storage.devices.DeviceStore``)."""

    async def list_for_user(self, user_id: str) -> list[Device]:
        """Every device of ``user_id`` (one partition query)."""
        ...

    async def record_background_push(
        self, user_id: str, device_id: str, at: datetime, *, renewal: bool
    ) -> Device | None:
        """Record a background push for the device's budget; None when the device is gone."""
        ...


_LEFT: Final = "the recipient left the thread (or it was deleted)"
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
    inbox: InboxStore,
    pushers: Pushers,
    settings: Settings,
    clock: Callable[[], datetime],
    alarm: ConfigAlarm | None = None,
    source: EventSource | None = None,
) -> PushSummary:
    """Handle one chat event (its delivered JSON, or already parsed); see the module doc.

    ``source``: the ACS resource events must come from; others are acknowledged and logged.
    Raises TransientError subclasses when storage does not answer.
    """
    parsed = parsed_or_acknowledged(event, source=source, what="chat", log=log)
    if isinstance(parsed, PushSummary):
        return parsed
    if isinstance(parsed, ChatMessageEvent | ThreadEvent):
        fan = FanOut(devices, deliveries, pushers, settings, clock, alarm, describe(parsed))
        if isinstance(parsed, ThreadEvent):
            return await _thread_event(parsed, fan, inbox)
        try:
            return await _ChatPush(parsed, fan, inbox).run()
        except StorageRejectedError as exc:
            # A 4xx from storage for this event's data: every redelivery would get it too.
            log.error("storage refused this chat event's data, acknowledged: %s: %s", exc, fan.tag)
            return PushSummary(note="storage refused the event's data")
    if isinstance(parsed, IncomingCallEvent):
        log.warning("IncomingCall on the chat subscription acknowledged: %s", describe(parsed))
        return PushSummary(note="call event on the chat function")
    log.info("chat event acknowledged, nothing to do: %s", describe(parsed))
    return PushSummary(note=parsed.reason)


async def _thread_event(
    event: ThreadEvent, fan: FanOut[ChatDevices], inbox: InboxStore
) -> PushSummary:
    """The recipient left or rejoined a thread; other thread events need nothing."""
    if not event.recipient_is_acs_user:
        log.info("thread event for a non-ACS recipient acknowledged: %s", fan.tag)
        return PushSummary(note="recipient is not an ACS user")
    now = fan.clock()
    change = membership_change(event, event.time or event.event_time or now, now)
    if change is None:
        log.info("thread event acknowledged: %s", fan.tag)
        return PushSummary(note="thread event")
    done = await change_inbox(inbox, event.recipient_id, change, now)
    left = done.after.thread(event.thread_id).left
    log.info(
        "thread %s by the recipient (%s): %s",
        "left" if left else "joined",
        "applied" if done.changed else "nothing new",
        fan.tag,
    )
    badge = done.after.badge(now)
    if badge < done.before.badge(now):
        devices = await fan.devices.list_for_user(event.recipient_id)
        await update_badges(
            devices, badge, pushers=fan.pushers, registry=fan.devices, settings=fan.settings,
            now=now, tag=fan.tag,
        )  # fmt: skip
    return PushSummary(note="left" if left else "joined")


@dataclass(frozen=True, slots=True)
class _ChatPush:
    """One message event's fan-out (state kept here so each step stays short)."""

    event: ChatMessageEvent
    fan: FanOut[ChatDevices]
    inbox: InboxStore

    async def run(self) -> PushSummary:
        event, fan = self.event, self.fan
        if not event.recipient_is_acs_user:
            log.info("chat event for a non-ACS recipient acknowledged: %s", fan.tag)
            return PushSummary(note="recipient is not an ACS user")
        deleted: bool | None = None
        if event.kind is MessageEventKind.EDITED:
            listed, snapshot, deleted = await asyncio.gather(
                fan.devices.list_for_user(event.recipient_id),
                self._recipient_inbox(),
                self._tombstoned(),
            )
        else:
            found, read = await both(
                fan.devices.list_for_user(event.recipient_id), self._recipient_inbox()
            )
            listed, snapshot = result(found), result(read)
        listed = freshest(listed, fan.settings.max_devices_per_user)
        alert = [d for d in listed if d.kind is DeviceKind.ALERT]
        if not alert:
            log.info("recipient has no alert devices: %s", fan.tag)
            return PushSummary(note="no devices")
        if snapshot is not None and snapshot.inbox.thread(event.thread_id).left:
            return await self._skip_all(alert, _LEFT, "left")
        if event.kind is MessageEventKind.RECEIVED:
            deleted = self._deleted_per_inbox(snapshot)
            if deleted is None:
                deleted = await self._tombstoned()
        if deleted:
            # Event Grid does not keep order: an edit (or the message) may arrive after its
            # delete, and must not alert again.
            return await self._skip_all(alert, _DELETED, "deleted")
        if event.kind is MessageEventKind.DELETED:
            await fan.deliveries.mark_deleted(
                event.recipient_id,
                event.thread_id,
                event.message_id,
                at=fan.clock(),
                event_id=event.event_id,
            )
        return await self._fan_out(alert, snapshot)

    async def _recipient_inbox(self) -> InboxSnapshot | None:
        """The recipient's inbox; None when its row cannot be read (pushed without a badge)."""
        try:
            return await self.inbox.read(self.event.recipient_id)
        except UnreadableInboxError as exc:
            log.error(
                "recipient's inbox unreadable, pushing without it (%s): %s", exc, self.fan.tag
            )
            return None

    async def _tombstoned(self) -> bool:
        """Whether the deliveries table holds the message's tombstone (one point read)."""
        e = self.event
        state = await self.fan.deliveries.message_state(e.recipient_id, e.thread_id, e.message_id)
        return state.deleted_at is not None

    def _deleted_per_inbox(self, snapshot: InboxSnapshot | None) -> bool | None:
        """Whether the inbox knows this message was deleted (None: it cannot tell)."""
        order = message_order(self.event.message_id)
        if snapshot is None or order is None:
            return None
        return snapshot.inbox.thread(self.event.thread_id).knows_deleted(order)

    async def _skip_all(self, alert: Sequence[Device], why: str, note: str) -> PushSummary:
        """Record every device as skipped and why, so the delivery log answers for the event."""
        fan, now = self.fan, self.fan.clock()
        claimed = await fan.claim(self._key(), alert, now=now, event_id=self.event.event_id)
        outcome = Outcome(DeliveryState.SKIPPED, detail=why)
        await fan.deliveries.complete([(r, outcome) for r, _ in claimed.mine], fan.clock())
        log.info("%d devices skipped, %s: %s", len(alert), why, fan.tag)
        return PushSummary(devices=len(alert), skipped=len(alert), note=note)

    def _key(self) -> DeliveryKey:
        e = self.event
        return DeliveryKey(e.recipient_id, e.thread_id, e.message_id, _KINDS[e.kind], e.version)

    async def _fan_out(
        self, alert: Sequence[Device], snapshot: InboxSnapshot | None
    ) -> PushSummary:
        event, fan, now = self.event, self.fan, self.fan.clock()
        shown, claimed = await self._count_and_claim(alert, snapshot, now)
        if claimed.in_flight:
            log.info("%d devices in flight elsewhere: %s", claimed.in_flight, fan.tag)
        settled, skipped = await self._push_all(claimed.mine, now, shown)
        outcomes = settled.outcomes
        if shown.silenced and event.kind is not MessageEventKind.DELETED:
            outcomes = tuple((r, _as_muted(o)) for r, o in outcomes)
        await fan.deliveries.complete(outcomes + skipped, fan.clock())
        if shown.fell and shown.badge is not None:
            await update_badges(
                alert, shown.badge, pushers=fan.pushers, registry=fan.devices,
                settings=fan.settings, now=now, tag=fan.tag,
            )  # fmt: skip
        badge_only = sum(o.state is DeliveryState.MUTED for _, o in outcomes)
        return PushSummary(
            devices=len(alert),
            delivered=settled.delivered - badge_only,
            skipped=claimed.done + claimed.in_flight + len(skipped) + badge_only,
            failed=settled.failed,
            retry_needed=settled.retry_needed or bool(claimed.in_flight),
            note="muted" if shown.silenced else "",
        )

    async def _count_and_claim(
        self, alert: Sequence[Device], snapshot: InboxSnapshot | None, now: datetime
    ) -> tuple[Presentation, Claimed]:
        """Count the message and claim its pushes concurrently (one round trip of latency).

        If counting fails, our claims are released before the error is raised, so the
        redelivery claims them again at once.
        """
        event, fan = self.event, self.fan
        counting = (
            _uncounted() if snapshot is None else note_message(self.inbox, event, snapshot, now)
        )
        claimed, shown = await both(
            fan.claim(self._key(), alert, now=now, event_id=event.event_id), counting
        )
        if isinstance(shown, BaseException):
            if isinstance(claimed, Claimed) and claimed.mine:
                released = Outcome(DeliveryState.RELEASED, detail="counting failed: released")
                await fan.deliveries.complete([(r, released) for r, _ in claimed.mine], now)
            raise shown
        if isinstance(claimed, BaseException):
            raise claimed
        return shown, claimed

    async def _push_all(
        self, mine: Sequence[tuple[DeliveryRecord, Device]], now: datetime, shown: Presentation
    ) -> tuple[Settled[DeliveryRecord], tuple[tuple[DeliveryRecord, Outcome], ...]]:
        ready: list[tuple[DeliveryRecord, Device, Notification, str]] = []
        early: list[Attempt] = []
        skipped: list[tuple[DeliveryRecord, Outcome]] = []
        for record, device in mine:
            built = await self._notification(record, device, now, shown)
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
        self, record: DeliveryRecord, device: Device, now: datetime, shown: Presentation
    ) -> tuple[Notification, str] | Outcome | ApnsError:
        """The device's notification and what the log notes of its payload, a skip (muted, over
        the background budget), or why it can't be sent."""
        event, settings = self.event, self.fan.settings
        try:
            if event.kind is not MessageEventKind.DELETED and shown.silenced:
                if shown.badge_update and shown.badge is not None:
                    return badge_notification(device, shown.badge), ""
                return Outcome(DeliveryState.MUTED, detail="thread muted by the recipient")
            if event.kind is not MessageEventKind.DELETED:
                options = shown.payload_options(settings)
                notification, payload = chat_push(event, device, settings, now, options=options)
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


def _as_muted(outcome: Outcome) -> Outcome:
    """A silenced thread's badge update is logged as ``muted`` once APNs took it."""
    if outcome.state is not DeliveryState.DELIVERED:
        return outcome
    return replace(outcome, state=DeliveryState.MUTED, detail="badge update only: thread muted")


async def _uncounted() -> Presentation:
    return Presentation(badge=None)

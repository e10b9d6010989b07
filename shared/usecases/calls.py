"""Use case: an ACS ``IncomingCall`` rings each of the callee's VoIP (PushKit) devices.

ACS sends one ``IncomingCall`` per callee, naming them in ``data.to``. For a callee who is an ACS
user:

1. Drop the call if it is older than ``CALL_MAX_AGE_SECONDS`` (its event time against the
   injected clock): a late VoIP push rings a call that is over. Dropped calls are acknowledged,
   never retried.
2. Build the payload once (:func:`shared.domain.chat_payload.build_call_payload`: what the ACS
   Calling SDK's ``PushNotificationInfo.fromDictionary`` reads, within 5120 bytes).
3. Load the callee's devices (one partition query) and keep the VoIP ones; read the callee's
   inbox at the same time (one point read, :mod:`shared.storage.inbox`): in their quiet hours with
   ``"calls": "silent"`` nobody is rung (PushKit requires every VoIP push to report a call, so a
   silent one cannot be sent) and the claims are logged ``skipped``.
4. Claim the delivery for each, exactly as chat push does (:mod:`shared.push.pipeline`): the key is
   (callee, :data:`~shared.storage.deliveries.CALLS_THREAD`, call id, ``call``, version 0) and the
   device,
   the call id being ``serverCallId``, else ``correlationId``, else the event id.
5. Send each ``apns-push-type: voip`` to ``<bundle id>.voip`` with priority 10 and
   ``apns-expiration: 0`` (one delivery attempt, never stored: a phone that is offline now must
   not ring later), concurrently, within the call's remaining freshness.
6. Settle the outcomes as chat push does (:mod:`shared.push.pipeline`: a 410 removes the
   device, token failures are counted, many at once are a configuration error) and write them
   to the log.

**Retryable failures** (429, 5xx, no answer, a claim in flight in another invocation). Event
Grid redelivers a failed event after about 10 s at the earliest (then 30 s, 1 min, ...), so a
retry can only ring while the call is still fresh then. The result asks for a retry
(``retry_needed``: the trigger raises, Event Grid redelivers, and only the unfinished devices are
pushed again) only when the call's age plus :data:`EVENT_GRID_FIRST_RETRY` is still within the
maximum age. Otherwise the released claims are closed as ``failed`` ("too old to ring after a
retry") and the event is acknowledged. A call without an event time (Event Grid always sets one)
is rung but never retried: how late a retry would ring cannot be told.

Malformed events, unreadable call contexts and callees that are not ACS users are logged and
acknowledged: no retry can fix them. Storage outages propagate as
:class:`~shared.errors.TransientError` (the trigger lets them fail the invocation).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Final, Protocol

from shared.apns.notification import TOPIC_SUFFIXES, Notification, Priority, PushType
from shared.domain.chat_payload import ChatPayload, PayloadError, build_call_payload
from shared.domain.devices import Device, DeviceKind
from shared.domain.events import (
    EventSource,
    IncomingCallEvent,
    describe,
)
from shared.push.outcomes import ConfigAlarm, DeviceOutcomes
from shared.push.pipeline import Attempt, FanOut, Pushers, PushSummary, freshest
from shared.settings import Settings
from shared.storage.deliveries import (
    CALLS_THREAD,
    DeliveryKey,
    DeliveryKind,
    DeliveryRecord,
    DeliveryState,
    DeliveryStore,
    Outcome,
)
from shared.storage.inbox import EMPTY, InboxSnapshot, InboxStore, UnreadableInboxError
from shared.usecases.event_intake import parsed_or_acknowledged

log = logging.getLogger(__name__)

EVENT_GRID_FIRST_RETRY: Final = timedelta(seconds=10)
"""The earliest Event Grid redelivers a failed event (azure-docs delivery-and-retry)."""
MIN_SEND_BUDGET_SECONDS: Final = 1.0  # enough for a connection and one answer
VOIP_EXPIRATION: Final = 0  # Apple: 0 means one delivery attempt, the push is not stored
GIVEN_UP: Final = "the call is too old to ring after a retry: given up"
QUIET: Final = "quiet hours: the callee silenced calls"


class CallDevices(DeviceOutcomes, Protocol):
    """Port: the registry operations a call push needs (``shared.storage.devices.DeviceStore``)."""

    async def list_for_user(self, user_id: str) -> list[Device]:
        """Every device of ``user_id`` (one partition query)."""
        ...


def call_id(event: IncomingCallEvent) -> str:
    """The id a call's deliveries are keyed by: serverCallId, else correlationId, else event id."""
    return event.server_call_id or event.correlation_id or event.event_id


def call_key(event: IncomingCallEvent) -> DeliveryKey:
    """The delivery-log key of a call for its callee (one per call; no edits, version 0)."""
    return DeliveryKey(event.to_id, CALLS_THREAD, call_id(event), DeliveryKind.CALL, 0)


def call_age(event: IncomingCallEvent, now: datetime) -> timedelta | None:
    """How old the call is at ``now`` by its event time (None without one)."""
    return None if event.event_time is None else now - event.event_time


def is_stale(age: timedelta | None, max_age: timedelta) -> bool:
    """Whether a call of this age is over: dropped, never rung."""
    return age is not None and age > max_age


def worth_retrying(age: timedelta | None, max_age: timedelta) -> bool:
    """Whether Event Grid's earliest redelivery would still find the call ringing."""
    return age is not None and age + EVENT_GRID_FIRST_RETRY <= max_age


def send_budget(age: timedelta | None, max_age: timedelta, retry_budget: float) -> float:
    """Seconds the APNs sends may take: the retry budget, cut to what is left of the call
    (but never below ``MIN_SEND_BUDGET_SECONDS`` by the cut)."""
    left = (max_age - (age or timedelta())).total_seconds()
    return min(retry_budget, max(MIN_SEND_BUDGET_SECONDS, left))


def call_notification(built: ChatPayload, device: Device) -> Notification:
    """The VoIP push of ``built`` to one device: its ``.voip`` topic, priority 10, expiration 0."""
    return Notification(
        device_token=device.token,
        topic=device.topic + TOPIC_SUFFIXES[PushType.VOIP],
        push_type=PushType.VOIP,
        payload=built.encoded,
        priority=Priority.IMMEDIATE,
        expiration=VOIP_EXPIRATION,
    )


async def handle_call_event(
    event: object,
    *,
    devices: CallDevices,
    deliveries: DeliveryStore,
    inbox: InboxStore,
    pushers: Pushers,
    settings: Settings,
    clock: Callable[[], datetime],
    alarm: ConfigAlarm | None = None,
    source: EventSource | None = None,
) -> PushSummary:
    """Handle one event of the calls subscription (its delivered JSON, or already parsed).

    See the module doc; ``source`` as for chat events (``shared.usecases.chat.handle_chat_event``).
    Raises TransientError subclasses when storage does not answer.
    """
    parsed = parsed_or_acknowledged(event, source=source, what="call", log=log)
    if isinstance(parsed, PushSummary):
        return parsed
    if not isinstance(parsed, IncomingCallEvent):
        log.warning("non-call event on the calls subscription acknowledged: %s", describe(parsed))
        return PushSummary(note="not an IncomingCall")
    fan = FanOut(devices, deliveries, pushers, settings, clock, alarm, describe(parsed))
    return await _Ring(parsed, fan, inbox).run()


@dataclass(frozen=True, slots=True)
class _Ring:
    """One call's fan-out to the callee's VoIP devices (state kept here so steps stay short)."""

    event: IncomingCallEvent
    fan: FanOut[CallDevices]
    inbox: InboxStore

    @property
    def max_age(self) -> timedelta:
        return timedelta(seconds=self.fan.settings.call_max_age_seconds)

    async def run(self) -> PushSummary:
        event, fan = self.event, self.fan
        if not event.to_is_acs_user:
            log.info("call to a non-ACS callee acknowledged: %s", fan.tag)
            return PushSummary(note="callee is not an ACS user")
        age = call_age(event, fan.clock())
        if is_stale(age, self.max_age):
            seconds = age.total_seconds() if age is not None else 0.0
            log.info("call %.1f s old dropped, nobody rung: %s", seconds, fan.tag)
            return PushSummary(note="stale")
        try:
            built = build_call_payload(event)
        except PayloadError as exc:
            log.warning("call acknowledged, no VoIP payload can be built (%s): %s", exc, fan.tag)
            return PushSummary(note="unreadable call")
        found, snapshot = await asyncio.gather(
            fan.devices.list_for_user(event.to_id), self._callee_inbox()
        )
        listed = freshest(found, fan.settings.max_devices_per_user)
        voip = [d for d in listed if d.kind is DeviceKind.VOIP]
        if not voip:
            log.info("callee has no VoIP devices: %s", fan.tag)
            return PushSummary(note="no devices")
        quiet = snapshot.inbox.preferences.quiet_hours
        if quiet is not None and not quiet.rings(fan.clock()):
            return await self._silenced(voip)
        return await self._fan_out(voip, built)

    async def _callee_inbox(self) -> InboxSnapshot:
        """The callee's inbox; an unreadable one rings anyway (a missed call is worse)."""
        try:
            return await self.inbox.read(self.event.to_id)
        except UnreadableInboxError as exc:
            log.error("callee's inbox unreadable, ringing anyway (%s): %s", exc, self.fan.tag)
            return EMPTY

    async def _silenced(self, voip: Sequence[Device]) -> PushSummary:
        event, fan, now = self.event, self.fan, self.fan.clock()
        claimed = await fan.claim(call_key(event), voip, now=now, event_id=event.event_id)
        skipped = Outcome(DeliveryState.SKIPPED, detail=QUIET)
        await fan.deliveries.complete([(r, skipped) for r, _ in claimed.mine], now)
        log.info("call not rung, %d VoIP devices: %s: %s", len(voip), QUIET, fan.tag)
        return PushSummary(devices=len(voip), skipped=len(voip), note="quiet hours")

    async def _fan_out(self, voip: Sequence[Device], built: ChatPayload) -> PushSummary:
        event, fan, now = self.event, self.fan, self.fan.clock()
        claimed = await fan.claim(call_key(event), voip, now=now, event_id=event.event_id)
        budget = send_budget(
            call_age(event, now), self.max_age, fan.settings.apns_retry_budget_seconds
        )
        mine = claimed.mine
        answers = await fan.send([(d, call_notification(built, d)) for _, d in mine], budget=budget)
        settled = await fan.settle(
            [Attempt(r, d, a) for (r, d), a in zip(mine, answers, strict=True)]
        )
        unfinished = settled.released + claimed.in_flight
        retry = unfinished > 0 and worth_retrying(call_age(event, fan.clock()), self.max_age)
        outcomes = settled.outcomes if retry else _give_up(settled.outcomes)
        if unfinished and not retry:
            log.warning(
                "%d VoIP devices not rung and the call would be over before a redelivery: "
                "acknowledged: %s",
                unfinished,
                fan.tag,
            )
        await fan.deliveries.complete(outcomes, fan.clock())
        states = [o.state for _, o in outcomes]
        return PushSummary(
            devices=len(voip),
            delivered=states.count(DeliveryState.DELIVERED),
            skipped=claimed.done + claimed.in_flight,
            failed=states.count(DeliveryState.FAILED),
            retry_needed=retry,
        )


def _give_up(
    outcomes: Sequence[tuple[DeliveryRecord, Outcome]],
) -> tuple[tuple[DeliveryRecord, Outcome], ...]:
    """Close released claims as failed: no redelivery will come while the call still rings."""
    return tuple(
        (record, _closed(outcome)) if outcome.state is DeliveryState.RELEASED else (record, outcome)
        for record, outcome in outcomes
    )


def _closed(outcome: Outcome) -> Outcome:
    detail = f"{outcome.detail}; {GIVEN_UP}" if outcome.detail else GIVEN_UP
    return replace(outcome, state=DeliveryState.FAILED, detail=detail[:500])

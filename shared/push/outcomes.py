"""What an APNs answer does to a device and to its delivery claim.

Apple (reference "Handling notification responses from APNs") and our reading of it:

- 200: delivered.
- 410 Unregistered / ExpiredToken: failed; remove the device unless it registered again after
  the 410's timestamp (a reinstalled app may register the same device again).
- 400 BadDeviceToken / DeviceTokenNotForTopic: failed; counted on the device, which is removed
  only when the reason repeats ``BAD_TOKEN_REMOVE_AFTER`` times over time, and never when the
  devices of ``CONFIG_ERROR_THRESHOLD`` or more *users* of one app fail together: that is a
  wrong environment, topic or key (configuration), so log an error and delete nothing. Users,
  not devices: one user's many failing tokens are that user's dead (or fake) devices, and must
  not switch removal off for everyone.
- 400 BadTopic: failed; configuration (the app's bundle ID).
- 403 provider token or certificate (InvalidProviderToken, Forbidden, ...): released, logged as
  an error, and the invocation fails, so Event Grid retries once the key is fixed.
- 429 / 5xx / no answer within the budget: released; the invocation fails, Event Grid redelivers.
- Any other rejection: failed; a request we built wrong (logged as an error).

The rules take a :class:`Settling` view of each device: what settling needs (who it is, and its
token-failure history), whichever use case pushed it. A renewal wake settles exactly as a chat
push does: its schedule entry carries that history, so a wake answered 200 clears the count.
Reasons are classified by :class:`~shared.apns.response.PushResult` itself, not here.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Final, Generic, Protocol, TypeVar

from shared.apns.errors import ApnsError, ApnsUnavailable, CredentialError
from shared.apns.response import PushResult
from shared.storage.deliveries import DeliveryState, Outcome

log = logging.getLogger(__name__)

BAD_TOKEN_SPACING: Final = timedelta(minutes=10)

T = TypeVar("T")


class Disposition(enum.StrEnum):
    """The class of an APNs answer that decides what happens next."""

    DELIVERED = "delivered"
    UNREGISTERED = "unregistered"  # 410
    BAD_TOKEN = "bad_token"  # noqa: S105 - BadDeviceToken, DeviceTokenNotForTopic
    CONFIGURATION = "configuration"  # many bad tokens of one app at once, BadTopic
    CREDENTIALS = "credentials"  # provider token or certificate: fail the invocation
    RETRY = "retry"  # 429, 5xx, no answer: release and let Event Grid redeliver
    REJECTED = "rejected"  # a request APNs will never accept as built


def classify(answer: PushResult | ApnsError) -> Disposition:
    """The disposition of one APNs answer (a result, or the error its send raised)."""
    if isinstance(answer, ApnsUnavailable):
        return Disposition.RETRY
    if isinstance(answer, CredentialError):
        return Disposition.CREDENTIALS
    if isinstance(answer, ApnsError):
        return Disposition.REJECTED
    if answer.ok:
        return Disposition.DELIVERED
    if answer.unregistered:
        return Disposition.UNREGISTERED
    if answer.bad_token:
        return Disposition.BAD_TOKEN
    if answer.credentials_refused:
        return Disposition.CREDENTIALS
    if answer.bad_topic:
        return Disposition.CONFIGURATION
    if answer.retryable:
        return Disposition.RETRY
    return Disposition.REJECTED


@dataclass(frozen=True, slots=True)
class Settling:
    """What settling an answer needs of a device: who it is, and its token-failure history."""

    user_id: str
    device_id: str
    topic: str
    short_token: str  # for logs only
    bad_token_count: int = 0
    last_result: str | None = None
    last_result_at: datetime | None = None


class DeviceOutcomes(Protocol):
    """Port: the registry operations an outcome may call for (``storage.devices.DeviceStore``)."""

    async def remove_if_registered_before(
        self, user_id: str, device_id: str, when: datetime
    ) -> object | None:
        """Remove the device unless it (re-)registered after ``when``; the removed device."""
        ...

    async def record_result(
        self, user_id: str, device_id: str, result: str, *, bad_token: bool, at: datetime
    ) -> int | None:
        """Record a push result; the bad-token count after it, or None if the device is gone."""
        ...


@dataclass(frozen=True, slots=True)
class Answered(Generic[T]):
    """One device's push: what it was for, the device as settling sees it, and what its send
    came back with.

    ``item`` is what the caller wants each outcome beside, carried through untouched: the
    delivery-log claim (chat and calls), the device (badge updates), the schedule key (renewal).
    """

    item: T
    device: Settling
    answer: PushResult | ApnsError
    note: str = ""  # what the delivery log adds about the payload (given up to fit, substituted)


@dataclass(frozen=True, slots=True)
class Settled(Generic[T]):
    """How settling ended: each answer's item beside its outcome (in the order given), and how
    many ended each way."""

    outcomes: tuple[tuple[T, Outcome], ...] = ()
    delivered: int = 0
    failed: int = 0
    released: int = 0
    removed: int = 0

    @property
    def retry_needed(self) -> bool:
        """True when a claim was released: the push must be tried again."""
        return self.released > 0


@dataclass
class ConfigAlarm:
    """Counts the users whose devices failed per (app, reason) over a short window, across
    fan-outs.

    A misconfigured app makes every recipient fail at once, which this catches within one
    process; one user registering many bad tokens counts once. ``clock`` is injected.
    """

    threshold: int
    clock: Callable[[], datetime]
    window: timedelta = timedelta(minutes=5)
    _seen: dict[tuple[str, str], dict[str, datetime]] = field(default_factory=dict)

    def observe(self, topic: str, reason: str, user_ids: Iterable[str]) -> int:
        """Add users whose devices failed; returns how many distinct users failed so within the
        window."""
        now = self.clock()
        seen = self._seen.setdefault((topic, reason), {})
        for user_id in user_ids:
            seen[user_id] = now
        for user_id, at in list(seen.items()):
            if now - at > self.window:
                del seen[user_id]
        return len(seen)


@dataclass(frozen=True, slots=True)
class OutcomeRules:
    """The thresholds settling applies (``BAD_TOKEN_REMOVE_AFTER``, ``CONFIG_ERROR_THRESHOLD``)."""

    bad_token_remove_after: int
    config_error_threshold: int
    alarm: ConfigAlarm | None = None


def _outcome(state: DeliveryState, answer: PushResult | ApnsError, detail: str) -> Outcome:
    if isinstance(answer, PushResult):
        reason = None if answer.reason is None else answer.reason.value
        return Outcome(
            state, answer.status, reason, answer.apns_id, answer.attempts, detail or None
        )
    apns_id = getattr(answer, "apns_id", None) or None
    attempts = int(getattr(answer, "attempts", 0))
    name = type(answer).__name__
    text = f"{name}: {answer}" if not detail else f"{name}: {answer} ({detail})"
    return Outcome(state, None, name, apns_id, attempts, text[:500])


def _reason_text(answer: PushResult | ApnsError) -> str:
    if isinstance(answer, PushResult):
        return answer.reason.value if answer.reason is not None else str(answer.status)
    return type(answer).__name__


def configuration_failures(
    answered: Sequence[Answered[T]], threshold: int, alarm: ConfigAlarm | None = None
) -> set[str]:
    """Device ids whose token/topic failures look like configuration, not dead devices: those
    of ``threshold`` or more distinct users of one app failing with one reason."""
    groups: dict[tuple[str, str], list[Settling]] = {}
    for a in answered:
        if classify(a.answer) is Disposition.BAD_TOKEN:
            groups.setdefault((a.device.topic, _reason_text(a.answer)), []).append(a.device)
    suspects: set[str] = set()
    for (topic, reason), failed in groups.items():
        users = {d.user_id for d in failed}
        count = (
            len(users) if alarm is None else max(len(users), alarm.observe(topic, reason, users))
        )
        if count >= threshold:
            log.error(
                "configuration error suspected: devices of %d users of app %s answered %s "
                "together; deleting nothing (check the APNs environment, topic and key)",
                count,
                topic,
                reason,
            )
            suspects.update(d.device_id for d in failed)
    return suspects


async def settle(
    answered: Sequence[Answered[T]],
    *,
    devices: DeviceOutcomes,
    now: datetime,
    rules: OutcomeRules,
    correlation: str = "",
) -> Settled[T]:
    """Decide each answer's outcome and apply it to the registry (concurrently).

    Raises TransientError subclasses when the registry does not answer.
    """
    config = configuration_failures(answered, rules.config_error_threshold, rules.alarm)
    remove_after = rules.bad_token_remove_after
    settling = [
        _settle_one(a, devices, now, remove_after, a.device.device_id in config) for a in answered
    ]
    # One device (the common chat event) is settled in place: gather would wrap it in a task.
    decided = [await settling[0]] if len(settling) == 1 else await asyncio.gather(*settling)
    counts: Counter[str] = Counter()
    for a, (outcome, removed) in zip(answered, decided, strict=True):
        counts[outcome.state.value] += 1
        counts["removed"] += int(removed)
        _log_outcome(correlation, a.device, outcome)
    return Settled(
        outcomes=tuple(
            (a.item, outcome) for a, (outcome, _) in zip(answered, decided, strict=True)
        ),
        delivered=counts[DeliveryState.DELIVERED.value],
        failed=counts[DeliveryState.FAILED.value],
        released=counts[DeliveryState.RELEASED.value],
        removed=counts["removed"],
    )


async def _settle_one(
    a: Answered[T], devices: DeviceOutcomes, now: datetime, remove_after: int, configuration: bool
) -> tuple[Outcome, bool]:
    outcome, removed = await _settle_answer(a, devices, now, remove_after, configuration)
    if a.note:
        detail = a.note if not outcome.detail else f"{outcome.detail}; {a.note}"
        outcome = replace(outcome, detail=detail[:500])
    return outcome, removed


async def _settle_answer(
    a: Answered[T], devices: DeviceOutcomes, now: datetime, remove_after: int, configuration: bool
) -> tuple[Outcome, bool]:
    kind = Disposition.CONFIGURATION if configuration else classify(a.answer)
    device = a.device
    if kind is Disposition.DELIVERED:
        if device.bad_token_count:
            await devices.record_result(
                device.user_id, device.device_id, "200", bad_token=False, at=now
            )
        return _outcome(DeliveryState.DELIVERED, a.answer, ""), False
    if kind is Disposition.UNREGISTERED:
        return await _unregistered(a, devices, now)
    if kind is Disposition.BAD_TOKEN and isinstance(a.answer, PushResult):
        return await _bad_token(a, a.answer, devices, now, remove_after)
    if kind is Disposition.CONFIGURATION:
        detail = "configuration error suspected: device kept"
        return _outcome(DeliveryState.FAILED, a.answer, detail), False
    if kind is Disposition.CREDENTIALS:
        log.error(
            "APNs refused our credentials for app %s: %s; the event will be retried",
            device.topic,
            _reason_text(a.answer),
        )
        detail = "credentials refused: released for retry"
        return _outcome(DeliveryState.RELEASED, a.answer, detail), False
    if kind is Disposition.RETRY:
        detail = "no answer within the retry budget: released"
        return _outcome(DeliveryState.RELEASED, a.answer, detail), False
    if not isinstance(a.answer, PushResult):
        # Refused before sending (no credentials for the app, a request that cannot be built):
        # APNs never saw it, so the log must not say APNs rejected it.
        log.error("push not sent device=%s app=%s: %s", device.short_token, device.topic, a.answer)
        return _outcome(DeliveryState.FAILED, a.answer, "not sent"), False
    log.error(
        "APNs rejected a push we built device=%s app=%s: %s",
        device.short_token,
        device.topic,
        _reason_text(a.answer),
    )
    return _outcome(DeliveryState.FAILED, a.answer, "request rejected"), False


async def _unregistered(
    a: Answered[T], devices: DeviceOutcomes, now: datetime
) -> tuple[Outcome, bool]:
    answer = a.answer
    when = answer.unregistered_at if isinstance(answer, PushResult) else None
    removed = (
        await devices.remove_if_registered_before(a.device.user_id, a.device.device_id, when or now)
        is not None
    )
    detail = "device removed" if removed else "device kept: registered again after the 410"
    return _outcome(DeliveryState.FAILED, answer, detail), removed


def counts_again(device: Settling, reason: str, now: datetime) -> bool:
    """Whether a token failure counts towards removal: once per ``BAD_TOKEN_SPACING`` per reason.

    Repeats "over time" means separate occasions: a burst of pushes (a busy chat, a retry) that
    fail within minutes of each other is one piece of evidence, not several.
    """
    last = device.last_result_at
    return not (
        device.last_result == reason and last is not None and now - last < BAD_TOKEN_SPACING
    )


async def _bad_token(
    a: Answered[T], answer: PushResult, devices: DeviceOutcomes, now: datetime, remove_after: int
) -> tuple[Outcome, bool]:
    device = a.device
    reason = _reason_text(answer)
    count: int | None = device.bad_token_count
    if counts_again(device, reason, now):
        count = await devices.record_result(
            device.user_id, device.device_id, reason, bad_token=True, at=now
        )
    removed = False
    if count is not None and count >= remove_after:
        gone = await devices.remove_if_registered_before(device.user_id, device.device_id, now)
        removed = gone is not None
    detail = f"{reason} {count or 0}/{remove_after}" + (": device removed" if removed else "")
    return _outcome(DeliveryState.FAILED, answer, detail), removed


def _log_outcome(correlation: str, device: Settling, outcome: Outcome) -> None:
    level = logging.INFO if outcome.state is DeliveryState.DELIVERED else logging.WARNING
    log.log(
        level,
        "push %s device=%s %s status=%s reason=%s apns_id=%s attempts=%d %s",
        correlation,
        device.short_token,
        outcome.state,
        outcome.status,
        outcome.reason,
        outcome.apns_id,
        outcome.attempts,
        outcome.detail or "",
    )

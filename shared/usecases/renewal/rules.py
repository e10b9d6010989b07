"""Renewal rules: the settings the renewal use cases need, and the pure decisions on a device."""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Final

from shared.apns.notification import Notification, Priority, PushType
from shared.apns.payload import background_payload, encode_payload
from shared.domain.devices import Device, DeviceKind
from shared.push.budget import BackgroundBudget, spend
from shared.push.outcomes import OutcomeRules
from shared.settings import Settings
from shared.storage.renewal_schedule import (
    BUCKET_MINUTES,
    EntryState,
    bucket_for,
    bucket_start,
    due_at,
)

BUCKET: Final = timedelta(minutes=BUCKET_MINUTES)


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

    @property
    def budget(self) -> BackgroundBudget:
        """The per-device background budget wakes are drawn from."""
        return BackgroundBudget(self.max_per_hour, self.min_spacing)

    @property
    def outcomes(self) -> OutcomeRules:
        """The thresholds settling a wake's answer applies (as for chat pushes)."""
        return OutcomeRules(self.bad_token_remove_after, self.config_error_threshold)


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
    return Decision.WAKE if rules.budget.allows(state.sent, now) else Decision.LATER


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
    if not rules.budget.allows(device.background_sent, now):
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
        sent=spend(state.sent, now),
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

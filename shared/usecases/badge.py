"""Badge-only pushes: the app icon's number brought down on a user's devices when it falls.

When the user reads on one device (or an unread message is deleted, or they leave a thread),
their other devices still show the old number until something tells them. The push that does
is an **alert** push whose ``aps`` holds nothing but ``badge``:

- ``apns-push-type: alert``. Apple ("Sending notification requests to APNs"): use the alert type
  "for notifications that trigger a user interaction - for example, an alert, badge, or sound".
  A ``background`` push may not carry a badge at all (Apple, "Pushing background updates to your
  App": no alert, sound or badge), and those pushes share a budget of "two or three per hour" with
  the renewal wake-ups and withdraw pushes. A badge-only alert push is not a background push: it
  does not wake the app and costs nothing of that budget.
- ``apns-priority: 5`` ("send the notification based on power considerations on the user's
  device"): nothing is shown, so there is no reason to wake the radio now.
- ``apns-expiration: 0``: one delivery attempt, never stored. APNs keeps only the latest
  notification per app for an offline device; a stored badge update would replace an alert
  still waiting there. An offline device catches up from the next alert (every chat alert
  carries the count) or when the app opens.

Only alert devices get them (VoIP tokens carry no badge). Sends are best effort: an APNs outage
is logged, not retried (the next alert corrects the number); a 410 still removes the device
(:mod:`shared.push.outcomes`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime

from shared.apns.notification import Notification, Priority, PushType
from shared.apns.payload import alert_payload, encode_payload
from shared.domain.devices import Device, DeviceKind
from shared.push.outcomes import Answered, DeviceOutcomes, settle
from shared.push.pipeline import Pushers, Route, freshest, outcome_rules, send_all, settling_of
from shared.settings import Settings

log = logging.getLogger(__name__)

BADGE_EXPIRATION = 0  # one attempt, not stored: see the module doc


def badge_notification(device: Device, count: int) -> Notification:
    """The badge-only push setting ``device``'s app icon to ``count``."""
    return Notification(
        device_token=device.token,
        topic=device.topic,
        push_type=PushType.ALERT,
        payload=encode_payload(alert_payload(badge=max(0, count))),
        priority=Priority.CONSIDERATE,
        expiration=BADGE_EXPIRATION,
    )


async def update_badges(
    devices: Sequence[Device],
    count: int,
    *,
    pushers: Pushers,
    registry: DeviceOutcomes,
    settings: Settings,
    now: datetime,
    tag: str,
    except_device: str | None = None,
) -> int:
    """Send ``count`` to each alert device but ``except_device``; returns how many got it.

    Bounded like every fan-out to the ``MAX_DEVICES_PER_USER`` most recently renewed devices.

    Raises the registry's storage errors (a 410 removes the device); APNs failures are logged.
    """
    bounded = freshest(devices, settings.max_devices_per_user)
    targets = [d for d in bounded if d.kind is DeviceKind.ALERT and d.device_id != except_device]
    if not targets:
        return 0
    items = [(Route(d.topic, d.environment), badge_notification(d, count)) for d in targets]
    answers = await send_all(items, pushers, budget=settings.apns_retry_budget_seconds, tag=tag)
    settled = await settle(
        [Answered(d, settling_of(d), a) for d, a in zip(targets, answers, strict=True)],
        devices=registry,
        now=now,
        rules=outcome_rules(settings, None),
        correlation=tag,
    )
    if settled.released:
        log.warning(
            "badge update to %d of %d devices not delivered (not retried): %s",
            settled.released,
            len(targets),
            tag,
        )
    return settled.delivered

"""A registered device: the model every push and registration works on (no storage).

The Table Storage adapter that keeps them is :mod:`shared.storage.devices`.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass, field
from datetime import datetime

from shared.apns.notification import Environment


class DeviceKind(enum.StrEnum):
    """What the token is for: an alert (UIKit remote notifications) or a VoIP (PushKit) token."""

    ALERT = "alert"
    VOIP = "voip"


def device_id_for(token: str) -> str:
    """The deviceId of an APNs token: SHA-256 hex of its lowercase hex text."""
    return hashlib.sha256(token.lower().encode("ascii")).hexdigest()


@dataclass(frozen=True, slots=True)
class Device:
    """One registered device of one ACS user (what a push needs, plus bookkeeping)."""

    user_id: str  # ACS rawId, e.g. 8:acs:<resource>_<guid>
    device_id: str  # SHA-256 hex of the token
    token: str = field(repr=False)  # lowercase hex APNs (or PushKit) token
    kind: DeviceKind
    topic: str  # bundle ID; VoIP pushes go to topic + ".voip"
    environment: Environment
    registered_at: datetime
    renewed_at: datetime
    preview_key: bytes | None = field(default=None, repr=False)  # 64 bytes, unwrapped
    key_expires_at: datetime | None = None
    app_version: str | None = None
    locale: str | None = None
    stale: bool = False  # renewal gave up waking it; chat pushes continue with generic text
    bad_token_count: int = 0  # BadDeviceToken / DeviceTokenNotForTopic answers so far
    last_result: str | None = None
    background_sent: tuple[datetime, ...] = ()  # recent background pushes (budget)
    unanswered_wakes: int = 0  # renewal pushes not followed by a renewal
    etag: str | None = None
    last_result_at: datetime | None = None
    wake_at: datetime | None = None  # the last renewal push (renewal rate: renewed after it?)
    wake_sweep: str | None = None  # the renewal sweep that sent it

    def live_key(self, now: datetime) -> bytes | None:
        """The preview key if it has not expired at ``now``, else None."""
        if self.preview_key is None or self.key_expires_at is None:
            return None
        return self.preview_key if now < self.key_expires_at else None

    @property
    def short_token(self) -> str:
        """A token shortened for logs and listings (never log a full device token)."""
        return f"{self.token[:6]}…{self.token[-4:]}"

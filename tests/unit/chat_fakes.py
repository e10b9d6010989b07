"""Helpers of the chat push's unit tests: sample events, settings, a clock, devices, and a fake
APNs client. The storage fakes live in :mod:`tests.fakes`, one module per port.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from shared.apns.errors import ApnsError
from shared.apns.notification import Environment, Notification
from shared.apns.response import PushResult, Reason
from shared.domain.devices import Device, DeviceKind, device_id_for
from shared.settings import Settings, load_settings

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def sample(name: str) -> dict[str, Any]:
    """One sample event as the host hands it over (the first of an Event Grid array)."""
    body = json.loads((SAMPLES / name).read_text())
    return body[0] if isinstance(body, list) else body


def settings(**overrides: Any) -> Settings:
    """Default settings with a few fields replaced."""
    return replace(load_settings({}, require=False), **overrides)


class Clock:
    """A clock tests move by hand."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


def device(
    user: str,
    n: int,
    *,
    topic: str = "com.example.chat",
    kind: DeviceKind = DeviceKind.ALERT,
    environment: Environment = Environment.SANDBOX,
    registered_at: datetime = T0 - timedelta(days=1),
    **fields: Any,
) -> Device:
    """A registered device of ``user`` with a token derived from ``n``."""
    token = f"{n:02x}" * 32
    return Device(
        user_id=user,
        device_id=device_id_for(token),
        token=token,
        kind=kind,
        topic=topic,
        environment=environment,
        registered_at=registered_at,
        renewed_at=registered_at,
        **fields,
    )


@dataclass
class Sent:
    """One notification a fake APNs client was asked to send."""

    notification: Notification
    environment: Environment
    budget: float | None

    @property
    def payload(self) -> dict[str, Any]:
        return json.loads(self.notification.payload)


Answer = PushResult | ApnsError | Callable[[Notification], Any]


@dataclass
class FakeApns:
    """An APNs client that answers 200 unless a device token is scripted otherwise."""

    topic: str = "com.example.chat"
    script: dict[str, Answer] = field(default_factory=dict)
    sent: list[Sent] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0

    def answer(self, token: str, status: int, reason: Reason | None = None, **kw: Any) -> None:
        self.script[token] = PushResult(
            status, reason, "0" * 8 + "-0000-4000-8000-" + "0" * 12, **kw
        )

    def fail(self, token: str, error: ApnsError) -> None:
        self.script[token] = error

    async def send(
        self, n: Notification, *, environment: Environment, budget: float | None = None
    ) -> PushResult:
        n.validate()
        self.sent.append(Sent(n, environment, budget))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            scripted = self.script.get(n.device_token)
            if isinstance(scripted, ApnsError):
                raise scripted
            if isinstance(scripted, PushResult):
                return replace(scripted, apns_id=n.apns_id or scripted.apns_id)
            if callable(scripted):
                return await scripted(n)
            apns_id = n.apns_id or f"{len(self.sent):08x}-0000-4000-8000-000000000000"
            return PushResult(200, None, apns_id, None, None, 1)
        finally:
            self.in_flight -= 1

    def to(self, token: str) -> list[Sent]:
        return [s for s in self.sent if s.notification.device_token == token]

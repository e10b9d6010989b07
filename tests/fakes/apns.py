"""An APNs client in memory: the fake of the push pipeline's ``Pusher`` port
(:class:`shared.push.pipeline.Pusher`; the real one is :class:`shared.apns.client.ApnsClient`).

It answers at the level the pipeline sees, a :class:`PushResult` or a raised error per
notification, scripted per device token. The in-memory HTTP/2 server the APNs client itself is
tested against is :mod:`tests.fakes.apns_server`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from shared.apns.errors import ApnsError
from shared.apns.notification import Environment, Notification
from shared.apns.response import PushResult, Reason


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

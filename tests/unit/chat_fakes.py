"""In-memory fakes of the chat push's collaborators: registry, delivery log and APNs clients.

They keep the state the real adapters keep (so tests assert resulting state, not calls) and
follow the same rules: claims are created once and changed only under their ETag, the inbox row
is replaced only under its ETag, a 410 removes a device only if it registered before the
timestamp.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from shared.apns.errors import ApnsError
from shared.apns.notification import Environment, Notification
from shared.apns.response import PushResult, Reason
from shared.domain.devices import Device, DeviceKind, device_id_for
from shared.settings import Settings, load_settings
from shared.storage.deliveries import (
    ClaimSet,
    ClaimVerdict,
    DeliveryKey,
    DeliveryRecord,
    DeviceTarget,
    MessageState,
    Outcome,
    PurgeReport,
    new_claim,
    verdict,
)
from shared.storage.inbox import EMPTY, Inbox, InboxSnapshot, decode_inbox, encode_inbox

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


class FakeRegistry:
    """The device registry in a dict."""

    def __init__(self, *devices: Device) -> None:
        self.rows: dict[tuple[str, str], Device] = {(d.user_id, d.device_id): d for d in devices}

    def of(self, user: str) -> list[Device]:
        return [d for (u, _), d in self.rows.items() if u == user]

    async def list_for_user(self, user_id: str) -> list[Device]:
        return self.of(user_id)

    async def remove_if_registered_before(
        self, user_id: str, device_id: str, when: datetime
    ) -> Device | None:
        d = self.rows.get((user_id, device_id))
        if d is None or d.renewed_at > when:
            return None
        return self.rows.pop((user_id, device_id))

    async def record_result(
        self, user_id: str, device_id: str, result: str, *, bad_token: bool, at: datetime
    ) -> int | None:
        d = self.rows.get((user_id, device_id))
        if d is None:
            return None
        count = d.bad_token_count + 1 if bad_token else 0
        self.rows[(user_id, device_id)] = replace(
            d, bad_token_count=count, last_result=result, last_result_at=at
        )
        return count

    async def record_background_push(
        self, user_id: str, device_id: str, at: datetime, *, renewal: bool
    ) -> Device | None:
        d = self.rows.get((user_id, device_id))
        if d is None:
            return None
        d = replace(d, background_sent=(*d.background_sent, at))
        self.rows[(user_id, device_id)] = d
        return d


class FakeDeliveries:
    """The delivery log in a dict, with the table store's claim and ETag rules."""

    def __init__(self) -> None:
        self.rows: dict[tuple[DeliveryKey, str], DeliveryRecord] = {}
        self.tombstones: dict[tuple[str, str, str], datetime] = {}
        self.state_reads = 0
        self._etags = itertools.count(1)

    def _stamp(self, record: DeliveryRecord) -> DeliveryRecord:
        stamped = replace(record, etag=str(next(self._etags)))
        self.rows[(record.key, record.device.device_id)] = stamped
        return stamped

    async def claim(
        self,
        key: DeliveryKey,
        devices: Sequence[DeviceTarget],
        *,
        now: datetime,
        lease: timedelta,
        event_id: str,
    ) -> ClaimSet:
        claimed, done, busy = [], [], []
        for d in devices:
            prior = self.rows.get((key, d.device_id))
            what = verdict(prior, now)
            if prior is not None and what is ClaimVerdict.DONE:
                done.append(prior)
            elif prior is not None and what is ClaimVerdict.IN_FLIGHT:
                busy.append(prior)
            else:
                claim = new_claim(key, d, now=now, lease=lease, event_id=event_id, previous=prior)
                claimed.append(self._stamp(claim))
        return ClaimSet(tuple(claimed), tuple(done), tuple(busy))

    async def complete(
        self, results: Sequence[tuple[DeliveryRecord, Outcome]], now: datetime
    ) -> None:
        for record, outcome in results:
            current = self.rows.get((record.key, record.device.device_id))
            if current is not None and current.etag == record.etag:
                self._stamp(record.with_outcome(outcome, now))

    async def message_state(self, user_id: str, thread_id: str, message_id: str) -> MessageState:
        self.state_reads += 1
        return MessageState(self.tombstones.get((user_id, thread_id, message_id)))

    async def mark_deleted(
        self, user_id: str, thread_id: str, message_id: str, *, at: datetime, event_id: str
    ) -> None:
        self.tombstones[(user_id, thread_id, message_id)] = at

    async def history(self, user_id: str, thread_id: str, message_id: str) -> list[DeliveryRecord]:
        return [
            r
            for (k, _), r in self.rows.items()
            if (k.user_id, k.thread_id, k.message_id) == (user_id, thread_id, message_id)
        ]

    async def purge(self, *, now: datetime, retention: timedelta) -> PurgeReport:
        old = [k for k, r in self.rows.items() if r.claimed_at < now - retention]
        for k in old:
            del self.rows[k]
        return PurgeReport(records=len(old))


class FakeInbox:
    """The inbox table in a dict: rows stored as the table stores them (the JSON), ETag-guarded.

    Every read and write yields to the event loop first, so concurrent changes interleave as
    they do against storage.
    """

    def __init__(self) -> None:
        self.rows: dict[str, tuple[str, str]] = {}
        self.reads = 0
        self.writes = 0
        self._etags = itertools.count(1)

    async def read(self, user_id: str) -> InboxSnapshot:
        await asyncio.sleep(0)
        self.reads += 1
        row = self.rows.get(user_id)
        return EMPTY if row is None else InboxSnapshot(decode_inbox(row[0]), row[1])

    async def write(self, user_id: str, prior: InboxSnapshot, inbox: Inbox) -> InboxSnapshot | None:
        await asyncio.sleep(0)
        current = self.rows.get(user_id)
        if (current is None) != (prior.etag is None):
            return None
        if current is not None and current[1] != prior.etag:
            return None
        self.writes += 1
        etag = str(next(self._etags))
        self.rows[user_id] = (encode_inbox(inbox), etag)
        return InboxSnapshot(inbox, etag)

    def of(self, user_id: str) -> Inbox:
        row = self.rows.get(user_id)
        return Inbox() if row is None else decode_inbox(row[0])


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

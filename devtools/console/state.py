"""The console's model: phones, the wire, the messages it sent, and one refresh step.

:meth:`ConsoleState.refresh` reads what changed (new simulator requests since the last one seen,
the devices and renewal tables every few seconds or when a push names an unknown token, the
delivery log of pushes not yet settled), applies each delivered push to its phone's lock screen
and hands it to the phone's app when the console runs one (a reference device: it renews its
key, proves a token, reports a call), and says whether anything visible changed.
:meth:`ConsoleState.snapshot` is the JSON the page draws.

Phones: every registered device is a phone (a device row of the devices table), except the
tokens of a phone whose app the console runs (a :class:`PhoneAgent`:
:class:`~devtools.console.reference_phone.ReferencePhone`), which are one phone with both of its
tokens. A phone whose tokens have all left the registry (APNs answered 410 and the app removed
it, or its app deleted it) leaves the page.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from devtools.console.acs_events import ChatMessage
from devtools.console.lockscreen import LockScreen
from devtools.console.sources import AppTables, DeviceRow, Simulator, SimulatorUnavailableError
from devtools.reference_device import Push
from shared.push.budget import next_background_at
from shared.usecases.delivery_log import record_json

log = logging.getLogger(__name__)

WIRE_KEPT = 300  # simulator requests kept for the page
ACTIVITY_KEPT = 80
REGISTRY_EVERY = 2.0  # seconds between two reads of the devices and renewals tables
LOG_EVERY = 1.0  # seconds between two reads of one message's delivery log while unsettled
LOG_SETTLED_AFTER = 15.0  # a final log older than this is not read again
FINAL = frozenset({"delivered", "failed", "skipped"})
CALLS_THREAD = "calls"  # the delivery log's thread of calls (shared/storage/deliveries.py)


class PhoneAgent(Protocol):
    """A phone whose app the console runs: it holds keys and acts on the pushes it receives."""

    name: str
    source: str

    @property
    def user_id(self) -> str: ...

    @property
    def tokens(self) -> dict[str, str]: ...

    @property
    def key_expires_at(self) -> datetime | None: ...

    def banner_ids(self) -> set[str]:
        """The identifiers of the notifications the phone still shows."""
        ...

    def app_log(self) -> list[dict[str, Any]]:
        """What the app did lately, newest first."""
        ...

    async def live_keys(self) -> list[str]:
        """The keys its notification service extension would try now (base64)."""
        ...

    async def handle_push(self, push: Push) -> list[str]:
        """Let the app act on a delivered push; lines for the activity list."""
        ...

    async def end_call(self, call_id: str, *, accept: bool) -> None:
        """The user answers or declines the ringing call."""
        ...

    def close(self) -> None:
        """Release what the phone holds (its app left the page)."""
        ...


def device_id_for(token: str) -> str:
    """The app's deviceId of a token: SHA-256 of its lowercase hex (docs/architecture.md)."""
    return hashlib.sha256(token.lower().encode("ascii")).hexdigest()


def short_token(token: str) -> str:
    """A token as the app's logs show it."""
    return f"{token[:6]}…{token[-4:]}" if len(token) > 12 else token


def short_user(raw_id: str) -> str:
    """An ACS rawId shortened for display."""
    return f"{raw_id[:6]}…{raw_id[-6:]}" if len(raw_id) > 16 else raw_id


def iso(when: datetime | None) -> str | None:
    """ISO 8601 UTC with a Z, or None."""
    return None if when is None else when.astimezone(UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class Rules:
    """The app's settings the phones' panels explain."""

    renewal_lead: timedelta = timedelta(minutes=10)
    max_per_hour: int = 2
    min_spacing: timedelta = timedelta(minutes=20)


@dataclass
class Phone:
    """One phone on the page."""

    id: str
    user_id: str
    tokens: dict[str, str]  # kind -> token
    agent: PhoneAgent | None = None
    screen: LockScreen = field(default_factory=LockScreen)
    rows: dict[str, DeviceRow] = field(default_factory=dict)  # kind -> registry row
    seen_registered: bool = False

    @property
    def source(self) -> str:
        return self.agent.source if self.agent is not None else "registry"


@dataclass
class SentMessage:
    """A chat message the console sent through the webhook, and what became of it."""

    message: ChatMessage
    sender_label: str
    recipient_label: str
    state: str = "sent"  # sent, edited, deleted
    events: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class WireEntry:
    """One request the simulator logged, and the delivery-log key it belongs to."""

    record: dict[str, Any]
    link: dict[str, str] | None
    what: str


@dataclass
class LogEntry:
    """One message's delivery log for one user, as last read."""

    records: list[dict[str, Any]] = field(default_factory=list)
    read_at: float = 0.0
    wanted_at: float = 0.0


def link_of(record: Mapping[str, Any], user_id: str | None) -> tuple[dict[str, str] | None, str]:
    """The delivery-log key (user, thread, message, kind) of a request, and what it was."""
    headers: Mapping[str, str] = record.get("headers") or {}
    payload = record.get("payload")
    payload = payload if isinstance(payload, dict) else {}
    push_type = headers.get("apns-push-type", "")
    if push_type == "voip":
        call = str(payload.get("serverCallId") or "")
        key = {"threadId": CALLS_THREAD, "messageId": call, "kind": "call"}
        return ({**key, "userId": user_id} if user_id and call else None), "incoming call"
    deleted = payload.get("deleted")
    if isinstance(deleted, dict):
        message = str(deleted.get("messageId", ""))
        key = {
            "threadId": str(deleted.get("threadId", "")),
            "messageId": message,
            "kind": "deleted",
        }
        return ({**key, "userId": user_id} if user_id else None), f"withdraw message {message}"
    if isinstance(payload.get("messageId"), str) and isinstance(payload.get("threadId"), str):
        kind = str(payload.get("kind") or "received")
        key = {"threadId": payload["threadId"], "messageId": payload["messageId"], "kind": kind}
        what = f"message {key['messageId']} {kind}"
        return ({**key, "userId": user_id} if user_id else None), what
    if push_type == "background":
        relay = payload.get("pushrelay")
        if isinstance(relay, dict) and "tokenProof" in relay:
            return None, "token proof"
        return None, "renewal wake"
    return None, f"{push_type or 'unknown'} push"


class ConsoleState:
    """Everything the page shows, and the refresh that keeps it current."""

    def __init__(
        self,
        tables: AppTables,
        simulator: Simulator | None,
        rules: Rules,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.tables = tables
        self.simulator = simulator
        self.rules = rules
        self.clock = clock
        self.monotonic = monotonic
        self.lock = asyncio.Lock()
        self.phones: dict[str, Phone] = {}
        self.agents: list[PhoneAgent] = []
        self.messages: dict[str, SentMessage] = {}
        self.calls: list[dict[str, Any]] = []
        self.activity: list[dict[str, Any]] = []
        self.wire: list[WireEntry] = []
        self.logs: dict[tuple[str, str, str], LogEntry] = {}
        self.faults: list[dict[str, Any]] = []
        self.token_users: dict[str, str] = {}  # every token ever seen registered -> its user
        self.last_seq = 0
        self.sim_now: float | None = None
        self.sim_error: str | None = None
        self.storage_error: str | None = None
        self._wakes: dict[tuple[str, str], datetime] = {}
        self._registry_read = -1e9
        self._registry_wanted = True
        self._snapshot = ""

    # --- activity -------------------------------------------------------------------------------
    def note(self, text: str, level: str = "info") -> None:
        """Add a line to the activity list (newest first)."""
        self.activity.insert(0, {"at": iso(self.clock()), "text": text, "level": level})
        del self.activity[ACTIVITY_KEPT:]

    def want_registry(self) -> None:
        """Read the registry at the next refresh (after an action that changed it)."""
        self._registry_wanted = True

    # --- phones ---------------------------------------------------------------------------------
    def add_agent(self, agent: PhoneAgent) -> Phone:
        """Put a phone the console holds on the page (its tokens are registered already)."""
        self.agents.append(agent)
        tokens = dict(agent.tokens)
        phone = Phone(device_id_for(tokens["alert"]), agent.user_id, tokens, agent)
        for token in tokens.values():
            self.token_users[token] = agent.user_id
        self.phones[phone.id] = phone
        self.want_registry()
        return phone

    def phone_of(self, token: str) -> Phone | None:
        """The phone that holds ``token``."""
        for phone in self.phones.values():
            if token in phone.tokens.values():
                return phone
        return None

    def user_label(self, user_id: str) -> str:
        """The console phone's name of a user, else the shortened rawId."""
        for agent in self.agents:
            if agent.user_id == user_id:
                return agent.name
        return short_user(user_id)

    def phone_label(self, phone: Phone) -> str:
        """How the page names a phone."""
        if phone.agent is not None:
            return f"{phone.agent.name}'s iPhone"
        kind, token = next(iter(phone.tokens.items()))
        return f"{kind} device {short_token(token)}"

    def users(self) -> list[dict[str, str]]:
        """Every user with a phone on the page (the send form's choices)."""
        seen: dict[str, str] = {}
        for phone in self.phones.values():
            seen.setdefault(phone.user_id, self.user_label(phone.user_id))
        return [{"id": uid, "label": label} for uid, label in seen.items()]

    async def _read_registry(self) -> None:
        rows = await self.tables.devices()
        self._wakes = await self.tables.renewal_wakes()
        by_token = {r.token: r for r in rows}
        for row in rows:
            self.token_users[row.token] = row.user_id
            if self.phone_of(row.token) is None:
                phone = Phone(row.device_id, row.user_id, {row.kind: row.token})
                self.phones[row.device_id] = phone
        for phone in list(self.phones.values()):
            phone.rows = {k: by_token[t] for k, t in phone.tokens.items() if t in by_token}
            if phone.rows:
                phone.seen_registered = True
                continue
            if phone.seen_registered:
                del self.phones[phone.id]
                if phone.agent in self.agents:
                    self.agents.remove(phone.agent)
                    phone.agent.close()
                self.note(
                    f"{self.phone_label(phone)} left: its registration is gone "
                    f"(last APNs answer: {self._last_answer(phone)})",
                    "warn",
                )
        self._registry_read = self.monotonic()
        self._registry_wanted = False

    def _last_answer(self, phone: Phone) -> str:
        tokens = set(phone.tokens.values())
        for entry in reversed(self.wire):
            if entry.record.get("token") in tokens:
                r = entry.record
                return f"{r.get('status')} {r.get('reason') or ''}".strip()
        return "none"

    # --- refresh --------------------------------------------------------------------------------
    async def refresh(self) -> bool:
        """Read what changed and apply it; True when the snapshot changed."""
        async with self.lock:
            records = await self._new_records()
            unknown = any(
                r.get("token") and self.phone_of(str(r["token"])) is None
                and r.get("status") == 200 for r in records
            )  # fmt: skip
            due = self.monotonic() - self._registry_read >= REGISTRY_EVERY
            if unknown or due or self._registry_wanted:
                try:
                    await self._read_registry()
                    self.storage_error = None
                except Exception as exc:  # any storage failure is shown, not raised
                    self.storage_error = f"{type(exc).__name__}: {exc}"
            for record in records:
                await self._apply(record)
            await self._read_logs()
            # The clocks move on every step; the page keeps its own: not a change to publish.
            view = {k: v for k, v in self.snapshot().items() if k not in ("now", "simOffset")}
            snapshot = json.dumps(view, sort_keys=True, default=str)
            changed = snapshot != self._snapshot
            self._snapshot = snapshot
            return changed

    async def _new_records(self) -> list[dict[str, Any]]:
        if self.simulator is None:
            return []
        try:
            records = await self.simulator.requests(self.last_seq)
            self.sim_now = await self.simulator.now()
            self.sim_error = None
        except SimulatorUnavailableError as exc:
            self.sim_error = str(exc)
            return []
        if records:
            self.last_seq = max(int(r["seq"]) for r in records)
        return records

    async def _apply(self, record: dict[str, Any]) -> None:
        token = str(record.get("token") or "").lower()
        link, what = link_of(record, self.token_users.get(token))
        self.wire.append(WireEntry(record, link, what))
        del self.wire[:-WIRE_KEPT]
        if link is not None:
            key = (link["userId"], link["threadId"], link["messageId"])
            self.logs.setdefault(key, LogEntry()).wanted_at = self.monotonic()
        phone = self.phone_of(token)
        if phone is None:
            return
        if record.get("status") != 200 or record.get("outcome") != "answered":
            if record.get("status") == 410:
                self.want_registry()
            return
        push = Push.from_record(record)
        agent = phone.agent
        if agent is None:
            phone.screen.receive(push)  # the console holds no key of a phone it does not run
            return
        try:
            phone.screen.receive(push, await agent.live_keys())
            lines = await agent.handle_push(push)
        except Exception as exc:  # the phone's app failing is shown on the page
            self.note(f"{agent.name}'s phone could not act on a push: {exc}", "error")
            return
        phone.screen.keep_only(agent.banner_ids())
        for line in lines:
            self.note(line)
        if lines:
            self.want_registry()

    async def _read_logs(self) -> None:
        now = self.monotonic()
        for (user, thread, message), entry in self.logs.items():
            settled = entry.records and all(r["state"] in FINAL for r in entry.records)
            if settled and now - entry.wanted_at > LOG_SETTLED_AFTER:
                continue
            if now - entry.read_at < LOG_EVERY and entry.read_at >= entry.wanted_at:
                continue
            try:
                records = await self.tables.deliveries(user, thread, message)
            except Exception as exc:  # shown on the page
                self.storage_error = f"{type(exc).__name__}: {exc}"
                return
            entry.records = [record_json(r) for r in records]
            entry.read_at = now

    # --- the page's JSON ------------------------------------------------------------------------
    def _phone_json(self, phone: Phone, now: datetime) -> dict[str, Any]:
        alert = phone.rows.get("alert")
        agent = phone.agent
        key_expires = agent.key_expires_at if agent is not None else None
        if key_expires is None and alert is not None and alert.has_key:
            key_expires = alert.key_expires_at
        # The phone's storage drops a key once its expiry passed: the newest one decides.
        holds_key = agent is not None and key_expires is not None and key_expires > now
        wake = None
        if alert is not None:
            wake = self._wakes.get((phone.user_id, alert.device_id))
        sent = alert.background_sent if alert is not None else ()
        hour_ago = now - timedelta(hours=1)
        allowed_at = next_background_at(
            sent, now, max_per_hour=self.rules.max_per_hour, min_spacing=self.rules.min_spacing
        )
        return {
            "id": phone.id,
            "label": self.phone_label(phone),
            "userId": phone.user_id,
            "userLabel": self.user_label(phone.user_id),
            "source": phone.source,
            "tokens": [
                {
                    "kind": kind,
                    "token": short_token(token),
                    "registered": kind in phone.rows,
                    "lastResult": phone.rows[kind].last_result if kind in phone.rows else None,
                }
                for kind, token in phone.tokens.items()
            ],
            "key": {
                "appHolds": alert is not None and alert.live_key(now),
                "phoneHolds": holds_key,
                "canDecrypt": agent is not None,
                "expiresAt": iso(key_expires),
            },
            "nextWake": iso(wake),
            "stale": bool(alert and alert.stale),
            "budget": {
                "used": sum(1 for t in sent if t > hour_ago),
                "max": self.rules.max_per_hour,
                "lastAt": iso(sent[-1]) if sent else None,
                # None while one may go now: "now" moves on every step and is no change.
                "nextAllowedAt": iso(allowed_at) if allowed_at > now else None,
            },
            "screen": phone.screen.as_json(),
            "appLog": agent.app_log() if agent is not None else None,
        }

    def _wire_json(self, entry: WireEntry) -> dict[str, Any]:
        r = entry.record
        token = str(r.get("token") or "")
        phone = self.phone_of(token)
        headers: Mapping[str, str] = r.get("headers") or {}
        log_records: list[dict[str, Any]] = []
        if entry.link is not None:
            key = (entry.link["userId"], entry.link["threadId"], entry.link["messageId"])
            device = device_id_for(token) if token else ""
            log_records = [
                {**d, "thisRequest": d.get("apnsId") == r.get("apnsId")}
                for d in self.logs.get(key, LogEntry()).records
                if d["deviceId"] == device and d["kind"] == entry.link["kind"]
            ]
        return {
            "seq": r.get("seq"),
            "at": r.get("receivedAt"),
            "environment": r.get("environment"),
            "token": short_token(token),
            "phone": self.phone_label(phone) if phone is not None else None,
            "user": self.user_label(self.token_users[token]) if token in self.token_users else None,
            "pushType": headers.get("apns-push-type"),
            "priority": headers.get("apns-priority"),
            "topic": headers.get("apns-topic"),
            "collapseId": headers.get("apns-collapse-id"),
            "expiration": headers.get("apns-expiration"),
            "status": r.get("status"),
            "reason": r.get("reason"),
            "outcome": r.get("outcome"),
            "apnsId": r.get("apnsId"),
            "faultId": r.get("faultId"),
            "connectionId": r.get("connectionId"),
            "streamId": r.get("streamId"),
            "size": r.get("rawSize"),
            "payload": r.get("payload"),
            "what": entry.what,
            "link": entry.link,
            "log": log_records,
        }

    def snapshot(self) -> dict[str, Any]:
        """Everything the page draws."""
        now = self.clock()
        hits: dict[str, int] = {}
        for entry in self.wire:
            fid = entry.record.get("faultId")
            if fid:
                hits[str(fid)] = hits.get(str(fid), 0) + 1
        return {
            "now": iso(now),
            # Whole seconds the simulator's clock is ahead of the wall clock (advance time).
            "simOffset": None if self.sim_now is None else round(self.sim_now - now.timestamp()),
            "simulator": self.simulator is not None,
            "simError": self.sim_error,
            "storageError": self.storage_error,
            "rules": {
                "renewalLeadMinutes": self.rules.renewal_lead.total_seconds() / 60,
                "maxPerHour": self.rules.max_per_hour,
                "minSpacingMinutes": self.rules.min_spacing.total_seconds() / 60,
            },
            "phones": [self._phone_json(p, now) for p in self.phones.values()],
            "users": self.users(),
            "messages": [
                {
                    "messageId": m.message.message_id,
                    "threadId": m.message.thread_id,
                    "from": m.sender_label,
                    "to": m.recipient_label,
                    "text": m.message.body,
                    "state": m.state,
                    "events": m.events,
                }
                for m in reversed(self.messages.values())
            ],
            "calls": list(reversed(self.calls)),
            "faults": [{**f, "hits": hits.get(f["id"], 0)} for f in self.faults],
            "wire": [self._wire_json(e) for e in reversed(self.wire)],
            "activity": self.activity,
        }

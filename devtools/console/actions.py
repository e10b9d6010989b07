"""What the console's buttons do: each is what ACS, Event Grid, an iPhone or APNs would do.

- Messages and calls are real ACS events posted to the app's Event Grid webhook
  (``/runtime/webhooks/eventgrid?functionName=on_chat_event`` / ``on_call_event``, header
  ``aeg-event-type: Notification``), in the Event Grid or the CloudEvents schema; the webhook's
  answer is recorded (a 500 means Event Grid would redeliver: the page offers to).
- Phones are reference devices (:class:`~devtools.console.reference_phone.ReferencePhone`): the
  app of docs/ios.md signs in and registers through the app's own API.
- "Uninstall the app" tells the APNs simulator that the phone's tokens are unregistered: the next
  push to them is answered 410, and the app removes the device.
- Faults, the simulator's clock: the simulator's control endpoint.
- "Run the renewal sweep now": the local host's ``POST /admin/functions/renewal_sweep``.

Every method raises :class:`ActionError` (a 4xx for the page) for input that cannot work.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from devtools.console import acs_events
from devtools.console.acs_events import ChatMessage, Delivery, Schema
from devtools.console.reference_phone import PhoneError, ReferencePhone
from devtools.console.sources import SimulatorUnavailableError
from devtools.console.state import ConsoleState, SentMessage, short_token

log = logging.getLogger(__name__)

WEBHOOK = "/runtime/webhooks/eventgrid?functionName="
MAX_TEXT = 4000
MAX_NAME = 64
# The simulator's fault forms (docs/apns-simulator.md): an Apple reason, or a connection fault.
REASONS = (
    "Unregistered",
    "BadDeviceToken",
    "DeviceTokenNotForTopic",
    "TooManyRequests",
    "InternalServerError",
    "ServiceUnavailable",
    "ExpiredProviderToken",
    "TooManyProviderTokenUpdates",
)
CONNECTION_FAULTS = {
    "noAnswer": {"noAnswer": True},
    "closeConnection": {"closeConnection": True},
    "goaway": {"goaway": "Shutdown"},
    "refuseStream": {"refuseStream": True},
}


class ActionError(ValueError):
    """The action cannot be done as asked: 400 (or ``status``) with this reason."""

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.status = status


@dataclass(frozen=True, slots=True)
class ConsoleConfig:
    """Where the app and the development services are, and what the app is configured with."""

    app_url: str
    token_url: str | None
    topic: str
    acs_resource: str = acs_events.PLACEHOLDER_RESOURCE


def _text(body: Mapping[str, Any], name: str, limit: int, *, required: bool = True) -> str:
    value = body.get(name, "")
    if not isinstance(value, str) or (required and not value.strip()) or len(value) > limit:
        raise ActionError(f"{name} must be a non-empty string of at most {limit} characters")
    return value.strip() if name != "text" else value


def _schema(body: Mapping[str, Any]) -> Schema:
    try:
        return Schema(str(body.get("schema") or Schema.EVENT_GRID))
    except ValueError:
        raise ActionError("schema must be eventgrid or cloudevents") from None


class Actions:
    """The console's actions on the app, the simulator and its own phones."""

    def __init__(
        self,
        state: ConsoleState,
        http: httpx.AsyncClient,
        config: ConsoleConfig,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.state = state
        self.http = http
        self.config = config
        self.clock = clock
        self._deliveries: dict[str, tuple[str, Delivery]] = {}

    # --- phones ---------------------------------------------------------------------------------
    async def add_phone(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """A new reference device: its user signs in, it registers its tokens with a fresh key."""
        name = _text(body, "name", MAX_NAME)
        if not name.replace(" ", "").replace("-", "").replace("_", "").isalnum():
            raise ActionError("name must be letters, digits, spaces, - or _")
        if self.config.token_url is None:
            raise ActionError("no identity provider is configured (AUTH_JWKS_URL is real)", 409)
        phone = ReferencePhone.connect(
            name,
            app_url=self.config.app_url,
            token_url=self.config.token_url,
            topic=self.config.topic,
            calls=bool(body.get("calls", True)),
            deleted_messages=self.deleted_messages,
        )
        try:
            await phone.start()
        except PhoneError as exc:
            phone.close()
            raise ActionError(f"registering {name}'s phone failed: {exc}", 502) from exc
        tokens = phone.tokens
        async with self.state.lock:
            added = self.state.add_agent(phone)
            self.state.note(
                f"{name} signed in on a new iPhone (the reference device): ACS user "
                f"{phone.user_id[:12]}…, alert token {short_token(tokens['alert'])} with a "
                "preview key"
                + (f", VoIP token {short_token(tokens['voip'])}" if "voip" in tokens else "")
            )
        return {"id": added.id, "userId": phone.user_id}

    def deleted_messages(self, thread_id: str, message_ids: Collection[str]) -> list[str]:
        """The chat layer's answer to a phone (the console plays ACS): which of these messages
        of this thread it deleted. Called from a phone's thread: it only reads."""
        found = [(m, self.state.messages.get(m)) for m in message_ids]
        return [
            m
            for m, sent in found
            if sent is not None and sent.state == "deleted" and sent.message.thread_id == thread_id
        ]

    def _phone(self, phone_id: str) -> Any:
        phone = self.state.phones.get(phone_id)
        if phone is None:
            raise ActionError("no such phone", 404)
        return phone

    async def uninstall(self, phone_id: str) -> dict[str, Any]:
        """APNs forgets the phone's tokens: the next push to each is answered 410."""
        phone = self._phone(phone_id)
        sim = self._simulator()
        for token in phone.tokens.values():
            await sim.unregister(token)
        self.state.note(
            f"{self.state.phone_label(phone)}: app deleted; APNs answers 410 Unregistered to its "
            "next push, and the app then removes the device",
            "warn",
        )
        return {"tokens": len(phone.tokens)}

    async def end_call(self, phone_id: str, answer: str) -> dict[str, Any]:
        """Answer or decline the ringing call (the call screen goes; the phone's CallKit too)."""
        phone = self._phone(phone_id)
        async with self.state.lock:
            call = phone.screen.call
            phone.screen.end_call()
        if call is None:
            return {}
        if phone.agent is not None:
            await phone.agent.end_call(call.call_id, accept=answer == "accept")
        verb = "answered" if answer == "accept" else "declined"
        self.state.note(f"{self.state.phone_label(phone)} {verb} the call from {call.caller}")
        return {}

    # --- ACS events -----------------------------------------------------------------------------
    def _user(self, body: Mapping[str, Any], name: str) -> str:
        user = body.get(name)
        if not isinstance(user, str) or user not in {u["id"] for u in self.state.users()}:
            raise ActionError(f"{name} must be a user with a phone on the page")
        return user

    async def _post(self, function: str, delivery: Delivery, what: str) -> dict[str, Any]:
        url = self.config.app_url.rstrip("/") + WEBHOOK + function
        headers = {"aeg-event-type": "Notification", "Content-Type": delivery.content_type}
        try:
            answer = await self.http.post(url, content=delivery.body, headers=headers, timeout=60)
            status: int | None = answer.status_code
        except httpx.HTTPError as exc:
            status = None
            log.warning("webhook %s did not answer: %s", function, exc)
        self._deliveries[delivery.event_id] = (function, delivery)
        event = {
            "type": delivery.event_type.rsplit(".", 1)[-1],
            "schema": "CloudEvents" if "cloudevents" in delivery.content_type else "Event Grid",
            "eventId": delivery.event_id,
            "function": function,
            "status": status,
            "at": self.clock().isoformat().replace("+00:00", "Z"),
        }
        level = "info" if status == 202 else "error"
        retry = " (Event Grid would redeliver it)" if status is None or status >= 500 else ""
        self.state.note(f"webhook {function}: {what}: answered {status}{retry}", level)
        return event

    async def redeliver(self, event_id: str) -> dict[str, Any]:
        """Post an event again, as Event Grid does after a failed delivery."""
        found = self._deliveries.get(event_id)
        if found is None:
            raise ActionError("no such event", 404)
        function, delivery = found
        event = await self._post(function, delivery, f"redelivery of {event_id[:8]}")
        for sent in self.state.messages.values():
            if any(e["eventId"] == event_id for e in sent.events):
                sent.events.append({**event, "redelivery": True})
        return event

    async def send_message(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """ChatMessageReceived for the recipient, from the sender."""
        sender, recipient = self._user(body, "from"), self._user(body, "to")
        if sender == recipient:
            raise ActionError("ACS sends no event to the sender: pick another recipient")
        text = _text(body, "text", MAX_TEXT)
        name = _text(body, "senderName", MAX_NAME, required=False) or self.state.user_label(sender)
        schema, now = _schema(body), self.clock()
        message = ChatMessage(
            thread_id=acs_events.thread_for(sender, recipient),
            message_id=self._new_message_id(now),
            sender_id=sender,
            sender_name=name,
            recipient_id=recipient,
            body=text,
            composed_at=now,
        )
        sent = SentMessage(message, name, self.state.user_label(recipient))
        self.state.messages[message.message_id] = sent
        delivery = acs_events.received(message, schema, self.config.acs_resource, now)
        what = f"{name} → {sent.recipient_label}: message {message.message_id}"
        sent.events.append(await self._post("on_chat_event", delivery, what))
        return {"messageId": message.message_id, "threadId": message.thread_id, **sent.events[-1]}

    def _new_message_id(self, now: datetime) -> str:
        message_id = acs_events.message_id_at(now)
        while message_id in self.state.messages:
            message_id = str(int(message_id) + 1)
        return message_id

    def _sent(self, message_id: str) -> SentMessage:
        sent = self.state.messages.get(message_id)
        if sent is None:
            raise ActionError("no such message", 404)
        if sent.state == "deleted":
            raise ActionError("the message is deleted", 409)
        return sent

    async def edit_message(self, message_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """ChatMessageEdited: the same message id, a new body and version."""
        sent = self._sent(message_id)
        text = _text(body, "text", MAX_TEXT)
        m = sent.message
        sent.message = ChatMessage(
            m.thread_id, m.message_id, m.sender_id, m.sender_name, m.recipient_id, text,
            m.composed_at,
        )  # fmt: skip
        sent.state = "edited"
        now = self.clock()
        delivery = acs_events.edited(sent.message, _schema(body), self.config.acs_resource, now)
        event = await self._post("on_chat_event", delivery, f"edit of message {message_id}")
        sent.events.append(event)
        return event

    async def delete_message(self, message_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """ChatMessageDeleted: the app withdraws it with a background push."""
        sent = self._sent(message_id)
        sent.state = "deleted"
        now = self.clock()
        delivery = acs_events.deleted(sent.message, _schema(body), self.config.acs_resource, now)
        event = await self._post("on_chat_event", delivery, f"deletion of message {message_id}")
        sent.events.append(event)
        return event

    async def call(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """IncomingCall to the callee."""
        caller, callee = self._user(body, "from"), self._user(body, "to")
        if caller == callee:
            raise ActionError("pick someone else to call")
        name = _text(body, "callerName", MAX_NAME, required=False) or self.state.user_label(caller)
        delivery, call_id = acs_events.incoming_call(
            caller_id=caller,
            caller_name=name,
            callee_id=callee,
            schema=_schema(body),
            resource=self.config.acs_resource,
            now=self.clock(),
        )
        what = f"{name} calls {self.state.user_label(callee)}"
        event = await self._post("on_call_event", delivery, what)
        self.state.calls.append(
            {"callId": call_id, "from": name, "to": self.state.user_label(callee), "event": event}
        )
        return {"callId": call_id, **event}

    # --- APNs simulator and timers --------------------------------------------------------------
    def _simulator(self) -> Any:
        if self.state.simulator is None:
            raise ActionError("no APNs simulator runs (APNS_APPS holds real credentials)", 409)
        return self.state.simulator

    async def add_fault(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Script one fault on the simulator, for one phone's tokens or for every request."""
        kind = str(body.get("kind", ""))
        if kind in REASONS:
            fault: dict[str, Any] = {"reason": kind}
        elif kind in CONNECTION_FAULTS:
            fault = dict(CONNECTION_FAULTS[kind])
        else:
            raise ActionError("kind must be one of " + ", ".join([*REASONS, *CONNECTION_FAULTS]))
        times = body.get("times", 1)
        if not isinstance(times, int) or isinstance(times, bool) or not 1 <= times <= 100:
            raise ActionError("times must be a whole number from 1 to 100")
        fault["times"] = times
        target = "every push"
        phone_id = body.get("phoneId")
        if phone_id:
            phone = self._phone(str(phone_id))
            token = phone.tokens.get(str(body.get("tokenKind") or "alert"))
            if token is None:
                raise ActionError("that phone has no token of this kind")
            fault["token"] = token
            target = f"pushes to {self.state.phone_label(phone)}"
        sim = self._simulator()
        try:
            fault_id = await sim.add_fault(fault)
        except (SimulatorUnavailableError, ValueError) as exc:
            raise ActionError(f"the simulator refused the fault: {exc}", 502) from exc
        description = f"{kind} × {times} on {target}"
        self.state.faults.append({"id": fault_id, "description": description})
        self.state.note(f"APNs simulator: fault armed: {description}", "warn")
        return {"id": fault_id}

    async def clear_faults(self) -> dict[str, Any]:
        """Disarm every fault."""
        await self._simulator().clear_faults()
        self.state.faults.clear()
        self.state.note("APNs simulator: faults cleared")
        return {}

    async def advance_clock(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Move the simulator's clock forward (``seconds``), or back to the wall clock."""
        sim = self._simulator()
        if body.get("reset"):
            now = await sim.set_time(self.clock().timestamp())
            self.state.note("APNs simulator clock: back to the wall clock")
            return {"now": now}
        seconds = body.get("seconds")
        if not isinstance(seconds, int | float) or isinstance(seconds, bool):
            raise ActionError("seconds must be a number")
        if not 0 < seconds <= 7 * 24 * 3600:
            raise ActionError("seconds must be above 0 and at most a week")
        now = await sim.advance(float(seconds))
        self.state.note(
            f"APNs simulator clock moved {seconds / 60:g} min ahead: 410 timestamps and "
            "provider-token ages follow it; the app and its key expiry stay on the wall clock"
        )
        return {"now": now}

    async def run_sweep(self) -> dict[str, Any]:
        """Run the renewal_sweep timer function now (the local host's admin endpoint)."""
        url = self.config.app_url.rstrip("/") + "/admin/functions/renewal_sweep"
        try:
            answer = await self.http.post(url, json={"input": ""}, timeout=10)
        except httpx.HTTPError as exc:
            raise ActionError(f"the app did not answer: {exc}", 502) from exc
        self.state.note(
            f"renewal_sweep run now: answered {answer.status_code}; devices due within "
            f"{self.state.rules.renewal_lead.total_seconds() / 60:g} min of key expiry get a "
            "background push through the renewal queue"
        )
        return {"status": answer.status_code}

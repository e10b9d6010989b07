"""ACS events as Event Grid delivers them (JSON), parsed into small frozen values.

One event in, one value out: :class:`ChatMessageEvent` (a message received, edited or deleted,
for one recipient), :class:`ThreadEvent` (a per-user thread event), :class:`IncomingCallEvent`,
or :class:`Ignored` (thread-level and unknown types, which are acknowledged and logged). Both
schemas arrive: Event Grid (``eventType``, ``eventTime``) and CloudEvents 1.0 (``type``,
``time``), each as a dict of its JSON. The worker hands a trigger ``func.EventGridEvent`` or
``func.CloudEvent`` objects; :func:`shared.edges.event_grid.event_json` turns them back into that
JSON, so this module knows nothing of Azure Functions.

Raises :class:`MalformedEvent` (an :class:`~shared.errors.InputError`) naming the event id and the
field for anything a retry cannot fix, and nothing else.

Field meanings follow the Event Grid system-event schema for ACS
(azure-rest-api-specs ``Microsoft.Communication/AzureCommunicationServices.tsp``).
"""

from __future__ import annotations

import enum
import html
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from html.parser import HTMLParser
from types import MappingProxyType
from typing import Final

from shared.errors import InputError

logger = logging.getLogger(__name__)

# The event types are the strings Azure documents (Event Grid's Azure Communication Services
# schemas). azure-eventgrid's SystemEventNames has them too, but is not a dependency: the trigger
# gets azure.functions' own event objects, so the SDK would be installed and imported (with its
# models, on the cold path) for these constants alone.
_NS: Final = "Microsoft.Communication."
CHAT_MESSAGE_RECEIVED: Final = _NS + "ChatMessageReceived"
CHAT_MESSAGE_EDITED: Final = _NS + "ChatMessageEdited"
CHAT_MESSAGE_DELETED: Final = _NS + "ChatMessageDeleted"
CHAT_THREAD_CREATED_WITH_USER: Final = _NS + "ChatThreadCreatedWithUser"
CHAT_THREAD_WITH_USER_DELETED: Final = _NS + "ChatThreadWithUserDeleted"
CHAT_THREAD_PROPERTIES_UPDATED_PER_USER: Final = _NS + "ChatThreadPropertiesUpdatedPerUser"
CHAT_PARTICIPANT_ADDED_TO_THREAD_WITH_USER: Final = _NS + "ChatParticipantAddedToThreadWithUser"
CHAT_PARTICIPANT_REMOVED_FROM_THREAD_WITH_USER: Final = (
    _NS + "ChatParticipantRemovedFromThreadWithUser"
)
# The 2020 preview names of the participant events; still parsed, no longer subscribed to.
CHAT_MEMBER_ADDED_TO_THREAD_WITH_USER: Final = _NS + "ChatMemberAddedToThreadWithUser"
CHAT_MEMBER_REMOVED_FROM_THREAD_WITH_USER: Final = _NS + "ChatMemberRemovedFromThreadWithUser"
INCOMING_CALL: Final = _NS + "IncomingCall"

CHAT_EVENT_TYPES: Final[tuple[str, ...]] = (
    CHAT_MESSAGE_RECEIVED,
    CHAT_MESSAGE_EDITED,
    CHAT_MESSAGE_DELETED,
    CHAT_THREAD_CREATED_WITH_USER,
    CHAT_THREAD_WITH_USER_DELETED,
    CHAT_THREAD_PROPERTIES_UPDATED_PER_USER,
    CHAT_PARTICIPANT_ADDED_TO_THREAD_WITH_USER,
    CHAT_PARTICIPANT_REMOVED_FROM_THREAD_WITH_USER,
)
"""Per-user chat event types ``on_chat_event`` handles; the infra subscribes to exactly these."""

LEGACY_CHAT_EVENT_TYPES: Final[tuple[str, ...]] = (
    CHAT_MEMBER_ADDED_TO_THREAD_WITH_USER,
    CHAT_MEMBER_REMOVED_FROM_THREAD_WITH_USER,
)
"""Per-user event names from the 2020 preview schema: parsed if they arrive, never subscribed."""

CALL_EVENT_TYPES: Final[tuple[str, ...]] = (INCOMING_CALL,)
"""The event types ``on_call_event`` handles; the "calls" subscription filters on exactly these."""

# rawId prefixes of ACS users (public cloud, the older "spool" form, GCC High and DoD), as the
# ACS SDKs' identifier parsers read them. Phone numbers are "4:...", Teams users "8:orgid:...".
ACS_USER_PREFIXES: Final[tuple[str, ...]] = ("8:acs:", "8:spool:", "8:gcch-acs:", "8:dod-acs:")


class MalformedEvent(InputError):  # noqa: N818 (the name the use cases and triggers know)
    """An event that no retry can fix; names the event id and the field at fault."""

    def __init__(self, event_id: str, field_name: str, problem: str) -> None:
        super().__init__(f"event {event_id or '(no id)'}: {field_name}: {problem}")
        self.event_id = event_id
        self.field = field_name
        self.problem = problem


class IdentifierKind(enum.StrEnum):
    """The kind of an ACS communication identifier."""

    COMMUNICATION_USER = "communicationUser"
    PHONE_NUMBER = "phoneNumber"
    MICROSOFT_TEAMS_USER = "microsoftTeamsUser"
    MICROSOFT_TEAMS_APP = "microsoftTeamsApp"
    UNKNOWN = "unknown"


class MessageEventKind(enum.StrEnum):
    """What happened to a chat message."""

    RECEIVED = "received"
    EDITED = "edited"
    DELETED = "deleted"


class ThreadEventKind(enum.StrEnum):
    """What happened to a thread, as seen by one of its users."""

    THREAD_CREATED = "thread_created"
    THREAD_DELETED = "thread_deleted"
    PROPERTIES_UPDATED = "properties_updated"
    PARTICIPANT_ADDED = "participant_added"
    PARTICIPANT_REMOVED = "participant_removed"


def is_acs_user(raw_id: str) -> bool:
    """Whether a rawId names an ACS user (the only identities that register devices with us)."""
    return raw_id.startswith(ACS_USER_PREFIXES)


_EMPTY: Final[Mapping[str, str]] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class EventSource:
    """The ACS resource whose events we act on (``ACS_RESOURCE_ID``, its ARM id); "" admits all.

    In Azure only the host's system key guards the Event Grid webhook, so anyone holding it could
    post any event: one whose ``topic`` (Event Grid schema) or ``source`` (CloudEvents) is not
    our resource is acknowledged and logged, never acted on. ARM ids compare without case.
    """

    resource_id: str

    def admits(self, event: object) -> bool:
        """Whether ``event`` (a dict of its JSON, either schema) came from our resource."""
        expected = self.resource_id.strip()
        if not expected:
            return True
        event_id, origin = _origin(event)
        if origin.casefold() == expected.casefold():
            return True
        logger.warning(
            "event %s from another source acknowledged, nothing done: %r",
            event_id[:100] or "(no id)",
            origin[:300],
        )
        return False


def _origin(event: object) -> tuple[str, str]:
    """The event's id and topic/source ("" for what is missing or not text)."""
    if not isinstance(event, Mapping):
        return "", ""
    raw_id, raw_origin = event.get("id"), event.get("source" if _is_cloud(event) else "topic")
    return _text_or_empty(raw_id), _text_or_empty(raw_origin)


def _text_or_empty(value: object) -> str:
    return _clean(value) if isinstance(value, str) else ""


@dataclass(frozen=True, slots=True)
class ChatMessageEvent:
    """One chat message event for one recipient (ACS sends one per participant but the sender)."""

    kind: MessageEventKind
    event_id: str
    event_type: str
    recipient_id: str  # rawId
    recipient_kind: IdentifierKind
    thread_id: str
    message_id: str
    version: int  # epoch milliseconds; may exceed 2**31
    sender_id: str  # rawId; "" when absent
    sender_display_name: str  # "" when absent
    body: str  # plain text ("" when absent, as on delete); HTML bodies converted
    message_type: str  # as sent: "Text", "html", ...
    metadata: Mapping[str, str] = field(default_factory=lambda: _EMPTY, hash=False)
    transaction_id: str = ""
    compose_time: datetime | None = None
    edit_time: datetime | None = None
    delete_time: datetime | None = None
    event_time: datetime | None = None

    @property
    def recipient_is_acs_user(self) -> bool:
        """False for phone and Teams recipients: acknowledge the event and push nothing."""
        return is_acs_user(self.recipient_id)


@dataclass(frozen=True, slots=True)
class ThreadEvent:
    """A per-user thread event (``...WithUser``, ``...PerUser``) for one recipient."""

    kind: ThreadEventKind
    event_id: str
    event_type: str
    recipient_id: str
    recipient_kind: IdentifierKind
    thread_id: str
    actor_id: str = ""  # who created, deleted, edited, added or removed; "" when absent
    participant_id: str = ""  # who was added or removed; "" for other kinds
    participant_display_name: str = ""
    version: int | None = None
    transaction_id: str = ""
    time: datetime | None = None  # when it happened (createTime, deleteTime, editTime or time)
    event_time: datetime | None = None

    @property
    def recipient_is_acs_user(self) -> bool:
        """False for phone and Teams recipients: acknowledge the event and do nothing."""
        return is_acs_user(self.recipient_id)

    @property
    def recipient_was_removed(self) -> bool:
        """True when this copy tells the removed user themself that they left the thread."""
        return (
            self.kind is ThreadEventKind.PARTICIPANT_REMOVED
            and self.participant_id == self.recipient_id
        )


@dataclass(frozen=True, slots=True)
class IncomingCallEvent:
    """An ``IncomingCall`` for one callee (``data.to``)."""

    event_id: str
    to_id: str
    to_kind: IdentifierKind
    from_id: str
    from_kind: IdentifierKind
    server_call_id: str = ""
    caller_display_name: str = ""
    incoming_call_context: str = ""
    correlation_id: str = ""
    sip_headers: Mapping[str, str] = field(default_factory=lambda: _EMPTY, hash=False)
    voip_headers: Mapping[str, str] = field(default_factory=lambda: _EMPTY, hash=False)
    event_time: datetime | None = None

    @property
    def to_is_acs_user(self) -> bool:
        """False for phone and Teams callees: acknowledge the event and ring nothing."""
        return is_acs_user(self.to_id)


@dataclass(frozen=True, slots=True)
class Ignored:
    """An event we acknowledge and do nothing with (thread-level or unknown types)."""

    reason: str
    event_id: str = ""
    event_type: str = ""


ParsedEvent = ChatMessageEvent | ThreadEvent | IncomingCallEvent | Ignored


@dataclass(frozen=True, slots=True)
class _Envelope:
    event_id: str
    event_type: str
    event_time: datetime | None
    data: object


def parse_event(event: object) -> ParsedEvent:
    """Parse one event: a dict of its JSON, in either schema.

    Raises :class:`MalformedEvent` naming the event id and field when the event cannot be used.
    """
    env = _envelope(event)
    message_kind = _MESSAGE_KINDS.get(env.event_type)
    if message_kind is not None:
        return _message_event(env, message_kind)
    thread_kind = _THREAD_KINDS.get(env.event_type)
    if thread_kind is not None:
        return _thread_event(env, thread_kind)
    if env.event_type == INCOMING_CALL:
        return _incoming_call(env)
    if env.event_type.startswith(_NS + "Chat"):
        reason = "thread-level chat event"
    elif env.event_type == "Microsoft.EventGrid.SubscriptionValidationEvent":
        reason = "subscription validation (answered by the host)"
    else:
        reason = "unknown event type"
    return Ignored(reason=reason, event_id=env.event_id, event_type=env.event_type)


_MESSAGE_KINDS: Final[Mapping[str, MessageEventKind]] = {
    CHAT_MESSAGE_RECEIVED: MessageEventKind.RECEIVED,
    CHAT_MESSAGE_EDITED: MessageEventKind.EDITED,
    CHAT_MESSAGE_DELETED: MessageEventKind.DELETED,
}
_THREAD_KINDS: Final[Mapping[str, ThreadEventKind]] = {
    CHAT_THREAD_CREATED_WITH_USER: ThreadEventKind.THREAD_CREATED,
    CHAT_THREAD_WITH_USER_DELETED: ThreadEventKind.THREAD_DELETED,
    CHAT_THREAD_PROPERTIES_UPDATED_PER_USER: ThreadEventKind.PROPERTIES_UPDATED,
    CHAT_PARTICIPANT_ADDED_TO_THREAD_WITH_USER: ThreadEventKind.PARTICIPANT_ADDED,
    CHAT_PARTICIPANT_REMOVED_FROM_THREAD_WITH_USER: ThreadEventKind.PARTICIPANT_REMOVED,
    CHAT_MEMBER_ADDED_TO_THREAD_WITH_USER: ThreadEventKind.PARTICIPANT_ADDED,
    CHAT_MEMBER_REMOVED_FROM_THREAD_WITH_USER: ThreadEventKind.PARTICIPANT_REMOVED,
}


# --- envelope -------------------------------------------------------------------------------


def _envelope(event: object) -> _Envelope:
    if not isinstance(event, Mapping):
        raise MalformedEvent("", "event", f"expected an event object, got {type(event).__name__}")
    eid = _envelope_id(event.get("id"))
    type_key, time_key = ("type", "time") if _is_cloud(event) else ("eventType", "eventTime")
    event_type = _envelope_type(eid, event.get(type_key), type_key)
    raw_time = event.get(time_key)
    event_time = None if raw_time is None else _parse_time(eid, time_key, raw_time)
    return _Envelope(eid, event_type, event_time, event.get("data"))


def _is_cloud(event: Mapping[object, object]) -> bool:
    """Whether the JSON is a CloudEvent (else Event Grid schema, which always has eventType)."""
    return "eventType" not in event and (
        "specversion" in event or "specVersion" in event or "type" in event
    )


def _envelope_id(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise MalformedEvent("", "id", "missing or not a string")
    return _clean(value)


def _envelope_type(eid: str, value: object, key: str = "eventType") -> str:
    if not isinstance(value, str) or not value:
        raise MalformedEvent(eid, key, "missing or not a string")
    return value


# --- typed readers (each raises MalformedEvent naming the field) -----------------------------


class _Reader:
    """Reads typed fields out of an event's ``data`` object."""

    def __init__(self, eid: str, data: object, prefix: str = "data") -> None:
        self.eid = eid
        self.prefix = prefix
        if not isinstance(data, Mapping):
            raise MalformedEvent(eid, prefix, "missing or not an object")
        self.data: Mapping[object, object] = data

    def fail(self, name: str, problem: str) -> MalformedEvent:
        return MalformedEvent(self.eid, f"{self.prefix}.{name}", problem)

    def opt_str(self, name: str, source: Mapping[object, object] | None = None) -> str:
        value = (self.data if source is None else source).get(name)
        if value is None:
            return ""
        if not isinstance(value, str):
            raise self.fail(name, "not a string")
        return _clean(value)

    def req_str(self, name: str) -> str:
        value = self.opt_str(name)
        if not value:
            raise self.fail(name, "missing or empty")
        return value

    def opt_object(self, name: str) -> Mapping[object, object] | None:
        value = self.data.get(name)
        if value is None:
            return None
        if not isinstance(value, Mapping):
            raise self.fail(name, "not an object")
        return value

    def opt_time(self, name: str) -> datetime | None:
        value = self.data.get(name)
        return None if value is None else _parse_time(self.eid, f"{self.prefix}.{name}", value)

    def opt_version(self) -> int | None:
        value = self.data.get("version")
        if value is None:
            return None
        # An int64 in the schema; thread-level copies and some deliveries carry it as a string.
        if isinstance(value, bool):
            raise self.fail("version", "not a whole number")
        if isinstance(value, int):
            number = value
        elif isinstance(value, float) and value.is_integer():
            number = int(value)
        elif isinstance(value, str) and value.strip().isdigit() and value.strip().isascii():
            number = int(value.strip())
        else:
            raise self.fail("version", "not a whole number")
        if not 0 <= number < 2**63:
            raise self.fail("version", "out of range")
        return number

    def string_map(
        self, name: str, source: Mapping[object, object] | None = None
    ) -> Mapping[str, str]:
        value = (self.data if source is None else source).get(name)
        if value is None:
            return _EMPTY
        if not isinstance(value, Mapping):
            raise self.fail(name, "not an object")
        out: dict[str, str] = {}
        for key, item in value.items():
            if not isinstance(key, str) or not isinstance(item, str | None):
                raise self.fail(name, "not a map of strings")
            out[_clean(key)] = "" if item is None else _clean(item)
        return MappingProxyType(out)

    def identifier(
        self, name: str, *, legacy: str | None = None, required: bool = True
    ) -> tuple[str, IdentifierKind]:
        """A CommunicationIdentifierModel's rawId and kind, or a legacy plain rawId string."""
        model = self.opt_object(name)
        if model is None:
            raw = self.opt_str(legacy) if legacy else ""
            if not raw and required:
                raise self.fail(name, "missing")
            return raw, _kind_from_raw_id(raw)
        return self._identifier_model(name, model)

    def _identifier_model(
        self, name: str, model: Mapping[object, object]
    ) -> tuple[str, IdentifierKind]:
        raw = self.opt_str("rawId", model)
        user = model.get("communicationUser")
        if not raw and isinstance(user, Mapping):
            raw = self.opt_str("id", user)
        if not raw:
            raise self.fail(name + ".rawId", "missing or empty")
        kind_value = model.get("kind")
        if isinstance(kind_value, str) and kind_value in _KIND_VALUES:
            return raw, IdentifierKind(kind_value)
        for kind in (
            IdentifierKind.COMMUNICATION_USER,
            IdentifierKind.PHONE_NUMBER,
            IdentifierKind.MICROSOFT_TEAMS_USER,
            IdentifierKind.MICROSOFT_TEAMS_APP,
        ):
            if isinstance(model.get(kind.value), Mapping):
                return raw, kind
        return raw, _kind_from_raw_id(raw)


_KIND_VALUES: Final = frozenset(kind.value for kind in IdentifierKind)


def _kind_from_raw_id(raw: str) -> IdentifierKind:
    if is_acs_user(raw):
        return IdentifierKind.COMMUNICATION_USER
    if raw.startswith("4:"):
        return IdentifierKind.PHONE_NUMBER
    if raw.startswith("28:"):
        return IdentifierKind.MICROSOFT_TEAMS_APP
    if raw.startswith("8:"):
        return IdentifierKind.MICROSOFT_TEAMS_USER
    return IdentifierKind.UNKNOWN


def _parse_time(eid: str, name: str, value: object) -> datetime:
    if not isinstance(value, str):
        raise MalformedEvent(eid, name, "not a time string")
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise MalformedEvent(eid, name, "not an ISO 8601 time") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


_SURROGATE = re.compile("[\ud800-\udfff]")


def _clean(text: str) -> str:
    """Pair up surrogate halves that JSON escapes split, and replace lone ones with U+FFFD.

    A lone surrogate cannot be encoded as UTF-8, so it would otherwise fail every payload later.
    """
    if not _SURROGATE.search(text):
        return text
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


# --- chat messages ---------------------------------------------------------------------------

_HTML_TYPES: Final = frozenset({"html", "richtext/html"})


def _message_event(env: _Envelope, kind: MessageEventKind) -> ChatMessageEvent:
    r = _Reader(env.event_id, env.data)
    recipient_id, recipient_kind = r.identifier(
        "recipientCommunicationIdentifier", legacy="recipientId"
    )
    sender_id, _ = r.identifier("senderCommunicationIdentifier", legacy="senderId", required=False)
    version = r.opt_version()
    if version is None:
        raise r.fail("version", "missing")
    message_type = r.opt_str("type")
    body = r.opt_str("messageBody")
    if message_type.lower() in _HTML_TYPES:
        body = html_to_text(body)
    return ChatMessageEvent(
        kind=kind,
        event_id=env.event_id,
        event_type=env.event_type,
        recipient_id=recipient_id,
        recipient_kind=recipient_kind,
        thread_id=r.req_str("threadId"),
        message_id=r.req_str("messageId"),
        version=version,
        sender_id=sender_id,
        sender_display_name=r.opt_str("senderDisplayName"),
        body=body,
        message_type=message_type,
        metadata=r.string_map("metadata"),
        transaction_id=r.opt_str("transactionId"),
        compose_time=r.opt_time("composeTime"),
        edit_time=r.opt_time("editTime"),
        delete_time=r.opt_time("deleteTime"),
        event_time=env.event_time,
    )


# --- per-user thread events ------------------------------------------------------------------

# (actor identifier, actor legacy string, time field) per kind.
_THREAD_FIELDS: Final[Mapping[ThreadEventKind, tuple[str, str, str]]] = {
    ThreadEventKind.THREAD_CREATED: ("createdByCommunicationIdentifier", "createdBy", "createTime"),
    ThreadEventKind.THREAD_DELETED: ("deletedByCommunicationIdentifier", "deletedBy", "deleteTime"),
    ThreadEventKind.PROPERTIES_UPDATED: ("editedByCommunicationIdentifier", "editedBy", "editTime"),
    ThreadEventKind.PARTICIPANT_ADDED: ("addedByCommunicationIdentifier", "addedBy", "time"),
    ThreadEventKind.PARTICIPANT_REMOVED: ("removedByCommunicationIdentifier", "removedBy", "time"),
}
# (current participant field, 2020 preview member field) per kind.
_PARTICIPANT_FIELDS: Final[Mapping[ThreadEventKind, tuple[str, str]]] = {
    ThreadEventKind.PARTICIPANT_ADDED: ("participantAdded", "memberAdded"),
    ThreadEventKind.PARTICIPANT_REMOVED: ("participantRemoved", "memberRemoved"),
}


def _thread_event(env: _Envelope, kind: ThreadEventKind) -> ThreadEvent:
    r = _Reader(env.event_id, env.data)
    recipient_id, recipient_kind = r.identifier(
        "recipientCommunicationIdentifier", legacy="recipientId"
    )
    actor_field, actor_legacy, time_field = _THREAD_FIELDS[kind]
    actor_id, _ = r.identifier(actor_field, legacy=actor_legacy, required=False)
    participant_id, participant_name = "", ""
    if kind in _PARTICIPANT_FIELDS:
        participant_id, participant_name = _participant(r, *_PARTICIPANT_FIELDS[kind])
    return ThreadEvent(
        kind=kind,
        event_id=env.event_id,
        event_type=env.event_type,
        recipient_id=recipient_id,
        recipient_kind=recipient_kind,
        thread_id=r.req_str("threadId"),
        actor_id=actor_id,
        participant_id=participant_id,
        participant_display_name=participant_name,
        version=r.opt_version(),
        transaction_id=r.opt_str("transactionId"),
        time=r.opt_time(time_field),
        event_time=env.event_time,
    )


def _participant(r: _Reader, name: str, legacy_name: str) -> tuple[str, str]:
    """The added or removed participant: rawId (required) and display name."""
    current = r.opt_object(name)
    if current is not None:
        sub = _Reader(r.eid, current, f"{r.prefix}.{name}")
        raw, _ = sub.identifier("participantCommunicationIdentifier")
        return raw, sub.opt_str("displayName")
    legacy = r.opt_object(legacy_name)
    if legacy is not None:
        sub = _Reader(r.eid, legacy, f"{r.prefix}.{legacy_name}")
        return sub.req_str("memberId"), sub.opt_str("displayName")
    raise r.fail(name, "missing")


# --- IncomingCall ----------------------------------------------------------------------------


def _incoming_call(env: _Envelope) -> IncomingCallEvent:
    r = _Reader(env.event_id, env.data)
    to_id, to_kind = r.identifier("to")
    from_id, from_kind = r.identifier("from")
    context = r.opt_object("customContext") or {}
    return IncomingCallEvent(
        event_id=env.event_id,
        to_id=to_id,
        to_kind=to_kind,
        from_id=from_id,
        from_kind=from_kind,
        server_call_id=r.opt_str("serverCallId"),
        caller_display_name=r.opt_str("callerDisplayName"),
        incoming_call_context=r.opt_str("incomingCallContext"),
        correlation_id=r.opt_str("correlationId"),
        sip_headers=r.string_map("sipHeaders", context),
        voip_headers=r.string_map("voipHeaders", context),
        event_time=env.event_time,
    )


# --- HTML bodies -----------------------------------------------------------------------------

_BLOCK_TAGS: Final = frozenset(
    {"br", "p", "div", "li", "ul", "ol", "tr", "td", "th", "table", "blockquote", "pre", "hr"}
    | {f"h{i}" for i in range(1, 7)}
)
_SKIPPED_TAGS: Final = frozenset({"script", "style", "head", "title"})
_TAG = re.compile(r"<[^>]*>")


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIPPED_TAGS:
            self.skipping += 1
        elif tag in _BLOCK_TAGS:
            self.parts.append(" ")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _BLOCK_TAGS:
            self.parts.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIPPED_TAGS:
            self.skipping = max(0, self.skipping - 1)
        elif tag in _BLOCK_TAGS:
            self.parts.append(" ")

    def handle_data(self, data: str) -> None:
        if not self.skipping:
            self.parts.append(data)


def html_to_text(markup: str) -> str:
    """Plain text of an HTML body: tags stripped, entities unescaped, whitespace collapsed."""
    parser = _TextExtractor()
    try:
        parser.feed(markup)
        parser.close()
        text = "".join(parser.parts)
    except AssertionError:
        # html.parser's declaration scanner asserts on some malformed "<!" constructs.
        text = html.unescape(_TAG.sub(" ", markup))
    return " ".join(text.split())


def describe(event: ParsedEvent) -> str:
    """A log-safe one-line description (ids and kinds only: never bodies or names)."""
    if isinstance(event, ChatMessageEvent):
        return json.dumps(
            {
                "eventId": event.event_id,
                "kind": event.kind.value,
                "threadId": event.thread_id,
                "messageId": event.message_id,
                "version": event.version,
                "transactionId": event.transaction_id,
            }
        )
    if isinstance(event, ThreadEvent):
        return json.dumps(
            {"eventId": event.event_id, "kind": event.kind.value, "threadId": event.thread_id}
        )
    if isinstance(event, IncomingCallEvent):
        return json.dumps(
            {
                "eventId": event.event_id,
                "kind": "incoming_call",
                "correlationId": event.correlation_id,
            }
        )
    return json.dumps(
        {"eventId": event.event_id, "ignored": event.reason, "type": event.event_type}
    )

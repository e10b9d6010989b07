"""ACS events as Event Grid delivers them to the webhook: what the console's actions post.

Built from the Event Grid system-event schema for ACS (the shapes of Azure's published samples,
``tests/samples``): ``ChatMessageReceived``/``Edited``/``Deleted`` for one recipient, and
``IncomingCall``. Two schemas, as a subscription may choose: Event Grid (an array of events with
``eventType``/``eventTime``/``topic``) and CloudEvents 1.0 (one object with
``type``/``time``/``source``, content type ``application/cloudevents+json``). Nothing here comes
from ``shared/``: the console plays ACS and Event Grid, the app parses what they send.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

NS: Final = "Microsoft.Communication."
RECEIVED: Final = NS + "ChatMessageReceived"
EDITED: Final = NS + "ChatMessageEdited"
DELETED: Final = NS + "ChatMessageDeleted"
INCOMING_CALL: Final = NS + "IncomingCall"
# The ARM id Azure puts in topic/source; the app may check it against ACS_RESOURCE_ID.
PLACEHOLDER_RESOURCE: Final = (
    "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/local"
    "/providers/Microsoft.Communication/communicationServices/pushrelay-local"
)


class Schema(enum.StrEnum):
    """The delivery schema of an Event Grid subscription."""

    EVENT_GRID = "eventgrid"
    CLOUD_EVENTS = "cloudevents"


@dataclass(frozen=True, slots=True)
class Delivery:
    """One webhook POST: body, content type, and the event's id and type (for the activity)."""

    body: bytes
    content_type: str
    event_id: str
    event_type: str


def iso(when: datetime) -> str:
    """``2021-02-19T00:25:58.927Z``: the millisecond UTC form ACS uses."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def identifier(raw_id: str) -> dict[str, Any]:
    """A CommunicationIdentifierModel of an ACS user."""
    return {"kind": "communicationUser", "rawId": raw_id, "communicationUser": {"id": raw_id}}


def thread_for(*user_ids: str) -> str:
    """A stable ACS-looking thread id for a conversation between these users."""
    digest = hashlib.sha256("\n".join(sorted(user_ids)).encode()).hexdigest()[:32]
    return f"19:{digest}@thread.v2"


def message_id_at(when: datetime) -> str:
    """ACS message ids are the message's creation time in epoch milliseconds."""
    return str(int(when.timestamp() * 1000))


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """A message of a 1:1 conversation, as ACS knows it."""

    thread_id: str
    message_id: str
    sender_id: str
    sender_name: str
    recipient_id: str
    body: str
    composed_at: datetime


def _message_data(m: ChatMessage, version: int, schema: Schema) -> dict[str, Any]:
    return {
        "messageBody": m.body,
        "messageId": m.message_id,
        "metadata": {},
        "senderCommunicationIdentifier": identifier(m.sender_id),
        "senderDisplayName": m.sender_name,
        "composeTime": iso(m.composed_at),
        "type": "Text",
        # The published Event Grid samples carry the version as a number, the CloudEvents ones
        # as a string; the app must take both.
        "version": version if schema is Schema.EVENT_GRID else str(version),
        "recipientCommunicationIdentifier": identifier(m.recipient_id),
        "transactionId": base64.b64encode(uuid.uuid4().bytes).decode()[:22] + ".1.1.1.1",
        "threadId": m.thread_id,
    }


def received(m: ChatMessage, schema: Schema, resource: str, now: datetime) -> Delivery:
    """``ChatMessageReceived`` for the recipient (ACS sends none to the sender)."""
    data = _message_data(m, int(m.message_id), schema)
    return envelope(
        RECEIVED, data=data, subject=_subject(m), schema=schema, resource=resource, now=now
    )


def edited(m: ChatMessage, schema: Schema, resource: str, now: datetime) -> Delivery:
    """``ChatMessageEdited``: the new body, a new version (the edit time in milliseconds)."""
    data = {**_message_data(m, int(now.timestamp() * 1000), schema), "editTime": iso(now)}
    return envelope(
        EDITED, data=data, subject=_subject(m), schema=schema, resource=resource, now=now
    )


def deleted(m: ChatMessage, schema: Schema, resource: str, now: datetime) -> Delivery:
    """``ChatMessageDeleted``: no body, a delete time and a new version."""
    data = _message_data(m, int(now.timestamp() * 1000), schema)
    del data["messageBody"], data["metadata"]
    data["deleteTime"] = iso(now)
    return envelope(
        DELETED, data=data, subject=_subject(m), schema=schema, resource=resource, now=now
    )


def _subject(m: ChatMessage) -> str:
    return f"thread/{m.thread_id}/sender/{m.sender_id}/recipient/{m.recipient_id}"


def call_context(cc: str) -> str:
    """An incomingCallContext: three dot-separated parts, the middle a JSON with ``cc``.

    The real one is signed by ACS; the app reads only the ``cc`` claim (it becomes the push's
    ``cp``), so an unsigned stand-in carries what the phone needs.
    """

    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    return ".".join([part({"alg": "none", "typ": "JWT"}), part({"cc": cc}), "c2lnbmF0dXJl"])


def incoming_call(
    *,
    caller_id: str,
    caller_name: str,
    callee_id: str,
    schema: Schema,
    resource: str,
    now: datetime,
) -> tuple[Delivery, str]:
    """``IncomingCall`` to the callee; returns the delivery and the call's serverCallId."""
    server_call_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    cc = base64.b64encode(f"console-call-{uuid.uuid4()}".encode()).decode()
    data = {
        "to": identifier(callee_id),
        "from": identifier(caller_id),
        "serverCallId": server_call_id,
        "callerDisplayName": caller_name,
        "incomingCallContext": call_context(cc),
        "correlationId": str(uuid.uuid4()),
    }
    subject = f"/caller/{caller_id}/recipient/{callee_id}"
    delivery = envelope(
        INCOMING_CALL, data=data, subject=subject, schema=schema, resource=resource, now=now
    )
    return delivery, server_call_id


def envelope(
    event_type: str,
    *,
    data: dict[str, Any],
    subject: str,
    schema: Schema,
    resource: str,
    now: datetime,
) -> Delivery:
    """The webhook body of one event in ``schema``."""
    event_id = str(uuid.uuid4())
    if schema is Schema.CLOUD_EVENTS:
        event: Any = {
            "specversion": "1.0",
            "id": event_id,
            "source": resource,
            "subject": subject,
            "type": event_type,
            "time": iso(now),
            "datacontenttype": "application/json",
            "data": data,
        }
        content_type = "application/cloudevents+json; charset=utf-8"
    else:
        event = [
            {
                "id": event_id,
                "topic": resource,
                "subject": subject,
                "data": data,
                "eventType": event_type,
                "dataVersion": "1.0",
                "metadataVersion": "1",
                "eventTime": iso(now),
            }
        ]
        content_type = "application/json"
    return Delivery(json.dumps(event).encode(), content_type, event_id, event_type)

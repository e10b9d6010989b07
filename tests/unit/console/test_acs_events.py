"""The console's ACS events are ones the app accepts, in both schemas (the app's own parser)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from devtools.console import acs_events
from devtools.console.acs_events import ChatMessage, Schema
from shared.domain.chat_payload import call_context_cc
from shared.domain.events import ChatMessageEvent, IncomingCallEvent, MessageEventKind, parse_event

pytestmark = pytest.mark.unit

NOW = datetime(2026, 1, 2, 3, 4, 5, 678_000, tzinfo=UTC)
ALICE = "8:acs:00000000-0000-0000-0000-000000000000_0000000a-aaaa-aaaa-aaaa-aaaaaaaaaaaa"
BOB = "8:acs:00000000-0000-0000-0000-000000000000_0000000b-bbbb-bbbb-bbbb-bbbbbbbbbbbb"
MESSAGE = ChatMessage(
    thread_id=acs_events.thread_for(ALICE, BOB),
    message_id=acs_events.message_id_at(NOW),
    sender_id=BOB,
    sender_name="Bob",
    recipient_id=ALICE,
    body="Lunch?",
    composed_at=NOW,
)
RESOURCE = acs_events.PLACEHOLDER_RESOURCE


def events_of(delivery: acs_events.Delivery) -> list[dict[str, object]]:
    body = json.loads(delivery.body)
    return body if isinstance(body, list) else [body]


@pytest.mark.parametrize("schema", list(Schema))
def test_a_received_message_parses_as_the_app_reads_it(schema: Schema) -> None:
    (event,) = events_of(acs_events.received(MESSAGE, schema, RESOURCE, NOW))
    parsed = parse_event(event)
    assert isinstance(parsed, ChatMessageEvent)
    assert (parsed.kind, parsed.recipient_id, parsed.sender_id, parsed.body, parsed.version) == (
        MessageEventKind.RECEIVED,
        ALICE,
        BOB,
        "Lunch?",
        int(MESSAGE.message_id),
    )


@pytest.mark.parametrize("schema", list(Schema))
def test_an_edit_keeps_the_message_id_with_a_later_version(schema: Schema) -> None:
    later = NOW.replace(second=30)
    (event,) = events_of(acs_events.edited(MESSAGE, schema, RESOURCE, later))
    parsed = parse_event(event)
    assert isinstance(parsed, ChatMessageEvent)
    assert (parsed.kind, parsed.message_id, parsed.version > int(MESSAGE.message_id)) == (
        MessageEventKind.EDITED,
        MESSAGE.message_id,
        True,
    )


@pytest.mark.parametrize("schema", list(Schema))
def test_a_deletion_names_the_message(schema: Schema) -> None:
    (event,) = events_of(acs_events.deleted(MESSAGE, schema, RESOURCE, NOW))
    parsed = parse_event(event)
    assert isinstance(parsed, ChatMessageEvent)
    assert (parsed.kind, parsed.thread_id, parsed.message_id) == (
        MessageEventKind.DELETED,
        MESSAGE.thread_id,
        MESSAGE.message_id,
    )


@pytest.mark.parametrize("schema", list(Schema))
def test_an_incoming_call_parses_and_carries_a_readable_call_context(schema: Schema) -> None:
    delivery, call_id = acs_events.incoming_call(
        caller_id=BOB, caller_name="Bob", callee_id=ALICE, schema=schema, resource=RESOURCE, now=NOW
    )
    (event,) = events_of(delivery)
    parsed = parse_event(event)
    assert isinstance(parsed, IncomingCallEvent)
    assert (
        parsed.to_id,
        parsed.server_call_id,
        bool(call_context_cc(parsed.incoming_call_context)),
    ) == (
        ALICE,
        call_id,
        True,
    )


def test_the_cloud_events_delivery_is_one_object_with_its_content_type() -> None:
    delivery = acs_events.received(MESSAGE, Schema.CLOUD_EVENTS, RESOURCE, NOW)
    assert (delivery.content_type.split(";")[0], json.loads(delivery.body)["specversion"]) == (
        "application/cloudevents+json",
        "1.0",
    )


def test_a_conversation_has_one_thread_whoever_writes() -> None:
    assert acs_events.thread_for(ALICE, BOB) == acs_events.thread_for(BOB, ALICE)

"""Parsing ACS events of both schemas into chat, thread, call and ignored values."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from shared.domain.events import (
    CALL_EVENT_TYPES,
    CHAT_EVENT_TYPES,
    LEGACY_CHAT_EVENT_TYPES,
    ChatMessageEvent,
    IdentifierKind,
    Ignored,
    IncomingCallEvent,
    MalformedEvent,
    MessageEventKind,
    ThreadEvent,
    ThreadEventKind,
    describe,
    html_to_text,
    parse_event,
)
from shared.errors import InputError

pytestmark = pytest.mark.unit

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
ALICE = "8:acs:109f0644-b956-4cd9-87b1-71024f6e2f44_00000008-578d-7d05-83fe-084822000f6d"
BOB = "8:acs:109f0644-b956-4cd9-87b1-71024f6e2f44_00000008-578d-7caf-07fd-084822001724"
CAROL = "8:acs:109f0644-b956-4cd9-87b1-71024f6e2f44_00000008-578d-7d07-83fe-084822000f6e"
THREAD = "19:6e5d6ca1d75044a49a36a7965ec4a906@thread.v2"
SCHEMAS = ("eventgrid", "cloudevents")


def sample(name: str, schema: str = "eventgrid") -> dict[str, Any]:
    """One event of a sample file (Event Grid files hold an array of one)."""
    doc = json.loads((SAMPLES / f"{name}.{schema}.json").read_text(encoding="utf-8"))
    return copy.deepcopy(doc[0] if isinstance(doc, list) else doc)


def test_every_sample_file_parses() -> None:
    names = sorted(SAMPLES.glob("*.json"))
    assert len(names) >= 30
    for path in names:
        doc = json.loads(path.read_text(encoding="utf-8"))
        for event in doc if isinstance(doc, list) else [doc]:
            parse_event(event)


@pytest.mark.parametrize("schema", SCHEMAS)
def test_received_message_carries_every_field(schema: str) -> None:
    event = parse_event(sample("chat_message_received", schema))
    assert isinstance(event, ChatMessageEvent)
    assert event.kind is MessageEventKind.RECEIVED
    assert event.recipient_id == ALICE
    assert event.recipient_kind is IdentifierKind.COMMUNICATION_USER
    assert event.recipient_is_acs_user
    assert event.sender_id == BOB
    assert event.thread_id == THREAD
    assert event.message_type == "Text"
    assert event.compose_time is not None and event.compose_time.tzinfo is not None
    assert event.event_time is not None


def test_event_grid_sample_values() -> None:
    event = parse_event(sample("chat_message_received"))
    assert isinstance(event, ChatMessageEvent)
    assert event.event_id == "02272459-badb-4e2e-b538-4cb8a2f71da6"
    assert event.message_id == "1613694358927"
    assert event.version == 1613694358927
    assert event.sender_display_name == "Bob(Admin)"
    assert event.body == "Welcome to Azure Communication Services"
    assert dict(event.metadata) == {
        "key": "value",
        "description": "A map of data associated with the message",
    }
    assert event.transaction_id == "oh+LGB2dUUadMcTAdRWQxQ.1.1.1.1.1827536918.1.7"
    assert event.compose_time == datetime(2021, 2, 19, 0, 25, 58, 927000, tzinfo=UTC)
    assert event.event_time == datetime(2021, 2, 19, 0, 25, 59, 943666, tzinfo=UTC)


def test_version_given_as_a_string_becomes_a_number() -> None:
    event = parse_event(sample("chat_message_received", "cloudevents"))
    assert isinstance(event, ChatMessageEvent)
    assert event.version == 1613694358999
    assert event.sender_display_name == "Jhon"


@pytest.mark.parametrize("schema", SCHEMAS)
def test_edited_message_has_its_edit_time_and_new_version(schema: str) -> None:
    event = parse_event(sample("chat_message_edited", schema))
    assert isinstance(event, ChatMessageEvent)
    assert event.kind is MessageEventKind.EDITED
    assert event.body == "Let's meet at 4pm instead"
    assert event.version == 1613694500784
    assert event.edit_time == datetime(2021, 2, 19, 0, 28, 20, 784000, tzinfo=UTC)
    assert dict(event.metadata) == {}


@pytest.mark.parametrize("schema", SCHEMAS)
def test_deleted_message_has_no_body_and_a_delete_time(schema: str) -> None:
    event = parse_event(sample("chat_message_deleted", schema))
    assert isinstance(event, ChatMessageEvent)
    assert event.kind is MessageEventKind.DELETED
    assert event.body == ""
    assert event.message_id == "1613694358927"
    assert event.delete_time == datetime(2021, 2, 19, 0, 43, 10, 140000, tzinfo=UTC)


@pytest.mark.parametrize("schema", SCHEMAS)
def test_html_body_becomes_plain_text(schema: str) -> None:
    event = parse_event(sample("chat_message_received_html", schema))
    assert isinstance(event, ChatMessageEvent)
    assert event.body == "Lunch at Café Müller? 12:30 & bring the slides 😀"


@pytest.mark.parametrize("schema", SCHEMAS)
def test_phone_recipient_parses_and_is_flagged_not_acs(schema: str) -> None:
    event = parse_event(sample("chat_message_received_phone_recipient", schema))
    assert isinstance(event, ChatMessageEvent)
    assert event.recipient_id == "4:+14255550123"
    assert event.recipient_kind is IdentifierKind.PHONE_NUMBER
    assert not event.recipient_is_acs_user


@pytest.mark.parametrize("schema", SCHEMAS)
def test_teams_recipient_parses_and_is_flagged_not_acs(schema: str) -> None:
    event = parse_event(sample("chat_message_received_teams_recipient", schema))
    assert isinstance(event, ChatMessageEvent)
    assert event.recipient_kind is IdentifierKind.MICROSOFT_TEAMS_USER
    assert not event.recipient_is_acs_user


def test_recipient_kind_is_inferred_without_the_kind_field() -> None:
    raw = sample("chat_message_received_teams_recipient")
    del raw["data"]["recipientCommunicationIdentifier"]["kind"]
    event = parse_event(raw)
    assert isinstance(event, ChatMessageEvent)
    assert event.recipient_kind is IdentifierKind.MICROSOFT_TEAMS_USER


def test_legacy_recipient_id_string_is_enough() -> None:
    raw = sample("chat_message_received")
    del raw["data"]["recipientCommunicationIdentifier"]
    event = parse_event(raw)
    assert isinstance(event, ChatMessageEvent)
    assert event.recipient_id == ALICE


def test_absent_optional_fields_are_tolerated() -> None:
    raw = sample("chat_message_received")
    for name in (
        "senderDisplayName",
        "messageBody",
        "metadata",
        "senderId",
        "senderCommunicationIdentifier",
        "transactionId",
        "type",
        "composeTime",
    ):
        del raw["data"][name]
    del raw["eventTime"]
    event = parse_event(raw)
    assert isinstance(event, ChatMessageEvent)
    assert (event.sender_id, event.sender_display_name, event.body) == ("", "", "")
    assert dict(event.metadata) == {}
    assert event.compose_time is None and event.event_time is None


def test_cloud_event_with_camel_case_spec_version_is_recognised() -> None:
    raw = sample("chat_message_received", "cloudevents")
    raw["specVersion"] = raw.pop("specversion")
    assert isinstance(parse_event(raw), ChatMessageEvent)


@pytest.mark.parametrize("schema", SCHEMAS)
def test_thread_deleted_for_user(schema: str) -> None:
    event = parse_event(sample("chat_thread_with_user_deleted", schema))
    assert isinstance(event, ThreadEvent)
    assert event.kind is ThreadEventKind.THREAD_DELETED
    assert (event.recipient_id, event.actor_id, event.thread_id) == (ALICE, BOB, THREAD)
    assert event.time == datetime(2021, 2, 18, 23, 57, 51, 598759, tzinfo=UTC)
    assert event.version == 1613692578672


@pytest.mark.parametrize("schema", SCHEMAS)
def test_participant_removed_names_who_was_removed(schema: str) -> None:
    event = parse_event(sample("chat_participant_removed_from_thread_with_user", schema))
    assert isinstance(event, ThreadEvent)
    assert event.kind is ThreadEventKind.PARTICIPANT_REMOVED
    assert event.participant_id == ALICE
    assert event.participant_display_name == "Alice"
    assert event.actor_id == BOB
    assert event.recipient_was_removed


def test_participant_removed_for_another_recipient_is_not_self_removal() -> None:
    raw = sample("chat_participant_removed_from_thread_with_user")
    raw["data"]["recipientCommunicationIdentifier"] = {"rawId": CAROL}
    event = parse_event(raw)
    assert isinstance(event, ThreadEvent)
    assert not event.recipient_was_removed


@pytest.mark.parametrize("schema", SCHEMAS)
def test_participant_added(schema: str) -> None:
    event = parse_event(sample("chat_participant_added_to_thread_with_user", schema))
    assert isinstance(event, ThreadEvent)
    assert event.kind is ThreadEventKind.PARTICIPANT_ADDED
    assert (event.participant_id, event.participant_display_name) == (CAROL, "Carol")


@pytest.mark.parametrize(
    ("name", "kind", "actor"),
    [
        ("chat_thread_created_with_user", ThreadEventKind.THREAD_CREATED, BOB),
        ("chat_thread_properties_updated_per_user", ThreadEventKind.PROPERTIES_UPDATED, CAROL),
    ],
)
@pytest.mark.parametrize("schema", SCHEMAS)
def test_other_per_user_thread_events(
    name: str, kind: ThreadEventKind, actor: str, schema: str
) -> None:
    event = parse_event(sample(name, schema))
    assert isinstance(event, ThreadEvent)
    assert (event.kind, event.actor_id, event.recipient_id) == (kind, actor, ALICE)
    assert event.time is not None


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("chat_member_added_to_thread_with_user", ThreadEventKind.PARTICIPANT_ADDED),
        ("chat_member_removed_from_thread_with_user", ThreadEventKind.PARTICIPANT_REMOVED),
    ],
)
@pytest.mark.parametrize("schema", SCHEMAS)
def test_legacy_member_events(name: str, kind: ThreadEventKind, schema: str) -> None:
    event = parse_event(sample(name, schema))
    assert isinstance(event, ThreadEvent)
    assert (event.kind, event.participant_id, event.actor_id) == (kind, CAROL, BOB)
    assert event.recipient_id == ALICE and event.recipient_is_acs_user


@pytest.mark.parametrize("schema", SCHEMAS)
def test_incoming_call(schema: str) -> None:
    event = parse_event(sample("incoming_call", schema))
    assert isinstance(event, IncomingCallEvent)
    assert (event.to_id, event.from_id) == (ALICE, BOB)
    assert event.to_is_acs_user
    assert event.caller_display_name == "Bob(Admin)"
    assert event.correlation_id == "5a2e3f1b-8c7d-4e6f-9a0b-1c2d3e4f5a6b"
    assert event.incoming_call_context.count(".") == 2
    assert event.server_call_id.startswith("aHR0")
    assert dict(event.voip_headers) == {"customHeader": "customValue"}
    assert event.sip_headers["userToUser"].endswith(";encoding=hex")
    assert event.event_time == datetime(2023, 4, 4, 17, 18, 42, 554221, tzinfo=UTC)


@pytest.mark.parametrize("name", ["chat_message_received_in_thread", "chat_thread_created"])
@pytest.mark.parametrize("schema", SCHEMAS)
def test_thread_level_events_are_ignored(name: str, schema: str) -> None:
    event = parse_event(sample(name, schema))
    assert isinstance(event, Ignored)
    assert event.reason == "thread-level chat event"
    assert event.event_id


def test_unknown_type_is_ignored() -> None:
    raw = sample("chat_message_received")
    raw["eventType"] = "Microsoft.Communication.SMSReceived"
    event = parse_event(raw)
    assert event == Ignored("unknown event type", raw["id"], "Microsoft.Communication.SMSReceived")


def test_subscription_validation_is_ignored() -> None:
    event = parse_event(sample("subscription_validation"))
    assert isinstance(event, Ignored)
    assert "validation" in event.reason


def test_unknown_type_with_odd_data_is_still_ignored() -> None:
    assert isinstance(parse_event({"id": "x", "eventType": "Some.Type", "data": 5}), Ignored)


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda d: d["data"].pop("threadId"), "data.threadId"),
        (lambda d: d["data"].pop("messageId"), "data.messageId"),
        (lambda d: d["data"].update(version="12a"), "data.version"),
        (lambda d: d["data"].update(version=True), "data.version"),
        (lambda d: d["data"].update(version=1.5), "data.version"),
        (lambda d: d["data"].update(version=-1), "data.version"),
        (lambda d: d["data"].pop("version"), "data.version"),
        (lambda d: d["data"].update(messageBody=7), "data.messageBody"),
        (lambda d: d["data"].update(metadata={"k": 1}), "data.metadata"),
        (lambda d: d["data"].update(metadata=[]), "data.metadata"),
        (lambda d: d["data"].update(composeTime="yesterday"), "data.composeTime"),
        (lambda d: d["data"].update(composeTime=12), "data.composeTime"),
        (
            lambda d: d["data"].update(recipientCommunicationIdentifier={"kind": "x"}),
            "data.recipientCommunicationIdentifier.rawId",
        ),
        (
            lambda d: (
                d["data"].pop("recipientCommunicationIdentifier"),
                d["data"].pop("recipientId"),
            ),
            "data.recipientCommunicationIdentifier",
        ),
        (lambda d: d.update(data="text"), "data"),
        (lambda d: d.update(eventTime="soon"), "eventTime"),
        (lambda d: d.pop("eventType"), "eventType"),
    ],
)
def test_malformed_message_event_names_id_and_field(mutate: Any, field: str) -> None:
    raw = sample("chat_message_received")
    mutate(raw)
    with pytest.raises(MalformedEvent) as caught:
        parse_event(raw)
    assert caught.value.field == field
    assert caught.value.event_id == "02272459-badb-4e2e-b538-4cb8a2f71da6"
    assert isinstance(caught.value, InputError)
    assert caught.value.event_id in str(caught.value)


def test_event_without_an_id_is_malformed() -> None:
    raw = sample("chat_message_received")
    del raw["id"]
    with pytest.raises(MalformedEvent) as caught:
        parse_event(raw)
    assert (caught.value.event_id, caught.value.field) == ("", "id")


@pytest.mark.parametrize("value", [None, 3, "text", [], [{"id": "x"}]])
def test_non_object_event_is_malformed(value: object) -> None:
    with pytest.raises(MalformedEvent):
        parse_event(value)


def test_participant_removed_without_the_participant_is_malformed() -> None:
    raw = sample("chat_participant_removed_from_thread_with_user")
    del raw["data"]["participantRemoved"]
    with pytest.raises(MalformedEvent) as caught:
        parse_event(raw)
    assert caught.value.field == "data.participantRemoved"


def test_malformed_nested_participant_names_the_full_path() -> None:
    raw = sample("chat_participant_added_to_thread_with_user")
    raw["data"]["participantAdded"]["participantCommunicationIdentifier"] = {"rawId": 5}
    with pytest.raises(MalformedEvent) as caught:
        parse_event(raw)
    assert caught.value.field == "data.participantAdded.rawId"


def test_incoming_call_without_callee_is_malformed() -> None:
    raw = sample("incoming_call")
    del raw["data"]["to"]
    with pytest.raises(MalformedEvent) as caught:
        parse_event(raw)
    assert caught.value.field == "data.to"


def test_lone_surrogates_are_replaced_and_split_pairs_joined() -> None:
    raw = json.loads(
        json.dumps(sample("chat_message_received")).replace(
            "Welcome to Azure", "\\ud83d\\ude00 ok \\ud800 x"
        )
    )
    event = parse_event(raw)
    assert isinstance(event, ChatMessageEvent)
    assert event.body.startswith("😀 ok \ufffd x")
    event.body.encode("utf-8")


def test_chat_event_types_are_the_per_user_types() -> None:
    prefix = "Microsoft.Communication."
    assert set(CHAT_EVENT_TYPES) == {
        prefix + name
        for name in (
            "ChatMessageReceived",
            "ChatMessageEdited",
            "ChatMessageDeleted",
            "ChatThreadCreatedWithUser",
            "ChatThreadWithUserDeleted",
            "ChatThreadPropertiesUpdatedPerUser",
            "ChatParticipantAddedToThreadWithUser",
            "ChatParticipantRemovedFromThreadWithUser",
        )
    }
    assert len(CHAT_EVENT_TYPES) == len(set(CHAT_EVENT_TYPES))
    assert not set(LEGACY_CHAT_EVENT_TYPES) & set(CHAT_EVENT_TYPES)
    assert (prefix + "IncomingCall",) == CALL_EVENT_TYPES


def test_describe_never_contains_the_body_or_names() -> None:
    event = parse_event(sample("chat_message_received"))
    line = describe(event)
    assert "Welcome" not in line and "Bob" not in line
    assert "1613694358927" in line


@pytest.mark.parametrize(
    ("markup", "text"),
    [
        ("<p>a</p><p>b</p>", "a b"),
        ("x<br>y<br/>z", "x y z"),
        ("Tom &amp; Jerry &lt;3 &#39;hi&#39;", "Tom & Jerry <3 'hi'"),
        ("<script>alert(1)</script>shown", "shown"),
        ("  lots \n\t of   space  ", "lots of space"),
        ("<![if !supportLists]>x", "x"),
        ("<!x", "<!x"),
        ("<img src='a.png' alt='pic'>", ""),
        ("<b>unclosed", "unclosed"),
    ],
)
def test_html_to_text(markup: str, text: str) -> None:
    assert html_to_text(markup) == text

"""What chat and calls do first with an event: the source check, parsing, and a malformed event
acknowledged with a log line (shared/usecases/event_intake.py)."""

from __future__ import annotations

import logging

import pytest

from shared.domain.events import EventSource, IncomingCallEvent, parse_event
from shared.push.pipeline import PushSummary
from shared.usecases.event_intake import parsed_or_acknowledged
from tests.sample_events import sample_event

pytestmark = pytest.mark.unit

LOG = logging.getLogger("tests.event_intake")
OURS = (
    "/subscriptions/{subscription-id}/resourceGroups/{group-name}/providers/"
    "Microsoft.Communication/communicationServices/{communication-services-resource-name}"
)


def test_an_event_of_our_source_comes_back_parsed() -> None:
    event = sample_event("chat_message_received.eventgrid.json")
    got = parsed_or_acknowledged(event, source=EventSource(OURS), what="chat", log=LOG)
    assert got == parse_event(event)


def test_an_event_of_another_source_is_acknowledged_unparsed() -> None:
    event = sample_event("chat_message_received.eventgrid.json") | {"topic": "/someone/else"}
    got = parsed_or_acknowledged(event, source=EventSource(OURS), what="chat", log=LOG)
    assert got == PushSummary(note="another source")


def test_without_a_source_nothing_is_checked() -> None:
    event = sample_event("incoming_call.cloudevents.json") | {"source": "/someone/else"}
    got = parsed_or_acknowledged(event, source=None, what="call", log=LOG)
    assert isinstance(got, IncomingCallEvent)


def test_an_event_already_parsed_is_passed_through() -> None:
    parsed = parse_event(sample_event("incoming_call.eventgrid.json"))
    assert parsed_or_acknowledged(parsed, source=None, what="call", log=LOG) is parsed


def test_a_malformed_event_is_acknowledged_and_logged_on_the_use_cases_logger(
    caplog: pytest.LogCaptureFixture,
) -> None:
    event = sample_event("chat_message_received.eventgrid.json", messageId=None)
    got = parsed_or_acknowledged(event, source=None, what="chat", log=LOG)
    (record,) = [r for r in caplog.records if r.name == LOG.name]
    assert (got, record.levelno) == (PushSummary(note="malformed"), logging.WARNING)
    assert record.getMessage() == (
        f"malformed chat event {event['id']} acknowledged: "
        f"event {event['id']}: data.messageId: missing or empty"
    )


def test_a_malformed_event_without_an_id_is_logged_as_such(
    caplog: pytest.LogCaptureFixture,
) -> None:
    got = parsed_or_acknowledged({"eventType": "x"}, source=None, what="call", log=LOG)
    assert got == PushSummary(note="malformed")
    assert caplog.messages == [
        "malformed call event (no id) acknowledged: event (no id): id: missing or not a string"
    ]

"""The Event Grid edge: what the worker hands a trigger goes back to the JSON it was delivered as,
so parsing and the source check see exactly what they would see in the delivered body."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest
from azure.functions.eventgrid import EventGridEventInConverter
from azure.functions.meta import Datum

from shared.domain.events import ChatMessageEvent, EventSource, MessageEventKind, parse_event
from shared.edges.event_grid import event_json

pytestmark = pytest.mark.unit

SAMPLES = Path(__file__).resolve().parents[1] / "samples"


def delivered(path: Path) -> list[dict[str, Any]]:
    doc = json.loads(path.read_text(encoding="utf-8"))
    return doc if isinstance(doc, list) else [doc]


def decoded(event: dict[str, Any]) -> func.EventGridEvent | func.CloudEvent:
    """What the worker hands the trigger for this JSON (its own converter, either schema)."""
    got: func.EventGridEvent | func.CloudEvent = EventGridEventInConverter.decode(
        Datum(json.dumps(event), "json"), trigger_metadata={}
    )
    return got


SAMPLE_EVENTS = [
    pytest.param(event, id=f"{path.name}[{i}]")
    for path in sorted(SAMPLES.glob("*.json"))
    for i, event in enumerate(delivered(path))
]


@pytest.mark.parametrize("event", SAMPLE_EVENTS)
def test_every_sample_parses_through_the_edge_as_its_json_does(event: dict[str, Any]) -> None:
    assert parse_event(event_json(decoded(event))) == parse_event(event)


@pytest.mark.parametrize("event", SAMPLE_EVENTS)
def test_the_source_check_sees_the_topic_or_source_the_json_carries(
    event: dict[str, Any],
) -> None:
    origin = event.get("topic") or event.get("source") or ""
    passed_on = event_json(decoded(event))
    assert (EventSource(origin).admits(passed_on), EventSource("/x").admits(passed_on)) == (
        True,
        False,
    )


def test_each_schema_keeps_its_own_field_names() -> None:
    grid = event_json(func.EventGridEvent(
        id="e1", data={}, topic="/t", subject="s", event_type="X", event_time=None,
        data_version="1.0",
    ))  # fmt: skip
    cloud = event_json(func.CloudEvent(id="e2", source="/t", type="X", specversion="1.0", data={}))
    assert ("eventType" in grid, "topic" in grid, "type" in grid) == (True, True, False)
    assert ("specversion" in cloud, "source" in cloud, "eventType" in cloud) == (True, True, False)


def test_a_cloud_event_built_by_hand_without_a_time_parses() -> None:
    raw = delivered(SAMPLES / "chat_message_deleted.cloudevents.json")[0]
    obj = func.CloudEvent(
        id=raw["id"], source=raw["source"], type=raw["type"], specversion="1.0", data=raw["data"],
        time=None,
    )  # fmt: skip
    event = parse_event(event_json(obj))
    assert isinstance(event, ChatMessageEvent)
    assert (event.kind, event.event_time) == (MessageEventKind.DELETED, None)


def test_a_time_without_an_offset_is_read_as_utc() -> None:
    # The converter drops the offset of a time it reads as local; the event's time stays UTC.
    raw = delivered(SAMPLES / "chat_message_received.eventgrid.json")[0]
    obj = func.EventGridEvent(
        id=raw["id"], data=raw["data"], topic=raw["topic"], subject=raw["subject"],
        event_type=raw["eventType"], event_time=datetime(2026, 3, 1, 12, 0),
        data_version=raw["dataVersion"],
    )  # fmt: skip
    event = parse_event(event_json(obj))
    assert isinstance(event, ChatMessageEvent)
    assert event.event_time == datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

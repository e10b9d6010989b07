"""Property tests: no JSON, however odd, makes the parser raise anything but MalformedEvent."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.domain.events import (
    CALL_EVENT_TYPES,
    CHAT_EVENT_TYPES,
    LEGACY_CHAT_EVENT_TYPES,
    ChatMessageEvent,
    Ignored,
    IncomingCallEvent,
    MalformedEvent,
    ThreadEvent,
    html_to_text,
    parse_event,
)

pytestmark = pytest.mark.unit

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
ALL_TYPES = (
    *CHAT_EVENT_TYPES,
    *LEGACY_CHAT_EVENT_TYPES,
    *CALL_EVENT_TYPES,
    "Microsoft.Communication.ChatMessageReceivedInThread",
    "Unknown.Type",
)


def _samples() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for path in sorted(SAMPLES.glob("*.json")):
        doc = json.loads(path.read_text(encoding="utf-8"))
        out.extend(doc if isinstance(doc, list) else [doc])
    return out


SAMPLE_EVENTS = _samples()

json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)
# Keys the parser reads, so that random objects reach deep into it.
KEYS = st.sampled_from(
    [
        "id",
        "eventType",
        "type",
        "specversion",
        "eventTime",
        "time",
        "data",
        "rawId",
        "kind",
        "communicationUser",
        "recipientCommunicationIdentifier",
        "recipientId",
        "threadId",
        "messageId",
        "version",
        "messageBody",
        "metadata",
        "senderDisplayName",
        "composeTime",
        "participantRemoved",
        "participantAdded",
        "participantCommunicationIdentifier",
        "memberRemoved",
        "memberId",
        "to",
        "from",
        "customContext",
        "sipHeaders",
        "voipHeaders",
        "senderCommunicationIdentifier",
        "removedByCommunicationIdentifier",
    ]
)
keyed_values = st.recursive(
    json_scalars | st.sampled_from(ALL_TYPES),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=6),
    max_leaves=30,
)


def _check(event: object) -> None:
    try:
        parsed = parse_event(event)
    except MalformedEvent as exc:
        assert isinstance(exc.field, str) and exc.field
        return
    assert isinstance(parsed, ChatMessageEvent | ThreadEvent | IncomingCallEvent | Ignored)


@settings(deadline=None, max_examples=300)
@given(json_values)
def test_arbitrary_json_never_raises_anything_else(value: Any) -> None:
    _check(value)


@settings(deadline=None, max_examples=300)
@given(st.sampled_from(ALL_TYPES), st.booleans(), keyed_values)
def test_known_types_with_arbitrary_data(event_type: str, cloud: bool, data: Any) -> None:
    envelope: dict[str, Any] = {"id": "e1", "data": data}
    envelope["type" if cloud else "eventType"] = event_type
    if cloud:
        envelope["specversion"] = "1.0"
    _check(envelope)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(node, dict):
        for key, child in node.items():
            out.extend(_paths(child, (*prefix, key)))
    elif isinstance(node, list):
        for index, child in enumerate(node):
            out.extend(_paths(child, (*prefix, index)))
    return out


@settings(deadline=None, max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(SAMPLE_EVENTS), st.data())
def test_samples_with_one_field_replaced_or_removed(event: dict[str, Any], data: Any) -> None:
    mutated = copy.deepcopy(event)
    path = data.draw(st.sampled_from(_paths(mutated)[1:]))
    parent: Any = mutated
    for step in path[:-1]:
        parent = parent[step]
    if data.draw(st.booleans()) and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = data.draw(json_values)
    _check(mutated)


@settings(deadline=None, max_examples=300)
@given(st.text() | st.from_regex(r"(<[!?/]?[a-z\[\]-]*[^>]{0,8}>?|&#?\w{0,6};?|[^<&]{0,5})*"))
def test_html_to_text_never_raises_and_collapses_whitespace(markup: str) -> None:
    text = html_to_text(markup)
    assert text == text.strip()
    assert "  " not in text
